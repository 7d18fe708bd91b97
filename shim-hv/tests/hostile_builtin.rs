//! Hostile modes against the built-in guest (docs/hostile-mode.md): for every
//! mode, a domain with a disk, a vif and its console, one device's backend
//! misbehaving. A correct frontend reports that device failed, with the reason,
//! on the console; the other devices keep working (the disk's scratch write, the
//! vif Connected on both ends and not dropped); the guest stays alive (its
//! heartbeat goes on) and powers off cleanly when asked; nothing in shim-hv
//! panics.

mod toolstack_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use shim_hv::toolstack::daemon::Daemon;
use shim_hv::toolstack::runtime::RuntimeDir;
use shim_hv::toolstack::PowerRequest;
use toolstack_util::{builtin_cfg, wait_for, TempDir};
use xen_backends::console::Console;
use xen_backends::hostile::Hostile;
use xenstored::TxId;
use xl_config::DomainConfig;

const LONG: Duration = Duration::from_secs(60);
const DISK_OK: &str = "disk 51712 (xvda): scratch sector 2047: written, read back, restored";
const NIC_OK: &str = "nic 0: sent a gratuitous ARP";

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts panics on shim-hv's threads (backends, the guest, the daemon; not
/// the test threads, named after the tests) and then reports them as usual.
fn count_panics() {
    HOOK.call_once(|| {
        let old = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            let test = ["blk_", "net_", "console_", "every_", "restart_"]
                .iter()
                .any(|p| name.starts_with(p));
            if !test {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            old(info);
        }));
    });
}

fn history(con: &Console) -> String {
    String::from_utf8_lossy(&con.history()).into_owned()
}

