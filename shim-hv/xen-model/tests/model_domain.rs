//! Domain lifecycle: creation (ids, memory layout, special pages, HVM params, event
//! channels, xenstore nodes), state changes the toolstack observes, destruction.

mod model_util;

use std::sync::Arc;
use std::time::Duration;

use hypercall::abi::hvm;
use hypercall::{DomId, Gfn, Port};
use model_util::{domain, hv};
use xen_model::{DomainEvent, DomainSpec, DomainState, Error, PortState, ShutdownReason};
use xenstored::{Access, Perm, TxId};

#[test]
fn domids_start_at_one_and_are_not_reused_at_once() {
    let hv = hv();
    let a = domain(&hv, "a");
    let b = domain(&hv, "b");
    assert_eq!((a.id(), b.id()), (DomId(1), DomId(2)));
    hv.destroy_domain(a.id()).unwrap();
    let c = domain(&hv, "a");
    assert_eq!(c.id(), DomId(3), "same name, new id");
    assert!(hv.domain(DomId(1)).is_none());
    assert_eq!(hv.domain_by_name("a").unwrap().id(), DomId(3));
    assert_eq!(hv.domains().len(), 2);
    assert!(matches!(
        hv.destroy_domain(DomId(1)),
        Err(Error::NoSuchDomain(_))
    ));
}

#[test]
fn bad_specs_are_refused() {
    let hv = hv();
    domain(&hv, "taken");
    for spec in [
        DomainSpec::new("", 4),
        DomainSpec::new("a/b", 4),
        DomainSpec::new("x", 0),
        DomainSpec::new("x", 1 << 20),
        DomainSpec {
            vcpus: 0,
            ..DomainSpec::new("x", 4)
        },
        DomainSpec {
            vcpus: 33,
            ..DomainSpec::new("x", 4)
        },
        DomainSpec {
            max_grant_frames: 0,
            ..DomainSpec::new("x", 4)
        },
    ] {
        assert!(matches!(hv.create_domain(spec), Err(Error::BadSpec(_))));
    }
    assert!(matches!(
        hv.create_domain(DomainSpec::new("taken", 4)),
        Err(Error::NameInUse(_))
    ));
    assert_eq!(hv.domains().len(), 1);
}

#[test]
fn layout_params_and_channels() {
    let hv = hv();
    let d = hv
        .create_domain(DomainSpec {
            vcpus: 2,
            ..DomainSpec::new("lay", 8)
        })
        .unwrap();
    let mem = d.memory();
    assert_eq!(mem.first_gfn(), Gfn(0x100));
    assert_eq!(mem.pages(), 2048);
    // Special pages at the top of RAM, outside what a guest allocator hands out.
    let (first, end) = d.allocatable();
    assert_eq!((first, end), (Gfn(0x100), Gfn(0x100 + 2048 - 8)));
    assert_eq!(d.store().gfn, Gfn(0x100 + 2048 - 8 + 4));
    assert_eq!(d.console().gfn, Gfn(0x100 + 2048 - 1));
    assert_eq!(d.hvm_param(hvm::PARAM_STORE_PFN), Some(d.store().gfn.0));
    assert_eq!(
        d.hvm_param(hvm::PARAM_STORE_EVTCHN),
        Some(d.store().port.0 as u64)
    );
    assert_eq!(d.hvm_param(hvm::PARAM_CONSOLE_PFN), Some(d.console().gfn.0));
    assert_eq!(
        d.hvm_param(hvm::PARAM_CONSOLE_EVTCHN),
        Some(d.console().port.0 as u64)
    );
    assert_eq!(d.hvm_param(1000), None);
    for sp in [d.store(), d.console()] {
        assert_eq!(
            hv.port_state(d.id(), sp.port).unwrap(),
            PortState::Interdomain {
                remote: DomId(0),
                remote_port: sp.dom0_port
            }
        );
        assert_eq!(
            hv.port_state(DomId(0), sp.dom0_port).unwrap(),
            PortState::Interdomain {
                remote: d.id(),
                remote_port: sp.port
            }
        );
    }
    assert_eq!(d.vcpus(), 2);
    // RAM may start elsewhere (a KVM runner booting PVH wants gfn 0).
    let z = hv
        .create_domain(DomainSpec {
            first_gfn: Gfn(0),
            ..DomainSpec::new("zero", 4)
        })
        .unwrap();
    assert_eq!(z.allocatable(), (Gfn(0), Gfn(1024 - 8)));
    assert_eq!(z.store().gfn, Gfn(1024 - 4));
    assert!(hv
        .create_domain(DomainSpec {
            first_gfn: Gfn(u64::MAX - 10),
            ..DomainSpec::new("bad", 4)
        })
        .is_err());
    assert_eq!(d.uuid().to_string().len(), 36);
}

