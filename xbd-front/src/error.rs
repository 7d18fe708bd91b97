//! The crate's error types.

use core::fmt;

use hypercall::ring::RingError;
use hypercall::{GrantRef, XenError};

/// Why the device stopped trusting its backend (it is `Broken` until torn down and
/// reconnected). Every in-flight and later request fails with
/// [`Error::Broken`] carrying this reason.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokenReason {
    /// The ring's response producer index is impossible (docs/hostile-input.md rows 1, 2).
    Ring(RingError),
    /// A response id that names no request we issued (row 6).
    UnknownId(u64),
    /// A response for a request that already completed, or was never published
    /// (rows 6, 7).
    NotOutstanding(u64),
    /// The response operation differs from the request's (row 8).
    WrongOperation {
        /// The response id.
        id: u64,
        /// What we sent (for indirect requests: the inner operation).
        expected: u8,
        /// What came back.
        got: u8,
    },
    /// A status outside OKAY/ERROR/EOPNOTSUPP (row 9).
    UnknownStatus {
        /// The response id.
        id: u64,
        /// The status.
        status: i16,
    },
    /// The backend completed a request but still maps one of its pages (XSA-396).
    GrantStillMapped(GrantRef),
    /// Notifying the backend (`EVTCHNOP_send`) failed: its end of the event channel
    /// is closed or was never bound (docs/hostile-input.md E4).
    Notify(XenError),
}

impl fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BrokenReason::Ring(e) => write!(f, "ring: {e}"),
            BrokenReason::UnknownId(id) => write!(f, "response with unknown id {id:#x}"),
            BrokenReason::NotOutstanding(id) => {
                write!(f, "response for id {id:#x}, which is not outstanding")
            }
            BrokenReason::WrongOperation { id, expected, got } => write!(
                f,
                "response {id:#x} has operation {got}, the request had {expected}"
            ),
            BrokenReason::UnknownStatus { id, status } => {
                write!(f, "response {id:#x} has unknown status {status}")
            }
            BrokenReason::GrantStillMapped(r) => {
                write!(f, "backend still maps grant {} of a completed request", r.0)
            }
            BrokenReason::Notify(e) => write!(f, "notifying the backend failed: {e}"),
        }
    }
}

/// What a completed request reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoError {
    /// The backend answered `BLKIF_RSP_ERROR`.
    Backend,
    /// The backend answered `BLKIF_RSP_EOPNOTSUPP` (the feature is now off).
    NotSupported,
    /// The backend answered with an unknown status (the device is now broken).
    BadStatus(i16),
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IoError::Backend => write!(f, "backend reported an I/O error"),
            IoError::NotSupported => write!(f, "backend does not support the operation"),
            IoError::BadStatus(s) => write!(f, "backend returned unknown status {s}"),
        }
    }
}

/// A backend-written value that makes the device unusable (refused at connect).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadConfig {
    /// `sector-size` is not a power of two in 512..=4096 (row 13).
    SectorSize(u64),
    /// `sectors` is 0 for a disk (row 11).
    ZeroSectors,
    /// `sectors * sector-size` does not fit 64 bits (row 11).
    CapacityOverflow {
        /// `sectors`.
        sectors: u64,
        /// `sector-size`.
        sector_size: u64,
    },
    /// A value that is not a decimal number where one is required.
    NotANumber,
}

impl fmt::Display for BadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BadConfig::SectorSize(s) => {
                write!(f, "sector-size {s} is not a power of two in 512..=4096")
            }
            BadConfig::ZeroSectors => write!(f, "disk has 0 sectors"),
            BadConfig::CapacityOverflow {
                sectors,
                sector_size,
            } => write!(f, "{sectors} sectors of {sector_size} bytes overflow"),
            BadConfig::NotANumber => write!(f, "not a number"),
        }
    }
}

