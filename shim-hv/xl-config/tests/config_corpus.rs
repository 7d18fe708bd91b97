//! The config corpus in tests/configs: every valid file parses to the expected
//! domain, every invalid file fails with the expected kind, line and text, and
//! no file in the directories is left unchecked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use xbd_front::vdev::VdevError;
use xl_config::{
    Access, Action, ChannelConnection, ConfigError, CpuAffinity, DevType, DiskBackend, DiskFormat,
    DomainConfig, ErrorKind, VdevSource, WarningKind,
};

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(sub)
}

fn load(name: &str) -> DomainConfig {
    let p = dir("valid").join(name);
    DomainConfig::parse_file(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(name: &str) -> ConfigError {
    let p = dir("invalid").join(name);
    match DomainConfig::parse_file(&p) {
        Ok(c) => panic!("{name} parsed: {c:?}"),
        Err(e) => e,
    }
}

fn files(sub: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir(sub))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn has_warning(c: &DomainConfig, f: impl Fn(&WarningKind) -> bool, text: &str) -> bool {
    c.warnings.iter().any(|w| f(&w.kind) && w.text == text)
}

type Check = fn(&DomainConfig);

const VALID: &[(&str, Check)] = &[
    ("netbsd-howto.cfg", |c| {
        assert_eq!(c.name, "nbsd");
        assert_eq!(c.kernel, Some(PathBuf::from("/netbsd-XEN3_DOMU")));
        assert_eq!(
            (c.memory_mib, c.maxmem_mib, c.vcpus, c.cpu),
            (128, 128, 1, None)
        );
        assert_eq!(c.cmdline.as_deref(), Some("root=/dev/wd0d"));
        assert_eq!(c.vifs.len(), 1);
        let v = &c.vifs[0];
        assert_eq!(v.mac.unwrap().to_string(), "aa:00:00:50:02:f0");
        assert_eq!(v.bridge.as_deref(), Some("bridge0"));
        assert_eq!(c.disks.len(), 1);
        let d = &c.disks[0];
        assert_eq!(d.target, Some(PathBuf::from("/dev/wd0e")));
        assert_eq!(d.vdev, "wd0d");
        assert_eq!(d.vdev_source, VdevSource::HostName);
        assert_eq!(d.vdev_number.number(), 51712);
        assert_eq!(
            (d.access, d.backend, d.devtype),
            (Access::ReadWrite, DiskBackend::Phy, DevType::Disk)
        );
        assert!(has_warning(
            c,
            |k| matches!(k, WarningKind::HostVdev(_)),
            "wd0d"
        ));
        assert!(has_warning(
            c,
            |k| matches!(k, WarningKind::Deprecated(_)),
            "1"
        ));
        let w = c
            .warnings
            .iter()
            .find(|w| matches!(w.kind, WarningKind::HostVdev(_)))
            .unwrap();
        assert_eq!(w.line, 7);
        let shown = w.to_string();
        assert!(
            shown.contains("netbsd-howto.cfg:7: warning: `wd0d` is not a Xen vdev"),
            "{w}"
        );
        assert!(shown.ends_with("(wd0d)"), "{w}");
        assert_eq!(
            (c.on_poweroff, c.on_reboot, c.on_crash, c.on_watchdog),
            (
                Action::Destroy,
                Action::Restart,
                Action::Destroy,
                Action::Destroy
            )
        );
    }),
    ("pvh-minimal-no-newline.cfg", |c| {
        assert_eq!((c.name.as_str(), c.memory_mib), ("tiny", 32));
        assert!(c.disks.is_empty() && c.vifs.is_empty());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }),
    ("channels.cfg", |c| {
        let got: Vec<(u32, &str, &ChannelConnection)> = c
            .channels
            .iter()
            .map(|ch| (ch.devid, ch.name.as_str(), &ch.connection))
            .collect();
        assert_eq!(
            got,
            [
                (1, "org.example.foo", &ChannelConnection::Pty),
                (
                    2,
                    "org.my.cloud.software.agent.version1",
                    &ChannelConnection::Socket(PathBuf::from("/run/agent.sock"))
                ),
                (
                    3,
                    "org.xenproject.guest.clipboard.0.1",
                    &ChannelConnection::Pty
                ),
            ]
        );
        // path= on a pty has no effect: a warning on its line.
        assert!(c.warnings.iter().any(|w| w.kind == WarningKind::IgnoredKey
            && w.line == 7
            && w.text.contains("path=/ignored")));
        let j = c.to_json();
        assert_eq!(j["channels"][1]["path"], "/run/agent.sock");
        assert_eq!(j["channels"][1]["connection"], "socket");
        assert_eq!(j["channels"][0]["path"], serde_json::Value::Null);
    }),
    ("xl-full.cfg", |c| {
        assert_eq!(
            c.uuid.as_deref(),
            Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        );
        assert_eq!(c.ramdisk, Some(PathBuf::from("/srv/xen/full/initrd.img")));
        assert_eq!(
            c.cmdline.as_deref(),
            Some("console=hvc0 root=/dev/xvda1 ro")
        );
        assert_eq!((c.memory_mib, c.vcpus, c.maxvcpus), (512, 2, 4));
        assert_eq!(c.cpus, Some(CpuAffinity::Shared("0-3,^1".into())));
        assert_eq!(
            (c.on_crash, c.on_watchdog),
            (Action::CoredumpRestart, Action::Preserve)
        );
        assert_eq!(c.disks.len(), 3);
        assert_eq!(
            (c.disks[0].vdev_number.number(), c.disks[0].access),
            (51712, Access::ReadWrite)
        );
        assert_eq!(
            c.disks[1].target,
            Some(PathBuf::from("/srv/xen/full/data,with,commas.img"))
        );
        assert_eq!(c.disks[1].access, Access::ReadOnly);
        assert_eq!(c.disks[1].line, 19);
        let cd = &c.disks[2];
        assert_eq!(
            (cd.devtype, cd.access, cd.vdev_number.number()),
            (DevType::Cdrom, Access::ReadOnly, 5632)
        );
        assert_eq!(c.vifs.len(), 2);
        assert_eq!(c.vifs[0].mac.unwrap().to_string(), "00:16:3e:74:3d:76");
        assert_eq!(c.vifs[0].rate.unwrap().interval_us, 20_000);
        assert_eq!(c.vifs[0].vifname.as_deref(), Some("full0"));
        assert_eq!((c.vifs[1].devid, c.vifs[1].mtu), (1, Some(9000)));
        assert_eq!(c.vifs[1].line, 24);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }),
    ("xm-style.cfg", |c| {
        assert_eq!(c.cmdline.as_deref(), Some("root=/dev/xvda1 ro 4"));
        assert_eq!(c.vifs.len(), 2);
        assert_eq!(c.vifs[0].mac.unwrap().to_string(), "00:16:3e:00:00:11");
        assert_eq!(c.vifs[1].mac, None);
        assert_eq!(c.disks[0].backend, DiskBackend::File);
        assert_eq!(c.disks[0].vdev_number.number(), 51713);
        assert_eq!(c.disks[1].backend, DiskBackend::TapAio);
        assert_eq!(c.disks[2].target, Some(PathBuf::from("/dev/sdb1")));
        assert_eq!(c.disks[2].devtype, DevType::Cdrom);
        // restart='onreboot' comes after autorestart and resets on_poweroff.
        assert_eq!(
            (c.on_poweroff, c.on_reboot),
            (Action::Destroy, Action::Restart)
        );
        assert!(has_warning(
            c,
            |k| matches!(k, WarningKind::Deprecated(_)),
            "linux"
        ));
        assert!(has_warning(
            c,
            |k| matches!(k, WarningKind::Deprecated(_)),
            "onreboot"
        ));
    }),
    ("multiline-lists.cfg", |c| {
        assert_eq!(c.cmdline.as_deref(), Some("console=hvc0 quiet"));
        let vdevs: Vec<_> = c.disks.iter().map(|d| (d.vdev.as_str(), d.line)).collect();
        assert_eq!(vdevs, [("xvda", 6), ("xvdb", 9), ("xvdc", 12)]);
        assert_eq!(
            c.cpus,
            Some(CpuAffinity::PerVcpu(vec!["2".into(), "3-5".into()]))
        );
        assert_eq!(c.memory_mib, 64);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }),
    ("strings-and-numbers.cfg", |c| {
        assert_eq!(c.name, "quotes \"and\" 'escapes' \\!");
        assert_eq!(c.kernel, Some(PathBuf::from("/kA")));
        assert_eq!((c.memory_mib, c.maxmem_mib, c.vcpus), (256, 512, 8));
        assert_eq!(
            (c.on_reboot, c.on_poweroff),
            (Action::RenameRestart, Action::SoftReset)
        );
    }),
    ("repeated-and-unknown.cfg", |c| {
        assert_eq!(c.memory_mib, 96);
        assert!(has_warning(
            c,
            |k| *k == WarningKind::RepeatedKey { previous_line: 3 },
            "memory"
        ));
        assert!(has_warning(c, |k| *k == WarningKind::IgnoredKey, "vfb"));
        assert!(has_warning(
            c,
            |k| *k == WarningKind::UnknownKey,
            "frobnicate"
        ));
        let w = c.warnings.iter().find(|w| w.text == "frobnicate").unwrap();
        assert_eq!(w.line, 6);
    }),
    ("cdrom-empty.cfg", |c| {
        for d in &c.disks {
            assert_eq!((d.devtype, d.access), (DevType::Cdrom, Access::ReadOnly));
        }
        assert_eq!(
            (c.disks[0].target.clone(), c.disks[0].format),
            (None, DiskFormat::Empty)
        );
        assert_eq!(
            (c.disks[1].target.clone(), c.disks[1].vdev_number.number()),
            (None, 51760)
        );
        assert_eq!(c.disks[2].format, DiskFormat::Raw);
    }),
    ("default-nics.cfg", |c| {
        assert_eq!(c.vifs.len(), 3);
        assert_eq!(
            c.vifs.iter().map(|v| v.devid).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(c.vifs[0].bridge, None);
        assert_eq!(c.vifs[1].bridge.as_deref(), Some("br1"));
    }),
    ("vdev-numbers.cfg", |c| {
        let n: Vec<u32> = c.disks.iter().map(|d| d.vdev_number.number()).collect();
        assert_eq!(
            n,
            [
                769,
                51728,
                51744,
                2080,
                268_439_552,
                1 << 28 | 26 << 8 | 3,
                1 << 28 | 536 << 8 | 37,
                193
            ]
        );
        let names: Vec<Option<String>> = c
            .disks
            .iter()
            .map(|d| d.vdev_number.name().ok().map(|n| n.to_string()))
            .collect();
        assert_eq!(names[0].as_deref(), Some("hda1"));
        assert_eq!(names[6].as_deref(), Some("xvdtq37"));
        assert_eq!(names[7], None);
    }),
    ("builtin-guest.cfg", |c| {
        assert_eq!(c.name, "builtin");
        assert_eq!(c.kernel, None);
        assert_eq!(c.to_json()["kernel"], serde_json::Value::Null);
    }),
    ("crlf.cfg", |c| {
        assert_eq!(c.disks.len(), 2);
        assert_eq!(c.disks[1].line, 5);
    }),
    ("mixed-disk-spellings.cfg", |c| {
        let got: Vec<(&str, u32, VdevSource)> = c
            .disks
            .iter()
            .map(|d| (d.vdev.as_str(), d.vdev_number.number(), d.vdev_source))
            .collect();
        // wd1a and sd0e get the lowest xvd disks not used by xvda/xvdb: xvdc, xvdd.
        assert_eq!(
            got,
            [
                ("xvda", 51712, VdevSource::Xen),
                ("wd1a", 51744, VdevSource::HostName),
                ("xvdb", 51728, VdevSource::Xen),
                ("sd0e", 51760, VdevSource::HostName),
            ]
        );
    }),
];

fn kind_is(e: &ConfigError, f: impl Fn(&ErrorKind) -> bool) -> bool {
    f(&e.kind)
}

type ErrCheck = fn(&ErrorKind) -> bool;

/// file, line, kind, offending text.
const INVALID: &[(&str, u32, ErrCheck, &str)] = &[
    (
        "python-import.cfg",
        3,
        |k| *k == ErrorKind::PythonCode,
        "import os",
    ),
    (
        "python-call.cfg",
        3,
        |k| *k == ErrorKind::PythonCode,
        "int(\"128\")",
    ),
    (
        "python-def.cfg",
        4,
        |k| *k == ErrorKind::PythonCode,
        "def vifs(n):",
    ),
    (
        "python-expression.cfg",
        3,
        |k| *k == ErrorKind::PythonCode,
        "* 2",
    ),
    (
        "unterminated-string.cfg",
        1,
        |k| *k == ErrorKind::UnterminatedString,
        "\"open",
    ),
    (
        "unterminated-list.cfg",
        3,
        |k| *k == ErrorKind::UnterminatedList,
        "[ '/i/a.img,raw,xvda,w',",
    ),
    (
        "bad-mac-multicast.cfg",
        3,
        |k| matches!(k, ErrorKind::BadMac(_)),
        "mac=01:00:5e:00:00:01",
    ),
    (
        "bad-mac-syntax.cfg",
        5,
        |k| matches!(k, ErrorKind::BadMac(_)),
        "mac=00:16:3e:zz:00:01",
    ),
    (
        "bad-vdev-leading-zero.cfg",
        3,
        |k| *k == ErrorKind::BadVdev(VdevError::LeadingZero),
        "xvda0",
    ),
    (
        "bad-vdev-hde.cfg",
        3,
        |k| matches!(k, ErrorKind::BadVdev(VdevError::DiskOutOfRange { .. })),
        "hde",
    ),
    (
        "bad-vdev-upper.cfg",
        3,
        |k| *k == ErrorKind::BadVdev(VdevError::UpperCase),
        "XVDA",
    ),
    (
        "bad-vdev-host-name-xl-form.cfg",
        3,
        |k| *k == ErrorKind::BadVdev(VdevError::UnknownForm),
        "wd0d",
    ),
    ("bad-access.cfg", 3, |k| *k == ErrorKind::BadAccess, "x"),
    (
        "shared-write.cfg",
        3,
        |k| matches!(k, ErrorKind::Unsupported(_)),
        "w!",
    ),
    (
        "hvm-type.cfg",
        2,
        |k| matches!(k, ErrorKind::Unsupported(_)),
        "hvm",
    ),
    (
        "builder-hvm.cfg",
        3,
        |k| matches!(k, ErrorKind::Unsupported(_)),
        "hvm",
    ),
    (
        "pci.cfg",
        3,
        |k| matches!(k, ErrorKind::Unsupported(_)),
        "[0000:03:00.0]",
    ),
    (
        "bootloader.cfg",
        2,
        |k| matches!(k, ErrorKind::Unsupported(_)),
        "pygrub",
    ),
    (
        "missing-name.cfg",
        0,
        |k| *k == ErrorKind::MissingKey("name"),
        "",
    ),
    (
        "empty-kernel.cfg",
        3,
        |k| *k == ErrorKind::MissingKey("kernel"),
        "",
    ),
    (
        "bad-number.cfg",
        3,
        |k| matches!(k, ErrorKind::BadNumber { key, .. } if key == "memory"),
        "128M",
    ),
    (
        "bad-action.cfg",
        3,
        |k| matches!(k, ErrorKind::UnknownAction { key } if key == "on_crash"),
        "explode",
    ),
    (
        "duplicate-vdev.cfg",
        4,
        |k| *k == ErrorKind::DuplicateVdev { first_line: 3 },
        "51712",
    ),
    (
        "qcow2.cfg",
        3,
        |k| matches!(k, ErrorKind::Unsupported(_)),
        "format=qcow2, vdev=xvda, target=/i/a.qcow2",
    ),
    ("bad-name.cfg", 1, |k| *k == ErrorKind::BadName, "a/b"),
    (
        "bad-uuid.cfg",
        3,
        |k| *k == ErrorKind::BadUuid,
        "not-a-uuid",
    ),
    (
        "list-for-scalar.cfg",
        3,
        |k| matches!(k, ErrorKind::NotASingleValue { key } if key == "memory"),
        "[128]",
    ),
    (
        "bare-word.cfg",
        1,
        |k| matches!(k, ErrorKind::Syntax(_)),
        "nbsd",
    ),
    (
        "unknown-vif-key.cfg",
        3,
        |k| matches!(k, ErrorKind::BadVif(_)),
        "colour=blue",
    ),
    ("bad-escape.cfg", 2, |k| *k == ErrorKind::BadEscape, "\\q"),
    (
        "maxmem-below-memory.cfg",
        4,
        |k| matches!(k, ErrorKind::Conflict(_)),
        "128",
    ),
    (
        "too-many-positional.cfg",
        3,
        |k| matches!(k, ErrorKind::BadDisk(_)),
        "extra",
    ),
    (
        "bad-cpu.cfg",
        3,
        |k| matches!(k, ErrorKind::BadNumber { key, .. } if key == "cpu"),
        "-2",
    ),
    (
        "append-number.cfg",
        4,
        |k| matches!(k, ErrorKind::BadAppend { key } if key == "memory"),
        "64",
    ),
    (
        "disk-format-as-vdev.cfg",
        3,
        |k| matches!(k, ErrorKind::BadDisk(m) if m.contains("looks like a vdev")),
        "xvda",
    ),
    (
        "nested-disk-list.cfg",
        4,
        |k| matches!(k, ErrorKind::NotAString { key } if key == "disk"),
        "[/i/b.img,raw,xvdb,w]",
    ),
    (
        "channel-duplicate-name.cfg",
        3,
        |k| matches!(k, ErrorKind::BadChannel(m) if m.contains("line 2")),
        "org.example.foo",
    ),
    (
        "channel-unknown-key.cfg",
        3,
        |k| matches!(k, ErrorKind::BadChannel(_)),
        "mode=raw",
    ),
    (
        "channel-socket-without-path.cfg",
        3,
        |k| matches!(k, ErrorKind::BadChannel(m) if m.contains("path=")),
        "name=org.example.foo,connection=socket",
    ),
];

#[test]
fn valid_corpus() {
    for (name, check) in VALID {
        let c = load(name);
        check(&c);
        // Every valid config serialises.
        let j = c.to_json();
        assert_eq!(j["name"], c.name.as_str(), "{name}");
    }
}

#[test]
fn invalid_corpus() {
    for (name, line, kind, text) in INVALID {
        let e = load_err(name);
        assert!(kind_is(&e, kind), "{name}: unexpected kind in `{e}`");
        assert_eq!((e.line, e.text.as_str()), (*line, *text), "{name}: `{e}`");
        let shown = e.to_string();
        let path = dir("invalid").join(name).display().to_string();
        let prefix = if *line == 0 {
            format!("{path}: ")
        } else {
            format!("{path}:{line}: ")
        };
        assert!(shown.starts_with(&prefix), "{shown}");
        if !text.is_empty() {
            assert!(shown.ends_with(&format!("({text})")), "{shown}");
        }
    }
}

#[test]
fn corpus_is_fully_checked() {
    let valid: BTreeSet<String> = VALID.iter().map(|(n, _)| n.to_string()).collect();
    let invalid: BTreeSet<String> = INVALID.iter().map(|(n, ..)| n.to_string()).collect();
    assert_eq!(files("valid"), valid);
    assert_eq!(files("invalid"), invalid);
    assert!(valid.len() + invalid.len() >= 25);
}

#[test]
fn python_message_says_xm_is_not_supported() {
    let e = load_err("python-import.cfg");
    assert!(
        e.to_string()
            .contains("xm's Python configs are not supported"),
        "{e}"
    );
}

#[test]
fn netbsd_json() {
    let c = load("netbsd-howto.cfg");
    let j = c.to_json();
    assert_eq!(j["name"], "nbsd");
    assert_eq!(j["memory"], 128);
    assert_eq!(j["vcpus"], 1);
    assert_eq!(j["kernel"], "/netbsd-XEN3_DOMU");
    assert_eq!(j["cmdline"], "root=/dev/wd0d");
    let d = &j["disks"][0];
    assert_eq!(d["vdev"], "wd0d");
    assert_eq!(d["vdev_number"], 51712);
    assert_eq!(d["vdev_name"], "xvda");
    assert_eq!(d["vdev_assigned"], true);
    assert_eq!(d["mode"], "w");
    assert_eq!(d["target"], "/dev/wd0e");
    assert_eq!(d["devtype"], "disk");
    let v = &j["vifs"][0];
    assert_eq!(v["mac"], "aa:00:00:50:02:f0");
    assert_eq!(v["bridge"], "bridge0");
    assert_eq!(v["script"], serde_json::Value::Null);
    assert_eq!(j["actions"]["on_reboot"], "restart");
    assert_eq!(j["actions"]["on_poweroff"], "destroy");
}

#[test]
fn unreadable_file_is_an_error() {
    let e = DomainConfig::parse_file(Path::new("/nonexistent/x.cfg")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)));
    assert_eq!(e.line, 0);
}

/// docs/hostile-input.md H2: a huge config file, or an endless one, is refused with a message
/// instead of being read into memory whole.
#[test]
fn huge_or_endless_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("xenkit-cfg-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.cfg");
    let mut text = String::from("name = \"big\"\n");
    while (text.len() as u64) <= xl_config::MAX_CONFIG_BYTES {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).unwrap();
    for path in [big.as_path(), Path::new("/dev/zero")] {
        let e = DomainConfig::parse_file(path).unwrap_err();
        assert!(
            matches!(&e.kind, ErrorKind::Io(m) if m.contains("larger than")),
            "{path:?}: {e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// docs/hostile-input.md H2: a config file that is not UTF-8 is refused with the line of the
/// first bad byte.
#[test]
fn non_utf8_file_names_the_line() {
    let dir = std::env::temp_dir().join(format!("xenkit-cfg-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("latin1.cfg");
    std::fs::write(&f, b"name = 'a'\nmemory = 64\nextra = 'caf\xe9'\n").unwrap();
    let e = DomainConfig::parse_file(&f).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Syntax("not UTF-8"));
    assert_eq!(e.line, 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 17 item 14: bytes are checked where they matter. A Latin-1 comment is
/// accepted (xl ignores comments); a bad byte in a value is refused with its line;
/// a binary file names the line of its first bad byte outside a comment.
#[test]
fn utf8_is_checked_per_line_outside_comments() {
    let ok = DomainConfig::text_from_bytes(
        "l.cfg",
        b"# Auteur: Andr\xe9\nname = 'a' # caf\xe9 \"quoted # not a comment\"\nmemory = 64\n",
    )
    .unwrap();
    let c = DomainConfig::parse_str("l.cfg", &ok).unwrap();
    assert_eq!(c.name, "a");
    // A `#` inside quotes does not start a comment: the byte after it is a value's.
    let e =
        DomainConfig::text_from_bytes("l.cfg", b"name = 'a'\nextra = 'x # \xe9'\n").unwrap_err();
    assert_eq!((e.kind, e.line), (ErrorKind::Syntax("not UTF-8"), 2));
    let mut bin = b"name = 'a'\nmemory = 64\n".to_vec();
    bin.extend_from_slice(&[0x7f, b'E', b'L', b'F', 0xff, 0x00, b'\n', 0xfe]);
    let e = DomainConfig::text_from_bytes("bin.cfg", &bin).unwrap_err();
    assert_eq!((e.kind, e.line), (ErrorKind::Syntax("not UTF-8"), 3));
}

/// Issue 17 item 15: `ioemu:` before the vdev (xm days) is read as xl does, a
/// deprecated prefix that is ignored, with a warning.
#[test]
fn ioemu_vdev_prefix_is_accepted_with_a_warning() {
    let c = DomainConfig::parse_str(
        "i.cfg",
        "name = 'i'\nkernel = '/k'\ndisk = [ 'phy:/dev/loop0,ioemu:hda,w' ]\n",
    )
    .unwrap();
    let d = &c.disks[0];
    assert_eq!(d.vdev, "hda");
    assert_eq!(d.backend, DiskBackend::Phy);
    assert_eq!(d.target.as_deref(), Some(Path::new("/dev/loop0")));
    assert!(c.warnings.iter().any(
        |w| matches!(&w.kind, WarningKind::Deprecated(m) if m.contains("ioemu")) && w.line == 3
    ));
}

/// Issue 17 item 16: `disk = "file:..."` (a string, not a list) is an error naming
/// the line (xl drops it and boots without a disk); the same for vif and channel.
#[test]
fn device_keys_given_a_string_are_refused() {
    for (key, value) in [
        ("disk", "'file:/tmp/x.img,xvda,w'"),
        ("vif", "'bridge=xenbr0'"),
        ("channel", "'name=org.x,connection=pty'"),
    ] {
        let text = format!("name = 'd'\nkernel = '/k'\n{key} = {value}\n");
        let e = DomainConfig::parse_str("s.cfg", &text).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotAList { key: key.into() }, "{key}");
        assert_eq!(e.line, 3, "{key}");
        assert!(e.to_string().starts_with("s.cfg:3:"), "{e}");
    }
}

/// Issue 17 item 17: a file over the size limit because of one huge line names
/// that line.
#[test]
fn over_long_line_names_its_line() {
    let dir = std::env::temp_dir().join(format!("xenkit-cfg-long-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("long.cfg");
    let mut text = String::from("name = 'a'\nmemory = 64\nextra = '");
    text.push_str(&"x".repeat(xl_config::MAX_CONFIG_BYTES as usize));
    text.push_str("'\n");
    std::fs::write(&f, &text).unwrap();
    let e = DomainConfig::parse_file(&f).unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::Io(m) if m.contains("larger than")),
        "{e}"
    );
    assert_eq!(e.line, 3, "{e}");
    assert!(e.to_string().contains("long.cfg:3:"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
