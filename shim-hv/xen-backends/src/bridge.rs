//! An in-process L2 bridge with MAC learning, connecting vifs of several domains
//! (and optionally a host TAP device).
//!
//! ```text
//!   vif1.0 ──┐                       ┌── vif2.0
//!            ├── Bridge "xenbr0" ────┤
//!   tap ─────┘   fdb: MAC → port     └── vif3.0
//! ```
//!
//! A frame from port P teaches the bridge that its source MAC lives behind P.
//! Unicast frames to a known MAC go to that port only; broadcast, multicast and
//! unknown unicast frames are flooded to every port but P. The forwarding table is
//! bounded ([`FDB_MAX`] entries; the oldest is evicted) and entries age out after
//! [`FDB_AGE`], as Linux's bridge does with its default `ageing_time`.
//!
//! Ports deliver synchronously from the caller's thread; no bridge lock is held
//! while a port delivers.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hypercall::{GrantRef, PAGE_SIZE};
use xennet_front::csum;

use xen_model::{GrantError, GrantPeer};

/// Most forwarding-table entries.
pub const FDB_MAX: usize = 4096;
/// Runs of frames with one destination [`Bridge::forward_batch`] decides under
/// one lock before it delivers them.
const MAX_RUNS: usize = 8;
/// How long a learned MAC stays without traffic from it.
pub const FDB_AGE: Duration = Duration::from_secs(300);

/// A large TCP frame to be segmented (GSO): MSS and `XEN_NETIF_GSO_TYPE_*`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Gso {
    /// Segment payload size.
    pub mss: u16,
    /// `XEN_NETIF_GSO_TYPE_TCPV4` or `_TCPV6`.
    pub ty: u8,
}

/// Most pieces of a [`GrantedTail`] (a tx frame's data slots).
pub const MAX_TAIL_PIECES: usize = 20;

/// One piece of a frame left in its sender's granted page.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TailPiece {
    /// The sender's grant.
    pub gref: GrantRef,
    /// Where the bytes start in the page.
    pub offset: u16,
    /// How many (`offset + len` is within the page: checked when the frame was
    /// built, and again by every grant copy).
    pub len: u16,
}

/// The part of a frame after its headers, still in the sending guest's granted
/// pages: receivers copy it grant to grant ([`GrantPeer::copy_to_after`]), so
/// the bytes cross host memory once. Valid only while the frame is being
/// delivered (the sender's netback answers the request after
/// [`Bridge::forward_batch`] returns); a port that keeps a frame for later
/// keeps [`Frame::to_host`]'s copy instead.
///
/// Netback makes no decision on these bytes (the sender may change them at any
/// time, which only changes what the receiver gets); whoever needs to look at
/// them copies the frame into host memory first.
pub struct GrantedTail {
    /// Grant copies from the sender's pages.
    pub peer: GrantPeer,
    pieces: [TailPiece; MAX_TAIL_PIECES],
    n: usize,
    len: usize,
    failed: AtomicBool,
}

impl Clone for GrantedTail {
    fn clone(&self) -> Self {
        GrantedTail {
            peer: self.peer.clone(),
            pieces: self.pieces,
            n: self.n,
            len: self.len,
            failed: AtomicBool::new(self.failed()),
        }
    }
}

impl fmt::Debug for GrantedTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantedTail")
            .field("granter", &self.peer.domid().0)
            .field("pieces", &self.pieces())
            .field("failed", &self.failed())
            .finish()
    }
}

impl PartialEq for GrantedTail {
    fn eq(&self, o: &Self) -> bool {
        self.peer.domid() == o.peer.domid() && self.pieces() == o.pieces()
    }
}

impl Eq for GrantedTail {}

impl GrantedTail {
    /// No pieces yet, from `peer`'s pages.
    pub fn new(peer: GrantPeer) -> GrantedTail {
        GrantedTail {
            peer,
            pieces: [TailPiece {
                gref: GrantRef(0),
                offset: 0,
                len: 0,
            }; MAX_TAIL_PIECES],
            n: 0,
            len: 0,
            failed: AtomicBool::new(false),
        }
    }

    /// Empties this tail for reuse, now from `peer`'s pages.
    pub fn reset(&mut self, peer: GrantPeer) {
        self.peer = peer;
        self.n = 0;
        self.len = 0;
        self.failed.store(false, Ordering::Relaxed);
    }

    /// Appends a piece; `false` (nothing appended) if there are
    /// [`MAX_TAIL_PIECES`] already or the piece crosses its page.
    pub fn push(&mut self, p: TailPiece) -> bool {
        if usize::from(p.offset) + usize::from(p.len) > PAGE_SIZE {
            return false;
        }
        let Some(slot) = self.pieces.get_mut(self.n) else {
            return false;
        };
        *slot = p;
        self.n += 1;
        self.len += usize::from(p.len);
        true
    }

