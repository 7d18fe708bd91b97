//! The host side of the consoles' ptys, for all consoles at once: one thread
//! (`console-poll`, while any console has a pty) sleeps in poll(2) on every pty
//! master and on a wake-up socket, with no timeout.
//!
//! - Input: a master is polled for reading only while its console's input queue
//!   has room ([`super::INPUT_QUEUE_BYTES`]); bytes read go to
//!   [`Console::send_input`]. A full queue is backpressure to the terminal: the
//!   poller stops reading it and marks it (`input_blocked`); the console's turn
//!   that frees room wakes the poller.
//! - Output: guest output is written to the master by the console's own turn,
//!   without waiting. When the master is full (`WouldBlock`) the turn marks it
//!   (`pty_out_wanted`) and wakes the poller, which polls it for writing and
//!   schedules the console when it drains.
//!
//! A console's entry goes when the console stops (or is dropped).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::pty::Pty;
use super::Console;

struct Entry {
    console: Weak<Console>,
    pty: Arc<Pty>,
}

struct Inner {
    entries: Vec<Entry>,
    /// Whether the thread runs (it ends when no entry is left).
    running: bool,
    /// The wake-up socket's write end, while the thread runs.
    wake: Option<UnixStream>,
}

static POLLER: Mutex<Inner> = Mutex::new(Inner {
    entries: Vec::new(),
    running: false,
    wake: None,
});

fn lock() -> MutexGuard<'static, Inner> {
    POLLER.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake_locked(g: &Inner) {
    if let Some(w) = &g.wake {
        // Non-blocking: a full socket already holds a wake-up.
        let _ = (&*w).write(&[1]);
    }
}

/// Watches `pty` for `console` (starting the thread if needed).
pub(super) fn add(console: &Arc<Console>, pty: Arc<Pty>) -> io::Result<()> {
    let mut g = lock();
    g.entries.push(Entry {
        console: Arc::downgrade(console),
        pty,
    });
    if g.running {
        wake_locked(&g);
        return Ok(());
    }
    let started = UnixStream::pair().and_then(|(tx, rx)| {
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        std::thread::Builder::new()
            .name("console-poll".into())
            .spawn(move || run(rx))?;
        Ok(tx)
    });
    match started {
        Ok(tx) => {
            g.running = true;
            g.wake = Some(tx);
            Ok(())
        }
        Err(e) => {
            g.entries.pop();
            Err(e)
        }
    }
}

/// Makes the thread look again (an input queue got room, a master is to be
/// watched for writing, an entry went).
pub(super) fn wake() {
    wake_locked(&lock());
}

/// Stops watching `console`'s pty.
pub(super) fn remove(console: &Console) {
    let mut g = lock();
    let before = g.entries.len();
    g.entries
        .retain(|e| !std::ptr::eq(e.console.as_ptr(), console));
    if g.entries.len() != before {
        wake_locked(&g);
    }
}

fn run(rx: UnixStream) {
    let mut buf = [0u8; 1024];
    loop {
        let list: Vec<(Arc<Console>, Arc<Pty>)> = {
            let mut g = lock();
            g.entries
                .retain(|e| e.console.upgrade().is_some_and(|c| !c.stopped()));
            if g.entries.is_empty() {
                g.running = false;
                g.wake = None;
                return;
            }
            g.entries
                .iter()
                .filter_map(|e| Some((e.console.upgrade()?, e.pty.clone())))
                .collect()
        };
        let mut fds = Vec::with_capacity(list.len() + 1);
        fds.push(PollFd::new(rx.as_fd(), PollFlags::POLLIN));
        for (c, p) in &list {
            let mut ev = PollFlags::empty();
            // Mark first, then look: a turn that frees room after the look sees
            // the mark and wakes us.
            c.input_blocked.store(true, Ordering::SeqCst);
            if c.input_room() > 0 {
                c.input_blocked.store(false, Ordering::SeqCst);
                ev |= PollFlags::POLLIN;
            }
            if c.pty_out_wanted.load(Ordering::SeqCst) {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(p.fd(), ev));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                // Out of memory or the like: try again a little later.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if ready[0].contains(PollFlags::POLLIN) {
            while matches!((&rx).read(&mut buf), Ok(n) if n > 0) {}
        }
        for ((c, p), r) in list.iter().zip(&ready[1..]) {
            if r.contains(PollFlags::POLLOUT) {
                c.pty_out_wanted.store(false, Ordering::SeqCst);
                c.schedule();
            }
            let mut gone = r.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL);
            if r.contains(PollFlags::POLLIN) {
                let want = c.input_room().min(buf.len());
                match p.read(&mut buf[..want]) {
                    Ok(n) if n > 0 => {
                        c.send_input(&buf[..n]);
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => gone = true,
                }
            } else if r.contains(PollFlags::POLLHUP) {
                gone = true;
            }
            if gone {
                // The pty broke (it cannot hang up: the backend holds the slave
                // open): stop watching it rather than spin on it.
                remove(c);
            }
        }
    }
}
