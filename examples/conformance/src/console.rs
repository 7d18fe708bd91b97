//! Console cases: a scripted, hostile console backend (`io/console.h` ring) against
//! any console driver, and the table runner.
//!
//! Implement [`ConsoleDriver`] for your driver (a few lines over its write and read
//! calls), then [`run`] the [`catalogue`] with a function that builds your driver over
//! the page (its frame, as `HVM_PARAM_CONSOLE_PFN` gives it) and port the case hands
//! it:
//!
//! ```
//! use xen_conformance::console::{self, ConsoleDriver};
//! use xen_conformance::HostPlatform;
//! use hypercall::abi::console as ring;
//! use hypercall::{Gfn, MappedPage, Platform, Port};
//!
//! /// A toy driver: copies input out, output in, checks nothing it should not trust.
//! /// It owns the platform and the page it maps (a `MappedPage`).
//! struct Toy(MappedPage<HostPlatform>);
//!
//! impl ConsoleDriver for Toy {
//!     fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
//!         let page = self.0.mem();
//!         let mut prod = page.load_u32(ring::OUT_PROD);
//!         for &b in bytes {
//!             // Full: publish what is there, let the backend run (100 turns at most).
//!             let mut turns = 0;
//!             while prod.wrapping_sub(page.load_u32(ring::OUT_CONS)) as usize >= ring::OUT_SIZE {
//!                 page.store_u32(ring::OUT_PROD, prod);
//!                 if turns == 100 {
//!                     return Err("output ring full".into());
//!                 }
//!                 self.0.platform().wait();
//!                 turns += 1;
//!             }
//!             page.write(ring::OUT + prod as usize % ring::OUT_SIZE, &[b]);
//!             prod = prod.wrapping_add(1);
//!         }
//!         page.store_u32(ring::OUT_PROD, prod);
//!         Ok(())
//!     }
//!     fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
//!         let page = self.0.mem();
//!         let (mut cons, prod) = (page.load_u32(ring::IN_CONS), page.load_u32(ring::IN_PROD));
//!         let avail = prod.wrapping_sub(cons) as usize;
//!         if avail > ring::IN_SIZE {
//!             return Err(format!("in_prod {prod} is {avail} bytes past in_cons"));
//!         }
//!         let n = avail.min(buf.len());
//!         for b in &mut buf[..n] {
//!             page.read(ring::IN + cons as usize % ring::IN_SIZE, core::slice::from_mut(b));
//!             cons = cons.wrapping_add(1);
//!         }
//!         page.store_u32(ring::IN_CONS, cons);
//!         Ok(n)
//!     }
//! }
//!
//! let report = console::run(|host: &HostPlatform, page: Gfn, _port: Port| {
//!     let mapped = MappedPage::new(host.clone(), page).map_err(|_| "page not mapped")?;
//!     Ok(Box::new(Toy(mapped)))
//! });
//! println!("{report}");
//! assert!(report.all_passed(), "{report}");
//! ```

use hypercall::abi::console as ring;
use hypercall::{Gfn, Platform, Port, SharedMem};

pub use crate::report::{Report, Row};
use crate::HostPlatform;

/// What a console driver under test offers the cases.
pub trait ConsoleDriver {
    /// Writes all of `bytes` (waiting through the platform if the ring is full), or
    /// fails with a reason.
    fn write(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// Takes waiting input into `buf` without blocking (0: none), or fails with a
    /// reason.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String>;
    /// An event-channel upcall for `port` arrived (pending events raised by the
    /// peer, [`HostPlatform::raise`]): do what the driver's upcall does (look at the
    /// ring, wake a reader...). It may be spurious (nothing changed) or for a port
    /// the driver never bound (docs/hostile-input.md E1, C2, row 25). The default
    /// does nothing: a driver that only polls.
    fn event(&mut self, _port: Port) -> Result<(), String> {
        Ok(())
    }
}

/// Builds the driver under test over the console page (its frame, which the
/// platform maps) and event channel a case provides (the backend's indices are
/// already set when this is called).
pub type Make<'a> =
    dyn FnMut(&HostPlatform, Gfn, Port) -> Result<Box<dyn ConsoleDriver>, String> + 'a;

/// A named case: what the peer does and what a correct driver does.
pub struct Case {
    /// Stable name (`console.<what>`), with the docs/hostile-input.md row it covers.
    pub name: &'static str,
    /// What the hostile backend does.
    pub peer: &'static str,
    /// What a correct driver does.
    pub expect: &'static str,
    run: fn(&HostPlatform, SharedMem<'_>, &mut Make<'_>) -> Result<String, String>,
}

/// The console cases.
pub fn catalogue() -> &'static [Case] {
    &CASES
}

