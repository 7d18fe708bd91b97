//! vCPU operations (`vcpu.h`): `vcpu_op(cmd, vcpuid, extra_args)`.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `VCPUOP_initialise`
pub const OP_INITIALISE: u32 = 0;
/// `VCPUOP_up`
pub const OP_UP: u32 = 1;
/// `VCPUOP_down`
pub const OP_DOWN: u32 = 2;
/// `VCPUOP_is_up`
pub const OP_IS_UP: u32 = 3;
/// `VCPUOP_get_runstate_info`
pub const OP_GET_RUNSTATE_INFO: u32 = 4;
/// `VCPUOP_register_runstate_memory_area`
pub const OP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// `VCPUOP_set_periodic_timer`
pub const OP_SET_PERIODIC_TIMER: u32 = 6;
/// `VCPUOP_stop_periodic_timer` (argument NULL)
pub const OP_STOP_PERIODIC_TIMER: u32 = 7;
/// `VCPUOP_set_singleshot_timer` (argument [`SetSingleshotTimer`])
pub const OP_SET_SINGLESHOT_TIMER: u32 = 8;
/// `VCPUOP_stop_singleshot_timer` (argument NULL)
pub const OP_STOP_SINGLESHOT_TIMER: u32 = 9;
/// `VCPUOP_register_vcpu_info` (argument [`RegisterVcpuInfo`])
pub const OP_REGISTER_VCPU_INFO: u32 = 10;
/// `VCPUOP_send_nmi`
pub const OP_SEND_NMI: u32 = 11;
/// `VCPUOP_get_physid`
pub const OP_GET_PHYSID: u32 = 12;

/// `VCPU_SSHOTTMR_future`: fail with `-ETIME` if the deadline already passed.
pub const SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `struct vcpu_set_singleshot_timer`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetSingleshotTimer {
    /// Absolute system time in nanoseconds.
    pub timeout_abs_ns: u64,
    /// `SSHOTTMR_*`.
    pub flags: u32,
    /// Padding.
    pub _pad: u32,
}
const _: () = {
    assert!(size_of::<SetSingleshotTimer>() == 16);
    assert!(offset_of!(SetSingleshotTimer, timeout_abs_ns) == 0);
    assert!(offset_of!(SetSingleshotTimer, flags) == 8);
};

/// `struct vcpu_set_periodic_timer`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetPeriodicTimer {
    /// Period in nanoseconds.
    pub period_ns: u64,
}
const _: () = assert!(size_of::<SetPeriodicTimer>() == 8);

/// `struct vcpu_register_vcpu_info`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RegisterVcpuInfo {
    /// Frame (gfn) of the page to place `vcpu_info` in.
    pub mfn: u64,
    /// Offset within the page.
    pub offset: u32,
    /// Unused.
    pub rsvd: u32,
}
const _: () = {
    assert!(size_of::<RegisterVcpuInfo>() == 16);
    assert!(offset_of!(RegisterVcpuInfo, mfn) == 0);
    assert!(offset_of!(RegisterVcpuInfo, offset) == 8);
    assert!(offset_of!(RegisterVcpuInfo, rsvd) == 12);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_vcpu_h() {
        let ops = [
            OP_INITIALISE,
            OP_UP,
            OP_DOWN,
            OP_IS_UP,
            OP_GET_RUNSTATE_INFO,
            OP_REGISTER_RUNSTATE_MEMORY_AREA,
        ];
        for (i, v) in ops.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        assert_eq!(OP_SET_PERIODIC_TIMER, 6);
        assert_eq!(OP_STOP_PERIODIC_TIMER, 7);
        assert_eq!(OP_SET_SINGLESHOT_TIMER, 8);
        assert_eq!(OP_STOP_SINGLESHOT_TIMER, 9);
        assert_eq!(OP_REGISTER_VCPU_INFO, 10);
        assert_eq!(OP_SEND_NMI, 11);
        assert_eq!(OP_GET_PHYSID, 12);
        assert_eq!(SSHOTTMR_FUTURE, 1);
    }
}
