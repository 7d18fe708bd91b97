//! Block ring responses as xbd-front reads them: the fuzzer is the block backend. The
//! device connects through a real xenstore (shim-hv's xenstored on the store page of a
//! host-memory guest); then every response slot, its id/operation/status and the raw
//! `rsp_prod` come from the input. Whatever arrives, the device gives results or typed
//! errors (a broken device), never a panic, and after close no grant is left except
//! those a backend might still map.
#![no_main]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use hypercall::abi::blkif::{Request, Response};
use hypercall::abi::ring as layout;
use hypercall::gnttab::GrantTable;
use hypercall::{GrantRef, Platform, Port};
use libfuzzer_sys::fuzz_target;
use xbd_front::{Config, Device};
use xen_conformance::GrantObserver;
use xen_conformance::HostRegion;
use xenbus::Xenstore;
use xenkit_fuzz::store::device_store;
use xenkit_fuzz::{Cursor, HostPlatform};
use xenstored::TxId;
use zerocopy::{FromBytes, IntoBytes};

const FE: &str = "/local/domain/1/device/vbd/51712";
const BE: &str = "/local/domain/0/backend/vbd/1/51712";
const SLOT: usize = core::mem::size_of::<Request>();
const RING: u32 = layout::const_ring_size(4096, SLOT);

/// The backend's view of the connected ring.
struct Ring {
    mem: HostRegion,
    req_cons: u32,
    rsp_prod: u32,
    pending: Vec<Request>,
}

