//! [`BlockBackend`]: a scripted blkback over an in-memory disk, with hooks for
//! every kind of hostility a frontend must survive.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hypercall::abi::blkif::{
    self, Request, RequestDiscard, RequestIndirect, RequestSegment, Response,
};
use hypercall::abi::gnttab as gt;
use hypercall::abi::ring as layout;
use hypercall::{Gfn, GrantRef, PAGE_SIZE};
use zerocopy::{FromZeros, IntoBytes};

use super::ring::RingPages;
use crate::{GrantObserver, HostPlatform, HostRegion};

/// What the backend does with a request it consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Serve it now (through the response hook, if any).
    Serve,
    /// Keep it unanswered ([`BlockBackend::release_held`] answers it later).
    Hold,
    /// Consume it and never answer (its grants are released as if answered).
    Drop,
}

/// Decides, for each consumed request (queue, request), whether it is answered.
pub type RequestHook = Box<dyn FnMut(usize, &Request) -> Answer>;
/// Rewrites the response to a served request: any number of responses (none,
/// duplicates, other ids, operations or statuses) are written in its place.
pub type ResponseHook = Box<dyn FnMut(&Request, Response) -> Vec<Response>>;
/// Runs at the end of every backend turn, with the backend (raw slot and index
/// writes, state moves, key changes at a chosen moment).
pub type TurnHook = Box<dyn FnMut(&mut BlockBackend)>;

/// The backend's xenbus state values (`XenbusState`).
pub mod state {
    /// Initialising.
    pub const INITIALISING: u32 = 1;
    /// InitWait: features published, waiting for the frontend's ring.
    pub const INIT_WAIT: u32 = 2;
    /// Initialised.
    pub const INITIALISED: u32 = 3;
    /// Connected.
    pub const CONNECTED: u32 = 4;
    /// Closing.
    pub const CLOSING: u32 = 5;
    /// Closed.
    pub const CLOSED: u32 = 6;
}

/// The xenstore view a backend needs: its own directory and the frontend's,
/// relative key names. Implemented over the conformance xenstore server.
pub trait KeyStore {
    /// The value of `key` in the frontend's directory (`None`: missing).
    fn frontend(&self, key: &str) -> Option<String>;
    /// The value of `key` in the backend's directory.
    fn backend(&self, key: &str) -> Option<String>;
    /// Writes `key` in the backend's directory (watches fire).
    fn set_backend(&self, key: &str, value: &str);
    /// Removes `key` (and below) from the backend's directory; `""` removes the
    /// directory itself.
    fn rm_backend(&self, key: &str);
}

/// What the backend offers and how the disk looks: every value is the string
/// written to the backend key of the same name (`None`: not written), so a case
/// can offer anything, garbage included.
#[derive(Clone, Debug)]
pub struct Offers {
    /// Written before InitWait (what the frontend reads to size its ring).
    pub probe: BTreeMap<&'static str, Option<String>>,
    /// Written when connecting (geometry and the rest of the features).
    pub connect: BTreeMap<&'static str, Option<String>>,
}

impl Default for Offers {
    fn default() -> Self {
        let s = |v: &str| Some(v.to_string());
        let probe = BTreeMap::from([
            ("feature-max-indirect-segments", s("256")),
            ("max-ring-page-order", s("2")),
            ("multi-queue-max-queues", s("2")),
            ("feature-persistent", s("1")),
        ]);
        let connect = BTreeMap::from([
            ("sectors", s(&(DISK_BYTES / 512).to_string())),
            ("sector-size", s("512")),
            ("physical-sector-size", s("4096")),
            ("info", s("0")),
            ("mode", s("w")),
            ("feature-flush-cache", s("1")),
            ("feature-barrier", s("1")),
            ("feature-discard", s("1")),
            ("discard-granularity", s("4096")),
            ("discard-alignment", s("0")),
            ("discard-secure", s("1")),
        ]);
        Offers { probe, connect }
    }
}

/// Size of the default disk: 1 MiB.
pub const DISK_BYTES: usize = 1 << 20;

/// The initial disk content: byte `i` is `7 * i + i / 4096` (mod 256), so every
/// page differs from its neighbours (a misplaced page shows). The sectors of one
/// page are alike (7 * 512 = 0 mod 256).
pub fn disk_pattern(bytes: usize) -> Vec<u8> {
    const RUN: [u8; PAGE_SIZE + 256] = {
        let mut run = [0u8; PAGE_SIZE + 256];
        let mut j = 0;
        while j < run.len() {
            run[j] = (j * 7) as u8;
            j += 1;
        }
        run
    };
    let mut disk = vec![0u8; bytes];
    for (p, page) in disk.chunks_mut(PAGE_SIZE).enumerate() {
        // Byte j of page p is 7 * (j + 183 * p) mod 256, as 7 * 183 = 1 (mod 256).
        let k = (p * 183) % 256;
        page.copy_from_slice(&RUN[k..k + page.len()]);
    }
    disk
}

/// One connected ring.
#[derive(Debug)]
struct Queue {
    ring: RingPages,
    req_cons: u32,
    rsp_prod_pvt: u32,
    port: u32,
    /// Set when the frontend broke the ring protocol (`req_prod` overrun).
    dead: bool,
}

/// What the backend saw, for the cases to judge.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// Every request consumed, with its queue, in order.
    pub seen: Vec<(usize, Request)>,
    /// Frontend misbehaviour, one line each (padding, stale bytes, writable write
    /// grants, bad segments, ring overruns, key errors).
    pub violations: Vec<String>,
    /// Requests (and indirect pages) whose padding was checked (R7).
    pub padding_checked: u64,
    /// Data pages scanned for bytes that are not the request's (G3, row 16).
    pub pages_scanned: u64,
    /// Responses written (by serving, hooks included).
    pub responses: u64,
    /// Connections made (frontend Initialised → backend Connected).
    pub connects: u64,
    /// What the frontend wrote when it last connected: key → value.
    pub frontend_keys: BTreeMap<String, String>,
}

/// A scripted blkback. It plays the backend of one device: publishes its offer
/// ([`Offers`]), moves through the xenbus states as the frontend does, maps the
/// ring(s) and data through the frontend's grant table ([`GrantObserver`]), and
/// serves requests against an in-memory disk — unless a hook says otherwise.
///
/// Call [`BlockBackend::turn`] from the platform's peer (every `wait()` of the
/// driver): it follows the frontend's state, consumes requests, answers them and
/// runs the turn hook.
pub struct BlockBackend {
    host: HostPlatform,
    grants: GrantObserver,
    store: Box<dyn KeyStore>,
    /// The disk (512-byte sectors, as blkif counts them).
    pub disk: Vec<u8>,
    /// What is offered; change before the frontend connects.
    pub offers: Offers,
    queues: Vec<Queue>,
    state: u32,
    persistent: bool,
    /// Decides whether each request is answered (default: serve all).
    pub on_request: Option<RequestHook>,
    /// Rewrites responses (default: one correct response).
    pub on_response: Option<ResponseHook>,
    /// Runs after every turn.
    pub on_turn: Option<TurnHook>,
    /// Keep every data grant mapped after answering, as if never unmapped
    /// (`GTF_reading`/`GTF_writing` stay set: the frontend cannot end them).
    pub keep_grants_mapped: bool,
    /// Answer reads OKAY without writing their data (B9).
    pub skip_read_data: bool,
    /// Do not follow the frontend's state (the case moves states itself).
    pub frozen: bool,
    /// Requests held back: (queue, request).
    pub held: VecDeque<(usize, Request)>,
    /// Grants currently mapped: ref → pins.
    mapped: BTreeMap<u32, u32>,
    /// Grants kept mapped for the connection (persistent grants).
    pinned: BTreeSet<u32>,
    /// Every data page as this backend last left it (reads) or was given it
    /// (writes), by frame: a page granted for a read may hold only that.
    known: BTreeMap<u64, Vec<u8>>,
    /// What was seen.
    pub log: Log,
}

