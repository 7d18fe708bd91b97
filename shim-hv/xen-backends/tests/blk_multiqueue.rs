//! Block multi-queue end to end (xbd-front ↔ blkback), with Linux's keys and
//! layout: the backend offers `multi-queue-max-queues`; the frontend writes
//! `multi-queue-num-queues` = min(wanted, offered) and, for more than one queue,
//! each queue's `ring-ref` (or `ring-ref<j>` under the top-level
//! `ring-page-order`) and `event-channel` under `queue-<i>/` instead of the
//! top-level keys. With one queue the classic layout stays (backends without
//! multi-queue). A bogus or huge offer is clamped.

mod blk_util;

use std::sync::Arc;

use blk_util::*;
use hypercall::gnttab::GrantTable;
use xbd_front::{Config, Device, Features};
use xen_backends::blk::{BlkBackend, BlkOffer};
use xen_model::inproc::InProcGuest;
use xen_model::{Domain, Hypervisor};
use xenbus::Xenstore;
use xenstored::TxId;

/// What the frontend wrote in its directory, as (key relative to it, value),
/// sorted; only the ring keys.
fn frontend_ring_keys(hv: &Hypervisor, dom: &Domain) -> Vec<(String, String)> {
    let xs = hv.xenstored().client(0);
    let base = format!("/local/domain/{}/device/vbd/{XVDA}", dom.id().0);
    let mut out = Vec::new();
    let mut walk = vec![String::new()];
    while let Some(rel) = walk.pop() {
        let dir = if rel.is_empty() {
            base.clone()
        } else {
            format!("{base}/{rel}")
        };
        for name in xs.directory(TxId::NONE, &dir).unwrap_or_default() {
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let wanted = key.starts_with("queue-")
                || key.starts_with("ring-")
                || key == "event-channel"
                || key == "multi-queue-num-queues";
            if !wanted {
                continue;
            }
            let v = xs
                .read(TxId::NONE, &format!("{base}/{key}"))
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            if v.is_empty() {
                walk.push(key); // a directory (queue-N)
            } else {
                out.push((key, v));
            }
        }
    }
    out.sort();
    out
}

fn key_names(keys: &[(String, String)]) -> Vec<&str> {
    keys.iter().map(|(k, _)| k.as_str()).collect()
}

/// Writes the backend's `multi-queue-max-queues` by hand (before the guest
/// connects), e.g. a value blkback itself would never offer.
fn set_offer(hv: &Hypervisor, be: &BlkBackend, value: &str) {
    hv.xenstored()
        .client(0)
        .write(
            TxId::NONE,
            &format!("{}/multi-queue-max-queues", be.backend_path()),
            value.as_bytes(),
        )
        .unwrap();
}

/// Connects a guest wanting `want` queues to a backend offering `offer`, does a
/// little I/O through every queue, and returns what was negotiated, the
/// frontend's ring keys while connected, and the backend's queue count.
fn negotiate(
    offer: u32,
    raw_offer: Option<&str>,
    want: u32,
) -> (Features, Vec<(String, String)>, usize) {
    let dir = TempDir::new(&format!("mq{offer}-{want}"));
    let img = image(&dir, "disk.img", 1 << 20);
    let hv = hv();
    let dom = domain(&hv, "mq", 64);
    let mut bc = file_cfg(&img);
    bc.offer = BlkOffer {
        max_queues: offer,
        ..BlkOffer::default()
    };
    let be = Arc::new(backend(&hv, &dom, bc));
    if let Some(v) = raw_offer {
        set_offer(&hv, &be, v);
    }
    let cfg = Config {
        queues: want,
        ..Config::default()
    };
    let (hv2, dom2, be2) = (hv.clone(), dom.clone(), be.clone());
    let expected = std::fs::read(&img).unwrap();
    run_guest(&hv, dom, XVDA, cfg, move |d, _, _| {
        let f = d.features().unwrap();
        assert_eq!(d.queues(), f.queues as usize);
        assert_eq!(d.ports().count(), f.queues as usize);
        // A read through each queue (round-robin), checked.
        let mut bufs = vec![vec![0u8; 4096]; 2 * d.queues()];
        let mut seen = Vec::new();
        for (i, b) in bufs.iter_mut().enumerate() {
            let t = d.submit_read(i as u64 * 8, 4096).unwrap();
            seen.push(d.queue_of(t).unwrap());
            while !d.is_done(t).unwrap() {
                d.poll().unwrap();
            }
            d.finish(t, &mut [&mut b[..]]).unwrap();
            assert_eq!(b[..], expected[i * 4096..][..4096], "read {i}");
        }
        let mut want_seen: Vec<usize> = (0..d.queues()).chain(0..d.queues()).collect();
        want_seen.sort();
        seen.sort();
        assert_eq!(seen, want_seen, "every queue used");
        let keys = frontend_ring_keys(&hv2, &dom2);
        (f, keys, be2.queues())
    })
}

