//! `blkback.*`: a raw block frontend (one-page ring, requests built by hand) and
//! the block cases.

use std::fmt::Write as _;

use hypercall::abi::blkif::{self, Request, RequestIndirect, RequestSegment, Response};
use hypercall::abi::ring as layout;
use hypercall::ring::FrontRing;

use super::*;

const ERR: i16 = blkif::RSP_ERROR;
const NOTSUP: i16 = blkif::RSP_EOPNOTSUPP;
const OK: i16 = blkif::RSP_OKAY;

/// A raw block frontend: one-page ring, every request built by hand.
struct Blk<'w> {
    w: &'w dyn FrontendWorld,
    ring_mem: SharedMem<'w>,
    ring: FrontRing<Request, Response, SharedMem<'w>>,
    ring_ref: GrantRef,
    port: Port,
    sectors: u64,
}

impl<'w> Blk<'w> {
    /// The handshake with `keys` added (or replacing ours); waits for `Connected`
    /// when `expect_connect`, else returns after publishing.
    fn connect_with(
        w: &'w dyn FrontendWorld,
        keys: &[(&str, &str)],
        expect_connect: bool,
    ) -> R<Self> {
        start(w)?;
        let page = w.alloc_page()?;
        let ring = FrontRing::<Request, Response, _>::init(page.mem).map_err(|e| e.to_string())?;
        let ring_ref = w.grant(page.frame, Grantee::Backend, false)?;
        let port = w.bind_port()?;
        let mut all = vec![
            ("ring-ref", ring_ref.0.to_string()),
            ("event-channel", port.0.to_string()),
            ("protocol", "x86_64-abi".to_string()),
        ];
        for (k, v) in keys {
            all.retain(|(kk, _)| kk != k);
            all.push((k, v.to_string()));
        }
        for (k, v) in &all {
            w.write_key(k, v.as_bytes())?;
        }
        set_state(w, st::INITIALISED)?;
        let mut b = Blk {
            w,
            ring_mem: page.mem,
            ring,
            ring_ref,
            port,
            sectors: 0,
        };
        if expect_connect {
            wait_connected(w)?;
            b.sectors = text(w.backend_key("sectors"))
                .and_then(|s| s.trim().parse().ok())
                .ok_or("the backend's `sectors` is missing or not a number")?;
        }
        Ok(b)
    }

    fn connect(w: &'w dyn FrontendWorld) -> R<Self> {
        Self::connect_with(w, &[], true)
    }

    fn push(&mut self, reqs: &[Request]) -> R<()> {
        for r in reqs {
            self.ring.push_request(r).map_err(|e| e.to_string())?;
        }
        let _ = self.ring.push_requests_and_check_notify();
        self.w.notify(self.port)
    }

    fn wait(&mut self, n: usize) -> R<Vec<Response>> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.ring.poll_response() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {
                    if !self.w.wait() {
                        return Err(format!("{} of {n} responses came", out.len()));
                    }
                }
                Err(e) => return Err(format!("the backend broke the ring: {e}")),
            }
        }
        Ok(out)
    }

    fn call(&mut self, req: Request) -> R<Response> {
        self.push(&[req])?;
        let r = self.wait(1)?.remove(0);
        if r.id != req.id {
            return Err(format!("answer for id {} to request {}", r.id, req.id));
        }
        Ok(r)
    }

    /// A read of one whole page per grant in `grefs`, from `sector` on; the status.
    fn read(&mut self, id: u64, sector: u64, grefs: &[GrantRef]) -> R<i16> {
        let segs: Vec<_> = grefs.iter().map(|g| seg(*g, 0, 7)).collect();
        Ok(self
            .call(rw(blkif::OP_READ, id, sector, &segs, None))?
            .status)
    }

    fn close(self, grefs: &[GrantRef]) -> R<()> {
        let mut all = grefs.to_vec();
        all.push(self.ring_ref);
        close(self.w, &all)
    }
}

fn seg(gref: GrantRef, first: u8, last: u8) -> RequestSegment {
    RequestSegment {
        gref: gref.0,
        first_sect: first,
        last_sect: last,
        _pad: [0; 2],
    }
}

