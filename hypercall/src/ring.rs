//! The generic shared request/response ring of `io/ring.h`.
//!
//! ```text
//!  frontend (FrontRing)                 shared pages                 backend (BackRing)
//!  req_prod_pvt ──push_request──▶ [hdr | slot 0 | slot 1 | ...] ──poll_request──▶ req_cons
//!  rsp_cons     ◀──poll_response── (copy each slot out once)  ◀──push_response── rsp_prod_pvt
//! ```
//!
//! Layout and index rules: see [`crate::abi::ring`]. The ring spans a [`SharedMem`] of
//! 1, 2, 4, ... pages; it holds the largest power-of-two number of slots of
//! `max(size_of::<Req>(), size_of::<Rsp>())` bytes that fit after the 64-byte header.
//!
//! Trust: each side treats the other's index and slots as hostile.
//! - The producer index of the other side is read once per poll (atomic acquire, the
//!   `rmb()` of `ring.h`) and checked: it may not move backwards and may not run more
//!   than the possible number of entries ahead of our consumer (docs/hostile-input.md rows 1, 2).
//!   A violation is a sticky [`RingError`]: the ring refuses further work.
//! - Each slot is copied out exactly once into a private value (XSA-155, row 3);
//!   requests we produced are never read back.
//! - `*_event` values only decide whether to notify; garbage there costs at most
//!   a spurious or a missed notification (row 5), never memory safety.
//!
//! Thread safety: a ring is owned by one user at a time (`&mut self`); wrap it in a
//! lock if several contexts use it.

use crate::abi::ring as layout;
use crate::shmem::{mb, wmb, SharedMem, SharedPages, SharedRegion};
use crate::PAGE_SIZE;
use core::fmt;
use core::marker::PhantomData;
use core::mem::size_of;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Why a ring refused an operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The shared memory is not a power-of-two number of whole pages, or too small
    /// for one slot.
    BadLength(usize),
    /// No free slot: wait for responses (frontend) / requests to answer (backend).
    Full,
    /// The peer's producer index is further ahead of our consumer index than the
    /// peer may legally be (`prod - cons` > outstanding entries; also what a
    /// backwards jump past our consumer looks like with wrapping arithmetic).
    ProducerOverrun {
        /// The producer index read.
        prod: u32,
        /// Our consumer index.
        cons: u32,
    },
    /// The peer's producer index moved backwards from a value it had already
    /// published (but stayed at or past our consumer).
    ProducerWentBackwards {
        /// The value seen before.
        prev: u32,
        /// The value seen now.
        now: u32,
    },
    /// Backend only: a response pushed with no consumed request to answer.
    NoRequestToAnswer,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RingError::BadLength(l) => write!(f, "ring memory of {l} bytes is not usable"),
            RingError::Full => write!(f, "ring full"),
            RingError::ProducerOverrun { prod, cons } => {
                write!(f, "peer producer index {prod} overruns consumer {cons}")
            }
            RingError::ProducerWentBackwards { prev, now } => {
                write!(f, "peer producer index went backwards from {prev} to {now}")
            }
            RingError::NoRequestToAnswer => write!(f, "response without a request"),
        }
    }
}

/// Number of slots of `slot_size` bytes in a ring of `bytes` bytes
/// (`__CONST_RING_SIZE`), 0 if none fits.
pub const fn ring_size(bytes: usize, slot_size: usize) -> u32 {
    layout::const_ring_size(bytes, slot_size)
}

fn check_len(mem: &SharedMem<'_>, slot: usize) -> Result<u32, RingError> {
    let len = mem.len();
    let pages = len / PAGE_SIZE;
    if len == 0 || !len.is_multiple_of(PAGE_SIZE) || !pages.is_power_of_two() {
        return Err(RingError::BadLength(len));
    }
    match ring_size(len, slot) {
        0 => Err(RingError::BadLength(len)),
        n => Ok(n),
    }
}

/// Validates a freshly read producer index of the peer.
///
/// `prev`: the last value we accepted. `cons`: our consumer index. `limit`: how far
/// past `cons` the producer may legally be. `size`: the ring size, only used to
/// name the failure (a step back of at most `size` is reported as "backwards").
fn check_prod(prod: u32, prev: u32, cons: u32, limit: u32, size: u32) -> Result<(), RingError> {
    let ahead = prod.wrapping_sub(cons);
    if ahead <= limit {
        // In range, but it may still have moved back from what we saw
        // (`prev - cons` never exceeds `limit`: we only consume up to `prev`).
        if ahead < prev.wrapping_sub(cons) {
            return Err(RingError::ProducerWentBackwards { prev, now: prod });
        }
        return Ok(());
    }
    let back = prev.wrapping_sub(prod);
    if back != 0 && back <= size {
        Err(RingError::ProducerWentBackwards { prev, now: prod })
    } else {
        Err(RingError::ProducerOverrun { prod, cons })
    }
}

