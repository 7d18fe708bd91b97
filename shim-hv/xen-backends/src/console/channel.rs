//! Channels: named secondary consoles (`device/console/N`, N ≥ 1; xl's `channel=`,
//! `xen-pv-channel(7)`), served by the console backend and connected on the host
//! side to a pty or a Unix socket.
//!
//! ```text
//!  ChannelBackend::start ──▶ the nodes libxl's libxl__device_console_add writes:
//!     backend  .../backend/console/<fe>/<N>: frontend, frontend-id, online, state,
//!              protocol = vt100, name, connection, path (socket only)
//!     frontend .../device/console/<N>: backend, backend-id, state, protocol
//!              (the guest's), and read-only for the guest: name, limit, type = ioemu,
//!              output (pty | chardev:libxl-channel<N>), tty
//!  control loop (`xb-ctl-console`):
//!     InitWait ─ frontend Initialised ─▶ map ring-ref, bind port,
//!     Console::serve (ConsoleBackend::entry(fe, N)) ─ Connected; a pty's path goes
//!     to the frontend's tty node (docs/misc/console.txt)
//!     frontend Closing/Closed, or a ring fault ─▶ the console is removed (ring
//!     unmapped, port closed), the backend goes Closing/Closed
//!  socket: bound when the channel starts (a path that cannot be bound fails the
//!     start); one client at a time, the next is accepted when it hangs up;
//!     guest output ──▶ client, client bytes ──▶ guest input
//! ```
//!
//! Output the guest writes while no client is connected is kept in the console's
//! history (up to [`super::HISTORY_BYTES`]) and goes to the next client, so an agent
//! that connects late still reads the guest's first words. Input from a client waits
//! (backpressure on the socket) while the guest does not read. The socket file is
//! created mode 0600; a socket file left behind by a backend that is gone (nobody
//! accepts on it) is replaced, any other existing file is an error. It is removed
//! again when the channel goes.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use hypercall::abi::xenbus::XenbusState;
use hypercall::{DomId, GrantRef, Port};

use super::{ClientEvent, Console, ConsoleBackend, ConsoleClient, ConsoleState, RingAttachment};
use crate::hostile::ConsoleHostile;
use crate::xenbus::{self as xb, DeviceSpec, XenbusBackend};
use xen_model::Hypervisor;

/// The `protocol` libxl writes for consoles (`LIBXL_XENCONSOLE_PROTOCOL`).
pub const PROTOCOL: &str = "vt100";
/// The `limit` libxl writes for consoles (`LIBXL_XENCONSOLE_LIMIT`).
pub const LIMIT: u32 = 1_048_576;
/// Pause after a failed `accept` other than "nobody waiting" (out of file
/// descriptors, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Bound of each blocking socket write to a client that does not read (then
/// the stop flag is checked).
const IO_SLICE: Duration = Duration::from_millis(100);
/// Longest the output side waits for guest output in one go: only a guard (new
/// output, the console closing, a stop and the client hanging up all wake it).
const FOLLOW_WAIT: Duration = Duration::from_secs(3600);

/// The host side of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// A new pseudo-terminal each time the guest connects.
    Pty,
    /// A listening Unix socket at this path.
    Socket(PathBuf),
}

/// One channel to offer.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Console number (≥ 1): `device/console/<devid>`.
    pub devid: u32,
    /// The channel's name (`name` nodes).
    pub name: String,
    /// Where its data goes.
    pub connection: Connection,
    /// Misbehave on purpose (docs/hostile-mode.md): set on the channel's console
    /// each time the guest connects its ring; it strikes at the first output
    /// served, as on the primary console.
    pub hostile: Option<ConsoleHostile>,
}

/// Why a channel could not be offered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Console 0 is the primary console, not a channel.
    #[error("console {0} cannot be a channel (0 is the primary)")]
    BadDevice(u32),
    /// The socket could not be bound.
    #[error("path={}: cannot listen: {err}", .path.display())]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// The socket path exists and is not a socket left by a backend that is gone.
    #[error("path={}: already exists (only a socket nobody listens on is replaced)", .0.display())]
    PathInUse(PathBuf),
    /// Creating the xenstore nodes failed.
    #[error("{0}")]
    Xenbus(xb::Error),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl From<xb::Error> for Error {
    fn from(e: xb::Error) -> Self {
        Error::Xenbus(e)
    }
}

