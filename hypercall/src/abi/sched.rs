//! Scheduler operations (`sched.h`).

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `SCHEDOP_yield`
pub const OP_YIELD: u32 = 0;
/// `SCHEDOP_block`
pub const OP_BLOCK: u32 = 1;
/// `SCHEDOP_shutdown`
pub const OP_SHUTDOWN: u32 = 2;
/// `SCHEDOP_poll`
pub const OP_POLL: u32 = 3;

/// `SHUTDOWN_poweroff`
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_reboot`
pub const SHUTDOWN_REBOOT: u32 = 1;
/// `SHUTDOWN_suspend`
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// `SHUTDOWN_crash`
pub const SHUTDOWN_CRASH: u32 = 3;
/// `SHUTDOWN_watchdog`
pub const SHUTDOWN_WATCHDOG: u32 = 4;
/// `SHUTDOWN_soft_reset`
pub const SHUTDOWN_SOFT_RESET: u32 = 5;

/// `struct sched_shutdown`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Shutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
const _: () = assert!(size_of::<Shutdown>() == 4);

/// `struct sched_poll`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Poll {
    /// Guest handle to an array of ports.
    pub ports: u64,
    /// Number of ports.
    pub nr_ports: u32,
    /// Padding.
    pub _pad: u32,
    /// Absolute system time in ns (0 = none).
    pub timeout: u64,
}
const _: () = {
    assert!(size_of::<Poll>() == 24);
    assert!(offset_of!(Poll, ports) == 0);
    assert!(offset_of!(Poll, nr_ports) == 8);
    assert!(offset_of!(Poll, timeout) == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `sched.h`.
    #[test]
    fn constants_match_sched_h() {
        assert_eq!(OP_YIELD, 0);
        assert_eq!(OP_BLOCK, 1);
        assert_eq!(OP_SHUTDOWN, 2);
        assert_eq!(OP_POLL, 3);
        assert_eq!(SHUTDOWN_POWEROFF, 0);
        assert_eq!(SHUTDOWN_REBOOT, 1);
        assert_eq!(SHUTDOWN_SUSPEND, 2);
        assert_eq!(SHUTDOWN_CRASH, 3);
        assert_eq!(SHUTDOWN_WATCHDOG, 4);
        assert_eq!(SHUTDOWN_SOFT_RESET, 5);
    }
}
