//! [`NetBackend`]'s data path: tx and rx rings, grants, frames and the hooks that
//! bend the protocol.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hypercall::abi::gnttab::{GTF_PERMIT_ACCESS, GTF_READONLY, GTF_TYPE_MASK};
use hypercall::abi::netif::{
    self, ExtraInfo, RxRequest, RxResponse, TxRequest, TxResponse, EXTRA_FLAG_MORE,
};
use hypercall::{DomId, Gfn, GrantRef, PAGE_SIZE};

use super::ring::{RawRing, RING_SIZE, RX_SLOT, TX_SLOT};
use crate::xenstore::Device;
use crate::{GrantObserver, HostPlatform, HostRegion};

/// The backend's domain (what the frontend must grant its pages to).
pub const BACKEND_DOMID: DomId = DomId(0);

/// Most slots (data and extra-info) the peer takes for one tx frame before calling
/// the chain broken (`XEN_NETBK_LEGACY_SLOTS_MAX`-like bound, generous).
const MAX_TX_CHAIN: usize = netif::NR_SLOTS_MIN + 4;

/// A page of zeros, to compare pages with.
static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// A frame the backend took from a tx ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxFrame {
    /// The queue it came on.
    pub queue: usize,
    /// Its bytes (empty if the slots were unusable; see [`TxFrame::ok`]).
    pub data: Vec<u8>,
    /// `NETTXF_*` of its first slot.
    pub flags: u16,
    /// Extra-info slots that came with it.
    pub extras: Vec<ExtraInfo>,
    /// The ids of its data slots, in order.
    pub ids: Vec<u16>,
    /// The grants of its data slots, in order.
    pub grefs: Vec<GrantRef>,
    /// The frames those grants named (`Gfn(0)` where unmappable).
    pub pages: Vec<Gfn>,
    /// Whether every slot was valid (grant mapped, inside its page, sizes
    /// consistent); if not the frame was answered `NETIF_RSP_ERROR`.
    pub ok: bool,
}

/// Rewrites the answer to one tx request: gets the request and the response a
/// correct backend writes, returns what goes on the ring instead (nothing, one
/// response, several).
pub type TxHook = Box<dyn FnMut(&TxRequest, TxResponse) -> Vec<TxResponse>>;

/// What the backend does with tx requests.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// Takes, copies and answers them (through [`Hooks::tx_response`]).
    Answer,
    /// Takes and copies them, never answers.
    Hold,
    /// Leaves them on the ring.
    Ignore,
}

/// The knobs of a [`NetBackend`] (all public: set them between the driver's calls).
pub struct Hooks {
    /// What happens to tx requests (default [`TxMode::Answer`]).
    pub tx: TxMode,
    /// Rewrites each tx answer (default: none, answers as they are).
    pub tx_response: Option<TxHook>,
    /// Takes rx requests (posted buffers) off the ring as they come (default true).
    /// Taken buffers are used for frames to deliver ([`NetBackend::deliver`],
    /// [`NetBackend::push_rx`]); a backend that never delivers hoards them.
    pub take_rx: bool,
    /// Publishes `rsp_prod` at the end of each turn (default true); off, the case
    /// publishes itself ([`NetBackend::publish`], [`RawRing::set_rsp_prod`]).
    pub publish: bool,
    /// Tx grants are mapped when read and never unmapped (default false).
    pub keep_tx_mapped: bool,
    /// Rx buffers are mapped when taken and never unmapped, neither when answered
    /// nor at close (default false).
    pub keep_rx_mapped: bool,
    /// The ring pages stay mapped when the frontend closes (default false).
    pub keep_rings_mapped: bool,
    /// Written into `req_event` and `rsp_event` of every ring at each turn,
    /// instead of arming `req_event` (default none).
    pub event_garbage: Option<u32>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            tx: TxMode::Answer,
            tx_response: None,
            take_rx: true,
            publish: true,
            keep_tx_mapped: false,
            keep_rx_mapped: false,
            keep_rings_mapped: false,
            event_garbage: None,
        }
    }
}

/// One raw rx slot for [`NetBackend::push_rx`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RxSlot {
    /// A response: `bytes` are written at `offset` of the buffer (what fits in
    /// the page), then `{id, offset, flags, status}` goes on the ring, `id` being
    /// the request's unless given.
    Data {
        /// The response id (`None`: the request's, as a correct backend does).
        id: Option<u16>,
        /// `offset`.
        offset: u16,
        /// `NETRXF_*`.
        flags: u16,
        /// `status`: the length, or a negative `NETIF_RSP_*`.
        status: i16,
        /// What to write into the buffer.
        bytes: Vec<u8>,
    },
    /// An extra-info slot (its buffer is not written).
    Extra(ExtraInfo),
}

impl RxSlot {
    /// A correct data slot holding `bytes` at offset 0, continued if `more`.
    pub fn data(bytes: &[u8], more: bool) -> RxSlot {
        RxSlot::Data {
            id: None,
            offset: 0,
            flags: if more { netif::NETRXF_MORE_DATA } else { 0 },
            status: i16::try_from(bytes.len()).unwrap_or(i16::MAX),
            bytes: bytes.to_vec(),
        }
    }
}

