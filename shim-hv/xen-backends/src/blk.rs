//! The block backend (blkback): one per virtual disk, serving a file or a block
//! device to a guest's blkfront.
//!
//! ```text
//!  guest blkfront                         BlkBackend (dom0, this process)
//!  ring ──event──▶ handler (on the guest's thread): idle queue, one small read
//!                  whose data is cached: served right here (preadv2 RWF_NOWAIT),
//!                  else kick ──▶ blkio pool worker: poll_request (copied once)
//!                                      validate (op, segments, range, mode)
//!                                      map grants (read-only for writes; persistent
//!                                      grants cached) · preadv/pwritev into/out of
//!                                      the guest pages · fdatasync · fallocate
//!       ◀──event── push_responses_and_check_notify (notify only when asked)
//!                  ring empty: poll up to 200 µs (pausing, then yielding) while
//!                  no other queue waits, then final_check_for_requests, then
//!                  idle until kicked
//!  control loop (`xb-ctl-vbd`): xenstore handshake (features, rings, event
//!                  channels, reconnects)
//! ```
//!
//! **Threads.** No thread is a disk's own: every disk's handshake runs on the
//! `vbd` control loop ([`xb::spawn_control`]) and every queue is served by the
//! `blkio` pool, a few workers for all disks (as many as cores, 2 to 8). A
//! worker serves a queue for at most 64 requests before the other waiting
//! queues get their turn, and never waits on the frontend, so a guest that
//! floods or stalls its ring does not hold the other disks up
//! (docs/backend-threads.md). An idle queue's one small read (at most 16 KiB)
//! whose data is in the page cache is answered on the notifying thread instead
//! (the guest's own, inside its `EVTCHNOP_send`): no hand-off and no wake-up at
//! queue depth 1 ([`BlkStats::inline`]); a read that would wait for the disk is
//! left to a worker. Notifications after which a worker's run finds no request
//! are spurious: the second and later ones in a row hold the queue back, 1 ms
//! doubling up to 1 s, so a guest that storms its port costs a few runs a
//! second (late EOI on the host side, docs/hostile-input.md E1;
//! [`BlkStats::spurious_events`]).
//!
//! **Multi-queue** (Linux's layout): the backend offers `multi-queue-max-queues`;
//! a frontend asking for `multi-queue-num-queues` = N > 1 puts each queue's ring
//! and event channel under `queue-<i>/` (`ring-ref` or `ring-ref<j>`, with the
//! top-level `ring-page-order`, and `event-channel`); without the key (or with 1)
//! the classic top-level keys are read. Every queue gets its own ring,
//! event channel, persistent grants and indirect-page cache (one per ring, as
//! Linux's `xen_blkif_ring`); 0 queues or more than offered fail the connection.
//!
//! Keys follow Linux's blkback: `feature-max-indirect-segments`,
//! `max-ring-page-order` and `multi-queue-max-queues` before `InitWait`; `feature-flush-cache`, `feature-barrier`,
//! `feature-discard` (+ `discard-granularity`, `discard-alignment`, `discard-secure`),
//! `feature-persistent`, `sectors`, `info`, `sector-size`, `physical-sector-size` when
//! connecting. A read-only disk (`mode = "r"`) reports `info = VDISK_READONLY`
//! and offers no flush, barrier or discard (as Xen 4.17 + Linux do).
//!
//! **Hostile guests fail themselves only.** A request that is malformed (no or too
//! many segments, `first_sect > last_sect`, `last_sect > 7`, a bad indirect page),
//! out of range, or a write to a read-only disk is answered `BLKIF_RSP_ERROR`; an
//! unknown operation `BLKIF_RSP_EOPNOTSUPP`. Ring overruns (a producer index the
//! frontend cannot legally have written) disconnect this disk (`Closing` and an
//! `error` node). Grants go through the model's checks; a write request's pages are
//! mapped read-only, so a read-only grant is enough (docs/hostile-input.md row 10).
//!
//! A disk image whose size is not a multiple of the sector size is served rounded
//! down, with a warning (row 45).
//!
//! **Targets.** A `file:` target must be a regular file, a `phy:` target a block
//! device or a regular file; anything else (a directory, FIFO, character device
//! such as `/dev/zero`, socket) is refused with [`Error::WrongType`] before
//! anything is created, and opening never blocks (`O_NONBLOCK`: a FIFO would wait
//! for a writer). An image truncated under a running guest (without
//! [`BlkBackend::resize`]) answers I/O past its new end with `BLKIF_RSP_ERROR`:
//! writes are checked against the file's current size (a write there would grow
//! it again), and a short read is an error (docs/hostile-input.md H3, D2).
//!
//! # Example
//!
//! ```
//! use xen_backends::blk::{BlkBackend, BlkConfig, Target};
//! use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
//!
//! let dir = std::env::temp_dir().join(format!("blk-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let img = dir.join("disk.img");
//! std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
//!
//! let hv = Hypervisor::new(HypervisorConfig::default());
//! let dom = hv.create_domain(DomainSpec::new("doc", 32)).unwrap();
//! let cfg = BlkConfig::new(Target::File(img.clone()), 51712, "xvda");
//! let disk = BlkBackend::start(&hv, dom.id(), cfg).unwrap();
//! assert_eq!(disk.sectors(), 2048);
//! assert_eq!(disk.backend_path(), format!("/local/domain/0/backend/vbd/{}/51712", dom.id().0));
//! // (the guest now runs xbd_front::Device on device/vbd/51712)
//! disk.destroy();
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hypercall::abi::blkif::{self, Request, RequestSegment, Response};
use hypercall::abi::ring as ring_abi;
use hypercall::abi::xenbus::XenbusState;
use hypercall::keyflags;
use hypercall::ring::BackRing;
use hypercall::shmem::wmb;
use hypercall::{DomId, GrantRef, Port, SharedMem};

use super::hostile::BlkHostile;
use super::pool::{EventCounters, Pool, Sched, Served, Turn};
use super::xenbus::{self as xb, BoundPort, DeviceSpec, MappedRing, XenbusBackend};
use xen_model::mem::{preadv_into, preadv_into_nowait, pwritev_from, GuestMemory};
use xen_model::{GrantMapping, Hypervisor};

/// Most indirect segments we offer and accept (Linux: `MAX_INDIRECT_SEGMENTS` 256).
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;
/// Most persistent grants kept mapped per queue (beyond that, grants are mapped per
/// request).
pub const MAX_PERSISTENT_GRANTS: usize = 16384;
/// How long a pool worker keeps polling a queue's ring after it ran out of requests,
/// before it re-arms `req_event` and sleeps (NAPI-style, as netback's
/// `POLL_SPIN`): a frontend that answers quickly (depth 1) then needs no
/// notification for its next request. Longer than netback's: a frontend copying a
/// 1 MiB read out (or a 1 MiB write in) takes tens of microseconds before its next
/// request.
const POLL_SPIN: Duration = Duration::from_micros(200);
/// The first part of [`POLL_SPIN`], polled with CPU pauses only (no yield).
const POLL_PAUSE: Duration = Duration::from_micros(5);

/// What the disk is backed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `file:` a disk image.
    File(PathBuf),
    /// `phy:` a block device (or any path opened directly).
    Phy(PathBuf),
}

impl Target {
    fn path(&self) -> &PathBuf {
        match self {
            Target::File(p) | Target::Phy(p) => p,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Target::File(_) => "file",
            Target::Phy(_) => "phy",
        }
    }
}

/// Most queues offered by default (`multi-queue-max-queues`; Linux offers one per
/// dom0 CPU).
pub const DEFAULT_MAX_QUEUES: u32 = 4;
/// Most queues a frontend may ask for, whatever the offer says.
pub const MAX_QUEUES: u32 = 16;

pub use hypercall::abi::blkif::BackendFlags;

