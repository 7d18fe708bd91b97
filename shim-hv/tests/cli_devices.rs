//! Devices through the CLI, end to end: `create` attaches a config's vifs,
//! `network-list` shows them connected (frontend and backend state 4) with their
//! event channel and ring references, the built-in guest reports them on its
//! console, Xen's own `xenstore-ls` (Debian's xenstore-utils, when installed) sees
//! `device/vif/0` and its backend, and nothing is left in xenstore afterwards.

mod toolstack_util;

use std::io::{BufRead, BufReader, Read};
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
        // (The listing reads the keys one by one, the ring refs before the state:
        // wait for a row taken after the frontend wrote both refs, not just its
        // state; a ref read too early shows as -1.)
        let refs_read = r
            .get(6)
            .and_then(|s| s.split_once('/'))
            .is_some_and(|(tx, rx)| tx.parse::<u32>().is_ok() && rx.parse::<u32>().is_ok());
        (r.get(4).map(String::as_str) == Some("4")
            && r.get(7).map(String::as_str) == Some("4")
            && refs_read)
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

    // The guest's console: its nic, then the power-off. Attach first and see the
    // nic line arrive (the session replays history), so the shutdown cannot race the
    // console client's connection.
    let mut console = cli
        .command()
        .args(["console", "n1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = console.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut text = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !text.contains("nic 0: mac") && std::time::Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(std::time::Duration::from_millis(200)) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    cli.ok(&["shutdown", "-w", "n1"]);
    let done = wait_for(30, || console.try_wait().ok().flatten());
    if done.is_none() {
        let _ = console.kill();
    }
    let _ = console.wait();
    let _ = reader.join();
    text.extend(lines_rx.try_iter().map(|l| l + "\n"));
    assert!(
        text.contains("nic 0: mac 00:16:3e:aa:bb:01, mtu 1500") && text.contains("ip 10.9.0.1/24"),
        "{text}"
    );
    assert!(text.contains("power: poweroff"), "{text}");

    if let Some(ls) = xs_tool(&cli, "xenstore-ls", &["/local/domain/0"]) {
        assert!(!ls.contains("backend"), "{ls}");
    }
}

/// One `block-list` row, split on whitespace.
fn block_rows(cli: &Cli, dom: &str) -> Vec<Vec<String>> {
    let out = cli.ok(&["block-list", dom]);
    let mut lines = out.lines();
    assert!(
        lines.next().unwrap().starts_with("Vdev  BE  handle"),
        "{out}"
    );
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// A read-write disk, a read-only disk, a cdrom with media and an empty cdrom drive:
/// `block-list` shows each by vdev number (Connected, with event channel and ring
/// ref; the empty drive's backend waits in InitWait), the guest reports each on
/// its console, xenstore-ls shows `device/vbd/51712` with its backend, and the
/// images are left exactly as they were (the guest's scratch write is undone).
#[test]
fn disks_are_attached_listed_and_left_intact() {
    let cli = Cli::new("cli-vbd");
    let mut rw = vec![0u8; 4 << 20];
    rw[..14].copy_from_slice(b"xenkit rw disk");
    for (i, b) in rw[(4 << 20) - 512..].iter_mut().enumerate() {
        *b = i as u8; // the last sector: the guest's scratch sector
    }
    std::fs::write(cli.dir.path().join("rw.img"), &rw).unwrap();
    let mut ro = vec![0u8; 1 << 20];
    ro[..14].copy_from_slice(b"xenkit ro disk");
    std::fs::write(cli.dir.path().join("ro.img"), &ro).unwrap();
    let mut iso = vec![0u8; 2 << 20];
    iso[..10].copy_from_slice(b"xenkit iso");
    std::fs::write(cli.dir.path().join("cd.iso"), &iso).unwrap();
    cli.dir.write(
        "d.cfg",
        "name = 'd1'\nmemory = 16\n\
         disk = [ 'file:rw.img,xvda,w',\n\
                  'ro.img,raw,xvdb,r',\n\
                  'format=raw, vdev=hdc, access=ro, devtype=cdrom, target=cd.iso',\n\
                  ',,xvdd,cdrom' ]\n",
    );
    let o = cli.run(&["create", "d.cfg"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("not attached"), "{err}");

    // Vdev BE handle state evt-ch ring-ref BE-state BE-path
    let rows = wait_for(60, || {
        let rows = block_rows(&cli, "d1");
        let ready = rows.len() == 4
            && rows
                .iter()
                .filter(|r| r[0] != "51760")
                // (Keys are read one by one: also wait for the ring ref.)
                .all(|r| r[3] == "4" && r[6] == "4" && r[5].parse::<u32>().is_ok());
        ready.then_some(rows)
    })
    .expect("the disks connected");
    let nums: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(nums, ["5632", "51712", "51728", "51760"], "{rows:?}");
    for r in rows.iter().filter(|r| r[0] != "51760") {
        assert_eq!(&r[1..3], ["0", "1"], "{r:?}");
        assert!(r[4].parse::<u32>().unwrap() > 0, "event channel {r:?}");
        assert!(r[5].parse::<u32>().unwrap() > 0, "ring ref {r:?}");
        assert_eq!(r[7], format!("/local/domain/0/backend/vbd/1/{}", r[0]));
    }
    // The empty drive: no frontend connection, backend in InitWait.
    let empty = &rows[3];
    assert_eq!(&empty[3..7], ["1", "-1", "-1", "2"], "{empty:?}");

    if let Some(ls) = xs_tool(&cli, "xenstore-ls", &["/local/domain/1/device/vbd"]) {
        assert!(ls.contains("51712 = \"\""), "{ls}");
        assert!(
            ls.contains("backend = \"/local/domain/0/backend/vbd/1/51712\""),
            "{ls}"
        );
        let be = xs_tool(&cli, "xenstore-ls", &["/local/domain/0/backend/vbd/1"]).unwrap();
        for want in [
            "dev = \"xvda\"",
            "mode = \"w\"",
            "mode = \"r\"",
            "sectors = \"8192\"",
            "device-type = \"cdrom\"",
            "info = \"4\"",
        ] {
            assert!(be.contains(want), "missing {want}:\n{be}");
        }
    }

    let mut console = cli
        .command()
        .args(["console", "d1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Attached once the first line (from the console's history) shows; only then
    // shut down, or the domain could be gone before `console` finds it.
    let mut console_out = BufReader::new(console.stdout.take().unwrap());
    let mut text = String::new();
    assert!(
        console_out.read_line(&mut text).unwrap() > 0,
        "`console d1` printed nothing"
    );
    cli.ok(&["shutdown", "-w", "d1"]);
    if wait_for(30, || console.try_wait().ok().flatten()).is_none() {
        let _ = console.kill();
    }
    console_out.read_to_string(&mut text).unwrap();
    assert!(console.wait().unwrap().success(), "{text}");
    for want in [
        "disk 51712 (xvda): 8192 sectors of 512 bytes (4 MiB), read-write disk",
        "disk 51712 (xvda): sector 0: \"xenkit rw disk\"",
        "disk 51712 (xvda): scratch sector 8191: written, read back, restored, flushed",
        "disk 51728 (xvdb): 2048 sectors of 512 bytes (1 MiB), read-only disk",
        "disk 51728 (xvdb): sector 0: \"xenkit ro disk\"",
        "disk 51728 (xvdb): write refused: ",
        "disk 5632 (hdc): 4096 sectors of 512 bytes (2 MiB), read-only cdrom",
        "disk 5632 (hdc): sector 0: \"xenkit iso\"",
        "disk 51760 (xvdd): cdrom drive, no media",
        "power: poweroff",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The images are as they were.
    assert_eq!(std::fs::read(cli.dir.path().join("rw.img")).unwrap(), rw);
    assert_eq!(std::fs::read(cli.dir.path().join("ro.img")).unwrap(), ro);
    assert_eq!(std::fs::read(cli.dir.path().join("cd.iso")).unwrap(), iso);
    if let Some(ls) = xs_tool(&cli, "xenstore-ls", &["/local/domain/0"]) {
        assert!(!ls.contains("backend"), "{ls}");
    }
}
