//! The network backend (netback): one per vif, grant-copy semantics, joined to an
//! in-process [`Bridge`].
//!
//! ```text
//!  guest netfront                      NetBackend (dom0, this process)
//!  tx ring ──event──▶ pool worker: check each request chain, copy its headers
//!                     (a small frame: all of it) out of the guest's granted page
//!                     (GrantPeer::copy_out → host buffer), hand the frames to the
//!                     bridge ──▶ other ports, then answer every slot
//!  rx ring ◀─event── deliver_batch(frames) from the bridge (on the sender's
//!                     worker): resolve offloads the guest did not ask for (GSO →
//!                     segments, blank checksums), write the headers and copy the
//!                     rest grant to grant from the sender's pages into the
//!                     guest's posted rx pages, answer, notify (the whole path
//!                     and why it is safe: docs/network-copies.md); frames wait in a bounded queue
//!                     (feature-rx-notify) while no buffer is posted, and this
//!                     vif's worker moves them when the guest posts buffers
//!  control loop (`xb-ctl-vif`): xenstore handshake (reconnects, failures); vif script
//!    up/down queued for the vif's script runner thread
//! ```
//!
//! The guest never maps host memory: the backend copies with the model's grant
//! copy ([`GrantPeer`]), which checks each grant (permission, domain, read-only,
//! frame) on every copy.
//!
//! **Hostile guests fail themselves only.** Ring overruns, a slot crossing its page,
//! too many slots, an unknown extra-info type or a bad `multi-queue-num-queues`
//! disconnect this vif (backend state `Closing`, an `error` node, like Linux's
//! `xenvif_fatal_tx_err`); bad grant refs, runt frames and bad GSO descriptors fail
//! that frame with `NETIF_RSP_ERROR`. The rx queue is bounded (XSA-392), and so is
//! the work a worker does per round ([`TX_BATCH`] requests).
//!
//! # Threads and notifications
//!
//! Every vif's queues are served by one pool of `netback` workers (as many as
//! cores, 2 to 8; docs/backend-threads.md), and every vif's handshake runs on
//! the `vif` control loop ([`xb::spawn_control`]): no thread is a vif's own. The
//! frontend's event handlers only set a flag and queue the queue in the pool
//! (no system call while it is being served), so a guest's `EVTCHNOP_send`
//! stays cheap. A worker handles up to [`TX_BATCH`] requests per round, answers
//! them and forwards their frames as one batch, for at most four rounds before
//! the other waiting queues get their turn; when the ring is empty and no other
//! queue waits it keeps polling for [`POLL_SPIN`] (yielding the CPU between
//! polls) *without* re-arming `req_event`, so a frontend that keeps sending sees
//! no reason to notify; only then does it re-arm, look once more, and leave the
//! queue idle until notified. Likewise responses notify the
//! frontend only when its `rsp_event` asks for it. Under load this makes
//! notifications a small fraction of a frame (the network bench prints it).
//! Notifications after which a worker's run finds no work (no tx request or rx
//! buffer taken, no response) are spurious: the second and later ones in a row
//! hold the queue back, 1 ms doubling up to 1 s, so a guest that storms its
//! ports costs a few runs a second (late EOI on the host side,
//! docs/hostile-input.md E1; [`VifStats::spurious_events`]).
//!
//! A sender's worker delivers into the receiving guest's rx ring directly. If the
//! receiver's rx queue is more than half full while the receiver still takes
//! frames, the sender's queue holds off (backpressure through the sender's own tx
//! ring, so a slow receiver gets no drops; the worker serves other queues
//! meanwhile); a receiver that made no progress for
//! [`NetConfig::rx_stall`] holds nobody up (its queue overflows and drops instead).
//!
//! # The vif script
//!
//! If [`NetConfig::script`] is set, it runs like the classic `vif-bridge`: as
//! `<script> up` once the frontend connected and `<script> down` when it
//! disconnects, with arguments `domain=<domid> vif=vif<domid>.<devid> mac=<guest
//! MAC> bridge=<bridge>` and the same values in the environment (`domain`, `vif`,
//! `mac`, `bridge`), plus `devid`, `backend_mac` (guest MAC XOR
//! `00:00:00:01:00:00`) and `XENBUS_PATH` (the backend directory). The result goes
//! to `<backend>/hotplug-status` (`connected` or `error`); a failing script is
//! logged and does not stop the vif. A script that runs longer than
//! [`SCRIPT_TIMEOUT`] is killed.
//!
//! Scripts run off the vif control loop: each vif has a runner thread while it
//! has script runs queued, which runs them one after another (an `up` and the
//! `down` after it keep their order), so a slow script delays only its own vif's
//! `hotplug-status`, never another vif's connect. [`NetBackend::destroy`] returns
//! once the vif's `down` has run. `down` may run after the vif's xenstore
//! directory was removed (when the vif is destroyed): `XENBUS_PATH` names it, but
//! a script should take what it needs from its arguments and environment.
//!
//! # Example
//!
//! Two domains with a vif each on one bridge (their guests then run
//! `xennet_front::NetFront::connect` on `device/vif/0`):
//!
//! ```
//! use xen_backends::bridge::Bridge;
//! use xen_backends::net::{NetBackend, NetConfig};
//! use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
//! use xennet_front::Mac;
//!
//! let hv = Hypervisor::new(HypervisorConfig::default());
//! let br = Bridge::new("xenbr0");
//! let a = hv.create_domain(DomainSpec::new("a", 32)).unwrap();
//! let b = hv.create_domain(DomainSpec::new("b", 32)).unwrap();
//! let cfg = NetConfig { mac: Some(Mac::parse(b"aa:00:00:50:02:f0").unwrap()), ..NetConfig::default() };
//! let vif_a = NetBackend::start(&hv, a.id(), br.clone(), cfg).unwrap();
//! let vif_b = NetBackend::start(&hv, b.id(), br.clone(), NetConfig::default()).unwrap();
//! assert_eq!(vif_a.backend_mac().to_string(), "aa:00:00:51:02:f0");
//! assert!(vif_b.mac().is_local() && !vif_b.mac().is_multicast());
//! assert_eq!(vif_a.backend_path(), format!("/local/domain/0/backend/vif/{}/0", a.id().0));
//! vif_a.destroy();
//! vif_b.destroy();
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use hypercall::abi::netif::{
    self, ExtraInfo, RxRequest, RxResponse, TxRequest, TxResponse, EXTRA_FLAG_MORE, EXTRA_TYPE_GSO,
    EXTRA_TYPE_MAX, EXTRA_TYPE_NONE, GSO_TYPE_TCPV4, GSO_TYPE_TCPV6,
};
use hypercall::abi::xenbus::XenbusState;
use hypercall::keyflags;
use hypercall::ring::{BackRing, RingError};
use hypercall::{DomId, GrantRef, Port, PAGE_SIZE};
use xennet_front::{csum, Mac};

use super::bridge::{Bridge, BridgePort, Frame, GrantedTail, Gso, MacClaim, PortId, TailPiece};
use super::hostile::NetHostile;
use super::pool::{EventCounters, Pool, Sched, Served, Turn};
use super::xenbus::{self as xb, BoundPort, DeviceSpec, MappedRing, XenbusBackend};
use xen_model::{CopyFault, Dom0Handler, GrantOffset, GrantPeer, Hypervisor};

/// Longest a vif script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most queues a backend offers.
pub const MAX_QUEUES: u32 = 8;
/// Most slots (data and extra) one tx frame may use; more is fatal (Linux' fatal
/// threshold is 20 data slots).
pub const MAX_TX_SLOTS: usize = 24;
const MAX_TX_DATA_SLOTS: usize = 20;
/// Tx requests a worker handles before it answers them and forwards the frames.
pub const TX_BATCH: usize = 64;
/// Most rx slots one frame uses (data for 64 KiB, plus one extra-info slot).
const MAX_RX_SLOTS: usize = xennet_front::MAX_FRAME.div_ceil(PAGE_SIZE) + 1;
/// How long a pool worker keeps polling a queue's rings after it ran out of work,
/// before it asks for notifications and sleeps (NAPI-style busy polling).
pub const POLL_SPIN: Duration = Duration::from_micros(50);
/// Longest a worker holds off after forwarding to a congested vif (a vif is only
/// congested while its guest keeps taking frames, see [`NetConfig::rx_stall`];
/// this is a safety net). Afterwards frames the receiver has no room for are dropped.
pub const BACKPRESSURE_WAIT: Duration = Duration::from_secs(5);
/// Default [`NetConfig::rx_stall`]: a guest whose rx queue made no progress for
/// this long counts as stuck; senders no longer wait for it (their frames to it
/// are dropped when its queue is full).
pub const RX_STALL: Duration = Duration::from_millis(500);
const ETH_HLEN: usize = 14;

pub use hypercall::abi::netif::{BackendFlags, FrontendFlags};

/// What the backend offers (everything but [`BackendFlags::NO_CSUM_OFFLOAD`] by
/// default; tests turn features off one by one).
///
/// ```
/// use xen_backends::net::{BackendFlags, Offer};
///
/// let mut offer = Offer::default();
/// offer.flags.remove(BackendFlags::SG);
/// assert!(!offer.flags.contains(BackendFlags::SG | BackendFlags::RX_COPY));
/// assert!(offer.flags.contains(BackendFlags::RX_COPY));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The `feature-*` keys written as `"1"` (each other key of
    /// [`BackendFlags::KEYS`] is written as `"0"`). Without
    /// [`BackendFlags::RX_COPY`] no frontend of ours connects;
    /// [`BackendFlags::NO_CSUM_OFFLOAD`] refuses checksum-blank IPv4 frames.
    pub flags: BackendFlags,
    /// `multi-queue-max-queues` (`None`: key not written, one queue).
    pub max_queues: Option<u32>,
}

impl Default for Offer {
    fn default() -> Self {
        Offer {
            flags: BackendFlags::all() - BackendFlags::NO_CSUM_OFFLOAD,
            max_queues: Some(4),
        }
    }
}

