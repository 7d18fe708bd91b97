//! Block cases: a scripted, hostile block backend ([`BlockBackend`], blkif over the
//! frontend's grants) against any block frontend, and the table runner.
//!
//! Implement [`BlockDriver`] for your driver (a few lines over its connect, read,
//! write, flush and close calls), then [`run`] the [`catalogue`] with a function that
//! builds your driver from the [`Env`] a case hands it: the platform (whose
//! `HVM_PARAM_STORE_*` name the case's xenstore), the grant table the backend sees,
//! and the device's xenstore node. Each case starts a fresh platform, xenstore
//! server, device directory and backend; the backend runs inside the driver's waits.
//!
//! A driver's blocking calls must give up in bounded time: a case whose backend
//! never answers counts a driver that waits more than 100 000 times (2 000 under
//! Miri) as hung. A timeout of about 100 ms works well: each wait is 1 ms of
//! virtual time.
//!
//! Here it runs against a small blkfront written from scratch on the public API
//! (`tests/blk_toy/mod.rs`: one ring page, up to eight one-page requests in flight,
//! a bounce page per request; about 500 lines, most of them the careless shortcuts
//! that `tests/blk_careless.rs` proves each case catches):
//!
//! ```
//! use xen_conformance::blk;
//! # #[allow(dead_code)]
//! # mod toy { include!("../../tests/blk_toy/mod.rs"); }
//! use toy::{make, Mistakes};
//! # if cfg!(miri) { return; } // tests/blk_catalogue.rs runs the cases under Miri
//!
//! // `make` builds the driver for each case from the case's `Env`.
//! let report = blk::run(make(Mistakes::NONE));
//! println!("{report}");
//! assert!(report.all_passed(), "{report}");
//!
//! // A driver that ignores response statuses fails the cases about them.
//! let row = blk::run_one("blk.error_status (row 9, B5)", make(Mistakes::IGNORE_STATUS));
//! let row = row.expect("a case of that name");
//! assert!(!row.pass);
//! println!("{}: {}", row.name, row.evidence); // "read succeeded although ..."

//! ```
//!
//! Your own driver plugs in the same way; for the kit's blkfront (xbd-front) the
//! whole adapter is (`tests/blk_catalogue.rs` runs it):
//!
//! ```no_run
//! use core::time::Duration;
//! use xen_conformance::blk::{self, BlockDriver, Env, GRANT_ENTRIES};
//! use xen_conformance::HostPlatform;
//! use hypercall::gnttab::GrantTable;
//! use xbd_front::{Config, Device};
//! use xenbus::Xenstore;
//!
//! const T: Duration = Duration::from_millis(100);
//!
//! struct Xbd<'e> {
//!     dev: Device<HostPlatform, &'e GrantTable<GRANT_ENTRIES>, 8, 16>,
//!     xs: Xenstore<HostPlatform>,
//! }
//!
//! fn s(e: impl ToString) -> String {
//!     e.to_string()
//! }
//!
//! impl BlockDriver for Xbd<'_> {
//!     fn connect(&mut self) -> Result<u64, String> {
//!         self.dev.connect(&mut self.xs).map_err(s)?;
//!         self.capacity().ok_or("no geometry".into())
//!     }
//!     fn capacity(&self) -> Option<u64> {
//!         self.dev.info().map(|i| i.capacity_bytes())
//!     }
//!     fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
//!         let ss = u64::from(self.dev.info().ok_or("not connected")?.sector_size);
//!         self.dev.read(offset / ss, &mut [buf], T).map(|_| ()).map_err(s)
//!     }
//!     fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
//!         let ss = u64::from(self.dev.info().ok_or("not connected")?.sector_size);
//!         self.dev.write(offset / ss, &[data], T).map_err(s)
//!     }
//!     fn flush(&mut self) -> Result<(), String> {
//!         self.dev.flush(T).map_err(s)
//!     }
//!     fn poll_events(&mut self) -> Result<Option<String>, String> {
//!         let ev = self.dev.poll_events(&mut self.xs).map_err(s)?;
//!         Ok(ev.map(|e| format!("{e:?}")))
//!     }
//!     fn close(&mut self) -> Result<(), String> {
//!         self.dev.close(&mut self.xs).map(|_| ()).map_err(s)
//!     }
//! }
//!
//! let report = blk::run(|env: &Env<'_>| {
//!     let xs = Xenstore::from_hvm_params(env.host.clone()).map_err(s)?;
//!     // No busy polling: the host platform's clock moves only in `wait()`.
//!     let cfg = Config { timeout: T, poll_spin: Duration::ZERO, ..Config::default() };
//!     let dev = Device::new(env.host.clone(), env.grants, env.devid, cfg).map_err(s)?;
//!     Ok(Box::new(Xbd { dev, xs }) as Box<dyn BlockDriver + '_>)
//! });
//! // Without discard in the adapter, the discard case passes as "not implemented".
//! assert!(report.all_passed(), "{report}");
//! ```

