//! Grant-table semantics (v1, as Xen enforces them): dom0 mapping and copying of
//! guest grants, guest grant_table_op sub-ops, docs/hostile-input.md rows 10, 26, 42.

mod model_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hypercall::abi::errno::{EINVAL, ENOSYS};
use hypercall::abi::gnttab::{
    self as g, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
};
use hypercall::abi::{hypercall_nr as nr, memory};
use hypercall::{DomId, Gfn, GrantRef};
use model_util::{domain, hv, Phys, SCRATCH2};
use xen_model::{CopyDst, CopySrc, GrantError, GrantPtr};

/// Grant frame 0 lives at this gfn; data pages at 0x110...
const TABLE: u64 = 0x102;
const DATA: u64 = 0x110;

fn setup() -> (Arc<xen_model::Hypervisor>, Phys) {
    let hv = hv();
    let dom = domain(&hv, "g");
    let p = Phys::new(&hv, &dom);
    p.grant_frame(0, TABLE);
    (hv, p)
}

#[test]
fn writable_map_sets_and_clears_reading_writing() {
    let (hv, p) = setup();
    p.dom.memory().write(DATA << 12, b"ring page").unwrap();
    p.grant(TABLE, 8, 0, DATA, false);
    let m = hv.grant_map(p.id(), GrantRef(8), false).unwrap();
    assert_eq!(m.gfn(), Gfn(DATA));
    assert!(m.writable());
    let mut b = [0u8; 9];
    m.mem().read(0, &mut b);
    assert_eq!(&b, b"ring page");
    assert_eq!(m.mem().len(), 4096);
    m.mem().write(0, b"RING");
    let mut b = [0u8; 4];
    p.dom.memory().read(DATA << 12, &mut b).unwrap();
    assert_eq!(&b, b"RING", "the backend writes the guest's page");
    assert_eq!(
        p.flags(TABLE, 8),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
    );
    drop(m);
    assert_eq!(p.flags(TABLE, 8), GTF_PERMIT_ACCESS);
    assert_eq!(hv.grant_pins(p.id(), GrantRef(8)), 0);
}

#[test]
fn readonly_grant_refuses_writable_map() {
    // docs/hostile-input.md row 10: the backend may not get a writable mapping of a page granted
    // read-only.
    let (hv, p) = setup();
    p.grant(TABLE, 9, 0, DATA, true);
    let e = hv.grant_map(p.id(), GrantRef(9), false).unwrap_err();
    assert_eq!(e, GrantError::ReadOnly(GrantRef(9)));
    assert_eq!(e.status(), g::GNTST_GENERAL_ERROR);
    assert_eq!(
        p.flags(TABLE, 9),
        GTF_PERMIT_ACCESS | GTF_READONLY,
        "untouched"
    );
    let m = hv.grant_map(p.id(), GrantRef(9), true).unwrap();
    assert!(!m.writable());
    assert_eq!(
        p.flags(TABLE, 9),
        GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING
    );
    drop(m);
    assert_eq!(p.flags(TABLE, 9), GTF_PERMIT_ACCESS | GTF_READONLY);
}

#[test]
fn wrong_domain_not_granted_and_bad_refs_are_refused() {
    let (hv, p) = setup();
    p.grant(TABLE, 10, 5, DATA, false);
    assert_eq!(
        hv.grant_map(p.id(), GrantRef(10), true).unwrap_err(),
        GrantError::WrongDomain {
            gref: GrantRef(10),
            domid: 5
        }
    );
    // Flags 0 (never granted, or revoked).
    assert_eq!(
        hv.grant_map(p.id(), GrantRef(11), true).unwrap_err(),
        GrantError::NotGranted(GrantRef(11))
    );
    // Accept-transfer type, and sub-page bit: not mappable.
    let e = p.entry(TABLE, 12);
    e.store_u32(4, DATA as u32);
    e.store_u16(0, 2);
    assert!(hv.grant_map(p.id(), GrantRef(12), true).is_err());
    e.store_u16(0, GTF_PERMIT_ACCESS | 1 << 8);
    assert!(hv.grant_map(p.id(), GrantRef(12), true).is_err());
    // Row 42: refs outside the table.
    for r in [512u32, 4096, u32::MAX] {
        let err = hv.grant_map(p.id(), GrantRef(r), true).unwrap_err();
        assert_eq!(err, GrantError::BadGref(GrantRef(r)));
        assert_eq!(err.status(), g::GNTST_BAD_GNTREF);
    }
    // No such domain.
    assert_eq!(
        hv.grant_map(DomId(99), GrantRef(8), true)
            .unwrap_err()
            .status(),
        g::GNTST_BAD_DOMAIN
    );
}

