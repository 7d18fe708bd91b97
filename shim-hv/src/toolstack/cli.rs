//! The `shim-hv` command line, modelled on `xl` (and on `xm` where xl has nothing:
//! `shutdown -H` / `-R`).
//!
//! Every command but `create` (which starts one) needs a running daemon and says so
//! when there is none. Errors are one line each, naming the file, key or value;
//! the exit code is 1 (clap's usage errors: 2).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use xl_config::DomainConfig;

use super::client::Client;
use super::daemon::{check_kernel_config, resolve_paths, Daemon};
use super::error::{io_err, Error};
use super::proto::{DeviceInfo, DomainInfo, Reply, Request};
use super::runtime::RuntimeDir;
use super::{check_config, check_disk_images, unattached_devices, PowerRequest};

/// shim-hv: a thin hypervisor that plays Xen and dom0, with an xl-like toolstack.
#[derive(Debug, Parser)]
#[command(name = "shim-hv", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Create a domain from a config file (starts the daemon if none runs).
    Create {
        /// Attach to the domain's console (the domain starts once it is attached).
        #[arg(short = 'c')]
        console: bool,
        /// Parse the config, print the domain description as JSON, start nothing.
        #[arg(short = 'n', long = "dry-run")]
        dry_run: bool,
        /// Leave the domain paused (`shim-hv unpause` starts it).
        #[arg(short = 'p')]
        paused: bool,
        /// Run DEVICE's backend in a hostile mode (repeatable; over the config's
        /// `hostile` key): xvda=blk.never_answers, vif0=net.tx_id_out_of_range,
        /// console=console.out_cons_past_prod. Modes: docs/hostile-mode.md.
        #[arg(long = "hostile", value_name = "DEVICE=MODE")]
        hostile: Vec<String>,
        /// The config file (xl.cfg(5); xm-style plain values accepted).
        config: PathBuf,
    },
    /// List domains: Name, ID, Mem (MiB), VCPUs, State, Time(s) (vCPU seconds for
    /// KVM guests, seconds since start for in-process ones).
    List {
        /// Long form: JSON per domain (config, runner, VM exits by reason), as
        /// `xl list -l`.
        #[arg(short = 'l', long = "long")]
        long: bool,
        /// Domain names or ids (default: all).
        domains: Vec<String>,
    },
    /// Attach to a domain's console (its output until the domain goes away; what you
    /// type goes to the guest, Ctrl-] then Enter detaches).
    Console {
        /// Console type: pv (the only kind shim-hv domains have) or serial (refused).
        #[arg(short = 't', value_name = "pv|serial")]
        ty: Option<String>,
        /// Console number: 0 the primary console (default), N the config's channel
        /// N-1 (`device/console/N`, as libxl numbers them).
        #[arg(short = 'n', value_name = "NUM", allow_hyphen_values = true)]
        num: Option<String>,
        /// Domain name or id.
        domain: String,
    },
    /// Ask a domain to shut down (writes control/shutdown, as xl does).
    Shutdown {
        /// Wait until the domain has shut down (and its on_poweroff/on_reboot ran).
        #[arg(short = 'w', long = "wait")]
        wait: bool,
        /// Reboot instead (xm's -R).
        #[arg(short = 'R', conflicts_with = "halt")]
        reboot: bool,
        /// Halt: write "halt", which guests treat as poweroff (xm's -H).
        #[arg(short = 'H')]
        halt: bool,
        /// Domain name or id.
        domain: String,
    },
    /// Ask a domain to reboot (writes "reboot" to control/shutdown).
    Reboot {
        /// Wait until the old domain is gone (and on_reboot ran).
        #[arg(short = 'w', long = "wait")]
        wait: bool,
        /// Domain name or id.
        domain: String,
    },
    /// Pause a domain (its vCPU stops running guest code).
    Pause {
        /// Domain name or id.
        domain: String,
    },
    /// Unpause a paused domain.
    Unpause {
        /// Domain name or id.
        domain: String,
    },
    /// Destroy a domain at once.
    Destroy {
        /// Domain name or id.
        domain: String,
    },
    /// List a domain's virtual block devices (as xl block-list, plus the backend state).
    BlockList {
        /// Domain names or ids.
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// List a domain's network interfaces (as xl network-list, plus the backend state).
    NetworkList {
        /// Domain names or ids.
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Print `export XENSTORED_PATH=...` for the running daemon (for xenstore-ls & co).
    XenstoreEnv,
    /// Run a self-contained demo: a private daemon, one domain, the commands above.
    Demo,
    /// Run the daemon in the foreground (`create` starts one in the background).
    Daemon {
        /// The runtime directory (default: $XDG_RUNTIME_DIR/shim-hv or /run/shim-hv).
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
    /// Stop the daemon (destroys every domain).
    DaemonStop,
}

/// Where the commands find the daemon.
#[derive(Clone, Debug)]
pub struct Context {
    /// The runtime directory.
    pub runtime: RuntimeDir,
    /// The executable `create` starts as the daemon; `None`: never start one.
    pub daemon_exe: Option<PathBuf>,
    /// The directory relative config paths are relative to.
    pub cwd: PathBuf,
    /// Whether `console` / `create -c` send standard input to the guest (when it is a
    /// terminal).
    pub console_stdin: bool,
}

impl Context {
    /// From the environment: `$XDG_RUNTIME_DIR`, this executable, the current
    /// directory.
    pub fn from_env() -> Context {
        Context {
            runtime: RuntimeDir::from_env(),
            daemon_exe: std::env::current_exe().ok(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            console_stdin: std::io::stdin().is_terminal(),
        }
    }

    fn console_input(&self) -> Option<Box<dyn std::io::Read + Send>> {
        self.console_stdin
            .then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>)
    }
}

/// `shim-hv` with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let ctx = Context::from_env();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    run(cli.command, &ctx, &mut out, &mut err)
}

/// Runs one command; output to `out`, messages to `err`; returns the exit code.
pub fn run(cmd: Command, ctx: &Context, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match execute(cmd, ctx, out, err) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            1
        }
    }
}

