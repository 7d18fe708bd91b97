//! xenkit-unikernel: a PVH domU built from the xenkit crates.
//!
//! It boots on real Xen (4.17 tested, with Linux dom0 backends) and on shim-hv's
//! KVM runner, unchanged. Each step is a line on the PV console:
//!
//! 1. Xen's version and the features it reports;
//! 2. every `device/vbd/*`: numbers and names, geometry, mode and features, the
//!    start of sector 0; on a writable disk `XENKIT-UNIKERNEL-WROTE` written at
//!    byte offset 1 MiB, flushed and read back; on a read-only disk the write
//!    refused by the frontend itself;
//! 3. every `device/vif/*` through smoltcp: ARP, ICMP echo, TCP port 7 (echo),
//!    TCP port 80 (plain-text status), and a ping of the subnet's `.1`;
//! 4. `xenkit-unikernel: ready` once every device is connected;
//! 5. power events from `control/shutdown` (poweroff, halt, reboot): every
//!    frontend closed in order, then `SCHEDOP_shutdown` with the reason.
//!
//! A panic or CPU exception prints its message and crashes the domain
//! (`SCHEDOP_shutdown(crash)`). A device whose backend misbehaves is dropped with
//! a message; the others keep running. See `docs/unikernel.md`.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod console;
mod disk;
mod idt;
mod mem;
mod net;
mod start;
mod xen;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use bitflags::bitflags;
use hypercall::arch::x86_64::{discover, HypercallPage};
use hypercall::gnttab::GrantTable;
use hypercall::xen::ShutdownReason;
use hypercall::Platform;
use xenbus::power::{PowerControl, PowerFeatures};
use xenbus::{Store, Xenstore};

use crate::mem::Range;
use crate::xen::Kernel;

/// Grant entries (4 frames of 512).
pub const GRANTS: usize = 2048;
/// The line the test runners wait for.
pub const READY: &str = "xenkit-unikernel: ready";
/// Pages given to the heap (at most; a quarter of free memory on a small domain).
const HEAP_PAGES: usize = 2048;

/// Prints to the console (see `console.rs`).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

bitflags! {
    /// `XENVER_get_features` submap 0 (`features.h`), the bits this kernel names.
    #[derive(Clone, Copy, Debug)]
    struct XenFeatures: u32 {
        const WRITABLE_PAGE_TABLES = 1 << 0;
        const WRITABLE_DESCRIPTOR_TABLES = 1 << 1;
        const AUTO_TRANSLATED_PHYSMAP = 1 << 2;
        const SUPERVISOR_MODE_KERNEL = 1 << 3;
        const PAE_PGDIR_ABOVE_4GB = 1 << 4;
        const MMU_PT_UPDATE_PRESERVE_AD = 1 << 5;
        const HIGHMEM_ASSIST = 1 << 6;
        const GNTTAB_MAP_AVAIL_BITS = 1 << 7;
        const HVM_CALLBACK_VECTOR = 1 << 8;
        const HVM_SAFE_PVCLOCK = 1 << 9;
        const HVM_PIRQS = 1 << 10;
        const DOM0 = 1 << 11;
        const GRANT_MAP_IDENTITY = 1 << 12;
        const MEMORY_OP_VNODE_SUPPORTED = 1 << 13;
        const ARM_SMCCC_SUPPORTED = 1 << 14;
        const LINUX_RSDP_UNRESTRICTED = 1 << 15;
        const NOT_DIRECT_MAPPED = 1 << 16;
        const DIRECT_MAPPED = 1 << 17;
    }
}

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static hypercall_page_start: u8;
}

core::arch::global_asm!(
    r#"
    .section .bss.hypercall, "aw", @nobits
    .balign 4096
    .globl hypercall_page_start
hypercall_page_start:
    .skip 4096
"#,
    options(att_syntax)
);

static HYPERCALL_PAGE: spin::Once<HypercallPage> = spin::Once::new();

/// Stops the domain after a fatal error: the message on every console, then
/// `SCHEDOP_shutdown(crash)` (or a halt loop where there is no Xen).
pub fn crash(args: fmt::Arguments<'_>) -> ! {
    console::print_crash(format_args!("xenkit-unikernel: crash: {args}\n"));
    if let Some(k) = xen::kernel() {
        let _ = k.xen().sched_shutdown(ShutdownReason::Crash);
    }
    halt_forever()
}

