//! Block device protocol (`io/blkif.h`), x86_64 layout.
//!
//! Every ring slot is a union of [`Request`] (112 bytes) and [`Response`] (16 bytes),
//! so a slot is 112 bytes: 32 slots in one page, 64 in two, 128 in four. Indirect and
//! discard requests share the slot: build them as their own type and convert with
//! `Request::from(..)`, which copies the bytes into a zeroed 112-byte request.
//! Sectors in requests are always 512 bytes, whatever the disk's `sector-size`.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `BLKIF_OP_READ`
pub const OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`
pub const OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`
pub const OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`
pub const OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1` (was `BLKIF_OP_WRITE_BARRIER` for Citrix's blktap)
pub const OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD`
pub const OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`
pub const OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`
pub const MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`
pub const MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments per indirect page (`XEN_PAGE_SIZE / sizeof(blkif_request_segment)`).
pub const SEGS_PER_INDIRECT_FRAME: usize = 4096 / size_of::<RequestSegment>();
/// Sector size used in requests (`sector_number`, `first_sect`, `last_sect`).
pub const SECTOR_SIZE: u64 = 512;

/// `BLKIF_DISCARD_SECURE`
pub const DISCARD_SECURE: u8 = 1;

/// `BLKIF_RSP_EOPNOTSUPP`
pub const RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`
pub const RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`
pub const RSP_OKAY: i16 = 0;

bitflags::bitflags! {
    /// The bits of the backend's `info` node (`VDISK_*`); read with
    /// `from_bits_retain` (unknown bits are kept and ignored).
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct VdiskInfo: u32 {
        /// `VDISK_CDROM`
        const CDROM = 0x1;
        /// `VDISK_REMOVABLE`
        const REMOVABLE = 0x2;
        /// `VDISK_READONLY`
        const READONLY = 0x4;
    }
}

crate::xenstore_flags! {
    /// The boolean features a block backend offers in its xenstore directory
    /// (`io/blkif.h`, "Backend Device Properties"). [`BackendFlags::KEYS`] pairs each
    /// flag with its key; a missing key is off. (The numeric offers, such as
    /// `feature-max-indirect-segments`, are not flags.)
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct BackendFlags: u32 {
        /// Grants may stay mapped for the whole connection.
        const PERSISTENT = 1 << 0 => "feature-persistent";
        /// `BLKIF_OP_FLUSH_DISKCACHE` is accepted.
        const FLUSH_CACHE = 1 << 1 => "feature-flush-cache";
        /// `BLKIF_OP_WRITE_BARRIER` is accepted.
        const BARRIER = 1 << 2 => "feature-barrier";
        /// `BLKIF_OP_DISCARD` is accepted (`discard-granularity` and
        /// `discard-alignment` describe it).
        const DISCARD = 1 << 3 => "feature-discard";
        /// Discards may ask for a secure erase ([`DISCARD_SECURE`]).
        const DISCARD_SECURE = 1 << 4 => "discard-secure";
    }
}

/// `VDISK_CDROM` ([`VdiskInfo::CDROM`] as a raw value; bit in the `info` node)
pub const VDISK_CDROM: u32 = VdiskInfo::CDROM.bits();
/// `VDISK_REMOVABLE`
pub const VDISK_REMOVABLE: u32 = VdiskInfo::REMOVABLE.bits();
/// `VDISK_READONLY`
pub const VDISK_READONLY: u32 = VdiskInfo::READONLY.bits();

/// `struct blkif_request_segment` (also the entry type of indirect pages).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RequestSegment {
    /// Grant reference of the I/O page.
    pub gref: u32,
    /// First 512-byte sector in the page to transfer (0..=7).
    pub first_sect: u8,
    /// Last 512-byte sector in the page to transfer (first_sect..=7).
    pub last_sect: u8,
    /// Padding (always zero).
    pub _pad: [u8; 2],
}
const _: () = {
    assert!(size_of::<RequestSegment>() == 8);
    assert!(offset_of!(RequestSegment, gref) == 0);
    assert!(offset_of!(RequestSegment, first_sect) == 4);
    assert!(offset_of!(RequestSegment, last_sect) == 5);
};

/// `struct blkif_request`: read/write/flush/barrier (and the slot size).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Request {
    /// `OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg`.
    pub nr_segments: u8,
    /// Virtual device handle (`blkif_vdev_t`).
    pub handle: u16,
    /// Padding (always zero).
    pub _pad: u32,
    /// Private guest value, echoed in the response.
    pub id: u64,
    /// Start sector (512-byte units).
    pub sector_number: u64,
    /// Segments.
    pub seg: [RequestSegment; MAX_SEGMENTS_PER_REQUEST],
}
const _: () = {
    assert!(size_of::<Request>() == 112);
    assert!(offset_of!(Request, operation) == 0);
    assert!(offset_of!(Request, nr_segments) == 1);
    assert!(offset_of!(Request, handle) == 2);
    assert!(offset_of!(Request, id) == 8);
    assert!(offset_of!(Request, sector_number) == 16);
    assert!(offset_of!(Request, seg) == 24);
};

/// `struct blkif_request_discard`
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RequestDiscard {
    /// [`OP_DISCARD`].
    pub operation: u8,
    /// [`DISCARD_SECURE`] or 0.
    pub flag: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Padding (always zero).
    pub _pad: u32,
    /// Private guest value, echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// Number of contiguous sectors to discard.
    pub nr_sectors: u64,
}
const _: () = {
    assert!(size_of::<RequestDiscard>() == 32);
    assert!(offset_of!(RequestDiscard, operation) == 0);
    assert!(offset_of!(RequestDiscard, flag) == 1);
    assert!(offset_of!(RequestDiscard, handle) == 2);
    assert!(offset_of!(RequestDiscard, id) == 8);
    assert!(offset_of!(RequestDiscard, sector_number) == 16);
    assert!(offset_of!(RequestDiscard, nr_sectors) == 24);
};