    /// The pieces, in frame order.
    pub fn pieces(&self) -> &[TailPiece] {
        self.pieces.get(..self.n).unwrap_or_default()
    }

    /// Bytes in all pieces.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A receiver could not copy from the sender's grants (the sender revoked
    /// or broke them while the frame was in flight): its netback answers the
    /// frame with an error. (Receivers get the frame by reference, so the
    /// sender's netback sees what any of them marked.)
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Whether some receiver could not copy from the sender's grants.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Copies the whole tail into `out`, piece after piece (`out` holds
    /// [`GrantedTail::len`] bytes; pieces past its end are not read).
    fn read_all(&self, out: &mut [u8]) -> Result<(), GrantError> {
        let mut pos = 0usize;
        for p in self.pieces() {
            let end = pos + usize::from(p.len);
            let Some(dst) = out.get_mut(pos..end) else {
                break;
            };
            self.peer.copy_out(p.gref, p.offset, dst)?;
            pos = end;
        }
        Ok(())
    }
}

/// An Ethernet frame with its offload state: in host memory, or (from a vif)
/// its headers in host memory and the rest in the sender's granted pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The bytes, Ethernet header first (with a [`Frame::tail`], only the first
    /// ones: the headers netback decides on).
    pub data: Vec<u8>,
    /// The TCP/UDP checksum is still to be computed.
    pub csum_blank: bool,
    /// The sender vouches for the data.
    pub data_validated: bool,
    /// A large TCP frame still to be segmented.
    pub gso: Option<Gso>,
    /// The bytes after `data`, still in the sender's pages (never for frames
    /// with offloads to resolve: those are copied whole).
    /// (Boxed so that frames stay small to move; netback recycles the boxes.)
    pub tail: Option<Box<GrantedTail>>,
}

impl Frame {
    /// A plain frame.
    pub fn new(data: Vec<u8>) -> Frame {
        Frame {
            data,
            ..Frame::default()
        }
    }

