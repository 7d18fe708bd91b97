//! [`RawRing`]: one netif shared ring as a hostile backend sees it: raw indices and
//! raw slots, nothing published unless asked.

use hypercall::abi::netif::{RxRequest, RxResponse, TxRequest, TxResponse};
use hypercall::abi::ring as layout;
use hypercall::SharedMem;

use crate::HostRegion;

/// Slots in one netif ring (a one-page ring of 12- or 8-byte slots: 256).
pub const RING_SIZE: u32 = 256;
/// Bytes of one tx slot (a `netif_tx_request`).
pub const TX_SLOT: usize = 12;
/// Bytes of one rx slot (a `netif_rx_request` / `netif_rx_response`).
pub const RX_SLOT: usize = 8;

/// One shared ring (a one-page `io/ring.h` ring) seen from the backend: the
/// backend's private `req_cons` and `rsp_prod_pvt`, and raw access to every index
/// and slot. Nothing checks what the backend writes: that is the point.
#[derive(Clone, Debug)]
pub struct RawRing {
    mem: HostRegion,
    slot: usize,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

impl RawRing {
    /// The ring in `mem` (one page) with slots of `slot` bytes ([`TX_SLOT`] or
    /// [`RX_SLOT`]), as the frontend initialised it: the backend starts consuming
    /// and answering at the shared `rsp_prod` found there.
    pub fn attach(mem: HostRegion, slot: usize) -> RawRing {
        let start = mem.mem().load_u32(layout::RSP_PROD);
        RawRing {
            mem,
            slot,
            req_cons: start,
            rsp_prod_pvt: start,
        }
    }

    fn m(&self) -> SharedMem<'_> {
        self.mem.mem()
    }

    /// The ring page.
    pub fn region(&self) -> &HostRegion {
        &self.mem
    }

    /// The frontend's `req_prod`.
    pub fn req_prod(&self) -> u32 {
        self.m().load_u32(layout::REQ_PROD)
    }

    /// The shared `rsp_prod`.
    pub fn rsp_prod(&self) -> u32 {
        self.m().load_u32(layout::RSP_PROD)
    }

    /// The shared `req_event` (the backend's: "notify me past this").
    pub fn req_event(&self) -> u32 {
        self.m().load_u32(layout::REQ_EVENT)
    }

    /// The shared `rsp_event` (the frontend's).
    pub fn rsp_event(&self) -> u32 {
        self.m().load_u32(layout::RSP_EVENT)
    }

    /// Writes any value into the shared `rsp_prod` (a raw publish).
    pub fn set_rsp_prod(&self, v: u32) {
        self.m().store_u32(layout::RSP_PROD, v);
    }

    /// Writes any value into `req_event`.
    pub fn set_req_event(&self, v: u32) {
        self.m().store_u32(layout::REQ_EVENT, v);
    }

    /// Writes any value into `rsp_event` (the frontend's field: a hostile backend
    /// can write it too).
    pub fn set_rsp_event(&self, v: u32) {
        self.m().store_u32(layout::RSP_EVENT, v);
    }

    /// Requests consumed so far (free-running).
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Responses written so far (free-running; published or not).
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Requests published and not consumed yet; `Err` with the distance when
    /// `req_prod` is more than a ring ahead of `req_cons` (a broken frontend).
    pub fn pending_requests(&self) -> Result<u32, u32> {
        let n = self.req_prod().wrapping_sub(self.req_cons);
        if n > RING_SIZE {
            Err(n)
        } else {
            Ok(n)
        }
    }

    fn off(&self, idx: u32) -> usize {
        layout::HEADER_SIZE + (idx & (RING_SIZE - 1)) as usize * self.slot
    }

    /// Reads the tx slot at free-running index `idx` as a request (a private copy).
    pub fn tx_request(&self, idx: u32) -> TxRequest {
        self.m().read_obj(self.off(idx))
    }

    /// Reads the rx slot at free-running index `idx` as a request.
    pub fn rx_request(&self, idx: u32) -> RxRequest {
        self.m().read_obj(self.off(idx))
    }

    /// Writes a tx response into the slot at free-running index `idx`.
    pub fn write_tx_response(&self, idx: u32, v: &TxResponse) {
        self.m().write_obj(self.off(idx), v);
    }

    /// Writes an rx response into the slot at free-running index `idx`.
    pub fn write_rx_response(&self, idx: u32, v: &RxResponse) {
        self.m().write_obj(self.off(idx), v);
    }

    /// Takes the index of the next published request, if any (the caller reads it
    /// with [`RawRing::tx_request`] / [`RawRing::rx_request`]).
    pub fn next_request(&mut self) -> Option<u32> {
        match self.pending_requests() {
            Ok(n) if n > 0 => {
                let i = self.req_cons;
                self.req_cons = self.req_cons.wrapping_add(1);
                Some(i)
            }
            _ => None,
        }
    }

    /// The index the next response goes to, moving `rsp_prod_pvt` past it (the
    /// caller writes the slot).
    pub fn next_response(&mut self) -> u32 {
        let i = self.rsp_prod_pvt;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        i
    }

    /// Publishes every response written (`rsp_prod = rsp_prod_pvt`).
    pub fn publish(&self) {
        self.set_rsp_prod(self.rsp_prod_pvt);
    }

    /// Asks to be notified of the next request (`req_event = req_cons + 1`), as a
    /// backend does after draining the ring.
    pub fn arm_requests(&self) {
        self.set_req_event(self.req_cons.wrapping_add(1));
    }
}
