//! The console backend: drains a domain's console ring (and its `CONSOLEIO_write`
//! output) into a history log, a sink (stdout, a file, a pty, any writer) and attached
//! clients; feeds terminal input into the ring. Secondary consoles with a name
//! (xl's channels, on a pty or a Unix socket) are served by [`channel`].
//!
//! ```text
//!  guest ── out[2048] ──▶ console's turn ──▶ history (64 KiB ring buffer) ──▶ clients
//!        ◀── in[1024] ──   (console pool)                                    (cursors)
//!  CONSOLEIO_write ─▶ early   │   ▲
//!  (ConsoleBackend::early_sink)│   └─ kick: the console event channel's dom0 handler,
//!                              ▼      early output, input, a drained sink, stop
//!                       to_sink (bounded: ConsoleConfig::buffer_bytes)
//!                              ▼
//!        pty: written by the turn, never waiting     input: the pty poller,
//!        stdout · file · writer: a writer thread      ConsoleClient::send_input
//!        while bytes wait for it
//! ```
//!
//! # Threads (docs/backend-threads.md)
//!
//! No thread per console. A console's turn (ring → history and sink buffer, input
//! → ring, one chunk to a pty) runs on the console pool's workers (`consio`, at
//! most `available_parallelism()` clamped to 2..8, shared by every console of the
//! process), when something kicks it: the guest's notification, new early output,
//! input, a sink that drained, `stop`, or the domain going away. Nothing wakes an
//! idle console: there is no periodic re-check (a guest that forgets to notify is
//! served at its next notification, as with Xen's xenconsoled). Every console pty
//! is watched by one poller thread (`console-poll`): input when the
//! terminal types, output room when a full pty drains. A sink that may block
//! (stdout, a file, a [`Sink::Writer`]) is written by a thread of its own, which
//! runs only while bytes wait for it (and 2 s after), so a stuck sink
//! holds up only its console.
//!
//! # Flow control (decided here)
//!
//! The ring is the backpressure. A console's turn takes bytes out of the ring only
//! while the sink buffer has room ([`Overflow::Backpressure`], the default for stdout,
//! files and writers): with a slow sink the buffer fills, the backend stops draining,
//! the ring fills and the guest's writer waits (xencons waits through
//! `Platform::wait`, and declares the backend gone only if `out_cons` stands still for
//! its stall timeout). Nothing is dropped while the backend lives. The domain is never
//! blocked *by* the backend: the event-channel handler, which runs in the guest's
//! hypercall, only queues the console's turn; all copying and sink I/O happens on the
//! pool's workers and the sink's writer thread.
//!
//! A pty that nobody reads would stall its guest forever under that rule, so pty sinks
//! default to [`Overflow::DropOldest`]: the ring keeps draining, and when the sink
//! buffer is full its oldest bytes are dropped (counted in [`ConsoleStats::dropped`]).
//! The history and clients still see everything.
//!
//! Clients ([`Console::attach`]) read the history through their own cursor and never
//! slow the guest; one that falls more than the history size behind is told how many
//! bytes it missed ([`ClientEvent::Skipped`]).
//!
//! `CONSOLEIO_write` output arrives inside the guest's hypercall and cannot be held
//! back: it goes to the history and the sink buffer at once (the buffer may then
//! exceed its bound by up to one more bound; beyond that the oldest early bytes are
//! dropped and counted, as Xen's own console ring overwrites).
//!
//! # Hostile guests
//!
//! The page is read only through [`SharedMem`]; each chunk is copied once. Our own
//! indices (`out_cons`, `in_prod`) are kept privately. `out_prod - out_cons > 2048` or
//! `in_prod - in_cons > 1024` fails this console only ([`ConsoleState::Failed`]): the
//! backend stops touching the ring, marks it `XENCONSOLE_DISCONNECTED`, keeps the
//! history, and tells clients. Event storms cost a few flag stores each in the
//! guest's hypercall, and a few runs of a worker in all: notifications that find
//! nothing to do hold the console back, 1 ms doubling up to 1 s (late EOI on the
//! host side, docs/hostile-input.md E1; [`ConsoleStats::spurious_events`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use xen_backends::console::{ConsoleBackend, ConsoleConfig, Sink};
//! use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
//!
//! let hv = Hypervisor::new(HypervisorConfig::default());
//! let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
//! let mut spec = DomainSpec::new("doc", 4);
//! spec.console_sink = Some(consoles.early_sink()); // CONSOLEIO_write lands in the same log
//! let dom = hv.create_domain(spec).unwrap();
//! let console = consoles.start(&dom, Sink::None).unwrap();
//!
//! let mut client = console.attach(true); // from the start of the history
//! // ... run the guest; it prints "ready" ...
//! # console.push_early(b"ready\n");
//! console.wait_for(b"ready", Duration::from_secs(5)).unwrap();
//! client.send_input(b"help\n");
//! let _history = console.history();
//! consoles.remove(dom.id());
//! ```

pub mod channel;
mod poller;
mod pty;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hypercall::abi::console as abi;
use hypercall::shmem::{mb, wmb};
use hypercall::{DomId, SharedMem, SharedRegion};

use super::hostile::ConsoleHostile;
use super::pool::{Pool, Sched, Served, Turn};
use xen_model::{ConsoleSink, Dom0Handler, Domain, DomainEvent, DomainState, Hypervisor};

/// Bytes of output history kept per console.
pub const HISTORY_BYTES: usize = 64 * 1024;
/// Default bound of the sink buffer per console.
pub const BUFFER_BYTES: usize = 16 * 1024;
/// Bytes of terminal input queued for a guest that is not reading.
pub const INPUT_QUEUE_BYTES: usize = 4096;
/// Longest a sink write is handed at once.
const SINK_CHUNK: usize = 4096;
/// Sink chunks (or ring drains) a console is served in one run of a pool worker
/// before the other waiting consoles get theirs.
const TURN_BUDGET: usize = 16;
/// How long a blocking sink's writer thread waits for more output before it
/// ends (the next output starts another).
const WRITER_LINGER: Duration = Duration::from_secs(2);

/// The workers that serve every console's ring (and pty output): at most
/// `available_parallelism()` clamped to 2..8, while a console is served
/// (docs/backend-threads.md). No polling: a console waits for a kick.
static CONSOLE_POOL: Pool = Pool::new("consio", TURN_BUDGET, Duration::ZERO, Duration::ZERO);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What happens when the sink cannot keep up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Stop draining the ring once the sink buffer is full: the guest's writer waits.
    /// Lossless while the backend lives.
    Backpressure,
    /// Keep draining; drop the oldest unwritten sink bytes beyond the bound (history
    /// and clients still get everything).
    DropOldest,
}

