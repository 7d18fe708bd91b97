//! The platform boundary: the only things an OS (or shim-hv's in-process runner)
//! implements to host the kit.
//!
//! Every method takes `&self`: no global state, so two kits (two in-process guests)
//! can live side by side in one process.

use core::ptr::NonNull;

/// Size of a Xen page on x86_64.
pub const PAGE_SIZE: usize = 4096;

/// A guest frame number: guest-physical address >> 12.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Gfn(pub u64);

impl Gfn {
    /// The guest-physical address of the first byte of this frame.
    pub const fn addr(self) -> u64 {
        self.0 << 12
    }
}

/// A domain id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct DomId(pub u16);

impl DomId {
    /// `DOMID_SELF` (0x7FF0): "the calling domain" in hypercall arguments.
    pub const SELF: DomId = DomId(0x7FF0);
    /// Domain 0, the control domain (shim-hv plays it).
    pub const DOM0: DomId = DomId(0);
}

/// An event-channel port number.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Port(pub u32);

/// A grant reference: an index into the granting domain's grant table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

/// Issuing a hypercall: the raw Xen ABI.
///
/// `op` is the hypercall number (see [`crate::abi::hypercall_nr`]); `args` are up to
/// five register arguments (rdi, rsi, rdx, r10, r8 on x86_64). The result is what Xen
/// returns in rax: `>= 0` on success, a negated errno on failure.
pub trait Hypercall {
    /// Issue hypercall `op`.
    ///
    /// # Safety
    /// Pointer arguments must point to memory that is valid for the operation (as
    /// the hypercall's own documentation describes) for the duration of the call.
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize;
}

impl<T: Hypercall + ?Sized> Hypercall for &T {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { (**self).hypercall(op, args) }
    }
}

/// What frontends need from the OS besides hypercalls: pages they can share with
/// another domain, address translation, waiting and time.
///
/// # Safety
/// Safe code in the kit turns the pointers this trait returns into [`crate::SharedMem`]
/// regions, so implementors promise:
/// - Memory from [`Platform::alloc_pages`] is mapped, readable, writable,
///   page-aligned and exclusively the caller's from the call until it is passed to
///   [`Platform::free_pages`] — also if the platform value is moved or dropped in
///   between (a platform that owns its memory keeps outstanding allocations alive,
///   or leaks them). No Rust object lives in it meanwhile. ([`crate::SharedPages`]
///   owns such an allocation and lends it out by borrow.)
/// - A pointer from [`Platform::gfn_to_virt`] maps the whole 4 KiB frame, readable
///   and writable, for as long as the platform value lives, and the frame is
///   memory that Rust code only ever touches through [`crate::SharedMem`]: the
///   special pages Xen set up (store, console), grant/shared-info frames, the
///   pool [`Platform::alloc_pages`] draws from — never the kernel's image, stacks
///   or heap. Return `None` for any other frame. ([`crate::SharedMem::map_gfn`]
///   borrows the platform for the mapping's lifetime.)
/// - [`Platform::virt_to_gfn`] and [`Platform::gfn_to_virt`] agree with each
///   other.
pub unsafe trait Platform: Hypercall {
    /// Allocates `count` virtually contiguous, page-aligned, zeroed 4 KiB pages that the
    /// guest owns and may grant to another domain. `None` when out of memory.
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>>;

    /// Returns pages from [`Platform::alloc_pages`].
    ///
    /// # Safety
    /// `ptr`/`count` must be exactly an earlier allocation, and no other domain may still
    /// have access to the pages (every grant on them ended).
    unsafe fn free_pages(&self, ptr: NonNull<u8>, count: usize);

    /// The guest frame number of the page holding `addr` (any address in guest-owned
    /// memory, e.g. from [`Platform::alloc_pages`]). `None` if `addr` is not guest memory.
    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn>;

    /// The virtual address where guest frame `gfn` is mapped, if it is.
    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>>;

    /// Blocks until an event may have arrived for this domain, or a short
    /// platform-chosen time has passed. Spurious returns are allowed; callers re-check
    /// their rings. This is the only way the kit waits.
    fn wait(&self);

    /// Blocks until an event may have arrived for this domain or [`Platform::now_ns`]
    /// reaches `deadline_ns` (`u64::MAX`: no deadline), whichever comes first.
    /// Spurious and early returns are allowed, as for [`Platform::wait`].
    ///
    /// This is how an idle guest sleeps without a tick: its main loop passes the
    /// next deadline it really has (a timer, a retransmission), so a platform that
    /// can sleep that long (a one-shot timer, a host condition variable) wakes only
    /// for events. The default waits once with [`Platform::wait`], which is always
    /// correct, only not tickless.
    fn wait_until(&self, deadline_ns: u64) {
        let _ = deadline_ns;
        self.wait()
    }

    /// Monotonic time in nanoseconds, for timeouts.
    fn now_ns(&self) -> u64;

    /// One step of a short busy-wait (polling a ring for a response that is about
    /// to come, before sleeping in [`Platform::wait`]). The default is a CPU pause
    /// hint, right for a guest that owns its vCPU; a platform whose "CPUs" are
    /// threads sharing host cores with the backend (the in-process runner) yields
    /// instead, so polling never keeps the backend from running.
    fn relax(&self) {
        core::hint::spin_loop();
    }
}

/// A shared reference to a platform is a platform, so kits can borrow one
/// (`Xenstore<&MyPlatform>`) instead of owning it.
// SAFETY: forwards every method to `T`, which upholds the contract.
unsafe impl<T: Platform + ?Sized> Platform for &T {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        (**self).alloc_pages(count)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, count: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { (**self).free_pages(ptr, count) }
    }

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        (**self).virt_to_gfn(addr)
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        (**self).gfn_to_virt(gfn)
    }

    fn wait(&self) {
        (**self).wait()
    }

    fn wait_until(&self, deadline_ns: u64) {
        (**self).wait_until(deadline_ns)
    }

    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }

    fn relax(&self) {
        (**self).relax()
    }
}
