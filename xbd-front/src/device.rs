//! One virtual block device: handshake, negotiation, I/O API, events, teardown.

use core::fmt::Write as _;
use core::time::Duration;

use hypercall::abi::blkif;
use hypercall::{Platform, Port, SharedMem, SharedPages, Xen, PAGE_SIZE};
use xenbus::frontend::{BackendEvent, FrontendHandshake, Phase};
use xenbus::{Path, Snippet, Store, XenbusState, Xenstore};

use crate::error::{BadConfig, BrokenReason, Error};
use crate::features::{
    self, BackendFlags, Config, DiskInfo, FeatureFlags, FlushKind, GeometryKey, Offer, RawGeometry,
    MAX_QUEUES, MAX_RING_PAGE_ORDER,
};
use crate::grants::Grants;
use crate::io::{total_len, total_len_mut, BlkRing, Geometry, Io, OpKind, OpSpec, Stats, Tag};
use crate::Features;

/// The `protocol` value for this build's architecture (`XEN_IO_PROTO_ABI_NATIVE`);
/// `None` on architectures without one (the key is then not written).
pub const PROTOCOL: Option<&str> = if cfg!(target_arch = "x86_64") {
    Some("x86_64-abi")
} else if cfg!(target_arch = "x86") {
    Some("x86_32-abi")
} else if cfg!(any(target_arch = "arm", target_arch = "aarch64")) {
    Some("arm-abi")
} else {
    None
};

/// Attempts at ending a grant the backend still maps during teardown (each after a
/// [`Platform::wait`]), before giving up and keeping the page out of use.
const END_RETRIES: usize = 200;

/// Something the device noticed in xenstore ([`Device::poll_events`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// The backend rewrote `sectors` (online resize, row 11). The new size is in
    /// effect for later requests.
    CapacityChanged {
        /// Logical sectors before.
        old: u64,
        /// Logical sectors now.
        new: u64,
    },
    /// The backend wrote an unusable `sectors` value (0, absurd, garbage); the old
    /// capacity stays in effect.
    BadCapacity,
    /// The backend is going away (`Closing`/`Closed`, or `Unknown`: its state node
    /// vanished or became unreadable, e.g. its whole directory was removed): in-flight
    /// requests failed with [`Error::NotConnected`], the device is torn down and may
    /// [`Device::connect`] again (row 15).
    Disconnected(XenbusState),
}

/// Where the device is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not connected (new, closed, or the backend went away).
    Disconnected,
    /// Ready for I/O.
    Connected,
    /// The backend misbehaved; all I/O fails until [`Device::close`] and a new
    /// [`Device::connect`].
    Broken(BrokenReason),
}

/// One block device (`device/vbd/<devid>`).
///
/// `SLOTS`: ring requests in flight at most (also sizes the ring: 32 per page, up to
/// order 4). `SEGS`: pages per ring request (11 without indirect descriptors, up to
/// 512 with them). At the first connect the device allocates `SLOTS * SEGS` bounce
/// pages and `SLOTS` indirect pages; they are reused for every later connection.
/// The device itself is several KiB (shadows): box it or put it in a static.
///
/// Thread/context: one user at a time (`&mut self`). Call [`Device::poll`] when the
/// device's event channel ([`Device::port`]) fires, and [`Device::poll_events`] when
/// the xenstore event channel does.
pub struct Device<P: Platform, G: Grants, const SLOTS: usize = 32, const SEGS: usize = 32> {
    platform: P,
    grants: G,
    config: Config,
    devid: u32,
    hs: FrontendHandshake,
    info: Option<DiskInfo>,
    features: Option<Features>,
    io: Io<SLOTS, SEGS>,
    /// Every queue's ring pages, allocated once: queue `q`'s ring starts at page
    /// `q << (its largest order)`.
    ring_pages: Option<SharedPages>,
    ring_grefs: [[u32; 1 << MAX_RING_PAGE_ORDER]; MAX_QUEUES],
    /// One event channel per queue.
    ports: [Option<Port>; MAX_QUEUES],
    sectors_token: heapless::String<40>,
    sectors_path: Option<Path>,
}

impl<P: Platform, G: Grants, const SLOTS: usize, const SEGS: usize> core::fmt::Debug
    for Device<P, G, SLOTS, SEGS>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("devid", &self.devid)
            .field("state", &self.state())
            .field("info", &self.info)
            .field("features", &self.features)
            .finish()
    }
}

const NO_GREF: u32 = u32::MAX;

fn key_snippet(p: &str) -> Snippet {
    Snippet::tail(p.as_bytes())
}

/// The backend keys [`Device::connect`] reads once the backend is `Connected`
/// (its `connect()` writes them), in this order: every key of
/// [`BackendFlags::KEYS`], then the numbers and `mode` (the `BE_*` indices).
const BE_KEYS: [&str; BE_FLAGS + 8] = {
    let mut keys = [""; BE_FLAGS + 8];
    let mut i = 0;
    while i < BE_FLAGS {
        keys[i] = BackendFlags::KEYS[i].1;
        i += 1;
    }
    keys[BE_MAX_INDIRECT] = "feature-max-indirect-segments";
    keys[BE_GRANULARITY] = "discard-granularity";
    keys[BE_ALIGNMENT] = "discard-alignment";
    keys[BE_SECTORS] = "sectors";
    keys[BE_SECTOR_SIZE] = "sector-size";
    keys[BE_PHYSICAL_SECTOR_SIZE] = "physical-sector-size";
    keys[BE_INFO] = "info";
    keys[BE_MODE] = "mode";
    keys
};
/// The flag keys at the start of [`BE_KEYS`].
const BE_FLAGS: usize = BackendFlags::KEYS.len();
/// Index of `feature-max-indirect-segments` in [`BE_KEYS`].
const BE_MAX_INDIRECT: usize = BE_FLAGS;
/// Index of `discard-granularity` in [`BE_KEYS`].
const BE_GRANULARITY: usize = BE_FLAGS + 1;
/// Index of `discard-alignment` in [`BE_KEYS`].
const BE_ALIGNMENT: usize = BE_FLAGS + 2;
/// Index of `sectors` in [`BE_KEYS`].
const BE_SECTORS: usize = BE_FLAGS + 3;
/// Index of `sector-size` in [`BE_KEYS`].
const BE_SECTOR_SIZE: usize = BE_FLAGS + 4;
/// Index of `physical-sector-size` in [`BE_KEYS`].
const BE_PHYSICAL_SECTOR_SIZE: usize = BE_FLAGS + 5;
/// Index of `info` in [`BE_KEYS`].
const BE_INFO: usize = BE_FLAGS + 6;
/// Index of `mode` in [`BE_KEYS`].
const BE_MODE: usize = BE_FLAGS + 7;

/// The backend's ring offers, read before publishing ours (in one round trip).
const RING_KEYS: [&str; 3] = [
    "max-ring-page-order",
    "max-ring-pages",
    "multi-queue-max-queues",
];

/// `ring-refN` for each page of a multi-page ring.
const RING_REF_KEYS: [&str; 1 << MAX_RING_PAGE_ORDER] = [
    "ring-ref0",
    "ring-ref1",
    "ring-ref2",
    "ring-ref3",
    "ring-ref4",
    "ring-ref5",
    "ring-ref6",
    "ring-ref7",
    "ring-ref8",
    "ring-ref9",
    "ring-ref10",
    "ring-ref11",
    "ring-ref12",
    "ring-ref13",
    "ring-ref14",
    "ring-ref15",
];

/// Writes one queue's ring and event channel under `dir` (the device's node for
/// the classic layout, `queue-N` for multi-queue): `ring-ref` for a one-page
/// ring, else `ring-ref0..`, and `event-channel`, in at most two round trips.
#[inline(never)]
fn write_queue_keys<S: Store>(
    tx: &mut S,
    dir: &str,
    order: u32,
    grefs: [u32; 1 << MAX_RING_PAGE_ORDER],
    port: Option<Port>,
) -> Result<(), xenbus::Error> {
    let port = port.map_or(0, |p| p.0);
    if order == 0 {
        return tx.write_u32_keys(dir, &[("ring-ref", grefs[0]), ("event-channel", port)]);
    }
    write_ring_refs(tx, dir, order, grefs)?;
    tx.write_u32_keys(dir, &[("event-channel", port)])
}