impl core::fmt::Debug for BlockBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlockBackend")
            .field("state", &self.state)
            .field("queues", &self.queues.len())
            .field("held", &self.held.len())
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// Largest ring this backend maps, whatever it offers: 2^8 pages.
pub const MAX_RING_PAGE_ORDER: u64 = 8;
/// Most queues this backend serves, whatever it offers.
pub const MAX_QUEUES: u64 = 64;

/// Backend domain (what the frontend grants to).
const BACKEND_DOMID: u16 = 0;

impl BlockBackend {
    /// A backend over `store`'s directories, mapping through `grants`, with the
    /// default [`Offers`] and a [`DISK_BYTES`] disk holding [`disk_pattern`].
    pub fn new(host: &HostPlatform, grants: GrantObserver, store: Box<dyn KeyStore>) -> Self {
        BlockBackend {
            host: host.clone(),
            grants,
            store,
            disk: disk_pattern(DISK_BYTES),
            offers: Offers::default(),
            queues: Vec::new(),
            state: state::INITIALISING,
            persistent: false,
            on_request: None,
            on_response: None,
            on_turn: None,
            keep_grants_mapped: false,
            skip_read_data: false,
            frozen: false,
            held: VecDeque::new(),
            mapped: BTreeMap::new(),
            pinned: BTreeSet::new(),
            known: BTreeMap::new(),
            log: Log::default(),
        }
    }

    /// Publishes the probe offers and InitWait (what blkback does when the device
    /// appears).
    pub fn probe(&mut self) {
        for (k, v) in self.offers.probe.clone() {
            if let Some(v) = v {
                self.store.set_backend(k, &v);
            }
        }
        self.set_state(state::INIT_WAIT);
    }

    /// The backend's state as last written.
    pub fn state(&self) -> u32 {
        self.state
    }

    /// Writes the backend's `state` (any value; Closing with requests in flight
    /// is one case).
    pub fn set_state(&mut self, st: u32) {
        self.state = st;
        self.store.set_backend("state", &st.to_string());
    }

    /// Writes any string into any backend key, now.
    pub fn set_key(&mut self, key: &str, value: &str) {
        self.store.set_backend(key, value);
    }

    /// Removes the backend's whole directory (the frontend then reads ENOENT/EACCES).
    pub fn remove_directory(&mut self) {
        self.store.rm_backend("");
    }

    /// The key store (to read what the frontend wrote).
    pub fn store(&self) -> &dyn KeyStore {
        &*self.store
    }

    /// Queues (rings) connected.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Whether persistent grants were negotiated.
    pub fn persistent(&self) -> bool {
        self.persistent
    }

    /// The ring of queue `q` (raw access: any slot, any index).
    pub fn ring(&self, q: usize) -> Option<&RingPages> {
        self.queues.get(q).map(|x| &x.ring)
    }

    /// Queue `q`'s next response index (what `rsp_prod` becomes when published).
    pub fn rsp_prod_pvt(&self, q: usize) -> Option<u32> {
        self.queues.get(q).map(|x| x.rsp_prod_pvt)
    }

    /// Writes `rsp` into queue `q`'s next response slot without publishing it.
    pub fn push_raw(&mut self, q: usize, rsp: &Response) {
        if let Some(x) = self.queues.get_mut(q) {
            x.ring.write_response(x.rsp_prod_pvt, rsp);
            x.rsp_prod_pvt = x.rsp_prod_pvt.wrapping_add(1);
            self.log.responses += 1;
        }
    }

    /// Writes a raw `rsp_prod` for queue `q` (and makes it the backend's own).
    pub fn set_rsp_prod(&mut self, q: usize, value: u32) {
        if let Some(x) = self.queues.get_mut(q) {
            x.ring.set_index(layout::RSP_PROD, value);
            x.rsp_prod_pvt = value;
        }
    }

    /// Event-channel port the frontend gave for queue `q`.
    pub fn port(&self, q: usize) -> Option<u32> {
        self.queues.get(q).map(|x| x.port)
    }

    /// Grants this backend maps right now (ring pages excluded? no: every map).
    pub fn mapped(&self) -> Vec<GrantRef> {
        self.mapped.keys().map(|&r| GrantRef(r)).collect()
    }

    /// The frontend's grant table, seen from this side.
    pub fn grants(&self) -> &GrantObserver {
        &self.grants
    }

    /// One backend turn: follow the frontend's state, serve the rings, run the
    /// turn hook.
    pub fn turn(&mut self) {
        if !self.frozen {
            self.follow_frontend();
        }
        if self.state == state::CONNECTED {
            for q in 0..self.queues.len() {
                self.serve(q);
            }
        }
        if let Some(mut hook) = self.on_turn.take() {
            hook(self);
            if self.on_turn.is_none() {
                self.on_turn = Some(hook);
            }
        }
    }

    fn violation(&mut self, what: String) {
        if self.log.violations.len() < 64 {
            self.log.violations.push(what);
        }
    }

    fn follow_frontend(&mut self) {
        let fe: u32 = self
            .store
            .frontend("state")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        match (fe, self.state) {
            (state::INITIALISED | state::CONNECTED, state::INIT_WAIT) => self.connect(),
            (state::CLOSING | state::CLOSED, state::CONNECTED | state::INIT_WAIT) => {
                self.disconnect();
                self.set_state(state::CLOSING);
            }
            (state::CLOSED, state::CLOSING) => {
                self.disconnect();
                self.set_state(state::CLOSED);
            }
            (state::INITIALISING, state::CLOSED | state::CLOSING) => {
                self.disconnect();
                self.probe();
            }
            _ => {}
        }
    }

    /// Unmaps everything (unless grants are kept mapped) and forgets the rings;
    /// held requests are dropped.
    pub fn disconnect(&mut self) {
        self.queues.clear();
        self.held.clear();
        self.pinned.clear();
        // A new connection starts with pages that must be zero (row 16, B9).
        self.known.clear();
        if !self.keep_grants_mapped {
            self.unmap_all();
        }
    }

    /// Unmaps every grant this backend maps (also the ones kept mapped).
    pub fn unmap_all(&mut self) {
        for (r, _) in std::mem::take(&mut self.mapped) {
            self.grants.unmap(GrantRef(r));
        }
    }

    /// Maps grant `r` like Xen would: checks the entry is a live grant to us, and
    /// that a writable map is of a writable grant. Pins it until [`Self::unmap`].
    pub fn map(&mut self, r: u32, write: bool) -> Result<HostRegion, String> {
        let g = GrantRef(r);
        let flags = self
            .grants
            .flags(g)
            .ok_or(format!("grant {r} outside the table"))?;
        if flags & gt::GTF_TYPE_MASK != gt::GTF_PERMIT_ACCESS {
            return Err(format!("grant {r} is not a live grant (flags {flags:#x})"));
        }
        if self.grants.domid(g) != Some(BACKEND_DOMID) {
            return Err(format!("grant {r} is for another domain"));
        }
        if write && flags & gt::GTF_READONLY != 0 {
            return Err(format!("writable map of read-only grant {r}"));
        }
        let frame = self.grants.frame(g).unwrap_or(Gfn(0));
        let page = self.host.frame(frame).ok_or(format!(
            "grant {r} names frame {:#x}, not guest memory",
            frame.0
        ))?;
        self.grants.map(g, write);
        *self.mapped.entry(r).or_insert(0) += 1;
        Ok(page)
    }

    /// Drops one pin of `r`; the last one unmaps it (unless grants are kept
    /// mapped, or it is a persistent grant).
    pub fn unmap(&mut self, r: u32) {
        if self.keep_grants_mapped || self.pinned.contains(&r) {
            return;
        }
        if let Some(n) = self.mapped.get_mut(&r) {
            *n -= 1;
            if *n == 0 {
                self.mapped.remove(&r);
                self.grants.unmap(GrantRef(r));
            }
        }
    }

