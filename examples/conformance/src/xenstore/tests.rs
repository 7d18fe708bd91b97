//! The server at the wire level: a raw client writes request bytes into the ring and
//! reads what comes back.

use super::*;
use hypercall::abi::xenbus::XenbusState;
use hypercall::abi::xs_wire::SERVER_FEATURE_ERROR;
use hypercall::Platform;

/// A raw guest side of the store page.
struct Raw {
    page: HostRegion,
}

impl Raw {
    fn new(server: &StoreServer) -> Raw {
        Raw {
            page: server.page(),
        }
    }

    fn send(&self, bytes: &[u8]) {
        let mem = self.page.mem();
        let prod = mem.load_u32(iface::REQ_PROD);
        for (i, b) in bytes.iter().enumerate() {
            let at = prod.wrapping_add(i as u32) as usize % RING_SIZE;
            mem.write(iface::REQ + at, core::slice::from_ref(b));
        }
        mem.store_u32(iface::REQ_PROD, prod.wrapping_add(bytes.len() as u32));
    }

    fn take(&self) -> Vec<u8> {
        let mem = self.page.mem();
        let cons = mem.load_u32(iface::RSP_CONS);
        let prod = mem.load_u32(iface::RSP_PROD);
        let n = prod.wrapping_sub(cons);
        let mut out = vec![0u8; n as usize];
        for (i, b) in out.iter_mut().enumerate() {
            let at = cons.wrapping_add(i as u32) as usize % RING_SIZE;
            mem.read(iface::RSP + at, core::slice::from_mut(b));
        }
        mem.store_u32(iface::RSP_CONS, prod);
        out
    }

    /// Sends one request, runs the server once, returns (type, req_id, tx_id, payload)
    /// of each message that came back.
    fn call(&self, server: &StoreServer, ty: u32, tx: u32, payload: &[u8]) -> Vec<Msg> {
        self.send(&message(ty, 7, tx, payload));
        server.step();
        let mut got = self.take();
        while server.pending_output() > 0 {
            server.step();
            got.extend(self.take());
        }
        split(&got)
    }
}

type Msg = (u32, u32, u32, Vec<u8>);

fn split(mut b: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let w = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        let (ty, id, tx, len) = (w(0), w(1), w(2), w(3) as usize);
        if b.len() < 16 + len {
            break;
        }
        out.push((ty, id, tx, b[16..16 + len].to_vec()));
        b = &b[16 + len..];
    }
    out
}

fn err(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

#[test]
fn found_through_the_hvm_params_and_serves_the_basic_operations() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let x = hypercall::Xen(&host);
    assert_eq!(x.hvm_get_param(PARAM_STORE_PFN).unwrap(), server.gfn().0);
    assert_eq!(x.hvm_get_param(PARAM_STORE_EVTCHN).unwrap(), 1);
    let raw = Raw::new(&server);
    let r = raw.call(&server, msg::WRITE, 0, b"a/b\0\xff\0v");
    assert_eq!(r, vec![(msg::WRITE, 7, 0, b"OK\0".to_vec())]);
    assert_eq!(
        server.read("a/b").unwrap(),
        b"\xff\0v",
        "binary values kept"
    );
    let r = raw.call(&server, msg::READ, 0, b"/local/domain/1/a/b\0");
    assert_eq!(r[0].3, b"\xff\0v");
    let r = raw.call(&server, msg::DIRECTORY, 0, b"a\0");
    assert_eq!(r[0].3, b"b\0");
    let r = raw.call(&server, msg::GET_PERMS, 0, b"a/b\0");
    assert_eq!(r[0].3, b"n1\0");
    let r = raw.call(&server, msg::READ, 0, b"nothing\0");
    assert_eq!(r, vec![(msg::ERROR, 7, 0, err("ENOENT"))]);
    let r = raw.call(&server, msg::READ, 0, b"/local/domain/0/name\0");
    assert_eq!(r[0].3, err("EACCES"), "dom0's tree is not the guest's");
    for bad in [
        &b"a//b\0"[..],
        b"a/\0",
        b"a\0b\0",
        b"no-nul",
        b"@x\0",
        b"a b\0",
    ] {
        let r = raw.call(&server, msg::READ, 0, bad);
        assert_eq!(r[0].3, err("EINVAL"), "{bad:?}");
    }
    let r = raw.call(&server, 0x1234, 0, b"");
    assert_eq!(r[0].3, err("EINVAL"));
    let r = raw.call(&server, msg::INTRODUCE, 0, b"1\0");
    assert_eq!(r[0].3, err("EACCES"));
    let r = raw.call(&server, msg::RM, 0, b"a\0");
    assert_eq!(r[0].3, b"OK\0");
    assert!(!server.exists("a/b"));
    let r = raw.call(&server, msg::RM, 0, b"x/y\0");
    assert_eq!(r[0].3, err("ENOENT"), "no parent");
    server.write("dir/x", b"");
    server.write("dir/yy", b"");
    let r = raw.call(&server, msg::DIRECTORY_PART, 0, b"dir\x000\0");
    let gen_end = r[0].3.iter().position(|&b| b == 0).unwrap();
    assert_eq!(&r[0].3[gen_end..], b"\0x\0yy\0\0", "whole list, end marker");
    let r = raw.call(&server, msg::DIRECTORY_PART, 0, b"dir\x002\0");
    assert_eq!(&r[0].3[gen_end..], b"\0yy\0\0", "from an offset");
    let r = raw.call(&server, msg::DIRECTORY_PART, 0, b"dir\0x\0");
    assert_eq!(r[0].3, err("EINVAL"));
    let r = raw.call(&server, msg::GET_DOMAIN_PATH, 0, b"5\0");
    assert_eq!(r[0].3, b"/local/domain/5\0");
    assert_eq!(server.requests().len(), 20);
    host.clear_peers();
}

