//! [`HostPlatform`]: guest pages in host memory, a virtual clock, and a scripted peer.

use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use std::rc::Rc;

use hypercall::abi::{errno, evtchn, hypercall_nr as nr};
use hypercall::{Gfn, Hypercall, Platform, SharedMem, SharedPages, SharedRegion, PAGE_SIZE};

/// First frame number handed out; frames are not host addresses.
const FIRST_GFN: u64 = 0x1_0000;
/// Frame numbers left unused between two allocations (so contiguity is never implied).
const GFN_GAP: u64 = 7;
/// Virtual time one `wait()` takes.
pub const WAIT_NS: u64 = 1_000_000;

/// One allocation: the backing store, where its first page starts, and its frames.
struct Alloc {
    /// Owns the memory; never touched through a reference after creation.
    buf: Vec<u64>,
    /// Byte offset of the first page-aligned byte in `buf`.
    start: usize,
    count: usize,
    gfn: u64,
}

impl Alloc {
    fn page_ptr(&mut self, index: usize) -> Option<NonNull<u8>> {
        if index >= self.count {
            return None;
        }
        // Derived from the Vec's own pointer (keeps provenance for Miri).
        let p = self
            .buf
            .as_mut_ptr()
            .cast::<u8>()
            .wrapping_add(self.start + index * PAGE_SIZE);
        NonNull::new(p)
    }

    fn contains(&self, addr: usize) -> Option<usize> {
        let base = self.buf.as_ptr() as usize + self.start;
        (addr >= base && addr < base + self.count * PAGE_SIZE).then(|| (addr - base) / PAGE_SIZE)
    }
}

/// What a peer does when the driver waits: one turn of the other side.
pub type Peer = Box<dyn FnMut()>;

/// A guest platform over host memory (see the crate docs). Cloning gives another
/// handle on the same platform (a driver under test can own one).
///
/// Hypercalls: `EVTCHNOP_send` (counted, [`HostPlatform::sends`]; fails with the errno
/// set by [`HostPlatform::fail_sends`]), `EVTCHNOP_close` (counted),
/// `EVTCHNOP_alloc_unbound` (ports from 5 up); everything else `-ENOSYS`. Memory is
/// freed when the platform is dropped, never before (a driver that "frees" pages a
/// peer still maps cannot make the harness touch freed memory).
#[derive(Clone)]
pub struct HostPlatform(Rc<Inner>);

struct Inner {
    allocs: RefCell<Vec<Alloc>>,
    now: Cell<u64>,
    next_port: Cell<u32>,
    sends: Cell<u64>,
    closes: Cell<u64>,
    waits: Cell<u64>,
    send_errno: Cell<Option<isize>>,
    peer: RefCell<Option<Peer>>,
}

impl Default for HostPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl HostPlatform {
    /// A platform with no pages and no peer, at virtual time 0.
    pub fn new() -> Self {
        HostPlatform(Rc::new(Inner {
            allocs: RefCell::new(Vec::new()),
            now: Cell::new(0),
            next_port: Cell::new(5),
            sends: Cell::new(0),
            closes: Cell::new(0),
            waits: Cell::new(0),
            send_errno: Cell::new(None),
            peer: RefCell::new(None),
        }))
    }

    /// Sets (or clears) the peer run by every `wait()`. A peer may set another peer.
    /// A peer that holds a handle on this platform makes a cycle: clear it (`None`)
    /// when done, or the platform's memory lives on.
    pub fn set_peer(&self, peer: Option<Peer>) {
        *self.0.peer.borrow_mut() = peer;
    }

    /// `pages` zeroed guest pages, as a region that keeps this platform (and so the
    /// pages) alive: what a peer keeps for as long as it runs.
    ///
    /// # Panics
    /// If `pages` is 0.
    pub fn pages(&self, pages: usize) -> HostRegion {
        // Never freed through the kit (the platform keeps its memory until its
        // last handle goes, which the region holds).
        let mem = self.shared_pages(pages).leak();
        self.region_of(mem).expect("host memory")
    }

    /// `pages` zeroed guest pages from [`Platform::alloc_pages`], owned (what a kit
    /// structure such as `GrantTable::new` takes).
    ///
    /// # Panics
    /// If `pages` is 0.
    pub fn shared_pages(&self, pages: usize) -> SharedPages {
        SharedPages::alloc(self, pages).expect("at least one page")
    }