/// Writes `ring-ref0..` of a multi-page ring under `dir`, in one round trip.
#[inline(never)]
fn write_ring_refs<S: Store>(
    tx: &mut S,
    dir: &str,
    order: u32,
    grefs: [u32; 1 << MAX_RING_PAGE_ORDER],
) -> Result<(), xenbus::Error> {
    let npages = (1usize << order).min(grefs.len());
    let mut refs = [("", 0u32); 1 << MAX_RING_PAGE_ORDER];
    for (i, (slot, g)) in refs.iter_mut().zip(grefs).take(npages).enumerate() {
        *slot = (RING_REF_KEYS.get(i).copied().unwrap_or_default(), g);
    }
    tx.write_u32_keys(dir, refs.get(..npages).unwrap_or_default())
}

/// A backend value as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BeVal {
    Missing,
    Num(u64),
    /// There, but not an unsigned decimal that fits 64 bits.
    Garbage,
}

impl BeVal {
    fn parse(v: &[u8]) -> BeVal {
        if v.is_empty() || v.len() > 20 {
            return BeVal::Garbage;
        }
        let mut n: u64 = 0;
        for &b in v {
            if !b.is_ascii_digit() {
                return BeVal::Garbage;
            }
            match n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
            {
                Some(x) => n = x,
                None => return BeVal::Garbage,
            }
        }
        BeVal::Num(n)
    }
}

// The helpers below take the key and build its path themselves, out of line: a
// connect reads a dozen keys, and paths built inline (264 bytes each) would each
// take their own stack slot in one frame (docs/stack.md).