#[test]
fn watches_fire_when_set_on_changes_and_from_hooks() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    let r = raw.call(&server, msg::WATCH, 0, b"dev\0tok\0");
    assert_eq!(r[0], (msg::WATCH, 7, 0, b"OK\0".to_vec()));
    assert_eq!(r[1], (msg::WATCH_EVENT, 0, 0, b"dev\0tok\0".to_vec()));
    let r = raw.call(&server, msg::WATCH, 0, b"dev\0tok\0");
    assert_eq!(r[0].3, err("EEXIST"));
    server.write("/local/domain/1/dev/x", b"1");
    server.fire("dev/never/there");
    server.send_watch_event(b"\xff", b"other");
    server.step();
    let r = split(&raw.take());
    assert_eq!(
        r.iter().map(|m| m.3.clone()).collect::<Vec<_>>(),
        [
            b"dev/x\0tok\0".to_vec(),
            b"dev/never/there\0tok\0".to_vec(),
            b"\xff\0other\0".to_vec()
        ]
    );
    let r = raw.call(&server, msg::UNWATCH, 0, b"dev\0tok\0");
    assert_eq!(r[0].3, b"OK\0");
    let r = raw.call(&server, msg::UNWATCH, 0, b"dev\0tok\0");
    assert_eq!(r[0].3, err("ENOENT"));
    host.clear_peers();
}

#[test]
fn transactions_commit_conflict_and_fail_on_demand() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    let r = raw.call(&server, msg::TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&r[0].3[..r[0].3.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    let r = raw.call(&server, msg::TRANSACTION_START, tx, b"\0");
    assert_eq!(r[0].3, err("EBUSY"));
    let r = raw.call(&server, msg::WRITE, tx, b"k\0v");
    assert_eq!(r[0], (msg::WRITE, 7, tx, b"OK\0".to_vec()), "tx_id echoed");
    assert!(!server.exists("k"), "not before the commit");
    let r = raw.call(&server, msg::READ, 99, b"k\0");
    assert_eq!(r[0].3, err("ENOENT"), "unknown transaction");
    server.fail_commits(1);
    let r = raw.call(&server, msg::TRANSACTION_END, tx, b"T\0");
    assert_eq!(r[0].3, err("EAGAIN"));
    let r = raw.call(&server, msg::TRANSACTION_END, tx, b"T\0");
    assert_eq!(r[0].3, err("ENOENT"), "ended by the failed commit");
    let r = raw.call(&server, msg::TRANSACTION_START, 0, b"\0");
    let tx = tx + 1;
    assert_eq!(r[0].3, format!("{tx}\0").into_bytes());
    raw.call(&server, msg::READ, tx, b"name\0");
    raw.call(&server, msg::WRITE, tx, b"k\0v");
    server.write("name", b"changed under it");
    let r = raw.call(&server, msg::TRANSACTION_END, tx, b"T\0");
    assert_eq!(r[0].3, err("EAGAIN"), "a node it read changed");
    assert!(!server.exists("k"));
    assert_eq!(server.commits(), 2);
    assert_eq!(server.open_transactions(), 0);
    host.clear_peers();
}

#[test]
fn scripted_answers_raw_bytes_and_silence() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    server.answer_next(Answer::Error("EWHAT".into()));
    server.answer_next(Answer::Silent);
    server.answer_next(Answer::Raw(header(msg::READ, 7, 0, 5000).to_vec()));
    server.answer_next(Answer::Reply(Box::new(|r: &Request| {
        message(r.header.ty, r.header.req_id, r.header.tx_id + 1, b"x")
    })));
    server.answer_next(Answer::Rewrite(Box::new(|_, mut b: Vec<u8>| {
        b.truncate(18);
        b
    })));
    assert_eq!(
        raw.call(&server, msg::READ, 0, b"name\0")[0].3,
        err("EWHAT")
    );
    assert!(raw.call(&server, msg::READ, 0, b"name\0").is_empty());
    raw.send(&message(msg::READ, 7, 0, b"name\0"));
    server.step();
    assert_eq!(raw.take(), header(msg::READ, 7, 0, 5000));
    assert_eq!(raw.call(&server, msg::READ, 0, b"name\0")[0].2, 1);
    raw.send(&message(msg::WRITE, 7, 0, b"w\0v"));
    server.step();
    assert_eq!(raw.take().len(), 18, "rewritten after taking effect");
    assert!(server.exists("w"));
    server.on_request(Some(Box::new(|r: &Request| {
        (r.path() == "name").then(|| Answer::Error("EACCES".into()))
    })));
    assert_eq!(
        raw.call(&server, msg::READ, 0, b"name\0")[0].3,
        err("EACCES")
    );
    assert_eq!(raw.call(&server, msg::READ, 0, b"w\0")[0].3, b"v");
    server.on_request(None);
    server.pause(true);
    assert!(raw.call(&server, msg::READ, 0, b"w\0").is_empty());
    server.pause(false);
    server.step();
    assert_eq!(split(&raw.take())[0].3, b"v", "answered once resumed");
    host.clear_peers();
}

