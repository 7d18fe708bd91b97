//! docs/hostile-input.md G5 for the network frontend: a grant table with only `k` free refs
//! during connect. The connect fails with a typed error, every ref it took is given
//! back, and a connect with refs available afterwards works (nothing half
//! registered with the backend).

mod net_util;

use std::sync::mpsc::channel;
use std::time::Duration;

use hypercall::gnttab::{Error as GrantError, GrantTable};
use hypercall::{DomId, GrantRef, Platform};
use net_util::*;
use xen_backends::bridge::Bridge;
use xen_backends::net::NetConfig;
use xen_model::inproc::InProcGuest;
use xenbus::Xenstore;
use xennet_front::{Config, Error, Mac, NetFront};

/// Grants refs on a page of our own until only `free` are left; returns them.
fn hog(p: &InProcGuest, table: &GrantTable<NG>, free: usize) -> Vec<GrantRef> {
    let page = p.alloc_pages(1).unwrap();
    let gfn = p.virt_to_gfn(page).unwrap();
    let n = table.capacity() - table.in_use() - free;
    (0..n)
        .map(|_| table.grant_access(DomId(0), gfn, true).unwrap())
        .collect()
}

#[test]
fn g5_grant_exhaustion_during_connect_leaks_nothing() {
    for queues in [1, 2] {
        let hv = hv();
        let br = Bridge::new("xenbr0");
        let (d, _be) = guest_with_vif(&hv, &br, "a", 1, NetConfig::default());
        let cfg = Config {
            max_queues: queues,
            ..Config::default()
        };
        let (tx, rx) = channel();
        let _h = hv
            .spawn_guest(d, move |g| {
                let p: &InProcGuest = &g;
                let table: Box<GrantTable<NG>> =
                    Box::new(GrantTable::setup(p, (NG / 512) as u32).unwrap());
                let mut xs = Xenstore::from_hvm_params(p).unwrap();
                let t = Duration::from_secs(5);
                // How many refs a connect takes.
                let mut dev =
                    NetFront::<_, _, 4>::connect(p, &*table, &mut xs, 0, cfg, STEP).unwrap();
                let needed = table.in_use();
                let _ = dev.close(&mut xs, t);
                drop(dev);
                assert_eq!(table.in_use(), 0);
                let mut ks: Vec<usize> = [0, 1, 2, needed / 2, needed - 1]
                    .into_iter()
                    .filter(|&k| k < needed)
                    .collect();
                ks.sort_unstable();
                ks.dedup();
                let mut failures = Vec::new();
                for k in ks {
                    let held = hog(p, &table, k);
                    let r = NetFront::<_, _, 4>::connect(p, &*table, &mut xs, 0, cfg, STEP).map(
                        |mut dev| {
                            let _ = dev.close(&mut xs, t);
                        },
                    );
                    failures.push((k, r, table.in_use() - held.len()));
                    for r in held {
                        table.end_access(r).unwrap();
                    }
                }
                // Nothing half registered: a connect with refs available works.
                let mut dev =
                    NetFront::<_, _, 4>::connect(p, &*table, &mut xs, 0, cfg, STEP).unwrap();
                let _ = dev.close(&mut xs, t);
                drop(dev);
                let _ = tx.send((needed, failures, table.in_use()));
            })
            .unwrap();
        let (needed, failures, in_use) = rx.recv_timeout(Duration::from_secs(300)).unwrap();
        assert!(needed > 2, "rings and rx buffers are granted");
        assert!(!failures.is_empty());
        for (k, r, leaked) in failures {
            assert!(
                matches!(r, Err(Error::Grant(GrantError::Exhausted))),
                "{k} of {needed} refs free ({queues} queues): {r:?}"
            );
            assert_eq!(leaked, 0, "{k} of {needed} refs free: refs left taken");
        }
        assert_eq!(in_use, 0);
    }
}

/// Item 3 of issue 17: a closed and dropped device leaves nothing behind: every
/// grant ended, every page (rings, tx and rx buffers, all queues) back with the
/// platform; and a failed connect that was dropped too.
#[test]
fn dropped_device_returns_grants_and_pages() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (d, _be) = guest_with_vif(&hv, &br, "drop", 1, NetConfig::default());
    let (tx, rx) = channel();
    let _h = hv
        .spawn_guest(d, move |g| {
            let p: &InProcGuest = &g;
            let table: Box<GrantTable<NG>> =
                Box::new(GrantTable::setup(p, (NG / 512) as u32).unwrap());
            let mut xs = Xenstore::from_hvm_params(p).unwrap();
            let before = p.free_page_count();
            let cfg = Config {
                max_queues: 2,
                ..Config::default()
            };
            let mut dev = NetFront::<_, _, 4>::connect(p, &*table, &mut xs, 0, cfg, STEP).unwrap();
            let f = ip_frame(Mac::BROADCAST, dev.mac(), false, false, 200, 1);
            send_meta(&mut dev, &f, xennet_front::TxMeta::default()).unwrap();
            let during = (p.free_page_count(), table.in_use());
            dev.close(&mut xs, Duration::from_secs(5)).unwrap();
            drop(dev);
            let closed = (p.free_page_count(), table.in_use());
            // A device that never connected (no backend at vif 7).
            let r = NetFront::<_, _, 4>::connect(p, &*table, &mut xs, 7, cfg, STEP).map(|_| ());
            let _ = tx.send((
                before,
                during,
                closed,
                r,
                p.free_page_count(),
                table.in_use(),
            ));
        })
        .unwrap();
    let (before, during, closed, r, after, grants) =
        rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert!(during.0 < before && during.1 > 0, "{during:?} of {before}");
    assert_eq!(
        closed,
        (before, 0),
        "pages and grants back after close + drop"
    );
    assert!(r.is_err());
    assert_eq!((after, grants), (before, 0), "failed connect left nothing");
}
