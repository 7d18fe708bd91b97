//! The daemon in-process (no sockets): on_poweroff / on_reboot / on_crash actions,
//! restart keeps name and UUID, and the control rows of docs/hostile-input.md (38: garbage
//! in control/shutdown; 39: repeated requests).

mod toolstack_util;

use std::sync::Arc;
use std::time::Duration;

use hypercall::DomId;
use shim_hv::toolstack::client::Client;
use shim_hv::toolstack::daemon::Daemon;
use shim_hv::toolstack::runtime::RuntimeDir;
use shim_hv::toolstack::{Error, PowerRequest};
use toolstack_util::{builtin_cfg, wait_for, TempDir};
use xenstored::TxId;
use xl_config::DomainConfig;

const READY: &str = "waiting for control/shutdown";
const LONG: Duration = Duration::from_secs(30);

fn daemon(tmp: &TempDir) -> Arc<Daemon> {
    let d = Daemon::new(RuntimeDir::at(tmp.path().join("rt")));
    d.set_quiet(true);
    d
}

fn create(d: &Arc<Daemon>, name: &str, extra: &str) -> DomId {
    let cfg = DomainConfig::parse_str("t.cfg", &builtin_cfg(name, extra)).unwrap();
    let id = d.create(cfg).unwrap();
    if let Err(e) = d.console(id).unwrap().wait_for(READY.as_bytes(), LONG) {
        panic!("guest did not come up: {e}");
    }
    id
}

fn ids_named(d: &Daemon, name: &str) -> Vec<u16> {
    d.list()
        .into_iter()
        .filter(|i| i.name == name)
        .map(|i| i.id)
        .collect()
}

#[test]
fn restart_keeps_name_and_uuid_with_a_new_id() {
    let tmp = TempDir::new("restart");
    let d = daemon(&tmp);
    let id = create(
        &d,
        "rs",
        "on_reboot = 'restart'\nuuid = '6a3c1f0e-7d0b-4c2a-9f3e-0123456789ab'\n",
    );
    let uuid = d.hypervisor().domain(id).unwrap().uuid();
    d.shutdown("rs", PowerRequest::Reboot).unwrap();
    assert!(d.wait_gone(id, LONG));
    let new = ids_named(&d, "rs");
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], id.0);
    let dom = d.hypervisor().domain(DomId(new[0])).unwrap();
    assert_eq!(dom.uuid(), uuid);
    assert_eq!(uuid.to_string(), "6a3c1f0e-7d0b-4c2a-9f3e-0123456789ab");
    // Its xenstore tree is the new domain's.
    let xs = d.hypervisor().xenstored().client(0);
    let name = xs
        .read(TxId::NONE, &format!("/local/domain/{}/name", new[0]))
        .unwrap();
    assert_eq!(name, b"rs");
    assert!(xs
        .read(TxId::NONE, &format!("/local/domain/{}/name", id.0))
        .is_err());
}

#[test]
fn actions_destroy_restart_preserve() {
    let tmp = TempDir::new("actions");
    let d = daemon(&tmp);
    // on_reboot = destroy: a reboot request ends the domain.
    let a = create(&d, "a", "on_reboot = 'destroy'\n");
    d.shutdown("a", PowerRequest::Reboot).unwrap();
    assert!(d.wait_gone(a, LONG));
    assert!(ids_named(&d, "a").is_empty());
    // on_poweroff = restart: halt brings it back.
    let b = create(&d, "b", "on_poweroff = 'restart'\n");
    d.shutdown("b", PowerRequest::Halt).unwrap();
    assert!(d.wait_gone(b, LONG));
    let nb = ids_named(&d, "b");
    assert_eq!(nb.len(), 1);
    assert_ne!(nb[0], b.0);
    // on_poweroff = preserve: stays, shut down, until destroyed.
    let c = create(&d, "c", "on_poweroff = 'preserve'\n");
    d.shutdown("c", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(c, LONG));
    let info = d.list().into_iter().find(|i| i.name == "c").unwrap();
    assert_eq!(info.state, "---s--");
    assert_eq!(info.reason.as_deref(), Some("poweroff"));
    d.destroy("c").unwrap();
    assert!(ids_named(&d, "c").is_empty());
    assert!(matches!(d.destroy("c"), Err(Error::NoSuchDomain(_))));
}

