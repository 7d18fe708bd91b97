//! Unit tests of [`crate::secondary`] against the conformance kit's xenstore server
//! and a scripted console backend (a `HostPlatform` peer): the handshake, what is
//! published, and what is released on every way out (docs/mutants.md: a file's
//! mutants are only caught by its own package's tests).

#![allow(unsafe_code)]

extern crate std;

use core::cell::{Cell, RefCell};
use core::time::Duration;
use std::format;
use std::rc::Rc;
use std::string::ToString;
use std::vec::Vec;

use hypercall::abi::console as abi;
use hypercall::abi::xenbus::XenbusState;
use hypercall::gnttab::{self, GrantTable};
use hypercall::{GrantRef, Port, XenError};
use xen_conformance::xenstore::{Device, StoreServer};
use xen_conformance::{GrantObserver, HostPlatform};
use xenbus::Xenstore;

use crate::secondary::{Error, SecondaryConsole};
use crate::Config;

const TIMEOUT: Duration = Duration::from_millis(200);

/// What the scripted backend does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// InitWait, then maps the ring and goes Connected once the frontend is
    /// Initialised; Closing from the frontend: unmaps and goes Closed.
    Good,
    /// Never leaves Initialising.
    Silent,
    /// Maps the ring once the frontend is Initialised, then goes Closing instead
    /// of Connected (and keeps the mapping if `keep` is set).
    Refuse { keep: bool },
    /// As `Good`, but writes an out_prod 5000 bytes past out_cons into the ring
    /// before going Connected.
    BadIndices,
    /// As `Good`, but goes Closed without unmapping the ring.
    KeepMapped,
}

/// The backend's view: the mode, what it read from the frontend, how it ended.
struct Backend {
    mode: Cell<Mode>,
    ring_ref: Cell<Option<u32>>,
    port: Cell<Option<u32>>,
    /// The first bytes of the ring page when the backend mapped it.
    page_at_map: RefCell<Vec<u8>>,
}

struct Rig {
    host: HostPlatform,
    server: StoreServer,
    dev: Device,
    be: Rc<Backend>,
    gnttab: GrantTable<64>,
}

impl Rig {
    /// Console device `devid` in the store, a grant table, and the backend in `mode`.
    fn new(devid: u32, mode: Mode) -> Rig {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        let dev = server.add_device("console", devid);
        let gnttab: GrantTable<64> = GrantTable::new(host.shared_pages(1)).unwrap();
        let obs = GrantObserver::new(&host, gnttab.frames().unwrap());
        let be = Rc::new(Backend {
            mode: Cell::new(mode),
            ring_ref: Cell::new(None),
            port: Cell::new(None),
            page_at_map: RefCell::new(Vec::new()),
        });
        let (d, b, h) = (dev.clone(), be.clone(), host.clone());
        host.add_peer(std::boxed::Box::new(move || backend_turn(&h, &d, &b, &obs)));
        Rig {
            host,
            server,
            dev,
            be,
            gnttab,
        }
    }

    fn xs(&self) -> Xenstore<HostPlatform> {
        Xenstore::from_hvm_params(self.host.clone()).unwrap()
    }

    /// Connects console `devid` on `page` with the default config, within `TIMEOUT`.
    fn connect<'g>(
        &'g self,
        xs: &mut Xenstore<HostPlatform>,
        devid: u32,
        page: hypercall::SharedMem<'g>,
    ) -> Result<SecondaryConsole<'g, HostPlatform, 64>, Error> {
        SecondaryConsole::connect(
            xs,
            &self.gnttab,
            self.host.clone(),
            devid,
            page,
            Config::default(),
            TIMEOUT,
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The peers hold handles on the platform: end the cycle.
        self.host.clear_peers();
    }
}

