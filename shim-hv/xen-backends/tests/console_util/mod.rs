//! Helpers shared by the console_* tests: a hypervisor with a console backend, a
//! capturing (optionally slow) sink, and waiting with generous bounds (never timed
//! assertions).
#![allow(dead_code)]

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_backends::console::{ConsoleBackend, ConsoleConfig};
use xen_model::inproc::GuestHandle;
use xen_model::{Domain, DomainSpec, DomainState, Hypervisor, HypervisorConfig, ShutdownReason};

/// Upper bound for anything a test waits for (a loaded machine is slow; a hang is a
/// failure, slowness is not).
pub const LONG: Duration = Duration::from_secs(30);

pub struct Setup {
    pub hv: Arc<Hypervisor>,
    pub consoles: Arc<ConsoleBackend>,
}

pub fn setup(config: ConsoleConfig) -> Setup {
    let hv = Hypervisor::new(HypervisorConfig::default());
    let consoles = ConsoleBackend::new(&hv, config);
    Setup { hv, consoles }
}

impl Setup {
    /// A domain whose CONSOLEIO_write output goes to its console.
    pub fn domain(&self, name: &str) -> Arc<Domain> {
        let mut spec = DomainSpec::new(name, 4);
        spec.console_sink = Some(self.consoles.early_sink());
        self.hv.create_domain(spec).expect("create domain")
    }
}

/// Waits for the guest to power off cleanly; a crash (failed assert in the guest)
/// fails the test with the guest's message.
pub fn join_poweroff(h: GuestHandle) {
    match h.join() {
        DomainState::Shutdown(ShutdownReason::Poweroff) => {}
        other => panic!("guest ended as {other:?}"),
    }
}

/// A sink that records everything, accepting at most `max_write` bytes per call and
/// sleeping `delay` before each (a slow reader).
#[derive(Clone)]
pub struct Capture {
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub writes: Arc<Mutex<u64>>,
    max_write: usize,
    delay: Duration,
}

impl Capture {
    pub fn new() -> Capture {
        Capture::slow(usize::MAX, Duration::ZERO)
    }

    pub fn slow(max_write: usize, delay: Duration) -> Capture {
        Capture {
            bytes: Arc::new(Mutex::new(Vec::new())),
            writes: Arc::new(Mutex::new(0)),
            max_write,
            delay,
        }
    }

    pub fn get(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    /// Waits (bounded by LONG) until at least `n` bytes arrived.
    pub fn wait_len(&self, n: usize) -> Vec<u8> {
        let end = Instant::now() + LONG;
        loop {
            let b = self.get();
            if b.len() >= n || Instant::now() > end {
                return b;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let n = buf.len().min(self.max_write);
        self.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
        *self.writes.lock().unwrap() += 1;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Deterministic test data (not all printable: the console carries bytes).
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
        })
        .collect()
}
