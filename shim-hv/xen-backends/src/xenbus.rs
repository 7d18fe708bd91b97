//! The backend side of xenbus, shared by shim-hv's device backends (vbd, vif, console).
//!
//! ```text
//!  toolstack ── XenbusBackend::create(spec) ──▶ nodes written the way libxl does:
//!     /local/domain/0/backend/<kind>/<fe>/<devid>/{frontend,frontend-id,online,state,...}
//!         perms: [n0, r<fe>]     (dom0 owns; the frontend may read)
//!     /local/domain/<fe>/device/<kind>/<devid>/{backend,backend-id,state,...}
//!         perms: [n<fe>, r0]     (the guest owns; dom0 may read)
//!         read-only keys (a console's name, tty, ...): [n0, r<fe>]
//!
//!  backend control state machine (on its kind's control loop, spawn_control):
//!     switch_state(InitWait) ─ wait_frontend() ─ Initialised/Connected ─▶
//!        read_ring_refs() · map_ring() · bind_evtchn() ─ switch_state(Connected)
//!     ... frontend Closing/Closed ─▶ drop the ring and port ─ switch_state(Closing/Closed)
//!     ... frontend Initialising again (from Closed, or a frontend that restarts
//!         while we are Connected/Closing) ─▶ drop the ring and port ─ InitWait
//!     (the decision for each frontend state is [`reaction`], shared by all backends)
//!  destroy(): removes both directories.
//! ```
//!
//! Everything the frontend wrote is untrusted: numbers are parsed strictly (decimal,
//! no sign, no spaces, in range), ring orders are capped by the caller's maximum, grant
//! mappings go through the model's checks ([`Hypervisor::grant_map`]), and a
//! multi-page ring is only accepted when its pages are consecutive guest frames (our
//! and Linux's frontends allocate them that way; other layouts are refused, never
//! guessed). A bad value fails this device only.
//!
//! Thread safety: a [`XenbusBackend`] is used by one control loop (or thread) at
//! a time; the [`MappedRing`] and [`BoundPort`] it hands out are `Send` and may
//! move to the I/O path.
//!
//! Control loops: [`spawn_control`] runs each device's state machine on one
//! thread per device kind (`xb-ctl-vbd`, `xb-ctl-vif`, `xb-ctl-console`), turned
//! on the device's watch events, wake-ups and deadlines, so control threads do
//! not grow with devices (docs/backend-threads.md).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hypercall::abi::xenbus::XenbusState;
use hypercall::{DomId, GrantRef, Port, SharedMem, SharedRegion};

use xen_model::mem::GuestRegion;
use xen_model::{Dom0Handler, EvtchnError, GrantError, GrantMapping, Hypervisor};
use xenstored::{Access, Errno, LocalClient, Perm, TxId};

/// Bound on retries of a transaction that keeps conflicting (`EAGAIN`).
const TX_TRIES: usize = 16;
/// Largest ring we ever map: order 4 (16 pages), as Linux's `XENBUS_MAX_RING_GRANT_ORDER`.
pub const MAX_RING_ORDER: u32 = 4;

/// Why a backend xenbus operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// xenstored refused or failed.
    #[error("{0}")]
    Store(xenstored::Error),
    /// A transaction kept conflicting.
    #[error("xenstore transaction kept conflicting")]
    TooManyRetries,
    /// A key the frontend must write is missing.
    #[error("frontend did not write {0}")]
    Missing(String),
    /// A key the frontend wrote does not parse or is out of range.
    #[error("bad value {value:?} in {key}")]
    BadValue {
        /// The key (full path).
        key: String,
        /// The value (at most 64 bytes of it).
        value: String,
    },
    /// A grant could not be mapped.
    #[error("grant mapping: {0:?}")]
    Grant(GrantError),
    /// A multi-page ring whose pages are not consecutive guest frames.
    #[error("ring pages are not consecutive guest frames")]
    RingNotContiguous,
    /// An event channel could not be bound.
    #[error("event channel: {0}")]
    Evtchn(EvtchnError),
    /// The frontend domain is gone.
    #[error("domain {} is gone", .0 .0)]
    NoDomain(DomId),
    /// Waiting for the frontend timed out.
    #[error("timed out waiting for the frontend")]
    Timeout,
}

impl From<xenstored::Error> for Error {
    fn from(e: xenstored::Error) -> Self {
        Error::Store(e)
    }
}

impl From<GrantError> for Error {
    fn from(e: GrantError) -> Self {
        Error::Grant(e)
    }
}

impl From<EvtchnError> for Error {
    fn from(e: EvtchnError) -> Self {
        Error::Evtchn(e)
    }
}

/// What to create for one device.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// Device class directory name: `vbd`, `vif`, `console`.
    pub kind: String,
    /// The guest.
    pub frontend: DomId,
    /// Device id (`vbd`: the virtual device number; `vif`: 0, 1, ...).
    pub devid: u32,
    /// Extra backend keys (`params`, `mode`, `type`, `dev`, `mac`, ...).
    pub backend_keys: Vec<(String, String)>,
    /// Extra frontend keys (`virtual-device`, `device-type`, `mac`, ...).
    pub frontend_keys: Vec<(String, String)>,
    /// Frontend keys the guest may read but not change (libxl's `ro_front`: a
    /// console's `name`, `limit`, `type`, `output`, `tty`): perms `[n0, r<fe>]`.
    pub frontend_ro_keys: Vec<(String, String)>,
}

impl DeviceSpec {
    /// A spec with no extra keys.
    pub fn new(kind: &str, frontend: DomId, devid: u32) -> Self {
        DeviceSpec {
            kind: kind.to_string(),
            frontend,
            devid,
            backend_keys: Vec::new(),
            frontend_keys: Vec::new(),
            frontend_ro_keys: Vec::new(),
        }
    }

