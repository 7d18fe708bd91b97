//! `shim-hv demo`: the README's first command. Everything happens in a private
//! temporary directory with a private daemon (in this process), so it needs no
//! setup and leaves nothing behind:
//!
//! 1. writes `examples/demo.cfg` and the disk image it names;
//! 2. `create`, then waits for the guest to come up;
//! 3. `list`, `block-list`, `network-list`, the domain's xenstore tree and its
//!    devices' backend directories (`/local/domain/0/backend`);
//! 4. `shutdown -w`, the guest's console output, `list` again (the domain is gone).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::xenstored::{LocalClient, TxId};

use super::cli::{self, Command};
use super::client::Client;
use super::daemon::Daemon;
use super::error::{io_err, Error};
use super::runtime::RuntimeDir;

/// The config the demo creates its domain from.
pub const DEMO_CFG: &str = include_str!("../../../examples/demo.cfg");
/// Size of the demo's disk image.
const DISK_BYTES: usize = 8 << 20;
/// What the built-in guest prints once it waits for power events.
const READY: &str = "waiting for control/shutdown";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn step(
    daemon: &Arc<Daemon>,
    cwd: &Path,
    out: &mut dyn Write,
    shown: &str,
    cmd: Command,
) -> Result<(), Error> {
    let mut text = Vec::new();
    let mut msgs = Vec::new();
    let rc = cli::run_with_daemon(daemon, cwd, cmd, &mut text, &mut msgs);
    let mut all = msgs;
    all.extend_from_slice(&text);
    writeln!(out, "$ shim-hv {shown}").map_err(io_err("output"))?;
    out.write_all(&all).map_err(io_err("output"))?;
    writeln!(out).map_err(io_err("output"))?;
    if rc != 0 {
        return Err(Error::Daemon(format!("demo: `shim-hv {shown}` failed")));
    }
    Ok(())
}

