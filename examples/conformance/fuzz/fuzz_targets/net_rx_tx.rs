//! Network ring responses and rx slot chains as xennet-front reads them: the fuzzer is
//! the netback. The vif connects through a real handshake (shim-hv's xenstored on the
//! store page of a host-memory guest); then every rx response (id, offset, flags such
//! as more_data/extra_info, status), raw rx/tx slots, raw `rsp_prod` values and backend
//! state moves come from the input, while the driver sends and receives. Frames come
//! out whole or are dropped and counted; the device may fail with a typed reason; no
//! panic, no hang.
#![no_main]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use hypercall::abi::netif::{RxRequest, RxResponse, TxRequest, TxResponse};
use hypercall::abi::ring as layout;
use hypercall::gnttab::GrantTable;
use hypercall::{GrantRef, Platform, Port};
use libfuzzer_sys::fuzz_target;
use xen_conformance::GrantObserver;
use xen_conformance::HostRegion;
use xenbus::Xenstore;
use xenkit_fuzz::store::device_store;
use xenkit_fuzz::{Cursor, HostPlatform};
use xennet_front::{Config, NetFront};
use xenstored::TxId;
use zerocopy::{FromBytes, IntoBytes};

const FE: &str = "/local/domain/1/device/vif/0";
const BE: &str = "/local/domain/0/backend/vif/1/0";
const TX_SLOT: usize = core::mem::size_of::<TxRequest>();
const RX_SLOT: usize = core::mem::size_of::<RxRequest>();
const TX_RING: u32 = layout::const_ring_size(4096, TX_SLOT);
const RX_RING: u32 = layout::const_ring_size(4096, RX_SLOT);

/// One shared ring as the backend sees it.
struct Side {
    mem: HostRegion,
    req_cons: u32,
    rsp_prod: u32,
}

impl Side {
    fn new(mem: HostRegion) -> Side {
        Side {
            mem,
            req_cons: 0,
            rsp_prod: 0,
        }
    }
    /// The next request slot's bytes, if the frontend published one.
    fn next_request(&mut self, slot: usize, size: u32) -> Option<Vec<u8>> {
        let prod = self.mem.mem().load_u32(layout::REQ_PROD);
        if self.req_cons == prod {
            return None;
        }
        let mut b = vec![0u8; slot];
        self.mem.mem().read(
            layout::HEADER_SIZE + (self.req_cons % size) as usize * slot,
            &mut b,
        );
        self.req_cons = self.req_cons.wrapping_add(1);
        Some(b)
    }
    fn respond(&mut self, slot: usize, size: u32, bytes: &[u8]) {
        let at = layout::HEADER_SIZE + (self.rsp_prod % size) as usize * slot;
        self.mem.mem().write(at, &bytes[..bytes.len().min(slot)]);
        self.rsp_prod = self.rsp_prod.wrapping_add(1);
        self.mem.mem().store_u32(layout::RSP_PROD, self.rsp_prod);
    }
}

struct Rings {
    tx: Side,
    rx: Side,
}

