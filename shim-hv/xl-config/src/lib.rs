//! Domain config files: xl's `KEY = VALUE` format (`xl.cfg(5)`), with the disk
//! and network entry syntaxes of `xl-disk-configuration(5)` and
//! `xl-network-configuration(5)`, xl's `channel` entries (named secondary
//! consoles, `xen-pv-channel(7)`), plus the plain-value spellings of old xm
//! configs (`cpu = -1`, `nics = 1`, `builder = 'linux'`, `autorestart`,
//! `restart`, `phy:DEV,VDEV,MODE`).
//!
//! ```text
//!  file ──syntax──▶ [Setting] ──DomainConfig::from_settings──▶ DomainConfig ──▶ to_json()
//!                    key, value, line     typed values, warnings             validate_paths()
//! ```
//!
//! Policy:
//! - every error is a [`ConfigError`] `file:line: message (text)` naming the
//!   offending text; parsing stops at the first one;
//! - a repeated key: the last one wins, with a warning; `KEY += VALUE` appends
//!   to a string or list (xl);
//! - unknown keys and known keys shim-hv ignores are [`Warning`]s collected in
//!   [`DomainConfig::warnings`] (never printed by the library);
//! - unsupported features are refused, not ignored: `type = "hvm"`,
//!   `builder = "hvm"`, `bootloader`, device passthrough (`pci`, `dtdev`,
//!   `iomem`, `ioports`, `irqs`, `usbdev`), non-raw images, block scripts,
//!   driver-domain backends, `w!`;
//! - PV configs (no `type`, `type = "pv"`, `builder = "linux"`/`"generic"`)
//!   are accepted with a warning: shim-hv starts every guest as PVH, so the
//!   kernel needs a PVH entry note;
//! - Python (`import`, `def`, calls, expressions) is refused with a message
//!   that xm's Python configs are not supported.
//!
//! Disk vdevs: xl's rules (see [`xbd_front::vdev`]). Old xm configs that use a
//! host device name as the vdev (the NetBSD howto's `phy:/dev/wd0e,wd0d,w`)
//! worked because xend `stat()`ed `/dev/wd0d` in dom0 and used its device
//! number (removed in Xen 4.1, commit d3d32407be): a number that depended on the
//! host. We accept such a name only in an entry with an xm prefix (`phy:`,
//! `file:`, `tap:`...), only if it looks like a device name (`[a-z]+[0-9]+[a-z]?`,
//! not starting with `xvd`/`hd`/`sd` + letter, whose errors are real), keep the
//! name as written, and give the disk the lowest xvd disk number no other disk
//! of the config uses, in config order (so `wd0d` alone becomes `xvda`, 51712),
//! with a [`WarningKind::HostVdev`] warning. NetBSD guests name vbds `xbdN` in
//! probe order whatever the number, so this keeps such configs working.
//!
//! ```
//! use xl_config::DomainConfig;
//!
//! let cfg = DomainConfig::parse_str("nbsd.cfg", "\
//! kernel = \"/netbsd-XEN3_DOMU\"
//! memory = 128
//! name = \"nbsd\"
//! disk = [ 'phy:/dev/wd0e,wd0d,w' ]
//! ").unwrap();
//! assert_eq!(cfg.disks[0].vdev_number.number(), 51712);
//! assert_eq!(cfg.to_json()["disks"][0]["vdev"], "wd0d");
//! ```

mod channel;
mod disk;
mod error;
mod hostile;
mod syntax;
mod vif;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};
use xbd_front::vdev::{Scheme, Vdev};

pub use channel::{ChannelConnection, ChannelSpec, MAX_SOCKET_PATH};
pub use disk::{Access, DevType, DiskBackend, DiskFormat};
pub use error::{ConfigError, ErrorKind, Warning, WarningKind};
pub use hostile::{HostileDevice, HostileSpec};
pub use syntax::{parse as parse_settings, strtol, Atom, AtomKind, Setting, Value};
pub use vif::{MacAddr, VifRate, VifSpec};

/// What to do when the guest powers off, reboots, crashes or trips its watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Destroy the domain.
    Destroy,
    /// Destroy it and create it again (same name and UUID).
    Restart,
    /// Keep the old domain under another name and start a new one.
    RenameRestart,
    /// Leave the domain as it is until destroyed by hand.
    Preserve,
    /// Dump core, then destroy.
    CoredumpDestroy,
    /// Dump core, then restart.
    CoredumpRestart,
    /// Soft reset.
    SoftReset,
}

impl Action {
    /// Parses xl's spellings (`parse_action_on_shutdown`).
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "destroy" => Action::Destroy,
            "restart" => Action::Restart,
            "rename-restart" => Action::RenameRestart,
            "preserve" => Action::Preserve,
            "coredump-destroy" => Action::CoredumpDestroy,
            "coredump-restart" => Action::CoredumpRestart,
            "soft-reset" => Action::SoftReset,
            _ => return None,
        })
    }

    /// xl's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::RenameRestart => "rename-restart",
            Action::Preserve => "preserve",
            Action::CoredumpDestroy => "coredump-destroy",
            Action::CoredumpRestart => "coredump-restart",
            Action::SoftReset => "soft-reset",
        }
    }
}

/// vCPU affinity as written (`cpus`); shim-hv does not pin yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuAffinity {
    /// One string for every vCPU (`"0-3,^1"`, `"all"`, `"nodes:0"`).
    Shared(String),
    /// One string per vCPU (`["2", "3-5"]`).
    PerVcpu(Vec<String>),
}

/// Where a disk's vdev number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VdevSource {
    /// A Xen vdev name or number, as xl reads it.
    Xen,
    /// A host device name from an xm entry (`wd0d`); the number was assigned
    /// (see the module docs).
    HostName,
}

/// One disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// Line of the entry.
    pub line: u32,
    /// The entry as written.
    pub spec: String,
    /// Image or device; `None` for an empty cdrom drive.
    pub target: Option<PathBuf>,
    /// Always [`DiskFormat::Raw`] or [`DiskFormat::Empty`] here (others are refused).
    pub format: DiskFormat,
    /// The vdev as written (without a `:cdrom` suffix).
    pub vdev: String,
    /// The number for `device/vbd/<N>`.
    pub vdev_number: Vdev,
    /// How the number was obtained.
    pub vdev_source: VdevSource,
    /// Read-only or read-write (cdroms are read-only).
    pub access: Access,
    /// Disk or cdrom.
    pub devtype: DevType,
    /// Backend kind from the xm prefix or `backendtype=`.
    pub backend: DiskBackend,
}

