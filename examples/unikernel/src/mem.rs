//! Memory: a page allocator over the RAM ranges of the `hvm_start_info` memory map
//! (or `XENMEM_memory_map`), and the kernel heap carved out of it.
//!
//! Everything below 4 GiB is identity-mapped (`boot.rs`), so a page's address is
//! its guest-physical address and `virt_to_gfn`/`gfn_to_virt` are shifts. Pages
//! above 4 GiB are not used.

use core::ptr::NonNull;

/// Pages the bitmap covers: the identity-mapped 4 GiB.
pub const MAX_PAGES: usize = 1 << 20;
const WORDS: usize = MAX_PAGES / 64;

/// A RAM range, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// First-fit page allocator: one bit per 4 KiB page below 4 GiB, set = free
/// (clear: used, reserved or not RAM; all clear at first, so the bitmap lives in
/// `.bss` and costs nothing in the image).
pub struct PageAlloc {
    avail: [u64; WORDS],
    /// One bit per page touching a RAM range of the memory map.
    ram: [u64; WORDS],
    /// One bit per page handed out as shared memory ([`PageAlloc::alloc_shared`],
    /// the kit's `Platform::alloc_pages`) and not freed since.
    shared: [u64; WORDS],
    /// One past the highest page that is RAM.
    limit: usize,
    /// Where the next search starts.
    hint: usize,
    free: usize,
}

impl PageAlloc {
    /// An allocator with no memory.
    pub const fn empty() -> PageAlloc {
        PageAlloc {
            avail: [0; WORDS],
            ram: [0; WORDS],
            shared: [0; WORDS],
            limit: 0,
            hint: 0,
            free: 0,
        }
    }

    fn is_used(&self, page: usize) -> bool {
        self.avail
            .get(page / 64)
            .is_none_or(|w| w & (1 << (page % 64)) == 0)
    }

    fn set(&mut self, page: usize, used: bool) {
        if let Some(w) = self.avail.get_mut(page / 64) {
            let bit = 1u64 << (page % 64);
            if used && *w & bit != 0 {
                *w &= !bit;
                self.free -= 1;
            } else if !used && *w & bit == 0 {
                *w |= bit;
                self.free += 1;
            }
        }
    }

    /// Makes the whole pages inside `r` available.
    pub fn add(&mut self, r: Range) {
        let touched = (r.start / 4096) as usize..(r.end.div_ceil(4096) as usize).min(MAX_PAGES);
        for p in touched {
            mark(&mut self.ram, p, true);
        }
        let first = r.start.div_ceil(4096) as usize;
        let end = ((r.end / 4096) as usize).min(MAX_PAGES);
        for p in first..end {
            self.set(p, false);
        }
        self.limit = self.limit.max(end);
    }

    /// Takes every page touching `r` out of use (the kernel image, boot data).
    pub fn reserve(&mut self, r: Range) {
        let first = (r.start / 4096) as usize;
        let end = (r.end.div_ceil(4096) as usize).min(MAX_PAGES);
        for p in first..end {
            self.set(p, true);
        }
    }

    /// Pages free now.
    pub fn free_pages(&self) -> usize {
        self.free
    }

    /// `count` contiguous pages, zeroed; `None` when no run is long enough.
    pub fn alloc(&mut self, count: usize) -> Option<NonNull<u8>> {
        if count == 0 || count > self.free {
            return None;
        }
        let mut tried_from_zero = self.hint == 0;
        let mut p = self.hint;
        loop {
            if p + count > self.limit {
                if tried_from_zero {
                    return None;
                }
                tried_from_zero = true;
                p = 0;
                continue;
            }
            match (p..p + count).find(|&q| self.is_used(q)) {
                Some(q) => p = q + 1,
                None => break,
            }
        }
        for q in p..p + count {
            self.set(q, true);
        }
        self.hint = p + count;
        let addr = (p * 4096) as *mut u8;
        // SAFETY: the pages are RAM below 4 GiB (identity-mapped, writable) that
        // were free, so nothing else uses them.
        unsafe { core::ptr::write_bytes(addr, 0, count * 4096) };
        NonNull::new(addr)
    }

    /// [`PageAlloc::alloc`] for memory shared with other domains: the pages are
    /// marked so that [`PageAlloc::shareable`] admits them until they are freed.
    pub fn alloc_shared(&mut self, count: usize) -> Option<NonNull<u8>> {
        let p = self.alloc(count)?;
        let first = p.as_ptr() as usize / 4096;
        for q in first..first + count {
            mark(&mut self.shared, q, true);
        }
        Some(p)
    }

    /// Whether page `page` may be reached as shared memory (`gfn_to_virt`): a
    /// page handed out by [`PageAlloc::alloc_shared`] and not freed, or a page
    /// that is not RAM (the special pages Xen sets up live outside RAM). Never the
    /// kernel image, stacks, heap or boot data: those are RAM, never shared.
    pub fn shareable(&self, page: usize) -> bool {
        let bit = |map: &[u64; WORDS]| {
            map.get(page / 64)
                .is_some_and(|w| w & (1 << (page % 64)) != 0)
        };
        page < MAX_PAGES && (bit(&self.shared) || !bit(&self.ram))
    }

    /// Gives back pages from [`PageAlloc::alloc`] or [`PageAlloc::alloc_shared`].
    pub fn free(&mut self, ptr: NonNull<u8>, count: usize) {
        let first = ptr.as_ptr() as usize / 4096;
        for p in first..first.saturating_add(count).min(MAX_PAGES) {
            self.set(p, false);
            mark(&mut self.shared, p, false);
        }
        self.hint = self.hint.min(first);
    }
}

fn mark(map: &mut [u64; WORDS], page: usize, on: bool) {
    if let Some(w) = map.get_mut(page / 64) {
        let bit = 1u64 << (page % 64);
        if on {
            *w |= bit;
        } else {
            *w &= !bit;
        }
    }
}

/// The kernel heap (smoltcp's buffers, boxed devices, strings).
#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

/// Hands `pages` pages at `base` to the heap.
///
/// # Safety
/// The memory must be unused, mapped and writable, and never used otherwise.
pub unsafe fn init_heap(base: NonNull<u8>, pages: usize) {
    // SAFETY: the caller's contract is the heap's.
    unsafe { HEAP.lock().init(base.as_ptr(), pages * 4096) };
}

/// Heap bytes in use and free.
pub fn heap_usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.free())
}
