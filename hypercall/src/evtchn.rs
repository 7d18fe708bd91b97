//! Guest side of 2-level event channels, over the `shared_info` page.
//!
//! ```text
//!  vcpu_info[v].evtchn_upcall_pending (u8)      "something is pending"
//!  vcpu_info[v].evtchn_pending_sel    (u64)     bit w: word w may have events
//!  shared_info.evtchn_pending[64]     (u64)     bit b of word w: port 64*w + b
//!  shared_info.evtchn_mask[64]        (u64)     masked ports are not delivered
//! ```
//!
//! The OS's upcall (callback vector / interrupt) calls [`EventChannels::scan`], which
//! takes the selector, walks `pending & !mask`, clears each pending bit atomically
//! *before* calling the handler for the port, and stops after `budget` ports
//! (docs/hostile-input.md row 24: an event storm costs bounded work per upcall; unfinished words
//! are put back in the selector and [`Scan::more`] is set, so the OS can continue
//! later, e.g. from its idle loop). Ports nobody bound ([`EventChannels::bind`] or one
//! of the binding wrappers) are cleared and counted, never handed to the handler
//! (row 25).
//!
//! Late EOI (docs/hostile-input.md E1: a peer that sends events with nothing behind
//! them, as XSA-391 describes): a port bound with [`EventChannels::bind_lateeoi`] is
//! masked by the scan before it is handed over, and stays masked until the OS,
//! having looked at the device, calls [`EventChannels::eoi`] saying whether the
//! event found work. Work resets the port's count of consecutive spurious events
//! and unmasks it; the first spurious event in a row is allowed (an event can race
//! the poll that already took its work) and unmasks it too; each further one
//! unmasks it only after a delay that doubles from 1 ms up to 1 s
//! ([`EventChannels::eoi_due`] unmasks the ports whose delay is over and says when
//! the next one is). So a storm costs a few events a second, and a device that
//! does work is served at once.
//!
//! Only the `vcpu_info` inside `shared_info` (vCPUs `0..32`) is supported, not
//! `VCPUOP_register_vcpu_info` placements.
//!
//! Thread safety: everything takes `&self` and uses atomics. `scan` is not
//! re-entrant: a second concurrent `scan` returns at once with nothing done (the
//! running one reports `more` if events arrived meanwhile).
//!
//! Closing while events arrive (docs/hostile-input.md E2): after [`EventChannels::close`] (or
//! [`EventChannels::unbind`]) returned, a scan on another CPU may still be handing
//! the port to its handler (it checked the binding just before), and
//! [`EventChannels::is_handling`] says so; once that returns `false` for the port,
//! no handler runs for it any more. (A scan announces the port it is about to
//! hand over before it checks the binding, and `close` unbinds before it returns:
//! with sequentially consistent atomics on both sides, either the scan sees the port
//! unbound or `is_handling` sees the announcement.) The caller waits for that with
//! its own `Platform::wait` and timeout; `close` does not wait, so a handler may
//! close its own port.

use crate::abi::{evtchn as abi, memory, shared_info as si};
use crate::platform::{DomId, Hypercall, Platform, Port, PAGE_SIZE};
use crate::shmem::{mb, SharedMem, SharedPages};
use crate::xen::{Xen, XenError};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Event-channel failures.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Port number outside the 2-level range `0..4096`.
    PortOutOfRange(Port),
    /// vCPU number outside `0..32` (the `vcpu_info` slots in `shared_info`).
    BadVcpu(u32),
    /// The shared-info region is smaller than a page.
    BadSharedInfo(usize),
    /// The platform could not allocate the shared-info page.
    NoMemory,
    /// The platform could not translate the page to a gfn.
    NoGfn,
    /// [`EventChannels::bind_lateeoi`]: every late-EOI slot is taken
    /// ([`LATE_EOI_PORTS`]).
    NoLateEoiSlot(Port),
    /// [`EventChannels::eoi`] on a port not bound with
    /// [`EventChannels::bind_lateeoi`].
    NotLateEoi(Port),
    /// A hypercall failed.
    Xen(XenError),
}

impl From<XenError> for Error {
    fn from(e: XenError) -> Self {
        Error::Xen(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PortOutOfRange(p) => write!(f, "event channel port {} out of range", p.0),
            Error::BadVcpu(v) => write!(f, "vcpu {v} has no vcpu_info in shared_info"),
            Error::BadSharedInfo(l) => write!(f, "shared_info region of {l} bytes too small"),
            Error::NoMemory => write!(f, "out of memory for shared_info"),
            Error::NoGfn => write!(f, "shared_info page has no gfn"),
            Error::NoLateEoiSlot(p) => {
                write!(f, "no late-EOI slot left for event channel port {}", p.0)
            }
            Error::NotLateEoi(p) => {
                write!(f, "event channel port {} is not bound for late EOI", p.0)
            }
            Error::Xen(e) => write!(f, "{e}"),
        }
    }
}

/// What one [`EventChannels::scan`] did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Ports handed to the handler.
    pub handled: usize,
    /// Pending ports nobody bound: cleared and dropped.
    pub ignored: usize,
    /// Events remain (budget exhausted, or new ones arrived): scan again later.
    pub more: bool,
}

/// A reasonable per-upcall budget: enough for every ring of a few devices, small
/// enough to bound an event storm.
pub const DEFAULT_BUDGET: usize = 64;

/// How many ports one [`EventChannels`] can bind for late EOI
/// ([`EventChannels::bind_lateeoi`]): a few devices' rings.
pub const LATE_EOI_PORTS: usize = 16;

/// The delay before a port is unmasked after its second spurious event in a row
/// (docs/hostile-input.md E1); it doubles with each further one...
pub const LATE_EOI_FIRST_DELAY_NS: u64 = 1_000_000;

/// ...up to this (1 s): a storm is served about once a second.
pub const LATE_EOI_MAX_DELAY_NS: u64 = 1_000_000_000;

/// What [`EventChannels::eoi`] did with the port.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Eoi {
    /// Unmasked now: its next event is delivered at once.
    Unmasked,
    /// Left masked until this time (`Platform::now_ns`); [`EventChannels::eoi_due`]
    /// unmasks it then. Events meanwhile stay pending and are delivered after.
    Deferred {
        /// When the port may be unmasked.
        until_ns: u64,
    },
}

/// One port bound for late EOI (all zero: a free slot).
#[derive(Default)]
struct LateEoi {
    /// The port plus one; 0: the slot is free.
    port: AtomicU32,
    /// Spurious events in a row.
    spurious: AtomicU32,
    /// When a deferred unmask is due; 0: none.
    due: AtomicU64,
}

/// The delay after `spurious` spurious events in a row (`spurious >= 2`):
/// 1 ms, 2 ms, 4 ms, ... up to [`LATE_EOI_MAX_DELAY_NS`]. (The first spurious
/// event in a row has no delay.) shim-hv's backends back off by the same rule
/// on the host side.
pub fn late_eoi_delay(spurious: u32) -> u64 {
    let doublings = spurious.saturating_sub(2).min(20);
    (LATE_EOI_FIRST_DELAY_NS << doublings).min(LATE_EOI_MAX_DELAY_NS)
}

const WORDS: usize = 64;
// `evtchn_upcall_pending` starts the vcpu_info: its offset is the vcpu_info's.
const _: () = assert!(si::VCPU_UPCALL_PENDING == 0);
const NR_PORTS: u32 = abi::NR_PORTS_2L;