#[test]
fn backend_without_multi_queue_gets_the_classic_layout() {
    // No `multi-queue-max-queues` at all, and an offer of 1.
    for offer in [0, 1] {
        let (f, keys, be_queues) = negotiate(offer, None, 4);
        assert_eq!(f.queues, 1, "offer {offer}");
        assert_eq!(be_queues, 1);
        assert_eq!(
            key_names(&keys),
            ["event-channel", "ring-ref"],
            "offer {offer}: top-level keys only"
        );
    }
    // Wanting one queue keeps the classic layout whatever is offered.
    let (f, keys, _) = negotiate(4, None, 1);
    assert_eq!(f.queues, 1);
    assert_eq!(key_names(&keys), ["event-channel", "ring-ref"]);
}

#[test]
fn four_offered_two_wanted_gives_two_queues_with_queue_keys() {
    let (f, keys, be_queues) = negotiate(4, None, 2);
    assert_eq!(f.queues, 2);
    assert_eq!(be_queues, 2);
    assert_eq!(
        key_names(&keys),
        [
            "multi-queue-num-queues",
            "queue-0/event-channel",
            "queue-0/ring-ref",
            "queue-1/event-channel",
            "queue-1/ring-ref",
        ]
    );
    assert_eq!(keys[0].1, "2");
    // Distinct rings and event channels.
    assert_ne!(keys[1].1, keys[3].1);
    assert_ne!(keys[2].1, keys[4].1);
}

#[test]
fn bogus_or_huge_offers_are_clamped() {
    // Huge: clamped to what we want (and to xbd-front's MAX_QUEUES).
    let (f, _, be_queues) = negotiate(16, Some("18446744073709551615"), 3);
    assert_eq!((f.queues, be_queues), (3, 3));
    let (f, keys, _) = negotiate(16, Some("4294967296"), 64);
    assert_eq!(f.queues, xbd_front::features::MAX_QUEUES as u32);
    assert_eq!(
        keys.iter()
            .find(|(k, _)| k == "multi-queue-num-queues")
            .map(|(_, v)| v.as_str()),
        Some("8")
    );
    // Garbage and 0 read as no offer: one queue, classic layout.
    for raw in ["many", "0", "-2", ""] {
        let (f, keys, _) = negotiate(4, Some(raw), 4);
        assert_eq!(f.queues, 1, "{raw:?}");
        assert_eq!(key_names(&keys), ["event-channel", "ring-ref"], "{raw:?}");
    }
}

