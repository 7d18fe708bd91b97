//! How the hypercall dispatcher reads and writes a guest's pointer arguments.
//!
//! A hypercall argument that is a pointer means different things per runner: a
//! guest-physical address (KVM guests with identity paging, tests), a guest-virtual
//! address (KVM guests with paging: translate first), or a host address (in-process
//! guests). The dispatcher only sees this trait. Every read is a private copy that is
//! then parsed with `zerocopy` and validated.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::mem::GuestMemory;

/// A pointer argument did not point to memory the guest may access (`-EFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad guest address")]
pub struct Efault;

/// Reads and writes guest memory named by hypercall pointer arguments.
pub trait GuestAccess {
    /// Copies `buf.len()` bytes at guest address `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Efault>;

    /// Copies `buf` to guest address `addr`.
    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Efault>;
}

/// Typed helpers over any [`GuestAccess`].
pub trait GuestAccessExt: GuestAccess {
    /// Reads a private copy of a plain-data value at `addr`.
    fn read_obj<T: FromBytes + IntoBytes>(&self, addr: u64) -> Result<T, Efault> {
        let mut v = T::new_zeroed();
        self.read(addr, v.as_mut_bytes())?;
        Ok(v)
    }

    /// Writes a plain-data value to `addr`.
    fn write_obj<T: IntoBytes + Immutable>(&self, addr: u64, v: &T) -> Result<(), Efault> {
        self.write(addr, v.as_bytes())
    }
}

impl<A: GuestAccess + ?Sized> GuestAccessExt for A {}

/// Pointer arguments are guest-physical addresses, checked against the domain's RAM
/// (tests, and the KVM runner for guests that run with identity paging).
#[derive(Clone, Copy, Debug)]
pub struct GuestPhysAccess<'a> {
    mem: &'a GuestMemory,
}

impl<'a> GuestPhysAccess<'a> {
    /// Accessor over `mem`.
    pub fn new(mem: &'a GuestMemory) -> Self {
        GuestPhysAccess { mem }
    }
}

impl GuestAccess for GuestPhysAccess<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Efault> {
        self.mem.read(addr, buf).map_err(|_| Efault)
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Efault> {
        self.mem.write(addr, buf).map_err(|_| Efault)
    }
}