    /// Guest frame `gfn` (what a backend maps), if it is guest memory.
    pub fn frame(&self, gfn: Gfn) -> Option<HostRegion> {
        let p = self.gfn_to_virt(gfn)?;
        Some(HostRegion {
            host: self.clone(),
            ptr: p,
            len: PAGE_SIZE,
        })
    }

    /// The same memory as `mem` (which must lie in one of this platform's
    /// allocations, e.g. a kit structure's pages), as a region that keeps the
    /// platform alive. `None` if it is not this platform's memory.
    pub fn region_of(&self, mem: SharedMem<'_>) -> Option<HostRegion> {
        let first = mem.as_ptr() as usize;
        let last = first.checked_add(mem.len().max(1) - 1)?;
        let allocs = self.0.allocs.borrow();
        let al = allocs.iter().find(|al| al.contains(first).is_some())?;
        al.contains(last)?;
        Some(HostRegion {
            host: self.clone(),
            ptr: mem.as_non_null(),
            len: mem.len(),
        })
    }

    /// Event-channel notifications the driver sent.
    pub fn sends(&self) -> u64 {
        self.0.sends.get()
    }

    /// Event channels the driver closed.
    pub fn closes(&self) -> u64 {
        self.0.closes.get()
    }

    /// Times the driver waited.
    pub fn waits(&self) -> u64 {
        self.0.waits.get()
    }

    /// Makes every later `EVTCHNOP_send` fail with `-errno` (the peer's end is gone),
    /// or succeed again with `None`.
    pub fn fail_sends(&self, errno: Option<isize>) {
        self.0.send_errno.set(errno);
    }

    /// Moves the virtual clock forward.
    pub fn advance(&self, ns: u64) {
        self.0.now.set(self.0.now.get().saturating_add(ns));
    }
}

/// Host memory of a [`HostPlatform`], owned together with a handle on the
/// platform: the memory lives as long as the platform does (all its handles), so
/// a `HostRegion` is a `'static` owner that peers can keep. Lends the memory out
/// borrowed ([`HostRegion::mem`]), like every owner of shared memory.
#[derive(Clone)]
pub struct HostRegion {
    host: HostPlatform,
    ptr: NonNull<u8>,
    len: usize,
}

impl HostRegion {
    /// The memory, borrowed from this region.
    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: `ptr..ptr+len` lies in one of the platform's allocations (checked
        // where the region was made), which are freed only when the last handle on
        // the platform is dropped; `self.host` is such a handle and lives while
        // `self` is borrowed. The memory is only accessed through `SharedMem`.
        unsafe { SharedMem::new(self.ptr, self.len) }
    }

    /// The platform the memory belongs to.
    pub fn host(&self) -> &HostPlatform {
        &self.host
    }

    /// The frame of the region's first page.
    ///
    /// # Panics
    /// If the region is not page-aligned guest memory (it always is when it came
    /// from [`HostPlatform::pages`] or [`HostPlatform::frame`]).
    pub fn gfn(&self) -> Gfn {
        self.host
            .virt_to_gfn(self.ptr)
            .expect("a host region is guest memory")
    }
}

impl SharedRegion for HostRegion {
    fn shared(&self) -> SharedMem<'_> {
        self.mem()
    }
}

impl core::fmt::Debug for HostRegion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostRegion")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl Hypercall for HostPlatform {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        match (op, args[0] as u32) {
            (nr::EVENT_CHANNEL_OP, evtchn::OP_SEND) => {
                self.0.sends.set(self.0.sends.get() + 1);
                self.0.send_errno.get().map_or(0, |e| -e)
            }
            (nr::EVENT_CHANNEL_OP, evtchn::OP_CLOSE) => {
                self.0.closes.set(self.0.closes.get() + 1);
                0
            }
            (nr::EVENT_CHANNEL_OP, evtchn::OP_ALLOC_UNBOUND) => {
                let p = args[1] as *mut evtchn::AllocUnbound;
                if p.is_null() {
                    return -errno::EFAULT;
                }
                // SAFETY: the caller guarantees `args[1]` points to its argument struct
                // for the duration of the call (the `Hypercall` contract).
                let mut a = unsafe { p.read_unaligned() };
                a.port = self.0.next_port.get();
                self.0.next_port.set(a.port + 1);
                // SAFETY: as above.
                unsafe { p.write_unaligned(a) };
                0
            }
            _ => -errno::ENOSYS,
        }
    }
}

