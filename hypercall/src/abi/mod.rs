//! Xen's public guest ABI (x86_64), from `xen/include/public/`.
//!
//! Constants are grouped by header; wire structures are `#[repr(C)]` `zerocopy` types
//! with explicit padding fields and compile-time size/offset checks.

pub mod blkif;
pub mod console;
pub mod evtchn;
pub mod gnttab;
pub mod hvm;
pub mod memory;
pub mod netif;
pub mod ring;
pub mod sched;
pub mod shared_info;
pub mod start_info;
pub mod vcpu;
pub mod version;
pub mod xenbus;
pub mod xs_wire;

/// Hypercall numbers (`xen.h`).
pub mod hypercall_nr {
    /// `__HYPERVISOR_set_timer_op`
    pub const SET_TIMER_OP: u32 = 15;
    /// `__HYPERVISOR_memory_op`
    pub const MEMORY_OP: u32 = 12;
    /// `__HYPERVISOR_xen_version`
    pub const XEN_VERSION: u32 = 17;
    /// `__HYPERVISOR_console_io`
    pub const CONSOLE_IO: u32 = 18;
    /// `__HYPERVISOR_grant_table_op`
    pub const GRANT_TABLE_OP: u32 = 20;
    /// `__HYPERVISOR_vcpu_op`
    pub const VCPU_OP: u32 = 24;
    /// `__HYPERVISOR_sched_op`
    pub const SCHED_OP: u32 = 29;
    /// `__HYPERVISOR_event_channel_op`
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// `__HYPERVISOR_hvm_op`
    pub const HVM_OP: u32 = 34;
}

/// Negated errno values hypercalls return (`errno.h`, Linux/x86 numbering).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: isize = 1;
    /// No such entry.
    pub const ENOENT: isize = 2;
    /// I/O error.
    pub const EIO: isize = 5;
    /// Try again.
    pub const EAGAIN: isize = 11;
    /// Out of memory.
    pub const ENOMEM: isize = 12;
    /// Permission denied.
    pub const EACCES: isize = 13;
    /// Bad address.
    pub const EFAULT: isize = 14;
    /// Busy.
    pub const EBUSY: isize = 16;
    /// Exists.
    pub const EEXIST: isize = 17;
    /// Invalid argument.
    pub const EINVAL: isize = 22;
    /// No space.
    pub const ENOSPC: isize = 28;
    /// Function not implemented.
    pub const ENOSYS: isize = 38;
    /// Not supported.
    pub const EOPNOTSUPP: isize = 95;
    /// No such process / domain.
    pub const ESRCH: isize = 3;
    /// Argument list too long.
    pub const E2BIG: isize = 7;
    /// No such device.
    pub const ENODEV: isize = 19;
    /// Timer expired (e.g. `VCPUOP_set_singleshot_timer` with a past deadline).
    pub const ETIME: isize = 62;
    /// Interrupted; should be restarted.
    pub const ERESTART: isize = 85;
}

#[cfg(test)]
mod tests {
    use super::{errno, hypercall_nr as nr};

    /// Values from `xen.h` (`__HYPERVISOR_*`).
    #[test]
    fn hypercall_numbers_match_xen_h() {
        assert_eq!(nr::MEMORY_OP, 12);
        assert_eq!(nr::SET_TIMER_OP, 15);
        assert_eq!(nr::XEN_VERSION, 17);
        assert_eq!(nr::CONSOLE_IO, 18);
        assert_eq!(nr::GRANT_TABLE_OP, 20);
        assert_eq!(nr::VCPU_OP, 24);
        assert_eq!(nr::SCHED_OP, 29);
        assert_eq!(nr::EVENT_CHANNEL_OP, 32);
        assert_eq!(nr::HVM_OP, 34);
    }

    /// Values from `errno.h` (`XEN_ERRNO(...)`).
    #[test]
    fn errno_values_match_errno_h() {
        let table = [
            (errno::EPERM, 1),
            (errno::ENOENT, 2),
            (errno::ESRCH, 3),
            (errno::EIO, 5),
            (errno::E2BIG, 7),
            (errno::EAGAIN, 11),
            (errno::ENOMEM, 12),
            (errno::EACCES, 13),
            (errno::EFAULT, 14),
            (errno::EBUSY, 16),
            (errno::EEXIST, 17),
            (errno::ENODEV, 19),
            (errno::EINVAL, 22),
            (errno::ENOSPC, 28),
            (errno::ENOSYS, 38),
            (errno::ETIME, 62),
            (errno::ERESTART, 85),
            (errno::EOPNOTSUPP, 95),
        ];
        for (ours, header) in table {
            assert_eq!(ours, header);
        }
    }
}