#[test]
fn frame_outside_guest_ram_is_refused_and_flags_restored() {
    let (hv, p) = setup();
    for frame in [0u64, 0xff, 0x100 + 1024, 0xffff_ffff] {
        p.grant(TABLE, 13, 0, frame, false);
        let e = hv.grant_map(p.id(), GrantRef(13), false).unwrap_err();
        assert!(
            matches!(e, GrantError::BadFrame { .. }),
            "{frame:#x}: {e:?}"
        );
        assert_eq!(p.flags(TABLE, 13), GTF_PERMIT_ACCESS);
    }
}

#[test]
fn end_access_fails_while_mapped() {
    // docs/hostile-input.md row 26: the guest cannot revoke a grant while dom0 maps it.
    let (hv, p) = setup();
    p.grant(TABLE, 20, 0, DATA, false);
    let m1 = hv.grant_map(p.id(), GrantRef(20), false).unwrap();
    let m2 = hv.grant_map(p.id(), GrantRef(20), true).unwrap();
    assert_eq!(hv.grant_pins(p.id(), GrantRef(20)), 2);
    assert!(!p.end_access(TABLE, 20));
    drop(m1);
    // The read-only mapping still holds GTF_reading; GTF_writing went with m1.
    assert_eq!(p.flags(TABLE, 20), GTF_PERMIT_ACCESS | GTF_READING);
    assert!(!p.end_access(TABLE, 20));
    m2.unmap();
    assert!(p.end_access(TABLE, 20));
    assert_eq!(p.flags(TABLE, 20), 0);
    // Once revoked, mapping fails cleanly.
    assert_eq!(
        hv.grant_map(p.id(), GrantRef(20), true).unwrap_err(),
        GrantError::NotGranted(GrantRef(20))
    );
}

#[test]
fn mappings_are_send_and_keep_memory_alive_after_destroy() {
    let (hv, p) = setup();
    p.dom.memory().write(DATA << 12, b"still here").unwrap();
    p.grant(TABLE, 8, 0, DATA, true);
    let m = hv.grant_map(p.id(), GrantRef(8), true).unwrap();
    let id = p.id();
    drop(p);
    hv.destroy_domain(id).unwrap();
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 10];
        m.mem().read(0, &mut b);
        b
    });
    assert_eq!(&t.join().unwrap(), b"still here");
    assert_eq!(
        hv.grant_map(id, GrantRef(8), true).unwrap_err(),
        GrantError::NoSuchDomain(id)
    );
}

