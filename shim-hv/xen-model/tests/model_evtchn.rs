//! Event-channel semantics of the xen model (xen_evtchn.c / event_channel.c), guest
//! side through raw hypercalls and host side through the dom0 API.

mod model_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hypercall::abi::errno::{EINVAL, ENOSPC};
use hypercall::abi::{evtchn, memory, shared_info as si};
use hypercall::{DomId, Port};
use model_util::{domain, hv, Phys};
use xen_model::{Dom0Handler, EvtchnError, PortState};

fn counter() -> (Arc<AtomicUsize>, Dom0Handler) {
    let c = Arc::new(AtomicUsize::new(0));
    let c2 = c.clone();
    (
        c,
        Arc::new(move || {
            c2.fetch_add(1, Ordering::SeqCst);
        }),
    )
}

#[test]
fn guest_unbound_port_bound_by_dom0_delivers_both_ways() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let gp = g.alloc_unbound(0).unwrap();
    assert_eq!(
        hv.port_state(dom.id(), gp).unwrap(),
        PortState::Unbound { remote: DomId(0) }
    );
    let (hits, h) = counter();
    let dp = hv.dom0_bind_interdomain(dom.id(), gp, h).unwrap();
    // Xen marks a freshly bound port pending: the handler ran once.
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        hv.port_state(dom.id(), gp).unwrap(),
        PortState::Interdomain {
            remote: DomId(0),
            remote_port: dp
        }
    );

    // guest → dom0
    assert_eq!(g.send(gp.0), 0);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // dom0 → guest: pending bit, selector, upcall flag, wake.
    let e0 = dom.signal().epoch();
    hv.dom0_send(dp).unwrap();
    assert!(g.pending(gp));
    assert_ne!(g.pending_sel() & (1 << (gp.0 / 64)), 0);
    assert!(g.upcall_pending());
    assert_eq!(dom.signal().epoch(), e0 + 1);
}

#[test]
fn dom0_alloc_unbound_then_guest_binds() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let (hits, h) = counter();
    let dp = hv.dom0_alloc_unbound(dom.id(), h).unwrap();
    let gp = g.bind_interdomain(0, dp.0).unwrap();
    // The binder's new port is marked pending (events sent before the bind).
    assert!(g.pending(gp));
    assert_eq!(g.send(gp.0), 0);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A second bind to the same (now connected) dom0 port is refused.
    assert_eq!(g.bind_interdomain(0, dp.0), Err(-EINVAL));
    // Another guest may not bind a port meant for this one.
    let other = domain(&hv, "b");
    let dp2 = hv.dom0_alloc_unbound(dom.id(), Arc::new(|| {})).unwrap();
    assert_eq!(
        Phys::new(&hv, &other).bind_interdomain(0, dp2.0),
        Err(-EINVAL)
    );
}

#[test]
fn pending_raises_only_once_until_cleared() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let gp = g.alloc_unbound(0).unwrap();
    let dp = hv
        .dom0_bind_interdomain(dom.id(), gp, Arc::new(|| {}))
        .unwrap();
    hv.ack_upcall(dom.id());
    let e0 = dom.signal().epoch();
    for _ in 0..1000 {
        hv.dom0_send(dp).unwrap();
    }
    assert_eq!(dom.signal().epoch(), e0 + 1, "one wake for many sends");
    let delivered = hv.ack_upcall(dom.id());
    assert_ne!(delivered[(gp.0 / 64) as usize] & (1 << (gp.0 % 64)), 0);
    assert!(!g.pending(gp));
    assert!(!g.upcall_pending());
    assert_eq!(g.pending_sel(), 0);
    let e1 = dom.signal().epoch();
    hv.dom0_send(dp).unwrap();
    assert_eq!(dom.signal().epoch(), e1 + 1, "a new upcall after the ack");
}

#[test]
fn masked_port_loses_the_edge_and_unmask_reraises() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let gp = g.alloc_unbound(0).unwrap();
    let dp = hv
        .dom0_bind_interdomain(dom.id(), gp, Arc::new(|| {}))
        .unwrap();
    hv.ack_upcall(dom.id());
    g.set_mask(gp, true);
    let e0 = dom.signal().epoch();
    hv.dom0_send(dp).unwrap();
    assert!(g.pending(gp));
    assert!(!g.upcall_pending());
    assert_eq!(dom.signal().epoch(), e0);
    // The upcall handler leaves masked ports pending.
    let d = hv.ack_upcall(dom.id());
    assert!(d.iter().all(|w| *w == 0));
    assert!(g.pending(gp));
    // EVTCHNOP_unmask clears the mask and re-raises.
    assert_eq!(g.unmask(gp.0), 0);
    assert!(g.upcall_pending());
    assert_eq!(dom.signal().epoch(), e0 + 1);
    assert_eq!(
        g.shinfo()
            .mem()
            .load_u64(si::EVTCHN_MASK + (gp.0 / 64) as usize * 8)
            & (1 << (gp.0 % 64)),
        0
    );
    // Unmasking a port that is not pending raises nothing.
    hv.ack_upcall(dom.id());
    let e1 = dom.signal().epoch();
    assert_eq!(g.unmask(gp.0), 0);
    assert_eq!(dom.signal().epoch(), e1);
}

