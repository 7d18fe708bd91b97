//! Xenstore and power-event cases: a hostile [`StoreServer`] (and, for the device
//! cases, a backend played through the [`Device`] rig) against any xenstore client,
//! and the table runner.
//!
//! Implement [`StoreDriver`] for your client (each method is a few lines over its own
//! calls), then [`run`] the [`catalogue`] with a function that builds your client on
//! the platform a case hands it. The client finds the store as a guest finds
//! xenstored, through `HVM_PARAM_STORE_PFN` / `HVM_PARAM_STORE_EVTCHN` (the platform
//! answers them); the case has already set up the store. Give the client a short
//! request timeout: the cases use virtual time (1 ms per `wait()`) and expect at
//! least 50 ms to be enough for a request (a dribbled reply takes 36 turns), while a
//! client that waits 10 000 times without giving up fails its case (2 000 under
//! Miri).
//!
//! Each case names the docs/hostile-input.md rows it covers
//! (docs/bad-input-coverage.md lists them). Every case can fail:
//! `tests/xenstore_catalogue.rs` runs a deliberately careless client that fails the
//! cases about each carelessness, and xenbus's client that passes them all.
//!
//! ```no_run
//! use std::time::Duration;
//! use xen_conformance::xenstore_cases::{self, PowerOffer, StoreDriver};
//! use xen_conformance::HostPlatform;
//! use xenbus::frontend::{BackendEvent, FrontendHandshake};
//! use xenbus::power::{PowerControl, PowerFeatures};
//! use xenbus::{Store, XenbusState, Xenstore};
//!
//! const T: Duration = Duration::from_millis(50);
//! fn s(e: xenbus::Error) -> String { e.to_string() }
//!
//! struct Xenbus {
//!     xs: Xenstore<HostPlatform>,
//!     hs: Option<FrontendHandshake>,
//!     power: Option<PowerControl>,
//! }
//!
//! impl StoreDriver for Xenbus {
//!     fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
//!         let mut buf = vec![0u8; 4096];
//!         let n = self.xs.read(path, &mut buf).map_err(s)?;
//!         buf.truncate(n);
//!         Ok(buf)
//!     }
//!     fn read_u64(&mut self, path: &str) -> Result<u64, String> {
//!         self.xs.read_u64(path).map_err(s)
//!     }
//!     fn write(&mut self, path: &str, value: &[u8]) -> Result<(), String> {
//!         self.xs.write(path, value).map_err(s)
//!     }
//!     fn directory(&mut self, path: &str) -> Result<Vec<String>, String> {
//!         let mut buf = vec![0u8; 4096];
//!         Ok(self.xs.directory(path, &mut buf).map_err(s)?.map(String::from).collect())
//!     }
//!     fn watch(&mut self, path: &str, token: &str) -> Result<(), String> {
//!         self.xs.watch(path, token).map_err(s)
//!     }
//!     fn poll_event(&mut self, token: &str) -> Result<Option<String>, String> {
//!         let ev = self.xs.poll_watch_event_for(token).map_err(s)?;
//!         Ok(ev.map(|e| e.path().to_string()))
//!     }
//!     fn events_lost(&mut self) -> bool {
//!         self.xs.take_watch_overflow()
//!     }
//!     fn transaction_write(&mut self, path: &str, value: &[u8]) -> Result<(), String> {
//!         self.xs.transaction(|tx| tx.write(path, value)).map_err(s)
//!     }
//!     fn device_connect(&mut self, node: &str) -> Result<(), String> {
//!         let mut hs = FrontendHandshake::new(node).map_err(s)?;
//!         hs.start(&mut self.xs).map_err(s)?;
//!         hs.wait_for_backend(&mut self.xs, T).map_err(s)?;
//!         hs.publish(&mut self.xs, XenbusState::Initialised, |_, _| Ok(())).map_err(s)?;
//!         hs.wait_connected(&mut self.xs, T).map_err(s)?;
//!         self.hs = Some(hs);
//!         Ok(())
//!     }
//!     fn device_poll(&mut self) -> Result<bool, String> {
//!         let hs = self.hs.as_mut().ok_or("not connected")?;
//!         let ev = hs.poll_backend(&mut self.xs).map_err(s)?;
//!         Ok(matches!(ev, Some(BackendEvent::Closing(_))))
//!     }
//!     fn device_closed(&mut self) -> Result<(), String> {
//!         let hs = self.hs.as_mut().ok_or("not connected")?;
//!         hs.closed(&mut self.xs).map_err(s)
//!     }
//!     fn power_start(&mut self, offer: PowerOffer) -> Result<(), String> {
//!         // The two sets share their keys (control/feature-*).
//!         let f = PowerFeatures::from_keys(|k| {
//!             PowerOffer::from_key(k).is_some_and(|o| offer.contains(o))
//!         });
//!         self.power = Some(PowerControl::new(&mut self.xs, f).map_err(s)?);
//!         Ok(())
//!     }
//!     fn power_poll(&mut self) -> Result<Option<String>, String> {
//!         let p = self.power.as_mut().ok_or("not started")?;
//!         Ok(p.poll(&mut self.xs).map_err(s)?.map(|ev| ev.as_str().to_string()))
//!     }
//! }
//!
//! let report = xenstore_cases::run(|host: &HostPlatform| {
//!     let mut xs = Xenstore::from_hvm_params(host.clone()).map_err(s)?;
//!     xs.set_timeout(T);
//!     Ok(Box::new(Xenbus { xs, hs: None, power: None }))
//! });
//! println!("{report}");
//! assert!(report.all_passed(), "{report}");
//! ```

use hypercall::abi::xenbus::XenbusState;
use hypercall::abi::xs_wire::{iface, msg, ERROR_RINGIDX, SERVER_FEATURE_ERROR};
use hypercall::Platform;

pub use crate::report::{Report, Row};
use crate::xenstore::{header, message, Answer, Device, Request, StoreServer};
use crate::HostPlatform;

