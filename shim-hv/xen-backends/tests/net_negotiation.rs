//! Feature negotiation end to end, with every feature on and off on either side,
//! and the data path checked under each combination (offloads the receiver did not
//! ask for are resolved by the backend).

mod net_util;

use net_util::*;
use xen_backends::bridge::Bridge;
use xen_backends::net::{BackendFlags, FrontendFeatures, FrontendFlags, NetConfig, Offer};
use xennet_front::{csum, Config, Negotiated, NegotiatedFlags, RxMeta, TxMeta};

struct Outcome {
    neg_a: Negotiated,
    neg_b: Negotiated,
    fe_a: Option<FrontendFeatures>,
    fe_b: Option<FrontendFeatures>,
    /// What B received of A's test frames.
    got_b: Vec<(Vec<u8>, RxMeta)>,
    /// What A sent (frame, meta).
    sent_a: Vec<(Vec<u8>, TxMeta)>,
}

/// A sends a plain UDP frame, a checksum-blank TCP/IPv4 frame, a checksum-blank
/// UDP/IPv6 frame, and (if A negotiated GSO) one 20000-byte GSO TCP frame, then an
/// end marker per flow (IPv4, IPv6). B takes frames until it has both markers, then
/// confirms; A stays connected until then. No step depends on timing: the bounds are
/// hang guards that fail with a message.
fn run_pair(oa: Offer, ca: Config, ob: Offer, cb: Config) -> Outcome {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (da, ba) = guest_with_vif(
        &hv,
        &br,
        "a",
        1,
        NetConfig {
            offer: oa,
            ..NetConfig::default()
        },
    );
    let (db, bb) = guest_with_vif(
        &hv,
        &br,
        "b",
        2,
        NetConfig {
            offer: ob,
            ..NetConfig::default()
        },
    );
    let (a, b) = (mac(1), mac(2));
    let markers = vec![end_marker(b, a, false), end_marker(b, a, true)];
    let markers_b = markers.clone();
    let (a_up_tx, a_up_rx) = pipe::<()>(); // A connected, waiting for go
    let (b_up_tx, b_up_rx) = pipe::<()>(); // B connected and said hello
    let (go_a_tx, go_a_rx) = pipe::<()>(); // test → A: send
    let (go_b_tx, go_b_rx) = pipe::<()>(); // test → B: receive
    let (got_tx, got_rx) = pipe::<()>(); // B → A: all end markers arrived
    let rb = run_guest(&hv, db, cb, move |dev, _| {
        let neg = *dev.negotiated();
        let got = (|| {
            // Say hello so the bridge learns B.
            send_meta(
                dev,
                &ip_frame(xennet_front::Mac::BROADCAST, b, false, false, 10, 0),
                TxMeta::default(),
            )?;
            b_up_tx.send(()).map_err(|_| "test gone")?;
            go_b_rx
                .recv_timeout(END_GUARD * 2)
                .map_err(|e| format!("no go from the test: {e}"))?;
            let got = recv_until_end(dev, &markers_b)?;
            let _ = got_tx.send(());
            Ok::<_, String>(got)
        })();
        (neg, got)
    });
    let ra = run_guest(&hv, da, ca, move |dev, _| {
        let neg = *dev.negotiated();
        let mut sent = vec![
            (ip_frame(b, a, false, false, 500, 1), TxMeta::default()),
            (
                ip_frame(b, a, false, true, 1000, 2),
                TxMeta {
                    csum_blank: true,
                    ..TxMeta::default()
                },
            ),
            (
                ip_frame(b, a, true, false, 700, 3),
                TxMeta {
                    csum_blank: true,
                    ..TxMeta::default()
                },
            ),
        ];
        if neg.flags.contains(NegotiatedFlags::TX_GSO_TCPV4) {
            sent.push((
                ip_frame(b, a, false, true, 20000, 4),
                TxMeta {
                    gso_mss: Some(1448),
                    ..TxMeta::default()
                },
            ));
        }
        let done = (|| {
            a_up_tx.send(()).map_err(|_| "test gone")?;
            go_a_rx
                .recv_timeout(END_GUARD * 2)
                .map_err(|e| format!("no go from the test: {e}"))?;
            for (f, m) in &sent {
                send_meta(dev, f, *m)?;
            }
            for f in &markers {
                send_meta(dev, f, TxMeta::default())?;
            }
            // Stay connected until B has everything.
            wait_confirmed(&got_rx, "B")
        })();
        (neg, sent, done)
    });
    // Both vifs are connected now and stay so until B has A's frames: read what the
    // frontends asked for (netback forgets it when a frontend closes).
    let up = |rx: &std::sync::mpsc::Receiver<()>, who: &str| {
        rx.recv_timeout(END_GUARD * 2)
            .unwrap_or_else(|e| panic!("guest {who} did not come up: {e}"));
    };
    up(&b_up_rx, "B");
    up(&a_up_rx, "A");
    let fe_a = ba.frontend_features();
    let fe_b = bb.frontend_features();
    go_b_tx.send(()).expect("B waits for go");
    go_a_tx.send(()).expect("A waits for go");
    let guard = END_GUARD * 4;
    let (neg_b, got_b) = rb.recv_timeout(guard).expect("guest B ended");
    let got_b = got_b.unwrap_or_else(|e| panic!("B: {e}"));
    let (neg_a, sent_a, done_a) = ra.recv_timeout(guard).expect("guest A ended");
    done_a.unwrap_or_else(|e| panic!("A: {e}"));
    Outcome {
        neg_a,
        neg_b,
        fe_a,
        fe_b,
        got_b,
        sent_a,
    }
}