fn w(out: &mut dyn Write, s: std::fmt::Arguments<'_>) -> Result<(), Error> {
    out.write_fmt(s).map_err(io_err("writing output"))
}

fn execute(
    cmd: Command,
    ctx: &Context,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let client = Client::new(ctx.runtime.clone());
    match cmd {
        Command::Create {
            console,
            dry_run,
            paused,
            hostile,
            config,
        } => {
            let how = CreateFlags {
                dry_run,
                console,
                paused,
            };
            create(&client, ctx, &config, how, &hostile, out, err)
        }
        Command::Pause { domain } => {
            client.call(&Request::Pause { dom: domain })?;
            Ok(())
        }
        Command::Unpause { domain } => {
            client.call(&Request::Unpause { dom: domain })?;
            Ok(())
        }
        Command::List {
            long: true,
            domains,
        } => list_long(&client, domains, out),
        Command::List {
            long: false,
            domains,
        } => list(&client, &domains, out),
        Command::Console { ty, num, domain } => {
            if let Some(t) = ty.filter(|t| t != "pv") {
                return Err(Error::ConsoleType(t));
            }
            let num = num.as_deref().map_or(Ok(0), console_number)?;
            client.console_n(&domain, num, &mut WriteAdapter(out), ctx.console_input())
        }
        Command::Shutdown {
            wait,
            reboot,
            halt,
            domain,
        } => {
            let req = if reboot {
                PowerRequest::Reboot
            } else if halt {
                PowerRequest::Halt
            } else {
                PowerRequest::Poweroff
            };
            shutdown(&client, &domain, req, wait, err)
        }
        Command::Reboot { wait, domain } => {
            shutdown(&client, &domain, PowerRequest::Reboot, wait, err)
        }
        Command::Destroy { domain } => {
            client.call(&Request::Destroy { dom: domain })?;
            Ok(())
        }
        Command::BlockList { domains } => block_list(&client, domains, out),
        Command::NetworkList { domains } => network_list(&client, domains, out),
        Command::XenstoreEnv => xenstore_env(&client, out),
        Command::Demo => super::demo::run(out),
        Command::Daemon { runtime_dir } => {
            let rt = runtime_dir.map_or_else(|| ctx.runtime.clone(), RuntimeDir::at);
            Daemon::new(rt).serve()
        }
        Command::DaemonStop => daemon_stop(&client, err),
    }
}

