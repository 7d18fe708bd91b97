//! A xenstore server peer ([`StoreServer`]) on a [`HostPlatform`], with hooks for
//! hostile tests, and a device-directory rig ([`Device`]).
//!
//! The server speaks `io/xs_wire.h` over a store page in the platform's memory, with
//! the semantics of C xenstored 4.17 for one unprivileged guest: permissions (and
//! `EACCES` where xenstored gives it), generation-checked transactions (`EAGAIN`),
//! watches that fire once when set and then on every change, and the error names
//! xenstored sends (`ENOENT`, `EACCES`, `EEXIST`, `EINVAL`, `EAGAIN`, `EBUSY`,
//! `EPERM`). Operations: READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART,
//! GET_PERMS, SET_PERMS, WATCH, UNWATCH, TRANSACTION_START/END, GET_DOMAIN_PATH and
//! RESET_WATCHES; the privileged ones (INTRODUCE, CONTROL, ...) get `EACCES`, unknown
//! types `EINVAL`. It is found as a guest finds xenstored: the platform answers
//! `HVM_PARAM_STORE_PFN` / `HVM_PARAM_STORE_EVTCHN` with its page and port. It runs on
//! the driver's thread, one turn per `wait()` (it is an added peer,
//! [`HostPlatform::add_peer`]), so runs are deterministic and Miri checks them.
//!
//! Hooks (all on [`StoreServer`]): put any bytes into any key ([`StoreServer::write`]),
//! remove any directory ([`StoreServer::remove`]), fire watches for any path, even one
//! that does not exist ([`StoreServer::fire`]), send a raw watch event
//! ([`StoreServer::send_watch_event`]), answer the next request in any way
//! ([`StoreServer::answer_next`] with an [`Answer`]: an errno, silence, raw bytes with
//! any header, a rewritten reply) or every request matching a rule
//! ([`StoreServer::on_request`]), put raw bytes on the response ring
//! ([`StoreServer::push_raw`]), write raw ring indices ([`StoreServer::set_rsp_prod`]),
//! fail the next commits with `EAGAIN` ([`StoreServer::fail_commits`]), stop answering
//! ([`StoreServer::pause`]), dribble replies ([`StoreServer::set_max_chunk`]), serve
//! a ring reconnect the guest asks for or never complete it
//! ([`StoreServer::hold_reconnect`], [`StoreServer::set_server_features`]); and
//! observe what the driver did: keys and values ([`StoreServer::read`]), every request
//! ([`StoreServer::requests`]), watches, commits.
//!
//! # How a device peer uses the store server and the rig
//!
//! A block or net backend peer is built over a [`Device`] from
//! [`StoreServer::add_device`], which creates the frontend's and the backend's
//! directories (paths, ids, permissions, both states `Initialising`) as a toolstack
//! does. The peer writes its own keys ([`Device::set_backend_key`], e.g. `sectors` or
//! `feature-*`), moves to `InitWait` ([`Device::set_backend_state`]), and on each of its
//! turns (its own closure added with [`HostPlatform::add_peer`], after the store
//! server's) reads the frontend's state and keys ([`Device::frontend_state`],
//! [`Device::frontend_key`], e.g. `ring-ref`, `event-channel`), maps what was
//! granted, and answers with `Connected`. The driver under test is given the
//! platform and [`Device::node`]; it finds the store through the HVM params. Store
//! writes by the peer fire the driver's watches, which the server delivers on its next
//! turn. At the end of a test call [`HostPlatform::clear_peers`]: a peer holding a
//! `Device` (or any handle on the platform) otherwise keeps the platform's memory alive
//! (a leak Miri reports).
//!
//! xenbus's own unit tests still use its private fake xenstored (`xenbus/src/fake.rs`);
//! this server could replace it there (it lacks only the fake's concurrent mode and its
//! R7 audit of the reserved part of the page), which is left for later.
//!
//! # Example
//!
//! ```
//! use hypercall::abi::xenbus::XenbusState;
//! use xen_conformance::xenstore::{Answer, StoreServer};
//! use xen_conformance::HostPlatform;
//! use xenbus::{Error, ErrnoName, Store, Xenstore};
//!
//! let host = HostPlatform::new();
//! let server = StoreServer::new(&host);
//! server.write("/local/domain/1/name", b"guest");
//! let dev = server.add_device("vbd", 51712);
//!
//! // The driver finds the store through the HVM params, as on Xen.
//! let mut xs = Xenstore::from_hvm_params(host.clone()).unwrap();
//! let mut buf = [0u8; 64];
//! assert_eq!(xs.read_str("name", &mut buf).unwrap(), "guest");
//! assert_eq!(xs.read_u32(&format!("{}/backend-id", dev.node())).unwrap(), 0);
//!
//! // A backend moves its state; a hostile store answers the next request with EACCES.
//! dev.set_backend_state(XenbusState::InitWait);
//! server.answer_next(Answer::Error("EACCES".into()));
//! let r = xs.read_str("name", &mut buf);
//! assert!(matches!(r, Err(Error::Xenstore(ErrnoName::Eacces))), "{r:?}");
//!
//! xs.write(&format!("{}/ring-ref", dev.node()), b"8").unwrap();
//! assert_eq!(dev.frontend_str("ring-ref").as_deref(), Some("8"));
//! assert!(server.requests().len() >= 4);
//! host.clear_peers();
//! ```

