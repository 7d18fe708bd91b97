//! `struct shared_info` and `struct vcpu_info` offsets (`xen.h`, x86_64).

/// Number of `vcpu_info` slots in `shared_info` (`XEN_LEGACY_MAX_VCPUS`).
pub const LEGACY_MAX_VCPUS: usize = 32;
/// Size of one `struct vcpu_info`.
pub const VCPU_INFO_SIZE: usize = 64;
/// `vcpu_info.evtchn_upcall_pending` (u8)
pub const VCPU_UPCALL_PENDING: usize = 0;
/// `vcpu_info.evtchn_upcall_mask` (u8)
pub const VCPU_UPCALL_MASK: usize = 1;
/// `vcpu_info.evtchn_pending_sel` (u64)
pub const VCPU_PENDING_SEL: usize = 8;
/// `vcpu_info.time` (`struct vcpu_time_info`)
pub const VCPU_TIME: usize = 32;

/// `shared_info.evtchn_pending[64]` (u64 words)
pub const EVTCHN_PENDING: usize = LEGACY_MAX_VCPUS * VCPU_INFO_SIZE;
/// `shared_info.evtchn_mask[64]` (u64 words)
pub const EVTCHN_MASK: usize = EVTCHN_PENDING + 64 * 8;
/// `shared_info.wc_version` (u32)
pub const WC_VERSION: usize = EVTCHN_MASK + 64 * 8;
/// `shared_info.wc_sec` (u32)
pub const WC_SEC: usize = WC_VERSION + 4;
/// `shared_info.wc_nsec` (u32)
pub const WC_NSEC: usize = WC_VERSION + 8;
/// `shared_info.wc_sec_hi` (u32, x86_64)
pub const WC_SEC_HI: usize = WC_VERSION + 12;
/// `shared_info.arch` (`struct arch_shared_info`)
pub const ARCH: usize = WC_VERSION + 16;

/// `vcpu_info.arch` (`struct arch_vcpu_info`: `cr2`, `pad`, 16 bytes on x86_64)
pub const VCPU_ARCH: usize = 16;
/// `vcpu_time_info.version` (u32), relative to [`VCPU_TIME`]
pub const TIME_VERSION: usize = 0;
/// `vcpu_time_info.tsc_timestamp` (u64), relative to [`VCPU_TIME`]
pub const TIME_TSC_TIMESTAMP: usize = 8;
/// `vcpu_time_info.system_time` (u64), relative to [`VCPU_TIME`]
pub const TIME_SYSTEM_TIME: usize = 16;
/// `vcpu_time_info.tsc_to_system_mul` (u32), relative to [`VCPU_TIME`]
pub const TIME_TSC_TO_SYSTEM_MUL: usize = 24;
/// `vcpu_time_info.tsc_shift` (i8), relative to [`VCPU_TIME`]
pub const TIME_TSC_SHIFT: usize = 28;
/// `vcpu_time_info.flags` (u8), relative to [`VCPU_TIME`]
pub const TIME_FLAGS: usize = 29;

/// Offset of vCPU `n`'s `vcpu_info`.
pub const fn vcpu_info(n: usize) -> usize {
    n * VCPU_INFO_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets from `xen.h` / `arch-x86/xen.h` (x86_64: `xen_ulong_t` is 8 bytes).
    #[test]
    fn offsets_match_xen_h() {
        assert_eq!(LEGACY_MAX_VCPUS, 32);
        assert_eq!(VCPU_INFO_SIZE, 64);
        assert_eq!(VCPU_UPCALL_PENDING, 0);
        assert_eq!(VCPU_UPCALL_MASK, 1);
        assert_eq!(VCPU_PENDING_SEL, 8);
        assert_eq!(VCPU_ARCH, 16);
        assert_eq!(VCPU_TIME, 32);
        assert_eq!(VCPU_TIME + 32, VCPU_INFO_SIZE);
        assert_eq!(EVTCHN_PENDING, 2048);
        assert_eq!(EVTCHN_MASK, 2560);
        assert_eq!(WC_VERSION, 3072);
        assert_eq!(WC_SEC, 3076);
        assert_eq!(WC_NSEC, 3080);
        assert_eq!(WC_SEC_HI, 3084);
        assert_eq!(ARCH, 3088);
        assert_eq!(vcpu_info(3), 192);
        assert_eq!(
            (TIME_VERSION, TIME_TSC_TIMESTAMP, TIME_SYSTEM_TIME),
            (0, 8, 16)
        );
        assert_eq!(
            (TIME_TSC_TO_SYSTEM_MUL, TIME_TSC_SHIFT, TIME_FLAGS),
            (24, 28, 29)
        );
    }
}
