//! shim-hv: a thin hypervisor that plays Xen and dom0.
//!
//! ```text
//!  guest (kit frontends) ──hypercalls──▶ xen model: domains · guest memory ·
//!                                         event channels · grant tables
//!                          store ring  ──▶ xenstored (tree, perms, watches, txns, quotas)
//!                          device rings ─▶ backends: blk · net (bridge/TAP) · console
//!  toolstack CLI ──unix socket──▶ daemon (domains from xl/xm configs)
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod config;
pub mod mem;
pub mod runner;
pub mod toolstack;
pub mod xen;
pub mod xenstored;
