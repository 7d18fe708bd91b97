//! Network throughput: two in-process guests (xennet-front) through netback and the
//! bridge, against a plain single-producer/single-consumer memcpy queue carrying
//! the same frames between two threads in the same run.
//!
//! `cargo bench -p xen-backends --bench net [-- [FRAMES] [--rounds R] [--sizes 64,1500]
//! [--only queue|xen]]`
//!
//! Both paths copy each frame in on one thread and out on another, keep at most
//! [`WINDOW`] frames in flight (the queue's capacity; for the guests, as a
//! transport protocol's window would), and wait the same way: the receiver polls
//! for [`SPIN`] (yielding the CPU between polls: the machine may have fewer cores
//! than busy threads) without asking to be woken (the guest:
//! `NetFront::recv_polling`), then sleeps until the sender wakes it (the queue: a
//! parked thread and an unpark; the guests: `recv`, which re-arms, then the event
//! channel); a sender with a full window
//! yields. (netback's queue workers poll the same way before they sleep.) So the ratio is the cost of the Xen path: grant copies, rings, event
//! channels, the bridge.
//!
//! The queue's slots and both receivers' buffers are page-aligned, pre-faulted
//! memory advised for transparent huge pages, as shim-hv places guest RAM (so the
//! baseline's rounds do not depend on where an allocation happened to land).
//!
//! Each size runs `R` rounds (default 5; queue, then guests, alternating); the
//! table gives the median and the range over the rounds, and the ratio of the
//! medians (and of the best rounds: on a shared machine the best round is the
//! least disturbed one). "notif/frame" is
//! wake-ups per frame for the queue, event-channel notifications (frontends and
//! backends, both directions) per frame for the guests.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypercall::gnttab::GrantTable;
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig};
use xen_model::inproc::InProcGuest;
use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::Xenstore;
use xennet_front::{Config, Error, Mac, NetFront};

/// Frames in flight at most (both paths).
const WINDOW: usize = 256;
const SLOT: usize = 2048;
const NG: usize = 8192;
/// How long a receiver polls an empty queue/ring before it sleeps (both paths).
const SPIN: Duration = Duration::from_micros(50);

fn frame(len: usize, dst: Mac, src: Mac) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

/// What one run measured.
#[derive(Clone, Copy)]
struct Run {
    elapsed: Duration,
    notifications: u64,
    /// The guests' notifications by sender: A's frontend (tx kicks), B's
    /// frontend (rx refill kicks), A's netback (tx completions to A), B's
    /// netback (rx deliveries to B). Zero for the queue.
    by_source: [u64; 4],
}

#[repr(align(128))]
struct Padded<T>(T);

