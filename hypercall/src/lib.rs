//! The Xen guest ABI for xenkit: public structures, hypercalls, event channels, grant
//! tables and shared rings.
//!
//! ```text
//!  xbd-front  xennet-front  xencons  xenbus
//!        \        |           |       /
//!         hypercall: abi · evtchn · gnttab · ring · shmem
//!                         |
//!              Platform (Hypercall + pages + wait)
//!         real Xen · shim-hv KVM · shim-hv in-process
//! ```
#![no_std]

pub mod abi;
pub mod evtchn;
pub mod gnttab;
pub mod platform;
pub mod ring;
pub mod shmem;
pub mod xen;

#[cfg(test)]
mod testutil;

pub use platform::{DomId, Gfn, GrantRef, Hypercall, Platform, Port, PAGE_SIZE};
pub use shmem::SharedMem;
pub use xen::{Xen, XenError};
