//! Test-only record of every access to shared memory (cargo feature `read-audit`).
//!
//! With the feature on, every [`SharedMem`] access (copies, atomic loads and stores,
//! read-modify-writes) is appended to a log of the calling thread while that thread
//! records ([`start`] .. [`take`]). Tests use it to prove the read-once rules of
//! docs/hostile-input.md row 3 / docs/hostile-input.md R4, R5 (each slot the other side produced is copied
//! out exactly once, in one read covering it; our own requests are never read back)
//! and the index order of `io/ring.h` ([`check_front_ring`], [`check_back_ring`],
//! [`check_byte_ring`]).
//!
//! The feature needs `std` (a per-thread log) and is for tests only: frontends enable
//! it from their `[dev-dependencies]`; the `no_std` build never has it, and with it
//! off the hooks compile to nothing. Other threads (a hostile "flipper" rewriting a
//! slot, a backend thread) are not recorded; a fake backend that runs on the tested
//! thread wraps its work in [`paused`].
//!
//! ```
//! use core::ptr::NonNull;
//! use hypercall::audit::{self, Op};
//! use hypercall::SharedMem;
//!
//! let mut backing = [0u64; 4];
//! // SAFETY: `backing` outlives `mem` and is only accessed through it.
//! let mem = unsafe { SharedMem::new(NonNull::new(backing.as_mut_ptr().cast()).unwrap(), 32) };
//! audit::start();
//! mem.store_u32(0, 7);
//! let _ = mem.load_u32(0);
//! let _: [u8; 8] = mem.read_obj(8);
//! let log = audit::take();
//! assert_eq!(log.len(), 3);
//! assert_eq!((log[1].op, log[1].value, log[1].offset_in(&mem)), (Op::Load, 7, Some(0)));
//! assert_eq!((log[2].op, log[2].len), (Op::Read, 8));
//! ```
extern crate std;

use crate::abi::ring as layout;
use crate::ring::ring_size;
use crate::SharedMem;
use core::cell::RefCell;
use core::fmt;
use core::mem::size_of;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::vec::Vec;

/// What an access did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A copy out of shared memory (`read`, `read_obj`, source of `copy_from`).
    Read,
    /// An atomic load (`load_u8/u16/u32/u64`).
    Load,
    /// An atomic read-modify-write (`cmpxchg_*`, `swap_*`, `fetch_*`): reads too.
    Update,
    /// A copy into shared memory (`write`, `write_obj`, `fill`, target of `copy_from`).
    Write,
    /// An atomic store (`store_u8/u16/u32/u64`).
    Store,
}

/// One access, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// First byte's address.
    pub addr: usize,
    /// Bytes accessed (never 0: empty accesses are not recorded).
    pub len: usize,
    /// What was done.
    pub op: Op,
    /// For atomics: the value loaded or stored (`Update`: the previous value).
    /// 0 for copies.
    pub value: u64,
}

impl Access {
    /// Whether the access reads shared memory.
    pub fn reads(&self) -> bool {
        matches!(self.op, Op::Read | Op::Load | Op::Update)
    }

    /// The offset of this access inside `mem`, if it lies entirely inside it.
    pub fn offset_in(&self, mem: &SharedMem<'_>) -> Option<usize> {
        let off = self.addr.checked_sub(mem.as_ptr().addr())?;
        mem.contains(off, self.len).then_some(off)
    }
}

std::thread_local! {
    /// `Some` while this thread records.
    static LOG: RefCell<Option<Vec<Access>>> = const { RefCell::new(None) };
}

/// How many threads' logs are `Some` (a thread that ends while recording stays
/// counted, which only costs the shortcut). While it is 0, [`record`] returns
/// after one atomic load instead of looking up the thread's log: most accesses
/// in the tests are made while nothing records (a fake peer runs [`paused`]), and
/// under Miri, which interprets each one, the lookup was a large share of the
/// tests' cost (docs/miri.md). A recording thread counted itself before its own
/// accesses, so it always sees a non-zero count.
static RECORDING: AtomicUsize = AtomicUsize::new(0);

