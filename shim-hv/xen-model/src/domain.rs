//! Domains: identity, memory, run state, HVM parameters, console log, wake-ups.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use hypercall::abi::sched;
use hypercall::{DomId, Gfn, Port};

use super::evtchn::Dom0Handler;
use super::gnttab::GrantState;
use crate::mem::{GuestMemory, GuestRegion};

/// Locks a mutex, recovering the data if a thread panicked while holding it (a guest
/// thread panicking must not take the hypervisor down with it).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a domain shut down (`SHUTDOWN_*` of `sched.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`
    Poweroff,
    /// `SHUTDOWN_reboot`
    Reboot,
    /// `SHUTDOWN_suspend`
    Suspend,
    /// `SHUTDOWN_crash`
    Crash,
    /// `SHUTDOWN_watchdog`
    Watchdog,
    /// `SHUTDOWN_soft_reset`
    SoftReset,
}

impl ShutdownReason {
    /// From the `reason` of `SCHEDOP_shutdown`.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            sched::SHUTDOWN_POWEROFF => ShutdownReason::Poweroff,
            sched::SHUTDOWN_REBOOT => ShutdownReason::Reboot,
            sched::SHUTDOWN_SUSPEND => ShutdownReason::Suspend,
            sched::SHUTDOWN_CRASH => ShutdownReason::Crash,
            sched::SHUTDOWN_WATCHDOG => ShutdownReason::Watchdog,
            5 => ShutdownReason::SoftReset,
            _ => return None,
        })
    }

    /// The `SHUTDOWN_*` code.
    pub fn code(self) -> u32 {
        match self {
            ShutdownReason::Poweroff => sched::SHUTDOWN_POWEROFF,
            ShutdownReason::Reboot => sched::SHUTDOWN_REBOOT,
            ShutdownReason::Suspend => sched::SHUTDOWN_SUSPEND,
            ShutdownReason::Crash => sched::SHUTDOWN_CRASH,
            ShutdownReason::Watchdog => sched::SHUTDOWN_WATCHDOG,
            ShutdownReason::SoftReset => 5,
        }
    }

    /// The name xl prints (and `control/shutdown` uses where one exists).
    pub fn name(self) -> &'static str {
        match self {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
            ShutdownReason::Watchdog => "watchdog",
            ShutdownReason::SoftReset => "soft_reset",
        }
    }
}

/// A domain's run state as the toolstack sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Running (or runnable).
    Running,
    /// Paused by the toolstack.
    Paused,
    /// The guest shut itself down (`SCHEDOP_shutdown`).
    Shutdown(ShutdownReason),
    /// The guest crashed (runner: panic, triple fault, emulation failure).
    Crashed(String),
    /// Being destroyed; gone from the domain table.
    Dying,
}

impl DomainState {
    /// Whether the guest is finished (shut down, crashed or dying): no more guest code
    /// should run.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            DomainState::Shutdown(_) | DomainState::Crashed(_) | DomainState::Dying
        )
    }
}

/// A level-free "something happened" signal with an epoch counter: the wake-up half of
/// event delivery. Waiters remember the epoch they last saw; no wake-up is lost, and
/// every wait is bounded.
///
/// Raising is cheap when nobody sleeps: an atomic increment and a check of the
/// sleeper count, no lock and no system call (a busy-polling guest or backend is
/// raised often and sleeps rarely). Sleepers register before they re-check the
/// epoch under the lock, and the raiser bumps the epoch before it looks at the
/// sleeper count (both sequentially consistent), so one of the two always sees
/// the other.
#[derive(Debug, Default)]
pub struct EventSignal {
    epoch: AtomicU64,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    pollers: AtomicUsize,
}

/// Registration of a `SCHEDOP_poll` waiter; see [`EventSignal::poller`].
#[derive(Debug)]
pub struct PollerGuard<'a>(&'a EventSignal);