/// Runs every case against drivers built by `make`, each on a fresh platform and page.
/// A driver that panics fails its case (the panic message is the evidence); so does
/// one that waits forever (a watchdog peer panics after 100 000 waits, 2 000 under
/// Miri, where a case expects the driver to give up).
pub fn run(
    mut make: impl FnMut(&HostPlatform, Gfn, Port) -> Result<Box<dyn ConsoleDriver>, String>,
) -> Report {
    let mut rows = Vec::new();
    for case in catalogue() {
        let host = HostPlatform::new();
        let page = host.pages(1);
        host.set_peer(Some(watchdog(&host)));
        let r = crate::report::caught(|| (case.run)(&host, page.mem(), &mut make));
        host.set_peer(None);
        rows.push(Row::from_outcome(case.name, r));
    }
    Report { rows }
}

const PORT: Port = Port(2);
/// The second console's port ([`Case`] `console.two_consoles`).
const PORT_B: Port = Port(3);
/// Waits after which a driver counts as hung (fewer under Miri, where each wait of a
/// spinning driver costs milliseconds; every case's correct driver needs at most a few
/// hundred).
const HUNG_AFTER: u64 = if cfg!(miri) { 2_000 } else { 100_000 };

/// The default peer: does nothing, but ends a driver that waits forever.
fn watchdog(host: &HostPlatform) -> crate::Peer {
    // The runner clears the peer after the case, which ends the handle cycle.
    let h = host.clone();
    Box::new(move || {
        if h.waits() > HUNG_AFTER {
            panic!("the driver waited {HUNG_AFTER} times without giving up");
        }
    })
}

/// The frame of `page` (host memory, so it has one).
fn frame_of(host: &HostPlatform, page: SharedMem<'_>) -> Gfn {
    host.virt_to_gfn(page.as_non_null())
        .expect("the case's page is guest memory")
}

fn put_input(page: SharedMem<'_>, bytes: &[u8]) {
    let prod = page.load_u32(ring::IN_PROD);
    for (i, b) in bytes.iter().enumerate() {
        let at = ring::IN + (prod.wrapping_add(i as u32) as usize % ring::IN_SIZE);
        page.write(at, core::slice::from_ref(b));
    }
    page.store_u32(ring::IN_PROD, prod.wrapping_add(bytes.len() as u32));
}