/// An rx buffer the backend took (its request).
#[derive(Copy, Clone, Debug)]
struct RxBuf {
    req: RxRequest,
}

/// A tx slot of a frame being assembled.
#[derive(Copy, Clone, Debug)]
enum TxSlot {
    Data(TxRequest),
    Extra(TxRequest),
}

/// One queue as the backend sees it.
#[derive(Debug)]
pub struct PeerQueue {
    /// The tx ring.
    pub tx: RawRing,
    /// The rx ring.
    pub rx: RawRing,
    /// The grants of the two rings (tx, rx).
    pub ring_refs: (GrantRef, GrantRef),
    /// The event channels the frontend gave (tx, rx; the same without split
    /// channels).
    pub ports: (u32, u32),
    rx_bufs: VecDeque<RxBuf>,
    chain: Vec<TxSlot>,
    extras_expected: bool,
    deliver: VecDeque<Vec<u8>>,
    held_tx: Vec<TxRequest>,
}

/// The data path of a scripted netif backend (see the [module docs](super)).
pub struct NetBackend {
    host: HostPlatform,
    grants: Option<GrantObserver>,
    queues: Vec<PeerQueue>,
    /// The knobs.
    pub hooks: Hooks,
    /// Frames taken from the tx rings, in order.
    pub tx_frames: Vec<TxFrame>,
    /// Frames delivered on the rx rings (whole frames written and answered).
    pub rx_delivered: u64,
    /// Protocol violations by the frontend the backend saw (bad grants, slots
    /// crossing their page, garbage in padding, guest data in fresh pages...).
    pub violations: Vec<String>,
    /// The frame of every rx buffer taken, in order (to see whether a page is
    /// posted again).
    pub rx_posted: Vec<Gfn>,
    /// The frame of every tx slot read, in order.
    pub tx_pages: Vec<Gfn>,
    mapped: BTreeMap<u32, (Gfn, usize)>,
    seen: BTreeSet<u64>,
    pub(super) hs: super::backend::Handshake,
}

impl NetBackend {
    /// A backend with no queues yet for the device `dev` (see
    /// [`super::NetPeer::install`], which also offers features and goes
    /// `InitWait`).
    pub fn new(dev: Device) -> NetBackend {
        NetBackend {
            host: dev.server().host(),
            grants: None,
            queues: Vec::new(),
            hooks: Hooks::default(),
            tx_frames: Vec::new(),
            rx_delivered: 0,
            violations: Vec::new(),
            rx_posted: Vec::new(),
            tx_pages: Vec::new(),
            mapped: BTreeMap::new(),
            seen: BTreeSet::new(),
            hs: super::backend::Handshake::new(dev),
        }
    }

    /// The platform.
    pub fn host(&self) -> &HostPlatform {
        &self.host
    }

    /// Tells the backend where the frontend's grant table is (what Xen knows).
    pub fn set_grants(&mut self, grants: GrantObserver) {
        self.grants = Some(grants);
    }

    /// The frontend's grant table, if known.
    pub fn grants(&self) -> Option<&GrantObserver> {
        self.grants.as_ref()
    }

    pub(super) fn violation(&mut self, what: String) {
        if self.violations.len() < 64 {
            self.violations.push(what);
        }
    }

