//! Two in-process guests running smoltcp over xennet-front, netback and the bridge:
//! ping each other, then hold a TCP connection carrying 10 MiB, every byte checked
//! against the generator on the receiving side (TCP checksums verified by smoltcp).

mod net_util;

use std::time::Duration;

use hypercall::Platform;
use net_util::*;
use smoltcp::iface::{Config as IfConfig, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{ChecksumCapabilities, Device};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};
use xen_backends::bridge::Bridge;
use xen_backends::net::NetConfig;
use xen_model::inproc::InProcGuest;
use xennet_front::{Config, Mac, SmolDevice};

const TOTAL: u64 = 10 << 20;
const PORT: u16 = 7000;
const A_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const B_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

fn gen(i: u64) -> u8 {
    ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8) ^ (i as u8)
}

fn fnv(h: u64, b: &[u8]) -> u64 {
    b.iter()
        .fold(h, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

fn now(p: &InProcGuest) -> Instant {
    Instant::from_micros((p.now_ns() / 1000) as i64)
}

fn iface(
    dev: &mut SmolDevice<'_, '_, &InProcGuest, NG, 4>,
    p: &InProcGuest,
    mac: Mac,
    ip: Ipv4Address,
) -> Interface {
    let mut cfg = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
    cfg.random_seed = u64::from(ip.octets()[3]) * 7919;
    let mut i = Interface::new(cfg, dev, now(p));
    i.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap();
    });
    i
}

