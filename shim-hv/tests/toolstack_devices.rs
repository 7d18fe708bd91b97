//! The daemon attaches a config's disks and vifs (in-process, no sockets): the
//! built-in guests connect them and reach each other over the in-process bridge; a
//! restart re-attaches under the new domid with the same MAC and disk; destroy
//! leaves no backend nodes; a generated MAC is locally administered and the vif script sees the
//! backend MAC (guest MAC XOR 00:00:00:01:00:00); a device that fails under the
//! guest is reported on its console and the guest keeps running.

mod toolstack_util;

use std::sync::Arc;
use std::time::Duration;

use hypercall::DomId;
use shim_hv::toolstack::daemon::Daemon;
use shim_hv::toolstack::runtime::RuntimeDir;
use shim_hv::toolstack::PowerRequest;
use toolstack_util::{builtin_cfg, wait_for, TempDir};
use xenstored::TxId;
use xl_config::DomainConfig;

const READY: &str = "waiting for control/shutdown";
const LONG: Duration = Duration::from_secs(60);

fn daemon(tmp: &TempDir) -> Arc<Daemon> {
    let d = Daemon::new(RuntimeDir::at(tmp.path().join("rt")));
    d.set_quiet(true);
    d
}

fn create(d: &Arc<Daemon>, name: &str, extra: &str) -> DomId {
    let cfg = DomainConfig::parse_str("t.cfg", &builtin_cfg(name, extra)).unwrap();
    let id = d.create(cfg).unwrap();
    wait_console(d, id, READY);
    id
}

fn wait_console(d: &Daemon, id: DomId, text: &str) {
    if let Err(e) = d.console(id).unwrap().wait_for(text.as_bytes(), LONG) {
        panic!("domain {}: no {text:?} on the console: {e}", id.0);
    }
}