#[test]
fn grant_copy_semantics() {
    let (hv, p) = setup();
    p.grant(TABLE, 8, 0, DATA, false);
    p.grant(TABLE, 9, 0, DATA + 1, true);
    p.dom
        .memory()
        .write((DATA + 1) << 12, b"source data")
        .unwrap();
    let at = |gref, offset| GrantPtr {
        domid: p.id(),
        gref: GrantRef(gref),
        offset,
    };
    // grant → grant
    hv.grant_copy(CopySrc::Grant(at(9, 0)), CopyDst::Grant(at(8, 100)), 11)
        .unwrap();
    let mut b = [0u8; 11];
    p.dom.memory().read((DATA << 12) + 100, &mut b).unwrap();
    assert_eq!(&b, b"source data");
    // host → grant, grant → host
    hv.grant_copy(CopySrc::Host(b"hello"), CopyDst::Grant(at(8, 4091)), 5)
        .unwrap();
    let mut out = [0u8; 5];
    hv.grant_copy(CopySrc::Grant(at(8, 4091)), CopyDst::Host(&mut out), 5)
        .unwrap();
    assert_eq!(&out, b"hello");
    // Bounds: offset + len past the page, short host buffers.
    assert_eq!(
        hv.grant_copy(CopySrc::Host(b"hello!"), CopyDst::Grant(at(8, 4091)), 6),
        Err(GrantError::BadCopyArg)
    );
    assert_eq!(
        hv.grant_copy(
            CopySrc::Grant(at(9, 4000)),
            CopyDst::Host(&mut [0u8; 200]),
            200
        ),
        Err(GrantError::BadCopyArg)
    );
    assert_eq!(
        hv.grant_copy(CopySrc::Host(b"abc"), CopyDst::Grant(at(8, 0)), 4),
        Err(GrantError::BadCopyArg)
    );
    assert_eq!(
        hv.grant_copy(CopySrc::Grant(at(9, 0)), CopyDst::Host(&mut [0u8; 3]), 4),
        Err(GrantError::BadCopyArg)
    );
    // A read-only grant cannot be a destination.
    assert_eq!(
        hv.grant_copy(CopySrc::Host(b"x"), CopyDst::Grant(at(9, 0)), 1),
        Err(GrantError::ReadOnly(GrantRef(9)))
    );
    // Copies leave no pins behind.
    assert_eq!(p.flags(TABLE, 8), GTF_PERMIT_ACCESS);
    assert_eq!(p.flags(TABLE, 9), GTF_PERMIT_ACCESS | GTF_READONLY);
}

