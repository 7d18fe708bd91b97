//! The xenstore client: requests and replies over the store ring (`io/xs_wire.h`).
//!
//! One request is in flight at a time: every operation takes `&mut self`, writes its
//! whole request (streamed through the 1024-byte ring in pieces if needed), then reads
//! messages until the reply with its `req_id` arrives. Watch events read on the way are
//! queued ([`crate::watch`]); replies with another `req_id` (for example the late reply
//! to a request that timed out) are discarded and counted (docs/hostile-input.md row 28). A reply
//! with the request's `req_id` but another type (not the request's, not `XS_ERROR`),
//! or another `tx_id` (xenstored echoes the request's), fails that request with
//! [`Error::BadReply`] (docs/hostile-input.md X3). Every wait is bounded by the client's timeout.

use core::fmt;
use core::time::Duration;

use hypercall::abi::xs_wire::{self, is_well_formed_path, msg, MsgHeader, PAYLOAD_MAX, RING_SIZE};
use hypercall::{DomId, Gfn, Platform, Port, SharedMem};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{ErrnoName, Error, ProtocolError, Result, Snippet};
use crate::parse;
use crate::perms::{Perm, PermList, PERM_STR_MAX};
use crate::ring::StoreRing;
use crate::state::XenbusState;
use crate::watch::{WatchEvent, WatchQueue, WATCH_TOKEN_MAX};

/// The timeout a new client uses for each request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`Xenstore::transaction`] tries before giving up with
/// [`Error::TooManyRetries`].
pub const MAX_TX_TRIES: u32 = 16;
/// Longest path [`Path`] holds.
pub const PATH_MAX: usize = 256;
/// Messages handled per pass over the ring before the wait loop checks its deadline
/// (so a flood of watch events cannot keep a caller spinning past its timeout).
const PUMP_BATCH: usize = 64;
const HEADER_LEN: usize = core::mem::size_of::<MsgHeader>();

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A transaction id (`tx_id` in the message header); [`TxId::NONE`] is "no transaction".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// Outside any transaction.
    pub const NONE: TxId = TxId(0);
}

/// How a transaction ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxEnd {
    /// Apply the changes (`"T"`); may fail with `EAGAIN` on a conflict.
    Commit,
    /// Drop them (`"F"`).
    Abort,
}

/// A xenstore path of at most [`PATH_MAX`] bytes, built without allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Path(heapless::String<PATH_MAX>);

impl Path {
    /// The empty path.
    pub const fn empty() -> Path {
        Path(heapless::String::new())
    }

    /// Copies `s`.
    pub fn new(s: &str) -> Result<Path> {
        let mut p = heapless::String::new();
        p.push_str(s)
            .map_err(|_| Error::PathTooLong { len: s.len() })?;
        Ok(Path(p))
    }

    /// `dir/key` (just `key` if `dir` is empty).
    pub fn join(dir: &str, key: &str) -> Result<Path> {
        let len = dir.len() + 1 + key.len();
        let mut p = Path::new(dir)?;
        if !dir.is_empty() && !dir.ends_with('/') {
            p.0.push('/').map_err(|_| Error::PathTooLong { len })?;
        }
        p.0.push_str(key).map_err(|_| Error::PathTooLong { len })?;
        Ok(p)
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::ops::Deref for Path {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Path {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The names of a directory listing (`XS_DIRECTORY`), borrowing the caller's buffer.
#[derive(Clone, Debug)]
pub struct DirEntries<'a> {
    rest: &'a str,
}

impl<'a> DirEntries<'a> {
    /// Validates a reply payload: names, each NUL-terminated, none empty, each a
    /// node name (path characters, no `/`: docs/hostile-input.md X5).
    fn parse(raw: &'a [u8]) -> Option<DirEntries<'a>> {
        let s = core::str::from_utf8(raw).ok()?;
        if s.is_empty() {
            return Some(DirEntries { rest: s });
        }
        let body = s.strip_suffix('\0')?;
        let bad_name =
            |n: &str| n.is_empty() || n.bytes().any(|b| b == b'/' || !xs_wire::is_path_char(b));
        if body.split('\0').any(bad_name) {
            return None;
        }
        Some(DirEntries { rest: body })
    }

    /// Whether the directory has no children.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

impl<'a> Iterator for DirEntries<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.split_once('\0') {
            Some((name, rest)) => {
                self.rest = rest;
                Some(name)
            }
            None => Some(core::mem::take(&mut self.rest)),
        }
    }
}

/// A request payload, streamed into the ring piece by piece.
trait Payload {
    fn len(&self) -> usize;
    fn chunks(&self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;
}

struct Parts<'a>(&'a [&'a [u8]]);

impl Payload for Parts<'_> {
    fn len(&self) -> usize {
        self.0.iter().map(|p| p.len()).sum()
    }
    fn chunks(&self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.0.iter().try_for_each(|p| sink(p))
    }
}

/// `path\0perm\0perm\0...` for `XS_SET_PERMS`.
struct PermsPayload<'a> {
    path: &'a str,
    perms: &'a [Perm],
}

impl Payload for PermsPayload<'_> {
    fn len(&self) -> usize {
        let mut s = heapless::String::new();
        self.path.len()
            + 1
            + self
                .perms
                .iter()
                .map(|p| p.format(&mut s).len() + 1)
                .sum::<usize>()
    }
    fn chunks(&self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        sink(self.path.as_bytes())?;
        sink(b"\0")?;
        let mut s = heapless::String::<PERM_STR_MAX>::new();
        for p in self.perms {
            sink(p.format(&mut s))?;
            sink(b"\0")?;
        }
        Ok(())
    }
}

fn check_no_nul(s: &str, what: &'static str) -> Result<()> {
    if s.as_bytes().contains(&0) {
        return Err(Error::InvalidArgument(what));
    }
    Ok(())
}

/// Refuses paths xenstored would refuse (or mishandle, XSA-481) before they are sent
/// (docs/hostile-input.md X10). Special `@` paths only where `special` (watches).
fn check_path(path: &str, special: bool) -> Result<()> {
    check_no_nul(path, "path contains NUL")?;
    let b = path.as_bytes();
    if !is_well_formed_path(b) || (!special && b.first() == Some(&b'@')) {
        return Err(Error::InvalidPath(Snippet::tail(b)));
    }
    Ok(())
}

/// What [`Store::read_keys`] hands each reply to: its index and the value (or
/// the error xenstored answered).
pub type ReplySink<'f> = dyn FnMut(usize, Result<&[u8]>) -> Result<()> + 'f;

/// `dir` and every `dir/key` must be well-formed paths of at most [`PATH_MAX`]
/// bytes (each key relative: no leading `/`).
fn check_keys<'k>(dir: &str, keys: impl Iterator<Item = &'k str>) -> Result<()> {
    check_path(dir, false)?;
    for k in keys {
        check_path(k, false)?;
        if k.starts_with('/') || dir.len() + 1 + k.len() > PATH_MAX {
            return Err(Error::InvalidPath(Snippet::tail(k.as_bytes())));
        }
    }
    Ok(())
}

