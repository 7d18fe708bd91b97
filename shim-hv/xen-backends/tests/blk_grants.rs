//! Grants of the block frontend against the real blkback (docs/hostile-input.md G4, G5).
//!
//! - G4: whatever `trusted` says (absent, 0, 1, garbage; in the frontend's node or
//!   the backend's), the frontend grants only its own bounce pages: a caller buffer
//!   that lives in guest memory (so it *could* be granted) never is, and the grants
//!   made are the same as without the key.
//! - G5: a grant table with only `k` free refs during connect: the connect fails with
//!   a typed error, every ref it took is given back, the device is not half
//!   connected, and a later connect with refs available works.

mod blk_util;

use std::cell::RefCell;
use std::sync::mpsc::channel;
use std::time::Duration;

use blk_util::*;
use hypercall::gnttab::{Error as GrantError, GrantTable};
use hypercall::{DomId, Gfn, GrantRef, Platform, PAGE_SIZE};
use xbd_front::{Config, Device, Error, Grants, State};
use xen_model::inproc::InProcGuest;
use xenbus::Xenstore;
use xenstored::TxId;

/// Records every grant the device makes: (gfn, read-only).
struct Recorder<'a> {
    table: &'a Table,
    granted: RefCell<Vec<(u64, bool)>>,
}

impl Grants for Recorder<'_> {
    fn grant(&self, domid: DomId, gfn: Gfn, readonly: bool) -> Result<GrantRef, GrantError> {
        self.granted.borrow_mut().push((gfn.0, readonly));
        self.table.grant_access(domid, gfn, readonly)
    }

    fn end(&self, gref: GrantRef) -> Result<(), GrantError> {
        self.table.end_access(gref)
    }
}

const BUF_PAGES: usize = 16;

/// What one G4 run saw: the caller buffers' gfns and every grant made.
struct Trace {
    caller_gfns: Vec<u64>,
    granted: Vec<(u64, bool)>,
}

/// Connects with `trusted` set as given, writes 64 KiB from a buffer in guest memory
/// and reads it back into another one, closes.
fn g4_run(trusted: Option<&'static [u8]>, persistent: bool) -> Trace {
    let dir = TempDir::new("g4");
    let img = image(&dir, "g4.img", 1 << 20);
    let hv = hv();
    let dom = domain(&hv, "g4", 32);
    let be = backend(&hv, &dom, file_cfg(&img));
    if let Some(v) = trusted {
        let xs = hv.xenstored().client(0);
        let fe = format!("/local/domain/{}/device/vbd/{XVDA}/trusted", dom.id().0);
        xs.write(TxId::NONE, &fe, v).unwrap();
        xs.write(TxId::NONE, &format!("{}/trusted", be.backend_path()), v)
            .unwrap();
    }
    let (tx, rx) = channel();
    hv.spawn_guest(dom, move |g| {
        let p: &InProcGuest = &g;
        let table: Box<Table> = Box::new(GrantTable::setup(p, (NG / 512) as u32).unwrap());
        let rec = Recorder {
            table: &table,
            granted: RefCell::new(Vec::new()),
        };
        let mut xs = Xenstore::from_hvm_params(p).unwrap();
        let cfg = Config {
            persistent,
            ..Config::default()
        };
        let mut d: Box<Device<&InProcGuest, &Recorder<'_>, 16, 32>> =
            Box::new(Device::new(p, &rec, XVDA, cfg).unwrap());
        d.connect(&mut xs).unwrap();
        // Caller buffers in guest RAM: they have gfns and could be granted.
        let src = p.alloc_pages(BUF_PAGES).unwrap();
        let dst = p.alloc_pages(BUF_PAGES).unwrap();
        let caller_gfns: Vec<u64> = [src, dst]
            .iter()
            .flat_map(|b| {
                (0..BUF_PAGES).map(move |i| {
                    // Stays inside the allocation (BUF_PAGES pages).
                    let a = b.as_ptr().wrapping_add(i * PAGE_SIZE);
                    p.virt_to_gfn(std::ptr::NonNull::new(a).unwrap()).unwrap().0
                })
            })
            .collect();
        let len = BUF_PAGES * PAGE_SIZE;
        // SAFETY: two fresh allocations of BUF_PAGES pages each, owned by this test
        // alone (never granted by it), alive until the guest ends.
        let (s, t) = unsafe {
            (
                std::slice::from_raw_parts_mut(src.as_ptr(), len),
                std::slice::from_raw_parts_mut(dst.as_ptr(), len),
            )
        };
        for (i, b) in s.iter_mut().enumerate() {
            *b = (i * 13 + 5) as u8;
        }
        d.write(8, &[&s[..]], T).unwrap();
        d.read(8, &mut [&mut t[..]], T).unwrap();
        assert!(s == t, "data read back differs");
        assert_eq!(d.close(&mut xs).unwrap(), 0);
        assert_eq!(table.in_use(), 0);
        let granted = rec.granted.borrow().clone();
        let _ = tx.send(Trace {
            caller_gfns,
            granted,
        });
    })
    .unwrap();
    let trace = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    be.destroy();
    trace
}

