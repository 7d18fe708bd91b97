//! xenstored: the store daemon of shim-hv.
//!
//! ```text
//!  guest store ring ──kick──▶ worker thread ──┐
//!  dom0 Unix socket ──thread per client──────┼──▶ State (one mutex): tree · perms ·
//!  LocalClient (toolstack, backends) ─────────┘     watches · transactions · quotas
//! ```
//!
//! It speaks `io/xs_wire.h` on guests' store pages and on a Unix socket (so
//! libxenstore 4.17 and Debian's `xenstore-*` tools work against it through
//! `XENSTORED_PATH`), and offers typed in-process clients. Semantics follow C
//! xenstored 4.17 (`tools/xenstore/xenstored_*.c`) and docs/misc/xenstore.txt:
//!
//! - paths: `[A-Za-z0-9-/_@]`, absolute or relative to `/local/domain/<domid>`, no empty
//!   components, no trailing `/`; too long or anything else → `EINVAL`;
//! - permissions: owner + default + per-domain entries (`n`/`r`/`w`/`b`), inherited by
//!   new nodes, the unprivileged creator becomes owner, dom0 may do anything, no access
//!   → `EACCES`;
//! - watches fire on write, mkdir, rm (the subtree) and set_perms of the node or a
//!   descendant, once on registration, only for nodes the watcher may read; special
//!   `@introduceDomain`/`@releaseDomain` only for dom0 or domains allowed by SET_PERMS;
//! - transactions see their own changes, conflict with concurrent changes to any node
//!   they touched (`EAGAIN` at commit, nothing applied), fire watches at commit;
//! - quotas for unprivileged domains: nodes owned (`ENOSPC`), node size (`ENOSPC`),
//!   permissions per node (`ENOSPC`), watches (`E2BIG`), transactions (`ENOSPC`), nodes
//!   touched per transaction (`ENOSPC`), outstanding replies (requests wait);
//! - a hostile guest fails its own connection only;
//! - `@releaseDomain` fires when a domain shuts down or crashes
//!   ([`Xenstored::domain_shutdown`], once) and again when it is released;
//! - `SET_PERMS`: an owner naming no domain gives `ENOENT`, other entries naming no
//!   domain (not existing or out of range) are ignored ([`Xenstored::set_domain_exists`]);
//! - `CONTROL` (dom0): `help`, `check`, `print`, `log`, `quota [domid]`, `memreport`;
//!   live update and the log-file commands answer `ENOSYS` (nothing to update in
//!   process, one log);
//! - dom0 is exempt from the event bound of guests: a dom0 connection that leaves
//!   thousands of events unread is ended and logged, never left silently missing
//!   events; in-process clients count lost events ([`LocalClient::events_lost`]);
//! - the Unix socket checks its clients' credentials and shares its slots fairly
//!   (see [`SocketServer`]).
//!
//! ```
//! use xenstored::{Quotas, TxId, Xenstored};
//!
//! let xs = Xenstored::new(Quotas::default());
//! let dom0 = xs.client(0);
//! dom0.write(TxId::NONE, "/local/domain/1/name", b"guest").unwrap();
//! assert_eq!(dom0.read(TxId::NONE, "/local/domain/1/name").unwrap(), b"guest");
//!
//! let tx = dom0.transaction_start().unwrap();
//! dom0.write(tx, "/local/domain/1/state", b"4").unwrap();
//! dom0.transaction_end(tx, true).unwrap();
//! assert_eq!(dom0.directory(TxId::NONE, "/local/domain/1").unwrap(), ["name", "state"]);
//! ```

mod client;
mod engine;
mod path;
mod perms;
mod ring;
mod socket;
mod store;

pub use client::LocalClient;
pub use hypercall::abi::xs_wire::{ERROR_PROTO, ERROR_RINGIDX};
pub use perms::{Access, Perm};
pub use socket::{
    SocketOptions, SocketServer, IDLE as SOCKET_IDLE, MAX_CLIENTS as SOCKET_MAX_CLIENTS,
    MAX_PER_PROCESS as SOCKET_MAX_PER_PROCESS, OUTSTANDING as SOCKET_OUTSTANDING,
};

