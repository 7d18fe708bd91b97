//! Late EOI on the host side (docs/hostile-input.md E1, row 24): a guest that
//! storms a backend's event channel with notifications that carry no work costs
//! a few runs of a pool worker, not one per notification (the `runs`,
//! `spurious_events` and `backoffs` counters of blkback, netback and the console
//! backend); work it publishes during the storm is still done, within the delay
//! in force (at most 1 s); and another device served by the same pool is never
//! held back meanwhile.
//!
//! The storms are paced (a 1 ms pause every 250 notifications, so each lasts
//! half a second or more, as a guest looping on a timer would storm). The bounds
//! on runs are counts, not times: per streak of spurious notifications (the work
//! published halfway through ends the first) two free runs, one per doubling of
//! the delay (1 ms to 1 s), one for what came during the last delay, and one a
//! second after that; the storm's length only says how many "seconds after
//! that" there were. Without the back-off each storm below costs hundreds of
//! runs or more.

mod blk_util;
mod console_util;
mod net_util;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypercall::{Port, Xen};
use xen_backends::bridge::Bridge;
use xen_backends::console::{ConsoleConfig, Sink};
use xen_backends::net::NetConfig;
use xen_model::inproc::InProcGuest;

/// Notifications in each storm.
const STORM: u32 = 100_000;
/// Hang guard for every wait (a loaded machine is slow; a hang is a failure).
const GUARD: Duration = Duration::from_secs(120);
/// How late work published during a storm may be answered: the longest delay
/// (1 s) and room for a loaded machine.
const ANSWER_BOUND: Duration = Duration::from_millis(2500);

/// Runs a storm of `took` may cost (module docs): two streaks of 2 + 10 + 1
/// runs, one a second after, and slack.
fn runs_allowed(took: Duration) -> u64 {
    30 + 2 * took.as_secs()
}

/// `STORM` notifications on `ports` (in turn) from guest `p`; `at(i)` is called
/// before notification `i`. How long it took.
fn storm(
    p: &InProcGuest,
    ports: &[Port],
    mut at: impl FnMut(u32) -> Result<(), String>,
) -> Result<Duration, String> {
    let xen = Xen(p);
    let start = Instant::now();
    for i in 0..STORM {
        if i % 250 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        at(i)?;
        let port = ports[i as usize % ports.len()];
        xen.evtchn_send(port).map_err(|e| format!("send: {e:?}"))?;
    }
    Ok(start.elapsed())
}

