//! Block throughput: an in-process guest (xbd-front) through shim-hv's blkback on a
//! file-backed disk, against plain `pread`/`pwrite` on the same file in the same run.
//!
//! `cargo bench -p xen-backends --bench blk [-- [MiB] [--rounds R] [--only TEXT] [--depth D]]`
//! (defaults: a 1024 MiB file, 3 rounds, every workload; `--only` keeps the
//! workloads whose name contains TEXT, e.g. `--only "in place"`, `--depth` those
//! at queue depth D, 1 or 32).
//!
//! Workloads: sequential 1 MiB reads (copied into a caller buffer with
//! `Device::read`/`finish`, and left in place with `Device::read_in_place`/
//! `take_read`), sequential 1 MiB writes and 4 KiB random reads, at queue depth 1
//! (the blocking API) and 32 (submit/poll/finish). The baseline is one thread
//! doing the same transfers with `pread`/`pwrite` into/out of one private buffer
//! (the file is in the page cache in both cases). Every buffer is page-aligned:
//! on the development machine a copy into a destination 16 bytes past a page
//! boundary (where a plain 1 MiB `Vec` lands) runs at less than half the speed,
//! which would skew either side.
//!
//! Each workload runs R rounds (baseline, then guest, alternating). Reported: the
//! median bandwidth (or IOPS) of both, the ratio of the medians and the range of
//! the per-round ratios, and event-channel notifications per request (frontend to
//! backend plus backend to frontend). For depth 32 the last column adds what
//! `pread` reaches when it, too, cycles through 32 different 1 MiB buffers (the
//! memory a depth-32 read keeps in flight), as a ratio to the one-buffer baseline.
//!
//! Registered pages: "seq read/write 1 MiB, registered pages" move the data
//! straight between the file and 1 MiB of guest pages registered with the device
//! (`Device::register_pages`, `read_registered`/`write_registered`): one pass, as
//! `pread`/`pwrite` make, instead of bounce pages plus a copy.
//!
//! Multi-queue: "rand read 4 KiB, 2 queues" runs the depth-32 random reads on a
//! second disk (the same file, its own blkback) connected with two queues
//! (`Config::queues`; round-robin over two rings, served by blkback's I/O worker
//! pool, up to one worker per core). Each
//! of its rounds runs the baseline, the one-queue disk and the two-queue disk, and
//! a line under the row gives the two-queue/one-queue ratio of the same rounds.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use hypercall::gnttab::GrantTable;
use hypercall::Platform;
use xbd_front::{Config, Device, Error, Tag};
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xen_model::inproc::InProcGuest;
use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::Xenstore;

/// Grant entries: two disks of 32 requests × 257 persistent grants.
const NG: usize = 32768;
const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(60);
const RANDOM_OPS: usize = 20_000;

type Disk<'a> = Device<&'a InProcGuest, &'a GrantTable<NG>, 32, 256>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SeqRead,
    SeqReadInPlace,
    SeqWrite,
    RandRead,
    /// Into / out of pages registered with the device (one pass).
    SeqReadRegistered,
    SeqWriteRegistered,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SeqRead => "seq read 1 MiB",
            Kind::SeqReadInPlace => "seq read 1 MiB in place",
            Kind::SeqWrite => "seq write 1 MiB",
            Kind::RandRead => "rand read 4 KiB",
            Kind::SeqReadRegistered => "seq read 1 MiB, registered pages",
            Kind::SeqWriteRegistered => "seq write 1 MiB, registered pages",
        }
    }
    fn block(self) -> usize {
        match self {
            Kind::RandRead => 4096,
            _ => MIB,
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
        Kind::RandRead => {
            let mut r = Rng(0x9E37_79B9_7F4A_7C15);
            (0..RANDOM_OPS)
                .map(|_| (r.next() % (size / 4096) as u64) * 4096)
                .collect()
        }
        _ => (0..size / MIB).map(|i| (i * MIB) as u64).collect(),
    }
}

/// A page-aligned heap buffer: `len` bytes starting at the first page boundary
/// inside a slightly larger allocation.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize, fill: u8) -> Self {
        let raw = vec![fill; len + 4096];
        let start = (4096 - raw.as_ptr() as usize % 4096) % 4096;
        AlignedBuf { raw, start, len }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// `pread`/`pwrite` of the workload's blocks, cycling through `nbuf` buffers:
/// (elapsed, CPU time of this thread).
fn baseline(path: &std::path::Path, kind: Kind, size: usize, nbuf: usize) -> (Duration, Duration) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut bufs: Vec<AlignedBuf> = (0..nbuf)
        .map(|_| AlignedBuf::new(kind.block(), 0x5A))
        .collect();
    let offs = offsets(kind, size);
    let c0 = thread_cpu();
    let t0 = Instant::now();
    for (i, &o) in offs.iter().enumerate() {
        let buf = bufs[i % nbuf].as_mut_slice();
        match kind {
            Kind::SeqWrite | Kind::SeqWriteRegistered => f.write_all_at(buf, o).unwrap(),
            _ => f.read_exact_at(buf, o).unwrap(),
        }
    }
    (t0.elapsed(), thread_cpu() - c0)
}