fn halt_forever() -> ! {
    loop {
        // SAFETY: interrupts off, nothing to wake for: parks the vCPU for good.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crash(format_args!("panic: {info}"))
}

fn addr_of<T>(s: &T) -> u64 {
    s as *const T as u64
}

/// The entry from `boot.rs`, in long mode on the boot stack.
#[no_mangle]
extern "C" fn kernel_main(start_info: u32) -> ! {
    idt::init();
    let Some(found) = discover() else {
        crash(format_args!(
            "no Xen CPUID leaves: not running on Xen or shim-hv"
        ));
    };
    // SAFETY: `hypercall_page_start` is a page of our own `.bss`, 4 KiB aligned,
    // identity-mapped and executable (boot.rs maps everything RWX), used for
    // nothing else; ring 0.
    let hc = HYPERCALL_PAGE.call_once(|| unsafe {
        let page = addr_of(&hypercall_page_start);
        HypercallPage::install(
            &found,
            NonNull::new_unchecked(page as *mut u8),
            hypercall::Gfn(page >> 12),
        )
    });
    console::init_early(hc);
    say!("xenkit-unikernel: booting (PVH, start info at {start_info:#x})\n");

    let boot = match start::read(start_info, hc) {
        Ok(b) => b,
        Err(e) => crash(format_args!("{e}")),
    };
    {
        let mut pages = xen::PAGES.lock();
        for r in &boot.ram {
            pages.add(*r);
        }
        pages.reserve(Range {
            start: 0,
            end: 1 << 20,
        });
        pages.reserve(Range {
            start: addr_of(unsafe_static(&raw const __kernel_start)),
            end: addr_of(unsafe_static(&raw const __kernel_end)),
        });
        for r in &boot.reserved {
            pages.reserve(*r);
        }
        let heap = HEAP_PAGES.min(pages.free_pages() / 4);
        match pages.alloc(heap) {
            // SAFETY: fresh pages from the allocator, never handed out again.
            Some(p) => unsafe { mem::init_heap(p, heap) },
            None => crash(format_args!("no memory for a {heap}-page heap")),
        }
    }
    let k: &'static Kernel = xen::install(hc);
    if let Err(e) = k.start_events() {
        crash(format_args!("event channels: {e}"));
    }
    match console::init_ring(k) {
        Ok(()) => {}
        Err(e) => say!("console ring: {e}; staying on the early console\n"),
    }
    say!(
        "xenkit-unikernel: PVH start info v{}, {} module(s), command line \"{}\"\n",
        boot.version,
        boot.modules,
        boot.cmdline.as_str()
    );
    say!(
        "xenkit-unikernel: memory {} MiB, {} pages free\n",
        boot.ram.iter().map(|r| r.end - r.start).sum::<u64>() >> 20,
        xen::PAGES.lock().free_pages()
    );
    let xenv = k.xen();
    match xenv.xen_version() {
        Ok(v) => say!(
            "xen: version {}.{} (hypercall MSR {:#x}, CPUID base {:#x})\n",
            v.major,
            v.minor,
            found.hypercall_msr,
            found.base
        ),
        Err(e) => say!("xen: version: {e}\n"),
    }
    match xenv.get_features(0) {
        Ok(bits) => {
            let f = XenFeatures::from_bits_retain(bits);
            let mut names = String::new();
            bitflags::parser::to_writer(&f, &mut names).ok();
            say!("xen: features {bits:#x}: {names}\n");
        }
        Err(e) => say!("xen: features: {e}\n"),
    }
    crash_on_request(start::cmdline_value(&boot.cmdline, "crash"));
    run(k, &boot.cmdline)
}

/// `crash=panic` or `crash=fault` on the command line: end in a panic or a CPU
/// exception right after boot (for testing a toolstack's `on_crash`).
fn crash_on_request(how: Option<&str>) {
    match how {
        Some("panic") => panic!("crash requested on the command line (crash=panic)"),
        Some("fault") => {
            // Above the identity-mapped 4 GiB: a page fault.
            let p = 0x40_0000_0000u64 as *const u8;
            // SAFETY: deliberately faults; the exception handler crashes the domain
            // and never returns here.
            let _ = unsafe { core::ptr::read_volatile(p) };
        }
        Some(other) => say!("crash={other}: unknown (panic, fault); ignored\n"),
        None => {}
    }
}

/// A reference to a linker symbol.
fn unsafe_static(p: *const u8) -> &'static u8 {
    // SAFETY: linker-defined symbols mark addresses inside the loaded image; only
    // their address is used.
    unsafe { &*p }
}

