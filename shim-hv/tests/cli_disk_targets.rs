//! docs/hostile-input.md H3 through the toolstack: a config `disk =` line naming a FIFO,
//! `/dev/zero`, a socket, a dangling symlink, a directory or an unreadable file
//! gives one error line with `file:line` and the path, starts nothing (no daemon,
//! no domain), and never hangs; for the CLI (`shim-hv create`, with and without a
//! daemon running) and for the daemon itself (`Daemon::create`).

mod toolstack_util;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use shim_hv::toolstack::daemon::Daemon;
use shim_hv::toolstack::runtime::RuntimeDir;
use toolstack_util::{builtin_cfg, Cli, TempDir};
use xl_config::DomainConfig;

/// Runs `shim-hv ARGS` with a bound: a command still running after 60 s is killed
/// and the test fails (a hang, not a timing assertion).
fn run_bounded(cli: &Cli, args: &[&str]) -> Output {
    let mut child = cli
        .command()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shim-hv {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A path root cannot open for reading (see `blk_image_files.rs`), or `None`.
fn unreadable(dir: &TempDir) -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        let p = PathBuf::from("/proc/sys/vm/compact_memory");
        (p.exists() && std::fs::File::open(&p).is_err()).then_some(p)
    } else {
        let p = dir.path().join("unreadable.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        Some(p)
    }
}

/// (what, path, words the error must contain), and the socket's listener (kept
/// while the test runs).
type Cases = Vec<(&'static str, PathBuf, &'static str)>;
fn bad_targets(dir: &TempDir) -> (Cases, std::os::unix::net::UnixListener) {
    let fifo = dir.path().join("fifo.img");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sock = dir.path().join("sock.img");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let dangling = dir.path().join("dangling.img");
    std::os::unix::fs::symlink(dir.path().join("gone.img"), &dangling).unwrap();
    let subdir = dir.path().join("dir.img");
    std::fs::create_dir(&subdir).unwrap();
    let mut v = vec![
        ("fifo", fifo, "a FIFO"),
        ("dev-zero", PathBuf::from("/dev/zero"), "a character device"),
        ("socket", sock, "a socket"),
        ("dangling symlink", dangling, "dangling symbolic link"),
        ("directory", subdir, "a directory"),
    ];
    match unreadable(dir) {
        Some(p) => v.push(("unreadable", p, "Permission denied")),
        None => eprintln!("no unreadable path available: that case is skipped"),
    }
    (v, listener)
}

/// The disk lines tried for each target (`phy:` must be a block device; the
/// others a regular file or block device), each on line 3 of its config.
fn disk_lines(path: &std::path::Path) -> [String; 4] {
    let p = path.display();
    [
        format!("disk = [ 'file:{p},xvda,w' ]\n"),
        format!("disk = [ 'file:{p},xvda,r' ]\n"),
        format!("disk = [ '{p},raw,xvda,w' ]\n"),
        format!("disk = [ 'phy:{p},xvda,w' ]\n"),
    ]
}

#[test]
fn h3_cli_refuses_unusable_disk_targets() {
    let cli = Cli::new("h3cli");
    let (cases, _keep) = bad_targets(&cli.dir);
    let check = |daemon_running: bool| {
        for (what, path, why) in &cases {
            for line in disk_lines(path) {
                let case = format!("{what}: {line:?} (daemon running: {daemon_running})");
                cli.dir.write("m.cfg", &builtin_cfg("m", &line));
                let o = run_bounded(&cli, &["create", "m.cfg"]);
                assert_eq!(o.status.code(), Some(1), "{case}: {o:?}");
                let err = String::from_utf8_lossy(&o.stderr);
                let errors: Vec<&str> = err
                    .lines()
                    .filter(|l| !l.starts_with("Parsing config"))
                    .collect();
                assert_eq!(errors.len(), 1, "{case}: {err}");
                let e = errors[0];
                assert!(e.starts_with("m.cfg:3: disk: "), "{case}: {e}");
                assert!(e.contains(&path.display().to_string()), "{case}: {e}");
                // `phy:` refuses anything but a block device, whatever it is.
                if !line.contains("phy:") {
                    assert!(e.contains(why), "{case}: {e}");
                }
                assert!(!err.contains("panicked"), "{case}: {err}");
                if !daemon_running {
                    assert!(
                        !cli.runtime().join("control.sock").exists(),
                        "{case}: a daemon was started"
                    );
                }
            }
        }
    };
    check(false);
    cli.dir.write("good.cfg", &builtin_cfg("good", ""));
    cli.ok(&["create", "good.cfg"]);
    check(true);
    let rows = cli.list();
    assert_eq!(rows.len(), 1, "{rows:?}");
}

#[test]
fn h3_daemon_refuses_unusable_disk_targets() {
    let tmp = TempDir::new("h3daemon");
    let (cases, _keep) = bad_targets(&tmp);
    let d = Daemon::new(RuntimeDir::at(tmp.path().join("rt")));
    d.set_quiet(true);
    for (what, path, why) in &cases {
        for line in disk_lines(path) {
            let case = format!("{what}: {line:?}");
            let cfg = DomainConfig::parse_str("t.cfg", &builtin_cfg("h3", &line)).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let d2 = d.clone();
            std::thread::spawn(move || {
                let _ = tx.send(d2.create(cfg).map_err(|e| e.to_string()));
            });
            let r = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{case}: create hung or panicked"));
            let e = r.expect_err(&case);
            assert!(!e.contains('\n'), "{case}: {e:?}");
            assert!(e.starts_with("t.cfg:3: disk: "), "{case}: {e}");
            assert!(e.contains(&path.display().to_string()), "{case}: {e}");
            if !line.contains("phy:") {
                assert!(e.contains(why), "{case}: {e}");
            }
            assert!(
                d.hypervisor().domain_by_name("h3").is_none(),
                "{case}: a domain was created"
            );
        }
    }
}