/// Sets this thread's log to `new`, keeping [`RECORDING`] in step; returns the old.
fn replace(l: &RefCell<Option<Vec<Access>>>, new: Option<Vec<Access>>) -> Option<Vec<Access>> {
    let now = new.is_some();
    let old = l.replace(new);
    match (old.is_some(), now) {
        (false, true) => {
            RECORDING.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            RECORDING.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
    old
}

/// Starts (or restarts, discarding what was logged) recording on this thread.
pub fn start() {
    LOG.with(|l| replace(l, Some(Vec::new())));
}

/// Stops recording on this thread and returns the log, oldest first (empty if this
/// thread was not recording).
pub fn take() -> Vec<Access> {
    LOG.with(|l| replace(l, None)).unwrap_or_default()
}

/// Runs `f` without recording its accesses (e.g. a fake backend stepped on the
/// thread under test), then carries on recording if this thread was.
pub fn paused<R>(f: impl FnOnce() -> R) -> R {
    struct Resume(Option<Vec<Access>>);
    impl Drop for Resume {
        fn drop(&mut self) {
            let log = self.0.take();
            let _ = LOG.try_with(|l| replace(l, log));
        }
    }
    let _resume = Resume(LOG.with(|l| replace(l, None)));
    f()
}

/// Appends an access to this thread's log if it records (called by `SharedMem`).
pub(crate) fn record(addr: usize, len: usize, op: Op, value: u64) {
    if len == 0 || RECORDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let _ = LOG.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            if let Some(v) = l.as_mut() {
                v.push(Access {
                    addr,
                    len,
                    op,
                    value,
                });
            }
        }
    });
}

/// A breach of the ring rules found in a log: which access (its position in the
/// log) and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Index of the offending access in the log.
    pub at: usize,
    /// The access.
    pub access: Access,
    /// Its offset in the ring's memory.
    pub offset: usize,
    /// The rule it broke.
    pub rule: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "access #{} ({:?} of {} bytes at ring offset {}, value {:#x}): {}",
            self.at, self.access.op, self.access.len, self.offset, self.access.value, self.rule
        )
    }
}

/// What one side of a ring did, per the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingSummary {
    /// Slots of the peer consumed (each read exactly once).
    pub consumed: u32,
    /// Slots we wrote.
    pub written: u32,
    /// Slots we published (our producer index advanced by this much).
    pub published: u32,
    /// Loads of the peer's producer index.
    pub prod_loads: u32,
    /// Loads of the peer's event index (notification checks).
    pub event_loads: u32,
}

/// Where one side of a `io/ring.h` ring keeps what, and where it starts.
struct Side {
    /// The peer's producer index (we load it).
    peer_prod: usize,
    /// The peer's event index (we load it after publishing).
    peer_event: usize,
    /// Our producer index (we store it, never load it).
    own_prod: usize,
    /// Our event index (we store it, then re-check `peer_prod`).
    own_event: usize,
    /// Bytes of one item we consume / produce.
    take: usize,
    put: usize,
    slot: usize,
    /// Frontend: slots are free while `prod - cons < size`; backend: a response
    /// goes to a slot whose request was consumed.
    front: bool,
}

