//! Event channels: per-domain 2-level port tables, and dom0's host-side ports.
//!
//! Semantics follow Xen's `common/event_channel.c` and QEMU's `xen_evtchn.c`:
//! - port 0 is never allocated; guest ports are `1..4096` (the 2-level ABI);
//! - `alloc_unbound(remote)` makes a port only `remote` may bind to;
//! - `bind_interdomain` must name an unbound port that allows the binder, and then
//!   conservatively marks the binder's new port pending (events sent before the bind
//!   would otherwise be lost);
//! - `close` frees the port; an interdomain peer becomes unbound (again bindable by us);
//! - `send` on an unbound port is silently dropped; on a free port it is `EINVAL`;
//! - `set_pending` is the 2-level delivery of `xen.h`: the pending bit goes 0→1 on an
//!   unmasked port → the selector bit in `vcpu_info` → `evtchn_upcall_pending` → wake.
//!   Only the first of these transitions wakes; masked ports "lose the edge" and
//!   `unmask` re-raises.
//!
//! All of it lives behind one lock in the [`crate::Hypervisor`] (interdomain
//! operations touch two tables). Operations never call out while that lock is held:
//! they return `Effects` (dom0 handlers to call, domains to wake) that the caller runs
//! after unlocking, so a handler may send back without deadlocking.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hypercall::abi::evtchn as abi;
use hypercall::abi::shared_info as si;
use hypercall::{DomId, Port, PAGE_SIZE};

use super::domain::EventSignal;
use super::mem::GuestRegion;

/// A host-side (dom0) event handler: called (on some thread, never under a model lock)
/// each time the remote end sends on the port.
pub type Dom0Handler = Arc<dyn Fn() + Send + Sync>;

/// Ports a guest has (2-level ABI).
pub const GUEST_PORTS: u32 = abi::NR_PORTS_2L;
/// Most ports dom0 (the host) may have open at once.
pub const DOM0_MAX_PORTS: u32 = 1 << 17;
/// `NR_VIRQS`
pub const NR_VIRQS: u32 = 24;

/// Why an event-channel operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvtchnError {
    /// Port 0, out of range, or not in a state that allows the operation.
    #[error("bad event channel port {}", .0 .0)]
    BadPort(Port),
    /// No such domain (or it is dying).
    #[error("no domain {}", .0 .0)]
    NoSuchDomain(DomId),
    /// The remote port is not unbound for us (bind_interdomain).
    #[error("port {} of domain {} is not unbound for us", .port .0, .remote .0)]
    NotBindable {
        /// The remote domain.
        remote: DomId,
        /// The remote port.
        port: Port,
    },
    /// All ports are in use.
    #[error("no free event channel port")]
    NoFreePort,
    /// The virtual IRQ is already bound on that vCPU.
    #[error("virq {0} already bound")]
    VirqBound(u32),
    /// Unknown virtual IRQ.
    #[error("bad virq {0}")]
    BadVirq(u32),
    /// No such vCPU.
    #[error("no vcpu {0}")]
    BadVcpu(u32),
    /// The caller may not act for that domain.
    #[error("no permission for domain {}", .0 .0)]
    PermissionDenied(DomId),
}

impl EvtchnError {
    /// The negated errno Xen returns for this error.
    pub fn errno(&self) -> isize {
        use hypercall::abi::errno::*;
        -match self {
            EvtchnError::BadPort(_) | EvtchnError::NotBindable { .. } => EINVAL,
            EvtchnError::BadVirq(_) => EINVAL,
            EvtchnError::NoSuchDomain(_) => ::hypercall::abi::errno::ESRCH,
            EvtchnError::NoFreePort => ENOSPC,
            EvtchnError::VirqBound(_) => EEXIST,
            EvtchnError::BadVcpu(_) => ENOENT,
            EvtchnError::PermissionDenied(_) => EPERM,
        }
    }
}

/// State of one port (`EVTCHNSTAT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Not allocated.
    Closed,
    /// Allocated; `remote` may bind to it.
    Unbound {
        /// Who may bind.
        remote: DomId,
    },
    /// Connected to `remote`'s `remote_port`.
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port.
        remote_port: Port,
    },
    /// Bound to a virtual IRQ.
    Virq {
        /// The virtual IRQ.
        virq: u32,
        /// The vCPU.
        vcpu: u32,
    },
    /// An inter-processor (here: loopback) channel.
    Ipi {
        /// The vCPU notified.
        vcpu: u32,
    },
}

