//! Every xenstore operation end to end: the kit's client (`xenbus::Xenstore`) in
//! in-process guests, shim-hv's xenstored on the other side of the store ring.
//! Complements `model_e2e.rs` (reads, writes, a watch, power-off) with rm, perms
//! across guests, unwatch, transaction conflicts, quotas hit by a guest, large
//! messages, and a hostile guest ring that must not disturb other domains.

mod model_util;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use hypercall::abi::hvm;
use hypercall::abi::xs_wire::{iface, MsgHeader};
use hypercall::xen::Xen;
use hypercall::{Gfn, Port, SharedMem};
use model_util::domain;
use xen_model::{DomainState, Hypervisor, HypervisorConfig};
use xenbus::{Access, ErrnoName, Error, Perm, Store, TxEnd, Xenstore};
use xenstored::{Quotas, TxId};

const T: Duration = Duration::from_secs(60);

fn hv_with(quotas: Quotas) -> Arc<Hypervisor> {
    Hypervisor::new(HypervisorConfig {
        quotas,
        ..HypervisorConfig::default()
    })
}

fn errno<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrnoName {
    match r {
        Err(Error::Xenstore(e)) => e,
        other => panic!("expected a xenstore error, got {other:?}"),
    }
}

fn finished(state: DomainState) {
    assert!(
        matches!(state, DomainState::Shutdown(_)),
        "guest ended in {state:?}"
    );
}

#[test]
fn rm_directory_and_large_values() {
    let hv = hv_with(Quotas::default());
    let dom = domain(&hv, "ops");
    let h = hv
        .spawn_guest(dom, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
            xs.set_timeout(T);
            let mut buf = vec![0u8; 4096];
            // Implicit parents, then removal of a whole subtree.
            xs.write_str("data/a/b/c", "deep").unwrap();
            xs.mkdir("data/a/empty").unwrap();
            let mut names: Vec<String> = xs
                .directory("data/a", &mut buf)
                .unwrap()
                .map(str::to_string)
                .collect();
            names.sort();
            assert_eq!(names, ["b", "empty"]);
            xs.rm("data/a").unwrap();
            assert_eq!(errno(xs.read("data/a/b/c", &mut buf)), ErrnoName::Enoent);
            // As C xenstored: removing a missing node is fine while its parent
            // exists, ENOENT when the parent is missing too.
            xs.rm("data/a").unwrap();
            assert_eq!(errno(xs.rm("data/a/b")), ErrnoName::Enoent);
            // A value crossing the 1024-byte ring several times.
            let big: String = (0..1900).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            xs.write_str("data/big", &big).unwrap();
            assert_eq!(xs.read_str("data/big", &mut buf).unwrap(), big);
            // Over the per-node size quota: refused, the old value stays.
            let huge = "x".repeat(4000);
            assert_eq!(errno(xs.write_str("data/big", &huge)), ErrnoName::Enospc);
            assert_eq!(xs.read_str("data/big", &mut buf).unwrap(), big);
            // Absolute paths work as well as relative ones; other domains' are guarded.
            let mut p = [0u8; 64];
            let home = xs
                .get_domain_path(g.domain().id(), &mut p)
                .unwrap()
                .to_string();
            assert_eq!(
                xs.read_str(&format!("{home}/data/big"), &mut buf).unwrap(),
                big
            );
            assert_eq!(
                errno(xs.read("/local/domain/0/name", &mut buf)),
                ErrnoName::Eacces
            );
            // Path tricks are refused by the client before sending (docs/hostile-input.md
            // X10), and by the daemon when sent raw anyway (docs/hostile-input.md row 32).
            assert!(matches!(
                xs.write_str("data/../../0/x", "y"),
                Err(Error::InvalidPath(_))
            ));
            assert_eq!(
                errno(xs.request(
                    xenbus::TxId::NONE,
                    hypercall::abi::xs_wire::msg::WRITE,
                    &[b"data/../../0/x\0", b"y"],
                    &mut buf
                )),
                ErrnoName::Einval
            );
            hypercall_shutdown(&g);
        })
        .unwrap();
    finished(h.join());
}

fn hypercall_shutdown(g: &xen_model::inproc::InProcGuest) {
    let _ = Xen(g).sched_shutdown(hypercall::xen::ShutdownReason::Poweroff);
}

