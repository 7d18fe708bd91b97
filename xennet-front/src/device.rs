//! The network device: connect through xenstore, then send and receive frames.

use core::fmt::Write as _;
use core::time::Duration;

use hypercall::abi::netif::{self, ExtraInfo, TxFlags};
use hypercall::gnttab::GrantTable;
use hypercall::{DomId, Platform, Port, Xen};
use xenbus::frontend::{BackendEvent, FrontendHandshake};
use xenbus::{Path, Store, XenbusState, Xenstore};

use crate::csum::{self, Frags, FrameBytes};
use crate::error::{Broken, Error};
use crate::features::{
    frontend_keys, negotiate, BackendFeatures, BackendFlags, Config, Negotiated, NegotiatedFlags,
    MAX_QUEUES, MIN_FRAME, RING_SIZE,
};
use crate::mac::{Mac, MacError};
use crate::queue::{
    HeldPage, Queue, RxFault, RxMeta, RxOutcome, TxCsum, TxMeta, TxOffload, TxQueue,
};

/// Where a held rx frame lies: address and length in the device's held page.
#[cfg(feature = "smoltcp")]
pub(crate) type HeldBytes = (core::ptr::NonNull<u8>, usize);

/// Counters (monotonic unless noted).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to the backend.
    pub tx_frames: u64,
    /// Bytes handed to the backend.
    pub tx_bytes: u64,
    /// Tx slots the backend completed with `NETIF_RSP_OKAY`.
    pub tx_completed: u64,
    /// Tx slots completed with `NETIF_RSP_ERROR` or an unknown status.
    pub tx_errors: u64,
    /// Tx slots completed with `NETIF_RSP_DROPPED`.
    pub tx_dropped: u64,
    /// Sends refused with [`Error::Busy`].
    pub tx_busy: u64,
    /// Frames received and handed out.
    pub rx_frames: u64,
    /// Bytes received and handed out.
    pub rx_bytes: u64,
    /// Bad rx responses from the backend (rows 18-20); each drops its frame.
    pub rx_errors: u64,
    /// Frames dropped (rx errors, frames over the MTU, frames larger than the
    /// caller's buffer).
    pub rx_dropped: u64,
    /// Frames dropped for being longer than the MTU allows without GSO
    /// ([`RxFault::OverMtu`], docs/hostile-input.md N8).
    pub rx_over_mtu: u64,
    /// Refills that found ring space but no free buffer: the backend (or a
    /// quarantine) holds every rx buffer.
    pub rx_no_buffer: u64,
    /// Gauge: rx buffers currently posted to the backend (all queues).
    pub rx_posted: u64,
    /// Gauge: tx slots in flight (all queues).
    pub tx_in_flight: u64,
    /// Pages never reused because the backend kept their grant (XSA-396).
    pub quarantined_pages: u64,
    /// The last rx fault seen, if any.
    pub last_rx_fault: Option<RxFault>,
    /// Event-channel notifications sent to the backend (new tx requests, new rx
    /// buffers); the ring's `req_event` rule keeps this well below one per frame
    /// while the backend is busy.
    pub notifications: u64,
}

impl Stats {
    const ZERO: Stats = Stats {
        tx_frames: 0,
        tx_bytes: 0,
        tx_completed: 0,
        tx_errors: 0,
        tx_dropped: 0,
        tx_busy: 0,
        rx_frames: 0,
        rx_bytes: 0,
        rx_errors: 0,
        rx_dropped: 0,
        rx_over_mtu: 0,
        rx_no_buffer: 0,
        rx_posted: 0,
        tx_in_flight: 0,
        quarantined_pages: 0,
        notifications: 0,
        last_rx_fault: None,
    };
}

/// The device's link, as far as the frontend can tell.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Connected: frames flow.
    Up,
    /// Not connected (closed, or the backend is going away).
    Down,
    /// Failed; see the reason. [`NetFront::close`], then connect again.
    Broken(Broken),
}

/// A network frontend for one `device/vif/N`.
///
/// Generic over the platform `P`, the grant table's size `N` and the most queues
/// `Q` it can use (default 1; up to [`MAX_QUEUES`]; about 11 KiB of bookkeeping
/// per queue, held inline). All methods take `&mut self`: the caller serialises
/// (one context owns the device, or wraps it in a lock). Events on
/// [`NetFront::ports`] just mean "call [`NetFront::poll`] / [`NetFront::recv`]".
///
/// On a small stack, build it in place: [`NetFront::new`] is a `const fn` (for a
/// `static`) and [`NetFront::connect_in_place`] connects through `&mut self`.
/// [`NetFront::connect`] returns the device by value.
pub struct NetFront<'g, P: Platform, const N: usize, const Q: usize = 1> {
    platform: P,
    grants: &'g GrantTable<N>,
    backend: DomId,
    mac: Mac,
    cfg: Config,
    neg: Negotiated,
    queues: [Queue; Q],
    /// The xenbus handshake, kept in place (it holds four xenstore paths, about
    /// 1 KiB, so it is never moved through a stack frame); `unset` (no device
    /// node) until the first connect.
    handshake: FrontendHandshake,
    connected: bool,
    broken: Option<Broken>,
    stats: Stats,
    rx_rr: usize,
    /// An rx page read in place by the smoltcp adapter (`recv_held`): out of
    /// the pool until released.
    held: Option<HeldPage>,
    rx_bad_run: u32,
    /// Index both rings start at (tests move it near 2^32, row 4).
    ring_start: u32,
}

impl<P: Platform, const N: usize, const Q: usize> core::fmt::Debug for NetFront<'_, P, N, Q> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetFront")
            .field("mac", &self.mac)
            .field("backend", &self.backend)
            .field("negotiated", &self.neg)
            .field("connected", &self.connected)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// `<dir>/<key>` with a formatted key.
