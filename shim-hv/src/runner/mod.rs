//! Runners: how guest code executes against the xen model.
//!
//! - [`inproc`]: guest code as host threads of this process; hypercalls are function
//!   calls. For tests, fuzzing, benchmarks and the in-process demo.
//! - [`kvm`]: a PVH kernel in a KVM virtual machine; hypercalls arrive as I/O exits
//!   and go to the same [`crate::xen::Hypervisor::hypercall`].

pub mod inproc;
pub mod kvm;
