//! The frontend side of the XenbusState handshake, shared by blkfront, netfront and
//! console frontends.
//!
//! ```text
//!  frontend (us)                          backend (dom0)
//!  start():  read backend, backend-id
//!            state = Initialising,
//!            watch <backend>/state
//!                                          state = InitWait   (features written)
//!  wait_for_backend()  ── sees InitWait
//!  (caller reads features: backend_key("feature-..."))
//!  publish(Initialised|Connected, keys)
//!      one transaction: caller's keys + state, retried on EAGAIN
//!                                          reads keys, maps rings
//!                                          state = Connected
//!  wait_connected() ── sees Connected
//!      state = Connected (if not already)
//!  ... I/O ...
//!                                          state = Closing  (or Closed)
//!  poll_backend() ── BackendEvent::Closing: fail in-flight requests, tear down
//!  closed():  state = Closed
//!  start() again to reconnect (Closed → Initialising)
//! ```
//!
//! The wait steps re-read `<backend>/state` after every watch event for their token and
//! at least once a second, so a lost event (watch-queue overflow) only delays them.

use core::time::Duration;

use hypercall::{DomId, Platform};

use crate::error::{Error, ParseKind, Result};
use crate::parse::parse_error;
use crate::state::XenbusState;
use crate::store::{Path, Store, Transaction, Xenstore, PATH_MAX};
use crate::watch::WATCH_TOKEN_MAX;

/// Longest time a wait step goes without re-reading the backend's state.
const RECHECK: Duration = Duration::from_secs(1);

/// Security.md X13: the backend's node must lie in the backend domain's own tree,
/// `/local/domain/<backend-id>/<something>` (where Xen toolstacks put it:
/// `.../backend/<type>/<frontend-id>/<devid>`). A relative path would resolve into our
/// own tree, `/` or another guest's tree would make us read and watch nodes the backend
/// does not own, and so would `.`/`..` components (xenstored does not resolve them,
/// other stores might). (`//` and over-long paths are already refused as paths.)
fn check_backend_path(path: &str, backend_id: u16) -> Result<()> {
    let mut prefix = heapless::String::<24>::new();
    let _ = core::fmt::Write::write_fmt(&mut prefix, format_args!("/local/domain/{backend_id}/"));
    match path.strip_prefix(prefix.as_str()) {
        Some(rest) if !rest.is_empty() && !rest.split('/').any(|c| c == "." || c == "..") => Ok(()),
        _ => Err(Error::BadBackendPath {
            path: crate::error::Snippet::tail(path.as_bytes()),
            backend_id,
        }),
    }
}

/// Where a [`FrontendHandshake`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created; [`FrontendHandshake::start`] not called yet.
    Idle,
    /// Backend known, our state `Initialising`, waiting for the backend's `InitWait`.
    Started,
    /// The backend is in `InitWait`: read its features, then publish.
    BackendReady,
    /// Our keys and state are written; waiting for the backend's `Connected`.
    Published,
    /// Both ends `Connected`.
    Connected,
    /// The backend went `Closing`/`Closed`: tear down, then call
    /// [`FrontendHandshake::closed`].
    BackendClosing,
    /// Our state is `Closed`; [`FrontendHandshake::start`] reconnects.
    Closed,
}

/// A change of the backend's state seen by [`FrontendHandshake::poll_backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendEvent {
    /// The backend is going away (`Closing`, `Closed`, or its state node vanished or
    /// became unreadable, e.g. its whole directory was removed: `Unknown`). Fail in-flight requests, end grants, then call
    /// [`FrontendHandshake::closed`].
    Closing(XenbusState),
    /// Any other change (e.g. `Reconfiguring`).
    Changed(XenbusState),
}

/// The frontend handshake for one device node such as `device/vbd/51712`.
#[derive(Debug)]
pub struct FrontendHandshake {
    node: Path,
    state_path: Path,
    backend: Path,
    backend_state_path: Path,
    backend_id: DomId,
    token: heapless::String<WATCH_TOKEN_MAX>,
    watching: bool,
    phase: Phase,
    our_state: XenbusState,
    backend_state: XenbusState,
    lost_seen: u64,
}