#[test]
fn chunks_wrap_and_bad_indices_break_the_connection() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    server.set_indices(u32::MAX - 5);
    server.set_max_chunk(3);
    let raw = Raw::new(&server);
    raw.send(&message(msg::READ, 7, 0, b"name\0"));
    let mut got = Vec::new();
    for _ in 0..20 {
        server.step();
        let part = raw.take();
        assert!(part.len() <= 3);
        got.extend(part);
    }
    assert_eq!(split(&got)[0].3, b"guest1");
    server.set_rsp_prod(
        server
            .page()
            .mem()
            .load_u32(iface::RSP_CONS)
            .wrapping_sub(1),
    );
    server.push_raw(b"x");
    server.step();
    assert!(server.broken().unwrap().contains("response indices"));
    assert_eq!(server.page().mem().load_u32(iface::ERROR), ERROR_RINGIDX);
    let s2 = StoreServer::new(&HostPlatform::new());
    let raw2 = Raw::new(&s2);
    raw2.send(&header(msg::READ, 1, 0, 4097));
    s2.step();
    assert!(
        s2.broken().unwrap().contains("length 4097"),
        "{:?}",
        s2.broken()
    );
    s2.host().clear_peers();
    host.clear_peers();
}

#[test]
fn device_rig_makes_both_directories_like_a_toolstack() {
    let host = HostPlatform::new();
    let server = StoreServer::with_domid(&host, 3);
    let dev = server.add_device("vif", 0);
    assert_eq!(dev.node(), "device/vif/0");
    assert_eq!(dev.backend_path(), "/local/domain/0/backend/vif/3/0");
    assert_eq!(
        server.read_str("device/vif/0/backend").unwrap(),
        dev.backend_path()
    );
    assert_eq!(server.read_str("device/vif/0/backend-id").unwrap(), "0");
    assert_eq!(
        server
            .read_str(&format!("{}/frontend", dev.backend_path()))
            .unwrap(),
        "/local/domain/3/device/vif/0"
    );
    assert_eq!(dev.frontend_state(), Some(XenbusState::Initialising));
    assert_eq!(dev.backend_state(), Some(XenbusState::Initialising));
    assert_eq!(server.perms("device/vif/0").unwrap(), ["n3", "r0"]);
    assert_eq!(server.perms(dev.backend_path()).unwrap(), ["n0", "r3"]);
    dev.set_backend_key("mac", b"00:16:3e:00:00:01");
    assert_eq!(
        server
            .perms(&format!("{}/mac", dev.backend_path()))
            .unwrap(),
        ["n0", "r3"]
    );
    dev.set_backend_state(XenbusState::InitWait);
    // The guest can read the backend's keys, not its parents.
    let raw = Raw::new(&server);
    let state = format!("{}/state\0", dev.backend_path());
    assert_eq!(raw.call(&server, msg::READ, 0, state.as_bytes())[0].3, b"2");
    assert!(dev.remove_backend());
    assert_eq!(
        raw.call(&server, msg::READ, 0, state.as_bytes())[0].3,
        err("EACCES"),
        "under a removed backend directory"
    );
    let dd = server.add_device_in("vbd", 51712, 7);
    assert_eq!(dd.backend_path(), "/local/domain/7/backend/vbd/3/51712");
    assert_eq!(dd.backend_id(), 7);
    let fe_state = b"device/vbd/51712/state\0";
    raw.call(&server, msg::WRITE, 0, b"device/vbd/51712/state\x004");
    assert_eq!(dd.frontend_state(), Some(XenbusState::Connected));
    assert_eq!(raw.call(&server, msg::READ, 0, fe_state)[0].3, b"4");
    host.wait();
    assert!(server.turns() > 0);
    host.clear_peers();
}

