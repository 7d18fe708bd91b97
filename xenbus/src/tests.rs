//! Client tests against the fake xenstored (`crate::fake`). Time is virtual (each
//! `wait()` is 1 ms), so timeouts are exact and nothing here depends on the machine.

use std::boxed::Box;
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use core::time::Duration;

use hypercall::abi::xs_wire::{iface, msg, ERRORS};
use hypercall::DomId;

use crate::fake::{msg_bytes, FakePlatform, WAIT_NS};
use crate::*;

fn setup() -> (Xenstore<FakePlatform>, FakePlatform) {
    let fake = FakePlatform::new();
    (fake.client(), fake)
}

fn read_string(xs: &mut Xenstore<FakePlatform>, path: &str) -> Result<String> {
    let mut buf = vec![0u8; 4096];
    let n = xs.read(path, &mut buf)?;
    Ok(String::from_utf8(buf[..n].to_vec()).unwrap())
}

// ---- operations -------------------------------------------------------------------

/// Built in place (a `const fn`, no store page yet), then attached through `&mut`.
#[test]
fn unattached_client_fails_until_attached() {
    let fake = FakePlatform::new();
    let mut xs = Box::new(Xenstore::unattached(fake.clone()));
    let mut buf = [0u8; 16];
    assert!(matches!(
        xs.read("data/a", &mut buf),
        Err(Error::NoXenstore)
    ));
    assert!(matches!(xs.poll_watch_event(), Err(Error::NoXenstore)));
    xs.attach_hvm_params().unwrap();
    xs.write("data/a", b"in place").unwrap();
    assert_eq!(read_string(&mut xs, "data/a").unwrap(), "in place");
}

#[test]
fn read_write_mkdir_rm() {
    let (mut xs, fake) = setup();
    xs.write("data/a", b"hello").unwrap();
    assert_eq!(read_string(&mut xs, "data/a").unwrap(), "hello");
    assert_eq!(
        read_string(&mut xs, "/local/domain/1/data/a").unwrap(),
        "hello"
    );
    assert_eq!(fake.server().core.read("data/a").as_deref(), Some("hello"));
    // Empty value.
    xs.write("data/empty", b"").unwrap();
    assert_eq!(read_string(&mut xs, "data/empty").unwrap(), "");
    // Missing.
    assert_eq!(
        xs.read("data/nope", &mut [0u8; 8]),
        Err(Error::Xenstore(ErrnoName::Enoent))
    );
    // mkdir: creates, idempotent.
    xs.mkdir("data/dir").unwrap();
    xs.mkdir("data/dir").unwrap();
    assert!(fake.server().core.read("data/dir").is_some());
    // rm removes the subtree.
    xs.write("data/dir/x/y", b"1").unwrap();
    xs.rm("data/dir").unwrap();
    assert!(fake.server().core.read("data/dir/x/y").is_none());
    assert_eq!(xs.rm("nope/nope"), Err(Error::Xenstore(ErrnoName::Enoent)));
    // Typed writers.
    xs.write_u64("data/n", u64::MAX).unwrap();
    assert_eq!(xs.read_u64("data/n").unwrap(), u64::MAX);
    xs.write_u32("data/m", 7).unwrap();
    xs.write_str("data/s", "x86_64-abi").unwrap();
    assert_eq!(xs.read_str("data/s", &mut [0u8; 32]).unwrap(), "x86_64-abi");
    xs.write_state("data/state", XenbusState::Connected)
        .unwrap();
    assert_eq!(xs.read_state("data/state").unwrap(), XenbusState::Connected);
    assert_eq!(
        xs.read_state("data/no-state").unwrap(),
        XenbusState::Unknown
    );
}

#[test]
fn directory_lists_children() {
    let (mut xs, _fake) = setup();
    for k in ["b", "a", "c/d"] {
        xs.write(&format!("dir/{k}"), b"v").unwrap();
    }
    let mut buf = [0u8; 64];
    let names: Vec<&str> = xs.directory("dir", &mut buf).unwrap().collect();
    assert_eq!(names, ["a", "b", "c"]);
    xs.mkdir("empty").unwrap();
    let mut buf = [0u8; 64];
    let d = xs.directory("empty", &mut buf).unwrap();
    assert!(d.is_empty());
    assert_eq!(d.count(), 0);
    assert_eq!(
        xs.directory("nope", &mut [0u8; 8]).map(|d| d.count()),
        Err(Error::Xenstore(ErrnoName::Enoent))
    );
}

#[test]
fn directory_larger_than_the_ring() {
    let (mut xs, _fake) = setup();
    let mut expected = Vec::new();
    // 27 bytes a name: 40 names (1080 bytes) already exceed the 1024-byte ring; Miri
    // runs the short list (each request costs it tens of thousands of steps).
    let count = if cfg!(miri) { 40 } else { 150 };
    for i in 0..count {
        let name = format!("entry-with-a-long-name-{i:03}");
        xs.write(&format!("big/{name}"), b"").unwrap();
        expected.push(name);
    }
    let mut buf = vec![0u8; 4096];
    let names: Vec<&str> = xs.directory("big", &mut buf).unwrap().collect();
    assert_eq!(names, expected);
}

/// docs/hostile-input.md X5: malformed DIRECTORY payloads are a typed error, not a panic or a
/// wrong listing, and the connection carries on.
#[test]
fn x5_malformed_directory_replies_are_bad_replies() {
    // Also names that are not node names (a `/`, a space, `.`): joined to the
    // directory's path they would name another node.
    for bad in [
        &b"a\0b"[..],
        b"a\0\0b\0",
        b"\0",
        b"\xff\0",
        b"a",
        b"a\0b/c\0",
        b"a b\0",
        b"..\0",
    ] {
        let (mut xs, fake) = setup();
        xs.write("dir/a", b"v").unwrap();
        let bad = bad.to_vec();
        fake.server().mangle = Some(Box::new(move |h, reply| {
            if h.ty == msg::DIRECTORY {
                msg_bytes(msg::DIRECTORY, h.req_id, 0, &bad)
            } else {
                reply
            }
        }));
        assert_eq!(
            xs.directory("dir", &mut [0u8; 64]).map(|d| d.count()),
            Err(Error::BadReply { op: msg::DIRECTORY })
        );
        assert!(xs.broken().is_none());
        assert_eq!(read_string(&mut xs, "dir/a").unwrap(), "v");
    }
}

/// docs/hostile-input.md X15: replies and watch events dribbled out one byte per server step
/// (header and body in separate notifications, across the ring's wrap point) are put
/// back together exactly.
#[test]
fn x15_one_byte_dribbles_reassemble() {
    let fake = FakePlatform::with_indices(1024 * 3 + 1000);
    let mut xs = fake.client();
    xs.watch("w", "tok").unwrap();
    assert_eq!(
        xs.wait_watch_event(Duration::from_secs(1)).unwrap().path(),
        "w"
    );
    fake.server().max_chunk = 1;
    // 700 bytes; 100 under Miri (one step per byte costs it thousands of steps):
    // every message still arrives one byte at a time.
    let len = if cfg!(miri) { 100 } else { 700 };
    let v: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    xs.write("w", &v).unwrap();
    let mut buf = vec![0u8; 1024];
    let n = xs.read("w", &mut buf).unwrap();
    assert_eq!(&buf[..n], &v[..]);
    let ev = xs.wait_watch_event(Duration::from_secs(1)).unwrap();
    assert_eq!((ev.path(), ev.token()), ("w", "tok"));
    assert!(xs.broken().is_none());
    assert_eq!(xs.discarded_messages(), 0);
}

#[test]
fn perms_round_trip() {
    let (mut xs, fake) = setup();
    xs.write("p", b"v").unwrap();
    let perms = [
        Perm::new(DomId(1), Access::None),
        Perm::new(DomId(0), Access::Read),
        Perm::new(DomId(5), Access::Write),
        Perm::new(DomId(65535), Access::Both),
    ];
    xs.set_perms("p", &perms).unwrap();
    assert_eq!(
        fake.server().core.tree["/local/domain/1/p"].perms,
        ["n1", "r0", "w5", "b65535"]
    );
    let mut buf = [0u8; 64];
    let list = xs.get_perms("p", &mut buf).unwrap();
    assert_eq!(list.owner(), perms[0]);
    assert_eq!(list.iter().collect::<Vec<_>>(), perms);
    assert_eq!(
        xs.set_perms("p", &[]),
        Err(Error::InvalidArgument("a permission list needs an owner"))
    );
    assert_eq!(
        xs.get_perms("nope", &mut buf).map(|l| l.len()),
        Err(Error::Xenstore(ErrnoName::Enoent))
    );
}

#[test]
fn bad_perms_reply_is_an_error() {
    let (mut xs, fake) = setup();
    fake.server().core.write("p", "v");
    fake.server()
        .core
        .tree
        .get_mut("/local/domain/1/p")
        .unwrap()
        .perms = vec!["q1".into()];
    assert_eq!(
        xs.get_perms("p", &mut [0u8; 32]).map(|l| l.len()),
        Err(Error::BadReply { op: msg::GET_PERMS })
    );
}

#[test]
fn domain_path() {
    let (mut xs, _fake) = setup();
    let mut buf = [0u8; 64];
    assert_eq!(
        xs.get_domain_path(DomId(1), &mut buf).unwrap(),
        "/local/domain/1"
    );
    assert_eq!(
        xs.get_domain_path(DomId(0), &mut buf).unwrap(),
        "/local/domain/0"
    );
}

#[test]
fn watch_fires_on_registration_and_changes_and_unwatch_stops_it() {
    let (mut xs, fake) = setup();
    xs.watch("device", "tok").unwrap();
    let ev = xs.wait_watch_event(Duration::from_millis(10)).unwrap();
    assert_eq!((ev.path(), ev.token()), ("device", "tok"));
    xs.write("device/vbd/1/state", b"1").unwrap();
    let ev = xs.wait_watch_event(Duration::from_millis(10)).unwrap();
    assert_eq!((ev.path(), ev.token()), ("device/vbd/1/state", "tok"));
    // Absolute watches report absolute paths.
    xs.watch("/local/domain/0", "abs").unwrap();
    let ev = xs.wait_watch_event(Duration::from_millis(10)).unwrap();
    assert_eq!(ev.path(), "/local/domain/0");
    fake.server().core.write("/local/domain/0/backend/x", "1");
    let ev = xs.wait_watch_event(Duration::from_millis(10)).unwrap();
    assert_eq!(
        (ev.path(), ev.token()),
        ("/local/domain/0/backend/x", "abs")
    );

    xs.unwatch("device", "tok").unwrap();
    xs.write("device/vbd/1/state", b"2").unwrap();
    assert_eq!(
        xs.wait_watch_event(Duration::from_millis(10)),
        Err(Error::Timeout)
    );
    assert_eq!(
        xs.unwatch("device", "tok"),
        Err(Error::Xenstore(ErrnoName::Enoent))
    );
    assert_eq!(
        xs.watch("a\0b", "t"),
        Err(Error::InvalidArgument("path contains NUL"))
    );
    let long = "t".repeat(WATCH_TOKEN_MAX + 1);
    assert_eq!(
        xs.watch("a", &long),
        Err(Error::InvalidArgument("watch token too long"))
    );
    assert_eq!(xs.poll_watch_event(), Ok(None));
}

