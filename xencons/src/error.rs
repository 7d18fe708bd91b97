//! Errors.

use core::fmt;

use hypercall::{Gfn, XenError};

use crate::ring::Fault;

/// Why a console operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An HVM parameter the console needs is 0: the toolstack set no console up
    /// (`abi::hvm::PARAM_CONSOLE_PFN` or `PARAM_CONSOLE_EVTCHN`).
    NotConfigured {
        /// The parameter index.
        param: u32,
    },
    /// An HVM parameter holds a value that cannot be what it names (e.g. a port
    /// number above `u32::MAX`).
    BadParam {
        /// The parameter index.
        param: u32,
        /// Its value.
        value: u64,
    },
    /// A hypercall failed (reading a parameter, allocating or binding a port).
    Hypercall(XenError),
    /// The platform does not map the console frame.
    Unmapped(Gfn),
    /// The memory given as a console page is too small or not 4-byte aligned.
    BadPage {
        /// Its length in bytes.
        len: usize,
    },
    /// The console is failed: the backend broke the ring protocol (now or earlier).
    /// Nothing more is read from or written to the page.
    Failed(Fault),
    /// The backend made no progress on `out_cons` for the configured stall timeout
    /// while the ring was full: it is considered gone. Later writes fail at once
    /// while the ring stays full and `out_cons` stays put; any progress revives the
    /// console.
    BackendGone {
        /// How long `out_cons` stood still, in nanoseconds.
        stalled_ns: u64,
    },
    /// The backend marked the console `XENCONSOLE_DISCONNECTED`: it will not drain the
    /// ring, so writing would only fill it.
    Disconnected,
    /// A blocking read or flush found nothing within its timeout.
    Timeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotConfigured { param } => {
                write!(f, "no console: HVM parameter {param} is 0")
            }
            Error::BadParam { param, value } => {
                write!(
                    f,
                    "HVM parameter {param} has an impossible value {value:#x}"
                )
            }
            Error::Hypercall(e) => write!(f, "hypercall failed: {e}"),
            Error::Unmapped(g) => write!(f, "console frame {:#x} is not mapped", g.0),
            Error::BadPage { len } => write!(f, "console page unusable ({len} bytes)"),
            Error::Failed(fault) => write!(f, "console failed: {fault}"),
            Error::BackendGone { stalled_ns } => write!(
                f,
                "console backend gone: no progress for {} ms with the ring full",
                stalled_ns / 1_000_000
            ),
            Error::Disconnected => f.write_str("console backend disconnected"),
            Error::Timeout => f.write_str("timed out"),
        }
    }
}

impl From<XenError> for Error {
    fn from(e: XenError) -> Self {
        Error::Hypercall(e)
    }
}

impl From<Fault> for Error {
    fn from(f: Fault) -> Self {
        Error::Failed(f)
    }
}

/// A write that did not complete: how much of the buffer went into the ring before
/// `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteError {
    /// Bytes of the buffer that were placed in the ring (the backend will see them).
    pub written: usize,
    /// Why the rest was not.
    pub error: Error,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (after {} bytes)", self.error, self.written)
    }
}
