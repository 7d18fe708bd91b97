//! In-process demo: shim-hv plays Xen and dom0 for one guest that runs as a thread.
//!
//! The guest finds xenstore through its HVM params, reads its name, writes and lists
//! nodes, commits a transaction, watches a node dom0 then writes, advertises its power
//! features and waits. dom0 (this program) then does what `xl shutdown` does: writes
//! `poweroff` to the guest's `control/shutdown`. The guest sees the power event,
//! acknowledges it and calls `SCHEDOP_shutdown`; the domain ends up `Shutdown(poweroff)`.
//!
//! Run with `cargo run -p xen-model --example inproc_demo`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hypercall::xen::Xen;
use xen_model::{DomainEvent, DomainSpec, DomainState, Hypervisor, HypervisorConfig};
use xenbus::power::{issue_shutdown, PowerControl, PowerFeatures};
use xenbus::{Store, Xenstore};
use xenstored::TxId;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the guest tells the host while it runs (test plumbing, not a Xen interface).
enum Ready {
    Watching,
    Power,
    Failed(String),
}

fn guest_main(
    g: Arc<xen_model::inproc::InProcGuest>,
    ready: mpsc::Sender<Ready>,
) -> Result<(), xenbus::Error> {
    let xen = Xen(&*g);
    let say = |s: &str| {
        // Early console: CONSOLEIO_write (the host prints it with a [dN] prefix).
        let _ = xen.console_write(s.as_bytes());
    };
    let mut xs = Xenstore::from_hvm_params(&*g)?;
    xs.set_timeout(TIMEOUT);
    let mut buf = [0u8; 64];
    let name = xs.read_str("name", &mut buf)?.to_string();
    say(&format!("hello, I am {name:?}\n"));

    xs.write_str("data/greeting", "hello from the guest")?;
    xs.mkdir("data/empty")?;
    let mut dbuf = [0u8; 128];
    let entries: Vec<String> = xs
        .directory("data", &mut dbuf)?
        .map(str::to_string)
        .collect();
    say(&format!("data/ holds {entries:?}\n"));

    let n = xs.transaction(|tx| {
        let n = tx.read_u32_opt("data/boots")?.unwrap_or(0) + 1;
        tx.write_u32("data/boots", n)?;
        tx.write_str("data/last", "transaction")?;
        Ok(n)
    })?;
    say(&format!("transaction committed, boots = {n}\n"));

    xs.watch("data/message", "msg")?;
    let _first = xs.wait_watch_event_for("msg", TIMEOUT)?; // fires on registration
    let _ = ready.send(Ready::Watching);
    let ev = xs.wait_watch_event_for("msg", TIMEOUT)?;
    let msg = xs.read_str(ev.path(), &mut buf)?.to_string();
    say(&format!("watch fired on {}: {msg:?}\n", ev.path()));

    let features = PowerFeatures::POWEROFF | PowerFeatures::REBOOT;
    let mut power = PowerControl::new(&mut xs, features)?;
    let _ = ready.send(Ready::Power);
    let ev = power.wait(&mut xs, TIMEOUT)?;
    say(&format!("power event: {}\n", ev.as_str()));
    issue_shutdown(xs.platform(), ev.shutdown_reason())?;
    Ok(())
}

fn main() -> ExitCode {
    let hv = Hypervisor::new(HypervisorConfig::default());
    let events = hv.subscribe();
    let mut spec = DomainSpec::new("demo", 16);
    spec.console_sink = Some(Arc::new(|dom, bytes| {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "[d{}] {}", dom.0, String::from_utf8_lossy(bytes));
    }));
    let dom = match hv.create_domain(spec) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("create: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "dom0: created domain {} ({}), uuid {}, store page gfn {:#x} port {}",
        dom.id().0,
        dom.name(),
        dom.uuid(),
        dom.store().gfn.0,
        dom.store().port.0
    );

    let (tx, rx) = mpsc::channel();
    let guest = hv.spawn_guest(dom.clone(), move |g| {
        if let Err(e) = guest_main(g, tx.clone()) {
            let _ = tx.send(Ready::Failed(e.to_string()));
        }
    });
    let guest = match guest {
        Ok(h) => h,
        Err(e) => {
            eprintln!("spawn: {e}");
            return ExitCode::FAILURE;
        }
    };

    let dom0 = hv.xenstored().client(0);
    let home = format!("/local/domain/{}", dom.id().0);
    let step = |want: &str| match rx.recv_timeout(TIMEOUT) {
        Ok(Ready::Watching) if want == "watching" => true,
        Ok(Ready::Power) if want == "power" => true,
        Ok(Ready::Failed(e)) => {
            eprintln!("guest failed: {e}");
            false
        }
        _ => {
            eprintln!("guest did not reach {want}");
            false
        }
    };
    if !step("watching") {
        return ExitCode::FAILURE;
    }
    if let Err(e) = dom0.write(TxId::NONE, &format!("{home}/data/message"), b"hi from dom0") {
        eprintln!("dom0 write: {e}");
        return ExitCode::FAILURE;
    }
    if !step("power") {
        return ExitCode::FAILURE;
    }
    println!(
        "dom0: xl shutdown {} (writing control/shutdown = poweroff)",
        dom.name()
    );
    if let Err(e) = dom0.write(TxId::NONE, &format!("{home}/control/shutdown"), b"poweroff") {
        eprintln!("dom0 write: {e}");
        return ExitCode::FAILURE;
    }
    let state = guest.join();
    println!("dom0: domain {} is now {state:?}", dom.id().0);
    for ev in events.try_iter() {
        if let DomainEvent::StateChanged(id, s) = ev {
            println!("dom0: event: domain {} → {s:?}", id.0);
        }
    }
    let ok = matches!(
        state,
        DomainState::Shutdown(xen_model::ShutdownReason::Poweroff)
    );
    if let Err(e) = hv.destroy_domain(dom.id()) {
        eprintln!("destroy: {e}");
        return ExitCode::FAILURE;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