/// Which features the backend offers (all it has on by default; tests switch them
/// off).
///
/// ```
/// use xen_backends::blk::{BackendFlags, BlkOffer};
///
/// let offer = BlkOffer {
///     flags: BlkOffer::default().flags - BackendFlags::PERSISTENT,
///     ..BlkOffer::default()
/// };
/// assert!(offer.flags.contains(BackendFlags::FLUSH_CACHE));
/// assert!(!offer.flags.contains(BackendFlags::PERSISTENT));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkOffer {
    /// `multi-queue-max-queues` (at most [`MAX_QUEUES`]; 0: the key is not
    /// written, and only the classic single-ring layout is accepted).
    pub max_queues: u32,
    /// `max-ring-page-order` (at most 4).
    pub max_ring_page_order: u32,
    /// `feature-max-indirect-segments` (0: no indirect descriptors).
    pub max_indirect_segments: u32,
    /// The boolean keys written as `"1"` (the others as `"0"`; a read-only disk
    /// offers no flush, barrier or discard). [`BackendFlags::DISCARD_SECURE`] is
    /// refused when the disk is set up: a discard punches a hole, which is no
    /// secure erase.
    pub flags: BackendFlags,
}

impl Default for BlkOffer {
    fn default() -> Self {
        BlkOffer {
            max_queues: DEFAULT_MAX_QUEUES,
            max_ring_page_order: xb::MAX_RING_ORDER,
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
            flags: BackendFlags::all() - BackendFlags::DISCARD_SECURE,
        }
    }
}

/// One disk.
#[derive(Clone, Debug)]
pub struct BlkConfig {
    /// The image or device.
    pub target: Target,
    /// The virtual device number (`device/vbd/<devid>`).
    pub devid: u32,
    /// The name as the config wrote it (`dev` node), e.g. `xvda`.
    pub dev_name: String,
    /// Writable (`w`) or read-only (`r`).
    pub writable: bool,
    /// A CD-ROM (`device-type = cdrom`, read-only).
    pub cdrom: bool,
    /// Logical sector size: 512 or 4096.
    pub sector_size: u32,
    /// Open the target with `O_DIRECT` (falls back to buffered I/O where the
    /// alignment does not allow it).
    pub direct: bool,
    /// Features offered.
    pub offer: BlkOffer,
    /// Not in the I/O pool: requests are served only when the owner calls
    /// [`BlkBackend::step`] (single-threaded, deterministic runs such as the cost
    /// bench). The handshake still runs on the control loop.
    pub stepped: bool,
    /// Misbehave on purpose (docs/hostile-mode.md); `None`: a correct backend.
    pub hostile: Option<BlkHostile>,
}

impl BlkConfig {
    /// A writable disk with 512-byte sectors and every feature offered.
    pub fn new(target: Target, devid: u32, dev_name: &str) -> Self {
        BlkConfig {
            target,
            devid,
            dev_name: dev_name.to_string(),
            writable: true,
            cdrom: false,
            sector_size: 512,
            direct: false,
            offer: BlkOffer::default(),
            stepped: false,
            hostile: None,
        }
    }
}

/// Why a disk could not be set up or connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target could not be opened or sized.
    #[error("{}: {err}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        err: std::io::Error,
    },
    /// The configuration is unusable (sector size, empty image).
    #[error("bad disk configuration: {0}")]
    BadConfig(String),
    /// The target is not a file of a usable type (a directory, FIFO, character
    /// device or socket; `file:` also refuses a block device).
    #[error("{}: {found}, not {expected}", .path.display())]
    WrongType {
        /// The path.
        path: PathBuf,
        /// What it is, e.g. "a FIFO".
        found: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// The xenbus side failed.
    #[error("{0}")]
    Xenbus(xb::Error),
    /// The frontend asked for something we do not do.
    #[error("unsupported frontend request: {0}")]
    Unsupported(String),
}

impl From<xb::Error> for Error {
    fn from(e: xb::Error) -> Self {
        Error::Xenbus(e)
    }
}

/// Counters of one disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Ring requests handled.
    pub requests: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Notifications sent to the frontend.
    pub notifications_sent: u64,
    /// Notifications received from the frontend.
    pub notifications_received: u64,
    /// Connections made.
    pub connects: u64,
    /// Grant mappings made (persistent ones count once).
    pub grant_maps: u64,
    /// Requests answered on the frontend's own thread when it notified (small
    /// reads found in the page cache; counted in `requests` too).
    pub inline: u64,
    /// Runs of a `blkio` worker on this disk's queues (each serves until the
    /// ring is dry, or for at most 64 requests).
    pub runs: u64,
    /// Notifications after which a worker's run found no request on the ring
    /// and answered nothing: late EOI on the host side (docs/hostile-input.md
    /// E1).
    pub spurious_events: u64,
    /// Times a queue was held back after spurious notifications in a row (1 ms,
    /// doubling up to 1 s; its notifications meanwhile are served when the delay
    /// ends).
    pub backoffs: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    connects: AtomicU64,
    maps: AtomicU64,
    inline: AtomicU64,
    /// The queues' runs and spurious notifications (the pool counts them).
    events: Arc<EventCounters>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The opened disk.
struct Disk {
    file: File,
    /// A buffered fd used when `O_DIRECT` refuses an unaligned transfer.
    fallback: Option<File>,
    sectors: AtomicU64,
    sector_size: u32,
    writable: bool,
    cdrom: bool,
    /// A regular file (whose size can change under us), not a block device.
    regular: bool,
}

impl Disk {
    fn bytes(&self) -> u64 {
        self.sectors.load(Ordering::Relaxed) * u64::from(self.sector_size)
    }
}

/// What the disk's threads share.
struct Shared {
    hv: Arc<Hypervisor>,
    frontend: DomId,
    cfg: BlkConfig,
    disk: Arc<Disk>,
    counters: Counters,
    conn: Mutex<Option<Conn>>,
    /// Set by the I/O path on a fatal ring error ([`Shared::set_fatal`]); the
    /// control loop disconnects.
    fatal: Mutex<Option<String>>,
    /// Wakes the device on the control loop (stop, a fatal error).
    control: Mutex<Option<xb::ControlWaker>>,
}

impl Shared {
    /// Records a fatal data-path error and wakes the control loop.
    fn set_fatal(&self, why: String) {
        *lock(&self.fatal) = Some(why);
        self.wake_control();
    }

    fn wake_control(&self) {
        if let Some(w) = lock(&self.control).as_ref() {
            w.wake();
        }
    }
}

/// One live connection: its queues, served by the `blkio` pool (or stepped).
struct Conn {
    /// The queues served by the pool.
    pooled: Vec<Arc<BlkQueue>>,
    /// The I/O state of each queue of a stepped backend ([`BlkConfig::stepped`]),
    /// served by [`BlkBackend::step`] instead of the pool.
    stepped: Vec<IoQueue>,
}

/// Every disk's queues are served by this pool: at most a few `blkio` threads in
/// all (see the module docs, "Threads").
static BLK_POOL: Pool = Pool::new("blkio", TURN_BUDGET, POLL_SPIN, POLL_PAUSE);

/// Requests a queue is served in one run of a pool worker before the other
/// queues get their turn.
const TURN_BUDGET: usize = 64;

/// One queue in [`BLK_POOL`]: its I/O state while connected.
struct BlkQueue {
    sched: Sched,
    /// `None` before the connection is complete and after it ended.
    io: Mutex<Option<IoQueue>>,
}

impl Served for BlkQueue {
    fn turn(&self, budget: usize) -> Turn {
        let mut g = lock(&self.io);
        let Some(io) = g.as_mut() else {
            return Turn::Off;
        };
        // Frozen: left alone on purpose (a hostile mode) until the end.
        if io.frozen || io.failed {
            return Turn::Off;
        }
        match io.serve(budget) {
            Ok(n) => Turn::Did(n),
            Err(()) => {
                io.failed = true;
                Turn::Off
            }
        }
    }

    fn rearm(&self) -> bool {
        let mut g = lock(&self.io);
        let Some(io) = g.as_mut() else {
            return false;
        };
        if io.frozen || io.failed {
            return false;
        }
        io.rearm()
    }

    fn sched(&self) -> &Sched {
        &self.sched
    }

    fn turn_inline(&self) -> Option<bool> {
        let mut g = lock(&self.io);
        let io = g.as_mut().filter(|io| !io.frozen && !io.failed)?;
        // Served: re-armed under the same lock (one visit per request).
        io.serve_inline().then(|| io.rearm())
    }
}

/// A read of at most this many segments (16 KiB) may be served on the
/// frontend's own thread, when it notifies ([`IoQueue::serve_inline`]).
const INLINE_SEGMENTS: usize = 4;

