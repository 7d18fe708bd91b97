//! Grant tables (`grant_table.h`), version 1.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `GNTTABOP_map_grant_ref`
pub const OP_MAP_GRANT_REF: u32 = 0;
/// `GNTTABOP_unmap_grant_ref`
pub const OP_UNMAP_GRANT_REF: u32 = 1;
/// `GNTTABOP_setup_table`
pub const OP_SETUP_TABLE: u32 = 2;
/// `GNTTABOP_copy`
pub const OP_COPY: u32 = 5;
/// `GNTTABOP_query_size`
pub const OP_QUERY_SIZE: u32 = 6;
/// `GNTTABOP_set_version`
pub const OP_SET_VERSION: u32 = 8;
/// `GNTTABOP_get_version`
pub const OP_GET_VERSION: u32 = 10;

/// `GNTTAB_NR_RESERVED_ENTRIES`: refs `0..8` are reserved for the toolstack
/// (`GNTTAB_RESERVED_CONSOLE` 0, `GNTTAB_RESERVED_XENSTORE` 1); never hand them out.
pub const NR_RESERVED_ENTRIES: u32 = 8;
/// `GNTTAB_RESERVED_CONSOLE`
pub const RESERVED_CONSOLE: u32 = 0;
/// `GNTTAB_RESERVED_XENSTORE`
pub const RESERVED_XENSTORE: u32 = 1;

/// `GTF_invalid`
pub const GTF_INVALID: u16 = 0;

bitflags::bitflags! {
    /// The `flags` of a v1 grant entry (`GTF_*`): what we grant, and what Xen sets
    /// while the peer maps the page. The entry keeps the raw `u16` (unknown bits
    /// are preserved with `from_bits_retain`).
    #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
    pub struct GrantFlags: u16 {
        /// `GTF_permit_access`: the type "access granted" (in `GTF_type_mask`).
        const PERMIT_ACCESS = 1;
        /// `GTF_readonly`: the peer may only read.
        const READONLY = 1 << 2;
        /// `GTF_reading`: set by Xen while the peer maps the page.
        const READING = 1 << 3;
        /// `GTF_writing`: set by Xen while the peer maps the page writable.
        const WRITING = 1 << 4;
    }
}

impl GrantFlags {
    /// Mapped by the peer (reading or writing): access cannot be ended.
    pub const BUSY: GrantFlags = GrantFlags::READING.union(GrantFlags::WRITING);
}

/// `GTF_permit_access` ([`GrantFlags::PERMIT_ACCESS`] as a raw value)
pub const GTF_PERMIT_ACCESS: u16 = GrantFlags::PERMIT_ACCESS.bits();
/// `GTF_readonly`
pub const GTF_READONLY: u16 = GrantFlags::READONLY.bits();
/// `GTF_reading`
pub const GTF_READING: u16 = GrantFlags::READING.bits();
/// `GTF_writing`
pub const GTF_WRITING: u16 = GrantFlags::WRITING.bits();
/// Mask of the type field (`GTF_type_mask`).
pub const GTF_TYPE_MASK: u16 = 3;

/// `GNTMAP_device_map`
pub const GNTMAP_DEVICE_MAP: u32 = 1;
/// `GNTMAP_host_map`
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// `GNTMAP_application_map`
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `GNTMAP_contains_pte`
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;

/// `GNTCOPY_source_gref`
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
/// `GNTCOPY_dest_gref`
pub const GNTCOPY_DEST_GREF: u16 = 2;

