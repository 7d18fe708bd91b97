//! Shared pieces of the fuzz targets: a host-memory [`Platform`] whose `wait()` runs
//! the scripted peer (the fuzzer's bytes), and a byte cursor over the fuzz input.
//!
//! Everything here is single-threaded: the code under test and the "peer" take turns
//! (the peer runs inside `Platform::wait`), so a run is a pure function of the input.
#![allow(unsafe_code)]

use core::cell::{Cell, RefCell};
use core::ptr::NonNull;

use hypercall::abi::{evtchn, hypercall_nr as nr};
use hypercall::{Gfn, Hypercall, Platform, SharedMem, PAGE_SIZE};

/// Reads pieces of the fuzz input in order; past the end everything is zero/empty.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }
    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// One byte.
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self
            .data
            .split_first()
            .map_or((0, &[][..]), |(b, r)| (*b, r));
        self.data = rest;
        b
    }
    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}

/// Page-aligned host memory handed out as guest pages (gfns start at 0x10000 and are
/// not host addresses). Never freed before the platform is dropped.
struct Alloc {
    _buf: Vec<u64>,
    start: usize,
    count: usize,
    gfn: u64,
}

/// The peer run inside `wait()`.
pub type Peer = Box<dyn FnMut()>;

/// A guest platform over host memory: event-channel sends and closes succeed (and are
/// counted), `alloc_unbound` hands out ports, everything else is `ENOSYS`. `wait()`
/// advances a virtual clock by 1 ms and runs the peer.
pub struct HostPlatform {
    allocs: RefCell<Vec<Alloc>>,
    now: Cell<u64>,
    next_port: Cell<u32>,
    /// Event-channel sends so far.
    pub sends: Cell<u64>,
    peer: RefCell<Option<Peer>>,
}

impl Default for HostPlatform {
    fn default() -> Self {
        HostPlatform {
            allocs: RefCell::new(Vec::new()),
            now: Cell::new(0),
            next_port: Cell::new(5),
            sends: Cell::new(0),
            peer: RefCell::new(None),
        }
    }
}

impl HostPlatform {
    /// Sets the peer run by `wait()`.
    pub fn set_peer(&self, p: Option<Peer>) {
        *self.peer.borrow_mut() = p;
    }

    /// `pages` zeroed pages as shared memory.
    pub fn pages(&self, pages: usize) -> SharedMem {
        SharedMem::alloc_pages(self, pages).expect("host memory")
    }
}

impl Hypercall for HostPlatform {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        match (op, args[0] as u32) {
            (nr::EVENT_CHANNEL_OP, evtchn::OP_SEND) => {
                self.sends.set(self.sends.get() + 1);
                0
            }
            (nr::EVENT_CHANNEL_OP, evtchn::OP_CLOSE) => 0,
            (nr::EVENT_CHANNEL_OP, evtchn::OP_ALLOC_UNBOUND) => {
                let p = args[1] as *mut evtchn::AllocUnbound;
                // SAFETY: the kit passes a pointer to its own argument struct.
                let mut a = unsafe { p.read() };
                a.port = self.next_port.get();
                self.next_port.set(a.port + 1);
                // SAFETY: as above.
                unsafe { p.write(a) };
                0
            }
            _ => -(hypercall::abi::errno::ENOSYS),
        }
    }
}

// SAFETY: pages come from live, page-aligned host allocations kept until the platform
// is dropped; gfns and addresses are translated through one table.
unsafe impl Platform for HostPlatform {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        if count == 0 {
            return None;
        }
        let mut buf = vec![0u64; (count + 1) * PAGE_SIZE / 8];
        let base = buf.as_mut_ptr() as usize;
        let start = base.next_multiple_of(PAGE_SIZE);
        let p = buf.as_mut_ptr().cast::<u8>().wrapping_add(start - base);
        let mut allocs = self.allocs.borrow_mut();
        let gfn = allocs
            .last()
            .map_or(0x1_0000, |a| a.gfn + a.count as u64 + 7);
        allocs.push(Alloc {
            _buf: buf,
            start,
            count,
            gfn,
        });
        NonNull::new(p)
    }

    unsafe fn free_pages(&self, _ptr: NonNull<u8>, _count: usize) {}

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        let a = addr.as_ptr() as usize;
        self.allocs
            .borrow()
            .iter()
            .find(|al| a >= al.start && a < al.start + al.count * PAGE_SIZE)
            .map(|al| Gfn(al.gfn + ((a - al.start) / PAGE_SIZE) as u64))
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        self.allocs
            .borrow()
            .iter()
            .find(|al| gfn.0 >= al.gfn && gfn.0 < al.gfn + al.count as u64)
            .and_then(|al| {
                NonNull::new((al.start + (gfn.0 - al.gfn) as usize * PAGE_SIZE) as *mut u8)
            })
    }

    fn wait(&self) {
        self.now.set(self.now.get() + 1_000_000);
        let peer = self.peer.borrow_mut().take();
        if let Some(mut p) = peer {
            p();
            let mut slot = self.peer.borrow_mut();
            if slot.is_none() {
                *slot = Some(p);
            }
        }
    }

    fn now_ns(&self) -> u64 {
        self.now.get()
    }
}
