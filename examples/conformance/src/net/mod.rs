//! Network cases: a scripted, hostile netif backend ([`NetBackend`], installed as a
//! [`NetPeer`]) against any network frontend, and the table runner.
//!
//! The backend speaks `io/netif.h` over the frontend's grants: it offers features
//! in its xenstore directory (on the [`crate::xenstore`] server and
//! [`crate::xenstore::Device`] rig), reads the frontend's keys (`tx-ring-ref`,
//! `rx-ring-ref`, `event-channel[-tx|-rx]`, `request-rx-copy`, `feature-*`,
//! `multi-queue-num-queues` and `queue-N/`), maps rings and buffers through the
//! frontend's grant table as Xen would (checking domain, type and read-only),
//! takes tx frames and delivers rx frames. Its hooks ([`Hooks`] and the
//! methods of [`NetBackend`]) answer tx requests or not, rewrite tx responses
//! (bad ids, duplicates, any status), write raw rx slots ([`RxSlot`]: any
//! offset, status, flags, extra-info), write raw `rsp_prod` and `*_event`
//! ([`RawRing`]), hoard rx buffers, put any bytes into any key, move states,
//! remove the directory, keep grants mapped when the frontend ends them, and
//! observe grants (leaks after close; fresh pages holding guest data).
//!
//! A case ([`Case`]) names the row of docs/hostile-input.md it covers, what the
//! backend does and what a correct driver does. [`run`] runs every case on a fresh
//! platform, store and backend, against drivers built by your function, and returns
//! a [`Report`] (case, pass/fail, evidence).
//!
//! # Running it against your driver
//!
//! Implement [`NetDriver`] (a few lines over your driver's calls) and pass [`run`] a
//! function that builds it from a [`NetEnv`] (the platform, where the store is
//! found through the HVM params as on Xen, and the device index). This toy
//! frontend (xenbus's handshake, the kit's ring and grant table) is careless: no
//! scatter-gather, it trusts each response's offset and size, and never checks for
//! grants the backend still maps. The catalogue finds that out:
//!
//! ```
//! use std::time::Duration;
//! use hypercall::abi::netif::{RxRequest, RxResponse, TxRequest, TxResponse};
//! use hypercall::gnttab::GrantTable;
//! use hypercall::ring::FrontRing;
//! use hypercall::{DomId, GrantRef, SharedMem, SharedPages, Xen, PAGE_SIZE};
//! use xen_conformance::net::{self, NetDriver, NetEnv, Probe};
//! use xen_conformance::HostPlatform;
//! use xenbus::frontend::FrontendHandshake;
//! use xenbus::{Store, XenbusState, Xenstore};
//!
//! const T: Duration = Duration::from_millis(200);
//! type Tx = FrontRing<TxRequest, TxResponse, SharedPages>;
//! type Rx = FrontRing<RxRequest, RxResponse, SharedPages>;
//!
//! /// Eight tx pages, eight rx pages; a tx request's id is its grant ref.
//! struct Toy {
//!     host: HostPlatform,
//!     xs: Xenstore<HostPlatform>,
//!     grants: GrantTable<1024>,
//!     node: String,
//!     hs: Option<FrontendHandshake>,
//!     rings: Option<(Tx, Rx)>,
//!     pages: SharedMem<'static>,
//! }
//!
//! impl Toy {
//!     fn page(&self, i: usize) -> SharedMem<'static> {
//!         self.pages.sub(i % 16 * PAGE_SIZE, PAGE_SIZE).unwrap()
//!     }
//!     fn grant(&self, i: usize, readonly: bool) -> Result<GrantRef, String> {
//!         let gfn = self.page(i).page_gfn(&self.host, 0).unwrap();
//!         self.grants.grant_access(DomId(0), gfn, readonly).map_err(|e| e.to_string())
//!     }
//!     fn post_rx(&mut self, slot: u32) -> Result<(), String> {
//!         let gref = self.grant(8 + slot as usize % 8, false)?;
//!         let (_, rx) = self.rings.as_mut().ok_or("not connected")?;
//!         let req = RxRequest { id: slot as u16, _pad: 0, gref: gref.0 };
//!         rx.push_request(&req).map_err(|e| e.to_string())?;
//!         rx.push_requests_and_check_notify();
//!         Ok(())
//!     }
//! }
//!
//! impl NetDriver for Toy {
//!     fn connect(&mut self) -> Result<(), String> {
//!         let e = |e: xenbus::Error| e.to_string();
//!         let mut hs = FrontendHandshake::new(&self.node).map_err(e)?;
//!         hs.start(&mut self.xs).map_err(e)?;
//!         hs.wait_for_backend(&mut self.xs, T).map_err(e)?;
//!         let mut refs = [0; 2];
//!         let mut ring = || -> Result<SharedPages, String> {
//!             let page = SharedPages::alloc(&self.host, 1).ok_or("no memory")?;
//!             let gfn = page.page_gfn(&self.host, 0).ok_or("no frame")?;
//!             let r = self.grants.grant_access(DomId(0), gfn, false);
//!             refs.rotate_left(1);
//!             refs[1] = r.map_err(|e| e.to_string())?.0;
//!             Ok(page)
//!         };
//!         let (tx, rx) = (ring()?, ring()?);
//!         self.rings = Some((Tx::init(tx).unwrap(), Rx::init(rx).unwrap()));
//!         for slot in 0..8 {
//!             self.post_rx(slot)?;
//!         }
//!         let port = Xen(&self.host).evtchn_alloc_unbound(DomId(0));
//!         let port = port.map_err(|e| e.to_string())?.0;
//!         hs.publish(&mut self.xs, XenbusState::Connected, |tx, node| {
//!             let keys = [("tx-ring-ref", refs[0]), ("rx-ring-ref", refs[1]),
//!                         ("event-channel", port), ("request-rx-copy", 1)];
//!             tx.write_u32_keys(node, &keys)
//!         })
//!         .map_err(e)?;
//!         hs.wait_connected(&mut self.xs, T).map_err(e)?;
//!         self.hs = Some(hs);
//!         Ok(())
//!     }
//!
//!     fn send(&mut self, frame: &[u8]) -> Result<(), String> {
//!         let (tx, _) = self.rings.as_mut().ok_or("not connected")?;
//!         while let Some(rsp) = tx.poll_response().map_err(|e| e.to_string())? {
//!             let _ = self.grants.end_access(GrantRef(rsp.id.into()));
//!         }
//!         let slot = tx.req_prod_pvt() as usize;
//!         if frame.len() > PAGE_SIZE || tx.free_slots() == 0 {
//!             return Err("no room".into());
//!         }
//!         self.page(slot % 8).write(0, frame);
//!         let gref = self.grant(slot % 8, true)?;
//!         let (tx, _) = self.rings.as_mut().ok_or("not connected")?;
//!         let size = frame.len() as u16;
//!         let req = TxRequest { gref: gref.0, offset: 0, flags: 0, id: gref.0 as u16, size };
//!         tx.push_request(&req).map_err(|e| e.to_string())?;
//!         tx.push_requests_and_check_notify();
//!         Ok(())
//!     }
//!
//!     fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, String> {
//!         let (_, rx) = self.rings.as_mut().ok_or("not connected")?;
//!         let Some(rsp) = rx.poll_response().map_err(|e| e.to_string())? else {
//!             return Ok(None);
//!         };
//!         let slot = rx.rsp_cons().wrapping_sub(1);
//!         // Careless: takes offset and status as they come (clipped to the page).
//!         let off = usize::from(rsp.offset) % PAGE_SIZE;
//!         let len = (rsp.status.max(0) as usize).min(PAGE_SIZE - off).min(buf.len());
//!         self.page(8 + slot as usize % 8).read(off, &mut buf[..len]);
//!         self.post_rx(slot + 8)?;
//!         Ok(Some(len))
//!     }
//!
//!     fn close(&mut self) -> Result<(), String> {
//!         let hs = self.hs.as_mut().ok_or("not connected")?;
//!         hs.close(&mut self.xs, T).map_err(|e| e.to_string())
//!     }
//!
//!     fn probe(&mut self) -> Probe {
//!         Probe { connected: self.hs.is_some(), ..Probe::default() }
//!     }
//!
//!     fn grant_frames(&self) -> SharedMem<'_> {
//!         self.grants.frames().unwrap_or(SharedMem::empty())
//!     }
//! }
//!
//! # fn main() {
//! # // Under Miri (CI checks the docs there) the catalogue runs against xennet-front
//! # // only: tests/net_catalogue.rs.
//! # if cfg!(miri) { return; }
//! let report = net::run(|env: &NetEnv| {
//!     let xs = Xenstore::from_hvm_params(env.host.clone()).map_err(|e| e.to_string())?;
//!     let grants = GrantTable::new(env.host.shared_pages(2)).map_err(|e| e.to_string())?;
//!     let pages = SharedPages::alloc(&env.host, 16).ok_or("no memory")?.leak();
//!     let (host, node) = (env.host.clone(), env.node.clone());
//!     Ok(Box::new(Toy { host, xs, grants, node, hs: None, rings: None, pages }))
//! });
//! println!("{report}");
//! let passed = |name: &str| report.rows.iter().any(|r| r.name.starts_with(name) && r.pass);
//! assert!(passed("net.connect_and_traffic"));
//! assert!(!passed("net.rx_past_page"), "a careless driver fails hostile cases");
//! # }
//! ```
//!
//! `tests/net_toy.rs` has a fuller toy, careless in four stated ways, that fails
//! exactly the cases about them.