/// Frontend end of a shared ring: produces `Req`, consumes `Rsp`.
///
/// `M` is the ring's memory: a [`SharedPages`] the ring owns (a device's own
/// ring pages; [`FrontRing::into_region`] gives them back for freeing), or a
/// borrowed [`SharedMem`], which ties the ring to the memory's owner. Either
/// way the ring cannot outlive its pages:
///
/// ```compile_fail,E0505
/// use hypercall::abi::blkif::{Request, Response};
/// use hypercall::ring::FrontRing;
/// use hypercall::{SharedMem, SharedPages};
/// # use core::ptr::NonNull;
/// # use std::alloc::{alloc_zeroed, dealloc, Layout};
/// # use hypercall::{Hypercall, Platform};
/// # /// A platform whose pages come from the heap.
/// # struct Heap;
/// # impl Hypercall for Heap {
/// #     unsafe fn hypercall(&self, _: u32, _: [usize; 5]) -> isize { -38 }
/// # }
/// # const PAGE: Layout = match Layout::from_size_align(4096, 4096) { Ok(l) => l, Err(_) => panic!() };
/// # // SAFETY: pages are heap allocations used only as shared memory until freed.
/// # unsafe impl Platform for Heap {
/// #     fn alloc_pages(&self, n: usize) -> Option<NonNull<u8>> {
/// #         // SAFETY: non-zero size.
/// #         (n == 1).then(|| NonNull::new(unsafe { alloc_zeroed(PAGE) })).flatten()
/// #     }
/// #     unsafe fn free_pages(&self, p: NonNull<u8>, _: usize) {
/// #         // SAFETY: allocated above with PAGE.
/// #         unsafe { dealloc(p.as_ptr(), PAGE) }
/// #     }
/// #     fn virt_to_gfn(&self, _: NonNull<u8>) -> Option<hypercall::Gfn> { None }
/// #     fn gfn_to_virt(&self, _: hypercall::Gfn) -> Option<NonNull<u8>> { None }
/// #     fn wait(&self) {}
/// #     fn now_ns(&self) -> u64 { 0 }
/// # }
/// # let platform = Heap;
/// let pages = SharedPages::alloc(&platform, 1).unwrap();
/// let ring: FrontRing<Request, Response, SharedMem<'_>> = FrontRing::init(pages.mem()).unwrap();
/// // SAFETY: the page was never granted.
/// unsafe { pages.free(&platform) }; // error[E0505]: cannot move out of `pages`
/// assert_eq!(ring.size(), 32);
/// ```
pub struct FrontRing<Req, Rsp, M: SharedRegion> {
    mem: M,
    size: u32,
    req_prod_pvt: u32,
    /// The `req_prod` we last published (private: never read back from the page).
    req_prod_published: u32,
    rsp_cons: u32,
    /// The last `rsp_prod` accepted.
    rsp_prod_seen: u32,
    broken: Option<RingError>,
    _t: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp, M: SharedRegion> fmt::Debug for FrontRing<Req, Rsp, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontRing")
            .field("size", &self.size)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("rsp_cons", &self.rsp_cons)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<Req, Rsp> FrontRing<Req, Rsp, SharedPages>
where
    Req: IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes,
{
    /// A ring without memory, for a structure built before its pages exist (a
    /// `static`): no slots, and every poll fails with [`RingError::BadLength`]`(0)`.
    /// Replace it with [`FrontRing::init`] before use.
    pub const fn detached() -> Self {
        Self {
            mem: SharedPages::empty(),
            size: 0,
            req_prod_pvt: 0,
            req_prod_published: 0,
            rsp_cons: 0,
            rsp_prod_seen: 0,
            broken: Some(RingError::BadLength(0)),
            _t: PhantomData,
        }
    }
}

impl<Req, Rsp, M: SharedRegion> FrontRing<Req, Rsp, M>
where
    Req: IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes,
{
    /// Bytes per slot: the union of request and response.
    pub const SLOT_SIZE: usize = if size_of::<Req>() > size_of::<Rsp>() {
        size_of::<Req>()
    } else {
        size_of::<Rsp>()
    };

    /// `XEN_FRONT_RING_INIT`: zeroes the whole ring (header, padding and slots),
    /// sets `req_event = rsp_event = 1` as `SHARED_RING_INIT` does, and starts at
    /// index 0.
    pub fn init(mem: M) -> Result<Self, RingError> {
        Self::init_at(mem, 0)
    }

    /// Like [`FrontRing::init`], but with all indices starting at `start` (the
    /// header gets `req_prod = rsp_prod = start`, `*_event = start + 1`). Used to
    /// exercise index wrap-around; a backend must attach at the same index.
    /// Public on purpose: the protocol starts at 0, but the frontends' and
    /// backends' own tests (in other crates) start near `u32::MAX` with it to
    /// prove their index arithmetic wraps.
    pub fn init_at(mem: M, start: u32) -> Result<Self, RingError> {
        let m = mem.shared();
        let size = check_len(&m, Self::SLOT_SIZE)?;
        m.fill(0, m.len(), 0);
        m.store_u32(layout::REQ_PROD, start);
        m.store_u32(layout::RSP_PROD, start);
        m.store_u32(layout::REQ_EVENT, start.wrapping_add(1));
        m.store_u32(layout::RSP_EVENT, start.wrapping_add(1));
        mb();
        Ok(Self {
            mem,
            size,
            req_prod_pvt: start,
            req_prod_published: start,
            rsp_cons: start,
            rsp_prod_seen: start,
            broken: None,
            _t: PhantomData,
        })
    }

    /// The ring's memory (e.g. for its pages' frame numbers), borrowed.
    pub fn mem(&self) -> SharedMem<'_> {
        self.mem.shared()
    }

    /// The ring's memory back (a device frees its ring pages with it once the
    /// grants on them ended).
    pub fn into_region(self) -> M {
        self.mem
    }

    /// Number of slots (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Slots free for new requests (`RING_FREE_REQUESTS`).
    pub fn free_slots(&self) -> u32 {
        self.size
            .saturating_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// Requests produced (published or not) whose responses are not yet consumed.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// The index the next request will get (`req_prod_pvt`).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The index of the next response to consume (`rsp_cons`).
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// The error that broke this ring, if any (sticky).
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    fn slot_offset(&self, idx: u32) -> usize {
        layout::HEADER_SIZE + (idx & (self.size - 1)) as usize * Self::SLOT_SIZE
    }

    /// Writes `req` into the next free slot (not yet visible to the backend: call
    /// [`FrontRing::push_requests_and_check_notify`]). The request is built by the
    /// caller in private memory; it is never read back from the ring.
    pub fn push_request(&mut self, req: &Req) -> Result<(), RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        if self.free_slots() == 0 {
            return Err(RingError::Full);
        }
        let off = self.slot_offset(self.req_prod_pvt);
        self.mem.shared().write_obj(off, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the pushed requests (`wmb`
    /// before the index store, `mb` after it) and says whether the backend asked
    /// to be notified (`new - req_event < new - old`, wrapping).
    #[must_use = "notify the backend's event channel when this returns true"]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        wmb();
        self.mem.shared().store_u32(layout::REQ_PROD, new);
        mb();
        let event = self.mem.shared().load_u32(layout::REQ_EVENT);
        self.req_prod_published = new;
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Reads and validates `rsp_prod` (rows 1, 2). Sticky on failure.
    fn read_rsp_prod(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        // Acquire load = `rsp_prod` then `rmb()`.
        let prod = self.mem.shared().load_u32(layout::RSP_PROD);
        // At most one response per request we published (which also bounds it by
        // the ring size): a backend cannot legitimately answer a request whose slot
        // it was not yet allowed to read.
        let limit = self.req_prod_published.wrapping_sub(self.rsp_cons);
        match check_prod(prod, self.rsp_prod_seen, self.rsp_cons, limit, self.size) {
            Ok(()) => {
                self.rsp_prod_seen = prod;
                Ok(prod)
            }
            Err(e) => {
                self.broken = Some(e);
                Err(e)
            }
        }
    }

    /// Number of responses available now (`RING_HAS_UNCONSUMED_RESPONSES`), after
    /// validating `rsp_prod`.
    #[inline]
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        if self.rsp_prod_seen != self.rsp_cons {
            if let Some(e) = self.broken {
                return Err(e);
            }
            return Ok(self.rsp_prod_seen.wrapping_sub(self.rsp_cons));
        }
        let prod = self.read_rsp_prod()?;
        Ok(prod.wrapping_sub(self.rsp_cons))
    }

    /// Takes the next response, if any: `rsp_prod` is re-read (and validated) only
    /// when the responses seen last time are used up; the slot is copied out once.
    #[inline]
    pub fn poll_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let off = self.slot_offset(self.rsp_cons);
        let rsp: Rsp = self.mem.shared().read_obj(off);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: if nothing is pending, asks the backend to
    /// notify on the next response (`rsp_event = rsp_cons + 1`, `mb`) and checks
    /// again. `Ok(true)`: more responses arrived; poll again.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? != 0 {
            return Ok(true);
        }
        self.mem
            .shared()
            .store_u32(layout::RSP_EVENT, self.rsp_cons.wrapping_add(1));
        mb();
        Ok(self.unconsumed_responses()? != 0)
    }

