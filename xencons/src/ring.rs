//! The `xencons_interface` page (`io/console.h`) seen from the frontend.
//!
//! ```text
//!  0      in[1024]    backend -> guest (keyboard)   in_prod: backend,  in_cons: us
//!  1024   out[2048]   guest -> backend (screen)     out_prod: us,      out_cons: backend
//!  3072   in_cons in_prod out_cons out_prod (u32, free-running, masked by the size)
//!  3088   connection  (u8; XENCONSOLE_DISCONNECTED = 1, else connected)
//! ```
//!
//! We are the only producer of `out` and the only consumer of `in`, so `out_prod` and
//! `in_cons` are kept privately (taken from the page once, at attach) and only
//! published; the backend's indices are loaded once per operation (acquire), checked
//! against ours, and only then used. A violation is a [`Fault`].

use core::cmp::min;

use hypercall::abi::console as abi;
use hypercall::shmem::{mb, wmb};
use hypercall::SharedRegion;

/// Size of the output ring (`out[]`).
pub const OUT_SIZE: usize = abi::OUT_SIZE;
/// Size of the input ring (`in[]`).
pub const IN_SIZE: usize = abi::IN_SIZE;

/// A protocol violation by the backend (or whoever wrote the page): the console is
/// failed from then on (docs/hostile-input.md rows 36/37; docs/hostile-input.md C1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `out_prod - out_cons` is more than the ring size: `out_cons` ran ahead of our
    /// `out_prod`, or jumped back more than a ring.
    OutIndices {
        /// `out_cons` as read from the page.
        cons: u32,
        /// Our `out_prod`.
        prod: u32,
    },
    /// `in_prod - in_cons` is more than the ring size.
    InIndices {
        /// Our `in_cons`.
        cons: u32,
        /// `in_prod` as read from the page.
        prod: u32,
    },
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Fault::OutIndices { cons, prod } => write!(
                f,
                "illegal output ring indices: out_cons {cons:#x}, out_prod {prod:#x}"
            ),
            Fault::InIndices { cons, prod } => write!(
                f,
                "illegal input ring indices: in_cons {cons:#x}, in_prod {prod:#x}"
            ),
        }
    }
}

/// The console page plus our private indices. `M` owns or borrows the page
/// (the console's [`hypercall::MappedPage`]), so the ring cannot outlive it.
#[derive(Debug)]
pub(crate) struct ConsRing<M: SharedRegion> {
    page: M,
    out_prod: u32,
    in_cons: u32,
}

/// Bytes a console page must have: everything up to and including `connection`.
pub(crate) const PAGE_BYTES: usize = abi::CONNECTION + 1;

impl<M: SharedRegion> ConsRing<M> {
    /// Takes over `page` (at least [`PAGE_BYTES`] long, 4-aligned): adopts the
    /// indices found there (an earlier boot stage may have written), checked.
    pub(crate) fn attach(page: M) -> Result<ConsRing<M>, Fault> {
        let out_prod = page.shared().load_u32(abi::OUT_PROD);
        let in_cons = page.shared().load_u32(abi::IN_CONS);
        let r = ConsRing {
            page,
            out_prod,
            in_cons,
        };
        r.out_used()?;
        r.in_avail()?;
        Ok(r)
    }

    /// The page's owner.
    pub(crate) fn region(&self) -> &M {
        &self.page
    }

    /// The raw `out_cons` (progress detection).
    pub(crate) fn out_cons(&self) -> u32 {
        self.page.shared().load_u32(abi::OUT_CONS)
    }

    /// Our `out_prod`.
    #[cfg(test)]
    pub(crate) fn out_prod(&self) -> u32 {
        self.out_prod
    }

    /// Bytes written but not yet consumed by the backend, checked.
    pub(crate) fn out_used(&self) -> Result<usize, Fault> {
        let cons = self.out_cons();
        let used = self.out_prod.wrapping_sub(cons);
        if used as usize > OUT_SIZE {
            return Err(Fault::OutIndices {
                cons,
                prod: self.out_prod,
            });
        }
        Ok(used as usize)
    }

    /// Bytes of input waiting, checked (loads `in_prod` once).
    fn in_avail_at(&self) -> Result<(usize, u32), Fault> {
        let prod = self.page.shared().load_u32(abi::IN_PROD);
        let avail = prod.wrapping_sub(self.in_cons);
        if avail as usize > IN_SIZE {
            return Err(Fault::InIndices {
                cons: self.in_cons,
                prod,
            });
        }
        Ok((avail as usize, prod))
    }

    /// Bytes of input waiting, checked.
    pub(crate) fn in_avail(&self) -> Result<usize, Fault> {
        self.in_avail_at().map(|(a, _)| a)
    }

    /// Whether the backend marked the console `XENCONSOLE_DISCONNECTED`. Any other
    /// value counts as connected (a zeroed page is connected; Linux does the same).
    pub(crate) fn disconnected(&self) -> bool {
        self.page.shared().load_u8(abi::CONNECTION) == abi::DISCONNECTED
    }

    /// Copies as much of `bytes` as fits into `out[]` and publishes it; returns the
    /// count (0 when the ring is full).
    pub(crate) fn write_some(&mut self, bytes: &[u8]) -> Result<usize, Fault> {
        // The acquire load of out_cons orders our slot writes after it (io/ring.h's
        // mb() "update queue values before going on").
        let used = self.out_used()?;
        let n = min(OUT_SIZE - used, bytes.len());
        if n == 0 {
            return Ok(0);
        }
        let start = self.out_prod as usize & (OUT_SIZE - 1);
        let first = min(n, OUT_SIZE - start);
        self.page.shared().write(abi::OUT + start, &bytes[..first]);
        self.page.shared().write(abi::OUT, &bytes[first..n]);
        wmb(); // ring contents before the index
        self.out_prod = self.out_prod.wrapping_add(n as u32);
        self.page.shared().store_u32(abi::OUT_PROD, self.out_prod);
        Ok(n)
    }

    /// Copies waiting input into `buf` (once) and consumes it; returns the count.
    pub(crate) fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Fault> {
        let (avail, _) = self.in_avail_at()?; // acquire: slots read after in_prod
        let n = min(avail, buf.len());
        if n == 0 {
            return Ok(0);
        }
        let start = self.in_cons as usize & (IN_SIZE - 1);
        let first = min(n, IN_SIZE - start);
        self.page.shared().read(abi::IN + start, &mut buf[..first]);
        self.page.shared().read(abi::IN, &mut buf[first..n]);
        mb(); // read the ring before giving the slots back
        self.in_cons = self.in_cons.wrapping_add(n as u32);
        self.page.shared().store_u32(abi::IN_CONS, self.in_cons);
        Ok(n)
    }
}
