//! No heap in the frontends' I/O path: after connect, block reads and writes
//! (xbd-front) and frames both ways (xennet-front) allocate nothing. A counting
//! global allocator attributes every allocation of this thread to what runs at the
//! time: frontend code, the in-process hypervisor serving the hypercalls it makes
//! (event-channel sends; the guest's [`Platform`] is wrapped to tell), or backend
//! steps. The backends are stepped (`BlkConfig::stepped`, `NetConfig::stepped`) on
//! the same thread, so nothing else runs meanwhile. Every count is asserted
//! zero (the backends' after a warm-up: blkback's persistent grants and its
//! indirect-page cache fill on first use, netback's spare frame buffers too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::ptr::NonNull;

use hypercall::gnttab::GrantTable;
use hypercall::{Gfn, Hypercall, Platform};
use xbd_front::{Config, Device};
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig};
use xen_model::inproc::InProcGuest;
use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::Xenstore;
use xennet_front::{Mac, NetFront};

struct Counting;

const NONE: u8 = 0;
const FRONT: u8 = 1;
const BACK: u8 = 2;
const HV: u8 = 3;

thread_local! {
    static PHASE: Cell<u8> = const { Cell::new(NONE) };
}
static FRONT_ALLOCS: AtomicU64 = AtomicU64::new(0);
static BACK_ALLOCS: AtomicU64 = AtomicU64::new(0);
static HV_ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count() {
    match PHASE.try_with(Cell::get).unwrap_or(NONE) {
        FRONT => FRONT_ALLOCS.fetch_add(1, Ordering::Relaxed),
        BACK => BACK_ALLOCS.fetch_add(1, Ordering::Relaxed),
        HV => HV_ALLOCS.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` with this thread's allocations counted as `phase`.
fn as_phase<T>(phase: u8, f: impl FnOnce() -> T) -> T {
    PHASE.with(|p| p.set(phase));
    let r = f();
    PHASE.with(|p| p.set(NONE));
    r
}

fn counts() -> (u64, u64, u64) {
    (
        FRONT_ALLOCS.load(Ordering::Relaxed),
        BACK_ALLOCS.load(Ordering::Relaxed),
        HV_ALLOCS.load(Ordering::Relaxed),
    )
}

/// The in-process guest's platform, with its hypercalls counted as the
/// hypervisor's (then back to the caller's phase).
#[derive(Clone, Copy)]
struct Guest<'a>(&'a InProcGuest);

impl Hypercall for Guest<'_> {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        let before = PHASE.with(|p| p.replace(HV));
        // SAFETY: the caller's contract (Hypercall), passed on unchanged.
        let r = unsafe { self.0.hypercall(op, args) };
        PHASE.with(|p| p.set(before));
        r
    }
}

// SAFETY: every method forwards to InProcGuest's, whose guarantees hold unchanged.
unsafe impl Platform for Guest<'_> {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        self.0.alloc_pages(count)
    }
    unsafe fn free_pages(&self, ptr: NonNull<u8>, count: usize) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.free_pages(ptr, count) }
    }
    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        self.0.virt_to_gfn(addr)
    }
    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        self.0.gfn_to_virt(gfn)
    }
    fn wait(&self) {
        self.0.wait()
    }
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
    fn relax(&self) {
        self.0.relax()
    }
}

fn hypervisor() -> std::sync::Arc<Hypervisor> {
    Hypervisor::new(HypervisorConfig {
        xenstored_inline: true,
        ..HypervisorConfig::default()
    })
}

const NG: usize = 16384;
type Disk<'a> = Device<Guest<'a>, &'a GrantTable<NG>, 32, 256>;

/// Both workloads in one test: the counters are process-wide and tests of one
/// binary run in parallel.
#[test]
fn frontends_allocate_nothing_after_connect() {
    block();
    network();
}

fn block() {
    let dir = std::env::temp_dir().join(format!("xenkit-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("d.img");
    std::fs::write(&img, vec![7u8; 8 << 20]).unwrap();
    let hv = hypervisor();
    let dom = hv.create_domain(DomainSpec::new("alloc-blk", 128)).unwrap();
    let cfg = BlkConfig {
        stepped: true,
        ..BlkConfig::new(Target::File(img.clone()), 51712, "xvda")
    };
    let be = BlkBackend::start(&hv, dom.id(), cfg).unwrap();
    let g = InProcGuest::new(hv.clone(), dom);
    let p = Guest(&g);
    let table: Box<GrantTable<NG>> = Box::new(GrantTable::setup(&p, (NG / 512) as u32).unwrap());
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut d: Box<Disk<'_>> = Box::new(Device::new(p, &*table, 51712, Config::default()).unwrap());
    d.connect(&mut xs).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let run = |d: &mut Disk<'_>, buf: &mut [u8], round: u64| {
        for (i, &len) in [4096usize, 1 << 20, 65536].iter().enumerate() {
            let lba = (round * 3 + i as u64) % 7 * 2048;
            let t = as_phase(FRONT, || d.submit_read(lba, len)).unwrap();
            as_phase(BACK, || be.step()).unwrap();
            as_phase(FRONT, || {
                d.poll_nowait().unwrap();
                assert_eq!(d.next_completion(), Some(t));
                d.finish(t, &mut [&mut buf[..len]]).unwrap();
            });
            assert!(buf[..len].iter().all(|&b| b == 7));
            let t = as_phase(FRONT, || d.submit_write(lba, &[&buf[..len]])).unwrap();
            as_phase(BACK, || be.step()).unwrap();
            as_phase(FRONT, || {
                d.poll_nowait().unwrap();
                assert_eq!(d.next_completion(), Some(t));
                d.finish(t, &mut []).unwrap();
            });
            let t = as_phase(FRONT, || d.submit_read(lba, len)).unwrap();
            as_phase(BACK, || be.step()).unwrap();
            as_phase(FRONT, || {
                d.poll_nowait().unwrap();
                let r = d.take_read(t).unwrap();
                r.read(0, &mut buf[..len]).unwrap();
            });
        }
    };
    // Warm-up: persistent grants and the backend's caches fill on first use.
    for round in 0..8 {
        run(&mut d, &mut buf, round);
    }
    let (f0, b0, h0) = counts();
    for round in 0..64 {
        run(&mut d, &mut buf, round);
    }
    let (f1, b1, h1) = counts();
    println!(
        "block: 576 requests; allocations: xbd-front {}, hypervisor {}, blkback {}",
        f1 - f0,
        h1 - h0,
        b1 - b0
    );
    assert_eq!(f1 - f0, 0, "xbd-front allocated in its I/O path");
    assert_eq!(h1 - h0, 0, "event-channel sends allocated");
    assert_eq!(b1 - b0, 0, "blkback allocated in its I/O path");
    let _ = d.close(&mut xs);
    be.destroy();
    let _ = std::fs::remove_dir_all(&dir);
}

fn frame(len: usize, dst: Mac, src: Mac) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

fn network() {
    let hv = hypervisor();
    let br = Bridge::new("xenbr-alloc");
    let (ma, mb) = (Mac([0xaa, 0, 0, 0x51, 2, 1]), Mac([0xaa, 0, 0, 0x51, 2, 2]));
    let da = hv.create_domain(DomainSpec::new("alloc-a", 32)).unwrap();
    let db = hv.create_domain(DomainSpec::new("alloc-b", 32)).unwrap();
    let cfg = |m| NetConfig {
        mac: Some(m),
        stepped: true,
        ..NetConfig::default()
    };
    let ba = NetBackend::start(&hv, da.id(), br.clone(), cfg(ma)).unwrap();
    let bb = NetBackend::start(&hv, db.id(), br.clone(), cfg(mb)).unwrap();
    let (ga, gb) = (
        InProcGuest::new(hv.clone(), da),
        InProcGuest::new(hv.clone(), db),
    );
    let (pa, pb) = (Guest(&ga), Guest(&gb));
    let ta: Box<GrantTable<4096>> = Box::new(GrantTable::setup(&pa, 8).unwrap());
    let tb: Box<GrantTable<4096>> = Box::new(GrantTable::setup(&pb, 8).unwrap());
    let mut xa = Xenstore::from_hvm_params(pa).unwrap();
    let mut xb = Xenstore::from_hvm_params(pb).unwrap();
    let t = Duration::from_secs(30);
    let c = xennet_front::Config::default();
    let mut a = NetFront::<_, _, 1>::connect(pa, &*ta, &mut xa, 0, c, t).unwrap();
    let mut b = NetFront::<_, _, 1>::connect(pb, &*tb, &mut xb, 0, c, t).unwrap();
    let mut rx = vec![0u8; 65536];
    let frames = [
        frame(64, mb, ma),
        frame(1500, mb, ma),
        frame(64, ma, mb),
        frame(1500, ma, mb),
    ];
    let mut got = 0u64;
    let (mut f0, mut b0, mut h0, mut g0) = (0, 0, 0, 0);
    // 8 warm-up rounds, then 64 counted.
    for round in 0..72 {
        if round == 8 {
            (f0, b0, h0) = counts();
            g0 = got;
        }
        for f in &frames {
            let (tx, rxd) = if f[6..12] == ma.0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            for _ in 0..8 {
                as_phase(FRONT, || tx.send(f)).unwrap();
            }
            as_phase(BACK, || {
                ba.step();
                bb.step();
                ba.step();
            });
            as_phase(FRONT, || {
                while let Some(m) = rxd.recv(&mut rx).unwrap() {
                    assert_eq!(m.len, f.len());
                    got += 1;
                }
                tx.poll().unwrap();
            });
        }
    }
    let (f1, b1, h1) = counts();
    assert_eq!(got - g0, 64 * 32, "every frame arrived");
    println!(
        "network: {} frames; allocations: xennet-front {}, hypervisor {}, netback and bridge {}",
        got - g0,
        f1 - f0,
        h1 - h0,
        b1 - b0
    );
    assert_eq!(f1 - f0, 0, "xennet-front allocated in its I/O path");
    assert_eq!(h1 - h0, 0, "event-channel sends allocated");
    assert_eq!(
        b1 - b0,
        0,
        "netback or the bridge allocated in the I/O path"
    );
    let _ = a.close(&mut xa, Duration::from_secs(2));
    let _ = b.close(&mut xb, Duration::from_secs(2));
    ba.destroy();
    bb.destroy();
}
