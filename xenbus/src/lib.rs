//! The guest's xenstore client, the frontend XenbusState handshake, and power events
//! (xenkit). `no_std`, no allocation.
//!
//! ```text
//!   xbd-front   xennet-front   xencons       your OS (power policy)
//!        \            |           /                  |
//!     frontend::FrontendHandshake            power::PowerControl
//!                  \                             /
//!        Xenstore  (Store: read/write/mkdir/rm/directory/perms,
//!                   watch + bounded event queue, transactions with EAGAIN retry)
//!                             |
//!          store page: req[1024] rsp[1024] req_cons req_prod rsp_cons rsp_prod
//!          + store event channel (EVTCHNOP_send)         ← HVM_PARAM_STORE_PFN/EVTCHN
//!                             |
//!                  xenstored (dom0 / shim-hv)
//! ```
//!
//! - [`Xenstore`] speaks `io/xs_wire.h` over the store page. One request is in flight at
//!   a time (`&mut self`); every wait goes through [`hypercall::Platform::wait`] and is
//!   bounded by a timeout ([`Error::Timeout`]). Replies are matched by `req_id`; strays
//!   are discarded. A protocol violation (bad indices, a length over 4096, a message
//!   that never completes) fails the connection with [`Error::Broken`] — never a panic.
//!   [`Xenstore::reconnect`] asks xenstored for a ring reset (when it offers one) and
//!   starts over on the same page, or fails with [`Error::ReconnectTimeout`].
//! - Node operations live on the [`Store`] trait, implemented by the client and by a
//!   [`Transaction`], so the same code runs inside and outside transactions.
//! - Watch events are queued (32 at most; the oldest is dropped on overflow and the
//!   loss is flagged) until [`Xenstore::poll_watch_event`] / `wait_watch_event` or the
//!   `_for(token)` variants take them.
//! - [`frontend::FrontendHandshake`] runs the device handshake step by step;
//!   [`power::PowerControl`] turns `control/shutdown` into [`power::PowerEvent`]s.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use hypercall::Platform;
//! use xenbus::frontend::{BackendEvent, FrontendHandshake};
//! use xenbus::power::{issue_shutdown, PowerControl, PowerFeatures};
//! use xenbus::{Store, XenbusState, Xenstore};
//!
//! fn boot<P: Platform>(platform: P) -> Result<(), xenbus::Error> {
//!     let mut xs = Xenstore::from_hvm_params(platform)?;
//!
//!     // Plain node access.
//!     let mut buf = [0u8; 64];
//!     let name = xs.read_str("name", &mut buf)?;
//!     let _ = name;
//!
//!     // A block device: the generic handshake.
//!     let mut hs = FrontendHandshake::new("device/vbd/51712")?;
//!     hs.start(&mut xs)?;
//!     hs.wait_for_backend(&mut xs, Duration::from_secs(5))?;
//!     let sectors = xs.read_u64(&hs.backend_key("sectors")?)?;
//!     let flush = xs.read_bool_opt(&hs.backend_key("feature-flush-cache")?)?.unwrap_or(false);
//!     let (ring_ref, port) = (8u32, 5u32); // granted ring and bound event channel
//!     hs.publish(&mut xs, XenbusState::Initialised, |tx, node| {
//!         tx.write_u32(&xenbus::Path::join(node, "ring-ref")?, ring_ref)?;
//!         tx.write_u32(&xenbus::Path::join(node, "event-channel")?, port)?;
//!         tx.write_str(&xenbus::Path::join(node, "protocol")?, "x86_64-abi")
//!     })?;
//!     hs.wait_connected(&mut xs, Duration::from_secs(5))?;
//!     let _ = (sectors, flush);
//!
//!     // Power events.
//!     let features = PowerFeatures::POWEROFF | PowerFeatures::REBOOT;
//!     let mut power = PowerControl::new(&mut xs, features)?;
//!     loop {
//!         if let Some(BackendEvent::Closing(_)) = hs.poll_backend(&mut xs)? {
//!             // fail in-flight requests, end grants ...
//!             hs.closed(&mut xs)?;
//!         }
//!         match power.wait(&mut xs, Duration::from_secs(1)) {
//!             Ok(ev) => {
//!                 issue_shutdown(xs.platform(), ev.shutdown_reason())?;
//!             }
//!             Err(xenbus::Error::Timeout) => {}
//!             Err(xenbus::Error::BadShutdownValue(_)) => {} // cleared; log it
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//! ```
#![no_std]
// No unsafe code in the crate; only the test-only fake (raw hypercall arguments, a
// page on the heap) needs it.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

#[cfg(test)]
extern crate std;

mod error;
pub mod frontend;
mod parse;
mod perms;
pub mod power;
mod ring;
mod state;
mod store;
mod watch;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mutants;

pub use error::{ErrnoName, Error, ParseKind, ProtocolError, Result, Snippet, SNIPPET_MAX};
pub use perms::{Access, Perm, PermList};
pub use state::XenbusState;
pub use store::{
    DirEntries, Path, ReplySink, Store, Transaction, TxEnd, TxId, Xenstore, DEFAULT_TIMEOUT,
    MAX_TX_TRIES, PATH_MAX,
};
pub use watch::{WatchEvent, WATCH_PATH_MAX, WATCH_QUEUE_LEN, WATCH_TOKEN_MAX};