fn strip_nul(b: &[u8]) -> &[u8] {
    b.strip_suffix(&[0]).unwrap_or(b)
}

/// The message being received: header, then payload, possibly over several passes.
struct Rx {
    hdr: [u8; HEADER_LEN],
    hdr_got: usize,
    header: Option<MsgHeader>,
    payload: [u8; PAYLOAD_MAX],
    got: usize,
    last_progress_ns: u64,
}

impl Rx {
    const fn new() -> Rx {
        Rx {
            hdr: [0; HEADER_LEN],
            hdr_got: 0,
            header: None,
            payload: [0; PAYLOAD_MAX],
            got: 0,
            last_progress_ns: 0,
        }
    }

    fn reset(&mut self) {
        self.hdr_got = 0;
        self.header = None;
        self.got = 0;
    }

    fn body(&self) -> &[u8] {
        &self.payload[..self.got]
    }
}

enum Pump {
    /// The awaited reply is complete in `rx`.
    Reply,
    /// A reply with the awaited `req_id` but another type (neither the request's nor
    /// `XS_ERROR`; docs/hostile-input.md X3) or another `tx_id`: it was consumed, the request
    /// fails.
    WrongType,
    /// Nothing more to read now.
    Idle,
    /// Stopped after a batch; more may be waiting.
    Busy,
}

/// A xenstore client over the store page.
///
/// Holds a 4 KiB receive buffer and the watch queue (about 15 KiB in all). On a
/// small stack, build it in place: [`Xenstore::unattached`] is a `const fn` (for a
/// `static`, e.g. `spin::Mutex<Xenstore<&'static MyPlatform>>`), and
/// [`Xenstore::attach_hvm_params`] / [`Xenstore::attach`] then find the page through
/// `&mut self`. [`Xenstore::new`] and [`Xenstore::from_hvm_params`] return the client
/// by value.
///
/// Not `Sync`-shared: one request at a time through `&mut self`. To use it from
/// several contexts, put it behind a lock (e.g. `spin::Mutex`); never call it from an
/// upcall handler (it waits).
pub struct Xenstore<P: Platform> {
    platform: P,
    /// `None` until attached to the store page.
    ring: Option<StoreRing>,
    port: Port,
    next_req_id: u32,
    rx: Rx,
    watches: WatchQueue,
    broken: Option<ProtocolError>,
    timeout_ns: u64,
    discarded: u64,
    round_trips: u64,
}

impl<P: Platform> Xenstore<P> {
    /// A client over the store page (shared with xenstored) in guest frame `page`,
    /// which `platform` maps ([`Platform::gfn_to_virt`]), that notifies xenstored
    /// through event channel `port`. The page is reached through the platform on
    /// each use, so it is borrowed from the platform this client owns and never
    /// outlives it. By value: see [`Xenstore::unattached`] for building it in
    /// place.
    pub fn new(platform: P, page: Gfn, port: Port) -> Result<Xenstore<P>> {
        let mut xs = Xenstore::unattached(platform);
        xs.attach(page, port)?;
        Ok(xs)
    }

    /// A client that is not attached to a store page yet: every request fails with
    /// [`Error::NoXenstore`] until [`Xenstore::attach`] or
    /// [`Xenstore::attach_hvm_params`]. A `const fn`, so the client can live in a
    /// `static` (no stack used to build it).
    pub const fn unattached(platform: P) -> Xenstore<P> {
        Xenstore {
            platform,
            ring: None,
            port: Port(0),
            next_req_id: 1,
            rx: Rx::new(),
            watches: WatchQueue::new(),
            broken: None,
            timeout_ns: DEFAULT_TIMEOUT.as_nanos() as u64,
            discarded: 0,
            round_trips: 0,
        }
    }

    /// Attaches (in place) to the store page in guest frame `page` (shared with
    /// xenstored; [`Error::NotMapped`] if the platform does not map it) and event
    /// channel `port`. Attaching again starts afresh: the message being received,
    /// a failure and queued watch events are dropped.
    pub fn attach(&mut self, page: Gfn, port: Port) -> Result<()> {
        let mem = SharedMem::map_gfn(&self.platform, page).ok_or(Error::NotMapped(page))?;
        self.ring = Some(StoreRing::new(page, mem));
        self.port = port;
        self.rx.reset();
        self.broken = None;
        self.watches.clear();
        Ok(())
    }

    /// A client for this domain's own store page and port, found through the HVM params
    /// `HVM_PARAM_STORE_PFN`/`HVM_PARAM_STORE_EVTCHN` (PVH and HVM guests). By value:
    /// see [`Xenstore::attach_hvm_params`] for building it in place.
    pub fn from_hvm_params(platform: P) -> Result<Xenstore<P>> {
        let mut xs = Xenstore::unattached(platform);
        xs.attach_hvm_params()?;
        Ok(xs)
    }

    /// [`Xenstore::attach`] to this domain's own store page and port from the HVM
    /// params (see [`Xenstore::from_hvm_params`]).
    pub fn attach_hvm_params(&mut self) -> Result<()> {
        use hypercall::abi::hvm::{PARAM_STORE_EVTCHN, PARAM_STORE_PFN};
        let platform = &self.platform;
        let xen = hypercall::Xen(platform);
        let pfn = xen
            .hvm_get_param(PARAM_STORE_PFN)
            .map_err(Error::Hypercall)?;
        if pfn == 0 {
            return Err(Error::NoXenstore);
        }
        let port = xen
            .hvm_get_param(PARAM_STORE_EVTCHN)
            .map_err(Error::Hypercall)?;
        let port = u32::try_from(port)
            .map_err(|_| Error::InvalidArgument("store event channel out of range"))?;
        self.attach(Gfn(pfn), Port(port))
    }

