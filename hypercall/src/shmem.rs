//! Memory shared with another domain.
//!
//! This is the one module that touches shared pages. It never creates a Rust reference
//! into them: the other side may write at any time, so every access is a volatile or
//! atomic operation on a raw pointer. Callers copy what they need out once (into a
//! private value) and validate that copy (XSA-155).
//!
//! Why not the `volatile` crate: its `VolatilePtr` gives volatile reads and writes of
//! whole values, which is right for device registers (MMIO), but shared pages need
//! more: atomics with acquire/release ordering for ring indices and grant flags (a
//! volatile access orders nothing), compare-exchange for grant entries, and bulk
//! copies that read each byte once into private memory. `SharedMem` offers exactly
//! those, bounds-checks every offset, and feeds the read audit (`read-audit`); a
//! volatile wrapper would add a second way to touch the same memory without these
//! guarantees.
//!
//! Offsets given to the accessors are the caller's layout constants; an offset out of
//! range or misaligned is a bug in the caller and panics. Offsets derived from data the
//! other side controls must be checked first with [`SharedMem::sub`] /
//! [`SharedMem::contains`].
//!
//! # Ownership
//!
//! A [`SharedMem<'a>`](SharedMem) is borrowed from the owner of its memory and
//! cannot outlive it: [`SharedPages`] owns pages allocated from the platform (and
//! alone can free them), a platform owns its frame mappings
//! ([`SharedMem::map_gfn`] borrows it), and a [`SharedRegion`] lends out regions
//! tied to its own borrow (rings hold one). The rule is written out in the
//! repository's `docs/shared-memory.md`.

use crate::platform::{Gfn, Platform, PAGE_SIZE};
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Records an access for [`crate::audit`] (feature `read-audit`); nothing otherwise.
macro_rules! audit {
    ($mem:expr, $off:expr, $len:expr, $op:ident, $value:expr) => {
        #[cfg(feature = "read-audit")]
        crate::audit::record(
            $mem.ptr.as_ptr().addr().wrapping_add($off),
            $len,
            crate::audit::Op::$op,
            $value,
        );
    };
}

/// A region of memory that another domain may read or write concurrently,
/// borrowed for `'a` from whatever owns it.
///
/// Like vm-memory's `VolatileSlice<'a>`: a pointer, a length and a lifetime. The
/// lifetime is that of the owner of the memory — a [`SharedPages`] allocation, a
/// platform's frame mapping ([`SharedMem::map_gfn`]), or a test's buffer — so safe
/// code cannot keep a region after its pages are freed or unmapped. Copying a
/// `SharedMem` is cheap and keeps the same lifetime; [`SharedMem::sub`] narrows it.
///
/// A region lives while its owner is borrowed:
///
/// ```
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
/// let mem: SharedMem<'_> = pages.mem();
/// mem.store_u32(0, 7);
/// assert_eq!(mem.load_u32(0), 7);
/// // SAFETY: no grant was made on the page.
/// unsafe { pages.free(&platform) };
/// ```
///
/// and not after it is freed:
///
/// ```compile_fail,E0505
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
/// let mem: SharedMem<'_> = pages.mem();
/// // SAFETY: no grant was made on the page.
/// unsafe { pages.free(&platform) }; // error[E0505]: cannot move out of `pages`
/// mem.store_u32(0, 7);
/// ```
///
/// nor after it is dropped (a dropped allocation is leaked, never freed, but the
/// borrow still ends with it):
///
/// ```compile_fail,E0597
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
/// let mem: SharedMem<'_>;
/// {
///     let pages = SharedPages::alloc(&platform, 1).unwrap();
///     mem = pages.mem(); // error[E0597]: `pages` does not live long enough
/// }
/// mem.store_u32(0, 7);
/// ```
///
/// A frame mapping lives no longer than the platform that maps it:
///
/// ```compile_fail,E0505
/// use hypercall::{Gfn, SharedMem};
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
/// let platform = Heap;
/// let page: SharedMem<'_> = SharedMem::map_gfn(&platform, Gfn(1)).unwrap();
/// drop(platform); // error[E0505]: cannot move out of `platform`
/// page.load_u32(0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SharedMem<'a> {
    ptr: NonNull<u8>,
    len: usize,
    /// Borrows the owner's bytes, which may change under us (hence the `UnsafeCell`;
    /// covariant, so a region can be narrowed to a shorter lifetime).
    _owner: PhantomData<&'a [UnsafeCell<u8>]>,
}

// SAFETY: SharedMem is a pointer + length borrowed for 'a; all accesses through it
// are volatile or atomic, which is exactly the discipline required for memory
// written concurrently (by another domain, or another thread).
unsafe impl Send for SharedMem<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedMem<'_> {}

/// Something that owns or borrows shared memory and lends it out as a
/// [`SharedMem`] that cannot outlive it. Rings are generic over it
/// ([`crate::ring::FrontRing`]), so a device can own its ring pages (a
/// [`SharedPages`]) while a test or a backend lends borrowed memory (a
/// [`SharedMem`]).
///
/// Safe to implement: an implementation can only hand out regions it could
/// obtain safely itself.
pub trait SharedRegion {
    /// The memory, borrowed from `self`.
    fn shared(&self) -> SharedMem<'_>;
}

impl SharedRegion for SharedMem<'_> {
    fn shared(&self) -> SharedMem<'_> {
        *self
    }
}

impl<R: SharedRegion + ?Sized> SharedRegion for &R {
    fn shared(&self) -> SharedMem<'_> {
        (**self).shared()
    }
}

