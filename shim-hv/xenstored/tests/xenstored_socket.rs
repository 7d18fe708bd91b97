//! xenstored's dom0 Unix socket: raw clients (good and bad) and, when installed,
//! Debian's `xenstore-*` tools (libxenstore 4.17) through `XENSTORED_PATH`.

mod xenstored_common;

use hypercall::abi::xs_wire::{msg, MsgHeader};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;
use xenstored::{Access, Perm, Quotas, SocketOptions, SocketServer, TxId, Xenstored};
use xenstored_common::{header_bytes, message, parse_header, split_event, strs, unique, DEADLINE};

fn sock_path(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "xenkit-xs-{}-{}-{tag}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("socket")
}

fn serve(tag: &str) -> (Arc<Xenstored>, SocketServer) {
    let xs = Xenstored::new(Quotas::default());
    let srv = xs.serve_unix(&sock_path(tag)).unwrap();
    (xs, srv)
}

struct Client {
    s: UnixStream,
    next: u32,
    events: Vec<(String, String)>,
}

impl Client {
    fn connect(p: &Path) -> Client {
        let s = UnixStream::connect(p).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Client {
            s,
            next: 1,
            events: Vec::new(),
        }
    }

    fn read_msg(&mut self) -> Option<(MsgHeader, Vec<u8>)> {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).ok()?;
        let h = parse_header(&h);
        let mut p = vec![0u8; h.len as usize];
        self.s.read_exact(&mut p).ok()?;
        Some((h, p))
    }

    fn call(&mut self, ty: u32, tx: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let id = self.next;
        self.next += 1;
        self.s.write_all(&message(ty, id, tx, payload)).unwrap();
        loop {
            let (h, p) = self.read_msg().expect("reply");
            if h.ty == msg::WATCH_EVENT {
                assert_eq!((h.req_id, h.tx_id), (0, 0));
                self.events.push(split_event(&p));
                continue;
            }
            assert_eq!((h.req_id, h.tx_id), (id, tx));
            return (h.ty, p);
        }
    }

    /// Whether the server closed the connection (reading whatever it sent before).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 4096];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(
            Instant::now() < end,
            "condition not reached before the deadline"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn socket_is_private_and_removed_on_drop() {
    let (_xs, srv) = serve("mode");
    let p = srv.path().to_path_buf();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_dir(p.parent().unwrap()).unwrap().count() == 1,
        "no temporaries left"
    );
    let mut c = Client::connect(&p);
    drop(srv);
    assert!(!p.exists());
    assert!(c.closed(), "clients are disconnected");
}

#[test]
fn binding_refuses_live_servers_and_files() {
    let (xs, srv) = serve("bind");
    let p = srv.path().to_path_buf();
    assert_eq!(
        xs.serve_unix(&p).unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );
    drop(srv);
    std::fs::write(&p, b"not a socket").unwrap();
    assert!(xs.serve_unix(&p).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), b"not a socket");
    std::fs::remove_file(&p).unwrap();
    // A stale socket (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
    let srv = xs.serve_unix(&p).unwrap();
    let mut c = Client::connect(&p);
    assert_eq!(
        c.call(msg::GET_DOMAIN_PATH, 0, &strs(&["3"])).1,
        strs(&["/local/domain/3"])
    );
    drop(srv);
}