// SAFETY: pages come from page-aligned host allocations that live as long as the
// platform (free_pages keeps them) and are handed out once each; virt_to_gfn and
// gfn_to_virt translate through the same table, so they agree, and map nothing but
// those allocations. Test-harness relaxation of the contract: the allocations go
// when the last handle on the platform is dropped, so a `SharedPages` must not
// outlive every handle (the harness's own regions, `HostRegion`, hold one).
unsafe impl Platform for HostPlatform {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        if count == 0 {
            return None;
        }
        let words = count.checked_add(1)?.checked_mul(PAGE_SIZE / 8)?;
        let buf = vec![0u64; words];
        let base = buf.as_ptr() as usize;
        let start = base.next_multiple_of(PAGE_SIZE) - base;
        let mut allocs = self.0.allocs.borrow_mut();
        let gfn = allocs
            .last()
            .map_or(FIRST_GFN, |a| a.gfn + a.count as u64 + GFN_GAP);
        allocs.push(Alloc {
            buf,
            start,
            count,
            gfn,
        });
        allocs.last_mut()?.page_ptr(0)
    }

    unsafe fn free_pages(&self, _ptr: NonNull<u8>, _count: usize) {
        // Kept until the platform is dropped (see the type's docs).
    }

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        let a = addr.as_ptr() as usize;
        self.0
            .allocs
            .borrow()
            .iter()
            .find_map(|al| al.contains(a).map(|i| Gfn(al.gfn + i as u64)))
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        let mut allocs = self.0.allocs.borrow_mut();
        let al = allocs
            .iter_mut()
            .find(|al| gfn.0 >= al.gfn && gfn.0 < al.gfn + al.count as u64)?;
        let index = usize::try_from(gfn.0 - al.gfn).ok()?;
        al.page_ptr(index)
    }

    fn wait(&self) {
        self.0.waits.set(self.0.waits.get() + 1);
        self.advance(WAIT_NS);
        let peer = self.0.peer.borrow_mut().take();
        if let Some(mut p) = peer {
            p();
            let mut slot = self.0.peer.borrow_mut();
            if slot.is_none() {
                *slot = Some(p);
            }
        }
    }

    fn now_ns(&self) -> u64 {
        self.0.now.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn frames_are_not_addresses_and_translate_both_ways() {
        let h = HostPlatform::new();
        let a = h.pages(2);
        let b = h.pages(1);
        let ga = h.virt_to_gfn(a.mem().as_non_null()).unwrap();
        let gb = h.virt_to_gfn(b.mem().as_non_null()).unwrap();
        assert_eq!(ga, Gfn(FIRST_GFN));
        assert_eq!(
            gb,
            Gfn(FIRST_GFN + 2 + GFN_GAP),
            "a gap between allocations"
        );
        assert_eq!(h.gfn_to_virt(ga), Some(a.mem().as_non_null()));
        let second = h.gfn_to_virt(Gfn(ga.0 + 1)).unwrap();
        assert_eq!(h.virt_to_gfn(second), Some(Gfn(ga.0 + 1)));
        assert_eq!(h.gfn_to_virt(Gfn(ga.0 + 2)), None, "the gap is no memory");
        assert_eq!(a.mem().as_ptr() as usize % PAGE_SIZE, 0);
        // Writes through the frame are seen through the allocation.
        h.frame(gb).unwrap().mem().store_u32(8, 0xfeed);
        assert_eq!(b.mem().load_u32(8), 0xfeed);
    }

    #[test]
    fn wait_runs_the_peer_and_moves_the_clock() {
        let h = Rc::new(HostPlatform::new());
        let turns = Rc::new(Cell::new(0));
        let t = turns.clone();
        h.set_peer(Some(Box::new(move || t.set(t.get() + 1))));
        h.wait();
        h.wait();
        assert_eq!((turns.get(), h.waits(), h.now_ns()), (2, 2, 2 * WAIT_NS));
        h.set_peer(None);
        h.wait();
        assert_eq!(turns.get(), 2);
    }

    #[test]
    fn event_channel_calls() {
        let h = HostPlatform::new();
        let x = hypercall::Xen(&h);
        let p = x.evtchn_alloc_unbound(hypercall::DomId(0)).unwrap();
        let q = x.evtchn_alloc_unbound(hypercall::DomId(0)).unwrap();
        assert_ne!(p, q);
        x.evtchn_send(p).unwrap();
        h.fail_sends(Some(errno::ENOENT));
        assert!(x.evtchn_send(p).is_err());
        x.evtchn_close(q).unwrap();
        assert_eq!((h.sends(), h.closes()), (2, 1));
    }
}
