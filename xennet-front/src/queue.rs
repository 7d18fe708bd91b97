//! One queue's data path: a tx ring and an rx ring, their buffer pages and grants.
//!
//! ```text
//!  tx: send() copies the frame into pool pages (one slot per page, offset 0, so a
//!      slot never crosses a page), grants each page read-only, pushes requests
//!      [first(size=total) | gso extra | more...]; reclaim() ends each grant on its
//!      response and returns page and id.
//!  rx: refill() grants pool pages writable and posts them at ring index i (buffer
//!      kept by slot i & 255: responses come back in the slot of their request);
//!      next_frame() consumes responses, ends grants, validates, assembles a chain,
//!      copies it to the caller's buffer once complete, and recycles the pages.
//! ```
//!
//! Every response is copied out of the ring once (by [`FrontRing`]) and validated
//! before use; a page is reused only after its grant was ended successfully.

use core::ptr::NonNull;
use hypercall::abi::netif::{
    self, ExtraInfo, RxFlags, RxRequest, RxResponse, TxFlags, TxRequest, TxResponse,
    EXTRA_FLAG_MORE, EXTRA_TYPE_GSO, EXTRA_TYPE_MAX, EXTRA_TYPE_NONE, GSO_TYPE_TCPV4,
    GSO_TYPE_TCPV6,
};
use hypercall::gnttab::{self, GrantTable};
use hypercall::ring::FrontRing;
use hypercall::{DomId, Gfn, GrantRef, Platform, Port, SharedMem, SharedPages, PAGE_SIZE};

use crate::csum::{self, FrameBytes, L4};
use crate::error::{Broken, Error};
use crate::features::{MAX_FRAME, RING_SIZE};

const MASK: u32 = RING_SIZE as u32 - 1;
const NO_PAGE: u16 = u16::MAX;

/// Most data slots one tx frame uses (65535 bytes in whole pages).
pub(crate) const MAX_TX_DATA_SLOTS: usize = MAX_FRAME.div_ceil(PAGE_SIZE);
/// Most data slots of one rx frame we accept (`XEN_NETIF_NR_SLOTS_MIN` + 1).
pub(crate) const MAX_RX_FRAGS: usize = netif::NR_SLOTS_MIN + 1;
/// A frame may use the extra slot of [`MAX_RX_FRAGS`] only when its first slot holds
/// at most this many bytes (Linux netfront's `RX_COPY_THRESHOLD` rule: the backend
/// spends one more slot only on a frame whose head was copied small).
pub(crate) const RX_COPY_THRESHOLD: i16 = 256;
/// Most extra-info slots of one rx frame (one per known type).
const MAX_RX_EXTRAS: usize = EXTRA_TYPE_MAX as usize - 1;

/// Buffer pages owned by one direction of a queue.
pub(crate) struct Pool {
    mem: SharedPages,
    gfns: [u64; RING_SIZE],
    count: usize,
    free: [u16; RING_SIZE],
    nfree: usize,
    /// Pages lost to grants the backend never released.
    pub quarantined: usize,
}

impl Pool {
    /// No pages yet.
    const fn detached() -> Pool {
        Pool {
            mem: SharedPages::empty(),
            gfns: [0; RING_SIZE],
            count: 0,
            free: [0; RING_SIZE],
            nfree: 0,
            quarantined: 0,
        }
    }

    /// Allocates `count` pages (in place).
    fn allocate<P: Platform + ?Sized>(&mut self, p: &P, count: usize) -> Result<(), Error> {
        let count = count.clamp(1, RING_SIZE);
        let mem = SharedPages::alloc(p, count).ok_or(Error::NoMemory)?;
        // The previous allocation, if any, was released (or is quarantined and
        // deliberately leaked: a dropped `SharedPages` is never freed).
        self.mem = mem;
        self.count = count;
        self.nfree = 0;
        self.quarantined = 0;
        for (i, (g, f)) in self
            .gfns
            .iter_mut()
            .zip(self.free.iter_mut())
            .take(count)
            .enumerate()
        {
            *g = self.mem.page_gfn(p, i).ok_or(Error::NoGfn)?.0;
            *f = i as u16;
        }
        self.nfree = count;
        Ok(())
    }

    #[inline]
    pub(crate) fn free_pages(&self) -> usize {
        self.nfree
    }

    #[inline]
    fn take(&mut self) -> Option<u16> {
        self.nfree = self.nfree.checked_sub(1)?;
        self.free.get(self.nfree).copied()
    }

    #[inline]
    fn put(&mut self, page: u16) {
        if usize::from(page) < self.count {
            if let Some(slot) = self.free.get_mut(self.nfree) {
                *slot = page;
                self.nfree += 1;
            }
        }
    }

    #[inline]
    fn page(&self, i: u16) -> Option<SharedMem<'_>> {
        self.mem.mem().sub(usize::from(i) * PAGE_SIZE, PAGE_SIZE)
    }

    #[inline]
    fn gfn(&self, i: u16) -> Gfn {
        Gfn(self.gfns.get(usize::from(i)).copied().unwrap_or(0))
    }
}

/// A one-page shared ring's frame and grant (the page itself is owned by the
/// ring: `FrontRing<_, _, SharedPages>`).
pub(crate) struct RingPage {
    pub gfn: Gfn,
    pub gref: Option<GrantRef>,
}

impl RingPage {
    const fn detached() -> RingPage {
        RingPage {
            gfn: Gfn(0),
            gref: None,
        }
    }

    /// Allocates the ring's page; returns it with its frame.
    pub(crate) fn new<P: Platform + ?Sized>(p: &P) -> Result<(RingPage, SharedPages), Error> {
        let mem = SharedPages::alloc(p, 1).ok_or(Error::NoMemory)?;
        let gfn = mem.page_gfn(p, 0).ok_or(Error::NoGfn)?;
        Ok((RingPage { gfn, gref: None }, mem))
    }

    fn grant<const N: usize>(&mut self, g: &GrantTable<N>, be: DomId) -> Result<GrantRef, Error> {
        let r = g.grant_access(be, self.gfn, false)?;
        self.gref = Some(r);
        Ok(r)
    }