#[test]
fn requests_and_watch_events() {
    let (xs, srv) = serve("ops");
    let mut c = Client::connect(srv.path());
    assert_eq!(c.call(msg::WRITE, 0, b"/a/b\0hello").0, msg::WRITE);
    assert_eq!(
        c.call(msg::READ, 0, &strs(&["/a/b"])),
        (msg::READ, b"hello".to_vec())
    );
    // Socket clients are dom0: relative paths are below /local/domain/0.
    assert_eq!(c.call(msg::WRITE, 0, b"rel\0x").0, msg::WRITE);
    assert_eq!(
        xs.client(0)
            .read(TxId::NONE, "/local/domain/0/rel")
            .unwrap(),
        b"x"
    );
    assert_eq!(c.call(msg::WATCH, 0, &strs(&["/a", "tok"])).0, msg::WATCH);
    // The initial event follows the reply.
    let (h, p) = c.read_msg().unwrap();
    assert_eq!(h.ty, msg::WATCH_EVENT);
    assert_eq!(split_event(&p), ("/a".into(), "tok".into()));
    // Changes by anyone arrive as events.
    xs.client(0).write(TxId::NONE, "/a/c", b"").unwrap();
    let (h, p) = c.read_msg().unwrap();
    assert_eq!(h.ty, msg::WATCH_EVENT);
    assert_eq!(split_event(&p), ("/a/c".into(), "tok".into()));
    // Transactions.
    let (ty, id) = c.call(msg::TRANSACTION_START, 0, b"\0");
    assert_eq!(ty, msg::TRANSACTION_START);
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(c.call(msg::WRITE, tx, b"/a/b\0in-tx").0, msg::WRITE);
    assert_eq!(
        c.call(msg::TRANSACTION_END, tx, &strs(&["T"])).0,
        msg::TRANSACTION_END
    );
    assert_eq!(c.call(msg::READ, 0, &strs(&["/a/b"])).1, b"in-tx");
    assert!(c.events.iter().any(|e| e.0 == "/a/b"));
}

#[test]
fn malformed_messages_and_hostile_clients() {
    let (xs, srv) = serve("bad");
    let p = srv.path().to_path_buf();
    let mut good = Client::connect(&p);
    assert_eq!(good.call(msg::WRITE, 0, b"/x\0v").0, msg::WRITE);
    let mut c = Client::connect(&p);
    // Error replies, connection kept.
    assert_eq!(c.call(0x4242, 0, b"\0"), (msg::ERROR, strs(&["ENOSYS"])));
    assert_eq!(c.call(msg::READ, 0, b"/x"), (msg::ERROR, strs(&["EINVAL"])));
    assert_eq!(c.call(msg::READ, 0, b""), (msg::ERROR, strs(&["EINVAL"])));
    assert_eq!(
        c.call(msg::READ, 77, &strs(&["/x"])),
        (msg::ERROR, strs(&["ENOENT"]))
    );
    // Another client's transaction.
    let (_, id) = good.call(msg::TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        c.call(msg::WRITE, tx, b"/x\0stolen"),
        (msg::ERROR, strs(&["ENOENT"]))
    );
    assert_eq!(
        c.call(msg::TRANSACTION_END, tx, &strs(&["T"])),
        (msg::ERROR, strs(&["ENOENT"]))
    );
    assert_eq!(c.call(msg::READ, 0, &strs(&["/x"])).1, b"v");
    // Oversized length: disconnected.
    c.s.write_all(&header_bytes(msg::WRITE, 9, 0, 0xffff_ffff))
        .unwrap();
    assert!(c.closed());
    let mut c = Client::connect(&p);
    c.s.write_all(&header_bytes(msg::WRITE, 9, 0, 4097))
        .unwrap();
    assert!(c.closed());
    // Truncated message, then hang up.
    let mut c = Client::connect(&p);
    c.s.write_all(&header_bytes(msg::WRITE, 9, 0, 100)).unwrap();
    c.s.write_all(b"/short").unwrap();
    drop(c);
    // Garbage bytes.
    let mut c = Client::connect(&p);
    c.s.write_all(&[0xff; 40]).unwrap();
    assert!(c.closed());
    // A client that never reads its (large) replies only blocks itself.
    assert_eq!(
        good.call(msg::WRITE, 0, &[&b"/big\0"[..], &[b'b'; 4000]].concat())
            .0,
        msg::WRITE
    );
    let mut lazy = Client::connect(&p);
    let flood: Vec<u8> = (0..4000)
        .flat_map(|i| message(msg::READ, i, 0, &strs(&["/big"])))
        .collect();
    let writer = {
        let mut s = lazy.s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = s.write_all(&flood);
        })
    };
    for _ in 0..20 {
        assert_eq!(good.call(msg::READ, 0, &strs(&["/x"])).1, b"v");
    }
    // The good client's transaction is still its own.
    assert_eq!(
        good.call(msg::TRANSACTION_END, tx, &strs(&["T"])).0,
        msg::TRANSACTION_END
    );
    drop(srv);
    assert!(lazy.closed());
    writer.join().unwrap();
    assert_eq!(xs.client(0).read(TxId::NONE, "/x").unwrap(), b"v");
}

