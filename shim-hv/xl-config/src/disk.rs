//! Disk entries: xl's disk syntax (`xl-disk-configuration(5)`,
//! `libxlu_disk_l.l`), which also covers xm's `phy:DEV,VDEV,MODE` forms.
//!
//! An entry is a comma list. Items are, in the order xl's lexer tries them:
//! - `target=...`: takes the rest of the entry, commas included;
//! - a deprecated prefix on an item: `raw:`/`qcow:`/`qcow2:`/`vhd:` (format),
//!   `phy:`, `file:`, `tap:`, `tap2:`, `aio:`, `tapdisk:` (backend hints),
//!   `ioemu:` (ignored with a warning, as xl ignores it); after a prefix, the format positional is skipped, so
//!   `phy:/dev/wd0e,wd0d,w` is target, vdev, access. `iscsi:`/`nbd:`/`enbd:`/
//!   `drbd:` need block scripts and are refused;
//! - flags: `cdrom`, `discard`, `no-discard`, `direct-io-safe`, `trusted`,
//!   `untrusted`, `colo`, `no-colo`;
//! - `key=value`: `format`, `vdev`, `access`, `devtype`, `backendtype`,
//!   `backend`, `specification`, `script`, `grant_usage`, `colo-*`;
//! - positionals: target, format, vdev (`VDEV:cdrom` allowed), access.
//!
//! Access `r`/`ro` is read-only, `w`/`rw`/empty read-write. xm's `w!` (share a
//! writable disk with another domain) is refused, as xl refuses it.

use std::path::PathBuf;

use super::error::ErrorKind;

/// Read-only or read-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `r`, `ro` (and every cdrom).
    ReadOnly,
    /// `w`, `rw`, empty.
    ReadWrite,
}

impl Access {
    /// The backend's `mode` node value: `r` or `w`.
    pub fn mode(self) -> &'static str {
        match self {
            Access::ReadOnly => "r",
            Access::ReadWrite => "w",
        }
    }
}

/// `devtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevType {
    /// An ordinary disk.
    Disk,
    /// A cdrom (removable, read-only, may be empty).
    Cdrom,
}

/// Image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// Raw image or device.
    Raw,
    /// An empty cdrom drive.
    Empty,
    /// qcow (refused by the domain builder).
    Qcow,
    /// qcow2 (refused by the domain builder).
    Qcow2,
    /// vhd (refused by the domain builder).
    Vhd,
    /// qed (refused by the domain builder).
    Qed,
}

impl DiskFormat {
    /// xl's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Empty => "empty",
            DiskFormat::Qcow => "qcow",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Qed => "qed",
        }
    }
}

/// Backend kind, from an xm prefix or `backendtype=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBackend {
    /// Not said: shim-hv serves files and block devices alike.
    Unspecified,
    /// `phy:` or `backendtype=phy`: a block device.
    Phy,
    /// `file:`: an image file.
    File,
    /// `tap:`/`tap2:`/`tapdisk:` without `aio:`, or `backendtype=tap`.
    Tap,
    /// `tap:aio:` (or a bare `aio:`): blktap's asynchronous raw driver.
    TapAio,
    /// `backendtype=qdisk`.
    Qdisk,
}

impl DiskBackend {
    /// Name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBackend::Unspecified => "default",
            DiskBackend::Phy => "phy",
            DiskBackend::File => "file",
            DiskBackend::Tap => "tap",
            DiskBackend::TapAio => "tap:aio",
            DiskBackend::Qdisk => "qdisk",
        }
    }
}

/// A disk entry after syntax, before its vdev is resolved to a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedDisk {
    pub target: Option<PathBuf>,
    pub format: DiskFormat,
    pub vdev: String,
    pub access: Access,
    pub devtype: DevType,
    pub backend: DiskBackend,
    /// An xm-style deprecated prefix was used (`phy:`, `file:`, `tap:`...).
    pub xm_prefix: bool,
    /// The deprecated `ioemu:` prefix was used (ignored, as xl does; worth a warning).
    pub ioemu: bool,
}

