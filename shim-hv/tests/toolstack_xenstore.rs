//! dom0's xenstore socket, driven with Xen's own tools (Debian's xenstore-utils,
//! which `.ci/run` installs) against a daemon running a built-in domain. Skipped,
//! with a message, where the tools are absent.

mod toolstack_util;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hypercall::DomId;
use shim_hv::toolstack::builtin::HEARTBEAT;
use shim_hv::toolstack::client::Client;
use shim_hv::toolstack::daemon::Daemon;
use shim_hv::toolstack::runtime::RuntimeDir;
use toolstack_util::{builtin_cfg, wait_for, TempDir};
use xl_config::DomainConfig;

const TOOLS: &[&str] = &[
    "xenstore-ls",
    "xenstore-read",
    "xenstore-write",
    "xenstore-rm",
    "xenstore-exists",
    "xenstore-list",
    "xenstore-chmod",
    "xenstore-watch",
];

fn tools_present() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .collect();
    if !missing.is_empty() {
        println!("skipped: xenstore-utils not installed (missing {missing:?})");
    }
    missing.is_empty()
}

/// A daemon serving its sockets from a thread; stopped on drop.
struct Served {
    daemon: Arc<Daemon>,
    thread: Option<std::thread::JoinHandle<Result<(), shim_hv::toolstack::Error>>>,
    _tmp: TempDir,
}

impl Served {
    fn start(tag: &str) -> Served {
        let tmp = TempDir::new(tag);
        let rt = RuntimeDir::at(tmp.path().join("rt/shim-hv"));
        let daemon = Daemon::new(rt.clone());
        daemon.set_quiet(true);
        let d = daemon.clone();
        let thread = std::thread::spawn(move || d.serve());
        let c = Client::new(rt);
        wait_for(30, || c.daemon_running().then_some(())).expect("daemon up");
        Served {
            daemon,
            thread: Some(thread),
            _tmp: tmp,
        }
    }

    fn sock(&self) -> PathBuf {
        self.daemon.runtime_dir().xenstored_socket()
    }

    fn xs(&self, tool: &str, args: &[&str]) -> Output {
        xs_cmd(&self.sock(), tool, args).output().unwrap()
    }

    fn xs_ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.xs(tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn create(&self, name: &str, extra: &str) -> DomId {
        let cfg = DomainConfig::parse_str("x.cfg", &builtin_cfg(name, extra)).unwrap();
        let id = self.daemon.create(cfg).unwrap();
        assert!(self
            .daemon
            .console(id)
            .unwrap()
            .wait_for(b"waiting for control/shutdown", Duration::from_secs(30))
            .is_ok());
        id
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.daemon.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn xs_cmd(sock: &Path, tool: &str, args: &[&str]) -> Command {
    let mut c = Command::new(tool);
    c.args(args).env("XENSTORED_PATH", sock);
    c
}

#[test]
fn xenstore_ls_shows_the_domain_tree() {
    if !tools_present() {
        return;
    }
    let s = Served::start("xsls");
    let id = s.create("lsdom", "");
    let dp = format!("/local/domain/{}", id.0);
    let out = s.xs_ok("xenstore-ls", &["-f", &dp]);
    assert!(out.contains(&format!("{dp}/name = \"lsdom\"")), "{out}");
    assert!(out.contains(&format!("{dp}/domid = \"{}\"", id.0)), "{out}");
    assert!(
        out.contains(&format!("{dp}/control/feature-poweroff = \"1\"")),
        "{out}"
    );
    // The whole store from the root, as xenstore-ls does by default.
    let all = s.xs_ok("xenstore-ls", &[]);
    assert!(all.contains("lsdom"), "{all}");
}

#[test]
fn read_write_rm_exists_list_chmod_round_trip() {
    if !tools_present() {
        return;
    }
    let s = Served::start("xsrw");
    let id = s.create("rwdom", "");
    let base = format!("/local/domain/{}/data/test", id.0);
    let k = format!("{base}/k");
    s.xs_ok("xenstore-write", &[&k, "hello world"]);
    assert_eq!(s.xs_ok("xenstore-read", &[&k]), "hello world\n");
    assert!(s.xs("xenstore-exists", &[&k]).status.success());
    s.xs_ok("xenstore-write", &[&format!("{base}/j"), "2"]);
    let mut names: Vec<String> = s
        .xs_ok("xenstore-list", &[&base])
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(names, ["j", "k"]);
    // Permissions: dom0 owns, the guest may read.
    s.xs_ok("xenstore-chmod", &[&k, "n0", &format!("r{}", id.0)]);
    let perms = s.xs_ok("xenstore-ls", &["-p", &base]);
    assert!(perms.contains(&format!("(n0,r{})", id.0)), "{perms}");
    // The same through the daemon's in-process view.
    let xs = s.daemon.hypervisor().xenstored().client(0);
    let p = xs.get_perms(xenstored::TxId::NONE, &k).unwrap();
    assert_eq!(
        p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["n0".to_string(), format!("r{}", id.0)]
    );
    s.xs_ok("xenstore-rm", &[&k]);
    assert!(!s.xs("xenstore-exists", &[&k]).status.success());
    assert!(!s.xs("xenstore-read", &[&k]).status.success());
}

#[test]
fn xenstore_watch_sees_the_guest_write() {
    if !tools_present() {
        return;
    }
    let s = Served::start("xswatch");
    let id = s.create("wdom", "extra = 'heartbeat=250'\n");
    let node = format!("/local/domain/{}/{HEARTBEAT}", id.0);
    // `-n 3`: the event for the watch itself, then two writes by the guest (it
    // counts the heartbeat up four times a second, as its command line asks).
    let mut child = xs_cmd(&s.sock(), "xenstore-watch", &["-n", "3", &node])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(out).lines().map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l == &node), "{lines:?}");
    // Those were the guest's writes: the node is the guest's and counts up.
    let v: u64 = s.xs_ok("xenstore-read", &[&node]).trim().parse().unwrap();
    assert!(v >= 2, "{v}");
}

#[test]
fn xenstore_write_shutdown_powers_the_guest_off() {
    if !tools_present() {
        return;
    }
    let s = Served::start("xsoff");
    let id = s.create("offdom", "");
    let node = format!("/local/domain/{}/control/shutdown", id.0);
    s.xs_ok("xenstore-write", &[&node, "poweroff"]);
    assert!(s.daemon.wait_gone(id, Duration::from_secs(30)));
    assert!(s.daemon.resolve("offdom").is_err());
    // Its tree is gone too.
    assert!(!s
        .xs("xenstore-exists", &[&format!("/local/domain/{}", id.0)])
        .status
        .success());
}
