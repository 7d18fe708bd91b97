//! Grant tables, version 1, as Xen enforces them (`common/grant_table.c`).
//!
//! A guest's grant frames are guest pages it registered with
//! `add_to_physmap(XENMAPSPACE_grant_table, idx, gfn)`. dom0 (host backends) maps a
//! grant with [`crate::Hypervisor::grant_map`]:
//! - the entry's flags and domid are read (16-bit each);
//! - it must be `GTF_permit_access` (no sub-page), granted to domain 0, and not
//!   `GTF_readonly` if a writable mapping is asked for (docs/hostile-input.md row 10);
//! - `GTF_reading` (and `GTF_writing` for writable maps) are set with a 16-bit
//!   compare-exchange on the flags, retried a bounded number of times while the guest
//!   races us (Xen gives up after 5 tries), so a guest that revokes first wins cleanly;
//!   the domid is read again afterwards and a changed one undoes the flags (Xen does
//!   the check and the set in one 32-bit compare-exchange over flags and domid);
//! - the frame is read after the flags are set (the guest cannot end access any more)
//!   and must be guest RAM;
//! - the flags are cleared (a 16-bit atomic AND, as Xen's `gnttab_clear_flags`) when
//!   the last (writable) mapping of that ref goes, so the guest's `end_access` fails
//!   while we map the page (row 26).
//!
//! Every access to the flags is 16 bits wide, the size of the guest's own accesses
//! (its 16-bit compare-exchange in `end_access`): mixed-size atomics on one location
//! have no defined meaning in Rust's memory model, so the model does not use them
//! even though x86 would make them work (docs/grant-atomics.md).

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use hypercall::abi::gnttab as abi;
use hypercall::{DomId, Gfn, GrantRef, SharedMem, SharedRegion, PAGE_SIZE};

use super::domain::{lock, Domain};
use crate::mem::{GuestMemory, GuestRegion};

/// `GTF_sub_page` (v2 only; a v1 mapping must not have it).
const GTF_SUB_PAGE: u16 = 1 << 8;
/// Compare-exchange attempts against a racing guest before giving up (Xen: 5).
const CMPXCHG_TRIES: u32 = 5;
/// Size of one v1 entry.
const ENTRY_SIZE: usize = 8;

/// Why a grant operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// No such (live) domain.
    #[error("no domain {}", .0 .0)]
    NoSuchDomain(DomId),
    /// The reference is outside the guest's grant table.
    #[error("grant ref {} is outside the table", .0 .0)]
    BadGref(GrantRef),
    /// The entry does not grant access (type not `permit_access`, or sub-page).
    #[error("grant ref {} does not permit access", .0 .0)]
    NotGranted(GrantRef),
    /// The entry grants access to another domain.
    #[error("grant ref {} is granted to domain {domid}, not 0", .gref .0)]
    WrongDomain {
        /// The reference.
        gref: GrantRef,
        /// The domain named in the entry.
        domid: u16,
    },
    /// A writable mapping of a read-only grant.
    #[error("grant ref {} is read-only", .0 .0)]
    ReadOnly(GrantRef),
    /// The granted frame is not guest RAM.
    #[error("grant ref {} names frame {frame:#x}, not guest RAM", .gref .0)]
    BadFrame {
        /// The reference.
        gref: GrantRef,
        /// The frame named in the entry.
        frame: u32,
    },
    /// The guest kept changing the entry while we tried to pin it.
    #[error("grant ref {} kept changing", .0 .0)]
    Unstable(GrantRef),
    /// Copy arguments out of range (`offset + len > 4096`, short host buffer).
    #[error("grant copy out of range")]
    BadCopyArg,
}

