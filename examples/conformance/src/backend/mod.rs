//! Hostile frontends for testing backends: named cases (`blkback.*`, `netback.*`,
//! `consback.*`) in which a frontend that breaks the rules on purpose faces the
//! backend under test, and a runner that prints the table.
//!
//! The rule every case checks is the host's side of docs/hostile-input.md: *a hostile
//! guest may only fail itself*. A correct backend answers a bad request with an error
//! status (or, for a ring it can no longer trust, disconnects that one device with an
//! `error` node), keeps serving everything else, never crashes or hangs, and leaves no
//! grant of the guest mapped once it has answered or the device has closed. Every
//! case ends by running a well-behaved neighbour (another domain on the same backend
//! host) to show the others were not affected.
//!
//! # The seam
//!
//! A case only needs what a frontend has in its own domain, described by
//! [`FrontendWorld`]: allocate pages and grant them (also wrongly), write ring slots
//! and indices raw, write keys (and the `state`) in its device directory, notify the
//! backend, let time pass, read the backend's directory, and ask whether a grant is
//! still mapped. A harness implements it for the backend under test and hands the
//! runner a function that makes a fresh world (backend offered, frontend not started)
//! for each case:
//!
//! ```
//! use xen_conformance::backend::{self, Class, FrontPage, FrontendWorld, Grantee};
//! use hypercall::{Gfn, GrantRef, Port};
//!
//! /// A "backend" that never comes up: the runner must fail every case against it,
//! /// each with the reason (a backend you test implements the same methods over its
//! /// hypervisor or model: see shim-hv's `xen-backends/tests/hostile_util`).
//! struct Dead(xen_conformance::HostPlatform, std::cell::Cell<u32>);
//!
//! impl FrontendWorld for Dead {
//!     fn alloc_page(&self) -> Result<FrontPage<'_>, String> {
//!         // Host memory that lives as long as the platform (which `self` owns).
//!         let mem = self.0.shared_pages(1).leak();
//!         let frame = mem.page_gfn(&self.0, 0).ok_or("not guest memory")?;
//!         Ok(FrontPage { mem, frame })
//!     }
//!     fn grant(&self, _: Gfn, _: Grantee, _: bool) -> Result<GrantRef, String> {
//!         Ok(GrantRef(8))
//!     }
//!     fn end_grant(&self, _: GrantRef) -> Result<(), String> { Ok(()) }
//!     fn mapped(&self, _: GrantRef) -> bool { false }
//!     fn grant_capacity(&self) -> u32 { 512 }
//!     fn bind_port(&self, _: Grantee) -> Result<Port, String> { Ok(Port(3)) }
//!     fn notify(&self, _: Port) -> Result<(), String> { Ok(()) }
//!     fn write_key(&self, _: &str, _: &[u8]) -> Result<(), String> { Ok(()) }
//!     fn remove_key(&self, _: &str) -> Result<(), String> { Ok(()) }
//!     fn front_key(&self, _: &str) -> Option<Vec<u8>> { None }
//!     fn backend_key(&self, _: &str) -> Option<Vec<u8>> { None }
//!     fn wait(&self) -> bool {
//!         // Patience: 20 turns, then every wait fails the case as timed out.
//!         self.1.set(self.1.get() + 1);
//!         self.1.get() < 20
//!     }
//!     fn console(&self) -> Option<(FrontPage<'_>, Port)> { None }
//!     fn console_output(&self) -> Vec<u8> { Vec::new() }
//!     fn console_input(&self, _: &[u8]) -> usize { 0 }
//!     fn neighbour(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
//!         Err("no other domain".into())
//!     }
//!     fn sibling(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
//!         Err("no other device".into())
//!     }
//! }
//!
//! let report = backend::run(&[Class::Blk, Class::Net, Class::Console], |_class| {
//!     Ok(Box::new(Dead(xen_conformance::HostPlatform::new(), Default::default())))
//! });
//! println!("{report}");
//! assert_eq!(report.passed(), 0, "a dead backend passes nothing");
//! assert_eq!(report.rows.len(), backend::catalogue().len());
//! ```
//!
//! Cases never trust the backend either: a response the ring rules forbid, a status
//! the protocol does not define, or a wait that outlasts the world's patience fails
//! the case with what was seen. A case that panics (a bug in the world) fails too,
//! with the panic message as evidence.