/// A read/write request; `nr` overrides `nr_segments` (else `segs.len()`).
fn rw(op: u8, id: u64, sector: u64, segs: &[RequestSegment], nr: Option<u8>) -> Request {
    let mut r = Request {
        operation: op,
        nr_segments: nr.unwrap_or(segs.len() as u8),
        id,
        sector_number: sector,
        ..Default::default()
    };
    for (d, s) in r.seg.iter_mut().zip(segs) {
        *d = *s;
    }
    r
}

fn indirect(iop: u8, id: u64, sector: u64, nr: u16, page: GrantRef) -> Request {
    let mut r = RequestIndirect {
        operation: blkif::OP_INDIRECT,
        indirect_op: iop,
        nr_segments: nr,
        id,
        sector_number: sector,
        ..Default::default()
    };
    r.indirect_grefs[0] = page.0;
    Request::from(r)
}

/// Sends each `(what, request, allowed statuses)` and checks the answer, that the
/// operation is echoed, and that `grefs` are unmapped after each answer.
fn expect_each(b: &mut Blk<'_>, cases: &[(&str, Request, &[i16])], grefs: &[GrantRef]) -> R<usize> {
    for (what, req, want) in cases {
        let rsp = b.call(*req).map_err(|e| format!("{what}: {e}"))?;
        if !want.contains(&rsp.status) {
            return Err(format!("{what}: status {} (want {want:?})", rsp.status));
        }
        let op = if req.operation == blkif::OP_INDIRECT {
            req.as_indirect().indirect_op
        } else {
            req.operation
        };
        if rsp.operation != op {
            return Err(format!(
                "{what}: operation {} echoed as {}",
                op, rsp.operation
            ));
        }
        none_mapped(b.w, what, grefs)?;
    }
    Ok(cases.len())
}

/// A read of 8 pages' worth from the start of the disk into `page`, and the bytes.
fn snapshot(b: &mut Blk<'_>, id: u64, page: &FrontPage<'_>, g: GrantRef) -> R<Vec<u8>> {
    let mut all = Vec::new();
    for i in 0..8u64 {
        let s = b.read(id + i, i * 8, &[g])?;
        if s != OK {
            return Err(format!("a good read of sector {} got {s}", i * 8));
        }
        let mut buf = vec![0u8; PAGE_SIZE];
        page.mem.read(0, &mut buf);
        all.extend_from_slice(&buf);
    }
    Ok(all)
}

/// The neighbour: connects its own disk, writes a page, reads it back, closes.
fn blk_neighbour_ok(w: &dyn FrontendWorld) -> R<String> {
    let n = w.neighbour().map_err(|e| format!("neighbour: {e}"))?;
    let n = &*n;
    let mut b = Blk::connect(n).map_err(|e| format!("neighbour: {e}"))?;
    let p = n.alloc_page()?;
    let g = n.grant(p.frame, Grantee::Backend, false)?;
    let data: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 + 3) as u8).collect();
    p.mem.write(0, &data);
    let s = b.call(rw(blkif::OP_WRITE, 1, 8, &[seg(g, 0, 7)], None))?;
    p.mem.fill(0, PAGE_SIZE, 0);
    let r = b.read(2, 8, &[g])?;
    let mut back = vec![0u8; PAGE_SIZE];
    p.mem.read(0, &mut back);
    if s.status != OK || r != OK || back != data {
        return Err(format!(
            "the neighbour's disk: write {}, read {r}, data {}",
            s.status,
            if back == data { "same" } else { "differs" }
        ));
    }
    b.close(&[g]).map_err(|e| format!("neighbour: {e}"))?;
    Ok("neighbour's disk fine".into())
}