/// One vif's configuration.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Device id (`vif = [...]` index).
    pub devid: u32,
    /// Guest MAC (`mac=`); `None`: a random locally-administered unicast address.
    pub mac: Option<Mac>,
    /// The vif script, if any (see the module docs).
    pub script: Option<PathBuf>,
    /// The IP MTU written to `<backend>/mtu`.
    pub mtu: u32,
    /// Features offered.
    pub offer: Offer,
    /// Frames a vif queues per rx queue while the guest has no buffer posted.
    pub rx_queue_frames: usize,
    /// Bytes a vif queues per rx queue.
    pub rx_queue_bytes: usize,
    /// How long the guest may take no frame at all (while frames wait for it)
    /// before it counts as stuck: until then, senders on the bridge hold off when
    /// its rx queue is more than half full (backpressure); afterwards they no
    /// longer wait and what does not fit is dropped.
    pub rx_stall: Duration,
    /// Not in the worker pool: the queues are served only when the owner calls
    /// [`NetBackend::step`] (single-threaded, deterministic runs such as the cost
    /// bench). The handshake still runs on the control loop.
    pub stepped: bool,
    /// Misbehave on purpose (docs/hostile-mode.md); `None`: a correct backend.
    pub hostile: Option<NetHostile>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            devid: 0,
            mac: None,
            script: None,
            mtu: 1500,
            offer: Offer::default(),
            rx_queue_frames: 1024,
            rx_queue_bytes: 8 << 20,
            rx_stall: RX_STALL,
            stepped: false,
            hostile: None,
        }
    }
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// xenbus (xenstore, rings, event channels).
    #[error("{0}")]
    Xenbus(xb::Error),
    /// The frontend asked for something we do not do (what).
    #[error("frontend: {0}")]
    Unsupported(String),
    /// The control loop's thread could not start.
    #[error("control loop thread: {0}")]
    Thread(std::io::Error),
    /// Another device on the same bridge already has this MAC.
    #[error("{vif}: MAC {mac} is already used by {other} on bridge {bridge}")]
    DuplicateMac {
        /// The MAC.
        mac: Mac,
        /// The vif that was refused.
        vif: String,
        /// The device that has it.
        other: String,
        /// The bridge.
        bridge: String,
    },
}

impl From<xb::Error> for Error {
    fn from(e: xb::Error) -> Self {
        Error::Xenbus(e)
    }
}

/// Counters of one vif (monotonic).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct VifStats {
    /// Frames the guest sent (handed to the bridge).
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames from the guest answered with an error (bad grant, runt, bad GSO).
    pub tx_errors: u64,
    /// Frames delivered into the guest.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames for the guest dropped (no buffer and no room to queue, too big for it,
    /// not connected).
    pub rx_dropped: u64,
    /// Rx slots answered with an error (the guest's own bad grant).
    pub rx_errors: u64,
    /// Times the frontend broke the protocol and was disconnected.
    pub fatal: u64,
    /// Connections made.
    pub connects: u64,
    /// Event-channel notifications sent to the frontend (tx responses, rx
    /// responses); the ring's `rsp_event` rule keeps this well below one per frame
    /// while the frontend is busy.
    pub notifications: u64,
    /// Runs of a `netback` worker on this vif's queues.
    pub runs: u64,
    /// Notifications (tx or rx port) after which a worker's run found no work:
    /// no tx request or rx buffer taken, no response made (rx buffers posted
    /// while no frame waits for them are no work): late EOI on the host side
    /// (docs/hostile-input.md E1).
    pub spurious_events: u64,
    /// Times a queue was held back after spurious notifications in a row (1 ms,
    /// doubling up to 1 s; its notifications meanwhile are served when the delay
    /// ends; frames from the bridge are delivered meanwhile all the same).
    pub backoffs: u64,
}

#[derive(Default)]
struct Counters {
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_errors: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    rx_errors: AtomicU64,
    fatal: AtomicU64,
    connects: AtomicU64,
    notifications: AtomicU64,
    /// The queues' runs and spurious notifications (the pool counts them).
    events: Arc<EventCounters>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random locally-administered unicast MAC (`x2:xx:xx:xx:xx:xx` with the group
/// bit clear).
pub fn random_mac() -> Mac {
    let mut b = [0u8; 6];
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32;
    static N: AtomicU64 = AtomicU64::new(0);
    seed ^= N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    for x in b.iter_mut() {
        // splitmix64 step
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        *x = (z ^ (z >> 31)) as u8;
    }
    b[0] = (b[0] & 0xfc) | 0x02;
    Mac(b)
}

/// What the frontend asked for (read at connect).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendFeatures {
    /// Its receive-side `feature-*` keys that are on (GSO counts only with
    /// `feature-sg`: without it a GSO frame cannot reach the frontend).
    pub flags: FrontendFlags,
    /// Queues.
    pub queues: u32,
    /// Split event channels.
    pub split: bool,
}

impl FrontendFeatures {
    /// Whether checksum-blank frames of this IP version may go to the frontend
    /// (IPv4: no `feature-no-csum-offload`; IPv6: `feature-ipv6-csum-offload`).
    pub fn csum_blank_ok(&self, ipv6: bool) -> bool {
        if ipv6 {
            self.flags.contains(FrontendFlags::IPV6_CSUM_OFFLOAD)
        } else {
            !self.flags.contains(FrontendFlags::NO_CSUM_OFFLOAD)
        }
    }
}

struct TxSide {
    /// The ring, owning its mapping (unmapped when the side is dropped).
    ring: BackRing<TxRequest, TxResponse, MappedRing>,
    /// Requests of a frame whose last slot has not been published yet.
    partial: Vec<TxRequest>,
    /// A hostile mode wrote an impossible index: the ring is not served again.
    frozen: bool,
}

struct RxSide {
    /// The ring, owning its mapping (unmapped when the side is dropped).
    ring: BackRing<RxRequest, RxResponse, MappedRing>,
    /// Consumed requests not yet answered (buffers at hand).
    stash: VecDeque<RxRequest>,
    /// Frames waiting for buffers.
    queue: VecDeque<Frame>,
    queued_bytes: usize,
    /// A frame went into the guest's buffers since `rx_drain` last looked.
    wrote: bool,
    /// A hostile mode wrote an impossible index: the ring is not served again.
    frozen: bool,
}

struct QueueBack {
    /// Only the queue's worker uses the tx side.
    tx: Mutex<TxSide>,
    /// The worker and whoever delivers frames from the bridge use the rx side.
    rx: Mutex<RxSide>,
    /// The frontend notified on the tx (or shared) port.
    tx_work: AtomicBool,
    /// The frontend notified on the rx (or shared) port: new rx buffers.
    rx_work: AtomicBool,
    /// Frames wait in the rx queue (kept in step with `RxSide::queue` under the
    /// rx lock, read without it by the worker).
    rx_queued: AtomicBool,
    /// The rx queue is more than half full (same rules as `rx_queued`).
    rx_backlog: AtomicBool,
    /// When a frame last went into the guest's buffers (ns since `Connection::epoch`).
    rx_progress: AtomicU64,
    /// The queue in [`NET_POOL`] (none for a stepped backend).
    served: OnceLock<Arc<NetQueue>>,
    tx_port: OnceLock<BoundPort>,
    rx_port: OnceLock<BoundPort>,
}

impl QueueBack {
    /// Has the pool serve this queue for work of the backend's own (a no-op for
    /// a stepped backend).
    fn wake_worker(&self) {
        if let Some(nq) = self.served.get() {
            let s: Arc<dyn Served> = nq.clone();
            NET_POOL.kick(&s);
        }
    }

    /// The frontend notified: has the pool serve this queue, unless it is held
    /// back after spurious notifications (docs/hostile-input.md E1; a no-op for
    /// a stepped backend).
    fn notify_worker(&self) {
        if let Some(nq) = self.served.get() {
            let s: Arc<dyn Served> = nq.clone();
            NET_POOL.notify(&s);
        }
    }
}

/// One connection of a vif (from frontend `Connected` to `Closing`).
struct Connection {
    vif: Weak<VifShared>,
    fe: FrontendFeatures,
    /// Grant copies to and from the frontend's pages.
    peer: GrantPeer,
    queues: Vec<QueueBack>,
    failed: AtomicBool,
    /// Tells the workers to stop (disconnect).
    stop: AtomicBool,
    why: Mutex<Option<String>>,
    bridge_port: Mutex<Option<PortId>>,
    /// Time base of `QueueBack::rx_progress`.
    epoch: Instant,
}

struct VifShared {
    hv: Arc<Hypervisor>,
    frontend: DomId,
    devid: u32,
    mac: Mac,
    bridge: Arc<Bridge>,
    cfg: NetConfig,
    conn: Mutex<Option<Arc<Connection>>>,
    counters: Counters,
    /// Set by the data path on a fatal error; the control loop reacts.
    kick: AtomicBool,
    /// Wakes the device on the control loop (stop, a fatal error).
    control: Mutex<Option<xb::ControlWaker>>,
    /// The vif script's runs still to come, in order, and whether a runner
    /// thread works through them (off the control loop: see the module docs).
    scripts: Mutex<Scripts>,
    /// Signalled when the runner has nothing left (`NetBackend::destroy` waits).
    scripts_idle: Condvar,
}

/// A vif's pending script runs (`up`, `down`), run in order by one thread at a
/// time.
#[derive(Default)]
struct Scripts {
    queue: VecDeque<&'static str>,
    running: bool,
}

impl VifShared {
    fn wake_control(&self) {
        if let Some(w) = lock(&self.control).as_ref() {
            w.wake();
        }
    }
}

/// A vif backend: its xenstore presence, its handshake (on the control loop) and
/// its data path.
pub struct NetBackend {
    shared: Arc<VifShared>,
    stop: Arc<AtomicBool>,
    /// The device on the `vif` control loop.
    control: Option<xb::ControlHandle>,
    backend_path: String,
    /// A stepped backend's tx buffers ([`NetBackend::step`]).
    step_scratch: Mutex<TxScratch>,
    /// Held for the backend's life (released after the device left the control
    /// loop).
    _mac_claim: MacClaim,
}

impl fmt::Debug for NetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetBackend")
            .field("vif", &self.vif_name())
            .field("mac", &self.shared.mac)
            .finish_non_exhaustive()
    }
}

