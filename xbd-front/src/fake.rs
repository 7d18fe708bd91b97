//! Test-only fakes: a platform over host memory (scrambled gfns) and a blkback that
//! can be told to misbehave. The only `unsafe` of the crate lives here (turning
//! test-owned host memory into `SharedMem`, implementing `Hypercall`).
#![allow(unsafe_code)]
#![allow(missing_docs, clippy::indexing_slicing)]

use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use std::boxed::Box;
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use hypercall::abi::blkif::{self, Request, RequestSegment, Response};
use hypercall::abi::gnttab as gt;
use hypercall::abi::{errno, evtchn, hypercall_nr as nr};
use hypercall::gnttab::GrantTable;
use hypercall::ring::BackRing;
use hypercall::{Gfn, Hypercall, Platform, SharedMem, SharedPages, PAGE_SIZE};
pub use xen_conformance::blk::{disk_pattern, padding_violation};

/// Gfns are handed out from here, with gaps between allocations, so they are
/// neither host addresses nor contiguous across allocations.
const FIRST_GFN: u64 = 0x1_0000;

struct Alloc {
    buf: Vec<u64>,
    start: usize,
    count: usize,
    gfn: u64,
}

/// Host memory the fake platform hands out; shared with the fake backend.
#[derive(Clone, Default)]
pub struct Memory(Rc<RefCell<Vec<Alloc>>>);

impl Memory {
    pub fn page(&self, gfn: Gfn) -> Option<SharedMem<'static>> {
        let mut allocs = self.0.borrow_mut();
        let al = allocs
            .iter_mut()
            .find(|al| gfn.0 >= al.gfn && gfn.0 < al.gfn + al.count as u64)?;
        let a = al.start + (gfn.0 - al.gfn) as usize * PAGE_SIZE;
        let base = al.buf.as_mut_ptr() as usize;
        let p = al.buf.as_mut_ptr().cast::<u8>().wrapping_add(a - base);
        // SAFETY: the page lies inside a live test allocation that is never freed
        // before the test ends and is only accessed through SharedMem. (`'static`
        // stands for "the rest of the test": the fake owns the memory.)
        Some(unsafe { SharedMem::new(NonNull::new(p)?, PAGE_SIZE) })
    }
}

/// `mem` for the rest of the test: the fake platform's memory is never freed
/// before the test ends, so test fixtures may keep regions in their fields.
pub fn for_the_test(mem: SharedMem<'_>) -> SharedMem<'static> {
    // SAFETY: every region in these tests lies in the fake platform's allocations
    // (kept until the test ends) and is only accessed through SharedMem.
    unsafe { SharedMem::new(mem.as_non_null(), mem.len()) }
}

/// `pages` zeroed pages from the fake platform, for the rest of the test.
pub fn alloc(p: &FakePlatform, pages: usize) -> SharedMem<'static> {
    // Never freed: the fake keeps its memory until the test ends.
    SharedPages::alloc(p, pages).unwrap().leak()
}

pub type Hook = Box<dyn FnMut()>;

/// A platform over host memory. `wait()` advances a fake clock by 1 ms and runs the
/// hook (the fake backend), so blocking calls make progress without threads.
pub struct FakePlatform {
    pub mem: Memory,
    pub sends: Cell<u64>,
    /// `EVTCHNOP_send` fails with this errno (E4: the backend's end is gone).
    pub send_fails: Cell<Option<isize>>,
    pub closes: Cell<u64>,
    next_port: Cell<u32>,
    now: Cell<u64>,
    pub waits: Cell<u64>,
    hook: RefCell<Option<Hook>>,
    /// The allocation `virt_to_gfn` found last (tried first: set-up translates
    /// every page of an allocation in a row).
    last_hit: Cell<usize>,
}

impl FakePlatform {
    pub fn new() -> Self {
        FakePlatform {
            mem: Memory::default(),
            sends: Cell::new(0),
            send_fails: Cell::new(None),
            closes: Cell::new(0),
            next_port: Cell::new(5),
            now: Cell::new(0),
            waits: Cell::new(0),
            hook: RefCell::new(None),
            last_hit: Cell::new(0),
        }
    }

