//! The protocol engine: connections, watches, transactions and the request dispatcher.
//!
//! All daemon state lives in one [`State`] behind one mutex (in [`super::Xenstored`]).
//! A request is handled completely under that lock; what has to happen outside it
//! (notifying guests, calling local clients' callbacks) is collected in
//! [`State::actions`] and run by the caller after unlocking.

use super::path::{self, Target};
use super::perms::{self, perm_for, Perm, Who, READ, WRITE_OWNER};
use super::ring::RingConn;
use super::store::{Fired, Store, Transaction, View};
use super::{Access, ConnId, Errno, Message, Quotas, WatchEvent};
use hypercall::abi::xs_wire::{msg, MsgHeader, PAYLOAD_MAX};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar};

/// `DOMID_SELF`.
const DOMID_SELF: u32 = 0x7FF0;
/// `DOMID_FIRST_RESERVED`: ids from here on name no domain.
const DOMID_FIRST_RESERVED: u32 = 0x7FF0;
/// Watch events queued for one privileged (dom0) connection before it counts as no
/// longer reading: 16 times the guests' bound, far above what a working tool leaves unread. Past it the
/// connection is ended (and that logged), never left silently missing events.
pub(crate) const DOM0_EVENT_QUEUE: usize = 4096;

/// Answers whether a domain id names an existing domain (the hypervisor's view).
pub type DomainExists = Arc<dyn Fn(u16) -> bool + Send + Sync>;
/// Where the daemon writes its log lines.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Where a local client's watch events go.
#[derive(Clone)]
pub(crate) enum LocalSink {
    /// A bounded channel; events beyond its capacity are dropped, counted in the
    /// counter (the client reads it) and logged.
    Channel(SyncSender<WatchEvent>, Arc<std::sync::atomic::AtomicU64>),
    /// A callback (called without any daemon lock held; must not block long).
    Callback(Arc<dyn Fn(WatchEvent) + Send + Sync>),
}

/// How a connection talks to its peer.
pub(crate) enum ConnKind {
    /// A guest's store ring.
    Ring(Box<RingConn>),
    /// A Unix-socket client; its writer thread waits on `cv` (with the state mutex).
    /// `stream` is shut down to end the connection from here.
    Socket {
        cv: Arc<Condvar>,
        stream: std::os::unix::net::UnixStream,
    },
    /// An in-process client.
    Local(LocalSink),
}

/// A queued outgoing message.
pub(crate) struct OutMsg {
    pub bytes: Vec<u8>,
    pub is_event: bool,
}

struct Watch {
    /// Canonical path or special name.
    path: String,
    token: Vec<u8>,
    /// Registered with a relative path: events are reported relative too.
    relative: bool,
}

/// One connection.
pub(crate) struct Conn {
    pub domid: u16,
    pub kind: ConnKind,
    watches: Vec<Watch>,
    transactions: u32,
    /// Replies and events waiting for the peer (ring and socket connections).
    pub out: VecDeque<OutMsg>,
    pub replies_queued: usize,
    pub events_queued: usize,
    /// Watch events dropped because the queue was full.
    pub events_dropped: u64,
    /// Requests answered.
    pub requests: u64,
}

impl Conn {
    fn new(domid: u16, kind: ConnKind) -> Self {
        Self {
            domid,
            kind,
            watches: Vec::new(),
            transactions: 0,
            out: VecDeque::new(),
            replies_queued: 0,
            events_queued: 0,
            events_dropped: 0,
            requests: 0,
        }
    }

    /// Takes the next queued message, keeping the counters.
    pub fn pop_out(&mut self) -> Option<Vec<u8>> {
        let m = self.out.pop_front()?;
        if m.is_event {
            self.events_queued = self.events_queued.saturating_sub(1);
        } else {
            self.replies_queued = self.replies_queued.saturating_sub(1);
        }
        Some(m.bytes)
    }

    /// Whether closing this connection would lose nothing: no watch, no transaction,
    /// nothing queued.
    pub fn is_idle(&self) -> bool {
        self.watches.is_empty() && self.transactions == 0 && self.out.is_empty()
    }

    /// Drops all queued output.
    pub fn clear_out(&mut self) {
        self.out.clear();
        self.replies_queued = 0;
        self.events_queued = 0;
    }
}

/// Work to do once the state lock is released.
#[derive(Default)]
pub(crate) struct Actions {
    /// Ring connections (by domid) with new output.
    pub kick: Vec<u16>,
    /// Events for local clients.
    pub local: Vec<(LocalSink, WatchEvent)>,
}

