//! The toolstack: shim-hv's `xl`. One daemon per runtime directory holds every
//! domain; the CLI talks to it over a Unix socket.
//!
//! ```text
//!  shim-hv create/list/shutdown/...  ──JSON lines──▶  control.sock (0600)
//!        (cli, client)                                    │
//!                                                  daemon: Hypervisor + xenstored
//!  xenstore-ls, xenstore-write ...  ──xs_wire──▶  xenstored.sock (0600, dom0)
//! ```
//!
//! - [`runtime::RuntimeDir`]: `$XDG_RUNTIME_DIR/shim-hv/` or `/run/shim-hv/` (0700):
//!   sockets, lock, pid file, log.
//! - [`daemon::Daemon`]: creates domains from configs, applies `on_poweroff` /
//!   `on_reboot` / `on_crash` (`destroy`, `restart`, `preserve`), serves the sockets.
//!   `create` starts it in the background when none runs.
//! - [`client::Client`]: the CLI side of the control socket.
//! - [`devices::DomainDevices`]: a domain's disks (blkback), vifs (netback on
//!   in-process bridges) and channels (secondary consoles on a pty or a Unix
//!   socket), attached at start and restart, detached at the end.
//! - [`builtin`]: the in-process guest a config without `kernel` runs; a config with
//!   `kernel` boots it in a KVM VM ([`kvm_runner`]).
//! - [`cli`]: the commands (`create [-c] [-n] [-p] [--hostile DEV=MODE]`, `list [-l]`, `console`, `shutdown [-w]
//!   [-R|-H]`, `reboot`, `destroy`, `block-list`, `network-list`, `xenstore-env`,
//!   `demo`).
//!
//! ```no_run
//! use xl_config::DomainConfig;
//! use shim_hv::toolstack::{daemon::Daemon, runtime::RuntimeDir, PowerRequest};
//!
//! let d = Daemon::new(RuntimeDir::at("/tmp/example/shim-hv"));
//! let cfg = DomainConfig::parse_str("mini.cfg", "name = 'mini'\nmemory = 16\n").unwrap();
//! let id = d.create(cfg).unwrap();
//! d.shutdown("mini", PowerRequest::Poweroff).unwrap();
//! assert!(d.wait_gone(id, std::time::Duration::from_secs(10)));
//! ```

pub mod builtin;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod demo;
pub mod devices;
mod error;
pub mod proto;
pub mod runtime;

pub use error::Error;

use xl_config::{Action, DomainConfig};

/// Sector size disk images are counted in.
pub const SECTOR: u64 = 512;

/// What `shutdown`/`reboot` write to `control/shutdown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerRequest {
    /// `poweroff` (`xl shutdown`).
    Poweroff,
    /// `reboot` (`xl reboot`, xm's `shutdown -R`).
    Reboot,
    /// `halt` (xm's `shutdown -H`; guests treat it as poweroff).
    Halt,
}

impl PowerRequest {
    /// The node value.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerRequest::Poweroff => "poweroff",
            PowerRequest::Reboot => "reboot",
            PowerRequest::Halt => "halt",
        }
    }

    /// From the node value.
    pub fn parse(s: &str) -> Option<PowerRequest> {
        Some(match s {
            "poweroff" => PowerRequest::Poweroff,
            "reboot" => PowerRequest::Reboot,
            "halt" => PowerRequest::Halt,
            _ => return None,
        })
    }
}

/// Refuses settings the parser accepts but shim-hv cannot honour: the actions it
/// does not implement (`rename-restart`, `coredump-*`, `soft-reset`), and
/// `hostile` modes its backends do not have ([`devices::hostile_modes`]).
pub fn check_config(cfg: &DomainConfig) -> Result<(), Error> {
    devices::hostile_modes(cfg)?;
    for (key, a) in [
        ("on_poweroff", cfg.on_poweroff),
        ("on_reboot", cfg.on_reboot),
        ("on_crash", cfg.on_crash),
        ("on_watchdog", cfg.on_watchdog),
    ] {
        if !matches!(a, Action::Destroy | Action::Restart | Action::Preserve) {
            return Err(Error::Unsupported {
                file: cfg.file.clone(),
                key,
                value: a.as_str().to_string(),
                hint: "shim-hv supports destroy, restart and preserve",
            });
        }
    }
    Ok(())
}

/// Checks the sizes of file-backed disk images (docs/hostile-input.md row 45): smaller than one
/// sector is refused; a size that is not a multiple of 512 bytes is rounded down,
/// with a warning (returned, one line each). Block devices and cdroms without media
/// are not checked here.
pub fn check_disk_images(cfg: &DomainConfig) -> Result<Vec<String>, Error> {
    let mut warnings = Vec::new();
    for d in &cfg.disks {
        let Some(t) = &d.target else { continue };
        let Ok(m) = std::fs::metadata(t) else {
            continue; // validate_paths reports it
        };
        if !m.is_file() {
            continue;
        }
        let len = m.len();
        if len < SECTOR {
            return Err(Error::DiskImage {
                file: cfg.file.clone(),
                line: d.line,
                path: t.clone(),
                why: format!("{len} bytes, smaller than one {SECTOR}-byte sector"),
            });
        }
        if len % SECTOR != 0 {
            warnings.push(format!(
                "{}:{}: warning: disk image {} is {len} bytes, not a multiple of {SECTOR}: \
                 the guest sees {} sectors (the last {} bytes are not used)",
                cfg.file,
                d.line,
                t.display(),
                len / SECTOR,
                len % SECTOR
            ));
        }
    }
    Ok(warnings)
}

/// Device settings without effect ([`devices::ignored_settings`]): one warning
/// line each, `file:line`. (Every disk and vif is attached.)
pub fn unattached_devices(cfg: &DomainConfig) -> Vec<String> {
    devices::ignored_settings(cfg)
}