use engine::{Actions, ConnKind, LocalSink, State};
pub use engine::{DomainExists, LogSink};
use hypercall::abi::xs_wire::MsgHeader;
use hypercall::SharedRegion;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Error names of `XS_ERROR` replies (`xsd_errors[]` in `io/xs_wire.h`).
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Invalid argument.
    EINVAL,
    /// Permission denied.
    EACCES,
    /// Already exists.
    EEXIST,
    /// Is a directory.
    EISDIR,
    /// No such node (or transaction).
    ENOENT,
    /// Out of memory.
    ENOMEM,
    /// Quota exceeded.
    ENOSPC,
    /// I/O error.
    EIO,
    /// Not empty.
    ENOTEMPTY,
    /// Unknown request.
    ENOSYS,
    /// Read-only.
    EROFS,
    /// Busy (transaction inside a transaction).
    EBUSY,
    /// Transaction conflict: retry it.
    EAGAIN,
    /// Already connected.
    EISCONN,
    /// Too big (reply over the payload limit, watch quota).
    E2BIG,
    /// Not permitted (changing a node's owner without privilege).
    EPERM,
}

impl Errno {
    const ALL: [Errno; 16] = [
        Errno::EINVAL,
        Errno::EACCES,
        Errno::EEXIST,
        Errno::EISDIR,
        Errno::ENOENT,
        Errno::ENOMEM,
        Errno::ENOSPC,
        Errno::EIO,
        Errno::ENOTEMPTY,
        Errno::ENOSYS,
        Errno::EROFS,
        Errno::EBUSY,
        Errno::EAGAIN,
        Errno::EISCONN,
        Errno::E2BIG,
        Errno::EPERM,
    ];

    /// The name sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Errno::EINVAL => "EINVAL",
            Errno::EACCES => "EACCES",
            Errno::EEXIST => "EEXIST",
            Errno::EISDIR => "EISDIR",
            Errno::ENOENT => "ENOENT",
            Errno::ENOMEM => "ENOMEM",
            Errno::ENOSPC => "ENOSPC",
            Errno::EIO => "EIO",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::ENOSYS => "ENOSYS",
            Errno::EROFS => "EROFS",
            Errno::EBUSY => "EBUSY",
            Errno::EAGAIN => "EAGAIN",
            Errno::EISCONN => "EISCONN",
            Errno::E2BIG => "E2BIG",
            Errno::EPERM => "EPERM",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &[u8]) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name().as_bytes() == name)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits for unprivileged domains (dom0 is exempt), with C xenstored 4.17's defaults
/// and error names; plus the daemon's own bound on queued watch events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (`ENOSPC`).
    pub nodes: u32,
    /// Watches a domain may have (`E2BIG`).
    pub watches: u32,
    /// Open transactions per connection (`ENOSPC`).
    pub transactions: u32,
    /// Node size as C xenstored counts it: 24 + 8 per permission + value + child names
    /// with their NULs; a node reaching this size is refused (`ENOSPC`).
    pub node_size: u32,
    /// Permission entries per node (`ENOSPC`).
    pub perms: u32,
    /// Nodes one transaction may touch (`ENOSPC`; the transaction then fails).
    pub transaction_nodes: u32,
    /// Replies waiting for a guest to consume before its further requests wait.
    pub outstanding: u32,
    /// Longest path below `/local/domain/<domid>/` (or anywhere else), for everybody
    /// (`EINVAL`); at most `XENSTORE_REL_PATH_MAX` is useful.
    pub path_len: u32,
    /// Watch events queued per guest connection (and per in-process client); more are
    /// dropped (counted). A dom0 socket connection may queue 4096 (or this, if more)
    /// before it is ended.
    pub event_queue: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            nodes: 1000,
            watches: 128,
            transactions: 10,
            node_size: 2048,
            perms: 5,
            transaction_nodes: 1024,
            outstanding: 20,
            path_len: hypercall::abi::xs_wire::REL_PATH_MAX as u32,
            event_queue: 256,
        }
    }
}

/// Errors of the daemon's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// xenstored refused a request with an `XS_ERROR` reply.
    #[error("xenstore {op} {path}: {errno}")]
    Xs {
        /// The operation.
        op: &'static str,
        /// The path (or argument) it was about.
        path: String,
        /// The error name.
        errno: Errno,
    },
    /// A reply that does not parse.
    #[error("xenstore {op}: bad reply: {detail}")]
    BadReply {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The domain already has a store ring.
    #[error("domain {0} already has a store ring")]
    AlreadyIntroduced(u16),
    /// The domain id cannot have a ring (`DOMID_FIRST_RESERVED` and up).
    #[error("domain id {0} cannot have a store ring")]
    BadDomid(u16),
    /// The store page cannot be used.
    #[error("store page of domain {domid}: {reason}")]
    BadRing {
        /// The domain.
        domid: u16,
        /// Why.
        reason: &'static str,
    },
}

