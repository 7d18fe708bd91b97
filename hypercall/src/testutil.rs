//! In-crate fakes for unit tests (no dependency on shim-hv).
extern crate std;

use crate::platform::{Gfn, Hypercall, Platform, PAGE_SIZE};
use crate::xen::fake::FakeXen;
use core::cell::RefCell;
use core::ptr::NonNull;
use std::vec;
use std::vec::Vec;

/// gfn = (virtual address >> 12) ^ GFN_XOR: deliberately not one-to-one with
/// addresses, so a missing translation shows up.
const GFN_XOR: u64 = 0x5_5000;

/// A fake platform: page allocation from the host heap, a scrambled gfn mapping,
/// hypercalls forwarded to a [`FakeXen`].
pub struct FakePlatform {
    pub xen: FakeXen,
    allocs: RefCell<Vec<(Vec<u64>, usize, usize)>>,
    pub freed: RefCell<Vec<(usize, usize)>>,
    pub fail_alloc: core::cell::Cell<bool>,
}

impl FakePlatform {
    pub fn new(xen: FakeXen) -> Self {
        Self {
            xen,
            allocs: RefCell::new(Vec::new()),
            freed: RefCell::new(Vec::new()),
            fail_alloc: core::cell::Cell::new(false),
        }
    }
}

impl Hypercall for FakePlatform {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.xen.hypercall(op, args) }
    }
}

// SAFETY: pages come from page-aligned heap buffers that live as long as the fake
// (freeing only records the call); the gfn mapping is the inverse of virt_to_gfn and
// covers exactly those buffers. Test-only relaxation of the contract: the buffers go
// when the fake is dropped, so each test drops (or stops using) what it built on
// the fake first.
unsafe impl Platform for FakePlatform {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        if self.fail_alloc.get() || count == 0 {
            return None;
        }
        let mut buf = vec![0u64; (count + 1) * PAGE_SIZE / 8];
        let base = buf.as_mut_ptr() as usize;
        let start = base.next_multiple_of(PAGE_SIZE);
        // `Vec::as_mut_ptr` does not materialise a reference to the buffer, so the
        // pointers handed out stay valid (also under Miri).
        let p = buf.as_mut_ptr().cast::<u8>().wrapping_add(start - base);
        self.allocs.borrow_mut().push((buf, start, count));
        NonNull::new(p)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, count: usize) {
        self.freed.borrow_mut().push((ptr.as_ptr() as usize, count));
    }

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        let a = addr.as_ptr() as usize;
        let ok = self
            .allocs
            .borrow()
            .iter()
            .any(|(_, s, n)| a >= *s && a < s + n * PAGE_SIZE);
        ok.then_some(Gfn((a as u64 >> 12) ^ GFN_XOR))
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        let a = ((gfn.0 ^ GFN_XOR) << 12) as usize;
        let mut allocs = self.allocs.borrow_mut();
        let (b, _, _) = allocs
            .iter_mut()
            .find(|(_, s, n)| a >= *s && a < s + n * PAGE_SIZE)?;
        let base = b.as_mut_ptr() as usize;
        NonNull::new(b.as_mut_ptr().cast::<u8>().wrapping_add(a - base))
    }

    fn wait(&self) {}

    fn now_ns(&self) -> u64 {
        0
    }
}