/// Pages allocated from a [`Platform`] for sharing with another domain, owned:
/// the owner of the [`SharedMem`] regions [`SharedPages::mem`] lends out.
///
/// Not `Copy` or `Clone`: one owner, which alone can return the pages with the
/// `unsafe` [`SharedPages::free`] (it consumes the owner, so no region borrowed
/// from it survives; the caller's part of the contract is that no grant on the
/// pages is still active). Dropping a `SharedPages` without freeing it leaks the
/// pages — safe, and the right outcome when a grant could not be ended (the other
/// domain may still write there).
#[derive(Debug)]
pub struct SharedPages {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: owns the allocation (a pointer + length); all accesses go through
// `SharedMem`, which is Send + Sync for the same reason.
unsafe impl Send for SharedPages {}
// SAFETY: as above; `&SharedPages` only lends out `SharedMem` regions.
unsafe impl Sync for SharedPages {}

impl SharedPages {
    /// No pages: [`SharedPages::mem`] is empty, so every access panics as out of
    /// range. A placeholder for a structure built before its pages exist (a
    /// `static`, a detached ring). Freeing it does nothing.
    pub const fn empty() -> SharedPages {
        SharedPages {
            ptr: NonNull::dangling(),
            len: 0,
        }
    }

    /// Allocates `pages` zeroed pages with [`Platform::alloc_pages`]. `None` if the
    /// platform is out of memory or `pages` is 0.
    pub fn alloc<P: Platform + ?Sized>(platform: &P, pages: usize) -> Option<SharedPages> {
        let len = pages.checked_mul(PAGE_SIZE)?;
        if len == 0 {
            return None;
        }
        let ptr = platform.alloc_pages(pages)?;
        Some(SharedPages { ptr, len })
    }

    /// The pages, borrowed: the region cannot outlive this owner.
    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: per `Platform`'s contract the allocation stays mapped, readable
        // and writable, and is never Rust memory, until it is passed to
        // `free_pages` — which only `free` does, consuming `self` (so after any
        // borrow of `self` ends). The empty placeholder has length 0.
        unsafe { SharedMem::new(self.ptr, self.len) }
    }

    /// Length in bytes.
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no pages ([`SharedPages::empty`]).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The guest frame number of page `index` (`None` if out of range or not
    /// guest memory).
    pub fn page_gfn<P: Platform + ?Sized>(&self, platform: &P, index: usize) -> Option<Gfn> {
        self.mem().page_gfn(platform, index)
    }

    /// Gives up ownership for good: the pages are never freed, so the region lives
    /// for the rest of the program (like `Box::leak`). For pages a kernel keeps
    /// for its whole life (a console ring, grant frames).
    pub fn leak(self) -> SharedMem<'static> {
        // SAFETY: per `Platform`'s contract the allocation stays valid until it is
        // passed to `free_pages`, which needs this owner — consumed here.
        unsafe { SharedMem::new(self.ptr, self.len) }
    }

    /// Returns the pages to the platform. The empty placeholder is not an
    /// allocation: freeing it does nothing.
    ///
    /// # Safety
    /// `platform` must be the platform (the same value, or one sharing its page
    /// allocator) that [`SharedPages::alloc`] took them from, and no other domain
    /// may still have access to them: every grant on them ended (a successful
    /// `end_access`), no mapping or copy in flight. The borrow checker enforces
    /// the rest: `self` is consumed, so no region borrowed from it is left.
    pub unsafe fn free<P: Platform + ?Sized>(self, platform: &P) {
        if self.len == 0 {
            return;
        }
        // SAFETY: the caller guarantees the platform and that no other domain can
        // access the pages; `self` (their only owner) is consumed, so nothing here
        // uses them any more.
        unsafe { platform.free_pages(self.ptr, self.len / PAGE_SIZE) }
    }
}

impl SharedRegion for SharedPages {
    fn shared(&self) -> SharedMem<'_> {
        self.mem()
    }
}

/// A platform together with one guest frame it maps: the owner of that mapping,
/// for a structure that owns its platform and keeps using one page (a console).
///
/// [`Platform::gfn_to_virt`] promises the mapping for as long as the platform
/// value lives; `MappedPage` holds both, so [`MappedPage::mem`] lends the page
/// out borrowed from the pair and it cannot outlive the platform:
///
/// ```compile_fail,E0505
/// use hypercall::{Gfn, MappedPage, SharedMem};
/// # use core::ptr::NonNull;
/// # use hypercall::{Hypercall, Platform};
/// # struct P;
/// # impl Hypercall for P {
/// #     unsafe fn hypercall(&self, _: u32, _: [usize; 5]) -> isize { -38 }
/// # }
/// # // SAFETY: maps nothing.
/// # unsafe impl Platform for P {
/// #     fn alloc_pages(&self, _: usize) -> Option<NonNull<u8>> { None }
/// #     unsafe fn free_pages(&self, _: NonNull<u8>, _: usize) {}
/// #     fn virt_to_gfn(&self, _: NonNull<u8>) -> Option<Gfn> { None }
/// #     fn gfn_to_virt(&self, _: Gfn) -> Option<NonNull<u8>> { None }
/// #     fn wait(&self) {}
/// #     fn now_ns(&self) -> u64 { 0 }
/// # }
/// # let platform = P;
/// let Ok(page) = MappedPage::new(platform, Gfn(7)) else { return };
/// let mem: SharedMem<'_> = page.mem();
/// let platform = page.into_platform(); // error[E0505]: cannot move out of `page`
/// mem.load_u32(0);
/// ```
#[derive(Debug)]
pub struct MappedPage<P> {
    platform: P,
    gfn: Gfn,
    ptr: NonNull<u8>,
}

// SAFETY: the pointer is only used to lend out `SharedMem` regions, which are
// Send + Sync; the platform decides for itself.
unsafe impl<P: Send> Send for MappedPage<P> {}
// SAFETY: as above.
unsafe impl<P: Sync> Sync for MappedPage<P> {}