mod rig;
mod tree;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::{Rc, Weak};

use hypercall::abi::hvm::{PARAM_STORE_EVTCHN, PARAM_STORE_PFN};
use hypercall::abi::xs_wire::{
    iface, is_well_formed_path, msg, MsgHeader, CONNECTED, ERROR_PROTO, ERROR_RINGIDX, PAYLOAD_MAX,
    RECONNECT, RING_SIZE, SERVER_FEATURE_RECONNECTION,
};
use hypercall::{Gfn, Port};

pub use rig::Device;
pub use tree::Watch;
use tree::{Perm, Store};

use crate::{HostPlatform, HostRegion, PeerId};

/// The event channel the store is reached through (what
/// `HVM_PARAM_STORE_EVTCHN` answers).
pub const STORE_PORT: Port = Port(1);
/// The guest's domain id unless [`StoreServer::with_domid`] says otherwise.
pub const GUEST_DOMID: u16 = 1;
const HEADER_LEN: usize = 16;
/// What xenstored 4.17 offers in `server_features`, `SERVER_FEATURE_RECONNECTION |
/// SERVER_FEATURE_ERROR` (1 | 2), written out: cargo-mutants mutates a constant's
/// expression too, and the `|` of two disjoint bits as `^` is the same value
/// (a unit test checks the page holds the two bits).
const OFFERED_FEATURES: u32 = 3;

/// One request the driver sent, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Its header.
    pub header: MsgHeader,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Request {
    /// The NUL-separated strings of the payload (a final NUL ends the last one).
    pub fn args(&self) -> Vec<&[u8]> {
        let body = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        body.split(|&b| b == 0).collect()
    }

    /// The first string of the payload (the path of node operations), lossy.
    pub fn path(&self) -> String {
        let first = self.payload.split(|&b| b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(first).into_owned()
    }
}

/// Rewrites a served reply (its full bytes, header included).
pub type Rewrite = Box<dyn FnOnce(&Request, Vec<u8>) -> Vec<u8>>;
/// Computes the bytes sent for a request instead of serving it.
pub type Reply = Box<dyn FnOnce(&Request) -> Vec<u8>>;
/// Chooses how to answer each request ([`StoreServer::on_request`]); `None`: as
/// usual.
pub type Rule = Box<dyn FnMut(&Request) -> Option<Answer>>;

/// How the server answers one request. The closures of [`Answer::Reply`] and
/// [`Answer::Rewrite`] run inside the server's turn: they must not call the server.
pub enum Answer {
    /// As xenstored would.
    Serve,
    /// Not at all (the request is consumed and has no effect).
    Silent,
    /// `XS_ERROR` with this name (any string), with the request's `req_id` and
    /// `tx_id`; the request has no effect.
    Error(String),
    /// These bytes instead of a reply (any header, any length, a short body...); the
    /// request has no effect. Build them with [`message`] / [`header`].
    Raw(Vec<u8>),
    /// Bytes computed from the request (e.g. its `req_id` with another `tx_id`);
    /// the request has no effect.
    Reply(Reply),
    /// Served (the request takes effect), then the reply's bytes rewritten.
    Rewrite(Rewrite),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Serve => f.write_str("Serve"),
            Answer::Silent => f.write_str("Silent"),
            Answer::Error(e) => write!(f, "Error({e:?})"),
            Answer::Raw(b) => write!(f, "Raw({} bytes)", b.len()),
            Answer::Reply(_) => f.write_str("Reply(..)"),
            Answer::Rewrite(_) => f.write_str("Rewrite(..)"),
        }
    }
}

