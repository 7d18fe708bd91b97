//! Guest console output end to end: xencons in an in-process guest, shim-hv's console
//! backend on the host side.

mod console_util;

use std::fmt::Write as _;
use std::time::Duration;

use console_util::{join_poweroff, pattern, setup, Capture, LONG};
use xen_backends::console::{ClientEvent, ConsoleConfig, Overflow, Sink};
use xencons::{Console, EarlyConsole, EarlyPath, NoDebugPort};

#[test]
fn fmt_write_output_reaches_history_and_sink_exactly() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("fmt");
    let cap = Capture::new();
    let con = t
        .consoles
        .start(&dom, Sink::Writer(Box::new(cap.clone())))
        .unwrap();
    let h =
        t.hv.spawn_guest(dom.clone(), |g| {
            let mut c = Console::from_hvm_params(&*g).expect("console");
            for i in 0..20 {
                writeln!(c, "line {i}: {}", "x".repeat(i)).expect("write");
            }
        })
        .unwrap();
    join_poweroff(h);
    let mut want = String::new();
    for i in 0..20 {
        writeln!(want, "line {i}: {}", "x".repeat(i)).unwrap();
    }
    assert_eq!(cap.wait_len(want.len()), want.as_bytes());
    con.wait_for(b"line 19", LONG).unwrap();
    assert_eq!(con.history(), want.as_bytes());
    assert_eq!(con.stats().ring_bytes, want.len() as u64);
}

#[test]
fn one_burst_larger_than_the_ring() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("burst");
    let cap = Capture::new();
    let con = t
        .consoles
        .start(&dom, Sink::Writer(Box::new(cap.clone())))
        .unwrap();
    let data = pattern(40 * 1024, 1);
    let d = data.clone();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let mut c = Console::from_hvm_params(&*g).expect("console");
            c.write(&d).expect("burst");
            c.flush(LONG).expect("flush");
        })
        .unwrap();
    join_poweroff(h);
    assert_eq!(cap.wait_len(data.len()), data);
    assert_eq!(con.output_total(), data.len() as u64);
}

#[test]
fn slow_sink_backpressures_the_guest_and_loses_nothing() {
    // A sink taking at most 100 bytes per write with a pause before each, and a sink
    // buffer of 512 bytes: the backend must stop draining and the guest must wait.
    let cfg = ConsoleConfig {
        buffer_bytes: 512,
        ..ConsoleConfig::default()
    };
    let t = setup(cfg);
    let dom = t.domain("slow");
    let cap = Capture::slow(100, Duration::from_micros(200));
    let con = t
        .consoles
        .start(&dom, Sink::Writer(Box::new(cap.clone())))
        .unwrap();
    let data = pattern(24 * 1024, 2);
    let d = data.clone();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let cfg = xencons::Config::default().with_stall_timeout(LONG);
            let mut c = Console::from_hvm_params_with(&*g, cfg).expect("console");
            c.write(&d).expect("write through a slow sink");
            assert!(c.stats().waits > 0, "the guest never had to wait");
        })
        .unwrap();
    join_poweroff(h);
    assert_eq!(cap.wait_len(data.len()), data);
    let st = con.stats();
    assert_eq!(st.dropped, 0);
    assert!(st.backpressure > 0, "{st:?}");
}