mod backend;
mod cases;
mod peer;
mod ring;

use hypercall::SharedMem;

pub use crate::report::{Report, Row};
pub use backend::{NetPeer, Phase, GUEST_MAC, MAX_QUEUES};
pub use peer::{Hooks, NetBackend, PeerQueue, RxSlot, TxFrame, TxHook, TxMode, BACKEND_DOMID};
pub use ring::{RawRing, RING_SIZE, RX_SLOT, TX_SLOT};

use crate::xenstore::StoreServer;
use crate::{GrantObserver, HostPlatform};

/// What a network frontend under test offers the cases.
pub trait NetDriver {
    /// Connects the device (the [`NetEnv::node`] it was built for): reads `mac`,
    /// waits for the backend, negotiates, grants and publishes its rings, waits for
    /// `Connected`. `Err` with the reason when it refuses or fails. Called again
    /// after [`NetDriver::close`] to reconnect.
    fn connect(&mut self) -> Result<(), String>;
    /// Sends one Ethernet frame without waiting for room (`Err` with a reason when
    /// it cannot now: no room, failed, not connected).
    fn send(&mut self, frame: &[u8]) -> Result<(), String>;
    /// Takes one received frame into `buf` without waiting (`Ok(None)`: none now);
    /// returns its length.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, String>;
    /// Disconnects in an orderly way (`Closing`, wait for the backend, end every
    /// grant it can, `Closed`), within a bounded time.
    fn close(&mut self) -> Result<(), String>;
    /// Does the driver's housekeeping now (reclaim completed tx slots, refill rx,
    /// look at the backend's state in the store) and reports its state.
    fn probe(&mut self) -> Probe;
    /// The driver's grant table (v1 entries), which the backend reads and marks as
    /// Xen would.
    fn grant_frames(&self) -> SharedMem<'_>;
    /// An event-channel upcall for `port` arrived (raised by the case,
    /// [`HostPlatform::raise`]): do what the driver's upcall does. It may be
    /// spurious (nothing on the rings) or for a port the driver never bound
    /// (docs/hostile-input.md E1, row 25). The default does nothing: a driver
    /// that only polls.
    fn event(&mut self, port: hypercall::Port) -> Result<(), String> {
        let _ = port;
        Ok(())
    }
}

