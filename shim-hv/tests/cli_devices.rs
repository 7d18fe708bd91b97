//! Devices through the CLI, end to end: `create` attaches a config's vifs,
//! `network-list` shows them connected (frontend and backend state 4) with their
//! event channel and ring references, the built-in guest reports them on its
//! console, Xen's own `xenstore-ls` (Debian's xenstore-utils, when installed) sees
//! `device/vif/0` and its backend, and nothing is left in xenstore afterwards.

mod toolstack_util;

use std::process::{Command, Stdio};

use toolstack_util::{wait_for, Cli};

/// One `network-list` row, split on whitespace.
fn net_rows(cli: &Cli, dom: &str) -> Vec<Vec<String>> {
    let out = cli.ok(&["network-list", dom]);
    let mut lines = out.lines();
    assert!(
        lines.next().unwrap().starts_with("Idx BE Mac Addr."),
        "{out}"
    );
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Runs a xenstore-utils tool against the CLI's daemon; `None` (with a message)
/// when the tools are not installed.
fn xs_tool(cli: &Cli, tool: &str, args: &[&str]) -> Option<String> {
    let Some(exe) = which(tool) else {
        eprintln!("{tool} not installed (apt-get install xenstore-utils): check skipped");
        return None;
    };
    let o = Command::new(exe)
        .args(args)
        .env("XENSTORED_PATH", cli.runtime().join("xenstored.sock"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{tool} {args:?}: {o:?}");
    Some(String::from_utf8(o.stdout).unwrap())
}

#[test]
fn vif_is_attached_listed_and_removed() {
    let cli = Cli::new("cli-vif");
    cli.dir.write(
        "n.cfg",
        "name = 'n1'\nmemory = 16\nvif = [ 'mac=00:16:3e:aa:bb:01,bridge=xenbr9,ip=10.9.0.1' ]\n",
    );
    let o = cli.run(&["create", "n.cfg"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("not attached"), "{err}");

    // Idx BE Mac handle state evt-ch tx/rx BE-state BE-path
    let row = wait_for(60, || {
        let rows = net_rows(&cli, "n1");
        let r = rows.into_iter().next()?;
        (r.get(4).map(String::as_str) == Some("4") && r.get(7).map(String::as_str) == Some("4"))
            .then_some(r)
    })
    .expect("vif 0 connected");
    assert_eq!(&row[..4], ["0", "0", "00:16:3e:aa:bb:01", "0"], "{row:?}");
    let evtchn: i64 = row[5].parse().unwrap();
    assert!(evtchn > 0, "{row:?}");
    let (tx, rx) = row[6].split_once('/').unwrap();
    assert!(tx.parse::<u32>().unwrap() > 0 && rx.parse::<u32>().unwrap() > 0);
    assert_eq!(row[8], "/local/domain/0/backend/vif/1/0");

    if let Some(ls) = xs_tool(&cli, "xenstore-ls", &["/local/domain/1/device/vif"]) {
        assert!(
            ls.contains("backend = \"/local/domain/0/backend/vif/1/0\""),
            "{ls}"
        );
        assert!(ls.contains("mac = \"00:16:3e:aa:bb:01\""), "{ls}");
        let be = xs_tool(&cli, "xenstore-ls", &["/local/domain/0/backend/vif/1/0"]).unwrap();
        assert!(be.contains("bridge = \"xenbr9\""), "{be}");
        assert!(be.contains("ip = \"10.9.0.1\""), "{be}");
        assert!(be.contains("state = \"4\""), "{be}");
    }

    // The guest's console: its nic, then the power-off.
    let mut console = cli
        .command()
        .args(["console", "n1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cli.ok(&["shutdown", "-w", "n1"]);
    let done = wait_for(30, || console.try_wait().ok().flatten());
    if done.is_none() {
        let _ = console.kill();
    }
    let out = console.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("nic 0: mac 00:16:3e:aa:bb:01, mtu 1500") && text.contains("ip 10.9.0.1/24"),
        "{text}"
    );
    assert!(text.contains("power: poweroff"), "{text}");

    if let Some(ls) = xs_tool(&cli, "xenstore-ls", &["/local/domain/0"]) {
        assert!(!ls.contains("backend"), "{ls}");
    }
}