impl NetBackend {
    /// Creates `vif<domid>.<devid>`: the backend and frontend xenstore directories
    /// (as libxl: backend `mac`, `bridge`, `handle`, `type`, `script`, `mtu` and our
    /// `feature-*` keys; frontend `mac` and `handle`), state `InitWait`, and a control
    /// thread that connects the frontend whenever it comes up.
    pub fn start(
        hv: &Arc<Hypervisor>,
        frontend: DomId,
        bridge: Arc<Bridge>,
        cfg: NetConfig,
    ) -> Result<NetBackend, Error> {
        let vif = format!("vif{}.{}", frontend.0, cfg.devid);
        let (mac, mac_claim) = match cfg.mac {
            Some(mac) => match bridge.claim_mac(mac.0, &vif) {
                Ok(c) => (mac, c),
                Err(other) => {
                    return Err(Error::DuplicateMac {
                        mac,
                        vif,
                        other,
                        bridge: bridge.name().to_string(),
                    })
                }
            },
            None => loop {
                // A random address taken already (a 2^-46 chance): draw again.
                let mac = random_mac();
                if let Ok(c) = bridge.claim_mac(mac.0, &vif) {
                    break (mac, c);
                }
            },
        };
        let o = &cfg.offer;
        let mut spec = DeviceSpec::new("vif", frontend, cfg.devid)
            .backend("mac", mac)
            .backend("bridge", bridge.name())
            .backend("handle", cfg.devid)
            .backend("type", "vif")
            .backend("mtu", cfg.mtu)
            // Said explicitly: what we never do.
            .backend("feature-rx-flip", "0")
            .backend("feature-multicast-control", "0")
            .backend("feature-ctrl-ring", "0")
            .frontend("mac", frontend_mac(mac, cfg.hostile))
            .frontend("handle", cfg.devid);
        for &(flag, key) in BackendFlags::KEYS {
            spec = spec.backend(key, keyflags::value(o.flags.contains(flag)));
        }
        if let Some(q) = o.max_queues {
            spec = spec.backend("multi-queue-max-queues", q);
        }
        if let Some(s) = &cfg.script {
            spec = spec.backend("script", s.display());
        }
        let mut xbe = XenbusBackend::create(hv, &spec)?;
        xbe.switch_state(XenbusState::InitWait)?;
        let backend_path = xbe.backend_path().to_string();
        let shared = Arc::new(VifShared {
            hv: hv.clone(),
            frontend,
            devid: cfg.devid,
            mac,
            bridge,
            cfg,
            conn: Mutex::new(None),
            counters: Counters::default(),
            kick: AtomicBool::new(false),
            control: Mutex::new(None),
            scripts: Mutex::new(Scripts::default()),
            scripts_idle: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let control = xb::spawn_control(
            xbe,
            Box::new(Ctl(shared.clone())),
            Box::new(move || st.load(Ordering::SeqCst)),
        )
        .map_err(Error::Thread)?;
        Ok(NetBackend {
            shared,
            stop,
            control: Some(control),
            backend_path,
            step_scratch: Mutex::new(TxScratch::default()),
            _mac_claim: mac_claim,
        })
    }

    /// `vif<domid>.<devid>`.
    pub fn vif_name(&self) -> String {
        self.shared.vif_name()
    }

    /// The guest's MAC.
    pub fn mac(&self) -> Mac {
        self.shared.mac
    }

    /// The backend interface's MAC (guest MAC XOR `00:00:00:01:00:00`).
    pub fn backend_mac(&self) -> Mac {
        self.shared.mac.backend_peer()
    }

    /// The backend's xenstore directory.
    pub fn backend_path(&self) -> &str {
        &self.backend_path
    }

    /// Whether a frontend is connected right now.
    pub fn connected(&self) -> bool {
        lock(&self.shared.conn)
            .as_ref()
            .is_some_and(|c| !c.failed.load(Ordering::SeqCst))
    }

    /// Does on the calling thread what the pool workers would for a
    /// [`NetConfig::stepped`] backend would: every queue's tx requests are
    /// consumed, answered and forwarded to the bridge (frames for another vif
    /// wait in its rx queue until that vif steps), the frames queued for this
    /// vif go into the guest's rx buffers, and `req_event` is re-armed as a
    /// worker does before it sleeps. Whether anything was done. A no-op while no
    /// frontend is connected (and not to be used on a backend with workers).
    pub fn step(&self) -> bool {
        let Some(conn) = lock(&self.shared.conn).clone() else {
            return false;
        };
        let mut scratch = lock(&self.step_scratch);
        let mut any = false;
        for (q, qb) in conn.queues.iter().enumerate() {
            if conn.failed.load(Ordering::SeqCst) {
                break;
            }
            loop {
                qb.tx_work.store(false, Ordering::SeqCst);
                let mut busy = conn.tx_round(q, &mut scratch, false);
                let rx_note = qb.rx_work.swap(false, Ordering::SeqCst);
                if rx_note || qb.rx_queued.load(Ordering::SeqCst) {
                    busy |= conn.rx_round(q);
                }
                if !busy && !conn.tx_round(q, &mut scratch, true) {
                    break;
                }
                any = true;
            }
        }
        any
    }

    /// One tx round of [`NetBackend::step`] on queue `q` alone: requests
    /// consumed, forwarded and answered; with `arm`, an empty ring re-arms
    /// `req_event` (the round a worker runs before it sleeps), without it
    /// `req_event` is left alone. Whether any request was consumed. For tests
    /// that look at the ring between the rounds `step` runs at once (a
    /// [`NetConfig::stepped`] backend only).
    #[doc(hidden)]
    pub fn step_tx_round(&self, q: usize, arm: bool) -> bool {
        let Some(conn) = lock(&self.shared.conn).clone() else {
            return false;
        };
        let mut scratch = lock(&self.step_scratch);
        conn.tx_round(q, &mut scratch, arm)
    }

    /// What the connected frontend asked for.
    pub fn frontend_features(&self) -> Option<FrontendFeatures> {
        lock(&self.shared.conn).as_ref().map(|c| c.fe)
    }

    /// Counters.
    pub fn stats(&self) -> VifStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VifStats {
            tx_frames: l(&c.tx_frames),
            tx_bytes: l(&c.tx_bytes),
            tx_errors: l(&c.tx_errors),
            rx_frames: l(&c.rx_frames),
            rx_bytes: l(&c.rx_bytes),
            rx_dropped: l(&c.rx_dropped),
            rx_errors: l(&c.rx_errors),
            fatal: l(&c.fatal),
            connects: l(&c.connects),
            notifications: l(&c.notifications),
            runs: c.events.runs(),
            spurious_events: c.events.spurious(),
            backoffs: c.events.backoffs(),
        }
    }

    /// Waits (up to `timeout`) until a frontend is connected.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.connected() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.connected()
    }

    /// Stops the device's handshake, disconnects, and removes the device's xenstore
    /// directories.
    pub fn destroy(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.shared.wake_control();
        if let Some(c) = self.control.take() {
            c.join();
        }
        // The `down` the disconnect queued has run when `destroy` returns.
        self.shared.wait_scripts();
    }
}

impl Drop for NetBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl VifShared {
    fn vif_name(&self) -> String {
        format!("vif{}.{}", self.frontend.0, self.devid)
    }

    /// Queues the vif script's `action` (`up`, `down`) for this vif's script
    /// runner, a thread that runs while the vif has script runs queued, one after
    /// another, so the control loop (the other vifs' turns) never waits for a
    /// script.
    fn queue_script(self: &Arc<Self>, xbe: &XenbusBackend, action: &'static str) {
        if self.cfg.script.is_none() {
            return;
        }
        let mut g = lock(&self.scripts);
        g.queue.push_back(action);
        if g.running {
            return;
        }
        g.running = true;
        let me = self.clone();
        let be = xbe.backend_path().to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("vif-script-{}", self.frontend.0))
            .spawn(move || me.script_runner(&be));
        if let Err(e) = spawned {
            g.running = false;
            g.queue.clear();
            drop(g);
            eprintln!(
                "{}: cannot start the vif script's thread: {e}",
                self.vif_name()
            );
            if action == "up" {
                let _ = xbe.write_key("hotplug-status", "error");
            }
            self.scripts_idle.notify_all();
        }
    }

    /// The script runner: runs the queued actions in order, then ends.
    fn script_runner(&self, be: &str) {
        loop {
            let action = {
                let mut g = lock(&self.scripts);
                match g.queue.pop_front() {
                    Some(a) => a,
                    None => {
                        g.running = false;
                        self.scripts_idle.notify_all();
                        return;
                    }
                }
            };
            let ok = self.run_script(be, action);
            if action == "up" {
                self.hotplug_status(be, if ok { "connected" } else { "error" });
            }
        }
    }

    /// Writes `<be>/hotplug-status`, unless the backend's directory is gone
    /// meanwhile (the vif was destroyed while its script ran).
    fn hotplug_status(&self, be: &str, status: &str) {
        let xs = self.hv.xenstored().client(0);
        let _ = xb::with_transaction(&xs, |tx| {
            if xs.read(tx, &format!("{be}/state")).is_ok() {
                xs.write(tx, &format!("{be}/hotplug-status"), status.as_bytes())?;
            }
            Ok(())
        });
    }

    /// Waits until no script run is queued or running.
    fn wait_scripts(&self) {
        let mut g = lock(&self.scripts);
        while g.running {
            g = self.scripts_idle.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs the script once; whether it succeeded (in time).
    fn run_script(&self, be: &str, action: &str) -> bool {
        let Some(script) = &self.cfg.script else {
            return true;
        };
        let vif = self.vif_name();
        let domain = self.frontend.0.to_string();
        let mac = self.mac.to_string();
        let bridge = self.bridge.name().to_string();
        let mut cmd = Command::new(script);
        cmd.arg(action)
            .arg(format!("domain={domain}"))
            .arg(format!("vif={vif}"))
            .arg(format!("mac={mac}"))
            .arg(format!("bridge={bridge}"))
            .env("domain", &domain)
            .env("vif", &vif)
            .env("mac", &mac)
            .env("bridge", &bridge)
            .env("devid", self.devid.to_string())
            .env("backend_mac", self.mac.backend_peer().to_string())
            .env("XENBUS_PATH", be)
            .stdin(std::process::Stdio::null());
        let ok = match cmd.spawn() {
            Ok(mut child) => {
                let end = Instant::now() + SCRIPT_TIMEOUT;
                loop {
                    match child.try_wait() {
                        Ok(Some(st)) => break st.success(),
                        Ok(None) if Instant::now() < end => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break false;
                        }
                    }
                }
            }
            Err(_) => false,
        };
        if !ok {
            eprintln!("{vif}: vif script {} {action} failed", script.display());
        }
        ok
    }
}

/// The control loop's device half (see [`xb::spawn_control`]).
struct Ctl(Arc<VifShared>);

impl xb::Device for Ctl {
    fn connected(&self) -> bool {
        lock(&self.0.conn).is_some()
    }
    fn connect(&self, xbe: &XenbusBackend) -> Result<(), String> {
        connect(&self.0, xbe).map_err(|e| {
            add(&self.0.counters.fatal, 1);
            e.to_string()
        })?;
        // Counted before the state goes Connected, so a frontend that has seen
        // Connected (and a test that asks after it) finds the connection counted.
        add(&self.0.counters.connects, 1);
        Ok(())
    }
    fn on_connected(&self, xbe: &XenbusBackend) {
        self.0.queue_script(xbe, "up");
    }
    fn disconnect(&self, xbe: &XenbusBackend) {
        disconnect(&self.0, xbe);
    }
    fn set_control_waker(&self, waker: xb::ControlWaker) -> bool {
        *lock(&self.0.control) = Some(waker);
        true
    }
    fn take_failure(&self) -> Option<String> {
        // A fatal data-path error: tell the frontend.
        self.0.kick.swap(false, Ordering::SeqCst).then(|| {
            lock(&self.0.conn)
                .as_ref()
                .and_then(|c| lock(&c.why).clone())
                .unwrap_or_default()
        })
    }
}

