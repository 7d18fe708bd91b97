//! A hostile frontend's side of a device, for the backend targets: one guest domain
//! on a fresh in-process hypervisor, a grant table, and the xenbus handshake done
//! by hand (`FrontendHandshake`), after which the fuzzer writes whatever it likes
//! into the shared rings and the backend (stepped, on this thread) reads it.

use std::sync::Arc;
use std::time::Duration;

use hypercall::gnttab::GrantTable;
use hypercall::{DomId, GrantRef, Port, SharedPages, Xen};
use xen_model::inproc::InProcGuest;
use xen_model::{Domain, DomainSpec, Hypervisor, HypervisorConfig};
use xenbus::frontend::FrontendHandshake;
use xenbus::{Path, Store, XenbusState, Xenstore};

/// Grant refs of the guest's table (one frame).
pub const NG: usize = 512;
/// Handshake step timeout (generous: the backend's control thread runs beside us).
pub const STEP: Duration = Duration::from_secs(20);

/// A guest domain to play the frontend from this thread.
pub struct Guest {
    /// The hypervisor (xenstored served inline).
    pub hv: Arc<Hypervisor>,
    /// The guest's domain.
    pub dom: Arc<Domain>,
    /// Its platform, driven from this thread.
    pub guest: Arc<InProcGuest>,
    /// Its grant table.
    pub table: Box<GrantTable<NG>>,
}

impl Guest {
    /// A fresh hypervisor with one 8 MiB guest.
    pub fn new(name: &str) -> Guest {
        let hv = Hypervisor::new(HypervisorConfig {
            xenstored_inline: true,
            ..HypervisorConfig::default()
        });
        let dom = hv.create_domain(DomainSpec::new(name, 8)).expect("domain");
        let guest = InProcGuest::new(hv.clone(), dom.clone());
        let table = Box::new(GrantTable::setup(&*guest, 1).expect("grant table"));
        Guest {
            hv,
            dom,
            guest,
            table,
        }
    }

    /// Allocates `n` zeroed pages (they go with the domain at the end of the run).
    pub fn pages(&self, n: usize) -> SharedPages {
        SharedPages::alloc(&*self.guest, n).expect("guest pages")
    }

    /// Grants page `i` of `mem` to dom0.
    pub fn grant(&self, mem: &SharedPages, i: usize, readonly: bool) -> GrantRef {
        let gfn = mem.page_gfn(&*self.guest, i).expect("guest page");
        self.table
            .grant_access(DomId(0), gfn, readonly)
            .expect("free grant ref")
    }

    /// The grant refs a hostile request may name, in the order the targets index
    /// them (keep it: the corpora depend on it): one per page of `data` (page 1
    /// read-only), `ring` (a ring page, not data), one granted to another domain
    /// and one already ended. The data pages' refs are also added to `refs`, the
    /// list [`Guest::still_mapped`] checks at the end.
    pub fn hostile_grants(
        &self,
        data: &SharedPages,
        pages: usize,
        ring: GrantRef,
        refs: &mut Vec<GrantRef>,
    ) -> Vec<GrantRef> {
        let mut pick = Vec::with_capacity(pages + 3);
        for i in 0..pages {
            let r = self.grant(data, i, i == 1);
            pick.push(r);
            refs.push(r);
        }
        pick.push(ring);
        let gfn = data.page_gfn(&*self.guest, 0).expect("guest page");
        let foreign = self
            .table
            .grant_access(DomId(self.dom.id().0 + 3), gfn, false)
            .expect("free grant ref");
        pick.push(foreign);
        let ended = self.grant(data, 2, false);
        self.table
            .end_access(ended)
            .expect("ending an unused grant");
        pick.push(ended);
        pick
    }

    /// Every grant ref this guest made that dom0 still has mapped (`[]` after a
    /// backend's teardown, or grants leaked).
    pub fn still_mapped(&self, refs: &[GrantRef]) -> Vec<GrantRef> {
        refs.iter()
            .copied()
            .filter(|&r| self.hv.grant_pins(self.dom.id(), r) > 0)
            .collect()
    }
}

/// A grant ref for a request: one of `pick` (by the fuzzer's byte), or a made-up
/// number.
pub fn pick_gref(pick: &[GrantRef], c: &mut crate::Cursor<'_>) -> u32 {
    let k = c.u8();
    match pick.get(usize::from(k % 10)) {
        Some(r) => r.0,
        None => u32::from(k) << 8 | u32::from(c.u8()),
    }
}

/// The frontend's half of the handshake on `node` (e.g. `device/vbd/51712`): waits
/// for the backend's InitWait, allocates an event channel, publishes `keys` (plus
/// `event-channel`) with `state`, and waits for Connected. `None` if the backend
/// refused (closed) or did not get there in time.
pub fn connect(
    g: &Guest,
    xs: &mut Xenstore<&InProcGuest>,
    node: &str,
    keys: &[(&str, String)],
    state: XenbusState,
) -> Option<(FrontendHandshake, Port)> {
    let mut hs = FrontendHandshake::new(node).ok()?;
    hs.start(xs).ok()?;
    hs.wait_for_backend(xs, STEP).ok()?;
    let port = Xen(&*g.guest).evtchn_alloc_unbound(DomId(0)).ok()?;
    hs.publish(xs, state, |tx, node| {
        tx.write_str(&Path::join(node, "event-channel")?, &port.0.to_string())?;
        for (k, v) in keys {
            tx.write_str(&Path::join(node, k)?, v)?;
        }
        Ok(())
    })
    .ok()?;
    hs.wait_connected(xs, STEP).ok()?;
    Some((hs, port))
}
