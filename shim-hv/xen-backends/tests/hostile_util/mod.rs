//! xen-conformance's hostile-frontend world ([`FrontendWorld`]) over shim-hv's
//! in-process model: each world is a domain driven raw from the test thread
//! ([`InProcGuest::new`]) with a real grant table, its xenstore writes made as that
//! domain, and one device whose backend (blkback on a disk image, netback on a
//! bridge, or the console backend) runs in its own threads as it does under the
//! toolstack. Neighbours are more domains of the same kind on the same hypervisor,
//! bridge or console backend.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypercall::abi::hvm;
use hypercall::gnttab::GrantTable;
use hypercall::{DomId, Gfn, GrantRef, Port, SharedMem, SharedPages, Xen, PAGE_SIZE};
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xen_backends::bridge::Bridge;
use xen_backends::console::{Console, ConsoleBackend, ConsoleConfig, Sink};
use xen_backends::net::{NetBackend, NetConfig};
use xen_conformance::backend::{Class, FrontPage, FrontendWorld, Grantee};
use xen_model::inproc::InProcGuest;
use xen_model::{Domain, DomainSpec, Hypervisor, HypervisorConfig};
use xenstored::{LocalClient, TxId};

/// Grant refs a world's table holds (16 frames).
pub const NG: usize = 8192;
/// Disk image size: 2048 sectors.
pub const DISK: usize = 1 << 20;
/// xvda.
const XVDA: u32 = 51712;

/// What the worlds of one case share: the hypervisor and the backend host.
pub struct Host {
    class: Class,
    hv: Arc<Hypervisor>,
    bridge: Arc<Bridge>,
    consoles: Arc<ConsoleBackend>,
    dir: PathBuf,
    next: AtomicU8,
    patience: Duration,
}

impl Host {
    /// A fresh hypervisor for one case of `class`; each world waits at most
    /// `patience` in all.
    pub fn new(class: Class, patience: Duration) -> Arc<Host> {
        let hv = Hypervisor::new(HypervisorConfig::default());
        let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xenkit-hostile-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::create_dir_all(&dir);
        Arc::new(Host {
            class,
            hv,
            bridge: Bridge::new("xenbr0"),
            consoles,
            dir,
            next: AtomicU8::new(1),
            patience,
        })
    }

    /// A new domain with one device of the host's class and its backend.
    pub fn world(self: &Arc<Self>) -> Result<ShimWorld, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("hostile{n}");
        let mut spec = DomainSpec::new(&name, 8);
        if self.class == Class::Console {
            spec.console_sink = Some(self.consoles.early_sink());
        }
        let dom = self.hv.create_domain(spec).map_err(|e| e.to_string())?;
        let guest = InProcGuest::new(self.hv.clone(), dom.clone());
        let table = GrantTable::setup(&*guest, (NG / 512) as u32).map_err(|e| e.to_string())?;
        let ctx = Arc::new(DomCtx {
            host: self.clone(),
            n,
            dom,
            guest,
            table: Box::new(table),
            devices: AtomicU8::new(0),
        });
        ctx.device()
    }
}

/// One domain: its memory, grant table and event channels, shared by the worlds of
/// its devices; destroyed with the last of them.
struct DomCtx {
    host: Arc<Host>,
    n: u8,
    dom: Arc<Domain>,
    guest: Arc<InProcGuest>,
    table: Box<GrantTable<NG>>,
    devices: AtomicU8,
}

impl Drop for DomCtx {
    fn drop(&mut self) {
        let _ = self.host.hv.destroy_domain(self.dom.id());
    }
}

