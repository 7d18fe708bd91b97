//! xl's `channel=` through the toolstack: the daemon writes the nodes libxl writes
//! for a channel (`libxl__device_console_add`), serves it with the console backend
//! and connects it to a Unix socket or a pty; the built-in guest opens each channel
//! with xencons' secondary-console frontend, greets on it and echoes what it gets.
//! Hostile cases: a socket path that cannot be bound, or is taken by another file,
//! fails the create with one line naming file:line, the channel and the path, and
//! leaves nothing behind; duplicate names are refused by the parser.

mod toolstack_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hypercall::DomId;
use shim_hv::toolstack::daemon::Daemon;
use shim_hv::toolstack::runtime::RuntimeDir;
use shim_hv::toolstack::PowerRequest;
use toolstack_util::{builtin_cfg, wait_for, Cli, TempDir};
use xenstored::{Access, Errno, Perm, TxId};
use xl_config::DomainConfig;

const READY: &str = "waiting for control/shutdown";
const LONG: Duration = Duration::from_secs(60);

fn daemon(tmp: &TempDir) -> Arc<Daemon> {
    let d = Daemon::new(RuntimeDir::at(tmp.path().join("rt")));
    d.set_quiet(true);
    d
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

/// Connects to a channel socket with bounded reads.
fn connect(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn line(r: &mut BufReader<UnixStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn socket_and_pty_channels_carry_data_both_ways() {
    let tmp = TempDir::new("chan");
    let sock = tmp.path().join("agent.sock");
    let d = daemon(&tmp);
    let cfg = DomainConfig::parse_str(
        "t.cfg",
        &builtin_cfg(
            "ch",
            &format!(
                "channel = [ 'name=org.example.sock, connection=socket, path={}',\n  \
                 'connection=pty,name=org.example.pty' ]\n",
                sock.display()
            ),
        ),
    )
    .unwrap();
    let id = d.create(cfg).unwrap();
    // The socket listens from the start, before the guest connects.
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    wait_console(
        &d,
        id,
        "channel 1 (org.example.sock): connected, greeting sent",
    );
    wait_console(
        &d,
        id,
        "channel 2 (org.example.pty): connected, greeting sent",
    );
    wait_console(&d, id, READY);

    // The nodes libxl writes (frontend: guest-owned keys and read-only ones).
    let dom = id.0;
    let fe = format!("/local/domain/{dom}/device/console/1");
    let be = format!("/local/domain/0/backend/console/{dom}/1");
    for (node, want) in [
        (format!("{fe}/backend"), be.clone()),
        (format!("{fe}/backend-id"), "0".into()),
        (format!("{fe}/protocol"), "vt100".into()),
        (format!("{fe}/name"), "org.example.sock".into()),
        (format!("{fe}/limit"), "1048576".into()),
        (format!("{fe}/type"), "ioemu".into()),
        (format!("{fe}/output"), "chardev:libxl-channel1".into()),
        (format!("{fe}/tty"), "".into()),
        (format!("{fe}/state"), "4".into()),
        (format!("{be}/frontend"), fe.clone()),
        (format!("{be}/frontend-id"), dom.to_string()),
        (format!("{be}/online"), "1".into()),
        (format!("{be}/protocol"), "vt100".into()),
        (format!("{be}/name"), "org.example.sock".into()),
        (format!("{be}/connection"), "socket".into()),
        (format!("{be}/path"), sock.display().to_string()),
        (format!("{be}/state"), "4".into()),
        (
            format!("/local/domain/{dom}/device/console/2/output"),
            "pty".into(),
        ),
        (
            format!("/local/domain/0/backend/console/{dom}/2/connection"),
            "pty".into(),
        ),
    ] {
        assert_eq!(read(&d, &node).as_deref(), Some(want.as_str()), "{node}");
    }
    assert_eq!(
        read(&d, &format!("/local/domain/0/backend/console/{dom}/2/path")),
        None
    );
    let xs = d.hypervisor().xenstored().client(0);
    assert_eq!(
        xs.get_perms(TxId::NONE, &format!("{fe}/name")).unwrap(),
        vec![Perm::new(0, Access::None), Perm::new(dom, Access::Read)]
    );
    // The guest may read its channel's name but not change it.
    let guest = d.hypervisor().xenstored().client(dom);
    assert_eq!(
        guest.read(TxId::NONE, &format!("{fe}/name")).unwrap(),
        b"org.example.sock"
    );
    let e = guest
        .write(TxId::NONE, &format!("{fe}/name"), b"evil")
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EACCES));

    // Socket: the first client gets the greeting the guest wrote before anyone
    // connected, then the guest echoes what it is sent.
    let greeting = format!(
        "xenkit built-in guest: channel org.example.sock (console 1) of domain {dom} (ch)\n"
    );
    {
        let (mut w, mut r) = connect(&sock);
        assert_eq!(line(&mut r), greeting);
        w.write_all(b"ping 1\n").unwrap();
        assert_eq!(line(&mut r), "ping 1\n");
        let bin: Vec<u8> = (0..=255u8).collect();
        w.write_all(&bin).unwrap();
        let mut back = vec![0u8; bin.len()];
        r.read_exact(&mut back).unwrap();
        assert_eq!(back, bin);
    }
    // One client at a time: the next one is served once the first hung up, and
    // does not see the old output again.
    {
        let (mut w, mut r) = connect(&sock);
        w.write_all(b"again\n").unwrap();
        assert_eq!(line(&mut r), "again\n");
    }

    // pty: its path is in the frontend's tty node; the greeting and the echo go
    // through it.
    let tty = wait_for(60, || {
        read(&d, &format!("/local/domain/{dom}/device/console/2/tty")).filter(|t| !t.is_empty())
    })
    .expect("tty node");
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
    let mut pty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&tty)
        .unwrap();
    let mut got = Vec::new();
    let mut read_until = |pty: &mut std::fs::File, want: &[u8]| {
        let found = wait_for(60, || {
            let mut b = [0u8; 512];
            if let Ok(n) = pty.read(&mut b) {
                got.extend_from_slice(&b[..n]);
            }
            got.windows(want.len()).any(|w| w == want).then_some(())
        });
        assert!(
            found.is_some(),
            "{:?} not read from {tty}; got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got)
        );
    };
    read_until(&mut pty, b"channel org.example.pty (console 2)");
    pty.write_all(b"via pty\n").unwrap();
    read_until(&mut pty, b"via pty\n");

    // Gone with the domain: nodes and socket file.
    d.shutdown("ch", PowerRequest::Poweroff).unwrap();
    assert!(d.wait_gone(id, LONG));
    assert!(
        wait_for(60, || (!sock.exists()).then_some(())).is_some(),
        "socket file left behind"
    );
    assert_eq!(read(&d, "/local/domain/0/backend/console"), None);
}

