//! The in-process runner: guest code runs as host threads; hypercalls are calls into
//! the xen model.
//!
//! [`InProcGuest`] implements [`hypercall::Platform`] for one domain, so the kit's
//! frontends, xenstore client and rings run unchanged:
//! - `hypercall` → [`Hypervisor::hypercall`] with [`InProcessAccess`]: pointer
//!   arguments are host addresses (the guest shares our address space by construction
//!   and is trusted not to lie about *its own pointers*; gfns, ports and grant refs
//!   inside the arguments are checked as for any guest);
//! - `alloc_pages` / `free_pages` come from a first-fit allocator over the domain's RAM
//!   (zeroed, contiguous, never the reserved special pages); `virt_to_gfn` /
//!   `gfn_to_virt` translate through [`GuestMemory`](crate::mem::GuestMemory), whose
//!   gfns are not host addresses;
//! - `wait` blocks on the domain's event epoch (no lost wake-ups, no busy loop,
//!   bounded by [`WAIT_TIMEOUT`]) and then does what a guest OS's upcall handler does:
//!   acknowledges the upcall and clears the pending bits of unmasked ports, so later
//!   sends raise new upcalls; callers re-check their rings.
//!
//! [`Hypervisor::spawn_guest`] runs a closure as the guest's first thread. Once the
//! domain is shut down (`SCHEDOP_shutdown`), crashed or destroyed, the next hypercall
//! or `wait` of a thread started that way ends the thread (as a vCPU of a shut-down
//! domain never runs again); a panic marks the domain crashed (docs/hostile-input.md row 43);
//! returning normally is a poweroff.
//!
//! ```
//! use hypercall::abi::{hypercall_nr, sched};
//! use hypercall::Hypercall;
//! use xen_model::{DomainSpec, DomainState, Hypervisor, HypervisorConfig, ShutdownReason};
//!
//! let hv = Hypervisor::new(HypervisorConfig::default());
//! let dom = hv.create_domain(DomainSpec::new("doc", 4)).unwrap();
//! let handle = hv.spawn_guest(dom.clone(), |guest| {
//!     let mut s = sched::Shutdown { reason: sched::SHUTDOWN_POWEROFF };
//!     // SAFETY: `s` lives across the call.
//!     unsafe { guest.hypercall(hypercall_nr::SCHED_OP, [sched::OP_SHUTDOWN as usize, &mut s as *mut _ as usize, 0, 0, 0]) };
//!     unreachable!("a shut-down guest does not run on");
//! }).unwrap();
//! assert_eq!(handle.join(), DomainState::Shutdown(ShutdownReason::Poweroff));
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hypercall::{Gfn, Hypercall, Platform, Port};

use crate::mem::InProcessAccess;
use crate::{Domain, DomainState, Hypervisor};

/// Longest one [`Platform::wait`] blocks.
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(10);

/// A per-port event handler an in-process guest may install (its "interrupt
/// handlers"); called from [`Platform::wait`] for each delivered port.
pub type PortHandler = Arc<dyn Fn(Port) + Send + Sync>;

/// Who acknowledges upcalls for an in-process guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpcallMode {
    /// [`Platform::wait`] acts as the guest OS's upcall handler: it clears
    /// `evtchn_upcall_pending`, the selector and the pending bits of unmasked ports
    /// (and calls the [`PortHandler`], if any). Frontends just re-check their rings.
    #[default]
    Acknowledge,
    /// The guest scans `shared_info` itself (e.g. `hypercall::evtchn::EventChannels::scan`
    /// after every wait): `wait` returns when an upcall is pending or new, and leaves
    /// the bits alone.
    GuestScans,
}

/// Unwind payload that ends a guest thread whose domain is finished.
struct GuestExit;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Busy-wait steps taken by this thread (see `relax`).
    static RELAX_STEPS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };

    /// Per guest (key): the event epoch this thread last saw.
    static SEEN: RefCell<HashMap<u64, u64>> = RefCell::new(HashMap::new());
    /// Guests (keys) whose spawned thread this is.
    static GUEST_THREAD: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// First-fit page allocator over a domain's allocatable RAM.
