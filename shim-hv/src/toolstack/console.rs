//! A domain's console as the toolstack serves it: a bounded log of everything the
//! guest wrote, plus live copies for attached clients (`shim-hv console`, `create -c`).
//!
//! Attached clients get the log first, then new output, with no gap and no
//! duplicate (both happen under one lock). A client that does not keep up loses
//! output (bounded queue per client), never the guest or the other clients.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes of console output kept per domain.
pub const LOG_MAX: usize = 64 * 1024;
/// Chunks queued per attached client before its output is dropped.
pub const CLIENT_QUEUE: usize = 256;

#[derive(Default)]
struct Inner {
    log: VecDeque<u8>,
    total: u64,
    subs: Vec<SyncSender<Vec<u8>>>,
    closed: bool,
}

/// One domain's console output.
#[derive(Default)]
pub struct ConsoleHub {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl std::fmt::Debug for ConsoleHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHub").finish_non_exhaustive()
    }
}

impl ConsoleHub {
    /// An empty console.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guest wrote `bytes`.
    pub fn push(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut g = self.lock();
        if g.closed {
            return;
        }
        g.log.extend(bytes.iter().copied());
        let excess = g.log.len().saturating_sub(LOG_MAX);
        g.log.drain(..excess);
        g.total = g.total.saturating_add(bytes.len() as u64);
        g.subs.retain(|s| match s.try_send(bytes.to_vec()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
        drop(g);
        self.cv.notify_all();
    }

    /// The output kept so far (the last [`LOG_MAX`] bytes).
    pub fn log(&self) -> Vec<u8> {
        self.lock().log.iter().copied().collect()
    }

    /// Attaches a client: the log so far, and a channel of later output that ends
    /// when the console is closed (the domain went away).
    pub fn attach(&self) -> (Vec<u8>, Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::sync_channel(CLIENT_QUEUE);
        let mut g = self.lock();
        let log = g.log.iter().copied().collect();
        if !g.closed {
            g.subs.push(tx);
        }
        (log, rx)
    }

    /// The domain is gone: attached clients' channels end.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.subs.clear();
        drop(g);
        self.cv.notify_all();
    }

    /// Whether [`ConsoleHub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits up to `timeout` until the log contains `text`; returns whether it does.
    pub fn wait_for_text(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let needle = text.as_bytes();
        let mut g = self.lock();
        loop {
            let hay: Vec<u8> = g.log.iter().copied().collect();
            if needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || g.closed {
                return false;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_sees_log_then_live_output_then_end() {
        let h = ConsoleHub::new();
        h.push(b"one ");
        let (log, rx) = h.attach();
        assert_eq!(log, b"one ");
        h.push(b"two");
        assert_eq!(rx.recv().unwrap(), b"two");
        h.close();
        assert!(rx.recv().is_err());
        h.push(b"late");
        assert_eq!(h.log(), b"one two");
    }

    #[test]
    fn log_is_bounded_and_slow_clients_do_not_block() {
        let h = ConsoleHub::new();
        let (_, _rx) = h.attach();
        for _ in 0..(CLIENT_QUEUE + 10) {
            h.push(&[b'x'; 1024]);
        }
        assert_eq!(h.log().len(), LOG_MAX);
        assert!(h.wait_for_text("xx", Duration::ZERO));
        assert!(!h.wait_for_text("y", Duration::ZERO));
    }
}
