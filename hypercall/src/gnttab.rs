//! Guest grant table, version 1: granting our pages to another domain.
//!
//! ```text
//!   grant frames (SharedMem, nr_frames pages, 512 entries each)
//!   ┌────────────┬────────────┬─────┐      entry = { u16 flags, u16 domid, u32 frame }
//!   │ ref 0..7   │ ref 8      │ ... │      refs 0..8: reserved for the toolstack
//!   │ (reserved) │ granted    │     │
//!   └────────────┴────────────┴─────┘
//!   free list: private `[u32; N]` chain inside GrantTable<N>, under a spin::Mutex
//! ```
//!
//! The table manages refs `0..N` (`N` a const generic, at most `nr_frames * 512`);
//! refs `0..8` are never handed out (`GNTTAB_NR_RESERVED_ENTRIES`). The free list is
//! a private array of `N` `u32` links (4 bytes per ref, no heap): put a large table
//! in a `static` or a box rather than on a small stack. We never keep bookkeeping in
//! the grant frames themselves: Xen reads them.
//!
//! Ending access can fail while the other domain still maps the page
//! ([`Error::StillMapped`], docs/hostile-input.md row 26, XSA-396): the ref then stays in use and
//! the caller must keep the page out of reuse until a later
//! [`GrantTable::end_access`] succeeds (see [`GrantTable::try_end_access`]).
//!
//! Thread safety: all methods take `&self`; the free list is behind a
//! `spin::Mutex` (held only for a few instructions, never across a hypercall or a
//! wait), entries are written with atomics. Callable from threads; do not call from
//! an upcall handler that may interrupt a holder of the lock on the same CPU.

use crate::abi::gnttab as abi;
use crate::abi::memory;
use crate::platform::{DomId, Gfn, GrantRef, Platform, PAGE_SIZE};
use crate::shmem::{wmb, SharedMem, SharedPages};
use crate::xen::{Xen, XenError};
use core::fmt;
use core::mem::size_of;

/// Grant-table failures.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No free grant reference.
    Exhausted,
    /// The other domain still maps (`GTF_reading`/`GTF_writing`) this ref: access
    /// was not ended, the ref stays in use and its page must not be reused.
    StillMapped(GrantRef),
    /// The ref is not one this table handed out (reserved, out of range or free).
    NotInUse(GrantRef),
    /// A v1 entry holds a 32-bit frame number; this gfn does not fit.
    FrameTooLarge(Gfn),
    /// The frames given are not whole pages or hold fewer than `N` entries (or `N`
    /// is not above the reserved refs).
    BadTable {
        /// Bytes of grant frames.
        bytes: usize,
        /// Refs wanted (`N`).
        entries: usize,
    },
    /// The hypervisor allows fewer frames than requested.
    TooManyFrames {
        /// Frames requested.
        wanted: u32,
        /// `max_nr_frames` from `GNTTABOP_query_size`.
        max: u32,
    },
    /// The platform could not allocate the frames' pages.
    NoMemory,
    /// The platform could not translate a frame's address to a gfn.
    NoGfn,
    /// A hypercall failed.
    Xen(XenError),
    /// The table has no frames yet ([`GrantTable::empty`] before
    /// [`GrantTable::init`] / [`GrantTable::setup_in_place`]).
    NotSetUp,
    /// [`GrantTable::init`] / [`GrantTable::setup_in_place`] on a table that has
    /// frames already.
    AlreadySetUp,
}

impl From<XenError> for Error {
    fn from(e: XenError) -> Self {
        Error::Xen(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Exhausted => write!(f, "no free grant reference"),
            Error::StillMapped(r) => write!(f, "grant {} still mapped by the peer", r.0),
            Error::NotInUse(r) => write!(f, "grant {} is not in use", r.0),
            Error::FrameTooLarge(g) => write!(f, "gfn {:#x} does not fit a v1 grant", g.0),
            Error::BadTable { bytes, entries } => {
                write!(
                    f,
                    "{bytes} bytes of grant frames cannot hold {entries} refs"
                )
            }
            Error::TooManyFrames { wanted, max } => {
                write!(
                    f,
                    "{wanted} grant frames requested, hypervisor allows {max}"
                )
            }
            Error::NoMemory => write!(f, "out of memory for grant frames"),
            Error::NoGfn => write!(f, "grant frame has no gfn"),
            Error::Xen(e) => write!(f, "{e}"),
            Error::NotSetUp => write!(f, "grant table not set up"),
            Error::AlreadySetUp => write!(f, "grant table already set up"),
        }
    }
}

