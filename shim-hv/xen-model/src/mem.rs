//! Guest memory: the one module of the xen model that touches host mappings.
//!
//! A domain's RAM is an anonymous, zero-filled `mmap` of N pages. Guest frame numbers
//! are deliberately *not* the host address or the page index: RAM starts at
//! [`GuestMemory::DEFAULT_FIRST_GFN`] (gfn 0x100, guest-physical 1 MiB), so code that
//! forgets a translation fails loudly instead of working by accident.
//!
//! Every access is bounds-checked and fallible. Nothing here hands out `&[u8]` into guest
//! memory: guest threads (or vCPUs) write it concurrently, so accesses go through
//! [`hypercall::SharedMem`] (volatile copies, atomics).
//!
//! All `unsafe` of the model lives in this module: the mapping itself, the private
//! host page that backs `shared_info` before the guest maps it, [`GuestRegion`]
//! (a region together with the `Arc` that keeps it mapped), and
//! [`InProcessAccess`], which reads hypercall arguments through raw host pointers for
//! in-process guests. (`GrantMapping::mem_unbound` only passes its caller's
//! contract on to [`GuestRegion::mem_unbound`].)
//!
//! ```
//! use hypercall::Gfn;
//! use xen_model::mem::GuestMemory;
//!
//! let mem = GuestMemory::new(Gfn(0x100), 16).unwrap();
//! mem.write(0x100_010, b"hello").unwrap();
//! let mut buf = [0u8; 5];
//! mem.read(0x100_010, &mut buf).unwrap();
//! assert_eq!(&buf, b"hello");
//! assert!(mem.page(Gfn(0xff)).is_err()); // below RAM
//! assert!(mem.page(Gfn(0x110)).is_err()); // past the end
//! ```

use core::fmt;
use core::ptr::NonNull;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hypercall::{Gfn, SharedMem, SharedRegion, PAGE_SIZE};

use crate::access::{Efault, GuestAccess};

/// What went wrong with a guest-memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// The frame is not guest RAM.
    #[error("gfn {:#x} is not guest RAM", .0 .0)]
    BadGfn(Gfn),
    /// `gpa..gpa+len` is not entirely inside guest RAM (or overflows).
    #[error("guest range {gpa:#x}+{len:#x} is outside guest RAM")]
    OutOfRange {
        /// First guest-physical address of the access.
        gpa: u64,
        /// Length of the access.
        len: usize,
    },
    /// The host could not map the memory (`errno`).
    #[error("mmap of guest memory failed (errno {0})")]
    Map(i32),
    /// The requested size is zero or too large.
    #[error("bad guest memory size: {0} pages")]
    BadSize(usize),
    /// The guest may place no more frames outside RAM.
    #[error("the guest already placed {0} frames outside RAM (the limit)")]
    TooManyHolePages(usize),
}

/// An anonymous host mapping of whole pages, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; all accesses to it go
// through SharedMem (volatile/atomic), which is the discipline for memory that several
// threads touch concurrently.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize) -> Result<Self, MemError> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice
        // touches no existing memory; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemError::Map(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(MemError::Map(0))?;
        // Back guest RAM with transparent huge pages where the host allows it, as
        // VMMs do: fewer TLB misses, and a guest's multi-page buffers are physically
        // contiguous (a 1 MiB I/O buffer then fits the caches predictably). Only a
        // hint: failure (no THP support) changes nothing.
        // SAFETY: advice on our own fresh mapping; it does not change its contents.
        let _ = unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        Ok(Mapping { base, len })
    }

    /// The mapping, borrowed: it cannot outlive `self`.
    fn shared(&self) -> SharedMem<'_> {
        // SAFETY: base..base+len is our live mapping, readable and writable; it stays
        // mapped until this Mapping is dropped, which the borrow rules out while the
        // region lives. No Rust reference into it is ever created.
        unsafe { SharedMem::new(self.base, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; nothing uses the mapping
        // once its owner is gone.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// A domain's RAM: `pages` contiguous guest frames starting at `first_gfn`.
///
/// The regions it lends out ([`GuestMemory::page`], [`GuestMemory::range`], ...)
/// are borrowed from it: they cannot outlive it (its drop unmaps the memory).
/// A holder that keeps a region for longer than a borrow (a grant mapping, a
/// backend's ring, the event channels' `shared_info`) holds a [`GuestRegion`],
/// which keeps the memory alive through its `Arc` (docs/shared-memory.md):
///
/// ```compile_fail,E0505
/// use hypercall::{Gfn, SharedMem};
/// use xen_model::mem::GuestMemory;
///
/// let mem = GuestMemory::new(Gfn(0x100), 1).unwrap();
/// let page: SharedMem<'_> = mem.page(Gfn(0x100)).unwrap();
/// drop(mem); // error[E0505]: cannot move out of `mem` while borrowed
/// page.load_u32(0);
/// ```
pub struct GuestMemory {
    map: Mapping,
    first_gfn: Gfn,
    pages: usize,
    /// Frames the guest placed in holes of its physical address space (a KVM guest
    /// may map `shared_info` or grant frames outside RAM, as Mini-OS does): backed by
    /// private host pages that live as long as this memory. Never removed, so
    /// regions of them stay valid like RAM's.
    holes: Mutex<BTreeMap<u64, HostPage>>,
    /// Most frames `holes` may hold (0: the guest may place none).
    hole_limit: usize,
    /// Bumped each time a hole page is added (runners map new ones into the VM).
    hole_generation: AtomicU64,
}

impl fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemory")
            .field("first_gfn", &format_args!("{:#x}", self.first_gfn.0))
            .field("pages", &self.pages)
            .finish()
    }
}