impl<P: Platform> MappedPage<P> {
    /// Maps guest frame `gfn` through `platform` and keeps both. Gives the
    /// platform back if it does not map the frame.
    pub fn new(platform: P, gfn: Gfn) -> Result<MappedPage<P>, P> {
        match platform.gfn_to_virt(gfn) {
            Some(ptr) => Ok(MappedPage { platform, gfn, ptr }),
            None => Err(platform),
        }
    }

    /// The page (4096 bytes), borrowed from `self`.
    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: per `Platform::gfn_to_virt`'s contract the whole frame is mapped
        // at `ptr`, readable and writable, and never Rust memory, for as long as
        // the platform value lives — it lives in `self`, borrowed for the result's
        // lifetime.
        unsafe { SharedMem::new(self.ptr, PAGE_SIZE) }
    }

    /// The frame.
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Ends the borrow of the mapping and gives the platform back.
    pub fn into_platform(self) -> P {
        self.platform
    }
}

impl<P: Platform> SharedRegion for MappedPage<P> {
    fn shared(&self) -> SharedMem<'_> {
        self.mem()
    }
}

impl<'a> SharedMem<'a> {
    /// Wraps `len` bytes at `ptr` for `'a`.
    ///
    /// # Safety
    /// For all of `'a`:
    /// - `ptr..ptr+len` stays mapped, readable and writable (it is not freed,
    ///   unmapped or given back to an allocator), and
    /// - no Rust reference (`&T`/`&mut T`) points into it and no Rust object lives
    ///   in it: the bytes are only accessed through `SharedMem` regions (or by
    ///   another domain).
    ///
    /// Choose `'a` as the borrow of whatever keeps the memory alive (the buffer,
    /// the mapping), so the borrow checker enforces the first point; `'static` is
    /// right only for memory that is never freed.
    pub const unsafe fn new(ptr: NonNull<u8>, len: usize) -> Self {
        Self {
            ptr,
            len,
            _owner: PhantomData,
        }
    }