/// Memory placed as guest RAM is: an anonymous mapping advised for transparent
/// huge pages, page-aligned, and pre-faulted (every page written once before
/// use), so no round pays for page faults and every round sees the same layout.
struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; who may touch which
// bytes when is the business of its users (Spsc's rules below).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize) -> Region {
        let len = len.next_multiple_of(2 << 20);
        // SAFETY: a fresh anonymous private mapping touches no existing memory;
        // the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of {len} bytes failed");
        // SAFETY: advice on our own fresh mapping (as shim-hv's guest RAM gets);
        // it does not change its contents.
        let _ = unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        // SAFETY: p..p+len is our mapping, writable, and nobody else has it yet.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, len) };
        Region {
            base: p.cast(),
            len,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used (we are being dropped).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A plain SPSC ring of byte slots: memcpy in, memcpy out. The slots are
/// `SLOT`-byte pieces of a [`Region`] (two per page, page-aligned pairs).
struct Spsc {
    data: Region,
    lens: Vec<UnsafeCell<usize>>,
    head: Padded<AtomicUsize>,
    tail: Padded<AtomicUsize>,
    /// The consumer is (about to be) parked.
    parked: Padded<AtomicBool>,
}

// SAFETY: slot `i` (its bytes in `data` and `lens[i]`) is written only by the
// producer while `i` is between tail and head + WINDOW (not yet published), and
// read only by the consumer after the producer published it with a release store
// of `head`; acquire loads order them.
unsafe impl Sync for Spsc {}

impl Spsc {
    fn slot(&self, i: usize) -> *mut u8 {
        // In bounds: `data` holds WINDOW slots of SLOT bytes (and more).
        self.data.base.wrapping_add(i % WINDOW * SLOT)
    }
}

fn baseline(len: usize, n: u64) -> Run {
    let q = Arc::new(Spsc {
        data: Region::new(WINDOW * SLOT),
        lens: (0..WINDOW).map(|_| UnsafeCell::new(0)).collect(),
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
        parked: Padded(AtomicBool::new(false)),
    });
    let f = frame(len, Mac([2, 0, 0, 0, 0, 2]), Mac([2, 0, 0, 0, 0, 1]));
    let q2 = q.clone();
    let consumer = std::thread::spawn(move || {
        // The receiver's buffer: page-aligned, pre-faulted, like a guest's.
        let out_region = Region::new(SLOT);
        // SAFETY: the region is ours alone, at least SLOT bytes, and outlives `out`.
        let out = unsafe { std::slice::from_raw_parts_mut(out_region.base, SLOT) };
        let mut sum = 0u64;
        let mut idle: Option<Instant> = None;
        let mut got = 0u64;
        while got < n {
            let t = q2.tail.0.load(Ordering::Relaxed);
            if q2.head.0.load(Ordering::Acquire) == t {
                let since = *idle.get_or_insert_with(Instant::now);
                if since.elapsed() < SPIN {
                    std::thread::yield_now();
                    continue;
                }
                idle = None;
                // Announce the sleep, then look once more (the producer publishes,
                // then looks at `parked`: one of us sees the other).
                q2.parked.0.store(true, Ordering::SeqCst);
                if q2.head.0.load(Ordering::SeqCst) == t {
                    std::thread::park_timeout(Duration::from_millis(10));
                }
                q2.parked.0.store(false, Ordering::SeqCst);
                continue;
            }
            idle = None;
            // SAFETY: see `Sync` above: slot `t` is published and not being written.
            let l = unsafe { *q2.lens[t % WINDOW].get() };
            // SAFETY: as above; the slot holds SLOT >= l bytes.
            let buf = unsafe { std::slice::from_raw_parts(q2.slot(t), l) };
            out[..l].copy_from_slice(buf);
            std::hint::black_box(&mut *out);
            sum = sum.wrapping_add(u64::from(out[l - 1]));
            q2.tail.0.store(t + 1, Ordering::Release);
            got += 1;
        }
        sum
    });
    let consumer_thread = consumer.thread().clone();
    let mut wakes = 0u64;
    let start = Instant::now();
    for _ in 0..n {
        let h = q.head.0.load(Ordering::Relaxed);
        while h - q.tail.0.load(Ordering::Acquire) >= WINDOW {
            std::thread::yield_now();
        }
        // SAFETY: see `Sync` above: slot `h` is free and unpublished; it holds
        // SLOT >= len bytes.
        unsafe {
            std::slice::from_raw_parts_mut(q.slot(h), len).copy_from_slice(&f);
            *q.lens[h % WINDOW].get() = len;
        }
        q.head.0.store(h + 1, Ordering::SeqCst);
        if q.parked.0.load(Ordering::SeqCst) && q.parked.0.swap(false, Ordering::SeqCst) {
            wakes += 1;
            consumer_thread.unpark();
        }
    }
    let sum = consumer.join().unwrap();
    let elapsed = start.elapsed();
    std::hint::black_box(sum);
    Run {
        elapsed,
        notifications: wakes,
        by_source: [0; 4],
    }
}

fn xen_path(len: usize, n: u64) -> Run {
    let hv = Hypervisor::new(HypervisorConfig::default());
    let br = Bridge::new("xenbr0");
    let (ma, mb) = (Mac([0xaa, 0, 0, 0x50, 2, 1]), Mac([0xaa, 0, 0, 0x50, 2, 2]));
    let da = hv.create_domain(DomainSpec::new("bench-a", 48)).unwrap();
    let db = hv.create_domain(DomainSpec::new("bench-b", 48)).unwrap();
    let cfg = |m| NetConfig {
        mac: Some(m),
        ..NetConfig::default()
    };
    let ba = Arc::new(NetBackend::start(&hv, da.id(), br.clone(), cfg(ma)).unwrap());
    let bb = Arc::new(NetBackend::start(&hv, db.id(), br.clone(), cfg(mb)).unwrap());
    let backend_notifications = {
        let (ba, bb) = (ba.clone(), bb.clone());
        move || [ba.stats().notifications, bb.stats().notifications]
    };
    let received = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = channel();
    let (done_tx, done_rx) = channel();
    // (start time, backends' notifications so far) from A when it starts sending.
    let (start_tx, start_rx) = channel::<(Instant, [u64; 2])>();
    let (a_end_tx, a_end_rx) = channel::<u64>();
    let rcv = received.clone();
    let be_notes = backend_notifications.clone();
    let _hb = hv
        .spawn_guest(db, move |g| {
            let p: &InProcGuest = &g;
            let t: Box<GrantTable<NG>> = Box::new(GrantTable::setup(p, 16).unwrap());
            let mut xs = Xenstore::from_hvm_params(p).unwrap();
            let mut dev = NetFront::<_, _, 4>::connect(
                p,
                &*t,
                &mut xs,
                0,
                Config::default(),
                Duration::from_secs(20),
            )
            .unwrap();
            // Let the bridge learn B.
            dev.send(&frame(60, Mac::BROADCAST, mb)).unwrap();
            let b_start = dev.stats().notifications;
            ready_tx.send(()).unwrap();
            // Page-aligned and pre-faulted, as the queue's receive buffer.
            let buf_region = Region::new(65536);
            // SAFETY: the region is ours alone, 65536 bytes or more, and outlives `buf`.
            let buf = unsafe { std::slice::from_raw_parts_mut(buf_region.base, 65536) };
            let mut got = 0u64;
            let mut idle: Option<Instant> = None;
            while got < n {
                // Busy-poll a little before sleeping (as NAPI busy polling does),
                // without asking for notifications (as the queue's receiver is
                // unparked only once parked); then `recv`, which asks for one and
                // checks once more, and sleep on the event channel.
                let spinning = idle.is_none_or(|t| t.elapsed() < SPIN);
                let r = if spinning {
                    dev.recv_polling(buf)
                } else {
                    dev.recv(buf)
                };
                match r {
                    Ok(Some(m)) => {
                        idle = None;
                        if m.len == len {
                            got += 1;
                            rcv.store(got, Ordering::Release);
                        }
                    }
                    Ok(None) if spinning => {
                        idle.get_or_insert_with(Instant::now);
                        std::thread::yield_now();
                    }
                    Ok(None) => {
                        idle = None;
                        hypercall::Platform::wait(p);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let (start, before) = start_rx.recv().unwrap();
            let elapsed = start.elapsed();
            let a = a_end_rx.recv().unwrap();
            let b = dev.stats().notifications - b_start;
            let be = be_notes();
            let by_source = [a, b, be[0] - before[0], be[1] - before[1]];
            done_tx
                .send(Run {
                    elapsed,
                    notifications: by_source.iter().sum(),
                    by_source,
                })
                .unwrap();
            let _ = dev.close(&mut xs, Duration::from_secs(2));
        })
        .unwrap();
    let be_notes = backend_notifications;
    let _ha = hv
        .spawn_guest(da, move |g| {
            let p: &InProcGuest = &g;
            let t: Box<GrantTable<NG>> = Box::new(GrantTable::setup(p, 16).unwrap());
            let mut xs = Xenstore::from_hvm_params(p).unwrap();
            let mut dev = NetFront::<_, _, 4>::connect(
                p,
                &*t,
                &mut xs,
                0,
                Config::default(),
                Duration::from_secs(20),
            )
            .unwrap();
            ready_rx.recv().unwrap();
            let f = frame(len, mb, ma);
            let a_start = dev.stats().notifications;
            let before = be_notes();
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < n {
                if sent - received.load(Ordering::Acquire) >= WINDOW as u64 {
                    std::thread::yield_now();
                    continue;
                }
                match dev.send(&f) {
                    Ok(()) => sent += 1,
                    Err(Error::Busy) => {
                        let _ = dev.poll();
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            start_tx.send((start, before)).unwrap();
            // Stay up until B has everything.
            while received.load(Ordering::Acquire) < n {
                let _ = dev.poll();
                std::thread::sleep(Duration::from_millis(1));
            }
            a_end_tx.send(dev.stats().notifications - a_start).unwrap();
            let _ = dev.close(&mut xs, Duration::from_secs(2));
        })
        .unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(600))
        .expect("bench finished")
}

struct Args {
    frames: Option<u64>,
    rounds: usize,
    sizes: Vec<usize>,
    queue: bool,
    xen: bool,
}

fn args() -> Args {
    let mut a = Args {
        frames: None,
        rounds: 5,
        sizes: vec![64, 1500],
        queue: true,
        xen: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--sizes" => {
                a.sizes = it
                    .next()
                    .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
                    .unwrap_or_default()
            }
            "--only" => match it.next().as_deref() {
                Some("queue") => a.xen = false,
                Some("xen") => a.queue = false,
                _ => {}
            },
            "--bench" => {}
            s => {
                if let Ok(n) = s.parse() {
                    a.frames = Some(n);
                }
            }
        }
    }
    a.rounds = a.rounds.max(1);
    a
}

/// Median, minimum and maximum of the frame rates, and the median run.
fn summary(runs: &[Run], n: u64) -> (f64, f64, f64, Run) {
    let mut r: Vec<(f64, Run)> = runs
        .iter()
        .map(|x| (n as f64 / x.elapsed.as_secs_f64(), *x))
        .collect();
    r.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mid = r[r.len() / 2];
    (mid.0, r[0].0, r[r.len() - 1].0, mid.1)
}

fn main() {
    let a = args();
    println!(
        "frame  path                frames/s: median (min-max)      Gbit/s  notif/frame  ratio: median (best)"
    );
    for &len in &a.sizes {
        let n = a
            .frames
            .unwrap_or(if len <= 256 { 2_000_000 } else { 1_000_000 });
        let (mut qr, mut xr) = (Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            if a.queue {
                qr.push(baseline(len, n));
            }
            if a.xen {
                xr.push(xen_path(len, n));
            }
        }
        let gbit = |rate: f64| rate * len as f64 * 8.0 / 1e9;
        let mut base = None;
        for (name, runs) in [("spsc memcpy queue", &qr), ("xen (2 guests)", &xr)] {
            if runs.is_empty() {
                continue;
            }
            let (med, lo, hi, mid) = summary(runs, n);
            let notes = mid.notifications as f64 / n as f64;
            let ratio = match base {
                None => {
                    base = Some((med, hi));
                    "1.00  (1.00)".to_string()
                }
                Some((bm, bh)) => format!("{:.2}  ({:.2})", med / bm, hi / bh),
            };
            println!(
                "{len:>5}  {name:<18} {med:>10.0} ({lo:>9.0}-{hi:<9.0})  {:>7.2}  {notes:>11.3}  {ratio}",
                gbit(med)
            );
            if mid.by_source.iter().any(|&x| x > 0) {
                let per = |x: u64| x as f64 / n as f64;
                let [a, b, ba, bb] = mid.by_source;
                println!(
                    "       (notifications per frame in that run: A tx kicks {:.4}, B rx refill kicks {:.4}, \
                     A's netback tx completions {:.4}, B's netback rx deliveries {:.4})",
                    per(a),
                    per(b),
                    per(ba),
                    per(bb)
                );
            }
        }
    }
}