#[test]
fn disconnect_ends_watches_and_transactions() {
    let (xs, srv) = serve("disc");
    let base = xs.connection_count();
    let mut c = Client::connect(srv.path());
    assert_eq!(c.call(msg::WATCH, 0, &strs(&["/w", "t"])).0, msg::WATCH);
    let (_, id) = c.call(msg::TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(c.call(msg::WRITE, tx, b"/w/pending\0x").0, msg::WRITE);
    assert_eq!(xs.connection_count(), base + 1);
    drop(c);
    wait_until(|| xs.connection_count() == base);
    let dom0 = xs.client(0);
    assert!(dom0.read(TxId::NONE, "/w/pending").is_err());
    assert!(dom0.transaction_end(TxId(tx), true).is_err());
}

#[test]
fn client_count_is_bounded() {
    let xs = Xenstored::new(Quotas::default());
    // All clients come from this one process: lift the per-process bound.
    let opts = SocketOptions {
        max_per_process: usize::MAX,
        ..SocketOptions::default()
    };
    let srv = xs.serve_unix_with(&sock_path("max"), opts).unwrap();
    let p = srv.path().to_path_buf();
    let mut clients: Vec<Client> = (0..xenstored::SOCKET_MAX_CLIENTS)
        .map(|_| Client::connect(&p))
        .collect();
    for c in &mut clients {
        assert_eq!(
            c.call(msg::GET_DOMAIN_PATH, 0, &strs(&["1"])).0,
            msg::GET_DOMAIN_PATH
        );
    }
    let mut extra = Client::connect(&p);
    assert!(extra.closed(), "over the limit: closed");
    drop(clients.pop());
    // Once that client's threads are gone, a new one is accepted.
    wait_until(|| {
        let mut c = Client::connect(&p);
        let _ =
            c.s.write_all(&message(msg::GET_DOMAIN_PATH, 1, 0, &strs(&["1"])));
        c.read_msg().is_some()
    });
    drop(clients);
    drop(srv);
    drop(xs);
}

fn logged(xs: &Xenstored) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    xs.set_log(Arc::new(move |m: &str| {
        l.lock().unwrap().push(m.to_string())
    }));
    log
}

fn works(c: &mut Client) -> bool {
    c.call(msg::GET_DOMAIN_PATH, 0, &strs(&["1"])).0 == msg::GET_DOMAIN_PATH
}

/// Review defect (issue 16): the xenstore socket checks peer credentials as the
/// control socket does (it relied on file modes alone); the refusal is logged.
#[test]
fn clients_of_other_uids_are_refused_and_logged() {
    let xs = Xenstored::new(Quotas::default());
    let log = logged(&xs);
    let me = nix::unistd::geteuid().as_raw();
    let opts = SocketOptions {
        allowed_uids: vec![me.wrapping_add(4242)],
        ..SocketOptions::default()
    };
    let srv = xs.serve_unix_with(&sock_path("cred"), opts).unwrap();
    let mut c = Client::connect(srv.path());
    assert!(c.closed());
    wait_until(|| !log.lock().unwrap().is_empty());
    let l = log.lock().unwrap().join("\n");
    assert!(
        l.contains(&format!("uid {me}")) && l.contains("refused"),
        "{l}"
    );
    // The default serves our own uid.
    let (_xs2, srv2) = serve("cred-ok");
    assert!(works(&mut Client::connect(srv2.path())));
}

/// Review defect (issue 16): one process cannot take every connection: past its share
/// it is refused (logged), while another process still gets in.
#[test]
fn one_process_cannot_take_every_connection() {
    let xs = Xenstored::new(Quotas::default());
    let log = logged(&xs);
    let opts = SocketOptions {
        max_per_process: 3,
        max_clients: 8,
        ..SocketOptions::default()
    };
    let srv = xs.serve_unix_with(&sock_path("fair"), opts).unwrap();
    let mut mine: Vec<Client> = (0..3).map(|_| Client::connect(srv.path())).collect();
    for c in &mut mine {
        assert!(works(c));
    }
    let mut extra = Client::connect(srv.path());
    assert!(extra.closed(), "over this process's share");
    wait_until(|| {
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("per process"))
    });
    let l = log.lock().unwrap().join("\n");
    assert!(l.contains(&format!("pid {}", std::process::id())), "{l}");
    if let Some(t) = tool("xenstore-read") {
        let dom0 = xs.client(0);
        dom0.write(TxId::NONE, "/fair", b"yes").unwrap();
        let out = Command::new(t)
            .arg("/fair")
            .env("XENSTORED_PATH", srv.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "another process still gets in");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    }
}

