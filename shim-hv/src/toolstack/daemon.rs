//! The shim-hv daemon: dom0 for every domain of one runtime directory.
//!
//! ```text
//!  control.sock ──thread per client──▶ Daemon::handle ──▶ Hypervisor (xen model)
//!  xenstored.sock ──────────────────▶ Xenstored::serve_unix (dom0, privileged)
//!  supervisor thread ◀── DomainEvent ── guests: on_poweroff / on_reboot / on_crash
//! ```
//!
//! [`Daemon`] also works without sockets (tests, the demo): create it with
//! [`Daemon::new`] and call [`Daemon::handle`] or the typed methods directly.
//!
//! Who may talk to it: the control socket is created 0600 inside the 0700 runtime
//! directory, and every client's credentials (`SO_PEERCRED`) are checked: only the
//! daemon's own uid and root are served. There is no TCP listener.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hypercall::DomId;

use kvm_runner::{self as kvm, boot::BootSpec, ExitStats, KvmGuest};
use xen_model::inproc::GuestHandle;
use xen_model::{
    Domain, DomainEvent, DomainSpec, DomainState, Hypervisor, HypervisorConfig, ShutdownReason,
    Uuid,
};
use xenstored::{SocketServer, TxId};
use xl_config::{Action, DomainConfig};

use super::devices::{fill_in_macs, DomainDevices, Vbd};
use super::error::{io_err, Error};
use super::proto::{self, DeviceInfo, DomainInfo, Reply, Request};
use super::runtime::RuntimeDir;
use super::{builtin, check_config, check_disk_images, unattached_devices, PowerRequest};
use xen_backends::bridge::Bridges;
use xen_backends::console::{ClientEvent, Console, ConsoleBackend, ConsoleConfig, Sink};

/// Clients served at once on the control socket; more are refused.
pub const MAX_CLIENTS: usize = 32;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest single [`Request::Wait`].
const MAX_WAIT: Duration = Duration::from_secs(10);

/// How a domain's guest runs.
enum Runner {
    /// The built-in guest as threads of the daemon (a config without `kernel`); the
    /// thread ends by itself once the domain is finished.
    InProc(#[allow(dead_code)] GuestHandle),
    /// The config's kernel in a KVM VM; dropping it stops the VM.
    Kvm(KvmGuest),
}

impl Runner {
    fn name(&self) -> &'static str {
        match self {
            Runner::InProc(_) => "in-process",
            Runner::Kvm(_) => "kvm",
        }
    }

    fn exits(&self) -> Option<ExitStats> {
        match self {
            Runner::InProc(_) => None,
            Runner::Kvm(g) => Some(g.stats()),
        }
    }
}

/// One domain the daemon runs.
struct Managed {
    config: Arc<DomainConfig>,
    dom: Arc<Domain>,
    /// The guest.
    guest: Runner,
    /// Its backends (detached before the domain is destroyed).
    devices: DomainDevices,
    /// The supervisor applied `preserve`: the domain stays as it is.
    settled: bool,
}

#[derive(Default)]
struct Table {
    doms: BTreeMap<u16, Managed>,
}

/// The daemon: a hypervisor, its domains, and (once [`Daemon::serve`] runs) the
/// control and xenstore sockets.
pub struct Daemon {
    hv: Arc<Hypervisor>,
    rt: RuntimeDir,
    table: Mutex<Table>,
    table_cv: Condvar,
    consoles: Arc<ConsoleBackend>,
    bridges: Bridges,
    started: Instant,
    stopping: AtomicBool,
    stop_cv: (Mutex<bool>, Condvar),
    xenstored_socket: Mutex<Option<PathBuf>>,
    /// The control socket's listening descriptor while [`Daemon::serve`] accepts
    /// (cleared, under this lock, before the listener closes).
    listen_fd: Mutex<Option<std::os::fd::RawFd>>,
    clients: AtomicUsize,
    uid: u32,
    quiet: Arc<AtomicBool>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("runtime", &self.rt)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one line to stderr (which `create` points at `daemon.log`).
fn log_line(msg: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    eprintln!("[{t:.3}] {msg}");
}

/// Parses a UUID as `config` keeps it (lower case, with or without dashes).
fn parse_uuid(s: &str) -> Option<Uuid> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let txt = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(txt, 16).ok()?;
    }
    Some(Uuid(out))
}

/// xl's six state flags for a domain state.
pub fn state_flags(s: &DomainState) -> &'static str {
    match s {
        DomainState::Running => "r-----",
        DomainState::Paused => "--p---",
        DomainState::Shutdown(_) => "---s--",
        DomainState::Crashed(_) => "----c-",
        DomainState::Dying => "-----d",
    }
}