/// A running block backend for one disk of one guest.
pub struct BlkBackend {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// The device on the `vbd` control loop.
    control: Option<xb::ControlHandle>,
    backend_path: String,
}

impl fmt::Debug for BlkBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlkBackend")
            .field("backend", &self.backend_path)
            .finish_non_exhaustive()
    }
}

/// Checks that `ft` is what `target` may be: `file:` a regular file, `phy:` a
/// block device or a regular file.
fn check_type(target: &Target, ft: std::fs::FileType) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let (ok, expected) = match target {
        Target::File(_) => (ft.is_file(), "a regular file (file:)"),
        Target::Phy(_) => (
            ft.is_file() || ft.is_block_device(),
            "a block device or regular file (phy:)",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::WrongType {
            path: target.path().clone(),
            found: crate::file_type::name(ft),
            expected,
        })
    }
}

/// Opens the target without ever blocking (docs/hostile-input.md H3: opening a FIFO for
/// reading waits for a writer): the path's type is checked first, then it is opened
/// with `O_NONBLOCK`, the opened file's type checked again (the path may have been
/// replaced meanwhile), and the descriptor switched back to blocking I/O.
fn open_target(target: &Target, opts: &OpenOptions, direct: bool) -> Result<File, Error> {
    let path = target.path();
    let io = |err| Error::Io {
        path: path.clone(),
        err,
    };
    match std::fs::metadata(path) {
        Ok(m) => check_type(target, m.file_type())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "dangling symbolic link",
                )));
            }
            return Err(io(e));
        }
        Err(e) => return Err(io(e)),
    }
    let mut o = opts.clone();
    o.custom_flags(libc::O_NONBLOCK | if direct { libc::O_DIRECT } else { 0 });
    let file = o.open(path).map_err(io)?;
    check_type(target, file.metadata().map_err(io)?.file_type())?;
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(|e| io(e.into()))?;
    let flags = OFlag::from_bits_retain(flags) - OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(flags)).map_err(|e| io(e.into()))?;
    Ok(file)
}

fn open_disk(cfg: &BlkConfig) -> Result<Disk, Error> {
    let path = cfg.target.path().clone();
    let io = |err| Error::Io {
        path: path.clone(),
        err,
    };
    if cfg.sector_size != 512 && cfg.sector_size != 4096 {
        return Err(Error::BadConfig(format!(
            "sector size {} (512 or 4096)",
            cfg.sector_size
        )));
    }
    if cfg.offer.flags.contains(BackendFlags::DISCARD_SECURE) {
        return Err(Error::BadConfig(
            "discard-secure cannot be offered: a discard punches a hole, which is no \
             secure erase"
                .to_string(),
        ));
    }
    let writable = cfg.writable && !cfg.cdrom;
    let mut opts = OpenOptions::new();
    opts.read(true).write(writable);
    let file = open_target(&cfg.target, &opts, cfg.direct)?;
    let fallback = if cfg.direct {
        Some(open_target(&cfg.target, &opts, false)?)
    } else {
        None
    };
    let meta = file.metadata().map_err(io)?;
    // Block devices report 0 in metadata; their end is where a seek lands.
    let size = if meta.is_file() {
        meta.len()
    } else {
        (&file).seek(SeekFrom::End(0)).map_err(io)?
    };
    let ss = u64::from(cfg.sector_size);
    if size % ss != 0 {
        eprintln!(
            "warning: {}: size {size} is not a multiple of the sector size {ss}; \
             the last {} bytes are not used",
            path.display(),
            size % ss
        );
    }
    Ok(Disk {
        file,
        fallback,
        sectors: AtomicU64::new(size / ss),
        sector_size: cfg.sector_size,
        writable,
        cdrom: cfg.cdrom,
        regular: meta.is_file(),
    })
}