/// Console backend settings.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleConfig {
    /// Output history kept per console (for `console` and [`Console::wait_for`]).
    pub history_bytes: usize,
    /// Bound of the per-console sink buffer.
    pub buffer_bytes: usize,
    /// Overflow policy; `None`: [`Overflow::DropOldest`] for pty sinks,
    /// [`Overflow::Backpressure`] for everything else.
    pub overflow: Option<Overflow>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            history_bytes: HISTORY_BYTES,
            buffer_bytes: BUFFER_BYTES,
            overflow: None,
        }
    }
}

/// Where a console's output goes (besides history and clients).
pub enum Sink {
    /// Nowhere else: history and clients only. Never slows the guest.
    None,
    /// The process's standard output.
    Stdout,
    /// A file, appended to (created if missing).
    File(PathBuf),
    /// A new pseudo-terminal ([`Console::pty_path`]); its input feeds the guest.
    Pty,
    /// Any writer (tests use slow ones).
    Writer(Box<dyn Write + Send>),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::None => f.write_str("None"),
            Sink::Stdout => f.write_str("Stdout"),
            Sink::File(p) => f.debug_tuple("File").field(p).finish(),
            Sink::Pty => f.write_str("Pty"),
            Sink::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// A ring protocol violation by the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingFault {
    /// `out_prod - out_cons` beyond 2048 (`out_prod` behind our `out_cons`, or far
    /// ahead).
    #[error("illegal out indices: cons {cons:#x}, prod {prod:#x}")]
    OutIndices {
        /// Our `out_cons`.
        cons: u32,
        /// The guest's `out_prod`.
        prod: u32,
    },
    /// `in_prod - in_cons` beyond 1024 (`in_cons` ahead of our `in_prod`, or far
    /// behind).
    #[error("illegal in indices: cons {cons:#x}, prod {prod:#x}")]
    InIndices {
        /// The guest's `in_cons`.
        cons: u32,
        /// Our `in_prod`.
        prod: u32,
    },
}

/// Where a console is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleState {
    /// Known (e.g. early output arrived) but its ring is not served yet.
    Waiting,
    /// Serving the ring.
    Connected,
    /// The guest broke the ring protocol; the ring is no longer touched.
    Failed(RingFault),
    /// Stopped (removed, or the domain was destroyed).
    Closed,
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes taken from the output ring.
    pub ring_bytes: u64,
    /// Bytes from `CONSOLEIO_write`.
    pub early_bytes: u64,
    /// Bytes written to the sink.
    pub sink_bytes: u64,
    /// Sink bytes dropped (overflow policy, or early output beyond the hard bound).
    pub dropped: u64,
    /// Input bytes put into the guest's ring.
    pub input_bytes: u64,
    /// Notifications sent to the guest.
    pub notifies: u64,
    /// Kicks received (guest notifications).
    pub kicks: u64,
    /// Runs of a `consio` worker on this console.
    pub runs: u64,
    /// Guest notifications after which the console's run found nothing to do
    /// (no output byte taken, no input written, nothing for the pty): late EOI
    /// on the host side (docs/hostile-input.md E1).
    pub spurious_events: u64,
    /// Times the console was held back after spurious notifications in a row
    /// (1 ms, doubling up to 1 s; its notifications meanwhile are served when
    /// the delay ends).
    pub backoffs: u64,
    /// Times the ring was left full because the sink buffer was full.
    pub backpressure: u64,
    /// Why the sink was given up, if it was (output continues to history/clients).
    pub sink_error: Option<String>,
    /// Notifications with nothing new on the ring sent by hostile mode
    /// `console.event_storm`.
    pub storm_events: u64,
}

/// Why a console operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The console (domain, console number) is already being served.
    #[error("console {n} of domain {d} already served", d = .0 .0, n = .1)]
    AlreadyStarted(DomId, u32),
    /// The ring page is too small or misaligned.
    #[error("console ring page too small or misaligned")]
    BadRing,
    /// The sink could not be opened.
    #[error("console sink: {0}")]
    Sink(io::Error),
    /// A thread (the pty poller) could not be started.
    #[error("console thread: {0}")]
    Thread(io::Error),
    /// The hypervisor this backend belongs to is gone.
    #[error("the hypervisor is gone")]
    NoHypervisor,
}

/// Why [`Console::wait_for`] gave up.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The text did not appear in time; the last bytes of output, for the message.
    #[error("timed out; output ends with {tail:?}")]
    Timeout {
        /// Up to 512 bytes of the end of the history (lossy UTF-8).
        tail: String,
    },
    /// The console stopped or failed before the text appeared.
    #[error("console closed ({0:?})")]
    Closed(ConsoleState),
}

// ---- history ---------------------------------------------------------------------------

/// A byte ring buffer with absolute offsets (`total` = offset of the end).
#[derive(Debug)]
struct History {
    buf: VecDeque<u8>,
    cap: usize,
    total: u64,
}

impl History {
    fn new(cap: usize) -> Self {
        History {
            buf: VecDeque::new(),
            cap: cap.max(1),
            total: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let excess = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..excess);
        self.buf.extend(bytes);
    }

    fn start(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    /// Bytes from `cursor` on (at most `max`), and how many before them were lost.
    fn read_from(&self, cursor: u64, max: usize) -> (u64, Vec<u8>) {
        let start = self.start();
        let skipped = start.saturating_sub(cursor);
        let from = cursor.max(start);
        let i = (from - start) as usize;
        let n = (self.buf.len() - i).min(max);
        (skipped, self.buf.range(i..i + n).copied().collect())
    }

    /// The end offset of the first match of `needle` that ends after `from`.
    fn find(&self, needle: &[u8], from: u64) -> Option<u64> {
        if needle.is_empty() {
            return Some(from.max(self.start()));
        }
        let start = self.start();
        let lo = from.saturating_sub(needle.len() as u64 - 1).max(start);
        let i = (lo - start) as usize;
        let hay: Vec<u8> = self.buf.range(i..).copied().collect();
        hay.windows(needle.len())
            .position(|w| w == needle)
            .map(|p| lo + (p + needle.len()) as u64)
    }

    fn tail(&self, n: usize) -> String {
        let i = self.buf.len().saturating_sub(n);
        let v: Vec<u8> = self.buf.range(i..).copied().collect();
        String::from_utf8_lossy(&v).into_owned()
    }
}

// ---- the ring, backend side -------------------------------------------------------------

/// Sends the guest a console notification (called outside the console lock).
type Notifier = Arc<dyn Fn() + Send + Sync>;

/// A console ring to serve: the page's owner, how to notify the guest, and
/// whatever else must live while the ring is served (the domain for the primary
/// console; for a secondary console the bound port).
pub struct RingAttachment {
    /// What keeps the `struct xencons_interface` page mapped (at least 3089
    /// bytes, 4-aligned): the domain's [`GuestRegion`](xen_model::mem::GuestRegion),
    /// a [`GrantMapping`](xen_model::GrantMapping), a [`MappedRing`](crate::xenbus::MappedRing). The console
    /// borrows the page from it for each access and drops it when it stops
    /// serving the ring (unmapping it).
    pub page: Box<dyn SharedRegion + Send>,
    /// Notifies the guest (e.g. `Hypervisor::dom0_send(port)`, `BoundPort::notify`).
    pub notify: Arc<dyn Fn() + Send + Sync>,
    /// Dropped when the console stops serving the ring (after `page`: unbinds).
    pub hold: Box<dyn Send>,
}

impl fmt::Debug for RingAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingAttachment")
            .field("page", &self.page.shared())
            .finish_non_exhaustive()
    }
}

