//! Careless backends against xen-conformance's hostile-frontend catalogue
//! (`xen_conformance::backend`): shim-hv's backends behind a world that shows the
//! frontend one flaw a backend could have (a response's status, id or operation
//! rewritten, a grant left mapped, a missing `error` node, lost console output...).
//! Each test runs the one case the flaw concerns and checks that it fails, with the
//! evidence naming the flaw: a case that passed such a backend would not be checking
//! what it claims. These are the tests that catch the mutants of the cases' checks
//! (docs/mutants.md).

mod hostile_util;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use hostile_util::{Host, ShimWorld};
use hypercall::abi::{blkif, console as cons, netif, ring as layout};
use hypercall::{Gfn, GrantRef, Port, PAGE_SIZE};
use xen_conformance::backend::{self, Case, FrontPage, FrontendWorld, Grantee};

/// How long a careless world may wait in all: a flaw that makes a case wait for
/// ever fails it as timed out after this.
const PATIENCE: Duration = Duration::from_secs(10);
/// The patience for a flaw that makes the case wait until it gives up.
const SHORT: Duration = Duration::from_secs(2);

/// One flaw, as the frontend sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flaw {
    /// Every block response with status `.0` carries `.1` instead.
    BlkStatus(i16, i16),
    /// Every block response to operation `.0` with status `.1` carries `.2` instead.
    BlkOpStatus(u8, i16, i16),
    /// Every block response to a request id under `.0` with status `.1` carries `.2`
    /// instead.
    BlkStatusUnder(u64, i16, i16),
    /// No flaw: a backend that does not offer discard (`feature-discard` reads 0)
    /// and answers every discard EOPNOTSUPP; every case must pass it.
    NoDiscard,
    /// Every block response echoes operation `.0`.
    BlkOp(u8),
    /// Every block response carries its request's id plus one.
    BlkId,
    /// The read with id `.0` is answered OKAY with byte 100 of its first page
    /// changed (the data on the disk is not what was read).
    ReadChanged(u64),
    /// Every tx response with status `.0` carries `.1` instead.
    TxStatus(i16, i16),
    /// The first tx response with status `.0` carries `.1` instead.
    TxStatusOnce(i16, i16),
    /// Every rx response with status `.0` carries `.1` instead.
    RxStatus(i16, i16),
    /// The data of the `.0`th tx request the world publishes (0 = the first; not
    /// a chain's first slot, whose size is the frame's) reaches the backend with
    /// its last byte changed.
    TxDataChanged(u32),
    /// Once the frontend has notified, the backend's `state` reads `.0`.
    StateOnceNotified(u32),
    /// The `.0`th grant to the backend (1 = the first) stays mapped for good.
    KeepsMapped(u32),
    /// The grants to the backend after the `.0`th are held a little: the first end
    /// of each fails, as if the backend still had it mapped.
    Holds(u32),
    /// The backend's `error` node reads as `.0` (`None`: absent).
    Error(Option<&'static str>),
    /// After garbage in the frontend's `state` (and until a valid state), once the
    /// frontend has waited `.0` times since writing it, the backend's `state` reads
    /// Connected (a backend slow to get it wrong).
    ConnectsOnGarbage(u32),
    /// After garbage in the frontend's `state` written while the backend was
    /// Connected (and until a valid state), the backend's `state` still reads
    /// Connected.
    StaysConnectedOnGarbage,
    /// The backend's key `.0` reads `.1`.
    Key(&'static str, &'static str),
    /// The console output the clients get loses its last byte.
    OutputShort,
    /// The console's clients get a byte more than the guest wrote.
    OutputExtra,
    /// The console's clients get every byte but the one at `.0`, changed.
    OutputChanged(usize),
    /// The console's input claims `.0` bytes more than accepted.
    InputOverclaims(usize),
    /// The console's input claims every byte accepted and delivers none.
    InputDropped,
    /// The console's input claims a flood (a MiB at once) accepted whole.
    InputTakesFloods,
    /// The console's input reaches the guest with its first byte changed.
    InputChanged,
    /// Input sent to the console makes `in_prod` read 1 on the page.
    InputWritten,
    /// Input sent to the console puts `in_prod` 2000 past `in_cons`.
    InProdFar,
    /// Once the clients have looked at the output, the page says disconnected.
    Disconnects,
}

/// Which worlds of a case show the flaw.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    /// The case's own world (and its devices' siblings).
    Own,
    /// Only the neighbours (other domains).
    Neighbours,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RingKind {
    Blk,
    Tx,
    Rx,
}

/// A ring the frontend published, and how far its responses were seen to.
struct Ring {
    kind: RingKind,
    frame: Gfn,
    done: u32,
    /// How far the requests were seen to (for [`Flaw::ReadChanged`]).
    seen: u32,
}