impl GrantError {
    /// The `GNTST_*` status Xen reports for this error.
    pub fn status(&self) -> i16 {
        match self {
            GrantError::NoSuchDomain(_) => abi::GNTST_BAD_DOMAIN,
            GrantError::BadGref(_) => abi::GNTST_BAD_GNTREF,
            GrantError::NotGranted(_)
            | GrantError::WrongDomain { .. }
            | GrantError::ReadOnly(_)
            | GrantError::Unstable(_) => abi::GNTST_GENERAL_ERROR,
            GrantError::BadFrame { .. } => abi::GNTST_BAD_PAGE,
            GrantError::BadCopyArg => abi::GNTST_BAD_COPY_ARG,
        }
    }
}

struct Active {
    gfn: Gfn,
    pins: u32,
    writers: u32,
}

/// A domain's grant-table bookkeeping.
pub(crate) struct GrantState {
    max_frames: u32,
    /// Where each frame is mapped in the guest (index = frame number).
    frames: Vec<Option<Gfn>>,
    active: HashMap<u32, Active, BuildHasherDefault<RefHasher>>,
    /// One bit per ref, set while the ref is in `active`: a grant copy (most
    /// refs it sees are not mapped) tells that from a bit, not a map lookup.
    mapped: Vec<u64>,
}

/// Hashes a grant ref for the `active` map with one multiplication (SipHash showed
/// up in grant-copy profiles). The map only holds refs dom0 maps persistently (a
/// backend's rings: a handful), so a guest choosing colliding refs gains nothing.
#[derive(Default)]
struct RefHasher(u64);

impl std::hash::Hasher for RefHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl GrantState {
    pub(crate) fn new(max_frames: u32) -> Self {
        GrantState {
            max_frames,
            frames: Vec::new(),
            active: HashMap::default(),
            mapped: Vec::new(),
        }
    }

    /// Frames in use (`nr_grant_frames`).
    pub(crate) fn nr_frames(&self) -> u32 {
        self.frames.len() as u32
    }

    /// The most frames this domain may have.
    pub(crate) fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// Where frame `idx` is mapped.
    pub(crate) fn frame_gfn(&self, idx: u32) -> Option<Gfn> {
        self.frames.get(idx as usize).copied().flatten()
    }

    /// Grows the table to `nr` frames (`setup_table`). False if over the maximum.
    pub(crate) fn grow(&mut self, nr: u32) -> bool {
        if nr > self.max_frames {
            return false;
        }
        if nr as usize > self.frames.len() {
            self.frames.resize(nr as usize, None);
        }
        true
    }

    /// The guest maps grant frame `idx` at `gfn` (`add_to_physmap`). The page becomes
    /// the frame: zeroed the first time, or carrying the frame's entries if the frame
    /// moves from another gfn.
    pub(crate) fn map_frame(&mut self, mem: &GuestMemory, idx: u32, gfn: Gfn) -> Result<(), isize> {
        use hypercall::abi::errno::EINVAL;
        if idx >= self.max_frames {
            return Err(-EINVAL);
        }
        let page = mem.place(gfn).map_err(|_| -EINVAL)?;
        if !self.grow(idx + 1) {
            return Err(-EINVAL);
        }
        match self.frames[idx as usize] {
            Some(old) if old == gfn => {}
            Some(old) => {
                let old_page = mem.page(old).map_err(|_| -EINVAL)?;
                page.copy_from(0, &old_page, 0, PAGE_SIZE);
            }
            None => page.fill(0, PAGE_SIZE, 0),
        }
        self.frames[idx as usize] = Some(gfn);
        Ok(())
    }

