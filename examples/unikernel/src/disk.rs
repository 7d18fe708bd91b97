//! Disks: every `device/vbd/*` connected with `xbd-front` and exercised once.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use hypercall::gnttab::GrantTable;
use hypercall::Port;
use xbd_front::vdev::Vdev;
use xenbus::{Store, Xenstore};

use crate::xen::Kernel;
use crate::{say, GRANTS};

/// Requests a disk keeps in flight.
const SLOTS: usize = 8;
/// Pages per request.
const SEGS: usize = 11;
/// Bound of one disk request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The marker written at [`MARKER_OFFSET`] on a writable disk.
pub const MARKER: &[u8] = b"XENKIT-UNIKERNEL-WROTE";
/// Byte offset of the marker (1 MiB).
pub const MARKER_OFFSET: u64 = 1 << 20;

type Xs = Xenstore<&'static Kernel>;
type Dev = xbd_front::Device<&'static Kernel, &'static GrantTable<GRANTS>, SLOTS, SEGS>;

/// One connected disk.
pub struct Disk {
    /// `51712 (xvda)`.
    pub label: String,
    dev: Box<Dev>,
    /// Bytes read and written by the kernel's own test.
    pub io_bytes: u64,
    /// Its ports bound for late EOI.
    late: Vec<Port>,
    /// Polls that found work, and their number at the last EOI.
    progress: u64,
    eoi_mark: u64,
}

fn read_string(xs: &mut Xs, path: &str) -> Option<String> {
    let mut b = [0u8; 256];
    xs.read_str(path, &mut b).ok().map(str::to_string)
}

/// `51712 (xvda)`.
pub fn label(devid: u32) -> String {
    match Vdev::from_number(devid).and_then(|v| v.name()) {
        Ok(n) => format!("{devid} ({})", n.as_str()),
        Err(_) => devid.to_string(),
    }
}

/// The start of a sector as text (non-printable bytes as `.`, trailing zeros cut).
fn sector_text(b: &[u8]) -> String {
    let head = b.get(..32).unwrap_or(b);
    let end = head.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    head.get(..end)
        .unwrap_or_default()
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                char::from(c)
            } else {
                '.'
            }
        })
        .collect()
}

impl Disk {
    /// Connects `device/vbd/<devid>`, prints what it is and exercises it.
    ///
    /// Not inlined, and the result is boxed: the connect path's temporaries then
    /// live in this frame only while it runs, not in the caller's for good.
    #[inline(never)]
    pub fn connect(
        k: &'static Kernel,
        grants: &'static GrantTable<GRANTS>,
        xs: &mut Xs,
        devid: u32,
    ) -> Result<Box<Disk>, xbd_front::Error> {
        let label = label(devid);
        let backend = read_string(xs, &format!("device/vbd/{devid}/backend")).unwrap_or_default();
        let written = read_string(xs, &format!("{backend}/dev")).unwrap_or_else(|| "?".into());
        let vdev = Vdev::from_number(devid);
        let canonical = vdev
            .and_then(|v| v.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|e| format!("({e})"));
        let linux = vdev
            .and_then(|v| v.linux_name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|e| format!("({e})"));
        say!(
            "disk {devid}: toolstack name \"{written}\", canonical name {canonical}, Linux name {linux}, backend {backend}\n"
        );
        // Built in place on the heap (the kit's docs/stack.md), then bound.
        let mut dev: Box<Dev> = Box::new(xbd_front::Device::unbound(
            k,
            grants,
            xbd_front::Config::DEFAULT,
        ));
        dev.bind(devid)?;
        dev.connect(xs)?;
        let mut disk = Disk {
            label,
            dev,
            io_bytes: 0,
            late: Vec::new(),
            progress: 0,
            eoi_mark: 0,
        };
        if let Err(e) = disk.exercise() {
            let _ = disk.dev.close(xs);
            return Err(e);
        }
        Ok(Box::new(disk))
    }