/// The 16 header bytes of a message.
pub fn header(ty: u32, req_id: u32, tx_id: u32, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    for (i, v) in [ty, req_id, tx_id, len].into_iter().enumerate() {
        h[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    h
}

/// A whole message: header (with `len` = the payload's length) and payload.
pub fn message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = header(ty, req_id, tx_id, payload.len() as u32).to_vec();
    v.extend_from_slice(payload);
    v
}

/// `path\0token\0`, the payload of a watch event.
fn event_payload(path: &[u8], token: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    p.push(0);
    p.extend_from_slice(token);
    p.push(0);
    p
}

struct State {
    page: HostRegion,
    port: Port,
    store: Store,
    inbuf: Vec<u8>,
    out: VecDeque<u8>,
    max_chunk: usize,
    paused: bool,
    broken: Option<String>,
    next: VecDeque<Answer>,
    rule: Option<Rule>,
    log: Vec<Request>,
    peer: Option<PeerId>,
    turns: u64,
    hold_reconnect: bool,
    reconnects: u64,
}

/// A xenstore server on a [`HostPlatform`] (see the module docs). Clones are handles
/// on the same server. The server runs (one turn per `wait()`) while a handle on it
/// exists and until [`StoreServer::stop`]; its peer holds no handle, so dropping the
/// last one ends it.
#[derive(Clone)]
pub struct StoreServer(Rc<RefCell<State>>);

impl fmt::Debug for StoreServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("StoreServer")
            .field("gfn", &s.page.gfn())
            .field("port", &s.port)
            .field("domid", &s.store.domid)
            .finish()
    }
}

impl StoreServer {
    /// A server for guest domain [`GUEST_DOMID`] on `host`: a fresh store page,
    /// published through the HVM params, with `/`, `/local/domain/0` and the guest's
    /// home (`/local/domain/1`, with `domid` and `name`) in the tree.
    pub fn new(host: &HostPlatform) -> StoreServer {
        StoreServer::with_domid(host, GUEST_DOMID)
    }

