//! dom0's xenstore Unix socket (what libxenstore opens through `XENSTORED_PATH`).
//!
//! Every client is a privileged (dom0) connection. Each gets a reader thread (reads a
//! request, handles it, queues the reply) and a writer thread (writes replies and watch
//! events in order). A client that stops reading holds up only itself: after
//! [`OUTSTANDING`] unsent replies its reader waits, and once it leaves 4096 watch
//! events unread it is disconnected (and that logged) rather than left silently
//! missing events. A header announcing more than `XENSTORE_PAYLOAD_MAX` bytes or a
//! truncated message ends the connection (as C xenstored does); malformed requests get
//! error replies.
//!
//! Who may connect: the socket is created with mode 0600 without a window where it is
//! more open (bound inside a fresh 0700 directory, chmod'ed, then renamed into place),
//! and every client's credentials (`SO_PEERCRED`) are checked as the toolstack's
//! control socket does: only root and the server's own uid are served
//! ([`SocketOptions::allowed_uids`]).
//!
//! Fairness: at most [`MAX_CLIENTS`] clients at once and [`MAX_PER_PROCESS`] per
//! client process, so one tool holding many connections cannot shut the others out.
//! When the table is full, the client idle longest (no request for [`IDLE`], and no
//! watch or transaction open, so it loses nothing) is closed to make room. Every
//! refusal and eviction is logged (see [`super::Xenstored::set_log`]).

use super::engine::{decode_header, ConnKind};
use super::{ConnId, Xenstored};
use hypercall::abi::xs_wire::PAYLOAD_MAX;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Clients served at once; more are closed right after accept (logged), unless an idle
/// client can make room.
pub const MAX_CLIENTS: usize = 64;
/// Clients one process (by the peer's pid) may have at once.
pub const MAX_PER_PROCESS: usize = 16;
/// How long a client without watches or transactions must have sent nothing before it
/// may be closed to make room for a new one.
pub const IDLE: Duration = Duration::from_secs(30);

/// Limits and access rules of a [`SocketServer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// Uids served (checked with `SO_PEERCRED`); default: root and our effective uid.
    pub allowed_uids: Vec<u32>,
    /// Clients at once (default [`MAX_CLIENTS`]).
    pub max_clients: usize,
    /// Clients per peer process (default [`MAX_PER_PROCESS`]).
    pub max_per_process: usize,
    /// Idle time after which a client may be evicted for a new one (default [`IDLE`]).
    pub idle: Duration,
}

impl Default for SocketOptions {
    fn default() -> Self {
        let me = nix::unistd::geteuid().as_raw();
        let mut allowed_uids = vec![0];
        if me != 0 {
            allowed_uids.push(me);
        }
        SocketOptions {
            allowed_uids,
            max_clients: MAX_CLIENTS,
            max_per_process: MAX_PER_PROCESS,
            idle: IDLE,
        }
    }
}
/// Unsent replies per client before its requests wait.
pub const OUTSTANDING: usize = 64;

struct Client {
    stream: UnixStream,
    threads: Vec<JoinHandle<()>>,
    cid: ConnId,
    pid: i32,
    /// Milliseconds since the server started, at the client's last request.
    active_ms: Arc<AtomicU64>,
}

impl Client {
    fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }
}

struct Shared {
    xs: Arc<Xenstored>,
    stop: AtomicBool,
    clients: Mutex<Vec<Client>>,
    opts: SocketOptions,
    started: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A running socket server; dropping it disconnects its clients, stops it and removes
/// the socket.
pub struct SocketServer {
    path: PathBuf,
    shared: Arc<Shared>,
    listener: Option<UnixStream>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SocketServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Binds a listener at `path` with mode 0600 from the start.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "a server is listening there",
            ));
        }
    }
    // A bare name has the parent "" (and "/" none): joined to "", the temporary is
    // relative, in the working directory, where the socket goes too.
    let parent = path.parent().unwrap_or(Path::new(""));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmpdir = parent.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::DirBuilder::new().mode(0o700).create(&tmpdir)?;
    let tmp = tmpdir.join("s");
    let r = (|| {
        let l = UnixListener::bind(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        fs::rename(&tmp, path)?;
        Ok(l)
    })();
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_dir(&tmpdir);
    r
}