impl BlkBackend {
    /// Opens the target, creates the device's xenstore nodes (as libxl does),
    /// advertises the features and waits for the frontend on the `vbd` control
    /// loop.
    pub fn start(hv: &Arc<Hypervisor>, frontend: DomId, cfg: BlkConfig) -> Result<Self, Error> {
        let disk = Arc::new(open_disk(&cfg)?);
        let mode = if disk.writable { "w" } else { "r" };
        let spec = DeviceSpec::new("vbd", frontend, cfg.devid)
            .backend("params", cfg.target.path().display())
            .backend("type", cfg.target.kind())
            .backend("mode", mode)
            .backend("dev", &cfg.dev_name)
            .backend("removable", u8::from(cfg.cdrom))
            .backend("bootable", 1)
            .backend("device-type", if cfg.cdrom { "cdrom" } else { "disk" })
            .frontend("virtual-device", cfg.devid)
            .frontend("device-type", if cfg.cdrom { "cdrom" } else { "disk" });
        let mut xbe = XenbusBackend::create(hv, &spec)?;
        let o = cfg.offer;
        let mut probe: Vec<(&str, String)> = vec![(
            "max-ring-page-order",
            o.max_ring_page_order.min(xb::MAX_RING_ORDER).to_string(),
        )];
        if o.max_indirect_segments > 0 {
            probe.push((
                "feature-max-indirect-segments",
                o.max_indirect_segments
                    .min(MAX_INDIRECT_SEGMENTS)
                    .to_string(),
            ));
        }
        if o.max_queues > 0 {
            probe.push((
                "multi-queue-max-queues",
                o.max_queues.min(MAX_QUEUES).to_string(),
            ));
        }
        xbe.write_keys(&probe)?;
        xbe.switch_state(XenbusState::InitWait)?;
        let backend_path = xbe.backend_path().to_string();
        let shared = Arc::new(Shared {
            hv: hv.clone(),
            frontend,
            cfg,
            disk,
            counters: Counters::default(),
            conn: Mutex::new(None),
            fatal: Mutex::new(None),
            control: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let control = xb::spawn_control(
            xbe,
            Box::new(Ctl(shared.clone())),
            Box::new(move || st.load(Ordering::SeqCst)),
        )
        .map_err(|err| Error::Io {
            path: PathBuf::from("thread"),
            err,
        })?;
        Ok(BlkBackend {
            shared,
            stop,
            control: Some(control),
            backend_path,
        })
    }

    /// The backend directory in xenstore.
    pub fn backend_path(&self) -> &str {
        &self.backend_path
    }

    /// Size in logical sectors.
    pub fn sectors(&self) -> u64 {
        self.shared.disk.sectors.load(Ordering::Relaxed)
    }

    /// Whether a frontend is connected.
    pub fn connected(&self) -> bool {
        lock(&self.shared.conn).is_some()
    }

    /// Waits (polling) until a frontend is connected.
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

    /// Counters.
    pub fn stats(&self) -> BlkStats {
        let c = &self.shared.counters;
        BlkStats {
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            notifications_sent: c.sent.load(Ordering::Relaxed),
            notifications_received: c.received.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            inline: c.inline.load(Ordering::Relaxed),
            grant_maps: c.maps.load(Ordering::Relaxed),
            runs: c.events.runs(),
            spurious_events: c.events.spurious(),
            backoffs: c.events.backoffs(),
        }
    }

    /// Serves the requests the frontend published, on the calling thread, and
    /// re-arms the ring's notifications: the data path of a
    /// [`BlkConfig::stepped`] backend (a no-op for one served by the pool, or
    /// while no frontend is connected). Returns how many requests were answered,
    /// or `None` if the connection failed (the control loop reports why and
    /// closes it).
    pub fn step(&self) -> Option<usize> {
        let mut g = lock(&self.shared.conn);
        let Some(c) = g.as_mut() else {
            return Some(0);
        };
        let mut n = 0;
        for io in c.stepped.iter_mut() {
            n += io.step().ok()?;
        }
        Some(n)
    }

    /// Queues of the current connection (0 while none).
    pub fn queues(&self) -> usize {
        lock(&self.shared.conn)
            .as_ref()
            .map_or(0, |c| c.pooled.len().max(c.stepped.len()))
    }

    /// Online resize: re-reads the target's size and publishes the new `sectors`.
    pub fn resize(&self) -> Result<u64, Error> {
        let d = &self.shared.disk;
        let path = self.shared.cfg.target.path().clone();
        let size = (&d.file).seek(SeekFrom::End(0)).map_err(|err| Error::Io {
            path: path.clone(),
            err,
        })?;
        let sectors = size / u64::from(d.sector_size);
        d.sectors.store(sectors, Ordering::Relaxed);
        let xs = self.shared.hv.xenstored().client(0);
        xs.write(
            xenstored::TxId::NONE,
            &format!("{}/sectors", self.backend_path),
            sectors.to_string().as_bytes(),
        )
        .map_err(|e| Error::Xenbus(e.into()))?;
        Ok(sectors)
    }

    /// Disconnects and removes the device's xenstore nodes.
    pub fn destroy(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.shared.wake_control();
        if let Some(c) = self.control.take() {
            c.join();
        }
    }
}

impl Drop for BlkBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The control loop's device half (see [`xb::spawn_control`]).
struct Ctl(Arc<Shared>);

impl xb::Device for Ctl {
    fn connected(&self) -> bool {
        lock(&self.0.conn).is_some()
    }
    fn connect(&self, xbe: &XenbusBackend) -> Result<(), String> {
        connect(&self.0, xbe).map_err(|e| e.to_string())?;
        add(&self.0.counters.connects, 1);
        Ok(())
    }
    fn disconnect(&self, _xbe: &XenbusBackend) {
        disconnect(&self.0);
    }
    fn set_control_waker(&self, waker: xb::ControlWaker) -> bool {
        *lock(&self.0.control) = Some(waker);
        true
    }
    fn take_failure(&self) -> Option<String> {
        lock(&self.0.fatal).take()
    }
}

/// Takes the queues out of the pool (waiting for a turn in progress) and drops
/// them, which unmaps the rings and persistent grants and closes the ports.
fn disconnect(sh: &Arc<Shared>) {
    let conn = lock(&sh.conn).take();
    if let Some(c) = conn {
        for q in &c.pooled {
            let io = lock(&q.io).take();
            drop(io);
            BLK_POOL.unregister();
        }
    }
}

/// Reads the frontend's keys, maps the ring, binds the event channel, starts the
/// queues in the pool and publishes the disk's details.
fn connect(sh: &Arc<Shared>, xbe: &XenbusBackend) -> Result<(), Error> {
    if let Some(p) = xbe.read_frontend("protocol")? {
        let p = String::from_utf8_lossy(&p).into_owned();
        if p != "x86_64-abi" {
            return Err(Error::Unsupported(format!("protocol {p:?}")));
        }
    }
    let o = sh.cfg.offer;
    let max_queues = u64::from(o.max_queues.clamp(1, MAX_QUEUES));
    let nq = match xbe.read_frontend_u64("multi-queue-num-queues")? {
        None => 1,
        Some(n) if (1..=max_queues).contains(&n) => n as usize,
        // Linux blkback: "buggy or malicious guest".
        Some(n) => {
            return Err(Error::Unsupported(format!(
                "{}/multi-queue-num-queues = {n} (valid: 1 to {max_queues})",
                xbe.frontend_path()
            )))
        }
    };
    let persistent = o.flags.contains(BackendFlags::PERSISTENT)
        && xbe.read_frontend_flag("feature-persistent")?;
    let mut ios = Vec::with_capacity(nq);
    let mut pooled = Vec::with_capacity(nq);
    for q in 0..nq {
        // One queue: the classic top-level keys; more: `queue-<q>/`, with the
        // top-level `ring-page-order` (Linux's layout).
        let (refs, evtchn_key) = if nq == 1 {
            (
                xbe.read_ring_refs("", "ring-ref", o.max_ring_page_order)?,
                "event-channel".to_string(),
            )
        } else {
            (
                read_queue_refs(xbe, &format!("queue-{q}/"), o.max_ring_page_order)?,
                format!("queue-{q}/event-channel"),
            )
        };
        let evtchn = xbe.require_frontend_u32(&evtchn_key)?;
        let ring_map = xbe.map_ring(&refs)?;
        let ring = BackRing::<Request, Response, _>::attach(ring_map)
            .map_err(|e| Error::Unsupported(format!("ring of queue {q}: {e}")))?;
        // Until the connection is complete the queue has no I/O state: a kick
        // meanwhile finds it off (and the pool kicks it once it is complete).
        let pq = Arc::new(BlkQueue {
            sched: Sched::new(sh.counters.events.clone()),
            io: Mutex::new(None),
        });
        let served: Arc<dyn Served> = pq.clone();
        let stepped = sh.cfg.stepped;
        let sh2 = sh.clone();
        let port = xbe.bind_evtchn(
            Port(evtchn),
            Arc::new(move || {
                add(&sh2.counters.received, 1);
                if !stepped {
                    BLK_POOL.kick_inline(&served);
                }
            }),
        )?;
        pooled.push(pq);
        ios.push(IoQueue {
            sh: sh.clone(),
            ring,
            port,
            persistent: persistent.then(PersistentGrants::default),
            scratch: Scratch::default(),
            frontend_mem: sh.hv.domain(sh.frontend).map(|d| d.memory().clone()),
            frozen: false,
            failed: false,
            last: None,
            deferred: None,
            // Hostile modes keep their one path; O_DIRECT reads always wait.
            inline: sh.cfg.hostile.is_none() && sh.disk.fallback.is_none(),
        });
    }

    let d = &sh.disk;
    let ro = !d.writable;
    let mut info = blkif::VdiskInfo::empty();
    info.set(
        blkif::VdiskInfo::CDROM | blkif::VdiskInfo::REMOVABLE,
        d.cdrom,
    );
    info.set(blkif::VdiskInfo::READONLY, ro);
    // A read-only disk offers no flush, barrier or discard.
    let offered = if ro {
        o.flags & BackendFlags::PERSISTENT
    } else {
        o.flags
    };
    let mut keys: Vec<(&str, String)> = BackendFlags::KEYS
        .iter()
        // discard-secure goes with discard's other parameters (below).
        .filter(|&&(flag, _)| flag != BackendFlags::DISCARD_SECURE)
        .map(|&(flag, key)| (key, keyflags::value(offered.contains(flag)).to_string()))
        .collect();
    keys.extend([
        ("sectors", d.sectors.load(Ordering::Relaxed).to_string()),
        ("info", info.bits().to_string()),
        ("sector-size", d.sector_size.to_string()),
        ("physical-sector-size", d.sector_size.to_string()),
    ]);
    match sh.cfg.hostile {
        Some(BlkHostile::SectorsGarbage) => set_key(&mut keys, "sectors", "12abc"),
        Some(BlkHostile::SectorSizeNotPowerOfTwo) => set_key(&mut keys, "sector-size", "1000"),
        _ => {}
    }
    if offered.contains(BackendFlags::DISCARD) {
        keys.push(("discard-granularity", d.sector_size.to_string()));
        keys.push(("discard-alignment", "0".to_string()));
        let secure = offered.contains(BackendFlags::DISCARD_SECURE);
        keys.push(("discard-secure", keyflags::value(secure).to_string()));
    }

    let conn = if sh.cfg.stepped {
        Conn {
            pooled: Vec::new(),
            stepped: ios,
        }
    } else {
        for (q, io) in pooled.iter().zip(ios) {
            *lock(&q.io) = Some(io);
            BLK_POOL.register();
            // Requests may already be on the ring.
            let served: Arc<dyn Served> = q.clone();
            BLK_POOL.kick(&served);
        }
        Conn {
            pooled,
            stepped: Vec::new(),
        }
    };
    *lock(&sh.conn) = Some(conn);
    xbe.write_keys(&keys)?;
    Ok(())
}

/// Replaces the value of `key` in `keys` (a hostile mode's garbage).
fn set_key(keys: &mut [(&str, String)], key: &str, value: &str) {
    for (k, v) in keys.iter_mut() {
        if *k == key {
            *v = value.to_string();
        }
    }
}

/// Reads queue `prefix`'s ring refs (`<prefix>ring-ref`, or `<prefix>ring-ref<j>`
/// for each page of the top-level `ring-page-order`).
fn read_queue_refs(
    xbe: &XenbusBackend,
    prefix: &str,
    max_order: u32,
) -> Result<Vec<GrantRef>, Error> {
    match xbe.read_frontend_u64("ring-page-order")? {
        None => Ok(vec![GrantRef(
            xbe.require_frontend_u32(&format!("{prefix}ring-ref"))?,
        )]),
        Some(order) if order <= u64::from(max_order.min(xb::MAX_RING_ORDER)) => (0..1usize
            << order)
            .map(|i| {
                xbe.require_frontend_u32(&format!("{prefix}ring-ref{i}"))
                    .map(GrantRef)
                    .map_err(Error::from)
            })
            .collect(),
        Some(order) => Err(Error::Xenbus(xb::Error::BadValue {
            key: format!("{}/ring-page-order", xbe.frontend_path()),
            value: order.to_string(),
        })),
    }
}

/// One queue's I/O: its ring, event channel, persistent grants and caches.
struct IoQueue {
    sh: Arc<Shared>,
    /// The ring, owning its mapping (unmapped when the queue is dropped).
    ring: BackRing<Request, Response, MappedRing>,
    port: BoundPort,
    persistent: Option<PersistentGrants>,
    /// Per-request buffers, reused (no allocation on the I/O path).
    scratch: Scratch,
    /// The frontend's RAM (to join neighbouring pages), if it is an in-process
    /// domain.
    frontend_mem: Option<Arc<GuestMemory>>,
    /// A hostile mode wrote garbage into the ring: it is not served any more.
    frozen: bool,
    /// The ring failed (reported through `fatal`): not served any more.
    failed: bool,
    /// `blk.duplicate_response`: the last response really due.
    last: Option<Response>,
    /// A request taken off the ring by [`IoQueue::serve_inline`] and left to the
    /// pool (not small, or its data not in the page cache): served first.
    deferred: Option<Request>,
    /// Small reads may be served inline (no hostile mode, not `O_DIRECT`, and
    /// `RWF_NOWAIT` not refused yet).
    inline: bool,
}

/// Grants mapped for the whole connection (`feature-persistent`), found by ref
/// through a direct index (refs are small integers; no hashing a guest could
/// make collide), and the cache of the indirect pages among them.
#[derive(Default)]
struct PersistentGrants {
    /// `index[gref]` = position in `maps` + 1, or 0 (refs below [`PERSISTENT_INDEX`]).
    index: Vec<u32>,
    maps: Vec<GrantMapping>,
    /// `maps[i].mem()`, packed for the lookup on every segment. Unbound
    /// (`GrantMapping::mem_unbound`): `maps` only grows while the connection
    /// lives, and [`IoQueue`]'s drop clears these (and so every region taken
    /// from them) before the maps.
    mems: Vec<SharedMem<'static>>,
    /// `cached[i]` = the position in `cache` + 1 of what the indirect page
    /// `maps[i]` held the last time it was used, or 0 (grows with `maps`).
    cached: Vec<u32>,
    /// Indirect pages remembered, at most [`INDIRECT_CACHE`]: each entry is made
    /// once with room for the most descriptors a request may have, then refilled
    /// in place (the same page with other descriptors, or round-robin another
    /// page once all are taken), so a miss allocates nothing.
    cache: Vec<CachedIndirect>,
    /// The entry `cache` gives up next once it is full.
    hand: usize,
}

/// Refs at or above this are never kept persistently (mapped per request instead).
const PERSISTENT_INDEX: u32 = 1 << 16;

impl PersistentGrants {
    /// The persistent mapping of `gref`, made now (writable, as Linux blkback maps
    /// every persistent grant) if there is room and the ref is mappable.
    fn get_or_map(&mut self, sh: &Shared, gref: u32) -> Option<SharedMem<'static>> {
        self.get_or_map_at(sh, gref).map(|(_, m)| m)
    }

    /// [`get_or_map`](Self::get_or_map), with the mapping's position in `maps`.
    fn get_or_map_at(&mut self, sh: &Shared, gref: u32) -> Option<(usize, SharedMem<'static>)> {
        if gref >= PERSISTENT_INDEX {
            return None;
        }
        let i = gref as usize;
        if let Some(&k) = self.index.get(i) {
            if k != 0 {
                let at = k as usize - 1;
                return self.mems.get(at).map(|&m| (at, m));
            }
        }
        if self.maps.len() >= MAX_PERSISTENT_GRANTS {
            return None;
        }
        let m = sh.hv.grant_map(sh.frontend, GrantRef(gref), false).ok()?;
        add(&sh.counters.maps, 1);
        if self.index.len() <= i {
            self.index.resize(i + 1, 0);
        }
        // SAFETY: `m` is kept in `self.maps` until the connection ends (see
        // `mems`); the regions taken from it (requests in flight, the indirect
        // cache) are used only while the queue is served, before its drop.
        let mem = unsafe { m.mem_unbound() };
        self.maps.push(m);
        self.mems.push(mem);
        self.cached.push(0);
        let at = self.maps.len() - 1;
        if let Some(slot) = self.index.get_mut(i) {
            *slot = self.maps.len() as u32;
        }
        Some((at, mem))
    }

    /// What the indirect page at position `at` of `maps` held the last time, if
    /// it is remembered.
    fn cached(&self, at: usize) -> Option<&CachedIndirect> {
        match self.cached.get(at) {
            Some(&k) if k != 0 => self.cache.get(k as usize - 1),
            _ => None,
        }
    }

    /// Remembers that the indirect page at position `at` of `maps` holds the
    /// descriptors `raw`, naming `regions` (all persistent: valid for the
    /// connection; joined where neighbours in `mem`), `total` bytes. Reuses the
    /// page's entry, a new one (with room for `max_segments` descriptors) while
    /// there are fewer than [`INDIRECT_CACHE`], else the oldest made or given
    /// up: allocates only while the cache fills.
    fn remember(
        &mut self,
        at: usize,
        fill: CacheFill<'_>,
        mem: Option<&GuestMemory>,
        max_segments: usize,
    ) {
        let e = match self.cached.get(at) {
            Some(&k) if k != 0 => k as usize - 1,
            Some(_) if self.cache.len() < INDIRECT_CACHE => {
                self.cache.push(CachedIndirect {
                    owner: at,
                    raw: Vec::with_capacity(max_segments * SEGMENT_BYTES),
                    regions: Vec::with_capacity(max_segments),
                    total: 0,
                });
                self.cache.len() - 1
            }
            Some(_) => {
                let e = self.hand;
                self.hand = (self.hand + 1) % INDIRECT_CACHE;
                // The page that had this entry is not remembered any more.
                if let Some(old) = self.cache.get(e).and_then(|c| self.cached.get_mut(c.owner)) {
                    *old = 0;
                }
                e
            }
            None => return,
        };
        let (Some(c), Some(k)) = (self.cache.get_mut(e), self.cached.get_mut(at)) else {
            return;
        };
        *k = e as u32 + 1;
        c.owner = at;
        c.raw.clear();
        c.raw.extend_from_slice(fill.raw);
        join_regions_into(mem, fill.regions, &mut c.regions);
        c.total = fill.total;
    }
}

/// What [`PersistentGrants::remember`] keeps of an indirect page.
struct CacheFill<'a> {
    /// The descriptors, as copied out of the page.
    raw: &'a [u8],
    /// The pages they name, mapped and checked (persistent grants).
    regions: &'a [SharedMem<'static>],
    /// Their byte count.
    total: u64,
}

