//! xenstore wire protocol (`io/xs_wire.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Message types (`enum xsd_sockmsg_type`).
pub mod msg {
    /// `XS_CONTROL` (formerly `XS_DEBUG`)
    pub const CONTROL: u32 = 0;
    /// `XS_DIRECTORY`
    pub const DIRECTORY: u32 = 1;
    /// `XS_READ`
    pub const READ: u32 = 2;
    /// `XS_GET_PERMS`
    pub const GET_PERMS: u32 = 3;
    /// `XS_WATCH`
    pub const WATCH: u32 = 4;
    /// `XS_UNWATCH`
    pub const UNWATCH: u32 = 5;
    /// `XS_TRANSACTION_START`
    pub const TRANSACTION_START: u32 = 6;
    /// `XS_TRANSACTION_END`
    pub const TRANSACTION_END: u32 = 7;
    /// `XS_INTRODUCE`
    pub const INTRODUCE: u32 = 8;
    /// `XS_RELEASE`
    pub const RELEASE: u32 = 9;
    /// `XS_GET_DOMAIN_PATH`
    pub const GET_DOMAIN_PATH: u32 = 10;
    /// `XS_WRITE`
    pub const WRITE: u32 = 11;
    /// `XS_MKDIR`
    pub const MKDIR: u32 = 12;
    /// `XS_RM`
    pub const RM: u32 = 13;
    /// `XS_SET_PERMS`
    pub const SET_PERMS: u32 = 14;
    /// `XS_WATCH_EVENT`
    pub const WATCH_EVENT: u32 = 15;
    /// `XS_ERROR`
    pub const ERROR: u32 = 16;
    /// `XS_IS_DOMAIN_INTRODUCED`
    pub const IS_DOMAIN_INTRODUCED: u32 = 17;
    /// `XS_RESUME`
    pub const RESUME: u32 = 18;
    /// `XS_SET_TARGET`
    pub const SET_TARGET: u32 = 19;
    /// `XS_RESET_WATCHES` (20 was the removed `XS_RESTRICT`)
    pub const RESET_WATCHES: u32 = 21;
    /// `XS_DIRECTORY_PART`
    pub const DIRECTORY_PART: u32 = 22;
    /// `XS_GET_FEATURE`
    pub const GET_FEATURE: u32 = 23;
    /// `XS_SET_FEATURE`
    pub const SET_FEATURE: u32 = 24;
    /// `XS_GET_QUOTA`
    pub const GET_QUOTA: u32 = 25;
    /// `XS_SET_QUOTA`
    pub const SET_QUOTA: u32 = 26;
}

/// The error names xenstored sends in `XS_ERROR` replies (`xsd_errors[]`), with their
/// Linux errno numbers.
pub const ERRORS: [(&str, i32); 16] = [
    ("EINVAL", 22),
    ("EACCES", 13),
    ("EEXIST", 17),
    ("EISDIR", 21),
    ("ENOENT", 2),
    ("ENOMEM", 12),
    ("ENOSPC", 28),
    ("EIO", 5),
    ("ENOTEMPTY", 39),
    ("ENOSYS", 38),
    ("EROFS", 30),
    ("EBUSY", 16),
    ("EAGAIN", 11),
    ("EISCONN", 106),
    ("E2BIG", 7),
    ("EPERM", 1),
];

/// Largest payload of one message.
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path.
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path.
pub const REL_PATH_MAX: usize = 2048;

/// Message header (`struct xsd_sockmsg`), followed by `len` payload bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MsgHeader {
    /// Message type, one of [`msg`].
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}
const _: () = assert!(core::mem::size_of::<MsgHeader>() == 16);

/// Size of each ring in the shared store page.
pub const RING_SIZE: usize = 1024;

/// Byte offsets in `struct xenstore_domain_interface` (the store page).
pub mod iface {
    /// `char req[1024]`: guest → xenstored.
    pub const REQ: usize = 0;
    /// `char rsp[1024]`: xenstored → guest.
    pub const RSP: usize = 1024;
    /// `XENSTORE_RING_IDX req_cons`
    pub const REQ_CONS: usize = 2048;
    /// `XENSTORE_RING_IDX req_prod`
    pub const REQ_PROD: usize = 2052;
    /// `XENSTORE_RING_IDX rsp_cons`
    pub const RSP_CONS: usize = 2056;
    /// `XENSTORE_RING_IDX rsp_prod`
    pub const RSP_PROD: usize = 2060;
    /// `uint32_t server_features`
    pub const SERVER_FEATURES: usize = 2064;
    /// `uint32_t connection`
    pub const CONNECTION: usize = 2068;
    /// `uint32_t error`
    pub const ERROR: usize = 2072;
}

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`
pub const SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`
pub const SERVER_FEATURE_ERROR: u32 = 2;
