//! xenstored on a guest's store ring: a fake guest page in host memory, good and
//! hostile guests.

mod xenstored_common;

use hypercall::abi::xs_wire::{
    iface, msg, RING_SIZE, SERVER_FEATURE_ERROR, SERVER_FEATURE_RECONNECTION,
};
use std::sync::Arc;
use xenstored::{Access, Perm, Quotas, TxId, Xenstored, ERROR_PROTO, ERROR_RINGIDX};
use xenstored_common::{header_bytes, message, strs, Guest};

fn setup(quotas: Quotas, domids: &[u16]) -> Arc<Xenstored> {
    let xs = Xenstored::new(quotas);
    let dom0 = xs.client(0);
    for &d in domids {
        let p = format!("/local/domain/{d}");
        dom0.mkdir(TxId::NONE, &p).unwrap();
        dom0.set_perms(TxId::NONE, &p, &[Perm::new(d, Access::None)])
            .unwrap();
    }
    xs
}

fn ok(r: (u32, Vec<u8>), ty: u32) -> Vec<u8> {
    assert_eq!(r.0, ty, "reply {:?}", String::from_utf8_lossy(&r.1));
    r.1
}

fn err(r: (u32, Vec<u8>), name: &str) {
    assert_eq!(
        r.0,
        msg::ERROR,
        "expected {name}: {:?}",
        String::from_utf8_lossy(&r.1)
    );
    assert_eq!(r.1, strs(&[name]));
}

#[test]
fn requests_and_replies() {
    let xs = setup(Quotas::default(), &[1]);
    let mut g = Guest::introduce(&xs, 1);
    let m = g.mem();
    assert_eq!(
        m.load_u32(iface::SERVER_FEATURES),
        SERVER_FEATURE_RECONNECTION | SERVER_FEATURE_ERROR
    );
    ok(g.req(msg::WRITE, b"name\0guest-one"), msg::WRITE);
    assert_eq!(
        ok(g.req(msg::READ, &strs(&["name"])), msg::READ),
        b"guest-one"
    );
    assert_eq!(
        xs.client(0)
            .read(TxId::NONE, "/local/domain/1/name")
            .unwrap(),
        b"guest-one"
    );
    assert_eq!(
        ok(
            g.req(msg::GET_DOMAIN_PATH, &strs(&["1"])),
            msg::GET_DOMAIN_PATH
        ),
        strs(&["/local/domain/1"])
    );
    err(g.req(msg::READ, &strs(&["/local/domain/0"])), "EACCES");
    // Replies echo req_id and tx_id.
    let t = ok(g.req(msg::TRANSACTION_START, b"\0"), msg::TRANSACTION_START);
    let tx: u32 = std::str::from_utf8(&t[..t.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    let id = g.send(msg::WRITE, tx, b"intx\0v");
    let msgs = g.drain();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        (msgs[0].0.ty, msgs[0].0.req_id, msgs[0].0.tx_id),
        (msg::WRITE, id, tx)
    );
    let mut ev = Vec::new();
    ok(
        g.call(msg::TRANSACTION_END, tx, &strs(&["T"]), &mut ev),
        msg::TRANSACTION_END,
    );
    // WATCH: the reply first, then the initial event (relative path as registered).
    let id = g.send(msg::WATCH, 0, &strs(&["name", "tok"]));
    let msgs = g.drain();
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].0.ty, msgs[0].0.req_id), (msg::WATCH, id));
    assert_eq!(msgs[1].0.ty, msg::WATCH_EVENT);
    assert_eq!((msgs[1].0.req_id, msgs[1].0.tx_id), (0, 0));
    assert_eq!(msgs[1].1, strs(&["name", "tok"]));
    // Events caused by others arrive on the ring.
    xs.client(0)
        .write(TxId::NONE, "/local/domain/1/name", b"x")
        .unwrap();
    let msgs = g.drain();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1, strs(&["name", "tok"]));
    assert!(g.notifier.count() > 0);
}