#[test]
fn events_for_one_token_leave_others_queued() {
    let (mut xs, _fake) = setup();
    xs.watch("a", "ta").unwrap();
    xs.watch("b", "tb").unwrap();
    xs.watch("c", "tc").unwrap();
    // A request lets all three initial events arrive.
    xs.write("x", b"").unwrap();
    assert_eq!(xs.pending_watch_events(), 3);
    assert_eq!(xs.poll_watch_event_for("tb").unwrap().unwrap().path(), "b");
    assert_eq!(xs.poll_watch_event_for("tb").unwrap(), None);
    assert_eq!(
        xs.wait_watch_event_for("tc", Duration::ZERO)
            .unwrap()
            .path(),
        "c"
    );
    assert_eq!(xs.poll_watch_event().unwrap().unwrap().path(), "a");
}

#[test]
fn watch_events_interleaved_with_replies() {
    let (mut xs, fake) = setup();
    xs.watch("noisy", "n").unwrap();
    let mut i = 0u32;
    fake.server().hook = Some(Box::new(move |c| {
        i += 1;
        c.write("noisy/x", &format!("{i}"));
    }));
    for k in 0..20 {
        let v = format!("value-{k}");
        xs.write("quiet", v.as_bytes()).unwrap();
        assert_eq!(read_string(&mut xs, "quiet").unwrap(), v);
    }
    assert!(xs.pending_watch_events() > 0);
    while let Some(ev) = xs.poll_watch_event().unwrap() {
        assert_eq!(ev.token(), "n");
    }
}

#[test]
fn transactions_commit_and_abort() {
    let (mut xs, fake) = setup();
    let tx = xs.transaction_start().unwrap();
    assert_ne!(tx, TxId::NONE);
    xs.in_transaction(tx).write("t/a", b"1").unwrap();
    assert_eq!(fake.server().core.read("t/a"), None);
    assert_eq!(
        read_string_tx(&mut xs.in_transaction(tx), "t/a").unwrap(),
        "1"
    );
    xs.transaction_end(tx, TxEnd::Commit).unwrap();
    assert_eq!(fake.server().core.read("t/a").as_deref(), Some("1"));

    let tx = xs.transaction_start().unwrap();
    xs.in_transaction(tx).write("t/b", b"2").unwrap();
    xs.transaction_end(tx, TxEnd::Abort).unwrap();
    assert_eq!(fake.server().core.read("t/b"), None);
    assert_eq!(
        xs.transaction_end(tx, TxEnd::Commit),
        Err(Error::Xenstore(ErrnoName::Enoent))
    );

    // The helper, with an error from the closure: aborted, error returned.
    let r: Result<()> = xs.transaction(|t| {
        t.write("t/c", b"3")?;
        Err(Error::InvalidArgument("caller says no"))
    });
    assert_eq!(r, Err(Error::InvalidArgument("caller says no")));
    assert_eq!(fake.server().core.read("t/c"), None);
    let v = xs
        .transaction(|t| {
            t.write("t/d", b"4")?;
            t.read_u32("t/a")
        })
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(fake.server().core.read("t/d").as_deref(), Some("4"));
}

fn read_string_tx(t: &mut impl Store, path: &str) -> Result<String> {
    let mut buf = vec![0u8; 4096];
    let n = t.read(path, &mut buf)?;
    Ok(String::from_utf8(buf[..n].to_vec()).unwrap())
}

#[test]
fn transaction_retries_on_eagain() {
    let (mut xs, fake) = setup();
    fake.server().core.eagain_commits = 3;
    let mut runs = 0;
    xs.transaction(|t| {
        runs += 1;
        t.write("r", b"x")?;
        read_string_tx(t, "r")
    })
    .unwrap();
    assert_eq!(runs, 4);
    assert_eq!(fake.server().core.commits, 4);
    assert_eq!(fake.server().core.read("r").as_deref(), Some("x"));
}

#[test]
fn transaction_retry_is_bounded() {
    let (mut xs, fake) = setup();
    fake.server().core.eagain_commits = 1000;
    let r = xs.transaction(|t| t.write("r", b"x"));
    assert_eq!(
        r,
        Err(Error::TooManyRetries {
            tries: MAX_TX_TRIES
        })
    );
    assert_eq!(fake.server().core.commits, MAX_TX_TRIES);
    assert_eq!(fake.server().core.read("r"), None);
}

// ---- framing: wrap-around, large messages, chunking ----------------------------------

#[test]
fn messages_larger_than_the_ring_both_ways() {
    let (mut xs, fake) = setup();
    let big: Vec<u8> = (0..4000u32).map(|i| b'a' + (i % 26) as u8).collect();
    xs.write("big", &big).unwrap();
    assert_eq!(fake.server().core.tree["/local/domain/1/big"].value, big);
    let mut buf = vec![0u8; 4096];
    let n = xs.read("big", &mut buf).unwrap();
    assert_eq!(&buf[..n], &big[..]);
    // And dribbled out 7 bytes per server step (61 under Miri: 66 steps instead of
    // 574, still pieces that split the header and the payload at odd offsets).
    fake.server().max_chunk = if cfg!(miri) { 61 } else { 7 };
    let n = xs.read("big", &mut buf).unwrap();
    assert_eq!(&buf[..n], &big[..]);
    // Exactly the maximum payload: path + NUL + value = 4096.
    let max = vec![b'z'; 4096 - "big".len() - 1];
    xs.write("big", &max).unwrap();
    assert_eq!(xs.read("big", &mut buf).unwrap(), max.len());
    assert_eq!(
        xs.write("big", &[0; 4096]),
        Err(Error::RequestTooLarge { len: 4100 })
    );
}

#[test]
fn indices_wrap_around_the_ring_many_times() {
    let (mut xs, fake) = setup();
    // 300 round trips (more than 10 turns of each 1 KiB ring); 70 under Miri
    // (more than 2 turns), where each costs tens of thousands of steps.
    let (rounds, turns) = if cfg!(miri) { (70, 2) } else { (300, 10) };
    for i in 0..rounds {
        let v = format!("{i:0>width$}", width = 1 + i % 37);
        xs.write("w", v.as_bytes()).unwrap();
        assert_eq!(read_string(&mut xs, "w").unwrap(), v);
    }
    let mem = fake.mem();
    assert!(mem.load_u32(iface::REQ_PROD) > turns * 1024);
    assert!(mem.load_u32(iface::RSP_PROD) > turns * 1024);
}

#[test]
fn indices_near_u32_max_wrap() {
    // docs/hostile-input.md row 4.
    let fake = FakePlatform::with_indices(u32::MAX - 100);
    let mut xs = fake.client();
    let big = vec![b'q'; 3000];
    for _ in 0..3 {
        xs.write("w", &big).unwrap();
        assert_eq!(read_string(&mut xs, "w").unwrap().len(), 3000);
    }
    assert!(fake.mem().load_u32(iface::REQ_PROD) < 100_000);
}

#[test]
fn stale_responses_at_start_are_skipped() {
    let fake = FakePlatform::new();
    fake.server().inject(&msg_bytes(msg::READ, 1, 0, b"stale"));
    fake.server().step();
    let mut xs = fake.client();
    xs.write("a", b"fresh").unwrap();
    assert_eq!(read_string(&mut xs, "a").unwrap(), "fresh");
    assert_eq!(xs.discarded_messages(), 0);
}

// ---- errors ---------------------------------------------------------------------

#[test]
fn every_errno_name_maps_to_its_variant() {
    for (i, (name, errno)) in ERRORS.iter().enumerate() {
        let (mut xs, fake) = setup();
        let name = String::from(*name);
        fake.server().mangle = Some(Box::new(move |h, _| {
            let mut b = name.clone().into_bytes();
            b.push(0);
            msg_bytes(msg::ERROR, h.req_id, 0, &b)
        }));
        let e = ErrnoName::ALL[i];
        assert_eq!(e.name(), ERRORS[i].0);
        assert_eq!(e.errno(), *errno);
        assert_eq!(xs.read("x", &mut [0u8; 8]), Err(Error::Xenstore(e)));
    }
    let (mut xs, fake) = setup();
    fake.server().mangle = Some(Box::new(|h, _| {
        msg_bytes(msg::ERROR, h.req_id, 0, b"EWHAT\0")
    }));
    let Err(Error::UnknownXenstoreError(s)) = xs.read("x", &mut [0u8; 8]) else {
        panic!()
    };
    assert_eq!(s.as_str(), Some("EWHAT"));
}

#[test]
fn small_buffers_and_bad_arguments() {
    let (mut xs, _fake) = setup();
    xs.write("a", b"0123456789").unwrap();
    assert_eq!(
        xs.read("a", &mut [0u8; 4]),
        Err(Error::BufferTooSmall { needed: 10 })
    );
    // The connection is fine afterwards.
    assert_eq!(read_string(&mut xs, "a").unwrap(), "0123456789");
    assert_eq!(
        xs.write("a\0b", b""),
        Err(Error::InvalidArgument("path contains NUL"))
    );
    assert_eq!(
        Path::join("a", &"x".repeat(PATH_MAX)),
        Err(Error::PathTooLong { len: PATH_MAX + 2 })
    );
    assert_eq!(Path::join("dev", "state").unwrap().as_str(), "dev/state");
    assert_eq!(Path::join("dev/", "state").unwrap().as_str(), "dev/state");
    assert_eq!(Path::join("", "state").unwrap().as_str(), "state");
}

/// docs/hostile-input.md X10 (XSA-481): paths xenstored would refuse or mishandle are refused
/// here, before anything is sent.
#[test]
fn x10_illegal_paths_are_never_sent() {
    let (mut xs, fake) = setup();
    let before = fake.server().core.requests.len();
    let long_abs = format!("/{}", "a".repeat(3072));
    let long_rel = "a".repeat(2049);
    for bad in [
        "",
        "//",
        "a//b",
        "device/",
        "/local/domain/",
        "../x",
        "a.b",
        "a b",
        "caf\u{e9}",
        "@releaseDomain",
        &long_abs,
        &long_rel,
    ] {
        let want = Err(Error::InvalidPath(Snippet::tail(bad.as_bytes())));
        assert_eq!(xs.write(bad, b"v"), want, "{bad:?}");
        assert_eq!(xs.read(bad, &mut [0u8; 8]).map(|_| ()), want, "{bad:?}");
        assert_eq!(xs.mkdir(bad).map(|_| ()), want, "{bad:?}");
        assert_eq!(xs.rm(bad), want, "{bad:?}");
        assert!(xs.directory(bad, &mut [0u8; 8]).is_err(), "{bad:?}");
        if !bad.starts_with('@') {
            assert_eq!(xs.watch(bad, "t"), want, "{bad:?}");
        }
    }
    assert_eq!(
        fake.server().core.requests.len(),
        before,
        "nothing was sent"
    );
    // Special paths are for watches only; the longest legal paths go out.
    xs.watch("@releaseDomain", "t").unwrap();
    xs.write(&format!("/{}", "a".repeat(3071)), b"v").unwrap();
    xs.write(&"a".repeat(2048), b"v").unwrap();
    assert!(xs.broken().is_none());
}