/// `GNTST_okay`
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_general_error`
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_bad_domain`
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_gntref`
pub const GNTST_BAD_GNTREF: i16 = -3;
/// `GNTST_bad_handle`
pub const GNTST_BAD_HANDLE: i16 = -4;
/// `GNTST_bad_virt_addr`
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// `GNTST_bad_dev_addr`
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// `GNTST_no_device_space`
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// `GNTST_permission_denied`
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// `GNTST_bad_page`
pub const GNTST_BAD_PAGE: i16 = -9;
/// `GNTST_bad_copy_arg`
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// `GNTST_address_too_big`
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// `GNTST_eagain`
pub const GNTST_EAGAIN: i16 = -12;
/// `GNTST_no_space`
pub const GNTST_NO_SPACE: i16 = -13;

/// Grant entries per 4 KiB frame (v1 entries are 8 bytes).
pub const ENTRIES_PER_FRAME_V1: u32 = 512;

/// `struct grant_entry_v1`
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` flags.
    pub flags: u16,
    /// The domain being granted access.
    pub domid: u16,
    /// The frame (gfn) being granted.
    pub frame: u32,
}
const _: () = {
    assert!(size_of::<GrantEntryV1>() == 8);
    assert!(offset_of!(GrantEntryV1, flags) == 0);
    assert!(offset_of!(GrantEntryV1, domid) == 2);
    assert!(offset_of!(GrantEntryV1, frame) == 4);
};

/// Byte offset of `flags` in a v1 entry.
pub const ENTRY_V1_FLAGS: usize = 0;
/// Byte offset of `domid` in a v1 entry.
pub const ENTRY_V1_DOMID: usize = 2;
/// Byte offset of `frame` in a v1 entry.
pub const ENTRY_V1_FRAME: usize = 4;

/// `struct gnttab_setup_table`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetupTable {
    /// IN: domain (`DOMID_SELF`).
    pub dom: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad2: [u8; 6],
    /// IN: guest handle (pointer) to an array of `nr_frames` `xen_pfn_t` (OUT).
    pub frame_list: u64,
}
const _: () = {
    assert!(size_of::<SetupTable>() == 24);
    assert!(offset_of!(SetupTable, dom) == 0);
    assert!(offset_of!(SetupTable, nr_frames) == 4);
    assert!(offset_of!(SetupTable, status) == 8);
    assert!(offset_of!(SetupTable, frame_list) == 16);
};

/// `struct gnttab_query_size`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QuerySize {
    /// IN: domain (`DOMID_SELF`).
    pub dom: u16,
    /// Padding.
    pub _pad: u16,
    /// OUT: current frames.
    pub nr_frames: u32,
    /// OUT: maximum frames.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad2: u16,
}
const _: () = {
    assert!(size_of::<QuerySize>() == 16);
    assert!(offset_of!(QuerySize, dom) == 0);
    assert!(offset_of!(QuerySize, nr_frames) == 4);
    assert!(offset_of!(QuerySize, max_nr_frames) == 8);
    assert!(offset_of!(QuerySize, status) == 12);
};

/// `struct gnttab_set_version`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetVersion {
    /// IN/OUT: version.
    pub version: u32,
}
const _: () = assert!(size_of::<SetVersion>() == 4);

/// `struct gnttab_get_version` (`GNTTABOP_get_version`)
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetVersion {
    /// IN: domain (`DOMID_SELF`).
    pub dom: u16,
    /// Padding.
    pub _pad: u16,
    /// OUT: the grant table version in effect.
    pub version: u32,
}
const _: () = {
    assert!(size_of::<GetVersion>() == 8);
    assert!(offset_of!(GetVersion, dom) == 0);
    assert!(offset_of!(GetVersion, version) == 4);
};

/// `struct gnttab_map_grant_ref`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MapGrantRef {
    /// IN: where to map (host address).
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: the grant reference.
    pub gref: u32,
    /// IN: the granting domain.
    pub dom: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: handle for unmap.
    pub handle: u32,
    /// OUT: bus address.
    pub dev_bus_addr: u64,
}
const _: () = {
    assert!(size_of::<MapGrantRef>() == 32);
    assert!(offset_of!(MapGrantRef, host_addr) == 0);
    assert!(offset_of!(MapGrantRef, flags) == 8);
    assert!(offset_of!(MapGrantRef, gref) == 12);
    assert!(offset_of!(MapGrantRef, dom) == 16);
    assert!(offset_of!(MapGrantRef, status) == 18);
    assert!(offset_of!(MapGrantRef, handle) == 20);
    assert!(offset_of!(MapGrantRef, dev_bus_addr) == 24);
};