    /// The entry of `gref`: (page, byte offset).
    fn entry<'m>(
        &self,
        mem: &'m GuestMemory,
        gref: GrantRef,
    ) -> Result<(SharedMem<'m>, usize), GrantError> {
        let per = abi::ENTRIES_PER_FRAME_V1;
        let gfn = self
            .frame_gfn(gref.0 / per)
            .ok_or(GrantError::BadGref(gref))?;
        let page = mem.page(gfn).map_err(|_| GrantError::BadGref(gref))?;
        Ok((page, (gref.0 % per) as usize * ENTRY_SIZE))
    }

    /// `gref`'s entry in `active`, if it has one (the bitmap first).
    fn active(&self, gref: GrantRef) -> Option<&Active> {
        let (word, bit) = ((gref.0 / 64) as usize, gref.0 % 64);
        if self.mapped.get(word).is_some_and(|w| w & (1 << bit) != 0) {
            self.active.get(&gref.0)
        } else {
            None
        }
    }

    /// Keeps `mapped` in step with `active` for `gref`.
    fn set_mapped(&mut self, gref: GrantRef, on: bool) {
        let (word, bit) = ((gref.0 / 64) as usize, gref.0 % 64);
        if self.mapped.len() <= word {
            if !on {
                return;
            }
            self.mapped.resize(word + 1, 0);
        }
        if let Some(w) = self.mapped.get_mut(word) {
            if on {
                *w |= 1 << bit;
            } else {
                *w &= !(1 << bit);
            }
        }
    }

    /// Number of live pins of `gref` (tests, diagnostics).
    pub(crate) fn pins(&self, gref: GrantRef) -> u32 {
        self.active.get(&gref.0).map_or(0, |a| a.pins)
    }
}

/// Pins `gref` of `dom` for dom0: checks and sets the status flags; returns the frame.
fn pin(dom: &Domain, gref: GrantRef, write: bool) -> Result<Gfn, GrantError> {
    let mut gs = lock(&dom.grants);
    let (page, off) = gs.entry(&dom.memory, gref)?;
    set_flags(&page, off, gref, write)?;
    let gfn = match gs.active.get(&gref.0) {
        Some(a) => a.gfn,
        None => {
            // Read the frame once, after the flags are set.
            let frame = page.load_u32(off + 4);
            let gfn = Gfn(frame as u64);
            if !dom.memory.contains_gfn(gfn) {
                // Nobody else pins this ref: take back exactly what we set.
                let set = abi::GTF_READING | if write { abi::GTF_WRITING } else { 0 };
                page.fetch_and_u16(off, !set);
                return Err(GrantError::BadFrame { gref, frame });
            }
            gfn
        }
    };
    let a = gs.active.entry(gref.0).or_insert(Active {
        gfn,
        pins: 0,
        writers: 0,
    });
    a.pins += 1;
    if write {
        a.writers += 1;
    }
    gs.set_mapped(gref, true);
    Ok(gfn)
}

/// Drops one pin of `gref`; clears `GTF_writing` / `GTF_reading` as the last
/// writable / last mapping goes.
fn unpin(dom: &Domain, gref: GrantRef, write: bool) {
    let mut gs = lock(&dom.grants);
    let Some(a) = gs.active.get_mut(&gref.0) else {
        return;
    };
    a.pins = a.pins.saturating_sub(1);
    let mut clear = 0u16;
    if write {
        a.writers = a.writers.saturating_sub(1);
        if a.writers == 0 {
            clear |= abi::GTF_WRITING;
        }
    }
    if a.pins == 0 {
        clear |= abi::GTF_READING | abi::GTF_WRITING;
        gs.active.remove(&gref.0);
        gs.set_mapped(gref, false);
    }
    if clear != 0 {
        if let Ok((page, off)) = gs.entry(&dom.memory, gref) {
            page.fetch_and_u16(off, !clear);
        }
    }
}

/// A grant pinned for the duration of one copy, under its domain's grant lock
/// (so no map entry is needed: nobody else can look at the entry meanwhile).
struct CopyPin<'d> {
    /// The granted page.
    data: SharedMem<'d>,
    /// The grant entry's page and offset, and the flags to clear when done.
    entry: SharedMem<'d>,
    off: usize,
    clear: u16,
}

impl<'d> CopyPin<'d> {
    /// Pins `gref` as [`pin`] does (same checks, same flag protocol), for one copy.
    #[inline(never)]
    fn new(
        gs: &GrantState,
        dom: &'d Domain,
        gref: GrantRef,
        write: bool,
    ) -> Result<Self, GrantError> {
        Self::new_inline(gs, dom, gref, write)
    }