impl Daemon {
    /// A daemon for runtime directory `rt` with a fresh hypervisor and no domains.
    /// Its supervisor thread applies `on_poweroff`/`on_reboot`/`on_crash`.
    pub fn new(rt: RuntimeDir) -> Arc<Daemon> {
        let hv = Hypervisor::new(HypervisorConfig::default());
        let events = hv.subscribe();
        let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
        let d = Arc::new(Daemon {
            hv,
            rt,
            table: Mutex::new(Table::default()),
            table_cv: Condvar::new(),
            consoles,
            bridges: Bridges::new(),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            stop_cv: (Mutex::new(false), Condvar::new()),
            xenstored_socket: Mutex::new(None),
            listen_fd: Mutex::new(None),
            clients: AtomicUsize::new(0),
            uid: nix::unistd::geteuid().as_raw(),
            quiet: Arc::new(AtomicBool::new(false)),
        });
        let weak = Arc::downgrade(&d);
        let spawned = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || supervise(weak, events));
        if let Err(e) = spawned {
            d.log(&format!("cannot start the supervisor thread: {e}"));
        }
        d
    }

    /// Turns the log lines (stderr) off or on.
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
    }

    fn log(&self, msg: &str) {
        if !self.quiet.load(Ordering::Relaxed) {
            log_line(msg);
        }
    }

    /// The hypervisor (xenstored is `hypervisor().xenstored()`).
    pub fn hypervisor(&self) -> &Arc<Hypervisor> {
        &self.hv
    }

    /// The in-process bridge called `name` (made if new), as vifs with `bridge=name`
    /// use: e.g. to join a host TAP device to it.
    pub fn bridge(&self, name: &str) -> Arc<xen_backends::bridge::Bridge> {
        self.bridges.get(name)
    }

    /// The runtime directory.
    pub fn runtime_dir(&self) -> &RuntimeDir {
        &self.rt
    }

    /// Domain `id`'s console (while the domain lives).
    pub fn console(&self, id: DomId) -> Option<Arc<Console>> {
        self.consoles.console(id)
    }

    /// Finds a live domain by id (decimal) or name.
    pub fn resolve(&self, dom: &str) -> Result<Arc<Domain>, Error> {
        if let Ok(id) = dom.parse::<u16>() {
            if let Some(d) = self.hv.domain(DomId(id)) {
                return Ok(d);
            }
        }
        self.hv
            .domain_by_name(dom)
            .ok_or_else(|| Error::NoSuchDomain(dom.to_string()))
    }

    /// Creates and starts a domain from a parsed config (relative paths already
    /// resolved): the config's `kernel` in a KVM VM, or the built-in in-process
    /// guest if there is none. Refused: unsupported settings, missing files, a bad
    /// kernel, no usable `/dev/kvm` for a kernel, a name in use.
    pub fn create(self: &Arc<Self>, config: DomainConfig) -> Result<DomId, Error> {
        self.create_paused(config, false)
    }

    /// [`Daemon::create`], leaving the domain paused (its guest does not run until
    /// [`Daemon::unpause`]) if `paused`.
    pub fn create_paused(
        self: &Arc<Self>,
        mut config: DomainConfig,
        paused: bool,
    ) -> Result<DomId, Error> {
        check_config(&config)?;
        fill_in_macs(&mut config);
        config.validate_paths().map_err(Error::Paths)?;
        check_kernel_config(&config)?;
        for w in check_disk_images(&config)?
            .into_iter()
            .chain(unattached_devices(&config))
        {
            self.log(&w);
        }
        let uuid = config.uuid.as_deref().and_then(parse_uuid);
        let mut t = lock(&self.table);
        let id = self.start_locked(&mut t, Arc::new(config), uuid, paused)?;
        drop(t);
        self.table_cv.notify_all();
        Ok(id)
    }

    /// Builds and starts one domain; the caller holds the table.
    fn start_locked(
        self: &Arc<Self>,
        t: &mut Table,
        config: Arc<DomainConfig>,
        uuid: Option<Uuid>,
        paused: bool,
    ) -> Result<DomId, Error> {
        let mut spec = if config.kernel.is_some() {
            kvm::domain_spec(config.name.clone(), config.memory_mib)
        } else {
            DomainSpec::new(config.name.clone(), config.memory_mib)
        };
        spec.vcpus = config.vcpus;
        spec.uuid = uuid;
        spec.console_sink = Some(self.consoles.early_sink());
        let dom = self.hv.create_domain(spec)?;
        let id = dom.id();
        if paused {
            // Before the guest runs: its vCPU (or first thread) holds at once.
            self.hv.pause_domain(&dom);
        }
        match self.consoles.start(&dom, Sink::None) {
            Ok(c) => c.set_hostile(super::devices::console_hostile(&config)),
            Err(e) => {
                self.teardown(id, None);
                return Err(Error::Daemon(format!("domain {}'s console: {e}", id.0)));
            }
        }
        // Device nodes exist before the guest runs, as libxl writes them before it
        // unpauses a domain.
        let mut devices =
            match DomainDevices::attach(&self.hv, &self.bridges, &self.consoles, id, &config) {
                Ok(d) => d,
                Err(e) => {
                    self.teardown(id, None);
                    return Err(e);
                }
            };
        let guest = match self.start_guest(&dom, &config) {
            Ok(g) => g,
            Err(e) => {
                self.teardown(id, Some(&mut devices));
                return Err(e);
            }
        };
        self.log(&format!(
            "created domain {} ({}) from {}, uuid {}, {} runner",
            id.0,
            config.name,
            config.file,
            dom.uuid(),
            guest.name()
        ));
        t.doms.insert(
            id.0,
            Managed {
                config,
                dom,
                guest,
                devices,
                settled: false,
            },
        );
        Ok(id)
    }

    /// Starts the domain's guest: the config's kernel in a KVM VM, or without one
    /// the built-in guest on a thread of this process.
    fn start_guest(&self, dom: &Arc<Domain>, config: &DomainConfig) -> Result<Runner, Error> {
        let Some(kernel) = &config.kernel else {
            let cmdline = config.cmdline.clone().unwrap_or_default();
            let main = move |g| builtin::run_with(g, &cmdline);
            return match self.hv.spawn_guest(dom.clone(), main) {
                Ok(g) => Ok(Runner::InProc(g)),
                Err(e) => Err(Error::Io {
                    what: format!("starting domain {}'s guest thread", dom.id().0),
                    err: e,
                }),
            };
        };
        let boot = BootSpec {
            kernel: kernel.clone(),
            ramdisk: config.ramdisk.clone(),
            cmdline: config.cmdline.clone().unwrap_or_default(),
        };
        let quiet = self.quiet.clone();
        let log: kvm::LogFn = Arc::new(move |s: &str| {
            if !quiet.load(Ordering::Relaxed) {
                log_line(s);
            }
        });
        match KvmGuest::start(&self.hv, dom.clone(), &boot, log) {
            Ok(g) => Ok(Runner::Kvm(g)),
            Err(e) => Err(Error::Kernel {
                file: config.file.clone(),
                why: e.to_string(),
            }),
        }
    }

    /// Detaches the domain's devices (their xenstore directories go), destroys the
    /// model's domain and closes its console (the table entry is the caller's
    /// business).
    fn teardown(&self, id: DomId, devices: Option<&mut DomainDevices>) {
        if let Some(d) = devices {
            d.detach();
        }
        if let Err(e) = self.hv.destroy_domain(id) {
            self.log(&format!("destroying domain {}: {e}", id.0));
        }
        self.consoles.remove(id);
    }

    /// Destroys a domain at once (`xl destroy`).
    pub fn destroy(&self, dom: &str) -> Result<DomId, Error> {
        let d = self.resolve(dom)?;
        let mut t = lock(&self.table);
        let mut m = t.doms.remove(&d.id().0);
        self.teardown(d.id(), m.as_mut().map(|m| &mut m.devices));
        drop(t);
        drop(m);
        self.log(&format!("destroyed domain {} ({})", d.id().0, d.name()));
        self.table_cv.notify_all();
        Ok(d.id())
    }

    /// Asks a domain to shut down or reboot by writing `control/shutdown`, as xl
    /// does. A domain already shutting down is left alone (the request is
    /// idempotent).
    pub fn shutdown(&self, dom: &str, req: PowerRequest) -> Result<DomId, Error> {
        let d = self.resolve(dom)?;
        if d.state().is_finished() {
            return Ok(d.id());
        }
        let path = format!("/local/domain/{}/control/shutdown", d.id().0);
        self.hv
            .xenstored()
            .client(0)
            .write(TxId::NONE, &path, req.as_str().as_bytes())?;
        self.log(&format!(
            "asked domain {} ({}) to {}",
            d.id().0,
            d.name(),
            req.as_str()
        ));
        Ok(d.id())
    }

    /// Waits up to `timeout` until domain `id` is gone, or finished and left as it
    /// is (`preserve`). Returns whether it is.
    pub fn wait_gone(&self, id: DomId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut t = lock(&self.table);
        loop {
            match t.doms.get(&id.0) {
                None => return true,
                Some(m) if m.settled => return true,
                Some(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            t = self
                .table_cv
                .wait_timeout(t, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// What `list` shows: Domain-0 (this daemon), then every domain by id.
    pub fn list(&self) -> Vec<DomainInfo> {
        let mut v = vec![DomainInfo {
            name: "Domain-0".into(),
            id: 0,
            uuid: "00000000-0000-0000-0000-000000000000".into(),
            mem_mib: own_rss_mib(),
            vcpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            state: "r-----".into(),
            time_s: self.started.elapsed().as_secs_f64(),
            reason: None,
        }];
        let t = lock(&self.table);
        for (id, m) in &t.doms {
            let state = m.dom.state();
            let reason = match &state {
                DomainState::Shutdown(r) => Some(r.name().to_string()),
                DomainState::Crashed(why) => Some(format!("crashed: {why}")),
                _ => None,
            };
            v.push(DomainInfo {
                name: m.config.name.clone(),
                id: *id,
                uuid: m.dom.uuid().to_string(),
                mem_mib: m.config.memory_mib,
                vcpus: m.dom.vcpus(),
                state: state_flags(&state).into(),
                // A VM's vCPU time; the in-process guest's threads are not counted.
                time_s: m
                    .guest
                    .exits()
                    .map_or(m.dom.uptime(), |e| e.cpu_time)
                    .as_secs_f64(),
                reason,
            });
        }
        v
    }

    /// What `list -l` shows, as JSON (like `xl list -l`): per domain its id, state,
    /// runner, config, its backends' event service (`backend_events`: per disk,
    /// vif, console and channel the pool runs, spurious notifications and
    /// back-offs, docs/hostile-input.md E1), and for KVM guests the vCPU time and
    /// VM exits by reason. `doms` empty means every domain.
    pub fn list_long(&self, doms: &[String]) -> Result<serde_json::Value, Error> {
        let ids: Option<Vec<u16>> = if doms.is_empty() {
            None
        } else {
            Some(
                doms.iter()
                    .map(|d| self.resolve(d).map(|x| x.id().0))
                    .collect::<Result<_, _>>()?,
            )
        };
        let t = lock(&self.table);
        let mut out = Vec::new();
        for (id, m) in &t.doms {
            if ids.as_ref().is_some_and(|v| !v.contains(id)) {
                continue;
            }
            let state = m.dom.state();
            let mut j = serde_json::json!({
                "domid": id,
                "name": m.config.name,
                "uuid": m.dom.uuid().to_string(),
                "state": state_flags(&state),
                "runner": m.guest.name(),
                "uptime_s": m.dom.uptime().as_secs_f64(),
                "config": m.config.to_json(),
                "backend_events": self.backend_events(DomId(*id), &m.devices),
            });
            if let Some(e) = m.guest.exits() {
                j["vcpu_time_s"] = serde_json::json!(e.cpu_time.as_secs_f64());
                j["vm_exits"] = serde_json::json!({
                    "total": e.total,
                    "by_reason": e.by_reason,
                    "upcalls_injected": e.injections,
                    "before_first_output": e.first_output_exits,
                });
            }
            out.push(j);
        }
        Ok(serde_json::Value::Array(out))
    }

    /// The event-service counters of domain `id`'s backends (`list -l`).
    fn backend_events(&self, id: DomId, devices: &DomainDevices) -> serde_json::Value {
        let row = |backend: &str, runs: u64, spurious: u64, backoffs: u64| {
            serde_json::json!({
                "backend": backend,
                "runs": runs,
                "spurious_events": spurious,
                "backoffs": backoffs,
            })
        };
        let vbd: Vec<_> = devices
            .vbds()
            .iter()
            .filter_map(|v| match v {
                Vbd::Disk(b) => {
                    let s = b.stats();
                    Some(row(b.backend_path(), s.runs, s.spurious_events, s.backoffs))
                }
                Vbd::EmptyCdrom(_) => None,
            })
            .collect();
        let vif: Vec<_> = devices
            .vifs()
            .iter()
            .map(|b| {
                let s = b.stats();
                row(b.backend_path(), s.runs, s.spurious_events, s.backoffs)
            })
            .collect();
        let console = |c: &Console, name: &str| {
            let s = c.stats();
            row(name, s.runs, s.spurious_events, s.backoffs)
        };
        let channel: Vec<_> = devices
            .channels()
            .iter()
            .filter_map(|ch| ch.console().map(|c| console(&c, ch.name())))
            .collect();
        serde_json::json!({
            "vbd": vbd,
            "vif": vif,
            "console": self.consoles.console(id).map(|c| console(&c, "console")),
            "channel": channel,
        })
    }

    /// A domain's devices of `kind` (`vbd` or `vif`), read from xenstore the way
    /// libxl's `*_getinfo` does: the frontend's `backend`, `backend-id`, `state`,
    /// `event-channel` and ring references, and the backend's `state`. Where libxl
    /// would show -1 for a device with split event channels, several queues or a
    /// multi-page ring, the first one is shown (`event-channel-tx`, `queue-0/...`,
    /// `ring-ref0`).
    pub fn devices(&self, dom: &str, kind: &str) -> Result<(DomId, Vec<DeviceInfo>), Error> {
        let d = self.resolve(dom)?;
        let xs = self.hv.xenstored().client(0);
        let base = format!("/local/domain/{}/device/{kind}", d.id().0);
        let ids = match xs.directory(TxId::NONE, &base) {
            Ok(ids) => ids,
            Err(e) if e.errno() == Some(xenstored::Errno::ENOENT) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let read = |p: &str| -> Option<String> {
            xs.read(TxId::NONE, p)
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let num = |p: &str| read(p).and_then(|v| v.trim().parse::<u32>().ok());
        // The first of `keys` present under `dir` (also tried under `queue-0/`).
        let first = |dir: &str, keys: &[&str]| {
            ["", "queue-0/"]
                .iter()
                .find_map(|q| keys.iter().find_map(|k| num(&format!("{dir}/{q}{k}"))))
        };
        let mut out = Vec::new();
        for devid in ids {
            let Ok(n) = devid.parse::<u32>() else {
                continue;
            };
            let fe = format!("{base}/{devid}");
            let backend = read(&format!("{fe}/backend")).unwrap_or_default();
            let ring_refs = if kind == "vif" {
                [first(&fe, &["tx-ring-ref"]), first(&fe, &["rx-ring-ref"])]
                    .into_iter()
                    .flatten()
                    .collect()
            } else {
                first(&fe, &["ring-ref", "ring-ref0"]).into_iter().collect()
            };
            let name = if kind == "vif" {
                read(&format!("{fe}/mac")).unwrap_or_default()
            } else {
                read(&format!("{backend}/dev")).unwrap_or_default()
            };
            out.push(DeviceInfo {
                devid: n,
                backend_id: num(&format!("{fe}/backend-id")).unwrap_or(0) as u16,
                frontend_state: num(&format!("{fe}/state")),
                backend_state: if backend.is_empty() {
                    None
                } else {
                    num(&format!("{backend}/state"))
                },
                evtchn: first(&fe, &["event-channel", "event-channel-tx"]),
                ring_refs,
                backend_path: backend,
                name,
            });
        }
        out.sort_by_key(|d| d.devid);
        Ok((d.id(), out))
    }

    /// Answers one request (all but [`Request::Console`], which streams).
    pub fn handle(self: &Arc<Self>, req: Request) -> Reply {
        let r = match req {
            Request::Create {
                file,
                text,
                cwd,
                paused,
                hostile,
            } => self.create_from_text(&file, &text, &cwd, paused, &hostile),
            Request::Pause { dom } => self.pause(&dom).map(|d| Reply::Acted { domid: d.0 }),
            Request::Unpause { dom } => self.unpause(&dom).map(|d| Reply::Acted { domid: d.0 }),
            Request::List => Ok(Reply::Domains {
                domains: self.list(),
            }),
            Request::ListLong { doms } => self.list_long(&doms).map(|v| Reply::Json {
                json: v.to_string(),
            }),
            Request::Shutdown { dom, request } => match PowerRequest::parse(&request) {
                Some(p) => self.shutdown(&dom, p).map(|d| Reply::Acted { domid: d.0 }),
                None => Err(Error::Daemon(format!(
                    "unknown shutdown request {request:?} (poweroff, reboot or halt)"
                ))),
            },
            Request::Wait { domid, timeout_ms } => {
                let t = Duration::from_millis(timeout_ms).min(MAX_WAIT);
                Ok(Reply::Waited {
                    finished: self.wait_gone(DomId(domid), t),
                })
            }
            Request::Destroy { dom } => self.destroy(&dom).map(|d| Reply::Acted { domid: d.0 }),
            Request::BlockList { dom } => {
                self.devices(&dom, "vbd")
                    .map(|(d, devices)| Reply::Devices {
                        domid: d.0,
                        devices,
                    })
            }
            Request::NetworkList { dom } => {
                self.devices(&dom, "vif")
                    .map(|(d, devices)| Reply::Devices {
                        domid: d.0,
                        devices,
                    })
            }
            Request::Info => Ok(Reply::Info {
                pid: std::process::id(),
                runtime_dir: self.rt.path().display().to_string(),
                xenstored_socket: lock(&self.xenstored_socket)
                    .as_ref()
                    .map(|p| p.display().to_string()),
            }),
            Request::Stop => {
                self.request_stop();
                Ok(Reply::Done)
            }
            Request::Console { .. } => Err(Error::Daemon(
                "console requests are streamed, not answered".into(),
            )),
        };
        r.unwrap_or_else(|e| Reply::Error {
            message: e.to_string(),
        })
    }

    fn create_from_text(
        self: &Arc<Self>,
        file: &str,
        text: &str,
        cwd: &str,
        paused: bool,
        hostile: &[String],
    ) -> Result<Reply, Error> {
        let mut cfg = DomainConfig::parse_str(file, text)?;
        for h in hostile {
            cfg.add_hostile(h, "--hostile")?;
        }
        resolve_paths(&mut cfg, Path::new(cwd));
        let name = cfg.name.clone();
        let id = self.create_paused(cfg, paused)?;
        Ok(Reply::Created { domid: id.0, name })
    }

    /// Pauses a running domain (`xl pause`): its vCPUs stop before their next
    /// instruction (KVM) or hypercall (in-process). Pausing a paused domain does
    /// nothing; a finished one cannot be paused.
    pub fn pause(&self, dom: &str) -> Result<DomId, Error> {
        let d = self.resolve(dom)?;
        if d.state() != DomainState::Paused && !self.hv.pause_domain(&d) {
            return Err(Error::Daemon(format!(
                "domain {} ({}) is not running: {:?}",
                d.id().0,
                d.name(),
                d.state()
            )));
        }
        self.log(&format!("paused domain {} ({})", d.id().0, d.name()));
        Ok(d.id())
    }

    /// Unpauses a paused domain (`xl unpause`); a running one is left as it is.
    pub fn unpause(&self, dom: &str) -> Result<DomId, Error> {
        let d = self.resolve(dom)?;
        if d.state() != DomainState::Running && !self.hv.unpause_domain(&d) {
            return Err(Error::Daemon(format!(
                "domain {} ({}) is not paused: {:?}",
                d.id().0,
                d.name(),
                d.state()
            )));
        }
        self.log(&format!("unpaused domain {} ({})", d.id().0, d.name()));
        Ok(d.id())
    }

    /// Asks [`Daemon::serve`] to return (after destroying every domain).
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let (m, cv) = &self.stop_cv;
        *lock(m) = true;
        cv.notify_all();
        // Wake the accept loop: shutting the listening socket down ends a blocked
        // accept (and works when the socket's file is gone, which is one reason to
        // stop); a connection is the fallback.
        {
            let fd = lock(&self.listen_fd);
            if let Some(fd) = *fd {
                let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read);
            }
        }
        let _ = UnixStream::connect(self.rt.control_socket());
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Destroys every domain.
    pub fn destroy_all(&self) {
        let mut t = lock(&self.table);
        let ids: Vec<u16> = t.doms.keys().copied().collect();
        for id in ids {
            let mut m = t.doms.remove(&id);
            self.teardown(DomId(id), m.as_mut().map(|m| &mut m.devices));
        }
        drop(t);
        self.table_cv.notify_all();
    }

    /// Applies the config's action for a domain that shut down or crashed.
    fn on_finished(self: &Arc<Self>, id: DomId, state: &DomainState) {
        let mut t = lock(&self.table);
        let Some(m) = t.doms.get(&id.0) else {
            return;
        };
        let c = &m.config;
        let (action, why) = match state {
            DomainState::Shutdown(ShutdownReason::Poweroff) => (c.on_poweroff, "on_poweroff"),
            DomainState::Shutdown(ShutdownReason::Reboot) => (c.on_reboot, "on_reboot"),
            DomainState::Shutdown(ShutdownReason::Watchdog) => (c.on_watchdog, "on_watchdog"),
            DomainState::Shutdown(ShutdownReason::Crash) | DomainState::Crashed(_) => {
                (c.on_crash, "on_crash")
            }
            DomainState::Shutdown(r) => {
                self.log(&format!(
                    "domain {} shut down ({}): left as it is",
                    id.0,
                    r.name()
                ));
                (Action::Preserve, "suspend")
            }
            _ => return,
        };
        self.log(&format!(
            "domain {} ({}) is {:?}: {why} = {}",
            id.0,
            c.name,
            state,
            action.as_str()
        ));
        match action {
            Action::Restart => {
                let Some(mut old) = t.doms.remove(&id.0) else {
                    return;
                };
                let uuid = Some(old.dom.uuid());
                let config = old.config.clone();
                self.teardown(id, Some(&mut old.devices));
                drop(old);
                match self.start_locked(&mut t, config, uuid, false) {
                    Ok(new) => self.log(&format!("domain {} restarted as domain {}", id.0, new.0)),
                    Err(e) => self.log(&format!("restarting domain {}: {e}", id.0)),
                }
            }
            Action::Preserve => {
                if let Some(m) = t.doms.get_mut(&id.0) {
                    m.settled = true;
                }
            }
            // Everything else (check_config refuses the others) destroys.
            _ => {
                let mut old = t.doms.remove(&id.0);
                self.teardown(id, old.as_mut().map(|m| &mut m.devices));
                drop(old);
            }
        }
        drop(t);
        self.table_cv.notify_all();
    }

    /// Runs the daemon on its runtime directory until a [`Request::Stop`]: takes
    /// the lock (one daemon per directory), writes the pid file, serves the control
    /// socket (0600) and dom0's xenstore socket (0600). Stops by itself if its
    /// control socket disappears (e.g. the runtime directory was removed). Destroys
    /// every domain before returning.
    pub fn serve(self: &Arc<Self>) -> Result<(), Error> {
        let rt = &self.rt;
        rt.create()
            .map_err(io_err(format!("runtime directory {}", rt.path().display())))?;
        let lock_file = self.take_lock()?;
        fs::write(rt.pid_file(), format!("{}\n", std::process::id()))
            .map_err(io_err(format!("{}", rt.pid_file().display())))?;
        let sock = rt.control_socket();
        let (listener, sock_ino) = bind_control(&sock)?;
        let xs_server = self.serve_xenstore();
        self.log(&format!(
            "shim-hv daemon {} serving {}",
            std::process::id(),
            sock.display()
        ));

        let me = Arc::downgrade(self);
        let watch_path = sock.clone();
        let _ = std::thread::Builder::new()
            .name("socket-watch".into())
            .spawn(move || watch_socket(me, watch_path, sock_ino));

        self.accept_loop(&listener);

        self.log("stopping: destroying every domain");
        self.destroy_all();
        drop(xs_server);
        *lock(&self.xenstored_socket) = None;
        // Remove our files only if they are still ours.
        if fs::metadata(&sock).map(|m| m.ino()).ok() == sock_ino {
            let _ = fs::remove_file(&sock);
        }
        if rt.daemon_pid() == Some(std::process::id()) {
            let _ = fs::remove_file(rt.pid_file());
        }
        drop(lock_file);
        self.log("stopped");
        Ok(())
    }

    /// Takes the runtime directory's lock (one daemon per directory); the lock is
    /// held as long as the returned file is open.
    fn take_lock(&self) -> Result<fs::File, Error> {
        let rt = &self.rt;
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(rt.lock_file())
            .map_err(io_err(format!("{}", rt.lock_file().display())))?;
        match lock_file.try_lock() {
            Ok(()) => Ok(lock_file),
            Err(fs::TryLockError::WouldBlock) => Err(Error::AlreadyRunning {
                dir: rt.path().to_path_buf(),
                pid: rt.daemon_pid(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(Error::Io {
                what: format!("locking {}", rt.lock_file().display()),
                err: e,
            }),
        }
    }

    /// Serves dom0's xenstore socket (0600) in the runtime directory, xenstored's
    /// log going to the daemon's; `None` (logged) if it cannot be served.
    fn serve_xenstore(self: &Arc<Self>) -> Option<SocketServer> {
        let xs_path = self.rt.xenstored_socket();
        let _ = fs::remove_file(&xs_path);
        let me = Arc::downgrade(self);
        self.hv.xenstored().set_log(Arc::new(move |m: &str| {
            if let Some(d) = me.upgrade() {
                d.log(&format!("xenstored: {m}"));
            }
        }));
        match self.hv.xenstored().serve_unix(&xs_path) {
            Ok(s) => {
                *lock(&self.xenstored_socket) = Some(xs_path);
                Some(s)
            }
            Err(e) => {
                self.log(&format!("xenstore socket {}: {e}", xs_path.display()));
                None
            }
        }
    }

    /// Accepts control clients, a thread each, until the daemon stops.
    fn accept_loop(self: &Arc<Self>, listener: &UnixListener) {
        *lock(&self.listen_fd) = Some(std::os::fd::AsRawFd::as_raw_fd(listener));
        // `stopping` is checked before each accept: a stop requested before the
        // descriptor was published (request_stop sets `stopping` first) ends the loop
        // here, a later one by the shutdown of the listening socket.
        let incoming =
            std::iter::from_fn(|| (!self.is_stopping()).then(|| listener.accept().map(|(s, _)| s)));
        for stream in incoming {
            if self.is_stopping() {
                break;
            }
            match stream {
                Ok(s) => self.admit(s),
                Err(e) => {
                    self.log(&format!("accept: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        *lock(&self.listen_fd) = None;
    }

    /// Serves one control client on its own thread, or refuses it past
    /// [`MAX_CLIENTS`].
    fn admit(self: &Arc<Self>, stream: UnixStream) {
        if self.clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            self.clients.fetch_sub(1, Ordering::SeqCst);
            let mut s = stream;
            let _ = proto::write_line(
                &mut s,
                &Reply::Error {
                    message: "too many clients".into(),
                },
            );
            return;
        }
        let d = self.clone();
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .spawn(move || {
                d.serve_client(stream);
                d.clients.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.clients.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Checks who is calling: the daemon's own uid and root only.
    fn peer_allowed(&self, stream: &UnixStream) -> Result<(), String> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        match getsockopt(stream, PeerCredentials) {
            Ok(c) if c.uid() == self.uid || c.uid() == 0 => Ok(()),
            Ok(c) => Err(format!(
                "permission denied: uid {} may not control this shim-hv daemon (uid {})",
                c.uid(),
                self.uid
            )),
            Err(e) => Err(format!("cannot check the client's credentials: {e}")),
        }
    }

    fn serve_client(self: &Arc<Self>, stream: UnixStream) {
        let mut out = match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        if let Err(why) = self.peer_allowed(&stream) {
            self.log(&format!("refused a client: {why}"));
            let _ = proto::write_line(&mut out, &Reply::Error { message: why });
            return;
        }
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let mut reader = BufReader::new(stream);
        let req = match proto::read_line::<Request, _>(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = proto::write_line(
                    &mut out,
                    &Reply::Error {
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        if let Request::Console { dom, num } = req {
            let sock = out.try_clone();
            self.stream_console(&dom, num, out, reader);
            // Ends the input thread's read too.
            if let Ok(s) = sock {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        // A stop is answered first: the process may end right after.
        let stop = matches!(req, Request::Stop);
        let reply = if stop { Reply::Done } else { self.handle(req) };
        let _ = proto::write_line(&mut out, &reply);
        if stop {
            self.request_stop();
        }
    }

    /// The console `console -n NUM` attaches to: 0 is the primary console, N ≥ 1 the
    /// channel on `device/console/N` if it is on a pty (its record is created if the
    /// guest has not connected it yet, so the client waits for its output). A channel
    /// on a Unix socket is refused: that socket serves one client at a time, and
    /// what the guest writes there belongs to it.
    fn console_target(&self, dom: &str, num: u32) -> Result<(DomId, Arc<Console>), Error> {
        let d = self.resolve(dom)?;
        let id = d.id();
        if num == 0 {
            return self
                .console(id)
                .map(|c| (id, c))
                .ok_or_else(|| Error::NoSuchDomain(dom.to_string()));
        }
        // Under the table lock: a teardown (which removes the channel's record)
        // cannot run between the check and `entry`.
        let t = lock(&self.table);
        let channels = t.doms.get(&id.0).map(|m| m.devices.channels());
        let Some(ch) = channels.and_then(|cs| cs.iter().find(|c| c.devid() == num)) else {
            let mut have = vec![0];
            have.extend(channels.unwrap_or_default().iter().map(|c| c.devid()));
            return Err(Error::NoSuchConsole {
                domid: id.0,
                name: d.name().to_string(),
                num,
                have,
            });
        };
        if let Some(path) = ch.socket_path() {
            return Err(Error::ConsoleOnSocket {
                domid: id.0,
                name: d.name().to_string(),
                num,
                channel: ch.name().to_string(),
                path: path.to_path_buf(),
            });
        }
        Ok((id, self.consoles.entry(id, num)))
    }

    fn stream_console(
        &self,
        dom: &str,
        num: u32,
        mut out: UnixStream,
        input: BufReader<UnixStream>,
    ) {
        let (id, console) = match self.console_target(dom, num) {
            Ok(x) => x,
            Err(e) => {
                let _ = proto::write_line(
                    &mut out,
                    &Reply::Error {
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        let mut client = console.attach(true);
        if proto::write_line(&mut out, &Reply::Console { domid: id.0 }).is_err() {
            return;
        }
        // What the client types goes to the guest.
        let _ = input.get_ref().set_read_timeout(None);
        let to_guest = console.clone();
        let detached = Arc::new(AtomicBool::new(false));
        let input_done = detached.clone();
        let _ = std::thread::Builder::new()
            .name("console-input".into())
            .spawn(move || {
                forward_input(input, &to_guest);
                input_done.store(true, Ordering::SeqCst);
            });
        loop {
            if detached.load(Ordering::SeqCst) {
                // The client detached (Ctrl-]) or hung up: hand over what is queued.
                while let Some(ClientEvent::Output(b)) = client.recv(Duration::ZERO) {
                    if out.write_all(&b).is_err() {
                        return;
                    }
                }
                return;
            }
            match client.recv(Duration::from_millis(200)) {
                Some(ClientEvent::Output(bytes)) => {
                    if out.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Some(ClientEvent::Skipped(n)) => {
                    let note = format!("\r\n[shim-hv: {n} bytes of console output skipped]\r\n");
                    if out.write_all(note.as_bytes()).is_err() {
                        return;
                    }
                }
                Some(ClientEvent::Closed(_)) => return,
                None => {
                    if self.is_stopping() || self.hv.domain(id).is_none() {
                        // Deliver what is left, then end.
                        while let Some(ClientEvent::Output(b)) = client.recv(Duration::ZERO) {
                            if out.write_all(&b).is_err() {
                                return;
                            }
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// Copies a console client's input to the guest until the client hangs up.
fn forward_input(mut input: BufReader<UnixStream>, console: &Console) {
    let mut buf = [0u8; 256];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = buf.get(..n).unwrap_or_default();
        // The guest may be slow to take it: retry a bounded number of times.
        for _ in 0..200 {
            if rest.is_empty() {
                break;
            }
            let took = console.send_input(rest);
            rest = rest.get(took..).unwrap_or_default();
            if !rest.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// For a config with `kernel`: one vCPU, a usable `/dev/kvm`, and a kernel that
/// passes the loader's checks for the config's memory (one line naming the file).
pub fn check_kernel_config(cfg: &DomainConfig) -> Result<(), Error> {
    let Some(k) = &cfg.kernel else {
        return Ok(());
    };
    let err = |why: String| Error::Kernel {
        file: cfg.file.clone(),
        why,
    };
    if cfg.vcpus != 1 {
        return Err(err(format!(
            "vcpus = {}: shim-hv's KVM runner runs kernels on one vCPU",
            cfg.vcpus
        )));
    }
    kvm::boot::check_kernel(k, cfg.memory_mib).map_err(|e| err(e.to_string()))?;
    kvm::probe().map_err(|why| {
        err(format!(
            "kernel {} needs KVM: /dev/kvm is not usable ({why}); leave out `kernel` to run \
             the built-in in-process guest",
            k.display()
        ))
    })
}

/// Makes the config's relative paths relative to `cwd` (the client's directory).
pub fn resolve_paths(cfg: &mut DomainConfig, cwd: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = cwd.join(&*p);
        }
    };
    if let Some(k) = cfg.kernel.as_mut() {
        fix(k);
    }
    if let Some(r) = cfg.ramdisk.as_mut() {
        fix(r);
    }
    for d in &mut cfg.disks {
        if let Some(t) = d.target.as_mut() {
            fix(t);
        }
    }
    for v in &mut cfg.vifs {
        super::devices::resolve_script(v, cwd);
    }
    for c in &mut cfg.channels {
        if let xl_config::ChannelConnection::Socket(p) = &mut c.connection {
            fix(p);
        }
    }
}

/// The daemon's resident memory in MiB (what `list` shows for Domain-0).
fn own_rss_mib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn supervise(me: Weak<Daemon>, events: std::sync::mpsc::Receiver<DomainEvent>) {
    loop {
        // The timeout only notices a dropped daemon whose hypervisor lives on
        // (its events end the wait otherwise): long, so idle costs no wake-ups.
        match events.recv_timeout(Duration::from_secs(30)) {
            Ok(DomainEvent::StateChanged(id, state)) if state.is_finished() => {
                let Some(d) = me.upgrade() else { return };
                if state != DomainState::Dying {
                    d.on_finished(id, &state);
                }
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                if me.strong_count() == 0 {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Binds the control socket at `sock` (0600), replacing a dead daemon's (the
/// caller holds the lock); returns it with its inode, by which the daemon later
/// knows the socket is still its own.
fn bind_control(sock: &Path) -> Result<(UnixListener, Option<u64>), Error> {
    let _ = fs::remove_file(sock);
    let listener = UnixListener::bind(sock).map_err(io_err(format!("{}", sock.display())))?;
    fs::set_permissions(sock, fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("{}", sock.display())))?;
    let sock_ino = fs::metadata(sock).map(|m| m.ino()).ok();
    Ok((listener, sock_ino))
}

/// Stops the daemon when its control socket is gone or replaced.
fn watch_socket(me: Weak<Daemon>, path: PathBuf, ino: Option<u64>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(d) = me.upgrade() else { return };
        if d.is_stopping() {
            return;
        }
        let now = fs::metadata(&path).map(|m| m.ino()).ok();
        if now.is_none() || now != ino {
            d.log(&format!("{} is gone: stopping", path.display()));
            d.request_stop();
            return;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Guest threads hold the hypervisor; stop them (backends first).
        let doms = std::mem::take(&mut lock(&self.table).doms);
        for (id, mut m) in doms {
            m.devices.detach();
            let _ = self.hv.destroy_domain(DomId(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_parse_with_or_without_dashes() {
        let u = parse_uuid("6a3c1f0e-7d0b-4c2a-9f3e-0123456789ab").unwrap();
        assert_eq!(u.to_string(), "6a3c1f0e-7d0b-4c2a-9f3e-0123456789ab");
        assert_eq!(parse_uuid("6a3c1f0e7d0b4c2a9f3e0123456789ab"), Some(u));
        assert_eq!(parse_uuid("6a3c"), None);
        assert_eq!(parse_uuid("zz3c1f0e7d0b4c2a9f3e0123456789ab"), None);
    }
}
