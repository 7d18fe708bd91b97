//! The toolstack's errors: each one prints as one line naming what failed.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The config file does not parse (its own message has `file:line`).
    Config(ConfigError),
    /// Files the config names are missing or unusable (one error per file).
    Paths(Vec<ConfigError>),
    /// The config's kernel cannot boot: a bad kernel or ramdisk, too little memory,
    /// or no usable `/dev/kvm` (the KVM runner's one-line message).
    Kernel {
        /// The config file.
        file: String,
        /// What went wrong (names the kernel or ramdisk file).
        why: String,
    },
    /// A config setting shim-hv does not support (key, value).
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
    NoSuchDomain(String),
    /// `console -n`: not a console number (the word as given).
    BadConsoleNumber(String),
    /// `console -t`: not `pv` (the word as given; shim-hv domains have PV consoles
    /// only).
    ConsoleType(String),
    /// The domain has no console with that number.
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
    Domain(xen_model::Error),
    /// xenstored refused.
    Xenstore(xenstored::Error),
    /// A file or socket operation failed.
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        err: io::Error,
    },
    /// No daemon answers on the control socket.
    NoDaemon {
        /// The socket tried.
        socket: PathBuf,
        /// Why the connection failed.
        err: io::Error,
    },
    /// A daemon already runs in this runtime directory.
    AlreadyRunning {
        /// Its runtime directory.
        dir: PathBuf,
        /// Its pid, if the pid file names one.
        pid: Option<u32>,
    },
    /// The daemon answered with an error.
    Daemon(String),
    /// The daemon's answer made no sense.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Paths(errs) => {
                for (i, e) in errs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            Error::Kernel { file, why } => write!(f, "{file}: {why}"),
            Error::Unsupported {
                file,
                key,
                value,
                hint,
            } => write!(f, "{file}: {key} = \"{value}\" is not supported ({hint})"),
            Error::DiskImage {
                file,
                line,
                path,
                why,
            } => write!(f, "{file}:{line}: disk image {}: {why}", path.display()),
            Error::Device {
                file,
                line,
                device,
                why,
            } => write!(f, "{file}:{line}: {device} cannot be attached: {why}"),
            Error::NoSuchDomain(d) => write!(f, "{} is an invalid domain identifier", Shown(d)),
            Error::BadConsoleNumber(n) => write!(
                f,
                "console -n \"{}\": not a console number (0 is the primary console, \
                 1 and up the channels)",
                Shown(n)
            ),
            Error::ConsoleType(t) if t == "serial" => f.write_str(
                "console -t serial: shim-hv domains have no serial console, only PV consoles (-t pv)",
            ),
            Error::ConsoleType(t) => write!(
                f,
                "console -t \"{}\": the console type is pv or serial",
                Shown(t)
            ),
            Error::NoSuchConsole {
                domid,
                name,
                num,
                have,
            } => {
                let have: Vec<String> = have.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "domain {domid} ({}) has no console {num} (its consoles: {})",
                    Shown(name),
                    have.join(", ")
                )
            }
            Error::ConsoleOnSocket {
                domid,
                name,
                num,
                channel,
                path,
            } => write!(
                f,
                "domain {domid} ({}): console {num} is channel {} on socket {}: \
                 connect to that socket instead",
                Shown(name),
                Shown(channel),
                path.display()
            ),
            Error::Domain(e) => write!(f, "{e}"),
            Error::Xenstore(e) => write!(f, "{e}"),
            Error::Io { what, err } => write!(f, "{what}: {err}"),
            Error::NoDaemon { socket, err }
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                write!(
                    f,
                    "no shim-hv daemon is running ({}: {err}); `shim-hv create` starts one",
                    socket.display()
                )
            }
            Error::NoDaemon { socket, err } => write!(
                f,
                "cannot reach the shim-hv daemon at {}: {err}",
                socket.display()
            ),
            Error::AlreadyRunning { dir, pid } => match pid {
                Some(p) => write!(
                    f,
                    "a shim-hv daemon (pid {p}) already runs in {}",
                    dir.display()
                ),
                None => write!(f, "a shim-hv daemon already runs in {}", dir.display()),
            },
            Error::Daemon(m) => f.write_str(m),
            Error::Protocol(m) => write!(f, "bad answer from the shim-hv daemon: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<xen_model::Error> for Error {
    fn from(e: xen_model::Error) -> Self {
        Error::Domain(e)
    }
}

impl From<xenstored::Error> for Error {
    fn from(e: xenstored::Error) -> Self {
        Error::Xenstore(e)
    }
}

/// `Error::Io` with a description.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |err| Error::Io { what, err }
}