/// Buffers one request needs, kept between requests.
#[derive(Default)]
struct Scratch {
    segs: Vec<RequestSegment>,
    regions: Vec<SharedMem<'static>>,
    temps: Vec<GrantMapping>,
    raw: Vec<u8>,
}

impl IoQueue {
    /// Serves the requests on the ring now, at most `budget` of them (publishing
    /// each response at once). How many; `Err` if the ring failed (recorded in
    /// `fatal`).
    fn serve(&mut self, budget: usize) -> Result<usize, ()> {
        let mut n = 0;
        loop {
            if self.frozen || n >= budget {
                return Ok(n);
            }
            let next = match self.deferred.take() {
                Some(req) => Ok(Some(req)),
                None => self.ring.poll_request(),
            };
            match next {
                Ok(Some(req)) => {
                    n += 1;
                    if let Some(h) = self.sh.cfg.hostile {
                        if self.misbehave(h, &req)? {
                            continue;
                        }
                    }
                    let rsp = self.handle(&req);
                    if self.ring.push_response(&rsp).is_err() {
                        return Ok(n);
                    }
                    // Publish at once (the frontend may be waiting for exactly
                    // this one); the ring rules decide whether to notify.
                    if self.ring.push_responses_and_check_notify() {
                        add(&self.sh.counters.sent, 1);
                        self.port.notify();
                    }
                }
                Ok(None) => return Ok(n),
                Err(e) => {
                    self.sh.set_fatal(format!("ring: {e}"));
                    return Err(());
                }
            }
        }
    }