impl GuestMemory {
    /// Where the model puts the first RAM frame: gfn 0x100 (1 MiB).
    pub const DEFAULT_FIRST_GFN: Gfn = Gfn(0x100);
    /// Largest RAM size accepted (in pages): 3 GiB, the KVM runner's memory layout (docs/kvm.md).
    pub const MAX_PAGES: usize = (3 << 30) / PAGE_SIZE;

    /// Hole frames must lie below this frame (4 GiB: where PVH guests put them).
    pub const HOLE_GFN_END: Gfn = Gfn(0x10_0000);

    /// Maps `pages` zeroed pages of RAM starting at guest frame `first_gfn`.
    pub fn new(first_gfn: Gfn, pages: usize) -> Result<Self, MemError> {
        Self::with_holes(first_gfn, pages, 0)
    }

    /// Like [`GuestMemory::new`], and the guest may place up to `hole_limit` frames
    /// outside RAM with [`GuestMemory::place`] (below [`GuestMemory::HOLE_GFN_END`]).
    pub fn with_holes(first_gfn: Gfn, pages: usize, hole_limit: usize) -> Result<Self, MemError> {
        if pages == 0 || pages > Self::MAX_PAGES {
            return Err(MemError::BadSize(pages));
        }
        // The RAM must fit below 2^52 (gfns are 40-bit on x86_64).
        if first_gfn
            .0
            .checked_add(pages as u64)
            .is_none_or(|e| e > (1 << 40))
        {
            return Err(MemError::BadGfn(first_gfn));
        }
        let map = Mapping::new(pages * PAGE_SIZE)?;
        Ok(GuestMemory {
            map,
            first_gfn,
            pages,
            holes: Mutex::new(BTreeMap::new()),
            hole_limit,
            hole_generation: AtomicU64::new(0),
        })
    }

    /// The host address of the first RAM byte (a VMM hands it to KVM as a memory
    /// slot; nothing here dereferences it).
    pub fn host_base(&self) -> NonNull<u8> {
        self.map.base
    }

