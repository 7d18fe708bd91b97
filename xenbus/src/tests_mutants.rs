//! Tests written for mutants that cargo-mutants found missed (docs/mutants.md):
//! each fails on the mutant named in its comment.

use std::format;

use crate::*;

/// `Path`'s `AsRef<str>`, `Display` and `Debug` give the path itself (mutants:
/// `as_ref` returning `""`/`"xyzzy"`, `fmt` returning `Ok` without writing).
#[test]
fn path_as_ref_display_and_debug_show_the_path() {
    let p = Path::join("device/vbd/768", "state").unwrap();
    let s: &str = p.as_ref();
    assert_eq!(s, "device/vbd/768/state");
    assert_eq!(format!("{p}"), "device/vbd/768/state");
    assert_eq!(format!("{p:?}"), "\"device/vbd/768/state\"");
    assert_eq!(format!("{}", Path::empty()), "");
}

/// A listing with children is not empty (mutant: `DirEntries::is_empty` -> `true`).
#[test]
fn directory_with_children_is_not_empty() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    xs.write("dir/a", b"v").unwrap();
    let mut buf = [0u8; 64];
    let d = xs.directory("dir", &mut buf).unwrap();
    assert!(!d.is_empty());
    assert_eq!(d.count(), 1);
}

/// A reply of exactly `PAYLOAD_MAX` (4096) bytes is legal and read whole (mutant:
/// the length check `>` turned into `>=`, which fails the connection on it).
#[test]
fn reply_of_exactly_payload_max_is_accepted() {
    use crate::fake::msg_bytes;
    use hypercall::abi::xs_wire::{msg, PAYLOAD_MAX};
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    xs.write("k", b"v").unwrap();
    fake.server().mangle = Some(std::boxed::Box::new(|h, reply| {
        if h.ty == msg::READ {
            msg_bytes(h.ty, h.req_id, h.tx_id, &[b'q'; PAYLOAD_MAX])
        } else {
            reply
        }
    }));
    let mut buf = std::vec![0u8; PAYLOAD_MAX];
    assert_eq!(xs.read("k", &mut buf), Ok(PAYLOAD_MAX));
    assert!(buf.iter().all(|&b| b == b'q'));
}

/// An endless flood of messages while a request waits for its reply (the reply never
/// comes) ends in `Timeout` at the request's deadline, not when the flood stops
/// (mutant: the deadline check on the busy path, where a full batch was handled,
/// removed).
#[test]
fn flood_during_a_request_times_out_at_the_deadline() {
    use hypercall::abi::xs_wire::msg;
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    // Under Miri a 5 ms deadline and 200 rings of flood (docs/miri.md): each event
    // costs it thousands of steps, and the flood still outlasts the deadline.
    let (timeout_ms, rings) = if cfg!(miri) { (5, 200) } else { (50, 2000) };
    xs.set_timeout(core::time::Duration::from_millis(timeout_ms));
    fake.set_concurrent(Some(crate::fake::WAIT_NS));
    // 16-byte events (header only): 64 of them fill the 1 KiB ring, so every pass
    // over the ring handles a full batch and finds more.
    {
        let mut s = fake.server();
        // A ring's worth of events made once, queued `rings` times.
        let ring = crate::fake::msg_bytes(msg::WATCH_EVENT, 0, 0, b"").repeat(64);
        for _ in 0..rings {
            s.inject(&ring);
        }
        s.mangle = Some(std::boxed::Box::new(|h, reply| {
            if h.ty == msg::READ {
                std::vec![]
            } else {
                reply
            }
        }));
    }
    let start = fake.now();
    let mut buf = [0u8; 16];
    assert_eq!(xs.read("k", &mut buf), Err(Error::Timeout));
    let took = fake.now() - start;
    assert!(
        took < 2 * timeout_ms * crate::fake::WAIT_NS,
        "gave up after {took} ns"
    );
    assert!(!fake.server().out.is_empty(), "the flood ran dry first");
}

/// A reply dribbled in small pieces, on a clock already past one timeout, arrives
/// whole: each piece resets the stall clock (mutant: `progressed` doing nothing,
/// which leaves the clock at 0 and declares the reply stalled).
#[test]
fn dribbled_reply_late_in_time_is_not_a_stall() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    xs.set_timeout(core::time::Duration::from_millis(50));
    let value = [b'd'; 100];
    xs.write("k", &value).unwrap();
    // 200 ms on: four timeouts (the clock alone; the idle server has nothing to do).
    fake.advance(200 * crate::fake::WAIT_NS);
    fake.server().max_chunk = 3;
    let mut buf = [0u8; 128];
    assert_eq!(xs.read("k", &mut buf), Ok(100));
    assert_eq!(&buf[..100], &value);
}

