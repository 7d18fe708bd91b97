//! The store-ring server: one guest's `struct xenstore_domain_interface` page
//! (`io/xs_wire.h`, docs/misc/xenstore-ring.txt).
//!
//! The page is guest memory: indices are read with atomics, bytes are copied out once
//! (`SharedMem`), and everything is checked before use. Our own indices (`req_cons`,
//! `rsp_prod`) are kept privately and published; the guest's (`req_prod`, `rsp_cons`)
//! are read each time and must stay within one ring size of ours, else the connection
//! is failed with `XENSTORE_ERROR_RINGIDX`. A header announcing more than
//! `XENSTORE_PAYLOAD_MAX` bytes fails it with `XENSTORE_ERROR_PROTO`. A failed
//! connection loses its watches, transactions and queued output and is ignored until
//! the guest asks for a reconnect (`connection = 1`, both features are advertised).
//!
//! Replies never overwrite unconsumed response bytes: what does not fit waits in the
//! connection's queue. Requests are not read while `outstanding` replies wait there
//! (C xenstored's request quota), and one service round handles a bounded number of
//! requests, so a busy guest cannot starve the others.

use super::engine::{decode_header, ConnKind, State};
use super::{ConnId, Xenstored};
use hypercall::abi::xs_wire::{
    iface, MsgHeader, CONNECTED, ERROR_PROTO, ERROR_RINGIDX, PAYLOAD_MAX, RECONNECT, RING_SIZE,
    SERVER_FEATURE_ERROR, SERVER_FEATURE_RECONNECTION,
};
use hypercall::shmem::{mb, rmb, wmb};
use hypercall::SharedRegion;
use std::sync::Arc;

/// Requests handled per service round before other domains get a turn.
const REQUESTS_PER_ROUND: usize = 32;

/// Server state of one guest's ring.
pub(crate) struct RingConn {
    /// The page's owner (whatever keeps it mapped), lending it out per access.
    mem: Box<dyn SharedRegion + Send>,
    pub notify: Arc<dyn Fn() + Send + Sync>,
    req_cons: u32,
    rsp_prod: u32,
    /// A partly received message (header, then payload).
    inbuf: Vec<u8>,
    /// A partly sent message and how much of it is out.
    outbuf: Option<(Vec<u8>, usize)>,
    /// Set once the connection failed (the error code written to the page).
    pub broken: Option<u32>,
}