    /// The page at `gfn` that the guest makes a hypervisor object (`shared_info`, a
    /// grant frame): the RAM page, or the hole page already there, or a new zeroed
    /// hole page if `gfn` is outside RAM, below [`GuestMemory::HOLE_GFN_END`], and
    /// the hole limit allows one more.
    pub fn place(&self, gfn: Gfn) -> Result<SharedMem<'_>, MemError> {
        if self.contains_gfn(gfn) {
            return self.page(gfn);
        }
        if gfn.0 >= Self::HOLE_GFN_END.0 {
            return Err(MemError::BadGfn(gfn));
        }
        let mut holes = self.holes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = holes.get(&gfn.0) {
            return Ok(self.hole_mem(p));
        }
        if holes.len() >= self.hole_limit {
            return Err(if self.hole_limit == 0 {
                MemError::BadGfn(gfn)
            } else {
                MemError::TooManyHolePages(self.hole_limit)
            });
        }
        let page = HostPage::new()?;
        // Moving the `HostPage` into the map does not move its mapping.
        let mem = self.hole_mem(&page);
        holes.insert(gfn.0, page);
        self.hole_generation.fetch_add(1, Ordering::SeqCst);
        Ok(mem)
    }

    /// The frames placed outside RAM so far, with their host pages (borrowed from
    /// this memory).
    pub fn hole_pages(&self) -> Vec<(Gfn, SharedMem<'_>)> {
        let holes = self.holes.lock().unwrap_or_else(|e| e.into_inner());
        holes
            .iter()
            .map(|(g, p)| (Gfn(*g), self.hole_mem(p)))
            .collect()
    }

    /// Hole page `page` (one of `self.holes`), borrowed from this memory rather
    /// than from the lock guard it was found under.
    fn hole_mem(&self, page: &HostPage) -> SharedMem<'_> {
        // SAFETY: hole pages are never removed from `self.holes` (nor dropped)
        // while this GuestMemory lives, and moving a `HostPage` (when the map
        // rebalances) does not move its mapping; so the page stays mapped for
        // the borrow of `self` the result is tied to. `place` calls this just
        // before inserting the page, under the same lock.
        unsafe { page.mem_unbound() }
    }

    /// Changes each time a frame is placed outside RAM.
    pub fn hole_generation(&self) -> u64 {
        self.hole_generation.load(Ordering::SeqCst)
    }

    /// The first RAM frame.
    pub fn first_gfn(&self) -> Gfn {
        self.first_gfn
    }

    /// One past the last RAM frame.
    #[inline]
    pub fn end_gfn(&self) -> Gfn {
        Gfn(self.first_gfn.0 + self.pages as u64)
    }

    /// Number of RAM pages.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// RAM size in bytes.
    pub fn size(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Whether `gfn` is a RAM frame.
    #[inline]
    pub fn contains_gfn(&self, gfn: Gfn) -> bool {
        gfn.0 >= self.first_gfn.0 && gfn.0 < self.end_gfn().0
    }

    /// The page index of `gfn` inside RAM.
    fn index(&self, gfn: Gfn) -> Result<usize, MemError> {
        if self.contains_gfn(gfn) {
            Ok((gfn.0 - self.first_gfn.0) as usize)
        } else {
            Err(MemError::BadGfn(gfn))
        }
    }

    /// Byte offset of `gpa..gpa+len` inside the mapping.
    fn offset(&self, gpa: u64, len: usize) -> Result<usize, MemError> {
        let err = MemError::OutOfRange { gpa, len };
        let start = gpa.checked_sub(self.first_gfn.addr()).ok_or(err)?;
        let start = usize::try_from(start).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > self.size() {
            return Err(err);
        }
        Ok(start)
    }

    /// All of RAM as one region, borrowed from this memory.
    #[inline]
    fn ram(&self) -> SharedMem<'_> {
        self.map.shared()
    }

    /// The 4 KiB page at `gfn`: RAM, or a page the guest placed in a hole.
    #[inline]
    pub fn page(&self, gfn: Gfn) -> Result<SharedMem<'_>, MemError> {
        // RAM (the grant-copy path: every copy looks up two pages) without a call.
        if self.contains_gfn(gfn) {
            let idx = (gfn.0 - self.first_gfn.0) as usize;
            if let Some(p) = self.ram().sub(idx * PAGE_SIZE, PAGE_SIZE) {
                return Ok(p);
            }
        }
        self.page_slow(gfn)
    }

    /// [`GuestMemory::page`] outside RAM: a hole page, or an error.
    #[cold]
    #[inline(never)]
    fn page_slow(&self, gfn: Gfn) -> Result<SharedMem<'_>, MemError> {
        if !self.contains_gfn(gfn) && self.hole_limit != 0 {
            let holes = self.holes.lock().unwrap_or_else(|e| e.into_inner());
            return holes
                .get(&gfn.0)
                .map(|p| self.hole_mem(p))
                .ok_or(MemError::BadGfn(gfn));
        }
        let idx = self.index(gfn)?;
        self.ram()
            .sub(idx * PAGE_SIZE, PAGE_SIZE)
            .ok_or(MemError::BadGfn(gfn))
    }

    /// `count` contiguous pages starting at `gfn`.
    pub fn pages_at(&self, gfn: Gfn, count: usize) -> Result<SharedMem<'_>, MemError> {
        let len = count
            .checked_mul(PAGE_SIZE)
            .ok_or(MemError::BadSize(count))?;
        self.range(gfn.addr(), len)
    }

    /// The guest-physical range `gpa..gpa+len`.
    pub fn range(&self, gpa: u64, len: usize) -> Result<SharedMem<'_>, MemError> {
        let off = self.offset(gpa, len)?;
        self.ram()
            .sub(off, len)
            .ok_or(MemError::OutOfRange { gpa, len })
    }

    /// Copies guest memory at `gpa` into `buf` (once, volatile).
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.range(gpa, buf.len())?.read(0, buf);
        Ok(())
    }

    /// Copies `buf` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), MemError> {
        self.range(gpa, buf.len())?.write(0, buf);
        Ok(())
    }

    /// Fills the page at `gfn` with zeroes.
    pub fn zero_page(&self, gfn: Gfn) -> Result<(), MemError> {
        self.page(gfn)?.fill(0, PAGE_SIZE, 0);
        Ok(())
    }

    /// The host address where `gfn` is mapped (in-process runner: the address a guest
    /// thread uses for that frame).
    pub fn gfn_to_host(&self, gfn: Gfn) -> Result<NonNull<u8>, MemError> {
        let p = self.page(gfn)?.as_ptr();
        NonNull::new(p).ok_or(MemError::BadGfn(gfn))
    }

    /// The guest-physical address of host address `addr`, if it lies in guest RAM.
    pub fn host_to_gpa(&self, addr: *const u8) -> Option<u64> {
        let base = self.map.base.as_ptr() as usize;
        let off = (addr as usize).checked_sub(base)?;
        if off >= self.size() {
            return None;
        }
        Some(self.first_gfn.addr() + off as u64)
    }

    /// One region covering `a` then `b`, if both lie in this RAM and `b` starts
    /// where `a` ends (so two pinned pages that happen to be neighbours can go to
    /// the kernel as one buffer). It covers exactly the bytes of `a` and `b`, so
    /// it lives as long as they do (`'r`).
    pub fn join<'r>(&self, a: &SharedMem<'r>, b: &SharedMem<'r>) -> Option<SharedMem<'r>> {
        let gpa = self.host_to_gpa(a.as_ptr())?;
        let next = gpa.checked_add(a.len() as u64)?;
        if self.host_to_gpa(b.as_ptr())? != next {
            return None;
        }
        let both = self.range(gpa, a.len().checked_add(b.len())?).ok()?;
        // SAFETY: `both` is a region of this RAM mapping (so its pointer may
        // reach all of it) covering exactly the bytes of `a` followed by those of
        // `b`: each is valid, and free of Rust references, for `'r`, so the union
        // is too.
        Some(unsafe { SharedMem::new(both.as_non_null(), both.len()) })
    }

    /// The frame holding host address `addr`, if it lies in guest RAM.
    pub fn host_to_gfn(&self, addr: *const u8) -> Option<Gfn> {
        self.host_to_gpa(addr).map(|gpa| Gfn(gpa >> 12))
    }
}