/// After taking bytes off the response ring the client notifies xenstored, which may
/// be waiting for room (mutant: the notify after consuming removed).
#[test]
fn consuming_a_reply_notifies_xenstored() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    xs.write("k", b"v").unwrap();
    let before = fake.notifies();
    let mut buf = [0u8; 8];
    xs.read("k", &mut buf).unwrap();
    // One for the request, one after consuming the reply.
    assert_eq!(fake.notifies() - before, 2);
}

/// `dir/key` of exactly `PATH_MAX` bytes is sent, one byte more is refused before
/// anything is sent (mutants: the bound in `check_keys` off by one, or its sum
/// `dir.len() + 1 + k.len()` with an operator changed).
#[test]
fn batched_keys_up_to_path_max_exactly() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    let dir = "data";
    let fits = "k".repeat(PATH_MAX - dir.len() - 1);
    xs.write_keys(dir, &[(fits.as_str(), b"v")]).unwrap();
    let mut got = std::vec::Vec::new();
    xs.read_keys(dir, &[fits.as_str()], &mut |i, r| {
        got.push((i, r.map(<[u8]>::to_vec)));
        Ok(())
    })
    .unwrap();
    assert_eq!(got, [(0, Ok(b"v".to_vec()))]);
    let over = "k".repeat(PATH_MAX - dir.len());
    let t0 = fake.now();
    assert!(matches!(
        xs.read_keys(dir, &[over.as_str()], &mut |_, _| Ok(())),
        Err(Error::InvalidPath(_))
    ));
    assert!(matches!(
        xs.write_keys(dir, &[(over.as_str(), b"v")]),
        Err(Error::InvalidPath(_))
    ));
    assert_eq!(fake.now(), t0, "nothing was sent");
}

/// A watch token of exactly `WATCH_TOKEN_MAX` bytes is registered and its events
/// carry it (mutant: the length check `>` turned into `>=`).
#[test]
fn watch_token_of_exactly_the_maximum() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    let token = "t".repeat(WATCH_TOKEN_MAX);
    xs.watch("w", &token).unwrap();
    let ev = xs
        .poll_watch_event_for(&token)
        .unwrap()
        .expect("initial event");
    assert_eq!(ev.token(), token);
    xs.unwatch("w", &token).unwrap();
}

/// Batching of `read_keys`/`write_keys` at its bounds (mutants in `pipeline`):
/// 40 keys take two round trips (32 ids a batch); requests of exactly the ring's
/// 1024 bytes go in one; a single request larger than the ring goes alone.
#[test]
fn pipeline_batches_at_their_exact_bounds() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    let keys: std::vec::Vec<std::string::String> = (0..40).map(|i| format!("k{i}")).collect();
    let nodes: std::vec::Vec<(&str, &[u8])> =
        keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    xs.write_keys("d", &nodes).unwrap();
    let t0 = xs.round_trips();
    let names: std::vec::Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let mut n = 0;
    xs.read_keys("d", &names, &mut |i, r| {
        assert_eq!(r.unwrap(), keys[i].as_bytes());
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 40);
    assert_eq!(xs.round_trips() - t0, 2, "32 + 8");
    // Four READs of 16 + len("d/" + key + NUL) = 256 bytes each: exactly one ring.
    let long: std::vec::Vec<std::string::String> =
        (0..4).map(|i| format!("{i}{}", "x".repeat(236))).collect();
    let names: std::vec::Vec<&str> = long.iter().map(|k| k.as_str()).collect();
    let t0 = xs.round_trips();
    xs.read_keys("d", &names, &mut |_, r| {
        assert_eq!(r, Err(Error::Xenstore(ErrnoName::Enoent)));
        Ok(())
    })
    .unwrap();
    assert_eq!(xs.round_trips() - t0, 1, "1024 bytes fit the ring");
    // One request larger than the ring, alone in its batch.
    let big = [b'b'; 2000];
    let t0 = xs.round_trips();
    xs.write_keys("d", &[("big", &big[..]), ("small", b"s")])
        .unwrap();
    assert_eq!(xs.round_trips() - t0, 2);
    assert_eq!(
        fake.server().core.read("d/big").map(|v| v.len()),
        Some(2000)
    );
}

