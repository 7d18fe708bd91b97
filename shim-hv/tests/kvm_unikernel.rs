//! examples/unikernel, unchanged, as a KVM domain of the daemon: its console, its
//! disk, shutdown, reboot, crash (on_crash), VM exit counts, and its network seen
//! from the host through a TAP device in a network namespace. Skipped, with one
//! printed line, where /dev/kvm is absent or unusable (the network test also where
//! TAP devices or namespaces are not allowed).

mod kvm_util;
mod toolstack_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hypercall::DomId;
use kvm_util::{kvm_usable, unikernel};
use shim_hv::toolstack::daemon::Daemon;
use shim_hv::toolstack::runtime::RuntimeDir;
use shim_hv::toolstack::PowerRequest;
use toolstack_util::{wait_for, TempDir};
use xen_backends::tap::{Tap, TapPort};
use xl_config::DomainConfig;

/// Bound for a boot under an emulating KVM (a hang guard, not a timing check).
const BOOT: Duration = Duration::from_secs(240);

fn daemon(tmp: &TempDir) -> Arc<Daemon> {
    let d = Daemon::new(RuntimeDir::at(tmp.path().join("rt")));
    d.set_quiet(true);
    d
}

fn config(tmp: &TempDir, name: &str, extra: &str) -> DomainConfig {
    let text = format!(
        "name = '{name}'\ntype = 'pvh'\nkernel = '{}'\nmemory = 32\n{extra}",
        unikernel().display()
    );
    DomainConfig::parse_str(&tmp.path().join("uk.cfg").display().to_string(), &text).unwrap()
}

fn console(d: &Daemon, id: DomId) -> String {
    d.console(id)
        .map(|c| String::from_utf8_lossy(&c.history()).into_owned())
        .unwrap_or_default()
}

fn wait_console(d: &Daemon, id: DomId, text: &str) {
    let c = d.console(id).expect("a console");
    if c.wait_for(text.as_bytes(), BOOT).is_err() {
        panic!(
            "no {text:?} on domain {}'s console: {}",
            id.0,
            console(d, id)
        );
    }
}

fn ids_named(d: &Daemon, name: &str) -> Vec<u16> {
    d.list()
        .into_iter()
        .filter(|i| i.name == name)
        .map(|i| i.id)
        .collect()
}

#[test]
fn unikernel_console_disk_reboot_and_shutdown() {
    if !kvm_usable("unikernel_console_disk_reboot_and_shutdown") {
        return;
    }
    let tmp = TempDir::new("kvm-uk");
    let img = tmp.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let d = daemon(&tmp);
    let cfg = config(
        &tmp,
        "uk",
        &format!(
            "disk = [ 'file:{},xvda,w' ]\non_reboot = 'restart'\n",
            img.display()
        ),
    );
    let id = d.create(cfg).unwrap();
    wait_console(&d, id, "xenkit-unikernel: ready");
    let out = console(&d, id);
    for line in [
        "xen: version 4.17",
        "xenstore: connected; domain",
        "devices: 1 disk(s) [51712], 0 nic(s) []",
        "disk 51712 (xvda): 8192 sectors of 512 bytes",
        "read back: same",
        "power: watching control/shutdown",
    ] {
        assert!(out.contains(line), "missing {line:?}: {out}");
    }
    // The disk really was written through blkback into the image.
    let data = std::fs::read(&img).unwrap();
    assert_eq!(&data[1 << 20..(1 << 20) + 22], b"XENKIT-UNIKERNEL-WROTE");

    // list: vCPU time; list -l: VM exits by reason.
    let info = d.list().into_iter().find(|i| i.id == id.0).unwrap();
    assert!(info.time_s > 0.0 && info.state == "r-----", "{info:?}");
    let j = d.list_long(&["uk".into()]).unwrap();
    let e = &j[0]["vm_exits"];
    assert_eq!(j[0]["runner"], "kvm");
    assert!(e["by_reason"]["io_hypercall"].as_u64().unwrap() > 10, "{j}");
    assert!(e["total"].as_u64().unwrap() >= e["by_reason"]["io_hypercall"].as_u64().unwrap());
    assert!(e["before_first_output"].as_u64().is_some(), "{j}");

    // Idle, the kernel sleeps until an event or a real deadline (tickless): with a
    // disk and nothing to do it must not wake every few milliseconds (10 ms waits
    // cost about 200 exits a second: a timer hypercall, a halt, an interrupt).
    let total = |d: &Daemon| {
        d.list_long(&["uk".into()]).unwrap()[0]["vm_exits"]["total"]
            .as_u64()
            .unwrap()
    };
    let before = total(&d);
    std::thread::sleep(Duration::from_secs(3));
    let idle = total(&d) - before;
    assert!(idle < 60, "{idle} VM exits in 3 s of idling");

    // Reboot: on_reboot = restart makes a new domain with the same name.
    d.shutdown("uk", PowerRequest::Reboot).unwrap();
    let new =
        wait_for(60, || ids_named(&d, "uk").into_iter().find(|i| *i != id.0)).expect("restarted");
    assert!(!ids_named(&d, "uk").contains(&id.0));
    wait_console(&d, DomId(new), "xenkit-unikernel: ready");

    // Poweroff: on_poweroff = destroy.
    d.shutdown("uk", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(DomId(new), BOOT));
    assert!(ids_named(&d, "uk").is_empty());
}