    /// As [`StoreServer::new`], for guest domain `domid` (not 0: the guest is
    /// unprivileged).
    ///
    /// # Panics
    /// If `domid` is 0.
    pub fn with_domid(host: &HostPlatform, domid: u16) -> StoreServer {
        assert!(domid != 0, "the guest under test is not dom0");
        let page = host.pages(1);
        // What xenstored 4.17 offers (the `error` field is used when it gives up on
        // the guest; a reconnect the guest asks for is served).
        page.mem()
            .store_u32(iface::SERVER_FEATURES, OFFERED_FEATURES);
        host.set_hvm_param(PARAM_STORE_PFN, page.gfn().0);
        host.set_hvm_param(PARAM_STORE_EVTCHN, u64::from(STORE_PORT.0));
        let server = StoreServer(Rc::new(RefCell::new(State {
            page,
            port: STORE_PORT,
            store: Store::new(domid),
            inbuf: Vec::new(),
            out: VecDeque::new(),
            max_chunk: RING_SIZE,
            paused: false,
            broken: None,
            next: VecDeque::new(),
            rule: None,
            log: Vec::new(),
            peer: None,
            turns: 0,
            hold_reconnect: false,
            reconnects: 0,
        })));
        let weak: Weak<RefCell<State>> = Rc::downgrade(&server.0);
        let id = host.add_peer(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                StoreServer(s).step();
            }
        }));
        server.0.borrow_mut().peer = Some(id);
        // The tree's initial nodes fired nothing anyone watches.
        server.0.borrow_mut().store.events.clear();
        server
    }

    /// The store page's frame (`HVM_PARAM_STORE_PFN`).
    pub fn gfn(&self) -> Gfn {
        self.0.borrow().page.gfn()
    }

    /// The store event channel (`HVM_PARAM_STORE_EVTCHN`).
    pub fn port(&self) -> Port {
        self.0.borrow().port
    }

    /// The guest's domain id.
    pub fn domid(&self) -> u16 {
        self.0.borrow().store.domid
    }

    /// The guest's home, `/local/domain/<domid>` (relative paths are under it).
    pub fn home(&self) -> String {
        self.0.borrow().store.home()
    }

    /// The platform.
    pub fn host(&self) -> HostPlatform {
        self.0.borrow().page.host().clone()
    }

    /// The store page (for raw writes anywhere in it: indices, `error`,
    /// `connection`, ring bytes).
    pub fn page(&self) -> HostRegion {
        self.0.borrow().page.clone()
    }

    /// Stops serving: the server's peer leaves the platform (the page stays).
    pub fn stop(&self) {
        let (id, host) = {
            let mut s = self.0.borrow_mut();
            (s.peer.take(), s.page.host().clone())
        };
        if let Some(id) = id {
            host.remove_peer(id);
        }
    }

    // ---- the tree (as the toolstack or a backend; privileged) ------------------

    /// Writes any bytes at `path` (absolute, or relative to the guest's home),
    /// creating it and its parents (which inherit their parent's permissions), and
    /// fires the guest's watches on it.
    pub fn write(&self, path: &str, value: &[u8]) {
        self.0.borrow_mut().store.put(path, value, None);
    }

    /// The value at `path`, if the node exists.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let s = self.0.borrow();
        let p = s.store.abs(path);
        s.store.tree.get(&p).map(|n| n.value.clone())
    }

    /// [`StoreServer::read`] as text (lossy), for evidence.
    pub fn read_str(&self, path: &str) -> Option<String> {
        self.read(path)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        let s = self.0.borrow();
        let p = s.store.abs(path);
        s.store.tree.contains_key(&p)
    }

    /// Removes `path` and everything below it (firing the guest's watches); whether
    /// it existed.
    pub fn remove(&self, path: &str) -> bool {
        self.0.borrow_mut().store.remove(path)
    }

    /// The names of `path`'s children.
    pub fn directory(&self, path: &str) -> Vec<String> {
        let s = self.0.borrow();
        let p = s.store.abs(path);
        tree::children(&s.store.tree, &p)
    }

    /// Sets `path`'s permissions from their wire form (`["n0", "r1"]`: owner dom0,
    /// domain 1 may read), creating the node if needed; fires watches.
    pub fn set_perms(&self, path: &str, perms: &[&str]) -> Result<(), String> {
        let parsed = perms
            .iter()
            .map(|p| Perm::parse(p.as_bytes()).ok_or_else(|| format!("bad permission {p:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err("a permission list needs an owner".into());
        }
        self.put_perms_raw(path, parsed);
        Ok(())
    }

    /// `path`'s permissions in their wire form.
    pub fn perms(&self, path: &str) -> Option<Vec<String>> {
        self.perms_raw(path)
            .map(|v| v.iter().map(Perm::format).collect())
    }

    fn perms_raw(&self, path: &str) -> Option<Vec<Perm>> {
        let s = self.0.borrow();
        let p = s.store.abs(path);
        s.store.tree.get(&p).map(|n| n.perms.clone())
    }

    fn put_perms_raw(&self, path: &str, perms: Vec<Perm>) {
        let mut s = self.0.borrow_mut();
        let p = s.store.abs(path);
        let value = s
            .store
            .tree
            .get(&p)
            .map(|n| n.value.clone())
            .unwrap_or_default();
        s.store.put(&p, &value, Some(perms));
    }

    /// A change-counter of the tree: it moves on every change of any node, so a
    /// peer that looks at the same keys every turn may keep what it read while
    /// the counter stays where it was.
    pub fn generation(&self) -> u64 {
        self.0.borrow().store.generation()
    }

    /// Creates a device's frontend and backend directories (backend in dom0), as a
    /// toolstack does: see [`Device`].
    pub fn add_device(&self, class: &str, id: u32) -> Device {
        Device::create(self, class, id, 0)
    }

    /// As [`StoreServer::add_device`], with the backend in domain `backend_id` (a
    /// driver domain).
    pub fn add_device_in(&self, class: &str, id: u32, backend_id: u16) -> Device {
        Device::create(self, class, id, backend_id)
    }

    // ---- watches ------------------------------------------------------------------

    /// The guest's registered watches.
    pub fn watches(&self) -> Vec<Watch> {
        self.0.borrow().store.watches.clone()
    }

    /// Fires the guest's watches as if `path` changed (whether or not it exists).
    pub fn fire(&self, path: &str) {
        let mut s = self.0.borrow_mut();
        let p = s.store.abs(path);
        s.store.fire(&p, false);
    }

    /// Sends a watch event with any path and token (registered or not).
    pub fn send_watch_event(&self, path: &[u8], token: &[u8]) {
        self.0
            .borrow_mut()
            .store
            .events
            .push((path.to_vec(), token.to_vec()));
    }

    // ---- answers ----------------------------------------------------------------

    /// Answers the next request not yet answered this way (queued: each call covers
    /// one more request) as `answer` says.
    pub fn answer_next(&self, answer: Answer) {
        self.0.borrow_mut().next.push_back(answer);
    }

    /// Consults `rule` for every request (after the [`StoreServer::answer_next`]
    /// queue is empty); `None` removes it. The rule must not hold a handle on this
    /// server (a reference cycle).
    pub fn on_request(&self, rule: Option<Rule>) {
        self.0.borrow_mut().rule = rule;
    }

    /// Queues raw bytes for the response ring (after anything already queued).
    pub fn push_raw(&self, bytes: &[u8]) {
        self.0.borrow_mut().out.extend(bytes);
    }

    /// Fails the next `n` commits with `EAGAIN` (whatever they touched).
    pub fn fail_commits(&self, n: u32) {
        self.0.borrow_mut().store.fail_commits = n;
    }

    /// Commit attempts so far.
    pub fn commits(&self) -> u64 {
        self.0.borrow().store.commits
    }

    /// Transactions the guest started and has not ended.
    pub fn open_transactions(&self) -> usize {
        self.0.borrow().store.open_transactions()
    }

    /// While `true`, the server neither reads requests nor writes replies.
    pub fn pause(&self, paused: bool) {
        self.0.borrow_mut().paused = paused;
    }

    /// Most bytes written to the response ring per turn (at least 1; default a whole
    /// ring): 1 dribbles every message byte by byte.
    pub fn set_max_chunk(&self, bytes: usize) {
        self.0.borrow_mut().max_chunk = bytes.max(1);
    }

    // ---- the ring -----------------------------------------------------------------

    /// Writes `rsp_prod` (a raw index; the server goes on from whatever it finds).
    pub fn set_rsp_prod(&self, value: u32) {
        self.page().mem().store_u32(iface::RSP_PROD, value);
    }

    /// Sets all four ring indices to `start` (before the driver attaches: e.g. just
    /// below 2^32 to test wrapping).
    pub fn set_indices(&self, start: u32) {
        let page = self.page();
        for off in [
            iface::REQ_CONS,
            iface::REQ_PROD,
            iface::RSP_CONS,
            iface::RSP_PROD,
        ] {
            page.mem().store_u32(off, start);
        }
    }

    /// Writes the page's `error` field (`XENSTORE_ERROR_*`; the server offers
    /// `XENSTORE_SERVER_FEATURE_ERROR`, so a client must take a non-zero value as a
    /// failed connection).
    pub fn set_error_field(&self, code: u32) {
        self.page().mem().store_u32(iface::ERROR, code);
    }

    /// Sets the page's `server_features` (`XENSTORE_SERVER_FEATURE_*`; the server
    /// starts with `RECONNECTION | ERROR`, as xenstored 4.17). Without
    /// `RECONNECTION`, `connection` is not looked at (docs/hostile-input.md X14).
    pub fn set_server_features(&self, features: u32) {
        self.page()
            .mem()
            .store_u32(iface::SERVER_FEATURES, features);
    }

    /// While `true`, a reconnect the guest asks for (`connection` set to
    /// `XENSTORE_RECONNECT`) is never completed: the server leaves `connection`
    /// at 1 and neither reads nor writes the rings (docs/hostile-input.md X14).
    pub fn hold_reconnect(&self, hold: bool) {
        self.0.borrow_mut().hold_reconnect = hold;
    }

    /// Reconnects completed so far.
    pub fn reconnects(&self) -> u64 {
        self.0.borrow().reconnects
    }

    /// Why the server gave up on the guest (bad ring indices or request header), if
    /// it did; as xenstored 4.17, it then sets the page's `error` field
    /// (`XENSTORE_ERROR_RINGIDX` or `_PROTO`) and neither reads nor writes.
    pub fn broken(&self) -> Option<String> {
        self.0.borrow().broken.clone()
    }

    // ---- observation -------------------------------------------------------------

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.0.borrow().log.clone()
    }

    /// Turns the server has had.
    pub fn turns(&self) -> u64 {
        self.0.borrow().turns
    }

    /// Bytes queued for the response ring that did not fit yet.
    pub fn pending_output(&self) -> usize {
        self.0.borrow().out.len()
    }

    // ---- the engine ---------------------------------------------------------------

    /// One turn: reads whole requests, answers them, writes what fits of the
    /// output. Called by the platform's `wait()`; a test may call it directly.
    pub fn step(&self) {
        let mut s = self.0.borrow_mut();
        s.turns += 1;
        if s.paused {
            return;
        }
        if s.reconnect_requested() {
            if s.hold_reconnect {
                return;
            }
            s.reset_connection();
        }
        if s.broken.is_some() {
            return;
        }
        if let Err(why) = s.read_requests() {
            s.give_up(why, ERROR_RINGIDX);
            return;
        }
        while let Some(req) = s.take_request() {
            let req = match req {
                Ok(r) => r,
                Err(why) => {
                    s.give_up(why, ERROR_PROTO);
                    return;
                }
            };
            s.log.push(req.clone());
            let answer = match s.next.pop_front() {
                Some(a) => a,
                None => match s.rule.take() {
                    Some(mut rule) => {
                        // The rule runs without the borrow (it may not touch the
                        // server, but may panic: then it is simply gone).
                        drop(s);
                        let a = rule(&req);
                        s = self.0.borrow_mut();
                        if s.rule.is_none() {
                            s.rule = Some(rule);
                        }
                        a.unwrap_or(Answer::Serve)
                    }
                    None => Answer::Serve,
                },
            };
            let bytes = match answer {
                Answer::Serve => Some(s.serve(&req)),
                Answer::Silent => None,
                Answer::Error(e) => Some(error_reply(&req, &e)),
                Answer::Raw(b) => Some(b),
                Answer::Reply(f) => Some(f(&req)),
                Answer::Rewrite(f) => {
                    let served = s.serve(&req);
                    Some(f(&req, served))
                }
            };
            if let Some(b) = bytes {
                s.out.extend(b);
            }
            s.queue_events();
        }
        s.queue_events();
        if let Err(why) = s.flush() {
            s.give_up(why, ERROR_RINGIDX);
        }
    }
}