    fn fe_num(&mut self, key: &str) -> Option<u64> {
        let v = self.store.frontend(key)?;
        match v.trim().parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.violation(format!("frontend key {key} = {v:?} is not a number"));
                None
            }
        }
    }

    fn offer_num(&self, key: &str) -> Option<u64> {
        self.offers
            .probe
            .get(key)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.trim().parse().ok())
    }

    /// Frontend Initialised: read its keys, map its rings, write the rest of the
    /// offer, go Connected. A frontend whose keys are unusable gets Closing.
    fn connect(&mut self) {
        self.log.frontend_keys.clear();
        for k in [
            "ring-ref",
            "ring-page-order",
            "event-channel",
            "protocol",
            "feature-persistent",
            "multi-queue-num-queues",
        ] {
            if let Some(v) = self.store.frontend(k) {
                self.log.frontend_keys.insert(k.to_string(), v);
            }
        }
        match self.connect_rings() {
            Ok(()) => {
                for (k, v) in self.offers.connect.clone() {
                    if let Some(v) = v {
                        self.store.set_backend(k, &v);
                    }
                }
                self.log.connects += 1;
                self.set_state(state::CONNECTED);
            }
            Err(e) => {
                self.violation(e);
                self.disconnect();
                self.set_state(state::CLOSING);
            }
        }
    }

    fn connect_rings(&mut self) -> Result<(), String> {
        let max_order = self.offer_num("max-ring-page-order").unwrap_or(0);
        let order = self.fe_num("ring-page-order");
        if order.is_some_and(|o| o > max_order.min(MAX_RING_PAGE_ORDER)) {
            return Err(format!(
                "ring-page-order {order:?} above the offer {max_order} (or {MAX_RING_PAGE_ORDER})"
            ));
        }
        let max_q = self.offer_num("multi-queue-max-queues").unwrap_or(1);
        let nq = match self.fe_num("multi-queue-num-queues") {
            None => 1,
            Some(n) if n >= 1 && n <= max_q.min(MAX_QUEUES) => n as usize,
            Some(n) => return Err(format!("multi-queue-num-queues {n} (offer {max_q})")),
        };
        if let Some(p) = self.store.frontend("protocol") {
            if p != "x86_64-abi" {
                return Err(format!("protocol {p:?} is not x86_64-abi"));
            }
        }
        self.persistent = self.fe_num("feature-persistent") == Some(1)
            && self.offer_num("feature-persistent") == Some(1);
        let pages = 1usize << order.unwrap_or(0);
        for q in 0..nq {
            let dir = if nq == 1 {
                String::new()
            } else {
                format!("queue-{q}/")
            };
            let mut regions = Vec::new();
            for i in 0..pages {
                let key = if order.is_some() {
                    format!("{dir}ring-ref{i}")
                } else {
                    format!("{dir}ring-ref")
                };
                let r = self.fe_num(&key).ok_or(format!("{key} missing"))?;
                let r = u32::try_from(r).map_err(|_| format!("{key} {r} out of range"))?;
                regions.push(self.map(r, true)?);
                // Ring pages stay mapped for the connection.
                self.pinned.insert(r);
            }
            let port = self
                .fe_num(&format!("{dir}event-channel"))
                .ok_or(format!("{dir}event-channel missing"))?;
            let ring = RingPages::new(regions);
            // Linux's FRONT_RING_INIT / BACK_RING_ATTACH: start from the published
            // indices.
            let start = ring.index(layout::REQ_PROD);
            let rsp = ring.index(layout::RSP_PROD);
            if start != rsp {
                return Err(format!(
                    "ring {q} starts with req_prod {start} != rsp_prod {rsp}"
                ));
            }
            ring.set_index(layout::REQ_EVENT, start.wrapping_add(1));
            self.queues.push(Queue {
                ring,
                req_cons: start,
                rsp_prod_pvt: start,
                port: port as u32,
                dead: false,
            });
        }
        Ok(())
    }

    /// Consumes and answers queue `q`'s new requests, then publishes `rsp_prod`.
    fn serve(&mut self, q: usize) {
        let Some(x) = self.queues.get(q) else { return };
        if x.dead {
            return;
        }
        let pad = x.ring.header_padding();
        let (prod, cons, size) = (x.ring.index(layout::REQ_PROD), x.req_cons, x.ring.size());
        if pad.iter().any(|&b| b != 0) {
            self.violation("non-zero ring header padding (pvt/__pad)".into());
        }
        if prod.wrapping_sub(cons) > size {
            self.violation(format!(
                "queue {q}: req_prod {prod} more than {size} past req_cons {cons}"
            ));
            if let Some(x) = self.queues.get_mut(q) {
                x.dead = true;
            }
            return;
        }
        let mut cons = cons;
        while cons != prod {
            let Some(x) = self.queues.get_mut(q) else {
                return;
            };
            let req = x.ring.request(cons);
            cons = cons.wrapping_add(1);
            x.req_cons = cons;
            self.log.seen.push((q, req));
            self.log.padding_checked += 1;
            if let Some(v) = padding_violation(&req) {
                self.violation(format!("request id {:#x}: {v}", req.id));
            }
            let answer = match self.on_request.as_mut() {
                Some(h) => h(q, &req),
                None => Answer::Serve,
            };
            match answer {
                Answer::Serve => self.answer(q, &req),
                Answer::Hold => self.held.push_back((q, req)),
                Answer::Drop => {}
            }
        }
        self.publish(q);
    }

    fn publish(&mut self, q: usize) {
        if let Some(x) = self.queues.get(q) {
            x.ring.set_index(layout::RSP_PROD, x.rsp_prod_pvt);
            x.ring
                .set_index(layout::REQ_EVENT, x.req_cons.wrapping_add(1));
        }
    }

    /// Answers the held requests now, oldest first (`newest_first`: in reverse,
    /// a reordering), and publishes.
    pub fn release_held(&mut self, newest_first: bool) -> usize {
        let mut held: Vec<_> = self.held.drain(..).collect();
        if newest_first {
            held.reverse();
        }
        let n = held.len();
        for (q, req) in held {
            self.answer(q, &req);
        }
        for q in 0..self.queues.len() {
            self.publish(q);
        }
        n
    }

    fn answer(&mut self, q: usize, req: &Request) {
        let (status, operation) = self.execute(req);
        let rsp = Response {
            id: req.id,
            operation,
            status,
            ..Response::new_zeroed()
        };
        let rsps = match self.on_response.as_mut() {
            Some(h) => h(req, rsp),
            None => vec![rsp],
        };
        for r in rsps {
            self.push_raw(q, &r);
        }
    }

    fn flag(&self, key: &str) -> bool {
        self.offers
            .connect
            .get(key)
            .and_then(|v| v.as_deref())
            .is_some_and(|v| v.trim() == "1")
    }

    /// Performs `req` on the disk: (status, operation echoed).
    fn execute(&mut self, req: &Request) -> (i16, u8) {
        let op = req.operation;
        match op {
            blkif::OP_FLUSH_DISKCACHE if self.flag("feature-flush-cache") => (blkif::RSP_OKAY, op),
            blkif::OP_WRITE_BARRIER if self.flag("feature-barrier") => (blkif::RSP_OKAY, op),
            blkif::OP_DISCARD if self.flag("feature-discard") => {
                let d = req.as_discard();
                if d.flag & blkif::DISCARD_SECURE != 0 && !self.flag("discard-secure") {
                    return (blkif::RSP_EOPNOTSUPP, op);
                }
                let range = (d.sector_number.checked_mul(512))
                    .and_then(|s| Some((s, s.checked_add(d.nr_sectors.checked_mul(512)?)?)));
                match range {
                    Some((s, e)) if e <= self.disk.len() as u64 => {
                        self.disk[s as usize..e as usize].fill(0);
                        (blkif::RSP_OKAY, op)
                    }
                    _ => (blkif::RSP_ERROR, op),
                }
            }
            blkif::OP_READ | blkif::OP_WRITE => (self.rw(req), op),
            // Linux blkback answers an indirect request with its data operation.
            blkif::OP_INDIRECT => (self.rw(req), req.as_indirect().indirect_op),
            _ => (blkif::RSP_EOPNOTSUPP, op),
        }
    }

    /// The segments of a read/write (direct or indirect): (data op, segments,
    /// indirect pages mapped).
    fn segments(&mut self, req: &Request) -> Result<(u8, Vec<RequestSegment>, Vec<u32>), String> {
        if req.operation != blkif::OP_INDIRECT {
            let n = usize::from(req.nr_segments);
            if n == 0 || n > blkif::MAX_SEGMENTS_PER_REQUEST {
                return Err(format!("{n} segments in a direct request"));
            }
            return Ok((req.operation, req.seg[..n].to_vec(), Vec::new()));
        }
        let ind = req.as_indirect();
        let n = usize::from(ind.nr_segments);
        let max = self.offer_num("feature-max-indirect-segments").unwrap_or(0) as usize;
        if n == 0
            || n > max.min(blkif::MAX_INDIRECT_PAGES_PER_REQUEST * blkif::SEGS_PER_INDIRECT_FRAME)
        {
            return Err(format!("{n} segments in an indirect request (offer {max})"));
        }
        if !matches!(ind.indirect_op, blkif::OP_READ | blkif::OP_WRITE) {
            return Err(format!("indirect op {}", ind.indirect_op));
        }
        let mut segs = Vec::with_capacity(n);
        let mut used = Vec::new();
        for (p, &g) in ind
            .indirect_grefs
            .iter()
            .enumerate()
            .take(n.div_ceil(blkif::SEGS_PER_INDIRECT_FRAME))
        {
            let page = match self.map(g, self.persistent) {
                Ok(page) => page,
                Err(e) => {
                    for u in used {
                        self.unmap(u);
                    }
                    return Err(e);
                }
            };
            used.push(g);
            let here = (n - p * blkif::SEGS_PER_INDIRECT_FRAME).min(blkif::SEGS_PER_INDIRECT_FRAME);
            let mut whole = vec![0u8; PAGE_SIZE];
            page.mem().read(0, &mut whole);
            self.log.padding_checked += 1;
            for i in 0..here {
                let mut s = RequestSegment::new_zeroed();
                s.as_mut_bytes().copy_from_slice(&whole[i * 8..i * 8 + 8]);
                if s._pad != [0; 2] {
                    self.violation(format!(
                        "request id {:#x}: non-zero descriptor _pad in an indirect page",
                        req.id
                    ));
                }
                segs.push(s);
            }
            if !is_zero(&whole[here * 8..]) {
                self.violation(format!(
                    "request id {:#x}: bytes after the last descriptor of an indirect page",
                    req.id
                ));
            }
        }
        Ok((ind.indirect_op, segs, used))
    }

    /// Whether the disk is offered read-only (`VDISK_READONLY` in `info`).
    fn read_only(&self) -> bool {
        self.offers
            .connect
            .get("info")
            .and_then(|v| v.as_deref())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|i| i & blkif::VDISK_READONLY != 0)
    }

    fn rw(&mut self, req: &Request) -> i16 {
        let (op, segs, indirect) = match self.segments(req) {
            Ok(x) => x,
            Err(e) => {
                self.violation(format!("request id {:#x}: {e}", req.id));
                return blkif::RSP_ERROR;
            }
        };
        let write = op == blkif::OP_WRITE;
        if write && self.read_only() {
            // Linux blkback: a write to a read-only disk fails, nothing mapped.
            for g in indirect {
                self.unmap(g);
            }
            return blkif::RSP_ERROR;
        }
        let mut pos = req.sector_number.checked_mul(512);
        let mut status = blkif::RSP_OKAY;
        for s in &segs {
            if s.first_sect > s.last_sect || s.last_sect > 7 {
                self.violation(format!(
                    "request id {:#x}: segment sectors {}..={}",
                    req.id, s.first_sect, s.last_sect
                ));
                status = blkif::RSP_ERROR;
                break;
            }
            let (a, b) = (
                usize::from(s.first_sect) * 512,
                (usize::from(s.last_sect) + 1) * 512,
            );
            let Some(at) = pos.filter(|&p| {
                p.checked_add((b - a) as u64)
                    .is_some_and(|e| e <= self.disk.len() as u64)
            }) else {
                status = blkif::RSP_ERROR;
                break;
            };
            let at = at as usize;
            let flags = self.grants.flags(GrantRef(s.gref)).unwrap_or(0);
            if write
                && !self.persistent
                && flags & gt::GTF_READONLY == 0
                && flags & gt::GTF_TYPE_MASK == gt::GTF_PERMIT_ACCESS
            {
                self.violation(format!(
                    "request id {:#x}: write data granted writable (gref {})",
                    req.id, s.gref
                ));
            }
            // Persistent grants are mapped writable (Linux blkback), others as the
            // direction needs.
            let page = match self.map(s.gref, !write || self.persistent) {
                Ok(p) => p,
                Err(e) => {
                    self.violation(format!("request id {:#x}: {e}", req.id));
                    status = blkif::RSP_ERROR;
                    break;
                }
            };
            if self.persistent {
                self.pinned.insert(s.gref);
            }
            let frame = self.grants.frame(GrantRef(s.gref)).map_or(0, |g| g.0);
            let mut whole = vec![0u8; PAGE_SIZE];
            page.mem().read(0, &mut whole);
            self.log.pages_scanned += 1;
            if write {
                // G3 / XSA-403: nothing but this request's data (or zeros).
                if !is_zero(&whole[..a]) || !is_zero(&whole[b..]) {
                    self.violation(format!(
                        "request id {:#x}: bytes outside the data in a page granted for a write",
                        req.id
                    ));
                }
                self.disk[at..at + b - a].copy_from_slice(&whole[a..b]);
            } else {
                // Row 16: a page granted for a read holds what this backend last
                // left or was given there, or zeros: never anything else.
                let expect = self.known.get(&frame).map_or(&[0u8; PAGE_SIZE][..], |k| k);
                if whole[..] != *expect {
                    self.violation(format!("request id {:#x}: a page granted for a read holds data this backend was not given", req.id));
                }
                if !self.skip_read_data {
                    page.mem().write(a, &self.disk[at..at + b - a]);
                    whole[a..b].copy_from_slice(&self.disk[at..at + b - a]);
                }
            }
            self.known.insert(frame, whole);
            pos = Some((at + b - a) as u64);
            self.unmap(s.gref);
        }
        for g in indirect {
            self.unmap(g);
        }
        status
    }
}

