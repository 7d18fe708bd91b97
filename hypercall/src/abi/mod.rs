//! Xen's public guest ABI (x86_64), from `xen/include/public/`.
//!
//! Constants are grouped by header; wire structures are `#[repr(C)]` `zerocopy` types
//! with explicit padding fields and compile-time size/offset checks.

pub mod evtchn;
pub mod gnttab;
pub mod hvm;
pub mod memory;
pub mod sched;
pub mod shared_info;
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
}