#[test]
fn permissions_between_two_guests() {
    let hv = hv_with(Quotas::default());
    let a = domain(&hv, "owner");
    let b = domain(&hv, "reader");
    let (a_id, b_id) = (a.id(), b.id());
    let shared = format!("/local/domain/{}/data/shared", a_id.0);

    // B cannot see A's node before A grants access.
    let (to_b, b_rx) = mpsc::channel::<()>();
    let (to_test, test_rx) = mpsc::channel::<&'static str>();
    let path = shared.clone();
    let hb = hv
        .spawn_guest(b, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
            xs.set_timeout(T);
            let mut buf = [0u8; 64];
            b_rx.recv().unwrap();
            assert_eq!(errno(xs.read(&path, &mut buf)), ErrnoName::Eacces);
            to_test.send("b-refused").unwrap();
            b_rx.recv().unwrap();
            assert_eq!(xs.read_str(&path, &mut buf).unwrap(), "for b");
            // Read access is not write access.
            assert_eq!(errno(xs.write_str(&path, "no")), ErrnoName::Eacces);
            to_test.send("b-read").unwrap();
            hypercall_shutdown(&g);
        })
        .unwrap();

    let (to_a, a_rx) = mpsc::channel::<()>();
    let to_test_a = {
        let (tx, rx) = mpsc::channel::<&'static str>();
        (tx, rx)
    };
    let a_done = to_test_a.0.clone();
    let ha = hv
        .spawn_guest(a, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
            xs.set_timeout(T);
            xs.write_str("data/shared", "for b").unwrap();
            a_done.send("a-wrote").unwrap();
            a_rx.recv().unwrap();
            xs.set_perms(
                "data/shared",
                &[
                    Perm {
                        domid: a_id,
                        access: Access::None,
                    },
                    Perm {
                        domid: b_id,
                        access: Access::Read,
                    },
                ],
            )
            .unwrap();
            let mut pbuf = [0u8; 64];
            let perms = xs.get_perms("data/shared", &mut pbuf).unwrap();
            assert_eq!(perms.owner().domid, a_id);
            let list: Vec<Perm> = perms.iter().collect();
            assert_eq!(list.len(), 2);
            assert_eq!(list[1].domid, b_id);
            assert_eq!(list[1].access, Access::Read);
            a_done.send("a-granted").unwrap();
            a_rx.recv().unwrap();
            hypercall_shutdown(&g);
        })
        .unwrap();

    assert_eq!(to_test_a.1.recv().unwrap(), "a-wrote");
    to_b.send(()).unwrap();
    assert_eq!(test_rx.recv().unwrap(), "b-refused");
    to_a.send(()).unwrap();
    assert_eq!(to_test_a.1.recv().unwrap(), "a-granted");
    to_b.send(()).unwrap();
    assert_eq!(test_rx.recv().unwrap(), "b-read");
    to_a.send(()).unwrap();
    finished(ha.join());
    finished(hb.join());
}

#[test]
fn unwatch_and_transaction_conflict() {
    let hv = hv_with(Quotas::default());
    let dom = domain(&hv, "tx");
    let id = dom.id().0;
    let (to_test, test_rx) = mpsc::channel::<&'static str>();
    let (to_guest, guest_rx) = mpsc::channel::<()>();
    let h = hv
        .spawn_guest(dom, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
            xs.set_timeout(T);
            let mut buf = [0u8; 64];

            // Watch, see the initial event, unwatch: dom0's later write is not reported.
            xs.watch("data/w", "t1").unwrap();
            assert_eq!(xs.wait_watch_event_for("t1", T).unwrap().path(), "data/w");
            xs.unwatch("data/w", "t1").unwrap();
            to_test.send("unwatched").unwrap();
            guest_rx.recv().unwrap();
            // A round trip makes sure anything dom0's write caused has arrived.
            xs.read_str("name", &mut buf).unwrap();
            assert!(xs.poll_watch_event_for("t1").unwrap().is_none());

            // Transaction conflict: dom0 changes the node we read inside our
            // transaction; our commit loses with EAGAIN and its write is not applied.
            xs.write_str("data/x", "0").unwrap();
            let tx = xs.transaction_start().unwrap();
            {
                let mut t = xs.in_transaction(tx);
                assert_eq!(t.read_str("data/x", &mut buf).unwrap(), "0");
                t.write_str("data/x", "guest").unwrap();
            }
            to_test.send("in-transaction").unwrap();
            guest_rx.recv().unwrap();
            assert_eq!(
                errno(xs.transaction_end(tx, TxEnd::Commit)),
                ErrnoName::Eagain
            );
            assert_eq!(xs.read_str("data/x", &mut buf).unwrap(), "dom0");
            // The retrying helper gets through once nobody interferes.
            xs.transaction(|t| {
                let mut b = [0u8; 16];
                let v = t.read_str("data/x", &mut b)?.to_string();
                t.write_str("data/x", &format!("{v}+guest"))
            })
            .unwrap();
            assert_eq!(xs.read_str("data/x", &mut buf).unwrap(), "dom0+guest");
            // An aborted transaction leaves no trace.
            let tx = xs.transaction_start().unwrap();
            xs.in_transaction(tx).write_str("data/y", "never").unwrap();
            xs.transaction_end(tx, TxEnd::Abort).unwrap();
            assert_eq!(errno(xs.read("data/y", &mut buf)), ErrnoName::Enoent);
            hypercall_shutdown(&g);
        })
        .unwrap();
    let dom0 = hv.xenstored().client(0);
    let dp = format!("/local/domain/{id}");
    assert_eq!(test_rx.recv().unwrap(), "unwatched");
    dom0.write(TxId::NONE, &format!("{dp}/data/w"), b"ignored")
        .unwrap();
    to_guest.send(()).unwrap();
    assert_eq!(test_rx.recv().unwrap(), "in-transaction");
    dom0.write(TxId::NONE, &format!("{dp}/data/x"), b"dom0")
        .unwrap();
    to_guest.send(()).unwrap();
    finished(h.join());
}