use hypercall::{Gfn, GrantRef, Port, SharedMem, PAGE_SIZE};

pub use crate::report::{Report, Row};

mod blk;
mod console;
mod net;
pub mod requests;

/// The device class a world's frontend speaks (and so which cases run in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `vbd`: blkif rings, the backend a block backend (blkback).
    Blk,
    /// `vif`: netif tx/rx rings, the backend a net backend on a bridge (netback).
    Net,
    /// The primary console page (`io/console.h`), the backend a console daemon.
    Console,
}

/// Whom a grant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grantee {
    /// The backend's domain (the only right answer).
    Backend,
    /// A domain that is not the backend's (a grant the backend must not be able to use).
    NotTheBackend,
}

/// A page of the frontend's memory: its bytes and its frame number.
#[derive(Clone, Copy, Debug)]
pub struct FrontPage<'a> {
    /// The page, as the frontend sees it.
    pub mem: SharedMem<'a>,
    /// Its frame number, to grant it.
    pub frame: Gfn,
}

/// Everything a hostile frontend can do in its own domain, implemented by a harness
/// for the backend under test. Every method takes `&self` (use interior mutability),
/// so a case can hold the memory of several pages while it calls the others.
///
/// A fresh world is one domain with one device of its [`Class`] whose backend has
/// been set up by the toolstack: for `Blk` and `Net`, the frontend's directory
/// (`device/vbd/<n>` or `device/vif/<n>`) holds `backend`, `backend-id` and (`Net`)
/// `mac`, the frontend has not started, and the backend's directory is coming to
/// `InitWait`; for `Console`, the console page and event channel exist (as
/// `HVM_PARAM_CONSOLE_PFN`/`_EVTCHN` give them) and the backend serves them.
pub trait FrontendWorld {
    /// A new zeroed page of the frontend's memory.
    fn alloc_page(&self) -> Result<FrontPage<'_>, String>;
    /// Grants `frame` (any frame: also one that is not the frontend's) to `to`,
    /// read-only if asked.
    fn grant(&self, frame: Gfn, to: Grantee, readonly: bool) -> Result<GrantRef, String>;
    /// Ends a grant; fails (and keeps the grant) while the backend still maps it.
    fn end_grant(&self, gref: GrantRef) -> Result<(), String>;
    /// Whether the backend maps (or copies from, right now) the grant `gref`.
    fn mapped(&self, gref: GrantRef) -> bool;
    /// How many entries the frontend's grant table has (refs at or past it are
    /// outside the table).
    fn grant_capacity(&self) -> u32;
    /// A new unbound event channel for `to` to bind (`event-channel`; with
    /// [`Grantee::NotTheBackend`], one the backend must not be able to bind).
    fn bind_port(&self, to: Grantee) -> Result<Port, String>;
    /// Notifies the backend on `port`.
    fn notify(&self, port: Port) -> Result<(), String>;
    /// Writes `key` (relative: `ring-ref`, `state`...) in the frontend's device
    /// directory, as the frontend's domain.
    fn write_key(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Removes `key` from the frontend's device directory.
    fn remove_key(&self, key: &str) -> Result<(), String>;
    /// Reads `key` in the frontend's device directory.
    fn front_key(&self, key: &str) -> Option<Vec<u8>>;
    /// Reads `key` (`state`, `error`, `sectors`...) in the backend's device directory.
    fn backend_key(&self, key: &str) -> Option<Vec<u8>>;
    /// Lets the backend run a little (a short sleep, or a step of a scripted
    /// backend). Returns false once the harness's patience for this world is used up:
    /// the case then fails as timed out.
    fn wait(&self) -> bool;
    /// `Console` worlds: the console page and its event channel.
    fn console(&self) -> Option<(FrontPage<'_>, Port)>;
    /// `Console` worlds: every byte of the guest's output the backend has delivered to
    /// its clients so far.
    fn console_output(&self) -> Vec<u8>;
    /// `Console` worlds: sends input to the guest from a client on the host; returns
    /// how many bytes the backend accepted.
    fn console_input(&self, bytes: &[u8]) -> usize;
    /// A fresh world of the same class for another, well-behaved domain on the same
    /// backend host (for `Net`: on the same bridge), to show it is unaffected.
    fn neighbour(&self) -> Result<Box<dyn FrontendWorld + '_>, String>;
    /// A fresh world for another device of the same class in the *same* domain (same
    /// memory, grant table and event channels; its own backend), to show that a
    /// device the backend gave up on does not take the domain's other devices with
    /// it. `Blk` and `Net` only.
    fn sibling(&self) -> Result<Box<dyn FrontendWorld + '_>, String>;
}

type CaseFn = fn(&dyn FrontendWorld) -> Result<String, String>;

/// A named case: what the hostile frontend does, what a correct backend does.
pub struct Case {
    /// Stable name (`blkback.<what>`, `netback.<what>`, `consback.<what>`) and the
    /// docs/hostile-input.md rows it covers from the host's side.
    pub name: &'static str,
    /// The device class it runs in.
    pub class: Class,
    /// What the hostile frontend does.
    pub front: &'static str,
    /// What a correct backend does.
    pub expect: &'static str,
    run: CaseFn,
}

impl Case {
    /// Runs this case in `world` (a fresh world of [`Case::class`]): `Ok(evidence)`
    /// when the backend did what [`Case::expect`] says, else `Err(what was seen)`.
    pub fn run(&self, world: &dyn FrontendWorld) -> Result<String, String> {
        (self.run)(world)
    }
}

/// Every case, in catalogue order.
pub fn catalogue() -> &'static [Case] {
    static ALL: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = blk::cases();
        all.extend(net::cases());
        all.extend(console::cases());
        all
    })
}

