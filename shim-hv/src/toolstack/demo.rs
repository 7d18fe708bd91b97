//! `shim-hv demo`: the README's first command. Everything happens in a private
//! temporary directory with a private daemon (in this process), so it needs no
//! setup and leaves nothing behind:
//!
//! 0. picks the guest: `examples/unikernel` under KVM (`examples/kvm/demo.cfg`;
//!    the kernel is built, or brought up to date, with its own `cargo build
//!    --release`), or, with one line saying why, the built-in in-process guest
//!    (`examples/demo.cfg`) where `/dev/kvm` is absent or unusable or the
//!    unikernel cannot be built;
//! 1. writes the config and the disk image it names;
//! 2. `create`, then waits for the guest to come up;
//! 3. `list`, `block-list`, `network-list`, the domain's xenstore tree and its
//!    devices' backend directories (`/local/domain/0/backend`);
//! 4. `shutdown -w`, the guest's console output, `list` again (the domain is gone).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenstored::{LocalClient, TxId};

use super::cli::{self, Command};
use super::client::Client;
use super::daemon::Daemon;
use super::error::{io_err, Error};
use super::runtime::RuntimeDir;

/// The config the demo creates its domain from (the built-in guest).
pub const DEMO_CFG: &str = include_str!("../../../examples/demo.cfg");
/// The config for the unikernel under KVM.
pub const DEMO_KVM_CFG: &str = include_str!("../../../examples/kvm/demo.cfg");
/// The kernel path as `examples/kvm/demo.cfg` writes it (from the repository root).
const KVM_KERNEL: &str = "examples/unikernel/target/x86_64-unknown-none/release/unikernel";
/// What the unikernel prints once its devices are up.
const KVM_READY: &str = "xenkit-unikernel: ready";
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

/// The guest the demo runs.
enum Guest {
    /// examples/unikernel under KVM: the config text (kernel path made absolute).
    Kvm(String),
    /// The built-in in-process guest.
    Builtin,
}

/// The unikernel under KVM if it can run here, else the built-in guest (with one
/// line saying why).
fn choose_guest(out: &mut dyn Write) -> Result<Guest, Error> {
    let fallback = |out: &mut dyn Write, why: String| -> Result<Guest, Error> {
        writeln!(
            out,
            "shim-hv demo: {why}: running the built-in in-process guest instead of examples/unikernel under KVM\n"
        )
        .map_err(io_err("output"))?;
        Ok(Guest::Builtin)
    };
    if let Err(why) = kvm_runner::probe() {
        return fallback(out, format!("/dev/kvm is not usable ({why})"));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("examples/unikernel");
    if !dir.join("Cargo.toml").is_file() {
        return fallback(out, format!("{} is not there", dir.display()));
    }
    writeln!(
        out,
        "$ (cd examples/unikernel && cargo build --release)    # the kernel the demo boots"
    )
    .map_err(io_err("output"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .status();
    let elf = root.join(KVM_KERNEL);
    match built {
        Ok(s) if s.success() && elf.is_file() => {}
        Ok(s) => return fallback(out, format!("building examples/unikernel failed ({s})")),
        Err(e) => {
            return fallback(
                out,
                format!("cannot run cargo to build examples/unikernel ({e})"),
            )
        }
    }
    let elf = elf.canonicalize().unwrap_or(elf);
    Ok(Guest::Kvm(
        DEMO_KVM_CFG.replace(KVM_KERNEL, &elf.display().to_string()),
    ))
}

/// Runs the demo, printing the session to `out`.
pub fn run(out: &mut dyn Write) -> Result<(), Error> {
    let guest = choose_guest(out)?;
    let base = std::env::temp_dir().join(format!("shim-hv-demo-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).map_err(io_err(format!("{}", base.display())))?;
    let tmp = TempDir(base.clone());
    let cfg = base.join("demo.cfg");
    let (cfg_text, ready) = match &guest {
        Guest::Kvm(text) => (text.as_str(), KVM_READY),
        Guest::Builtin => (DEMO_CFG, READY),
    };
    fs::write(&cfg, cfg_text).map_err(io_err(format!("{}", cfg.display())))?;
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
    writeln!(out, "$ cat demo.cfg\n{cfg_text}").map_err(io_err("output"))?;

    let r = session(&daemon, &base, out, ready);
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

fn session(
    daemon: &Arc<Daemon>,
    cwd: &Path,
    out: &mut dyn Write,
    ready: &str,
) -> Result<(), Error> {
    step(
        daemon,
        cwd,
        out,
        "create demo.cfg",
        Command::Create {
            console: false,
            dry_run: false,
            paused: false,
            hostile: Vec::new(),
            config: PathBuf::from("demo.cfg"),
        },
    )?;
    let dom = daemon.resolve("demo")?;
    let id = dom.id().0;
    let hub = daemon
        .console(dom.id())
        .ok_or_else(|| Error::NoSuchDomain("demo".into()))?;
    // Bounded generously: under an emulating KVM the unikernel boots in seconds.
    if let Err(e) = hub.wait_for(ready.as_bytes(), Duration::from_secs(120)) {
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