#[test]
fn unikernel_crash_follows_on_crash() {
    if !kvm_usable("unikernel_crash_follows_on_crash") {
        return;
    }
    let tmp = TempDir::new("kvm-crash");
    let d = daemon(&tmp);
    // A page fault right after boot (the unikernel's crash= test switch).
    let cfg = config(
        &tmp,
        "crashy",
        "extra = 'crash=fault'\non_crash = 'preserve'\n",
    );
    let id = d.create(cfg).unwrap();
    assert!(d.wait_gone(id, BOOT), "preserved once crashed");
    let info = d.list().into_iter().find(|i| i.id == id.0).unwrap();
    assert_eq!(info.state, "---s--", "{info:?}");
    assert_eq!(info.reason.as_deref(), Some("crash"), "{info:?}");
    // A domain that is gone or preserved can be destroyed.
    d.destroy("crashy").unwrap();
    assert!(ids_named(&d, "crashy").is_empty());
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn unikernel_network_from_the_host_through_a_tap() {
    let test = "unikernel_network_from_the_host_through_a_tap";
    if !kvm_usable(test) {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/net/tun").exists() {
        println!("skipping {test}: TAP devices need root and /dev/net/tun");
        return;
    }
    let elf = unikernel();
    // The host side runs on a thread that moves to a new network namespace.
    let t = std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: unshare only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            println!(
                "skipping {test}: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            return Ok(());
        }
        let tap = Tap::open("xkuk0").map_err(|e| format!("tap: {e}"))?;
        let name = tap.name().to_string();
        if !(ip(&["link", "set", "lo", "up"])
            && ip(&["addr", "add", "10.9.7.1/24", "dev", &name])
            && ip(&["link", "set", &name, "up"]))
        {
            println!("skipping {test}: the ip tool could not configure the namespace");
            return Ok(());
        }
        let tmp = TempDir::new("kvm-net");
        let d = daemon(&tmp);
        let _port = TapPort::attach(tap, d.bridge("xkbr")).map_err(|e| e.to_string())?;
        let text = format!(
            "name = 'net'\ntype = 'pvh'\nkernel = '{}'\nmemory = 32\n\
             vif = [ 'mac=00:16:3e:00:07:02,bridge=xkbr,ip=10.9.7.2' ]\n",
            elf.display()
        );
        let cfg = DomainConfig::parse_str("net.cfg", &text).map_err(|e| e.to_string())?;
        let id = d.create(cfg).map_err(|e| e.to_string())?;
        wait_console(&d, id, "xenkit-unikernel: ready");
        // The unikernel pinged the subnet's .1: this TAP answered.
        let out = console(&d, id);
        if !out.contains("ping 10.9.7.1: 3/3 replies") {
            return Err(format!("no ping replies: {out}"));
        }
        if !out.contains("devices: 0 disk(s) [], 1 nic(s) [0]") {
            return Err(format!("devices line: {out}"));
        }
        // The host pings the guest and fetches its port-80 page.
        let ping = Command::new("ping")
            .args(["-c", "2", "-W", "10", "10.9.7.2"])
            .output();
        match ping {
            Ok(o) if !o.status.success() => {
                return Err(format!(
                    "ping failed: {}",
                    String::from_utf8_lossy(&o.stdout)
                ))
            }
            Ok(_) => {}
            Err(e) => println!("{test}: no ping tool ({e}); the TCP fetch still runs"),
        }
        let addr: SocketAddr = "10.9.7.2:80".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut page = String::new();
        let _ = s.read_to_string(&mut page);
        if !page.starts_with("HTTP/1.0 200 OK") {
            return Err(format!("odd page: {page:?}"));
        }
        // Idle with a network interface: it sleeps until smoltcp's next timer or an
        // event, not in 10 ms slices.
        let total = || -> Result<u64, String> {
            let j = d.list_long(&["net".into()]).map_err(|e| e.to_string())?;
            j[0]["vm_exits"]["total"]
                .as_u64()
                .ok_or(format!("no exits: {j}"))
        };
        std::thread::sleep(Duration::from_secs(1));
        let before = total()?;
        std::thread::sleep(Duration::from_secs(3));
        let idle = total()? - before;
        if idle >= 60 {
            return Err(format!("{idle} VM exits in 3 s of idling"));
        }
        d.shutdown("net", PowerRequest::Poweroff)
            .map_err(|e| e.to_string())?;
        if !d.wait_gone(id, BOOT) {
            return Err("did not power off".into());
        }
        Ok(())
    });
    t.join().unwrap().unwrap();
}

