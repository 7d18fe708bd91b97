//! Block throughput: an in-process guest (xbd-front) through shim-hv's blkback on a
//! file-backed disk, against plain `pread`/`pwrite` on the same file in the same run.
//!
//! `cargo bench -p shim-hv --bench blk` (optionally `-- <MiB>`, default 256).
//!
//! Workloads: sequential 1 MiB reads and writes, 4 KiB random reads, at queue depth 1
//! (the blocking API) and 32 (submit/poll/finish). The baseline is one thread doing
//! the same transfers with `pread`/`pwrite` into/out of a private buffer (the file
//! is in the page cache in both cases). Reported: bandwidth (or IOPS), the ratio to
//! the baseline, and event-channel notifications per request (frontend to backend
//! plus backend to frontend).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use hypercall::gnttab::GrantTable;
use hypercall::Platform;
use shim_hv::backend::blk::{BlkBackend, BlkConfig, Target};
use shim_hv::runner::inproc::InProcGuest;
use shim_hv::xen::{DomainSpec, Hypervisor, HypervisorConfig};
use xbd_front::{Config, Device, Error, Tag};
use xenbus::Xenstore;

const NG: usize = 16384;
const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(60);
const RANDOM_OPS: usize = 20_000;

type Disk<'a> = Device<&'a InProcGuest, &'a GrantTable<NG>, 32, 256>;