    /// Adds a backend key.
    pub fn backend(mut self, key: &str, value: impl ToString) -> Self {
        self.backend_keys.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a frontend key.
    pub fn frontend(mut self, key: &str, value: impl ToString) -> Self {
        self.frontend_keys
            .push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a frontend key the guest may only read.
    pub fn frontend_ro(mut self, key: &str, value: impl ToString) -> Self {
        self.frontend_ro_keys
            .push((key.to_string(), value.to_string()));
        self
    }
}

/// One device's backend presence in xenstore, acting as dom0.
pub struct XenbusBackend {
    hv: Arc<Hypervisor>,
    xs: LocalClient,
    frontend: DomId,
    devid: u32,
    kind: String,
    be_path: String,
    fe_path: String,
    token: String,
    state: XenbusState,
    watching: bool,
    /// Where the watch events (and [`ControlWaker`] wake-ups) arrive.
    mailbox: Arc<Mailbox>,
}

/// Most events a backend keeps queued: only "something changed" matters (the state
/// is re-read), so older ones are dropped beyond this.
const MAILBOX_EVENTS: usize = 16;

/// Watch events for one backend's control state machine, and its wake-ups.
#[derive(Default)]
struct Mailbox {
    inner: Mutex<MailboxInner>,
    cv: Condvar,
    /// Set for a device on a control loop ([`spawn_control`]): tells the loop.
    hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

#[derive(Default)]
struct MailboxInner {
    events: VecDeque<xenstored::WatchEvent>,
    woken: bool,
}

impl Mailbox {
    fn push(&self, ev: xenstored::WatchEvent) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.events.len() >= MAILBOX_EVENTS {
            m.events.pop_front();
        }
        m.events.push_back(ev);
        drop(m);
        self.cv.notify_all();
        self.call_hook();
    }

    fn wake(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).woken = true;
        self.cv.notify_all();
        self.call_hook();
    }

    fn call_hook(&self) {
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(h) = hook {
            // A device on a control loop re-reads the state on each turn: the
            // queued events are not needed.
            self.inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .events
                .clear();
            h();
        }
    }

    /// Waits until an event or a wake-up (taking both) or `deadline`.
    fn wait(&self, deadline: Instant) -> (Vec<xenstored::WatchEvent>, bool) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !m.events.is_empty() || m.woken {
                let woken = std::mem::replace(&mut m.woken, false);
                return (m.events.drain(..).collect(), woken);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (Vec::new(), false);
            }
            m = self
                .cv
                .wait_timeout(m, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// Wakes a backend's control state machine ([`spawn_control`], [`run_control`]) at once: for a [`Device`]
/// whose stop flag or data-path failure has just changed (see
/// [`Device::set_control_waker`]).
#[derive(Clone)]
pub struct ControlWaker(Arc<Mailbox>);

impl ControlWaker {
    /// Wakes the control state machine (it then re-checks stop, failures and the
    /// frontend).
    pub fn wake(&self) {
        self.0.wake();
    }
}

impl fmt::Debug for ControlWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlWaker")
    }
}

impl fmt::Debug for XenbusBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XenbusBackend")
            .field("backend", &self.be_path)
            .field("frontend", &self.fe_path)
            .field("state", &self.state)
            .finish()
    }
}

/// `/local/domain/0/backend/<kind>/<fe>/<devid>`.
pub fn backend_path(kind: &str, frontend: DomId, devid: u32) -> String {
    format!("/local/domain/0/backend/{kind}/{}/{devid}", frontend.0)
}

/// `/local/domain/<fe>/device/<kind>/<devid>`.
pub fn frontend_path(kind: &str, frontend: DomId, devid: u32) -> String {
    format!("/local/domain/{}/device/{kind}/{devid}", frontend.0)
}

/// Runs `f` in a transaction, retrying on `EAGAIN` (bounded).
pub fn with_transaction<T>(
    xs: &LocalClient,
    mut f: impl FnMut(TxId) -> Result<T, Error>,
) -> Result<T, Error> {
    for _ in 0..TX_TRIES {
        let tx = xs.transaction_start()?;
        let v = match f(tx) {
            Ok(v) => v,
            Err(e) => {
                let _ = xs.transaction_end(tx, false);
                return Err(e);
            }
        };
        match xs.transaction_end(tx, true) {
            Ok(()) => return Ok(v),
            Err(e) if e.errno() == Some(Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::TooManyRetries)
}

/// Parses a frontend-written unsigned decimal strictly.
pub fn parse_u64(key: &str, raw: &[u8]) -> Result<u64, Error> {
    let bad = || Error::BadValue {
        key: key.to_string(),
        value: String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned(),
    };
    let s = std::str::from_utf8(raw).map_err(|_| bad())?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse::<u64>().map_err(|_| bad())
}

fn state_of(raw: &[u8]) -> XenbusState {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim_end_matches('\0').parse::<u32>().ok())
        .and_then(|v| XenbusState::try_from(v).ok())
        .unwrap_or(XenbusState::Unknown)
}

/// What a backend's control state machine does when it sees the frontend in some state:
/// the decision of Linux's backends' `frontend_changed` (xen-netback walks to the
/// target state through `set_backend_state`, disconnecting on the way), shared by
/// shim-hv's backends. See [`reaction`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Nothing to do.
    Nothing,
    /// Read the frontend's keys, map its rings, bind its ports; then switch to
    /// `Connected` (or to `Closing` with an `error` node if that fails).
    Connect,
    /// Drop the connection (if any), then switch to this state (`Closing`/`Closed`).
    Disconnect(XenbusState),
    /// The frontend (re)starts: drop the connection (if any), clear the `error` node
    /// and switch to `InitWait`, offering again.
    Restart,
}