/// The guest's console page, with our private indices.
struct BackRing {
    /// The page's owner (see [`RingAttachment::page`]).
    owner: Box<dyn SharedRegion + Send>,
    out_cons: u32,
    in_prod: u32,
    /// The guest (to notice its destruction).
    dom: Arc<Domain>,
    notifier: Notifier,
    _hold: Box<dyn Send>,
}

impl BackRing {
    fn attach(dom: &Arc<Domain>, ring: RingAttachment) -> BackRing {
        let page = ring.page.shared();
        let (out_cons, in_prod) = (page.load_u32(abi::OUT_CONS), page.load_u32(abi::IN_PROD));
        let r = BackRing {
            out_cons,
            in_prod,
            owner: ring.page,
            dom: dom.clone(),
            notifier: ring.notify,
            _hold: ring.hold,
        };
        r.page().store_u8(abi::CONNECTION, abi::CONNECTED);
        r
    }

    /// The page, borrowed from its owner.
    fn page(&self) -> SharedMem<'_> {
        self.owner.shared()
    }

    /// Takes up to `max` output bytes (copied once) and consumes them.
    fn drain(&mut self, max: usize, out: &mut Vec<u8>) -> Result<usize, RingFault> {
        let prod = self.page().load_u32(abi::OUT_PROD); // acquire: slots read after
        let avail = prod.wrapping_sub(self.out_cons) as usize;
        if avail > abi::OUT_SIZE {
            return Err(RingFault::OutIndices {
                cons: self.out_cons,
                prod,
            });
        }
        let n = avail.min(max);
        if n == 0 {
            return Ok(0);
        }
        let start = self.out_cons as usize & (abi::OUT_SIZE - 1);
        let first = n.min(abi::OUT_SIZE - start);
        let at = out.len();
        out.resize(at + n, 0);
        self.page().read(abi::OUT + start, &mut out[at..at + first]);
        self.page().read(abi::OUT, &mut out[at + first..at + n]);
        mb(); // read the slots before handing them back
        self.out_cons = self.out_cons.wrapping_add(n as u32);
        self.page().store_u32(abi::OUT_CONS, self.out_cons);
        Ok(n)
    }

    /// Whether output is waiting (checked).
    fn out_pending(&self) -> Result<bool, RingFault> {
        let prod = self.page().load_u32(abi::OUT_PROD);
        let avail = prod.wrapping_sub(self.out_cons) as usize;
        if avail > abi::OUT_SIZE {
            return Err(RingFault::OutIndices {
                cons: self.out_cons,
                prod,
            });
        }
        Ok(avail > 0)
    }

    /// Puts as much of `bytes` as fits into `in[]`.
    fn push_input(&mut self, bytes: &[u8]) -> Result<usize, RingFault> {
        let cons = self.page().load_u32(abi::IN_CONS);
        let used = self.in_prod.wrapping_sub(cons) as usize;
        if used > abi::IN_SIZE {
            return Err(RingFault::InIndices {
                cons,
                prod: self.in_prod,
            });
        }
        let n = (abi::IN_SIZE - used).min(bytes.len());
        if n == 0 {
            return Ok(0);
        }
        let start = self.in_prod as usize & (abi::IN_SIZE - 1);
        let first = n.min(abi::IN_SIZE - start);
        self.page().write(abi::IN + start, &bytes[..first]);
        self.page().write(abi::IN, &bytes[first..n]);
        wmb(); // slots before the index
        self.in_prod = self.in_prod.wrapping_add(n as u32);
        self.page().store_u32(abi::IN_PROD, self.in_prod);
        Ok(n)
    }

    /// Marks the console closed for the guest; returns who to notify (after
    /// unlocking).
    fn disconnect(&self) -> Notifier {
        self.page().store_u8(abi::CONNECTION, abi::DISCONNECTED);
        self.notifier.clone()
    }
}

/// Writes hostile mode `h`'s impossible index into the page (our own indices
/// stay as they were); `console.event_storm` writes nothing (its thread is
/// [`Console::start_event_storm`]).
fn strike(ring: &BackRing, h: ConsoleHostile) {
    match h {
        ConsoleHostile::EventStorm => {}
        ConsoleHostile::OutConsPastProd => {
            let prod = ring.page().load_u32(abi::OUT_PROD);
            ring.page().store_u32(abi::OUT_CONS, prod.wrapping_add(16));
        }
        ConsoleHostile::InProdPastRing => {
            let cons = ring.page().load_u32(abi::IN_CONS);
            wmb();
            ring.page()
                .store_u32(abi::IN_PROD, cons.wrapping_add(abi::IN_SIZE as u32 + 1));
        }
    }
}

// ---- the console -----------------------------------------------------------------------

struct Shared {
    history: History,
    /// Sink bytes not yet written; `sink_start` is the absolute offset of its front.
    to_sink: VecDeque<u8>,
    sink_start: u64,
    has_sink: bool,
    overflow: Overflow,
    /// A sink that may block (stdout, a file, a writer), while no writer thread
    /// holds it ([`Console::writer_thread`]).
    parked: Option<Box<dyn Write + Send>>,
    /// A writer thread holds the blocking sink.
    writer_running: bool,
    input: VecDeque<u8>,
    ring: Option<BackRing>,
    state: ConsoleState,
    stats: ConsoleStats,
    /// The hostile mode, if any (docs/hostile-mode.md), and whether it struck.
    hostile: Option<ConsoleHostile>,
    hostile_done: bool,
}