/// The guest type shim-hv will build. Only PVH exists; the enum leaves room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestType {
    /// PVH: HVM container, PV devices, kernel entered at its PVH note.
    Pvh,
}

/// Default memory when `memory` is absent (xm's default; xl's libxl uses 32).
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Largest `memory`/`maxmem` accepted, in MiB (4 TiB).
pub const MAX_MEMORY_MIB: u64 = 4 << 20;
/// Largest config file [`DomainConfig::parse_file`] reads (real ones are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `vcpus` accepted (Xen's HVM_MAX_VCPUS).
pub const MAX_VCPUS: u32 = 128;

/// A parsed domain config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// The config file name used in messages.
    pub file: String,
    /// `name` (mandatory).
    pub name: String,
    /// `uuid`, lower case; `None` means generate one at create time.
    pub uuid: Option<String>,
    /// What shim-hv builds.
    pub guest_type: GuestType,
    /// `kernel`; `None` (no `kernel` key) means shim-hv's built-in in-process
    /// guest (there is no bootloader support).
    pub kernel: Option<PathBuf>,
    /// `ramdisk`.
    pub ramdisk: Option<PathBuf>,
    /// Kernel command line: `cmdline`, or `root=ROOT EXTRA` from `root`/`extra`.
    pub cmdline: Option<String>,
    /// `memory` in MiB.
    pub memory_mib: u64,
    /// `maxmem` in MiB (defaults to `memory`).
    pub maxmem_mib: u64,
    /// `vcpus` (default 1).
    pub vcpus: u32,
    /// `maxvcpus` (defaults to `vcpus`).
    pub maxvcpus: u32,
    /// xm's `cpu`: the physical CPU for vCPU 0; `None` for `-1` or absent.
    pub cpu: Option<u32>,
    /// `cpus`.
    pub cpus: Option<CpuAffinity>,
    /// `disk` entries in order.
    pub disks: Vec<DiskSpec>,
    /// `vif` entries (plus xm `nics` padding) in order.
    pub vifs: Vec<VifSpec>,
    /// `channel` entries in order (consoles 1, 2, ...).
    pub channels: Vec<ChannelSpec>,
    /// `on_poweroff` (default destroy).
    pub on_poweroff: Action,
    /// `on_reboot` (default restart).
    pub on_reboot: Action,
    /// `on_crash` (default destroy).
    pub on_crash: Action,
    /// `on_watchdog` (default destroy).
    pub on_watchdog: Action,
    /// shim-hv's `hostile` entries (devices whose backend misbehaves on
    /// purpose; see [`HostileSpec`]), plus those added by
    /// [`DomainConfig::add_hostile`]. At most one per device.
    pub hostile: Vec<HostileSpec>,
    /// Everything the parse accepted with a remark.
    pub warnings: Vec<Warning>,
    kernel_line: u32,
    ramdisk_line: u32,
}

/// Keys handled by [`DomainConfig`].
const HANDLED: &[&str] = &[
    "name",
    "uuid",
    "type",
    "builder",
    "kernel",
    "ramdisk",
    "cmdline",
    "root",
    "extra",
    "memory",
    "maxmem",
    "vcpus",
    "maxvcpus",
    "cpu",
    "cpus",
    "disk",
    "vif",
    "nics",
    "channel",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "on_watchdog",
    "autorestart",
    "restart",
    "pci",
    "dtdev",
    "iomem",
    "ioports",
    "irqs",
    "usbdev",
    "bootloader",
    "bootloader_args",
    "hostile",
];

/// Keys xl or xm know that shim-hv accepts and ignores (with a warning).
const IGNORED: &[&str] = &[
    "on_soft_reset",
    "cpus_soft",
    "cpu_weight",
    "cap",
    "period",
    "slice",
    "latency",
    "extratime",
    "seclabel",
    "init_seclabel",
    "pool",
    "vfb",
    "vkb",
    "vtpm",
    "p9",
    "pvcalls",
    "vdispl",
    "vsnd",
    "vuart",
    "virtio",
    "serial",
    "sdl",
    "opengl",
    "vnc",
    "vnclisten",
    "vncdisplay",
    "vncunused",
    "vncpasswd",
    "vncconsole",
    "keymap",
    "localtime",
    "rtc_timeoffset",
    "tsc_mode",
    "max_grant_frames",
    "max_maptrack_frames",
    "max_grant_version",
    "max_event_channels",
    "e820_host",
    "driver_domain",
    "device_model_version",
    "device_model_override",
    "device_model_stubdomain_override",
    "device_model_args",
    "device_model_args_pv",
    "device_model_args_hvm",
    "device_model_user",
    "acpi",
    "apic",
    "pae",
    "hap",
    "nestedhvm",
    "viridian",
    "boot",
    "hdtype",
    "usb",
    "usbdevice",
    "usbctrl",
    "usbversion",
    "soundhw",
    "stdvga",
    "vga",
    "videoram",
    "xen_platform_pci",
    "claim_mode",
    "shadow_memory",
    "nomigrate",
    "oos",
    "vpmu",
    "altp2m",
    "hpet",
    "timer_mode",
    "vif2",
    "vscsi",
    "ip",
    "gateway",
    "netmask",
    "hostname",
    "interface",
    "dhcp",
    "vcpu_avail",
    "cpuid",
    "features",
    "loader",
    "device_model",
    "pvshim",
    "pvshim_path",
    "pvshim_cmdline",
    "pvshim_extra",
    "llc_colors",
    "vnuma",
    "gic_version",
    "nr_spis",
    "dm_restrict",
    "xenstore_feature_mask",
    "xenstore_quota",
    "smbios",
    "ms_vm_genid",
    "mca_caps",
    "msr_relaxed",
    "vmtrace_buf_kb",
    "trap_unmapped_accesses",
    "mmio_hole",
    "rdm",
    "rdm_mem_boundary",
    "gfx_passthru",
    "pci_permissive",
    "pci_msitranslate",
    "pci_power_mgmt",
    "pci_seize",
    "blkif",
    "netif",
    "tpmif",
    "memory_sharing",
    "s3_integrity",
    "bootargs",
    "on_xend_start",
    "on_xend_stop",
    "vhpt",
    "superpages",
    "machine_address_size",
    "suppress_spurious_page_faults",
    "device_tree",
    "spice",
    "nographic",
    "monitor",
    "parallel",
    "xauthority",
    "display",
];