struct Shared {
    hv: Arc<Hypervisor>,
    consoles: Weak<ConsoleBackend>,
    frontend: DomId,
    cfg: ChannelConfig,
    /// A ring is being served.
    connected: AtomicBool,
    stop: AtomicBool,
    /// Wakes the control state machine (stop, a ring fault): it sleeps until an
    /// event.
    control: Mutex<Option<xb::ControlWaker>>,
    /// Counts connects and disconnects of the ring (and is bumped on a stop): the
    /// socket's output side waits on it for the next console record.
    generation: Mutex<u64>,
    generation_cv: Condvar,
    /// The console record the socket's output side follows (to wake it).
    following: Mutex<Option<Arc<Console>>>,
    /// Written once on stop: wakes the socket's threads out of poll(2).
    stop_tx: Option<UnixStream>,
}

impl Shared {
    /// The console record this channel feeds (created if needed, so a socket client
    /// can wait on it before the guest connects).
    fn console(&self) -> Option<Arc<Console>> {
        Some(
            self.consoles
                .upgrade()?
                .entry(self.frontend, self.cfg.devid),
        )
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A new generation: wakes the socket's output side.
    fn bump(&self) {
        *lock(&self.generation) += 1;
        self.generation_cv.notify_all();
        let f = lock(&self.following).clone();
        if let Some(c) = f {
            c.nudge();
        }
    }

    fn wake_control(&self) {
        let w = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// A channel's backend: its xenstore presence, its handshake (on the control
/// loop) and (for a socket) its listener thread. Dropping it takes the channel
/// down.
pub struct ChannelBackend {
    shared: Arc<Shared>,
    /// The device on the `console` control loop.
    control: Option<xb::ControlHandle>,
    /// The socket listener's thread.
    threads: Vec<JoinHandle<()>>,
    backend_path: String,
    frontend_path: String,
    /// The socket file we bound, with its inode (removed on drop if still ours).
    socket: Option<(PathBuf, u64)>,
}

impl fmt::Debug for ChannelBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBackend")
            .field("devid", &self.shared.cfg.devid)
            .field("name", &self.shared.cfg.name)
            .field("connection", &self.shared.cfg.connection)
            .finish_non_exhaustive()
    }
}

/// Binds `path` (see the module docs for what an existing file means).
fn listen(path: &Path) -> Result<UnixListener, Error> {
    let err = |err| Error::Listen {
        path: path.to_path_buf(),
        err,
    };
    let l = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let stale = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
                && UnixStream::connect(path).is_err();
            if !stale {
                return Err(Error::PathInUse(path.to_path_buf()));
            }
            fs::remove_file(path).map_err(err)?;
            UnixListener::bind(path).map_err(err)?
        }
        Err(e) => return Err(err(e)),
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

impl ChannelBackend {
    /// Offers channel `cfg` to domain `frontend`: binds its socket (if any), writes
    /// the nodes (state `InitWait`) and starts the threads that serve it through
    /// `consoles`. On failure nothing is left behind.
    pub fn start(
        hv: &Arc<Hypervisor>,
        consoles: &Arc<ConsoleBackend>,
        frontend: DomId,
        cfg: ChannelConfig,
    ) -> Result<ChannelBackend, Error> {
        if cfg.devid == 0 {
            return Err(Error::BadDevice(0));
        }
        let listener = match &cfg.connection {
            Connection::Socket(p) => Some(listen(p)?),
            Connection::Pty => None,
        };
        let socket = match &cfg.connection {
            Connection::Socket(p) => fs::metadata(p).ok().map(|m| (p.clone(), m.ino())),
            Connection::Pty => None,
        };
        let remove_socket = |socket: &Option<(PathBuf, u64)>| {
            if let Some((p, ino)) = socket {
                if fs::metadata(p).is_ok_and(|m| m.ino() == *ino) {
                    let _ = fs::remove_file(p);
                }
            }
        };
        let (output, path) = match &cfg.connection {
            Connection::Pty => ("pty".to_string(), None),
            Connection::Socket(p) => (
                format!("chardev:libxl-channel{}", cfg.devid),
                Some(p.display().to_string()),
            ),
        };
        let mut spec = DeviceSpec::new("console", frontend, cfg.devid)
            .backend("protocol", PROTOCOL)
            .backend("name", &cfg.name)
            .backend(
                "connection",
                match cfg.connection {
                    Connection::Pty => "pty",
                    Connection::Socket(_) => "socket",
                },
            )
            .frontend("protocol", PROTOCOL)
            .frontend_ro("name", &cfg.name)
            .frontend_ro("limit", LIMIT)
            .frontend_ro("type", "ioemu")
            .frontend_ro("output", output)
            .frontend_ro("tty", "");
        if let Some(p) = path {
            spec = spec.backend("path", p);
        }
        let setup = XenbusBackend::create(hv, &spec).and_then(|mut xbe| {
            match xbe.switch_state(XenbusState::InitWait) {
                Ok(()) => Ok(xbe),
                Err(e) => {
                    let _ = xbe.destroy();
                    Err(e)
                }
            }
        });
        let xbe = match setup {
            Ok(x) => x,
            Err(e) => {
                remove_socket(&socket);
                return Err(e.into());
            }
        };
        let backend_path = xbe.backend_path().to_string();
        let frontend_path = xbe.frontend_path().to_string();
        let stop_pair = match listener {
            Some(_) => match UnixStream::pair() {
                Ok(p) => Some(p),
                Err(e) => {
                    let _ = xbe.destroy();
                    remove_socket(&socket);
                    return Err(Error::Thread(e));
                }
            },
            None => None,
        };
        let (stop_tx, stop_rx) = match stop_pair {
            Some((tx, rx)) => (Some(tx), Some(rx)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            hv: hv.clone(),
            consoles: Arc::downgrade(consoles),
            frontend,
            cfg,
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            control: Mutex::new(None),
            generation: Mutex::new(0),
            generation_cv: Condvar::new(),
            following: Mutex::new(None),
            stop_tx,
        });
        let mut me = ChannelBackend {
            shared: shared.clone(),
            control: None,
            threads: Vec::new(),
            backend_path,
            frontend_path,
            socket,
        };
        let name = format!("channel-d{}-{}", frontend.0, shared.cfg.devid);
        let sh = shared.clone();
        me.control = Some(
            xb::spawn_control(
                xbe,
                Box::new(Ctl(shared.clone())),
                Box::new(move || sh.stopping()),
            )
            .map_err(Error::Thread)?,
        );
        if let (Some(l), Some(stop_rx)) = (listener, stop_rx) {
            let sh = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("{name}-sock"))
                .spawn(move || accept_loop(sh, l, stop_rx))
                .map_err(Error::Thread)?;
            me.threads.push(t);
        }
        Ok(me)
    }