/// Malformed requests on one ring: each answered with its error, the grants
/// unmapped, nothing written, the ring still good after.
fn blk_malformed(w: &dyn FrontendWorld, persistent: bool) -> R<String> {
    let keys: &[(&str, &str)] = if persistent {
        &[("feature-persistent", "1")]
    } else {
        &[("feature-persistent", "0")]
    };
    let mut b = Blk::connect_with(w, keys, true)?;
    let wp = w.alloc_page()?;
    let ro = w.alloc_page()?;
    let src = w.alloc_page()?;
    let snap = w.alloc_page()?;
    let g_w = w.grant(wp.frame, Grantee::Backend, false)?;
    let g_ro = w.grant(ro.frame, Grantee::Backend, true)?;
    let g_src = w.grant(src.frame, Grantee::Backend, false)?;
    let g_snap = w.grant(snap.frame, Grantee::Backend, false)?;
    let before = snapshot(&mut b, 1000, &snap, g_snap)?;
    wp.mem.fill(0, PAGE_SIZE, 0xa5);
    ro.mem.fill(0, PAGE_SIZE, 0xa5);
    src.mem.fill(0, PAGE_SIZE, 0x5a);
    let other_page = w.alloc_page()?;
    let g_other = w.grant(other_page.frame, Grantee::NotTheBackend, false)?;
    let revoked_page = w.alloc_page()?;
    let g_revoked = w.grant(revoked_page.frame, Grantee::Backend, false)?;
    w.end_grant(g_revoked)?;
    let g_bad_frame = w.grant(Gfn(0xfff_ffff), Grantee::Backend, false)?;
    let cap = w.grant_capacity();
    let sectors = b.sectors;
    let s = |a, z| seg(g_w, a, z);
    let full = [s(0, 7); 11];
    use blkif::{OP_READ as RD, OP_WRITE as WR};
    let e: &[i16] = &[ERR];
    let unsupported: &[i16] = &[NOTSUP, ERR];
    let mut cases: Vec<(&str, Request, &[i16])> = vec![
        ("read past the end", rw(RD, 1, sectors, &[s(0, 0)], None), e),
        (
            "read straddling the end",
            rw(RD, 2, sectors.saturating_sub(1), &[s(0, 1)], None),
            e,
        ),
        (
            "write past the end",
            rw(WR, 3, sectors, &[seg(g_src, 0, 0)], None),
            e,
        ),
        (
            "write straddling the end",
            rw(
                WR,
                4,
                sectors.saturating_sub(8),
                &[seg(g_src, 0, 7); 2],
                None,
            ),
            e,
        ),
        (
            "sector * 512 overflows",
            rw(RD, 5, u64::MAX / 512 + 1, &[s(0, 0)], None),
            e,
        ),
        ("sector u64::MAX", rw(RD, 6, u64::MAX, &[s(0, 0)], None), e),
        (
            "end overflows with 11 segments",
            rw(RD, 7, u64::MAX / 512 - 40, &full, None),
            e,
        ),
        ("no segments", rw(RD, 10, 0, &[], None), e),
        ("12 segments", rw(RD, 11, 0, &full, Some(12)), e),
        ("255 segments", rw(WR, 12, 0, &full, Some(255)), e),
        ("first_sect > last_sect", rw(RD, 13, 0, &[s(5, 2)], None), e),
        ("last_sect 8", rw(RD, 14, 0, &[s(0, 8)], None), e),
        (
            "one bad segment of three",
            rw(
                WR,
                15,
                0,
                &[seg(g_src, 0, 7), seg(g_src, 3, 1), seg(g_src, 0, 7)],
                None,
            ),
            e,
        ),
        (
            "op 4 (reserved)",
            rw(blkif::OP_RESERVED_1, 20, 0, &[s(0, 0)], None),
            unsupported,
        ),
        ("op 200", rw(200, 21, 0, &[s(0, 0)], None), unsupported),
        (
            "gref outside the table",
            rw(RD, 30, 0, &[seg(GrantRef(cap), 0, 0)], None),
            e,
        ),
        (
            "gref u32::MAX",
            rw(WR, 31, 0, &[seg(GrantRef(u32::MAX), 0, 0)], None),
            e,
        ),
        (
            "reserved gref 0",
            rw(RD, 32, 0, &[seg(GrantRef(0), 0, 0)], None),
            e,
        ),
        (
            "gref granted to another domain",
            rw(RD, 33, 0, &[seg(g_other, 0, 0)], None),
            e,
        ),
        (
            "gref revoked",
            rw(WR, 34, 0, &[seg(g_revoked, 0, 0)], None),
            e,
        ),
        (
            "gref naming a frame outside RAM",
            rw(RD, 35, 0, &[seg(g_bad_frame, 0, 0)], None),
            e,
        ),
        (
            "good then bad gref",
            rw(WR, 36, 0, &[seg(g_src, 0, 7), seg(g_revoked, 0, 7)], None),
            e,
        ),
        (
            "read into a read-only grant",
            rw(RD, 40, 0, &[seg(g_ro, 0, 7)], None),
            e,
        ),
        (
            "read into good + read-only grant",
            rw(RD, 41, 0, &[s(0, 7), seg(g_ro, 0, 7)], None),
            e,
        ),
    ];
    if persistent {
        // The same bad grants once the backend holds persistent ones.
        cases.retain(|(what, ..)| !what.starts_with("op "));
    }
    let mut check: Vec<GrantRef> = vec![g_ro, g_other, g_bad_frame];
    if !persistent {
        check.extend([g_w, g_src]);
    }
    let n = expect_each(&mut b, &cases, &check)?;
    // Nothing was written to the disk or into the frontend's pages.
    let after = snapshot(&mut b, 2000, &snap, g_snap)?;
    if after != before {
        return Err("a refused write changed the disk".into());
    }
    for (name, p) in [
        ("writable", &wp),
        ("read-only", &ro),
        ("other", &other_page),
    ] {
        if !page_is(p, if name == "other" { 0 } else { 0xa5 }) {
            return Err(format!("a refused read wrote the {name} page"));
        }
    }
    // Row 10 / G6, the allowed half: a write's pages need only be readable.
    ro.mem.fill(0, PAGE_SIZE, 0x3c);
    let st = b.call(rw(WR, 50, 16, &[seg(g_ro, 0, 7)], None))?.status;
    if st != OK {
        return Err(format!("a write from a read-only grant got {st}"));
    }
    let mut grefs = vec![g_w, g_ro, g_src, g_snap, g_bad_frame, g_other];
    if !persistent {
        none_mapped(w, "after the good write", &grefs)?;
    }
    b.close(&grefs)?;
    grefs.clear();
    let good = blk_neighbour_ok(w)?;
    Ok(format!(
        "{n} malformed requests answered with errors, disk and pages untouched, \
         nothing left mapped; {good}"
    ))
}