type Xs = Xenstore<&'static Kernel>;

/// The xenstore client on the heap. Not inlined: the value passes through this
/// frame on its way to the heap, and only while this runs.
#[inline(never)]
fn new_xenstore(k: &'static Kernel) -> Box<Xs> {
    Box::new(Xenstore::unattached(k))
}

/// The devices and the power loop.
fn run(k: &'static Kernel, cmdline: &str) -> ! {
    // The client and the grant table are built in place (the kit's docs/stack.md):
    // on the heap / in a static, then attached through a reference.
    let mut xs: Box<Xs> = new_xenstore(k);
    if let Err(e) = xs.attach_hvm_params() {
        crash(format_args!("xenstore: {e}"));
    }
    let mut b = [0u8; 128];
    let name = xs
        .read_str("name", &mut b)
        .map(String::from)
        .unwrap_or_else(|_| "?".into());
    let mut b = [0u8; 32];
    let domid = xs
        .read_str("domid", &mut b)
        .map(String::from)
        .unwrap_or_else(|_| "?".into());
    say!("xenstore: connected; domain {domid} ({name})\n");

    static GNT: GrantTable<GRANTS> = GrantTable::empty();
    if let Err(e) = GNT.setup_in_place(k, (GRANTS / 512) as u32) {
        crash(format_args!("grant table: {e}"));
    }
    let grants: &'static GrantTable<GRANTS> = &GNT;
    let vbds = list(&mut xs, "vbd");
    let vifs = list(&mut xs, "vif");
    say!(
        "devices: {} disk(s) {}, {} nic(s) {}\n",
        vbds.len(),
        Ids(&vbds),
        vifs.len(),
        Ids(&vifs)
    );

    let mut disks: Vec<Box<disk::Disk>> = Vec::new();
    for devid in vbds {
        match disk::Disk::connect(k, grants, &mut xs, devid) {
            Ok(d) => disks.push(d),
            Err(e) => say!("disk {}: {e}; dropped\n", disk::label(devid)),
        }
    }
    let ip = start::cmdline_value(cmdline, "ip");
    let mut nics: Vec<Box<net::Nic>> = Vec::new();
    for idx in vifs {
        match net::Nic::connect(k, grants, &mut xs, idx, ip) {
            Ok(n) => nics.push(n),
            Err(e) => say!("nic {idx}: {e}; dropped\n"),
        }
    }

    let features = PowerFeatures::POWEROFF | PowerFeatures::REBOOT;
    let mut power = match PowerControl::new(&mut xs, features) {
        Ok(p) => p,
        Err(e) => crash(format_args!("control/shutdown: {e}")),
    };
    say!("power: watching control/shutdown (poweroff, halt, reboot)\n");
    // From here on only this loop polls the devices: their events get late EOIs.
    for d in disks.iter_mut() {
        d.bind_lateeoi(k);
    }
    for n in nics.iter_mut() {
        n.bind_lateeoi(k);
    }
    let started = k.now_ns();
    let mut ready = false;
    let mut rounds = 0u64;
    loop {
        rounds += 1;
        // Tickless: each round ends by sleeping until the next real deadline (a
        // network timer, the ping) or an event. A wait inside the round (a xenstore
        // request, a full console ring) takes the upcall of any event that comes
        // meanwhile, so if upcalls moved during the round, another round runs at
        // once instead of sleeping on work already signalled.
        let upcalls = k.upcalls.load(core::sync::atomic::Ordering::Relaxed);
        // Late EOI: unmask the device ports whose back-off is over.
        k.eoi_due();
        match power.poll(&mut xs) {
            Ok(Some(ev)) => {
                say!("power: {} requested\n", ev.as_str());
                say!(
                    "events: {} upcalls, {} spurious (late EOI), {rounds} rounds\n",
                    k.upcalls.load(core::sync::atomic::Ordering::Relaxed),
                    k.spurious_events()
                );
                for d in disks.drain(..) {
                    d.close(k, &mut xs);
                }
                for n in nics.drain(..) {
                    n.close(k, &mut xs);
                }
                say!("xenkit-unikernel: {} now\n", ev.as_str());
                console::flush();
                let _ = k.xen().sched_shutdown(ev.shutdown_reason());
                crash(format_args!("SCHEDOP_shutdown returned"));
            }
            Ok(None) => {}
            Err(xenbus::Error::BadShutdownValue(v)) => {
                say!(
                    "power: ignoring control/shutdown ({} bytes)\n",
                    v.total_len()
                );
            }
            Err(e) => say!("power: control/shutdown: {e}\n"),
        }
        let mut i = 0;
        while i < disks.len() {
            match disks.get_mut(i).map(|d| d.poll(k, &mut xs)) {
                Some(Err(e)) => {
                    let d = disks.remove(i);
                    say!("disk {}: {e}; dropped\n", d.label);
                    d.close(k, &mut xs);
                }
                _ => i += 1,
            }
        }
        let mut i = 0;
        while i < nics.len() {
            match nics.get_mut(i).map(|n| n.poll(k, &mut xs)) {
                Some(Err(e)) => {
                    let n = nics.remove(i);
                    say!("nic {}: {e}; dropped\n", n.idx);
                    n.close(k, &mut xs);
                }
                _ => i += 1,
            }
        }
        if nics.iter().any(|n| n.wants_status()) {
            let page = status_page(k, started, &disks, &nics);
            for n in nics.iter_mut() {
                n.answer_status(k, &page);
            }
        }
        if !ready && nics.iter().all(|n| n.ping_done()) {
            ready = true;
            say!(
                "stack: {} of {} KiB used so far\n",
                boot::stack_used().div_ceil(1024),
                boot::STACK_BYTES / 1024
            );
            say!("{READY}\n");
        }
        if boot::stack_overflowed() {
            crash(format_args!(
                "the boot stack overflowed ({} KiB)",
                boot::STACK_BYTES / 1024
            ));
        }
        let mut inb = [0u8; 64];
        let n = console::read(&mut inb);
        if n > 0 {
            say!(
                "console input: \"{}\"\n",
                core::str::from_utf8(inb.get(..n).unwrap_or_default()).unwrap_or("(not UTF-8)")
            );
        }
        if k.upcalls.load(core::sync::atomic::Ordering::Relaxed) != upcalls {
            continue;
        }
        let deadline = nics
            .iter_mut()
            .filter_map(|n| n.next_deadline(k))
            .chain(k.eoi_due())
            .min()
            .unwrap_or(u64::MAX);
        k.wait_until(deadline);
    }
}

