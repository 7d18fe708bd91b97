//! xs_wire replies and watch events as the xenbus client reads them: the fuzzer is
//! xenstored, writing any bytes into the response ring (and any response indices)
//! while the client makes requests. Every request ends with a value or a typed error,
//! never a panic or a hang (each wait is bounded by the virtual clock).
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use hypercall::abi::xs_wire::iface;
use hypercall::Port;
use libfuzzer_sys::fuzz_target;
use xenbus::{Store, TxId, Xenstore};
use xenkit_fuzz::HostPlatform;

fuzz_target!(|data: &[u8]| {
    let host = Rc::new(HostPlatform::default());
    let region = host.pages(1);
    let gfn = region.gfn();
    let input = Rc::new(RefCell::new(data.to_vec()));
    // The peer: each wait, takes the requests and writes the next chunk of the input
    // as response bytes; the first byte of a chunk picks the chunk length, and every
    // 8th chunk also moves rsp_prod by a raw amount.
    let (region, inp) = (region, input.clone());
    let mut turn = 0u32;
    host.set_peer(Some(Box::new(move || {
        let pg = region.mem();
        let mut data = inp.borrow_mut();
        if data.is_empty() {
            return;
        }
        pg.store_u32(iface::REQ_CONS, pg.load_u32(iface::REQ_PROD));
        let n = usize::from(data[0]) % 64 + 1;
        let n = n.min(data.len());
        let chunk: Vec<u8> = data.drain(..n).collect();
        turn += 1;
        let prod = pg.load_u32(iface::RSP_PROD);
        if turn.is_multiple_of(8) && chunk.len() >= 4 {
            let raw = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            pg.store_u32(iface::RSP_PROD, prod.wrapping_add(raw));
            return;
        }
        for (i, b) in chunk.iter().enumerate() {
            let at = iface::RSP + (prod.wrapping_add(i as u32) as usize % 1024);
            pg.write(at, core::slice::from_ref(b));
        }
        pg.store_u32(iface::RSP_PROD, prod.wrapping_add(chunk.len() as u32));
    })));
    // The peer holds a region (a handle on the platform): clear it on every way out.
    let _clear = xenkit_fuzz::ClearPeer(&host);
    let mut xs = match Xenstore::new(&*host, gfn, Port(3)) {
        Ok(x) => x,
        Err(_) => return,
    };
    xs.set_timeout(Duration::from_millis(20));
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        if input.borrow().is_empty() {
            break;
        }
        let _ = xs.read("device/vbd/51712/state", &mut buf);
        let _ = xs.read_u64("device/vbd/51712/sectors");
        let _ = xs.read_state("backend/state");
        let _ = xs.directory("device/vif", &mut buf).map(|d| d.count());
        let _ = xs.write("data/x", b"1");
        let _ = xs.transaction(|t| t.read_u32("a").map(|_| ()));
        let _ = xs.watch("device", "tok");
        let _ = xs.poll_watch_event();
        let _ = xs.get_perms("data", &mut buf);
        let _ = xs.request(TxId::NONE, 99, &[b"x\0"], &mut buf);
        if xs.broken().is_some() {
            break;
        }
    }
});