/// What a xenstore client under test offers the cases. Paths are as the client
/// takes them (relative to the guest's home, or absolute). Errors are the client's
/// own, as text (they become evidence).
pub trait StoreDriver {
    /// Reads a node's value (any bytes).
    fn read(&mut self, path: &str) -> Result<Vec<u8>, String>;
    /// Reads a node as an unsigned decimal (as the client reads ids, refs, sizes);
    /// an error should name the key.
    fn read_u64(&mut self, path: &str) -> Result<u64, String>;
    /// Writes a node.
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), String>;
    /// Lists a node's children.
    fn directory(&mut self, path: &str) -> Result<Vec<String>, String>;
    /// Registers a watch.
    fn watch(&mut self, path: &str, token: &str) -> Result<(), String>;
    /// The next event of the watch with `token` (its path), without waiting.
    fn poll_event(&mut self, token: &str) -> Result<Option<String>, String>;
    /// Whether watch events were lost (dropped from a full queue, or unusable) since
    /// the last call.
    fn events_lost(&mut self) -> bool;
    /// Writes `path` inside a transaction and commits it, retrying on `EAGAIN` as the
    /// client's policy says.
    fn transaction_write(&mut self, path: &str, value: &[u8]) -> Result<(), String>;
    /// Connects the device whose frontend node is `node` (e.g. `device/vbd/51712`):
    /// reads `backend`/`backend-id`, goes through the XenbusState handshake (publishing
    /// no keys of its own) until both ends are `Connected`.
    fn device_connect(&mut self, node: &str) -> Result<(), String>;
    /// Without waiting: whether the device must now be torn down because its backend
    /// is going away (`true` once per going-away, until
    /// [`StoreDriver::device_closed`]).
    fn device_poll(&mut self) -> Result<bool, String>;
    /// The device was torn down: the frontend says `Closed`.
    fn device_closed(&mut self) -> Result<(), String>;
    /// Starts handling `control/shutdown`, advertising what `offer` says.
    fn power_start(&mut self, offer: PowerOffer) -> Result<(), String>;
    /// Without waiting: the request to act on now (`"poweroff"`, `"reboot"`,
    /// `"halt"`, `"suspend"`), if there is one.
    fn power_poll(&mut self) -> Result<Option<String>, String>;
    /// Asks the server for a ring reconnect (`connection` of `io/xs_wire.h`) and
    /// waits, bounded, until it is done; an error if the server does not offer it or
    /// never completes it (the `xenstore.reconnect_*` cases, docs/hostile-input.md
    /// X14). The default answers that the driver has no reconnect, which fails those
    /// cases.
    fn reconnect(&mut self) -> Result<(), String> {
        Err("this driver has no ring reconnect".into())
    }
}

hypercall::xenstore_flags! {
    /// The power requests a driver is told to offer: it writes each one's
    /// `control/feature-*` key and acts on just those requests.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PowerOffer: u32 {
        /// `poweroff` (and `halt`).
        const POWEROFF = 1 << 0 => "control/feature-poweroff";
        /// `reboot`.
        const REBOOT = 1 << 1 => "control/feature-reboot";
        /// `suspend`.
        const SUSPEND = 1 << 2 => "control/feature-suspend";
    }
}

/// What the power cases ask for: poweroff and reboot, not suspend.
const OFFER: PowerOffer = PowerOffer::POWEROFF.union(PowerOffer::REBOOT);

/// Builds the client under test on the platform a case provides.
pub type Make<'a> = dyn FnMut(&HostPlatform) -> Result<Box<dyn StoreDriver>, String> + 'a;

/// A named case: what the peer does and what a correct driver does.
pub struct Case {
    /// Stable name (`xenstore.<what>` / `power.<what>`), with the rows it covers.
    pub name: &'static str,
    /// What the hostile store (or toolstack, or backend) does.
    pub peer: &'static str,
    /// What a correct driver does.
    pub expect: &'static str,
    run: fn(&World, &mut Make<'_>) -> Result<String, String>,
}

/// The xenstore and power cases.
pub fn catalogue() -> &'static [Case] {
    &CASES
}

/// Runs every case against clients built by `make`, each on a fresh platform and
/// store. A client that panics fails its case (the panic message is the evidence);
/// so does one that waits forever (see the module docs).
pub fn run(make: impl FnMut(&HostPlatform) -> Result<Box<dyn StoreDriver>, String>) -> Report {
    run_matching("", make)
}

/// [`run`] for the cases whose name contains `pattern` (e.g. `"power."`, or one
/// case's name while debugging a driver).
pub fn run_matching(
    pattern: &str,
    mut make: impl FnMut(&HostPlatform) -> Result<Box<dyn StoreDriver>, String>,
) -> Report {
    let mut rows = Vec::new();
    for case in catalogue().iter().filter(|c| c.name.contains(pattern)) {
        let host = HostPlatform::new();
        let server = StoreServer::new(&host);
        host.set_peer(Some(watchdog(&host)));
        let world = World {
            host: host.clone(),
            server,
        };
        let r = crate::report::caught(|| (case.run)(&world, &mut make));
        host.clear_peers();
        rows.push(Row::from_outcome(case.name, r));
    }
    Report { rows }
}

/// Waits after which a driver counts as hung (see the module docs). A correct
/// driver needs at most a few hundred in any case (the flood case up to 2 500).
const HUNG_AFTER: u64 = if cfg!(miri) { 2_000 } else { 10_000 };
/// Polls (each followed by a wait) a case gives a driver to notice something.
const POLLS: usize = 30;
/// Commits a driver may try before giving up on a transaction that keeps
/// failing with `EAGAIN` (xenbus's client tries 16).
const MAX_COMMITS: u64 = 1000;

/// Whether `commits` tries are more than a bounded retry policy makes.
fn too_many_commits(commits: u64) -> bool {
    commits > MAX_COMMITS
}

fn watchdog(host: &HostPlatform) -> crate::Peer {
    // The runner clears the peers after the case, which ends the handle cycle.
    let h = host.clone();
    Box::new(move || {
        if h.waits() > HUNG_AFTER {
            panic!("the driver waited {HUNG_AFTER} times without giving up");
        }
    })
}

/// What a case works with.
struct World {
    host: HostPlatform,
    server: StoreServer,
}

impl World {
    /// A device whose backend peer goes to `InitWait`, then answers a frontend
    /// that is `Initialised` or `Connected` with `Connected` (once).
    fn device(&self, id: u32) -> Device {
        let dev = self.server.add_device("vbd", id);
        dev.set_backend_state(XenbusState::InitWait);
        let be = dev.clone();
        self.host.add_peer(Box::new(move || {
            let fe = be.frontend_state();
            if be.backend_state() == Some(XenbusState::InitWait)
                && matches!(fe, Some(XenbusState::Initialised | XenbusState::Connected))
            {
                be.set_backend_state(XenbusState::Connected);
            }
        }));
        dev
    }

    /// A connected device and its driver.
    fn connected(&self, make: &mut Make<'_>) -> Result<(Device, Box<dyn StoreDriver>), String> {
        let dev = self.device(51712);
        let mut d = make(&self.host)?;
        d.device_connect(&dev.node())
            .map_err(|e| format!("the handshake with a well-behaved backend failed: {e}"))?;
        Ok((dev, d))
    }

    /// The waits the platform counted since `before` (a [`HostPlatform::waits`]
    /// taken earlier), for evidence.
    fn waits_since(&self, before: u64) -> u64 {
        self.host.waits() - before
    }