fn error_reply(req: &Request, name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.push(0);
    message(msg::ERROR, req.header.req_id, req.header.tx_id, &b)
}

impl State {
    /// Whether the guest asked for a reconnect (only looked at while the feature is
    /// offered).
    fn reconnect_requested(&self) -> bool {
        let mem = self.page.mem();
        mem.load_u32(iface::SERVER_FEATURES) & SERVER_FEATURE_RECONNECTION != 0
            && mem.load_u32(iface::CONNECTION) == RECONNECT
    }

    /// The reconnect of `io/xs_wire.h` as xenstored 4.17 does it: partial messages,
    /// queued output, watches and transactions dropped, indices and `error` back to
    /// 0, a failed connection usable again, then `connection` cleared and the guest
    /// notified (the platform has no upcalls: the guest sees it on its next look).
    fn reset_connection(&mut self) {
        self.inbuf.clear();
        self.out.clear();
        self.store.reset_watches();
        self.store.events.clear();
        self.broken = None;
        let mem = self.page.mem();
        for off in iface::RING_INDICES {
            mem.store_u32(off, 0);
        }
        mem.store_u32(iface::ERROR, 0);
        hypercall::shmem::mb();
        mem.store_u32(iface::CONNECTION, CONNECTED);
        self.reconnects += 1;
    }