struct PageAllocator {
    first: Gfn,
    used: Vec<bool>,
    live: BTreeMap<u64, usize>,
}

impl PageAllocator {
    fn new(first: Gfn, end: Gfn) -> Self {
        PageAllocator {
            first,
            used: vec![false; end.0.saturating_sub(first.0) as usize],
            live: BTreeMap::new(),
        }
    }

    fn alloc(&mut self, count: usize) -> Option<Gfn> {
        if count == 0 || count > self.used.len() {
            return None;
        }
        let mut run = 0;
        for i in 0..self.used.len() {
            if self.used[i] {
                run = 0;
                continue;
            }
            run += 1;
            if run == count {
                let start = i + 1 - count;
                self.used[start..=i].iter_mut().for_each(|u| *u = true);
                let gfn = Gfn(self.first.0 + start as u64);
                self.live.insert(gfn.0, count);
                return Some(gfn);
            }
        }
        None
    }

    fn free(&mut self, gfn: Gfn, count: usize) -> bool {
        if self.live.get(&gfn.0) != Some(&count) {
            return false;
        }
        self.live.remove(&gfn.0);
        let start = (gfn.0 - self.first.0) as usize;
        self.used[start..start + count]
            .iter_mut()
            .for_each(|u| *u = false);
        true
    }

    fn free_pages(&self) -> usize {
        self.used.iter().filter(|u| !**u).count()
    }
}

/// One domain's guest code running as host threads: the kit's [`Platform`].
pub struct InProcGuest {
    hv: Arc<Hypervisor>,
    dom: Arc<Domain>,
    key: u64,
    alloc: Mutex<PageAllocator>,
    port_handler: Mutex<Option<PortHandler>>,
    wait_timeout: Mutex<Duration>,
    mode: Mutex<UpcallMode>,
}