fn wait_console(con: &Console, text: &str) {
    if wait_for(LONG.as_secs(), || history(con).contains(text).then_some(())).is_none() {
        panic!("no {text:?} on the console:\n{}", history(con));
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

/// Both ends of `dom`'s device `n` of `kind` are Connected.
fn connected(d: &Daemon, dom: &str, kind: &str, n: u32) -> bool {
    d.devices(dom, kind).is_ok_and(|(_, devs)| {
        devs.iter()
            .any(|v| v.devid == n && v.frontend_state == Some(4) && v.backend_state == Some(4))
    })
}

/// Runs the built-in guest with `device`'s backend in `mode`, checks the
/// console shows every line of `expect`, and everything else listed above.
/// Returns the console's history.
fn run(mode: &str, device: &str, expect: &[&str]) -> String {
    run_with(mode, device, expect, |_, _| {})
}

/// [`run`], with `check(daemon, domain name)` called while the guest runs
/// (after the expected lines, before the power-off).
fn run_with(mode: &str, device: &str, expect: &[&str], check: impl Fn(&Daemon, &str)) -> String {
    run_in(mode, device, "", expect, check)
}

/// [`run_with`], with `extra` lines added to the domain's config (e.g. a
/// channel).
fn run_in(
    mode: &str,
    device: &str,
    extra: &str,
    expect: &[&str],
    check: impl Fn(&Daemon, &str),
) -> String {
    count_panics();
    let h: Hostile = mode.parse().unwrap();
    let tag = mode.replace(['.', '_'], "-");
    let tmp = TempDir::new(&format!("hb-{tag}"));
    let img = tmp.path().join("disk.img");
    let mut data = vec![0u8; 1 << 20];
    data[..14].copy_from_slice(b"hostile tests.");
    std::fs::write(&img, &data).unwrap();
    let d = Daemon::new(RuntimeDir::at(tmp.path().join("rt")));
    d.set_quiet(true);
    let name = format!("h-{tag}");
    let text = builtin_cfg(
        &name,
        &format!(
            "disk = [ 'file:{},xvda,w' ]\nvif = [ 'bridge=brH' ]\nextra = 'heartbeat=50'\n{extra}hostile = [ '{device}:{mode}' ]\n",
            img.display()
        ),
    );
    let cfg = DomainConfig::parse_str("h.cfg", &text).unwrap();
    assert_eq!(cfg.hostile.len(), 1);
    let id = d.create(cfg).unwrap();
    let con = d.console(id).unwrap();
    for e in expect {
        wait_console(&con, e);
    }
    // The other devices work.
    if device != "xvda" {
        wait_console(&con, DISK_OK);
        assert!(connected(&d, &name, "vbd", 51712), "{}", history(&con));
    }
    if device != "vif0" {
        wait_console(&con, NIC_OK);
        assert!(
            wait_for(30, || connected(&d, &name, "vif", 0).then_some(())).is_some(),
            "vif 0 not connected:\n{}",
            history(&con)
        );
    }
    check(&d, &name);
    // Still alive: the heartbeat goes on.
    let hb = format!("/local/domain/{}/data/heartbeat", id.0);
    let before: u64 = wait_for(30, || read(&d, &hb)?.parse().ok())
        .unwrap_or_else(|| panic!("no heartbeat:\n{}", history(&con)));
    assert!(
        wait_for(30, || (read(&d, &hb)?.parse::<u64>().ok()? > before)
            .then_some(()))
        .is_some(),
        "heartbeat stopped:\n{}",
        history(&con)
    );
    // And it obeys a power request, closing what it still has.
    d.shutdown(&name, PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, LONG), "not gone:\n{}", history(&con));
    let text = history(&con);
    assert!(text.contains("power: poweroff"), "{text}");
    if device != "vif0" {
        assert!(!text.contains("nic 0: device broken"), "{text}");
        assert!(!text.contains("; dropped\nnic 0"), "{text}");
    }
    if device != "xvda" {
        assert!(!text.contains("disk 51712 (xvda): device broken"), "{text}");
    }
    assert_eq!(h.name().replace('_', "-"), mode.replace('_', "-"));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a thread panicked");
    // Nothing of the domain is left in xenstore.
    assert_eq!(read(&d, &format!("/local/domain/{}", id.0)), None);
    drop(d);
    // Shown with --nocapture: what the guest said.
    println!("--- {mode} on {device}:\n{text}");
    text
}

/// The lines a failed disk leaves: the reason, and nothing more done with it.
fn disk_failed(text: &str, why: &str) {
    let line = text
        .lines()
        .find(|l| l.starts_with("disk 51712 (xvda): ") && l.contains(why))
        .unwrap_or_else(|| panic!("no disk line with {why:?}:\n{text}"));
    assert!(!text.contains(DISK_OK), "{line}\n{text}");
    // Said once.
    assert_eq!(text.matches(line).count(), 1, "{text}");
}

#[test]
fn blk_duplicate_response() {
    let t = run(
        "blk.duplicate_response",
        "xvda",
        &["disk 51712 (xvda): device broken: response for id"],
    );
    disk_failed(&t, "which is not outstanding");
}

#[test]
fn blk_response_unknown_id() {
    let t = run(
        "blk.response_unknown_id",
        "xvda",
        &["disk 51712 (xvda): device broken: response with unknown id 0x11000"],
    );
    disk_failed(&t, "unknown id 0x11000");
}

#[test]
fn blk_response_id_high_bits() {
    let t = run(
        "blk.response_id_high_bits",
        "xvda",
        &["disk 51712 (xvda): device broken: response with unknown id"],
    );
    disk_failed(&t, "unknown id 0xbad");
}

#[test]
fn blk_wrong_operation() {
    let t = run(
        "blk.wrong_operation",
        "xvda",
        &["disk 51712 (xvda): device broken: response"],
    );
    disk_failed(&t, "has operation 1, the request had 0");
}

#[test]
fn blk_unknown_status() {
    let t = run("blk.unknown_status", "xvda", &["unknown status 7"]);
    disk_failed(&t, "unknown status 7");
}

#[test]
fn blk_rsp_prod_overrun() {
    let t = run(
        "blk.rsp_prod_overrun",
        "xvda",
        &["disk 51712 (xvda): device broken: ring: "],
    );
    disk_failed(&t, "ring: ");
}

#[test]
fn blk_never_answers() {
    let t = run(
        "blk.never-answers",
        "xvda",
        &["disk 51712 (xvda): timed out"],
    );
    disk_failed(&t, "timed out");
}

#[test]
fn blk_closing_with_requests_in_flight() {
    let t = run(
        "blk.closing_with_requests_in_flight",
        "xvda",
        &["disk 51712 (xvda): the backend went to Closing during I/O"],
    );
    disk_failed(&t, "timed out");
}

#[test]
fn blk_sectors_garbage() {
    let t = run(
        "blk.sectors_garbage",
        "xvda",
        &["disk 51712 (xvda): backend key"],
    );
    disk_failed(&t, "sectors: not a number");
}

#[test]
fn blk_sector_size_not_power_of_two() {
    let t = run(
        "blk.sector_size_not_power_of_two",
        "xvda",
        &["disk 51712 (xvda): backend key"],
    );
    disk_failed(&t, "sector-size 1000 is not a power of two");
}

/// The lines a failed vif leaves.
fn nic_failed(text: &str, why: &str) {
    assert!(
        text.lines()
            .any(|l| l.starts_with("nic 0: ") && l.contains(why)),
        "no nic line with {why:?}:\n{text}"
    );
}

#[test]
fn net_tx_id_out_of_range() {
    let t = run("net.tx_id_out_of_range", "vif0", &["nic 0: ", "; dropped"]);
    nic_failed(&t, "tx response id 65535 out of range");
}

#[test]
fn net_tx_rsp_prod_overrun() {
    let t = run("net.tx_rsp_prod_overrun", "vif0", &["; dropped"]);
    nic_failed(&t, "queue 0 tx ring: ");
}

#[test]
fn net_rx_rsp_prod_overrun() {
    let t = run("net.rx_rsp_prod_overrun", "vif0", &["; dropped"]);
    nic_failed(&t, "queue 0 rx ring: ");
}

#[test]
fn net_rx_past_page() {
    let t = run("net.rx_past_page", "vif0", &["; dropped"]);
    nic_failed(&t, "32 bad rx responses in a row");
}

#[test]
fn net_rx_endless_chain() {
    let t = run("net.rx_endless_chain", "vif0", &["; dropped"]);
    nic_failed(&t, "32 bad rx responses in a row");
}

#[test]
fn net_mac_not_unicast() {
    let t = run("net.mac_not_unicast", "vif0", &["nic 0: "]);
    nic_failed(&t, "MAC ff:ff:ff:ff:ff:ff is not a unicast address");
    assert!(!t.contains(NIC_OK), "{t}");
}

#[test]
fn net_mac_malformed() {
    let t = run("net.mac_malformed", "vif0", &["nic 0: "]);
    nic_failed(&t, "bad mac key: MAC group 3 is not two hex digits");
    assert!(!t.contains(NIC_OK), "{t}");
}

#[test]
fn net_event_storm() {
    // The vif works under the storm (the built-in guest has no late EOI: it is
    // woken for every event, which costs it time but nothing else).
    let t = run_with(
        "net.event_storm",
        "vif0",
        &[NIC_OK, "waiting for control/shutdown"],
        |d, name| assert!(connected(d, name, "vif", 0), "vif 0 is not up"),
    );
    assert!(!t.lines().any(|l| l.starts_with("nic 0: device")), "{t}");
    assert!(!t.contains("; dropped"), "{t}");
}

#[test]
fn net_rx_buffers_hoarded() {
    // The vif stays up: the guest sends, receives nothing, and closes in time.
    let t = run_with(
        "net.rx_buffers_hoarded",
        "vif0",
        &[NIC_OK, "waiting for control/shutdown"],
        |d, name| assert!(connected(d, name, "vif", 0), "vif 0 is not up"),
    );
    assert!(!t.lines().any(|l| l.starts_with("nic 0: device")), "{t}");
    assert!(!t.contains("; dropped"), "{t}");
}

#[test]
fn console_out_cons_past_prod() {
    let t = run(
        "console.out_cons_past_prod",
        "console",
        &["console ring failed (output): ", "using CONSOLEIO_write"],
    );
    // What the guest printed after the failure still arrived (CONSOLEIO_write).
    let at = t.find("console ring failed").unwrap();
    assert!(t[at..].contains("power: poweroff"), "{t}");
}

#[test]
fn console_in_prod_past_ring() {
    let t = run(
        "console.in_prod_past_ring",
        "console",
        &["console ring failed (input): ", "using CONSOLEIO_write"],
    );
    let at = t.find("console ring failed").unwrap();
    assert!(t[at..].contains("power: poweroff"), "{t}");
}

#[test]
fn console_event_storm() {
    // The console keeps working under the storm, both ways (the built-in guest
    // has no late EOI: it is woken for every event, which costs it time but
    // nothing else).
    let t = run_with(
        "console.event_storm",
        "console",
        &["waiting for control/shutdown"],
        |d, name| {
            let id = d.list().into_iter().find(|i| i.name == name).unwrap().id;
            let con = d.console(hypercall::DomId(id)).unwrap();
            con.send_input(b"under the storm\n");
            wait_console(&con, "echo: under the storm");
            let sent = con.stats().storm_events;
            assert!(
                wait_for(30, || (con.stats().storm_events > sent + 100).then_some(())).is_some(),
                "no storm: {sent} events"
            );
        },
    );
    assert!(!t.contains("console ring failed"), "{t}");
    assert!(!t.contains("; dropped"), "{t}");
}

/// The channel of the console-mode tests on a secondary console.
const CHANNEL: &str = "channel = [ 'name=org.example.h,connection=pty' ]\n";

/// A console mode on a channel (a secondary console, `device/console/1`) fails
/// that channel only: the guest drops it with the reason, its primary console
/// keeps working on the ring (no CONSOLEIO_write fallback), and so do the
/// other devices.
fn channel_case(mode: &str, device: &str, why: &str) -> String {
    let t = run_in(
        mode,
        device,
        CHANNEL,
        &["channel 1 (org.example.h): connected, greeting sent", why],
        |_, _| {},
    );
    let line = t
        .lines()
        .find(|l| l.starts_with("channel 1 (org.example.h): ") && l.contains(why))
        .unwrap_or_else(|| panic!("no channel line with {why:?}:\n{t}"));
    assert!(line.ends_with("; dropped"), "{line}");
    assert_eq!(t.matches(line).count(), 1, "said once:\n{t}");
    assert!(
        !t.contains("console ring failed"),
        "the primary console failed:\n{t}"
    );
    t
}

#[test]
fn console_out_cons_past_prod_on_a_channel() {
    channel_case(
        "console.out_cons_past_prod",
        "console1",
        "illegal output ring indices",
    );
}

#[test]
fn console_in_prod_past_ring_on_a_channel() {
    channel_case(
        "console.in_prod_past_ring",
        "org.example.h",
        "illegal input ring indices",
    );
}

/// A domain restarted by its `on_reboot = 'restart'` keeps its hostile modes
/// (the config, with the `--hostile` entries folded in, is kept).
#[test]
fn restart_keeps_the_mode() {
    count_panics();
    let tmp = TempDir::new("hb-restart");
    let d = Daemon::new(RuntimeDir::at(tmp.path().join("rt")));
    d.set_quiet(true);
    let text = builtin_cfg(
        "hr",
        "on_reboot = 'restart'\nvif = [ 'bridge=brR' ]\nhostile = [ 'vif0:net.rx_buffers_hoarded' ]\n",
    );
    let mut cfg = DomainConfig::parse_str("h.cfg", &text).unwrap();
    cfg.add_hostile("vif0=net.mac_not_unicast", "--hostile")
        .unwrap();
    let id = d.create(cfg).unwrap();
    let refused = "nic 0: bad mac key: MAC ff:ff:ff:ff:ff:ff is not a unicast address";
    let con = d.console(id).unwrap();
    wait_console(&con, refused);
    wait_console(&con, "waiting for control/shutdown");
    d.shutdown("hr", PowerRequest::Reboot).unwrap();
    assert!(d.wait_gone(id, LONG), "not gone:\n{}", history(&con));
    let new = wait_for(60, || {
        d.list()
            .into_iter()
            .find(|i| i.name == "hr" && i.id != id.0)
            .map(|i| hypercall::DomId(i.id))
    })
    .expect("restarted");
    let con2 = d.console(new).unwrap();
    wait_console(&con2, refused);
    wait_console(&con2, "waiting for control/shutdown");
    d.shutdown("hr", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(new, LONG), "not gone:\n{}", history(&con2));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a thread panicked");
}

/// Every mode of the catalogue has a test above and a row in
/// docs/hostile-mode.md (a new mode needs both).
#[test]
fn every_mode_is_tested_here_and_documented() {
    let me = include_str!("hostile_builtin.rs");
    let doc = include_str!("../../docs/hostile-mode.md");
    for h in Hostile::all() {
        let f = format!("fn {}()", h.name().replace('.', "_"));
        assert!(me.contains(&f), "no test {f} for {h}");
        let row = format!("| `{}` |", h.name());
        assert!(doc.contains(&row), "no row {row} in docs/hostile-mode.md");
    }
}
