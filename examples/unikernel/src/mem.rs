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

    /// Gives back pages from [`PageAlloc::alloc`].
    pub fn free(&mut self, ptr: NonNull<u8>, count: usize) {
        let first = ptr.as_ptr() as usize / 4096;
        for p in first..first.saturating_add(count).min(MAX_PAGES) {
            self.set(p, false);
        }
        self.hint = self.hint.min(first);
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