    /// The empty region (no memory): every access panics as out of range. A
    /// placeholder for a structure built before its pages exist (a `static`).
    pub const fn empty() -> SharedMem<'a> {
        SharedMem {
            ptr: NonNull::dangling(),
            len: 0,
            _owner: PhantomData,
        }
    }

    /// The page the platform maps guest frame `gfn` at (e.g. the xenstore or
    /// console page from `HVM_PARAM_*_PFN`), borrowed from the platform: it cannot
    /// outlive `platform`. `None` if the frame is not mapped.
    pub fn map_gfn<P: Platform + ?Sized>(platform: &'a P, gfn: Gfn) -> Option<SharedMem<'a>> {
        let ptr = platform.gfn_to_virt(gfn)?;
        // SAFETY: per `Platform::gfn_to_virt`'s contract, `ptr` is where the whole
        // 4 KiB frame `gfn` is mapped, readable and writable, for as long as the
        // platform value lives (at least `'a`, which borrows it), and the frame is
        // never Rust memory.
        Some(unsafe { SharedMem::new(ptr, PAGE_SIZE) })
    }

    /// The start address as a `NonNull` (for [`Platform::virt_to_gfn`]; never
    /// dereference it directly).
    #[inline]
    pub const fn as_non_null(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The guest frame number of page `index` of this region (`None` if out of
    /// range or not guest memory).
    pub fn page_gfn<P: Platform + ?Sized>(&self, platform: &P, index: usize) -> Option<Gfn> {
        let page = self.sub(index.checked_mul(PAGE_SIZE)?, PAGE_SIZE)?;
        platform.virt_to_gfn(page.ptr)
    }

    /// Length in bytes.
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address (for address translation only; never dereference it directly).
    #[inline]
    pub const fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Whether `offset..offset+len` lies inside the region (overflow-safe).
    #[inline]
    pub const fn contains(&self, offset: usize, len: usize) -> bool {
        match offset.checked_add(len) {
            Some(end) => end <= self.len,
            None => false,
        }
    }

    /// The sub-region `offset..offset+len`, or `None` if it is not inside this region.
    #[inline]
    pub fn sub(&self, offset: usize, len: usize) -> Option<SharedMem<'a>> {
        if !self.contains(offset, len) {
            return None;
        }
        // SAFETY: in bounds (checked above), so the pointer stays inside the allocation
        // this region was created over.
        let p = unsafe { self.ptr.as_ptr().add(offset) };
        Some(SharedMem {
            // SAFETY: non-null base plus in-bounds offset.
            ptr: unsafe { NonNull::new_unchecked(p) },
            len,
            _owner: PhantomData,
        })
    }

    #[inline]
    fn at<T>(&self, offset: usize) -> *mut T {
        let size = core::mem::size_of::<T>();
        assert!(
            self.contains(offset, size),
            "shared memory access out of range"
        );
        // SAFETY: in bounds (asserted above).
        let p = unsafe { self.ptr.as_ptr().add(offset) };
        assert!(
            (p as usize).is_multiple_of(core::mem::align_of::<T>()),
            "misaligned shared memory access"
        );
        p.cast()
    }

    /// Atomic (acquire) load of a `u32`, e.g. a ring index the other side produces.
    #[inline]
    pub fn load_u32(&self, offset: usize) -> u32 {
        // SAFETY: in bounds and aligned (checked by `at`); the memory is valid per `new`,
        // and the other side only ever accesses it as plain memory, which is what an
        // atomic is at the hardware level.
        let v = unsafe { AtomicU32::from_ptr(self.at(offset)) }.load(Ordering::Acquire);
        audit!(self, offset, 4, Load, u64::from(v));
        v
    }

    /// Atomic (release) store of a `u32`, e.g. publishing a ring index.
    #[inline]
    pub fn store_u32(&self, offset: usize, value: u32) {
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(self.at(offset)) }.store(value, Ordering::Release);
        audit!(self, offset, 4, Store, u64::from(value));
    }

    /// Atomic (acquire) load of a `u16` (e.g. grant entry flags).
    #[inline]
    pub fn load_u16(&self, offset: usize) -> u16 {
        // SAFETY: as in `load_u32`.
        let v = unsafe { AtomicU16::from_ptr(self.at(offset)) }.load(Ordering::Acquire);
        audit!(self, offset, 2, Load, u64::from(v));
        v
    }

    /// Atomic (release) store of a `u16`.
    #[inline]
    pub fn store_u16(&self, offset: usize, value: u16) {
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU16::from_ptr(self.at(offset)) }.store(value, Ordering::Release);
        audit!(self, offset, 2, Store, u64::from(value));
    }

    /// Atomic compare-and-exchange of a `u16` (sequentially consistent); returns the
    /// previous value, `Ok` if it was `current`.
    #[inline]
    pub fn cmpxchg_u16(&self, offset: usize, current: u16, new: u16) -> Result<u16, u16> {
        // SAFETY: as in `load_u32`.
        let r = unsafe { AtomicU16::from_ptr(self.at(offset)) }.compare_exchange(
            current,
            new,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        audit!(self, offset, 2, Update, u64::from(r.unwrap_or_else(|v| v)));
        r
    }

    /// Atomic compare-and-exchange of a `u32`.
    #[inline]
    pub fn cmpxchg_u32(&self, offset: usize, current: u32, new: u32) -> Result<u32, u32> {
        // SAFETY: as in `load_u32`.
        let r = unsafe { AtomicU32::from_ptr(self.at(offset)) }.compare_exchange(
            current,
            new,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        audit!(self, offset, 4, Update, u64::from(r.unwrap_or_else(|v| v)));
        r
    }

    /// Atomic load of a `u8`.
    #[inline]
    pub fn load_u8(&self, offset: usize) -> u8 {
        // SAFETY: as in `load_u32`.
        let v = unsafe { AtomicU8::from_ptr(self.at(offset)) }.load(Ordering::Acquire);
        audit!(self, offset, 1, Load, u64::from(v));
        v
    }

    /// Atomic store of a `u8`.
    #[inline]
    pub fn store_u8(&self, offset: usize, value: u8) {
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU8::from_ptr(self.at(offset)) }.store(value, Ordering::Release);
        audit!(self, offset, 1, Store, u64::from(value));
    }

    /// Atomic swap of a `u8`, returning the old value.
    #[inline]
    pub fn swap_u8(&self, offset: usize, value: u8) -> u8 {
        // SAFETY: as in `load_u32`.
        let old = unsafe { AtomicU8::from_ptr(self.at(offset)) }.swap(value, Ordering::SeqCst);
        audit!(self, offset, 1, Update, u64::from(old));
        old
    }

    /// Atomic load of a `u64` (e.g. an event-channel bitmap word).
    #[inline]
    pub fn load_u64(&self, offset: usize) -> u64 {
        // SAFETY: as in `load_u32`.
        let v = unsafe { AtomicU64::from_ptr(self.at(offset)) }.load(Ordering::Acquire);
        audit!(self, offset, 8, Load, v);
        v
    }

    /// Atomic store of a `u64`.
    #[inline]
    pub fn store_u64(&self, offset: usize, value: u64) {
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU64::from_ptr(self.at(offset)) }.store(value, Ordering::Release);
        audit!(self, offset, 8, Store, value);
    }

    /// Atomic OR into a `u64`; returns the previous value.
    #[inline]
    pub fn fetch_or_u64(&self, offset: usize, bits: u64) -> u64 {
        // SAFETY: as in `load_u32`.
        let old = unsafe { AtomicU64::from_ptr(self.at(offset)) }.fetch_or(bits, Ordering::SeqCst);
        audit!(self, offset, 8, Update, old);
        old
    }

    /// Atomic AND into a `u16`; returns the previous value (Xen clears grant-entry
    /// flags this way: a 16-bit locked AND on the flags field alone).
    #[inline]
    pub fn fetch_and_u16(&self, offset: usize, bits: u16) -> u16 {
        // SAFETY: as in `load_u16`.
        let old = unsafe { AtomicU16::from_ptr(self.at(offset)) }.fetch_and(bits, Ordering::SeqCst);
        audit!(self, offset, 2, Update, u64::from(old));
        old
    }

    /// Atomic AND into a `u64`; returns the previous value.
    #[inline]
    pub fn fetch_and_u64(&self, offset: usize, bits: u64) -> u64 {
        // SAFETY: as in `load_u32`.
        let old = unsafe { AtomicU64::from_ptr(self.at(offset)) }.fetch_and(bits, Ordering::SeqCst);
        audit!(self, offset, 8, Update, old);
        old
    }

    /// Atomic exchange of a `u64`; returns the previous value.
    #[inline]
    pub fn swap_u64(&self, offset: usize, value: u64) -> u64 {
        // SAFETY: as in `load_u32`.
        let old = unsafe { AtomicU64::from_ptr(self.at(offset)) }.swap(value, Ordering::SeqCst);
        audit!(self, offset, 8, Update, old);
        old
    }

    /// Copies `buf.len()` bytes starting at `offset` out of shared memory, once.
    #[inline]
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(
            self.contains(offset, buf.len()),
            "shared memory read out of range"
        );
        // SAFETY: in bounds (asserted); `buf` is private memory that cannot overlap
        // the shared region (nothing holds a reference into it); no reference is
        // formed into shared memory.
        unsafe {
            copy_bytes(
                buf.as_mut_ptr(),
                self.ptr.as_ptr().add(offset),
                buf.len(),
                Shared::Src,
            )
        }
        audit!(self, offset, buf.len(), Read, 0);
    }

    /// Copies `buf` into shared memory at `offset`.
    #[inline]
    pub fn write(&self, offset: usize, buf: &[u8]) {
        assert!(
            self.contains(offset, buf.len()),
            "shared memory write out of range"
        );
        // SAFETY: in bounds (asserted); `buf` is private memory that cannot overlap
        // the shared region; no reference is formed into shared memory.
        unsafe {
            copy_bytes(
                self.ptr.as_ptr().add(offset),
                buf.as_ptr(),
                buf.len(),
                Shared::Dst,
            )
        }
        audit!(self, offset, buf.len(), Write, 0);
    }

    /// Fills `len` bytes at `offset` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) {
        assert!(
            self.contains(offset, len),
            "shared memory fill out of range"
        );
        // SAFETY: offset..offset+len is inside the region (asserted); no reference
        // is formed into shared memory.
        unsafe { fill_bytes(self.ptr.as_ptr().add(offset), len, byte) };
        audit!(self, offset, len, Write, 0);
    }

    /// Reads a plain-data value (a private copy) from `offset`.
    #[inline]
    pub fn read_obj<T: FromBytes + IntoBytes>(&self, offset: usize) -> T {
        let mut v = T::new_zeroed();
        self.read(offset, v.as_mut_bytes());
        v
    }

    /// Writes a plain-data value to `offset`.
    #[inline]
    pub fn write_obj<T: IntoBytes + Immutable>(&self, offset: usize, value: &T) {
        self.write(offset, value.as_bytes());
    }

    /// Copies `len` bytes from `src` at `src_off` to `self` at `dst_off`
    /// (both shared; used by host-side grant copy). Each source byte is read once.
    /// Overlapping ranges (the same page reached twice, e.g. through two grants)
    /// are copied as `memmove` would, through a small private buffer.
    #[inline]
    pub fn copy_from(&self, dst_off: usize, src: &SharedMem<'_>, src_off: usize, len: usize) {
        assert!(
            self.contains(dst_off, len) && src.contains(src_off, len),
            "shared memory copy out of range"
        );
        // SAFETY: both ranges are in bounds (asserted), so the offsets stay inside
        // their regions.
        let (d, s) = unsafe {
            (
                self.ptr.as_ptr().add(dst_off),
                src.ptr.as_ptr().add(src_off),
            )
        };
        let (da, sa) = (d as usize, s as usize);
        if !ranges_overlap(da, sa, len) {
            // SAFETY: both ranges are valid (per `new`) and in bounds (asserted
            // above), and they do not overlap; no reference is formed.
            unsafe { copy_bytes(d, s, len, Shared::Both) };
            audit!(src, src_off, len, Read, 0);
            audit!(self, dst_off, len, Write, 0);
            return;
        }
        // Overlap: chunk through a private buffer, in the direction that reads each
        // chunk before it can be overwritten.
        let mut chunk = [0u8; 256];
        let mut done = 0;
        while done < len {
            let n = core::cmp::min(chunk.len(), len - done);
            let at = if da <= sa { done } else { len - done - n };
            src.read(src_off + at, &mut chunk[..n]);
            self.write(dst_off + at, &chunk[..n]);
            done += n;
        }
    }
}