/// Whether every byte is zero, compared a page at a time (one `memcmp` each: a
/// loop per byte costs Miri dearly).
fn is_zero(bytes: &[u8]) -> bool {
    const ZERO: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    bytes.chunks(PAGE_SIZE).all(|c| c == &ZERO[..c.len()])
}

/// R7: every byte of a published request that belongs to no field of its kind is
/// zero (`_pad`s, segments past `nr_segments`, the slot tail past a discard or
/// indirect request, indirect grefs past the pages used). `None` if clean.
pub fn padding_violation(req: &Request) -> Option<&'static str> {
    let bytes = req.as_bytes();
    let zero_from = |at: usize| is_zero(bytes.get(at..).unwrap_or(&[]));
    match req.operation {
        blkif::OP_READ | blkif::OP_WRITE | blkif::OP_FLUSH_DISKCACHE | blkif::OP_WRITE_BARRIER => {
            let n = usize::from(req.nr_segments).min(blkif::MAX_SEGMENTS_PER_REQUEST);
            if req._pad != 0 {
                return Some("non-zero _pad");
            }
            if req.seg[..n].iter().any(|s| s._pad != [0; 2]) {
                return Some("non-zero segment _pad");
            }
            if req.seg[n..]
                .iter()
                .any(|s| s.as_bytes().iter().any(|&b| b != 0))
            {
                return Some("non-zero bytes in unused segments");
            }
        }
        blkif::OP_DISCARD
            if req.as_discard()._pad != 0 || !zero_from(core::mem::size_of::<RequestDiscard>()) =>
        {
            return Some("non-zero padding in a discard request");
        }
        blkif::OP_INDIRECT => {
            let ind = req.as_indirect();
            let pages = usize::from(ind.nr_segments).div_ceil(blkif::SEGS_PER_INDIRECT_FRAME);
            let unused = ind.indirect_grefs.get(pages..).unwrap_or(&[]);
            if ind._pad != 0 || ind._pad2 != 0 || ind._pad3 != 0 || unused.iter().any(|&g| g != 0) {
                return Some("non-zero padding in an indirect request");
            }
            if !zero_from(core::mem::size_of::<RequestIndirect>()) {
                return Some("non-zero tail after an indirect request");
            }
        }
        _ => {}
    }
    None
}