#[inline(never)]
fn str_is<S: Store>(xs: &mut S, path: &str, want: &str) -> Result<bool, Error> {
    let mut buf = [0u8; 32];
    match xs.read_str(path, &mut buf) {
        Ok(s) => Ok(s == want),
        Err(xenbus::Error::MissingKey(_))
        | Err(xenbus::Error::Parse { .. })
        | Err(xenbus::Error::BufferTooSmall { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl<P: Platform, G: Grants, const SLOTS: usize, const SEGS: usize> Device<P, G, SLOTS, SEGS> {
    /// A device for `device/vbd/<devid>` (not connected yet). Returns the device
    /// by value (about 20 KiB with the default `SLOTS`/`SEGS`): on a small stack
    /// build it in place with [`Device::unbound`] + [`Device::bind`].
    pub fn new(platform: P, grants: G, devid: u32, config: Config) -> Result<Self, Error> {
        let mut d = Device::unbound(platform, grants, config);
        d.bind(devid)?;
        Ok(d)
    }

    /// A device not yet bound to a `device/vbd/<devid>` node: a `const fn`, so it
    /// can be built in a `static` (no stack used). [`Device::bind`] names the
    /// device; [`Device::connect`] fails until then.
    pub const fn unbound(platform: P, grants: G, config: Config) -> Self {
        Device {
            platform,
            grants,
            config,
            devid: 0,
            hs: FrontendHandshake::unset(),
            info: None,
            features: None,
            io: Io::new(),
            ring_pages: None,
            ring_grefs: [[NO_GREF; 1 << MAX_RING_PAGE_ORDER]; MAX_QUEUES],
            ports: [None; MAX_QUEUES],
            sectors_token: heapless::String::new(),
            sectors_path: None,
        }
    }

    /// Binds (in place) to `device/vbd/<devid>`, e.g. a number from
    /// [`crate::discover`]. Refused with [`Error::InUse`] while connected or
    /// connecting: [`Device::close`] first.
    pub fn bind(&mut self, devid: u32) -> Result<(), Error> {
        if self.io.connected() || !matches!(self.hs.phase(), Phase::Idle | Phase::Closed) {
            return Err(Error::InUse);
        }
        let mut node = heapless::String::<32>::new();
        let _ = write!(node, "device/vbd/{devid}");
        let mut token = heapless::String::<40>::new();
        let _ = write!(token, "xbd:{devid}:sectors");
        self.hs = FrontendHandshake::new(&node)?;
        self.devid = devid;
        self.sectors_token = token;
        self.sectors_path = None;
        Ok(())
    }

    /// The device id (virtual device number).
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The grant table.
    pub fn grants(&self) -> &G {
        &self.grants
    }

    /// The disk, once connected.
    pub fn info(&self) -> Option<&DiskInfo> {
        self.info.as_ref()
    }

    /// What this connection negotiated, once connected.
    pub fn features(&self) -> Option<Features> {
        let mut f = self.features?;
        let geo = self.io.geometry();
        f.flush = match geo.flush_op {
            Some(blkif::OP_FLUSH_DISKCACHE) => Some(FlushKind::FlushDiskCache),
            Some(_) => Some(FlushKind::Barrier),
            None => None,
        };
        if !geo.discard {
            f.discard = None;
        }
        Some(f)
    }

    /// Our event channel (queue 0's; deliver its events to [`Device::poll`]).
    pub fn port(&self) -> Option<Port> {
        self.ports[0]
    }

    /// Every queue's event channel, in queue order (one while not connected with
    /// several queues). Deliver the events of each to [`Device::poll`], which
    /// serves all queues.
    pub fn ports(&self) -> impl Iterator<Item = Port> + '_ {
        self.ports.iter().map_while(|p| *p)
    }

    /// Queues (rings) in use: 1 unless the backend offered
    /// `multi-queue-max-queues` and [`Config::queues`] asked for more.
    pub fn queues(&self) -> usize {
        self.io.queues()
    }

    /// Sends later submissions (the blocking helpers' too) to queue `queue`, e.g.
    /// the calling CPU's; `None` (the default after every connect) spreads them
    /// round-robin over the queues that have room. [`Error::NoSuchQueue`] for a
    /// queue the connection does not use.
    pub fn set_queue(&mut self, queue: Option<usize>) -> Result<(), Error> {
        self.io.set_queue(queue)
    }

    /// The queue a live request went out on.
    pub fn queue_of(&self, tag: Tag) -> Result<usize, Error> {
        self.io.queue_of(tag)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.io.stats()
    }

    /// The device state.
    pub fn state(&self) -> State {
        if let Some(r) = self.io.broken() {
            State::Broken(r)
        } else if self.io.connected() {
            State::Connected
        } else {
            State::Disconnected
        }
    }

    /// The largest request (bytes) [`Device::submit_read`]/`write` take at once.
    pub fn max_request_bytes(&self) -> usize {
        self.io.max_inflight() * self.io.bytes_per_request()
    }

    /// Ring requests still awaiting an answer (cancelled ones included).
    pub fn outstanding(&self) -> usize {
        self.io.outstanding()
    }

    /// Connects: handshake with the backend, negotiation, ring and bounce pages. On a
    /// refused configuration (rows 11, 13) the device closes its side and returns
    /// [`Error::BadConfig`]. Also reconnects after [`DeviceEvent::Disconnected`] or
    /// [`Device::close`].
    pub fn connect<Q: Platform>(&mut self, xs: &mut Xenstore<Q>) -> Result<(), Error> {
        if self.io.connected() {
            return Ok(());
        }
        let stuck = self.release_ring()
            + self.io.retry_stuck(&self.grants)
            + self.io.end_registered(&self.grants);
        if stuck > 0 {
            return Err(Error::GrantsStillMapped { count: stuck });
        }
        if !matches!(self.hs.phase(), Phase::Idle | Phase::Closed) {
            self.hs.closed(xs)?;
        }
        self.hs.start(xs)?;
        self.hs.wait_for_backend(xs, self.config.timeout)?;
        match self.connect_inner(xs) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.teardown(xs);
                Err(e)
            }
        }
    }

    fn connect_inner<Q: Platform>(&mut self, xs: &mut Xenstore<Q>) -> Result<(), Error> {
        let backend = self.hs.backend_id();
        // One round trip for the ring offers. `max-ring-pages` is the older
        // (FreeBSD) spelling of `max-ring-page-order`; `multi-queue-max-queues` is
        // lenient (garbage reads as absent: one queue, as Linux's
        // `xenbus_read_unsigned`).
        let mut offers = [None::<u64>; 3];
        xs.read_keys(self.hs.backend(), &RING_KEYS, &mut |i, r| {
            match r {
                Ok(v) => {
                    if let (Some(slot), BeVal::Num(n)) = (offers.get_mut(i), BeVal::parse(v)) {
                        *slot = Some(n);
                    }
                }
                Err(xenbus::Error::Xenstore(xenbus::ErrnoName::Enoent)) => {}
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        let max_order = offers[0].or(offers[1].map(|n| u64::from(63 - n.max(1).leading_zeros())));
        let nq = features::queues(offers[2], self.config.queues, SLOTS) as usize;
        let order = features::ring_order(
            max_order,
            SLOTS.div_ceil(nq),
            self.config.max_ring_page_order,
        );
        let npages = 1usize << order;

        // Ring pages: allocated once (for the most queues and the largest order we
        // ever use).
        let local = features::ring_order(Some(u64::MAX), SLOTS, self.config.max_ring_page_order);
        let stride = (1usize << local) * PAGE_SIZE;
        if self.ring_pages.is_none() {
            let most = features::queues(Some(u64::MAX), self.config.queues, SLOTS) as usize;
            self.ring_pages =
                Some(SharedPages::alloc(&self.platform, most << local).ok_or(Error::NoMemory)?);
        }
        let all = self.ring_pages.as_ref().ok_or(Error::NoMemory)?;
        let mut rings: [Option<(BlkRing, Port)>; MAX_QUEUES] = core::array::from_fn(|_| None);
        for (q, slot) in rings.iter_mut().enumerate().take(nq) {
            let ring_mem =
                ring_region(all, q * stride, npages * PAGE_SIZE).ok_or(Error::NoMemory)?;
            let ring = BlkRing::init(ring_mem).map_err(|_| Error::NoMemory)?;
            for i in 0..npages {
                let gfn = ring_mem.page_gfn(&self.platform, i).ok_or(Error::NoGfn)?;
                let r = self.grants.grant(backend, gfn, false)?;
                if let Some(g) = self.ring_grefs.get_mut(q).and_then(|g| g.get_mut(i)) {
                    *g = r.0;
                }
            }
            let port = Xen(&self.platform).evtchn_alloc_unbound(backend)?;
            if let Some(p) = self.ports.get_mut(q) {
                *p = Some(port);
            }
            *slot = Some((ring, port));
        }

        let persistent_wanted = self.config.persistent;
        let grefs = &self.ring_grefs;
        let ports = &self.ports;
        self.hs.publish(xs, XenbusState::Initialised, |tx, node| {
            if order != 0 {
                tx.write_u32(&Path::join(node, "ring-page-order")?, order)?;
            }
            if nq == 1 {
                // The classic layout (every backend knows it): the ring and the
                // event channel at the top level; a one-page ring's `ring-ref` and
                // the event channel go with the other keys below.
                if order != 0 {
                    write_ring_refs(tx, node, order, grefs[0])?;
                }
            } else {
                // Linux's multi-queue layout: `queue-N/` per ring.
                for q in 0..nq {
                    let mut dir = heapless::String::<16>::new();
                    let _ = write!(dir, "queue-{q}");
                    let (Some(g), Some(p)) = (grefs.get(q), ports.get(q)) else {
                        break;
                    };
                    write_queue_keys(tx, &Path::join(node, &dir)?, order, *g, *p)?;
                }
            }
            // The rest in one round trip (Store::write_keys).
            let mut nqs = heapless::String::<10>::new();
            let _ = write!(nqs, "{nq}");
            let mut evtchn = heapless::String::<10>::new();
            let _ = write!(evtchn, "{}", ports[0].map_or(0, |p| p.0));
            let mut ring0 = heapless::String::<10>::new();
            let _ = write!(ring0, "{}", grefs[0][0]);
            let persistent: &[u8] = if persistent_wanted { b"1" } else { b"0" };
            let mut keys: [(&str, &[u8]); 4] = [
                ("feature-persistent", persistent),
                ("", b""),
                ("", b""),
                ("", b""),
            ];
            let mut n = 1;
            let more = [
                PROTOCOL.map(|p| ("protocol", p.as_bytes())),
                (nq > 1).then_some(("multi-queue-num-queues", nqs.as_bytes())),
                (nq == 1).then_some(("event-channel", evtchn.as_bytes())),
                (nq == 1 && order == 0).then_some(("ring-ref", ring0.as_bytes())),
            ];
            for (k, v) in more.into_iter().flatten() {
                if let Some(slot) = keys.get_mut(n) {
                    *slot = (k, v);
                    n += 1;
                }
            }
            tx.write_keys(node, keys.get(..n).unwrap_or_default())
        })?;
        self.hs.wait_connected(xs, self.config.timeout)?;

        // The backend writes the rest when it connects (Linux blkback's `connect()`).
        let (mut offer, info) = self.read_connected(xs, max_order)?;
        offer.max_queues = offers[2];
        let (segs, indirect) =
            features::segments(offer.max_indirect_segments, SEGS, self.config.indirect);
        let persistent = persistent_wanted && offer.flags.contains(BackendFlags::PERSISTENT);
        let flush = if info.read_only {
            None
        } else {
            features::flush_kind(&offer)
        };
        let discard = if info.read_only {
            None
        } else {
            features::discard(&offer)
        };
        let geo = Geometry {
            segs: segs as usize,
            indirect,
            persistent,
            flush_op: flush.map(|f| match f {
                FlushKind::FlushDiskCache => blkif::OP_FLUSH_DISKCACHE,
                FlushKind::Barrier => blkif::OP_WRITE_BARRIER,
            }),
            discard: discard.is_some(),
            handle: self.devid as u16,
        };
        self.io.ensure_pages(&self.platform)?;
        self.io
            .start_queues(&self.grants, &mut rings, backend, geo)?;
        let geo = self.io.geometry();
        let mut flags = FeatureFlags::empty();
        flags.set(FeatureFlags::INDIRECT, geo.indirect);
        flags.set(FeatureFlags::PERSISTENT, persistent);
        self.features = Some(Features {
            queues: nq as u32,
            ring_page_order: order,
            max_inflight: self.io.max_inflight() as u32,
            segments_per_request: geo.segs as u32,
            flags,
            flush,
            discard,
        });
        self.info = Some(info);

        // Online resize: watch `sectors` (row 11).
        let sp = self.hs.backend_key("sectors")?;
        xs.watch(&sp, &self.sectors_token)?;
        self.sectors_path = Some(sp);
        Ok(())
    }

    /// Reads what the backend wrote when it connected (its offer and the disk's
    /// geometry): thirteen backend keys in one round trip
    /// ([`Xenstore::read_keys`]), then the frontend's `device-type`. Feature
    /// flags and tuning numbers are lenient (garbage reads as off/missing, as
    /// Linux's `xenbus_read_unsigned`); `sectors` must be there and, like
    /// `sector-size`, a number.
    fn read_connected<Q: Platform>(
        &mut self,
        xs: &mut Xenstore<Q>,
        max_order: Option<u64>,
    ) -> Result<(Offer, DiskInfo), Error> {
        let mut vals = [BeVal::Missing; BE_KEYS.len()];
        let mut mode_readonly = false;
        xs.read_keys(self.hs.backend(), &BE_KEYS, &mut |i, r| {
            let v = match r {
                Ok(v) => v,
                Err(xenbus::Error::Xenstore(xenbus::ErrnoName::Enoent)) => return Ok(()),
                Err(e) => return Err(e),
            };
            if i == BE_MODE {
                mode_readonly = v == b"r";
            }
            if let Some(slot) = vals.get_mut(i) {
                *slot = BeVal::parse(v);
            }
            Ok(())
        })?;
        let val = |i: usize| vals.get(i).copied().unwrap_or(BeVal::Missing);
        let lenient = |i: usize| match val(i) {
            BeVal::Num(n) => Some(n),
            _ => None,
        };
        let flag = |i: usize| lenient(i).is_some_and(|n| n != 0);
        let flags = BackendFlags::KEYS
            .iter()
            .enumerate()
            .filter(|&(i, _)| flag(i))
            .fold(BackendFlags::empty(), |acc, (_, &(f, _))| acc | f);
        let offer = Offer {
            flags,
            max_queues: None,
            max_ring_page_order: max_order,
            max_indirect_segments: lenient(BE_MAX_INDIRECT),
            discard_granularity: lenient(BE_GRANULARITY),
            discard_alignment: lenient(BE_ALIGNMENT),
        };
        let strict = |i: usize, key: &str| -> Result<Option<u64>, Error> {
            match val(i) {
                BeVal::Num(n) => Ok(Some(n)),
                BeVal::Missing => Ok(None),
                BeVal::Garbage => Err(Error::BadConfig {
                    key: key_snippet(&self.hs.backend_key(key)?),
                    problem: BadConfig::NotANumber,
                }),
            }
        };
        let sectors = match strict(BE_SECTORS, "sectors")? {
            Some(v) => v,
            None => {
                return Err(Error::Xenbus(xenbus::Error::MissingKey(key_snippet(
                    &self.hs.backend_key("sectors")?,
                ))))
            }
        };
        let raw = RawGeometry {
            sectors,
            sector_size: strict(BE_SECTOR_SIZE, "sector-size")?,
            physical_sector_size: lenient(BE_PHYSICAL_SECTOR_SIZE),
            info: lenient(BE_INFO),
            mode_readonly,
            cdrom: str_is(xs, &self.hs.frontend_key("device-type")?, "cdrom")?,
        };
        let info = features::geometry(&raw).map_err(|(k, problem)| {
            let key = match k {
                GeometryKey::Sectors => "sectors",
                GeometryKey::SectorSize => "sector-size",
            };
            match self.hs.backend_key(key) {
                Ok(p) => Error::BadConfig {
                    key: key_snippet(&p),
                    problem,
                },
                Err(e) => e.into(),
            }
        })?;
        Ok((offer, info))
    }

    /// Ends the ring grants; returns how many the backend still maps.
    fn release_ring(&mut self) -> usize {
        let mut left = 0;
        for r in self.ring_grefs.iter_mut().flatten() {
            if *r == NO_GREF {
                continue;
            }
            match self.grants.end(hypercall::GrantRef(*r)) {
                Ok(()) | Err(hypercall::gnttab::Error::NotInUse(_)) => *r = NO_GREF,
                Err(_) => left += 1,
            }
        }
        left
    }

    /// Local teardown: fail in-flight requests, close our state, end grants (waiting a
    /// bounded time for the backend to unmap), close the event channel.
    fn teardown<Q: Platform>(&mut self, xs: &mut Xenstore<Q>) {
        self.io.stop(&self.grants, Error::NotConnected);
        if let Some(sp) = self.sectors_path.take() {
            let _ = xs.unwatch(&sp, &self.sectors_token);
            // Bounded: a xenstored flooding events cannot hold the teardown here.
            let _ = xs.drain_watch_events_for(&self.sectors_token);
        }
        if self.hs.phase() != Phase::Closed && self.hs.phase() != Phase::Idle {
            let _ = self.hs.closed(xs);
        }
        // The backend unmaps once it sees Closed: give it a bounded time.
        for _ in 0..END_RETRIES {
            let left = self.release_ring()
                + self.io.retry_stuck(&self.grants)
                + self.io.end_registered(&self.grants);
            if left == 0 {
                break;
            }
            self.platform.wait();
        }
        for port in self.ports.iter_mut().filter_map(Option::take) {
            let _ = Xen(&self.platform).evtchn_close(port);
        }
        self.info = None;
        self.features = None;
    }

    /// Orderly close: our state `Closing`, wait (bounded) for the backend, then
    /// `Closed`; in-flight requests fail with [`Error::NotConnected`]. Grants the
    /// backend still maps afterwards stay out of use (and are retried by the next
    /// [`Device::connect`]); their count is returned.
    pub fn close<Q: Platform>(&mut self, xs: &mut Xenstore<Q>) -> Result<usize, Error> {
        self.io.stop(&self.grants, Error::NotConnected);
        if matches!(
            self.hs.phase(),
            Phase::Connected | Phase::Published | Phase::BackendReady
        ) {
            match self.hs.close(xs, self.config.timeout) {
                Ok(()) | Err(xenbus::Error::Timeout) => {}
                Err(e) => {
                    self.teardown(xs);
                    return Err(e.into());
                }
            }
        }
        self.teardown(xs);
        Ok(self.release_ring() + self.io.stuck() + self.io.end_registered(&self.grants))
    }

    /// Checks xenstore for backend changes: capacity changes and the backend closing
    /// (which tears the device down; row 15). Call it when the store event fires.
    pub fn poll_events<Q: Platform>(
        &mut self,
        xs: &mut Xenstore<Q>,
    ) -> Result<Option<DeviceEvent>, Error> {
        if let Some(BackendEvent::Closing(st)) = self.hs.poll_backend(xs)? {
            self.teardown(xs);
            return Ok(Some(DeviceEvent::Disconnected(st)));
        }
        let Some(sp) = self.sectors_path.clone() else {
            return Ok(None);
        };
        // Bounded (a xenstored flooding events cannot livelock the device); leftover
        // events only cause another, harmless re-read of `sectors`.
        if !xs.drain_watch_events_for(&self.sectors_token)? {
            return Ok(None);
        }
        let Some(info) = self.info else {
            return Ok(None);
        };
        let new = match xs.read_u64_opt(&sp) {
            Ok(Some(v)) => v,
            Ok(None) | Err(xenbus::Error::Parse { .. }) => {
                return Ok(Some(DeviceEvent::BadCapacity))
            }
            // The backend's directory went away under us (the nearest remaining
            // parent is dom0's): its `state` watch fires too, and the next call
            // reports the disconnect. The two events may come in either order.
            Err(xenbus::Error::Xenstore(xenbus::ErrnoName::Eacces)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if new == info.sectors {
            return Ok(None);
        }
        if new.checked_mul(u64::from(info.sector_size)).is_none() {
            return Ok(Some(DeviceEvent::BadCapacity));
        }
        if let Some(i) = self.info.as_mut() {
            i.sectors = new;
        }
        Ok(Some(DeviceEvent::CapacityChanged {
            old: info.sectors,
            new,
        }))
    }

    fn check_range(&self, lba: u64, len: usize, write: bool) -> Result<(DiskInfo, u64), Error> {
        let info = self.info.ok_or(match self.io.broken() {
            Some(r) => Error::Broken(r),
            None => Error::NotConnected,
        })?;
        if write && info.read_only {
            return Err(Error::ReadOnly);
        }
        let ss = info.sector_size as usize;
        if len == 0 || !len.is_multiple_of(ss) {
            return Err(Error::BadLength {
                len,
                sector_size: info.sector_size,
            });
        }
        let cap = info.capacity_bytes();
        let end = lba
            .checked_mul(u64::from(info.sector_size))
            .and_then(|b| b.checked_add(len as u64));
        match end {
            Some(e) if e <= cap => {}
            _ => {
                return Err(Error::OutOfRange {
                    lba,
                    len: len as u64,
                    capacity: cap,
                })
            }
        }
        Ok((info, lba * info.units_per_sector()))
    }

    /// Submits a read of `len` bytes at logical sector `lba`. The data is collected
    /// with [`Device::finish`].
    pub fn submit_read(&mut self, lba: u64, len: usize) -> Result<Tag, Error> {
        let (_, sector) = self.check_range(lba, len, false)?;
        self.io
            .submit(&self.platform, &self.grants, &OpSpec::read(sector, len))
    }

    /// Submits a write of `data` (a scatter list; total a multiple of the sector size)
    /// at logical sector `lba`. The data is copied before this returns.
    pub fn submit_write(&mut self, lba: u64, data: &[&[u8]]) -> Result<Tag, Error> {
        self.submit_write_from(lba, data, (0, 0), total_len(data))
    }

    /// [`Device::submit_write`] of the `len` bytes of `data` from `start` (buffer
    /// index, offset in it).
    fn submit_write_from(
        &mut self,
        lba: u64,
        data: &[&[u8]],
        start: (usize, usize),
        len: usize,
    ) -> Result<Tag, Error> {
        let (_, sector) = self.check_range(lba, len, true)?;
        let op = OpSpec::write(sector, data, len).starting_at(start.0, start.1);
        self.io.submit(&self.platform, &self.grants, &op)
    }

    /// Registers `pages` (whole pages of guest memory from
    /// [`SharedPages::alloc`], at most 4 MiB; the device keeps them) for direct
    /// I/O on this connection: [`Device::read_registered`] and
    /// [`Device::write_registered`] then move the data straight between the disk
    /// and these pages, one pass over it as `pread`/`pwrite` make, instead of
    /// through the device's bounce pages and a copy. Read and write them through
    /// [`Device::registered_pages`]. On failure the pages come back with the
    /// error.
    ///
    /// The contract the caller keeps (docs/blk-registered.md): the pages are
    /// granted (writable) to the backend while registered, so they must hold
    /// nothing the backend may not see (XSA-403); the device owns them until
    /// [`Device::unregister_pages`] gives them back, which it does only once the
    /// backend maps none of them (XSA-396). Their grants end with the connection
    /// ([`Device::close`], a backend going away); take them back and register
    /// them again for the next one. One registration at a time
    /// ([`Error::InUse`]).
    // No heap to box into: a refused registration hands the pages back by value.
    #[allow(clippy::result_large_err)]
    pub fn register_pages(&mut self, pages: SharedPages) -> Result<(), (Error, SharedPages)> {
        self.io.register(&self.platform, &self.grants, pages)
    }

    /// Ends the registration ([`Device::register_pages`]) and gives the pages
    /// back. Refused with [`Error::InUse`] while a request on them is in flight,
    /// and with [`Error::GrantsStillMapped`] while the backend still maps some
    /// (they stay registered; retry later). With persistent grants a backend
    /// (Linux's, shim-hv's) keeps every page it has used mapped until the
    /// connection ends, so the pages then come back after [`Device::close`].
    pub fn unregister_pages(&mut self) -> Result<SharedPages, Error> {
        self.io.release_registered(&self.grants)
    }

    /// The registered pages, if any (borrowed from the device).
    pub fn registered_pages(&self) -> Option<SharedMem<'_>> {
        self.io.registered()
    }

    /// Submits a read of `len` bytes at logical sector `lba` straight into the
    /// registered pages at byte `offset` (a multiple of the page size). Retire it
    /// with [`Device::finish`] and no buffers ([`Error::InRegisteredPages`]
    /// otherwise); the data is then in the registered pages.
    pub fn submit_read_registered(
        &mut self,
        lba: u64,
        offset: usize,
        len: usize,
    ) -> Result<Tag, Error> {
        self.submit_registered(OpKind::Read, lba, offset, len)
    }

    /// Submits a write of `len` bytes at logical sector `lba` straight from the
    /// registered pages at byte `offset` (a multiple of the page size), which
    /// must not change until the request completes.
    pub fn submit_write_registered(
        &mut self,
        lba: u64,
        offset: usize,
        len: usize,
    ) -> Result<Tag, Error> {
        self.submit_registered(OpKind::Write, lba, offset, len)
    }

    fn submit_registered(
        &mut self,
        kind: OpKind,
        lba: u64,
        offset: usize,
        len: usize,
    ) -> Result<Tag, Error> {
        let (_, sector) = self.check_range(lba, len, kind == OpKind::Write)?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Error::BadLength {
                len: offset,
                sector_size: PAGE_SIZE as u32,
            });
        }
        // The data is in the registered pages: no scatter list.
        let op = OpSpec {
            kind,
            ..OpSpec::read(sector, len)
        }
        .registered(offset / PAGE_SIZE);
        self.io.submit(&self.platform, &self.grants, &op)
    }

    /// Blocking read of `len` bytes at logical sector `lba` into the registered
    /// pages at byte `offset` (a multiple of the page size), pipelined like
    /// [`Device::read`]: one pass over the data.
    pub fn read_registered(
        &mut self,
        lba: u64,
        offset: usize,
        len: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.registered_blocking(OpKind::Read, lba, offset, len, timeout)
    }

    /// Blocking write of `len` bytes from the registered pages at byte `offset`
    /// to logical sector `lba` (see [`Device::read_registered`]).
    pub fn write_registered(
        &mut self,
        lba: u64,
        offset: usize,
        len: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.registered_blocking(OpKind::Write, lba, offset, len, timeout)
    }

    fn registered_blocking(
        &mut self,
        kind: OpKind,
        lba: u64,
        offset: usize,
        len: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        let write = kind == OpKind::Write;
        let info = self.check_range(lba, len, write)?.0;
        let ss = info.sector_size as usize;
        if ss > PAGE_SIZE || !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Error::BadLength {
                len: offset,
                sector_size: PAGE_SIZE as u32,
            });
        }
        let deadline = self.deadline(timeout);
        // Pieces in whole pages (each starts a page of the registered pages):
        // `at` counts pages from the start.
        let per_page = (PAGE_SIZE / ss) as u64;
        let t = Transfer {
            lba: 0,
            sector_size: PAGE_SIZE,
            total: len,
            deadline,
            plug: !write,
        };
        self.pipeline(
            t,
            |d, at, n| {
                d.submit_registered(
                    kind,
                    lba + at * per_page,
                    offset + at as usize * PAGE_SIZE,
                    n,
                )
            },
            |d, tag| d.io.finish(tag, &mut []).map(drop),
        )
    }

    /// Submits a cache flush.
    pub fn submit_flush(&mut self) -> Result<Tag, Error> {
        let info = self.info.ok_or(Error::NotConnected)?;
        if self.io.geometry().flush_op.is_none() {
            return Err(if info.read_only {
                Error::ReadOnly
            } else {
                Error::NotSupported
            });
        }
        self.io
            .submit(&self.platform, &self.grants, &OpSpec::flush())
    }

    /// Submits a discard of `count` logical sectors at `lba` (`secure`: secure erase,
    /// only if the backend offers `discard-secure`).
    pub fn submit_discard(&mut self, lba: u64, count: u64, secure: bool) -> Result<Tag, Error> {
        let info = self.info.ok_or(Error::NotConnected)?;
        let len = count
            .checked_mul(u64::from(info.sector_size))
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(Error::OutOfRange {
                lba,
                len: u64::MAX,
                capacity: info.capacity_bytes(),
            })?;
        let (_, sector) = self.check_range(lba, len, true)?;
        let f = self.features().and_then(|f| f.discard);
        let Some(d) = f else {
            return Err(Error::NotSupported);
        };
        if secure && !d.secure {
            return Err(Error::NotSupported);
        }
        let op = OpSpec::discard(sector, len, secure);
        self.io.submit(&self.platform, &self.grants, &op)
    }

    /// Holds submissions back until [`Device::unplug`] (one publication and at most one
    /// notification for a batch).
    pub fn plug(&mut self) {
        let _ = self.io.set_plugged(&self.platform, &self.grants, true);
    }

    /// Publishes everything submitted while plugged.
    pub fn unplug(&mut self) -> Result<(), Error> {
        self.io.set_plugged(&self.platform, &self.grants, false)
    }

    /// Consumes responses (call when the event channel fires); returns how many. It
    /// re-arms the notification before returning (`RING_FINAL_CHECK_FOR_RESPONSES`),
    /// so no event is lost. A misbehaving backend breaks the device (typed error).
    pub fn poll(&mut self) -> Result<usize, Error> {
        let mut n = 0;
        loop {
            n += self.io.poll(&self.grants)?;
            if !self.io.final_check(&self.grants)? {
                return Ok(n);
            }
        }
    }

    /// [`Device::poll`] with notification coalescing, for callers keeping many
    /// requests in flight: when nothing is left to consume, it asks the backend to
    /// notify only once `batch` more responses are ready (capped at the requests
    /// published and unanswered, so the wake-up is always owed by a backend that
    /// answers; a backend that does not is what timeouts are for, as with
    /// [`Device::poll`]). Completions then arrive in groups: fewer notifications and
    /// wake-ups, at the cost of the first completions of a group waiting for the
    /// last. `batch` 0 or 1 is [`Device::poll`].
    pub fn poll_batched(&mut self, batch: usize) -> Result<usize, Error> {
        let batch = u32::try_from(batch).unwrap_or(u32::MAX);
        let mut n = 0;
        loop {
            n += self.io.poll(&self.grants)?;
            if !self.io.final_check_batched(&self.grants, batch)? {
                return Ok(n);
            }
        }
    }

    /// Consumes responses without re-arming the notification (for callers that poll
    /// in a loop and call [`Device::poll`] before they sleep).
    pub fn poll_nowait(&mut self) -> Result<usize, Error> {
        self.io.poll(&self.grants)
    }

    /// The oldest completed request not yet finished.
    pub fn next_completion(&self) -> Option<Tag> {
        self.io.next_done()
    }

    /// Whether `tag` completed.
    pub fn is_done(&self, tag: Tag) -> Result<bool, Error> {
        self.io.is_done(tag)
    }

    /// The kind and byte length of a live request.
    pub fn describe(&self, tag: Tag) -> Result<(OpKind, usize), Error> {
        self.io.describe(tag)
    }

    /// Retires a completed request: for reads, copies the data into `bufs` (their
    /// total must equal the request's length; `&mut []` drops the data, and is what
    /// other requests take). Returns the bytes transferred, or the request's error.
    pub fn finish(&mut self, tag: Tag, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        self.io.finish(tag, bufs)
    }

    /// Takes a completed read's data where it lies, in the device's bounce pages,
    /// instead of copying it into caller buffers ([`Device::finish`]): the returned
    /// [`ReadData`] retires the request when dropped. A failed read returns its
    /// error (and is retired).
    ///
    /// This saves the copy [`Device::finish`] makes, which is half the work of a
    /// large read. The pages are shared memory: while the connection uses
    /// persistent grants the backend keeps them mapped, so the data is handed out as
    /// [`SharedMem`] regions, read once by copying (see [`ReadData::read`]), never as
    /// `&[u8]`.
    pub fn take_read(&mut self, tag: Tag) -> Result<ReadData<'_, P, G, SLOTS, SEGS>, Error> {
        let checked = self.io.read_regions(tag).map(drop);
        match checked {
            Ok(()) => {
                let len = self.io.describe(tag)?.1;
                Ok(ReadData {
                    dev: self,
                    tag,
                    len,
                })
            }
            Err(e @ (Error::UnknownTag | Error::NotDone | Error::NotARead)) => Err(e),
            Err(e) => {
                // The read failed: retire it, pass its error on.
                let _ = self.io.finish(tag, &mut []);
                Err(e)
            }
        }
    }

    /// Blocking read of `len` bytes (a multiple of the sector size, at most
    /// [`Device::max_request_bytes`]) at logical sector `lba`, left in place: see
    /// [`Device::take_read`]. Waits like [`Device::read`].
    pub fn read_in_place(
        &mut self,
        lba: u64,
        len: usize,
        timeout: Duration,
    ) -> Result<ReadData<'_, P, G, SLOTS, SEGS>, Error> {
        let mut deadline = self.deadline(timeout);
        let tag = self.retry_busy(&mut deadline, |d| d.submit_read(lba, len))?;
        self.wait_done(tag, &mut deadline)?;
        self.take_read(tag)
    }

    /// Stops waiting for `tag` (row 14). Its grants stay out of reuse until the
    /// backend answers or the device is torn down and ending them succeeds.
    pub fn cancel(&mut self, tag: Tag) -> Result<(), Error> {
        self.io.cancel(tag)
    }

    fn wait_done(&mut self, tag: Tag, deadline: &mut Deadline) -> Result<(), Error> {
        // The clock is read only once the answer is not there at the first look
        // (a backend that answers inline, or quickly, costs no clock read).
        let mut spin = None;
        loop {
            self.io.poll(&self.grants)?;
            if self.io.is_done(tag)? {
                return Ok(());
            }
            let deadline = deadline.at(&self.platform);
            let spin = spin.get_or_insert_with(|| self.spin_budget(deadline));
            if self.spinning(spin) {
                continue;
            }
            if self.io.final_check(&self.grants)? {
                continue;
            }
            if self.platform.now_ns() >= deadline {
                self.io.cancel(tag)?;
                return Err(Error::Timeout);
            }
            self.platform.wait();
        }
    }

    /// The polling budget of one blocking wait: [`Config::poll_spin`] from now
    /// (never past `deadline`), and at most one poll per 32 ns of it, so a platform
    /// clock that does not advance cannot make it spin forever.
    fn spin_budget(&self, deadline: u64) -> Spin {
        let ns = u64::try_from(self.config.poll_spin.as_nanos()).unwrap_or(u64::MAX);
        if ns == 0 {
            return Spin { until: 0, left: 0 };
        }
        Spin {
            until: self.platform.now_ns().saturating_add(ns).min(deadline),
            left: ns / 32,
        }
    }

    /// Whether to poll once more (after [`Platform::relax`]) or go to sleep.
    fn spinning(&self, spin: &mut Spin) -> bool {
        if spin.left == 0 || self.platform.now_ns() >= spin.until {
            return false;
        }
        spin.left -= 1;
        self.platform.relax();
        true
    }

    /// Submits, waiting (until `deadline`) while every slot is busy with other
    /// requests.
    fn retry_busy(
        &mut self,
        deadline: &mut Deadline,
        mut submit: impl FnMut(&mut Self) -> Result<Tag, Error>,
    ) -> Result<Tag, Error> {
        let mut spin = None;
        loop {
            match submit(self) {
                Err(Error::Busy) => {}
                other => return other,
            }
            self.io.poll(&self.grants)?;
            let deadline = deadline.at(&self.platform);
            let spin = spin.get_or_insert_with(|| self.spin_budget(deadline));
            if self.spinning(spin) {
                continue;
            }
            if self.io.final_check(&self.grants)? {
                continue;
            }
            if self.platform.now_ns() >= deadline {
                return Err(Error::Timeout);
            }
            self.platform.wait();
        }
    }

    /// The time limit of a blocking call taking `timeout`: see [`Deadline`].
    fn deadline(&self, timeout: Duration) -> Deadline {
        Deadline {
            timeout: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            at: None,
        }
    }

    /// Blocking read of `bufs` (total a multiple of the sector size) from logical
    /// sector `lba`; `timeout` bounds the waiting, counted from the call's first
    /// wait (on expiry the requests still pending are cancelled:
    /// [`Error::Timeout`]). Any number of buffers.
    ///
    /// A read of more than 128 KiB is pipelined: it goes out as up to
    /// four requests at once, and each piece is copied into `bufs` while
    /// the backend is still reading the next ones, so most of the copy out of the
    /// bounce pages overlaps the backend's work. The pieces shrink (8, 4, 2, 1
    /// fifteenths of the read), so the last copy, which nothing overlaps, is
    /// short; a write's pieces grow the same way.
    pub fn read(
        &mut self,
        lba: u64,
        bufs: &mut [&mut [u8]],
        timeout: Duration,
    ) -> Result<(), Error> {
        let total = total_len_mut(bufs);
        let (info, sector) = self.check_range(lba, total, false)?;
        let mut deadline = self.deadline(timeout);
        if total <= PIPELINE_MIN && total <= self.chunk_bytes(info.sector_size) {
            // One request (a small read): submit, wait, copy out; what the
            // pipeline below would do for it, without its bookkeeping.
            let spec = OpSpec::read(sector, total);
            let tag = self.retry_busy(&mut deadline, |d| {
                d.io.submit(&d.platform, &d.grants, &spec)
            })?;
            if let Err(e) = self.wait_done(tag, &mut deadline) {
                let _ = self.io.cancel(tag);
                return Err(e);
            }
            return self.io.finish_from(tag, bufs, &mut (0, 0)).map(drop);
        }
        let mut cursor = (0usize, 0usize);
        let t = Transfer {
            lba,
            sector_size: info.sector_size as usize,
            total,
            deadline,
            plug: true,
        };
        self.pipeline(
            t,
            |d, at, n| d.submit_read(at, n),
            |d, tag| d.io.finish_from(tag, bufs, &mut cursor).map(drop),
        )
    }

    /// Blocking write of `bufs` at logical sector `lba` (see [`Device::read`]):
    /// pieces are published as soon as they are copied in, so the backend writes
    /// one while the next is being copied.
    pub fn write(&mut self, lba: u64, bufs: &[&[u8]], timeout: Duration) -> Result<(), Error> {
        let total = total_len(bufs);
        let info = self.check_range(lba, total, true)?.0;
        let deadline = self.deadline(timeout);
        let mut cursor = (0usize, 0usize);
        let t = Transfer {
            lba,
            sector_size: info.sector_size as usize,
            total,
            deadline,
            plug: false,
        };
        self.pipeline(
            t,
            |d, at, n| {
                let t = d.submit_write_from(at, bufs, cursor, n)?;
                advance(bufs, &mut cursor, n);
                Ok(t)
            },
            |d, tag| d.io.finish(tag, &mut []).map(drop),
        )
    }

    /// Moves `t.total` bytes from `t.lba` in pieces, up to `PIPELINE` (4) in
    /// flight: `submit` issues the piece at a logical sector, `complete` retires
    /// the oldest piece once done (pieces complete in order). On an error the
    /// pieces still out are cancelled.
    fn pipeline(
        &mut self,
        t: Transfer,
        mut submit: impl FnMut(&mut Self, u64, usize) -> Result<Tag, Error>,
        mut complete: impl FnMut(&mut Self, Tag) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let Transfer {
            lba,
            sector_size,
            total,
            mut deadline,
            plug,
        } = t;
        let ss = sector_size.max(1);
        let chunk = self.chunk_bytes(sector_size as u32);
        let mut k = 0u32;
        let mut pending: heapless::Deque<Tag, PIPELINE> = heapless::Deque::new();
        let mut sent = 0usize;
        let r = loop {
            if sent < total && !pending.is_full() {
                if plug {
                    self.plug();
                }
                let mut failed = None;
                while sent < total && !pending.is_full() {
                    let n = piece_len(total, ss, chunk, k, plug).min(total - sent);
                    let at = lba + (sent / ss) as u64;
                    let tag = if pending.is_empty() {
                        // None of ours in flight: wait while others hold every slot.
                        self.retry_busy(&mut deadline, |d| submit(d, at, n))
                    } else {
                        match submit(self, at, n) {
                            Err(Error::Busy) => break,
                            r => r,
                        }
                    };
                    match tag.map(|t| pending.push_back(t)) {
                        Ok(Ok(())) => {
                            sent += n;
                            k += 1;
                        }
                        Ok(Err(t)) => {
                            // Cannot happen (checked is_full); do not lose the tag.
                            let _ = self.io.cancel(t);
                            break;
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                let published = if plug { self.unplug() } else { Ok(()) };
                if let Some(e) = failed.or(published.err()) {
                    break Err(e);
                }
            }
            let Some(tag) = pending.pop_front() else {
                break Ok(());
            };
            if let Err(e) = self.wait_done(tag, &mut deadline) {
                let _ = self.io.cancel(tag);
                break Err(e);
            }
            if let Err(e) = complete(self, tag) {
                break Err(e);
            }
        };
        if r.is_err() {
            // Whatever is still out is no longer wanted (its slots are freed when
            // the backend answers).
            while let Some(t) = pending.pop_front() {
                let _ = self.io.cancel(t);
            }
        }
        r
    }

    /// Blocking flush.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        let mut deadline = self.deadline(timeout);
        let tag = self.retry_busy(&mut deadline, |d| d.submit_flush())?;
        self.wait_done(tag, &mut deadline)?;
        self.io.finish(tag, &mut []).map(drop)
    }

    /// Blocking discard of `count` logical sectors at `lba`.
    pub fn discard(&mut self, lba: u64, count: u64, timeout: Duration) -> Result<(), Error> {
        let mut deadline = self.deadline(timeout);
        let tag = self.retry_busy(&mut deadline, |d| d.submit_discard(lba, count, false))?;
        self.wait_done(tag, &mut deadline)?;
        self.io.finish(tag, &mut []).map(drop)
    }

    /// Bytes per blocking sub-request: what fits the ring when it is otherwise idle,
    /// rounded down to the sector size.
    fn chunk_bytes(&self, sector_size: u32) -> usize {
        let m = self.max_request_bytes().max(sector_size as usize);
        m - m % sector_size as usize
    }
}

/// Bytes of piece `k` (from 0) of a blocking transfer of `total` bytes in
/// sectors of `ss` bytes, at most `chunk` bytes a request: all of it up to
/// 128 KiB (latency dominates); above, powers of two of a fifteenth of it (at
/// least 16 KiB), growing for writes (1, 2, 4, 8 fifteenths: the copy in of the
/// first piece, the only one nothing overlaps, is small) and shrinking for reads
/// (`shrink`: 8, 4, 2, 1, so the copy out of the last is small); never more than
/// `chunk`.
fn piece_len(total: usize, ss: usize, chunk: usize, k: u32, shrink: bool) -> usize {
    let ss = ss.max(1);
    let p = if total <= PIPELINE_MIN {
        total
    } else {
        let unit = (total.div_ceil(15).div_ceil(ss) * ss).max(PIPELINE_MIN / 8);
        let shift = if shrink {
            3u32.saturating_sub(k)
        } else {
            k.min(3)
        };
        unit << shift
    };
    p.clamp(ss, chunk.max(ss))
}

/// A blocking call's time limit. The clock starts at the call's first wait (its
/// first look that finds the answer not there yet, or every slot busy), not at
/// its start: what comes before is bounded work of our own (checks, copying
/// write data in, submitting), which is never waited on, so the call still
/// ends within the timeout of its first wait, and a call answered at once (a
/// backend answering on the notifying thread) reads no clock at all.
struct Deadline {
    /// The timeout (ns).
    timeout: u64,
    /// Platform time (ns) of the limit, once the clock has started.
    at: Option<u64>,
}

impl Deadline {
    /// The limit (platform time, ns), starting the clock now if it has not
    /// started yet.
    fn at<P: Platform>(&mut self, p: &P) -> u64 {
        *self
            .at
            .get_or_insert_with(|| p.now_ns().saturating_add(self.timeout))
    }
}

/// What is left of a blocking wait's polling budget.
struct Spin {
    until: u64,
    left: u64,
}

/// A completed read whose data stays in the device's bounce pages (see
/// [`Device::take_read`]). Borrows the device; dropping it retires the request.
///
/// The pages held only this backend's data (XSA-403 rules as for every read), but
/// they are shared memory: copy what you need out once ([`ReadData::read`], or
/// [`SharedMem::read`] on [`ReadData::regions`]), then validate the copy.
///
/// The regions cannot outlive the read (the pages go back to the device for the
/// next request, and a dropped device frees them):
///
/// ```compile_fail,E0505
/// use core::time::Duration;
/// use hypercall::Platform;
/// use xbd_front::{Device, Grants};
///
/// fn escape<P: Platform, G: Grants>(d: &mut Device<P, G, 4, 4>) {
///     let data = d.read_in_place(0, 512, Duration::from_secs(1)).unwrap();
///     let view = data.regions().next().unwrap();
///     drop(data); // error[E0505]: cannot move out of `data` because it is borrowed
///     let mut b = [0u8; 1];
///     view.read(0, &mut b);
/// }
/// ```
///
/// nor the device:
///
/// ```compile_fail,E0505
/// use core::time::Duration;
/// use hypercall::Platform;
/// use xbd_front::{Device, Grants};
///
/// fn escape<P: Platform, G: Grants>(mut d: Device<P, G, 4, 4>) {
///     let data = d.read_in_place(0, 512, Duration::from_secs(1)).unwrap();
///     let view = data.regions().next().unwrap();
///     drop(d); // error[E0505]: cannot move out of `d` because it is borrowed
///     let mut b = [0u8; 1];
///     view.read(0, &mut b);
/// }
/// ```
pub struct ReadData<'d, P: Platform, G: Grants, const SLOTS: usize, const SEGS: usize> {
    dev: &'d mut Device<P, G, SLOTS, SEGS>,
    tag: Tag,
    len: usize,
}