    /// The ring's page for a new connection: `mem` (the page itself) once its
    /// old grant could be ended, or else a fresh page. A page the backend still
    /// maps (its grant kept by a teardown, XSA-396) is never written, reused nor
    /// freed: it is dropped here, leaked with its grant.
    fn reclaim<P: Platform + ?Sized, const N: usize>(
        &mut self,
        p: &P,
        g: &GrantTable<N>,
        mem: SharedPages,
    ) -> Result<SharedPages, Error> {
        if self.end(g) {
            return Ok(mem);
        }
        let (page, fresh) = RingPage::new(p)?;
        *self = page;
        Ok(fresh)
    }

    /// Ends the ring's grant; `false` if the backend still maps it (the page then
    /// stays out of reuse: we keep the grant and never touch the page again).
    fn end<const N: usize>(&mut self, g: &GrantTable<N>) -> bool {
        match self.gref {
            Some(r) => match g.end_access(r) {
                Err(gnttab::Error::StillMapped(_)) => false,
                _ => {
                    self.gref = None;
                    true
                }
            },
            None => true,
        }
    }
}

/// Per-frame tx options.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TxMeta {
    /// The TCP/UDP checksum is not filled in (`NETTXF_csum_blank`). If the backend
    /// cannot take such frames the frontend computes the checksum itself.
    pub csum_blank: bool,
    /// The data is known good (`NETTXF_data_validated`).
    pub data_validated: bool,
    /// Send as one large TCP frame to be segmented with this MSS (GSO). Needs the
    /// negotiated `feature-gso-tcpv4/6`; implies `csum_blank`.
    pub gso_mss: Option<u16>,
}

#[derive(Copy, Clone)]
struct TxEntry {
    pending: bool,
    gref: GrantRef,
    page: u16,
}

/// What a tx reclaim pass saw.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct TxDone {
    pub completed: u64,
    pub errors: u64,
    pub dropped: u64,
}

pub(crate) struct TxQueue {
    pub ring: FrontRing<TxRequest, TxResponse, SharedPages>,
    pub page: RingPage,
    entries: [TxEntry; RING_SIZE],
    free_ids: [u16; RING_SIZE],
    nfree_ids: usize,
    pub pool: Pool,
}

/// How a tx frame's checksum is handled.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum TxCsum {
    /// Pass the caller's flags through.
    AsIs,
    /// Compute it here (offload asked but not negotiated).
    Software(L4),
}

/// What the backend is told (and what is done here) about a tx frame's
/// checksum and segmentation: [`TxQueue::send`]'s offload settings, worked out
/// by the device from the caller's `TxMeta` and what was negotiated.
#[derive(Copy, Clone, Debug)]
pub(crate) struct TxOffload {
    /// The first slot's flags: only `CSUM_BLANK` and `DATA_VALIDATED` (the
    /// device sets nothing else); `MORE_DATA` and `EXTRA_INFO` are `send`'s to
    /// set.
    pub flags: TxFlags,
    /// The GSO extra-info slot, if the frame is to be segmented by the backend.
    pub gso: Option<ExtraInfo>,
    /// Whether the checksum is filled in here first.
    pub csum: TxCsum,
}

impl TxQueue {
    const fn detached() -> TxQueue {
        TxQueue {
            ring: FrontRing::detached(),
            page: RingPage::detached(),
            entries: [TxEntry {
                pending: false,
                gref: GrantRef(0),
                page: NO_PAGE,
            }; RING_SIZE],
            free_ids: [0; RING_SIZE],
            nfree_ids: 0,
            pool: Pool::detached(),
        }
    }

    /// Allocates the ring page and `buffers` buffer pages (in place).
    fn allocate<P: Platform + ?Sized>(&mut self, p: &P, buffers: usize) -> Result<(), Error> {
        let (page, mem) = RingPage::new(p)?;
        self.page = page;
        self.ring = FrontRing::init(mem).map_err(|_| Error::NoMemory)?;
        for (i, f) in self.free_ids.iter_mut().enumerate() {
            *f = i as u16;
        }
        self.nfree_ids = RING_SIZE;
        for e in self.entries.iter_mut() {
            e.pending = false;
            e.page = NO_PAGE;
        }
        self.pool.allocate(p, buffers)
    }

    /// Fresh ring (at index `start`) and grant, for a (re)connect. All ids free.
    /// A ring page the backend still maps is left alone for good and replaced
    /// (see [`RingPage::reclaim`]).
    pub(crate) fn attach<P: Platform + ?Sized, const N: usize>(
        &mut self,
        p: &P,
        g: &GrantTable<N>,
        be: DomId,
        start: u32,
    ) -> Result<GrantRef, Error> {
        let old = core::mem::replace(&mut self.ring, FrontRing::detached()).into_region();
        let mem = self.page.reclaim(p, g, old)?;
        self.ring = FrontRing::init_at(mem, start).map_err(|_| Error::NoMemory)?;
        self.page.grant(g, be)
    }

    pub(crate) fn in_flight(&self) -> usize {
        RING_SIZE - self.nfree_ids
    }

    /// Slots a frame of `len` bytes needs (data, extras).
    #[inline]
    pub(crate) fn slots_for(len: usize, gso: bool) -> (usize, usize) {
        (len.div_ceil(PAGE_SIZE).max(1), usize::from(gso))
    }

    #[inline]
    pub(crate) fn has_room(&self, data: usize, extra: usize) -> bool {
        self.ring.free_slots() as usize >= data + extra
            && self.nfree_ids >= data
            && self.pool.free_pages() >= data
    }

    #[inline]
    fn take_id(&mut self) -> Option<u16> {
        self.nfree_ids = self.nfree_ids.checked_sub(1)?;
        self.free_ids.get(self.nfree_ids).copied()
    }

    #[inline]
    fn put_id(&mut self, id: u16) {
        if let Some(slot) = self.free_ids.get_mut(self.nfree_ids) {
            *slot = id;
            self.nfree_ids += 1;
        }
    }