/// Review defect (issue 16): with the table full, a client idle long enough and
/// holding nothing (no watch, no transaction) is closed to make room; a busy or
/// watching client is not, and then the newcomer is refused with a log line.
#[test]
fn a_full_table_makes_room_by_closing_an_idle_client() {
    let xs = Xenstored::new(Quotas::default());
    let log = logged(&xs);
    let opts = SocketOptions {
        max_per_process: 8,
        max_clients: 2,
        idle: std::time::Duration::from_millis(100),
        ..SocketOptions::default()
    };
    let srv = xs.serve_unix_with(&sock_path("idle"), opts).unwrap();
    let mut idle = Client::connect(srv.path());
    assert!(works(&mut idle));
    let mut watcher = Client::connect(srv.path());
    assert_eq!(
        watcher.call(msg::WATCH, 0, &strs(&["/w", "t"])).0,
        msg::WATCH
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut newcomer = Client::connect(srv.path());
    assert!(works(&mut newcomer), "room was made");
    assert!(idle.closed(), "the idle client was closed");
    assert!(works(&mut watcher), "the watching client was kept");
    let mut late = Client::connect(srv.path());
    assert!(late.closed(), "nobody idle: refused");
    wait_until(|| log.lock().unwrap().iter().any(|l| l.contains("none idle")));
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("closed idle")));
}

/// Review defect (issue 16): dom0's watch events are never dropped silently: a socket
/// client that leaves tens of thousands unread is disconnected, and that is logged.
#[test]
fn dom0_client_not_reading_events_is_disconnected_not_starved() {
    let xs = Xenstored::new(Quotas::default());
    let log = logged(&xs);
    let srv = xs.serve_unix(&sock_path("evq")).unwrap();
    let mut c = Client::connect(srv.path());
    assert_eq!(c.call(msg::WATCH, 0, &strs(&["/flood", "t"])).0, msg::WATCH);
    let w = xs.client(0);
    let base = xs.connection_count();
    let mut i = 0u32;
    // Below the dom0 bound nothing is lost; past it the connection ends.
    while xs.connection_count() == base {
        w.write(TxId::NONE, &format!("/flood/{}/{}", i / 256, i % 256), b"")
            .unwrap();
        i += 1;
        assert!(i < 100_000, "never disconnected");
    }
    assert!(i > 4000, "disconnected after only {i} events");
    assert!(c.closed());
    assert!(log.lock().unwrap().iter().any(|l| l.contains("unread")));
}

// ---- Debian's xenstore-utils (libxenstore 4.17) against the socket ----

fn tool(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin").join(name);
    p.exists().then_some(p)
}