fn blk_indirect(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    if text(w.backend_key("feature-max-indirect-segments")).is_none() {
        // Not offered: any indirect request is unsupported.
        let p = w.alloc_page()?;
        let g = w.grant(p.frame, Grantee::Backend, true)?;
        let rsp = b.call(indirect(blkif::OP_READ, 1, 0, 1, g))?;
        if ![NOTSUP, ERR].contains(&rsp.status) {
            return Err(format!(
                "an indirect request not offered got {}",
                rsp.status
            ));
        }
        b.close(&[g])?;
        return Ok(format!(
            "indirect not offered: refused with {}; {}",
            rsp.status,
            blk_neighbour_ok(w)?
        ));
    }
    let ip = w.alloc_page()?;
    let dp = w.alloc_page()?;
    let rop = w.alloc_page()?;
    let g_ind = w.grant(ip.frame, Grantee::Backend, true)?;
    let g_w = w.grant(dp.frame, Grantee::Backend, false)?;
    let g_ro = w.grant(rop.frame, Grantee::Backend, true)?;
    let g_other = w.grant(rop.frame, Grantee::NotTheBackend, true)?;
    dp.mem.fill(0, PAGE_SIZE, 0xa5);
    let write_desc = |segs: &[RequestSegment]| {
        ip.mem.fill(0, PAGE_SIZE, 0);
        for (i, s) in segs.iter().enumerate() {
            ip.mem.write_obj(i * 8, s);
        }
    };
    let good = [seg(g_w, 0, 7); 20];
    use blkif::{OP_READ as RD, OP_WRITE as WR};
    let cap = w.grant_capacity();
    let cases: Vec<(&str, Vec<RequestSegment>, Request)> = vec![
        (
            "indirect page outside the table",
            good.to_vec(),
            indirect(RD, 1, 0, 4, GrantRef(cap)),
        ),
        (
            "indirect page of another domain",
            good.to_vec(),
            indirect(RD, 2, 0, 4, g_other),
        ),
        ("no segments", good.to_vec(), indirect(RD, 3, 0, 0, g_ind)),
        (
            "65535 segments",
            good.to_vec(),
            indirect(WR, 4, 0, u16::MAX, g_ind),
        ),
        (
            "nested indirect",
            good.to_vec(),
            indirect(blkif::OP_INDIRECT, 5, 0, 4, g_ind),
        ),
        (
            "indirect op 99",
            good.to_vec(),
            indirect(99, 6, 0, 4, g_ind),
        ),
        (
            "past the end",
            good.to_vec(),
            indirect(WR, 7, b.sectors.saturating_sub(8), 4, g_ind),
        ),
        (
            "descriptor first > last",
            vec![seg(g_w, 6, 1)],
            indirect(WR, 8, 0, 1, g_ind),
        ),
        (
            "descriptor gref outside the table",
            vec![seg(g_w, 0, 7), seg(GrantRef(cap), 0, 7)],
            indirect(WR, 9, 0, 2, g_ind),
        ),
        (
            "read into a read-only descriptor page",
            vec![seg(g_ro, 0, 7)],
            indirect(RD, 10, 0, 1, g_ind),
        ),
        (
            "zeroed descriptors (gref 0)",
            vec![],
            indirect(RD, 11, 0, 3, g_ind),
        ),
    ];
    for (what, descs, req) in &cases {
        write_desc(descs);
        expect_each(
            &mut b,
            &[(what, *req, &[ERR])],
            &[g_ind, g_w, g_ro, g_other],
        )?;
    }
    if !page_is(&dp, 0xa5) {
        return Err("a refused indirect read wrote the data page".into());
    }
    write_desc(&good[..2]);
    let st = b.call(indirect(RD, 30, 8, 2, g_ind))?.status;
    if st != OK {
        return Err(format!("a good indirect read after them got {st}"));
    }
    b.close(&[g_ind, g_w, g_ro, g_other])?;
    Ok(format!(
        "{} bad indirect requests refused with ERROR, a good one after them OK; {}",
        cases.len(),
        blk_neighbour_ok(w)?
    ))
}