/// One private page of host memory, accessed like a shared page (e.g. `shared_info`
/// before the guest maps it somewhere).
pub struct HostPage {
    map: Mapping,
}

impl fmt::Debug for HostPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostPage").finish_non_exhaustive()
    }
}

impl HostPage {
    /// Maps one zeroed page.
    pub fn new() -> Result<Self, MemError> {
        Ok(HostPage {
            map: Mapping::new(PAGE_SIZE)?,
        })
    }

    /// The page, borrowed: it cannot outlive this `HostPage` (whose drop unmaps
    /// it).
    pub fn mem(&self) -> SharedMem<'_> {
        self.map.shared()
    }

    /// The page with no borrow attached, for the owner of hole pages
    /// ([`GuestMemory`]), which binds it to its own borrow.
    ///
    /// # Safety
    /// The caller keeps this `HostPage` alive (not dropped) for as long as the
    /// region, or any copy or sub-region of it, is used. Moving the `HostPage` is
    /// fine (its mapping does not move).
    unsafe fn mem_unbound(&self) -> SharedMem<'static> {
        // SAFETY: base..base+len is this page's live mapping, readable and
        // writable, never referenced by Rust; it stays mapped until the
        // `Mapping` drops, which the caller's contract rules out while the
        // region is used.
        unsafe { SharedMem::new(self.map.base, self.map.len) }
    }
}

/// What keeps a [`GuestRegion`]'s memory mapped.
#[derive(Clone)]
enum Keeper {
    /// A domain's RAM, or a page it placed in a hole: both stay mapped for as
    /// long as the `GuestMemory` lives.
    Guest(Arc<GuestMemory>),
    /// A private host page (a domain's `shared_info` before the guest maps it),
    /// held only to keep it mapped.
    Host { _page: Arc<HostPage> },
}

/// A region of a domain's memory together with its owner: the owner-held form
/// of the regions [`GuestMemory`] lends out, for a holder that keeps one for
/// longer than a borrow (a grant mapping, a backend's ring, xenstored's page,
/// the event channels' `shared_info`).
///
/// It holds the `Arc` of the memory (or of the private [`HostPage`]) the region
/// lies in, so the memory cannot be unmapped while it lives; [`GuestRegion::mem`]
/// lends the region out borrowed from `self`, and it implements
/// [`SharedRegion`], so a ring can own it. Cloning it clones the `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use hypercall::Gfn;
/// use xen_model::mem::{GuestMemory, GuestRegion};
///
/// let mem = Arc::new(GuestMemory::new(Gfn(0x100), 2).unwrap());
/// let region = GuestRegion::new(&mem, |m| m.pages_at(Gfn(0x100), 2)).unwrap();
/// mem.write(0x101_000, b"xen").unwrap();
/// drop(mem); // the region keeps the memory mapped
/// let mut b = [0u8; 3];
/// region.mem().read(4096, &mut b);
/// assert_eq!(&b, b"xen");
/// ```
///
/// A region lent out cannot outlive its `GuestRegion`:
///
/// ```compile_fail,E0505
/// use std::sync::Arc;
/// use hypercall::{Gfn, SharedMem};
/// use xen_model::mem::{GuestMemory, GuestRegion};
///
/// let mem = Arc::new(GuestMemory::new(Gfn(0x100), 1).unwrap());
/// let region = GuestRegion::page(&mem, Gfn(0x100)).unwrap();
/// drop(mem); // fine: `region` keeps the memory mapped
/// let page: SharedMem<'_> = region.mem();
/// drop(region); // error[E0505]: cannot move out of `region` while borrowed
/// page.load_u32(0);
/// ```
#[derive(Clone)]
pub struct GuestRegion {
    keeper: Keeper,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the pointer is only used to lend out `SharedMem` regions (Send + Sync:
// every access is volatile or atomic); the keeper is an `Arc` of a Send + Sync
// owner.
unsafe impl Send for GuestRegion {}
// SAFETY: as above; `&GuestRegion` only lends out `SharedMem` regions.
unsafe impl Sync for GuestRegion {}

impl fmt::Debug for GuestRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = match self.keeper {
            Keeper::Guest(_) => "guest memory",
            Keeper::Host { .. } => "host page",
        };
        f.debug_struct("GuestRegion")
            .field("owner", &owner)
            .field("len", &self.len)
            .finish()
    }
}