impl RingConn {
    /// Takes over a store page. Returns `None` if it is too small or misaligned.
    pub fn new(
        page: Box<dyn SharedRegion + Send>,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> Option<Self> {
        let mem = page.shared();
        if mem.len() < hypercall::PAGE_SIZE || !(mem.as_ptr() as usize).is_multiple_of(4) {
            return None;
        }
        mem.store_u32(
            iface::SERVER_FEATURES,
            SERVER_FEATURE_RECONNECTION | SERVER_FEATURE_ERROR,
        );
        mem.store_u32(iface::ERROR, 0);
        let req_cons = mem.load_u32(iface::REQ_CONS);
        let rsp_prod = mem.load_u32(iface::RSP_PROD);
        // The guest need not start at 0, but what it left must be consistent.
        let req_prod = mem.load_u32(iface::REQ_PROD);
        let rsp_cons = mem.load_u32(iface::RSP_CONS);
        let mut r = RingConn {
            mem: page,
            notify,
            req_cons,
            rsp_prod,
            inbuf: Vec::new(),
            outbuf: None,
            broken: None,
        };
        if req_prod.wrapping_sub(req_cons) as usize > RING_SIZE
            || rsp_prod.wrapping_sub(rsp_cons) as usize > RING_SIZE
        {
            r.fail(ERROR_RINGIDX);
        }
        Some(r)
    }

    fn fail(&mut self, code: u32) {
        self.broken = Some(code);
        self.inbuf.clear();
        self.outbuf = None;
        self.mem.shared().store_u32(iface::ERROR, code);
    }

    /// Reads request bytes until one message is complete (`Ok(Some)`), the ring is
    /// empty (`Ok(None)`), or the guest broke the protocol (`Err(code)`).
    /// `consumed` is set when bytes were taken off the ring.
    fn pull(&mut self, consumed: &mut bool) -> Result<Option<(MsgHeader, Vec<u8>)>, u32> {
        let mut chunk = [0u8; RING_SIZE];
        // Borrowed from the owner once for the whole call (one dynamic call).
        let mem = self.mem.shared();
        loop {
            let want = if self.inbuf.len() < 16 {
                16 - self.inbuf.len()
            } else {
                let mut raw = [0u8; 16];
                raw.copy_from_slice(self.inbuf.get(..16).unwrap_or(&[0; 16]));
                let hdr = decode_header(&raw);
                let total = 16 + hdr.len as usize;
                if self.inbuf.len() >= total {
                    let payload = self.inbuf.split_off(16);
                    self.inbuf.clear();
                    return Ok(Some((hdr, payload)));
                }
                total - self.inbuf.len()
            };
            let prod = mem.load_u32(iface::REQ_PROD);
            let avail = prod.wrapping_sub(self.req_cons) as usize;
            if avail > RING_SIZE {
                return Err(ERROR_RINGIDX);
            }
            if avail == 0 {
                return Ok(None);
            }
            rmb();
            let off = self.req_cons as usize & (RING_SIZE - 1);
            let n = want.min(avail).min(RING_SIZE - off);
            let buf = chunk.get_mut(..n).unwrap_or(&mut []);
            mem.read(iface::REQ + off, buf);
            self.inbuf.extend_from_slice(buf);
            mb();
            self.req_cons = self.req_cons.wrapping_add(n as u32);
            mem.store_u32(iface::REQ_CONS, self.req_cons);
            *consumed = true;
            if self.inbuf.len() == 16 {
                let mut raw = [0u8; 16];
                raw.copy_from_slice(&self.inbuf);
                if decode_header(&raw).len as usize > PAYLOAD_MAX {
                    return Err(ERROR_PROTO);
                }
            }
        }
    }

    /// Writes as much of `outbuf` as fits. Returns whether anything was written and
    /// whether `outbuf` is finished.
    fn push(&mut self) -> Result<(bool, bool), u32> {
        let mut wrote = false;
        let Some((bytes, mut pos)) = self.outbuf.take() else {
            return Ok((false, true));
        };
        let mem = self.mem.shared();
        while pos < bytes.len() {
            let cons = mem.load_u32(iface::RSP_CONS);
            let used = self.rsp_prod.wrapping_sub(cons) as usize;
            if used > RING_SIZE {
                return Err(ERROR_RINGIDX);
            }
            let free = RING_SIZE - used;
            if free == 0 {
                break;
            }
            mb();
            let off = self.rsp_prod as usize & (RING_SIZE - 1);
            let n = free.min(RING_SIZE - off).min(bytes.len() - pos);
            mem.write(iface::RSP + off, bytes.get(pos..pos + n).unwrap_or(&[]));
            wmb();
            self.rsp_prod = self.rsp_prod.wrapping_add(n as u32);
            mem.store_u32(iface::RSP_PROD, self.rsp_prod);
            pos += n;
            wrote = true;
        }
        let done = pos >= bytes.len();
        if !done {
            self.outbuf = Some((bytes, pos));
        }
        Ok((wrote, done))
    }

    /// Whether the guest asked for a reconnect.
    fn reconnect_requested(&self) -> bool {
        self.mem.shared().load_u32(iface::CONNECTION) == RECONNECT
    }

    /// Resets the ring to its initial state (docs/misc/xenstore-ring.txt).
    fn reset(&mut self) {
        self.inbuf.clear();
        self.outbuf = None;
        self.broken = None;
        self.req_cons = 0;
        self.rsp_prod = 0;
        for off in iface::RING_INDICES {
            self.mem.shared().store_u32(off, 0);
        }
        self.mem.shared().store_u32(iface::ERROR, 0);
        mb();
        self.mem.shared().store_u32(iface::CONNECTION, CONNECTED);
    }
}

/// What one service round wants done after the lock is released.
pub(crate) struct Serviced {
    /// Signal the guest.
    pub notify: Option<Arc<dyn Fn() + Send + Sync>>,
    /// More requests are waiting: service again.
    pub again: bool,
}

fn ring_of(st: &mut State, cid: ConnId) -> Option<&mut RingConn> {
    match &mut st.conns.get_mut(&cid)?.kind {
        ConnKind::Ring(r) => Some(r),
        _ => None,
    }
}

/// Fails a ring connection: error code on the page, watches/transactions/output gone.
fn fail(st: &mut State, cid: ConnId, code: u32) {
    if let Some(r) = ring_of(st, cid) {
        r.fail(code);
    }
    st.reset_conn(cid);
    if let Some(c) = st.conns.get_mut(&cid) {
        c.clear_out();
    }
}

/// Sends queued output of `cid`; returns whether anything was written.
fn flush(st: &mut State, cid: ConnId) -> bool {
    let mut wrote = false;
    loop {
        let Some(conn) = st.conns.get_mut(&cid) else {
            return wrote;
        };
        let need =
            matches!(&conn.kind, ConnKind::Ring(r) if r.outbuf.is_none() && r.broken.is_none());
        if need {
            match conn.pop_out() {
                Some(bytes) => {
                    if let ConnKind::Ring(r) = &mut conn.kind {
                        r.outbuf = Some((bytes, 0));
                    }
                }
                None => return wrote,
            }
        }
        let ConnKind::Ring(r) = &mut conn.kind else {
            return wrote;
        };
        if r.broken.is_some() {
            return wrote;
        }
        match r.push() {
            Ok((w, done)) => {
                wrote |= w;
                if !done {
                    return wrote;
                }
            }
            Err(code) => {
                fail(st, cid, code);
                return true;
            }
        }
    }
}

/// One service round for `domid`'s ring.
pub(crate) fn service(st: &mut State, domid: u16) -> Serviced {
    let mut out = Serviced {
        notify: None,
        again: false,
    };
    let Some(&cid) = st.domains.get(&domid) else {
        return out;
    };
    let Some(r) = ring_of(st, cid) else {
        return out;
    };
    let notify = r.notify.clone();
    if r.reconnect_requested() {
        r.reset();
        st.reset_conn(cid);
        if let Some(c) = st.conns.get_mut(&cid) {
            c.clear_out();
        }
        out.notify = Some(notify);
        return out;
    }
    if r.broken.is_some() {
        return out;
    }
    let mut signal = flush(st, cid);
    // dom0 is exempt from the quota, but not from a bound.
    let outstanding = if domid == 0 {
        (st.quotas.outstanding as usize).max(super::SOCKET_OUTSTANDING)
    } else {
        (st.quotas.outstanding as usize).max(1)
    };
    let mut handled = 0;
    while let Some(conn) = st.conns.get_mut(&cid) {
        if conn.replies_queued >= outstanding {
            break;
        }
        let ConnKind::Ring(r) = &mut conn.kind else {
            break;
        };
        if r.broken.is_some() {
            break;
        }
        let mut consumed = false;
        let pulled = r.pull(&mut consumed);
        signal |= consumed;
        match pulled {
            Ok(Some((hdr, payload))) => {
                st.process(cid, &hdr, &payload, true);
                signal |= flush(st, cid);
                handled += 1;
                if handled >= REQUESTS_PER_ROUND {
                    out.again = true;
                    break;
                }
            }
            Ok(None) => break,
            Err(code) => {
                fail(st, cid, code);
                signal = true;
                break;
            }
        }
    }
    signal |= flush(st, cid);
    // Our own output has just been flushed; no need to come back for it.
    st.actions.kick.retain(|&d| d != domid);
    if signal {
        out.notify = Some(notify);
    }
    out
}

impl Xenstored {
    /// Serves `domid`'s ring once (from the worker thread).
    pub(crate) fn service_ring(&self, domid: u16) {
        let (done, actions) = {
            let mut st = self.lock();
            let done = service(&mut st, domid);
            (done, core::mem::take(&mut st.actions))
        };
        self.run(actions);
        if let Some(n) = done.notify {
            n();
        }
        if done.again {
            self.kick(domid);
        }
    }
}