fn read(d: &Daemon, path: &str) -> Option<String> {
    d.hypervisor()
        .xenstored()
        .client(0)
        .read(TxId::NONE, path)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn write(d: &Daemon, path: &str, v: &str) {
    d.hypervisor()
        .xenstored()
        .client(0)
        .write(TxId::NONE, path, v.as_bytes())
        .unwrap();
}

/// Asks guest `id` to ping `addr`; returns (replies, sent) from its console line.
/// (Reachability is asserted as "at least one reply": on a loaded machine a reply
/// may come after the guest's per-request wait.)
fn ping(d: &Daemon, id: DomId, addr: &str) -> (u32, u32) {
    let con = d.console(id).unwrap();
    let from = con.history().len();
    write(d, &format!("/local/domain/{}/data/ping", id.0), addr);
    let head = format!("ping {addr}: ");
    let line = wait_for(60, || {
        let h = con.history();
        let text = String::from_utf8_lossy(h.get(from..)?).into_owned();
        let at = text.find(&head)?;
        let rest = &text[at + head.len()..];
        let line = rest.split('\n').next()?.to_string();
        rest.contains('\n').then_some(line)
    })
    .unwrap_or_else(|| panic!("no ping result for {addr}"));
    let (r, s) = line
        .strip_suffix(" replies")
        .and_then(|x| x.split_once('/'))
        .unwrap_or_else(|| panic!("bad ping line {line:?}"));
    (r.parse().unwrap(), s.parse().unwrap())
}

fn ids_named(d: &Daemon, name: &str) -> Vec<u16> {
    d.list()
        .into_iter()
        .filter(|i| i.name == name)
        .map(|i| i.id)
        .collect()
}

/// Waits until `dom`'s vif `n` is Connected on both ends (`network-list` data).
fn wait_vif_connected(d: &Daemon, dom: &str, n: u32) {
    let ok = wait_for(60, || {
        let (_, devs) = d.devices(dom, "vif").ok()?;
        let v = devs.into_iter().find(|v| v.devid == n)?;
        (v.frontend_state == Some(4) && v.backend_state == Some(4)).then_some(())
    });
    assert!(ok.is_some(), "vif {n} of {dom} never connected");
}

/// Waits until `dom`'s disk `n` is Connected on both ends (`block-list` data).
fn wait_vbd_connected(d: &Daemon, dom: &str, n: u32) {
    let ok = wait_for(60, || {
        let (_, devs) = d.devices(dom, "vbd").ok()?;
        let v = devs.into_iter().find(|v| v.devid == n)?;
        (v.frontend_state == Some(4) && v.backend_state == Some(4)).then_some(())
    });
    assert!(ok.is_some(), "disk {n} of {dom} never connected");
}

#[test]
fn two_guests_on_one_bridge_ping_each_other() {
    let tmp = TempDir::new("dev-ping");
    let d = daemon(&tmp);
    let a = create(
        &d,
        "pa",
        "vif = [ 'mac=00:16:3e:00:01:01,bridge=xenbr7,ip=10.7.0.1' ]\n",
    );
    let b = create(&d, "pb", "vif = [ 'bridge=xenbr7,ip=10.7.0.2' ]\n");
    wait_console(&d, a, "nic 0: mac 00:16:3e:00:01:01");
    wait_console(&d, a, "ip 10.7.0.1/24");
    wait_console(&d, b, "ip 10.7.0.2/24");
    wait_vif_connected(&d, "pa", 0);
    wait_vif_connected(&d, "pb", 0);

    let (got, sent) = ping(&d, a, "10.7.0.2");
    assert!(got >= 1 && sent == 3, "{got}/{sent}");
    assert_eq!(
        read(&d, &format!("/local/domain/{}/data/ping-result", a.0)),
        Some(format!("{got}/{sent}"))
    );
    let (got, _) = ping(&d, b, "10.7.0.1");
    assert!(got >= 1);

    // Nobody answers for an address that is not on the bridge.
    assert_eq!(ping(&d, a, "10.7.0.99"), (0, 3));

    // `list -l` shows the backends' event service (docs/hostile-input.md E1):
    // the vif's pool ran for the pings, the console's for the guest's output.
    let long = d.list_long(&["pa".into()]).unwrap();
    let ev = &long[0]["backend_events"];
    let vif = &ev["vif"][0];
    assert!(vif["runs"].as_u64().unwrap() > 0, "{ev}");
    assert!(
        vif["spurious_events"].is_u64() && vif["backoffs"].is_u64(),
        "{ev}"
    );
    assert!(ev["console"]["runs"].as_u64().unwrap() > 0, "{ev}");
    assert_eq!(ev["vbd"], serde_json::json!([]), "{ev}");

    for (n, id) in [("pa", a), ("pb", b)] {
        d.shutdown(n, PowerRequest::Poweroff).unwrap();
        assert!(d.wait_gone(id, LONG));
    }
}

/// Review defect (issue 16): a second guest asking for a MAC already on its bridge is
/// refused with one line naming the file, both vifs and the MAC; the first keeps it.
#[test]
fn a_mac_already_on_the_bridge_refuses_the_second_guest() {
    let tmp = TempDir::new("dev-dupmac");
    let d = daemon(&tmp);
    let vif = "vif = [ 'mac=00:16:3e:00:02:02,bridge=xenbr8' ]\n";
    let a = create(&d, "da", vif);
    let cfg = DomainConfig::parse_str("t.cfg", &builtin_cfg("db", vif)).unwrap();
    let e = d.create(cfg).unwrap_err().to_string();
    assert!(
        e.contains("t.cfg")
            && e.contains(&format!("vif{}.0", a.0))
            && e.contains("00:16:3e:00:02:02")
            && e.contains("xenbr8")
            && !e.contains('\n'),
        "{e}"
    );
    wait_vif_connected(&d, "da", 0);
    d.shutdown("da", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(a, LONG));
}

#[test]
fn guests_on_different_bridges_do_not_reach_each_other() {
    let tmp = TempDir::new("dev-bridges");
    let d = daemon(&tmp);
    let a = create(&d, "ba", "vif = [ 'bridge=brA,ip=10.8.0.1' ]\n");
    let _b = create(&d, "bb", "vif = [ 'bridge=brB,ip=10.8.0.2' ]\n");
    wait_console(&d, a, "ip 10.8.0.1/24");
    wait_vif_connected(&d, "bb", 0);
    assert_eq!(ping(&d, a, "10.8.0.2"), (0, 3));
}

#[test]
fn restart_reattaches_under_the_new_domid_and_destroy_cleans_up() {
    let tmp = TempDir::new("dev-restart");
    let img = tmp.path().join("rs.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let d = daemon(&tmp);
    // No mac=: one is generated at create time and kept across the restart.
    let id = create(
        &d,
        "rs",
        &format!(
            "on_reboot = 'restart'\nvif = [ '' ]\ndisk = [ 'file:{},xvda,w' ]\n",
            img.display()
        ),
    );
    wait_vif_connected(&d, "rs", 0);
    wait_vbd_connected(&d, "rs", 51712);
    wait_console(&d, id, "disk 51712 (xvda): 2048 sectors");
    let fe = format!("/local/domain/{}/device/vif/0", id.0);
    let mac = read(&d, &format!("{fe}/mac")).unwrap();
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 3, 2, "generated MAC {mac} is local unicast");
    assert_eq!(
        read(&d, &format!("{fe}/backend")).as_deref(),
        Some(format!("/local/domain/0/backend/vif/{}/0", id.0).as_str())
    );
    // xl's default bridge.
    assert_eq!(
        read(
            &d,
            &format!("/local/domain/0/backend/vif/{}/0/bridge", id.0)
        )
        .as_deref(),
        Some("xenbr0")
    );

    d.shutdown("rs", PowerRequest::Reboot).unwrap();
    assert!(d.wait_gone(id, LONG));
    let new = DomId(ids_named(&d, "rs")[0]);
    assert_ne!(new, id);
    wait_console(&d, new, READY);
    wait_vif_connected(&d, "rs", 0);
    wait_vbd_connected(&d, "rs", 51712);
    wait_console(&d, new, "disk 51712 (xvda): 2048 sectors");
    assert_eq!(
        read(
            &d,
            &format!("/local/domain/{}/device/vbd/51712/backend", new.0)
        )
        .as_deref(),
        Some(format!("/local/domain/0/backend/vbd/{}/51712", new.0).as_str())
    );
    assert_eq!(
        read(&d, &format!("/local/domain/0/backend/vbd/{}", id.0)),
        None
    );
    let be = format!("/local/domain/0/backend/vif/{}/0", new.0);
    assert_eq!(
        read(&d, &format!("/local/domain/{}/device/vif/0/backend", new.0)).as_deref(),
        Some(be.as_str())
    );
    assert_eq!(read(&d, &format!("{be}/mac")), Some(mac.clone()));
    assert_eq!(
        read(&d, &format!("{be}/frontend-id")),
        Some(new.0.to_string())
    );
    // The old domain's backend is gone.
    assert_eq!(
        read(&d, &format!("/local/domain/0/backend/vif/{}", id.0)),
        None
    );

    d.destroy("rs").unwrap();
    assert_eq!(
        read(&d, &format!("/local/domain/0/backend/vif/{}", new.0)),
        None
    );
    assert_eq!(
        read(&d, &format!("/local/domain/0/backend/vbd/{}", new.0)),
        None
    );
    assert_eq!(
        read(&d, "/local/domain/0/backend"),
        None,
        "no backend nodes left"
    );
    assert_eq!(read(&d, &format!("/local/domain/{}", new.0)), None);
}

#[test]
fn vif_script_runs_up_and_down_with_the_backend_mac() {
    let tmp = TempDir::new("dev-script");
    let log = tmp.path().join("script.log");
    let script = tmp.write(
        "vif-test",
        &format!(
            "#!/bin/sh\necho \"$1 $2 $3 $4 $5 backend_mac=$backend_mac\" >> {}\n",
            log.display()
        ),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let d = daemon(&tmp);
    let id = create(
        &d,
        "sc",
        &format!(
            "vif = [ 'mac=00:16:3e:12:34:56,bridge=brS,script={}' ]\n",
            script.display()
        ),
    );
    wait_vif_connected(&d, "sc", 0);
    let be = format!("/local/domain/0/backend/vif/{}/0", id.0);
    let st = wait_for(30, || read(&d, &format!("{be}/hotplug-status")));
    assert_eq!(st.as_deref(), Some("connected"));
    d.shutdown("sc", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, LONG));
    let want_up = format!(
        "up domain={} vif=vif{}.0 mac=00:16:3e:12:34:56 bridge=brS backend_mac=00:16:3e:13:34:56",
        id.0, id.0
    );
    let text = wait_for(30, || {
        let t = std::fs::read_to_string(&log).ok()?;
        t.contains("down ").then_some(t)
    })
    .expect("the script ran `down`");
    assert!(text.contains(&want_up), "{text}");
}

#[test]
fn a_failing_vif_is_reported_and_the_guest_keeps_running() {
    let tmp = TempDir::new("dev-fail");
    let img = tmp.path().join("fl.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let d = daemon(&tmp);
    let id = create(
        &d,
        "fl",
        &format!(
            "vif = [ 'bridge=brF' ]\ndisk = [ 'file:{},xvdb,w' ]\nextra = 'heartbeat=100'\n",
            img.display()
        ),
    );
    wait_vif_connected(&d, "fl", 0);
    wait_vbd_connected(&d, "fl", 51728);
    // The backends go away under the guest (as a dom0 that closes the devices).
    let be = format!("/local/domain/0/backend/vif/{}/0", id.0);
    write(&d, &format!("{be}/state"), "6");
    wait_console(&d, id, "nic 0: ");
    wait_console(&d, id, "; dropped");
    let be = format!("/local/domain/0/backend/vbd/{}/51728", id.0);
    write(&d, &format!("{be}/state"), "6");
    wait_console(&d, id, "disk 51728 (xvdb): xenbus: ");
    // Still alive: the heartbeat goes on and a power request is obeyed.
    let hb = format!("/local/domain/{}/data/heartbeat", id.0);
    let before: u64 = wait_for(30, || read(&d, &hb))
        .unwrap_or_else(|| {
            panic!(
                "{}",
                String::from_utf8_lossy(&d.console(id).unwrap().history())
            )
        })
        .parse()
        .unwrap();
    assert!(wait_for(30, || {
        let now: u64 = read(&d, &hb)?.parse().ok()?;
        (now > before).then_some(())
    })
    .is_some());
    let con = d.console(id).unwrap();
    d.shutdown("fl", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, LONG));
    let text = String::from_utf8_lossy(&con.history()).into_owned();
    assert!(text.contains("power: poweroff"), "{text}");
}