    /// Asks xenstored to reset the store ring (the ring reconnection of
    /// `io/xs_wire.h`, docs/hostile-input.md X14): empty queues, and no requests,
    /// watches or transactions left on this connection. This is how a client whose
    /// connection failed ([`Xenstore::broken`]: a stalled request, bad indices,
    /// the `error` field) starts over on the same page, and how a guest that finds
    /// `connection` already set (someone else asked) waits for the reset to end.
    ///
    /// Only when xenstored offers `XENSTORE_SERVER_FEATURE_RECONNECTION`
    /// ([`Error::ReconnectNotOffered`] otherwise, nothing touched). Sets
    /// `connection` to `XENSTORE_RECONNECT`, notifies, then looks at nothing but
    /// `connection` until xenstored sets it back to `XENSTORE_CONNECTED`, for at
    /// most [`Xenstore::timeout`]: past it, [`Error::ReconnectTimeout`], and the
    /// client stays failed ([`ProtocolError::ReconnectPending`]) until a later call
    /// sees the reset done. On success the client takes the ring over afresh (the
    /// indices xenstored left, a message half received dropped, the failure
    /// cleared). Watch events already queued stay queued; the watches themselves
    /// are gone at xenstored: register again the ones still wanted.
    pub fn reconnect(&mut self) -> Result<()> {
        use hypercall::abi::xs_wire::{CONNECTED, RECONNECT, SERVER_FEATURE_RECONNECTION};
        let gfn = self.ring.as_ref().ok_or(Error::NoXenstore)?.gfn;
        let mem = SharedMem::map_gfn(&self.platform, gfn).ok_or(Error::NotMapped(gfn))?;
        if mem.load_u32(xs_wire::iface::SERVER_FEATURES) & SERVER_FEATURE_RECONNECTION == 0 {
            return Err(Error::ReconnectNotOffered);
        }
        // From here on the ring is not ours to read until the reset is done.
        self.broken = Some(ProtocolError::ReconnectPending);
        hypercall::shmem::mb();
        mem.store_u32(xs_wire::iface::CONNECTION, RECONNECT);
        self.notify()?;
        let deadline = self.deadline(self.timeout_ns);
        loop {
            let mem = SharedMem::map_gfn(&self.platform, gfn).ok_or(Error::NotMapped(gfn))?;
            if mem.load_u32(xs_wire::iface::CONNECTION) == CONNECTED {
                hypercall::shmem::rmb();
                self.ring = Some(StoreRing::new(gfn, mem));
                self.rx.reset();
                self.broken = None;
                return Ok(());
            }
            if self.platform.now_ns() >= deadline {
                return Err(Error::ReconnectTimeout);
            }
            self.platform.wait();
        }
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The store event channel.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The bound on each request (and on a stalled incoming message).
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_ns)
    }

    /// Changes the bound on each request.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout_ns = ns(timeout);
    }

    /// Why the connection failed, if it did. A failed client answers every call with
    /// [`Error::Broken`]; make a new one to start over.
    pub fn broken(&self) -> Option<ProtocolError> {
        self.broken
    }

    /// Messages discarded so far: replies nobody waits for (unknown `req_id`, or the
    /// real reply arriving after a wrong-type one already failed its request).
    pub fn discarded_messages(&self) -> u64 {
        self.discarded
    }

    /// Round trips so far: requests sent and answered one by one, plus batches of
    /// requests sent back to back ([`Store::read_keys`], [`Store::write_keys`]).
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    // ---- watches ---------------------------------------------------------------------

    /// Registers a watch on `path` (and everything below it). xenstored fires it once
    /// right away, then on every change; events carry `token` (at most
    /// [`WATCH_TOKEN_MAX`] bytes).
    pub fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.watch_op(msg::WATCH, path, token)
    }

    /// Removes a watch registered with the same `path` and `token`. Events it fired
    /// earlier may still be queued.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.watch_op(msg::UNWATCH, path, token)
    }

    fn watch_op(&mut self, ty: u32, path: &str, token: &str) -> Result<()> {
        check_path(path, true)?;
        check_no_nul(token, "token contains NUL")?;
        if token.len() > WATCH_TOKEN_MAX {
            return Err(Error::InvalidArgument("watch token too long"));
        }
        let parts: [&[u8]; 4] = [path.as_bytes(), b"\0", token.as_bytes(), b"\0"];
        self.ack(TxId::NONE, ty, &Parts(&parts))
    }

    /// The oldest queued watch event, after reading whatever xenstored has sent.
    /// Never waits.
    pub fn poll_watch_event(&mut self) -> Result<Option<WatchEvent>> {
        self.pump(None)?;
        Ok(self.watches.pop())
    }

    /// The oldest queued event whose token is `token`; events with other tokens stay
    /// queued in order. Never waits.
    pub fn poll_watch_event_for(&mut self, token: &str) -> Result<Option<WatchEvent>> {
        self.pump(None)?;
        Ok(self.watches.take(token))
    }

    /// Takes and drops the queued events with `token` (for callers that only need to
    /// know "something changed" and then re-read the state they watch). Returns
    /// whether there was at least one. Never waits.
    ///
    /// Bounded: at most [`WATCH_QUEUE_LEN`](crate::WATCH_QUEUE_LEN) events are taken per
    /// call. A xenstored that keeps sending events as fast as they are read cannot hold
    /// the caller here (a plain `while poll_watch_event_for(..)` loop would never
    /// reach its deadline); events left over only cause another, harmless re-read.
    pub fn drain_watch_events_for(&mut self, token: &str) -> Result<bool> {
        let mut seen = false;
        for _ in 0..crate::watch::WATCH_QUEUE_LEN {
            if self.poll_watch_event_for(token)?.is_none() {
                break;
            }
            seen = true;
        }
        Ok(seen)
    }

    /// Waits up to `timeout` for a watch event ([`Error::Timeout`] if none).
    pub fn wait_watch_event(&mut self, timeout: Duration) -> Result<WatchEvent> {
        self.wait_for(timeout, |xs| Ok(xs.watches.pop()))
    }

    /// Waits up to `timeout` for an event with `token`, leaving others queued.
    pub fn wait_watch_event_for(&mut self, token: &str, timeout: Duration) -> Result<WatchEvent> {
        self.wait_for(timeout, |xs| Ok(xs.watches.take(token)))
    }

    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&mut Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = self.deadline(ns(timeout));
        loop {
            let pumped = self.pump(None)?;
            if let Some(v) = f(self)? {
                return Ok(v);
            }
            self.check_stall()?;
            if self.platform.now_ns() >= deadline {
                return Err(Error::Timeout);
            }
            if let Pump::Idle = pumped {
                self.platform.wait();
            }
        }
    }

    /// Whether a watch event was lost (queue overflow or an unusable event) since the
    /// last [`Xenstore::take_watch_overflow`]. Whoever sees it should re-read the state
    /// it watches.
    pub fn watch_overflowed(&self) -> bool {
        self.watches.overflowed()
    }

    /// Returns and clears the overflow flag.
    pub fn take_watch_overflow(&mut self) -> bool {
        self.watches.take_overflowed()
    }

    /// Watch events lost so far (monotonic; compare with an earlier value to learn
    /// whether you may have missed one without clearing the flag for others).
    pub fn lost_watch_events(&self) -> u64 {
        self.watches.lost()
    }

    /// Events waiting in the queue.
    pub fn pending_watch_events(&self) -> usize {
        self.watches.len()
    }

    /// A count that moves whenever a watch event is queued or lost (monotonic,
    /// wrapping).
    ///
    /// For a main loop that serves several watchers in turn and then sleeps: any
    /// request it makes can pull events off the ring into the queue, after their
    /// watcher's turn in this round. Their event-channel notification was consumed
    /// then, so nothing would wake the loop for them. Compare this count at the start
    /// and at the end of a round, and run another round at once if it changed:
    ///
    /// ```
    /// # fn round<P: hypercall::Platform>(xs: &mut xenbus::Xenstore<P>, p: &P) {
    /// loop {
    ///     let seen = xs.watch_events_received();
    ///     // ... every watcher polls its events, devices do their I/O ...
    ///     if xs.watch_events_received() == seen {
    ///         p.wait_until(u64::MAX); // or the loop's next deadline
    ///     }
    /// #   break;
    /// }
    /// # }
    /// ```
    pub fn watch_events_received(&self) -> u64 {
        self.watches.received()
    }

    // ---- transactions ----------------------------------------------------------------

    /// Starts a transaction (`XS_TRANSACTION_START`).
    pub fn transaction_start(&mut self) -> Result<TxId> {
        let mut buf = [0u8; 16];
        let n = self
            .request(TxId::NONE, msg::TRANSACTION_START, &[b"\0"], &mut buf)
            .map_err(|e| bad_reply_if_too_small(e, msg::TRANSACTION_START))?;
        let id = parse::parse_decimal(strip_nul(&buf[..n]))
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v != 0)
            .ok_or(Error::BadReply {
                op: msg::TRANSACTION_START,
            })?;
        Ok(TxId(id))
    }

    /// Ends transaction `tx`. A commit that conflicts fails with
    /// `Error::Xenstore(ErrnoName::Eagain)`: start over.
    pub fn transaction_end(&mut self, tx: TxId, end: TxEnd) -> Result<()> {
        let arg: &[u8] = match end {
            TxEnd::Commit => b"T\0",
            TxEnd::Abort => b"F\0",
        };
        self.ack(tx, msg::TRANSACTION_END, &Parts(&[arg]))
    }

    /// A handle that runs operations in the already started transaction `tx`.
    pub fn in_transaction(&mut self, tx: TxId) -> Transaction<'_, P> {
        Transaction { xs: self, id: tx }
    }

    /// Runs `f` in a transaction and commits it, starting over (up to [`MAX_TX_TRIES`]
    /// times, then [`Error::TooManyRetries`]) when xenstored answers `EAGAIN`. `f` may
    /// run several times, so it should only touch xenstore and its own return value.
    /// An error from `f` aborts the transaction and is returned.
    pub fn transaction<T, F>(&mut self, mut f: F) -> Result<T>
    where
        F: FnMut(&mut Transaction<'_, P>) -> Result<T>,
    {
        for _ in 0..MAX_TX_TRIES {
            let id = self.transaction_start()?;
            let r = f(&mut Transaction { xs: self, id });
            match r {
                Ok(v) => match self.transaction_end(id, TxEnd::Commit) {
                    Ok(()) => return Ok(v),
                    Err(Error::Xenstore(ErrnoName::Eagain)) => continue,
                    Err(e) => return Err(e),
                },
                Err(Error::Xenstore(ErrnoName::Eagain)) => self.abort_quietly(id),
                Err(e) => {
                    self.abort_quietly(id);
                    return Err(e);
                }
            }
        }
        Err(Error::TooManyRetries {
            tries: MAX_TX_TRIES,
        })
    }

    fn abort_quietly(&mut self, id: TxId) {
        // After a timeout or failure an abort would only wait again; xenstored drops
        // the transaction with the connection anyway.
        if self.broken.is_none() {
            let _ = self.transaction_end(id, TxEnd::Abort);
        }
    }

    /// The home path of domain `domid` (`XS_GET_DOMAIN_PATH`), e.g. `/local/domain/1`.
    pub fn get_domain_path<'b>(&mut self, domid: DomId, buf: &'b mut [u8]) -> Result<&'b str> {
        let mut arg = heapless::String::<8>::new();
        // Cannot fail: a u16 has at most 5 digits.
        let _ = fmt::Write::write_fmt(&mut arg, format_args!("{}", domid.0));
        let n = self.request(
            TxId::NONE,
            msg::GET_DOMAIN_PATH,
            &[arg.as_bytes(), b"\0"],
            buf,
        )?;
        let buf: &'b [u8] = buf;
        let raw = strip_nul(buf.get(..n).unwrap_or_default());
        core::str::from_utf8(raw).map_err(|_| Error::BadReply {
            op: msg::GET_DOMAIN_PATH,
        })
    }

    // ---- the request engine -----------------------------------------------------------

    /// Sends one request of type `ty` (a [`msg`] constant) whose payload is the
    /// concatenation of `parts`, in transaction `tx`, and copies the reply payload into
    /// `reply`. Returns the reply length. An `XS_ERROR` reply becomes
    /// [`Error::Xenstore`]. For operations this crate does not wrap.
    pub fn request(
        &mut self,
        tx: TxId,
        ty: u32,
        parts: &[&[u8]],
        reply: &mut [u8],
    ) -> Result<usize> {
        self.request_with(tx, ty, &Parts(parts), reply)
    }

    /// A request whose reply is just an acknowledgement (`"OK"`).
    fn ack(&mut self, tx: TxId, ty: u32, payload: &dyn Payload) -> Result<()> {
        let mut buf = [0u8; 16];
        self.request_with(tx, ty, payload, &mut buf)
            .map(|_| ())
            .map_err(|e| bad_reply_if_too_small(e, ty))
    }

    fn request_with(
        &mut self,
        tx: TxId,
        ty: u32,
        payload: &dyn Payload,
        reply: &mut [u8],
    ) -> Result<usize> {
        self.check_broken()?;
        let deadline = self.deadline(self.timeout_ns);
        let req_id = self.send_request(tx, ty, payload, deadline)?;
        self.round_trips = self.round_trips.wrapping_add(1);
        self.notify()?;
        self.await_reply(req_id, ty, tx, deadline)?;
        let result = match self.reply_body() {
            Ok(body) => match reply.get_mut(..body.len()) {
                Some(dst) => {
                    dst.copy_from_slice(body);
                    Ok(body.len())
                }
                None => Err(Error::BufferTooSmall { needed: body.len() }),
            },
            Err(e) => Err(e),
        };
        self.rx.reset();
        result
    }

    /// Sends `n` independent requests (`req(i)`: message type and payload parts,
    /// concatenated) in transaction `tx` back to back, then takes their replies in
    /// order and hands each to `each(i, reply)` (an `XS_ERROR` reply as
    /// `Err(Error::Xenstore(..))`). xenstored answers a connection's requests in
    /// order, so this is one round trip instead of one per request (they are cut
    /// into batches that fit the request ring). The first error `each` returns is
    /// returned once the batch's replies are in; a protocol error or a timeout
    /// ends it at once.
    fn pipeline<'a>(
        &mut self,
        tx: TxId,
        n: usize,
        req: &dyn Fn(usize) -> (u32, [&'a [u8]; 5]),
        each: &mut ReplySink<'_>,
    ) -> Result<()> {
        /// Requests per batch at most (their ids are kept on the stack).
        const BATCH: usize = 32;
        let mut first_err = None;
        let mut i = 0;
        while i < n {
            self.check_broken()?;
            let deadline = self.deadline(self.timeout_ns);
            // Every earlier request was answered, so the request ring is empty and
            // a batch of at most RING_SIZE bytes goes in without waiting.
            // Each request's id and type, kept for matching its reply (the type is
            // kept rather than asked of `req` again).
            let mut sent = [(0u32, 0u32); BATCH];
            let (mut k, mut bytes) = (0usize, 0usize);
            while i + k < n && k < BATCH {
                let (ty, parts) = req(i + k);
                let len = HEADER_LEN + Parts(&parts).len();
                if k > 0 && bytes + len > RING_SIZE {
                    break;
                }
                let id = self.send_request(tx, ty, &Parts(&parts), deadline)?;
                if let Some(slot) = sent.get_mut(k) {
                    *slot = (id, ty);
                }
                bytes += len;
                k += 1;
            }
            self.round_trips = self.round_trips.wrapping_add(1);
            self.notify()?;
            for (j, &(id, ty)) in sent.iter().take(k).enumerate() {
                self.await_reply(id, ty, tx, deadline)?;
                let r = each(i + j, self.reply_body());
                self.rx.reset();
                if let (Err(e), None) = (r, &first_err) {
                    first_err = Some(e);
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            i += k;
        }
        Ok(())
    }

    /// Reads `dir/key` for each of `keys` in one round trip: `each(index, value)`
    /// gets each value, or its error (a missing node as
    /// `Err(Error::Xenstore(ENOENT))`). No path is built in memory: the request
    /// payloads are `dir`, `/` and the key.
    pub(crate) fn read_keys_in(
        &mut self,
        tx: TxId,
        dir: &str,
        keys: &[&str],
        each: &mut ReplySink<'_>,
    ) -> Result<()> {
        check_keys(dir, keys.iter().copied())?;
        self.pipeline(
            tx,
            keys.len(),
            &|i| {
                let k = keys.get(i).map_or(&b""[..], |k| k.as_bytes());
                (msg::READ, [dir.as_bytes(), b"/", k, b"\0", b""])
            },
            each,
        )
    }

    /// Writes `dir/key = value` for each of `nodes` in one round trip (creating
    /// nodes as [`Store::write`]); the first refusal is returned once every reply
    /// is in.
    pub(crate) fn write_keys_in(
        &mut self,
        tx: TxId,
        dir: &str,
        nodes: &[(&str, &[u8])],
    ) -> Result<()> {
        check_keys(dir, nodes.iter().map(|n| n.0))?;
        self.pipeline(
            tx,
            nodes.len(),
            &|i| {
                let (k, v) = nodes.get(i).copied().unwrap_or(("", b""));
                (msg::WRITE, [dir.as_bytes(), b"/", k.as_bytes(), b"\0", v])
            },
            &mut |_, r| r.map(|_| ()),
        )
    }

    pub(crate) fn write_u32_keys_in(
        &mut self,
        tx: TxId,
        dir: &str,
        nodes: &[(&str, u32)],
    ) -> Result<()> {
        const MAX: usize = 16;
        if nodes.len() > MAX {
            return Err(Error::InvalidArgument("more than 16 keys in one batch"));
        }
        check_keys(dir, nodes.iter().map(|n| n.0))?;
        // Each value's digits end at the end of its slot; `start` is the first.
        let mut text = [[0u8; 10]; MAX];
        let mut start = [0u8; MAX];
        for ((t, st), &(_, v)) in text.iter_mut().zip(start.iter_mut()).zip(nodes) {
            let (mut x, mut i) = (v, t.len());
            loop {
                i -= 1;
                if let Some(d) = t.get_mut(i) {
                    *d = b'0' + (x % 10) as u8;
                }
                x /= 10;
                if x == 0 || i == 0 {
                    break;
                }
            }
            *st = i as u8;
        }
        self.pipeline(
            tx,
            nodes.len(),
            &|i| {
                let k = nodes.get(i).map_or("", |n| n.0);
                let from = start.get(i).copied().unwrap_or(0) as usize;
                let v = text.get(i).and_then(|t| t.get(from..)).unwrap_or_default();
                (msg::WRITE, [dir.as_bytes(), b"/", k.as_bytes(), b"\0", v])
            },
            &mut |_, r| r.map(|_| ()),
        )
    }

    /// Puts one request on the ring (no notification); its req_id.
    fn send_request(
        &mut self,
        tx: TxId,
        ty: u32,
        payload: &dyn Payload,
        deadline: u64,
    ) -> Result<u32> {
        let len = payload.len();
        if len > PAYLOAD_MAX {
            return Err(Error::RequestTooLarge { len });
        }
        let req_id = self.next_req_id;
        // Skip 0: C xenstored sends watch events with req_id 0.
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        let header = MsgHeader {
            ty,
            req_id,
            tx_id: tx.0,
            len: len as u32,
        };
        let mut progress = (0usize, HEADER_LEN + len);
        self.send(header.as_bytes(), &mut progress, deadline)?;
        payload.chunks(&mut |chunk| self.send(chunk, &mut progress, deadline))?;
        Ok(req_id)
    }

    /// The complete reply in `rx`: its payload, or the error it names.
    fn reply_body(&self) -> Result<&[u8]> {
        let body = self.rx.body();
        if self.rx.header.is_some_and(|h| h.ty == msg::ERROR) {
            let name = strip_nul(body);
            Err(match ErrnoName::from_name(name) {
                Some(e) => Error::Xenstore(e),
                None => Error::UnknownXenstoreError(Snippet::head(name)),
            })
        } else {
            Ok(body)
        }
    }

    /// Waits (bounded by `deadline`) until the reply to `req_id` is complete in `rx`.
    fn await_reply(&mut self, req_id: u32, ty: u32, tx: TxId, deadline: u64) -> Result<()> {
        loop {
            match self.pump(Some((req_id, ty, tx.0)))? {
                Pump::Reply => break,
                Pump::WrongType => return Err(Error::BadReply { op: ty }),
                Pump::Busy => {}
                Pump::Idle => {
                    self.check_stall()?;
                    if self.platform.now_ns() >= deadline {
                        // A message still incomplete when we give up would swallow the
                        // next reply's bytes: fail rather than mis-frame.
                        if self.rx.hdr_got > 0 {
                            return Err(self.fail(self.truncated()));
                        }
                        return Err(Error::Timeout);
                    }
                    self.platform.wait();
                    continue;
                }
            }
            if self.platform.now_ns() >= deadline {
                return Err(Error::Timeout);
            }
        }
        Ok(())
    }

    /// Streams `data` into the request ring, waiting (bounded) for space.
    fn send(
        &mut self,
        mut data: &[u8],
        progress: &mut (usize, usize),
        deadline: u64,
    ) -> Result<()> {
        while !data.is_empty() {
            let ring = self.ring.as_mut().ok_or(Error::NoXenstore)?;
            let mem =
                SharedMem::map_gfn(&self.platform, ring.gfn).ok_or(Error::NotMapped(ring.gfn))?;
            let n = match ring.write_some(mem, data) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(e)),
            };
            data = data.get(n..).unwrap_or_default();
            progress.0 += n;
            if data.is_empty() {
                break;
            }
            // Ring full: let xenstored drain it, and keep draining the response ring so
            // it is never blocked on us.
            self.notify()?;
            let pumped = self.pump(None)?;
            if n == 0 {
                if self.platform.now_ns() >= deadline {
                    if progress.0 == 0 {
                        return Err(Error::Timeout);
                    }
                    let (written, total) = *progress;
                    return Err(self.fail(ProtocolError::RequestStalled { written, total }));
                }
                if let Pump::Idle = pumped {
                    self.platform.wait();
                }
            }
        }
        Ok(())
    }

    /// Reads what xenstored has sent: queues watch events, discards strays, and stops at
    /// the awaited reply (left complete in `rx`).
    fn pump(&mut self, awaiting: Option<(u32, u32, u32)>) -> Result<Pump> {
        self.check_broken()?;
        if let Some(ring) = &self.ring {
            // The platform maps the store page for as long as it lives; a platform
            // that stopped doing so is reported, not waited on.
            SharedMem::map_gfn(&self.platform, ring.gfn).ok_or(Error::NotMapped(ring.gfn))?;
        }
        let mut consumed = false;
        let mut outcome = Pump::Busy;
        for _ in 0..PUMP_BATCH {
            match self.receive(&mut consumed) {
                Err(e) => return Err(self.fail(e)),
                Ok(false) => {
                    outcome = Pump::Idle;
                    break;
                }
                Ok(true) => {}
            }
            let Some(h) = self.rx.header else { break };
            if h.ty == msg::WATCH_EVENT {
                match WatchEvent::parse(self.rx.body()) {
                    Some(ev) => self.watches.push(ev),
                    None => self.watches.lose(),
                }
                self.rx.reset();
                continue;
            }
            if let Some((id, ty, tx_id)) = awaiting {
                if h.req_id == id {
                    if (h.ty == ty || h.ty == msg::ERROR) && h.tx_id == tx_id {
                        outcome = Pump::Reply;
                    } else {
                        self.rx.reset();
                        outcome = Pump::WrongType;
                    }
                    break;
                }
            }
            self.discarded = self.discarded.wrapping_add(1);
            self.rx.reset();
        }
        if consumed {
            // xenstored may be waiting for room to write the rest of its output.
            self.notify()?;
        }
        Ok(outcome)
    }

    /// Advances the message in `rx`; true once it is complete.
    fn receive(&mut self, consumed: &mut bool) -> core::result::Result<bool, ProtocolError> {
        let header = match self.rx.header {
            Some(h) => h,
            None => {
                let got = self.rx.hdr_got;
                let Some(ring) = self.ring.as_mut() else {
                    return Ok(false);
                };
                // Checked by `pump` before it receives.
                let Some(mem) = SharedMem::map_gfn(&self.platform, ring.gfn) else {
                    return Ok(false);
                };
                let n = ring.read_some(mem, &mut self.rx.hdr[got..])?;
                self.progressed(n, consumed);
                self.rx.hdr_got += n;
                if self.rx.hdr_got < HEADER_LEN {
                    return Ok(false);
                }
                let h = MsgHeader::read_from_bytes(&self.rx.hdr).unwrap_or_default();
                if h.len as usize > PAYLOAD_MAX {
                    return Err(ProtocolError::ReplyTooLarge { len: h.len });
                }
                self.rx.header = Some(h);
                self.rx.got = 0;
                h
            }
        };
        let len = header.len as usize;
        if self.rx.got < len {
            let got = self.rx.got;
            let Some(ring) = self.ring.as_mut() else {
                return Ok(false);
            };
            let Some(mem) = SharedMem::map_gfn(&self.platform, ring.gfn) else {
                return Ok(false);
            };
            let n = ring.read_some(mem, &mut self.rx.payload[got..len])?;
            self.progressed(n, consumed);
            self.rx.got += n;
        }
        Ok(self.rx.got == len)
    }

    fn progressed(&mut self, n: usize, consumed: &mut bool) {
        if n > 0 {
            *consumed = true;
            self.rx.last_progress_ns = self.platform.now_ns();
        }
    }

    /// A message that started but made no progress for a whole timeout will never be
    /// completed (its header promised more than xenstored sent): fail the connection.
    fn check_stall(&mut self) -> Result<()> {
        if self.rx.hdr_got == 0 {
            return Ok(());
        }
        let idle = self
            .platform
            .now_ns()
            .saturating_sub(self.rx.last_progress_ns);
        if idle < self.timeout_ns {
            return Ok(());
        }
        Err(self.fail(self.truncated()))
    }

    fn truncated(&self) -> ProtocolError {
        let expected = HEADER_LEN as u32 + self.rx.header.map_or(0, |h| h.len);
        let got = (self.rx.hdr_got + self.rx.got) as u32;
        ProtocolError::TruncatedMessage { expected, got }
    }

    fn notify(&self) -> Result<()> {
        hypercall::Xen(&self.platform)
            .evtchn_send(self.port)
            .map_err(Error::Hypercall)
    }

    fn deadline(&self, timeout_ns: u64) -> u64 {
        self.platform.now_ns().saturating_add(timeout_ns)
    }

    fn check_broken(&self) -> Result<()> {
        match self.broken {
            Some(e) => Err(Error::Broken(e)),
            None if self.ring.is_none() => Err(Error::NoXenstore),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: ProtocolError) -> Error {
        self.broken = Some(e);
        Error::Broken(e)
    }
}

fn bad_reply_if_too_small(e: Error, op: u32) -> Error {
    match e {
        Error::BufferTooSmall { .. } => Error::BadReply { op },
        e => e,
    }
}

/// Operations on nodes, the same inside and outside a transaction: implemented by
/// [`Xenstore`] (no transaction) and [`Transaction`].
///
/// Paths are absolute (`/local/domain/0/backend/...`) or relative to the domain's home
/// (`device/vbd/51712`). The typed readers (`read_u64`, ...) report a missing node as
/// [`Error::MissingKey`] and an unusable value as [`Error::Parse`], both naming the key.
pub trait Store {
    /// The platform of the underlying client.
    type Platform: Platform;

    /// The client and the transaction this handle works in.
    fn client(&mut self) -> (&mut Xenstore<Self::Platform>, TxId);

    /// Raw request in this handle's transaction; see [`Xenstore::request`].
    fn request(&mut self, ty: u32, parts: &[&[u8]], reply: &mut [u8]) -> Result<usize> {
        let (xs, tx) = self.client();
        xs.request(tx, ty, parts, reply)
    }

    /// Reads a node's value into `buf`; returns its length.
    fn read(&mut self, path: &str, buf: &mut [u8]) -> Result<usize> {
        check_path(path, false)?;
        self.request(msg::READ, &[path.as_bytes(), b"\0"], buf)
    }

    /// Reads a UTF-8 value into `buf`.
    fn read_str<'b>(&mut self, path: &str, buf: &'b mut [u8]) -> Result<&'b str> {
        let n = self.read(path, buf).map_err(|e| missing(e, path))?;
        let buf: &'b [u8] = buf;
        parse::str_value(path, buf.get(..n).unwrap_or_default())
    }

    /// Reads an unsigned decimal.
    fn read_u64(&mut self, path: &str) -> Result<u64> {
        let mut buf = [0u8; 24];
        let n = read_small(self, path, &mut buf)?;
        parse::u64_value(path, buf.get(..n).unwrap_or_default())
    }

    /// Reads an unsigned decimal that fits 32 bits.
    fn read_u32(&mut self, path: &str) -> Result<u32> {
        let mut buf = [0u8; 24];
        let n = read_small(self, path, &mut buf)?;
        parse::u32_value(path, buf.get(..n).unwrap_or_default())
    }

    /// Reads a flag: a decimal, non-zero meaning true (as Linux reads `feature-*`).
    fn read_bool(&mut self, path: &str) -> Result<bool> {
        let mut buf = [0u8; 24];
        let n = read_small(self, path, &mut buf)?;
        parse::bool_value(path, buf.get(..n).unwrap_or_default())
    }

    /// [`Store::read_u64`], with a missing node as `None`.
    fn read_u64_opt(&mut self, path: &str) -> Result<Option<u64>> {
        optional(self.read_u64(path))
    }

    /// [`Store::read_u32`], with a missing node as `None`.
    fn read_u32_opt(&mut self, path: &str) -> Result<Option<u32>> {
        optional(self.read_u32(path))
    }

    /// [`Store::read_bool`], with a missing node as `None`.
    fn read_bool_opt(&mut self, path: &str) -> Result<Option<bool>> {
        optional(self.read_bool(path))
    }

    /// Reads a XenbusState node; a missing node is [`XenbusState::Unknown`] (as Linux's
    /// `xenbus_read_driver_state`), and so is one we may no longer read (`EACCES`):
    /// xenstored answers that for a node under a removed directory whose nearest
    /// remaining parent is not ours, so a backend whose whole directory was removed
    /// reads as gone, not as an error that would leave the device connected.
    fn read_state(&mut self, path: &str) -> Result<XenbusState> {
        let mut buf = [0u8; 24];
        match read_small(self, path, &mut buf) {
            Ok(n) => parse::state_value(path, buf.get(..n).unwrap_or_default()),
            Err(Error::MissingKey(_)) | Err(Error::Xenstore(ErrnoName::Eacces)) => {
                Ok(XenbusState::Unknown)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads `dir/key` for each of `keys` in one round trip (the requests go out
    /// back to back; xenstored answers them in order): `each(index, value)` gets
    /// each value, or its error (a missing node as
    /// `Err(Error::Xenstore(ENOENT))`); the first error `each` returns is returned
    /// once every reply is in. No path is built in memory.
    fn read_keys(&mut self, dir: &str, keys: &[&str], each: &mut ReplySink<'_>) -> Result<()> {
        let (xs, tx) = self.client();
        xs.read_keys_in(tx, dir, keys, each)
    }

    /// Writes `dir/key = value` for each of `nodes` in one round trip (as
    /// [`Store::read_keys`]); the first refusal is returned once every reply is in.
    fn write_keys(&mut self, dir: &str, nodes: &[(&str, &[u8])]) -> Result<()> {
        let (xs, tx) = self.client();
        xs.write_keys_in(tx, dir, nodes)
    }

    /// [`Store::write_keys`] of decimal values (at most 16 nodes).
    fn write_u32_keys(&mut self, dir: &str, nodes: &[(&str, u32)]) -> Result<()> {
        let (xs, tx) = self.client();
        xs.write_u32_keys_in(tx, dir, nodes)
    }

    /// Writes (creating the node and its parents if needed).
    fn write(&mut self, path: &str, value: &[u8]) -> Result<()> {
        check_path(path, false)?;
        let (xs, tx) = self.client();
        xs.ack(tx, msg::WRITE, &Parts(&[path.as_bytes(), b"\0", value]))
    }

    /// Writes a string.
    fn write_str(&mut self, path: &str, value: &str) -> Result<()> {
        self.write(path, value.as_bytes())
    }

    /// Writes a decimal.
    fn write_u64(&mut self, path: &str, value: u64) -> Result<()> {
        let mut s = heapless::String::<20>::new();
        // Cannot fail: a u64 has at most 20 digits.
        let _ = fmt::Write::write_fmt(&mut s, format_args!("{value}"));
        self.write(path, s.as_bytes())
    }

    /// Writes a decimal.
    fn write_u32(&mut self, path: &str, value: u32) -> Result<()> {
        self.write_u64(path, u64::from(value))
    }

    /// Writes a XenbusState.
    fn write_state(&mut self, path: &str, state: XenbusState) -> Result<()> {
        self.write(path, crate::state::state_str(state).as_bytes())
    }

    /// Creates a node (no error if it exists).
    fn mkdir(&mut self, path: &str) -> Result<()> {
        check_path(path, false)?;
        let (xs, tx) = self.client();
        xs.ack(tx, msg::MKDIR, &Parts(&[path.as_bytes(), b"\0"]))
    }

    /// Removes a node and everything below it.
    fn rm(&mut self, path: &str) -> Result<()> {
        check_path(path, false)?;
        let (xs, tx) = self.client();
        xs.ack(tx, msg::RM, &Parts(&[path.as_bytes(), b"\0"]))
    }

    /// Lists a node's children into `buf`.
    fn directory<'b>(&mut self, path: &str, buf: &'b mut [u8]) -> Result<DirEntries<'b>> {
        check_path(path, false)?;
        let n = self.request(msg::DIRECTORY, &[path.as_bytes(), b"\0"], buf)?;
        let buf: &'b [u8] = buf;
        DirEntries::parse(buf.get(..n).unwrap_or_default())
            .ok_or(Error::BadReply { op: msg::DIRECTORY })
    }

    /// Reads a node's permissions into `buf`.
    fn get_perms<'b>(&mut self, path: &str, buf: &'b mut [u8]) -> Result<PermList<'b>> {
        check_path(path, false)?;
        let n = self.request(msg::GET_PERMS, &[path.as_bytes(), b"\0"], buf)?;
        let buf: &'b [u8] = buf;
        PermList::parse(buf.get(..n).unwrap_or_default())
            .ok_or(Error::BadReply { op: msg::GET_PERMS })
    }

    /// Sets a node's permissions: `perms[0]` is the owner (and the access of unlisted
    /// domains), the rest per-domain access.
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<()> {
        check_path(path, false)?;
        if perms.is_empty() {
            return Err(Error::InvalidArgument("a permission list needs an owner"));
        }
        let (xs, tx) = self.client();
        xs.ack(tx, msg::SET_PERMS, &PermsPayload { path, perms })
    }
}