fuzz_target!(|data: &[u8]| {
    let host = Rc::new(HostPlatform::default());
    // Kept by xenstored (shim-hv) as a `'static` region: host memory outlives it
    // (`host` is declared first, so dropped last).
    let Some((xsd, store_gfn)) = device_store(
        &host,
        FE,
        BE,
        &[("mac", "00:16:3e:00:00:01"), ("handle", "0")],
        &[
            ("feature-rx-copy", "1"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("mtu", "1500"),
        ],
    ) else {
        return;
    };

    let table: GrantTable<256> = GrantTable::new(host.shared_pages(1)).unwrap();
    let obs = GrantObserver::new(&host, table.frames().unwrap());
    let input = Rc::new(RefCell::new(data.to_vec()));
    let rings: Rc<RefCell<Option<Rings>>> = Rc::new(RefCell::new(None));
    let turns = Rc::new(Cell::new(0u32));
    let live = Rc::new(Cell::new(false));

    let (xsd2, h2, rings2, input2, turns2, live2) = (
        xsd.clone(),
        host.clone(),
        rings.clone(),
        input.clone(),
        turns.clone(),
        live.clone(),
    );
    host.set_peer(Some(Box::new(move || {
        xsd2.service(1);
        turns2.set(turns2.get() + 1);
        let dom0 = xsd2.client(0);
        let mut r = rings2.borrow_mut();
        if r.is_none() {
            let st = dom0
                .read(TxId::NONE, &format!("{FE}/state"))
                .unwrap_or_default();
            if st != b"4" {
                return;
            }
            let key = |k: &str| {
                dom0.read(TxId::NONE, &format!("{FE}/{k}"))
                    .ok()
                    .and_then(|v| String::from_utf8(v).ok()?.parse::<u32>().ok())
            };
            let map = |k: &str| {
                key(k)
                    .and_then(|g| obs.frame(GrantRef(g)))
                    .and_then(|gfn| h2.frame(gfn))
            };
            let (Some(tx), Some(rx)) = (map("tx-ring-ref"), map("rx-ring-ref")) else {
                return;
            };
            *r = Some(Rings {
                tx: Side::new(tx),
                rx: Side::new(rx),
            });
            let _ = dom0.write(TxId::NONE, &format!("{BE}/state"), b"4");
            xsd2.service(1);
            return;
        }
        let Some(rings) = r.as_mut() else { return };
        if !live2.get() {
            return;
        }
        let mut inp = input2.borrow_mut();
        let snapshot = inp.clone();
        let mut c = Cursor::new(&snapshot);
        match c.u8() % 8 {
            // An rx response to the next posted buffer: offset, flags, status fuzzed.
            0..=2 => {
                if let Some(b) = rings.rx.next_request(RX_SLOT, RX_RING) {
                    let req = RxRequest::read_from_bytes(&b[..]).unwrap_or_default();
                    let rsp = RxResponse {
                        id: req.id,
                        offset: c.u16() % 4096,
                        flags: c.u16() & 0x3f,
                        status: c.u16() as i16,
                    };
                    rings.rx.respond(RX_SLOT, RX_RING, rsp.as_bytes());
                }
            }
            // A raw rx slot (e.g. an extra-info slot after NETRXF_extra_info).
            3 => {
                let _ = rings.rx.next_request(RX_SLOT, RX_RING);
                let raw = c.bytes(RX_SLOT).to_vec();
                rings.rx.respond(RX_SLOT, RX_RING, &raw);
            }
            // A tx response to the oldest request, with a fuzzed status (or raw id).
            4 => {
                if let Some(b) = rings.tx.next_request(TX_SLOT, TX_RING) {
                    let req = TxRequest::read_from_bytes(&b[..]).unwrap_or_default();
                    let raw_id = c.u8().is_multiple_of(4);
                    let rsp = TxResponse {
                        id: if raw_id { c.u16() } else { req.id },
                        status: (c.u8() as i8 % 3) as i16,
                    };
                    let mut slot = [0u8; TX_SLOT];
                    slot[..rsp.as_bytes().len()].copy_from_slice(rsp.as_bytes());
                    rings.tx.respond(TX_SLOT, TX_RING, &slot);
                }
            }
            // Raw producer indices.
            5 => rings.rx.mem.mem().store_u32(layout::RSP_PROD, c.u32()),
            6 => rings.tx.mem.mem().store_u32(layout::RSP_PROD, c.u32()),
            // Backend state moves.
            _ => {
                let st = [b"4", b"5", b"6", b"1"][usize::from(c.u8() % 4)];
                let _ = dom0.write(TxId::NONE, &format!("{BE}/state"), st);
                xsd2.service(1);
            }
        }
        let used = snapshot.len() - c.remaining();
        let n = used.max(1).min(inp.len());
        inp.drain(..n);
    })));

    let mut xs = Xenstore::new(&*host, store_gfn, Port(1)).unwrap();
    xs.set_timeout(Duration::from_millis(200));
    let cfg = Config {
        rx_buffers: 16,
        tx_buffers: 16,
        rx_error_limit: 64,
        ..Config::default()
    };
    let mut dev: NetFront<'_, &HostPlatform, 256> =
        match NetFront::connect(&*host, &table, &mut xs, 0, cfg, Duration::from_millis(200)) {
            Ok(d) => d,
            Err(_) => {
                host.set_peer(None);
                return;
            }
        };
    live.set(true);
    let mut buf = vec![0u8; 65536];
    let frame = [0x5au8; 60];
    while !input.borrow().is_empty() && turns.get() < 4000 {
        let _ = dev.send(&frame);
        host.wait();
        let _ = dev.poll();
        while let Ok(Some(m)) = dev.recv(&mut buf) {
            assert!(m.len <= buf.len());
        }
        let _ = dev.poll_backend(&mut xs);
    }
    let _ = dev.close(&mut xs, Duration::from_millis(50));
    xsd.release_domain(1);
    host.set_peer(None);
});