fn disconnect(sh: &Arc<VifShared>, xbe: &XenbusBackend) {
    let conn = lock(&sh.conn).take();
    if let Some(c) = conn {
        // First let the workers finish their round: frames they already answered
        // (the frontend may be closing because it saw those answers) still go out.
        c.stop_workers();
        c.failed.store(true, Ordering::SeqCst);
        if let Some(p) = lock(&c.bridge_port).take() {
            sh.bridge.detach(p);
        }
        sh.queue_script(xbe, "down");
        // Take the rx locks once so no delivery from another vif is mid-copy when
        // the rings unmap (the last Arc drops them; later deliveries see `failed`).
        for q in &c.queues {
            drop(lock(&q.rx));
        }
    }
}

/// Hostile mode `net.event_storm`: a thread notifies queue 0's rx port (its
/// only port without split event channels) every 50 us, with nothing new on the
/// rings, until the connection stops or is gone.
fn start_event_storm(conn: &Arc<Connection>) {
    let w = Arc::downgrade(conn);
    let spawned = std::thread::Builder::new()
        .name("netback-storm".into())
        .spawn(move || loop {
            {
                let Some(c) = w.upgrade() else { return };
                if c.stop.load(Ordering::SeqCst) || c.failed.load(Ordering::SeqCst) {
                    return;
                }
                let Some(q) = c.queues.first() else { return };
                if let Some(p) = q.rx_port.get().or_else(|| q.tx_port.get()) {
                    p.notify();
                }
            }
            std::thread::sleep(Duration::from_micros(50));
        });
    if let Err(e) = spawned {
        eprintln!("netback: hostile mode net.event_storm: no thread: {e}");
    }
}

fn unsupported(s: impl Into<String>) -> Error {
    Error::Unsupported(s.into())
}

/// Reads the frontend's keys, maps its rings, binds its event channels and joins
/// the bridge.
fn connect(sh: &Arc<VifShared>, xbe: &XenbusBackend) -> Result<(), Error> {
    let o = &sh.cfg.offer;
    if !xbe.read_frontend_flag("request-rx-copy")? {
        return Err(unsupported("request-rx-copy must be 1 (no page flipping)"));
    }
    let max = o.max_queues.unwrap_or(1).clamp(1, MAX_QUEUES);
    let queues = match xbe.read_frontend_u64("multi-queue-num-queues")? {
        None => 1,
        Some(n) if n >= 1 && n <= u64::from(max) => n as u32,
        Some(n) => {
            return Err(unsupported(format!(
                "multi-queue-num-queues {n} (at most {max})"
            )))
        }
    };
    let mut flags = FrontendFlags::empty();
    for &(flag, key) in FrontendFlags::KEYS {
        flags.set(flag, xbe.read_frontend_flag(key)?);
    }
    if !flags.contains(FrontendFlags::SG) {
        flags.remove(FrontendFlags::GSO_TCPV4 | FrontendFlags::GSO_TCPV6);
    }
    let fe = FrontendFeatures {
        flags,
        queues,
        split: false,
    };
    let mut fe = fe;
    let mut parts = Vec::new();
    for q in 0..queues {
        let prefix = if queues == 1 {
            String::new()
        } else {
            format!("queue-{q}/")
        };
        let txr = xbe.read_ring_refs(&prefix, "tx-ring-ref", 0)?;
        let rxr = xbe.read_ring_refs(&prefix, "rx-ring-ref", 0)?;
        let split = xbe.read_frontend_u64(&format!("{prefix}event-channel-tx"))?;
        let (tp, rp) = match split {
            Some(_) if o.flags.contains(BackendFlags::SPLIT_EVENT_CHANNELS) => {
                fe.split = true;
                (
                    xbe.require_frontend_u32(&format!("{prefix}event-channel-tx"))?,
                    Some(xbe.require_frontend_u32(&format!("{prefix}event-channel-rx"))?),
                )
            }
            Some(_) => return Err(unsupported("split event channels not offered")),
            None => (
                xbe.require_frontend_u32(&format!("{prefix}event-channel"))?,
                None,
            ),
        };
        let txm = xbe.map_ring(&txr)?;
        let rxm = xbe.map_ring(&rxr)?;
        let tx_ring = BackRing::attach(txm).map_err(|e| unsupported(format!("tx ring: {e}")))?;
        let rx_ring = BackRing::attach(rxm).map_err(|e| unsupported(format!("rx ring: {e}")))?;
        parts.push((tx_ring, rx_ring, tp, rp));
    }
    let mut qs = Vec::new();
    let mut ports = Vec::new();
    for (tx_ring, rx_ring, tp, rp) in parts {
        qs.push(QueueBack {
            tx: Mutex::new(TxSide {
                ring: tx_ring,
                partial: Vec::new(),
                frozen: false,
            }),
            rx: Mutex::new(RxSide {
                ring: rx_ring,
                stash: VecDeque::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                wrote: false,
                frozen: false,
            }),
            // Look at the rings once at start: requests may already be there.
            tx_work: AtomicBool::new(true),
            rx_work: AtomicBool::new(true),
            rx_queued: AtomicBool::new(false),
            rx_backlog: AtomicBool::new(false),
            rx_progress: AtomicU64::new(0),
            served: OnceLock::new(),
            tx_port: OnceLock::new(),
            rx_port: OnceLock::new(),
        });
        ports.push((tp, rp));
    }
    let peer = sh
        .hv
        .grant_peer(sh.frontend)
        .map_err(|e| unsupported(format!("frontend domain: {e}")))?;
    let conn = Arc::new(Connection {
        vif: Arc::downgrade(sh),
        fe,
        peer,
        queues: qs,
        failed: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        why: Mutex::new(None),
        bridge_port: Mutex::new(None),
        epoch: Instant::now(),
    });
    for (q, (tp, rp)) in ports.into_iter().enumerate() {
        let (w, w2) = (Arc::downgrade(&conn), Arc::downgrade(&conn));
        let Some(qb) = conn.queues.get(q) else {
            continue;
        };
        match rp {
            Some(rp) => {
                let th: Dom0Handler = Arc::new(move || {
                    if let Some(c) = w.upgrade() {
                        c.notified(q, true, false);
                    }
                });
                let rh: Dom0Handler = Arc::new(move || {
                    if let Some(c) = w2.upgrade() {
                        c.notified(q, false, true);
                    }
                });
                let _ = qb.tx_port.set(xbe.bind_evtchn(Port(tp), th)?);
                let _ = qb.rx_port.set(xbe.bind_evtchn(Port(rp), rh)?);
            }
            None => {
                let h: Dom0Handler = Arc::new(move || {
                    if let Some(c) = w.upgrade() {
                        c.notified(q, true, true);
                    }
                });
                let _ = qb.tx_port.set(xbe.bind_evtchn(Port(tp), h)?);
            }
        }
    }
    let port: Arc<dyn BridgePort> = Arc::new(VifPort {
        conn: Arc::downgrade(&conn),
        name: sh.vif_name(),
    });
    let pid = sh.bridge.attach(port);
    *lock(&conn.bridge_port) = Some(pid);
    if !sh.cfg.stepped {
        if hostile_rx(sh).is_some() {
            // Buffers posted before the queues are served are answered at once.
            for qb in &conn.queues {
                qb.rx_work.store(true, Ordering::SeqCst);
            }
        }
        for (q, qb) in conn.queues.iter().enumerate() {
            let nq = Arc::new(NetQueue {
                sched: Sched::new(sh.counters.events.clone()),
                conn: Arc::downgrade(&conn),
                q,
                st: Mutex::new(NetQueueState::default()),
            });
            NET_POOL.register();
            let _ = qb.served.set(nq);
            // Requests may already be on the rings.
            qb.wake_worker();
        }
    }
    if sh.cfg.hostile == Some(NetHostile::EventStorm) {
        start_event_storm(&conn);
    }
    *lock(&sh.conn) = Some(conn);
    Ok(())
}

/// The bridge's view of a vif.
struct VifPort {
    conn: Weak<Connection>,
    name: String,
}