/// A driver's view of its device ([`NetDriver::probe`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// Why the driver failed the device, if it did (a protocol violation by the
    /// backend, a notification that could not be sent...).
    pub failed: Option<String>,
    /// Whether the link is up (connected and not failed).
    pub connected: bool,
    /// Bad rx responses counted, if the driver counts them.
    pub rx_errors: Option<u64>,
    /// What the driver reported about backend settings it did not take as given
    /// (e.g. "mtu 70000 out of range, using 1500"), one line each.
    pub reported: Vec<String>,
}

/// What a driver is built from.
#[derive(Clone)]
pub struct NetEnv {
    /// The platform (the store is found through its HVM params, as on Xen).
    pub host: HostPlatform,
    /// The device's node relative to the guest's home (`device/vif/0`).
    pub node: String,
    /// The device index (`0`).
    pub index: u32,
}

impl core::fmt::Debug for NetEnv {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetEnv")
            .field("node", &self.node)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Builds the driver under test (not connected yet); the driver may borrow
/// what lives for `'d` (e.g. grant tables set aside for the run).
pub type Make<'a, 'd> = dyn FnMut(&NetEnv) -> Result<Box<dyn NetDriver + 'd>, String> + 'a;

/// A platform whose primary peer is the watchdog.
fn watched_host() -> HostPlatform {
    let host = HostPlatform::new();
    let h = host.clone();
    host.set_peer(Some(Box::new(move || {
        if h.waits() > HUNG_AFTER {
            panic!("the driver waited {HUNG_AFTER} times without giving up");
        }
    })));
    host
}

/// A named case: what the backend does and what a correct driver does.
pub struct Case {
    /// Stable name (`net.<what> (<row ids>)`): the rows of docs/hostile-input.md
    /// (numbers: core table; letters: detailed catalogue; "review": issue 16's
    /// review defects).
    pub name: &'static str,
    /// What the hostile backend does.
    pub peer: &'static str,
    /// What a correct driver does.
    pub expect: &'static str,
    run: fn(&mut Ctx<'_, '_>) -> Result<String, String>,
}

/// The network cases.
pub fn catalogue() -> &'static [Case] {
    cases::CASES
}