    /// [`FrontRing::final_check_for_responses`] with notification coalescing: if
    /// nothing is pending, asks the backend to notify only when the `batch`-th next
    /// response is published (`rsp_event = rsp_cons + batch`, `mb`) and checks again.
    /// `batch` is clamped to `1..=` the published requests not yet answered, so the
    /// awaited notification is one the backend owes as soon as it answers them (a
    /// backend that never answers is the caller's timeout, as always). `batch` 1 is
    /// `RING_FINAL_CHECK_FOR_RESPONSES`; larger values trade latency of the first
    /// completions for fewer notifications (as Linux's netback/NAPI moderation).
    pub fn final_check_for_responses_batched(&mut self, batch: u32) -> Result<bool, RingError> {
        if self.unconsumed_responses()? != 0 {
            return Ok(true);
        }
        let published = self.req_prod_published.wrapping_sub(self.rsp_cons);
        let n = batch.min(published).max(1);
        self.mem
            .shared()
            .store_u32(layout::RSP_EVENT, self.rsp_cons.wrapping_add(n));
        mb();
        Ok(self.unconsumed_responses()? != 0)
    }
}

/// Backend end of a shared ring: consumes `Req`, produces `Rsp` (shim-hv's
/// backends). Treats the frontend as hostile.
///
/// `M` is the ring's memory, as for [`FrontRing`]: borrowed ([`SharedMem`]) or
/// owned by something that lends it out ([`SharedRegion`]).
pub struct BackRing<Req, Rsp, M: SharedRegion> {
    mem: M,
    size: u32,
    rsp_prod_pvt: u32,
    rsp_prod_published: u32,
    req_cons: u32,
    req_prod_seen: u32,
    broken: Option<RingError>,
    _t: PhantomData<fn(Rsp) -> Req>,
}

impl<Req, Rsp, M: SharedRegion> fmt::Debug for BackRing<Req, Rsp, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackRing")
            .field("size", &self.size)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("req_cons", &self.req_cons)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<Req, Rsp, M: SharedRegion> BackRing<Req, Rsp, M>