/// The settings folded by key: last wins, `+=` appends.
struct Settings {
    file: String,
    order: Vec<Setting>,
    index: HashMap<String, usize>,
    used: HashSet<String>,
    warnings: Vec<Warning>,
}

impl Settings {
    fn new(file: &str, settings: Vec<Setting>) -> Result<Settings, ConfigError> {
        let mut s = Settings {
            file: file.to_owned(),
            order: Vec::new(),
            index: HashMap::new(),
            used: HashSet::new(),
            warnings: Vec::new(),
        };
        for set in settings {
            match s.index.get(&set.key).copied() {
                None => {
                    s.index.insert(set.key.clone(), s.order.len());
                    s.order.push(set);
                }
                Some(i) => {
                    let Some(old) = s.order.get_mut(i) else {
                        continue;
                    };
                    if set.append {
                        match (&mut old.value, set.value) {
                            (Value::Atom(a), Value::Atom(b))
                                if a.kind == AtomKind::Str && b.kind == AtomKind::Str =>
                            {
                                a.text.push_str(&b.text)
                            }
                            (Value::List(a, _), Value::List(b, _)) => a.extend(b),
                            (_, v) => {
                                return Err(ConfigError::new(
                                    file,
                                    set.line,
                                    ErrorKind::BadAppend { key: set.key },
                                    value_text(&v),
                                ))
                            }
                        }
                    } else {
                        s.warnings.push(Warning {
                            file: file.to_owned(),
                            line: set.line,
                            kind: WarningKind::RepeatedKey {
                                previous_line: old.line,
                            },
                            text: set.key.clone(),
                        });
                        *old = set;
                    }
                }
            }
        }
        Ok(s)
    }

    fn get(&mut self, key: &str) -> Option<&Setting> {
        self.used.insert(key.to_owned());
        self.index.get(key).and_then(|&i| self.order.get(i))
    }