#[test]
fn close_makes_the_peer_unbound_and_rebindable() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let gp = g.alloc_unbound(0).unwrap();
    let (hits, h) = counter();
    let dp = hv.dom0_bind_interdomain(dom.id(), gp, h).unwrap();
    assert_eq!(g.close(gp.0), 0);
    assert_eq!(hv.port_state(dom.id(), gp).unwrap(), PortState::Closed);
    assert_eq!(
        hv.port_state(DomId(0), dp).unwrap(),
        PortState::Unbound { remote: dom.id() }
    );
    // Sending into an unbound port is silently dropped.
    hv.dom0_send(dp).unwrap();
    assert!(!g.pending(gp));
    // Closing twice is an error; the port can be bound again from the guest.
    assert_eq!(g.close(gp.0), -EINVAL);
    let before = hits.load(Ordering::SeqCst);
    let gp2 = g.bind_interdomain(0, dp.0).unwrap();
    assert_eq!(g.send(gp2.0), 0);
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    // dom0 closes: the guest end becomes unbound (to dom0).
    hv.dom0_close(dp).unwrap();
    assert_eq!(
        hv.port_state(dom.id(), gp2).unwrap(),
        PortState::Unbound { remote: DomId(0) }
    );
    assert_eq!(g.send(gp2.0), 0, "send on unbound: dropped, no error");
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    assert_eq!(hv.dom0_close(dp), Err(EvtchnError::BadPort(dp)));
    assert!(hv.dom0_send(dp).is_err());
}

#[test]
fn never_bound_and_out_of_range_ports_are_errors_not_crashes() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    for port in [0u32, 77, 4095, 4096, 70000, u32::MAX] {
        assert_eq!(g.send(port), -EINVAL, "send {port}");
        assert_eq!(g.close(port), -EINVAL, "close {port}");
        assert_eq!(g.bind_interdomain(0, port), Err(-EINVAL));
        if port == 0 || port >= 4096 {
            assert_eq!(g.unmask(port), -EINVAL, "unmask {port}");
            assert_eq!(g.status(port).map(|_| ()), Err(-EINVAL));
        }
    }
    let st = g.status(77).unwrap();
    assert_eq!(st.status, evtchn::STATUS_CLOSED);
    for port in [Port(0), Port(999_999), Port(u32::MAX)] {
        assert!(hv.dom0_send(port).is_err());
        assert!(hv.dom0_close(port).is_err());
        assert!(hv
            .dom0_bind_interdomain(dom.id(), port, Arc::new(|| {}))
            .is_err());
    }
    assert!(hv
        .dom0_bind_interdomain(DomId(77), Port(1), Arc::new(|| {}))
        .is_err());
    assert!(hv.dom0_alloc_unbound(DomId(77), Arc::new(|| {})).is_err());
    assert_eq!(dom.state(), xen_model::DomainState::Running);
}

#[test]
fn status_reports_every_state() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let u = g.alloc_unbound(0).unwrap();
    let s = g.status(u.0).unwrap();
    assert_eq!((s.status, s.u_dom), (evtchn::STATUS_UNBOUND, 0));
    let dp = hv
        .dom0_bind_interdomain(dom.id(), u, Arc::new(|| {}))
        .unwrap();
    let s = g.status(u.0).unwrap();
    assert_eq!(
        (s.status, s.u_dom, s.u_port),
        (evtchn::STATUS_INTERDOMAIN, 0, dp.0)
    );
    let v = g.bind_virq(evtchn::VIRQ_TIMER, 0).unwrap();
    let s = g.status(v.0).unwrap();
    assert_eq!(
        (s.status, s.u_dom),
        (evtchn::STATUS_VIRQ, evtchn::VIRQ_TIMER as u16)
    );
    // The store and console channels made at creation are interdomain to dom0.
    let s = g.status(dom.store().port.0).unwrap();
    assert_eq!(
        (s.status, s.u_dom, s.u_port),
        (evtchn::STATUS_INTERDOMAIN, 0, dom.store().dom0_port.0)
    );
    // Asking about another domain is refused.
    let other = domain(&hv, "b");
    let mut st = evtchn::Status {
        dom: other.id().0,
        port: 1,
        ..Default::default()
    };
    assert!(g.evtchn(evtchn::OP_STATUS, &mut st) < 0);
}

