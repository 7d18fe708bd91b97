//! Careless console drivers against the console catalogue: each has sound ring
//! checks but one flaw, and fails exactly the case about it (or, for the polite
//! driver that stays inside every rule, none). They pin down what each case
//! checks (docs/mutants.md: the catalogue's own checks are mutation-tested).
//!
//! Not under Miri: they check the cases' logic, and the shared-memory paths they
//! take are run there by `tests/catalogue.rs` (docs/miri.md).
#![cfg(not(miri))]

use hypercall::abi::console as ring;
use hypercall::{MappedPage, Platform, Port, Xen};
use xen_conformance::console::{self, ConsoleDriver, Report};
use xen_conformance::HostPlatform;

/// The one flaw of a [`Careful`] driver.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// None: a sound driver.
    None,
    /// Compares the input indices as plain numbers (`in_prod < in_cons` is an
    /// error), so input across the 2^32 wrap is refused.
    NoWrap,
    /// Takes no input while its output ring is full (its read first waits for
    /// output room, and gives up without reading).
    DeafWhileStuck,
    /// Fails on an upcall for a port it never bound.
    StrayPortFails,
    /// Polite but busy: notifies its backend 200 times when it is built (a banner
    /// written line by line) and answers each upcall for a port it never bound with
    /// one notification on its own port: exactly one per 100 events of the
    /// catalogue's storm, which the rule allows.
    Polite,
}

struct Careful {
    page: MappedPage<HostPlatform>,
    port: Port,
    flaw: Flaw,
}

impl Careful {
    fn kick(&self) {
        let _ = Xen(self.page.platform()).evtchn_send(self.port);
    }

    fn output_full(&self) -> bool {
        let m = self.page.mem();
        m.load_u32(ring::OUT_PROD)
            .wrapping_sub(m.load_u32(ring::OUT_CONS)) as usize
            >= ring::OUT_SIZE
    }
}

impl ConsoleDriver for Careful {
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let m = self.page.mem();
        let mut prod = m.load_u32(ring::OUT_PROD);
        let mut waits = 0;
        for &b in bytes {
            loop {
                let cons = m.load_u32(ring::OUT_CONS);
                let used = prod.wrapping_sub(cons) as usize;
                if used > ring::OUT_SIZE {
                    return Err(format!("out_cons {cons} past out_prod {prod}"));
                }
                if used < ring::OUT_SIZE {
                    break;
                }
                m.store_u32(ring::OUT_PROD, prod);
                self.kick();
                if waits == 100 {
                    return Err("output ring full".into());
                }
                self.page.platform().wait();
                waits += 1;
            }
            m.write(ring::OUT + prod as usize % ring::OUT_SIZE, &[b]);
            prod = prod.wrapping_add(1);
        }
        m.store_u32(ring::OUT_PROD, prod);
        self.kick();
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        if self.flaw == Flaw::DeafWhileStuck && self.output_full() {
            return Ok(0);
        }
        let m = self.page.mem();
        let (mut cons, prod) = (m.load_u32(ring::IN_CONS), m.load_u32(ring::IN_PROD));
        if self.flaw == Flaw::NoWrap && prod < cons {
            return Err(format!("in_prod {prod} behind in_cons {cons}"));
        }
        let avail = prod.wrapping_sub(cons) as usize;
        if avail > ring::IN_SIZE {
            return Err(format!("in_prod {prod} is {avail} bytes past in_cons"));
        }
        let n = avail.min(buf.len());
        for b in &mut buf[..n] {
            m.read(
                ring::IN + cons as usize % ring::IN_SIZE,
                core::slice::from_mut(b),
            );
            cons = cons.wrapping_add(1);
        }
        m.store_u32(ring::IN_CONS, cons);
        if n > 0 {
            self.kick();
        }
        Ok(n)
    }

    fn event(&mut self, port: Port) -> Result<(), String> {
        if port == self.port {
            return Ok(());
        }
        match self.flaw {
            Flaw::StrayPortFails => Err(format!("event on unbound port {}", port.0)),
            Flaw::Polite => {
                self.kick();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn run(flaw: Flaw) -> Report {
    let report = console::run(|host, page, port| {
        let page = MappedPage::new(host.clone(), page).map_err(|_| "page not mapped")?;
        let d = Careful { page, port, flaw };
        if flaw == Flaw::Polite {
            for _ in 0..200 {
                d.kick();
            }
        }
        Ok(Box::new(d))
    });
    println!("{report}");
    report
}

fn failed(report: &Report) -> Vec<&str> {
    report
        .rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name)
        .collect()
}

#[test]
fn a_careful_driver_passes_every_case() {
    let report = run(Flaw::None);
    assert!(report.all_passed(), "{report}");
}

/// `console.indices_wrap` starts the indices close enough to 2^32 that its 64 bytes
/// cross the wrap.
#[test]
fn a_driver_that_does_not_wrap_fails_the_wrap_case() {
    let report = run(Flaw::NoWrap);
    assert_eq!(
        failed(&report),
        ["console.indices_wrap (row 4)"],
        "{report}"
    );
}

/// `console.two_consoles` checks each console's input, not only both together.
#[test]
fn a_driver_deaf_while_its_output_is_stuck_fails_the_two_consoles_case() {
    let report = run(Flaw::DeafWhileStuck);
    assert_eq!(failed(&report), ["console.two_consoles (E5)"], "{report}");
    let row = &report.rows[5];
    assert!(row.evidence.contains("the first \"\""), "{report}");
}

/// `console.spurious_events` raises events on a port the driver never bound.
#[test]
fn a_driver_failing_on_a_stray_port_fails_the_spurious_events_case() {
    let report = run(Flaw::StrayPortFails);
    assert_eq!(
        failed(&report),
        ["console.spurious_events (E1, C2, row 25)"],
        "{report}"
    );
    assert!(
        report.rows[6].evidence.contains("port 77"),
        "{}",
        report.rows[6].evidence
    );
}

/// `console.spurious_events` allows one notification back per 100 events: exactly
/// 100 for the storm's 100 stray events passes; notifications sent before the storm
/// do not count.
#[test]
fn a_polite_driver_at_the_notification_limit_passes() {
    let report = run(Flaw::Polite);
    assert!(report.all_passed(), "{report}");
    let row = &report.rows[6];
    let back = if cfg!(miri) { 5 } else { 100 };
    assert!(
        row.evidence
            .contains(&format!(" {back} notifications back")),
        "{}",
        row.evidence
    );
}