/// Checks that B got A's frames in a form B can use: every frame's data matches what
/// A sent (checksums filled in where they were blank), GSO frames either whole (B
/// took GSO) or as valid segments carrying the same payload. With several queues
/// frames of different flows may arrive in any order, so plain frames are matched
/// wherever they are; GSO segments (one flow) keep their order.
fn check_delivery(o: &Outcome) {
    let matches = |f: &[u8], m: &TxMeta, g: &[u8]| -> bool {
        if g.len() != f.len() {
            return false;
        }
        if m.csum_blank {
            let l4 = csum::locate(f).unwrap();
            csum::verify(g) == Some(true)
                && g[..l4.field] == f[..l4.field]
                && g[l4.field + 2..] == f[l4.field + 2..]
        } else {
            g == f
        }
    };
    let mut left: Vec<&(Vec<u8>, RxMeta)> = o.got_b.iter().collect();
    for (f, m) in o.sent_a.iter().filter(|(_, m)| m.gso_mss.is_none()) {
        let i = left
            .iter()
            .position(|(g, _)| matches(f, m, g))
            .unwrap_or_else(|| panic!("frame of {} bytes ({m:?}) not delivered intact", f.len()));
        left.remove(i);
    }
    for (f, _) in o.sent_a.iter().filter(|(_, m)| m.gso_mss.is_some()) {
        let l4 = csum::locate(&f[..]).unwrap();
        let payload = &f[l4.start + 20..];
        if o.fe_b.unwrap().flags.contains(FrontendFlags::GSO_TCPV4) {
            let (g, meta) = left.remove(0);
            assert_eq!(meta.gso, Some((1448, 1)));
            assert_eq!(&g[l4.start + 20..], payload);
        } else {
            let mut joined = Vec::new();
            while joined.len() < payload.len() {
                let (g, meta) = left.remove(0);
                assert!(meta.gso.is_none());
                assert!(g.len() <= 1514);
                assert_eq!(csum::verify(&g[..]), Some(true), "segment checksum");
                joined.extend_from_slice(&g[l4.start + 20..]);
            }
            assert_eq!(joined, payload);
        }
    }
    assert!(left.is_empty(), "no extra frames");
}