/// shim-hv's backend behind one flaw.
struct Careless<'p> {
    inner: ShimWorld,
    /// The world this one is a neighbour or sibling of: whenever this one waits or
    /// notifies, the parent's rings are tampered with too (a frame this world
    /// sends lands in the parent's rx ring without the parent waiting).
    parent: Option<&'p Careless<'p>>,
    flaw: Flaw,
    scope: Scope,
    active: bool,
    grants_to_backend: Cell<u32>,
    kept: Cell<Option<GrantRef>>,
    /// The grants whose first end fails ([`Flaw::Holds`]).
    holding: RefCell<Vec<GrantRef>>,
    once: Cell<bool>,
    notified: Cell<bool>,
    garbage: Cell<bool>,
    /// The frontend's waits since it last wrote its `state`.
    waits: Cell<u32>,
    /// Whether the backend was Connected when the frontend wrote garbage.
    garbage_connected: Cell<bool>,
    frames: RefCell<HashMap<u32, Gfn>>,
    rings: RefCell<Vec<Ring>>,
    /// The first page of the read [`Flaw::ReadChanged`] changes, once published.
    read_page: Cell<Option<Gfn>>,
    /// The tx requests seen published (for [`Flaw::TxDataChanged`]).
    tx_requests: Cell<u32>,
}

impl<'p> Careless<'p> {
    fn new(inner: ShimWorld, flaw: Flaw, scope: Scope) -> Self {
        Self::with(inner, flaw, scope, scope == Scope::Own)
    }

    fn with(inner: ShimWorld, flaw: Flaw, scope: Scope, active: bool) -> Self {
        Careless {
            inner,
            parent: None,
            flaw,
            scope,
            active,
            grants_to_backend: Cell::new(0),
            kept: Cell::new(None),
            holding: RefCell::new(Vec::new()),
            once: Cell::new(false),
            notified: Cell::new(false),
            garbage: Cell::new(false),
            waits: Cell::new(0),
            garbage_connected: Cell::new(false),
            frames: RefCell::new(HashMap::new()),
            rings: RefCell::new(Vec::new()),
            read_page: Cell::new(None),
            tx_requests: Cell::new(0),
        }
    }

    fn flaw(&self) -> Option<Flaw> {
        self.active.then_some(self.flaw)
    }

