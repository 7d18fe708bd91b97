//! A secondary console (`device/console/1`) end to end: xencons' xenbus handshake in
//! the guest, a minimal test-only xenbus backend here (the nodes libxl writes, grant
//! mapping, port binding), and the console backend serving the granted ring.
//!
//! The real secondary-console backend will sit on shim-hv's shared backend xenbus
//! module; this test pins down the guest side and `Console::serve` with a ring that
//! is not the HVM-param page.

mod console_util;

use std::fmt::Write as _;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use console_util::{join_poweroff, setup, LONG};
use hypercall::gnttab::GrantTable;
use hypercall::{DomId, GrantRef, Port};
use xen_backends::console::{ConsoleConfig, ConsoleState, RingAttachment, Sink};
use xen_model::{Domain, Hypervisor};
use xencons::secondary::SecondaryConsole;
use xencons::Config;
use xenstored::{Access, LocalClient, Perm, TxId};

const NO_TX: TxId = TxId::NONE;

fn read_u32(xs: &LocalClient, path: &str) -> Option<u32> {
    let v = xs.read(NO_TX, path).ok()?;
    std::str::from_utf8(&v).ok()?.parse().ok()
}

/// Creates `dir` owned by `owner`, readable by `reader`; children written later
/// inherit that.
fn mkdir_perms(xs: &LocalClient, dir: &str, owner: u16, reader: u16) {
    xs.mkdir(NO_TX, dir).unwrap();
    let perms = [
        Perm {
            domid: owner,
            access: Access::None,
        },
        Perm {
            domid: reader,
            access: Access::Read,
        },
    ];
    xs.set_perms(NO_TX, dir, &perms).unwrap();
}

/// The toolstack's part: backend and frontend directories, as libxl writes them.
fn create_nodes(xs: &LocalClient, fe: DomId, devid: u32) -> (String, String) {
    let be = format!("/local/domain/0/backend/console/{}/{devid}", fe.0);
    let fe_path = format!("/local/domain/{}/device/console/{devid}", fe.0);
    mkdir_perms(xs, &be, 0, fe.0);
    for (k, v) in [
        ("frontend", fe_path.clone()),
        ("frontend-id", fe.0.to_string()),
        ("online", "1".into()),
        ("state", "1".into()),
    ] {
        xs.write(NO_TX, &format!("{be}/{k}"), v.as_bytes()).unwrap();
    }
    mkdir_perms(xs, &fe_path, fe.0, 0);
    for (k, v) in [
        ("backend", be.clone()),
        ("backend-id", "0".into()),
        ("state", "1".into()),
    ] {
        xs.write(NO_TX, &format!("{fe_path}/{k}"), v.as_bytes())
            .unwrap();
    }
    (be, fe_path)
}

/// The backend's part of the handshake: InitWait, wait for Initialised, map, bind,
/// serve, Connected.
fn backend(
    hv: &Arc<Hypervisor>,
    consoles: &xen_backends::console::ConsoleBackend,
    dom: &Arc<Domain>,
    be: &str,
    fe_path: &str,
    devid: u32,
) -> Arc<xen_backends::console::Console> {
    let xs = hv.xenstored().client(0);
    xs.write(NO_TX, &format!("{be}/state"), b"2").unwrap();
    let end = Instant::now() + LONG;
    while read_u32(&xs, &format!("{fe_path}/state")) != Some(3) {
        assert!(Instant::now() < end, "frontend never went Initialised");
        std::thread::sleep(Duration::from_millis(2));
    }
    let gref = read_u32(&xs, &format!("{fe_path}/ring-ref")).expect("ring-ref");
    let port = read_u32(&xs, &format!("{fe_path}/port")).expect("port");
    let mapping = hv
        .grant_map(dom.id(), GrantRef(gref), false)
        .expect("map the ring");
    let console = consoles.entry(dom.id(), devid);
    let dom0_port = hv
        .dom0_bind_interdomain(dom.id(), Port(port), console.kick_handler())
        .expect("bind");
    let weak = Arc::downgrade(hv);
    let ring = RingAttachment {
        page: Box::new(mapping),
        notify: Arc::new(move || {
            if let Some(hv) = weak.upgrade() {
                let _ = hv.dom0_send(dom0_port);
            }
        }),
        hold: Box::new(()),
    };
    console.serve(dom, ring, Sink::None).unwrap();
    xs.write(NO_TX, &format!("{be}/state"), b"4").unwrap();
    console
}

