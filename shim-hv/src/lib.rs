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
//! The parts are crates by job, all under `shim-hv/`, so that a user depends on just
//! what it uses (the KVM runner on the model, a fuzz target on xenstored or the
//! config reader):
//!
//! - [`xenstored`] (`shim-hv/xenstored`): the store daemon: ring, socket and
//!   in-process clients;
//! - [`xen_model`] (`shim-hv/xen-model`): domains, guest memory, event channels,
//!   grant tables, the hypercall dispatcher, and the in-process runner
//!   ([`xen_model::inproc`]: guest code as host threads);
//! - [`xen_backends`] (`shim-hv/xen-backends`): blkback, netback with bridges and
//!   TAP devices, the console backend and channels;
//! - [`xl_config`] (`shim-hv/xl-config`): xl/xm domain configuration files;
//! - [`kvm_runner`] (`shim-hv/kvm-runner`): PVH kernels in KVM virtual machines;
//! - this crate: the toolstack ([`toolstack`]: daemon, CLI client, built-in guest)
//!   and the `shim-hv` command.
//!
//! # Example
//!
//! An in-process guest runs the kit's xenstore client against the real xenstored
//! (store page and event channel found through the HVM params, as on Xen); dom0 reads
//! what it wrote.
//!
//! ```
//! use xen_model::{DomainSpec, DomainState, Hypervisor, HypervisorConfig};
//! use xenstored::TxId;
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

pub mod toolstack;