    #[allow(dead_code)]
    pub fn set_hook(&self, h: Option<Hook>) {
        *self.hook.borrow_mut() = h;
    }

    pub fn grant_table<const N: usize>(&self) -> GrantTable<N> {
        let frames = (N * 8).div_ceil(PAGE_SIZE);
        GrantTable::new(SharedPages::alloc(self, frames).unwrap()).unwrap()
    }
}

impl Hypercall for FakePlatform {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        match (op, args[0] as u32) {
            (nr::EVENT_CHANNEL_OP, evtchn::OP_SEND) => {
                self.sends.set(self.sends.get() + 1);
                self.send_fails.get().map_or(0, |e| -e)
            }
            (nr::EVENT_CHANNEL_OP, evtchn::OP_CLOSE) => {
                self.closes.set(self.closes.get() + 1);
                0
            }
            (nr::EVENT_CHANNEL_OP, evtchn::OP_ALLOC_UNBOUND) => {
                let p = args[1] as *mut evtchn::AllocUnbound;
                // SAFETY: the caller passes a pointer to its stack argument.
                let mut a = unsafe { p.read() };
                a.port = self.next_port.get();
                self.next_port.set(a.port + 1);
                // SAFETY: as above.
                unsafe { p.write(a) };
                0
            }
            _ => -errno::ENOSYS,
        }
    }
}

// SAFETY: pages come from live, page-aligned test allocations that are never freed
// while the platform lives; gfns and addresses are translated through one table.
unsafe impl Platform for FakePlatform {
    fn alloc_pages(&self, count: usize) -> Option<NonNull<u8>> {
        if count == 0 {
            return None;
        }
        let mut buf = vec![0u64; (count + 1) * PAGE_SIZE / 8];
        let base = buf.as_mut_ptr() as usize;
        let start = base.next_multiple_of(PAGE_SIZE);
        let p = buf.as_mut_ptr().cast::<u8>().wrapping_add(start - base);
        let mut allocs = self.mem.0.borrow_mut();
        let gfn = allocs
            .last()
            .map_or(FIRST_GFN, |a| a.gfn + a.count as u64 + 7);
        allocs.push(Alloc {
            buf,
            start,
            count,
            gfn,
        });
        NonNull::new(p)
    }

    unsafe fn free_pages(&self, _ptr: NonNull<u8>, _count: usize) {}

    fn virt_to_gfn(&self, addr: NonNull<u8>) -> Option<Gfn> {
        let a = addr.as_ptr() as usize;
        let allocs = self.mem.0.borrow();
        let holds = |al: &Alloc| a >= al.start && a < al.start + al.count * PAGE_SIZE;
        // The last allocation found, then newest first (the pages being set up are
        // nearly always the last allocation). Plain indexing rather than iterator
        // adapters: set-up translates every page, and under Miri each call into
        // the adapters costs basic blocks.
        let mut i = self.last_hit.get();
        if !allocs.get(i).is_some_and(holds) {
            i = allocs.len();
            loop {
                i = i.checked_sub(1)?;
                if holds(&allocs[i]) {
                    break;
                }
            }
            self.last_hit.set(i);
        }
        let al = &allocs[i];
        Some(Gfn(al.gfn + ((a - al.start) / PAGE_SIZE) as u64))
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        self.mem.page(gfn).map(|m| m.as_non_null())
    }

    fn wait(&self) {
        self.waits.set(self.waits.get() + 1);
        self.now.set(self.now.get() + 1_000_000);
        let hook = self.hook.borrow_mut().take();
        if let Some(mut h) = hook {
            // The backend is not the code under audit.
            hypercall::audit::paused(&mut h);
            let mut slot = self.hook.borrow_mut();
            if slot.is_none() {
                *slot = Some(h);
            }
        }
    }

    fn now_ns(&self) -> u64 {
        self.now.get()
    }
}