fuzz_target!(|data: &[u8]| {
    let host = Rc::new(HostPlatform::default());
    // Kept by xenstored (shim-hv) as a `'static` region: host memory outlives it
    // (`host` is declared first, so dropped last).
    let Some((xsd, store_gfn)) = device_store(
        &host,
        FE,
        BE,
        &[],
        &[
            ("sectors", "2048"),
            ("info", "0"),
            ("sector-size", "512"),
            ("feature-flush-cache", "1"),
        ],
    ) else {
        return;
    };

    let table: GrantTable<512> = GrantTable::new(host.shared_pages(1)).unwrap();
    let obs = GrantObserver::new(&host, table.frames().unwrap());
    let input = Rc::new(RefCell::new(data.to_vec()));
    let ring: Rc<RefCell<Option<Ring>>> = Rc::new(RefCell::new(None));
    let turns = Rc::new(Cell::new(0u32));
    // The input is spent only once the device is connected (the handshake's own waits
    // must not eat it).
    let live = Rc::new(Cell::new(false));

    let (xsd2, h2, ring2, input2, turns2, live2) = (
        xsd.clone(),
        host.clone(),
        ring.clone(),
        input.clone(),
        turns.clone(),
        live.clone(),
    );
    host.set_peer(Some(Box::new(move || {
        xsd2.service(1);
        turns2.set(turns2.get() + 1);
        let dom0 = xsd2.client(0);
        let mut r = ring2.borrow_mut();
        if r.is_none() {
            let fe_state = dom0
                .read(TxId::NONE, &format!("{FE}/state"))
                .unwrap_or_default();
            if fe_state != b"3" {
                return;
            }
            let gref = dom0
                .read(TxId::NONE, &format!("{FE}/ring-ref"))
                .ok()
                .and_then(|v| String::from_utf8(v).ok()?.parse::<u32>().ok());
            let Some(mem) = gref
                .and_then(|g| obs.frame(GrantRef(g)))
                .and_then(|gfn| h2.frame(gfn))
            else {
                return;
            };
            *r = Some(Ring {
                mem,
                req_cons: 0,
                rsp_prod: 0,
                pending: Vec::new(),
            });
            let _ = dom0.write(TxId::NONE, &format!("{BE}/state"), b"4");
            xsd2.service(1);
            return;
        }
        let Some(ring) = r.as_mut() else { return };
        if !live2.get() {
            return;
        }
        // Take new requests (at most a ring's worth per turn).
        let prod = ring.mem.mem().load_u32(layout::REQ_PROD);
        for _ in 0..RING {
            if ring.req_cons == prod {
                break;
            }
            let mut slot = [0u8; SLOT];
            let at = layout::HEADER_SIZE + (ring.req_cons % RING) as usize * SLOT;
            ring.mem.mem().read(at, &mut slot);
            if let Ok(req) = Request::read_from_bytes(&slot[..]) {
                ring.pending.push(req);
            }
            ring.req_cons = ring.req_cons.wrapping_add(1);
        }
        // Answer as the input says.
        let mut inp = input2.borrow_mut();
        let snapshot = inp.clone();
        let mut c = Cursor::new(&snapshot);
        let mode = c.u8();
        match mode % 5 {
            // A proper answer to the oldest request, with a fuzzed status.
            0 | 1 if !ring.pending.is_empty() => {
                let req = ring.pending.remove(0);
                let rsp = Response {
                    id: req.id,
                    operation: req.operation,
                    _pad: 0,
                    status: c.u16() as i16 % 4,
                    _pad2: 0,
                };
                let at = layout::HEADER_SIZE + (ring.rsp_prod % RING) as usize * SLOT;
                ring.mem.mem().write(at, rsp.as_bytes());
                ring.rsp_prod = ring.rsp_prod.wrapping_add(1);
                ring.mem.mem().store_u32(layout::RSP_PROD, ring.rsp_prod);
            }
            // A raw response slot.
            2 => {
                let raw = c.bytes(16);
                let at = layout::HEADER_SIZE + (ring.rsp_prod % RING) as usize * SLOT;
                ring.mem.mem().write(at, raw);
                ring.rsp_prod = ring.rsp_prod.wrapping_add(1);
                ring.mem.mem().store_u32(layout::RSP_PROD, ring.rsp_prod);
            }
            // A raw rsp_prod.
            3 => ring.mem.mem().store_u32(layout::RSP_PROD, c.u32()),
            // Backend state moves.
            _ => {
                let st = [b"4", b"5", b"6", b"1"][usize::from(c.u8() % 4)];
                let _ = dom0.write(TxId::NONE, &format!("{BE}/state"), st);
                xsd2.service(1);
            }
        }
        let used = snapshot.len() - c.remaining();
        inp.drain(..used);
    })));

    let mut xs = Xenstore::new(&*host, store_gfn, Port(1)).unwrap();
    xs.set_timeout(Duration::from_millis(200));
    let cfg = Config {
        persistent: false,
        indirect: false,
        timeout: Duration::from_millis(200),
        poll_spin: Duration::ZERO,
        ..Config::default()
    };
    let mut dev: Device<&HostPlatform, &GrantTable<512>, 8, 11> =
        match Device::new(&*host, &table, 51712, cfg) {
            Ok(d) => d,
            Err(_) => {
                host.set_peer(None);
                return;
            }
        };
    if dev.connect(&mut xs).is_err() {
        host.set_peer(None);
        return;
    }
    live.set(true);
    let mut tags = Vec::new();
    while !input.borrow().is_empty() && turns.get() < 2000 {
        if tags.len() < 4 {
            if let Ok(t) = dev.submit_read(tags.len() as u64 * 8, 4096) {
                tags.push(t);
            }
        }
        host.wait();
        let _ = dev.poll();
        let _ = dev.poll_events(&mut xs);
        tags.retain(|&t| match dev.is_done(t) {
            Ok(true) => {
                let _ = dev.finish(t, &mut [&mut [0u8; 4096][..]]);
                false
            }
            Ok(false) => true,
            Err(_) => false,
        });
    }
    let _ = dev.close(&mut xs);
    xsd.release_domain(1);
    // The peer holds the platform and the daemon: break the cycle so both go.
    host.set_peer(None);
});