/// `list -l`: the daemon's JSON, pretty-printed.
fn list_long(client: &Client, domains: Vec<String>, out: &mut dyn Write) -> Result<(), Error> {
    let Reply::Json { json } = client.call(&Request::ListLong { doms: domains })? else {
        return Err(Error::Protocol("expected a JSON document".into()));
    };
    let v: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| Error::Protocol(e.to_string()))?;
    let pretty = serde_json::to_string_pretty(&v).map_err(|e| Error::Protocol(e.to_string()))?;
    w(out, format_args!("{pretty}\n"))
}

/// `list [DOMAIN...]`: every domain, or the ones named (by name or id), in that order.
fn list(client: &Client, wanted: &[String], out: &mut dyn Write) -> Result<(), Error> {
    let Reply::Domains { domains } = client.call(&Request::List)? else {
        return Err(Error::Protocol("expected a domain list".into()));
    };
    let mut shown = Vec::new();
    for d in wanted {
        match domains
            .iter()
            .find(|i| &i.name == d || i.id.to_string() == *d)
        {
            Some(i) => shown.push(i.clone()),
            None => return Err(Error::NoSuchDomain(d.clone())),
        }
    }
    let list = if wanted.is_empty() { &domains } else { &shown };
    w(out, format_args!("{}", format_list(list)))
}

/// `block-list DOMAIN...`: one header, then each domain's disks.
fn block_list(client: &Client, domains: Vec<String>, out: &mut dyn Write) -> Result<(), Error> {
    w(out, format_args!("{}", BLOCK_HEADER))?;
    for dom in domains {
        match client.call(&Request::BlockList { dom })? {
            Reply::Devices { domid, devices } => {
                w(out, format_args!("{}", format_block_rows(domid, &devices)))?
            }
            other => return Err(Error::Protocol(format!("{other:?}"))),
        }
    }
    Ok(())
}

/// `network-list DOMAIN...`: one header, then each domain's vifs.
fn network_list(client: &Client, domains: Vec<String>, out: &mut dyn Write) -> Result<(), Error> {
    w(out, format_args!("{}", NET_HEADER))?;
    for dom in domains {
        match client.call(&Request::NetworkList { dom })? {
            Reply::Devices { devices, .. } => {
                w(out, format_args!("{}", format_net_rows(&devices)))?
            }
            other => return Err(Error::Protocol(format!("{other:?}"))),
        }
    }
    Ok(())
}

/// `xenstore-env`: the shell line that points Xen's xenstore tools at the daemon.
fn xenstore_env(client: &Client, out: &mut dyn Write) -> Result<(), Error> {
    match client.call(&Request::Info)? {
        Reply::Info {
            xenstored_socket: Some(p),
            ..
        } => w(
            out,
            format_args!("export XENSTORED_PATH={}\n", shell_quote(&p)),
        ),
        Reply::Info { .. } => Err(Error::Daemon(
            "the shim-hv daemon serves no xenstore socket (see its daemon.log)".into(),
        )),
        other => Err(Error::Protocol(format!("{other:?}"))),
    }
}

/// `daemon-stop`: asks the daemon to stop and waits (bounded) until it is gone.
fn daemon_stop(client: &Client, err: &mut dyn Write) -> Result<(), Error> {
    let pid = match client.call(&Request::Info)? {
        Reply::Info { pid, .. } => pid,
        other => return Err(Error::Protocol(format!("{other:?}"))),
    };
    client.call(&Request::Stop)?;
    for _ in 0..400 {
        if !client.daemon_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    w(
        err,
        format_args!("stopped the shim-hv daemon (pid {pid})\n"),
    )
}

/// `console -n`'s NUM: decimal digits only (no sign, no spaces), at most u32.
fn console_number(s: &str) -> Result<u32, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadConsoleNumber(s.to_string()));
    }
    s.parse()
        .map_err(|_| Error::BadConsoleNumber(s.to_string()))
}

/// Reads a config for `create`: its text and the parse (errors name file:line).
/// A relative `path` is relative to `cwd`; messages name it as given.
fn load_config(path: &Path, cwd: &Path) -> Result<(String, DomainConfig), Error> {
    let file = path.display().to_string();
    // The config module's bounded read: a huge file, a FIFO or /dev/zero (whose
    // metadata says 0 bytes) is refused, never read whole; not UTF-8 names the line.
    let text = DomainConfig::read_text(&cwd.join(path)).map_err(|mut e| {
        e.file = file.clone();
        Error::Config(e)
    })?;
    let cfg = DomainConfig::parse_str(&file, &text)?;
    Ok((text, cfg))
}