/// What the fake backend does with a response before pushing it.
pub type Mutator = Box<dyn FnMut(&Request, Response) -> Vec<Response>>;

/// A blkback over an in-memory disk, with knobs for hostility.
pub struct FakeBackend {
    pub ring: BackRing<Request, Response, SharedMem<'static>>,
    pub ring_mem: SharedMem<'static>,
    frames: SharedMem<'static>,
    mem: Memory,
    pub disk: Vec<u8>,
    /// Never answer (row 14).
    pub mute: bool,
    /// Keep every grant mapped after answering (rows 14, 26; XSA-396).
    pub hold_grants: bool,
    /// Answer OKAY to reads without writing the data (B9).
    pub skip_read_data: bool,
    /// Rewrite responses (bad id, duplicates, wrong op, unknown status...).
    pub mutate: Option<Mutator>,
    /// Requests kept back (muted), to answer later.
    pub held: VecDeque<Request>,
    /// Grants currently "mapped" by us: gref -> pins.
    pub mapped: Pins,
    /// Problems seen: writable data grant for a write, non-zero bytes in pages
    /// beyond the data (XSA-403), bad segments.
    pub violations: Vec<&'static str>,
    /// Every request seen (copies).
    pub seen: Vec<Request>,
    /// Requests (and indirect pages) whose padding was audited (R7).
    pub padding_checked: u64,
    /// Data pages scanned for stale bytes beyond the request data.
    pub scanned_pages: u64,
    /// Every data page (by frame) as this backend last saw it: what it was given
    /// (writes) or left there (reads).
    pub known: Known,
    /// The page being scanned (reused from page to page).
    scratch: Vec<u8>,
    allow_writable_write_grants: bool,
    /// Map every grant writable, indirect pages too, as Linux blkback does for the
    /// grants it keeps persistently (`xen_blkbk_map`: read-only only without
    /// persistent grants).
    pub linux_persistent_maps: bool,
}

impl FakeBackend {
    pub fn new<const N: usize>(
        p: &FakePlatform,
        ring_mem: SharedMem<'static>,
        table: &GrantTable<N>,
        disk_bytes: usize,
    ) -> Self {
        FakeBackend {
            ring: BackRing::attach(ring_mem).unwrap(),
            ring_mem,
            frames: for_the_test(table.frames().expect("set up")),
            mem: p.mem.clone(),
            disk: initial_disk(disk_bytes),
            mute: false,
            hold_grants: false,
            skip_read_data: false,
            mutate: None,
            held: VecDeque::new(),
            mapped: Pins::default(),
            violations: Vec::new(),
            seen: Vec::new(),
            padding_checked: 0,
            scanned_pages: 0,
            known: Known::default(),
            scratch: vec![0u8; PAGE_SIZE],
            allow_writable_write_grants: false,
            linux_persistent_maps: false,
        }
    }

    fn entry(&self, gref: u32) -> Option<(u16, u16, u32)> {
        let off = gref as usize * 8;
        if !self.frames.contains(off, 8) {
            return None;
        }
        let e: gt::GrantEntryV1 = self.frames.read_obj(off);
        Some((e.flags, e.domid, e.frame))
    }

