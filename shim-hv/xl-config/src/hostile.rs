//! shim-hv's `hostile` key: devices whose backend misbehaves on purpose, to
//! test the guest's frontends (docs/hostile-mode.md).
//!
//! ```text
//! hostile = [ 'xvda:blk.duplicate_response', 'vif0:net.tx_id_out_of_range', 'console:console.in_prod_past_ring' ]
//! ```
//!
//! Each entry is `DEVICE:MODE` (or `DEVICE=MODE`, as `create --hostile` takes
//! it). DEVICE is a disk of the config by its vdev (as written, or any name or
//! number of the same virtual device: `xvda`, `51712`), `vifN` for the vif with
//! device id N, `console` (or `console0`) for the primary console, or a channel
//! (a secondary console): `consoleN` for `device/console/N` (the first channel
//! is `console1`) or the channel's `name`. MODE names a mode of that device's
//! class: `blk.*` for a disk, `net.*` for a vif, `console.*` for a console or a
//! channel (the toolstack checks the full name against its backends'
//! catalogue). One mode per device.
//!
//! It is a top-level key of its own rather than an option inside a `disk` or
//! `vif` entry because xl ignores top-level keys it does not know (so a config
//! with `hostile` still boots unchanged under real Xen), while it refuses
//! unknown options inside disk and vif entries.

use serde_json::{json, Value as Json};
use xbd_front::vdev::Vdev;

use super::{ChannelSpec, DiskSpec, VifSpec};

/// The device a `hostile` entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostileDevice {
    /// The disk with this virtual device number.
    Disk(u32),
    /// The vif with this device id.
    Vif(u32),
    /// The primary console.
    Console,
    /// A channel (a secondary console) by its console number, `device/console/N`
    /// (N ≥ 1).
    Channel(u32),
}

impl HostileDevice {
    /// The mode-name prefix of the device's class (`blk`, `net`, `console`).
    pub fn class_prefix(self) -> &'static str {
        match self {
            HostileDevice::Disk(_) => "blk",
            HostileDevice::Vif(_) => "net",
            HostileDevice::Console | HostileDevice::Channel(_) => "console",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            HostileDevice::Disk(_) => "a disk",
            HostileDevice::Vif(_) => "a vif",
            HostileDevice::Console => "the console",
            HostileDevice::Channel(_) => "a channel",
        }
    }
}

/// One `hostile` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileSpec {
    /// Its line in the config; 0 for one given on the command line.
    pub line: u32,
    /// The entry as written.
    pub entry: String,
    /// The device as written.
    pub device_text: String,
    /// The device.
    pub device: HostileDevice,
    /// The mode's name as written (checked by the toolstack).
    pub mode: String,
}

impl HostileSpec {
    /// Reads `DEVICE:MODE` or `DEVICE=MODE` against the config's devices; the
    /// error says what is wrong (the caller adds the file, line and entry).
    pub fn parse(
        entry: &str,
        line: u32,
        disks: &[DiskSpec],
        vifs: &[VifSpec],
        channels: &[ChannelSpec],
    ) -> Result<HostileSpec, String> {
        let Some((dev, mode)) = entry.split_once([':', '=']) else {
            return Err("expected DEVICE:MODE, e.g. xvda:blk.never_answers".into());
        };
        let (dev, mode) = (dev.trim(), mode.trim());
        if dev.is_empty() || mode.is_empty() {
            return Err("expected DEVICE:MODE, e.g. xvda:blk.never_answers".into());
        }
        let device = resolve(dev, disks, vifs, channels)?;
        let prefix = device.class_prefix();
        let class_ok = mode
            .split_once('.')
            .is_some_and(|(p, rest)| p == prefix && !rest.is_empty());
        if !class_ok {
            return Err(format!(
                "{dev} is {}: its modes are {prefix}.*, not {mode:?}",
                device.kind()
            ));
        }
        Ok(HostileSpec {
            line,
            entry: entry.to_string(),
            device_text: dev.to_string(),
            device,
            mode: mode.to_string(),
        })
    }

    /// The entry as JSON (`create -n`, `list -l`).
    pub fn to_json(&self) -> Json {
        json!({ "device": self.device_text, "mode": self.mode })
    }
}

/// The device `dev` names among the config's.
fn resolve(
    dev: &str,
    disks: &[DiskSpec],
    vifs: &[VifSpec],
    channels: &[ChannelSpec],
) -> Result<HostileDevice, String> {
    if dev == "console" || dev == "console0" {
        return Ok(HostileDevice::Console);
    }
    if let Some(n) = dev.strip_prefix("console") {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            let id: u32 = n.parse().map_err(|_| format!("no channel {n}"))?;
            return if channels.iter().any(|c| c.devid == id) {
                Ok(HostileDevice::Channel(id))
            } else {
                Err(format!("no channel console{id} in this config"))
            };
        }
    }
    if let Some(c) = channels.iter().find(|c| c.name == dev) {
        return Ok(HostileDevice::Channel(c.devid));
    }
    if let Some(n) = dev.strip_prefix("vif") {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            let id: u32 = n.parse().map_err(|_| format!("no vif {n}"))?;
            return if vifs.iter().any(|v| v.devid == id) {
                Ok(HostileDevice::Vif(id))
            } else {
                Err(format!("no vif {id} in this config"))
            };
        }
    }
    if let Some(d) = disks.iter().find(|d| d.vdev == dev) {
        return Ok(HostileDevice::Disk(d.vdev_number.number()));
    }
    match Vdev::parse(dev) {
        Ok(v) => disks
            .iter()
            .find(|d| d.vdev_number.number() == v.number())
            .map(|d| HostileDevice::Disk(d.vdev_number.number()))
            .ok_or_else(|| format!("no disk {dev} in this config")),
        Err(_) => Err(format!(
            "{dev:?} is not a device: a disk's vdev (xvda), vifN, console, or a channel (consoleN or its name)"
        )),
    }
}
