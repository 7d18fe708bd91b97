//! xen-conformance: pieces for running a Xen driver against scripted, hostile peers on
//! the host, without Xen and without threads, so the same tests also run under Miri.
//!
//! This is the start of issue 16's conformance kit. What exists:
//! - [`HostPlatform`]: a [`hypercall::Platform`] over host memory. Guest pages are
//!   page-aligned host allocations with their own frame numbers (not host addresses),
//!   event-channel sends are counted, `alloc_unbound` hands out ports, events for the
//!   guest can be raised on any port (real or spurious) and handed to a driver's
//!   upcall ([`HostPlatform::raise`], [`HostPlatform::take_pending`]), and `wait()`
//!   advances a virtual clock and runs the peer you script
//!   ([`HostPlatform::set_peer`]): the driver and the peer take turns on one thread,
//!   so a run is deterministic and Miri can check every access.
//! - [`GrantObserver`]: reads a guest's grant table the way a backend would, to find
//!   grants left behind (leaks) and to play a backend that keeps a grant mapped
//!   (`GTF_reading`/`GTF_writing` set) when the driver tries to end it.
//!
//! - [`xenstore`]: a xenstore server peer (`io/xs_wire.h` over the store page, found
//!   through `HVM_PARAM_STORE_PFN`/`_EVTCHN`, with xenstored 4.17's permissions,
//!   transactions, watches and error names) with hooks for hostile tests (any bytes in
//!   any key, raw replies and ring indices, failed commits, silence), and a device
//!   rig ([`xenstore::Device`]) that creates a device's frontend and backend
//!   directories as a toolstack does, for block and net backend peers to build on.
//! - [`xenstore_cases`]: the xenstore and power-event cases (`xenstore.*`, `power.*`,
//!   one or more docs/hostile-input.md rows each) run against any xenstore client
//!   through a [`xenstore_cases::StoreDriver`] trait, as a [`Report`];
//!   `tests/xenstore_catalogue.rs` runs them against xenbus and a careless client.
//! - [`console`]: the first part of the case catalogue: named console cases (what the
//!   hostile backend does, what a correct driver does), a runner that takes any driver
//!   through a small [`console::ConsoleDriver`] trait, and a [`console::Report`] that
//!   prints as a table (case, pass/fail, evidence). Its docs run it against a toy
//!   driver; `tests/catalogue.rs` runs it against xencons.
//!
//! - [`net`]: a scripted, hostile netif backend ([`net::NetBackend`]: tx and rx rings,
//!   grants mapped as Xen would, hooks for raw slots, indices, keys, states and
//!   grants kept mapped) on the store server and device rig, and the `net.*` cases
//!   run against any network frontend through [`net::NetDriver`]; its docs run a toy
//!   driver, `tests/net_catalogue.rs` runs xennet-front.
//!
//! - [`backend`]: hostile frontends for testing backends: named `blkback.*`,
//!   `netback.*` and `consback.*` cases written against a small
//!   [`backend::FrontendWorld`] trait (the frontend's pages, grants, ring indices,
//!   xenstore keys and state, notifications, and whether the backend still maps a
//!   grant), which a harness implements for the backend under test; its docs show
//!   the seam, and shim-hv's `xen-backends` runs it against its blkback, netback and
//!   console backend.
//!
//! - [`blk`]: a scripted, hostile block backend ([`blk::BlockBackend`]: blkif over the
//!   driver's grants, an in-memory disk, hooks for every response, key and state) and
//!   the block catalogue (`blk.*` cases for every block row a frontend faces), run
//!   against any driver through [`blk::BlockDriver`]; its docs run it against a toy
//!   blkfront, `tests/blk_catalogue.rs` against xbd-front.
//!
//! Not there yet (see docs/bad-input-coverage.md and issue 16): cases for every
//! other row of docs/bad-input-coverage.md.
//!
//! ```
//! use xen_conformance::{GrantObserver, HostPlatform};
//! use hypercall::gnttab::GrantTable;
//! use hypercall::{DomId, Platform};
//!
//! let host = HostPlatform::new();
//! // A driver's grant table, in host memory (no hypercalls).
//! let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
//! let page = host.pages(1);
//! let gfn = page.gfn();
//! let r = table.grant_access(DomId(0), gfn, false).unwrap();
//!
//! // The peer maps it and does not let go: ending the grant must fail, not reuse it.
//! let obs = GrantObserver::new(&host, table.frames().unwrap());
//! assert_eq!(obs.live(), vec![(r, gfn)]);
//! obs.map(r, true);
//! assert!(table.end_access(r).is_err());
//! obs.unmap(r);
//! table.end_access(r).unwrap();
//! assert!(obs.live().is_empty(), "no grant left behind");
//! ```
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod blk;
pub mod console;
mod grants;
pub mod net;
mod platform;
pub mod report;
pub mod xenstore;
pub mod xenstore_cases;

pub use grants::GrantObserver;
pub use platform::{HostPlatform, HostRegion, Peer, PeerId, HVM_NR_PARAMS};
pub use report::{Report, Row};