    /// Serves the ring's one request here, on the thread that notified (the
    /// frontend's), if it is a small read whose data is in the page cache: no
    /// hand-off to a pool worker and no wake-up, so a frontend at queue depth 1
    /// finds the answer when its notification returns. `true` if answered;
    /// `false` if a worker must serve (more than one request, another kind, or
    /// data to wait for: a request already taken is kept in `deferred`).
    fn serve_inline(&mut self) -> bool {
        if !self.inline || self.deferred.is_some() {
            return false;
        }
        if !matches!(self.ring.unconsumed_requests(), Ok(1)) {
            return false;
        }
        let Ok(Some(req)) = self.ring.poll_request() else {
            return false;
        };
        let n = req.nr_segments as usize;
        if req.operation != blkif::OP_READ || n == 0 || n > INLINE_SEGMENTS {
            self.deferred = Some(req);
            return false;
        }
        let disk = self.sh.disk.clone();
        let segs = req.seg.get(..n).unwrap_or_default();
        let status = match self.rw(&disk, blkif::OP_READ, req.sector_number, segs, true) {
            Ok((st, _)) => st,
            Err(WouldBlock { unsupported }) => {
                if unsupported {
                    self.inline = false;
                }
                self.deferred = Some(req);
                return false;
            }
        };
        add(&self.sh.counters.requests, 1);
        add(&self.sh.counters.inline, 1);
        if status != blkif::RSP_OKAY {
            add(&self.sh.counters.errors, 1);
        }
        let rsp = Response {
            id: req.id,
            operation: blkif::OP_READ,
            status,
            ..Default::default()
        };
        if self.ring.push_response(&rsp).is_err() {
            return true;
        }
        if self.ring.push_responses_and_check_notify() {
            add(&self.sh.counters.sent, 1);
            self.port.notify();
        }
        true
    }

    /// Re-arms `req_event` (`RING_FINAL_CHECK_FOR_REQUESTS`) as a worker does
    /// before it goes idle: `true` if requests came meanwhile. A ring error is
    /// fatal (recorded in `fatal`; the queue is not served again).
    fn rearm(&mut self) -> bool {
        match self.ring.final_check_for_requests() {
            Ok(more) => more,
            Err(e) => {
                self.sh.set_fatal(format!("ring: {e}"));
                self.failed = true;
                false
            }
        }
    }

    /// One step of a stepped backend: serves what is on the ring, then re-arms
    /// `req_event` (as the thread does before it sleeps) and serves what came
    /// meanwhile. How many requests.
    fn step(&mut self) -> Result<usize, ()> {
        let mut n = self.serve(usize::MAX)?;
        loop {
            match self.ring.final_check_for_requests() {
                Ok(true) => n += self.serve(usize::MAX)?,
                Ok(false) => return Ok(n),
                Err(e) => {
                    self.sh.set_fatal(format!("ring: {e}"));
                    return Err(());
                }
            }
        }
    }

    /// Answers `req` the way hostile mode `h` does (docs/hostile-mode.md).
    /// `Ok(true)`: done with it (answered, or left unanswered on purpose);
    /// `Ok(false)`: the mode does not touch requests, answer normally; `Err`:
    /// the connection is being closed.
    fn misbehave(&mut self, h: BlkHostile, req: &Request) -> Result<bool, ()> {
        let mut rsp = match h {
            BlkHostile::NeverAnswers => return Ok(true),
            BlkHostile::ClosingWithRequestsInFlight => {
                self.sh.set_fatal(format!(
                    "hostile mode blk.closing_with_requests_in_flight: closing with request {:#x} in flight",
                    req.id
                ));
                return Err(());
            }
            BlkHostile::SectorsGarbage | BlkHostile::SectorSizeNotPowerOfTwo => return Ok(false),
            _ => self.handle(req),
        };
        match h {
            BlkHostile::ResponseUnknownId => rsp.id = req.id ^ 0x1000,
            BlkHostile::ResponseIdHighBits => rsp.id = req.id ^ 0xbad0_0000_0000_0000,
            BlkHostile::WrongOperation => {
                rsp.operation = if rsp.operation == blkif::OP_READ {
                    blkif::OP_WRITE
                } else {
                    blkif::OP_READ
                }
            }
            BlkHostile::UnknownStatus => rsp.status = 7,
            BlkHostile::DuplicateResponse => {
                // Every response after the first repeats the one before.
                if let Some(prev) = self.last.replace(rsp) {
                    rsp = prev;
                }
            }
            _ => {}
        }
        if self.ring.push_response(&rsp).is_err() {
            return Ok(true);
        }
        let _ = self.ring.push_responses_and_check_notify();
        if h == BlkHostile::RspProdOverrun {
            // A producer index the ring cannot hold (a whole ring and one past
            // what was published), written past the ring type; the ring is not
            // served again (our indices no longer match the page).
            let next = self.ring.rsp_prod_pvt();
            let bogus = next.wrapping_add(self.ring.size()).wrapping_add(1);
            wmb();
            self.ring.mem().store_u32(ring_abi::RSP_PROD, bogus);
            self.frozen = true;
        }
        add(&self.sh.counters.sent, 1);
        self.port.notify();
        Ok(true)
    }

    fn handle(&mut self, req: &Request) -> Response {
        add(&self.sh.counters.requests, 1);
        let (status, op) = self.execute(req);
        if status != blkif::RSP_OKAY {
            add(&self.sh.counters.errors, 1);
        }
        Response {
            id: req.id,
            operation: op,
            status,
            ..Default::default()
        }
    }

    fn execute(&mut self, req: &Request) -> (i16, u8) {
        let disk = self.sh.disk.clone();
        let o = self.sh.cfg.offer;
        let op = req.operation;
        match op {
            blkif::OP_READ | blkif::OP_WRITE => {
                let n = req.nr_segments as usize;
                if n == 0 || n > blkif::MAX_SEGMENTS_PER_REQUEST {
                    return (blkif::RSP_ERROR, op);
                }
                // `req` is already our private copy of the slot.
                let segs = req.seg.get(..n).unwrap_or_default();
                (
                    waited(self.rw(&disk, op, req.sector_number, segs, false)).0,
                    op,
                )
            }
            blkif::OP_INDIRECT => {
                let ind = req.as_indirect();
                let iop = ind.indirect_op;
                if iop != blkif::OP_READ && iop != blkif::OP_WRITE {
                    // Answered with the indirect operation, as Linux blkback does.
                    return (blkif::RSP_ERROR, iop);
                }
                let n = ind.nr_segments as usize;
                if o.max_indirect_segments == 0 {
                    return (blkif::RSP_EOPNOTSUPP, iop);
                }
                if n == 0 || n > o.max_indirect_segments.min(MAX_INDIRECT_SEGMENTS) as usize {
                    return (blkif::RSP_ERROR, iop);
                }
                let gref = ind.indirect_grefs[0];
                (
                    self.indirect_rw(&disk, iop, ind.sector_number, gref, n),
                    iop,
                )
            }
            blkif::OP_FLUSH_DISKCACHE | blkif::OP_WRITE_BARRIER => {
                let feature = if op == blkif::OP_FLUSH_DISKCACHE {
                    BackendFlags::FLUSH_CACHE
                } else {
                    BackendFlags::BARRIER
                };
                if !o.flags.contains(feature) || !disk.writable {
                    return (blkif::RSP_EOPNOTSUPP, op);
                }
                let n = req.nr_segments as usize;
                if op == blkif::OP_WRITE_BARRIER && n > 0 {
                    // A barrier with data: the write, then the flush.
                    if n > blkif::MAX_SEGMENTS_PER_REQUEST {
                        return (blkif::RSP_ERROR, op);
                    }
                    let segs = req.seg.get(..n).unwrap_or_default();
                    let st =
                        waited(self.rw(&disk, blkif::OP_WRITE, req.sector_number, segs, false)).0;
                    if st != blkif::RSP_OKAY {
                        return (st, op);
                    }
                }
                match disk.file.sync_data() {
                    Ok(()) => (blkif::RSP_OKAY, op),
                    Err(_) => (blkif::RSP_ERROR, op),
                }
            }
            blkif::OP_DISCARD => {
                if !o.flags.contains(BackendFlags::DISCARD) || !disk.writable {
                    return (blkif::RSP_EOPNOTSUPP, op);
                }
                let d = req.as_discard();
                let range = d
                    .sector_number
                    .checked_mul(512)
                    .zip(d.nr_sectors.checked_mul(512))
                    .and_then(|(s, l)| s.checked_add(l).map(|e| (s, l, e)));
                let Some((start, len, end)) = range else {
                    return (blkif::RSP_ERROR, op);
                };
                if end > disk.bytes() {
                    return (blkif::RSP_ERROR, op);
                }
                if len == 0 {
                    return (blkif::RSP_OKAY, op);
                }
                let (Ok(s), Ok(l)) = (libc::off_t::try_from(start), libc::off_t::try_from(len))
                else {
                    return (blkif::RSP_ERROR, op);
                };
                // `union`, not `|`: the two bits are disjoint, so a mutated `^`
                // would be the same flags (docs/mutants.md).
                let flags = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                    .union(nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE);
                let f = disk.fallback.as_ref().unwrap_or(&disk.file);
                match nix::fcntl::fallocate(f, flags, s, l) {
                    Ok(()) => (blkif::RSP_OKAY, op),
                    Err(_) => (blkif::RSP_ERROR, op),
                }
            }
            _ => (blkif::RSP_EOPNOTSUPP, op),
        }
    }

