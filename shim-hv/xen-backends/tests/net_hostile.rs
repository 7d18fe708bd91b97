//! Hostile input end to end.
//!
//! Frontend side (docs/hostile-input.md rows 22, 23; rows 1-5 and 17-21 need a hostile
//! *backend* and are covered by xennet-front's unit tests with its fake backend):
//! a malformed or missing `mac` refuses the connection; an absurd
//! `multi-queue-max-queues` is clamped.
//!
//! Backend side: a hand-written hostile frontend (bad grant refs, a slot crossing
//! its page, too many slots, a runaway producer index, a bad queue count, no
//! rx-copy, bad rx grants) fails only itself; two well-behaved guests on the same
//! bridge keep talking throughout.

mod net_util;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypercall::abi::netif::{RxRequest, RxResponse, TxRequest, TxResponse, NETTXF_MORE_DATA};
use hypercall::abi::ring as layout;
use hypercall::gnttab::GrantTable;
use hypercall::ring::FrontRing;
use hypercall::{DomId, SharedMem, Xen};
use net_util::*;
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig, Offer};
use xen_model::inproc::InProcGuest;
use xen_model::Hypervisor;
use xenbus::frontend::FrontendHandshake;
use xenbus::{Path, Store, XenbusState, Xenstore};
use xennet_front::{Config, Error, MacError, TxMeta};
use xenstored::TxId;

fn write_fe(hv: &Hypervisor, dom: DomId, key: &str, value: &[u8]) {
    let xs = hv.xenstored().client(0);
    xs.write(
        TxId::NONE,
        &format!("/local/domain/{}/device/vif/0/{key}", dom.0),
        value,
    )
    .unwrap();
}

fn read_be(hv: &Hypervisor, be: &NetBackend, key: &str) -> Option<String> {
    let xs = hv.xenstored().client(0);
    xs.read(TxId::NONE, &format!("{}/{key}", be.backend_path()))
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Row 22: a malformed `mac` key refuses the connection with a clear error.
#[test]
fn malformed_mac_refuses_to_connect() {
    type Case<'a> = (&'a [u8], fn(&Error) -> bool);
    let cases: &[Case<'_>] = &[
        (b"zz:00:00:50:02:01", |e| {
            matches!(e, Error::BadMac(MacError::BadGroup(0)))
        }),
        (b"aa:00:00:50:02", |e| {
            matches!(e, Error::BadMac(MacError::WrongGroupCount(5)))
        }),
        (b"aa:00:00:50:02:01:07", |e| {
            matches!(e, Error::BadMac(MacError::WrongGroupCount(7)))
        }),
        (b"aa-00-00-50-02-01", |e| matches!(e, Error::BadMac(_))),
        (b"", |e| matches!(e, Error::BadMac(_))),
        (&[b'a'; 100], |e| {
            matches!(e, Error::BadMac(MacError::TooLong(100)))
        }),
        // Review defect (issue 16): well formed but not unicast.
        (b"ff:ff:ff:ff:ff:ff", |e| {
            matches!(e, Error::BadMac(MacError::NotUnicast(_)))
        }),
        (b"01:00:5e:00:00:01", |e| {
            matches!(e, Error::BadMac(MacError::NotUnicast(_)))
        }),
        (b"00:00:00:00:00:00", |e| {
            matches!(e, Error::BadMac(MacError::NotUnicast(_)))
        }),
    ];
    for (value, ok) in cases {
        let hv = hv();
        let br = Bridge::new("xenbr0");
        let (d, be) = guest_with_vif(&hv, &br, "a", 1, NetConfig::default());
        write_fe(&hv, d.id(), "mac", value);
        let r = connect_result(&hv, d.clone(), Config::default());
        let e = r.unwrap_err();
        assert!(ok(&e), "{:?} gave {e:?}", String::from_utf8_lossy(value));
        assert!(!e.to_string().is_empty());
        assert!(!be.connected());
    }
    // Missing entirely.
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (d, _be) = guest_with_vif(&hv, &br, "a", 1, NetConfig::default());
    hv.xenstored()
        .client(0)
        .rm(
            TxId::NONE,
            &format!("/local/domain/{}/device/vif/0/mac", d.id().0),
        )
        .unwrap();
    assert_eq!(
        connect_result(&hv, d, Config::default()),
        Err(Error::MissingMac)
    );
}