#[derive(Clone, Copy, Debug)]
enum Kind {
    SeqRead,
    SeqWrite,
    RandRead,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SeqRead => "seq read 1 MiB",
            Kind::SeqWrite => "seq write 1 MiB",
            Kind::RandRead => "rand read 4 KiB",
        }
    }
    fn block(self) -> usize {
        match self {
            Kind::SeqRead | Kind::SeqWrite => MIB,
            Kind::RandRead => 4096,
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The offsets (bytes) a workload touches, in order.
fn offsets(kind: Kind, size: usize) -> Vec<u64> {
    match kind {
        Kind::SeqRead | Kind::SeqWrite => (0..size / MIB).map(|i| (i * MIB) as u64).collect(),
        Kind::RandRead => {
            let mut r = Rng(0x9E37_79B9_7F4A_7C15);
            (0..RANDOM_OPS)
                .map(|_| (r.next() % (size / 4096) as u64) * 4096)
                .collect()
        }
    }
}

fn baseline(path: &std::path::Path, kind: Kind, size: usize) -> Duration {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = vec![0x5Au8; kind.block()];
    let offs = offsets(kind, size);
    let t0 = Instant::now();
    for &o in &offs {
        match kind {
            Kind::SeqWrite => f.write_all_at(&buf, o).unwrap(),
            _ => f.read_exact_at(&mut buf, o).unwrap(),
        }
    }
    t0.elapsed()
}

/// Runs one workload in the guest; returns (elapsed, requests, frontend
/// notifications).
fn guest_run(d: &mut Disk<'_>, kind: Kind, size: usize, depth: usize) -> (Duration, u64, u64) {
    let bs = kind.block();
    let offs = offsets(kind, size);
    let mut buf = vec![0xA5u8; bs];
    let before = d.stats();
    let t0 = Instant::now();
    if depth == 1 {
        for &o in &offs {
            match kind {
                Kind::SeqWrite => d.write(o / 512, &[&buf[..]], T).unwrap(),
                _ => d.read(o / 512, &mut [&mut buf[..]], T).unwrap(),
            }
        }
    } else {
        let mut next = 0usize;
        let mut inflight: Vec<Tag> = Vec::with_capacity(depth);
        while next < offs.len() || !inflight.is_empty() {
            d.plug();
            while inflight.len() < depth && next < offs.len() {
                let o = offs[next] / 512;
                let r = match kind {
                    Kind::SeqWrite => d.submit_write(o, &[&buf[..]]),
                    _ => d.submit_read(o, bs),
                };
                match r {
                    Ok(t) => {
                        inflight.push(t);
                        next += 1;
                    }
                    Err(Error::Busy) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            d.unplug().unwrap();
            let mut done = 0;
            d.poll_nowait().unwrap();
            while let Some(t) = d.next_completion() {
                let n = match kind {
                    Kind::SeqWrite => d.finish(t, &mut []),
                    _ => d.finish(t, &mut [&mut buf[..]]),
                };
                n.unwrap();
                inflight.retain(|x| *x != t);
                done += 1;
            }
            // Sleep until half of what is in flight completed (one notification per
            // batch; the backend keeps working on the other half meanwhile).
            if done == 0
                && d.poll_batched(inflight.len() / 2).unwrap() == 0
                && d.next_completion().is_none()
            {
                d.platform().wait();
            }
        }
    }
    let el = t0.elapsed();
    let after = d.stats();
    (
        el,
        offs.len() as u64,
        after.notifications - before.notifications,
    )
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let size = mib * MIB;
    let dir = std::env::temp_dir().join(format!("xenkit-blk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("bench.img");
    {
        let data: Vec<u8> = (0..MIB).map(|i| (i * 7) as u8).collect();
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&img)
            .unwrap();
        for i in 0..mib {
            f.write_all_at(&data, (i * MIB) as u64).unwrap();
        }
    }
    // Warm the page cache for both paths.
    let _ = baseline(&img, Kind::SeqRead, size);

    let hv = Hypervisor::new(HypervisorConfig::default());
    let dom = hv
        .create_domain(DomainSpec::new("bench", 128))
        .expect("domain");
    let be = BlkBackend::start(
        &hv,
        dom.id(),
        BlkConfig::new(Target::File(img.clone()), 51712, "xvda"),
    )
    .expect("blkback");
    let plan: Vec<(Kind, usize)> = vec![
        (Kind::SeqRead, 1),
        (Kind::SeqRead, 32),
        (Kind::SeqWrite, 1),
        (Kind::SeqWrite, 32),
        (Kind::RandRead, 1),
        (Kind::RandRead, 32),
    ];
    let (tx, rx) = channel();
    let (go_tx, go_rx) = channel::<usize>();
    let (done_tx, done_rx) = channel();
    let plan2 = plan.clone();
    let _h = hv
        .spawn_guest(dom, move |g| {
            let p: &InProcGuest = &g;
            let table: Box<GrantTable<NG>> =
                Box::new(GrantTable::setup(p, (NG / 512) as u32).expect("grant table"));
            let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
            let mut d: Box<Disk<'_>> =
                Box::new(Device::new(p, &*table, 51712, Config::default()).expect("device"));
            d.connect(&mut xs).expect("connect");
            tx.send(d.features()).unwrap();
            while let Ok(i) = go_rx.recv() {
                let (kind, depth) = plan2[i];
                let r = guest_run(&mut d, kind, size, depth);
                done_tx.send(r).unwrap();
            }
            let _ = d.close(&mut xs);
        })
        .expect("guest");
    let features = rx.recv_timeout(Duration::from_secs(60)).expect("connected");
    println!("xbd-front <-> blkback, {mib} MiB file, negotiated: {features:?}");
    println!(
        "{:<18} {:>5} {:>12} {:>12} {:>7} {:>14}",
        "workload", "depth", "guest", "pread/pwrite", "ratio", "notif/request"
    );
    for (i, &(kind, depth)) in plan.iter().enumerate() {
        let base = baseline(&img, kind, size);
        let s0 = be.stats();
        go_tx.send(i).unwrap();
        let (el, reqs, fe_notif) = done_rx.recv().expect("guest result");
        let s1 = be.stats();
        let be_notif = s1.notifications_sent - s0.notifications_sent;
        let n = offsets(kind, size).len() as f64;
        let (g, b, unit) = match kind {
            Kind::RandRead => (n / el.as_secs_f64(), n / base.as_secs_f64(), "IOPS"),
            _ => (
                (size / MIB) as f64 / el.as_secs_f64(),
                (size / MIB) as f64 / base.as_secs_f64(),
                "MiB/s",
            ),
        };
        println!(
            "{:<18} {:>5} {:>7.0} {unit:<5}{:>7.0} {unit:<5}{:>7.2} {:>14.3}",
            kind.name(),
            depth,
            g,
            b,
            g / b,
            (fe_notif + be_notif) as f64 / reqs as f64
        );
    }
    drop(go_tx);
    be.destroy();
    let _ = std::fs::remove_dir_all(&dir);
}