/// `struct blkif_request_indirect` (x86_64: no trailing `pad`, 64 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RequestIndirect {
    /// [`OP_INDIRECT`].
    pub operation: u8,
    /// [`OP_READ`] or [`OP_WRITE`].
    pub indirect_op: u8,
    /// Number of segments (over all indirect pages).
    pub nr_segments: u16,
    /// Padding (always zero).
    pub _pad: u32,
    /// Private guest value, echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// Virtual device handle.
    pub handle: u16,
    /// Padding (always zero).
    pub _pad2: u16,
    /// Grant refs of the pages holding [`RequestSegment`] arrays.
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Tail padding to the struct's 8-byte alignment (always zero).
    pub _pad3: u32,
}
const _: () = {
    assert!(size_of::<RequestIndirect>() == 64);
    assert!(offset_of!(RequestIndirect, operation) == 0);
    assert!(offset_of!(RequestIndirect, indirect_op) == 1);
    assert!(offset_of!(RequestIndirect, nr_segments) == 2);
    assert!(offset_of!(RequestIndirect, id) == 8);
    assert!(offset_of!(RequestIndirect, sector_number) == 16);
    assert!(offset_of!(RequestIndirect, handle) == 24);
    assert!(offset_of!(RequestIndirect, indirect_grefs) == 28);
};

/// `struct blkif_response`
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Response {
    /// Copied from the request.
    pub id: u64,
    /// Copied from the request (`OP_*`).
    pub operation: u8,
    /// Padding.
    pub _pad: u8,
    /// `RSP_*`.
    pub status: i16,
    /// Padding.
    pub _pad2: u32,
}
const _: () = {
    assert!(size_of::<Response>() == 16);
    assert!(offset_of!(Response, id) == 0);
    assert!(offset_of!(Response, operation) == 8);
    assert!(offset_of!(Response, status) == 10);
};

/// Copies `src` into the start of a zeroed [`Request`]-sized slot image.
fn widen(src: &[u8]) -> Request {
    let mut r = Request::default();
    let dst = r.as_mut_bytes();
    let n = core::cmp::min(src.len(), dst.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
    r
}

impl From<RequestIndirect> for Request {
    /// The slot image of an indirect request (bytes 64..112 zero).
    fn from(r: RequestIndirect) -> Self {
        widen(r.as_bytes())
    }
}

impl From<RequestDiscard> for Request {
    /// The slot image of a discard request (bytes 32..112 zero).
    fn from(r: RequestDiscard) -> Self {
        widen(r.as_bytes())
    }
}

impl Request {
    /// Reinterprets this slot image as an indirect request (backend side, after
    /// checking `operation == OP_INDIRECT`).
    pub fn as_indirect(&self) -> RequestIndirect {
        RequestIndirect::read_from_prefix(self.as_bytes())
            .map(|(r, _)| r)
            .unwrap_or_default()
    }

    /// Reinterprets this slot image as a discard request (backend side, after
    /// checking `operation == OP_DISCARD`).
    pub fn as_discard(&self) -> RequestDiscard {
        RequestDiscard::read_from_prefix(self.as_bytes())
            .map(|(r, _)| r)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_blkif_h() {
        assert_eq!(
            [OP_READ, OP_WRITE, OP_WRITE_BARRIER, OP_FLUSH_DISKCACHE],
            [0, 1, 2, 3]
        );
        assert_eq!([OP_RESERVED_1, OP_DISCARD, OP_INDIRECT], [4, 5, 6]);
        assert_eq!(MAX_SEGMENTS_PER_REQUEST, 11);
        assert_eq!(MAX_INDIRECT_PAGES_PER_REQUEST, 8);
        assert_eq!(SEGS_PER_INDIRECT_FRAME, 512);
        assert_eq!(SECTOR_SIZE, 512);
        assert_eq!(DISCARD_SECURE, 1);
        assert_eq!([RSP_EOPNOTSUPP, RSP_ERROR, RSP_OKAY], [-2, -1, 0]);
        assert_eq!([VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY], [1, 2, 4]);
    }

    #[test]
    fn indirect_and_discard_round_trip_through_the_slot_image() {
        let ind = RequestIndirect {
            operation: OP_INDIRECT,
            indirect_op: OP_WRITE,
            nr_segments: 300,
            id: 7,
            sector_number: 99,
            handle: 0x301,
            indirect_grefs: [10, 11, 12, 13, 14, 15, 16, 17],
            ..Default::default()
        };
        let slot = Request::from(ind);
        assert_eq!(slot.operation, OP_INDIRECT);
        assert_eq!(slot.id, 7);
        assert!(slot.as_bytes()[64..].iter().all(|&b| b == 0));
        assert_eq!(slot.as_indirect(), ind);

        let d = RequestDiscard {
            operation: OP_DISCARD,
            flag: DISCARD_SECURE,
            handle: 1,
            id: 3,
            sector_number: 8,
            nr_sectors: 1 << 40,
            ..Default::default()
        };
        let slot = Request::from(d);
        assert!(slot.as_bytes()[32..].iter().all(|&b| b == 0));
        assert_eq!(slot.as_discard(), d);
    }
}
