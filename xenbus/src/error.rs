//! The crate's error type and the small value types errors carry.

use core::fmt;

use hypercall::abi::xs_wire::ERRORS;
use hypercall::{Gfn, XenError};

use crate::state::XenbusState;

/// Result alias for this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// An errno name xenstored sends in an `XS_ERROR` reply (`xsd_errors[]` in
/// `io/xs_wire.h`). The order matches [`hypercall::abi::xs_wire::ERRORS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variants are the errno names themselves
pub enum ErrnoName {
    Einval,
    Eacces,
    Eexist,
    Eisdir,
    Enoent,
    Enomem,
    Enospc,
    Eio,
    Enotempty,
    Enosys,
    Erofs,
    Ebusy,
    Eagain,
    Eisconn,
    E2big,
    Eperm,
}

impl ErrnoName {
    /// Every name, in the order of `xsd_errors[]`.
    pub const ALL: [ErrnoName; 16] = [
        ErrnoName::Einval,
        ErrnoName::Eacces,
        ErrnoName::Eexist,
        ErrnoName::Eisdir,
        ErrnoName::Enoent,
        ErrnoName::Enomem,
        ErrnoName::Enospc,
        ErrnoName::Eio,
        ErrnoName::Enotempty,
        ErrnoName::Enosys,
        ErrnoName::Erofs,
        ErrnoName::Ebusy,
        ErrnoName::Eagain,
        ErrnoName::Eisconn,
        ErrnoName::E2big,
        ErrnoName::Eperm,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The name as it appears on the wire, e.g. `"ENOENT"`.
    pub fn name(self) -> &'static str {
        ERRORS[self.index()].0
    }

    /// The Linux errno number, e.g. 2 for `ENOENT`.
    pub fn errno(self) -> i32 {
        ERRORS[self.index()].1
    }

    /// Parses a name as sent by xenstored (without the trailing NUL).
    pub fn from_name(name: &[u8]) -> Option<ErrnoName> {
        ERRORS
            .iter()
            .position(|(n, _)| n.as_bytes() == name)
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many bytes of a key or value an error keeps.
pub const SNIPPET_MAX: usize = 40;

/// A bounded copy of a key or value for error messages: the first (values) or last
/// (keys, where the last component says most) [`SNIPPET_MAX`] bytes, plus the full length.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Snippet {
    buf: [u8; SNIPPET_MAX],
    len: u8,
    total: usize,
    tail: bool,
}

impl Snippet {
    /// Keeps the first [`SNIPPET_MAX`] bytes of `bytes`.
    pub fn head(bytes: &[u8]) -> Snippet {
        let n = bytes.len().min(SNIPPET_MAX);
        let mut buf = [0u8; SNIPPET_MAX];
        buf[..n].copy_from_slice(&bytes[..n]);
        Snippet {
            buf,
            len: n as u8,
            total: bytes.len(),
            tail: false,
        }
    }