/// Row 23: an absurd `multi-queue-max-queues` is clamped; traffic flows.
#[test]
fn absurd_max_queues_is_clamped() {
    for absurd in [1_000_000u32, u32::MAX, 0] {
        let hv = hv();
        let br = Bridge::new("xenbr0");
        let offer = Offer {
            max_queues: Some(absurd),
            ..Offer::default()
        };
        let net = || NetConfig {
            offer: offer.clone(),
            ..NetConfig::default()
        };
        let (da, ba) = guest_with_vif(&hv, &br, "a", 1, net());
        let (db, _bb) = guest_with_vif(&hv, &br, "b", 2, net());
        let cfg = Config {
            max_queues: 16,
            ..Config::default()
        };
        let (go_tx, go_rx) = channel::<()>();
        let (got_tx, got_rx) = channel::<()>();
        // One flow: A sends its 20 frames, then the end marker; B counts frames until
        // the marker and confirms, and only then may A close.
        let marker = vec![end_marker(mac(2), mac(1), false)];
        let marker_a = marker.clone();
        let rb = run_guest(&hv, db, cfg, move |dev, _| {
            go_tx.send(()).unwrap();
            let got = recv_until_end(dev, &marker).map(|v| v.len());
            let _ = got_tx.send(());
            (dev.negotiated().queues, got)
        });
        let ra = run_guest(&hv, da, cfg, move |dev, _| {
            go_rx.recv().unwrap();
            for n in 0..20u8 {
                let f = ip_frame(mac(2), mac(1), false, false, 100, n);
                send_meta(dev, &f, TxMeta::default()).unwrap();
            }
            send_meta(dev, &marker_a[0], TxMeta::default()).unwrap();
            wait_confirmed(&got_rx, "B").unwrap();
            dev.negotiated().queues
        });
        let (qb, n) = rb.recv_timeout(END_GUARD * 2).expect("guest B ended");
        let n = n.unwrap_or_else(|e| panic!("B, offer {absurd}: {e}"));
        let qa = ra.recv_timeout(END_GUARD * 2).expect("guest A ended");
        let want = if absurd == 0 {
            1
        } else {
            xennet_front::MAX_QUEUES
        };
        assert_eq!((qa, qb), (want, want), "offer {absurd}");
        assert_eq!(n, 20);
        assert_eq!(ba.stats().connects, 1);
        assert_eq!(ba.stats().fatal, 0);
    }
}

/// What the hostile frontend does once connected.
#[derive(Clone, Copy, Debug)]
enum Attack {
    BadTxGref,
    SlotCrossesPage,
    TooManySlots,
    RunawayReqProd,
    BadRxGrefs,
    RuntFrame,
    SizesInconsistent,
    /// A broadcast frame longer than netback's copy break: good headers in the
    /// first slot, a bad grant in the second (the part receivers copy straight
    /// from the sender's pages).
    BadTailGref,
    /// A valid frame to `mac(5)` in slots at odd offsets and sizes (see
    /// `odd_layout`), like a frontend that puts headers and data apart.
    OddLayout,
}

/// The slots of `Attack::OddLayout`: (data page, offset, length). The first is
/// shorter than the headers netback keeps, the last crosses the receiver's page
/// boundary.
const ODD_SLOTS: [(usize, u16, u16); 3] = [(0, 100, 40), (1, 3000, 1000), (2, 0, 4000)];