    /// The console number.
    pub fn devid(&self) -> u32 {
        self.shared.cfg.devid
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    /// The backend's xenstore directory.
    pub fn backend_path(&self) -> &str {
        &self.backend_path
    }

    /// The frontend's xenstore directory.
    pub fn frontend_path(&self) -> &str {
        &self.frontend_path
    }

    /// Whether the guest's ring is being served.
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// The console record (history, input, state), if there is one now.
    pub fn console(&self) -> Option<Arc<Console>> {
        self.shared
            .consoles
            .upgrade()?
            .console_n(self.shared.frontend, self.shared.cfg.devid)
    }

    /// The pty's slave path while a `Pty` channel is connected.
    pub fn pty_path(&self) -> Option<PathBuf> {
        self.console()?.pty_path()
    }

    /// The socket path of a `Socket` channel.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.shared.cfg.connection {
            Connection::Socket(p) => Some(p),
            Connection::Pty => None,
        }
    }

    /// Takes the channel down: threads stopped, console removed (ring unmapped, port
    /// closed), nodes removed, socket file removed.
    pub fn destroy(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake_control();
        if let Some(tx) = &self.shared.stop_tx {
            let _ = (&*tx).write(&[1]);
        }
        self.shared.bump();
        if let Some(c) = self.control.take() {
            c.join();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The listener may have created a record the control loop never served.
        if let Some(c) = self.shared.consoles.upgrade() {
            c.remove_n(self.shared.frontend, self.shared.cfg.devid);
        }
        if let Some((p, ino)) = self.socket.take() {
            if fs::metadata(&p).is_ok_and(|m| m.ino() == ino) {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

impl Drop for ChannelBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---- the xenbus side ---------------------------------------------------------------------

/// The control thread's device half (see [`xb::run_control`]).
struct Ctl(Arc<Shared>);

impl xb::Device for Ctl {
    fn connected(&self) -> bool {
        self.0.connected.load(Ordering::SeqCst)
    }
    fn connect(&self, xbe: &XenbusBackend) -> Result<(), String> {
        connect(&self.0, xbe)
    }
    fn disconnect(&self, _xbe: &XenbusBackend) {
        disconnect(&self.0);
    }
    fn set_control_waker(&self, waker: xb::ControlWaker) -> bool {
        *self.0.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker);
        true
    }
    fn take_failure(&self) -> Option<String> {
        // A guest that broke the ring protocol: tell it, as the other backends do.
        if !self.connected() {
            return None;
        }
        match self.0.console().map(|c| c.state()) {
            Some(ConsoleState::Failed(f)) => Some(f.to_string()),
            _ => None,
        }
    }
}

/// Maps the frontend's ring, binds its port and serves the console.
fn connect(sh: &Shared, xbe: &XenbusBackend) -> Result<(), String> {
    let gref = GrantRef(
        xbe.require_frontend_u32("ring-ref")
            .map_err(|e| e.to_string())?,
    );
    let port = Port(
        xbe.require_frontend_u32("port")
            .map_err(|e| e.to_string())?,
    );
    let dom = sh
        .hv
        .domain(sh.frontend)
        .ok_or_else(|| format!("domain {} is gone", sh.frontend.0))?;
    let console = sh.console().ok_or("the console backend is gone")?;
    let ring = xbe.map_ring(&[gref]).map_err(|e| e.to_string())?;
    let bound = Arc::new(
        xbe.bind_evtchn(port, console.kick_handler())
            .map_err(|e| e.to_string())?,
    );
    let notify = bound.clone();
    let attachment = RingAttachment {
        page: Box::new(ring),
        notify: Arc::new(move || notify.notify()),
        hold: Box::new(bound),
    };
    let sink = match sh.cfg.connection {
        Connection::Pty => super::Sink::Pty,
        Connection::Socket(_) => super::Sink::None,
    };
    if sh.cfg.hostile.is_some() {
        console.set_hostile(sh.cfg.hostile);
    }
    // A ring fault wakes the control state machine (it reports it at once).
    let waker = sh.control.lock().unwrap_or_else(|e| e.into_inner()).clone();
    console.set_fail_hook(waker.map(|w| Arc::new(move || w.wake()) as Arc<dyn Fn() + Send + Sync>));
    console
        .serve(&dom, attachment, sink)
        .map_err(|e| e.to_string())?;
    sh.connected.store(true, Ordering::SeqCst);
    sh.bump();
    if let Some(tty) = console.pty_path() {
        let node = format!("{}/tty", xbe.frontend_path());
        xbe.store()
            .write(
                xenstored::TxId::NONE,
                &node,
                tty.display().to_string().as_bytes(),
            )
            .map_err(|e| format!("{node}: {e}"))?;
    }
    Ok(())
}

/// Stops serving the ring (the record goes; a socket client moves to the next one).
fn disconnect(sh: &Shared) {
    if sh.connected.swap(false, Ordering::SeqCst) {
        if let Some(c) = sh.consoles.upgrade() {
            c.remove_n(sh.frontend, sh.cfg.devid);
        }
        sh.bump();
    }
}

// ---- the socket side ---------------------------------------------------------------------
//
// The listener's thread sleeps in poll(2) on the socket and the stop pipe, with
// no timeout; while a client is connected it reads the client (poll on the
// client and the stop pipe) and a second thread follows the console's output
// (woken by output, by the console closing, by a new ring connection, by the
// client hanging up and by a stop). Nothing wakes while the channel is idle.

/// Waits until one of `fds` is readable (or hung up); `EINTR` returns early.
/// Returns which are.
fn wait_readable(fds: &[BorrowedFd<'_>]) -> Vec<bool> {
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    if poll(&mut p, PollTimeout::NONE).is_err() {
        return vec![false; fds.len()];
    }
    p.iter()
        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
        .collect()
}

/// The output side's place in the guest's output, kept across clients.
struct Follow {
    client: ConsoleClient,
    /// The channel's generation when it attached.
    generation: u64,
}

/// Accepts one client at a time until stopped. The cursor into the guest's output
/// is kept across clients (see the module docs).
fn accept_loop(sh: Arc<Shared>, listener: UnixListener, stop_rx: UnixStream) {
    let mut follow: Option<Follow> = None;
    while !sh.stopping() {
        match listener.accept() {
            Ok((stream, _)) => serve_client(&sh, stream, &stop_rx, &mut follow),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(&[listener.as_fd(), stop_rx.as_fd()]);
            }
            // A transient error (out of descriptors, ...).
            Err(_) => std::thread::sleep(ACCEPT_RETRY),
        }
    }
    *lock(&sh.following) = None;
}

/// Proxies between one client and the channel until either side ends.
fn serve_client(
    sh: &Shared,
    stream: UnixStream,
    stop_rx: &UnixStream,
    follow: &mut Option<Follow>,
) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(IO_SLICE)))
        .and_then(|()| stream.try_clone());
    let Ok(out) = setup else { return };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("channel-out".into())
            .spawn_scoped(s, || {
                to_client(sh, &done, &out, follow);
                done.store(true, Ordering::SeqCst);
                // Ends the reading side's wait too.
                let _ = out.shutdown(std::net::Shutdown::Both);
            });
        if spawned.is_ok() {
            from_client(sh, &done, &stream, stop_rx);
        }
        done.store(true, Ordering::SeqCst);
        sh.bump();
    });
}