    /// [`TxQueue::send`] for a frame in one slot without extras (most frames):
    /// the same steps (copy, checksum, then grant, request and publish through
    /// [`TxQueue::send_page`]) without the per-slot arrays and loops. Room was
    /// checked by the caller.
    fn send_one<F: FrameBytes + ?Sized, const N: usize>(
        &mut self,
        g: &GrantTable<N>,
        be: DomId,
        frame: &F,
        flags: TxFlags,
        csum: TxCsum,
        total: usize,
    ) -> Result<bool, Error> {
        let Some(page) = self.pool.take() else {
            return Err(Error::Busy);
        };
        if let Some(mem) = self.pool.page(page) {
            let mut pos = 0usize;
            frame.chunks(0, total, &mut |c| {
                mem.write(pos, c);
                pos += c.len();
            });
            if let TxCsum::Software(l4) = csum {
                // `csum::locate` put the field inside the frame (`field + 2 <=
                // start + len <= total`), and the frame fits this one page.
                mem.write(l4.field, &csum::compute(frame, &l4).to_be_bytes());
            }
        }
        // `flags` holds only `CSUM_BLANK`/`DATA_VALIDATED` ([`TxOffload`]): one
        // slot and no extras is what it already says. Granting and publishing
        // the written page is `send_page`'s job.
        self.send_page(g, be, page, total, flags)
    }

    /// Copies `frame` into tx pages, grants them and pushes the requests. Returns
    /// whether the backend wants a notification. `Err(Busy)` leaves nothing behind.
    pub(crate) fn send<F: FrameBytes + ?Sized, const N: usize>(
        &mut self,
        g: &GrantTable<N>,
        be: DomId,
        frame: &F,
        offload: TxOffload,
    ) -> Result<bool, Error> {
        let TxOffload {
            mut flags,
            gso,
            csum,
        } = offload;
        let total = frame.len();
        let (data, extra) = Self::slots_for(total, gso.is_some());
        // `data <= MAX_TX_DATA_SLOTS` follows (MAX_TX_DATA_SLOTS is MAX_FRAME in
        // pages): the request arrays below hold every slot.
        if total > MAX_FRAME {
            return Err(Error::FrameTooLarge {
                len: total,
                max: MAX_FRAME,
            });
        }
        if !self.has_room(data, extra) {
            return Err(Error::Busy);
        }
        if data == 1 && gso.is_none() {
            return self.send_one(g, be, frame, flags, csum, total);
        }
        // Private copies of the requests; the ring only ever gets written.
        let mut reqs = [TxRequest::default(); MAX_TX_DATA_SLOTS];
        let mut used = [(0u16, 0u16); MAX_TX_DATA_SLOTS]; // (id, page)
        let mut n = 0usize;
        let mut fail = None;
        for (k, req) in reqs.iter_mut().enumerate().take(data) {
            let (Some(page), Some(id)) = (self.pool.take(), self.take_id()) else {
                fail = Some(Error::Busy);
                break;
            };
            let off = k * PAGE_SIZE;
            let len = (total - off).min(PAGE_SIZE);
            if let Some(mem) = self.pool.page(page) {
                let mut pos = 0usize;
                frame.chunks(off, len, &mut |c| {
                    mem.write(pos, c);
                    pos += c.len();
                });
            }
            match g.grant_access(be, self.pool.gfn(page), true) {
                Ok(gref) => {
                    if let Some(u) = used.get_mut(n) {
                        *u = (id, page);
                    }
                    if let Some(e) = self.entries.get_mut(usize::from(id)) {
                        *e = TxEntry {
                            pending: false,
                            gref,
                            page,
                        };
                    }
                    *req = TxRequest {
                        gref: gref.0,
                        offset: 0,
                        flags: 0,
                        id,
                        size: len as u16,
                    };
                    n += 1;
                }
                Err(e) => {
                    self.pool.put(page);
                    self.put_id(id);
                    fail = Some(e.into());
                    break;
                }
            }
        }
        if let Some(e) = fail {
            // Roll back: nothing was published.
            for &(id, page) in used.iter().take(n) {
                if let Some(ent) = self.entries.get(usize::from(id)).copied() {
                    let _ = g.end_access(ent.gref);
                }
                self.pool.put(page);
                self.put_id(id);
            }
            return Err(e);
        }
        if let TxCsum::Software(l4) = csum {
            let c = csum::compute(frame, &l4).to_be_bytes();
            for (i, b) in c.iter().enumerate() {
                let at = l4.field + i;
                if let Some(&(_, page)) = used.get(at / PAGE_SIZE) {
                    if let Some(mem) = self.pool.page(page) {
                        mem.write(at % PAGE_SIZE, core::slice::from_ref(b));
                    }
                }
            }
        }
        // First slot: whole-frame size and the frame's flags.
        flags.set(TxFlags::MORE_DATA, data > 1);
        flags.set(TxFlags::EXTRA_INFO, gso.is_some());
        reqs[0].flags = flags.bits();
        reqs[0].size = total as u16;
        for r in reqs.iter_mut().take(data).skip(1) {
            r.flags = TxFlags::MORE_DATA.bits();
        }
        if let Some(r) = reqs.get_mut(data - 1).filter(|_| data > 1) {
            r.flags = 0;
        }
        // Mark in flight just before publishing (as Linux' xennet_mark_tx_pending).
        for &(id, _) in used.iter().take(n) {
            if let Some(e) = self.entries.get_mut(usize::from(id)) {
                e.pending = true;
            }
        }
        for (k, r) in reqs.iter().take(data).enumerate() {
            // Room was checked above; a broken ring is reported by reclaim.
            let _ = self.ring.push_request(r);
            if k == 0 {
                if let Some(x) = gso {
                    let _ = self.ring.push_request(&TxRequest::from(x));
                }
            }
        }
        Ok(self.ring.push_requests_and_check_notify())
    }

    /// A free buffer page for a one-slot frame to be written in place
    /// ([`TxQueue::send_page`] or [`TxQueue::put_page`] next): its index, address
    /// and length. A raw address, not a region: the caller writes the frame
    /// through it while it holds the device (see `NetFront::send_with`), and the
    /// page stays allocated until the device is dropped. `None` without room for
    /// one more frame.
    pub(crate) fn take_page(&mut self) -> Option<(u16, NonNull<u8>, usize)> {
        if !self.has_room(1, 0) {
            return None;
        }
        let page = self.pool.take()?;
        match self.pool.page(page) {
            Some(mem) => Some((page, mem.as_non_null(), mem.len())),
            None => {
                self.pool.put(page);
                None
            }
        }
    }

    /// Gives back a page from [`TxQueue::take_page`] unsent.
    pub(crate) fn put_page(&mut self, page: u16) {
        self.pool.put(page);
    }

