//! Flow between guests on one bridge: a receiver that drains slowly gets every
//! frame (the sender's netback worker holds off, and the sender's own tx ring fills
//! up), while a receiver that stopped draining holds nobody up (its frames are
//! dropped). Waits are hang guards only.

mod net_util;

use std::time::{Duration, Instant};

use net_util::*;
use xen_backends::bridge::Bridge;
use xen_backends::net::NetConfig;
use xennet_front::{Config, Error, Mac, TxMeta, MAX_FRAME};

/// Hang guard for every wait here.
const GUARD: Duration = Duration::from_secs(120);

/// Sends `f`, retrying while the tx ring is full, until the hang guard.
fn send_patiently(dev: &mut Dev<'_>, f: &[u8]) -> Result<(), String> {
    let end = Instant::now() + GUARD;
    loop {
        match dev.send_frags(&[f], TxMeta::default()) {
            Ok(()) => return Ok(()),
            Err(Error::Busy) if Instant::now() < end => {
                dev.poll().map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn numbered(dst: Mac, src: Mac, n: u32) -> Vec<u8> {
    let mut f = ip_frame(dst, src, false, false, 1400, n as u8);
    let at = f.len() - 4;
    f[at..].copy_from_slice(&n.to_be_bytes());
    f
}

/// More frames than the receiver's ring and rx queue hold, sent as fast as the
/// sender's ring allows to a receiver that takes its time: all arrive, in order,
/// none dropped.
#[test]
fn a_slow_receiver_gets_every_frame() {
    const N: u32 = 3000;
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (da, ba) = guest_with_vif(&hv, &br, "fast", 1, NetConfig::default());
    let slow = NetConfig {
        // Small queue: backpressure starts early. Generous stall limit: a loaded
        // machine may not run the receiver for a while; it is still draining.
        rx_queue_frames: 64,
        rx_stall: Duration::from_secs(60),
        ..NetConfig::default()
    };
    let (db, bb) = guest_with_vif(&hv, &br, "slow", 2, slow);
    let (ready_tx, ready_rx) = pipe::<()>();
    let (got_tx, got_rx) = pipe::<()>(); // B → A: B has all N (or gave up)
    let rb = run_guest(&hv, db, Config::default(), move |dev, _| {
        // Let the bridge learn us, then tell A to start.
        dev.send(&ip_frame(Mac::BROADCAST, mac(2), false, false, 10, 0))
            .map_err(|e| e.to_string())?;
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; MAX_FRAME];
        let mut next = 0u32;
        let end = Instant::now() + GUARD;
        while next < N && Instant::now() < end {
            let Some(m) = dev
                .recv_timeout(&mut buf, Duration::from_millis(200))
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            if buf[..6] == [0xff; 6] {
                continue;
            }
            if buf[..m.len] != numbered(mac(2), mac(1), next)[..] {
                return Err(format!("frame {next} differs (len {})", m.len));
            }
            next += 1;
            if next.is_multiple_of(32) {
                // Slow: far slower than the sender.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = got_tx.send(());
        Ok::<u32, String>(next)
    });
    let ra = run_guest(&hv, da, Config::default(), move |dev, _| {
        ready_rx.recv().unwrap();
        for n in 0..N {
            send_patiently(dev, &numbered(mac(2), mac(1), n))?;
        }
        // Stay connected until B has them all: closing earlier could lose the last
        // frames (still in the ring while netback holds off for the slow receiver).
        wait_confirmed(&got_rx, "B")
    });
    assert_eq!(rb.recv_timeout(GUARD * 2).unwrap(), Ok(N));
    ra.recv_timeout(GUARD * 2).unwrap().unwrap();
    let (sa, sb) = (ba.stats(), bb.stats());
    assert_eq!(sb.rx_dropped, 0, "{sb:?}");
    assert_eq!(sa.fatal + sb.fatal, 0);
}

/// A guest that stops receiving (never posts another buffer) fills up and then
/// drops frames for itself, but the sender's frames to a third guest still go out.
#[test]
fn a_stuck_receiver_holds_nobody_up() {
    let hv = hv();
    let br = Bridge::new("xenbr0");
    let (da, _ba) = guest_with_vif(&hv, &br, "sender", 1, NetConfig::default());
    let stuck_cfg = NetConfig {
        rx_queue_frames: 32,
        rx_stall: Duration::from_millis(20),
        ..NetConfig::default()
    };
    let (ds, bs) = guest_with_vif(&hv, &br, "stuck", 2, stuck_cfg);
    let (dc, _bc) = guest_with_vif(&hv, &br, "good", 3, NetConfig::default());
    let (s_ready_tx, s_ready_rx) = pipe::<()>();
    let (c_ready_tx, c_ready_rx) = pipe::<()>();
    let (done_tx, done_rx) = pipe::<()>();
    let (got_tx, got_rx) = pipe::<()>(); // C → A: C has its 10 (or gave up)
                                         // The stuck guest: announces itself, then never receives.
    let _rs = run_guest(&hv, ds, Config::default(), move |dev, _| {
        dev.send(&ip_frame(Mac::BROADCAST, mac(2), false, false, 10, 0))
            .unwrap();
        s_ready_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(GUARD * 2);
    });
    let rc = run_guest(&hv, dc, Config::default(), move |dev, _| {
        dev.send(&ip_frame(Mac::BROADCAST, mac(3), false, false, 10, 0))
            .unwrap();
        c_ready_tx.send(()).unwrap();
        let got = recv_n(dev, 10, GUARD.as_secs()).map(|v| v.len());
        let _ = got_tx.send(());
        got
    });
    let ra = run_guest(&hv, da, Config::default(), move |dev, _| {
        s_ready_rx.recv().unwrap();
        c_ready_rx.recv().unwrap();
        // Far more than the stuck guest's 256 buffers and 32 queued frames.
        for n in 0..2000 {
            send_patiently(dev, &numbered(mac(2), mac(1), n))?;
        }
        for n in 0..10 {
            send_patiently(dev, &numbered(mac(3), mac(1), n))?;
        }
        // Stay connected until C has them: closing earlier could lose frames still
        // in flight.
        wait_confirmed(&got_rx, "C")
    });
    assert_eq!(rc.recv_timeout(GUARD * 2).unwrap(), Ok(10));
    ra.recv_timeout(GUARD * 2).unwrap().unwrap();
    let s = bs.stats();
    assert!(s.rx_dropped > 0, "{s:?}");
    assert!(s.rx_frames <= 256, "{s:?}");
    drop(done_tx);
}
