//! The xen model: domains, guest memory, event channels, grant tables, the hypercall
//! dispatcher, and the xenstored the hypervisor owns.
//!
//! shim-hv plays Xen *and* dom0, like QEMU's Xen emulation (`hw/i386/kvm/xen_*.c`):
//! guests are domains 1.., the host process is domain 0. Host code (backends, the
//! toolstack) talks to guests through dom0 APIs here: event-channel ports that call
//! host closures ([`Hypervisor::dom0_alloc_unbound`], [`Hypervisor::dom0_bind_interdomain`],
//! [`Hypervisor::dom0_send`], [`Hypervisor::dom0_close`]) and grant mappings
//! ([`Hypervisor::grant_map`], [`Hypervisor::grant_copy`]).
//!
//! The model knows nothing about how guest code runs: runners (in-process threads,
//! KVM vCPUs) call [`Hypervisor::hypercall`] with a [`GuestAccess`] for pointer
//! arguments and wait on [`Domain::signal`] for events.
//!
//! Guest RAM and host pages live in [`mem`]; [`inproc`] is the in-process runner
//! (guest code as host threads of this process, [`Hypervisor::spawn_guest`]).
//!
//! Locking: one lock for all event channels (interdomain operations touch two
//! tables), one per domain for grants, parameters and state. No model lock is held
//! while a dom0 handler runs, a domain is woken, or xenstored is called, so handlers
//! may call back into the model.
//!
//! ```
//! use xen_model::{DomainSpec, Hypervisor, HypervisorConfig};
//! use hypercall::abi::hvm;
//!
//! let hv = Hypervisor::new(HypervisorConfig::default());
//! let dom = hv.create_domain(DomainSpec::new("demo", 4)).unwrap();
//! assert_eq!(dom.id().0, 1);
//! assert_eq!(dom.hvm_param(hvm::PARAM_STORE_PFN), Some(dom.store().gfn.0));
//! hv.destroy_domain(dom.id()).unwrap();
//! ```

pub mod access;
pub mod domain;
pub mod evtchn;
pub mod gnttab;
mod hypercall;
pub mod inproc;
pub mod mem;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Instant;

use ::hypercall::{DomId, Gfn, GrantRef, Port};

pub use access::{Efault, GuestAccess, GuestAccessExt, GuestPhysAccess};
pub use domain::{
    ConsoleSink, Domain, DomainSpec, DomainState, EventSignal, ShutdownReason, SpecialPage, Uuid,
};
pub use evtchn::{Dom0Handler, EvtchnError, PortState};
pub use gnttab::{
    CopyDst, CopyFault, CopySrc, GrantError, GrantMapping, GrantOffset, GrantPeer, GrantPtr,
};
pub use xenstored::{Quotas, Xenstored};

use crate::mem::{GuestMemory, GuestRegion, HostPage, MemError};
use domain::{lock, DomainParts, SPECIAL_CONSOLE, SPECIAL_PAGES, SPECIAL_STORE};
use evtchn::{Effects, EvtchnState};

/// First domain id reserved by Xen (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u16 = 0x7FF0;

/// Hypervisor-wide settings.
#[derive(Clone, Debug)]
pub struct HypervisorConfig {
    /// xenstored limits.
    pub quotas: Quotas,
    /// The Xen version reported to guests (`XENVER_version`, CPUID): major, minor.
    pub xen_version: (u16, u16),
    /// Serve guests' store rings on the thread that signals them (the guest's own
    /// notification, or whoever fired a watch) instead of in xenstored's worker
    /// thread: single-threaded, deterministic runs (the cost bench). Default: off.
    pub xenstored_inline: bool,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        HypervisorConfig {
            quotas: Quotas::default(),
            xen_version: (4, 17),
            xenstored_inline: false,
        }
    }
}

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is unusable (what and why).
    #[error("bad domain spec: {0}")]
    BadSpec(String),
    /// A live domain already has that name.
    #[error("a domain named {0:?} already exists")]
    NameInUse(String),
    /// No free domain id.
    #[error("no free domain id")]
    NoDomid,
    /// No such domain.
    #[error("no domain {}", .0 .0)]
    NoSuchDomain(DomId),
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(MemError),
    /// Event channel setup failed.
    #[error("event channel: {0}")]
    Evtchn(EvtchnError),
    /// xenstored refused.
    #[error("xenstore: {0}")]
    Store(xenstored::Error),
}