/// The port-80 page.
fn status_page(
    k: &Kernel,
    started: u64,
    disks: &[Box<disk::Disk>],
    nics: &[Box<net::Nic>],
) -> String {
    let disks: String = disks.iter().map(|d| d.summary()).collect();
    let nics: String = nics.iter().map(|n| n.summary()).collect();
    let up = k.now_ns().saturating_sub(started) / 1_000_000;
    let (used, free) = mem::heap_usage();
    format!(
        "xenkit-unikernel status\nuptime: {}.{:03} s\nupcalls: {}, spurious events: {}, blocking waits: {}\nheap: {used} bytes used, {free} free\nstack: {} of {} bytes used\n{disks}{nics}",
        up / 1000,
        up % 1000,
        k.upcalls.load(core::sync::atomic::Ordering::Relaxed),
        k.spurious_events(),
        k.blocks.load(core::sync::atomic::Ordering::Relaxed),
        boot::stack_used(),
        boot::STACK_BYTES,
    )
}

/// The entries of `device/<kind>`, sorted.
/// Device ids as `[a, b]`: what `{:?}` of the list prints, without linking
/// `Debug`'s list and padding machinery into the image (about 1 KiB).
struct Ids<'a>(&'a [u32]);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        f.write_str("]")
    }
}

fn list(xs: &mut Xs, kind: &str) -> Vec<u32> {
    let mut buf = [0u8; 512];
    let mut ids: Vec<u32> = match xs.directory(&format!("device/{kind}"), &mut buf) {
        Ok(l) => l.filter_map(|s| s.parse().ok()).collect(),
        Err(_) => Vec::new(),
    };
    // Insertion sort: a handful of entries, and much smaller code than the
    // library's sort.
    for i in 1..ids.len() {
        let mut j = i;
        while j > 0 && ids.get(j - 1) > ids.get(j) {
            ids.swap(j - 1, j);
            j -= 1;
        }
    }
    ids
}