impl<P: Platform, G: Grants, const SLOTS: usize, const SEGS: usize>
    ReadData<'_, P, G, SLOTS, SEGS>
{
    /// Bytes read.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was read (never, for a request that was submitted).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data as bounce-page regions, in order: one per ring request the read
    /// needed, each up to [`Device::max_request_bytes`] / in-flight requests.
    ///
    /// The views borrow the device: they cannot outlive it (its bounce pages are
    /// freed when it is dropped).
    pub fn regions(&self) -> impl Iterator<Item = SharedMem<'_>> + '_ {
        self.dev.io.read_regions(self.tag).into_iter().flatten()
    }

    /// Copies `buf.len()` bytes starting at byte `offset` of the data into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset.checked_add(buf.len()).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(Error::BeyondData {
                offset,
                len: buf.len(),
                size: self.len,
            });
        }
        let mut at = 0usize; // data offset of the current region
        let mut done = 0usize;
        for r in self.regions() {
            let want = offset + done;
            if done == buf.len() {
                break;
            }
            if want < at + r.len() {
                let in_r = want - at;
                let k = (r.len() - in_r).min(buf.len() - done);
                if let Some(dst) = buf.get_mut(done..done + k) {
                    r.read(in_r, dst);
                }
                done += k;
            }
            at += r.len();
        }
        if done < buf.len() {
            // The regions ended early (cannot happen while the request is live).
            return Err(Error::BeyondData {
                offset,
                len: buf.len(),
                size: at,
            });
        }
        Ok(())
    }
}