type DiskErr = (ErrorKind, String);

fn bad(msg: &str, text: &str) -> DiskErr {
    (ErrorKind::BadDisk(msg.to_owned()), text.to_owned())
}

fn parse_format(s: &str) -> Result<DiskFormat, DiskErr> {
    Ok(match s {
        "" | "raw" => DiskFormat::Raw,
        "qcow" => DiskFormat::Qcow,
        "qcow2" => DiskFormat::Qcow2,
        "vhd" => DiskFormat::Vhd,
        "qed" => DiskFormat::Qed,
        "empty" => DiskFormat::Empty,
        _ => {
            let hint = if xbd_front::vdev::Vdev::parse(s).is_ok() {
                "unknown format; this looks like a vdev: use `/path,raw,VDEV,ACCESS` or the xm form `file:/path,VDEV,ACCESS`"
            } else {
                "unknown format (raw, qcow, qcow2, vhd, qed, empty)"
            };
            return Err(bad(hint, s));
        }
    })
}

fn parse_access(s: &str) -> Result<Access, DiskErr> {
    match s {
        "r" | "ro" => Ok(Access::ReadOnly),
        "w" | "rw" | "" => Ok(Access::ReadWrite),
        "w!" | "r!" => Err((
            ErrorKind::Unsupported(
                "forced sharing (`w!`) of a disk with other domains; use `w` or `r`".into(),
            ),
            s.to_owned(),
        )),
        _ => Err((ErrorKind::BadAccess, s.to_owned())),
    }
}

#[derive(Default)]
struct State {
    target: Option<String>,
    format: Option<DiskFormat>,
    vdev: Option<String>,
    access: Option<Access>,
    cdrom: bool,
    backend: Option<DiskBackend>,
    xm_prefix: bool,
    ioemu: bool,
}

impl State {
    fn set_format(&mut self, f: DiskFormat, text: &str) -> Result<(), DiskErr> {
        match self.format {
            Some(old) if old != f => Err(bad("format respecified", text)),
            _ => {
                self.format = Some(f);
                Ok(())
            }
        }
    }

    fn set_backend(&mut self, b: DiskBackend, text: &str) -> Result<(), DiskErr> {
        match (self.backend, b) {
            (Some(DiskBackend::Tap), DiskBackend::TapAio) | (None, _) => {
                self.backend = Some(b);
                Ok(())
            }
            (Some(old), new) if old == new => Ok(()),
            _ => Err(bad("backend type respecified", text)),
        }
    }

    fn set_vdev(&mut self, v: &str, text: &str) -> Result<(), DiskErr> {
        if self.vdev.as_deref().is_some_and(|old| !old.is_empty()) {
            return Err(bad("vdev respecified", text));
        }
        self.vdev = Some(v.to_owned());
        Ok(())
    }

    /// `VDEV:cdrom` / `VDEV:disk` (xm's devtype suffix). Returns false if no colon.
    fn vdev_and_devtype(&mut self, item: &str) -> Result<bool, DiskErr> {
        let Some((vdev, ty)) = item.rsplit_once(':') else {
            return Ok(false);
        };
        self.set_vdev(vdev, item)?;
        match ty {
            "cdrom" => self.cdrom = true,
            "disk" => self.cdrom = false,
            _ => return Err(bad("unknown device type after `:` (cdrom or disk)", item)),
        }
        Ok(true)
    }

    fn positional(&mut self, item: &str) -> Result<(), DiskErr> {
        if self.target.is_none() {
            self.target = Some(item.to_owned());
        } else if !self.xm_prefix && self.format.is_none() {
            if self.target.as_deref() == Some("") && self.vdev_and_devtype(item)? {
                self.format = Some(DiskFormat::Empty);
            } else {
                self.set_format(parse_format(item)?, item)?;
            }
        } else if self.vdev.is_none() {
            if !self.vdev_and_devtype(item)? {
                self.set_vdev(item, item)?;
            }
        } else if self.access.is_none() {
            self.access = Some(parse_access(item)?);
        } else {
            return Err(bad("too many positional parameters", item));
        }
        Ok(())
    }