    /// Power handling started with [`OFFER`].
    fn power(&self, make: &mut Make<'_>) -> Result<Box<dyn StoreDriver>, String> {
        let mut d = make(&self.host)?;
        d.power_start(OFFER)
            .map_err(|e| format!("power_start failed on a well-behaved store: {e}"))?;
        // The watch's first firing, and anything else pending, is consumed.
        for _ in 0..3 {
            d.power_poll()?;
            self.host.wait();
        }
        Ok(d)
    }
}

fn text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 40 {
        let head: String = s.chars().take(40).collect();
        format!("{head:?}...({} bytes)", b.len())
    } else {
        format!("{s:?}")
    }
}

/// `len` bytes of test data: the alphabet over and over.
fn letters(len: usize) -> Vec<u8> {
    b"abcdefghijklmnopqrstuvwxyz"
        .iter()
        .cycle()
        .take(len)
        .copied()
        .collect()
}

/// A reply to the request with its header fields replaced.
fn reply_as(ty: Option<u32>, tx_id: Option<u32>, payload: &'static [u8]) -> Answer {
    Answer::Reply(Box::new(move |r: &Request| {
        let h = r.header;
        message(
            ty.unwrap_or(h.ty),
            h.req_id,
            tx_id.unwrap_or(h.tx_id),
            payload,
        )
    }))
}

/// Polls device events up to [`POLLS`] times; the number of teardown signals and
/// the first error.
fn count_teardowns(w: &World, d: &mut dyn StoreDriver) -> (usize, Option<String>) {
    let mut n = 0;
    for _ in 0..POLLS {
        match d.device_poll() {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => return (n, Some(e)),
        }
        w.host.wait();
    }
    (n, None)
}

/// Polls power requests up to [`POLLS`] times; what was delivered and the errors.
fn power_polls(w: &World, d: &mut dyn StoreDriver) -> (Vec<String>, Vec<String>) {
    let (mut got, mut errs) = (Vec::new(), Vec::new());
    for _ in 0..POLLS {
        match d.power_poll() {
            Ok(Some(ev)) => got.push(ev),
            Ok(None) => {}
            Err(e) => errs.push(e),
        }
        w.host.wait();
    }
    (got, errs)
}