/// Dropping a device ends every grant it holds (in-flight requests fail), closes
/// its event channel and returns its ring, bounce and indirect pages to the
/// platform. It does not wait: pages whose grant the backend still maps are never
/// freed nor reused (XSA-396), their grant refs stay in use in the table. It
/// cannot reach xenstore either: call [`Device::close`] first, which tells the
/// backend, gives it a bounded time to let go and leaves the device `Closed`.
impl<P: Platform, G: Grants, const SLOTS: usize, const SEGS: usize> Drop
    for Device<P, G, SLOTS, SEGS>
{
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        self.io.stop(&self.grants, Error::NotConnected);
        self.io.retry_stuck(&self.grants);
        for port in self.ports.iter_mut().filter_map(Option::take) {
            let _ = Xen(&self.platform).evtchn_close(port);
        }
        if self.release_ring() == 0 {
            if let Some(ring) = self.ring_pages.take() {
                // SAFETY: `ring` is the whole allocation `connect_inner` made from
                // this platform; every ring grant ended (release_ring is 0), the ring
                // (io.stop) and any `ReadData` (it borrows the device) are gone, and
                // the device keeps no other copy.
                unsafe { ring.free(&self.platform) };
            }
        }
        // Registered pages still here cannot be handed back: dropped (leaked,
        // never reused) whether or not their grants could be ended.
        let _ = self.io.release_registered(&self.grants);
        if let Some(table) = self.io.take_reg_table() {
            // SAFETY: the io engine's own allocation from this platform (one page
            // of grant refs, never shared); handed out only once no registration
            // is left, so nothing reads it any more.
            unsafe { table.free(&self.platform) };
        }
        if let Some((bounce, indirect)) = self.io.take_pages() {
            // SAFETY: the io engine's own allocations from this platform
            // (`ensure_pages`); take_pages hands them out only with no slot stuck and
            // the ring stopped, so no grant on them is active and no request or view
            // uses them.
            unsafe {
                bounce.free(&self.platform);
                indirect.free(&self.platform);
            }
        }
    }
}

