//! End to end: an in-process guest runs the kit's xenstore client (`xenbus::Xenstore`,
//! found through the HVM params) against shim-hv's real xenstored over its store ring
//! and event channel; dom0 drives watches and the power-off request.

mod model_util;

use std::sync::mpsc;
use std::time::Duration;

use hypercall::Platform;
use model_util::{domain, hv};
use xen_model::{DomainState, ShutdownReason};
use xenbus::power::{issue_shutdown, PowerControl, PowerEvent, PowerFeatures};
use xenbus::{ErrnoName, Error, Store, Xenstore};
use xenstored::TxId;

const T: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq)]
enum Step {
    Watching,
    PowerReady,
}

#[test]
fn guest_xenstore_watch_transaction_and_poweroff() {
    let hv = hv();
    let dom = domain(&hv, "e2e");
    let id = dom.id().0;
    let (tx, rx) = mpsc::channel::<Step>();
    let handle = hv
        .spawn_guest(dom.clone(), move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).expect("xenstore from HVM params");
            xs.set_timeout(T);
            let mut buf = [0u8; 64];
            assert_eq!(xs.read_str("name", &mut buf).unwrap(), "e2e");
            assert_eq!(xs.read_u32("domid").unwrap(), u32::from(id));
            let mut p = [0u8; 32];
            let home = xs.get_domain_path(hypercall::DomId(id), &mut p).unwrap();
            assert_eq!(home, format!("/local/domain/{id}"));

            // Plain writes/reads/directory in the guest's own data/ directory.
            xs.write_str("data/hello", "world").unwrap();
            assert_eq!(xs.read_str("data/hello", &mut buf).unwrap(), "world");
            xs.mkdir("data/dir").unwrap();
            let mut dbuf = [0u8; 128];
            let mut names: Vec<String> = xs
                .directory("data", &mut dbuf)
                .unwrap()
                .map(|s| s.to_string())
                .collect();
            names.sort();
            assert_eq!(names, ["dir", "hello"]);
            // Permissions are enforced by the real daemon.
            assert!(matches!(
                xs.write_str("name", "evil"),
                Err(Error::Xenstore(ErrnoName::Eacces))
            ));
            assert!(matches!(
                xs.read("data/missing", &mut buf),
                Err(Error::Xenstore(ErrnoName::Enoent))
            ));

            // A transaction writing two keys atomically.
            xs.transaction(|t| {
                t.write_str("data/a", "1")?;
                t.write_str("data/b", "2")
            })
            .unwrap();
            assert_eq!(xs.read_u32("data/b").unwrap(), 2);

            // A watch fires on registration and on dom0's write.
            xs.watch("data/w", "tok").unwrap();
            let ev = xs.wait_watch_event_for("tok", T).unwrap();
            assert_eq!(ev.path(), "data/w");
            tx.send(Step::Watching).unwrap();
            let ev = xs.wait_watch_event_for("tok", T).unwrap();
            assert_eq!(ev.path(), "data/w");
            assert_eq!(xs.read_str("data/w", &mut buf).unwrap(), "from dom0");

            // Power: advertise, wait for the toolstack's request, act on it.
            let features = PowerFeatures::POWEROFF | PowerFeatures::REBOOT;
            let mut power = PowerControl::new(&mut xs, features).unwrap();
            tx.send(Step::PowerReady).unwrap();
            let ev = power.wait(&mut xs, T).unwrap();
            assert_eq!(ev, PowerEvent::Poweroff);
            issue_shutdown(xs.platform(), ev.shutdown_reason()).unwrap();
            unreachable!("a shut-down guest does not run on");
        })
        .unwrap();

    let dom0 = hv.xenstored().client(0);
    let dp = format!("/local/domain/{id}");
    assert_eq!(rx.recv().unwrap(), Step::Watching);
    dom0.write(TxId::NONE, &format!("{dp}/data/w"), b"from dom0")
        .unwrap();
    assert_eq!(rx.recv().unwrap(), Step::PowerReady);
    let feat = dom0
        .read(TxId::NONE, &format!("{dp}/control/feature-poweroff"))
        .unwrap();
    assert_eq!(feat, b"1");
    assert_eq!(
        dom0.read(TxId::NONE, &format!("{dp}/data/a")).unwrap(),
        b"1"
    );
    // xl shutdown: write the request; the guest clears it and powers off.
    dom0.write(TxId::NONE, &format!("{dp}/control/shutdown"), b"poweroff")
        .unwrap();
    assert_eq!(
        dom.wait_state(T, |s| s.is_finished()),
        Some(DomainState::Shutdown(ShutdownReason::Poweroff))
    );
    assert_eq!(
        handle.join(),
        DomainState::Shutdown(ShutdownReason::Poweroff)
    );
    assert_eq!(
        dom0.read(TxId::NONE, &format!("{dp}/control/shutdown"))
            .unwrap(),
        b"",
        "the guest acknowledged by clearing the node"
    );
    hv.destroy_domain(dom.id()).unwrap();
}

#[test]
fn two_guests_use_their_own_stores() {
    let hv = hv();
    let mut handles = Vec::new();
    for name in ["one", "two"] {
        let dom = domain(&hv, name);
        let name = name.to_string();
        handles.push(
            hv.spawn_guest(dom, move |g| {
                let mut xs = Xenstore::from_hvm_params(&*g).unwrap();
                xs.set_timeout(T);
                let mut buf = [0u8; 16];
                assert_eq!(xs.read_str("name", &mut buf).unwrap(), name);
                for i in 0..50u32 {
                    xs.write_u32("data/counter", i).unwrap();
                    assert_eq!(xs.read_u32("data/counter").unwrap(), i);
                }
                // Another domain's home is not ours to write.
                assert!(xs.write_str("/local/domain/0/x", "y").is_err());
                let _ = g.now_ns();
            })
            .unwrap(),
        );
    }
    for h in handles {
        assert_eq!(h.join(), DomainState::Shutdown(ShutdownReason::Poweroff));
    }
}