impl fmt::Debug for InProcGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcGuest")
            .field("domain", &self.dom.id().0)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl InProcGuest {
    /// The platform for guest code of `dom`. Usually made by
    /// [`Hypervisor::spawn_guest`]; tests may drive a guest from their own thread.
    pub fn new(hv: Arc<Hypervisor>, dom: Arc<Domain>) -> Arc<Self> {
        let (first, end) = dom.allocatable();
        Arc::new(InProcGuest {
            hv,
            dom,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            alloc: Mutex::new(PageAllocator::new(first, end)),
            port_handler: Mutex::new(None),
            wait_timeout: Mutex::new(WAIT_TIMEOUT),
            mode: Mutex::new(UpcallMode::default()),
        })
    }

    /// The domain.
    pub fn domain(&self) -> &Arc<Domain> {
        &self.dom
    }

    /// The hypervisor.
    pub fn hypervisor(&self) -> &Arc<Hypervisor> {
        &self.hv
    }

    /// Pages the allocator can still hand out.
    pub fn free_page_count(&self) -> usize {
        lock(&self.alloc).free_pages()
    }

    /// Installs a handler called from [`Platform::wait`] with each port whose event
    /// was delivered (cleared) there.
    pub fn set_port_handler(&self, h: Option<PortHandler>) {
        *lock(&self.port_handler) = h;
    }

    /// Changes the bound of one [`Platform::wait`] (default [`WAIT_TIMEOUT`]). Tests
    /// raise it to prove that a wake-up comes from an event, not from the timeout.
    pub fn set_wait_timeout(&self, t: Duration) {
        *lock(&self.wait_timeout) = t;
    }

    /// Chooses who acknowledges upcalls (default [`UpcallMode::Acknowledge`]).
    pub fn set_upcall_mode(&self, mode: UpcallMode) {
        *lock(&self.mode) = mode;
    }

    fn in_guest_thread(&self) -> bool {
        GUEST_THREAD.with(|g| g.borrow().contains(&self.key))
    }

    /// [`Platform::wait`] with `bound` as its longest sleep.
    fn wait_for(&self, bound: Duration) {
        self.exit_if_finished();
        let hv = &self.hv;
        let dom = &self.dom;
        let due = hv.check_timer(dom);
        let seen = SEEN.with(|s| s.borrow().get(&self.key).copied().unwrap_or(0));
        if dom.signal().epoch() == seen && !hv.upcall_pending(dom.id()) {
            let timeout = due.map_or(bound, |d| d.min(bound));
            dom.signal().wait_change(seen, timeout);
        }
        hv.check_timer(dom);
        self.after_wait();
    }

    /// What a guest OS's upcall handler does after a wait (see [`UpcallMode`]).
    fn after_wait(&self) {
        let hv = &self.hv;
        let dom = &self.dom;
        if *lock(&self.mode) == UpcallMode::GuestScans {
            let now = dom.signal().epoch();
            SEEN.with(|s| s.borrow_mut().insert(self.key, now));
            self.exit_if_finished();
            return;
        }
        let delivered = hv.ack_upcall(dom.id());
        let now = dom.signal().epoch();
        SEEN.with(|s| s.borrow_mut().insert(self.key, now));
        let handler = lock(&self.port_handler).clone();
        if let Some(h) = handler {
            for (w, bits) in delivered.iter().enumerate() {
                let mut b = *bits;
                while b != 0 {
                    let i = b.trailing_zeros();
                    b &= b - 1;
                    h(Port(w as u32 * 64 + i));
                }
            }
        }
        self.exit_if_finished();
    }

    /// Ends the current thread if it is this guest's and the domain is finished;
    /// holds it while the domain is paused. Not while the thread is already
    /// unwinding (from this or a panic): the guest's destructors (a device's `Drop`
    /// ending grants) run then, and a second unwind would abort the process.
    fn exit_if_finished(&self) {
        if std::thread::panicking() {
            return;
        }
        if self.dom.is_paused() && self.in_guest_thread() {
            self.dom.wait_unpaused();
        }
        if self.dom.is_finished() && self.in_guest_thread() {
            panic::resume_unwind(Box::new(GuestExit));
        }
    }

    /// Runs `f` as a thread of this guest (like [`Hypervisor::spawn_guest`]'s first
    /// thread): it ends when the domain is finished; a panic crashes the domain.
    pub fn spawn_thread<F>(self: &Arc<Self>, f: F) -> std::io::Result<JoinHandle<()>>
    where
        F: FnOnce(Arc<InProcGuest>) + Send + 'static,
    {
        let g = self.clone();
        std::thread::Builder::new()
            .name(format!("dom{}", self.dom.id().0))
            .spawn(move || g.run_as_guest(f, false))
    }

    fn run_as_guest<F>(self: Arc<Self>, f: F, main: bool)
    where
        F: FnOnce(Arc<InProcGuest>),
    {
        GUEST_THREAD.with(|g| g.borrow_mut().push(self.key));
        let me = self.clone();
        let r = panic::catch_unwind(AssertUnwindSafe(move || f(me)));
        GUEST_THREAD.with(|g| g.borrow_mut().retain(|k| *k != self.key));
        match r {
            Ok(()) if main => {
                // The guest's main returned: a unikernel powers off.
                self.hv
                    .shutdown_domain(&self.dom, crate::ShutdownReason::Poweroff);
            }
            Ok(()) => {}
            Err(p) if p.is::<GuestExit>() => {}
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "guest panicked".into());
                self.hv.crash_domain(&self.dom, msg);
            }
        }
    }
}

impl Hypercall for InProcGuest {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        self.exit_if_finished();
        // SAFETY: the caller of this unsafe fn guarantees that pointer arguments are
        // valid for the operation for the duration of the call (Hypercall's contract),
        // which is exactly InProcessAccess::new's requirement.
        let access = unsafe { InProcessAccess::new() };
        let r = self.hv.hypercall(&self.dom, op, args, &access);
        self.exit_if_finished();
        r
    }
}