    /// The frame's length (headers and tail).
    pub fn len(&self) -> usize {
        self.data.len() + self.tail.as_ref().map_or(0, |t| t.len())
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This frame all in host memory (a copy of the tail out of the sender's
    /// grants, made while the frame is being delivered). `None` if the sender's
    /// grants could not be read (then the tail is marked failed).
    pub fn to_host(&self) -> Option<Frame> {
        let Some(t) = &self.tail else {
            return Some(self.clone());
        };
        let mut data = Vec::with_capacity(self.len());
        data.extend_from_slice(&self.data);
        data.resize(self.len(), 0);
        if t.read_all(&mut data[self.data.len()..]).is_err() {
            t.mark_failed();
            return None;
        }
        Some(Frame {
            data,
            csum_blank: self.csum_blank,
            data_validated: self.data_validated,
            gso: self.gso,
            tail: None,
        })
    }

    /// Destination MAC.
    pub fn dst(&self) -> Option<[u8; 6]> {
        self.data.get(0..6)?.try_into().ok()
    }

    /// Source MAC.
    pub fn src(&self) -> Option<[u8; 6]> {
        self.data.get(6..12)?.try_into().ok()
    }

    /// This frame as a receiver without offloads needs it: GSO frames cut into
    /// MSS-sized TCP segments, blank checksums computed. Frames whose headers do
    /// not parse are passed on as they are (the receiver drops what it cannot use).
    pub fn resolve_offloads(&self) -> Vec<Frame> {
        if self.tail.is_some() {
            return self
                .to_host()
                .map(|f| f.resolve_offloads())
                .unwrap_or_default();
        }
        let mut out = match self.gso {
            Some(g) => segment_tcp(&self.data, g.mss),
            None => vec![self.data.clone()],
        };
        for d in out.iter_mut() {
            if self.csum_blank || self.gso.is_some() {
                csum::complete(d);
            }
        }
        out.into_iter()
            .map(|data| Frame {
                data,
                csum_blank: false,
                data_validated: self.data_validated || self.csum_blank,
                gso: None,
                tail: None,
            })
            .collect()
    }
}

/// Cuts a large TCP frame into segments of at most `mss` payload bytes: headers
/// copied, IPv4 total length / id / header checksum or IPv6 payload length fixed,
/// sequence numbers advanced, FIN/PSH kept for the last segment and CWR for the
/// first. TCP checksums are left for the caller. A frame that is not TCP (or whose
/// headers do not parse, or `mss` is 0) comes back whole.
pub fn segment_tcp(frame: &[u8], mss: u16) -> Vec<Vec<u8>> {
    /// TCP's FIN (0x01) and PSH (0x08) flags.
    const TCP_FIN_PSH: u8 = 0x09;
    let whole = || vec![frame.to_vec()];
    let Some(l4) = csum::locate(frame) else {
        return whole();
    };
    let mss = usize::from(mss);
    if l4.proto != csum::PROTO_TCP || mss == 0 {
        return whole();
    }
    let Some(&off) = frame.get(l4.start + 12) else {
        return whole();
    };
    let thl = usize::from(off >> 4) * 4;
    let hdr_end = l4.start + thl;
    let end = l4.start + l4.len;
    // (`locate` has checked that the segment, `..end`, is in the frame; a
    // header longer than the segment leaves no range.)
    let Some(payload) = frame.get(hdr_end..end).filter(|_| thl >= 20) else {
        return whole();
    };
    if payload.len() <= mss {
        return whole();
    }
    let hdr = &frame[..hdr_end];
    let seq0 = u32::from_be_bytes([
        frame[l4.start + 4],
        frame[l4.start + 5],
        frame[l4.start + 6],
        frame[l4.start + 7],
    ]);
    let flags = frame[l4.start + 13];
    let ip_id = u16::from_be_bytes([frame[l4.l3 + 4], frame[l4.l3 + 5]]);
    let n = payload.len().div_ceil(mss);
    let mut out = Vec::with_capacity(n);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut s = Vec::with_capacity(hdr.len() + chunk.len());
        s.extend_from_slice(hdr);
        s.extend_from_slice(chunk);
        let l3_len = hdr_end - l4.l3 + chunk.len();
        if l4.ipv6 {
            let pl = (l3_len - 40) as u16;
            s[l4.l3 + 4..l4.l3 + 6].copy_from_slice(&pl.to_be_bytes());
        } else {
            s[l4.l3 + 2..l4.l3 + 4].copy_from_slice(&(l3_len as u16).to_be_bytes());
            let id = ip_id.wrapping_add(i as u16);
            s[l4.l3 + 4..l4.l3 + 6].copy_from_slice(&id.to_be_bytes());
            s[l4.l3 + 10] = 0;
            s[l4.l3 + 11] = 0;
            let ihl = usize::from(s[l4.l3] & 0x0f) * 4;
            let c = csum::internet_checksum(&s[l4.l3..l4.l3 + ihl]);
            s[l4.l3 + 10..l4.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        s[l4.start + 4..l4.start + 8].copy_from_slice(&seq.to_be_bytes());
        let mut f = flags;
        if i + 1 < n {
            f &= !TCP_FIN_PSH; // only on the last segment
        }
        if i > 0 {
            f &= !0x80; // CWR only on the first
        }
        s[l4.start + 13] = f;
        out.push(s);
    }
    out
}

/// Something attached to a bridge.
pub trait BridgePort: Send + Sync {
    /// Takes a copy of `frame` (or drops it). Called from any thread, without a
    /// bridge lock held.
    fn deliver(&self, frame: &Frame);
    /// Takes copies of several frames, in order (a port that can hand them over
    /// more cheaply together overrides this). Same context as [`BridgePort::deliver`].
    fn deliver_batch(&self, frames: &[Frame]) {
        for f in frames {
            self.deliver(f);
        }
    }
    /// A name for diagnostics (`vif1.0`, `tap0`).
    fn name(&self) -> String;
    /// Whether the port is backed up but still draining: a sender should hold off
    /// a little instead of having its frames dropped (see
    /// [`Bridge::forward_batch`]). A port that stopped draining must say `false`,
    /// so a stuck receiver never holds senders up.
    fn congested(&self) -> bool {
        false
    }
}

/// A port's number on its bridge.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u64);

struct Learned {
    port: PortId,
    seen: Instant,
}

#[derive(Default)]
struct State {
    ports: BTreeMap<PortId, Arc<dyn BridgePort>>,
    next: u64,
    fdb: HashMap<[u8; 6], Learned>,
    /// MACs claimed by devices on this bridge, with the claimant's name.
    claimed: HashMap<[u8; 6], String>,
}

/// A MAC address reserved on a bridge by one device ([`Bridge::claim_mac`]); the
/// reservation ends when this is dropped.
pub struct MacClaim {
    bridge: Arc<Bridge>,
    mac: [u8; 6],
}

impl fmt::Debug for MacClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacClaim")
            .field("bridge", &self.bridge.name)
            .field("mac", &self.mac)
            .finish()
    }
}

impl Drop for MacClaim {
    fn drop(&mut self) {
        self.bridge.lock().claimed.remove(&self.mac);
    }
}

/// Bridge counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Frames forwarded to exactly one port.
    pub unicast: u64,
    /// Frames flooded.
    pub flooded: u64,
    /// Frames dropped (runts, or destination behind the sender's own port).
    pub dropped: u64,
}

