//! Network device protocol (`io/netif.h`), x86_64 layout.
//!
//! Two rings: tx (slot = union of [`TxRequest`] 12 bytes and [`TxResponse`] 4 bytes,
//! so 12-byte slots, 256 per page) and rx (slot = [`RxRequest`] / [`RxResponse`],
//! 8 bytes, 256 per page). An [`ExtraInfo`] (8 bytes) travels in a tx request slot
//! (after a request with [`NETTXF_EXTRA_INFO`]) or in an rx response slot (after a
//! response with [`NETRXF_EXTRA_INFO`]); convert with `TxRequest::from(extra)` /
//! [`TxRequest::as_extra`] and the rx equivalents.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_NETIF_NR_SLOTS_MIN`: slots a backend must accept for one packet.
pub const NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`
pub const MAX_TX_SIZE: u32 = 0xFFFF;

bitflags::bitflags! {
    /// The `flags` of a tx request (`NETTXF_*`). Wire structs keep the raw `u16`.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TxFlags: u16 {
        /// `NETTXF_csum_blank`: protocol checksum field is blank.
        const CSUM_BLANK = 1 << 0;
        /// `NETTXF_data_validated`: protocol checksum is validated.
        const DATA_VALIDATED = 1 << 1;
        /// `NETTXF_more_data`: the packet continues in the next request.
        const MORE_DATA = 1 << 2;
        /// `NETTXF_extra_info`: an [`ExtraInfo`] follows in the next slot.
        const EXTRA_INFO = 1 << 3;
    }

    /// The `flags` of an rx response (`NETRXF_*`), as the backend set them (read
    /// with `from_bits_retain`: unknown bits are kept, and ignored).
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct RxFlags: u16 {
        /// `NETRXF_data_validated`
        const DATA_VALIDATED = 1 << 0;
        /// `NETRXF_csum_blank`
        const CSUM_BLANK = 1 << 1;
        /// `NETRXF_more_data`: the packet continues in the next response.
        const MORE_DATA = 1 << 2;
        /// `NETRXF_extra_info`: an [`ExtraInfo`] follows in the next slot.
        const EXTRA_INFO = 1 << 3;
        /// `NETRXF_gso_prefix`: a GSO prefix descriptor precedes the packet.
        const GSO_PREFIX = 1 << 4;
    }
}

crate::xenstore_flags! {
    /// The boolean features a backend offers in its xenstore directory (`io/netif.h`,
    /// "Backend feature advertisement"). [`BackendFlags::KEYS`] pairs each flag with
    /// its key; a missing key is off.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct BackendFlags: u32 {
        /// Receive by grant copy (the only receive mode a current frontend uses).
        const RX_COPY = 1 << 0 => "feature-rx-copy";
        /// Transmitted frames may span several slots.
        const SG = 1 << 1 => "feature-sg";
        /// Large TCP/IPv4 frames (GSO) are accepted on transmit.
        const GSO_TCPV4 = 1 << 2 => "feature-gso-tcpv4";
        /// Large TCP/IPv6 frames (GSO) are accepted on transmit.
        const GSO_TCPV6 = 1 << 3 => "feature-gso-tcpv6";
        /// Checksum-blank IPv4 frames are refused on transmit.
        const NO_CSUM_OFFLOAD = 1 << 4 => "feature-no-csum-offload";
        /// Checksum-blank IPv6 frames are accepted on transmit.
        const IPV6_CSUM_OFFLOAD = 1 << 5 => "feature-ipv6-csum-offload";
        /// Separate event channels for the tx and rx rings.
        const SPLIT_EVENT_CHANNELS = 1 << 6 => "feature-split-event-channels";
    }
}

crate::xenstore_flags! {
    /// The boolean receive-side features a frontend writes in its xenstore directory
    /// (`io/netif.h`, "Frontend feature advertisement"), read by the backend when the
    /// frontend connects. [`FrontendFlags::KEYS`] pairs each flag with its key; a
    /// missing key is off.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct FrontendFlags: u32 {
        /// The frontend notifies the backend when it posts rx buffers.
        const RX_NOTIFY = 1 << 0 => "feature-rx-notify";
        /// Received frames may span several slots.
        const SG = 1 << 1 => "feature-sg";
        /// Large TCP/IPv4 frames (GSO) may be received.
        const GSO_TCPV4 = 1 << 2 => "feature-gso-tcpv4";
        /// Large TCP/IPv6 frames (GSO) may be received.
        const GSO_TCPV6 = 1 << 3 => "feature-gso-tcpv6";
        /// Checksum-blank IPv4 frames must not be sent to this frontend.
        const NO_CSUM_OFFLOAD = 1 << 4 => "feature-no-csum-offload";
        /// Checksum-blank IPv6 frames may be received.
        const IPV6_CSUM_OFFLOAD = 1 << 5 => "feature-ipv6-csum-offload";
    }
}

/// `NETTXF_csum_blank` ([`TxFlags::CSUM_BLANK`] as a raw value).
pub const NETTXF_CSUM_BLANK: u16 = TxFlags::CSUM_BLANK.bits();
/// `NETTXF_data_validated`.
pub const NETTXF_DATA_VALIDATED: u16 = TxFlags::DATA_VALIDATED.bits();
/// `NETTXF_more_data`.
pub const NETTXF_MORE_DATA: u16 = TxFlags::MORE_DATA.bits();
/// `NETTXF_extra_info`.
pub const NETTXF_EXTRA_INFO: u16 = TxFlags::EXTRA_INFO.bits();

/// `NETRXF_data_validated` ([`RxFlags::DATA_VALIDATED`] as a raw value).
pub const NETRXF_DATA_VALIDATED: u16 = RxFlags::DATA_VALIDATED.bits();
/// `NETRXF_csum_blank`.
pub const NETRXF_CSUM_BLANK: u16 = RxFlags::CSUM_BLANK.bits();
/// `NETRXF_more_data`.
pub const NETRXF_MORE_DATA: u16 = RxFlags::MORE_DATA.bits();
/// `NETRXF_extra_info`.
pub const NETRXF_EXTRA_INFO: u16 = RxFlags::EXTRA_INFO.bits();
/// `NETRXF_gso_prefix`.
pub const NETRXF_GSO_PREFIX: u16 = RxFlags::GSO_PREFIX.bits();

/// `XEN_NETIF_EXTRA_TYPE_NONE` (never used; invalid)
pub const EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO` (`u.gso`)
pub const EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD` (`u.mcast`)
pub const EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL` (`u.mcast`)
pub const EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH` (`u.hash`)
pub const EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_MAX`: types `>=` this are unknown.
pub const EXTRA_TYPE_MAX: u8 = 5;