impl FrontendHandshake {
    /// A handshake with no device node yet (a `const fn`, for devices built in
    /// place): [`FrontendHandshake::start`] refuses it until it is replaced by one
    /// from [`FrontendHandshake::new`].
    pub const fn unset() -> FrontendHandshake {
        FrontendHandshake {
            node: Path::empty(),
            state_path: Path::empty(),
            backend: Path::empty(),
            backend_state_path: Path::empty(),
            backend_id: DomId(0),
            token: heapless::String::new(),
            watching: false,
            phase: Phase::Idle,
            our_state: XenbusState::Unknown,
            backend_state: XenbusState::Unknown,
            lost_seen: 0,
        }
    }

    /// A handshake for the device at `node` (relative, e.g. `device/vif/0`, or absolute).
    pub fn new(node: &str) -> Result<FrontendHandshake> {
        let mut token = heapless::String::new();
        token
            .push_str("xenbus-fe:")
            .and_then(|_| token.push_str(node))
            .map_err(|_| Error::PathTooLong { len: node.len() })?;
        Ok(FrontendHandshake {
            node: Path::new(node)?,
            state_path: Path::join(node, "state")?,
            backend: Path::new("")?,
            backend_state_path: Path::new("")?,
            backend_id: DomId(0),
            token,
            watching: false,
            phase: Phase::Idle,
            our_state: XenbusState::Unknown,
            backend_state: XenbusState::Unknown,
            lost_seen: 0,
        })
    }

    /// Makes this a fresh handshake for the device at `node` (what
    /// [`FrontendHandshake::new`] returns), in place: a device that keeps its
    /// handshake in a field, or starts from [`FrontendHandshake::unset`], never
    /// moves the four paths (about 1 KiB) through its own stack frame
    /// (docs/stack.md). On an error the handshake is left unset.
    #[inline(never)]
    pub fn reset(&mut self, node: &str) -> Result<()> {
        match FrontendHandshake::new(node) {
            Ok(hs) => {
                *self = hs;
                Ok(())
            }
            Err(e) => {
                *self = FrontendHandshake::unset();
                Err(e)
            }
        }
    }

