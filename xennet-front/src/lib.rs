//! xennet-front (xenkit).
#![no_std]