impl KeyStore for crate::xenstore::Device {
    fn frontend(&self, key: &str) -> Option<String> {
        self.frontend_str(key)
    }
    fn backend(&self, key: &str) -> Option<String> {
        self.backend_key(key)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
    fn set_backend(&self, key: &str, value: &str) {
        self.set_backend_key(key, value.as_bytes());
    }
    fn rm_backend(&self, key: &str) {
        if key.is_empty() {
            self.remove_backend();
        } else {
            self.server()
                .remove(&format!("{}/{key}", self.backend_path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall::abi::blkif::{self, RequestDiscard, RequestIndirect};

    use hypercall::gnttab::GrantTable;
    use hypercall::DomId;

    use crate::blk::ring::SLOT;
    use crate::blk::{DEVID, GRANT_ENTRIES};
    use crate::xenstore::StoreServer;

    /// A raw frontend for one [`BlockBackend`]: one ring page, one data page, the
    /// xenstore keys written by hand, every request built field by field. It checks
    /// the backend itself: the catalogue judges drivers by what this backend does,
    /// so a backend that answered OKAY without doing the I/O (or to requests it
    /// cannot serve) would let careless drivers pass.
    struct RawFront {
        _server: StoreServer,
        grants: GrantTable<GRANT_ENTRIES>,
        be: BlockBackend,
        ring: RingPages,
        data: HostRegion,
        prod: u32,
        next_id: u64,
    }

    impl RawFront {
        /// A connected frontend; `fake` configures the backend first.
        fn new(fake: fn(&mut BlockBackend)) -> RawFront {
            let host = HostPlatform::new();
            let server = StoreServer::new(&host);
            let dev = server.add_device("vbd", DEVID);
            let frames = (GRANT_ENTRIES * 8).div_ceil(PAGE_SIZE);
            let grants =
                GrantTable::<GRANT_ENTRIES>::new(host.shared_pages(frames)).expect("grant table");
            let obs = GrantObserver::new(&host, grants.frames().expect("frames"));
            let mut be = BlockBackend::new(&host, obs, Box::new(dev.clone()));
            // One page ring, one queue, no persistent grants or indirect requests.
            be.offers.probe.clear();
            fake(&mut be);
            be.probe();
            let page = host.pages(1);
            let ring_ref = grants
                .grant_access(DomId(0), page.gfn(), false)
                .expect("ring grant");
            let fe = dev.frontend_path().to_string();
            for (k, v) in [
                ("ring-ref", ring_ref.0.to_string()),
                ("event-channel", "5".into()),
                ("protocol", "x86_64-abi".into()),
                ("state", "3".into()),
            ] {
                server.write(&format!("{fe}/{k}"), v.as_bytes());
            }
            be.turn();
            assert_eq!(be.state(), state::CONNECTED, "{:?}", be.log.violations);
            RawFront {
                _server: server,
                grants,
                be,
                ring: RingPages::new(vec![page]),
                data: host.pages(1),
                prod: 0,
                next_id: 1,
            }
        }

        /// Publishes `req` (with a fresh id), lets the backend turn, and returns
        /// the one response it published.
        fn submit(&mut self, mut req: Request) -> Result<Response, String> {
            req.id = self.next_id;
            self.next_id += 1;
            let slot = layout::HEADER_SIZE + (self.prod % self.ring.size()) as usize * SLOT;
            self.ring.write(slot, req.as_bytes());
            self.prod += 1;
            self.ring.set_index(layout::REQ_PROD, self.prod);
            self.be.turn();
            let rsp_prod = self.ring.index(layout::RSP_PROD);
            if rsp_prod != self.prod {
                return Err(format!("rsp_prod {rsp_prod} after request {}", self.prod));
            }
            let mut rsp = Response::new_zeroed();
            self.ring.read(slot, rsp.as_mut_bytes());
            if rsp.id != req.id {
                return Err(format!("response id {} to request {}", rsp.id, req.id));
            }
            Ok(rsp)
        }

        /// A one-segment read/write of the data page's sectors `first..=last`
        /// at disk sector `sector`.
        fn rw(&mut self, op: u8, sector: u64, first: u8, last: u8) -> Result<Response, String> {
            let gref = self
                .grants
                .grant_access(DomId(0), self.data.gfn(), op == blkif::OP_WRITE)
                .map_err(|e| format!("{e:?}"))?;
            let mut req = Request {
                operation: op,
                nr_segments: 1,
                sector_number: sector,
                ..Default::default()
            };
            req.seg[0].gref = gref.0;
            req.seg[0].first_sect = first;
            req.seg[0].last_sect = last;
            let r = self.submit(req);
            self.grants.end_access(gref).map_err(|e| format!("{e:?}"))?;
            r
        }

        fn page(&self) -> Vec<u8> {
            let mut p = vec![0u8; PAGE_SIZE];
            self.data.mem().read(0, &mut p);
            p
        }
    }

    /// What a blkback must do with each kind of request: `Err` names the first
    /// thing this backend got wrong.
    fn peer_contract(fake: fn(&mut BlockBackend)) -> Result<(), String> {
        use blkif::{RSP_EOPNOTSUPP as NOTSUPP, RSP_ERROR as ERROR, RSP_OKAY as OKAY};
        let mut f = RawFront::new(fake);
        let expect = |what: &str, rsp: Response, op: u8, status: i16| {
            if (rsp.operation, rsp.status) == (op, status) {
                Ok(())
            } else {
                Err(format!(
                    "{what}: answered operation {} status {}, not {op} {status}",
                    rsp.operation, rsp.status
                ))
            }
        };
        // A write lands on the disk, at its sector, and nowhere else.
        // Sectors 1..=6 of the page hold the data, the rest is zero (G3).
        let data: Vec<u8> = (0..PAGE_SIZE)
            .map(|i| {
                if (512..7 * 512).contains(&i) {
                    (i * 13 + 5) as u8
                } else {
                    0
                }
            })
            .collect();
        f.data.mem().write(0, &data);
        let before = f.be.disk.clone();
        let r = f.rw(blkif::OP_WRITE, 8, 1, 6)?;
        expect("write", r, blkif::OP_WRITE, OKAY)?;
        let mut want = before.clone();
        want[4096..4096 + 6 * 512].copy_from_slice(&data[512..7 * 512]);
        if f.be.disk != want {
            return Err("a write answered OKAY did not put its data on the disk".into());
        }
        // A read brings the disk's bytes into the page's sectors, nowhere else
        // (the page still holds what the write gave the backend: a page granted
        // for a read may hold only that).
        let r = f.rw(blkif::OP_READ, 24, 2, 3)?;
        expect("read", r, blkif::OP_READ, OKAY)?;
        let mut want = data.clone();
        want[1024..2048].copy_from_slice(&f.be.disk[24 * 512..24 * 512 + 1024]);
        if f.page() != want {
            return Err("a read answered OKAY did not bring the disk's data".into());
        }
        if !f.be.log.violations.is_empty() {
            return Err(format!("violations: {:?}", f.be.log.violations));
        }
        // What the backend cannot do is answered ERROR or EOPNOTSUPP, and changes
        // nothing.
        let disk = f.be.disk.clone();
        let last = (DISK_BYTES / 512) as u64;
        let r = f.rw(blkif::OP_READ, last, 0, 0)?;
        expect("a read past the end", r, blkif::OP_READ, ERROR)?;
        let r = f.rw(blkif::OP_WRITE, last - 1, 0, 1)?;
        expect("a write across the end", r, blkif::OP_WRITE, ERROR)?;
        let r = f.rw(blkif::OP_WRITE, 0, 5, 2)?;
        expect("a write of sectors 5..=2", r, blkif::OP_WRITE, ERROR)?;
        let r = f.rw(blkif::OP_READ, 0, 0, 8)?;
        expect("a read of sectors 0..=8", r, blkif::OP_READ, ERROR)?;
        let r = f.submit(Request {
            operation: 99,
            ..Default::default()
        })?;
        expect("operation 99", r, 99, NOTSUPP)?;
        let r = f.submit(Request::from(RequestDiscard {
            operation: blkif::OP_DISCARD,
            sector_number: last - 1,
            nr_sectors: 2,
            ..Default::default()
        }))?;
        expect("a discard across the end", r, blkif::OP_DISCARD, ERROR)?;
        if f.be.disk != disk {
            return Err("a refused request changed the disk".into());
        }
        let r = f.submit(Request::from(RequestDiscard {
            operation: blkif::OP_DISCARD,
            sector_number: 8,
            nr_sectors: 2,
            ..Default::default()
        }))?;
        expect("a discard", r, blkif::OP_DISCARD, OKAY)?;
        if f.be.disk[4096..5120] != [0u8; 1024] || f.be.disk[5120..] != disk[5120..] {
            return Err("a discard answered OKAY did not zero exactly its sectors".into());
        }
        let r = f.submit(Request {
            operation: blkif::OP_FLUSH_DISKCACHE,
            ..Default::default()
        })?;
        expect("a flush", r, blkif::OP_FLUSH_DISKCACHE, OKAY)?;
        if !f.be.mapped().iter().all(|g| f.be.pinned.contains(&g.0)) {
            return Err(format!("grants left mapped: {:?}", f.be.mapped()));
        }
        Ok(())
    }

    /// The backend does what it answers: the catalogue's verdicts rest on it.
    #[test]
    fn the_backend_does_the_io_it_answers_okay() {
        assert_eq!(peer_contract(|_| {}), Ok(()));
        // A read-only disk (VDISK_READONLY in `info`): writes fail (as Linux
        // blkback's do) and change nothing; reads work.
        let mut f = RawFront::new(|b| {
            b.offers.connect.insert("info", Some("4".into()));
        });
        let disk = f.be.disk.clone();
        let r = f.rw(blkif::OP_WRITE, 8, 0, 7).expect("answered");
        assert_eq!((r.operation, r.status), (blkif::OP_WRITE, blkif::RSP_ERROR));
        assert!(f.be.disk == disk, "a refused write changed the disk");
        let r = f.rw(blkif::OP_READ, 8, 0, 7).expect("answered");
        assert_eq!((r.operation, r.status), (blkif::OP_READ, blkif::RSP_OKAY));
        let data: Vec<_> =
            f.be.mapped()
                .into_iter()
                .filter(|g| !f.be.pinned.contains(&g.0))
                .collect();
        assert!(data.is_empty(), "data grants left mapped: {data:?}");
    }

    /// A fake backend that answers OKAY to every request without doing any I/O is
    /// noticed (as is one that answers OKAY to what it cannot do).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "checks the contract's logic, not memory safety; 1 MiB disks are slow under Miri"
    )]
    fn a_backend_answering_okay_without_io_is_noticed() {
        fn fake(b: &mut BlockBackend) {
            b.on_request = Some(Box::new(|_, _: &Request| Answer::Drop));
            let mut answered = 0;
            b.on_turn = Some(Box::new(move |b: &mut BlockBackend| {
                let new: Vec<Request> = b.log.seen[answered..].iter().map(|s| s.1).collect();
                answered = b.log.seen.len();
                for req in new {
                    b.push_raw(
                        0,
                        &Response {
                            id: req.id,
                            operation: req.operation,
                            status: blkif::RSP_OKAY,
                            ..Response::new_zeroed()
                        },
                    );
                }
                if let Some(p) = b.rsp_prod_pvt(0) {
                    b.set_rsp_prod(0, p);
                }
            }));
        }
        let e = peer_contract(fake).expect_err("the fake passed");
        assert!(e.contains("did not put its data on the disk"), "{e}");
        // OKAY to everything, I/O done where it can be.
        fn always_okay(b: &mut BlockBackend) {
            b.on_response = Some(Box::new(|_, mut rsp| {
                rsp.status = blkif::RSP_OKAY;
                vec![rsp]
            }));
        }
        let e = peer_contract(always_okay).expect_err("the fake passed");
        assert!(e.starts_with("a read past the end"), "{e}");
    }

    /// A feature the backend does not offer is answered EOPNOTSUPP, one offered
    /// ("1", spaces allowed) is served: the cases about unsupported features
    /// rest on it (cargo-mutants: `flag` and the guards of `execute`).
    #[test]
    fn only_offered_features_are_served() {
        use blkif::{RSP_EOPNOTSUPP as NOTSUPP, RSP_OKAY as OKAY};
        let discard = |flag: u8| {
            Request::from(RequestDiscard {
                operation: blkif::OP_DISCARD,
                flag,
                sector_number: 8,
                nr_sectors: 1,
                ..Default::default()
            })
        };
        let op = |operation: u8| Request {
            operation,
            ..Default::default()
        };
        let answers = |f: &mut RawFront| -> Vec<i16> {
            [
                op(blkif::OP_FLUSH_DISKCACHE),
                op(blkif::OP_WRITE_BARRIER),
                discard(0),
                discard(blkif::DISCARD_SECURE),
            ]
            .into_iter()
            .map(|r| f.submit(r).expect("answered").status)
            .collect()
        };
        // Nothing offered: "0", garbage or no key at all.
        let mut f = RawFront::new(|b| {
            b.offers
                .connect
                .insert("feature-flush-cache", Some("0".into()));
            b.offers
                .connect
                .insert("feature-barrier", Some("yes".into()));
            b.offers.connect.remove("feature-discard");
        });
        let disk = f.be.disk.clone();
        assert_eq!(answers(&mut f), [NOTSUPP; 4]);
        assert!(f.be.disk == disk, "a refused discard changed the disk");
        // Everything offered but secure discards.
        let mut f = RawFront::new(|b| {
            b.offers
                .connect
                .insert("feature-barrier", Some(" 1 ".into()));
            b.offers.connect.insert("discard-secure", Some("0".into()));
        });
        assert_eq!(answers(&mut f), [OKAY, OKAY, OKAY, NOTSUPP]);
        // The default offer serves them all.
        let mut f = RawFront::new(|_| {});
        assert_eq!(answers(&mut f), [OKAY; 4]);
        assert_eq!(f.be.log.responses, 4, "responses counted");
        assert!(f.be.disk[8 * 512..9 * 512].iter().all(|&b| b == 0));
    }

    /// A direct read or write of no segment, or of more than a request holds, is
    /// answered ERROR and logged (never served, never a panic).
    #[test]
    fn direct_segment_counts_outside_the_limits_are_refused() {
        let mut f = RawFront::new(|_| {});
        for (op, n) in [
            (blkif::OP_READ, 0),
            (blkif::OP_WRITE, 12),
            (blkif::OP_READ, 255),
        ] {
            let r = f
                .submit(Request {
                    operation: op,
                    nr_segments: n,
                    ..Default::default()
                })
                .expect("answered");
            assert_eq!(
                (r.operation, r.status),
                (op, blkif::RSP_ERROR),
                "{n} segments"
            );
            let v = f.be.log.violations.pop().expect("a violation");
            assert!(
                v.ends_with(&format!("{n} segments in a direct request")),
                "{v}"
            );
        }
    }

    /// An indirect read over two indirect pages: as many segments as offered are
    /// served, each from its own descriptor on either page; one more is refused,
    /// and so are no segment and a data operation other than read or write
    /// (cargo-mutants: the bounds of `segments`).
    #[test]
    fn indirect_requests_use_both_pages_up_to_the_offer() {
        let mut f = RawFront::new(|b| {
            b.offers
                .probe
                .insert("feature-max-indirect-segments", Some("600".into()));
        });
        let host = f.data.host().clone();
        let pages = [host.pages(1), host.pages(1)];
        let data = f
            .grants
            .grant_access(DomId(0), f.data.gfn(), false)
            .expect("data grant");
        // Segment k reads disk sector 16 + k into sector k % 8 of the data page.
        for k in 0..600 {
            let mut s = RequestSegment::new_zeroed();
            s.gref = data.0;
            s.first_sect = (k % 8) as u8;
            s.last_sect = s.first_sect;
            pages[k / 512].mem().write(k % 512 * 8, s.as_bytes());
        }
        let refs: Vec<u32> = pages
            .iter()
            .map(|p| {
                f.grants
                    .grant_access(DomId(0), p.gfn(), true)
                    .expect("grant")
                    .0
            })
            .collect();
        let ind = |nr_segments: u16, indirect_op: u8| {
            Request::from(RequestIndirect {
                operation: blkif::OP_INDIRECT,
                indirect_op,
                nr_segments,
                sector_number: 16,
                indirect_grefs: [refs[0], refs[1], 0, 0, 0, 0, 0, 0],
                ..Default::default()
            })
        };
        let checked = f.be.log.padding_checked;
        let r = f.submit(ind(600, blkif::OP_READ)).expect("answered");
        assert_eq!((r.operation, r.status), (blkif::OP_READ, blkif::RSP_OKAY));
        assert_eq!(f.be.log.violations, Vec::<String>::new());
        // The request and both of its indirect pages were audited.
        assert_eq!(f.be.log.padding_checked, checked + 3);
        // Sector k of the page holds what the last segment k % 8 read: 592 + k.
        let at = (16 + 592) * 512;
        assert!(f.page() == f.be.disk[at..at + PAGE_SIZE], "wrong data");
        for (n, op, why) in [
            (
                601,
                blkif::OP_READ,
                "601 segments in an indirect request (offer 600)",
            ),
            (
                0,
                blkif::OP_READ,
                "0 segments in an indirect request (offer 600)",
            ),
            (8, blkif::OP_FLUSH_DISKCACHE, "indirect op 3"),
        ] {
            let r = f.submit(ind(n, op)).expect("answered");
            assert_eq!((r.operation, r.status), (op, blkif::RSP_ERROR), "{why}");
            assert!(
                f.be.log.violations.iter().any(|v| v.ends_with(why)),
                "{why}: {:?}",
                f.be.log.violations
            );
        }
        assert!(
            f.be.mapped().iter().all(|g| f.be.pinned.contains(&g.0)),
            "grants left mapped: {:?}",
            f.be.mapped()
        );
    }

    /// A segment placed late in its page may end exactly at the disk's end (the
    /// bound is the segment's length, not its end in the page).
    #[test]
    fn a_request_may_end_at_the_last_sector() {
        let mut f = RawFront::new(|_| {});
        let last = (DISK_BYTES / 512) as u64 - 1;
        let r = f.rw(blkif::OP_READ, last, 7, 7).expect("answered");
        assert_eq!((r.operation, r.status), (blkif::OP_READ, blkif::RSP_OKAY));
        assert!(f.page()[7 * 512..] == f.be.disk[DISK_BYTES - 512..]);
        assert_eq!(f.be.log.pages_scanned, 1, "pages scanned");
    }

    /// A frontend that writes `keys` (and, under each of `refs`, the ref of a
    /// freshly granted page) and goes Initialised, against a backend offering
    /// `probe`: `check` sees the backend after its turn.
    fn handshake(
        probe: &[(&'static str, &str)],
        keys: &[(&str, &str)],
        refs: &[&str],
        check: impl FnOnce(&BlockBackend),
    ) {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let dev = server.add_device("vbd", DEVID);
        let frames = (GRANT_ENTRIES * 8).div_ceil(PAGE_SIZE);
        let grants =
            GrantTable::<GRANT_ENTRIES>::new(host.shared_pages(frames)).expect("grant table");
        let obs = GrantObserver::new(&host, grants.frames().expect("frames"));
        let mut be = BlockBackend::new(&host, obs, Box::new(dev.clone()));
        be.offers.probe.clear();
        for &(k, v) in probe {
            be.offers.probe.insert(k, Some(v.to_string()));
        }
        be.probe();
        let fe = dev.frontend_path().to_string();
        for r in refs {
            let g = grants
                .grant_access(DomId(0), host.pages(1).gfn(), false)
                .expect("ring grant");
            server.write(&format!("{fe}/{r}"), g.0.to_string().as_bytes());
        }
        for (k, v) in keys.iter().chain(&[("state", "3")]) {
            server.write(&format!("{fe}/{k}"), v.as_bytes());
        }
        be.turn();
        check(&be);
    }

    /// The ring order and queue count a frontend picks are checked against the
    /// offer (and the backend's own limits) before anything is mapped; within
    /// them it connects, once (cargo-mutants: the bounds of `connect_rings`,
    /// `log.connects`).
    #[test]
    fn ring_order_and_queues_beyond_the_offer_are_refused() {
        let refused = |be: &BlockBackend, why: &str| {
            assert_eq!(be.state(), state::CLOSING, "{why}");
            assert_eq!(be.log.connects, 0);
            assert!(
                be.log.violations.iter().any(|v| v.starts_with(why)),
                "{why}: {:?}",
                be.log.violations
            );
        };
        let order = [("max-ring-page-order", "1")];
        let ev = ("event-channel", "5");
        handshake(
            &order,
            &[("ring-page-order", "1"), ev],
            &["ring-ref0", "ring-ref1"],
            |be| {
                assert_eq!(be.state(), state::CONNECTED, "{:?}", be.log.violations);
                assert_eq!((be.queues(), be.log.connects), (1, 1));
                assert_eq!(be.ring(0).map(RingPages::size), Some(64));
            },
        );
        handshake(
            &order,
            &[("ring-page-order", "2"), ev],
            &["ring-ref0", "ring-ref1", "ring-ref2", "ring-ref3"],
            |be| refused(be, "ring-page-order Some(2) above the offer 1"),
        );
        handshake(
            &[("max-ring-page-order", "10")],
            &[("ring-page-order", "9"), ev],
            &[],
            |be| refused(be, "ring-page-order Some(9) above the offer 10 (or 8)"),
        );
        let two = [("multi-queue-max-queues", "2")];
        for n in ["0", "3"] {
            handshake(
                &two,
                &[("multi-queue-num-queues", n), ev],
                &["ring-ref"],
                |be| refused(be, &format!("multi-queue-num-queues {n} (offer 2)")),
            );
        }
        handshake(
            &two,
            &[
                ("multi-queue-num-queues", "2"),
                ("queue-0/event-channel", "5"),
                ("queue-1/event-channel", "6"),
            ],
            &["queue-0/ring-ref", "queue-1/ring-ref"],
            |be| {
                assert_eq!(be.state(), state::CONNECTED, "{:?}", be.log.violations);
                assert_eq!((be.queues(), be.port(1)), (2, Some(6)));
            },
        );
    }

    /// A read's page is mapped writable, so a read into a page granted
    /// read-only is refused (the backend could not write the data), logged.
    #[test]
    fn a_read_into_a_read_only_grant_is_refused() {
        let mut f = RawFront::new(|_| {});
        let gref = f
            .grants
            .grant_access(DomId(0), f.data.gfn(), true)
            .expect("grant");
        let mut req = Request {
            operation: blkif::OP_READ,
            nr_segments: 1,
            ..Default::default()
        };
        req.seg[0].gref = gref.0;
        req.seg[0].last_sect = 7;
        let r = f.submit(req).expect("answered");
        assert_eq!((r.operation, r.status), (blkif::OP_READ, blkif::RSP_ERROR));
        let v = f.be.log.violations.last().expect("a violation");
        assert!(
            v.ends_with(&format!("writable map of read-only grant {}", gref.0)),
            "{v}"
        );
        assert!(f.page().iter().all(|&b| b == 0), "the page was written");
    }

    /// A frontend may publish a whole ring of requests at once (all served);
    /// `req_prod` further ahead than the ring holds is an overrun: logged, and
    /// the queue is no longer served.
    #[test]
    fn a_full_ring_is_served_and_an_overrun_kills_the_queue() {
        let mut f = RawFront::new(|_| {});
        let size = f.ring.size();
        let flush = Request {
            operation: blkif::OP_FLUSH_DISKCACHE,
            ..Default::default()
        };
        let publish = |f: &mut RawFront, n: u32| {
            for _ in 0..n {
                let slot = layout::HEADER_SIZE + (f.prod % size) as usize * SLOT;
                let mut req = flush;
                req.id = f.next_id;
                f.next_id += 1;
                f.ring.write(slot, req.as_bytes());
                f.prod += 1;
            }
            f.ring.set_index(layout::REQ_PROD, f.prod);
            f.be.turn();
        };
        publish(&mut f, size);
        assert_eq!(f.ring.index(layout::RSP_PROD), size);
        assert_eq!(f.be.log.violations, Vec::<String>::new());
        // Claims one request more than the ring holds.
        f.ring.set_index(layout::REQ_PROD, f.prod + size + 1);
        f.be.turn();
        let v = f.be.log.violations.last().expect("a violation");
        assert!(v.starts_with("queue 0: req_prod"), "{v}");
        assert_eq!(f.be.log.seen.len(), size as usize, "requests consumed");
        // The queue stays dead: a sane req_prod afterwards is not served.
        publish(&mut f, 1);
        assert_eq!(f.ring.index(layout::RSP_PROD), size);
    }

    /// The disk holds the documented pattern, byte `i` = `7 * i + i / 4096` (mod
    /// 256): no two neighbouring pages are alike, so a misplaced page shows
    /// (cargo-mutants: the arithmetic of `disk_pattern`).
    #[test]
    fn disk_pattern_is_as_documented() {
        let disk = disk_pattern(DISK_BYTES + 512);
        assert_eq!(disk.len(), DISK_BYTES + 512);
        let step = if cfg!(miri) { 4093 } else { 1 };
        for i in (0..disk.len()).step_by(step) {
            assert_eq!(disk[i], (7 * i + i / 4096) as u8, "byte {i}");
        }
        // Pages differ from their neighbours (sectors within a page repeat:
        // 7 * 512 = 0 mod 256).
        for p in (4096..DISK_BYTES).step_by(4096 * step) {
            assert_ne!(disk[p - 4096..p], disk[p..p + 4096], "page {}", p / 4096);
        }
    }

    /// What the cases read through the backend's accessors: the negotiated
    /// persistent grants, the keys it wrote.
    #[test]
    fn accessors_show_what_was_negotiated_and_written() {
        let mut f = RawFront::new(|_| {});
        assert!(!f.be.persistent());
        f.be.set_key("x", "y");
        assert_eq!(f.be.store().backend("x").as_deref(), Some("y"));
        let keys = [("feature-persistent", "1"), ("event-channel", "5")];
        handshake(&[("feature-persistent", "1")], &keys, &["ring-ref"], |be| {
            assert!(be.persistent());
        });
    }

    /// At most 64 violations are kept (a flood of bad requests cannot grow the
    /// log without bound), the first ones.
    #[test]
    fn the_violation_log_keeps_the_first_64() {
        let mut f = RawFront::new(|_| {});
        for i in 0..100 {
            f.be.violation(format!("v{i}"));
        }
        assert_eq!(f.be.log.violations.len(), 64);
        assert_eq!(f.be.log.violations[63], "v63");
        // Debug shows the state, the queues and the log.
        let d = format!("{:?}", f.be);
        assert!(
            d.starts_with("BlockBackend { state: 4, queues: 1, held: 0, log: Log {"),
            "{d}"
        );
    }

    /// The R7 audit flags each kind of dirt, for every request kind, and nothing
    /// else: used segments, a secure discard's flag and the indirect pages in use
    /// are fields, not padding (mutants of `padding_violation` and `is_zero`; the
    /// audit's other tests are xbd-front's, which cargo-mutants does not run for
    /// this package).
    #[test]
    fn padding_violation_flags_each_kind_of_dirt() {
        for op in [
            blkif::OP_READ,
            blkif::OP_WRITE,
            blkif::OP_FLUSH_DISKCACHE,
            blkif::OP_WRITE_BARRIER,
        ] {
            let mut clean = Request {
                operation: op,
                nr_segments: 3,
                ..Default::default()
            };
            for s in &mut clean.seg[..3] {
                s.gref = 5;
                s.last_sect = 7;
            }
            assert_eq!(padding_violation(&clean), None, "op {op}");
            let mut d = clean;
            d._pad = 1;
            assert_eq!(padding_violation(&d), Some("non-zero _pad"));
            let mut d = clean;
            d.seg[2]._pad = [0, 1];
            assert_eq!(padding_violation(&d), Some("non-zero segment _pad"));
            let mut d = clean;
            d.seg[3].gref = 9;
            assert_eq!(
                padding_violation(&d),
                Some("non-zero bytes in unused segments")
            );
            // A count past the maximum is not the audit's business; it must not
            // panic (the count is clamped).
            let mut d = clean;
            d.nr_segments = 200;
            assert_eq!(padding_violation(&d), None);
        }
        let disc = Request::from(RequestDiscard {
            operation: blkif::OP_DISCARD,
            flag: 1,
            ..Default::default()
        });
        assert_eq!(padding_violation(&disc), None);
        let mut d = disc;
        d._pad = 1;
        assert!(padding_violation(&d).is_some());
        let mut d = disc;
        d.seg[10].last_sect = 1;
        assert_eq!(
            padding_violation(&d),
            Some("non-zero padding in a discard request")
        );
        let ind = RequestIndirect {
            operation: blkif::OP_INDIRECT,
            indirect_op: blkif::OP_READ,
            nr_segments: 600,
            indirect_grefs: [3, 4, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(padding_violation(&Request::from(ind)), None, "two pages");
        let bad_ind = |f: &dyn Fn(&mut RequestIndirect)| {
            let mut r = ind;
            f(&mut r);
            padding_violation(&Request::from(r))
        };
        let msg = Some("non-zero padding in an indirect request");
        assert_eq!(bad_ind(&|r| r.indirect_grefs[2] = 7), msg);
        assert_eq!(bad_ind(&|r| r.nr_segments = 20), msg, "one page");
        assert_eq!(bad_ind(&|r| r._pad = 1), msg);
        assert_eq!(bad_ind(&|r| r._pad2 = 1), msg);
        assert_eq!(bad_ind(&|r| r._pad3 = 1), msg);
        let mut tail = Request::from(ind);
        tail.seg[7].gref = 1;
        assert_eq!(
            padding_violation(&tail),
            Some("non-zero tail after an indirect request")
        );
        // Other operations are not audited.
        let mut other = Request {
            operation: 99,
            _pad: 1,
            ..Default::default()
        };
        other.seg[0].gref = 1;
        assert_eq!(padding_violation(&other), None);
    }
}