/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const EXTRA_FLAG_MORE: u8 = 1;

/// `XEN_NETIF_GSO_TYPE_NONE`
pub const GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`
pub const GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`
pub const GSO_TYPE_TCPV6: u8 = 2;

/// `NETIF_RSP_DROPPED`
pub const RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`
pub const RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`
pub const RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: response to an extra-info slot (no packet data).
pub const RSP_NULL: i16 = 1;

/// `struct netif_tx_request`
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TxRequest {
    /// Grant of the page holding the data.
    pub gref: u32,
    /// Offset of the data in the page (data must not cross the page end).
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot: whole packet size; later slots: this fragment's size.
    pub size: u16,
}
const _: () = {
    assert!(size_of::<TxRequest>() == 12);
    assert!(offset_of!(TxRequest, gref) == 0);
    assert!(offset_of!(TxRequest, offset) == 4);
    assert!(offset_of!(TxRequest, flags) == 6);
    assert!(offset_of!(TxRequest, id) == 8);
    assert!(offset_of!(TxRequest, size) == 10);
};

/// `struct netif_tx_response`
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TxResponse {
    /// From the request.
    pub id: u16,
    /// `RSP_*`.
    pub status: i16,
}
const _: () = {
    assert!(size_of::<TxResponse>() == 4);
    assert!(offset_of!(TxResponse, id) == 0);
    assert!(offset_of!(TxResponse, status) == 2);
};

/// `struct netif_rx_request`
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding.
    pub _pad: u16,
    /// Grant of the receive page.
    pub gref: u32,
}
const _: () = {
    assert!(size_of::<RxRequest>() == 8);
    assert!(offset_of!(RxRequest, id) == 0);
    assert!(offset_of!(RxRequest, gref) == 4);
};

/// `struct netif_rx_response`
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RxResponse {
    /// From the request.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// `< 0`: `RSP_*` error; otherwise the data length.
    pub status: i16,
}
const _: () = {
    assert!(size_of::<RxResponse>() == 8);
    assert!(offset_of!(RxResponse, id) == 0);
    assert!(offset_of!(RxResponse, offset) == 2);
    assert!(offset_of!(RxResponse, flags) == 4);
    assert!(offset_of!(RxResponse, status) == 6);
};

/// `struct netif_extra_info`: `{u8 type, u8 flags, union u (6 bytes)}`.
///
/// `u.gso` = `{u16 size, u8 type, u8 pad, u16 features}`; `u.mcast` = `{u8 addr[6]}`;
/// `u.hash` = `{u8 type, u8 algorithm, u8 value[4]}`. Use the accessors; `u` is
/// kept as raw bytes so no union is needed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(2))]
pub struct ExtraInfo {
    /// `EXTRA_TYPE_*`.
    pub ty: u8,
    /// `EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union, as bytes.
    pub u: [u8; 6],
}
const _: () = {
    assert!(size_of::<ExtraInfo>() == 8);
    assert!(core::mem::align_of::<ExtraInfo>() == 2);
    assert!(offset_of!(ExtraInfo, ty) == 0);
    assert!(offset_of!(ExtraInfo, flags) == 1);
    assert!(offset_of!(ExtraInfo, u) == 2);
};

impl ExtraInfo {
    /// A GSO descriptor (`XEN_NETIF_EXTRA_TYPE_GSO`).
    pub fn gso(size: u16, gso_type: u8, features: u16, flags: u8) -> Self {
        let s = size.to_ne_bytes();
        let f = features.to_ne_bytes();
        Self {
            ty: EXTRA_TYPE_GSO,
            flags,
            u: [s[0], s[1], gso_type, 0, f[0], f[1]],
        }
    }

