//! docs/hostile-input.md rows for the CLI: 44 (config errors: file:line and the text,
//! nothing started), 45 (disk images not a multiple of the sector size), 46 (the
//! control socket: 0600, other users refused, no TCP listener).

mod toolstack_util;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;

use toolstack_util::{builtin_cfg, Cli, EXE};

/// Row 44: each bad config fails with one line naming file:line and the text, and
/// starts nothing (no daemon; with a daemon running, no domain).
#[test]
fn row44_bad_configs_start_nothing() {
    let cli = Cli::new("row44");
    let img = cli.dir.write("ok.img", &"\0".repeat(4096));
    let cases: &[(&str, String, &str)] = &[
        (
            "malformed",
            "name = 'm'\nmemory = 16\nthis is not a setting\n".into(),
            "m.cfg:3:",
        ),
        (
            "bad MAC",
            "name = 'm'\nvif = [ 'mac=00:16:3e:zz:00:01' ]\n".into(),
            "m.cfg:2:",
        ),
        (
            "bad vdev",
            format!("name = 'm'\ndisk = [ 'file:{},hde,w' ]\n", img.display()),
            "m.cfg:2:",
        ),
        (
            "missing disk file",
            "name = 'm'\n\ndisk = [ 'file:/no/such/disk.img,xvda,w' ]\n".into(),
            "m.cfg:3:",
        ),
        (
            "mode not r/w",
            format!("name = 'm'\ndisk = [ 'file:{},xvda,x' ]\n", img.display()),
            "m.cfg:2:",
        ),
        (
            "unsupported action",
            "name = 'm'\non_reboot = 'rename-restart'\n".into(),
            "m.cfg: on_reboot = \"rename-restart\" is not supported",
        ),
    ];
    for (what, text, prefix) in cases {
        cli.dir.write("m.cfg", text);
        let o = cli.run(&["create", "m.cfg"]);
        assert_eq!(o.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with(prefix), "{what}: {err}");
        assert!(
            !cli.runtime().join("control.sock").exists(),
            "{what}: a daemon was started"
        );
    }
    // Unknown keys are warnings with file:line (as xl, which ignores them).
    cli.dir
        .write("u.cfg", &builtin_cfg("u", "colour = 'blue'\n"));
    let o = cli.run(&["create", "-n", "u.cfg"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("u.cfg:3: warning"), "{err}");
    assert!(err.contains("colour"), "{err}");

    // With a daemon running, a bad config creates nothing either.
    cli.dir.write("good.cfg", &builtin_cfg("good", ""));
    cli.ok(&["create", "good.cfg"]);
    for (what, text, _) in cases {
        cli.dir.write("m.cfg", text);
        let o = cli.run(&["create", "m.cfg"]);
        assert_eq!(o.status.code(), Some(1), "{what}");
    }
    let rows = cli.list();
    assert_eq!(rows.len(), 1, "{rows:?}");
}

/// Row 45: an image that is not a multiple of 512 bytes is used rounded down,
/// with a warning naming file:line; one smaller than a sector is refused.
#[test]
fn row45_disk_image_sizes() {
    let cli = Cli::new("row45");
    let odd = cli.dir.write("odd.img", &"x".repeat(512 * 4 + 100));
    cli.dir.write(
        "o.cfg",
        &builtin_cfg(
            "o",
            &format!("disk = [ 'file:{},xvda,w' ]\n", odd.display()),
        ),
    );
    let o = cli.run(&["create", "o.cfg"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("o.cfg:3: warning: disk image"), "{err}");
    assert!(err.contains("4 sectors"), "{err}");
    assert!(err.contains("last 100 bytes"), "{err}");

    let tiny = cli.dir.write("tiny.img", "short");
    cli.dir.write(
        "t.cfg",
        &builtin_cfg(
            "t",
            &format!("disk = [ 'file:{},xvda,w' ]\n", tiny.display()),
        ),
    );
    let o = cli.run(&["create", "t.cfg"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("t.cfg:3: disk image"),
        "{err}"
    );
    assert!(err.contains("5 bytes"), "{err}");
    assert_eq!(cli.list().len(), 1);
}

/// Socket inodes of a process's open descriptors.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let mut v = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(t) = fs::read_link(e.path()) {
            let t = t.to_string_lossy().into_owned();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                v.push(n.parse().unwrap());
            }
        }
    }
    v
}

/// Inodes of the machine's TCP sockets (/proc/net/tcp and tcp6, column 10).
fn tcp_inodes() -> Vec<u64> {
    let mut v = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = fs::read_to_string(f) else {
            continue;
        };
        for l in s.lines().skip(1) {
            if let Some(i) = l.split_whitespace().nth(9) {
                v.push(i.parse().unwrap_or(0));
            }
        }
    }
    v
}

/// Row 46: the runtime directory is 0700, both sockets 0600, the daemon has no TCP
/// socket at all.
#[test]
fn row46_socket_modes_and_no_tcp() {
    let cli = Cli::new("row46");
    cli.dir.write("s.cfg", &builtin_cfg("s", ""));
    cli.ok(&["create", "s.cfg"]);
    let rt = cli.runtime();
    assert_eq!(fs::metadata(&rt).unwrap().mode() & 0o777, 0o700);
    for s in ["control.sock", "xenstored.sock"] {
        let m = fs::symlink_metadata(rt.join(s)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600, "{s}");
    }
    let pid = cli.daemon_pid().unwrap();
    let mine = socket_inodes(pid);
    assert!(!mine.is_empty());
    let tcp = tcp_inodes();
    assert!(
        mine.iter().all(|i| !tcp.contains(i)),
        "the daemon has a TCP socket"
    );
    let env = cli.ok(&["xenstore-env"]);
    assert_eq!(
        env.trim(),
        format!(
            "export XENSTORED_PATH={}",
            rt.join("xenstored.sock").display()
        )
    );
}