    /// Grants a page from [`TxQueue::take_page`], which holds a frame of `len`
    /// bytes at offset 0, and publishes it as a one-slot frame. Returns whether
    /// the backend wants a notification. On an error the page is back in the pool.
    pub(crate) fn send_page<const N: usize>(
        &mut self,
        g: &GrantTable<N>,
        be: DomId,
        page: u16,
        len: usize,
        flags: TxFlags,
    ) -> Result<bool, Error> {
        let Some(id) = self.take_id() else {
            self.pool.put(page);
            return Err(Error::Busy);
        };
        let gref = match g.grant_access(be, self.pool.gfn(page), true) {
            Ok(r) => r,
            Err(e) => {
                self.pool.put(page);
                self.put_id(id);
                return Err(e.into());
            }
        };
        if let Some(e) = self.entries.get_mut(usize::from(id)) {
            // In flight from here (as in `send`, just before publishing).
            *e = TxEntry {
                pending: true,
                gref,
                page,
            };
        }
        let req = TxRequest {
            gref: gref.0,
            offset: 0,
            flags: flags.bits(),
            id,
            size: len as u16,
        };
        // Room was checked by take_page; a broken ring is reported by reclaim.
        let _ = self.ring.push_request(&req);
        Ok(self.ring.push_requests_and_check_notify())
    }

    /// Consumes tx responses (at most one ring's worth), ending grants and freeing
    /// ids and pages. A protocol violation fails the device.
    pub(crate) fn reclaim<const N: usize>(
        &mut self,
        g: &GrantTable<N>,
        queue: usize,
    ) -> Result<TxDone, Broken> {
        let mut done = TxDone::default();
        for _ in 0..RING_SIZE {
            let rsp = match self.ring.poll_response() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(error) => {
                    return Err(Broken::Ring {
                        queue,
                        tx: true,
                        error,
                    })
                }
            };
            // Slot fillers for extra-info requests carry no id (netback leaves it).
            if rsp.status == netif::RSP_NULL {
                continue;
            }
            let id = rsp.id;
            let Some(entry) = self.entries.get_mut(usize::from(id)) else {
                return Err(Broken::TxIdOutOfRange { queue, id });
            };
            if !entry.pending {
                return Err(Broken::TxNotInFlight { queue, id });
            }
            entry.pending = false;
            let (gref, page) = (entry.gref, entry.page);
            entry.page = NO_PAGE;
            match g.end_access(gref) {
                Err(gnttab::Error::StillMapped(_)) => {
                    // Keep the page out of reuse for good; the id is free again.
                    self.pool.quarantined += 1;
                    self.put_id(id);
                    return Err(Broken::GrantStillMapped { queue, gref });
                }
                _ => self.pool.put(page),
            }
            self.put_id(id);
            match rsp.status {
                netif::RSP_OKAY => done.completed += 1,
                netif::RSP_DROPPED => done.dropped += 1,
                // RSP_ERROR and any unknown status: counted as an error (N3: we
                // pick "count" over "fail": the slot itself was accounted for).
                _ => done.errors += 1,
            }
        }
        Ok(done)
    }

    /// Ends every grant (ring and in-flight buffers); returns pages lost to grants
    /// the backend still maps. Afterwards all ids are free.
    pub(crate) fn teardown<const N: usize>(&mut self, g: &GrantTable<N>) -> usize {
        let mut lost = 0;
        for id in 0..RING_SIZE {
            let Some(e) = self.entries.get_mut(id) else {
                continue;
            };
            if e.page == NO_PAGE {
                continue;
            }
            let (gref, page) = (e.gref, e.page);
            e.pending = false;
            e.page = NO_PAGE;
            match g.end_access(gref) {
                Err(gnttab::Error::StillMapped(_)) => {
                    self.pool.quarantined += 1;
                    lost += 1;
                }
                _ => self.pool.put(page),
            }
            self.put_id(id as u16);
        }
        if !self.page.end(g) {
            lost += 1;
        }
        lost
    }
}

/// Why an rx frame was dropped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RxFault {
    /// Negative status (`NETIF_RSP_*` or unknown) (row 18).
    BadStatus(i16),
    /// `offset + status` past the page (row 18).
    PastPage {
        /// The offset.
        offset: u16,
        /// The length.
        len: u16,
    },
    /// More slots than a frame may use (row 19).
    TooManySlots,
    /// Over 65535 bytes (row 19).
    TooLong,
    /// Extra-info of type 0 or unknown (row 20).
    BadExtraType(u8),
    /// More extra-info slots than there are types (row 20).
    TooManyExtras,
    /// GSO extra with size 0 (row 20).
    GsoSizeZero,
    /// GSO extra with an unknown GSO type (row 20).
    BadGsoType(u8),
    /// Shorter than an Ethernet header (`len` bytes).
    TooShort(usize),
    /// The frame does not fit the caller's buffer (not the backend's fault).
    BufferTooSmall(usize),
    /// Longer than the MTU allows (`mtu` + 14 bytes of Ethernet header + 4 of a VLAN
    /// tag) and no GSO extra says it is a large segment to split
    /// (docs/hostile-input.md N8). Dropped and counted, not a protocol error (a
    /// bridge may carry frames of a larger MTU).
    OverMtu {
        /// The frame's length.
        len: usize,
        /// The longest frame the MTU allows.
        max: usize,
    },
}

impl RxFault {
    /// Whether the backend broke the protocol (counts towards failing the device).
    pub fn is_protocol_error(&self) -> bool {
        !matches!(self, RxFault::BufferTooSmall(_) | RxFault::OverMtu { .. })
    }
}

/// A received frame's metadata.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// Frame length (bytes written to the caller's buffer).
    pub len: usize,
    /// `NETRXF_data_validated`: the backend vouches for the checksum.
    pub data_validated: bool,
    /// `NETRXF_csum_blank` as received (the checksum was blank; if the device
    /// completed it, `csum_completed` is set).
    pub csum_blank: bool,
    /// The frontend computed the blank checksum.
    pub csum_completed: bool,
    /// GSO: a large TCP frame with this MSS and `GSO_TYPE_*`.
    pub gso: Option<(u16, u8)>,
    /// The queue it arrived on.
    pub queue: usize,
}

pub(crate) enum RxOutcome {
    Frame(RxMeta),
    /// A one-page frame left in its page for the caller to read in place
    /// (`next_frame` with `hold`); the page is out of the pool until
    /// [`RxQueue::release`].
    Held(RxMeta, HeldPage),
    Dropped(RxFault),
}

