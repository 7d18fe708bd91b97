//! The request/response engine: the shared ring, the request shadows, the bounce
//! pages and their grants. No xenstore here; [`crate::Device`] drives it.
//!
//! ```text
//!  caller op (Tag) ──split──▶ parts = ring slots (shadow i, generation g)
//!     shadow i: SEGS bounce pages  bounce[i*SEGS .. (i+1)*SEGS]   (granted per request,
//!               1 indirect page    indirect[i]                     or once: persistent)
//!     ring request id = g << 16 | i
//!  response ─▶ id in range? shadow Waiting with generation g? operation matches?
//!              status known? ─▶ end grants ─▶ part done ─▶ op Done when all parts are
//!  finish(tag, bufs): copy read data out, free the op and its shadows
//! ```
//!
//! Slot states: `Free` → `Waiting` (published) → `Done` (answered, grants ended; held
//! until the caller finishes the op) → `Free`. A cancelled op's waiting slots become
//! `Orphan` (freed when the backend answers); a slot whose grants the backend still
//! maps is `Stuck` and never reused until ending them succeeds (rows 14, 26).

use core::cmp::min;

use zerocopy::IntoBytes;

use hypercall::abi::blkif::{
    self, Request, RequestDiscard, RequestIndirect, RequestSegment, Response,
};
use hypercall::gnttab::Error as GrantError;
use hypercall::ring::FrontRing;
use hypercall::{DomId, Gfn, GrantRef, Platform, Port, SharedMem, SharedPages, Xen, PAGE_SIZE};

use crate::error::{BrokenReason, Error, IoError};
use crate::features::MAX_QUEUES;
use crate::grants::Grants;

/// The blkif ring type.
pub type BlkRing = FrontRing<Request, Response, SharedMem<'static>>;

const NONE: u16 = u16::MAX;
/// Indirect segment descriptors gathered before one write to the indirect page.
const IND_BLOCK: usize = 64;
const NO_GREF: u32 = u32::MAX;

/// What kind of request an op is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Read sectors.
    Read,
    /// Write sectors.
    Write,
    /// Flush the backend's write cache (or a barrier on old backends).
    Flush,
    /// Discard (trim) sectors.
    Discard,
}

/// Names one submitted request until it is finished or cancelled.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    idx: u16,
    gen: u32,
}

/// One op to submit with [`Io::submit`]: what to do, where, and where a write's
/// data comes from. Built with [`OpSpec::read`], [`OpSpec::write`],
/// [`OpSpec::flush`] or [`OpSpec::discard`], then narrowed with
/// [`OpSpec::starting_at`] or [`OpSpec::registered`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpSpec<'d> {
    /// What kind of request.
    pub kind: OpKind,
    /// First 512-byte sector (0 for a flush).
    pub sector: u64,
    /// Bytes to read, write or discard (0 for a flush); already checked by the
    /// caller against the sector size and the capacity.
    pub len: usize,
    /// A write's payload, as a scatter list (empty for other kinds).
    pub data: &'d [&'d [u8]],
    /// Where a write's `len` bytes start in `data`: (buffer index, offset in it).
    pub start: (usize, usize),
    /// A secure discard (`discard-secure`).
    pub secure: bool,
    /// Move the data straight to or from the registered pages, starting at this
    /// page index, instead of through bounce pages (reads and writes only).
    pub direct: Option<usize>,
}

impl<'d> OpSpec<'d> {
    const fn new(kind: OpKind, sector: u64, len: usize) -> Self {
        OpSpec {
            kind,
            sector,
            len,
            data: &[],
            start: (0, 0),
            secure: false,
            direct: None,
        }
    }

    /// A read of `len` bytes at `sector`.
    pub const fn read(sector: u64, len: usize) -> Self {
        Self::new(OpKind::Read, sector, len)
    }

    /// A write at `sector` of the first `len` bytes of `data`.
    pub const fn write(sector: u64, data: &'d [&'d [u8]], len: usize) -> Self {
        OpSpec {
            data,
            ..Self::new(OpKind::Write, sector, len)
        }
    }

    /// A cache flush.
    pub const fn flush() -> Self {
        Self::new(OpKind::Flush, 0, 0)
    }

    /// A discard of `len` bytes at `sector` (`secure`: secure erase).
    pub const fn discard(sector: u64, len: usize, secure: bool) -> Self {
        OpSpec {
            secure,
            ..Self::new(OpKind::Discard, sector, len)
        }
    }

    /// The same op with a write's data starting at byte `offset` of buffer
    /// `buffer` of `data`.
    pub const fn starting_at(self, buffer: usize, offset: usize) -> Self {
        OpSpec {
            start: (buffer, offset),
            ..self
        }
    }

    /// The same op moving its data straight to or from the registered pages,
    /// from page `first_page` on.
    pub const fn registered(self, first_page: usize) -> Self {
        OpSpec {
            direct: Some(first_page),
            ..self
        }
    }
}

/// One ring request of an op (an op of more bytes than a request carries is
/// split into parts), as [`Io::submit`] hands it to `prepare`.
#[derive(Clone, Copy)]
struct Part {
    /// The slot (shadow) it goes in.
    slot: usize,
    /// Its first 512-byte sector.
    sector: u64,
    /// Its bytes (reads and writes).
    bytes: usize,
    /// Its first registered page, for a direct op.
    direct: Option<usize>,
}

/// Counters of the I/O path ([`crate::Device::stats`]). Public on purpose: an OS
/// reports them, and the benchmarks and tests check with them how many ring
/// requests, notifications and grant operations a workload cost.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ops submitted.
    pub ops: u64,
    /// Ring requests pushed (an op may need several).
    pub ring_requests: u64,
    /// Responses consumed.
    pub responses: u64,
    /// Event-channel notifications sent to the backend.
    pub notifications: u64,
    /// Grant operations (grant + end) done on the I/O path.
    pub grant_ops: u64,
}

impl Stats {
    const ZERO: Stats = Stats {
        ops: 0,
        ring_requests: 0,
        responses: 0,
        notifications: 0,
        grant_ops: 0,
    };
}

/// What the connection negotiated (see [`crate::Features`] for the public view).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Segments per ring request (1..=SEGS; <= 11 unless `indirect`).
    pub segs: usize,
    /// Use `BLKIF_OP_INDIRECT` for requests over 11 segments.
    pub indirect: bool,
    /// Grants stay in place for the whole connection.
    pub persistent: bool,
    /// `BLKIF_OP_FLUSH_DISKCACHE`, `BLKIF_OP_WRITE_BARRIER`, or none.
    pub flush_op: Option<u8>,
    /// `feature-discard`.
    pub discard: bool,
    /// The `handle` field of requests.
    pub handle: u16,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Waiting,
    Done,
    Orphan,
    Stuck,
}

#[derive(Copy, Clone)]
struct Slot<const SEGS: usize> {
    state: SlotState,
    gen: u16,
    /// The operation the response must carry.
    rsp_op: u8,
    nsegs: u16,
    bytes: u32,
    owner: u16,
    next: u16,
    /// The queue (ring) this slot belongs to for the current connection.
    queue: u8,
    gfn: [u32; SEGS],
    gref: [u32; SEGS],
    ind_gfn: u32,
    ind_gref: u32,
    /// With persistent grants: the byte count whose descriptors the indirect page
    /// already holds (0: none known). A request of the same size reuses them.
    ind_bytes: u32,
}