impl Drop for PollerGuard<'_> {
    fn drop(&mut self) {
        self.0.pollers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EventSignal {
    /// Bumps the epoch and wakes all waiters (a system call only if one sleeps).
    pub fn raise(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            // A sleeper is between registering and sleeping, or asleep: taking the
            // lock orders us after its epoch check, so the notification reaches it.
            drop(lock(&self.lock));
            self.cv.notify_all();
        }
    }

    /// Registers a poller: while it lives, events on masked ports wake the domain
    /// too (as Xen wakes vCPUs in `SCHEDOP_poll`).
    pub fn poller(&self) -> PollerGuard<'_> {
        self.pollers.fetch_add(1, Ordering::SeqCst);
        PollerGuard(self)
    }

    /// Whether someone polls.
    pub fn has_pollers(&self) -> bool {
        self.pollers.load(Ordering::SeqCst) != 0
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Waits until the epoch differs from `seen` or `timeout` passes; returns the epoch.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        if self.epoch() != seen {
            return self.epoch();
        }
        let end = Instant::now() + timeout;
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut g = lock(&self.lock);
        loop {
            let now = self.epoch();
            if now != seen {
                break;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(g);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        self.epoch()
    }
}

/// A 128-bit domain UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A random (version 4) UUID.
    pub fn random() -> Uuid {
        let mut b = [0u8; 16];
        fill_random(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid(b)
    }
}

fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(buf).is_ok() {
            return;
        }
    }
    // Fallback: time and address entropy; uniqueness, not secrecy, is what matters.
    let mut x = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (buf.as_ptr() as u64);
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where console output (`CONSOLEIO_write`) of a domain goes, besides the domain's own
/// bounded log.
pub type ConsoleSink = Arc<dyn Fn(DomId, &[u8]) + Send + Sync>;

/// What to create.
#[derive(Clone)]
pub struct DomainSpec {
    /// Domain name (unique among live domains).
    pub name: String,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs (the model delivers events to vCPU 0).
    pub vcpus: u32,
    /// UUID; random if `None`.
    pub uuid: Option<Uuid>,
    /// Most grant-table frames the guest may set up.
    pub max_grant_frames: u32,
    /// Extra sink for early console output.
    pub console_sink: Option<ConsoleSink>,
    /// First RAM frame. The default (gfn 0x100) keeps gfns distinct from page indices
    /// so missing translations fail loudly; a KVM runner booting PVH wants 0.
    pub first_gfn: Gfn,
    /// Most frames the guest may place outside RAM with `add_to_physmap`
    /// (`shared_info` and grant frames in a hole of the physical address space;
    /// [`GuestMemory::place`]). 0, the default, keeps them in RAM: in-process guests
    /// have no hole to put them in. The KVM runner allows one per grant frame plus
    /// `shared_info`.
    pub hole_pages: usize,
}

impl DomainSpec {
    /// A spec with defaults: 1 vCPU, 64 grant frames, random UUID.
    pub fn new(name: impl Into<String>, memory_mib: u64) -> Self {
        DomainSpec {
            name: name.into(),
            memory_mib,
            vcpus: 1,
            uuid: None,
            max_grant_frames: 64,
            console_sink: None,
            first_gfn: GuestMemory::DEFAULT_FIRST_GFN,
            hole_pages: 0,
        }
    }
}

impl fmt::Debug for DomainSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainSpec")
            .field("name", &self.name)
            .field("memory_mib", &self.memory_mib)
            .field("vcpus", &self.vcpus)
            .field("uuid", &self.uuid)
            .field("max_grant_frames", &self.max_grant_frames)
            .field("first_gfn", &self.first_gfn)
            .field("hole_pages", &self.hole_pages)
            .finish_non_exhaustive()
    }
}

/// A page the toolstack sets up for the guest (xenstore ring, console ring) with the
/// event channel that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialPage {
    /// The page's frame (reserved: the guest's page allocator never hands it out).
    pub gfn: Gfn,
    /// The guest's end of the event channel (the HVM param value).
    pub port: Port,
    /// dom0's end of the event channel.
    pub dom0_port: Port,
}

/// Number of "special pages" at the top of RAM (libxl reserves 8 too).
pub const SPECIAL_PAGES: u64 = 8;
/// The xenstore page's index in the special region (libxl: `special_pfn(4)`).
pub const SPECIAL_STORE: u64 = 4;
/// The console page's index in the special region (libxl: `special_pfn(7)`).
pub const SPECIAL_CONSOLE: u64 = 7;

/// Bytes of console output a domain keeps.
pub const CONSOLE_LOG_MAX: usize = 64 * 1024;

/// Number of HVM parameters (`HVM_NR_PARAMS` of Xen 4.17's `hvm/params.h`).
pub const HVM_NR_PARAMS: u32 = 39;

const PHASE_LIVE: u8 = 0;
const PHASE_FINISHED: u8 = 1;
const PHASE_DYING: u8 = 2;

struct StateCell {
    state: DomainState,
    seq: u64,
}