/// Runs every case against drivers built by `make`, each case on a fresh platform,
/// store server and backend. A driver that panics fails its case (the panic message
/// is the evidence), as does one that waits forever (a watchdog panics after
/// [`HUNG_AFTER`] waits).
pub fn run<'d>(make: impl FnMut(&NetEnv) -> Result<Box<dyn NetDriver + 'd>, String>) -> Report {
    run_cases(catalogue(), make)
}

/// [`run`] for some cases only (e.g. filtered by name from [`catalogue`]).
pub fn run_cases<'c, 'd>(
    cases: impl IntoIterator<Item = &'c Case>,
    mut make: impl FnMut(&NetEnv) -> Result<Box<dyn NetDriver + 'd>, String>,
) -> Report {
    let mut rows = Vec::new();
    for case in cases {
        let r = run_one(case, &mut make);
        rows.push(Row::from_outcome(case.name, r));
    }
    Report { rows }
}

/// Waits after which a driver counts as hung (fewer under Miri).
pub const HUNG_AFTER: u64 = if cfg!(miri) { 20_000 } else { 200_000 };

fn run_one<'d>(case: &Case, make: &mut Make<'_, 'd>) -> Result<String, String> {
    let mut ctx = Ctx::new(make);
    let r = crate::report::caught(|| (case.run)(&mut ctx));
    ctx.host.clear_peers();
    r
}

/// What a case works with: the platform, the store, the backend and the driver
/// maker.
pub(crate) struct Ctx<'a, 'd> {
    host: HostPlatform,
    server: StoreServer,
    be: NetPeer,
    make: &'a mut Make<'a, 'd>,
    grants: Option<GrantObserver>,
}

impl<'a, 'd> Ctx<'a, 'd> {
    fn new(make: &'a mut Make<'a, 'd>) -> Ctx<'a, 'd> {
        let host = watched_host();
        let server = StoreServer::new(&host);
        let be = NetPeer::install(&server, 0);
        Ctx {
            host,
            server,
            be,
            make,
            grants: None,
        }
    }

    /// Starts over on a fresh platform, store and backend (for cases that try
    /// several values, one connection each).
    fn reset(&mut self) {
        self.host.clear_peers();
        self.host = watched_host();
        self.server = StoreServer::new(&self.host);
        self.be = NetPeer::install(&self.server, 0);
        self.grants = None;
    }
}