#[test]
fn worker_thread_serves_kicks() {
    let xs = setup(Quotas::default(), &[2]);
    let mut g = Guest::introduce(&xs, 2);
    let seen = g.notifier.count();
    let m = message(msg::WRITE, 7, 0, b"k\0v");
    assert_eq!(g.push_bytes(&m), m.len());
    xs.kick(2);
    assert!(
        g.notifier.wait_past(seen),
        "no notification from the worker"
    );
    loop {
        if let Some((h, p)) = g.next_message() {
            assert_eq!((h.ty, h.req_id), (msg::WRITE, 7));
            assert_eq!(p, b"OK\0");
            break;
        }
        let seen = g.notifier.count();
        xs.kick(2);
        assert!(g.notifier.wait_past(seen));
    }
}

#[test]
fn partial_messages_across_kicks() {
    let xs = setup(Quotas::default(), &[1]);
    let mut g = Guest::introduce(&xs, 1);
    let m = message(msg::WRITE, 1, 0, b"dribble\0value");
    for (i, b) in m.iter().enumerate() {
        assert!(
            g.next_message().is_none(),
            "reply before the request was complete ({i})"
        );
        g.push_bytes(&[*b]);
        xs.service(1);
    }
    let (h, p) = g.next_message().expect("reply");
    assert_eq!((h.ty, p), (msg::WRITE, b"OK\0".to_vec()));
    // Header in one kick, payload in another.
    let m = message(msg::READ, 2, 0, &strs(&["dribble"]));
    g.push_bytes(&m[..16]);
    xs.service(1);
    assert!(g.next_message().is_none());
    g.push_bytes(&m[16..]);
    xs.service(1);
    assert_eq!(g.next_message().unwrap().1, b"value");
}

#[test]
fn indices_wrapping_around_u32() {
    for start in [0xFFFF_FF00u32, 0xFFFF_FFFF, 1000] {
        let xs = setup(Quotas::default(), &[1]);
        let mut g = Guest::introduce_at(&xs, 1, start);
        for i in 0..200u32 {
            let value = format!("value-{i}-{}", "x".repeat((i % 50) as usize));
            let mut p = strs(&[&format!("k{}", i % 7)]);
            p.extend_from_slice(value.as_bytes());
            ok(g.req(msg::WRITE, &p), msg::WRITE);
            assert_eq!(
                ok(
                    g.req(msg::READ, &strs(&[&format!("k{}", i % 7)])),
                    msg::READ
                ),
                value.as_bytes()
            );
        }
        assert_eq!(g.error(), 0);
    }
}

#[test]
fn full_response_ring_never_overwritten() {
    let xs = setup(Quotas::default(), &[1]);
    let mut g = Guest::introduce(&xs, 1);
    let big = vec![b'v'; 900];
    let mut p = b"big\0".to_vec();
    p.extend_from_slice(&big);
    ok(g.req(msg::WRITE, &p), msg::WRITE);
    // Ten reads of 900 bytes, none consumed until all were sent.
    let mut ids = Vec::new();
    for i in 0..10 {
        let m = message(msg::READ, 100 + i, 0, &strs(&["big"]));
        assert_eq!(g.push_bytes(&m), m.len());
        ids.push(100 + i);
        xs.service(1);
        let mm = g.mem();
        let used = mm
            .load_u32(iface::RSP_PROD)
            .wrapping_sub(mm.load_u32(iface::RSP_CONS));
        assert!(used as usize <= RING_SIZE);
    }
    let stats = xs.ring_stats(1).unwrap();
    assert!(
        stats.replies_queued > 0,
        "replies wait in the queue: {stats:?}"
    );
    let msgs = g.drain();
    let got: Vec<u32> = msgs.iter().map(|(h, _)| h.req_id).collect();
    assert_eq!(got, ids);
    assert!(msgs.iter().all(|(_, p)| *p == big));
}

