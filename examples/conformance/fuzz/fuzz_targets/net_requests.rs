//! A hostile frontend against shim-hv's netback: after a real handshake (one queue,
//! rx-copy, scatter-gather and GSO offered), the fuzzer writes tx request slots
//! (slot chains with `more_data`, extra-info descriptors of any type, sizes and
//! offsets of any value, grant refs good, read-only, foreign, ended or made up),
//! raw slot bytes, rx requests (posted buffers with any id and gref), and raw
//! `req_prod` values on both rings; frames for the guest arrive from another port
//! of the bridge; the backend is stepped on this thread.
//!
//! What must hold: every step returns (the backend forwards, drops and counts, or
//! fails only this connection), never a panic or a hang; tx responses never
//! outnumber the tx slots published; once the backend is destroyed, none of the
//! guest's grants is still mapped by dom0.
#![no_main]

use std::sync::{Arc, Mutex};

use hypercall::abi::netif::{self, ExtraInfo, RxRequest, TxRequest};
use hypercall::abi::ring as layout;
use hypercall::PAGE_SIZE;
use libfuzzer_sys::fuzz_target;
use xen_backends::bridge::{Bridge, BridgePort, Frame};
use xen_backends::net::{NetBackend, NetConfig};
use xenbus::{XenbusState, Xenstore};
use xenkit_fuzz::front::{connect, pick_gref, Guest};
use xenkit_fuzz::Cursor;

/// One-page rings: 12-byte tx slots, 8-byte rx slots (256 each).
const SLOTS: u32 = 256;
const TX_SLOT: usize = 12;
const RX_SLOT: usize = 8;
/// Data pages the frontend grants.
const DATA: usize = 4;
const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];

/// The other end of the bridge: counts what reaches it.
struct Peer(Mutex<u64>);