/// Whether the `len` bytes at address `a` and the `len` bytes at address `b` share a
/// byte (an empty range shares none; overflow-safe).
#[inline]
fn ranges_overlap(a: usize, b: usize, len: usize) -> bool {
    a.saturating_add(len) > b && b.saturating_add(len) > a
}

/// Full memory barrier (`mb()` in `io/ring.h`).
#[inline]
pub fn mb() {
    fence(Ordering::SeqCst);
}

/// Read barrier (`rmb()`): later reads are not performed before earlier ones.
#[inline]
pub fn rmb() {
    fence(Ordering::Acquire);
}

/// Write barrier (`wmb()`): earlier writes are visible before later ones.
#[inline]
pub fn wmb() {
    fence(Ordering::Release);
}

/// Which side of a [`copy_bytes`] is shared memory (the fallback needs to know
/// which accesses must be volatile).
#[derive(Clone, Copy)]
enum Shared {
    Src,
    Dst,
    Both,
}

/// Copies `len` bytes from `src` to `dst`, reading each source byte once and never
/// forming a reference: `rep movsb` on x86_64 (one opaque instruction the compiler
/// cannot split, repeat or elide; as fast as `memcpy` on CPUs with ERMS/FSRM), or
/// volatile word copies elsewhere and under Miri (which cannot run inline asm).
///
/// # Safety
/// `src..src+len` must be valid for reads, `dst..dst+len` valid for writes, and the
/// two ranges must not overlap.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline]
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize, _shared: Shared) {
    // SAFETY: the caller guarantees both ranges; `rep movsb` with the direction flag
    // clear (guaranteed on entry to an asm block) copies `rcx` bytes forward from
    // `rsi` to `rdi` and touches no other memory, no stack and no flags we rely on.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Stores `byte` into `len` bytes at `dst` with one `rep stosb` (one opaque write
/// of every byte, like the copies).
///
/// # Safety
/// `dst..dst+len` must be valid for writes.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn fill_bytes(dst: *mut u8, len: usize, byte: u8) {
    // SAFETY: the caller guarantees the range; `rep stosb` with the direction flag
    // clear stores `al` into `rcx` bytes forward from `rdi` and touches nothing else.
    unsafe {
        core::arch::asm!(
            "rep stosb",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            in("al") byte,
            options(nostack, preserves_flags),
        );
    }
}

/// [`fill_bytes`] elsewhere: the portable loop below.
///
/// # Safety
/// As for the x86_64 version.
#[cfg(all(not(target_arch = "x86_64"), not(miri)))]
unsafe fn fill_bytes(dst: *mut u8, len: usize, byte: u8) {
    // SAFETY: the caller's guarantees, passed on.
    unsafe { portable_fill_bytes(dst, len, byte) }
}

