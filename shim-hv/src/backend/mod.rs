//! Device backends (dom0 side).

pub mod console;