impl BridgePort for Peer {
    fn deliver(&self, _frame: &Frame) {
        *self.0.lock().unwrap() += 1;
    }
    fn name(&self) -> String {
        "fuzz-peer".into()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let g = Guest::new("fuzz-net");
    let bridge = Bridge::new("xenbr-fuzz");
    let peer = Arc::new(Peer(Mutex::new(0)));
    let peer_id = bridge.attach(peer.clone());
    let cfg = NetConfig {
        mac: Some(xennet_front::Mac(MAC)),
        stepped: true,
        ..NetConfig::default()
    };
    let be = NetBackend::start(&g.hv, g.dom.id(), bridge.clone(), cfg).expect("netback");
    let p = &*g.guest;
    let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
    let (tx_pages, rx_pages) = (g.pages(1), g.pages(1));
    let (txm, rxm) = (tx_pages.mem(), rx_pages.mem());
    let (tx_ref, rx_ref) = (g.grant(&tx_pages, 0, false), g.grant(&rx_pages, 0, false));
    let data_pages = g.pages(DATA);
    let data_mem = data_pages.mem();
    for i in 0..DATA {
        data_mem.fill(i * PAGE_SIZE, PAGE_SIZE, 0x40 + i as u8);
    }
    let mut refs = vec![tx_ref, rx_ref];
    let pick = g.hostile_grants(&data_pages, DATA, tx_ref, &mut refs);
    let flags = c.u8();
    let keys = [
        ("tx-ring-ref", tx_ref.0.to_string()),
        ("rx-ring-ref", rx_ref.0.to_string()),
        ("request-rx-copy", "1".to_string()),
        ("feature-rx-notify", "1".to_string()),
        ("feature-sg", u8::from(flags & 1 != 0).to_string()),
        ("feature-gso-tcpv4", u8::from(flags & 2 != 0).to_string()),
        (
            "feature-no-csum-offload",
            u8::from(flags & 4 != 0).to_string(),
        ),
    ];
    let Some((_hs, _port)) = connect(&g, &mut xs, "device/vif/0", &keys, XenbusState::Connected)
    else {
        // The handshake itself is well formed: a refusal is a bug.
        panic!("netback did not connect a well-formed frontend");
    };
    let gref = |c: &mut Cursor<'_>| pick_gref(&pick, c);
    let (mut tx_prod, mut rx_prod) = (0u32, 0u32);
    let mut tx_published: u64 = 0;
    let mut raw_indices = false;
    let mut alive = true;
    let rounds = c.u8() % 64;
    for _ in 0..rounds {
        if c.is_empty() || !alive {
            break;
        }
        match c.u8() % 10 {
            // A tx slot (first of a frame, a fragment, or an extra-info descriptor).
            0..=2 => {
                let slot = if c.u8() % 5 == 0 {
                    let mut u = [0u8; 6];
                    u.copy_from_slice(&[c.u8(), c.u8(), c.u8(), c.u8(), c.u8(), c.u8()]);
                    TxRequest::from(ExtraInfo {
                        ty: c.u8() % 6,
                        flags: c.u8() % 2,
                        u,
                    })
                } else {
                    TxRequest {
                        gref: gref(&mut c),
                        offset: match c.u8() % 3 {
                            0 => 0,
                            1 => u16::from(c.u8()) * 16,
                            _ => c.u16(),
                        },
                        flags: c.u16()
                            & (netif::NETTXF_MORE_DATA
                                | netif::NETTXF_EXTRA_INFO
                                | netif::NETTXF_CSUM_BLANK
                                | netif::NETTXF_DATA_VALIDATED
                                | if c.u8() % 8 == 0 { 0xfff0 } else { 0 }),
                        id: u16::from(c.u8()),
                        size: match c.u8() % 3 {
                            0 => u16::from(c.u8()) + 14,
                            1 => u16::from(c.u8()) * 64,
                            _ => c.u16(),
                        },
                    }
                };
                txm.write_obj(
                    layout::HEADER_SIZE + (tx_prod % SLOTS) as usize * TX_SLOT,
                    &slot,
                );
                tx_prod = tx_prod.wrapping_add(1);
                tx_published += 1;
                if c.u8() % 2 == 0 {
                    txm.store_u32(layout::REQ_PROD, tx_prod);
                }
            }
            // Publish the tx slots written so far.
            3 => txm.store_u32(layout::REQ_PROD, tx_prod),
            // Raw bytes over a tx or rx slot.
            4 => {
                let (m, size) = if c.u8() % 2 == 0 {
                    (&txm, TX_SLOT)
                } else {
                    (&rxm, RX_SLOT)
                };
                let slot = usize::from(c.u8());
                let bytes = c.bytes(size);
                m.write(layout::HEADER_SIZE + slot * size, bytes);
            }
            // Post rx buffers.
            5 => {
                for _ in 0..1 + c.u8() % 8 {
                    let r = RxRequest {
                        id: u16::from(c.u8()),
                        _pad: 0,
                        gref: gref(&mut c),
                    };
                    rxm.write_obj(
                        layout::HEADER_SIZE + (rx_prod % SLOTS) as usize * RX_SLOT,
                        &r,
                    );
                    rx_prod = rx_prod.wrapping_add(1);
                }
                rxm.store_u32(layout::REQ_PROD, rx_prod);
            }
            // A frame for the guest from the other port (unicast to it, or
            // broadcast), of any length.
            6 => {
                let len = match c.u8() % 3 {
                    0 => usize::from(c.u8()),
                    1 => 60 + usize::from(c.u8()) * 8,
                    _ => usize::from(c.u16()),
                };
                let mut f = vec![0x5au8; len];
                if len >= 14 {
                    f[..6].copy_from_slice(if c.u8() % 2 == 0 { &MAC } else { &[0xff; 6] });
                    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
                    f[12] = 0x88;
                    f[13] = 0xb5;
                }
                bridge.forward(peer_id, &Frame::new(f));
            }
            // A raw request producer on either ring, or the backend's own fields.
            7 => {
                let m = if c.u8() % 2 == 0 { &txm } else { &rxm };
                let at = [
                    layout::REQ_PROD,
                    layout::RSP_PROD,
                    layout::RSP_EVENT,
                    layout::REQ_EVENT,
                ];
                m.store_u32(at[usize::from(c.u8() % 4)], c.u32());
                raw_indices = true;
            }
            // Serve.
            _ => {
                be.step();
                alive = be.connected();
            }
        }
    }
    if alive {
        be.step();
        alive = be.connected();
    }
    if alive && !raw_indices {
        let rsp_prod = txm.load_u32(layout::RSP_PROD);
        assert!(
            u64::from(rsp_prod) <= tx_published,
            "{rsp_prod} tx responses to {tx_published} slots"
        );
    }
    be.destroy();
    bridge.detach(peer_id);
    let left = g.still_mapped(&refs);
    assert!(
        left.is_empty(),
        "grants still mapped after the backend is gone: {left:?}"
    );
});