impl<P: Platform, G: Grants, const SLOTS: usize, const SEGS: usize> Drop
    for ReadData<'_, P, G, SLOTS, SEGS>
{
    fn drop(&mut self) {
        // A done, successful read: retiring it cannot fail.
        let _ = self.dev.io.finish(self.tag, &mut []);
    }
}

impl<P: Platform, G: Grants, const SLOTS: usize, const SEGS: usize> core::fmt::Debug
    for ReadData<'_, P, G, SLOTS, SEGS>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadData")
            .field("tag", &self.tag)
            .field("len", &self.len)
            .finish()
    }
}

/// Requests a blocking [`Device::read`] or [`Device::write`] keeps in flight at
/// once.
const PIPELINE: usize = 4;
/// Blocking reads up to this size go out as one request.
const PIPELINE_MIN: usize = 128 * 1024;

/// Moves `cursor` (buffer index, offset in it) `n` bytes on through `bufs`.
fn advance(bufs: &[&[u8]], cursor: &mut (usize, usize), mut n: usize) {
    let (mut i, mut off) = *cursor;
    while n > 0 {
        let Some(b) = bufs.get(i) else { break };
        let k = (b.len() - off.min(b.len())).min(n);
        n -= k;
        off += k;
        if off >= b.len() {
            i += 1;
            off = 0;
        }
    }
    *cursor = (i, off);
}