/// The [`Reaction`] of a backend in state `backend` (with a live connection if
/// `connected`) to the frontend's state `fe`.
///
/// A frontend back at `Initialising` restarts the device from `Closed` (a reconnect
/// after a clean close) and also from `Connected` or `Closing`: a frontend that
/// restarts without closing (a guest kernel reboot or kexec, Linux's reconnect) would
/// otherwise wait forever for an `InitWait` that never comes.
pub fn reaction(backend: XenbusState, connected: bool, fe: XenbusState) -> Reaction {
    use XenbusState as S;
    match fe {
        S::Initialised | S::Connected if !connected && backend == S::InitWait => Reaction::Connect,
        S::Closing if backend != S::Closing => Reaction::Disconnect(S::Closing),
        S::Closed | S::Unknown if !matches!(backend, S::Closed | S::InitWait) => {
            Reaction::Disconnect(S::Closed)
        }
        S::Initialising if matches!(backend, S::Closed | S::Closing | S::Connected) => {
            Reaction::Restart
        }
        _ => Reaction::Nothing,
    }
}

/// What a backend device does when [`run_control`] says so: the device-specific
/// half of a backend's control state machine.
pub trait Device {
    /// Whether the device is connected (rings mapped, I/O running).
    fn connected(&self) -> bool;
    /// Reads the frontend's keys, maps its rings, binds its ports and starts I/O.
    /// An error is written to the backend's `error` node and the backend goes
    /// Closing (after [`Device::disconnect`], so nothing half-made stays).
    fn connect(&self, xbe: &XenbusBackend) -> Result<(), String>;
    /// Called once the backend switched to Connected after a successful connect.
    fn on_connected(&self, _xbe: &XenbusBackend) {}
    /// Stops I/O and unmaps everything of the connection; harmless when not
    /// connected.
    fn disconnect(&self, xbe: &XenbusBackend);
    /// A fatal data-path error since the last call (the frontend broke the
    /// protocol), to report through `error` and Closing.
    fn take_failure(&self) -> Option<String> {
        None
    }
    /// Offers the device a waker for its control state machine. A device that keeps it
    /// and calls [`ControlWaker::wake`] whenever its stop flag becomes true or a
    /// failure is recorded returns `true`: its state machine then sleeps until an
    /// event (tickless). The default (`false`) keeps a short polling period.
    fn set_control_waker(&self, waker: ControlWaker) -> bool {
        let _ = waker;
        false
    }
}

/// Xen's special watch path that fires when a domain goes away.
const RELEASE_DOMAIN: &str = "@releaseDomain";

/// How long a backend keeps its nodes after its frontend's domain went away.
const GONE_GRACE: Duration = Duration::from_millis(200);
/// How often the control loop looks at the frontend when nothing changes, for a
/// device without a [`ControlWaker`].
const CONTROL_TICK: Duration = Duration::from_millis(50);
/// The same for a device with a waker: a guard only (frontend changes, the
/// frontend's domain going away, stop and failures all wake the loop).
const CONTROL_IDLE: Duration = Duration::from_secs(60);

/// A backend's control state machine on the calling thread: follows the
/// frontend's `state` ([`reaction`]), connecting, disconnecting and restarting
/// `dev`, and reports data-path failures, until `stop()` or until the frontend's
/// domain has been gone for a moment; then disconnects and removes the device's
/// nodes. [`spawn_control`] runs the same machine on its kind's shared control
/// loop instead of a thread of its own.
pub fn run_control(
    hv: &Hypervisor,
    frontend: DomId,
    xbe: XenbusBackend,
    dev: &dyn Device,
    stop: &dyn Fn() -> bool,
) {
    let _ = (hv, frontend);
    let mailbox = xbe.mailbox.clone();
    let mut task = ControlTask::new(xbe, dev);
    loop {
        task.refresh();
        let Some(wait) = task.turn(dev, stop) else {
            break;
        };
        let _ = mailbox.wait(Instant::now() + wait);
    }
    task.finish(dev);
}

/// One device's control state between turns (see [`run_control`]).
struct ControlTask {
    xbe: XenbusBackend,
    fe_state: XenbusState,
    gone_since: Option<Instant>,
    tick: Duration,
}

impl ControlTask {
    fn new(xbe: XenbusBackend, dev: &dyn Device) -> Self {
        let tick = if dev.set_control_waker(xbe.waker()) {
            CONTROL_IDLE
        } else {
            CONTROL_TICK
        };
        ControlTask {
            xbe,
            fe_state: XenbusState::Unknown,
            gone_since: None,
            tick,
        }
    }

    /// Re-reads the frontend's state (events are coalesced: only the current
    /// value counts; a failed read keeps the last one).
    fn refresh(&mut self) {
        if let Ok(s) = self.xbe.frontend_state() {
            self.fe_state = s;
        }
    }

    /// Reacts once to the frontend's state as last read. `Some(wait)`: turn again
    /// after an event or `wait`; `None`: done (stopped, or the frontend's domain
    /// has been gone long enough), [`ControlTask::finish`] next.
    fn turn(&mut self, dev: &dyn Device, stop: &dyn Fn() -> bool) -> Option<Duration> {
        if stop() {
            return None;
        }
        let xbe = &mut self.xbe;
        match reaction(xbe.state(), dev.connected(), self.fe_state) {
            Reaction::Connect => match dev.connect(xbe) {
                Ok(()) => {
                    let _ = xbe.switch_state(XenbusState::Connected);
                    dev.on_connected(xbe);
                }
                Err(why) => fail(xbe, dev, &why),
            },
            Reaction::Disconnect(to) => {
                dev.disconnect(xbe);
                let _ = xbe.switch_state(to);
            }
            Reaction::Restart => {
                // The frontend (re)starts, maybe without closing first (reboot,
                // kexec): drop any connection and offer again.
                dev.disconnect(xbe);
                let _ = xbe.write_key("error", "");
                let _ = xbe.switch_state(XenbusState::InitWait);
            }
            Reaction::Nothing => {}
        }
        if let Some(why) = dev.take_failure() {
            eprintln!("{}: frontend failed: {why}", xbe.backend_path());
            fail(xbe, dev, &why);
        }
        if xbe.hv.domain(xbe.frontend).is_none() {
            // The guest is gone: stop once its nodes are gone too.
            let t = *self.gone_since.get_or_insert_with(Instant::now);
            if t.elapsed() > GONE_GRACE {
                return None;
            }
        }
        Some(match self.gone_since {
            Some(t) => GONE_GRACE.saturating_sub(t.elapsed()) + Duration::from_millis(1),
            None => self.tick,
        })
    }