/// Polls until `done` or the deadline, waiting on events in between.
fn run(
    p: &InProcGuest,
    iface: &mut Interface,
    dev: &mut SmolDevice<'_, '_, &InProcGuest, NG, 4>,
    sockets: &mut SocketSet<'_>,
    secs: u64,
    mut step: impl FnMut(&mut SocketSet<'_>, &mut Interface) -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = p.now_ns() + secs * 1_000_000_000;
    loop {
        let t = now(p);
        iface.poll(t, dev, sockets);
        if step(sockets, iface)? {
            return Ok(());
        }
        if p.now_ns() > deadline {
            return Err("deadline".into());
        }
        match iface.poll_delay(t, sockets) {
            Some(d) if d.total_micros() == 0 => {}
            _ => p.wait(),
        }
    }
}

#[test]
fn ping_and_ten_mib_over_tcp() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (da, ba) = guest_with_vif(&hv, &br, "a", 1, NetConfig::default());
    let (db, bb) = guest_with_vif(&hv, &br, "b", 2, NetConfig::default());

    // B: TCP server; checks every byte; answers pings (smoltcp does that itself).
    let rb = run_guest(
        &hv,
        db,
        Config::default(),
        |nf, p| -> Result<(u64, u64), String> {
            let (mut rxb, mut txb) = (vec![0u8; 1514], vec![0u8; 1514]);
            let mut dev = SmolDevice::new(nf, &mut rxb, &mut txb);
            let mut iface = iface(&mut dev, p, mac(2), B_IP);
            let mut storage = [SocketStorage::EMPTY; 2];
            let mut sockets = SocketSet::new(&mut storage[..]);
            let (mut r, mut t) = (vec![0u8; 256 << 10], vec![0u8; 16 << 10]);
            let mut sock = tcp::Socket::new(
                tcp::SocketBuffer::new(&mut r[..]),
                tcp::SocketBuffer::new(&mut t[..]),
            );
            sock.listen(PORT).map_err(|e| format!("{e:?}"))?;
            let h = sockets.add(sock);
            let (mut got, mut hash, mut buf) =
                (0u64, 0xcbf2_9ce4_8422_2325u64, vec![0u8; 64 << 10]);
            let mut seen_open = false;
            run(p, &mut iface, &mut dev, &mut sockets, 240, |s, _| {
                let sock = s.get_mut::<tcp::Socket>(h);
                if sock.is_active() {
                    seen_open = true;
                }
                while sock.can_recv() {
                    let n = sock.recv_slice(&mut buf).map_err(|e| format!("{e:?}"))?;
                    for (k, &b) in buf[..n].iter().enumerate() {
                        if b != gen(got + k as u64) {
                            return Err(format!("byte {} differs", got + k as u64));
                        }
                    }
                    hash = fnv(hash, &buf[..n]);
                    got += n as u64;
                }
                if seen_open && !sock.may_recv() && got >= TOTAL {
                    sock.close();
                    return Ok(true);
                }
                Ok(false)
            })?;
            // Let the FIN/ACK go out.
            let end = p.now_ns() + 200_000_000;
            while p.now_ns() < end {
                iface.poll(now(p), &mut dev, &mut sockets);
                p.wait();
            }
            Ok((got, hash))
        },
    );

    // A: ping B three times, then connect and send 10 MiB.
    let ra = run_guest(
        &hv,
        da,
        Config::default(),
        |nf, p| -> Result<(u64, u64, u32), String> {
            let (mut rxb, mut txb) = (vec![0u8; 1514], vec![0u8; 1514]);
            let mut dev = SmolDevice::new(nf, &mut rxb, &mut txb);
            let caps = dev.capabilities();
            let mut iface = iface(&mut dev, p, mac(1), A_IP);
            let mut storage = [SocketStorage::EMPTY; 2];
            let mut sockets = SocketSet::new(&mut storage[..]);
            let (mut im, mut id, mut om, mut od) = (
                [icmp::PacketMetadata::EMPTY; 4],
                vec![0u8; 2048],
                [icmp::PacketMetadata::EMPTY; 4],
                vec![0u8; 2048],
            );
            let mut isock = icmp::Socket::new(
                icmp::PacketBuffer::new(&mut im[..], &mut id[..]),
                icmp::PacketBuffer::new(&mut om[..], &mut od[..]),
            );
            isock
                .bind(icmp::Endpoint::Ident(0x22))
                .map_err(|e| format!("{e:?}"))?;
            let ih = sockets.add(isock);
            let mut replies = 0u32;
            let mut sent_seq = 0u16;
            let mut last_send = 0u64;
            let payload = *b"xenkit ping payload!";
            run(p, &mut iface, &mut dev, &mut sockets, 60, |s, _| {
                let sock = s.get_mut::<icmp::Socket>(ih);
                if sock.can_send()
                    && sent_seq == replies as u16
                    && sent_seq < 3
                    && p.now_ns() > last_send + 50_000_000
                {
                    let repr = Icmpv4Repr::EchoRequest {
                        ident: 0x22,
                        seq_no: sent_seq,
                        data: &payload,
                    };
                    let buf = sock
                        .send(repr.buffer_len(), IpAddress::Ipv4(B_IP))
                        .map_err(|e| format!("{e:?}"))?;
                    repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps.checksum);
                    sent_seq += 1;
                    last_send = p.now_ns();
                }
                while sock.can_recv() {
                    let (data, from) = sock.recv().map_err(|e| format!("{e:?}"))?;
                    let pkt = Icmpv4Packet::new_checked(data).map_err(|e| format!("{e:?}"))?;
                    let repr = Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default())
                        .map_err(|e| format!("{e:?}"))?;
                    if let Icmpv4Repr::EchoReply {
                        ident: 0x22,
                        seq_no,
                        data,
                    } = repr
                    {
                        if from == IpAddress::Ipv4(B_IP)
                            && seq_no == replies as u16
                            && data == payload
                        {
                            replies += 1;
                        }
                    }
                }
                Ok(replies == 3)
            })?;

            let (mut r, mut t) = (vec![0u8; 16 << 10], vec![0u8; 256 << 10]);
            let sock = tcp::Socket::new(
                tcp::SocketBuffer::new(&mut r[..]),
                tcp::SocketBuffer::new(&mut t[..]),
            );
            let th = sockets.add(sock);
            {
                let cx = iface.context();
                sockets
                    .get_mut::<tcp::Socket>(th)
                    .connect(cx, (IpAddress::Ipv4(B_IP), PORT), 49152)
                    .map_err(|e| format!("{e:?}"))?;
            }
            let (mut sent, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
            let mut chunk = vec![0u8; 64 << 10];
            run(p, &mut iface, &mut dev, &mut sockets, 240, |s, _| {
                let sock = s.get_mut::<tcp::Socket>(th);
                while sock.can_send() && sent < TOTAL {
                    let n = (TOTAL - sent).min(chunk.len() as u64) as usize;
                    for (k, b) in chunk[..n].iter_mut().enumerate() {
                        *b = gen(sent + k as u64);
                    }
                    let w = sock.send_slice(&chunk[..n]).map_err(|e| format!("{e:?}"))?;
                    hash = fnv(hash, &chunk[..w]);
                    sent += w as u64;
                    if w < n {
                        break;
                    }
                }
                if sent >= TOTAL && sock.may_send() {
                    sock.close();
                }
                Ok(sent >= TOTAL && !sock.is_open())
            })?;
            Ok((sent, hash, replies))
        },
    );

    let a = ra
        .recv_timeout(Duration::from_secs(600))
        .expect("guest A ended");
    let b = rb
        .recv_timeout(Duration::from_secs(600))
        .expect("guest B ended");
    let (sent, ha, pings) = a.expect("guest A");
    let (got, hb) = b.expect("guest B");
    assert_eq!(pings, 3);
    assert_eq!((sent, got), (TOTAL, TOTAL));
    assert_eq!(ha, hb, "stream hash");
    let (sa, sb) = (ba.stats(), bb.stats());
    assert!(
        sa.tx_bytes >= TOTAL && sb.rx_bytes >= TOTAL,
        "{sa:?} {sb:?}"
    );
    assert_eq!(sa.fatal + sb.fatal + sa.tx_errors + sb.tx_errors, 0);
}
