//! A pseudo-terminal for a console: the backend holds the master, users open the
//! slave (`screen /dev/pts/N`, or the toolstack's `console DOM` later).
//!
//! The slave stays open in the backend too (as xenconsoled does), so the master never
//! sees a hang-up between users, and it is put in raw mode: the guest's bytes reach
//! the terminal unchanged. The master is non-blocking: a pty nobody reads fills up
//! and writes return `WouldBlock`, which the console's overflow policy handles; the
//! console's poller ([`super::poller`]) waits for it to drain, and for input.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
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

    /// Reads what the terminal typed, at most `buf.len()` bytes, without
    /// waiting. `Ok(0)`: nothing there.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match io::Read::read(&mut &self.master, buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Writes guest output to the terminal without waiting (`WouldBlock` when
    /// nobody reads and the pty is full).
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &self.master, buf)
    }

    /// The master's descriptor, for poll(2).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}