impl GuestRegion {
    /// Borrows a region of `memory` with `borrow` (e.g. `|m| m.pages_at(gfn, 2)`)
    /// and keeps `memory` alive with it.
    ///
    /// `borrow` must work for any borrow of the memory, so what it returns is
    /// borrowed from the memory (or is `'static`): a region that stays mapped
    /// for as long as the memory lives.
    pub fn new<E>(
        memory: &Arc<GuestMemory>,
        borrow: impl for<'m> FnOnce(&'m GuestMemory) -> Result<SharedMem<'m>, E>,
    ) -> Result<GuestRegion, E> {
        let m = borrow(memory)?;
        Ok(GuestRegion {
            keeper: Keeper::Guest(memory.clone()),
            ptr: m.as_non_null(),
            len: m.len(),
        })
    }

    /// The page at `gfn` ([`GuestMemory::page`]: RAM or a hole page), owned.
    pub fn page(memory: &Arc<GuestMemory>, gfn: Gfn) -> Result<GuestRegion, MemError> {
        Self::new(memory, |m| m.page(gfn))
    }

    /// All of a private host page, owned.
    pub fn host_page(page: Arc<HostPage>) -> GuestRegion {
        let m = page.mem();
        let (ptr, len) = (m.as_non_null(), m.len());
        GuestRegion {
            keeper: Keeper::Host { _page: page },
            ptr,
            len,
        }
    }

    /// The region, borrowed: it cannot outlive `self`.
    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: ptr..ptr+len is a region that was borrowed from the memory
        // `self.keeper` holds (`new`, `host_page`): RAM or a hole page of a
        // `GuestMemory`, or a `HostPage`, each mapped until that owner drops and
        // never moved (it lives in an `Arc`, and a hole page's mapping does not
        // move with the `HostPage`). The `Arc` is held for as long as `self`,
        // which the returned borrow cannot outlive; and the owner is never
        // mutably borrowed while another `Arc` to it exists. No Rust reference
        // into the memory is made.
        unsafe { SharedMem::new(self.ptr, self.len) }
    }

    /// The region with no borrow attached, for a holder that keeps this
    /// `GuestRegion` (or a value holding it) next to the regions in one
    /// structure, which a borrow cannot express.
    ///
    /// # Safety
    /// The caller keeps this `GuestRegion` (or a clone of it) alive for as long
    /// as the region, or any copy, sub-region or join of it, is used.
    pub unsafe fn mem_unbound(&self) -> SharedMem<'static> {
        // SAFETY: as in `mem`; the `Arc` that keeps the memory mapped is held
        // for every use of the region, by the caller's contract.
        unsafe { SharedMem::new(self.ptr, self.len) }
    }

    /// The guest memory the region lies in (`None` for a private host page).
    pub fn memory(&self) -> Option<&Arc<GuestMemory>> {
        match &self.keeper {
            Keeper::Guest(m) => Some(m),
            Keeper::Host { .. } => None,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl SharedRegion for GuestRegion {
    fn shared(&self) -> SharedMem<'_> {
        self.mem()
    }
}

/// [`GuestAccess`] for guests that run as host threads of this process.
///
/// An in-process guest passes hypercall pointer arguments as ordinary host addresses
/// (e.g. of a struct on its own stack). Such a guest shares our address space by
/// construction and can write anywhere in it already, so these pointers are trusted:
/// this type is the documented trust boundary of the in-process runner, and the KVM
/// runner never uses it. Everything *inside* the arguments (gfns, ports, grant refs,
/// domain ids) is still checked by the dispatcher like for any other guest.
#[derive(Debug)]
pub struct InProcessAccess {
    _private: (),
}

impl InProcessAccess {
    /// Creates the accessor.
    ///
    /// # Safety
    /// Every address the dispatcher reads or writes through it during the hypercall
    /// must be valid host memory for that access (the hypercall's own contract,
    /// [`hypercall::Hypercall::hypercall`]), and the calling guest thread must not be
    /// using that memory concurrently.
    pub unsafe fn new() -> Self {
        InProcessAccess { _private: () }
    }

    fn region(addr: u64, len: usize) -> Result<Option<SharedMem<'static>>, Efault> {
        if len == 0 {
            return Ok(None);
        }
        let a = usize::try_from(addr).map_err(|_| Efault)?;
        if a.checked_add(len).is_none() {
            return Err(Efault);
        }
        let p = NonNull::new(a as *mut u8).ok_or(Efault)?;
        // SAFETY: the constructor's contract: the calling guest vouches that addr..+len
        // is valid for the duration of the hypercall and not used concurrently.
        Ok(Some(unsafe { SharedMem::new(p, len) }))
    }
}