#[test]
fn guest_quotas_are_enforced_and_dom0_is_exempt() {
    let hv = hv_with(Quotas {
        nodes: 40,
        watches: 3,
        transactions: 2,
        ..Quotas::default()
    });
    let dom = domain(&hv, "quota");
    let id = dom.id().0;
    let h = hv
        .spawn_guest(dom, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
            xs.set_timeout(T);
            // Nodes: the guest runs out (ENOSPC) well before 100.
            let mut refused = None;
            for i in 0..100 {
                if let Err(e) = xs.write_str(&format!("data/n{i}"), "v") {
                    refused = Some((i, e));
                    break;
                }
            }
            let (i, e) = refused.expect("node quota never hit");
            assert!(i < 40, "quota of 40 nodes allowed {i}");
            assert!(matches!(e, Error::Xenstore(ErrnoName::Enospc)), "{e:?}");
            // Watches: three allowed, the fourth refused with E2BIG.
            for i in 0..3 {
                xs.watch(&format!("data/n{i}"), "w").unwrap();
            }
            assert_eq!(errno(xs.watch("data/n0", "w4")), ErrnoName::E2big);
            // Transactions: two open at once, the third refused.
            let t1 = xs.transaction_start().unwrap();
            let t2 = xs.transaction_start().unwrap();
            assert_eq!(errno(xs.transaction_start()), ErrnoName::Enospc);
            xs.transaction_end(t1, TxEnd::Abort).unwrap();
            xs.transaction_end(t2, TxEnd::Abort).unwrap();
            xs.transaction_start().unwrap();
            hypercall_shutdown(&g);
        })
        .unwrap();
    finished(h.join());
    // dom0 is exempt: it can create many nodes under the guest's home.
    let dom0 = hv.xenstored().client(0);
    for i in 0..200 {
        dom0.write(TxId::NONE, &format!("/local/domain/{id}/dom0/{i}"), b"v")
            .unwrap();
    }
}