#[test]
fn row31_typed_reads_name_the_key() {
    let (mut xs, fake) = setup();
    {
        let mut s = fake.server();
        s.core.write("k/text", "abc");
        s.core.write("k/big", "4294967296");
        s.core.write("k/huge", "123456789012345678901234567890");
        s.core.write("k/neg", "-1");
        s.core.write("k/empty", "");
        s.core.write("k/flag", "1");
        s.core.write("k/off", "0");
        s.core.write("k/state", "12");
        s.core.tree.get_mut("/local/domain/1/k/text").unwrap().value = b"\xff\xfe".to_vec();
        s.core.write("k/num", "abc");
    }
    let parse_err = |r: Result<u64>| match r {
        Err(Error::Parse { key, kind, .. }) => (std::string::ToString::to_string(&key), kind),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        parse_err(xs.read_u64("k/num")),
        ("k/num".into(), ParseKind::NotANumber)
    );
    assert_eq!(
        parse_err(xs.read_u32("k/big").map(u64::from)),
        ("k/big".into(), ParseKind::Overflow)
    );
    assert_eq!(
        parse_err(xs.read_u64("k/huge")),
        ("k/huge".into(), ParseKind::TooLong)
    );
    assert_eq!(
        parse_err(xs.read_u64("k/neg")),
        ("k/neg".into(), ParseKind::NotANumber)
    );
    assert_eq!(
        parse_err(xs.read_u64("k/empty")),
        ("k/empty".into(), ParseKind::Empty)
    );
    assert_eq!(
        parse_err(xs.read_state("k/state").map(|s| s as u64)),
        ("k/state".into(), ParseKind::OutOfRange)
    );
    let mut buf = [0u8; 16];
    assert!(matches!(
        xs.read_str("k/text", &mut buf),
        Err(Error::Parse {
            kind: ParseKind::NotUtf8,
            ..
        })
    ));
    assert_eq!(xs.read_bool("k/flag"), Ok(true));
    assert_eq!(xs.read_bool("k/off"), Ok(false));
    assert_eq!(
        xs.read_u64("k/missing").unwrap_err().to_string_lossy(),
        "missing key k/missing"
    );
    assert_eq!(xs.read_u64_opt("k/missing"), Ok(None));
    assert_eq!(xs.read_bool_opt("k/flag"), Ok(Some(true)));
    assert_eq!(xs.read_u32_opt("k/big").map_err(|_| ()), Err(()));
    // A long key keeps its tail.
    let long_key = format!("{}/sectors", "x".repeat(100));
    let Err(Error::MissingKey(k)) = xs.read_u64(&long_key) else {
        panic!()
    };
    assert!(k.is_truncated());
    assert!(k.as_str().unwrap().ends_with("/sectors"));
}

trait Lossy {
    fn to_string_lossy(&self) -> String;
}
impl Lossy for Error {
    fn to_string_lossy(&self) -> String {
        format!("{self}")
    }
}

#[test]
fn row27_reply_longer_than_payload_max_fails_the_connection() {
    let (mut xs, fake) = setup();
    fake.server().mangle = Some(Box::new(|h, _| {
        let mut m = msg_bytes(msg::READ, h.req_id, 0, b"");
        m[12..16].copy_from_slice(&5000u32.to_ne_bytes());
        m.extend(std::iter::repeat_n(b'x', 1000));
        m
    }));
    let mut buf = vec![0u8; 8192];
    assert_eq!(
        xs.read("a", &mut buf),
        Err(Error::Broken(ProtocolError::ReplyTooLarge { len: 5000 }))
    );
    assert_eq!(
        xs.broken(),
        Some(ProtocolError::ReplyTooLarge { len: 5000 })
    );
    fake.server().mangle = None;
    assert_eq!(
        xs.write("a", b""),
        Err(Error::Broken(ProtocolError::ReplyTooLarge { len: 5000 }))
    );
    assert_eq!(
        xs.poll_watch_event(),
        Err(Error::Broken(ProtocolError::ReplyTooLarge { len: 5000 }))
    );
}

#[test]
fn row27_reply_longer_than_what_arrives_fails_the_connection() {
    let (mut xs, fake) = setup();
    xs.set_timeout(Duration::from_millis(50));
    fake.server().core.write("a", "short");
    fake.server().mangle = Some(Box::new(|h, mut reply| {
        let len = u32::from_ne_bytes(reply[12..16].try_into().unwrap()) + 100;
        reply[12..16].copy_from_slice(&len.to_ne_bytes());
        let _ = h;
        reply
    }));
    let r = xs.read("a", &mut [0u8; 256]);
    assert_eq!(
        r,
        Err(Error::Broken(ProtocolError::TruncatedMessage {
            expected: 121,
            got: 21
        }))
    );
    assert!(fake.now() <= 51 * WAIT_NS);
}

#[test]
fn truncated_watch_event_is_detected_while_polling() {
    let (mut xs, fake) = setup();
    xs.set_timeout(Duration::from_millis(20));
    let mut ev = msg_bytes(msg::WATCH_EVENT, 0, 0, b"path\0tok\0");
    ev.truncate(20);
    fake.server().inject(&ev);
    assert_eq!(
        xs.wait_watch_event(Duration::from_millis(5)),
        Err(Error::Timeout)
    );
    assert!(xs.broken().is_none());
    let r = xs.wait_watch_event(Duration::from_millis(100));
    assert_eq!(
        r,
        Err(Error::Broken(ProtocolError::TruncatedMessage {
            expected: 25,
            got: 20
        }))
    );
}

#[test]
fn row28_stray_replies_are_discarded() {
    let (mut xs, fake) = setup();
    fake.server().core.write("a", "right");
    fake.server().mangle = Some(Box::new(|h, reply| {
        if h.ty != msg::READ {
            return reply;
        }
        let mut v = msg_bytes(msg::READ, h.req_id.wrapping_add(1000), 0, b"wrong-id");
        v.extend(msg_bytes(msg::ERROR, h.req_id.wrapping_sub(1), 0, b"EIO\0"));
        v.extend(reply);
        v
    }));
    assert_eq!(read_string(&mut xs, "a").unwrap(), "right");
    assert_eq!(xs.discarded_messages(), 2);
    // The stream stays in sync.
    xs.write("b", b"next").unwrap();
    assert_eq!(read_string(&mut xs, "b").unwrap(), "next");
}

/// docs/hostile-input.md X3: a reply with the request's `req_id` but another type (READ answered
/// as DIRECTORY or WRITE, or an unknown type) fails that request with `BadReply`;
/// the connection stays usable and the real reply, if it follows, is discarded.
#[test]
fn x3_wrong_type_reply_fails_the_request() {
    for wrong in [msg::DIRECTORY, msg::WRITE, 0x1234, msg::WATCH_EVENT + 100] {
        let (mut xs, fake) = setup();
        fake.server().core.write("a", "right");
        fake.server().mangle = Some(Box::new(move |h, reply| {
            if h.ty != msg::READ {
                return reply;
            }
            let mut v = msg_bytes(wrong, h.req_id, 0, b"x\0y\0");
            v.extend(reply);
            v
        }));
        assert_eq!(
            xs.read("a", &mut [0u8; 32]),
            Err(Error::BadReply { op: msg::READ }),
            "type {wrong:#x}"
        );
        assert!(xs.broken().is_none());
        fake.server().mangle = None;
        // The stream stays in sync: the real reply was discarded as a stray.
        xs.write("b", b"next").unwrap();
        assert_eq!(read_string(&mut xs, "b").unwrap(), "next");
        assert_eq!(xs.discarded_messages(), 1, "type {wrong:#x}");
    }
}

/// Review defect (issue 16): a reply with the request's `req_id` and type but another
/// `tx_id` (xenstored echoes the request's) fails that request with `BadReply`, inside
/// and outside a transaction; the connection stays usable and the real reply is a stray.
#[test]
fn reply_with_another_tx_id_fails_the_request() {
    for wrong_tx in [1u32, 0xdead_beef] {
        let (mut xs, fake) = setup();
        fake.server().core.write("a", "right");
        fake.server().mangle = Some(Box::new(move |h, reply| {
            if h.ty != msg::READ {
                return reply;
            }
            let mut v = msg_bytes(msg::READ, h.req_id, h.tx_id ^ wrong_tx, b"wrong");
            v.extend(reply);
            v
        }));
        assert_eq!(
            xs.read("a", &mut [0u8; 32]),
            Err(Error::BadReply { op: msg::READ }),
            "tx xor {wrong_tx:#x}"
        );
        assert!(xs.broken().is_none());
        // Inside a transaction too.
        let r = xs.transaction(|t| {
            let mut buf = [0u8; 32];
            t.read("a", &mut buf).map(|_| ())
        });
        assert!(matches!(r, Err(Error::BadReply { op: msg::READ })), "{r:?}");
        fake.server().mangle = None;
        xs.write("b", b"next").unwrap();
        assert_eq!(read_string(&mut xs, "b").unwrap(), "next");
    }
}

#[test]
fn row28_late_reply_after_timeout_is_not_taken_for_the_next() {
    let (mut xs, fake) = setup();
    xs.set_timeout(Duration::from_millis(30));
    fake.server().core.write("a", "for-first");
    fake.server().core.write("b", "for-second");
    fake.server().paused = true;
    assert_eq!(xs.read("a", &mut [0u8; 32]), Err(Error::Timeout));
    assert!(xs.broken().is_none());
    fake.server().paused = false;
    assert_eq!(read_string(&mut xs, "b").unwrap(), "for-second");
    assert_eq!(xs.discarded_messages(), 1);
}

#[test]
fn row29_response_indices_out_of_range_fail_the_connection() {
    let (mut xs, fake) = setup();
    let mem = fake.mem();
    let cons = mem.load_u32(iface::RSP_CONS);
    mem.store_u32(iface::RSP_PROD, cons.wrapping_add(1025));
    let e = xs.poll_watch_event().unwrap_err();
    assert!(
        matches!(e, Error::Broken(ProtocolError::RspIndex { .. })),
        "{e:?}"
    );
    // Backwards is out of range too (a huge unsigned distance).
    let (mut xs, fake) = setup();
    xs.write("a", b"1").unwrap();
    let mem = fake.mem();
    mem.store_u32(
        iface::RSP_PROD,
        mem.load_u32(iface::RSP_CONS).wrapping_sub(1),
    );
    let e = xs.read("a", &mut [0u8; 8]).unwrap_err();
    assert!(
        matches!(e, Error::Broken(ProtocolError::RspIndex { .. })),
        "{e:?}"
    );
}

#[test]
fn row29_request_indices_out_of_range_fail_the_connection() {
    let (mut xs, fake) = setup();
    fake.server().paused = true;
    let mem = fake.mem();
    mem.store_u32(
        iface::REQ_CONS,
        mem.load_u32(iface::REQ_PROD).wrapping_add(5),
    );
    let e = xs.write("a", b"1").unwrap_err();
    assert!(
        matches!(e, Error::Broken(ProtocolError::ReqIndex { .. })),
        "{e:?}"
    );
}

