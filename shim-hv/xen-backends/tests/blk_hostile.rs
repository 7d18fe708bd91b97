//! A hostile guest against blkback, end to end: the checks that are particular to
//! shim-hv's blkback (docs/hostile-input.md D3: what is offered and read-only disks;
//! its cache of indirect descriptors). The backend-independent hostile-frontend
//! cases (malformed requests, bad indirect requests, ring overruns, garbage event
//! indices, bad connect keys, reads into the ring page, grants revoked
//! mid-request, closing with requests in flight) are xen-conformance's `blkback.*`
//! catalogue, run against blkback by `hostile_catalogue.rs`.
//!
//! The guest is driven from the test thread ([`InProcGuest::new`]): the xenbus
//! handshake through `xenbus::frontend::FrontendHandshake`, then raw requests on a
//! `FrontRing<blkif::Request, blkif::Response>` with grants from a real
//! `GrantTable`.

mod blk_util;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blk_util::*;
use hypercall::abi::blkif::{self, Request, RequestIndirect, RequestSegment, Response};
use hypercall::gnttab::GrantTable;
use hypercall::ring::FrontRing;
use hypercall::{DomId, Gfn, GrantRef, Port, SharedMem, Xen, PAGE_SIZE};
use xbd_front::Config;
use xen_backends::blk::{BackendFlags, BlkBackend, BlkConfig, BlkOffer, Target};
use xen_conformance::backend::requests::{discard, indirect, rw, segment as seg};
use xen_model::inproc::InProcGuest;
use xen_model::{Domain, Hypervisor};
use xenbus::frontend::FrontendHandshake;
use xenbus::{Path, Store, XenbusState, Xenstore};

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
        flags: BackendFlags::empty(),
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

/// Two queues under a `ring-page-order` above what the backend offers
/// (`max-ring-page-order` 0 here, below the protocol's own limit of 4, which the
/// ring mapping checks again): the connection is refused with an error naming
/// the key, even though every ring page is granted and would map. The same keys
/// with order 0 connect. (Catches `read_queue_refs`' order guard as `true`.)
#[test]
fn queue_ring_order_above_the_offer_is_refused() {
    let dir = TempDir::new("mq-order");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let dom = domain(&hv, "mqorder", 32);
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    for (devid, name, order) in [(XVDA, "xvda", 1u32), (XVDB, "xvdb", 0)] {
        let mut c = cfg(&img, devid, name);
        c.offer = BlkOffer {
            max_queues: 2,
            max_ring_page_order: 0,
            ..BlkOffer::default()
        };
        let be = backend(&hv, &dom, c);
        let mut hs = FrontendHandshake::new(&format!("device/vbd/{devid}")).unwrap();
        hs.start(&mut xs).unwrap();
        hs.wait_for_backend(&mut xs, STEP).unwrap();
        let pages = 1usize << order;
        let mut keys = vec![
            ("multi-queue-num-queues".to_string(), "2".to_string()),
            ("ring-page-order".to_string(), order.to_string()),
            ("protocol".to_string(), "x86_64-abi".to_string()),
        ];
        let mut refs = Vec::new();
        for q in 0..2 {
            let mem = hypercall::SharedPages::alloc(p, pages).unwrap().leak();
            FrontRing::<Request, Response, _>::init(mem).unwrap();
            for j in 0..pages {
                let g = h
                    .table
                    .grant_access(DomId(0), mem.page_gfn(p, j).unwrap(), false)
                    .unwrap();
                keys.push((format!("queue-{q}/ring-ref{j}"), g.0.to_string()));
                refs.push(g);
            }
            let port = Xen(p).evtchn_alloc_unbound(DomId(0)).unwrap();
            keys.push((format!("queue-{q}/event-channel"), port.0.to_string()));
        }
        hs.publish(&mut xs, XenbusState::Initialised, |tx, node| {
            for (k, v) in &keys {
                tx.write_str(&Path::join(node, k)?, v)?;
            }
            Ok(())
        })
        .unwrap();
        let r = hs.wait_connected(&mut xs, STEP);
        if order == 0 {
            r.unwrap();
            assert!(be.connected() && be.queues() == 2);
            hs.close(&mut xs, STEP).unwrap();
        } else {
            assert!(r.is_err(), "order {order} above the offer connected");
            assert!(!be.connected());
            let err = hv
                .xenstored()
                .client(0)
                .read(
                    xenstored::TxId::NONE,
                    &format!("{}/error", be.backend_path()),
                )
                .unwrap();
            let err = String::from_utf8_lossy(&err);
            assert!(err.contains("ring-page-order"), "{err}");
        }
        be.destroy();
        for g in refs {
            wait_until("ring unmapped", || hv.grant_pins(dom.id(), g) == 0);
            h.table.end_access(g).unwrap();
        }
    }
}

