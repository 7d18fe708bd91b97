//! Disk images that are not plain files, or change under the guest (docs/hostile-input.md
//! H3, D2, D4), served by blkback directly (`BlkBackend::start`):
//! - H3: a FIFO, `/dev/zero`, a socket, a dangling symlink, a directory or an
//!   unreadable file is refused with one line naming the file, nothing is created
//!   in xenstore, and nothing blocks (a FIFO opened for reading would wait for a
//!   writer);
//! - D2: an image truncated under a running guest (no `resize`): I/O past the new
//!   end gets `BLKIF_RSP_ERROR` (the frontend sees `Io(Backend)`, no data), I/O
//!   before it still works, a write does not grow the image again;
//! - D4: holes of a sparse image, and holes punched by a discard, read as zeros.

mod blk_util;

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::time::Duration;

use blk_util::*;
use xbd_front::{Config, Error, IoError};
use xen_backends::blk::{BlkBackend, BlkConfig, Target};
use xenstored::TxId;

/// A path root cannot open for reading, or `None` (then that case is skipped).
/// Root bypasses file modes, so for root this is a write-only sysctl (procfs
/// checks its own mode bits even for root); otherwise a file with mode 000.
fn unreadable(dir: &TempDir) -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        let p = PathBuf::from("/proc/sys/vm/compact_memory");
        (p.exists() && std::fs::File::open(&p).is_err()).then_some(p)
    } else {
        let p = dir.path().join("unreadable.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        Some(p)
    }
}

