//! Grant tables (`grant_table.h`), version 1.

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

/// `GTF_permit_access`
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_readonly`
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`
pub const GTF_WRITING: u16 = 1 << 4;
/// Mask of the type field (`GTF_type_mask`).
pub const GTF_TYPE_MASK: u16 = 3;

/// `GNTMAP_host_map`
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`
pub const GNTMAP_READONLY: u32 = 1 << 2;

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

/// Grant entries per 4 KiB frame (v1 entries are 8 bytes).
pub const ENTRIES_PER_FRAME_V1: u32 = 512;

/// `struct grant_entry_v1`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` flags.
    pub flags: u16,
    /// The domain being granted access.
    pub domid: u16,
    /// The frame (gfn) being granted.
    pub frame: u32,
}
const _: () = assert!(core::mem::size_of::<GrantEntryV1>() == 8);

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
const _: () = assert!(core::mem::size_of::<SetupTable>() == 24);

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
const _: () = assert!(core::mem::size_of::<QuerySize>() == 16);

/// `struct gnttab_set_version`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetVersion {
    /// IN/OUT: version.
    pub version: u32,
}

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
const _: () = assert!(core::mem::size_of::<MapGrantRef>() == 32);

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
const _: () = assert!(core::mem::size_of::<UnmapGrantRef>() == 24);

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
const _: () = assert!(core::mem::size_of::<Copy>() == 40);