fn backend_turn(host: &HostPlatform, d: &Device, b: &Backend, obs: &GrantObserver) {
    let mode = b.mode.get();
    let be = d.backend_state();
    let fe = d.frontend_state();
    if mode == Mode::Silent {
        return;
    }
    if be == Some(XenbusState::Initialising) {
        d.set_backend_state(XenbusState::InitWait);
        return;
    }
    if be == Some(XenbusState::InitWait) && fe == Some(XenbusState::Initialised) {
        let gref = d.frontend_u64("ring-ref").map(|v| v as u32);
        let port = d.frontend_u64("port").map(|v| v as u32);
        b.ring_ref.set(gref);
        b.port.set(port);
        let Some(gref) = gref else {
            d.set_backend_state(XenbusState::Closing);
            return;
        };
        obs.map(GrantRef(gref), true);
        let ring = host
            .frame(obs.frame(GrantRef(gref)).unwrap())
            .expect("the granted frame is guest memory");
        let mut head = std::vec![0u8; 4096];
        ring.mem().read(0, &mut head);
        *b.page_at_map.borrow_mut() = head;
        match mode {
            Mode::Refuse { keep } => {
                if !keep {
                    obs.unmap(GrantRef(gref));
                }
                d.set_backend_state(XenbusState::Closing);
            }
            Mode::BadIndices => {
                ring.mem().store_u32(abi::OUT_PROD, 5000);
                d.set_backend_state(XenbusState::Connected);
            }
            _ => d.set_backend_state(XenbusState::Connected),
        }
        return;
    }
    if fe == Some(XenbusState::Closing)
        && matches!(
            be,
            Some(XenbusState::Connected | XenbusState::InitWait | XenbusState::Closing)
        )
    {
        if !matches!(mode, Mode::KeepMapped | Mode::Refuse { keep: true }) {
            if let Some(gref) = b.ring_ref.get() {
                obs.unmap(GrantRef(gref));
            }
        }
        d.set_backend_state(XenbusState::Closed);
    }
}

/// The ring page's bytes.
fn page_bytes(page: hypercall::SharedMem<'_>) -> Vec<u8> {
    let mut v = std::vec![0u8; 4096];
    page.read(0, &mut v);
    v
}

#[test]
fn connects_publishes_the_ring_and_carries_output() {
    let rig = Rig::new(1, Mode::Good);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let page = pages.mem();
    // Garbage from an earlier use: the page is zeroed before it is granted.
    page.fill(0, 4096, 0xa5);
    let gfn = page.page_gfn(&rig.host, 0).unwrap();
    let closes = rig.host.closes();
    let mut sc = rig
        .connect(&mut xs, 1, page)
        .unwrap_or_else(|e| panic!("connect: {e}"));
    assert_eq!(sc.devid(), 1);
    assert_eq!(rig.dev.frontend_state(), Some(XenbusState::Connected));
    let gref = sc.grant_ref();
    assert_eq!(rig.be.ring_ref.get(), Some(gref.0), "ring-ref is the grant");
    assert_eq!(rig.gnttab.in_use(), 1);
    let entry = rig.gnttab.entry(gref).unwrap();
    assert_eq!(
        u64::from(entry.frame),
        gfn.0,
        "the grant is of the ring page"
    );
    assert_eq!(entry.domid, 0, "granted to the backend");
    assert_eq!(
        entry.flags & hypercall::abi::gnttab::GTF_READONLY,
        0,
        "writable"
    );
    let port = rig.be.port.get().expect("port published");
    assert_eq!(sc.console().port(), Port(port), "port is the console's");
    assert!(
        rig.be.page_at_map.borrow().iter().all(|&b| b == 0),
        "the backend found a zeroed page"
    );
    assert_eq!(rig.host.closes(), closes, "nothing closed on success");
    assert!(!sc.backend_closing(&mut xs).unwrap());
    sc.console().write(b"hi").unwrap();
    let out = page_bytes(page);
    assert_eq!(
        &out[abi::OUT..abi::OUT + 2],
        b"hi",
        "the console uses the page"
    );

    // The backend starts closing: seen without waiting.
    rig.dev.set_backend_state(XenbusState::Closing);
    rig.server.step();
    assert!(sc.backend_closing(&mut xs).unwrap());
    let back = sc.close(&mut xs, TIMEOUT).unwrap();
    assert_eq!(back.as_ptr(), page.as_ptr(), "the ring page is handed back");
    assert_eq!(rig.dev.frontend_state(), Some(XenbusState::Closed));
    assert_eq!(rig.gnttab.in_use(), 0, "grant ended");
    assert_eq!(rig.host.closes(), closes + 1, "port closed once");
}