/// What to do once the event-channel lock is dropped.
#[derive(Default)]
#[must_use = "effects must be run after the lock is released"]
pub(crate) struct Effects {
    handlers: Few<Dom0Handler>,
    wakes: Few<(Arc<EventSignal>, Option<Dom0Handler>)>,
}

/// A list whose first item is kept inline: an event-channel send (one effect)
/// allocates nothing.
pub(crate) struct Few<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<T> Few<T> {
    pub(crate) fn push(&mut self, v: T) {
        if self.first.is_none() {
            self.first = Some(v);
        } else {
            self.rest.push(v);
        }
    }
}

impl<T> IntoIterator for Few<T> {
    type Item = T;
    type IntoIter = std::iter::Chain<std::option::IntoIter<T>, std::vec::IntoIter<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

impl Effects {
    /// Calls the handlers and wakes the domains. Call with no model lock held.
    pub(crate) fn run(self) {
        for (sig, hook) in self.wakes {
            sig.raise();
            if let Some(h) = hook {
                h();
            }
        }
        for h in self.handlers {
            h();
        }
    }
}

/// One guest's ports and where its `shared_info` currently is.
pub(crate) struct GuestPorts {
    ports: Vec<PortState>,
    shinfo: GuestRegion,
    signal: Arc<EventSignal>,
    upcall_hook: Option<Dom0Handler>,
    vcpus: u32,
    virqs: HashMap<(u32, u32), Port>,
}

struct Dom0Port {
    state: PortState,
    handler: Option<Dom0Handler>,
}

/// The event-channel state of the whole machine.
pub(crate) struct EvtchnState {
    /// By domain id. Ordered, not hashed: every `EVTCHNOP_send` looks its
    /// domain up, and a few comparisons of small integers cost less than hashing
    /// one with SipHash (the block bench's depth-1 reads make one send each).
    guests: BTreeMap<u16, GuestPorts>,
    dom0: Vec<Dom0Port>,
}

/// A port number's word index and bit in the 2-level bitmaps.
fn word_bit(port: Port) -> (usize, u64) {
    ((port.0 / 64) as usize, 1u64 << (port.0 % 64))
}

fn guest_port_valid(port: Port) -> bool {
    port.0 != 0 && port.0 < GUEST_PORTS
}

impl EvtchnState {
    pub(crate) fn new() -> Self {
        // Port 0 is never handed out.
        let dom0 = vec![Dom0Port {
            state: PortState::Closed,
            handler: None,
        }];
        EvtchnState {
            guests: BTreeMap::new(),
            dom0,
        }
    }

    /// Registers a new guest whose shared_info is (for now) `shinfo`.
    pub(crate) fn add_guest(
        &mut self,
        dom: DomId,
        shinfo: GuestRegion,
        signal: Arc<EventSignal>,
        vcpus: u32,
    ) {
        self.guests.insert(
            dom.0,
            GuestPorts {
                ports: vec![PortState::Closed; GUEST_PORTS as usize],
                shinfo,
                signal,
                upcall_hook: None,
                vcpus,
                virqs: HashMap::new(),
            },
        );
    }

    /// Closes every port of `dom` (peers become unbound) and forgets it.
    pub(crate) fn remove_guest(&mut self, dom: DomId) {
        for p in 1..GUEST_PORTS {
            // Errors only mean "already closed".
            let _ = self.close(dom, Port(p));
        }
        self.guests.remove(&dom.0);
    }

    pub(crate) fn set_upcall_hook(&mut self, dom: DomId, hook: Option<Dom0Handler>) {
        if let Some(g) = self.guests.get_mut(&dom.0) {
            g.upcall_hook = hook;
        }
    }

    fn guest(&self, dom: DomId) -> Result<&GuestPorts, EvtchnError> {
        self.guests
            .get(&dom.0)
            .ok_or(EvtchnError::NoSuchDomain(dom))
    }

    fn guest_mut(&mut self, dom: DomId) -> Result<&mut GuestPorts, EvtchnError> {
        self.guests
            .get_mut(&dom.0)
            .ok_or(EvtchnError::NoSuchDomain(dom))
    }