/// One run the guest is asked for: workload, depth, and which disk (its number
/// of queues).
type Job = (Kind, usize, usize);

/// What one guest run measured.
struct Run {
    elapsed: Duration,
    /// CPU time of the guest's thread (which also runs the reads blkback answers
    /// inline).
    cpu: Duration,
    requests: u64,
    /// Frontend notifications.
    notifications: u64,
}

/// Runs one workload in the guest.
fn guest_run(d: &mut Disk<'_>, kind: Kind, size: usize, depth: usize) -> Run {
    let bs = kind.block();
    let offs = offsets(kind, size);
    let mut owned = AlignedBuf::new(bs, 0xA5);
    let buf = owned.as_mut_slice();
    let before = d.stats();
    let c0 = thread_cpu();
    let t0 = Instant::now();
    if depth == 1 {
        for &o in &offs {
            match kind {
                Kind::SeqWrite => d.write(o / 512, &[&buf[..]], T).unwrap(),
                Kind::SeqReadInPlace => drop(d.read_in_place(o / 512, bs, T).unwrap()),
                Kind::SeqReadRegistered => d.read_registered(o / 512, 0, bs, T).unwrap(),
                Kind::SeqWriteRegistered => d.write_registered(o / 512, 0, bs, T).unwrap(),
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
                    Kind::SeqReadRegistered => d.submit_read_registered(o, 0, bs),
                    Kind::SeqWriteRegistered => d.submit_write_registered(o, 0, bs),
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
                match kind {
                    Kind::SeqWrite | Kind::SeqReadRegistered | Kind::SeqWriteRegistered => {
                        d.finish(t, &mut []).unwrap();
                    }
                    Kind::SeqReadInPlace => drop(d.take_read(t).unwrap()),
                    _ => drop(d.finish(t, &mut [&mut buf[..]]).unwrap()),
                }
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
    let elapsed = t0.elapsed();
    let cpu = thread_cpu() - c0;
    let after = d.stats();
    Run {
        elapsed,
        cpu,
        requests: offs.len() as u64,
        notifications: after.notifications - before.notifications,
    }
}

/// A row's name: the workload, and the queue count when more than one.
fn row_name(kind: Kind, queues: usize) -> String {
    if queues > 1 {
        format!("{}, {queues} queues", kind.name())
    } else {
        kind.name().to_string()
    }
}

struct Args {
    mib: usize,
    rounds: usize,
    only: Option<String>,
    depth: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        mib: 1024,
        rounds: 3,
        only: None,
        depth: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(3),
            "--only" => a.only = it.next(),
            "--depth" => a.depth = it.next().and_then(|v| v.parse().ok()),
            "--bench" => {}
            v => {
                if let Ok(n) = v.parse() {
                    a.mib = n;
                }
            }
        }
    }
    a.rounds = a.rounds.max(1);
    a
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let size = a.mib * MIB;
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
        for i in 0..a.mib {
            f.write_all_at(&data, (i * MIB) as u64).unwrap();
        }
    }
    // Warm the page cache for both paths.
    let _ = baseline(&img, Kind::SeqRead, size, 1);

    let hv = Hypervisor::new(HypervisorConfig::default());
    let dom = hv
        .create_domain(DomainSpec::new("bench", 192))
        .expect("domain");
    let be = BlkBackend::start(
        &hv,
        dom.id(),
        BlkConfig::new(Target::File(img.clone()), 51712, "xvda"),
    )
    .expect("blkback");
    // The same file as a second disk, for the two-queue row (reads only).
    let be2 = BlkBackend::start(
        &hv,
        dom.id(),
        BlkConfig::new(Target::File(img.clone()), 51728, "xvdb"),
    )
    .expect("blkback");
    let plan: Vec<Job> = [
        (Kind::SeqRead, 1, 1),
        (Kind::SeqRead, 32, 1),
        (Kind::SeqReadInPlace, 1, 1),
        (Kind::SeqReadInPlace, 32, 1),
        (Kind::SeqWrite, 1, 1),
        (Kind::SeqWrite, 32, 1),
        (Kind::SeqReadRegistered, 1, 1),
        (Kind::SeqReadRegistered, 32, 1),
        (Kind::SeqWriteRegistered, 1, 1),
        (Kind::SeqWriteRegistered, 32, 1),
        (Kind::RandRead, 1, 1),
        (Kind::RandRead, 32, 1),
        (Kind::RandRead, 32, 2),
    ]
    .into_iter()
    .filter(|&(k, d, q)| {
        a.only
            .as_ref()
            .is_none_or(|o| row_name(k, q).contains(o.as_str()))
            && a.depth.is_none_or(|want| want == d)
    })
    .collect();
    let (tx, rx) = channel();
    let (go_tx, go_rx) = channel::<Job>();
    let (done_tx, done_rx) = channel();
    let _h = hv
        .spawn_guest(dom, move |g| {
            let p: &InProcGuest = &g;
            let table: Box<GrantTable<NG>> =
                Box::new(GrantTable::setup(p, (NG / 512) as u32).expect("grant table"));
            let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
            let mut d: Box<Disk<'_>> =
                Box::new(Device::new(p, &*table, 51712, Config::default()).expect("device"));
            d.connect(&mut xs).expect("connect");
            // 1 MiB of guest pages registered for the one-pass rows (the pread
            // baseline, too, uses one 1 MiB buffer).
            let reg = hypercall::SharedPages::alloc(p, MIB / 4096).expect("pages");
            d.register_pages(reg).map_err(|(e, _)| e).expect("register");
            let two = Config {
                queues: 2,
                ..Config::default()
            };
            let mut d2: Box<Disk<'_>> =
                Box::new(Device::new(p, &*table, 51728, two).expect("device"));
            d2.connect(&mut xs).expect("connect");
            tx.send((d.features(), d2.features())).unwrap();
            while let Ok((kind, depth, queues)) = go_rx.recv() {
                let disk = if queues == 2 { &mut d2 } else { &mut d };
                let r = guest_run(disk, kind, size, depth);
                done_tx.send(r).unwrap();
            }
            let _ = d.close(&mut xs);
            let _ = d2.close(&mut xs);
        })
        .expect("guest");
    let (features, features2) = rx.recv_timeout(Duration::from_secs(60)).expect("connected");
    println!(
        "xbd-front <-> blkback, {} MiB file, {} rounds, negotiated: {features:?}; \
         second disk: {features2:?}",
        a.mib, a.rounds
    );
    println!(
        "{:<34} {:>5} {:>12} {:>12} {:>6} {:>11} {:>8} {:>10} {:>7}",
        "workload",
        "depth",
        "guest",
        "pread/pwrite",
        "ratio",
        "range",
        "notif/rq",
        "32 bufs",
        "cpu"
    );
    for &(kind, depth, queues) in &plan {
        let n = offsets(kind, size).len() as f64;
        let per_sec = |d: Duration| match kind {
            Kind::RandRead => n / d.as_secs_f64(),
            _ => a.mib as f64 / d.as_secs_f64(),
        };
        let unit = if kind == Kind::RandRead {
            "IOPS"
        } else {
            "MiB/s"
        };
        let (mut g, mut b, mut r, mut rot) = (vec![], vec![], vec![], vec![]);
        // Two-queue rows: the one-queue disk in the same rounds, and the ratios.
        let (mut one, mut vs_one) = (vec![], vec![]);
        let mut notif = 0u64;
        let mut reqs = 0u64;
        let mut cpu = vec![];
        let backend = if queues == 2 { &be2 } else { &be };
        for _ in 0..a.rounds {
            let (base_el, base_cpu) = baseline(&img, kind, size, 1);
            let base = per_sec(base_el);
            if depth > 1 {
                rot.push(per_sec(baseline(&img, kind, size, depth).0) / base);
            }
            if queues == 2 {
                go_tx.send((kind, depth, 1)).unwrap();
                let run: Run = done_rx.recv().expect("guest result");
                one.push(per_sec(run.elapsed));
            }
            let s0 = backend.stats();
            go_tx.send((kind, depth, queues)).unwrap();
            let run: Run = done_rx.recv().expect("guest result");
            let s1 = backend.stats();
            if let Some(&o) = one.last() {
                vs_one.push(per_sec(run.elapsed) / o);
            }
            notif += run.notifications + s1.notifications_sent - s0.notifications_sent;
            reqs += run.requests;
            cpu.push(base_cpu.as_secs_f64() / run.cpu.as_secs_f64());
            let guest = per_sec(run.elapsed);
            g.push(guest);
            b.push(base);
            r.push(guest / base);
        }
        let (gm, bm) = (median(&mut g), median(&mut b));
        r.sort_by(f64::total_cmp);
        let rotated = if rot.is_empty() {
            String::new()
        } else {
            format!("{:.2}", median(&mut rot))
        };
        println!(
            "{:<34} {:>5} {:>6.0} {unit:<5} {:>6.0} {unit:<5} {:>6.2} {:>5.2}-{:<5.2} {:>8.3} {:>10} {:>7.2}",
            row_name(kind, queues),
            depth,
            gm,
            bm,
            gm / bm,
            r[0],
            r[r.len() - 1],
            notif as f64 / reqs as f64,
            rotated,
            median(&mut cpu),
        );
        if !vs_one.is_empty() {
            vs_one.sort_by(f64::total_cmp);
            println!(
                "  2 queues / 1 queue, same rounds: {:.2} (range {:.2}-{:.2}); 1 queue: {:.0} {unit}",
                median(&mut vs_one.clone()),
                vs_one[0],
                vs_one[vs_one.len() - 1],
                median(&mut one),
            );
        }
    }
    drop(go_tx);
    be.destroy();
    be2.destroy();
    let _ = std::fs::remove_dir_all(&dir);
}