/// A disk whose guest storms it: a few runs; a read submitted halfway through
/// is answered within the delay in force; another disk reads throughout,
/// never held back.
#[test]
fn blkback_storm_backs_off_and_others_are_served() {
    use blk_util::*;
    use xbd_front::Config;
    let hv = hv();
    let dir = TempDir::new("storm");
    let (img_a, img_b) = (image(&dir, "a.img", 1 << 20), image(&dir, "b.img", 1 << 20));
    let expected = std::fs::read(&img_a).unwrap();
    let (dom_a, dom_b) = (domain(&hv, "storm-a", 32), domain(&hv, "storm-b", 32));
    let be_a = backend(&hv, &dom_a, file_cfg(&img_a));
    let be_b = backend(&hv, &dom_b, file_cfg(&img_b));

    // B reads one block at a time until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let b_reads = Arc::new(AtomicU64::new(0));
    let (go_tx, go_rx) = channel::<()>();
    let (stop2, reads2) = (stop.clone(), b_reads.clone());
    let rb = spawn_guest(&hv, dom_b, XVDA, Config::default(), move |d, _, _| {
        let mut b = vec![0u8; 4096];
        let mut k = 0u64;
        while !stop2.load(Ordering::SeqCst) {
            let t = d
                .submit_read((k % 256) * 8, 4096)
                .map_err(|e| e.to_string())?;
            while !d.is_done(t).map_err(|e| e.to_string())? {
                d.poll().map_err(|e| e.to_string())?;
            }
            d.finish(t, &mut [&mut b[..]]).map_err(|e| e.to_string())?;
            k += 1;
            reads2.store(k, Ordering::SeqCst);
            if k == 1 {
                let _ = go_tx.send(());
            }
        }
        Ok::<u64, String>(k)
    });
    go_rx.recv_timeout(GUARD).expect("disk B reads");

    let reads_b = b_reads.clone();
    let ra = spawn_guest(&hv, dom_a, XVDA, Config::default(), move |d, xs, _| {
        let p = *xs.platform();
        let port = d.port().ok_or("no port")?;
        let mut read = None;
        let mut answered = None;
        let mut b_during = (0, 0);
        let took = storm(p, &[port], |i| {
            if i == 0 {
                b_during.0 = reads_b.load(Ordering::SeqCst);
            }
            if i == STORM / 2 {
                let t = d.submit_read(0, 4096).map_err(|e| e.to_string())?;
                read = Some((t, Instant::now()));
            }
            if let (Some((t, at)), None) = (read, answered) {
                if i % 64 == 0 {
                    d.poll().map_err(|e| e.to_string())?;
                    if d.is_done(t).map_err(|e| e.to_string())? {
                        answered = Some(at.elapsed());
                    }
                }
            }
            Ok(())
        })?;
        b_during.1 = reads_b.load(Ordering::SeqCst);
        let (t, at) = read.ok_or("no read")?;
        while answered.is_none() {
            d.poll().map_err(|e| e.to_string())?;
            if d.is_done(t).map_err(|e| e.to_string())? {
                answered = Some(at.elapsed());
            } else if at.elapsed() > GUARD {
                return Err("the read published during the storm was never answered".into());
            }
        }
        let mut buf = vec![0u8; 4096];
        d.finish(t, &mut [&mut buf[..]])
            .map_err(|e| e.to_string())?;
        if buf[..] != expected[..4096] {
            return Err("the read's data differs".into());
        }
        Ok::<_, String>((took, answered.unwrap_or_default(), b_during))
    });
    let r = ra.recv_timeout(GUARD);
    stop.store(true, Ordering::SeqCst);
    let (took, answered, b_during) = match r {
        Ok(Ok(Ok(v))) => v,
        other => panic!("storming guest: {other:?}"),
    };
    let rb = rb.recv_timeout(GUARD);
    assert!(matches!(rb, Ok(Ok(Ok(_)))), "disk B's guest: {rb:?}");

    let (a, b) = (be_a.stats(), be_b.stats());
    println!("storm of {STORM} in {took:?}: disk A {a:?}; disk B {b:?}; read answered after {answered:?}");
    assert!(
        a.runs <= runs_allowed(took),
        "{} runs for {STORM} empty notifications in {took:?}: {a:?}",
        a.runs
    );
    assert!(a.spurious_events >= 2 && a.backoffs >= 1, "{a:?}");
    assert!(a.notifications_received > u64::from(STORM), "{a:?}");
    assert!(
        answered <= ANSWER_BOUND,
        "the read published during the storm was answered after {answered:?}"
    );
    assert_eq!(b.backoffs, 0, "disk B held back: {b:?}");
    assert!(
        b_during.1 > b_during.0,
        "disk B read nothing during the storm: {b_during:?}"
    );
    be_a.destroy();
    be_b.destroy();
}