/// With persistent grants each data page is mapped once for the connection,
/// whatever the order of its refs: the backend's map count grows by one per new
/// ref, not per request, and a page stays mapped (pinned once) between requests.
/// (`PersistentGrants::get_or_map`: the index grown to `i + 1` (`<=` as `>`, `+`
/// as `*`): without it every request mapped its pages again.)
#[test]
fn persistent_grants_are_mapped_once() {
    let dir = TempDir::new("persist-once");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let dom = domain(&hv, "persist", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, true);
    // Refs in rising order, then one below them.
    let grefs: Vec<GrantRef> = (0..3).map(|i| f.grant(i, false)).collect();
    let order = [grefs[1], grefs[2], grefs[0]];
    let mut id = 0;
    for (n, &g) in order.iter().enumerate() {
        let before = be.stats().grant_maps;
        for _ in 0..4 {
            id += 1;
            let r = f.call(rw(blkif::OP_READ, id, 8, &[seg(g, 0, 7)], None));
            assert_eq!(r.status, OK);
        }
        assert_eq!(be.stats().grant_maps, before + 1, "ref {} (#{n})", g.0);
        assert_eq!(hv.grant_pins(dom.id(), g), 1, "kept mapped");
    }
    f.close(&mut xs);
    for g in grefs {
        assert_eq!(hv.grant_pins(dom.id(), g), 0);
        h.table.end_access(g).unwrap();
    }
    be.destroy();
}