/// Runs the cases of `classes`, each in a world made by `make` for its class; a
/// world that cannot be made, a case that fails or panics is a failed row.
pub fn run(
    classes: &[Class],
    mut make: impl FnMut(Class) -> Result<Box<dyn FrontendWorld>, String>,
) -> Report {
    let mut rows = Vec::new();
    for case in catalogue().iter().filter(|c| classes.contains(&c.class)) {
        let r = match make(case.class) {
            Err(e) => Err(format!("no world for the case: {e}")),
            Ok(world) => {
                let r = crate::report::caught(|| case.run(&*world));
                drop(world);
                r
            }
        };
        rows.push(Row::from_outcome(case.name, r));
    }
    Report { rows }
}

// ---------------------------------------------------------------------------------
// Shared steps.

/// `XenbusState` values.
mod st {
    pub const INITIALISING: u32 = 1;
    pub const INIT_WAIT: u32 = 2;
    pub const INITIALISED: u32 = 3;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
    pub const CLOSED: u32 = 6;
}

type R<T> = Result<T, String>;

/// Waits until `f` holds, or fails naming `what`.
fn until(w: &dyn FrontendWorld, what: &str, mut f: impl FnMut() -> bool) -> R<()> {
    while !f() {
        if !w.wait() {
            return Err(format!("timed out waiting for {what}"));
        }
    }
    Ok(())
}

fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn backend_state(w: &dyn FrontendWorld) -> Option<u32> {
    text(w.backend_key("state")).and_then(|s| s.trim().parse().ok())
}

fn set_state(w: &dyn FrontendWorld, s: u32) -> R<()> {
    w.write_key("state", s.to_string().as_bytes())
}

/// Writes the frontend's keys: `ours`, with `overrides` taking the place of keys
/// of the same name (an empty override removes the key).
fn write_keys(w: &dyn FrontendWorld, ours: &[(&str, String)], overrides: &[(&str, &str)]) -> R<()> {
    for (k, v) in ours {
        if !overrides.iter().any(|(o, _)| o == k) {
            w.write_key(k, v.as_bytes())?;
        }
    }
    for (k, v) in overrides {
        if v.is_empty() {
            if w.front_key(k).is_some() {
                w.remove_key(k)?;
            }
        } else {
            w.write_key(k, v.as_bytes())?;
        }
    }
    Ok(())
}

/// Starts the frontend (`Initialising`) and waits for the backend's `InitWait`.
fn start(w: &dyn FrontendWorld) -> R<()> {
    set_state(w, st::INITIALISING)?;
    until(w, "the backend's InitWait", || {
        backend_state(w) == Some(st::INIT_WAIT)
    })
}

