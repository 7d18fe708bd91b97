//! A host TAP device (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`) joined to a
//! [`Bridge`], so the host (or a network namespace) can reach guests.
//!
//! ```text
//!   host stack ── tapN ══ fd ══ TapPort ── Bridge ── vifs
//!                        reader thread: read(fd) → bridge.forward
//!                        deliver(frame): offloads resolved → write(fd)
//! ```
//!
//! Frames to the host have their offloads resolved first (GSO segmented, blank
//! checksums computed): the TAP is opened without `IFF_VNET_HDR`. The device is
//! created in the network namespace of the thread that opens it. The system calls
//! go through `nix`; the one `unsafe` of this module is the `TUNSETIFF` ioctl.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

mod ioctl {
    nix::ioctl_write_ptr_bad!(
        /// `TUNSETIFF`: numbered `_IOW('T', 202, int)` by the kernel but takes a
        /// `struct ifreq *` (hence the "bad" form, with the number libc knows).
        tun_set_iff,
        libc::TUNSETIFF,
        libc::ifreq
    );
}
use ioctl::tun_set_iff;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::bridge::{Bridge, BridgePort, Frame, PortId};

/// An open TAP device.
pub struct Tap {
    file: File,
    name: String,
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap").field("name", &self.name).finish()
    }
}

impl Tap {
    /// Opens (creating if needed) the TAP device `name` (at most 15 bytes; empty:
    /// the kernel picks `tapN`).
    pub fn open(name: &str) -> io::Result<Tap> {
        if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long or contains NUL",
            ));
        }
        // std opens with O_CLOEXEC.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF takes a pointer to a `struct ifreq`, which `req` is, and
        // it lives across the call; the fd is ours and open.
        unsafe { tun_set_iff(file.as_raw_fd(), &req) }?;
        let got: Vec<u8> = req
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        Ok(Tap {
            file,
            name: String::from_utf8_lossy(&got).into_owned(),
        })
    }

    /// The interface name the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `timeout_ms` for a frame to read.
    fn readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
        let t = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, t) {
            Ok(n) => Ok(n > 0
                && fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLIN))),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Counters of a TAP port.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames read from the host and forwarded.
    pub from_host: u64,
    /// Frames written to the host.
    pub to_host: u64,
    /// Writes that failed (interface down, ...).
    pub write_errors: u64,
}

struct Shared {
    tap: Tap,
    writer: Mutex<()>,
    from_host: AtomicU64,
    to_host: AtomicU64,
    write_errors: AtomicU64,
}

impl BridgePort for Shared {
    fn deliver(&self, frame: &Frame) {
        let _g = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for f in frame.resolve_offloads() {
            // A TAP write takes the whole frame or fails.
            match (&self.tap.file).write_all(&f.data) {
                Ok(_) => self.to_host.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.write_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
    fn name(&self) -> String {
        self.tap.name.clone()
    }
}

/// A TAP device attached to a bridge, with its reader thread.
pub struct TapPort {
    shared: Arc<Shared>,
    bridge: Arc<Bridge>,
    port: PortId,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for TapPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapPort")
            .field("tap", &self.shared.tap.name)
            .field("bridge", &self.bridge.name())
            .finish()
    }
}

impl TapPort {
    /// Attaches `tap` to `bridge` and starts reading from it.
    pub fn attach(tap: Tap, bridge: Arc<Bridge>) -> io::Result<TapPort> {
        let shared = Arc::new(Shared {
            tap,
            writer: Mutex::new(()),
            from_host: AtomicU64::new(0),
            to_host: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let port = bridge.attach(shared.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, br, st) = (shared.clone(), bridge.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("tap-{}", shared.tap.name))
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !st.load(Ordering::SeqCst) {
                    match sh.tap.readable(50) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(_) => break,
                    }
                    match (&sh.tap.file).read(&mut buf) {
                        Ok(n) if n >= 14 => {
                            sh.from_host.fetch_add(1, Ordering::Relaxed);
                            br.forward(port, &Frame::new(buf[..n].to_vec()));
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                bridge.detach(port);
                return Err(e);
            }
        };
        Ok(TapPort {
            shared,
            bridge,
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.shared.tap.name
    }

    /// Counters.
    pub fn stats(&self) -> TapStats {
        TapStats {
            from_host: self.shared.from_host.load(Ordering::Relaxed),
            to_host: self.shared.to_host.load(Ordering::Relaxed),
            write_errors: self.shared.write_errors.load(Ordering::Relaxed),
        }
    }
}

impl Drop for TapPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.bridge.detach(self.port);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
