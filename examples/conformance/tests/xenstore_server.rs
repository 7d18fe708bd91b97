//! xenbus's client against the public store server and device rig: a whole frontend
//! handshake with a scripted backend peer, transactions retried on EAGAIN, power
//! events, and hostile answers (this also runs under Miri).

use std::time::Duration;

use hypercall::abi::xenbus::XenbusState as S;
use hypercall::abi::xs_wire::msg;
use xen_conformance::xenstore::{message, Answer, Request, StoreServer};
use xen_conformance::HostPlatform;
use xenbus::frontend::{BackendEvent, FrontendHandshake};
use xenbus::power::{PowerControl, PowerEvent, PowerFeatures};
use xenbus::{ErrnoName, Error, Store, XenbusState, Xenstore};

const T: Duration = Duration::from_millis(50);

#[test]
fn frontend_handshake_with_a_backend_peer() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let dev = server.add_device("vbd", 51712);
    dev.set_backend_key("sectors", b"2048");
    dev.set_backend_state(S::InitWait);
    // The backend: once the frontend is Initialised with a ring-ref, connect.
    let be = dev.clone();
    host.add_peer(Box::new(move || {
        if be.frontend_state() == Some(S::Initialised)
            && be.frontend_u64("ring-ref").is_some()
            && be.backend_state() != Some(S::Connected)
        {
            be.set_backend_state(S::Connected);
        }
    }));
    let mut xs = Xenstore::from_hvm_params(host.clone()).unwrap();
    xs.set_timeout(T);
    let mut hs = FrontendHandshake::new(&dev.node()).unwrap();
    hs.start(&mut xs).unwrap();
    assert_eq!(hs.backend(), dev.backend_path());
    hs.wait_for_backend(&mut xs, T).unwrap();
    assert_eq!(
        xs.read_u64(&hs.backend_key("sectors").unwrap()).unwrap(),
        2048
    );
    hs.publish(&mut xs, XenbusState::Initialised, |tx, node| {
        tx.write_u32(&xenbus::Path::join(node, "ring-ref")?, 8)?;
        tx.write_u32(&xenbus::Path::join(node, "event-channel")?, 5)
    })
    .unwrap();
    hs.wait_connected(&mut xs, T).unwrap();
    assert_eq!(dev.frontend_state(), Some(S::Connected));
    assert_eq!(dev.frontend_u64("event-channel"), Some(5));

    // The toolstack removes the backend's directory: the frontend must see it go.
    dev.remove_backend();
    let mut ev = None;
    for _ in 0..50 {
        if let Some(e) = hs.poll_backend(&mut xs).unwrap() {
            ev = Some(e);
            break;
        }
        hypercall::Platform::wait(&host);
    }
    assert_eq!(ev, Some(BackendEvent::Closing(XenbusState::Unknown)));
    host.clear_peers();
}

#[test]
fn transactions_retry_on_eagain_and_power_events_arrive() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let mut xs = Xenstore::from_hvm_params(host.clone()).unwrap();
    xs.set_timeout(T);
    server.fail_commits(2);
    xs.transaction(|tx| tx.write("data/x", b"1")).unwrap();
    assert_eq!(server.commits(), 3);
    assert_eq!(server.read("data/x").unwrap(), b"1");

    let features = PowerFeatures::POWEROFF | PowerFeatures::REBOOT;
    let mut power = PowerControl::new(&mut xs, features).unwrap();
    assert_eq!(server.read_str("control/feature-reboot").unwrap(), "1");
    assert!(!server.exists("control/feature-suspend"));
    server.write("control/shutdown", b"reboot");
    assert_eq!(power.wait(&mut xs, T).unwrap(), PowerEvent::Reboot);
    assert_eq!(
        server.read("control/shutdown").unwrap(),
        b"",
        "acknowledged"
    );
    host.clear_peers();
}

#[test]
fn hostile_answers_reach_the_client_as_errors() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let mut xs = Xenstore::from_hvm_params(host.clone()).unwrap();
    xs.set_timeout(T);
    let mut buf = [0u8; 64];
    // The request's req_id with another tx_id.
    server.answer_next(Answer::Reply(Box::new(|r: &Request| {
        let h = r.header;
        message(h.ty, h.req_id, h.tx_id ^ 1, b"x")
    })));
    let e = xs.read("name", &mut buf);
    assert!(matches!(e, Err(Error::BadReply { op: msg::READ })), "{e:?}");
    // Silence: a timeout, then the connection still works.
    server.answer_next(Answer::Silent);
    assert!(matches!(xs.read("name", &mut buf), Err(Error::Timeout)));
    assert_eq!(xs.read_str("name", &mut buf).unwrap(), "guest1");
    // A value that is not a number, in any bytes.
    server.write("n", b"\xff12");
    assert!(matches!(xs.read_u32("n"), Err(Error::Parse { .. })));
    // Raw rsp_prod far past rsp_cons: the connection fails.
    server.pause(true);
    server.set_rsp_prod(4000);
    assert!(matches!(xs.read("name", &mut buf), Err(Error::Broken(_))));
    assert!(server.requests().iter().all(|r| r.header.ty == msg::READ));
    host.clear_peers();
}

#[test]
fn errors_as_xenstored_gives_them() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let mut xs = Xenstore::from_hvm_params(host.clone()).unwrap();
    xs.set_timeout(T);
    let mut buf = [0u8; 64];
    let eacces = Err(Error::Xenstore(ErrnoName::Eacces));
    assert_eq!(
        xs.read("/local/domain/0/name", &mut buf).map(|_| ()),
        eacces
    );
    assert_eq!(xs.write("/tool/x", b"").map(|_| ()), eacces);
    let r = xs.read_u32("missing");
    assert!(matches!(r, Err(Error::MissingKey(_))), "{r:?}");
    xs.watch("a", "t").unwrap();
    let again = xs.watch("a", "t");
    assert_eq!(again, Err(Error::Xenstore(ErrnoName::Eexist)));
    let mut d = [0u8; 64];
    let names: Vec<String> = xs
        .directory("/local/domain/1", &mut d)
        .unwrap()
        .map(String::from)
        .collect();
    assert_eq!(names, ["domid", "name"]);
    assert_eq!(server.watches().len(), 1);
    host.clear_peers();
}
