//! Hostile input end to end, the parts particular to shim-hv's netback and to
//! xennet-front facing it.
//!
//! Frontend side (docs/hostile-input.md rows 22, 23; rows 1-5 and 17-21 need a hostile
//! *backend* and are covered by xennet-front's unit tests with its fake backend):
//! a malformed or missing `mac` refuses the connection; an absurd
//! `multi-queue-max-queues` is clamped. Toolstack side: a MAC already on a bridge
//! refuses the second vif.
//!
//! The hostile *frontends* (bad grant refs, runt and inconsistent frames, bad extra
//! info, reused tx ids, a bad grant in a frame's tail, odd slot layouts, a slot
//! crossing its page, too many slots, a runaway producer index, bad connect keys,
//! bad rx grants) are xen-conformance's
//! `netback.*` catalogue, run against netback by `hostile_catalogue.rs`.

mod net_util;

use std::sync::mpsc::channel;

use hypercall::DomId;
use net_util::*;
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig, Offer};
use xen_model::Hypervisor;
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