impl BridgePort for VifPort {
    fn deliver(&self, frame: &Frame) {
        self.deliver_batch(std::slice::from_ref(frame));
    }
    fn deliver_batch(&self, frames: &[Frame]) {
        if let Some(c) = self.conn.upgrade() {
            c.deliver_batch(frames);
        }
    }
    fn congested(&self) -> bool {
        self.conn.upgrade().is_some_and(|c| c.congested())
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// Where a tx request chain stands.
enum TxChain {
    /// Still incomplete.
    Partial,
    /// Complete: the whole (partial) buffer is one frame.
    Done,
}

fn chain_state(p: &[TxRequest]) -> Result<TxChain, String> {
    let Some(first) = p.first() else {
        return Ok(TxChain::Partial);
    };
    let mut i = 1;
    if first.flags & netif::NETTXF_EXTRA_INFO != 0 {
        loop {
            let Some(x) = p.get(i) else {
                return Ok(TxChain::Partial);
            };
            i += 1;
            let x = x.as_extra();
            if x.flags & EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    let mut more = first.flags & netif::NETTXF_MORE_DATA != 0;
    while more {
        let Some(r) = p.get(i) else {
            return Ok(TxChain::Partial);
        };
        i += 1;
        more = r.flags & netif::NETTXF_MORE_DATA != 0;
    }
    if i > MAX_TX_SLOTS {
        return Err(format!("tx frame uses {i} slots"));
    }
    Ok(TxChain::Done)
}

/// Every vif's queues are served by this pool: at most a few `netback` threads in
/// all (see the module docs, "Threads and notifications").
static NET_POOL: Pool = Pool::new("netback", TURN_ROUNDS, POLL_SPIN, Duration::ZERO);

/// Rounds (each of up to [`TX_BATCH`] tx requests, plus the rx work asked for) a
/// queue is served in one run of a pool worker before the other queues get
/// their turn.
const TURN_ROUNDS: usize = 4;

/// One queue in [`NET_POOL`]: the tx processing and the rx work the frontend's
/// notifications ask for, turn by turn, while the connection lives.
///
/// When the pool has nothing else to do it keeps polling an idle queue for
/// [`POLL_SPIN`] without asking for notifications (so a frontend that keeps
/// sending never needs to notify); then it re-arms `req_event` and checks once
/// more ([`Served::rearm`]).
struct NetQueue {
    sched: Sched,
    conn: Weak<Connection>,
    q: usize,
    st: Mutex<NetQueueState>,
}

#[derive(Default)]
struct NetQueueState {
    scratch: TxScratch,
    /// Holding off since then for this congested receiver (backpressure, see
    /// [`Connection::hold_off`]): no tx is consumed meanwhile.
    held: Option<(Instant, Arc<dyn BridgePort>)>,
    /// The connection stopped: not served any more.
    off: bool,
}

impl NetQueue {
    fn turn_inner(&self, conn: &Connection, st: &mut NetQueueState) -> Turn {
        let q = self.q;
        let Some(qb) = conn.queues.get(q) else {
            return Turn::Off;
        };
        if conn.stop.load(Ordering::SeqCst) || conn.failed.load(Ordering::SeqCst) {
            return Turn::Off;
        }
        if let Some((since, port)) = &st.held {
            if port.congested() && since.elapsed() < BACKPRESSURE_WAIT {
                // Our own rx work goes on meanwhile (the receiver may be waiting
                // for us in turn).
                if qb.rx_work.swap(false, Ordering::SeqCst) || qb.rx_queued.load(Ordering::SeqCst) {
                    conn.rx_round(q);
                }
                return Turn::Held;
            }
            st.held = None;
        }
        qb.tx_work.store(false, Ordering::SeqCst);
        let (mut busy, congested) = conn.tx_round_once(q, &mut st.scratch, false);
        if let Some(port) = congested {
            st.held = Some((Instant::now(), port));
        }
        let rx_note = qb.rx_work.swap(false, Ordering::SeqCst);
        if rx_note || qb.rx_queued.load(Ordering::SeqCst) {
            busy |= conn.rx_round(q);
        }
        Turn::Did(usize::from(busy))
    }
}

impl Served for NetQueue {
    fn turn(&self, _budget: usize) -> Turn {
        let mut st = lock(&self.st);
        if st.off {
            return Turn::Off;
        }
        // The connection is taken under the queue's lock and let go before it:
        // once `stop_workers` has set `off`, no turn holds it, so the
        // disconnecting thread drops the last reference (which unmaps the
        // rings) before the backend says Closed.
        let Some(conn) = self.conn.upgrade() else {
            return Turn::Off;
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.turn_inner(&conn, &mut st)
        }));
        let turn = r.unwrap_or_else(|_| {
            // A bug, not the guest's doing; still only this vif goes down.
            conn.fail(format!("queue {} worker panicked", self.q));
            Turn::Off
        });
        drop(conn);
        turn
    }

    fn rearm(&self) -> bool {
        let mut st = lock(&self.st);
        if st.off {
            return false;
        }
        // As in `turn`: the connection only under the queue's lock.
        let Some(conn) = self.conn.upgrade() else {
            return false;
        };
        let Some(qb) = conn.queues.get(self.q) else {
            return false;
        };
        if conn.stop.load(Ordering::SeqCst) || conn.failed.load(Ordering::SeqCst) {
            return false;
        }
        // Ask for notifications; requests that came meanwhile are handled now.
        let (busy, congested) = conn.tx_round_once(self.q, &mut st.scratch, true);
        if let Some(port) = congested {
            st.held = Some((Instant::now(), port));
        }
        // New rx buffers are work only for frames that wait for them. A
        // notification that came after this look is the pool's `pending` (the
        // queue runs again); counting it here would keep a worker polling for
        // as long as a frontend notifies without publishing anything.
        busy || (qb.rx_work.load(Ordering::SeqCst) && qb.rx_queued.load(Ordering::SeqCst))
    }

    fn sched(&self) -> &Sched {
        &self.sched
    }
}

/// Publishes a response producer index the ring cannot hold (a whole ring and
/// one past `rsp_prod_pvt`), written past the ring type (hostile modes
/// `net.tx_rsp_prod_overrun`, `net.rx_rsp_prod_overrun`).
fn overrun_rsp_prod(mem: hypercall::SharedMem<'_>, rsp_prod_pvt: u32, size: u32) {
    let bogus = rsp_prod_pvt.wrapping_add(size).wrapping_add(1);
    hypercall::shmem::wmb();
    mem.store_u32(hypercall::abi::ring::RSP_PROD, bogus);
}

/// The hostile mode of `v` if it is one of the rx modes (which answer posted
/// buffers themselves and take no frames from the bridge).
fn hostile_rx(v: &VifShared) -> Option<NetHostile> {
    v.cfg.hostile.filter(|h| {
        matches!(
            h,
            NetHostile::RxPastPage
                | NetHostile::RxEndlessChain
                | NetHostile::RxBuffersHoarded
                | NetHostile::RxRspProdOverrun
        )
    })
}

/// Rounds a stopping worker may use to finish the requests already published (a
/// ring holds at most 256).
const RING_DRAIN_ROUNDS: usize = 256 / TX_BATCH;

/// Frames up to this many bytes are copied whole into host memory on tx (for a
/// small frame one copy is cheaper than pinning the sender's grant again on
/// delivery); longer ones keep only their first [`HEAD_LEN`] bytes there, and
/// the rest goes grant to grant into the receiver's buffers.
pub const COPY_BREAK: usize = 256;
/// Bytes of a longer frame netback copies and decides on: the Ethernet header
/// (the bridge), and IPv4 addresses and ports (the receiver's queue).
pub const HEAD_LEN: usize = 64;

/// A tx worker's reusable buffers: the requests, answers and frames of one
/// round (no allocation per frame once warm).
#[derive(Default)]
struct TxScratch {
    /// Every request of the round's complete chains, in ring order.
    reqs: Vec<TxRequest>,
    /// One per chain: its requests (`reqs[start..end]`) and its frame, if any.
    answers: Vec<TxAnswer>,
    /// The round's frames are `frames[..used]`; the frames after them are
    /// earlier rounds' (at most [`TX_BATCH`] in all), kept with their buffers
    /// and rebuilt in place.
    frames: Vec<Frame>,
    used: usize,
    /// Spare tails, boxed as frames hold them (reused without allocating).
    #[allow(clippy::vec_box)]
    spare_tails: Vec<Box<GrantedTail>>,
}

impl TxScratch {
    /// Builds a checked chain's frame as the round's next one (in a kept
    /// frame's buffers); its index, or `None` if a grant could not be read.
    fn fetch(&mut self, peer: &GrantPeer, reqs: &[TxRequest], c: &TxChainInfo) -> Option<usize> {
        let i = self.used;
        if self.frames.len() <= i {
            self.frames.push(Frame::default());
        }
        let f = self.frames.get_mut(i)?;
        if fetch_frame(peer, reqs, c, f, &mut self.spare_tails) {
            self.used = i + 1;
            return Some(i);
        }
        None
    }

    /// The round's frames.
    fn round(&self) -> &[Frame] {
        self.frames.get(..self.used).unwrap_or_default()
    }
}

/// How one tx chain is answered once its frame was forwarded.
struct TxAnswer {
    start: usize,
    end: usize,
    /// Index in `TxScratch::frames`; `None`: a bad frame (answered with an error).
    frame: Option<usize>,
}

/// A tx chain that passed the checks: its size, flags and where its data slots
/// start (`reqs[more_from..]` follow the first request).
struct TxChainInfo {
    total: usize,
    first_len: usize,
    more_from: usize,
    csum_blank: bool,
    data_validated: bool,
    gso: Option<Gso>,
}

impl TxChainInfo {
    /// (gref, offset, length) of each data slot.
    fn slots<'r>(
        &self,
        reqs: &'r [TxRequest],
    ) -> impl Iterator<Item = (GrantRef, u16, usize)> + 'r {
        let first_len = self.first_len;
        let more = reqs.get(self.more_from..).unwrap_or_default();
        reqs.first()
            .map(|f| (GrantRef(f.gref), f.offset, first_len))
            .into_iter()
            .chain(
                more.iter()
                    .map(|r| (GrantRef(r.gref), r.offset, usize::from(r.size))),
            )
    }
}

