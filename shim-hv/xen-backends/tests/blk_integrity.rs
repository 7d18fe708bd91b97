//! Data integrity end to end: xbd-front in an in-process guest against shim-hv's
//! blkback on a file, a randomized read/write/flush/discard workload checked against
//! an in-memory model of the disk, with every feature on, every feature off, and
//! mixed subsets.

mod blk_util;

use blk_util::*;
use xbd_front::{Config, Error, FeatureFlags, Features, FlushKind, OpKind};
use xen_backends::blk::{BackendFlags, BlkOffer};

const DISK: usize = 4 << 20;

fn all_off() -> BlkOffer {
    BlkOffer {
        max_queues: 0,
        max_ring_page_order: 0,
        max_indirect_segments: 0,
        flags: BackendFlags::empty(),
    }
}

/// Runs the workload; returns what was negotiated.
fn workload(offer: BlkOffer, cfg: Config, sector_size: u32, direct: bool, seed: u64) -> Features {
    let dir = TempDir::new(&format!("int{seed}"));
    let img = image(&dir, "disk.img", DISK);
    let initial = std::fs::read(&img).unwrap();
    let hv = hv();
    let dom = domain(&hv, "int", 64);
    let mut bc = file_cfg(&img);
    bc.offer = offer;
    bc.sector_size = sector_size;
    bc.direct = direct;
    let be = backend(&hv, &dom, bc);
    let (model, features) = run_guest(&hv, dom, XVDA, cfg, move |d, _xs, _t| {
        let mut model = initial;
        let mut rng = Rng(seed);
        let info = *d.info().unwrap();
        let f = d.features().unwrap();
        let ss = info.sector_size as usize;
        assert_eq!(info.sectors as usize * ss, DISK);
        let cap = (DISK / ss) as u64;
        for round in 0..120 {
            match rng.below(10) {
                0..=2 => {
                    let n = 1 + rng.below((300 * 1024 / ss) as u64);
                    let lba = rng.below(cap - n);
                    let len = n as usize * ss;
                    let cut = rng.below(len as u64) as usize;
                    let mut a = vec![0u8; cut];
                    let mut b = vec![0u8; len - cut];
                    if len <= d.max_request_bytes() && rng.below(2) == 0 {
                        // Left in place: read it back in two pieces, and whole
                        // through the regions.
                        let rd = d.read_in_place(lba, len, T).unwrap();
                        assert_eq!(rd.len(), len);
                        rd.read(0, &mut a).unwrap();
                        rd.read(cut, &mut b).unwrap();
                        let mut whole = Vec::new();
                        for m in rd.regions() {
                            let mut c = vec![0u8; m.len()];
                            m.read(0, &mut c);
                            whole.extend_from_slice(&c);
                        }
                        let at = lba as usize * ss;
                        assert!(whole == model[at..at + len], "round {round}: regions");
                    } else {
                        d.read(lba, &mut [&mut a[..], &mut b[..]], T).unwrap();
                    }
                    a.extend_from_slice(&b);
                    let at = lba as usize * ss;
                    assert!(a == model[at..at + len], "round {round}: read {lba}+{n}");
                }
                3..=5 => {
                    let n = 1 + rng.below((300 * 1024 / ss) as u64);
                    let lba = rng.below(cap - n);
                    let len = n as usize * ss;
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    let cut = rng.below(len as u64) as usize;
                    d.write(lba, &[&data[..cut], &data[cut..]], T).unwrap();
                    let at = lba as usize * ss;
                    model[at..at + len].copy_from_slice(&data);
                }
                6 => match (d.flush(T), f.flush) {
                    (Ok(()), Some(_)) => {}
                    (Err(Error::NotSupported), None) => {}
                    (r, fl) => panic!("flush {r:?} with {fl:?}"),
                },
                7 => {
                    let n = 1 + rng.below(64);
                    let lba = rng.below(cap - n);
                    match (d.discard(lba, n, T), f.discard) {
                        (Ok(()), Some(_)) => {
                            let at = lba as usize * ss;
                            model[at..at + n as usize * ss].fill(0);
                        }
                        (Err(Error::NotSupported), None) => {}
                        (r, di) => panic!("discard {r:?} with {di:?}"),
                    }
                }
                _ => {
                    // Queue depth: several reads and writes in flight, regions apart,
                    // completed out of order.
                    let k = 2 + rng.below(6) as usize;
                    let mut tags = Vec::new();
                    for i in 0..k {
                        let region = cap / k as u64;
                        let n = 1 + rng.below((64 * 1024 / ss) as u64).min(region - 1);
                        let lba = region * i as u64 + rng.below(region - n);
                        let len = n as usize * ss;
                        let at = lba as usize * ss;
                        if rng.below(2) == 0 {
                            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                            match d.submit_write(lba, &[&data]) {
                                Ok(t) => {
                                    model[at..at + len].copy_from_slice(&data);
                                    tags.push((t, at, len));
                                }
                                Err(Error::Busy) => {}
                                Err(e) => panic!("{e}"),
                            }
                        } else {
                            match d.submit_read(lba, len) {
                                Ok(t) => tags.push((t, at, len)),
                                Err(Error::Busy) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    while !tags.is_empty() {
                        d.poll().unwrap();
                        while let Some(t) = d.next_completion() {
                            let i = tags.iter().position(|x| x.0 == t).unwrap();
                            let (t, at, len) = tags.swap_remove(i);
                            if d.describe(t).unwrap().0 == OpKind::Read {
                                let mut buf = vec![0u8; len];
                                if rng.below(2) == 0 {
                                    d.take_read(t).unwrap().read(0, &mut buf).unwrap();
                                } else {
                                    d.finish(t, &mut [&mut buf[..]]).unwrap();
                                }
                                assert!(buf == model[at..at + len], "round {round}: async read");
                            } else {
                                d.finish(t, &mut []).unwrap();
                            }
                        }
                        if !tags.is_empty() {
                            hypercall::Platform::wait(*d.platform());
                        }
                    }
                }
            }
        }
        let mut all = vec![0u8; DISK];
        d.read(0, &mut [&mut all[..]], T).unwrap();
        assert!(all == model, "full read back");
        (model, f)
    });
    be.destroy();
    let on_disk = std::fs::read(&img).unwrap();
    assert!(on_disk == model, "the image holds what the guest wrote");
    features
}

#[test]
fn every_feature_on() {
    let f = workload(BlkOffer::default(), Config::default(), 512, false, 1);
    assert_eq!(f.flags, FeatureFlags::INDIRECT | FeatureFlags::PERSISTENT);
    assert_eq!(f.flush, Some(FlushKind::FlushDiskCache));
    assert!(f.discard.is_some());
    assert_eq!(f.segments_per_request, 32);
}

#[test]
fn every_feature_off() {
    // Also the blocking helpers sleeping at once instead of polling first.
    let cfg = Config {
        persistent: false,
        indirect: false,
        poll_spin: std::time::Duration::ZERO,
        ..Config::default()
    };
    let f = workload(all_off(), cfg, 512, false, 2);
    assert_eq!(f.flags, FeatureFlags::empty());
    assert_eq!(f.flush, None);
    assert_eq!(f.discard, None);
    assert_eq!(f.ring_page_order, 0);
    assert_eq!(f.segments_per_request, 11);
}

#[test]
fn mixed_subsets() {
    // Barrier only, indirect without persistent.
    let f = workload(
        BlkOffer {
            flags: BackendFlags::BARRIER,
            ..BlkOffer::default()
        },
        Config::default(),
        512,
        false,
        3,
    );
    assert_eq!(f.flush, Some(FlushKind::Barrier));
    assert_eq!(f.flags, FeatureFlags::INDIRECT);
    assert!(f.discard.is_none());
    // Persistent without indirect, discard, frontend declines persistent grants.
    let f = workload(
        BlkOffer {
            max_indirect_segments: 0,
            flags: BlkOffer::default().flags - BackendFlags::BARRIER,
            ..BlkOffer::default()
        },
        Config {
            persistent: false,
            ..Config::default()
        },
        512,
        false,
        4,
    );
    assert_eq!(f.flags, FeatureFlags::empty());
    assert!(f.discard.is_some());
}

#[test]
fn sector_size_4096_and_o_direct() {
    let f = workload(BlkOffer::default(), Config::default(), 4096, true, 5);
    assert!(f.flags.contains(FeatureFlags::PERSISTENT));
}

/// The random workload over two queues (each with its own blkback thread, ring,
/// event channel and persistent grants), and over four with every feature off
/// but multi-queue.
#[test]
fn several_queues() {
    let cfg = Config {
        queues: 2,
        ..Config::default()
    };
    let f = workload(BlkOffer::default(), cfg, 512, false, 6);
    assert_eq!(f.queues, 2);
    assert_eq!(f.flags, FeatureFlags::INDIRECT | FeatureFlags::PERSISTENT);
    let f = workload(
        BlkOffer {
            max_queues: 4,
            ..all_off()
        },
        Config {
            queues: 4,
            ..Config::default()
        },
        512,
        false,
        7,
    );
    assert_eq!(f.queues, 4);
    assert_eq!(f.flags, FeatureFlags::empty());
}

/// Each offered flag goes to its own key (blkif.h's name; "1", every other flag key
/// "0"), and xbd-front reads it from there into what the connection uses. A
/// secure-discard offer is refused: punching a hole is no secure erase.
#[test]
fn each_offered_flag_is_written_to_and_read_from_its_key() {
    use xbd_front::Discard;
    use xenbus::Store;

    let keys = [
        "feature-persistent",
        "feature-flush-cache",
        "feature-barrier",
        "feature-discard",
    ];
    let hv = hv();
    let dir = TempDir::new("offerkeys");
    let img = image(&dir, "disk.img", 1 << 20);
    for (n, (key, flag)) in [
        (keys[0], BackendFlags::PERSISTENT),
        (keys[1], BackendFlags::FLUSH_CACHE),
        (keys[2], BackendFlags::BARRIER),
        (keys[3], BackendFlags::DISCARD),
    ]
    .into_iter()
    .enumerate()
    {
        let dom = domain(&hv, &format!("k{n}"), 32);
        let mut cfg = file_cfg(&img);
        cfg.offer.flags = flag;
        let be = backend(&hv, &dom, cfg);
        let path = be.backend_path().to_string();
        // Read as the frontend reads them, while connected.
        let (f, written) = run_guest(&hv, dom, XVDA, Config::default(), move |d, xs, _| {
            let written: Vec<(&str, String)> = keys
                .iter()
                .map(|&k| {
                    let mut buf = [0u8; 8];
                    let n = xs.read(&format!("{path}/{k}"), &mut buf).unwrap();
                    (k, String::from_utf8_lossy(&buf[..n]).into_owned())
                })
                .collect();
            (d.features().unwrap(), written)
        });
        for (other, value) in written {
            let want = if other == key { "1" } else { "0" };
            assert_eq!(value, want, "offer {key}: {other}");
        }
        let discard = flag.contains(BackendFlags::DISCARD).then_some(Discard {
            granularity: 512,
            alignment: 0,
            secure: false,
        });
        let flush = match flag {
            BackendFlags::FLUSH_CACHE => Some(FlushKind::FlushDiskCache),
            BackendFlags::BARRIER => Some(FlushKind::Barrier),
            _ => None,
        };
        let persistent = if flag == BackendFlags::PERSISTENT {
            FeatureFlags::PERSISTENT
        } else {
            FeatureFlags::empty()
        };
        assert_eq!(
            (f.flags - FeatureFlags::INDIRECT, f.flush, f.discard),
            (persistent, flush, discard),
            "offer {key}"
        );
        be.destroy();
    }
    let dom = domain(&hv, "secure", 32);
    let mut cfg = file_cfg(&img);
    cfg.offer.flags |= BackendFlags::DISCARD_SECURE;
    let err = xen_backends::blk::BlkBackend::start(&hv, dom.id(), cfg).unwrap_err();
    assert!(err.to_string().contains("discard-secure"), "{err}");
}