    /// Rewrites the responses published since the last look; with `settle`, first
    /// lets the backend answer every request published (up to a second).
    fn tamper(&self, settle: bool) {
        let Some(flaw) = self.flaw() else { return };
        for ring in self.rings.borrow_mut().iter_mut() {
            let Some(mem) = self.inner.page(ring.frame) else {
                continue;
            };
            let slot = match (ring.kind, flaw) {
                (
                    RingKind::Blk,
                    Flaw::BlkStatus(..)
                    | Flaw::BlkOpStatus(..)
                    | Flaw::BlkStatusUnder(..)
                    | Flaw::NoDiscard
                    | Flaw::BlkOp(_)
                    | Flaw::BlkId
                    | Flaw::ReadChanged(_),
                ) => size_of::<blkif::Request>(),
                (RingKind::Tx, Flaw::TxStatus(..) | Flaw::TxStatusOnce(..)) => {
                    size_of::<netif::TxRequest>()
                }
                (RingKind::Rx, Flaw::RxStatus(..)) => size_of::<netif::RxRequest>(),
                _ => continue,
            };
            let size = layout::const_ring_size(PAGE_SIZE, slot);
            // Rx requests are answered as frames come, not on a notify.
            if settle && ring.kind != RingKind::Rx {
                let want = mem.load_u32(layout::REQ_PROD);
                for _ in 0..1000 {
                    if mem.load_u32(layout::RSP_PROD) == want {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let prod = mem.load_u32(layout::RSP_PROD);
            // A backend that broke the ring is the case's to see, not ours to fix.
            if prod.wrapping_sub(ring.done) > size {
                ring.done = prod;
                continue;
            }
            while ring.done != prod {
                let at = layout::HEADER_SIZE + (ring.done % size) as usize * slot;
                ring.done = ring.done.wrapping_add(1);
                match flaw {
                    Flaw::BlkStatus(from, to) => {
                        let mut r: blkif::Response = mem.read_obj(at);
                        if r.status == from {
                            r.status = to;
                        }
                        mem.write_obj(at, &r);
                    }
                    Flaw::BlkOpStatus(op, from, to) => {
                        let mut r: blkif::Response = mem.read_obj(at);
                        if r.operation == op && r.status == from {
                            r.status = to;
                        }
                        mem.write_obj(at, &r);
                    }
                    Flaw::BlkStatusUnder(id, from, to) => {
                        let mut r: blkif::Response = mem.read_obj(at);
                        if r.id < id && r.status == from {
                            r.status = to;
                        }
                        mem.write_obj(at, &r);
                    }
                    Flaw::NoDiscard => {
                        let mut r: blkif::Response = mem.read_obj(at);
                        if r.operation == blkif::OP_DISCARD {
                            r.status = blkif::RSP_EOPNOTSUPP;
                        }
                        mem.write_obj(at, &r);
                    }
                    Flaw::BlkOp(op) => {
                        let mut r: blkif::Response = mem.read_obj(at);
                        r.operation = op;
                        mem.write_obj(at, &r);
                    }
                    Flaw::BlkId => {
                        let mut r: blkif::Response = mem.read_obj(at);
                        r.id = r.id.wrapping_add(1);
                        mem.write_obj(at, &r);
                    }
                    Flaw::ReadChanged(id) => {
                        let r: blkif::Response = mem.read_obj(at);
                        let page = self.read_page.get().filter(|_| r.id == id);
                        if let (blkif::OP_READ, blkif::RSP_OKAY, Some(frame)) =
                            (r.operation, r.status, page)
                        {
                            self.read_page.set(None);
                            if let Some(data) = self.inner.page(frame) {
                                data.store_u8(100, !data.load_u8(100));
                            }
                        }
                    }
                    Flaw::TxStatusOnce(from, to) => {
                        let mut r: netif::TxResponse = mem.read_obj(at);
                        if r.status == from && !self.once.get() {
                            self.once.set(true);
                            r.status = to;
                        }
                        mem.write_obj(at, &r);
                    }
                    Flaw::TxStatus(from, to) => {
                        let mut r: netif::TxResponse = mem.read_obj(at);
                        if r.status == from {
                            r.status = to;
                        }
                        mem.write_obj(at, &r);
                    }
                    Flaw::RxStatus(from, to) => {
                        let mut r: netif::RxResponse = mem.read_obj(at);
                        if r.status == from {
                            r.status = to;
                        }
                        mem.write_obj(at, &r);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Notes the first page of the read [`Flaw::ReadChanged`] changes, from the
    /// requests published since the last look.
    fn look_at_requests(&self) {
        let Some(Flaw::ReadChanged(id)) = self.flaw() else {
            return;
        };
        let slot = size_of::<blkif::Request>();
        let size = layout::const_ring_size(PAGE_SIZE, slot);
        for ring in self.rings.borrow_mut().iter_mut() {
            let Some(mem) = self.inner.page(ring.frame) else {
                continue;
            };
            let prod = mem.load_u32(layout::REQ_PROD);
            if ring.kind != RingKind::Blk || prod.wrapping_sub(ring.seen) > size {
                ring.seen = prod;
                continue;
            }
            while ring.seen != prod {
                let at = layout::HEADER_SIZE + (ring.seen % size) as usize * slot;
                ring.seen = ring.seen.wrapping_add(1);
                let r: blkif::Request = mem.read_obj(at);
                if r.id == id && r.operation == blkif::OP_READ && r.nr_segments > 0 {
                    let frame = self.frames.borrow().get(&r.seg[0].gref).copied();
                    self.read_page.set(frame);
                }
            }
        }
    }

    /// Changes the data of the tx request [`Flaw::TxDataChanged`] names, if it is
    /// among the requests published since the last look.
    fn change_tx_data(&self) {
        let Some(Flaw::TxDataChanged(n)) = self.flaw() else {
            return;
        };
        let slot = size_of::<netif::TxRequest>();
        let size = layout::const_ring_size(PAGE_SIZE, slot);
        for ring in self.rings.borrow_mut().iter_mut() {
            let Some(mem) = self.inner.page(ring.frame) else {
                continue;
            };
            let prod = mem.load_u32(layout::REQ_PROD);
            if ring.kind != RingKind::Tx || prod.wrapping_sub(ring.seen) > size {
                ring.seen = prod;
                continue;
            }
            while ring.seen != prod {
                let at = layout::HEADER_SIZE + (ring.seen % size) as usize * slot;
                ring.seen = ring.seen.wrapping_add(1);
                let r: netif::TxRequest = mem.read_obj(at);
                let k = self.tx_requests.get();
                self.tx_requests.set(k.wrapping_add(1));
                let end = usize::from(r.offset) + usize::from(r.size);
                if k != n || r.size == 0 || end > PAGE_SIZE {
                    continue;
                }
                let frame = self.frames.borrow().get(&r.gref).copied();
                if let Some(page) = frame.and_then(|f| self.inner.page(f)) {
                    let mut b = [0u8];
                    page.read(end - 1, &mut b);
                    page.write(end - 1, &[b[0] ^ 0x20]);
                }
            }
        }
    }

    /// Tampers with this world's rings and its parent's.
    fn tamper_all(&self, settle: bool) {
        self.tamper(settle);
        if let Some(p) = self.parent {
            p.tamper(false);
        }
    }

    fn wrap(&self, inner: ShimWorld, active: bool) -> Box<dyn FrontendWorld + '_> {
        Box::new(Careless {
            parent: Some(self),
            ..Careless::with(inner, self.flaw, self.scope, active)
        })
    }
}

impl FrontendWorld for Careless<'_> {
    fn alloc_page(&self) -> Result<FrontPage<'_>, String> {
        self.inner.alloc_page()
    }

    fn grant(&self, frame: Gfn, to: Grantee, readonly: bool) -> Result<GrantRef, String> {
        let g = self.inner.grant(frame, to, readonly)?;
        self.frames.borrow_mut().insert(g.0, frame);
        if to == Grantee::Backend {
            self.grants_to_backend.set(self.grants_to_backend.get() + 1);
            if self.flaw() == Some(Flaw::KeepsMapped(self.grants_to_backend.get())) {
                self.kept.set(Some(g));
            }
            if let Some(Flaw::Holds(k)) = self.flaw() {
                if self.grants_to_backend.get() > k {
                    self.holding.borrow_mut().push(g);
                }
            }
        }
        Ok(g)
    }

    fn end_grant(&self, gref: GrantRef) -> Result<(), String> {
        if self.kept.get() == Some(gref) {
            return Err(format!("gref {} is still mapped", gref.0));
        }
        let mut holding = self.holding.borrow_mut();
        if let Some(i) = holding.iter().position(|&g| g == gref) {
            holding.swap_remove(i);
            return Err(format!("gref {} is still mapped (held)", gref.0));
        }
        self.inner.end_grant(gref)
    }

    fn mapped(&self, gref: GrantRef) -> bool {
        self.kept.get() == Some(gref) || self.inner.mapped(gref)
    }

    fn grant_capacity(&self) -> u32 {
        self.inner.grant_capacity()
    }

    fn bind_port(&self, to: Grantee) -> Result<Port, String> {
        self.inner.bind_port(to)
    }

    fn notify(&self, port: Port) -> Result<(), String> {
        self.look_at_requests();
        self.change_tx_data();
        self.inner.notify(port)?;
        self.notified.set(true);
        self.tamper_all(true);
        Ok(())
    }

    fn write_key(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if key == "state" {
            let valid = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|v| (1..=6).contains(&v));
            self.garbage.set(!valid);
            let connected = self.inner.backend_key("state").as_deref() == Some(b"4");
            self.garbage_connected.set(!valid && connected);
            self.waits.set(0);
        }
        let kind = match key {
            "ring-ref" => Some(RingKind::Blk),
            "tx-ring-ref" => Some(RingKind::Tx),
            "rx-ring-ref" => Some(RingKind::Rx),
            _ => None,
        };
        let gref = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u32>().ok());
        if let (Some(kind), Some(g)) = (kind, gref) {
            if let Some(&frame) = self.frames.borrow().get(&g) {
                self.rings.borrow_mut().push(Ring {
                    kind,
                    frame,
                    done: 0,
                    seen: 0,
                });
            }
        }
        self.inner.write_key(key, value)
    }

    fn remove_key(&self, key: &str) -> Result<(), String> {
        self.inner.remove_key(key)
    }

    fn front_key(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.front_key(key)
    }

    fn backend_key(&self, key: &str) -> Option<Vec<u8>> {
        let real = self.inner.backend_key(key);
        match (self.flaw(), key) {
            (Some(Flaw::Error(e)), "error") => e.map(|e| e.as_bytes().to_vec()),
            (Some(Flaw::Key(k, v)), _) if k == key => Some(v.as_bytes().to_vec()),
            (Some(Flaw::NoDiscard), "feature-discard") => Some(b"0".to_vec()),
            (Some(Flaw::StaysConnectedOnGarbage), "state") if self.garbage_connected.get() => {
                Some(b"4".to_vec())
            }
            (Some(Flaw::ConnectsOnGarbage(k)), "state")
                if self.garbage.get() && self.waits.get() >= k =>
            {
                Some(b"4".to_vec())
            }
            (Some(Flaw::StateOnceNotified(st)), "state") if self.notified.get() => {
                Some(st.to_string().into_bytes())
            }
            _ => real,
        }
    }

    fn wait(&self) -> bool {
        let more = self.inner.wait();
        self.waits.set(self.waits.get().saturating_add(1));
        self.tamper_all(false);
        more
    }

    fn console(&self) -> Option<(FrontPage<'_>, Port)> {
        self.inner.console()
    }

    fn console_output(&self) -> Vec<u8> {
        let mut out = self.inner.console_output();
        match self.flaw() {
            Some(Flaw::OutputShort) => {
                out.pop();
            }
            Some(Flaw::OutputExtra) => out.push(b'!'),
            Some(Flaw::Disconnects) => {
                if let Some((p, _)) = self.inner.console() {
                    p.mem.store_u8(cons::CONNECTION, cons::DISCONNECTED);
                }
            }
            Some(Flaw::OutputChanged(at)) => {
                if let Some(b) = out.get_mut(at) {
                    *b ^= 0x20;
                }
            }
            _ => {}
        }
        out
    }

    fn console_input(&self, bytes: &[u8]) -> usize {
        let page = self.inner.console().map(|(p, _)| p.mem);
        let n = match self.flaw() {
            Some(Flaw::InputDropped) => bytes.len(),
            Some(Flaw::InputChanged) if !bytes.is_empty() => {
                let mut b = bytes.to_vec();
                b[0] ^= 0x20;
                self.inner.console_input(&b)
            }
            _ => self.inner.console_input(bytes),
        };
        match (self.flaw(), page) {
            (Some(Flaw::InputOverclaims(k)), _) => n + k,
            (Some(Flaw::InputTakesFloods), _) if bytes.len() >= 1 << 20 => bytes.len(),
            (Some(Flaw::InputWritten), Some(p)) => {
                p.store_u32(cons::IN_PROD, 1);
                n
            }
            (Some(Flaw::InProdFar), Some(p)) => {
                p.store_u32(cons::IN_PROD, p.load_u32(cons::IN_CONS).wrapping_add(2000));
                n
            }
            _ => n,
        }
    }

    fn neighbour(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
        let active = self.scope == Scope::Neighbours;
        Ok(self.wrap(self.inner.neighbour_world()?, active))
    }

    fn sibling(&self) -> Result<Box<dyn FrontendWorld + '_>, String> {
        Ok(self.wrap(self.inner.sibling_world()?, self.active))
    }
}

fn case(prefix: &str) -> &'static Case {
    backend::catalogue()
        .iter()
        .find(|c| c.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no case {prefix}"))
}

/// Runs case `prefix` against the backend with `flaw` in `scope`; returns the
/// evidence of its failure (panics if it passed).
fn fails(prefix: &str, flaw: Flaw, scope: Scope) -> String {
    fails_within(prefix, flaw, scope, PATIENCE)
}

/// [`fails`] with the patience given: for a flaw that makes the case wait until it
/// gives up.
fn fails_within(prefix: &str, flaw: Flaw, scope: Scope, patience: Duration) -> String {
    let case = case(prefix);
    let world = Host::new(case.class, patience)
        .world()
        .expect("a world for the case");
    let world = Careless::new(world, flaw, scope);
    match case.run(&world) {
        Ok(e) => panic!(
            "{} passed a backend with {flaw:?} ({scope:?}): {e}",
            case.name
        ),
        Err(e) => {
            println!("{} with {flaw:?} ({scope:?}): FAIL {e}", case.name);
            e
        }
    }
}

/// Checks that `evidence` contains `want`.
#[track_caller]
fn says(evidence: &str, want: &str) {
    assert!(evidence.contains(want), "want {want:?} in: {evidence}");
}

#[test]
fn a_clean_careless_world_passes() {
    // The wrapper itself changes nothing without a flaw in scope.
    for prefix in ["blkback.malformed_requests", "netback.bad_tx_gref"] {
        let case = case(prefix);
        let world = Host::new(case.class, PATIENCE).world().expect("world");
        let world = Careless::with(world, Flaw::BlkId, Scope::Own, false);
        case.run(&world).expect("passes");
    }
}

const OK: i16 = blkif::RSP_OKAY;
const ERR: i16 = blkif::RSP_ERROR;

#[test]
fn blk_an_error_answered_okay() {
    let e = fails(
        "blkback.malformed_requests",
        Flaw::BlkStatus(ERR, OK),
        Scope::Own,
    );
    says(&e, "read past the end: status 0 (want [-1])");
    let e = fails("blkback.indirect", Flaw::BlkStatus(ERR, OK), Scope::Own);
    says(&e, "indirect page revoked: status 0 (want [-1])");
}

#[test]
fn blk_a_good_read_refused() {
    let e = fails(
        "blkback.malformed_requests",
        Flaw::BlkStatus(OK, ERR),
        Scope::Own,
    );
    says(&e, "a good read of sector 0 got -1");
    let e = fails(
        "blkback.garbage_event_indices",
        Flaw::BlkStatus(OK, ERR),
        Scope::Own,
    );
    says(&e, "got -1");
    let e = fails(
        "blkback.full_ring_other_disk",
        Flaw::BlkStatus(OK, ERR),
        Scope::Own,
    );
    says(&e, "the domain's other disk: a read got -1");
}

#[test]
fn blk_the_neighbours_disk_failing() {
    for prefix in [
        "blkback.malformed_requests",
        "blkback.indirect",
        "blkback.bad_connect_keys",
        "blkback.read_into_ring_page",
    ] {
        let e = fails(prefix, Flaw::BlkStatus(OK, ERR), Scope::Neighbours);
        says(&e, "the neighbour's disk: write -1, read -1, data same");
    }
}

#[test]
fn blk_the_neighbours_write_refused() {
    // The write is done but answered ERROR: the read then finds the data.
    let e = fails(
        "blkback.malformed_requests",
        Flaw::BlkOpStatus(blkif::OP_WRITE, OK, ERR),
        Scope::Neighbours,
    );
    says(&e, "the neighbour's disk: write -1, read 0, data same");
    // The read is done but answered ERROR: the data is there all the same.
    let e = fails(
        "blkback.malformed_requests",
        Flaw::BlkOpStatus(blkif::OP_READ, OK, ERR),
        Scope::Neighbours,
    );
    says(&e, "the neighbour's disk: write 0, read -1, data same");
}

#[test]
fn blk_the_operation_not_echoed() {
    let e = fails(
        "blkback.malformed_requests",
        Flaw::BlkOp(blkif::OP_WRITE),
        Scope::Own,
    );
    says(&e, "read past the end: operation 0 echoed as 1");
    let e = fails(
        "blkback.indirect",
        Flaw::BlkOp(blkif::OP_INDIRECT),
        Scope::Own,
    );
    says(&e, "indirect page revoked: operation 0 echoed as 6");
}

#[test]
fn blk_an_answer_for_another_id() {
    let e = fails("blkback.malformed_requests", Flaw::BlkId, Scope::Own);
    says(&e, "answer for id 1001 to request 1000");
    let e = fails("blkback.grant_revoked_mid_request", Flaw::BlkId, Scope::Own);
    says(&e, "answer for id 5001 to request 5000");
}

#[test]
fn net_an_error_answered_okay() {
    let e = fails(
        "netback.bad_tx_gref",
        Flaw::TxStatus(netif::RSP_ERROR, netif::RSP_OKAY),
        Scope::Own,
    );
    says(&e, "no request got RSP_ERROR");
    let e = fails(
        "netback.bad_tail_gref",
        Flaw::TxStatus(netif::RSP_ERROR, netif::RSP_OKAY),
        Scope::Own,
    );
    says(&e, "the broken frame's slots got");
}

#[test]
fn net_an_extra_info_slot_answered_okay() {
    let e = fails(
        "netback.bad_gso",
        Flaw::TxStatus(netif::RSP_NULL, netif::RSP_OKAY),
        Scope::Own,
    );
    says(&e, "answered with status 0");
}

#[test]
fn net_a_good_frame_refused() {
    let e = fails(
        "netback.odd_slot_layout",
        Flaw::TxStatus(netif::RSP_OKAY, netif::RSP_ERROR),
        Scope::Own,
    );
    says(&e, "slot 0 got -1");
    let e = fails(
        "netback.duplicate_tx_ids",
        Flaw::TxStatus(netif::RSP_OKAY, netif::RSP_ERROR),
        Scope::Own,
    );
    says(&e, "two frames with tx id 5 answered");
    let e = fails(
        "netback.bad_tx_gref",
        Flaw::TxStatus(netif::RSP_OKAY, netif::RSP_ERROR),
        Scope::Neighbours,
    );
    says(&e, "the neighbour's good frame got tx status -1");
}

#[test]
fn a_refusal_without_an_error_node() {
    for flaw in [Flaw::Error(None), Flaw::Error(Some(" "))] {
        let e = fails("netback.slot_crosses_page", flaw, Scope::Own);
        says(&e, "without an error node");
        // The case's refusals are in worlds of their own.
        let e = fails("blkback.req_prod_overrun", flaw, Scope::Neighbours);
        says(&e, "req_prod +5000: the backend closed");
    }
}

#[test]
fn a_grant_kept_mapped() {
    // The third grant of a vif: its first data page.
    let e = fails_within(
        "netback.too_many_slots",
        Flaw::KeepsMapped(3),
        Scope::Own,
        SHORT,
    );
    says(&e, "still mapped");
    let e = fails_within(
        "blkback.closing_in_flight",
        Flaw::KeepsMapped(2),
        Scope::Own,
        SHORT,
    );
    says(&e, "still mapped");
}

#[test]
fn console_output_changed_or_lost() {
    let e = fails(
        "consback.binary_and_input",
        Flaw::OutputChanged(100),
        Scope::Own,
    );
    says(&e, "4133 bytes, first difference at Some(100)");
    let e = fails("consback.out_prod_far_ahead", Flaw::OutputExtra, Scope::Own);
    says(&e, "output after the violation");
    let e = fails_within(
        "consback.event_storm",
        Flaw::OutputShort,
        Scope::Neighbours,
        SHORT,
    );
    says(&e, "neighbour: timed out waiting for the output");
}

#[test]
fn console_input_queued_without_bound() {
    let e = fails(
        "consback.binary_and_input",
        Flaw::InputOverclaims(1 << 20),
        Scope::Own,
    );
    says(&e, "8 MiB of input queued");
    // Exactly 8 MiB, every byte taken.
    let e = fails(
        "consback.binary_and_input",
        Flaw::InputTakesFloods,
        Scope::Own,
    );
    says(&e, "8 MiB of input queued");
}

#[test]
fn console_input_changed_or_past_the_ring() {
    let e = fails("consback.binary_and_input", Flaw::InputChanged, Scope::Own);
    says(
        &e,
        "input differs: 3000 of 3000 bytes, first difference at Some(0)",
    );
    let e = fails("consback.binary_and_input", Flaw::InProdFar, Scope::Own);
    says(&e, "2000 bytes past in_cons");
    let e = fails("consback.in_cons_scribbled", Flaw::InputWritten, Scope::Own);
    says(&e, "the backend wrote input past a bad in_cons (in_prod 1)");
}

#[test]
fn console_failed_by_a_storm() {
    let e = fails("consback.event_storm", Flaw::Disconnects, Scope::Own);
    says(&e, "the storm failed the console");
}

#[test]
fn blk_a_disk_size_the_disk_does_not_have() {
    // `sectors` twice the image: the snapshot's tail reads are refused.
    let e = fails(
        "blkback.malformed_requests",
        Flaw::Key("sectors", "4096"),
        Scope::Own,
    );
    says(&e, "a good read of sector 4080 got -1");
}

#[test]
fn net_one_bad_slot_answered_okay() {
    // The others still get RSP_ERROR: the OKAY one must be seen on its own.
    let e = fails(
        "netback.bad_tx_gref",
        Flaw::TxStatusOnce(netif::RSP_ERROR, netif::RSP_OKAY),
        Scope::Own,
    );
    says(&e, "answered with status 0");
}

#[test]
fn net_the_good_frame_after_bad_ones_refused() {
    // Answered ERROR, delivered all the same.
    let e = fails(
        "netback.bad_tx_gref",
        Flaw::TxStatus(netif::RSP_OKAY, netif::RSP_ERROR),
        Scope::Own,
    );
    says(
        &e,
        "after the bad frames a good one got status -1 and arrived intact",
    );
    let e = fails(
        "netback.too_many_slots",
        Flaw::TxStatus(netif::RSP_OKAY, netif::RSP_ERROR),
        Scope::Own,
    );
    says(
        &e,
        "the domain's other vif: status -1, frame arrived intact: true",
    );
    let e = fails(
        "netback.bad_tail_gref",
        Flaw::TxStatus(netif::RSP_OKAY, netif::RSP_ERROR),
        Scope::Own,
    );
    says(
        &e,
        "the good frame after it: status -1, arrived intact: true",
    );
}

#[test]
fn net_a_bad_frame_taking_the_vif_down() {
    let e = fails(
        "netback.bad_tx_gref",
        Flaw::StateOnceNotified(5),
        Scope::Own,
    );
    says(&e, "a bad frame took the vif down: state Some(5)");
    let e = fails(
        "netback.duplicate_tx_ids",
        Flaw::StateOnceNotified(5),
        Scope::Own,
    );
    says(&e, "a reused tx id took the vif down");
}

#[test]
fn net_a_ring_or_data_page_kept_mapped() {
    // Grants of a vif: tx ring, rx ring, then its four data pages.
    let e = fails_within(
        "netback.too_many_slots",
        Flaw::KeepsMapped(1),
        Scope::Own,
        SHORT,
    );
    says(&e, "still mapped");
    let e = fails("netback.bad_tx_gref", Flaw::KeepsMapped(3), Scope::Own);
    says(&e, "after the errors: gref");
}

#[test]
fn blk_a_bad_discard_answered_as_unsupported_while_offered() {
    let e = fails(
        "blkback.malformed_requests",
        Flaw::BlkOpStatus(blkif::OP_DISCARD, ERR, blkif::RSP_EOPNOTSUPP),
        Scope::Own,
    );
    says(&e, "discard past the end: status -2 (want [-1])");
    let e = fails(
        "blkback.malformed_requests",
        Flaw::BlkOpStatus(blkif::OP_WRITE_BARRIER, ERR, blkif::RSP_EOPNOTSUPP),
        Scope::Own,
    );
    says(&e, "barrier with 12 segments: status -2 (want [-1])");
}

#[test]
fn blk_a_backend_without_discard_passes() {
    // Not offering discard, EOPNOTSUPP is a right answer to every discard.
    let case = case("blkback.malformed_requests");
    let world = Host::new(case.class, PATIENCE).world().expect("world");
    let world = Careless::new(world, Flaw::NoDiscard, Scope::Own);
    let e = case.run(&world).expect("the case passes");
    says(&e, "36 malformed requests answered with errors");
}

#[test]
fn blk_good_requests_refused_in_each_case() {
    let write = |prefix, want| {
        let flaw = Flaw::BlkOpStatus(blkif::OP_WRITE, OK, ERR);
        says(&fails(prefix, flaw, Scope::Own), want);
    };
    write(
        "blkback.malformed_requests",
        "a write from a read-only grant got -1",
    );
    write("blkback.read_into_ring_page", "a good write of 0xff got -1");
    let read = |prefix, scope, want| {
        let flaw = Flaw::BlkOpStatus(blkif::OP_READ, OK, ERR);
        says(&fails(prefix, flaw, scope), want);
    };
    read(
        "blkback.req_prod_overrun",
        Scope::Neighbours,
        "a good read before the overrun failed",
    );
    read(
        "blkback.closing_in_flight",
        Scope::Own,
        "a read after reconnecting got -1",
    );
    read(
        "blkback.garbage_frontend_state",
        Scope::Own,
        "a read after connecting failed",
    );
    // An indirect request's answer carries its indirect operation.
    read(
        "blkback.indirect",
        Scope::Own,
        "a good indirect read after them got -1",
    );
}

#[test]
fn blk_a_data_grant_kept_mapped_after_a_refusal() {
    // The ring's grant is the first, the writable data page's the second.
    let e = fails(
        "blkback.malformed_requests",
        Flaw::KeepsMapped(2),
        Scope::Own,
    );
    says(&e, "read past the end: gref");
    says(&e, "still mapped after the answer");
}

#[test]
fn blk_connecting_on_a_garbage_state() {
    let e = fails(
        "blkback.garbage_frontend_state",
        Flaw::ConnectsOnGarbage(0),
        Scope::Own,
    );
    says(&e, "frontend state \"99\": the backend's state is Some(4)");
    // Connected only after a few turns: the case gives the backend time to err.
    let e = fails(
        "blkback.garbage_frontend_state",
        Flaw::ConnectsOnGarbage(5),
        Scope::Own,
    );
    says(&e, "frontend state \"99\": the backend's state is Some(4)");
}

#[test]
fn blk_key_sets_refused_without_a_reason() {
    let e = fails(
        "blkback.bad_connect_keys",
        Flaw::Error(None),
        Scope::Neighbours,
    );
    says(&e, "ring-ref not granted: the backend closed");
}

#[test]
fn net_refusals_and_a_sender_blamed_for_its_receiver() {
    let e = fails(
        "netback.bad_connect_keys",
        Flaw::Error(None),
        Scope::Neighbours,
    );
    says(&e, "multi-queue-num-queues = \"99\": the backend closed");
    let e = fails(
        "netback.bad_rx_grefs",
        Flaw::TxStatus(netif::RSP_OKAY, netif::RSP_ERROR),
        Scope::Neighbours,
    );
    says(&e, "the sender's frame 0 got -1 (the receiver's fault)");
}

#[test]
fn console_input_never_delivered() {
    let e = fails_within(
        "consback.binary_and_input",
        Flaw::InputDropped,
        Scope::Own,
        SHORT,
    );
    says(&e, "0 of 3000 input bytes came (");
    // The count of turns the case waited for input, each after an empty look.
    let turns: i64 = e
        .split('(')
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .expect("a count of idle turns");
    assert!(turns > 0, "{e}");
}

#[test]
fn blk_a_disk_changed_under_the_bad_requests() {
    // The second snapshot's first read (id 2000) sees byte 100 changed.
    let e = fails(
        "blkback.malformed_requests",
        Flaw::ReadChanged(2000),
        Scope::Own,
    );
    says(
        &e,
        "a refused write changed the disk (snapshot byte Some(100))",
    );
    // The reconnect's read (id 2) finds sector 0 changed, answered OKAY.
    let e = fails(
        "blkback.req_prod_overrun",
        Flaw::ReadChanged(2),
        Scope::Neighbours,
    );
    says(
        &e,
        "req_prod +5000: after reconnecting sector 0 reads 0, CHANGED",
    );
}

#[test]
fn blk_a_grant_kept_mapped_after_the_good_requests() {
    // The fifth grant: the snapshot's page, used only by good reads.
    let e = fails_within(
        "blkback.malformed_requests",
        Flaw::KeepsMapped(5),
        Scope::Own,
        SHORT,
    );
    says(&e, "after the good requests: gref");
}

#[test]
fn blk_a_backend_without_indirect_passes() {
    // Not offering indirect requests, the backend may refuse them as it likes.
    let case = case("blkback.indirect");
    let world = Host::new(case.class, PATIENCE).world().expect("world");
    let flaw = Flaw::Key("feature-max-indirect-segments", "0");
    let world = Careless::new(world, flaw, Scope::Own);
    let e = case.run(&world).expect("the case passes");
    says(&e, "indirect not offered: refused with -1");
}

#[test]
fn net_a_bad_rx_buffer_answered_as_an_empty_frame() {
    // Status 0 is a zero-length frame, not an error: the case must not count it.
    // The receiver's answers land while the neighbour sends: its waits tamper with
    // the receiver's ring too.
    let e = fails_within(
        "netback.bad_rx_grefs",
        Flaw::RxStatus(netif::RSP_ERROR, 0),
        Scope::Own,
        SHORT,
    );
    says(
        &e,
        "timed out waiting for rx error responses for the bad buffers",
    );
}

/// Runs case `prefix` against the backend with `flaw` in the case's own world, which
/// it must pass; returns the evidence.
fn passes(prefix: &str, flaw: Flaw) -> String {
    let case = case(prefix);
    let world = Host::new(case.class, PATIENCE).world().expect("world");
    let world = Careless::new(world, flaw, Scope::Own);
    case.run(&world)
        .unwrap_or_else(|e| panic!("{} failed with {flaw:?}: {e}", case.name))
}

#[test]
fn blk_grants_ended_under_reads_counted_by_outcome() {
    // A careless world lets the backend answer before the frontend goes on, so
    // every read is answered before its grant ends (NoDiscard: no flaw here).
    let e = passes("blkback.grant_revoked_mid_request", Flaw::NoDiscard);
    says(
        &e,
        "reads: 0 refused (ERROR, page untouched), 200 answered before the end, 0 held",
    );
    // Answered ERROR (the snapshot's reads, ids 5000 on, still OKAY): the end won.
    let e = passes(
        "blkback.grant_revoked_mid_request",
        Flaw::BlkStatusUnder(200, OK, ERR),
    );
    says(
        &e,
        "reads: 200 refused (ERROR, page untouched), 0 answered before the end, 0 held",
    );
    // Each end fails once: the backend held the grant (the ring's and the
    // snapshot's, the first two, are not held).
    let e = passes("blkback.grant_revoked_mid_request", Flaw::Holds(2));
    says(
        &e,
        "reads: 0 refused (ERROR, page untouched), 0 answered before the end, 200 held",
    );
}

#[test]
fn blk_a_read_answered_before_its_grant_ended_without_the_data() {
    let e = fails(
        "blkback.grant_revoked_mid_request",
        Flaw::ReadChanged(7),
        Scope::Own,
    );
    says(
        &e,
        "request 7: answered OKAY, but its page did not hold the data when the grant ended",
    );
}

#[test]
fn blk_staying_connected_on_a_garbage_state() {
    // The ring's grant is let go all the same: only the state tells.
    let e = fails_within(
        "blkback.garbage_frontend_state",
        Flaw::StaysConnectedOnGarbage,
        Scope::Own,
        SHORT,
    );
    says(&e, "timed out waiting for the backend to leave Connected");
}

#[test]
fn net_a_frame_delivered_changed() {
    // Answered OKAY each time: only the bytes show the flaw.
    // The middle slot's last byte: frame byte 40 + 999.
    let e = fails(
        "netback.odd_slot_layout",
        Flaw::TxDataChanged(1),
        Scope::Own,
    );
    says(
        &e,
        "5040 of 5040 bytes arrived, first difference at Some(1039)",
    );
    // The second of the two frames with one id; the first arrives intact.
    let e = fails(
        "netback.duplicate_tx_ids",
        Flaw::TxDataChanged(1),
        Scope::Own,
    );
    says(
        &e,
        "received 200 and 300 bytes, not the two frames in order",
    );
    // The starved vif's first frame, flooded to the domain's other vif.
    let e = fails(
        "netback.starved_vif_other_vif",
        Flaw::TxDataChanged(0),
        Scope::Own,
    );
    says(
        &e,
        "a flooded frame: status 0, reached the other vif intact: false",
    );
    // The sender's frame after its 64 to the starved vif.
    let e = fails(
        "netback.starved_vif_other_vif",
        Flaw::TxDataChanged(64),
        Scope::Neighbours,
    );
    says(&e, "the domain's other vif: status 0, frame intact: false");
}