#[test]
fn several_peers_run_in_turn_and_the_server_ends_with_its_handles() {
    use std::cell::Cell;
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let seen = Rc::new(Cell::new(0u64));
    let s = seen.clone();
    let dev = server.add_device("vbd", 1);
    let backend = host.add_peer(Box::new(move || {
        s.set(s.get() + 1);
        dev.set_backend_state(XenbusState::InitWait);
    }));
    host.wait();
    assert_eq!((server.turns(), seen.get()), (1, 1));
    assert!(host.remove_peer(backend));
    assert!(!host.remove_peer(backend));
    server.stop();
    host.wait();
    assert_eq!(server.turns(), 1, "stopped");
    drop(server);
    host.clear_peers();
}

#[test]
fn directory_part_splits_a_long_listing_into_whole_names() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    // 100 names of 50 bytes: more than one 4096-byte payload. Under Miri 12 names
    // of 410 bytes (also more than one payload; each write costs Miri a round of
    // the store, docs/miri.md).
    let (count, pad) = if cfg!(miri) { (12, 400) } else { (100, 40) };
    let names: Vec<String> = (0..count)
        .map(|i| format!("entry-{i:03}-{}", "x".repeat(pad)))
        .collect();
    for n in &names {
        server.write(&format!("big/{n}"), b"");
    }
    let raw = Raw::new(&server);
    let (mut got, mut offset) = (Vec::new(), 0usize);
    for _ in 0..4 {
        let r = raw.call(
            &server,
            msg::DIRECTORY_PART,
            0,
            format!("big\0{offset}\0").as_bytes(),
        );
        let body = &r[0].3;
        assert!(body.len() <= 4096);
        let list = &body[body.iter().position(|&b| b == 0).unwrap() + 1..];
        let done = list.ends_with(b"\0\0") || list == b"\0";
        let names_part = if done { &list[..list.len() - 1] } else { list };
        offset += names_part.len();
        got.extend(
            names_part
                .split(|&b| b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8(n.to_vec()).unwrap()),
        );
        if done {
            break;
        }
    }
    assert_eq!(got, names, "every name once, in order, none cut");
    host.clear_peers();
}

// ---- tests written for the mutants of mod.rs (docs/mutants.md) --------------------

fn request(payload: &[u8]) -> Request {
    Request {
        header: MsgHeader {
            ty: msg::WRITE,
            req_id: 1,
            tx_id: 0,
            len: payload.len() as u32,
        },
        payload: payload.to_vec(),
    }
}

/// `Request::args` splits at every NUL, a final NUL ending the last string (no
/// case uses it; it is the hooks' public API).
#[test]
fn request_args_and_path() {
    let args =
        |p: &[u8]| -> Vec<Vec<u8>> { request(p).args().into_iter().map(<[u8]>::to_vec).collect() };
    assert_eq!(args(b"a/b\0tok\0"), [b"a/b".to_vec(), b"tok".to_vec()]);
    assert_eq!(args(b"k\0v"), [b"k".to_vec(), b"v".to_vec()]);
    assert_eq!(args(b"a\0\0"), [b"a".to_vec(), Vec::new()]);
    assert_eq!(args(b""), [Vec::<u8>::new()]);
    assert_eq!(request(b"a/b\0v\xff").path(), "a/b");
    assert_eq!(request(b"\xffz\0").path(), "\u{fffd}z");
}

