//! `blkback.*`: a raw block frontend (one-page ring, requests built by hand) and
//! the block cases.

use std::fmt::Write as _;

use hypercall::abi::blkif::{self, Request, RequestSegment, Response};
use hypercall::abi::ring as layout;
use hypercall::ring::FrontRing;

use super::requests::{discard, indirect, rw, segment as seg};
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
        let port = w.bind_port(Grantee::Backend)?;
        let ours = [
            ("ring-ref", ring_ref.0.to_string()),
            ("event-channel", port.0.to_string()),
            ("protocol", "x86_64-abi".to_string()),
        ];
        write_keys(w, &ours, keys)?;
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

/// The sectors [`snapshot`] reads: the first 64 and the last 16.
fn snapshot_sectors(sectors: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..8).map(|i| i * 8).collect();
    if sectors >= 80 {
        v.extend([sectors - 16, sectors - 8]);
    }
    v
}

/// Reads the first 64 sectors and the last 16 through `page`, and returns them (to
/// show later that refused writes changed nothing); the reads' ids count up from
/// `first_id`.
fn snapshot(b: &mut Blk<'_>, first_id: u64, page: &FrontPage<'_>, g: GrantRef) -> R<Vec<u8>> {
    let mut all = Vec::new();
    for (s, id) in snapshot_sectors(b.sectors).into_iter().zip(first_id..) {
        let st = b.read(id, s, &[g])?;
        if st != OK {
            return Err(format!("a good read of sector {s} got {st}"));
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
    // Bytes 0..=255 over and over: not what the image holds at sector 8.
    let data: Vec<u8> = (0..PAGE_SIZE).map(|i| i as u8).collect();
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

/// Whether the backend offers `feature-<name>` (its value is 1).
fn offers(w: &dyn FrontendWorld, name: &str) -> bool {
    text(w.backend_key(&format!("feature-{name}"))).is_some_and(|v| v.trim() == "1")
}

/// Malformed requests on one ring: each answered with its error, the grants
/// unmapped, nothing written, the ring still good after.
fn blk_malformed(w: &dyn FrontendWorld, persistent: bool) -> R<String> {
    let keys: &[(&str, &str)] = &[("feature-persistent", if persistent { "1" } else { "0" })];
    let mut b = Blk::connect_with(w, keys, true)?;
    let wp = w.alloc_page()?;
    let ro = w.alloc_page()?;
    let src = w.alloc_page()?;
    let snap = w.alloc_page()?;
    let g_w = w.grant(wp.frame, Grantee::Backend, false)?;
    let g_ro = w.grant(ro.frame, Grantee::Backend, true)?;
    let g_src = w.grant(src.frame, Grantee::Backend, false)?;
    let g_snap = w.grant(snap.frame, Grantee::Backend, false)?;
    let mut before = snapshot(&mut b, 1000, &snap, g_snap)?;
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
    use blkif::{OP_READ as RD, OP_WRITE as WR, OP_WRITE_BARRIER as BAR};
    let e: &[i16] = &[ERR];
    let unsupported: &[i16] = &[NOTSUP, ERR];
    let (discard_st, barrier_st) = (
        if offers(w, "discard") { e } else { unsupported },
        if offers(w, "barrier") { e } else { unsupported },
    );
    let cases: Vec<(&str, Request, &[i16])> = vec![
        // Range.
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
        (
            "write end overflows",
            rw(WR, 8, u64::MAX / 512, &[seg(g_src, 0, 7)], None),
            e,
        ),
        // Segments.
        ("no segments", rw(RD, 10, 0, &[], None), e),
        ("12 segments", rw(RD, 11, 0, &full, Some(12)), e),
        ("255 segments", rw(WR, 12, 0, &full, Some(255)), e),
        ("first_sect > last_sect", rw(RD, 13, 0, &[s(5, 2)], None), e),
        ("last_sect 8", rw(RD, 14, 0, &[s(0, 8)], None), e),
        (
            "last_sect 255",
            rw(WR, 15, 0, &[seg(g_src, 255, 255)], None),
            e,
        ),
        (
            "one bad segment of three",
            rw(
                WR,
                16,
                0,
                &[seg(g_src, 0, 7), seg(g_src, 3, 1), seg(g_src, 0, 7)],
                None,
            ),
            e,
        ),
        // Operations.
        (
            "op 4 (reserved)",
            rw(blkif::OP_RESERVED_1, 20, 0, &[s(0, 0)], None),
            unsupported,
        ),
        ("op 7", rw(7, 21, 0, &[s(0, 0)], None), unsupported),
        ("op 200", rw(200, 22, 0, &[s(0, 0)], None), unsupported),
        (
            "op 255, no segments",
            rw(255, 23, 0, &[], Some(0)),
            unsupported,
        ),
        // Grants.
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
        // Row 10 / G6: reading from disk into a page granted read-only.
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
        // Discard and barrier-with-data out of range (or not offered at all).
        (
            "discard past the end",
            discard(80, sectors.saturating_sub(8), 16),
            discard_st,
        ),
        (
            "discard start overflows",
            discard(81, u64::MAX / 512 + 1, 1),
            discard_st,
        ),
        (
            "discard length overflows",
            discard(82, 0, u64::MAX),
            discard_st,
        ),
        (
            "discard end overflows",
            discard(83, u64::MAX / 1024, u64::MAX / 1024),
            discard_st,
        ),
        (
            "barrier with 12 segments",
            rw(BAR, 84, 0, &full, Some(12)),
            barrier_st,
        ),
        (
            "barrier with data past the end",
            rw(BAR, 85, sectors, &[seg(g_src, 0, 0)], None),
            barrier_st,
        ),
        (
            "barrier with a bad segment",
            rw(BAR, 86, 0, &[seg(g_src, 4, 0)], None),
            barrier_st,
        ),
        (
            "barrier with a revoked page",
            rw(BAR, 87, 0, &[seg(g_revoked, 0, 7)], None),
            barrier_st,
        ),
    ];
    let mut check: Vec<GrantRef> = vec![g_ro, g_other, g_bad_frame];
    if !persistent {
        check.extend([g_w, g_src]);
    }
    let n = expect_each(&mut b, &cases, &check)?;
    // Nothing was written to the disk or into the frontend's pages.
    let after = snapshot(&mut b, 2000, &snap, g_snap)?;
    if after != before {
        let at = after.iter().zip(&before).position(|(a, z)| a != z);
        return Err(format!(
            "a refused write changed the disk (snapshot byte {at:?})"
        ));
    }
    for (name, p, byte) in [
        ("writable", &wp, 0xa5),
        ("read-only", &ro, 0xa5),
        ("other domain's", &other_page, 0),
        ("revoked", &revoked_page, 0),
    ] {
        if !page_is(p, byte) {
            return Err(format!("a refused read wrote the {name} page"));
        }
    }
    // Row 10 / G6, the allowed half: a write's pages need only be readable.
    ro.mem.fill(0, PAGE_SIZE, 0x3c);
    let st = b.call(rw(WR, 50, 16, &[seg(g_ro, 0, 7)], None))?.status;
    if st != OK {
        return Err(format!("a write from a read-only grant got {st}"));
    }
    before[2 * PAGE_SIZE..3 * PAGE_SIZE].fill(0x3c);
    // Duplicate ids: each request is answered once, on its own merits.
    b.push(&[
        rw(RD, 60, 0, &[s(0, 7)], None),
        rw(RD, 60, sectors, &[s(0, 7)], None),
        rw(WR, 60, 24, &[seg(g_src, 0, 7)], None),
        rw(RD, 60, 8, &[s(0, 3)], None),
    ])?;
    let mut rsps = b.wait(4)?;
    rsps.sort_by_key(|r| r.status);
    let st: Vec<(u64, i16)> = rsps.iter().map(|r| (r.id, r.status)).collect();
    if st != [(60, ERR), (60, OK), (60, OK), (60, OK)] {
        return Err(format!("four requests with id 60 answered {st:?}"));
    }
    before[3 * PAGE_SIZE..4 * PAGE_SIZE].fill(0x5a);
    let after = snapshot(&mut b, 3000, &snap, g_snap)?;
    if after != before {
        return Err("the good writes after the bad ones did not land as written".into());
    }
    let grefs = [g_w, g_ro, g_src, g_snap, g_bad_frame, g_other];
    if !persistent {
        none_mapped(w, "after the good requests", &grefs)?;
    }
    b.close(&grefs)?;
    let good = blk_neighbour_ok(w)?;
    Ok(format!(
        "{n} malformed requests answered with errors, disk and pages untouched, \
         duplicate ids answered once each, nothing left mapped; {good}"
    ))
}

fn blk_indirect(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    let Some(max) = text(w.backend_key("feature-max-indirect-segments"))
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|&m| m > 0)
    else {
        // Not offered: any indirect request is unsupported.
        let p = w.alloc_page()?;
        let g = w.grant(p.frame, Grantee::Backend, true)?;
        let rsp = b.call(indirect(blkif::OP_READ, 1, 0, 1, &[g]))?;
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
    };
    let ip = w.alloc_page()?;
    let dp = w.alloc_page()?;
    let rop = w.alloc_page()?;
    let g_ind = w.grant(ip.frame, Grantee::Backend, true)?;
    let g_w = w.grant(dp.frame, Grantee::Backend, false)?;
    let g_ro = w.grant(rop.frame, Grantee::Backend, true)?;
    let g_other = w.grant(rop.frame, Grantee::NotTheBackend, true)?;
    let g_revoked = w.grant(ip.frame, Grantee::Backend, true)?;
    w.end_grant(g_revoked)?;
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
    let over = max
        .saturating_add(1)
        .min(blkif::SEGS_PER_INDIRECT_FRAME as u16);
    let cases: Vec<(&str, Vec<RequestSegment>, Request)> = vec![
        (
            "indirect page revoked",
            good.to_vec(),
            indirect(RD, 1, 0, 4, &[g_revoked]),
        ),
        (
            "indirect page outside the table",
            good.to_vec(),
            indirect(RD, 2, 0, 4, &[GrantRef(cap)]),
        ),
        (
            "indirect page of another domain",
            good.to_vec(),
            indirect(RD, 3, 0, 4, &[g_other]),
        ),
        (
            "no segments",
            good.to_vec(),
            indirect(RD, 4, 0, 0, &[g_ind]),
        ),
        (
            "one segment more than offered",
            vec![seg(g_w, 0, 7); usize::from(over)],
            indirect(RD, 5, 0, over, &[g_ind]),
        ),
        (
            "65535 segments",
            good.to_vec(),
            indirect(WR, 6, 0, u16::MAX, &[g_ind]),
        ),
        (
            "nested indirect",
            good.to_vec(),
            indirect(blkif::OP_INDIRECT, 7, 0, 4, &[g_ind]),
        ),
        (
            "indirect flush",
            good.to_vec(),
            indirect(blkif::OP_FLUSH_DISKCACHE, 8, 0, 4, &[g_ind]),
        ),
        (
            "indirect op 99",
            good.to_vec(),
            indirect(99, 9, 0, 4, &[g_ind]),
        ),
        (
            "past the end",
            good.to_vec(),
            indirect(WR, 10, b.sectors.saturating_sub(8), 4, &[g_ind]),
        ),
        (
            "overflow",
            good.to_vec(),
            indirect(RD, 11, u64::MAX / 512 - 10, 20, &[g_ind]),
        ),
        (
            "descriptor first > last",
            vec![seg(g_w, 0, 7), seg(g_w, 6, 1)],
            indirect(WR, 12, 0, 2, &[g_ind]),
        ),
        (
            "descriptor last_sect 9",
            vec![seg(g_w, 0, 9)],
            indirect(RD, 13, 0, 1, &[g_ind]),
        ),
        (
            "descriptor gref revoked",
            vec![seg(g_w, 0, 7), seg(g_revoked, 0, 7)],
            indirect(WR, 14, 0, 2, &[g_ind]),
        ),
        (
            "descriptor gref outside the table",
            vec![seg(GrantRef(cap), 0, 7)],
            indirect(RD, 15, 0, 1, &[g_ind]),
        ),
        (
            "read into a read-only descriptor page",
            vec![seg(g_ro, 0, 7)],
            indirect(RD, 16, 0, 1, &[g_ind]),
        ),
        (
            "zeroed descriptors (gref 0)",
            vec![],
            indirect(RD, 17, 0, 3, &[g_ind]),
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
    let st = b.call(indirect(RD, 30, 8, 2, &[g_ind]))?.status;
    if st != OK {
        return Err(format!("a good indirect read after them got {st}"));
    }
    none_mapped(w, "the good indirect read", &[g_ind, g_w])?;
    b.close(&[g_ind, g_w, g_ro, g_other])?;
    Ok(format!(
        "{} bad indirect requests refused with ERROR and the indirect operation, a \
         good one after them OK; {}",
        cases.len(),
        blk_neighbour_ok(w)?
    ))
}

/// A raw sibling disk of the same domain still reads.
fn sibling_reads(w: &dyn FrontendWorld) -> R<()> {
    let sib = w.sibling().map_err(|e| format!("sibling: {e}"))?;
    let s = &*sib;
    let mut b = Blk::connect(s).map_err(|e| format!("sibling: {e}"))?;
    let p = s.alloc_page()?;
    let g = s.grant(p.frame, Grantee::Backend, false)?;
    let st = b.read(1, 8, &[g])?;
    if st != OK {
        return Err(format!("the domain's other disk: a read got {st}"));
    }
    b.close(&[g]).map_err(|e| format!("sibling: {e}"))
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
        let mut before = vec![0u8; PAGE_SIZE];
        p.mem.read(0, &mut before);
        p.mem.fill(0, PAGE_SIZE, 0xee);
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
        sibling_reads(w).map_err(|e| format!("req_prod +{bad}: {e}"))?;
        // None of the writes ran: reconnect and look.
        set_state(w, st::CLOSED)?;
        let mut again = Blk::connect(w).map_err(|e| format!("reconnecting: {e}"))?;
        let q = w.alloc_page()?;
        let gq = w.grant(q.frame, Grantee::Backend, false)?;
        let stq = again.read(2, 0, &[gq])?;
        let mut now = vec![0u8; PAGE_SIZE];
        q.mem.read(0, &mut now);
        if stq != OK || now != before {
            return Err(format!(
                "req_prod +{bad}: after reconnecting sector 0 reads {stq}, {}",
                if now == before {
                    "unchanged"
                } else {
                    "CHANGED"
                }
            ));
        }
        again.close(&[gq])?;
        let _ = write!(ev, "req_prod +{bad}: closed ({}); ", err.trim());
    }
    Ok(format!(
        "{ev}ring and data unmapped, no write run, the domain's other disk and a \
         reconnect work; {}",
        blk_neighbour_ok(w)?
    ))
}

fn blk_events(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    let p = w.alloc_page()?;
    let g = w.grant(p.frame, Grantee::Backend, false)?;
    let disk = snapshot(&mut b, 10_000, &p, g)?;
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n = 0;
    for id in 0..100u64 {
        b.ring_mem.store_u32(layout::REQ_EVENT, next() as u32);
        b.ring_mem.store_u32(layout::RSP_EVENT, next() as u32);
        let k = 1 + (next() % 3) as usize;
        let page = (next() % 8) as usize;
        let s = page as u64 * 8;
        // Ids counting up over all the reads (any would do).
        let reqs: Vec<_> = (n as u64..)
            .take(k)
            .map(|rid| rw(blkif::OP_READ, rid, s, &[seg(g, 0, 7)], None))
            .collect();
        b.push(&reqs)?;
        b.ring_mem.store_u32(layout::RSP_EVENT, next() as u32);
        let rsps = b.wait(k)?;
        if let Some(r) = rsps.iter().find(|r| r.status != OK) {
            return Err(format!("request {} got {}", r.id, r.status));
        }
        let mut got = vec![0u8; PAGE_SIZE];
        p.mem.read(0, &mut got);
        if got[..] != disk[page * PAGE_SIZE..][..PAGE_SIZE] {
            return Err(format!("request {id}: the data read differs"));
        }
        n += k;
    }
    b.close(&[g])?;
    Ok(format!(
        "{n} reads all answered OKAY with the right data under garbage event indices"
    ))
}

/// The keys of one [`blk_connect_keys`] case, from the ring pages' grants, a
/// read-only and another domain's grant of the first, the right port and one
/// bound for another domain, and a ref granted once and ended (granted no more).
type Keys =
    fn(&[GrantRef; 4], GrantRef, GrantRef, Port, Port, GrantRef) -> Vec<(&'static str, String)>;

fn blk_connect_keys(w: &dyn FrontendWorld) -> R<String> {
    let cases: Vec<(&str, Keys)> = vec![
        ("ring-ref not granted", |_, _, _, e, _, ng| {
            vec![
                ("ring-ref", ng.0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref granted read-only", |_, ro, _, e, _, _| {
            vec![
                ("ring-ref", ro.0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref granted to another domain", |_, _, o, e, _, _| {
            vec![
                ("ring-ref", o.0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref hex", |_, _, _, e, _, _| {
            vec![
                ("ring-ref", "0x10".into()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref negative", |_, _, _, e, _, _| {
            vec![
                ("ring-ref", "-1".into()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref 2^32", |_, _, _, e, _, _| {
            vec![
                ("ring-ref", "4294967296".into()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref missing", |_, _, _, e, _, _| {
            vec![("event-channel", e.0.to_string())]
        }),
        ("event-channel not allocated", |r, _, _, _, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", "4000".into()),
            ]
        }),
        ("event-channel for another domain", |r, _, _, _, x, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", x.0.to_string()),
            ]
        }),
        ("event-channel garbage", |r, _, _, _, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", "abc".into()),
            ]
        }),
        ("event-channel 2^32", |r, _, _, _, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", "4294967296".into()),
            ]
        }),
        ("ring-page-order 5", |r, _, _, e, _, _| {
            vec![
                ("ring-page-order", "5".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-page-order 30", |r, _, _, e, _, _| {
            vec![
                ("ring-page-order", "30".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-page-order 2^64", |r, _, _, e, _, _| {
            vec![
                ("ring-page-order", "18446744073709551616".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring pages not contiguous", |r, _, _, e, _, _| {
            vec![
                ("ring-page-order", "2".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("ring-ref1", r[2].0.to_string()),
                ("ring-ref2", r[1].0.to_string()),
                ("ring-ref3", r[3].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref3 missing", |r, _, _, e, _, _| {
            vec![
                ("ring-page-order", "2".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("ring-ref1", r[1].0.to_string()),
                ("ring-ref2", r[2].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("second ring page not granted", |r, _, _, e, _, ng| {
            vec![
                ("ring-page-order", "1".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("ring-ref1", ng.0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("protocol x86_32-abi", |r, _, _, e, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
                ("protocol", "x86_32-abi".into()),
            ]
        }),
        ("two queues, keys at the top level", |r, _, _, e, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
                ("multi-queue-num-queues", "2".into()),
            ]
        }),
        ("zero queues", |r, _, _, e, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
                ("multi-queue-num-queues", "0".into()),
            ]
        }),
        ("more queues than offered", |r, _, _, e, _, _| {
            vec![
                ("multi-queue-num-queues", "5".into()),
                ("queue-0/ring-ref", r[0].0.to_string()),
                ("queue-0/event-channel", e.0.to_string()),
            ]
        }),
        ("queue count 2^64", |r, _, _, e, _, _| {
            vec![
                ("multi-queue-num-queues", "18446744073709551616".into()),
                ("queue-0/ring-ref", r[0].0.to_string()),
                ("queue-0/event-channel", e.0.to_string()),
            ]
        }),
        ("queue-1 missing", |r, _, _, e, _, _| {
            vec![
                ("multi-queue-num-queues", "2".into()),
                ("queue-0/ring-ref", r[0].0.to_string()),
                ("queue-0/event-channel", e.0.to_string()),
            ]
        }),
        (
            "queue-1 event channel for another domain",
            |r, _, _, e, x, _| {
                vec![
                    ("multi-queue-num-queues", "2".into()),
                    ("queue-0/ring-ref", r[0].0.to_string()),
                    ("queue-0/event-channel", e.0.to_string()),
                    ("queue-1/ring-ref", r[1].0.to_string()),
                    ("queue-1/event-channel", x.0.to_string()),
                ]
            },
        ),
        (
            "queue-1 ring-ref1 missing with ring-page-order 1",
            |r, _, _, e, _, _| {
                vec![
                    ("multi-queue-num-queues", "2".into()),
                    ("ring-page-order", "1".into()),
                    ("queue-0/ring-ref0", r[0].0.to_string()),
                    ("queue-0/ring-ref1", r[1].0.to_string()),
                    ("queue-0/event-channel", e.0.to_string()),
                    ("queue-1/ring-ref0", r[2].0.to_string()),
                    ("queue-1/event-channel", e.0.to_string()),
                ]
            },
        ),
    ];
    for (what, keys) in &cases {
        let n = w.neighbour()?;
        let w = &*n;
        let fail = |e: String| format!("{what}: {e}");
        start(w).map_err(fail)?;
        let mut refs = [GrantRef(0); 4];
        let mut first = None;
        for r in &mut refs {
            let p = w.alloc_page().map_err(fail)?;
            // Initialised ring headers, as a frontend would leave them.
            FrontRing::<Request, Response, _>::init(p.mem).map_err(|e| fail(e.to_string()))?;
            *r = w.grant(p.frame, Grantee::Backend, false).map_err(fail)?;
            first.get_or_insert(p.frame);
        }
        let frame = first.ok_or("no ring page")?;
        let ro = w.grant(frame, Grantee::Backend, true).map_err(fail)?;
        let other = w
            .grant(frame, Grantee::NotTheBackend, false)
            .map_err(fail)?;
        let port = w.bind_port(Grantee::Backend).map_err(fail)?;
        let wrong = w.bind_port(Grantee::NotTheBackend).map_err(fail)?;
        let ended = w.grant(frame, Grantee::Backend, false).map_err(fail)?;
        w.end_grant(ended).map_err(fail)?;
        for (k, v) in keys(&refs, ro, other, port, wrong, ended) {
            w.write_key(k, v.as_bytes()).map_err(fail)?;
        }
        set_state(w, st::INITIALISED).map_err(fail)?;
        wait_refused(w).map_err(fail)?;
        let mut all = refs.to_vec();
        all.extend([ro, other]);
        release(w, &all).map_err(fail)?;
    }
    Ok(format!(
        "{} bad key sets each refused (Closing + error), nothing left mapped; {}",
        cases.len(),
        blk_neighbour_ok(w)?
    ))
}

/// Reads the disk into its own ring page (first making those sectors all 0xff, so
/// the ring header becomes u32::MAX indices).
fn blk_ring_page(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    let p = w.alloc_page()?;
    let g = w.grant(p.frame, Grantee::Backend, false)?;
    p.mem.fill(0, PAGE_SIZE, 0xff);
    let st = b
        .call(rw(blkif::OP_WRITE, 1, 0, &[seg(g, 0, 7)], None))?
        .status;
    if st != OK {
        return Err(format!("a good write of 0xff got {st}"));
    }
    let rr = b.ring_ref;
    b.push(&[
        rw(blkif::OP_READ, 2, 0, &[seg(rr, 0, 7)], None),
        rw(blkif::OP_READ, 3, 0, &[seg(rr, 0, 7)], None),
    ])?;
    // The backend may disconnect that disk, or go on; either way, soon, nothing it
    // does may hurt anyone else.
    let mut closed = None;
    for _ in 0..500 {
        if matches!(backend_state(w), Some(st::CLOSING | st::CLOSED)) {
            closed = text(w.backend_key("error"));
            break;
        }
        if !w.wait() {
            break;
        }
    }
    close(w, &[g, rr])?;
    Ok(format!(
        "{}; the ring unmapped after closing; {}",
        match closed {
            Some(e) => format!("that disk closed ({})", e.trim()),
            None => "that disk stayed up".into(),
        },
        blk_neighbour_ok(w)?
    ))
}

/// Revokes a data grant right after publishing the read that uses it (sometimes
/// after letting the backend run a little): whichever side wins, the outcome is
/// consistent.
fn blk_revoke(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    let sp = w.alloc_page()?;
    let gs = w.grant(sp.frame, Grantee::Backend, false)?;
    let disk = snapshot(&mut b, 5000, &sp, gs)?;
    let p = w.alloc_page()?;
    let (mut refused, mut answered, mut held) = (0, 0, 0);
    // Each read of one of the first 8 pages in turn; every third lets the backend
    // run a little before the grant is ended.
    let pauses = [true, false, false].into_iter().cycle();
    for ((id, page), pause) in (0..200u64).zip((0..8).cycle()).zip(pauses) {
        p.mem.fill(0, PAGE_SIZE, 0xa5);
        let g = w.grant(p.frame, Grantee::Backend, false)?;
        let want = &disk[page * PAGE_SIZE..][..PAGE_SIZE];
        b.push(&[rw(
            blkif::OP_READ,
            id,
            page as u64 * 8,
            &[seg(g, 0, 7)],
            None,
        )])?;
        if pause {
            let _ = w.wait();
        }
        // What the page held when its grant ended: nothing can write it after.
        let mut at_end = vec![0u8; PAGE_SIZE];
        let revoked = w.end_grant(g).is_ok();
        if revoked {
            p.mem.read(0, &mut at_end);
            // The page is the frontend's again: nothing may write it any more.
            p.mem.fill(0, PAGE_SIZE, 0x11);
        }
        let rsp = b.wait(1)?.remove(0);
        if rsp.id != id {
            return Err(format!("answer for id {} to request {id}", rsp.id));
        }
        let mut got = vec![0u8; PAGE_SIZE];
        p.mem.read(0, &mut got);
        if revoked {
            match rsp.status {
                ERR => refused += 1,
                // Answered before the end: the data was in the page by then.
                OK if at_end == want => answered += 1,
                OK => {
                    return Err(format!(
                        "request {id}: answered OKAY, but its page did not hold the \
                         data when the grant ended"
                    ))
                }
                s => return Err(format!("request {id}: status {s} after a revoke")),
            }
            if got.iter().any(|&x| x != 0x11) {
                return Err(format!(
                    "request {id}: the page was written after its grant ended"
                ));
            }
        } else {
            held += 1;
            if rsp.status != OK {
                return Err(format!(
                    "request {id}: the backend held the grant but answered {}",
                    rsp.status
                ));
            }
            if got != want {
                return Err(format!(
                    "request {id}: the backend held the grant and answered OKAY, but \
                     the data differs"
                ));
            }
            release(w, &[g]).map_err(|e| format!("request {id}: {e}"))?;
        }
    }
    b.close(&[gs])?;
    Ok(format!(
        "200 grants ended under their reads: {refused} refused (ERROR, page untouched), \
         {answered} answered before the end, {held} held by the backend until answered \
         (the end failed, then worked); nothing mapped after"
    ))
}

/// Fills one disk's ring with reads and never takes the answers; the domain's other
/// disk must still be served.
fn blk_full_ring(w: &dyn FrontendWorld) -> R<String> {
    let mut a = Blk::connect(w)?;
    let mut grefs = Vec::new();
    let mut reqs = Vec::new();
    let slots = a.ring.size();
    // Each read a page of its own (any sectors would do).
    for (id, sector) in (0..u64::from(slots)).zip((0..).step_by(8)) {
        let p = w.alloc_page()?;
        let g = w.grant(p.frame, Grantee::Backend, false)?;
        grefs.push(g);
        reqs.push(rw(blkif::OP_READ, id, sector, &[seg(g, 0, 7)], None));
    }
    a.push(&reqs)?;
    // Notified again and again, never drained.
    for _ in 0..100 {
        w.notify(a.port)?;
    }
    sibling_reads(w).map_err(|e| format!("while the first disk's ring is full: {e}"))?;
    let rsps = a.wait(reqs.len())?;
    if let Some(r) = rsps.iter().find(|r| r.status != OK) {
        return Err(format!("the full ring's request {} got {}", r.id, r.status));
    }
    a.close(&grefs)?;
    Ok(format!(
        "{slots} reads filling one disk's ring, answers left unread: the domain's other \
         disk still reads; then all {slots} answered OKAY"
    ))
}

/// Garbage in the frontend's `state`, before connecting and while connected.
fn blk_garbage_state(w: &dyn FrontendWorld) -> R<String> {
    start(w)?;
    let garbage: [&[u8]; 6] = [b"99", b"abc", b"", b"-1", b"4294967296", b"4\0"];
    for v in garbage {
        w.write_key("state", v)?;
        for _ in 0..20 {
            if !w.wait() {
                break;
            }
        }
        match backend_state(w) {
            Some(s @ st::INITIALISING..=st::CLOSED) if s != st::CONNECTED => {}
            s => {
                return Err(format!(
                    "frontend state {:?}: the backend's state is {s:?}",
                    String::from_utf8_lossy(v)
                ))
            }
        }
    }
    set_state(w, st::CLOSED)?;
    let mut b = Blk::connect(w).map_err(|e| format!("connecting after the garbage: {e}"))?;
    let p = w.alloc_page()?;
    let g = w.grant(p.frame, Grantee::Backend, false)?;
    if b.read(1, 0, &[g])? != OK {
        return Err("a read after connecting failed".into());
    }
    // Garbage while connected: the frontend is gone as far as the backend can tell.
    w.write_key("state", b"abc")?;
    let rr = b.ring_ref;
    until(w, "the backend to leave Connected", || {
        backend_state(w) != Some(st::CONNECTED)
    })?;
    release(w, &[g, rr])?;
    set_state(w, st::CLOSED)?;
    let mut again = Blk::connect(w).map_err(|e| format!("reconnecting: {e}"))?;
    let q = w.alloc_page()?;
    let gq = w.grant(q.frame, Grantee::Backend, false)?;
    if again.read(2, 0, &[gq])? != OK {
        return Err("a read after reconnecting failed".into());
    }
    again.close(&[gq])?;
    Ok(format!(
        "{} garbage states before connecting: the backend never connected; garbage while \
         connected: it let go of the ring; a reconnect works",
        garbage.len()
    ))
}

fn blk_closing_in_flight(w: &dyn FrontendWorld) -> R<String> {
    let mut b = Blk::connect(w)?;
    let mut grefs = Vec::new();
    let mut reqs = Vec::new();
    for (id, sector) in (0..16u64).zip((0..).step_by(8)) {
        let p = w.alloc_page()?;
        let g = w.grant(p.frame, Grantee::Backend, false)?;
        grefs.push(g);
        reqs.push(rw(blkif::OP_READ, id, sector, &[seg(g, 0, 7)], None));
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
            front: "sends out-of-range and overflowing sectors, 0/12/255 segments, bad \
                    sector bounds, unknown operations, bad grant refs (outside the table, \
                    0, revoked, another domain's, a frame outside RAM), reads into a \
                    read-only grant, bad discards and barriers, four requests with one id",
            expect: "each answered ERROR (EOPNOTSUPP allowed for unknown or unoffered \
                     operations) with its operation echoed; no grant left mapped after an \
                     answer; disk and pages unchanged; a write from a read-only grant \
                     works; each duplicate id answered once; others unaffected",
            run: |w| blk_malformed(w, false),
        },
        Case {
            name: "blkback.malformed_persistent (B*, G6)",
            class: Class::Blk,
            front: "the same bad requests with `feature-persistent = 1`",
            expect: "the same answers; none of the bad grants mapped; all unmapped at close",
            run: |w| blk_malformed(w, true),
        },
        Case {
            name: "blkback.indirect (B8)",
            class: Class::Blk,
            front: "indirect requests with a bad indirect page, 0, one too many or 65535 \
                    segments, nested, flush or unknown operations, past the end or \
                    overflowing, bad descriptors inside the page",
            expect: "each answered ERROR carrying its indirect operation, nothing mapped \
                     after; a good one after them works",
            run: blk_indirect,
        },
        Case {
            name: "blkback.req_prod_overrun (rows 1-2, E5)",
            class: Class::Blk,
            front: "publishes req_prod 5000, 2^32-1 or 33 past the backend's consumer \
                    over 32 queued writes",
            expect: "that disk closed with an `error` node, none of the writes run, ring \
                     and data unmapped; the domain's other disk and a reconnect work; \
                     others unaffected",
            run: blk_overrun,
        },
        Case {
            name: "blkback.garbage_event_indices (row 5)",
            class: Class::Blk,
            front: "scribbles req_event and rsp_event with random values around every \
                    request",
            expect: "every request still answered OKAY with the right data",
            run: blk_events,
        },
        Case {
            name: "blkback.bad_connect_keys (row 12, B8)",
            class: Class::Blk,
            front: "connects with ring refs not granted, read-only, another domain's, hex, \
                    negative, 2^32 or missing; event channels unallocated, another \
                    domain's or garbage; bad ring-page-order and multi-page refs; a 32-bit \
                    protocol; bad queue counts and per-queue keys",
            expect: "that disk refused (Closing + `error`), nothing left mapped; others \
                     unaffected",
            run: blk_connect_keys,
        },
        Case {
            name: "blkback.read_into_ring_page",
            class: Class::Blk,
            front: "asks for reads of 0xff sectors into its own ring page",
            expect: "that disk at worst disconnects; its ring unmapped once closed; \
                     others unaffected",
            run: blk_ring_page,
        },
        Case {
            name: "blkback.grant_revoked_mid_request (G1-G2)",
            class: Class::Blk,
            front: "ends a data grant right after publishing the read into it, 200 times",
            expect: "either the end wins (the read answered ERROR, the page never written \
                     after) or the backend holds the grant (the end fails, the read \
                     completes with the right data, then the grant is released); never \
                     both, nothing left mapped",
            run: blk_revoke,
        },
        Case {
            name: "blkback.full_ring_other_disk (E5)",
            class: Class::Blk,
            front: "fills one disk's ring with reads, notifies 100 times more and does not \
                    take the answers",
            expect: "the domain's other disk is still served; the full ring's reads are all \
                     answered once taken",
            run: blk_full_ring,
        },
        Case {
            name: "blkback.garbage_frontend_state (X12)",
            class: Class::Blk,
            front: "writes `state` 99, abc, empty, -1, 2^32 and `4\\0` before connecting, \
                    then `abc` while connected",
            expect: "the backend never connects on garbage and keeps a valid state of its \
                     own; garbage while connected makes it leave Connected and unmap the \
                     ring; a proper handshake after either works",
            run: blk_garbage_state,
        },
        Case {
            name: "blkback.closing_in_flight (row 15)",
            class: Class::Blk,
            front: "moves to Closing right after publishing 16 reads",
            expect: "the backend closes, unmaps every grant (all can be ended); a \
                     reconnect on the same device reads OKAY",
            run: blk_closing_in_flight,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_covers_the_first_64_and_the_last_16_sectors() {
        let first: Vec<u64> = (0..8).map(|i| i * 8).collect();
        let mut want = first.clone();
        want.extend([2032, 2040]);
        assert_eq!(snapshot_sectors(2048), want);
        let mut want = first.clone();
        want.extend([64, 72]);
        assert_eq!(snapshot_sectors(80), want);
        // A disk too small for a tail of its own.
        assert_eq!(snapshot_sectors(79), first);
    }
}