// SAFETY: pages come from the domain's RAM mapping, which this guest keeps alive (Arc
// <Domain> → Arc<GuestMemory>) for as long as it lives; alloc_pages hands out page-aligned,
// zeroed, exclusively owned runs from a checked allocator and free_pages only accepts
// exact earlier allocations; virt_to_gfn and gfn_to_virt both translate through the same
// GuestMemory, so they agree, and gfn_to_virt maps whole frames.
unsafe impl Platform for InProcGuest {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        let gfn = lock(&self.alloc).alloc(count)?;
        let mem = self.dom.memory();
        let pages = mem.pages_at(gfn, count).ok()?;
        pages.fill(0, pages.len(), 0);
        mem.gfn_to_host(gfn).ok()
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, count: usize) {
        let mem = self.dom.memory();
        let Some(gpa) = mem.host_to_gpa(ptr.as_ptr()) else {
            return;
        };
        if gpa % hypercall::PAGE_SIZE as u64 != 0 {
            return;
        }
        // A free that does not match an allocation is ignored (leak on doubt).
        lock(&self.alloc).free(Gfn(gpa >> 12), count);
    }

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        self.dom.memory().host_to_gfn(addr.as_ptr())
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        self.dom.memory().gfn_to_host(gfn).ok()
    }

    fn wait(&self) {
        let bound = *lock(&self.wait_timeout);
        self.wait_for(bound);
    }

    /// Tickless: sleeps until an event, the domain's timer, or the deadline; no
    /// periodic wake-up (every change the guest must see raises its signal: events,
    /// timers it set, pause, shutdown and destruction).
    fn wait_until(&self, deadline_ns: u64) {
        let left = deadline_ns.saturating_sub(self.hv.now_ns());
        self.wait_for(Duration::from_nanos(left));
    }

    fn now_ns(&self) -> u64 {
        self.hv.now_ns()
    }

    /// Guest "vCPUs" are host threads sharing the cores with the backends: a
    /// busy-waiting guest yields so the backend it waits for gets to run.
    fn relax(&self) {
        // Mostly CPU pauses (a response is seen within nanoseconds); every 8th
        // step yields, so a backend sharing this core still runs.
        let n = RELAX_STEPS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n
        });
        if n.is_multiple_of(8) {
            self.exit_if_finished();
            std::thread::yield_now();
        } else {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        }
    }
}

/// A guest started with [`Hypervisor::spawn_guest`].
#[derive(Debug)]
pub struct GuestHandle {
    guest: Arc<InProcGuest>,
    thread: JoinHandle<()>,
}

impl GuestHandle {
    /// The guest's platform (e.g. to inspect its domain).
    pub fn guest(&self) -> &Arc<InProcGuest> {
        &self.guest
    }

    /// Waits for the guest's first thread to end; returns the domain's state then.
    pub fn join(self) -> DomainState {
        // The thread catches guest panics itself; a join error cannot carry one.
        let _ = self.thread.join();
        self.guest.dom.state()
    }

    /// Whether the guest's first thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

impl Hypervisor {
    /// Runs `f` as the first thread of guest `dom` (in-process runner). The thread ends
    /// when `f` returns (poweroff), panics (crash), or the domain is finished.
    pub fn spawn_guest<F>(self: &Arc<Self>, dom: Arc<Domain>, f: F) -> std::io::Result<GuestHandle>
    where
        F: FnOnce(Arc<InProcGuest>) + Send + 'static,
    {
        let guest = InProcGuest::new(self.clone(), dom);
        let g = guest.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dom{}", guest.dom.id().0))
            .spawn(move || g.run_as_guest(f, true))?;
        Ok(GuestHandle { guest, thread })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_first_fit_and_checked_free() {
        let mut a = PageAllocator::new(Gfn(0x100), Gfn(0x108));
        let x = a.alloc(3).unwrap();
        let y = a.alloc(2).unwrap();
        assert_eq!(x, Gfn(0x100));
        assert_eq!(y, Gfn(0x103));
        assert!(a.alloc(4).is_none());
        assert!(!a.free(Gfn(0x101), 2), "not an allocation");
        assert!(!a.free(x, 2), "wrong count");
        assert!(a.free(x, 3));
        assert!(!a.free(x, 3), "double free");
        assert_eq!(a.alloc(3), Some(Gfn(0x100)));
        assert_eq!(a.free_pages(), 3);
        assert!(a.alloc(0).is_none());
        assert!(a.alloc(usize::MAX).is_none());
    }
}