    /// A multicast add/delete descriptor (`ty` is `EXTRA_TYPE_MCAST_ADD`/`_DEL`).
    pub fn mcast(ty: u8, addr: [u8; 6], flags: u8) -> Self {
        Self { ty, flags, u: addr }
    }

    /// `u.gso.size`: the MSS.
    pub fn gso_size(&self) -> u16 {
        u16::from_ne_bytes([self.u[0], self.u[1]])
    }

    /// `u.gso.type`: `GSO_TYPE_*`.
    pub fn gso_type(&self) -> u8 {
        self.u[2]
    }

    /// `u.gso.features`.
    pub fn gso_features(&self) -> u16 {
        u16::from_ne_bytes([self.u[4], self.u[5]])
    }

    /// `u.mcast.addr`.
    pub fn mcast_addr(&self) -> [u8; 6] {
        self.u
    }
}

impl From<ExtraInfo> for TxRequest {
    /// The tx slot image of an extra-info descriptor (bytes 8..12 zero).
    fn from(e: ExtraInfo) -> Self {
        let mut r = TxRequest::default();
        if let Some(d) = r.as_mut_bytes().get_mut(..size_of::<ExtraInfo>()) {
            d.copy_from_slice(e.as_bytes());
        }
        r
    }
}

impl TxRequest {
    /// Reinterprets this tx slot as an extra-info descriptor (backend side).
    pub fn as_extra(&self) -> ExtraInfo {
        ExtraInfo::read_from_prefix(self.as_bytes())
            .map(|(e, _)| e)
            .unwrap_or_default()
    }
}

impl From<ExtraInfo> for RxResponse {
    /// The rx slot image of an extra-info descriptor.
    fn from(e: ExtraInfo) -> Self {
        RxResponse::read_from_bytes(e.as_bytes()).unwrap_or_default()
    }
}

impl RxResponse {
    /// Reinterprets this rx slot as an extra-info descriptor (frontend side, after
    /// a response with [`NETRXF_EXTRA_INFO`]).
    pub fn as_extra(&self) -> ExtraInfo {
        ExtraInfo::read_from_bytes(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_netif_h() {
        assert_eq!(NR_SLOTS_MIN, 18);
        assert_eq!(MAX_TX_SIZE, 0xFFFF);
        assert_eq!(
            [
                NETTXF_CSUM_BLANK,
                NETTXF_DATA_VALIDATED,
                NETTXF_MORE_DATA,
                NETTXF_EXTRA_INFO
            ],
            [1, 2, 4, 8]
        );
        assert_eq!(
            [
                NETRXF_DATA_VALIDATED,
                NETRXF_CSUM_BLANK,
                NETRXF_MORE_DATA,
                NETRXF_EXTRA_INFO,
                NETRXF_GSO_PREFIX
            ],
            [1, 2, 4, 8, 16]
        );
        assert_eq!(
            [
                EXTRA_TYPE_NONE,
                EXTRA_TYPE_GSO,
                EXTRA_TYPE_MCAST_ADD,
                EXTRA_TYPE_MCAST_DEL,
                EXTRA_TYPE_HASH,
                EXTRA_TYPE_MAX
            ],
            [0, 1, 2, 3, 4, 5]
        );
        assert_eq!(EXTRA_FLAG_MORE, 1);
        assert_eq!([GSO_TYPE_NONE, GSO_TYPE_TCPV4, GSO_TYPE_TCPV6], [0, 1, 2]);
        assert_eq!([RSP_DROPPED, RSP_ERROR, RSP_OKAY, RSP_NULL], [-2, -1, 0, 1]);
    }

    #[test]
    fn extra_info_layout_and_slot_images() {
        let g = ExtraInfo::gso(1448, GSO_TYPE_TCPV4, 0x1234, EXTRA_FLAG_MORE);
        let b = g.as_bytes();
        assert_eq!(b[0], EXTRA_TYPE_GSO);
        assert_eq!(b[1], EXTRA_FLAG_MORE);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 1448);
        assert_eq!(b[4], GSO_TYPE_TCPV4);
        assert_eq!(b[5], 0);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 0x1234);
        assert_eq!(
            (g.gso_size(), g.gso_type(), g.gso_features()),
            (1448, 1, 0x1234)
        );
        // The type is read from its byte (TCPv6 is 2, not the TCPv4 above).
        let v6 = ExtraInfo::gso(1440, GSO_TYPE_TCPV6, 0, 0);
        assert_eq!(v6.gso_type(), GSO_TYPE_TCPV6);

        let tx = TxRequest::from(g);
        assert_eq!(&tx.as_bytes()[..8], b);
        assert_eq!(&tx.as_bytes()[8..], &[0, 0, 0, 0]);
        assert_eq!(tx.as_extra(), g);

        let m = ExtraInfo::mcast(EXTRA_TYPE_MCAST_ADD, [1, 2, 3, 4, 5, 6], 0);
        assert_eq!(m.mcast_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(RxResponse::from(m).as_extra(), m);
    }
}