#[test]
fn racing_guest_cannot_wedge_or_crash_the_mapper() {
    let (hv, p) = setup();
    p.grant(TABLE, 8, 0, DATA, false);
    let stop = Arc::new(AtomicBool::new(false));
    let e = p.entry_region(TABLE, 8);
    let s2 = stop.clone();
    let flipper = std::thread::spawn(move || {
        let e = e.mem();
        let mut i = 0u32;
        while !s2.load(Ordering::Relaxed) {
            // A hostile guest rewriting domid/flags as fast as it can.
            e.store_u16(2, (i % 3) as u16);
            e.store_u32(
                4,
                if i.is_multiple_of(5) {
                    0xdead
                } else {
                    DATA as u32
                },
            );
            i = i.wrapping_add(1);
        }
    });
    for _ in 0..2000 {
        match hv.grant_map(p.id(), GrantRef(8), false) {
            Ok(m) => {
                assert!(p.dom.memory().contains_gfn(m.gfn()));
                drop(m);
            }
            Err(
                GrantError::WrongDomain { .. }
                | GrantError::Unstable(_)
                | GrantError::BadFrame { .. }
                | GrantError::NotGranted(_),
            ) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(hv.grant_pins(p.id(), GrantRef(8)), 0);
    assert_eq!(p.flags(TABLE, 8) & (GTF_READING | GTF_WRITING), 0);
}

#[test]
fn guest_grant_table_ops() {
    let hv = hv();
    let dom = domain(&hv, "g");
    let p = Phys::new(&hv, &dom);
    let mut q = g::QuerySize {
        dom: DomId::SELF.0,
        ..Default::default()
    };
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_QUERY_SIZE, &mut q, 1), 0);
    assert_eq!(
        (q.status, q.nr_frames, q.max_nr_frames),
        (g::GNTST_OKAY, 0, 64)
    );
    assert_eq!(
        p.op3(nr::GRANT_TABLE_OP, g::OP_QUERY_SIZE, &mut q, 2),
        -EINVAL
    );
    let mut v = g::SetVersion { version: 1 };
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_SET_VERSION, &mut v, 1), 0);
    let mut v = g::SetVersion { version: 2 };
    assert_eq!(
        p.op3(nr::GRANT_TABLE_OP, g::OP_SET_VERSION, &mut v, 1),
        -EINVAL
    );
    assert_eq!(v.version, 1, "the current version is reported back");

    // add_to_physmap grant frames: idx < max, RAM gfn, no v2 status frames.
    assert_eq!(
        p.add_to_physmap(memory::SPACE_GRANT_TABLE, 64, 0x103),
        -EINVAL
    );
    assert_eq!(
        p.add_to_physmap(memory::SPACE_GRANT_TABLE, 1 << 31, 0x103),
        -EINVAL
    );
    assert_eq!(
        p.add_to_physmap(memory::SPACE_GRANT_TABLE, 0, 0x50),
        -EINVAL
    );
    assert_eq!(
        p.add_to_physmap(memory::SPACE_GRANT_TABLE, 0, u64::MAX),
        -EINVAL
    );
    dom.memory().page(Gfn(0x103)).unwrap().fill(0, 4096, 0xAA);
    assert_eq!(p.add_to_physmap(memory::SPACE_GRANT_TABLE, 1, 0x103), 0);
    let mut b = [1u8; 16];
    dom.memory().read(0x103_000, &mut b).unwrap();
    assert_eq!(b, [0u8; 16], "a new grant frame starts zeroed");
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_QUERY_SIZE, &mut q, 1), 0);
    assert_eq!(q.nr_frames, 2);
    // Moving a frame carries its entries.
    p.grant(0x103, 5, 0, DATA, false);
    assert_eq!(p.add_to_physmap(memory::SPACE_GRANT_TABLE, 1, 0x104), 0);
    assert!(hv.grant_map(p.id(), GrantRef(512 + 5), true).is_ok());

    // setup_table: frame list of gfns (unmapped frames: INVALID).
    let mut s = g::SetupTable {
        dom: DomId::SELF.0,
        nr_frames: 3,
        frame_list: SCRATCH2,
        ..Default::default()
    };
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_SETUP_TABLE, &mut s, 1), 0);
    assert_eq!(s.status, g::GNTST_OKAY);
    let f: [u64; 3] = p.get(SCRATCH2);
    assert_eq!(f, [u64::MAX, 0x104, u64::MAX]);
    s.nr_frames = 65;
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_SETUP_TABLE, &mut s, 1), 0);
    assert_eq!(s.status, g::GNTST_GENERAL_ERROR);
    s.nr_frames = 1;
    s.frame_list = 0xdead_0000_0000;
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_SETUP_TABLE, &mut s, 1), 0);
    assert_eq!(s.status, g::GNTST_BAD_VIRT_ADDR);
    s.dom = 77;
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_SETUP_TABLE, &mut s, 1), 0);
    assert_eq!(s.status, g::GNTST_BAD_DOMAIN);

    // Guests do not map or copy grants in this kit.
    let mut m = g::MapGrantRef::default();
    assert_eq!(
        p.op3(nr::GRANT_TABLE_OP, g::OP_MAP_GRANT_REF, &mut m, 1),
        -ENOSYS
    );
    let mut c = g::Copy::default();
    assert_eq!(p.op3(nr::GRANT_TABLE_OP, g::OP_COPY, &mut c, 1), -ENOSYS);
    assert_eq!(p.raw(nr::GRANT_TABLE_OP, [999, 0, 0, 0, 0]), -ENOSYS);
}