/// Checks a complete tx request chain (read once: these are our private copies
/// of the requests). `Ok(None)`: the frame is bad (answer with an error);
/// `Err`: the frontend broke the protocol (fatal), as in Linux netback: an
/// unknown extra-info type, too many data slots, a slot crossing its page.
fn check_tx_chain(reqs: &[TxRequest], offer: &Offer) -> Result<Option<TxChainInfo>, String> {
    let Some(first) = reqs.first() else {
        return Ok(None);
    };
    let mut i = 1;
    let mut gso = None;
    let mut bad = false;
    if first.flags & netif::NETTXF_EXTRA_INFO != 0 {
        loop {
            let x = reqs.get(i).map(|r| r.as_extra()).unwrap_or_default();
            i += 1;
            match x.ty {
                EXTRA_TYPE_GSO => {
                    let t = x.gso_type();
                    if x.gso_size() == 0 || (t != GSO_TYPE_TCPV4 && t != GSO_TYPE_TCPV6) {
                        bad = true;
                    } else {
                        gso = Some(Gso {
                            mss: x.gso_size(),
                            ty: t,
                        });
                    }
                }
                t if t == EXTRA_TYPE_NONE || t >= EXTRA_TYPE_MAX => {
                    return Err(format!("unknown tx extra-info type {t}"));
                }
                _ => {} // multicast/hash: not offered, ignored
            }
            if x.flags & EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    // Data slots: the first request, then those after the extras.
    let more = reqs.get(i..).unwrap_or_default();
    let data_slots = 1 + more.len();
    if data_slots > MAX_TX_DATA_SLOTS {
        return Err(format!("tx frame uses {data_slots} data slots"));
    }
    let total = usize::from(first.size);
    let rest: usize = more.iter().map(|r| usize::from(r.size)).sum();
    let first_len = total.checked_sub(rest);
    let info = TxChainInfo {
        total,
        first_len: first_len.unwrap_or(0),
        more_from: i,
        csum_blank: first.flags & netif::NETTXF_CSUM_BLANK != 0,
        data_validated: first.flags & netif::NETTXF_DATA_VALIDATED != 0,
        gso,
    };
    // Slot bounds: a slot crossing its page is fatal (as in Linux).
    for (_, offset, len) in info.slots(reqs) {
        if usize::from(offset) + len > PAGE_SIZE {
            return Err(format!(
                "tx slot crosses a page: offset {offset} size {len}"
            ));
        }
    }
    if first_len.is_none() || bad || total < ETH_HLEN {
        return Ok(None); // sizes inconsistent, bad GSO descriptor, runt
    }
    if gso.is_some()
        && !offer
            .flags
            .intersects(BackendFlags::GSO_TCPV4 | BackendFlags::GSO_TCPV6)
    {
        return Ok(None);
    }
    Ok(Some(info))
}

/// Fills `f` (whose `data` is a spare buffer) with the frame of a checked
/// chain: a small frame, or one with offloads to resolve, is copied whole; a
/// longer one keeps its first [`HEAD_LEN`] bytes (what the bridge and the
/// receiver decide on) and leaves the rest in the sender's pages as a
/// [`GrantedTail`]. `false`: a grant could not be read (answer with an error).
#[allow(clippy::vec_box)] // the boxes are what frames hold
fn fetch_frame(
    peer: &GrantPeer,
    reqs: &[TxRequest],
    c: &TxChainInfo,
    f: &mut Frame,
    spare_tails: &mut Vec<Box<GrantedTail>>,
) -> bool {
    let whole = c.total <= COPY_BREAK || c.csum_blank || c.gso.is_some();
    let keep = if whole { c.total } else { HEAD_LEN };
    f.csum_blank = c.csum_blank;
    f.data_validated = c.data_validated;
    f.gso = c.gso;
    // A kept frame's tail box is reused (or kept for a later frame).
    match f.tail.as_mut() {
        Some(t) if !whole => t.reset(peer.clone()),
        Some(_) => spare_tails.extend(f.tail.take()),
        None if !whole => {
            f.tail = Some(match spare_tails.pop() {
                Some(mut t) => {
                    t.reset(peer.clone());
                    t
                }
                None => Box::new(GrantedTail::new(peer.clone())),
            })
        }
        None => {}
    }
    // Every byte of `data` is overwritten below (the slots cover `total` bytes),
    // so a recycled buffer carries nothing over; only growth is zeroed.
    if f.data.len() != keep {
        f.data.resize(keep, 0);
    }
    // One slot (no extras, no more slots: its size is the frame's) copied
    // whole, as most small frames are: one copy, no slot walk.
    if let (true, [only]) = (whole, reqs) {
        return peer
            .copy_out(GrantRef(only.gref), only.offset, &mut f.data)
            .is_ok();
    }
    let mut pos = 0usize;
    for (gref, offset, len) in c.slots(reqs) {
        // The part of this slot that goes into `data`, and the part left behind.
        let here = len.min(keep.saturating_sub(pos));
        if here > 0 {
            let Some(dst) = f.data.get_mut(pos..pos + here) else {
                return false;
            };
            if peer.copy_out(gref, offset, dst).is_err() {
                return false;
            }
        }
        if let Some(t) = f.tail.as_mut().filter(|_| len > here) {
            let left = TailPiece {
                gref,
                offset: offset + here as u16,
                len: (len - here) as u16,
            };
            if !t.push(left) {
                return false;
            }
        }
        pos += len;
    }
    true
}

/// What happened to a frame offered to a guest's rx buffers.
#[derive(Copy, Clone, PartialEq, Eq)]
enum RxWrite {
    /// Written and answered (or answered with an error: the guest's own bad grant).
    Done,
    /// Not enough buffers posted; nothing consumed for it.
    NoBuffers,
    /// The sender's grants could not be read; nothing consumed for it.
    SourceFailed,
}

// The connection's life: failure, notifications, workers, flow control.
impl Connection {
    fn fail(&self, why: String) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            *lock(&self.why) = Some(why);
            if let Some(v) = self.vif.upgrade() {
                add(&v.counters.fatal, 1);
                v.kick.store(true, Ordering::SeqCst);
                v.wake_control();
                if let Some(p) = lock(&self.bridge_port).take() {
                    v.bridge.detach(p);
                }
            }
        }
    }

    /// The frontend notified queue `q` (a dom0 event handler: just wakes the
    /// worker; no system call unless it sleeps).
    fn notified(&self, q: usize, tx: bool, rx: bool) {
        let Some(qb) = self.queues.get(q) else {
            return;
        };
        if tx {
            qb.tx_work.store(true, Ordering::SeqCst);
        }
        if rx {
            qb.rx_work.store(true, Ordering::SeqCst);
        }
        qb.notify_worker();
    }

    /// Takes the queues out of the pool (waiting for a turn in progress; not from
    /// a turn). After a graceful stop (the frontend closes or restarts), what the
    /// frontend published before still goes out, as it would have had we been
    /// quicker: at most a ring's worth.
    fn stop_workers(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for (q, qb) in self.queues.iter().enumerate() {
            let Some(nq) = qb.served.get() else {
                continue;
            };
            let mut st = lock(&nq.st);
            if std::mem::replace(&mut st.off, true) {
                continue;
            }
            NET_POOL.unregister();
            if !self.failed.load(Ordering::SeqCst) {
                for _ in 0..=(RING_DRAIN_ROUNDS) {
                    if !self.tx_round(q, &mut st.scratch, false) {
                        break;
                    }
                }
            }
        }
    }

    /// Whether some rx queue is backed up while its guest still takes frames
    /// (see [`BridgePort::congested`]).
    fn congested(&self) -> bool {
        if self.failed.load(Ordering::SeqCst) {
            return false;
        }
        let Some(v) = self.vif.upgrade() else {
            return false;
        };
        let stall = u64::try_from(v.cfg.rx_stall.as_nanos()).unwrap_or(u64::MAX);
        self.queues.iter().any(|qb| {
            qb.rx_backlog.load(Ordering::SeqCst) && {
                let now = self.epoch.elapsed().as_nanos() as u64;
                now.saturating_sub(qb.rx_progress.load(Ordering::SeqCst)) < stall
            }
        })
    }

    /// Publishes the rx queue's state for the worker and for [`Connection::congested`]
    /// (rx lock held).
    fn rx_flags(&self, v: &VifShared, qb: &QueueBack, st: &RxSide) {
        qb.rx_queued.store(!st.queue.is_empty(), Ordering::SeqCst);
        // Backed up: half full, or no room left for one more sender round.
        let (frames, bytes) = (st.queue.len(), st.queued_bytes);
        let (max_frames, max_bytes) = (v.cfg.rx_queue_frames, v.cfg.rx_queue_bytes);
        let backlog = frames * 2 >= max_frames
            || max_frames.saturating_sub(frames) < TX_BATCH
            || bytes * 2 >= max_bytes
            || max_bytes.saturating_sub(bytes) < TX_BATCH * PAGE_SIZE;
        qb.rx_backlog.store(backlog, Ordering::SeqCst);
    }

    fn rx_progressed(&self, q: usize) {
        if let Some(qb) = self.queues.get(q) {
            let now = self.epoch.elapsed().as_nanos() as u64;
            qb.rx_progress.store(now, Ordering::SeqCst);
            // Buffers taken (often by the sender's thread, not a run of ours):
            // work, which ends a streak of spurious notifications.
            if let Some(nq) = qb.served.get() {
                nq.sched.worked();
            }
        }
    }
}

// The tx path: requests in, frames to the bridge, answers back.
impl Connection {
    /// One round of tx work on queue `q`: up to [`TX_BATCH`] requests consumed,
    /// their frames forwarded, then answered (the answers wait for the
    /// forwarding: receivers copy straight from the sender's pages, which stay
    /// granted until answered). With `arm`, an empty ring re-arms `req_event`
    /// (and is checked again). Whether any request was consumed.
    fn tx_round(&self, q: usize, scratch: &mut TxScratch, arm: bool) -> bool {
        let (handled, congested) = self.tx_round_once(q, scratch, arm);
        if let Some(port) = congested {
            self.hold_off(q, &*port);
        }
        handled
    }

    /// [`Connection::tx_round`] without the holding off: also returns the
    /// congested receiver to hold off for, if any (a pool worker holds off by
    /// turns, see [`NetQueue`]).
    fn tx_round_once(
        &self,
        q: usize,
        scratch: &mut TxScratch,
        arm: bool,
    ) -> (bool, Option<Arc<dyn BridgePort>>) {
        let Some(qb) = self.queues.get(q) else {
            return (false, None);
        };
        let Some(v) = self.vif.upgrade() else {
            return (false, None);
        };
        let handled = self.tx_collect(&v, &mut lock(&qb.tx), scratch, arm);
        if handled == 0 {
            return (false, None);
        }
        let congested = self.forward(&v, scratch.round());
        self.tx_answer(&v, &mut lock(&qb.tx), q, scratch);
        (true, congested)
    }