    /// Maps a grant like Xen would (checks type, domain, read-only), pinning it.
    pub fn map(&mut self, gref: u32, readonly: bool) -> Option<SharedMem<'static>> {
        let (flags, domid, frame) = self.entry(gref)?;
        if flags & gt::GTF_TYPE_MASK != gt::GTF_PERMIT_ACCESS || domid != 0 {
            self.violations.push("map of an ungranted ref");
            return None;
        }
        if !readonly && flags & gt::GTF_READONLY != 0 {
            self.violations.push("writable map of a read-only grant");
            return None;
        }
        let bits = gt::GTF_READING | if readonly { 0 } else { gt::GTF_WRITING };
        let off = gref as usize * 8;
        let f = self.frames.load_u16(off);
        self.frames.store_u16(off, f | bits);
        self.mapped.pin(gref);
        self.mem.page(Gfn(u64::from(frame)))
    }

    pub fn unmap(&mut self, gref: u32) {
        if self.hold_grants {
            return;
        }
        self.force_unmap(gref);
    }

    pub fn force_unmap(&mut self, gref: u32) {
        if let Some(n) = self.mapped.unpin(gref) {
            if n == 0 {
                let off = gref as usize * 8;
                let f = self.frames.load_u16(off);
                self.frames
                    .store_u16(off, f & !(gt::GTF_READING | gt::GTF_WRITING));
            }
        }
    }

    /// Releases everything held (backend disconnects).
    pub fn unmap_all(&mut self) {
        for r in self.mapped.refs() {
            while self.mapped.pins(r) > 0 {
                self.force_unmap(r);
            }
        }
    }

    /// Consumes and answers every request; returns how many responses were pushed.
    /// Runs unrecorded by the read audit (it is not the code under test).
    pub fn step(&mut self) -> usize {
        hypercall::audit::paused(|| self.step_inner())
    }

    fn step_inner(&mut self) -> usize {
        let mut pushed = 0;
        // R7: the ring header's `pvt`/`__pad` stay zero.
        let mut pad = [0u8; hypercall::abi::ring::PAD_LEN];
        self.ring_mem.read(hypercall::abi::ring::PVT, &mut pad);
        if pad.iter().any(|&b| b != 0) {
            self.violations.push("non-zero ring header padding");
        }
        while let Ok(Some(req)) = self.ring.poll_request() {
            self.seen.push(req);
            self.padding_checked += 1;
            if let Some(v) = padding_violation(&req) {
                self.violations.push(v);
            }
            if self.mute {
                self.held.push_back(req);
                continue;
            }
            pushed += self.answer(req);
        }
        let _ = self.ring.push_responses_and_check_notify();
        let _ = self.ring.final_check_for_requests();
        pushed
    }

    /// Answers the held requests now.
    pub fn release_held(&mut self) -> usize {
        hypercall::audit::paused(|| self.release_held_inner())
    }

    fn release_held_inner(&mut self) -> usize {
        let mut n = 0;
        while let Some(r) = self.held.pop_front() {
            n += self.answer(r);
        }
        let _ = self.ring.push_responses_and_check_notify();
        n
    }

    fn answer(&mut self, req: Request) -> usize {
        let (status, op) = self.execute(&req);
        let rsp = Response {
            id: req.id,
            operation: op,
            status,
            ..Default::default()
        };
        let rsps = match self.mutate.as_mut() {
            Some(m) => m(&req, rsp),
            None => vec![rsp],
        };
        let mut n = 0;
        for r in rsps {
            if self.ring.push_response(&r).is_ok() {
                n += 1;
            } else {
                // More responses than requests: write the slot and bump rsp_prod by
                // hand, as a hostile backend would.
                let size = self.ring.size();
                let prod = self.ring_mem.load_u32(8);
                let off = 64 + (prod & (size - 1)) as usize * 112;
                self.ring_mem.write_obj(off, &r);
                self.ring_mem.store_u32(8, prod.wrapping_add(1));
                n += 1;
            }
        }
        n
    }

    fn segments(&mut self, req: &Request) -> Option<(u8, Vec<RequestSegment>, Option<u32>)> {
        match req.operation {
            blkif::OP_READ | blkif::OP_WRITE => {
                let n = req.nr_segments as usize;
                if n == 0 || n > blkif::MAX_SEGMENTS_PER_REQUEST {
                    return None;
                }
                Some((req.operation, req.seg[..n].to_vec(), None))
            }
            blkif::OP_INDIRECT => {
                let ind = req.as_indirect();
                let n = ind.nr_segments as usize;
                if n == 0 || n > blkif::SEGS_PER_INDIRECT_FRAME {
                    return None;
                }
                let g = ind.indirect_grefs[0];
                let page = self.map(g, !self.linux_persistent_maps)?;
                let segs: Vec<RequestSegment> = (0..n)
                    .map(|i| page.read_obj::<RequestSegment>(i * 8))
                    .collect();
                // R7: descriptor padding zero, and nothing after the last one.
                let mut whole = vec![0u8; PAGE_SIZE];
                page.read(0, &mut whole);
                self.padding_checked += 1;
                if segs.iter().any(|s| s._pad != [0; 2]) || !is_zero(&whole[n * 8..]) {
                    self.violations
                        .push("non-zero padding or stale descriptors in an indirect page");
                }
                Some((ind.indirect_op, segs, Some(g)))
            }
            _ => None,
        }
    }

    fn execute(&mut self, req: &Request) -> (i16, u8) {
        match req.operation {
            blkif::OP_FLUSH_DISKCACHE | blkif::OP_WRITE_BARRIER => {
                return (blkif::RSP_OKAY, req.operation)
            }
            blkif::OP_DISCARD => {
                let d = req.as_discard();
                let start = d.sector_number as usize * 512;
                let end = start + d.nr_sectors as usize * 512;
                if end > self.disk.len() {
                    return (blkif::RSP_ERROR, req.operation);
                }
                self.disk[start..end].fill(0);
                return (blkif::RSP_OKAY, req.operation);
            }
            _ => {}
        }
        let Some((op, segs, ind)) = self.segments(req) else {
            return (blkif::RSP_ERROR, req.operation);
        };
        let write = op == blkif::OP_WRITE;
        let mut pos = req.sector_number as usize * 512;
        let mut status = blkif::RSP_OKAY;
        for s in &segs {
            if s.first_sect > s.last_sect || s.last_sect > 7 {
                self.violations.push("bad segment");
                status = blkif::RSP_ERROR;
                break;
            }
            let Some((flags, _, frame)) = self.entry(s.gref) else {
                status = blkif::RSP_ERROR;
                break;
            };
            if write && flags & gt::GTF_READONLY == 0 && !self.persistent_ok(s.gref) {
                self.violations.push("write data granted writable");
            }
            let Some(page) = self.map(s.gref, write && !self.linux_persistent_maps) else {
                status = blkif::RSP_ERROR;
                break;
            };
            let a = s.first_sect as usize * 512;
            let b = (s.last_sect as usize + 1) * 512;
            // XSA-403: nothing but this request's data (or zeros) in the page. (Read
            // into one buffer kept for the purpose: no allocation per page.)
            let mut whole = core::mem::take(&mut self.scratch);
            page.read(0, &mut whole);
            self.scanned_pages += 1;
            if write && !(is_zero(&whole[..a]) && is_zero(&whole[b..])) {
                self.violations
                    .push("stale bytes outside the data in a granted page");
            }
            // Row 16 without per-request zeroing: a page granted for a read holds
            // exactly what this backend last left in it (data it was given or wrote),
            // or zeros if it never saw the page: never another device's data, an
            // earlier connection's, or anything else it was not given.
            if !write {
                let expect = self.known.get(frame).map_or(&[0u8; PAGE_SIZE][..], |k| k);
                if whole[..] != *expect {
                    self.violations
                        .push("read page holds data this backend was not given");
                }
            }
            if pos + (b - a) > self.disk.len() {
                status = blkif::RSP_ERROR;
                self.scratch = whole;
                self.unmap(s.gref);
                break;
            }
            if write {
                page.read(a, &mut self.disk[pos..pos + b - a]);
            } else if !self.skip_read_data {
                page.write(a, &self.disk[pos..pos + b - a]);
                whole[a..b].copy_from_slice(&self.disk[pos..pos + b - a]);
            }
            self.known.set(frame, &whole);
            self.scratch = whole;
            pos += b - a;
            self.unmap(s.gref);
        }
        if let Some(g) = ind {
            self.unmap(g);
        }
        (status, op)
    }

    /// Persistent grants are writable by design (used for reads and writes).
    fn persistent_ok(&self, _gref: u32) -> bool {
        self.allow_writable_write_grants
    }
}