#[test]
fn kernel_configs_and_unsupported_actions_are_refused() {
    let tmp = TempDir::new("refuse");
    let d = daemon(&tmp);
    // A kernel that is not one: refused in one line naming it, nothing created.
    let k = tmp.path().join("not-a-kernel");
    std::fs::write(&k, "text").unwrap();
    let cfg = DomainConfig::parse_str(
        "k.cfg",
        &format!("name = 'k'\nkernel = '{}'\n", k.display()),
    )
    .unwrap();
    let e = d.create(cfg).unwrap_err();
    assert!(matches!(e, Error::Kernel { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.starts_with(&format!("k.cfg: kernel {}: not an ELF", k.display())),
        "{e}"
    );
    assert!(ids_named(&d, "k").is_empty());
    let cfg =
        DomainConfig::parse_str("k.cfg", "name = 'k'\non_crash = 'coredump-destroy'\n").unwrap();
    let e = d.create(cfg).unwrap_err().to_string();
    assert_eq!(
        e,
        "k.cfg: on_crash = \"coredump-destroy\" is not supported (shim-hv supports destroy, restart and preserve)"
    );
    assert!(d.hypervisor().domains().is_empty());
}

/// Row 38: garbage in `control/shutdown` is ignored with a warning (on the
/// guest's console) and the node is cleared; the guest keeps running and still
/// obeys a real request afterwards.
#[test]
fn row38_garbage_in_control_shutdown() {
    let tmp = TempDir::new("row38");
    let d = daemon(&tmp);
    let id = create(&d, "g", "");
    let node = format!("/local/domain/{}/control/shutdown", id.0);
    let xs = d.hypervisor().xenstored().client(0);
    let hub = d.console(id).unwrap();
    for (i, garbage) in [
        &b"bogus"[..],
        b"poweroff\0x",
        &[0xffu8; 40][..],
        &[b'a'; 3000][..],
    ]
    .into_iter()
    .enumerate()
    {
        xs.write(TxId::NONE, &node, garbage).unwrap();
        // The guest clears it...
        wait_for(30, || {
            (xs.read(TxId::NONE, &node).ok()? == b"").then_some(())
        })
        .unwrap_or_else(|| panic!("garbage {i} not cleared"));
        // ... and says so on its console.
        let want = "ignoring control/shutdown = ";
        wait_for(30, || {
            let log = String::from_utf8_lossy(&hub.history()).into_owned();
            (log.matches(want).count() > i).then_some(())
        })
        .unwrap_or_else(|| panic!("no warning for garbage {i}"));
        assert_eq!(ids_named(&d, "g"), [id.0], "garbage {i} changed the domain");
    }
    let log = String::from_utf8_lossy(&hub.history()).into_owned();
    assert!(
        log.contains("ignoring control/shutdown = \"bogus\""),
        "{log}"
    );
    // A real request still works.
    d.shutdown("g", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, LONG));
    assert!(ids_named(&d, "g").is_empty());
}

/// Row 39: a shutdown request repeated while the domain shuts down is idempotent:
/// one action only (with on_poweroff = restart: exactly one new domain).
#[test]
fn row39_repeated_requests_act_once() {
    let tmp = TempDir::new("row39");
    let d = daemon(&tmp);
    let id = create(&d, "r", "on_poweroff = 'restart'\n");
    let node = format!("/local/domain/{}/control/shutdown", id.0);
    let xs = d.hypervisor().xenstored().client(0);
    for _ in 0..20 {
        // Straight to the node: the toolstack's own check is bypassed.
        let _ = xs.write(TxId::NONE, &node, b"poweroff");
    }
    assert!(d.wait_gone(id, LONG));
    let new = ids_named(&d, "r");
    assert_eq!(new.len(), 1, "{new:?}");
    let newid = DomId(new[0]);
    assert!(d
        .console(newid)
        .unwrap()
        .wait_for(READY.as_bytes(), LONG)
        .is_ok());
    // The restarted domain did not inherit the old requests.
    assert_eq!(ids_named(&d, "r"), [newid.0]);

    // Through the toolstack: a request to a domain already shut down is a no-op.
    let p = create(&d, "p", "on_poweroff = 'preserve'\n");
    d.shutdown("p", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(p, LONG));
    for req in [
        PowerRequest::Poweroff,
        PowerRequest::Reboot,
        PowerRequest::Halt,
    ] {
        assert_eq!(d.shutdown("p", req).unwrap(), p);
    }
    let info = d.list().into_iter().find(|i| i.name == "p").unwrap();
    assert_eq!(info.reason.as_deref(), Some("poweroff"));
}

/// The console carries input too: through the control socket, what a client sends
/// reaches the built-in guest, which echoes it; the session ends with the domain.
#[test]
fn console_input_reaches_the_guest() {
    let tmp = TempDir::new("coninput");
    let rt = RuntimeDir::at(tmp.path().join("rt/shim-hv"));
    let d = Daemon::new(rt.clone());
    d.set_quiet(true);
    let d2 = d.clone();
    let server = std::thread::spawn(move || d2.serve());
    let client = Client::new(rt);
    wait_for(30, || client.daemon_running().then_some(())).expect("daemon up");
    let id = create(&d, "echo", "");

    let (reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
    let c2 = client.clone();
    let session = std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = c2.console("echo", &mut out, Some(Box::new(reader)));
        (r, out)
    });
    use std::io::Write;
    writer.write_all(b"hello guest\n").unwrap();
    let con = d.console(id).unwrap();
    con.wait_for(b"echo: hello guest", LONG).unwrap();
    d.shutdown("echo", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, LONG));
    let (r, out) = session.join().unwrap();
    r.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("echo: hello guest"), "{out}");
    assert!(out.contains("power: poweroff"), "{out}");
    drop(writer);
    d.request_stop();
    server.join().unwrap().unwrap();
}