impl Error {
    /// The xenstore error name, for refused requests.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Xs { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A connection to the daemon (ring, socket client or local client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

/// A transaction id (`TxId::NONE`: outside any transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

/// A watch event: the path that changed (relative if the watch was registered with a
/// relative path) and the watch's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The changed path.
    pub path: String,
    /// The token given to `watch`.
    pub token: String,
}

/// One wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Header (`len` matches the payload).
    pub hdr: MsgHeader,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Per-connection counters, for diagnostics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnStats {
    /// Replies waiting for the peer.
    pub replies_queued: usize,
    /// Watch events waiting for the peer.
    pub events_queued: usize,
    /// Watch events dropped because the queue was full.
    pub events_dropped: u64,
    /// For a guest ring: the `XENSTORE_ERROR_*` code it was failed with.
    pub ring_error: Option<u32>,
    /// Requests answered on this connection (round trips; watch events not
    /// counted).
    pub requests: u64,
}

/// Transaction commits of all connections since the daemon started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransactionStats {
    /// `TRANSACTION_END` with `T` (commit) answered.
    pub commits: u64,
    /// Of those, refused with `EAGAIN` (a conflict; the client retries).
    pub conflicts: u64,
}

struct KickQueue {
    inner: Mutex<KickInner>,
    cv: Condvar,
}

#[derive(Default)]
struct KickInner {
    queue: VecDeque<u16>,
    queued: HashSet<u16>,
    stop: bool,
}

/// The daemon. Create with [`Xenstored::new`]; share as `Arc<Xenstored>`.
pub struct Xenstored {
    state: Mutex<State>,
    kicks: Arc<KickQueue>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Xenstored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xenstored").finish_non_exhaustive()
    }
}

fn worker(me: Weak<Xenstored>, kicks: Arc<KickQueue>) {
    loop {
        let domid = {
            let mut k = kicks.inner.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if k.stop {
                    return;
                }
                if let Some(d) = k.queue.pop_front() {
                    k.queued.remove(&d);
                    break d;
                }
                // Shutdown notifies too; the bound is only a guard (long, so an
                // idle store costs no wake-ups).
                k = match kicks.cv.wait_timeout(k, Duration::from_secs(30)) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
            }
        };
        let Some(xs) = me.upgrade() else {
            return;
        };
        xs.service_ring(domid);
    }
}

impl Xenstored {
    /// A daemon with the initial tree (`/`, `/tool`, `/tool/xenstored`) and a worker
    /// thread serving guest rings.
    pub fn new(quotas: Quotas) -> Arc<Self> {
        let kicks = Arc::new(KickQueue {
            inner: Mutex::new(KickInner::default()),
            cv: Condvar::new(),
        });
        let xs = Arc::new(Xenstored {
            state: Mutex::new(State::new(quotas)),
            kicks: kicks.clone(),
            worker: Mutex::new(None),
        });
        let weak = Arc::downgrade(&xs);
        let handle = std::thread::Builder::new()
            .name("xenstored".into())
            .spawn(move || worker(weak, kicks))
            .ok();
        *xs.worker.lock().unwrap_or_else(|e| e.into_inner()) = handle;
        xs
    }

    /// A daemon without a worker thread: [`Xenstored::kick`] serves the ring on
    /// the calling thread (see `HypervisorConfig::xenstored_inline`).
    pub fn new_inline(quotas: Quotas) -> Arc<Self> {
        Arc::new(Xenstored {
            state: Mutex::new(State::new(quotas)),
            kicks: Arc::new(KickQueue {
                inner: Mutex::new(KickInner::default()),
                cv: Condvar::new(),
            }),
            worker: Mutex::new(None),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Does what a request left to do outside the lock.
    pub(crate) fn run(&self, actions: Actions) {
        let mut seen = HashSet::new();
        for d in actions.kick {
            if seen.insert(d) {
                self.kick(d);
            }
        }
        for (sink, ev) in actions.local {
            match sink {
                LocalSink::Channel(tx, lost) => {
                    // Full: the client stopped reading. The event is dropped, counted
                    // (LocalClient::events_lost) and the first loss logged. Gone: the
                    // client was dropped, nothing to tell.
                    if let Err(std::sync::mpsc::TrySendError::Full(ev)) = tx.try_send(ev) {
                        if lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                            let log = self.lock().log.clone();
                            log(&format!(
                                "in-process client stopped reading its watch events; \
                                 dropping them (first: {} {})",
                                ev.path, ev.token
                            ));
                        }
                    }
                }
                LocalSink::Callback(cb) => cb(ev),
            }
        }
    }

    /// Runs `f` on the state, then the actions it left.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, actions) = {
            let mut st = self.lock();
            let r = f(&mut st);
            (r, core::mem::take(&mut st.actions))
        };
        self.run(actions);
        r
    }