/// Waits for the backend to connect; its `error` node is the evidence if it closes.
fn wait_connected(w: &dyn FrontendWorld) -> R<()> {
    let mut seen = None;
    until(w, "the backend's Connected", || {
        seen = backend_state(w);
        matches!(seen, Some(st::CONNECTED | st::CLOSING | st::CLOSED))
    })?;
    if seen == Some(st::CONNECTED) {
        Ok(())
    } else {
        Err(format!(
            "the backend refused a good connection: state {seen:?}, error {:?}",
            text(w.backend_key("error"))
        ))
    }
}

/// Waits for the backend to give up on this device: `Closing` (or `Closed`) with a
/// non-empty `error` node. Returns the error.
fn wait_refused(w: &dyn FrontendWorld) -> R<String> {
    let mut seen = None;
    until(w, "the backend to close the device", || {
        seen = backend_state(w);
        matches!(seen, Some(st::CLOSING | st::CLOSED))
    })
    .map_err(|e| format!("{e} (backend state {seen:?})"))?;
    match text(w.backend_key("error")) {
        Some(e) if !e.trim().is_empty() => Ok(e),
        _ => Err(format!(
            "the backend closed (state {seen:?}) without an error node"
        )),
    }
}

/// Waits until none of `grefs` is mapped, then ends them all.
fn release(w: &dyn FrontendWorld, grefs: &[GrantRef]) -> R<()> {
    let mut left = Vec::new();
    until(w, "the backend to unmap every grant", || {
        left = grefs
            .iter()
            .filter(|g| w.mapped(**g))
            .map(|g| g.0)
            .collect();
        left.is_empty()
    })
    .map_err(|e| format!("{e}: grefs {left:?} still mapped"))?;
    for g in grefs {
        w.end_grant(*g)
            .map_err(|e| format!("ending gref {}: {e}", g.0))?;
    }
    Ok(())
}

/// The orderly close: `Closing`, then `Closed` once the backend answered; nothing
/// may stay mapped.
fn close(w: &dyn FrontendWorld, grefs: &[GrantRef]) -> R<()> {
    set_state(w, st::CLOSING)?;
    until(w, "the backend's Closing or Closed", || {
        matches!(backend_state(w), Some(st::CLOSING | st::CLOSED))
    })?;
    set_state(w, st::CLOSED)?;
    release(w, grefs)
}

/// Checks that none of `grefs` is mapped right now (a backend that answered is done
/// with them: without persistent grants it unmaps before it answers).
fn none_mapped(w: &dyn FrontendWorld, what: &str, grefs: &[GrantRef]) -> R<()> {
    match grefs.iter().find(|g| w.mapped(**g)) {
        Some(g) => Err(format!(
            "{what}: gref {} still mapped after the answer",
            g.0
        )),
        None => Ok(()),
    }
}