    /// [`CopyPin::new`] inlined into its caller: for the one-grant copies
    /// (`copy_out`, `copy_in`: two per frame in netback), where returning the
    /// pin through memory cost about a third of the pin.
    #[inline(always)]
    fn new_inline(
        gs: &GrantState,
        dom: &'d Domain,
        gref: GrantRef,
        write: bool,
    ) -> Result<Self, GrantError> {
        let (entry, off) = gs.entry(&dom.memory, gref)?;
        set_flags(&entry, off, gref, write)?;
        let set = abi::GTF_READING | if write { abi::GTF_WRITING } else { 0 };
        let (gfn, clear) = match gs.active(gref) {
            // Mapped elsewhere: those mappings keep `reading` (and maybe `writing`).
            Some(a) => (
                a.gfn,
                if write && a.writers == 0 {
                    abi::GTF_WRITING
                } else {
                    0
                },
            ),
            None => {
                // Read the frame once, after the flags are set.
                let frame = entry.load_u32(off + 4);
                (Gfn(frame as u64), set)
            }
        };
        match dom.memory.page(gfn) {
            Ok(data) => Ok(CopyPin {
                data,
                entry,
                off,
                clear,
            }),
            Err(_) => {
                if clear != 0 {
                    entry.fetch_and_u16(off, !clear);
                }
                Err(GrantError::BadFrame {
                    gref,
                    frame: gfn.0 as u32,
                })
            }
        }
    }

    fn unpin(self) {
        if self.clear != 0 {
            self.entry.fetch_and_u16(self.off, !self.clear);
        }
    }
}

/// Checks `gref`'s entry and sets `GTF_reading` (and `GTF_writing`) with a bounded
/// compare-exchange loop (Xen's rules; see the module docs).
#[inline(always)]
fn set_flags(
    page: &SharedMem<'_>,
    off: usize,
    gref: GrantRef,
    write: bool,
) -> Result<(), GrantError> {
    let domid_off = off + abi::ENTRY_V1_DOMID;
    let mut flags = page.load_u16(off);
    let mut tries = 0;
    loop {
        let domid = page.load_u16(domid_off);
        if flags & (abi::GTF_TYPE_MASK | GTF_SUB_PAGE) != abi::GTF_PERMIT_ACCESS {
            return Err(GrantError::NotGranted(gref));
        }
        if domid != DomId::DOM0.0 {
            return Err(GrantError::WrongDomain { gref, domid });
        }
        if write && flags & abi::GTF_READONLY != 0 {
            return Err(GrantError::ReadOnly(gref));
        }
        let new_flags = flags | abi::GTF_READING | if write { abi::GTF_WRITING } else { 0 };
        match page.cmpxchg_u16(off, flags, new_flags) {
            Ok(_) => {
                // The guest may not rewrite a live entry; one that did (domid changed
                // under us) gets what it would have got from Xen's combined check:
                // no mapping, and the flags we set taken back.
                let now = page.load_u16(domid_off);
                if now != DomId::DOM0.0 {
                    page.fetch_and_u16(off, !(new_flags & !flags));
                    return Err(GrantError::WrongDomain { gref, domid: now });
                }
                return Ok(());
            }
            Err(seen) => {
                tries += 1;
                if tries >= CMPXCHG_TRIES {
                    return Err(GrantError::Unstable(gref));
                }
                flags = seen;
            }
        }
    }
}

/// dom0's handle for copying to and from one guest's grants (`GNTTABOP_copy`), for
/// a backend that copies a lot: the domain is looked up once, and each copy pins
/// its grant(s) only for the copy, under the domain's grant lock, without
/// touching the map bookkeeping. Every copy makes exactly the checks of
/// [`crate::Hypervisor::grant_copy`] (it is built on this), including that
/// the domain is not being destroyed.
#[derive(Clone)]
pub struct GrantPeer {
    dom: Arc<Domain>,
}