impl FakeBackend {
    /// Allows writable grants for write data (persistent grants).
    pub fn allow_persistent(&mut self) {
        self.allow_writable_write_grants = true;
    }
}

/// The pins a fake backend holds on grant refs (its mappings), by ref: a table
/// indexed by the ref, so pinning and unpinning are one index (the backend maps
/// every page it is granted: cheap under Miri).
#[derive(Clone, Debug, Default)]
pub struct Pins {
    by_ref: Vec<u32>,
    /// Refs with at least one pin.
    live: usize,
}

impl Pins {
    /// Whether no ref is mapped.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn pin(&mut self, gref: u32) {
        let i = gref as usize;
        if self.by_ref.len() <= i {
            self.by_ref.resize(i + 1, 0);
        }
        if self.by_ref[i] == 0 {
            self.live += 1;
        }
        self.by_ref[i] += 1;
    }

    /// The pins on `gref`.
    pub fn pins(&self, gref: u32) -> u32 {
        self.by_ref.get(gref as usize).copied().unwrap_or(0)
    }

    /// Takes one pin off `gref`; the pins left, `None` if it had none.
    fn unpin(&mut self, gref: u32) -> Option<u32> {
        let n = self.by_ref.get_mut(gref as usize).filter(|n| **n > 0)?;
        *n -= 1;
        if *n == 0 {
            self.live -= 1;
        }
        Some(*n)
    }

    /// The refs mapped now.
    fn refs(&self) -> Vec<u32> {
        (0..self.by_ref.len() as u32)
            .filter(|&r| self.by_ref[r as usize] > 0)
            .collect()
    }
}

