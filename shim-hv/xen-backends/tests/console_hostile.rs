//! What shim-hv's console backend reports when a guest breaks its console, and
//! vanished backends giving the guest a typed error (docs/hostile-input.md rows 36,
//! 37; C1, C4). The hostile guests themselves (indices past or behind, a scribbled
//! `in_cons`, event storms, binary output and input) are xen-conformance's
//! `consback.*` catalogue, run against this backend by `hostile_catalogue.rs`.

mod console_util;

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use console_util::{join_poweroff, setup, LONG};
use hypercall::abi::{console as abi, hvm};
use hypercall::{Gfn, Port, SharedMem, Xen};
use xen_backends::console::{ClientEvent, ConsoleConfig, ConsoleState, RingFault, Sink};
use xen_model::inproc::InProcGuest;
use xencons::{Config, Console, Error};

/// The guest's console page and port, raw (as a hostile guest would use them).
fn raw_console(g: &InProcGuest) -> (SharedMem<'_>, Port) {
    let xen = Xen(g);
    let pfn = xen.hvm_get_param(hvm::PARAM_CONSOLE_PFN).unwrap();
    let port = xen.hvm_get_param(hvm::PARAM_CONSOLE_EVTCHN).unwrap();
    (SharedMem::map_gfn(g, Gfn(pfn)).unwrap(), Port(port as u32))
}

/// What shim-hv tells about a console a guest broke (the breaking itself, and that
/// only that console fails, is xen-conformance's `consback.*` catalogue): its state
/// names the fault with the indices, and attached clients get the output before the
/// violation and then a `Closed` event with that state.
#[test]
fn a_broken_console_names_the_fault_to_its_clients() {
    let t = setup(ConsoleConfig::default());
    let bad = t.domain("bad");
    let bad_con = t.consoles.start(&bad, Sink::None).unwrap();
    let mut bad_client = bad_con.attach(true);

    let h =
        t.hv.spawn_guest(bad.clone(), |g| {
            let (page, port) = raw_console(&g);
            page.write(abi::OUT, b"ok so far");
            page.store_u32(abi::OUT_PROD, 9);
            Xen(&*g).evtchn_send(port).unwrap();
            while page.load_u32(abi::OUT_CONS) != 9 {
                hypercall::Platform::wait(&*g);
            }
            // Then claim 5000 bytes are waiting (more than the ring holds).
            page.store_u32(abi::OUT_PROD, 9 + 5000);
            Xen(&*g).evtchn_send(port).unwrap();
        })
        .unwrap();
    join_poweroff(h);
    let end = std::time::Instant::now() + LONG;
    while !matches!(bad_con.state(), ConsoleState::Failed(_)) {
        assert!(std::time::Instant::now() < end, "{:?}", bad_con.state());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        bad_con.state(),
        ConsoleState::Failed(RingFault::OutIndices {
            cons: 9,
            prod: 5009
        })
    );
    assert_eq!(
        bad_client.recv(LONG),
        Some(ClientEvent::Output(b"ok so far".to_vec()))
    );
    assert_eq!(
        bad_client.recv(LONG),
        Some(ClientEvent::Closed(ConsoleState::Failed(
            RingFault::OutIndices {
                cons: 9,
                prod: 5009
            }
        )))
    );
}

#[test]
fn stopped_backend_gives_the_writer_disconnected() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("stopped");
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let cfg = Config::default().with_stall_timeout(LONG);
            let mut c = Console::from_hvm_params_with(&*g, cfg).expect("console");
            c.write(b"before\n").unwrap();
            c.flush(LONG).unwrap();
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            tx.send(()).unwrap();
            // The backend is gone now: the write does not wait out LONG.
            let e = c.write(&[b'z'; 5000]).unwrap_err();
            assert_eq!(e.error, Error::Disconnected, "{e:?}");
        })
        .unwrap();
    rx.recv_timeout(LONG).unwrap();
    assert!(t.consoles.remove(dom.id()).is_some());
    go_tx.send(()).unwrap();
    rx.recv_timeout(LONG).unwrap();
    join_poweroff(h);
    assert_eq!(con.state(), ConsoleState::Closed);
    assert_eq!(con.history(), b"before\n");
}

#[test]
fn no_backend_at_all_gives_backend_gone_after_the_stall_timeout() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("unserved");
    let h =
        t.hv.spawn_guest(dom.clone(), |g| {
            let cfg = Config::default().with_stall_timeout(Duration::from_millis(100));
            let mut c = Console::from_hvm_params_with(&*g, cfg).expect("console");
            let e = c.write(&[b'q'; 3000]).unwrap_err();
            assert_eq!(e.written, 2048);
            assert!(matches!(e.error, Error::BackendGone { .. }), "{e:?}");
            // A later write fails at once (nothing moved).
            let e = c.write(b"x").unwrap_err();
            assert!(matches!(e.error, Error::BackendGone { .. }));
        })
        .unwrap();
    join_poweroff(h);
    // A backend that shows up late gets what the guest managed to write.
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    let end = std::time::Instant::now() + LONG;
    while con.output_total() < 2048 {
        assert!(std::time::Instant::now() < end);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(con.history(), vec![b'q'; 2048]);
}

