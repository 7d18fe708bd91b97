//! The Xen guest ABI for xenkit: public structures, typed hypercalls, event
//! channels, grant tables and shared rings. `no_std`, no heap.
//!
//! ```text
//!  xbd-front   xennet-front   xencons   xenbus          (frontends: unsafe only to free own pages)
//!      \            |            |        /
//!  ┌────────────────────────────────────────────────────────────────────────┐
//!  │ hypercall                                                              │
//!  │  ring      FrontRing / BackRing: io/ring.h, copy-once, checked indices  │
//!  │  gnttab    GrantTable<N>: v1 grants, end_access refuses while mapped   │
//!  │  evtchn    EventChannels: 2-level scan with a budget, bind/send/close  │
//!  │  xen       Xen<H>: typed hypercalls -> Result<T, XenError>             │
//!  │  abi       #[repr(C)] wire structs + constants, checked vs the headers │
//!  │  shmem     SharedMem: the only volatile/atomic access to shared pages  │
//!  │  cpuid, arch::x86_64   Xen discovery, hypercall page (asm)             │
//!  └───────────────────────────────┬────────────────────────────────────────┘
//!                                  │ Platform = Hypercall + pages + wait + time
//!            ┌─────────────────────┼──────────────────────┐
//!        real Xen              shim-hv KVM           shim-hv in-process
//!   (arch::x86_64::           (same binary,         (hypercalls as calls,
//!    HypercallPage)            same page)            guests as threads)
//! ```
//!
//! Trust model: anything in memory the other domain can write is read through
//! [`SharedMem`] (atomics and volatile copies, never Rust references), copied once
//! and validated; violations are typed errors, never panics.
//!
//! # Example
//!
//! A frontend-style round trip: typed hypercalls against a stand-in hypervisor,
//! and a block ring whose backend end runs in the same test.
//!
//! ```
//! use core::ptr::NonNull;
//! use hypercall::abi::{blkif, errno, evtchn, hypercall_nr};
//! use hypercall::ring::{BackRing, FrontRing};
//! use hypercall::{Hypercall, Port, SharedMem, Xen};
//!
//! /// A stand-in hypervisor: accepts `EVTCHNOP_send`, refuses everything else.
//! struct Fake;
//! impl Hypercall for Fake {
//!     unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
//!         if op == hypercall_nr::EVENT_CHANNEL_OP && args[0] == evtchn::OP_SEND as usize {
//!             0
//!         } else {
//!             -errno::ENOSYS
//!         }
//!     }
//! }
//!
//! let xen = Xen(Fake);
//! let port = Port(3);
//! xen.evtchn_send(port).unwrap();
//! assert_eq!(xen.sched_yield().unwrap_err().errno(), Some(errno::ENOSYS));
//!
//! // Two pages of "shared" memory (a frontend gets them from
//! // `SharedPages::alloc(&platform, 2)` and grants them to the backend).
//! let mut backing = vec![0u64; 2 * 4096 / 8];
//! // SAFETY: `backing` outlives `mem` and is only accessed through it.
//! let mem = unsafe { SharedMem::new(NonNull::new(backing.as_mut_ptr().cast()).unwrap(), 8192) };
//!
//! let mut front: FrontRing<blkif::Request, blkif::Response, _> = FrontRing::init(mem).unwrap();
//! let mut back: BackRing<blkif::Request, blkif::Response, _> = BackRing::attach(mem).unwrap();
//! assert_eq!(front.size(), 64);
//!
//! let req = blkif::Request { operation: blkif::OP_READ, id: 42, ..Default::default() };
//! front.push_request(&req).unwrap();
//! if front.push_requests_and_check_notify() {
//!     xen.evtchn_send(port).unwrap();
//! }
//!
//! let got = back.poll_request().unwrap().unwrap();
//! let rsp = blkif::Response { id: got.id, operation: got.operation, ..Default::default() };
//! back.push_response(&rsp).unwrap();
//! let _notify = back.push_responses_and_check_notify();
//!
//! assert_eq!(front.poll_response().unwrap().unwrap().id, 42);
//! assert!(!front.final_check_for_responses().unwrap());
//! ```
//!
//! # Testing
//!
//! Unit tests use in-crate fakes (a recording hypervisor, a platform with a
//! deliberately scrambled gfn mapping); nothing here depends on shim-hv. The
//! shared-memory code is also checked under Miri, including a two-thread ring test
//! whose slot copies are race-free only thanks to the index acquire/release:
//!
//! ```text
//! MIRIFLAGS=-Zmiri-permissive-provenance cargo +nightly miri test -p hypercall
//! ```
//!
//! With the test-only feature `read-audit`, `hypercall::audit` logs every shared-memory
//! access of the calling thread, so tests (here and in the frontends, which enable
//! it from their dev-dependencies) can check that each slot the other side produced
//! is copied out exactly once and that indices follow `io/ring.h`.
//!
//! (The flag only silences Miri's integer-to-pointer warnings: hypercall arguments
//! are integers by ABI, and the fakes turn them back into pointers. The hypercall
//! page's `call` test executes machine code and is skipped under Miri.)
#![no_std]

pub mod abi;
pub mod arch;
#[cfg(feature = "read-audit")]
pub mod audit;

// `read-audit` is a test-only feature (a per-thread log needs std): say so instead
// of failing somewhere in `std` on a bare-metal target.
#[cfg(all(feature = "read-audit", target_os = "none"))]
compile_error!(
    "hypercall's `read-audit` feature is test-only (it needs std): enable it from \
     [dev-dependencies], never in a no_std build"
);
pub mod cpuid;
pub mod evtchn;
pub mod gnttab;
pub mod keyflags;
pub mod platform;
pub mod ring;
pub mod shmem;
pub mod time;
pub mod xen;

#[cfg(test)]
mod testutil;

pub use platform::{DomId, Gfn, GrantRef, Hypercall, Platform, Port, PAGE_SIZE};
pub use shmem::{MappedPage, SharedMem, SharedPages, SharedRegion};
pub use xen::{Xen, XenError};

/// `bitflags`, for [`xenstore_flags!`]'s expansion (not part of the API).
#[doc(hidden)]
pub use bitflags as __bitflags;
