//! [`NetPeer`]: a [`NetBackend`] installed on a platform, and its side of the xenbus
//! handshake.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

use hypercall::abi::xenbus::XenbusState;
use hypercall::GrantRef;

use super::peer::NetBackend;
use crate::xenstore::{Device, StoreServer};
use crate::PeerId;

/// The `mac` the toolstack gives the guest unless a case says otherwise.
pub const GUEST_MAC: &str = "00:16:3e:5a:00:01";

/// Most queues the backend offers unless a case says otherwise.
pub const MAX_QUEUES: u32 = 4;

/// Where the backend is in the xenbus handshake.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `InitWait`: waiting for the frontend's keys.
    InitWait,
    /// `Connected`: rings mapped, serving.
    Connected,
    /// `Closing`: the frontend is going away (or the connect failed).
    Closing,
    /// `Closed`: waiting for the frontend to start again.
    Closed,
}

/// The backend's side of the handshake (its knobs are public on [`NetBackend`]:
/// [`NetBackend::set_auto_states`]).
pub(crate) struct Handshake {
    pub(crate) dev: Device,
    pub(crate) phase: Phase,
    pub(crate) auto: bool,
    pub(crate) fe_keys: BTreeMap<String, String>,
    pub(crate) connects: u32,
    pub(crate) errors: Vec<String>,
}

impl Handshake {
    pub(crate) fn new(dev: Device) -> Handshake {
        Handshake {
            dev,
            phase: Phase::InitWait,
            auto: true,
            fe_keys: BTreeMap::new(),
            connects: 0,
            errors: Vec::new(),
        }
    }
}

/// Frontend keys a netback reads, at the top of the device or of a queue's
/// directory.
const QUEUE_KEYS: [&str; 5] = [
    "tx-ring-ref",
    "rx-ring-ref",
    "event-channel",
    "event-channel-tx",
    "event-channel-rx",
];

/// Frontend keys read once per connection.
const DEVICE_KEYS: [&str; 11] = [
    "request-rx-copy",
    "feature-rx-notify",
    "feature-sg",
    "feature-gso-tcpv4",
    "feature-gso-tcpv6",
    "feature-no-csum-offload",
    "feature-ipv6-csum-offload",
    "feature-multicast-control",
    "feature-split-event-channels",
    "multi-queue-num-queues",
    "mac",
];

impl NetBackend {
    /// The device's directories.
    pub fn device(&self) -> &Device {
        &self.hs.dev
    }

    /// Where the backend is in the handshake.
    pub fn phase(&self) -> Phase {
        self.hs.phase
    }

    /// Whether the backend moves its own state (default true): `InitWait` →
    /// `Connected` once the frontend published its keys, `Closing` when the
    /// frontend closes (rings unmapped), `Closed` when it is `Closed`, `InitWait`
    /// again when it starts over. Off, the case moves states
    /// ([`NetBackend::set_state`]) and the rings are mapped only by
    /// [`NetBackend::connect_queues`].
    pub fn set_auto_states(&mut self, on: bool) {
        self.hs.auto = on;
    }

    /// Writes `<backend>/state` (any state, any time).
    pub fn set_state(&mut self, s: XenbusState) {
        self.hs.dev.set_backend_state(s);
    }

    /// Writes any bytes into `<backend>/<key>` (`mac`, `mtu`, `feature-*`,
    /// `multi-queue-max-queues`, `state`...).
    pub fn set_key(&self, key: &str, value: &[u8]) {
        self.hs.dev.set_backend_key(key, value);
    }

    /// Removes `<backend>/<key>`.
    pub fn remove_key(&self, key: &str) {
        let p = format!("{}/{key}", self.hs.dev.backend_path());
        self.hs.dev.server().remove(&p);
    }

    /// Writes any bytes into `<frontend>/<key>` as the toolstack does (its `mac`).
    pub fn set_frontend_key(&self, key: &str, value: &[u8]) {
        let p = format!("{}/{key}", self.hs.dev.frontend_path());
        self.hs.dev.server().write(&p, value);
    }