/// Ctrl-] in the input ends a console session; the domain keeps running.
#[test]
fn ctrl_bracket_detaches() {
    let tmp = TempDir::new("detach");
    let rt = RuntimeDir::at(tmp.path().join("rt/shim-hv"));
    let d = Daemon::new(rt.clone());
    d.set_quiet(true);
    let d2 = d.clone();
    let server = std::thread::spawn(move || d2.serve());
    let client = Client::new(rt);
    wait_for(30, || client.daemon_running().then_some(())).expect("daemon up");
    let id = create(&d, "det", "");
    // The session detaches as soon as it reads Ctrl-]: make sure the banner is in the
    // history (which a session replays first) before attaching.
    d.console(id).unwrap().wait_for(b"(det) up", LONG).unwrap();
    let mut out = Vec::new();
    client
        .console("det", &mut out, Some(Box::new(&b"ab\x1dcd"[..])))
        .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("(det) up"));
    assert_eq!(ids_named(&d, "det"), [id.0]);
    d.console(id).unwrap().wait_for(b"echo: ab", LONG).unwrap();
    d.request_stop();
    server.join().unwrap().unwrap();
}

#[test]
fn create_paused_holds_the_builtin_guest_until_unpause() {
    let tmp = TempDir::new("paused");
    let d = daemon(&tmp);
    let cfg = DomainConfig::parse_str("p.cfg", &builtin_cfg("p", "")).unwrap();
    let id = d.create_paused(cfg, true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let info = d.list().into_iter().find(|i| i.id == id.0).unwrap();
    assert_eq!(info.state, "--p---");
    let c = d.console(id).unwrap();
    assert!(
        !String::from_utf8_lossy(&c.history()).contains("waiting for control/shutdown"),
        "a paused guest ran"
    );
    // Unpausing twice is fine; pausing a paused domain too.
    d.unpause("p").unwrap();
    d.unpause("p").unwrap();
    c.wait_for(b"waiting for control/shutdown", Duration::from_secs(30))
        .unwrap();
    d.pause("p").unwrap();
    d.pause("p").unwrap();
    d.unpause("p").unwrap();
    d.shutdown("p", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, Duration::from_secs(30)));
    assert!(matches!(d.pause("p"), Err(Error::NoSuchDomain(_))));
}