    fn err(&self, line: u32, kind: ErrorKind, text: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.file, line, kind, text)
    }

    fn warn(&mut self, line: u32, kind: WarningKind, text: impl Into<String>) {
        self.warnings.push(Warning {
            file: self.file.clone(),
            line,
            kind,
            text: text.into(),
        });
    }

    /// A single value's text; `+=` on a number is refused as xl does.
    fn atom(&mut self, key: &str) -> Result<Option<(Atom, bool)>, ConfigError> {
        let Some(set) = self.get(key).cloned() else {
            return Ok(None);
        };
        match set.value {
            Value::Atom(a) => Ok(Some((a, set.append))),
            Value::List(_, line) => Err(self.err(
                line,
                ErrorKind::NotASingleValue { key: key.into() },
                value_text(&set.value),
            )),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<(String, u32)>, ConfigError> {
        Ok(self.atom(key)?.map(|(a, _)| (a.text, a.line)))
    }

    fn long(
        &mut self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<(i64, Atom)>, ConfigError> {
        let Some((a, append)) = self.atom(key)? else {
            return Ok(None);
        };
        if append {
            return Err(self.err(a.line, ErrorKind::BadAppend { key: key.into() }, a.text));
        }
        match strtol(&a.text) {
            Some(v) => Ok(Some((v, a))),
            None => Err(self.err(
                a.line,
                ErrorKind::BadNumber {
                    key: key.into(),
                    expected,
                },
                a.text,
            )),
        }
    }

    /// A list of strings; a single string is an error naming its line ([`ErrorKind::NotAList`]).
    fn string_list(&mut self, key: &str) -> Result<Option<Vec<Atom>>, ConfigError> {
        let Some(set) = self.get(key).cloned() else {
            return Ok(None);
        };
        match set.value {
            // xl does not read a string here (`disk = "file:..."`): it drops the
            // setting and boots without the device. Say so instead.
            Value::Atom(a) => {
                Err(self.err(a.line, ErrorKind::NotAList { key: key.into() }, a.text))
            }
            Value::List(items, _) => {
                let mut out = Vec::new();
                for it in items {
                    match it {
                        Value::Atom(a) => out.push(a),
                        v @ Value::List(..) => {
                            return Err(self.err(
                                v.line(),
                                ErrorKind::NotAString { key: key.into() },
                                value_text(&v),
                            ))
                        }
                    }
                }
                Ok(Some(out))
            }
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Atom(a) => a.text.clone(),
        Value::List(items, _) => {
            let inner: Vec<String> = items.iter().map(value_text).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

fn valid_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn valid_cpus(s: &str) -> bool {
    let num = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    let range = |t: &str| match t.split_once('-') {
        Some((a, b)) => num(a) && num(b),
        None => num(t),
    };
    !s.trim().is_empty()
        && s.split(',').all(|t| {
            let t = t.trim();
            let t = t.strip_prefix('^').unwrap_or(t);
            if t == "all" {
                return true;
            }
            match t.split_once(':') {
                Some((k, r)) => matches!(k, "node" | "nodes" | "socket" | "sockets") && range(r),
                None => range(t),
            }
        })
}

/// Where the `#` comment of one line starts (outside `'`/`"` strings, whose
/// backslash escapes are skipped), as the lexer sees it.
fn comment_start(line: &[u8]) -> Option<usize> {
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        match (quote, b) {
            (Some(_), b'\\') => i += 1,
            (Some(q), b) if b == q => quote = None,
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'#') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `[a-z]+[0-9]+[a-z]?`, and not an xvd/hd/sd name (those errors are real).
fn host_device_name(s: &str) -> bool {
    let b = s.as_bytes();
    let letters = b.iter().take_while(|c| c.is_ascii_lowercase()).count();
    let digits = b
        .iter()
        .skip(letters)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let tail = b.len() - letters - digits;
    let xen_prefix = ["xvd", "hd", "sd"].iter().any(|p| {
        s.strip_prefix(p)
            .and_then(|r| r.bytes().next())
            .is_some_and(|c| c.is_ascii_lowercase())
    });
    letters > 0
        && digits > 0
        && (tail == 0 || (tail == 1 && b.last().is_some_and(u8::is_ascii_lowercase)))
        && !xen_prefix
}

impl DomainConfig {
    /// Reads and parses a config file; `path` as displayed is the file name in messages.
    pub fn parse_file(path: &Path) -> Result<DomainConfig, ConfigError> {
        let text = DomainConfig::read_text(path)?;
        DomainConfig::parse_str(&path.display().to_string(), &text)
    }

    /// Reads a config file's text: at most [`MAX_CONFIG_BYTES`] (a huge file, or an
    /// endless one such as `/dev/zero`, is an [`ErrorKind::Io`] error naming the
    /// line where the limit is reached, never read into memory whole); see
    /// [`DomainConfig::text_from_bytes`] for the UTF-8 rules.
    pub fn read_text(path: &Path) -> Result<String, ConfigError> {
        use std::io::Read;
        let file = path.display().to_string();
        let io = |e: String| ConfigError::new(&file, 0, ErrorKind::Io(e), "");
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| io(e.to_string()))?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            let limit = MAX_CONFIG_BYTES as usize;
            let line = 1 + bytes.iter().take(limit).filter(|&&c| c == b'\n').count();
            return Err(ConfigError::new(
                &file,
                u32::try_from(line).unwrap_or(u32::MAX),
                ErrorKind::Io(format!(
                    "larger than {MAX_CONFIG_BYTES} bytes (reached on this line): not a domain config"
                )),
                "",
            ));
        }
        DomainConfig::text_from_bytes(&file, &bytes)
    }

    /// A config file's bytes as text, checked line by line as xl reads them: the
    /// part of a line before its comment must be UTF-8 (else a syntax error naming
    /// that line); a comment may hold anything (a Latin-1 `# café` is common in old
    /// configs and xl ignores it), its bad bytes become U+FFFD.
    pub fn text_from_bytes(file: &str, bytes: &[u8]) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(bytes.len());
        for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            match std::str::from_utf8(line) {
                Ok(s) => out.push_str(s),
                Err(e) if e.valid_up_to() >= comment_start(line).unwrap_or(line.len()) => {
                    out.push_str(&String::from_utf8_lossy(line));
                }
                Err(_) => {
                    return Err(ConfigError::new(
                        file,
                        u32::try_from(i + 1).unwrap_or(u32::MAX),
                        ErrorKind::Syntax("not UTF-8"),
                        "",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Parses config text; `file` names it in messages.
    pub fn parse_str(file: &str, text: &str) -> Result<DomainConfig, ConfigError> {
        let settings = syntax::parse(file, text)?;
        DomainConfig::from_settings(file, settings)
    }

    /// Builds the typed config from parsed settings. Keys are read in a fixed
    /// order (so the first error found is always the same one); the keys nothing
    /// read end up as warnings.
    pub fn from_settings(file: &str, settings: Vec<Setting>) -> Result<DomainConfig, ConfigError> {
        let mut s = Settings::new(file, settings)?;
        read_guest_type(&mut s)?;
        refuse_unsupported(&mut s)?;
        let (name, uuid) = read_identity(&mut s)?;
        let Boot {
            kernel,
            kernel_line,
            ramdisk,
            ramdisk_line,
            cmdline,
        } = read_boot(&mut s)?;
        let (memory_mib, maxmem_mib) = read_memory(&mut s)?;
        let (vcpus, maxvcpus) = read_vcpus(&mut s)?;
        let (cpu, cpus) = read_affinity(&mut s)?;
        let [on_poweroff, on_reboot, on_crash, on_watchdog] = read_actions(&mut s)?;
        let disks = read_disks(&mut s)?;
        let vifs = read_vifs(&mut s)?;
        let channels = read_channels(&mut s)?;
        let hostile = read_hostile(&mut s, &disks, &vifs, &channels)?;
        let warnings = finish_warnings(s);

        Ok(DomainConfig {
            file: file.to_owned(),
            name,
            uuid,
            guest_type: GuestType::Pvh,
            kernel,
            ramdisk,
            cmdline,
            memory_mib,
            maxmem_mib,
            vcpus,
            maxvcpus,
            cpu,
            cpus,
            disks,
            vifs,
            channels,
            on_poweroff,
            on_reboot,
            on_crash,
            on_watchdog,
            hostile,
            warnings,
            kernel_line,
            ramdisk_line,
        })
    }

    /// Adds a hostile mode given outside the file (`create --hostile
    /// DEVICE=MODE`): `DEVICE=MODE` or `DEVICE:MODE`, as in the `hostile` key.
    /// It replaces an entry of the file for the same device. Errors are
    /// `ORIGIN: bad hostile entry: WHY (ENTRY)`, one line.
    pub fn add_hostile(&mut self, entry: &str, origin: &str) -> Result<(), ConfigError> {
        let h = HostileSpec::parse(entry, 0, &self.disks, &self.vifs, &self.channels).map_err(
            |why| {
                ConfigError::new(
                    origin,
                    0,
                    ErrorKind::BadHostile(format!("{why} (config {})", self.file)),
                    entry,
                )
            },
        )?;
        self.hostile.retain(|o| o.device != h.device);
        self.hostile.push(h);
        Ok(())
    }

    /// Checks the files the config names: the kernel and ramdisk are readable
    /// regular files; every disk target exists, is a regular file or a block
    /// device (`phy:` targets must be block devices) and can be opened for reading.
    /// Nothing is read, and nothing waits: a FIFO is refused by its type before
    /// any open, and the open is non-blocking (docs/hostile-input.md H3). Separate from
    /// parsing so a dry run can be done elsewhere. Returns every problem found.
    pub fn validate_paths(&self) -> Result<(), Vec<ConfigError>> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let mut errs = Vec::new();
        let mut check =
            |what: &'static str, line: u32, path: &Path, block_ok: bool, block_only: bool| {
                let text = path.display().to_string();
                let why = match std::fs::metadata(path) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && std::fs::symlink_metadata(path).is_ok() =>
                    {
                        Some("dangling symbolic link".to_owned())
                    }
                    Err(e) => Some(e.to_string()),
                    Ok(m) => {
                        let ft = m.file_type();
                        let found = file_type_name(ft);
                        if block_only && !ft.is_block_device() {
                            Some(format!("{found}, not a block device (phy:)"))
                        } else if ft.is_file() || (block_ok && ft.is_block_device()) {
                            std::fs::OpenOptions::new()
                                .read(true)
                                .custom_flags(libc::O_NONBLOCK)
                                .open(path)
                                .err()
                                .map(|e| e.to_string())
                        } else if block_ok {
                            Some(format!("{found}, not a regular file or block device"))
                        } else {
                            Some(format!("{found}, not a regular file"))
                        }
                    }
                };
                if let Some(why) = why {
                    errs.push(ConfigError::new(
                        &self.file,
                        line,
                        ErrorKind::BadPath { what, why },
                        text,
                    ));
                }
            };
        if let Some(k) = &self.kernel {
            check("kernel", self.kernel_line, k, false, false);
        }
        if let Some(r) = &self.ramdisk {
            check("ramdisk", self.ramdisk_line, r, false, false);
        }
        for d in &self.disks {
            if let Some(t) = &d.target {
                check("disk", d.line, t, true, d.backend == DiskBackend::Phy);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The domain description `shim-hv create -n` prints.
    pub fn to_json(&self) -> Json {
        let disks: Vec<Json> = self
            .disks
            .iter()
            .map(|d| {
                json!({
                    "vdev": d.vdev,
                    "vdev_number": d.vdev_number.number(),
                    "vdev_name": d.vdev_number.name().ok().map(|n| n.to_string()),
                    "vdev_assigned": d.vdev_source == VdevSource::HostName,
                    "mode": d.access.mode(),
                    "target": d.target.as_ref().map(|t| t.display().to_string()),
                    "devtype": match d.devtype { DevType::Disk => "disk", DevType::Cdrom => "cdrom" },
                    "format": d.format.as_str(),
                    "backend": d.backend.as_str(),
                })
            })
            .collect();
        let vifs: Vec<Json> = self
            .vifs
            .iter()
            .map(|v| {
                json!({
                    "devid": v.devid,
                    "mac": v.mac.map(|m| m.to_string()),
                    "bridge": v.bridge,
                    "script": v.script,
                    "ip": v.ip.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "vifname": v.vifname,
                    "mtu": v.mtu,
                    "rate": v.rate.map(|r| json!({"bytes_per_sec": r.bytes_per_sec, "interval_us": r.interval_us})),
                })
            })
            .collect();
        let channels: Vec<Json> = self
            .channels
            .iter()
            .map(|c| {
                json!({
                    "devid": c.devid,
                    "name": c.name,
                    "connection": c.connection.as_str(),
                    "path": match &c.connection {
                        ChannelConnection::Socket(p) => Some(p.display().to_string()),
                        ChannelConnection::Pty => None,
                    },
                })
            })
            .collect();
        json!({
            "name": self.name,
            "uuid": self.uuid,
            "type": match self.guest_type { GuestType::Pvh => "pvh" },
            "kernel": self.kernel.as_ref().map(|k| k.display().to_string()),
            "ramdisk": self.ramdisk.as_ref().map(|r| r.display().to_string()),
            "cmdline": self.cmdline,
            "memory": self.memory_mib,
            "maxmem": self.maxmem_mib,
            "vcpus": self.vcpus,
            "maxvcpus": self.maxvcpus,
            "cpu": self.cpu,
            "disks": disks,
            "vifs": vifs,
            "channels": channels,
            "hostile": self.hostile.iter().map(HostileSpec::to_json).collect::<Vec<_>>(),
            "actions": {
                "on_poweroff": self.on_poweroff.as_str(),
                "on_reboot": self.on_reboot.as_str(),
                "on_crash": self.on_crash.as_str(),
                "on_watchdog": self.on_watchdog.as_str(),
            },
        })
    }
}

/// `type` and `builder`: PVH, or PV (xl's default) started as PVH with a warning;
/// HVM and unknown types are refused.
fn read_guest_type(s: &mut Settings) -> Result<(), ConfigError> {
    let mut requested_pv: Option<u32> = None;
    let ty = s.string("type")?;
    let builder = s.string("builder")?;
    if let Some((t, line)) = &ty {
        match t.as_str() {
            "pvh" => {}
            "pv" => requested_pv = Some(*line),
            "hvm" => {
                return Err(s.err(
                    *line,
                    ErrorKind::Unsupported("HVM guests: shim-hv runs PVH guests".into()),
                    t.clone(),
                ))
            }
            _ => {
                return Err(s.err(
                    *line,
                    ErrorKind::BadValue {
                        key: "type".into(),
                        expected: "pvh, pv or hvm",
                    },
                    t.clone(),
                ))
            }
        }
    }
    if let Some((b, line)) = &builder {
        match b.as_str() {
            "linux" | "generic" => {
                if ty.as_ref().is_some_and(|(t, _)| t != "pv") {
                    return Err(s.err(
                        *line,
                        ErrorKind::Conflict(format!(
                            "builder = \"{b}\" (PV) and type = \"{}\"",
                            ty.as_ref().map_or("", |(t, _)| t.as_str())
                        )),
                        b.clone(),
                    ));
                }
                s.warn(
                    *line,
                    WarningKind::Deprecated("`builder` is deprecated; use `type`".into()),
                    b.clone(),
                );
                requested_pv = Some(*line);
            }
            "hvm" => {
                return Err(s.err(
                    *line,
                    ErrorKind::Unsupported("HVM guests: shim-hv runs PVH guests".into()),
                    b.clone(),
                ))
            }
            _ => {
                return Err(s.err(
                    *line,
                    ErrorKind::BadValue {
                        key: "builder".into(),
                        expected: "generic or linux (PV)",
                    },
                    b.clone(),
                ))
            }
        }
    }
    if ty.is_none() && builder.is_none() {
        requested_pv = Some(0);
    }
    // The built-in guest (no kernel) has no entry point to worry about.
    let has_kernel = s.get("kernel").is_some();
    if let (Some(line), true) = (requested_pv, has_kernel) {
        s.warn(
            line,
            WarningKind::Adjusted(
                "PV guest (xl's default type on x86): shim-hv starts it as PVH, so the \
                 kernel needs a PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY)"
                    .into(),
            ),
            "",
        );
    }
    Ok(())
}

/// Features shim-hv refuses rather than ignores: a bootloader, device passthrough.
fn refuse_unsupported(s: &mut Settings) -> Result<(), ConfigError> {
    if let Some((b, line)) = s.string("bootloader")? {
        if !b.is_empty() {
            return Err(s.err(
                line,
                ErrorKind::Unsupported("bootloader (give the kernel with kernel = ...)".into()),
                b,
            ));
        }
    }
    for key in ["pci", "dtdev", "iomem", "ioports", "irqs", "usbdev"] {
        if let Some(set) = s.get(key).cloned() {
            let empty = match &set.value {
                Value::List(items, _) => items.is_empty(),
                Value::Atom(a) => a.text.is_empty(),
            };
            if !empty {
                return Err(s.err(
                    set.value.line(),
                    ErrorKind::Unsupported(format!("device passthrough (`{key}`)")),
                    value_text(&set.value),
                ));
            }
        }
    }
    if let Some(set) = s.get("bootloader_args").cloned() {
        s.warn(set.line, WarningKind::IgnoredKey, "bootloader_args");
    }
    Ok(())
}

/// `name` (mandatory) and `uuid`.
fn read_identity(s: &mut Settings) -> Result<(String, Option<String>), ConfigError> {
    let name = match s.string("name")? {
        None => return Err(s.err(0, ErrorKind::MissingKey("name"), "")),
        Some((n, line)) => {
            if n.is_empty() || n.contains('/') || n.chars().any(char::is_control) {
                return Err(s.err(line, ErrorKind::BadName, n));
            }
            n
        }
    };
    let uuid = match s.string("uuid")? {
        None => None,
        Some((u, line)) => {
            if !valid_uuid(&u) {
                return Err(s.err(line, ErrorKind::BadUuid, u));
            }
            Some(u.to_ascii_lowercase())
        }
    };
    Ok((name, uuid))
}

/// What [`read_boot`] found.
struct Boot {
    kernel: Option<PathBuf>,
    kernel_line: u32,
    ramdisk: Option<PathBuf>,
    ramdisk_line: u32,
    cmdline: Option<String>,
}

/// `kernel`, `ramdisk` and the command line (`cmdline`, or xm's `root` + `extra`).
fn read_boot(s: &mut Settings) -> Result<Boot, ConfigError> {
    let (kernel, kernel_line) = match s.string("kernel")? {
        Some((k, line)) if !k.is_empty() => (Some(PathBuf::from(k)), line),
        Some((k, line)) => return Err(s.err(line, ErrorKind::MissingKey("kernel"), k)),
        None => (None, 0),
    };
    let (ramdisk, ramdisk_line) = match s.string("ramdisk")? {
        Some((r, line)) if !r.is_empty() => (Some(PathBuf::from(r)), line),
        _ => (None, 0),
    };
    let cmdline_v = s.string("cmdline")?;
    let root = s.string("root")?;
    let extra = s.string("extra")?;
    let cmdline = match cmdline_v {
        Some((c, line)) => {
            if root.is_some() || extra.is_some() {
                s.warn(
                    line,
                    WarningKind::Adjusted("ignoring root= and extra= in favour of cmdline=".into()),
                    c.clone(),
                );
            }
            Some(c)
        }
        None => {
            // xm stripped a `root=` the user wrote into `root` itself.
            let root = root.map(|(r, _)| r.strip_prefix("root=").unwrap_or(&r).to_owned());
            match (root, extra) {
                (Some(r), Some((e, _))) => Some(format!("root={r} {e}")),
                (Some(r), None) => Some(format!("root={r}")),
                (None, Some((e, _))) => Some(e),
                (None, None) => None,
            }
        }
    };
    Ok(Boot {
        kernel,
        kernel_line,
        ramdisk,
        ramdisk_line,
        cmdline,
    })
}

/// `memory` and `maxmem` in MiB: `(memory, maxmem)`.
fn read_memory(s: &mut Settings) -> Result<(u64, u64), ConfigError> {
    const MEM: &str = "a memory size in MiB from 1 to 4194304";
    let mem = |v: Option<(i64, Atom)>,
               s: &Settings,
               key: &str|
     -> Result<Option<(u64, Atom)>, ConfigError> {
        match v {
            None => Ok(None),
            Some((m, a)) if m >= 1 && (m as u64) <= MAX_MEMORY_MIB => Ok(Some((m as u64, a))),
            Some((_, a)) => Err(s.err(
                a.line,
                ErrorKind::BadNumber {
                    key: key.into(),
                    expected: MEM,
                },
                a.text,
            )),
        }
    };
    let memory = s.long("memory", MEM)?;
    let memory = mem(memory, s, "memory")?;
    let memory_mib = memory.as_ref().map_or(DEFAULT_MEMORY_MIB, |(m, _)| *m);
    let maxmem = s.long("maxmem", MEM)?;
    let maxmem_mib = match mem(maxmem, s, "maxmem")? {
        None => memory_mib,
        Some((m, a)) if m < memory_mib => {
            return Err(s.err(
                a.line,
                ErrorKind::Conflict(format!("maxmem {m} is below memory {memory_mib}")),
                a.text,
            ))
        }
        Some((m, a)) => {
            if m > memory_mib {
                s.warn(
                    a.line,
                    WarningKind::Adjusted(format!(
                        "maxmem above memory: the guest gets {memory_mib} MiB (no ballooning)"
                    )),
                    a.text,
                );
            }
            m
        }
    };
    Ok((memory_mib, maxmem_mib))
}

/// `vcpus` and `maxvcpus`: `(vcpus, maxvcpus)`.
fn read_vcpus(s: &mut Settings) -> Result<(u32, u32), ConfigError> {
    const VCPUS: &str = "a vCPU count from 1 to 128";
    let vcpus = match s.long("vcpus", VCPUS)? {
        None => 1,
        Some((v, a)) if v < 1 => {
            s.warn(
                a.line,
                WarningKind::Adjusted("vcpus below 1: using 1 (as xl)".into()),
                a.text,
            );
            1
        }
        Some((v, _)) if v <= i64::from(MAX_VCPUS) => v as u32,
        Some((_, a)) => {
            return Err(s.err(
                a.line,
                ErrorKind::BadNumber {
                    key: "vcpus".into(),
                    expected: VCPUS,
                },
                a.text,
            ))
        }
    };
    let maxvcpus = match s.long("maxvcpus", VCPUS)? {
        None => vcpus,
        Some((v, a)) if v < i64::from(vcpus) || v > i64::from(MAX_VCPUS) => {
            return Err(s.err(
                a.line,
                ErrorKind::Conflict(format!("maxvcpus must be from vcpus ({vcpus}) to 128")),
                a.text,
            ))
        }
        Some((v, _)) => v as u32,
    };
    Ok((vcpus, maxvcpus))
}

/// xm's `cpu` and xl's `cpus` (vCPU placement).
fn read_affinity(s: &mut Settings) -> Result<(Option<u32>, Option<CpuAffinity>), ConfigError> {
    let cpu = match s.long("cpu", "a CPU number or -1")? {
        None | Some((-1, _)) => None,
        Some((c, _)) if (0..=4095).contains(&c) => Some(c as u32),
        Some((_, a)) => {
            return Err(s.err(
                a.line,
                ErrorKind::BadNumber {
                    key: "cpu".into(),
                    expected: "a CPU number or -1",
                },
                a.text,
            ))
        }
    };
    let cpus = match s.get("cpus").cloned() {
        None => None,
        Some(set) => {
            let bad = |s: &Settings, a: &Atom| {
                s.err(
                    a.line,
                    ErrorKind::BadValue {
                        key: "cpus".into(),
                        expected: "a CPU list such as \"all\", \"0-3,^1\" or \"nodes:0\"",
                    },
                    a.text.clone(),
                )
            };
            match set.value {
                Value::Atom(a) => {
                    if !valid_cpus(&a.text) {
                        return Err(bad(s, &a));
                    }
                    Some(CpuAffinity::Shared(a.text))
                }
                Value::List(..) => {
                    let items = s.string_list("cpus")?.unwrap_or_default();
                    let mut out = Vec::new();
                    for a in items {
                        if !valid_cpus(&a.text) {
                            return Err(bad(s, &a));
                        }
                        out.push(a.text);
                    }
                    Some(CpuAffinity::PerVcpu(out))
                }
            }
        }
    };
    Ok((cpu, cpus))
}

/// Warns about every key nothing read (ignored or unknown); all warnings, by line.
fn finish_warnings(mut s: Settings) -> Vec<Warning> {
    let rest: Vec<(String, u32)> = s
        .order
        .iter()
        .filter(|set| !s.used.contains(&set.key) && !HANDLED.contains(&set.key.as_str()))
        .map(|set| (set.key.clone(), set.line))
        .collect();
    for (key, line) in rest {
        let kind = if IGNORED.contains(&key.as_str()) {
            WarningKind::IgnoredKey
        } else {
            WarningKind::UnknownKey
        };
        s.warn(line, kind, key);
    }
    let mut warnings = s.warnings;
    warnings.sort_by_key(|w| w.line);
    warnings
}

/// `on_poweroff`, `on_reboot`, `on_crash`, `on_watchdog` (in that order): xm's
/// `autorestart`/`restart` first (deprecated), explicit `on_*` override them.
fn read_actions(s: &mut Settings) -> Result<[Action; 4], ConfigError> {
    let mut on_poweroff = Action::Destroy;
    let mut on_reboot = Action::Restart;
    let mut on_crash = Action::Destroy;
    let mut on_watchdog = Action::Destroy;
    if let Some((v, a)) = s.long("autorestart", "a boolean (0/1, True/False)")? {
        s.warn(
            a.line,
            WarningKind::Deprecated("xm's `autorestart`: use on_poweroff/on_reboot".into()),
            a.text,
        );
        if v != 0 {
            on_poweroff = Action::Restart;
        }
    }
    if let Some((r, line)) = s.string("restart")? {
        s.warn(
            line,
            WarningKind::Deprecated("xm's `restart`: use on_poweroff/on_reboot/on_crash".into()),
            r.clone(),
        );
        let (p, rb, c) = match r.as_str() {
            "onreboot" => (Action::Destroy, Action::Restart, Action::Destroy),
            "always" => (Action::Restart, Action::Restart, Action::Restart),
            "never" => (Action::Destroy, Action::Destroy, Action::Destroy),
            _ => {
                return Err(s.err(
                    line,
                    ErrorKind::BadValue {
                        key: "restart".into(),
                        expected: "onreboot, always or never",
                    },
                    r,
                ))
            }
        };
        (on_poweroff, on_reboot, on_crash) = (p, rb, c);
    }
    for (key, slot) in [
        ("on_poweroff", &mut on_poweroff),
        ("on_reboot", &mut on_reboot),
        ("on_crash", &mut on_crash),
        ("on_watchdog", &mut on_watchdog),
    ] {
        if let Some((v, line)) = s.string(key)? {
            *slot = Action::parse(&v)
                .ok_or_else(|| s.err(line, ErrorKind::UnknownAction { key: key.into() }, v))?;
        }
    }
    Ok([on_poweroff, on_reboot, on_crash, on_watchdog])
}

/// `disk = [ ... ]`: entries parsed, host device names numbered, duplicates refused.
fn read_disks(s: &mut Settings) -> Result<Vec<DiskSpec>, ConfigError> {
    let mut disks: Vec<DiskSpec> = Vec::new();
    let mut pending_host: Vec<usize> = Vec::new();
    for a in s.string_list("disk")?.unwrap_or_default() {
        let d = read_disk(s, a)?;
        if d.vdev_source == VdevSource::HostName {
            pending_host.push(disks.len());
        }
        disks.push(d);
    }
    number_host_vdevs(s, &mut disks, pending_host)?;
    let mut seen: HashMap<u32, u32> = HashMap::new();
    for d in &disks {
        if let Some(first) = seen.insert(d.vdev_number.number(), d.line) {
            return Err(s.err(
                d.line,
                ErrorKind::DuplicateVdev { first_line: first },
                d.vdev.clone(),
            ));
        }
    }
    Ok(disks)
}

/// One `disk` entry. A host device name in an xm config (`cciss0`: not a Xen
/// vdev, see [`host_device_name`]) gets a placeholder number, replaced by
/// [`number_host_vdevs`] once every disk is read.
fn read_disk(s: &mut Settings, a: Atom) -> Result<DiskSpec, ConfigError> {
    let d = disk::parse(&a.text).map_err(|(k, t)| s.err(a.line, k, t))?;
    if d.ioemu {
        s.warn(
            a.line,
            WarningKind::Deprecated("`ioemu:` disk prefix (ignored, as xl does)".into()),
            a.text.clone(),
        );
    }
    match d.format {
        DiskFormat::Raw | DiskFormat::Empty => {}
        f => {
            return Err(s.err(
                a.line,
                ErrorKind::Unsupported(format!(
                    "{} images (raw images and block devices only)",
                    f.as_str()
                )),
                a.text,
            ))
        }
    }
    let (number, source) = match Vdev::parse(&d.vdev) {
        Ok(v) => (v, VdevSource::Xen),
        Err(_) if d.xm_prefix && host_device_name(&d.vdev) => (
            Vdev::xvd(0, 0).map_err(|e| s.err(a.line, ErrorKind::BadVdev(e), ""))?,
            VdevSource::HostName,
        ),
        Err(e) => return Err(s.err(a.line, ErrorKind::BadVdev(e), d.vdev)),
    };
    Ok(DiskSpec {
        line: a.line,
        spec: a.text,
        target: d.target,
        format: d.format,
        vdev: d.vdev,
        vdev_number: number,
        vdev_source: source,
        access: d.access,
        devtype: d.devtype,
        backend: d.backend,
    })
}

/// Numbers the disks at `pending` (host device names), each with a warning: the
/// lowest xvd disk index unused by any Xen-named disk (hd/xvd/extended share
/// Linux's xvd indices).
fn number_host_vdevs(
    s: &mut Settings,
    disks: &mut [DiskSpec],
    pending: Vec<usize>,
) -> Result<(), ConfigError> {
    let mut used_index: HashSet<u32> = HashSet::new();
    for d in disks.iter().filter(|d| d.vdev_source == VdevSource::Xen) {
        if let Ok(dp) = d.vdev_number.decode() {
            if matches!(dp.scheme, Scheme::Xvd | Scheme::XvdExtended | Scheme::Hd) {
                used_index.insert(dp.disk);
            }
        }
    }
    for i in pending {
        let mut idx = 0;
        while used_index.contains(&idx) {
            idx += 1;
        }
        used_index.insert(idx);
        let number = Vdev::xvd(idx, 0).map_err(|e| s.err(0, ErrorKind::BadVdev(e), ""))?;
        if let Some(d) = disks.get_mut(i) {
            d.vdev_number = number;
            let msg = format!(
                "`{}` is not a Xen vdev (xm looked it up in dom0's /dev, a host-specific \
                 number); using {} ({}); NetBSD guests see it as xbdN in probe order",
                d.vdev,
                number,
                number.number()
            );
            let (line, text) = (d.line, d.vdev.clone());
            s.warn(line, WarningKind::HostVdev(msg), text);
        }
    }
    Ok(())
}

/// `vif = [ ... ]`.
fn read_vifs(s: &mut Settings) -> Result<Vec<VifSpec>, ConfigError> {
    // NICs.
    let mut vifs: Vec<VifSpec> = Vec::new();
    let vif_list = s.string_list("vif")?;
    for (i, a) in vif_list.unwrap_or_default().into_iter().enumerate() {
        let mut v = vif::parse(&a.text, a.line, i as u32).map_err(|(k, t)| s.err(a.line, k, t))?;
        for note in std::mem::take(&mut v.notes) {
            s.warn(a.line, WarningKind::IgnoredKey, note);
        }
        vifs.push(v);
    }
    if let Some((n, a)) = s.long("nics", "a NIC count")? {
        s.warn(
            a.line,
            WarningKind::Deprecated("xm's `nics`: use empty vif entries (vif = [ '' ])".into()),
            a.text.clone(),
        );
        if !(-1..=64).contains(&n) {
            return Err(s.err(
                a.line,
                ErrorKind::BadNumber {
                    key: "nics".into(),
                    expected: "a NIC count from 0 to 64",
                },
                a.text,
            ));
        }
        while (vifs.len() as i64) < n {
            let devid = vifs.len() as u32;
            vifs.push(VifSpec::default_nic(a.line, devid));
        }
    }
    let mut devids: HashMap<u32, u32> = HashMap::new();
    let mut macs: HashMap<MacAddr, u32> = HashMap::new();
    for v in &vifs {
        if let Some(first) = devids.insert(v.devid, v.line) {
            return Err(s.err(
                v.line,
                ErrorKind::BadVif(format!("devid {} already used on line {first}", v.devid)),
                v.spec.clone(),
            ));
        }
    }
    for v in &vifs {
        if let Some(mac) = v.mac {
            if let Some(first) = macs.insert(mac, v.line) {
                let (line, text) = (v.line, mac.to_string());
                s.warn(
                    line,
                    WarningKind::Adjusted(format!("same MAC as the vif on line {first}")),
                    text,
                );
            }
        }
    }
    Ok(vifs)
}

/// `channel = [ ... ]`: consoles 1, 2, ... with unique names and socket paths.
/// `hostile`: shim-hv's own key (see [`HostileSpec`]); one entry per device.
fn read_hostile(
    s: &mut Settings,
    disks: &[DiskSpec],
    vifs: &[VifSpec],
    channels: &[ChannelSpec],
) -> Result<Vec<HostileSpec>, ConfigError> {
    let mut out: Vec<HostileSpec> = Vec::new();
    for a in s.string_list("hostile")?.unwrap_or_default() {
        let h = HostileSpec::parse(&a.text, a.line, disks, vifs, channels)
            .map_err(|why| s.err(a.line, ErrorKind::BadHostile(why), &a.text))?;
        if let Some(old) = out.iter().find(|o| o.device == h.device) {
            let why = format!(
                "{} already has mode {} (line {})",
                h.device_text, old.mode, old.line
            );
            return Err(s.err(a.line, ErrorKind::BadHostile(why), &a.text));
        }
        out.push(h);
    }
    Ok(out)
}

fn read_channels(s: &mut Settings) -> Result<Vec<ChannelSpec>, ConfigError> {
    // Channels: consoles 1, 2, ... in list order (libxl); names and socket
    // paths must be unique.
    let mut channels: Vec<ChannelSpec> = Vec::new();
    for (i, a) in s
        .string_list("channel")?
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let devid = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut c = channel::parse(&a.text, a.line, devid).map_err(|(k, t)| s.err(a.line, k, t))?;
        for note in std::mem::take(&mut c.notes) {
            s.warn(a.line, WarningKind::IgnoredKey, note);
        }
        for old in &channels {
            let clash = if old.name == c.name {
                Some(("name", c.name.clone()))
            } else {
                match (&old.connection, &c.connection) {
                    (ChannelConnection::Socket(p), ChannelConnection::Socket(q)) if p == q => {
                        Some(("socket path", q.display().to_string()))
                    }
                    _ => None,
                }
            };
            if let Some((what, text)) = clash {
                return Err(s.err(
                    a.line,
                    ErrorKind::BadChannel(format!(
                        "{what} already used by the channel on line {}",
                        old.line
                    )),
                    text,
                ));
            }
        }
        channels.push(c);
    }
    Ok(channels)
}

/// What a file type is called in an error message ("a FIFO").
pub(crate) fn file_type_name(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "an unknown file type"
    }
}