    /// An indirect read or write: the descriptor page is copied out once, then
    /// either found unchanged in the cache (persistent grants: the same
    /// descriptors map to the same pages, already checked) or parsed, checked and
    /// mapped like direct segments.
    fn indirect_rw(&mut self, disk: &Disk, op: u8, sector: u64, gref: u32, n: usize) -> i16 {
        const SEG: usize = SEGMENT_BYTES;
        let write = op == blkif::OP_WRITE;
        let mut raw = std::mem::take(&mut self.scratch.raw);
        raw.clear();
        raw.resize(n * SEG, 0);
        let persistent = match self.persistent.as_mut() {
            Some(p) => p.get_or_map_at(&self.sh, gref),
            None => None,
        };
        match persistent {
            Some((_, mem)) if mem.contains(0, raw.len()) => mem.read(0, &mut raw),
            Some(_) => {
                self.scratch.raw = raw;
                return blkif::RSP_ERROR;
            }
            None => {
                let Ok(map) = self.sh.hv.grant_map(self.sh.frontend, GrantRef(gref), true) else {
                    self.scratch.raw = raw;
                    return blkif::RSP_ERROR;
                };
                add(&self.sh.counters.maps, 1);
                map.mem().read(0, &mut raw);
            }
        }
        if let (Some((at, _)), Some(p)) = (persistent, self.persistent.as_ref()) {
            if let Some(c) = p.cached(at).filter(|c| c.raw == raw) {
                let st = finish_rw(disk, write, sector, c.total, &c.regions, false)
                    .unwrap_or(blkif::RSP_ERROR);
                self.scratch.raw = raw;
                return st;
            }
        }
        let mut segs = std::mem::take(&mut self.scratch.segs);
        segs.clear();
        segs.extend(raw.chunks_exact(SEG).map(|c| RequestSegment {
            gref: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            first_sect: c[4],
            last_sect: c[5],
            _pad: [0; 2],
        }));
        let (st, all_persistent) = waited(self.rw(disk, op, sector, &segs, false));
        if let (Some((at, _)), Some(total), Some(p)) =
            (persistent, all_persistent, self.persistent.as_mut())
        {
            // Every page is mapped for the connection: remember the result.
            let fill = CacheFill {
                raw: &raw,
                regions: &self.scratch.regions,
                total,
            };
            let max = self.sh.cfg.offer.max_indirect_segments;
            let max = max.min(MAX_INDIRECT_SEGMENTS) as usize;
            p.remember(at, fill, self.frontend_mem.as_deref(), max);
        }
        self.scratch.segs = segs;
        self.scratch.raw = raw;
        st
    }

    /// A read or write of `segs` starting at 512-byte sector `sector`: maps the
    /// pages, transfers, unmaps what was mapped for this request only. Returns the
    /// status and, when every page was a persistent grant (so the mapped regions
    /// left in `scratch.regions` stay valid for the connection), the byte count.
    /// `nowait` (reads only): fail with [`WouldBlock`] rather than wait for the
    /// disk.
    fn rw(
        &mut self,
        disk: &Disk,
        op: u8,
        sector: u64,
        segs: &[RequestSegment],
        nowait: bool,
    ) -> Result<(i16, Option<u64>), WouldBlock> {
        let write = op == blkif::OP_WRITE;
        let mut regions = std::mem::take(&mut self.scratch.regions);
        let mut temps = std::mem::take(&mut self.scratch.temps);
        let r = match self.map_segments(segs, write, &mut regions, &mut temps) {
            Some(total) => finish_rw(disk, write, sector, total, &regions, nowait)
                .map(|st| (st, temps.is_empty().then_some(total))),
            None => Ok((blkif::RSP_ERROR, None)),
        };
        // Unmap this request's temporary mappings; keep the buffers.
        temps.clear();
        self.scratch.regions = regions;
        self.scratch.temps = temps;
        r
    }

    /// Checks `segs` and maps their pages into `regions` (in order): persistent
    /// grants are looked up (or mapped and kept), other grants mapped for this
    /// request only (read-only for writes) into `temps`. Returns the byte count, or
    /// `None` if a descriptor is malformed or a page cannot be mapped.
    fn map_segments(
        &mut self,
        segs: &[RequestSegment],
        write: bool,
        regions: &mut Vec<SharedMem<'static>>,
        temps: &mut Vec<GrantMapping>,
    ) -> Option<u64> {
        regions.clear();
        temps.clear();
        let mut total = 0u64;
        for s in segs {
            if s.first_sect > s.last_sect || s.last_sect > 7 {
                return None;
            }
            total += u64::from(s.last_sect - s.first_sect + 1) * 512;
        }
        for s in segs {
            let mem = match self
                .persistent
                .as_mut()
                .and_then(|p| p.get_or_map(&self.sh, s.gref))
            {
                Some(m) => m,
                None => {
                    let m = self
                        .sh
                        .hv
                        .grant_map(self.sh.frontend, GrantRef(s.gref), write)
                        .ok()?;
                    add(&self.sh.counters.maps, 1);
                    // SAFETY: `m` stays in `temps` until `rw` has finished this
                    // request's transfer and clears both; the region is not
                    // used after that (`scratch.regions` is refilled first).
                    let mem = unsafe { m.mem_unbound() };
                    temps.push(m);
                    mem
                }
            };
            let a = s.first_sect as usize * 512;
            let len = (s.last_sect - s.first_sect + 1) as usize * 512;
            regions.push(mem.sub(a, len)?);
        }
        Some(total)
    }
}

/// `regions` with each one that starts where the one before ends in `mem` (the
/// frontend's RAM, if known) joined to it: fewer, longer buffers, the same bytes in
/// the same order.
#[cfg(test)]
fn join_regions<'r>(mem: Option<&GuestMemory>, regions: &[SharedMem<'r>]) -> Vec<SharedMem<'r>> {
    let mut out: Vec<SharedMem<'r>> = Vec::with_capacity(regions.len());
    join_regions_into(mem, regions, &mut out);
    out
}

/// [`join_regions`] into `out` (cleared first; allocates only if `out` has room
/// for fewer than `regions.len()`).
fn join_regions_into<'r>(
    mem: Option<&GuestMemory>,
    regions: &[SharedMem<'r>],
    out: &mut Vec<SharedMem<'r>>,
) {
    out.clear();
    for r in regions {
        let j = match (out.last(), mem) {
            (Some(last), Some(m)) => m.join(last, r),
            _ => None,
        };
        match (j, out.last_mut()) {
            (Some(j), Some(last)) => *last = j,
            _ => out.push(*r),
        }
    }
}