#[test]
fn create_paused_runs_nothing_until_unpause() {
    if !kvm_usable("create_paused_runs_nothing_until_unpause") {
        return;
    }
    let tmp = TempDir::new("kvm-paused");
    let d = daemon(&tmp);
    let id = d.create_paused(config(&tmp, "held", ""), true).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let info = d.list().into_iter().find(|i| i.id == id.0).unwrap();
    assert_eq!(info.state, "--p---", "{info:?}");
    assert_eq!(info.time_s, 0.0, "{info:?}");
    let j = d.list_long(&["held".into()]).unwrap();
    assert_eq!(j[0]["vm_exits"]["total"], 0, "{j}");
    assert_eq!(console(&d, id), "");
    d.unpause("held").unwrap();
    wait_console(&d, id, "xenkit-unikernel: ready");
    // Pausing a running VM stops it: no exits while paused.
    d.pause("held").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = d.list_long(&["held".into()]).unwrap()[0]["vm_exits"]["total"].clone();
    std::thread::sleep(Duration::from_millis(500));
    let after = d.list_long(&["held".into()]).unwrap()[0]["vm_exits"]["total"].clone();
    assert_eq!(before, after);
    d.unpause("held").unwrap();
    d.shutdown("held", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, BOOT));
}

#[test]
fn a_triple_fault_applies_on_crash() {
    if !kvm_usable("a_triple_fault_applies_on_crash") {
        return;
    }
    let tmp = TempDir::new("kvm-triple");
    let d = daemon(&tmp);
    // ud2 with no IDT: a triple fault, which the runner reports as a crash.
    let ud = kvm_util::elf64(
        "triple.elf",
        &[kvm_util::Seg {
            paddr: 0x100000,
            bytes: &[0x0f, 0x0b],
            memsz: 2,
        }],
        Some(0x100000),
    );
    let text = format!(
        "name = 'tf'\ntype = 'pvh'\nkernel = '{}'\nmemory = 4\non_crash = 'preserve'\n",
        ud.display()
    );
    let id = d
        .create(DomainConfig::parse_str("tf.cfg", &text).unwrap())
        .unwrap();
    assert!(d.wait_gone(id, BOOT), "preserved once crashed");
    let info = d.list().into_iter().find(|i| i.id == id.0).unwrap();
    assert_eq!(info.state, "----c-", "{info:?}");
    assert!(
        info.reason
            .as_deref()
            .unwrap_or("")
            .contains("triple fault"),
        "{info:?}"
    );
    // on_crash = destroy removes it.
    let text = text
        .replace("'preserve'", "'destroy'")
        .replace("'tf'", "'tf2'");
    let id2 = d
        .create(DomainConfig::parse_str("tf2.cfg", &text).unwrap())
        .unwrap();
    assert!(d.wait_gone(id2, BOOT));
    assert!(ids_named(&d, "tf2").is_empty());
    d.destroy("tf").unwrap();
}