    /// Removes `<frontend>/<key>`.
    pub fn remove_frontend_key(&self, key: &str) {
        let p = format!("{}/{key}", self.hs.dev.frontend_path());
        self.hs.dev.server().remove(&p);
    }

    /// Removes the backend's whole directory.
    pub fn remove_directory(&self) -> bool {
        self.hs.dev.remove_backend()
    }

    /// What the frontend had published when the backend last connected
    /// (`key` or `queue-N/key` → value, lossy text).
    pub fn frontend_keys(&self) -> &BTreeMap<String, String> {
        &self.hs.fe_keys
    }

    /// Times the backend connected.
    pub fn connects(&self) -> u32 {
        self.hs.connects
    }

    /// Why connecting failed, each time it did (the frontend's keys were missing
    /// or bad, or its rings could not be mapped).
    pub fn connect_errors(&self) -> &[String] {
        &self.hs.errors
    }

    /// Writes the default offer: the features of a Linux netback
    /// (`feature-rx-copy`, `-sg`, `-gso-tcpv4/6`, `-ipv6-csum-offload`,
    /// `-split-event-channels`, `multi-queue-max-queues` [`MAX_QUEUES`]), the
    /// backend's `mac`, and the guest's `mac` ([`GUEST_MAC`]) in the frontend's
    /// directory, as libxl does.
    pub fn offer_defaults(&self) {
        for (k, v) in [
            ("feature-rx-copy", "1"),
            ("feature-rx-flip", "0"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
            ("feature-split-event-channels", "1"),
            ("multi-queue-max-queues", &MAX_QUEUES.to_string()),
            ("handle", &self.hs.dev.id().to_string()),
            ("mac", "fe:ff:ff:ff:ff:ff"),
        ] {
            self.set_key(k, v.as_bytes());
        }
        self.set_frontend_key("mac", GUEST_MAC.as_bytes());
    }

    fn fe_str(&self, key: &str) -> Option<String> {
        self.hs.dev.frontend_str(key)
    }

    /// Reads the frontend's keys and maps every queue's rings (what a backend
    /// does when the frontend is `Initialised` or `Connected`). `Err` names the
    /// missing or bad key.
    pub fn connect_queues(&mut self) -> Result<(), String> {
        self.detach_queues();
        let mut keys = BTreeMap::new();
        for k in DEVICE_KEYS {
            if let Some(v) = self.fe_str(k) {
                keys.insert(k.to_string(), v);
            }
        }
        let strict = |v: &str| -> Option<u32> {
            if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            v.parse().ok()
        };
        if keys.get("request-rx-copy").and_then(|v| strict(v)) != Some(1) {
            return Err("frontend did not write request-rx-copy = 1".into());
        }
        let max = self
            .hs
            .dev
            .backend_key("multi-queue-max-queues")
            .and_then(|v| strict(&String::from_utf8_lossy(&v)))
            .unwrap_or(1);
        let queues = match keys.get("multi-queue-num-queues") {
            None => 1,
            Some(v) => match strict(v) {
                Some(n) if n >= 1 && n <= max.max(1) => n,
                _ => return Err(format!("multi-queue-num-queues {v:?} (max {max})")),
            },
        };
        for q in 0..queues {
            let dir = if queues == 1 {
                String::new()
            } else {
                format!("queue-{q}/")
            };
            for k in QUEUE_KEYS {
                let key = format!("{dir}{k}");
                if let Some(v) = self.fe_str(&key) {
                    keys.insert(key, v);
                }
            }
            let num = |k: &str| -> Result<u32, String> {
                let key = format!("{dir}{k}");
                let v = keys.get(&key).ok_or_else(|| format!("{key} missing"))?;
                strict(v).ok_or_else(|| format!("{key} = {v:?} is not a number"))
            };
            let refs = (GrantRef(num("tx-ring-ref")?), GrantRef(num("rx-ring-ref")?));
            let ports = match (num("event-channel-tx"), num("event-channel-rx")) {
                (Ok(t), Ok(r)) => (t, r),
                _ => {
                    let p = num("event-channel")?;
                    (p, p)
                }
            };
            self.attach_queue(refs, ports)
                .map_err(|e| format!("queue {q}: {e}"))?;
        }
        self.hs.fe_keys = keys;
        Ok(())
    }

    /// The handshake part of a turn (when [`NetBackend::set_auto_states`] is on).
    pub(super) fn handshake_turn(&mut self) {
        if !self.hs.auto {
            return;
        }
        let fe = self.hs.dev.frontend_state();
        match self.hs.phase {
            Phase::InitWait => {
                if matches!(
                    fe,
                    Some(XenbusState::Initialised) | Some(XenbusState::Connected)
                ) {
                    match self.connect_queues() {
                        Ok(()) => {
                            self.hs.connects += 1;
                            self.hs.phase = Phase::Connected;
                            self.set_state(XenbusState::Connected);
                        }
                        Err(e) => {
                            self.detach_queues();
                            self.set_key("error", e.as_bytes());
                            self.hs.errors.push(e);
                            self.hs.phase = Phase::Closing;
                            self.set_state(XenbusState::Closing);
                        }
                    }
                }
            }
            Phase::Connected => {
                if !matches!(
                    fe,
                    Some(XenbusState::Connected) | Some(XenbusState::Initialised)
                ) {
                    self.detach_queues();
                    self.hs.phase = Phase::Closing;
                    self.set_state(XenbusState::Closing);
                }
            }
            Phase::Closing => {
                if matches!(fe, Some(XenbusState::Closed) | None) {
                    self.hs.phase = Phase::Closed;
                    self.set_state(XenbusState::Closed);
                }
            }
            Phase::Closed => {
                if fe == Some(XenbusState::Initialising) {
                    self.remove_key("error");
                    self.hs.phase = Phase::InitWait;
                    self.set_state(XenbusState::InitWait);
                }
            }
        }
    }
}

/// A [`NetBackend`] installed as a peer of the platform: one turn (handshake and
/// data path) per `wait()`, after the store server's. Clones are handles on the
/// same backend; the peer holds none, so dropping the last handle ends it.
#[derive(Clone)]
pub struct NetPeer {
    be: Rc<RefCell<NetBackend>>,
    id: PeerId,
}

impl core::fmt::Debug for NetPeer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetPeer").field("id", &self.id).finish()
    }
}

