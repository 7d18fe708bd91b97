//! Power events from the toolstack (`control/shutdown`), NetBSD-powerd style: this
//! module turns the node's strings into typed [`PowerEvent`]s; what to do about them is
//! the caller's policy.
//!
//! As Linux's `drivers/xen/manage.c` does, the node is read and cleared (written `""`)
//! in one transaction, retried on `EAGAIN`. Unlike Linux, an unknown value is cleared
//! too (docs/hostile-input.md row 38) and reported as [`Error::BadShutdownValue`]. Once a request
//! was delivered, later ones are cleared and ignored until [`PowerControl::resume`]
//! (row 39). `crash` is not a request: Linux deliberately refuses it (a domain can
//! report a crash, not be told to crash), and so do we. A request the caller did not
//! declare in [`PowerFeatures`] (e.g. `suspend` from a toolstack that ignored the
//! missing `control/feature-suspend`) is treated like an unknown value: cleared and
//! reported, never delivered (docs/hostile-input.md S3; Linux likewise acts only on commands it
//! has a handler for).

use core::time::Duration;

use hypercall::{Hypercall, Platform};

use crate::error::{ErrnoName, Error, Result, Snippet};
use crate::store::{Store, Xenstore};

/// The node the toolstack writes requests to.
pub const SHUTDOWN_NODE: &str = "control/shutdown";
/// The watch token [`PowerControl`] uses.
pub const POWER_TOKEN: &str = "xenbus-power";

hypercall::xenstore_flags! {
    /// Which requests the guest implements: [`PowerControl::new`] writes the key of
    /// each one (`control/feature-*` = `"1"`) and delivers only those requests.
    ///
    /// ```
    /// use xenbus::power::{PowerEvent, PowerFeatures};
    ///
    /// let f = PowerFeatures::POWEROFF | PowerFeatures::REBOOT;
    /// assert!(f.handles(PowerEvent::Halt));
    /// assert!(!f.handles(PowerEvent::Suspend));
    /// assert_eq!(PowerFeatures::SUSPEND.key(), Some("control/feature-suspend"));
    /// ```
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PowerFeatures: u32 {
        /// `poweroff` and `halt` requests.
        const POWEROFF = 1 << 0 => "control/feature-poweroff";
        /// `reboot` requests.
        const REBOOT = 1 << 1 => "control/feature-reboot";
        /// `suspend` requests.
        const SUSPEND = 1 << 2 => "control/feature-suspend";
    }
}

impl PowerFeatures {
    /// Whether a caller with these features acts on `ev` (`halt` goes with poweroff).
    pub fn handles(self, ev: PowerEvent) -> bool {
        self.contains(ev.feature())
    }
}

/// A request read from `control/shutdown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerEvent {
    /// `poweroff` (`xl shutdown`).
    Poweroff,
    /// `reboot` (`xl reboot`).
    Reboot,
    /// `halt` (xm's `-H`; Linux treats it as poweroff).
    Halt,
    /// `suspend` (save/migrate).
    Suspend,
}

impl PowerEvent {
    /// Parses a node value (exact match, as Linux's `strcmp`).
    pub fn parse(value: &[u8]) -> Option<PowerEvent> {
        Some(match value {
            b"poweroff" => PowerEvent::Poweroff,
            b"reboot" => PowerEvent::Reboot,
            b"halt" => PowerEvent::Halt,
            b"suspend" => PowerEvent::Suspend,
            _ => return None,
        })
    }

    /// The node value.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerEvent::Poweroff => "poweroff",
            PowerEvent::Reboot => "reboot",
            PowerEvent::Halt => "halt",
            PowerEvent::Suspend => "suspend",
        }
    }

    /// The feature a guest declares to receive this request (`halt` goes with
    /// [`PowerFeatures::POWEROFF`]).
    pub fn feature(self) -> PowerFeatures {
        match self {
            PowerEvent::Poweroff | PowerEvent::Halt => PowerFeatures::POWEROFF,
            PowerEvent::Reboot => PowerFeatures::REBOOT,
            PowerEvent::Suspend => PowerFeatures::SUSPEND,
        }
    }

    /// The `SCHEDOP_shutdown` reason that carries the request out (`halt` = poweroff).
    pub fn shutdown_reason(self) -> ShutdownReason {
        match self {
            PowerEvent::Poweroff | PowerEvent::Halt => ShutdownReason::Poweroff,
            PowerEvent::Reboot => ShutdownReason::Reboot,
            PowerEvent::Suspend => ShutdownReason::Suspend,
        }
    }
}

/// `SHUTDOWN_*` reasons of `sched.h` (poweroff 0, reboot 1, suspend 2, crash 3,
/// watchdog 4), from `hypercall`.
pub use hypercall::xen::ShutdownReason;

