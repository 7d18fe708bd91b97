//! The CLI's side of the control socket.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{io_err, Error};
use super::proto::{self, Reply, Request};
use super::runtime::RuntimeDir;

/// How long `create` waits for a daemon it started to answer.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a reply may take (a `Wait` takes at most 10 s).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the daemon of one runtime directory.
#[derive(Clone, Debug)]
pub struct Client {
    rt: RuntimeDir,
}

impl Client {
    /// A client for the daemon of `rt`.
    pub fn new(rt: RuntimeDir) -> Client {
        Client { rt }
    }

    /// The runtime directory.
    pub fn runtime_dir(&self) -> &RuntimeDir {
        &self.rt
    }

    /// Connects to the control socket.
    pub fn connect(&self) -> Result<UnixStream, Error> {
        let socket = self.rt.control_socket();
        UnixStream::connect(&socket).map_err(|err| Error::NoDaemon { socket, err })
    }

    /// Whether a daemon answers.
    pub fn daemon_running(&self) -> bool {
        self.call(&Request::Info).is_ok()
    }

    /// Sends one request and returns the reply; a [`Reply::Error`] becomes
    /// [`Error::Daemon`].
    pub fn call(&self, req: &Request) -> Result<Reply, Error> {
        let s = self.connect()?;
        let _ = s.set_read_timeout(Some(REPLY_TIMEOUT));
        let mut w = s.try_clone().map_err(io_err("control socket"))?;
        // A daemon that refuses us answers before reading: read its answer even if
        // sending failed.
        let sent = proto::write_line(&mut w, req);
        let mut r = BufReader::new(s);
        let answer = proto::read_line::<Reply, _>(&mut r);
        if let Err(e) = sent {
            return match answer {
                Ok(Some(Reply::Error { message })) => Err(Error::Daemon(message)),
                _ => Err(Error::Io {
                    what: "sending to the shim-hv daemon".into(),
                    err: e,
                }),
            };
        }
        match answer {
            Ok(Some(Reply::Error { message })) => Err(Error::Daemon(message)),
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(Error::Protocol(
                "connection closed without an answer".into(),
            )),
            Err(e) => Err(Error::Protocol(e.to_string())),
        }
    }

    /// Starts a daemon (`exe daemon`, detached, logging to `daemon.log`) unless one
    /// answers, and waits until it does.
    pub fn ensure_daemon(&self, exe: &Path) -> Result<(), Error> {
        if self.connect().is_ok() {
            return Ok(());
        }
        self.rt.create().map_err(io_err(format!(
            "runtime directory {}",
            self.rt.path().display()
        )))?;
        let log_path = self.rt.log_file();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("{}", log_path.display())))?;
        let log2 = log.try_clone().map_err(io_err("daemon log"))?;
        let mut child = Command::new(exe)
            .arg("daemon")
            .arg("--runtime-dir")
            .arg(self.rt.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: ^C in the terminal that ran `create` does not
            // reach it.
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("starting {} daemon", exe.display())))?;
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            if self.connect().is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Another daemon may have won the race for the lock: use it.
                if self.connect().is_ok() {
                    return Ok(());
                }
                return Err(Error::Daemon(format!(
                    "the shim-hv daemon exited ({status}); see {}: {}",
                    log_path.display(),
                    last_line(&log_path)
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Daemon(format!(
                    "the shim-hv daemon did not answer within {} s; see {}",
                    DAEMON_START_TIMEOUT.as_secs(),
                    log_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Attaches to a domain's console and copies its output to `out` until the
    /// domain goes away or the daemon stops. Bytes read from `input` go to the guest;
    /// `Ctrl-]` (0x1d) in the input detaches, as with xl.
    pub fn console(
        &self,
        dom: &str,
        out: &mut impl Write,
        input: Option<Box<dyn Read + Send>>,
    ) -> Result<(), Error> {
        self.console_n(dom, 0, out, input)
    }

    /// [`Client::console`] for console number `num` (xl's `console -n`): 0 is the
    /// primary console, N ≥ 1 `device/console/N` (channel N-1 of the config).
    pub fn console_n(
        &self,
        dom: &str,
        num: u32,
        out: &mut impl Write,
        input: Option<Box<dyn Read + Send>>,
    ) -> Result<(), Error> {
        self.attach_console(dom, num)?.run(out, input)
    }

    /// Attaches to console `num` of a domain (see [`Client::console_n`]) without
    /// copying anything yet: what the console prints waits on the connection until
    /// [`ConsoleSession::run`] copies it. `create -c` attaches to a paused domain
    /// this way before starting it, so none of its output can be missed.
    pub fn attach_console(&self, dom: &str, num: u32) -> Result<ConsoleSession, Error> {
        let s = self.connect()?;
        let mut w = s.try_clone().map_err(io_err("control socket"))?;
        let req = Request::Console {
            dom: dom.into(),
            num,
        };
        proto::write_line(&mut w, &req).map_err(io_err("sending to the shim-hv daemon"))?;
        let mut r = BufReader::new(s);
        match proto::read_line::<Reply, _>(&mut r) {
            Ok(Some(Reply::Console { .. })) => {}
            Ok(Some(Reply::Error { message })) => return Err(Error::Daemon(message)),
            Ok(Some(other)) => return Err(Error::Protocol(format!("{other:?}"))),
            Ok(None) => return Err(Error::Protocol("connection closed".into())),
            Err(e) => return Err(Error::Protocol(e.to_string())),
        }
        Ok(ConsoleSession { r, w })
    }
}

/// A console attached by [`Client::attach_console`].
pub struct ConsoleSession {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl ConsoleSession {
    /// Copies the console's output to `out` until the domain goes away or the
    /// daemon stops. Bytes read from `input` go to the guest; `Ctrl-]` (0x1d) in
    /// the input detaches, as with xl.
    pub fn run(
        self,
        out: &mut impl Write,
        input: Option<Box<dyn Read + Send>>,
    ) -> Result<(), Error> {
        let ConsoleSession { mut r, w } = self;
        if let Some(input) = input {
            let _ = std::thread::Builder::new()
                .name("console-stdin".into())
                .spawn(move || forward(input, w));
        }
        let mut buf = [0u8; 4096];
        loop {
            let pending = r.buffer().len();
            if pending > 0 {
                let chunk = r.buffer().to_vec();
                r.consume(pending);
                write_out(out, &chunk)?;
                continue;
            }
            match r.get_mut().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => write_out(out, buf.get(..n).unwrap_or_default())?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Io {
                        what: "reading the console".into(),
                        err: e,
                    })
                }
            }
        }
    }
}

/// Copies `input` to the daemon until `Ctrl-]` or end of input; `Ctrl-]` ends
/// the session.
fn forward(mut input: Box<dyn Read + Send>, mut sock: UnixStream) {
    let mut buf = [0u8; 256];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        let (send, detach) = match chunk.iter().position(|&b| b == DETACH) {
            Some(i) => (chunk.get(..i).unwrap_or_default(), true),
            None => (chunk, false),
        };
        if sock.write_all(send).is_err() {
            return;
        }
        if detach {
            // Half-close: the daemon sees the end of input, sends what output it
            // still holds for us (the history replay included) and closes.
            let _ = sock.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}

/// `Ctrl-]`: leaves a console session.
pub const DETACH: u8 = 0x1d;

fn write_out(out: &mut impl Write, bytes: &[u8]) -> Result<(), Error> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(io_err("writing the console"))
}

fn last_line(path: &Path) -> String {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().last().map(str::to_string))
        .unwrap_or_default()
}