fn blk_overrun(w: &dyn FrontendWorld) -> R<String> {
    let mut ev = String::new();
    for bad in [5000u32, u32::MAX, 33] {
        let n = w.neighbour()?;
        let w = &*n;
        let mut b = Blk::connect(w)?;
        let p = w.alloc_page()?;
        let g = w.grant(p.frame, Grantee::Backend, false)?;
        if b.read(1, 0, &[g])? != OK {
            return Err("a good read before the overrun failed".into());
        }
        for id in 0..32 {
            b.ring
                .push_request(&rw(blkif::OP_WRITE, id, 0, &[seg(g, 0, 7)], None))
                .map_err(|e| e.to_string())?;
        }
        let prod = b.ring.req_prod_pvt().wrapping_sub(32).wrapping_add(bad);
        b.ring_mem.store_u32(layout::REQ_PROD, prod);
        w.notify(b.port)?;
        let err = wait_refused(w).map_err(|e| format!("req_prod +{bad}: {e}"))?;
        release(w, &[g, b.ring_ref]).map_err(|e| format!("req_prod +{bad}: {e}"))?;
        let _ = write!(ev, "req_prod +{bad}: closed ({err}); ");
        set_state(w, st::CLOSED)?;
    }
    Ok(format!(
        "{ev}ring and data unmapped; {}",
        blk_neighbour_ok(w)?
    ))
}

fn blk_events(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    let p = w.alloc_page()?;
    let g = w.grant(p.frame, Grantee::Backend, false)?;
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n = 0;
    for id in 0..60u64 {
        b.ring_mem.store_u32(layout::REQ_EVENT, next() as u32);
        b.ring_mem.store_u32(layout::RSP_EVENT, next() as u32);
        let k = 1 + (next() % 3) as usize;
        let reqs: Vec<_> = (0..k)
            .map(|j| {
                rw(
                    blkif::OP_READ,
                    id * 4 + j as u64,
                    (next() % 64) * 8,
                    &[seg(g, 0, 7)],
                    None,
                )
            })
            .collect();
        b.push(&reqs)?;
        b.ring_mem.store_u32(layout::RSP_EVENT, next() as u32);
        let rsps = b.wait(k)?;
        if let Some(r) = rsps.iter().find(|r| r.status != OK) {
            return Err(format!("request {} got {}", r.id, r.status));
        }
        n += k;
    }
    b.close(&[g])?;
    Ok(format!(
        "{n} reads all answered OKAY with garbage event indices"
    ))
}