    /// Where `dom`'s shared_info is now.
    pub(crate) fn shared_info(&self, dom: DomId) -> Result<GuestRegion, EvtchnError> {
        Ok(self.guest(dom)?.shinfo.clone())
    }

    /// Moves `dom`'s shared_info to `page` (the guest mapped it there), carrying over
    /// its contents.
    pub(crate) fn move_shared_info(
        &mut self,
        dom: DomId,
        page: GuestRegion,
    ) -> Result<(), EvtchnError> {
        let g = self.guest_mut(dom)?;
        if g.shinfo.mem().as_ptr() != page.mem().as_ptr() {
            page.mem().copy_from(0, &g.shinfo.mem(), 0, PAGE_SIZE);
            g.shinfo = page;
        }
        Ok(())
    }

    /// State of `dom`'s `port`.
    pub(crate) fn port_state(&self, dom: DomId, port: Port) -> Result<PortState, EvtchnError> {
        if dom == DomId::DOM0 {
            return self
                .dom0
                .get(port.0 as usize)
                .filter(|_| port.0 != 0)
                .map(|p| p.state)
                .ok_or(EvtchnError::BadPort(port));
        }
        if !guest_port_valid(port) {
            return Err(EvtchnError::BadPort(port));
        }
        Ok(self.guest(dom)?.ports[port.0 as usize])
    }

    fn alloc_guest_port(g: &mut GuestPorts, state: PortState) -> Result<Port, EvtchnError> {
        let idx = g
            .ports
            .iter()
            .skip(1)
            .position(|s| *s == PortState::Closed)
            .ok_or(EvtchnError::NoFreePort)?
            + 1;
        g.ports[idx] = state;
        // A stale pending bit from an earlier user of this port must not leak into the
        // new binding.
        let (w, b) = word_bit(Port(idx as u32));
        g.shinfo.mem().fetch_and_u64(si::EVTCHN_PENDING + w * 8, !b);
        Ok(Port(idx as u32))
    }

    fn alloc_dom0_port(
        &mut self,
        state: PortState,
        handler: Dom0Handler,
    ) -> Result<Port, EvtchnError> {
        if let Some(idx) = self
            .dom0
            .iter()
            .skip(1)
            .position(|p| p.state == PortState::Closed)
        {
            let idx = idx + 1;
            self.dom0[idx] = Dom0Port {
                state,
                handler: Some(handler),
            };
            return Ok(Port(idx as u32));
        }
        if self.dom0.len() >= DOM0_MAX_PORTS as usize {
            return Err(EvtchnError::NoFreePort);
        }
        self.dom0.push(Dom0Port {
            state,
            handler: Some(handler),
        });
        Ok(Port(self.dom0.len() as u32 - 1))
    }

    /// Marks `dom`'s `port` pending; wakes `dom` if this raised its upcall.
    fn set_pending(&self, dom: DomId, port: Port, fx: &mut Effects) {
        let Some(g) = self.guests.get(&dom.0) else {
            return;
        };
        if !guest_port_valid(port) {
            return;
        }
        let (w, b) = word_bit(port);
        let s = g.shinfo.mem();
        if s.fetch_or_u64(si::EVTCHN_PENDING + w * 8, b) & b != 0 {
            return;
        }
        if s.load_u64(si::EVTCHN_MASK + w * 8) & b != 0 {
            if g.signal.has_pollers() {
                fx.wakes.push((g.signal.clone(), None));
            }
            return;
        }
        Self::raise_selector(g, w, fx);
    }

    /// The second half of delivery: selector bit, then upcall flag, then wake.
    fn raise_selector(g: &GuestPorts, word: usize, fx: &mut Effects) {
        let s = g.shinfo.mem();
        let vi = si::vcpu_info(0);
        let sel = 1u64 << word;
        if s.fetch_or_u64(vi + si::VCPU_PENDING_SEL, sel) & sel != 0 {
            return;
        }
        if s.swap_u8(vi + si::VCPU_UPCALL_PENDING, 1) != 0 {
            return;
        }
        fx.wakes.push((g.signal.clone(), g.upcall_hook.clone()));
    }