/// The frame `Attack::OddLayout` sends.
fn odd_layout_frame() -> Vec<u8> {
    let total: usize = ODD_SLOTS.iter().map(|s| usize::from(s.2)).sum();
    let mut f: Vec<u8> = (0..total).map(|i| (i * 13 + i / 256) as u8).collect();
    f[0..6].copy_from_slice(&mac(5).0);
    f[6..12].copy_from_slice(&mac(9).0);
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

/// A hand-written frontend: one queue, rings and keys by hand, then `attack`.
fn hostile_guest(
    hv: &Arc<Hypervisor>,
    dom: Arc<xen_model::Domain>,
    keys: Vec<(&'static str, String)>,
    attack: Option<Attack>,
    done: Sender<Result<(), String>>,
    hold: Receiver<()>,
) {
    hv.spawn_guest(dom, move |g| {
        let p: &InProcGuest = &g;
        let r = (|| -> Result<(), String> {
            let table: Box<GrantTable<NG>> =
                Box::new(GrantTable::setup(p, 16).map_err(|e| e.to_string())?);
            let mut xs = Xenstore::from_hvm_params(p).map_err(|e| e.to_string())?;
            let mut hs = FrontendHandshake::new("device/vif/0").map_err(|e| e.to_string())?;
            hs.start(&mut xs).map_err(|e| e.to_string())?;
            hs.wait_for_backend(&mut xs, STEP)
                .map_err(|e| e.to_string())?;
            let txm = hypercall::SharedPages::alloc(p, 1).unwrap().leak();
            let rxm = hypercall::SharedPages::alloc(p, 1).unwrap().leak();
            let data = hypercall::SharedPages::alloc(p, 4).unwrap().leak();
            let mut txr = FrontRing::<TxRequest, TxResponse, _>::init(txm).unwrap();
            let mut rxr = FrontRing::<RxRequest, RxResponse, _>::init(rxm).unwrap();
            let be = DomId(0);
            let tg = table
                .grant_access(be, txm.page_gfn(p, 0).unwrap(), false)
                .unwrap();
            let rg = table
                .grant_access(be, rxm.page_gfn(p, 0).unwrap(), false)
                .unwrap();
            let port = Xen(p).evtchn_alloc_unbound(be).map_err(|e| e.to_string())?;
            let mut all = vec![
                ("tx-ring-ref", tg.0.to_string()),
                ("rx-ring-ref", rg.0.to_string()),
                ("event-channel", port.0.to_string()),
                ("request-rx-copy", "1".to_string()),
                ("feature-rx-notify", "1".to_string()),
                ("feature-sg", "1".to_string()),
            ];
            for (k, v) in keys {
                all.retain(|(kk, _)| *kk != k);
                all.push((k, v));
            }
            hs.publish(&mut xs, XenbusState::Connected, |tx, node| {
                for (k, v) in &all {
                    if !v.is_empty() {
                        tx.write_str(&Path::join(node, k)?, v)?;
                    }
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            hs.wait_connected(&mut xs, STEP)
                .map_err(|e| e.to_string())?;
            let grant_data = |i: usize| {
                table
                    .grant_access(be, data.page_gfn(p, i).unwrap(), false)
                    .unwrap()
            };
            let push = |txr: &mut FrontRing<TxRequest, TxResponse, SharedMem<'static>>,
                        r: TxRequest| {
                txr.push_request(&r).unwrap();
            };
            match attack {
                None => {}
                Some(Attack::BadTxGref) => {
                    for id in 0..3u16 {
                        push(
                            &mut txr,
                            TxRequest {
                                gref: 7777 + u32::from(id),
                                offset: 0,
                                flags: 0,
                                id,
                                size: 100,
                            },
                        );
                    }
                }
                Some(Attack::RuntFrame) => {
                    let gr = grant_data(0);
                    push(
                        &mut txr,
                        TxRequest {
                            gref: gr.0,
                            offset: 0,
                            flags: 0,
                            id: 0,
                            size: 5,
                        },
                    );
                }
                Some(Attack::SizesInconsistent) => {
                    let gr = grant_data(0);
                    push(
                        &mut txr,
                        TxRequest {
                            gref: gr.0,
                            offset: 0,
                            flags: NETTXF_MORE_DATA,
                            id: 0,
                            size: 100,
                        },
                    );
                    push(
                        &mut txr,
                        TxRequest {
                            gref: gr.0,
                            offset: 0,
                            flags: 0,
                            id: 1,
                            size: 3000,
                        },
                    );
                }
                Some(Attack::SlotCrossesPage) => {
                    let gr = grant_data(0);
                    push(
                        &mut txr,
                        TxRequest {
                            gref: gr.0,
                            offset: 4000,
                            flags: 0,
                            id: 0,
                            size: 1460,
                        },
                    );
                }
                Some(Attack::TooManySlots) => {
                    let gr = grant_data(0);
                    for id in 0..40u16 {
                        let flags = if id < 39 { NETTXF_MORE_DATA } else { 0 };
                        push(
                            &mut txr,
                            TxRequest {
                                gref: gr.0,
                                offset: 0,
                                flags,
                                id,
                                size: if id == 0 { 40 * 64 } else { 64 },
                            },
                        );
                    }
                }
                Some(Attack::RunawayReqProd) => {
                    txm.store_u32(layout::REQ_PROD, 5000);
                }
                Some(Attack::BadTailGref) => {
                    let gr = grant_data(0);
                    let mut head = vec![0xffu8; 6];
                    head.extend_from_slice(&mac(9).0);
                    head.extend_from_slice(&[0x88, 0xb5]);
                    data.write(0, &head);
                    push(
                        &mut txr,
                        TxRequest {
                            gref: gr.0,
                            offset: 0,
                            flags: NETTXF_MORE_DATA,
                            id: 0,
                            size: 1500,
                        },
                    );
                    push(
                        &mut txr,
                        TxRequest {
                            gref: 7777,
                            offset: 0,
                            flags: 0,
                            id: 1,
                            size: 500,
                        },
                    );
                }
                Some(Attack::OddLayout) => {
                    let f = odd_layout_frame();
                    let mut pos = 0usize;
                    for (k, &(page, offset, len)) in ODD_SLOTS.iter().enumerate() {
                        let len = usize::from(len);
                        data.write(page * 4096 + usize::from(offset), &f[pos..pos + len]);
                        pos += len;
                        let last = k + 1 == ODD_SLOTS.len();
                        push(
                            &mut txr,
                            TxRequest {
                                gref: grant_data(page).0,
                                offset,
                                flags: if last { 0 } else { NETTXF_MORE_DATA },
                                id: k as u16,
                                size: if k == 0 { f.len() as u16 } else { len as u16 },
                            },
                        );
                    }
                }
                Some(Attack::BadRxGrefs) => {
                    for id in 0..64u16 {
                        rxr.push_request(&RxRequest {
                            id,
                            _pad: 0,
                            gref: 9000 + u32::from(id),
                        })
                        .unwrap();
                    }
                    let _ = rxr.push_requests_and_check_notify();
                }
            }
            if !matches!(attack, Some(Attack::RunawayReqProd)) {
                let _ = txr.push_requests_and_check_notify();
            }
            Xen(p).evtchn_send(port).map_err(|e| e.to_string())?;
            let _ = done.send(Ok(()));
            // Stay alive (and keep the pages) until the test is done.
            let _ = hold.recv();
            Ok(())
        })();
        if let Err(e) = r {
            let _ = done.send(Err(e));
        }
    })
    .expect("spawn");
}

/// Two good guests exchanging frames the whole time; returns (stop, result).
fn good_pair(
    hv: &Arc<Hypervisor>,
    br: &Arc<Bridge>,
) -> (Sender<()>, Receiver<usize>, Vec<NetBackend>) {
    let (dc, bc) = guest_with_vif(hv, br, "c", 3, NetConfig::default());
    let (dd, bd) = guest_with_vif(hv, br, "d", 4, NetConfig::default());
    let (stop_tx, stop_rx) = channel::<()>();
    let (go_tx, go_rx) = channel::<()>();
    let (got_tx, got_rx) = channel::<()>();
    let rd = run_guest(hv, dd, Config::default(), move |dev, _| {
        go_tx.send(()).unwrap();
        let mut n = 0;
        let mut buf = vec![0u8; 2000];
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Ok(Some(m)) = dev.recv_timeout(&mut buf, Duration::from_millis(100)) {
                if buf[..m.len] == ip_frame(mac(4), mac(3), false, false, 200, 9)[..] {
                    n += 1;
                }
            }
            if n >= 200 {
                break;
            }
        }
        let _ = got_tx.send(());
        n
    });
    let _rc = run_guest(hv, dc, Config::default(), move |dev, _| {
        go_rx.recv().unwrap();
        let f = ip_frame(mac(4), mac(3), false, false, 200, 9);
        for _ in 0..200 {
            send_meta(dev, &f, TxMeta::default()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            if stop_rx.try_recv().is_ok() {
                break;
            }
        }
        // Stay connected until D has counted (or given up): closing earlier could
        // lose frames still in flight.
        let _ = wait_confirmed(&got_rx, "D");
    });
    (stop_tx, rd, vec![bc, bd])
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn attack(a: Option<Attack>, keys: Vec<(&'static str, String)>, fatal: bool) {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (_stop, good, bes) = good_pair(&hv, &br);
    // The good pair is on the bridge before the attack (so a flooded frame reaches
    // them).
    wait_until("the good pair connected", 30, || {
        bes.iter().all(|b| b.connected())
    });
    let (dh, bh) = guest_with_vif(&hv, &br, "hostile", 9, NetConfig::default());
    let (done_tx, done_rx) = channel();
    let (hold_tx, hold_rx) = channel();
    hostile_guest(&hv, dh, keys, a, done_tx, hold_rx);
    let r = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("hostile guest ran");
    if fatal {
        // Either the connection was refused (handshake error) or it went down.
        let _ = r;
        wait_until("backend Closing", 30, || {
            read_be(&hv, &bh, "state").as_deref() == Some("5")
        });
        assert!(!read_be(&hv, &bh, "error").unwrap_or_default().is_empty());
        assert!(bh.stats().fatal >= 1);
        assert!(!bh.connected());
    } else {
        r.expect("connected");
        wait_until("the frame error", 30, || {
            bh.stats().tx_errors + bh.stats().rx_errors > 0 || bh.stats().rx_dropped > 0
        });
        assert!(bh.connected(), "{a:?}: a bad frame fails that frame only");
        assert_eq!(bh.stats().fatal, 0);
    }
    // Other guests are unaffected.
    let n = good
        .recv_timeout(Duration::from_secs(90))
        .expect("good pair");
    assert_eq!(n, 200, "{a:?}");
    // Nothing the hostile guest did shows up as an error in the others' buffers.
    for b in &bes {
        assert_eq!(b.stats().rx_errors, 0, "{a:?}: {}", b.vif_name());
    }
    drop(hold_tx);
}

#[test]
fn bad_tx_gref_fails_the_frame_only() {
    attack(Some(Attack::BadTxGref), vec![], false);
}

#[test]
fn runt_and_inconsistent_frames_fail_the_frame_only() {
    attack(Some(Attack::RuntFrame), vec![], false);
    attack(Some(Attack::SizesInconsistent), vec![], false);
}

/// A sender that breaks the grant of the part of a frame receivers copy straight
/// from its pages gets an error for that frame; the receivers lose nothing (their
/// buffers stay posted for the next frame).
#[test]
fn bad_grant_in_a_frames_tail_fails_that_frame_only() {
    attack(Some(Attack::BadTailGref), vec![], false);
}

/// A frame in slots at odd offsets and sizes (the first shorter than the headers
/// netback keeps) arrives byte for byte: headers from netback's copy, the rest
/// grant to grant, across the receiver's page boundary.
#[test]
fn odd_slot_layouts_arrive_intact() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (dr, br_be) = guest_with_vif(&hv, &br, "receiver", 5, NetConfig::default());
    let (got_tx, got_rx) = channel();
    let _r = run_guest(&hv, dr, Config::default(), move |dev, _| {
        let mut buf = vec![0u8; 65536];
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Ok(Some(m)) = dev.recv_timeout(&mut buf, Duration::from_millis(100)) {
                if m.len > 64 {
                    let _ = got_tx.send(buf[..m.len].to_vec());
                    break;
                }
            }
        }
    });
    wait_until("the receiver connected", 30, || br_be.connected());
    let (dh, bh) = guest_with_vif(&hv, &br, "sender", 9, NetConfig::default());
    let (done_tx, done_rx) = channel();
    let (hold_tx, hold_rx) = channel();
    hostile_guest(&hv, dh, vec![], Some(Attack::OddLayout), done_tx, hold_rx);
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .unwrap();
    let got = got_rx.recv_timeout(Duration::from_secs(60)).expect("frame");
    assert!(got == odd_layout_frame(), "the frame differs");
    assert_eq!(bh.stats().tx_errors, 0);
    assert_eq!(br_be.stats().rx_errors, 0);
    drop(hold_tx);
}

#[test]
fn slot_crossing_its_page_disconnects_the_guest() {
    attack(Some(Attack::SlotCrossesPage), vec![], true);
}

#[test]
fn too_many_slots_disconnects_the_guest() {
    attack(Some(Attack::TooManySlots), vec![], true);
}

#[test]
fn runaway_request_producer_disconnects_the_guest() {
    attack(Some(Attack::RunawayReqProd), vec![], true);
}

#[test]
fn bad_queue_count_and_no_rx_copy_are_refused() {
    attack(None, vec![("multi-queue-num-queues", "99".into())], true);
    attack(None, vec![("request-rx-copy", String::new())], true);
    attack(None, vec![("tx-ring-ref", "0x10".into())], true);
    attack(None, vec![("event-channel", "4294967296".into())], true);
}

#[test]
fn bad_rx_grefs_fail_those_frames_only() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (dh, bh) = guest_with_vif(&hv, &br, "hostile", 9, NetConfig::default());
    let (done_tx, done_rx) = channel();
    let (hold_tx, hold_rx) = channel();
    hostile_guest(&hv, dh, vec![], Some(Attack::BadRxGrefs), done_tx, hold_rx);
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .unwrap();
    wait_until("connected", 10, || bh.connected());
    // A good guest sends to the hostile one (flooded: unknown MAC).
    let (dg, _bg) = guest_with_vif(&hv, &br, "good", 1, NetConfig::default());
    let rg = run_guest(&hv, dg, Config::default(), |dev, _| {
        for n in 0..10u8 {
            send_meta(
                dev,
                &ip_frame(mac(9), mac(1), false, false, 300, n),
                TxMeta::default(),
            )
            .unwrap();
        }
    });
    rg.recv_timeout(Duration::from_secs(60)).unwrap();
    wait_until("rx errors", 30, || bh.stats().rx_errors >= 10);
    assert!(bh.connected());
    drop(hold_tx);
}

/// Review defect (issue 16): a second vif with a MAC already on the bridge is refused,
/// naming both vifs; another bridge takes it, and the MAC is free again once the first
/// vif is destroyed.
#[test]
fn duplicate_mac_on_one_bridge_is_refused_naming_both() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (_a, be_a) = guest_with_vif(&hv, &br, "a", 1, NetConfig::default());
    let b = domain(&hv, "b", 48);
    let cfg = NetConfig {
        mac: Some(be_a.mac()),
        ..NetConfig::default()
    };
    let e = NetBackend::start(&hv, b.id(), br.clone(), cfg.clone()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&be_a.vif_name())
            && msg.contains(&format!("vif{}.0", b.id().0))
            && msg.contains(&be_a.mac().to_string())
            && msg.contains("xenbr0"),
        "{msg}"
    );
    let other = Bridge::new("xenbr1");
    let be_other = NetBackend::start(&hv, b.id(), other, cfg.clone()).unwrap();
    be_other.destroy();
    be_a.destroy();
    let be_b = NetBackend::start(&hv, b.id(), br, cfg).unwrap();
    be_b.destroy();
}