impl NetPeer {
    /// Creates `vif` `index`'s directories in `server`'s store (as a toolstack),
    /// offers the defaults ([`NetBackend::offer_defaults`]), goes `InitWait` and
    /// joins the platform's peers.
    pub fn install(server: &StoreServer, index: u32) -> NetPeer {
        let dev = server.add_device("vif", index);
        let be = NetBackend::new(dev);
        be.offer_defaults();
        be.hs.dev.set_backend_state(XenbusState::InitWait);
        let be = Rc::new(RefCell::new(be));
        let weak: Weak<RefCell<NetBackend>> = Rc::downgrade(&be);
        let host = server.host();
        let id = host.add_peer(Box::new(move || {
            if let Some(b) = weak.upgrade() {
                // A case holding the backend while the driver waits skips a turn
                // rather than panicking.
                if let Ok(mut b) = b.try_borrow_mut() {
                    b.turn();
                }
            }
        }));
        NetPeer { be, id }
    }

    /// Runs `f` on the backend (do not call the driver inside: its waits run the
    /// backend's turns, which are skipped while `f` holds it).
    pub fn with<R>(&self, f: impl FnOnce(&mut NetBackend) -> R) -> R {
        f(&mut self.be.borrow_mut())
    }

    /// Leaves the platform's peers (the backend stops taking turns).
    pub fn stop(&self) {
        let host = self.be.borrow().host().clone();
        host.remove_peer(self.id);
    }
}
