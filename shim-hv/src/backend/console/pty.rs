//! A pseudo-terminal for a console: the backend holds the master, users open the
//! slave (`screen /dev/pts/N`, or the toolstack's `console DOM` later).
//!
//! The slave stays open in the backend too (as xenconsoled does), so the master never
//! sees a hang-up between users, and it is put in raw mode: the guest's bytes reach
//! the terminal unchanged. The master is non-blocking: a pty nobody reads fills up
//! and writes return `WouldBlock`, which the console's overflow policy handles.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// An open pty pair.
#[derive(Debug)]
pub(crate) struct Pty {
    master: File,
    _slave: OwnedFd,
    path: PathBuf,
}

impl Pty {
    /// Opens a pty pair (raw mode, non-blocking master).
    pub(crate) fn open() -> io::Result<Pty> {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: openpty writes two fds and a NUL-terminated name; glibc's name buffer
        // must hold the slave path, which is far shorter than 128 bytes ("/dev/pts/N").
        // termios and winsize may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                name.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openpty succeeded: both are fresh fds we own from here on.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // SAFETY: openpty NUL-terminated `name` inside the buffer.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        let path = PathBuf::from(path.to_string_lossy().into_owned());

        // Raw mode on the slave side; non-blocking master.
        // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `slave` is an open tty fd; `t` is a valid termios.
        if unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) } == 0 {
            // SAFETY: as above.
            unsafe {
                libc::cfmakeraw(&mut t);
                libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
            }
        }
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let fl = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(master.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Pty {
            master: File::from(master),
            _slave: slave,
            path,
        })
    }

    /// The slave's path (`/dev/pts/N`).
    pub(crate) fn path(&self) -> &PathBuf {
        &self.path
    }

    /// A second handle on the master, for the writer side.
    pub(crate) fn writer(&self) -> io::Result<File> {
        self.master.try_clone()
    }

    /// Waits up to `timeout` for input from the terminal; reads at most `buf.len()`
    /// bytes. `Ok(0)`: nothing arrived.
    pub(crate) fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        if n == 0 || pfd.revents & libc::POLLIN == 0 {
            return Ok(0);
        }
        match io::Read::read(&mut &self.master, buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}