/// Reads until `want` bytes came, an error, or `turns` empty reads (each a wait).
fn read_all(
    host: &HostPlatform,
    d: &mut dyn ConsoleDriver,
    want: usize,
    turns: usize,
) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let mut idle = 0;
    while got.len() < want && idle < turns {
        let n = d.read(&mut buf)?;
        if n > buf.len() {
            return Err(format!(
                "read claimed {n} bytes into a {}-byte buffer",
                buf.len()
            ));
        }
        if n == 0 {
            idle += 1;
            host.wait();
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

fn set_indices(page: SharedMem<'_>, start: u32) {
    for off in [ring::IN_CONS, ring::IN_PROD, ring::OUT_CONS, ring::OUT_PROD] {
        page.store_u32(off, start);
    }
}

static CASES: [Case; 8] = [
    Case {
        name: "console.binary_input (C3)",
        peer: "sends every byte value 0..=255 (NULs, invalid UTF-8, escapes)",
        expect: "the same 256 bytes, in order, nothing added or dropped",
        run: |host, page, make| {
            let mut d = make(host, frame_of(host, page), PORT)?;
            let all: Vec<u8> = (0..=255).collect();
            put_input(page, &all);
            let got = read_all(host, &mut *d, all.len(), 20)?;
            if got == all {
                Ok("256 bytes back unchanged".into())
            } else {
                Err(format!(
                    "got {} bytes, first difference at {:?}",
                    got.len(),
                    got.iter().zip(&all).position(|(a, b)| a != b)
                ))
            }
        },
    },
    Case {
        name: "console.indices_wrap (row 4)",
        peer: "starts every index 10 below 2^32 and sends 64 bytes across the wrap",
        expect: "the 64 bytes arrive intact",
        run: |host, page, make| {
            set_indices(page, u32::MAX - 9);
            let mut d = make(host, frame_of(host, page), PORT)?;
            let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(7)).collect();
            put_input(page, &data);
            let got = read_all(host, &mut *d, data.len(), 20)?;
            if got == data {
                Ok(format!(
                    "64 bytes across the wrap, in_cons now {:#x}",
                    page.load_u32(ring::IN_CONS)
                ))
            } else {
                Err(format!("got {:?}", got))
            }
        },
    },
    Case {
        name: "console.in_prod_past_ring (row 37, C1)",
        peer: "moves in_prod 1025 bytes past in_cons (more than the 1024-byte ring)",
        expect: "a read error naming the bad index; no bytes handed out",
        run: |host, page, make| {
            let mut d = make(host, frame_of(host, page), PORT)?;
            page.store_u32(
                ring::IN_PROD,
                page.load_u32(ring::IN_CONS).wrapping_add(1025),
            );
            match d.read(&mut [0u8; 64]) {
                Err(e) => Ok(format!("refused: {e}")),
                Ok(n) => Err(format!("read returned {n} bytes")),
            }
        },
    },
    Case {
        name: "console.in_prod_behind (row 2)",
        peer: "moves in_prod one byte behind in_cons",
        expect: "a read error (a huge unsigned distance), no bytes",
        run: |host, page, make| {
            set_indices(page, 100);
            let mut d = make(host, frame_of(host, page), PORT)?;
            page.store_u32(ring::IN_PROD, 99);
            match d.read(&mut [0u8; 64]) {
                Err(e) => Ok(format!("refused: {e}")),
                Ok(n) => Err(format!("read returned {n} bytes")),
            }
        },
    },
    Case {
        name: "console.out_cons_past_prod (C1)",
        peer: "moves out_cons past out_prod",
        expect: "the next write fails with a reason instead of overwriting or hanging",
        run: |host, page, make| {
            let mut d = make(host, frame_of(host, page), PORT)?;
            page.store_u32(
                ring::OUT_CONS,
                page.load_u32(ring::OUT_PROD).wrapping_add(5),
            );
            let before = host.waits();
            match d.write(b"hello") {
                Err(e) => Ok(format!(
                    "refused after {} waits: {e}",
                    host.waits() - before
                )),
                Ok(()) => Err("write succeeded".into()),
            }
        },
    },
    Case {
        name: "console.two_consoles (E5)",
        peer: "two consoles, each with its own page and port: the first's backend never \
               takes output (its 2048-byte ring is full); the second's takes every byte; \
               input waits on both",
        expect: "the second writes 3000 bytes and reads its input while the first is \
                 stuck; each reads only its own input; neither notifies the other's port",
        run: |host, page, make| {
            let second = host.pages(1);
            let (gfn_a, gfn_b) = (frame_of(host, page), second.gfn());
            let mut a = make(host, gfn_a, PORT)?;
            let mut b = make(host, gfn_b, PORT_B)?;
            // The second console's backend: takes all output, every turn.
            let taken = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
            let (sink, ring_b) = (taken.clone(), second.clone());
            host.add_peer(Box::new(move || {
                let m = ring_b.mem();
                let (mut cons, prod) = (m.load_u32(ring::OUT_CONS), m.load_u32(ring::OUT_PROD));
                let n = (prod.wrapping_sub(cons) as usize).min(ring::OUT_SIZE);
                for _ in 0..n {
                    let mut c = 0u8;
                    m.read(
                        ring::OUT + cons as usize % ring::OUT_SIZE,
                        core::slice::from_mut(&mut c),
                    );
                    sink.borrow_mut().push(c);
                    cons = cons.wrapping_add(1);
                }
                m.store_u32(ring::OUT_CONS, cons);
            }));
            let r = (|| {
                // Test data as repeating sequences (no arithmetic: nothing here for a
                // mutation to change but the data itself).
                let full: Vec<u8> = (b'a'..=b'z').cycle().take(ring::OUT_SIZE).collect();
                a.write(&full)
                    .map_err(|e| format!("the first console's 2048 bytes: {e}"))?;
                put_input(page, b"for the first");
                put_input(second.mem(), b"for the second");
                let a_kicks = host.sends_on(PORT);
                // A period of 251 (prime) divides no ring size: a byte repeated or
                // skipped at a ring boundary shows.
                let data: Vec<u8> = (0..=250u8).cycle().take(3000).collect();
                b.write(&data)
                    .map_err(|e| format!("the second console, while the first is stuck: {e}"))?;
                let got_b = read_all(host, &mut *b, 14, 20)?;
                if host.sends_on(PORT) != a_kicks {
                    return Err(format!(
                        "the second console's work notified the first's port {} times",
                        host.sends_on(PORT) - a_kicks
                    ));
                }
                let b_kicks = host.sends_on(PORT_B);
                let got_a = read_all(host, &mut *a, 13, 20)?;
                if host.sends_on(PORT_B) != b_kicks {
                    return Err("the first console's read notified the second's port".into());
                }
                if got_b != b"for the second" || got_a != b"for the first" {
                    return Err(format!(
                        "the second read {:?}, the first {:?}",
                        String::from_utf8_lossy(&got_b),
                        String::from_utf8_lossy(&got_a)
                    ));
                }
                // The backend's turns take what the last write left in the ring.
                for _ in 0..3 {
                    host.wait();
                }
                if *taken.borrow() != data {
                    return Err(format!(
                        "the second's backend took {} bytes, not the 3000 written",
                        taken.borrow().len()
                    ));
                }
                let mut stuck = vec![0u8; ring::OUT_SIZE];
                page.read(ring::OUT, &mut stuck);
                if stuck != full {
                    return Err("the first console's full ring changed".into());
                }
                Ok(format!(
                    "3000 bytes out and 14 in on the second while the first's ring stayed \
                     full; notifications: first port {}, second port {}",
                    host.sends_on(PORT),
                    host.sends_on(PORT_B)
                ))
            })();
            host.clear_peers();
            r
        },
    },
    Case {
        name: "console.spurious_events (E1, C2, row 25)",
        peer: "raises 10 000 events on the console's port with nothing in the ring (500 \
               under Miri), and 100 on a port the driver never bound; then sends input",
        expect: "each upcall is harmless: no bytes invented, no error, at most one \
                 notification back per 100 events; the input then arrives",
        run: |host, page, make| {
            let mut d = make(host, frame_of(host, page), PORT)?;
            let storm: u32 = if cfg!(miri) { 500 } else { 10_000 };
            let sends = host.sends();
            for i in 0..storm {
                host.raise(PORT);
                if i % 100 == 0 {
                    host.raise(Port(77));
                }
                for p in host.take_pending() {
                    d.event(p)
                        .map_err(|e| format!("upcall {i} on port {}: {e}", p.0))?;
                }
                let mut buf = [0u8; 16];
                match d.read(&mut buf)? {
                    0 => {}
                    n => return Err(format!("{n} bytes invented after event {i}")),
                }
            }
            let back = host.sends() - sends;
            if back > u64::from(storm / 100) {
                return Err(format!(
                    "{back} notifications back for {storm} spurious events"
                ));
            }
            put_input(page, b"still here");
            host.raise(PORT);
            for p in host.take_pending() {
                d.event(p)?;
            }
            let got = read_all(host, &mut *d, 10, 20)?;
            if got != b"still here" {
                return Err(format!("then read {:?}", String::from_utf8_lossy(&got)));
            }
            Ok(format!(
                "{} events delivered ({storm} on the console's port): nothing invented, \
                 {back} notifications back; real input then arrived",
                host.raises()
            ))
        },
    },
    Case {
        name: "console.backend_never_consumes (row 36)",
        peer: "never takes output: out_cons stands still",
        expect: "writes beyond the 2048-byte ring fail in bounded time, never hang",
        run: |host, page, make| {
            let mut d = make(host, frame_of(host, page), PORT)?;
            let r = d.write(&[b'x'; 4096]);
            let waits = host.waits();
            match r {
                Err(e) => Ok(format!(
                    "failed after {waits} waits ({} ms virtual): {e}",
                    host.now_ns() / 1_000_000
                )),
                Ok(()) => Err(format!(
                    "4096 bytes written into a 2048-byte ring after {waits} waits"
                )),
            }
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The watchdog lets a driver wait `HUNG_AFTER` times and ends it on the next
    /// wait (mutants: its `>` as `>=` or `==`, which end a driver one wait early).
    #[test]
    fn watchdog_ends_a_driver_just_past_the_bound() {
        let host = HostPlatform::new();
        host.set_peer(Some(watchdog(&host)));
        for _ in 0..HUNG_AFTER {
            host.wait();
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.wait()));
        assert!(r.is_err(), "one wait past the bound ends the driver");
        host.set_peer(None);
    }

    /// A driver whose reads return the scripted counts (0: nothing), one byte value
    /// per read, then nothing; it counts its reads and fails past 1000 (a `read_all`
    /// that never gives up).
    struct Scripted {
        reads: Vec<usize>,
        calls: usize,
    }

    impl ConsoleDriver for Scripted {
        fn write(&mut self, _bytes: &[u8]) -> Result<(), String> {
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
            self.calls += 1;
            if self.calls > 1000 {
                return Err("read_all never gave up".into());
            }
            let n = self.reads.get(self.calls - 1).copied().unwrap_or(0);
            buf[..n].fill(self.calls as u8);
            Ok(n)
        }
    }

    fn scripted(reads: &[usize]) -> Scripted {
        Scripted {
            reads: reads.to_vec(),
            calls: 0,
        }
    }

    /// `read_all` stops as soon as `want` bytes came (no further read or wait),
    /// waits only after an empty read, and keeps reading through empty reads while
    /// short (mutants: the loop's `<` as `<=`, `&&` as `||`, `n == 0` as `!=`).
    #[test]
    fn read_all_stops_at_want_and_waits_only_when_empty() {
        let host = HostPlatform::new();
        let mut d = scripted(&[3, 0, 2, 0, 0, 4]);
        let got = read_all(&host, &mut d, 9, 20).unwrap();
        assert_eq!(got, [1, 1, 1, 3, 3, 6, 6, 6, 6]);
        assert_eq!(d.calls, 6, "no read after the 9th byte");
        assert_eq!(host.waits(), 3, "one wait per empty read");
        // Enough in one read: one read, no wait.
        let host = HostPlatform::new();
        let mut d = scripted(&[5]);
        assert_eq!(read_all(&host, &mut d, 5, 20).unwrap(), [1; 5]);
        assert_eq!((d.calls, host.waits()), (1, 0));
    }

    /// `read_all` gives up after exactly `turns` empty reads, however they are
    /// spread, with what came so far (mutants: `idle < turns` as `<=`, `idle += 1`
    /// as `-=` or `*=`).
    #[test]
    fn read_all_gives_up_after_turns_empty_reads() {
        let host = HostPlatform::new();
        let mut d = scripted(&[0, 2, 0, 0]);
        let got = read_all(&host, &mut d, 10, 5).unwrap();
        assert_eq!(got, [2, 2]);
        assert_eq!(d.calls, 6, "5 empty reads and the one with data");
        assert_eq!(host.waits(), 5);
        // Input arriving on the read after the last allowed one is not seen.
        let host = HostPlatform::new();
        let mut d = scripted(&[0, 0, 0, 1]);
        assert_eq!(read_all(&host, &mut d, 1, 3).unwrap(), Vec::<u8>::new());
        assert_eq!(d.calls, 3);
    }

    /// A read claiming more bytes than the buffer holds is an error, not a panic.
    #[test]
    fn read_all_refuses_a_read_longer_than_the_buffer() {
        struct Liar;
        impl ConsoleDriver for Liar {
            fn write(&mut self, _bytes: &[u8]) -> Result<(), String> {
                Ok(())
            }
            fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
                Ok(buf.len() + 1)
            }
        }
        let host = HostPlatform::new();
        let e = read_all(&host, &mut Liar, 10, 5).unwrap_err();
        assert_eq!(e, "read claimed 257 bytes into a 256-byte buffer");
    }
}
