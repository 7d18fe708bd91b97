//! xbd-front: the Xen block frontend (blkif) of xenkit. `no_std`, no heap; two
//! `unsafe` blocks (a dropped [`Device`] returns its own pages to the platform;
//! the ring's region over the device's own ring pages).
//!
//! ```text
//!   your OS / unikernel
//!     │ submit_read/write/flush/discard ─▶ Tag      read/write/flush (blocking, timeout)
//!     │ poll() on the device's event ─▶ next_completion() ─▶ finish(tag, bufs)
//!     ▼
//!   Device<P, G, SLOTS, SEGS>                       handshake + negotiation (xenbus)
//!     io: shadows[SLOTS] ── bounce pages[SLOTS×SEGS] (zeroed per connection; then only this backend's data)
//!         FrontRing<blkif> (1..16 pages)  ── grants (per request, or persistent)
//!     │                          ▲ responses: id/op/status checked against the shadow
//!     ▼ shared ring + event channel
//!   blkback (shim-hv, Linux, ...)  ── disk image
//! ```
//!
//! - Discovery: [`discover`] lists `device/vbd/`; [`vdev`] names the numbers.
//! - [`Device::connect`] runs the xenbus handshake and negotiates whatever the backend
//!   offers (any subset, none included): multi-page rings (`max-ring-page-order`),
//!   several queues (`multi-queue-max-queues`: one ring and event channel per
//!   queue under `queue-N/`, Linux's layout; [`Config::queues`], default 1),
//!   indirect descriptors, persistent grants, flush/barrier, discard; it reads
//!   `sectors`/`sector-size`/`info`/`mode`/`device-type` and refuses unusable
//!   geometry ([`Error::BadConfig`]).
//! - The backend is not trusted: every response is copied once and checked against
//!   the request's shadow; a violation puts the device in [`State::Broken`] and fails
//!   every request with a typed error, never a panic. Pages granted to the backend
//!   only ever hold that request's data (bounce buffers; XSA-403). Grants the backend
//!   still maps are never reused (XSA-396).
//! - All state is fixed-size: `SLOTS` ring requests of up to `SEGS` pages each.
//! - Large reads can skip the copy into caller buffers: [`Device::read_in_place`] /
//!   [`Device::take_read`] hand out the data where the backend put it, as
//!   [`hypercall::SharedMem`] regions ([`ReadData`]; read once, then validate), so a
//!   1 MiB read costs one pass over the data, like `pread`.
//! - Pages the caller registers ([`Device::register_pages`]; whole guest pages
//!   seen through `SharedMem`, granted for the connection) take data straight
//!   from and to the disk: [`Device::read_registered`]/[`Device::write_registered`]
//!   make one pass over it, as `pread`/`pwrite` do (docs/blk-registered.md).
//! - The blocking helpers poll the ring for [`Config::poll_spin`] before they sleep
//!   (no notification, no wake-up latency for a quick answer), take any number of
//!   scatter buffers, and pipeline transfers over 128 KiB (up to four requests in
//!   flight, each piece copied while the backend works on the next).
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use hypercall::gnttab::GrantTable;
//! use hypercall::Platform;
//! use xbd_front::{discover, Config, Device, VbdEntry};
//! use xenbus::Xenstore;
//!
//! fn first_sector<P: Platform + Copy>(
//!     platform: P,
//!     grants: &GrantTable<1024>,
//! ) -> Result<[u8; 512], xbd_front::Error> {
//!     let mut xs = Xenstore::from_hvm_params(platform)?;
//!     let mut found = [VbdEntry { devid: 0, vdev: None }; 4];
//!     let n = discover(&mut xs, &mut found)?;
//!     let devid = found.get(..n).and_then(|f| f.first()).ok_or(xbd_front::Error::NotConnected)?.devid;
//!
//!     // 8 requests in flight, 11 pages each: small enough for the stack.
//!     let mut disk: Device<P, _, 8, 11> = Device::new(platform, grants, devid, Config::default())?;
//!     disk.connect(&mut xs)?;
//!     let mut sector = [0u8; 512];
//!     disk.read(0, &mut [&mut sector[..]], Duration::from_secs(5))?;
//!     // Or look at the data where the backend put it (no copy into a buffer first):
//!     let data = disk.read_in_place(0, 4096, Duration::from_secs(5))?;
//!     let mut magic = [0u8; 8];
//!     data.read(512, &mut magic)?;
//!     drop(data); // retires the request
//!     if !disk.info().is_some_and(|i| i.read_only) {
//!         disk.write(0, &[&sector[..]], Duration::from_secs(5))?;
//!         let _ = disk.flush(Duration::from_secs(5)); // NotSupported without the feature
//!     }
//!     disk.close(&mut xs)?;
//!     Ok(sector)
//! }
//! ```
#![no_std]
// Two unsafe blocks in the crate: `Drop for Device` returning the device's own pages
// to the platform, and `device::ring_region` (the ring's region over those pages,
// owner-based inside the device); the test-only fake (a platform over host memory)
// needs more.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod device;
mod discover;
mod error;
pub mod features;
mod grants;
mod io;
pub mod vdev;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use device::{Device, DeviceEvent, ReadData, State, PROTOCOL};
pub use discover::{discover, parse_devid, VbdEntry};
pub use error::{BadConfig, BrokenReason, Error, IoError};
pub use features::{
    BackendFlags, Config, DeviceType, Discard, DiskInfo, FeatureFlags, Features, FlushKind,
    VdiskInfo,
};
pub use grants::Grants;
pub use io::{OpKind, Stats, Tag};