#[test]
fn everything_on() {
    let oa = Offer {
        max_queues: Some(4),
        ..Offer::default()
    };
    let c = Config {
        gso_tcpv4: true,
        gso_tcpv6: true,
        max_queues: 4,
        ..Config::default()
    };
    let o = run_pair(oa.clone(), c, oa, c);
    for n in [o.neg_a, o.neg_b] {
        assert_eq!(n.queues, 4);
        assert_eq!(n.flags, NegotiatedFlags::all());
        assert_eq!(n.max_tx_frame, 65535);
    }
    for fe in [o.fe_a.unwrap(), o.fe_b.unwrap()] {
        assert_eq!(
            fe,
            FrontendFeatures {
                flags: FrontendFlags::all() - FrontendFlags::NO_CSUM_OFFLOAD,
                queues: 4,
                split: true
            }
        );
    }
    check_delivery(&o);
    // With offload on both sides blank checksums travel as such and B's frontend
    // completes them.
    assert_eq!(
        o.got_b
            .iter()
            .filter(|(_, m)| m.csum_blank && m.csum_completed)
            .count(),
        2
    );
}

#[test]
fn backend_offers_nothing() {
    let off = Offer {
        flags: BackendFlags::RX_COPY | BackendFlags::NO_CSUM_OFFLOAD,
        max_queues: None,
    };
    let c = Config {
        gso_tcpv4: true,
        max_queues: 4,
        ..Config::default()
    };
    let o = run_pair(off.clone(), c, off, c);
    for n in [o.neg_a, o.neg_b] {
        assert_eq!(n.queues, 1);
        // Only our own side's choices are left.
        assert_eq!(n.flags, NegotiatedFlags::RX_SG | NegotiatedFlags::RX_NOTIFY);
        assert_eq!(n.max_tx_frame, 1514);
    }
    let fe = o.fe_b.unwrap();
    assert!(!fe.split && fe.queues == 1);
    check_delivery(&o);
    // A computed the checksums itself: nothing arrives checksum-blank.
    assert!(o.got_b.iter().all(|(_, m)| !m.csum_blank));
}

#[test]
fn frontend_asks_for_nothing() {
    let c = Config {
        sg: false,
        rx_csum_offload: false,
        ipv6_csum_offload: false,
        tx_csum_offload: false,
        gso_tcpv4: false,
        gso_tcpv6: false,
        rx_notify: false,
        split_event_channels: false,
        max_queues: 1,
        ..Config::default()
    };
    let o = run_pair(Offer::default(), c, Offer::default(), c);
    let fe = o.fe_b.unwrap();
    assert_eq!(
        fe,
        FrontendFeatures {
            flags: FrontendFlags::NO_CSUM_OFFLOAD,
            queues: 1,
            split: false
        }
    );
    // Only MULTI_QUEUE is left (the backend offers multi-queue: the key is written).
    assert_eq!(o.neg_a.flags, NegotiatedFlags::MULTI_QUEUE);
    check_delivery(&o);
}

/// A uses every offload, B none: the backend segments A's GSO frame and fills in
/// blank checksums for B.
#[test]
fn mixed_offloads_are_resolved_by_the_backend() {
    let ca = Config {
        gso_tcpv4: true,
        ..Config::default()
    };
    let cb = Config {
        rx_csum_offload: false,
        ipv6_csum_offload: false,
        gso_tcpv4: false,
        ..Config::default()
    };
    let o = run_pair(Offer::default(), ca, Offer::default(), cb);
    assert!(o
        .neg_a
        .flags
        .contains(NegotiatedFlags::TX_GSO_TCPV4 | NegotiatedFlags::TX_CSUM_IPV4));
    let fe_b = o.fe_b.unwrap();
    assert!(!fe_b.flags.contains(FrontendFlags::GSO_TCPV4));
    assert!(!fe_b.csum_blank_ok(false) && !fe_b.csum_blank_ok(true));
    check_delivery(&o);
    assert!(o
        .got_b
        .iter()
        .all(|(_, m)| !m.csum_blank && m.gso.is_none()));
    assert!(o.got_b.len() > 10, "GSO frame arrived as segments");
}

/// Without `feature-rx-copy` our frontend refuses to connect.
#[test]
fn no_rx_copy_refuses() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let mut offer = Offer::default();
    offer.flags.remove(BackendFlags::RX_COPY);
    let (d, _b) = guest_with_vif(
        &hv,
        &br,
        "a",
        1,
        NetConfig {
            offer,
            ..NetConfig::default()
        },
    );
    let r = connect_result(&hv, d, Config::default());
    assert_eq!(r, Err(xennet_front::Error::NoRxCopy));
}

