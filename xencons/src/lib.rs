//! xencons (xenkit).
#![no_std]