/// Stored link of a ref that is handed out (or reserved, or not set up yet): zero,
/// so a table before [`GrantTable::init`] is all zeros (`.bss` in a `static`).
const IN_USE: u32 = 0;
/// The head of the free list before [`GrantTable::init`]: ref 0, which is
/// reserved and whose link stays [`IN_USE`], so it is never taken (and the whole
/// table is zero: `.bss` in a `static`, not 4 bytes of `.data` per ref). After
/// init the free list ends at ref `N`, which does not exist.
const UNSET: u32 = 0;
/// Largest link value plus one: a table's `N + 1` must fit a `u32` link.
const LINK_LIMIT: u32 = u32::MAX;
const RESERVED: u32 = abi::NR_RESERVED_ENTRIES;
const ENTRY: usize = size_of::<abi::GrantEntryV1>();
// A v1 entry starts with its flags, so an entry's offset is its flags' offset
// (used without a `+ 0` that no test could tell from `- 0`).
const _: () = assert!(abi::ENTRY_V1_FLAGS == 0);

struct FreeList<const N: usize> {
    /// For a free ref: `next + 1` (`N + 1` for the last). For a ref in use:
    /// IN_USE. Reserved refs are permanently IN_USE but not counted.
    next: [u32; N],
    /// The first free ref; `N` when none is left, [`UNSET`] before init.
    head: u32,
    in_use: usize,
}

/// A v1 grant table over `N` refs (see the module docs).
///
/// Build it in place for large `N` (4 bytes per ref): [`GrantTable::empty`] is a
/// `const fn`, so `static GNT: GrantTable<4096> = GrantTable::empty();` costs no
/// stack, and [`GrantTable::setup_in_place`] / [`GrantTable::init`] then take
/// `&self`. [`GrantTable::new`] and [`GrantTable::setup`] return the table by value
/// (fine for small tables and on hosts).
pub struct GrantTable<const N: usize> {
    frames: spin::Once<SharedPages>,
    free: spin::Mutex<FreeList<N>>,
}

