//! Helpers for the toolstack tests: private temporary directories, configs, a
//! daemon process that is always stopped, bounded polling.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `shim-hv` binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_shim-hv");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "shim-hv-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `secs` seconds (a
/// bound for a hang, not a timing assertion).
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private environment for the CLI: `XDG_RUNTIME_DIR` in a temporary directory.
/// Dropping it stops the daemon (`daemon-stop`, then SIGKILL if it still runs).
pub struct Cli {
    pub dir: TempDir,
}

impl Cli {
    pub fn new(tag: &str) -> Cli {
        let dir = TempDir::new(tag);
        fs::create_dir_all(dir.0.join("xdg")).unwrap();
        Cli { dir }
    }

    pub fn xdg(&self) -> PathBuf {
        self.dir.0.join("xdg")
    }

    /// The daemon's runtime directory.
    pub fn runtime(&self) -> PathBuf {
        self.xdg().join("shim-hv")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(EXE);
        c.env("XDG_RUNTIME_DIR", self.xdg())
            .env_remove("XENSTORED_PATH")
            .current_dir(self.dir.path());
        c
    }

    /// Runs `shim-hv ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `shim-hv ARGS`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "shim-hv {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `list` as (name, id, state) rows, Domain-0 left out.
    pub fn list(&self) -> Vec<(String, u16, String)> {
        let out = self.ok(&["list"]);
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("Name "), "{out}");
        lines
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let row = (f[0].to_string(), f[1].parse().unwrap(), f[4].to_string());
                (row.0 != "Domain-0").then_some(row)
            })
            .collect()
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        fs::read_to_string(self.runtime().join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Whether process `pid` runs (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

impl Drop for Cli {
    fn drop(&mut self) {
        let pid = self.daemon_pid();
        let _ = self.run(&["daemon-stop"]);
        if let Some(pid) = pid {
            if wait_for(10, || (!alive(pid)).then_some(())).is_none() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A config for the built-in guest.
pub fn builtin_cfg(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nmemory = 16\n{extra}")
}