fn page_is(p: &FrontPage<'_>, byte: u8) -> bool {
    let mut b = vec![0u8; PAGE_SIZE];
    p.mem.read(0, &mut b);
    b.iter().all(|&x| x == byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostPlatform;
    use std::cell::Cell;

    /// A world whose backend only shows the keys it is given; pages are host memory.
    /// Its patience is 10 waits. (Also for the cases' own unit tests.)
    pub(super) struct Scripted {
        pub(super) host: HostPlatform,
        pub(super) state: Option<&'static str>,
        pub(super) error: Option<&'static str>,
        pub(super) keeps_mapped: bool,
        pub(super) panic_on_alloc: bool,
        /// What the console's clients got.
        pub(super) output: Vec<u8>,
        pub(super) waits: Cell<u32>,
    }

    impl Scripted {
        pub(super) fn new() -> Self {
            Scripted {
                host: HostPlatform::new(),
                state: None,
                error: None,
                keeps_mapped: false,
                panic_on_alloc: false,
                output: Vec::new(),
                waits: Cell::new(0),
            }
        }
    }

    impl FrontendWorld for Scripted {
        fn alloc_page(&self) -> Result<FrontPage<'_>, String> {
            assert!(!self.panic_on_alloc, "out of pages");
            let mem = self.host.shared_pages(1).leak();
            let frame = mem.page_gfn(&self.host, 0).ok_or("no frame")?;
            Ok(FrontPage { mem, frame })
        }
        fn grant(&self, _: Gfn, _: Grantee, _: bool) -> Result<GrantRef, String> {
            Ok(GrantRef(8))
        }
        fn end_grant(&self, _: GrantRef) -> Result<(), String> {
            Ok(())
        }
        fn mapped(&self, _: GrantRef) -> bool {
            self.keeps_mapped
        }
        fn grant_capacity(&self) -> u32 {
            512
        }
        fn bind_port(&self, _: Grantee) -> Result<Port, String> {
            Ok(Port(3))
        }
        fn notify(&self, _: Port) -> Result<(), String> {
            Ok(())
        }
        fn write_key(&self, _: &str, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
        fn remove_key(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
        fn front_key(&self, _: &str) -> Option<Vec<u8>> {
            None
        }
        fn backend_key(&self, key: &str) -> Option<Vec<u8>> {
            match key {
                "state" => self.state.map(|s| s.as_bytes().to_vec()),
                "error" => self.error.map(|s| s.as_bytes().to_vec()),
                _ => None,
            }
        }
        fn wait(&self) -> bool {
            self.waits.set(self.waits.get() + 1);
            self.waits.get() < 10
        }
        fn console(&self) -> Option<(FrontPage<'_>, Port)> {
            None
        }
        fn console_output(&self) -> Vec<u8> {
            self.output.clone()
        }
        fn console_input(&self, _: &[u8]) -> usize {
            0
        }
        fn neighbour(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
            Err("none".into())
        }
        fn sibling(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
            Err("none".into())
        }
    }

    #[test]
    fn a_world_that_cannot_be_made_fails_every_case() {
        let r = run(&[Class::Console], |_| Err("no console backend".into()));
        assert_eq!(
            r.rows.len(),
            catalogue()
                .iter()
                .filter(|c| c.class == Class::Console)
                .count()
        );
        assert!(r
            .rows
            .iter()
            .all(|row| !row.pass && row.evidence.contains("no console backend")));
    }

    #[test]
    fn page_is_checks_every_byte() {
        let w = Scripted::new();
        let p = w.alloc_page().unwrap();
        p.mem.fill(0, PAGE_SIZE, 0xa5);
        assert!(page_is(&p, 0xa5));
        assert!(!page_is(&p, 0));
        // One byte written, the last: what a refused read may not do.
        p.mem.write(PAGE_SIZE - 1, &[0]);
        assert!(!page_is(&p, 0xa5));
    }

    #[test]
    fn a_panic_in_a_case_is_a_failed_row_with_the_message() {
        let r = run(&[Class::Blk], |_| {
            Ok(Box::new(Scripted {
                state: Some("2"),
                panic_on_alloc: true,
                ..Scripted::new()
            }))
        });
        // Every case fails: those that first ask for a neighbour with "none", the
        // others with the panic.
        assert!(r.rows.iter().all(|row| !row.pass), "{r}");
        let panicked = r
            .rows
            .iter()
            .filter(|row| row.evidence == "panicked: out of pages")
            .count();
        assert!(panicked >= 5, "{r}");
    }

    #[test]
    fn a_grant_left_mapped_or_a_refusal_without_a_reason_fails() {
        let w = Scripted {
            keeps_mapped: true,
            ..Scripted::new()
        };
        let e = release(&w, &[GrantRef(8)]).unwrap_err();
        assert!(e.contains("grefs [8] still mapped"), "{e}");
        let e = none_mapped(&w, "a read", &[GrantRef(8)]).unwrap_err();
        assert_eq!(e, "a read: gref 8 still mapped after the answer");

        let w = Scripted {
            state: Some("5"),
            ..Scripted::new()
        };
        let e = wait_refused(&w).unwrap_err();
        assert!(e.contains("without an error node"), "{e}");
        let w = Scripted {
            state: Some("5"),
            error: Some("ring-ref: bad value"),
            ..Scripted::new()
        };
        assert_eq!(wait_refused(&w).unwrap(), "ring-ref: bad value");
        // An error node of blanks is no reason either.
        let w = Scripted {
            state: Some("6"),
            error: Some(" \n"),
            ..Scripted::new()
        };
        let e = wait_refused(&w).unwrap_err();
        assert!(e.contains("without an error node"), "{e}");
        let w = Scripted {
            state: Some("4"),
            ..Scripted::new()
        };
        let e = wait_refused(&w).unwrap_err();
        assert!(e.contains("timed out") && e.contains("Some(4)"), "{e}");
    }
}
