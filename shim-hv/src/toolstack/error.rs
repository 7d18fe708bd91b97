//! The toolstack's errors: each one prints as one line naming what failed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use xl_config::ConfigError;

/// A user-supplied word in a message: control characters escaped (the message stays
/// one line) and cut after [`Shown::MAX`] characters (docs/hostile-input.md H1: a 5000-digit
/// "domain id" is not echoed back whole).
struct Shown<'a>(&'a str);

impl Shown<'_> {
    const MAX: usize = 64;
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().take(Self::MAX) {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        let n = self.0.chars().count();
        if n > Self::MAX {
            write!(f, "…({n} characters)")?;
        }
        Ok(())
    }
}

/// Why a toolstack operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file does not parse (its own message has `file:line`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Files the config names are missing or unusable (one error per file).
    #[error(fmt = paths)]
    Paths(Vec<ConfigError>),
    /// The config's kernel cannot boot: a bad kernel or ramdisk, too little memory,
    /// or no usable `/dev/kvm` (the KVM runner's one-line message).
    #[error("{file}: {why}")]
    Kernel {
        /// The config file.
        file: String,
        /// What went wrong (names the kernel or ramdisk file).
        why: String,
    },
    /// A config setting shim-hv does not support (key, value).
    #[error("{file}: {key} = \"{value}\" is not supported ({hint})")]
    Unsupported {
        /// The config file.
        file: String,
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is supported instead.
        hint: &'static str,
    },
    /// A disk image shim-hv cannot use.
    #[error("{file}:{line}: disk image {}: {why}", .path.display())]
    DiskImage {
        /// The config file.
        file: String,
        /// The disk entry's line.
        line: u32,
        /// The image.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A device of the config could not be attached.
    #[error("{file}:{line}: {device} cannot be attached: {why}")]
    Device {
        /// The config file.
        file: String,
        /// The device entry's line.
        line: u32,
        /// Which device (`vif 0`, `disk xvda`).
        device: String,
        /// Why.
        why: String,
    },
    /// No domain with that name or id.
    #[error("{} is an invalid domain identifier", Shown(.0))]
    NoSuchDomain(String),
    /// `console -n`: not a console number (the word as given).
    #[error(
        "console -n \"{}\": not a console number (0 is the primary console, \
         1 and up the channels)",
        Shown(.0)
    )]
    BadConsoleNumber(String),
    /// `console -t`: not `pv` (the word as given; shim-hv domains have PV consoles
    /// only).
    #[error(fmt = console_type)]
    ConsoleType(String),
    /// The domain has no console with that number.
    #[error(
        "domain {domid} ({}) has no console {num} (its consoles: {})",
        Shown(.name),
        Numbers(.have)
    )]
    NoSuchConsole {
        /// Domain id.
        domid: u16,
        /// Domain name.
        name: String,
        /// The console number asked for.
        num: u32,
        /// The numbers it has (0 and its channels').
        have: Vec<u32>,
    },
    /// The console is a channel on a Unix socket: its data goes there.
    #[error(
        "domain {domid} ({}): console {num} is channel {} on socket {}: \
         connect to that socket instead",
        Shown(.name),
        Shown(.channel),
        .path.display()
    )]
    ConsoleOnSocket {
        /// Domain id.
        domid: u16,
        /// Domain name.
        name: String,
        /// The console number.
        num: u32,
        /// The channel's name.
        channel: String,
        /// The socket.
        path: PathBuf,
    },
    /// The xen model refused.
    #[error(transparent)]
    Domain(#[from] xen_model::Error),
    /// xenstored refused.
    #[error(transparent)]
    Xenstore(#[from] xenstored::Error),
    /// A file or socket operation failed.
    #[error("{what}: {err}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        err: io::Error,
    },
    /// No daemon answers on the control socket.
    #[error(fmt = no_daemon)]
    NoDaemon {
        /// The socket tried.
        socket: PathBuf,
        /// Why the connection failed.
        err: io::Error,
    },
    /// A daemon already runs in this runtime directory.
    #[error(fmt = already_running)]
    AlreadyRunning {
        /// Its runtime directory.
        dir: PathBuf,
        /// Its pid, if the pid file names one.
        pid: Option<u32>,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(String),
    /// The daemon's answer made no sense.
    #[error("bad answer from the shim-hv daemon: {0}")]
    Protocol(String),
}

/// [`Error::Paths`]: one line per file.
fn paths(errs: &[ConfigError], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, e) in errs.iter().enumerate() {
        if i > 0 {
            f.write_str("\n")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

/// [`Error::ConsoleType`]: `serial` gets its own explanation.
fn console_type(t: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if t == "serial" {
        f.write_str(
            "console -t serial: shim-hv domains have no serial console, only PV consoles (-t pv)",
        )
    } else {
        write!(
            f,
            "console -t \"{}\": the console type is pv or serial",
            Shown(t)
        )
    }
}

/// [`Error::NoDaemon`]: nobody listening gets a hint how to start a daemon.
fn no_daemon(socket: &Path, err: &io::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    ) {
        write!(
            f,
            "no shim-hv daemon is running ({}: {err}); `shim-hv create` starts one",
            socket.display()
        )
    } else {
        write!(
            f,
            "cannot reach the shim-hv daemon at {}: {err}",
            socket.display()
        )
    }
}

/// [`Error::AlreadyRunning`]: with the pid when known.
fn already_running(dir: &Path, pid: &Option<u32>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match pid {
        Some(p) => write!(
            f,
            "a shim-hv daemon (pid {p}) already runs in {}",
            dir.display()
        ),
        None => write!(f, "a shim-hv daemon already runs in {}", dir.display()),
    }
}

/// The console numbers of [`Error::NoSuchConsole`]: `0, 1, 2`.
struct Numbers<'a>(&'a [u32]);

impl fmt::Display for Numbers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// `Error::Io` with a description.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |err| Error::Io { what, err }
}