impl fmt::Debug for GrantPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantPeer")
            .field("granter", &self.dom.id.0)
            .finish()
    }
}

impl GrantPeer {
    pub(crate) fn new(dom: Arc<Domain>) -> Self {
        GrantPeer { dom }
    }

    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.dom.id
    }

    fn live(&self) -> Result<&Domain, GrantError> {
        if self.dom.is_dying() {
            return Err(GrantError::NoSuchDomain(self.dom.id));
        }
        Ok(&self.dom)
    }

    /// Copies `buf.len()` bytes from `gref` at `offset` into `buf` (the grant may be
    /// read-only). `offset + len` must stay inside the page.
    pub fn copy_out(&self, gref: GrantRef, offset: u16, buf: &mut [u8]) -> Result<(), GrantError> {
        check_range(offset, buf.len())?;
        let dom = self.live()?;
        let gs = lock(&dom.grants);
        let pin = CopyPin::new_inline(&gs, dom, gref, false)?;
        pin.data.read(usize::from(offset), buf);
        pin.unpin();
        Ok(())
    }

    /// Copies `data` into `gref` at `offset` (the grant must be writable).
    /// `offset + len` must stay inside the page.
    pub fn copy_in(&self, gref: GrantRef, offset: u16, data: &[u8]) -> Result<(), GrantError> {
        check_range(offset, data.len())?;
        let dom = self.live()?;
        let gs = lock(&dom.grants);
        let pin = CopyPin::new_inline(&gs, dom, gref, true)?;
        pin.data.write(usize::from(offset), data);
        pin.unpin();
        Ok(())
    }

    /// Copies `len` bytes from this guest's `gref` at `offset` to `dst`'s
    /// `dst_gref` at `dst_offset` (grant to grant, e.g. one guest's transmit
    /// buffer straight into another's receive buffer). Both ranges must stay
    /// inside their pages; the destination grant must be writable.
    pub fn copy_to(
        &self,
        gref: GrantRef,
        offset: u16,
        dst: &GrantPeer,
        dst_gref: GrantRef,
        dst_offset: u16,
        len: usize,
    ) -> Result<(), GrantError> {
        check_range(offset, len)?;
        check_range(dst_offset, len)?;
        let (s, d) = (self.live()?, dst.live()?);
        let (so, doff) = (usize::from(offset), usize::from(dst_offset));
        if Arc::ptr_eq(&self.dom, &dst.dom) {
            let gs = lock(&s.grants);
            let sp = CopyPin::new(&gs, s, gref, false)?;
            let dp = match CopyPin::new(&gs, s, dst_gref, true) {
                Ok(p) => p,
                Err(e) => {
                    sp.unpin();
                    return Err(e);
                }
            };
            dp.data.copy_from(doff, &sp.data, so, len);
            dp.unpin();
            sp.unpin();
            return Ok(());
        }
        // Two domains: take their grant locks in a fixed order (domain id, then
        // address: a dying domain and its successor may share an id).
        let key = |x: &Arc<Domain>| (x.id.0, Arc::as_ptr(x) as usize);
        let (sg, dg) = if key(&self.dom) < key(&dst.dom) {
            let a = lock(&s.grants);
            (a, lock(&d.grants))
        } else {
            let b = lock(&d.grants);
            (lock(&s.grants), b)
        };
        let sp = CopyPin::new(&sg, s, gref, false)?;
        let dp = match CopyPin::new(&dg, d, dst_gref, true) {
            Ok(p) => p,
            Err(e) => {
                sp.unpin();
                return Err(e);
            }
        };
        dp.data.copy_from(doff, &sp.data, so, len);
        dp.unpin();
        sp.unpin();
        Ok(())
    }
    /// Writes `head` at `to` in `dst`'s grants, then `len` bytes of this guest's
    /// grant at `from` right after it: one grant-to-grant copy (each grant
    /// pinned once, both grant locks held for the copy) with a few host bytes in
    /// front, e.g. headers a backend kept and checked, followed by the rest of a
    /// frame straight from the sender's page. With `len` 0 the source is not
    /// touched. The error says which side failed, so a backend can tell a bad
    /// sender from a bad receiver.
    pub fn copy_to_after(
        &self,
        from: GrantOffset,
        dst: &GrantPeer,
        to: GrantOffset,
        head: &[u8],
        len: usize,
    ) -> Result<(), CopyFault> {
        let (gref, offset) = (from.gref, from.offset);
        let (dst_gref, dst_offset) = (to.gref, to.offset);
        check_range(offset, len).map_err(CopyFault::Source)?;
        check_range(dst_offset, head.len() + len).map_err(CopyFault::Dest)?;
        let d = dst.live().map_err(CopyFault::Dest)?;
        let (doff, so) = (usize::from(dst_offset), usize::from(offset));
        if len == 0 {
            let dg = lock(&d.grants);
            let dp = CopyPin::new(&dg, d, dst_gref, true).map_err(CopyFault::Dest)?;
            dp.data.write(doff, head);
            dp.unpin();
            return Ok(());
        }
        let s = self.live().map_err(CopyFault::Source)?;
        let copy = |sp: CopyPin, dp: CopyPin| {
            dp.data.write(doff, head);
            dp.data.copy_from(doff + head.len(), &sp.data, so, len);
            dp.unpin();
            sp.unpin();
        };
        if Arc::ptr_eq(&self.dom, &dst.dom) {
            let gs = lock(&s.grants);
            let sp = CopyPin::new(&gs, s, gref, false).map_err(CopyFault::Source)?;
            match CopyPin::new(&gs, s, dst_gref, true) {
                Ok(dp) => copy(sp, dp),
                Err(e) => {
                    sp.unpin();
                    return Err(CopyFault::Dest(e));
                }
            }
            return Ok(());
        }
        // The same lock order as `copy_to`.
        let key = |x: &Arc<Domain>| (x.id.0, Arc::as_ptr(x) as usize);
        let (sg, dg) = if key(&self.dom) < key(&dst.dom) {
            let a = lock(&s.grants);
            (a, lock(&d.grants))
        } else {
            let b = lock(&d.grants);
            (lock(&s.grants), b)
        };
        let sp = CopyPin::new(&sg, s, gref, false).map_err(CopyFault::Source)?;
        match CopyPin::new(&dg, d, dst_gref, true) {
            Ok(dp) => copy(sp, dp),
            Err(e) => {
                sp.unpin();
                return Err(CopyFault::Dest(e));
            }
        }
        Ok(())
    }
}

