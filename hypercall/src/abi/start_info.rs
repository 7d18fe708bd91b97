//! The PVH boot ABI (`arch-x86/hvm/start_info.h`): what Xen (or shim-hv) hands a PVH
//! kernel in `%ebx` at its `XEN_ELFNOTE_PHYS32_ENTRY`.
//!
//! All addresses are guest-physical. Version 0 has no memory map (the kernel asks
//! `XENMEM_memory_map` instead); version 1 adds [`StartInfo::memmap_paddr`].

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_HVM_START_MAGIC_VALUE`: [`StartInfo::magic`].
pub const MAGIC: u32 = 0x336e_c578;
/// `XEN_ELFNOTE_PHYS32_ENTRY` (`elfnote.h`): the ELF note type naming the 32-bit
/// PVH entry point.
pub const ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `XEN_HVM_MEMMAP_TYPE_RAM`: usable RAM (E820 type 1).
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// `XEN_HVM_MEMMAP_TYPE_RESERVED` (E820 type 2).
pub const MEMMAP_TYPE_RESERVED: u32 = 2;

/// `struct hvm_start_info`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// [`MAGIC`].
    pub magic: u32,
    /// 0 or 1 (1 adds the memory map).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Entries in the module list.
    pub nr_modules: u32,
    /// Address of `nr_modules` [`ModlistEntry`]s.
    pub modlist_paddr: u64,
    /// Address of the NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Address of the ACPI RSDP (0: none).
    pub rsdp_paddr: u64,
    /// Version 1: address of `memmap_entries` [`MemmapEntry`]s.
    pub memmap_paddr: u64,
    /// Version 1: entries in the memory map.
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}
const _: () = {
    assert!(size_of::<StartInfo>() == 56);
    assert!(offset_of!(StartInfo, modlist_paddr) == 16);
    assert!(offset_of!(StartInfo, cmdline_paddr) == 24);
    assert!(offset_of!(StartInfo, rsdp_paddr) == 32);
    assert!(offset_of!(StartInfo, memmap_paddr) == 40);
    assert!(offset_of!(StartInfo, memmap_entries) == 48);
};

/// `struct hvm_modlist_entry`: a module (e.g. a ramdisk) loaded with the kernel.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ModlistEntry {
    /// Address of the module.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}
const _: () = assert!(size_of::<ModlistEntry>() == 32);

/// `struct hvm_memmap_table_entry` (E820 style).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemmapEntry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `MEMMAP_TYPE_*`.
    pub kind: u32,
    /// Must be zero.
    pub reserved: u32,
}
const _: () = {
    assert!(size_of::<MemmapEntry>() == 24);
    assert!(offset_of!(MemmapEntry, kind) == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `arch-x86/hvm/start_info.h` and `elfnote.h`.
    #[test]
    fn constants_match_the_headers() {
        assert_eq!(MAGIC, 0x336ec578);
        assert_eq!(ELFNOTE_PHYS32_ENTRY, 18);
        assert_eq!((MEMMAP_TYPE_RAM, MEMMAP_TYPE_RESERVED), (1, 2));
    }

    #[test]
    fn parses_a_version_1_block() {
        let mut raw = [0u8; 56];
        raw[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        raw[4..8].copy_from_slice(&1u32.to_le_bytes());
        raw[24..32].copy_from_slice(&0x2000u64.to_le_bytes());
        raw[40..48].copy_from_slice(&0x3000u64.to_le_bytes());
        raw[48..52].copy_from_slice(&5u32.to_le_bytes());
        let si = StartInfo::read_from_bytes(&raw[..]).unwrap();
        assert_eq!(si.magic, MAGIC);
        assert_eq!(si.version, 1);
        assert_eq!(si.cmdline_paddr, 0x2000);
        assert_eq!(si.memmap_paddr, 0x3000);
        assert_eq!(si.memmap_entries, 5);
    }
}