static CASES: [Case; 36] = [
    // ---- replies ---------------------------------------------------------------
    Case {
        name: "xenstore.reply_len_over_4096 (row 27, X1)",
        peer: "answers a read with a header claiming 4097 payload bytes",
        expect: "the read fails, and so does the next request: the connection is failed",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.answer_next(Answer::Reply(Box::new(|r: &Request| {
                let mut b = header(r.header.ty, r.header.req_id, r.header.tx_id, 4097).to_vec();
                b.extend_from_slice(&[b'x'; 64]);
                b
            })));
            let first = d.read("name");
            let second = d.read("name");
            match (first, second) {
                (Err(a), Err(b)) => Ok(format!("read: {a}; next: {b}")),
                (Ok(v), _) => Err(format!("the read returned {}", text(&v))),
                (Err(a), Ok(v)) => Err(format!(
                    "read failed ({a}) but the next read returned {} from a misframed ring",
                    text(&v)
                )),
            }
        },
    },
    Case {
        name: "xenstore.reply_shorter_than_its_len (row 27, X1)",
        peer: "answers a read with a header claiming 100 bytes, sends 10, then nothing",
        expect: "the read fails in bounded time; no short value is returned",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.answer_next(Answer::Reply(Box::new(|r: &Request| {
                let mut b = header(r.header.ty, r.header.req_id, r.header.tx_id, 100).to_vec();
                b.extend_from_slice(b"0123456789");
                b
            })));
            let before = w.host.waits();
            match d.read("name") {
                Err(e) => Ok(format!("failed after {} waits: {e}", w.waits_since(before))),
                Ok(v) => Err(format!("returned {}", text(&v))),
            }
        },
    },
    Case {
        name: "xenstore.stray_reply (row 28, X2)",
        peer: "sends a reply with another req_id (value \"stray\") before the real one",
        expect: "the stray reply is discarded; the read returns the real value",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.write("k", b"real");
            w.server.answer_next(Answer::Reply(Box::new(|r: &Request| {
                let h = r.header;
                let mut b = message(h.ty, h.req_id.wrapping_add(1000), h.tx_id, b"stray");
                b.extend(message(h.ty, h.req_id, h.tx_id, b"real"));
                b
            })));
            match d.read("k") {
                Ok(v) if v == b"real" => Ok("stray discarded, real value returned".into()),
                Ok(v) => Err(format!("returned {}", text(&v))),
                Err(e) => Err(format!("the read failed: {e}")),
            }
        },
    },
    Case {
        name: "xenstore.duplicate_reply (X2)",
        peer: "sends the reply to a read twice",
        expect: "the copy is never taken for the next request's reply",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.write("k1", b"first");
            w.server.write("k2", b"second");
            w.server.answer_next(Answer::Rewrite(Box::new(|_, b: Vec<u8>| {
                let mut twice = b.clone();
                twice.extend(b);
                twice
            })));
            let a = d.read("k1").map_err(|e| format!("first read failed: {e}"))?;
            let b = d.read("k2").map_err(|e| format!("second read failed: {e}"))?;
            if a == b"first" && b == b"second" {
                Ok("duplicate discarded".into())
            } else {
                Err(format!("reads returned {} and {}", text(&a), text(&b)))
            }
        },
    },
    Case {
        name: "xenstore.late_reply_after_timeout (row 28, X2)",
        peer: "never answers a read; answers the next one after sending the first one's reply (\"late\")",
        expect: "the first read fails (timeout); the second returns its own value",
        run: |w, make| {
            use std::cell::Cell;
            use std::rc::Rc;
            let mut d = make(&w.host)?;
            w.server.write("k2", b"second");
            let first_id = Rc::new(Cell::new(0u32));
            let f = first_id.clone();
            w.server.answer_next(Answer::Reply(Box::new(move |r: &Request| {
                f.set(r.header.req_id);
                Vec::new()
            })));
            w.server.answer_next(Answer::Reply(Box::new(move |r: &Request| {
                let h = r.header;
                let mut b = message(msg::READ, first_id.get(), h.tx_id, b"late");
                b.extend(message(h.ty, h.req_id, h.tx_id, b"second"));
                b
            })));
            let first = d.read("k1");
            if let Ok(v) = &first {
                return Err(format!("an unanswered read returned {}", text(v)));
            }
            match d.read("k2") {
                Ok(v) if v == b"second" => Ok(format!(
                    "first: {}; second: its own value",
                    first.err().unwrap_or_default()
                )),
                Ok(v) => Err(format!("the second read returned {}", text(&v))),
                Err(e) => Err(format!("the second read failed: {e}")),
            }
        },
    },
    Case {
        name: "xenstore.reply_of_another_type (row 28, X3)",
        peer: "answers a read with its req_id but type DIRECTORY, another with type 0x1234",
        expect: "each of those reads fails",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.answer_next(reply_as(Some(msg::DIRECTORY), None, b"a\0"));
            w.server.answer_next(reply_as(Some(0x1234), None, b"a\0"));
            let a = d.read("name");
            let b = d.read("name");
            match (a, b) {
                (Err(a), Err(b)) => Ok(format!("DIRECTORY: {a}; 0x1234: {b}")),
                (a, b) => Err(format!("reads returned {a:?} and {b:?}")),
            }
        },
    },
    Case {
        name: "xenstore.reply_with_another_tx_id (review defect, X3)",
        peer: "answers a read with its req_id but tx_id 5, and a write inside a transaction with tx_id 0",
        expect: "both requests fail (xenstored echoes the request's tx_id)",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.answer_next(reply_as(None, Some(5), b"x"));
            let a = d.read("name");
            w.server.on_request(Some(Box::new(|r: &Request| {
                // A WRITE inside a transaction (only that: the commit is served).
                matches!((r.header.ty, r.header.tx_id), (msg::WRITE, 1..))
                    .then(|| reply_as(None, Some(0), b"OK\0"))
            })));
            let b = d.transaction_write("k", b"v");
            w.server.on_request(None);
            match (a, b) {
                (Err(a), Err(b)) => Ok(format!("read: {a}; transaction: {b}")),
                (a, b) => Err(format!(
                    "read: {:?}; transaction: {:?}",
                    a.map(|v| text(&v)),
                    b
                )),
            }
        },
    },
    Case {
        name: "xenstore.unknown_error_name (X4)",
        peer: "answers reads with XS_ERROR \"EWHAT\", an empty name, \"EACCES\" without its NUL, no payload",
        expect: "each read fails with a generic error, no panic; the connection still works",
        run: |w, make| {
            let mut d = make(&w.host)?;
            for p in [&b"EWHAT\0"[..], b"\0", b"EACCES", b""] {
                w.server.answer_next(reply_as(Some(msg::ERROR), None, p));
            }
            let mut seen = Vec::new();
            for _ in 0..4 {
                match d.read("name") {
                    Err(e) => seen.push(e),
                    Ok(v) => return Err(format!("an error reply read as {}", text(&v))),
                }
            }
            let after = d.read("name").map_err(|e| format!("the next read failed: {e}"))?;
            Ok(format!("{}; then {}", seen.join(" / "), text(&after)))
        },
    },
    Case {
        name: "xenstore.malformed_directory (X5)",
        peer: "answers listings with an empty entry, no final NUL, entries with '/', a space or invalid UTF-8",
        expect: "each listing fails, or comes back without the bad entries",
        run: |w, make| {
            let mut d = make(&w.host)?;
            let replies: [&'static [u8]; 5] =
                [b"a\0\0b\0", b"a\0b", b"a\0b/c\0", b"a\0b c\0", b"a\0\xff\0"];
            let mut seen = Vec::new();
            for p in replies {
                w.server.answer_next(reply_as(None, None, p));
                match d.directory("device") {
                    Err(e) => seen.push(format!("{}: {e}", text(p))),
                    Ok(names) => {
                        let bad = names.iter().find(|n| {
                            n.is_empty()
                                || !n.bytes().all(|b| {
                                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@')
                                })
                        });
                        if let Some(b) = bad {
                            return Err(format!(
                                "listing {} gave entry {b:?} (all: {names:?})",
                                text(p)
                            ));
                        }
                        seen.push(format!("{}: {names:?}", text(p)));
                    }
                }
            }
            Ok(seen.join("; "))
        },
    },
    // ---- ring indices ----------------------------------------------------------
    Case {
        name: "xenstore.rsp_prod_past_ring (row 29, X8)",
        peer: "moves rsp_prod 1025 bytes past rsp_cons (then stays silent)",
        expect: "the read fails in bounded time, and so does the next: the connection is failed",
        run: |w, make| ring_case(w, make, |page| {
            let cons = page.load_u32(iface::RSP_CONS);
            page.store_u32(iface::RSP_PROD, cons.wrapping_add(1025));
        }),
    },
    Case {
        name: "xenstore.rsp_prod_behind (row 29, X8)",
        peer: "moves rsp_prod one byte behind rsp_cons",
        expect: "the read fails in bounded time, and so does the next",
        run: |w, make| ring_case(w, make, |page| {
            let cons = page.load_u32(iface::RSP_CONS);
            page.store_u32(iface::RSP_PROD, cons.wrapping_sub(1));
        }),
    },
    Case {
        name: "xenstore.req_cons_past_prod (row 29, X8)",
        peer: "moves req_cons 8 bytes past req_prod (consumed what was never written)",
        expect: "the next request fails instead of writing into the ring",
        run: |w, make| ring_case(w, make, |page| {
            let prod = page.load_u32(iface::REQ_PROD);
            page.store_u32(iface::REQ_CONS, prod.wrapping_add(8));
        }),
    },
    Case {
        name: "xenstore.error_field_set (X8)",
        peer: "offers XENSTORE_SERVER_FEATURE_ERROR and sets the page's error field to RINGIDX",
        expect: "the next request fails (the server gave up on the connection)",
        run: |w, make| ring_case(w, make, |page| {
            page.store_u32(iface::ERROR, ERROR_RINGIDX);
        }),
    },
    // ---- ring reconnection -------------------------------------------------------
    Case {
        name: "xenstore.reconnect_resets_the_ring (X14)",
        peer: "starts the ring indices 256 below 2^32 and, once the driver has used them, gives up on the connection (error field RINGIDX); serves the reconnect the driver asks for: every index back to 0, watches and partial messages dropped",
        expect: "the read on the failed connection fails; reconnect succeeds; a node reads back and a 300-byte value writes through the reset ring",
        run: |w, make| {
            w.server.set_indices(0xffff_ff00); // 2^32 - 256
            w.server.write("kept", b"yes");
            let mut d = make(&w.host)?;
            d.read("kept").map_err(|e| format!("a good read failed: {e}"))?;
            w.server.set_error_field(ERROR_RINGIDX);
            let failed = match d.read("kept") {
                Err(e) => e,
                Ok(v) => return Err(format!("read {} on a failed connection", text(&v))),
            };
            let before = w.host.waits();
            d.reconnect().map_err(|e| format!("reconnect failed: {e}"))?;
            if w.server.reconnects() != 1 {
                return Err(format!(
                    "reconnect returned Ok but the server did no reset (connection = {})",
                    w.server.page().mem().load_u32(iface::CONNECTION)
                ));
            }
            let waited = w.waits_since(before);
            match d.read("kept") {
                Ok(v) if v == b"yes" => {}
                r => return Err(format!("after the reset, read {:?}", r.map(|v| text(&v)))),
            }
            let big = letters(300);
            d.write("fresh", &big)
                .map_err(|e| format!("a write after the reset failed: {e}"))?;
            if w.server.read("fresh").as_deref() != Some(&big[..]) {
                return Err(format!("the server holds {:?}", w.server.read_str("fresh")));
            }
            Ok(format!(
                "read failed: {failed}; reconnected after {waited} waits; read and wrote through indices from 0"
            ))
        },
    },
    Case {
        name: "xenstore.reconnect_never_completes (X14)",
        peer: "offers reconnection but never clears `connection` once the driver sets it to 1; then completes a second request",
        expect: "reconnect fails with an error in bounded time; meanwhile the driver writes nothing into the ring (a request fails); a later reconnect the server completes works",
        run: |w, make| {
            let mut d = make(&w.host)?;
            d.write("a", b"1").map_err(|e| format!("a good write failed: {e}"))?;
            w.server.hold_reconnect(true);
            let before = w.host.waits();
            let page = w.server.page();
            let err = match d.reconnect() {
                Err(e) => e,
                Ok(()) => {
                    return Err(format!(
                        "reconnect returned Ok with connection still {}",
                        page.mem().load_u32(iface::CONNECTION)
                    ))
                }
            };
            let waited = w.waits_since(before);
            if page.mem().load_u32(iface::CONNECTION) != 1 {
                return Err(format!("failed ({err}) without asking: connection is not 1"));
            }
            let prod = page.mem().load_u32(iface::REQ_PROD);
            let next = d.read("a");
            if page.mem().load_u32(iface::REQ_PROD) != prod {
                return Err("wrote a request into the ring while the reconnect was pending".into());
            }
            if let Ok(v) = next {
                return Err(format!("a read returned {} while the reconnect was pending", text(&v)));
            }
            w.server.hold_reconnect(false);
            d.reconnect()
                .map_err(|e| format!("the second reconnect, served, failed: {e}"))?;
            match d.read("a") {
                Ok(v) if v == b"1" => Ok(format!(
                    "failed after {waited} waits: {err}; the next read failed unsent; a served reconnect works"
                )),
                r => Err(format!("after the served reconnect, read {:?}", r.map(|v| text(&v)))),
            }
        },
    },
    Case {
        name: "xenstore.reconnect_not_offered (X14)",
        peer: "offers XENSTORE_SERVER_FEATURE_ERROR only (no reconnection)",
        expect: "reconnect is refused at once with an error, `connection` is not written, the connection keeps working",
        run: |w, make| {
            w.server.set_server_features(SERVER_FEATURE_ERROR);
            let mut d = make(&w.host)?;
            let before = w.host.waits();
            let err = match d.reconnect() {
                Err(e) => e,
                Ok(()) => return Err("reconnect returned Ok though the server does not offer it".into()),
            };
            let waited = w.waits_since(before);
            let conn = w.server.page().mem().load_u32(iface::CONNECTION);
            if conn != 0 || waited > 0 {
                return Err(format!(
                    "refused ({err}) after {waited} waits, with connection = {conn}"
                ));
            }
            d.write("a", b"1")
                .map_err(|e| format!("the connection stopped working: {e}"))?;
            Ok(format!("refused at once: {err}; the connection still works"))
        },
    },
    Case {
        name: "xenstore.server_silent (E3)",
        peer: "never answers",
        expect: "the read fails in bounded time (a timeout)",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.pause(true);
            let before = w.host.waits();
            match d.read("name") {
                Err(e) => Ok(format!("failed after {} waits: {e}", w.waits_since(before))),
                Ok(v) => Err(format!("returned {}", text(&v))),
            }
        },
    },
    Case {
        name: "xenstore.one_byte_dribble (X15, row 4)",
        peer: "starts the ring indices 20 below 2^32; writes a reply one byte per turn, then another in 3-byte pieces",
        expect: "a 20-byte and a 100-byte value read back intact across the wrap",
        run: |w, make| {
            w.server.set_indices(0xffff_ffeb); // u32::MAX - 20
            let mut d = make(&w.host)?;
            let mut done = Vec::new();
            for (len, chunk) in [(20usize, 1usize), (100, 3)] {
                let value = letters(len);
                w.server.write("big", &value);
                w.server.set_max_chunk(chunk);
                let back = d.read("big").map_err(|e| format!("{len}-byte read failed: {e}"))?;
                if back != value {
                    return Err(format!("read back {}", text(&back)));
                }
                done.push(format!("{len} bytes in {chunk}-byte pieces"));
            }
            Ok(format!(
                "{}; rsp_prod now {:#x}",
                done.join(", "),
                w.server.page().mem().load_u32(iface::RSP_PROD)
            ))
        },
    },
    // ---- watches ---------------------------------------------------------------
    Case {
        name: "xenstore.watch_event_flood (row 30, X7)",
        peer: "sends 10 000 events for a registered watch (200 under Miri), then changes the node",
        expect: "bounded work; every event delivered or the loss reported; the watch still works",
        run: |w, make| {
            let (n, polls) = if cfg!(miri) { (200, 50) } else { (10_000, 2_500) };
            let mut d = make(&w.host)?;
            d.watch("flood", "tok").map_err(|e| format!("watch failed: {e}"))?;
            for i in 0..n {
                w.server.send_watch_event(format!("flood/{i}").as_bytes(), b"tok");
            }
            w.server.write("flood/after", b"1");
            let (mut got, mut lost, mut after) = (0usize, false, false);
            for _ in 0..polls {
                while let Some(p) = d.poll_event("tok")? {
                    got += 1;
                    after |= p == "flood/after";
                }
                lost |= d.events_lost();
                if after {
                    break;
                }
                w.host.wait();
            }
            if !after {
                return Err(format!(
                    "the change after the flood never arrived ({got} events taken)"
                ));
            }
            if got < n + 2 && !lost {
                return Err(format!(
                    "{got} of {} events delivered and no loss reported",
                    n + 2
                ));
            }
            Ok(format!("{got} events delivered, loss reported: {lost}; the watch still works"))
        },
    },
    Case {
        name: "xenstore.flood_during_a_request (row 30, X7)",
        peer: "never answers a read and keeps the response ring full of watch events meanwhile",
        expect: "the read fails by its deadline; the flood cannot keep the driver busy",
        run: |w, make| {
            let mut d = make(&w.host)?;
            d.watch("f", "tok").map_err(|e| format!("watch failed: {e}"))?;
            let s = w.server.clone();
            w.host.add_peer(Box::new(move || keep_flooding(&s)));
            w.server.answer_next(Answer::Silent);
            let before = w.host.waits();
            match d.read("name") {
                Err(e) => Ok(format!("failed after {} waits: {e}", w.waits_since(before))),
                Ok(v) => Err(format!("returned {}", text(&v))),
            }
        },
    },
    Case {
        name: "xenstore.bad_watch_events (X6)",
        peer: "sends events with one string, three strings, no NUL, an invalid-UTF-8 path, another token, then a good one",
        expect: "only the good event is delivered for the watch's token",
        run: |w, make| {
            let mut d = make(&w.host)?;
            d.watch("w", "t").map_err(|e| format!("watch failed: {e}"))?;
            for _ in 0..3 {
                while d.poll_event("t")?.is_some() {}
                w.host.wait();
            }
            for raw in [
                &b"w/1\0"[..],
                b"w/2\0t\0extra\0",
                b"w/3",
                b"w/\xff\0t\0",
                b"w/4\0other\0",
                b"w/5\0t\0",
            ] {
                w.server.push_raw(&message(msg::WATCH_EVENT, 0, 0, raw));
            }
            let mut got = Vec::new();
            for _ in 0..POLLS {
                while let Some(p) = d.poll_event("t")? {
                    got.push(p);
                }
                w.host.wait();
            }
            if got == ["w/5"] {
                Ok("only w/5 delivered".into())
            } else {
                Err(format!("delivered {got:?}"))
            }
        },
    },
    // ---- values ----------------------------------------------------------------
    Case {
        name: "xenstore.value_not_utf8 (row 31)",
        peer: "puts 0xff 0xfe '1' into a node read as a number",
        expect: "a parse error that names the key",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.write("dev/ring-ref", b"\xff\xfe1");
            match d.read_u64("dev/ring-ref") {
                Err(e) if e.contains("ring-ref") => Ok(e),
                Err(e) => Err(format!("the error does not name the key: {e}")),
                Ok(v) => Err(format!("read as {v}")),
            }
        },
    },
    Case {
        name: "xenstore.numbers_strict (X11, row 31)",
        peer: "puts \"\", \" 5\", \"5x\", \"-1\", \"+5\", \"0x10\", \"5\\n\", \"5\\0\", 2^64 and 30 digits into numeric nodes",
        expect: "each read fails naming the key; \"42\" and 2^64-1 read exactly",
        run: |w, make| {
            let mut d = make(&w.host)?;
            let bad: [&[u8]; 10] = [
                b"", b" 5", b"5x", b"-1", b"+5", b"0x10", b"5\n", b"5\0",
                b"18446744073709551616", b"123456789012345678901234567890",
            ];
            for (i, v) in bad.iter().enumerate() {
                let key = format!("num/bad{i}");
                w.server.write(&key, v);
                match d.read_u64(&key) {
                    Err(e) if e.contains(&format!("bad{i}")) => {}
                    Err(e) => return Err(format!("{}: the error does not name the key: {e}", text(v))),
                    Ok(n) => return Err(format!("{} read as {n}", text(v))),
                }
            }
            w.server.write("num/ok", b"42");
            w.server.write("num/max", b"18446744073709551615");
            let ok = d.read_u64("num/ok").map_err(|e| format!("\"42\": {e}"))?;
            let max = d.read_u64("num/max").map_err(|e| format!("2^64-1: {e}"))?;
            if (ok, max) == (42, u64::MAX) {
                Ok("10 malformed numbers refused; 42 and 2^64-1 exact".into())
            } else {
                Err(format!("read 42 as {ok} and 2^64-1 as {max}"))
            }
        },
    },
    Case {
        name: "xenstore.illegal_paths_not_sent (X10)",
        peer: "records every request",
        expect: "reads of \"a//b\", \"a/\", \"\", \"a b\", \"d\u{e9}\", \"a\\0b\", 2049- and 3073-byte paths fail before anything is sent",
        run: |w, make| {
            let mut d = make(&w.host)?;
            let long_rel = "a".repeat(2049);
            let long_abs = format!("/{}", "a".repeat(3072));
            let paths = ["a//b", "a/", "", "a b", "d\u{e9}", "a\0b", &long_rel, &long_abs];
            for p in paths {
                let before = w.server.requests().len();
                if let Ok(v) = d.read(p) {
                    return Err(format!("reading {} returned {}", text(p.as_bytes()), text(&v)));
                }
                if w.server.requests().len() != before {
                    return Err(format!("{} was sent to xenstored", text(p.as_bytes())));
                }
            }
            Ok(format!("{} illegal paths refused, none sent", paths.len()))
        },
    },
    // ---- transactions ----------------------------------------------------------
    Case {
        name: "xenstore.commit_always_eagain (X9)",
        peer: "fails every commit with EAGAIN",
        expect: "a bounded number of tries, then an error",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.fail_commits(u32::MAX);
            match d.transaction_write("k", b"v") {
                Err(e) if !too_many_commits(w.server.commits()) => {
                    Ok(format!("gave up after {} commits: {e}", w.server.commits()))
                }
                Err(e) => Err(format!("{} commits before giving up: {e}", w.server.commits())),
                Ok(()) => Err(format!(
                    "reported success after {} failed commits",
                    w.server.commits()
                )),
            }
        },
    },
    Case {
        name: "xenstore.commit_eagain_then_ok (X9)",
        peer: "fails the first three commits with EAGAIN",
        expect: "the transaction is retried and succeeds; the value is written",
        run: |w, make| {
            let mut d = make(&w.host)?;
            w.server.fail_commits(3);
            d.transaction_write("k", b"v")
                .map_err(|e| format!("failed after {} commits: {e}", w.server.commits()))?;
            match w.server.read("k") {
                Some(v) if v == b"v" => Ok(format!("committed at try {}", w.server.commits())),
                v => Err(format!("the node holds {v:?} after success")),
            }
        },
    },
    // ---- the device handshake --------------------------------------------------
    Case {
        name: "xenstore.backend_state_toggles (X12)",
        peer: "after Connected, moves the backend Closing, Closed, Closing, Closed, Closed, Closing",
        expect: "exactly one teardown, none after the frontend is Closed",
        run: |w, make| {
            let (dev, mut d) = w.connected(make)?;
            let mut signals = 0;
            for (i, st) in [
                XenbusState::Closing,
                XenbusState::Closed,
                XenbusState::Closing,
                XenbusState::Closed,
                XenbusState::Closed,
            ]
            .into_iter()
            .enumerate()
            {
                dev.set_backend_state(st);
                for _ in 0..3 {
                    if d.device_poll().map_err(|e| format!("poll after move {i}: {e}"))? {
                        signals += 1;
                    }
                    w.host.wait();
                }
            }
            d.device_closed().map_err(|e| format!("closing failed: {e}"))?;
            dev.set_backend_state(XenbusState::Closing);
            let (more, err) = count_teardowns(w, &mut *d);
            match (signals, more, err) {
                (1, 0, None) => Ok(format!(
                    "one teardown; frontend now {:?}",
                    dev.frontend_state()
                )),
                (s, m, e) => Err(format!(
                    "{s} teardowns while toggling, {m} after Closed, error {e:?}"
                )),
            }
        },
    },
    Case {
        name: "xenstore.backend_state_garbage (X12)",
        peer: "after Connected, writes backend state \"9\", then \"abc\", then \"\"",
        expect: "each is reported (an error) or taken as the backend going away, never ignored",
        run: |w, make| {
            let (dev, mut d) = w.connected(make)?;
            let mut seen = Vec::new();
            for v in [&b"9"[..], b"abc", b""] {
                dev.set_backend_key("state", v);
                let mut outcome = None;
                for _ in 0..POLLS {
                    match d.device_poll() {
                        Ok(true) => outcome = Some("teardown".to_string()),
                        Ok(false) => {}
                        Err(e) => outcome = Some(e),
                    }
                    if outcome.is_some() {
                        break;
                    }
                    w.host.wait();
                }
                match outcome {
                    Some(o) => seen.push(format!("{}: {o}", text(v))),
                    None => return Err(format!("state {} was ignored", text(v))),
                }
            }
            Ok(seen.join("; "))
        },
    },
    Case {
        name: "xenstore.backend_directory_removed (review defect, X12)",
        peer: "after Connected, removes the backend's whole directory (the guest then reads EACCES there)",
        expect: "the device is torn down (the backend is gone)",
        run: |w, make| {
            let (dev, mut d) = w.connected(make)?;
            dev.remove_backend();
            match count_teardowns(w, &mut *d) {
                (1, None) => Ok("torn down once".into()),
                (n, e) => Err(format!("{n} teardowns in {POLLS} polls, error {e:?}")),
            }
        },
    },
    Case {
        name: "xenstore.backend_path_outside_tree (X13)",
        peer: "points the frontend's backend at its own tree, /, a relative path, another domain, the backend domain's node",
        expect: "each connect fails; the bad path is never watched",
        run: |w, make| {
            let mut seen = Vec::new();
            let home = w.server.home();
            let bad = [
                format!("{home}/device/vbd/1"),
                "/".to_string(),
                "backend/vbd/1/1".to_string(),
                "/local/domain/2/backend/vbd/1/1".to_string(),
                "/local/domain/0".to_string(),
            ];
            for (id, path) in (1u32..).zip(&bad) {
                let dev = w.device(id);
                w.server.write(&format!("{}/backend", dev.frontend_path()), path.as_bytes());
                let mut d = make(&w.host)?;
                let before = w.server.requests().len();
                let r = d.device_connect(&dev.node());
                let below = format!("{path}/");
                let watched = w.server.requests()[before..].iter().any(|q| {
                    let p = q.path();
                    q.header.ty == msg::WATCH && (p == *path || p.starts_with(&below))
                });
                match r {
                    Ok(()) => return Err(format!("connected with backend {path:?}")),
                    Err(_) if watched => return Err(format!("watched {path:?}")),
                    Err(e) => seen.push(format!("{path:?}: {e}")),
                }
            }
            Ok(seen.join("; "))
        },
    },
    Case {
        name: "xenstore.backend_keys_pinned (X13)",
        peer: "after Connected, repoints the frontend's backend and backend-id at a decoy that is Closing",
        expect: "no teardown for the decoy (backend is read once per connection); the real backend's Closing is",
        run: |w, make| {
            let (dev, mut d) = w.connected(make)?;
            let guest = w.server.domid();
            let decoy = format!("/local/domain/0/backend/vbd/{guest}/9");
            w.server.write(&format!("{decoy}/state"), b"5");
            w.server.set_perms(&decoy, &["n0", &format!("r{guest}")])?;
            w.server.set_perms(&format!("{decoy}/state"), &["n0", &format!("r{guest}")])?;
            w.server.write(&format!("{}/backend", dev.frontend_path()), decoy.as_bytes());
            w.server.write(&format!("{}/backend-id", dev.frontend_path()), b"5");
            w.server.fire(&format!("{}/state", dev.backend_path()));
            let (n, e) = count_teardowns(w, &mut *d);
            if n > 0 || e.is_some() {
                return Err(format!("{n} teardowns and error {e:?} for the decoy"));
            }
            dev.set_backend_state(XenbusState::Closing);
            match count_teardowns(w, &mut *d) {
                (1, None) => Ok("decoy ignored; the real backend's Closing tore down once".into()),
                (n, e) => Err(format!("{n} teardowns and error {e:?} for the real Closing")),
            }
        },
    },
    // ---- power events ----------------------------------------------------------
    Case {
        name: "power.garbage_request (row 38, S1)",
        peer: "writes \"bogus\", 4 KiB, binary, \"poweroff\\n\", \"crash\", \"POWEROFF\" to control/shutdown, then \"reboot\"",
        expect: "none acted on, each cleared; then reboot delivered",
        run: |w, make| {
            let mut d = w.power(make)?;
            let mut big = vec![b'x'; 4096];
            big[..8].copy_from_slice(b"poweroff");
            let values: [&[u8]; 6] =
                [b"bogus", &big, b"\0\xffpoweroff", b"poweroff\n", b"crash", b"POWEROFF"];
            let mut errs = 0;
            for v in values {
                w.server.write("control/shutdown", v);
                let (got, e) = power_polls(w, &mut *d);
                errs += e.len();
                if !got.is_empty() {
                    return Err(format!("{} delivered as {got:?}", text(v)));
                }
                match w.server.read("control/shutdown") {
                    Some(left) if !left.is_empty() => {
                        return Err(format!("{} left in the node", text(&left)))
                    }
                    _ => {}
                }
            }
            w.server.write("control/shutdown", b"reboot");
            let (got, _) = power_polls(w, &mut *d);
            if got != ["reboot"] {
                return Err(format!("reboot after the garbage delivered as {got:?}"));
            }
            Ok(format!("6 garbage values cleared ({errs} reported); reboot delivered once"))
        },
    },
    Case {
        name: "power.repeated_request (row 39)",
        peer: "writes poweroff, then poweroff three more times and reboot while it is carried out",
        expect: "acted on once",
        run: |w, make| {
            let mut d = w.power(make)?;
            w.server.write("control/shutdown", b"poweroff");
            let (first, _) = power_polls(w, &mut *d);
            let mut later = Vec::new();
            for v in [&b"poweroff"[..], b"poweroff", b"poweroff", b"reboot"] {
                w.server.write("control/shutdown", v);
                later.extend(power_polls(w, &mut *d).0);
            }
            if first == ["poweroff"] && later.is_empty() {
                Ok("one poweroff; the repeats ignored".into())
            } else {
                Err(format!("delivered {first:?}, then {later:?}"))
            }
        },
    },
    Case {
        name: "power.spurious_firings (S2)",
        peer: "fires the control/shutdown watch 100 times with the node missing and with it empty, then 1000 times (100 under Miri) with one reboot in it",
        expect: "nothing for the spurious firings; the reboot acted on once",
        run: |w, make| {
            let n = if cfg!(miri) { 100 } else { 1_000 };
            let mut d = w.power(make)?;
            w.server.remove("control/shutdown");
            for _ in 0..100 {
                w.server.fire("control/shutdown");
            }
            let (a, _) = power_polls(w, &mut *d);
            w.server.write("control/shutdown", b"");
            for _ in 0..100 {
                w.server.fire("control/shutdown");
            }
            let (b, _) = power_polls(w, &mut *d);
            w.server.write("control/shutdown", b"reboot");
            for _ in 0..n {
                w.server.fire("control/shutdown");
            }
            let mut c = Vec::new();
            for _ in 0..4 {
                c.extend(power_polls(w, &mut *d).0);
            }
            if a.is_empty() && b.is_empty() && c == ["reboot"] {
                Ok(format!("reboot delivered once out of {} firings", n + 1))
            } else {
                Err(format!("missing: {a:?}; empty: {b:?}; reboot: {c:?}"))
            }
        },
    },
    Case {
        name: "power.undeclared_request (S3)",
        peer: "asks for suspend, which the driver was told not to offer",
        expect: "feature-suspend not advertised; suspend refused and cleared",
        run: |w, make| {
            let mut d = w.power(make)?;
            let adv = |k: &str| w.server.read(&format!("control/feature-{k}"));
            if adv("poweroff").as_deref() != Some(b"1") || adv("reboot").as_deref() != Some(b"1") {
                return Err("feature-poweroff/reboot not advertised as \"1\"".into());
            }
            if adv("suspend").as_deref() == Some(b"1") {
                return Err("feature-suspend advertised".into());
            }
            w.server.write("control/shutdown", b"suspend");
            let (got, errs) = power_polls(w, &mut *d);
            let left = w.server.read("control/shutdown").unwrap_or_default();
            if !got.is_empty() {
                Err(format!("delivered {got:?}"))
            } else if !left.is_empty() {
                Err(format!("{} left in the node", text(&left)))
            } else {
                Ok(format!("refused and cleared ({})", errs.join("; ")))
            }
        },
    },
    Case {
        name: "power.ack_always_eagain (S4)",
        peer: "fails every commit with EAGAIN while poweroff is requested; then lets one through and fires the watch again",
        expect: "nothing acted on without the acknowledgement, bounded tries; then poweroff once",
        run: |w, make| {
            let mut d = w.power(make)?;
            let before = w.server.commits();
            w.server.fail_commits(u32::MAX);
            w.server.write("control/shutdown", b"poweroff");
            let (early, _) = power_polls(w, &mut *d);
            let tries = w.server.commits() - before;
            if !early.is_empty() {
                return Err(format!("delivered {early:?} without a committed acknowledgement"));
            }
            if too_many_commits(tries) {
                return Err(format!("{tries} commits"));
            }
            w.server.fail_commits(0);
            w.server.fire("control/shutdown");
            let (late, _) = power_polls(w, &mut *d);
            let left = w.server.read("control/shutdown").unwrap_or_default();
            if late == ["poweroff"] && left.is_empty() {
                Ok(format!("{tries} failed commits, nothing acted on; then poweroff once"))
            } else {
                Err(format!("after the store recovered: {late:?}, node {}", text(&left)))
            }
        },
    },
];

