//! The two byte rings of the store page (`struct xenstore_domain_interface`).
//!
//! We produce requests and consume responses, so we keep private copies of the two
//! indices we own (`req_prod`, `rsp_cons`) and only ever *read* the other side's
//! (`req_cons`, `rsp_prod`), checking each against ours before use: a distance of more
//! than the ring size is a protocol error (docs/hostile-input.md row 29). Barriers follow Linux's
//! `xenbus_comms.c`: `wmb` between copying request bytes and publishing `req_prod`,
//! `rmb` between reading `rsp_prod` and the bytes, `mb` before publishing `rsp_cons`.

use hypercall::abi::xs_wire::{iface, RING_SIZE, SERVER_FEATURE_ERROR};
use hypercall::shmem::{mb, rmb, wmb};
use hypercall::{Gfn, SharedMem};

use crate::error::ProtocolError;

const MASK: u32 = RING_SIZE as u32 - 1;

/// The store page's rings, from the guest's side: the page's frame and our
/// private indices. The page itself is mapped through the platform for each use
/// ([`hypercall::SharedMem::map_gfn`]), so the client never holds a region that
/// could outlive the platform's mapping; every method takes that region.
pub(crate) struct StoreRing {
    pub(crate) gfn: Gfn,
    req_prod: u32,
    rsp_cons: u32,
}

impl StoreRing {
    /// Takes over the rings on `mem` (at least [`iface::ERROR`] + 4 bytes). Responses
    /// left in the ring by an earlier user cannot be matched to anything and are
    /// skipped, as Linux does at boot.
    pub(crate) fn new(gfn: Gfn, mem: SharedMem<'_>) -> StoreRing {
        let req_prod = mem.load_u32(iface::REQ_PROD);
        let rsp_prod = mem.load_u32(iface::RSP_PROD);
        mem.store_u32(iface::RSP_CONS, rsp_prod);
        StoreRing {
            gfn,
            req_prod,
            rsp_cons: rsp_prod,
        }
    }

    /// A xenstored that supports the `error` field sets it when it fails the
    /// connection (docs/hostile-input.md X8); unknown feature bits are ignored.
    fn server_error(&self, mem: SharedMem<'_>) -> Result<(), ProtocolError> {
        if mem.load_u32(iface::SERVER_FEATURES) & SERVER_FEATURE_ERROR == 0 {
            return Ok(());
        }
        match mem.load_u32(iface::ERROR) {
            0 => Ok(()),
            code => Err(ProtocolError::ServerError { code }),
        }
    }

    /// Free bytes in the request ring.
    pub(crate) fn req_space(&self, mem: SharedMem<'_>) -> Result<usize, ProtocolError> {
        self.server_error(mem)?;
        let cons = mem.load_u32(iface::REQ_CONS);
        let used = self.req_prod.wrapping_sub(cons) as usize;
        if used > RING_SIZE {
            return Err(ProtocolError::ReqIndex {
                cons,
                prod: self.req_prod,
            });
        }
        Ok(RING_SIZE - used)
    }

    /// Copies as much of `data` as fits into the request ring and publishes it.
    /// Returns the number of bytes written.
    pub(crate) fn write_some(
        &mut self,
        mem: SharedMem<'_>,
        data: &[u8],
    ) -> Result<usize, ProtocolError> {
        let n = self.req_space(mem)?.min(data.len());
        if n == 0 {
            return Ok(0);
        }
        let off = (self.req_prod & MASK) as usize;
        let first = n.min(RING_SIZE - off);
        mem.write(iface::REQ + off, &data[..first]);
        mem.write(iface::REQ, &data[first..n]);
        wmb();
        self.req_prod = self.req_prod.wrapping_add(n as u32);
        mem.store_u32(iface::REQ_PROD, self.req_prod);
        Ok(n)
    }

    /// Bytes xenstored has published and we have not consumed.
    pub(crate) fn rsp_avail(&self, mem: SharedMem<'_>) -> Result<usize, ProtocolError> {
        self.server_error(mem)?;
        let prod = mem.load_u32(iface::RSP_PROD);
        rmb();
        let avail = prod.wrapping_sub(self.rsp_cons) as usize;
        if avail > RING_SIZE {
            return Err(ProtocolError::RspIndex {
                cons: self.rsp_cons,
                prod,
            });
        }
        Ok(avail)
    }

    /// Copies up to `buf.len()` available response bytes out (once) and consumes them.
    pub(crate) fn read_some(
        &mut self,
        mem: SharedMem<'_>,
        buf: &mut [u8],
    ) -> Result<usize, ProtocolError> {
        let n = self.rsp_avail(mem)?.min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let off = (self.rsp_cons & MASK) as usize;
        let first = n.min(RING_SIZE - off);
        mem.read(iface::RSP + off, &mut buf[..first]);
        mem.read(iface::RSP, &mut buf[first..n]);
        mb();
        self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
        mem.store_u32(iface::RSP_CONS, self.rsp_cons);
        Ok(n)
    }
}