    fn give_up(&mut self, why: String, code: u32) {
        self.page.mem().store_u32(iface::ERROR, code);
        self.broken = Some(why);
    }

    fn read_requests(&mut self) -> Result<(), String> {
        let mem = self.page.mem();
        let cons = mem.load_u32(iface::REQ_CONS);
        let prod = mem.load_u32(iface::REQ_PROD);
        let avail = prod.wrapping_sub(cons) as usize;
        if avail > RING_SIZE {
            return Err(format!(
                "request indices out of range: req_prod {prod} is {avail} bytes past req_cons {cons}"
            ));
        }
        if avail == 0 {
            return Ok(());
        }
        // At most two copies (before and after the wrap point): cheap under Miri.
        // Through a stack buffer: `Vec::resize` zeroes byte by byte under Miri.
        let mut buf = [0u8; RING_SIZE];
        let at = cons as usize % RING_SIZE;
        let first = avail.min(RING_SIZE - at);
        mem.read(iface::REQ + at, &mut buf[..first]);
        mem.read(iface::REQ, &mut buf[first..avail]);
        self.inbuf.extend_from_slice(&buf[..avail]);
        mem.store_u32(iface::REQ_CONS, prod);
        Ok(())
    }

    /// The next whole request in the input, if there is one.
    fn take_request(&mut self) -> Option<Result<Request, String>> {
        if self.inbuf.len() < HEADER_LEN {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&self.inbuf[i * 4..i * 4 + 4]);
            u32::from_le_bytes(w)
        };
        let header = MsgHeader {
            ty: word(0),
            req_id: word(1),
            tx_id: word(2),
            len: word(3),
        };
        if header.len as usize > PAYLOAD_MAX {
            return Some(Err(format!(
                "request (type {}) with length {} over {PAYLOAD_MAX}",
                header.ty, header.len
            )));
        }
        let total = HEADER_LEN + header.len as usize;
        if self.inbuf.len() < total {
            return None;
        }
        let payload = self.inbuf[HEADER_LEN..total].to_vec();
        self.inbuf.drain(..total);
        Some(Ok(Request { header, payload }))
    }

    fn queue_events(&mut self) {
        for (path, token) in std::mem::take(&mut self.store.events) {
            let m = message(msg::WATCH_EVENT, 0, 0, &event_payload(&path, &token));
            self.out.extend(m);
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        let mem = self.page.mem();
        let cons = mem.load_u32(iface::RSP_CONS);
        let prod = mem.load_u32(iface::RSP_PROD);
        let used = prod.wrapping_sub(cons) as usize;
        if used > RING_SIZE {
            return Err(format!(
                "response indices out of range: rsp_cons {cons} is {} bytes past rsp_prod {prod}",
                cons.wrapping_sub(prod)
            ));
        }
        let n = (RING_SIZE - used).min(self.out.len()).min(self.max_chunk);
        if n == 0 {
            return Ok(());
        }
        // The first `n` queued bytes, copied whole out of the queue's two slices (a
        // byte-at-a-time drain was a good part of a turn under Miri).
        let mut bytes = Vec::with_capacity(n);
        let (a, b) = self.out.as_slices();
        let from_a = n.min(a.len());
        bytes.extend_from_slice(&a[..from_a]);
        bytes.extend_from_slice(&b[..n - from_a]);
        self.out.drain(..n);
        let at = prod as usize % RING_SIZE;
        let first = n.min(RING_SIZE - at);
        mem.write(iface::RSP + at, &bytes[..first]);
        mem.write(iface::RSP, &bytes[first..]);
        mem.store_u32(iface::RSP_PROD, prod.wrapping_add(n as u32));
        Ok(())
    }

    /// The reply xenstored would send.
    fn serve(&mut self, req: &Request) -> Vec<u8> {
        let h = req.header;
        match self.op(req) {
            Ok(body) => message(h.ty, h.req_id, h.tx_id, &body),
            Err(e) => error_reply(req, e),
        }
    }

    fn op(&mut self, req: &Request) -> Result<Vec<u8>, tree::Errno> {
        let h = req.header;
        let ok = || b"OK\0".to_vec();
        let payload = &req.payload[..];
        // Every request but WRITE's value is NUL-terminated strings.
        let strings = |b: &[u8]| -> Result<Vec<String>, tree::Errno> {
            let body = b.strip_suffix(&[0]).ok_or("EINVAL")?;
            body.split(|&c| c == 0)
                .map(|s| String::from_utf8(s.to_vec()).map_err(|_| "EINVAL"))
                .collect()
        };
        let node_path = |s: &Store, raw: &[u8]| -> Result<String, tree::Errno> {
            if !is_well_formed_path(raw) || raw.first() == Some(&b'@') {
                return Err("EINVAL");
            }
            let p = core::str::from_utf8(raw).map_err(|_| "EINVAL")?;
            Ok(s.abs(p))
        };
        let first_arg = || -> Result<(&[u8], &[u8]), tree::Errno> {
            let nul = payload.iter().position(|&b| b == 0).ok_or("EINVAL")?;
            Ok((&payload[..nul], &payload[nul + 1..]))
        };
        match h.ty {
            msg::READ | msg::MKDIR | msg::RM | msg::DIRECTORY | msg::GET_PERMS => {
                let tx = self.store.tx(h.tx_id)?;
                let args = strings(payload)?;
                let [raw] = args.as_slice() else {
                    return Err("EINVAL");
                };
                let p = node_path(&self.store, raw.as_bytes())?;
                match h.ty {
                    msg::READ => self.store.op_read(tx, &p),
                    msg::MKDIR => self.store.op_mkdir(tx, &p).map(|()| ok()),
                    msg::RM => self.store.op_rm(tx, &p).map(|()| ok()),
                    msg::DIRECTORY => self.store.op_directory(tx, &p),
                    _ => self.store.op_get_perms(tx, &p),
                }
            }
            msg::WRITE => {
                let tx = self.store.tx(h.tx_id)?;
                let (raw, value) = first_arg()?;
                let p = node_path(&self.store, raw)?;
                self.store.op_write(tx, &p, value).map(|()| ok())
            }
            msg::SET_PERMS => {
                let tx = self.store.tx(h.tx_id)?;
                let (raw, rest) = first_arg()?;
                let p = node_path(&self.store, raw)?;
                let body = rest.strip_suffix(&[0]).ok_or("EINVAL")?;
                let perms = body
                    .split(|&c| c == 0)
                    .map(|s| Perm::parse(s).ok_or("EINVAL"))
                    .collect::<Result<Vec<_>, _>>()?;
                self.store.op_set_perms(tx, &p, perms).map(|()| ok())
            }
            msg::WATCH | msg::UNWATCH => {
                let args = strings(payload)?;
                let [path, token] = args.as_slice() else {
                    return Err("EINVAL");
                };
                let special = path == "@releaseDomain" || path == "@introduceDomain";
                if !special && (!is_well_formed_path(path.as_bytes()) || path.starts_with('@')) {
                    return Err("EINVAL");
                }
                if h.ty == msg::WATCH {
                    self.store.op_watch(path, token).map(|()| ok())
                } else {
                    self.store.op_unwatch(path, token).map(|()| ok())
                }
            }
            msg::TRANSACTION_START => {
                if h.tx_id != 0 {
                    return Err("EBUSY");
                }
                let args = strings(payload)?;
                if !(args.is_empty() || args == [""]) {
                    return Err("EINVAL");
                }
                Ok(format!("{}\0", self.store.op_transaction_start()).into_bytes())
            }
            msg::TRANSACTION_END => {
                let args = strings(payload)?;
                let commit = match args.as_slice() {
                    [a] if a == "T" => true,
                    [a] if a == "F" => false,
                    _ => return Err("EINVAL"),
                };
                self.store.tx(h.tx_id)?.ok_or("ENOENT")?;
                self.store
                    .op_transaction_end(h.tx_id, commit)
                    .map(|()| ok())
            }
            msg::GET_DOMAIN_PATH => {
                let args = strings(payload)?;
                let [d] = args.as_slice() else {
                    return Err("EINVAL");
                };
                // Decimal digits only (Rust's parse also takes a leading '+'); the
                // parse refuses an empty string and anything over 65535.
                if !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("EINVAL");
                }
                let domid: u16 = d.parse().map_err(|_| "EINVAL")?;
                Ok(format!("/local/domain/{domid}\0").into_bytes())
            }
            msg::DIRECTORY_PART => {
                let tx = self.store.tx(h.tx_id)?;
                let args = strings(payload)?;
                let [raw, off] = args.as_slice() else {
                    return Err("EINVAL");
                };
                let p = node_path(&self.store, raw.as_bytes())?;
                // As for GET_DOMAIN_PATH: digits only, the parse refuses "".
                if !off.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("EINVAL");
                }
                let offset: usize = off.parse().map_err(|_| "EINVAL")?;
                self.store.op_directory_part(tx, &p, offset)
            }
            msg::RESET_WATCHES => {
                self.store.reset_watches();
                Ok(ok())
            }
            // Privileged operations: an unprivileged guest may not.
            msg::CONTROL
            | msg::INTRODUCE
            | msg::RELEASE
            | msg::IS_DOMAIN_INTRODUCED
            | msg::RESUME
            | msg::SET_TARGET
            | msg::GET_FEATURE
            | msg::SET_FEATURE
            | msg::GET_QUOTA
            | msg::SET_QUOTA => Err("EACCES"),
            // WATCH_EVENT and ERROR are not requests; unknown types are invalid.
            _ => Err("EINVAL"),
        }
    }
}

#[cfg(test)]
mod tests;