/// docs/hostile-input.md X8: a xenstored that supports the `error` field and sets it has failed
/// the connection; the client stops at once instead of waiting out its timeout.
/// Without the feature bit the field means nothing and is ignored.
#[test]
fn x8_server_error_field_fails_the_connection() {
    use hypercall::abi::xs_wire::{ERROR_RINGIDX, SERVER_FEATURE_ERROR};
    let (mut xs, fake) = setup();
    let mem = fake.mem();
    mem.store_u32(iface::ERROR, ERROR_RINGIDX);
    xs.write("a", b"1").unwrap();
    mem.store_u32(iface::SERVER_FEATURES, SERVER_FEATURE_ERROR | 0x100);
    let t = fake.now();
    let e = Err(Error::Broken(ProtocolError::ServerError {
        code: ERROR_RINGIDX,
    }));
    assert_eq!(xs.write("a", b"2"), e);
    assert_eq!(fake.now(), t, "failed without waiting");
    mem.store_u32(iface::ERROR, 0);
    assert_eq!(xs.poll_watch_event().map(|_| ()), e, "sticky");
}

/// docs/hostile-input.md X14: a reconnect resets a failed connection on the same
/// page; the client takes over whatever indices xenstored left, drops the message
/// it was half way through, and keeps queued events; xenstored drops its watches.
#[test]
fn x14_reconnect_resets_a_failed_connection() {
    use hypercall::abi::xs_wire::{
        ERROR_RINGIDX, SERVER_FEATURE_ERROR, SERVER_FEATURE_RECONNECTION,
    };
    let (mut xs, fake) = setup();
    let mem = fake.mem();
    mem.store_u32(
        iface::SERVER_FEATURES,
        SERVER_FEATURE_RECONNECTION | SERVER_FEATURE_ERROR,
    );
    xs.write("a", b"1").unwrap();
    xs.watch("a", "tok").unwrap();
    xs.write("c", b"0").unwrap();
    assert_eq!(xs.pending_watch_events(), 1);
    // Half a message on the response ring, then xenstored gives up on us.
    fake.server()
        .inject(&msg_bytes(msg::READ, 99, 0, b"0123456789")[..20]);
    assert!(xs.poll_watch_event_for("nothing").unwrap().is_none());
    mem.store_u32(iface::ERROR, ERROR_RINGIDX);
    let broken = Err(Error::Broken(ProtocolError::ServerError {
        code: ERROR_RINGIDX,
    }));
    assert_eq!(xs.write("a", b"2"), broken);
    // xenstored resets the rings to indices that are neither 0 nor ours.
    fake.server().reset_index = 0xffff_fff0;
    let notified = fake.notifies();
    xs.reconnect().unwrap();
    assert!(fake.notifies() > notified, "xenstored was told");
    assert_eq!(fake.server().reconnects, 1);
    assert_eq!(mem.load_u32(iface::CONNECTION), 0);
    assert!(
        fake.server().core.watches.is_empty(),
        "xenstored dropped the watch"
    );
    assert_eq!(xs.broken(), None);
    // The old data is there, new requests frame correctly across the index wrap.
    assert_eq!(read_string(&mut xs, "a").unwrap(), "1");
    let big = vec![b'x'; 3000];
    xs.write("b", &big).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(xs.read("b", &mut buf).unwrap(), 3000);
    // The event queued before the reset is still there; the watch can be set again.
    assert_eq!(xs.pending_watch_events(), 1);
    xs.watch("a", "tok").unwrap();
    assert_eq!(fake.server().core.watches.len(), 1);
}

/// docs/hostile-input.md X14: `connection` never cleared: a typed timeout in
/// bounded time, the client failed (no request sent, no ring read) until a later
/// reconnect sees the reset done.
#[test]
fn x14_reconnect_never_completed_times_out() {
    use hypercall::abi::xs_wire::SERVER_FEATURE_RECONNECTION;
    let (mut xs, fake) = setup();
    let mem = fake.mem();
    mem.store_u32(iface::SERVER_FEATURES, SERVER_FEATURE_RECONNECTION);
    xs.write("a", b"1").unwrap();
    xs.set_timeout(Duration::from_millis(40));
    fake.server().hold_reconnect = true;
    let t = fake.now();
    assert_eq!(xs.reconnect(), Err(Error::ReconnectTimeout));
    assert_eq!(fake.now() - t, 40 * WAIT_NS, "bounded by the timeout");
    assert_eq!(mem.load_u32(iface::CONNECTION), 1);
    let pending = Err(Error::Broken(ProtocolError::ReconnectPending));
    let (t, reqs) = (fake.now(), fake.server().core.requests.len());
    assert_eq!(xs.write("a", b"2"), pending);
    assert_eq!(xs.poll_watch_event().map(|_| ()), pending);
    assert_eq!((fake.now(), fake.server().core.requests.len()), (t, reqs));
    // A reply xenstored wrote meanwhile is not taken as ours.
    fake.server().hold_reconnect = false;
    xs.reconnect().unwrap();
    assert_eq!(read_string(&mut xs, "a").unwrap(), "1");
}

/// docs/hostile-input.md X14: without the feature nothing is touched; a
/// `connection` already set by someone else is waited out.
#[test]
fn x14_reconnect_only_when_offered_and_waits_for_one_in_progress() {
    use hypercall::abi::xs_wire::{SERVER_FEATURE_ERROR, SERVER_FEATURE_RECONNECTION};
    let (mut xs, fake) = setup();
    let mem = fake.mem();
    mem.store_u32(iface::SERVER_FEATURES, SERVER_FEATURE_ERROR);
    let t = fake.now();
    assert_eq!(xs.reconnect(), Err(Error::ReconnectNotOffered));
    assert_eq!((mem.load_u32(iface::CONNECTION), fake.now()), (0, t));
    xs.write("a", b"1").unwrap();
    // Unknown bits beside the feature are ignored; a reset already under way.
    mem.store_u32(iface::SERVER_FEATURES, SERVER_FEATURE_RECONNECTION | 0x100);
    mem.store_u32(iface::CONNECTION, 1);
    xs.reconnect().unwrap();
    assert_eq!(fake.server().reconnects, 1);
    assert_eq!(read_string(&mut xs, "a").unwrap(), "1");
    // Unattached: no page to reset.
    let mut loose = Xenstore::unattached(fake.clone());
    assert_eq!(loose.reconnect(), Err(Error::NoXenstore));
}

#[test]
fn timeout_when_xenstored_is_silent() {
    let (mut xs, fake) = setup();
    xs.set_timeout(Duration::from_millis(25));
    fake.server().paused = true;
    assert_eq!(xs.write("a", b"1"), Err(Error::Timeout));
    assert_eq!(fake.now(), 25 * WAIT_NS);
    assert_eq!(
        xs.wait_watch_event(Duration::from_millis(5)),
        Err(Error::Timeout)
    );
}

#[test]
fn a_request_stuck_half_written_fails_the_connection() {
    let (mut xs, fake) = setup();
    xs.set_timeout(Duration::from_millis(25));
    fake.server().paused = true;
    let e = xs.write("a", &[b'x'; 3000]).unwrap_err();
    assert_eq!(
        e,
        Error::Broken(ProtocolError::RequestStalled {
            written: 1024,
            total: 3018
        })
    );
}

#[test]
fn request_ring_full_with_server_busy_sending_events_does_not_deadlock() {
    // xenstored floods events; the client must keep draining responses while it
    // waits for request space.
    let (mut xs, fake) = setup();
    xs.watch("flood", "f").unwrap();
    let mut n = 0;
    fake.server().hook = Some(Box::new(move |c| {
        if n < 200 {
            n += 1;
            c.write("flood/x", "y");
        }
    }));
    fake.server().max_chunk = 50;
    xs.write("big", &[b'b'; 4000]).unwrap();
    assert_eq!(read_string(&mut xs, "big").unwrap().len(), 4000);
}

// ---- row 30: watch floods -----------------------------------------------------------

#[test]
fn row30_flood_keeps_the_newest_and_reports_overflow() {
    let (mut xs, fake) = setup();
    for i in 0..100 {
        let p = format!("p{i:02}\0flood\0");
        fake.server()
            .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, p.as_bytes()));
    }
    xs.write("a", b"1").unwrap();
    assert_eq!(xs.pending_watch_events(), WATCH_QUEUE_LEN);
    assert_eq!(xs.lost_watch_events(), (100 - WATCH_QUEUE_LEN) as u64);
    assert!(xs.watch_overflowed());
    assert!(xs.take_watch_overflow());
    assert!(!xs.watch_overflowed());
    let first = xs.poll_watch_event().unwrap().unwrap();
    assert_eq!(first.path(), format!("p{:02}", 100 - WATCH_QUEUE_LEN));
}

#[test]
fn events_pulled_in_by_a_request_move_the_received_count() {
    // A main loop learns this way that a request of its own took events off the
    // ring (their notification is spent) and that it must not sleep yet.
    let (mut xs, fake) = setup();
    let start = xs.watch_events_received();
    xs.write("a", b"1").unwrap();
    assert_eq!(xs.watch_events_received(), start);
    fake.server()
        .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, b"p\0tok\0"));
    xs.write("a", b"2").unwrap();
    assert_eq!(xs.pending_watch_events(), 1);
    let after = xs.watch_events_received();
    assert_ne!(after, start);
    // Taking the event does not move it; an unusable one does.
    assert!(xs.drain_watch_events_for("tok").unwrap());
    assert_eq!(xs.watch_events_received(), after);
    fake.server()
        .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, b"no-token"));
    xs.write("a", b"3").unwrap();
    assert_eq!(xs.pending_watch_events(), 0);
    assert_ne!(xs.watch_events_received(), after);
}

#[test]
fn row30_unusable_events_are_counted_not_queued() {
    let (mut xs, fake) = setup();
    let long = format!("{}\0t\0", "x".repeat(WATCH_PATH_MAX + 1));
    fake.server()
        .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, long.as_bytes()));
    fake.server()
        .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, b"no-token"));
    fake.server()
        .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, b"ok\0t\0"));
    xs.write("a", b"1").unwrap();
    assert_eq!(xs.pending_watch_events(), 1);
    assert_eq!(xs.lost_watch_events(), 2);
}

// ---- HVM params ---------------------------------------------------------------------

#[test]
fn from_hvm_params_checks_the_page() {
    let fake = FakePlatform::new();
    fake.set_store_pfn(0);
    assert!(matches!(
        Xenstore::from_hvm_params(fake.clone()),
        Err(Error::NoXenstore)
    ));
    fake.set_store_pfn(0x1234);
    assert!(matches!(
        Xenstore::from_hvm_params(fake.clone()),
        Err(Error::NotMapped(hypercall::Gfn(0x1234)))
    ));
    fake.set_store_pfn(crate::fake::STORE_PFN);
    let mut xs = Xenstore::from_hvm_params(fake.clone()).unwrap();
    assert_eq!(xs.port(), crate::fake::port());
    let before = fake.notifies();
    xs.write("a", b"1").unwrap();
    assert!(fake.notifies() > before);
}