/// `write_u32_keys` takes exactly 16 keys, refuses 17 before sending anything, and
/// writes the decimal values (mutants: the 16-key bound as `>=` or `==`).
#[test]
fn write_u32_keys_takes_exactly_sixteen() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    let keys: std::vec::Vec<std::string::String> = (0..17).map(|i| format!("n{i}")).collect();
    let nodes: std::vec::Vec<(&str, u32)> = keys
        .iter()
        .zip([0u32, 7, 10, 4_294_967_295].into_iter().cycle())
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    xs.write_u32_keys("u", &nodes[..16]).unwrap();
    assert_eq!(fake.server().core.read("u/n0").as_deref(), Some("0"));
    assert_eq!(fake.server().core.read("u/n2").as_deref(), Some("10"));
    assert_eq!(
        fake.server().core.read("u/n15").as_deref(),
        Some("4294967295")
    );
    let t0 = fake.now();
    assert_eq!(
        xs.write_u32_keys("v", &nodes),
        Err(Error::InvalidArgument("more than 16 keys in one batch"))
    );
    assert_eq!(fake.now(), t0);
    assert_eq!(fake.server().core.read("v/n0"), None);
}

/// A flood that ends: a request whose reply comes after more than a batch (64) of
/// events still succeeds (mutant: the busy-path deadline test inverted, which
/// gives up as soon as a full batch was handled).
#[test]
fn request_after_a_finite_flood_succeeds() {
    use hypercall::abi::xs_wire::msg;
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    for _ in 0..200 {
        fake.server()
            .inject(&crate::fake::msg_bytes(msg::WATCH_EVENT, 0, 0, b""));
    }
    xs.write("a", b"1").unwrap();
    assert_eq!(xs.lost_watch_events(), 200);
}

/// A parsed permission list has its owner, so it is never empty (mutant:
/// `PermList::is_empty` -> `true`).
#[test]
fn a_permission_list_is_never_empty() {
    let l = PermList::parse(b"n1\0").unwrap();
    assert!(!l.is_empty());
    assert_eq!(l.len(), 1);
}

/// A transaction whose closure fails is aborted (`XS_TRANSACTION_END` "F"), so
/// xenstored does not keep it open until the connection ends; an `EAGAIN` from the
/// closure aborts before the retry too (mutant: `abort_quietly` -> `()`).
#[test]
fn a_failed_transaction_is_aborted() {
    use hypercall::abi::xs_wire::msg;
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    let mut calls = 0;
    let r: Result<()> = xs.transaction(|tx| {
        calls += 1;
        tx.write("t", b"1")?;
        if calls == 1 {
            Err(Error::Xenstore(ErrnoName::Eagain))
        } else {
            Err(Error::InvalidArgument("closure failed"))
        }
    });
    assert_eq!(r, Err(Error::InvalidArgument("closure failed")));
    let s = fake.server();
    let ty = |t| s.core.requests.iter().filter(|h| h.ty == t).count();
    assert_eq!(ty(msg::TRANSACTION_START), 2);
    assert_eq!(ty(msg::TRANSACTION_END), 2, "each try ends its transaction");
    let last = s.core.requests.last().unwrap();
    assert_eq!(last.ty, msg::TRANSACTION_END);
    assert_ne!(last.tx_id, 0);
    assert_eq!(s.core.read("t"), None);
}

/// A message that stops arriving partway fails the connection when it has made no
/// progress for exactly the client's timeout, not one tick later (mutant: the stall
/// check `idle < timeout` turned into `<=`).
#[test]
fn a_stalled_message_fails_at_exactly_the_timeout() {
    use crate::fake::{msg_bytes, WAIT_NS};
    use hypercall::abi::xs_wire::msg;
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    xs.set_timeout(core::time::Duration::from_millis(20));
    let mut ev = msg_bytes(msg::WATCH_EVENT, 0, 0, b"path\0tok\0");
    ev.truncate(20);
    fake.server().inject(&ev);
    // Into the ring now, at time 0: the client's first look consumes it at time 0.
    fake.server().step();
    assert_eq!(fake.now(), 0);
    let r = xs.wait_watch_event(core::time::Duration::from_millis(100));
    assert_eq!(
        r,
        Err(Error::Broken(ProtocolError::TruncatedMessage {
            expected: 25,
            got: 20
        }))
    );
    assert_eq!(fake.now(), 20 * WAIT_NS);
}

/// `read_u64_opt` gives the value of a present node and `None` for a missing one
/// (mutant: `read_u64_opt` -> `Ok(None)`).
#[test]
fn read_u64_opt_reads_present_and_missing_nodes() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    xs.write("big", b"18446744073709551615").unwrap();
    assert_eq!(xs.read_u64_opt("big"), Ok(Some(u64::MAX)));
    assert_eq!(xs.read_u64_opt("absent"), Ok(None));
    assert!(xs.read_u32_opt("big").is_err());
}