impl From<MemError> for Error {
    fn from(e: MemError) -> Self {
        Error::Memory(e)
    }
}

impl From<EvtchnError> for Error {
    fn from(e: EvtchnError) -> Self {
        Error::Evtchn(e)
    }
}

impl From<xenstored::Error> for Error {
    fn from(e: xenstored::Error) -> Self {
        Error::Store(e)
    }
}

/// What the toolstack hears about domains ([`Hypervisor::subscribe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainEvent {
    /// A domain was created.
    Created(DomId),
    /// A domain's state changed.
    StateChanged(DomId, DomainState),
    /// A domain was destroyed and is gone.
    Destroyed(DomId),
}

struct DomainTable {
    live: BTreeMap<u16, Arc<Domain>>,
    /// Ids handed out to creations still in progress.
    reserved: BTreeSet<u16>,
    next: u16,
}

/// The hypervisor: Xen plus dom0, for any number of guests in this process.
pub struct Hypervisor {
    config: HypervisorConfig,
    boot: Instant,
    xenstored: Arc<Xenstored>,
    domains: Mutex<DomainTable>,
    evtchn: Mutex<EvtchnState>,
    subscribers: Mutex<Vec<mpsc::Sender<DomainEvent>>>,
    me: Weak<Hypervisor>,
}

