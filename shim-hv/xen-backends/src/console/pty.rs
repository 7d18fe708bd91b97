//! A pseudo-terminal for a console: the backend holds the master, users open the
//! slave (`screen /dev/pts/N`, or the toolstack's `console DOM` later).
//!
//! The slave stays open in the backend too (as xenconsoled does), so the master never
//! sees a hang-up between users, and it is put in raw mode: the guest's bytes reach
//! the terminal unchanged. The master is non-blocking: a pty nobody reads fills up
//! and writes return `WouldBlock`, which the console's overflow policy handles.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

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
        let pair = nix::pty::openpty(None, None)?;
        let (master, slave) = (pair.master, pair.slave);
        let path = nix::unistd::ttyname(&slave)?;

        // Raw mode on the slave side (best effort, as before); non-blocking master.
        if let Ok(mut t) = tcgetattr(&slave) {
            cfmakeraw(&mut t);
            let _ = tcsetattr(&slave, SetArg::TCSANOW, &t);
        }
        let fl = OFlag::from_bits_retain(fcntl(&master, FcntlArg::F_GETFL)?);
        fcntl(&master, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
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
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        let ready = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if !ready {
            return Ok(0);
        }
        match io::Read::read(&mut &self.master, buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}