/// An rx page holding a received frame, taken out of the pool: its grant has
/// ended, so the backend can no longer write it (docs/network-copies.md).
#[derive(Copy, Clone)]
#[cfg_attr(not(feature = "smoltcp"), allow(dead_code))]
pub(crate) struct HeldPage {
    pub queue: usize,
    page: u16,
    /// Where the frame's bytes lie in the page.
    offset: u16,
    len: u16,
}

#[derive(Copy, Clone, Default)]
struct Frag {
    page: u16,
    offset: u16,
    len: u16,
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Expect {
    First,
    /// Extra-info slots; afterwards data continues if `more`.
    Extra {
        more: bool,
    },
    More,
    /// Skipping the rest of an over-long chain (`slots` skipped so far).
    Discard {
        slots: usize,
    },
}

#[derive(Copy, Clone)]
struct RxEntry {
    page: u16,
    gref: GrantRef,
}

/// A frame being assembled from several responses.
struct Chain {
    frags: [Frag; MAX_RX_FRAGS],
    n: usize,
    /// Data slots this frame may use: `NR_SLOTS_MIN`, plus one if the first slot
    /// holds at most [`RX_COPY_THRESHOLD`] bytes.
    max_frags: usize,
    total: usize,
    flags: u16,
    gso: Option<(u16, u8)>,
    extras: usize,
    fault: Option<RxFault>,
    expect: Expect,
}

impl Chain {
    const fn new() -> Chain {
        Chain {
            frags: [Frag {
                page: 0,
                offset: 0,
                len: 0,
            }; MAX_RX_FRAGS],
            n: 0,
            max_frags: MAX_RX_FRAGS,
            total: 0,
            flags: 0,
            gso: None,
            extras: 0,
            fault: None,
            expect: Expect::First,
        }
    }
}

pub(crate) struct RxQueue {
    pub ring: FrontRing<RxRequest, RxResponse, SharedPages>,
    pub page: RingPage,
    slots: [RxEntry; RING_SIZE],
    pub pool: Pool,
    chain: Chain,
}

impl RxQueue {
    const fn detached() -> RxQueue {
        RxQueue {
            ring: FrontRing::detached(),
            page: RingPage::detached(),
            slots: [RxEntry {
                page: NO_PAGE,
                gref: GrantRef(0),
            }; RING_SIZE],
            pool: Pool::detached(),
            chain: Chain::new(),
        }
    }

    /// Allocates the ring page and `buffers` buffer pages (in place).
    fn allocate<P: Platform + ?Sized>(&mut self, p: &P, buffers: usize) -> Result<(), Error> {
        let (page, mem) = RingPage::new(p)?;
        self.page = page;
        self.ring = FrontRing::init(mem).map_err(|_| Error::NoMemory)?;
        for s in self.slots.iter_mut() {
            s.page = NO_PAGE;
        }
        self.chain = Chain::new();
        self.pool.allocate(p, buffers)
    }

    /// Fresh ring (at index `start`) and grant, for a (re)connect; as
    /// [`TxQueue::attach`].
    pub(crate) fn attach<P: Platform + ?Sized, const N: usize>(
        &mut self,
        p: &P,
        g: &GrantTable<N>,
        be: DomId,
        start: u32,
    ) -> Result<GrantRef, Error> {
        let old = core::mem::replace(&mut self.ring, FrontRing::detached()).into_region();
        let mem = self.page.reclaim(p, g, old)?;
        self.ring = FrontRing::init_at(mem, start).map_err(|_| Error::NoMemory)?;
        self.chain = Chain::new();
        self.page.grant(g, be)
    }

    /// Buffers currently posted to the backend.
    pub(crate) fn posted(&self) -> usize {
        self.ring.outstanding() as usize
    }

    /// Buffers whose grant is still active (posted, not yet answered).
    pub(crate) fn granted(&self) -> usize {
        self.slots.iter().filter(|s| s.page != NO_PAGE).count()
    }

    /// Posts free buffers. Returns (notify wanted, ring had room but no buffer).
    /// Running out of grant refs is an error only if `all` (at connect, docs/hostile-input.md
    /// G5: a device that cannot post its rx buffers does not connect); later it just
    /// leaves fewer buffers posted.
    pub(crate) fn refill<const N: usize>(
        &mut self,
        g: &GrantTable<N>,
        be: DomId,
        all: bool,
    ) -> Result<(bool, bool), Error> {
        let mut pushed = false;
        let mut starved = false;
        let mut err = None;
        // One request per free slot (a full ring has no free page either: every
        // page is posted).
        for _ in 0..self.ring.free_slots() {
            let Some(page) = self.pool.take() else {
                starved = true;
                break;
            };
            let gref = match g.grant_access(be, self.pool.gfn(page), false) {
                Ok(r) => r,
                Err(e) => {
                    self.pool.put(page);
                    err = Some(e);
                    break;
                }
            };
            let idx = self.ring.req_prod_pvt();
            let slot = (idx & MASK) as usize;
            if let Some(s) = self.slots.get_mut(slot) {
                *s = RxEntry { page, gref };
            }
            let req = RxRequest {
                id: slot as u16,
                _pad: 0,
                gref: gref.0,
            };
            if self.ring.push_request(&req).is_err() {
                // Broken ring: undo; the rx path reports the ring error.
                let _ = g.end_access(gref);
                self.pool.put(page);
                if let Some(s) = self.slots.get_mut(slot) {
                    s.page = NO_PAGE;
                }
                break;
            }
            pushed = true;
        }
        let notify = pushed && self.ring.push_requests_and_check_notify();
        match err {
            // Out of grant refs: keep going with what is posted.
            Some(gnttab::Error::Exhausted) if !all => Ok((notify, starved)),
            None => Ok((notify, starved)),
            Some(e) => Err(e.into()),
        }
    }

    #[inline]
    fn recycle_chain(&mut self) {
        for k in 0..self.chain.n {
            if let Some(f) = self.chain.frags.get(k).copied() {
                self.pool.put(f.page);
            }
        }
        self.chain.n = 0;
    }