/// One served console.
pub struct Console {
    domid: DomId,
    devid: u32,
    config: ConsoleConfig,
    me: Weak<Console>,
    shared: Mutex<Shared>,
    /// Output appended or state changed (clients, wait_for, the sink writer).
    changed: Condvar,
    stop: AtomicBool,
    /// [`Console::serve`] was called: the console is in [`CONSOLE_POOL`] until
    /// retired.
    served: AtomicBool,
    /// Out of the pool (closed or stopped, its sink flushed or given up).
    retired: AtomicBool,
    /// Its scheduling state in [`CONSOLE_POOL`].
    sched: Sched,
    /// The pty sink, written by the console's turn without waiting.
    pty: Mutex<Option<Arc<pty::Pty>>>,
    /// The poller left the pty's input alone (queue full); a turn that frees room
    /// wakes it.
    input_blocked: AtomicBool,
    /// The pty was full: the poller watches it for writing.
    pty_out_wanted: AtomicBool,
    pty_path: Mutex<Option<PathBuf>>,
    /// Called (outside the console's lock) when the guest breaks the ring
    /// protocol: a secondary console's control state machine reports it at once.
    on_fail: Mutex<Option<Notifier>>,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("domid", &self.domid.0)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Console {
    fn new(domid: DomId, devid: u32, config: ConsoleConfig) -> Arc<Console> {
        Arc::new_cyclic(|me| Console {
            domid,
            devid,
            config,
            me: me.clone(),
            shared: Mutex::new(Shared {
                history: History::new(config.history_bytes),
                to_sink: VecDeque::new(),
                sink_start: 0,
                has_sink: false,
                overflow: Overflow::Backpressure,
                parked: None,
                writer_running: false,
                input: VecDeque::new(),
                ring: None,
                state: ConsoleState::Waiting,
                stats: ConsoleStats::default(),
                hostile: None,
                hostile_done: false,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            served: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            sched: Sched::default(),
            pty: Mutex::new(None),
            input_blocked: AtomicBool::new(false),
            pty_out_wanted: AtomicBool::new(false),
            pty_path: Mutex::new(None),
            on_fail: Mutex::new(None),
        })
    }

    /// The domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The console number: 0 for the primary console, N for `device/console/N`.
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// A handler for the ring's event channel: schedules the console's turn on the
    /// console pool (a counter and at most a queue push; safe to run inside the
    /// guest's hypercall).
    pub fn kick_handler(self: &Arc<Self>) -> Dom0Handler {
        let weak = Arc::downgrade(self);
        Arc::new(move || {
            if let Some(c) = weak.upgrade() {
                c.kick();
            }
        })
    }

    /// Starts serving `ring` (of guest `dom`) into `sink`: marks the ring connected
    /// and puts the console in the console pool (a pty's input goes to the
    /// console poller). Output that arrived earlier (early console) is written to
    /// the sink first. Route the ring's event channel to [`Console::kick_handler`].
    /// A console is served once: a second call fails with
    /// [`Error::AlreadyStarted`].
    pub fn serve(
        self: &Arc<Self>,
        dom: &Arc<Domain>,
        ring: RingAttachment,
        sink: Sink,
    ) -> Result<(), Error> {
        let page = ring.page.shared();
        if !page.contains(0, abi::CONNECTION + 1) || !(page.as_ptr() as usize).is_multiple_of(4) {
            return Err(Error::BadRing);
        }
        if self.served.load(Ordering::SeqCst) {
            return Err(Error::AlreadyStarted(self.domid, self.devid));
        }
        let is_pty = matches!(sink, Sink::Pty);
        let mut pty = None;
        let writer: Option<Box<dyn Write + Send>> = match sink {
            Sink::None => None,
            Sink::Stdout => Some(Box::new(io::stdout())),
            Sink::File(p) => Some(Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(Error::Sink)?,
            )),
            Sink::Pty => {
                pty = Some(Arc::new(pty::Pty::open().map_err(Error::Sink)?));
                None
            }
            Sink::Writer(w) => Some(w),
        };
        if self.served.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyStarted(self.domid, self.devid));
        }
        if let Some(p) = &pty {
            if let Err(e) = poller::add(self, p.clone()) {
                self.served.store(false, Ordering::SeqCst);
                return Err(Error::Thread(e));
            }
            *lock(&self.pty_path) = Some(p.path().clone());
        }
        {
            let mut s = lock(&self.shared);
            s.overflow = self.config.overflow.unwrap_or(if is_pty {
                Overflow::DropOldest
            } else {
                Overflow::Backpressure
            });
            s.has_sink = writer.is_some() || pty.is_some();
            s.parked = writer;
            if s.has_sink {
                // Early output so far goes to the sink too.
                let h: Vec<u8> = s.history.buf.iter().copied().collect();
                s.sink_start = s.history.start();
                s.to_sink = h.into();
            }
            s.ring = Some(BackRing::attach(dom, ring));
            s.state = ConsoleState::Connected;
        }
        *lock(&self.pty) = pty;
        CONSOLE_POOL.register();
        // Serve anything the guest wrote before we were listening.
        self.schedule();
        Ok(())
    }

    /// Makes this console misbehave on purpose (docs/hostile-mode.md): the mode
    /// strikes once, at the first ring output served after this call; `None`
    /// before it struck turns it off. The history keeps everything the guest
    /// wrote before, and its `CONSOLEIO_write` output after.
    pub fn set_hostile(&self, mode: Option<ConsoleHostile>) {
        let mut s = lock(&self.shared);
        if !s.hostile_done {
            s.hostile = mode;
        }
    }

    /// Current state.
    pub fn state(&self) -> ConsoleState {
        lock(&self.shared).state.clone()
    }

    /// Counters.
    pub fn stats(&self) -> ConsoleStats {
        let mut st = lock(&self.shared).stats.clone();
        let c = self.sched.counters();
        st.runs = c.runs();
        st.spurious_events = c.spurious();
        st.backoffs = c.backoffs();
        st
    }

    /// The pty's slave path, for a [`Sink::Pty`] console.
    pub fn pty_path(&self) -> Option<PathBuf> {
        lock(&self.pty_path).clone()
    }

    /// The output kept (the last [`ConsoleConfig::history_bytes`]).
    pub fn history(&self) -> Vec<u8> {
        lock(&self.shared).history.buf.iter().copied().collect()
    }

    /// Total output bytes seen so far (ring and early).
    pub fn output_total(&self) -> u64 {
        lock(&self.shared).history.total
    }

    /// Appends `CONSOLEIO_write` output (what [`ConsoleBackend::early_sink`] calls).
    /// Never blocks beyond a short lock.
    pub fn push_early(&self, bytes: &[u8]) {
        let mut s = lock(&self.shared);
        s.stats.early_bytes += bytes.len() as u64;
        self.append_output(&mut s, bytes, true);
        drop(s);
        self.schedule();
    }