#[test]
fn raw_requests_reach_unwrapped_ops() {
    let (mut xs, fake) = setup();
    let mut buf = [0u8; 16];
    let r = xs.request(TxId::NONE, msg::RESET_WATCHES, &[b"\0"], &mut buf);
    assert_eq!(r, Err(Error::Xenstore(ErrnoName::Einval)));
    assert_eq!(
        fake.server().core.requests.last().unwrap().ty,
        msg::RESET_WATCHES
    );
}

// ---- frontend handshake -----------------------------------------------------------

mod handshake {
    use super::*;
    use crate::fake::Core;
    use crate::frontend::{BackendEvent, FrontendHandshake, Phase};
    use std::cell::Cell;
    use std::rc::Rc;

    const FE: &str = "/local/domain/1/device/vbd/51712";
    const BE: &str = "/local/domain/0/backend/vbd/1/51712";
    const T: Duration = Duration::from_secs(5);

    // Joined without `format!` (the backend hook builds these on every server step,
    // and formatting is slow under Miri).
    fn fe(k: &str) -> String {
        [FE, "/", k].concat()
    }
    fn be(k: &str) -> String {
        [BE, "/", k].concat()
    }

    /// A blkback-like backend that reacts after `delay` server steps.
    fn backend(fake: &FakePlatform, delay: u32, closing_after_init_wait: bool) -> Rc<Cell<u32>> {
        {
            let mut s = fake.server();
            s.core.write(&fe("backend"), BE);
            s.core.write(&fe("backend-id"), "0");
            s.core.write(&fe("state"), "1");
            s.core.write(&be("state"), "1");
            s.core.write(&be("sectors"), "2048");
            s.core.write(&be("feature-flush-cache"), "1");
        }
        let steps = Rc::new(Cell::new(0u32));
        let counter = steps.clone();
        let mut wait = 0u32;
        // The paths made once, not on every step.
        let (fe_state, be_state, fe_ring) = (fe("state"), be("state"), fe("ring-ref"));
        fake.server().hook = Some(Box::new(move |c: &mut Core| {
            counter.set(counter.get() + 1);
            if wait > 0 {
                wait -= 1;
                return;
            }
            let f = c.read(&fe_state).unwrap_or_default();
            let b = c.read(&be_state).unwrap_or_default();
            match (f.as_str(), b.as_str()) {
                ("1", "1") | ("1", "6") => {
                    c.write(&be_state, "2");
                    wait = delay;
                }
                ("2", _) => {}
                ("3", "2") if closing_after_init_wait => c.write(&be_state, "5"),
                ("3", "2") | ("4", "2") if c.read(&fe_ring).is_some() => {
                    c.write(&be_state, "4");
                }
                ("6", "5") | ("5", "4") | ("5", "5") => c.write(&be_state, "6"),
                _ => {}
            }
        }));
        steps
    }

    fn connect(xs: &mut Xenstore<FakePlatform>, hs: &mut FrontendHandshake) {
        hs.start(xs).unwrap();
        hs.wait_for_backend(xs, T).unwrap();
        assert_eq!(hs.phase(), Phase::BackendReady);
        assert_eq!(
            xs.read_u64(&hs.backend_key("sectors").unwrap()).unwrap(),
            2048
        );
        assert!(xs
            .read_bool(&hs.backend_key("feature-flush-cache").unwrap())
            .unwrap());
        assert_eq!(
            xs.read_bool_opt(&hs.backend_key("feature-discard").unwrap())
                .unwrap(),
            None
        );
        hs.publish(xs, XenbusState::Initialised, |tx, node| {
            tx.write_u32(&Path::join(node, "ring-ref")?, 8)?;
            tx.write_u32(&Path::join(node, "event-channel")?, 5)?;
            tx.write_str(&Path::join(node, "protocol")?, "x86_64-abi")
        })
        .unwrap();
        assert_eq!(hs.phase(), Phase::Published);
        hs.wait_connected(xs, T).unwrap();
        assert_eq!(hs.phase(), Phase::Connected);
    }

    #[test]
    fn reset_builds_a_fresh_handshake_in_place() {
        let (mut xs, fake) = setup();
        backend(&fake, 10, false);
        let mut hs = FrontendHandshake::unset();
        assert!(hs.start(&mut xs).is_err(), "no device node yet");
        hs.reset("device/vbd/51712").unwrap();
        assert_eq!(hs.node(), "device/vbd/51712");
        assert_eq!(hs.phase(), Phase::Idle);
        connect(&mut xs, &mut hs);
        assert_eq!(hs.backend(), BE);
        // A node too long for a path: refused, and the handshake is left unset
        // (not half of the old one).
        let long = "d".repeat(300);
        assert!(hs.reset(&long).is_err());
        assert_eq!(hs.node(), "");
        assert_eq!(hs.phase(), Phase::Idle);
        assert!(hs.start(&mut xs).is_err());
    }

    #[test]
    fn backend_goes_init_wait_then_connected() {
        let (mut xs, fake) = setup();
        backend(&fake, 10, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        assert_eq!(hs.phase(), Phase::Idle);
        connect(&mut xs, &mut hs);
        assert_eq!(hs.backend(), BE);
        assert_eq!(hs.backend_id(), DomId(0));
        let s = fake.server();
        assert_eq!(s.core.read(&fe("state")).as_deref(), Some("4"));
        assert_eq!(s.core.read(&be("state")).as_deref(), Some("4"));
        assert_eq!(s.core.read(&fe("ring-ref")).as_deref(), Some("8"));
        assert_eq!(s.core.read(&fe("protocol")).as_deref(), Some("x86_64-abi"));
        // The keys and state=Initialised went in one transaction.
        let writes: Vec<u32> = s
            .core
            .requests
            .iter()
            .filter(|h| h.ty == msg::WRITE)
            .map(|h| h.tx_id)
            .collect();
        let tx = writes[writes.len() - 5];
        assert_ne!(tx, 0);
        assert_eq!(
            &writes[writes.len() - 5..writes.len() - 1],
            [tx, tx, tx, tx]
        );
    }

    #[test]
    fn publish_retries_eagain() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        hs.start(&mut xs).unwrap();
        hs.wait_for_backend(&mut xs, T).unwrap();
        fake.server().core.eagain_commits = 2;
        let mut runs = 0;
        hs.publish(&mut xs, XenbusState::Initialised, |tx, node| {
            runs += 1;
            tx.write_u32(&Path::join(node, "ring-ref")?, 8)
        })
        .unwrap();
        assert_eq!(runs, 3);
        hs.wait_connected(&mut xs, T).unwrap();
    }

