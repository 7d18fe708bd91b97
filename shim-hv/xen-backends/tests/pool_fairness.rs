//! The `blkio` pool serves every disk's queues with a few workers; a queue is
//! served for a bounded run (64 requests) before the other waiting queues get
//! theirs (docs/backend-threads.md). Here more disks than the pool has workers
//! keep their rings full without pause, and one more disk does a few reads one
//! at a time: its reads all complete while the flood goes on, and every flooding
//! disk makes progress too. (Real frontends' rings do run dry now and then, so
//! this end-to-end check holds even without the bound; the pool's own tests,
//! with queues that never run dry, check the bound itself.)

mod blk_util;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use blk_util::*;
use xbd_front::Config;

const GUARD: Duration = Duration::from_secs(120);

#[test]
fn flooding_disks_do_not_starve_a_quiet_one() {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let flooders = workers + 1;
    let hv = hv();
    let dir = TempDir::new("fair");
    let stop = Arc::new(AtomicBool::new(false));
    let mut backends = Vec::new();
    let mut floods = Vec::new();
    let (started_tx, started_rx) = channel::<()>();
    let counts: Vec<Arc<AtomicU64>> = (0..flooders).map(|_| Arc::default()).collect();
    for (i, done) in counts.iter().enumerate() {
        let img = image(&dir, &format!("flood{i}.img"), 1 << 20);
        let dom = domain(&hv, &format!("flood{i}"), 32);
        backends.push(backend(&hv, &dom, file_cfg(&img)));
        let (stop, done, started) = (stop.clone(), done.clone(), started_tx.clone());
        floods.push(spawn_guest(
            &hv,
            dom,
            XVDA,
            Config::default(),
            move |d, _, _| {
                // Keep as many reads in flight as the ring takes, resubmitting each
                // one as soon as it completes, until told to stop.
                let mut b = vec![0u8; 4096];
                let mut inflight = Vec::new();
                let mut k = 0u64;
                let mut told = false;
                while !stop.load(Ordering::SeqCst) {
                    loop {
                        match d.submit_read((k % 256) * 8, 4096) {
                            Ok(t) => inflight.push(t),
                            Err(xbd_front::Error::Busy) => break,
                            Err(e) => return Err(e.to_string()),
                        }
                        k += 1;
                    }
                    d.poll().map_err(|e| e.to_string())?;
                    let mut i = 0;
                    while i < inflight.len() {
                        if d.is_done(inflight[i]).map_err(|e| e.to_string())? {
                            let t = inflight.swap_remove(i);
                            d.finish(t, &mut [&mut b[..]]).map_err(|e| e.to_string())?;
                            done.fetch_add(1, Ordering::SeqCst);
                        } else {
                            i += 1;
                        }
                    }
                    if !told && done.load(Ordering::SeqCst) > 0 {
                        told = true;
                        let _ = started.send(());
                    }
                }
                for t in inflight {
                    while !d.is_done(t).map_err(|e| e.to_string())? {
                        d.poll().map_err(|e| e.to_string())?;
                    }
                    d.finish(t, &mut [&mut b[..]]).map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            },
        ));
    }
    for _ in 0..flooders {
        started_rx
            .recv_timeout(GUARD)
            .expect("every flooding disk got going");
    }
    let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();

    // The quiet disk: 50 reads, one at a time, each checked.
    let img = image(&dir, "quiet.img", 1 << 20);
    let expected = std::fs::read(&img).unwrap();
    let dom = domain(&hv, "quiet", 32);
    backends.push(backend(&hv, &dom, file_cfg(&img)));
    let quiet = spawn_guest(&hv, dom, XVDA, Config::default(), move |d, _, _| {
        let mut b = vec![0u8; 4096];
        for k in 0..50u64 {
            let t = d.submit_read(k * 8, 4096).map_err(|e| e.to_string())?;
            while !d.is_done(t).map_err(|e| e.to_string())? {
                d.poll().map_err(|e| e.to_string())?;
            }
            d.finish(t, &mut [&mut b[..]]).map_err(|e| e.to_string())?;
            if b[..] != expected[k as usize * 4096..][..4096] {
                return Err(format!("read {k} differs"));
            }
        }
        Ok::<(), String>(())
    });
    let r = quiet.recv_timeout(GUARD);
    let after: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    stop.store(true, Ordering::SeqCst);
    assert!(
        matches!(r, Ok(Ok(Ok(())))),
        "the quiet disk's reads while {flooders} disks flood a pool of {workers}: {r:?}"
    );
    for f in floods {
        let r = f.recv_timeout(GUARD);
        assert!(matches!(r, Ok(Ok(Ok(())))), "flooding guest: {r:?}");
    }
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "flooding disk {i} made no progress meanwhile: {b} then {a}"
        );
    }
    for be in backends {
        be.destroy();
    }
}