    /// Delivers to the other end of an interdomain channel.
    fn deliver(&self, remote: DomId, remote_port: Port, fx: &mut Effects) {
        if remote == DomId::DOM0 {
            if let Some(Dom0Port {
                handler: Some(h), ..
            }) = self.dom0.get(remote_port.0 as usize)
            {
                fx.handlers.push(h.clone());
            }
        } else {
            self.set_pending(remote, remote_port, fx);
        }
    }

    // ---- guest operations ------------------------------------------------------------

    /// `EVTCHNOP_alloc_unbound` for `dom`, bindable by `remote`.
    pub(crate) fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<Port, EvtchnError> {
        let g = self.guest_mut(dom)?;
        Self::alloc_guest_port(g, PortState::Unbound { remote })
    }

    /// `EVTCHNOP_bind_interdomain` for `dom`.
    pub(crate) fn bind_interdomain(
        &mut self,
        dom: DomId,
        remote: DomId,
        remote_port: Port,
        fx: &mut Effects,
    ) -> Result<Port, EvtchnError> {
        let bindable = PortState::Unbound { remote: dom };
        if remote == DomId::DOM0 {
            let ok = self
                .dom0
                .get(remote_port.0 as usize)
                .is_some_and(|p| remote_port.0 != 0 && p.state == bindable);
            if !ok {
                return Err(EvtchnError::NotBindable {
                    remote,
                    port: remote_port,
                });
            }
        } else {
            if !guest_port_valid(remote_port) {
                return Err(EvtchnError::BadPort(remote_port));
            }
            if self.guest(remote)?.ports[remote_port.0 as usize] != bindable {
                return Err(EvtchnError::NotBindable {
                    remote,
                    port: remote_port,
                });
            }
        }
        let g = self.guest_mut(dom)?;
        let local = Self::alloc_guest_port(
            g,
            PortState::Interdomain {
                remote,
                remote_port,
            },
        )?;
        let peer = PortState::Interdomain {
            remote: dom,
            remote_port: local,
        };
        if remote == DomId::DOM0 {
            self.dom0[remote_port.0 as usize].state = peer;
        } else {
            self.guest_mut(remote)?.ports[remote_port.0 as usize] = peer;
        }
        self.set_pending(dom, local, fx);
        Ok(local)
    }