fn run(sock: &Path, name: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool(name).unwrap())
        .args(args)
        .env("XENSTORED_PATH", sock)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn xenstore_utils() {
    if tool("xenstore-write").is_none() {
        println!("SKIPPED: xenstore-utils not installed (apt-get install xenstore-utils)");
        return;
    }
    let (xs, srv) = serve("utils");
    let s = srv.path();
    assert!(
        run(
            s,
            "xenstore-write",
            &["/vm/name", "guest", "/vm/memory", "256"]
        )
        .0
    );
    assert_eq!(
        run(s, "xenstore-read", &["/vm/name"]),
        (true, "guest\n".into())
    );
    assert_eq!(
        run(s, "xenstore-read", &["/vm/name", "/vm/memory"]),
        (true, "guest\n256\n".into())
    );
    assert!(!run(s, "xenstore-read", &["/vm/none"]).0);
    assert!(run(s, "xenstore-exists", &["/vm/name"]).0);
    assert!(!run(s, "xenstore-exists", &["/vm/none"]).0);
    assert_eq!(
        run(s, "xenstore-list", &["/vm"]),
        (true, "name\nmemory\n".into())
    );
    let (ok, ls) = run(s, "xenstore-ls", &["-f", "/vm"]);
    assert!(ok, "{ls}");
    assert!(ls.contains("/vm/name = \"guest\""), "{ls}");
    assert!(ls.contains("/vm/memory = \"256\""), "{ls}");
    assert!(run(s, "xenstore-chmod", &["/vm/name", "n5", "r6"]).0);
    assert_eq!(
        xs.client(0).get_perms(TxId::NONE, "/vm/name").unwrap(),
        [Perm::new(5, Access::None), Perm::new(6, Access::Read)]
    );
    let (ok, ls) = run(s, "xenstore-ls", &["-p", "/vm"]);
    assert!(ok && ls.contains("n5,r6"), "{ls}");
    assert!(run(s, "xenstore-rm", &["/vm/memory"]).0);
    assert!(!run(s, "xenstore-exists", &["/vm/memory"]).0);
    // A directory larger than one message (DIRECTORY_PART).
    let dom0 = xs.client(0);
    for i in 0..400 {
        dom0.mkdir(TxId::NONE, &format!("/many/entry-with-long-name-{i:04}"))
            .unwrap();
    }
    let (ok, list) = run(s, "xenstore-list", &["/many"]);
    assert!(ok, "{list}");
    assert_eq!(list.lines().count(), 400);
    // xenstore-watch: initial event plus one change.
    let mut child = Command::new(tool("xenstore-watch").unwrap())
        .args(["-n", "2", "/vm"])
        .env("XENSTORED_PATH", s)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 4];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"/vm\n", "initial event");
    dom0.write(TxId::NONE, "/vm/state", b"running").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "/vm/state\n");
    assert!(child.wait().unwrap().success());
    // Errors are reported, not hangs.
    assert!(!run(s, "xenstore-write", &["/bad//path", "x"]).0);
    drop(srv);
}

/// Tests written for cargo-mutants survivors in `socket.rs` (docs/mutants.md), each
/// naming the mutant it catches.
mod mutants {
    use super::*;

    /// A server's `Debug` names its type and socket path. (`<impl Debug for
    /// SocketServer>::fmt` as `Ok(Default::default())`, which printed nothing.)
    #[test]
    fn debug_names_the_socket_path() {
        let (_xs, srv) = serve("debug");
        let d = format!("{srv:?}");
        assert!(d.starts_with("SocketServer"), "{d}");
        assert!(d.contains(&format!("{:?}", srv.path())), "{d}");
    }

    /// `SocketServer::clients` counts the clients connected now: 0, then 2, then
    /// 1 once one has hung up (its threads gone). (`clients` as 0 or 1, or with
    /// the `!` of `!c.finished()` deleted, which counted the finished ones.)
    #[test]
    fn clients_counts_the_connected_clients() {
        let (_xs, srv) = serve("count");
        assert_eq!(srv.clients(), 0);
        let mut a = Client::connect(srv.path());
        let mut b = Client::connect(srv.path());
        assert!(works(&mut a) && works(&mut b));
        assert_eq!(srv.clients(), 2);
        drop(a);
        wait_until(|| srv.clients() == 1);
        assert!(works(&mut b));
        assert_eq!(srv.clients(), 1);
    }

    /// A request of exactly `XENSTORE_PAYLOAD_MAX` (4096) payload bytes is served;
    /// one byte more ends the connection. (`reader`: `hdr.len > PAYLOAD_MAX` as
    /// `>=`, which dropped a client for a legal request.)
    #[test]
    fn a_request_of_exactly_payload_max_is_served() {
        let (xs, srv) = serve("max-payload");
        let mut c = Client::connect(srv.path());
        let mut p = b"/max\0".to_vec();
        p.resize(4096, b'v');
        assert_eq!(c.call(msg::WRITE, 0, &p), (msg::WRITE, b"OK\0".to_vec()));
        assert_eq!(
            xs.client(0).read(TxId::NONE, "/max").unwrap().len(),
            4096 - 5
        );
        p.push(b'v');
        c.s.write_all(&message(msg::WRITE, 9, 0, &p)).unwrap();
        assert!(c.closed(), "4097 bytes: the connection ends");
    }

