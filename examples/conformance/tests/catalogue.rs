//! The console catalogue against the kit's own console frontend (xencons); prints the
//! table.

use std::time::Duration;

use xen_conformance::console::{self, ConsoleDriver};
use xen_conformance::HostPlatform;
use xencons::{Config, Console};

struct Xencons(Console<HostPlatform>);

impl ConsoleDriver for Xencons {
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0.write(bytes).map_err(|e| e.to_string())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        self.0.read(buf).map_err(|e| e.to_string())
    }
    // The upcall of a guest using xencons: look at the input ring (a fault there is
    // the console's error); events for other ports are not the console's.
    fn event(&mut self, port: hypercall::Port) -> Result<(), String> {
        if port != self.0.port() {
            return Ok(());
        }
        self.0
            .pending_input()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[test]
fn xencons_passes_the_console_catalogue() {
    let report = console::run(|host, page, port| {
        let cfg = Config::default().with_stall_timeout(Duration::from_millis(100));
        Console::new(host.clone(), page, port, cfg)
            .map(|c| Box::new(Xencons(c)) as Box<dyn ConsoleDriver>)
            .map_err(|e| e.to_string())
    });
    println!("{report}");
    assert_eq!(report.rows.len(), console::catalogue().len());
    assert!(report.all_passed(), "{report}");
}

/// The catalogue can fail: a driver that trusts the indices and one that waits forever
/// for a stuck backend fail exactly the cases about that, with evidence.
#[test]
#[cfg_attr(
    miri,
    ignore = "shows the cases can fail (no memory-safety content); slow under Miri"
)]
fn a_trusting_driver_fails_the_right_cases() {
    use hypercall::abi::console as ring;
    use hypercall::{MappedPage, Platform};

    struct Trusting(MappedPage<HostPlatform>);
    impl ConsoleDriver for Trusting {
        fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
            let m = self.0.mem();
            let mut prod = m.load_u32(ring::OUT_PROD);
            for &b in bytes {
                // Waits for room however long it takes (no stall timeout).
                while prod.wrapping_sub(m.load_u32(ring::OUT_CONS)) as usize >= ring::OUT_SIZE {
                    self.0.platform().wait();
                }
                m.write(ring::OUT + prod as usize % ring::OUT_SIZE, &[b]);
                prod = prod.wrapping_add(1);
                m.store_u32(ring::OUT_PROD, prod);
            }
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
            let m = self.0.mem();
            let (mut cons, prod) = (m.load_u32(ring::IN_CONS), m.load_u32(ring::IN_PROD));
            // Trusts in_prod: copies whatever distance it claims (bounded by buf).
            let n = (prod.wrapping_sub(cons) as usize).min(buf.len());
            for b in &mut buf[..n] {
                m.read(
                    ring::IN + cons as usize % ring::IN_SIZE,
                    core::slice::from_mut(b),
                );
                cons = cons.wrapping_add(1);
            }
            m.store_u32(ring::IN_CONS, cons);
            Ok(n)
        }
    }
    let report = console::run(|host, page, _| {
        let mapped = MappedPage::new(host.clone(), page).map_err(|_| "page not mapped")?;
        Ok(Box::new(Trusting(mapped)))
    });
    println!("{report}");
    let failed: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name)
        .collect();
    assert_eq!(
        failed,
        [
            "console.in_prod_past_ring (row 37, C1)",
            "console.in_prod_behind (row 2)",
            "console.out_cons_past_prod (C1)",
            "console.backend_never_consumes (row 36)",
        ],
        "{report}"
    );
    assert!(report.rows.iter().any(|r| r.evidence.contains("panicked")));
}

/// A console driver with sound ring checks that kicks carelessly: after every write
/// it notifies port 2 (where the first console usually is) whatever its own port,
/// and it answers every upcall with a notification. It fails exactly the two cases
/// about events and ports.
#[test]
#[cfg_attr(
    miri,
    ignore = "shows the cases can fail (no memory-safety content); slow under Miri"
)]
fn a_chatty_driver_fails_the_event_cases() {
    use hypercall::abi::console as ring;
    use hypercall::{MappedPage, Port, Xen};

    struct Chatty(MappedPage<HostPlatform>);
    impl Chatty {
        fn kick(&self, port: Port) {
            let _ = Xen(self.0.platform()).evtchn_send(port);
        }
    }
    impl ConsoleDriver for Chatty {
        fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
            let m = self.0.mem();
            let mut prod = m.load_u32(ring::OUT_PROD);
            for &b in bytes {
                let cons = m.load_u32(ring::OUT_CONS);
                let used = prod.wrapping_sub(cons) as usize;
                if used > ring::OUT_SIZE {
                    return Err(format!("out_cons {cons} past out_prod {prod}"));
                }
                if used == ring::OUT_SIZE {
                    m.store_u32(ring::OUT_PROD, prod);
                    self.kick(Port(2));
                    if self.0.platform().waits() > 1000 {
                        return Err("output ring full".into());
                    }
                    hypercall::Platform::wait(self.0.platform());
                    continue;
                }
                m.write(ring::OUT + prod as usize % ring::OUT_SIZE, &[b]);
                prod = prod.wrapping_add(1);
            }
            m.store_u32(ring::OUT_PROD, prod);
            self.kick(Port(2));
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
            let m = self.0.mem();
            let (mut cons, prod) = (m.load_u32(ring::IN_CONS), m.load_u32(ring::IN_PROD));
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
            Ok(n)
        }
        fn event(&mut self, port: Port) -> Result<(), String> {
            self.kick(port);
            Ok(())
        }
    }
    let report = console::run(|host, page, _port| {
        let mapped = MappedPage::new(host.clone(), page).map_err(|_| "page not mapped")?;
        Ok(Box::new(Chatty(mapped)))
    });
    println!("{report}");
    let failed: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name)
        .collect();
    assert_eq!(
        failed,
        [
            "console.two_consoles (E5)",
            "console.spurious_events (E1, C2, row 25)",
        ],
        "{report}"
    );
}
