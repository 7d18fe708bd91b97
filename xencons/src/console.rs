//! The console device: a [`ConsRing`] plus its event channel and the waiting rules.

use core::fmt;
use core::time::Duration;

use hypercall::abi::hvm;
use hypercall::{Gfn, MappedPage, Platform, Port, Xen};

use crate::error::{Error, WriteError};
use crate::ring::{ConsRing, Fault, PAGE_BYTES};

/// How long the backend may leave a full output ring untouched before a writer
/// gives up on it by default ([`Config::stall_timeout`]).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Console settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// A writer waiting for ring space gives up with [`Error::BackendGone`] once
    /// `out_cons` has not moved for this long. Any movement restarts the clock, so a
    /// slow backend is waited for; only a stuck one fails the write.
    pub stall_timeout: Duration,
    /// `core::fmt::Write` turns `\n` into `\r\n` (for backends whose terminal is in
    /// raw mode, as a pty usually is). Off by default: the byte APIs never translate.
    pub crlf: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            crlf: false,
        }
    }
}

impl Config {
    /// The default settings with `stall_timeout` replaced.
    pub fn with_stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// The default settings with `crlf` replaced.
    pub fn with_crlf(mut self, crlf: bool) -> Self {
        self.crlf = crlf;
        self
    }
}

/// Counters, for diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes placed in the output ring.
    pub written: u64,
    /// Bytes taken from the input ring.
    pub read: u64,
    /// Notifications sent to the backend.
    pub notifies: u64,
    /// Times a writer waited for ring space (one per `Platform::wait`).
    pub waits: u64,
    /// Notifications that failed (the port is not bound: the backend cannot be woken).
    pub notify_errors: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A PV console: output through `out[]`, input from `in[]`, notifications on one
/// event channel.
///
/// One owner at a time (`&mut self`); an OS that prints from several contexts wraps it
/// in its own lock. Every wait goes through [`Platform::wait`] and is bounded by the
/// configured stall timeout or the caller's timeout.
pub struct Console<P: Platform> {
    /// The page and the platform that maps it (its owner), with our indices.
    ring: ConsRing<MappedPage<P>>,
    port: Port,
    config: Config,
    failed: Option<Fault>,
    /// `out_cons` when the backend was declared gone (while it stays there and the
    /// ring is full, writes fail fast).
    gone_at: Option<u32>,
    last_error: Option<WriteError>,
    stats: Stats,
}