    /// Maps grant `gref` as Xen would for the backend (`GNTTABOP_map_grant_ref`):
    /// the entry must grant access to [`BACKEND_DOMID`], writable if `write`.
    /// Sets `GTF_reading`/`GTF_writing` until [`NetBackend::unmap`].
    pub fn map(&mut self, gref: GrantRef, write: bool) -> Result<HostRegion, String> {
        let obs = self
            .grants
            .as_ref()
            .ok_or("the frontend's grant table is unknown")?;
        let flags = obs
            .flags(gref)
            .ok_or_else(|| format!("grant {} is outside the table", gref.0))?;
        if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
            return Err(format!(
                "grant {} is not granted (flags {flags:#x})",
                gref.0
            ));
        }
        let dom = obs.domid(gref).unwrap_or(u16::MAX);
        if dom != BACKEND_DOMID.0 {
            return Err(format!(
                "grant {} is for domain {dom}, not the backend",
                gref.0
            ));
        }
        if write && flags & GTF_READONLY != 0 {
            return Err(format!("grant {} is read-only", gref.0));
        }
        let gfn = obs.frame(gref).unwrap_or(Gfn(0));
        let page = self.host.frame(gfn).ok_or_else(|| {
            format!(
                "grant {} names frame {:#x}, not guest memory",
                gref.0, gfn.0
            )
        })?;
        obs.map(gref, write);
        self.mapped.entry(gref.0).or_insert((gfn, 0)).1 += 1;
        Ok(page)
    }

    /// Undoes one [`NetBackend::map`] of `gref` (the flags clear with the last one).
    pub fn unmap(&mut self, gref: GrantRef) {
        let Some(e) = self.mapped.get_mut(&gref.0) else {
            return;
        };
        e.1 -= 1;
        if e.1 == 0 {
            self.mapped.remove(&gref.0);
            if let Some(obs) = &self.grants {
                obs.unmap(gref);
            }
        }
    }

    /// Grants the backend maps now, with their frames.
    pub fn mapped(&self) -> Vec<(GrantRef, Gfn)> {
        self.mapped
            .iter()
            .map(|(&r, &(g, _))| (GrantRef(r), g))
            .collect()
    }

    /// Unmaps everything (what a backend going away does).
    pub fn unmap_all(&mut self) {
        for (r, _) in self.mapped() {
            self.mapped.remove(&r.0);
            if let Some(obs) = &self.grants {
                obs.unmap(r);
            }
        }
    }

    /// Maps queue rings `tx_ref`/`rx_ref` and starts serving them; returns the
    /// queue's index.
    pub fn attach_queue(
        &mut self,
        ring_refs: (GrantRef, GrantRef),
        ports: (u32, u32),
    ) -> Result<usize, String> {
        let tx = self.map(ring_refs.0, true)?;
        let rx = match self.map(ring_refs.1, true) {
            Ok(r) => r,
            Err(e) => {
                self.unmap(ring_refs.0);
                return Err(e);
            }
        };
        self.queues.push(PeerQueue {
            tx: RawRing::attach(tx, TX_SLOT),
            rx: RawRing::attach(rx, RX_SLOT),
            ring_refs,
            ports,
            rx_bufs: VecDeque::new(),
            chain: Vec::new(),
            extras_expected: false,
            deliver: VecDeque::new(),
            held_tx: Vec::new(),
        });
        Ok(self.queues.len() - 1)
    }

    /// Stops serving every queue (the frontend closed): unmaps the rings (unless
    /// [`Hooks::keep_rings_mapped`]); buffers mapped under
    /// [`Hooks::keep_tx_mapped`]/[`Hooks::keep_rx_mapped`] stay mapped.
    pub fn detach_queues(&mut self) {
        let queues = core::mem::take(&mut self.queues);
        for q in &queues {
            if !self.hooks.keep_rings_mapped {
                self.unmap(q.ring_refs.0);
                self.unmap(q.ring_refs.1);
            }
        }
    }

    /// The queues being served.
    pub fn queues(&self) -> &[PeerQueue] {
        &self.queues
    }

    /// Queue `q` (`None` if there is no such queue).
    pub fn queue(&self, q: usize) -> Option<&PeerQueue> {
        self.queues.get(q)
    }

    /// Rx buffers taken from queue `q` and not used yet.
    pub fn rx_buffers(&self, q: usize) -> usize {
        self.queues.get(q).map_or(0, |qu| qu.rx_bufs.len())
    }

    /// Tx requests taken and not answered ([`TxMode::Hold`]).
    pub fn held_tx(&self, q: usize) -> usize {
        self.queues.get(q).map_or(0, |qu| qu.held_tx.len())
    }

    /// Queues `frame` for delivery on queue `q` (written into the frontend's
    /// buffers, one page per slot, at the next turns that find enough buffers).
    pub fn deliver(&mut self, q: usize, frame: &[u8]) {
        if let Some(qu) = self.queues.get_mut(q) {
            qu.deliver.push_back(frame.to_vec());
        }
    }

    /// Frames queued and not delivered yet (all queues).
    pub fn undelivered(&self) -> usize {
        self.queues.iter().map(|q| q.deliver.len()).sum()
    }

    /// Publishes the responses written on both rings of queue `q`.
    pub fn publish(&self, q: usize) {
        if let Some(qu) = self.queues.get(q) {
            qu.tx.publish();
            qu.rx.publish();
        }
    }

    /// Writes one raw rx slot into the next buffer taken from queue `q` (not
    /// published). `Err` if no buffer is left.
    pub fn push_rx(&mut self, q: usize, slot: RxSlot) -> Result<(), String> {
        self.take_rx(q);
        let buf = self
            .queues
            .get_mut(q)
            .ok_or_else(|| format!("no queue {q}"))?
            .rx_bufs
            .pop_front()
            .ok_or_else(|| format!("queue {q}: no rx buffer posted"))?;
        let rsp = match slot {
            RxSlot::Extra(x) => RxResponse::from(x),
            RxSlot::Data {
                id,
                offset,
                flags,
                status,
                bytes,
            } => {
                if !bytes.is_empty() {
                    self.write_buffer(buf, usize::from(offset), &bytes);
                }
                RxResponse {
                    id: id.unwrap_or(buf.req.id),
                    offset,
                    flags,
                    status,
                }
            }
        };
        if let Some(qu) = self.queues.get_mut(q) {
            let i = qu.rx.next_response();
            qu.rx.write_rx_response(i, &rsp);
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` of buffer `buf` (clipped to its page).
    fn write_buffer(&mut self, buf: RxBuf, offset: usize, bytes: &[u8]) {
        let gref = GrantRef(buf.req.gref);
        match self.map(gref, true) {
            Ok(page) => {
                let n = bytes.len().min(PAGE_SIZE.saturating_sub(offset));
                if n > 0 {
                    page.mem().write(offset, &bytes[..n]);
                }
                self.unmap(gref);
            }
            Err(e) => self.violation(format!("rx buffer: {e}")),
        }
    }

    /// One turn of the backend's data path: takes tx requests (and answers them),
    /// takes rx buffers, delivers queued frames, publishes, re-arms events. Run by
    /// the platform's `wait()` once the backend is installed; callable directly.
    pub fn turn(&mut self) {
        self.handshake_turn();
        for q in 0..self.queues.len() {
            self.serve_tx(q);
            self.take_rx(q);
            self.flush_rx(q);
            let Some(qu) = self.queues.get(q) else {
                continue;
            };
            if self.hooks.publish {
                qu.tx.publish();
                qu.rx.publish();
            }
            match self.hooks.event_garbage {
                Some(g) => {
                    for r in [&qu.tx, &qu.rx] {
                        r.set_req_event(g);
                        r.set_rsp_event(g);
                    }
                }
                None => {
                    qu.tx.arm_requests();
                    qu.rx.arm_requests();
                }
            }
        }
    }

    /// Takes the rx buffers posted on queue `q` (if [`Hooks::take_rx`]).
    pub fn take_rx(&mut self, q: usize) {
        if !self.hooks.take_rx {
            return;
        }
        for _ in 0..RING_SIZE {
            let Some(qu) = self.queues.get_mut(q) else {
                return;
            };
            if let Err(n) = qu.rx.pending_requests() {
                self.violation(format!(
                    "queue {q}: rx req_prod {n} slots ahead of req_cons"
                ));
                return;
            }
            let Some(i) = qu.rx.next_request() else {
                return;
            };
            let req = qu.rx.rx_request(i);
            qu.rx_bufs.push_back(RxBuf { req });
            if req._pad != 0 {
                self.violation(format!(
                    "rx request {i}: non-zero padding {:#x} (R7)",
                    req._pad
                ));
            }
            // G3: a page posted for the first time holds nothing of the guest's.
            let gref = GrantRef(req.gref);
            match self.map(gref, true) {
                Ok(page) => {
                    let gfn = page.gfn();
                    self.rx_posted.push(gfn);
                    if self.seen.insert(gfn.0) {
                        let mut bytes = vec![0u8; PAGE_SIZE];
                        page.mem().read(0, &mut bytes);
                        // One comparison (a memcmp, cheap under Miri); the byte
                        // search only for the evidence.
                        let dirty = bytes[..] != ZERO_PAGE[..];
                        let at = || bytes.iter().position(|&b| b != 0).unwrap_or(0);
                        if dirty {
                            let at = at();
                            self.violation(format!(
                                "rx buffer (grant {}) posted with guest data at byte {at} (G3)",
                                gref.0
                            ));
                        }
                    }
                    if !self.hooks.keep_rx_mapped {
                        self.unmap(gref);
                    }
                }
                Err(e) => self.violation(format!("rx request {i}: {e}")),
            }
        }
    }

    /// Delivers queued frames on queue `q` while enough buffers are taken.
    fn flush_rx(&mut self, q: usize) {
        loop {
            let Some(qu) = self.queues.get(q) else {
                return;
            };
            let Some(frame) = qu.deliver.front() else {
                return;
            };
            let slots = frame.len().div_ceil(PAGE_SIZE).max(1);
            if qu.rx_bufs.len() < slots {
                return;
            }
            let frame = self.queues[q].deliver.pop_front().unwrap_or_default();
            let chunks: Vec<&[u8]> = if frame.is_empty() {
                vec![&[][..]]
            } else {
                frame.chunks(PAGE_SIZE).collect()
            };
            let n = chunks.len();
            for (k, c) in chunks.into_iter().enumerate() {
                let _ = self.push_rx(q, RxSlot::data(c, k + 1 < n));
            }
            self.rx_delivered += 1;
        }
    }

    /// Takes and answers (or holds) the tx requests of queue `q`.
    fn serve_tx(&mut self, q: usize) {
        if self.hooks.tx == TxMode::Ignore {
            return;
        }
        for _ in 0..RING_SIZE {
            let Some(qu) = self.queues.get_mut(q) else {
                return;
            };
            if let Err(n) = qu.tx.pending_requests() {
                self.violation(format!(
                    "queue {q}: tx req_prod {n} slots ahead of req_cons"
                ));
                return;
            }
            let Some(i) = qu.tx.next_request() else {
                return;
            };
            let req = qu.tx.tx_request(i);
            let complete = if qu.extras_expected {
                let x = req.as_extra();
                qu.extras_expected = x.flags & EXTRA_FLAG_MORE != 0;
                qu.chain.push(TxSlot::Extra(req));
                let tail = &zerocopy_bytes(&req)[8..];
                let more_data = match qu.chain.iter().rev().find_map(|s| match s {
                    TxSlot::Data(d) => Some(d.flags),
                    TxSlot::Extra(_) => None,
                }) {
                    Some(f) => f & netif::NETTXF_MORE_DATA != 0,
                    None => false,
                };
                let dirty_tail = tail.iter().any(|&b| b != 0);
                let done = !qu.extras_expected && !more_data;
                if dirty_tail {
                    self.violation(format!("tx extra-info slot {i}: non-zero tail (R7)"));
                }
                done
            } else {
                let first = qu.chain.is_empty();
                qu.chain.push(TxSlot::Data(req));
                if first && req.flags & netif::NETTXF_EXTRA_INFO != 0 {
                    qu.extras_expected = true;
                }
                !qu.extras_expected && req.flags & netif::NETTXF_MORE_DATA == 0
            };
            let too_long = self.queues[q].chain.len() > MAX_TX_CHAIN;
            if too_long {
                self.violation(format!(
                    "queue {q}: tx chain longer than {MAX_TX_CHAIN} slots"
                ));
            }
            if complete || too_long {
                self.finish_tx(q, !too_long);
            }
        }
    }

    /// Reads the frame whose slots are in queue `q`'s chain and answers them.
    fn finish_tx(&mut self, q: usize, mut ok: bool) {
        let Some(qu) = self.queues.get_mut(q) else {
            return;
        };
        let chain = core::mem::take(&mut qu.chain);
        qu.extras_expected = false;
        let data: Vec<TxRequest> = chain
            .iter()
            .filter_map(|s| match s {
                TxSlot::Data(r) => Some(*r),
                TxSlot::Extra(_) => None,
            })
            .collect();
        let extras: Vec<ExtraInfo> = chain
            .iter()
            .filter_map(|s| match s {
                TxSlot::Extra(r) => Some(r.as_extra()),
                TxSlot::Data(_) => None,
            })
            .collect();
        let total = data.first().map_or(0, |r| usize::from(r.size));
        let rest: usize = data.iter().skip(1).map(|r| usize::from(r.size)).sum();
        let Some(first_len) = total.checked_sub(rest) else {
            self.violation(format!(
                "queue {q}: tx frame of {total} bytes whose later slots hold {rest}"
            ));
            return self.answer_tx(q, &chain, false, (Vec::new(), Vec::new()), extras, 0);
        };
        let mut bytes = Vec::with_capacity(total);
        let mut pages = Vec::with_capacity(data.len());
        for (k, r) in data.iter().enumerate() {
            pages.push(
                self.grants
                    .as_ref()
                    .and_then(|g| g.frame(GrantRef(r.gref)))
                    .unwrap_or(Gfn(0)),
            );
            let len = if k == 0 {
                first_len
            } else {
                usize::from(r.size)
            };
            let off = usize::from(r.offset);
            if off + len > PAGE_SIZE {
                self.violation(format!(
                    "tx slot id {}: offset {off} + {len} bytes crosses its page",
                    r.id
                ));
                ok = false;
                continue;
            }
            let gref = GrantRef(r.gref);
            match self.map(gref, false) {
                Ok(page) => {
                    self.tx_pages.push(page.gfn());
                    let mut buf = vec![0u8; PAGE_SIZE];
                    page.mem().read(0, &mut buf);
                    if self.seen.insert(page.gfn().0) {
                        let outside = buf[..off] != ZERO_PAGE[..off]
                            || buf[off + len..] != ZERO_PAGE[off + len..];
                        if outside {
                            self.violation(format!(
                                "tx page (grant {}) holds bytes outside its slot on first use (G3)",
                                gref.0
                            ));
                        }
                    }
                    bytes.extend_from_slice(&buf[off..off + len]);
                    if !self.hooks.keep_tx_mapped {
                        self.unmap(gref);
                    }
                }
                Err(e) => {
                    self.violation(format!("tx slot id {}: {e}", r.id));
                    ok = false;
                }
            }
        }
        let flags = data.first().map_or(0, |r| r.flags);
        self.answer_tx(q, &chain, ok, (bytes, pages), extras, flags);
    }

    fn answer_tx(
        &mut self,
        q: usize,
        chain: &[TxSlot],
        ok: bool,
        (data, pages): (Vec<u8>, Vec<Gfn>),
        extras: Vec<ExtraInfo>,
        flags: u16,
    ) {
        let data_slots = || {
            chain.iter().filter_map(|s| match s {
                TxSlot::Data(r) => Some(*r),
                TxSlot::Extra(_) => None,
            })
        };
        let ids = data_slots().map(|r| r.id).collect();
        let grefs = data_slots().map(|r| GrantRef(r.gref)).collect();
        self.tx_frames.push(TxFrame {
            queue: q,
            data: if ok { data } else { Vec::new() },
            flags,
            extras,
            ids,
            grefs,
            pages,
            ok,
        });
        let status = if ok {
            netif::RSP_OKAY
        } else {
            netif::RSP_ERROR
        };
        let mut out = Vec::with_capacity(chain.len());
        for s in chain {
            let (req, rsp) = match *s {
                TxSlot::Data(r) => (r, TxResponse { id: r.id, status }),
                TxSlot::Extra(r) => (
                    r,
                    TxResponse {
                        id: r.id,
                        status: netif::RSP_NULL,
                    },
                ),
            };
            if self.hooks.tx == TxMode::Hold {
                if let (TxSlot::Data(_), Some(qu)) = (s, self.queues.get_mut(q)) {
                    qu.held_tx.push(req);
                }
                continue;
            }
            match self.hooks.tx_response.as_mut() {
                Some(h) => out.extend(h(&req, rsp)),
                None => out.push(rsp),
            }
        }
        if let Some(qu) = self.queues.get_mut(q) {
            for r in out {
                let i = qu.tx.next_response();
                qu.tx.write_tx_response(i, &r);
            }
        }
    }
}

/// The bytes of a tx slot.
fn zerocopy_bytes(r: &TxRequest) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&r.gref.to_ne_bytes());
    b[4..6].copy_from_slice(&r.offset.to_ne_bytes());
    b[6..8].copy_from_slice(&r.flags.to_ne_bytes());
    b[8..10].copy_from_slice(&r.id.to_ne_bytes());
    b[10..12].copy_from_slice(&r.size.to_ne_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::StoreServer;
    use hypercall::gnttab::GrantTable;

    #[test]
    fn maps_only_what_xen_would_and_marks_the_entry() {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let mut be = NetBackend::new(server.add_device("vif", 0));
        let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
        let page = host.pages(1);
        assert!(be.map(GrantRef(9), false).is_err(), "no table known yet");
        be.set_grants(GrantObserver::new(&host, table.frames().unwrap()));
        let ro = table.grant_access(BACKEND_DOMID, page.gfn(), true).unwrap();
        let other = table.grant_access(DomId(5), page.gfn(), false).unwrap();
        let rw = table
            .grant_access(BACKEND_DOMID, page.gfn(), false)
            .unwrap();
        let err = |r: Result<HostRegion, String>| r.err().unwrap_or_default();
        assert!(err(be.map(ro, true)).contains("read-only"));
        assert!(err(be.map(other, false)).contains("domain 5"));
        assert!(err(be.map(GrantRef(100), false)).contains("not granted"));
        assert!(err(be.map(GrantRef(512), false)).contains("outside the table"));
        let m = be.map(ro, false).unwrap();
        m.mem().store_u32(0, 7);
        assert_eq!(page.mem().load_u32(0), 7, "the granted frame itself");
        let m2 = be.map(rw, true).unwrap();
        assert!(table.end_access(ro).is_err(), "mapped: the end fails");
        assert_eq!(be.mapped(), vec![(ro, page.gfn()), (rw, page.gfn())]);
        be.unmap(ro);
        table.end_access(ro).unwrap();
        be.unmap_all();
        table.end_access(rw).unwrap();
        drop((m, m2));
        host.clear_peers();
    }

    #[test]
    fn raw_ring_indices_and_slots() {
        let host = HostPlatform::new();
        let page = host.pages(1);
        let m = page.mem();
        m.store_u32(8, 5); // rsp_prod: the frontend started at 5
        m.store_u32(0, 7); // req_prod: two requests
        let mut r = RawRing::attach(page.clone(), RX_SLOT);
        assert_eq!((r.req_cons(), r.rsp_prod_pvt()), (5, 5));
        assert_eq!(r.pending_requests(), Ok(2));
        m.write_obj(
            64 + 5 * RX_SLOT,
            &RxRequest {
                id: 3,
                _pad: 0,
                gref: 44,
            },
        );
        let i = r.next_request().unwrap();
        assert_eq!(r.rx_request(i).gref, 44);
        let j = r.next_response();
        r.write_rx_response(
            j,
            &RxResponse {
                id: 3,
                offset: 0,
                flags: 0,
                status: 60,
            },
        );
        assert_eq!(r.rsp_prod(), 5, "not published yet");
        r.publish();
        assert_eq!(r.rsp_prod(), 6);
        r.set_rsp_prod(u32::MAX);
        assert_eq!(m.load_u32(8), u32::MAX, "raw");
        m.store_u32(0, 5 + RING_SIZE + 10);
        assert_eq!(
            r.pending_requests(),
            Err(RING_SIZE + 9),
            "req_prod runs ahead"
        );
        assert_eq!(r.next_request(), None);
    }

    /// The accessors, and at most 64 violations kept (cargo-mutants).
    #[test]
    fn accessors_queue_indices_and_the_violation_cap() {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let mut be = NetBackend::new(server.add_device("vif", 0));
        let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
        let page = host.pages(1);
        assert!(
            be.host().frame(page.gfn()).is_some(),
            "the platform it was built on"
        );
        assert!(be.grants().is_none());
        be.set_grants(GrantObserver::new(&host, table.frames().unwrap()));
        let g = table
            .grant_access(BACKEND_DOMID, page.gfn(), false)
            .unwrap();
        assert_eq!(be.grants().and_then(|o| o.frame(g)), Some(page.gfn()));
        // Each queue attached gets the next index.
        for want in 0..2 {
            let (tx, rx) = (host.pages(1), host.pages(1));
            let tg = table.grant_access(BACKEND_DOMID, tx.gfn(), false).unwrap();
            let rg = table.grant_access(BACKEND_DOMID, rx.gfn(), false).unwrap();
            assert_eq!(be.attach_queue((tg, rg), (1, 2)), Ok(want));
        }
        for i in 0..70 {
            be.violation(format!("v{i}"));
        }
        assert_eq!(be.violations.len(), 64);
        assert_eq!(be.violations.last().map(String::as_str), Some("v63"));
        be.unmap_all();
        host.clear_peers();
    }

    /// A tx chain of 22 data slots (`MAX_TX_CHAIN`, `NR_SLOTS_MIN + 4`) is one
    /// frame; one slot more is a broken chain: a violation, the frame answered
    /// `NETIF_RSP_ERROR`.
    #[test]
    fn tx_chain_length_limit() {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let mut be = NetBackend::new(server.add_device("vif", 0));
        let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
        be.set_grants(GrantObserver::new(&host, table.frames().unwrap()));
        let (tx, rx, data) = (host.pages(1), host.pages(1), host.pages(1));
        let grant = |p: &HostRegion, ro| table.grant_access(BACKEND_DOMID, p.gfn(), ro).unwrap();
        let refs = (grant(&tx, false), grant(&rx, false));
        assert_eq!(be.attach_queue(refs, (1, 1)), Ok(0));
        let d = grant(&data, true);
        let mut prod = 0u32;
        for n in [22, 23] {
            for k in 0..n {
                let req = TxRequest {
                    gref: d.0,
                    offset: 0,
                    flags: if k + 1 < n {
                        netif::NETTXF_MORE_DATA
                    } else {
                        0
                    },
                    id: k as u16,
                    // The first slot's size is the frame's: 10 bytes a slot.
                    size: if k == 0 { 10 * n as u16 } else { 10 },
                };
                let at = 64 + (prod % RING_SIZE) as usize * TX_SLOT;
                tx.mem().write_obj(at, &req);
                prod += 1;
            }
            tx.mem().store_u32(0, prod);
            be.serve_tx(0);
        }
        let frames: Vec<(usize, bool)> = be.tx_frames.iter().map(|f| (f.ids.len(), f.ok)).collect();
        assert_eq!(frames, [(22, true), (23, false)], "{:?}", be.violations);
        assert_eq!(be.tx_frames[0].data.len(), 10 * MAX_TX_CHAIN);
        assert_eq!(
            be.violations,
            [format!(
                "queue 0: tx chain longer than {MAX_TX_CHAIN} slots"
            )]
        );
        be.unmap_all();
        host.clear_peers();
    }

    /// [`TxMode::Hold`] takes tx requests without answering them, counted by
    /// `held_tx`; `rx_buffers` counts the rx buffers taken and not used,
    /// `undelivered` the frames queued; `publish` publishes what a turn wrote
    /// without the publish hook; a frame over a page is delivered as a chain;
    /// the G3 violation names the first byte of guest data.
    #[test]
    fn held_tx_and_rx_buffer_counts() {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let mut be = NetBackend::new(server.add_device("vif", 0));
        let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
        be.set_grants(GrantObserver::new(&host, table.frames().unwrap()));
        let (tx, rx, data) = (host.pages(1), host.pages(1), host.pages(4));
        let grant = |g, ro| table.grant_access(BACKEND_DOMID, g, ro).unwrap();
        let refs = (grant(tx.gfn(), false), grant(rx.gfn(), false));
        assert_eq!(be.attach_queue(refs, (1, 1)), Ok(0));
        be.hooks.tx = TxMode::Hold;
        let d = grant(data.gfn(), true);
        for k in 0..2u32 {
            let req = TxRequest {
                gref: d.0,
                offset: 0,
                flags: 0,
                id: k as u16,
                size: 60,
            };
            tx.mem().write_obj(64 + k as usize * TX_SLOT, &req);
        }
        tx.mem().store_u32(0, 2);
        for k in 0..4u32 {
            let gfn = Gfn(data.gfn().0 + u64::from(k));
            let req = RxRequest {
                id: k as u16,
                _pad: 0,
                gref: grant(gfn, false).0,
            };
            rx.mem().write_obj(64 + k as usize * RX_SLOT, &req);
        }
        rx.mem().store_u32(0, 4);
        // The last rx page holds a byte of the guest's (G3).
        data.mem().write(3 * PAGE_SIZE + 100, &[1]);
        be.turn();
        assert_eq!((be.held_tx(0), be.held_tx(1)), (2, 0));
        assert_eq!(tx.mem().load_u32(8), 0, "nothing answered");
        assert_eq!((be.rx_buffers(0), be.rx_buffers(1)), (4, 0));
        assert_eq!(be.violations.len(), 1, "{:?}", be.violations);
        assert!(
            be.violations[0].ends_with("posted with guest data at byte 100 (G3)"),
            "{:?}",
            be.violations
        );
        // Without the publish hook a delivered frame waits for `publish`.
        be.hooks.publish = false;
        be.deliver(0, &[7u8; 60]);
        assert_eq!(be.undelivered(), 1);
        be.turn();
        assert_eq!((be.undelivered(), rx.mem().load_u32(8)), (0, 0));
        be.publish(0);
        assert_eq!(rx.mem().load_u32(8), 1, "published");
        // A frame over a page goes in a chain of buffers.
        be.hooks.publish = true;
        be.deliver(0, &[5u8; 5000]);
        be.turn();
        let slot = |i: usize| rx.mem().read_obj::<RxResponse>(64 + i * RX_SLOT);
        let more = |r: RxResponse| (r.flags & netif::NETRXF_MORE_DATA != 0, r.status);
        assert_eq!((more(slot(1)), more(slot(2))), ((true, 4096), (false, 904)));
        assert_eq!(be.rx_delivered, 2, "frames delivered");
        // A raw slot past the page: its bytes are not written (nowhere to).
        let raw = RxSlot::Data {
            id: None,
            offset: 5000,
            flags: 0,
            status: 3,
            bytes: vec![9; 3],
        };
        assert_eq!(be.push_rx(0, raw), Ok(()));
        assert_eq!(slot(3).offset, 5000);
        be.unmap_all();
        host.clear_peers();
    }

    /// Tx extra-info slots: chained by `EXTRA_FLAG_MORE`, a frame whose first
    /// slot says `more_data` goes on with data slots after them, and an extra
    /// slot's bytes 8..12 must be zero (R7). The first slot of a chain holds
    /// the size less the later slots'; a slot may end at its page's end, not
    /// past it.
    #[test]
    fn tx_extra_info_slots() {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let mut be = NetBackend::new(server.add_device("vif", 0));
        let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
        be.set_grants(GrantObserver::new(&host, table.frames().unwrap()));
        let (tx, rx, data) = (host.pages(1), host.pages(1), host.pages(1));
        let grant = |p: &HostRegion, ro| table.grant_access(BACKEND_DOMID, p.gfn(), ro).unwrap();
        let refs = (grant(&tx, false), grant(&rx, false));
        assert_eq!(be.attach_queue(refs, (1, 1)), Ok(0));
        let d = grant(&data, true).0;
        let gso = ExtraInfo::gso(1400, netif::GSO_TYPE_TCPV4, 0, netif::EXTRA_FLAG_MORE);
        let mcast = ExtraInfo::mcast(netif::EXTRA_TYPE_MCAST_ADD, [1, 0, 0x5e, 0, 0, 1], 0);
        let mut dirty = TxRequest::from(ExtraInfo::gso(1400, netif::GSO_TYPE_TCPV4, 0, 0));
        dirty.size = 5;
        let data_slot = |id, flags, size| TxRequest {
            gref: d,
            offset: 0,
            flags,
            id,
            size,
        };
        let slots = [
            // Frame 0: data (30 bytes in all), two extras, data.
            data_slot(0, netif::NETTXF_EXTRA_INFO | netif::NETTXF_MORE_DATA, 30),
            TxRequest::from(gso),
            TxRequest::from(mcast),
            data_slot(1, 0, 10),
            // Frame 1: data, one extra with a dirty tail.
            data_slot(2, netif::NETTXF_EXTRA_INFO, 20),
            dirty,
            // Frames 2 and 3: a slot ending at its page's end, one a byte past.
            TxRequest {
                offset: 4000,
                ..data_slot(3, 0, 96)
            },
            TxRequest {
                offset: 4001,
                ..data_slot(4, 0, 96)
            },
        ];
        for (k, r) in slots.iter().enumerate() {
            tx.mem().write_obj(64 + k * TX_SLOT, r);
        }
        tx.mem().store_u32(0, slots.len() as u32);
        be.serve_tx(0);
        let frames: Vec<(Vec<u16>, usize, usize, bool)> = be
            .tx_frames
            .iter()
            .map(|f| (f.ids.clone(), f.extras.len(), f.data.len(), f.ok))
            .collect();
        assert_eq!(
            frames,
            [
                (vec![0, 1], 2, 30, true),
                (vec![2], 1, 20, true),
                (vec![3], 0, 96, true),
                (vec![4], 0, 0, false)
            ],
            "{:?}",
            be.violations
        );
        assert_eq!(be.tx_frames[0].extras, [gso, mcast]);
        assert_eq!(
            be.violations,
            [
                "tx extra-info slot 5: non-zero tail (R7)",
                "tx slot id 4: offset 4001 + 96 bytes crosses its page"
            ]
        );
        be.unmap_all();
        host.clear_peers();
    }

    /// G3 on tx: a page's bytes outside its slot must be zero the first time
    /// the backend sees it (before the slot and after it), whatever the slot
    /// holds; the frame is the slot's bytes.
    #[test]
    fn tx_page_bytes_outside_the_slot_on_first_use() {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let mut be = NetBackend::new(server.add_device("vif", 0));
        let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
        be.set_grants(GrantObserver::new(&host, table.frames().unwrap()));
        let (tx, rx) = (host.pages(1), host.pages(1));
        let grant = |p: &HostRegion, ro| table.grant_access(BACKEND_DOMID, p.gfn(), ro).unwrap();
        let refs = (grant(&tx, false), grant(&rx, false));
        assert_eq!(be.attach_queue(refs, (1, 1)), Ok(0));
        // Slots of 20 bytes at offset 10; a stray byte at 5, at 100, none.
        let mut grefs = Vec::new();
        for stray in [Some(5), Some(100), None] {
            let page = host.pages(1);
            page.mem().write(10, &[0xab; 20]);
            if let Some(at) = stray {
                page.mem().write(at, &[1]);
            }
            grefs.push(grant(&page, true));
        }
        for (k, g) in grefs.iter().enumerate() {
            let req = TxRequest {
                gref: g.0,
                offset: 10,
                flags: 0,
                id: k as u16,
                size: 20,
            };
            tx.mem().write_obj(64 + k * TX_SLOT, &req);
        }
        tx.mem().store_u32(0, 3);
        be.serve_tx(0);
        assert_eq!(be.tx_frames.len(), 3);
        assert!(be.tx_frames.iter().all(|f| f.ok && f.data == [0xab; 20]));
        let want: Vec<String> = grefs[..2]
            .iter()
            .map(|g| {
                format!(
                    "tx page (grant {}) holds bytes outside its slot on first use (G3)",
                    g.0
                )
            })
            .collect();
        assert_eq!(be.violations, want);
        be.unmap_all();
        host.clear_peers();
    }
}
