//! A hostile guest against blkback, end to end (docs/hostile-input.md: "a hostile guest may
//! only fail itself"; row 10 and rows 1-5 from the backend's side;
//! docs/hostile-input.md G6, D2, D3).
//!
//! The guest is driven from the test thread ([`InProcGuest::new`]): the xenbus
//! handshake through `xenbus::frontend::FrontendHandshake`, then raw requests on a
//! `FrontRing<blkif::Request, blkif::Response>` with grants from a real
//! `GrantTable`. Each malformed request must get `BLKIF_RSP_ERROR` or
//! `BLKIF_RSP_EOPNOTSUPP` (or, for a ring overrun, disconnect that disk only);
//! afterwards the backend still serves the same ring, the image is unchanged where
//! the request was refused, no data grant stays mapped, and another domain's disk
//! on the same hypervisor still does correct I/O.

mod blk_util;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blk_util::*;
use hypercall::abi::blkif::{
    self, Request, RequestDiscard, RequestIndirect, RequestSegment, Response,
};
use hypercall::abi::ring as layout;
use hypercall::gnttab::GrantTable;
use hypercall::ring::FrontRing;
use hypercall::{DomId, Gfn, GrantRef, Port, SharedMem, Xen, PAGE_SIZE};
use xbd_front::Config;
use xen_backends::blk::{BlkBackend, BlkConfig, BlkOffer, Target};
use xen_model::inproc::InProcGuest;
use xen_model::{Domain, Hypervisor};
use xenbus::frontend::FrontendHandshake;
use xenbus::{Path, Store, XenbusState, Xenstore};
use xenstored::TxId;

/// Handshake step timeout.
const STEP: Duration = Duration::from_secs(30);
/// xvdb.
const XVDB: u32 = 51728;
/// Data pages the hostile guest allocates.
const DATA_PAGES: usize = 16;
/// Disk image size: 2048 sectors.
const DISK: usize = 1 << 20;

const OK: i16 = blkif::RSP_OKAY;
const ERR: i16 = blkif::RSP_ERROR;
const NOTSUP: i16 = blkif::RSP_EOPNOTSUPP;

/// One connected raw frontend (no xbd-front: every request is built by hand).
struct Front<'a> {
    p: &'a InProcGuest,
    table: &'a Table,
    hs: FrontendHandshake,
    ring_mem: SharedMem<'static>,
    ring: FrontRing<Request, Response, SharedMem<'static>>,
    ring_ref: GrantRef,
    port: Port,
    data: SharedMem<'static>,
}

impl<'a> Front<'a> {
    /// Handshake on `device/vbd/<devid>` with a one-page ring; `persistent` writes
    /// `feature-persistent = 1`.
    fn connect(
        p: &'a InProcGuest,
        table: &'a Table,
        xs: &mut Xenstore<&'a InProcGuest>,
        devid: u32,
        persistent: bool,
    ) -> Self {
        let mut hs = FrontendHandshake::new(&format!("device/vbd/{devid}")).unwrap();
        hs.start(xs).unwrap();
        hs.wait_for_backend(xs, STEP).unwrap();
        let ring_mem = hypercall::SharedPages::alloc(p, 1).unwrap().leak();
        let ring = FrontRing::<Request, Response, _>::init(ring_mem).unwrap();
        let data = hypercall::SharedPages::alloc(p, DATA_PAGES).unwrap().leak();
        let be = DomId(0);
        let ring_ref = table
            .grant_access(be, ring_mem.page_gfn(p, 0).unwrap(), false)
            .unwrap();
        let port = Xen(p).evtchn_alloc_unbound(be).unwrap();
        let keys = [
            ("ring-ref", ring_ref.0.to_string()),
            ("event-channel", port.0.to_string()),
            ("protocol", "x86_64-abi".to_string()),
            ("feature-persistent", u8::from(persistent).to_string()),
        ];
        hs.publish(xs, XenbusState::Initialised, |tx, node| {
            for (k, v) in &keys {
                tx.write_str(&Path::join(node, k)?, v)?;
            }
            Ok(())
        })
        .unwrap();
        hs.wait_connected(xs, STEP).unwrap();
        Front {
            p,
            table,
            hs,
            ring_mem,
            ring,
            ring_ref,
            port,
            data,
        }
    }