/// Prints a xenstore subtree the way `xenstore-ls` does (one space of indent per
/// level, `name = "value"`).
pub fn ls_tree(xs: &LocalClient, path: &str, out: &mut String) {
    fn walk(xs: &LocalClient, path: &str, depth: usize, out: &mut String) {
        let Ok(children) = xs.directory(TxId::NONE, path) else {
            return;
        };
        for c in children {
            let p = if path == "/" {
                format!("/{c}")
            } else {
                format!("{path}/{c}")
            };
            let v = xs.read(TxId::NONE, &p).unwrap_or_default();
            let v = String::from_utf8_lossy(&v);
            out.push_str(&format!("{:depth$}{c} = \"{}\"\n", "", v.escape_default()));
            walk(xs, &p, depth + 1, out);
        }
    }
    walk(xs, path, 0, out);
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Runs the demo, printing the session to `out`.
pub fn run(out: &mut dyn Write) -> Result<(), Error> {
    let base = std::env::temp_dir().join(format!("shim-hv-demo-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).map_err(io_err(format!("{}", base.display())))?;
    let tmp = TempDir(base.clone());
    let cfg = base.join("demo.cfg");
    fs::write(&cfg, DEMO_CFG).map_err(io_err(format!("{}", cfg.display())))?;
    let mut disk = vec![0u8; DISK_BYTES];
    let label = b"xenkit demo disk\n";
    if let Some(s) = disk.get_mut(..label.len()) {
        s.copy_from_slice(label);
    }
    let img = base.join("demo-disk.img");
    fs::write(&img, &disk).map_err(io_err(format!("{}", img.display())))?;

    let rt = RuntimeDir::at(base.join("run/shim-hv"));
    let daemon = Daemon::new(rt.clone());
    daemon.set_quiet(true);
    let d2 = daemon.clone();
    let server = std::thread::Builder::new()
        .name("demo-daemon".into())
        .spawn(move || d2.serve())
        .map_err(io_err("starting the demo daemon"))?;
    let client = Client::new(rt);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client.daemon_running() {
        if Instant::now() >= deadline || server.is_finished() {
            return Err(Error::Daemon("demo: the daemon did not start".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writeln!(
        out,
        "shim-hv demo: a private daemon in {} (the commands below talk to it over\n\
         its control socket, as the CLI does)\n",
        base.display()
    )
    .map_err(io_err("output"))?;
    writeln!(out, "$ cat demo.cfg\n{DEMO_CFG}").map_err(io_err("output"))?;

    let r = session(&daemon, &base, out);
    daemon.request_stop();
    let _ = server.join();
    drop(tmp);
    r
}

/// Prints a xenstore subtree with Xen's `xenstore-ls` against the daemon's dom0
/// socket, or (without xenstore-utils) the same listing read in-process.
fn show_tree(daemon: &Arc<Daemon>, path: &str, out: &mut dyn Write) -> Result<(), Error> {
    let xs_sock = daemon.runtime_dir().xenstored_socket();
    match (which("xenstore-ls"), xs_sock.exists()) {
        (Some(t), true) => {
            let o = std::process::Command::new(t)
                .arg(path)
                .env("XENSTORED_PATH", &xs_sock)
                .output()
                .map_err(io_err("running xenstore-ls"))?;
            writeln!(out, "$ xenstore-ls {path}").map_err(io_err("output"))?;
            out.write_all(&o.stdout).map_err(io_err("output"))?;
            out.write_all(&o.stderr).map_err(io_err("output"))?;
        }
        _ => {
            let mut s = String::new();
            ls_tree(&daemon.hypervisor().xenstored().client(0), path, &mut s);
            writeln!(
                out,
                "$ xenstore-ls {path}    # (xenstore-utils not installed: the same tree, read in-process)\n{s}"
            )
            .map_err(io_err("output"))?;
        }
    }
    writeln!(out).map_err(io_err("output"))
}

fn session(daemon: &Arc<Daemon>, cwd: &Path, out: &mut dyn Write) -> Result<(), Error> {
    step(
        daemon,
        cwd,
        out,
        "create demo.cfg",
        Command::Create {
            console: false,
            dry_run: false,
            config: PathBuf::from("demo.cfg"),
        },
    )?;
    let dom = daemon.resolve("demo")?;
    let id = dom.id().0;
    let hub = daemon
        .console(dom.id())
        .ok_or_else(|| Error::NoSuchDomain("demo".into()))?;
    if let Err(e) = hub.wait_for(READY.as_bytes(), Duration::from_secs(30)) {
        return Err(Error::Daemon(format!(
            "demo: the guest did not come up: {e}"
        )));
    }
    step(
        daemon,
        cwd,
        out,
        "list",
        Command::List {
            long: false,
            domains: Vec::new(),
        },
    )?;
    writeln!(
        out,
        "$ eval $(shim-hv xenstore-env)    # Xen's xenstore tools talk to the daemon\n"
    )
    .map_err(io_err("output"))?;
    step(
        daemon,
        cwd,
        out,
        "block-list demo",
        Command::BlockList {
            domains: vec!["demo".into()],
        },
    )?;
    step(
        daemon,
        cwd,
        out,
        "network-list demo",
        Command::NetworkList {
            domains: vec!["demo".into()],
        },
    )?;

    show_tree(daemon, &format!("/local/domain/{id}"), out)?;
    show_tree(daemon, "/local/domain/0/backend", out)?;

    step(
        daemon,
        cwd,
        out,
        "shutdown -w demo",
        Command::Shutdown {
            wait: true,
            reboot: false,
            halt: false,
            domain: "demo".into(),
        },
    )?;
    writeln!(
        out,
        "$ shim-hv console demo    # what the guest printed\n{}",
        String::from_utf8_lossy(&hub.history())
    )
    .map_err(io_err("output"))?;
    step(
        daemon,
        cwd,
        out,
        "list",
        Command::List {
            long: false,
            domains: Vec::new(),
        },
    )?;
    Ok(())
}