#[test]
fn unusable_socket_paths_fail_the_create_with_one_line_and_leave_nothing() {
    let tmp = TempDir::new("chan-bad");
    let d = daemon(&tmp);
    let taken = tmp.write("taken", "keep me");
    for (path, why) in [
        (tmp.path().join("no/such/dir/x.sock"), "cannot listen"),
        (taken.clone(), "already exists"),
    ] {
        let text = builtin_cfg(
            "bad",
            &format!(
                "channel = [ 'name=org.example.foo,connection=socket,path={}' ]\n",
                path.display()
            ),
        );
        let cfg = DomainConfig::parse_str("t.cfg", &text).unwrap();
        let msg = d.create(cfg).unwrap_err().to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "t.cfg:3: channel org.example.foo cannot be attached: path={}: {why}",
                path.display()
            )),
            "{msg}"
        );
        assert!(d.list().iter().all(|i| i.name != "bad"), "domain left");
        assert_eq!(read(&d, "/local/domain/0/backend/console"), None);
    }
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "keep me");
}

/// Through the real daemon process: `create -n` shows the channels, `create` offers
/// them, and an unusable path is one line on stderr with nothing created.
#[test]
fn cli_create_with_channels() {
    let cli = Cli::new("chan-cli");
    let sock = cli.dir.path().join("c.sock");
    cli.dir.write(
        "c.cfg",
        &builtin_cfg(
            "cc",
            "channel = [ 'name=org.example.cli,connection=socket,path=c.sock' ]\n",
        ),
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["create", "-n", "c.cfg"])).unwrap();
    let c = &json["channels"][0];
    assert_eq!(
        (
            c["devid"].as_u64(),
            c["name"].as_str(),
            c["connection"].as_str(),
            c["path"].as_str()
        ),
        (
            Some(1),
            Some("org.example.cli"),
            Some("socket"),
            Some("c.sock")
        )
    );

    cli.ok(&["create", "c.cfg"]);
    // The relative path is the one from the directory `create` ran in.
    let s = wait_for(60, || UnixStream::connect(&sock).ok()).expect("channel socket");
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert!(line(&mut r).starts_with("xenkit built-in guest: channel org.example.cli (console 1)"));
    (&s).write_all(b"hello\n").unwrap();
    assert_eq!(line(&mut r), "hello\n");
    drop((s, r));

    cli.dir.write(
        "m.cfg",
        &builtin_cfg(
            "m",
            "channel = [ 'name=org.example.bad,connection=socket,path=/no/such/dir/m.sock' ]\n",
        ),
    );
    let o = cli.run(&["create", "m.cfg"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "m.cfg:3: channel org.example.bad cannot be attached: \
             path=/no/such/dir/m.sock: cannot listen"
        ),
        "{err}"
    );
    let names: Vec<String> = cli.list().into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["cc"]);
}