/// The data pages a fake backend has seen, by frame: a table indexed by the
/// frame's offset from the fake platform's first gfn (the frames a backend maps
/// are the platform's), so a lookup is one index, not a search (the backend
/// looks up every page it is granted: cheap under Miri).
#[derive(Clone, Debug, Default)]
pub struct Known(Vec<Option<Vec<u8>>>);

impl Known {
    fn index(frame: u32) -> Option<usize> {
        usize::try_from(u64::from(frame).checked_sub(FIRST_GFN)?).ok()
    }

    /// The page as last seen, if it was.
    pub fn get(&self, frame: u32) -> Option<&Vec<u8>> {
        self.0.get(Self::index(frame)?)?.as_ref()
    }

    /// Records `page` as frame's content (updated in place when already known).
    pub fn set(&mut self, frame: u32, page: &[u8]) {
        let i = Self::index(frame).expect("a frame of the fake platform");
        if self.0.len() <= i {
            self.0.resize_with(i + 1, || None);
        }
        match &mut self.0[i] {
            Some(k) => k.copy_from_slice(page),
            slot @ None => *slot = Some(page.to_vec()),
        }
    }

    /// Every page seen, by frame.
    pub fn values(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.0.iter().flatten()
    }
}

/// A fake disk's first content, [`disk_pattern`] (whose first `bytes` bytes are the
/// same whatever its length), copied from one computed once: the pattern costs
/// Miri tens of thousands of basic blocks a MiB, and every rig sets up a disk.
pub fn initial_disk(bytes: usize) -> Vec<u8> {
    static DISK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let disk = DISK.get_or_init(|| disk_pattern(1 << 20));
    match disk.get(..bytes) {
        Some(d) => d.to_vec(),
        None => disk_pattern(bytes),
    }
}

/// Whether every byte is zero, compared a page at a time (one `memcmp` each, cheap
/// under Miri, unlike a loop per byte).
pub fn is_zero(bytes: &[u8]) -> bool {
    const ZERO: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    bytes.chunks(PAGE_SIZE).all(|c| c == &ZERO[..c.len()])
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a check of test data without unsafe code, run natively"
)]
fn disk_pattern_is_the_formula() {
    let len = 3 * PAGE_SIZE + 100;
    let want: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    assert!(disk_pattern(len) == want);
    for n in [0, 512, len, 1 << 20, (1 << 20) + 4096] {
        assert!(initial_disk(n) == disk_pattern(n), "{n}");
    }
    assert!(is_zero(&[0; 5000]) && !is_zero(&[0, 0, 1]) && is_zero(&[]));
}