impl<const SEGS: usize> Slot<SEGS> {
    const EMPTY: Self = Slot {
        state: SlotState::Free,
        gen: 0,
        rsp_op: 0,
        nsegs: 0,
        bytes: 0,
        owner: NONE,
        next: NONE,
        queue: 0,
        gfn: [0; SEGS],
        gref: [NO_GREF; SEGS],
        ind_gfn: 0,
        ind_gref: NO_GREF,
        ind_bytes: 0,
    };
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum OpState {
    Free,
    InFlight,
    Done,
}

#[derive(Copy, Clone, Debug)]
struct Op {
    state: OpState,
    gen: u32,
    kind: OpKind,
    len: usize,
    parts_left: u16,
    first: u16,
    result: Option<Error>,
    done_seq: u64,
    /// The data is in the caller's registered pages, not the bounce pages.
    direct: bool,
}

impl Op {
    const EMPTY: Self = Op {
        state: OpState::Free,
        gen: 0,
        kind: OpKind::Flush,
        len: 0,
        parts_left: 0,
        first: NONE,
        result: None,
        done_seq: 0,
        direct: false,
    };
}

/// Most pages a caller can register ([`Io::register`]): 4 MiB.
pub const REGISTER_MAX_PAGES: usize = PAGE_SIZE / 4;

/// Caller pages lent to the device for direct I/O (owned by the device while
/// registered), granted to the backend for the connection; their grant refs
/// are in the device's own table page.
#[derive(Debug)]
struct Registered {
    pages: SharedPages,
    count: usize,
    /// Granted to this connection's backend (false once the connection ended:
    /// the pages stay the device's until [`Io::release_registered`]).
    live: bool,
}

/// Pages allocated once, at the first connect (owned: the device frees them).
#[derive(Debug)]
struct Pages {
    bounce: SharedPages,
    indirect: SharedPages,
}

/// One queue (`queue-N/` in xenstore): its ring, its event channel and its share
/// of the slots (`base .. base + len`: their bounce pages, grants and request ids
/// are this queue's alone).
struct Queue {
    ring: Option<BlkRing>,
    port: Port,
    base: u16,
    len: u16,
    /// Free slots of this queue: `free[base .. base + nfree]` (a stack).
    nfree: u16,
}

impl Queue {
    const EMPTY: Queue = Queue {
        ring: None,
        port: Port(0),
        base: 0,
        len: 0,
        nfree: 0,
    };
}

/// The engine. `SLOTS` ring requests in flight at most, `SEGS` pages each, over
/// 1..=[`MAX_QUEUES`] rings; the slots are split between the rings.
pub(crate) struct Io<const SLOTS: usize, const SEGS: usize> {
    queues: [Queue; MAX_QUEUES],
    /// Queues in use (at least 1).
    nq: usize,
    /// Where round-robin queue selection starts next (modulo `nq`).
    rr: usize,
    /// The caller's choice of queue for submissions (`None`: round-robin).
    pinned: Option<usize>,
    backend: DomId,
    geo: Geometry,
    pages: Option<Pages>,
    /// The registered caller pages, if any.
    reg: Option<Registered>,
    /// Grant refs of the registered pages (a local page, allocated once).
    reg_table: Option<SharedPages>,
    slots: [Slot<SEGS>; SLOTS],
    free: [u16; SLOTS],
    ops: [Op; SLOTS],
    /// Request images between preparation and publication.
    stash: [Request; SLOTS],
    broken: Option<BrokenReason>,
    plugged: bool,
    done_seq: u64,
    stats: Stats,
}

/// Reads from a caller's scatter list in order.
struct SrcCursor<'a, 'b> {
    bufs: &'a [&'b [u8]],
    i: usize,
    off: usize,
}

impl SrcCursor<'_, '_> {
    /// Copies `n` bytes into `mem` at `at`; returns how many were available.
    fn copy_to(&mut self, mem: &SharedMem<'_>, mut at: usize, mut n: usize) -> usize {
        let mut done = 0;
        while n > 0 {
            let Some(buf) = self.bufs.get(self.i) else {
                break;
            };
            let rest = buf.get(self.off..).unwrap_or_default();
            if rest.is_empty() {
                self.i += 1;
                self.off = 0;
                continue;
            }
            let k = min(n, rest.len());
            mem.write(at, rest.get(..k).unwrap_or_default());
            self.off += k;
            at += k;
            n -= k;
            done += k;
        }
        done
    }
}

/// Writes into a caller's scatter list in order.
struct DstCursor<'a, 'b> {
    bufs: &'a mut [&'b mut [u8]],
    i: usize,
    off: usize,
}

impl DstCursor<'_, '_> {
    /// Copies `n` bytes from `mem` at `at` into the buffers (as many as they hold).
    fn copy_from(&mut self, mem: &SharedMem<'_>, mut at: usize, mut n: usize) {
        while n > 0 {
            let Some(buf) = self.bufs.get_mut(self.i) else {
                break;
            };
            let off = self.off;
            let rest = buf.get_mut(off..).unwrap_or_default();
            if rest.is_empty() {
                self.i += 1;
                self.off = 0;
                continue;
            }
            let k = min(n, rest.len());
            if let Some(dst) = rest.get_mut(..k) {
                mem.read(at, dst);
            }
            self.off += k;
            at += k;
            n -= k;
        }
    }
}

/// Total length of a scatter list.
pub(crate) fn total_len(bufs: &[&[u8]]) -> usize {
    bufs.iter().fold(0usize, |a, b| a.saturating_add(b.len()))
}

/// Total length of a mutable scatter list.
pub(crate) fn total_len_mut(bufs: &[&mut [u8]]) -> usize {
    bufs.iter().fold(0usize, |a, b| a.saturating_add(b.len()))
}

fn status_result(status: i16) -> Option<Error> {
    match status {
        blkif::RSP_OKAY => None,
        blkif::RSP_ERROR => Some(Error::Io(IoError::Backend)),
        blkif::RSP_EOPNOTSUPP => Some(Error::Io(IoError::NotSupported)),
        s => Some(Error::Io(IoError::BadStatus(s))),
    }
}

impl<const SLOTS: usize, const SEGS: usize> Io<SLOTS, SEGS> {
    const CHECK: () = {
        assert!(
            SLOTS >= 1 && SLOTS < NONE as usize,
            "SLOTS must be 1..65535"
        );
        assert!(
            SEGS >= 1 && SEGS <= blkif::SEGS_PER_INDIRECT_FRAME,
            "SEGS must be 1..=512 (one indirect page)"
        );
    };

