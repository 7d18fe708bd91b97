//! The block catalogue: one [`Case`] per hostile-backend row a frontend faces
//! (docs/hostile-input.md; which rows: docs/bad-input-coverage.md).

use std::cell::{RefCell, RefMut};
use std::collections::BTreeSet;
use std::rc::Rc;

use hypercall::abi::blkif::{self, Request, Response};
use hypercall::abi::ring as layout;
use hypercall::gnttab::GrantTable;
use hypercall::{GrantRef, Platform, PAGE_SIZE};

use super::peer::{state, Answer, BlockBackend, DISK_BYTES};
use super::{BlockDriver, Env, Make, Row, DEVID, GRANT_ENTRIES, NO_DISCARD};
use crate::xenstore::StoreServer;
use crate::{GrantObserver, HostPlatform};

/// A named case: what the backend does and what a correct driver does.
pub struct Case {
    /// Stable name (`blk.<what>`), with the docs/hostile-input.md rows it covers.
    pub name: &'static str,
    /// What the hostile backend does.
    pub peer: &'static str,
    /// What a correct driver does.
    pub expect: &'static str,
    setup: fn(&mut BlockBackend),
    run: fn(&mut Ctx<'_>) -> Result<String, String>,
}

/// The block cases, in a stable order.
pub fn catalogue() -> &'static [Case] {
    &CASES
}

/// Waits after which a driver counts as hung (fewer under Miri, where each wait
/// costs milliseconds).
const HUNG_AFTER: u64 = if cfg!(miri) { 2_000 } else { 100_000 };

/// What a case works with: the platform, the backend, the driver.
struct Ctx<'e> {
    host: &'e HostPlatform,
    be: Rc<RefCell<BlockBackend>>,
    d: Box<dyn BlockDriver + 'e>,
    grants: GrantObserver,
}

impl Ctx<'_> {
    /// The backend, borrowed: never hold it across a driver call.
    fn be(&self) -> RefMut<'_, BlockBackend> {
        self.be.borrow_mut()
    }

    fn connect(&mut self) -> Result<u64, String> {
        let cap = self
            .d
            .connect()
            .map_err(|e| format!("connect failed: {e}"))?;
        let st = self.be().state();
        if st != state::CONNECTED {
            return Err(format!(
                "connect returned but the backend is in state {st} ({:?})",
                self.be().log.violations
            ));
        }
        Ok(cap)
    }

    /// Reads `len` bytes at `off` and compares them with the backend's disk.
    fn check_read(&mut self, off: u64, len: usize) -> Result<(), String> {
        let mut buf = vec![0u8; len];
        self.d
            .read(off, &mut buf)
            .map_err(|e| format!("read of {len} at {off} failed: {e}"))?;
        let be = self.be();
        let want = be
            .disk
            .get(off as usize..off as usize + len)
            .ok_or("read past the disk")?;
        if buf[..] == *want {
            // One memcmp; the byte search below only runs on a mismatch.
            return Ok(());
        }
        match buf.iter().zip(want).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(format!(
                "wrong data: read of {len} at {off}: byte {i} is {:#x}, the disk has {:#x}",
                buf[i], want[i]
            )),
        }
    }

    /// Writes `len` bytes of a pattern (from `seed`) at `off`, checks the disk got
    /// them, reads them back.
    fn roundtrip(&mut self, off: u64, len: usize, seed: u8) -> Result<(), String> {
        let data = write_data(len, seed);
        self.d
            .write(off, &data)
            .map_err(|e| format!("write of {len} at {off} failed: {e}"))?;
        {
            let be = self.be();
            let disk = be.disk.get(off as usize..off as usize + len).unwrap_or(&[]);
            if disk != &data[..] {
                return Err(format!(
                    "write of {len} at {off}: the disk does not hold the data"
                ));
            }
        }
        self.check_read(off, len)
    }

    /// Requests seen so far.
    fn seen(&self) -> usize {
        self.be().log.seen.len()
    }

    /// Frontend violations the backend logged whose text contains any of `words`.
    fn violations(&self, words: &[&str]) -> Vec<String> {
        self.be()
            .log
            .violations
            .iter()
            .filter(|v| words.iter().any(|w| v.contains(w)))
            .cloned()
            .collect()
    }

    /// A read that must fail; the error is returned as evidence.
    fn read_must_fail(&mut self, off: u64, len: usize, why: &str) -> Result<String, String> {
        let mut buf = vec![0u8; len];
        match self.d.read(off, &mut buf) {
            Err(e) => Ok(e),
            Ok(()) => Err(format!("read succeeded {why}")),
        }
    }

    /// After a protocol violation: the next operation must fail too (the device
    /// is broken), never reach the backend's disk as if nothing happened.
    fn next_op_fails(&mut self) -> Result<String, String> {
        let before = self.seen();
        let mut buf = vec![0u8; 512];
        match self.d.read(4096, &mut buf) {
            Err(e) => Ok(e),
            Ok(()) => Err(format!(
                "the next read succeeded ({} more requests reached the backend): the device was not failed",
                self.seen() - before
            )),
        }
    }

    /// Grants the backend maps now, with their frames.
    fn mapped_frames(&self) -> BTreeSet<u64> {
        let be = self.be();
        be.mapped()
            .iter()
            .filter_map(|&r| self.grants.frame(r).map(|g| g.0))
            .collect()
    }

    /// Frames of the data grants of every request seen from index `from` on.
    fn data_frames_since(&self, from: usize) -> Vec<(u64, u64)> {
        let be = self.be();
        let mut out = Vec::new();
        for (_, req) in be.log.seen.iter().skip(from) {
            let segs: Vec<u32> = match req.operation {
                blkif::OP_READ | blkif::OP_WRITE => req
                    .seg
                    .iter()
                    .take(usize::from(req.nr_segments).min(blkif::MAX_SEGMENTS_PER_REQUEST))
                    .map(|s| s.gref)
                    .collect(),
                _ => Vec::new(),
            };
            for g in segs {
                if let Some(f) = self.grants.frame(GrantRef(g)) {
                    out.push((req.id, f.0));
                }
            }
        }
        out
    }
}