    /// Disconnects the device and removes its nodes.
    fn finish(self, dev: &dyn Device) {
        dev.disconnect(&self.xbe);
        let _ = self.xbe.destroy();
    }
}

/// The stop condition of a device on a control loop.
pub type StopFn = Box<dyn Fn() -> bool + Send>;

/// Runs a device's control state machine (as [`run_control`] does) on the shared
/// control loop of its kind (`vbd`, `vif`, `console`: one thread each, named
/// `xb-ctl-<kind>`, started with the kind's first device and ended with its
/// last), so control threads do not grow with devices.
///
/// The loop turns a device's machine when the device's mailbox gets a watch event
/// (its frontend's `state`, `@releaseDomain`) or a [`ControlWaker::wake`], or when
/// its deadline passes, one device after another. A turn's work is bounded by the
/// device (xenstore reads and writes, mapping rings, starting or stopping its
/// I/O); a device must not wait in it for anything slow (netback runs its vif
/// scripts on a thread of their own). A device whose turn panics is finished
/// (disconnected, nodes removed) without taking the loop down.
///
/// [`ControlHandle::join`] waits until the device has finished (after `stop()`
/// turned true and its waker woke the loop, or after its frontend's domain went
/// away).
pub fn spawn_control(
    xbe: XenbusBackend,
    dev: Box<dyn Device + Send>,
    stop: StopFn,
) -> std::io::Result<ControlHandle> {
    let lp = control_loop(xbe.kind());
    let mailbox = xbe.mailbox.clone();
    let done = Arc::new(Done::default());
    let task = ControlTask::new(xbe, &*dev);
    let entry = LoopEntry {
        task,
        dev,
        stop,
        done: done.clone(),
        deadline: Instant::now(),
    };
    let failed = {
        let mut g = lock(&lp.inner);
        let id = g.next_id;
        g.next_id += 1;
        let hook_lp = Arc::downgrade(&lp);
        *lock(&mailbox.hook) = Some(Arc::new(move || {
            if let Some(lp) = hook_lp.upgrade() {
                lp.ready(id);
            }
        }));
        g.incoming.push((id, entry));
        if g.running {
            None
        } else {
            let lp2 = lp.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("xb-ctl-{}", lp.kind))
                .spawn(move || lp2.run());
            match spawned {
                Ok(t) => {
                    g.running = true;
                    g.thread = Some(t.thread().id());
                    None
                }
                Err(e) => Some((e, g.incoming.pop())),
            }
        }
    };
    if let Some((e, entry)) = failed {
        if let Some((_, entry)) = entry {
            entry.task.finish(&*entry.dev);
        }
        return Err(e);
    }
    lp.cv.notify_one();
    Ok(ControlHandle { lp, done })
}

/// A device on its kind's control loop ([`spawn_control`]).
pub struct ControlHandle {
    lp: Arc<ControlLoop>,
    done: Arc<Done>,
}

impl fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlHandle")
            .field("kind", &self.lp.kind)
            .finish_non_exhaustive()
    }
}

impl ControlHandle {
    /// Waits until the device has finished: disconnected, its nodes removed. The
    /// caller makes its `stop()` true and wakes it first. Called on the control
    /// loop's own thread (a device callback ending another device of its kind),
    /// it does not wait: the device finishes on its next turn.
    pub fn join(self) {
        if lock(&self.lp.inner).thread == Some(std::thread::current().id()) {
            return;
        }
        let mut g = lock(&self.done.m);
        while !*g {
            g = self.done.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[derive(Default)]
struct Done {
    m: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn set(&self) {
        *lock(&self.m) = true;
        self.cv.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control loops, by device kind.
static LOOPS: Mutex<BTreeMap<String, Arc<ControlLoop>>> = Mutex::new(BTreeMap::new());

fn control_loop(kind: &str) -> Arc<ControlLoop> {
    lock(&LOOPS)
        .entry(kind.to_string())
        .or_insert_with(|| {
            Arc::new(ControlLoop {
                kind: kind.to_string(),
                inner: Mutex::new(LoopInner::default()),
                cv: Condvar::new(),
            })
        })
        .clone()
}

/// One kind's control loop: the devices' machines, turned on their events and
/// deadlines by one thread.
struct ControlLoop {
    kind: String,
    inner: Mutex<LoopInner>,
    cv: Condvar,
}

#[derive(Default)]
struct LoopInner {
    next_id: u64,
    /// Devices added since the loop last looked.
    incoming: Vec<(u64, LoopEntry)>,
    /// Devices woken since the loop last looked.
    ready: Vec<u64>,
    /// Whether the loop's thread runs (it ends when it has no device left).
    running: bool,
    thread: Option<std::thread::ThreadId>,
}

struct LoopEntry {
    task: ControlTask,
    dev: Box<dyn Device + Send>,
    stop: StopFn,
    done: Arc<Done>,
    deadline: Instant,
}

impl ControlLoop {
    fn ready(&self, id: u64) {
        lock(&self.inner).ready.push(id);
        self.cv.notify_one();
    }

    /// The loop's thread. Never holds `inner` while turning a device (a device's
    /// mailbox hook takes it, from xenstored's watch delivery).
    fn run(&self) {
        let mut devices: BTreeMap<u64, LoopEntry> = BTreeMap::new();
        loop {
            let (incoming, ready) = {
                let mut g = lock(&self.inner);
                loop {
                    if !g.incoming.is_empty() || !g.ready.is_empty() {
                        break;
                    }
                    let now = Instant::now();
                    match devices.values().map(|e| e.deadline).min() {
                        Some(d) if d <= now => break,
                        Some(d) => {
                            g = self
                                .cv
                                .wait_timeout(g, d - now)
                                .map(|(g, _)| g)
                                .unwrap_or_else(|e| e.into_inner().0);
                        }
                        None => {
                            // No device left: the thread ends (the next device
                            // starts another).
                            g.running = false;
                            g.thread = None;
                            return;
                        }
                    }
                }
                (
                    std::mem::take(&mut g.incoming),
                    std::mem::take(&mut g.ready),
                )
            };
            devices.extend(incoming);
            let now = Instant::now();
            for id in ready {
                if let Some(e) = devices.get_mut(&id) {
                    e.deadline = now;
                }
            }
            let due: Vec<u64> = devices
                .iter()
                .filter(|(_, e)| e.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                let Some(e) = devices.get_mut(&id) else {
                    continue;
                };
                let turned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    e.task.refresh();
                    e.task.turn(&*e.dev, &*e.stop)
                }));
                match turned {
                    Ok(Some(wait)) => e.deadline = Instant::now() + wait,
                    Ok(None) | Err(_) => {
                        if let Some(e) = devices.remove(&id) {
                            let LoopEntry {
                                task, dev, done, ..
                            } = e;
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                task.finish(&*dev)
                            }));
                            done.set();
                        }
                    }
                }
            }
        }
    }
}