mod cases;
mod peer;
mod ring;

use std::cell::RefCell;
use std::rc::Rc;

use hypercall::gnttab::GrantTable;

pub use cases::{catalogue, Case};
pub use peer::{
    disk_pattern, padding_violation, state, Answer, BlockBackend, KeyStore, Log, Offers,
    RequestHook, ResponseHook, TurnHook, DISK_BYTES,
};
pub use ring::{slots, RingPages};

pub use crate::report::{Report, Row};
use crate::HostPlatform;

/// Entries of the grant table a case gives the driver (4 frames).
pub const GRANT_ENTRIES: usize = 2048;

/// The device id every case uses (`xvda`, `51712`).
pub const DEVID: u32 = 51712;

/// What a block driver under test offers the cases. Offsets and lengths are in
/// bytes, multiples of the disk's sector size; errors are one line saying why.
pub trait BlockDriver {
    /// Connects to the backend (xenbus handshake, rings, negotiation); returns the
    /// disk's capacity in bytes. Also reconnects after a disconnect or a close.
    fn connect(&mut self) -> Result<u64, String>;
    /// The capacity the driver currently believes in (`None`: not connected).
    fn capacity(&self) -> Option<u64>;
    /// Reads `buf.len()` bytes at byte `offset`, waiting (bounded) for the answer.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
    /// Writes `data` at byte `offset`, waiting (bounded) for the answer.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String>;
    /// Flushes the disk's write cache (an error if the backend offers no flush).
    fn flush(&mut self) -> Result<(), String>;
    /// Discards `len` bytes at `offset` (the default: the driver has no discard).
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), String> {
        let _ = (offset, len);
        Err(NO_DISCARD.into())
    }
    /// Looks for changes the backend made in xenstore (call when the store event
    /// fires): a capacity change, the backend closing or vanishing. Returns a line
    /// describing what changed, if anything.
    fn poll_events(&mut self) -> Result<Option<String>, String>;
    /// Closes the device (orderly disconnect).
    fn close(&mut self) -> Result<(), String>;
}

/// What [`BlockDriver::discard`]'s default returns: cases about discard pass with
/// this evidence for a driver without it.
pub const NO_DISCARD: &str = "discard not implemented by this driver";

/// What a case gives the function that builds the driver under test.
pub struct Env<'e> {
    /// The platform: guest memory, event channels, `HVM_PARAM_STORE_PFN` /
    /// `HVM_PARAM_STORE_EVTCHN` of the case's xenstore server.
    pub host: &'e HostPlatform,
    /// The grant table the backend maps through (the driver's own).
    pub grants: &'e GrantTable<GRANT_ENTRIES>,
    /// The device id (the frontend's node is `device/vbd/<devid>`).
    pub devid: u32,
    /// The frontend's node relative to the guest's home (`device/vbd/51712`).
    pub node: String,
}

/// Builds the driver under test for one case.
pub type Make<'m> =
    dyn for<'e> FnMut(&'e Env<'e>) -> Result<Box<dyn BlockDriver + 'e>, String> + 'm;

/// Shared handle on a case's backend (also held by the platform's peer).
pub type Backend = Rc<RefCell<BlockBackend>>;

/// Runs every case against drivers built by `make`, each on a fresh platform,
/// store, grant table and backend. A driver that panics fails its case (the panic
/// message is the evidence); so does one that waits forever.
pub fn run(
    mut make: impl for<'e> FnMut(&'e Env<'e>) -> Result<Box<dyn BlockDriver + 'e>, String>,
) -> Report {
    let mut rows = Vec::new();
    for case in catalogue() {
        rows.push(cases::run_case(case, &mut make));
    }
    Report { rows }
}

/// Runs the case named `name` only (`None` if there is none): for debugging one
/// case of a driver.
pub fn run_one(
    name: &str,
    mut make: impl for<'e> FnMut(&'e Env<'e>) -> Result<Box<dyn BlockDriver + 'e>, String>,
) -> Option<Row> {
    let case = catalogue().iter().find(|c| c.name == name)?;
    Some(cases::run_case(case, &mut make))
}