/// Runs one case on a fresh platform, store, device, grant table and backend.
pub(super) fn run_case(case: &Case, make: &mut Make<'_>) -> Row {
    let host = HostPlatform::new();
    let server = StoreServer::new(&host);
    let device = server.add_device("vbd", DEVID);
    let frames = (GRANT_ENTRIES * 8).div_ceil(PAGE_SIZE);
    let grants = match GrantTable::<GRANT_ENTRIES>::new(host.shared_pages(frames)) {
        Ok(g) => g,
        Err(e) => {
            return Row {
                name: case.name,
                pass: false,
                evidence: format!("harness: grant table: {e:?}"),
            }
        }
    };
    let Some(obs) = grants
        .frames()
        .filter(|f| host.region_of(*f).is_some())
        .map(|f| GrantObserver::new(&host, f))
    else {
        return Row {
            name: case.name,
            pass: false,
            evidence: "harness: grant table has no frames".into(),
        };
    };
    let mut b = BlockBackend::new(&host, obs.clone(), Box::new(device.clone()));
    (case.setup)(&mut b);
    b.probe();
    let be = Rc::new(RefCell::new(b));
    let peer_be = be.clone();
    host.add_peer(Box::new(move || {
        // A case holding the backend (never across a driver call) skips a turn.
        if let Ok(mut b) = peer_be.try_borrow_mut() {
            b.turn();
        }
    }));
    let h = host.clone();
    host.set_peer(Some(Box::new(move || {
        if h.waits() > HUNG_AFTER {
            panic!("the driver waited {HUNG_AFTER} times without giving up");
        }
    })));
    let env = Env {
        host: &host,
        grants: &grants,
        devid: DEVID,
        node: device.node(),
    };
    let r = crate::report::caught(|| {
        let d = make(&env).map_err(|e| format!("the driver could not be built: {e}"))?;
        let mut ctx = Ctx {
            host: &host,
            be: be.clone(),
            d,
            grants: obs,
        };
        (case.run)(&mut ctx)
    });
    host.set_peer(None);
    host.clear_peers();
    server.stop();
    Row::from_outcome(case.name, r)
}

fn nothing(_: &mut BlockBackend) {}

/// One page ring, no indirect descriptors, no persistent grants, one queue: the
/// smallest offer (requests are then small and easy to count).
fn plain(b: &mut BlockBackend) {
    b.offers.probe.insert("max-ring-page-order", None);
    b.offers.probe.insert("feature-max-indirect-segments", None);
    b.offers
        .probe
        .insert("feature-persistent", Some("0".into()));
    b.offers.probe.insert("multi-queue-max-queues", None);
}

/// Holds reads until [`release`]: the request hook keeps every read back.
fn hold_reads(b: &mut BlockBackend) {
    b.on_request = Some(Box::new(|_, r: &Request| {
        if data_op(r) == Some(blkif::OP_READ) {
            Answer::Hold
        } else {
            Answer::Serve
        }
    }));
}

/// The data direction of a read/write request (indirect ones too).
fn data_op(r: &Request) -> Option<u8> {
    match r.operation {
        blkif::OP_READ | blkif::OP_WRITE => Some(r.operation),
        blkif::OP_INDIRECT => Some(r.as_indirect().indirect_op),
        _ => None,
    }
}

/// Rewrites the response to the first read with `f`; later ones are left alone.
fn mutate_first_read(b: &mut BlockBackend, f: fn(Response) -> Vec<Response>) {
    let mut done = false;
    b.on_response = Some(Box::new(move |req: &Request, rsp| {
        if !done && data_op(req) == Some(blkif::OP_READ) {
            done = true;
            f(rsp)
        } else {
            vec![rsp]
        }
    }));
}

/// Connects and checks a first read works (the setup every protocol case needs).
fn connected(c: &mut Ctx<'_>) -> Result<(), String> {
    c.connect()?;
    c.check_read(0, 512)
}

/// Cases after one protocol violation on the first read: it fails, the next op
/// fails too.
fn violation_fails_read_and_device(c: &mut Ctx<'_>) -> Result<String, String> {
    c.connect()?;
    let e = c.read_must_fail(0, 4096, "with a response that breaks the protocol")?;
    let e2 = c.next_op_fails()?;
    Ok(format!("read failed ({e}); next read failed ({e2})"))
}