/// [`copy_bytes`] elsewhere: the portable loops below.
///
/// # Safety
/// As for the x86_64 version.
#[cfg(all(not(target_arch = "x86_64"), not(miri)))]
#[inline]
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize, shared: Shared) {
    // SAFETY: the caller's guarantees, passed on.
    unsafe { portable_copy_bytes(dst, src, len, shared) }
}

/// [`fill_bytes`] under Miri: one plain `write_bytes`. Miri checks a volatile
/// access exactly as it checks a plain one (bounds, provenance, aliasing, data
/// races; it has no notion of a device behind memory), so this is the same check in
/// one step instead of a loop of word stores, which made the frontends' tests too
/// slow to run under Miri. The portable loops are checked by their own tests.
///
/// # Safety
/// As for the x86_64 version.
#[cfg(miri)]
unsafe fn fill_bytes(dst: *mut u8, len: usize, byte: u8) {
    // SAFETY: the caller guarantees `dst..dst+len` is valid for writes.
    unsafe { core::ptr::write_bytes(dst, byte, len) }
}

/// [`copy_bytes`] under Miri: one plain `copy_nonoverlapping` (see [`fill_bytes`]
/// under Miri for why).
///
/// # Safety
/// As for the x86_64 version.
#[cfg(miri)]
#[inline]
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize, _shared: Shared) {
    // SAFETY: the caller guarantees both ranges are valid and do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(src, dst, len) }
}

/// Portable [`fill_bytes`]: aligned 8-byte volatile stores.
///
/// # Safety
/// As for the x86_64 version.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
#[cfg_attr(all(miri, not(test)), allow(dead_code))]
unsafe fn portable_fill_bytes(base: *mut u8, len: usize, byte: u8) {
    let word = u64::from_ne_bytes([byte; 8]);
    let mut i = 0;
    // SAFETY: every access below is inside base..base+len (caller).
    unsafe {
        while i < len && !(base.add(i) as usize).is_multiple_of(8) {
            base.add(i).write_volatile(byte);
            i += 1;
        }
        while i + 8 <= len {
            base.add(i).cast::<u64>().write_volatile(word);
            i += 8;
        }
        while i < len {
            base.add(i).write_volatile(byte);
            i += 1;
        }
    }
}

/// Portable [`copy_bytes`]: volatile accesses on the shared side(s).
///
/// # Safety
/// As for the x86_64 version.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
#[cfg_attr(all(miri, not(test)), allow(dead_code))]
unsafe fn portable_copy_bytes(dst: *mut u8, src: *const u8, len: usize, shared: Shared) {
    // SAFETY: the caller's guarantees are exactly what the helpers need; the bounce
    // buffer is private.
    unsafe {
        match shared {
            Shared::Src => volatile_copy_from(src, dst, len),
            Shared::Dst => volatile_copy_to(dst, src, len),
            Shared::Both => {
                let mut chunk = [0u8; 256];
                let mut done = 0;
                while done < len {
                    let n = core::cmp::min(chunk.len(), len - done);
                    volatile_copy_from(src.add(done), chunk.as_mut_ptr(), n);
                    volatile_copy_to(dst.add(done), chunk.as_ptr(), n);
                    done += n;
                }
            }
        }
    }
}

/// # Safety
/// `src..src+len` (shared) valid for reads, `dst..dst+len` (private) for writes.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
#[cfg_attr(all(miri, not(test)), allow(dead_code))]
unsafe fn volatile_copy_from(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    // SAFETY: all accesses are inside src..src+len and dst..dst+len (caller).
    unsafe {
        while i < len && !(src.add(i) as usize).is_multiple_of(8) {
            *dst.add(i) = src.add(i).read_volatile();
            i += 1;
        }
        while i + 32 <= len {
            let s = src.add(i).cast::<u64>();
            let (a, b) = (s.read_volatile(), s.add(1).read_volatile());
            let (c, e) = (s.add(2).read_volatile(), s.add(3).read_volatile());
            let d = dst.add(i);
            d.cast::<u64>().write_unaligned(a);
            d.add(8).cast::<u64>().write_unaligned(b);
            d.add(16).cast::<u64>().write_unaligned(c);
            d.add(24).cast::<u64>().write_unaligned(e);
            i += 32;
        }
        while i + 8 <= len {
            let w = src.add(i).cast::<u64>().read_volatile();
            dst.add(i).cast::<u64>().write_unaligned(w);
            i += 8;
        }
        while i < len {
            *dst.add(i) = src.add(i).read_volatile();
            i += 1;
        }
    }
}

