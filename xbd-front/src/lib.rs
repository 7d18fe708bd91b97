//! xbd-front (xenkit).
#![no_std]