    #[test]
    fn steps_out_of_order_are_refused() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        assert_eq!(
            hs.wait_connected(&mut xs, T),
            Err(Error::WrongPhase(Phase::Idle))
        );
        assert_eq!(
            hs.publish(&mut xs, XenbusState::Initialised, |_, _| Ok(())),
            Err(Error::WrongPhase(Phase::Idle))
        );
        hs.start(&mut xs).unwrap();
        assert_eq!(hs.start(&mut xs), Err(Error::WrongPhase(Phase::Started)));
        hs.wait_for_backend(&mut xs, T).unwrap();
        assert_eq!(
            hs.publish(&mut xs, XenbusState::Closing, |_, _| Ok(())),
            Err(Error::InvalidArgument(
                "publish state must be Initialised or Connected"
            ))
        );
    }

    #[test]
    fn backend_that_never_answers_times_out() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        fake.server().hook = None;
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        hs.start(&mut xs).unwrap();
        // Past one re-check slice (1 s) either way; Miri waits out the shorter
        // deadline (each 1 ms wait costs it thousands of steps).
        let timeout = Duration::from_millis(if cfg!(miri) { 1100 } else { 2500 });
        // Under Miri also a 10 ms wait step (110 waits, not 1100): still within one
        // step of the deadline, far from the mutant's whole second past it.
        let step = if cfg!(miri) { 10 * WAIT_NS } else { WAIT_NS };
        fake.set_wait_ns(step);
        let t0 = fake.now();
        let reads = |fake: &FakePlatform| {
            let s = fake.server();
            s.core.requests.iter().filter(|h| h.ty == msg::READ).count()
        };
        let r0 = reads(&fake);
        assert_eq!(hs.wait_for_backend(&mut xs, timeout), Err(Error::Timeout));
        // At the deadline, not at the end of a whole re-check slice past it (mutant:
        // the last slice's `deadline - now` as `deadline + now`).
        let took = fake.now() - t0;
        assert!(
            took >= timeout.as_nanos() as u64 && took <= timeout.as_nanos() as u64 + step,
            "{took} ns"
        );
        // With no watch event the state is re-read once a second (each slice ends)
        // and once at the deadline, not polled (mutant: `deadline / now`, slices of
        // a few microseconds).
        let slices = timeout.as_millis().div_ceil(1000) as usize;
        assert_eq!(reads(&fake) - r0, slices + 1);
    }

    /// Row 30 / docs/hostile-input.md X7: a xenstored that answers every read with another
    /// watch event for our token (concurrently, on a moving clock) must not hold the
    /// handshake past its deadline: draining the queue is bounded.
    #[test]
    fn row30_endless_watch_events_cannot_outlast_the_deadline() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        fake.server().hook = None; // the backend stays Initialising
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        hs.start(&mut xs).unwrap();
        let token = String::from(hs.token());
        let mut steps = 0u32;
        fake.server().hook = Some(Box::new(move |c: &mut Core| {
            steps += 1;
            assert!(
                steps < 200_000,
                "livelock: the client never reached its deadline"
            );
            c.event(&be("state"), &token);
        }));
        fake.set_concurrent(Some(WAIT_NS / 10));
        // 500 flooded round trips natively, 50 under Miri (each costs it tens of
        // thousands of steps): the deadline holds either way.
        let deadline = Duration::from_millis(if cfg!(miri) { 5 } else { 50 });
        assert_eq!(hs.wait_for_backend(&mut xs, deadline), Err(Error::Timeout));
        assert!(hs.poll_backend(&mut xs).is_ok());
    }

    /// A reconnect right after `closed()`: the backend (a separate thread in shim-hv,
    /// a driver domain on Xen) is still `Closing`, then `Closed`, before it reacts to
    /// our `Initialising` with `InitWait`. That lag is not a failure (X12).
    #[test]
    fn reconnect_waits_for_a_backend_still_closing() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        fake.server().core.write(&be("state"), "5");
        let mut steps = 0u32;
        fake.server().hook = Some(Box::new(move |c: &mut Core| {
            if c.read(&fe("state")).as_deref() != Some("1") {
                return;
            }
            steps += 1;
            match steps {
                5 => c.write(&be("state"), "6"),
                10 => c.write(&be("state"), "2"),
                _ => {}
            }
        }));
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        assert_eq!(hs.start(&mut xs).unwrap(), XenbusState::Closing);
        hs.wait_for_backend(&mut xs, T).unwrap();
        assert_eq!(hs.phase(), Phase::BackendReady);
    }

    /// A reconnect against a backend that, like Linux netback, restarts only from
    /// `Closed` and follows our `Closed` with a lag: `start()` must not announce
    /// `Initialising` while it is still `Closing` (that `Initialising` would be lost
    /// and the reconnect would hang).
    #[test]
    fn reconnect_lets_a_lagging_backend_finish_closing_first() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        connect(&mut xs, &mut hs);
        let mut lag = 0u32;
        fake.server().hook = Some(Box::new(move |c: &mut Core| {
            let f = c.read(&fe("state")).unwrap_or_default();
            let b = c.read(&be("state")).unwrap_or_default();
            match (f.as_str(), b.as_str()) {
                ("5", "4") => c.write(&be("state"), "5"),
                // Closed reaches the backend only after a few steps.
                ("6", "5") => {
                    lag += 1;
                    if lag == 30 {
                        c.write(&be("state"), "6");
                    }
                }
                ("1", "6") => c.write(&be("state"), "2"),
                ("3", "2") if c.read(&fe("ring-ref")).is_some() => c.write(&be("state"), "4"),
                _ => {}
            }
        }));
        hs.close(&mut xs, T).unwrap();
        assert_eq!(fake.server().core.read(&be("state")).as_deref(), Some("5"));
        fake.server().core.rm_for_test(&fe("ring-ref"));
        connect(&mut xs, &mut hs);
        assert_eq!(fake.server().core.read(&be("state")).as_deref(), Some("4"));
    }

    /// ... but a backend that was alive after our start and then closes does fail
    /// the wait at once.
    #[test]
    fn backend_closing_while_we_wait_for_init_wait_fails_it() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        fake.server().hook = None;
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        assert_eq!(hs.start(&mut xs).unwrap(), XenbusState::Initialising);
        let mut steps = 0u32;
        fake.server().hook = Some(Box::new(move |c: &mut Core| {
            steps += 1;
            if steps == 3 {
                c.write(&be("state"), "5");
            }
        }));
        assert_eq!(
            hs.wait_for_backend(&mut xs, T),
            Err(Error::BackendClosed(XenbusState::Closing))
        );
        assert!(fake.now() < T.as_nanos() as u64 / 10, "failed fast");
    }

    #[test]
    fn backend_closing_during_the_handshake_fails_it() {
        let (mut xs, fake) = setup();
        backend(&fake, 3, true);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        hs.start(&mut xs).unwrap();
        hs.wait_for_backend(&mut xs, T).unwrap();
        hs.publish(&mut xs, XenbusState::Initialised, |tx, node| {
            tx.write_u32(&Path::join(node, "ring-ref")?, 8)
        })
        .unwrap();
        assert_eq!(
            hs.wait_connected(&mut xs, T),
            Err(Error::BackendClosed(XenbusState::Closing))
        );
        assert_eq!(hs.phase(), Phase::BackendClosing);
        hs.closed(&mut xs).unwrap();
        assert_eq!(fake.server().core.read(&fe("state")).as_deref(), Some("6"));
    }

    #[test]
    fn backend_closing_after_connect_is_reported_and_reconnect_works() {
        let (mut xs, fake) = setup();
        backend(&fake, 2, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        connect(&mut xs, &mut hs);
        assert_eq!(hs.poll_backend(&mut xs).unwrap(), None);

        // Unrelated watch traffic is left alone.
        xs.watch("other", "other-token").unwrap();
        fake.server().core.write(&be("state"), "5");
        let mut ev = None;
        for _ in 0..10 {
            fake.server().step();
            ev = hs.poll_backend(&mut xs).unwrap();
            if ev.is_some() {
                break;
            }
        }
        assert_eq!(ev, Some(BackendEvent::Closing(XenbusState::Closing)));
        assert_eq!(hs.phase(), Phase::BackendClosing);
        assert!(xs.poll_watch_event_for("other-token").unwrap().is_some());
        // The device tears down, then:
        hs.closed(&mut xs).unwrap();
        assert_eq!(hs.phase(), Phase::Closed);
        assert_eq!(fake.server().core.read(&fe("state")).as_deref(), Some("6"));
        // Backend follows to Closed; reconnect: Closed -> Initialising -> ... Connected.
        fake.server().step();
        assert_eq!(fake.server().core.read(&be("state")).as_deref(), Some("6"));
        fake.server().core.rm_for_test(&fe("ring-ref"));
        connect(&mut xs, &mut hs);
        assert_eq!(fake.server().core.read(&be("state")).as_deref(), Some("4"));
    }

    /// docs/hostile-input.md X12: a backend toggling Closing/Closed (and repeating values) is
    /// one `Closing` event, so the device tears down exactly once; after `closed()`
    /// the toggling is not seen at all, and a reconnect works.
    #[test]
    fn x12_rapid_closing_closed_toggling_is_reported_once() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        connect(&mut xs, &mut hs);
        let mut events = Vec::new();
        for v in ["5", "6", "6", "5", "6", "0", "5", "6"] {
            fake.server().core.write(&be("state"), v);
            fake.server().step();
            // Several polls per change: duplicates and re-reads add nothing.
            for _ in 0..3 {
                if let Some(ev) = hs.poll_backend(&mut xs).unwrap() {
                    events.push(ev);
                }
            }
            assert_eq!(hs.phase(), Phase::BackendClosing, "after {v}");
        }
        assert_eq!(events, [BackendEvent::Closing(XenbusState::Closing)]);
        // The device tears down once, then:
        hs.closed(&mut xs).unwrap();
        for v in ["5", "6", "5", "6"] {
            fake.server().core.write(&be("state"), v);
            fake.server().step();
            assert_eq!(hs.poll_backend(&mut xs).unwrap(), None);
        }
        assert_eq!(hs.phase(), Phase::Closed);
        fake.server().core.rm_for_test(&fe("ring-ref"));
        connect(&mut xs, &mut hs);
        assert_eq!(fake.server().core.read(&be("state")).as_deref(), Some("4"));
    }

    #[test]
    fn frontend_initiated_close() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        connect(&mut xs, &mut hs);
        hs.close(&mut xs, T).unwrap();
        assert_eq!(hs.phase(), Phase::Closed);
        assert_eq!(fake.server().core.read(&fe("state")).as_deref(), Some("6"));
        assert!(fake
            .server()
            .core
            .watches
            .iter()
            .all(|(_, t)| t != hs.token()));
    }

    #[test]
    fn lost_events_make_poll_backend_re_read() {
        let (mut xs, fake) = setup();
        backend(&fake, 0, false);
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        connect(&mut xs, &mut hs);
        fake.server().hook = None;
        // Backend closes, but its event is drowned in a flood.
        fake.server().core.tree.get_mut(BE).unwrap();
        fake.server().core.tree.get_mut(&be("state")).unwrap().value = b"5".to_vec();
        for i in 0..(WATCH_QUEUE_LEN + 5) {
            let p = format!("x{i}\0flood\0");
            fake.server()
                .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, p.as_bytes()));
        }
        xs.write("a", b"1").unwrap();
        assert_eq!(
            hs.poll_backend(&mut xs).unwrap(),
            Some(BackendEvent::Closing(XenbusState::Closing))
        );
    }

    #[test]
    fn bad_backend_id_and_missing_backend() {
        let (mut xs, fake) = setup();
        let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
        assert!(matches!(hs.start(&mut xs), Err(Error::MissingKey(_))));
        fake.server().core.write(&fe("backend"), BE);
        fake.server().core.write(&fe("backend-id"), "70000");
        assert!(matches!(
            hs.start(&mut xs),
            Err(Error::Parse {
                kind: ParseKind::OutOfRange,
                ..
            })
        ));
        fake.server().core.write(&fe("backend-id"), "zero");
        assert!(matches!(
            hs.start(&mut xs),
            Err(Error::Parse {
                kind: ParseKind::NotANumber,
                ..
            })
        ));
    }

    /// docs/hostile-input.md X13: a `backend` outside the backend domain's tree is refused at
    /// `start` with a typed error, before anything there is read or watched.
    #[test]
    fn x13_odd_backend_paths_are_refused() {
        let long = format!("/local/domain/0/{}", "a/".repeat(1600));
        let long = long.trim_end_matches('/');
        let cases: &[(&str, &str)] = &[
            ("backend/vbd/1/51712", "0"),                 // relative: our own tree
            ("/", "0"),                                   // the root
            ("/local/domain/0", "0"),                     // the domain node itself
            ("/local/domain/0/", "0"),                    // not a valid path
            ("/local/domain/2/backend/vbd/1/51712", "0"), // another guest's tree
            ("/local/domain/1/device/vbd/51712", "0"),    // our own device node
            ("/local/domain/00/backend/vbd/1/51712", "0"),
            ("/local/domain/0/backend/vbd/1/51712", "7"), // id and tree disagree
            ("/local/domain/0/../1/device", "0"),         // `..`
            ("/tool/xenstored", "0"),
            (long, "0"), // over-long
        ];
        for (path, id) in cases {
            let (mut xs, fake) = setup();
            fake.server().core.write(&fe("backend"), path);
            fake.server().core.write(&fe("backend-id"), id);
            fake.server().core.write(&fe("state"), "1");
            let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
            let e = hs.start(&mut xs).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::BadBackendPath { .. }
                        | Error::InvalidPath(_)
                        | Error::PathTooLong { .. }
                ),
                "{path:?} (id {id}): {e:?}"
            );
            assert!(!format!("{e}").is_empty());
            assert_eq!(hs.phase(), Phase::Idle, "{path:?}");
            assert_eq!(hs.backend(), "", "{path:?}: not taken");
            // Nothing written, nothing watched.
            assert_eq!(fake.server().core.read(&fe("state")).as_deref(), Some("1"));
            assert!(fake.server().core.watches.is_empty(), "{path:?}");
        }
        // The checks do not refuse the usual places, e.g. a driver domain's tree.
        for (path, id) in [(BE, "0"), ("/local/domain/3/backend/vbd/1/51712", "3")] {
            let (mut xs, fake) = setup();
            fake.server().core.write(&fe("backend"), path);
            fake.server().core.write(&fe("backend-id"), id);
            fake.server().core.write(&format!("{path}/state"), "2");
            let mut hs = FrontendHandshake::new("device/vbd/51712").unwrap();
            assert_eq!(hs.start(&mut xs).unwrap(), XenbusState::InitWait);
            assert_eq!(hs.backend(), path);
        }
    }
}

// ---- power events -------------------------------------------------------------------

mod power_events {
    use super::*;
    use crate::power::*;

    fn setup_power(
        features: PowerFeatures,
    ) -> (Xenstore<FakePlatform>, FakePlatform, PowerControl) {
        let (mut xs, fake) = setup();
        let pc = PowerControl::new(&mut xs, features).unwrap();
        (xs, fake, pc)
    }

    fn request(fake: &FakePlatform, value: &str) {
        fake.server().core.write(crate::power::SHUTDOWN_NODE, value);
    }

    const ALL: PowerFeatures = PowerFeatures::all();