/// A vif whose guest storms its tx and rx ports: a few runs; a frame it sends
/// halfway through still reaches its peer within the delay in force; another
/// vif's frames flow throughout, and that vif is never held back.
#[test]
fn netback_storm_backs_off_and_others_are_served() {
    use net_util::*;
    use xennet_front::Config;
    const FROM_C: u32 = 50;
    let hv = hv();
    let br = Bridge::new("xenbr-storm");
    let (da, ba) = guest_with_vif(&hv, &br, "storm-a", 1, NetConfig::default());
    let (db, bb) = guest_with_vif(&hv, &br, "storm-b", 2, NetConfig::default());
    let (dc, bc) = guest_with_vif(&hv, &br, "storm-c", 3, NetConfig::default());
    let (ma, mb, mc) = (mac(1), mac(2), mac(3));

    // B: receives until it has A's frame and C's, noting when A's came.
    let (b_ready_tx, b_ready_rx) = pipe::<()>();
    let rb = run_guest(&hv, db, Config::default(), move |dev, _| {
        // Let the bridge learn B.
        dev.send(&ip_frame(ma, mb, false, false, 20, 0))
            .map_err(|e| e.to_string())?;
        let _ = b_ready_tx.send(());
        let mut buf = vec![0u8; xennet_front::MAX_FRAME];
        let (mut from_a, mut from_c) = (None, 0u32);
        let end = Instant::now() + GUARD;
        while (from_a.is_none() || from_c < FROM_C) && Instant::now() < end {
            if dev
                .recv_timeout(&mut buf, Duration::from_millis(100))
                .map_err(|e| e.to_string())?
                .is_some()
            {
                if buf[6..12] == ma.0 && from_a.is_none() {
                    from_a = Some(Instant::now());
                } else if buf[6..12] == mc.0 {
                    from_c += 1;
                }
            }
        }
        Ok::<_, String>((from_a, from_c))
    });
    b_ready_rx.recv_timeout(GUARD).expect("B up");

    // C: sends to B throughout A's storm, one frame at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let c_sent = Arc::new(AtomicU64::new(0));
    let (c_go_tx, c_go_rx) = pipe::<()>();
    let (stop2, sent2) = (stop.clone(), c_sent.clone());
    let rc = run_guest(&hv, dc, Config::default(), move |dev, _| {
        let mut n = 0;
        while n < FROM_C || !stop2.load(Ordering::SeqCst) {
            if n < FROM_C {
                dev.send(&ip_frame(mb, mc, false, false, 100, n as u8))
                    .map_err(|e| e.to_string())?;
                n += 1;
                sent2.store(u64::from(n), Ordering::SeqCst);
                if n == 1 {
                    let _ = c_go_tx.send(());
                }
            }
            dev.poll().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok::<u32, String>(n)
    });
    c_go_rx.recv_timeout(GUARD).expect("C sends");

    let sent_c = c_sent.clone();
    let ra = run_guest(&hv, da, Config::default(), move |dev, p| {
        let (tx, rx) = dev.ports(0).ok_or("no ports")?;
        let mut sent_at = None;
        let mut c_during = (0, 0);
        let took = storm(p, &[tx, rx], |i| {
            if i == 0 {
                c_during.0 = sent_c.load(Ordering::SeqCst);
            }
            if i == STORM / 2 {
                dev.send(&ip_frame(mb, ma, false, false, 200, 0xa))
                    .map_err(|e| e.to_string())?;
                sent_at = Some(Instant::now());
            }
            Ok(())
        })?;
        c_during.1 = sent_c.load(Ordering::SeqCst);
        Ok::<_, String>((took, sent_at.ok_or("not sent")?, c_during))
    });
    let (took, sent_at, c_during) = match ra.recv_timeout(GUARD) {
        Ok(Ok(v)) => v,
        other => panic!("storming guest: {other:?}"),
    };
    let (from_a, from_c) = match rb.recv_timeout(GUARD) {
        Ok(Ok(v)) => v,
        other => panic!("guest B: {other:?}"),
    };
    stop.store(true, Ordering::SeqCst);
    let rc = rc.recv_timeout(GUARD);
    assert!(matches!(rc, Ok(Ok(FROM_C))), "guest C: {rc:?}");

    let (a, c) = (ba.stats(), bc.stats());
    let late = from_a.map(|t| t.saturating_duration_since(sent_at));
    println!(
        "storm of {STORM} in {took:?}: vif A {a:?}; vif C {c:?}; A's frame arrived after {late:?}"
    );
    assert!(
        a.runs <= runs_allowed(took),
        "{} runs for {STORM} empty notifications in {took:?}: {a:?}",
        a.runs
    );
    assert!(a.spurious_events >= 2 && a.backoffs >= 1, "{a:?}");
    let late = late.expect("A's frame, sent during the storm, reached B");
    assert!(
        late <= ANSWER_BOUND,
        "A's frame sent during the storm arrived after {late:?}"
    );
    assert_eq!(a.tx_frames, 1, "{a:?}");
    assert_eq!(from_c, FROM_C, "C's frames at B");
    assert_eq!(c.backoffs, 0, "vif C held back: {c:?}");
    assert!(
        c_during.1 > c_during.0 || c_during.0 == u64::from(FROM_C),
        "C sent nothing during the storm: {c_during:?}"
    );
    for be in [ba, bb, bc] {
        be.destroy();
    }
}

/// A console whose guest storms its port: a few runs; a line it writes halfway
/// through arrives within the delay in force; another console's output flows
/// throughout, never held back.
#[test]
fn console_storm_backs_off_and_others_are_served() {
    use console_util::*;
    let t = setup(ConsoleConfig::default());
    let (dom_a, dom_b) = (t.domain("storm-a"), t.domain("storm-b"));
    let ca = t.consoles.start(&dom_a, Sink::None).unwrap();
    let cb = t.consoles.start(&dom_b, Sink::None).unwrap();

    // B writes a numbered line every few milliseconds until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let hb =
        t.hv.spawn_guest(dom_b, move |g| {
            let mut c = xencons::Console::from_hvm_params(&*g).expect("console");
            let mut n = 0u32;
            while !stop2.load(Ordering::SeqCst) {
                c.write(format!("b{n}\n").as_bytes()).expect("write");
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            c.write(b"b-done\n").expect("write");
        })
        .unwrap();
    cb.wait_for(b"b0\n", LONG).expect("B's output");

    let (at_tx, at_rx) = channel::<(Instant, Duration)>();
    let ha =
        t.hv.spawn_guest(dom_a, move |g| {
            let mut c = xencons::Console::from_hvm_params(&*g).expect("console");
            let port = c.port();
            let mut written = None;
            let took = storm(&g, &[port], |i| {
                if i == STORM / 2 {
                    c.write(b"MARK written during the storm\n")
                        .map_err(|e| format!("{e:?}"))?;
                    written = Some(Instant::now());
                }
                Ok(())
            })
            .expect("storm");
            let _ = at_tx.send((written.expect("written"), took));
        })
        .unwrap();
    let b_before = cb.stats().ring_bytes;
    ca.wait_for(b"MARK written during the storm\n", GUARD)
        .expect("the line written during the storm");
    let arrived = Instant::now();
    let (written, took) = at_rx.recv_timeout(GUARD).expect("the storm ended");
    let b_after = cb.stats().ring_bytes;
    stop.store(true, Ordering::SeqCst);
    join_poweroff(ha);
    join_poweroff(hb);
    cb.wait_for(b"b-done\n", LONG).expect("B's last line");

    let (a, b) = (ca.stats(), cb.stats());
    let late = arrived.saturating_duration_since(written);
    println!("storm of {STORM} in {took:?}: console A {a:?}; console B {b:?}; A's line arrived after {late:?}");
    assert!(
        a.runs <= runs_allowed(took),
        "{} runs for {STORM} empty notifications in {took:?}: {a:?}",
        a.runs
    );
    assert!(a.spurious_events >= 2 && a.backoffs >= 1, "{a:?}");
    assert!(a.kicks > u64::from(STORM), "{a:?}");
    assert!(late <= ANSWER_BOUND, "A's line arrived after {late:?}");
    assert_eq!(b.backoffs, 0, "console B held back: {b:?}");
    assert!(
        b_after > b_before,
        "console B carried nothing during the storm"
    );
}

/// Waits (hang guard only) until `f` holds.
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + GUARD;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Input a client writes into a console's ring (on the client's thread, not in
/// a run of the pool) is work: it ends the console's streak of spurious
/// notifications, so the guest's next one (its answer to the input, say) is
/// free again rather than held back.
#[test]
fn console_input_ends_a_streak_of_spurious_notifications() {
    use console_util::*;
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("streak");
    let c = t.consoles.start(&dom, Sink::None).unwrap();
    let c2 = c.clone();
    let h =
        t.hv.spawn_guest(dom, move |g| {
            let cons = xencons::Console::from_hvm_params(&*g).expect("console");
            let xen = Xen(&*g);
            let notify_once = || {
                let before = c2.stats().spurious_events;
                xen.evtchn_send(cons.port()).expect("send");
                wait_until("the notification's run", || {
                    c2.stats().spurious_events > before
                });
            };
            // A streak: held back at least once.
            while c2.stats().backoffs == 0 {
                notify_once();
            }
            // Input arrives (the guest does not read it: reading notifies).
            assert_eq!(c2.send_input(b"x"), 1);
            let backoffs = c2.stats().backoffs;
            notify_once();
            assert_eq!(
                c2.stats().backoffs,
                backoffs,
                "held back after input: {:?}",
                c2.stats()
            );
        })
        .unwrap();
    join_poweroff(h);
    assert_eq!(c.stats().input_bytes, 1);
}

/// Frames a vif's rx buffers take (on the sender's netback worker, not in a run
/// of the vif's own queue) are work: they end the vif's streak of spurious
/// notifications, so its next one is free again rather than held back.
#[test]
fn netback_rx_delivery_ends_a_streak_of_spurious_notifications() {
    use net_util::*;
    use xennet_front::{Config, Mac};
    let hv = hv();
    let br = Bridge::new("xenbr-streak");
    let (da, ba) = guest_with_vif(&hv, &br, "streak-a", 1, NetConfig::default());
    let (db, bb) = guest_with_vif(&hv, &br, "streak-b", 2, NetConfig::default());
    let ba = Arc::new(ba);
    let (streak_tx, streak_rx) = pipe::<()>();
    let (sent_tx, sent_rx) = pipe::<()>();
    let ba2 = ba.clone();
    let ra = run_guest(&hv, da, Config::default(), move |dev, p| {
        let (_, rx) = dev.ports(0).ok_or("no ports")?;
        let xen = Xen(p);
        let notify_once = || -> Result<(), String> {
            let before = ba2.stats().spurious_events;
            xen.evtchn_send(rx).map_err(|e| format!("{e:?}"))?;
            wait_until("the notification's run", || {
                ba2.stats().spurious_events > before
            });
            Ok(())
        };
        while ba2.stats().backoffs == 0 {
            notify_once()?;
        }
        let _ = streak_tx.send(());
        sent_rx.recv_timeout(GUARD).map_err(|e| e.to_string())?;
        wait_until("B's frame in A's buffers", || ba2.stats().rx_frames > 0);
        let backoffs = ba2.stats().backoffs;
        notify_once()?;
        let after = ba2.stats();
        if after.backoffs != backoffs {
            return Err(format!("held back after a frame arrived: {after:?}"));
        }
        Ok::<(), String>(())
    });
    let rb = run_guest(&hv, db, Config::default(), move |dev, _| {
        streak_rx.recv_timeout(GUARD).map_err(|e| e.to_string())?;
        dev.send(&ip_frame(Mac([0xff; 6]), mac(2), false, false, 60, 1))
            .map_err(|e| e.to_string())?;
        let _ = sent_tx.send(());
        Ok::<(), String>(())
    });
    let r = ra.recv_timeout(GUARD);
    assert!(matches!(r, Ok(Ok(()))), "guest A: {r:?}");
    let r = rb.recv_timeout(GUARD);
    assert!(matches!(r, Ok(Ok(()))), "guest B: {r:?}");
    drop(ba);
    bb.destroy();
}