    fn exercise(&mut self) -> Result<(), xbd_front::Error> {
        let info = *self.dev.info().ok_or(xbd_front::Error::NotConnected)?;
        let feats = self
            .dev
            .features()
            .map(|f| f.to_string())
            .unwrap_or_default();
        let kind = match info.device_type {
            xbd_front::DeviceType::Cdrom => "cdrom",
            xbd_front::DeviceType::Disk => "disk",
        };
        say!(
            "disk {}: {} sectors of {} bytes ({} MiB), mode {}, {kind}; features: {}\n",
            self.label,
            info.sectors,
            info.sector_size,
            info.capacity_bytes() >> 20,
            if info.read_only { "r" } else { "w" },
            feats
        );
        if info.sectors == 0 {
            return Ok(());
        }
        let ss = info.sector_size as usize;
        let mut first = vec![0u8; ss];
        self.dev.read(0, &mut [&mut first[..]], IO_TIMEOUT)?;
        self.io_bytes += ss as u64;
        say!(
            "disk {}: sector 0: \"{}\"\n",
            self.label,
            sector_text(&first)
        );
        let lba = MARKER_OFFSET / u64::from(info.sector_size);
        if info.read_only {
            match self.dev.write(lba, &[&first[..]], IO_TIMEOUT) {
                Err(e) => say!("disk {}: write refused locally: {e}\n", self.label),
                Ok(()) => say!(
                    "disk {}: a write to a read-only disk was accepted!\n",
                    self.label
                ),
            }
            return Ok(());
        }
        if lba >= info.sectors {
            say!(
                "disk {}: too small for the write test at 1 MiB\n",
                self.label
            );
            return Ok(());
        }
        let mut sector = vec![0u8; ss];
        self.dev.read(lba, &mut [&mut sector[..]], IO_TIMEOUT)?;
        if let Some(dst) = sector.get_mut(..MARKER.len()) {
            dst.copy_from_slice(MARKER);
        }
        self.dev.write(lba, &[&sector[..]], IO_TIMEOUT)?;
        let flushed = match self.dev.flush(IO_TIMEOUT) {
            Ok(()) => "flushed",
            Err(xbd_front::Error::NotSupported) => "no flush offered",
            Err(e) => return Err(e),
        };
        let mut back = vec![0u8; ss];
        self.dev.read(lba, &mut [&mut back[..]], IO_TIMEOUT)?;
        self.io_bytes += 3 * ss as u64;
        if back == sector {
            say!(
                "disk {}: wrote \"{}\" at byte {MARKER_OFFSET}, {flushed}, read back: same\n",
                self.label,
                core::str::from_utf8(MARKER).unwrap_or("")
            );
        } else {
            say!("disk {}: read back after the write differs!\n", self.label);
        }
        Ok(())
    }

    /// Binds its event channels for late EOI (`Kernel::bind_lateeoi`): done once
    /// its own test is over, when only the main loop polls it.
    pub fn bind_lateeoi(&mut self, k: &Kernel) {
        for p in self.dev.ports() {
            if k.bind_lateeoi(p) {
                self.late.push(p);
            }
        }
    }

    /// Follows the backend and takes its responses; an error means the disk is
    /// unusable. Ends the handling of its events that came meanwhile.
    pub fn poll(&mut self, k: &Kernel, xs: &mut Xs) -> Result<(), xbd_front::Error> {
        let fired = k.take_fired(&self.late);
        let r = self.poll_device(xs);
        if matches!(r, Ok(true)) {
            self.progress += 1;
        }
        // Work since the last EOI counts, even if an earlier round took it (the
        // event raced that round's poll).
        if fired != 0 {
            k.eoi(&self.late, fired, self.progress != self.eoi_mark);
            self.eoi_mark = self.progress;
        }
        r.map(|_| ())
    }

    /// [`Disk::poll`]'s work: whether anything came from the backend.
    fn poll_device(&mut self, xs: &mut Xs) -> Result<bool, xbd_front::Error> {
        let changed = self.dev.poll_events(xs)?;
        match changed {
            Some(xbd_front::DeviceEvent::Disconnected(st)) => {
                return Err(xbd_front::Error::Xenbus(xenbus::Error::BackendClosed(st)));
            }
            Some(xbd_front::DeviceEvent::CapacityChanged { old, new }) => {
                say!("disk {}: capacity {old} -> {new} sectors\n", self.label);
            }
            Some(_) => say!("disk {}: backend changed its settings\n", self.label),
            None => {}
        }
        let done = self.dev.poll()?;
        match self.dev.state() {
            xbd_front::State::Connected => Ok(changed.is_some() || done > 0),
            xbd_front::State::Broken(r) => Err(xbd_front::Error::Broken(r)),
            xbd_front::State::Disconnected => Err(xbd_front::Error::NotConnected),
        }
    }

    /// Sectors and mode, for the status page.
    pub fn summary(&self) -> String {
        match self.dev.info() {
            Some(i) => format!(
                "disk {}: {} sectors of {} bytes, mode {}, {} bytes of I/O\n",
                self.label,
                i.sectors,
                i.sector_size,
                if i.read_only { "r" } else { "w" },
                self.io_bytes
            ),
            None => format!("disk {}: not connected\n", self.label),
        }
    }

    /// Closes the device (frontend state Closing, then Closed).
    pub fn close(mut self, k: &Kernel, xs: &mut Xs) {
        k.unbind_all(&self.late);
        match self.dev.close(xs) {
            Ok(_) => say!("disk {}: closed\n", self.label),
            Err(e) => say!("disk {}: close: {e}\n", self.label),
        }
    }
}
