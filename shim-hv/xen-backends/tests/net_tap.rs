//! A host TAP device joined to the bridge, inside a network namespace this test
//! creates (`unshare(CLONE_NEWNET)` on its own thread; the host's interfaces are
//! never touched): the host side connects over TCP to a guest running smoltcp and
//! gets its data echoed back. Skipped, with a message, when not root, without
//! `/dev/net/tun`, or when namespaces are not allowed.

mod net_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use hypercall::Platform;
use net_util::*;
use smoltcp::iface::{Config as IfConfig, Interface, SocketSet, SocketStorage};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use xen_backends::bridge::Bridge;
use xen_backends::net::NetConfig;
use xen_backends::tap::{Tap, TapPort};
use xennet_front::{Config, SmolDevice};

fn skip(why: &str) {
    eprintln!("net_tap: SKIPPED: {why}");
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn host_reaches_guest_through_tap_in_a_netns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return skip("no /dev/net/tun");
    }
    // Everything host-side runs on this thread, which moves to a new netns.
    let t = std::thread::spawn(|| -> Result<(), String> {
        // SAFETY: unshare only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            skip(&format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
            return Ok(());
        }
        let tap = Tap::open("xktap0").map_err(|e| format!("tap: {e}"))?;
        let name = tap.name().to_string();
        if !(ip(&["link", "set", "lo", "up"])
            && ip(&["addr", "add", "10.9.0.1/24", "dev", &name])
            && ip(&["link", "set", &name, "up"]))
        {
            skip("the ip tool could not configure the namespace");
            return Ok(());
        }
        let hv = hv();
        let br = Bridge::new("xenbr0");
        let tapp = TapPort::attach(tap, br.clone()).map_err(|e| e.to_string())?;
        let (dg, bg) = guest_with_vif(&hv, &br, "g", 2, NetConfig::default());
        let rg = run_guest(&hv, dg, Config::default(), |nf, p| -> Result<u64, String> {
            let (mut rxb, mut txb) = (vec![0u8; 1514], vec![0u8; 1514]);
            let mut dev = SmolDevice::new(nf, &mut rxb, &mut txb);
            let now = |p: &xen_model::inproc::InProcGuest| {
                Instant::from_micros((p.now_ns() / 1000) as i64)
            };
            let mut cfg = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac(2).0)));
            cfg.random_seed = 42;
            let mut iface = Interface::new(cfg, &mut dev, now(p));
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(
                    IpAddress::Ipv4(Ipv4Address::new(10, 9, 0, 2)),
                    24,
                ))
                .unwrap();
            });
            let mut storage = [SocketStorage::EMPTY; 1];
            let mut sockets = SocketSet::new(&mut storage[..]);
            let (mut r, mut t) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(&mut r[..]),
                tcp::SocketBuffer::new(&mut t[..]),
            );
            s.listen(7000).map_err(|e| format!("{e:?}"))?;
            let h = sockets.add(s);
            let mut echoed = 0u64;
            let mut was_open = false;
            let deadline = p.now_ns() + 60_000_000_000;
            let mut buf = vec![0u8; 16 << 10];
            while p.now_ns() < deadline {
                iface.poll(now(p), &mut dev, &mut sockets);
                let s = sockets.get_mut::<tcp::Socket>(h);
                was_open |= s.state() == tcp::State::Established;
                while s.can_recv() && s.can_send() {
                    let room = s.send_capacity() - s.send_queue();
                    let take = room.min(buf.len());
                    let n = s
                        .recv_slice(&mut buf[..take])
                        .map_err(|e| format!("{e:?}"))?;
                    if n == 0 {
                        break;
                    }
                    s.send_slice(&buf[..n]).map_err(|e| format!("{e:?}"))?;
                    echoed += n as u64;
                }
                if was_open && !s.may_recv() && s.send_queue() == 0 {
                    s.close();
                }
                if was_open && !s.is_open() {
                    return Ok(echoed);
                }
                match iface.poll_delay(now(p), &sockets) {
                    Some(d) if d.total_micros() == 0 => {}
                    _ => p.wait(),
                }
            }
            Err(format!("guest deadline, echoed {echoed}"))
        });
        // Host side: connect from this namespace, send 1 MiB, read it back.
        let addr: SocketAddr = "10.9.0.2:7000".parse().unwrap();
        let mut conn = None;
        for _ in 0..100 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let Some(mut c) = conn else {
            let _ = Command::new("ip").args(["addr"]).status();
            let _ = Command::new("ip").args(["neigh"]).status();
            return Err(format!(
                "host could not connect to the guest: tap {:?} bridge {:?} vif {:?} ports {:?}",
                tapp.stats(),
                br.stats(),
                bg.stats(),
                br.port_names()
            ));
        };
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + (i >> 11)) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let d2 = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&d2).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back)
            .map_err(|e| format!("read back: {e}"))?;
        writer.join().unwrap();
        if back != data {
            return Err(format!(
                "echo differs ({} of {} bytes)",
                back.len(),
                data.len()
            ));
        }
        let echoed = rg
            .recv_timeout(Duration::from_secs(60))
            .map_err(|e| e.to_string())??;
        if echoed != data.len() as u64 {
            return Err(format!("guest echoed {echoed}"));
        }
        let ts = tapp.stats();
        if ts.from_host == 0 || ts.to_host == 0 {
            return Err(format!("tap counters {ts:?}"));
        }
        eprintln!("net_tap: {ts:?}, vif {:?}", bg.stats());
        Ok(())
    });
    t.join().expect("tap thread").expect("tap test");
}