impl fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hypervisor")
            .field(
                "domains",
                &lock(&self.domains).live.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Hypervisor {
    /// A hypervisor with no guests and a fresh xenstored.
    pub fn new(config: HypervisorConfig) -> Arc<Self> {
        let xenstored = if config.xenstored_inline {
            Xenstored::new_inline(config.quotas.clone())
        } else {
            Xenstored::new(config.quotas.clone())
        };
        // What xen-init-dom0 writes at boot (tools query dom0 like any domain).
        let dom0 = xenstored.client(0);
        for (k, v) in [("name", "Domain-0"), ("domid", "0")] {
            // A fresh daemon: dom0 may write anywhere, this cannot fail.
            let _ = dom0.write(
                xenstored::TxId::NONE,
                &format!("/local/domain/0/{k}"),
                v.as_bytes(),
            );
        }
        drop(dom0);
        let hv = Arc::new_cyclic(|me| Hypervisor {
            config,
            boot: Instant::now(),
            xenstored,
            domains: Mutex::new(DomainTable {
                live: BTreeMap::new(),
                reserved: BTreeSet::new(),
                next: 1,
            }),
            evtchn: Mutex::new(EvtchnState::new()),
            subscribers: Mutex::new(Vec::new()),
            me: me.clone(),
        });
        // SET_PERMS asks which domains exist (4.17: ENOENT for an owner that is none).
        // A domain being built (reserved) exists already: its nodes are written then.
        let me = Arc::downgrade(&hv);
        hv.xenstored.set_domain_exists(Arc::new(move |id| {
            me.upgrade().is_some_and(|hv| {
                let t = lock(&hv.domains);
                t.live.contains_key(&id) || t.reserved.contains(&id)
            })
        }));
        hv
    }

    /// The settings.
    pub fn config(&self) -> &HypervisorConfig {
        &self.config
    }

    /// The xenstored this hypervisor owns (dom0 clients: `xenstored().client(0)`).
    pub fn xenstored(&self) -> &Arc<Xenstored> {
        &self.xenstored
    }

    /// Xen system time: nanoseconds since this hypervisor started.
    pub fn now_ns(&self) -> u64 {
        self.boot.elapsed().as_nanos() as u64
    }

    /// The live domain `id`.
    pub fn domain(&self, id: DomId) -> Option<Arc<Domain>> {
        lock(&self.domains).live.get(&id.0).cloned()
    }

    /// The live domain called `name`.
    pub fn domain_by_name(&self, name: &str) -> Option<Arc<Domain>> {
        lock(&self.domains)
            .live
            .values()
            .find(|d| d.name() == name)
            .cloned()
    }

    /// All live domains, by id.
    pub fn domains(&self) -> Vec<Arc<Domain>> {
        lock(&self.domains).live.values().cloned().collect()
    }

    /// Domain events from now on (creation, state changes, destruction). Events are
    /// sent without any model lock held; a dropped receiver is forgotten.
    pub fn subscribe(&self) -> mpsc::Receiver<DomainEvent> {
        let (tx, rx) = mpsc::channel();
        lock(&self.subscribers).push(tx);
        rx
    }

    fn publish(&self, ev: DomainEvent) {
        // Sending on an unbounded channel never blocks or calls out.
        lock(&self.subscribers).retain(|s| s.send(ev.clone()).is_ok());
    }

    fn reserve_domid(&self, name: &str) -> Result<u16, Error> {
        let mut t = lock(&self.domains);
        if t.live.values().any(|d| d.name() == name) {
            return Err(Error::NameInUse(name.into()));
        }
        for _ in 1..DOMID_FIRST_RESERVED {
            let id = t.next;
            t.next = if id + 1 >= DOMID_FIRST_RESERVED {
                1
            } else {
                id + 1
            };
            if !t.live.contains_key(&id) && !t.reserved.contains(&id) {
                t.reserved.insert(id);
                return Ok(id);
            }
        }
        Err(Error::NoDomid)
    }

    /// Creates and starts (state `Running`) a domain: RAM, reserved store and console
    /// pages near the top of RAM, their event channels (guest ends unbound to dom0,
    /// dom0 ends bound), the HVM parameters, the xenstore nodes libxl writes, and the
    /// introduction to xenstored.
    pub fn create_domain(&self, spec: DomainSpec) -> Result<Arc<Domain>, Error> {
        if spec.name.is_empty() || spec.name.len() > 256 || spec.name.contains('/') {
            return Err(Error::BadSpec(format!("name {:?}", spec.name)));
        }
        let max_mib = (GuestMemory::MAX_PAGES as u64 * 4096) >> 20;
        if spec.memory_mib < 1 || spec.memory_mib > max_mib {
            return Err(Error::BadSpec(format!(
                "memory {} MiB (1..={max_mib})",
                spec.memory_mib
            )));
        }
        if spec.vcpus == 0 || spec.vcpus as usize > ::hypercall::abi::shared_info::LEGACY_MAX_VCPUS
        {
            return Err(Error::BadSpec(format!("vcpus {}", spec.vcpus)));
        }
        if spec.hole_pages > 4096 {
            return Err(Error::BadSpec(format!("hole_pages {}", spec.hole_pages)));
        }
        if spec.max_grant_frames == 0 || spec.max_grant_frames > 1024 {
            return Err(Error::BadSpec(format!(
                "max_grant_frames {}",
                spec.max_grant_frames
            )));
        }
        let id = self.reserve_domid(&spec.name)?;
        let r = self.build_domain(DomId(id), spec);
        let mut t = lock(&self.domains);
        t.reserved.remove(&id);
        let (dom, fx) = r?;
        t.live.insert(id, dom.clone());
        drop(t);
        fx.run();
        self.publish(DomainEvent::Created(dom.id()));
        Ok(dom)
    }

    fn build_domain(&self, id: DomId, spec: DomainSpec) -> Result<(Arc<Domain>, Effects), Error> {
        let pages = (spec.memory_mib as usize) << 8;
        let memory = Arc::new(GuestMemory::with_holes(
            spec.first_gfn,
            pages,
            spec.hole_pages,
        )?);
        let shinfo_private = HostPage::new()?;
        let signal = Arc::new(EventSignal::default());
        let special = memory.end_gfn().0 - SPECIAL_PAGES;
        let store_gfn = Gfn(special + SPECIAL_STORE);
        let console_gfn = Gfn(special + SPECIAL_CONSOLE);
        let store_ring = GuestRegion::page(&memory, store_gfn)?;
        let console_ring = GuestRegion::page(&memory, console_gfn)?;

        let console_slot: Arc<Mutex<Option<Dom0Handler>>> = Arc::new(Mutex::new(None));
        let xs = self.xenstored.clone();
        let store_handler: Dom0Handler = Arc::new(move || xs.kick(id.0));
        let slot = console_slot.clone();
        let console_handler: Dom0Handler = Arc::new(move || {
            let h = lock(&slot).clone();
            if let Some(h) = h {
                h();
            }
        });

        let mut fx = Effects::default();
        let (store, console) = {
            let mut ev = lock(&self.evtchn);
            ev.add_guest(
                id,
                GuestRegion::host_page(Arc::new(shinfo_private)),
                signal.clone(),
                spec.vcpus,
            );
            let ports = (|| -> Result<_, EvtchnError> {
                let sp = ev.alloc_unbound(id, DomId::DOM0)?;
                let sd = ev.dom0_bind_interdomain(id, sp, store_handler, &mut fx)?;
                let cp = ev.alloc_unbound(id, DomId::DOM0)?;
                let cd = ev.dom0_bind_interdomain(id, cp, console_handler, &mut fx)?;
                Ok((sp, sd, cp, cd))
            })();
            match ports {
                Ok((sp, sd, cp, cd)) => (
                    SpecialPage {
                        gfn: store_gfn,
                        port: sp,
                        dom0_port: sd,
                    },
                    SpecialPage {
                        gfn: console_gfn,
                        port: cp,
                        dom0_port: cd,
                    },
                ),
                Err(e) => {
                    ev.remove_guest(id);
                    return Err(e.into());
                }
            }
        };
        let uuid = spec.uuid.unwrap_or_else(Uuid::random);
        let memory_kib = spec.memory_mib * 1024;
        let dom = Arc::new(Domain::new(DomainParts {
            id,
            spec,
            uuid,
            memory,
            store_ring: store_ring.clone(),
            console_ring,
            store,
            console,
            signal,
            console_slot,
        }));

        let nodes = store::domain_nodes(&dom, memory_kib);
        let me = self.me.clone();
        let dom0_store = store.dom0_port;
        let notify: store::StoreNotify = Arc::new(move || {
            if let Some(hv) = me.upgrade() {
                // The port only disappears when the domain is destroyed.
                let _ = hv.dom0_send(dom0_store);
            }
        });
        let r = store::write_nodes(&self.xenstored, &nodes)
            .and_then(|()| self.xenstored.introduce_domain(id.0, store_ring, notify));
        if let Err(e) = r {
            store::remove_domain_nodes(&self.xenstored, &dom);
            self.teardown_evtchn(&dom);
            return Err(e.into());
        }
        Ok((dom, fx))
    }

    fn teardown_evtchn(&self, dom: &Domain) {
        let mut ev = lock(&self.evtchn);
        ev.remove_guest(dom.id());
        // Errors mean "already closed".
        let _ = ev.dom0_close(dom.store.dom0_port);
        let _ = ev.dom0_close(dom.console.dom0_port);
    }

    /// Destroys a domain: state `Dying`, xenstored releases it, its event channels
    /// close (peers, e.g. backends' dom0 ports, become unbound), its xenstore nodes go,
    /// and it leaves the domain table. Guest memory lives on while grant mappings or
    /// runner handles still hold the domain.
    pub fn destroy_domain(&self, id: DomId) -> Result<(), Error> {
        let dom = lock(&self.domains)
            .live
            .remove(&id.0)
            .ok_or(Error::NoSuchDomain(id))?;
        if dom.set_state(DomainState::Dying) {
            self.publish(DomainEvent::StateChanged(id, DomainState::Dying));
        }
        self.xenstored.release_domain(id.0);
        self.teardown_evtchn(&dom);
        store::remove_domain_nodes(&self.xenstored, &dom);
        dom.signal.raise();
        self.publish(DomainEvent::Destroyed(id));
        Ok(())
    }

    fn change_state(&self, dom: &Domain, state: DomainState) -> bool {
        let changed = dom.set_state(state.clone());
        if changed {
            self.publish(DomainEvent::StateChanged(dom.id(), state));
        }
        changed
    }

    /// The guest shut itself down (`SCHEDOP_shutdown`), or the toolstack forces it.
    /// The first reason wins; returns whether the state changed.
    /// xenstored fires `@releaseDomain` when the state changes (as with Xen, where
    /// xenstored sees the shutdown through `VIRQ_DOM_EXC`).
    pub fn shutdown_domain(&self, dom: &Domain, reason: ShutdownReason) -> bool {
        let changed = self.change_state(dom, DomainState::Shutdown(reason));
        if changed {
            self.xenstored.domain_shutdown(dom.id().0);
        }
        changed
    }

    /// Marks a domain crashed (runner: guest panic, triple fault, emulation failure);
    /// xenstored fires `@releaseDomain` as for a shutdown.
    pub fn crash_domain(&self, dom: &Domain, why: impl Into<String>) -> bool {
        let changed = self.change_state(dom, DomainState::Crashed(why.into()));
        if changed {
            self.xenstored.domain_shutdown(dom.id().0);
        }
        changed
    }

    /// Pauses a running domain (state only: runners decide how to honour it).
    pub fn pause_domain(&self, dom: &Domain) -> bool {
        dom.state() == DomainState::Running && self.change_state(dom, DomainState::Paused)
    }

    /// Unpauses a paused domain.
    pub fn unpause_domain(&self, dom: &Domain) -> bool {
        dom.state() == DomainState::Paused && self.change_state(dom, DomainState::Running)
    }

    // ---- dom0 event channels -------------------------------------------------------

    /// A dom0 port that guest `remote` may bind to (it learns the number through
    /// xenstore). `handler` runs each time the guest sends.
    pub fn dom0_alloc_unbound(
        &self,
        remote: DomId,
        handler: Dom0Handler,
    ) -> Result<Port, EvtchnError> {
        lock(&self.evtchn).dom0_alloc_unbound(remote, handler)
    }

    /// Binds a dom0 port to guest `remote`'s unbound `remote_port` (one the guest made
    /// with `alloc_unbound(remote_dom = 0)`). `handler` runs each time the guest sends,
    /// and once right after binding (as Xen marks a freshly bound port pending).
    pub fn dom0_bind_interdomain(
        &self,
        remote: DomId,
        remote_port: Port,
        handler: Dom0Handler,
    ) -> Result<Port, EvtchnError> {
        let mut fx = Effects::default();
        let r = lock(&self.evtchn).dom0_bind_interdomain(remote, remote_port, handler, &mut fx);
        fx.run();
        r
    }

    /// Notifies the guest at the other end of dom0 `port`. Dropped silently if the port
    /// is unbound (e.g. the guest closed its end).
    pub fn dom0_send(&self, port: Port) -> Result<(), EvtchnError> {
        let mut fx = Effects::default();
        let r = lock(&self.evtchn).dom0_send(port, &mut fx);
        fx.run();
        r
    }

    /// Closes dom0 `port`; the guest's end becomes unbound. The handler is dropped.
    pub fn dom0_close(&self, port: Port) -> Result<(), EvtchnError> {
        lock(&self.evtchn).dom0_close(port)
    }

    /// State of `dom`'s `port` (dom0 included).
    pub fn port_state(&self, dom: DomId, port: Port) -> Result<PortState, EvtchnError> {
        lock(&self.evtchn).port_state(dom, port)
    }

    /// Calls `hook` (never under a model lock) each time `dom`'s upcall is raised, in
    /// addition to bumping [`Domain::signal`]; for runners that must kick a vCPU.
    pub fn set_upcall_hook(&self, dom: DomId, hook: Option<Dom0Handler>) {
        lock(&self.evtchn).set_upcall_hook(dom, hook);
    }

    /// Where `dom`'s shared_info is now (the private page until the guest maps it).
    pub fn shared_info(&self, dom: DomId) -> Result<GuestRegion, EvtchnError> {
        lock(&self.evtchn).shared_info(dom)
    }

    /// Whether `dom`'s vCPU 0 has `evtchn_upcall_pending` set.
    pub fn upcall_pending(&self, dom: DomId) -> bool {
        lock(&self.evtchn).upcall_pending(dom)
    }

    /// Acknowledges `dom`'s upcall the way a guest OS's handler would: clears
    /// `evtchn_upcall_pending`, the pending selector, and the pending bit of every
    /// unmasked port; returns the ports cleared (a 4096-bit map, word `i` bit `j` =
    /// port `64*i+j`). If any were pending, `dom`'s signal is bumped so that other
    /// threads of the guest re-check their rings too. Masked ports stay pending.
    pub fn ack_upcall(&self, dom: DomId) -> [u64; 64] {
        let mut delivered = [0u64; 64];
        let any = lock(&self.evtchn).ack_upcall(dom, &mut delivered);
        if any {
            if let Some(d) = self.domain(dom) {
                d.signal.raise();
            }
        }
        delivered
    }

    /// Fires `dom`'s singleshot timer (VIRQ_TIMER) if its deadline has passed; returns
    /// how long until it is due, if armed.
    pub fn check_timer(&self, dom: &Domain) -> Option<std::time::Duration> {
        let now = self.now_ns();
        let due = {
            let mut t = lock(&dom.timer);
            match *t {
                Some(d) if d <= now => {
                    *t = None;
                    true
                }
                Some(d) => return Some(std::time::Duration::from_nanos(d - now)),
                None => false,
            }
        };
        if due {
            let mut fx = Effects::default();
            lock(&self.evtchn).raise_virq(
                dom.id(),
                ::hypercall::abi::evtchn::VIRQ_TIMER,
                0,
                &mut fx,
            );
            fx.run();
        }
        None
    }

    // ---- grants --------------------------------------------------------------------

    /// Maps guest `granter`'s grant `gref` for dom0 (a backend). Enforces what Xen
    /// enforces: access permitted, granted to domain 0, read-only grants only mapped
    /// read-only, frame inside guest RAM. The guest's entry gets `GTF_reading` (and
    /// `GTF_writing`) until the last such mapping goes.
    pub fn grant_map(
        &self,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<GrantMapping, GrantError> {
        let dom = self
            .domain(granter)
            .filter(|d| !matches!(d.state(), DomainState::Dying))
            .ok_or(GrantError::NoSuchDomain(granter))?;
        GrantMapping::new(dom, gref, readonly)
    }

    /// A handle for dom0 grant copies to and from `granter` (see [`GrantPeer`]): the
    /// domain is looked up once. Fails if there is no such live domain.
    pub fn grant_peer(&self, granter: DomId) -> Result<GrantPeer, GrantError> {
        self.domain(granter)
            .filter(|d| !d.is_dying())
            .map(GrantPeer::new)
            .ok_or(GrantError::NoSuchDomain(granter))
    }

    /// `GNTTABOP_copy` for dom0: copies `len` bytes from `src` to `dst`, where each
    /// side is a grant (pinned for the copy: read-only for the source, writable for the
    /// destination) or a host buffer. `offset + len` must stay inside the page.
    pub fn grant_copy(
        &self,
        src: CopySrc<'_>,
        dst: CopyDst<'_>,
        len: usize,
    ) -> Result<(), GrantError> {
        match &src {
            CopySrc::Grant(p) => gnttab::check_grant_range(p, len)?,
            CopySrc::Host(b) if b.len() < len => return Err(GrantError::BadCopyArg),
            CopySrc::Host(_) => {}
        }
        match &dst {
            CopyDst::Grant(p) => gnttab::check_grant_range(p, len)?,
            CopyDst::Host(b) if b.len() < len => return Err(GrantError::BadCopyArg),
            CopyDst::Host(_) => {}
        }
        match (src, dst) {
            (CopySrc::Grant(s), CopyDst::Grant(d)) => {
                let sp = self.grant_peer(s.domid)?;
                let dp = if d.domid == s.domid {
                    sp.clone()
                } else {
                    self.grant_peer(d.domid)?
                };
                sp.copy_to(s.gref, s.offset, &dp, d.gref, d.offset, len)
            }
            (CopySrc::Host(b), CopyDst::Grant(d)) => {
                self.grant_peer(d.domid)?
                    .copy_in(d.gref, d.offset, &b[..len])
            }
            (CopySrc::Grant(s), CopyDst::Host(b)) => {
                self.grant_peer(s.domid)?
                    .copy_out(s.gref, s.offset, &mut b[..len])
            }
            (CopySrc::Host(s), CopyDst::Host(d)) => {
                d[..len].copy_from_slice(&s[..len]);
                Ok(())
            }
        }
    }

    /// Live dom0 pins of `granter`'s `gref` (diagnostics, tests).
    pub fn grant_pins(&self, granter: DomId, gref: GrantRef) -> u32 {
        self.domain(granter)
            .map_or(0, |d| gnttab::pin_count(&d, gref))
    }
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        // xenstored may outlive us (someone holds its Arc): it must stop touching rings
        // in guest memory that is about to be unmapped.
        let ids: Vec<u16> = lock(&self.domains).live.keys().copied().collect();
        for id in ids {
            self.xenstored.release_domain(id);
        }
    }
}