/// Multi-page rings per queue: `ring-page-order` stays at the top level, each
/// queue has `ring-ref0..`.
#[test]
fn multi_page_rings_per_queue() {
    let dir = TempDir::new("mqorder");
    let img = image(&dir, "disk.img", 1 << 20);
    let hv = hv();
    let dom = domain(&hv, "mqo", 64);
    let be = backend(&hv, &dom, file_cfg(&img));
    let expected = std::fs::read(&img).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (hv2, dom2) = (hv.clone(), dom.clone());
    hv.spawn_guest(dom, move |g| {
        let p: &InProcGuest = &g;
        let table: Box<Table> = Box::new(GrantTable::empty());
        table.setup_in_place(p, (NG / 512) as u32).unwrap();
        let mut xs = Box::new(Xenstore::unattached(p));
        xs.attach_hvm_params().unwrap();
        let cfg = Config {
            queues: 2,
            ..Config::default()
        };
        // 128 slots over two queues: 64 each, two ring pages.
        let mut d: Box<Device<&InProcGuest, &Table, 128, 4>> =
            Box::new(Device::unbound(p, &*table, cfg));
        d.bind(XVDA).unwrap();
        d.connect(&mut xs).unwrap();
        let f = d.features().unwrap();
        let keys = frontend_ring_keys(&hv2, &dom2);
        // 128 reads in flight at once, over both queues.
        let mut tags = Vec::new();
        for i in 0..128u64 {
            tags.push(d.submit_read(i, 512).unwrap());
        }
        for (i, t) in tags.into_iter().enumerate() {
            let mut b = [0u8; 512];
            while !d.is_done(t).unwrap() {
                d.poll().unwrap();
            }
            d.finish(t, &mut [&mut b[..]]).unwrap();
            assert_eq!(b[..], expected[i * 512..][..512]);
        }
        assert_eq!(d.close(&mut xs).unwrap(), 0);
        assert_eq!(table.in_use(), 0);
        let _ = tx.send((f, keys));
    })
    .unwrap();
    let (f, keys) = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .unwrap();
    assert_eq!((f.queues, f.ring_page_order, f.max_inflight), (2, 1, 64));
    assert_eq!(
        key_names(&keys),
        [
            "multi-queue-num-queues",
            "queue-0/event-channel",
            "queue-0/ring-ref0",
            "queue-0/ring-ref1",
            "queue-1/event-channel",
            "queue-1/ring-ref0",
            "queue-1/ring-ref1",
            "ring-page-order",
        ]
    );
    drop(be);
}

/// A stepped backend (no I/O threads) serves every queue on `step`.
#[test]
fn stepped_backend_serves_every_queue() {
    let dir = TempDir::new("mqstep");
    let img = image(&dir, "s.img", 1 << 20);
    let want = std::fs::read(&img).unwrap();
    let hv = Hypervisor::new(xen_model::HypervisorConfig {
        xenstored_inline: true,
        ..Default::default()
    });
    let dom = domain(&hv, "mqstep", 32);
    let mut cfg = file_cfg(&img);
    cfg.stepped = true;
    let be = backend(&hv, &dom, cfg);
    let g = InProcGuest::new(hv.clone(), dom);
    let p: &InProcGuest = &g;
    let table: Box<Table> = Box::new(GrantTable::setup(p, (NG / 512) as u32).unwrap());
    let mut xs = Xenstore::from_hvm_params(p).unwrap();
    let two = Config {
        queues: 2,
        ..Config::default()
    };
    let mut d: Box<Disk<'_>> = Box::new(Device::new(p, &*table, XVDA, two).unwrap());
    d.connect(&mut xs).unwrap();
    assert_eq!((d.queues(), be.queues()), (2, 2));
    let tags: Vec<_> = (0..4u64)
        .map(|i| d.submit_read(i * 8, 4096).unwrap())
        .collect();
    let queues: Vec<usize> = tags.iter().map(|&t| d.queue_of(t).unwrap()).collect();
    assert_eq!(queues, [0, 1, 0, 1]);
    assert_eq!(d.poll_nowait().unwrap(), 0, "nothing served before a step");
    assert_eq!(be.step(), Some(4), "both queues served by one step");
    assert_eq!(be.step(), Some(0));
    d.poll_nowait().unwrap();
    for (i, t) in tags.into_iter().enumerate() {
        assert!(d.is_done(t).unwrap());
        let mut buf = vec![0u8; 4096];
        d.finish(t, &mut [&mut buf[..]]).unwrap();
        assert_eq!(buf, want[i * 4096..][..4096]);
    }
    assert_eq!(d.close(&mut xs).unwrap(), 0);
    assert_eq!(be.queues(), 0);
    be.destroy();
}
