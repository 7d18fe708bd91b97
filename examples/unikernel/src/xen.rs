//! The kit's platform for this kernel: hypercalls through the hypercall page, pages
//! from [`crate::mem::PageAlloc`], Xen system time from `shared_info`, and a
//! `wait` that blocks the vCPU (`sti; hlt`) until an event or a one-shot timer.

use core::arch::asm;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall::abi::{evtchn as evabi, hvm};
use hypercall::arch::x86_64::{rdtsc, HypercallPage};
use hypercall::evtchn::EventChannels;
use hypercall::time::read_time_info;
use hypercall::{Gfn, Hypercall, Platform, Port, SharedMem, Xen};

use crate::idt::UPCALL_VECTOR;
use crate::mem::{PageAlloc, MAX_PAGES};

/// How long one `wait` blocks at most when no event comes.
pub const WAIT_NS: u64 = 10_000_000;

/// The longest a `wait_until` sleeps, whatever the deadline: a guard against a
/// lost wakeup, not a tick (an idle kernel wakes this rarely).
pub const MAX_SLEEP_NS: u64 = 10_000_000_000;

/// `HVM_PARAM_CALLBACK_IRQ` value type "vector" (`hvm/params.h`: bits 63:56 = 2).
const CALLBACK_VIA_VECTOR: u64 = 2 << 56;

/// The page allocator (a static: its bitmap is 128 KiB of `.bss`).
pub static PAGES: spin::Mutex<PageAlloc> = spin::Mutex::new(PageAlloc::empty());

/// Event channels, once `shared_info` is mapped.
static EVENTS: spin::Once<EventChannels<&'static HypercallPage>> = spin::Once::new();

/// Ports the upcall handed over since the main loop last looked (a 4096-bit map;
/// the late-EOI ports among them stay masked until [`Kernel::eoi`]).
static FIRED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// The platform.
pub struct Kernel {
    hc: &'static HypercallPage,
    /// `sti; hlt` is safe to use: the callback vector and the timer VIRQ are set up.
    blocking: AtomicBool,
    /// The vCPU timer's event-channel port.
    timer_port: AtomicU64,
    /// Upcalls taken.
    pub upcalls: AtomicU64,
    /// `wait` calls that blocked.
    pub blocks: AtomicU64,
}

impl Kernel {
    /// A platform over an installed hypercall page.
    pub const fn new(hc: &'static HypercallPage) -> Kernel {
        Kernel {
            hc,
            blocking: AtomicBool::new(false),
            timer_port: AtomicU64::new(0),
            upcalls: AtomicU64::new(0),
            blocks: AtomicU64::new(0),
        }
    }

    /// Typed hypercalls.
    pub fn xen(&self) -> Xen<&'static HypercallPage> {
        Xen(self.hc)
    }

    /// Maps `shared_info`, binds the timer VIRQ and asks Xen to deliver events on
    /// [`UPCALL_VECTOR`]; from then on [`Platform::wait`] blocks the vCPU.
    pub fn start_events(&'static self) -> Result<Port, &'static str> {
        let si = EventChannels::<&HypercallPage>::map_shared_info(self)
            .map_err(|_| "cannot map shared_info (XENMEM_add_to_physmap)")?;
        let ev = EventChannels::new(self.hc, si, 0).map_err(|_| "bad shared_info page")?;
        let ev = EVENTS.call_once(|| ev);
        let port = ev
            .bind_virq(evabi::VIRQ_TIMER)
            .map_err(|_| "cannot bind VIRQ_TIMER")?;
        self.timer_port.store(u64::from(port.0), Ordering::Relaxed);
        // SAFETY: the parameter names a vector, not memory: UPCALL_VECTOR, whose
        // IDT gate (idt.rs) is the event upcall handler this kernel installed.
        unsafe {
            self.xen().hvm_set_param(
                hvm::PARAM_CALLBACK_IRQ,
                CALLBACK_VIA_VECTOR | u64::from(UPCALL_VECTOR),
            )
        }
        .map_err(|_| "HVM_PARAM_CALLBACK_IRQ (vector) refused")?;
        self.blocking.store(true, Ordering::Release);
        Ok(port)
    }

    fn shared_info(&self) -> Option<SharedMem<'static>> {
        EVENTS.get().map(|e| e.shared_info())
    }

    /// Binds a device's event-channel port for late EOI (the kit's
    /// `hypercall::evtchn`, docs/hostile-input.md E1): from its next event on, the
    /// port stays masked until the main loop has polled the device and called
    /// [`Kernel::eoi`]; a backend that sends events with nothing behind them is
    /// served less and less often (down to once a second). `false` if it stays an
    /// ordinary port (no slot left, or events not started).
    pub fn bind_lateeoi(&self, port: Port) -> bool {
        EVENTS.get().is_some_and(|e| e.bind_lateeoi(port).is_ok())
    }

    /// Whether the upcall handed `port` over since the last call (and clears that).
    fn take_fired_port(&self, port: Port) -> bool {
        let bit = 1u64 << (port.0 % 64);
        FIRED
            .get(port.0 as usize / 64)
            .is_some_and(|w| w.fetch_and(!bit, Ordering::Relaxed) & bit != 0)
    }

    /// Which of a device's late-EOI `ports` the upcall handed over since the last
    /// call (bit `i`: the `i`th), clearing them: call before polling the device.
    pub fn take_fired(&self, ports: &[Port]) -> u64 {
        let mut m = 0;
        for (i, &p) in ports.iter().take(64).enumerate() {
            m |= u64::from(self.take_fired_port(p)) << i;
        }
        m
    }

    /// Ends the handling of the `fired` ones of a device's late-EOI `ports` (from
    /// [`Kernel::take_fired`] before the poll): `work` says whether polling the
    /// device found anything.
    pub fn eoi(&self, ports: &[Port], fired: u64, work: bool) {
        let Some(e) = EVENTS.get() else { return };
        for (i, &p) in ports.iter().take(64).enumerate() {
            if fired & (1 << i) != 0 {
                let _ = e.eoi(p, work, self.now_ns());
            }
        }
    }

    /// Forgets a device's late-EOI `ports` (it is going) and unmasks them: its
    /// close may wait for events on them.
    pub fn unbind_all(&self, ports: &[Port]) {
        for &p in ports {
            if let Some(e) = EVENTS.get() {
                let _ = e.unbind(p);
                let _ = e.unmask(p);
            }
            self.take_fired_port(p);
        }
    }

    /// Unmasks the late-EOI ports whose back-off is over; when the next one is.
    pub fn eoi_due(&self) -> Option<u64> {
        EVENTS
            .get()
            .and_then(|e| e.eoi_due(self.now_ns()).ok().flatten())
    }

    /// Spurious events on late-EOI ports so far.
    pub fn spurious_events(&self) -> u64 {
        EVENTS.get().map_or(0, |e| e.spurious_total())
    }

    /// Arms the one-shot timer `ns` from now; `false` if Xen refused both ways.
    fn arm_timer(&self, ns: u64) -> bool {
        self.arm_timer_at(self.now_ns().saturating_add(ns))
    }

    /// Arms the one-shot timer for Xen system time `deadline`.
    fn arm_timer_at(&self, deadline: u64) -> bool {
        let xen = self.xen();
        xen.vcpu_set_singleshot_timer(0, deadline, 0).is_ok() || xen.set_timer_op(deadline).is_ok()
    }
}