    /// Registers guest `domid`'s store page (4096 bytes, layout
    /// `abi::xs_wire::iface`) and fires `@introduceDomain`. `notify` is called (from
    /// any thread, never with a daemon lock held) after responses or watch events were
    /// put on the ring, to send the store event channel.
    ///
    /// `ring` is the page's owner (a `GuestRegion` of the domain's memory, or a
    /// test's buffer): the daemon keeps it, borrowing the page from it for each
    /// access, until [`Xenstored::release_domain`] for `domid`, so the page cannot
    /// be unmapped while the daemon may touch it.
    ///
    /// The daemon advertises `XENSTORE_SERVER_FEATURE_RECONNECTION | ERROR` in the
    /// page; ring indices already in the page are taken over if consistent.
    pub fn introduce_domain(
        &self,
        domid: u16,
        ring: impl SharedRegion + Send + 'static,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<(), Error> {
        if domid >= 0x7FF0 {
            return Err(Error::BadDomid(domid));
        }
        self.with_state(|st| {
            if st.domains.contains_key(&domid) {
                return Err(Error::AlreadyIntroduced(domid));
            }
            let r = ring::RingConn::new(Box::new(ring), notify).ok_or(Error::BadRing {
                domid,
                reason: "smaller than a page or misaligned",
            })?;
            let cid = st.add_conn(domid, ConnKind::Ring(Box::new(r)));
            st.introduce(domid, cid);
            Ok(())
        })?;
        // Requests may already be waiting.
        self.kick(domid);
        Ok(())
    }

    /// The guest signalled its store event channel: its ring is served soon by the
    /// worker thread. Never blocks on ring processing; callable from any thread.
    pub fn kick(&self, domid: u16) {
        let mut k = self.kicks.inner.lock().unwrap_or_else(|e| e.into_inner());
        if k.stop {
            return;
        }
        if k.queued.insert(domid) {
            k.queue.push_back(domid);
        }
        drop(k);
        self.kicks.cv.notify_one();
        let no_worker = self.worker.lock().map(|w| w.is_none()).unwrap_or(true);
        if no_worker {
            // No worker thread could be started: serve inline.
            let d = {
                let mut k = self.kicks.inner.lock().unwrap_or_else(|e| e.into_inner());
                k.queued.remove(&domid);
                k.queue.retain(|&x| x != domid);
                domid
            };
            self.service_ring(d);
        }
    }

    /// Serves `domid`'s ring now, on the calling thread (what the worker does after
    /// [`Xenstored::kick`]): for deterministic tests and single-threaded runners.
    pub fn service(&self, domid: u16) {
        self.service_ring(domid);
    }

    /// Domain gone: drops its ring connection, watches and transactions, removes the
    /// nodes it owns and its entries in other nodes' permissions, and fires
    /// `@releaseDomain` (if it was introduced).
    pub fn release_domain(&self, domid: u16) {
        self.with_state(|st| st.release(domid));
    }

    /// Domain `domid` shut down or crashed (it still exists): fires `@releaseDomain`
    /// once, as C xenstored does on seeing a domain shut down, so toolstacks waiting
    /// for it react before the domain is destroyed ([`Xenstored::release_domain`]
    /// fires it again). Nothing happens for a domain that was never introduced.
    pub fn domain_shutdown(&self, domid: u16) {
        self.with_state(|st| st.shutdown(domid));
    }

    /// Tells the daemon which domain ids exist (the hypervisor's domain table).
    /// `XS_SET_PERMS` uses it as 4.17 does: an owner that is no domain fails with
    /// `ENOENT`, other entries naming no domain are ignored. Without it every id below
    /// `DOMID_FIRST_RESERVED` counts as existing. `f` is called with the daemon's lock
    /// held: it must not call back into the daemon.
    pub fn set_domain_exists(&self, f: DomainExists) {
        self.lock().domain_exists = Some(f);
    }

    /// Where log lines go (refused socket clients, connections ended for not reading
    /// their events, `XS_CONTROL print`); stderr with a `xenstored: ` prefix by
    /// default. Called with the daemon's lock held: it must not call back into it.
    pub fn set_log(&self, log: LogSink) {
        self.lock().log = log;
    }

    pub(crate) fn log(&self, line: &str) {
        let log = self.lock().log.clone();
        log(line);
    }

    /// Whether `domid` has a store ring.
    pub fn is_introduced(&self, domid: u16) -> bool {
        self.lock().domains.contains_key(&domid)
    }