impl GuestAccess for InProcessAccess {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Efault> {
        if let Some(m) = Self::region(addr, buf.len())? {
            m.read(0, buf);
        }
        Ok(())
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Efault> {
        if let Some(m) = Self::region(addr, buf.len())? {
            m.write(0, buf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_takes_only_neighbours_in_the_same_ram() {
        let mem = GuestMemory::new(GuestMemory::DEFAULT_FIRST_GFN, 4).unwrap();
        let other = GuestMemory::new(GuestMemory::DEFAULT_FIRST_GFN, 4).unwrap();
        fn g(m: &GuestMemory, i: u64) -> SharedMem<'_> {
            m.page(Gfn(0x100 + i)).unwrap()
        }
        mem.write(0x101 << 12, &[1; PAGE_SIZE]).unwrap();
        mem.write(0x102 << 12, &[2; PAGE_SIZE]).unwrap();
        let half = g(&mem, 1).sub(2048, 2048).unwrap();
        let j = mem.join(&half, &g(&mem, 2)).unwrap();
        assert_eq!(j.len(), 2048 + PAGE_SIZE);
        let mut b = vec![0u8; j.len()];
        j.read(0, &mut b);
        assert!(b[..2048].iter().all(|&x| x == 1) && b[2048..].iter().all(|&x| x == 2));
        // Not neighbours: a gap, the wrong order, the same page twice, another RAM.
        assert!(mem.join(&g(&mem, 0), &g(&mem, 2)).is_none());
        assert!(mem.join(&g(&mem, 2), &g(&mem, 1)).is_none());
        assert!(mem.join(&g(&mem, 1), &g(&mem, 1)).is_none());
        assert!(mem.join(&g(&other, 0), &g(&other, 1)).is_none());
        assert!(mem.join(&g(&mem, 3), &g(&other, 0)).is_none());
    }

    #[test]
    fn gfn_mapping_is_not_identity() {
        let mem = GuestMemory::new(GuestMemory::DEFAULT_FIRST_GFN, 4).unwrap();
        let host = mem.gfn_to_host(Gfn(0x100)).unwrap();
        assert_ne!(host.as_ptr() as u64 >> 12, 0x100);
        assert_eq!(mem.host_to_gfn(host.as_ptr()), Some(Gfn(0x100)));
        let p3 = mem.gfn_to_host(Gfn(0x103)).unwrap();
        assert_eq!(p3.as_ptr() as usize - host.as_ptr() as usize, 3 * PAGE_SIZE);
        // SAFETY-free pointer arithmetic: one byte inside page 0x102.
        let inside = (p3.as_ptr() as usize - 1) as *const u8;
        assert_eq!(mem.host_to_gfn(inside), Some(Gfn(0x102)));
        assert_eq!(mem.host_to_gpa(inside), Some(0x103_000 - 1));
        let past = (p3.as_ptr() as usize + PAGE_SIZE) as *const u8;
        assert_eq!(mem.host_to_gfn(past), None);
        assert_eq!(mem.host_to_gfn(core::ptr::null()), None);
    }

    #[test]
    fn every_access_is_bounds_checked() {
        let mem = GuestMemory::new(Gfn(0x100), 2).unwrap();
        assert_eq!(mem.page(Gfn(0xff)).err(), Some(MemError::BadGfn(Gfn(0xff))));
        assert_eq!(
            mem.page(Gfn(0x102)).err(),
            Some(MemError::BadGfn(Gfn(0x102)))
        );
        assert!(mem.page(Gfn(u64::MAX)).is_err());
        assert!(mem.range(0x100_000, 2 * PAGE_SIZE).is_ok());
        assert!(mem.range(0x100_001, 2 * PAGE_SIZE).is_err());
        assert!(mem.range(0xfffff, 1).is_err());
        assert!(mem.range(u64::MAX, 2).is_err());
        assert!(mem.range(0x100_000, usize::MAX).is_err());
        let mut b = [0u8; 8];
        assert!(mem.read(0x101_ffc, &mut b).is_err());
        assert!(mem.write(0x101_ff8, &b).is_ok());
        assert!(mem.pages_at(Gfn(0x101), 2).is_err());
        assert!(mem.pages_at(Gfn(0x100), usize::MAX).is_err());
        assert!(GuestMemory::new(Gfn(0), 0).is_err());
        assert!(GuestMemory::new(Gfn(u64::MAX), 1).is_err());
    }

    #[test]
    fn hole_pages_are_bounded_and_stay() {
        let none = GuestMemory::new(Gfn(0), 4).unwrap();
        assert_eq!(
            none.place(Gfn(0x10)).err(),
            Some(MemError::BadGfn(Gfn(0x10)))
        );
        assert!(none.place(Gfn(2)).is_ok(), "RAM pages are placed in place");
        let mem = GuestMemory::with_holes(Gfn(0), 4, 2).unwrap();
        assert!(mem.page(Gfn(0x10)).is_err());
        let a = mem.place(Gfn(0x10)).unwrap();
        a.write(0, b"shared");
        assert_eq!(mem.hole_generation(), 1);
        // The same gfn again: the same page, no new one.
        let again = mem.place(Gfn(0x10)).unwrap();
        assert_eq!(again.as_ptr(), a.as_ptr());
        assert_eq!(mem.page(Gfn(0x10)).unwrap().as_ptr(), a.as_ptr());
        assert_eq!(mem.hole_generation(), 1);
        mem.place(Gfn(0x20)).unwrap();
        assert_eq!(
            mem.place(Gfn(0x30)).err(),
            Some(MemError::TooManyHolePages(2))
        );
        assert!(mem.place(GuestMemory::HOLE_GFN_END).is_err());
        let holes = mem.hole_pages();
        assert_eq!(holes.len(), 2);
        assert_eq!(holes[0].0, Gfn(0x10));
        let mut b = [0u8; 6];
        holes[0].1.read(0, &mut b);
        assert_eq!(&b, b"shared");
        // Plain RAM reads do not reach hole pages.
        assert!(mem.read(0x10 << 12, &mut b).is_err());
    }

    #[test]
    fn memory_starts_zeroed_and_zero_page_works() {
        let mem = GuestMemory::new(Gfn(0x100), 2).unwrap();
        let p = mem.page(Gfn(0x101)).unwrap();
        let mut b = [0xffu8; PAGE_SIZE];
        p.read(0, &mut b);
        assert!(b.iter().all(|&x| x == 0));
        p.fill(0, PAGE_SIZE, 7);
        mem.zero_page(Gfn(0x101)).unwrap();
        p.read(0, &mut b);
        assert!(b.iter().all(|&x| x == 0));
    }

    #[test]
    fn in_process_access_rejects_null_and_overflow() {
        // SAFETY: only the null/overflow paths are exercised, and one valid local.
        let acc = unsafe { InProcessAccess::new() };
        let mut b = [0u8; 4];
        assert_eq!(acc.read(0, &mut b), Err(Efault));
        assert_eq!(acc.read(u64::MAX - 1, &mut b), Err(Efault));
        let src = [1u8, 2, 3, 4];
        acc.read(src.as_ptr() as u64, &mut b).unwrap();
        assert_eq!(b, src);
    }
}

/// Most regions one [`preadv_into`]/[`pwritev_from`] system call takes (`IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Regions of one transfer that fit the stack array of [`file_vectored`].
const SMALL_IOV: usize = 8;

/// The iovecs of one system call: in `small` while they fit, else in `big`.
struct IovBuf<'a> {
    small: &'a mut [libc::iovec; SMALL_IOV],
    /// How many of `small` are used (`usize::MAX`: `big` is used instead).
    len: usize,
    big: &'a mut Vec<libc::iovec>,
}

impl IovBuf<'_> {
    fn as_slice(&self) -> &[libc::iovec] {
        if self.len == usize::MAX {
            self.big
        } else {
            &self.small[..self.len]
        }
    }
    fn last_mut(&mut self) -> Option<&mut libc::iovec> {
        if self.len == usize::MAX {
            self.big.last_mut()
        } else {
            self.small[..self.len].last_mut()
        }
    }
    fn push(&mut self, v: libc::iovec) {
        if self.len != usize::MAX {
            if let Some(slot) = self.small.get_mut(self.len) {
                *slot = v;
                self.len += 1;
                return;
            }
            // Full: move to the vector.
            self.big.clear();
            self.big.extend_from_slice(&self.small[..]);
            self.len = usize::MAX;
        }
        self.big.push(v);
    }
    fn as_ptr(&self) -> *const libc::iovec {
        self.as_slice().as_ptr()
    }
    fn count(&self) -> usize {
        self.as_slice().len()
    }
}

/// Which way a vectored file transfer goes.
#[derive(Clone, Copy)]
enum Dir {
    Read,
    /// A read that must not wait for the disk (`RWF_NOWAIT`).
    ReadNoWait,
    Write,
}

// `file_vectored`'s raw `preadv2` passes the position in one `long`.
const _: () = assert!(std::mem::size_of::<libc::c_long>() == 8);

fn file_vectored(
    file: &std::fs::File,
    regions: &[SharedMem<'_>],
    pos: u64,
    dir: Dir,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let total: usize = regions.iter().map(SharedMem::len).sum();
    let mut done = 0usize;
    // (region index, offset in it) of the first byte not yet transferred.
    let (mut ri, mut roff) = (0usize, 0usize);
    // A few regions (a small request's pages) go through an array on the stack;
    // more through one vector, allocated once.
    let mut small = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; SMALL_IOV];
    let mut big: Vec<libc::iovec> = Vec::new();
    while done < total {
        let mut iov = IovBuf {
            small: &mut small,
            len: 0,
            big: &mut big,
        };
        let mut first = true;
        for r in regions.iter().skip(ri).take(IOV_MAX) {
            let off = if first { roff } else { 0 };
            first = false;
            // SAFETY: `off <= r.len()`, so the pointer stays inside the region.
            let base: *mut u8 = unsafe { r.as_ptr().add(off) };
            let len = r.len() - off;
            // Regions that continue one another in memory (a frontend's consecutive
            // pages usually do) go to the kernel as one iovec: the pointer is only
            // handed to the kernel, never used by Rust across the two regions.
            match iov.last_mut() {
                Some(last)
                    if (last.iov_base as usize).wrapping_add(last.iov_len) == base as usize =>
                {
                    last.iov_len += len;
                }
                _ => iov.push(libc::iovec {
                    iov_base: base.cast(),
                    iov_len: len,
                }),
            }
        }
        let at = pos
            .checked_add(done as u64)
            .and_then(|p| libc::off_t::try_from(p).ok())
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let n = match dir {
            // SAFETY: every iovec covers a live SharedMem region (guest memory that
            // stays mapped while the caller holds the grant mappings or ring); the
            // kernel reads/writes it like a device doing DMA, and no Rust reference
            // to that memory exists.
            Dir::Read => unsafe {
                libc::preadv(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.count() as libc::c_int,
                    at,
                )
            },
            // SAFETY: as above. The system call itself rather than libc's
            // `preadv2`, whose wrapper is a thread-cancellation point (two more
            // calls around the system call, which no thread of ours needs): this
            // read is made for each small request on the frontend's own thread.
            // On x86_64 (and every 64-bit Linux ABI) the position goes in the
            // low-half argument whole, with 0 as the high half, as libc passes it.
            Dir::ReadNoWait => unsafe {
                libc::syscall(
                    libc::SYS_preadv2,
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.count() as libc::c_int,
                    at,
                    0 as libc::c_long,
                    libc::RWF_NOWAIT,
                ) as isize
            },
            // SAFETY: as above (the kernel only reads the memory).
            Dir::Write => unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.count() as libc::c_int,
                    at,
                )
            },
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break; // end of file
        }
        let mut n = n as usize;
        done += n;
        while n > 0 {
            let Some(r) = regions.get(ri) else { break };
            let left = r.len() - roff;
            if n >= left {
                n -= left;
                ri += 1;
                roff = 0;
            } else {
                roff += n;
                n = 0;
            }
        }
    }
    Ok(done)
}