/// The whole daemon state.
pub(crate) struct State {
    pub store: Store,
    pub quotas: Quotas,
    pub conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    txs: HashMap<u32, Transaction>,
    next_tx: u32,
    /// Introduced domains and their ring connection.
    pub domains: HashMap<u16, ConnId>,
    introduce_perms: Vec<Perm>,
    release_perms: Vec<Perm>,
    targets: HashMap<u16, u16>,
    watches_by_domain: HashMap<u16, u32>,
    pub actions: Actions,
    /// Introduced domains whose shutdown already fired `@releaseDomain`.
    shut_down: HashSet<u16>,
    /// Which domain ids exist; `None`: every id below `DOMID_FIRST_RESERVED`.
    pub domain_exists: Option<DomainExists>,
    /// Log lines (refusals, dropped connections).
    pub log: LogSink,
    /// `TRANSACTION_END` requests with commit answered, and those refused with
    /// `EAGAIN` (a conflict: the client retries).
    pub commits: u64,
    pub conflicts: u64,
}

fn stderr_log() -> LogSink {
    Arc::new(|m: &str| eprintln!("xenstored: {m}"))
}

/// The reply to one request (before it gets its header).
struct Outcome {
    ty: u32,
    payload: Vec<u8>,
    fired: Vec<Fired>,
    /// The initial event of a new watch: (path, token).
    initial: Option<(String, Vec<u8>)>,
}

impl Outcome {
    fn ok(ty: u32) -> Self {
        Self::with(ty, b"OK\0".to_vec())
    }

    fn with(ty: u32, payload: Vec<u8>) -> Self {
        Self {
            ty,
            payload,
            fired: Vec::new(),
            initial: None,
        }
    }

    fn err(e: Errno) -> Self {
        let mut p = e.name().as_bytes().to_vec();
        p.push(0);
        Self::with(msg::ERROR, p)
    }
}

/// The payload as NUL-terminated strings; `None` unless it is non-empty and ends in NUL.
fn strings(payload: &[u8]) -> Option<Vec<&[u8]>> {
    let body = payload.strip_suffix(&[0])?;
    Some(body.split(|&b| b == 0).collect())
}

/// Exactly one NUL-terminated string (C `onearg`).
fn onearg(payload: &[u8]) -> Result<&[u8], Errno> {
    match strings(payload).as_deref() {
        Some([one]) => Ok(one),
        _ => Err(Errno::EINVAL),
    }
}

/// Exactly `n` strings.
fn args(payload: &[u8], n: usize) -> Result<Vec<&[u8]>, Errno> {
    match strings(payload) {
        Some(v) if v.len() == n => Ok(v),
        _ => Err(Errno::EINVAL),
    }
}

/// C `atoi` for the domain-id arguments where xenstored itself is lenient
/// (GET_DOMAIN_PATH, IS_DOMAIN_INTRODUCED): leading decimal digits, else 0.
fn atoi(s: &[u8]) -> u32 {
    s.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u32, |acc, &d| {
            acc.wrapping_mul(10).wrapping_add(u32::from(d - b'0'))
        })
}

/// A strict decimal domain id.
fn domid_arg(s: &[u8]) -> Result<u16, Errno> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return Err(Errno::EINVAL);
    }
    u16::try_from(atoi(s)).map_err(|_| Errno::EINVAL)
}