/// Bytes `offset..offset + len` of the device's ring pages as a ring's region.
///
/// Owner-based, inside the device: the ring ([`BlkRing`], kept in the private
/// `Io` rings, never handed out except by borrow) outlives any borrow of
/// `pages`, so its region cannot carry that borrow's lifetime; it gets `'static`,
/// and the device upholds the real bound itself: `ring_pages` are freed only in
/// `Drop for Device`, after `Io::stop` dropped the ring, and are otherwise kept
/// (and reused) for the device's lifetime.
#[allow(unsafe_code)]
fn ring_region(pages: &SharedPages, offset: usize, len: usize) -> Option<SharedMem<'static>> {
    let m = pages.mem().sub(offset, len)?;
    // SAFETY: the range lies in the device's own allocation (`sub` checked it),
    // which stays allocated and is touched only through `SharedMem` until
    // `Drop for Device` frees it — after the ring holding this region is gone
    // (see above). No Rust reference points into it.
    Some(unsafe { SharedMem::new(m.as_non_null(), m.len()) })
}

/// A blocking transfer as [`Device`]'s pipeline moves it.
struct Transfer {
    /// First logical sector (or page, for the registered pages).
    lba: u64,
    /// Bytes per `lba` unit.
    sector_size: usize,
    /// Bytes to move.
    total: usize,
    /// When to give up.
    deadline: Deadline,
    /// Publish each batch of submissions at once (reads) rather than each as it
    /// is made (writes, whose submission is the copy); also the pieces' order
    /// of sizes: shrinking for reads, growing for writes
    /// ([`piece_len`]).
    plug: bool,
}