/// `Transaction::id` is the id xenstored gave the transaction, the one its
/// requests carry (mutant: `id` -> `Default::default()`, i.e. `TxId::NONE`).
#[test]
fn transaction_id_is_the_one_its_requests_carry() {
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    let mut seen = TxId::NONE;
    xs.transaction(|tx| {
        seen = tx.id();
        tx.write("t", b"1")
    })
    .unwrap();
    assert_ne!(seen, TxId::NONE);
    let s = fake.server();
    let write = s
        .core
        .requests
        .iter()
        .find(|h| h.ty == hypercall::abi::xs_wire::msg::WRITE)
        .unwrap();
    assert_eq!(TxId(write.tx_id), seen);
}

/// The handshake's watch token names its device node, so events for it can be told
/// from other watches' (mutant: `FrontendHandshake::token` -> `""`).
#[test]
fn handshake_token_names_the_device() {
    let hs = crate::frontend::FrontendHandshake::new("device/vbd/768").unwrap();
    assert_eq!(hs.token(), "xenbus-fe:device/vbd/768");
}

/// `PowerControl::wait` with no request returns `Timeout` at its deadline, not a
/// whole wait past it (mutant: the remaining time `deadline - now` as
/// `deadline + now`).
#[test]
fn power_wait_times_out_at_its_deadline() {
    use crate::fake::WAIT_NS;
    use crate::power::{PowerControl, PowerFeatures};
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    let features = PowerFeatures::POWEROFF;
    let mut pc = PowerControl::new(&mut xs, features).unwrap();
    let t0 = fake.now();
    assert!(t0 > 0, "the fake's clock moved while the watch was set");
    let timeout = core::time::Duration::from_millis(30);
    assert_eq!(pc.wait(&mut xs, timeout), Err(Error::Timeout));
    let took = fake.now() - t0;
    assert!((30 * WAIT_NS..=31 * WAIT_NS).contains(&took), "{took} ns");
}

/// `PowerControl::wait` works on a platform whose clock still reads 0 (a
/// monotonic clock counted from boot; here a concurrent xenstored that answers at
/// no cost): a request is delivered, none times out (mutant: the remaining time
/// `deadline - now` as `deadline / now`, a division by zero).
#[test]
fn power_wait_on_a_clock_at_zero() {
    use crate::power::{PowerControl, PowerEvent, PowerFeatures, SHUTDOWN_NODE};
    let fake = crate::fake::FakePlatform::new();
    fake.set_concurrent(Some(0));
    let mut xs = fake.client();
    let features = PowerFeatures::REBOOT;
    let mut pc = PowerControl::new(&mut xs, features).unwrap();
    assert_eq!(fake.now(), 0);
    // The toolstack writes its request a few milliseconds later.
    let mut steps = 0;
    fake.server().hook = Some(std::boxed::Box::new(move |c: &mut crate::fake::Core| {
        steps += 1;
        if steps == 20 {
            c.write(SHUTDOWN_NODE, "reboot");
        }
    }));
    let r = pc.wait(&mut xs, core::time::Duration::from_millis(100));
    assert_eq!(r, Ok(PowerEvent::Reboot));
}

/// Attaching again starts afresh: queued watch events and the loss record of the
/// old connection are dropped (mutant: `WatchQueue::clear` -> `()`).
#[test]
fn attaching_again_drops_queued_watch_events() {
    use crate::fake::{msg_bytes, port, STORE_PFN};
    use hypercall::abi::xs_wire::msg;
    let fake = crate::fake::FakePlatform::new();
    let mut xs = fake.client();
    for i in 0..WATCH_QUEUE_LEN + 1 {
        let ev = format!("p{i}\0t\0");
        fake.server()
            .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, ev.as_bytes()));
    }
    xs.write("a", b"1").unwrap();
    assert_eq!(xs.pending_watch_events(), WATCH_QUEUE_LEN);
    assert_eq!(xs.lost_watch_events(), 1);
    assert!(xs.watch_overflowed());
    xs.attach(hypercall::Gfn(STORE_PFN), port()).unwrap();
    assert_eq!(xs.pending_watch_events(), 0);
    assert_eq!(xs.lost_watch_events(), 0);
    assert!(!xs.watch_overflowed());
    assert_eq!(xs.poll_watch_event(), Ok(None));
    xs.write("a", b"2").unwrap();
}