/// A frontend that writes garbage (a ring-ref that is not a number, one that was
/// never granted) fails its channel only: the backend writes `error` and goes
/// Closing; when the frontend starts again the backend offers again.
#[test]
fn hostile_frontend_values_close_the_channel_not_the_host() {
    use xen_backends::console::channel::{ChannelBackend, ChannelConfig, Connection};
    use xen_backends::console::{ConsoleBackend, ConsoleConfig};
    use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};

    let hv = Hypervisor::new(HypervisorConfig::default());
    let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
    let dom = hv.create_domain(DomainSpec::new("h", 4)).unwrap();
    let ch = ChannelBackend::start(
        &hv,
        &consoles,
        dom.id(),
        ChannelConfig {
            devid: 1,
            name: "org.example.h".into(),
            connection: Connection::Pty,
            hostile: None,
        },
    )
    .unwrap();
    let dom0 = hv.xenstored().client(0);
    let guest = hv.xenstored().client(dom.id().0);
    let fe = ch.frontend_path().to_string();
    let be = ch.backend_path().to_string();
    let get = |p: &str| {
        dom0.read(TxId::NONE, p)
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let wait_state = |want: &str| {
        wait_for(60, || {
            (get(&format!("{be}/state")).as_deref() == Some(want)).then_some(())
        })
        .unwrap_or_else(|| panic!("backend never reached state {want}"))
    };
    wait_state("2");
    for (ring_ref, why) in [("abc", "bad value"), ("7", "grant")] {
        for (k, v) in [("ring-ref", ring_ref), ("port", "1"), ("state", "3")] {
            guest
                .write(TxId::NONE, &format!("{fe}/{k}"), v.as_bytes())
                .unwrap();
        }
        wait_state("5");
        let err = get(&format!("{be}/error")).unwrap_or_default();
        assert!(err.contains(why), "{err}");
        assert!(!ch.connected());
        // The frontend closes and starts again: offered again, error cleared.
        guest
            .write(TxId::NONE, &format!("{fe}/state"), b"6")
            .unwrap();
        wait_state("6");
        guest
            .write(TxId::NONE, &format!("{fe}/state"), b"1")
            .unwrap();
        wait_state("2");
        assert_eq!(get(&format!("{be}/error")).as_deref(), Some(""));
    }
    ch.destroy();
    assert_eq!(get(&be), None);
    assert_eq!(get(&fe), None);
    assert!(consoles.console_n(dom.id(), 1).is_none());
}