    /// An idle engine (no pages, no ring); a `const fn`, so a device can be built
    /// in a `static`.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        let mut free = [0u16; SLOTS];
        let mut i = 0;
        while i < SLOTS {
            // Highest index first so slot 0 is handed out first.
            free[i] = (SLOTS - 1 - i) as u16;
            i += 1;
        }
        let mut queues = [Queue::EMPTY; MAX_QUEUES];
        queues[0].len = SLOTS as u16;
        queues[0].nfree = SLOTS as u16;
        Io {
            queues,
            nq: 1,
            rr: 0,
            pinned: None,
            backend: DomId(0),
            geo: Geometry {
                segs: 1,
                indirect: false,
                persistent: false,
                flush_op: None,
                discard: false,
                handle: 0,
            },
            pages: None,
            reg: None,
            reg_table: None,
            slots: [Slot::EMPTY; SLOTS],
            free,
            ops: [Op::EMPTY; SLOTS],
            stash: [Request {
                operation: 0,
                nr_segments: 0,
                handle: 0,
                _pad: 0,
                id: 0,
                sector_number: 0,
                seg: [RequestSegment {
                    gref: 0,
                    first_sect: 0,
                    last_sect: 0,
                    _pad: [0; 2],
                }; blkif::MAX_SEGMENTS_PER_REQUEST],
            }; SLOTS],
            broken: None,
            plugged: false,
            done_seq: 0,
            stats: Stats::ZERO,
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn broken(&self) -> Option<BrokenReason> {
        self.broken
    }

    pub fn connected(&self) -> bool {
        self.queues.iter().any(|q| q.ring.is_some())
    }

    /// Queues (rings) in use.
    pub fn queues(&self) -> usize {
        self.nq
    }

    /// Sends later submissions to queue `q` (`None`: round-robin over the queues
    /// with room). Refused for a queue not in use.
    pub fn set_queue(&mut self, q: Option<usize>) -> Result<(), Error> {
        if let Some(q) = q {
            if q >= self.nq {
                return Err(Error::NoSuchQueue {
                    queue: q,
                    queues: self.nq,
                });
            }
        }
        self.pinned = q;
        Ok(())
    }

    /// The queue an op went out on.
    pub fn queue_of(&self, tag: Tag) -> Result<usize, Error> {
        let op = self.op_of(tag)?;
        Ok(self
            .slots
            .get(op.first as usize)
            .map_or(0, |s| usize::from(s.queue)))
    }

    /// Splits the slots between `nq` queues (contiguous shares, sizes differing by
    /// at most one) and rebuilds every queue's free stack from the slots that are
    /// free now (slots still held by an unfinished op join their new queue's stack
    /// when released).
    fn partition(&mut self, nq: usize) {
        let nq = nq.clamp(1, min(MAX_QUEUES, SLOTS));
        self.nq = nq;
        self.rr = 0;
        self.pinned = None;
        // Queues past `nq` get no slots.
        for queue in self.queues.iter_mut() {
            queue.base = SLOTS as u16;
            queue.len = 0;
            queue.nfree = 0;
        }
        let mut base = 0usize;
        for (q, queue) in self.queues.iter_mut().enumerate().take(nq) {
            let len = SLOTS / nq + usize::from(q < SLOTS % nq);
            queue.base = base as u16;
            queue.len = len as u16;
            queue.nfree = 0;
            for s in self.slots.get_mut(base..base + len).into_iter().flatten() {
                s.queue = q as u8;
            }
            // Highest index first, so the lowest is handed out first.
            for i in (base..base + len).rev() {
                if self.slots.get(i).map(|s| s.state) == Some(SlotState::Free) {
                    if let Some(f) = self.free.get_mut(base + queue.nfree as usize) {
                        *f = i as u16;
                        queue.nfree += 1;
                    }
                }
            }
            base += len;
        }
    }

    /// Whether queue `q` can take an op of `parts` ring requests now.
    fn room(&self, q: usize, parts: usize) -> bool {
        self.queues.get(q).is_some_and(|x| {
            let ring_free = x.ring.as_ref().map_or(0, |r| r.free_slots() as usize);
            parts <= x.nfree as usize && parts <= ring_free
        })
    }

    /// The queue for an op of `parts` ring requests: the caller's choice, or the
    /// next one round-robin that has room.
    fn pick_queue(&mut self, parts: usize) -> Result<usize, Error> {
        if let Some(q) = self.pinned {
            return if self.room(q, parts) {
                Ok(q)
            } else {
                Err(Error::Busy)
            };
        }
        for k in 0..self.nq {
            let q = (self.rr + k) % self.nq;
            if self.room(q, parts) {
                // Taken modulo `nq` where it is used.
                self.rr = q + 1;
                return Ok(q);
            }
        }
        Err(Error::Busy)
    }

    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Ring requests that one op may use at once: what the smallest queue holds
    /// (its slots, or its ring if smaller), so that any op fits any queue.
    pub fn max_inflight(&self) -> usize {
        self.queues
            .iter()
            .take(self.nq)
            .map(|q| {
                let ring = q.ring.as_ref().map_or(usize::MAX, |r| r.size() as usize);
                min(q.len as usize, ring)
            })
            .min()
            .unwrap_or(0)
    }

    /// Bytes one ring request carries.
    pub fn bytes_per_request(&self) -> usize {
        self.geo.segs * PAGE_SIZE
    }

    /// Registers the caller's `pages` (whole pages of guest memory) for direct
    /// I/O on this connection: the device keeps them, and each is granted
    /// (writable) to the backend, until [`Io::release_registered`] ends the
    /// grants and gives them back. The local page holding their refs is
    /// allocated from `p` once. On failure the pages come back with the error.
    // No heap to box into: a refused registration hands the pages back by value.
    #[allow(clippy::result_large_err)]
    pub fn register<P: Platform + ?Sized, G: Grants + ?Sized>(
        &mut self,
        p: &P,
        g: &G,
        pages: SharedPages,
    ) -> Result<(), (Error, SharedPages)> {
        if let Err(e) = self.check_usable() {
            return Err((e, pages));
        }
        if self.reg.is_some() {
            return Err((Error::InUse, pages));
        }
        let count = pages.len() / PAGE_SIZE;
        if count == 0 || !pages.len().is_multiple_of(PAGE_SIZE) || count > REGISTER_MAX_PAGES {
            let len = pages.len();
            return Err((
                Error::BadLength {
                    len,
                    sector_size: PAGE_SIZE as u32,
                },
                pages,
            ));
        }
        if self.reg_table.is_none() {
            match SharedPages::alloc(p, 1) {
                Some(t) => self.reg_table = Some(t),
                None => return Err((Error::NoMemory, pages)),
            }
        }
        let Some(table) = self.reg_table.as_ref().map(SharedPages::mem) else {
            return Err((Error::NoMemory, pages));
        };
        for i in 0..count {
            let granted = pages
                .page_gfn(p, i)
                .ok_or(Error::NoGfn)
                .and_then(|gfn| Ok(g.grant(self.backend, gfn, false)?));
            match granted {
                Ok(r) => table.store_u32(i * 4, r.0),
                Err(e) => {
                    // Take back what was granted (nothing used it yet).
                    for k in 0..i {
                        let _ = g.end(GrantRef(table.load_u32(k * 4)));
                    }
                    return Err((e, pages));
                }
            }
        }
        self.reg = Some(Registered {
            pages,
            count,
            live: true,
        });
        Ok(())
    }

    /// The registered pages, if any (borrowed from the device).
    pub fn registered(&self) -> Option<SharedMem<'_>> {
        self.reg.as_ref().map(|r| r.pages.mem())
    }

    /// Pages registered.
    fn registered_count(&self) -> usize {
        self.reg.as_ref().map_or(0, |r| r.count)
    }

    /// Ends the registered pages' grants (refused while a request on them is in
    /// flight: [`Error::InUse`]; [`Error::NotRegistered`] without any). Gives the
    /// pages back once the backend maps none of them; while it still maps some
    /// ([`Error::GrantsStillMapped`]) they stay registered (XSA-396: not to be
    /// reused) and ending is retried on the next call.
    pub fn release_registered<G: Grants + ?Sized>(&mut self, g: &G) -> Result<SharedPages, Error> {
        if self.reg.is_none() {
            return Err(Error::NotRegistered);
        }
        let busy = self
            .ops
            .iter()
            .any(|o| o.direct && o.state == OpState::InFlight);
        if busy {
            return Err(Error::InUse);
        }
        let left = self.end_registered(g);
        if left > 0 {
            return Err(Error::GrantsStillMapped { count: left });
        }
        self.reg.take().map(|r| r.pages).ok_or(Error::NotRegistered)
    }