const NOBODY: u32 = 65534;

/// Row 46: another user is refused, by the file modes and, where those are opened
/// up, by the daemon's own `SO_PEERCRED` check. Needs root (to become nobody).
#[test]
fn row46_other_users_are_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to run a client as another user");
        return;
    }
    let cli = Cli::new("row46uid");
    // The binary must be reachable for nobody: copy it somewhere world-readable.
    let exe = cli.dir.path().join("shim-hv");
    fs::copy(EXE, &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(cli.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(cli.xdg(), fs::Permissions::from_mode(0o755)).unwrap();
    cli.dir.write("s.cfg", &builtin_cfg("s", ""));
    cli.ok(&["create", "s.cfg"]);
    let as_nobody = |args: &[&str]| {
        std::process::Command::new(&exe)
            .args(args)
            .env("XDG_RUNTIME_DIR", cli.xdg())
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };
    // The 0700 directory and 0600 socket keep nobody out.
    for args in [&["list"][..], &["destroy", "s"], &["daemon-stop"]] {
        let o = as_nobody(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("Permission denied"), "{args:?}: {err}");
    }
    // Open the files up: the daemon itself still refuses nobody.
    let rt = cli.runtime();
    fs::set_permissions(&rt, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(rt.join("control.sock"), fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["list"][..], &["destroy", "s"], &["daemon-stop"]] {
        let o = as_nobody(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("permission denied: uid 65534 may not control this shim-hv daemon"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(cli.list().len(), 1, "nobody changed nothing");
}

/// A "config" that never ends (`/dev/zero`, whose metadata says 0 bytes) or is huge
/// is refused with one line naming it, after reading at most the config size bound:
/// `create` must neither hang nor swallow it into memory.
#[test]
fn endless_or_huge_config_is_refused() {
    let cli = Cli::new("endless");
    let huge = cli.dir.write("huge.cfg", &"# padding\n".repeat(200_000));
    for path in [std::path::PathBuf::from("/dev/zero"), huge] {
        let p = path.display().to_string();
        let o = cli.run(&["create", "-n", &p]);
        assert!(!o.status.success(), "{p} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&p) && err.contains("bytes"), "{p}: {err}");
        assert_eq!(err.trim().lines().count(), 2, "{p}: {err}"); // "Parsing config from" + error
    }
    assert!(cli.daemon_pid().is_none());
}

/// docs/hostile-input.md H1: absurd numbers where the CLI takes a domain (ids past u16, past
/// u64, negative, hex, empty, huge) and absurd numeric config values: each gives a
/// short error on stderr and a non-zero exit, never a panic, and nothing changes.
#[test]
fn h1_absurd_numbers_are_clean_errors() {
    let cli = Cli::new("h1");
    cli.dir.write("good.cfg", &builtin_cfg("good", ""));
    cli.ok(&["create", "good.cfg"]);
    let huge = "9".repeat(5000);
    let ids = [
        "18446744073709551616",
        "65536",
        "4294967296",
        "-1",
        "0x1",
        "1e3",
        "",
        " 1",
        "a\nb",
        huge.as_str(),
    ];
    let commands: &[&[&str]] = &[
        &["shutdown"],
        &["shutdown", "-w"],
        &["reboot"],
        &["destroy"],
        &["console"],
        &["block-list"],
        &["network-list"],
    ];
    for cmd in commands {
        for id in ids {
            let mut args: Vec<&str> = cmd.to_vec();
            args.extend(["--", id]);
            let o = cli.run(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            let what = format!("{cmd:?} {:?}", id.get(..40).unwrap_or(id));
            assert!(!o.status.success(), "{what}");
            assert_ne!(o.status.code(), Some(101), "{what}: {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
            assert!(err.len() < 400, "{what}: {err}");
        }
    }
    // Numeric config values (the toolstack's other numbers).
    for (what, line) in [
        ("memory past u64", "memory = 18446744073709551616\n"),
        ("memory negative", "memory = -16\n"),
        ("memory huge", "memory = 99999999999999\n"),
        ("maxmem past u64", "maxmem = 18446744073709551616\n"),
        ("vcpus huge", "vcpus = 4294967296\n"),
        ("vcpus text", "vcpus = 'many'\n"),
    ] {
        cli.dir
            .write("n.cfg", &format!("name = \"n\"\nmemory = 16\n{line}"));
        let o = cli.run(&["create", "n.cfg"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("n.cfg:3:"), "{what}: {err}");
    }
    // `vcpus` 0 or negative is raised to 1 with a warning naming the line (as xl).
    for v in ["0", "-1"] {
        cli.dir.write(
            "z.cfg",
            &format!("name = \"z\"\nmemory = 16\nvcpus = {v}\n"),
        );
        let o = cli.run(&["create", "z.cfg"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("z.cfg:3: warning: vcpus below 1"), "{err}");
        cli.ok(&["destroy", "z"]);
    }
    let rows = cli.list();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "good");
}
