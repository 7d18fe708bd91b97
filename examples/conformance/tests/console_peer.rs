//! A driver (xencons) against a scripted console backend on [`HostPlatform`]: the peer
//! runs inside the driver's waits, on the same thread (so this also runs under Miri).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use hypercall::abi::console as ring;
use hypercall::Port;
use xen_conformance::HostPlatform;
use xencons::{Config, Console, Error};

#[test]
fn console_talks_to_a_scripted_backend() {
    let h = Rc::new(HostPlatform::new());
    let region = h.pages(1);
    let gfn = region.gfn();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    // The backend: takes all output; answers the first complete line with "pong\n".
    h.set_peer(Some(Box::new(move || {
        let page = region.mem();
        let (cons, prod) = (page.load_u32(ring::OUT_CONS), page.load_u32(ring::OUT_PROD));
        let mut out = s.borrow_mut();
        let had_line = out.contains(&b'\n');
        for i in 0..prod.wrapping_sub(cons) {
            let at = ring::OUT + (cons.wrapping_add(i) as usize % ring::OUT_SIZE);
            out.push(page.load_u8(at));
        }
        page.store_u32(ring::OUT_CONS, prod);
        if !had_line && out.contains(&b'\n') {
            let p = page.load_u32(ring::IN_PROD);
            for (i, b) in b"pong\n".iter().enumerate() {
                let at = ring::IN + (p.wrapping_add(i as u32) as usize % ring::IN_SIZE);
                page.write(at, core::slice::from_ref(b));
            }
            page.store_u32(ring::IN_PROD, p.wrapping_add(5));
        }
    })));
    let mut con = Console::new(&*h, gfn, Port(2), Config::default()).unwrap();
    con.write(b"ping\n").unwrap();
    let mut buf = [0u8; 16];
    let n = con
        .read_timeout(&mut buf, Duration::from_millis(50))
        .unwrap();
    assert_eq!(&buf[..n], b"pong\n");
    assert_eq!(seen.borrow().as_slice(), b"ping\n");
    assert!(h.sends() > 0, "the driver notified its backend");
    // The peer holds a handle on the platform (its region): end the cycle.
    h.set_peer(None);
}

#[test]
fn console_input_index_past_the_ring_is_a_typed_error() {
    let h = HostPlatform::new();
    let region = h.pages(1);
    let page = region.mem();
    let mut con = Console::new(&h, region.gfn(), Port(2), Config::default()).unwrap();
    // A hostile backend: in_prod more than a ring ahead of in_cons (docs/hostile-input.md row 37).
    page.store_u32(ring::IN_PROD, ring::IN_SIZE as u32 + 1);
    let mut buf = [0u8; 8];
    let r = con.read_timeout(&mut buf, Duration::from_millis(5));
    assert!(matches!(r, Err(Error::Failed(_))), "{r:?}");
}
