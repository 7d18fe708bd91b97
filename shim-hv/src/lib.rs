//! shim-hv: a thin hypervisor that plays Xen and dom0.
//!
//! ```text
//!  guest (kit frontends) ──hypercalls──▶ xen model: domains · guest memory ·
//!                                         event channels · grant tables
//!                          store ring  ──▶ xenstored (tree, perms, watches, txns, quotas)
//!                          device rings ─▶ backends: blk · net (bridge/TAP) · console
//!  toolstack CLI ──unix socket──▶ daemon (domains from xl/xm configs)
//! ```
//!
//! # Example
//!
//! An in-process guest runs the kit's xenstore client against the real xenstored
//! (store page and event channel found through the HVM params, as on Xen); dom0 reads
//! what it wrote.
//!
//! ```
//! use shim_hv::xen::{DomainSpec, DomainState, Hypervisor, HypervisorConfig};
//! use shim_hv::xenstored::TxId;
//! use xenbus::{Store, Xenstore};
//!
//! let hv = Hypervisor::new(HypervisorConfig::default());
//! let dom = hv.create_domain(DomainSpec::new("doc", 4)).unwrap();
//! let id = dom.id().0;
//! let guest = hv
//!     .spawn_guest(dom, |g| {
//!         let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
//!         let mut buf = [0u8; 16];
//!         assert_eq!(xs.read_str("name", &mut buf).unwrap(), "doc");
//!         xs.write_str("data/greeting", "hello").unwrap();
//!     })
//!     .unwrap();
//! let _end: DomainState = guest.join();
//! let dom0 = hv.xenstored().client(0);
//! let path = format!("/local/domain/{id}/data/greeting");
//! assert_eq!(dom0.read(TxId::NONE, &path).unwrap(), b"hello");
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod config;
pub mod mem;
pub mod runner;
pub mod toolstack;
pub mod xen;
pub mod xenstored;