/// # Safety
/// `dst..dst+len` (shared) valid for writes, `src..src+len` (private) for reads.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
#[cfg_attr(all(miri, not(test)), allow(dead_code))]
unsafe fn volatile_copy_to(dst: *mut u8, src: *const u8, len: usize) {
    let mut i = 0;
    // SAFETY: all accesses are inside dst..dst+len and src..src+len (caller).
    unsafe {
        while i < len && !(dst.add(i) as usize).is_multiple_of(8) {
            dst.add(i).write_volatile(*src.add(i));
            i += 1;
        }
        while i + 32 <= len {
            let s = src.add(i);
            let a = s.cast::<u64>().read_unaligned();
            let b = s.add(8).cast::<u64>().read_unaligned();
            let c = s.add(16).cast::<u64>().read_unaligned();
            let e = s.add(24).cast::<u64>().read_unaligned();
            let d = dst.add(i).cast::<u64>();
            d.write_volatile(a);
            d.add(1).write_volatile(b);
            d.add(2).write_volatile(c);
            d.add(3).write_volatile(e);
            i += 32;
        }
        while i + 8 <= len {
            let w = src.add(i).cast::<u64>().read_unaligned();
            dst.add(i).cast::<u64>().write_volatile(w);
            i += 8;
        }
        while i < len {
            dst.add(i).write_volatile(*src.add(i));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    /// The portable copy and fill loops (used off x86_64; under Miri the plain
    /// copies stand in for them, so they are checked here): every offset and length
    /// around the word and 32-byte boundaries, each direction, against a plain copy.
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    #[test]
    fn portable_loops_match_plain_copies() {
        let src: std::vec::Vec<u8> = (0..200u32).map(|i| (i * 37 + 1) as u8).collect();
        for shared in [Shared::Src, Shared::Dst, Shared::Both] {
            for off in 0..9 {
                for len in [0, 1, 7, 8, 9, 31, 32, 33, 64, 100] {
                    let mut dst = [0u8; 200];
                    // SAFETY: both ranges lie inside the two private arrays.
                    unsafe {
                        portable_copy_bytes(
                            dst.as_mut_ptr().add(off),
                            src.as_ptr().add(9 - off),
                            len,
                            shared,
                        )
                    };
                    let mut want = [0u8; 200];
                    want[off..off + len].copy_from_slice(&src[9 - off..9 - off + len]);
                    assert_eq!(dst, want, "off {off} len {len}");
                    // SAFETY: inside the private array.
                    unsafe { portable_fill_bytes(dst.as_mut_ptr().add(off), len, 0xee) };
                    want[off..off + len].fill(0xee);
                    assert_eq!(dst, want, "fill off {off} len {len}");
                }
            }
        }
    }

    fn region(buf: &mut [u64]) -> SharedMem<'_> {
        // SAFETY: the test buffer outlives the region and is only accessed through it.
        unsafe {
            SharedMem::new(
                NonNull::new(buf.as_mut_ptr().cast()).unwrap(),
                buf.len() * 8,
            )
        }
    }

    #[test]
    fn copies_round_trip_at_every_alignment() {
        let mut backing = vec![0u64; 64];
        let m = region(&mut backing);
        for off in 0..9 {
            for len in [0usize, 1, 7, 8, 9, 31, 100] {
                let data: std::vec::Vec<u8> = (0..len).map(|i| (i * 7 + off) as u8).collect();
                m.write(off, &data);
                let mut back = vec![0u8; len];
                m.read(off, &mut back);
                assert_eq!(back, data);
            }
        }
    }

    #[test]
    fn shared_to_shared_copies_at_every_alignment() {
        let mut a = vec![0u64; 80];
        let mut b = vec![0u64; 80];
        let (ma, mb) = (region(&mut a), region(&mut b));
        for src_off in 0..9 {
            // Each source built once, not once per destination (under Miri, where a
            // loop per byte is costly).
            let sources: std::vec::Vec<std::vec::Vec<u8>> = [0usize, 1, 7, 8, 9, 31, 33, 100, 300]
                .iter()
                .map(|&len| (0..len).map(|i| (i * 13 + src_off) as u8).collect())
                .collect();
            for dst_off in 0..9 {
                for data in &sources {
                    let len = data.len();
                    ma.write(src_off, data);
                    mb.fill(0, mb.len(), 0xEE);
                    mb.copy_from(dst_off, &ma, src_off, len);
                    let mut back = vec![0u8; mb.len()];
                    mb.read(0, &mut back);
                    // The whole region compared at once (a loop per byte over 729
                    // cases was most of this test's cost under Miri).
                    let mut want = vec![0xEEu8; mb.len()];
                    want[dst_off..dst_off + len].copy_from_slice(data);
                    assert!(
                        back == want,
                        "src {src_off} dst {dst_off} len {len}: {back:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn overlapping_copies_act_like_memmove() {
        for (src_off, dst_off) in [(0usize, 8usize), (8, 0), (3, 300), (300, 3), (5, 5)] {
            let mut a = vec![0u64; 128];
            let m = region(&mut a);
            let data: std::vec::Vec<u8> = (0..m.len()).map(|i| (i * 31 + 7) as u8).collect();
            m.write(0, &data);
            let len = 600;
            m.copy_from(dst_off, &m, src_off, len);
            let mut want = data.clone();
            want.copy_within(src_off..src_off + len, dst_off);
            let mut back = vec![0u8; m.len()];
            m.read(0, &mut back);
            assert_eq!(back, want, "src {src_off} dst {dst_off}");
        }
    }

    #[test]
    #[should_panic]
    fn copy_out_of_range_panics() {
        let mut a = vec![0u64; 8];
        let mut b = vec![0u64; 8];
        let (ma, mb) = (region(&mut a), region(&mut b));
        mb.copy_from(60, &ma, 0, 8);
    }

    #[test]
    fn sub_rejects_out_of_range_and_overflow() {
        let mut backing = vec![0u64; 2];
        let m = region(&mut backing);
        assert!(m.sub(0, 16).is_some());
        assert!(m.sub(8, 9).is_none());
        assert!(m.sub(usize::MAX, 2).is_none());
        assert!(!m.contains(1, usize::MAX));
    }

    #[test]
    fn atomics_and_fill() {
        let mut backing = vec![0u64; 4];
        let m = region(&mut backing);
        m.store_u32(4, 0xdead_beef);
        assert_eq!(m.load_u32(4), 0xdead_beef);
        assert_eq!(m.cmpxchg_u16(8, 0, 5), Ok(0));
        assert_eq!(m.cmpxchg_u16(8, 0, 6), Err(5));
        m.store_u16(10, 0b1110);
        assert_eq!(m.fetch_and_u16(10, !0b0100), 0b1110);
        assert_eq!(m.load_u16(10), 0b1010);
        assert_eq!(m.load_u16(8), 5, "the neighbour is untouched");
        assert_eq!(m.fetch_or_u64(16, 0b101), 0);
        assert_eq!(m.fetch_and_u64(16, !1), 0b101);
        assert_eq!(m.load_u64(16), 0b100);
        m.fill(1, 30, 0xAB);
        let mut b = [0u8; 32];
        m.read(0, &mut b);
        assert_eq!(b[0], 0);
        assert!(b[1..31].iter().all(|&x| x == 0xAB));
        assert_eq!(b[31], 0);
    }

    #[test]
    fn fill_touches_exactly_its_range() {
        for off in 0..17 {
            for len in [0usize, 1, 7, 8, 9, 33, 100] {
                let mut backing = vec![0x1111_1111_1111_1111u64; 24];
                let m = region(&mut backing);
                m.fill(off, len, 0xC3);
                let mut b = [0u8; 192];
                m.read(0, &mut b);
                // Compared whole (one `memcmp`; a loop per byte was most of this
                // test's cost under Miri).
                let mut want = [0x11u8; 192];
                want[off..off + len].fill(0xC3);
                assert!(b == want, "off {off} len {len}: {b:?}");
            }
        }
    }

    #[test]
    #[should_panic]
    fn misuse_panics_instead_of_touching_other_memory() {
        let mut backing = vec![0u64; 1];
        let m = region(&mut backing);
        m.load_u32(6);
    }

    /// Tests written for mutants cargo-mutants found missed (docs/mutants.md): each
    /// fails on the mutant named in its comment.
    mod mutants {
        use super::*;
        use crate::testutil::FakePlatform;
        use crate::xen::fake::FakeXen;

        /// Only the placeholders are empty (mutants: `SharedPages::is_empty` ->
        /// `true`, -> `false`, `==` -> `!=`; `SharedMem::is_empty` -> `true`).
        #[test]
        fn only_the_placeholder_pages_are_empty() {
            let p = FakePlatform::new(FakeXen::new(|_, _| 0));
            assert!(SharedPages::empty().is_empty());
            assert!(SharedMem::empty().is_empty());
            let pages = SharedPages::alloc(&p, 2).unwrap();
            assert!(!pages.is_empty());
            assert!(!pages.mem().is_empty());
            assert!(pages.mem().sub(PAGE_SIZE, 0).unwrap().is_empty());
            assert_eq!(pages.len(), 2 * PAGE_SIZE);
            // SAFETY: from this platform, never granted.
            unsafe { pages.free(&p) };
        }

        /// Each atomic gives the documented old value and leaves the documented new
        /// one, touching only its own bytes (mutants: `cmpxchg_u32` -> `Ok(0)`/`Ok(1)`
        /// and the like for the other read-modify-write operations).
        #[test]
        fn atomics_return_the_old_value_and_store_the_new() {
            let mut backing = vec![0u64; 4];
            let m = region(&mut backing);
            m.store_u32(4, 0x1234_5678);
            assert_eq!(m.cmpxchg_u32(4, 7, 9), Err(0x1234_5678));
            assert_eq!(
                m.load_u32(4),
                0x1234_5678,
                "a failed exchange stores nothing"
            );
            assert_eq!(m.cmpxchg_u32(4, 0x1234_5678, 9), Ok(0x1234_5678));
            assert_eq!(m.load_u32(4), 9);
            m.store_u16(2, 0xBEEF);
            assert_eq!(m.cmpxchg_u16(2, 1, 2), Err(0xBEEF));
            assert_eq!(m.cmpxchg_u16(2, 0xBEEF, 0x0F0F), Ok(0xBEEF));
            assert_eq!(m.fetch_and_u16(2, 0x00FF), 0x0F0F);
            assert_eq!(m.load_u16(2), 0x000F);
            m.store_u8(1, 0x42);
            assert_eq!(m.swap_u8(1, 0x24), 0x42);
            assert_eq!(m.load_u8(1), 0x24);
            assert_eq!(m.load_u32(4), 9, "the 16- and 8-bit operations stayed put");
            m.store_u64(8, 0xF0);
            assert_eq!(m.fetch_or_u64(8, 0x0F00), 0xF0);
            assert_eq!(m.fetch_and_u64(8, 0xF00), 0xFF0);
            assert_eq!(m.swap_u64(8, u64::MAX), 0xF00);
            assert_eq!(m.load_u64(8), u64::MAX);
            assert_eq!((m.load_u64(16), m.load_u64(24)), (0, 0));
        }

        /// `copy_from` takes the direct path exactly for ranges that share no byte
        /// (the survivors `||` -> `&&` of its old inline test only sent disjoint
        /// copies down the chunked path; this pins the test itself).
        #[test]
        fn ranges_overlap_only_when_they_share_a_byte() {
            for (a, b, len, want) in [
                (100, 100, 1, true),
                (100, 108, 8, false),
                (100, 107, 8, true),
                (108, 100, 8, false),
                (107, 100, 8, true),
                (100, 100, 0, false),
                (100, 90, 0, false),
                (usize::MAX - 4, 0, 8, false),
                (usize::MAX - 4, usize::MAX - 2, 8, true),
            ] {
                assert_eq!(ranges_overlap(a, b, len), want, "{a:#x} {b:#x} {len}");
            }
        }

        /// A frame the platform maps gives its whole page, the same bytes as the
        /// allocation; an unmapped one gives `None` (mutant: `SharedMem::map_gfn` ->
        /// `None`).
        #[test]
        fn map_gfn_gives_the_page_of_a_mapped_frame() {
            let p = FakePlatform::new(FakeXen::new(|_, _| 0));
            let pages = SharedPages::alloc(&p, 1).unwrap();
            pages.mem().store_u32(8, 0xfeed_beef);
            let gfn = pages.page_gfn(&p, 0).unwrap();
            let m = SharedMem::map_gfn(&p, gfn).unwrap();
            assert_eq!(m.len(), PAGE_SIZE);
            assert_eq!(m.as_ptr(), pages.mem().as_ptr());
            assert_eq!(m.load_u32(8), 0xfeed_beef);
            // A platform that allocated nothing maps no frame.
            let other = FakePlatform::new(FakeXen::new(|_, _| 0));
            assert!(SharedMem::map_gfn(&other, gfn).is_none());
        }
    }
}