/// `GrantPeer` (the backends' copy handle) makes the checks `grant_copy` makes,
/// copies between two guests, and leaves no flags behind.
#[test]
fn grant_peer_copies_between_guests_with_every_check() {
    let hv = hv();
    let (da, db) = (domain(&hv, "a"), domain(&hv, "b"));
    let (pa, pb) = (Phys::new(&hv, &da), Phys::new(&hv, &db));
    pa.grant_frame(0, TABLE);
    pb.grant_frame(0, TABLE);
    pa.grant(TABLE, 8, 0, DATA, true); // A's read-only "tx" page
    pb.grant(TABLE, 8, 0, DATA, false); // B's writable "rx" page
    pb.grant(TABLE, 9, 0, DATA + 1, true); // B's read-only page
    pb.grant(TABLE, 10, 5, DATA + 2, false); // granted to domain 5, not us
    da.memory()
        .write((DATA << 12) + 10, b"frame bytes")
        .unwrap();
    let (ga, gb) = (
        hv.grant_peer(pa.id()).unwrap(),
        hv.grant_peer(pb.id()).unwrap(),
    );
    assert_eq!(ga.domid(), pa.id());
    // Grant to grant, across domains.
    ga.copy_to(GrantRef(8), 10, &gb, GrantRef(8), 100, 11)
        .unwrap();
    let mut b = [0u8; 11];
    db.memory().read((DATA << 12) + 100, &mut b).unwrap();
    assert_eq!(&b, b"frame bytes");
    // Host to grant and back.
    gb.copy_in(GrantRef(8), 4090, b"tail!!").unwrap();
    let mut out = [0u8; 6];
    gb.copy_out(GrantRef(8), 4090, &mut out).unwrap();
    assert_eq!(&out, b"tail!!");
    // The checks.
    assert_eq!(
        gb.copy_in(GrantRef(8), 4091, b"tail!!"),
        Err(GrantError::BadCopyArg)
    );
    assert_eq!(
        ga.copy_to(GrantRef(8), 0, &gb, GrantRef(8), 4000, 200),
        Err(GrantError::BadCopyArg)
    );
    assert_eq!(
        gb.copy_in(GrantRef(9), 0, b"x"),
        Err(GrantError::ReadOnly(GrantRef(9)))
    );
    assert_eq!(
        ga.copy_to(GrantRef(8), 0, &gb, GrantRef(9), 0, 1),
        Err(GrantError::ReadOnly(GrantRef(9)))
    );
    assert!(matches!(
        gb.copy_out(GrantRef(10), 0, &mut out),
        Err(GrantError::WrongDomain { domid: 5, .. })
    ));
    assert_eq!(
        gb.copy_out(GrantRef(11), 0, &mut out),
        Err(GrantError::NotGranted(GrantRef(11)))
    );
    assert_eq!(
        gb.copy_out(GrantRef(1 << 20), 0, &mut out),
        Err(GrantError::BadGref(GrantRef(1 << 20)))
    );
    // No flags or pins left behind, on either side, after successes and failures.
    assert_eq!(pa.flags(TABLE, 8), GTF_PERMIT_ACCESS | GTF_READONLY);
    assert_eq!(pb.flags(TABLE, 8), GTF_PERMIT_ACCESS);
    assert_eq!(pb.flags(TABLE, 9), GTF_PERMIT_ACCESS | GTF_READONLY);
    // A dying domain refuses copies, even through a handle taken earlier.
    let id = pb.id();
    drop(pb);
    hv.destroy_domain(id).unwrap();
    assert_eq!(
        gb.copy_out(GrantRef(8), 0, &mut out),
        Err(GrantError::NoSuchDomain(id))
    );
    assert_eq!(
        ga.copy_to(GrantRef(8), 0, &gb, GrantRef(8), 0, 1),
        Err(GrantError::NoSuchDomain(id))
    );
    assert!(matches!(
        hv.grant_peer(id),
        Err(GrantError::NoSuchDomain(_))
    ));
}

/// A copy while the same grant is mapped keeps the mapping's flags (the copy must
/// not clear `GTF_reading`/`GTF_writing` that a live mapping needs), and copies
/// within one page (two grants of one frame) overlap safely.
#[test]
fn grant_peer_respects_live_mappings_and_overlap() {
    let (hv, p) = setup();
    p.grant(TABLE, 8, 0, DATA, false);
    p.grant(TABLE, 9, 0, DATA, false); // the same frame, twice
    let peer = hv.grant_peer(p.id()).unwrap();
    let m = hv.grant_map(p.id(), GrantRef(8), true).unwrap();
    assert_eq!(p.flags(TABLE, 8), GTF_PERMIT_ACCESS | GTF_READING);
    peer.copy_in(GrantRef(8), 0, b"while mapped").unwrap();
    assert_eq!(
        p.flags(TABLE, 8),
        GTF_PERMIT_ACCESS | GTF_READING,
        "the read-only mapping's flag stays; the copy's writing flag is gone"
    );
    drop(m);
    assert_eq!(p.flags(TABLE, 8), GTF_PERMIT_ACCESS);
    let data: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
    p.dom.memory().write(DATA << 12, &data).unwrap();
    peer.copy_to(GrantRef(8), 0, &peer, GrantRef(9), 8, 600)
        .unwrap();
    let mut back = vec![0u8; 608];
    p.dom.memory().read(DATA << 12, &mut back).unwrap();
    assert_eq!(&back[8..], &data[..], "memmove semantics");
    assert_eq!(p.flags(TABLE, 8), GTF_PERMIT_ACCESS);
    assert_eq!(p.flags(TABLE, 9), GTF_PERMIT_ACCESS);
}