#[test]
fn close_waits_for_the_backend_and_releases_once() {
    let rig = Rig::new(2, Mode::Good);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let sc = rig
        .connect(&mut xs, 2, pages.mem())
        .unwrap_or_else(|e| panic!("connect: {e}"));
    assert_eq!(sc.devid(), 2);
    let closes = rig.host.closes();
    sc.close(&mut xs, TIMEOUT).unwrap();
    assert_eq!(rig.dev.backend_state(), Some(XenbusState::Closed));
    assert_eq!(rig.dev.frontend_state(), Some(XenbusState::Closed));
    assert_eq!(rig.gnttab.in_use(), 0);
    // `close` released, and the drop that follows it does not release again.
    assert_eq!(rig.host.closes(), closes + 1);
}

#[test]
fn dropping_a_connected_console_releases_grant_and_port() {
    let rig = Rig::new(1, Mode::Good);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let sc = rig
        .connect(&mut xs, 1, pages.mem())
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let closes = rig.host.closes();
    // The backend lets go of the page first (it would keep the ref in use).
    let obs = GrantObserver::new(&rig.host, rig.gnttab.frames().unwrap());
    obs.unmap(sc.grant_ref());
    drop(sc);
    assert_eq!(rig.gnttab.in_use(), 0, "the drop ended the grant");
    assert_eq!(rig.host.closes(), closes + 1, "and closed the port");
}

#[test]
fn close_with_the_ring_still_mapped_keeps_the_grant() {
    let rig = Rig::new(1, Mode::KeepMapped);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let sc = rig
        .connect(&mut xs, 1, pages.mem())
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let r = sc.close(&mut xs, TIMEOUT);
    let gref = GrantRef(rig.be.ring_ref.get().unwrap());
    assert_eq!(
        r.err(),
        Some(Error::Grant(gnttab::Error::StillMapped(gref))),
        "the page must not be reused"
    );
    assert_eq!(rig.gnttab.in_use(), 1, "the ref stays in use");
}

#[test]
fn device_0_is_refused_before_anything_is_written() {
    let rig = Rig::new(1, Mode::Good);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let r = rig.connect(&mut xs, 0, pages.mem());
    assert_eq!(r.err(), Some(Error::BadDevice { devid: 0 }));
    assert!(rig.server.requests().is_empty(), "no xenstore request");
}

#[test]
fn a_silent_backend_times_out_and_the_device_goes_closed() {
    let rig = Rig::new(1, Mode::Silent);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let closes = rig.host.closes();
    let r = rig.connect(&mut xs, 1, pages.mem());
    assert!(
        matches!(r.as_ref().err(), Some(&Error::Xenbus(_))),
        "{:?}",
        r.err()
    );
    assert_eq!(rig.dev.frontend_state(), Some(XenbusState::Closed));
    assert_eq!(rig.gnttab.in_use(), 0, "nothing granted");
    assert_eq!(rig.host.closes(), closes, "no port allocated");
}

#[test]
fn a_page_outside_guest_memory_is_no_gfn() {
    let rig = Rig::new(1, Mode::Good);
    let mut xs = rig.xs();
    let mut backing = std::vec![0u64; 512];
    let ptr = core::ptr::NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: `backing` outlives `page` (dropped at the end of the test) and is only
    // accessed through it.
    let page = unsafe { hypercall::SharedMem::new(ptr, 4096) };
    let r = rig.connect(&mut xs, 1, page);
    assert_eq!(r.err(), Some(Error::NoGfn));
    assert_eq!(rig.dev.frontend_state(), Some(XenbusState::Closed));
    assert_eq!(rig.gnttab.in_use(), 0);
    drop(backing);
}