/// Checks a frontend's log against the `io/ring.h` rules for a
/// [`FrontRing<Req, Rsp>`](crate::ring::FrontRing) on `mem` whose `rsp_cons` and
/// `req_prod_pvt` were `rsp_cons` and `req_prod` when the log started:
/// - `rsp_prod` is loaded only when every response seen before was consumed
///   (`RING_HAS_UNCONSUMED_RESPONSES` then the `rmb` loop);
/// - each response slot is read exactly once, in one read of exactly
///   `size_of::<Rsp>()` bytes at the slot's start, in index order, and only after a
///   `rsp_prod` load showed it published (R4, row 3);
/// - request slots are written whole, in order, only while free, before the
///   `req_prod` store that publishes them, and never read back (R5);
/// - `req_event` is loaded only right after a `req_prod` store
///   (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`); `rsp_event` is stored ahead of
///   `rsp_cons` and followed by a fresh `rsp_prod` load (`RING_FINAL_CHECK_*`);
/// - our own indices are never loaded, the peer's never stored, the header's
///   padding never touched.
pub fn check_front_ring<Req, Rsp>(
    log: &[Access],
    mem: &SharedMem<'_>,
    rsp_cons: u32,
    req_prod: u32,
) -> Result<RingSummary, Violation> {
    let side = Side {
        peer_prod: layout::RSP_PROD,
        peer_event: layout::REQ_EVENT,
        own_prod: layout::REQ_PROD,
        own_event: layout::RSP_EVENT,
        take: size_of::<Rsp>(),
        put: size_of::<Req>(),
        slot: size_of::<Req>().max(size_of::<Rsp>()),
        front: true,
    };
    check_ring(log, mem, &side, rsp_cons, req_prod)
}

/// [`check_front_ring`] for the backend end ([`BackRing<Req,
/// Rsp>`](crate::ring::BackRing)), starting at `req_cons` / `rsp_prod_pvt`: request
/// slots read once each after `req_prod` showed them, responses written only into
/// slots whose request was consumed, `rsp_event` loaded right after a `rsp_prod`
/// store, `req_event` stored then `req_prod` re-checked.
pub fn check_back_ring<Req, Rsp>(
    log: &[Access],
    mem: &SharedMem<'_>,
    req_cons: u32,
    rsp_prod: u32,
) -> Result<RingSummary, Violation> {
    let side = Side {
        peer_prod: layout::REQ_PROD,
        peer_event: layout::RSP_EVENT,
        own_prod: layout::RSP_PROD,
        own_event: layout::REQ_EVENT,
        take: size_of::<Req>(),
        put: size_of::<Rsp>(),
        slot: size_of::<Req>().max(size_of::<Rsp>()),
        front: false,
    };
    check_ring(log, mem, &side, req_cons, rsp_prod)
}