    /// Consumes tx requests (at most [`TX_BATCH`]) and builds their frames into
    /// `scratch` (answers still to be sent). Returns the number consumed.
    fn tx_collect(&self, v: &VifShared, st: &mut TxSide, sc: &mut TxScratch, arm: bool) -> usize {
        let mut handled = 0usize;
        if st.frozen {
            return 0;
        }
        // The requests go straight into the round's list; `reqs[start..]` is the
        // chain being collected, continuing one whose last slot an earlier round
        // had not seen yet (kept in `partial` between rounds).
        let mut reqs = std::mem::take(&mut sc.reqs);
        let mut start = reqs.len();
        reqs.append(&mut st.partial);
        'outer: loop {
            while handled < TX_BATCH {
                let req = match st.ring.poll_request() {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        self.fail(format!("tx ring: {e}"));
                        break 'outer;
                    }
                };
                handled += 1;
                reqs.push(req);
                let chain = reqs.get(start..).unwrap_or_default();
                match chain_state(chain) {
                    Ok(TxChain::Partial) if chain.len() < MAX_TX_SLOTS => {}
                    Ok(TxChain::Partial) | Err(_) => {
                        self.fail(format!("tx frame uses more than {MAX_TX_SLOTS} slots"));
                        break 'outer;
                    }
                    Ok(TxChain::Done) => {
                        let frame = match check_tx_chain(chain, &v.cfg.offer) {
                            Ok(Some(c)) => sc.fetch(&self.peer, chain, &c),
                            Ok(None) => None,
                            Err(why) => {
                                self.fail(why);
                                break 'outer;
                            }
                        };
                        sc.answers.push(TxAnswer {
                            start,
                            end: reqs.len(),
                            frame,
                        });
                        start = reqs.len();
                    }
                }
            }
            if handled >= TX_BATCH || !arm {
                break;
            }
            match st.ring.final_check_for_requests() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.fail(format!("tx ring: {e}"));
                    break;
                }
            }
        }
        // An incomplete chain waits in `partial` for its other slots.
        st.partial.extend(reqs.drain(start.min(reqs.len())..));
        sc.reqs = reqs;
        handled
    }

    /// Hands the round's frames to the bridge (unless the connection failed).
    /// Returns a receiver that is now congested, if any.
    fn forward(&self, v: &VifShared, frames: &[Frame]) -> Option<Arc<dyn BridgePort>> {
        if frames.is_empty() || self.failed.load(Ordering::SeqCst) {
            return None;
        }
        let pid = (*lock(&self.bridge_port))?;
        v.bridge.forward_batch(pid, frames)
    }

    /// Answers every chain of the round (a frame whose pages some receiver could
    /// not read gets an error), counts, notifies if the frontend asked for it,
    /// and keeps the frame buffers for reuse.
    fn tx_answer(&self, v: &VifShared, st: &mut TxSide, q: usize, sc: &mut TxScratch) {
        let (mut frames, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        let round = sc.frames.get(..sc.used).unwrap_or_default();
        for a in sc.answers.drain(..) {
            let f = a.frame.and_then(|i| round.get(i));
            let ok = f.is_some_and(|f| !f.tail.as_ref().is_some_and(|t| t.failed()));
            if ok {
                frames += 1;
                bytes += f.map_or(0, |f| f.len()) as u64;
            } else {
                errors += 1;
            }
            let status = if ok {
                netif::RSP_OKAY
            } else {
                netif::RSP_ERROR
            };
            let reqs = sc.reqs.get(a.start..a.end).unwrap_or_default();
            let bad_id = v.cfg.hostile == Some(NetHostile::TxIdOutOfRange);
            if let Err(e) = respond_tx(&mut st.ring, reqs, status, bad_id) {
                self.fail(format!("tx ring: {e}"));
                break;
            }
        }
        sc.answers.clear();
        sc.reqs.clear();
        sc.used = 0;
        add(&v.counters.tx_frames, frames);
        add(&v.counters.tx_bytes, bytes);
        add(&v.counters.tx_errors, errors);
        let overrun = v.cfg.hostile == Some(NetHostile::TxRspProdOverrun);
        if st.ring.push_responses_and_check_notify() || overrun {
            if overrun {
                overrun_rsp_prod(st.ring.mem(), st.ring.rsp_prod_pvt(), st.ring.size());
                st.frozen = true;
            }
            if let Some(p) = self.queues.get(q).and_then(|qb| qb.tx_port.get()) {
                add(&v.counters.notifications, 1);
                p.notify();
            }
        }
    }

    /// Backpressure: lets a congested receiver drain before more of our guest's
    /// ring is consumed (which then fills up and makes the guest wait). Our own
    /// rx work goes on meanwhile (the receiver may be waiting for us in turn).
    fn hold_off(&self, q: usize, port: &dyn BridgePort) {
        let Some(qb) = self.queues.get(q) else {
            return;
        };
        let start = Instant::now();
        while port.congested()
            && start.elapsed() < BACKPRESSURE_WAIT
            && !self.stop.load(Ordering::SeqCst)
            && !self.failed.load(Ordering::SeqCst)
        {
            if qb.rx_work.swap(false, Ordering::SeqCst) || qb.rx_queued.load(Ordering::SeqCst) {
                self.rx_round(q);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

// The rx path: frames from the bridge into the guest's posted buffers.
impl Connection {
    fn pick_queue(&self, f: &Frame) -> usize {
        let n = self.queues.len().max(1);
        if n == 1 {
            return 0;
        }
        let mut h: u32 = 0x811c_9dc5;
        for &b in f.data.get(26..38).unwrap_or_default() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h as usize % n
    }

    /// Whether this guest can take `frame` as it is (no offload to resolve).
    fn takes_as_is(&self, frame: &Frame) -> bool {
        if !frame.csum_blank && frame.gso.is_none() {
            return true;
        }
        let fe = &self.fe;
        // (Frames with offloads are all in host memory: see `fetch_frame`.)
        let Some(l4) = csum::locate(&frame.data[..]) else {
            return false; // resolve_offloads passes it on unchanged, flags cleared
        };
        let gso_ok = match frame.gso {
            Some(g) if g.ty == GSO_TYPE_TCPV6 => {
                fe.flags.contains(FrontendFlags::GSO_TCPV6) && fe.csum_blank_ok(true)
            }
            Some(_) => fe.flags.contains(FrontendFlags::GSO_TCPV4) && fe.csum_blank_ok(false),
            None => true,
        };
        gso_ok && fe.csum_blank_ok(l4.ipv6)
    }

    /// Frames from the bridge for this guest (in order). Consecutive frames for
    /// the same queue are written under one lock, and the frontend is notified at
    /// most once for them.
    fn deliver_batch(&self, frames: &[Frame]) {
        let Some(v) = self.vif.upgrade() else {
            return;
        };
        if self.failed.load(Ordering::SeqCst) || hostile_rx(&v).is_some() {
            add(&v.counters.rx_dropped, frames.len() as u64);
            return;
        }
        let mut rest = frames;
        while let Some(first) = rest.first() {
            let q = self.pick_queue(first);
            let run = if self.queues.len() <= 1 {
                rest.len()
            } else {
                1 + rest
                    .iter()
                    .skip(1)
                    .take_while(|f| self.pick_queue(f) == q)
                    .count()
            };
            let (now, later) = rest.split_at(run.min(rest.len()));
            rest = later;
            let Some(qb) = self.queues.get(q) else {
                continue;
            };
            let mut st = lock(&qb.rx);
            for frame in now {
                self.deliver_one(&v, &mut st, frame);
            }
            self.rx_drain(&v, &mut st, q);
            self.rx_flags(&v, qb, &st);
            drop(st);
            // The guest may have posted buffers for queued frames meanwhile.
            if qb.rx_work.load(Ordering::SeqCst) {
                qb.wake_worker();
            }
        }
    }

    /// One frame into the guest's buffers, or into the queue (rx lock held).
    fn deliver_one(&self, v: &VifShared, st: &mut RxSide, frame: &Frame) {
        let resolved;
        let frames: &[Frame] = if self.takes_as_is(frame) {
            std::slice::from_ref(frame)
        } else {
            resolved = frame.resolve_offloads();
            &resolved
        };
        for f in frames {
            let fits = f.len() <= xennet_front::MAX_FRAME
                && (self.fe.flags.contains(FrontendFlags::SG) || f.len() <= PAGE_SIZE);
            if !fits {
                add(&v.counters.rx_dropped, 1);
                continue;
            }
            // Straight into the guest's buffers when nothing waits before it.
            if st.queue.is_empty() {
                match self.rx_write(v, st, f) {
                    RxWrite::Done | RxWrite::SourceFailed => continue,
                    RxWrite::NoBuffers => {}
                }
            }
            let cap_ok = st.queue.len() < v.cfg.rx_queue_frames
                && st.queued_bytes + f.len() <= v.cfg.rx_queue_bytes;
            if !(self.fe.flags.contains(FrontendFlags::RX_NOTIFY) && cap_ok) {
                // Without feature-rx-notify the guest would never tell us about new
                // buffers, so nothing is queued (netif.h).
                add(&v.counters.rx_dropped, 1);
                continue;
            }
            // A queued frame outlives the sender's grants: keep a host copy.
            if let Some(h) = f.to_host() {
                st.queued_bytes += h.len();
                st.queue.push_back(h);
            }
        }
    }

    /// The worker's rx work: queued frames into buffers the guest posted. Whether
    /// any frame went out.
    fn rx_round(&self, q: usize) -> bool {
        let Some(qb) = self.queues.get(q) else {
            return false;
        };
        let Some(v) = self.vif.upgrade() else {
            return false;
        };
        if self.failed.load(Ordering::SeqCst) {
            return false;
        }
        let mut st = lock(&qb.rx);
        if let Some(h) = hostile_rx(&v) {
            return self.rx_hostile(&v, &mut st, q, h);
        }
        let before = st.queue.len();
        self.rx_drain(&v, &mut st, q);
        let after = st.queue.len();
        self.rx_flags(&v, qb, &st);
        after < before
    }

    /// Takes every rx buffer the guest posted and answers it the way hostile
    /// mode `h` does (docs/hostile-mode.md): garbage responses, or none at all
    /// (`net.rx_buffers_hoarded`). Arms `req_event` once the ring is empty, so that the
    /// guest's next buffers wake the worker. Whether any buffer was taken.
    fn rx_hostile(&self, v: &VifShared, st: &mut RxSide, q: usize, h: NetHostile) -> bool {
        let mut took = false;
        if st.frozen {
            return false;
        }
        loop {
            match st.ring.poll_request() {
                Ok(Some(r)) => {
                    took = true;
                    let rsp = match h {
                        NetHostile::RxPastPage => RxResponse {
                            id: r.id,
                            offset: HOSTILE_RX_OFFSET,
                            flags: 0,
                            status: HOSTILE_RX_LEN,
                        },
                        NetHostile::RxEndlessChain => RxResponse {
                            id: r.id,
                            offset: 0,
                            flags: netif::NETRXF_MORE_DATA,
                            status: HOSTILE_CHAIN_LEN,
                        },
                        NetHostile::RxRspProdOverrun => {
                            // One real-looking answer, then an impossible index.
                            let rsp = RxResponse {
                                id: r.id,
                                offset: 0,
                                flags: 0,
                                status: HOSTILE_CHAIN_LEN,
                            };
                            self.push_rx(st, &rsp);
                            let _ = st.ring.push_responses_and_check_notify();
                            overrun_rsp_prod(st.ring.mem(), st.ring.rsp_prod_pvt(), st.ring.size());
                            st.frozen = true;
                            break;
                        }
                        // Hoarded: kept (a ring's worth at most), never answered.
                        _ => {
                            st.stash.push_back(r);
                            continue;
                        }
                    };
                    self.push_rx(st, &rsp);
                }
                Ok(None) => match st.ring.final_check_for_requests() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        self.fail(format!("rx ring: {e}"));
                        break;
                    }
                },
                Err(e) => {
                    self.fail(format!("rx ring: {e}"));
                    break;
                }
            }
        }
        // (Once frozen, publishing again would overwrite the impossible index.)
        if st.frozen || st.ring.push_responses_and_check_notify() {
            if let Some(p) = self
                .queues
                .get(q)
                .and_then(|qb| qb.rx_port.get().or_else(|| qb.tx_port.get()))
            {
                add(&v.counters.notifications, 1);
                p.notify();
            }
        }
        took
    }

    /// Writes queued frames while buffers last; arms `req_event` when it runs out
    /// (and re-checks, so buffers posted meanwhile are used now). Pushes the
    /// responses written so far and notifies if the frontend asked for it.
    fn rx_drain(&self, v: &VifShared, st: &mut RxSide, q: usize) {
        loop {
            while let Some(f) = st.queue.pop_front() {
                if self.rx_write(v, st, &f) == RxWrite::NoBuffers {
                    st.queue.push_front(f);
                    break;
                }
                st.queued_bytes = st.queued_bytes.saturating_sub(f.len());
            }
            if st.queue.is_empty() || self.failed.load(Ordering::SeqCst) {
                break;
            }
            match st.ring.final_check_for_requests() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.fail(format!("rx ring: {e}"));
                    break;
                }
            }
        }
        if std::mem::take(&mut st.wrote) {
            self.rx_progressed(q);
        }
        if st.ring.push_responses_and_check_notify() {
            if let Some(qb) = self.queues.get(q) {
                if let Some(p) = qb.rx_port.get().or_else(|| qb.tx_port.get()) {
                    add(&v.counters.notifications, 1);
                    p.notify();
                }
            }
        }
    }

    /// Takes buffers for one frame from the guest's posted requests, copies the
    /// frame in and answers them. A frame whose sender's pages cannot be read
    /// consumes nothing (the requests stay for the next frame: one guest cannot
    /// make another's buffers fail).
    fn rx_write(&self, v: &VifShared, st: &mut RxSide, f: &Frame) -> RxWrite {
        let len = f.len();
        let chunks = len.div_ceil(PAGE_SIZE).max(1);
        let extra = usize::from(f.gso.is_some());
        let need = chunks + extra;
        if need == 1 {
            return self.rx_write_one(v, st, f);
        }
        match st.take_slots(need) {
            Ok(true) => {}
            Ok(false) => return RxWrite::NoBuffers,
            Err(e) => {
                self.fail(format!("rx ring: {e}"));
                return RxWrite::NoBuffers;
            }
        }
        // The frame's requests: data chunk 0, the extra (if any), data chunks 1...
        let mut reqs = [RxRequest::default(); MAX_RX_SLOTS];
        let mut n = 0usize;
        for (slot, r) in reqs.iter_mut().zip(st.stash.iter().take(need)) {
            *slot = *r;
            n += 1;
        }
        let reqs = &reqs[..n];
        let data_req = |k: usize| reqs.get(if k == 0 { 0 } else { k + extra });
        let mut ok = n == need;
        for k in 0..chunks {
            let s = k * PAGE_SIZE;
            let Some(r) = data_req(k) else {
                continue;
            };
            match self.copy_chunk(f, s, (s + PAGE_SIZE).min(len), GrantRef(r.gref)) {
                Ok(()) => {}
                Err(CopyFault::Source(_)) => {
                    if let Some(t) = &f.tail {
                        t.mark_failed();
                    }
                    return RxWrite::SourceFailed;
                }
                Err(CopyFault::Dest(_)) => ok = false,
            }
        }
        st.stash.drain(..n);
        self.rx_answer(v, st, f, reqs, extra, ok);
        RxWrite::Done
    }

    /// Answers a frame's requests once its copy is done: the frame's responses and
    /// counts if every chunk arrived (`ok`), else (the guest posted a bad grant)
    /// an error in every slot of the frame.
    fn rx_answer(
        &self,
        v: &VifShared,
        st: &mut RxSide,
        f: &Frame,
        reqs: &[RxRequest],
        extra: usize,
        ok: bool,
    ) {
        if ok {
            self.respond_rx(st, f, reqs, extra);
            add(&v.counters.rx_frames, 1);
            add(&v.counters.rx_bytes, f.len() as u64);
            st.wrote = true;
        } else {
            for r in reqs {
                self.push_rx(
                    st,
                    &RxResponse {
                        id: r.id,
                        offset: 0,
                        flags: 0,
                        status: netif::RSP_ERROR,
                    },
                );
            }
            add(&v.counters.rx_errors, 1);
        }
    }

    /// [`Connection::rx_write`] for a frame in one buffer without extras (most
    /// frames): the same copy, answers and counts, with the request taken
    /// straight from the ring when none is stashed, and stashed only if the
    /// sender's pages cannot be read (so, as there, nothing is consumed then).
    fn rx_write_one(&self, v: &VifShared, st: &mut RxSide, f: &Frame) -> RxWrite {
        let len = f.len();
        let (r, stashed) = match st.stash.front() {
            Some(&r) => (r, true),
            None => match st.ring.poll_request() {
                Ok(Some(r)) => (r, false),
                Ok(None) => return RxWrite::NoBuffers,
                Err(e) => {
                    self.fail(format!("rx ring: {e}"));
                    return RxWrite::NoBuffers;
                }
            },
        };
        // (A frame all in host memory is one copy: `copy_chunk`'s first case.)
        let copied = if f.tail.is_none() {
            self.peer
                .copy_in(GrantRef(r.gref), 0, &f.data)
                .map_err(CopyFault::Dest)
        } else {
            self.copy_chunk(f, 0, len, GrantRef(r.gref))
        };
        let ok = match copied {
            Ok(()) => true,
            Err(CopyFault::Source(_)) => {
                if let Some(t) = &f.tail {
                    t.mark_failed();
                }
                if !stashed {
                    st.stash.push_back(r);
                }
                return RxWrite::SourceFailed;
            }
            Err(CopyFault::Dest(_)) => false,
        };
        if stashed {
            st.stash.pop_front();
        }
        if ok {
            // `respond_rx` for one slot without extras: one response.
            let rsp = RxResponse {
                id: r.id,
                offset: 0,
                flags: rx_first_flags(f),
                status: len as i16,
            };
            self.push_rx(st, &rsp);
            add(&v.counters.rx_frames, 1);
            add(&v.counters.rx_bytes, len as u64);
            st.wrote = true;
        } else {
            self.rx_answer(v, st, f, std::slice::from_ref(&r), 0, ok);
        }
        RxWrite::Done
    }

    /// Copies bytes `s..e` of `f` into the guest's page `gref` at offset 0: the
    /// headers from host memory, the rest (if the frame has a tail) grant to
    /// grant from the sender's pages.
    fn copy_chunk(&self, f: &Frame, s: usize, e: usize, gref: GrantRef) -> Result<(), CopyFault> {
        let hl = f.data.len();
        let head = f.data.get(s.min(hl)..e.min(hl)).unwrap_or_default();
        let Some(t) = f.tail.as_ref().filter(|_| e > hl) else {
            return self.peer.copy_in(gref, 0, head).map_err(CopyFault::Dest);
        };
        // The tail's bytes `at..end` land at `dst` onwards (the headers before them).
        let (mut at, end) = (s.max(hl) - hl, e - hl);
        let mut dst = 0usize;
        let mut head = head;
        let mut pos = 0usize;
        for p in t.pieces() {
            let (ps, pe) = (pos, pos + usize::from(p.len));
            pos = pe;
            if pe <= at {
                continue;
            }
            if ps >= end {
                break;
            }
            let n = pe.min(end) - at;
            let from = GrantOffset {
                gref: p.gref,
                offset: p.offset + (at - ps) as u16,
            };
            let to = GrantOffset {
                gref,
                offset: dst as u16,
            };
            t.peer.copy_to_after(from, &self.peer, to, head, n)?;
            dst += head.len() + n;
            at += n;
            head = &[];
        }
        if !head.is_empty() {
            self.peer.copy_in(gref, 0, head).map_err(CopyFault::Dest)?;
        }
        Ok(())
    }

    /// Answers a written frame's requests: sizes, flags, the GSO extra.
    fn respond_rx(&self, st: &mut RxSide, f: &Frame, reqs: &[RxRequest], extra: usize) {
        let len = f.len();
        let chunks = len.div_ceil(PAGE_SIZE).max(1);
        let flags0 = rx_first_flags(f);
        for k in 0..chunks {
            let Some(r) = reqs.get(if k == 0 { 0 } else { k + extra }) else {
                continue;
            };
            let s = k * PAGE_SIZE;
            let n = (len - s.min(len)).min(PAGE_SIZE);
            let mut flags = if k == 0 { flags0 } else { 0 };
            if k + 1 < chunks {
                flags |= netif::NETRXF_MORE_DATA;
            }
            if k == 0 && extra == 1 {
                flags |= netif::NETRXF_EXTRA_INFO;
            }
            let rsp = RxResponse {
                id: r.id,
                offset: 0,
                flags,
                status: n as i16,
            };
            self.push_rx(st, &rsp);
            if k == 0 {
                if let Some(g) = f.gso {
                    self.push_rx(st, &RxResponse::from(ExtraInfo::gso(g.mss, g.ty, 0, 0)));
                }
            }
        }
    }

    fn push_rx(&self, st: &mut RxSide, rsp: &RxResponse) {
        if let Err(e) = st.ring.push_response(rsp) {
            self.fail(format!("rx ring: {e}"));
        }
    }
}

