//! xenstore wire protocol (`io/xs_wire.h`).

use core::mem::{offset_of, size_of};
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
    /// `XS_TYPE_COUNT`: number of valid types (anything `>=` this is unknown).
    pub const TYPE_COUNT: u32 = 27;
    /// `XS_INVALID`: guaranteed to stay invalid.
    pub const INVALID: u32 = 0xffff;
}

/// `XS_WATCH_PATH`: index of the path in a `XS_WATCH_EVENT` payload.
pub const WATCH_PATH: usize = 0;
/// `XS_WATCH_TOKEN`: index of the token in a `XS_WATCH_EVENT` payload.
pub const WATCH_TOKEN: usize = 1;

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

/// Whether `b` may appear in a path: `[A-Za-z0-9-/_@]` (`docs/misc/xenstore.txt`;
/// C xenstored's `is_valid_nodename`). `.` is not among them, so `..` tricks fail here.
pub const fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@')
}

/// Whether `path` has the shape every node path needs, before any server-side quota:
/// not empty, only [`is_path_char`] bytes, no `//`, no trailing `/` (except the root
/// `/`), at most [`ABS_PATH_MAX`] bytes if absolute and [`REL_PATH_MAX`] if relative.
/// (Special watch paths such as `@releaseDomain` pass too; whether one is allowed
/// depends on the operation.)
pub fn is_well_formed_path(path: &[u8]) -> bool {
    let max = if path.first() == Some(&b'/') {
        ABS_PATH_MAX
    } else {
        REL_PATH_MAX
    };
    !path.is_empty()
        && path.len() <= max
        && path.iter().all(|&b| is_path_char(b))
        && !path.windows(2).any(|w| w == b"//")
        && (path == b"/" || path.last() != Some(&b'/'))
}

/// Message header (`struct xsd_sockmsg`), followed by `len` payload bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
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
const _: () = {
    assert!(size_of::<MsgHeader>() == 16);
    assert!(offset_of!(MsgHeader, ty) == 0);
    assert!(offset_of!(MsgHeader, req_id) == 4);
    assert!(offset_of!(MsgHeader, tx_id) == 8);
    assert!(offset_of!(MsgHeader, len) == 12);
};

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
    /// `uint32_t evtchn_port` (newest; dom0less)
    pub const EVTCHN_PORT: usize = 2076;
    /// The four ring indices, which xenstored sets back to 0 (with `error`) when it
    /// serves a reconnect (docs/misc/xenstore-ring.txt in Xen).
    pub const RING_INDICES: [usize; 4] = [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD];
}

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`
pub const SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`
pub const SERVER_FEATURE_ERROR: u32 = 2;
/// `XENSTORE_SERVER_FEATURE_WATCHDEPTH`
pub const SERVER_FEATURE_WATCHDEPTH: u32 = 4;
/// `XENSTORE_SERVER_FEATURE_DOMID_ANY`
pub const SERVER_FEATURE_DOMID_ANY: u32 = 8;

/// `XENSTORE_CONNECTED`: `connection` value in the steady state.
pub const CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`: `connection` value while a reconnect is in progress.
pub const RECONNECT: u32 = 1;

/// `XENSTORE_ERROR_NONE`
pub const ERROR_NONE: u32 = 0;
/// `XENSTORE_ERROR_COMM`
pub const ERROR_COMM: u32 = 1;
/// `XENSTORE_ERROR_RINGIDX`
pub const ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`
pub const ERROR_PROTO: u32 = 3;