#[test]
fn a_refused_connection_releases_grant_and_port() {
    let rig = Rig::new(1, Mode::Refuse { keep: false });
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let closes = rig.host.closes();
    let r = rig.connect(&mut xs, 1, pages.mem());
    assert!(
        matches!(r.as_ref().err(), Some(&Error::Xenbus(_))),
        "{:?}",
        r.err()
    );
    assert!(rig.be.ring_ref.get().is_some(), "the backend saw the ring");
    assert_eq!(rig.gnttab.in_use(), 0, "grant ended");
    assert_eq!(rig.host.closes(), closes + 1, "port closed");
    assert_eq!(rig.dev.frontend_state(), Some(XenbusState::Closed));
}

#[test]
fn a_refused_connection_with_the_ring_mapped_says_still_mapped() {
    let rig = Rig::new(1, Mode::Refuse { keep: true });
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let r = rig.connect(&mut xs, 1, pages.mem());
    let gref = GrantRef(rig.be.ring_ref.get().unwrap());
    assert_eq!(
        r.err(),
        Some(Error::Grant(gnttab::Error::StillMapped(gref)))
    );
    assert_eq!(rig.gnttab.in_use(), 1);
}

#[test]
fn a_ring_with_bad_indices_is_a_console_error() {
    let rig = Rig::new(1, Mode::BadIndices);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let closes = rig.host.closes();
    let r = rig.connect(&mut xs, 1, pages.mem());
    assert!(
        matches!(r.as_ref().err(), Some(&Error::Console(_))),
        "{:?}",
        r.err()
    );
    assert_eq!(rig.gnttab.in_use(), 0, "grant ended (the backend unmapped)");
    assert_eq!(rig.host.closes(), closes + 1, "port closed");
}

#[test]
fn a_full_grant_table_is_a_grant_error() {
    let rig = Rig::new(1, Mode::Good);
    let mut xs = rig.xs();
    let pages = rig.host.shared_pages(1);
    let gfn = pages.mem().page_gfn(&rig.host, 0).unwrap();
    let mut held = Vec::new();
    while let Ok(r) = rig.gnttab.grant_access(hypercall::DomId(0), gfn, true) {
        held.push(r);
    }
    let closes = rig.host.closes();
    let r = rig.connect(&mut xs, 1, pages.mem());
    assert!(
        matches!(r.as_ref().err(), Some(&Error::Grant(_))),
        "{:?}",
        r.err()
    );
    assert_eq!(rig.host.closes(), closes, "no port was allocated");
    assert_eq!(rig.dev.frontend_state(), Some(XenbusState::Closed));
    for r in held {
        rig.gnttab.end_access(r).unwrap();
    }
}

#[test]
fn errors_say_what_failed() {
    let xb = xenbus::Error::Timeout;
    let ge = gnttab::Error::StillMapped(GrantRef(7));
    let he = XenError::BadArgument;
    let ce = crate::Error::Timeout;
    let cases: [(Error, std::string::String); 6] = [
        (
            Error::BadDevice { devid: 0 },
            "console device 0 not usable".into(),
        ),
        (Error::from(xb), format!("xenstore: {xb}")),
        (Error::from(ge), format!("grant table: {ge}")),
        (Error::NoGfn, "the ring page is not guest memory".into()),
        (Error::from(he), format!("hypercall failed: {he}")),
        (Error::from(ce), ce.to_string()),
    ];
    for (e, want) in cases {
        assert_eq!(e.to_string(), want, "{e:?}");
    }
    assert_eq!(Error::from(xb), Error::Xenbus(xb));
    assert_eq!(Error::from(ge), Error::Grant(ge));
    assert_eq!(Error::from(he), Error::Hypercall(he));
    assert_eq!(Error::from(ce), Error::Console(ce));
}