#[test]
fn destroying_the_domain_closes_its_console() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("doomed");
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    let mut client = con.attach(true);
    let h =
        t.hv.spawn_guest(dom.clone(), |g| {
            let mut c = Console::from_hvm_params(&*g).expect("console");
            writeln!(c, "last words").unwrap();
        })
        .unwrap();
    join_poweroff(h);
    t.hv.destroy_domain(dom.id()).unwrap();
    let mut got = Vec::new();
    loop {
        match client.recv(LONG) {
            Some(ClientEvent::Output(b)) => got.extend(b),
            Some(ClientEvent::Closed(s)) => {
                assert_eq!(s, ConsoleState::Closed);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, b"last words\n");
}

/// A raw guest's console rings at their exact bounds, each started part way so
/// that the copies wrap: the output ring holding exactly `OUT_SIZE` bytes when
/// the backend looks, the input ring filled to exactly `IN_SIZE` bytes with more
/// input still queued (the backend looks again and must wait, not fail), then an
/// output producer one byte past a full ring (a fault naming both indices).
/// (`BackRing::drain`/`push_input`: the `> OUT_SIZE`/`> IN_SIZE` bounds as `>=`
/// or `==`, the wrap arithmetic.)
#[test]
fn console_rings_at_their_exact_bounds() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("bounds");
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    let full_out = console_util::pattern(abi::OUT_SIZE, 3);
    let first_in = b"hello".to_vec();
    let more_in = console_util::pattern(abi::IN_SIZE + 10, 7);
    let (out2, in1, in2) = (full_out.clone(), first_in.clone(), more_in.clone());
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let (page, port) = raw_console(&g);
            let kick = || Xen(&*g).evtchn_send(port).unwrap();
            // Waits for `done`, failing if the backend gave the console up.
            let wait = |what: &str, done: &dyn Fn() -> bool| {
                while !done() {
                    assert_eq!(
                        page.load_u8(abi::CONNECTION),
                        abi::CONNECTED,
                        "backend failed the console waiting for {what}"
                    );
                    hypercall::Platform::wait(&*g);
                }
            };
            let put = |prod: u32, bytes: &[u8]| {
                for (k, b) in bytes.iter().enumerate() {
                    let at = (prod as usize + k) % abi::OUT_SIZE;
                    page.write(abi::OUT + at, &[*b]);
                }
                let prod = prod + bytes.len() as u32;
                page.store_u32(abi::OUT_PROD, prod);
                kick();
                wait("output consumed", &|| page.load_u32(abi::OUT_CONS) == prod);
                prod
            };
            let take = |cons: u32, n: usize| {
                wait("input", &|| page.load_u32(abi::IN_PROD) == cons + n as u32);
                let mut v = vec![0u8; n];
                for (k, b) in v.iter_mut().enumerate() {
                    let mut one = [0u8];
                    page.read(abi::IN + (cons as usize + k) % abi::IN_SIZE, &mut one);
                    *b = one[0];
                }
                page.store_u32(abi::IN_CONS, cons + n as u32);
                kick();
                v
            };
            let prod = put(0, b"ok so far");
            // Exactly a full ring, from index 9 (wraps).
            let prod = put(prod, &out2);
            assert_eq!(take(0, 5), in1);
            let prod = put(prod, b"<ready>");
            // The host sends IN_SIZE + 10 bytes: the ring fills exactly (from
            // index 5, wrapping) and 10 stay queued. Two more rounds of output
            // make the backend look at the full input ring again.
            wait("a full input ring", &|| {
                page.load_u32(abi::IN_PROD) == 5 + 1024
            });
            let prod = put(prod, b"S");
            let prod = put(prod, b"T");
            let mut got = take(5, abi::IN_SIZE);
            got.extend(take(5 + abi::IN_SIZE as u32, 10));
            assert!(got == in2, "input differs");
            // One byte more than the ring holds.
            page.store_u32(abi::OUT_PROD, prod + abi::OUT_SIZE as u32 + 1);
            kick();
        })
        .unwrap();
    con.send_input(&first_in);
    con.wait_for(b"<ready>", LONG).unwrap();
    assert_eq!(con.send_input(&more_in), more_in.len());
    join_poweroff(h);
    let end = std::time::Instant::now() + LONG;
    while !matches!(con.state(), ConsoleState::Failed(_)) {
        assert!(std::time::Instant::now() < end, "{:?}", con.state());
        std::thread::sleep(Duration::from_millis(2));
    }
    let prod = (9 + abi::OUT_SIZE + 9) as u32;
    assert_eq!(
        con.state(),
        ConsoleState::Failed(RingFault::OutIndices {
            cons: prod,
            prod: prod + abi::OUT_SIZE as u32 + 1
        })
    );
    let mut want = b"ok so far".to_vec();
    want.extend(&full_out);
    want.extend(b"<ready>ST");
    assert!(con.history() == want, "history differs");
    assert_eq!(con.stats().input_bytes, (5 + abi::IN_SIZE + 10) as u64);
}

/// Output that fills the sink buffer exactly, with nothing left in the ring, is
/// no backpressure: the backend counts a stall only when the guest has more
/// waiting than the buffer takes. (`BackRing::out_pending` as `Ok(true)`.)
#[test]
fn output_filling_the_sink_buffer_exactly_is_no_backpressure() {
    let t = setup(ConsoleConfig {
        buffer_bytes: 64,
        ..ConsoleConfig::default()
    });
    let dom = t.domain("exact");
    let cap = console_util::Capture::new();
    let con = t
        .consoles
        .start(&dom, Sink::Writer(Box::new(cap.clone())))
        .unwrap();
    let data = console_util::pattern(64, 5);
    let d = data.clone();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let (page, port) = raw_console(&g);
            page.write(abi::OUT, &d);
            page.store_u32(abi::OUT_PROD, 64);
            Xen(&*g).evtchn_send(port).unwrap();
            while page.load_u32(abi::OUT_CONS) != 64 {
                hypercall::Platform::wait(&*g);
            }
        })
        .unwrap();
    join_poweroff(h);
    assert_eq!(cap.wait_len(64), data);
    let st = con.stats();
    assert_eq!((st.backpressure, st.dropped), (0, 0), "{st:?}");
}
