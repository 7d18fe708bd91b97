//! Console output: the PV console ring once it is up, before that (and on a
//! crash) the early console (`CONSOLEIO_write`, else port `0xE9`, which Xen logs
//! as `(dN) ...` and shim-hv prints).

use core::fmt::{self, Write};
use core::time::Duration;

use hypercall::arch::x86_64::{DebugConsolePort, HypercallPage};
use xencons::EarlyConsole;

use crate::xen::Kernel;

type Ring = xencons::Console<&'static Kernel>;
type Early = EarlyConsole<&'static HypercallPage, DebugConsolePort>;

struct Out {
    ring: Option<Ring>,
    early: Option<Early>,
    /// What went to the ring last ended a line (or nothing went yet).
    line_start: bool,
}

static OUT: spin::Mutex<Out> = spin::Mutex::new(Out {
    ring: None,
    early: None,
    line_start: true,
});

/// The debug port (usable from the first instruction: the kernel runs in ring 0
/// of a PVH/HVM guest, where port `0xE9` is Xen's debug console).
fn port() -> DebugConsolePort {
    // SAFETY: ring 0 in a PVH guest; writes to 0xE9 only log bytes.
    unsafe { DebugConsolePort::new() }
}

/// Sets up the early console once hypercalls work.
pub fn init_early(hc: &'static HypercallPage) {
    OUT.lock().early = Some(EarlyConsole::new(hc, port()));
}

/// Switches to the PV console ring (`HVM_PARAM_CONSOLE_PFN`/`_EVTCHN`).
pub fn init_ring(k: &'static Kernel) -> Result<(), xencons::Error> {
    let ring =
        xencons::Console::from_hvm_params_with(k, xencons::Config::default().with_crlf(true))?;
    OUT.lock().ring = Some(ring);
    Ok(())
}

impl Out {
    fn early_write(&self, s: &str) {
        match &self.early {
            Some(e) => {
                let _ = (&*e).write_str(s);
            }
            None => port().write(s.as_bytes()),
        }
    }
}

/// Formats into the early console.
struct EarlyOut<'a>(&'a Out);

impl Write for EarlyOut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.early_write(s);
        Ok(())
    }
}

impl Out {
    /// The ring failed (the backend broke its protocol, or went away): says why
    /// on the early console, which is used from now on.
    fn give_up_ring(&mut self, what: &str, why: &dyn fmt::Display) {
        self.ring = None;
        // On a line of its own, even if the ring failed in the middle of one.
        let nl = if self.line_start { "" } else { "\n" };
        let _ = writeln!(
            EarlyOut(self),
            "{nl}console ring failed ({what}): {why}; using the early console"
        );
    }
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(r) = self.ring.as_mut() {
            if r.write_str(s).is_ok() {
                if let Some(&b) = s.as_bytes().last() {
                    self.line_start = b == b'\n';
                }
                return Ok(());
            }
            match r.take_error() {
                Some(e) => self.give_up_ring("output", &e),
                None => self.give_up_ring("output", &"write failed"),
            }
        }
        self.early_write(s);
        Ok(())
    }
}

/// Prints formatted text (see [`crate::say`]).
pub fn print(args: fmt::Arguments<'_>) {
    let _ = OUT.lock().write_fmt(args);
}

/// Prints on a crash path: never waits for the lock (the crash may have happened
/// while it was held) and also writes to the early console.
pub fn print_crash(args: fmt::Arguments<'_>) {
    struct Port;
    impl Write for Port {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            port().write(s.as_bytes());
            Ok(())
        }
    }
    let _ = Port.write_fmt(args);
    if let Some(mut o) = OUT.try_lock() {
        if let Some(r) = o.ring.as_mut() {
            let _ = r.write_fmt(args);
            let _ = r.flush(Duration::from_secs(2));
        }
    }
}

/// Waits (bounded) until the backend took every byte written: before powering off.
pub fn flush() {
    if let Some(r) = OUT.lock().ring.as_mut() {
        let _ = r.flush(Duration::from_secs(2));
    }
}

/// Reads console input, if any came. A read that fails (the backend's indices
/// are impossible) gives the ring up, saying why.
pub fn read(buf: &mut [u8]) -> usize {
    let mut out = OUT.lock();
    match out.ring.as_mut().map(|r| r.read(buf)) {
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            out.give_up_ring("input", &e);
            0
        }
        None => 0,
    }
}