/// Starts blkback on `target` in a thread and waits for its answer with a bound
/// (a hang is a failure, not a timing assertion).
fn start(
    hv: &std::sync::Arc<xen_model::Hypervisor>,
    dom: hypercall::DomId,
    cfg: BlkConfig,
) -> Result<BlkBackend, String> {
    let (tx, rx) = channel();
    let hv = hv.clone();
    std::thread::spawn(move || {
        let _ = tx.send(BlkBackend::start(&hv, dom, cfg).map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("BlkBackend::start blocked (or panicked)")
}

#[test]
fn h3_unusable_targets_are_refused_with_one_line() {
    let dir = TempDir::new("h3");
    let fifo = dir.path().join("fifo.img");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sock = dir.path().join("sock.img");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let dangling = dir.path().join("dangling.img");
    std::os::unix::fs::symlink(dir.path().join("gone.img"), &dangling).unwrap();
    let subdir = dir.path().join("dir.img");
    std::fs::create_dir(&subdir).unwrap();
    let zero = PathBuf::from("/dev/zero");
    let mut cases: Vec<(&str, PathBuf, &str)> = vec![
        ("fifo", fifo.clone(), "a FIFO"),
        ("dev-zero", zero.clone(), "a character device"),
        ("socket", sock.clone(), "a socket"),
        (
            "dangling symlink",
            dangling.clone(),
            "dangling symbolic link",
        ),
        ("directory", subdir.clone(), "a directory"),
    ];
    match unreadable(&dir) {
        Some(p) => cases.push(("unreadable", p, "Permission denied")),
        None => eprintln!("no unreadable path available: that case is skipped"),
    }
    let hv = hv();
    let dom = domain(&hv, "h3", 32);
    let vbd_dir = format!("/local/domain/0/backend/vbd/{}", dom.id().0);
    for (what, path, why) in &cases {
        for phy in [false, true] {
            for writable in [false, true] {
                for direct in [false, true] {
                    let target = if phy {
                        Target::Phy(path.clone())
                    } else {
                        Target::File(path.clone())
                    };
                    let mut cfg = BlkConfig::new(target, XVDA, "xvda");
                    cfg.writable = writable;
                    cfg.direct = direct;
                    let case = format!("{what} (phy {phy}, writable {writable}, direct {direct})");
                    let err = match start(&hv, dom.id(), cfg) {
                        Ok(be) => {
                            be.destroy();
                            panic!("{case}: accepted");
                        }
                        Err(e) => e,
                    };
                    assert!(!err.contains('\n'), "{case}: {err:?}");
                    assert!(
                        err.starts_with(&format!("{}: ", path.display())),
                        "{case}: {err}"
                    );
                    assert!(err.contains(why), "{case}: {err}");
                    let created = hv.xenstored().client(0).read(TxId::NONE, &vbd_dir);
                    assert!(created.is_err(), "{case}: backend nodes were created");
                }
            }
        }
    }
    // `file:` is for regular files; a regular file still works through `phy:`.
    let img = image(&dir, "ok.img", 1 << 20);
    let be = start(
        &hv,
        dom.id(),
        BlkConfig::new(Target::Phy(img.clone()), XVDA, "xvda"),
    )
    .unwrap();
    assert_eq!(be.sectors(), 2048);
    be.destroy();
    // The FIFO was never opened for writing by anyone: a blocking open would still
    // be waiting. Nothing was written into it either.
    assert!(std::fs::metadata(&fifo).unwrap().len() == 0);
}

/// The image is cut to `len` bytes (not a multiple of the sector size) while
/// the guest is connected, without `resize`.
fn truncate(img: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.set_len(len).unwrap();
}

#[test]
fn d2_image_truncated_under_a_running_guest() {
    let dir = TempDir::new("d2");
    let img = image(&dir, "shrink.img", 1 << 20);
    let data = std::fs::read(&img).unwrap();
    // 1024 whole sectors, then 100 bytes of sector 1024.
    let cut: u64 = 1024 * 512 + 100;
    let hv = hv();
    let dom = domain(&hv, "d2", 32);
    let be = backend(&hv, &dom, file_cfg(&img));
    let (ready_tx, ready_rx) = channel();
    let (go_tx, go_rx) = channel::<()>();
    let expect = data.clone();
    let rx = spawn_guest(&hv, dom, XVDA, Config::default(), move |d, xs, _| {
        let mut buf = vec![0u8; 4096];
        d.read(2040, &mut [&mut buf[..]], T).unwrap();
        assert_eq!(buf, expect[2040 * 512..2048 * 512]);
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let backend_error = Err(Error::Io(IoError::Backend));
        // Before the new end: still served, with the image's data.
        d.read(1016, &mut [&mut buf[..]], T).unwrap();
        assert_eq!(buf, expect[1016 * 512..1024 * 512]);
        // Across the end (a short read) and past it: errors, no data delivered.
        for lba in [1020, 1024, 1500, 2040] {
            buf.fill(0xa5);
            assert_eq!(
                d.read(lba, &mut [&mut buf[..]], T),
                backend_error,
                "read {lba}"
            );
            assert!(buf.iter().all(|&b| b == 0xa5), "read {lba}: data delivered");
        }
        // Writes past the end or across it fail (and do not grow the image).
        let w = vec![0x5au8; 4096];
        for lba in [1020, 1024, 1500, 2040] {
            assert_eq!(d.write(lba, &[&w[..]], T), backend_error, "write {lba}");
        }
        // Before the end, writes still work.
        d.write(1000, &[&w[..]], T).unwrap();
        d.read(1000, &mut [&mut buf[..]], T).unwrap();
        assert_eq!(buf, w);
        // The capacity did not change (no resize): no event, same sectors.
        let ev = d.poll_events(xs).unwrap();
        (ev, d.info().unwrap().sectors)
    });
    ready_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    truncate(&img, cut);
    go_tx.send(()).unwrap();
    let (ev, sectors) = rx.recv_timeout(Duration::from_secs(120)).unwrap().unwrap();
    assert_eq!(ev, None);
    assert_eq!(sectors, 2048);
    assert_eq!(be.sectors(), 2048);
    assert_eq!(be.stats().errors, 8);
    be.destroy();
    let after = std::fs::read(&img).unwrap();
    assert_eq!(after.len() as u64, cut, "a write grew the truncated image");
    assert_eq!(after[..1000 * 512], data[..1000 * 512]);
    assert!(after[1000 * 512..1008 * 512].iter().all(|&b| b == 0x5a));
    assert_eq!(after[1008 * 512..], data[1008 * 512..cut as usize]);
}

#[test]
fn d4_holes_read_as_zeros() {
    const MIB: u64 = 1 << 20;
    let dir = TempDir::new("d4");
    let img = dir.path().join("sparse.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(4 * MIB).unwrap();
    // Data in sectors 100..108 and 3000..3008; the rest is holes.
    let a: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 | 1).collect();
    let b: Vec<u8> = (0..4096u32).map(|i| (i % 241) as u8 | 0x80).collect();
    f.write_all_at(&a, 100 * 512).unwrap();
    f.write_all_at(&b, 3000 * 512).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let sparse = std::fs::metadata(&img).unwrap().blocks() * 512 < 4 * MIB;
    let hv = hv();
    let dom = domain(&hv, "d4", 32);
    let be = backend(&hv, &dom, file_cfg(&img));
    let (ea, eb) = (a.clone(), b.clone());
    run_guest(&hv, dom, XVDA, Config::default(), move |d, _, _| {
        // A hole only (sectors 0..64).
        let mut buf = vec![0xeeu8; 32 << 10];
        d.read(0, &mut [&mut buf[..]], T).unwrap();
        assert!(buf.iter().all(|&x| x == 0), "hole at 0");
        // Hole, data, hole in one request (sectors 96..112).
        let mut buf = vec![0xeeu8; 16 * 512];
        d.read(96, &mut [&mut buf[..]], T).unwrap();
        assert!(buf[..4 * 512].iter().all(|&x| x == 0));
        assert_eq!(buf[4 * 512..12 * 512], ea[..]);
        assert!(buf[12 * 512..].iter().all(|&x| x == 0));
        // 1 MiB across a hole and the second data run (sectors 2560..4608).
        let mut buf = vec![0xeeu8; 1 << 20];
        d.read(2560, &mut [&mut buf[..]], T).unwrap();
        let at = (3000 - 2560) * 512;
        assert!(buf[..at].iter().all(|&x| x == 0));
        assert_eq!(buf[at..at + 4096], eb[..]);
        assert!(buf[at + 4096..].iter().all(|&x| x == 0));
        // A hole punched by a discard reads as zeros; its neighbours keep data.
        let w = vec![0x77u8; 16 * 512];
        d.write(6000, &[&w[..]], T).unwrap();
        d.discard(6000, 8, T).unwrap();
        let mut buf = vec![0xeeu8; 24 * 512];
        d.read(5996, &mut [&mut buf[..]], T).unwrap();
        assert!(buf[..12 * 512].iter().all(|&x| x == 0), "discarded range");
        assert!(buf[12 * 512..20 * 512].iter().all(|&x| x == 0x77));
        assert!(buf[20 * 512..].iter().all(|&x| x == 0));
        // And the discarded range of the first data run.
        d.discard(100, 8, T).unwrap();
        let mut buf = vec![0xeeu8; 4096];
        d.read(100, &mut [&mut buf[..]], T).unwrap();
        assert!(buf.iter().all(|&x| x == 0), "discarded data run");
    });
    assert_eq!(be.stats().errors, 0);
    be.destroy();
    let after = std::fs::read(&img).unwrap();
    assert_eq!(after.len() as u64, 4 * MIB);
    assert!(after[100 * 512..108 * 512].iter().all(|&x| x == 0));
    assert_eq!(after[3000 * 512..3008 * 512], b[..]);
    if sparse {
        // The image is still sparse (the reads did not fill its holes).
        assert!(std::fs::metadata(&img).unwrap().blocks() * 512 < 4 * MIB);
    }
}

/// A loop device over an image, detached when dropped.
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    /// `losetup -f --show img`; `None` (with one line saying why) where no loop
    /// device can be set up (no `losetup`, not root, no loop driver).
    fn attach(img: &Path) -> Option<LoopDevice> {
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(img)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(LoopDevice {
                path: PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            }),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                eprintln!(
                    "no loop device ({}): block-device disk case skipped",
                    why.trim()
                );
                None
            }
            Err(e) => {
                eprintln!("no losetup ({e}): block-device disk case skipped");
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.path)
            .status();
    }
}

/// A `phy:` disk that is a block device (a loop device over an image): its size
/// is the device's, a write and the read back through blkback match, and the
/// bytes are in the image afterwards. Skipped with one line where no loop device
/// can be set up. (`finish_rw`: `write && disk.regular` as `||`, which checked
/// every write against the device's metadata length, 0 for a block device, and
/// refused it.)
#[test]
fn a_block_device_disk_is_written_and_read() {
    let dir = TempDir::new("loopdev");
    let img = image(&dir, "loop.img", 1 << 20);
    let Some(dev) = LoopDevice::attach(&img) else {
        return;
    };
    let hv = hv();
    let dom = domain(&hv, "loopdev", 32);
    let cfg = BlkConfig::new(Target::Phy(dev.path.clone()), XVDA, "xvda");
    let be = backend(&hv, &dom, cfg);
    let w: Vec<u8> = (0..8192u32).map(|i| (i * 13 + 1) as u8).collect();
    let w2 = w.clone();
    let rx = spawn_guest(&hv, dom, XVDA, Config::default(), move |d, _, _| {
        d.write(40, &[&w2[..]], T).unwrap();
        // The write reaches the image through the loop device only once the
        // device's cache is written back: flush, as a guest that wants its data
        // kept does (closing blkback's descriptor need not happen before the
        // test reads the image).
        d.flush(T).unwrap();
        let mut back = vec![0u8; 8192];
        d.read(40, &mut [&mut back[..]], T).unwrap();
        (back, d.info().unwrap().sectors)
    });
    let (back, sectors) = rx.recv_timeout(Duration::from_secs(120)).unwrap().unwrap();
    assert_eq!(sectors, 2048);
    assert!(back == w, "read back");
    be.destroy();
    drop(dev);
    let data = std::fs::read(&img).unwrap();
    assert!(data[40 * 512..40 * 512 + 8192] == w[..], "in the image");
}