    #[inline]
    fn add_frag(&mut self, page: u16, rsp: &RxResponse) {
        let fault = if rsp.status < 0 {
            Some(RxFault::BadStatus(rsp.status))
        } else if usize::from(rsp.offset) + rsp.status as usize > PAGE_SIZE {
            Some(RxFault::PastPage {
                offset: rsp.offset,
                len: rsp.status as u16,
            })
        } else if self.chain.n >= self.chain.max_frags {
            Some(RxFault::TooManySlots)
        } else if self.chain.total + rsp.status as usize > MAX_FRAME {
            Some(RxFault::TooLong)
        } else {
            None
        };
        match fault {
            Some(f) => {
                self.pool.put(page);
                if self.chain.fault.is_none() {
                    self.chain.fault = Some(f);
                }
            }
            None => {
                if let Some(slot) = self.chain.frags.get_mut(self.chain.n) {
                    *slot = Frag {
                        page,
                        offset: rsp.offset,
                        len: rsp.status as u16,
                    };
                    self.chain.n += 1;
                    self.chain.total += rsp.status as usize;
                }
            }
        }
    }

    fn check_extra(&mut self, x: &ExtraInfo) {
        self.chain.extras += 1;
        let fault = if self.chain.extras > MAX_RX_EXTRAS {
            Some(RxFault::TooManyExtras)
        } else if x.ty == EXTRA_TYPE_NONE || x.ty >= EXTRA_TYPE_MAX {
            Some(RxFault::BadExtraType(x.ty))
        } else if x.ty == EXTRA_TYPE_GSO {
            let t = x.gso_type();
            if x.gso_size() == 0 {
                Some(RxFault::GsoSizeZero)
            } else if t != GSO_TYPE_TCPV4 && t != GSO_TYPE_TCPV6 {
                Some(RxFault::BadGsoType(t))
            } else {
                self.chain.gso = Some((x.gso_size(), t));
                None
            }
        } else {
            None // multicast / hash extras: valid, ignored
        };
        if let (Some(f), None) = (fault, self.chain.fault) {
            self.chain.fault = Some(f);
        }
    }

    /// Consumes responses until one frame is complete (copied into `out`) or
    /// dropped, or no response is left (a partial frame is kept for next time).
    pub(crate) fn next_frame<const N: usize>(
        &mut self,
        g: &GrantTable<N>,
        queue: usize,
        out: &mut [u8],
        hold: bool,
    ) -> Result<Option<RxOutcome>, Broken> {
        for _ in 0..RING_SIZE {
            let rsp = match self.ring.poll_response() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(None),
                Err(error) => {
                    return Err(Broken::Ring {
                        queue,
                        tx: false,
                        error,
                    })
                }
            };
            // The buffer is the one posted at this ring index (N7: rsp.id ignored).
            let slot = (self.ring.rsp_cons().wrapping_sub(1) & MASK) as usize;
            let entry = self.slots.get_mut(slot).map(|s| {
                let e = *s;
                s.page = NO_PAGE;
                e
            });
            let page = match entry {
                Some(e) if e.page != NO_PAGE => match g.end_access(e.gref) {
                    Err(gnttab::Error::StillMapped(gref)) => {
                        self.pool.quarantined += 1;
                        return Err(Broken::GrantStillMapped { queue, gref });
                    }
                    _ => e.page,
                },
                // Cannot happen (every consumed index was posted); be safe.
                _ => NO_PAGE,
            };
            let rf = RxFlags::from_bits_retain(rsp.flags);
            if matches!(self.chain.expect, Expect::First)
                && !rf.intersects(RxFlags::MORE_DATA | RxFlags::EXTRA_INFO)
            {
                return Ok(Some(self.one_slot(page, &rsp, queue, out, hold)));
            }
            let done = match self.chain.expect {
                Expect::First => {
                    self.chain.n = 0;
                    self.chain.max_frags = netif::NR_SLOTS_MIN
                        + usize::from((0..=RX_COPY_THRESHOLD).contains(&rsp.status));
                    self.chain.total = 0;
                    self.chain.gso = None;
                    self.chain.extras = 0;
                    self.chain.fault = None;
                    self.chain.flags = rsp.flags;
                    self.add_frag(page, &rsp);
                    let rf = RxFlags::from_bits_retain(rsp.flags);
                    let more = rf.contains(RxFlags::MORE_DATA);
                    if rf.contains(RxFlags::EXTRA_INFO) {
                        self.chain.expect = Expect::Extra { more };
                        false
                    } else if more {
                        self.chain.expect = Expect::More;
                        false
                    } else {
                        true
                    }
                }
                Expect::Extra { more } => {
                    self.pool.put(page);
                    let x = rsp.as_extra();
                    self.check_extra(&x);
                    if self.chain.extras > MAX_RX_EXTRAS {
                        // An endless extra chain: give up on this frame here.
                        true
                    } else if x.flags & EXTRA_FLAG_MORE != 0 {
                        false
                    } else if more {
                        self.chain.expect = Expect::More;
                        false
                    } else {
                        true
                    }
                }
                Expect::More => {
                    self.add_frag(page, &rsp);
                    let more = RxFlags::from_bits_retain(rsp.flags).contains(RxFlags::MORE_DATA);
                    let overlong = matches!(
                        self.chain.fault,
                        Some(RxFault::TooManySlots | RxFault::TooLong)
                    );
                    if overlong && more {
                        // Drop now, skip the rest of the chain (as Linux does).
                        self.chain.expect = Expect::Discard { slots: 0 };
                        self.recycle_chain();
                        return Ok(Some(RxOutcome::Dropped(
                            self.chain.fault.unwrap_or(RxFault::TooManySlots),
                        )));
                    }
                    !more
                }
                Expect::Discard { slots } => {
                    self.pool.put(page);
                    if !RxFlags::from_bits_retain(rsp.flags).contains(RxFlags::MORE_DATA) {
                        self.chain.expect = Expect::First;
                        continue;
                    }
                    if slots + 1 >= MAX_RX_FRAGS {
                        // A chain that never ends counts as one bad frame per
                        // frame's worth of slots, so a run of them fails the device.
                        self.chain.expect = Expect::Discard { slots: 0 };
                        return Ok(Some(RxOutcome::Dropped(RxFault::TooManySlots)));
                    }
                    self.chain.expect = Expect::Discard { slots: slots + 1 };
                    false
                }
            };
            if !done {
                continue;
            }
            self.chain.expect = Expect::First;
            if let Some(f) = self.chain.fault {
                self.recycle_chain();
                return Ok(Some(RxOutcome::Dropped(f)));
            }
            let total = self.chain.total;
            if total < crate::features::MIN_FRAME {
                self.recycle_chain();
                return Ok(Some(RxOutcome::Dropped(RxFault::TooShort(total))));
            }
            let flags = RxFlags::from_bits_retain(self.chain.flags);
            let meta = RxMeta {
                len: total,
                data_validated: flags.contains(RxFlags::DATA_VALIDATED),
                csum_blank: flags.contains(RxFlags::CSUM_BLANK),
                csum_completed: false,
                gso: self.chain.gso,
                queue,
            };
            // A one-page frame whose checksum needs no completing (that would
            // write to it) can be read where it is: its grant has ended.
            let one = self
                .chain
                .frags
                .first()
                .copied()
                .filter(|_| self.chain.n == 1);
            if let Some(f) = one.filter(|_| hold && !meta.csum_blank) {
                let held = HeldPage {
                    queue,
                    page: f.page,
                    offset: f.offset,
                    len: f.len,
                };
                if self.held_mem(&held).is_some() {
                    self.chain.n = 0;
                    return Ok(Some(RxOutcome::Held(meta, held)));
                }
            }
            if total > out.len() {
                self.recycle_chain();
                return Ok(Some(RxOutcome::Dropped(RxFault::BufferTooSmall(total))));
            }
            let mut pos = 0usize;
            for k in 0..self.chain.n {
                let Some(f) = self.chain.frags.get(k).copied() else {
                    continue;
                };
                let len = usize::from(f.len);
                if let (Some(mem), Some(dst)) =
                    (self.pool.page(f.page), out.get_mut(pos..pos + len))
                {
                    mem.read(usize::from(f.offset), dst);
                }
                pos += len;
            }
            self.recycle_chain();
            return Ok(Some(RxOutcome::Frame(meta)));
        }
        Ok(None)
    }

