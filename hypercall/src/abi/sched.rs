//! Scheduler operations (`sched.h`).

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

/// `struct sched_shutdown`
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Shutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

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
const _: () = assert!(core::mem::size_of::<Poll>() == 24);
