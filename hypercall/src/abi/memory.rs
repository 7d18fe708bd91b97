//! Memory operations (`memory.h`).

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XENMEM_current_reservation`: argument a `domid_t`; returns the domain's pages.
pub const OP_CURRENT_RESERVATION: u32 = 3;
/// `XENMEM_maximum_reservation`: argument a `domid_t`; returns the domain's limit.
pub const OP_MAXIMUM_RESERVATION: u32 = 4;
/// `XENMEM_add_to_physmap`
pub const OP_ADD_TO_PHYSMAP: u32 = 7;
/// `XENMEM_memory_map`
pub const OP_MEMORY_MAP: u32 = 9;

/// `MEMOP_EXTENT_SHIFT` (Xen's `xen/hypercall.h`, not a public header, but fixed
/// ABI in practice): `cmd >> MEMOP_EXTENT_SHIFT` is a continuation's start extent.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// `MEMOP_CMD_MASK`: the `XENMEM_*` sub-op in the low bits of `cmd`.
pub const MEMOP_CMD_MASK: u32 = (1 << MEMOP_EXTENT_SHIFT) - 1;

/// `XENMAPSPACE_shared_info`
pub const SPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`
pub const SPACE_GRANT_TABLE: u32 = 1;
/// `XENMAPSPACE_gmfn`
pub const SPACE_GMFN: u32 = 2;
/// `XENMAPSPACE_gmfn_range`
pub const SPACE_GMFN_RANGE: u32 = 3;
/// `XENMAPIDX_grant_table_status`: or'ed into `idx` to map a v2 status frame.
pub const MAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

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
const _: () = {
    assert!(size_of::<AddToPhysmap>() == 24);
    assert!(offset_of!(AddToPhysmap, domid) == 0);
    assert!(offset_of!(AddToPhysmap, size) == 2);
    assert!(offset_of!(AddToPhysmap, space) == 4);
    assert!(offset_of!(AddToPhysmap, idx) == 8);
    assert!(offset_of!(AddToPhysmap, gpfn) == 16);
};

/// `struct xen_memory_map` (`XENMEM_memory_map`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemoryMap {
    /// IN: capacity of `buffer` in entries; OUT: entries stored.
    pub nr_entries: u32,
    /// Padding.
    pub _pad: u32,
    /// IN: guest handle to an array of [`E820Entry`].
    pub buffer: u64,
}
const _: () = {
    assert!(size_of::<MemoryMap>() == 16);
    assert!(offset_of!(MemoryMap, nr_entries) == 0);
    assert!(offset_of!(MemoryMap, buffer) == 8);
};

/// `struct e820entry` (`hvm/e820.h`, packed: 20 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_*` type.
    pub ty: u32,
}
const _: () = {
    assert!(size_of::<E820Entry>() == 20);
    assert!(offset_of!(E820Entry, addr) == 0);
    assert!(offset_of!(E820Entry, size) == 8);
    assert!(offset_of!(E820Entry, ty) == 16);
};

/// `E820_RAM`
pub const E820_RAM: u32 = 1;
/// `E820_RESERVED`
pub const E820_RESERVED: u32 = 2;
/// `E820_ACPI`
pub const E820_ACPI: u32 = 3;
/// `E820_NVS`
pub const E820_NVS: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `memory.h` and `hvm/e820.h`.
    #[test]
    fn constants_match_memory_h() {
        assert_eq!(OP_CURRENT_RESERVATION, 3);
        assert_eq!(OP_MAXIMUM_RESERVATION, 4);
        assert_eq!(OP_ADD_TO_PHYSMAP, 7);
        assert_eq!((MEMOP_EXTENT_SHIFT, MEMOP_CMD_MASK), (6, 0x3f));
        assert_eq!(OP_MEMORY_MAP, 9);
        assert_eq!(SPACE_SHARED_INFO, 0);
        assert_eq!(SPACE_GRANT_TABLE, 1);
        assert_eq!(SPACE_GMFN, 2);
        assert_eq!(SPACE_GMFN_RANGE, 3);
        assert_eq!(MAPIDX_GRANT_TABLE_STATUS, 0x8000_0000);
        assert_eq!((E820_RAM, E820_RESERVED, E820_ACPI, E820_NVS), (1, 2, 3, 4));
    }
}