where
    Req: FromBytes + IntoBytes,
    Rsp: IntoBytes + Immutable,
{
    /// Bytes per slot: the union of request and response.
    pub const SLOT_SIZE: usize = if size_of::<Req>() > size_of::<Rsp>() {
        size_of::<Req>()
    } else {
        size_of::<Rsp>()
    };

    /// `BACK_RING_INIT`: attaches to a ring the frontend initialised, at index 0.
    /// Does not touch the shared header.
    pub fn attach(mem: M) -> Result<Self, RingError> {
        Self::attach_at(mem, 0)
    }

    /// `BACK_RING_ATTACH` at index `start` (must match the frontend's start).
    pub fn attach_at(mem: M, start: u32) -> Result<Self, RingError> {
        let size = check_len(&mem.shared(), Self::SLOT_SIZE)?;
        Ok(Self {
            mem,
            size,
            rsp_prod_pvt: start,
            rsp_prod_published: start,
            req_cons: start,
            req_prod_seen: start,
            broken: None,
            _t: PhantomData,
        })
    }

    /// The ring's memory, borrowed.
    pub fn mem(&self) -> SharedMem<'_> {
        self.mem.shared()
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The index of the next request to consume.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// The index the next response will get.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// The error that broke this ring, if any (sticky).
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    fn slot_offset(&self, idx: u32) -> usize {
        layout::HEADER_SIZE + (idx & (self.size - 1)) as usize * Self::SLOT_SIZE
    }

    fn read_req_prod(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let prod = self.mem.shared().load_u32(layout::REQ_PROD);
        // `RING_REQUEST_PROD_OVERFLOW`: the frontend cannot have more than `size`
        // requests outstanding beyond the responses we produced.
        let limit = self
            .size
            .wrapping_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt));
        match check_prod(prod, self.req_prod_seen, self.req_cons, limit, self.size) {
            Ok(()) => {
                self.req_prod_seen = prod;
                Ok(prod)
            }
            Err(e) => {
                self.broken = Some(e);
                Err(e)
            }
        }
    }

    /// Number of requests available now (validated).
    #[inline]
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        if self.req_prod_seen != self.req_cons {
            if let Some(e) = self.broken {
                return Err(e);
            }
            return Ok(self.req_prod_seen.wrapping_sub(self.req_cons));
        }
        let prod = self.read_req_prod()?;
        Ok(prod.wrapping_sub(self.req_cons))
    }

    /// Takes the next request, copied out of the slot once. `Ok(None)` also when
    /// every slot holds a consumed request still waiting for its response
    /// (`RING_REQUEST_CONS_OVERFLOW`): push responses first.
    #[inline]
    pub fn poll_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.req_cons.wrapping_sub(self.rsp_prod_pvt) >= self.size {
            return Ok(None);
        }
        if self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let off = self.slot_offset(self.req_cons);
        let req: Req = self.mem.shared().read_obj(off);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Writes the response to the oldest unanswered request (not yet visible:
    /// call [`BackRing::push_responses_and_check_notify`]).
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        if self.rsp_prod_pvt == self.req_cons {
            return Err(RingError::NoRequestToAnswer);
        }
        let off = self.slot_offset(self.rsp_prod_pvt);
        self.mem.shared().write_obj(off, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`.
    #[must_use = "notify the frontend's event channel when this returns true"]
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        wmb();
        self.mem.shared().store_u32(layout::RSP_PROD, new);
        mb();
        let event = self.mem.shared().load_u32(layout::RSP_EVENT);
        self.rsp_prod_published = new;
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: `Ok(true)` if requests are pending; otherwise
    /// sets `req_event = req_cons + 1`, `mb`, and checks again.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? != 0 {
            return Ok(true);
        }
        self.mem
            .shared()
            .store_u32(layout::REQ_EVENT, self.req_cons.wrapping_add(1));
        mb();
        Ok(self.unconsumed_requests()? != 0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::abi::{blkif, netif};
    use core::ptr::NonNull;
    use std::vec;
    use std::vec::Vec;

    /// Page-aligned backing memory for a ring of `pages` pages.
    struct Pages {
        /// Owns the bytes; only touched through `base` after construction.
        _buf: Vec<u64>,
        base: NonNull<u8>,
        len: usize,
    }

    impl Pages {
        fn new(pages: usize) -> Self {
            let len = pages * PAGE_SIZE;
            let mut buf = vec![0u64; (len + PAGE_SIZE) / 8];
            let off = (PAGE_SIZE - (buf.as_ptr() as usize % PAGE_SIZE)) % PAGE_SIZE;
            // SAFETY: `off + len` is inside `buf` (one spare page for alignment).
            let base = unsafe { NonNull::new(buf.as_mut_ptr().cast::<u8>().add(off)).unwrap() };
            Self {
                _buf: buf,
                base,
                len,
            }
        }
        fn mem(&self) -> SharedMem<'_> {
            // SAFETY: `base..base+len` is inside the heap buffer `self` owns, which
            // lives (and does not move) while `self` is borrowed, and is only
            // accessed through regions from here.
            unsafe { SharedMem::new(self.base, self.len) }
        }
    }

    type BlkFront<'a> = FrontRing<blkif::Request, blkif::Response, SharedMem<'a>>;
    type BlkBack<'a> = BackRing<blkif::Request, blkif::Response, SharedMem<'a>>;

    fn req(id: u64) -> blkif::Request {
        blkif::Request {
            operation: blkif::OP_READ,
            nr_segments: 1,
            id,
            sector_number: id * 8,
            ..Default::default()
        }
    }

    fn rsp(id: u64) -> blkif::Response {
        blkif::Response {
            id,
            operation: blkif::OP_READ,
            status: blkif::RSP_OKAY,
            ..Default::default()
        }
    }

    #[test]
    fn slot_counts_match_const_ring_size() {
        for (pages, slots) in [(1, 32), (2, 64), (4, 128)] {
            let p = Pages::new(pages);
            let f = BlkFront::init(p.mem()).unwrap();
            assert_eq!(BlkFront::SLOT_SIZE, 112);
            assert_eq!(f.size(), slots);
            assert_eq!(f.size(), ring_size(pages * PAGE_SIZE, 112));
            assert_eq!(BlkBack::attach(p.mem()).unwrap().size(), slots);
        }
        let p = Pages::new(1);
        assert_eq!(
            FrontRing::<netif::TxRequest, netif::TxResponse, _>::init(p.mem())
                .unwrap()
                .size(),
            256
        );
        assert_eq!(
            FrontRing::<netif::RxRequest, netif::RxResponse, _>::init(p.mem())
                .unwrap()
                .size(),
            256
        );
    }

    #[test]
    fn rejects_non_power_of_two_page_counts_and_partial_pages() {
        let p = Pages::new(3);
        assert_eq!(
            BlkFront::init(p.mem()).unwrap_err(),
            RingError::BadLength(3 * PAGE_SIZE)
        );
        let short = p.mem().sub(0, 100).unwrap();
        assert_eq!(
            BlkFront::init(short).unwrap_err(),
            RingError::BadLength(100)
        );
        assert!(BlkBack::attach(short).is_err());
        // Over one page but not a whole number of pages (one page's worth of
        // slots would fit; the length is still wrong).
        let odd = p.mem().sub(0, PAGE_SIZE + 100).unwrap();
        assert_eq!(
            BlkFront::init(odd).unwrap_err(),
            RingError::BadLength(PAGE_SIZE + 100)
        );
        assert!(BlkBack::attach(odd).is_err());
    }

    #[test]
    fn init_zeroes_header_and_sets_events_to_one() {
        let p = Pages::new(1);
        let m = p.mem();
        m.fill(0, PAGE_SIZE, 0xAA);
        let _f = BlkFront::init(m).unwrap();
        assert_eq!(m.load_u32(layout::REQ_PROD), 0);
        assert_eq!(m.load_u32(layout::RSP_PROD), 0);
        assert_eq!(m.load_u32(layout::REQ_EVENT), 1);
        assert_eq!(m.load_u32(layout::RSP_EVENT), 1);
        let mut rest = vec![0u8; PAGE_SIZE - 16];
        m.read(16, &mut rest);
        assert!(rest.iter().all(|&b| b == 0), "padding and slots zeroed");
    }

    /// Full round trip, several laps of the ring, with indices starting just below
    /// 2^32 so they wrap mid-test (row 4).
    #[test]
    fn round_trip_across_u32_wrap() {
        for start in [0u32, u32::MAX - 40, u32::MAX] {
            let p = Pages::new(1);
            let mut f = BlkFront::init_at(p.mem(), start).unwrap();
            let mut b = BlkBack::attach_at(p.mem(), start).unwrap();
            let mut next = 0u64;
            let mut done = 0u64;
            for _lap in 0..5 {
                while f.free_slots() > 0 {
                    f.push_request(&req(next)).unwrap();
                    next += 1;
                }
                assert_eq!(f.push_request(&req(0)), Err(RingError::Full));
                let _ = f.push_requests_and_check_notify();
                while let Some(r) = b.poll_request().unwrap() {
                    b.push_response(&rsp(r.id)).unwrap();
                }
                let _ = b.push_responses_and_check_notify();
                while let Some(r) = f.poll_response().unwrap() {
                    assert_eq!(r.id, done);
                    done += 1;
                }
            }
            assert_eq!(done, next);
            assert_eq!(next, 5 * 32);
            assert_eq!(f.outstanding(), 0);
            assert_eq!(f.rsp_cons(), start.wrapping_add(160));
        }
    }

    #[test]
    fn front_notify_rule() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        // req_event = 1 after init: the first request notifies.
        f.push_request(&req(0)).unwrap();
        assert!(f.push_requests_and_check_notify());
        // Backend has not re-armed (req_event still 1): no notification.
        f.push_request(&req(1)).unwrap();
        assert!(!f.push_requests_and_check_notify());
        // Backend re-arms at req_cons + 1 = 3: pushing 2 more crosses it.
        m.store_u32(layout::REQ_EVENT, 3);
        f.push_request(&req(2)).unwrap();
        f.push_request(&req(3)).unwrap();
        assert!(f.push_requests_and_check_notify());
        // Backend asks for an event far ahead: no notification.
        m.store_u32(layout::REQ_EVENT, 100);
        f.push_request(&req(4)).unwrap();
        assert!(!f.push_requests_and_check_notify());
        // Nothing new pushed: never notify.
        m.store_u32(layout::REQ_EVENT, 5);
        assert!(!f.push_requests_and_check_notify());
    }

    /// Coalesced re-arming: `rsp_event` lands `batch` ahead, but never past the last
    /// published request (the awaited notification is always owed), and a response
    /// that slips in before the re-arm is still seen.
    #[test]
    fn batched_final_check_clamps_to_published_requests() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        let mut b = BlkBack::attach(m).unwrap();
        for i in 0..8 {
            f.push_request(&req(i)).unwrap();
        }
        let _ = f.push_requests_and_check_notify();
        // Two more pushed but not published: they do not count.
        f.push_request(&req(8)).unwrap();
        f.push_request(&req(9)).unwrap();
        assert!(!f.final_check_for_responses_batched(4).unwrap());
        assert_eq!(m.load_u32(layout::RSP_EVENT), 4);
        assert!(!f.final_check_for_responses_batched(100).unwrap());
        assert_eq!(m.load_u32(layout::RSP_EVENT), 8);
        assert!(!f.final_check_for_responses_batched(0).unwrap());
        assert_eq!(m.load_u32(layout::RSP_EVENT), 1);
        assert!(!f.final_check_for_responses_batched(4).unwrap());
        for _ in 0..8 {
            b.poll_request().unwrap().unwrap();
        }
        // The backend notifies on the 4th response only.
        for i in 0..4 {
            b.push_response(&rsp(i)).unwrap();
            assert_eq!(b.push_responses_and_check_notify(), i == 3);
        }
        // Responses pending: no re-arm, poll again.
        assert!(f.final_check_for_responses_batched(4).unwrap());
        for _ in 0..4 {
            f.poll_response().unwrap().unwrap();
        }
        assert!(!f.final_check_for_responses_batched(4).unwrap());
        assert_eq!(m.load_u32(layout::RSP_EVENT), 8);
    }

    #[test]
    fn back_notify_rule() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        let mut b = BlkBack::attach(m).unwrap();
        for i in 0..4 {
            f.push_request(&req(i)).unwrap();
        }
        let _ = f.push_requests_and_check_notify();
        for _ in 0..4 {
            b.poll_request().unwrap().unwrap();
        }
        // rsp_event = 1: first response notifies.
        b.push_response(&rsp(0)).unwrap();
        assert!(b.push_responses_and_check_notify());
        b.push_response(&rsp(1)).unwrap();
        assert!(!b.push_responses_and_check_notify());
        // Frontend final check re-arms rsp_event = rsp_cons + 1.
        assert_eq!(f.poll_response().unwrap().unwrap().id, 0);
        assert_eq!(f.poll_response().unwrap().unwrap().id, 1);
        assert!(!f.final_check_for_responses().unwrap());
        assert_eq!(m.load_u32(layout::RSP_EVENT), 3);
        b.push_response(&rsp(2)).unwrap();
        assert!(b.push_responses_and_check_notify());
        b.push_response(&rsp(3)).unwrap();
        assert!(!b.push_responses_and_check_notify());
        // Backend answering more than it consumed is refused.
        assert_eq!(b.push_response(&rsp(9)), Err(RingError::NoRequestToAnswer));
    }

    #[test]
    fn final_checks_see_late_work() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        let mut b = BlkBack::attach(m).unwrap();
        assert!(!b.final_check_for_requests().unwrap());
        assert_eq!(m.load_u32(layout::REQ_EVENT), 1);
        f.push_request(&req(0)).unwrap();
        assert!(f.push_requests_and_check_notify());
        assert!(b.final_check_for_requests().unwrap());
        b.poll_request().unwrap().unwrap();
        b.push_response(&rsp(0)).unwrap();
        let _ = b.push_responses_and_check_notify();
        assert!(f.final_check_for_responses().unwrap());
        assert!(f.poll_response().unwrap().is_some());
        assert!(!f.final_check_for_responses().unwrap());
    }

    /// Row 5: garbage `req_event`/`rsp_event` only change whether we notify; the
    /// data path is unaffected and polling still drains everything.
    #[test]
    fn garbage_event_indices_do_not_corrupt() {
        for garbage in [0u32, 1, 0x8000_0000, u32::MAX, 12345] {
            let p = Pages::new(1);
            let m = p.mem();
            let mut f = BlkFront::init(m).unwrap();
            let mut b = BlkBack::attach(m).unwrap();
            for round in 0..3u64 {
                m.store_u32(layout::REQ_EVENT, garbage);
                m.store_u32(layout::RSP_EVENT, garbage ^ 0x5555);
                for i in 0..10 {
                    f.push_request(&req(round * 10 + i)).unwrap();
                }
                let _ = f.push_requests_and_check_notify();
                let mut n = 0;
                while let Some(r) = b.poll_request().unwrap() {
                    b.push_response(&rsp(r.id)).unwrap();
                    n += 1;
                }
                assert_eq!(n, 10);
                let _ = b.push_responses_and_check_notify();
                for i in 0..10 {
                    assert_eq!(f.poll_response().unwrap().unwrap().id, round * 10 + i);
                }
                assert_eq!(f.poll_response().unwrap(), None);
            }
        }
    }

    /// Row 1: `rsp_prod` more than the outstanding count past `rsp_cons`.
    #[test]
    fn response_producer_overrun_breaks_the_ring() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        for i in 0..3 {
            f.push_request(&req(i)).unwrap();
        }
        let _ = f.push_requests_and_check_notify();
        // 33 on a 32-slot ring, and 4 with only 3 outstanding.
        for bad in [33u32, 4] {
            let p2 = Pages::new(1);
            let m2 = p2.mem();
            let mut f2 = BlkFront::init(m2).unwrap();
            for i in 0..3 {
                f2.push_request(&req(i)).unwrap();
            }
            let _ = f2.push_requests_and_check_notify();
            m2.store_u32(layout::RSP_PROD, bad);
            assert_eq!(
                f2.poll_response(),
                Err(RingError::ProducerOverrun { prod: bad, cons: 0 })
            );
            // Sticky: even a now-valid index is refused.
            m2.store_u32(layout::RSP_PROD, 1);
            assert!(f2.poll_response().is_err());
            assert!(f2.push_request(&req(9)).is_err());
            assert!(f2.broken().is_some());
        }
        // Exactly the outstanding count is fine.
        m.store_u32(layout::RSP_PROD, 3);
        assert_eq!(f.unconsumed_responses().unwrap(), 3);
    }

    /// Row 1, tighter: responses for requests pushed but not yet published are an
    /// overrun too (the backend read a slot it was not given).
    #[test]
    fn responses_to_unpublished_requests_break_the_ring() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        f.push_request(&req(0)).unwrap();
        f.push_request(&req(1)).unwrap();
        let _ = f.push_requests_and_check_notify();
        f.push_request(&req(2)).unwrap(); // written, not published
        m.store_u32(layout::RSP_PROD, 3);
        assert_eq!(
            f.poll_response(),
            Err(RingError::ProducerOverrun { prod: 3, cons: 0 })
        );
    }

    /// Row 2: `rsp_prod` moving backwards, both below `rsp_cons` and within range.
    #[test]
    fn response_producer_going_backwards_breaks_the_ring() {
        // Below rsp_cons (wraps to a huge distance).
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init_at(m, 10).unwrap();
        for i in 0..4 {
            f.push_request(&req(i)).unwrap();
        }
        let _ = f.push_requests_and_check_notify();
        m.store_u32(layout::RSP_PROD, 12);
        f.poll_response().unwrap().unwrap();
        f.poll_response().unwrap().unwrap();
        m.store_u32(layout::RSP_PROD, 11);
        assert_eq!(
            f.poll_response(),
            Err(RingError::ProducerWentBackwards { prev: 12, now: 11 })
        );

        // Still at/after rsp_cons but below what was published before.
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        for i in 0..4 {
            f.push_request(&req(i)).unwrap();
        }
        let _ = f.push_requests_and_check_notify();
        m.store_u32(layout::RSP_PROD, 3);
        assert_eq!(f.unconsumed_responses().unwrap(), 3);
        for _ in 0..3 {
            f.poll_response().unwrap().unwrap();
        }
        m.store_u32(layout::RSP_PROD, 4);
        assert_eq!(f.unconsumed_responses().unwrap(), 1);
        // Consume nothing; the backend now claims 3 again (from 4).
        m.store_u32(layout::RSP_PROD, 3);
        f.poll_response().unwrap().unwrap(); // uses the cached prod (4)
        assert_eq!(
            f.poll_response(),
            Err(RingError::ProducerWentBackwards { prev: 4, now: 3 })
        );
    }

    /// The backend side against a hostile frontend.
    #[test]
    fn request_producer_overrun_and_backwards() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut b = BlkBack::attach(m).unwrap();
        m.store_u32(layout::REQ_PROD, 33);
        assert_eq!(
            b.poll_request(),
            Err(RingError::ProducerOverrun { prod: 33, cons: 0 })
        );

        let p = Pages::new(1);
        let m = p.mem();
        let mut b = BlkBack::attach_at(m, 100).unwrap();
        m.store_u32(layout::REQ_PROD, 105);
        for _ in 0..5 {
            b.poll_request().unwrap().unwrap();
        }
        m.store_u32(layout::REQ_PROD, 99);
        assert!(matches!(
            b.poll_request(),
            Err(RingError::ProducerWentBackwards { prev: 105, now: 99 })
        ));
        assert!(b.push_response(&rsp(0)).is_err(), "sticky");
    }

    /// A backend cannot consume more than `size` requests ahead of its responses.
    #[test]
    fn backend_stops_when_every_slot_awaits_a_response() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        let mut b = BlkBack::attach(m).unwrap();
        for i in 0..32 {
            f.push_request(&req(i)).unwrap();
        }
        let _ = f.push_requests_and_check_notify();
        for _ in 0..32 {
            b.poll_request().unwrap().unwrap();
        }
        assert_eq!(b.poll_request().unwrap(), None);
        b.push_response(&rsp(0)).unwrap();
        let _ = b.push_responses_and_check_notify();
        f.poll_response().unwrap().unwrap();
        f.push_request(&req(32)).unwrap();
        let _ = f.push_requests_and_check_notify();
        assert_eq!(b.poll_request().unwrap().unwrap().id, 32);
    }

    /// Row 3: the backend rewrites a response slot after the frontend copied it:
    /// the frontend's value is its private copy, and the slot is never read again.
    #[test]
    fn response_slot_is_copied_once() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        let mut b = BlkBack::attach(m).unwrap();
        f.push_request(&req(1)).unwrap();
        f.push_request(&req(2)).unwrap();
        let _ = f.push_requests_and_check_notify();
        b.poll_request().unwrap().unwrap();
        b.poll_request().unwrap().unwrap();
        b.push_response(&rsp(1)).unwrap();
        b.push_response(&rsp(2)).unwrap();
        let _ = b.push_responses_and_check_notify();

        let got = f.poll_response().unwrap().unwrap();
        // Hostile backend flips the slot it just handed over.
        let slot0 = layout::HEADER_SIZE;
        m.fill(slot0, BlkFront::SLOT_SIZE, 0xFF);
        assert_eq!(got.id, 1);
        assert_eq!(got.status, blkif::RSP_OKAY);
        // The next poll reads slot 1, not slot 0 again.
        assert_eq!(f.poll_response().unwrap().unwrap().id, 2);
        assert_eq!(f.poll_response().unwrap(), None);
    }

    /// Requests are never read back: the backend rewriting a request slot after
    /// publication does not change what the frontend does (docs/hostile-input.md R5).
    #[test]
    fn request_slots_are_never_read_back() {
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init(m).unwrap();
        f.push_request(&req(7)).unwrap();
        let _ = f.push_requests_and_check_notify();
        m.fill(layout::HEADER_SIZE, 112, 0xEE);
        // Frontend state only depends on its private indices.
        assert_eq!(f.outstanding(), 1);
        assert_eq!(f.req_prod_pvt(), 1);
    }

    /// Frontend and backend on two threads. Besides checking every response, this
    /// lets Miri's data-race detector check that the index acquire/release
    /// ordering alone makes the (non-atomic, volatile) slot copies race-free.
    #[test]
    fn two_threads_stream_through_the_ring() {
        let total: u64 = if cfg!(miri) { 150 } else { 20_000 };
        let spins_max: u64 = 100_000_000;
        let p = Pages::new(1);
        let m = p.mem();
        let mut f = BlkFront::init_at(m, u32::MAX - 50).unwrap();
        let mut b = BlkBack::attach_at(m, u32::MAX - 50).unwrap();
        std::thread::scope(|sc| {
            sc.spawn(move || {
                let mut served = 0;
                let mut spins = 0u64;
                while served < total {
                    match b.poll_request().unwrap() {
                        Some(r) => {
                            assert_eq!(r.sector_number, r.id * 8);
                            b.push_response(&rsp(r.id)).unwrap();
                            let _ = b.push_responses_and_check_notify();
                            served += 1;
                        }
                        None => {
                            spins += 1;
                            assert!(spins < spins_max, "backend starved");
                            std::thread::yield_now();
                        }
                    }
                }
            });
            let (mut sent, mut got, mut spins) = (0u64, 0u64, 0u64);
            while got < total {
                while sent < total && f.free_slots() > 0 {
                    f.push_request(&req(sent)).unwrap();
                    sent += 1;
                }
                let _ = f.push_requests_and_check_notify();
                match f.poll_response().unwrap() {
                    Some(r) => {
                        assert_eq!(r.id, got);
                        got += 1;
                    }
                    None => {
                        spins += 1;
                        assert!(spins < spins_max, "frontend starved");
                        std::thread::yield_now();
                    }
                }
            }
        });
        drop(p);
    }

    /// Tests written for mutants cargo-mutants found missed (docs/mutants.md): each
    /// fails on the mutant named in its comment.
    mod mutants {
        use super::*;
        use std::format;

        /// Every `RingError` names its values (mutant: `Display::fmt` -> `Ok(())`).
        #[test]
        fn ring_errors_display_their_values() {
            let cases = [
                (
                    RingError::BadLength(100),
                    "ring memory of 100 bytes is not usable",
                ),
                (RingError::Full, "ring full"),
                (
                    RingError::ProducerOverrun { prod: 40, cons: 3 },
                    "peer producer index 40 overruns consumer 3",
                ),
                (
                    RingError::ProducerWentBackwards { prev: 9, now: 7 },
                    "peer producer index went backwards from 9 to 7",
                ),
                (RingError::NoRequestToAnswer, "response without a request"),
            ];
            for (e, text) in cases {
                assert_eq!(format!("{e}"), text);
            }
        }

        /// The index accessors of both ends follow pushes and polls (mutants:
        /// `req_prod_pvt`, `outstanding`, `req_cons`, `rsp_prod_pvt` -> 0 or 1).
        #[test]
        fn index_accessors_follow_the_traffic() {
            let p = Pages::new(1);
            let mut f = BlkFront::init_at(p.mem(), 7).unwrap();
            let mut b = BlkBack::attach_at(p.mem(), 7).unwrap();
            for i in 0..3 {
                f.push_request(&req(i)).unwrap();
            }
            assert_eq!(
                (f.req_prod_pvt(), f.rsp_cons(), f.outstanding()),
                (10, 7, 3)
            );
            assert_eq!(f.free_slots(), 29);
            let _ = f.push_requests_and_check_notify();
            b.poll_request().unwrap().unwrap();
            b.poll_request().unwrap().unwrap();
            assert_eq!((b.req_cons(), b.rsp_prod_pvt()), (9, 7));
            b.push_response(&rsp(0)).unwrap();
            assert_eq!((b.req_cons(), b.rsp_prod_pvt()), (9, 8));
            let _ = b.push_responses_and_check_notify();
            f.poll_response().unwrap().unwrap();
            assert_eq!(
                (f.req_prod_pvt(), f.rsp_cons(), f.outstanding()),
                (10, 8, 2)
            );
        }

        /// Both ends report the error that broke them, and only then (mutants:
        /// `BackRing::broken` -> `None`, `FrontRing::broken` -> `None`).
        #[test]
        fn broken_reports_the_sticky_error() {
            let p = Pages::new(1);
            let m = p.mem();
            let mut f = BlkFront::init(m).unwrap();
            let mut b = BlkBack::attach(m).unwrap();
            assert_eq!((f.broken(), b.broken()), (None, None));
            m.store_u32(layout::REQ_PROD, 33);
            let e = RingError::ProducerOverrun { prod: 33, cons: 0 };
            assert_eq!(b.poll_request(), Err(e));
            assert_eq!(b.broken(), Some(e));
            m.store_u32(layout::RSP_PROD, 1);
            let e = RingError::ProducerOverrun { prod: 1, cons: 0 };
            assert_eq!(f.poll_response(), Err(e));
            assert_eq!(f.broken(), Some(e));
        }

        /// `Debug` of both ends shows their indices (mutants: `Debug::fmt` -> `Ok(())`).
        #[test]
        fn ring_debug_shows_indices() {
            let p = Pages::new(1);
            let mut f = BlkFront::init_at(p.mem(), 7).unwrap();
            f.push_request(&req(1)).unwrap();
            assert_eq!(
                format!("{f:?}"),
                "FrontRing { size: 32, req_prod_pvt: 8, rsp_cons: 7, broken: None }"
            );
            let b = BlkBack::attach_at(p.mem(), 7).unwrap();
            assert_eq!(
                format!("{b:?}"),
                "BackRing { size: 32, rsp_prod_pvt: 7, req_cons: 7, broken: None }"
            );
        }
    }

    /// Read audit of both ends (feature `read-audit`): row 3 / R4 (each slot the
    /// peer produced is copied out once, whole, in order, after its index), R5
    /// (our own slots are never read back) and the `io/ring.h` index order.
    #[cfg(feature = "read-audit")]
    mod read_audit {
        use super::*;
        use crate::audit::{self, check_back_ring, check_front_ring, Access, Op};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

        /// Runs `rounds` batches through a ring starting at `start`; only the
        /// `front` (or back) end's accesses are recorded.
        fn traffic(start: u32, rounds: u64, front_side: bool) -> (Vec<Access>, Pages) {
            let p = Pages::new(1);
            let m = p.mem();
            let mut f = BlkFront::init_at(m, start).unwrap();
            let mut b = BlkBack::attach_at(m, start).unwrap();
            macro_rules! front {
                ($e:expr) => {
                    if front_side {
                        $e
                    } else {
                        audit::paused(|| $e)
                    }
                };
            }
            macro_rules! back {
                ($e:expr) => {
                    if front_side {
                        audit::paused(|| $e)
                    } else {
                        $e
                    }
                };
            }
            audit::start();
            let mut next = 0u64;
            for round in 0..rounds {
                let n = 1 + round % 32;
                for _ in 0..n {
                    front!(f.push_request(&req(next)).unwrap());
                    next += 1;
                }
                let _ = front!(f.push_requests_and_check_notify());
                // The backend answers in two bursts, re-arming in between.
                let mut served = 0;
                while let Some(r) = back!(b.poll_request().unwrap()) {
                    back!(b.push_response(&rsp(r.id)).unwrap());
                    served += 1;
                    if served == n / 2 {
                        let _ = back!(b.push_responses_and_check_notify());
                    }
                }
                let _ = back!(b.push_responses_and_check_notify());
                assert!(!back!(b.final_check_for_requests().unwrap()));
                let mut got = 0;
                while let Some(r) = front!(f.poll_response().unwrap()) {
                    assert_eq!(r.status, blkif::RSP_OKAY);
                    got += 1;
                }
                assert_eq!(got, n);
                let batch = (round % 4) as u32;
                assert!(!front!(f.final_check_for_responses_batched(batch).unwrap()));
            }
            (audit::take(), p)
        }

        fn total(rounds: u64) -> u32 {
            (0..rounds).map(|r| 1 + r % 32).sum::<u64>() as u32
        }

        #[test]
        fn front_reads_each_response_once_and_follows_ring_h() {
            for start in [0, u32::MAX - 40] {
                let (log, p) = traffic(start, 40, true);
                let m = p.mem();
                let sum =
                    check_front_ring::<blkif::Request, blkif::Response>(&log, &m, start, start)
                        .unwrap_or_else(|v| panic!("{v}"));
                assert_eq!(sum.consumed, total(40));
                assert_eq!((sum.written, sum.published), (total(40), total(40)));
                assert_eq!(sum.event_loads, 40, "one notify check per publication");
                // Each batch: one load that shows it, one that finds nothing more,
                // one after re-arming.
                assert!(sum.prod_loads >= 40 * 2, "{sum:?}");
                // Nothing in the log reads a slot twice.
                let reads = log.iter().filter(|a| a.op == Op::Read).count();
                assert_eq!(reads as u32, total(40));
            }
        }

        #[test]
        fn back_reads_each_request_once_and_follows_ring_h() {
            for start in [0, u32::MAX - 40] {
                let (log, p) = traffic(start, 40, false);
                let m = p.mem();
                let sum =
                    check_back_ring::<blkif::Request, blkif::Response>(&log, &m, start, start)
                        .unwrap_or_else(|v| panic!("{v}"));
                assert_eq!((sum.consumed, sum.written), (total(40), total(40)));
                assert_eq!(sum.published, total(40));
            }
        }

        /// The checker itself catches what it is there for (else the tests above
        /// would prove nothing): a consumed slot read again, a published request
        /// read back, a slot read before its response was published, a response
        /// read in two pieces, our own producer index loaded.
        #[test]
        fn audit_catches_double_reads_and_read_backs() {
            #[derive(Debug, Clone, Copy)]
            enum Bad {
                Again,
                RequestReadBack,
                Early,
                Piecewise,
                OwnIndex,
            }
            use Bad::*;
            for bad in [Again, RequestReadBack, Early, Piecewise, OwnIndex, Again] {
                let p = Pages::new(1);
                let m = p.mem();
                let mut f = BlkFront::init(m).unwrap();
                let mut b = BlkBack::attach(m).unwrap();
                f.push_request(&req(1)).unwrap();
                let _ = f.push_requests_and_check_notify();
                b.poll_request().unwrap().unwrap();
                b.push_response(&rsp(1)).unwrap();
                let _ = b.push_responses_and_check_notify();
                let slot = layout::HEADER_SIZE;
                audit::start();
                match bad {
                    Again => {
                        f.poll_response().unwrap().unwrap();
                        let _: blkif::Response = m.read_obj(slot);
                    }
                    RequestReadBack => {
                        f.poll_response().unwrap().unwrap();
                        f.push_request(&req(2)).unwrap();
                        let _ = f.push_requests_and_check_notify();
                        let _: blkif::Request = m.read_obj(slot + 112);
                    }
                    Early => {
                        let _: blkif::Response = m.read_obj(slot);
                        f.poll_response().unwrap().unwrap();
                    }
                    Piecewise => {
                        let _ = f.unconsumed_responses().unwrap();
                        let _ = m.load_u64(slot);
                        let _ = m.load_u64(slot + 8);
                    }
                    OwnIndex => {
                        let _ = m.load_u32(layout::REQ_PROD);
                        f.poll_response().unwrap().unwrap();
                    }
                }
                let log = audit::take();
                let r = check_front_ring::<blkif::Request, blkif::Response>(&log, &m, 0, 1);
                assert!(r.is_err(), "{bad:?} not caught");
            }
            // The same steps without the extra access pass.
            let p = Pages::new(1);
            let m = p.mem();
            let mut f = BlkFront::init(m).unwrap();
            let mut b = BlkBack::attach(m).unwrap();
            f.push_request(&req(1)).unwrap();
            let _ = f.push_requests_and_check_notify();
            b.poll_request().unwrap().unwrap();
            b.push_response(&rsp(1)).unwrap();
            let _ = b.push_responses_and_check_notify();
            audit::start();
            f.poll_response().unwrap().unwrap();
            f.push_request(&req(2)).unwrap();
            let _ = f.push_requests_and_check_notify();
            let log = audit::take();
            let sum = check_front_ring::<blkif::Request, blkif::Response>(&log, &m, 0, 1).unwrap();
            assert_eq!((sum.consumed, sum.written, sum.published), (1, 1, 1));
        }

        /// Row 3 / R4 with a flipper thread: while the frontend polls, another thread
        /// keeps rewriting the published response slot between two values. The
        /// frontend copies it once (the audit shows one read of the slot while the
        /// flipper runs), returns that private copy (every byte from one of the two
        /// values), and the copy no longer changes; the slot is never read again.
        /// (Not under Miri: the flipper races with the copy by design, which Miri
        /// reports as the data race it is; the two-thread test above covers Miri.)
        #[test]
        #[cfg_attr(miri, ignore)]
        fn flipper_cannot_change_a_consumed_response() {
            let a = blkif::Response {
                id: 0x1111_1111_1111_1111,
                operation: 1,
                _pad: 0,
                status: 0,
                _pad2: 0,
            };
            let b_ = blkif::Response {
                id: 0xEEEE_EEEE_EEEE_EEEE,
                operation: 0xEE,
                _pad: 0xEE,
                status: -0x1112,
                _pad2: 0xEEEE_EEEE,
            };
            let (ab, bb) = (a.as_bytes().to_vec(), b_.as_bytes().to_vec());
            for round in 0..200u32 {
                let p = Pages::new(1);
                let m = p.mem();
                let mut f = BlkFront::init_at(m, round).unwrap();
                let mut b = BlkBack::attach_at(m, round).unwrap();
                f.push_request(&req(1)).unwrap();
                let _ = f.push_requests_and_check_notify();
                b.poll_request().unwrap().unwrap();
                b.push_response(&a).unwrap();
                let _ = b.push_responses_and_check_notify();
                let slot = f.slot_offset(round);
                let stop = AtomicBool::new(false);
                let flipper_gone = AtomicBool::new(false);
                let flips = AtomicU64::new(0);
                // Sets its flag when dropped, also while unwinding: a panic on
                // either side then ends the other side's loop instead of leaving
                // the scope waiting forever (the test fails, it never hangs).
                struct SetOnDrop<'a>(&'a AtomicBool);
                impl Drop for SetOnDrop<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Relaxed);
                    }
                }
                // Waits for `n` flips; panics if the flipper has stopped.
                let wait_flips = |n: u64| loop {
                    if flips.load(Ordering::Relaxed) >= n {
                        break;
                    }
                    assert!(
                        !flipper_gone.load(Ordering::Relaxed),
                        "round {round}: the flipper thread stopped"
                    );
                    std::hint::spin_loop();
                };
                let (got, log) = std::thread::scope(|sc| {
                    sc.spawn(|| {
                        let _gone = SetOnDrop(&flipper_gone);
                        let mut k = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            m.write_obj(slot, if k.is_multiple_of(2) { &b_ } else { &a });
                            k += 1;
                            flips.store(k, Ordering::Relaxed);
                        }
                    });
                    let _stop = SetOnDrop(&stop);
                    wait_flips(2);
                    audit::start();
                    let got = f.poll_response().unwrap().unwrap();
                    let start = flips.load(Ordering::Relaxed);
                    // Keep flipping; the copy and the ring state must not move.
                    while flips.load(Ordering::Relaxed) < start + 50 {
                        assert_eq!(f.poll_response().unwrap(), None);
                        assert!(
                            !flipper_gone.load(Ordering::Relaxed),
                            "round {round}: the flipper thread stopped"
                        );
                    }
                    let log = audit::take();
                    (got, log)
                });
                // A torn copy is possible (a copy is not atomic); what matters is
                // that only the one copy is used.
                let gb = got.as_bytes();
                for i in 0..gb.len() {
                    assert!(
                        gb[i] == ab[i] || gb[i] == bb[i],
                        "byte {i} from neither value"
                    );
                }
                let slot_reads: Vec<_> = log
                    .iter()
                    .filter(|x| {
                        x.reads() && x.offset_in(&m).is_some_and(|o| o >= layout::HEADER_SIZE)
                    })
                    .collect();
                assert_eq!(slot_reads.len(), 1, "round {round}: {slot_reads:?}");
                check_front_ring::<blkif::Request, blkif::Response>(&log, &m, round, round + 1)
                    .unwrap_or_else(|v| panic!("round {round}: {v}"));
            }
        }
    }
}