#[test]
fn secondary_console_connects_and_carries_both_ways() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("second");
    let xs = t.hv.xenstored().client(0);
    let (be, fe_path) = create_nodes(&xs, dom.id(), 1);
    let primary = t.consoles.start(&dom, Sink::None).unwrap();

    let (tx, rx) = mpsc::channel::<()>();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let mut xs = xenbus::Xenstore::from_hvm_params(&*g).expect("xenstore");
            let gnttab: GrantTable<64> = GrantTable::setup(&*g, 1).expect("grant table");
            let page = hypercall::SharedPages::alloc(&*g, 1).expect("page").leak();
            let mut sc =
                SecondaryConsole::connect(&mut xs, &gnttab, &*g, 1, page, Config::default(), LONG)
                    .expect("connect console 1");
            writeln!(sc.console(), "on console 1").unwrap();
            let mut buf = [0u8; 16];
            let n = sc
                .console()
                .read_timeout(&mut buf, LONG)
                .expect("input on console 1");
            sc.console().write(&buf[..n]).unwrap();
            sc.console().flush(LONG).unwrap();
            tx.send(()).unwrap();
            // The primary console is separate.
            let mut c = xencons::Console::from_hvm_params(&*g).expect("primary");
            writeln!(c, "on console 0").unwrap();
        })
        .unwrap();

    let second = backend(&t.hv, &t.consoles, &dom, &be, &fe_path, 1);
    second.wait_for(b"on console 1\n", LONG).unwrap();
    second.send_input(b"ping");
    rx.recv_timeout(LONG).unwrap();
    second.wait_for(b"ping", LONG).unwrap();
    join_poweroff(h);
    primary.wait_for(b"on console 0\n", LONG).unwrap();
    assert_eq!(second.history(), b"on console 1\nping");
    assert_eq!(primary.history(), b"on console 0\n");
    assert_eq!(read_u32(&xs, &format!("{fe_path}/state")), Some(4));
    assert!(t.consoles.console_n(dom.id(), 1).is_some());

    // Removing the secondary console drops its grant mapping.
    let gref = read_u32(&xs, &format!("{fe_path}/ring-ref")).unwrap();
    assert_eq!(t.hv.grant_pins(dom.id(), GrantRef(gref)), 1);
    t.consoles.remove_n(dom.id(), 1).unwrap();
    assert_eq!(second.state(), ConsoleState::Closed);
    assert_eq!(t.hv.grant_pins(dom.id(), GrantRef(gref)), 0);
}

#[test]
fn secondary_setup_failures_are_typed_and_leave_nothing_behind() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("zero");
    let (tx, rx) = mpsc::channel::<()>();
    let (go_tx, go) = mpsc::channel::<()>();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let mut xs = xenbus::Xenstore::from_hvm_params(&*g).expect("xenstore");
            let gnttab: GrantTable<64> = GrantTable::setup(&*g, 1).expect("grant table");
            let page = hypercall::SharedPages::alloc(&*g, 1).expect("page").leak();
            let e =
                SecondaryConsole::connect(&mut xs, &gnttab, &*g, 0, page, Config::default(), LONG)
                    .unwrap_err();
            assert_eq!(e, xencons::secondary::Error::BadDevice { devid: 0 });
            // No backend offered for console 2: the handshake fails, typed.
            assert!(matches!(
                SecondaryConsole::connect(
                    &mut xs,
                    &gnttab,
                    &*g,
                    2,
                    page,
                    Config::default(),
                    Duration::from_millis(100)
                )
                .unwrap_err(),
                xencons::secondary::Error::Xenbus(_)
            ));
            assert_eq!(gnttab.in_use(), 0, "nothing granted on failure");
            // A backend that never reaches InitWait: timeout, and we end up Closed.
            tx.send(()).unwrap();
            go.recv().unwrap();
            let e = SecondaryConsole::connect(
                &mut xs,
                &gnttab,
                &*g,
                3,
                page,
                Config::default(),
                Duration::from_millis(100),
            )
            .unwrap_err();
            assert_eq!(e, xencons::secondary::Error::Xenbus(xenbus::Error::Timeout));
            assert_eq!(gnttab.in_use(), 0);
        })
        .unwrap();
    rx.recv_timeout(LONG).unwrap();
    let xs = t.hv.xenstored().client(0);
    let (_be, fe_path) = create_nodes(&xs, dom.id(), 3);
    go_tx.send(()).unwrap();
    join_poweroff(h);
    assert_eq!(
        read_u32(&xs, &format!("{fe_path}/state")),
        Some(6),
        "Closed"
    );
}

/// Item 3 of issue 17: a secondary console dropped without `close` still ends its
/// grant (once the backend let go of the page) and closes its event channel.
#[test]
fn dropped_secondary_console_ends_its_grant() {
    let t = setup(ConsoleConfig::default());
    let dom = t.domain("dropsc");
    let xs = t.hv.xenstored().client(0);
    let (be, fe_path) = create_nodes(&xs, dom.id(), 1);
    let (tx, rx) = mpsc::channel::<usize>();
    let (go_tx, go) = mpsc::channel::<()>();
    let h =
        t.hv.spawn_guest(dom.clone(), move |g| {
            let mut xs = xenbus::Xenstore::from_hvm_params(&*g).expect("xenstore");
            let gnttab: GrantTable<64> = GrantTable::setup(&*g, 1).expect("grant table");
            let page = hypercall::SharedPages::alloc(&*g, 1).expect("page").leak();
            let mut sc =
                SecondaryConsole::connect(&mut xs, &gnttab, &*g, 1, page, Config::default(), LONG)
                    .expect("connect console 1");
            writeln!(sc.console(), "dropping").unwrap();
            sc.console().flush(LONG).unwrap();
            tx.send(gnttab.in_use()).unwrap();
            go.recv().unwrap();
            drop(sc);
            tx.send(gnttab.in_use()).unwrap();
        })
        .unwrap();
    let second = backend(&t.hv, &t.consoles, &dom, &be, &fe_path, 1);
    second.wait_for(b"dropping\n", LONG).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), 1, "the ring grant");
    // The backend goes away (unmaps the page); then the guest drops the console.
    t.consoles.remove_n(dom.id(), 1).unwrap();
    go_tx.send(()).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), 0, "grant ended by drop");
    join_poweroff(h);
}