/// Most indirect pages whose descriptors blkback remembers (per connection).
const INDIRECT_CACHE: usize = 128;

/// Bytes of one descriptor in an indirect page.
const SEGMENT_BYTES: usize = std::mem::size_of::<RequestSegment>();

/// What an indirect page's descriptors came to, the last time (persistent grants
/// only: the pages stay mapped for the connection).
struct CachedIndirect {
    /// The position in [`PersistentGrants::maps`] of the indirect page.
    owner: usize,
    /// The descriptors, as copied out of the page.
    raw: Vec<u8>,
    /// The pages they name, mapped and checked.
    regions: Vec<SharedMem<'static>>,
    /// Their byte count.
    total: u64,
}

/// A read asked not to wait for the disk would have had to (its data is not all
/// in the page cache), or the kernel does not offer that (`unsupported`).
#[derive(Clone, Copy, Debug)]
struct WouldBlock {
    unsupported: bool,
}

/// The result of a transfer made with `nowait` false, which cannot be
/// [`WouldBlock`] (an error status if it were).
fn waited<T: Default>(r: Result<(i16, T), WouldBlock>) -> (i16, T) {
    r.unwrap_or((blkif::RSP_ERROR, T::default()))
}

/// The rest of a read or write once its pages are mapped: the range check against
/// the disk, then one vectored transfer (`nowait`: a read that does not wait for
/// the disk, see [`WouldBlock`]).
fn finish_rw(
    disk: &Disk,
    write: bool,
    sector: u64,
    total: u64,
    regions: &[SharedMem<'_>],
    nowait: bool,
) -> Result<i16, WouldBlock> {
    if write && !disk.writable {
        return Ok(blkif::RSP_ERROR);
    }
    let Some(start) = sector.checked_mul(512) else {
        return Ok(blkif::RSP_ERROR);
    };
    let end = match start.checked_add(total) {
        Some(end) if end <= disk.bytes() => end,
        _ => return Ok(blkif::RSP_ERROR),
    };
    if write && disk.regular {
        // The image may have been truncated under the guest without a resize
        // (docs/hostile-input.md D2): a write past its end would grow it again (with a hole
        // up to the write) instead of failing. A read there is short, so an error
        // below. (A truncation between this check and the write is not caught.)
        match disk.file.metadata() {
            Ok(m) if end <= m.len() => {}
            _ => return Ok(blkif::RSP_ERROR),
        }
    }
    if nowait && !write {
        return match preadv_into_nowait(&disk.file, regions, start) {
            Ok(n) if n as u64 == total => Ok(blkif::RSP_OKAY),
            // Short (the image ends early, or only part was cached) or not cached:
            // the pool's ordinary read decides.
            Ok(_) => Err(WouldBlock { unsupported: false }),
            Err(e) => Err(WouldBlock {
                unsupported: e.kind() != std::io::ErrorKind::WouldBlock,
            }),
        };
    }
    // A transfer shorter than asked (the image ends earlier than `sectors` says)
    // is an error: the bytes it did move are not reported as data.
    Ok(match transfer(disk, regions, start, write) {
        Ok(n) if n as u64 == total => blkif::RSP_OKAY,
        _ => blkif::RSP_ERROR,
    })
}

/// One vectored transfer; with `O_DIRECT`, an alignment refusal (`EINVAL`) is retried
/// through the buffered descriptor.
fn transfer(
    disk: &Disk,
    regions: &[SharedMem<'_>],
    pos: u64,
    write: bool,
) -> std::io::Result<usize> {
    let go = |f: &File| {
        if write {
            pwritev_from(f, regions, pos)
        } else {
            preadv_into(f, regions, pos)
        }
    };
    match go(&disk.file) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match &disk.fallback {
            Some(f) => go(f),
            None => Err(e),
        },
        r => r,
    }
}

impl Drop for IoQueue {
    fn drop(&mut self) {
        // Persistent mappings, the ring and the port go with us (unmapped/closed).
        if let Some(c) = self.persistent.as_mut() {
            c.cache.clear();
            c.mems.clear();
            c.maps.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall::Gfn;

    /// Neighbouring pages are joined into one region, others kept apart, in
    /// order; without the frontend's RAM nothing is joined. (Written for
    /// cargo-mutants: either arm of the join deleted left every page apart, which
    /// only the kernel's buffer count shows.)
    #[test]
    fn neighbouring_regions_are_joined() {
        let mem = GuestMemory::new(Gfn(0x100), 4).unwrap();
        let page = |i: u64| mem.page(Gfn(0x100 + i)).unwrap();
        let regions = [page(0), page(1), page(3), page(2)];
        let lens = |v: Vec<SharedMem<'_>>| v.iter().map(|r| r.len()).collect::<Vec<_>>();
        let j = join_regions(Some(&mem), &regions);
        assert_eq!(j[0].as_ptr(), regions[0].as_ptr());
        assert_eq!(lens(j), [8192, 4096, 4096]);
        assert_eq!(lens(join_regions(None, &regions)), [4096; 4]);
        assert!(join_regions(Some(&mem), &[]).is_empty());
    }

    /// The indirect-page cache refills entries in place: the same page with
    /// other descriptors keeps its entry; once [`INDIRECT_CACHE`] pages are
    /// remembered, the next one takes the oldest entry (its buffers, no new
    /// ones) and that page is forgotten.
    #[test]
    fn indirect_cache_reuses_its_entries() {
        // Leaked: the cache holds regions of the connection's lifetime.
        let mem: &'static GuestMemory =
            Box::leak(Box::new(GuestMemory::new(Gfn(0x100), 4).unwrap()));
        let page = |i: u64| mem.page(Gfn(0x100 + i)).unwrap();
        let regions = &[page(0), page(1), page(3)][..];
        let mut p = PersistentGrants {
            cached: vec![0; INDIRECT_CACHE + 2],
            ..PersistentGrants::default()
        };
        let fill = |raw: &'static [u8], regions, total| CacheFill {
            raw,
            regions,
            total,
        };
        p.remember(0, fill(&[1; 24], regions, 3 * 4096), Some(mem), 256);
        let c = p.cached(0).unwrap();
        assert_eq!((c.raw.as_slice(), c.total), (&[1u8; 24][..], 3 * 4096));
        let lens: Vec<_> = c.regions.iter().map(|r| r.len()).collect();
        assert_eq!(lens, [8192, 4096]);
        let buf = c.raw.as_ptr();
        assert!(c.raw.capacity() >= 256 * SEGMENT_BYTES && c.regions.capacity() >= 256);
        // The same page, other descriptors: the same entry, refilled.
        p.remember(0, fill(&[2; 8], &regions[2..], 4096), None, 256);
        let c = p.cached(0).unwrap();
        assert_eq!((c.raw.as_slice(), c.total), (&[2u8; 8][..], 4096));
        assert_eq!((c.raw.as_ptr(), c.regions.len()), (buf, 1));
        assert_eq!(p.cache.len(), 1);
        for at in 1..INDIRECT_CACHE {
            p.remember(at, fill(&[3; 8], &regions[..1], 4096), None, 256);
        }
        assert_eq!(p.cache.len(), INDIRECT_CACHE);
        assert!(p.cached(0).is_some());
        // Full: the next page takes the oldest entry (page 0's).
        p.remember(
            INDIRECT_CACHE,
            fill(&[4; 16], &regions[1..], 8192),
            None,
            256,
        );
        assert_eq!(p.cache.len(), INDIRECT_CACHE);
        assert!(
            p.cached(0).is_none(),
            "the page given up is still remembered"
        );
        let c = p.cached(INDIRECT_CACHE).unwrap();
        assert_eq!((c.raw.as_slice(), c.total), (&[4u8; 16][..], 8192));
        assert_eq!(c.raw.as_ptr(), buf, "not the oldest entry's buffers");
        assert_eq!(c.regions.len(), 2);
        // And the next one the entry after it.
        p.remember(
            INDIRECT_CACHE + 1,
            fill(&[5; 8], &regions[..1], 4096),
            None,
            256,
        );
        assert!(p.cached(1).is_none());
        assert!(p.cached(INDIRECT_CACHE).is_some() && p.cached(2).is_some());
        assert_eq!(p.cached(INDIRECT_CACHE + 1).unwrap().raw, [5; 8]);
    }
}
