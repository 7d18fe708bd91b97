//! A minimal `no_std` kernel image that links every xenkit frontend, for
//! `.ci/stack-check`: each `probe_*` function is one job a kernel does on its boot
//! stack (set up grants, connect a device, do I/O). The check disassembles the
//! linked image and reports the deepest stack each probe can reach.
//!
//! It is never run: the platform below is complete enough to link and to keep the
//! optimiser from folding the frontends away, not to boot.
#![no_std]
#![no_main]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use hypercall::arch::x86_64::HypercallPage;
use hypercall::gnttab::GrantTable;
use hypercall::{Gfn, Hypercall, Platform, SharedPages};

const POOL_PAGES: usize = 512;

#[repr(C, align(4096))]
struct Pool([u8; POOL_PAGES * 4096]);

static mut POOL: Pool = Pool([0; POOL_PAGES * 4096]);
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A platform over a static page pool and the hypercall page.
struct Plat {
    page: HypercallPage,
}

impl Hypercall for Plat {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.page.hypercall(op, args) }
    }
}

fn pool_base() -> usize {
    (&raw mut POOL).addr()
}

// SAFETY: pages come from a static pool, handed out once each; gfns are the
// identity map of the pool's addresses.
unsafe impl Platform for Plat {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        let first = NEXT.fetch_add(count, Ordering::Relaxed);
        if first + count > POOL_PAGES {
            return None;
        }
        NonNull::new((pool_base() + first * 4096) as *mut u8)
    }

    unsafe fn free_pages(&self, _ptr: NonNull<u8>, _count: usize) {}

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        Some(Gfn(addr.as_ptr().addr() as u64 >> 12))
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        NonNull::new((gfn.0 << 12) as usize as *mut u8)
    }

    fn wait(&self) {
        core::hint::spin_loop();
    }

    fn now_ns(&self) -> u64 {
        // SAFETY: rdtsc reads a counter; no memory is touched.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}

// SAFETY: the image is never run (see the crate docs); the stub address is only
// there so the hypercall path is linked in.
static PLAT: Plat = Plat {
    page: unsafe { HypercallPage::from_installed(NonNull::new_unchecked(0x1000 as *mut u8)) },
};

const T: Duration = Duration::from_secs(5);

// Everything large lives in statics, built by `const fn`s: nothing on the stack.
type Plat_ = &'static Plat;
static GNT: GrantTable<4096> = GrantTable::empty();
static XS: spin::Mutex<xenbus::Xenstore<Plat_>> =
    spin::Mutex::new(xenbus::Xenstore::unattached(&PLAT));
static DISK: spin::Mutex<xbd_front::Device<Plat_, &'static GrantTable<4096>>> = spin::Mutex::new(
    xbd_front::Device::unbound(&PLAT, &GNT, xbd_front::Config::DEFAULT),
);
static NET: spin::Mutex<xennet_front::NetFront<'static, Plat_, 4096>> = spin::Mutex::new(
    xennet_front::NetFront::new(&PLAT, &GNT, xennet_front::Config::DEFAULT),
);

#[inline(never)]
#[no_mangle]
fn probe_gnttab_setup() -> bool {
    GNT.setup_in_place(&PLAT, 8).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_xenstore_attach() -> bool {
    XS.lock().attach_hvm_params().is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_blk_connect() -> bool {
    let mut xs = XS.lock();
    let mut found = [xbd_front::VbdEntry {
        devid: 0,
        vdev: None,
    }; 4];
    let Ok(n) = xbd_front::discover(&mut xs, &mut found) else {
        return false;
    };
    let mut d = DISK.lock();
    n > 0 && d.bind(found[0].devid).is_ok() && d.connect(&mut xs).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_blk_io(buf: &mut [u8; 4096]) -> bool {
    let mut d = DISK.lock();
    let ok = d.read(0, &mut [&mut buf[..]], T).is_ok() && d.write(8, &[&buf[..]], T).is_ok();
    let in_place = d
        .read_in_place(0, 4096, T)
        .is_ok_and(|data| data.read(0, &mut buf[..8]).is_ok());
    ok && in_place && d.flush(T).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_blk_close() -> bool {
    DISK.lock().close(&mut XS.lock()).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_net_connect() -> bool {
    NET.lock().connect_in_place(&mut XS.lock(), 0, T).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_net_io(buf: &mut [u8; 1514]) -> bool {
    let mut n = NET.lock();
    let sent = n.send(&buf[..60]).is_ok() && n.poll().is_ok();
    sent && n.recv(buf).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_net_close() -> bool {
    NET.lock().close(&mut XS.lock(), T).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_console_io() -> bool {
    let Ok(mut c) = xencons::Console::from_hvm_params(&PLAT) else {
        return false;
    };
    let mut buf = [0u8; 64];
    c.write(b"hello\n").is_ok() && c.read(&mut buf).is_ok() && c.flush(T).is_ok()
}

#[inline(never)]
#[no_mangle]
fn probe_console_secondary() -> bool {
    let Some(page) = SharedPages::alloc(&PLAT, 1) else {
        return false;
    };
    let page = page.leak();
    let mut xs = XS.lock();
    let cfg = xencons::Config::default();
    let Ok(mut s) =
        xencons::secondary::SecondaryConsole::connect(&mut xs, &GNT, &PLAT, 1, page, cfg, T)
    else {
        return false;
    };
    s.console().write(b"x").is_ok() && s.close(&mut xs, T).is_ok()
}

#[no_mangle]
extern "C" fn _start() -> ! {
    let mut page = [0u8; 4096];
    let mut frame = [0u8; 1514];
    if probe_gnttab_setup() && probe_xenstore_attach() {
        if probe_blk_connect() {
            probe_blk_io(&mut page);
            probe_blk_close();
        }
        if probe_net_connect() {
            probe_net_io(&mut frame);
            probe_net_close();
        }
        probe_console_io();
        probe_console_secondary();
    }
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