fn blk_connect_keys(w: &dyn FrontendWorld) -> R<String> {
    let bad: [(&str, &str); 7] = [
        ("ring-ref", "0x10"),
        ("ring-ref", "4294967296"),
        ("event-channel", "4294967296"),
        ("event-channel", "-1"),
        ("ring-page-order", "30"),
        ("multi-queue-num-queues", "0"),
        ("multi-queue-num-queues", "18446744073709551616"),
    ];
    let mut ev = Vec::new();
    for (k, v) in bad {
        let n = w.neighbour()?;
        let w = &*n;
        let b = Blk::connect_with(w, &[(k, v)], false)?;
        let err = wait_refused(w).map_err(|e| format!("{k} = {v}: {e}"))?;
        release(w, &[b.ring_ref]).map_err(|e| format!("{k} = {v}: {e}"))?;
        ev.push(format!("{k}={v}: {}", err.trim()));
    }
    Ok(format!("{}; {}", ev.join("; "), blk_neighbour_ok(w)?))
}

fn blk_closing_in_flight(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    let mut grefs = Vec::new();
    let mut reqs = Vec::new();
    for id in 0..16u64 {
        let p = w.alloc_page()?;
        let g = w.grant(p.frame, Grantee::Backend, false)?;
        grefs.push(g);
        reqs.push(rw(blkif::OP_READ, id, id * 8, &[seg(g, 0, 7)], None));
    }
    b.push(&reqs)?;
    set_state(w, st::CLOSING)?;
    until(w, "the backend's Closing or Closed", || {
        matches!(backend_state(w), Some(st::CLOSING | st::CLOSED))
    })?;
    set_state(w, st::CLOSED)?;
    grefs.push(b.ring_ref);
    release(w, &grefs)?;
    // A reconnect on the same device works (starting again from `Initialising`).
    let mut b2 = Blk::connect(w)?;
    let p = w.alloc_page()?;
    let g = w.grant(p.frame, Grantee::Backend, false)?;
    let s = b2.read(100, 0, &[g])?;
    if s != OK {
        return Err(format!("a read after reconnecting got {s}"));
    }
    b2.close(&[g])?;
    Ok(
        "closed with 16 reads in flight: every grant unmapped and ended; reconnect reads OKAY"
            .into(),
    )
}

/// The `blkback.*` cases.
pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "blkback.malformed_requests (B*, G6, row 10)",
            class: Class::Blk,
            front: "sends out-of-range and overflowing sectors, 0/12/255 segments, bad sector \
                bounds, unknown operations, bad grant refs (outside the table, 0, revoked, \
                another domain's, a frame outside RAM) and reads into a read-only grant",
            expect: "each answered ERROR (EOPNOTSUPP allowed for unknown operations) with its \
                 operation echoed; no grant left mapped after an answer; disk and pages \
                 unchanged; a write from a read-only grant works; others unaffected",
            run: |w| blk_malformed(w, false),
        },
        Case {
            name: "blkback.malformed_persistent (B*, G6)",
            class: Class::Blk,
            front: "the same bad requests with `feature-persistent = 1`",
            expect: "the same errors; nothing of the bad grants mapped; all unmapped at close",
            run: |w| blk_malformed(w, true),
        },
        Case {
            name: "blkback.indirect (B8)",
            class: Class::Blk,
            front: "indirect requests with a bad indirect page, 0 or 65535 segments, nested or \
                unknown operations, bad descriptors",
            expect: "each answered ERROR carrying its indirect operation; a good one after works",
            run: blk_indirect,
        },
        Case {
            name: "blkback.req_prod_overrun (rows 1-2)",
            class: Class::Blk,
            front: "publishes req_prod 5000, 2^32-1 or 33 past the backend's consumer",
            expect: "that disk closed with an `error` node, nothing of it run, ring and data \
                 unmapped; others unaffected",
            run: blk_overrun,
        },
        Case {
            name: "blkback.garbage_event_indices (row 5)",
            class: Class::Blk,
            front: "scribbles req_event and rsp_event with random values around every request",
            expect: "every request still answered OKAY",
            run: blk_events,
        },
        Case {
            name: "blkback.bad_connect_keys (row 12, B8)",
            class: Class::Blk,
            front: "connects with ring-ref `0x10` or 2^32, event-channel 2^32 or -1, \
                ring-page-order 30, 0 or 2^64 queues",
            expect: "that disk refused (Closing + `error`), nothing mapped; others unaffected",
            run: blk_connect_keys,
        },
        Case {
            name: "blkback.closing_in_flight (row 15)",
            class: Class::Blk,
            front: "moves to Closing right after publishing 16 reads",
            expect: "the backend closes, unmaps every grant (all can be ended); a reconnect \
                 on the same device reads OKAY",
            run: blk_closing_in_flight,
        },
    ]
}