#[test]
fn bind_virq_rules() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    g.bind_virq(evtchn::VIRQ_TIMER, 0).unwrap();
    assert!(g.bind_virq(evtchn::VIRQ_TIMER, 0).is_err(), "twice");
    assert!(g.bind_virq(evtchn::VIRQ_TIMER, 1).is_err(), "no vcpu 1");
    assert!(g.bind_virq(24, 0).is_err(), "no such virq");
    assert!(g.bind_virq(u32::MAX, 0).is_err());
}

#[test]
fn timer_virq_fires_through_set_timer_op_and_block() {
    use hypercall::abi::{hypercall_nr as nr, sched};
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let v = g.bind_virq(evtchn::VIRQ_TIMER, 0).unwrap();
    hv.ack_upcall(dom.id());
    // Deadline already passed: the next block fires it.
    assert_eq!(g.raw(nr::SET_TIMER_OP, [1, 0, 0, 0, 0]), 0);
    assert_eq!(
        g.raw(nr::SCHED_OP, [sched::OP_BLOCK as usize, 0, 0, 0, 0]),
        0
    );
    assert!(g.pending(v));
    assert!(g.upcall_pending());
    // Cancelled timers never fire.
    hv.ack_upcall(dom.id());
    assert_eq!(
        g.raw(
            nr::SET_TIMER_OP,
            [(hv.now_ns() + 1_000_000_000_000) as usize, 0, 0, 0, 0]
        ),
        0
    );
    assert_eq!(g.raw(nr::SET_TIMER_OP, [0, 0, 0, 0, 0]), 0);
    assert!(hv.check_timer(&dom).is_none());
    assert!(!g.pending(v));
}

#[test]
fn shared_info_contents_move_to_the_guest_page() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let gp = g.alloc_unbound(0).unwrap();
    let dp = hv
        .dom0_bind_interdomain(dom.id(), gp, Arc::new(|| {}))
        .unwrap();
    hv.dom0_send(dp).unwrap();
    let private = g.shinfo();
    assert!(g.pending(gp));
    assert_eq!(g.add_to_physmap(memory::SPACE_SHARED_INFO, 0, 0x101), 0);
    assert_eq!(dom.shared_info_gfn(), Some(hypercall::Gfn(0x101)));
    let page = dom.memory().page(hypercall::Gfn(0x101)).unwrap();
    assert_eq!(g.shinfo().mem().as_ptr(), page.as_ptr());
    assert_ne!(private.mem().as_ptr(), page.as_ptr());
    // The pending state came along; new events land in the guest page.
    assert!(g.pending(gp));
    assert!(g.upcall_pending());
    hv.ack_upcall(dom.id());
    hv.dom0_send(dp).unwrap();
    let (w, b) = ((gp.0 / 64) as usize, 1u64 << (gp.0 % 64));
    assert_ne!(page.load_u64(si::EVTCHN_PENDING + w * 8) & b, 0);
    assert_eq!(
        private.mem().load_u64(si::EVTCHN_PENDING + w * 8) & b,
        b,
        "old copy untouched"
    );
    // Remapping elsewhere moves it again.
    assert_eq!(g.add_to_physmap(memory::SPACE_SHARED_INFO, 0, 0x105), 0);
    assert!(g.pending(gp));
}

#[test]
fn two_guests_interdomain_channel() {
    let hv = hv();
    let a = domain(&hv, "a");
    let b = domain(&hv, "b");
    let c = domain(&hv, "c");
    let ga = Phys::new(&hv, &a);
    let gb = Phys::new(&hv, &b);
    let pa = ga.alloc_unbound(b.id().0).unwrap();
    assert_eq!(
        Phys::new(&hv, &c).bind_interdomain(a.id().0, pa.0),
        Err(-EINVAL)
    );
    assert_eq!(
        gb.bind_interdomain(77, pa.0),
        Err(-3),
        "no such domain: ESRCH"
    );
    let pb = gb.bind_interdomain(a.id().0, pa.0).unwrap();
    hv.ack_upcall(a.id());
    hv.ack_upcall(b.id());
    assert_eq!(ga.send(pa.0), 0);
    assert!(gb.pending(pb));
    assert!(!ga.pending(pa));
    assert_eq!(gb.send(pb.0), 0);
    assert!(ga.pending(pa));
    // Loopback: a domain may connect to itself.
    let l1 = ga.alloc_unbound(DomId::SELF.0).unwrap();
    let l2 = ga.bind_interdomain(DomId::SELF.0, l1.0).unwrap();
    hv.ack_upcall(a.id());
    assert_eq!(ga.send(l2.0), 0);
    assert!(ga.pending(l1));
    // Destroying b unbinds a's end.
    hv.destroy_domain(b.id()).unwrap();
    assert_eq!(
        hv.port_state(a.id(), pa).unwrap(),
        PortState::Unbound { remote: b.id() }
    );
    assert_eq!(ga.send(pa.0), 0);
}

