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

/// Offset of vCPU `n`'s `vcpu_info`.
pub const fn vcpu_info(n: usize) -> usize {
    n * VCPU_INFO_SIZE
}