#[test]
fn hostile_guest_ring_does_not_disturb_other_domains() {
    let hv = hv_with(Quotas::default());
    let evil = domain(&hv, "evil");
    let good = domain(&hv, "good");
    let evil_id = evil.id().0;
    let good_id = good.id().0;
    let he = hv
        .spawn_guest(evil, move |g| {
            let xen = Xen(&*g);
            let gfn = Gfn(xen.hvm_get_param(hvm::PARAM_STORE_PFN).unwrap());
            let port = Port(xen.hvm_get_param(hvm::PARAM_STORE_EVTCHN).unwrap() as u32);
            let page = SharedMem::map_gfn(&*g, gfn).unwrap();
            // A header claiming a 4 GiB payload (docs/hostile-input.md row 27 from the guest side),
            // then indices that claim more than a ring's worth (row 29).
            let hdr = MsgHeader {
                ty: 2,
                req_id: 1,
                tx_id: 0,
                len: 0xffff_ffff,
            };
            let prod = page.load_u32(iface::REQ_PROD);
            let off = (prod as usize) % 1024;
            if off + 16 <= 1024 {
                page.write_obj(iface::REQ + off, &hdr);
            }
            page.store_u32(iface::REQ_PROD, prod.wrapping_add(16));
            xen.evtchn_send(port).unwrap();
            for _ in 0..1000 {
                page.store_u32(iface::REQ_PROD, prod.wrapping_add(50_000));
                xen.evtchn_send(port).unwrap();
            }
            hypercall_shutdown(&g);
        })
        .unwrap();
    let hg = hv
        .spawn_guest(good, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
            xs.set_timeout(T);
            for i in 0..200u32 {
                xs.write_u32("data/i", i).unwrap();
                assert_eq!(xs.read_u32("data/i").unwrap(), i);
            }
            hypercall_shutdown(&g);
        })
        .unwrap();
    finished(he.join());
    finished(hg.join());
    // The daemon still answers dom0, and knows the hostile domain's ring failed.
    let dom0 = hv.xenstored().client(0);
    assert_eq!(
        dom0.read(TxId::NONE, &format!("/local/domain/{evil_id}/name"))
            .unwrap(),
        b"evil"
    );
    // The worker fails the hostile ring asynchronously: wait (bounded) for it.
    let deadline = std::time::Instant::now() + T;
    let failed = loop {
        let stats = hv
            .xenstored()
            .ring_stats(evil_id)
            .expect("evil still introduced");
        if let Some(code) = stats.ring_error {
            break code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hostile ring never failed"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        failed == xenstored::ERROR_PROTO || failed == xenstored::ERROR_RINGIDX,
        "ring failed with {failed}"
    );
    assert!(hv
        .xenstored()
        .ring_stats(good_id)
        .unwrap()
        .ring_error
        .is_none());
}

/// docs/hostile-input.md X14 end to end: a guest whose store ring xenstored failed
/// (a request header over the size limit) asks for a ring reconnect with xenbus's
/// `Xenstore::reconnect`; shim-hv's xenstored resets the ring, drops the
/// connection's watches, and the guest's nodes and requests work again.
#[test]
fn a_failed_store_ring_reconnects() {
    let hv = hv_with(Quotas::default());
    let dom = domain(&hv, "again");
    let h = hv
        .spawn_guest(dom, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
            xs.set_timeout(T);
            xs.write_str("data/kept", "yes").unwrap();
            xs.watch("data/kept", "tok").unwrap();
            // Behind the client's back: a header claiming 4 GiB of payload.
            let xen = Xen(&*g);
            let gfn = Gfn(xen.hvm_get_param(hvm::PARAM_STORE_PFN).unwrap());
            let page = SharedMem::map_gfn(&*g, gfn).unwrap();
            let hdr = MsgHeader {
                ty: 2,
                req_id: 9,
                tx_id: 0,
                len: 0xffff_ffff,
            };
            let prod = page.load_u32(iface::REQ_PROD);
            let mut raw = [0u8; 16];
            raw.copy_from_slice(zerocopy::IntoBytes::as_bytes(&hdr));
            for (i, b) in raw.iter().enumerate() {
                let at = prod.wrapping_add(i as u32) as usize % 1024;
                page.write(iface::REQ + at, core::slice::from_ref(b));
            }
            page.store_u32(iface::REQ_PROD, prod.wrapping_add(16));
            xen.evtchn_send(xs.port()).unwrap();
            // xenstored fails the ring (asynchronously: wait, bounded); the client
            // sees it through the page's `error` field.
            let deadline = std::time::Instant::now() + T;
            while page.load_u32(iface::ERROR) == 0 {
                assert!(std::time::Instant::now() < deadline, "ring never failed");
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut buf = vec![0u8; 64];
            let r = xs.read_str("data/kept", &mut buf).map(str::to_string);
            assert!(
                matches!(
                    r,
                    Err(Error::Broken(xenbus::ProtocolError::ServerError { .. }))
                ),
                "{r:?}"
            );
            xs.reconnect().unwrap();
            assert_eq!(page.load_u32(iface::CONNECTION), 0);
            assert_eq!(xs.read_str("data/kept", &mut buf).unwrap(), "yes");
            // The watch went with the old connection: a change fires nothing new.
            while xs.poll_watch_event().unwrap().is_some() {}
            xs.write_str("data/kept", "changed").unwrap();
            assert!(xs
                .wait_watch_event(Duration::from_millis(100))
                .is_err_and(|e| e == Error::Timeout));
            xs.watch("data/kept", "tok").unwrap();
            let ev = xs.wait_watch_event(T).unwrap();
            assert_eq!(ev.token(), "tok");
            hypercall_shutdown(&g);
        })
        .unwrap();
    finished(h.join());
}