fn key(dir: &str, args: core::fmt::Arguments<'_>) -> Result<Path, Error> {
    let mut k: heapless::String<48> = heapless::String::new();
    k.write_fmt(args)
        .map_err(|_| Error::Xenstore(xenbus::Error::InvalidArgument("key too long")))?;
    Ok(Path::join(dir, &k)?)
}

#[inline]
fn live(queues: &[Queue], q: usize) -> Option<&Queue> {
    queues.get(q).filter(|qu| qu.live)
}

#[inline]
fn live_mut(queues: &mut [Queue], q: usize) -> Option<&mut Queue> {
    queues.get_mut(q).filter(|qu| qu.live)
}

/// Writes our keys under `node` in the connect transaction (out of line: its paths
/// stay out of the connect frame).
#[inline(never)]
fn publish_keys<X: Platform>(
    tx: &mut xenbus::Transaction<'_, X>,
    node: &str,
    cfg: &Config,
    neg: &Negotiated,
    refs: &[(u32, u32, u32, u32)],
) -> xenbus::Result<()> {
    // Each batch goes out in one round trip (Store::write_u32_keys).
    // 8 frontend keys, the number of queues and one queue's 4 ring keys at most.
    let mut top: [(&str, u32); 13] = [("", 0); 13];
    let mut n = 0;
    let mut push = |top: &mut [(&'static str, u32); 13], k: &'static str, v: u32| {
        if let Some(slot) = top.get_mut(n) {
            *slot = (k, v);
            n += 1;
        }
    };
    for (k, v) in frontend_keys(cfg) {
        push(&mut top, k, v);
    }
    if neg.flags.contains(NegotiatedFlags::MULTI_QUEUE) {
        push(&mut top, "multi-queue-num-queues", neg.queues as u32);
    }
    let ring_keys =
        |&(txr, rxr, txp, rxp): &(u32, u32, u32, u32)| -> ([(&'static str, u32); 4], usize) {
            if neg.flags.contains(NegotiatedFlags::SPLIT_EVENT_CHANNELS) {
                (
                    [
                        ("tx-ring-ref", txr),
                        ("rx-ring-ref", rxr),
                        ("event-channel-tx", txp),
                        ("event-channel-rx", rxp),
                    ],
                    4,
                )
            } else {
                (
                    [
                        ("tx-ring-ref", txr),
                        ("rx-ring-ref", rxr),
                        ("event-channel", txp),
                        ("", 0),
                    ],
                    3,
                )
            }
        };
    if neg.queues == 1 {
        if let Some(r) = refs.first() {
            let (keys, k) = ring_keys(r);
            for &(key, v) in keys.iter().take(k) {
                push(&mut top, key, v);
            }
        }
    }
    tx.write_u32_keys(node, top.get(..n).unwrap_or_default())?;
    if neg.queues > 1 {
        for (q, r) in refs.iter().enumerate().take(neg.queues) {
            let dir = key(node, format_args!("queue-{q}"))
                .map_err(|_| xenbus::Error::InvalidArgument("queue key too long"))?;
            let (keys, k) = ring_keys(r);
            tx.write_u32_keys(&dir, keys.get(..k).unwrap_or_default())?;
        }
    }
    Ok(())
}

/// Reads the backend's offer from its directory `backend`.
pub fn read_backend_features<S: Store>(
    xs: &mut S,
    backend: &str,
) -> Result<BackendFeatures, Error> {
    // One round trip for the nine keys (requests sent back to back), and no
    // path built in this frame (docs/stack.md). Flags (the first keys, in the
    // order of BackendFlags::KEYS): missing, "0" or unparsable means off; numbers:
    // missing or unparsable means absent.
    let mut vals: [Option<u64>; BE_KEYS.len()] = [None; BE_KEYS.len()];
    let mut flags = BackendFlags::empty();
    xs.read_keys(backend, &BE_KEYS, &mut |i, r| {
        match r {
            Ok(v) => {
                if let Some(&(flag, _)) = BackendFlags::KEYS.get(i) {
                    flags.set(flag, hypercall::keyflags::is_on(v));
                } else if let Some(slot) = vals.get_mut(i) {
                    *slot = parse_decimal(v);
                }
            }
            Err(xenbus::Error::Xenstore(xenbus::ErrnoName::Enoent)) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    let number = |i: usize| {
        vals.get(i)
            .copied()
            .flatten()
            .and_then(|n| u32::try_from(n).ok())
    };
    Ok(BackendFeatures {
        flags,
        max_queues: number(BE_MAX_QUEUES),
        mtu: number(BE_MTU),
    })
}

/// An 802.1Q tag's bytes, allowed on top of `mtu` + the Ethernet header.
const VLAN_HLEN: usize = 4;
/// Free rx ring slots that make `recv` post buffers again after a frame: the
/// slots of one largest packet plus one (the number Linux netfront calls
/// `NET_RX_SLOTS_MIN`).
pub(crate) const RX_REFILL_BATCH: usize = netif::NR_SLOTS_MIN + 1;

/// The backend keys [`read_backend_features`] reads, in this order: every key of
/// [`BackendFlags::KEYS`], then `multi-queue-max-queues` and `mtu`.
const BE_KEYS: [&str; BackendFlags::KEYS.len() + 2] = {
    let mut keys = [""; BackendFlags::KEYS.len() + 2];
    let mut i = 0;
    while i < BackendFlags::KEYS.len() {
        keys[i] = BackendFlags::KEYS[i].1;
        i += 1;
    }
    keys[BE_MAX_QUEUES] = "multi-queue-max-queues";
    keys[BE_MTU] = "mtu";
    keys
};
/// Index of `multi-queue-max-queues` in [`BE_KEYS`].
const BE_MAX_QUEUES: usize = BackendFlags::KEYS.len();
/// Index of `mtu` in [`BE_KEYS`].
const BE_MTU: usize = BackendFlags::KEYS.len() + 1;

/// An unsigned decimal that fits 64 bits, or `None`.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Reads and parses `<node>/mac` (row 22: anything malformed refuses the device, and
/// so does a broadcast, multicast or all-zero address: the device needs a unicast one).
#[inline(never)]
pub fn read_mac<S: Store>(xs: &mut S, node: &str) -> Result<Mac, Error> {
    let mut buf = [0u8; 32];
    let path = Path::join(node, "mac")?;
    match xs.read(&path, &mut buf) {
        Ok(n) => match Mac::parse(buf.get(..n).unwrap_or_default()) {
            Ok(m) if m.is_unicast() => Ok(m),
            Ok(m) => Err(Error::BadMac(MacError::NotUnicast(m))),
            Err(e) => Err(Error::BadMac(e)),
        },
        Err(xenbus::Error::Xenstore(xenbus::ErrnoName::Enoent))
        | Err(xenbus::Error::MissingKey(_)) => Err(Error::MissingMac),
        Err(xenbus::Error::BufferTooSmall { needed }) => {
            Err(Error::BadMac(MacError::TooLong(needed)))
        }
        Err(e) => Err(e.into()),
    }
}

impl<'g, P: Platform, const N: usize, const Q: usize> NetFront<'g, P, N, Q> {
    /// Connects `device/vif/<index>`: reads `mac` (refusing a malformed one), waits
    /// (up to `timeout` per step) for the backend's `InitWait`, negotiates features
    /// (`feature-rx-copy` is required), sets up queues, rings, grants, event
    /// channels and rx buffers, publishes our keys and `Connected` in one
    /// transaction, and waits for the backend's `Connected`.
    ///
    /// On failure everything set up is torn down and our state is set to `Closed`
    /// (best effort).
    ///
    /// Returns the device by value (about 11 KiB per queue): on a small stack use
    /// [`NetFront::new`] + [`NetFront::connect_in_place`].
    pub fn connect<X: Platform>(
        platform: P,
        grants: &'g GrantTable<N>,
        xs: &mut Xenstore<X>,
        index: u32,
        cfg: Config,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut dev = NetFront::new(platform, grants, cfg);
        dev.connect_in_place(xs, index, timeout)?;
        Ok(dev)
    }

    /// [`NetFront::connect`] in place, for a device from [`NetFront::new`]. Refused
    /// with [`Error::InUse`] while connected ([`NetFront::close`] first); after a
    /// close it may connect another `index`, reusing the queues' pages.
    pub fn connect_in_place<X: Platform>(
        &mut self,
        xs: &mut Xenstore<X>,
        index: u32,
        timeout: Duration,
    ) -> Result<(), Error> {
        if self.connected {
            return Err(Error::InUse);
        }
        self.teardown();
        if self.has_handshake() && self.handshake.phase() != xenbus::frontend::Phase::Closed {
            let _ = self.handshake.closed(xs);
        }
        let mut node: heapless::String<32> = heapless::String::new();
        let _ = write!(node, "device/vif/{index}");
        // In place: the handshake's paths never pass through this frame.
        self.handshake.reset(&node)?;
        if let Err(e) = self.handshake.start(xs) {
            // As if never connected: a reconnect has nothing to restart.
            self.handshake = FrontendHandshake::unset();
            return Err(e.into());
        }
        self.backend = self.handshake.backend_id();
        let r = self.connect_steps(xs, timeout);
        if r.is_err() {
            self.teardown();
            let _ = self.handshake.closed(xs);
        }
        r
    }

    /// Whether a device node was set (a connect was attempted).
    fn has_handshake(&self) -> bool {
        !self.handshake.node().is_empty()
    }

    /// A device that is not connected: a `const fn`, so it can be built in a
    /// `static` (no stack used). `cfg.max_queues` is capped at `Q`.
    pub const fn new(platform: P, grants: &'g GrantTable<N>, cfg: Config) -> Self {
        let mut cfg = cfg;
        if cfg.max_queues > Q {
            cfg.max_queues = Q;
        }
        let neg = negotiate(&cfg, &BackendFeatures::NONE);
        NetFront {
            platform,
            grants,
            backend: DomId(0),
            mac: Mac([0; 6]),
            cfg,
            neg,
            queues: [const { Queue::detached() }; Q],
            handshake: FrontendHandshake::unset(),
            connected: false,
            broken: None,
            stats: Stats::ZERO,
            rx_rr: 0,
            held: None,
            rx_bad_run: 0,
            ring_start: 0,
        }
    }

    fn connect_steps<X: Platform>(
        &mut self,
        xs: &mut Xenstore<X>,
        timeout: Duration,
    ) -> Result<(), Error> {
        // A page read in place goes back to the pool before buffers are posted.
        self.release_held();
        self.mac = read_mac(xs, self.handshake.node())?;
        self.handshake.wait_for_backend(xs, timeout)?;
        let be = read_backend_features(xs, self.handshake.backend())?;
        if !be.flags.contains(BackendFlags::RX_COPY) {
            return Err(Error::NoRxCopy);
        }
        self.neg = negotiate(&self.cfg, &be);
        self.setup()?;
        // Private copies of what goes into the transaction.
        let mut refs = [(0u32, 0u32, 0u32, 0u32); MAX_QUEUES];
        for (q, r) in refs.iter_mut().enumerate().take(self.neg.queues) {
            if let Some(qu) = live(&self.queues, q) {
                *r = (
                    qu.tx.page.gref.map_or(0, |g| g.0),
                    qu.rx.page.gref.map_or(0, |g| g.0),
                    qu.tx_port.map_or(0, |p| p.0),
                    qu.rx_port.map_or(0, |p| p.0),
                );
            }
        }
        let cfg = self.cfg;
        let neg = self.neg;
        self.handshake
            .publish(xs, XenbusState::Connected, |tx, node| {
                publish_keys(tx, node, &cfg, &neg, &refs)
            })?;
        self.handshake.wait_connected(xs, timeout)?;
        self.connected = true;
        // Kick the backend so it looks at the rings (as Linux' xennet_connect).
        for q in 0..self.neg.queues {
            self.notify(q, true)?;
            if self
                .neg
                .flags
                .contains(NegotiatedFlags::SPLIT_EVENT_CHANNELS)
            {
                self.notify(q, false)?;
            }
        }
        Ok(())
    }

    /// Allocates (first time) or re-attaches queues, grants rings, allocates event
    /// channels and posts rx buffers.
    #[inline(never)]
    fn setup(&mut self) -> Result<(), Error> {
        self.broken = None;
        self.rx_bad_run = 0;
        let xen = Xen(&self.platform);
        for q in 0..self.neg.queues {
            let qu = self.queues.get_mut(q).ok_or(Error::BadQueue(q))?;
            if !qu.live {
                qu.allocate(&self.platform, self.neg.tx_buffers, self.neg.rx_buffers)?;
            }
            qu.tx
                .attach(&self.platform, self.grants, self.backend, self.ring_start)?;
            qu.rx
                .attach(&self.platform, self.grants, self.backend, self.ring_start)?;
            let tp = xen.evtchn_alloc_unbound(self.backend)?;
            qu.tx_port = Some(tp);
            qu.rx_port = Some(
                if self
                    .neg
                    .flags
                    .contains(NegotiatedFlags::SPLIT_EVENT_CHANNELS)
                {
                    xen.evtchn_alloc_unbound(self.backend)?
                } else {
                    tp
                },
            );
            let (_, starved) = qu.rx.refill(self.grants, self.backend, true)?;
            if starved {
                self.stats.rx_no_buffer += 1;
            }
        }
        Ok(())
    }

    /// Ends every grant (quarantining pages the backend still maps) and closes the
    /// event channels. Queues and their pages are kept for a reconnect.
    fn teardown(&mut self) {
        let xen = Xen(&self.platform);
        let mut lost = 0usize;
        for qu in self.queues.iter_mut().filter(|qu| qu.live) {
            lost += qu.tx.teardown(self.grants);
            lost += qu.rx.teardown(self.grants);
            let (t, r) = (qu.tx_port.take(), qu.rx_port.take());
            if let Some(t) = t {
                let _ = xen.evtchn_close(t);
            }
            if let Some(r) = r.filter(|r| Some(*r) != t) {
                let _ = xen.evtchn_close(r);
            }
        }
        self.stats.quarantined_pages += lost as u64;
        self.connected = false;
    }

    fn fail(&mut self, b: Broken) -> Error {
        if self.broken.is_none() {
            self.broken = Some(b);
            if let Broken::GrantStillMapped { .. } = b {
                // The page whose grant would not end left its slot when its
                // response arrived, so teardown does not see it: count it here.
                self.stats.quarantined_pages += 1;
            }
            self.teardown();
        }
        Error::Broken(self.broken.unwrap_or(b))
    }

    fn usable(&self) -> Result<(), Error> {
        if let Some(b) = self.broken {
            return Err(Error::Broken(b));
        }
        if !self.connected {
            return Err(Error::NotConnected);
        }
        Ok(())
    }

    fn notify(&mut self, q: usize, tx: bool) -> Result<(), Error> {
        let port = live(&self.queues, q).and_then(|qu| if tx { qu.tx_port } else { qu.rx_port });
        if let Some(p) = port {
            self.stats.notifications += 1;
            if let Err(e) = Xen(&self.platform).evtchn_send(p) {
                return Err(self.fail(Broken::Notify(e)));
            }
        }
        Ok(())
    }

    /// The guest's MAC address (from `mac`).
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The IP MTU (from the backend's `mtu`, default 1500).
    pub fn mtu(&self) -> u32 {
        self.neg.mtu
    }

    /// Largest frame [`NetFront::send`] accepts (Ethernet header included; GSO
    /// frames may be up to 65535 bytes).
    pub fn max_frame(&self) -> usize {
        self.neg.max_tx_frame
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// The backend's domain.
    pub fn backend_id(&self) -> DomId {
        self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Event-channel ports of queue `q`: (tx, rx); the same port twice without split
    /// event channels. Bind them in your event dispatcher; an event on either means
    /// "poll".
    pub fn ports(&self, q: usize) -> Option<(Port, Port)> {
        let qu = live(&self.queues, q)?;
        Some((qu.tx_port?, qu.rx_port?))
    }

    /// The link state.
    pub fn link_state(&self) -> LinkState {
        match (self.broken, self.connected) {
            (Some(b), _) => LinkState::Broken(b),
            (None, true) => LinkState::Up,
            (None, false) => LinkState::Down,
        }
    }

    /// Counters (gauges refreshed).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.rx_posted = 0;
        s.tx_in_flight = 0;
        for qu in self
            .queues
            .iter()
            .filter(|qu| qu.live)
            .take(self.neg.queues)
        {
            if self.connected {
                s.rx_posted += qu.rx.posted() as u64;
                s.tx_in_flight += qu.tx.in_flight() as u64;
            }
        }
        s
    }

    fn reclaim(&mut self, q: usize) -> Result<(), Error> {
        let r = match live_mut(&mut self.queues, q) {
            Some(qu) => qu.tx.reclaim(self.grants, q),
            None => return Err(Error::BadQueue(q)),
        };
        match r {
            Ok(d) => {
                self.stats.tx_completed += d.completed;
                self.stats.tx_errors += d.errors;
                self.stats.tx_dropped += d.dropped;
                Ok(())
            }
            Err(b) => Err(self.fail(b)),
        }
    }

    fn refill(&mut self, q: usize) -> Result<(), Error> {
        let r = match live_mut(&mut self.queues, q) {
            Some(qu) => qu.rx.refill(self.grants, self.backend, false),
            None => return Err(Error::BadQueue(q)),
        };
        let (notify, starved) = r?;
        if starved {
            self.stats.rx_no_buffer += 1;
        }
        if notify && self.neg.flags.contains(NegotiatedFlags::RX_NOTIFY) {
            self.notify(q, false)?;
        }
        Ok(())
    }

    /// [`NetFront::refill`] once at least [`RX_REFILL_BATCH`] ring slots are
    /// free, so a receiver taking a burst of frames grants the buffers one by
    /// one but publishes them (and maybe notifies) once per batch, not once per
    /// frame. Until then at least `ring size - RX_REFILL_BATCH` buffers stay
    /// posted, and `recv` refills fully whenever it finds no frame.
    fn refill_batched(&mut self, q: usize) -> Result<(), Error> {
        let due = live(&self.queues, q)
            .is_none_or(|qu| qu.rx.ring.free_slots() as usize >= RX_REFILL_BATCH);
        if due {
            self.refill(q)?;
        }
        Ok(())
    }

    /// Housekeeping: reclaims completed tx slots and refills rx buffers on every
    /// queue, and re-arms response notifications.
    pub fn poll(&mut self) -> Result<(), Error> {
        self.release_held();
        self.usable()?;
        for q in 0..self.neg.queues {
            self.reclaim(q)?;
            self.refill(q)?;
            let more = match live_mut(&mut self.queues, q) {
                Some(qu) => qu.tx.ring.final_check_for_responses(),
                None => Ok(false),
            };
            match more {
                Ok(true) => self.reclaim(q)?,
                Ok(false) => {}
                Err(error) => {
                    return Err(self.fail(Broken::Ring {
                        queue: q,
                        tx: true,
                        error,
                    }))
                }
            }
        }
        Ok(())
    }

    /// Whether a frame of `len` bytes can be sent on queue `q` right now (after
    /// reclaiming completed slots).
    pub fn can_send(&mut self, q: usize, len: usize) -> bool {
        if self.usable().is_err() || self.reclaim(q).is_err() {
            return false;
        }
        let (d, x) = TxQueue::slots_for(len, false);
        live(&self.queues, q).is_some_and(|qu| qu.tx.has_room(d, x))
    }

    /// Sends one frame from a single buffer (no offloads).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.send_frags(&[frame], TxMeta::default())
    }

    /// Sends one frame given as fragments (scatter-gather: concatenated in order),
    /// on the queue its flow hashes to.
    pub fn send_frags(&mut self, frags: &[&[u8]], meta: TxMeta) -> Result<(), Error> {
        let q = self.pick_queue(&Frags(frags));
        self.send_on(q, frags, meta)
    }

    fn pick_queue(&self, f: &Frags<'_>) -> usize {
        let n = self.neg.queues;
        if n <= 1 {
            return 0;
        }
        // Hash addresses and ports (IPv4) so one flow stays on one queue.
        let mut h: u32 = 0x811c_9dc5;
        f.chunks(26, 12, &mut |c| {
            for &b in c {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
        });
        // The queue from the hash's high bits (multiply-shift): FNV-1a's low bits
        // depend only on the low bits of each byte, so `h % n` with 2 or 4 queues put
        // flows whose addresses and ports differed only above bit 1 on one queue.
        ((u64::from(h) * n as u64) >> 32) as usize
    }

    /// Sends one frame on queue `q`. Copies the data into the queue's tx buffers
    /// (the caller's memory is never granted), so the fragments may be reused as
    /// soon as this returns. [`Error::Busy`]: no room now; poll and retry.
    pub fn send_on(&mut self, q: usize, frags: &[&[u8]], meta: TxMeta) -> Result<(), Error> {
        self.usable()?;
        if q >= self.neg.queues {
            return Err(Error::BadQueue(q));
        }
        let frame = Frags(frags);
        let total = frame.len();
        if total < MIN_FRAME {
            return Err(Error::FrameTooSmall(total));
        }
        let max = if meta.gso_mss.is_some() {
            crate::features::MAX_FRAME
        } else {
            self.neg.max_tx_frame
        };
        if total > max {
            return Err(Error::FrameTooLarge { len: total, max });
        }
        let mut flags = TxFlags::empty();
        let mut csum_mode = TxCsum::AsIs;
        let mut gso = None;
        if meta.data_validated {
            flags |= TxFlags::DATA_VALIDATED;
        }
        if let Some(mss) = meta.gso_mss {
            let l4 = csum::locate(&frame).filter(|l| l.proto == csum::PROTO_TCP);
            let ty = match l4 {
                Some(l) if l.ipv6 && self.neg.flags.contains(NegotiatedFlags::TX_GSO_TCPV6) => {
                    netif::GSO_TYPE_TCPV6
                }
                Some(l) if !l.ipv6 && self.neg.flags.contains(NegotiatedFlags::TX_GSO_TCPV4) => {
                    netif::GSO_TYPE_TCPV4
                }
                _ => return Err(Error::GsoNotNegotiated),
            };
            if mss == 0 {
                return Err(Error::GsoNotNegotiated);
            }
            gso = Some(ExtraInfo::gso(mss, ty, 0, 0));
            flags |= TxFlags::CSUM_BLANK | TxFlags::DATA_VALIDATED;
        } else if meta.csum_blank {
            if let Some(l4) = csum::locate(&frame) {
                let ok = self.neg.flags.contains(if l4.ipv6 {
                    NegotiatedFlags::TX_CSUM_IPV6
                } else {
                    NegotiatedFlags::TX_CSUM_IPV4
                });
                if ok {
                    flags |= TxFlags::CSUM_BLANK | TxFlags::DATA_VALIDATED;
                } else {
                    csum_mode = TxCsum::Software(l4);
                }
            }
        }
        let offload = TxOffload {
            flags,
            gso,
            csum: csum_mode,
        };
        let (d, x) = TxQueue::slots_for(total, gso.is_some());
        let room = live(&self.queues, q).is_some_and(|qu| qu.tx.has_room(d, x));
        if !room {
            self.reclaim(q)?;
        }
        let r = match live_mut(&mut self.queues, q) {
            Some(qu) => qu.tx.send(self.grants, self.backend, &frame, offload),
            None => return Err(Error::BadQueue(q)),
        };
        match r {
            Ok(notify) => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += total as u64;
                if notify {
                    self.notify(q, true)?;
                }
                Ok(())
            }
            Err(Error::Busy) => {
                self.stats.tx_busy += 1;
                Err(Error::Busy)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one frame of `len` bytes that `fill` writes straight into a tx
    /// buffer page (no copy; at most one page, [`hypercall::PAGE_SIZE`] bytes, and
    /// no offloads: larger frames go through [`NetFront::send_frags`]). The page
    /// is granted to the backend only after `fill` returned, so `fill` gets
    /// plain private memory (docs/network-copies.md). Returns what `fill`
    /// returned.
    ///
    /// On failure: the error, and what `fill` returned if it ran (`Ok`: the
    /// frame is lost, e.g. the grant table ran out) or `fill` itself if it did
    /// not (`Err`: nothing happened, e.g. [`Error::Busy`]; poll and retry, or
    /// send another way).
    #[allow(clippy::type_complexity)]
    pub fn send_with<R, F: FnOnce(&mut [u8]) -> R>(
        &mut self,
        len: usize,
        fill: F,
    ) -> Result<R, (Error, Result<R, F>)> {
        if let Err(e) = self.usable() {
            return Err((e, Err(fill)));
        }
        if len < MIN_FRAME {
            return Err((Error::FrameTooSmall(len), Err(fill)));
        }
        let max = self.neg.max_tx_frame.min(hypercall::PAGE_SIZE);
        if len > max {
            return Err((Error::FrameTooLarge { len, max }, Err(fill)));
        }
        // Filled in a page of queue 0; a frame whose flow belongs to another
        // queue is copied there (multi-queue only).
        let q0 = 0;
        if !live(&self.queues, q0).is_some_and(|qu| qu.tx.has_room(1, 0)) {
            if let Err(e) = self.reclaim(q0) {
                return Err((e, Err(fill)));
            }
        }
        let taken = live_mut(&mut self.queues, q0).and_then(|qu| qu.tx.take_page());
        let (page, mem) = match taken {
            Some((page, mem, page_len)) if page_len >= len => (page, mem),
            other => {
                if let (Some((page, _, _)), Some(qu)) = (other, live_mut(&mut self.queues, q0)) {
                    qu.tx.put_page(page);
                }
                self.stats.tx_busy += 1;
                return Err((Error::Busy, Err(fill)));
            }
        };
        #[allow(unsafe_code)]
        // SAFETY: `mem` is a whole page of queue 0's tx pool, which this device
        // allocated and frees only when it is dropped (`release_pages`), so it is
        // valid for this call, and it holds `len` bytes (checked above). The page
        // was on the pool's free list: never granted, or its grant ended (pages go
        // back to the pool only once their grant is no longer active; a page the
        // backend still maps is quarantined instead), so no other domain can read
        // or write it. We hold `&mut self`, so nothing else here touches it before
        // it is granted below, after the last use of `buf`.
        let buf = unsafe { core::slice::from_raw_parts_mut(mem.as_ptr(), len) };
        let r = fill(&mut *buf);
        let q = self.pick_queue(&Frags(&[&*buf]));
        let sent = if q != q0 {
            let sent = self.send_on(q, &[&*buf], TxMeta::default());
            if let Some(qu) = live_mut(&mut self.queues, q0) {
                qu.tx.put_page(page);
            }
            sent
        } else {
            let sent = match live_mut(&mut self.queues, q0) {
                Some(qu) => qu
                    .tx
                    .send_page(self.grants, self.backend, page, len, TxFlags::empty()),
                None => Err(Error::BadQueue(q0)),
            };
            match sent {
                Ok(notify) => {
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += len as u64;
                    if notify {
                        self.notify(q0, true)
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            }
        };
        match sent {
            Ok(()) => Ok(r),
            Err(e) => Err((e, Ok(r))),
        }
    }

    /// Receives one frame into `buf` (which should hold [`crate::MAX_FRAME`] bytes
    /// with SG, or `mtu + 14` without). `Ok(None)`: nothing pending (response
    /// notifications are re-armed). Bad frames are dropped and counted; frames
    /// larger than `buf` are dropped and counted in `rx_dropped`.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<RxMeta>, Error> {
        self.release_held();
        Ok(self.recv_inner(buf, false, true)?.map(|(m, _)| m))
    }

    /// [`NetFront::recv`] for a caller that busy-polls: when nothing is pending
    /// it returns `Ok(None)` without asking the backend to notify on the next
    /// frame (no `rsp_event` update). A receiver that spins on this gets no
    /// event-channel notification per burst it catches up with; before it sleeps
    /// (e.g. [`hypercall::Platform::wait`]) it must call [`NetFront::recv`],
    /// which re-arms and checks once more, so no frame is left unannounced
    /// (docs/network-copies.md, "Notifications per frame").
    pub fn recv_polling(&mut self, buf: &mut [u8]) -> Result<Option<RxMeta>, Error> {
        self.release_held();
        Ok(self.recv_inner(buf, false, false)?.map(|(m, _)| m))
    }

    /// [`NetFront::recv`], but a one-page frame (with no checksum to complete)
    /// may instead be left in its page: `Some((meta, Some(bytes)))`, the frame's
    /// bytes in an rx page whose grant has ended. The page is the device's held
    /// page, out of the rx pool, until the next `recv`, `recv_held`, `poll` or
    /// `release_held` posts it again (never the send paths: the smoltcp adapter
    /// relies on that).
    #[cfg(feature = "smoltcp")]
    pub(crate) fn recv_held(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<(RxMeta, Option<HeldBytes>)>, Error> {
        self.release_held();
        let r = self.recv_inner(buf, true, true)?;
        Ok(r.map(|(meta, held)| {
            // A raw address and length, not a region: the adapter reads the frame
            // through it while it holds the device (smol.rs's `consume`).
            let mem = held
                .and_then(|h| live(&self.queues, h.queue)?.rx.held_mem(&h))
                .map(|m| (m.as_non_null(), m.len()));
            self.held = held;
            (meta, mem)
        }))
    }

    /// Posts the held rx page again (see [`NetFront::recv_held`]).
    pub(crate) fn release_held(&mut self) {
        let Some(h) = self.held.take() else {
            return;
        };
        if let Some(qu) = live_mut(&mut self.queues, h.queue) {
            qu.rx.release(h);
        }
        if self.usable().is_ok() {
            let _ = self.refill_batched(h.queue);
        }
    }

    /// The longest frame the MTU allows: `mtu` plus an Ethernet header and a VLAN
    /// tag.
    fn max_rx_frame(&self) -> usize {
        (self.neg.mtu as usize).saturating_add(crate::features::ETH_HLEN + VLAN_HLEN)
    }

    /// Whether a received frame is longer than the MTU allows and has no GSO extra
    /// (docs/hostile-input.md N8; frames over 65535 bytes never get this far).
    fn over_mtu(&self, meta: &RxMeta) -> bool {
        meta.gso.is_none() && meta.len > self.max_rx_frame()
    }

    fn over_mtu_fault(&self, meta: &RxMeta) -> RxFault {
        RxFault::OverMtu {
            len: meta.len,
            max: self.max_rx_frame(),
        }
    }

    /// One frame from the queues in turn; with `arm`, a queue found empty asks
    /// for a notification on its next response (and is checked once more).
    fn recv_inner(
        &mut self,
        buf: &mut [u8],
        hold: bool,
        arm: bool,
    ) -> Result<Option<(RxMeta, Option<HeldPage>)>, Error> {
        self.usable()?;
        let n = self.neg.queues;
        for i in 0..n {
            let q = (self.rx_rr + i) % n;
            for _ in 0..2 * RING_SIZE {
                let r = match live_mut(&mut self.queues, q) {
                    Some(qu) => qu.rx.next_frame(self.grants, q, buf, hold),
                    None => return Err(Error::BadQueue(q)),
                };
                // N8: longer than the MTU allows and no GSO extra: dropped.
                let r = match r {
                    Ok(Some(RxOutcome::Held(meta, held))) if self.over_mtu(&meta) => {
                        if let Some(qu) = live_mut(&mut self.queues, q) {
                            qu.rx.release(held);
                        }
                        Ok(Some(RxOutcome::Dropped(self.over_mtu_fault(&meta))))
                    }
                    Ok(Some(RxOutcome::Frame(meta))) if self.over_mtu(&meta) => {
                        Ok(Some(RxOutcome::Dropped(self.over_mtu_fault(&meta))))
                    }
                    r => r,
                };
                match r {
                    Err(b) => return Err(self.fail(b)),
                    Ok(Some(RxOutcome::Held(meta, held))) => {
                        // Not refilled now: the page is out of the pool until
                        // released (release_held refills).
                        self.rx_bad_run = 0;
                        self.stats.rx_frames += 1;
                        self.stats.rx_bytes += meta.len as u64;
                        self.rx_rr = (q + 1) % n;
                        return Ok(Some((meta, Some(held))));
                    }
                    Ok(Some(RxOutcome::Frame(mut meta))) => {
                        self.rx_bad_run = 0;
                        self.stats.rx_frames += 1;
                        self.stats.rx_bytes += meta.len as u64;
                        if meta.csum_blank && meta.gso.is_none() && self.cfg.complete_rx_csum {
                            if let Some(frame) = buf.get_mut(..meta.len) {
                                meta.csum_completed = csum::complete(frame);
                            }
                        }
                        self.refill_batched(q)?;
                        self.rx_rr = (q + 1) % n;
                        return Ok(Some((meta, None)));
                    }
                    Ok(Some(RxOutcome::Dropped(f))) => {
                        self.stats.rx_dropped += 1;
                        self.stats.last_rx_fault = Some(f);
                        if let RxFault::OverMtu { .. } = f {
                            self.stats.rx_over_mtu += 1;
                        }
                        if f.is_protocol_error() {
                            self.stats.rx_errors += 1;
                            self.rx_bad_run += 1;
                            if self.rx_bad_run >= self.cfg.rx_error_limit.max(1) {
                                let count = self.rx_bad_run;
                                return Err(self.fail(Broken::RxErrors { queue: q, count }));
                            }
                        }
                        self.refill(q)?;
                    }
                    Ok(None) if !arm => break,
                    Ok(None) => {
                        let more = match live_mut(&mut self.queues, q) {
                            Some(qu) => qu.rx.ring.final_check_for_responses(),
                            None => Ok(false),
                        };
                        match more {
                            Ok(true) => continue,
                            Ok(false) => break,
                            Err(error) => {
                                return Err(self.fail(Broken::Ring {
                                    queue: q,
                                    tx: false,
                                    error,
                                }))
                            }
                        }
                    }
                }
            }
            self.refill(q)?;
        }
        Ok(None)
    }

    /// [`NetFront::poll`] + [`NetFront::recv`], waiting with the platform's `wait`
    /// for up to `timeout`.
    pub fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<RxMeta>, Error> {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let deadline = self.platform.now_ns().saturating_add(ns);
        loop {
            self.poll()?;
            if let Some(m) = self.recv(buf)? {
                return Ok(Some(m));
            }
            if self.platform.now_ns() >= deadline {
                return Ok(None);
            }
            self.platform.wait();
        }
    }

    /// Checks for backend state changes (call it when a xenstore watch event
    /// arrives, or now and then). The backend going `Closing`/`Closed` tears the
    /// device down (grants ended, link down) and returns [`LinkState::Down`]; call
    /// [`NetFront::close`] to finish.
    pub fn poll_backend<X: Platform>(&mut self, xs: &mut Xenstore<X>) -> Result<LinkState, Error> {
        let ev = if self.has_handshake() {
            self.handshake.poll_backend(xs)?
        } else {
            None
        };
        if let Some(BackendEvent::Closing(_)) = ev {
            self.teardown();
        }
        Ok(self.link_state())
    }

    /// Waits (with the platform's `wait`, until `deadline_ns` at most) for the
    /// backend to complete every tx frame in flight.
    fn flush_tx(&mut self, deadline_ns: u64) {
        while self.poll().is_ok() {
            let in_flight: usize = self
                .queues
                .iter()
                .filter(|qu| qu.live)
                .take(self.neg.queues)
                .map(|qu| qu.tx.in_flight())
                .sum();
            if in_flight == 0 || self.platform.now_ns() >= deadline_ns {
                return;
            }
            self.platform.wait();
        }
    }

    /// Disconnects: first gives the backend up to half of `timeout` to complete
    /// the frames still in flight (a backend works asynchronously: without this,
    /// frames sent just before closing could be lost), then tells it (`Closing`),
    /// waits up to the rest of `timeout` for it to let go of the rings, ends every
    /// grant (quarantining pages the backend still maps), closes the event
    /// channels and goes `Closed`. The device can be connected again with
    /// [`NetFront::reconnect`].
    pub fn close<X: Platform>(
        &mut self,
        xs: &mut Xenstore<X>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let start = self.platform.now_ns();
        let budget = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.flush_tx(start.saturating_add(budget / 2));
        let spent = self.platform.now_ns().saturating_sub(start);
        let rest = Duration::from_nanos(budget.saturating_sub(spent));
        let r = if self.has_handshake() {
            self.handshake.close(xs, rest).map_err(Error::from)
        } else {
            Ok(())
        };
        self.teardown();
        r
    }

    /// Connects again after [`NetFront::close`] (or after the backend went away),
    /// reusing the queues' pages. Clears a failure.
    pub fn reconnect<X: Platform>(
        &mut self,
        xs: &mut Xenstore<X>,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.teardown();
        if !self.has_handshake() {
            return Err(Error::NotConnected);
        }
        if self.handshake.phase() != xenbus::frontend::Phase::Closed {
            let _ = self.handshake.closed(xs);
        }
        let r = self.handshake.start(xs).map_err(Error::from).and_then(|_| {
            self.backend = self.handshake.backend_id();
            self.connect_steps(xs, timeout)
        });
        if r.is_err() {
            self.teardown();
            let _ = self.handshake.closed(xs);
        }
        r
    }

    /// Grant refs still held by this device (rings and buffers; for leak checks).
    pub fn grants_in_use(&self) -> usize {
        let mut n = 0;
        for qu in self.queues.iter().filter(|qu| qu.live) {
            n += usize::from(qu.tx.page.gref.is_some()) + usize::from(qu.rx.page.gref.is_some());
            n += qu.tx.in_flight() + qu.rx.granted();
        }
        n
    }
}

/// Dropping a device ends every grant it holds (quarantining pages the backend
/// still maps: they are never freed nor reused, their refs stay in use; XSA-396),
/// closes its event channels and returns every other page (rings, buffers) to
/// the platform. It cannot reach xenstore: call [`NetFront::close`] first to let
/// in-flight frames out and leave the device `Closed` there.
impl<P: Platform, const N: usize, const Q: usize> Drop for NetFront<'_, P, N, Q> {
    fn drop(&mut self) {
        self.teardown();
        for qu in self.queues.iter_mut().filter(|qu| qu.live) {
            qu.live = false;
            qu.release_pages(&self.platform);
        }
    }
}

#[cfg(test)]
impl<'g, P: Platform, const N: usize, const Q: usize> NetFront<'g, P, N, Q> {
    /// A device wired to a fake backend: no xenstore; `be` plays the backend's
    /// offer.
    pub(crate) fn attach_for_test(
        platform: P,
        grants: &'g GrantTable<N>,
        backend: DomId,
        cfg: Config,
        be: BackendFeatures,
        ring_start: u32,
    ) -> Result<Self, Error> {
        let mut d = NetFront::new(platform, grants, cfg);
        d.backend = backend;
        d.ring_start = ring_start;
        d.mac = Mac([2, 0, 0, 0, 0, 1]);
        d.neg = negotiate(&cfg, &be);
        d.setup()?;
        d.connected = true;
        Ok(d)
    }

    pub(crate) fn teardown_for_test(&mut self) {
        self.teardown();
    }

    /// Connects again after `teardown_for_test` (a reconnect without xenstore).
    pub(crate) fn reattach_for_test(&mut self) -> Result<(), Error> {
        self.setup()?;
        self.connected = true;
        Ok(())
    }

    pub(crate) fn queue_rings(
        &self,
        q: usize,
    ) -> Option<(hypercall::GrantRef, hypercall::GrantRef)> {
        let qu = live(&self.queues, q)?;
        Some((qu.tx.page.gref?, qu.rx.page.gref?))
    }
}
