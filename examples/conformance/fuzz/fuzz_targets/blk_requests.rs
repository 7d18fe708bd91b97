//! A hostile frontend against shim-hv's blkback: after a real handshake (one-page
//! ring, persistent grants or not), the fuzzer writes request slots (structured,
//! with grant refs picked among good, read-only, revoked, foreign and made-up
//! ones; or raw bytes), indirect descriptor pages, and raw `req_prod` values
//! (including far past the ring), and the backend is stepped on this thread.
//!
//! What must hold: every step returns (the backend answers or fails only this
//! connection), never a panic or a hang; responses never outnumber the requests
//! the backend could have consumed; and once the backend is destroyed, none of the
//! guest's grants is still mapped by dom0.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hypercall::abi::blkif::{self, Request, RequestSegment};
use hypercall::abi::ring as layout;
use hypercall::PAGE_SIZE;
use libfuzzer_sys::fuzz_target;
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xenbus::{XenbusState, Xenstore};
use xenkit_fuzz::front::{connect, pick_gref, Guest};
use xenkit_fuzz::Cursor;

/// Slots of a one-page ring of 112-byte requests.
const SLOTS: u32 = 32;
const SLOT: usize = 112;
/// Data pages the frontend grants.
const DATA: usize = 4;

/// A 64 KiB image (128 sectors), written once per process at one fixed path (so
/// runs do not pile files up); the fuzzer's writes land in it, nothing checks its
/// content.
fn image() -> &'static PathBuf {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let p = std::env::temp_dir().join("xenkit-fuzz-blk.img");
        std::fs::write(&p, vec![0x6bu8; 64 << 10]).expect("image");
        p
    })
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let persistent = flags & 1 != 0;
    let g = Guest::new("fuzz-blk");
    let cfg = BlkConfig {
        stepped: true,
        writable: flags & 2 == 0,
        ..BlkConfig::new(Target::File(image().clone()), 51712, "xvda")
    };
    let be = BlkBackend::start(&g.hv, g.dom.id(), cfg).expect("blkback");
    let p = &*g.guest;
    let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
    let ring_pages = g.pages(1);
    let ring_mem = ring_pages.mem();
    let ring_ref = g.grant(&ring_pages, 0, false);
    let data_pages = g.pages(DATA);
    let data_mem = data_pages.mem();
    let mut refs = vec![ring_ref];
    // Grant refs a request may name: writable and read-only data pages, the ring
    // itself, one granted to another domain, one ended, and made-up numbers.
    let pick = g.hostile_grants(&data_pages, DATA, ring_ref, &mut refs);
    let keys = [
        ("ring-ref", ring_ref.0.to_string()),
        ("protocol", "x86_64-abi".to_string()),
        ("feature-persistent", u8::from(persistent).to_string()),
    ];
    let Some((_hs, _port)) = connect(
        &g,
        &mut xs,
        "device/vbd/51712",
        &keys,
        XenbusState::Initialised,
    ) else {
        // The handshake itself is well formed: a refusal is a bug.
        panic!("blkback did not connect a well-formed frontend");
    };
    let gref = |c: &mut Cursor<'_>| pick_gref(&pick, c);
    let mut req_prod: u32 = 0;
    let mut alive = true;
    let mut published: u64 = 0;
    // Set once the fuzzer writes an index by hand (then responses have no bound).
    let mut raw_indices = false;
    let rounds = c.u8() % 48;
    for _ in 0..rounds {
        if c.is_empty() || !alive {
            break;
        }
        match c.u8() % 8 {
            // A structured request in the next slot.
            0..=3 => {
                let op = match c.u8() % 9 {
                    0 => blkif::OP_READ,
                    1 => blkif::OP_WRITE,
                    2 => blkif::OP_FLUSH_DISKCACHE,
                    3 => blkif::OP_WRITE_BARRIER,
                    4 => blkif::OP_DISCARD,
                    5 => blkif::OP_INDIRECT,
                    6 => blkif::OP_RESERVED_1,
                    _ => c.u8(),
                };
                let mut r = Request {
                    operation: op,
                    nr_segments: c.u8() % 14,
                    handle: u16::from(c.u8() % 3),
                    id: u64::from(c.u32()),
                    sector_number: match c.u8() % 4 {
                        0 => u64::from(c.u8()),
                        1 => u64::from(c.u32()),
                        2 => u64::MAX - u64::from(c.u8()),
                        _ => 120 + u64::from(c.u8() % 16),
                    },
                    ..Request::default()
                };
                if op == blkif::OP_INDIRECT {
                    // indirect_op, nr_segments (u16) and grefs live in the same
                    // bytes: write them through the indirect view.
                    let mut ind = r.as_indirect();
                    ind.indirect_op = c.u8() % 4;
                    ind.nr_segments = u16::from(c.u8()) * 2;
                    let pages = usize::from(c.u8() % 3) + 1;
                    for gr in ind.indirect_grefs.iter_mut().take(pages) {
                        *gr = gref(&mut c);
                    }
                    // Descriptors in the data pages (whatever the grefs name).
                    let n = usize::from(c.u8() % 16);
                    for i in 0..n {
                        let s = RequestSegment {
                            gref: gref(&mut c),
                            first_sect: c.u8() % 10,
                            last_sect: c.u8() % 10,
                            _pad: [0; 2],
                        };
                        let page = usize::from(c.u8()) % DATA;
                        data_mem.write_obj(page * PAGE_SIZE + i * 8, &s);
                    }
                    r = Request::from(ind);
                } else {
                    let n = usize::from(r.nr_segments).min(blkif::MAX_SEGMENTS_PER_REQUEST);
                    for s in r.seg.iter_mut().take(n) {
                        *s = RequestSegment {
                            gref: gref(&mut c),
                            first_sect: c.u8() % 10,
                            last_sect: c.u8() % 10,
                            _pad: [0; 2],
                        };
                    }
                }
                let off = layout::HEADER_SIZE + (req_prod % SLOTS) as usize * SLOT;
                ring_mem.write_obj(off, &r);
                req_prod = req_prod.wrapping_add(1);
                ring_mem.store_u32(layout::REQ_PROD, req_prod);
                published += 1;
            }
            // Raw bytes over a slot.
            4 => {
                let slot = c.u8() as u32 % SLOTS;
                let bytes = c.bytes(SLOT);
                ring_mem.write(layout::HEADER_SIZE + slot as usize * SLOT, bytes);
            }
            // A raw request producer (far ahead, behind, anything).
            5 => {
                req_prod = match c.u8() % 3 {
                    0 => req_prod.wrapping_add(u32::from(c.u8())),
                    1 => req_prod.wrapping_sub(u32::from(c.u8())),
                    _ => c.u32(),
                };
                ring_mem.store_u32(layout::REQ_PROD, req_prod);
                raw_indices = true;
            }
            // The backend's own indices and event fields, scribbled on.
            6 => {
                let at = [
                    layout::RSP_PROD,
                    layout::RSP_EVENT,
                    layout::REQ_EVENT,
                    layout::PVT,
                ];
                ring_mem.store_u32(at[usize::from(c.u8() % 4)], c.u32());
                raw_indices = true;
            }
            // Serve.
            _ => alive = be.step().is_some(),
        }
    }
    if alive {
        alive = be.step().is_some();
    }
    if alive && !raw_indices {
        // Responses never outnumber the requests published (the ring started at
        // 0 and the fuzzer published `published` requests one by one).
        let rsp_prod = ring_mem.load_u32(layout::RSP_PROD);
        assert!(
            u64::from(rsp_prod) <= published,
            "{rsp_prod} responses to {published} requests"
        );
    }
    be.destroy();
    let left = g.still_mapped(&refs);
    assert!(
        left.is_empty(),
        "grants still mapped after the backend is gone: {left:?}"
    );
});