/// `struct gnttab_unmap_grant_ref`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UnmapGrantRef {
    /// IN: host address of the mapping.
    pub host_addr: u64,
    /// IN: bus address.
    pub dev_bus_addr: u64,
    /// IN: handle from map.
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}
const _: () = {
    assert!(size_of::<UnmapGrantRef>() == 24);
    assert!(offset_of!(UnmapGrantRef, host_addr) == 0);
    assert!(offset_of!(UnmapGrantRef, dev_bus_addr) == 8);
    assert!(offset_of!(UnmapGrantRef, handle) == 16);
    assert!(offset_of!(UnmapGrantRef, status) == 20);
};

/// One side of a `gnttab_copy` (`struct gnttab_copy_ptr`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CopyPtr {
    /// Union: grant ref (low 32 bits) or gmfn.
    pub u: u64,
    /// Domain.
    pub domid: u16,
    /// Offset in the page.
    pub offset: u16,
    /// Padding.
    pub _pad: u32,
}
const _: () = {
    assert!(size_of::<CopyPtr>() == 16);
    assert!(offset_of!(CopyPtr, u) == 0);
    assert!(offset_of!(CopyPtr, domid) == 8);
    assert!(offset_of!(CopyPtr, offset) == 10);
};

/// `struct gnttab_copy`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Copy {
    /// Source.
    pub source: CopyPtr,
    /// Destination.
    pub dest: CopyPtr,
    /// Bytes to copy.
    pub len: u16,
    /// `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}
const _: () = {
    assert!(size_of::<Copy>() == 40);
    assert!(offset_of!(Copy, source) == 0);
    assert!(offset_of!(Copy, dest) == 16);
    assert!(offset_of!(Copy, len) == 32);
    assert!(offset_of!(Copy, flags) == 34);
    assert!(offset_of!(Copy, status) == 36);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `grant_table.h`.
    #[test]
    fn constants_match_grant_table_h() {
        assert_eq!(OP_MAP_GRANT_REF, 0);
        assert_eq!(OP_UNMAP_GRANT_REF, 1);
        assert_eq!(OP_SETUP_TABLE, 2);
        assert_eq!(OP_COPY, 5);
        assert_eq!(OP_QUERY_SIZE, 6);
        assert_eq!(OP_SET_VERSION, 8);
        assert_eq!(OP_GET_VERSION, 10);
        assert_eq!(NR_RESERVED_ENTRIES, 8);
        assert_eq!(RESERVED_CONSOLE, 0);
        assert_eq!(RESERVED_XENSTORE, 1);
        assert_eq!(GTF_INVALID, 0);
        assert_eq!(GTF_PERMIT_ACCESS, 1);
        assert_eq!(GTF_TYPE_MASK, 3);
        assert_eq!(GTF_READONLY, 4);
        assert_eq!(GTF_READING, 8);
        assert_eq!(GTF_WRITING, 16);
        assert_eq!(GNTMAP_DEVICE_MAP, 1);
        assert_eq!(GNTMAP_HOST_MAP, 2);
        assert_eq!(GNTMAP_READONLY, 4);
        assert_eq!(GNTMAP_APPLICATION_MAP, 8);
        assert_eq!(GNTMAP_CONTAINS_PTE, 16);
        assert_eq!(GNTCOPY_SOURCE_GREF, 1);
        assert_eq!(GNTCOPY_DEST_GREF, 2);
        let st = [
            GNTST_OKAY,
            GNTST_GENERAL_ERROR,
            GNTST_BAD_DOMAIN,
            GNTST_BAD_GNTREF,
            GNTST_BAD_HANDLE,
            GNTST_BAD_VIRT_ADDR,
            GNTST_BAD_DEV_ADDR,
            GNTST_NO_DEVICE_SPACE,
            GNTST_PERMISSION_DENIED,
            GNTST_BAD_PAGE,
            GNTST_BAD_COPY_ARG,
            GNTST_ADDRESS_TOO_BIG,
            GNTST_EAGAIN,
            GNTST_NO_SPACE,
        ];
        for (i, v) in st.iter().enumerate() {
            assert_eq!(i32::from(*v), -(i as i32));
        }
        assert_eq!(
            ENTRIES_PER_FRAME_V1 as usize,
            4096 / size_of::<GrantEntryV1>()
        );
    }
}