/// Tells Xen to shut this domain down (`SCHEDOP_shutdown`). On real Xen it returns only
/// for `Suspend` (after resume or a cancelled suspend) or on error.
pub fn issue_shutdown<H: Hypercall>(h: H, reason: ShutdownReason) -> Result<()> {
    hypercall::Xen(h)
        .sched_shutdown(reason)
        .map_err(Error::Hypercall)
}

/// Watches `control/shutdown` and delivers its requests.
#[derive(Debug)]
pub struct PowerControl {
    pending: Option<PowerEvent>,
    lost_seen: u64,
    features: PowerFeatures,
}

impl PowerControl {
    /// Advertises `features` (`control/feature-*` = `"1"` for each one implemented;
    /// the others are left alone) and watches `control/shutdown`.
    pub fn new<P: Platform>(xs: &mut Xenstore<P>, features: PowerFeatures) -> Result<PowerControl> {
        for &(flag, key) in PowerFeatures::KEYS {
            if features.contains(flag) {
                xs.write(key, b"1")?;
            }
        }
        let lost_seen = xs.lost_watch_events();
        xs.watch(SHUTDOWN_NODE, POWER_TOKEN)?;
        Ok(PowerControl {
            pending: None,
            lost_seen,
            features,
        })
    }

    /// The request being carried out, if one was delivered.
    pub fn pending(&self) -> Option<PowerEvent> {
        self.pending
    }

    /// Accepts requests again (after a suspend that resumed or was cancelled).
    pub fn resume(&mut self) {
        self.pending = None;
    }

    /// Without waiting: if the watch fired (or events were lost), reads and clears the
    /// node. `Ok(None)`: nothing new.
    pub fn poll<P: Platform>(&mut self, xs: &mut Xenstore<P>) -> Result<Option<PowerEvent>> {
        let mut fired = xs.drain_watch_events_for(POWER_TOKEN)?;
        let lost = xs.lost_watch_events();
        if lost != self.lost_seen {
            self.lost_seen = lost;
            fired = true;
        }
        if fired {
            self.check(xs)
        } else {
            Ok(None)
        }
    }

    /// Waits up to `timeout` for a request ([`Error::Timeout`] if none).
    pub fn wait<P: Platform>(
        &mut self,
        xs: &mut Xenstore<P>,
        timeout: Duration,
    ) -> Result<PowerEvent> {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let deadline = xs.platform().now_ns().saturating_add(timeout_ns);
        loop {
            if let Some(ev) = self.poll(xs)? {
                return Ok(ev);
            }
            let now = xs.platform().now_ns();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            match xs.wait_watch_event_for(POWER_TOKEN, Duration::from_nanos(deadline - now)) {
                Ok(_) => {
                    if let Some(ev) = self.check(xs)? {
                        return Ok(ev);
                    }
                }
                Err(Error::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads `control/shutdown` and clears it, in one transaction. An empty or missing
    /// node is no request. Unknown values are cleared and reported as
    /// [`Error::BadShutdownValue`]; while a request is pending, everything is cleared and
    /// ignored.
    pub fn check<P: Platform>(&mut self, xs: &mut Xenstore<P>) -> Result<Option<PowerEvent>> {
        let value = xs.transaction(|tx| {
            let mut buf = [0u8; 64];
            let value = match tx.read(SHUTDOWN_NODE, &mut buf) {
                Ok(0) | Err(Error::Xenstore(ErrnoName::Enoent)) => return Ok(None),
                Ok(n) => Snippet::head(buf.get(..n).unwrap_or_default()),
                Err(Error::BufferTooSmall { needed }) => Snippet::unfetched(needed),
                Err(e) => return Err(e),
            };
            tx.write(SHUTDOWN_NODE, b"")?;
            Ok(Some(value))
        })?;
        let Some(value) = value else { return Ok(None) };
        if self.pending.is_some() {
            return Ok(None);
        }
        let ev = if value.is_truncated() {
            None
        } else {
            PowerEvent::parse(value.as_bytes()).filter(|&ev| self.features.handles(ev))
        };
        match ev {
            Some(ev) => {
                self.pending = Some(ev);
                Ok(Some(ev))
            }
            None => Err(Error::BadShutdownValue(value)),
        }
    }

    /// Stops watching `control/shutdown`.
    pub fn stop<P: Platform>(self, xs: &mut Xenstore<P>) -> Result<()> {
        xs.unwatch(SHUTDOWN_NODE, POWER_TOKEN)?;
        xs.drain_watch_events_for(POWER_TOKEN)?;
        Ok(())
    }
}
