//! A domain's devices: what the daemon attaches from a config's `disk`, `vif` and
//! `channel` entries, and takes down again.
//!
//! ```text
//!  Daemon::create / restart ── DomainDevices::attach(domid, config) ──▶
//!     disk:  BlkBackend on the image or device (device/vbd/<vdev number>)
//!     vif N: NetBackend on the bridge named by `bridge=` (default xenbr0), one
//!            in-process Bridge per name, shared by every domain of the daemon
//!     channel N: ChannelBackend (device/console/N+1) on a pty or a Unix socket
//!  Daemon::destroy / domain gone ── DomainDevices::detach ──▶ backends stopped,
//!     their backend and frontend directories removed from xenstore
//! ```
//!
//! Devices are attached before the guest starts (as libxl writes device nodes
//! before it unpauses a domain), so a guest finds `device/vbd/N` and
//! `device/vif/N` at boot.
//!
//! disk settings: the target is served as a block device when the config says
//! `phy:` (or `backendtype=phy`) or the path is one, else as an image file (`file:`,
//! `tap:aio:`, `qdisk` and unprefixed entries alike: shim-hv has one backend, and
//! only raw images); `r`/`ro` disks and cdroms are read-only (`mode = "r"`); a
//! cdrom gets `device-type = "cdrom"`; the device id is the vdev number the config
//! resolved (`51712` for `xvda`) and the backend's `dev` keeps the vdev as written.
//! An empty cdrom drive (no target) gets its nodes and a backend that stays in
//! `InitWait`, as Linux's blkback does without media.
//!
//! vif settings:
//! - `mac=`: the guest's MAC; without it [`fill_in_macs`] picks a random
//!   locally-administered address once, at create time, so a restarted domain keeps
//!   its MAC (as libxl keeps the generated one in the domain's config). The backend
//!   side's MAC is the guest's XOR `00:00:00:01:00:00` ([`NetBackend::backend_mac`]).
//! - `bridge=`: the in-process bridge to join (created on first use).
//! - `script=`: run by the netback as `<script> up|down domain=.. vif=.. mac=..
//!   bridge=..` (see [`xen_backends::net`]). An absolute path is used as is, a
//!   bare name is looked up in `/etc/xen/scripts` as libxl does, a relative path
//!   with a `/` is relative to the directory `create` ran in.
//! - `ip=`: written to the backend's `ip` node (space separated, as libxl does); the
//!   built-in guest configures its interface from it.
//! - `mtu=`: the backend's `mtu`.
//! - `rate=`, `vifname=`, `vlan=`, `gatewaydev=` have no effect on the in-process
//!   bridge: [`ignored_settings`] warns about them.
//!
//! hostile modes (shim-hv's `hostile` key and `create --hostile`, see
//! docs/hostile-mode.md): each disk or vif named there gets its backend's mode
//! ([`BlkConfig::hostile`], [`NetConfig::hostile`]), each channel named there
//! its console's (`ChannelConfig::hostile`); the primary console's mode is set
//! by the daemon when it starts the console ([`console_hostile`]).
//! [`hostile_modes`] checks the names against the backends' catalogue.
//!
//! channel settings (see [`xen_backends::console::channel`]): `name=` goes to the
//! `name` nodes; `connection=pty` gets a pty when the guest connects (its path in
//! the frontend's `tty` node); `connection=socket` listens on `path=` from the start
//! (a path that cannot be bound fails the create, naming the entry's line).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hypercall::DomId;
use xennet_front::Mac;

use hypercall::abi::xenbus::XenbusState;

use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xen_backends::bridge::Bridges;
use xen_backends::console::channel::{ChannelBackend, ChannelConfig, Connection};
use xen_backends::console::ConsoleBackend;
use xen_backends::hostile::{BlkHostile, ConsoleHostile, Hostile, NetHostile};
use xen_backends::net::{random_mac, NetBackend, NetConfig};
use xen_backends::xenbus::{self as xb, XenbusBackend};
use xen_model::Hypervisor;
use xenstored::TxId;
use xl_config::{
    Access, ChannelConnection, ChannelSpec, ConfigError, DevType, DiskBackend, DiskSpec,
    DomainConfig, ErrorKind, HostileDevice, MacAddr, VifSpec,
};

use super::Error;

/// Bridge a vif without `bridge=` joins (xl's default).
pub const DEFAULT_BRIDGE: &str = "xenbr0";
/// Where libxl looks for hotplug scripts given by a bare name.
pub const SCRIPT_DIR: &str = "/etc/xen/scripts";