#[test]
fn xenstore_nodes_like_libxl() {
    let hv = hv();
    let d = domain(&hv, "web");
    let c = hv.xenstored().client(0);
    let dp = format!("/local/domain/{}", d.id().0);
    let vm = format!("/vm/{}", d.uuid());
    let read = |p: &str| String::from_utf8(c.read(TxId::NONE, p).unwrap()).unwrap();
    assert_eq!(read(&format!("{dp}/name")), "web");
    assert_eq!(read(&format!("{dp}/domid")), d.id().0.to_string());
    assert_eq!(read(&format!("{dp}/vm")), vm);
    assert_eq!(read(&format!("{vm}/name")), "web");
    assert_eq!(read(&format!("{vm}/uuid")), d.uuid().to_string());
    assert_eq!(read(&format!("{dp}/memory/target")), "4096");
    assert_eq!(
        read(&format!("{dp}/store/port")),
        d.store().port.0.to_string()
    );
    assert_eq!(
        read(&format!("{dp}/store/ring-ref")),
        d.store().gfn.0.to_string()
    );
    assert_eq!(
        read(&format!("{dp}/console/port")),
        d.console().port.0.to_string()
    );
    assert_eq!(
        read(&format!("{dp}/control/platform-feature-xs_reset_watches")),
        "1"
    );
    assert_eq!(read(&format!("{dp}/control/shutdown")), "");
    let id = d.id().0;
    // dom0 owns the domain directory, the guest may read it.
    assert_eq!(
        c.get_perms(TxId::NONE, &dp).unwrap(),
        vec![Perm::new(0, Access::None), Perm::new(id, Access::Read)]
    );
    // The guest owns control/shutdown, data, device/suspend/event-channel...
    for sub in [
        "control/shutdown",
        "control/feature-poweroff",
        "data",
        "attr",
        "device/suspend/event-channel",
    ] {
        assert_eq!(
            c.get_perms(TxId::NONE, &format!("{dp}/{sub}")).unwrap(),
            vec![Perm::new(id, Access::None)],
            "{sub}"
        );
    }
    // ...and may write there, but not elsewhere in its directory.
    let guest = hv.xenstored().client(id);
    guest.write(TxId::NONE, "control/shutdown", b"").unwrap();
    guest.write(TxId::NONE, "data/x", b"1").unwrap();
    assert!(guest.write(TxId::NONE, "name", b"evil").is_err());
    assert!(guest.write(TxId::NONE, "/local/domain/0/x", b"1").is_err());
    let domid = guest.read(TxId::NONE, "domid").unwrap();
    assert_eq!(String::from_utf8(domid).unwrap(), id.to_string());
    assert!(hv.xenstored().is_introduced(id));
    hv.destroy_domain(d.id()).unwrap();
    assert!(!hv.xenstored().is_introduced(id));
    assert!(c.read(TxId::NONE, &dp).is_err());
    assert!(c.read(TxId::NONE, &vm).is_err());
}

#[test]
fn states_are_observable() {
    let hv = hv();
    let rx = hv.subscribe();
    let d = domain(&hv, "s");
    assert_eq!(rx.recv().unwrap(), DomainEvent::Created(d.id()));
    assert_eq!(d.state(), DomainState::Running);
    assert!(hv.pause_domain(&d));
    assert!(!hv.pause_domain(&d));
    assert!(hv.unpause_domain(&d));
    assert!(hv.shutdown_domain(&d, ShutdownReason::Poweroff));
    assert!(
        !hv.crash_domain(&d, "late"),
        "a finished domain stays finished"
    );
    assert_eq!(
        d.wait_state(Duration::from_secs(60), |s| s.is_finished()),
        Some(DomainState::Shutdown(ShutdownReason::Poweroff))
    );
    let id = d.id();
    hv.destroy_domain(id).unwrap();
    let evs: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        evs,
        vec![
            DomainEvent::StateChanged(id, DomainState::Paused),
            DomainEvent::StateChanged(id, DomainState::Running),
            DomainEvent::StateChanged(id, DomainState::Shutdown(ShutdownReason::Poweroff)),
            DomainEvent::StateChanged(id, DomainState::Dying),
            DomainEvent::Destroyed(id),
        ]
    );
    assert_eq!(d.state(), DomainState::Dying);
}