    /// `EVTCHNOP_bind_virq`.
    pub(crate) fn bind_virq(
        &mut self,
        dom: DomId,
        virq: u32,
        vcpu: u32,
    ) -> Result<Port, EvtchnError> {
        if virq >= NR_VIRQS {
            return Err(EvtchnError::BadVirq(virq));
        }
        let g = self.guest_mut(dom)?;
        if vcpu >= g.vcpus {
            return Err(EvtchnError::BadVcpu(vcpu));
        }
        if g.virqs.contains_key(&(virq, vcpu)) {
            return Err(EvtchnError::VirqBound(virq));
        }
        let port = Self::alloc_guest_port(g, PortState::Virq { virq, vcpu })?;
        g.virqs.insert((virq, vcpu), port);
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`.
    pub(crate) fn bind_ipi(&mut self, dom: DomId, vcpu: u32) -> Result<Port, EvtchnError> {
        let g = self.guest_mut(dom)?;
        if vcpu >= g.vcpus {
            return Err(EvtchnError::BadVcpu(vcpu));
        }
        Self::alloc_guest_port(g, PortState::Ipi { vcpu })
    }

    /// `EVTCHNOP_close`.
    pub(crate) fn close(&mut self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        if !guest_port_valid(port) {
            return Err(EvtchnError::BadPort(port));
        }
        let g = self.guest_mut(dom)?;
        let state = g.ports[port.0 as usize];
        match state {
            PortState::Closed => return Err(EvtchnError::BadPort(port)),
            PortState::Virq { virq, vcpu } => {
                g.virqs.remove(&(virq, vcpu));
            }
            _ => {}
        }
        g.ports[port.0 as usize] = PortState::Closed;
        let (w, b) = word_bit(port);
        g.shinfo.mem().fetch_and_u64(si::EVTCHN_PENDING + w * 8, !b);
        if let PortState::Interdomain {
            remote,
            remote_port,
        } = state
        {
            self.unlink_peer(remote, remote_port, dom, port);
        }
        Ok(())
    }

    /// The peer of a closed interdomain port becomes unbound (bindable by `closer`).
    fn unlink_peer(&mut self, remote: DomId, remote_port: Port, closer: DomId, closed: Port) {
        let expected = PortState::Interdomain {
            remote: closer,
            remote_port: closed,
        };
        let unbound = PortState::Unbound { remote: closer };
        if remote == DomId::DOM0 {
            if let Some(p) = self.dom0.get_mut(remote_port.0 as usize) {
                if p.state == expected {
                    p.state = unbound;
                }
            }
        } else if let Some(g) = self.guests.get_mut(&remote.0) {
            if let Some(s) = g.ports.get_mut(remote_port.0 as usize) {
                if *s == expected {
                    *s = unbound;
                }
            }
        }
    }

    /// `EVTCHNOP_send` from `dom`.
    pub(crate) fn send(&self, dom: DomId, port: Port, fx: &mut Effects) -> Result<(), EvtchnError> {
        match self.port_state(dom, port)? {
            PortState::Interdomain {
                remote,
                remote_port,
            } => {
                self.deliver(remote, remote_port, fx);
                Ok(())
            }
            PortState::Ipi { .. } => {
                self.set_pending(dom, port, fx);
                Ok(())
            }
            // Xen silently drops sends on unbound ports.
            PortState::Unbound { .. } => Ok(()),
            PortState::Closed | PortState::Virq { .. } => Err(EvtchnError::BadPort(port)),
        }
    }

    /// `EVTCHNOP_unmask`: clear the mask bit; if the port is pending, re-raise.
    pub(crate) fn unmask(
        &self,
        dom: DomId,
        port: Port,
        fx: &mut Effects,
    ) -> Result<(), EvtchnError> {
        if !guest_port_valid(port) {
            return Err(EvtchnError::BadPort(port));
        }
        let g = self.guest(dom)?;
        let (w, b) = word_bit(port);
        let s = g.shinfo.mem();
        s.fetch_and_u64(si::EVTCHN_MASK + w * 8, !b);
        if s.load_u64(si::EVTCHN_PENDING + w * 8) & b != 0 {
            Self::raise_selector(g, w, fx);
        }
        Ok(())
    }

    /// Raises virtual IRQ `virq` on vCPU `vcpu` of `dom`, if bound.
    pub(crate) fn raise_virq(&self, dom: DomId, virq: u32, vcpu: u32, fx: &mut Effects) {
        if let Some(port) = self
            .guests
            .get(&dom.0)
            .and_then(|g| g.virqs.get(&(virq, vcpu)).copied())
        {
            self.set_pending(dom, port, fx);
        }
    }

    /// Whether `port` of `dom` is pending (for `SCHEDOP_poll`).
    pub(crate) fn is_pending(&self, dom: DomId, port: Port) -> bool {
        if !guest_port_valid(port) {
            return false;
        }
        let Ok(g) = self.guest(dom) else {
            return false;
        };
        let (w, b) = word_bit(port);
        g.shinfo.mem().load_u64(si::EVTCHN_PENDING + w * 8) & b != 0
    }

    /// Whether `dom`'s vCPU 0 has an upcall pending.
    pub(crate) fn upcall_pending(&self, dom: DomId) -> bool {
        self.guest(dom).is_ok_and(|g| {
            g.shinfo
                .mem()
                .load_u8(si::vcpu_info(0) + si::VCPU_UPCALL_PENDING)
                != 0
        })
    }

    /// The guest OS's upcall handler, done on the guest's behalf (in-process runner):
    /// clears `evtchn_upcall_pending`, the selector, and the pending bit of every
    /// unmasked port, recording them in `delivered` (a 4096-bit map). Masked pending
    /// ports stay pending (an unmask re-raises them). Returns whether anything was
    /// pending.
    pub(crate) fn ack_upcall(&self, dom: DomId, delivered: &mut [u64; 64]) -> bool {
        let Ok(g) = self.guest(dom) else {
            return false;
        };
        let s = g.shinfo.mem();
        let vi = si::vcpu_info(0);
        let mut any = s.swap_u8(vi + si::VCPU_UPCALL_PENDING, 0) != 0;
        any |= s.swap_u64(vi + si::VCPU_PENDING_SEL, 0) != 0;
        for (w, slot) in delivered.iter_mut().enumerate() {
            let pend = s.load_u64(si::EVTCHN_PENDING + w * 8);
            if pend == 0 {
                continue;
            }
            let clear = pend & !s.load_u64(si::EVTCHN_MASK + w * 8);
            if clear != 0 {
                let was = s.fetch_and_u64(si::EVTCHN_PENDING + w * 8, !clear);
                *slot |= was & clear;
                any = true;
            }
        }
        any
    }

    /// `EVTCHNOP_status` for `dom`'s `port`.
    pub(crate) fn status(&self, dom: DomId, port: Port) -> Result<abi::Status, EvtchnError> {
        let state = self.port_state(dom, port)?;
        let mut st = abi::Status {
            dom: dom.0,
            port: port.0,
            ..Default::default()
        };
        match state {
            PortState::Closed => st.status = abi::STATUS_CLOSED,
            PortState::Unbound { remote } => {
                st.status = abi::STATUS_UNBOUND;
                st.u_dom = remote.0;
            }
            PortState::Interdomain {
                remote,
                remote_port,
            } => {
                st.status = abi::STATUS_INTERDOMAIN;
                st.u_dom = remote.0;
                st.u_port = remote_port.0;
            }
            PortState::Virq { virq, vcpu } => {
                st.status = abi::STATUS_VIRQ;
                st.vcpu = vcpu;
                st.u_dom = (virq & 0xffff) as u16;
                st.u_port = 0;
                // The union's first u32 is the virq: low half in u_dom, high in _pad2.
                st._pad2 = (virq >> 16) as u16;
            }
            PortState::Ipi { vcpu } => {
                st.status = abi::STATUS_IPI;
                st.vcpu = vcpu;
            }
        }
        Ok(st)
    }

    // ---- dom0 (host) operations ------------------------------------------------------

    /// A dom0 port that guest `remote` may bind to.
    pub(crate) fn dom0_alloc_unbound(
        &mut self,
        remote: DomId,
        handler: Dom0Handler,
    ) -> Result<Port, EvtchnError> {
        self.guest(remote)?;
        self.alloc_dom0_port(PortState::Unbound { remote }, handler)
    }

    /// Binds a new dom0 port to guest `remote`'s unbound `remote_port`.
    pub(crate) fn dom0_bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: Port,
        handler: Dom0Handler,
        fx: &mut Effects,
    ) -> Result<Port, EvtchnError> {
        if remote == DomId::DOM0 {
            return Err(EvtchnError::NoSuchDomain(remote));
        }
        if !guest_port_valid(remote_port) {
            return Err(EvtchnError::BadPort(remote_port));
        }
        if self.guest(remote)?.ports[remote_port.0 as usize]
            != (PortState::Unbound {
                remote: DomId::DOM0,
            })
        {
            return Err(EvtchnError::NotBindable {
                remote,
                port: remote_port,
            });
        }
        let local = self.alloc_dom0_port(
            PortState::Interdomain {
                remote,
                remote_port,
            },
            handler.clone(),
        )?;
        self.guest_mut(remote)?.ports[remote_port.0 as usize] = PortState::Interdomain {
            remote: DomId::DOM0,
            remote_port: local,
        };
        // As Xen does for the binder: notify once in case the guest sent before.
        fx.handlers.push(handler);
        Ok(local)
    }

    /// dom0 sends on its `port`.
    pub(crate) fn dom0_send(&self, port: Port, fx: &mut Effects) -> Result<(), EvtchnError> {
        match self.port_state(DomId::DOM0, port)? {
            PortState::Interdomain {
                remote,
                remote_port,
            } => {
                self.set_pending(remote, remote_port, fx);
                Ok(())
            }
            PortState::Unbound { .. } => Ok(()),
            _ => Err(EvtchnError::BadPort(port)),
        }
    }

    /// dom0 closes its `port`; a bound guest peer becomes unbound.
    pub(crate) fn dom0_close(&mut self, port: Port) -> Result<(), EvtchnError> {
        let state = self.port_state(DomId::DOM0, port)?;
        if state == PortState::Closed {
            return Err(EvtchnError::BadPort(port));
        }
        self.dom0[port.0 as usize] = Dom0Port {
            state: PortState::Closed,
            handler: None,
        };
        if let PortState::Interdomain {
            remote,
            remote_port,
        } = state
        {
            self.unlink_peer(remote, remote_port, DomId::DOM0, port);
        }
        Ok(())
    }
}