/// MKDIR, SET_PERMS and RESET_WATCHES over the wire (no test client sends them),
/// and TRANSACTION_END's arguments: `F` aborts, anything but `T`/`F` is EINVAL.
#[test]
fn mkdir_set_perms_reset_watches_and_transaction_end_arguments() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    let r = raw.call(&server, msg::MKDIR, 0, b"made/here\0");
    assert_eq!(r[0], (msg::MKDIR, 7, 0, b"OK\0".to_vec()));
    assert_eq!(server.read("made/here").unwrap(), b"");
    let r = raw.call(&server, msg::SET_PERMS, 0, b"made/here\0n1\0r0\0w5\0");
    assert_eq!(r[0], (msg::SET_PERMS, 7, 0, b"OK\0".to_vec()));
    assert_eq!(server.perms("made/here").unwrap(), ["n1", "r0", "w5"]);
    for bad in [&b"made/here\0n1\0x0\0"[..], b"made/here\0n1", b"made/here"] {
        let r = raw.call(&server, msg::SET_PERMS, 0, bad);
        assert_eq!(r[0].3, err("EINVAL"), "{bad:?}");
    }
    assert_eq!(server.perms("made/here").unwrap(), ["n1", "r0", "w5"]);

    let r = raw.call(&server, msg::TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&r[0].3[..r[0].3.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    raw.call(&server, msg::WRITE, tx, b"aborted\0v");
    for bad in [&b"X\0"[..], b"\0", b"T", b"T\0F\0"] {
        let r = raw.call(&server, msg::TRANSACTION_END, tx, bad);
        assert_eq!(r[0].3, err("EINVAL"), "{bad:?}");
    }
    assert_eq!(server.open_transactions(), 1, "still open after bad ends");
    let r = raw.call(&server, msg::TRANSACTION_END, tx, b"F\0");
    assert_eq!(r[0], (msg::TRANSACTION_END, 7, tx, b"OK\0".to_vec()));
    assert!(!server.exists("aborted"), "F aborts");
    assert_eq!((server.open_transactions(), server.commits()), (0, 0));

    let r = raw.call(&server, msg::TRANSACTION_START, 0, b"\0");
    let tx2: u32 = std::str::from_utf8(&r[0].3[..r[0].3.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    raw.call(&server, msg::WATCH, 0, b"made\0tok\0");
    let r = raw.call(&server, msg::RESET_WATCHES, 0, b"");
    assert_eq!(r[0], (msg::RESET_WATCHES, 7, 0, b"OK\0".to_vec()));
    assert!(server.watches().is_empty());
    let r = raw.call(&server, msg::READ, tx2, b"name\0");
    assert_eq!(r[0].3, err("ENOENT"), "transactions dropped too");
    host.clear_peers();
}

/// WATCH takes the two special paths xenstored knows and well-formed paths, and
/// refuses other `@` names and malformed paths.
#[test]
fn watch_paths_special_and_malformed() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    for ok in [
        &b"@releaseDomain\0t\0"[..],
        b"@introduceDomain\0t\0",
        b"/local/domain/1\0t\0",
        b"rel\0t\0",
    ] {
        let r = raw.call(&server, msg::WATCH, 0, ok);
        assert_eq!(r[0].3, b"OK\0", "{ok:?}");
    }
    for bad in [
        &b"@other\0t\0"[..],
        b"@releaseDomainX\0t\0",
        b"a//b\0t\0",
        b"a b\0t\0",
        b"rel\0",
        b"rel\0t\0x\0",
    ] {
        let r = raw.call(&server, msg::WATCH, 0, bad);
        assert_eq!(r[0].3, err("EINVAL"), "{bad:?}");
    }
    assert_eq!(server.watches().len(), 4);
    host.clear_peers();
}

/// GET_DOMAIN_PATH and DIRECTORY_PART's offset: decimal digits only, a domain id
/// up to 65535.
#[test]
fn decimal_arguments() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    for (arg, want) in [("65535", "/local/domain/65535"), ("007", "/local/domain/7")] {
        let r = raw.call(
            &server,
            msg::GET_DOMAIN_PATH,
            0,
            format!("{arg}\0").as_bytes(),
        );
        assert_eq!(r[0].3, format!("{want}\0").into_bytes(), "{arg}");
    }
    for bad in ["", "65536", "+5", "-1", "5x", "99999999999"] {
        let r = raw.call(
            &server,
            msg::GET_DOMAIN_PATH,
            0,
            format!("{bad}\0").as_bytes(),
        );
        assert_eq!(r[0].3, err("EINVAL"), "{bad:?}");
    }
    server.write("dir/x", b"");
    for bad in ["", "+0", "-0", "1 "] {
        let p = format!("dir\0{bad}\0");
        let r = raw.call(&server, msg::DIRECTORY_PART, 0, p.as_bytes());
        assert_eq!(r[0].3, err("EINVAL"), "{bad:?}");
    }
    host.clear_peers();
}

/// The request framing at its limits: a 4096-byte payload is a request, and 1024
/// bytes of requests at once (a full ring) are taken; 1025 break the connection.
#[test]
fn request_framing_at_its_limits() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    // A WRITE of exactly PAYLOAD_MAX bytes, sent in pieces the ring can hold.
    let mut payload = b"big\0".to_vec();
    payload.resize(PAYLOAD_MAX, b'v');
    let m = message(msg::WRITE, 7, 0, &payload);
    for piece in m.chunks(RING_SIZE) {
        raw.send(piece);
        server.step();
    }
    assert_eq!(split(&raw.take())[0].3, b"OK\0");
    assert_eq!(server.read("big").unwrap().len(), PAYLOAD_MAX - 4);
    // 1024 bytes of requests at once: READs of "name" (21 bytes each) and a
    // filler WRITE.
    let mut batch = Vec::new();
    for _ in 0..40 {
        batch.extend(message(msg::READ, 7, 0, b"name\0"));
    }
    let rest = RING_SIZE - batch.len() - 16;
    let mut w = b"f\0".to_vec();
    w.resize(rest, b'x');
    batch.extend(message(msg::WRITE, 7, 0, &w));
    assert_eq!(batch.len(), RING_SIZE);
    raw.send(&batch);
    let mut got = Vec::new();
    for _ in 0..10 {
        server.step();
        got.extend(raw.take());
    }
    assert_eq!(server.broken(), None);
    assert_eq!(split(&got).len(), 41);
    // One byte over a ring's worth: the server gives up.
    let page = server.page();
    let mem = page.mem();
    let cons = mem.load_u32(iface::REQ_CONS);
    mem.store_u32(iface::REQ_PROD, cons.wrapping_add(RING_SIZE as u32 + 1));
    server.step();
    assert!(server.broken().unwrap().contains("request indices"));
    assert_eq!(mem.load_u32(iface::ERROR), ERROR_RINGIDX);
    host.clear_peers();
}