#[test]
fn outstanding_quota_stops_reading_requests() {
    let xs = setup(
        Quotas {
            outstanding: 4,
            ..Quotas::default()
        },
        &[1],
    );
    let mut g = Guest::introduce(&xs, 1);
    let mut p = b"big\0".to_vec();
    p.extend_from_slice(&[b'v'; 1000]);
    ok(g.req(msg::WRITE, &p), msg::WRITE);
    let req = message(msg::READ, 1, 0, &strs(&["big"]));
    let before = g.mem().load_u32(iface::REQ_CONS);
    for _ in 0..20 {
        assert_eq!(g.push_bytes(&req), req.len());
    }
    xs.service(1);
    xs.service(1);
    // One reply on the ring, one partly written, four queued: six requests read.
    let consumed = g.mem().load_u32(iface::REQ_CONS).wrapping_sub(before) as usize;
    assert_eq!(consumed, 6 * req.len());
    assert_eq!(xs.ring_stats(1).unwrap().replies_queued, 4);
    // Consuming replies lets the rest through.
    let mut n = 0;
    while n < 20 {
        let msgs = g.drain();
        assert!(!msgs.is_empty(), "stalled after {n} replies");
        n += msgs.len();
    }
    assert_eq!(n, 20);
}

#[test]
fn watch_event_flood_is_bounded() {
    let xs = setup(
        Quotas {
            event_queue: 16,
            ..Quotas::default()
        },
        &[1],
    );
    let mut g = Guest::introduce(&xs, 1);
    let mut ev = Vec::new();
    err(g.call(msg::WATCH, 0, &strs(&["", "t"]), &mut ev), "EINVAL");
    ok(
        g.call(msg::WATCH, 0, &strs(&["/local/domain/1", "t"]), &mut ev),
        msg::WATCH,
    );
    let dom0 = xs.client(0);
    // The guest does not read its ring while 2000 changes happen.
    for i in 0..2000 {
        dom0.write(TxId::NONE, &format!("/local/domain/1/n{i}"), b"")
            .unwrap();
    }
    let stats = xs.ring_stats(1).unwrap();
    assert!(stats.events_queued <= 16, "{stats:?}");
    assert!(stats.events_dropped > 1000, "{stats:?}");
    let got = g.drain();
    assert!(got.len() < 100, "{} events", got.len());
    // Still delivers afterwards.
    dom0.write(TxId::NONE, "/local/domain/1/after", b"")
        .unwrap();
    let got = g.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, strs(&["/local/domain/1/after", "t"]));
}

