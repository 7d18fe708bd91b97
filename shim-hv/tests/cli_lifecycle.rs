//! The CLI end to end, through the real binary and a real background daemon in a
//! private runtime directory: create → list → shutdown -H → gone; -R / reboot →
//! back with a new id; console; destroy; dry run; errors when no daemon runs.

mod toolstack_util;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use toolstack_util::{builtin_cfg, wait_for, Cli};

#[test]
fn create_list_halt_gone() {
    let cli = Cli::new("halt");
    cli.dir.write("g.cfg", &builtin_cfg("g1", ""));
    let o = cli.run(&["create", "g.cfg"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Parsing config from g.cfg"), "{err}");
    assert!(err.contains("Created domain 1 (g1)"), "{err}");
    let rows = cli.list();
    assert_eq!(rows, [("g1".to_string(), 1, "r-----".to_string())]);
    let out = cli.ok(&["list"]);
    assert!(out.contains("Domain-0"), "{out}");

    let o = cli.run(&["shutdown", "-w", "-H", "g1"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Shutting down domain 1"), "{err}");
    assert!(err.contains("Domain 1 has been shut down"), "{err}");
    assert!(cli.list().is_empty());

    // Unknown domains now.
    let o = cli.run(&["shutdown", "g1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("g1 is an invalid domain identifier"));
}

#[test]
fn xm_reboot_flag_and_xl_reboot_come_back_with_new_ids() {
    let cli = Cli::new("reboot");
    cli.dir
        .write("r.cfg", &builtin_cfg("r1", "on_reboot = 'restart'\n"));
    cli.ok(&["create", "r.cfg"]);
    let id0 = cli.list()[0].1;

    let o = cli.run(&["shutdown", "-R", "-w", "r1"]);
    assert!(o.status.success(), "{o:?}");
    let rows = cli.list();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "r1");
    let id1 = rows[0].1;
    assert_ne!(id1, id0);

    // `reboot` (xl's spelling), without -w: wait for the new id.
    cli.ok(&["reboot", "r1"]);
    let id2 = wait_for(30, || {
        let rows = cli.list();
        rows.iter().find(|r| r.0 == "r1" && r.1 != id1).map(|r| r.1)
    })
    .expect("r1 came back");
    assert!(id2 != id1 && id2 != id0);

    // The new domain works like the first one.
    cli.ok(&["shutdown", "-w", "r1"]);
    assert!(cli.list().is_empty());
}

#[test]
fn on_poweroff_preserve_keeps_the_domain_until_destroy() {
    let cli = Cli::new("preserve");
    cli.dir
        .write("p.cfg", &builtin_cfg("p1", "on_poweroff = 'preserve'\n"));
    cli.ok(&["create", "p.cfg"]);
    cli.ok(&["shutdown", "-w", "p1"]);
    assert_eq!(cli.list(), [("p1".to_string(), 1, "---s--".to_string())]);
    // Asking again is harmless (docs/hostile-input.md row 39).
    cli.ok(&["shutdown", "-w", "p1"]);
    cli.ok(&["destroy", "p1"]);
    assert!(cli.list().is_empty());
}

#[test]
fn destroy_by_id_and_two_domains() {
    let cli = Cli::new("destroy");
    cli.dir.write("a.cfg", &builtin_cfg("a", ""));
    cli.dir.write("b.cfg", &builtin_cfg("b", ""));
    cli.ok(&["create", "a.cfg"]);
    cli.ok(&["create", "b.cfg"]);
    let rows = cli.list();
    assert_eq!(rows.len(), 2);
    // The same name twice is refused.
    let o = cli.run(&["create", "a.cfg"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"a\" already exists"));
    let a = rows.iter().find(|r| r.0 == "a").unwrap().1;
    cli.ok(&["destroy", &a.to_string()]);
    let rows = cli.list();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "b");
}

#[test]
fn create_c_shows_the_console_until_the_domain_goes() {
    let cli = Cli::new("console");
    cli.dir.write("c.cfg", &builtin_cfg("c1", ""));
    let mut child = cli
        .command()
        .args(["create", "-c", "c.cfg"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(30, || {
        let o = cli.run(&["list"]);
        (o.status.success() && String::from_utf8_lossy(&o.stdout).contains("c1")).then_some(())
    })
    .expect("c1 created");
    // A second console on the same domain, from `console`: read until it shows the
    // guest's first line, so it is attached before the shutdown.
    let mut second = cli
        .command()
        .args(["console", "c1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second_out = BufReader::new(second.stdout.take().unwrap());
    let mut out2 = String::new();
    while !out2.contains("(c1) up") {
        let mut line = String::new();
        assert!(second_out.read_line(&mut line).unwrap() > 0, "{out2}");
        out2.push_str(&line);
    }
    cli.ok(&["shutdown", "-w", "c1"]);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        out.contains("xenkit built-in guest: domain 1 (c1) up"),
        "{out}"
    );
    assert!(out.contains("power: poweroff"), "{out}");
    second_out.read_to_string(&mut out2).unwrap();
    assert!(second.wait().unwrap().success());
    assert!(out2.contains("power: poweroff"), "{out2}");
}

#[test]
fn dry_run_prints_json_and_starts_nothing() {
    let cli = Cli::new("dryrun");
    cli.dir.write(
        "d.cfg",
        "name = 'dry'\nmemory = '64'\nkernel = '/no/such/kernel'\nfoo = 1\n\
         disk = [ 'file:/no/such.img,xvda,w' ]\nvif = [ 'mac=00:16:3E:00:00:01,bridge=br0' ]\n",
    );
    let o = cli.run(&["create", "-n", "d.cfg"]);
    assert!(o.status.success(), "{o:?}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["name"], "dry");
    assert_eq!(j["memory"], 64);
    assert_eq!(j["disks"][0]["vdev_number"], 51712);
    assert_eq!(j["disks"][0]["mode"], "w");
    assert_eq!(j["vifs"][0]["mac"], "00:16:3e:00:00:01");
    assert_eq!(j["vifs"][0]["bridge"], "br0");
    assert_eq!(j["actions"]["on_reboot"], "restart");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("d.cfg:4: warning"), "{err}");
    assert!(err.contains("foo"), "{err}");
    assert!(err.contains("KVM"), "{err}");
    // Nothing started.
    assert!(!cli.runtime().join("control.sock").exists());
    // --dry-run is the long spelling.
    assert!(cli.run(&["create", "--dry-run", "d.cfg"]).status.success());
}

#[test]
fn without_a_daemon_commands_say_so() {
    let cli = Cli::new("nodaemon");
    for args in [
        &["list"][..],
        &["shutdown", "x"],
        &["reboot", "x"],
        &["destroy", "x"],
        &["console", "x"],
        &["block-list", "x"],
        &["network-list", "x"],
        &["xenstore-env"],
        &["daemon-stop"],
    ] {
        let o = cli.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("no shim-hv daemon is running"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn bad_kernels_are_refused_in_one_line() {
    let cli = Cli::new("kernel");
    let k = cli.dir.write("vmlinux", "not really a kernel");
    cli.dir.write(
        "k.cfg",
        &format!("name = 'k'\nkernel = '{}'\n", k.display()),
    );
    let o = cli.run(&["create", "k.cfg"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("k.cfg: kernel {}: not an ELF file", k.display())),
        "{err}"
    );
    assert!(!cli.runtime().join("control.sock").exists());
}

#[test]
fn a_second_daemon_is_refused() {
    let cli = Cli::new("second");
    cli.dir.write("s.cfg", &builtin_cfg("s", ""));
    cli.ok(&["create", "s.cfg"]);
    let o = cli.run(&["daemon"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already runs in"), "{err}");
    // The first one is unharmed.
    assert_eq!(cli.list().len(), 1);
}

/// The daemon stops by itself when its runtime directory (and so its control
/// socket) is removed, even while it waits for a client.
#[test]
fn daemon_stops_when_its_runtime_dir_is_removed() {
    let cli = Cli::new("rmdir");
    cli.dir.write("m.cfg", &builtin_cfg("m", ""));
    cli.ok(&["create", "m.cfg"]);
    let pid = cli.daemon_pid().unwrap();
    std::fs::remove_dir_all(cli.runtime()).unwrap();
    let stopped = wait_for(30, || (!toolstack_util::alive(pid)).then_some(())).is_some();
    if !stopped {
        // Its pid file went with the directory: the Cli's own cleanup cannot find it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(stopped, "daemon {pid} still ran");
}

#[test]
fn create_p_pause_and_unpause() {
    let cli = Cli::new("pause");
    cli.dir.write("p.cfg", &builtin_cfg("p1", ""));
    cli.ok(&["create", "-p", "p.cfg"]);
    assert_eq!(
        cli.list(),
        vec![("p1".to_string(), 1, "--p---".to_string())]
    );
    cli.ok(&["unpause", "p1"]);
    assert_eq!(cli.list()[0].2, "r-----");
    cli.ok(&["pause", "1"]);
    assert_eq!(cli.list()[0].2, "--p---");
    cli.ok(&["unpause", "p1"]);
    let o = cli.run(&["pause", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    cli.ok(&["shutdown", "-w", "p1"]);
    assert!(cli.list().is_empty());
}
