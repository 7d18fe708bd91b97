//! Requests to shim-hv's xenstored, as a guest (unprivileged, on its store ring) and
//! as dom0 would send them: any bytes give replies or a failed connection, never a
//! panic, and the daemon keeps serving a well-behaved client afterwards.
#![no_main]

use std::sync::Arc;

use hypercall::abi::xs_wire::iface;
use libfuzzer_sys::fuzz_target;
use xenkit_fuzz::{Cursor, HostPlatform};
use xenstored::{Quotas, TxId, Xenstored};

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    // Inline (no worker thread): the run is deterministic, and no detached thread
    // can still be exiting when LeakSanitizer checks an input.
    let xs = Xenstored::new_inline(Quotas::default());
    let dom0 = xs.client(0);
    dom0.write(TxId::NONE, "/local/domain/1/name", b"fuzz")
        .unwrap();
    let guest = xs.client(1);
    // Through the engine directly, as dom0 (mode byte even) or as the guest.
    let rounds = c.u8() % 8;
    for _ in 0..rounds {
        let who = if c.u8().is_multiple_of(2) {
            &dom0
        } else {
            &guest
        };
        let ty = u32::from(c.u8() % 32);
        let tx = TxId(u32::from(c.u8() % 4));
        let len = usize::from(c.u8());
        let payload = c.bytes(len);
        let m = who.request(ty, tx, payload);
        assert_eq!(m.hdr.len as usize, m.payload.len());
    }
    // The rest goes raw onto a guest's store ring, with fuzzed indices.
    let host = HostPlatform::default();
    // Kept by xenstored as a `'static` region: `host` (declared first) outlives it.
    let page = host.shared_pages(1).leak();
    let req_cons = c.u32();
    let req_prod_delta = c.u32() % 2048;
    page.store_u32(iface::REQ_CONS, req_cons);
    page.store_u32(iface::RSP_CONS, req_cons);
    page.store_u32(iface::RSP_PROD, req_cons);
    let body = c.bytes(1024);
    for (i, b) in body.iter().enumerate() {
        page.write(
            iface::REQ + ((req_cons as usize + i) % 1024),
            core::slice::from_ref(b),
        );
    }
    page.store_u32(iface::REQ_PROD, req_cons.wrapping_add(req_prod_delta));
    if xs.introduce_domain(2, page, Arc::new(|| {})).is_ok() {
        xs.service(2);
        xs.service(2);
        xs.release_domain(2);
    }
    // Still serving.
    dom0.write(TxId::NONE, "/after", b"ok").unwrap();
    assert_eq!(dom0.read(TxId::NONE, "/after").unwrap(), b"ok");
});