/// An L2 bridge.
pub struct Bridge {
    name: String,
    state: Mutex<State>,
    unicast: AtomicU64,
    flooded: AtomicU64,
    dropped: AtomicU64,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("name", &self.name)
            .field("ports", &self.lock().ports.len())
            .finish()
    }
}

fn is_unicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

impl Bridge {
    /// An empty bridge.
    pub fn new(name: impl Into<String>) -> Arc<Bridge> {
        Arc::new(Bridge {
            name: name.into(),
            state: Mutex::new(State::default()),
            unicast: AtomicU64::new(0),
            flooded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Attaches a port.
    pub fn attach(&self, port: Arc<dyn BridgePort>) -> PortId {
        let mut s = self.lock();
        s.next += 1;
        let id = PortId(s.next);
        s.ports.insert(id, port);
        id
    }

    /// Reserves `mac` for the device named `owner` (`vif1.0`). Two devices with one
    /// MAC on one bridge would steal each other's frames, so a second claim fails with
    /// the name of the device that holds it.
    pub fn claim_mac(self: &Arc<Self>, mac: [u8; 6], owner: &str) -> Result<MacClaim, String> {
        let mut s = self.lock();
        if let Some(other) = s.claimed.get(&mac) {
            return Err(other.clone());
        }
        s.claimed.insert(mac, owner.to_string());
        Ok(MacClaim {
            bridge: self.clone(),
            mac,
        })
    }

    /// Detaches a port and forgets the MACs learned behind it.
    pub fn detach(&self, id: PortId) {
        let mut s = self.lock();
        s.ports.remove(&id);
        s.fdb.retain(|_, l| l.port != id);
    }

    /// Names of the attached ports.
    pub fn port_names(&self) -> Vec<String> {
        self.lock().ports.values().map(|p| p.name()).collect()
    }

    /// Which port a MAC was learned on.
    pub fn lookup(&self, mac: [u8; 6]) -> Option<PortId> {
        self.lock().fdb.get(&mac).map(|l| l.port)
    }

    /// Counters.
    pub fn stats(&self) -> BridgeStats {
        BridgeStats {
            unicast: self.unicast.load(Ordering::Relaxed),
            flooded: self.flooded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Forwards a frame that arrived on port `from`.
    pub fn forward(&self, from: PortId, frame: &Frame) {
        self.forward_batch(from, std::slice::from_ref(frame));
    }

    /// Forwards frames that arrived on port `from`, in order: each as
    /// [`Bridge::forward`] would, with one table lookup pass (one lock) for
    /// every eight runs of frames with one destination (the whole batch
    /// of a stream), no allocation (but a flood's port list), and
    /// consecutive frames for the same port handed over together
    /// ([`BridgePort::deliver_batch`]), so each port sees its frames in order.
    ///
    /// Returns a port that took unicast frames of this batch and is now
    /// [`BridgePort::congested`], if any: a sender that can wait (a vif's worker,
    /// whose guest then sees its own transmit ring fill up) polls it for a
    /// bounded time before sending more, so a receiver that drains slowly gets
    /// backpressure instead of drops.
    pub fn forward_batch(&self, from: PortId, frames: &[Frame]) -> Option<Arc<dyn BridgePort>> {
        if frames.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut congested = None;
        // Runs of consecutive frames with one destination, decided under the
        // lock and delivered after it, at most `MAX_RUNS` at a time (no
        // allocation: one batch of a stream is one run).
        let mut next = 0;
        while next < frames.len() {
            let mut runs: [Option<(usize, usize, Dest)>; MAX_RUNS] = Default::default();
            let mut n = 0usize;
            {
                let mut s = self.lock();
                if !s.ports.contains_key(&from) {
                    return congested; // detached meanwhile
                }
                // Consecutive frames between the same two addresses (a stream) are
                // decided once: learning the same source again changes nothing.
                let mut last: Option<([u8; 6], [u8; 6])> = None;
                let mut i = next;
                while let Some(frame) = frames.get(i) {
                    let pair = frame.dst().zip(frame.src());
                    let same_pair = pair.is_some() && pair == last && frame.len() >= 14;
                    // (`last` is only set after a frame long enough to be decided on
                    // its addresses, so a runt never decides for the frames after it.)
                    // (The runs cover frames `next..i` without a gap: the last one
                    // ends at `i`, so frame `i` extends it.)
                    let cur = n
                        .checked_sub(1)
                        .and_then(|k| runs.get_mut(k))
                        .and_then(|r| r.as_mut());
                    if let (true, Some((_, end, d))) = (same_pair, cur) {
                        d.count(self);
                        *end = i + 1;
                        i += 1;
                        continue;
                    }
                    if n == MAX_RUNS {
                        break; // the rest after these runs are delivered
                    }
                    let dest = self.decide(&mut s, from, frame, now);
                    last = pair.filter(|_| frame.len() >= 14);
                    let cur = n
                        .checked_sub(1)
                        .and_then(|k| runs.get_mut(k))
                        .and_then(|r| r.as_mut());
                    match cur {
                        Some((_, end, d)) if d.same(&dest) => *end = i + 1,
                        _ => {
                            if let Some(slot) = runs.get_mut(n) {
                                *slot = Some((i, i + 1, dest));
                                n += 1;
                            }
                        }
                    }
                    i += 1;
                }
                next = i;
            }
            for (start, end, dest) in runs.into_iter().flatten() {
                let Some(batch) = frames.get(start..end) else {
                    continue;
                };
                match dest {
                    Dest::Drop => {}
                    Dest::One(_, p) => {
                        p.deliver_batch(batch);
                        if congested.is_none() && p.congested() {
                            congested = Some(p);
                        }
                    }
                    // Floods never hold the sender up (one slow port would slow
                    // every broadcast).
                    Dest::Flood(ports) => {
                        for p in ports {
                            p.deliver_batch(batch);
                        }
                    }
                }
            }
        }
        congested
    }

    /// Learns `frame`'s source and decides where it goes (bridge lock held).
    fn decide(&self, s: &mut State, from: PortId, frame: &Frame, now: Instant) -> Dest {
        let (Some(dst), Some(src)) = (frame.dst(), frame.src()) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Dest::Drop;
        };
        if frame.len() < 14 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Dest::Drop;
        }
        if is_unicast(&src) {
            if let Some(l) = s.fdb.get_mut(&src) {
                l.port = from;
                l.seen = now;
            } else {
                if s.fdb.len() >= FDB_MAX {
                    s.fdb.retain(|_, l| now.duration_since(l.seen) < FDB_AGE);
                    if s.fdb.len() >= FDB_MAX {
                        let oldest = s.fdb.iter().min_by_key(|(_, l)| l.seen).map(|(m, _)| *m);
                        if let Some(m) = oldest {
                            s.fdb.remove(&m);
                        }
                    }
                }
                s.fdb.insert(
                    src,
                    Learned {
                        port: from,
                        seen: now,
                    },
                );
            }
        }
        let known = if is_unicast(&dst) {
            s.fdb
                .get(&dst)
                .filter(|l| now.duration_since(l.seen) < FDB_AGE)
                .map(|l| l.port)
        } else {
            None
        };
        match known {
            Some(p) if p == from => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Dest::Drop
            }
            Some(p) => match s.ports.get(&p) {
                Some(port) => {
                    self.unicast.fetch_add(1, Ordering::Relaxed);
                    Dest::One(p, port.clone())
                }
                None => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Dest::Drop
                }
            },
            None => {
                self.flooded.fetch_add(1, Ordering::Relaxed);
                Dest::Flood(
                    s.ports
                        .iter()
                        .filter(|(id, _)| **id != from)
                        .map(|(_, p)| p.clone())
                        .collect(),
                )
            }
        }
    }
}

/// Where a frame goes.
enum Dest {
    Drop,
    One(PortId, Arc<dyn BridgePort>),
    Flood(Vec<Arc<dyn BridgePort>>),
}

impl Dest {
    /// Counts one more frame decided like this one.
    fn count(&self, b: &Bridge) {
        let c = match self {
            Dest::Drop => &b.dropped,
            Dest::One(..) => &b.unicast,
            Dest::Flood(_) => &b.flooded,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether two frames with these destinations can be handed over together.
    fn same(&self, other: &Dest) -> bool {
        match (self, other) {
            (Dest::Drop, Dest::Drop) => true,
            (Dest::One(a, _), Dest::One(b, _)) => a == b,
            _ => false,
        }
    }
}

/// Bridges by name (what a toolstack keeps: `bridge=xenbr0` in a vif config).
#[derive(Debug, Default)]
pub struct Bridges {
    map: Mutex<BTreeMap<String, Arc<Bridge>>>,
}

impl Bridges {
    /// No bridges yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bridge called `name`, created on first use.
    pub fn get(&self, name: &str) -> Arc<Bridge> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(name.to_string())
            .or_insert_with(|| Bridge::new(name))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink(String, Mutex<Vec<Vec<u8>>>);
    impl BridgePort for Sink {
        fn deliver(&self, f: &Frame) {
            self.1.lock().unwrap().push(f.data.clone());
        }
        fn name(&self) -> String {
            self.0.clone()
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Frame {
        let mut d = dst.to_vec();
        d.extend_from_slice(&src);
        d.extend_from_slice(&[0x08, 0x00, 1, 2, 3]);
        Frame::new(d)
    }

    #[test]
    fn learns_floods_and_forwards() {
        let b = Bridge::new("br");
        let sinks: Vec<Arc<Sink>> = (0..3)
            .map(|i| Arc::new(Sink(format!("p{i}"), Mutex::new(Vec::new()))))
            .collect();
        let ids: Vec<PortId> = sinks.iter().map(|s| b.attach(s.clone())).collect();
        let (a, c) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xc]);
        // Unknown destination: flooded to everyone but the sender.
        b.forward(ids[0], &frame(c, a));
        let n: Vec<usize> = sinks.iter().map(|s| s.1.lock().unwrap().len()).collect();
        assert_eq!(n, vec![0, 1, 1]);
        assert_eq!(b.lookup(a), Some(ids[0]));
        // Reply from port 2: goes to port 0 only, and c is learned.
        b.forward(ids[2], &frame(a, c));
        let n: Vec<usize> = sinks.iter().map(|s| s.1.lock().unwrap().len()).collect();
        assert_eq!(n, vec![1, 1, 1]);
        b.forward(ids[0], &frame(c, a));
        let n: Vec<usize> = sinks.iter().map(|s| s.1.lock().unwrap().len()).collect();
        assert_eq!(n, vec![1, 1, 2]);
        // Broadcast floods.
        b.forward(ids[1], &frame([0xff; 6], [2, 0, 0, 0, 0, 0xb]));
        let n: Vec<usize> = sinks.iter().map(|s| s.1.lock().unwrap().len()).collect();
        assert_eq!(n, vec![2, 1, 3]);
        // A multicast source is never learned; runts are dropped.
        b.forward(ids[1], &frame(a, [1, 0, 0, 0, 0, 1]));
        assert_eq!(b.lookup([1, 0, 0, 0, 0, 1]), None);
        b.forward(ids[1], &Frame::new(vec![1, 2, 3]));
        assert_eq!(b.stats().dropped, 1);
        // Detach forgets what was learned there.
        b.detach(ids[2]);
        assert_eq!(b.lookup(c), None);
        assert_eq!(b.port_names().len(), 2);
    }

    /// A batch is forwarded exactly as its frames one by one would be: same
    /// frames to the same ports in the same order, same counters (runts, streams,
    /// floods, frames for the sender's own port mixed).
    #[test]
    fn batches_forward_like_single_frames() {
        let (a, c, d) = (
            [2, 0, 0, 0, 0, 0xa],
            [2, 0, 0, 0, 0, 0xc],
            [2, 0, 0, 0, 0, 0xd],
        );
        let mut frames = Vec::new();
        for i in 0..5u8 {
            let mut f = frame(c, a);
            f.data.push(i);
            frames.push(f);
        }
        let mut runt = frame(c, a);
        runt.data.truncate(13);
        frames.push(runt);
        frames.push(frame(c, a));
        frames.push(frame([0xff; 6], a));
        frames.push(frame([0xff; 6], a));
        frames.push(frame(d, a));
        frames.push(frame(a, a)); // to the sender's own port: dropped
        frames.push(frame(c, a));
        let run = |batched: bool| {
            let b = Bridge::new("br");
            let sinks: Vec<Arc<Sink>> = (0..3)
                .map(|i| Arc::new(Sink(format!("p{i}"), Mutex::new(Vec::new()))))
                .collect();
            let ids: Vec<PortId> = sinks.iter().map(|s| b.attach(s.clone())).collect();
            // Teach the bridge: c behind port 1, d behind port 2.
            b.forward(ids[1], &frame([0xff; 6], c));
            b.forward(ids[2], &frame([0xff; 6], d));
            if batched {
                assert!(b.forward_batch(ids[0], &frames).is_none());
            } else {
                for f in &frames {
                    b.forward(ids[0], f);
                }
            }
            let got: Vec<Vec<Vec<u8>>> =
                sinks.iter().map(|s| s.1.lock().unwrap().clone()).collect();
            (got, b.stats())
        };
        let (one, batch) = (run(false), run(true));
        assert_eq!(one, batch);
        assert_eq!(batch.1.dropped, 2);
        assert_eq!(
            batch.0[1].len(),
            1 + 5 + 1 + 2 + 1,
            "stream, broadcasts, last frame"
        );
    }

    /// Frames of one batch for one port go to it in one `deliver_batch`, in
    /// order, whatever their sources: a run of one destination is not cut when
    /// the address pair changes.
    #[test]
    fn frames_for_one_port_go_in_one_batch() {
        struct Batches(Mutex<Vec<Vec<Vec<u8>>>>);
        impl BridgePort for Batches {
            fn deliver(&self, f: &Frame) {
                self.deliver_batch(std::slice::from_ref(f));
            }
            fn deliver_batch(&self, frames: &[Frame]) {
                let b = frames.iter().map(|f| f.data.clone()).collect();
                self.0.lock().unwrap().push(b);
            }
            fn name(&self) -> String {
                "batches".into()
            }
        }
        let (a, c, e) = (
            [2, 0, 0, 0, 0, 0xa],
            [2, 0, 0, 0, 0, 0xc],
            [2, 0, 0, 0, 0, 0xe],
        );
        let b = Bridge::new("br");
        let from = b.attach(Arc::new(Batches(Mutex::new(Vec::new()))));
        let port = Arc::new(Batches(Mutex::new(Vec::new())));
        let to = b.attach(port.clone());
        b.forward(to, &frame([0xff; 6], c));
        let mut frames = vec![frame(c, a), frame(c, e), frame(c, a), frame(c, e)];
        for (i, f) in frames.iter_mut().enumerate() {
            f.data.push(i as u8);
        }
        let mut runt = frame(c, a);
        runt.data.truncate(13);
        frames.push(runt.clone());
        frames.push(runt);
        frames.push(frame(c, a));
        b.forward_batch(from, &frames);
        let got = port.0.lock().unwrap().clone();
        let want: Vec<Vec<Vec<u8>>> = vec![
            frames[..4].iter().map(|f| f.data.clone()).collect(),
            vec![frames[6].data.clone()],
        ];
        assert_eq!(got, want);
        assert_eq!(b.stats().dropped, 2);
    }

    #[test]
    fn tcp_segmentation_fixes_headers() {
        for (ipv6, csum_blank) in [(false, true), (true, true), (false, false), (true, false)] {
            // Ethernet + IP + TCP with 10000 payload bytes, checksum blank (or
            // not: a GSO frame's segments get checksums either way).
            let mut f = vec![0u8; 14];
            f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xc, 2, 0, 0, 0, 0, 0xa]);
            f[12..14].copy_from_slice(if ipv6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            let payload: Vec<u8> = (0..10000u32).map(|i| (i * 7) as u8).collect();
            let tcp_len = 20 + payload.len();
            if ipv6 {
                let mut ip = vec![0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
                ip[6] = 6;
                ip[8] = 0xfd;
                ip[24] = 0xfd;
                ip[39] = 2;
                f.extend_from_slice(&ip);
            } else {
                let mut ip = vec![0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
                ip[4..6].copy_from_slice(&0x1207u16.to_be_bytes());
                ip[9] = 6;
                ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
                ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
                // A valid header checksum: segmenting must recompute it, not
                // add to it.
                let c = csum::internet_checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            let mut tcp = vec![0u8; 20];
            tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
            tcp[12] = 5 << 4;
            tcp[13] = 0x18 | 0x01 | 0x80; // PSH ACK FIN CWR
            f.extend_from_slice(&tcp);
            f.extend_from_slice(&payload);
            let eth = f[..14].to_vec();
            let big = Frame {
                data: f,
                csum_blank,
                data_validated: false,
                gso: Some(Gso {
                    mss: 1448,
                    ty: if ipv6 { 2 } else { 1 },
                }),
                tail: None,
            };
            let segs = big.resolve_offloads();
            assert_eq!(segs.len(), 10000usize.div_ceil(1448));
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                assert_eq!(csum::verify(&s.data[..]), Some(true));
                // A blank checksum the bridge computed vouches for the data.
                assert_eq!(s.data_validated, csum_blank);
                assert_eq!(&s.data[..14], &eth[..], "Ethernet header kept");
                if ipv6 {
                    let pl = u16::from_be_bytes([s.data[18], s.data[19]]);
                    assert_eq!(usize::from(pl), s.data.len() - 54, "IPv6 payload length");
                } else {
                    let total = u16::from_be_bytes([s.data[16], s.data[17]]);
                    assert_eq!(usize::from(total), s.data.len() - 14, "IPv4 total length");
                    let id = u16::from_be_bytes([s.data[18], s.data[19]]);
                    assert_eq!(usize::from(id), 0x1207 + i, "IPv4 id");
                }
                let l4 = csum::locate(&s.data[..]).unwrap();
                let seq =
                    u32::from_be_bytes(s.data[l4.start + 4..l4.start + 8].try_into().unwrap());
                assert_eq!(seq, 1000 + (i * 1448) as u32);
                let fl = s.data[l4.start + 13];
                assert_eq!(fl & 0x09 != 0, i + 1 == segs.len(), "FIN/PSH last only");
                assert_eq!(fl & 0x80 != 0, i == 0, "CWR first only");
                if !ipv6 {
                    let ihl = (s.data[14] & 0x0f) as usize * 4;
                    assert_eq!(csum::internet_checksum(&s.data[14..14 + ihl]), 0);
                }
                joined.extend_from_slice(&s.data[l4.start + 20..]);
                assert!(s.data.len() <= 14 + if ipv6 { 40 } else { 20 } + 20 + 1448);
            }
            assert_eq!(joined, payload);
        }
    }

    /// What `segment_tcp` does not cut: not TCP, an MSS of 0, a TCP header
    /// shorter than 20 bytes or longer than the segment, a payload within one
    /// MSS.
    #[test]
    fn segmentation_leaves_what_it_cannot_cut_whole() {
        let tcp = |payload: usize| {
            let mut f = vec![0u8; 14];
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
            ip[9] = 6;
            f.extend_from_slice(&ip);
            let mut t = vec![0u8; 20 + payload];
            t[12] = 5 << 4;
            f.extend_from_slice(&t);
            f
        };
        let f = tcp(3000);
        assert_eq!(segment_tcp(&f, 1000).len(), 3);
        assert_eq!(segment_tcp(&f, 3000), vec![f.clone()]);
        assert_eq!(segment_tcp(&f, 0), vec![f.clone()]);
        let mut udp = f.clone();
        udp[23] = 17;
        assert_eq!(segment_tcp(&udp, 1000), vec![udp.clone()]);
        let mut short = f.clone();
        short[14 + 20 + 12] = 4 << 4;
        assert_eq!(segment_tcp(&short, 1000), vec![short.clone()]);
        // A header of 60 bytes in a segment of 40: the header would end past it.
        let mut long = tcp(0);
        long[14 + 20 + 12] = 15 << 4;
        assert_eq!(segment_tcp(&long, 1), vec![long.clone()]);
        // The same header length with room for it: cut.
        let mut ok = tcp(60);
        ok[14 + 20 + 12] = 15 << 4;
        assert_eq!(segment_tcp(&ok, 10).len(), 2);
    }

    /// A learned address lasts less than `FDB_AGE` without traffic from it:
    /// at exactly that age it is no longer used to forward, and a full table
    /// first forgets what has reached that age (here half of it), and only then
    /// the oldest entry. (`decide` is given the time, so the ages are exact.)
    #[test]
    fn learned_addresses_age_out() {
        let b = Bridge::new("br");
        let p = b.attach(Arc::new(Sink("p".into(), Mutex::new(Vec::new()))));
        let q = b.attach(Arc::new(Sink("q".into(), Mutex::new(Vec::new()))));
        let (a, c) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xc]);
        let t0 = Instant::now();
        let mut s = b.lock();
        b.decide(&mut s, p, &frame(c, a), t0);
        let young = t0 + FDB_AGE - Duration::from_nanos(1);
        assert!(matches!(b.decide(&mut s, q, &frame(a, c), young), Dest::One(x, _) if x == p));
        let t1 = t0 + FDB_AGE;
        // (`c` was learned at `young`, `a` at t0: `a` has reached the age.)
        assert!(matches!(
            b.decide(&mut s, q, &frame(a, c), t1),
            Dest::Flood(_)
        ));
        s.fdb.clear();
        let half = FDB_MAX / 2;
        for i in 0..FDB_MAX as u32 {
            let m = i.to_be_bytes();
            let at = if (i as usize) < half {
                t0
            } else {
                t0 + FDB_AGE / 2
            };
            b.decide(
                &mut s,
                p,
                &frame([0xff; 6], [2, 0, m[0], m[1], m[2], m[3]]),
                at,
            );
        }
        assert_eq!(s.fdb.len(), FDB_MAX);
        b.decide(&mut s, q, &frame([0xff; 6], [2, 1, 0, 0, 0, 1]), t1);
        assert_eq!(s.fdb.len(), FDB_MAX - half + 1);
        assert!(!s.fdb.contains_key(&[2, 0, 0, 0, 0, 0]));
        assert!(s.fdb.contains_key(&[2, 0, 0, 0, 0x08, 0]));
    }

    #[test]
    fn fdb_is_bounded() {
        let b = Bridge::new("br");
        let s = Arc::new(Sink("p".into(), Mutex::new(Vec::new())));
        let p = b.attach(s);
        let q = b.attach(Arc::new(Sink("q".into(), Mutex::new(Vec::new()))));
        for i in 0..(FDB_MAX + 100) as u32 {
            let b4 = i.to_be_bytes();
            b.forward(p, &frame([0xff; 6], [2, 0, b4[0], b4[1], b4[2], b4[3]]));
        }
        assert!(b.lock().fdb.len() <= FDB_MAX);
        let _ = q;
    }
}