fn check_ring(
    log: &[Access],
    mem: &SharedMem<'_>,
    s: &Side,
    mut cons: u32,
    mut pvt: u32,
) -> Result<RingSummary, Violation> {
    let size = ring_size(mem.len(), s.slot);
    let mut sum = RingSummary::default();
    // The peer producer value last loaded, and our last published index.
    let mut seen: Option<u32> = None;
    let mut published = pvt;
    // The previous header access, for the "right after" rules.
    let mut last_hdr: Option<(usize, Op)> = None;
    for (at, a) in log.iter().enumerate() {
        let Some(off) = a.offset_in(mem) else {
            continue;
        };
        let fail = |rule| {
            Err(Violation {
                at,
                access: *a,
                offset: off,
                rule,
            })
        };
        if off >= layout::HEADER_SIZE {
            let rel = off - layout::HEADER_SIZE;
            let (idx, within) = (rel / s.slot, rel % s.slot);
            if size == 0 || within != 0 {
                return fail("access not at the start of a slot");
            }
            if a.reads() {
                if a.op != Op::Read || a.len != s.take {
                    return fail("slot not read in one copy of exactly one item");
                }
                if idx as u32 != cons & (size - 1) {
                    return fail("slot read is not the next one to consume (read twice, skipped or read back)");
                }
                match seen {
                    Some(p) if p.wrapping_sub(cons).wrapping_sub(1) < size => {}
                    _ => return fail("slot read before the producer index showed it"),
                }
                cons = cons.wrapping_add(1);
                sum.consumed += 1;
            } else {
                if a.len != s.put {
                    return fail("slot not written as one whole item");
                }
                if idx as u32 != pvt & (size - 1) {
                    return fail("slot written out of order");
                }
                let free = if s.front {
                    pvt.wrapping_sub(cons) < size
                } else {
                    cons.wrapping_sub(pvt).wrapping_sub(1) < size
                };
                if !free {
                    return fail("slot written while the peer may still own it");
                }
                pvt = pvt.wrapping_add(1);
                sum.written += 1;
            }
            continue;
        }
        let hdr = (off, a.op);
        if a.len != 4 && off < layout::PVT {
            return fail("index not accessed as one u32");
        }
        match (off, a.op) {
            (o, Op::Load) if o == s.peer_prod => {
                if let Some(p) = seen {
                    if p != cons {
                        return fail(
                            "producer index re-read before the responses seen were consumed",
                        );
                    }
                }
                seen = Some(a.value as u32);
                sum.prod_loads += 1;
            }
            (o, Op::Load) if o == s.peer_event => {
                if last_hdr != Some((s.own_prod, Op::Store)) {
                    return fail("event index loaded other than right after publishing");
                }
                sum.event_loads += 1;
            }
            (o, Op::Store) if o == s.own_prod => {
                let v = a.value as u32;
                if v.wrapping_sub(published) > pvt.wrapping_sub(published) {
                    return fail("published an index past the slots written (or backwards)");
                }
                sum.published = sum.published.wrapping_add(v.wrapping_sub(published));
                published = v;
            }
            (o, Op::Store) if o == s.own_event => {
                let ahead = (a.value as u32).wrapping_sub(cons);
                if ahead == 0 || ahead > size {
                    return fail("event index not set 1..=size ahead of the consumer");
                }
            }
            _ => return fail("header access other than the side's own loads and stores"),
        }
        if let Some((o, Op::Store)) = last_hdr {
            if o == s.own_event && hdr != (s.peer_prod, Op::Load) {
                return fail("event index set without checking the producer again");
            }
        }
        last_hdr = Some(hdr);
    }
    Ok(sum)
}

/// Checks a consumer's log on a byte ring (xenstore responses, console input):
/// `data..data+size` holds the bytes, `prod`/`cons` are the peer's producer and our
/// consumer index (`u32`, free-running), and our consumer index was `cons_start`.
/// Every byte is read exactly once, in order, in copies that each stay inside the
/// ring, only after a `prod` load showed it; `cons` is stored only with the index
/// of what was read so far, and never loaded (we keep it privately). Returns the
/// bytes consumed. Accesses outside those three places are ignored.
pub fn check_byte_ring(
    log: &[Access],
    mem: &SharedMem<'_>,
    data: usize,
    size: usize,
    prod: usize,
    cons: usize,
    cons_start: u32,
) -> Result<u32, Violation> {
    let mut next = cons_start;
    let mut seen: Option<u32> = None;
    for (at, a) in log.iter().enumerate() {
        let Some(off) = a.offset_in(mem) else {
            continue;
        };
        let fail = |rule| {
            Err(Violation {
                at,
                access: *a,
                offset: off,
                rule,
            })
        };
        if off >= data && off < data + size {
            if !a.reads() {
                continue;
            }
            if a.op != Op::Read || off + a.len > data + size {
                return fail("ring bytes not copied out within the ring");
            }
            if off - data != next as usize % size {
                return fail("ring bytes read out of order (twice, skipped or read back)");
            }
            let len = a.len as u32;
            match seen {
                Some(p) if p.wrapping_sub(next) >= len && p.wrapping_sub(next) <= size as u32 => {}
                _ => return fail("ring bytes read before the producer index showed them"),
            }
            next = next.wrapping_add(len);
        } else if off == prod && a.reads() {
            if a.op != Op::Load || a.len != 4 {
                return fail("producer index not loaded as one u32");
            }
            seen = Some(a.value as u32);
        } else if off == cons && (a.op != Op::Store || a.value as u32 != next) {
            return fail("consumer index loaded, or stored other than as the bytes read");
        }
    }
    Ok(next.wrapping_sub(cons_start))
}