/// 2-level event channels of one domain, seen from one vCPU.
pub struct EventChannels<H> {
    xen: Xen<H>,
    shared: SharedPages,
    vcpu: u32,
    /// Ports we expect events on (private memory, not shared).
    bound: [AtomicU64; WORDS],
    cursor: AtomicUsize,
    scanning: AtomicBool,
    /// The port whose handler is running (or about to), plus one; 0: none.
    active: AtomicU32,
    ignored_total: AtomicU64,
    /// Ports bound for late EOI (private memory), and the same as a bitmap for
    /// the scan.
    late: [LateEoi; LATE_EOI_PORTS],
    late_map: [AtomicU64; WORDS],
    spurious_total: AtomicU64,
}

impl<H> fmt::Debug for EventChannels<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannels")
            .field("vcpu", &self.vcpu)
            .field("ignored_total", &self.ignored_total.load(Ordering::Relaxed))
            .field(
                "spurious_total",
                &self.spurious_total.load(Ordering::Relaxed),
            )
            .finish()
    }
}

fn split(port: Port) -> Result<(usize, u64), Error> {
    if port.0 >= NR_PORTS {
        return Err(Error::PortOutOfRange(port));
    }
    Ok(((port.0 / 64) as usize, 1u64 << (port.0 % 64)))
}

impl<H: Hypercall> EventChannels<H> {
    /// Event channels over `shared_info` (the page the shared-info page is mapped
    /// at, from [`EventChannels::map_shared_info`]; owned from now on), scanning
    /// for `vcpu`. No port is bound yet.
    pub fn new(hc: H, shared_info: SharedPages, vcpu: u32) -> Result<Self, Error> {
        if shared_info.len() < PAGE_SIZE {
            return Err(Error::BadSharedInfo(shared_info.len()));
        }
        if vcpu as usize >= si::LEGACY_MAX_VCPUS {
            return Err(Error::BadVcpu(vcpu));
        }
        Ok(Self {
            xen: Xen(hc),
            shared: shared_info,
            vcpu,
            bound: [const { AtomicU64::new(0) }; WORDS],
            cursor: AtomicUsize::new(0),
            scanning: AtomicBool::new(false),
            active: AtomicU32::new(0),
            ignored_total: AtomicU64::new(0),
            late: core::array::from_fn(|_| LateEoi::default()),
            late_map: [const { AtomicU64::new(0) }; WORDS],
            spurious_total: AtomicU64::new(0),
        })
    }

    /// Allocates a page and maps the domain's shared-info page there
    /// (`XENMEM_add_to_physmap(XENMAPSPACE_shared_info, 0, gfn)`, the HVM way).
    /// The page is never returned to the platform (Xen's shared-info frame now
    /// sits there).
    pub fn map_shared_info<P: Platform + ?Sized>(platform: &P) -> Result<SharedPages, Error> {
        let mem = SharedPages::alloc(platform, 1).ok_or(Error::NoMemory)?;
        let gfn = mem.page_gfn(platform, 0).ok_or(Error::NoGfn)?;
        // SAFETY: `mem` was just allocated and is used for nothing else; from now on
        // it is only accessed through the returned `SharedPages`.
        unsafe { Xen(platform).add_to_physmap(memory::SPACE_SHARED_INFO, 0, gfn)? };
        Ok(mem)
    }

    /// The hypercall wrapper this uses.
    pub fn xen(&self) -> &Xen<H> {
        &self.xen
    }

