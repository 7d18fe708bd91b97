//! xl's `console [-t pv|serial] [-n NUM] DOM`: `-n N` attaches to console N (0 the
//! primary console, N ≥ 1 the config's channel N-1, `device/console/N`) and works as
//! console 0 does: the channel's output (from its history) to stdout, what is typed
//! to the guest, Ctrl-] detaches. A channel on a Unix socket is refused with its
//! path; a number the domain does not have, a bad number and `-t serial` are
//! one-line errors (exit 1) that change nothing.

mod toolstack_util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use toolstack_util::{builtin_cfg, wait_for, Cli};

/// Bound on waiting for a line (a hang guard, not a timing assertion).
const LONG: Duration = Duration::from_secs(60);

/// `shim-hv ARGS` with a terminal as standard input (so it forwards what is typed),
/// its output lines arriving on a channel.
struct Session {
    child: Child,
    tty: std::fs::File,
    lines: mpsc::Receiver<String>,
    seen: String,
}

impl Session {
    fn start(cli: &Cli, args: &[&str]) -> Session {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut child = cli
            .command()
            .args(args)
            .stdin(Stdio::from(pty.slave))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Session {
            child,
            tty: std::fs::File::from(pty.master),
            lines,
            seen: String::new(),
        }
    }

    /// Reads output until a line contains `text`.
    fn until(&mut self, text: &str) {
        while !self.seen.lines().any(|l| l.contains(text)) {
            match self.lines.recv_timeout(LONG) {
                Ok(l) => {
                    self.seen.push_str(&l);
                    self.seen.push('\n');
                }
                Err(e) => panic!("no {text:?} ({e}); so far:\n{}", self.seen),
            }
        }
    }

    /// Types `bytes` (the terminal hands over a line at its end).
    fn type_line(&mut self, bytes: &[u8]) {
        self.tty.write_all(bytes).unwrap();
        self.tty.write_all(b"\n").unwrap();
    }

    /// Waits for the CLI to exit; returns whether it succeeded and its stderr.
    fn finish(mut self) -> (bool, String) {
        while let Ok(l) = self.lines.recv_timeout(LONG) {
            self.seen.push_str(&l);
            self.seen.push('\n');
        }
        let o = self.child.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

/// A domain `cn` with a pty channel (console 1) and a socket channel (console 2).
fn with_channels(tag: &str) -> (Cli, std::path::PathBuf) {
    let cli = Cli::new(tag);
    let sock = cli.dir.path().join("agent.sock");
    cli.dir.write(
        "cn.cfg",
        &builtin_cfg(
            "cn",
            &format!(
                "channel = [ 'name=org.example.pty,connection=pty',\n  \
                 'name=org.example.sock,connection=socket,path={}' ]\n",
                sock.display()
            ),
        ),
    );
    cli.ok(&["create", "cn.cfg"]);
    (cli, sock)
}

/// Runs a command that must fail with exit 1 and one line on stderr; returns it.
fn fails(cli: &Cli, args: &[&str]) -> String {
    let o = cli.run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(o.stdout.is_empty(), "{args:?}");
    err.trim_end().to_string()
}

#[test]
fn console_n_1_shows_the_pty_channel_and_echoes_input() {
    let (cli, _sock) = with_channels("consn-pty");
    let mut s = Session::start(&cli, &["console", "-n", "1", "cn"]);
    // The guest's greeting on the channel (kept in its history, so it shows however
    // late we attach).
    s.until("xenkit built-in guest: channel org.example.pty (console 1) of domain 1 (cn)");
    // What we type reaches the guest, which echoes it on the same channel.
    s.type_line(b"echo-me-on-channel-1");
    s.until("echo-me-on-channel-1");
    // Ctrl-] detaches; the domain runs on.
    s.type_line(&[0x1d]);
    let (ok, err) = s.finish();
    assert!(ok, "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(cli.list().len(), 1);
    // `-t pv -n 0` is the primary console: the guest's own lines, and the session
    // ends when the domain goes.
    let mut s = Session::start(&cli, &["console", "-t", "pv", "-n", "0", "cn"]);
    s.until("xenkit built-in guest: domain 1 (cn) up");
    assert!(!s.seen.contains("echo-me-on-channel-1"), "{}", s.seen);
    cli.ok(&["shutdown", "-w", "cn"]);
    let (ok, err) = s.finish();
    assert!(ok, "{err}");
}

#[test]
fn console_n_refuses_what_it_cannot_attach() {
    let (cli, sock) = with_channels("consn-bad");
    // A number the domain does not have: the domain and the number named.
    for dom in ["cn", "1"] {
        let err = fails(&cli, &["console", "-n", "7", dom]);
        assert_eq!(
            err,
            "domain 1 (cn) has no console 7 (its consoles: 0, 1, 2)"
        );
    }
    // A socket channel's data goes to its socket: refused, naming it.
    let err = fails(&cli, &["console", "-n", "2", "cn"]);
    assert_eq!(
        err,
        format!(
            "domain 1 (cn): console 2 is channel org.example.sock on socket {}: \
             connect to that socket instead",
            sock.display()
        )
    );
    // Not numbers (checked before the daemon is asked).
    let huge = "9".repeat(5000);
    for bad in [
        "abc",
        "-1",
        "",
        "+1",
        " 1",
        "0x1",
        "4294967296",
        "a\nb",
        huge.as_str(),
    ] {
        let err = fails(&cli, &["console", "-n", bad, "cn"]);
        assert!(err.starts_with("console -n \""), "{bad:?}: {err}");
        assert!(
            err.ends_with("not a console number (0 is the primary console, 1 and up the channels)"),
            "{bad:?}: {err}"
        );
        assert!(err.len() < 200, "{err}");
    }
    // Only PV consoles exist.
    let err = fails(&cli, &["console", "-t", "serial", "cn"]);
    assert_eq!(
        err,
        "console -t serial: shim-hv domains have no serial console, only PV consoles (-t pv)"
    );
    let err = fails(&cli, &["console", "-t", "hvm", "-n", "1", "cn"]);
    assert_eq!(err, "console -t \"hvm\": the console type is pv or serial");
    // An unknown domain is still the usual error.
    let err = fails(&cli, &["console", "-n", "1", "nope"]);
    assert_eq!(err, "nope is an invalid domain identifier");
    // Nothing changed: the domain runs, its socket channel still serves.
    let rows = cli.list();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "cn");
    let mut agent = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    agent.set_read_timeout(Some(LONG)).unwrap();
    let mut r = BufReader::new(agent.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.contains("channel org.example.sock (console 2)"),
        "{line}"
    );
    agent.write_all(b"still-mine\n").unwrap();
    assert!(wait_for(60, || {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        l.contains("still-mine").then_some(())
    })
    .is_some());
}
