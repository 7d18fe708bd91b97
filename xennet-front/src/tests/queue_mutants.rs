//! Tests written for the mutants cargo-mutants found missed in `queue.rs`
//! (docs/mutants.md); each names the mutant it catches.

use super::*;

/// A GSO frame needs a ring slot for its extra-info descriptor on top of its data
/// slots: with one slot left, a one-slot GSO frame is Busy (nothing pushed), a
/// one-slot plain frame still goes (mutants: `data + extra` as `-` or `*` in
/// `TxQueue::has_room`).
#[test]
fn gso_frame_needs_room_for_its_extra_slot() {
    let env = Env::new();
    let cfg = Config {
        gso_tcpv4: true,
        tx_buffers: 256,
        ..cfg()
    };
    let mut dev = device(&env, cfg, all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    // 17 frames of 15 pages: 255 of the ring's 256 slots.
    for n in 0..17 {
        dev.send(&pattern(15 * PAGE_SIZE, n)).unwrap();
    }
    assert_eq!(dev.stats().tx_in_flight, 255);
    let f = csum::tests::frame(false, csum::PROTO_TCP, 1000);
    let meta = TxMeta {
        gso_mss: Some(536),
        ..TxMeta::default()
    };
    assert_eq!(dev.send_frags(&[&f], meta), Err(Error::Busy));
    assert_eq!(dev.stats().tx_in_flight, 255, "nothing pushed");
    dev.send(&pattern(100, 1)).unwrap();
    let got = be.take_tx();
    assert_eq!(got.len(), 18);
    assert_eq!(got[17].data, pattern(100, 1));
    assert!(got[17].gso.is_none());
    dev.poll().unwrap();
    // With room again the GSO frame goes, with its extra slot.
    dev.send_frags(&[&f], meta).unwrap();
    let s = be.take_tx().remove(0);
    assert_eq!((s.data, s.slots), (f.clone(), 2));
}

/// A sent frame notifies the backend only when its `req_event` asks: the first
/// request after the backend last looked does, a second one before it looks again
/// does not, and once it has consumed and re-armed, the next one does again; for
/// frames copied in (`send`) and written in place (`send_with`) alike (mutants:
/// `TxQueue::send` -> `Ok(true)`/`Ok(false)`, `TxQueue::send_page` likewise).
#[test]
fn tx_notifies_only_when_the_backend_asked() {
    let env = Env::new();
    let cfg = Config {
        split_event_channels: false,
        ..cfg()
    };
    let mut dev = device(&env, cfg, all_features());
    let (t, _) = dev.ports(0).unwrap();
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    let kicks = |env: &Env| env.p.sends.borrow().iter().filter(|&&p| p == t.0).count();
    for copied in [true, false] {
        let send = |dev: &mut Dev<'_>, n: usize| {
            if copied {
                dev.send(&pattern(60, n)).unwrap();
            } else {
                dev.send_with(60, |b| b.copy_from_slice(&pattern(60, n)))
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
        };
        let k0 = kicks(&env);
        send(&mut dev, 1);
        assert_eq!(kicks(&env), k0 + 1, "the backend asked (copied {copied})");
        send(&mut dev, 2);
        assert_eq!(kicks(&env), k0 + 1, "not asked again yet (copied {copied})");
        // The backend consumes both and re-arms req_event.
        assert_eq!(be.take_tx().len(), 2);
        assert!(!be.tx.final_check_for_requests().unwrap());
        dev.poll().unwrap();
        send(&mut dev, 3);
        assert_eq!(kicks(&env), k0 + 2, "asked again (copied {copied})");
        be.take_tx();
        assert!(!be.tx.final_check_for_requests().unwrap());
        dev.poll().unwrap();
    }
}

/// `send_with` fills a page of queue 0's pool; a frame whose flow belongs to
/// another queue is copied there and the page goes back to queue 0's pool. Many
/// more such frames than queue 0 has pages all go (mutant: `TxQueue::put_page`
/// -> `()`, which lost the page each time).
#[test]
fn send_with_to_another_queue_gives_the_page_back() {
    let env = Env::new();
    let cfg = Config {
        max_queues: 2,
        tx_buffers: 4,
        ..cfg()
    };
    let mut dev = device(&env, cfg, all_features());
    let mut bes: Vec<FakeBackend<'_>> = (0..2)
        .map(|q| FakeBackend::attach(&env, &dev, q, 0))
        .collect();
    let mut other = 0;
    for n in 0..64u8 {
        let mut f = csum::tests::frame(false, csum::PROTO_UDP, 20);
        f[14 + 12] = n; // source address varies: flows spread over both queues
        dev.send_with(f.len(), |b| b.copy_from_slice(&f))
            .map_err(|(e, _)| e)
            .unwrap();
        let got: Vec<usize> = bes.iter_mut().map(|be| be.take_tx().len()).collect();
        assert_eq!(got.iter().sum::<usize>(), 1);
        other += got[1];
        dev.poll().unwrap();
    }
    assert!(
        other > 8,
        "{other} frames went to queue 1: more than queue 0's 4 pages"
    );
}

/// Whether the platform freed the page of frame `g` (an allocation holding it).
fn freed(env: &Env, g: Gfn) -> bool {
    let a = env.p.gfn_to_virt(g).unwrap().as_ptr() as usize;
    env.p
        .freed
        .borrow()
        .iter()
        .any(|&(s, n)| a >= s && a < s + n * PAGE_SIZE)
}

/// A tx buffer whose response came while the backend still mapped it is
/// quarantined: dropping the device later never frees that page's pool (the rx
/// pool, which the backend does not map, is freed) (mutant: `quarantined += 1` as
/// `*=` in `TxQueue::reclaim`, which left the count at 0 and freed the page the
/// backend maps).
#[test]
fn tx_page_mapped_at_its_response_is_never_freed() {
    let env = Env::new();
    let mut dev = device(&env, cfg(), all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    dev.send(&pattern(60, 0)).unwrap();
    let r = be.take_tx_requests()[0];
    let g = Gfn(u64::from(env.g.entry(GrantRef(r.gref)).unwrap().frame));
    env.set_grant_flag(r.gref, gabi::GTF_READING, true);
    be.tx
        .push_response(&TxResponse {
            id: r.id,
            status: netif::RSP_OKAY,
        })
        .unwrap();
    be.publish_tx();
    assert!(dev.poll().is_err());
    let rx_page = be.next_rx_req().unwrap();
    let rx_g = Gfn(u64::from(
        env.g.entry(GrantRef(rx_page.gref)).unwrap().frame,
    ));
    drop(be);
    drop(dev);
    assert!(!freed(&env, g), "the mapped tx page was freed");
    assert!(freed(&env, rx_g), "the rx pool (nothing mapped) was freed");
}

/// The same for an rx buffer whose response came while the backend still mapped
/// it (mutant: `quarantined += 1` as `*=` in `RxQueue::next_frame`).
#[test]
fn rx_page_mapped_at_its_response_is_never_freed() {
    let env = Env::new();
    let mut dev = device(&env, cfg(), all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    dev.send(&pattern(60, 0)).unwrap();
    let tx = be.take_tx_requests()[0];
    let tx_g = Gfn(u64::from(env.g.entry(GrantRef(tx.gref)).unwrap().frame));
    be.tx
        .push_response(&TxResponse {
            id: tx.id,
            status: netif::RSP_OKAY,
        })
        .unwrap();
    be.publish_tx();
    dev.poll().unwrap();
    let req = be.next_rx_req().unwrap();
    let g = Gfn(u64::from(env.g.entry(GrantRef(req.gref)).unwrap().frame));
    env.set_grant_flag(req.gref, gabi::GTF_WRITING, true);
    be.rx.push_response(&rx_rsp(req.id, 0, 0, 60)).unwrap();
    be.publish_rx();
    let mut buf = vec![0u8; MAX_FRAME];
    assert!(dev
        .poll()
        .and_then(|()| dev.recv(&mut buf).map(|_| ()))
        .is_err());
    drop(be);
    drop(dev);
    assert!(!freed(&env, g), "the mapped rx page was freed");
    assert!(freed(&env, tx_g), "the tx pool (nothing mapped) was freed");
}

/// Buffers the backend still maps when the device is dropped (a tx frame in
/// flight, a posted rx buffer) are quarantined by the teardown: their pools are
/// never freed, while the rings' pages, which it does not map, are (mutants:
/// `quarantined += 1` as `*=` in `TxQueue::teardown` and `RxQueue::teardown`).
#[test]
fn buffers_mapped_at_teardown_are_never_freed() {
    let env = Env::new();
    let mut dev = device(&env, cfg(), all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    dev.send(&pattern(60, 0)).unwrap();
    let tx = GrantRef(be.take_tx_requests()[0].gref);
    let rx = GrantRef(be.next_rx_req().unwrap().gref);
    let (tr, rr) = dev.queue_rings(0).unwrap();
    let gfn = |r: GrantRef| Gfn(u64::from(env.g.entry(r).unwrap().frame));
    for r in [tx, rx] {
        env.set_grant_flag(r.0, gabi::GTF_READING, true);
    }
    let (tx_g, rx_g, tr_g, rr_g) = (gfn(tx), gfn(rx), gfn(tr), gfn(rr));
    drop(be);
    drop(dev);
    assert!(!freed(&env, tx_g), "the mapped tx buffer was freed");
    assert!(!freed(&env, rx_g), "the mapped rx buffer was freed");
    assert!(freed(&env, tr_g) && freed(&env, rr_g), "ring pages freed");
}

/// `grants_in_use` counts every grant the device holds: both rings, the posted rx
/// buffers and the tx frames in flight, i.e. all the table's grants here (mutant:
/// `RxQueue::granted` -> 0).
#[test]
fn grants_in_use_counts_posted_rx_buffers() {
    let env = Env::new();
    let mut dev = device(&env, cfg(), all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    let posted = be.rx_available();
    assert!(posted > 0);
    assert_eq!(dev.grants_in_use(), 2 + posted);
    assert_eq!(dev.grants_in_use(), env.g.in_use());
    dev.send(&pattern(5000, 0)).unwrap();
    assert_eq!(dev.grants_in_use(), 2 + posted + 2);
    assert_eq!(dev.grants_in_use(), env.g.in_use());
}

/// G5: a device that cannot grant all its rx buffers at connect does not connect
/// (the refs are all given back); with just enough refs it does (mutant: the
/// `!all` guard in `RxQueue::refill` as `true`).
#[test]
fn running_out_of_grant_refs_fails_the_connect_only() {
    let env = Env::new();
    let be_page = SharedPages::alloc(&env.p, 1).unwrap();
    let gfn = be_page.page_gfn(&env.p, 0).unwrap();
    // Leave half a device's worth of refs: the rings take 2, the BUFS rx buffers
    // would take BUFS.
    let left = BUFS / 2;
    let mut held = Vec::new();
    while let Ok(r) = env.g.grant_access(BE, gfn, true) {
        held.push(r);
    }
    for r in held.drain(..left) {
        env.g.end_access(r).unwrap();
    }
    let full = env.g.in_use();
    let r = NetFront::<_, NG, 4>::attach_for_test(&env.p, &env.g, BE, cfg(), all_features(), 0);
    assert_eq!(
        r.err(),
        Some(Error::Grant(hypercall::gnttab::Error::Exhausted))
    );
    assert_eq!(
        env.g.in_use(),
        full,
        "the failed connect gave its refs back"
    );
    // With refs for both rings and all BUFS rx buffers, it connects.
    for r in held.drain(..2 + BUFS - left) {
        env.g.end_access(r).unwrap();
    }
    let dev = device(&env, cfg(), all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    assert_eq!(be.rx_available(), BUFS);
    drop((be, dev));
    for r in held {
        env.g.end_access(r).unwrap();
    }
}

/// An empty slot inside an rx chain (status 0, as a backend may leave one) is no
/// fault: the frame arrives whole (mutant: `rsp.status < 0` as `<=` in
/// `RxQueue::add_frag`).
#[test]
fn empty_slot_inside_an_rx_chain_is_accepted() {
    let env = Env::new();
    let mut dev = device(&env, cfg(), all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    let data = pattern(100, 3);
    let parts: [(&[u8], u16); 3] = [
        (&data[..60], netif::NETRXF_MORE_DATA),
        (&[], netif::NETRXF_MORE_DATA),
        (&data[60..], 0),
    ];
    for (bytes, flags) in parts {
        let req = be.next_rx_req().unwrap();
        FakeBackend::map_gref(&env, GrantRef(req.gref), true).write(0, bytes);
        be.rx
            .push_response(&rx_rsp(req.id, 0, flags, bytes.len() as i16))
            .unwrap();
    }
    be.publish_rx();
    let mut buf = vec![0u8; MAX_FRAME];
    let m = recv_one(&mut dev, &mut buf).expect("the frame");
    assert_eq!(m.len, 100);
    same(&buf[..100], &data);
    assert_eq!(dev.stats().rx_dropped, 0);
}

/// A chain that never ends counts as one bad frame when it passes the slot limit
/// (the 19th slot after a first slot of over 256 bytes) and then one more per
/// further `MAX_RX_FRAGS` (19) slots, exactly (mutant: `slots + 1` as `slots * 1`
/// in `RxQueue::next_frame`'s discard count).
#[test]
fn endless_rx_chain_counts_one_drop_per_frames_worth_of_slots() {
    let env = Env::new();
    let cfg = Config {
        rx_error_limit: 1000,
        ..cfg()
    };
    let mut dev = device(&env, cfg, all_features());
    let mut be = FakeBackend::attach(&env, &dev, 0, 0);
    let mut buf = vec![0u8; MAX_FRAME];
    // `n` slots, in as many publications as the posted buffers need (one natively;
    // several with the fewer buffers of Miri's runs, `BUFS`).
    let mut slots = |n: usize, be: &mut FakeBackend<'_>, dev: &mut Dev<'_>| {
        let mut left = n;
        while left > 0 {
            let k = left.min(be.rx_available());
            assert!(k > 0, "rx buffers posted");
            for _ in 0..k {
                be.rx_raw(rx_rsp(0, 0, netif::NETRXF_MORE_DATA, 1000));
            }
            be.publish_rx();
            assert_eq!(recv_one(dev, &mut buf), None);
            left -= k;
        }
        let s = dev.stats();
        assert_eq!(s.last_rx_fault, Some(RxFault::TooManySlots));
        assert_eq!(s.rx_dropped, s.rx_errors);
        s.rx_dropped
    };
    // 19 slots: dropped at the 19th; then 5 x 19 more: five more drops.
    assert_eq!(slots(19 + 5 * 19, &mut be, &mut dev), 6);
    // 18 more: not yet a seventh; one more: the seventh.
    assert_eq!(slots(18, &mut be, &mut dev), 6);
    assert_eq!(slots(1, &mut be, &mut dev), 7);
    // The chain ends; the next frame arrives.
    be.rx_raw(rx_rsp(0, 0, 0, 10));
    be.publish_rx();
    assert_eq!(recv_one(&mut dev, &mut buf), None);
    assert_eq!(dev.stats().rx_dropped, 7);
    assert!(be.deliver(&pattern(90, 4), 0, None));
    assert_eq!(recv_one(&mut dev, &mut buf).unwrap().len, 90);
}