/// A copy tells mapped refs from others (by a bitmap in front of the map of
/// mappings): through any ref, in any order of mapping and unmapping, a copy
/// of a mapped ref leaves the mapping's flag and a copy of an unmapped one
/// leaves none.
#[test]
fn grant_copies_see_mappings_of_every_ref() {
    let (hv, p) = setup();
    let refs = [8u32, 63, 64, 65, 127, 128, 511];
    for &r in &refs {
        p.grant(TABLE, r, 0, DATA, false);
    }
    let peer = hv.grant_peer(p.id()).unwrap();
    let mut maps = Vec::new();
    for (k, &r) in refs.iter().enumerate().rev() {
        maps.push((r, hv.grant_map(p.id(), GrantRef(r), true).unwrap()));
        // Mapped so far: refs[k..]; the rest are not.
        for (j, &q) in refs.iter().enumerate() {
            peer.copy_in(GrantRef(q), 0, b"x").unwrap();
            let want = if j >= k {
                GTF_PERMIT_ACCESS | GTF_READING
            } else {
                GTF_PERMIT_ACCESS
            };
            assert_eq!(p.flags(TABLE, q), want, "ref {q} with refs {k}.. mapped");
        }
    }
    // Unmap in another order (every other one first).
    maps.sort_by_key(|(r, _)| (r % 2, *r));
    while let Some((r, m)) = maps.pop() {
        drop(m);
        for &q in &refs {
            let mut b = [0u8; 1];
            peer.copy_out(GrantRef(q), 0, &mut b).unwrap();
            let mapped = maps.iter().any(|(x, _)| *x == q);
            let want = if mapped {
                GTF_PERMIT_ACCESS | GTF_READING
            } else {
                GTF_PERMIT_ACCESS
            };
            assert_eq!(p.flags(TABLE, q), want, "ref {q} after unmapping {r}");
        }
    }
}

/// A guest rewriting an entry as fast as it can while dom0 copies through it:
/// every copy either works on guest RAM or fails with a grant error; no flags stay.
#[test]
fn racing_guest_cannot_wedge_grant_peer_copies() {
    let (hv, p) = setup();
    p.grant(TABLE, 8, 0, DATA, false);
    let stop = Arc::new(AtomicBool::new(false));
    let e = p.entry_region(TABLE, 8);
    let s2 = stop.clone();
    let flipper = std::thread::spawn(move || {
        let e = e.mem();
        let mut i = 0u32;
        while !s2.load(Ordering::Relaxed) {
            e.store_u16(2, (i % 3) as u16);
            e.store_u32(
                4,
                if i.is_multiple_of(5) {
                    0xdead
                } else {
                    DATA as u32
                },
            );
            i = i.wrapping_add(1);
        }
    });
    let peer = hv.grant_peer(p.id()).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..2000 {
        let r = if i % 2 == 0 {
            peer.copy_in(GrantRef(8), 0, &buf)
        } else {
            peer.copy_out(GrantRef(8), 0, &mut buf)
        };
        match r {
            Ok(())
            | Err(
                GrantError::WrongDomain { .. }
                | GrantError::Unstable(_)
                | GrantError::BadFrame { .. }
                | GrantError::NotGranted(_),
            ) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(p.flags(TABLE, 8) & (GTF_READING | GTF_WRITING), 0);
}