/// Guest output → client.
fn to_client(sh: &Shared, done: &AtomicBool, out: &UnixStream, follow: &mut Option<Follow>) {
    let quit = || sh.stopping() || done.load(Ordering::SeqCst);
    while !quit() {
        let f = match follow.as_mut() {
            Some(f) => f,
            None => {
                let generation = *lock(&sh.generation);
                let Some(c) = sh.console() else { return };
                *lock(&sh.following) = Some(c.clone());
                follow.insert(Follow {
                    client: c.attach(true),
                    generation,
                })
            }
        };
        match f.client.recv_unless(FOLLOW_WAIT, &quit) {
            Some(ClientEvent::Output(bytes)) => {
                if write_all(sh, done, out, &bytes).is_err() {
                    return;
                }
            }
            Some(ClientEvent::Closed(_)) => {
                // The guest let go of the ring (or is going): follow the next
                // connection's record once there is one.
                let seen = f.generation;
                *follow = None;
                let mut g = lock(&sh.generation);
                while *g == seen && !quit() {
                    g = sh.generation_cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            }
            Some(ClientEvent::Skipped(_)) | None => {}
        }
    }
}

/// Writes all of `bytes`, in [`IO_SLICE`] steps so a stop is seen.
fn write_all(
    sh: &Shared,
    done: &AtomicBool,
    mut out: &UnixStream,
    mut bytes: &[u8],
) -> io::Result<()> {
    while !bytes.is_empty() {
        if sh.stopping() || done.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match out.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Client bytes → guest input, until the client hangs up.
fn from_client(sh: &Shared, done: &AtomicBool, mut stream: &UnixStream, stop_rx: &UnixStream) {
    let mut buf = [0u8; 1024];
    while !sh.stopping() && !done.load(Ordering::SeqCst) {
        let ready = wait_readable(&[stream.as_fd(), stop_rx.as_fd()]);
        if ready.get(1) == Some(&true) {
            return;
        }
        if ready.first() != Some(&true) {
            continue;
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        let mut rest = buf.get(..n).unwrap_or_default();
        // The guest may be slow to read: wait for room (backpressure on the socket).
        while !rest.is_empty() {
            if sh.stopping() || done.load(Ordering::SeqCst) {
                return;
            }
            let Some(c) = sh.console() else { return };
            let took = c.send_input(rest);
            rest = rest.get(took..).unwrap_or_default();
            if took == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