/// A byte in a granted page: where a grant-to-grant copy
/// ([`GrantPeer::copy_to_after`]) reads or lands. The granter is the peer the
/// copy is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantOffset {
    /// The grant reference.
    pub gref: GrantRef,
    /// Byte offset in the page.
    pub offset: u16,
}

/// Which side of a grant-to-grant copy ([`GrantPeer::copy_to_after`]) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopyFault {
    /// The source grant (or its domain).
    #[error("source: {0}")]
    Source(GrantError),
    /// The destination grant (or its domain).
    #[error("destination: {0}")]
    Dest(GrantError),
}

fn check_range(offset: u16, len: usize) -> Result<(), GrantError> {
    if usize::from(offset) + len > PAGE_SIZE {
        return Err(GrantError::BadCopyArg);
    }
    Ok(())
}

/// A dom0 mapping of one granted page. The page stays accessible (and the guest's
/// `end_access` fails) until this is dropped or [`GrantMapping::unmap`]ped. Multi-page
/// rings are several mappings.
pub struct GrantMapping {
    domain: Arc<Domain>,
    gref: GrantRef,
    gfn: Gfn,
    writable: bool,
    mem: GuestRegion,
}

impl fmt::Debug for GrantMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantMapping")
            .field("granter", &self.domain.id.0)
            .field("gref", &self.gref.0)
            .field("gfn", &format_args!("{:#x}", self.gfn.0))
            .field("writable", &self.writable)
            .finish()
    }
}