#[test]
fn destroy_unbinds_backend_ports_and_wakes_waiters() {
    let hv = hv();
    let d = domain(&hv, "x");
    let g = model_util::Phys::new(&hv, &d);
    let gp = g.alloc_unbound(0).unwrap();
    let dp = hv
        .dom0_bind_interdomain(d.id(), gp, Arc::new(|| {}))
        .unwrap();
    let store_dom0 = d.store().dom0_port;
    let e0 = d.signal().epoch();
    hv.destroy_domain(d.id()).unwrap();
    assert!(d.signal().epoch() > e0);
    // The backend's port stays (unbound) until the backend closes it.
    assert_eq!(
        hv.port_state(DomId(0), dp).unwrap(),
        PortState::Unbound { remote: d.id() }
    );
    hv.dom0_send(dp).unwrap();
    hv.dom0_close(dp).unwrap();
    // The store/console dom0 ports went with the domain.
    assert_eq!(
        hv.port_state(DomId(0), store_dom0).unwrap(),
        PortState::Closed
    );
    assert!(hv.dom0_send(Port(store_dom0.0)).is_err());
}

#[test]
fn console_handler_is_replaceable() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hv = hv();
    let d = domain(&hv, "c");
    let g = model_util::Phys::new(&hv, &d);
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    d.set_console_handler(Some(Arc::new(move || {
        n2.fetch_add(1, Ordering::SeqCst);
    })));
    assert_eq!(g.send(d.console().port.0), 0);
    assert_eq!(n.load(Ordering::SeqCst), 1);
    d.set_console_handler(None);
    assert_eq!(g.send(d.console().port.0), 0);
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(d.console_ring().len(), 4096);
    hv.ack_upcall(d.id());
    hv.dom0_send(d.console().dom0_port).unwrap();
    assert!(g.pending(d.console().port));
}

/// Review defects (issue 16, xenstored vs Xen 4.17): `@releaseDomain` fires when a
/// domain shuts down or crashes (once), not only when it is destroyed; dom0 has
/// `/local/domain/0/name` and `domid`; SET_PERMS asks the model which domains exist.
#[test]
fn release_domain_fires_at_shutdown_and_dom0_has_its_nodes() {
    let hv = hv();
    let dom0 = hv.xenstored().client(0);
    assert_eq!(
        dom0.read(TxId::NONE, "/local/domain/0/name").unwrap(),
        b"Domain-0"
    );
    assert_eq!(
        dom0.read(TxId::NONE, "/local/domain/0/domid").unwrap(),
        b"0"
    );
    dom0.watch("@releaseDomain", "rel").unwrap();
    let ev = |c: &xenstored::LocalClient| c.wait_event(Duration::from_millis(200));
    assert!(ev(&dom0).is_some(), "initial event");
    let a = domain(&hv, "a");
    let b = domain(&hv, "b");
    assert!(hv.shutdown_domain(&a, ShutdownReason::Poweroff));
    assert_eq!(ev(&dom0).map(|e| e.path), Some("@releaseDomain".into()));
    assert!(!hv.shutdown_domain(&a, ShutdownReason::Reboot));
    assert!(ev(&dom0).is_none(), "once per shutdown");
    assert!(hv.crash_domain(&b, "test"));
    assert_eq!(ev(&dom0).map(|e| e.path), Some("@releaseDomain".into()));
    hv.destroy_domain(a.id()).unwrap();
    assert_eq!(ev(&dom0).map(|e| e.path), Some("@releaseDomain".into()));
    // Existing domains may own nodes; destroyed or never created ones may not.
    dom0.write(TxId::NONE, "/perm", b"").unwrap();
    dom0.set_perms(TxId::NONE, "/perm", &[Perm::new(b.id().0, Access::Read)])
        .unwrap();
    for gone in [a.id().0, 77] {
        let e = dom0
            .set_perms(TxId::NONE, "/perm", &[Perm::new(gone, Access::Read)])
            .unwrap_err();
        assert_eq!(e.errno(), Some(xenstored::Errno::ENOENT), "{gone}");
    }
}
