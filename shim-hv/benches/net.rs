//! Network throughput: two in-process guests (xennet-front) through netback and the
//! bridge, against a plain single-producer/single-consumer memcpy queue carrying
//! the same frames between two threads in the same run.
//!
//! `cargo bench -p shim-hv --bench net` (optionally `-- <frames-per-size>`).
//!
//! Both paths copy each frame in on one thread and out on another and apply
//! backpressure (the queue's capacity; a window of frames in flight for the guests,
//! as a transport protocol would), so the ratio is the cost of the Xen path:
//! grant copies, rings, event channels, the bridge.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypercall::gnttab::GrantTable;
use shim_hv::backend::bridge::Bridge;
use shim_hv::backend::net::{NetBackend, NetConfig};
use shim_hv::runner::inproc::InProcGuest;
use shim_hv::xen::{DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::Xenstore;
use xennet_front::{Config, Error, Mac, NetFront};

const SLOTS: usize = 256;
const SLOT: usize = 2048;
const WINDOW: u64 = 384;
const NG: usize = 8192;
/// Empty receive polls before the receiver sleeps.
const SPIN: u32 = 2000;

fn frame(len: usize, dst: Mac, src: Mac) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

/// A plain SPSC ring of byte slots: memcpy in, memcpy out.
struct Spsc {
    slots: Vec<std::cell::UnsafeCell<([u8; SLOT], usize)>>,
    head: AtomicUsize,
    tail: AtomicUsize,
}

// SAFETY: slot `i` is written only by the producer while `i` is between tail and
// head + SLOTS (not yet published), and read only by the consumer after the
// producer published it with a release store of `head`; acquire loads order them.
unsafe impl Sync for Spsc {}

fn baseline(len: usize, n: u64) -> Duration {
    let q = Arc::new(Spsc {
        slots: (0..SLOTS)
            .map(|_| std::cell::UnsafeCell::new(([0u8; SLOT], 0)))
            .collect(),
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
    });
    let f = frame(len, Mac([2, 0, 0, 0, 0, 2]), Mac([2, 0, 0, 0, 0, 1]));
    let q2 = q.clone();
    let consumer = std::thread::spawn(move || {
        let mut out = vec![0u8; SLOT];
        let mut sum = 0u64;
        for _ in 0..n {
            let t = q2.tail.load(Ordering::Relaxed);
            while q2.head.load(Ordering::Acquire) == t {
                std::hint::spin_loop();
                std::thread::yield_now();
            }
            // SAFETY: see `Sync` above: slot `t` is published and not being written.
            let (buf, l) = unsafe { &*q2.slots[t % SLOTS].get() };
            out[..*l].copy_from_slice(&buf[..*l]);
            sum = sum.wrapping_add(u64::from(out[*l - 1]));
            q2.tail.store(t + 1, Ordering::Release);
        }
        sum
    });
    let start = Instant::now();
    for _ in 0..n {
        let h = q.head.load(Ordering::Relaxed);
        while h - q.tail.load(Ordering::Acquire) >= SLOTS {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        // SAFETY: see `Sync` above: slot `h` is free and unpublished.
        let slot = unsafe { &mut *q.slots[h % SLOTS].get() };
        slot.0[..len].copy_from_slice(&f);
        slot.1 = len;
        q.head.store(h + 1, Ordering::Release);
    }
    let sum = consumer.join().unwrap();
    let d = start.elapsed();
    std::hint::black_box(sum);
    d
}

fn xen_path(len: usize, n: u64) -> (Duration, u64) {
    let hv = Hypervisor::new(HypervisorConfig::default());
    let br = Bridge::new("xenbr0");
    let (ma, mb) = (Mac([0xaa, 0, 0, 0x50, 2, 1]), Mac([0xaa, 0, 0, 0x50, 2, 2]));
    let da = hv.create_domain(DomainSpec::new("bench-a", 48)).unwrap();
    let db = hv.create_domain(DomainSpec::new("bench-b", 48)).unwrap();
    let cfg = |m| NetConfig {
        mac: Some(m),
        ..NetConfig::default()
    };
    let _ba = NetBackend::start(&hv, da.id(), br.clone(), cfg(ma)).unwrap();
    let _bb = NetBackend::start(&hv, db.id(), br.clone(), cfg(mb)).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = channel();
    let (done_tx, done_rx) = channel();
    let (start_tx, start_rx) = channel::<Instant>();
    let rcv = received.clone();
    let _hb = hv
        .spawn_guest(db, move |g| {
            let p: &InProcGuest = &g;
            let t: Box<GrantTable<NG>> = Box::new(GrantTable::setup(p, 16).unwrap());
            let mut xs = Xenstore::from_hvm_params(p).unwrap();
            let mut dev = NetFront::connect(
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
            ready_tx.send(()).unwrap();
            let mut buf = vec![0u8; 65536];
            let mut got = 0u64;
            let mut idle = 0u32;
            while got < n {
                match dev.recv(&mut buf) {
                    Ok(Some(m)) => {
                        idle = 0;
                        if m.len == len {
                            got += 1;
                            rcv.store(got, Ordering::Release);
                        }
                    }
                    Ok(None) => {
                        // Busy-poll a little before sleeping (as NAPI busy polling
                        // does); sleep on the event channel after that.
                        idle += 1;
                        if idle < SPIN {
                            let _ = dev.poll();
                            std::hint::spin_loop();
                        } else {
                            idle = 0;
                            hypercall::Platform::wait(p);
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let start = start_rx.recv().unwrap();
            done_tx.send(start.elapsed()).unwrap();
            let _ = dev.close(&mut xs, Duration::from_secs(2));
        })
        .unwrap();
    let _ha = hv
        .spawn_guest(da, move |g| {
            let p: &InProcGuest = &g;
            let t: Box<GrantTable<NG>> = Box::new(GrantTable::setup(p, 16).unwrap());
            let mut xs = Xenstore::from_hvm_params(p).unwrap();
            let mut dev = NetFront::connect(
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
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < n {
                if sent - received.load(Ordering::Acquire) >= WINDOW {
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
            start_tx.send(start).unwrap();
            // Stay up until B has everything.
            while received.load(Ordering::Acquire) < n {
                let _ = dev.poll();
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = dev.close(&mut xs, Duration::from_secs(2));
        })
        .unwrap();
    let d = done_rx
        .recv_timeout(Duration::from_secs(600))
        .expect("bench finished");
    (d, n)
}

fn main() {
    let n_arg: Option<u64> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    println!("frame  path              frames/s    Gbit/s   ratio");
    for (len, default_n) in [(64usize, 400_000u64), (1500, 300_000)] {
        let n = n_arg.unwrap_or(default_n);
        let b = baseline(len, n);
        let (x, _) = xen_path(len, n);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let gbit = |d: Duration| rate(d) * len as f64 * 8.0 / 1e9;
        println!(
            "{len:>5}  spsc memcpy   {:>12.0} {:>8.2}   1.00",
            rate(b),
            gbit(b)
        );
        println!(
            "{len:>5}  xen (2 guests){:>12.0} {:>8.2}   {:.2}",
            rate(x),
            gbit(x),
            rate(x) / rate(b)
        );
    }
}