    /// Ends the registered pages' grants that are still listed; returns how many
    /// the backend still maps (retried on the next call).
    pub fn end_registered<G: Grants + ?Sized>(&mut self, g: &G) -> usize {
        let count = self.registered_count();
        let mut left = 0;
        if let Some(table) = self.reg_table.as_ref().map(SharedPages::mem) {
            for i in 0..count {
                let gref = table.load_u32(i * 4);
                if gref == NO_GREF {
                    continue;
                }
                match g.end(GrantRef(gref)) {
                    Ok(()) | Err(GrantError::NotInUse(_)) => table.store_u32(i * 4, NO_GREF),
                    Err(_) => left += 1,
                }
            }
        }
        left
    }

    /// Gives up the bounce and indirect pages (for the device to free), but only
    /// while no slot is stuck and no ring is up: then no grant on them is active.
    pub fn take_pages(&mut self) -> Option<(SharedPages, SharedPages)> {
        if self.stuck() != 0 || self.connected() {
            return None;
        }
        let p = self.pages.take()?;
        Some((p.bounce, p.indirect))
    }

    /// Gives up the local page of registered grant refs (for the device to
    /// free), once no registration is left.
    pub fn take_reg_table(&mut self) -> Option<SharedPages> {
        if self.reg.is_some() {
            return None;
        }
        self.reg_table.take()
    }