/// The backends of one domain.
#[derive(Debug)]
pub struct DomainDevices {
    hv: Arc<Hypervisor>,
    dom: DomId,
    vbds: Vec<Vbd>,
    vifs: Vec<NetBackend>,
    channels: Vec<ChannelBackend>,
}

/// One disk's backend.
#[derive(Debug)]
pub enum Vbd {
    /// Served by blkback.
    Disk(BlkBackend),
    /// An empty cdrom drive: nodes only, backend in `InitWait`.
    EmptyCdrom(XenbusBackend),
}

impl DomainDevices {
    /// Attaches every disk, vif and channel of `cfg` to domain `dom` (channels are
    /// served by `consoles`). On failure, what was attached is taken down again and
    /// the error names the device.
    pub fn attach(
        hv: &Arc<Hypervisor>,
        bridges: &Bridges,
        consoles: &Arc<ConsoleBackend>,
        dom: DomId,
        cfg: &DomainConfig,
    ) -> Result<DomainDevices, Error> {
        let mut me = DomainDevices {
            hv: hv.clone(),
            dom,
            vbds: Vec::new(),
            vifs: Vec::new(),
            channels: Vec::new(),
        };
        let modes = hostile_modes(cfg)?;
        let mode_of = |dev: HostileDevice| modes.iter().find_map(|&(d, h)| (d == dev).then_some(h));
        for d in &cfg.disks {
            let hostile = match mode_of(HostileDevice::Disk(d.vdev_number.number())) {
                Some(Hostile::Blk(h)) => Some(h),
                _ => None,
            };
            match attach_disk(hv, dom, d, hostile) {
                Ok(v) => me.vbds.push(v),
                Err(why) => {
                    me.detach();
                    return Err(Error::Device {
                        file: cfg.file.clone(),
                        line: d.line,
                        device: format!("disk {}", d.vdev),
                        why,
                    });
                }
            }
        }
        for v in &cfg.vifs {
            let hostile = match mode_of(HostileDevice::Vif(v.devid)) {
                Some(Hostile::Net(h)) => Some(h),
                _ => None,
            };
            match attach_vif(hv, bridges, dom, v, hostile) {
                Ok(be) => me.vifs.push(be),
                Err(why) => {
                    me.detach();
                    return Err(Error::Device {
                        file: cfg.file.clone(),
                        line: v.line,
                        device: format!("vif {}", v.devid),
                        why,
                    });
                }
            }
        }
        for c in &cfg.channels {
            let hostile = match mode_of(HostileDevice::Channel(c.devid)) {
                Some(Hostile::Console(h)) => Some(h),
                _ => None,
            };
            match ChannelBackend::start(hv, consoles, dom, channel_config(c, hostile)) {
                Ok(be) => me.channels.push(be),
                Err(e) => {
                    me.detach();
                    return Err(Error::Device {
                        file: cfg.file.clone(),
                        line: c.line,
                        device: format!("channel {}", c.name),
                        why: e.to_string(),
                    });
                }
            }
        }
        Ok(me)
    }

    /// The channel backends.
    pub fn channels(&self) -> &[ChannelBackend] {
        &self.channels
    }

    /// The vif backends.
    pub fn vifs(&self) -> &[NetBackend] {
        &self.vifs
    }

    /// The disk backends.
    pub fn vbds(&self) -> &[Vbd] {
        &self.vbds
    }

    /// Stops every backend and removes its xenstore directories, then the
    /// directories left empty above them (`backend/vif/<domid>`, `backend/vif`,
    /// `backend`), as libxl's `libxl__xs_path_cleanup` does.
    pub fn detach(&mut self) {
        let mut kinds = Vec::new();
        if !self.vbds.is_empty() {
            kinds.push("vbd");
        }
        if !self.vifs.is_empty() {
            kinds.push("vif");
        }
        if !self.channels.is_empty() {
            kinds.push("console");
        }
        for v in self.vbds.drain(..) {
            match v {
                Vbd::Disk(be) => be.destroy(),
                Vbd::EmptyCdrom(xbe) => {
                    let _ = xbe.destroy();
                }
            }
        }
        for be in self.vifs.drain(..) {
            be.destroy();
        }
        for be in self.channels.drain(..) {
            be.destroy();
        }
        for kind in kinds {
            remove_empty_parents(&self.hv, kind, self.dom);
        }
    }
}

