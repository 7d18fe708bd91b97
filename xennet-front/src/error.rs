//! The crate's error type.

use core::fmt;

use hypercall::gnttab;
use hypercall::ring::RingError;
use hypercall::{GrantRef, XenError};
use xenbus::XenbusState;

use crate::mac::MacError;

/// Why the device was failed (docs/hostile-input.md "fail the device"). Sticky until
/// [`crate::NetFront::close`] and a new connect.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Broken {
    /// A ring index from the backend was impossible (rows 1, 2).
    Ring {
        /// Queue.
        queue: usize,
        /// The tx ring (else the rx ring).
        tx: bool,
        /// What the ring saw.
        error: RingError,
    },
    /// A tx response carried an id outside the ring (row 17).
    TxIdOutOfRange {
        /// Queue.
        queue: usize,
        /// The id.
        id: u16,
    },
    /// A tx response carried an id that is not in flight: never issued, or already
    /// completed (row 17, docs/hostile-input.md N1/N2).
    TxNotInFlight {
        /// Queue.
        queue: usize,
        /// The id.
        id: u16,
    },
    /// The backend completed a request while still mapping its grant (XSA-396); the
    /// page is quarantined.
    GrantStillMapped {
        /// Queue.
        queue: usize,
        /// The grant.
        gref: GrantRef,
    },
    /// Too many bad rx responses in a row (row 18).
    RxErrors {
        /// Queue.
        queue: usize,
        /// Consecutive bad frames seen.
        count: u32,
    },
    /// Notifying the backend failed.
    Notify(XenError),
    /// The backend went away (`Closing`, `Closed`, or its state vanished).
    BackendGone(XenbusState),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Ring { queue, tx, error } => {
                let r = if *tx { "tx" } else { "rx" };
                write!(f, "queue {queue} {r} ring: {error}")
            }
            Broken::TxIdOutOfRange { queue, id } => {
                write!(f, "queue {queue}: tx response id {id} out of range")
            }
            Broken::TxNotInFlight { queue, id } => {
                write!(f, "queue {queue}: tx response for inactive request {id}")
            }
            Broken::GrantStillMapped { queue, gref } => {
                write!(f, "queue {queue}: grant {} still in use by backend", gref.0)
            }
            Broken::RxErrors { queue, count } => {
                write!(f, "queue {queue}: {count} bad rx responses in a row")
            }
            Broken::Notify(e) => write!(f, "notifying the backend: {e}"),
            Broken::BackendGone(s) => write!(f, "backend went {s:?}"),
        }
    }
}

/// Everything that can go wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A xenstore operation failed (or a key was missing/unparsable).
    Xenstore(xenbus::Error),
    /// The device node has no `mac` key.
    MissingMac,
    /// The `mac` key is malformed (row 22): we refuse to connect.
    BadMac(MacError),
    /// The backend does not offer `feature-rx-copy` (required, as in Linux).
    NoRxCopy,
    /// The platform had no pages for rings or buffers.
    NoMemory,
    /// The platform could not translate a page to a gfn.
    NoGfn,
    /// A grant operation failed (e.g. the table is exhausted).
    Grant(gnttab::Error),
    /// A hypercall failed (event channels).
    Xen(XenError),
    /// The device was failed; see [`Broken`].
    Broken(Broken),
    /// The device is not connected (closed, or never connected).
    NotConnected,
    /// Frame shorter than an Ethernet header.
    FrameTooSmall(usize),
    /// Frame longer than the negotiated maximum.
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// No room in the tx ring or tx buffers right now: [`crate::NetFront::poll`]
    /// and retry.
    Busy,
    /// GSO for this protocol was not negotiated, or the request is malformed.
    GsoNotNegotiated,
    /// No queue with this index.
    BadQueue(usize),
    /// [`crate::NetFront::connect_in_place`] on a connected device: close it first.
    InUse,
}

impl From<xenbus::Error> for Error {
    fn from(e: xenbus::Error) -> Self {
        Error::Xenstore(e)
    }
}

impl From<gnttab::Error> for Error {
    fn from(e: gnttab::Error) -> Self {
        Error::Grant(e)
    }
}

impl From<XenError> for Error {
    fn from(e: XenError) -> Self {
        Error::Xen(e)
    }
}

impl From<Broken> for Error {
    fn from(b: Broken) -> Self {
        Error::Broken(b)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xenstore(e) => write!(f, "xenstore: {e}"),
            Error::MissingMac => f.write_str("device has no mac key"),
            Error::BadMac(e) => write!(f, "bad mac key: {e}"),
            Error::NoRxCopy => f.write_str("backend lacks feature-rx-copy"),
            Error::NoMemory => f.write_str("out of pages"),
            Error::NoGfn => f.write_str("page has no gfn"),
            Error::Grant(e) => write!(f, "grant: {e}"),
            Error::Xen(e) => write!(f, "{e}"),
            Error::Broken(b) => write!(f, "device failed: {b}"),
            Error::NotConnected => f.write_str("not connected"),
            Error::InUse => f.write_str("device in use: close it first"),
            Error::FrameTooSmall(n) => write!(f, "frame of {n} bytes is too short"),
            Error::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds {max}")
            }
            Error::Busy => f.write_str("tx ring full"),
            Error::GsoNotNegotiated => f.write_str("GSO not negotiated"),
            Error::BadQueue(q) => write!(f, "no queue {q}"),
        }
    }
}
