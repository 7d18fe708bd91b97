//! Frames between two in-process guests through netback and the bridge:
//! byte-exact in both directions, every size with feature-sg, up to the MTU without.

mod net_util;

use std::sync::mpsc::Receiver;
use std::time::Duration;

use net_util::*;
use xen_backends::bridge::Bridge;
use xen_backends::net::{BackendFlags, NetConfig, Offer};
use xennet_front::{Config, Error, Mac, MAX_FRAME};

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + seed * 7) % 251) as u8)
        .collect()
}

/// A frame of `len` bytes from `src` to `dst` (Ethertype 0x88b5, local experimental).
fn frame(dst: Mac, src: Mac, len: usize, seed: usize) -> Vec<u8> {
    let mut f = pattern(len, seed);
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

/// Sends `sizes` from one guest to the other, one at a time, each byte-checked by
/// the receiver (which sends its own sizes back the other way afterwards).
fn exchange(sizes: Vec<usize>, offer: Offer, cfg: Config) {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    // Frames longer than the MTU allows without GSO are dropped by the receiving
    // frontend (docs/hostile-input.md N8): with SG the sweeps go up to 65535 bytes,
    // so those vifs offer the largest MTU.
    let net = |o: &Offer| NetConfig {
        offer: o.clone(),
        mtu: if o.flags.contains(BackendFlags::SG) {
            65521
        } else {
            1500
        },
        ..NetConfig::default()
    };
    let (da, ba) = guest_with_vif(&hv, &br, "a", 1, net(&offer));
    let (db, bb) = guest_with_vif(&hv, &br, "b", 2, net(&offer));
    let (ma, mb) = (mac(1), mac(2));
    let (go_tx, go_rx) = pipe::<()>();
    let (ready_tx, ready_rx) = pipe::<()>();
    // Out-of-band flow control: a sender stays at most WINDOW frames ahead of what its
    // peer has checked, so netback's bounded rx queue (which drops, as a network may)
    // never overflows however slowly a loaded machine runs the receiver.
    let (ack_b_tx, ack_b_rx) = pipe::<usize>(); // frames B has checked
    let (ack_a_tx, ack_a_rx) = pipe::<usize>(); // frames A has checked
    let sizes_a = sizes.clone();
    let sizes_b = sizes;
    // Guest B: receive everything A sends, then send the same sizes back.
    let rb: Receiver<Result<usize, String>> = run_guest(&hv, db, cfg, move |dev, _| {
        let mut buf = vec![0u8; MAX_FRAME];
        // Teach the bridge where B lives, then tell A to start.
        dev.send(&frame(Mac::BROADCAST, mb, 60, 0))
            .map_err(|e| e.to_string())?;
        ready_tx.send(()).unwrap();
        for (n, &len) in sizes_b.iter().enumerate() {
            let m = loop {
                let m = dev
                    .recv_timeout(&mut buf, Duration::from_secs(300))
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("B: nothing for size {len}"))?;
                if buf[0..6] != [0xff; 6] {
                    break m; // skip A's hello broadcast
                }
            };
            if buf[..m.len] != frame(mb, ma, len, n)[..] {
                return Err(format!("B: size {len} (got {}) differs", m.len));
            }
            let _ = ack_b_tx.send(n + 1);
        }
        go_rx.recv().map_err(|_| "A gave up".to_string())?;
        let mut acked = 0;
        for (n, &len) in sizes_b.iter().enumerate() {
            wait_window(n, &mut acked, &ack_a_rx)?;
            send_retry(dev, &frame(ma, mb, len, n + 1))?;
        }
        // Stay connected until A has checked every frame: closing earlier could lose
        // the last ones still in flight.
        wait_window(sizes_b.len() + WINDOW - 1, &mut acked, &ack_a_rx)?;
        Ok(sizes_b.len())
    });
    let ra: Receiver<Result<usize, String>> = run_guest(&hv, da, cfg, move |dev, _| {
        let mut buf = vec![0u8; MAX_FRAME];
        ready_rx.recv().unwrap();
        // Drain B's broadcast.
        let _ = dev.recv_timeout(&mut buf, Duration::from_secs(5));
        dev.send(&frame(Mac::BROADCAST, ma, 60, 0))
            .map_err(|e| e.to_string())?;
        let mut acked = 0;
        for (n, &len) in sizes_a.iter().enumerate() {
            wait_window(n, &mut acked, &ack_b_rx)?;
            send_retry(dev, &frame(mb, ma, len, n))?;
        }
        let _ = go_tx.send(());
        for (n, &len) in sizes_a.iter().enumerate() {
            loop {
                let m = dev
                    .recv_timeout(&mut buf, Duration::from_secs(300))
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("A: nothing for size {len}"))?;
                if buf[0..6] == [0xff; 6] {
                    continue; // B's hello broadcast
                }
                if buf[..m.len] != frame(ma, mb, len, n + 1)[..] {
                    return Err(format!("A: size {len} (got {}) differs", m.len));
                }
                let _ = ack_a_tx.send(n + 1);
                break;
            }
        }
        Ok(sizes_a.len())
    });
    // Both results, failing as soon as either guest reports an error (the other
    // would only wait out its hang guard).
    let end = std::time::Instant::now() + Duration::from_secs(600);
    let (mut a, mut b) = (None, None);
    while a.is_none() || b.is_none() {
        a = a.or_else(|| ra.try_recv().ok());
        b = b.or_else(|| rb.try_recv().ok());
        let failed = matches!(a, Some(Err(_))) || matches!(b, Some(Err(_)));
        assert!(
            !failed && std::time::Instant::now() < end,
            "A: {a:?} B: {b:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (sa, sb) = (ba.stats(), bb.stats());
    assert_eq!(sa.tx_errors + sb.tx_errors + sa.fatal + sb.fatal, 0);
    assert_eq!(br.stats().dropped, 0);
}

/// Frames a sender may be ahead of its peer's checks (64 x 64 KiB stays well inside
/// netback's default rx queue bound of 1024 frames / 8 MiB).
const WINDOW: usize = 64;

/// Blocks until frame `n` is within WINDOW of what the peer has checked. The bound is
/// a hang guard only: progress is event driven.
fn wait_window(
    n: usize,
    acked: &mut usize,
    acks: &std::sync::mpsc::Receiver<usize>,
) -> Result<(), String> {
    while n >= *acked + WINDOW {
        *acked = acks
            .recv_timeout(Duration::from_secs(300))
            .map_err(|_| format!("peer stopped acknowledging at frame {}", *acked))?;
    }
    Ok(())
}

fn send_retry(dev: &mut Dev<'_>, f: &[u8]) -> Result<(), String> {
    // A hang guard, not a speed requirement: a loaded machine may starve netback.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while std::time::Instant::now() < deadline {
        match dev.send(f) {
            Ok(()) => return Ok(()),
            Err(Error::Busy) => {
                dev.poll().map_err(|e| e.to_string())?;
                std::thread::yield_now();
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("tx ring stayed full".into())
}

/// Every size up to 2 jumbo frames, every page boundary ±2, and a stride of 61
/// over the rest up to 65535. (`full_size_sweep` below does every single size.)
fn sg_sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (14..=9216).collect();
    let mut s = 9217;
    while s <= MAX_FRAME {
        v.push(s);
        s += 61;
    }
    for k in 1..=16usize {
        for d in 0..5 {
            let x = k * 4096 + d - 2;
            if x <= MAX_FRAME {
                v.push(x);
            }
        }
    }
    v.push(MAX_FRAME);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn sizes_with_sg_both_directions() {
    exchange(sg_sizes(), Offer::default(), Config::default());
}

#[test]
fn sizes_up_to_the_mtu_without_sg() {
    let mut offer = Offer::default();
    offer.flags.remove(BackendFlags::SG);
    let cfg = Config {
        sg: false,
        ..Config::default()
    };
    exchange((14..=1514).collect(), offer, cfg);
}

/// Sizes around netback's copy limits, both directions: a runt-sized 14 bytes up
/// to `HEAD_LEN` (64) is copied whole and arrives at its own length (not padded
/// to the head's size), and frames around `COPY_BREAK` (256) and a page, copied
/// whole or as a head and granted tail, arrive byte for byte. A short version of
/// the size sweeps (which the mutation runs leave out for their time); written for
/// cargo-mutants (`fetch_frame`: the whole-frame test's `||` as `&&`, which sent
/// short frames as a 64-byte head).
#[test]
fn frames_around_the_copy_limits() {
    exchange(
        vec![14, 15, 42, 60, 63, 64, 65, 255, 256, 257, 4095, 4096, 4097],
        Offer::default(),
        Config::default(),
    );
}

/// Every size from 14 to 65535, both directions (about 4 GiB of frames: run with
/// `cargo test --release -p xen-backends --test net_frames -- --ignored`).
#[test]
#[ignore]
fn full_size_sweep() {
    exchange(
        (14..=MAX_FRAME).collect(),
        Offer::default(),
        Config::default(),
    );
}

/// Tx chains with an extra-info slot (GSO) and several data slots, sizes around
/// the page boundaries, over IPv4 and IPv6: netback takes each as one frame, answers every slot OKAY
/// and keeps the connection (no error, nothing fatal). A chain walked wrongly
/// (the extra slots counted as data, or the data slots after them missed) would
/// be cut short or run into the next frame: a bad frame or a fatal protocol
/// error. Written for cargo-mutants (`chain_state`: the extra-info loop's
/// `i += 1` as `-=`; `check_tx_chain`: `t != GSO_TYPE_TCPV6` as `==`, which
/// refused TCPv6 GSO).
#[test]
fn gso_chains_with_extra_info_are_taken_whole() {
    use xennet_front::TxMeta;
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let cfg = NetConfig {
        mtu: 65521,
        ..NetConfig::default()
    };
    let (da, ba) = guest_with_vif(&hv, &br, "a", 1, cfg);
    let sizes = [100usize, 1500, 4000, 4096, 9000, 20000, 60000];
    let (ma, mb) = (mac(1), mac(2));
    let (done_tx, done_rx) = pipe::<()>();
    let fe = Config {
        gso_tcpv4: true,
        gso_tcpv6: true,
        ..Config::default()
    };
    let r = run_guest(&hv, da, fe, move |dev, _| {
        if !dev
            .negotiated()
            .flags
            .contains(xennet_front::NegotiatedFlags::TX_GSO_TCPV4)
        {
            return Err("GSO over TCPv4 not negotiated".to_string());
        }
        if !dev
            .negotiated()
            .flags
            .contains(xennet_front::NegotiatedFlags::TX_GSO_TCPV6)
        {
            return Err("GSO over TCPv6 not negotiated".to_string());
        }
        for ipv6 in [false, true] {
            for (i, &n) in sizes.iter().enumerate() {
                let meta = TxMeta {
                    gso_mss: Some(1448),
                    ..TxMeta::default()
                };
                send_meta(dev, &ip_frame(mb, ma, ipv6, true, n, i as u8), meta)?;
            }
        }
        // Stay connected (answers reclaimed) until the test has seen them all.
        while done_rx.try_recv().is_err() {
            dev.poll().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    // A hang guard only: progress is event driven.
    let end = std::time::Instant::now() + Duration::from_secs(120);
    let s = loop {
        let s = ba.stats();
        if s.tx_frames + s.tx_errors >= 2 * sizes.len() as u64 || s.fatal > 0 {
            break s;
        }
        assert!(std::time::Instant::now() < end, "not all answered: {s:?}");
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = done_tx.send(());
    let res = r
        .recv_timeout(Duration::from_secs(120))
        .expect("guest A ended");
    res.unwrap();
    assert_eq!((s.tx_frames, s.tx_errors, s.fatal), (14, 0, 0), "{s:?}");
}

/// `NETTXF_data_validated` crosses netback as it was sent: a frame A marks as
/// validated reaches B with `NETRXF_data_validated`, frames without the mark (with
/// no other flag, or one after the other) reach B without it. Written for
/// cargo-mutants (`check_tx_chain` reading the flag with `==` for `!=`, or `|`/`^`
/// for `&`, marked every unmarked frame as validated).
#[test]
fn data_validated_reaches_the_receiver_as_sent() {
    use xennet_front::TxMeta;
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (da, _ba) = guest_with_vif(&hv, &br, "a", 1, NetConfig::default());
    let (db, _bb) = guest_with_vif(&hv, &br, "b", 2, NetConfig::default());
    let (ma, mb) = (mac(1), mac(2));
    let (go_tx, go_rx) = pipe::<()>();
    let (got_tx, got_rx) = pipe::<()>();
    let marker = vec![end_marker(mb, ma, false)];
    let marker_a = marker.clone();
    // (frame, validated): payload sizes tell them apart at B.
    let sent: Vec<(Vec<u8>, bool)> = [(300usize, false), (301, true), (302, false), (303, true)]
        .iter()
        .map(|&(n, v)| (ip_frame(mb, ma, false, false, n, n as u8), v))
        .collect();
    let sent_a = sent.clone();
    let rb = run_guest(&hv, db, Config::default(), move |dev, _| {
        go_tx.send(()).map_err(|_| "test gone".to_string())?;
        let got = recv_until_end(dev, &marker);
        let _ = got_tx.send(());
        got
    });
    let ra = run_guest(&hv, da, Config::default(), move |dev, _| {
        go_rx.recv().map_err(|_| "B gone".to_string())?;
        for (f, validated) in &sent_a {
            let meta = TxMeta {
                data_validated: *validated,
                ..TxMeta::default()
            };
            send_meta(dev, f, meta)?;
        }
        send_meta(dev, &marker_a[0], TxMeta::default())?;
        wait_confirmed(&got_rx, "B")
    });
    let got = rb
        .recv_timeout(END_GUARD * 2)
        .expect("guest B ended")
        .unwrap_or_else(|e| panic!("B: {e}"));
    ra.recv_timeout(END_GUARD * 2)
        .expect("guest A ended")
        .unwrap_or_else(|e| panic!("A: {e}"));
    let seen: Vec<(usize, bool)> = got
        .iter()
        .map(|(f, m)| (f.len(), m.data_validated))
        .collect();
    let want: Vec<(usize, bool)> = sent.iter().map(|(f, v)| (f.len(), *v)).collect();
    assert_eq!(seen, want, "(frame length, data_validated) at B");
}

/// A frame with a blank checksum (`NETTXF_csum_blank`) reaches a receiver that
/// takes blank checksums as it was sent: `NETRXF_csum_blank` set (the receiving
/// frontend fills the checksum in),
/// whether netback copied it whole or could have left part of it in the sender's
/// pages (frames over `COPY_BREAK`). A frame netback must resolve (checksum
/// filled in) is only one it could not pass on. Written for cargo-mutants
/// (`fetch_frame`: `c.csum_blank` dropped from the whole-copy test, which left a
/// long frame's L4 header out of reach of the as-is check, so every such frame
/// had its checksum filled in and the flag cleared).
#[test]
fn csum_blank_frames_reach_a_receiver_that_takes_them_as_sent() {
    use xennet_front::TxMeta;
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (da, _ba) = guest_with_vif(&hv, &br, "a", 1, NetConfig::default());
    let (db, _bb) = guest_with_vif(&hv, &br, "b", 2, NetConfig::default());
    let (ma, mb) = (mac(1), mac(2));
    let (go_tx, go_rx) = pipe::<()>();
    let (got_tx, got_rx) = pipe::<()>();
    let marker = vec![end_marker(mb, ma, false)];
    let marker_a = marker.clone();
    // TCP over IPv4: one frame under COPY_BREAK, two over it.
    let sent: Vec<Vec<u8>> = [100usize, 300, 1000]
        .iter()
        .map(|&n| ip_frame(mb, ma, false, true, n, n as u8))
        .collect();
    let sent_a = sent.clone();
    let rb = run_guest(&hv, db, Config::default(), move |dev, _| {
        go_tx.send(()).map_err(|_| "test gone".to_string())?;
        let got = recv_until_end(dev, &marker);
        let _ = got_tx.send(());
        got
    });
    let ra = run_guest(&hv, da, Config::default(), move |dev, _| {
        go_rx.recv().map_err(|_| "B gone".to_string())?;
        let meta = TxMeta {
            csum_blank: true,
            ..TxMeta::default()
        };
        for f in &sent_a {
            send_meta(dev, f, meta)?;
        }
        send_meta(dev, &marker_a[0], TxMeta::default())?;
        wait_confirmed(&got_rx, "B")
    });
    let got = rb
        .recv_timeout(END_GUARD * 2)
        .expect("guest B ended")
        .unwrap_or_else(|e| panic!("B: {e}"));
    ra.recv_timeout(END_GUARD * 2)
        .expect("guest A ended")
        .unwrap_or_else(|e| panic!("A: {e}"));
    assert_eq!(got.len(), sent.len(), "frames at B");
    // B's frontend completes the blank checksum itself (`csum_completed`); every
    // other byte is as sent.
    for ((g, m), f) in got.iter().zip(&sent) {
        let l4 = xennet_front::csum::locate(&f[..]).unwrap();
        assert!(
            g.len() == f.len()
                && g[..l4.field] == f[..l4.field]
                && g[l4.field + 2..] == f[l4.field + 2..],
            "a frame of {} bytes arrived changed",
            f.len()
        );
        assert!(
            m.csum_blank && m.csum_completed,
            "a frame of {} bytes: {m:?}",
            f.len()
        );
    }
}

/// A raw net frontend driven from the test thread (no xennet-front): the xenbus
/// handshake, then tx requests built by hand, for the chains xennet-front never
/// sends (the slot limits, several extra-info slots).
mod raw {
    use super::*;
    use hypercall::abi::netif::{
        self, ExtraInfo, RxRequest, RxResponse, TxRequest, TxResponse, EXTRA_FLAG_MORE,
        NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
    };
    use hypercall::gnttab::GrantTable;
    use hypercall::ring::FrontRing;
    use hypercall::{DomId, GrantRef, Port, SharedMem, Xen, PAGE_SIZE};
    use std::sync::Arc;
    use xen_backends::net::NetBackend;
    use xen_model::inproc::InProcGuest;
    use xenbus::frontend::FrontendHandshake;
    use xenbus::{Path, Xenstore};
    use xenbus::{Store, XenbusState};

    pub struct RawNet {
        pub guest: Arc<InProcGuest>,
        /// Holds the grants of the rings and data pages.
        _table: Box<GrantTable<NG>>,
        tx: Option<FrontRing<TxRequest, TxResponse, SharedMem<'static>>>,
        /// The tx ring's page (its `req_event`).
        tx_mem: SharedMem<'static>,
        port: Port,
        /// Data pages, each granted to dom0 read-only.
        pub data: Vec<(SharedMem<'static>, GrantRef)>,
    }

    impl RawNet {
        /// Connects vif 0 of `dom` (whose netback is already started).
        pub fn connect(hv: &Arc<xen_model::Hypervisor>, dom: &Arc<xen_model::Domain>) -> Self {
            let guest = InProcGuest::new(hv.clone(), dom.clone());
            let p: &InProcGuest = &guest;
            let table = Box::new(GrantTable::<NG>::setup(p, (NG / 512) as u32).unwrap());
            let mut xs = Xenstore::from_hvm_params(p).unwrap();
            let mut hs = FrontendHandshake::new("device/vif/0").unwrap();
            hs.start(&mut xs).unwrap();
            hs.wait_for_backend(&mut xs, STEP).unwrap();
            let be = DomId(0);
            let tx_mem = hypercall::SharedPages::alloc(p, 1).unwrap().leak();
            let rx_mem = hypercall::SharedPages::alloc(p, 1).unwrap().leak();
            let tx = FrontRing::<TxRequest, TxResponse, _>::init(tx_mem).unwrap();
            FrontRing::<RxRequest, RxResponse, _>::init(rx_mem).unwrap();
            let g = |m: SharedMem<'static>, ro| {
                table
                    .grant_access(be, m.page_gfn(p, 0).unwrap(), ro)
                    .unwrap()
            };
            let (tg, rg) = (g(tx_mem, false), g(rx_mem, false));
            let port = Xen(p).evtchn_alloc_unbound(be).unwrap();
            let data: Vec<_> = (0..4)
                .map(|_| {
                    let m = hypercall::SharedPages::alloc(p, 1).unwrap().leak();
                    (m, g(m, true))
                })
                .collect();
            let keys = [
                ("tx-ring-ref", tg.0.to_string()),
                ("rx-ring-ref", rg.0.to_string()),
                ("event-channel", port.0.to_string()),
                ("request-rx-copy", "1".to_string()),
                ("feature-sg", "1".to_string()),
            ];
            hs.publish(&mut xs, XenbusState::Connected, |tx, node| {
                for (k, v) in &keys {
                    tx.write_str(&Path::join(node, k)?, v)?;
                }
                Ok(())
            })
            .unwrap();
            hs.wait_connected(&mut xs, STEP).unwrap();
            RawNet {
                guest,
                _table: table,
                tx: Some(tx),
                tx_mem,
                port,
                data,
            }
        }

        /// Publishes `reqs` on the tx ring and notifies.
        pub fn push(&mut self, reqs: &[TxRequest]) {
            let tx = self.tx.as_mut().unwrap();
            for r in reqs {
                tx.push_request(r).unwrap();
            }
            let _ = tx.push_requests_and_check_notify();
            Xen(&*self.guest).evtchn_send(self.port).unwrap();
        }

        /// The tx ring's `req_event` as netback left it.
        pub fn tx_req_event(&self) -> u32 {
            self.tx_mem.load_u32(hypercall::abi::ring::REQ_EVENT)
        }

        /// `n` tx responses (bounded wait), or fewer if the backend stopped.
        pub fn responses(&mut self, n: usize, be: &NetBackend) -> Vec<TxResponse> {
            let tx = self.tx.as_mut().unwrap();
            let mut out = Vec::new();
            let end = std::time::Instant::now() + STEP;
            while out.len() < n && std::time::Instant::now() < end && be.stats().fatal == 0 {
                match tx.poll_response().unwrap() {
                    Some(r) => out.push(r),
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            out
        }
    }

    /// A tx request.
    pub fn tx(gref: GrantRef, offset: u16, flags: u16, id: u16, size: u16) -> TxRequest {
        TxRequest {
            gref: gref.0,
            offset,
            flags,
            id,
            size,
        }
    }

    /// A chain of `extras` multicast extra-info slots and `data` data slots of 64
    /// bytes each (a frame of `64 * data` bytes, from the four data pages).
    pub fn chain(n: &RawNet, extras: usize, data: usize) -> Vec<TxRequest> {
        let total = 64 * data as u16;
        let mut flags = if data > 1 { NETTXF_MORE_DATA } else { 0 };
        if extras > 0 {
            flags |= NETTXF_EXTRA_INFO;
        }
        let slot = |i: usize| (n.data[i % 4].1, (64 * (i / 4)) as u16);
        let (g, off) = slot(0);
        let mut v = vec![tx(g, off, flags, 0, total)];
        for e in 0..extras {
            let more = if e + 1 < extras { EXTRA_FLAG_MORE } else { 0 };
            let x = ExtraInfo::mcast(netif::EXTRA_TYPE_MCAST_ADD, [1, 0, 0x5e, 0, 0, 1], more);
            v.push(TxRequest::from(x));
        }
        for i in 1..data {
            let (g, off) = slot(i);
            let f = if i + 1 < data { NETTXF_MORE_DATA } else { 0 };
            v.push(tx(g, off, f, i as u16, 64));
        }
        v
    }

    pub fn fill_frame(n: &RawNet, dst: Mac, src: Mac) {
        for (i, (m, _)) in n.data.iter().enumerate() {
            m.fill(0, PAGE_SIZE, 0x30 + i as u8);
        }
        // The frame's first slot starts it: an Ethernet header there.
        let (m, _) = &n.data[0];
        m.write(0, &dst.0);
        m.write(6, &src.0);
        m.write(12, &[0x88, 0xb5]);
    }
}

/// Tx chains at netback's slot limits, from a raw frontend: 24 slots (4
/// extra-info slots and 20 data slots, the most of each) are one frame, answered
/// OKAY slot by slot (RSP_NULL for the extras); a 21st data slot is a fatal
/// protocol error. A GSO descriptor of an unknown type is an error for that
/// frame only. (`chain_state`: `i > MAX_TX_SLOTS` as `>=` and `==`;
/// `check_tx_chain`: the extra-info loop's `i += 1` as `*=`, which counted an
/// extra-info slot as a data slot; `t != GSO_TYPE_TCPV6` as `==`, which took an
/// unknown GSO type; `1 + more.len()` as `*`, which took 21 data slots.)
#[test]
fn tx_chains_at_the_slot_limits() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (dom, be) = guest_with_vif(&hv, &br, "raw", 1, NetConfig::default());
    let mut n = raw::RawNet::connect(&hv, &dom);
    assert!(be.wait_connected(STEP));
    raw::fill_frame(&n, mac(2), mac(1));
    // One extra-info slot and 20 data slots: the extra is not a data slot.
    n.push(&raw::chain(&n, 1, 20));
    let st: Vec<i16> = n.responses(21, &be).iter().map(|r| r.status).collect();
    assert_eq!(st.len(), 21, "{:?}", be.stats());
    assert_eq!(st[1], hypercall::abi::netif::RSP_NULL);
    let s = be.stats();
    assert_eq!((s.tx_frames, s.tx_errors, s.fatal), (1, 0, 0), "{s:?}");
    let c = raw::chain(&n, 4, 20);
    assert_eq!(c.len(), xen_backends::net::MAX_TX_SLOTS);
    n.push(&c);
    let r = n.responses(24, &be);
    let st: Vec<i16> = r.iter().map(|r| r.status).collect();
    let mut want = vec![hypercall::abi::netif::RSP_OKAY];
    want.extend([hypercall::abi::netif::RSP_NULL; 4]);
    want.extend([hypercall::abi::netif::RSP_OKAY; 19]);
    assert_eq!(st, want, "{:?}", be.stats());
    let s = be.stats();
    assert_eq!((s.tx_frames, s.tx_errors, s.fatal), (2, 0, 0), "{s:?}");
    // A GSO descriptor of no known type: the frame is refused (RSP_ERROR), the
    // vif stays up.
    let mut c = raw::chain(&n, 0, 2);
    c[0].flags |= hypercall::abi::netif::NETTXF_EXTRA_INFO;
    let x = hypercall::abi::netif::ExtraInfo::gso(1448, 7, 0, 0);
    c.insert(1, hypercall::abi::netif::TxRequest::from(x));
    n.push(&c);
    let st: Vec<i16> = n.responses(3, &be).iter().map(|r| r.status).collect();
    use hypercall::abi::netif::{RSP_ERROR, RSP_NULL};
    assert_eq!(st, [RSP_ERROR, RSP_NULL, RSP_ERROR], "{:?}", be.stats());
    assert_eq!(be.stats().fatal, 0);
    // One data slot more (21, no extras: 21 slots in all, within MAX_TX_SLOTS):
    // fatal.
    n.push(&raw::chain(&n, 0, 21));
    let end = std::time::Instant::now() + STEP;
    while be.stats().fatal == 0 {
        assert!(std::time::Instant::now() < end, "21 data slots accepted");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A tx chain that still says `more_data` on its `MAX_TX_SLOTS`th slot (4
/// extra-info slots and 20 data slots, the last one flagged) can only grow past
/// the limit: netback fails the vif at once, without waiting for a slot the
/// frontend may never send. (`tx_collect`: the partial chain's bound
/// `chain.len() < MAX_TX_SLOTS` as `true` or `<=`, which kept the chain open.)
#[test]
fn a_chain_still_open_at_the_slot_limit_is_fatal_at_once() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (dom, be) = guest_with_vif(&hv, &br, "raw", 1, NetConfig::default());
    let mut n = raw::RawNet::connect(&hv, &dom);
    assert!(be.wait_connected(STEP));
    raw::fill_frame(&n, mac(2), mac(1));
    let mut c = raw::chain(&n, 4, 20);
    assert_eq!(c.len(), xen_backends::net::MAX_TX_SLOTS);
    c.last_mut().unwrap().flags |= hypercall::abi::netif::NETTXF_MORE_DATA;
    n.push(&c);
    let end = std::time::Instant::now() + STEP;
    while be.stats().fatal == 0 {
        assert!(
            std::time::Instant::now() < end,
            "a chain open at {} slots kept waiting: {:?}",
            c.len(),
            be.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(be.stats().tx_frames, 0);
}

/// Netback's tx rounds and `req_event`, one round at a time on a stepped
/// backend: a round that does not re-arm leaves `req_event` alone, whatever it
/// found (so a frontend that keeps sending has no reason to notify); the
/// re-arming round a worker runs before it sleeps takes the requests that came
/// since the last round and sets `req_event` one past them; and with more than
/// [`TX_BATCH`](xen_backends::net::TX_BATCH) waiting it stops after a batch
/// like any round. (`tx_collect`'s end of a round, `handled >= TX_BATCH ||
/// !arm`: as `&&`, or with the `!` deleted, a round without `arm` re-armed;
/// with `&&` a re-arming round with more than a batch waiting spun. Its
/// `handled < TX_BATCH` as `<=` took a request more per round.) Only a
/// race between a worker's last idle round and its re-arming round reaches
/// these with the pool; `step_tx_round` runs them one by one.
#[test]
fn tx_rounds_re_arm_only_when_asked() {
    use xen_backends::net::TX_BATCH;
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let cfg = NetConfig {
        stepped: true,
        ..NetConfig::default()
    };
    let (dom, be) = guest_with_vif(&hv, &br, "raw", 1, cfg);
    let mut n = raw::RawNet::connect(&hv, &dom);
    assert!(be.wait_connected(STEP));
    raw::fill_frame(&n, mac(2), mac(1));
    let ev0 = n.tx_req_event();
    // Three frames, a round without re-arming: taken, answered, req_event kept.
    let f = raw::chain(&n, 0, 1).repeat(3);
    n.push(&f);
    assert!(be.step_tx_round(0, false));
    assert_eq!(n.responses(3, &be).len(), 3, "{:?}", be.stats());
    assert_eq!(n.tx_req_event(), ev0, "a round without arm moved req_event");
    assert!(!be.step_tx_round(0, false));
    assert_eq!(
        n.tx_req_event(),
        ev0,
        "an idle round without arm moved req_event"
    );
    // Three more before the re-arming round: it takes them, then re-arms.
    let f = raw::chain(&n, 0, 1).repeat(3);
    n.push(&f);
    assert!(be.step_tx_round(0, true));
    assert_eq!(n.responses(3, &be).len(), 3, "{:?}", be.stats());
    assert_eq!(n.tx_req_event(), 7, "the re-arming round left req_event");
    // More than a batch before the re-arming round: one batch, then the rest.
    let f = raw::chain(&n, 0, 1).repeat(TX_BATCH + 2);
    n.push(&f);
    assert!(be.step_tx_round(0, true));
    assert_eq!(be.stats().tx_frames, 6 + TX_BATCH as u64, "not one batch");
    assert_eq!(n.responses(TX_BATCH, &be).len(), TX_BATCH);
    assert_eq!(n.tx_req_event(), 7, "a full re-arming round re-armed");
    assert!(be.step_tx_round(0, true));
    assert_eq!(n.responses(2, &be).len(), 2, "{:?}", be.stats());
    assert_eq!(n.tx_req_event(), 7 + TX_BATCH as u32 + 2);
    let s = be.stats();
    assert_eq!((s.tx_frames, s.fatal), (8 + TX_BATCH as u64, 0), "{s:?}");
}