impl Drop for DomainDevices {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Removes `/local/domain/0/backend/<kind>/<domid>`, then
/// `/local/domain/0/backend/<kind>`, then `/local/domain/0/backend`, each while it is
/// empty (one transaction, so a
/// device created meanwhile keeps its parents).
fn remove_empty_parents(hv: &Arc<Hypervisor>, kind: &str, dom: DomId) {
    let xs = hv.xenstored().client(0);
    let dirs = [
        format!("/local/domain/0/backend/{kind}/{}", dom.0),
        format!("/local/domain/0/backend/{kind}"),
        "/local/domain/0/backend".to_string(),
    ];
    let _ = xb::with_transaction(&xs, |tx| {
        for d in &dirs {
            match xs.directory(tx, d) {
                Ok(c) if c.is_empty() => xs.rm(tx, d)?,
                _ => break,
            }
        }
        Ok(())
    });
}

/// Every `hostile` entry of `cfg` (the file's and `--hostile`'s) with its mode.
/// A name that is no mode of the device's class is an error naming the file and
/// line (or `--hostile`), the entry and the modes there are.
pub fn hostile_modes(cfg: &DomainConfig) -> Result<Vec<(HostileDevice, Hostile)>, Error> {
    let mut out = Vec::new();
    for h in &cfg.hostile {
        let bad = |why: String| {
            let file = if h.line == 0 {
                "--hostile".to_string()
            } else {
                cfg.file.clone()
            };
            Error::Config(ConfigError {
                file,
                line: h.line,
                kind: ErrorKind::BadHostile(why),
                text: h.entry.clone(),
            })
        };
        let mode: Hostile = h.mode.parse().map_err(|e| bad(format!("{e}")))?;
        if mode.class().prefix() != h.device.class_prefix() {
            return Err(bad(format!(
                "{} is not a mode of {}",
                mode.name(),
                h.device_text
            )));
        }
        out.push((h.device, mode));
    }
    Ok(out)
}

/// The primary console's hostile mode in `cfg`, if any (checked by
/// [`hostile_modes`] before).
pub fn console_hostile(cfg: &DomainConfig) -> Option<ConsoleHostile> {
    cfg.hostile
        .iter()
        .filter(|h| h.device == HostileDevice::Console)
        .find_map(|h| match h.mode.parse() {
            Ok(Hostile::Console(c)) => Some(c),
            _ => None,
        })
}

fn attach_disk(
    hv: &Arc<Hypervisor>,
    dom: DomId,
    d: &DiskSpec,
    hostile: Option<BlkHostile>,
) -> Result<Vbd, String> {
    let devid = d.vdev_number.number();
    let cdrom = d.devtype == DevType::Cdrom;
    let Some(path) = &d.target else {
        // An empty drive: what libxl writes, and a backend waiting for media.
        let spec = xb::DeviceSpec::new("vbd", dom, devid)
            .backend("params", "")
            .backend("type", "phy")
            .backend("mode", "r")
            .backend("dev", &d.vdev)
            .backend("removable", 1)
            .backend("bootable", 1)
            .backend("device-type", "cdrom")
            .frontend("virtual-device", devid)
            .frontend("device-type", "cdrom");
        let mut xbe = xb::XenbusBackend::create(hv, &spec).map_err(|e| e.to_string())?;
        xbe.switch_state(XenbusState::InitWait)
            .map_err(|e| e.to_string())?;
        return Ok(Vbd::EmptyCdrom(xbe));
    };
    let is_blockdev = std::fs::metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    let target = if d.backend == DiskBackend::Phy || is_blockdev {
        Target::Phy(path.clone())
    } else {
        Target::File(path.clone())
    };
    let mut cfg = BlkConfig::new(target, devid, &d.vdev);
    cfg.writable = d.access == Access::ReadWrite && !cdrom;
    cfg.cdrom = cdrom;
    cfg.hostile = hostile;
    BlkBackend::start(hv, dom, cfg)
        .map(Vbd::Disk)
        .map_err(|e| e.to_string())
}

fn attach_vif(
    hv: &Arc<Hypervisor>,
    bridges: &Bridges,
    dom: DomId,
    v: &VifSpec,
    hostile: Option<NetHostile>,
) -> Result<NetBackend, String> {
    let bridge = bridges.get(v.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE));
    let cfg = NetConfig {
        devid: v.devid,
        mac: Some(Mac(v.mac.map_or_else(|| random_mac().0, |m| m.0))),
        script: v.script.as_deref().map(script_path),
        mtu: v.mtu.unwrap_or(NetConfig::default().mtu),
        hostile,
        ..NetConfig::default()
    };
    let be = NetBackend::start(hv, dom, bridge, cfg).map_err(|e| e.to_string())?;
    if !v.ip.is_empty() {
        let ips: Vec<String> = v.ip.iter().map(|a| a.to_string()).collect();
        let path = format!("{}/ip", be.backend_path());
        hv.xenstored()
            .client(0)
            .write(TxId::NONE, &path, ips.join(" ").as_bytes())
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(be)
}

fn channel_config(c: &ChannelSpec, hostile: Option<ConsoleHostile>) -> ChannelConfig {
    ChannelConfig {
        devid: c.devid,
        name: c.name.clone(),
        connection: match &c.connection {
            ChannelConnection::Pty => Connection::Pty,
            ChannelConnection::Socket(p) => Connection::Socket(p.clone()),
        },
        hostile,
    }
}

/// Where a `script=` value points (see the module docs). Relative paths with a
/// `/` were already made absolute by [`resolve_script`].
pub fn script_path(s: &str) -> PathBuf {
    let p = Path::new(s);
    if p.is_absolute() || s.contains('/') {
        p.to_path_buf()
    } else {
        Path::new(SCRIPT_DIR).join(p)
    }
}

/// Makes a relative `script=` path that contains a `/` relative to `cwd`.
pub fn resolve_script(v: &mut VifSpec, cwd: &Path) {
    if let Some(s) = v.script.as_mut() {
        let p = Path::new(s.as_str());
        if !p.is_absolute() && s.contains('/') {
            *s = cwd.join(p).display().to_string();
        }
    }
}

/// Gives every vif without `mac=` a random locally-administered MAC (once, at
/// create time: a restart keeps it).
pub fn fill_in_macs(cfg: &mut DomainConfig) {
    for v in &mut cfg.vifs {
        if v.mac.is_none() {
            v.mac = Some(MacAddr(random_mac().0));
        }
    }
}

/// One warning line (`file:line`) per setting that has no effect here.
pub fn ignored_settings(cfg: &DomainConfig) -> Vec<String> {
    let mut out = Vec::new();
    for v in &cfg.vifs {
        for (key, set) in [
            ("rate", v.rate.is_some()),
            ("vifname", v.vifname.is_some()),
            ("vlan", v.vlan.is_some()),
            ("gatewaydev", v.gatewaydev.is_some()),
        ] {
            if set {
                out.push(format!(
                    "{}:{}: warning: vif {}: {key}= has no effect on shim-hv's in-process bridge",
                    cfg.file, v.line, v.devid
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_resolve_like_libxl() {
        assert_eq!(
            script_path("vif-bridge"),
            PathBuf::from("/etc/xen/scripts/vif-bridge")
        );
        assert_eq!(script_path("/opt/up.sh"), PathBuf::from("/opt/up.sh"));
        let mut v = VifSpec::default_nic(1, 0);
        v.script = Some("tools/up.sh".into());
        resolve_script(&mut v, Path::new("/home/me"));
        assert_eq!(v.script.as_deref(), Some("/home/me/tools/up.sh"));
        v.script = Some("vif-bridge".into());
        resolve_script(&mut v, Path::new("/home/me"));
        assert_eq!(v.script.as_deref(), Some("vif-bridge"));
    }

    #[test]
    fn generated_macs_are_local_unicast_and_kept() {
        let mut cfg = DomainConfig::parse_str(
            "t.cfg",
            "name='t'\nvif=['mac=00:16:3e:00:00:01', 'bridge=br1']\n",
        )
        .unwrap();
        fill_in_macs(&mut cfg);
        assert_eq!(cfg.vifs[0].mac, Some(MacAddr([0, 0x16, 0x3e, 0, 0, 1])));
        let m = cfg.vifs[1].mac.unwrap().0;
        assert_eq!(m[0] & 3, 2, "locally administered, unicast: {m:?}");
        let again = cfg.clone();
        fill_in_macs(&mut cfg);
        assert_eq!(cfg, again);
    }

    #[test]
    fn ignored_vif_settings_warn_with_the_line() {
        let cfg = DomainConfig::parse_str("t.cfg", "name='t'\nvif=['rate=10Mb/s,vifname=foo']\n")
            .unwrap();
        let w = ignored_settings(&cfg);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("t.cfg:2: warning: vif 0: rate="), "{w:?}");
    }
}