/// `create`'s switches.
#[derive(Clone, Copy, Debug)]
struct CreateFlags {
    /// `-n`
    dry_run: bool,
    /// `-c`
    console: bool,
    /// `-p`
    paused: bool,
}

fn create(
    client: &Client,
    ctx: &Context,
    path: &Path,
    how: CreateFlags,
    hostile: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let CreateFlags {
        dry_run,
        console,
        paused,
    } = how;
    w(
        err,
        format_args!("Parsing config from {}\n", path.display()),
    )?;
    let (text, mut cfg) = load_config(path, &ctx.cwd)?;
    for warning in &cfg.warnings {
        w(err, format_args!("{warning}\n"))?;
    }
    for h in hostile {
        cfg.add_hostile(h, "--hostile")?;
    }
    check_config(&cfg)?;
    if dry_run {
        if let Some(k) = &cfg.kernel {
            w(
                err,
                format_args!(
                    "{}: note: kernel = \"{}\" boots in a KVM VM (shim-hv's KVM runner)\n",
                    cfg.file,
                    k.display()
                ),
            )?;
        }
        let json = serde_json::to_string_pretty(&cfg.to_json())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        return w(out, format_args!("{json}\n"));
    }
    // Check the files here, so a bad config starts nothing (no daemon either).
    resolve_paths(&mut cfg, &ctx.cwd);
    cfg.validate_paths().map_err(Error::Paths)?;
    check_kernel_config(&cfg)?;
    for warning in check_disk_images(&cfg)?
        .into_iter()
        .chain(unattached_devices(&cfg))
    {
        w(err, format_args!("{warning}\n"))?;
    }
    match &ctx.daemon_exe {
        Some(exe) => client.ensure_daemon(exe)?,
        None => {
            client.connect()?;
        }
    }
    let reply = client.call(&Request::Create {
        file: cfg.file.clone(),
        text,
        cwd: ctx.cwd.display().to_string(),
        // With `-c`, as xl does: created paused, the console attached, then
        // started; so no output is missed, even of a domain that ends at once.
        paused: paused || console,
        hostile: hostile.to_vec(),
    })?;
    let Reply::Created { domid, name } = reply else {
        return Err(Error::Protocol(format!("{reply:?}")));
    };
    w(err, format_args!("Created domain {domid} ({name})\n"))?;
    if console {
        let dom = domid.to_string();
        let session = client.attach_console(&dom, 0)?;
        if !paused {
            client.call(&Request::Unpause { dom })?;
        }
        session.run(&mut WriteAdapter(out), ctx.console_input())?;
    }
    Ok(())
}

fn shutdown(
    client: &Client,
    dom: &str,
    req: PowerRequest,
    wait: bool,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let reply = client.call(&Request::Shutdown {
        dom: dom.into(),
        request: req.as_str().into(),
    })?;
    let Reply::Acted { domid } = reply else {
        return Err(Error::Protocol(format!("{reply:?}")));
    };
    let verb = if req == PowerRequest::Reboot {
        "Rebooting"
    } else {
        "Shutting down"
    };
    w(err, format_args!("{verb} domain {domid}\n"))?;
    if !wait {
        return Ok(());
    }
    w(err, format_args!("Waiting for 1 domains\n"))?;
    loop {
        match client.call(&Request::Wait {
            domid,
            timeout_ms: 5000,
        })? {
            Reply::Waited { finished: true } => break,
            Reply::Waited { finished: false } => {}
            other => return Err(Error::Protocol(format!("{other:?}"))),
        }
    }
    w(err, format_args!("Domain {domid} has been shut down\n"))
}

/// xl's `list` header and rows.
pub fn format_list(domains: &[DomainInfo]) -> String {
    let mut s = String::from(
        "Name                                        ID   Mem VCPUs\tState\tTime(s)\n",
    );
    for d in domains {
        s.push_str(&format!(
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}\n",
            d.name, d.id, d.mem_mib, d.vcpus, d.state, d.time_s
        ));
    }
    s
}

/// `block-list`'s header: xl's columns, plus the backend's state.
pub const BLOCK_HEADER: &str =
    "Vdev  BE  handle state evt-ch ring-ref BE-state BE-path                       \n";
