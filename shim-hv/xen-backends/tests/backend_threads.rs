//! Backend threads do not grow with devices: every disk's and vif's xenbus state
//! machine runs on its kind's control loop (`xb-ctl-vbd`, `xb-ctl-vif`), and
//! every queue is served by its kind's pool (`blkio`, `netback`, at most
//! `available_parallelism().clamp(2, 8)` workers each). The threads are counted
//! by name in `/proc/self/task` while 2, then 12 domains have a connected disk
//! (two queues) and a connected vif, each doing I/O; and they all end once the
//! devices are gone. (Its own test binary: no other test's threads to count.)

mod blk_util;
mod net_util;

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xbd_front::Config as BlkFrontConfig;
use xen_backends::blk::{BlkBackend, BlkOffer};
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig};
use xen_model::Hypervisor;
use xennet_front::{Config as NetFrontConfig, Mac};

const GUARD: Duration = Duration::from_secs(120);

/// Threads of this process by name.
fn threads() -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        if let Ok(name) = std::fs::read_to_string(t.path().join("comm")) {
            *out.entry(name.trim_end().to_string()).or_default() += 1;
        }
    }
    out
}

/// Backend threads (control loops, pool workers, and the former per-device
/// names: `blkback-*`, `blkio-*`, `netback-*`), by name.
fn backend_threads() -> BTreeMap<String, usize> {
    threads()
        .into_iter()
        .filter(|(n, _)| {
            n.starts_with("xb-ctl") || n.starts_with("blk") || n.starts_with("netback")
        })
        .collect()
}

fn total(m: &BTreeMap<String, usize>) -> usize {
    m.values().sum()
}

/// Domains with a connected disk and vif, their guests holding on until released.
struct Fleet {
    disks: Vec<BlkBackend>,
    vifs: Vec<NetBackend>,
    release: Vec<Sender<()>>,
    results: Vec<Receiver<Result<(), String>>>,
}

fn start(
    hv: &Arc<Hypervisor>,
    br: &Arc<Bridge>,
    dir: &blk_util::TempDir,
    n: usize,
    base: usize,
) -> Fleet {
    let mut f = Fleet {
        disks: Vec::new(),
        vifs: Vec::new(),
        release: Vec::new(),
        results: Vec::new(),
    };
    let (up_tx, up_rx) = channel::<()>();
    for i in base..base + n {
        // A disk with two queues.
        let img = blk_util::image(dir, &format!("d{i}.img"), 1 << 20);
        let dom = blk_util::domain(hv, &format!("blk{i}"), 32);
        let mut cfg = blk_util::file_cfg(&img);
        cfg.offer = BlkOffer {
            max_queues: 2,
            ..BlkOffer::default()
        };
        f.disks.push(blk_util::backend(hv, &dom, cfg));
        let (rel_tx, rel_rx) = channel::<()>();
        let up = up_tx.clone();
        let fe = BlkFrontConfig {
            queues: 2,
            ..BlkFrontConfig::default()
        };
        let r = blk_util::spawn_guest(hv, dom, blk_util::XVDA, fe, move |d, _, _| {
            let mut b = vec![0u8; 4096];
            for k in 0..4u64 {
                let t = d.submit_read(k * 8, 4096).map_err(|e| e.to_string())?;
                while !d.is_done(t).map_err(|e| e.to_string())? {
                    d.poll().map_err(|e| e.to_string())?;
                }
                d.finish(t, &mut [&mut b[..]]).map_err(|e| e.to_string())?;
            }
            let _ = up.send(());
            let _ = rel_rx.recv_timeout(GUARD);
            Ok::<(), String>(())
        });
        let (rtx, rrx) = channel();
        std::thread::spawn(move || {
            let _ = rtx.send(match r.recv_timeout(GUARD) {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(e),
                Err(_) => Err("disk guest did not finish".into()),
            });
        });
        f.results.push(rrx);
        f.release.push(rel_tx);

        // A vif, sending one frame.
        let k = u8::try_from(i + 1).expect("few domains");
        let (dom, be) =
            net_util::guest_with_vif(hv, br, &format!("net{i}"), k, NetConfig::default());
        f.vifs.push(be);
        let (rel_tx, rel_rx) = channel::<()>();
        let up = up_tx.clone();
        let r = net_util::run_guest(hv, dom, NetFrontConfig::default(), move |dev, _| {
            dev.send(&net_util::ip_frame(
                Mac::BROADCAST,
                net_util::mac(k),
                false,
                false,
                64,
                0,
            ))
            .map_err(|e| e.to_string())?;
            let _ = up.send(());
            let _ = rel_rx.recv_timeout(GUARD);
            Ok::<(), String>(())
        });
        let (rtx, rrx) = channel();
        std::thread::spawn(move || {
            let _ = rtx.send(
                r.recv_timeout(GUARD)
                    .unwrap_or(Err("vif guest did not finish".into())),
            );
        });
        f.results.push(rrx);
        f.release.push(rel_tx);
    }
    for _ in 0..2 * n {
        up_rx
            .recv_timeout(GUARD)
            .expect("every guest connected and did I/O");
    }
    f
}

impl Fleet {
    fn stop(self) {
        drop(self.release);
        for r in self.results {
            r.recv_timeout(GUARD).expect("guest result").expect("guest");
        }
        for d in self.disks {
            d.destroy();
        }
        for v in self.vifs {
            v.destroy();
        }
    }
}

#[test]
fn backend_threads_do_not_grow_with_devices() {
    let hv = blk_util::hv();
    let br = Bridge::new("xenbr0");
    let dir = blk_util::TempDir::new("threads");
    let pool = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    // Two control loops and two pools.
    let bound = 2 + 2 * pool;

    let small = start(&hv, &br, &dir, 2, 0);
    let at_2 = backend_threads();
    let big = start(&hv, &br, &dir, 10, 2);
    let at_12 = backend_threads();
    println!("backend threads with 2 domains: {at_2:?}");
    println!("backend threads with 12 domains: {at_12:?}");
    for (n, m) in [(2, &at_2), (12, &at_12)] {
        assert!(
            total(m) <= bound,
            "{n} domains (a 2-queue disk and a vif each): {} backend threads, at most {bound} expected: {m:?}",
            total(m)
        );
        assert!(
            m.get("xb-ctl-vbd") == Some(&1) && m.get("xb-ctl-vif") == Some(&1),
            "{m:?}"
        );
        for name in m.keys() {
            assert!(
                ["xb-ctl-vbd", "xb-ctl-vif", "blkio", "netback"].contains(&name.as_str()),
                "a per-device thread: {name}"
            );
        }
    }

    small.stop();
    big.stop();
    // Teardown: the loops and the pools end with their last device.
    let end = Instant::now() + GUARD;
    while total(&backend_threads()) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        backend_threads(),
        BTreeMap::new(),
        "threads left after teardown"
    );
}