    /// Keeps the last [`SNIPPET_MAX`] bytes of `bytes`.
    pub fn tail(bytes: &[u8]) -> Snippet {
        let n = bytes.len().min(SNIPPET_MAX);
        let mut buf = [0u8; SNIPPET_MAX];
        buf[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        Snippet {
            buf,
            len: n as u8,
            total: bytes.len(),
            tail: true,
        }
    }

    /// A value known only by its length (it was too large to fetch).
    pub fn unfetched(total: usize) -> Snippet {
        Snippet {
            buf: [0; SNIPPET_MAX],
            len: 0,
            total,
            tail: false,
        }
    }

    /// The bytes kept.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The kept bytes as text, if they are UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// The length of the original key or value.
    pub fn total_len(&self) -> usize {
        self.total
    }

    /// Whether bytes were left out.
    pub fn is_truncated(&self) -> bool {
        usize::from(self.len) < self.total
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_truncated() && self.tail {
            f.write_str("…")?;
        }
        for &b in self.as_bytes() {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.is_truncated() && !self.tail {
            write!(f, "…({} bytes)", self.total)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Why a value read from xenstore could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseKind {
    /// Not valid UTF-8.
    NotUtf8,
    /// Empty where a number was expected.
    Empty,
    /// Not a decimal number.
    NotANumber,
    /// A number too large for the type.
    Overflow,
    /// Longer than any valid value of the type.
    TooLong,
    /// A number outside the values the key may take (e.g. a XenbusState of 9).
    OutOfRange,
}

/// A violation of the xenstore ring protocol by the other side. The connection is
/// failed: this and every later call return [`Error::Broken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message header announced more than `XENSTORE_PAYLOAD_MAX` (4096) bytes.
    ReplyTooLarge {
        /// The announced length.
        len: u32,
    },
    /// `rsp_prod - rsp_cons` exceeds the ring size (indices out of range).
    RspIndex {
        /// Our consumer index.
        cons: u32,
        /// The producer index xenstored published.
        prod: u32,
    },
    /// `req_prod - req_cons` exceeds the ring size (xenstored moved `req_cons` wrongly).
    ReqIndex {
        /// The consumer index xenstored published.
        cons: u32,
        /// Our producer index.
        prod: u32,
    },
    /// A message began but its remaining bytes never came (the header promised more
    /// than xenstored sent, docs/hostile-input.md row 27): no progress for a whole timeout, or still
    /// incomplete when a request gave up waiting (reading on would swallow the next
    /// reply's bytes).
    TruncatedMessage {
        /// Bytes (header + payload) the message should have.
        expected: u32,
        /// Bytes that arrived.
        got: u32,
    },
    /// A request was partly written when its timeout expired: the stream can no longer
    /// be framed.
    RequestStalled {
        /// Bytes written.
        written: usize,
        /// Bytes of the whole message.
        total: usize,
    },
    /// xenstored advertises `XENSTORE_SERVER_FEATURE_ERROR` and has set the page's
    /// `error` field: it failed this connection and ignores it from now on.
    ServerError {
        /// `XENSTORE_ERROR_*` (COMM 1, RINGIDX 2, PROTO 3, or anything else).
        code: u32,
    },
    /// A ring reconnect was asked for ([`crate::Xenstore::reconnect`]) and xenstored
    /// has not set `connection` back to `XENSTORE_CONNECTED`: until it does, every
    /// other field of the page is meaningless (docs/hostile-input.md X14).
    ReconnectPending,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReplyTooLarge { len } => {
                write!(f, "message length {len} exceeds the 4096-byte maximum")
            }
            ProtocolError::RspIndex { cons, prod } => {
                write!(
                    f,
                    "response ring indices out of range (cons {cons}, prod {prod})"
                )
            }
            ProtocolError::ReqIndex { cons, prod } => {
                write!(
                    f,
                    "request ring indices out of range (cons {cons}, prod {prod})"
                )
            }
            ProtocolError::TruncatedMessage { expected, got } => {
                write!(f, "truncated message: {got} of {expected} bytes arrived")
            }
            ProtocolError::RequestStalled { written, total } => {
                write!(f, "request stalled after {written} of {total} bytes")
            }
            ProtocolError::ServerError { code } => {
                write!(f, "xenstored failed the connection (error {code})")
            }
            ProtocolError::ReconnectPending => {
                f.write_str("ring reconnect asked for and never completed by xenstored")
            }
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// xenstored answered with an error (`XS_ERROR`).
    Xenstore(ErrnoName),
    /// xenstored answered `XS_ERROR` with a name not in `xsd_errors[]`.
    UnknownXenstoreError(Snippet),
    /// No reply (or no event, or no ring space) within the timeout.
    Timeout,
    /// A transaction got `EAGAIN` on every one of `tries` attempts.
    TooManyRetries {
        /// Attempts made.
        tries: u32,
    },
    /// The connection failed because xenstored broke the protocol; see the reason.
    Broken(ProtocolError),
    /// The caller's buffer is smaller than the reply (the reply was consumed).
    BufferTooSmall {
        /// Bytes the reply has.
        needed: usize,
    },
    /// A request payload would exceed 4096 bytes.
    RequestTooLarge {
        /// The payload length asked for.
        len: usize,
    },
    /// A caller-supplied argument is unusable (what is wrong, e.g. "path contains NUL").
    InvalidArgument(&'static str),
    /// A path the caller gave is not one xenstored accepts (empty, a character outside
    /// `[A-Za-z0-9-/_@]`, `//`, a trailing `/`, over 3072 bytes absolute or 2048
    /// relative, or a special `@` path outside a watch); it was not sent (docs/hostile-input.md X10).
    InvalidPath(Snippet),
    /// A path built by this crate (`dir/key`) is longer than [`crate::PATH_MAX`].
    PathTooLong {
        /// The length it would have.
        len: usize,
    },
    /// A reply to `op` (an [`hypercall::abi::xs_wire::msg`] type) is malformed.
    BadReply {
        /// The request type.
        op: u32,
    },
    /// A key read with a typed helper does not exist.
    MissingKey(Snippet),
    /// A key read with a typed helper holds an unusable value.
    Parse {
        /// The key (its tail).
        key: Snippet,
        /// The value (its head).
        value: Snippet,
        /// What is wrong with it.
        kind: ParseKind,
    },
    /// A hypercall failed.
    Hypercall(XenError),
    /// The HVM params give no xenstore page (`HVM_PARAM_STORE_PFN` is 0), or the
    /// client is not attached to one yet ([`crate::Xenstore::unattached`]).
    NoXenstore,
    /// The platform has no mapping for a frame.
    NotMapped(Gfn),
    /// `control/shutdown` held a value that is no known request (it was cleared).
    BadShutdownValue(Snippet),
    /// The backend went to `Closing`/`Closed` (or vanished) during the handshake.
    BackendClosed(XenbusState),
    /// The frontend's `backend` node names a path outside the backend domain's tree
    /// (not below `/local/domain/<backend-id>/`: relative, `/`, another guest's
    /// tree; docs/hostile-input.md X13). Nothing was read from or watched there.
    BadBackendPath {
        /// The path (its tail).
        path: Snippet,
        /// `backend-id`.
        backend_id: u16,
    },
    /// A handshake step was called in the wrong phase.
    WrongPhase(crate::frontend::Phase),
    /// [`crate::Xenstore::reconnect`]: xenstored does not offer ring reconnection
    /// (`XENSTORE_SERVER_FEATURE_RECONNECTION` is clear); nothing was changed.
    ReconnectNotOffered,
    /// [`crate::Xenstore::reconnect`]: xenstored did not set `connection` back to
    /// `XENSTORE_CONNECTED` within the timeout (docs/hostile-input.md X14). The client
    /// stays failed ([`ProtocolError::ReconnectPending`]) until a later `reconnect`
    /// sees the reset done.
    ReconnectTimeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xenstore(e) => write!(f, "xenstore error {e}"),
            Error::UnknownXenstoreError(s) => write!(f, "unknown xenstore error {s}"),
            Error::Timeout => f.write_str("timed out"),
            Error::TooManyRetries { tries } => {
                write!(f, "transaction conflicted (EAGAIN) {tries} times")
            }
            Error::Broken(p) => write!(f, "xenstore connection failed: {p}"),
            Error::BufferTooSmall { needed } => write!(f, "reply needs {needed} bytes"),
            Error::RequestTooLarge { len } => write!(f, "request payload of {len} bytes"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::InvalidPath(p) => write!(f, "invalid xenstore path {p}"),
            Error::PathTooLong { len } => write!(f, "path of {len} bytes too long"),
            Error::BadReply { op } => write!(f, "malformed reply to xenstore op {op}"),
            Error::MissingKey(k) => write!(f, "missing key {k}"),
            Error::Parse { key, value, kind } => {
                write!(f, "key {key}: bad value {value} ({kind:?})")
            }
            Error::Hypercall(e) => write!(f, "{e}"),
            Error::NoXenstore => f.write_str("no xenstore page"),
            Error::NotMapped(g) => write!(f, "frame {:#x} not mapped", g.0),
            Error::BadShutdownValue(v) => write!(f, "unknown shutdown request {v}"),
            Error::BackendClosed(s) => write!(f, "backend went {s:?}"),
            Error::BadBackendPath { path, backend_id } => write!(
                f,
                "backend path {path} is not below /local/domain/{backend_id}/"
            ),
            Error::WrongPhase(p) => write!(f, "handshake step not allowed in phase {p:?}"),
            Error::ReconnectNotOffered => f.write_str("xenstored does not offer ring reconnection"),
            Error::ReconnectTimeout => {
                f.write_str("xenstored never completed the ring reconnect (connection stays 1)")
            }
        }
    }
}

impl Error {
    /// Whether this is xenstored's error `name`.
    pub fn is(&self, name: ErrnoName) -> bool {
        *self == Error::Xenstore(name)
    }
}