/// The checksum flags of a frame's first rx response.
fn rx_first_flags(f: &Frame) -> u16 {
    if f.csum_blank {
        netif::NETRXF_CSUM_BLANK | netif::NETRXF_DATA_VALIDATED
    } else if f.data_validated {
        netif::NETRXF_DATA_VALIDATED
    } else {
        0
    }
}

impl RxSide {
    /// Makes sure `need` posted requests are at hand (in `stash`). `Ok(false)`:
    /// the guest has not posted that many yet.
    fn take_slots(&mut self, need: usize) -> Result<bool, RingError> {
        while self.stash.len() < need {
            match self.ring.poll_request()? {
                Some(r) => self.stash.push_back(r),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// What the frontend's `mac` node says: the guest's MAC, or a hostile mode's
/// garbage.
fn frontend_mac(mac: Mac, hostile: Option<NetHostile>) -> String {
    match hostile {
        Some(NetHostile::MacNotUnicast) => "ff:ff:ff:ff:ff:ff".to_string(),
        Some(NetHostile::MacMalformed) => "00:16:3e:zz:00:01".to_string(),
        _ => mac.to_string(),
    }
}

/// The id hostile mode `net.tx_id_out_of_range` answers with: outside any tx ring.
const HOSTILE_TX_ID: u16 = 0xffff;
/// `net.rx_past_page`: an offset and a length that end past the page.
const HOSTILE_RX_OFFSET: u16 = 4000;
const HOSTILE_RX_LEN: i16 = 200;
/// `net.rx_endless_chain`: the length of every slot of the endless chain.
const HOSTILE_CHAIN_LEN: i16 = 64;

/// Answers every slot of a tx chain: data slots with `status`, extras with NULL
/// (data slots with [`HOSTILE_TX_ID`] under `net.tx_id_out_of_range`).
fn respond_tx(
    ring: &mut BackRing<TxRequest, TxResponse, MappedRing>,
    reqs: &[TxRequest],
    status: i16,
    bad_id: bool,
) -> Result<(), RingError> {
    let Some(first) = reqs.first() else {
        return Ok(());
    };
    let id = |r: &TxRequest| if bad_id { HOSTILE_TX_ID } else { r.id };
    ring.push_response(&TxResponse {
        id: id(first),
        status,
    })?;
    let mut i = 1;
    if first.flags & netif::NETTXF_EXTRA_INFO != 0 {
        while let Some(x) = reqs.get(i) {
            i += 1;
            ring.push_response(&TxResponse {
                id: 0,
                status: netif::RSP_NULL,
            })?;
            if x.as_extra().flags & EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    for r in reqs.iter().skip(i) {
        ring.push_response(&TxResponse { id: id(r), status })?;
    }
    Ok(())
}