#[cfg(test)]
mod piece_tests {
    use super::{piece_len, PIPELINE, PIPELINE_MIN};

    /// The pieces of a blocking transfer: one up to 128 KiB; above, 1, 2, 4, 8
    /// fifteenths for writes and 8, 4, 2, 1 for reads (whole sectors), so that
    /// what nothing overlaps (a write's first copy in, a read's last copy out)
    /// is a fifteenth; at least 16 KiB; within the ring's request size; and at
    /// most `PIPELINE` pieces when no request size limits them.
    #[test]
    fn pieces_grow_for_writes_and_shrink_for_reads() {
        let mib = 1 << 20;
        let unit = 70_144; // 1 MiB / 15, rounded up to 512-byte sectors
        let w: [usize; 5] = core::array::from_fn(|k| piece_len(mib, 512, mib, k as u32, false));
        assert_eq!(w, [unit, 2 * unit, 4 * unit, 8 * unit, 8 * unit]);
        let r: [usize; 5] = core::array::from_fn(|k| piece_len(mib, 512, mib, k as u32, true));
        assert_eq!(r, [8 * unit, 4 * unit, 2 * unit, unit, unit]);
        for shrink in [false, true] {
            let covered: usize = (0..PIPELINE as u32)
                .map(|k| piece_len(mib, 512, mib, k, shrink))
                .sum();
            assert!(covered >= mib, "{covered}");
            assert_eq!(piece_len(PIPELINE_MIN, 512, mib, 0, shrink), PIPELINE_MIN);
            assert_eq!(piece_len(PIPELINE_MIN, 512, 4096, 2, shrink), 4096);
            assert_eq!(piece_len(3 * 512, 512, mib, 0, shrink), 3 * 512);
            // A ring that takes 128 KiB a request caps every piece.
            for k in 0..4 {
                let free = piece_len(mib, 512, mib, k, shrink);
                let capped = piece_len(mib, 512, PIPELINE_MIN, k, shrink);
                assert_eq!(capped, free.min(PIPELINE_MIN));
            }
        }
        // 129 KiB: a fifteenth is under 16 KiB, so pieces start at 16 KiB.
        assert_eq!(piece_len(PIPELINE_MIN + 1024, 512, mib, 0, false), 16384);
        assert_eq!(piece_len(mib, 4096, mib, 0, false), 73_728);
    }
}
