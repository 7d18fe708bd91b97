//! Backend threads do not grow with devices: every disk's, vif's and channel's
//! xenbus state machine runs on its kind's control loop (`xb-ctl-vbd`,
//! `xb-ctl-vif`, `xb-ctl-console`), every queue is served by its kind's pool
//! (`blkio`, `netback`, at most `available_parallelism().clamp(2, 8)` workers
//! each), every console's ring by the console pool (`consio`, the same bound) and
//! every console pty by one poller (`console-poll`). The threads are counted by
//! name in `/proc/self/task` while 2, then 12 domains have a connected disk (two
//! queues), a connected vif, a primary console on a pty and a pty channel, each
//! doing I/O (one domain also has a socket channel with a client, whose
//! listener and output threads are the only per-device ones); and they all end
//! once the devices are gone. While all of it is idle, the backend threads do
//! not wake (no polling: a channel's state machine and listener used to look
//! every 50 ms, a client's output side every 100 ms, a console every 10 s).
//! (Its own test binary: no other test's threads to count.)

mod blk_util;
mod net_util;

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypercall::DomId;
use xbd_front::Config as BlkFrontConfig;
use xen_backends::blk::{BlkBackend, BlkOffer};
use xen_backends::bridge::Bridge;
use xen_backends::console::channel::{ChannelBackend, ChannelConfig, Connection};
use xen_backends::console::{ConsoleBackend, ConsoleConfig, Sink};
use xen_backends::net::{NetBackend, NetConfig};
use xen_model::Hypervisor;
use xennet_front::{Config as NetFrontConfig, Mac};

const GUARD: Duration = Duration::from_secs(120);

/// Threads of this process: (name, context switches so far).
fn thread_list() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        let Ok(name) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.push((name.trim_end().to_string(), switches));
    }
    out
}

/// Whether a thread is the backends' (control loops, pool workers, the console
/// poller, reaper and sink writers, channel threads, and the former per-device
/// names: `blkback-*`, `blkio-*`, `netback-*`, `console-d*`).
fn is_backend(n: &str) -> bool {
    ["xb-ctl", "blk", "netback", "consio", "console", "channel"]
        .iter()
        .any(|p| n.starts_with(p))
}