/// Everything that can go wrong with a block device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A xenstore or handshake failure.
    Xenbus(xenbus::Error),
    /// A hypercall failed (event channel allocation, notification).
    Xen(XenError),
    /// A grant-table operation failed.
    Grant(hypercall::gnttab::Error),
    /// The platform could not allocate the ring, bounce or indirect pages.
    NoMemory,
    /// The platform could not translate a page to a guest frame (or the frame does
    /// not fit a v1 grant).
    NoGfn,
    /// A backend value is unusable; the device refused to connect.
    BadConfig {
        /// The key (last bytes of its path).
        key: xenbus::Snippet,
        /// What is wrong.
        problem: BadConfig,
    },
    /// The device is not connected (never connected, closed, or the backend went
    /// away; in-flight requests fail with this when the backend closes, row 15).
    NotConnected,
    /// The device stopped trusting its backend.
    Broken(BrokenReason),
    /// A write or discard on a read-only disk or a cdrom (nothing was sent).
    ReadOnly,
    /// The backend does not offer this operation (flush without
    /// `feature-flush-cache`/`feature-barrier`, discard without `feature-discard`).
    NotSupported,
    /// A length that is zero or not a multiple of the sector size, or buffers whose
    /// total length differs from the request's.
    BadLength {
        /// The length given.
        len: usize,
        /// The sector size it must be a multiple of.
        sector_size: u32,
    },
    /// A range of a completed read ([`crate::ReadData::read`]) that is not inside
    /// the data read.
    BeyondData {
        /// Start of the range asked for.
        offset: usize,
        /// Its length.
        len: usize,
        /// Bytes read.
        size: usize,
    },
    /// The request reaches past the end of the disk.
    OutOfRange {
        /// First logical sector.
        lba: u64,
        /// Length in bytes.
        len: u64,
        /// Disk capacity in bytes.
        capacity: u64,
    },
    /// The request needs more ring slots than the device has in total
    /// ([`crate::Device::max_request_bytes`]); the blocking helpers split for you.
    TooLarge {
        /// The largest request in bytes.
        max: usize,
    },
    /// No free slot right now: poll for completions first.
    Busy,
    /// [`crate::Device::bind`] on a device that is connected or connecting.
    InUse,
    /// The tag names no live request (finished, cancelled, or never issued).
    UnknownTag,
    /// The request has not completed yet.
    NotDone,
    /// The request is not a read (only reads have data to look at in place).
    NotARead,
    /// The request failed.
    Io(IoError),
    /// A blocking call's deadline passed (the request was cancelled, row 14).
    Timeout,
    /// Grants of an earlier connection are still mapped by the old backend
    /// (row 26); their pages stay out of use. Retry later.
    GrantsStillMapped {
        /// How many.
        count: usize,
    },
    /// A request on registered pages, but none are registered
    /// ([`crate::Device::register_pages`]).
    NotRegistered,
    /// The request's data is in the caller's registered pages: there is nothing to
    /// copy out of (or look at in) the device's own pages.
    InRegisteredPages,
    /// [`crate::Device::set_queue`] named a queue the connection does not use.
    NoSuchQueue {
        /// The queue asked for.
        queue: usize,
        /// Queues in use.
        queues: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xenbus(e) => write!(f, "xenbus: {e}"),
            Error::Xen(e) => write!(f, "{e}"),
            Error::Grant(e) => write!(f, "grant table: {e}"),
            Error::NoMemory => write!(f, "out of pages"),
            Error::NoGfn => write!(f, "page has no usable guest frame number"),
            Error::BadConfig { key, problem } => write!(f, "backend key {key}: {problem}"),
            Error::NotConnected => write!(f, "device not connected"),
            Error::Broken(r) => write!(f, "device broken: {r}"),
            Error::ReadOnly => write!(f, "device is read-only"),
            Error::NotSupported => write!(f, "operation not supported by the backend"),
            Error::BadLength { len, sector_size } => write!(
                f,
                "length {len} is zero or not a multiple of the sector size {sector_size}"
            ),
            Error::BeyondData { offset, len, size } => write!(
                f,
                "{len} bytes at offset {offset} are not inside the {size} bytes read"
            ),
            Error::OutOfRange { lba, len, capacity } => write!(
                f,
                "request at sector {lba} of {len} bytes is past the end ({capacity} bytes)"
            ),
            Error::TooLarge { max } => write!(f, "request larger than {max} bytes"),
            Error::Busy => write!(f, "no free request slot"),
            Error::InUse => write!(f, "device in use: close it first"),
            Error::UnknownTag => write!(f, "no such request"),
            Error::NotDone => write!(f, "request not complete"),
            Error::NotARead => write!(f, "request is not a read"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Timeout => write!(f, "timed out"),
            Error::GrantsStillMapped { count } => {
                write!(f, "{count} grants still mapped by the old backend")
            }
            Error::NotRegistered => write!(f, "no pages registered"),
            Error::InRegisteredPages => write!(f, "the data is in the registered pages"),
            Error::NoSuchQueue { queue, queues } => {
                write!(f, "no queue {queue}: the device uses {queues}")
            }
        }
    }
}

impl From<xenbus::Error> for Error {
    fn from(e: xenbus::Error) -> Self {
        Error::Xenbus(e)
    }
}

impl From<XenError> for Error {
    fn from(e: XenError) -> Self {
        Error::Xen(e)
    }
}

impl From<hypercall::gnttab::Error> for Error {
    fn from(e: hypercall::gnttab::Error) -> Self {
        Error::Grant(e)
    }
}

impl From<IoError> for Error {
    fn from(e: IoError) -> Self {
        Error::Io(e)
    }
}
