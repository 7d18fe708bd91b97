//! Helpers for the blk_* tests: a hypervisor, a disk image, a blkback, and a guest
//! running xbd-front in the in-process runner.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use hypercall::gnttab::GrantTable;
use xbd_front::{Config, Device};
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xen_model::inproc::InProcGuest;
use xen_model::{Domain, DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::Xenstore;

/// Grant refs a test guest's table holds (16 frames).
pub const NG: usize = 8192;
/// Blocking-call timeout inside guests.
pub const T: Duration = Duration::from_secs(30);
/// xvda.
pub const XVDA: u32 = 51712;

pub type Table = GrantTable<NG>;
pub type Disk<'a> = Device<&'a InProcGuest, &'a Table, 16, 32>;

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "xenkit-blk-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An image of `len` bytes with a recognisable pattern.
pub fn image(dir: &TempDir, name: &str, len: usize) -> PathBuf {
    let p = dir.path().join(name);
    let data: Vec<u8> = (0..len).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
    std::fs::write(&p, data).unwrap();
    p
}

pub fn hv() -> Arc<Hypervisor> {
    Hypervisor::new(HypervisorConfig::default())
}

pub fn domain(hv: &Hypervisor, name: &str, mib: u64) -> Arc<Domain> {
    hv.create_domain(DomainSpec::new(name, mib))
        .expect("create domain")
}

pub fn file_cfg(path: &Path) -> BlkConfig {
    BlkConfig::new(Target::File(path.to_path_buf()), XVDA, "xvda")
}

/// Runs `body` in a guest with a connected `Disk` on `devid`; returns its result.
/// Checks that every grant was ended after `close`.
pub fn run_guest<T, F>(
    hv: &Arc<Hypervisor>,
    dom: Arc<Domain>,
    devid: u32,
    cfg: Config,
    body: F,
) -> T
where
    T: Send + 'static,
    F: FnOnce(&mut Disk<'_>, &mut Xenstore<&InProcGuest>, &Table) -> T + Send + 'static,
{
    let rx = spawn_guest(hv, dom, devid, cfg, body);
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("guest: {e}"),
        Err(_) => panic!("guest did not finish"),
    }
}

pub fn spawn_guest<T, F>(
    hv: &Arc<Hypervisor>,
    dom: Arc<Domain>,
    devid: u32,
    cfg: Config,
    body: F,
) -> Receiver<Result<T, String>>
where
    T: Send + 'static,
    F: FnOnce(&mut Disk<'_>, &mut Xenstore<&InProcGuest>, &Table) -> T + Send + 'static,
{
    let (tx, rx) = channel();
    hv.spawn_guest(dom, move |g| {
        let p: &InProcGuest = &g;
        // Everything built in place (docs/stack.md): empty table, unattached
        // client, unbound device, then set up through references.
        let table: Box<Table> = Box::new(GrantTable::empty());
        table
            .setup_in_place(p, (NG / 512) as u32)
            .expect("grant table");
        let mut xs = Box::new(Xenstore::unattached(p));
        xs.attach_hvm_params().expect("xenstore");
        let r = (|| -> Result<T, String> {
            let mut disk: Box<Disk<'_>> = Box::new(Device::unbound(p, &*table, cfg));
            disk.bind(devid).map_err(|e| e.to_string())?;
            disk.connect(&mut xs).map_err(|e| format!("connect: {e}"))?;
            let v = body(&mut disk, &mut xs, &table);
            let stuck = disk.close(&mut xs).map_err(|e| format!("close: {e}"))?;
            if stuck != 0 || table.in_use() != 0 {
                return Err(format!(
                    "grants left after close: stuck {stuck}, in use {}",
                    table.in_use()
                ));
            }
            Ok(v)
        })();
        let _ = tx.send(r);
    })
    .expect("spawn guest");
    rx
}

/// Starts a backend for `cfg` on `dom`.
pub fn backend(hv: &Arc<Hypervisor>, dom: &Domain, cfg: BlkConfig) -> BlkBackend {
    BlkBackend::start(hv, dom.id(), cfg).expect("blkback")
}

/// xorshift for reproducible workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