    /// Row 30 / docs/hostile-input.md S2: a flood of `control/shutdown` events with nothing
    /// in the node: `wait` still times out, and no action is taken.
    #[test]
    fn row30_endless_shutdown_events_cannot_outlast_the_deadline() {
        let (mut xs, fake, mut pc) = setup_power(ALL);
        let mut steps = 0u32;
        fake.server().hook = Some(Box::new(move |c: &mut crate::fake::Core| {
            steps += 1;
            assert!(
                steps < 200_000,
                "livelock: the client never reached its deadline"
            );
            c.event(SHUTDOWN_NODE, POWER_TOKEN);
        }));
        fake.set_concurrent(Some(WAIT_NS / 10));
        assert_eq!(
            pc.wait(
                &mut xs,
                Duration::from_millis(if cfg!(miri) { 5 } else { 50 })
            ),
            Err(Error::Timeout)
        );
        assert_eq!(pc.pending(), None);
        assert!(fake.shutdowns().is_empty());
    }

    /// docs/hostile-input.md S3: a request for something the guest did not declare (here
    /// `suspend` and `reboot`) is cleared and reported, never delivered; what it does
    /// implement still works afterwards.
    #[test]
    fn s3_requests_for_undeclared_features_are_refused() {
        let (mut xs, fake, mut pc) = setup_power(PowerFeatures::POWEROFF);
        for value in ["suspend", "reboot"] {
            request(&fake, value);
            match pc.wait(&mut xs, Duration::from_secs(1)) {
                Err(Error::BadShutdownValue(v)) => assert_eq!(v.as_str(), Some(value)),
                other => panic!("{value}: {other:?}"),
            }
            assert_eq!(pc.pending(), None);
            assert_eq!(fake.server().core.read(SHUTDOWN_NODE).as_deref(), Some(""));
        }
        request(&fake, "halt");
        assert_eq!(
            pc.wait(&mut xs, Duration::from_secs(1)).unwrap(),
            PowerEvent::Halt
        );
        assert!(fake.shutdowns().is_empty(), "the kit itself never acts");
    }

    #[test]
    fn advertises_only_what_the_caller_implements() {
        let (_xs, fake, _pc) = setup_power(PowerFeatures::POWEROFF);
        let s = fake.server();
        assert_eq!(
            s.core.read("control/feature-poweroff").as_deref(),
            Some("1")
        );
        assert_eq!(s.core.read("control/feature-reboot"), None);
        assert_eq!(s.core.read("control/feature-suspend"), None);
    }

    /// Each feature is advertised at its own key (and no other), and delivers
    /// just its requests.
    #[test]
    fn each_feature_is_written_to_its_key() {
        assert_eq!(
            PowerFeatures::KEYS,
            &[
                (PowerFeatures::POWEROFF, "control/feature-poweroff"),
                (PowerFeatures::REBOOT, "control/feature-reboot"),
                (PowerFeatures::SUSPEND, "control/feature-suspend"),
            ]
        );
        let keys = [
            "control/feature-poweroff",
            "control/feature-reboot",
            "control/feature-suspend",
        ];
        for (feature, key) in [
            (PowerFeatures::POWEROFF, keys[0]),
            (PowerFeatures::REBOOT, keys[1]),
            (PowerFeatures::SUSPEND, keys[2]),
        ] {
            let (_xs, fake, _pc) = setup_power(feature);
            let s = fake.server();
            for k in keys {
                let want = (k == key).then(|| String::from("1"));
                assert_eq!(s.core.read(k), want, "{feature:?}: {k}");
            }
        }
        for (ev, feature) in [
            (PowerEvent::Poweroff, PowerFeatures::POWEROFF),
            (PowerEvent::Halt, PowerFeatures::POWEROFF),
            (PowerEvent::Reboot, PowerFeatures::REBOOT),
            (PowerEvent::Suspend, PowerFeatures::SUSPEND),
        ] {
            assert_eq!(ev.feature(), feature);
            assert!(feature.handles(ev) && ALL.handles(ev));
            assert!(!(ALL - feature).handles(ev), "{ev:?}");
        }
    }

    #[test]
    fn each_request_is_typed_and_cleared() {
        for (value, ev, reason) in [
            ("poweroff", PowerEvent::Poweroff, 0),
            ("reboot", PowerEvent::Reboot, 1),
            ("halt", PowerEvent::Halt, 0),
            ("suspend", PowerEvent::Suspend, 2),
        ] {
            let (mut xs, fake, mut pc) = setup_power(ALL);
            // The registration event with no request yet.
            assert_eq!(pc.poll(&mut xs).unwrap(), None);
            request(&fake, value);
            assert_eq!(pc.wait(&mut xs, Duration::from_secs(1)).unwrap(), ev);
            assert_eq!(pc.pending(), Some(ev));
            assert_eq!(
                fake.server().core.read("control/shutdown").as_deref(),
                Some("")
            );
            issue_shutdown(xs.platform(), ev.shutdown_reason()).unwrap();
            assert_eq!(fake.shutdowns(), [reason]);
            assert_eq!(ev.as_str(), value);
        }
    }

    #[test]
    fn read_and_clear_happen_in_one_transaction() {
        let (mut xs, fake, mut pc) = setup_power(ALL);
        request(&fake, "poweroff");
        assert_eq!(
            pc.wait(&mut xs, Duration::from_secs(1)).unwrap(),
            PowerEvent::Poweroff
        );
        let s = fake.server();
        let reqs = &s.core.requests;
        let i = reqs.iter().rposition(|h| h.ty == msg::WRITE).unwrap();
        let tx = reqs[i].tx_id;
        assert_ne!(tx, 0);
        assert!(reqs[..i].iter().any(|h| h.ty == msg::READ && h.tx_id == tx));
        assert!(reqs[i..]
            .iter()
            .any(|h| h.ty == msg::TRANSACTION_END && h.tx_id == tx));
    }

    #[test]
    fn row38_garbage_is_reported_and_cleared() {
        let (mut xs, fake, mut pc) = setup_power(ALL);
        for garbage in [
            "crash",
            "POWEROFF",
            "poweroff\n",
            "\u{1}\u{2}",
            &"x".repeat(100),
        ] {
            request(&fake, garbage);
            match pc.wait(&mut xs, Duration::from_secs(1)) {
                Err(Error::BadShutdownValue(v)) => {
                    assert_eq!(v.total_len(), garbage.len());
                    if garbage.len() <= SNIPPET_MAX {
                        assert_eq!(v.as_bytes(), garbage.as_bytes());
                    }
                }
                other => panic!("{garbage:?}: {other:?}"),
            }
            assert_eq!(
                fake.server().core.read("control/shutdown").as_deref(),
                Some("")
            );
            assert_eq!(pc.pending(), None);
        }
        // Still works afterwards.
        request(&fake, "reboot");
        assert_eq!(
            pc.wait(&mut xs, Duration::from_secs(1)).unwrap(),
            PowerEvent::Reboot
        );
    }

    #[test]
    fn row39_repeated_request_while_shutting_down_is_idempotent() {
        let (mut xs, fake, mut pc) = setup_power(ALL);
        request(&fake, "poweroff");
        assert_eq!(
            pc.wait(&mut xs, Duration::from_secs(1)).unwrap(),
            PowerEvent::Poweroff
        );
        for again in ["poweroff", "reboot", "garbage"] {
            request(&fake, again);
            assert_eq!(
                pc.wait(&mut xs, Duration::from_millis(100)),
                Err(Error::Timeout)
            );
            assert_eq!(
                fake.server().core.read("control/shutdown").as_deref(),
                Some("")
            );
            assert_eq!(pc.pending(), Some(PowerEvent::Poweroff));
        }
        // After a resumed suspend, requests count again.
        pc.resume();
        request(&fake, "suspend");
        assert_eq!(
            pc.wait(&mut xs, Duration::from_secs(1)).unwrap(),
            PowerEvent::Suspend
        );
    }

    #[test]
    fn missing_node_is_no_request_and_lost_events_trigger_a_check() {
        let (mut xs, fake, mut pc) = setup_power(ALL);
        assert_eq!(pc.check(&mut xs).unwrap(), None);
        fake.server().core.tree.insert(
            "/local/domain/1/control/shutdown".into(),
            crate::fake::Node {
                value: b"reboot".to_vec(),
                perms: vec![],
            },
        );
        // No watch fired (written behind xenstored's back) but events were lost.
        for i in 0..(WATCH_QUEUE_LEN + 1) {
            let p = format!("x{i}\0flood\0");
            fake.server()
                .inject(&msg_bytes(msg::WATCH_EVENT, 0, 0, p.as_bytes()));
        }
        xs.write("a", b"1").unwrap();
        assert_eq!(pc.poll(&mut xs).unwrap(), Some(PowerEvent::Reboot));
    }

    /// docs/hostile-input.md S4: the transaction that reads and clears `control/shutdown`
    /// always fails with `EAGAIN`: each check gives up after `MAX_TX_TRIES` commits
    /// with `TooManyRetries`, nothing is delivered and the request stays in the
    /// node; once commits succeed again it is delivered exactly once, and further
    /// events (the clear, repeats) deliver nothing more.
    #[test]
    fn s4_ack_transaction_always_eagain_is_bounded_and_acts_at_most_once() {
        let (mut xs, fake, mut pc) = setup_power(ALL);
        assert_eq!(pc.poll(&mut xs).unwrap(), None);
        let base = fake.server().core.commits;
        fake.server().core.eagain_commits = u32::MAX;
        request(&fake, "poweroff");
        // Three rounds of MAX_TX_TRIES failed commits; one under Miri (each
        // transaction costs it a copy of the fake's tree and three round trips).
        let rounds = if cfg!(miri) { 1 } else { 3 };
        for round in 1..=rounds {
            assert_eq!(
                pc.wait(&mut xs, Duration::from_secs(1)),
                Err(Error::TooManyRetries {
                    tries: MAX_TX_TRIES
                }),
                "round {round}"
            );
            assert_eq!(fake.server().core.commits, base + round * MAX_TX_TRIES);
            assert_eq!(pc.pending(), None, "acted on an unacknowledged request");
            assert_eq!(
                fake.server().core.read("control/shutdown").as_deref(),
                Some("poweroff"),
                "the request stays until it is acknowledged"
            );
            // The watch fires again (as a toolstack would re-request).
            request(&fake, "poweroff");
        }
        // A few more EAGAINs, fewer than the bound: retried, then delivered once.
        fake.server().core.eagain_commits = MAX_TX_TRIES - 1;
        assert_eq!(
            pc.wait(&mut xs, Duration::from_secs(1)).unwrap(),
            PowerEvent::Poweroff
        );
        assert_eq!(pc.pending(), Some(PowerEvent::Poweroff));
        assert_eq!(
            fake.server().core.read("control/shutdown").as_deref(),
            Some("")
        );
        request(&fake, "poweroff");
        assert_eq!(
            pc.wait(&mut xs, Duration::from_millis(50)),
            Err(Error::Timeout),
            "delivered twice"
        );
        assert!(fake.shutdowns().is_empty());
    }

    #[test]
    fn crash_reason_and_stop() {
        let (mut xs, fake, pc) = setup_power(ALL);
        issue_shutdown(xs.platform(), ShutdownReason::Crash).unwrap();
        assert_eq!(fake.shutdowns(), [3]);
        pc.stop(&mut xs).unwrap();
        assert!(fake.server().core.watches.is_empty());
    }
}