/// One turn of `xenstore.flood_during_a_request`'s flood: endless from the driver's
/// side, kept at about two rings' worth queued (40 events of 24 bytes when under
/// 2048 bytes are queued).
fn keep_flooding(s: &StoreServer) {
    if s.pending_output() < 2048 {
        for _ in 0..40 {
            s.send_watch_event(b"f/x", b"tok");
        }
    }
}

/// Pauses the server, breaks the ring with `f`, and expects the next read and the
/// one after it to fail in bounded time.
fn ring_case(
    w: &World,
    make: &mut Make<'_>,
    f: fn(hypercall::SharedMem<'_>),
) -> Result<String, String> {
    let mut d = make(&w.host)?;
    d.read("name")
        .map_err(|e| format!("a good read failed: {e}"))?;
    w.server.pause(true);
    f(w.server.page().mem());
    let before = w.host.waits();
    let a = d.read("name");
    let b = d.write("k", b"v");
    match (a, b) {
        (Err(a), Err(b)) => Ok(format!(
            "failed after {} waits: {a}; next: {b}",
            w.waits_since(before)
        )),
        (a, b) => Err(format!(
            "read: {:?}; write after it: {b:?}",
            a.map(|v| text(&v))
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_name_their_rows() {
        let mut names: Vec<&str> = super::catalogue().iter().map(|c| c.name).collect();
        for n in &names {
            assert!(n.starts_with("xenstore.") || n.starts_with("power."), "{n}");
            assert!(n.ends_with(')') && n.contains(" ("), "{n} names no row");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), super::catalogue().len());
    }

    /// The waits counted for evidence are those since the count given.
    #[test]
    fn waits_since_counts_from_the_count_given() {
        use hypercall::Platform;
        let host = crate::HostPlatform::new();
        let w = super::World {
            server: crate::xenstore::StoreServer::new(&host),
            host: host.clone(),
        };
        host.wait();
        host.wait();
        let before = host.waits();
        for _ in 0..3 {
            host.wait();
        }
        assert_eq!((before, w.waits_since(before)), (2, 3));
        host.clear_peers();
    }

    /// The commit bound: 1000 tries pass, 1001 are too many.
    #[test]
    fn too_many_commits_is_over_1000() {
        assert!(!super::too_many_commits(1000));
        assert!(super::too_many_commits(1001));
    }

    /// The test data of the dribble and reconnect cases.
    #[test]
    fn letters_repeat_the_alphabet() {
        assert_eq!(super::letters(28), b"abcdefghijklmnopqrstuvwxyzab");
        assert_eq!(super::letters(0), b"");
    }

    /// Evidence quotes values of up to 40 characters whole, and longer ones by
    /// their first 40 and their length (mutants of `text`'s bound).
    #[test]
    fn text_quotes_short_values_whole_and_cuts_long_ones() {
        let forty = "a".repeat(40);
        assert_eq!(super::text(forty.as_bytes()), format!("{forty:?}"));
        let long = format!("{forty}b");
        assert_eq!(
            super::text(long.as_bytes()),
            format!("{forty:?}...(41 bytes)")
        );
        assert_eq!(super::text(b"\xffx"), "\"\u{fffd}x\"");
    }
}