#[test]
fn handlers_may_send_back_without_deadlock() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let gp = g.alloc_unbound(0).unwrap();
    let slot: Arc<Mutex<Option<Port>>> = Arc::new(Mutex::new(None));
    let (s2, hv2) = (slot.clone(), Arc::downgrade(&hv));
    let echo: Dom0Handler = Arc::new(move || {
        let p = *s2.lock().unwrap();
        if let (Some(p), Some(hv)) = (p, hv2.upgrade()) {
            hv.dom0_send(p).unwrap();
        }
    });
    let dp = hv.dom0_bind_interdomain(dom.id(), gp, echo).unwrap();
    *slot.lock().unwrap() = Some(dp);
    hv.ack_upcall(dom.id());
    assert_eq!(g.send(gp.0), 0);
    assert!(g.pending(gp), "the echo arrived");
}

#[test]
fn event_storm_is_bounded_work() {
    // docs/hostile-input.md row 24, host side: a flood of notifications costs one wake, and one
    // upcall acknowledgement clears every pending port in one bounded pass.
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let mut pairs = Vec::new();
    for _ in 0..200 {
        let gp = g.alloc_unbound(0).unwrap();
        let dp = hv
            .dom0_bind_interdomain(dom.id(), gp, Arc::new(|| {}))
            .unwrap();
        pairs.push((gp, dp));
    }
    hv.ack_upcall(dom.id());
    let e0 = dom.signal().epoch();
    for _ in 0..50 {
        for (_, dp) in &pairs {
            hv.dom0_send(*dp).unwrap();
        }
    }
    assert_eq!(dom.signal().epoch(), e0 + 1);
    let d = hv.ack_upcall(dom.id());
    assert_eq!(d.iter().map(|w| w.count_ones()).sum::<u32>(), 200);
    assert!(pairs.iter().all(|(gp, _)| !g.pending(*gp)));
    // A guest storming dom0: each send is O(1) and reaches the handler.
    let (hits, h) = counter();
    let gp = g.alloc_unbound(0).unwrap();
    hv.dom0_bind_interdomain(dom.id(), gp, h).unwrap();
    for _ in 0..10_000 {
        assert_eq!(g.send(gp.0), 0);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 10_001);
}

#[test]
fn port_exhaustion_is_enospc() {
    let hv = hv();
    let dom = domain(&hv, "a");
    let g = Phys::new(&hv, &dom);
    let mut n = 0;
    loop {
        match g.alloc_unbound(0) {
            Ok(_) => n += 1,
            Err(e) => {
                assert_eq!(e, -ENOSPC);
                break;
            }
        }
    }
    // 4095 usable ports, two taken by the store and console channels.
    assert_eq!(n, 4095 - 2);
    assert_eq!(g.close(4000), 0);
    assert_eq!(g.alloc_unbound(0), Ok(Port(4000)));
}

/// `EventSignal` never loses a wake-up, whether the raise comes before the wait,
/// while the waiter is between checking and sleeping, or while it sleeps (its
/// raise skips the system call when nobody sleeps). Two threads ping-pong a
/// thousand times; a lost wake-up would show as an unchanged epoch after the
/// (hang-guard) timeout.
#[test]
fn event_signal_ping_pong_loses_no_wakeup() {
    use std::time::Duration;
    use xen_model::EventSignal;
    let (ping, pong) = (
        Arc::new(EventSignal::default()),
        Arc::new(EventSignal::default()),
    );
    const ROUNDS: u64 = 1000;
    let guard = Duration::from_secs(60);
    let (p2, q2) = (ping.clone(), pong.clone());
    let other = std::thread::spawn(move || {
        let mut seen = 0;
        for _ in 0..ROUNDS {
            let now = p2.wait_change(seen, guard);
            assert_ne!(now, seen, "lost wake-up (pong side)");
            seen = now;
            q2.raise();
        }
    });
    let mut seen = 0;
    for i in 0..ROUNDS {
        ping.raise();
        let now = pong.wait_change(seen, guard);
        assert_ne!(now, seen, "lost wake-up in round {i}");
        seen = now;
    }
    other.join().unwrap();
    assert_eq!(ping.epoch(), ROUNDS);
    assert_eq!(pong.epoch(), ROUNDS);
}
