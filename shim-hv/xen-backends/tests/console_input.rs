//! Console input end to end: client and pty input into the guest's `in` ring.

mod console_util;

use std::io::{Read, Write};
use std::sync::mpsc;

use console_util::{join_poweroff, setup, LONG};
use xen_backends::console::{ConsoleConfig, Sink};
use xencons::Console;

/// The guest reads lines and echoes each upper-cased, until "quit".
fn echo_guest(g: std::sync::Arc<xen_model::inproc::InProcGuest>) {
    let mut c = Console::from_hvm_params(&*g).expect("console");
    let mut line = Vec::new();
    loop {
        let mut buf = [0u8; 64];
        let n = c.read_timeout(&mut buf, LONG).expect("input");
        for &b in &buf[..n] {
            if b == b'\n' {
                if line == b"quit" {
                    c.write(b"bye\n").expect("write");
                    c.flush(LONG).expect("flush");
                    return;
                }
                let mut out = line.to_ascii_uppercase();
                out.push(b'\n');
                c.write(&out).expect("write");
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
}

#[test]
fn client_input_reaches_the_guest_and_the_reply_comes_back() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("echo");
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    let mut client = con.attach(false);
    let h = t.hv.spawn_guest(dom.clone(), echo_guest).unwrap();
    assert_eq!(client.send_input(b"hello\n"), 6);
    client.wait_for(b"HELLO\n", LONG).unwrap();
    // io::Write on the client, split writes.
    client.write_all(b"wor").unwrap();
    client.write_all(b"ld\n").unwrap();
    client.wait_for(b"WORLD\n", LONG).unwrap();
    client.send_input(b"quit\n");
    client.wait_for(b"bye\n", LONG).unwrap();
    join_poweroff(h);
    assert_eq!(con.stats().input_bytes, 6 + 6 + 5);
}

#[test]
fn the_input_queue_is_bounded() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("nobody-reads");
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    // Nobody reads: 1 KiB fits the ring, the queue holds 4 KiB more, then no more.
    let mut accepted = 0;
    for _ in 0..10 {
        accepted += con.send_input(&[b'x'; 1024]);
    }
    assert!(accepted <= 1024 + xen_backends::console::INPUT_QUEUE_BYTES);
    assert!(accepted >= xen_backends::console::INPUT_QUEUE_BYTES);
    assert!(con.send_input(b"more") < 4);
}

#[test]
fn pty_carries_output_and_input() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("pty");
    let con = t.consoles.start(&dom, Sink::Pty).unwrap();
    let path = con.pty_path().expect("pty path");
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut reader = tty.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let h = t.hv.spawn_guest(dom.clone(), echo_guest).unwrap();
    tty.write_all(b"via pty\n").unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"VIA PTY\n") {
        got.extend(rx.recv_timeout(LONG).expect("output on the pty"));
    }
    // Raw mode: the guest's bytes come through unchanged (no \r added, no echo).
    assert_eq!(got, b"VIA PTY\n");
    tty.write_all(b"quit\n").unwrap();
    con.wait_for(b"bye\n", LONG).unwrap();
    join_poweroff(h);
}

/// More terminal input than the backend queues (1 KiB ring + 4 KiB queue) while
/// the guest does not read: the backend stops reading the pty (backpressure to
/// the terminal) and resumes as the guest reads, so all of it arrives, in order.
/// (The pty poller reads a pty only while its console's queue has room; the
/// console's turn that frees room wakes it.)
#[test]
fn pty_input_beyond_the_queue_arrives_whole_once_the_guest_reads() {
    const LEN: usize = 12 * 1024;
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("pty-flood");
    let con = t.consoles.start(&dom, Sink::Pty).unwrap();
    let path = con.pty_path().expect("pty path");
    let data: Vec<u8> = (0..LEN).map(|i| b'a' + (i % 26) as u8).collect();
    let want = data.clone();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let mut c = Console::from_hvm_params(&*g).expect("console");
            go_rx.recv_timeout(LONG).expect("go");
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while got.len() < LEN {
                let n = c.read_timeout(&mut buf, LONG).expect("input");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == want, "input arrived changed or out of order");
            c.write(b"got it all\n").expect("write");
            c.flush(LONG).expect("flush");
        })
        .unwrap();
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let writer = std::thread::spawn(move || tty.write_all(&data).map(|()| tty));
    // The guest does not read yet: the ring fills (1 KiB), then the queue.
    let end = std::time::Instant::now() + LONG;
    while con.stats().input_bytes < 1024 {
        assert!(std::time::Instant::now() < end, "{:?}", con.stats());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(con.stats().input_bytes, 1024, "more than the ring holds");
    go_tx.send(()).unwrap();
    con.wait_for(b"got it all\n", LONG).unwrap();
    join_poweroff(h);
    assert_eq!(con.stats().input_bytes, LEN as u64);
    let _tty = writer.join().unwrap().expect("the terminal's writes");
}
