//! Hostile modes through the CLI (docs/hostile-mode.md): `create --hostile
//! DEVICE=MODE` reaches the daemon and takes effect over the file's `hostile`
//! key; `create -n` shows the entries; a bad mode or device, in the file or on
//! the command line, is refused with one line naming the file and line (or
//! `--hostile`) and the entry, before anything starts.

mod toolstack_util;

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use toolstack_util::{wait_for, Cli};

const CFG: &str = "name = 'hc'\nmemory = 16\nvif = [ 'bridge=brC' ]\n";

/// Runs `shim-hv ARGS`, which must fail with exit code 1 and one stderr line
/// (after the "Parsing config" line); returns that line.
fn refused(cli: &Cli, args: &[&str]) -> String {
    let o = cli.run(args);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("Parsing config"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[test]
fn bad_modes_and_devices_are_one_line_errors() {
    let cli = Cli::new("cli-hostile-bad");
    cli.dir
        .write("h.cfg", &format!("{CFG}hostile = [ 'vif0:net.fancy' ]\n"));
    let e = refused(&cli, &["create", "h.cfg"]);
    assert!(
        e.starts_with("h.cfg:4: bad hostile entry: unknown hostile mode \"net.fancy\" (known: net.tx_id_out_of_range, ")
            && e.ends_with("(vif0:net.fancy)"),
        "{e}"
    );
    cli.dir.write("g.cfg", CFG);
    let e = refused(&cli, &["create", "--hostile", "vif0=blk.x", "g.cfg"]);
    assert_eq!(
        e,
        "--hostile: bad hostile entry: vif0 is a vif: its modes are net.*, not \"blk.x\" (config g.cfg) (vif0=blk.x)"
    );
    let e = refused(&cli, &["create", "--hostile", "vif0=net.nope", "g.cfg"]);
    assert!(
        e.starts_with("--hostile: bad hostile entry: unknown hostile mode \"net.nope\"")
            && e.ends_with("(vif0=net.nope)"),
        "{e}"
    );
    let e = refused(
        &cli,
        &["create", "--hostile", "xvda=blk.never_answers", "g.cfg"],
    );
    assert!(e.contains("no disk xvda in this config"), "{e}");
    let e = refused(&cli, &["create", "-n", "--hostile", "nonsense", "g.cfg"]);
    assert!(e.contains("expected DEVICE:MODE"), "{e}");
    // A channel the config lacks; a channel given a mode of another class.
    let e = refused(
        &cli,
        &[
            "create",
            "--hostile",
            "console1=console.in_prod_past_ring",
            "g.cfg",
        ],
    );
    assert!(e.contains("no channel console1 in this config"), "{e}");
    cli.dir.write(
        "c.cfg",
        &format!("{CFG}channel = [ 'name=org.example.c,connection=pty' ]\n"),
    );
    let e = refused(
        &cli,
        &[
            "create",
            "--hostile",
            "org.example.c=net.tx_id_out_of_range",
            "c.cfg",
        ],
    );
    assert!(
        e.contains("org.example.c is a channel: its modes are console.*"),
        "{e}"
    );
    // Nothing was started for any of them.
    assert!(cli.daemon_pid().is_none());
}

#[test]
fn dry_run_shows_the_entries_with_the_command_line_winning() {
    let cli = Cli::new("cli-hostile-n");
    cli.dir.write(
        "h.cfg",
        &format!("{CFG}hostile = [ 'vif0:net.rx_buffers_hoarded', 'console:console.in_prod_past_ring' ]\n"),
    );
    let out = cli.ok(&[
        "create",
        "-n",
        "--hostile",
        "vif0=net.tx-id-out-of-range",
        "h.cfg",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        j["hostile"],
        serde_json::json!([
            { "device": "console", "mode": "console.in_prod_past_ring" },
            { "device": "vif0", "mode": "net.tx-id-out-of-range" },
        ])
    );
}

#[test]
fn the_command_line_mode_takes_effect_in_the_guest() {
    let cli = Cli::new("cli-hostile-run");
    cli.dir.write(
        "h.cfg",
        &format!("{CFG}hostile = [ 'vif0:net.rx_buffers_hoarded' ]\n"),
    );
    cli.ok(&["create", "--hostile", "vif0=net.mac_not_unicast", "h.cfg"]);
    let long = cli.ok(&["list", "-l", "hc"]);
    assert!(
        long.contains("net.mac_not_unicast") && !long.contains("rx_buffers_hoarded"),
        "{long}"
    );
    // The guest's console (streamed until the domain goes): the vif is refused
    // for its broadcast MAC, and the guest carries on.
    let mut child = cli
        .command()
        .args(["console", "hc"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let text = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let t2 = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            t2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let seen = wait_for(60, || {
        let t = text.lock().unwrap();
        (t.contains("nic 0: bad mac key: MAC ff:ff:ff:ff:ff:ff is not a unicast address")
            && t.contains("waiting for control/shutdown"))
        .then_some(())
    });
    cli.ok(&["shutdown", "-w", "hc"]);
    let _ = child.wait();
    let _ = reader.join();
    let t = text.lock().unwrap().clone();
    assert!(seen.is_some(), "{t}");
    assert!(t.contains("power: poweroff"), "{t}");
}
