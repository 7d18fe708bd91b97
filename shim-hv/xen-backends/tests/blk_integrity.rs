//! Data integrity end to end: xbd-front in an in-process guest against shim-hv's
//! blkback on a file, a randomized read/write/flush/discard workload checked against
//! an in-memory model of the disk, with every feature on, every feature off, and
//! mixed subsets.

mod blk_util;

use blk_util::*;
use xbd_front::{Config, Error, Features, FlushKind, OpKind};
use xen_backends::blk::BlkOffer;

const DISK: usize = 4 << 20;

fn all_off() -> BlkOffer {
    BlkOffer {
        max_queues: 0,
        max_ring_page_order: 0,
        max_indirect_segments: 0,
        persistent: false,
        flush: false,
        barrier: false,
        discard: false,
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
    assert!(f.indirect && f.persistent);
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
    assert!(!f.indirect && !f.persistent);
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
            flush: false,
            persistent: false,
            discard: false,
            ..BlkOffer::default()
        },
        Config::default(),
        512,
        false,
        3,
    );
    assert_eq!(f.flush, Some(FlushKind::Barrier));
    assert!(f.indirect && !f.persistent && f.discard.is_none());
    // Persistent without indirect, discard, frontend declines persistent grants.
    let f = workload(
        BlkOffer {
            max_indirect_segments: 0,
            barrier: false,
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
    assert!(!f.indirect && !f.persistent && f.discard.is_some());
}

#[test]
fn sector_size_4096_and_o_direct() {
    let f = workload(BlkOffer::default(), Config::default(), 4096, true, 5);
    assert!(f.persistent);
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
    assert!(f.persistent && f.indirect);
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
    assert!(!f.persistent && !f.indirect);
}