    fn keyword(&mut self, item: &str, key: &str, val: &str) -> Result<(), DiskErr> {
        match key {
            "format" => self.set_format(parse_format(val)?, item),
            "vdev" => self.set_vdev(val, item),
            "access" => {
                self.access = Some(parse_access(val)?);
                Ok(())
            }
            "devtype" => match val {
                "cdrom" => {
                    self.cdrom = true;
                    Ok(())
                }
                "disk" => {
                    self.cdrom = false;
                    Ok(())
                }
                _ => Err(bad("unknown devtype (cdrom or disk)", item)),
            },
            "backendtype" => match val {
                "phy" => self.set_backend(DiskBackend::Phy, item),
                "tap" => self.set_backend(DiskBackend::Tap, item),
                "qdisk" => self.set_backend(DiskBackend::Qdisk, item),
                "standalone" => Err((
                    ErrorKind::Unsupported("backendtype=standalone".into()),
                    item.to_owned(),
                )),
                _ => Err(bad("unknown backendtype (phy, tap, qdisk)", item)),
            },
            "backend" => match val {
                "0" | "Domain-0" => Ok(()),
                _ => Err((
                    ErrorKind::Unsupported("disk backends in driver domains".into()),
                    item.to_owned(),
                )),
            },
            "specification" => match val {
                "xen" => Ok(()),
                "virtio" => Err((
                    ErrorKind::Unsupported("virtio disks (only Xen vbds)".into()),
                    item.to_owned(),
                )),
                _ => Err(bad("unknown specification (xen)", item)),
            },
            "script" => Err((
                ErrorKind::Unsupported("block hotplug scripts".into()),
                item.to_owned(),
            )),
            "grant_usage" | "colo-host" | "colo-port" | "colo-export" | "active-disk"
            | "hidden-disk" | "transport" => Ok(()),
            _ => Err(bad("unknown parameter", item)),
        }
    }

    /// A deprecated `prefix:` at the start of an item; returns the rest.
    fn prefix<'s>(&mut self, item: &'s str) -> Result<Option<&'s str>, DiskErr> {
        let n = item
            .bytes()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .count();
        if n == 0 || !item.as_bytes().first().is_some_and(u8::is_ascii_lowercase) {
            return Ok(None);
        }
        let (word, rest) = item.split_at(n);
        let Some(rest) = rest.strip_prefix(':') else {
            return Ok(None);
        };
        let prefix = &item[..=n];
        match word {
            "raw" | "qcow" | "qcow2" | "vhd" => self.set_format(parse_format(word)?, prefix)?,
            "iscsi" | "nbd" | "enbd" | "drbd" => {
                return Err((
                    ErrorKind::Unsupported(format!("`{word}:` disks (they need block-{word})")),
                    prefix.to_owned(),
                ))
            }
            "phy" => self.set_backend(DiskBackend::Phy, prefix)?,
            "file" => self.set_backend(DiskBackend::File, prefix)?,
            "tap" | "tap2" | "tapdisk" => self.set_backend(DiskBackend::Tap, prefix)?,
            // xl strips `ioemu:` and sets nothing (qemu device model hint of xm
            // days, usually before the vdev: `phy:/dev/x,ioemu:hda,w`).
            "ioemu" => self.ioemu = true,
            "aio" => self.set_backend(DiskBackend::TapAio, prefix)?,
            _ => {
                // xl: unknown only if what follows is not a letter or digit
                // (`hdc:cdrom` is a vdev with a devtype, not a prefix).
                if rest
                    .as_bytes()
                    .first()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    return Ok(None);
                }
                return Err(bad("unknown deprecated disk prefix", prefix));
            }
        }
        self.xm_prefix = true;
        Ok(Some(rest))
    }
}

