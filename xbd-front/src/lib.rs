//! xbd-front (xenkit).
#![no_std]
#![forbid(unsafe_code)]

pub mod vdev;