/// One guest domain.
pub struct Domain {
    pub(crate) id: DomId,
    pub(crate) name: String,
    pub(crate) uuid: Uuid,
    pub(crate) memory: Arc<GuestMemory>,
    pub(crate) vcpus: u32,
    pub(crate) max_grant_frames: u32,
    pub(crate) created: SystemTime,
    pub(crate) started: Instant,
    state: Mutex<StateCell>,
    state_cv: Condvar,
    /// Lock-free view of `state` for hot paths: [`PHASE_LIVE`], [`PHASE_FINISHED`]
    /// or [`PHASE_DYING`] (it only ever grows, as the state does).
    phase: AtomicU8,
    /// Lock-free view of "the state is `Paused`" (runners check it on hot paths).
    paused: std::sync::atomic::AtomicBool,
    pub(crate) params: Mutex<[u64; HVM_NR_PARAMS as usize]>,
    pub(crate) upcall_vectors: Mutex<Vec<Option<u8>>>,
    pub(crate) grants: Mutex<GrantState>,
    store_ring: GuestRegion,
    console_ring: GuestRegion,
    pub(crate) shinfo_gfn: Mutex<Option<Gfn>>,
    pub(crate) store: SpecialPage,
    pub(crate) console: SpecialPage,
    pub(crate) console_handler: Arc<Mutex<Option<Dom0Handler>>>,
    console_log: Mutex<VecDeque<u8>>,
    console_sink: Option<ConsoleSink>,
    pub(crate) signal: Arc<EventSignal>,
    /// Singleshot timer deadline (Xen system time, ns).
    pub(crate) timer: Mutex<Option<u64>>,
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.id.0)
            .field("name", &self.name)
            .field("uuid", &self.uuid)
            .field("memory", &self.memory)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

pub(crate) struct DomainParts {
    pub id: DomId,
    pub spec: DomainSpec,
    pub uuid: Uuid,
    pub memory: Arc<GuestMemory>,
    pub store_ring: GuestRegion,
    pub console_ring: GuestRegion,
    pub store: SpecialPage,
    pub console: SpecialPage,
    pub signal: Arc<EventSignal>,
    pub console_slot: Arc<Mutex<Option<Dom0Handler>>>,
}

impl Domain {
    pub(crate) fn new(p: DomainParts) -> Domain {
        let mut params = [0u64; HVM_NR_PARAMS as usize];
        params[hypercall::abi::hvm::PARAM_STORE_PFN as usize] = p.store.gfn.0;
        params[hypercall::abi::hvm::PARAM_STORE_EVTCHN as usize] = p.store.port.0 as u64;
        params[hypercall::abi::hvm::PARAM_CONSOLE_PFN as usize] = p.console.gfn.0;
        params[hypercall::abi::hvm::PARAM_CONSOLE_EVTCHN as usize] = p.console.port.0 as u64;
        Domain {
            id: p.id,
            name: p.spec.name,
            uuid: p.uuid,
            memory: p.memory,
            vcpus: p.spec.vcpus,
            max_grant_frames: p.spec.max_grant_frames,
            created: SystemTime::now(),
            started: Instant::now(),
            state: Mutex::new(StateCell {
                state: DomainState::Running,
                seq: 0,
            }),
            state_cv: Condvar::new(),
            phase: AtomicU8::new(PHASE_LIVE),
            paused: std::sync::atomic::AtomicBool::new(false),
            params: Mutex::new(params),
            upcall_vectors: Mutex::new(vec![None; p.spec.vcpus as usize]),
            grants: Mutex::new(GrantState::new(p.spec.max_grant_frames)),
            store_ring: p.store_ring,
            console_ring: p.console_ring,
            shinfo_gfn: Mutex::new(None),
            store: p.store,
            console: p.console,
            console_handler: p.console_slot,
            console_log: Mutex::new(VecDeque::new()),
            console_sink: p.spec.console_sink,
            signal: p.signal,
            timer: Mutex::new(None),
        }
    }

    /// The domain id.
    pub fn id(&self) -> DomId {
        self.id
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The guest's RAM.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.memory
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }

    /// Most grant-table frames the guest may set up.
    pub fn max_grant_frames(&self) -> u32 {
        self.max_grant_frames
    }

    /// When the domain was created (wall clock).
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// How long the domain has existed.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// RAM frames a guest page allocator may hand out: all RAM below the special
    /// pages (`first..end`).
    pub fn allocatable(&self) -> (Gfn, Gfn) {
        (self.memory.first_gfn(), self.special_base())
    }

    /// First frame of the reserved special region at the top of RAM.
    pub fn special_base(&self) -> Gfn {
        Gfn(self.memory.end_gfn().0 - SPECIAL_PAGES)
    }

    /// The xenstore page and its event channel.
    pub fn store(&self) -> SpecialPage {
        self.store
    }

    /// The console page and its event channel.
    pub fn console(&self) -> SpecialPage {
        self.console
    }

    /// The console ring page (`struct xencons_interface`), for a console backend
    /// (clone it to keep it: it holds the domain's memory).
    pub fn console_ring(&self) -> &GuestRegion {
        &self.console_ring
    }