/// A direct request of exactly `BLKIF_MAX_SEGMENTS_PER_REQUEST` (11) segments is
/// served, a write and the read back of 11 pages, byte for byte; 12 is refused
/// with nothing written; the same for a barrier with data. (`execute`: `n >
/// MAX_SEGMENTS_PER_REQUEST` as `>=`, in the read/write and in the barrier arm.)
#[test]
fn eleven_segments_served_twelve_refused() {
    let dir = TempDir::new("eleven");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let dom = domain(&hv, "eleven", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let grefs: Vec<GrantRef> = (0..12).map(|i| f.grant(i, false)).collect();
    let segs: Vec<RequestSegment> = grefs.iter().map(|&g| seg(g, 0, 7)).collect();
    let max = blkif::MAX_SEGMENTS_PER_REQUEST;
    for i in 0..12 {
        f.page(i).fill(0, PAGE_SIZE, 0x40 + i as u8);
    }
    let before = std::fs::read(&img).unwrap();
    let mut twelve = rw(blkif::OP_WRITE, 1, 64, &segs[..max], None);
    twelve.nr_segments = 12;
    assert_eq!(f.call(twelve).status, ERR);
    assert!(std::fs::read(&img).unwrap() == before, "nothing written");
    assert_eq!(
        f.call(rw(blkif::OP_WRITE, 2, 64, &segs[..max], None))
            .status,
        OK
    );
    for i in 0..max {
        f.page(i).fill(0, PAGE_SIZE, 0);
    }
    assert_eq!(
        f.call(rw(blkif::OP_READ, 3, 64, &segs[..max], None)).status,
        OK
    );
    let disk = std::fs::read(&img).unwrap();
    for i in 0..max {
        let mut got = vec![0u8; PAGE_SIZE];
        f.page(i).read(0, &mut got);
        assert!(
            got.iter().all(|&b| b == 0x40 + i as u8),
            "page {i} read back"
        );
        let at = 64 * 512 + i * PAGE_SIZE;
        assert!(disk[at..at + PAGE_SIZE]
            .iter()
            .all(|&b| b == 0x40 + i as u8));
    }
    // A barrier with data takes the same bound.
    let mut twelve = rw(blkif::OP_WRITE_BARRIER, 4, 64, &segs[..max], None);
    twelve.nr_segments = 12;
    assert_eq!(f.call(twelve).status, ERR);
    let r = f.call(rw(blkif::OP_WRITE_BARRIER, 5, 64, &segs[..max], None));
    assert_eq!(r.status, OK);
    f.close(&mut xs);
    for g in grefs {
        h.table.end_access(g).unwrap();
    }
    be.destroy();
}

/// An indirect request of exactly the offered `feature-max-indirect-segments` (8
/// here) is served, the data read where its descriptors say; one more segment is
/// refused. (`execute`: `n > max_indirect_segments` as `>=`.)
#[test]
fn indirect_request_of_exactly_the_offered_segments() {
    let dir = TempDir::new("ind-max");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let disk = std::fs::read(&img).unwrap();
    let dom = domain(&hv, "indmax", 32);
    let mut c = cfg(&img, XVDA, "xvda");
    c.offer = BlkOffer {
        max_indirect_segments: 8,
        ..BlkOffer::default()
    };
    let be = backend(&hv, &dom, c);
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let ind = f.grant(0, true);
    let grefs: Vec<GrantRef> = (1..=9).map(|i| f.grant(i, false)).collect();
    let segs: Vec<RequestSegment> = grefs.iter().map(|&g| seg(g, 0, 7)).collect();
    write_descriptors(&f.page(0), &segs);
    for i in 1..=9 {
        f.page(i).fill(0, PAGE_SIZE, 0xa5);
    }
    let r = f.call(indirect(blkif::OP_READ, 1, 16, 9, &[ind]));
    assert_eq!(r.status, ERR, "9 segments against an offer of 8");
    let r = f.call(indirect(blkif::OP_READ, 2, 16, 8, &[ind]));
    assert_eq!(r.status, OK, "exactly the 8 offered");
    for i in 1..=9 {
        let mut got = vec![0u8; PAGE_SIZE];
        f.page(i).read(0, &mut got);
        if i <= 8 {
            let at = 16 * 512 + (i - 1) * PAGE_SIZE;
            assert_eq!(got[..], disk[at..at + PAGE_SIZE], "page {i}");
        } else {
            assert!(got.iter().all(|&b| b == 0xa5), "the ninth page untouched");
        }
    }
    f.close(&mut xs);
    h.table.end_access(ind).unwrap();
    for g in grefs {
        h.table.end_access(g).unwrap();
    }
    be.destroy();
}

/// Flush and barrier each follow their own offered feature: a backend offering
/// only `feature-flush-cache` answers a flush OKAY and a barrier EOPNOTSUPP, one
/// offering only `feature-barrier` the reverse. (`execute`: `op ==
/// OP_FLUSH_DISKCACHE` as `!=`, which checked each against the other's flag.)
#[test]
fn flush_and_barrier_follow_their_own_feature() {
    let dir = TempDir::new("flush-barrier");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let dom = domain(&hv, "flushbar", 32);
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    for (devid, name, flag) in [
        (XVDA, "xvda", BackendFlags::FLUSH_CACHE),
        (XVDB, "xvdb", BackendFlags::BARRIER),
    ] {
        let mut c = cfg(&img, devid, name);
        c.offer = BlkOffer {
            flags: flag,
            ..BlkOffer::default()
        };
        let be = backend(&hv, &dom, c);
        let mut f = Front::connect(p, &h.table, &mut xs, devid, false);
        let flush = f.call(rw(blkif::OP_FLUSH_DISKCACHE, 1, 0, &[], None));
        let barrier = f.call(rw(blkif::OP_WRITE_BARRIER, 2, 0, &[], None));
        let want = if flag == BackendFlags::FLUSH_CACHE {
            (OK, NOTSUP)
        } else {
            (NOTSUP, OK)
        };
        assert_eq!((flush.status, barrier.status), want, "{name}");
        f.close(&mut xs);
        be.destroy();
    }
}

/// A flush carrying segments (no frontend sends one) is a flush only: the
/// segments are ignored and nothing is written. A barrier with the same segment
/// writes it. (`execute`: `op == OP_WRITE_BARRIER && n > 0` as `||`, which wrote
/// a flush's segments.)
#[test]
fn flush_with_segments_writes_nothing() {
    let dir = TempDir::new("flush-segs");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let dom = domain(&hv, "flushsegs", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let g = f.grant(0, true);
    f.page(0).fill(0, PAGE_SIZE, 0x77);
    let before = std::fs::read(&img).unwrap();
    let r = f.call(rw(blkif::OP_FLUSH_DISKCACHE, 1, 8, &[seg(g, 0, 7)], None));
    assert_eq!(r.status, OK);
    assert!(std::fs::read(&img).unwrap() == before, "a flush wrote data");
    let r = f.call(rw(blkif::OP_WRITE_BARRIER, 2, 8, &[seg(g, 0, 7)], None));
    assert_eq!(r.status, OK);
    let after = std::fs::read(&img).unwrap();
    assert!(after[8 * 512..8 * 512 + PAGE_SIZE]
        .iter()
        .all(|&b| b == 0x77));
    f.close(&mut xs);
    h.table.end_access(g).unwrap();
    be.destroy();
}

/// A discard punches the range it names: written data there reads back as zeros
/// afterwards, the sectors around it keep theirs; a discard ending exactly at the
/// disk's end is served, one sector further is refused; a discard of 0 sectors
/// is OKAY and changes nothing. (`execute`'s discard arm: `end > disk.bytes()` as
/// `>=`, `len == 0` as `!=` (every discard answered OKAY without punching) and
/// the fallocate flags' `|` as `&` (no hole punched).)
#[test]
fn discard_punches_exactly_its_range() {
    let dir = TempDir::new("discard");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let dom = domain(&hv, "discard", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let g = f.grant(0, false);
    f.page(0).fill(0, PAGE_SIZE, 0x77);
    let sectors = (DISK / 512) as u64;
    for at in [16u64, 24, 32, sectors - 8] {
        assert_eq!(
            f.call(rw(blkif::OP_WRITE, at, at, &[seg(g, 0, 7)], None))
                .status,
            OK
        );
    }
    let read = |f: &mut Front<'_>, at: u64| {
        f.page(0).fill(0, PAGE_SIZE, 0xa5);
        assert_eq!(
            f.call(rw(blkif::OP_READ, 1000 + at, at, &[seg(g, 0, 7)], None))
                .status,
            OK
        );
        let mut v = vec![0u8; PAGE_SIZE];
        f.page(0).read(0, &mut v);
        v
    };
    assert_eq!(f.call(discard(1, 24, 0)).status, OK, "0 sectors");
    assert!(
        read(&mut f, 24).iter().all(|&b| b == 0x77),
        "0 sectors discarded data"
    );
    assert_eq!(f.call(discard(2, 24, 8)).status, OK);
    assert!(
        read(&mut f, 24).iter().all(|&b| b == 0),
        "the range reads zeros"
    );
    assert!(
        read(&mut f, 16).iter().all(|&b| b == 0x77),
        "before it kept"
    );
    assert!(read(&mut f, 32).iter().all(|&b| b == 0x77), "after it kept");
    assert_eq!(
        f.call(discard(3, sectors - 7, 8)).status,
        ERR,
        "past the end"
    );
    assert!(read(&mut f, sectors - 8).iter().all(|&b| b == 0x77));
    assert_eq!(f.call(discard(4, sectors - 8, 8)).status, OK, "to the end");
    assert!(read(&mut f, sectors - 8).iter().all(|&b| b == 0));
    f.close(&mut xs);
    h.table.end_access(g).unwrap();
    be.destroy();
}

/// Segments naming part of their page (`first_sect`/`last_sect` other than 0
/// and 7): a write takes exactly the named sectors of each page, in order, to
/// consecutive disk sectors, and a read puts them back there, leaving the rest of
/// each page as it was; a request ending at the disk's last sector is served and
/// one a sector further refused. xbd-front sends whole pages, so only a raw
/// frontend reaches this. (`map_segments`: the byte count's `last - first` as
/// `+`, the region's offset `first_sect * 512` as `/`.)
#[test]
fn partial_page_segments_land_where_they_say() {
    let dir = TempDir::new("partial");
    let hv = hv();
    let img = image(&dir, "d.img", DISK);
    let dom = domain(&hv, "partial", 32);
    let be = backend(&hv, &dom, cfg(&img, XVDA, "xvda"));
    let h = Hostile::new(&hv, &dom);
    let p: &InProcGuest = &h.guest;
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let mut f = Front::connect(p, &h.table, &mut xs, XVDA, false);
    let grefs: Vec<GrantRef> = (0..8).map(|i| f.grant(i, false)).collect();
    // (page, first_sect, last_sect): 4 + 1 + 1 + 4 = 10 sectors.
    let layout = [(0usize, 2u8, 5u8), (1, 7, 7), (2, 0, 0), (3, 3, 6)];
    let segs = |base: usize| -> Vec<RequestSegment> {
        layout
            .iter()
            .map(|&(pg, a, b)| seg(grefs[base + pg], a, b))
            .collect()
    };
    for pg in 0..4 {
        for s in 0..8 {
            f.page(pg).fill(s * 512, 512, (0x80 + pg * 8 + s) as u8);
        }
    }
    let mut want = Vec::new();
    for &(pg, a, b) in &layout {
        for s in a..=b {
            want.extend([(0x80 + pg * 8 + s as usize) as u8; 512]);
        }
    }
    let before = std::fs::read(&img).unwrap();
    assert_eq!(
        f.call(rw(blkif::OP_WRITE, 1, 100, &segs(0), None)).status,
        OK
    );
    let disk = std::fs::read(&img).unwrap();
    let at = 100 * 512;
    assert!(
        disk[at..at + want.len()] == want[..],
        "the named sectors, in order"
    );
    assert!(disk[..at] == before[..at], "nothing before");
    assert!(
        disk[at + want.len()..] == before[at + want.len()..],
        "nothing after"
    );
    // Read them back into pages 4-7, the same sectors of each.
    for pg in 4..8 {
        f.page(pg).fill(0, PAGE_SIZE, 0xee);
    }
    assert_eq!(
        f.call(rw(blkif::OP_READ, 2, 100, &segs(4), None)).status,
        OK
    );
    let mut k = 0;
    for &(pg, a, b) in &layout {
        let mut got = vec![0u8; PAGE_SIZE];
        f.page(4 + pg).read(0, &mut got);
        for s in 0..8u8 {
            let sector = &got[s as usize * 512..(s as usize + 1) * 512];
            if (a..=b).contains(&s) {
                assert!(
                    sector == &want[k * 512..(k + 1) * 512],
                    "page {pg} sector {s}"
                );
                k += 1;
            } else {
                assert!(
                    sector.iter().all(|&x| x == 0xee),
                    "page {pg} sector {s} untouched"
                );
            }
        }
    }
    // The same 10 sectors up to the disk's last one, then one sector further.
    let last = (DISK / 512) as u64 - 10;
    assert_eq!(
        f.call(rw(blkif::OP_READ, 3, last, &segs(4), None)).status,
        OK
    );
    assert_eq!(
        f.call(rw(blkif::OP_READ, 4, last + 1, &segs(4), None))
            .status,
        ERR
    );
    f.close(&mut xs);
    for g in grefs {
        h.table.end_access(g).unwrap();
    }
    be.destroy();
}