impl SharedRegion for GrantMapping {
    fn shared(&self) -> SharedMem<'_> {
        self.mem()
    }
}

impl GrantMapping {
    pub(crate) fn new(
        domain: Arc<Domain>,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<Self, GrantError> {
        let writable = !readonly;
        let gfn = pin(&domain, gref, writable)?;
        let mem = match GuestRegion::page(&domain.memory, gfn) {
            Ok(m) => m,
            Err(_) => {
                unpin(&domain, gref, writable);
                return Err(GrantError::BadFrame {
                    gref,
                    frame: gfn.0 as u32,
                });
            }
        };
        Ok(GrantMapping {
            domain,
            gref,
            gfn,
            writable,
            mem,
        })
    }

    /// The granted 4096-byte page, borrowed from this mapping (it cannot outlive
    /// it); the guest may write it concurrently (copy out once, then validate).
    pub fn mem(&self) -> SharedMem<'_> {
        self.mem.mem()
    }

    /// The granted page with what keeps it mapped, for a holder that keeps it
    /// together with this mapping (a ring over several mappings).
    pub fn region(&self) -> &GuestRegion {
        &self.mem
    }

    /// The granted page with no borrow attached, for a holder that keeps its
    /// mappings next to the regions in one structure (a block backend's
    /// persistent grants and per-request mappings, looked up on every segment),
    /// which a borrow cannot express.
    ///
    /// # Safety
    /// The caller keeps this `GrantMapping` alive (not dropped or unmapped) for
    /// as long as the region, or any copy, sub-region or join of it, is used.
    /// (The memory itself stays mapped while the mapping lives: it holds the
    /// granting domain's memory; using the page after the unmap would also
    /// break the grant protocol, as the guest may reuse it.)
    pub unsafe fn mem_unbound(&self) -> SharedMem<'static> {
        // SAFETY: `self.mem` lives as long as `self`, which the caller keeps
        // alive for every use of the region.
        unsafe { self.mem.mem_unbound() }
    }

    /// The granting domain.
    pub fn granter(&self) -> DomId {
        self.domain.id
    }

    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// The guest frame behind the grant.
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }

    /// Whether the mapping is writable.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Unmaps (same as dropping).
    pub fn unmap(self) {}
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        unpin(&self.domain, self.gref, self.writable);
    }
}

/// One granted side of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantPtr {
    /// The granting domain.
    pub domid: DomId,
    /// The grant reference.
    pub gref: GrantRef,
    /// Byte offset in the page.
    pub offset: u16,
}

/// Source of [`crate::Hypervisor::grant_copy`].
#[derive(Debug)]
pub enum CopySrc<'a> {
    /// A page granted to dom0.
    Grant(GrantPtr),
    /// A host buffer (`len` bytes from its start are copied).
    Host(&'a [u8]),
}

/// Destination of [`crate::Hypervisor::grant_copy`].
#[derive(Debug)]
pub enum CopyDst<'a> {
    /// A page granted (writable) to dom0.
    Grant(GrantPtr),
    /// A host buffer (`len` bytes at its start are written).
    Host(&'a mut [u8]),
}

pub(crate) fn check_grant_range(p: &GrantPtr, len: usize) -> Result<(), GrantError> {
    if p.offset as usize + len > PAGE_SIZE {
        return Err(GrantError::BadCopyArg);
    }
    Ok(())
}

/// Pins of `gref` in `dom` right now (tests and diagnostics).
pub(crate) fn pin_count(dom: &Domain, gref: GrantRef) -> u32 {
    lock(&dom.grants).pins(gref)
}
