//! Helpers for the net_* tests: a hypervisor, guests running xennet-front in the
//! in-process runner, netbacks on a bridge.
#![allow(dead_code)]

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use hypercall::gnttab::GrantTable;
use xen_backends::bridge::Bridge;
use xen_backends::net::{NetBackend, NetConfig};
use xen_model::inproc::{GuestHandle, InProcGuest};
use xen_model::{Domain, DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::Xenstore;
use xennet_front::{Config, Mac, NetFront};

/// Grant refs a test guest's table holds (16 frames).
pub const NG: usize = 8192;
/// Per-step handshake timeout.
pub const STEP: Duration = Duration::from_secs(20);

/// Up to four queues (the multi-queue tests ask for them).
pub type Dev<'a> = NetFront<'a, &'a InProcGuest, NG, 4>;

pub fn hv() -> Arc<Hypervisor> {
    Hypervisor::new(HypervisorConfig::default())
}

pub fn domain(hv: &Hypervisor, name: &str, mib: u64) -> Arc<Domain> {
    hv.create_domain(DomainSpec::new(name, mib))
        .expect("create domain")
}

/// A MAC for test guest `n`.
pub fn mac(n: u8) -> Mac {
    Mac([0xaa, 0, 0, 0x50, 2, n])
}

/// A domain with a vif on `bridge`.
pub fn guest_with_vif(
    hv: &Arc<Hypervisor>,
    bridge: &Arc<Bridge>,
    name: &str,
    n: u8,
    cfg: NetConfig,
) -> (Arc<Domain>, NetBackend) {
    let dom = domain(hv, name, 48);
    let cfg = NetConfig {
        mac: Some(cfg.mac.unwrap_or(mac(n))),
        ..cfg
    };
    let be = NetBackend::start(hv, dom.id(), bridge.clone(), cfg).expect("netback");
    (dom, be)
}

/// Runs `body` as the guest: grant table, xenstore, NetFront::connect(vif 0).
/// The body gets the connected device; its result goes back through the handle.
pub fn run_guest<T, F>(hv: &Arc<Hypervisor>, dom: Arc<Domain>, cfg: Config, body: F) -> Receiver<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Dev<'_>, &InProcGuest) -> T + Send + 'static,
{
    let (tx, rx) = channel();
    let _h: GuestHandle = hv
        .spawn_guest(dom, move |g| {
            let p: &InProcGuest = &g;
            let table: Box<GrantTable<NG>> =
                Box::new(GrantTable::setup(p, (NG / 512) as u32).expect("grant table"));
            let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
            // Built in place (docs/stack.md), then connected through `&mut`.
            let mut dev: Box<Dev<'_>> = Box::new(NetFront::new(p, &*table, cfg));
            dev.connect_in_place(&mut xs, 0, STEP).expect("connect");
            let r = body(&mut dev, p);
            let _ = tx.send(r);
            let _ = dev.close(&mut xs, Duration::from_secs(5));
            assert_eq!(table.in_use(), 0, "every grant ended after close");
        })
        .expect("spawn guest");
    rx
}

/// A two-way channel pair for test ↔ guest coordination.
pub fn pipe<T>() -> (Sender<T>, Receiver<T>) {
    channel()
}

/// Test frames: Ethernet + IPv4/IPv6 + TCP/UDP with `payload` bytes.
pub fn ip_frame(dst: Mac, src: Mac, ipv6: bool, tcp: bool, payload: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    let l4len = if tcp { 20 } else { 8 } + payload;
    let proto = if tcp { 6 } else { 17 };
    if ipv6 {
        f.extend_from_slice(&[0x86, 0xdd]);
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = 64;
        ip[8] = 0xfd;
        ip[23] = src.0[5];
        ip[24] = 0xfd;
        ip[39] = dst.0[5];
        f.extend_from_slice(&ip);
    } else {
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 0, src.0[5]]);
        ip[16..20].copy_from_slice(&[10, 0, 0, dst.0[5]]);
        let c = xennet_front::csum::internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
    }
    let mut l4 = vec![0u8; l4len];
    l4[0..2].copy_from_slice(&4000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&5000u16.to_be_bytes());
    if tcp {
        l4[4..8].copy_from_slice(&77u32.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = 0x18;
    } else {
        l4[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
    }
    let h = if tcp { 20 } else { 8 };
    for (i, b) in l4[h..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(seed);
    }
    f.extend_from_slice(&l4);
    f
}

/// Sends, retrying while the ring is full.
pub fn send_meta(dev: &mut Dev<'_>, f: &[u8], meta: xennet_front::TxMeta) -> Result<(), String> {
    for _ in 0..100_000 {
        match dev.send_frags(&[f], meta) {
            Ok(()) => return Ok(()),
            Err(xennet_front::Error::Busy) => {
                dev.poll().map_err(|e| e.to_string())?;
                std::thread::yield_now();
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("tx ring stayed full".into())
}

/// Receives frames until `n` arrived (skipping broadcasts) or `secs` passed.
pub fn recv_n(
    dev: &mut Dev<'_>,
    n: usize,
    secs: u64,
) -> Result<Vec<(Vec<u8>, xennet_front::RxMeta)>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; xennet_front::MAX_FRAME];
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n && std::time::Instant::now() < end {
        if let Some(m) = dev
            .recv_timeout(&mut buf, Duration::from_millis(200))
            .map_err(|e| e.to_string())?
        {
            if buf[0..6] != [0xff; 6] {
                out.push((buf[..m.len].to_vec(), m));
            }
        }
    }
    Ok(out)
}

/// Hang guard for the end-of-test handshake: a failure timeout only, never a
/// speed requirement (progress is event driven).
pub const END_GUARD: Duration = Duration::from_secs(60);

/// The end-of-data marker for the flow `src` → `dst` (IPv4 or IPv6, ports as in
/// [`ip_frame`]): a small UDP frame with its own length and payload, so it cannot be
/// mistaken for a data frame. It has the addresses and ports of the data frames, so it
/// hashes to the same queue in the sending frontend and in netback, both of which keep
/// one flow in order: once the receiver has it, every earlier frame of that flow
/// arrived before it. Send it (with [`TxMeta::default`](xennet_front::TxMeta)) after
/// the flow's data frames.
pub fn end_marker(dst: Mac, src: Mac, ipv6: bool) -> Vec<u8> {
    ip_frame(dst, src, ipv6, false, 37, 0xe7)
}

/// Receives frames until every frame in `markers` arrived (see [`end_marker`]),
/// returning the other ones (broadcasts skipped, repeated markers ignored). Fails
/// with what it has if the markers are not all there after [`END_GUARD`].
pub fn recv_until_end(
    dev: &mut Dev<'_>,
    markers: &[Vec<u8>],
) -> Result<Vec<(Vec<u8>, xennet_front::RxMeta)>, String> {
    let mut out = Vec::new();
    let mut seen = vec![false; markers.len()];
    let mut buf = vec![0u8; xennet_front::MAX_FRAME];
    let end = std::time::Instant::now() + END_GUARD;
    while seen.iter().any(|s| !s) {
        if std::time::Instant::now() >= end {
            return Err(format!(
                "end markers not all received after {END_GUARD:?} (seen {seen:?}, {} data frames: {:?})",
                out.len(),
                out.iter().map(|(f, _): &(Vec<u8>, _)| f.len()).collect::<Vec<_>>()
            ));
        }
        let Some(m) = dev
            .recv_timeout(&mut buf, Duration::from_millis(200))
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let f = &buf[..m.len];
        if f[..6] == [0xff; 6] {
            continue;
        }
        match markers.iter().position(|k| k[..] == *f) {
            Some(i) => seen[i] = true,
            None => out.push((f.to_vec(), m)),
        }
    }
    Ok(out)
}

/// Waits until the peer guest confirms on `confirm` that it has everything, so the
/// caller does not tear its device down (and lose frames still in flight) before.
/// A peer that gave up (dropped its sender) ends the wait too: its own result says
/// why. Fails only if nothing happens within twice [`END_GUARD`].
pub fn wait_confirmed(confirm: &Receiver<()>, peer: &str) -> Result<(), String> {
    match confirm.recv_timeout(END_GUARD * 2) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Ok(()),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "{peer} did not confirm (or give up) within {:?}",
            END_GUARD * 2
        )),
    }
}

/// Runs only `NetFront::connect` in the guest and returns its result (the device is
/// closed again if it connected).
pub fn connect_result(
    hv: &Arc<Hypervisor>,
    dom: Arc<Domain>,
    cfg: Config,
) -> Result<(), xennet_front::Error> {
    let (tx, rx) = channel();
    let _h = hv
        .spawn_guest(dom, move |g| {
            let p: &InProcGuest = &g;
            let table: Box<GrantTable<NG>> =
                Box::new(GrantTable::setup(p, (NG / 512) as u32).expect("grant table"));
            let mut xs = Xenstore::from_hvm_params(p).expect("xenstore");
            let r = Dev::connect(p, &*table, &mut xs, 0, cfg, STEP);
            let r = match r {
                Ok(mut dev) => {
                    let _ = dev.close(&mut xs, Duration::from_secs(5));
                    Ok(())
                }
                Err(e) => Err(e),
            };
            let _ = tx.send((r, table.in_use()));
        })
        .expect("spawn guest");
    let (r, in_use) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("guest ended");
    assert_eq!(in_use, 0, "no grant left behind");
    r
}