fn missing(e: Error, path: &str) -> Error {
    match e {
        Error::Xenstore(ErrnoName::Enoent) => Error::MissingKey(Snippet::tail(path.as_bytes())),
        e => e,
    }
}

fn read_small<S: Store + ?Sized>(s: &mut S, path: &str, buf: &mut [u8]) -> Result<usize> {
    match s.read(path, buf) {
        Ok(n) => Ok(n),
        Err(Error::BufferTooSmall { needed }) => Err(Error::Parse {
            key: Snippet::tail(path.as_bytes()),
            value: Snippet::unfetched(needed),
            kind: crate::error::ParseKind::TooLong,
        }),
        Err(e) => Err(missing(e, path)),
    }
}

fn optional<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::MissingKey(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl<P: Platform> Store for Xenstore<P> {
    type Platform = P;
    fn client(&mut self) -> (&mut Xenstore<P>, TxId) {
        (self, TxId::NONE)
    }
}

/// Operations inside one transaction (see [`Xenstore::transaction`]). Implements
/// [`Store`].
pub struct Transaction<'a, P: Platform> {
    xs: &'a mut Xenstore<P>,
    id: TxId,
}

impl<P: Platform> Transaction<'_, P> {
    /// The transaction id.
    pub fn id(&self) -> TxId {
        self.id
    }
}

impl<P: Platform> Store for Transaction<'_, P> {
    type Platform = P;
    fn client(&mut self) -> (&mut Xenstore<P>, TxId) {
        (&mut *self.xs, self.id)
    }
}
