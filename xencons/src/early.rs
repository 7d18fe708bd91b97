//! Output before the console ring is set up: `CONSOLEIO_write`, falling back to a
//! debug port.
//!
//! `CONSOLEIO_write` from a domU reaches Xen's console only on a debug-built Xen (or
//! for a domain flagged `is_console`); elsewhere it fails (`-EPERM` from XSM's
//! default policy, `-ENOSYS` where the op is missing). Linux therefore writes HVM/PVH
//! early output to port `0xE9`, which Xen logs as `(dN) ...`. [`EarlyConsole`] tries
//! the hypercall once; after the first failure it uses the [`DebugPort`] for good.
//! Once [`crate::Console::from_hvm_params`] succeeds, switch to the ring.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use hypercall::{Hypercall, Xen};

/// Where early bytes go when `CONSOLEIO_write` does not work. Writing to a port is
/// the OS's business (privileged, and unsafe to do from the wrong place), so it is a
/// trait: an x86_64 kernel passes
/// `hypercall::arch::x86_64::DebugConsolePort`; tests and other OSes pass a closure.
pub trait DebugPort {
    /// Emits `bytes`. Must not fail or block for long (it runs on panic paths).
    fn write_bytes(&self, bytes: &[u8]);
}

impl<F: Fn(&[u8])> DebugPort for F {
    fn write_bytes(&self, bytes: &[u8]) {
        self(bytes)
    }
}

/// A [`DebugPort`] that drops everything (no fallback).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDebugPort;

impl DebugPort for NoDebugPort {
    fn write_bytes(&self, _bytes: &[u8]) {}
}

#[cfg(target_arch = "x86_64")]
impl DebugPort for hypercall::arch::x86_64::DebugConsolePort {
    fn write_bytes(&self, bytes: &[u8]) {
        self.write(bytes)
    }
}

/// Which path an early write took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyPath {
    /// `CONSOLEIO_write` accepted it.
    Hypercall,
    /// The debug port got it (the hypercall failed now or earlier).
    DebugPort,
}

/// The early console: `CONSOLEIO_write`, else the debug port.
///
/// Methods take `&self` and keep one atomic flag, so a `static` or shared instance
/// works from panic handlers; `fmt::Write` is implemented for `&EarlyConsole` too.
pub struct EarlyConsole<H: Hypercall, D: DebugPort> {
    xen: Xen<H>,
    port: D,
    hypercall_failed: AtomicBool,
}

impl<H: Hypercall, D: DebugPort> fmt::Debug for EarlyConsole<H, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarlyConsole")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl<H: Hypercall, D: DebugPort> EarlyConsole<H, D> {
    /// An early console issuing hypercalls through `hypercall`, falling back to `port`.
    pub const fn new(hypercall: H, port: D) -> Self {
        EarlyConsole {
            xen: Xen(hypercall),
            port,
            hypercall_failed: AtomicBool::new(false),
        }
    }

    /// The path the next write will try first.
    pub fn path(&self) -> EarlyPath {
        if self.hypercall_failed.load(Ordering::Relaxed) {
            EarlyPath::DebugPort
        } else {
            EarlyPath::Hypercall
        }
    }

    /// Writes `bytes`; returns the path that took them. Never fails: the debug port is
    /// the last resort.
    pub fn write(&self, bytes: &[u8]) -> EarlyPath {
        if !self.hypercall_failed.load(Ordering::Relaxed) {
            if self.xen.console_write(bytes).is_ok() {
                return EarlyPath::Hypercall;
            }
            self.hypercall_failed.store(true, Ordering::Relaxed);
        }
        self.port.write_bytes(bytes);
        EarlyPath::DebugPort
    }
}

impl<H: Hypercall, D: DebugPort> fmt::Write for EarlyConsole<H, D> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        EarlyConsole::write(self, s.as_bytes());
        Ok(())
    }
}

impl<H: Hypercall, D: DebugPort> fmt::Write for &EarlyConsole<H, D> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        EarlyConsole::write(self, s.as_bytes());
        Ok(())
    }
}