    /// An in-process client acting as `domid` (0 = dom0, privileged). Watch events go
    /// to a bounded channel read with [`LocalClient::wait_event`] and friends. Its
    /// watches and transactions end when it is dropped.
    pub fn client(self: &Arc<Self>, domid: u16) -> LocalClient {
        let bound = self.lock().quotas.event_queue as usize;
        let (tx, rx) = std::sync::mpsc::sync_channel(bound.max(1));
        let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sink = LocalSink::Channel(tx, lost.clone());
        let cid = self.with_state(|st| st.add_conn(domid, ConnKind::Local(sink)));
        LocalClient::new(self.clone(), cid, domid, Some(rx), lost)
    }

    /// Like [`Xenstored::client`], but watch events are passed to `callback`, called
    /// from whichever thread caused the event, without any daemon lock held. It should
    /// return quickly (hand work off).
    pub fn client_with_callback(
        self: &Arc<Self>,
        domid: u16,
        callback: Arc<dyn Fn(WatchEvent) + Send + Sync>,
    ) -> LocalClient {
        let cid = self
            .with_state(|st| st.add_conn(domid, ConnKind::Local(LocalSink::Callback(callback))));
        LocalClient::new(self.clone(), cid, domid, None, Arc::default())
    }

    /// Serves dom0's xenstore Unix socket at `path` (mode 0600), speaking xs_wire like
    /// the store ring (libxenstore 4.17 connects through `XENSTORED_PATH`). The
    /// returned server stops and removes the socket when dropped.
    pub fn serve_unix(self: &Arc<Self>, path: &std::path::Path) -> std::io::Result<SocketServer> {
        SocketServer::start(self.clone(), path, SocketOptions::default())
    }

    /// [`Xenstored::serve_unix`] with other limits or allowed uids.
    pub fn serve_unix_with(
        self: &Arc<Self>,
        path: &std::path::Path,
        opts: SocketOptions,
    ) -> std::io::Result<SocketServer> {
        SocketServer::start(self.clone(), path, opts)
    }

    /// The protocol engine: handles one request from connection `conn` and returns the
    /// reply (an `XS_ERROR` reply for anything refused or malformed). Watch events go
    /// to the connections they are for.
    pub fn handle(&self, conn: ConnId, hdr: MsgHeader, payload: &[u8]) -> Message {
        let reply = self.with_state(|st| st.process(conn, &hdr, payload, false));
        reply.unwrap_or_else(|| Message {
            hdr: MsgHeader {
                ty: hypercall::abi::xs_wire::msg::ERROR,
                req_id: hdr.req_id,
                tx_id: hdr.tx_id,
                len: 7,
            },
            payload: b"EINVAL\0".to_vec(),
        })
    }

    /// Counters of `domid`'s ring connection.
    pub fn ring_stats(&self, domid: u16) -> Option<ConnStats> {
        let st = self.lock();
        let cid = st.domains.get(&domid)?;
        let c = st.conns.get(cid)?;
        Some(ConnStats {
            replies_queued: c.replies_queued,
            events_queued: c.events_queued,
            events_dropped: c.events_dropped,
            ring_error: match &c.kind {
                ConnKind::Ring(r) => r.broken,
                _ => None,
            },
            requests: c.requests,
        })
    }

    /// Transaction commits and conflicts so far (all connections).
    pub fn transaction_stats(&self) -> TransactionStats {
        let st = self.lock();
        TransactionStats {
            commits: st.commits,
            conflicts: st.conflicts,
        }
    }

    /// Number of open connections (rings, socket clients, local clients).
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Number of nodes in the tree.
    pub fn node_count(&self) -> usize {
        self.lock().store.len()
    }

    /// Number of nodes owned by `domid`.
    pub fn nodes_owned(&self, domid: u16) -> u64 {
        self.lock().store.owned(domid)
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        {
            let mut k = self.kicks.inner.lock().unwrap_or_else(|e| e.into_inner());
            k.stop = true;
        }
        self.kicks.cv.notify_all();
        let handle = self.worker.get_mut().map(Option::take).unwrap_or(None);
        if let Some(h) = handle {
            // The last reference may be dropped by the worker itself.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_match_xs_wire() {
        for (name, _) in hypercall::abi::xs_wire::ERRORS {
            let e = Errno::from_name(name.as_bytes()).unwrap();
            assert_eq!(e.name(), name);
        }
        assert_eq!(Errno::ALL.len(), hypercall::abi::xs_wire::ERRORS.len());
        assert_eq!(Errno::from_name(b"EFOO"), None);
    }
}