/// Backend threads by name.
fn backend_threads() -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (n, _) in thread_list() {
        if is_backend(&n) {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

/// Context switches of all backend threads so far, and their names.
fn backend_switches() -> (u64, Vec<(String, u64)>) {
    let l: Vec<(String, u64)> = thread_list()
        .into_iter()
        .filter(|(n, _)| is_backend(n))
        .collect();
    (l.iter().map(|t| t.1).sum(), l)
}

fn total(m: &BTreeMap<String, usize>) -> usize {
    m.values().sum()
}

/// Domains with a connected disk and vif, their guests holding on until released.
struct Fleet {
    doms: Vec<DomId>,
    channels: Vec<ChannelBackend>,
    disks: Vec<BlkBackend>,
    vifs: Vec<NetBackend>,
    release: Vec<Sender<()>>,
    results: Vec<Receiver<Result<(), String>>>,
}

fn start(
    hv: &Arc<Hypervisor>,
    br: &Arc<Bridge>,
    consoles: &Arc<ConsoleBackend>,
    dir: &blk_util::TempDir,
    n: usize,
    base: usize,
) -> Fleet {
    let mut f = Fleet {
        doms: Vec::new(),
        channels: Vec::new(),
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
        // Its primary console on a pty (some output goes through it) and a pty
        // channel (never connected: no frontend); the first domain also has a
        // socket channel with a client.
        let con = consoles.start(&dom, Sink::Pty).expect("console");
        con.push_early(format!("domain {i} up\n").as_bytes());
        con.wait_for(format!("domain {i} up").as_bytes(), GUARD)
            .expect("console output");
        while con.stats().sink_bytes == 0 {
            assert!(con.stats().sink_error.is_none(), "{:?}", con.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        f.doms.push(dom.id());
        let mut chans = vec![(1, Connection::Pty)];
        if i == 0 {
            chans.push((2, Connection::Socket(dir.path().join("ch.sock"))));
        }
        for (devid, connection) in chans {
            f.channels.push(
                ChannelBackend::start(
                    hv,
                    consoles,
                    dom.id(),
                    ChannelConfig {
                        devid,
                        name: format!("org.example.{devid}"),
                        connection,
                        hostile: None,
                    },
                )
                .expect("channel"),
            );
        }
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
    fn stop(self, consoles: &ConsoleBackend) {
        drop(self.release);
        for r in self.results {
            r.recv_timeout(GUARD).expect("guest result").expect("guest");
        }
        for c in self.channels {
            c.destroy();
        }
        for d in self.doms {
            consoles.remove(d);
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
    let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
    let dir = blk_util::TempDir::new("threads");
    let pool = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    // Three control loops, three pools, the console poller and reaper, and the
    // socket channel's listener and client output threads.
    let bound = 3 + 3 * pool + 2 + 2;

    // What a snapshot must show for `n` domains.
    let check = |n: usize, m: &BTreeMap<String, usize>| -> Result<(), String> {
        if total(m) > bound {
            return Err(format!(
                "{n} domains (a 2-queue disk, a vif, a console and a channel each): {} backend \
                 threads, at most {bound} expected: {m:?}",
                total(m)
            ));
        }
        if !(m.get("xb-ctl-vbd") == Some(&1)
            && m.get("xb-ctl-vif") == Some(&1)
            && m.get("xb-ctl-console") == Some(&1)
            && m.get("console-poll") == Some(&1))
        {
            return Err(format!("{n} domains: {m:?}"));
        }
        for (name, count) in m {
            let shared = [
                "xb-ctl-vbd",
                "xb-ctl-vif",
                "xb-ctl-console",
                "blkio",
                "netback",
                "consio",
                "console-poll",
                "console-reaper",
            ]
            .contains(&name.as_str());
            // The socket channel's own threads: its listener, its client's output.
            let socket = (name.starts_with("channel-d") || name == "channel-out") && *count == 1;
            if !(shared || socket) {
                return Err(format!(
                    "{n} domains: a per-device thread: {name} ({count})"
                ));
            }
        }
        Ok(())
    };
    // A thread carries its creator's name from its creation until it sets its own
    // (e.g. the channel's client output thread is "channel-d1-2-so" for a moment),
    // so a snapshot taken just then counts its creator twice: such a snapshot is
    // taken again (up to 40 times, 50 ms apart). Threads that really grow with
    // devices show in every snapshot.
    let settled = |n: usize| -> BTreeMap<String, usize> {
        let mut m = backend_threads();
        for _ in 0..40 {
            if check(n, &m).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            m = backend_threads();
        }
        m
    };

    let small = start(&hv, &br, &consoles, &dir, 2, 0);
    // A client on the socket channel (its output thread runs while it is
    // connected).
    let client = std::os::unix::net::UnixStream::connect(dir.path().join("ch.sock"))
        .expect("connect to the channel socket");
    let at_2 = settled(2);
    let big = start(&hv, &br, &consoles, &dir, 10, 2);
    let at_12 = settled(12);
    println!("backend threads with 2 domains: {at_2:?}");
    println!("backend threads with 12 domains: {at_12:?}");
    for (n, m) in [(2, &at_2), (12, &at_12)] {
        if let Err(e) = check(n, m) {
            panic!("{e}");
        }
    }

    // All idle (guests waiting, the channels' frontends never connecting, the
    // socket client silent): the backend threads sleep until an event.
    std::thread::sleep(Duration::from_millis(500));
    let (a, _) = backend_switches();
    std::thread::sleep(Duration::from_secs(2));
    let (b, list) = backend_switches();
    println!("backend thread wake-ups in 2 s of idle: {}", b - a);
    assert!(
        b - a <= 6,
        "{} wake-ups of the backend threads in 2 s of idle (12 domains); threads: {list:?}",
        b - a
    );

    drop(client);
    small.stop(&consoles);
    big.stop(&consoles);
    // Teardown: the loops, the pools and the poller end with their last device.
    let end = Instant::now() + GUARD;
    let gone = |m: &BTreeMap<String, usize>| m.keys().all(|n| n == "console-reaper");
    while !gone(&backend_threads()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = backend_threads();
    assert!(gone(&left), "threads left after teardown: {left:?}");
}