    /// The shared-info page.
    pub fn shared_info(&self) -> SharedMem<'_> {
        self.shared.mem()
    }

    fn vcpu_off(&self) -> usize {
        si::vcpu_info(self.vcpu as usize)
    }

    /// Marks `port` as ours: its events go to the scan handler.
    pub fn bind(&self, port: Port) -> Result<(), Error> {
        let (w, bit) = split(port)?;
        if let Some(b) = self.bound.get(w) {
            b.fetch_or(bit, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Stops handing `port`'s events to the handler (they are then ignored), and
    /// frees its late-EOI slot if it had one (leaving its mask as it is).
    pub fn unbind(&self, port: Port) -> Result<(), Error> {
        let (w, bit) = split(port)?;
        if let Some(b) = self.bound.get(w) {
            b.fetch_and(!bit, Ordering::SeqCst);
        }
        if let Some(m) = self.late_map.get(w) {
            m.fetch_and(!bit, Ordering::SeqCst);
        }
        if let Some(l) = self.late_slot(port) {
            l.due.store(0, Ordering::SeqCst);
            l.spurious.store(0, Ordering::SeqCst);
            l.port.store(0, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Binds `port` for late EOI (the module docs; docs/hostile-input.md E1): the
    /// scan masks it before handing it to the handler, and it stays masked until
    /// [`EventChannels::eoi`]. Every port the handler is given must be EOI'd, or
    /// it stays masked. Binding a port twice is harmless. Fails if all
    /// [`LATE_EOI_PORTS`] slots are taken.
    pub fn bind_lateeoi(&self, port: Port) -> Result<(), Error> {
        let (w, bit) = split(port)?;
        if self.late_slot(port).is_none() {
            let free = self.late.iter().find(|l| {
                l.port
                    .compare_exchange(0, port.0 + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            });
            if free.is_none() {
                return Err(Error::NoLateEoiSlot(port));
            }
        }
        if let Some(m) = self.late_map.get(w) {
            m.fetch_or(bit, Ordering::SeqCst);
        }
        self.bind(port)
    }

    /// Whether `port` is bound for late EOI.
    pub fn is_late_eoi(&self, port: Port) -> bool {
        self.late_slot(port).is_some()
    }

    fn late_slot(&self, port: Port) -> Option<&LateEoi> {
        self.late
            .iter()
            .find(|l| l.port.load(Ordering::SeqCst) == port.0.wrapping_add(1))
    }

    /// Ends the handling of a late-EOI port's event: `found_work` says whether
    /// looking at the device found anything to do (a response, a frame, input,
    /// room it was waiting for). `now_ns` is the platform's clock. Work, or the
    /// first spurious event in a row, unmasks the port now; a later spurious event
    /// in a row leaves it masked for a delay (1 ms, doubling up to 1 s) that
    /// [`EventChannels::eoi_due`] ends. Spurious events are counted
    /// ([`EventChannels::spurious_total`]).
    pub fn eoi(&self, port: Port, found_work: bool, now_ns: u64) -> Result<Eoi, Error> {
        let l = self.late_slot(port).ok_or(Error::NotLateEoi(port))?;
        let spurious = if found_work {
            l.spurious.store(0, Ordering::Relaxed);
            0
        } else {
            self.spurious_total.fetch_add(1, Ordering::Relaxed);
            let n = l.spurious.load(Ordering::Relaxed).saturating_add(1);
            l.spurious.store(n, Ordering::Relaxed);
            n
        };
        if spurious < 2 {
            l.due.store(0, Ordering::SeqCst);
            self.unmask(port)?;
            return Ok(Eoi::Unmasked);
        }
        // Never 0, which means "nothing due".
        let until_ns = now_ns.saturating_add(late_eoi_delay(spurious)).max(1);
        l.due.store(until_ns, Ordering::SeqCst);
        Ok(Eoi::Deferred { until_ns })
    }

    /// Unmasks the late-EOI ports whose delay is over at `now_ns`; returns when the
    /// next one is due, if any (the OS sleeps at most until then, or calls this
    /// from a timer).
    pub fn eoi_due(&self, now_ns: u64) -> Result<Option<u64>, Error> {
        let mut next: Option<u64> = None;
        for l in &self.late {
            let due = l.due.load(Ordering::SeqCst);
            let p = l.port.load(Ordering::SeqCst);
            if due == 0 || p == 0 {
                continue;
            }
            if due > now_ns {
                next = Some(next.map_or(due, |n| n.min(due)));
            } else if l
                .due
                .compare_exchange(due, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.unmask(Port(p - 1))?;
            }
        }
        Ok(next)
    }

    /// Spurious events so far on the late-EOI ports (EOIs without work).
    pub fn spurious_total(&self) -> u64 {
        self.spurious_total.load(Ordering::Relaxed)
    }

    /// Spurious events in a row on `port` (0 unless it is bound for late EOI).
    pub fn spurious_in_a_row(&self, port: Port) -> u32 {
        self.late_slot(port)
            .map_or(0, |l| l.spurious.load(Ordering::Relaxed))
    }

    /// Whether `port` is bound.
    pub fn is_bound(&self, port: Port) -> bool {
        match split(port) {
            Ok((w, bit)) => self
                .bound
                .get(w)
                .is_some_and(|b| b.load(Ordering::SeqCst) & bit != 0),
            Err(_) => false,
        }
    }

    /// `EVTCHNOP_alloc_unbound` for `remote`, and binds the new port.
    pub fn alloc_unbound(&self, remote: DomId) -> Result<Port, Error> {
        let p = self.xen.evtchn_alloc_unbound(remote)?;
        self.bind(p)?;
        Ok(p)
    }

    /// `EVTCHNOP_bind_interdomain`, and binds the new local port.
    pub fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port, Error> {
        let p = self.xen.evtchn_bind_interdomain(remote, remote_port)?;
        self.bind(p)?;
        Ok(p)
    }

    /// `EVTCHNOP_bind_virq` on this vCPU, and binds the new port.
    pub fn bind_virq(&self, virq: u32) -> Result<Port, Error> {
        let p = self.xen.evtchn_bind_virq(virq, self.vcpu)?;
        self.bind(p)?;
        Ok(p)
    }

    /// Whether a handler for `port` is running (or about to be called) in a scan
    /// on some CPU. After `close(port)` (or `unbind(port)`) returned, wait until
    /// this is `false` before freeing what the port's handler uses: from then on,
    /// no handler runs for `port` (docs/hostile-input.md E2). Inside that port's own handler
    /// it is `true`: do not wait for it there.
    pub fn is_handling(&self, port: Port) -> bool {
        self.active.load(Ordering::SeqCst) == port.0.wrapping_add(1)
    }

    /// Unbinds `port`, closes it (`EVTCHNOP_close`) and drops a stale pending bit.
    /// A scan on another CPU that already checked the binding may still run the
    /// handler; [`EventChannels::is_handling`] tells when it is over.
    pub fn close(&self, port: Port) -> Result<(), Error> {
        let (w, bit) = split(port)?;
        self.unbind(port)?;
        self.xen.evtchn_close(port)?;
        self.shared
            .mem()
            .fetch_and_u64(si::EVTCHN_PENDING + w * 8, !bit);
        Ok(())
    }

    /// `EVTCHNOP_send`: notifies the remote end of `port`.
    pub fn send(&self, port: Port) -> Result<(), Error> {
        split(port)?;
        self.xen.evtchn_send(port)?;
        Ok(())
    }

    /// Masks `port` (sets its mask bit; no hypercall needed).
    pub fn mask(&self, port: Port) -> Result<(), Error> {
        let (w, bit) = split(port)?;
        self.shared.mem().fetch_or_u64(si::EVTCHN_MASK + w * 8, bit);
        Ok(())
    }

    /// Unmasks `port` with `EVTCHNOP_unmask` (Xen clears the mask bit and re-raises
    /// the upcall if the port is pending).
    pub fn unmask(&self, port: Port) -> Result<(), Error> {
        split(port)?;
        self.xen.evtchn_unmask(port)?;
        Ok(())
    }

    /// Whether `port` is masked.
    pub fn is_masked(&self, port: Port) -> Result<bool, Error> {
        let (w, bit) = split(port)?;
        Ok(self.shared.mem().load_u64(si::EVTCHN_MASK + w * 8) & bit != 0)
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, port: Port) -> Result<bool, Error> {
        let (w, bit) = split(port)?;
        Ok(self.shared.mem().load_u64(si::EVTCHN_PENDING + w * 8) & bit != 0)
    }

    /// Clears `port`'s pending bit; returns whether it was set (for polling
    /// without upcalls).
    pub fn clear_pending(&self, port: Port) -> Result<bool, Error> {
        let (w, bit) = split(port)?;
        Ok(self
            .shared
            .mem()
            .fetch_and_u64(si::EVTCHN_PENDING + w * 8, !bit)
            & bit
            != 0)
    }

    /// Events dropped so far because nobody bound their port.
    pub fn ignored_total(&self) -> u64 {
        self.ignored_total.load(Ordering::Relaxed)
    }

    /// Handles pending, unmasked events: at most `budget` ports per call, each
    /// bound one passed to `handler` once, after its pending bit was cleared.
    pub fn scan(&self, budget: usize, mut handler: impl FnMut(Port)) -> Scan {
        let mut out = Scan::default();
        if self.scanning.swap(true, Ordering::Acquire) {
            return out;
        }
        let v = self.vcpu_off();
        // `evtchn_upcall_pending` is the first byte of the vcpu_info (asserted next
        // to `WORDS`): no `+ 0` that no test could tell from `- 0`.
        self.shared.mem().store_u8(v, 0);
        mb();
        let mut sel = self.shared.mem().swap_u64(v + si::VCPU_PENDING_SEL, 0);
        // Only used modulo WORDS below (the cursor is always a word index anyway).
        let start = self.cursor.load(Ordering::Relaxed);
        let mut left = budget;
        'words: for k in 0..WORDS {
            let w = (start + k) % WORDS;
            let wbit = 1u64 << w;
            if sel & wbit == 0 {
                continue;
            }
            sel &= !wbit;
            let poff = si::EVTCHN_PENDING + w * 8;
            // One snapshot per word: a port that fires again while we work waits for
            // the next scan (Xen re-sets the selector bit), so one busy port cannot
            // starve the others in its word.
            let mut snap = self.shared.mem().load_u64(poff)
                & !self.shared.mem().load_u64(si::EVTCHN_MASK + w * 8);
            while snap != 0 {
                if left == 0 {
                    // Put back this word and the ones not visited; resume here.
                    self.shared
                        .mem()
                        .fetch_or_u64(v + si::VCPU_PENDING_SEL, sel | wbit);
                    self.shared.mem().store_u8(v, 1); // evtchn_upcall_pending
                    self.cursor.store(w, Ordering::Relaxed);
                    out.more = true;
                    break 'words;
                }
                let b = snap.trailing_zeros();
                let bit = 1u64 << b;
                snap &= !bit;
                left -= 1;
                let was = self.shared.mem().fetch_and_u64(poff, !bit);
                if was & bit == 0 {
                    continue;
                }
                let port = Port(w as u32 * 64 + b);
                // Announce the port, then check the binding (E2: a concurrent
                // `close` either made us see it unbound or sees the announcement).
                self.active.store(port.0 + 1, Ordering::SeqCst);
                let ours = self
                    .bound
                    .get(w)
                    .is_some_and(|m| m.load(Ordering::SeqCst) & bit != 0);
                if ours {
                    let late = self
                        .late_map
                        .get(w)
                        .is_some_and(|m| m.load(Ordering::SeqCst) & bit != 0);
                    if late {
                        // Late EOI: masked until `eoi` (E1).
                        self.shared.mem().fetch_or_u64(si::EVTCHN_MASK + w * 8, bit);
                    }
                    out.handled += 1;
                    handler(port);
                } else {
                    out.ignored += 1;
                }
                self.active.store(0, Ordering::SeqCst);
            }
        }
        self.ignored_total
            .fetch_add(out.ignored as u64, Ordering::Relaxed);
        if !out.more && self.shared.mem().load_u64(v + si::VCPU_PENDING_SEL) != 0 {
            out.more = true;
        }
        self.scanning.store(false, Ordering::Release);
        out
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::abi::errno;
    use crate::abi::hypercall_nr as nr;
    use crate::testutil::FakePlatform;
    use crate::xen::fake::{read, write, FakeXen};
    use std::vec;
    use std::vec::Vec;

    /// What Xen does to deliver an event (`evtchn_2l_set_pending`).
    fn raise(m: SharedMem<'_>, vcpu: usize, port: u32) {
        let (w, b) = ((port / 64) as usize, 1u64 << (port % 64));
        let was = m.fetch_or_u64(si::EVTCHN_PENDING + w * 8, b);
        if was & b != 0 || m.load_u64(si::EVTCHN_MASK + w * 8) & b != 0 {
            return;
        }
        let v = si::vcpu_info(vcpu);
        if m.fetch_or_u64(v + si::VCPU_PENDING_SEL, 1 << w) & (1 << w) == 0 {
            m.store_u8(v + si::VCPU_UPCALL_PENDING, 1);
        }
    }

    fn setup(p: &FakePlatform, vcpu: u32) -> EventChannels<&FakePlatform> {
        let m = SharedPages::alloc(p, 1).unwrap();
        EventChannels::new(p, m, vcpu).unwrap()
    }

    fn idle() -> FakePlatform {
        FakePlatform::new(FakeXen::new(|_, _| 0))
    }

    #[test]
    fn handles_bound_pending_ports_once_and_clears_them() {
        let p = idle();
        let ev = setup(&p, 1);
        let m = ev.shared_info();
        for port in [3, 64, 200, 4095] {
            ev.bind(Port(port)).unwrap();
            raise(m, 1, port);
        }
        assert_eq!(m.load_u8(si::vcpu_info(1) + si::VCPU_UPCALL_PENDING), 1);
        let mut seen = Vec::new();
        let s = ev.scan(DEFAULT_BUDGET, |p| seen.push(p.0));
        seen.sort();
        assert_eq!(seen, [3, 64, 200, 4095]);
        assert_eq!((s.handled, s.ignored, s.more), (4, 0, false));
        for port in [3, 64, 200, 4095] {
            assert!(!ev.is_pending(Port(port)).unwrap());
        }
        assert_eq!(m.load_u8(si::vcpu_info(1) + si::VCPU_UPCALL_PENDING), 0);
        assert_eq!(
            ev.scan(DEFAULT_BUDGET, |_| panic!("nothing left")),
            Scan::default()
        );
    }

    /// Row 25: an event on a port we never bound is dropped (and counted).
    #[test]
    fn ignores_ports_nobody_bound() {
        let p = idle();
        let ev = setup(&p, 0);
        ev.bind(Port(5)).unwrap();
        raise(ev.shared_info(), 0, 5);
        raise(ev.shared_info(), 0, 6);
        raise(ev.shared_info(), 0, 700);
        let mut seen = Vec::new();
        let s = ev.scan(DEFAULT_BUDGET, |p| seen.push(p.0));
        assert_eq!(seen, [5]);
        assert_eq!((s.handled, s.ignored), (1, 2));
        assert_eq!(ev.ignored_total(), 2);
        assert!(
            !ev.is_pending(Port(700)).unwrap(),
            "cleared, not left to storm"
        );
    }

    #[test]
    fn masked_ports_wait_until_unmasked() {
        let x = FakeXen::new(|op, a| {
            assert_eq!(op, nr::EVENT_CHANNEL_OP);
            assert_eq!(a[0], abi::OP_UNMASK as usize);
            let s: abi::PortArg = read(a[1]);
            assert_eq!(s.port, 9);
            0
        });
        let p = FakePlatform::new(x);
        let ev = setup(&p, 0);
        ev.bind(Port(9)).unwrap();
        ev.mask(Port(9)).unwrap();
        assert!(ev.is_masked(Port(9)).unwrap());
        raise(ev.shared_info(), 0, 9);
        // Xen does not select a masked port, but even a stray selector bit must not
        // deliver it.
        ev.shared_info()
            .fetch_or_u64(si::vcpu_info(0) + si::VCPU_PENDING_SEL, 1);
        assert_eq!(ev.scan(DEFAULT_BUDGET, |_| panic!("masked")).handled, 0);
        assert!(ev.is_pending(Port(9)).unwrap());
        ev.unmask(Port(9)).unwrap();
        assert_eq!(p.xen.calls().len(), 1);
    }

    /// Row 24: thousands of pending events; each scan does at most `budget` ports,
    /// reports `more`, and the rest are handled by later scans, each exactly once.
    #[test]
    fn event_storm_is_bounded_per_scan() {
        let p = idle();
        let ev = setup(&p, 0);
        let m = ev.shared_info();
        for port in 0..NR_PORTS {
            ev.bind(Port(port)).unwrap();
            raise(m, 0, port);
        }
        let mut count = vec![0u32; NR_PORTS as usize];
        let mut scans = 0;
        loop {
            let s = ev.scan(100, |p| count[p.0 as usize] += 1);
            assert!(s.handled <= 100);
            scans += 1;
            assert!(scans <= 100, "no livelock");
            if !s.more {
                break;
            }
        }
        assert_eq!(scans, 41); // 4096 / 100, rounded up
        assert!(count.iter().all(|&c| c == 1));
    }

    /// Row 24: a port that re-fires from inside its own handler cannot keep one
    /// scan busy: it is handled once per scan.
    #[test]
    fn self_refiring_port_does_not_livelock_a_scan() {
        let p = idle();
        let ev = setup(&p, 0);
        let m = ev.shared_info();
        ev.bind(Port(1)).unwrap();
        ev.bind(Port(2)).unwrap();
        raise(m, 0, 1);
        raise(m, 0, 2);
        let mut seen = Vec::new();
        let s = ev.scan(1000, |p| {
            seen.push(p.0);
            raise(m, 0, p.0);
        });
        assert_eq!(seen, [1, 2], "port 2 not starved by port 1");
        assert!(s.more);
        assert_eq!(ev.scan(1000, |_| ()).handled, 2);
    }

    #[test]
    fn budget_exhaustion_resumes_in_the_unfinished_word() {
        let p = idle();
        let ev = setup(&p, 0);
        let m = ev.shared_info();
        for port in [1, 2, 130] {
            ev.bind(Port(port)).unwrap();
            raise(m, 0, port);
        }
        let mut seen = Vec::new();
        assert!(ev.scan(1, |p| seen.push(p.0)).more);
        assert_eq!(m.load_u8(si::VCPU_UPCALL_PENDING), 1, "re-flagged");
        assert!(ev.scan(1, |p| seen.push(p.0)).more);
        assert!(!ev.scan(1, |p| seen.push(p.0)).more);
        assert_eq!(seen, [1, 2, 130]);
        assert_eq!(ev.scan(0, |_| ()).handled, 0);
    }

    #[test]
    fn scan_is_not_reentrant() {
        let p = idle();
        let ev = setup(&p, 0);
        ev.bind(Port(4)).unwrap();
        raise(ev.shared_info(), 0, 4);
        let mut inner = None;
        ev.scan(10, |_| inner = Some(ev.scan(10, |_| panic!("re-entered"))));
        assert_eq!(inner, Some(Scan::default()));
    }

    #[test]
    fn wrappers_bind_and_close() {
        let x = FakeXen::new(|op, a| {
            assert_eq!(op, nr::EVENT_CHANNEL_OP);
            match a[0] as u32 {
                abi::OP_ALLOC_UNBOUND => {
                    let mut s: abi::AllocUnbound = read(a[1]);
                    s.port = 77;
                    write(a[1], s);
                    0
                }
                abi::OP_BIND_INTERDOMAIN => {
                    let mut s: abi::BindInterdomain = read(a[1]);
                    s.local_port = 78;
                    write(a[1], s);
                    0
                }
                abi::OP_BIND_VIRQ => {
                    let mut s: abi::BindVirq = read(a[1]);
                    assert_eq!(s.vcpu, 2);
                    s.port = 79;
                    write(a[1], s);
                    0
                }
                abi::OP_CLOSE | abi::OP_SEND => 0,
                _ => -errno::ENOSYS,
            }
        });
        let p = FakePlatform::new(x);
        let ev = setup(&p, 2);
        assert_eq!(ev.alloc_unbound(DomId(0)).unwrap(), Port(77));
        assert_eq!(ev.bind_interdomain(DomId(0), Port(3)).unwrap(), Port(78));
        assert_eq!(ev.bind_virq(abi::VIRQ_TIMER).unwrap(), Port(79));
        assert!(ev.is_bound(Port(77)) && ev.is_bound(Port(78)) && ev.is_bound(Port(79)));
        ev.send(Port(77)).unwrap();
        raise(ev.shared_info(), 2, 77);
        ev.close(Port(77)).unwrap();
        assert!(!ev.is_bound(Port(77)));
        assert!(!ev.is_pending(Port(77)).unwrap());
        assert_eq!(ev.scan(10, |_| panic!("closed")).handled, 0);
        assert_eq!(ev.send(Port(4096)), Err(Error::PortOutOfRange(Port(4096))));
        assert_eq!(
            ev.bind(Port(u32::MAX)),
            Err(Error::PortOutOfRange(Port(u32::MAX)))
        );
        assert!(!ev.is_bound(Port(u32::MAX)));
    }

    /// A `Hypercall` that succeeds and can be shared between threads.
    struct NullXen;

    impl Hypercall for NullXen {
        unsafe fn hypercall(&self, _op: u32, _args: [usize; 5]) -> isize {
            0
        }
    }

    /// Event channels usable from several threads; the page lives as long as the
    /// returned platform.
    fn threaded() -> (FakePlatform, EventChannels<&'static NullXen>) {
        let p = idle();
        let m = SharedPages::alloc(&p, 1).unwrap();
        (p, EventChannels::new(&NullXen, m, 0).unwrap())
    }

    /// E2: a handler running on another CPU when `close` returns is reported by
    /// `is_handling` until it finishes; after that, no handler runs for the port
    /// however often it fires.
    #[test]
    fn e2_close_while_the_handler_runs_elsewhere() {
        use std::sync::atomic::AtomicBool;
        use std::sync::mpsc::channel;
        let (_pages, ev) = threaded();
        let m = ev.shared_info();
        let (p, q) = (Port(70), Port(71));
        ev.bind(p).unwrap();
        ev.bind(q).unwrap();
        let closed = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let (entered_tx, entered_rx) = channel();
        let (release_tx, release_rx) = channel::<()>();
        let (seen_q_tx, seen_q_rx) = channel();
        let mut reported = (false, false);
        std::thread::scope(|s| {
            let (ev, closed, stop) = (&ev, &closed, &stop);
            s.spawn(move || {
                let mut first = true;
                while !stop.load(Ordering::SeqCst) {
                    ev.scan(DEFAULT_BUDGET, |port| {
                        if port == p {
                            assert!(!closed.load(Ordering::SeqCst), "handler after close");
                            if first {
                                first = false;
                                entered_tx.send(()).unwrap();
                                release_rx.recv().unwrap();
                            }
                        } else {
                            let _ = seen_q_tx.send(());
                        }
                    });
                    std::thread::yield_now();
                }
            });
            raise(m, 0, p.0);
            entered_rx.recv().unwrap();
            ev.close(p).unwrap();
            // (Checked after the scope: a failed assertion here would leave the
            // handler blocked and the scope waiting for it.)
            reported = (ev.is_handling(p), ev.is_handling(q));
            release_tx.send(()).unwrap();
            while ev.is_handling(p) {
                std::thread::yield_now();
            }
            closed.store(true, Ordering::SeqCst);
            // The port keeps firing (a racing or hostile host): ignored. Another
            // port still reaches its handler.
            for _ in 0..100 {
                raise(m, 0, p.0);
                raise(m, 0, q.0);
                seen_q_rx.recv().unwrap();
            }
            stop.store(true, Ordering::SeqCst);
        });
        assert_eq!(reported, (true, false), "the running handler is reported");
        assert!(ev.ignored_total() > 0);
    }

    /// E2: events keep arriving from another thread on a port while it is closed
    /// (and rebound, and closed again); once `close` returned and `is_handling`
    /// said no, its handler never runs, and a neighbouring port keeps working.
    #[test]
    fn e2_events_from_another_thread_during_close() {
        use std::sync::atomic::AtomicBool;
        let rounds = if cfg!(miri) { 3 } else { 200 };
        let (_pages, ev) = threaded();
        let m = ev.shared_info();
        let (p, q) = (Port(130), Port(131));
        ev.bind(q).unwrap();
        let closed = AtomicBool::new(true);
        let stop = AtomicBool::new(false);
        let late = AtomicU64::new(0);
        let (p_count, q_count) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    raise(m, 0, p.0);
                    raise(m, 0, q.0);
                    std::thread::yield_now();
                }
            });
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    ev.scan(DEFAULT_BUDGET, |port| {
                        if port == p {
                            if closed.load(Ordering::SeqCst) {
                                late.fetch_add(1, Ordering::SeqCst);
                            }
                            p_count.fetch_add(1, Ordering::SeqCst);
                        } else {
                            q_count.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    std::thread::yield_now();
                }
            });
            for _ in 0..rounds {
                closed.store(false, Ordering::SeqCst);
                let before = p_count.load(Ordering::SeqCst);
                ev.bind(p).unwrap();
                while p_count.load(Ordering::SeqCst) == before {
                    std::thread::yield_now();
                }
                ev.close(p).unwrap();
                while ev.is_handling(p) {
                    std::thread::yield_now();
                }
                closed.store(true, Ordering::SeqCst);
                let q_before = q_count.load(Ordering::SeqCst);
                while q_count.load(Ordering::SeqCst) < q_before + 2 {
                    std::thread::yield_now();
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
        assert_eq!(late.load(Ordering::SeqCst), 0, "handlers ran after close");
        assert!(ev.ignored_total() > 0);
    }

    #[test]
    fn construction_checks_and_shared_info_mapping() {
        let p = idle();
        let m = SharedPages::alloc(&p, 1).unwrap();
        assert_eq!(
            EventChannels::new(&p, m, 32).unwrap_err(),
            Error::BadVcpu(32)
        );
        assert_eq!(
            EventChannels::new(&p, SharedPages::empty(), 0).unwrap_err(),
            Error::BadSharedInfo(0)
        );
        let si_page = EventChannels::<&FakePlatform>::map_shared_info(&p).unwrap();
        let c = &p.xen.calls()[0];
        assert_eq!(
            (c.op, c.args[0]),
            (nr::MEMORY_OP, memory::OP_ADD_TO_PHYSMAP as usize)
        );
        assert_eq!(si_page.len(), PAGE_SIZE);
    }

    /// Late EOI (E1): what Xen does on `EVTCHNOP_unmask`, applied by the test
    /// after each call the kit made (the fake only records the ports).
    mod late_eoi {
        use super::*;
        use std::cell::RefCell;
        use std::rc::Rc;
        use std::string::ToString;

        struct Rig {
            p: FakePlatform,
            unmasked: Rc<RefCell<Vec<u32>>>,
        }

        fn rig() -> Rig {
            let unmasked = Rc::new(RefCell::new(Vec::new()));
            let u = unmasked.clone();
            let x = FakeXen::new(move |op, a| {
                assert_eq!(op, nr::EVENT_CHANNEL_OP);
                assert_eq!(a[0], abi::OP_UNMASK as usize);
                let s: abi::PortArg = read(a[1]);
                u.borrow_mut().push(s.port);
                0
            });
            Rig {
                p: FakePlatform::new(x),
                unmasked,
            }
        }

        /// Xen's side of the unmasks the kit asked for: clear the mask bit and
        /// re-raise a pending port. Returns the ports unmasked.
        fn xen_unmasks(r: &Rig, ev: &EventChannels<&FakePlatform>) -> Vec<u32> {
            let ports: Vec<u32> = r.unmasked.borrow_mut().drain(..).collect();
            let m = ev.shared_info();
            for &port in &ports {
                let (w, b) = ((port / 64) as usize, 1u64 << (port % 64));
                m.fetch_and_u64(si::EVTCHN_MASK + w * 8, !b);
                if m.load_u64(si::EVTCHN_PENDING + w * 8) & b != 0 {
                    m.fetch_and_u64(si::EVTCHN_PENDING + w * 8, !b);
                    raise(m, 0, port);
                }
            }
            ports
        }

        #[test]
        fn a_late_port_stays_masked_until_its_eoi() {
            let r = rig();
            let ev = setup(&r.p, 0);
            ev.bind_lateeoi(Port(70)).unwrap();
            ev.bind(Port(71)).unwrap();
            assert!(ev.is_bound(Port(70)) && ev.is_late_eoi(Port(70)));
            assert!(!ev.is_late_eoi(Port(71)));
            raise(ev.shared_info(), 0, 70);
            raise(ev.shared_info(), 0, 71);
            let mut seen = Vec::new();
            ev.scan(DEFAULT_BUDGET, |p| {
                seen.push(p.0);
            });
            assert_eq!(seen, [70, 71]);
            assert!(ev.is_masked(Port(70)).unwrap(), "masked before its handler");
            assert!(!ev.is_masked(Port(71)).unwrap(), "an ordinary port is not");
            // Events meanwhile stay pending and are not delivered.
            raise(ev.shared_info(), 0, 70);
            assert_eq!(ev.scan(DEFAULT_BUDGET, |_| panic!("masked")).handled, 0);
            assert!(ev.is_pending(Port(70)).unwrap());
            assert_eq!(ev.eoi(Port(70), true, 5).unwrap(), Eoi::Unmasked);
            assert_eq!(xen_unmasks(&r, &ev), [70]);
            let mut seen = Vec::new();
            ev.scan(DEFAULT_BUDGET, |p| seen.push(p.0));
            assert_eq!(seen, [70], "the pending event comes after the unmask");
            assert_eq!(ev.spurious_total(), 0);
        }

        #[test]
        fn spurious_events_in_a_row_back_off_doubling_up_to_a_second() {
            let r = rig();
            let ev = setup(&r.p, 0);
            ev.bind_lateeoi(Port(3)).unwrap();
            let t = 1_000_000_000;
            // One round of slack: the first spurious event unmasks at once.
            assert_eq!(ev.eoi(Port(3), false, t).unwrap(), Eoi::Unmasked);
            assert_eq!(xen_unmasks(&r, &ev), [3]);
            let mut delays = Vec::new();
            for _ in 0..14 {
                match ev.eoi(Port(3), false, t).unwrap() {
                    Eoi::Deferred { until_ns } => delays.push((until_ns - t) / 1_000_000),
                    Eoi::Unmasked => panic!("a storm is not served at once"),
                }
            }
            assert_eq!(
                delays,
                [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000, 1000, 1000]
            );
            // However long the storm (past the point where doubling would overflow).
            for _ in 0..100 {
                assert_eq!(
                    ev.eoi(Port(3), false, t).unwrap(),
                    Eoi::Deferred {
                        until_ns: t + LATE_EOI_MAX_DELAY_NS
                    }
                );
            }
            assert!(r.unmasked.borrow().is_empty(), "nothing unmasked meanwhile");
            assert_eq!(ev.spurious_total(), 115);
            assert_eq!(ev.spurious_in_a_row(Port(3)), 115);
            // Work resets the count: unmasked now, and one round of slack again.
            assert_eq!(ev.eoi(Port(3), true, t).unwrap(), Eoi::Unmasked);
            assert_eq!(ev.spurious_in_a_row(Port(3)), 0);
            assert_eq!(ev.eoi(Port(3), false, t).unwrap(), Eoi::Unmasked);
            assert_eq!(
                ev.eoi(Port(3), false, t).unwrap(),
                Eoi::Deferred {
                    until_ns: t + 1_000_000
                }
            );
            assert_eq!(xen_unmasks(&r, &ev), [3, 3]);
            assert_eq!(ev.spurious_total(), 117);
            // A deferral is never "due at 0" (0 means none), even at time 0, and
            // never wraps.
            assert_eq!(
                ev.eoi(Port(3), false, u64::MAX - 5).unwrap(),
                Eoi::Deferred { until_ns: u64::MAX }
            );
        }

        #[test]
        fn eoi_due_unmasks_what_is_due_and_names_the_next() {
            let r = rig();
            let ev = setup(&r.p, 0);
            for port in [10, 20] {
                ev.bind_lateeoi(Port(port)).unwrap();
                ev.eoi(Port(port), false, 0).unwrap();
            }
            xen_unmasks(&r, &ev);
            assert_eq!(
                ev.eoi(Port(10), false, 0).unwrap(),
                Eoi::Deferred {
                    until_ns: 1_000_000
                }
            );
            ev.eoi(Port(20), false, 0).unwrap();
            assert_eq!(
                ev.eoi(Port(20), false, 0).unwrap(),
                Eoi::Deferred {
                    until_ns: 2_000_000
                }
            );
            assert_eq!(ev.eoi_due(999_999).unwrap(), Some(1_000_000));
            assert!(xen_unmasks(&r, &ev).is_empty());
            assert_eq!(ev.eoi_due(1_000_000).unwrap(), Some(2_000_000));
            assert_eq!(xen_unmasks(&r, &ev), [10], "due exactly at its time");
            assert_eq!(ev.eoi_due(1_500_000).unwrap(), Some(2_000_000));
            assert!(xen_unmasks(&r, &ev).is_empty(), "unmasked once");
            assert_eq!(ev.eoi_due(5_000_000).unwrap(), None);
            assert_eq!(xen_unmasks(&r, &ev), [20]);
            assert_eq!(ev.eoi_due(u64::MAX).unwrap(), None);
            assert!(xen_unmasks(&r, &ev).is_empty());
        }

        /// E1: a port raised a thousand times a millisecond for 10 s (virtual)
        /// with nothing behind it is served a few dozen times, while an ordinary
        /// port raised every millisecond is served every time.
        #[test]
        fn a_storm_is_served_a_few_times_a_second_and_others_progress() {
            let r = rig();
            let ev = setup(&r.p, 0);
            ev.bind_lateeoi(Port(100)).unwrap();
            ev.bind(Port(200)).unwrap();
            let (mut storm, mut other) = (0u32, 0u32);
            // Under Miri: 1.2 s and a few events a millisecond (docs/miri.md).
            let (ms, per_ms) = if cfg!(miri) {
                (1_200, 3)
            } else {
                (10_000, 1000)
            };
            for step in 0..ms {
                let now = step as u64 * 1_000_000;
                for _ in 0..per_ms {
                    raise(ev.shared_info(), 0, 100);
                }
                raise(ev.shared_info(), 0, 200);
                ev.eoi_due(now).unwrap();
                xen_unmasks(&r, &ev);
                let mut late = Vec::new();
                ev.scan(DEFAULT_BUDGET, |p| match p.0 {
                    100 => late.push(p),
                    200 => other += 1,
                    _ => panic!("port {p:?}"),
                });
                for p in late {
                    storm += 1;
                    ev.eoi(p, false, now).unwrap();
                }
                xen_unmasks(&r, &ev);
            }
            assert_eq!(other, ms);
            // 1 + 1 ms + 2 + ... + 512 ms (11 services in the first second), then
            // one a second.
            let secs = ms / 1000;
            assert!(storm <= 12 + secs, "{storm} services in {secs} s");
            assert!(storm >= secs, "{storm} services in {secs} s: still served");
            std::println!("{storm} services of the storming port in {secs} s");
            assert_eq!(u64::from(storm), ev.spurious_total());
        }

        #[test]
        fn slots_are_bounded_and_freed_by_unbind() {
            let r = rig();
            let ev = setup(&r.p, 0);
            for port in 0..LATE_EOI_PORTS as u32 {
                ev.bind_lateeoi(Port(port)).unwrap();
            }
            // Binding one again takes no second slot.
            ev.bind_lateeoi(Port(0)).unwrap();
            assert_eq!(
                ev.bind_lateeoi(Port(500)),
                Err(Error::NoLateEoiSlot(Port(500)))
            );
            assert!(!ev.is_bound(Port(500)), "nothing half bound");
            assert_eq!(
                ev.bind_lateeoi(Port(4096)),
                Err(Error::PortOutOfRange(Port(4096)))
            );
            assert_eq!(
                ev.eoi(Port(501), true, 0),
                Err(Error::NotLateEoi(Port(501)))
            );
            ev.eoi(Port(7), false, 0).unwrap();
            ev.eoi(Port(7), false, 0).unwrap();
            ev.unbind(Port(7)).unwrap();
            assert!(!ev.is_bound(Port(7)));
            assert_eq!(ev.eoi(Port(7), true, 0), Err(Error::NotLateEoi(Port(7))));
            assert_eq!(ev.spurious_in_a_row(Port(7)), 0);
            assert_eq!(
                ev.eoi_due(u64::MAX).unwrap(),
                None,
                "its deferral went with it"
            );
            ev.bind_lateeoi(Port(500)).unwrap();
            assert_eq!(ev.spurious_in_a_row(Port(500)), 0, "a fresh slot");
            // An ordinary port bound later is not masked by the scan.
            ev.unbind(Port(500)).unwrap();
            ev.bind(Port(500)).unwrap();
            raise(ev.shared_info(), 0, 500);
            assert_eq!(ev.scan(DEFAULT_BUDGET, |_| {}).handled, 1);
            assert!(!ev.is_masked(Port(500)).unwrap());
            assert_eq!(
                Error::NoLateEoiSlot(Port(9)).to_string(),
                "no late-EOI slot left for event channel port 9"
            );
            assert_eq!(
                Error::NotLateEoi(Port(9)).to_string(),
                "event channel port 9 is not bound for late EOI"
            );
        }
    }

    /// Tests written for mutants cargo-mutants found missed (docs/mutants.md): each
    /// fails on the mutant named in its comment.
    mod mutants {
        use super::*;
        use std::format;

        /// Every `Error` names its value, and a hypercall failure converts into
        /// `Error::Xen` (mutants: `Display::fmt` -> `Ok(())`, `From<XenError>::from`
        /// -> `Default::default()`).
        #[test]
        fn errors_display_their_values() {
            let xe = XenError::Hypercall {
                op: nr::EVENT_CHANNEL_OP,
                cmd: abi::OP_SEND,
                rc: -errno::EINVAL,
            };
            assert_eq!(Error::from(xe), Error::Xen(xe));
            let cases = [
                (
                    Error::PortOutOfRange(Port(4096)),
                    "event channel port 4096 out of range".into(),
                ),
                (
                    Error::BadVcpu(32),
                    "vcpu 32 has no vcpu_info in shared_info".into(),
                ),
                (
                    Error::BadSharedInfo(100),
                    "shared_info region of 100 bytes too small".into(),
                ),
                (Error::NoMemory, "out of memory for shared_info".into()),
                (Error::NoGfn, "shared_info page has no gfn".into()),
                (Error::Xen(xe), format!("{xe}")),
            ];
            for (e, text) in cases {
                let text: std::string::String = text;
                assert!(!text.is_empty());
                assert_eq!(format!("{e}"), text);
            }
        }

        /// `mask`, `is_masked`, `is_pending` and `clear_pending` act on the port's own
        /// bit of the shared bitmaps, in any word (mutants: the `+`/`*` of the word
        /// offsets, the `&`/`!=` of the bit tests, the results -> `Ok(true)`/`Ok(false)`,
        /// `delete !` in `clear_pending`).
        #[test]
        fn bitmap_helpers_touch_only_their_ports_bit() {
            let p = idle();
            let ev = setup(&p, 0);
            let m = ev.shared_info();
            for port in [0u32, 63, 64, 200, 4095] {
                let (w, b) = ((port / 64) as usize, 1u64 << (port % 64));
                let (mask, pending) = (si::EVTCHN_MASK + w * 8, si::EVTCHN_PENDING + w * 8);
                let neighbour = Port(port ^ 1);
                assert!(!ev.is_masked(Port(port)).unwrap());
                ev.mask(Port(port)).unwrap();
                assert!(ev.is_masked(Port(port)).unwrap());
                assert!(!ev.is_masked(neighbour).unwrap());
                assert_eq!(m.load_u64(mask), b, "port {port}");
                // (Unmasking is Xen's job: `EVTCHNOP_unmask`.)
                m.store_u64(mask, 0);
                assert!(!ev.is_pending(Port(port)).unwrap());
                assert_eq!(ev.clear_pending(Port(port)), Ok(false));
                m.store_u64(pending, u64::MAX);
                assert!(ev.is_pending(Port(port)).unwrap());
                assert_eq!(ev.clear_pending(Port(port)), Ok(true));
                assert_eq!(m.load_u64(pending), !b, "only port {port} cleared");
                assert!(!ev.is_pending(Port(port)).unwrap());
                assert!(ev.is_pending(neighbour).unwrap());
                assert_eq!(ev.clear_pending(Port(port)), Ok(false));
                m.store_u64(pending, 0);
            }
            for e in [
                ev.mask(Port(4096)).unwrap_err(),
                ev.is_masked(Port(4096)).unwrap_err(),
                ev.is_pending(Port(4096)).unwrap_err(),
                ev.clear_pending(Port(4096)).unwrap_err(),
            ] {
                assert_eq!(e, Error::PortOutOfRange(Port(4096)));
            }
        }

        /// Unbinding one port leaves the others of its word bound; `is_handling` is
        /// true for the port whose handler runs, only while it runs (mutants: `delete
        /// !` in `unbind`, `is_bound`/`is_handling` -> `true`/`false`, `==` -> `!=`).
        #[test]
        fn unbind_is_per_port_and_is_handling_follows_the_handler() {
            let p = idle();
            let ev = setup(&p, 0);
            for port in [3, 5, 70] {
                ev.bind(Port(port)).unwrap();
            }
            ev.unbind(Port(3)).unwrap();
            assert!(!ev.is_bound(Port(3)));
            assert!(ev.is_bound(Port(5)) && ev.is_bound(Port(70)));
            assert!(!ev.is_bound(Port(4)));
            assert!(!ev.is_handling(Port(5)));
            raise(ev.shared_info(), 0, 5);
            let mut inside = None;
            ev.scan(DEFAULT_BUDGET, |port| {
                inside = Some((ev.is_handling(port), ev.is_handling(Port(70))));
            });
            assert_eq!(inside, Some((true, false)));
            assert!(!ev.is_handling(Port(5)));
        }

        /// A scan cut short by its budget resumes in the unfinished word, ahead of
        /// events that arrived meanwhile in lower words (found through the mutant
        /// `cursor % WORDS` -> `cursor / WORDS`, which restarted at word 0).
        #[test]
        fn next_scan_resumes_at_the_unfinished_word_first() {
            let p = idle();
            let ev = setup(&p, 0);
            let m = ev.shared_info();
            for port in (0..4).chain(320..330) {
                ev.bind(Port(port)).unwrap();
            }
            for port in [0, 1].into_iter().chain(320..330) {
                raise(m, 0, port);
            }
            let mut seen = Vec::new();
            let s = ev.scan(5, |p| seen.push(p.0));
            assert_eq!(seen, [0, 1, 320, 321, 322]);
            assert!(s.more);
            raise(m, 0, 2);
            seen.clear();
            ev.scan(3, |p| seen.push(p.0));
            assert_eq!(seen, [323, 324, 325], "word 5 first, port 2 after it");
            seen.clear();
            ev.scan(DEFAULT_BUDGET, |p| seen.push(p.0));
            assert_eq!(seen, [326, 327, 328, 329, 2]);
        }

        /// A scan looks only at the words the selector names: a port left pending
        /// while masked waits until Xen flags its word again (as `EVTCHNOP_unmask`
        /// does), not when the mask bit merely clears (mutant: `sel & wbit` -> `sel |
        /// wbit`, which walked every word; `sel &= !wbit` -> `sel |= !wbit`, which
        /// flagged every word after the first).
        #[test]
        fn scan_reads_only_the_words_the_selector_names() {
            let p = idle();
            let ev = setup(&p, 0);
            let m = ev.shared_info();
            ev.bind(Port(70)).unwrap();
            ev.mask(Port(70)).unwrap();
            raise(m, 0, 70);
            assert!(ev.is_pending(Port(70)).unwrap());
            m.store_u64(si::EVTCHN_MASK + 8, 0);
            // Word 0 is flagged and scanned; word 1 stays unread.
            ev.bind(Port(5)).unwrap();
            raise(m, 0, 5);
            let mut seen = Vec::new();
            ev.scan(DEFAULT_BUDGET, |p| seen.push(p.0));
            assert_eq!(seen, [5], "word 1 not flagged");
            assert!(ev.is_pending(Port(70)).unwrap(), "left for later");
            m.fetch_or_u64(si::vcpu_info(0) + si::VCPU_PENDING_SEL, 1 << 1);
            seen.clear();
            ev.scan(DEFAULT_BUDGET, |p| seen.push(p.0));
            assert_eq!(seen, [70]);
        }

        /// A port whose pending bit was cleared after the scan's snapshot of its word
        /// (here by the handler of an earlier port) is not handed out (mutant: `was
        /// & bit == 0` -> `was | bit == 0`, which handed it out anyway).
        #[test]
        fn a_port_cleared_meanwhile_is_skipped() {
            let p = idle();
            let ev = setup(&p, 0);
            for port in [3, 4] {
                ev.bind(Port(port)).unwrap();
                raise(ev.shared_info(), 0, port);
            }
            let mut seen = Vec::new();
            let s = ev.scan(DEFAULT_BUDGET, |p| {
                seen.push(p.0);
                if p.0 == 3 {
                    assert_eq!(ev.clear_pending(Port(4)), Ok(true));
                }
            });
            assert_eq!(seen, [3]);
            assert_eq!((s.handled, s.ignored), (1, 0));
        }

        /// An event that arrives during a scan makes it report `more`, on any vCPU
        /// (mutant: `v + VCPU_PENDING_SEL` -> `v * VCPU_PENDING_SEL` in the final
        /// check, which read another vCPU's bytes).
        #[test]
        fn an_event_arriving_during_a_scan_sets_more_on_any_vcpu() {
            let p = idle();
            let ev = setup(&p, 1);
            ev.bind(Port(3)).unwrap();
            ev.bind(Port(200)).unwrap();
            raise(ev.shared_info(), 1, 3);
            let s = ev.scan(DEFAULT_BUDGET, |port| {
                if port.0 == 3 {
                    raise(ev.shared_info(), 1, 200);
                }
            });
            assert_eq!((s.handled, s.more), (1, true));
            let mut seen = Vec::new();
            ev.scan(DEFAULT_BUDGET, |p| seen.push(p.0));
            assert_eq!(seen, [200]);
        }

        /// `Debug` shows the vCPU and the dropped-event count (mutant: `Debug::fmt`
        /// -> `Ok(())`).
        #[test]
        fn debug_shows_vcpu_and_ignored_count() {
            let p = idle();
            let ev = setup(&p, 3);
            raise(ev.shared_info(), 3, 9);
            ev.scan(DEFAULT_BUDGET, |_| panic!("port 9 is not bound"));
            assert_eq!(
                format!("{ev:?}"),
                "EventChannels { vcpu: 3, ignored_total: 1, spurious_total: 0 }"
            );
        }
    }
}