/// What [`Ctx::roundtrip`] writes: the disk's pattern shifted by `seed` and
/// inverted, so that it differs from what the disk held at every sector offset
/// (a write that never happened shows), and from other seeds (built a word at a
/// time: a loop per byte costs Miri dearly).
fn write_data(len: usize, seed: u8) -> Vec<u8> {
    let mut data = super::disk_pattern(len + usize::from(seed));
    data.drain(..usize::from(seed));
    for chunk in data.chunks_mut(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let v = !u64::from_le_bytes(w);
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// A byte-level summary of a buffer for evidence.
fn first_nonzero(buf: &[u8]) -> Option<(usize, u8)> {
    buf.iter().position(|&b| b != 0).map(|i| (i, buf[i]))
}

/// Event-index garbage, a value a turn (a table, not a generator: any values
/// do, none is an index a driver may trust).
const GARBAGE: [u32; 7] = [
    0x9e37_79b9,
    0xffff_ffff,
    0,
    0x8000_0000,
    0x7fff_fffe,
    0x0000_0031,
    0xdead_beef,
];

const MIB: usize = 1 << 20;
const _: () = assert!(DISK_BYTES == MIB);

static CASES: [Case; 39] = [
    Case {
        name: "blk.roundtrip",
        peer: "serves every request correctly (the baseline)",
        expect: "writes of 512 B, 4 KiB and 64 KiB land on the disk; reads return the disk's bytes",
        setup: nothing,
        run: |c| {
            let cap = c.connect()?;
            if cap != DISK_BYTES as u64 {
                return Err(format!("capacity {cap}, the disk has {DISK_BYTES} bytes"));
            }
            c.check_read(0, 4096)?;
            // Sector 25: one sector inside a page, not at its start.
            c.roundtrip(12800, 512, 1)?;
            c.roundtrip(8192, 4096, 2)?;
            c.roundtrip(65536, 65536, 3)?;
            c.check_read(MIB as u64 - 4096, 4096)?;
            Ok(format!("capacity {cap}; {} requests, data intact", c.seen()))
        },
    },
    Case {
        name: "blk.rsp_prod_overrun (row 1, R1)",
        peer: "answers the first read correctly but moves rsp_prod a whole ring past its response",
        expect: "the read fails and the device is failed (the next request fails too)",
        setup: |b| {
            hold_reads(b);
            b.on_turn = Some(Box::new(|b: &mut BlockBackend| {
                if b.release_held(false) > 0 {
                    let size = b.ring(0).map_or(32, |r| r.size());
                    let p = b.rsp_prod_pvt(0).unwrap_or(0);
                    b.set_rsp_prod(0, p.wrapping_add(size));
                    b.on_request = None;
                }
            }));
        },
        run: violation_fails_read_and_device,
    },
    Case {
        name: "blk.rsp_prod_backwards (row 2, R2)",
        peer: "answers the first read; answers the second correctly but publishes rsp_prod two behind the first",
        expect: "the second read fails and the device is failed",
        setup: |b| {
            let mut reads = 0;
            b.on_request = Some(Box::new(move |_, r: &Request| {
                if data_op(r) == Some(blkif::OP_READ) {
                    reads += 1;
                    if reads > 1 {
                        return Answer::Hold;
                    }
                }
                Answer::Serve
            }));
            b.on_turn = Some(Box::new(|b: &mut BlockBackend| {
                if b.release_held(false) > 0 {
                    let p = b.rsp_prod_pvt(0).unwrap_or(0);
                    // Slots keep the responses; only the index goes backwards.
                    b.set_rsp_prod(0, p.wrapping_sub(3));
                    b.on_request = None;
                }
            }));
        },
        run: |c| {
            connected(c)?;
            let e = c.read_must_fail(4096, 4096, "after rsp_prod moved backwards")?;
            let e2 = c.next_op_fails()?;
            Ok(format!("read failed ({e}); next read failed ({e2})"))
        },
    },
    Case {
        name: "blk.ring_laps (row 4, R3)",
        peer: "a one-page ring (32 slots), served correctly",
        expect: "more than two laps of the ring (slot indices wrap) keep every byte intact",
        setup: plain,
        run: |c| {
            c.connect()?;
            let ops = if cfg!(miri) { 40 } else { 80 };
            // A page and a sector apart: every request in another page, at
            // another sector within it (80 of them span 360 KiB).
            for (i, off) in (0..).step_by(4608).take(ops).enumerate() {
                c.roundtrip(off, 512, i as u8)?;
            }
            let ring = c.be().ring(0).map(|r| (r.size(), r.index(layout::REQ_PROD)));
            Ok(format!("{} requests; ring (slots, req_prod) {ring:?}", c.seen()))
        },
    },
    Case {
        name: "blk.garbage_event_indices (row 5, R6)",
        peer: "writes a different garbage req_event and rsp_event every turn",
        expect: "at most extra or missing notifications: every operation completes with the right data",
        setup: |b| {
            let mut garbage = GARBAGE.iter().copied().cycle();
            b.on_turn = Some(Box::new(move |b: &mut BlockBackend| {
                if let Some(r) = b.ring(0) {
                    r.set_index(layout::REQ_EVENT, garbage.next().unwrap_or(0));
                    r.set_index(layout::RSP_EVENT, garbage.next().unwrap_or(0));
                }
            }));
        },
        run: |c| {
            c.connect()?;
            for (i, off) in (0..).step_by(8192).take(12).enumerate() {
                c.roundtrip(off, 4096, i as u8)?;
            }
            c.d.flush().map_err(|e| format!("flush failed: {e}"))?;
            Ok(format!("{} requests completed under garbage event indices", c.seen()))
        },
    },
    Case {
        name: "blk.response_unknown_id (row 6, B1, B2)",
        peer: "answers the first read with an id never sent (the real id xor 0x5a5a5a5a)",
        expect: "the read fails; the device is failed",
        setup: |b| mutate_first_read(b, |r| vec![Response { id: r.id ^ 0x5a5a_5a5a, ..r }]),
        run: violation_fails_read_and_device,
    },
    Case {
        name: "blk.response_id_high_bits (row 6, B1)",
        peer: "answers the first read with the right low 32 bits of its id and garbage above",
        expect: "the read fails; the device is failed (the id is compared whole)",
        setup: |b| {
            mutate_first_read(b, |r| vec![Response { id: r.id ^ 0xdead_0000_0000_0000, ..r }])
        },
        run: violation_fails_read_and_device,
    },
    Case {
        name: "blk.duplicate_response (row 7, B4)",
        peer: "answers the first read twice (the same response in two slots)",
        expect: "the device is failed: the next request fails (the read itself may fail, or succeed with the right data)",
        setup: |b| mutate_first_read(b, |r| vec![r, r]),
        run: |c| {
            c.connect()?;
            let first = match c.check_read(0, 4096) {
                Ok(()) => "first read delivered".to_string(),
                Err(e) if e.starts_with("wrong data") => return Err(e),
                Err(e) => e,
            };
            let e = c.next_op_fails()?;
            Ok(format!("{first}; then: {e}"))
        },
    },
    Case {
        name: "blk.wrong_operation (row 8, B3)",
        peer: "answers the first read with operation WRITE",
        expect: "the read fails; the device is failed",
        setup: |b| {
            mutate_first_read(b, |r| vec![Response { operation: blkif::OP_WRITE, ..r }])
        },
        run: violation_fails_read_and_device,
    },
    Case {
        name: "blk.unknown_status (row 9, B5)",
        peer: "answers the first read with status 7 (no such status)",
        expect: "the read fails; so does the device",
        setup: |b| mutate_first_read(b, |r| vec![Response { status: 7, ..r }]),
        run: violation_fails_read_and_device,
    },
    Case {
        name: "blk.error_status (row 9, B5)",
        peer: "answers the first read with RSP_ERROR, then serves normally",
        expect: "that read fails with an I/O error; the next read works (the device stays up)",
        setup: |b| mutate_first_read(b, |r| vec![Response { status: blkif::RSP_ERROR, ..r }]),
        run: |c| {
            c.connect()?;
            let e = c.read_must_fail(0, 4096, "although the backend answered RSP_ERROR")?;
            c.check_read(4096, 4096)?;
            Ok(format!("read failed ({e}); the next read worked"))
        },
    },
    Case {
        name: "blk.write_grants_read_only (row 10, G6)",
        peer: "no persistent grants; checks the grant of every page given for a write",
        expect: "pages for writes are granted read-only (the backend cannot write into them)",
        setup: plain,
        run: |c| {
            // A read first: as many reads as writes would hide a count of the
            // wrong requests.
            connected(c)?;
            c.roundtrip(0, 4096, 9)?;
            c.roundtrip(65536, 16384, 10)?;
            let writes = c.be().log.seen.iter().filter(|(_, r)| data_op(r) == Some(blkif::OP_WRITE)).count();
            let bad = c.violations(&["granted writable"]);
            if writes == 0 {
                return Err("no write request reached the backend".into());
            }
            if !bad.is_empty() {
                return Err(bad.join("; "));
            }
            Ok(format!("{writes} write requests, every data grant read-only"))
        },
    },
    Case {
        name: "blk.sectors_zero (row 11, B8)",
        peer: "offers sectors = 0",
        expect: "connect fails with a clear error (no usable disk)",
        setup: |b| {
            b.offers.connect.insert("sectors", Some("0".into()));
        },
        run: |c| match c.d.connect() {
            Err(e) => Ok(format!("refused: {e}")),
            Ok(cap) => Err(format!("connected with capacity {cap}")),
        },
    },
    Case {
        name: "blk.sectors_overflow (row 11, B8)",
        peer: "offers sectors = 2^64-1 (capacity in bytes overflows)",
        expect: "connect fails with a clear error; no wrapped capacity",
        setup: |b| {
            b.offers.connect.insert("sectors", Some(u64::MAX.to_string()));
        },
        run: |c| match c.d.connect() {
            Err(e) => Ok(format!("refused: {e}")),
            Ok(cap) => Err(format!("connected with capacity {cap}")),
        },
    },
    Case {
        name: "blk.sectors_garbage (row 11)",
        peer: "offers sectors = \"lots\"",
        expect: "connect fails naming the key",
        setup: |b| {
            b.offers.connect.insert("sectors", Some("lots".into()));
        },
        run: |c| match c.d.connect() {
            Err(e) => Ok(format!("refused: {e}")),
            Ok(cap) => Err(format!("connected with capacity {cap}")),
        },
    },
    Case {
        name: "blk.sectors_change_absurd (row 11)",
        peer: "after connect rewrites sectors to 2^64-1, then to garbage",
        expect: "the old capacity stays in effect (a typed event or error at most); I/O still works",
        setup: nothing,
        run: |c| {
            let cap = c.connect()?;
            let mut seen = Vec::new();
            for v in [u64::MAX.to_string(), "lots".to_string()] {
                c.be().set_key("sectors", &v);
                c.host.wait();
                let ev = c.d.poll_events();
                seen.push(format!("{v}: {ev:?}"));
                if let Some(now) = c.d.capacity() {
                    if now != cap {
                        return Err(format!("capacity {cap} became {now} after sectors = {v}"));
                    }
                }
            }
            c.check_read(0, 4096)?;
            Ok(format!("capacity kept at {cap} ({})", seen.join("; ")))
        },
    },
    Case {
        name: "blk.sectors_grow (row 11)",
        peer: "after connect grows the disk to 2 MiB and rewrites sectors",
        expect: "a capacity-change event; the new space is readable",
        setup: nothing,
        run: |c| {
            let cap = c.connect()?;
            {
                let mut be = c.be();
                // The new half: another pattern (a copy, not a loop per byte).
                let more = super::disk_pattern(2 * MIB);
                be.disk.extend_from_slice(&more[MIB..]);
                be.set_key("sectors", &(2 * MIB / 512).to_string());
            }
            let mut ev = None;
            for _ in 0..5 {
                c.host.wait();
                ev = c.d.poll_events().map_err(|e| format!("poll_events: {e}"))?;
                if ev.is_some() {
                    break;
                }
            }
            let now = c.d.capacity();
            if now != Some(2 * MIB as u64) {
                return Err(format!("capacity {now:?} after the backend grew the disk (event {ev:?})"));
            }
            // The first page of the new space.
            c.check_read(MIB as u64, 4096)?;
            Ok(format!("{cap} -> {} bytes ({ev:?})", 2 * MIB))
        },
    },
    Case {
        name: "blk.huge_offers_clamped (row 12, B8)",
        peer: "offers max-ring-page-order 2^32-1, feature-max-indirect-segments 2^64-1, multi-queue-max-queues 2^32",
        expect: "clamped to the driver's limits: it connects with a sane ring and works",
        setup: |b| {
            b.offers.probe.insert("max-ring-page-order", Some(u32::MAX.to_string()));
            b.offers.probe.insert("feature-max-indirect-segments", Some(u64::MAX.to_string()));
            b.offers.probe.insert("multi-queue-max-queues", Some("4294967296".into()));
        },
        run: |c| {
            // An unclamped ring-page-order or queue count never gets this far: the
            // backend refuses one above its own limits (MAX_RING_PAGE_ORDER,
            // MAX_QUEUES) and the connect fails.
            c.connect()?;
            c.roundtrip(0, 65536, 4)?;
            let keys = c.be().log.frontend_keys.clone();
            let order = keys.get("ring-page-order").map_or("0", |v| v.as_str());
            let nq = keys.get("multi-queue-num-queues").map_or("1", |v| v.as_str());
            Ok(format!("ring-page-order {order}, {nq} queue(s), {} requests", c.seen()))
        },
    },
    Case {
        name: "blk.garbage_offers (row 12)",
        peer: "offers \"-1\", \"\" and \"lots\" for the ring, indirect, queue and persistent keys",
        expect: "garbage reads as absent: the driver connects with the basic protocol and works",
        setup: |b| {
            b.offers.probe.insert("max-ring-page-order", Some("-1".into()));
            b.offers.probe.insert("feature-max-indirect-segments", Some("lots".into()));
            b.offers.probe.insert("multi-queue-max-queues", Some("".into()));
            b.offers.probe.insert("feature-persistent", Some("yes".into()));
        },
        run: |c| {
            c.connect()?;
            c.roundtrip(8192, 8192, 5)?;
            Ok(format!("connected; frontend wrote {:?}", c.be().log.frontend_keys))
        },
    },
    Case {
        name: "blk.sector_size_below_512 (row 13, B8)",
        peer: "offers sector-size 256",
        expect: "connect fails with a clear error",
        setup: |b| {
            b.offers.connect.insert("sector-size", Some("256".into()));
        },
        run: |c| match c.d.connect() {
            Err(e) => Ok(format!("refused: {e}")),
            Ok(cap) => Err(format!("connected with capacity {cap}")),
        },
    },
    Case {
        name: "blk.sector_size_not_power_of_two (row 13, B8)",
        peer: "offers sector-size 1000",
        expect: "connect fails with a clear error",
        setup: |b| {
            b.offers.connect.insert("sector-size", Some("1000".into()));
        },
        run: |c| match c.d.connect() {
            Err(e) => Ok(format!("refused: {e}")),
            Ok(cap) => Err(format!("connected with capacity {cap}")),
        },
    },
    Case {
        name: "blk.sector_size_4096 (row 13)",
        peer: "offers sector-size 4096 (256 logical sectors)",
        expect: "capacity 1 MiB; requests still count 512-byte sectors: data lands where it should",
        setup: |b| {
            b.offers.connect.insert("sector-size", Some("4096".into()));
            b.offers.connect.insert("sectors", Some((DISK_BYTES / 4096).to_string()));
        },
        run: |c| {
            let cap = c.connect()?;
            if cap != DISK_BYTES as u64 {
                return Err(format!("capacity {cap}, expected {DISK_BYTES}"));
            }
            // Away from 0, where a driver counting 4096-byte sectors lands too.
            c.roundtrip(12288, 4096, 6)?;
            c.check_read(28672, 8192)?;
            Ok(format!("capacity {cap}; data at the right 512-byte sectors"))
        },
    },
    Case {
        name: "blk.never_answers (row 14, E3)",
        peer: "consumes every read and never answers; keeps its grants mapped",
        expect: "the read fails in bounded time; no grant the backend maps is ended or used again",
        setup: |b| {
            hold_reads(b);
            b.keep_grants_mapped = true;
        },
        run: |c| {
            c.connect()?;
            let before = c.host.waits();
            let e = c.read_must_fail(0, 4096, "although the backend never answered")?;
            let waited = c.host.waits() - before;
            let held = c.mapped_frames();
            let from = c.seen();
            // A write to elsewhere: it is held too (a read is not), and must not
            // reuse a page the backend still maps.
            c.be().on_request = None;
            let _ = c.d.write(65536, &[0x77; 4096]);
            let reused: Vec<_> = c.data_frames_since(from).into_iter().filter(|(_, f)| held.contains(f)).collect();
            if !reused.is_empty() {
                return Err(format!("a page the backend still maps was granted again: {reused:?}"));
            }
            Ok(format!("failed after {waited} waits ({e}); {} mapped pages left alone", held.len()))
        },
    },
    Case {
        name: "blk.late_answer_after_timeout (row 14)",
        peer: "holds the first read until the driver gave up on it, answers it late while serving the next",
        expect: "the late answer is absorbed (its slot and grants are released); the next reads return the right data",
        setup: hold_reads,
        run: |c| {
            c.connect()?;
            let e = c.read_must_fail(0, 4096, "although the backend held it")?;
            // Only that first read is held.
            c.be().on_request = None;
            // Answer it late, just as the next request is on its way: the backend
            // writes the held response before serving the next one.
            c.be().on_turn = Some(Box::new(|b: &mut BlockBackend| {
                if !b.held.is_empty() {
                    b.release_held(false);
                }
            }));
            c.check_read(8192, 4096)?;
            c.check_read(16384, 4096)?;
            c.check_read(0, 4096)?;
            Ok(format!("timed out ({e}); the late answer changed nothing"))
        },
    },
    Case {
        name: "blk.closing_with_requests_in_flight (row 15)",
        peer: "holds a read, then goes Closing; after the driver closes, comes back",
        expect: "the read fails; the driver reports the disconnect; a reconnect works",
        setup: hold_reads,
        run: |c| {
            c.connect()?;
            // Once: after Closing nothing is served, so nothing is held again.
            c.be().on_turn = Some(Box::new(|b: &mut BlockBackend| {
                if !b.held.is_empty() {
                    b.held.clear();
                    b.set_state(state::CLOSING);
                }
            }));
            let before = c.seen();
            let e = c.read_must_fail(0, 4096, "although the backend went Closing")?;
            if c.seen() == before {
                return Err(format!("read failed ({e}) before reaching the backend: nothing was in flight"));
            }
            let mut ev = None;
            for _ in 0..20 {
                ev = c.d.poll_events().unwrap_or_else(Some);
                if ev.is_some() {
                    break;
                }
                c.host.wait();
            }
            let Some(ev) = ev else {
                return Err(format!("read failed ({e}) but the disconnect was never reported"));
            };
            {
                let mut be = c.be();
                be.on_turn = None;
                be.on_request = None;
            }
            c.connect().map_err(|e| format!("reconnect: {e}"))?;
            c.check_read(0, 4096)?;
            Ok(format!("read failed ({e}); reported {ev:?}; reconnected"))
        },
    },
    Case {
        name: "blk.pages_hold_only_request_data (row 16, G3)",
        peer: "scans every page granted to it: outside the request's sectors of a write, and all of a read page",
        expect: "a page for a write holds that data and zeros; a page for a read holds only what this backend put or was given there",
        setup: nothing,
        run: |c| {
            c.connect()?;
            c.roundtrip(0, 4096, 0xee)?;
            // One sector; then three sectors starting two into a page.
            c.roundtrip(4096, 512, 0x11)?;
            c.roundtrip(21504, 1536, 0x22)?;
            c.check_read(0, 1024)?;
            c.check_read(40960, 12288)?;
            c.roundtrip(12288, 1024, 0x33)?;
            let bad = c.violations(&["outside the data", "was not given"]);
            let scanned = c.be().log.pages_scanned;
            if !bad.is_empty() {
                return Err(bad.join("; "));
            }
            Ok(format!("{scanned} granted pages scanned, nothing but the request's data"))
        },
    },
    Case {
        name: "blk.read_never_written (B9)",
        peer: "after a reconnect, answers reads OKAY without writing their data",
        expect: "no stale data shows: the read returns zeros (pages are zeroed for a new connection)",
        setup: nothing,
        run: |c| {
            c.connect()?;
            c.roundtrip(0, 16384, 0xa5)?;
            c.d.close().map_err(|e| format!("close: {e}"))?;
            c.connect().map_err(|e| format!("reconnect: {e}"))?;
            c.be().skip_read_data = true;
            let mut buf = vec![0xffu8; 16384];
            c.d.read(65536, &mut buf).map_err(|e| format!("read: {e}"))?;
            if let Some((i, b)) = first_nonzero(&buf) {
                return Err(format!("byte {i} of a read the backend never wrote is {b:#x} (stale data)"));
            }
            let bad = c.violations(&["was not given"]);
            if !bad.is_empty() {
                return Err(bad.join("; "));
            }
            Ok("16 KiB never written by the backend read as zeros".into())
        },
    },
    Case {
        name: "blk.flush_eopnotsupp (B6)",
        peer: "offers flush and barrier, answers the first flush EOPNOTSUPP",
        expect: "the flush fails; the feature is turned off: the next flush fails without reaching the backend",
        setup: |b| {
            b.on_response = Some(Box::new(|req: &Request, rsp| {
                if matches!(req.operation, blkif::OP_FLUSH_DISKCACHE | blkif::OP_WRITE_BARRIER) {
                    vec![Response { status: blkif::RSP_EOPNOTSUPP, ..rsp }]
                } else {
                    vec![rsp]
                }
            }));
        },
        run: |c| {
            c.connect()?;
            c.roundtrip(0, 4096, 1)?;
            let e = match c.d.flush() {
                Err(e) => e,
                Ok(()) => return Err("flush succeeded although the backend answered EOPNOTSUPP".into()),
            };
            let before = c.seen();
            let e2 = match c.d.flush() {
                Err(e) => e,
                Ok(()) => return Err("the second flush succeeded".into()),
            };
            let sent = c.seen() - before;
            if sent != 0 {
                return Err(format!("the second flush sent {sent} request(s): the feature was not turned off"));
            }
            c.roundtrip(4096, 4096, 2)?;
            Ok(format!("first: {e}; second (not sent): {e2}"))
        },
    },
    Case {
        name: "blk.discard_eopnotsupp (B6)",
        peer: "offers discard, answers the first discard EOPNOTSUPP",
        expect: "the discard fails; discard is turned off: the next one is not sent",
        setup: |b| {
            b.on_response = Some(Box::new(|req: &Request, rsp| {
                if req.operation == blkif::OP_DISCARD {
                    vec![Response { status: blkif::RSP_EOPNOTSUPP, ..rsp }]
                } else {
                    vec![rsp]
                }
            }));
        },
        run: |c| {
            c.connect()?;
            let before = c.seen();
            let e = match c.d.discard(0, 4096) {
                Err(e) if e == NO_DISCARD => {
                    if c.seen() != before {
                        return Err("the driver says it has no discard, but sent a request".into());
                    }
                    return Ok("the driver has no discard (nothing to turn off)".into());
                }
                Err(e) => e,
                Ok(()) => return Err("discard succeeded although the backend answered EOPNOTSUPP".into()),
            };
            let mid = c.seen();
            let e2 = match c.d.discard(8192, 4096) {
                Err(e) => e,
                Ok(()) => return Err("the second discard succeeded".into()),
            };
            if c.seen() != mid {
                return Err("the second discard reached the backend: discard was not turned off".into());
            }
            c.check_read(0, 4096)?;
            Ok(format!("first: {e}; second (not sent): {e2}"))
        },
    },
    Case {
        name: "blk.split_halves_disagree (B7)",
        peer: "no indirect segments; answers the second ring request of a 128 KiB read with RSP_ERROR, the others OKAY",
        expect: "the read fails (the error wins), never returns partly stale data as success",
        setup: |b| {
            plain(b);
            let mut reads = 0;
            b.on_response = Some(Box::new(move |req: &Request, rsp| {
                if data_op(req) == Some(blkif::OP_READ) {
                    reads += 1;
                    if reads == 3 {
                        return vec![Response { status: blkif::RSP_ERROR, ..rsp }];
                    }
                }
                vec![rsp]
            }));
        },
        run: |c| {
            connected(c)?;
            let e = c.read_must_fail(65536, 131072, "although one of its ring requests failed")?;
            Ok(format!("read failed: {e}"))
        },
    },
    Case {
        name: "blk.split_part_unanswered (B7)",
        peer: "no indirect segments; never answers the second ring request of a 128 KiB read",
        expect: "the read fails in bounded time; no partial success",
        setup: |b| {
            plain(b);
            let mut reads = 0;
            b.on_request = Some(Box::new(move |_, r: &Request| {
                if data_op(r) == Some(blkif::OP_READ) {
                    reads += 1;
                    if reads == 3 {
                        return Answer::Hold;
                    }
                }
                Answer::Serve
            }));
        },
        run: |c| {
            connected(c)?;
            let e = c.read_must_fail(65536, 131072, "although one of its ring requests was never answered")?;
            Ok(format!("read failed: {e}"))
        },
    },
    Case {
        name: "blk.responses_out_of_order (B7)",
        peer: "no indirect segments; holds requests until a turn brings none, then answers them newest first",
        expect: "every operation completes with the right data",
        setup: |b| {
            plain(b);
            b.on_request = Some(Box::new(|_, _| Answer::Hold));
            let mut last = 0;
            b.on_turn = Some(Box::new(move |b: &mut BlockBackend| {
                let n = b.log.seen.len();
                if n == last && !b.held.is_empty() {
                    b.release_held(true);
                }
                last = n;
            }));
        },
        run: |c| {
            c.connect()?;
            c.roundtrip(0, 131072, 7)?;
            c.check_read(262144, 98304)?;
            Ok(format!("{} requests answered newest first, data intact", c.seen()))
        },
    },
    Case {
        name: "blk.info_read_only (B8)",
        peer: "offers info with every bit set (read-only among them, and bits nobody defines)",
        expect: "the driver connects and refuses writes itself: no write request reaches the backend",
        setup: |b| {
            b.offers.connect.insert("info", Some(u32::MAX.to_string()));
        },
        run: |c| {
            c.connect()?;
            c.check_read(0, 4096)?;
            let before = c.seen();
            let r = c.d.write(0, &[1u8; 4096]);
            let writes = c.be().log.seen[before..].iter().filter(|(_, r)| data_op(r) == Some(blkif::OP_WRITE)).count();
            match r {
                Err(e) if writes == 0 => Ok(format!("write refused locally: {e}")),
                Err(e) => Err(format!("write failed ({e}) but {writes} write request(s) were sent")),
                Ok(()) => Err("a write to a read-only disk succeeded".into()),
            }
        },
    },
    Case {
        name: "blk.request_padding (R7)",
        peer: "checks every byte of every request that belongs to no field (pads, unused segments, slot tails, indirect pages) and the ring header padding",
        expect: "all zero",
        setup: nothing,
        run: |c| {
            c.connect()?;
            c.roundtrip(0, 512, 1)?;
            c.roundtrip(4096, 131072, 2)?;
            c.check_read(0, 262144)?;
            let _ = c.d.flush();
            let _ = c.d.discard(524288, 8192);
            c.roundtrip(8192, 2048, 3)?;
            let bad = c.violations(&["pad", "unused", "tail", "descriptor"]);
            let checked = c.be().log.padding_checked;
            if !bad.is_empty() {
                return Err(bad.join("; "));
            }
            Ok(format!("{checked} requests and indirect pages checked, all padding zero"))
        },
    },
    Case {
        name: "blk.grants_kept_mapped_at_close (G1, row 26)",
        peer: "no persistent grants; keeps every data grant mapped, through the driver's close",
        expect: "close ends in bounded time without ending or reusing those grants; while they are mapped their pages are not used for new requests; once unmapped, reconnecting works and nothing leaks",
        setup: |b| {
            plain(b);
            b.keep_grants_mapped = true;
        },
        run: |c| {
            c.connect()?;
            let _ = c.d.read(0, &mut [0u8; 4096]);
            let _ = c.d.write(8192, &[3u8; 4096]);
            let held = c.mapped_frames();
            let live_before: BTreeSet<u64> = c.grants.live().into_iter().map(|(_, g)| g.0).collect();
            let e = c.d.close().err();
            let gone: Vec<_> = held.iter().filter(|f| !live_before.contains(f) || !c.grants.live().iter().any(|(_, g)| g.0 == **f)).collect();
            if !gone.is_empty() {
                return Err(format!("grants of mapped pages {gone:?} were ended"));
            }
            let from = c.seen();
            let re = c.d.connect();
            if re.is_ok() {
                let _ = c.d.read(0, &mut [0u8; 4096]);
                let reused: Vec<_> = c.data_frames_since(from).into_iter().filter(|(_, f)| held.contains(f)).collect();
                if !reused.is_empty() {
                    return Err(format!("pages the backend still maps were granted again: {reused:?}"));
                }
                let _ = c.d.close();
            }
            {
                let mut be = c.be();
                be.keep_grants_mapped = false;
                be.unmap_all();
            }
            c.connect().map_err(|e| format!("reconnect after the backend let go: {e}"))?;
            c.check_read(0, 4096)?;
            c.d.close().map_err(|e| format!("close: {e}"))?;
            let live = c.grants.live();
            if !live.is_empty() {
                return Err(format!("{} grant(s) left after the last close: {live:?}", live.len()));
            }
            Ok(format!(
                "close {}; {} mapped pages never reused; reconnect while mapped: {}",
                e.map_or("ok".to_string(), |e| format!("failed: {e}")),
                held.len(),
                re.map_or_else(|e| format!("refused ({e})"), |_| "ok".into())
            ))
        },
    },
    Case {
        name: "blk.answered_while_mapped (G2, row 26)",
        peer: "no persistent grants; answers reads but keeps their grants mapped",
        expect: "the request fails or its page is quarantined: no page the backend maps is granted again",
        setup: |b| {
            plain(b);
            b.keep_grants_mapped = true;
        },
        run: |c| {
            c.connect()?;
            let first = c.d.read(0, &mut [0u8; 4096]);
            let held = c.mapped_frames();
            let from = c.seen();
            let mut results = vec![format!("{first:?}")];
            for off in [8192, 16384, 24576] {
                results.push(format!("{:?}", c.d.read(off, &mut [0u8; 4096])));
            }
            let reused: Vec<_> = c.data_frames_since(from).into_iter().filter(|(_, f)| held.contains(f)).collect();
            if !reused.is_empty() {
                return Err(format!("pages the backend still maps were granted again: {reused:?}"));
            }
            Ok(format!("results {}; no mapped page reused", results.join(", ")))
        },
    },
    Case {
        name: "blk.notify_fails (E4)",
        peer: "after connect, every EVTCHNOP_send fails (the backend's end is gone); still serves the ring",
        expect: "the error surfaces: the operation fails, the device is failed or disconnected",
        setup: nothing,
        run: |c| {
            connected(c)?;
            c.host.fail_sends(Some(hypercall::abi::errno::ENOENT));
            let r = c.d.write(4096, &[9u8; 4096]);
            let r2 = c.d.read(8192, &mut [0u8; 512]);
            c.host.fail_sends(None);
            match (r, r2) {
                (Err(e), Err(e2)) => Ok(format!("write failed ({e}); then read failed ({e2})")),
                (r, r2) => Err(format!("with notifications failing: write {r:?}, then read {r2:?}")),
            }
        },
    },
    Case {
        name: "blk.backend_directory_removed (issue 16 review)",
        peer: "after connect, removes its whole xenstore directory (the frontend reads ENOENT/EACCES)",
        expect: "the driver reports the device gone with a clear reason; I/O then fails",
        setup: nothing,
        run: |c| {
            connected(c)?;
            c.be().frozen = true;
            c.be().remove_directory();
            let mut ev = None;
            for _ in 0..20 {
                ev = c.d.poll_events().unwrap_or_else(Some);
                if ev.is_some() {
                    break;
                }
                c.host.wait();
            }
            let Some(ev) = ev else {
                return Err("the backend's directory is gone but the driver reported nothing".into());
            };
            let e = c.read_must_fail(0, 512, "after the backend's directory was removed")?;
            Ok(format!("reported {ev:?}; read then failed ({e})"))
        },
    },
    Case {
        name: "blk.no_grant_left_after_close (G1)",
        peer: "serves reads, writes, flushes (persistent grants offered); unmaps everything when the frontend closes",
        expect: "after close no grant is left in the table",
        setup: nothing,
        run: |c| {
            c.connect()?;
            c.roundtrip(0, 65536, 1)?;
            c.check_read(131072, 8192)?;
            let _ = c.d.flush();
            c.d.close().map_err(|e| format!("close: {e}"))?;
            let live = c.grants.live();
            if !live.is_empty() {
                return Err(format!("{} grant(s) left after close: {live:?}", live.len()));
            }
            let mapped = c.be().mapped();
            Ok(format!("nothing left (backend maps {})", mapped.len()))
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver whose connect waits `n` times, then refuses.
    struct Waits<'e> {
        host: &'e HostPlatform,
        n: u64,
    }

    impl BlockDriver for Waits<'_> {
        fn connect(&mut self) -> Result<u64, String> {
            for _ in 0..self.n {
                self.host.wait();
            }
            Err("refused after waiting".into())
        }
        fn capacity(&self) -> Option<u64> {
            None
        }
        fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), String> {
            Err("not connected".into())
        }
        fn write(&mut self, _: u64, _: &[u8]) -> Result<(), String> {
            Err("not connected".into())
        }
        fn flush(&mut self) -> Result<(), String> {
            Err("not connected".into())
        }
        fn poll_events(&mut self) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn close(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    fn waits(
        n: u64,
    ) -> impl for<'e> FnMut(&'e Env<'e>) -> Result<Box<dyn BlockDriver + 'e>, String> {
        move |env: &Env<'_>| Ok(Box::new(Waits { host: env.host, n }) as Box<dyn BlockDriver + '_>)
    }

    /// The watchdog calls a driver hung only past `HUNG_AFTER` waits: one that
    /// gives up after exactly that many passes (cargo-mutants: `>` as `>=`/`==`).
    #[test]
    fn the_watchdog_fires_only_past_hung_after() {
        if cfg!(miri) {
            return;
        }
        let case = "blk.sectors_zero (row 11, B8)";
        let row = crate::blk::run_one(case, waits(HUNG_AFTER)).expect("the case");
        assert!(row.pass, "{}", row.evidence);
        let row = crate::blk::run_one(case, waits(HUNG_AFTER + 1)).expect("the case");
        assert!(!row.pass, "{}", row.evidence);
        assert!(
            row.evidence.contains("waited 100000 times"),
            "{}",
            row.evidence
        );
    }

    /// Hooks that hold or rewrite reads, and the counts of writes, see through
    /// indirect requests (no careless toy sends those; xbd-front does for larger
    /// requests).
    #[test]
    fn data_op_sees_through_indirect_requests() {
        use hypercall::abi::blkif::RequestIndirect;
        for op in [blkif::OP_READ, blkif::OP_WRITE] {
            let direct = Request {
                operation: op,
                ..Default::default()
            };
            assert_eq!(data_op(&direct), Some(op));
            let ind = Request::from(RequestIndirect {
                operation: blkif::OP_INDIRECT,
                indirect_op: op,
                ..Default::default()
            });
            assert_eq!(data_op(&ind), Some(op));
        }
        for op in [blkif::OP_FLUSH_DISKCACHE, blkif::OP_DISCARD, 99] {
            let other = Request {
                operation: op,
                ..Default::default()
            };
            assert_eq!(data_op(&other), None, "op {op}");
        }
    }

    /// blk.read_never_written's stale-data check: the first non-zero byte.
    #[test]
    fn first_nonzero_finds_the_first_stale_byte() {
        assert_eq!(first_nonzero(&[0, 0, 0]), None);
        assert_eq!(first_nonzero(&[]), None);
        assert_eq!(first_nonzero(&[0, 0, 7, 9]), Some((2, 7)));
        assert_eq!(first_nonzero(&[1]), Some((0, 1)));
    }

    /// What a roundtrip writes never equals what the disk holds at any sector
    /// (a driver that dropped the write would pass), for every seed.
    #[test]
    fn write_data_differs_from_the_disk_everywhere() {
        let disk = super::super::disk_pattern(DISK_BYTES);
        // Under Miri (a few seconds per million bytes compared) a sample.
        let (seeds, step) = if cfg!(miri) {
            (4, 64 * 1024)
        } else {
            (256, 512)
        };
        for seed in (0..=255u8).take(seeds) {
            let data = write_data(4096, seed);
            assert_eq!(data.len(), 4096);
            for off in (0..DISK_BYTES - 4096).step_by(step) {
                assert_ne!(
                    data[..512],
                    disk[off..off + 512],
                    "seed {seed}, offset {off}"
                );
            }
            assert_ne!(
                write_data(512, seed.wrapping_add(1))[..],
                data[..512],
                "seed {seed}"
            );
        }
    }
}
