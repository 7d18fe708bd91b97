//! Device backends (dom0 side).

pub mod blk;
pub mod bridge;
pub mod console;
pub mod net;
pub mod tap;
pub mod xenbus;