/// Reads `file` from byte `pos` into `regions` in order (`preadv(2)`, repeated on
/// short reads); returns the bytes read (less than asked only at end of file).
///
/// Block backends use it to fill granted guest pages straight from a disk image:
/// the kernel writes the memory like a device would by DMA, with no intermediate
/// copy and no Rust reference into guest memory.
pub fn preadv_into(
    file: &std::fs::File,
    regions: &[SharedMem<'_>],
    pos: u64,
) -> std::io::Result<usize> {
    file_vectored(file, regions, pos, Dir::Read)
}

/// [`preadv_into`] that never waits for the disk: `preadv2(2)` with `RWF_NOWAIT`,
/// so the kernel copies only what is already in the page cache. Fails with
/// [`std::io::ErrorKind::WouldBlock`] (`EAGAIN`) as soon as some of the data is not
/// there (the regions may then hold part of it), and with `EOPNOTSUPP` where the
/// file system or kernel does not offer it. Lets a caller that must not block
/// (e.g. a backend serving a request on the frontend's own thread) try first and
/// hand the request to a thread that may wait only when needed.
pub fn preadv_into_nowait(
    file: &std::fs::File,
    regions: &[SharedMem<'_>],
    pos: u64,
) -> std::io::Result<usize> {
    file_vectored(file, regions, pos, Dir::ReadNoWait)
}

/// Writes `regions` in order to `file` at byte `pos` (`pwritev(2)`, repeated on short
/// writes); returns the bytes written.
pub fn pwritev_from(
    file: &std::fs::File,
    regions: &[SharedMem<'_>],
    pos: u64,
) -> std::io::Result<usize> {
    file_vectored(file, regions, pos, Dir::Write)
}