impl<P: Platform> fmt::Debug for Console<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("port", &self.port)
            .field("failed", &self.failed)
            .field("gone_at", &self.gone_at)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Console<P> {
    /// The primary console of an HVM/PVH guest: page and event channel from
    /// `HVM_PARAM_CONSOLE_PFN` / `HVM_PARAM_CONSOLE_EVTCHN` (0 means "not set up",
    /// as Linux's `xen_hvm_console_init` reads it).
    pub fn from_hvm_params(platform: P) -> Result<Self, Error> {
        Self::from_hvm_params_with(platform, Config::default())
    }

    /// [`Console::from_hvm_params`] with settings.
    pub fn from_hvm_params_with(platform: P, config: Config) -> Result<Self, Error> {
        let xen = Xen(&platform);
        let pfn = xen.hvm_get_param(hvm::PARAM_CONSOLE_PFN)?;
        if pfn == 0 {
            return Err(Error::NotConfigured {
                param: hvm::PARAM_CONSOLE_PFN,
            });
        }
        let evtchn = xen.hvm_get_param(hvm::PARAM_CONSOLE_EVTCHN)?;
        if evtchn == 0 {
            return Err(Error::NotConfigured {
                param: hvm::PARAM_CONSOLE_EVTCHN,
            });
        }
        let port = u32::try_from(evtchn).map_err(|_| Error::BadParam {
            param: hvm::PARAM_CONSOLE_EVTCHN,
            value: evtchn,
        })?;
        Self::new(platform, Gfn(pfn), Port(port), config)
    }

    /// A console over the page in guest frame `page` (a `struct
    /// xencons_interface`, mapped by `platform`: [`Error::Unmapped`] if it is not)
    /// notified through `port`. The console keeps the platform and borrows the
    /// page from it ([`MappedPage`]). Adopts the page's current indices (checked:
    /// a page with illegal indices is refused with [`Error::Failed`]).
    pub fn new(platform: P, page: Gfn, port: Port, config: Config) -> Result<Self, Error> {
        let page = MappedPage::new(platform, page).map_err(|_| Error::Unmapped(page))?;
        let mem = page.mem();
        if !mem.contains(0, PAGE_BYTES) || !(mem.as_ptr() as usize).is_multiple_of(4) {
            return Err(Error::BadPage { len: mem.len() });
        }
        let ring = ConsRing::attach(page)?;
        Ok(Console {
            ring,
            port,
            config,
            failed: None,
            gone_at: None,
            last_error: None,
            stats: Stats::default(),
        })
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        self.ring.region().platform()
    }

    /// The event channel (route its events to the OS's console handler, if any; the
    /// kit's own waits need no handler).
    pub fn port(&self) -> Port {
        self.port
    }

    /// The settings.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The protocol violation that failed this console, if one did.
    pub fn fault(&self) -> Option<Fault> {
        self.failed
    }

    /// Whether the backend marked the console disconnected.
    pub fn is_disconnected(&self) -> bool {
        self.failed.is_none() && self.ring.disconnected()
    }

    /// The error behind the last `core::fmt::Write` failure (which can only say
    /// `fmt::Error`), taken.
    pub fn take_error(&mut self) -> Option<WriteError> {
        self.last_error.take()
    }

    fn check(&self) -> Result<(), Error> {
        match self.failed {
            Some(f) => Err(Error::Failed(f)),
            None => Ok(()),
        }
    }

    fn fail(&mut self, f: Fault) -> Error {
        self.failed = Some(f);
        Error::Failed(f)
    }

    fn notify(&mut self) {
        self.stats.notifies += 1;
        if Xen(self.platform()).evtchn_send(self.port).is_err() {
            self.stats.notify_errors += 1;
        }
    }

    /// Puts as much of `bytes` into the ring as fits now, notifies the backend if
    /// anything was written, and returns the count (0 when the ring is full). Never
    /// waits.
    pub fn try_write(&mut self, bytes: &[u8]) -> Result<usize, Error> {
        self.check()?;
        if bytes.is_empty() {
            return Ok(0);
        }
        if self.ring.disconnected() {
            return Err(Error::Disconnected);
        }
        let n = self.ring.write_some(bytes).map_err(|f| self.fail(f))?;
        if n > 0 {
            self.stats.written += n as u64;
            self.gone_at = None;
            self.notify();
        }
        Ok(n)
    }

    /// Writes all of `bytes`. When the ring is full it notifies the backend and waits
    /// ([`Platform::wait`]) for it to drain: output is never dropped while the backend
    /// lives. It fails with [`Error::BackendGone`] when `out_cons` stands still for
    /// [`Config::stall_timeout`] (immediately, if the backend was already found gone and
    /// has not moved since), with [`Error::Disconnected`] when the backend marks the
    /// console closed, and with [`Error::Failed`] on illegal indices.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        // A failed console says so even with nothing to write, as `try_write` does.
        self.check()
            .map_err(|error| WriteError { written: 0, error })?;
        let mut done = 0;
        let mut seen_cons = self.ring.out_cons();
        let mut since = self.platform().now_ns();
        let mut kicked = false;
        while done < bytes.len() {
            let n = self.try_write(&bytes[done..]).map_err(|error| WriteError {
                written: done,
                error,
            })?;
            done += n;
            if done == bytes.len() {
                break;
            }
            if n > 0 {
                kicked = false;
                continue; // the backend may have made room meanwhile
            }
            // Full: wait for the backend to move out_cons.
            let cons = self.ring.out_cons();
            if cons != seen_cons {
                seen_cons = cons;
                since = self.platform().now_ns();
                self.gone_at = None;
                continue;
            }
            let stalled = self.platform().now_ns().saturating_sub(since);
            if self.gone_at == Some(cons) || stalled >= ns(self.config.stall_timeout) {
                self.gone_at = Some(cons);
                return Err(WriteError {
                    written: done,
                    error: Error::BackendGone {
                        stalled_ns: stalled,
                    },
                });
            }
            if !kicked {
                // One extra notification per stall, in case the backend missed ours.
                kicked = true;
                self.notify();
            }
            self.stats.waits += 1;
            self.platform().wait();
        }
        Ok(())
    }

    /// Waits until the backend has consumed everything written (e.g. before power
    /// off), with the same stall rule as [`Console::write`]; `timeout` bounds the
    /// whole wait ([`Error::Timeout`]).
    pub fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        self.check()?;
        let start = self.platform().now_ns();
        let mut seen_cons = self.ring.out_cons();
        let mut since = start;
        loop {
            let used = self.ring.out_used().map_err(|f| self.fail(f))?;
            if used == 0 {
                return Ok(());
            }
            if self.ring.disconnected() {
                return Err(Error::Disconnected);
            }
            let now = self.platform().now_ns();
            let cons = self.ring.out_cons();
            if cons != seen_cons {
                seen_cons = cons;
                since = now;
            } else if now.saturating_sub(since) >= ns(self.config.stall_timeout) {
                self.gone_at = Some(cons);
                return Err(Error::BackendGone {
                    stalled_ns: now.saturating_sub(since),
                });
            }
            if now.saturating_sub(start) >= ns(timeout) {
                return Err(Error::Timeout);
            }
            self.platform().wait();
        }
    }

    /// Bytes written that the backend has not consumed yet.
    pub fn pending_output(&mut self) -> Result<usize, Error> {
        self.check()?;
        self.ring.out_used().map_err(|f| self.fail(f))
    }

    /// Takes waiting input into `buf` without waiting; returns the count (0: none).
    /// Notifies the backend when it took something (it may wait for room).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let n = self.ring.read_some(buf).map_err(|f| self.fail(f))?;
        if n > 0 {
            self.stats.read += n as u64;
            self.notify();
        }
        Ok(n)
    }

    /// Waits up to `timeout` for input, then takes what there is into `buf`
    /// (at least one byte); [`Error::Timeout`] if none came.
    pub fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.platform().now_ns().saturating_add(ns(timeout));
        loop {
            let n = self.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.platform().now_ns() >= deadline {
                return Err(Error::Timeout);
            }
            self.platform().wait();
        }
    }

    /// Bytes of input waiting.
    pub fn pending_input(&mut self) -> Result<usize, Error> {
        self.check()?;
        self.ring.in_avail().map_err(|f| self.fail(f))
    }

    /// Our `out_prod` (a test hook: the tests compare it with the page).
    #[cfg(test)]
    pub(crate) fn out_prod(&self) -> u32 {
        self.ring.out_prod()
    }

    fn write_for_fmt(&mut self, bytes: &[u8]) -> fmt::Result {
        self.write(bytes).map_err(|e| {
            self.last_error = Some(e);
            fmt::Error
        })
    }
}

impl<P: Platform> fmt::Write for Console<P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !self.config.crlf {
            return self.write_for_fmt(s.as_bytes());
        }
        let mut lines = s.split('\n');
        if let Some(first) = lines.next() {
            self.write_for_fmt(first.as_bytes())?;
        }
        for line in lines {
            self.write_for_fmt(b"\r\n")?;
            self.write_for_fmt(line.as_bytes())?;
        }
        Ok(())
    }
}