    /// A client that sends requests but never reads its replies is served only
    /// until it has `OUTSTANDING` (64) replies unsent: then its requests wait
    /// (dom0's memory holds no more of its replies), and once it reads, the rest
    /// are served. Here 3000 pairs of a READ with a 4 KiB reply and a WRITE of a
    /// new node: the nodes stop appearing long before 3000 (the socket's buffer
    /// holds some 50 replies of 4 KiB), then all 3000 come once the client reads.
    /// (`reader`: the guard `c.replies_queued >= OUTSTANDING` as `false`, which
    /// served every request and queued all 12 MiB of replies.)
    #[test]
    fn a_client_not_reading_replies_stops_being_served() {
        const N: u32 = 3000;
        let (xs, srv) = serve("outstanding");
        let dom0 = xs.client(0);
        dom0.write(TxId::NONE, "/big", &[b'b'; 4096 - 16]).unwrap();
        let base = xs.node_count();
        let mut c = Client::connect(srv.path());
        let flood: Vec<u8> = (0..N)
            .flat_map(|i| {
                let mut m = message(msg::READ, 2 * i, 0, &strs(&["/big"]));
                m.extend(message(
                    msg::WRITE,
                    2 * i + 1,
                    0,
                    format!("/c/{i}\0").as_bytes(),
                ));
                m
            })
            .collect();
        let sender = {
            let mut s = c.s.try_clone().unwrap();
            std::thread::spawn(move || s.write_all(&flood).is_ok())
        };
        // Wait until no node has appeared for a second (or all did).
        let mut last = xs.node_count();
        let mut still = Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let n = xs.node_count();
            if n != last {
                (last, still) = (n, Instant::now());
            } else if n - base > N as usize || still.elapsed() >= std::time::Duration::from_secs(1)
            {
                break;
            }
        }
        let served = last - base;
        assert!(
            served < N as usize / 2,
            "{served} requests served to a client reading no reply"
        );
        for i in 0..2 * N {
            let (h, p) = c.read_msg().expect("every reply once the client reads");
            assert_eq!(h.req_id, i);
            let want = if i % 2 == 0 { 4096 - 16 } else { 3 };
            assert_eq!(p.len(), want);
        }
        assert!(sender.join().unwrap());
        assert_eq!(xs.node_count() - base, N as usize + 1);
    }

    /// The socket is bound inside a temporary directory next to its final path and
    /// renamed into place, so the rename stays in one filesystem: a socket in a
    /// directory on another filesystem than the working directory (`/dev/shm`, a
    /// tmpfs) binds. (`bind_private`: the guard choosing the socket's directory
    /// over the working directory for the temporary, `!p.as_os_str().is_empty()`,
    /// as `false` or with its `!` deleted: the rename then crossed filesystems and
    /// failed with `EXDEV`.)
    #[test]
    fn binds_on_another_filesystem_than_the_working_directory() {
        use std::os::unix::fs::MetadataExt;
        let shm = Path::new("/dev/shm");
        let cwd = std::env::current_dir().unwrap();
        let (Ok(a), Ok(b)) = (std::fs::metadata(shm), std::fs::metadata(&cwd)) else {
            println!("skipped: no /dev/shm");
            return;
        };
        if a.dev() == b.dev() {
            println!("skipped: /dev/shm is on the working directory's filesystem");
            return;
        }
        let dir = shm.join(format!("xenkit-xs-{}-{}", std::process::id(), unique()));
        std::fs::create_dir(&dir).unwrap();
        let xs = Xenstored::new(Quotas::default());
        let srv = xs.serve_unix(&dir.join("socket"));
        let ok = match &srv {
            Ok(s) => Ok(works(&mut Client::connect(s.path()))),
            Err(e) => Err(e.to_string()),
        };
        drop(srv);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        std::fs::remove_dir(&dir).unwrap();
        assert!(ok.unwrap(), "served");
        assert!(left.is_empty(), "nothing left behind: {left:?}");
    }
}