impl DomCtx {
    /// The domain's next device of the host's class, with its backend.
    fn device(self: &Arc<Self>) -> Result<ShimWorld, String> {
        let host = &self.host;
        let k = self.devices.fetch_add(1, Ordering::Relaxed);
        let (dom, id, n) = (&self.dom, self.dom.id().0, self.n);
        let (backend, fe_dir, be_dir) = match host.class {
            Class::Blk => {
                let img = host.dir.join(format!("d{n}-{k}.img"));
                let data: Vec<u8> = (0..DISK).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
                std::fs::write(&img, data).map_err(|e| format!("{}: {e}", img.display()))?;
                let devid = XVDA + 16 * u32::from(k);
                let name = format!("xvd{}", char::from(b'a' + k));
                let cfg = BlkConfig::new(Target::File(img), devid, &name);
                let be = BlkBackend::start(&host.hv, dom.id(), cfg).map_err(|e| e.to_string())?;
                let bp = be.backend_path().to_string();
                (
                    Backend::Blk(be),
                    format!("/local/domain/{id}/device/vbd/{devid}"),
                    bp,
                )
            }
            Class::Net => {
                let cfg = NetConfig {
                    devid: u32::from(k),
                    mac: Some(xennet_front::Mac([0xaa, 0, 0, 0x50, 2 + k, n])),
                    ..NetConfig::default()
                };
                let be = NetBackend::start(&host.hv, dom.id(), host.bridge.clone(), cfg)
                    .map_err(|e| e.to_string())?;
                let bp = be.backend_path().to_string();
                (
                    Backend::Net(be),
                    format!("/local/domain/{id}/device/vif/{k}"),
                    bp,
                )
            }
            Class::Console if k == 0 => {
                let c = host
                    .consoles
                    .start(dom, Sink::None)
                    .map_err(|e| e.to_string())?;
                (
                    Backend::Console(c),
                    format!("/local/domain/{id}/console"),
                    String::new(),
                )
            }
            Class::Console => {
                return Err("these worlds give a domain its primary console only".into())
            }
        };
        Ok(ShimWorld {
            xs: host.hv.xenstored().client(id),
            dom0: host.hv.xenstored().client(0),
            ctx: self.clone(),
            backend: Some(backend),
            fe_dir,
            be_dir,
            deadline: Instant::now() + host.patience,
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Backend {
    Blk(BlkBackend),
    Net(NetBackend),
    Console(Arc<Console>),
}

/// One device of a domain, for the cases (see the module docs).
pub struct ShimWorld {
    ctx: Arc<DomCtx>,
    xs: LocalClient,
    dom0: LocalClient,
    backend: Option<Backend>,
    fe_dir: String,
    be_dir: String,
    deadline: Instant,
}

impl ShimWorld {
    /// The domain.
    pub fn domid(&self) -> DomId {
        self.ctx.dom.id()
    }

    /// The domain's page `frame` (one of its pages, as the world allocated it).
    pub fn page(&self, frame: Gfn) -> Option<SharedMem<'_>> {
        SharedMem::map_gfn(&*self.ctx.guest, frame)
    }

    /// [`FrontendWorld::neighbour`], as the concrete world.
    pub fn neighbour_world(&self) -> Result<ShimWorld, String> {
        self.ctx.host.world()
    }

    /// [`FrontendWorld::sibling`], as the concrete world.
    pub fn sibling_world(&self) -> Result<ShimWorld, String> {
        self.ctx.device()
    }
}

impl Drop for ShimWorld {
    fn drop(&mut self) {
        // The backend goes first (its threads unmap what they hold), then the
        // domain with its last device.
        match self.backend.take() {
            Some(Backend::Blk(b)) => b.destroy(),
            Some(Backend::Net(n)) => drop(n),
            Some(Backend::Console(_)) => {
                let _ = self.ctx.host.consoles.remove(self.ctx.dom.id());
            }
            None => {}
        }
    }
}

impl FrontendWorld for ShimWorld {
    fn alloc_page(&self) -> Result<FrontPage<'_>, String> {
        let p = &*self.ctx.guest;
        // Freed with the domain.
        let mem = SharedPages::alloc(p, 1)
            .ok_or("the domain is out of memory")?
            .leak();
        mem.fill(0, PAGE_SIZE, 0);
        let frame = mem.page_gfn(p, 0).ok_or("a page without a frame")?;
        Ok(FrontPage { mem, frame })
    }

    fn grant(&self, frame: Gfn, to: Grantee, readonly: bool) -> Result<GrantRef, String> {
        let dom = match to {
            Grantee::Backend => DomId(0),
            Grantee::NotTheBackend => DomId(self.ctx.dom.id().0 + 7),
        };
        self.ctx
            .table
            .grant_access(dom, frame, readonly)
            .map_err(|e| e.to_string())
    }

    fn end_grant(&self, gref: GrantRef) -> Result<(), String> {
        self.ctx.table.end_access(gref).map_err(|e| e.to_string())
    }

    fn mapped(&self, gref: GrantRef) -> bool {
        self.ctx.host.hv.grant_pins(self.ctx.dom.id(), gref) != 0
    }

    fn grant_capacity(&self) -> u32 {
        NG as u32
    }

    fn bind_port(&self, to: Grantee) -> Result<Port, String> {
        let remote = match to {
            Grantee::Backend => DomId(0),
            Grantee::NotTheBackend => DomId(self.ctx.dom.id().0 + 7),
        };
        Xen(&*self.ctx.guest)
            .evtchn_alloc_unbound(remote)
            .map_err(|e| e.to_string())
    }

    fn notify(&self, port: Port) -> Result<(), String> {
        Xen(&*self.ctx.guest)
            .evtchn_send(port)
            .map_err(|e| e.to_string())
    }

    fn write_key(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let path = format!("{}/{key}", self.fe_dir);
        self.xs
            .write(TxId::NONE, &path, value)
            .map_err(|e| format!("{path}: {e}"))
    }

    fn remove_key(&self, key: &str) -> Result<(), String> {
        let path = format!("{}/{key}", self.fe_dir);
        self.xs
            .rm(TxId::NONE, &path)
            .map_err(|e| format!("{path}: {e}"))
    }

    fn front_key(&self, key: &str) -> Option<Vec<u8>> {
        self.xs
            .read(TxId::NONE, &format!("{}/{key}", self.fe_dir))
            .ok()
    }

    fn backend_key(&self, key: &str) -> Option<Vec<u8>> {
        if self.be_dir.is_empty() {
            return None;
        }
        self.dom0
            .read(TxId::NONE, &format!("{}/{key}", self.be_dir))
            .ok()
    }

    fn wait(&self) -> bool {
        std::thread::sleep(Duration::from_millis(1));
        Instant::now() < self.deadline
    }

    fn console(&self) -> Option<(FrontPage<'_>, Port)> {
        let xen = Xen(&*self.ctx.guest);
        let pfn = xen.hvm_get_param(hvm::PARAM_CONSOLE_PFN).ok()?;
        let port = xen.hvm_get_param(hvm::PARAM_CONSOLE_EVTCHN).ok()?;
        let mem = SharedMem::map_gfn(&*self.ctx.guest, Gfn(pfn))?;
        Some((
            FrontPage {
                mem,
                frame: Gfn(pfn),
            },
            Port(u32::try_from(port).ok()?),
        ))
    }

    fn console_output(&self) -> Vec<u8> {
        match &self.backend {
            Some(Backend::Console(c)) => c.history(),
            _ => Vec::new(),
        }
    }

    fn console_input(&self, bytes: &[u8]) -> usize {
        match &self.backend {
            Some(Backend::Console(c)) => c.send_input(bytes),
            _ => 0,
        }
    }

    fn neighbour(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
        Ok(Box::new(self.neighbour_world()?))
    }

    fn sibling(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
        Ok(Box::new(self.sibling_world()?))
    }
}