    fn append_output(&self, s: &mut Shared, bytes: &[u8], early: bool) {
        s.history.push(bytes);
        if s.has_sink {
            s.to_sink.extend(bytes);
            let bound = if early || s.overflow == Overflow::DropOldest {
                if early && s.overflow == Overflow::Backpressure {
                    self.config.buffer_bytes.saturating_mul(2)
                } else {
                    self.config.buffer_bytes
                }
            } else {
                usize::MAX
            };
            let excess = s.to_sink.len().saturating_sub(bound);
            if excess > 0 {
                s.to_sink.drain(..excess);
                s.sink_start += excess as u64;
                s.stats.dropped += excess as u64;
            }
        }
        self.changed.notify_all();
    }

    /// Called by the event channel handler (in the guest's hypercall): a counter
    /// and a [`Pool::notify`], nothing more. A console whose notifications keep
    /// finding nothing to do is held back (docs/hostile-input.md E1).
    fn kick(&self) {
        lock(&self.shared).stats.kicks += 1;
        if !self.served.load(Ordering::SeqCst) {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            let q: Arc<dyn Served> = me;
            CONSOLE_POOL.notify(&q);
        }
    }

    /// Queues the console's turn on the console pool for work of the backend's
    /// own (once: a console already queued or being served only gets its
    /// `pending` flag; one held back is queued at once). Nothing before
    /// [`Console::serve`].
    fn schedule(&self) {
        if !self.served.load(Ordering::SeqCst) {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            let q: Arc<dyn Served> = me;
            CONSOLE_POOL.kick(&q);
        }
    }

    /// Room in the input queue.
    fn input_room(&self) -> usize {
        INPUT_QUEUE_BYTES.saturating_sub(lock(&self.shared).input.len())
    }

    /// Whether [`Console::stop`] was called.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Wakes whoever waits on this console's output or state (clients; a
    /// channel's socket side when it stops).
    pub(crate) fn nudge(&self) {
        let _g = lock(&self.shared);
        self.changed.notify_all();
    }

    /// Queues terminal input for the guest (at most [`INPUT_QUEUE_BYTES`] waiting);
    /// returns how many bytes were accepted. Puts what fits into the ring at once.
    pub fn send_input(&self, bytes: &[u8]) -> usize {
        let mut s = lock(&self.shared);
        let room = INPUT_QUEUE_BYTES.saturating_sub(s.input.len());
        let n = room.min(bytes.len());
        s.input.extend(&bytes[..n]);
        let notify = self.feed_input(&mut s);
        drop(s);
        if let Some(n) = notify {
            n();
        }
        n
    }

    /// Input queue → ring. Returns who to notify (after unlocking), if anyone.
    fn feed_input(&self, s: &mut Shared) -> Option<Notifier> {
        if s.input.is_empty() || s.state != ConsoleState::Connected {
            return None;
        }
        let ring = s.ring.as_mut()?;
        let (a, b) = s.input.as_slices();
        let mut pushed = 0;
        let mut fault = None;
        for part in [a, b] {
            match ring.push_input(part) {
                Ok(n) => {
                    pushed += n;
                    if n < part.len() {
                        break;
                    }
                }
                Err(f) => {
                    fault = Some(f);
                    break;
                }
            }
        }
        let notifier = ring.notifier.clone();
        s.input.drain(..pushed);
        if let Some(f) = fault {
            return Some(self.fail(s, f));
        }
        if pushed > 0 {
            // Work (often on a client's thread, not in a run): it ends a streak
            // of spurious notifications (the guest's answers to input).
            self.sched.worked();
            s.stats.input_bytes += pushed as u64;
            s.stats.notifies += 1;
            return Some(notifier);
        }
        None
    }

    /// Fails the console (guest broke the protocol): the ring is not touched again.
    /// Returns who to notify (after unlocking): the guest, and the
    /// [`Console::set_fail_hook`] hook.
    fn fail(&self, s: &mut Shared, f: RingFault) -> Notifier {
        let n = s.ring.as_ref().map(|r| r.disconnect());
        s.ring = None;
        s.state = ConsoleState::Failed(f);
        self.changed.notify_all();
        let hook = lock(&self.on_fail).clone();
        Arc::new(move || {
            if let Some(n) = &n {
                n();
            }
            if let Some(h) = &hook {
                h();
            }
        })
    }

    /// Calls `hook` (outside the console's lock) whenever the guest breaks the ring
    /// protocol ([`ConsoleState::Failed`]): how a channel's control state machine
    /// learns of it without polling.
    pub(crate) fn set_fail_hook(&self, hook: Option<Arc<dyn Fn() + Send + Sync>>) {
        *lock(&self.on_fail) = hook;
    }

    /// A client reading output from the start of the history (`from_history`) or from
    /// now on, and writing input.
    pub fn attach(self: &Arc<Self>, from_history: bool) -> ConsoleClient {
        let s = lock(&self.shared);
        let cursor = if from_history {
            s.history.start()
        } else {
            s.history.total
        };
        ConsoleClient {
            console: self.clone(),
            cursor,
        }
    }

    /// Waits until `text` appears anywhere in the history (including output from
    /// before the call), up to `timeout`.
    pub fn wait_for(&self, text: &[u8], timeout: Duration) -> Result<(), WaitError> {
        self.wait_for_from(0, text, timeout).map(|_| ())
    }