impl Hypercall for Kernel {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.hc.hypercall(op, args) }
    }
}

// SAFETY: pages come from the page allocator (RAM below 4 GiB, identity-mapped,
// zeroed, owned by the caller until freed, never used for anything else meanwhile);
// every frame below 4 GiB is mapped at its own address for the kernel's lifetime,
// so the two translations agree; and gfn_to_virt admits only frames that hold no
// Rust object: pages handed out as shared memory (until freed) and frames that are
// not RAM (Xen's special pages), never the image, stacks, heap or boot data
// (docs/shared-memory.md).
unsafe impl Platform for Kernel {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        PAGES.lock().alloc_shared(count)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, count: usize) {
        PAGES.lock().free(ptr, count)
    }

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        let page = addr.as_ptr() as usize / 4096;
        (page < MAX_PAGES).then_some(Gfn(page as u64))
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        let page = usize::try_from(gfn.0).ok()?;
        if page == 0 || !PAGES.lock().shareable(page) {
            return None;
        }
        NonNull::new(gfn.addr() as *mut u8)
    }

    fn wait(&self) {
        if !self.blocking.load(Ordering::Acquire) || !self.arm_timer(WAIT_NS) {
            for _ in 0..1000 {
                core::hint::spin_loop();
            }
            return;
        }
        self.blocks.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the IDT handles the upcall vector and every exception; `sti; hlt`
        // sleeps until an interrupt (an event or the timer just armed: `sti` takes
        // effect after `hlt` starts, so one that is already pending wakes it), and
        // `cli` restores the kernel's interrupts-off state.
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }

    fn wait_until(&self, deadline_ns: u64) {
        let now = self.now_ns();
        if deadline_ns <= now {
            return;
        }
        let deadline = deadline_ns.min(now.saturating_add(MAX_SLEEP_NS));
        if !self.blocking.load(Ordering::Acquire) || !self.arm_timer_at(deadline) {
            return self.wait();
        }
        self.blocks.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `wait`: the IDT handles the upcall vector and every
        // exception, an interrupt already pending wakes `hlt`, and `cli` restores
        // the interrupts-off state.
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }

    fn now_ns(&self) -> u64 {
        match self
            .shared_info()
            .and_then(|si| read_time_info(&si, 0, 1000))
        {
            Some(t) => t.at(rdtsc()),
            None => 0,
        }
    }
}

static KERNEL: spin::Once<Kernel> = spin::Once::new();

/// Installs the platform (once).
pub fn install(hc: &'static HypercallPage) -> &'static Kernel {
    KERNEL.call_once(|| Kernel::new(hc))
}

/// The platform, once installed.
pub fn kernel() -> Option<&'static Kernel> {
    KERNEL.get()
}

/// The event upcall (called from the interrupt stub): clears the pending bits so
/// Xen stops injecting the vector; the kit's frontends then look at their rings.
pub fn upcall() {
    if let Some(k) = KERNEL.get() {
        k.upcalls.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(ev) = EVENTS.get() {
        ev.scan(4096, |port| {
            if let Some(w) = FIRED.get(port.0 as usize / 64) {
                w.fetch_or(1 << (port.0 % 64), Ordering::Relaxed);
            }
        });
    }
}