fn reader(
    xs: Arc<Xenstored>,
    cid: ConnId,
    mut stream: UnixStream,
    cv: Arc<Condvar>,
    active: (Arc<AtomicU64>, Instant),
) {
    loop {
        let mut raw = [0u8; 16];
        if stream.read_exact(&mut raw).is_err() {
            break;
        }
        let ms = u64::try_from(active.1.elapsed().as_millis()).unwrap_or(u64::MAX);
        active.0.store(ms, Ordering::Relaxed);
        let hdr = decode_header(&raw);
        if hdr.len as usize > PAYLOAD_MAX {
            break;
        }
        let mut payload = vec![0u8; hdr.len as usize];
        if stream.read_exact(&mut payload).is_err() {
            break;
        }
        let actions = {
            let mut st = xs.lock();
            loop {
                match st.conns.get(&cid) {
                    None => return,
                    Some(c) if c.replies_queued >= OUTSTANDING => {
                        st = match cv.wait_timeout(st, Duration::from_secs(1)) {
                            Ok((g, _)) => g,
                            Err(e) => e.into_inner().0,
                        };
                    }
                    Some(_) => break,
                }
            }
            st.process(cid, &hdr, &payload, true);
            core::mem::take(&mut st.actions)
        };
        xs.run(actions);
    }
    xs.with_state(|st| {
        st.close_conn(cid);
    });
    let _ = stream.shutdown(Shutdown::Both);
}

