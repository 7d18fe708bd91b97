//! [`HostPlatform`]: guest pages in host memory, a virtual clock, and a scripted peer.

use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use std::rc::Rc;

use hypercall::abi::{errno, evtchn, hvm, hypercall_nr as nr, sched};
use hypercall::{Gfn, Hypercall, Platform, SharedMem, SharedPages, SharedRegion, PAGE_SIZE};

/// First frame number handed out; frames are not host addresses.
const FIRST_GFN: u64 = 0x1_0000;
/// Frame numbers left unused between two allocations (so contiguity is never implied).
const GFN_GAP: u64 = 7;
/// Virtual time one `wait()` takes.
pub const WAIT_NS: u64 = 1_000_000;

/// One allocation: the backing store, where its first page starts, and its frames.
struct Alloc {
    /// Owns the memory, a page more than `count` (for the alignment); never
    /// touched through a reference after creation.
    buf: Vec<u8>,
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

/// Names a peer added with [`HostPlatform::add_peer`] (to remove it again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerId(u64);

/// HVM params the platform answers `HVMOP_get_param` for (`0..HVM_NR_PARAMS`;
/// Xen's `HVM_NR_PARAMS` is 39): unset ones read as 0, as on Xen.
pub const HVM_NR_PARAMS: u32 = 39;

/// A guest platform over host memory (see the crate docs). Cloning gives another
/// handle on the same platform (a driver under test can own one).
///
/// Hypercalls: `EVTCHNOP_send` (counted, [`HostPlatform::sends`] and per port
/// [`HostPlatform::sends_on`]; fails with the errno set by
/// [`HostPlatform::fail_sends`]), `EVTCHNOP_close` (counted),
/// `EVTCHNOP_alloc_unbound` (ports from 5 up), `HVMOP_get_param` (the values set with
/// [`HostPlatform::set_hvm_param`], e.g. where the store page is),
/// `SCHEDOP_shutdown` (recorded, [`HostPlatform::shutdowns`]); everything else
/// `-ENOSYS`.
///
/// Events for the guest: a peer or a case raises one on any port
/// ([`HostPlatform::raise`], real or spurious); a harness delivers what is pending
/// to the driver's upcall ([`HostPlatform::take_pending`]).
///
/// Peers: one primary peer ([`HostPlatform::set_peer`], e.g. a case's watchdog) and
/// any number of added ones ([`HostPlatform::add_peer`], e.g. a xenstore server and a
/// device backend); each `wait()` runs the primary, then the added ones in the order
/// they were added. Memory is
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
    /// Added peers; a peer is taken out (`None`) while it runs.
    peers: RefCell<Vec<(u64, Option<Peer>)>>,
    next_peer: Cell<u64>,
    port_sends: RefCell<Vec<(u32, u64)>>,
    hvm_params: RefCell<Vec<(u32, u64)>>,
    shutdowns: RefCell<Vec<u32>>,
    /// Ports with an event pending for the guest, in the order first raised.
    pending: RefCell<Vec<u32>>,
    raises: Cell<u64>,
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
            peers: RefCell::new(Vec::new()),
            next_peer: Cell::new(0),
            port_sends: RefCell::new(Vec::new()),
            hvm_params: RefCell::new(Vec::new()),
            shutdowns: RefCell::new(Vec::new()),
            pending: RefCell::new(Vec::new()),
            raises: Cell::new(0),
        }))
    }

    /// Sets (or clears) the peer run by every `wait()`. A peer may set another peer.
    /// A peer that holds a handle on this platform makes a cycle: clear it (`None`)
    /// when done, or the platform's memory lives on.
    pub fn set_peer(&self, peer: Option<Peer>) {
        *self.0.peer.borrow_mut() = peer;
    }

    /// Adds a peer, run by every `wait()` after the primary one and the peers added
    /// before it. A peer may add or remove peers (itself included) while it runs.
    /// The same cycle warning as [`HostPlatform::set_peer`] applies:
    /// [`HostPlatform::clear_peers`] ends it.
    pub fn add_peer(&self, peer: Peer) -> PeerId {
        let id = self.0.next_peer.get();
        self.0.next_peer.set(id + 1);
        self.0.peers.borrow_mut().push((id, Some(peer)));
        PeerId(id)
    }

    /// Removes a peer added with [`HostPlatform::add_peer`]; whether it was there.
    pub fn remove_peer(&self, id: PeerId) -> bool {
        let mut peers = self.0.peers.borrow_mut();
        let before = peers.len();
        peers.retain(|(i, _)| *i != id.0);
        peers.len() != before
    }

    /// Removes every peer, the primary and the added ones: what a test does at its end,
    /// so that peers holding handles on the platform let its memory go.
    pub fn clear_peers(&self) {
        self.set_peer(None);
        // Dropped after the borrow ends (a peer's drop may touch the platform).
        let peers = core::mem::take(&mut *self.0.peers.borrow_mut());
        drop(peers);
    }

    /// Sets HVM param `index` (what `HVMOP_get_param` then answers).
    pub fn set_hvm_param(&self, index: u32, value: u64) {
        let mut params = self.0.hvm_params.borrow_mut();
        match params.iter_mut().find(|(i, _)| *i == index) {
            Some(slot) => slot.1 = value,
            None => params.push((index, value)),
        }
    }

    /// HVM param `index` (0 if never set).
    pub fn hvm_param(&self, index: u32) -> u64 {
        self.0
            .hvm_params
            .borrow()
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |p| p.1)
    }

    /// The reasons of every `SCHEDOP_shutdown` the driver issued, in order.
    pub fn shutdowns(&self) -> Vec<u32> {
        self.0.shutdowns.borrow().clone()
    }

    /// Notifications the driver sent on `port`.
    pub fn sends_on(&self, port: hypercall::Port) -> u64 {
        self.0
            .port_sends
            .borrow()
            .iter()
            .find(|(p, _)| *p == port.0)
            .map_or(0, |p| p.1)
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

    /// Raises an event for the guest on `port`, as a peer's `EVTCHNOP_send` makes
    /// it pending on Xen: real (the peer did something) or spurious (nothing to do),
    /// on a port the driver bound or one it never did. As Xen's pending bit, a port
    /// already pending stays pending once. The platform has no interrupts: a
    /// harness hands the pending ports to the driver's upcall with
    /// [`HostPlatform::take_pending`] (the catalogues do it between steps of a case).
    pub fn raise(&self, port: hypercall::Port) {
        self.0.raises.set(self.0.raises.get() + 1);
        let mut pending = self.0.pending.borrow_mut();
        if !pending.contains(&port.0) {
            pending.push(port.0);
        }
    }

    /// The ports with an event pending, in the order first raised, now cleared (what
    /// an upcall finds in the pending bitmap).
    pub fn take_pending(&self) -> Vec<hypercall::Port> {
        core::mem::take(&mut *self.0.pending.borrow_mut())
            .into_iter()
            .map(hypercall::Port)
            .collect()
    }

    /// Events raised so far ([`HostPlatform::raise`], counting repeats).
    pub fn raises(&self) -> u64 {
        self.0.raises.get()
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
                let p = args[1] as *const evtchn::PortArg;
                if p.is_null() {
                    return -errno::EFAULT;
                }
                // SAFETY: the caller guarantees `args[1]` points to its argument struct
                // for the duration of the call (the `Hypercall` contract).
                let port = unsafe { p.read_unaligned() }.port;
                self.0.sends.set(self.0.sends.get() + 1);
                let mut per_port = self.0.port_sends.borrow_mut();
                match per_port.iter_mut().find(|(q, _)| *q == port) {
                    Some(slot) => slot.1 += 1,
                    None => per_port.push((port, 1)),
                }
                self.0.send_errno.get().map_or(0, |e| -e)
            }
            (nr::HVM_OP, hvm::OP_GET_PARAM) => {
                let p = args[1] as *mut hvm::Param;
                if p.is_null() {
                    return -errno::EFAULT;
                }
                // SAFETY: as for `EVTCHNOP_send`.
                let mut a = unsafe { p.read_unaligned() };
                if a.index >= HVM_NR_PARAMS {
                    return -errno::EINVAL;
                }
                a.value = self.hvm_param(a.index);
                // SAFETY: as above.
                unsafe { p.write_unaligned(a) };
                0
            }
            (nr::SCHED_OP, sched::OP_SHUTDOWN) => {
                let p = args[1] as *const sched::Shutdown;
                if p.is_null() {
                    return -errno::EFAULT;
                }
                // SAFETY: as for `EVTCHNOP_send`.
                let reason = unsafe { p.read_unaligned() }.reason;
                self.0.shutdowns.borrow_mut().push(reason);
                0
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
        // A page more than asked for, to align the first; its size in bytes, or
        // refused if too large for an allocation (rather than `vec!`'s panic).
        let pages = count.checked_add(1)?;
        let bytes = core::alloc::Layout::array::<[u8; PAGE_SIZE]>(pages)
            .ok()?
            .size();
        let buf = vec![0u8; bytes];
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
        // Frames go up allocation by allocation: the last allocation starting at
        // or below `gfn` is the only one that may hold it, and `page_ptr` checks
        // that it does (a frame in the gap after it is none).
        let mut allocs = self.0.allocs.borrow_mut();
        let al = allocs.iter_mut().rev().find(|al| gfn.0 >= al.gfn)?;
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
        let ids: Vec<u64> = self.0.peers.borrow().iter().map(|(i, _)| *i).collect();
        for id in ids {
            let taken = self
                .0
                .peers
                .borrow_mut()
                .iter_mut()
                .find(|(i, _)| *i == id)
                .and_then(|(_, p)| p.take());
            let Some(mut p) = taken else { continue };
            p();
            let mut peers = self.0.peers.borrow_mut();
            // Put back unless it was removed while it ran (then it is dropped here).
            if let Some(slot) = peers.iter_mut().find(|(i, _)| *i == id) {
                slot.1 = Some(p);
            } else {
                drop(peers);
                drop(p);
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
        assert_eq!(h.gfn_to_virt(Gfn(ga.0 - 1)), None, "below the first frame");
        assert_eq!(h.gfn_to_virt(Gfn(gb.0 + 1)), None, "past the last frame");
        assert_eq!(a.mem().as_ptr() as usize % PAGE_SIZE, 0);
        // The byte just past an allocation is not guest memory (it may still be
        // in the host buffer, which has a page to spare for the alignment).
        let past = NonNull::new(a.mem().as_ptr().wrapping_add(2 * PAGE_SIZE)).unwrap();
        assert_eq!(h.virt_to_gfn(past), None, "one past the end");
        // A region knows its frame and its platform.
        assert_eq!((a.gfn(), b.gfn()), (ga, gb));
        assert!(
            a.host().frame(gb).is_some(),
            "another handle on the same platform"
        );
        assert_eq!(h.alloc_pages(0), None);
        assert_eq!(h.alloc_pages(usize::MAX), None, "one page more overflows");
        assert_eq!(h.alloc_pages(usize::MAX / PAGE_SIZE), None, "too large");
        let dbg = format!("{a:?}");
        assert!(
            dbg.starts_with("HostRegion {") && dbg.contains("len: 8192"),
            "{dbg}"
        );
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
    fn added_peers_run_in_order_and_may_change_the_list_while_running() {
        let h = HostPlatform::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        h.set_peer(Some(Box::new(move || l.borrow_mut().push("primary"))));
        let l = log.clone();
        let a = h.add_peer(Box::new(move || l.borrow_mut().push("a")));
        let l = log.clone();
        let h2 = h.clone();
        // Removes `a` and adds `c` while it runs (only the first time).
        let once = Cell::new(true);
        h.add_peer(Box::new(move || {
            l.borrow_mut().push("b");
            if once.replace(false) {
                assert!(h2.remove_peer(a));
                assert!(!h2.remove_peer(a), "removed twice");
                let l2 = l.clone();
                h2.add_peer(Box::new(move || l2.borrow_mut().push("c")));
            }
        }));
        h.wait();
        h.wait();
        // `c`, added during the first wait, runs from the next one.
        assert_eq!(*log.borrow(), ["primary", "a", "b", "primary", "b", "c"]);
        h.clear_peers();
        h.wait();
        assert_eq!(log.borrow().len(), 6);
    }

    #[test]
    fn hvm_params_and_shutdowns() {
        let h = HostPlatform::new();
        let x = hypercall::Xen(&h);
        assert_eq!(x.hvm_get_param(hvm::PARAM_STORE_PFN).unwrap(), 0, "unset");
        h.set_hvm_param(hvm::PARAM_STORE_PFN, 0x1234);
        h.set_hvm_param(hvm::PARAM_STORE_PFN, 0x1235);
        assert_eq!(x.hvm_get_param(hvm::PARAM_STORE_PFN).unwrap(), 0x1235);
        assert!(x.hvm_get_param(HVM_NR_PARAMS).is_err());
        x.sched_shutdown(hypercall::xen::ShutdownReason::Reboot)
            .unwrap();
        x.sched_shutdown(hypercall::xen::ShutdownReason::Crash)
            .unwrap();
        assert_eq!(
            h.shutdowns(),
            [sched::SHUTDOWN_REBOOT, sched::SHUTDOWN_CRASH]
        );
    }

    #[test]
    fn raised_events_coalesce_per_port_until_taken() {
        let h = HostPlatform::new();
        let (a, b) = (hypercall::Port(3), hypercall::Port(9));
        h.raise(a);
        h.raise(b);
        h.raise(a);
        assert_eq!(h.raises(), 3);
        assert_eq!(h.take_pending(), [a, b]);
        assert!(h.take_pending().is_empty());
        h.raise(b);
        assert_eq!(h.take_pending(), [b]);
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
        x.evtchn_close(p).unwrap();
        assert_eq!((h.sends(), h.closes()), (2, 2));
        assert_eq!((h.sends_on(p), h.sends_on(q)), (2, 0));
    }
}