    /// [`RxQueue::next_frame`] for a frame in one slot (a first response
    /// without more data or extras; most frames): the chain's checks and
    /// outcomes in the same order (`add_frag`'s for a first slot, which can be
    /// neither one slot too many nor over [`MAX_FRAME`], then too short, held,
    /// too long for `out`), without the chain's bookkeeping.
    fn one_slot(
        &mut self,
        page: u16,
        rsp: &RxResponse,
        queue: usize,
        out: &mut [u8],
        hold: bool,
    ) -> RxOutcome {
        let fault = if rsp.status < 0 {
            Some(RxFault::BadStatus(rsp.status))
        } else if usize::from(rsp.offset) + rsp.status as usize > PAGE_SIZE {
            Some(RxFault::PastPage {
                offset: rsp.offset,
                len: rsp.status as u16,
            })
        } else if rsp.status < crate::features::MIN_FRAME as i16 {
            Some(RxFault::TooShort(rsp.status as usize))
        } else {
            None
        };
        if let Some(f) = fault {
            self.pool.put(page);
            return RxOutcome::Dropped(f);
        }
        let len = rsp.status as usize;
        let flags = RxFlags::from_bits_retain(rsp.flags);
        let meta = RxMeta {
            len,
            data_validated: flags.contains(RxFlags::DATA_VALIDATED),
            csum_blank: flags.contains(RxFlags::CSUM_BLANK),
            csum_completed: false,
            gso: None,
            queue,
        };
        // As in `next_frame`: read in place if the checksum needs no completing.
        if hold && !meta.csum_blank {
            let held = HeldPage {
                queue,
                page,
                offset: rsp.offset,
                len: rsp.status as u16,
            };
            if self.held_mem(&held).is_some() {
                return RxOutcome::Held(meta, held);
            }
        }
        if len > out.len() {
            self.pool.put(page);
            return RxOutcome::Dropped(RxFault::BufferTooSmall(len));
        }
        if let (Some(mem), Some(dst)) = (self.pool.page(page), out.get_mut(..len)) {
            mem.read(usize::from(rsp.offset), dst);
        }
        self.pool.put(page);
        RxOutcome::Frame(meta)
    }

    /// The frame's bytes in a held page (borrowed from the pool).
    pub(crate) fn held_mem(&self, h: &HeldPage) -> Option<SharedMem<'_>> {
        self.pool
            .page(h.page)?
            .sub(usize::from(h.offset), usize::from(h.len))
    }

    /// Returns a held page to the pool (to be posted again).
    pub(crate) fn release(&mut self, h: HeldPage) {
        self.pool.put(h.page);
    }

    /// Ends every posted buffer's grant and the ring's; returns pages lost.
    pub(crate) fn teardown<const N: usize>(&mut self, g: &GrantTable<N>) -> usize {
        let mut lost = 0;
        self.recycle_chain();
        self.chain = Chain::new();
        for s in self.slots.iter_mut() {
            if s.page == NO_PAGE {
                continue;
            }
            match g.end_access(s.gref) {
                Err(gnttab::Error::StillMapped(_)) => {
                    self.pool.quarantined += 1;
                    lost += 1;
                }
                _ => self.pool.put(s.page),
            }
            s.page = NO_PAGE;
        }
        if !self.page.end(g) {
            lost += 1;
        }
        lost
    }
}

/// One queue: rings, pools, ports. Built detached (no pages: a `const`, so a
/// device can live in a `static`) and allocated in place on first connect.
pub(crate) struct Queue {
    /// Pages allocated (the rings and pools are usable).
    pub live: bool,
    pub tx: TxQueue,
    pub rx: RxQueue,
    pub tx_port: Option<Port>,
    pub rx_port: Option<Port>,
}

impl Queue {
    pub(crate) const fn detached() -> Queue {
        Queue {
            live: false,
            tx: TxQueue::detached(),
            rx: RxQueue::detached(),
            tx_port: None,
            rx_port: None,
        }
    }

    /// Returns the pages of a torn-down queue to the platform, except those that
    /// may still be granted: a ring page whose grant did not end, and a pool with
    /// a quarantined page (the whole allocation stays out of use).
    #[allow(unsafe_code)]
    pub(crate) fn release_pages<P: Platform + ?Sized>(&mut self, p: &P) {
        let busy = (self.tx.in_flight(), self.rx.granted());
        let tx_ring = core::mem::replace(&mut self.tx.ring, FrontRing::detached()).into_region();
        let rx_ring = core::mem::replace(&mut self.rx.ring, FrontRing::detached()).into_region();
        for (ring, page, pool, busy) in [
            (tx_ring, &mut self.tx.page, &mut self.tx.pool, busy.0),
            (rx_ring, &mut self.rx.page, &mut self.rx.pool, busy.1),
        ] {
            // A ring page whose grant is still mapped is dropped here: leaked,
            // never freed nor reused (XSA-396).
            if page.gref.is_none() {
                // SAFETY: the queue's own one-page allocation from this platform
                // (RingPage::new), taken back from the detached ring; its grant
                // ended (gref is None). The empty placeholder frees nothing.
                unsafe { ring.free(p) };
            }
            if pool.quarantined == 0 && busy == 0 {
                let mem = core::mem::replace(&mut pool.mem, SharedPages::empty());
                pool.count = 0;
                pool.nfree = 0;
                // SAFETY: the pool's own allocation from this platform
                // (Pool::allocate); no page of it is granted (none quarantined,
                // none in flight or posted after teardown) and the pool forgets
                // it here. The empty placeholder frees nothing.
                unsafe { mem.free(p) };
            }
        }
    }

