//! `xen_version` sub-ops (`version.h`) and feature bits (`features.h`).

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XENVER_version`: returns `major << 16 | minor`; no argument.
pub const XENVER_VERSION: u32 = 0;
/// `XENVER_extraversion`: fills a 16-byte `xen_extraversion_t`.
pub const XENVER_EXTRAVERSION: u32 = 1;
/// `XENVER_capabilities`: fills a 1024-byte string.
pub const XENVER_CAPABILITIES: u32 = 3;
/// `XENVER_get_features`: argument [`FeatureInfo`].
pub const XENVER_GET_FEATURES: u32 = 6;
/// `XENVER_pagesize`
pub const XENVER_PAGESIZE: u32 = 7;
/// `XENVER_guest_handle`: fills a 16-byte `xen_domain_handle_t` (the guest's UUID).
pub const XENVER_GUEST_HANDLE: u32 = 8;

/// `XEN_EXTRAVERSION_LEN`
pub const EXTRAVERSION_LEN: usize = 16;

/// `struct xen_feature_info`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FeatureInfo {
    /// IN: which 32-bit submap to return.
    pub submap_idx: u32,
    /// OUT: the submap.
    pub submap: u32,
}
const _: () = {
    assert!(size_of::<FeatureInfo>() == 8);
    assert!(offset_of!(FeatureInfo, submap_idx) == 0);
    assert!(offset_of!(FeatureInfo, submap) == 4);
};

/// `XENFEAT_writable_page_tables`
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
/// `XENFEAT_writable_descriptor_tables`
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
/// `XENFEAT_auto_translated_physmap`
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// `XENFEAT_supervisor_mode_kernel`
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
/// `XENFEAT_gnttab_map_avail_bits`
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
/// `XENFEAT_hvm_callback_vector`: `HVM_PARAM_CALLBACK_IRQ` may name a vector.
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// `XENFEAT_hvm_safe_pvclock`
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// `XENFEAT_hvm_pirqs`
pub const XENFEAT_HVM_PIRQS: u32 = 10;
/// `XENFEAT_dom0`
pub const XENFEAT_DOM0: u32 = 11;
/// `XENFEAT_NR_SUBMAPS`
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_version_h_and_features_h() {
        assert_eq!(XENVER_VERSION, 0);
        assert_eq!(XENVER_EXTRAVERSION, 1);
        assert_eq!(XENVER_CAPABILITIES, 3);
        assert_eq!(XENVER_GET_FEATURES, 6);
        assert_eq!(XENVER_PAGESIZE, 7);
        assert_eq!(XENVER_GUEST_HANDLE, 8);
        assert_eq!(EXTRAVERSION_LEN, 16);
        assert_eq!(XENFEAT_WRITABLE_PAGE_TABLES, 0);
        assert_eq!(XENFEAT_WRITABLE_DESCRIPTOR_TABLES, 1);
        assert_eq!(XENFEAT_AUTO_TRANSLATED_PHYSMAP, 2);
        assert_eq!(XENFEAT_SUPERVISOR_MODE_KERNEL, 3);
        assert_eq!(XENFEAT_GNTTAB_MAP_AVAIL_BITS, 7);
        assert_eq!(XENFEAT_HVM_CALLBACK_VECTOR, 8);
        assert_eq!(XENFEAT_HVM_SAFE_PVCLOCK, 9);
        assert_eq!(XENFEAT_HVM_PIRQS, 10);
        assert_eq!(XENFEAT_DOM0, 11);
        assert_eq!(XENFEAT_NR_SUBMAPS, 1);
    }
}
