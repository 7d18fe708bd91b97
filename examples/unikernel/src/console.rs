//! Console output: the PV console ring once it is up, before that (and on a
//! crash) the early console (`CONSOLEIO_write`, else port `0xE9`, which Xen logs
//! as `(dN) ...` and shim-hv prints).

use core::fmt::{self, Write};
use core::time::Duration;

use hypercall::arch::x86_64::{DebugConsolePort, HypercallPage};
use hypercall::Port;
use xencons::EarlyConsole;

use crate::xen::{self, Kernel};

type Ring = xencons::Console<&'static Kernel>;
type Early = EarlyConsole<&'static HypercallPage, DebugConsolePort>;

struct Out {
    ring: Option<Ring>,
    early: Option<Early>,
    /// What went to the ring last ended a line (or nothing went yet).
    line_start: bool,
    /// The ring's port, once bound for late EOI ([`init_ring`]).
    late: Option<Port>,
    /// [`Out::progress`] at the last EOI.
    eoi_mark: u64,
}

static OUT: spin::Mutex<Out> = spin::Mutex::new(Out {
    ring: None,
    early: None,
    line_start: true,
    late: None,
    eoi_mark: 0,
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

/// Switches to the PV console ring (`HVM_PARAM_CONSOLE_PFN`/`_EVTCHN`), its port
/// bound for late EOI (`Kernel::bind_lateeoi`): a backend that storms it with
/// events (docs/hostile-input.md E1, C2) wakes the kernel less and less often.
/// Each main-loop round ([`read`]) ends the handling of its event
/// ([`Out::eoi`]), and so does each print that finds output taken: a print that
/// finds the ring full then normally waits with the port unmasked (one that
/// fills it a second time, or one while the port is backed off after spurious
/// events, waits for the next 10 ms timer tick instead of the event).
pub fn init_ring(k: &'static Kernel) -> Result<(), xencons::Error> {
    let ring =
        xencons::Console::from_hvm_params_with(k, xencons::Config::default().with_crlf(true))?;
    let p = ring.port();
    let mut o = OUT.lock();
    o.ring = Some(ring);
    o.late = k.bind_lateeoi(p).then_some(p);
    Ok(())
}

impl Out {
    /// What the backend has done so far: output taken, plus input read (each
    /// main-loop round reads what it gave, [`read`]).
    fn progress(&mut self) -> u64 {
        self.ring.as_mut().map_or(0, |r| {
            let s = r.stats();
            let out = r.pending_output().unwrap_or(0) as u64;
            s.written.wrapping_sub(out).wrapping_add(s.read)
        })
    }

    /// Which events of the ring's late-EOI port came since the last look (bit 0).
    fn take_fired(&self) -> u64 {
        match (xen::kernel(), self.late) {
            (Some(k), Some(p)) => k.take_fired(&[p]),
            _ => 0,
        }
    }

    /// Ends the handling of the ring port's event (late EOI): of `fired` (taken
    /// before the input was read), or with `None` of one that came, if the
    /// backend took output since the last EOI. It had work if the backend took
    /// output or gave input since the last EOI, so console traffic is never
    /// held back; else it was spurious.
    fn eoi(&mut self, fired: Option<u64>) {
        let (Some(k), Some(p)) = (xen::kernel(), self.late) else {
            return;
        };
        let now = self.progress();
        let work = now != self.eoi_mark;
        let fired = match fired {
            Some(f) => f,
            None if work => self.take_fired(),
            None => 0,
        };
        if fired != 0 {
            k.eoi(&[p], fired, work);
            self.eoi_mark = now;
        }
    }

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
    let mut o = OUT.lock();
    // A writer that waits for room then has the port unmasked.
    o.eoi(None);
    let _ = o.write_fmt(args);
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

/// Waits (bounded) until the backend took every byte written: before powering off
/// (the port leaves late EOI first, unmasked, so its events wake the wait).
pub fn flush() {
    let mut o = OUT.lock();
    if let (Some(k), Some(p)) = (xen::kernel(), o.late.take()) {
        k.unbind_all(&[p]);
    }
    if let Some(r) = o.ring.as_mut() {
        let _ = r.flush(Duration::from_secs(2));
    }
}

/// Reads console input, if any came, and ends the handling of the ring port's
/// event ([`Out::eoi`]): once a main-loop round. A read that fails (the
/// backend's indices are impossible) gives the ring up, saying why.
pub fn read(buf: &mut [u8]) -> usize {
    let mut out = OUT.lock();
    let fired = out.take_fired();
    let n = match out.ring.as_mut().map(|r| r.read(buf)) {
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            out.give_up_ring("input", &e);
            0
        }
        None => 0,
    };
    out.eoi(Some(fired));
    n
}