    /// The device node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The backend's path (read by [`FrontendHandshake::start`]; empty before).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The backend's domain.
    pub fn backend_id(&self) -> DomId {
        self.backend_id
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The backend state seen last.
    pub fn backend_state(&self) -> XenbusState {
        self.backend_state
    }

    /// The watch token this handshake uses (events with it belong to it).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `<node>/<key>`.
    pub fn frontend_key(&self, key: &str) -> Result<Path> {
        Path::join(&self.node, key)
    }

    /// `<backend>/<key>`, for reading the backend's features.
    pub fn backend_key(&self, key: &str) -> Result<Path> {
        Path::join(&self.backend, key)
    }

    fn expect(&self, allowed: &[Phase]) -> Result<()> {
        if allowed.contains(&self.phase) {
            Ok(())
        } else {
            Err(Error::WrongPhase(self.phase))
        }
    }

    /// Reads `backend` and `backend-id`, sets our state to `Initialising`, and watches
    /// the backend's state. Allowed when `Idle` or `Closed` (reconnect). Returns the
    /// backend's current state.
    ///
    /// On a reconnect, a backend still `Closing` from the last connection is first
    /// waited for (up to the client's timeout, [`Error::Timeout`]) until it leaves
    /// `Closing`: backends (Linux netback/blkback, shim-hv's) restart only from
    /// `Closed`, so an `Initialising` they see while still closing is lost.
    pub fn start<P: Platform>(&mut self, xs: &mut Xenstore<P>) -> Result<XenbusState> {
        if self.node.as_str().is_empty() {
            return Err(Error::InvalidArgument("handshake has no device node"));
        }
        self.expect(&[Phase::Idle, Phase::Closed])?;
        let reconnecting = self.phase == Phase::Closed;
        self.unwatch(xs)?;
        let mut buf = [0u8; PATH_MAX];
        let key = self.frontend_key("backend")?;
        let backend = match xs.read_str(&key, &mut buf) {
            Ok(s) => s,
            Err(Error::BufferTooSmall { needed }) => {
                return Err(Error::PathTooLong { len: needed })
            }
            Err(e) => return Err(e),
        };
        if backend.is_empty() {
            return Err(parse_error(&key, b"", ParseKind::Empty));
        }
        let backend = Path::new(backend)?;
        let key = self.frontend_key("backend-id")?;
        let id = xs.read_u32(&key)?;
        let id = u16::try_from(id).map_err(|_| {
            let mut s = heapless::String::<10>::new();
            let _ = core::fmt::Write::write_fmt(&mut s, format_args!("{id}"));
            parse_error(&key, s.as_bytes(), ParseKind::OutOfRange)
        })?;
        check_backend_path(&backend, id)?;
        self.backend_state_path = Path::join(&backend, "state")?;
        self.backend = backend;
        self.backend_id = DomId(id);
        if reconnecting {
            self.wait_backend_not_closing(xs)?;
        }
        xs.write_state(&self.state_path, XenbusState::Initialising)?;
        self.our_state = XenbusState::Initialising;
        self.lost_seen = xs.lost_watch_events();
        xs.watch(&self.backend_state_path, &self.token)?;
        self.watching = true;
        self.phase = Phase::Started;
        self.backend_state = xs.read_state(&self.backend_state_path)?;
        Ok(self.backend_state)
    }

    /// Waits (up to `timeout`) for the backend's `InitWait` (the point where its
    /// features are written and it is ready for our keys; writing them earlier races
    /// the backend and fails with `EACCES` on real Xen). Fails with
    /// [`Error::BackendClosed`] if the backend goes `Closing`/`Closed` after it was
    /// seen alive; a backend still `Closing`/`Closed` from an earlier connection (a
    /// reconnect right after [`FrontendHandshake::closed`]: it has not yet reacted to
    /// our `Initialising`) is waited for, as it comes back to `InitWait`.
    pub fn wait_for_backend<P: Platform>(
        &mut self,
        xs: &mut Xenstore<P>,
        timeout: Duration,
    ) -> Result<()> {
        self.expect(&[Phase::Started, Phase::BackendReady])?;
        self.wait_backend(xs, timeout, true, |s| s == XenbusState::InitWait)?;
        self.phase = Phase::BackendReady;
        Ok(())
    }

    /// Writes the caller's keys and our `state` (`Initialised`, or `Connected` for
    /// frontends that need no answer first, like netfront) in one transaction, retried
    /// on `EAGAIN`. `keys` gets the transaction and the device node; it may run more
    /// than once.
    pub fn publish<P, F>(
        &mut self,
        xs: &mut Xenstore<P>,
        state: XenbusState,
        mut keys: F,
    ) -> Result<()>
    where
        P: Platform,
        F: FnMut(&mut Transaction<'_, P>, &str) -> Result<()>,
    {
        self.expect(&[Phase::BackendReady])?;
        if !matches!(state, XenbusState::Initialised | XenbusState::Connected) {
            return Err(Error::InvalidArgument(
                "publish state must be Initialised or Connected",
            ));
        }
        let node = &self.node;
        let state_path = &self.state_path;
        xs.transaction(|tx| {
            keys(tx, node)?;
            tx.write_state(state_path, state)
        })?;
        self.our_state = state;
        self.phase = Phase::Published;
        Ok(())
    }

    /// Waits (up to `timeout`) for the backend's `Connected`, then sets our state to
    /// `Connected` if it is not already.
    pub fn wait_connected<P: Platform>(
        &mut self,
        xs: &mut Xenstore<P>,
        timeout: Duration,
    ) -> Result<()> {
        self.expect(&[Phase::Published])?;
        self.wait_backend(xs, timeout, false, |s| s == XenbusState::Connected)?;
        if self.our_state != XenbusState::Connected {
            xs.write_state(&self.state_path, XenbusState::Connected)?;
            self.our_state = XenbusState::Connected;
        }
        self.phase = Phase::Connected;
        Ok(())
    }

    /// Checks (without waiting) whether the backend's state changed, from queued watch
    /// events for this handshake (or lost events). On `Closing`/`Closed`/vanished the
    /// phase becomes [`Phase::BackendClosing`]. That is reported once: further moves
    /// among `Closing`/`Closed`/vanished (a backend toggling them, docs/hostile-input.md X12)
    /// report nothing until [`FrontendHandshake::closed`], so the caller tears down
    /// exactly once.
    pub fn poll_backend<P: Platform>(
        &mut self,
        xs: &mut Xenstore<P>,
    ) -> Result<Option<BackendEvent>> {
        if !self.watching {
            return Ok(None);
        }
        let mut seen = xs.drain_watch_events_for(&self.token)?;
        let lost = xs.lost_watch_events();
        if lost != self.lost_seen {
            self.lost_seen = lost;
            seen = true;
        }
        if !seen {
            return Ok(None);
        }
        let st = xs.read_state(&self.backend_state_path)?;
        if st == self.backend_state {
            return Ok(None);
        }
        self.backend_state = st;
        if matches!(
            st,
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
        ) {
            if self.phase == Phase::BackendClosing {
                return Ok(None);
            }
            if !matches!(self.phase, Phase::Idle | Phase::Closed) {
                self.phase = Phase::BackendClosing;
            }
            return Ok(Some(BackendEvent::Closing(st)));
        }
        Ok(Some(BackendEvent::Changed(st)))
    }

    /// After the device is torn down: sets our state to `Closed` and stops watching.
    /// [`FrontendHandshake::start`] may follow to reconnect.
    pub fn closed<P: Platform>(&mut self, xs: &mut Xenstore<P>) -> Result<()> {
        xs.write_state(&self.state_path, XenbusState::Closed)?;
        self.our_state = XenbusState::Closed;
        self.unwatch(xs)?;
        self.phase = Phase::Closed;
        Ok(())
    }

    /// Orderly close started by us: state `Closing`, wait (up to `timeout`) for the
    /// backend to reach `Closing`/`Closed` (or vanish), then `Closed`.
    pub fn close<P: Platform>(&mut self, xs: &mut Xenstore<P>, timeout: Duration) -> Result<()> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        if self.watching {
            xs.write_state(&self.state_path, XenbusState::Closing)?;
            self.our_state = XenbusState::Closing;
            self.wait_backend(xs, timeout, false, |s| {
                matches!(
                    s,
                    XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
                )
            })?;
        }
        self.closed(xs)
    }

    fn unwatch<P: Platform>(&mut self, xs: &mut Xenstore<P>) -> Result<()> {
        if self.watching {
            match xs.unwatch(&self.backend_state_path, &self.token) {
                Ok(()) | Err(Error::Xenstore(crate::ErrnoName::Enoent)) => {}
                Err(e) => return Err(e),
            }
            self.watching = false;
            // Drop events of the old watch so a reconnect starts clean (any left over
            // in a flood only cause a spurious re-read later).
            xs.drain_watch_events_for(&self.token)?;
        }
        Ok(())
    }

    /// Polls (through `Platform::wait`, bounded by the client's timeout) until the
    /// backend's state is not `Closing`.
    fn wait_backend_not_closing<P: Platform>(&mut self, xs: &mut Xenstore<P>) -> Result<()> {
        let timeout_ns = u64::try_from(xs.timeout().as_nanos()).unwrap_or(u64::MAX);
        let deadline = xs.platform().now_ns().saturating_add(timeout_ns);
        loop {
            let st = xs.read_state(&self.backend_state_path)?;
            self.backend_state = st;
            if st != XenbusState::Closing {
                return Ok(());
            }
            if xs.platform().now_ns() >= deadline {
                return Err(Error::Timeout);
            }
            xs.platform().wait();
        }
    }

    /// Waits until `done(state)`. `Closing`/`Closed` fail the wait, except while
    /// `stale_close_ok` and the backend has not yet been seen in another state (it is
    /// still finishing an earlier connection).
    fn wait_backend<P: Platform>(
        &mut self,
        xs: &mut Xenstore<P>,
        timeout: Duration,
        stale_close_ok: bool,
        done: impl Fn(XenbusState) -> bool,
    ) -> Result<XenbusState> {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let deadline = xs.platform().now_ns().saturating_add(timeout_ns);
        let mut seen_alive = false;
        loop {
            xs.drain_watch_events_for(&self.token)?;
            self.lost_seen = xs.lost_watch_events();
            let st = xs.read_state(&self.backend_state_path)?;
            self.backend_state = st;
            if done(st) {
                return Ok(st);
            }
            let closing = crate::state::is_closing(st);
            if !closing && st != XenbusState::Unknown {
                seen_alive = true;
            }
            if closing && (seen_alive || !stale_close_ok) {
                self.phase = Phase::BackendClosing;
                return Err(Error::BackendClosed(st));
            }
            let now = xs.platform().now_ns();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            let slice = Duration::from_nanos(deadline - now).min(RECHECK);
            match xs.wait_watch_event_for(&self.token, slice) {
                Ok(_) | Err(Error::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