/// A response ring the guest leaves full is not a broken connection: the server
/// waits, and goes on once the guest consumes.
#[test]
fn a_full_response_ring_waits_for_the_guest() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    server.write("v", &[b'x'; 2000]);
    raw.send(&message(msg::READ, 7, 0, b"v\0"));
    server.step();
    server.step();
    let page = server.page();
    let mem = page.mem();
    let used = mem
        .load_u32(iface::RSP_PROD)
        .wrapping_sub(mem.load_u32(iface::RSP_CONS));
    assert_eq!(used as usize, RING_SIZE, "full");
    assert_eq!(server.broken(), None);
    let mut got = raw.take();
    for _ in 0..3 {
        server.step();
        got.extend(raw.take());
    }
    assert_eq!(split(&got)[0].3, vec![b'x'; 2000]);
    host.clear_peers();
}

/// The ring reconnect of `io/xs_wire.h`: served when offered (indices, `error`
/// and a broken connection reset, watches and partial input dropped, then
/// `connection` cleared), not while held, not looked at when not offered.
#[test]
fn reconnect_served_held_or_not_offered() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let raw = Raw::new(&server);
    let page = server.page();
    let mem = page.mem();
    raw.call(&server, msg::WATCH, 0, b"w\0t\0");
    raw.send(&header(msg::READ, 7, 0, 5)); // a partial request
    server.step();
    let cons = mem.load_u32(iface::RSP_CONS);
    mem.store_u32(iface::RSP_PROD, cons.wrapping_add(2000)); // broken
    server.step();
    assert!(server.broken().is_some());
    server.hold_reconnect(true);
    mem.store_u32(iface::CONNECTION, RECONNECT);
    server.step();
    assert_eq!(
        (server.reconnects(), mem.load_u32(iface::CONNECTION)),
        (0, 1)
    );
    server.hold_reconnect(false);
    server.step();
    assert_eq!(server.reconnects(), 1);
    assert_eq!(mem.load_u32(iface::CONNECTION), CONNECTED);
    for off in iface::RING_INDICES {
        assert_eq!(mem.load_u32(off), 0, "index at {off}");
    }
    assert_eq!(mem.load_u32(iface::ERROR), 0);
    assert_eq!(server.broken(), None);
    assert!(server.watches().is_empty());
    let r = raw.call(&server, msg::READ, 0, b"name\0");
    assert_eq!(
        r,
        vec![(msg::READ, 7, 0, b"guest1".to_vec())],
        "fresh input"
    );
    server.step();
    assert_eq!(server.reconnects(), 1, "once per request");
    // Not offered: `connection` is not looked at.
    server.set_server_features(SERVER_FEATURE_ERROR);
    mem.store_u32(iface::CONNECTION, RECONNECT);
    server.step();
    assert_eq!(
        (server.reconnects(), mem.load_u32(iface::CONNECTION)),
        (1, 1)
    );
    let r = raw.call(&server, msg::READ, 0, b"name\0");
    assert_eq!(r[0].3, b"guest1", "still served");
    // Offered again with other feature bits: served.
    server.set_server_features(SERVER_FEATURE_RECONNECTION | 4);
    server.step();
    assert_eq!(
        (server.reconnects(), mem.load_u32(iface::CONNECTION)),
        (2, 0)
    );
    host.clear_peers();
}

