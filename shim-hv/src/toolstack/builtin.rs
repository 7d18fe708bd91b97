//! The built-in guest: what a config without `kernel` runs, as an in-process guest
//! of the xen model. It is a small unikernel written with the kit itself, so the
//! toolstack can be used (and tested) without KVM:
//!
//! - prints to its PV console ring (`xencons`; the early `CONSOLEIO_write` console
//!   until the ring is up, or if it fails) and echoes what it is sent (`echo: ...`);
//! - connects to xenstore over its store ring (`xenbus::Xenstore`), reads its name
//!   and lists its devices (`device/vbd/*`, `device/vif/*`);
//! - advertises `control/feature-poweroff` and `-reboot` and watches
//!   `control/shutdown` (`xenbus::power`): `poweroff`/`halt` power it off, `reboot`
//!   reboots it (the toolstack then applies `on_poweroff`/`on_reboot`); an unknown
//!   value is cleared and reported on the console (BAD-INPUT row 38); a request
//!   repeated while one is being carried out is ignored (row 39);
//! - counts up `data/heartbeat` about four times a second while it waits.
//!
//! Console lines it prints (tests and the demo look for them):
//! `xenkit built-in guest: domain N (NAME) up`, `power: <event>`,
//! `ignoring control/shutdown = "<value>"`.

use std::sync::Arc;
use std::time::Duration;

use xenbus::power::{issue_shutdown, PowerControl, PowerFeatures, ShutdownReason};
use xenbus::{Store, Xenstore};

use crate::runner::inproc::InProcGuest;

/// How long one power-event wait lasts before the loop goes round again.
const POLL: Duration = Duration::from_millis(250);
/// The node the guest counts up in, about four times a second while no power event comes
/// (something guest-written to watch).
pub const HEARTBEAT: &str = "data/heartbeat";

/// The guest's console: the ring once it works, else `CONSOLEIO_write`.
struct Out<'a> {
    g: &'a InProcGuest,
    ring: Option<xencons::Console<&'a InProcGuest>>,
}

impl<'a> Out<'a> {
    fn new(g: &'a InProcGuest) -> Self {
        let ring = match xencons::Console::from_hvm_params(g) {
            Ok(c) => Some(c),
            Err(e) => {
                early(g, &format!("console ring: {e}; using CONSOLEIO_write\n"));
                None
            }
        };
        Out { g, ring }
    }

    fn say(&mut self, msg: &str) {
        if let Some(c) = self.ring.as_mut() {
            if c.write(msg.as_bytes()).is_ok() {
                return;
            }
            self.ring = None;
            early(self.g, "console ring failed; using CONSOLEIO_write\n");
        }
        early(self.g, msg);
    }

    /// Waits (bounded) until the backend took all output: before powering off.
    fn flush(&mut self) {
        if let Some(c) = self.ring.as_mut() {
            let _ = c.flush(Duration::from_secs(2));
        }
    }

    /// Echoes console input, if any came.
    fn echo(&mut self) {
        let mut buf = [0u8; 256];
        let n = match self.ring.as_mut().map(|c| c.read(&mut buf)) {
            Some(Ok(n)) if n > 0 => n,
            _ => return,
        };
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        self.say(&format!("echo: {}\n", text.trim_end()));
    }
}

fn early(g: &InProcGuest, msg: &str) {
    // shim-hv always accepts CONSOLEIO_write.
    let _ = hypercall::Xen(g).console_write(msg.as_bytes());
}

/// Ends the guest: flushes the console, then the domain shuts down with `reason`
/// (this thread then ends at its next hypercall).
fn stop(out: &mut Out<'_>, reason: ShutdownReason) {
    out.flush();
    let _ = issue_shutdown(out.g, reason);
}

fn list_devices(out: &mut Out<'_>, xs: &mut Xenstore<&InProcGuest>, kind: &str, what: &str) {
    let mut buf = [0u8; 512];
    let dir = format!("device/{kind}");
    let names: Vec<String> = match xs.directory(&dir, &mut buf) {
        Ok(list) => list.map(|s| s.to_string()).collect(),
        Err(_) => Vec::new(),
    };
    for n in names {
        let mut b = [0u8; 256];
        let backend = xs
            .read_str(&format!("{dir}/{n}/backend"), &mut b)
            .map(str::to_string)
            .unwrap_or_default();
        out.say(&format!("{what} {n}: backend {backend}\n"));
    }
}

/// The built-in guest's main (for [`crate::xen::Hypervisor::spawn_guest`]).
pub fn run(guest: Arc<InProcGuest>) {
    let g: &InProcGuest = &guest;
    let id = g.domain().id().0;
    let mut out = Out::new(g);
    let mut xs = match Xenstore::from_hvm_params(g) {
        Ok(x) => x,
        Err(e) => {
            out.say(&format!("xenstore: {e}\n"));
            stop(&mut out, ShutdownReason::Crash);
            return;
        }
    };
    let mut buf = [0u8; 256];
    let name = xs
        .read_str("name", &mut buf)
        .map(str::to_string)
        .unwrap_or_else(|_| "?".into());
    out.say(&format!("xenkit built-in guest: domain {id} ({name}) up\n"));
    list_devices(&mut out, &mut xs, "vbd", "disk");
    list_devices(&mut out, &mut xs, "vif", "nic");

    let features = PowerFeatures {
        poweroff: true,
        reboot: true,
        suspend: false,
    };
    let mut power = match PowerControl::new(&mut xs, features) {
        Ok(p) => p,
        Err(e) => {
            out.say(&format!("control/shutdown: {e}\n"));
            stop(&mut out, ShutdownReason::Crash);
            return;
        }
    };
    out.say("waiting for control/shutdown\n");
    let mut beats: u64 = 0;
    loop {
        match power.wait(&mut xs, POLL) {
            Ok(ev) => {
                out.say(&format!("power: {}\n", ev.as_str()));
                stop(&mut out, ev.shutdown_reason());
                return;
            }
            Err(xenbus::Error::Timeout) => {
                out.echo();
                beats += 1;
                if let Err(e) = xs.write_u64(HEARTBEAT, beats) {
                    out.say(&format!("{HEARTBEAT}: {e}\n"));
                }
            }
            Err(xenbus::Error::BadShutdownValue(v)) => {
                let shown = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("<{} bytes>", v.total_len()));
                out.say(&format!("ignoring control/shutdown = {shown:?}\n"));
            }
            Err(e) => {
                out.say(&format!("control/shutdown: {e}\n"));
                stop(&mut out, ShutdownReason::Crash);
                return;
            }
        }
    }
}