fn writer(xs: Arc<Xenstored>, cid: ConnId, mut stream: UnixStream, cv: Arc<Condvar>) {
    loop {
        let bytes = {
            let mut st = xs.lock();
            loop {
                match st.conns.get_mut(&cid) {
                    None => {
                        drop(st);
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                    Some(c) => {
                        if let Some(b) = c.pop_out() {
                            // Room for the reader again.
                            cv.notify_all();
                            break b;
                        }
                    }
                }
                st = match cv.wait_timeout(st, Duration::from_secs(1)) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
            }
        };
        if stream.write_all(&bytes).is_err() {
            break;
        }
    }
    xs.with_state(|st| {
        st.close_conn(cid);
    });
    let _ = stream.shutdown(Shutdown::Both);
}

fn spawn_client(shared: &Shared, stream: UnixStream, pid: i32) -> io::Result<Client> {
    let cv = Arc::new(Condvar::new());
    let handle = stream.try_clone()?;
    let cid = shared.xs.with_state(|st| {
        st.add_conn(
            0,
            ConnKind::Socket {
                cv: cv.clone(),
                stream: handle,
            },
        )
    });
    let active_ms = Arc::new(AtomicU64::new(shared.now_ms()));
    let r = (|| {
        let rs = stream.try_clone()?;
        let ws = stream.try_clone()?;
        let (xs1, cv1) = (shared.xs.clone(), cv.clone());
        let (xs2, cv2) = (shared.xs.clone(), cv);
        let active = (active_ms.clone(), shared.started);
        let r = std::thread::Builder::new()
            .name("xenstored-sock-r".into())
            .spawn(move || reader(xs1, cid, rs, cv1, active))?;
        let w = match std::thread::Builder::new()
            .name("xenstored-sock-w".into())
            .spawn(move || writer(xs2, cid, ws, cv2))
        {
            Ok(w) => w,
            Err(e) => {
                let _ = stream.shutdown(Shutdown::Both);
                let _ = r.join();
                return Err(e);
            }
        };
        Ok(vec![r, w])
    })();
    match r {
        Ok(threads) => Ok(Client {
            stream,
            threads,
            cid,
            pid,
            active_ms,
        }),
        Err(e) => {
            shared.xs.with_state(|st| {
                st.close_conn(cid);
            });
            Err(e)
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((stream, _)) => admit(&shared, stream),
            Err(e) => {
                if let Some(pause) = accept_backoff(&e) {
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

/// How long to wait after a failed `accept` before the next: none when a signal
/// interrupted it; out of descriptors and the like, briefly, instead of spinning.
fn accept_backoff(e: &io::Error) -> Option<Duration> {
    (e.kind() != io::ErrorKind::Interrupted).then_some(Duration::from_millis(10))
}

/// Checks a new client's credentials and the limits, then serves it or closes it
/// (with a log line saying why).
fn admit(shared: &Shared, stream: UnixStream) {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let refuse = |why: String| {
        shared.xs.log(&format!("refused a socket client: {why}"));
        let _ = stream.shutdown(Shutdown::Both);
    };
    let cred = match getsockopt(&stream, PeerCredentials) {
        Ok(c) => c,
        Err(e) => return refuse(format!("cannot read its credentials: {e}")),
    };
    if !shared.opts.allowed_uids.contains(&cred.uid()) {
        return refuse(format!(
            "uid {} (pid {}) may not use this xenstore (allowed: uid {:?})",
            cred.uid(),
            cred.pid(),
            shared.opts.allowed_uids
        ));
    }
    let mut clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
    let (done, live): (Vec<Client>, Vec<Client>) = clients.drain(..).partition(Client::finished);
    *clients = live;
    for c in done {
        for t in c.threads {
            let _ = t.join();
        }
    }
    let same = clients.iter().filter(|c| c.pid == cred.pid()).count();
    if same >= shared.opts.max_per_process {
        drop(clients);
        return refuse(format!(
            "pid {} already has {same} connections (at most {} per process)",
            cred.pid(),
            shared.opts.max_per_process
        ));
    }
    if clients.len() >= shared.opts.max_clients {
        // Room only by closing a client that is idle and would lose nothing.
        let now = shared.now_ms();
        let idle_ms = u64::try_from(shared.opts.idle.as_millis()).unwrap_or(u64::MAX);
        let victim = shared.xs.with_state(|st| {
            clients
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    now.saturating_sub(c.active_ms.load(Ordering::Relaxed)) >= idle_ms
                        && st.conns.get(&c.cid).is_some_and(|k| k.is_idle())
                })
                .min_by_key(|(_, c)| c.active_ms.load(Ordering::Relaxed))
                .map(|(i, _)| i)
        });
        match victim {
            Some(i) => {
                let c = clients.swap_remove(i);
                shared.xs.log(&format!(
                    "closed idle socket client of pid {} to make room for pid {}",
                    c.pid,
                    cred.pid()
                ));
                let _ = c.stream.shutdown(Shutdown::Both);
                for t in c.threads {
                    let _ = t.join();
                }
            }
            None => {
                let n = clients.len();
                drop(clients);
                return refuse(format!(
                    "pid {}: {n} clients connected (at most {}), none idle",
                    cred.pid(),
                    shared.opts.max_clients
                ));
            }
        }
    }
    match spawn_client(shared, stream, cred.pid()) {
        Ok(c) => clients.push(c),
        Err(e) => shared.xs.log(&format!("socket client: {e}")),
    }
}

impl SocketServer {
    pub(crate) fn start(
        xs: Arc<Xenstored>,
        path: &Path,
        opts: SocketOptions,
    ) -> io::Result<SocketServer> {
        let listener = bind_private(path)?;
        // A second handle on the listening socket, to shut it down (which wakes a
        // blocked accept) when the server stops.
        let wake = UnixStream::from(OwnedFd::from(listener.try_clone()?));
        let shared = Arc::new(Shared {
            xs,
            stop: AtomicBool::new(false),
            clients: Mutex::new(Vec::new()),
            opts,
            started: Instant::now(),
        });
        let s2 = shared.clone();
        let accept = std::thread::Builder::new()
            .name("xenstored-accept".into())
            .spawn(move || accept_loop(s2, listener));
        let accept = match accept {
            Ok(a) => a,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e);
            }
        };
        Ok(SocketServer {
            path: path.to_path_buf(),
            shared,
            listener: Some(wake),
            accept: Some(accept),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of clients currently connected.
    pub fn clients(&self) -> usize {
        let c = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.iter().filter(|c| !c.finished()).count()
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(l) = self.listener.take() {
            let _ = l.shutdown(Shutdown::Both);
        }
        // In case shutdown does not wake accept on this kernel.
        let _ = UnixStream::connect(&self.path);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let clients: Vec<Client> = {
            let mut c = self
                .shared
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            c.drain(..).collect()
        };
        for c in &clients {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        for c in clients {
            for t in c.threads {
                let _ = t.join();
            }
        }
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `accept` interrupted by a signal is retried at once; any other failure
    /// (`EMFILE`: out of descriptors) waits 10 ms, so the accept thread does not
    /// spin while it lasts.
    #[test]
    fn accept_backs_off_except_when_interrupted() {
        let e = |k| io::Error::from(k);
        assert_eq!(accept_backoff(&e(io::ErrorKind::Interrupted)), None);
        let emfile = io::Error::from_raw_os_error(nix::libc::EMFILE);
        assert_eq!(accept_backoff(&emfile), Some(Duration::from_millis(10)));
        assert_eq!(
            accept_backoff(&e(io::ErrorKind::ConnectionAborted)),
            Some(Duration::from_millis(10))
        );
    }
}
