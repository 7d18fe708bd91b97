//! The built-in guest: what a config without `kernel` runs, as an in-process guest
//! of the xen model. It is a small unikernel written with the kit itself, so the
//! toolstack can be used (and tested) without KVM:
//!
//! - prints to its console;
//! - connects to xenstore over its store ring (`xenbus::Xenstore`), reads its name
//!   and lists its devices (`device/vbd/*`, `device/vif/*`);
//! - advertises `control/feature-poweroff` and `-reboot` and watches
//!   `control/shutdown` (`xenbus::power`): `poweroff`/`halt` power it off, `reboot`
//!   reboots it (the toolstack then applies `on_poweroff`/`on_reboot`); an unknown
//!   value is cleared and reported on the console (BAD-INPUT row 38); a request
//!   repeated while one is being carried out is ignored (row 39);
//! - counts up `data/heartbeat` about twice a second while it waits.
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
const POLL: Duration = Duration::from_millis(500);
/// The node the guest counts up in, about twice a second while no power event comes
/// (something guest-written to watch).
pub const HEARTBEAT: &str = "data/heartbeat";

fn say(g: &InProcGuest, msg: &str) {
    // The early console (CONSOLEIO_write), which shim-hv always accepts.
    let _ = hypercall::Xen(g).console_write(msg.as_bytes());
}

/// Ends the guest: the domain shuts down with `reason` (this thread then ends at
/// its next hypercall).
fn stop(g: &InProcGuest, reason: ShutdownReason) {
    let _ = issue_shutdown(g, reason);
}

fn list_devices(g: &InProcGuest, xs: &mut Xenstore<&InProcGuest>, kind: &str, what: &str) {
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
        say(g, &format!("{what} {n}: backend {backend}\n"));
    }
}

/// The built-in guest's main (for [`crate::xen::Hypervisor::spawn_guest`]).
pub fn run(guest: Arc<InProcGuest>) {
    let g: &InProcGuest = &guest;
    let id = g.domain().id().0;
    let mut xs = match Xenstore::from_hvm_params(g) {
        Ok(x) => x,
        Err(e) => {
            say(g, &format!("xenstore: {e}\n"));
            stop(g, ShutdownReason::Crash);
            return;
        }
    };
    let mut buf = [0u8; 256];
    let name = xs
        .read_str("name", &mut buf)
        .map(str::to_string)
        .unwrap_or_else(|_| "?".into());
    say(
        g,
        &format!("xenkit built-in guest: domain {id} ({name}) up\n"),
    );
    list_devices(g, &mut xs, "vbd", "disk");
    list_devices(g, &mut xs, "vif", "nic");

    let features = PowerFeatures {
        poweroff: true,
        reboot: true,
        suspend: false,
    };
    let mut power = match PowerControl::new(&mut xs, features) {
        Ok(p) => p,
        Err(e) => {
            say(g, &format!("control/shutdown: {e}\n"));
            stop(g, ShutdownReason::Crash);
            return;
        }
    };
    say(g, "waiting for control/shutdown\n");
    let mut beats: u64 = 0;
    loop {
        match power.wait(&mut xs, POLL) {
            Ok(ev) => {
                say(g, &format!("power: {}\n", ev.as_str()));
                stop(g, ev.shutdown_reason());
                return;
            }
            Err(xenbus::Error::Timeout) => {
                beats += 1;
                if let Err(e) = xs.write_u64(HEARTBEAT, beats) {
                    say(g, &format!("{HEARTBEAT}: {e}\n"));
                }
            }
            Err(xenbus::Error::BadShutdownValue(v)) => {
                let shown = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("<{} bytes>", v.total_len()));
                say(g, &format!("ignoring control/shutdown = {shown:?}\n"));
            }
            Err(e) => {
                say(g, &format!("control/shutdown: {e}\n"));
                stop(g, ShutdownReason::Crash);
                return;
            }
        }
    }
}
