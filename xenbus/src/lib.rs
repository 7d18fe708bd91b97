//! xenbus (xenkit).
#![no_std]