    /// Waits until `text` appears in output after absolute offset `from`; returns the
    /// offset just past the match.
    fn wait_for_from(&self, from: u64, text: &[u8], timeout: Duration) -> Result<u64, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared);
        loop {
            if let Some(end) = s.history.find(text, from) {
                return Ok(end);
            }
            if matches!(s.state, ConsoleState::Failed(_) | ConsoleState::Closed) {
                return Err(WaitError::Closed(s.state.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout {
                    tail: s.history.tail(512),
                });
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops serving: the ring is marked `XENCONSOLE_DISCONNECTED` (a waiting guest
    /// writer gets `Disconnected` instead of waiting out its timeout), the console
    /// leaves the pool after one last try at its sink, and its pty goes. The
    /// history stays readable.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        poller::remove(self);
        if self.retired.load(Ordering::SeqCst) {
            // Retired earlier (closed with its domain): its pty goes now.
            *lock(&self.pty) = None;
        }
        let notify = {
            let mut s = lock(&self.shared);
            let n = s.ring.take().map(|r| r.disconnect());
            if !matches!(s.state, ConsoleState::Failed(_)) {
                s.state = ConsoleState::Closed;
            }
            n
        };
        if let Some(n) = notify {
            n();
        }
        self.nudge();
        // The console's last turn retires it; a blocking sink's writer thread ends
        // by itself after one more write at most (it is not joined, so a sink stuck
        // in `write` cannot hang us).
        self.schedule();
    }

    /// One round of ring service: drain what the sink buffer allows, feed input.
    /// Returns who to notify (after unlocking), if anyone.
    fn service_ring(&self, s: &mut Shared) -> Option<Notifier> {
        if s.state != ConsoleState::Connected {
            return None;
        }
        if s.hostile_done && s.hostile == Some(ConsoleHostile::OutConsPastProd) {
            // The ring was abandoned on purpose.
            return None;
        }
        let room = if !s.has_sink || s.overflow == Overflow::DropOldest {
            usize::MAX
        } else {
            self.config.buffer_bytes.saturating_sub(s.to_sink.len())
        };
        let ring = s.ring.as_mut()?;
        let notifier = ring.notifier.clone();
        let mut out = Vec::new();
        let mut fault = None;
        // Two rounds: the guest may refill while we copy.
        for _ in 0..2 {
            let want = room.saturating_sub(out.len()).min(abi::OUT_SIZE);
            match ring.drain(want, &mut out) {
                Ok(0) => break,
                Ok(_) => {}
                Err(f) => {
                    fault = Some(f);
                    break;
                }
            }
        }
        if fault.is_none() && room <= out.len() {
            match ring.out_pending() {
                Ok(true) => s.stats.backpressure += 1,
                Ok(false) => {}
                Err(f) => fault = Some(f),
            }
        }
        let mut notify = None;
        if !out.is_empty() {
            s.stats.notifies += 1;
            s.stats.ring_bytes += out.len() as u64;
            self.append_output(s, &out, false);
            notify = Some(notifier);
        }
        if let Some(f) = fault {
            return Some(self.fail(s, f));
        }
        if !out.is_empty() && !s.hostile_done {
            if let (Some(h), Some(ring)) = (s.hostile, s.ring.as_ref()) {
                strike(ring, h);
                s.hostile_done = true;
                if h == ConsoleHostile::EventStorm {
                    self.start_event_storm();
                }
            }
        }
        let storm = s.hostile == Some(ConsoleHostile::EventStorm);
        if s.hostile_done && s.hostile.is_some() && !storm {
            // Input would go through indices the guest no longer trusts.
            return notify;
        }
        self.feed_input(s).or(notify)
    }

    /// Hostile mode `console.event_storm`: a thread notifies the guest every 50 µs,
    /// with nothing new on the ring, while the ring is served (until the console
    /// stops, fails or closes), counting [`ConsoleStats::storm_events`].
    fn start_event_storm(&self) {
        let w = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("consback-storm".into())
            .spawn(move || loop {
                {
                    let Some(c) = w.upgrade() else { return };
                    if c.stopped() {
                        return;
                    }
                    let notify = {
                        let mut s = lock(&c.shared);
                        let n = s.ring.as_ref().map(|r| r.notifier.clone());
                        let Some(n) = n.filter(|_| s.state == ConsoleState::Connected) else {
                            return;
                        };
                        s.stats.storm_events += 1;
                        n
                    };
                    notify();
                }
                std::thread::sleep(Duration::from_micros(50));
            });
        if let Err(e) = spawned {
            eprintln!("console: hostile mode console.event_storm: no thread: {e}");
        }
    }

    /// One turn on the console pool: ring → history and sink buffer, input →
    /// ring, and one chunk to a pty sink; starts the writer thread of a blocking
    /// sink when bytes wait for it. Never waits.
    fn serve_turn(&self) -> Turn {
        if self.retired.load(Ordering::SeqCst) {
            return Turn::Off;
        }
        let stopping = self.stopped();
        let (mut progressed, notify, done, start_writer) = {
            let mut s = lock(&self.shared);
            // A destroyed domain: one last drain, then close.
            let dying = s
                .ring
                .as_ref()
                .is_some_and(|r| r.dom.state() == xen_model::DomainState::Dying);
            let notify = self.service_ring(&mut s);
            if dying && s.state == ConsoleState::Connected {
                s.ring = None;
                s.state = ConsoleState::Closed;
                self.changed.notify_all();
            }
            let done =
                stopping || matches!(s.state, ConsoleState::Closed | ConsoleState::Failed(_));
            let start_writer = if !s.to_sink.is_empty() && !s.writer_running {
                s.parked.take()
            } else {
                None
            };
            s.writer_running |= start_writer.is_some();
            (notify.is_some(), notify, done, start_writer)
        };
        if let Some(n) = notify {
            n();
        }
        if self.input_room() > 0 && self.input_blocked.swap(false, Ordering::SeqCst) {
            poller::wake();
        }
        if let Some(w) = start_writer {
            self.start_writer(w);
        }
        let pty = lock(&self.pty).clone();
        if let Some(p) = pty {
            progressed |= self.write_pty(&p);
        }
        if done && !progressed {
            self.retire();
            return Turn::Off;
        }
        Turn::Did(usize::from(progressed))
    }

    /// Out of the pool, once: the console is closed or stopped and its pty took
    /// what it could.
    fn retire(&self) {
        if !self.retired.swap(true, Ordering::SeqCst) {
            CONSOLE_POOL.unregister();
            if self.stopped() {
                *lock(&self.pty) = None;
            }
        }
    }

    /// The sink buffer's front chunk and its absolute offset.
    fn sink_chunk(s: &Shared) -> (Vec<u8>, u64) {
        let n = s.to_sink.len().min(SINK_CHUNK);
        (s.to_sink.range(..n).copied().collect(), s.sink_start)
    }

    /// Accounts a sink write of `r` for the chunk at `chunk_at`. Returns whether
    /// anything moved; `Err(())` when the sink is given up.
    fn wrote(&self, s: &mut Shared, chunk_at: u64, r: io::Result<usize>) -> Result<bool, ()> {
        match r {
            Ok(n) if n > 0 => {
                let end = chunk_at + n as u64;
                let k = end.saturating_sub(s.sink_start) as usize;
                let k = k.min(s.to_sink.len());
                s.to_sink.drain(..k);
                s.sink_start += k as u64;
                s.stats.sink_bytes += n as u64;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => {
                // The sink is gone (closed pipe, full disk ...): keep serving the
                // ring into history and clients.
                s.stats.sink_error = Some(e.to_string());
                s.stats.dropped += s.to_sink.len() as u64;
                s.to_sink.clear();
                s.has_sink = false;
                Err(())
            }
        }
    }

    /// One chunk to the pty, without waiting; a full pty is left to the poller.
    fn write_pty(&self, p: &pty::Pty) -> bool {
        let (chunk, at) = Self::sink_chunk(&lock(&self.shared));
        if chunk.is_empty() {
            return false;
        }
        let r = p.write(&chunk);
        let would_block = matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        let res = self.wrote(&mut lock(&self.shared), at, r);
        if res.is_err() {
            *lock(&self.pty) = None;
        }
        if would_block && !self.stopped() {
            self.pty_out_wanted.store(true, Ordering::SeqCst);
            poller::wake();
        }
        res.unwrap_or(true)
    }

    /// Starts the thread that writes a blocking sink while bytes wait for it.
    fn start_writer(&self, w: Box<dyn Write + Send>) {
        let Some(me) = self.me.upgrade() else { return };
        let name = format!("console-sink-d{}-{}", self.domid.0, self.devid);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || me.writer_thread(w));
        if let Err(e) = spawned {
            let mut s = lock(&self.shared);
            s.writer_running = false;
            s.stats.sink_error = Some(format!("cannot start the sink writer: {e}"));
            s.stats.dropped += s.to_sink.len() as u64;
            s.to_sink.clear();
            s.has_sink = false;
            drop(s);
            self.schedule(); // the ring may have been held for the sink
        }
    }

    /// A blocking sink's writer: writes the sink buffer until it stays empty for
    /// [`WRITER_LINGER`] (then parks the sink and ends), or the console is done
    /// and the buffer is written, or the sink fails. After each write it schedules
    /// the console: a ring held back by a full buffer drains again.
    fn writer_thread(self: Arc<Self>, mut w: Box<dyn Write + Send>) {
        loop {
            let (chunk, at) = {
                let mut s = lock(&self.shared);
                let mut lingered = false;
                loop {
                    if !s.to_sink.is_empty() {
                        break;
                    }
                    let done = self.stopped()
                        || matches!(s.state, ConsoleState::Closed | ConsoleState::Failed(_));
                    if done || lingered {
                        if !done {
                            s.parked = Some(w);
                        }
                        s.writer_running = false;
                        return;
                    }
                    let (g, t) = self
                        .changed
                        .wait_timeout(s, WRITER_LINGER)
                        .unwrap_or_else(|e| e.into_inner());
                    s = g;
                    lingered = t.timed_out();
                }
                Self::sink_chunk(&s)
            };
            let r = w.write(&chunk).and_then(|n| w.flush().map(|()| n));
            let res = {
                let mut s = lock(&self.shared);
                let res = self.wrote(&mut s, at, r);
                if !matches!(res, Ok(true)) && self.stopped() {
                    // A sink that stopped taking bytes does not keep the thread.
                    s.writer_running = false;
                    return;
                }
                if res.is_err() {
                    s.writer_running = false;
                }
                res
            };
            self.schedule();
            match res {
                Err(()) => return,
                Ok(false) => std::thread::sleep(Duration::from_millis(5)),
                Ok(true) => {}
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // A served console dropped without `stop` (its owner went): it counts in
        // the pool until retired.
        if self.served.load(Ordering::SeqCst) && !self.retired.swap(true, Ordering::SeqCst) {
            CONSOLE_POOL.unregister();
        }
    }
}

impl Served for Console {
    fn turn(&self, _budget: usize) -> Turn {
        self.serve_turn()
    }

    fn rearm(&self) -> bool {
        // Nothing to re-arm: a console ring has no event index; a kick during
        // the run is the pool's `pending` flag.
        false
    }

    fn sched(&self) -> &Sched {
        &self.sched
    }
}

/// A reader of a console's output (through its own cursor into the history) and a
/// writer of its input. Clients never slow the guest.
#[derive(Debug)]
pub struct ConsoleClient {
    console: Arc<Console>,
    cursor: u64,
}

/// What [`ConsoleClient::recv`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Output bytes.
    Output(Vec<u8>),
    /// The client fell behind the history: this many bytes were missed (output
    /// follows in the next event).
    Skipped(u64),
    /// The console is closed or failed and all its output was delivered.
    Closed(ConsoleState),
}

impl ConsoleClient {
    /// The console.
    pub fn console(&self) -> &Arc<Console> {
        &self.console
    }

    /// The next output (up to 64 KiB), waiting up to `timeout`; `None` on timeout.
    pub fn recv(&mut self, timeout: Duration) -> Option<ClientEvent> {
        self.recv_unless(timeout, &|| false)
    }

    /// [`ConsoleClient::recv`], giving up (`None`) once `abort()` is true. It is
    /// checked under the console's lock before each wait, so setting its flag and
    /// then calling [`Console::nudge`] never loses the wake-up.
    pub(crate) fn recv_unless(
        &mut self,
        timeout: Duration,
        abort: &dyn Fn() -> bool,
    ) -> Option<ClientEvent> {
        let deadline = Instant::now() + timeout;
        let c = &self.console;
        let mut s = lock(&c.shared);
        loop {
            let (skipped, bytes) = s.history.read_from(self.cursor, 64 * 1024);
            if skipped > 0 {
                self.cursor += skipped;
                return Some(ClientEvent::Skipped(skipped));
            }
            if !bytes.is_empty() {
                self.cursor += bytes.len() as u64;
                return Some(ClientEvent::Output(bytes));
            }
            if matches!(s.state, ConsoleState::Failed(_) | ConsoleState::Closed) {
                return Some(ClientEvent::Closed(s.state.clone()));
            }
            let now = Instant::now();
            if now >= deadline || abort() {
                return None;
            }
            s = c
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `text` appears after this client's cursor, then moves the cursor
    /// past it (so a test can send input and wait for the reply in order).
    pub fn wait_for(&mut self, text: &[u8], timeout: Duration) -> Result<(), WaitError> {
        let end = self.console.wait_for_from(self.cursor, text, timeout)?;
        self.cursor = end;
        Ok(())
    }

    /// Sends input to the guest; returns how many bytes were accepted
    /// ([`Console::send_input`]).
    pub fn send_input(&self, bytes: &[u8]) -> usize {
        self.console.send_input(bytes)
    }
}

impl io::Read for ConsoleClient {
    /// Blocks until output arrives (skips are ignored); `Ok(0)` once the console is
    /// closed and drained.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let s = lock(&self.console.shared);
            let (skipped, bytes) = s.history.read_from(self.cursor, buf.len());
            drop(s);
            self.cursor += skipped;
            if !bytes.is_empty() {
                buf[..bytes.len()].copy_from_slice(&bytes);
                self.cursor += bytes.len() as u64;
                return Ok(bytes.len());
            }
            match self.recv(Duration::from_millis(200)) {
                Some(ClientEvent::Closed(_)) => return Ok(0),
                Some(ClientEvent::Output(b)) => {
                    // recv advanced the cursor; give back what does not fit.
                    let n = b.len().min(buf.len());
                    buf[..n].copy_from_slice(&b[..n]);
                    self.cursor -= (b.len() - n) as u64;
                    return Ok(n);
                }
                Some(ClientEvent::Skipped(_)) | None => {}
            }
        }
    }
}

impl io::Write for ConsoleClient {
    /// Queues input; `WouldBlock` when the guest's input queue is full.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.send_input(buf) {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---- the registry ------------------------------------------------------------------------

/// All consoles of one hypervisor: the toolstack's handle.
pub struct ConsoleBackend {
    hv: Weak<Hypervisor>,
    config: ConsoleConfig,
    consoles: Mutex<HashMap<(u16, u32), Arc<Console>>>,
    me: Weak<ConsoleBackend>,
}

impl fmt::Debug for ConsoleBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<(u16, u32)> = lock(&self.consoles).keys().copied().collect();
        f.debug_struct("ConsoleBackend")
            .field("consoles", &ids)
            .finish_non_exhaustive()
    }
}

impl ConsoleBackend {
    /// A backend for `hv`'s domains.
    pub fn new(hv: &Arc<Hypervisor>, config: ConsoleConfig) -> Arc<ConsoleBackend> {
        let b = Arc::new_cyclic(|me| ConsoleBackend {
            hv: Arc::downgrade(hv),
            config,
            consoles: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        // A domain going away kicks its consoles (one last drain, then closed)
        // without anyone polling for it.
        let events = hv.subscribe();
        let me = Arc::downgrade(&b);
        let _ = std::thread::Builder::new()
            .name("console-reaper".into())
            .spawn(move || {
                for ev in events {
                    let id = match ev {
                        DomainEvent::StateChanged(id, s)
                            if s == DomainState::Dying || s.is_finished() =>
                        {
                            id
                        }
                        DomainEvent::Destroyed(id) => id,
                        _ => continue,
                    };
                    let Some(b) = me.upgrade() else { return };
                    let hit: Vec<Arc<Console>> = lock(&b.consoles)
                        .iter()
                        .filter(|((d, _), _)| *d == id.0)
                        .map(|(_, c)| c.clone())
                        .collect();
                    drop(b);
                    for c in hit {
                        c.kick();
                    }
                }
            });
        b
    }

    /// A sink for [`xen_model::DomainSpec::console_sink`]: routes the domain's
    /// `CONSOLEIO_write` output into its console (history, sink, clients), creating
    /// the console record if the ring is not served yet.
    pub fn early_sink(&self) -> ConsoleSink {
        let me = self.me.clone();
        Arc::new(move |dom: DomId, bytes: &[u8]| {
            if let Some(b) = me.upgrade() {
                b.entry(dom, 0).push_early(bytes);
            }
        })
    }

    /// The console record of (`dom`, console number `devid`), created if needed (not
    /// yet served: see [`Console::serve`]). For secondary consoles, whose backend
    /// (xenbus handshake, grant mapping, port binding) lives elsewhere.
    pub fn entry(&self, dom: DomId, devid: u32) -> Arc<Console> {
        lock(&self.consoles)
            .entry((dom.0, devid))
            .or_insert_with(|| Console::new(dom, devid, self.config))
            .clone()
    }

    /// Starts serving `dom`'s primary console (the HVM-param page) into `sink`:
    /// installs the event-channel handler and [`Console::serve`]s the ring.
    pub fn start(&self, dom: &Arc<Domain>, sink: Sink) -> Result<Arc<Console>, Error> {
        let hv = self.hv.clone();
        if hv.upgrade().is_none() {
            return Err(Error::NoHypervisor);
        }
        let console = self.entry(dom.id(), 0);
        let port = dom.console().dom0_port;
        let ring = RingAttachment {
            page: Box::new(dom.console_ring().clone()),
            notify: Arc::new(move || {
                if let Some(hv) = hv.upgrade() {
                    // Unbound (the guest closed its end, or it is going): no one to wake.
                    let _ = hv.dom0_send(port);
                }
            }),
            hold: Box::new(dom.clone()),
        };
        dom.set_console_handler(Some(console.kick_handler()));
        console.serve(dom, ring, sink)?;
        Ok(console)
    }

    /// The primary console of domain `dom`, if it has one.
    pub fn console(&self, dom: DomId) -> Option<Arc<Console>> {
        self.console_n(dom, 0)
    }

    /// Console number `devid` of domain `dom`, if it has one.
    pub fn console_n(&self, dom: DomId, devid: u32) -> Option<Arc<Console>> {
        lock(&self.consoles).get(&(dom.0, devid)).cloned()
    }

    /// Stops and forgets domain `dom`'s console; returns it (its history stays
    /// readable). A destroyed domain's console closes by itself but stays listed (so
    /// `console` can still show its last output) until removed here.
    pub fn remove(&self, dom: DomId) -> Option<Arc<Console>> {
        let c = self.remove_n(dom, 0)?;
        if let Some(d) = self.hv.upgrade().and_then(|hv| hv.domain(dom)) {
            d.set_console_handler(None);
        }
        Some(c)
    }

    /// Stops and forgets console number `devid` of domain `dom` (its ring attachment
    /// is dropped: a secondary console's mapping and port go with it).
    pub fn remove_n(&self, dom: DomId, devid: u32) -> Option<Arc<Console>> {
        let c = lock(&self.consoles).remove(&(dom.0, devid))?;
        c.stop();
        Some(c)
    }
}

impl Drop for ConsoleBackend {
    fn drop(&mut self) {
        let all: Vec<Arc<Console>> = lock(&self.consoles).drain().map(|(_, c)| c).collect();
        for c in all {
            c.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_tail_and_absolute_offsets() {
        let mut h = History::new(8);
        h.push(b"hello");
        h.push(b" world");
        assert_eq!(h.total, 11);
        assert_eq!(h.start(), 3);
        assert_eq!(h.buf.iter().copied().collect::<Vec<_>>(), b"lo world");
        assert_eq!(h.read_from(0, 100), (3, b"lo world".to_vec()));
        assert_eq!(h.read_from(9, 100), (0, b"ld".to_vec()));
        assert_eq!(h.read_from(11, 100), (0, vec![]));
        h.push(b"0123456789abc");
        assert_eq!(h.buf.iter().copied().collect::<Vec<_>>(), b"56789abc");
        assert_eq!(h.start(), 16);
    }

    #[test]
    fn history_find_spans_pushes_and_respects_from() {
        let mut h = History::new(64);
        h.push(b"abc re");
        h.push(b"ady xyz ready");
        assert_eq!(h.find(b"ready", 0), Some(9));
        assert_eq!(h.find(b"ready", 9), Some(19));
        assert_eq!(
            h.find(b"ready", 8),
            Some(9),
            "a match ending after `from` counts"
        );
        assert_eq!(h.find(b"ready", 19), None);
        assert_eq!(h.find(b"nope", 0), None);
    }
}