#[test]
fn drop_oldest_keeps_draining_and_counts_what_the_sink_lost() {
    let cfg = ConsoleConfig {
        buffer_bytes: 256,
        overflow: Some(Overflow::DropOldest),
        ..ConsoleConfig::default()
    };
    let t = setup(cfg);
    let dom = t.domain("lossy");
    // A sink that takes 16 bytes per write, slowly.
    let cap = Capture::slow(16, Duration::from_millis(1));
    let con = t
        .consoles
        .start(&dom, Sink::Writer(Box::new(cap.clone())))
        .unwrap();
    let data = pattern(16 * 1024, 3);
    let d = data.clone();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let mut c = Console::from_hvm_params(&*g).expect("console");
            c.write(&d).expect("never stalls");
            c.flush(LONG)
                .expect("the ring drains regardless of the sink");
        })
        .unwrap();
    join_poweroff(h);
    // History (64 KiB) has everything; the sink got a subset, the rest is counted.
    let mut client = con.attach(true);
    let mut got = Vec::new();
    while got.len() < data.len() {
        match client.recv(LONG) {
            Some(ClientEvent::Output(b)) => got.extend(b),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, data);
    let st = con.stats();
    assert!(st.dropped > 0, "{st:?}");
    let end = std::time::Instant::now() + LONG;
    while con.stats().sink_bytes + con.stats().dropped < data.len() as u64 {
        assert!(std::time::Instant::now() < end, "{:?}", con.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(cap.get().len() as u64, con.stats().sink_bytes);
}

#[test]
fn early_consoleio_write_lands_in_the_same_log() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("early");
    let cap = Capture::new();
    let h =
        t.hv.spawn_guest(dom.clone(), |g| {
            let early = EarlyConsole::new(&*g, NoDebugPort);
            assert_eq!(early.write(b"early 1\n"), EarlyPath::Hypercall);
            let mut e = &early;
            writeln!(e, "early {}", 2).unwrap();
        })
        .unwrap();
    join_poweroff(h);
    // The ring is served only now; early output from before goes to the sink too.
    let con = t
        .consoles
        .start(&dom, Sink::Writer(Box::new(cap.clone())))
        .unwrap();
    con.wait_for(b"early 2\n", LONG).unwrap();
    assert_eq!(con.history(), b"early 1\nearly 2\n");
    assert_eq!(cap.wait_len(16), b"early 1\nearly 2\n");
    assert_eq!(con.stats().early_bytes, 16);
}

#[test]
fn early_then_ring_output_in_order() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("handover");
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    let mut client = con.attach(true);
    let h =
        t.hv.spawn_guest(dom.clone(), |g| {
            let early = EarlyConsole::new(&*g, NoDebugPort);
            early.write(b"[early] booting\n");
            let mut c = Console::from_hvm_params(&*g).expect("console");
            c.write(b"[ring] up\n").expect("write");
            c.flush(LONG).expect("flush");
        })
        .unwrap();
    join_poweroff(h);
    client.wait_for(b"[early] booting\n", LONG).unwrap();
    client.wait_for(b"[ring] up\n", LONG).unwrap();
    assert_eq!(con.history(), b"[early] booting\n[ring] up\n");
}

#[test]
fn history_keeps_the_last_64_kib_and_clients_see_skips() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("history");
    let con = t.consoles.start(&dom, Sink::None).unwrap();
    let mut client = con.attach(true);
    let data = pattern(100 * 1024, 4);
    let d = data.clone();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let mut c = Console::from_hvm_params(&*g).expect("console");
            c.write(&d).expect("write");
            c.flush(LONG).expect("flush");
        })
        .unwrap();
    join_poweroff(h);
    let end = std::time::Instant::now() + LONG;
    while con.output_total() < data.len() as u64 {
        assert!(std::time::Instant::now() < end);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(con.history(), &data[data.len() - 64 * 1024..]);
    // The client attached at offset 0 but read nothing: it is told what it missed.
    let mut skipped = 0;
    let mut got = Vec::new();
    while got.len() < 64 * 1024 {
        match client.recv(LONG) {
            Some(ClientEvent::Skipped(n)) => skipped += n,
            Some(ClientEvent::Output(b)) => got.extend(b),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(skipped, (data.len() - 64 * 1024) as u64);
    assert_eq!(got, &data[data.len() - 64 * 1024..]);
}

#[test]
fn file_sink_gets_the_output() {
    let dir = std::env::temp_dir().join(format!("xenkit-cons-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dom.log");
    let _ = std::fs::remove_file(&path);
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("file");
    let con = t.consoles.start(&dom, Sink::File(path.clone())).unwrap();
    let h =
        t.hv.spawn_guest(dom.clone(), |g| {
            let mut c = Console::from_hvm_params(&*g).expect("console");
            writeln!(c, "to the file").unwrap();
            c.flush(LONG).unwrap();
        })
        .unwrap();
    join_poweroff(h);
    con.wait_for(b"to the file\n", LONG).unwrap();
    let end = std::time::Instant::now() + LONG;
    loop {
        let s = std::fs::read(&path).unwrap_or_default();
        if s == b"to the file\n" {
            break;
        }
        assert!(std::time::Instant::now() < end, "{s:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