    /// Allocates the rings' and buffers' pages (in place, no large temporaries).
    pub(crate) fn allocate<P: Platform + ?Sized>(
        &mut self,
        p: &P,
        tx_buffers: usize,
        rx_buffers: usize,
    ) -> Result<(), Error> {
        self.tx.allocate(p, tx_buffers)?;
        self.rx.allocate(p, rx_buffers)?;
        self.live = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Env;
    use hypercall::ring::BackRing;

    /// A page index outside the pool is never taken in: `put` of `count` (one past
    /// the last page) or of `NO_PAGE` leaves the free list as it was (mutant: `<`
    /// as `<=` in `Pool::put`).
    #[test]
    fn pool_put_ignores_pages_outside_the_pool() {
        let env = Env::new();
        let mut pool = Pool::detached();
        pool.allocate(&env.p, 2).unwrap();
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        assert_eq!(pool.take(), None);
        pool.put(2);
        pool.put(NO_PAGE);
        assert_eq!(pool.free_pages(), 0);
        pool.put(a);
        pool.put(b);
        assert_eq!(
            (pool.take(), pool.take(), pool.take()),
            (Some(b), Some(a), None)
        );
    }

    /// Running out of grant refs while posting rx buffers: at connect (`all`) an
    /// error; later, the buffers that could be granted are posted and the rest wait
    /// in the pool (mutants: the `!all` guard in `RxQueue::refill` as `true` or
    /// `false`, its `!` deleted).
    #[test]
    fn refill_out_of_refs_fails_only_at_connect() {
        let env = Env::new();
        let be = DomId(0);
        let page = SharedPages::alloc(&env.p, 1).unwrap();
        let gfn = page.page_gfn(&env.p, 0).unwrap();
        let mut held = std::vec::Vec::new();
        while let Ok(r) = env.g.grant_access(be, gfn, true) {
            held.push(r);
        }
        // Refs for the ring and 3 buffers.
        for r in held.drain(..4) {
            env.g.end_access(r).unwrap();
        }
        let mut rx = RxQueue::detached();
        rx.allocate(&env.p, 8).unwrap();
        rx.attach(&env.p, &env.g, be, 0).unwrap();
        assert_eq!(
            rx.refill(&env.g, be, true).err(),
            Some(Error::Grant(gnttab::Error::Exhausted))
        );
        assert_eq!(rx.posted(), 3, "what was posted stays posted");
        assert_eq!(rx.pool.free_pages(), 5);
        // Later (not `all`): no error, the rest waits for refs.
        for r in held.drain(..2) {
            env.g.end_access(r).unwrap();
        }
        assert!(rx.refill(&env.g, be, false).is_ok());
        assert_eq!((rx.posted(), rx.granted()), (5, 5));
        assert_eq!(rx.pool.free_pages(), 3);
        for r in held {
            env.g.end_access(r).unwrap();
        }
    }

    /// A backend over an rx queue's ring (its page, mapped by frame, attached at
    /// index 0).
    fn back<'a>(env: &'a Env, rx: &RxQueue) -> BackRing<RxRequest, RxResponse, SharedMem<'a>> {
        BackRing::attach_at(SharedMem::map_gfn(&env.p, rx.page.gfn).unwrap(), 0).unwrap()
    }

    /// Answers the next request with `len` bytes at offset 0 and `flags`.
    fn answer(b: &mut BackRing<RxRequest, RxResponse, SharedMem<'_>>, flags: RxFlags, len: i16) {
        let req = b.poll_request().unwrap().unwrap();
        let rsp = RxResponse {
            id: req.id,
            offset: 0,
            flags: flags.bits(),
            status: len,
        };
        b.push_response(&rsp).unwrap();
        let _ = b.push_responses_and_check_notify();
    }

    /// With `hold`, a one-slot frame whose checksum needs no completing stays in
    /// its page (`Held`); a two-slot frame, or one with `csum_blank`, is copied out
    /// (mutants: `chain.n == 1` as `!=`, `!meta.csum_blank` with the `!` deleted,
    /// `RxQueue::held_mem` -> `None`); `release` gives the held page back to the
    /// pool (mutant: `RxQueue::release` -> `()`).
    #[test]
    fn hold_keeps_only_one_slot_frames_needing_no_checksum() {
        let env = Env::new();
        let be = DomId(0);
        let mut rx = RxQueue::detached();
        rx.allocate(&env.p, 8).unwrap();
        rx.attach(&env.p, &env.g, be, 0).unwrap();
        rx.refill(&env.g, be, true).unwrap();
        let mut out = [0u8; 9000];
        let mut ring = back(&env, &rx);
        answer(&mut ring, RxFlags::empty(), 60);
        match rx.next_frame(&env.g, 0, &mut out, true).unwrap() {
            Some(RxOutcome::Held(m, h)) => {
                assert_eq!((m.len, h.len), (60, 60));
                assert_eq!(rx.held_mem(&h).map(|m| m.len()), Some(60));
                let free = rx.pool.free_pages();
                rx.release(h);
                assert_eq!(rx.pool.free_pages(), free + 1, "released to the pool");
            }
            _ => panic!("a one-slot frame is held"),
        }
        answer(&mut ring, RxFlags::MORE_DATA, 4096);
        answer(&mut ring, RxFlags::empty(), 100);
        answer(&mut ring, RxFlags::CSUM_BLANK, 60);
        for len in [4196, 60] {
            match rx.next_frame(&env.g, 0, &mut out, true).unwrap() {
                Some(RxOutcome::Frame(m)) => assert_eq!(m.len, len),
                _ => panic!("the {len}-byte frame is copied out"),
            }
        }
    }
}