/// Each backend flag is read from its own key (netif.h's name) and from no other,
/// as Linux reads it: a non-zero decimal is on; "0", garbage and a missing key are
/// off. Run in a guest against shim-hv's xenstored, in a directory of its own.
#[test]
fn each_backend_flag_is_read_from_its_key() {
    use std::time::Duration;
    use xenbus::{Store, Xenstore};
    use xennet_front::read_backend_features;

    let hv = hv();
    let dom = domain(&hv, "reader", 16);
    let dir = format!("/local/domain/{}/data/offer", dom.id().0);
    let keys = [
        ("feature-rx-copy", BackendFlags::RX_COPY),
        ("feature-sg", BackendFlags::SG),
        ("feature-gso-tcpv4", BackendFlags::GSO_TCPV4),
        ("feature-gso-tcpv6", BackendFlags::GSO_TCPV6),
        ("feature-no-csum-offload", BackendFlags::NO_CSUM_OFFLOAD),
        ("feature-ipv6-csum-offload", BackendFlags::IPV6_CSUM_OFFLOAD),
        (
            "feature-split-event-channels",
            BackendFlags::SPLIT_EVENT_CHANNELS,
        ),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    let _h = hv
        .spawn_guest(dom, move |g| {
            let mut xs = Xenstore::from_hvm_params(&*g).expect("xenstore");
            let mut got = Vec::new();
            // Nothing written: nothing offered.
            xs.mkdir(&dir).unwrap();
            got.push(("", "", read_backend_features(&mut xs, &dir).unwrap()));
            for (key, _) in keys {
                for value in ["1", "2", "0", "yes", ""] {
                    // Every other flag key says "0".
                    for (other, _) in keys {
                        let v = if other == key { value } else { "0" };
                        xs.write(&format!("{dir}/{other}"), v.as_bytes()).unwrap();
                    }
                    got.push((key, value, read_backend_features(&mut xs, &dir).unwrap()));
                }
            }
            let _ = tx.send(got);
        })
        .expect("spawn guest");
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("guest done");
    assert_eq!(got.len(), 1 + keys.len() * 5);
    for (key, value, be) in got {
        let want = match keys.iter().find(|&&(k, _)| k == key) {
            Some(&(_, flag)) if value == "1" || value == "2" => flag,
            _ => BackendFlags::empty(),
        };
        assert_eq!(be.flags, want, "{key} = {value:?}");
        assert_eq!((be.max_queues, be.mtu), (None, None));
    }
}

/// netback writes each offered flag to its own key ("1") and every other flag key
/// as "0".
#[test]
fn each_offered_flag_is_written_to_its_key() {
    use xen_backends::net::NetBackend;
    use xenstored::TxId;

    let keys = [
        ("feature-rx-copy", BackendFlags::RX_COPY),
        ("feature-sg", BackendFlags::SG),
        ("feature-gso-tcpv4", BackendFlags::GSO_TCPV4),
        ("feature-gso-tcpv6", BackendFlags::GSO_TCPV6),
        ("feature-no-csum-offload", BackendFlags::NO_CSUM_OFFLOAD),
        ("feature-ipv6-csum-offload", BackendFlags::IPV6_CSUM_OFFLOAD),
        (
            "feature-split-event-channels",
            BackendFlags::SPLIT_EVENT_CHANNELS,
        ),
    ];
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let xs = hv.xenstored().client(0);
    for (n, &(key, flag)) in keys.iter().enumerate() {
        let dom = domain(&hv, &format!("w{n}"), 16);
        let cfg = NetConfig {
            mac: Some(mac(n as u8 + 1)),
            offer: Offer {
                flags: flag,
                max_queues: None,
            },
            ..NetConfig::default()
        };
        let be = NetBackend::start(&hv, dom.id(), br.clone(), cfg).unwrap();
        for (other, _) in keys {
            let got = xs.read(TxId::NONE, &format!("{}/{other}", be.backend_path()));
            let want = if other == key { "1" } else { "0" };
            assert_eq!(got.unwrap(), want.as_bytes(), "offer {key}: {other}");
        }
    }
}