/// What one entry of a node's permission list allows: the letter that starts each
/// entry of `XS_GET_PERMS`/`XS_SET_PERMS` (`r` in `r1`). The client (xenbus) and
/// shim-hv's xenstored share it; each parses the domain id after it by its own rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The letter on the wire.
    pub const fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }

    /// The access a wire letter names; `None` for any other byte.
    pub const fn from_letter(b: u8) -> Option<Access> {
        Some(match b {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_letters_round_trip_and_nothing_else_parses() {
        for a in [Access::None, Access::Read, Access::Write, Access::Both] {
            assert_eq!(Access::from_letter(a.letter()), Some(a));
        }
        let letters: [u8; 4] = [b'n', b'r', b'w', b'b'];
        for b in 0..=u8::MAX {
            assert_eq!(
                Access::from_letter(b).is_some(),
                letters.contains(&b),
                "{b}"
            );
        }
    }

    /// docs/hostile-input.md X10: the shapes a client must never send.
    #[test]
    fn path_shapes() {
        extern crate std;
        use std::vec;
        for ok in [
            &b"/"[..],
            b"/local/domain/1/device/vbd/51712/state",
            b"device/vbd",
            b"@releaseDomain",
            b"a-b_c@d",
        ] {
            assert!(is_well_formed_path(ok), "{ok:?}");
        }
        let abs_max = [&b"/"[..], &vec![b'a'; ABS_PATH_MAX - 1]].concat();
        let rel_max = vec![b'a'; REL_PATH_MAX];
        assert!(is_well_formed_path(&abs_max) && is_well_formed_path(&rel_max));
        let too_long_abs = [&abs_max[..], b"a"].concat();
        let too_long_rel = [&rel_max[..], b"a"].concat();
        for bad in [
            &b""[..],
            b"//",
            b"/a//b",
            b"a/",
            b"/local/domain/",
            b"/a/../b",
            b"/a b",
            b"/a\xc3\xa9",
            b"/a\0b",
            &too_long_abs,
            &too_long_rel,
        ] {
            assert!(!is_well_formed_path(bad), "{bad:?}");
        }
    }

    /// Values from `io/xs_wire.h` (enum order, with 20 skipped for the removed
    /// `XS_RESTRICT`).
    #[test]
    fn constants_match_xs_wire_h() {
        let order = [
            msg::CONTROL,
            msg::DIRECTORY,
            msg::READ,
            msg::GET_PERMS,
            msg::WATCH,
            msg::UNWATCH,
            msg::TRANSACTION_START,
            msg::TRANSACTION_END,
            msg::INTRODUCE,
            msg::RELEASE,
            msg::GET_DOMAIN_PATH,
            msg::WRITE,
            msg::MKDIR,
            msg::RM,
            msg::SET_PERMS,
            msg::WATCH_EVENT,
            msg::ERROR,
            msg::IS_DOMAIN_INTRODUCED,
            msg::RESUME,
            msg::SET_TARGET,
        ];
        for (i, v) in order.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        assert_eq!(msg::RESET_WATCHES, msg::SET_TARGET + 2);
        assert_eq!(msg::DIRECTORY_PART, 22);
        assert_eq!(msg::GET_FEATURE, 23);
        assert_eq!(msg::SET_FEATURE, 24);
        assert_eq!(msg::GET_QUOTA, 25);
        assert_eq!(msg::SET_QUOTA, 26);
        assert_eq!(msg::TYPE_COUNT, 27);
        assert_eq!(msg::INVALID, 0xffff);
        assert_eq!((WATCH_PATH, WATCH_TOKEN), (0, 1));
        assert_eq!(PAYLOAD_MAX, 4096);
        assert_eq!(ABS_PATH_MAX, 3072);
        assert_eq!(REL_PATH_MAX, 2048);
        assert_eq!(RING_SIZE, 1024);
        assert_eq!(iface::REQ, 0);
        assert_eq!(iface::RSP, 1024);
        assert_eq!(iface::REQ_CONS, 2048);
        assert_eq!(iface::REQ_PROD, 2052);
        assert_eq!(iface::RSP_CONS, 2056);
        assert_eq!(iface::RSP_PROD, 2060);
        assert_eq!(iface::SERVER_FEATURES, 2064);
        assert_eq!(iface::CONNECTION, 2068);
        assert_eq!(iface::ERROR, 2072);
        assert_eq!(iface::EVTCHN_PORT, 2076);
        assert_eq!(SERVER_FEATURE_RECONNECTION, 1);
        assert_eq!(SERVER_FEATURE_ERROR, 2);
        assert_eq!(SERVER_FEATURE_WATCHDEPTH, 4);
        assert_eq!(SERVER_FEATURE_DOMID_ANY, 8);
        assert_eq!((CONNECTED, RECONNECT), (0, 1));
        assert_eq!(
            (ERROR_NONE, ERROR_COMM, ERROR_RINGIDX, ERROR_PROTO),
            (0, 1, 2, 3)
        );
    }

    /// `xsd_errors[]` in header order, with Linux/Xen errno numbers (`errno.h`).
    #[test]
    fn error_table_matches_xsd_errors() {
        let names = [
            "EINVAL",
            "EACCES",
            "EEXIST",
            "EISDIR",
            "ENOENT",
            "ENOMEM",
            "ENOSPC",
            "EIO",
            "ENOTEMPTY",
            "ENOSYS",
            "EROFS",
            "EBUSY",
            "EAGAIN",
            "EISCONN",
            "E2BIG",
            "EPERM",
        ];
        for (i, n) in names.iter().enumerate() {
            assert_eq!(ERRORS[i].0, *n);
        }
        let nums = [22, 13, 17, 21, 2, 12, 28, 5, 39, 38, 30, 16, 11, 106, 7, 1];
        for (i, n) in nums.iter().enumerate() {
            assert_eq!(ERRORS[i].1, *n);
        }
    }
}