#[test]
fn a_borrowed_platform_works() {
    let fake = FakePlatform::new();
    let mut xs: Xenstore<&FakePlatform> = Xenstore::from_hvm_params(&fake).unwrap();
    xs.write("a", b"borrowed").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(xs.read_str("a", &mut buf).unwrap(), "borrowed");
}

// ---- read audit (docs/hostile-input.md row 3, docs/hostile-input.md R4, R5) and padding (R7) -----------

mod read_audit {
    use super::*;
    use hypercall::abi::xs_wire::RING_SIZE;
    use hypercall::audit::{self, check_byte_ring, Access};
    use hypercall::SharedMem;

    /// The client's side of the store page in a log: every response byte is read
    /// once, in order, after `rsp_prod` showed it (`check_byte_ring`); request bytes
    /// are never read back, our own indices never loaded. Returns bytes consumed.
    fn check_client(log: &[Access], mem: &SharedMem, rsp_cons: u32) -> u32 {
        let n = check_byte_ring(
            log,
            mem,
            iface::RSP,
            RING_SIZE,
            iface::RSP_PROD,
            iface::RSP_CONS,
            rsp_cons,
        )
        .unwrap_or_else(|v| panic!("response ring: {v}"));
        for a in log {
            let Some(off) = a.offset_in(mem) else {
                continue;
            };
            let own = off == iface::REQ_PROD || off == iface::RSP_CONS;
            let req_bytes = (iface::REQ..iface::REQ + RING_SIZE).contains(&off);
            assert!(
                !(a.reads() && (own || req_bytes)),
                "read back: {a:?} at {off}"
            );
        }
        n
    }

    /// A session with every kind of traffic (small and ring-sized messages both
    /// ways, directory, transaction, watch events), indices wrapping past 2^32.
    #[test]
    fn row3_each_response_byte_read_once() {
        let start = u32::MAX - 100;
        let fake = FakePlatform::with_indices(start);
        let mut xs = fake.client();
        let mem = fake.mem();
        audit::start();
        let big: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
        // Sizes 1..=1901 bytes in steps of 100; under Miri in steps of 300 (each byte
        // costs it a logged access): still every size class and more than ten turns
        // of each ring in all (`n` below).
        for i in (0..20).step_by(if cfg!(miri) { 3 } else { 1 }) {
            xs.write("w", &big[..100 * i + 1]).unwrap();
            assert_eq!(read_string(&mut xs, "w").unwrap().len(), 100 * i + 1);
        }
        xs.write("big", &big).unwrap();
        assert_eq!(read_string(&mut xs, "big").unwrap().as_bytes(), &big[..]);
        let mut dir = [0u8; 256];
        assert!(xs
            .directory(&crate::fake::home(), &mut dir)
            .unwrap()
            .any(|n| n == "big"));
        xs.transaction(|t| {
            t.write("t/a", b"1")?;
            read_string_tx(t, "t/a")
        })
        .unwrap();
        xs.watch("w", "tok").unwrap();
        xs.write("w", b"again").unwrap();
        while xs.poll_watch_event().unwrap().is_some() {}
        // Dribbled out 5 bytes per server step (37 under Miri: 82 steps instead of
        // 600, still pieces that split the header and the payload at odd offsets).
        fake.server().max_chunk = if cfg!(miri) { 37 } else { 5 };
        assert_eq!(read_string(&mut xs, "big").unwrap().len(), 3000);
        let log = audit::take();
        let n = check_client(&log, &mem, start);
        let prod = audit::paused(|| mem.load_u32(iface::RSP_PROD));
        assert_eq!(
            n,
            prod.wrapping_sub(start),
            "every byte produced was consumed"
        );
        assert!(n > 10_000, "{n}");
    }

    /// Row 3 / R4 with a flipper thread: while the client waits for a reply,
    /// another thread keeps rewriting the reply's bytes in the ring between the
    /// server's answer A (READ, "value!!") and B (ERROR, "EACCES"), same length and
    /// request id. Each byte is read once (audit); what the client reports comes
    /// from those copies: a 7-byte value each byte of which is A's or B's, or a
    /// typed error (the errno, an unknown error name, a bad reply). The connection
    /// stays in step: the next request works.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn row3_flipper_rewriting_a_reply() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let (mut values, mut errors) = (0, 0);
        // At least 100 rounds, and on until both outcomes were seen (which one a
        // round gets depends on thread timing: on a loaded machine one of them can
        // take many rounds to show up).
        for round in 0..5000u32 {
            if round >= 100 && values > 0 && errors > 0 {
                break;
            }
            let fake = FakePlatform::with_indices(round.wrapping_mul(7919));
            let mut xs = fake.client();
            let mem = fake.mem();
            xs.write("k", b"value!!").unwrap();
            let cons = mem.load_u32(iface::RSP_PROD);
            let req_id = fake.server().core.requests.last().unwrap().req_id + 1;
            let a = msg_bytes(msg::READ, req_id, 0, b"value!!");
            let b = msg_bytes(msg::ERROR, req_id, 0, b"EACCES\0");
            let at = cons as usize % RING_SIZE;
            let put = |bytes: &[u8]| {
                let first = bytes.len().min(RING_SIZE - at);
                mem.write(iface::RSP + at, &bytes[..first]);
                mem.write(iface::RSP, &bytes[first..]);
            };
            let stop = AtomicBool::new(false);
            let flips = AtomicU64::new(0);
            let mut buf = [0u8; 64];
            let (res, log) = std::thread::scope(|sc| {
                sc.spawn(|| {
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        put(if k.is_multiple_of(2) { &b } else { &a });
                        k += 1;
                        flips.store(k, Ordering::Relaxed);
                    }
                });
                while flips.load(Ordering::Relaxed) < 2 {
                    std::hint::spin_loop();
                }
                audit::start();
                let res = xs.read("k", &mut buf);
                let log = audit::take();
                stop.store(true, Ordering::Relaxed);
                (res, log)
            });
            assert_eq!(fake.server().core.requests.last().unwrap().req_id, req_id);
            let n = check_client(&log, &mem, cons);
            assert_eq!(n as usize, a.len(), "round {round}: the reply, once");
            match res {
                Ok(len) => {
                    values += 1;
                    assert_eq!(len, 7);
                    for i in 0..7 {
                        assert!(buf[i] == a[16 + i] || buf[i] == b[16 + i], "round {round}");
                    }
                }
                Err(
                    Error::Xenstore(ErrnoName::Eacces)
                    | Error::UnknownXenstoreError(_)
                    | Error::BadReply { .. },
                ) => errors += 1,
                Err(e) => panic!("round {round}: {e:?}"),
            }
            // In step: the next request gets its own reply.
            xs.write("k2", b"next").unwrap();
            assert_eq!(read_string(&mut xs, "k2").unwrap(), "next");
        }
        assert!(values > 0 && errors > 0, "values {values}, errors {errors}");
    }

    /// R7: the fake xenstored audits every request header (known request type,
    /// length within the payload maximum) and the reserved part of the store page
    /// (zero) on every step; a session of every request kind passes, and a dirty
    /// page is caught.
    #[test]
    fn r7_request_headers_and_reserved_bytes() {
        let (mut xs, fake) = setup();
        xs.write("a/b", b"1").unwrap();
        read_string(&mut xs, "a/b").unwrap();
        xs.mkdir("a/c").unwrap();
        let mut dir = [0u8; 64];
        xs.directory("a", &mut dir).unwrap().count();
        xs.watch("a", "t").unwrap();
        xs.unwatch("a", "t").unwrap();
        xs.transaction(|t| t.write("a/d", b"2")).unwrap();
        xs.rm("a/c").unwrap();
        let mut path = [0u8; 64];
        xs.get_domain_path(DomId(1), &mut path).unwrap();
        let n = fake.server().core.requests.len() as u64;
        assert!(n >= 9);
        assert_eq!(fake.server().headers_audited, n);
        // The audit can fail.
        fake.mem().store_u8(crate::fake::RESERVED + 100, 1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fake.server().step()));
        assert!(r.is_err(), "a dirty reserved byte was not caught");
    }
}

/// `write_keys`/`read_keys` send their requests back to back and take the
/// replies in order (one round trip); a batch larger than the request ring is cut
/// into several; bad keys are refused before anything is sent.
#[test]
fn pipelined_reads_and_writes() {
    let (mut xs, fake) = setup();
    // The fake server runs when the client waits: one wait is one round trip.
    let t0 = fake.now();
    xs.write_keys("data/p", &[("a", b"1"), ("b", b"two"), ("c", b"")])
        .unwrap();
    assert_eq!(fake.now() - t0, WAIT_NS, "one round trip for the batch");
    let rt = xs.round_trips();
    xs.write_u32_keys("data/n", &[("x", 7), ("y", u32::MAX)])
        .unwrap();
    assert_eq!(xs.round_trips() - rt, 1);
    assert_eq!(
        fake.server().core.read("data/n/y").as_deref(),
        Some("4294967295")
    );
    assert_eq!(fake.server().core.read("data/n/x").as_deref(), Some("7"));
    assert_eq!(fake.server().core.read("data/p/b").as_deref(), Some("two"));
    let mut got: Vec<(usize, core::result::Result<String, Error>)> = Vec::new();
    xs.read_keys("data/p", &["a", "missing", "b", "c"], &mut |i, r| {
        got.push((i, r.map(|v| String::from_utf8_lossy(v).into_owned())));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        got,
        vec![
            (0, Ok(String::from("1"))),
            (1, Err(Error::Xenstore(ErrnoName::Enoent))),
            (2, Ok(String::from("two"))),
            (3, Ok(String::new())),
        ]
    );
    // An error from the callback comes back after the batch; the client stays usable.
    let r = xs.read_keys("data/p", &["a", "b"], &mut |i, _| {
        if i == 0 {
            Err(Error::Timeout)
        } else {
            Ok(())
        }
    });
    assert_eq!(r, Err(Error::Timeout));
    assert_eq!(read_string(&mut xs, "data/p/b").unwrap(), "two");
    // Bad keys: refused, nothing sent.
    let t0 = fake.now();
    assert!(matches!(
        xs.write_keys("data/p", &[("ok", b"1"), ("/abs", b"1")]),
        Err(Error::InvalidPath(_))
    ));
    assert!(xs
        .read_keys("data/p", &["a\0b"], &mut |_, _| Ok(()))
        .is_err());
    assert_eq!(fake.now(), t0);
    assert_eq!(fake.server().core.read("data/p/ok"), None);
    // More than a ring's worth (1024 bytes): several batches, every reply in order.
    let long: Vec<String> = (0..30)
        .map(|i| format!("{i:02}{}", "x".repeat(60)))
        .collect();
    let nodes: Vec<(&str, &[u8])> = long.iter().map(|p| (p.as_str(), &b"v"[..])).collect();
    let t0 = fake.now();
    xs.write_keys("data/q", &nodes).unwrap();
    let trips = (fake.now() - t0) / WAIT_NS;
    assert!((2..=4).contains(&trips), "cut into a few batches: {trips}");
    let keys: Vec<&str> = long.iter().map(|p| p.as_str()).collect();
    let mut n = 0;
    xs.read_keys("data/q", &keys, &mut |i, r| {
        assert_eq!(i, n);
        assert_eq!(r.unwrap(), b"v");
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 30);
}