/// The device rig's accessors and its strict decimals (what a backend peer reads of
/// the frontend's keys).
#[test]
fn device_rig_accessors_and_decimals() {
    let host = HostPlatform::new();
    let server = StoreServer::with_domid(&host, 3);
    let dev = server.add_device("vbd", 768);
    assert_eq!(dev.id(), 768);
    assert_eq!(dev.backend_id(), 0);
    assert_eq!(dev.frontend_path(), "/local/domain/3/device/vbd/768");
    assert_eq!(dev.server().domid(), 3);
    let dbg = format!("{dev:?}");
    assert!(
        dbg.contains(dev.frontend_path()) && dbg.contains(dev.backend_path()),
        "{dbg}"
    );
    let fe = |k: &str, v: &[u8]| server.write(&format!("device/vbd/768/{k}"), v);
    for (v, want) in [
        (&b"00000000000000000005"[..], Some(5)),
        (b"18446744073709551615", Some(u64::MAX)),
        (b"000000000000000000005", None),
        (b"18446744073709551616", None),
        (b"+5", None),
        (b"", None),
        (b"5 ", None),
    ] {
        fe("n", v);
        assert_eq!(dev.frontend_u64("n"), want, "{v:?}");
    }
    assert_eq!(dev.frontend_u64("missing"), None);
    for (v, want) in [
        (&b"0000000004"[..], Some(XenbusState::Connected)),
        (b"00000000004", None),
        (b"+4", None),
        (b"", None),
        (b"99", None),
    ] {
        fe("state", v);
        assert_eq!(dev.frontend_state(), want, "{v:?}");
    }
    // Two keys read at one generation are each their own.
    fe("a", b"1");
    fe("b", b"2");
    assert_eq!(dev.frontend_str("a").as_deref(), Some("1"));
    assert_eq!(dev.frontend_str("b").as_deref(), Some("2"));
    assert_eq!(dev.frontend_str("a").as_deref(), Some("1"));
    assert_eq!(dev.frontend_key("c"), None);
    fe("c", b"3");
    assert_eq!(
        dev.frontend_key("c"),
        Some(b"3".to_vec()),
        "read again after a change"
    );
    // A backend key that exists keeps the permissions it was given.
    dev.set_backend_key("k", b"1");
    let k = format!("{}/k", dev.backend_path());
    server.set_perms(&k, &["n0", "b3"]).unwrap();
    dev.set_backend_key("k", b"2");
    assert_eq!(server.perms(&k).unwrap(), ["n0", "b3"]);
    assert_eq!(dev.backend_key("k"), Some(b"2".to_vec()));
    assert!(dev.remove_frontend());
    assert!(!dev.remove_frontend());
    assert!(!server.exists("device/vbd/768"));
    assert!(dev.remove_backend());
    assert!(!dev.remove_backend());
    assert_eq!(dev.backend_state(), None);
    host.clear_peers();
}

/// The server's hooks a case drives (the tree as the toolstack, the answers, the
/// ring fields), each against what the guest's side sees.
#[test]
fn hooks_act_on_the_tree_the_answers_and_the_page() {
    let host = HostPlatform::new();
    let server = StoreServer::with_domid(&host, 3);
    let dbg = format!("{server:?}");
    assert!(
        dbg.contains("domid: 3") && dbg.contains("StoreServer"),
        "{dbg}"
    );
    assert_eq!(server.gfn().0, host.hvm_param(PARAM_STORE_PFN));
    assert_eq!(server.gfn(), server.page().gfn());
    assert_eq!(
        u64::from(server.port().0),
        host.hvm_param(PARAM_STORE_EVTCHN)
    );
    assert_eq!(server.port(), STORE_PORT);
    assert_eq!(server.home(), "/local/domain/3");
    assert_eq!(
        server.page().mem().load_u32(iface::SERVER_FEATURES),
        SERVER_FEATURE_RECONNECTION | SERVER_FEATURE_ERROR
    );
    // The tree.
    assert_eq!(server.read("missing"), None);
    assert_eq!(server.read_str("name").as_deref(), Some("guest3"));
    assert_eq!(server.read("/local/domain/3/domid"), Some(b"3".to_vec()));
    let g = server.generation();
    server.write("x/y", b"v");
    assert!(server.generation() > g);
    assert!(server.exists("x/y") && server.exists("/local/domain/3/x"));
    assert!(!server.exists("x/z"));
    assert_eq!(server.directory("/local/domain/3"), ["domid", "name", "x"]);
    assert_eq!(server.directory("x"), ["y"]);
    assert!(server.directory("x/y").is_empty());
    assert_eq!(server.perms("x/y").unwrap(), ["n3"]);
    assert_eq!(server.perms("x/none"), None);
    assert!(server.set_perms("x/y", &[]).is_err());
    assert!(server.set_perms("x/y", &["n0", "q1"]).is_err());
    assert_eq!(
        server.perms("x/y").unwrap(),
        ["n3"],
        "nothing set on an error"
    );
    server.set_perms("x/y", &["n0", "r3"]).unwrap();
    assert_eq!(server.perms("x/y").unwrap(), ["n0", "r3"]);
    assert_eq!(server.read("x/y"), Some(b"v".to_vec()), "the value kept");
    server.set_perms("x/new", &["b3"]).unwrap();
    assert_eq!(server.read("x/new"), Some(Vec::new()));
    assert!(server.remove("x"));
    assert!(!server.remove("x"));
    assert!(!server.exists("x/y"));
    // Watches, firings and raw events, as the guest receives them.
    let raw = Raw::new(&server);
    assert!(server.watches().is_empty());
    let r = raw.call(&server, msg::WATCH, 0, b"w\0tok\0");
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        server.watches(),
        [Watch {
            path: "w".into(),
            token: "tok".into()
        }]
    );
    server.fire("w/deep");
    server.send_watch_event(b"any", b"thing");
    server.step();
    let ev = split(&raw.take());
    assert_eq!(
        ev,
        [
            (msg::WATCH_EVENT, 0, 0, b"w/deep\0tok\0".to_vec()),
            (msg::WATCH_EVENT, 0, 0, b"any\0thing\0".to_vec())
        ]
    );
    server.fire("/elsewhere");
    server.step();
    assert!(raw.take().is_empty());
    // Answers: an error's name and the request's ids; raw bytes pushed.
    server.answer_next(Answer::Error("EQUOTA".into()));
    let r = raw.call(&server, msg::READ, 9, b"name\0");
    assert_eq!(r, [(msg::ERROR, 7, 9, err("EQUOTA"))]);
    server.push_raw(b"0123");
    assert_eq!(server.pending_output(), 4);
    server.step();
    assert_eq!(raw.take(), b"0123");
    assert_eq!(server.pending_output(), 0);
    let rule: Rule = Box::new(|req| (req.path() == "name").then_some(Answer::Silent));
    server.on_request(Some(rule));
    assert!(raw.call(&server, msg::READ, 0, b"name\0").is_empty());
    assert_eq!(raw.call(&server, msg::READ, 0, b"domid\0")[0].3, b"3");
    server.on_request(None);
    assert_eq!(raw.call(&server, msg::READ, 0, b"name\0")[0].3, b"guest3");
    // Transactions: counted, failed on demand.
    let start = raw.call(&server, msg::TRANSACTION_START, 0, b"\0");
    assert_eq!(server.open_transactions(), 1);
    let id: u32 = std::str::from_utf8(start[0].3.strip_suffix(b"\0").unwrap())
        .unwrap()
        .parse()
        .unwrap();
    server.fail_commits(1);
    let r = raw.call(&server, msg::TRANSACTION_END, id, b"T\0");
    assert_eq!(r[0].3, err("EAGAIN"));
    assert_eq!((server.commits(), server.open_transactions()), (1, 0));
    // Pause and chunks.
    server.pause(true);
    let logged = server.requests().len();
    raw.send(&message(msg::READ, 1, 0, b"name\0"));
    let turns = server.turns();
    server.step();
    assert_eq!(server.turns(), turns + 1);
    assert!(raw.take().is_empty() && server.requests().len() == logged);
    server.pause(false);
    server.set_max_chunk(0);
    server.step();
    assert_eq!(raw.take().len(), 1, "at least one byte a turn");
    assert!(server.pending_output() > 0);
    server.set_max_chunk(5);
    server.step();
    assert_eq!(raw.take().len(), 5);
    server.set_max_chunk(RING_SIZE);
    server.step();
    raw.take();
    // The page's fields.
    server.set_error_field(2);
    assert_eq!(server.page().mem().load_u32(iface::ERROR), 2);
    server.set_server_features(0);
    assert_eq!(server.page().mem().load_u32(iface::SERVER_FEATURES), 0);
    assert_eq!(server.broken(), None);
    server.set_rsp_prod(server.page().mem().load_u32(iface::RSP_CONS) + 4097);
    assert_eq!(
        server.page().mem().load_u32(iface::RSP_PROD),
        server.page().mem().load_u32(iface::RSP_CONS) + 4097
    );
    server.push_raw(b"x");
    server.step();
    assert!(server.broken().unwrap().contains("response indices"));
    assert_eq!(server.reconnects(), 0);
    host.clear_peers();
}