/// `network-list`'s header: xl's columns, plus the backend's state.
pub const NET_HEADER: &str =
    "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-state BE-path                       \n";

fn n(v: Option<u32>) -> i64 {
    v.map_or(-1, i64::from)
}

/// `block-list` rows (xl: `state` is the frontend's).
pub fn format_block_rows(domid: u16, devices: &[DeviceInfo]) -> String {
    let mut s = String::new();
    for d in devices {
        s.push_str(&format!(
            "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<8} {:<30}\n",
            d.devid,
            d.backend_id,
            domid,
            n(d.frontend_state),
            n(d.evtchn),
            n(d.ring_refs.first().copied()),
            n(d.backend_state),
            d.backend_path
        ));
    }
    s
}

/// `network-list` rows (xl: `handle` is the device id, `state` the frontend's).
pub fn format_net_rows(devices: &[DeviceInfo]) -> String {
    let mut s = String::new();
    for d in devices {
        s.push_str(&format!(
            "{:<3} {:<2} {:<17} {:>6} {:>5} {:>6} {:>5}/{:<11} {:<8} {:<30}\n",
            d.devid,
            d.backend_id,
            d.name,
            d.devid,
            n(d.frontend_state),
            n(d.evtchn),
            n(d.ring_refs.first().copied()),
            n(d.ring_refs.get(1).copied()),
            n(d.backend_state),
            d.backend_path
        ));
    }
    s
}

/// Quotes a path for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `&mut dyn Write` as `impl Write`.
struct WriteAdapter<'a>(&'a mut dyn Write);

impl Write for WriteAdapter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Runs `cli` against an in-process daemon (the demo uses it): like [`run`], but
/// never starts a daemon process.
pub fn run_with_daemon(
    daemon: &Arc<Daemon>,
    cwd: &Path,
    cmd: Command,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let ctx = Context {
        runtime: daemon.runtime_dir().clone(),
        daemon_exe: None,
        cwd: cwd.to_path_buf(),
        console_stdin: false,
    };
    run(cmd, &ctx, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_format_matches_xl() {
        let d = DomainInfo {
            name: "demo".into(),
            id: 1,
            uuid: String::new(),
            mem_mib: 32,
            vcpus: 1,
            state: "r-----".into(),
            time_s: 1.25,
            reason: None,
        };
        let s = format_list(&[d]);
        let row = s.lines().nth(1).unwrap();
        assert_eq!(
            row,
            "demo                                         1    32     1     r-----       1.2"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("/run/shim-hv/xenstored.sock"),
            "/run/shim-hv/xenstored.sock"
        );
        assert_eq!(shell_quote("/tmp/a b/x'y"), "'/tmp/a b/x'\\''y'");
    }

    #[test]
    fn xm_flags_parse() {
        let c = Cli::try_parse_from(["shim-hv", "shutdown", "-w", "-H", "d"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Shutdown {
                wait: true,
                halt: true,
                reboot: false,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["shim-hv", "shutdown", "-R", "-H", "d"]).is_err());
        assert!(Cli::try_parse_from(["shim-hv", "create", "-n", "x.cfg"]).is_ok());
        assert!(Cli::try_parse_from(["shim-hv", "block-list"]).is_err());
    }

    #[test]
    fn console_flags_parse_as_xl() {
        let c = Cli::try_parse_from(["shim-hv", "console", "-t", "pv", "-n", "1", "d"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Console { ty: Some(t), num: Some(n), domain }
                if t == "pv" && n == "1" && domain == "d"
        ));
        // A negative number reaches our check instead of looking like a flag.
        let c = Cli::try_parse_from(["shim-hv", "console", "-n", "-1", "d"]).unwrap();
        assert!(matches!(c.command, Command::Console { num: Some(n), .. } if n == "-1"));
        assert_eq!(console_number("0").unwrap(), 0);
        assert_eq!(console_number("007").unwrap(), 7);
        assert_eq!(console_number("4294967295").unwrap(), u32::MAX);
        for bad in ["", "-1", "+1", " 1", "1 ", "abc", "0x1", "4294967296", "١"] {
            let e = console_number(bad).unwrap_err().to_string();
            assert!(e.starts_with("console -n \""), "{bad:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{bad:?}: {e}");
        }
        let huge = "9".repeat(5000);
        assert!(console_number(&huge).unwrap_err().to_string().len() < 200);
    }
}