    fn page(&self, i: usize) -> SharedMem<'static> {
        self.data.sub(i * PAGE_SIZE, PAGE_SIZE).unwrap()
    }

    fn gfn(&self, i: usize) -> Gfn {
        self.data.page_gfn(self.p, i).unwrap()
    }

    /// Grants data page `i` to dom0.
    fn grant(&self, i: usize, readonly: bool) -> GrantRef {
        self.table
            .grant_access(DomId(0), self.gfn(i), readonly)
            .unwrap()
    }

    /// Publishes `reqs` and notifies (always: the test does not rely on the
    /// backend's `req_event`).
    fn push(&mut self, reqs: &[Request]) {
        for r in reqs {
            self.ring.push_request(r).unwrap();
        }
        let _ = self.ring.push_requests_and_check_notify();
        Xen(self.p).evtchn_send(self.port).unwrap();
    }

    /// Collects `n` responses (polling; bounded).
    fn wait(&mut self, n: usize) -> Vec<Response> {
        let mut out = Vec::new();
        let end = Instant::now() + STEP;
        while out.len() < n {
            match self.ring.poll_response().unwrap() {
                Some(r) => out.push(r),
                None => {
                    assert!(
                        Instant::now() < end,
                        "no response ({} of {n} so far)",
                        out.len()
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        out
    }

    fn call(&mut self, req: Request) -> Response {
        self.push(&[req]);
        let r = self.wait(1).remove(0);
        assert_eq!(r.id, req.id, "the response answers the request");
        r
    }

    /// Orderly close (the backend unmaps the ring and any persistent grants).
    fn close(mut self, xs: &mut Xenstore<&'a InProcGuest>) {
        self.hs.close(xs, STEP).unwrap();
        let _ = Xen(self.p).evtchn_close(self.port);
        wait_until("ring unmapped", || {
            self.p
                .hypervisor()
                .grant_pins(self.p.domain().id(), self.ring_ref)
                == 0
        });
        self.table.end_access(self.ring_ref).unwrap();
        let _ = self.ring_mem;
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

fn indirect(iop: u8, id: u64, sector: u64, nr: u16, pages: &[GrantRef]) -> Request {
    let mut r = RequestIndirect {
        operation: blkif::OP_INDIRECT,
        indirect_op: iop,
        nr_segments: nr,
        id,
        sector_number: sector,
        ..Default::default()
    };
    for (d, g) in r.indirect_grefs.iter_mut().zip(pages) {
        *d = g.0;
    }
    Request::from(r)
}

fn discard(id: u64, sector: u64, nr_sectors: u64) -> Request {
    Request::from(RequestDiscard {
        operation: blkif::OP_DISCARD,
        id,
        sector_number: sector,
        nr_sectors,
        ..Default::default()
    })
}

/// Writes segment descriptors into an indirect page.
fn write_descriptors(page: &SharedMem<'static>, segs: &[RequestSegment]) {
    for (i, s) in segs.iter().enumerate() {
        page.write_obj(i * 8, s);
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn be_node(hv: &Hypervisor, be: &BlkBackend, key: &str) -> Option<String> {
    hv.xenstored()
        .client(0)
        .read(TxId::NONE, &format!("{}/{key}", be.backend_path()))
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// A well-behaved domain with its own disk on the same hypervisor: it connects,
/// waits for `go`, then writes and reads back 64 KiB; sends whether the data
/// matched.
fn good_domain(hv: &Arc<Hypervisor>, dir: &TempDir) -> (Sender<()>, Receiver<bool>, BlkBackend) {
    let img = image(dir, "good.img", DISK);
    let dom = domain(hv, "good", 32);
    let be = backend(hv, &dom, file_cfg(&img));
    let (go_tx, go_rx) = channel::<()>();
    let (res_tx, res_rx) = channel();
    let rx = spawn_guest(hv, dom, XVDA, Config::default(), move |d, _, _| {
        go_rx.recv().unwrap();
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
        d.write(100, &[&data[..]], T).unwrap();
        let mut back = vec![0u8; 65536];
        d.read(100, &mut [&mut back[..]], T).unwrap();
        back == data
    });
    std::thread::spawn(move || {
        let r = rx.recv_timeout(Duration::from_secs(120));
        let _ = res_tx.send(matches!(r, Ok(Ok(true))));
    });
    (go_tx, res_rx, be)
}

fn check_good(go: Sender<()>, res: Receiver<bool>) {
    go.send(()).unwrap();
    assert!(
        res.recv_timeout(Duration::from_secs(150)).unwrap(),
        "the other domain's disk does correct I/O"
    );
}

/// A hostile domain and the platform to drive it from the test thread.
struct Hostile {
    guest: Arc<InProcGuest>,
    table: Box<Table>,
}

impl Hostile {
    fn new(hv: &Arc<Hypervisor>, dom: &Arc<Domain>) -> Self {
        let guest = InProcGuest::new(hv.clone(), dom.clone());
        let table = Box::new(GrantTable::setup(&*guest, (NG / 512) as u32).unwrap());
        Hostile { guest, table }
    }
}

fn cfg(img: &std::path::Path, devid: u32, name: &str) -> BlkConfig {
    BlkConfig::new(Target::File(img.to_path_buf()), devid, name)
}

/// Malformed requests on one ring: each gets its error status, the ring keeps
/// working, refused writes leave the image alone, no data grant stays mapped.
fn malformed_requests(persistent: bool) {
    let dir = TempDir::new(if persistent { "mal-p" } else { "mal" });
    let hv = hv();
    let (go, res, _good_be) = good_domain(&hv, &dir);
    let img = image(&dir, "hostile.img", DISK);
    let mut expect = std::fs::read(&img).unwrap();
    let dom = domain(&hv, "hostile", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, persistent);
    let me = dom.id();

    // Page 0: writable, filled with a canary; page 1: read-only grant, canary;
    // page 2: writable data to write.
    for i in 0..DATA_PAGES {
        f.page(i).fill(0, PAGE_SIZE, 0xa5);
    }
    let w = f.grant(0, false);
    let ro = f.grant(1, true);
    let src = f.grant(2, false);
    f.page(2).write(0, &[0x5au8; PAGE_SIZE]);
    let other_dom = f
        .table
        .grant_access(DomId(me.0 + 7), f.gfn(3), false)
        .unwrap();
    let revoked = f.grant(4, false);
    f.table.end_access(revoked).unwrap();
    // A grant naming a frame outside guest RAM (DESIGN: every gfn is checked).
    let bad_frame = f
        .table
        .grant_access(DomId(0), Gfn(0xfff_ffff), false)
        .unwrap();
    let never = GrantRef(5000);
    let sectors = (DISK / 512) as u64;
    let s = |a, b| seg(w, a, b);
    let full = [s(0, 7); 11];

    use blkif::{OP_READ as R, OP_WRITE as W};
    let cases: Vec<(&str, Request, i16)> = vec![
        // Range.
        (
            "read past the end",
            rw(R, 1, sectors, &[s(0, 0)], None),
            ERR,
        ),
        (
            "read straddling the end",
            rw(R, 2, sectors - 1, &[s(0, 1)], None),
            ERR,
        ),
        (
            "write past the end",
            rw(W, 3, sectors, &[seg(src, 0, 0)], None),
            ERR,
        ),
        (
            "write straddling the end",
            rw(W, 4, sectors - 8, &[seg(src, 0, 7); 2], None),
            ERR,
        ),
        (
            "sector * 512 overflows",
            rw(R, 5, u64::MAX / 512 + 1, &[s(0, 0)], None),
            ERR,
        ),
        (
            "sector near u64::MAX",
            rw(R, 6, u64::MAX, &[s(0, 0)], None),
            ERR,
        ),
        (
            "end overflows with 11 segments",
            rw(R, 7, u64::MAX / 512 - 40, &full, None),
            ERR,
        ),
        (
            "write end overflows",
            rw(W, 8, u64::MAX / 512, &[seg(src, 0, 7)], None),
            ERR,
        ),
        // Segments.
        ("no segments", rw(R, 10, 0, &[], None), ERR),
        ("12 segments", rw(R, 11, 0, &full, Some(12)), ERR),
        ("255 segments", rw(W, 12, 0, &full, Some(255)), ERR),
        (
            "first_sect > last_sect",
            rw(R, 13, 0, &[s(5, 2)], None),
            ERR,
        ),
        ("last_sect 8", rw(R, 14, 0, &[s(0, 8)], None), ERR),
        (
            "last_sect 255",
            rw(W, 15, 0, &[seg(src, 255, 255)], None),
            ERR,
        ),
        (
            "one bad segment of three",
            rw(
                W,
                16,
                0,
                &[seg(src, 0, 7), seg(src, 3, 1), seg(src, 0, 7)],
                None,
            ),
            ERR,
        ),
        // Operations.
        (
            "reserved op 4",
            rw(blkif::OP_RESERVED_1, 20, 0, &[s(0, 0)], None),
            NOTSUP,
        ),
        ("op 7", rw(7, 21, 0, &[s(0, 0)], None), NOTSUP),
        ("op 200", rw(200, 22, 0, &[s(0, 0)], None), NOTSUP),
        ("op 255", rw(255, 23, 0, &[], Some(0)), NOTSUP),
        // Grants.
        (
            "gref outside the table",
            rw(R, 30, 0, &[seg(GrantRef(NG as u32), 0, 0)], None),
            ERR,
        ),
        (
            "gref u32::MAX",
            rw(W, 31, 0, &[seg(GrantRef(u32::MAX), 0, 0)], None),
            ERR,
        ),
        (
            "reserved gref 0",
            rw(R, 32, 0, &[seg(GrantRef(0), 0, 0)], None),
            ERR,
        ),
        (
            "gref never granted",
            rw(R, 33, 0, &[seg(never, 0, 0)], None),
            ERR,
        ),
        (
            "gref granted to another domain",
            rw(R, 34, 0, &[seg(other_dom, 0, 0)], None),
            ERR,
        ),
        (
            "gref revoked",
            rw(W, 35, 0, &[seg(revoked, 0, 0)], None),
            ERR,
        ),
        (
            "gref naming a frame outside RAM",
            rw(R, 36, 0, &[seg(bad_frame, 0, 0)], None),
            ERR,
        ),
        (
            "good then bad gref",
            rw(W, 37, 0, &[seg(src, 0, 7), seg(never, 0, 7)], None),
            ERR,
        ),
        // Row 10 / G6: reading from disk into a page granted read-only.
        (
            "read into a read-only grant",
            rw(R, 40, 0, &[seg(ro, 0, 7)], None),
            ERR,
        ),
        (
            "read into good + read-only grant",
            rw(R, 41, 0, &[s(0, 7), seg(ro, 0, 7)], None),
            ERR,
        ),
        // Discard and barrier-with-data (offered on this disk) out of range.
        ("discard past the end", discard(80, sectors - 8, 16), ERR),
        (
            "discard start overflows",
            discard(81, u64::MAX / 512 + 1, 1),
            ERR,
        ),
        ("discard length overflows", discard(82, 0, u64::MAX), ERR),
        (
            "discard end overflows",
            discard(83, u64::MAX / 1024, u64::MAX / 1024),
            ERR,
        ),
        (
            "barrier with 12 segments",
            rw(blkif::OP_WRITE_BARRIER, 84, 0, &full, Some(12)),
            ERR,
        ),
        (
            "barrier with data past the end",
            rw(
                blkif::OP_WRITE_BARRIER,
                85,
                sectors,
                &[seg(src, 0, 0)],
                None,
            ),
            ERR,
        ),
        (
            "barrier with a bad segment",
            rw(blkif::OP_WRITE_BARRIER, 86, 0, &[seg(src, 4, 0)], None),
            ERR,
        ),
        (
            "barrier with an ungranted page",
            rw(blkif::OP_WRITE_BARRIER, 87, 0, &[seg(never, 0, 7)], None),
            ERR,
        ),
    ];
    let mut errors = 0;
    for (what, req, want) in &cases {
        let rsp = f.call(*req);
        assert_eq!(rsp.status, *want, "{what}");
        assert_eq!(rsp.operation, req.operation, "{what}: operation echoed");
        errors += 1;
        assert_eq!(be.stats().errors, errors, "{what}");
        assert!(
            be.connected(),
            "{what}: a bad request fails that request only"
        );
        if !persistent {
            for g in [w, ro, src, other_dom, bad_frame] {
                assert_eq!(hv.grant_pins(me, g), 0, "{what}: gref {} left mapped", g.0);
            }
        }
    }
    // Nothing was written to the image, nothing into the guest's pages.
    assert_eq!(
        std::fs::read(&img).unwrap(),
        expect,
        "refused writes left the image alone"
    );
    for i in [0, 1, 3, 4] {
        let mut b = vec![0u8; PAGE_SIZE];
        f.page(i).read(0, &mut b);
        assert!(b.iter().all(|&x| x == 0xa5), "page {i} untouched");
    }

    // Row 10: a write's pages are mapped read-only, so a read-only grant is enough.
    f.page(1).write(0, &[0x3cu8; PAGE_SIZE]);
    assert_eq!(f.call(rw(W, 50, 16, &[seg(ro, 0, 7)], None)).status, OK);
    expect[16 * 512..24 * 512].fill(0x3c);
    // Duplicate ids: each request is answered.
    f.push(&[
        rw(R, 60, 0, &[s(0, 7)], None),
        rw(R, 60, 3000, &[s(0, 7)], None),
        rw(W, 60, 24, &[seg(src, 0, 7)], None),
        rw(R, 60, 8, &[s(0, 3)], None),
    ]);
    let mut rsps = f.wait(4);
    rsps.sort_by_key(|r| r.status);
    assert!(rsps.iter().all(|r| r.id == 60));
    let st: Vec<i16> = rsps.iter().map(|r| r.status).collect();
    assert_eq!(st, [ERR, OK, OK, OK], "each duplicate id answered once");
    expect[24 * 512..32 * 512].fill(0x5a);
    // The ring still serves good I/O; the read sees the image.
    assert_eq!(f.call(rw(R, 70, 16, &[s(0, 7)], None)).status, OK);
    let mut b = vec![0u8; PAGE_SIZE];
    f.page(0).read(0, &mut b);
    assert_eq!(b[..], expect[16 * 512..24 * 512]);
    assert_eq!(std::fs::read(&img).unwrap(), expect);
    if !persistent {
        for g in [w, ro, src] {
            assert_eq!(hv.grant_pins(me, g), 0);
        }
    }

    check_good(go, res);
    f.close(&mut xs);
    for g in [w, ro, src, other_dom, bad_frame] {
        assert_eq!(hv.grant_pins(me, g), 0, "gref {} mapped after close", g.0);
        h.table.end_access(g).unwrap();
    }
    assert_eq!(h.table.in_use(), 0);
    be.destroy();
}

#[test]
fn malformed_requests_get_errors_and_fail_nothing_else() {
    malformed_requests(false);
}

#[test]
fn malformed_requests_with_persistent_grants() {
    malformed_requests(true);
}

/// Indirect requests: a bad indirect page, too many/no segments, nested or
/// non-data indirect operations, bad descriptors inside the page.
#[test]
fn hostile_indirect_requests() {
    let dir = TempDir::new("ind");
    let hv = hv();
    let (go, res, _good_be) = good_domain(&hv, &dir);
    let img = image(&dir, "hostile.img", DISK);
    let before = std::fs::read(&img).unwrap();
    let dom = domain(&hv, "hostile", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let me = dom.id();

    let ind = f.grant(0, true);
    let w = f.grant(1, false);
    let ro = f.grant(2, true);
    let other = f
        .table
        .grant_access(DomId(me.0 + 3), f.gfn(3), true)
        .unwrap();
    f.page(1).fill(0, PAGE_SIZE, 0xa5);
    let sectors = (DISK / 512) as u64;
    let good = [seg(w, 0, 7); 20];
    write_descriptors(&f.page(0), &good);

    use blkif::{OP_READ as R, OP_WRITE as W};
    // (what, descriptors to put in the indirect page, request, status)
    let bad_desc: Vec<(&str, Vec<RequestSegment>, Request, i16)> = vec![
        (
            "indirect page not granted",
            good.to_vec(),
            indirect(R, 1, 0, 4, &[GrantRef(5000)]),
            ERR,
        ),
        (
            "indirect page gref out of table",
            good.to_vec(),
            indirect(R, 2, 0, 4, &[GrantRef(u32::MAX)]),
            ERR,
        ),
        (
            "indirect page granted to another domain",
            good.to_vec(),
            indirect(R, 3, 0, 4, &[other]),
            ERR,
        ),
        (
            "no segments",
            good.to_vec(),
            indirect(R, 4, 0, 0, &[ind]),
            ERR,
        ),
        (
            "257 segments",
            good.to_vec(),
            indirect(R, 5, 0, 257, &[ind]),
            ERR,
        ),
        (
            "65535 segments",
            good.to_vec(),
            indirect(W, 6, 0, u16::MAX, &[ind; 8]),
            ERR,
        ),
        (
            "nested indirect",
            good.to_vec(),
            indirect(blkif::OP_INDIRECT, 7, 0, 4, &[ind]),
            ERR,
        ),
        (
            "indirect flush",
            good.to_vec(),
            indirect(blkif::OP_FLUSH_DISKCACHE, 8, 0, 4, &[ind]),
            ERR,
        ),
        (
            "indirect op 99",
            good.to_vec(),
            indirect(99, 9, 0, 4, &[ind]),
            ERR,
        ),
        (
            "past the end",
            good.to_vec(),
            indirect(W, 10, sectors - 8, 4, &[ind]),
            ERR,
        ),
        (
            "overflow",
            good.to_vec(),
            indirect(R, 11, u64::MAX / 512 - 10, 20, &[ind]),
            ERR,
        ),
        (
            "descriptor first > last",
            vec![seg(w, 0, 7), seg(w, 6, 1)],
            indirect(W, 12, 0, 2, &[ind]),
            ERR,
        ),
        (
            "descriptor last_sect 9",
            vec![seg(w, 0, 9)],
            indirect(R, 13, 0, 1, &[ind]),
            ERR,
        ),
        (
            "descriptor gref not granted",
            vec![seg(w, 0, 7), seg(GrantRef(6000), 0, 7)],
            indirect(W, 14, 0, 2, &[ind]),
            ERR,
        ),
        (
            "descriptor gref out of table",
            vec![seg(GrantRef(1 << 30), 0, 7)],
            indirect(R, 15, 0, 1, &[ind]),
            ERR,
        ),
        (
            "read into a read-only descriptor page",
            vec![seg(ro, 0, 7)],
            indirect(R, 16, 0, 1, &[ind]),
            ERR,
        ),
        (
            "indirect page is the data page's neighbour, zero-filled",
            vec![],
            indirect(R, 17, 0, 3, &[ind]),
            ERR,
        ),
    ];
    let mut errors = 0;
    for (what, descs, req, want) in &bad_desc {
        f.page(0).fill(0, PAGE_SIZE, 0);
        write_descriptors(&f.page(0), descs);
        let rsp = f.call(*req);
        assert_eq!(rsp.status, *want, "{what}");
        // Every answer carries the indirect operation (Linux blkback's rule, also
        // for an invalid one).
        assert_eq!(rsp.operation, req.as_indirect().indirect_op, "{what}");
        errors += 1;
        assert_eq!(be.stats().errors, errors, "{what}");
        assert!(be.connected(), "{what}");
        for g in [ind, w, ro, other] {
            assert_eq!(hv.grant_pins(me, g), 0, "{what}: gref {} left mapped", g.0);
        }
    }
    assert_eq!(std::fs::read(&img).unwrap(), before);
    let mut b = vec![0u8; PAGE_SIZE];
    f.page(1).read(0, &mut b);
    assert!(
        b.iter().all(|&x| x == 0xa5),
        "no refused read wrote the page"
    );

    // A good indirect read (20 segments all into page 1) still works.
    write_descriptors(&f.page(0), &good[..2]);
    assert_eq!(f.call(indirect(R, 30, 8, 2, &[ind])).status, OK);
    f.page(1).read(0, &mut b);
    assert_eq!(b[..], before[16 * 512..24 * 512]);
    assert_eq!(hv.grant_pins(me, ind), 0);

    check_good(go, res);
    f.close(&mut xs);
    for g in [ind, w, ro, other] {
        h.table.end_access(g).unwrap();
    }
    be.destroy();
}

/// Flush, barrier, discard and indirect when not offered; a read-only disk refuses
/// writes, flushes and discards (D3); the image stays as it was.
#[test]
fn operations_not_offered_and_read_only_disks() {
    let dir = TempDir::new("noffer");
    let hv = hv();
    let (go, res, _good_be) = good_domain(&hv, &dir);
    let a = image(&dir, "bare.img", DISK);
    let b = image(&dir, "ro.img", DISK);
    let (before_a, before_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let dom = domain(&hv, "hostile", 32);
    let mut bare = cfg(&a, XVDA, "xvda");
    bare.offer = BlkOffer {
        max_indirect_segments: 0,
        persistent: false,
        flush: false,
        barrier: false,
        discard: false,
        ..BlkOffer::default()
    };
    let be_a = backend(&hv, &dom, bare);
    let mut ro_cfg = cfg(&b, XVDB, "xvdb");
    ro_cfg.writable = false;
    let be_b = backend(&hv, &dom, ro_cfg);
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut fa = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let mut fb = Front::connect(p, &h.table, &mut xs, XVDB, false);
    let me = dom.id();
    let ga = fa.grant(0, false);
    let gb = fb.grant(0, false);
    fa.page(0).fill(0, PAGE_SIZE, 0x77);
    fb.page(0).fill(0, PAGE_SIZE, 0x77);
    let run = |f: &mut Front<'_>, g: GrantRef, what: &str, bare: bool| {
        let mut cases = vec![
            (
                "flush",
                rw(blkif::OP_FLUSH_DISKCACHE, 1, 0, &[], None),
                NOTSUP,
            ),
            (
                "barrier",
                rw(blkif::OP_WRITE_BARRIER, 2, 0, &[], None),
                NOTSUP,
            ),
            (
                "barrier with data",
                rw(blkif::OP_WRITE_BARRIER, 3, 0, &[seg(g, 0, 7)], None),
                NOTSUP,
            ),
            ("discard", discard(4, 0, 64), NOTSUP),
        ];
        if bare {
            let mut ind = RequestIndirect {
                operation: blkif::OP_INDIRECT,
                indirect_op: blkif::OP_READ,
                nr_segments: 1,
                id: 5,
                ..Default::default()
            };
            ind.indirect_grefs[0] = g.0;
            cases.push(("indirect", Request::from(ind), NOTSUP));
        } else {
            cases.push((
                "write",
                rw(blkif::OP_WRITE, 6, 0, &[seg(g, 0, 7)], None),
                ERR,
            ));
            cases.push((
                "write past the end",
                rw(blkif::OP_WRITE, 7, 1 << 40, &[seg(g, 0, 7)], None),
                ERR,
            ));
        }
        for (op, req, want) in cases {
            let rsp = f.call(req);
            assert_eq!(rsp.status, want, "{what}: {op}");
        }
        // Reads still work.
        assert_eq!(
            f.call(rw(blkif::OP_READ, 9, 0, &[seg(g, 0, 7)], None))
                .status,
            OK
        );
    };
    run(&mut fa, ga, "nothing offered", true);
    run(&mut fb, gb, "read-only", false);
    assert_eq!(std::fs::read(&a).unwrap(), before_a);
    assert_eq!(std::fs::read(&b).unwrap(), before_b);
    let mut buf = vec![0u8; PAGE_SIZE];
    fb.page(0).read(0, &mut buf);
    assert_eq!(buf[..], before_b[..PAGE_SIZE]);
    for g in [ga, gb] {
        assert_eq!(hv.grant_pins(me, g), 0);
    }
    assert!(be_a.connected() && be_b.connected());
    check_good(go, res);
    fa.close(&mut xs);
    fb.close(&mut xs);
    h.table.end_access(ga).unwrap();
    h.table.end_access(gb).unwrap();
}

/// A grant revoked while the request is in flight: either the guest's revoke won
/// (the backend's map fails: ERROR, page untouched) or the backend's pin won (the
/// guest's end-access fails, the request completes). Never both, never a page
/// written after a successful revoke, and nothing stays mapped afterwards.
#[test]
fn grant_revoked_mid_request() {
    let dir = TempDir::new("revoke");
    let hv = hv();
    let img = image(&dir, "hostile.img", DISK);
    let before = std::fs::read(&img).unwrap();
    let dom = domain(&hv, "hostile", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let me = dom.id();
    let (mut won, mut lost) = (0, 0);
    for id in 0..200u64 {
        f.page(0).fill(0, PAGE_SIZE, 0xa5);
        let g = f.grant(0, false);
        let sector = (id % 200) * 8;
        f.push(&[rw(blkif::OP_READ, id, sector, &[seg(g, 0, 7)], None)]);
        if id % 2 == 0 {
            std::thread::yield_now();
        }
        let revoked = f.table.end_access(g).is_ok();
        if revoked {
            // The page is ours again: nothing may write it any more.
            f.page(0).fill(0, PAGE_SIZE, 0x11);
        }
        let rsp = f.wait(1).remove(0);
        assert_eq!(rsp.id, id);
        let mut b = vec![0u8; PAGE_SIZE];
        f.page(0).read(0, &mut b);
        if revoked {
            // Answered before the revoke (OK) or refused after it (ERROR).
            if rsp.status == ERR {
                won += 1;
            } else {
                assert_eq!(rsp.status, OK, "request {id}");
            }
            assert!(
                b.iter().all(|&x| x == 0x11),
                "request {id}: written after revoke"
            );
        } else {
            lost += 1;
            assert_eq!(rsp.status, OK, "request {id}: the backend held the page");
            assert_eq!(b[..], before[sector as usize * 512..][..PAGE_SIZE]);
            wait_until("unpinned", || hv.grant_pins(me, g) == 0);
            f.table.end_access(g).unwrap();
        }
        assert_eq!(hv.grant_pins(me, g), 0);
    }
    eprintln!("revoke refused {won}, backend held the page {lost} times");
    assert!(be.connected());
    assert_eq!(be.stats().errors, won);
    f.close(&mut xs);
    assert_eq!(h.table.in_use(), 0);
    be.destroy();
}

/// Rows 1-2 from the backend's side: a producer index far past the consumer (or
/// behind it) disconnects that disk only (Closing + `error`), its grants are
/// unmapped; the guest's other disk and another domain's disk keep working.
#[test]
fn ring_overrun_disconnects_that_disk_only() {
    for bad_prod in [5000u32, u32::MAX, 33] {
        let dir = TempDir::new("overrun");
        let hv = hv();
        let (go, res, _good_be) = good_domain(&hv, &dir);
        let a = image(&dir, "a.img", DISK);
        let b = image(&dir, "b.img", DISK);
        let before = std::fs::read(&a).unwrap();
        let dom = domain(&hv, "hostile", 32);
        let be_a = backend(&hv, &dom, cfg(&a, XVDA, "xvda"));
        let be_b = backend(&hv, &dom, cfg(&b, XVDB, "xvdb"));
        let h = Hostile::new(&hv, &dom);
        let p: &InProcGuest = &h.guest;
        let mut xs = Xenstore::from_hvm_params(p).unwrap();
        let mut fa = Front::connect(p, &h.table, &mut xs, XVDA, true);
        let mut fb = Front::connect(p, &h.table, &mut xs, XVDB, false);
        let me = dom.id();
        let ga = fa.grant(0, false);
        let gb = fb.grant(0, false);
        // One good request first (with persistent grants: ga stays mapped).
        assert_eq!(
            fa.call(rw(blkif::OP_READ, 1, 0, &[seg(ga, 0, 7)], None))
                .status,
            OK
        );
        // Slots full of writes, then a producer index no frontend can have.
        for id in 0..32 {
            fa.ring
                .push_request(&rw(blkif::OP_WRITE, id, 0, &[seg(ga, 0, 7)], None))
                .unwrap();
        }
        fa.page(0).fill(0, PAGE_SIZE, 0xee);
        fa.ring_mem.store_u32(
            layout::REQ_PROD,
            fa.ring
                .req_prod_pvt()
                .wrapping_sub(32)
                .wrapping_add(bad_prod),
        );
        Xen(p).evtchn_send(fa.port).unwrap();
        wait_until("xvda Closing", || {
            be_node(&hv, &be_a, "state").as_deref() == Some("5")
        });
        let err = be_node(&hv, &be_a, "error").unwrap_or_default();
        assert!(err.contains("ring"), "error node names the ring: {err:?}");
        assert!(!be_a.connected());
        wait_until("xvda unmapped", || {
            hv.grant_pins(me, ga) == 0 && hv.grant_pins(me, fa.ring_ref) == 0
        });
        assert_eq!(
            std::fs::read(&a).unwrap(),
            before,
            "prod {bad_prod}: no request was run"
        );
        // The guest's other disk is fine.
        assert!(be_b.connected());
        assert_eq!(
            fb.call(rw(blkif::OP_READ, 2, 8, &[seg(gb, 0, 7)], None))
                .status,
            OK
        );
        let mut buf = vec![0u8; PAGE_SIZE];
        fb.page(0).read(0, &mut buf);
        assert_eq!(buf[..], std::fs::read(&b).unwrap()[4096..8192]);
        check_good(go, res);
        fb.close(&mut xs);
        assert_eq!(hv.grant_pins(me, gb), 0);
        drop(fa);
        be_a.destroy();
        be_b.destroy();
    }
}

/// Row 5 from the backend's side: the guest scribbles over `req_event` and
/// `rsp_event` (and keeps doing so); requests are still all answered correctly.
#[test]
fn garbage_event_indices_cost_nothing_but_notifications() {
    let dir = TempDir::new("events");
    let hv = hv();
    let img = image(&dir, "hostile.img", DISK);
    let data = std::fs::read(&img).unwrap();
    let dom = domain(&hv, "hostile", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let g = f.grant(0, false);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for id in 0..300u64 {
        f.ring_mem.store_u32(layout::REQ_EVENT, rng.next() as u32);
        f.ring_mem.store_u32(layout::RSP_EVENT, rng.next() as u32);
        let sector = rng.below(256) * 8;
        let n = 1 + rng.below(3) as usize;
        let reqs: Vec<Request> = (0..n)
            .map(|k| {
                rw(
                    blkif::OP_READ,
                    id * 4 + k as u64,
                    sector,
                    &[seg(g, 0, 7)],
                    None,
                )
            })
            .collect();
        f.push(&reqs);
        f.ring_mem.store_u32(layout::RSP_EVENT, rng.next() as u32);
        let rsps = f.wait(n);
        assert!(rsps.iter().all(|r| r.status == OK), "{rsps:?}");
        let mut b = vec![0u8; PAGE_SIZE];
        f.page(0).read(0, &mut b);
        assert_eq!(b[..], data[sector as usize * 512..][..PAGE_SIZE]);
    }
    assert!(be.connected());
    assert_eq!(be.stats().errors, 0);
    f.close(&mut xs);
    f_end(&h, g);
    be.destroy();
}

fn f_end(h: &Hostile, g: GrantRef) {
    h.table.end_access(g).unwrap();
}

/// Ring and event-channel keys a hostile frontend can write: each is refused at
/// connect (backend `Closing` with an `error` node), nothing stays mapped (also when
/// the first pages of a multi-page ring mapped before a later one failed), and
/// another domain's disk keeps working.
#[test]
fn hostile_connect_keys_fail_that_disk_only() {
    type Keys = fn(&[GrantRef; 4], GrantRef, GrantRef, Port, Port) -> Vec<(&'static str, String)>;
    let cases: Vec<(&str, Keys)> = vec![
        ("ring-ref not granted", |_, _, _, e, _| {
            vec![
                ("ring-ref", "5000".into()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref granted read-only", |_, ro, _, e, _| {
            vec![
                ("ring-ref", ro.0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref granted to another domain", |_, _, other, e, _| {
            vec![
                ("ring-ref", other.0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref hex", |_, _, _, e, _| {
            vec![
                ("ring-ref", "0x10".into()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref negative", |_, _, _, e, _| {
            vec![
                ("ring-ref", "-1".into()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref missing", |_, _, _, e, _| {
            vec![("event-channel", e.0.to_string())]
        }),
        ("event-channel not allocated", |r, _, _, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", "4000".into()),
            ]
        }),
        ("event-channel for another domain", |r, _, _, _, wrong| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", wrong.0.to_string()),
            ]
        }),
        ("event-channel garbage", |r, _, _, _, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", "abc".into()),
            ]
        }),
        ("ring-page-order 5", |r, _, _, e, _| {
            let mut v = vec![
                ("ring-page-order", "5".to_string()),
                ("event-channel", e.0.to_string()),
            ];
            v.push(("ring-ref0", r[0].0.to_string()));
            v
        }),
        ("ring-page-order 2^64", |r, _, _, e, _| {
            vec![
                ("ring-page-order", "18446744073709551616".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring pages not contiguous", |r, _, _, e, _| {
            vec![
                ("ring-page-order", "2".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("ring-ref1", r[2].0.to_string()),
                ("ring-ref2", r[1].0.to_string()),
                ("ring-ref3", r[3].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("ring-ref3 missing", |r, _, _, e, _| {
            vec![
                ("ring-page-order", "2".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("ring-ref1", r[1].0.to_string()),
                ("ring-ref2", r[2].0.to_string()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("second ring page not granted", |r, _, _, e, _| {
            vec![
                ("ring-page-order", "1".into()),
                ("ring-ref0", r[0].0.to_string()),
                ("ring-ref1", "5000".into()),
                ("event-channel", e.0.to_string()),
            ]
        }),
        ("protocol x86_32-abi", |r, _, _, e, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
                ("protocol", "x86_32-abi".into()),
            ]
        }),
        ("two queues, keys at the top level", |r, _, _, e, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
                ("multi-queue-num-queues", "2".into()),
            ]
        }),
        ("zero queues", |r, _, _, e, _| {
            vec![
                ("ring-ref", r[0].0.to_string()),
                ("event-channel", e.0.to_string()),
                ("multi-queue-num-queues", "0".into()),
            ]
        }),
        ("more queues than offered", |r, _, _, e, _| {
            vec![
                ("multi-queue-num-queues", "5".into()),
                ("queue-0/ring-ref", r[0].0.to_string()),
                ("queue-0/event-channel", e.0.to_string()),
            ]
        }),
        ("queue count 2^64", |r, _, _, e, _| {
            vec![
                ("multi-queue-num-queues", "18446744073709551616".into()),
                ("queue-0/ring-ref", r[0].0.to_string()),
                ("queue-0/event-channel", e.0.to_string()),
            ]
        }),
        ("queue-1 missing", |r, _, _, e, _| {
            vec![
                ("multi-queue-num-queues", "2".into()),
                ("queue-0/ring-ref", r[0].0.to_string()),
                ("queue-0/event-channel", e.0.to_string()),
            ]
        }),
        (
            "queue-1 event channel for another domain",
            |r, _, _, e, wrong| {
                vec![
                    ("multi-queue-num-queues", "2".into()),
                    ("queue-0/ring-ref", r[0].0.to_string()),
                    ("queue-0/event-channel", e.0.to_string()),
                    ("queue-1/ring-ref", r[1].0.to_string()),
                    ("queue-1/event-channel", wrong.0.to_string()),
                ]
            },
        ),
        (
            "queue-1 ring-ref1 missing with ring-page-order 1",
            |r, _, _, e, _| {
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
    let dir = TempDir::new("keys");
    let hv = hv();
    let (go, res, _good_be) = good_domain(&hv, &dir);
    let img = image(&dir, "hostile.img", DISK);
    for (i, (what, keys)) in cases.iter().enumerate() {
        let dom = domain(&hv, &format!("hostile{i}"), 32);
        let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
        let h = Hostile::new(&hv, &dom);
        let p: &InProcGuest = &h.guest;
        let mut xs = Xenstore::from_hvm_params(p).unwrap();
        let mut hs = FrontendHandshake::new(&format!("device/vbd/{XVDA}")).unwrap();
        hs.start(&mut xs).unwrap();
        hs.wait_for_backend(&mut xs, STEP).unwrap();
        let ring = hypercall::SharedPages::alloc(p, 4).unwrap().leak();
        let _ = FrontRing::<Request, Response, _>::init(ring).unwrap();
        let refs: [GrantRef; 4] = std::array::from_fn(|k| {
            h.table
                .grant_access(DomId(0), ring.page_gfn(p, k).unwrap(), false)
                .unwrap()
        });
        let ro = h
            .table
            .grant_access(DomId(0), ring.page_gfn(p, 0).unwrap(), true)
            .unwrap();
        let other = h
            .table
            .grant_access(DomId(dom.id().0 + 1), ring.page_gfn(p, 0).unwrap(), false)
            .unwrap();
        let port = Xen(p).evtchn_alloc_unbound(DomId(0)).unwrap();
        let wrong = Xen(p).evtchn_alloc_unbound(DomId(dom.id().0 + 1)).unwrap();
        let kv = keys(&refs, ro, other, port, wrong);
        hs.publish(&mut xs, XenbusState::Initialised, |tx, node| {
            for (k, v) in &kv {
                tx.write_str(&Path::join(node, k)?, v)?;
            }
            Ok(())
        })
        .unwrap();
        assert!(hs.wait_connected(&mut xs, STEP).is_err(), "{what}: refused");
        wait_until(what, || be_node(&hv, &be, "state").as_deref() == Some("5"));
        let err = be_node(&hv, &be, "error").unwrap_or_default();
        assert!(!err.is_empty(), "{what}: error node");
        assert!(!be.connected(), "{what}");
        for g in refs.iter().chain([&ro, &other]) {
            assert_eq!(
                hv.grant_pins(dom.id(), *g),
                0,
                "{what}: gref {} mapped",
                g.0
            );
            h.table.end_access(*g).unwrap();
        }
        be.destroy();
    }
    check_good(go, res);
}

/// The guest asks for a read into its own ring page: the backend overwrites the
/// ring (the guest's own fault). Whatever the backend then sees in the ring, the
/// host survives, that disk at worst disconnects, other disks are unaffected.
#[test]
fn read_into_the_ring_page_fails_that_disk_at_most() {
    let dir = TempDir::new("ringdata");
    let hv = hv();
    let (go, res, _good_be) = good_domain(&hv, &dir);
    // An image of 0xff bytes: the ring header becomes u32::MAX indices.
    let img = dir.path().join("ff.img");
    std::fs::write(&img, vec![0xffu8; DISK]).unwrap();
    let dom = domain(&hv, "hostile", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let rr = f.ring_ref;
    f.push(&[
        rw(blkif::OP_READ, 1, 0, &[seg(rr, 0, 7)], None),
        rw(blkif::OP_READ, 2, 0, &[seg(rr, 0, 7)], None),
    ]);
    wait_until("that disk disconnected", || {
        be_node(&hv, &be, "state").as_deref() == Some("5")
    });
    assert!(!be_node(&hv, &be, "error").unwrap_or_default().is_empty());
    wait_until("ring unmapped", || hv.grant_pins(dom.id(), rr) == 0);
    check_good(go, res);
    drop(f);
    be.destroy();
}

/// With persistent grants blkback remembers what an indirect page's descriptors
/// mapped to. A frontend rewriting the descriptors in place (same page, same count)
/// must get exactly what the new ones say: new pages, or an error for a malformed
/// or ungranted one; never the remembered pages.
#[test]
fn indirect_descriptors_rewritten_in_place_with_persistent_grants() {
    let dir = TempDir::new("ind-cache");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let disk = std::fs::read(&img).unwrap();
    let dom = domain(&hv, "indcache", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, true);
    let ind = f.grant(0, false);
    let a = f.grant(1, false);
    let b = f.grant(2, false);
    let sector = |s: usize| &disk[s * 512..s * 512 + PAGE_SIZE];
    let page = |f: &Front<'_>, i: usize| {
        let mut v = vec![0u8; PAGE_SIZE];
        f.page(i).read(0, &mut v);
        v
    };
    use blkif::OP_READ as R;
    let mut id = 100;
    let mut read = |f: &mut Front<'_>, descs: &[RequestSegment], at: u64| {
        f.page(1).fill(0, PAGE_SIZE, 0xa5);
        f.page(2).fill(0, PAGE_SIZE, 0xa5);
        write_descriptors(&f.page(0), descs);
        id += 1;
        f.call(indirect(R, id, at, descs.len() as u16, &[ind]))
            .status
    };
    // The same descriptors twice (the second time from the cache).
    for _ in 0..2 {
        assert_eq!(read(&mut f, &[seg(a, 0, 7)], 8), OK);
        assert_eq!(page(&f, 1), sector(8));
        assert!(page(&f, 2).iter().all(|&x| x == 0xa5));
    }
    // Rewritten in place: another page.
    assert_eq!(read(&mut f, &[seg(b, 0, 7)], 16), OK);
    assert_eq!(page(&f, 2), sector(16));
    assert!(
        page(&f, 1).iter().all(|&x| x == 0xa5),
        "not the remembered page"
    );
    // Rewritten to something malformed or ungranted: errors, nothing written.
    for bad in [seg(b, 0, 9), seg(b, 5, 1), seg(GrantRef(4000), 0, 7)] {
        assert_eq!(read(&mut f, &[bad], 16), ERR);
        assert!(page(&f, 1).iter().all(|&x| x == 0xa5));
        assert!(page(&f, 2).iter().all(|&x| x == 0xa5));
    }
    // Two descriptors, then back to the first set.
    assert_eq!(read(&mut f, &[seg(b, 0, 7), seg(a, 0, 7)], 24), OK);
    assert_eq!(page(&f, 2), sector(24));
    assert_eq!(page(&f, 1), sector(32));
    assert_eq!(read(&mut f, &[seg(a, 0, 7)], 40), OK);
    assert_eq!(page(&f, 1), sector(40));
    assert!(page(&f, 2).iter().all(|&x| x == 0xa5));
    assert_eq!(be.stats().errors, 3);
    f.close(&mut xs);
    be.destroy();
}
