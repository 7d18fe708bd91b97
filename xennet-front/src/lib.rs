//! xennet-front: the Xen network frontend (netif) for `no_std` guests (xenkit).
//!
//! ```text
//!   your IP stack (smoltcp via `SmolDevice`, or raw frames)
//!        │ send / send_frags / recv / poll            ▲ events on ports() → poll
//!   ┌────┴──────────────────────────────────────────────────────────────┐
//!   │ NetFront  (device/vif/N)                                          │
//!   │   connect: mac · InitWait · feature-* · rings+grants+evtchns ·    │
//!   │            keys + Connected in one transaction · wait Connected   │
//!   │   queue 0..Q (≤ 4):  tx ring ── tx pages (bounce, granted r/o)    │
//!   │                      rx ring ── rx pages (granted r/w, refilled)  │
//!   └────┬──────────────────────────────┬───────────────────────────────┘
//!        │ hypercall: GrantTable · FrontRing · Xen (evtchn)   xenbus: Xenstore, handshake
//!   ═════╪══════════════ shared pages + event channels ═════════════════
//!   netback (Linux dom0, or shim-hv's netback, xen_backends::net, with its bridge and TAP)
//! ```
//!
//! - Data path without heap: every frame is copied into the queue's own pages (the
//!   caller's memory is never granted, XSA-403), one slot per page at offset 0 so a
//!   slot never crosses a page; received frames are copied into the caller's buffer.
//! - Negotiates `feature-rx-copy` (required), `feature-sg` (frames up to 65535
//!   bytes), checksum offload (`feature-no-csum-offload`,
//!   `feature-ipv6-csum-offload`), GSO (`feature-gso-tcpv4/6`), `feature-rx-notify`,
//!   split event channels, multi-queue (clamped), `mtu`.
//! - Hostile backends (docs/hostile-input.md rows 1-5, 17-23): bad ring indices or a tx
//!   response for an id not in flight fail the device ([`Broken`]); bad rx responses
//!   drop their frame and are counted, and a run of them fails the device; a frame
//!   longer than the MTU allows (`mtu` + 14 + a 4-byte VLAN tag) without a GSO extra
//!   is dropped and counted (`Stats::rx_over_mtu`, N8); a malformed `mac` refuses
//!   the connection. Grants are ended before pages are
//!   reused; a page the backend keeps mapped is quarantined.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use hypercall::gnttab::GrantTable;
//! use hypercall::Platform;
//! use xenbus::Xenstore;
//! use xennet_front::{Config, NetFront, TxMeta};
//!
//! fn echo<P: Platform>(p: &P, grants: &GrantTable<4096>) -> Result<(), xennet_front::Error> {
//!     let mut xs = Xenstore::from_hvm_params(p)?;
//!     // One queue (the default `Q`), returned by value (about 11 KiB); on a small
//!     // kernel stack keep it in a `static` instead: `NetFront::new` is a
//!     // `const fn`, and `connect_in_place` connects it through `&mut`.
//!     let mut dev: NetFront<'_, _, 4096> = NetFront::connect(p, grants, &mut xs, 0,
//!                                     Config::default(), Duration::from_secs(5))?;
//!     let mut buf = [0u8; xennet_front::MAX_FRAME];
//!     while let Some(meta) = dev.recv_timeout(&mut buf, Duration::from_secs(1))? {
//!         let frame = &mut buf[..meta.len];
//!         // Swap source and destination MAC and send it back.
//!         let (dst, src) = frame.split_at_mut(6);
//!         dst.swap_with_slice(&mut src[..6]);
//!         match dev.send_frags(&[frame], TxMeta::default()) {
//!             Ok(()) | Err(xennet_front::Error::Busy) => {}
//!             Err(e) => return Err(e),
//!         }
//!     }
//!     let s = dev.stats();
//!     let _ = (s.rx_frames, s.rx_errors, s.rx_dropped, s.rx_no_buffer);
//!     dev.close(&mut xs, Duration::from_secs(1))
//! }
//! ```
#![no_std]
// Unsafe only where a dropped device returns its own pages to the platform
// (`Queue::release_pages`); the test-only fake platform needs more.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod csum;
mod device;
mod error;
pub mod features;
mod ip;
mod mac;
#[cfg(feature = "smoltcp")]
pub mod ping;
mod queue;
#[cfg(feature = "smoltcp")]
pub mod smol;

#[cfg(test)]
mod tests;

pub use device::{read_backend_features, read_mac, LinkState, NetFront, Stats};
pub use error::{Broken, Error};
pub use features::{
    BackendFeatures, BackendFlags, Config, FrontendFlags, Negotiated, NegotiatedFlags, MAX_FRAME,
    MAX_QUEUES,
};
pub use ip::{first_ipv4, parse_ipv4, toolstack_ipv4};
pub use mac::{Mac, MacError};
pub use queue::{RxFault, RxMeta, TxMeta};
#[cfg(feature = "smoltcp")]
pub use smol::SmolDevice;