/// Parses one disk entry.
pub(crate) fn parse(spec: &str) -> Result<ParsedDisk, DiskErr> {
    let mut st = State::default();
    let mut rest = spec;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if let Some(t) = rest.strip_prefix("target=") {
            let t = t.strip_suffix(',').unwrap_or(t);
            if st.target.as_deref().is_some_and(|old| !old.is_empty()) {
                return Err(bad("target respecified", rest));
            }
            st.target = Some(t.to_owned());
            break;
        }
        if let Some(after) = st.prefix(rest)? {
            rest = after;
            continue;
        }
        let (item, next) = match rest.find(',') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        rest = next;
        let item = item.trim();
        match item {
            "cdrom" => st.cdrom = true,
            "discard" | "no-discard" | "direct-io-safe" | "trusted" | "untrusted" | "colo"
            | "no-colo" => {}
            _ => match item.split_once('=') {
                Some((k, v))
                    if k.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
                        && k.bytes().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_'
                        }) =>
                {
                    st.keyword(item, k, v)?
                }
                Some(_) => return Err(bad("bad disk syntax", item)),
                None => st.positional(item)?,
            },
        }
    }
    let vdev = match st.vdev {
        Some(v) if !v.is_empty() => v,
        _ => return Err(bad("no vdev specified", spec)),
    };
    let target = st.target.filter(|t| !t.is_empty());
    let mut format = st.format.unwrap_or(DiskFormat::Raw);
    let mut access = st.access.unwrap_or(Access::ReadWrite);
    if st.cdrom {
        access = Access::ReadOnly;
        if target.is_none() {
            format = DiskFormat::Empty;
        }
    } else if target.is_none() {
        return Err(bad("no target specified (and device not a cdrom)", spec));
    }
    let backend = st.backend.unwrap_or(DiskBackend::Unspecified);
    let target = target.map(|t| {
        // xm (`parse_uname`) put `/dev/` in front of a relative `phy:` device.
        if backend == DiskBackend::Phy && !t.starts_with('/') {
            PathBuf::from(format!("/dev/{t}"))
        } else {
            PathBuf::from(t)
        }
    });
    Ok(ParsedDisk {
        target,
        format,
        vdev,
        access,
        devtype: if st.cdrom {
            DevType::Cdrom
        } else {
            DevType::Disk
        },
        backend,
        xm_prefix: st.xm_prefix,
        ioemu: st.ioemu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ParsedDisk {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn p(t: &str) -> Option<PathBuf> {
        Some(PathBuf::from(t))
    }

    /// The cases of xen's tools/xl/check-xl-disk-parse (from the man page).
    #[test]
    fn xl_man_page_examples() {
        for s in [
            "/dev/vg/guest-volume,,hda",
            "/dev/vg/guest-volume,raw,hda,rw",
            "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
            "raw:/dev/vg/guest-volume,hda,w",
        ] {
            let d = ok(s);
            assert_eq!(d.target, p("/dev/vg/guest-volume"), "{s}");
            assert_eq!(
                (d.vdev.as_str(), d.format, d.access),
                ("hda", DiskFormat::Raw, Access::ReadWrite),
                "{s}"
            );
            assert_eq!(d.devtype, DevType::Disk);
        }
        for s in [
            "/root/image.iso,,hdc,cdrom",
            "/root/image.iso,,hdc,,cdrom",
            "/root/image.iso,raw,hdc,devtype=cdrom",
            "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
            "raw:/root/image.iso,hdc:cdrom,ro",
        ] {
            let d = ok(s);
            assert_eq!(d.target, p("/root/image.iso"), "{s}");
            assert_eq!(
                (d.vdev.as_str(), d.format, d.access),
                ("hdc", DiskFormat::Raw, Access::ReadOnly),
                "{s}"
            );
            assert_eq!(d.devtype, DevType::Cdrom, "{s}");
        }
        let d = ok("backendtype=phy,vdev=xvdb,access=w,target=/dev/vg/guest-volume");
        assert_eq!((d.backend, d.vdev.as_str()), (DiskBackend::Phy, "xvdb"));
        for s in [
            "devtype=cdrom,,,hdc",
            ",,hdc:cdrom,r",
            ",hdc:cdrom,r",
            "vdev=hdc,access=r,devtype=cdrom,target=",
            ",empty,hdc:cdrom,r",
            "vdev=hdc,access=r,devtype=cdrom,format=empty",
            "vdev=hdc,access=r,devtype=cdrom",
        ] {
            let d = ok(s);
            assert_eq!(d.target, None, "{s}");
            assert_eq!(
                (d.vdev.as_str(), d.format, d.devtype),
                ("hdc", DiskFormat::Empty, DevType::Cdrom),
                "{s}"
            );
        }
        // xl's CLI passes `discard vdev=hda target=...` as separate words; in
        // one config string items need commas.
        let d = ok("discard, vdev=hda, target=/some/disk/image.raw");
        assert_eq!(
            (d.vdev.as_str(), d.target),
            ("hda", p("/some/disk/image.raw"))
        );
        assert!(parse("discard vdev=hda target=/some/disk/image.raw").is_err());
        assert!(parse("foo").is_err());
    }

    #[test]
    fn xm_forms() {
        let d = ok("phy:/dev/wd0e,wd0d,w");
        assert_eq!(
            (d.target.clone(), d.vdev.as_str()),
            (p("/dev/wd0e"), "wd0d")
        );
        assert_eq!(
            (d.backend, d.access, d.xm_prefix),
            (DiskBackend::Phy, Access::ReadWrite, true)
        );
        let d = ok("file:/images/a.img,xvda,r");
        assert_eq!((d.backend, d.access), (DiskBackend::File, Access::ReadOnly));
        let d = ok("tap:aio:/images/a.img,xvda1,w");
        assert_eq!(
            (d.backend, d.target.clone()),
            (DiskBackend::TapAio, p("/images/a.img"))
        );
        let d = ok("phy:sda7,hdc:cdrom,r");
        assert_eq!(d.target, p("/dev/sda7"));
        assert_eq!(d.devtype, DevType::Cdrom);
        let d = ok("tap:qcow2:/x.qcow2,xvda,w");
        assert_eq!(d.format, DiskFormat::Qcow2);
    }

    #[test]
    fn target_takes_the_rest() {
        let d = ok("vdev=xvda, target=/images/a,b,c.img");
        assert_eq!(d.target, p("/images/a,b,c.img"));
        let d = ok("vdev=xvda,target=/x,");
        assert_eq!(d.target, p("/x"));
    }

    #[test]
    fn errors() {
        let cases: &[(&str, &str)] = &[
            ("/x,raw,xvda,rw,extra", "extra"),
            ("/x,xvda,w", "xvda"),
            ("/x,bogus,xvda", "bogus"),
            ("file:/x,xvda,rw!", "rw!"),
            ("/x,raw,xvda,z", "z"),
            ("/x,raw", "/x,raw"),
            ("vdev=xvda", "vdev=xvda"),
            ("foo=bar,/x,raw,xvda", "foo=bar"),
            ("weird:/x,xvda,w", "weird:"),
            ("iscsi:iqn.x,xvda,w", "iscsi:"),
            ("/x,raw,xvda:floppy", "xvda:floppy"),
            ("vdev=xvda,vdev=xvdb,target=/x", "vdev=xvdb"),
            ("devtype=tape,vdev=xvda,target=/x", "devtype=tape"),
            ("script=block-foo,vdev=xvda,target=/x", "script=block-foo"),
            ("backend=dd,vdev=xvda,target=/x", "backend=dd"),
            ("/x,raw,xvda,w!", "w!"),
        ];
        for (s, text) in cases {
            let e = parse(s).expect_err(s);
            assert_eq!(e.1, *text, "{s}: {:?}", e.0);
        }
        assert!(matches!(
            parse("/x,raw,xvda,w!").unwrap_err().0,
            ErrorKind::Unsupported(m) if m.contains("w!")
        ));
        assert_eq!(parse("/x,raw,xvda,z").unwrap_err().0, ErrorKind::BadAccess);
    }
}