/// Disconnects `dev`, says `why` in the backend's `error` node and goes Closing.
fn fail(xbe: &mut XenbusBackend, dev: &dyn Device, why: &str) {
    dev.disconnect(xbe);
    let _ = xbe.write_key("error", why);
    let _ = xbe.switch_state(XenbusState::Closing);
}

impl XenbusBackend {
    /// Creates the device's backend and frontend directories (one transaction) with
    /// libxl's permissions, both `state` nodes at `Initialising`, and watches the
    /// frontend's `state`. Existing directories of the same device are replaced.
    pub fn create(hv: &Arc<Hypervisor>, spec: &DeviceSpec) -> Result<Self, Error> {
        let mailbox = Arc::new(Mailbox::default());
        let mb = mailbox.clone();
        let xs = hv
            .xenstored()
            .client_with_callback(0, Arc::new(move |ev| mb.push(ev)));
        let fe = spec.frontend;
        let be_path = backend_path(&spec.kind, fe, spec.devid);
        let fe_path = frontend_path(&spec.kind, fe, spec.devid);
        let be_perms = [Perm::new(0, Access::None), Perm::new(fe.0, Access::Read)];
        let fe_perms = [Perm::new(fe.0, Access::None), Perm::new(0, Access::Read)];
        let init = (XenbusState::Initialising as u32).to_string();
        with_transaction(&xs, |tx| {
            let _ = xs.rm(tx, &be_path);
            let _ = xs.rm(tx, &fe_path);
            xs.mkdir(tx, &be_path)?;
            xs.set_perms(tx, &be_path, &be_perms)?;
            let mut be_keys: Vec<(&str, String)> = vec![
                ("frontend", fe_path.clone()),
                ("frontend-id", fe.0.to_string()),
                ("online", "1".into()),
                ("state", init.clone()),
            ];
            be_keys.extend(
                spec.backend_keys
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone())),
            );
            for (k, v) in &be_keys {
                xs.write(tx, &format!("{be_path}/{k}"), v.as_bytes())?;
            }
            xs.mkdir(tx, &fe_path)?;
            xs.set_perms(tx, &fe_path, &fe_perms)?;
            let mut fe_keys: Vec<(&str, String)> = vec![
                ("backend", be_path.clone()),
                ("backend-id", "0".into()),
                ("state", init.clone()),
            ];
            fe_keys.extend(
                spec.frontend_keys
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone())),
            );
            for (k, v) in &fe_keys {
                xs.write(tx, &format!("{fe_path}/{k}"), v.as_bytes())?;
            }
            for (k, v) in &spec.frontend_ro_keys {
                let p = format!("{fe_path}/{k}");
                xs.write(tx, &p, v.as_bytes())?;
                xs.set_perms(tx, &p, &be_perms)?;
            }
            Ok(())
        })?;
        let token = format!("be:{}:{}:{}", spec.kind, fe.0, spec.devid);
        let mut me = XenbusBackend {
            hv: hv.clone(),
            xs,
            frontend: fe,
            devid: spec.devid,
            kind: spec.kind.clone(),
            be_path,
            fe_path,
            token,
            state: XenbusState::Initialising,
            watching: false,
            mailbox,
        };
        me.xs.watch(&format!("{}/state", me.fe_path), &me.token)?;
        // The frontend's domain going away (shut down or destroyed) wakes the
        // control state machine too.
        me.xs.watch(RELEASE_DOMAIN, &me.token)?;
        me.watching = true;
        Ok(me)
    }

    /// The hypervisor.
    pub fn hypervisor(&self) -> &Arc<Hypervisor> {
        &self.hv
    }

    /// The dom0 xenstore client this backend uses.
    pub fn store(&self) -> &LocalClient {
        &self.xs
    }

    /// The frontend domain.
    pub fn frontend_id(&self) -> DomId {
        self.frontend
    }

    /// The device id.
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// The device class (`vbd`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The backend directory.
    pub fn backend_path(&self) -> &str {
        &self.be_path
    }

    /// The frontend directory.
    pub fn frontend_path(&self) -> &str {
        &self.fe_path
    }

    /// Our (backend) state, as last written.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// Writes our `state`.
    pub fn switch_state(&mut self, state: XenbusState) -> Result<(), Error> {
        self.xs.write(
            TxId::NONE,
            &format!("{}/state", self.be_path),
            (state as u32).to_string().as_bytes(),
        )?;
        self.state = state;
        Ok(())
    }

    /// Writes backend keys (`<backend>/<key>`) in one transaction.
    pub fn write_keys(&self, keys: &[(&str, String)]) -> Result<(), Error> {
        with_transaction(&self.xs, |tx| {
            for (k, v) in keys {
                self.xs
                    .write(tx, &format!("{}/{k}", self.be_path), v.as_bytes())?;
            }
            Ok(())
        })
    }

    /// Writes one backend key.
    pub fn write_key(&self, key: &str, value: &str) -> Result<(), Error> {
        self.xs.write(
            TxId::NONE,
            &format!("{}/{key}", self.be_path),
            value.as_bytes(),
        )?;
        Ok(())
    }

    /// Reads a backend key (`None` if missing).
    pub fn read_key(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        read_opt(&self.xs, &format!("{}/{key}", self.be_path))
    }

    /// Reads a frontend key (`None` if missing).
    pub fn read_frontend(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        read_opt(&self.xs, &format!("{}/{key}", self.fe_path))
    }

    /// Reads a frontend key as a strict unsigned decimal (`None` if missing).
    pub fn read_frontend_u64(&self, key: &str) -> Result<Option<u64>, Error> {
        match self.read_frontend(key)? {
            None => Ok(None),
            Some(v) => parse_u64(&format!("{}/{key}", self.fe_path), &v).map(Some),
        }
    }

    /// Reads a frontend key that must be present and fit in 32 bits.
    pub fn require_frontend_u32(&self, key: &str) -> Result<u32, Error> {
        let full = format!("{}/{key}", self.fe_path);
        let v = self
            .read_frontend_u64(key)?
            .ok_or_else(|| Error::Missing(full.clone()))?;
        u32::try_from(v).map_err(|_| Error::BadValue {
            key: full,
            value: v.to_string(),
        })
    }

    /// Reads a frontend flag (`feature-*`): missing or `0` is false, any other
    /// decimal true, anything else an error.
    pub fn read_frontend_flag(&self, key: &str) -> Result<bool, Error> {
        Ok(self.read_frontend_u64(key)?.unwrap_or(0) != 0)
    }

    /// The frontend's `state` now (`Unknown` if missing or garbage).
    pub fn frontend_state(&self) -> Result<XenbusState, Error> {
        Ok(self
            .read_frontend("state")?
            .map_or(XenbusState::Unknown, |v| state_of(&v)))
    }

    /// Waits up to `timeout` for a watch event on the frontend's state, then returns
    /// the state read (events are coalesced: only the current value counts). `Ok(None)`
    /// on timeout.
    ///
    /// A [`ControlWaker::wake`] (or `@releaseDomain`) also ends the wait, with the
    /// state read then.
    pub fn wait_frontend(&self, timeout: Duration) -> Result<Option<XenbusState>, Error> {
        let (events, woken) = self.mailbox.wait(Instant::now() + timeout);
        if woken || events.iter().any(|ev| ev.token == self.token) {
            return self.frontend_state().map(Some);
        }
        Ok(None)
    }

    /// A waker for this backend's control state machine ([`spawn_control`],
    /// [`run_control`]).
    pub fn waker(&self) -> ControlWaker {
        ControlWaker(self.mailbox.clone())
    }

    /// Reads the ring references of a (possibly multi-page) ring the Linux way:
    /// `<prefix>ring-page-order` (if present, at most `max_order`) with
    /// `<prefix>ring-ref0..N`, else a single `<prefix>ring-ref`. `prefix` is `""`
    /// or e.g. `"queue-0/"`; `ring_ref_name` lets netback use `tx-ring-ref`.
    pub fn read_ring_refs(
        &self,
        prefix: &str,
        ring_ref_name: &str,
        max_order: u32,
    ) -> Result<Vec<GrantRef>, Error> {
        let order_key = format!("{prefix}ring-page-order");
        match self.read_frontend_u64(&order_key)? {
            None => Ok(vec![GrantRef(
                self.require_frontend_u32(&format!("{prefix}{ring_ref_name}"))?,
            )]),
            Some(order) if order <= u64::from(max_order.min(MAX_RING_ORDER)) => {
                let n = 1usize << order;
                (0..n)
                    .map(|i| {
                        self.require_frontend_u32(&format!("{prefix}{ring_ref_name}{i}"))
                            .map(GrantRef)
                    })
                    .collect()
            }
            Some(order) => Err(Error::BadValue {
                key: format!("{}/{order_key}", self.fe_path),
                value: order.to_string(),
            }),
        }
    }

    /// Maps the ring pages `refs` (writable) of the frontend and returns them as one
    /// region. The pages must be consecutive guest frames.
    pub fn map_ring(&self, refs: &[GrantRef]) -> Result<MappedRing, Error> {
        map_ring(&self.hv, self.frontend, refs)
    }

    /// Binds a dom0 port to the frontend's `remote_port`; `handler` runs on each
    /// notification (and once right after binding). Closed when the result drops.
    pub fn bind_evtchn(&self, remote_port: Port, handler: Dom0Handler) -> Result<BoundPort, Error> {
        let port = self
            .hv
            .dom0_bind_interdomain(self.frontend, remote_port, handler)?;
        Ok(BoundPort {
            hv: self.hv.clone(),
            port,
        })
    }

    /// Removes both directories (the device is gone for the guest).
    pub fn destroy(mut self) -> Result<(), Error> {
        self.unwatch();
        with_transaction(&self.xs, |tx| {
            for p in [&self.be_path, &self.fe_path] {
                match self.xs.rm(tx, p) {
                    Ok(()) => {}
                    Err(e) if e.errno() == Some(Errno::ENOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
    }

    fn unwatch(&mut self) {
        if self.watching {
            let _ = self
                .xs
                .unwatch(&format!("{}/state", self.fe_path), &self.token);
            let _ = self.xs.unwatch(RELEASE_DOMAIN, &self.token);
            self.watching = false;
        }
    }
}

impl Drop for XenbusBackend {
    fn drop(&mut self) {
        self.unwatch();
    }
}

fn read_opt(xs: &LocalClient, path: &str) -> Result<Option<Vec<u8>>, Error> {
    match xs.read(TxId::NONE, path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Maps `refs` of `granter` writable and returns them as one region (see
/// [`XenbusBackend::map_ring`]).
pub fn map_ring(
    hv: &Arc<Hypervisor>,
    granter: DomId,
    refs: &[GrantRef],
) -> Result<MappedRing, Error> {
    let first = *refs.first().ok_or(Error::RingNotContiguous)?;
    let n = refs.len();
    if !n.is_power_of_two() || n > 1 << MAX_RING_ORDER {
        return Err(Error::RingNotContiguous);
    }
    let mut maps = Vec::with_capacity(n);
    for r in refs {
        maps.push(hv.grant_map(granter, *r, false)?);
    }
    let base = maps[0].gfn();
    if maps
        .iter()
        .enumerate()
        .any(|(i, m)| m.gfn().0 != base.0.wrapping_add(i as u64))
    {
        let _ = first;
        return Err(Error::RingNotContiguous);
    }
    let mem = match maps[0].region().memory() {
        Some(memory) if n != 1 => GuestRegion::new(memory, |m| m.pages_at(base, n))
            .map_err(|_| Error::RingNotContiguous)?,
        _ => maps[0].region().clone(),
    };
    Ok(MappedRing { maps, mem })
}

/// A ring's pages mapped for dom0; unmapped on drop. The owner of the ring's
/// region: [`MappedRing::mem`] lends it out borrowed, and a ring can own it
/// (`BackRing<_, _, MappedRing>`).
pub struct MappedRing {
    maps: Vec<GrantMapping>,
    /// The pages as one region (they are contiguous in the granter's memory).
    mem: GuestRegion,
}

impl fmt::Debug for MappedRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedRing")
            .field("pages", &self.maps.len())
            .finish()
    }
}

impl MappedRing {
    /// The whole ring, borrowed: it cannot outlive `self`.
    pub fn mem(&self) -> SharedMem<'_> {
        self.mem.mem()
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.maps.len()
    }
}

impl SharedRegion for MappedRing {
    fn shared(&self) -> SharedMem<'_> {
        self.mem()
    }
}

/// A dom0 event-channel port bound to a frontend; closed on drop.
pub struct BoundPort {
    hv: Arc<Hypervisor>,
    port: Port,
}

impl fmt::Debug for BoundPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoundPort").field(&self.port.0).finish()
    }
}

impl BoundPort {
    /// The dom0 port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Notifies the frontend.
    pub fn notify(&self) {
        // Fails only when the guest closed its end; then nobody listens anyway.
        let _ = self.hv.dom0_send(self.port);
    }
}

impl Drop for BoundPort {
    fn drop(&mut self) {
        let _ = self.hv.dom0_close(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use XenbusState as S;

    /// What a frontend may write as a number: plain decimal digits, at most 20 of
    /// them (u64's width). Rust's own parser also takes a `+` sign and any number of
    /// leading zeros; the strict check refuses both. (`parse_u64`: the length
    /// bound's `>` as `>=`/`==`/`<`, either `||` as `&&`, the digit test's `!`
    /// deleted, the body as `Ok(0)`/`Ok(1)`.)
    #[test]
    fn parse_u64_takes_plain_decimal_only() {
        assert_eq!(parse_u64("k", b"0").unwrap(), 0);
        assert_eq!(parse_u64("k", b"1").unwrap(), 1);
        assert_eq!(parse_u64("k", b"4096").unwrap(), 4096);
        assert_eq!(parse_u64("k", b"18446744073709551615").unwrap(), u64::MAX);
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"0x10",
            b"000000000000000000001",
            b"18446744073709551616",
            b"1\0",
            b"\xff",
        ] {
            match parse_u64("device/vif/0/k", bad) {
                Err(Error::BadValue { key, value }) => {
                    assert_eq!(key, "device/vif/0/k");
                    assert_eq!(value, String::from_utf8_lossy(bad));
                }
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        // A long value is quoted cut to 64 bytes.
        let long = [b'9'; 100];
        match parse_u64("k", &long) {
            Err(Error::BadValue { value, .. }) => assert_eq!(value, "9".repeat(64)),
            other => panic!("{other:?}"),
        }
    }

    /// A backend for device `vbd/51712` of a new guest, with `keys` written in the
    /// frontend's directory.
    fn backend_with(hv: &Arc<Hypervisor>, keys: &[(&str, &str)]) -> XenbusBackend {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dom = hv
            .create_domain(xen_model::DomainSpec::new(format!("keys{n}"), 4))
            .unwrap();
        let mut spec = DeviceSpec::new("vbd", dom.id(), 51712);
        for (k, v) in keys {
            spec = spec.frontend(k, v);
        }
        XenbusBackend::create(hv, &spec).unwrap()
    }

    /// A multi-page ring's references: `ring-page-order` up to the backend's
    /// maximum (itself clamped to `MAX_RING_ORDER`) gives `ring-ref0..2^order` in
    /// order; one order more is refused naming the key even with every reference
    /// written; without the key, the one `ring-ref`. (`read_ring_refs`: the order
    /// guard as `true`/`false` and `<=` as `>`, `1 << order` as `>>`.)
    #[test]
    fn ring_refs_follow_the_page_order_up_to_the_offer() {
        let hv = Hypervisor::new(xen_model::HypervisorConfig::default());
        let one = backend_with(&hv, &[("ring-ref", "8"), ("queue-1/tx-ring-ref", "9")]);
        assert_eq!(
            one.read_ring_refs("", "ring-ref", 4).unwrap(),
            [GrantRef(8)]
        );
        assert_eq!(
            one.read_ring_refs("queue-1/", "tx-ring-ref", 0).unwrap(),
            [GrantRef(9)]
        );
        one.destroy().unwrap();
        let mut keys = vec![("ring-page-order", "2")];
        let refs = ["10", "11", "12", "13", "14", "15", "16", "17"];
        let names = ["ring-ref0", "ring-ref1", "ring-ref2", "ring-ref3"];
        keys.extend(names.iter().copied().zip(refs));
        let four = backend_with(&hv, &keys);
        let want: Vec<GrantRef> = (10..14).map(GrantRef).collect();
        assert_eq!(four.read_ring_refs("", "ring-ref", 2).unwrap(), want);
        assert_eq!(four.read_ring_refs("", "ring-ref", 9).unwrap(), want);
        for max in [0, 1] {
            match four.read_ring_refs("", "ring-ref", max) {
                Err(Error::BadValue { key, value }) => {
                    assert!(key.ends_with("/ring-page-order"), "{key}");
                    assert_eq!(value, "2");
                }
                other => panic!("order 2 over a maximum of {max}: {other:?}"),
            }
        }
        four.destroy().unwrap();
        // Order 5 is over MAX_RING_ORDER (4) whatever the backend offers.
        let five = backend_with(&hv, &[("ring-page-order", "5"), ("ring-ref0", "1")]);
        assert!(matches!(
            five.read_ring_refs("", "ring-ref", 9),
            Err(Error::BadValue { .. })
        ));
        // A missing reference of the set is named.
        let gap = backend_with(&hv, &[("ring-page-order", "1"), ("ring-ref0", "1")]);
        match gap.read_ring_refs("", "ring-ref", 4) {
            Err(Error::Missing(k)) => assert!(k.ends_with("/ring-ref1"), "{k}"),
            other => panic!("{other:?}"),
        }
    }

    /// `map_ring` takes a power of two of at most `2^MAX_RING_ORDER` references
    /// and refuses any other count before mapping anything; a count it takes goes
    /// on to map them (here refs never granted: a grant error). (`map_ring`: the
    /// count check's `||` as `&&`, `>` as `==`/`>=`.)
    #[test]
    fn map_ring_takes_power_of_two_counts_up_to_the_maximum() {
        let hv = Hypervisor::new(xen_model::HypervisorConfig::default());
        let dom = hv
            .create_domain(xen_model::DomainSpec::new("rings", 4))
            .unwrap();
        let refs: Vec<GrantRef> = (1..=40).map(GrantRef).collect();
        let max = 1usize << MAX_RING_ORDER;
        for n in [0, 3, 5, 12, max + 1, 2 * max] {
            assert!(
                matches!(
                    map_ring(&hv, dom.id(), &refs[..n]),
                    Err(Error::RingNotContiguous)
                ),
                "{n} refs"
            );
        }
        for n in [1, 2, 4, max] {
            assert!(
                matches!(map_ring(&hv, dom.id(), &refs[..n]), Err(Error::Grant(_))),
                "{n} refs"
            );
        }
    }

    /// A frontend key that cannot be read for another reason than being absent
    /// (here a path xenstored refuses) is an error, not a missing key.
    /// (`read_opt`: the ENOENT guard as `true`.)
    #[test]
    fn only_a_missing_key_reads_as_none() {
        let hv = Hypervisor::new(xen_model::HypervisorConfig::default());
        let xbe = backend_with(&hv, &[("ring-ref", "8")]);
        assert_eq!(xbe.read_frontend("ring-ref").unwrap(), Some(b"8".to_vec()));
        assert_eq!(xbe.read_frontend("no-such-key").unwrap(), None);
        assert!(matches!(xbe.read_frontend("bad key"), Err(Error::Store(_))));
        assert!(xbe.read_frontend_u64("bad key").is_err());
    }

    /// A frontend's `state` node: a state's number (a trailing NUL tolerated), else
    /// `Unknown`. (`state_of` as `Default::default()`.)
    #[test]
    fn state_of_reads_the_number_or_unknown() {
        assert_eq!(state_of(b"1"), S::Initialising);
        assert_eq!(state_of(b"3"), S::Initialised);
        assert_eq!(state_of(b"4\0"), S::Connected);
        assert_eq!(state_of(b"6"), S::Closed);
        for bad in [&b""[..], b"x", b"99", b"-1", b"\xff"] {
            assert_eq!(state_of(bad), S::Unknown);
        }
    }

    #[test]
    fn a_frontend_back_at_initialising_restarts_the_backend_from_any_live_state() {
        for be in [S::Closed, S::Closing, S::Connected] {
            for connected in [false, true] {
                assert_eq!(
                    reaction(be, connected, S::Initialising),
                    Reaction::Restart,
                    "{be:?}"
                );
            }
        }
        // Already offering (or not yet offering): nothing to redo.
        assert_eq!(
            reaction(S::InitWait, false, S::Initialising),
            Reaction::Nothing
        );
        assert_eq!(
            reaction(S::Initialising, false, S::Initialising),
            Reaction::Nothing
        );
    }

    #[test]
    fn the_other_frontend_states() {
        assert_eq!(
            reaction(S::InitWait, false, S::Initialised),
            Reaction::Connect
        );
        assert_eq!(
            reaction(S::InitWait, false, S::Connected),
            Reaction::Connect
        );
        assert_eq!(
            reaction(S::Connected, true, S::Connected),
            Reaction::Nothing
        );
        // A backend that failed (Closing, error node) waits for the frontend.
        assert_eq!(reaction(S::Closing, false, S::Connected), Reaction::Nothing);
        assert_eq!(
            reaction(S::Connected, true, S::Closing),
            Reaction::Disconnect(S::Closing)
        );
        assert_eq!(reaction(S::Closing, false, S::Closing), Reaction::Nothing);
        for fe in [S::Closed, S::Unknown] {
            assert_eq!(
                reaction(S::Connected, true, fe),
                Reaction::Disconnect(S::Closed)
            );
            assert_eq!(reaction(S::Closed, false, fe), Reaction::Nothing);
            assert_eq!(reaction(S::InitWait, false, fe), Reaction::Nothing);
        }
    }
}