    /// Slots that are stuck (grants still mapped by a backend).
    pub fn stuck(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Stuck)
            .count()
    }

    /// Requests submitted and not yet answered (including cancelled ones).
    pub fn outstanding(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Waiting | SlotState::Orphan))
            .count()
    }

    /// Allocates the bounce and indirect pages (once) and records their frames.
    pub fn ensure_pages<P: Platform + ?Sized>(&mut self, p: &P) -> Result<(), Error> {
        if self.pages.is_some() {
            return Ok(());
        }
        let n = SLOTS.checked_mul(SEGS).ok_or(Error::NoMemory)?;
        let bounce = SharedPages::alloc(p, n).ok_or(Error::NoMemory)?;
        let indirect = SharedPages::alloc(p, SLOTS).ok_or(Error::NoMemory)?;
        // Kept for the device's lifetime and reused on reconnect; the device frees
        // them when dropped ([`Io::take_pages`]). (On an error below they are
        // dropped, i.e. leaked: nothing was granted yet, but leaking is safe.)
        for (i, slot) in self.slots.iter_mut().enumerate() {
            for (j, g) in slot.gfn.iter_mut().enumerate() {
                *g = gfn32(bounce.page_gfn(p, i * SEGS + j))?;
            }
            slot.ind_gfn = gfn32(indirect.page_gfn(p, i))?;
        }
        self.pages = Some(Pages { bounce, indirect });
        Ok(())
    }

    /// [`Io::start_queues`] with one ring.
    #[cfg(test)]
    pub fn start<G: Grants + ?Sized>(
        &mut self,
        g: &G,
        ring: BlkRing,
        backend: DomId,
        port: Port,
        geo: Geometry,
    ) -> Result<(), Error> {
        self.start_queues(g, &mut [Some((ring, port))], backend, geo)
    }

    /// Starts I/O on freshly initialised rings, one ring and event channel per
    /// queue (the `Some`s of `rings`, taken; at most [`MAX_QUEUES`] and `SLOTS`):
    /// the slots are split between them. Refuses while slots of an earlier
    /// connection are stuck. Zeroes every bounce and indirect page (a new backend must
    /// not see an old connection's data) and, with persistent grants, grants them all.
    pub fn start_queues<G: Grants + ?Sized>(
        &mut self,
        g: &G,
        rings: &mut [Option<(BlkRing, Port)>],
        backend: DomId,
        geo: Geometry,
    ) -> Result<(), Error> {
        let nq = rings.iter().filter(|r| r.is_some()).count();
        if nq == 0 || nq > min(MAX_QUEUES, SLOTS) {
            return Err(Error::NoSuchQueue {
                queue: nq,
                queues: min(MAX_QUEUES, SLOTS),
            });
        }
        if self.pages.is_none() {
            return Err(Error::NoMemory);
        }
        let stuck = self.retry_stuck(g);
        if stuck > 0 {
            return Err(Error::GrantsStillMapped { count: stuck });
        }
        let mut geo = geo;
        geo.segs = geo.segs.clamp(1, SEGS);
        if !geo.indirect {
            geo.segs = min(geo.segs, blkif::MAX_SEGMENTS_PER_REQUEST);
        }
        if let Some(pages) = &self.pages {
            let (bounce, indirect) = (pages.bounce.mem(), pages.indirect.mem());
            bounce.fill(0, bounce.len(), 0);
            indirect.fill(0, indirect.len(), 0);
        }
        for s in self.slots.iter_mut() {
            s.ind_bytes = 0;
        }
        self.backend = backend;
        self.geo = geo;
        self.partition(nq);
        self.broken = None;
        self.plugged = false;
        if geo.persistent {
            if let Err(e) = self.grant_all(g) {
                self.end_all_persistent(g);
                return Err(e);
            }
        }
        for (q, r) in self
            .queues
            .iter_mut()
            .zip(rings.iter_mut().filter_map(Option::take))
        {
            q.ring = Some(r.0);
            q.port = r.1;
        }
        Ok(())
    }

    fn grant_all<G: Grants + ?Sized>(&mut self, g: &G) -> Result<(), Error> {
        let backend = self.backend;
        let segs = self.geo.segs;
        let indirect = self.geo.indirect && segs > blkif::MAX_SEGMENTS_PER_REQUEST;
        for slot in self.slots.iter_mut() {
            for j in 0..segs {
                if let (Some(gfn), Some(r)) = (slot.gfn.get(j), slot.gref.get_mut(j)) {
                    *r = g.grant(backend, Gfn(u64::from(*gfn)), false)?.0;
                }
            }
            if indirect {
                // Writable although the backend only reads it: with persistent
                // grants Linux blkback maps every grant it keeps read-write (also
                // the indirect pages), and a read-only grant fails that map.
                slot.ind_gref = g.grant(backend, Gfn(u64::from(slot.ind_gfn)), false)?.0;
            }
        }
        Ok(())
    }

    /// Ends every grant of slot `i`; returns the first one still mapped.
    fn end_slot_grants<G: Grants + ?Sized>(&mut self, g: &G, i: usize) -> Option<GrantRef> {
        let mut first = None;
        let mut ops = 0;
        if let Some(slot) = self.slots.get_mut(i) {
            for r in slot
                .gref
                .iter_mut()
                .chain(core::iter::once(&mut slot.ind_gref))
            {
                if *r == NO_GREF {
                    continue;
                }
                ops += 1;
                match g.end(GrantRef(*r)) {
                    Ok(()) | Err(GrantError::NotInUse(_)) => *r = NO_GREF,
                    Err(_) => {
                        first.get_or_insert(GrantRef(*r));
                    }
                }
            }
        }
        self.stats.grant_ops += ops;
        first
    }

    fn end_all_persistent<G: Grants + ?Sized>(&mut self, g: &G) {
        for i in 0..SLOTS {
            if self.end_slot_grants(g, i).is_some() {
                if let Some(s) = self.slots.get_mut(i) {
                    s.state = SlotState::Stuck;
                }
            }
        }
    }

    /// Tries again to end the grants of stuck slots; returns how many stay stuck.
    pub fn retry_stuck<G: Grants + ?Sized>(&mut self, g: &G) -> usize {
        let mut left = 0;
        for i in 0..SLOTS {
            if self.slots.get(i).map(|s| s.state) != Some(SlotState::Stuck) {
                continue;
            }
            if self.end_slot_grants(g, i).is_some() {
                left += 1;
            } else if self.slots.get(i).map(|s| s.owner) == Some(NONE) {
                self.release_slot(i);
            } else if let Some(s) = self.slots.get_mut(i) {
                // Still part of an op the caller has not finished.
                s.state = SlotState::Done;
            }
        }
        left
    }

    fn release_slot(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.state = SlotState::Free;
            s.owner = NONE;
            s.next = NONE;
            if let Some(q) = self.queues.get_mut(usize::from(s.queue)) {
                // The queue's own part of the free stacks (a full one takes nothing).
                let (base, len) = (usize::from(q.base), usize::from(q.len));
                let own = self.free.get_mut(base..base + len);
                if let Some(f) = own.and_then(|o| o.get_mut(usize::from(q.nfree))) {
                    *f = i as u16;
                    q.nfree += 1;
                }
            }
        }
    }

    fn take_slot(&mut self, q: usize) -> Option<usize> {
        let queue = self.queues.get_mut(q)?;
        let n = queue.nfree.checked_sub(1)?;
        let i = *self.free.get(usize::from(queue.base + n))? as usize;
        queue.nfree = n;
        Some(i)
    }

    fn take_op(&mut self) -> Option<usize> {
        self.ops.iter().position(|o| o.state == OpState::Free)
    }

    /// Stops using the ring: every op in flight completes with `err`, grants are ended
    /// (those the backend still maps stay, their slots stuck), the ring is dropped.
    /// Returns how many slots are stuck.
    pub fn stop<G: Grants + ?Sized>(&mut self, g: &G, err: Error) -> usize {
        self.fail_all(g, err);
        self.end_all_persistent(g);
        // The registration's grants end with the connection (nothing is in
        // flight now); the pages stay the device's until released.
        let _ = self.end_registered(g);
        if let Some(r) = self.reg.as_mut() {
            r.live = false;
        }
        for q in self.queues.iter_mut() {
            q.ring = None;
        }
        self.stuck()
    }

    /// Marks the device broken and fails everything in flight (rows 1-9).
    pub fn set_broken<G: Grants + ?Sized>(&mut self, g: &G, reason: BrokenReason) {
        if self.broken.is_none() {
            self.broken = Some(reason);
        }
        self.fail_all(g, Error::Broken(reason));
    }

    fn fail_all<G: Grants + ?Sized>(&mut self, g: &G, err: Error) {
        for i in 0..SLOTS {
            let Some(state) = self.slots.get(i).map(|s| s.state) else {
                continue;
            };
            if !matches!(state, SlotState::Waiting | SlotState::Orphan) {
                continue;
            }
            // No answer will be trusted any more: take the grants back now.
            let still = if self.geo.persistent {
                None
            } else {
                self.end_slot_grants(g, i)
            };
            let owner = self.slots.get(i).map_or(NONE, |s| s.owner);
            if still.is_some() {
                if let Some(s) = self.slots.get_mut(i) {
                    s.state = SlotState::Stuck;
                }
            } else if state == SlotState::Orphan {
                self.release_slot(i);
            } else if let Some(s) = self.slots.get_mut(i) {
                s.state = SlotState::Done;
            }
            if state == SlotState::Waiting {
                self.part_done(owner as usize, Some(err));
            }
        }
    }

    fn part_done(&mut self, op: usize, result: Option<Error>) {
        let seq = self.done_seq;
        let Some(o) = self.ops.get_mut(op) else {
            return;
        };
        if o.state != OpState::InFlight {
            return;
        }
        if o.result.is_none() {
            o.result = result;
        }
        o.parts_left = o.parts_left.saturating_sub(1);
        if o.parts_left == 0 {
            o.state = OpState::Done;
            o.done_seq = seq;
            self.done_seq += 1;
        }
    }

    fn check_usable(&self) -> Result<(), Error> {
        if let Some(r) = self.broken {
            return Err(Error::Broken(r));
        }
        if !self.connected() {
            return Err(Error::NotConnected);
        }
        Ok(())
    }

    /// Submits one op (see [`OpSpec`]): splits it into ring requests, copies a
    /// write's data and grants the pages (all before anything is published, so a
    /// failure leaves nothing behind), then pushes the requests and, unless
    /// plugged, notifies the backend.
    pub fn submit<P: Platform + ?Sized, G: Grants + ?Sized>(
        &mut self,
        p: &P,
        g: &G,
        op: &OpSpec<'_>,
    ) -> Result<Tag, Error> {
        let OpSpec {
            kind,
            sector,
            len,
            data,
            start,
            secure: _,
            direct,
        } = *op;
        self.check_usable()?;
        let per = self.bytes_per_request();
        if let Some(first) = direct {
            let pages = self.registered_count();
            let end = len.div_ceil(PAGE_SIZE).checked_add(first);
            let live = self.reg.as_ref().is_some_and(|r| r.live);
            if !live || !matches!(kind, OpKind::Read | OpKind::Write) {
                return Err(Error::NotRegistered);
            }
            if end.is_none_or(|e| e > pages) {
                return Err(Error::BeyondData {
                    offset: first * PAGE_SIZE,
                    len,
                    size: pages * PAGE_SIZE,
                });
            }
        }
        let parts = match kind {
            OpKind::Read | OpKind::Write => len.div_ceil(per),
            OpKind::Flush | OpKind::Discard => 1,
        };
        let max = self.max_inflight();
        if parts > max || parts == 0 {
            return Err(Error::TooLarge {
                max: max.saturating_mul(per),
            });
        }
        let q = self.pick_queue(parts)?;
        let op_i = self.take_op().ok_or(Error::Busy)?;
        let gen = self.ops.get(op_i).map_or(0, |o| o.gen.wrapping_add(1));
        if let Some(o) = self.ops.get_mut(op_i) {
            *o = Op {
                state: OpState::InFlight,
                gen,
                kind,
                len,
                parts_left: parts as u16,
                first: NONE,
                result: None,
                done_seq: 0,
                direct: direct.is_some(),
            };
        }

        // Phase 1: prepare every part (copy, grant); nothing is on the ring yet, so a
        // failure can be rolled back completely.
        let mut src = SrcCursor {
            bufs: data,
            i: start.0,
            off: start.1,
        };
        let mut prev = NONE;
        let mut reqs: [Request; 1] = [Request::default()];
        let mut first = NONE;
        let mut prepared = 0usize;
        let mut failure = None;
        for k in 0..parts {
            let Some(si) = self.take_slot(q) else {
                failure = Some(Error::Busy);
                break;
            };
            let offset = k * per;
            let bytes = match kind {
                OpKind::Read | OpKind::Write => min(per, len - offset),
                _ => 0,
            };
            let sec = sector.saturating_add((offset / 512) as u64);
            if let Some(s) = self.slots.get_mut(si) {
                s.owner = op_i as u16;
                s.next = NONE;
                s.gen = s.gen.wrapping_add(1);
                s.bytes = bytes as u32;
                s.nsegs = bytes.div_ceil(PAGE_SIZE) as u16;
                s.state = SlotState::Done; // prepared, not yet published
            }
            if prev == NONE {
                first = si as u16;
            } else if let Some(s) = self.slots.get_mut(prev as usize) {
                s.next = si as u16;
            }
            prev = si as u16;
            prepared += 1;
            let part = Part {
                slot: si,
                sector: sec,
                bytes,
                direct: direct.map(|d| d + offset / PAGE_SIZE),
            };
            if let Err(e) = self.prepare(g, op, part, &mut src, &mut reqs[0]) {
                failure = Some(e);
                break;
            }
            // Stash the request image in place of publishing it now.
            self.stash(si, reqs[0]);
        }
        if let Some(o) = self.ops.get_mut(op_i) {
            o.first = first;
        }
        if let Some(e) = failure {
            // Roll back: end this op's grants, free its slots and the op.
            let mut s = first;
            for _ in 0..prepared {
                let i = s as usize;
                let next = self.slots.get(i).map_or(NONE, |x| x.next);
                if !self.geo.persistent && self.end_slot_grants(g, i).is_some() {
                    if let Some(x) = self.slots.get_mut(i) {
                        x.state = SlotState::Stuck;
                    }
                } else {
                    self.release_slot(i);
                }
                s = next;
            }
            if let Some(o) = self.ops.get_mut(op_i) {
                o.state = OpState::Free;
            }
            return Err(e);
        }

        // Phase 2: push them all.
        let mut s = first;
        for _ in 0..parts {
            let i = s as usize;
            let req = self.unstash(i);
            let pushed = self
                .queues
                .get_mut(q)
                .and_then(|x| x.ring.as_mut())
                .map(|r| r.push_request(&req))
                .unwrap_or(Err(hypercall::ring::RingError::Full));
            if let Err(e) = pushed {
                // Cannot happen (space and state were checked); treat as broken ring.
                self.set_broken(g, BrokenReason::Ring(e));
                return Err(Error::Broken(BrokenReason::Ring(e)));
            }
            if let Some(x) = self.slots.get_mut(i) {
                x.state = SlotState::Waiting;
                s = x.next;
            }
            self.stats.ring_requests += 1;
        }
        self.stats.ops += 1;
        if !self.plugged {
            // On a failed notification the op is failed with the device (its tag
            // still finishes, with the error); later submissions see the breakage.
            let _ = self.publish_queue(p, g, q);
        }
        Ok(Tag {
            idx: op_i as u16,
            gen,
        })
    }

    /// Builds the request of `part` of `op` in its slot: copies write data (the
    /// whole page: data then zeros), grants (unless persistent), writes the
    /// indirect page.
    fn prepare<G: Grants + ?Sized>(
        &mut self,
        g: &G,
        op: &OpSpec<'_>,
        part: Part,
        src: &mut SrcCursor<'_, '_>,
        out: &mut Request,
    ) -> Result<(), Error> {
        let Part {
            slot: si,
            sector,
            bytes,
            direct,
        } = part;
        let (kind, len, secure) = (op.kind, op.len, op.secure);
        let pages = self.pages.as_ref().ok_or(Error::NoMemory)?;
        let table = self.reg_table.as_ref().map(SharedPages::mem);
        let geo = self.geo;
        let backend = self.backend;
        let Some(slot) = self.slots.get_mut(si) else {
            return Err(Error::Busy);
        };
        let id = u64::from(slot.gen) << 16 | si as u64;
        match kind {
            OpKind::Flush => {
                let op = geo.flush_op.ok_or(Error::NotSupported)?;
                slot.rsp_op = op;
                // No segments, sector 0: the rest of the request is zero.
                *out = Request {
                    operation: op,
                    handle: geo.handle,
                    id,
                    ..Default::default()
                };
                return Ok(());
            }
            OpKind::Discard => {
                slot.rsp_op = blkif::OP_DISCARD;
                *out = Request::from(RequestDiscard {
                    operation: blkif::OP_DISCARD,
                    flag: if secure { blkif::DISCARD_SECURE } else { 0 },
                    handle: geo.handle,
                    id,
                    sector_number: sector,
                    nr_sectors: (len / 512) as u64,
                    ..Default::default()
                });
                return Ok(());
            }
            OpKind::Read | OpKind::Write => {}
        }
        let write = kind == OpKind::Write;
        let op = if write {
            blkif::OP_WRITE
        } else {
            blkif::OP_READ
        };
        slot.rsp_op = op;
        let nsegs = bytes.div_ceil(PAGE_SIZE);
        let base = si * SEGS;
        let mut segs = [RequestSegment::default(); blkif::MAX_SEGMENTS_PER_REQUEST];
        let use_indirect = nsegs > blkif::MAX_SEGMENTS_PER_REQUEST;
        let ind = pages
            .indirect
            .mem()
            .sub(si * PAGE_SIZE, PAGE_SIZE)
            .ok_or(Error::NoMemory)?;
        let mut granted = 0u64;
        let mut block = [RequestSegment::default(); IND_BLOCK];
        // With persistent grants a slot's descriptors depend only on the request's
        // size: if the indirect page already holds them, it is not rewritten (the
        // backend then reads lines it has cached instead of lines just written on
        // another CPU). The page is granted to this backend alone, like every page
        // whose grefs it lists, so trusting its content gives it nothing it does
        // not already have.
        // (Never for the caller's registered pages: their refs differ.)
        let reuse =
            use_indirect && geo.persistent && direct.is_none() && slot.ind_bytes == bytes as u32;
        let walk = if reuse && !write { 0 } else { nsegs };
        for j in 0..walk {
            let in_page = min(PAGE_SIZE, bytes - j * PAGE_SIZE);
            if let Some(first) = direct {
                // The caller's registered page, granted for the connection: the
                // data goes straight to (comes straight from) it.
                let t = table.ok_or(Error::NotRegistered)?;
                let seg = RequestSegment {
                    gref: t.load_u32((first + j) * 4),
                    first_sect: 0,
                    last_sect: (in_page / 512).saturating_sub(1) as u8,
                    _pad: [0; 2],
                };
                if use_indirect {
                    let k = j % IND_BLOCK;
                    if let Some(b) = block.get_mut(k) {
                        *b = seg;
                    }
                    if k == IND_BLOCK - 1 || j == nsegs - 1 {
                        let at = j - k;
                        let bytes = block.get(..=k).unwrap_or_default().as_bytes();
                        ind.write(at * core::mem::size_of::<RequestSegment>(), bytes);
                    }
                } else if let Some(s) = segs.get_mut(j) {
                    *s = seg;
                }
                continue;
            }
            if write {
                let page = pages
                    .bounce
                    .mem()
                    .sub((base + j) * PAGE_SIZE, PAGE_SIZE)
                    .ok_or(Error::NoMemory)?;
                // Row 16 / XSA-403: the page carries this request's data and zeros.
                let got = src.copy_to(&page, 0, in_page);
                page.fill(got, PAGE_SIZE - got, 0);
            }
            // A read page is not zeroed here (that was a third pass over the data, and
            // the reason 1 MiB reads ran at a fifth of pread). It is safe (row 16,
            // XSA-403, B9 as Linux blkfront reads it): bounce pages belong to this
            // device alone, were zeroed when allocated and again in `start` (every
            // connection, so a different backend never sees them dirty), and since
            // then only ever held write data given to this backend or read data this
            // backend wrote. A backend answering OKAY without writing therefore hands
            // the caller only bytes it already had and could have written itself: no
            // data leaks to the backend, and nothing the backend could not forge
            // reaches the caller. (Tests: row16_*.)
            let gref = slot.gref.get_mut(j).ok_or(Error::NoGfn)?;
            if !geo.persistent {
                let gfn = *slot.gfn.get(j).ok_or(Error::NoGfn)?;
                // A write's pages are granted read-only (row 10).
                *gref = g.grant(backend, Gfn(u64::from(gfn)), write)?.0;
                granted += 1;
            }
            let seg = RequestSegment {
                gref: *gref,
                first_sect: 0,
                last_sect: (in_page / 512).saturating_sub(1) as u8,
                _pad: [0; 2],
            };
            if reuse {
                continue;
            }
            if use_indirect {
                // Gathered here, written to the shared page in blocks (one copy per
                // block instead of one per 8-byte descriptor).
                let k = j % IND_BLOCK;
                if let Some(b) = block.get_mut(k) {
                    *b = seg;
                }
                if k == IND_BLOCK - 1 || j == nsegs - 1 {
                    let first = j - k;
                    let bytes = block.get(..=k).unwrap_or_default().as_bytes();
                    ind.write(first * core::mem::size_of::<RequestSegment>(), bytes);
                }
            } else if let Some(s) = segs.get_mut(j) {
                *s = seg;
            }
        }
        self.stats.grant_ops += granted;
        if use_indirect {
            if !reuse {
                let used = nsegs * core::mem::size_of::<RequestSegment>();
                ind.fill(used, PAGE_SIZE - used, 0);
                slot.ind_bytes = if geo.persistent && direct.is_none() {
                    bytes as u32
                } else {
                    0
                };
            }
            if !geo.persistent {
                slot.ind_gref = g.grant(backend, Gfn(u64::from(slot.ind_gfn)), true)?.0;
                self.stats.grant_ops += 1;
            }
            let mut grefs = [0u32; blkif::MAX_INDIRECT_PAGES_PER_REQUEST];
            grefs[0] = slot.ind_gref;
            *out = Request::from(RequestIndirect {
                operation: blkif::OP_INDIRECT,
                indirect_op: op,
                nr_segments: nsegs as u16,
                id,
                sector_number: sector,
                handle: geo.handle,
                indirect_grefs: grefs,
                ..Default::default()
            });
        } else {
            *out = Request {
                operation: op,
                nr_segments: nsegs as u8,
                handle: geo.handle,
                id,
                sector_number: sector,
                seg: segs,
                ..Default::default()
            };
        }
        Ok(())
    }

    fn stash(&mut self, si: usize, req: Request) {
        if let Some(s) = self.stash.get_mut(si) {
            *s = req;
        }
    }

    fn unstash(&mut self, si: usize) -> Request {
        self.stash.get(si).copied().unwrap_or_default()
    }

    /// Publishes pushed requests and notifies if the backend asked for it. A failed
    /// notification (`EVTCHNOP_send`: the backend closed or never bound its end,
    /// docs/hostile-input.md E4) breaks the device: every request in flight, the ones just
    /// published included, fails with [`BrokenReason::Notify`].
    pub fn publish<P: Platform + ?Sized, G: Grants + ?Sized>(
        &mut self,
        p: &P,
        g: &G,
    ) -> Result<(), Error> {
        for q in 0..self.nq {
            self.publish_queue(p, g, q)?;
        }
        Ok(())
    }

    /// [`Io::publish`] for queue `q` alone (its own event channel).
    fn publish_queue<P: Platform + ?Sized, G: Grants + ?Sized>(
        &mut self,
        p: &P,
        g: &G,
        q: usize,
    ) -> Result<(), Error> {
        let Some(queue) = self.queues.get_mut(q) else {
            return Ok(());
        };
        let notify = match queue.ring.as_mut() {
            Some(r) => r.push_requests_and_check_notify(),
            None => false,
        };
        let port = queue.port;
        if notify {
            self.stats.notifications += 1;
            if let Err(e) = Xen(p).evtchn_send(port) {
                self.set_broken(g, BrokenReason::Notify(e));
                return Err(Error::Broken(BrokenReason::Notify(e)));
            }
        }
        Ok(())
    }

    /// While plugged, submissions are written to the ring but not published.
    pub fn set_plugged<P: Platform + ?Sized, G: Grants + ?Sized>(
        &mut self,
        p: &P,
        g: &G,
        plugged: bool,
    ) -> Result<(), Error> {
        self.plugged = plugged;
        if !plugged && self.connected() {
            self.publish(p, g)?;
        }
        Ok(())
    }

    /// Consumes every available response (no re-arming; see [`Io::final_check`]).
    /// Returns the number consumed. A protocol violation breaks the device.
    pub fn poll<G: Grants + ?Sized>(&mut self, g: &G) -> Result<usize, Error> {
        self.check_usable()?;
        let mut n = 0;
        for q in 0..self.nq {
            loop {
                let polled = self
                    .queues
                    .get_mut(q)
                    .and_then(|x| x.ring.as_mut())
                    .map(|r| r.poll_response());
                let rsp = match polled {
                    Some(Ok(Some(r))) => r,
                    Some(Ok(None)) | None => break,
                    Some(Err(e)) => {
                        self.set_broken(g, BrokenReason::Ring(e));
                        return Err(Error::Broken(BrokenReason::Ring(e)));
                    }
                };
                n += 1;
                self.stats.responses += 1;
                if let Err(reason) = self.complete(g, q, rsp) {
                    self.set_broken(g, reason);
                    return Err(Error::Broken(reason));
                }
            }
        }
        Ok(n)
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: re-arms the notification; `true` if
    /// responses arrived meanwhile (poll again before sleeping).
    pub fn final_check<G: Grants + ?Sized>(&mut self, g: &G) -> Result<bool, Error> {
        self.final_check_batched(g, 1)
    }

    /// [`Io::final_check`] asking for one notification per `batch` responses (clamped
    /// by the ring to the published requests still unanswered, so it always comes
    /// from a backend that answers). With several queues each ring is asked for
    /// its share of `batch` (rounded up), so the first ring to reach it wakes us.
    pub fn final_check_batched<G: Grants + ?Sized>(
        &mut self,
        g: &G,
        batch: u32,
    ) -> Result<bool, Error> {
        self.check_usable()?;
        let batch = batch.div_ceil(self.nq.max(1) as u32).max(1);
        let mut more = false;
        for q in self.queues.iter_mut().take(self.nq) {
            match q
                .ring
                .as_mut()
                .map(|r| r.final_check_for_responses_batched(batch))
            {
                Some(Ok(m)) => more |= m,
                Some(Err(e)) => {
                    self.set_broken(g, BrokenReason::Ring(e));
                    return Err(Error::Broken(BrokenReason::Ring(e)));
                }
                None => return Err(Error::NotConnected),
            }
        }
        Ok(more)
    }

    /// Checks and applies one response read from queue `q`'s ring: its id must
    /// name a slot of that queue (an id another queue issued is unknown here).
    fn complete<G: Grants + ?Sized>(
        &mut self,
        g: &G,
        q: usize,
        rsp: Response,
    ) -> Result<(), BrokenReason> {
        let id = rsp.id;
        let si = (id & 0xffff) as usize;
        let gen = ((id >> 16) & 0xffff) as u16;
        if id >> 32 != 0 || si >= SLOTS {
            return Err(BrokenReason::UnknownId(id));
        }
        let (state, slot_gen, rsp_op, owner) = match self.slots.get(si) {
            Some(s) if usize::from(s.queue) == q => (s.state, s.gen, s.rsp_op, s.owner),
            _ => return Err(BrokenReason::UnknownId(id)),
        };
        if slot_gen != gen || !matches!(state, SlotState::Waiting | SlotState::Orphan) {
            return Err(BrokenReason::NotOutstanding(id));
        }
        if rsp.operation != rsp_op {
            return Err(BrokenReason::WrongOperation {
                id,
                expected: rsp_op,
                got: rsp.operation,
            });
        }
        let result = status_result(rsp.status);
        let still = if self.geo.persistent {
            None
        } else {
            self.end_slot_grants(g, si)
        };
        if let Some(s) = self.slots.get_mut(si) {
            s.state = if still.is_some() {
                SlotState::Stuck
            } else {
                SlotState::Done
            };
        }
        if state == SlotState::Orphan {
            if still.is_none() {
                self.release_slot(si);
            }
        } else {
            if result == Some(Error::Io(IoError::NotSupported)) {
                // Linux: EOPNOTSUPP on flush/barrier/discard turns the feature off.
                match rsp_op {
                    blkif::OP_FLUSH_DISKCACHE | blkif::OP_WRITE_BARRIER => self.geo.flush_op = None,
                    blkif::OP_DISCARD => self.geo.discard = false,
                    _ => {}
                }
            }
            let r = match still {
                Some(r) => Some(Error::Broken(BrokenReason::GrantStillMapped(r))),
                None => result,
            };
            self.part_done(owner as usize, r);
        }
        if let Some(r) = still {
            return Err(BrokenReason::GrantStillMapped(r));
        }
        if let blkif::RSP_OKAY | blkif::RSP_ERROR | blkif::RSP_EOPNOTSUPP = rsp.status {
            Ok(())
        } else {
            Err(BrokenReason::UnknownStatus {
                id,
                status: rsp.status,
            })
        }
    }

    fn op_of(&self, tag: Tag) -> Result<&Op, Error> {
        match self.ops.get(tag.idx as usize) {
            Some(o) if o.gen == tag.gen && o.state != OpState::Free => Ok(o),
            _ => Err(Error::UnknownTag),
        }
    }

    /// Whether `tag` has completed (successfully or not).
    pub fn is_done(&self, tag: Tag) -> Result<bool, Error> {
        Ok(self.op_of(tag)?.state == OpState::Done)
    }

    /// The kind and length of a live op.
    pub fn describe(&self, tag: Tag) -> Result<(OpKind, usize), Error> {
        let o = self.op_of(tag)?;
        Ok((o.kind, o.len))
    }

    /// The oldest completed op not yet finished.
    pub fn next_done(&self) -> Option<Tag> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.state == OpState::Done)
            .min_by_key(|(_, o)| o.done_seq)
            .map(|(i, o)| Tag {
                idx: i as u16,
                gen: o.gen,
            })
    }

    /// The regions of the bounce pages holding a completed read's data, in order
    /// (one per ring request of the op). A failed read gives its error (the op
    /// stays until [`Io::finish`]).
    pub fn read_regions(
        &self,
        tag: Tag,
    ) -> Result<impl Iterator<Item = SharedMem<'_>> + '_, Error> {
        let op = *self.op_of(tag)?;
        if op.state != OpState::Done {
            return Err(Error::NotDone);
        }
        if op.kind != OpKind::Read {
            return Err(Error::NotARead);
        }
        if op.direct {
            return Err(Error::InRegisteredPages);
        }
        if let Some(e) = op.result {
            return Err(e);
        }
        let pages = self.pages.as_ref();
        let mut s = op.first;
        Ok(core::iter::from_fn(move || {
            let slot = self.slots.get(s as usize)?;
            let region = pages?
                .bounce
                .mem()
                .sub(s as usize * SEGS * PAGE_SIZE, slot.bytes as usize);
            s = slot.next;
            region
        }))
    }

    /// Retires a completed op: copies read data into `bufs` (their total length must
    /// equal the op's; an empty list drops the data), frees its slots. Returns the
    /// bytes transferred.
    pub fn finish(&mut self, tag: Tag, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        let op = *self.op_of(tag)?;
        if op.state == OpState::Done
            && op.result.is_none()
            && op.kind == OpKind::Read
            && !op.direct
            && !bufs.is_empty()
            && total_len_mut(bufs) != op.len
        {
            return Err(Error::BadLength {
                len: total_len_mut(bufs),
                sector_size: 512,
            });
        }
        self.finish_from(tag, bufs, &mut (0, 0))
    }

    /// [`Io::finish`] copying a read's data into `bufs` from `cursor` (buffer
    /// index, offset in it) on, which moves past the data; `bufs` must hold at
    /// least that much from there (an empty list drops the data).
    pub fn finish_from(
        &mut self,
        tag: Tag,
        bufs: &mut [&mut [u8]],
        cursor: &mut (usize, usize),
    ) -> Result<usize, Error> {
        let op = *self.op_of(tag)?;
        if op.state != OpState::Done {
            return Err(Error::NotDone);
        }
        if op.direct && !bufs.is_empty() {
            // The data is in the registered pages; the bounce pages hold none.
            return Err(Error::InRegisteredPages);
        }
        if op.result.is_none() && op.kind == OpKind::Read && !bufs.is_empty() {
            let (i, off) = *cursor;
            let room = bufs.get(i..).map_or(0, |b| {
                total_len_mut(b).saturating_sub(off.min(b.first().map_or(0, |f| f.len())))
            });
            if room < op.len {
                return Err(Error::BadLength {
                    len: room,
                    sector_size: 512,
                });
            }
            let mut dst = DstCursor { bufs, i, off };
            for r in self.read_regions(tag)? {
                dst.copy_from(&r, 0, r.len());
            }
            *cursor = (dst.i, dst.off);
        }
        self.retire(tag, op.first);
        match op.result {
            None => Ok(if op.kind == OpKind::Flush { 0 } else { op.len }),
            Some(e) => Err(e),
        }
    }

    /// Cancels an op: the caller stops waiting for it. Parts still in flight keep
    /// their slots and grants until the backend answers (or the device is torn down
    /// and ending the grants succeeds).
    pub fn cancel(&mut self, tag: Tag) -> Result<(), Error> {
        let op = *self.op_of(tag)?;
        self.retire(tag, op.first);
        Ok(())
    }

    /// Frees op `tag` and walks its slot chain from `first`: answered slots are
    /// freed, stuck ones lose their owner (they stay out of use), and waiting ones
    /// become orphans freed when the backend answers. (Only a cancelled op has
    /// waiting slots: a finished one is done, so every part was answered or
    /// failed.)
    fn retire(&mut self, tag: Tag, first: u16) {
        let mut s = first;
        while s != NONE {
            let i = s as usize;
            let Some(slot) = self.slots.get(i) else {
                break;
            };
            let next = slot.next;
            match slot.state {
                SlotState::Done => self.release_slot(i),
                SlotState::Waiting => {
                    if let Some(x) = self.slots.get_mut(i) {
                        x.state = SlotState::Orphan;
                        x.owner = NONE;
                    }
                }
                SlotState::Stuck => {
                    if let Some(x) = self.slots.get_mut(i) {
                        x.owner = NONE;
                    }
                }
                _ => {}
            }
            s = next;
        }
        if let Some(o) = self.ops.get_mut(tag.idx as usize) {
            o.state = OpState::Free;
        }
    }
}

fn gfn32(g: Option<Gfn>) -> Result<u32, Error> {
    g.and_then(|g| u32::try_from(g.0).ok()).ok_or(Error::NoGfn)
}