    /// The xenstore ring page (`struct xenstore_domain_interface`), as handed to
    /// xenstored (clone it to keep it: it holds the domain's memory).
    pub fn store_ring(&self) -> &GuestRegion {
        &self.store_ring
    }

    /// Installs the console backend's handler for the console event channel (replacing
    /// any earlier one). The backend notifies the guest with
    /// `Hypervisor::dom0_send(domain.console().dom0_port)`.
    pub fn set_console_handler(&self, handler: Option<Dom0Handler>) {
        *lock(&self.console_handler) = handler;
    }

    /// Where the guest has mapped `shared_info`, if it has.
    pub fn shared_info_gfn(&self) -> Option<Gfn> {
        *lock(&self.shinfo_gfn)
    }

    /// An HVM parameter's value (`None` if the index is out of range).
    pub fn hvm_param(&self, index: u32) -> Option<u64> {
        lock(&self.params).get(index as usize).copied()
    }

    /// The per-vCPU upcall vector the guest registered, if any.
    pub fn upcall_vector(&self, vcpu: u32) -> Option<u8> {
        lock(&self.upcall_vectors)
            .get(vcpu as usize)
            .copied()
            .flatten()
    }

    /// The domain's wake-up signal (bumped when an upcall is raised).
    pub fn signal(&self) -> &Arc<EventSignal> {
        &self.signal
    }

    /// Whether the domain is finished (shut down, crashed or dying): the same as
    /// `state().is_finished()`, without a lock.
    pub fn is_finished(&self) -> bool {
        self.phase.load(Ordering::SeqCst) >= PHASE_FINISHED
    }

    /// Whether the domain is being destroyed (state `Dying`), without a lock.
    pub fn is_dying(&self) -> bool {
        self.phase.load(Ordering::SeqCst) >= PHASE_DYING
    }

    /// Whether the domain is paused (state `Paused`), without a lock.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Blocks while the domain is paused (until unpaused or finished): what a vCPU
    /// of a paused domain does.
    pub fn wait_unpaused(&self) {
        while self.is_paused() {
            self.wait_state(Duration::from_millis(100), |s| *s != DomainState::Paused);
        }
    }

    /// Current run state.
    pub fn state(&self) -> DomainState {
        lock(&self.state).state.clone()
    }

    /// Current run state and its change counter.
    pub fn state_seq(&self) -> (DomainState, u64) {
        let c = lock(&self.state);
        (c.state.clone(), c.seq)
    }

    /// Sets the state unless the domain is already finished (the first shutdown
    /// reason wins, as on Xen; only `Dying` overrides). Returns whether it changed.
    pub(crate) fn set_state(&self, new: DomainState) -> bool {
        let changed = {
            let mut c = lock(&self.state);
            let allowed = match (&c.state, &new) {
                (_, DomainState::Dying) => c.state != DomainState::Dying,
                (s, _) if s.is_finished() => false,
                (s, n) => s != n,
            };
            if allowed {
                let phase = match &new {
                    DomainState::Dying => PHASE_DYING,
                    s if s.is_finished() => PHASE_FINISHED,
                    _ => PHASE_LIVE,
                };
                self.phase.fetch_max(phase, Ordering::SeqCst);
                self.paused
                    .store(new == DomainState::Paused, Ordering::SeqCst);
                c.state = new;
                c.seq += 1;
            }
            allowed
        };
        if changed {
            self.state_cv.notify_all();
            // Guest threads blocked in wait() re-check and see the new state.
            self.signal.raise();
        }
        changed
    }

    /// Waits until `pred` holds for the state, or `timeout` passes. Returns the state
    /// if `pred` held.
    pub fn wait_state(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&DomainState) -> bool,
    ) -> Option<DomainState> {
        let g = lock(&self.state);
        let (g, _) = self
            .state_cv
            .wait_timeout_while(g, timeout, |c| !pred(&c.state))
            .unwrap_or_else(|e| e.into_inner());
        pred(&g.state).then(|| g.state.clone())
    }

    /// Appends console output (from `CONSOLEIO_write`) to the log and the sink.
    pub(crate) fn console_write(&self, bytes: &[u8]) {
        {
            let mut log = lock(&self.console_log);
            log.extend(bytes.iter().copied());
            let excess = log.len().saturating_sub(CONSOLE_LOG_MAX);
            log.drain(..excess);
        }
        if let Some(sink) = &self.console_sink {
            sink(self.id, bytes);
        }
    }

    /// The console output kept so far (the last [`CONSOLE_LOG_MAX`] bytes).
    pub fn console_output(&self) -> Vec<u8> {
        lock(&self.console_log).iter().copied().collect()
    }
}