#[test]
fn set_indices_sets_all_four_and_stop_leaves_the_platform() {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    assert_eq!(server.domid(), GUEST_DOMID);
    server.set_indices(u32::MAX - 3);
    let page = server.page();
    let mem = page.mem();
    for off in [
        iface::REQ_CONS,
        iface::REQ_PROD,
        iface::RSP_CONS,
        iface::RSP_PROD,
    ] {
        assert_eq!(mem.load_u32(off), u32::MAX - 3, "{off}");
    }
    let raw = Raw::new(&server);
    assert_eq!(raw.call(&server, msg::READ, 0, b"domid\0")[0].3, b"1");
    assert_ne!(mem.load_u32(iface::RSP_PROD), u32::MAX - 3, "wrapped");
    let dev = server.add_device_in("vif", 1, 5);
    assert_eq!(dev.backend_id(), 5);
    assert!(server.exists("/local/domain/5/backend/vif/1/1/state"));
    let turns = server.turns();
    host.wait();
    assert_eq!(server.turns(), turns + 1);
    server.stop();
    host.wait();
    assert_eq!(server.turns(), turns + 1, "no turn once stopped");
    assert_eq!(server.host().hvm_param(PARAM_STORE_PFN), server.gfn().0);
    host.clear_peers();
}

#[test]
fn answers_show_their_kind() {
    let shown: Vec<String> = [
        Answer::Serve,
        Answer::Silent,
        Answer::Error("EIO".into()),
        Answer::Raw(vec![0; 3]),
        Answer::Reply(Box::new(|_| Vec::new())),
        Answer::Rewrite(Box::new(|_, b| b)),
    ]
    .iter()
    .map(|a| format!("{a:?}"))
    .collect();
    assert_eq!(
        shown,
        [
            "Serve",
            "Silent",
            "Error(\"EIO\")",
            "Raw(3 bytes)",
            "Reply(..)",
            "Rewrite(..)"
        ]
    );
}
