//! Memory operations (`memory.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XENMEM_add_to_physmap`
pub const OP_ADD_TO_PHYSMAP: u32 = 7;
/// `XENMEM_memory_map`
pub const OP_MEMORY_MAP: u32 = 9;

/// `XENMAPSPACE_shared_info`
pub const SPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`
pub const SPACE_GRANT_TABLE: u32 = 1;

/// `struct xen_add_to_physmap`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AddToPhysmap {
    /// IN: domain (`DOMID_SELF`).
    pub domid: u16,
    /// IN: number of pages (gmfn_range only).
    pub size: u16,
    /// IN: `SPACE_*`.
    pub space: u32,
    /// IN: index into the space (e.g. grant frame number).
    pub idx: u64,
    /// IN: the gfn where the frame should appear.
    pub gpfn: u64,
}
const _: () = assert!(core::mem::size_of::<AddToPhysmap>() == 24);
