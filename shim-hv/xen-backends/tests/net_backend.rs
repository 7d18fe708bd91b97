//! netback's control side: xenstore nodes like libxl's, MACs, the vif script,
//! reconnects.

mod net_util;

use std::time::Duration;

use net_util::*;
use xen_backends::bridge::Bridge;
use xen_backends::net::{random_mac, NetBackend, NetConfig};
use xennet_front::{Config, Mac, TxMeta};
use xenstored::TxId;

#[test]
fn random_macs_are_local_unicast_and_differ() {
    let a: Vec<Mac> = (0..64).map(|_| random_mac()).collect();
    for m in &a {
        assert!(m.is_local() && !m.is_multicast(), "{m}");
    }
    let mut s = a.clone();
    s.sort();
    s.dedup();
    assert_eq!(s.len(), a.len());
}

#[test]
fn nodes_macs_and_the_vif_script() {
    let dir = std::env::temp_dir().join(format!("xenkit-vif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let script = dir.join("vif-test");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$* | env domain=$domain vif=$vif mac=$mac bridge=$bridge devid=$devid backend_mac=$backend_mac path=$XENBUS_PATH\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let hv = hv();
    let br = Bridge::new("xenbr7");
    let dom = domain(&hv, "s", 48);
    let cfg = NetConfig {
        mac: Some(Mac::parse(b"aa:00:00:50:02:f0").unwrap()),
        script: Some(script.clone()),
        ..NetConfig::default()
    };
    let be = NetBackend::start(&hv, dom.id(), br.clone(), cfg).unwrap();
    assert_eq!(be.backend_mac().to_string(), "aa:00:00:51:02:f0");
    assert_eq!(be.vif_name(), format!("vif{}.0", dom.id().0));
    let xs = hv.xenstored().client(0);
    let read = |p: &str| String::from_utf8(xs.read(TxId::NONE, p).unwrap()).unwrap();
    let bp = be.backend_path().to_string();
    assert_eq!(bp, format!("/local/domain/0/backend/vif/{}/0", dom.id().0));
    assert_eq!(read(&format!("{bp}/mac")), "aa:00:00:50:02:f0");
    assert_eq!(read(&format!("{bp}/bridge")), "xenbr7");
    assert_eq!(read(&format!("{bp}/feature-rx-copy")), "1");
    assert_eq!(read(&format!("{bp}/state")), "2");
    let fp = format!("/local/domain/{}/device/vif/0", dom.id().0);
    assert_eq!(read(&format!("{fp}/mac")), "aa:00:00:50:02:f0");
    assert_eq!(read(&format!("{fp}/backend")), bp);

    // Connect, reconnect, close.
    let rx = {
        let (tx, rx) = std::sync::mpsc::channel();
        let _h = hv
            .spawn_guest(dom.clone(), move |g| {
                let p: &xen_model::inproc::InProcGuest = &g;
                let table: Box<hypercall::gnttab::GrantTable<NG>> =
                    Box::new(hypercall::gnttab::GrantTable::setup(p, 16).unwrap());
                let mut xs = xenbus::Xenstore::from_hvm_params(p).unwrap();
                let mut dev = xennet_front::NetFront::<_, _, 4>::connect(
                    p,
                    &*table,
                    &mut xs,
                    0,
                    Config::default(),
                    STEP,
                )
                .unwrap();
                assert_eq!(dev.mac().to_string(), "aa:00:00:50:02:f0");
                dev.close(&mut xs, Duration::from_secs(5)).unwrap();
                assert_eq!(table.in_use(), 0);
                dev.reconnect(&mut xs, STEP).unwrap();
                let f = ip_frame(Mac::BROADCAST, dev.mac(), false, false, 50, 1);
                send_meta(&mut dev, &f, TxMeta::default()).unwrap();
                // Connecting in place is refused while connected, fine after close.
                assert!(matches!(
                    dev.connect_in_place(&mut xs, 0, STEP),
                    Err(xennet_front::Error::InUse)
                ));
                dev.close(&mut xs, Duration::from_secs(5)).unwrap();
                dev.connect_in_place(&mut xs, 0, STEP).unwrap();
                dev.close(&mut xs, Duration::from_secs(5)).unwrap();
                let _ = tx.send(table.in_use());
            })
            .unwrap();
        rx
    };
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(300));
    let s = be.stats();
    assert_eq!(s.connects, 3);
    assert_eq!(s.tx_frames, 1);
    be.destroy();
    assert!(
        xs.read(TxId::NONE, &bp).is_err(),
        "backend directory removed"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    let d = dom.id().0;
    let want_up = format!(
        "up domain={d} vif=vif{d}.0 mac=aa:00:00:50:02:f0 bridge=xenbr7 | env domain={d} vif=vif{d}.0 mac=aa:00:00:50:02:f0 bridge=xenbr7 devid=0 backend_mac=aa:00:00:51:02:f0 path={bp}"
    );
    let lines: Vec<&str> = log.lines().collect();
    // Three connections: connect, reconnect, connect_in_place.
    assert_eq!(lines.len(), 6, "{log}");
    for pair in lines.chunks(2) {
        assert_eq!(pair[0], want_up);
        assert!(pair[1].starts_with("down domain="));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A slow vif script delays only its own vif: while one vif's `up` script is
/// still running (it waits for a file the test creates), another vif connects.
/// (Scripts used to run on the vif control loop, so the second vif's connect
/// waited until the first script ended, or was killed at `SCRIPT_TIMEOUT`, and
/// the first vif's `hotplug-status` was written by then.)
#[test]
fn a_slow_vif_script_does_not_delay_another_vifs_connect() {
    let dir = std::env::temp_dir().join(format!("xenkit-vif-slow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let started = dir.join("started");
    let release = dir.join("release");
    let script = dir.join("vif-slow");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh
[ \"$1\" = up ] || exit 0
touch {}
while [ ! -e {} ]; do sleep 0.02; done
",
            started.display(),
            release.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(std::time::Instant::now() < end, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    let hv = hv();
    let br = Bridge::new("xenbr-slow");
    let xs = hv.xenstored().client(0);
    let status = |be: &NetBackend| {
        xs.read(TxId::NONE, &format!("{}/hotplug-status", be.backend_path()))
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    // The slow vif connects; its script starts and waits.
    let cfg = NetConfig {
        script: Some(script.clone()),
        ..NetConfig::default()
    };
    let (dom_a, slow) = guest_with_vif(&hv, &br, "slow", 21, cfg);
    let (done_a, hold_a) = pipe::<()>();
    let ra = run_guest(&hv, dom_a, Config::default(), move |_, _| {
        let _ = hold_a.recv_timeout(Duration::from_secs(120));
    });
    wait("the slow vif's script started", &|| started.exists());

    // Another vif connects meanwhile.
    let (dom_b, quick) = guest_with_vif(&hv, &br, "quick", 22, NetConfig::default());
    let rb = run_guest(&hv, dom_b, Config::default(), |_, _| ());
    rb.recv_timeout(Duration::from_secs(60))
        .expect("the second vif connected");
    assert_eq!(
        status(&slow),
        None,
        "the slow script had already ended when the second vif connected"
    );
    assert!(!release.exists());

    // The slow script ends: its vif's status follows.
    std::fs::write(&release, b"").unwrap();
    wait("the slow vif's hotplug-status", &|| {
        status(&slow).as_deref() == Some("connected")
    });
    drop(done_a);
    ra.recv_timeout(Duration::from_secs(60))
        .expect("slow guest");
    quick.destroy();
    slow.destroy();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A guest that restarts without closing its vif (a reboot or kexec: the new kernel
/// resets its watches and connects again from `Initialising` while the backend is
/// still `Connected`) gets a working vif: the backend drops the old rings and offers
/// again (it used to restart only from `Closed`, and the new kernel waited forever).
#[test]
fn a_frontend_restarting_without_closing_reconnects() {
    let hv = hv();
    let br = Bridge::new("xenbr-restart");
    let (dom, be) = guest_with_vif(&hv, &br, "restart", 9, NetConfig::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let _h = hv
        .spawn_guest(dom, move |g| {
            let p: &xen_model::inproc::InProcGuest = &g;
            let table: Box<hypercall::gnttab::GrantTable<NG>> =
                Box::new(hypercall::gnttab::GrantTable::setup(p, 16).unwrap());
            let mut xs = xenbus::Xenstore::from_hvm_params(p).unwrap();
            let r = (|| -> Result<(), String> {
                let mut old = xennet_front::NetFront::<_, _, 4>::connect(
                    p,
                    &*table,
                    &mut xs,
                    0,
                    Config::default(),
                    STEP,
                )
                .map_err(|e| format!("first connect: {e}"))?;
                let f = ip_frame(Mac::BROADCAST, old.mac(), false, false, 50, 1);
                send_meta(&mut old, &f, TxMeta::default())?;
                // The "new kernel": the old device is simply abandoned (its grants
                // stay granted), watches are reset as Linux's xs_reset_watches does.
                std::mem::forget(old);
                let mut reply = [0u8; 16];
                xs.request(
                    xenbus::TxId::NONE,
                    hypercall::abi::xs_wire::msg::RESET_WATCHES,
                    &[b"\0"],
                    &mut reply,
                )
                .map_err(|e| format!("reset watches: {e}"))?;
                let mut new = xennet_front::NetFront::<_, _, 4>::connect(
                    p,
                    &*table,
                    &mut xs,
                    0,
                    Config::default(),
                    STEP,
                )
                .map_err(|e| format!("connect after restart: {e}"))?;
                let f = ip_frame(Mac::BROADCAST, new.mac(), false, false, 60, 2);
                send_meta(&mut new, &f, TxMeta::default())?;
                new.close(&mut xs, STEP).map_err(|e| format!("close: {e}"))
            })();
            let _ = tx.send(r);
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(120)).unwrap().unwrap();
    // The backend may count the last frame a little after the guest's close: wait
    // for it (the bound is a hang guard only).
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while be.stats().tx_frames < 2 && std::time::Instant::now() < end {
        std::thread::yield_now();
    }
    let s = be.stats();
    assert_eq!((s.connects, s.tx_frames), (2, 2));
    be.destroy();
}