#[test]
fn malformed_messages_on_the_ring() {
    let xs = setup(Quotas::default(), &[1, 2]);
    let mut g = Guest::introduce(&xs, 1);
    let mut other = Guest::introduce(&xs, 2);
    err(g.req(msg::READ, b"name"), "EINVAL");
    err(g.req(msg::READ, b""), "EINVAL");
    err(g.req(0xdead, b"x\0"), "ENOSYS");
    err(g.req(msg::WATCH_EVENT, &strs(&["a", "b"])), "ENOSYS");
    err(g.req(msg::SET_PERMS, &strs(&["x", "z9"])), "EINVAL");
    err(g.req(msg::WRITE, &strs(&["../x", ""])), "EINVAL");
    err(g.req(msg::WRITE, &strs(&[&"a".repeat(3000), ""])), "EINVAL");
    err(g.req(msg::INTRODUCE, &strs(&["3", "0", "1"])), "EACCES");
    err(g.req(msg::RELEASE, &strs(&["2"])), "EACCES");
    let mut ev = Vec::new();
    err(g.call(msg::READ, 12345, &strs(&["x"]), &mut ev), "ENOENT");
    // Another domain's transaction id.
    let t = ok(
        other.req(msg::TRANSACTION_START, b"\0"),
        msg::TRANSACTION_START,
    );
    let tx: u32 = std::str::from_utf8(&t[..t.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    err(g.call(msg::WRITE, tx, b"x\0v", &mut ev), "ENOENT");
    err(
        g.call(msg::TRANSACTION_END, tx, &strs(&["T"]), &mut ev),
        "ENOENT",
    );
    ok(
        other.call(msg::TRANSACTION_END, tx, &strs(&["T"]), &mut ev),
        msg::TRANSACTION_END,
    );
    // Nothing broke.
    assert_eq!(g.error(), 0);
    ok(g.req(msg::WRITE, b"x\0v"), msg::WRITE);
}

#[test]
fn oversized_length_fails_only_that_guest() {
    let xs = setup(Quotas::default(), &[1, 2]);
    let mut bad = Guest::introduce(&xs, 1);
    let mut good = Guest::introduce(&xs, 2);
    ok(bad.req(msg::WATCH, &strs(&["x", "t"])), msg::WATCH);
    let _ = bad.drain();
    let seen = bad.notifier.count();
    bad.push_bytes(&header_bytes(msg::WRITE, 1, 0, 0xffff_ffff));
    bad.push_bytes(b"garbage");
    xs.service(1);
    assert_eq!(bad.error(), ERROR_PROTO);
    assert_eq!(xs.ring_stats(1).unwrap().ring_error, Some(ERROR_PROTO));
    assert!(bad.notifier.count() > seen);
    // Ignored from now on: no replies, no events (its watch is gone).
    let m = message(msg::READ, 2, 0, &strs(&["x"]));
    bad.push_bytes(&m);
    xs.service(1);
    xs.client(0)
        .write(TxId::NONE, "/local/domain/1/x", b"")
        .unwrap();
    assert!(bad.drain().is_empty());
    // The other guest is served as usual.
    ok(good.req(msg::WRITE, b"y\0still-here"), msg::WRITE);
    assert_eq!(
        ok(good.req(msg::READ, &strs(&["y"])), msg::READ),
        b"still-here"
    );
    // 4097 is one too many as well.
    let mut bad2 = Guest::introduce(&xs, 3);
    bad2.push_bytes(&header_bytes(msg::WRITE, 1, 0, 4097));
    xs.service(3);
    assert_eq!(bad2.error(), ERROR_PROTO);
    // ... while exactly 4096 is a normal request (refused by the node-size quota).
    let mut p = b"big\0".to_vec();
    p.extend_from_slice(&vec![b'z'; 4096 - 4]);
    err(good.req(msg::WRITE, &p), "ENOSPC");
    assert_eq!(good.error(), 0);
}

#[test]
fn bad_indices_fail_the_connection() {
    let xs = setup(Quotas::default(), &[1, 2]);
    // Request producer too far ahead.
    let g = Guest::introduce(&xs, 1);
    let cons = g.mem().load_u32(iface::REQ_CONS);
    g.mem()
        .store_u32(iface::REQ_PROD, cons.wrapping_add(RING_SIZE as u32 + 1));
    xs.service(1);
    assert_eq!(g.error(), ERROR_RINGIDX);
    // Request producer behind the consumer.
    let mut g2 = Guest::introduce(&xs, 2);
    ok(g2.req(msg::WRITE, b"a\0b"), msg::WRITE);
    let cons = g2.mem().load_u32(iface::REQ_CONS);
    g2.mem().store_u32(iface::REQ_PROD, cons.wrapping_sub(1));
    xs.service(2);
    assert_eq!(g2.error(), ERROR_RINGIDX);
    // Response consumer moved past what was produced, seen when replying.
    let mut g3 = Guest::introduce(&xs, 3);
    let prod = g3.mem().load_u32(iface::RSP_PROD);
    g3.mem().store_u32(iface::RSP_CONS, prod.wrapping_add(5));
    g3.push_bytes(&message(msg::READ, 1, 0, &strs(&["a"])));
    xs.service(3);
    assert_eq!(g3.error(), ERROR_RINGIDX);
    // Inconsistent from the start.
    let page = xenstored_common::HostPage::new();
    page.mem().store_u32(iface::REQ_PROD, 5000);
    xs.introduce_domain(4, page.mem(), Arc::new(|| {})).unwrap();
    assert_eq!(page.mem().load_u32(iface::ERROR), ERROR_RINGIDX);
    xs.release_domain(4);
    // Everyone else is fine.
    let mut g5 = Guest::introduce(&xs, 5);
    ok(
        g5.req(msg::GET_DOMAIN_PATH, &strs(&["5"])),
        msg::GET_DOMAIN_PATH,
    );
}

#[test]
fn garbage_rewrites_of_our_indices_are_ignored() {
    let xs = setup(Quotas::default(), &[1]);
    let mut g = Guest::introduce(&xs, 1);
    ok(g.req(msg::WRITE, b"a\0b"), msg::WRITE);
    // The guest scribbles over req_cons and rsp_prod (ours); we keep our own copies.
    g.mem().store_u32(iface::REQ_CONS, 0x1234_5678);
    g.mem().store_u32(iface::RSP_PROD, 0x1234_5678);
    xs.service(1);
    assert_eq!(g.error(), 0);
}

#[test]
fn reconnect_resets_a_failed_ring() {
    let xs = setup(Quotas::default(), &[1]);
    let mut g = Guest::introduce(&xs, 1);
    ok(g.req(msg::WRITE, b"keep\0me"), msg::WRITE);
    g.push_bytes(&header_bytes(msg::READ, 1, 0, 100_000));
    xs.service(1);
    assert_eq!(g.error(), ERROR_PROTO);
    // The guest asks for a reconnect.
    g.mem().store_u32(iface::CONNECTION, 1);
    xs.service(1);
    let m = g.mem();
    assert_eq!(m.load_u32(iface::CONNECTION), 0);
    assert_eq!(m.load_u32(iface::ERROR), 0);
    for off in [
        iface::REQ_CONS,
        iface::REQ_PROD,
        iface::RSP_CONS,
        iface::RSP_PROD,
    ] {
        assert_eq!(m.load_u32(off), 0);
    }
    assert_eq!(ok(g.req(msg::READ, &strs(&["keep"])), msg::READ), b"me");
}

#[test]
fn introduce_errors() {
    let xs = setup(Quotas::default(), &[]);
    let g = Guest::introduce(&xs, 1);
    let page = xenstored_common::HostPage::new();
    let e = xs
        .introduce_domain(1, page.mem(), Arc::new(|| {}))
        .unwrap_err();
    assert!(matches!(e, xenstored::Error::AlreadyIntroduced(1)));
    let e = xs
        .introduce_domain(0x7FF0, page.mem(), Arc::new(|| {}))
        .unwrap_err();
    assert!(matches!(e, xenstored::Error::BadDomid(_)));
    let small = page.mem().sub(0, 2048).unwrap();
    let e = xs.introduce_domain(9, small, Arc::new(|| {})).unwrap_err();
    assert!(matches!(e, xenstored::Error::BadRing { .. }));
    let odd = page.mem().sub(1, 4095).unwrap();
    assert!(xs.introduce_domain(9, odd, Arc::new(|| {})).is_err());
    assert!(xs.is_introduced(1));
    assert!(!xs.is_introduced(9));
    // Kicks for unknown domains are ignored.
    xs.kick(42);
    xs.service(42);
    drop(g);
    assert!(!xs.is_introduced(1));
}

#[test]
fn many_requests_are_served_in_rounds() {
    let xs = setup(Quotas::default(), &[1]);
    let mut g = Guest::introduce(&xs, 1);
    let m = message(msg::GET_DOMAIN_PATH, 1, 0, &strs(&["1"]));
    let n = RING_SIZE / m.len();
    for _ in 0..n {
        assert_eq!(g.push_bytes(&m), m.len());
    }
    let mut got = 0;
    while got < n {
        xs.service(1);
        let msgs = g.drain();
        assert!(!msgs.is_empty());
        got += msgs.len();
    }
    assert_eq!(got, n);
}

#[test]
fn dom0_ring_output_is_bounded_too() {
    let xs = setup(Quotas::default(), &[]);
    let mut g = Guest::introduce(&xs, 0);
    let mut p = b"/big\0".to_vec();
    p.extend_from_slice(&[b'v'; 1000]);
    ok(g.req(msg::WRITE, &p), msg::WRITE);
    let req = message(msg::READ, 1, 0, &strs(&["/big"]));
    // Keep the request ring full and never consume a reply.
    for _ in 0..20 {
        while g.req_space() >= req.len() {
            g.push_bytes(&req);
        }
        xs.service(0);
    }
    let stats = xs.ring_stats(0).unwrap();
    assert_eq!(
        stats.replies_queued,
        xenstored::SOCKET_OUTSTANDING,
        "{stats:?}"
    );
    assert!(g.req_space() < req.len(), "requests wait on the ring");
}

/// Tests written for cargo-mutants survivors in `ring.rs` (docs/mutants.md), each
/// naming the mutant it catches. They run on a daemon without a worker thread
/// ([`Xenstored::new_inline`]): a kick serves the ring on the calling thread, so what
/// one service round did is seen when it returns.
mod mutants {
    use super::*;
    use std::sync::Mutex;
    use xenstored_common::HostPage;

    fn setup_inline(domids: &[u16]) -> Arc<Xenstored> {
        let xs = Xenstored::new_inline(Quotas::default());
        let dom0 = xs.client(0);
        for &d in domids {
            let p = format!("/local/domain/{d}");
            dom0.mkdir(TxId::NONE, &p).unwrap();
            dom0.set_perms(TxId::NONE, &p, &[Perm::new(d, Access::None)])
                .unwrap();
        }
        xs
    }

    /// Output written with no request consumed (a watch event caused by another
    /// client) is signalled to the guest. (`flush`: `wrote |= w` as `&=`, which
    /// left the guest to find its event only when it next sent something.)
    #[test]
    fn an_event_alone_is_signalled() {
        let xs = setup_inline(&[1]);
        let mut g = Guest::introduce(&xs, 1);
        ok(g.req(msg::WATCH, &strs(&["name", "tok"])), msg::WATCH);
        g.drain();
        let seen = g.notifier.count();
        xs.client(0)
            .write(TxId::NONE, "/local/domain/1/name", b"x")
            .unwrap();
        assert!(
            g.notifier.count() > seen,
            "event written without a notification"
        );
        let (h, p) = g.next_message().expect("the event is on the ring");
        assert_eq!((h.ty, p), (msg::WATCH_EVENT, strs(&["name", "tok"])));
    }

    /// Request bytes consumed without a complete message (the first part of a
    /// request larger than the free space) are signalled, so a guest waiting for
    /// room can write the rest. (`service`: `signal |= consumed` as `&=`, also
    /// caught by other tests.)
    #[test]
    fn consuming_part_of_a_request_is_signalled() {
        let xs = setup_inline(&[1]);
        let mut g = Guest::introduce(&xs, 1);
        let mut p = b"big\0".to_vec();
        p.extend_from_slice(&[b'v'; 2000]);
        let m = message(msg::WRITE, 9, 0, &p);
        let first = g.push_bytes(&m);
        assert_eq!(first, RING_SIZE);
        let seen = g.notifier.count();
        xs.service(1);
        assert_eq!(g.req_space(), RING_SIZE, "the daemon took the bytes");
        assert!(g.next_message().is_none());
        assert!(
            g.notifier.count() > seen,
            "ring space freed without a notification"
        );
        let mut sent = first;
        while sent < m.len() {
            sent += g.push_bytes(&m[sent..]);
            xs.service(1);
        }
        let (h, p) = g.next_message().expect("reply");
        assert_eq!((h.ty, h.req_id, p), (msg::WRITE, 9, b"OK\0".to_vec()));
    }

    /// A request consumed while its reply cannot be written (the response ring
    /// full) is still signalled: the guest may be waiting for room on the request
    /// ring. (`service`: `signal |= flush(..)` after a request as `&=`, which
    /// cleared the signal the consumed request had set.)
    #[test]
    fn a_request_consumed_behind_a_full_response_ring_is_signalled() {
        let xs = setup_inline(&[1]);
        let mut g = Guest::introduce(&xs, 1);
        let mut p = b"big\0".to_vec();
        p.extend_from_slice(&[b'v'; 1000]);
        ok(g.req(msg::WRITE, &p), msg::WRITE);
        // Two replies of 1016 bytes, never consumed: the response ring is full.
        g.send(msg::READ, 0, &strs(&["big"]));
        g.send(msg::READ, 0, &strs(&["big"]));
        let m = g.mem();
        let unread = m
            .load_u32(iface::RSP_PROD)
            .wrapping_sub(m.load_u32(iface::RSP_CONS));
        assert_eq!(unread as usize, RING_SIZE);
        let req = message(msg::READ, 50, 0, &strs(&["big"]));
        assert_eq!(g.push_bytes(&req), req.len());
        let seen = g.notifier.count();
        xs.service(1);
        assert_eq!(g.req_space(), RING_SIZE, "the request was consumed");
        assert!(
            g.notifier.count() > seen,
            "request consumed without a notification"
        );
        let replies = g.drain();
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[2].0.req_id, 50);
    }

    /// One service round handles at most `REQUESTS_PER_ROUND` (32) requests, then
    /// releases the daemon and comes back (other guests are served in between):
    /// 40 requests waiting give two rounds, the guest notified after each, the
    /// first after exactly 32 replies. (`service`: `handled += 1` as `*=`, one
    /// round for everything.)
    #[test]
    fn a_round_serves_at_most_32_requests() {
        let xs = setup_inline(&[1]);
        let page = HostPage::new();
        let mem = page.mem();
        let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
        let s2 = seen.clone();
        xs.introduce_domain(
            1,
            mem,
            Arc::new(move || s2.lock().unwrap().push(mem.load_u32(iface::RSP_PROD))),
        )
        .unwrap();
        let req = message(msg::WRITE, 1, 0, b"k\0v");
        let reply = 16 + b"OK\0".len() as u32;
        let mut prod = mem.load_u32(iface::REQ_PROD);
        for _ in 0..40 {
            mem.write(iface::REQ + prod as usize % RING_SIZE, &req);
            prod += req.len() as u32;
        }
        assert!(prod as usize <= RING_SIZE);
        mem.store_u32(iface::REQ_PROD, prod);
        seen.lock().unwrap().clear();
        xs.service(1);
        let notes = seen.lock().unwrap().clone();
        assert_eq!(notes.first(), Some(&(32 * reply)), "{notes:?}");
        assert_eq!(notes.last(), Some(&(40 * reply)), "{notes:?}");
        assert_eq!(notes.len(), 2, "{notes:?}");
        xs.release_domain(1);
    }

    /// A guest's request that fires another guest's watch kicks that guest's ring
    /// at once: the event is on guest 2's ring without guest 2 being served.
    /// (`service`: `kick.retain(|&d| d != domid)` as `==`, which kept only the
    /// kick of the ring just served and dropped the others.)
    #[test]
    fn an_event_for_another_guest_reaches_its_ring() {
        let xs = setup_inline(&[1, 2]);
        let dom0 = xs.client(0);
        dom0.mkdir(TxId::NONE, "/shared").unwrap();
        dom0.set_perms(TxId::NONE, "/shared", &[Perm::new(0, Access::Both)])
            .unwrap();
        let mut g1 = Guest::introduce(&xs, 1);
        let mut g2 = Guest::introduce(&xs, 2);
        ok(g2.req(msg::WATCH, &strs(&["/shared", "t"])), msg::WATCH);
        g2.drain();
        let seen = g2.notifier.count();
        ok(g1.req(msg::WRITE, b"/shared/x\0by-one"), msg::WRITE);
        assert!(g2.notifier.count() > seen, "guest 2 not notified");
        let (h, p) = g2.next_message().expect("guest 2's event is on its ring");
        assert_eq!((h.ty, p), (msg::WATCH_EVENT, strs(&["/shared/x", "t"])));
    }
}