/// G4: `trusted` (absent, 0, 1, garbage, anywhere) changes nothing: only bounce pages
/// are granted, never the caller's buffers, and the grants are those made without it.
#[test]
fn g4_trusted_key_never_stops_bouncing() {
    for persistent in [false, true] {
        let base = g4_run(None, persistent);
        assert!(!base.granted.is_empty());
        let shape = |t: &Trace| {
            let ro: Vec<bool> = t.granted.iter().map(|g| g.1).collect();
            let mut distinct: Vec<u64> = t.granted.iter().map(|g| g.0).collect();
            distinct.sort_unstable();
            distinct.dedup();
            (ro, distinct.len())
        };
        for v in [&b"1"[..], b"0", b"garbage", b""] {
            let t = g4_run(Some(v), persistent);
            for (gfn, _) in &t.granted {
                assert!(
                    !t.caller_gfns.contains(gfn),
                    "trusted={:?}: caller buffer gfn {gfn:#x} was granted",
                    String::from_utf8_lossy(v)
                );
            }
            assert_eq!(
                shape(&t),
                shape(&base),
                "trusted={:?} (persistent {persistent}) changed the grants",
                String::from_utf8_lossy(v)
            );
        }
    }
}

/// Grants refs on a page of our own until only `free` are left; returns them.
fn hog(p: &InProcGuest, table: &Table, free: usize) -> Vec<GrantRef> {
    let page = p.alloc_pages(1).unwrap();
    let gfn = p.virt_to_gfn(page).unwrap();
    let n = table.capacity() - table.in_use() - free;
    (0..n)
        .map(|_| table.grant_access(DomId(0), gfn, true).unwrap())
        .collect()
}

/// G5: connect with the grant table nearly exhausted (`k` refs free for every
/// interesting `k`): a typed error, no ref left taken, the device not connected,
/// the backend not connected; then a connect with refs available works.
#[test]
fn g5_grant_exhaustion_during_connect_leaks_nothing() {
    for persistent in [true, false] {
        let dir = TempDir::new("g5");
        let img = image(&dir, "g5.img", 1 << 20);
        let data = std::fs::read(&img).unwrap();
        let hv = hv();
        let dom = domain(&hv, "g5", 32);
        let be = backend(&hv, &dom, file_cfg(&img));
        let (tx, rx) = channel();
        hv.spawn_guest(dom, move |g| {
            let p: &InProcGuest = &g;
            let table: Box<Table> = Box::new(GrantTable::setup(p, (NG / 512) as u32).unwrap());
            let mut xs = Xenstore::from_hvm_params(p).unwrap();
            let cfg = Config {
                persistent,
                ..Config::default()
            };
            let mut d: Box<Disk<'_>> = Box::new(Device::new(p, &*table, XVDA, cfg).unwrap());
            // How many refs a connect takes.
            d.connect(&mut xs).unwrap();
            let needed = table.in_use();
            assert_eq!(d.close(&mut xs).unwrap(), 0);
            assert_eq!(table.in_use(), 0);
            let mut ks: Vec<usize> = [0, 1, needed / 2, needed - 1]
                .into_iter()
                .filter(|&k| k < needed)
                .collect();
            ks.sort_unstable();
            ks.dedup();
            let mut failures = Vec::new();
            for k in ks {
                let held = hog(p, &table, k);
                let r = d.connect(&mut xs);
                failures.push((k, r, table.in_use() - held.len(), d.state()));
                for r in held {
                    table.end_access(r).unwrap();
                }
            }
            // Not half-connected: a connect with refs available works.
            d.connect(&mut xs).unwrap();
            let mut buf = vec![0u8; 8192];
            d.read(0, &mut [&mut buf[..]], T).unwrap();
            assert_eq!(d.close(&mut xs).unwrap(), 0);
            let _ = tx.send((needed, failures, buf, table.in_use()));
        })
        .unwrap();
        let (needed, failures, buf, in_use) = rx.recv_timeout(Duration::from_secs(300)).unwrap();
        assert!(needed >= 1, "a connect grants at least the ring");
        for (k, r, leaked, state) in failures {
            assert_eq!(
                r,
                Err(Error::Grant(GrantError::Exhausted)),
                "{k} of {needed} refs free (persistent {persistent})"
            );
            assert_eq!(leaked, 0, "{k} of {needed} refs free: refs left taken");
            assert_eq!(state, State::Disconnected, "{k} free");
        }
        assert_eq!(buf[..], data[..8192]);
        assert_eq!(in_use, 0);
        be.destroy();
    }
}