impl<const N: usize> fmt::Debug for GrantTable<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantTable")
            .field("entries", &N)
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl<const N: usize> Default for GrantTable<N> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<const N: usize> GrantTable<N> {
    /// A table without frames: every grant fails with [`Error::NotSetUp`] until
    /// [`GrantTable::init`] or [`GrantTable::setup_in_place`]. Usable in a `static`.
    pub const fn empty() -> Self {
        Self {
            frames: spin::Once::new(),
            free: spin::Mutex::new(FreeList {
                next: [IN_USE; N],
                head: UNSET,
                in_use: 0,
            }),
        }
    }

    /// Uses `frames` (already the domain's grant frames 0.., version 1) for refs
    /// `0..N`. Entries `8..N` are cleared. Returns the table by value: for a large
    /// `N` prefer [`GrantTable::empty`] + [`GrantTable::init`].
    pub fn new(frames: SharedPages) -> Result<Self, Error> {
        let t = Self::empty();
        t.init(frames)?;
        Ok(t)
    }

    /// Gives an [`GrantTable::empty`] table its frames (in place; see
    /// [`GrantTable::new`]). Fails with [`Error::AlreadySetUp`] the second time.
    pub fn init(&self, frames: SharedPages) -> Result<(), Error> {
        if !frames.len().is_multiple_of(PAGE_SIZE)
            || N <= RESERVED as usize
            || N > frames.len() / ENTRY
            || N >= LINK_LIMIT as usize
        {
            return Err(Error::BadTable {
                bytes: frames.len(),
                entries: N,
            });
        }
        let mut fl = self.free.lock();
        if self.frames.is_completed() {
            return Err(Error::AlreadySetUp);
        }
        let r = RESERVED as usize * ENTRY;
        frames.mem().fill(r, N * ENTRY - r, 0);
        // Chain RESERVED -> RESERVED+1 -> ... -> N-1 -> N (no such ref: the end),
        // written in place; the reserved refs stay IN_USE from `empty`.
        // (One slice iterator and a counter: under Miri, where every call is
        // interpreted, an enumerate-skip chain made this loop most of a small test's
        // set-up cost.)
        let mut link = RESERVED + 2;
        for slot in &mut fl.next[RESERVED as usize..] {
            *slot = link;
            link = link.wrapping_add(1);
        }
        fl.head = RESERVED;
        fl.in_use = 0;
        self.frames.call_once(|| frames);
        Ok(())
    }

    fn frames_or_err(&self) -> Result<SharedMem<'_>, Error> {
        self.frames
            .get()
            .map(SharedPages::mem)
            .ok_or(Error::NotSetUp)
    }

    /// Sets up this domain's grant table the HVM way: `GNTTABOP_set_version(1)`,
    /// `GNTTABOP_query_size`, then allocates `nr_frames` pages from the platform and
    /// `XENMEM_add_to_physmap(XENMAPSPACE_grant_table, i, gfn)` for each, so frame
    /// `i` of the table appears in page `i`.
    ///
    /// The pages then belong to the table for good (they are never freed; if a later
    /// frame fails to map, the pages stay allocated, as earlier frames may already
    /// be grant frames). Returns the table by value: for a large `N` prefer
    /// [`GrantTable::empty`] + [`GrantTable::setup_in_place`].
    pub fn setup<P: Platform + ?Sized>(platform: &P, nr_frames: u32) -> Result<Self, Error> {
        let t = Self::empty();
        t.setup_in_place(platform, nr_frames)?;
        Ok(t)
    }

    /// [`GrantTable::setup`] for an [`GrantTable::empty`] table, in place (e.g. a
    /// `static`). Fails with [`Error::AlreadySetUp`] if the table has frames.
    pub fn setup_in_place<P: Platform + ?Sized>(
        &self,
        platform: &P,
        nr_frames: u32,
    ) -> Result<(), Error> {
        let xen = Xen(platform);
        let capacity = (nr_frames as usize).saturating_mul(abi::ENTRIES_PER_FRAME_V1 as usize);
        if nr_frames == 0 || N > capacity || N <= RESERVED as usize {
            return Err(Error::BadTable {
                bytes: (nr_frames as usize).saturating_mul(PAGE_SIZE),
                entries: N,
            });
        }
        if self.frames.is_completed() {
            return Err(Error::AlreadySetUp);
        }
        xen.gnttab_set_version(1)?;
        let size = xen.gnttab_query_size()?;
        if nr_frames > size.max_nr_frames {
            return Err(Error::TooManyFrames {
                wanted: nr_frames,
                max: size.max_nr_frames,
            });
        }
        let mem = SharedPages::alloc(platform, nr_frames as usize).ok_or(Error::NoMemory)?;
        for i in 0..nr_frames {
            let gfn = mem.page_gfn(platform, i as usize).ok_or(Error::NoGfn)?;
            // SAFETY: `mem` is ours (just allocated, nothing else uses it); Xen
            // replaces its page `i` with grant frame `i`, which the table then
            // owns for good.
            unsafe { xen.add_to_physmap(memory::SPACE_GRANT_TABLE, i.into(), gfn)? };
        }
        self.init(mem)
    }

    /// The grant frames (for diagnostics and tests); `None` before the table is set
    /// up. Public on purpose: a kernel's debugger or a test can inspect what the
    /// peer sees.
    pub fn frames(&self) -> Option<SharedMem<'_>> {
        self.frames.get().map(SharedPages::mem)
    }

    /// Refs this table can hand out (`N - 8`).
    pub const fn capacity(&self) -> usize {
        N - RESERVED as usize
    }

    /// Refs currently handed out and not yet successfully ended. Public on purpose:
    /// a kernel (and the tests) check with it that nothing leaked.
    pub fn in_use(&self) -> usize {
        self.free.lock().in_use
    }

    fn alloc(&self) -> Result<u32, Error> {
        let mut fl = self.free.lock();
        let r = fl.head;
        // No slot (the end of the chain, N) or an IN_USE link (ref 0 before
        // init, and defensively any other) means no free ref.
        let Some(next) = fl.next.get(r as usize).and_then(|&n| n.checked_sub(1)) else {
            return Err(Error::Exhausted);
        };
        fl.head = next;
        if let Some(slot) = fl.next.get_mut(r as usize) {
            *slot = IN_USE;
        }
        fl.in_use += 1;
        Ok(r)
    }

    /// Puts `r` back on the free list (the list's lock held by the caller).
    fn release_locked(fl: &mut FreeList<N>, r: u32) {
        // The head is a free ref or N (the end) here: UNSET only before init,
        // when nothing can be released (`end_access` needs the frames first).
        let link = fl.head.saturating_add(1);
        // Re-checked under the lock so a racing double end cannot corrupt the chain.
        if let Some(slot @ &mut IN_USE) = fl.next.get_mut(r as usize) {
            if r >= RESERVED {
                *slot = link;
                fl.head = r;
                fl.in_use = fl.in_use.saturating_sub(1);
            }
        }
    }

    /// The entry offset of `r` if it is handed out (the list's lock held by
    /// the caller).
    fn in_use_offset(fl: &FreeList<N>, r: GrantRef) -> Result<usize, Error> {
        match fl.next.get(r.0 as usize) {
            Some(&IN_USE) if r.0 >= RESERVED => Ok(r.0 as usize * ENTRY),
            _ => Err(Error::NotInUse(r)),
        }
    }

    /// Grants `domid` access to our frame `gfn` (read-only if `readonly`). Writes
    /// `frame` and `domid`, then (after a write barrier) the flags, so the peer
    /// never sees a valid entry with stale contents.
    #[inline]
    pub fn grant_access(&self, domid: DomId, gfn: Gfn, readonly: bool) -> Result<GrantRef, Error> {
        let frame = u32::try_from(gfn.0).map_err(|_| Error::FrameTooLarge(gfn))?;
        let frames = self.frames_or_err()?;
        let r = self.alloc()?;
        let off = r as usize * ENTRY;
        frames.store_u32(off + abi::ENTRY_V1_FRAME, frame);
        frames.store_u16(off + abi::ENTRY_V1_DOMID, domid.0);
        wmb();
        let mut flags = abi::GrantFlags::PERMIT_ACCESS;
        flags.set(abi::GrantFlags::READONLY, readonly);
        let flags = flags.bits();
        // The flags are the entry's first field (asserted next to `ENTRY`).
        frames.store_u16(off, flags);
        Ok(GrantRef(r))
    }

    /// Ends access through `r`: atomically clears the entry's flags, but only while
    /// neither `GTF_reading` nor `GTF_writing` is set. On success the ref is free
    /// again and the page may be reused. On [`Error::StillMapped`] nothing changed:
    /// the ref stays in use and the page must stay out of reuse (row 26).
    ///
    /// Each ref must be ended by one caller at a time (it is the caller's ref).
    #[inline]
    pub fn end_access(&self, r: GrantRef) -> Result<(), Error> {
        let frames = self.frames_or_err()?;
        // One lock for the check, the flags and the release: a frontend ends a
        // grant per frame. The lock is held for a few instructions: the
        // compare-exchange retries only when the flags changed under it, and
        // only Xen changes them (setting `GTF_reading`/`GTF_writing`, which
        // ends the loop, or clearing them once).
        let mut fl = self.free.lock();
        let off = Self::in_use_offset(&fl, r)?;
        // The flags are the entry's first field (asserted next to `ENTRY`).
        let mut flags = frames.load_u16(off);
        loop {
            if abi::GrantFlags::from_bits_retain(flags).intersects(abi::GrantFlags::BUSY) {
                return Err(Error::StillMapped(r));
            }
            match frames.cmpxchg_u16(off, flags, 0) {
                Ok(_) => break,
                Err(now) => flags = now,
            }
        }
        Self::release_locked(&mut fl, r.0);
        Ok(())
    }

    /// [`GrantTable::end_access`], retried up to `attempts` times with `between()`
    /// (e.g. `|| platform.wait()`) between tries. Returns the last error if the
    /// peer still maps the page; the ref then stays in use.
    pub fn try_end_access(
        &self,
        r: GrantRef,
        attempts: usize,
        mut between: impl FnMut(),
    ) -> Result<(), Error> {
        let mut last = Error::StillMapped(r);
        for i in 0..attempts {
            if i > 0 {
                between();
            }
            match self.end_access(r) {
                Err(e @ Error::StillMapped(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// A private copy of entry `r` (diagnostics and tests; public on purpose, the
    /// entry is what the peer sees); `None` if out of range or not set up.
    pub fn entry(&self, r: GrantRef) -> Option<abi::GrantEntryV1> {
        let off = (r.0 as usize).checked_mul(ENTRY)?;
        if r.0 as usize >= N {
            return None;
        }
        Some(self.frames.get()?.mem().read_obj(off))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::abi::errno;
    use crate::abi::hypercall_nr as nr;
    use crate::testutil::FakePlatform;
    use crate::xen::fake::{read, write, FakeXen};
    use std::collections::HashSet;
    use std::rc::Rc;
    use std::vec::Vec;

    fn table<const N: usize>(p: &FakePlatform, frames: usize) -> GrantTable<N> {
        GrantTable::new(SharedPages::alloc(p, frames).unwrap()).unwrap()
    }

    type Mapped = Rc<core::cell::RefCell<Vec<(u32, u64, u64)>>>;

    fn gnttab_xen(max_frames: u32) -> (FakeXen, Mapped) {
        let mapped: Mapped = Rc::default();
        let m = mapped.clone();
        let x = FakeXen::new(move |op, a| match (op, a[0] as u32) {
            (nr::GRANT_TABLE_OP, abi::OP_SET_VERSION) => {
                let v: abi::SetVersion = read(a[1]);
                assert_eq!(v.version, 1);
                0
            }
            (nr::GRANT_TABLE_OP, abi::OP_QUERY_SIZE) => {
                let mut q: abi::QuerySize = read(a[1]);
                q.nr_frames = 1;
                q.max_nr_frames = max_frames;
                write(a[1], q);
                0
            }
            (nr::MEMORY_OP, memory::OP_ADD_TO_PHYSMAP) => {
                let a: memory::AddToPhysmap = read(a[1]);
                assert_eq!(a.domid, DomId::SELF.0);
                m.borrow_mut().push((a.space, a.idx, a.gpfn));
                0
            }
            _ => -errno::ENOSYS,
        });
        (x, mapped)
    }

    /// Simulates Xen setting/clearing the busy bits of entry `r`.
    fn set_busy(t: &GrantTable<16>, r: GrantRef, bits: u16, on: bool) {
        let off = r.0 as usize * 8;
        let f = t.frames().unwrap().load_u16(off);
        t.frames()
            .unwrap()
            .store_u16(off, if on { f | bits } else { f & !bits });
    }

    #[test]
    fn never_hands_out_reserved_refs_and_counts_use() {
        let p = FakePlatform::new(FakeXen::new(|_, _| 0));
        let t: GrantTable<64> = table(&p, 1);
        assert_eq!(t.capacity(), 56);
        let mut refs = Vec::new();
        for i in 0..56u64 {
            let r = t
                .grant_access(DomId(0), Gfn(0x1000 + i), i % 2 == 0)
                .unwrap();
            assert!(r.0 >= 8 && r.0 < 64, "ref {}", r.0);
            refs.push(r);
        }
        assert_eq!(refs.iter().collect::<HashSet<_>>().len(), 56, "unique");
        assert_eq!(t.in_use(), 56);
        assert_eq!(
            t.grant_access(DomId(0), Gfn(1), false),
            Err(Error::Exhausted)
        );
        for r in &refs {
            t.end_access(*r).unwrap();
        }
        assert_eq!(t.in_use(), 0);
        for r in 0..8 {
            assert_eq!(t.end_access(GrantRef(r)), Err(Error::NotInUse(GrantRef(r))));
        }
    }

    #[test]
    fn entry_contents_and_flags() {
        let p = FakePlatform::new(FakeXen::new(|_, _| 0));
        let t: GrantTable<512> = table(&p, 1);
        let r = t.grant_access(DomId(3), Gfn(0xABCDE), true).unwrap();
        assert_eq!(
            t.entry(r).unwrap(),
            abi::GrantEntryV1 {
                flags: abi::GTF_PERMIT_ACCESS | abi::GTF_READONLY,
                domid: 3,
                frame: 0xABCDE
            }
        );
        let w = t.grant_access(DomId(0), Gfn(7), false).unwrap();
        assert_eq!(t.entry(w).unwrap().flags, abi::GTF_PERMIT_ACCESS);
        t.end_access(r).unwrap();
        assert_eq!(t.entry(r).unwrap().flags, 0);
        assert_eq!(
            t.grant_access(DomId(0), Gfn(1 << 32), false),
            Err(Error::FrameTooLarge(Gfn(1 << 32)))
        );
        assert_eq!(t.in_use(), 1, "failed grant did not leak a ref");
    }

    /// Row 26 / XSA-396: the backend still maps the page at teardown.
    #[test]
    fn end_access_fails_while_mapped_and_ref_is_not_reused() {
        let p = FakePlatform::new(FakeXen::new(|_, _| 0));
        let t: GrantTable<16> = table(&p, 1);
        let r = t.grant_access(DomId(0), Gfn(42), false).unwrap();
        for busy in [
            abi::GTF_READING,
            abi::GTF_WRITING,
            abi::GTF_READING | abi::GTF_WRITING,
        ] {
            // Xen sets the busy bits while the backend maps the grant.
            set_busy(&t, r, busy, true);
            assert_eq!(t.end_access(r), Err(Error::StillMapped(r)));
            let e = t.entry(r).unwrap();
            assert_eq!(e.flags & abi::GTF_PERMIT_ACCESS, abi::GTF_PERMIT_ACCESS);
            assert_eq!((e.domid, e.frame), (0, 42), "entry untouched");
            assert_eq!(t.in_use(), 1);
            // The ref is not handed out again while it is stuck.
            let others: Vec<_> = (0..7)
                .map(|i| t.grant_access(DomId(0), Gfn(i), true).unwrap())
                .collect();
            assert!(!others.contains(&r));
            assert_eq!(
                t.grant_access(DomId(0), Gfn(9), true),
                Err(Error::Exhausted)
            );
            for o in others {
                t.end_access(o).unwrap();
            }
            // Backend unmaps: Xen clears the busy bits.
            set_busy(&t, r, abi::GTF_READING | abi::GTF_WRITING, false);
        }
        t.end_access(r).unwrap();
        assert_eq!(t.in_use(), 0);
        assert_eq!(t.end_access(r), Err(Error::NotInUse(r)), "double end");
    }

    #[test]
    fn try_end_access_retries_then_succeeds_or_gives_up() {
        let p = FakePlatform::new(FakeXen::new(|_, _| 0));
        let t: GrantTable<16> = table(&p, 1);
        let r = t.grant_access(DomId(0), Gfn(1), false).unwrap();
        set_busy(&t, r, abi::GTF_WRITING, true);
        let waits = Rc::new(core::cell::Cell::new(0));
        let w = waits.clone();
        assert_eq!(
            t.try_end_access(r, 3, || w.set(w.get() + 1)),
            Err(Error::StillMapped(r))
        );
        assert_eq!(waits.get(), 2);
        assert_eq!(t.in_use(), 1);
        // The peer unmaps during the second wait.
        let mut n = 0;
        t.try_end_access(r, 5, || {
            n += 1;
            if n == 2 {
                set_busy(&t, r, abi::GTF_WRITING, false);
            }
        })
        .unwrap();
        assert_eq!(t.in_use(), 0);
    }

    /// Before setup the table is all zeros (so a `static` one lies in `.bss`, not
    /// in the kernel image) and still hands out no ref.
    #[test]
    fn empty_table_is_zero_and_hands_out_nothing() {
        let t: GrantTable<16> = GrantTable::empty();
        {
            let fl = t.free.lock();
            assert_eq!(fl.head, 0);
            assert_eq!(fl.in_use, 0);
            assert!(fl.next.iter().all(|&n| n == 0));
        }
        assert_eq!(t.alloc(), Err(Error::Exhausted));
        assert_eq!(t.in_use(), 0);
    }

    /// A large table in a `static`: nothing built on the stack, set up in place.
    #[test]
    fn empty_static_table_is_set_up_in_place() {
        // 1024 refs (two frames); 256 (one frame) under Miri, where each grant and
        // end costs thousands of basic blocks (docs/miri.md): the size does not
        // matter.
        const N: usize = if cfg!(miri) { 256 } else { 1024 };
        const FRAMES: usize = (N * ENTRY).div_ceil(PAGE_SIZE);
        static T: GrantTable<N> = GrantTable::empty();
        assert_eq!(
            T.grant_access(DomId(0), Gfn(1), false),
            Err(Error::NotSetUp)
        );
        assert_eq!(T.end_access(GrantRef(8)), Err(Error::NotSetUp));
        assert!(T.frames().is_none() && T.entry(GrantRef(8)).is_none());
        let (x, mapped) = gnttab_xen(32);
        let p = FakePlatform::new(x);
        T.setup_in_place(&p, FRAMES as u32).unwrap();
        assert_eq!(mapped.borrow().len(), FRAMES);
        assert_eq!(
            T.setup_in_place(&p, FRAMES as u32),
            Err(Error::AlreadySetUp)
        );
        let m = SharedPages::alloc(&p, FRAMES).unwrap();
        assert_eq!(T.init(m), Err(Error::AlreadySetUp));
        let refs: Vec<_> = (0..T.capacity())
            .map(|i| T.grant_access(DomId(0), Gfn(i as u64), true).unwrap())
            .collect();
        assert_eq!(refs.iter().collect::<HashSet<_>>().len(), N - 8);
        assert!(refs.iter().all(|r| (8..N as u32).contains(&r.0)));
        assert_eq!(
            T.grant_access(DomId(0), Gfn(1), false),
            Err(Error::Exhausted)
        );
        for r in refs {
            T.end_access(r).unwrap();
        }
        assert_eq!(T.in_use(), 0);
    }

    #[test]
    fn new_rejects_bad_sizes() {
        let p = FakePlatform::new(FakeXen::new(|_, _| 0));
        let page = || SharedPages::alloc(&p, 1).unwrap();
        assert!(GrantTable::<513>::new(page()).is_err());
        assert!(GrantTable::<8>::new(page()).is_err());
        assert!(GrantTable::<16>::new(SharedPages::empty()).is_err());
        assert!(GrantTable::<1024>::new(SharedPages::alloc(&p, 2).unwrap()).is_ok());
    }

    #[test]
    fn setup_maps_each_frame_with_add_to_physmap() {
        let (x, mapped) = gnttab_xen(32);
        let p = FakePlatform::new(x);
        let t = GrantTable::<1024>::setup(&p, 2).unwrap();
        let calls = p.xen.calls();
        assert_eq!(calls[0].op, nr::GRANT_TABLE_OP);
        assert_eq!(calls[0].args[0], abi::OP_SET_VERSION as usize);
        assert_eq!(calls[1].args[0], abi::OP_QUERY_SIZE as usize);
        assert_eq!(calls.len(), 4);
        for c in &calls[2..] {
            assert_eq!(c.op, nr::MEMORY_OP);
            assert_eq!(c.args[0], memory::OP_ADD_TO_PHYSMAP as usize);
        }
        let g0 = t.frames().unwrap().page_gfn(&p, 0).unwrap();
        let g1 = t.frames().unwrap().page_gfn(&p, 1).unwrap();
        assert_eq!(
            *mapped.borrow(),
            [
                (memory::SPACE_GRANT_TABLE, 0, g0.0),
                (memory::SPACE_GRANT_TABLE, 1, g1.0)
            ]
        );
        let r = t.grant_access(DomId(0), Gfn(5), false).unwrap();
        t.end_access(r).unwrap();
    }

    #[test]
    fn setup_checks_limits() {
        let p = FakePlatform::new(gnttab_xen(1).0);
        assert_eq!(
            GrantTable::<1024>::setup(&p, 2).unwrap_err(),
            Error::TooManyFrames { wanted: 2, max: 1 }
        );
        assert!(matches!(
            GrantTable::<1024>::setup(&p, 1).unwrap_err(),
            Error::BadTable { .. }
        ));
        let p = FakePlatform::new(gnttab_xen(4).0);
        p.fail_alloc.set(true);
        assert_eq!(
            GrantTable::<512>::setup(&p, 1).unwrap_err(),
            Error::NoMemory
        );
        let p = FakePlatform::new(FakeXen::new(|_, _| -errno::EPERM));
        assert!(matches!(
            GrantTable::<512>::setup(&p, 1).unwrap_err(),
            Error::Xen(XenError::Hypercall { rc: -1, .. })
        ));
    }

    /// Tests written for mutants cargo-mutants found missed (docs/mutants.md): each
    /// fails on the mutant named in its comment.
    mod mutants {
        use super::*;
        use std::format;

        /// Every `Error` says what went wrong with which value, and a hypercall
        /// failure converts into `Error::Xen` (mutants: `Display::fmt` -> `Ok(())`,
        /// `From<XenError>::from` -> `Default::default()`).
        #[test]
        fn errors_display_their_values() {
            let xe = XenError::GrantStatus {
                cmd: abi::OP_QUERY_SIZE,
                status: -3,
            };
            assert_eq!(Error::from(xe), Error::Xen(xe));
            let cases = [
                (Error::Exhausted, "no free grant reference".into()),
                (
                    Error::StillMapped(GrantRef(9)),
                    "grant 9 still mapped by the peer".into(),
                ),
                (Error::NotInUse(GrantRef(3)), "grant 3 is not in use".into()),
                (
                    Error::FrameTooLarge(Gfn(1 << 32)),
                    "gfn 0x100000000 does not fit a v1 grant".into(),
                ),
                (
                    Error::BadTable {
                        bytes: 4096,
                        entries: 513,
                    },
                    "4096 bytes of grant frames cannot hold 513 refs".into(),
                ),
                (
                    Error::TooManyFrames { wanted: 4, max: 2 },
                    "4 grant frames requested, hypervisor allows 2".into(),
                ),
                (Error::NoMemory, "out of memory for grant frames".into()),
                (Error::NoGfn, "grant frame has no gfn".into()),
                (Error::Xen(xe), format!("{xe}")),
                (Error::NotSetUp, "grant table not set up".into()),
                (Error::AlreadySetUp, "grant table already set up".into()),
            ];
            for (e, text) in cases {
                let text: std::string::String = text;
                assert!(!text.is_empty());
                assert_eq!(format!("{e}"), text);
            }
        }

        /// `init` clears exactly the entries of refs `8..N`: the toolstack's reserved
        /// entries and whatever lies past the table stay as they were (mutants: the
        /// `RESERVED * ENTRY` start and `N * ENTRY - r` length of the fill, `*`/`-`
        /// replaced).
        #[test]
        fn init_clears_exactly_the_managed_entries() {
            let p = FakePlatform::new(FakeXen::new(|_, _| 0));
            let frames = SharedPages::alloc(&p, 1).unwrap();
            frames.mem().fill(0, PAGE_SIZE, 0xAA);
            let t = GrantTable::<16>::new(frames).unwrap();
            let m = t.frames().unwrap();
            let mut bytes = std::vec![0u8; PAGE_SIZE];
            m.read(0, &mut bytes);
            for (i, &b) in bytes.iter().enumerate() {
                let want = if (8 * ENTRY..16 * ENTRY).contains(&i) {
                    0
                } else {
                    0xAA
                };
                assert_eq!(b, want, "byte {i}");
            }
        }

        /// `setup_in_place` refuses a table that does not fit its frames before any
        /// hypercall or allocation, and takes one smaller than its frames (mutants:
        /// the `||`s and the `>` of its size check, which let it map the frames first
        /// and fail in `init` with the same error, the pages left as grant frames
        /// for nothing, or refused a table smaller than its frames).
        #[test]
        fn setup_checks_sizes_before_any_hypercall() {
            let (x, mapped) = gnttab_xen(8);
            let p = FakePlatform::new(x);
            let bad = |e: Error, bytes: usize, entries: usize| {
                assert_eq!(e, Error::BadTable { bytes, entries });
            };
            bad(
                GrantTable::<1024>::setup(&p, 1).unwrap_err(),
                PAGE_SIZE,
                1024,
            );
            bad(GrantTable::<8>::setup(&p, 1).unwrap_err(), PAGE_SIZE, 8);
            bad(GrantTable::<16>::setup(&p, 0).unwrap_err(), 0, 16);
            assert!(p.xen.calls().is_empty(), "no hypercall for a bad size");
            assert!(mapped.borrow().is_empty());
            let t = GrantTable::<512>::setup(&p, 2).unwrap();
            assert_eq!(mapped.borrow().len(), 2);
            assert_eq!(t.capacity(), 504);
            t.grant_access(DomId(0), Gfn(1), false).unwrap();
        }

        /// Exactly as many frames as the hypervisor allows is fine (mutant: `>` ->
        /// `>=` in `setup_in_place`'s `max_nr_frames` check).
        #[test]
        fn setup_may_use_every_frame_xen_allows() {
            let (x, mapped) = gnttab_xen(2);
            let p = FakePlatform::new(x);
            GrantTable::<1024>::setup(&p, 2).unwrap();
            assert_eq!(mapped.borrow().len(), 2);
        }

        /// `Debug` shows the size and the refs in use (mutant: `Debug::fmt` -> `Ok(())`).
        #[test]
        fn table_debug_shows_size_and_use() {
            let p = FakePlatform::new(FakeXen::new(|_, _| 0));
            let t: GrantTable<16> = table(&p, 1);
            t.grant_access(DomId(0), Gfn(1), false).unwrap();
            assert_eq!(format!("{t:?}"), "GrantTable { entries: 16, in_use: 1 }");
        }
    }
}