/// Serialises a message.
pub(crate) fn encode(hdr: &MsgHeader, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + payload.len());
    for f in [hdr.ty, hdr.req_id, hdr.tx_id, hdr.len] {
        v.extend_from_slice(&f.to_le_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Parses a header from 16 bytes.
pub(crate) fn decode_header(b: &[u8; 16]) -> MsgHeader {
    let f = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    MsgHeader {
        ty: f(0),
        req_id: f(4),
        tx_id: f(8),
        len: f(12),
    }
}

impl State {
    pub fn new(quotas: Quotas) -> Self {
        let dom0_only = vec![Perm::new(0, Access::None)];
        Self {
            store: Store::new(),
            quotas,
            conns: HashMap::new(),
            next_conn: 1,
            txs: HashMap::new(),
            next_tx: 1,
            domains: HashMap::new(),
            introduce_perms: dom0_only.clone(),
            release_perms: dom0_only,
            targets: HashMap::new(),
            watches_by_domain: HashMap::new(),
            actions: Actions::default(),
            shut_down: HashSet::new(),
            domain_exists: None,
            log: stderr_log(),
            commits: 0,
            conflicts: 0,
        }
    }

    /// Whether `domid` names an existing domain (dom0 always does).
    fn exists(&self, domid: u32) -> bool {
        let Ok(d) = u16::try_from(domid) else {
            return false;
        };
        if domid >= DOMID_FIRST_RESERVED {
            return false;
        }
        d == 0 || self.domain_exists.as_ref().is_none_or(|f| f(d))
    }

    /// Domain `domid` shut down (or crashed): fires `@releaseDomain` once, as C
    /// xenstored does when it sees a domain shut down or dying (it fires again when
    /// the domain is released).
    pub fn shutdown(&mut self, domid: u16) {
        if self.domains.contains_key(&domid) && self.shut_down.insert(domid) {
            self.fan_out(&Fired {
                path: "@releaseDomain".into(),
                exact: true,
                perms: Vec::new(),
            });
        }
    }

    /// Adds a connection.
    pub fn add_conn(&mut self, domid: u16, kind: ConnKind) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(id, Conn::new(domid, kind));
        id
    }

    /// Drops a connection's watches and transactions (and keeps the connection).
    pub fn reset_conn(&mut self, cid: ConnId) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let n = u32::try_from(conn.watches.len()).unwrap_or(u32::MAX);
        conn.watches.clear();
        conn.transactions = 0;
        if let Some(c) = self.watches_by_domain.get_mut(&conn.domid) {
            *c = c.saturating_sub(n);
        }
        self.txs.retain(|_, t| t.conn != cid);
    }

    /// Removes a connection with its watches and transactions.
    pub fn close_conn(&mut self, cid: ConnId) -> Option<Conn> {
        self.reset_conn(cid);
        let conn = self.conns.remove(&cid)?;
        if let ConnKind::Socket { cv, stream } = &conn.kind {
            cv.notify_all();
            // Unblocks its threads (a writer may be stuck on a full socket).
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Some(conn)
    }

    fn who(&self, domid: u16) -> Who {
        Who::new(domid, self.targets.get(&domid).copied())
    }

    /// Registers an introduced domain's connection and fires `@introduceDomain`.
    pub fn introduce(&mut self, domid: u16, cid: ConnId) {
        self.domains.insert(domid, cid);
        if domid != 0 {
            self.fan_out(&Fired {
                path: "@introduceDomain".into(),
                exact: true,
                perms: Vec::new(),
            });
        }
    }

    /// A domain is gone: its connection, its nodes, its permission entries go;
    /// `@releaseDomain` fires if it was introduced.
    pub fn release(&mut self, domid: u16) {
        let was = self.domains.remove(&domid);
        self.shut_down.remove(&domid);
        if let Some(cid) = was {
            self.close_conn(cid);
        }
        // Nodes the dead domain owns go (C xenstored without --keep-orphans).
        let quotas = self.quotas.clone();
        for p in self.store.owned_paths(domid) {
            if p == "/" {
                self.store.chown_to_dom0("/");
                continue;
            }
            if self.store.get(&p).is_none() {
                continue;
            }
            let mut view = View::new(&mut self.store, None, Who::new(0, None), &quotas);
            // Cannot fail outside a transaction: the node and its parent exist.
            let _ = view.rm_node(&p);
            let fired = view.fired;
            for f in &fired {
                self.fan_out(f);
            }
        }
        self.store.forget_domain_perms(domid);
        for perms in [&mut self.introduce_perms, &mut self.release_perms] {
            if let Some(first) = perms.first_mut() {
                if first.domid == domid {
                    first.domid = 0;
                }
            }
            let owner = perms.first().copied();
            *perms = owner
                .into_iter()
                .chain(perms.iter().skip(1).filter(|p| p.domid != domid).copied())
                .collect();
        }
        self.targets.retain(|&d, &mut t| d != domid && t != domid);
        if was.is_some() {
            self.fan_out(&Fired {
                path: "@releaseDomain".into(),
                exact: true,
                perms: Vec::new(),
            });
        }
    }

    fn special_perms(&self, name: &str) -> Option<&[Perm]> {
        match name {
            "@introduceDomain" => Some(&self.introduce_perms),
            "@releaseDomain" => Some(&self.release_perms),
            _ => None,
        }
    }

    /// Handles one request from `cid`. With `queue`, the reply goes to the connection's
    /// output queue (ring and socket connections) and `None` is returned; else it is
    /// returned. Watch events always go to their connections.
    pub fn process(
        &mut self,
        cid: ConnId,
        hdr: &MsgHeader,
        payload: &[u8],
        queue: bool,
    ) -> Option<Message> {
        let mut out = self.dispatch(cid, hdr, payload);
        if out.payload.len() > PAYLOAD_MAX {
            out = Outcome::err(Errno::E2BIG);
        }
        if let Some(c) = self.conns.get_mut(&cid) {
            c.requests += 1;
        }
        if hdr.ty == msg::TRANSACTION_END && payload.first() == Some(&b'T') {
            self.commits += 1;
            if out.ty == msg::ERROR && out.payload.starts_with(b"EAGAIN") {
                self.conflicts += 1;
            }
        }
        let reply = Message {
            hdr: MsgHeader {
                ty: out.ty,
                req_id: hdr.req_id,
                tx_id: hdr.tx_id,
                len: u32::try_from(out.payload.len()).unwrap_or(0),
            },
            payload: out.payload,
        };
        let ret = if queue {
            if let Some(conn) = self.conns.get_mut(&cid) {
                conn.out.push_back(OutMsg {
                    bytes: encode(&reply.hdr, &reply.payload),
                    is_event: false,
                });
                conn.replies_queued += 1;
                self.wake(cid);
            }
            None
        } else {
            Some(reply)
        };
        if let Some((path, token)) = out.initial {
            self.deliver(cid, &path, &token);
        }
        for f in &out.fired {
            self.fan_out(f);
        }
        ret
    }

    fn wake(&mut self, cid: ConnId) {
        if let Some(conn) = self.conns.get(&cid) {
            match &conn.kind {
                ConnKind::Ring(_) => self.actions.kick.push(conn.domid),
                ConnKind::Socket { cv, .. } => cv.notify_all(),
                ConnKind::Local(_) => {}
            }
        }
    }

    /// Queues a watch event for `cid`, dropping it if too long, identical to one still
    /// queued (as C xenstored does, except for special events) or over the queue bound.
    fn deliver(&mut self, cid: ConnId, path: &str, token: &[u8]) {
        let len = path.len() + 1 + token.len() + 1;
        if len > PAYLOAD_MAX {
            return;
        }
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        // Dom0 is exempt from quotas: its bound only catches a tool that stopped
        // reading, and such a connection is ended, not left missing events.
        let privileged = conn.domid == 0;
        let bound = if privileged {
            DOM0_EVENT_QUEUE.max(self.quotas.event_queue as usize)
        } else {
            self.quotas.event_queue as usize
        };
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(path.as_bytes());
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        match &conn.kind {
            ConnKind::Local(sink) => {
                let ev = WatchEvent {
                    path: path.to_string(),
                    token: String::from_utf8_lossy(token).into_owned(),
                };
                self.actions.local.push((sink.clone(), ev));
            }
            ConnKind::Ring(_) | ConnKind::Socket { .. } => {
                let hdr = MsgHeader {
                    ty: msg::WATCH_EVENT,
                    req_id: 0,
                    tx_id: 0,
                    len: u32::try_from(len).unwrap_or(0),
                };
                let bytes = encode(&hdr, &payload);
                if !path.starts_with('@') && conn.out.iter().any(|m| m.is_event && m.bytes == bytes)
                {
                    return;
                }
                if conn.events_queued >= bound {
                    conn.events_dropped += 1;
                    if privileged && conn.events_dropped == 1 {
                        (self.log)(&format!(
                            "dom0 connection {} left {bound} watch events unread: \
                             closing it rather than dropping its events",
                            cid.0
                        ));
                        self.close_conn(cid);
                    }
                    return;
                }
                conn.out.push_back(OutMsg {
                    bytes,
                    is_event: true,
                });
                conn.events_queued += 1;
                self.wake(cid);
            }
        }
    }

    /// Sends a change to every watch that matches it and whose connection may see it.
    pub fn fan_out(&mut self, f: &Fired) {
        let special = f.path.starts_with('@');
        let mut hits: Vec<(ConnId, String, Vec<u8>)> = Vec::new();
        for (&cid, conn) in &self.conns {
            let who = self.who(conn.domid);
            if special {
                match self.special_perms(&f.path) {
                    Some(p) if perm_for(&who, p) & READ != 0 => {}
                    _ => continue,
                }
            } else if !f.perms.iter().any(|p| perm_for(&who, p) & READ != 0) {
                continue;
            }
            for w in &conn.watches {
                let hit = if f.exact {
                    w.path == f.path
                } else {
                    path::is_child(&f.path, &w.path)
                };
                if hit {
                    hits.push((cid, watch_path(w, conn.domid, &f.path), w.token.clone()));
                }
            }
        }
        for (cid, p, token) in hits {
            self.deliver(cid, &p, &token);
        }
    }

    fn dispatch(&mut self, cid: ConnId, hdr: &MsgHeader, payload: &[u8]) -> Outcome {
        match self.try_dispatch(cid, hdr, payload) {
            Ok(o) => o,
            Err(e) => Outcome::err(e),
        }
    }

    fn try_dispatch(
        &mut self,
        cid: ConnId,
        hdr: &MsgHeader,
        payload: &[u8],
    ) -> Result<Outcome, Errno> {
        let domid = self.conns.get(&cid).map(|c| c.domid).ok_or(Errno::EINVAL)?;
        let who = self.who(domid);
        let privileged_only = matches!(
            hdr.ty,
            msg::CONTROL
                | msg::INTRODUCE
                | msg::RELEASE
                | msg::IS_DOMAIN_INTRODUCED
                | msg::RESUME
                | msg::SET_TARGET
        );
        let known = matches!(
            hdr.ty,
            msg::CONTROL
                | msg::DIRECTORY
                | msg::READ
                | msg::GET_PERMS
                | msg::WATCH
                | msg::UNWATCH
                | msg::TRANSACTION_START
                | msg::TRANSACTION_END
                | msg::INTRODUCE
                | msg::RELEASE
                | msg::GET_DOMAIN_PATH
                | msg::WRITE
                | msg::MKDIR
                | msg::RM
                | msg::SET_PERMS
                | msg::IS_DOMAIN_INTRODUCED
                | msg::RESUME
                | msg::SET_TARGET
                | msg::RESET_WATCHES
                | msg::DIRECTORY_PART
        );
        if !known {
            return Err(Errno::ENOSYS);
        }
        if privileged_only && !who.privileged {
            return Err(Errno::EACCES);
        }
        // WATCH and UNWATCH ignore the transaction id; everything else must name one of
        // this connection's transactions (or none).
        let tx_id = if matches!(hdr.ty, msg::WATCH | msg::UNWATCH) {
            0
        } else {
            hdr.tx_id
        };
        if tx_id != 0 && self.txs.get(&tx_id).map(|t| t.conn) != Some(cid) {
            return Err(Errno::ENOENT);
        }
        let path_len = self.quotas.path_len as usize;
        match hdr.ty {
            msg::READ
            | msg::WRITE
            | msg::MKDIR
            | msg::RM
            | msg::DIRECTORY
            | msg::DIRECTORY_PART
            | msg::GET_PERMS
            | msg::SET_PERMS => self.data_op(who, tx_id, hdr.ty, payload, path_len),
            msg::WATCH => self.op_watch(cid, who, payload, path_len),
            msg::UNWATCH => self.op_unwatch(cid, domid, payload),
            msg::TRANSACTION_START => {
                if tx_id != 0 {
                    return Err(Errno::EBUSY);
                }
                self.op_transaction_start(cid, who)
            }
            msg::TRANSACTION_END => self.op_transaction_end(cid, who, tx_id, payload),
            msg::GET_DOMAIN_PATH => {
                let d = atoi(onearg(payload)?);
                let mut p = path::domain_path(d).into_bytes();
                p.push(0);
                Ok(Outcome::with(msg::GET_DOMAIN_PATH, p))
            }
            msg::IS_DOMAIN_INTRODUCED => {
                let d = atoi(onearg(payload)?);
                let yes = d == DOMID_SELF
                    || d == 0
                    || u16::try_from(d).is_ok_and(|d| self.domains.contains_key(&d));
                Ok(Outcome::with(
                    msg::IS_DOMAIN_INTRODUCED,
                    if yes {
                        b"T\0".to_vec()
                    } else {
                        b"F\0".to_vec()
                    },
                ))
            }
            msg::INTRODUCE => {
                let a = strings(payload).ok_or(Errno::EINVAL)?;
                if a.len() < 3 {
                    return Err(Errno::EINVAL);
                }
                let d = domid_arg(a.first().copied().unwrap_or_default())?;
                // The page has to be registered by the xen model (introduce_domain); a
                // repeated INTRODUCE of a known domain is acknowledged.
                if self.domains.contains_key(&d) {
                    Ok(Outcome::ok(msg::INTRODUCE))
                } else {
                    Err(Errno::EINVAL)
                }
            }
            msg::RELEASE | msg::RESUME => {
                let d = domid_arg(onearg(payload)?)?;
                if d == 0 {
                    return Err(Errno::EINVAL);
                }
                if !self.domains.contains_key(&d) {
                    return Err(Errno::ENOENT);
                }
                if hdr.ty == msg::RELEASE {
                    self.release(d);
                }
                Ok(Outcome::ok(hdr.ty))
            }
            msg::SET_TARGET => {
                let a = strings(payload).ok_or(Errno::EINVAL)?;
                if a.len() < 2 {
                    return Err(Errno::EINVAL);
                }
                let d = domid_arg(a.first().copied().unwrap_or_default())?;
                let t = domid_arg(a.get(1).copied().unwrap_or_default())?;
                if !self.domains.contains_key(&d) || !self.domains.contains_key(&t) {
                    return Err(Errno::ENOENT);
                }
                self.targets.insert(d, t);
                Ok(Outcome::ok(msg::SET_TARGET))
            }
            msg::RESET_WATCHES => {
                self.reset_conn(cid);
                Ok(Outcome::ok(msg::RESET_WATCHES))
            }
            msg::CONTROL => self.op_control(payload),
            _ => Err(Errno::ENOSYS),
        }
    }

    /// `XS_CONTROL` (dom0 only): the commands of C xenstored 4.17 that Xen's
    /// `xenstore-control` uses and that mean something here. `help`, `check`
    /// (the tree is kept consistent by construction: nothing to repair, "OK"),
    /// `print <text>` (logged), `log on|off|...` (acknowledged: one log, always on),
    /// `quota` (the limits) and `quota <domid>` (a domain's use), `memreport`
    /// (node and connection counts). Live update (`live-update`/`lu`), `logfile` and
    /// `quota-soft` have no meaning in an in-process daemon: `ENOSYS`, as 4.17 answers
    /// commands it lacks.
    fn op_control(&mut self, payload: &[u8]) -> Result<Outcome, Errno> {
        let a = strings(payload).ok_or(Errno::EINVAL)?;
        let (cmd, args) = a.split_first().ok_or(Errno::EINVAL)?;
        let text = |t: String| {
            let mut p = t.into_bytes();
            p.push(0);
            Ok(Outcome::with(msg::CONTROL, p))
        };
        match *cmd {
            b"help" => text(
                "Valid commands:\n\
                 check\n\
                 help\n\
                 log [on|off|+|-<switch>]\n\
                 memreport\n\
                 print <string>\n\
                 quota [<domid>]\n"
                    .to_string(),
            ),
            b"check" if args.is_empty() => Ok(Outcome::ok(msg::CONTROL)),
            b"print" => {
                let line = args
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<Vec<_>>()
                    .join(" ");
                (self.log)(&format!("control: {line}"));
                Ok(Outcome::ok(msg::CONTROL))
            }
            b"log" => Ok(Outcome::ok(msg::CONTROL)),
            b"memreport" => text(format!(
                "nodes: {}\nconnections: {}\ntransactions: {}\n",
                self.store.len(),
                self.conns.len(),
                self.txs.len()
            )),
            b"quota" => match args {
                [] => {
                    let q = &self.quotas;
                    text(format!(
                        "{:<17}: {:>8} {}\n{:<17}: {:>8} {}\n{:<17}: {:>8} {}\n\
                         {:<17}: {:>8} {}\n{:<17}: {:>8} {}\n{:<17}: {:>8} {}\n\
                         {:<17}: {:>8} {}\n{:<17}: {:>8} {}\n",
                        "nodes",
                        q.nodes,
                        "Nodes per domain",
                        "watches",
                        q.watches,
                        "Watches per domain",
                        "transactions",
                        q.transactions,
                        "Transactions per domain",
                        "node-size",
                        q.node_size,
                        "Max. size of a node",
                        "permissions",
                        q.perms,
                        "Max. number of permissions per node",
                        "transaction-nodes",
                        q.transaction_nodes,
                        "Max. number of accessed nodes per transaction",
                        "outstanding",
                        q.outstanding,
                        "Max. number of outstanding requests",
                        "path-max",
                        q.path_len,
                        "Max. length of a node path",
                    ))
                }
                [d] => {
                    let d = domid_arg(d)?;
                    if !self.domains.contains_key(&d) {
                        return Err(Errno::ENOENT);
                    }
                    let watches = self.watches_by_domain.get(&d).copied().unwrap_or(0);
                    let txs: u32 = self
                        .conns
                        .values()
                        .filter(|c| c.domid == d)
                        .map(|c| c.transactions)
                        .sum();
                    text(format!(
                        "{:<17}: {:>8}\n{:<17}: {:>8}\n{:<17}: {:>8}\n",
                        "nodes",
                        self.store.owned(d),
                        "watches",
                        watches,
                        "transactions",
                        txs
                    ))
                }
                _ => Err(Errno::EINVAL),
            },
            _ => Err(Errno::ENOSYS),
        }
    }

    /// The tree operations, in or outside a transaction.
    fn data_op(
        &mut self,
        who: Who,
        tx_id: u32,
        ty: u32,
        payload: &[u8],
        path_len: usize,
    ) -> Result<Outcome, Errno> {
        // SET_PERMS on a special watch path changes who may watch it.
        if ty == msg::SET_PERMS {
            let a = strings(payload).ok_or(Errno::EINVAL)?;
            let (first, rest) = a.split_first().ok_or(Errno::EINVAL)?;
            if rest.is_empty() {
                return Err(Errno::EINVAL);
            }
            if !who.privileged && rest.len() > self.quotas.perms as usize {
                return Err(Errno::ENOSPC);
            }
            let parsed: Vec<(Access, u32)> = rest
                .iter()
                .map(|s| Perm::parse_wire(s))
                .collect::<Option<_>>()
                .ok_or(Errno::EINVAL)?;
            // As C xenstored 4.17: an owner that is no domain fails with ENOENT; other
            // entries naming no domain (out of range, or not existing) are ignored.
            let mut perms: Vec<Perm> = Vec::with_capacity(parsed.len());
            for (i, &(access, domid)) in parsed.iter().enumerate() {
                if !self.exists(domid) {
                    if i == 0 {
                        return Err(Errno::ENOENT);
                    }
                    continue;
                }
                perms.push(Perm::new(domid as u16, access));
            }
            if first.first() == Some(&b'@') {
                let name = match path::resolve(first, who.domid, path_len, true)? {
                    Target::Special(n) => n,
                    Target::Node(_) => return Err(Errno::EINVAL),
                };
                let current = self.special_perms(&name).ok_or(Errno::EINVAL)?;
                if perm_for(&who, current) & WRITE_OWNER != WRITE_OWNER {
                    return Err(Errno::EACCES);
                }
                match name.as_str() {
                    "@introduceDomain" => self.introduce_perms = perms,
                    _ => self.release_perms = perms,
                }
                return Ok(Outcome::ok(msg::SET_PERMS));
            }
            let p = path::resolve_node(first, who.domid, path_len)?;
            return self.with_view(who, tx_id, |v| {
                v.op_set_perms(&p, perms).map(|()| Outcome::ok(ty))
            });
        }
        let (raw, rest): (&[u8], &[u8]) = match ty {
            msg::WRITE => {
                let nul = payload.iter().position(|&b| b == 0).ok_or(Errno::EINVAL)?;
                (
                    payload.get(..nul).unwrap_or_default(),
                    payload.get(nul + 1..).unwrap_or_default(),
                )
            }
            msg::DIRECTORY_PART => {
                let a = args(payload, 2)?;
                (
                    a.first().copied().unwrap_or_default(),
                    a.get(1).copied().unwrap_or_default(),
                )
            }
            _ => (onearg(payload)?, &[]),
        };
        let p = path::resolve_node(raw, who.domid, path_len)?;
        self.with_view(who, tx_id, |v| {
            Ok(match ty {
                msg::READ => Outcome::with(ty, v.op_read(&p)?),
                msg::WRITE => {
                    v.op_write(&p, rest)?;
                    Outcome::ok(ty)
                }
                msg::MKDIR => {
                    v.op_mkdir(&p)?;
                    Outcome::ok(ty)
                }
                msg::RM => {
                    v.op_rm(&p)?;
                    Outcome::ok(ty)
                }
                msg::DIRECTORY => Outcome::with(ty, v.op_directory(&p)?),
                msg::DIRECTORY_PART => {
                    if rest.is_empty() || rest.len() > 10 || !rest.iter().all(u8::is_ascii_digit) {
                        return Err(Errno::EINVAL);
                    }
                    let off = usize::try_from(atoi(rest)).map_err(|_| Errno::EINVAL)?;
                    Outcome::with(ty, v.op_directory_part(&p, off)?)
                }
                msg::GET_PERMS => Outcome::with(ty, perms::to_wire(&v.op_get_perms(&p)?)),
                _ => return Err(Errno::ENOSYS),
            })
        })
    }

    /// Runs `f` on the tree (through transaction `tx_id` if non-zero) and attaches the
    /// watch events it caused.
    fn with_view(
        &mut self,
        who: Who,
        tx_id: u32,
        f: impl FnOnce(&mut View<'_>) -> Result<Outcome, Errno>,
    ) -> Result<Outcome, Errno> {
        let mut tx = if tx_id == 0 {
            None
        } else {
            self.txs.remove(&tx_id)
        };
        let quotas = self.quotas.clone();
        let mut view = View::new(&mut self.store, tx.as_mut(), who, &quotas);
        let r = f(&mut view);
        let fired = core::mem::take(&mut view.fired);
        drop(view);
        if let Some(t) = tx {
            self.txs.insert(tx_id, t);
        }
        let mut o = r?;
        o.fired = fired;
        Ok(o)
    }

    fn op_watch(
        &mut self,
        cid: ConnId,
        who: Who,
        payload: &[u8],
        path_len: usize,
    ) -> Result<Outcome, Errno> {
        let a = args(payload, 2)?;
        let raw = a.first().copied().unwrap_or_default();
        let token = a.get(1).copied().unwrap_or_default().to_vec();
        let relative = !raw.starts_with(b"/") && !raw.starts_with(b"@");
        let wpath = match path::resolve(raw, who.domid, path_len, true)? {
            Target::Node(p) | Target::Special(p) => p,
        };
        let count = self.watches_by_domain.get(&who.domid).copied().unwrap_or(0);
        let conn = self.conns.get_mut(&cid).ok_or(Errno::EINVAL)?;
        if conn
            .watches
            .iter()
            .any(|w| w.path == wpath && w.token == token)
        {
            return Err(Errno::EEXIST);
        }
        if !who.privileged && count >= self.quotas.watches {
            return Err(Errno::E2BIG);
        }
        let w = Watch {
            path: wpath.clone(),
            token: token.clone(),
            relative,
        };
        let initial = watch_path(&w, conn.domid, &wpath);
        conn.watches.push(w);
        *self.watches_by_domain.entry(who.domid).or_insert(0) += 1;
        let mut o = Outcome::ok(msg::WATCH);
        o.initial = Some((initial, token));
        Ok(o)
    }

    fn op_unwatch(&mut self, cid: ConnId, domid: u16, payload: &[u8]) -> Result<Outcome, Errno> {
        let a = args(payload, 2)?;
        let raw = a.first().copied().unwrap_or_default();
        let token = a.get(1).copied().unwrap_or_default();
        let wpath = match path::resolve(raw, domid, usize::MAX, true) {
            Ok(Target::Node(p) | Target::Special(p)) => p,
            Err(_) => return Err(Errno::ENOENT),
        };
        let conn = self.conns.get_mut(&cid).ok_or(Errno::EINVAL)?;
        let i = conn
            .watches
            .iter()
            .position(|w| w.path == wpath && w.token == token)
            .ok_or(Errno::ENOENT)?;
        conn.watches.remove(i);
        if let Some(c) = self.watches_by_domain.get_mut(&domid) {
            *c = c.saturating_sub(1);
        }
        Ok(Outcome::ok(msg::UNWATCH))
    }

    fn op_transaction_start(&mut self, cid: ConnId, who: Who) -> Result<Outcome, Errno> {
        let conn = self.conns.get_mut(&cid).ok_or(Errno::EINVAL)?;
        if !who.privileged && conn.transactions >= self.quotas.transactions {
            return Err(Errno::ENOSPC);
        }
        // Ids are unique across connections; 0 means "no transaction".
        let mut id = self.next_tx;
        while id == 0 || self.txs.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_tx = id.wrapping_add(1);
        conn.transactions += 1;
        self.txs.insert(id, Transaction::new(cid));
        let mut p = id.to_string().into_bytes();
        p.push(0);
        Ok(Outcome::with(msg::TRANSACTION_START, p))
    }

    fn op_transaction_end(
        &mut self,
        cid: ConnId,
        who: Who,
        tx_id: u32,
        payload: &[u8],
    ) -> Result<Outcome, Errno> {
        let commit = match onearg(payload)? {
            b"T" => true,
            b"F" => false,
            _ => return Err(Errno::EINVAL),
        };
        if tx_id == 0 {
            return Err(Errno::ENOENT);
        }
        let tx = self.txs.remove(&tx_id).ok_or(Errno::ENOENT)?;
        if let Some(conn) = self.conns.get_mut(&cid) {
            conn.transactions = conn.transactions.saturating_sub(1);
        }
        let mut o = Outcome::ok(msg::TRANSACTION_END);
        if commit {
            o.fired = tx.commit(&mut self.store, &who, &self.quotas)?;
        }
        Ok(o)
    }
}

/// The path to report for a change at `name` to watch `w` of a connection of `domid`.
fn watch_path(w: &Watch, domid: u16, name: &str) -> String {
    if w.relative {
        let base = path::domain_path(u32::from(domid));
        if let Some(rest) = name.strip_prefix(&base) {
            return rest.strip_prefix('/').unwrap_or(rest).to_string();
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_splitting() {
        assert_eq!(strings(b"a\0b\0"), Some(vec![&b"a"[..], b"b"]));
        assert_eq!(strings(b"a\0b"), None);
        assert_eq!(strings(b""), None);
        assert_eq!(onearg(b"x\0"), Ok(&b"x"[..]));
        assert_eq!(onearg(b"x\0y\0"), Err(Errno::EINVAL));
        assert_eq!(onearg(b"x"), Err(Errno::EINVAL));
        assert_eq!(args(b"a\0b\0", 2).map(|v| v.len()), Ok(2));
        assert_eq!(args(b"a\0b\0c\0", 2).map(|v| v.len()), Err(Errno::EINVAL));
        assert_eq!(atoi(b"12x"), 12);
        assert_eq!(atoi(b""), 0);
        assert_eq!(domid_arg(b"65535"), Ok(65535));
        assert_eq!(domid_arg(b"65536"), Err(Errno::EINVAL));
        assert_eq!(domid_arg(b"1x"), Err(Errno::EINVAL));
    }

    #[test]
    fn header_round_trip() {
        let h = MsgHeader {
            ty: 1,
            req_id: 2,
            tx_id: 3,
            len: 4,
        };
        let b = encode(&h, b"abcd");
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&b[..16]);
        assert_eq!(decode_header(&raw), h);
        assert_eq!(&b[16..], b"abcd");
    }

    /// Transaction ids skip 0 ("no transaction") and ids still in use when the
    /// counter wraps. (cargo-mutants: `id == 0 || txs.contains_key(&id)` as `&&`,
    /// which only 2^32 TRANSACTION_STARTs reach through the protocol.)
    #[test]
    fn transaction_ids_skip_zero_and_live_ids_on_wrap() {
        let mut st = State::new(Quotas::default());
        let cid = st.add_conn(0, ConnKind::Local(LocalSink::Callback(Arc::new(|_| {}))));
        let start = |st: &mut State| -> u32 {
            let hdr = MsgHeader {
                ty: msg::TRANSACTION_START,
                req_id: 1,
                tx_id: 0,
                len: 1,
            };
            let m = st.process(cid, &hdr, b"\0", false).unwrap();
            assert_eq!(m.hdr.ty, msg::TRANSACTION_START);
            let s = core::str::from_utf8(m.payload.strip_suffix(&[0]).unwrap()).unwrap();
            s.parse().unwrap()
        };
        assert_eq!(start(&mut st), 1);
        st.next_tx = u32::MAX;
        assert_eq!(start(&mut st), u32::MAX);
        // Wrapped: 0 is skipped, and so is 1 (still open).
        assert_eq!(start(&mut st), 2);
        assert_eq!(st.next_tx, 3);
    }
}
