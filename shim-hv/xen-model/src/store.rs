//! The model's side of xenstored: which store the hypervisor owns, and the nodes the
//! toolstack writes for a new domain (as libxl's `libxl__domain_make` and
//! `libxl__build_post` do).
//!
//! The nodes are written by a dom0 [`LocalClient`] in one transaction (retried on
//! `EAGAIN` a bounded number of times), as libxl does.

use std::sync::Arc;

use xenstored::{Access, Errno, Error, LocalClient, Perm, TxId, Xenstored};

use super::domain::Domain;

/// Callback xenstored uses to notify a guest (send on its store event channel).
pub type StoreNotify = Arc<dyn Fn() + Send + Sync>;

/// Attempts of the domain-creation transaction before giving up.
const TX_ATTEMPTS: usize = 16;

/// One node the toolstack writes: path, value, and explicit permissions (wire form)
/// or `None` to inherit the parent's.
pub(crate) struct NodeSpec {
    /// Remove any old subtree first (libxl does for the domain's top directories).
    pub fresh: bool,
    pub path: String,
    pub value: String,
    pub perms: Option<Vec<Perm>>,
}

/// The nodes libxl writes for a new PVH domain (`libxl__domain_make`,
/// `libxl__build_post`), adapted: dom0 owns `/local/domain/N` (guest may read), the
/// guest owns `control/shutdown`, `control/feature-*`, `data`, `device/suspend/...`,
/// `drivers`, `feature`, `attr`, `error`.
pub(crate) fn domain_nodes(dom: &Domain, memory_kib: u64) -> Vec<NodeSpec> {
    let id = dom.id().0;
    let dp = format!("/local/domain/{id}");
    let vm = format!("/vm/{}", dom.uuid());
    let libxl = format!("/libxl/{id}");
    let roperm = Some(vec![
        Perm::new(0, Access::None),
        Perm::new(id, Access::Read),
    ]);
    let rwperm = Some(vec![Perm::new(id, Access::None)]);
    let noperm = Some(vec![Perm::new(0, Access::None)]);
    let mut v = Vec::new();
    for (top, perms) in [(&dp, &roperm), (&vm, &roperm), (&libxl, &noperm)] {
        v.push(NodeSpec {
            fresh: true,
            path: top.clone(),
            value: String::new(),
            perms: perms.clone(),
        });
    }
    let mut node = |path: String, value: String, perms: Option<Vec<Perm>>| {
        v.push(NodeSpec {
            fresh: false,
            path,
            value,
            perms,
        });
    };
    node(format!("{libxl}/device"), String::new(), noperm);
    node(format!("{libxl}/type"), "pvh".into(), None);
    node(format!("{dp}/vm"), vm.clone(), None);
    node(format!("{dp}/name"), dom.name().into(), None);
    node(format!("{vm}/name"), dom.name().into(), None);
    node(format!("{vm}/uuid"), dom.uuid().to_string(), None);
    let start = dom
        .created()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| format!("{}.{:02}", d.as_secs(), d.subsec_millis() / 10))
        .unwrap_or_default();
    node(format!("{vm}/start_time"), start, None);
    for sub in ["cpu", "memory", "device", "control"] {
        node(format!("{dp}/{sub}"), String::new(), roperm.clone());
    }
    for sub in [
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "control/sysrq",
        "device/suspend/event-channel",
        "data",
        "drivers",
        "feature",
        "attr",
        "error",
    ] {
        node(format!("{dp}/{sub}"), String::new(), rwperm.clone());
    }
    node(
        format!("{dp}/control/platform-feature-multiprocessor-suspend"),
        "1".into(),
        None,
    );
    node(
        format!("{dp}/control/platform-feature-xs_reset_watches"),
        "1".into(),
        None,
    );
    node(format!("{dp}/domid"), id.to_string(), None);
    for cpu in 0..dom.vcpus() {
        node(
            format!("{dp}/cpu/{cpu}/availability"),
            "online".into(),
            None,
        );
    }
    node(
        format!("{dp}/memory/static-max"),
        memory_kib.to_string(),
        None,
    );
    node(format!("{dp}/memory/target"), memory_kib.to_string(), None);
    node(format!("{dp}/memory/videoram"), "-1".into(), None);
    node(
        format!("{dp}/store/port"),
        dom.store().port.0.to_string(),
        None,
    );
    node(
        format!("{dp}/store/ring-ref"),
        dom.store().gfn.0.to_string(),
        None,
    );
    node(
        format!("{dp}/console/port"),
        dom.console().port.0.to_string(),
        None,
    );
    node(
        format!("{dp}/console/ring-ref"),
        dom.console().gfn.0.to_string(),
        None,
    );
    node(format!("{dp}/console/limit"), "1048576".into(), None);
    node(format!("{dp}/console/type"), "xenconsoled".into(), None);
    v
}

/// Writes `nodes` as dom0, in one transaction.
pub(crate) fn write_nodes(store: &Arc<Xenstored>, nodes: &[NodeSpec]) -> Result<(), Error> {
    let c = store.client(0);
    let mut last = None;
    for _ in 0..TX_ATTEMPTS {
        let tx = c.transaction_start()?;
        if let Err(e) = write_in(&c, tx, nodes) {
            // Aborting cannot make things worse; the write error is what matters.
            let _ = c.transaction_end(tx, false);
            return Err(e);
        }
        match c.transaction_end(tx, true) {
            Ok(()) => return Ok(()),
            Err(e) if e.errno() == Some(Errno::EAGAIN) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(Error::BadReply {
        op: "TRANSACTION_END",
        detail: "no attempt made".into(),
    }))
}

fn write_in(c: &LocalClient, tx: TxId, nodes: &[NodeSpec]) -> Result<(), Error> {
    for n in nodes {
        if n.fresh {
            match c.rm(tx, &n.path) {
                Err(e) if e.errno() != Some(Errno::ENOENT) => return Err(e),
                _ => {}
            }
        }
        c.write(tx, &n.path, n.value.as_bytes())?;
        if let Some(p) = &n.perms {
            c.set_perms(tx, &n.path, p)?;
        }
    }
    Ok(())
}

/// Removes the nodes of a destroyed domain (best effort).
pub(crate) fn remove_domain_nodes(store: &Arc<Xenstored>, dom: &Domain) {
    let c = store.client(0);
    let id = dom.id().0;
    for p in [
        format!("/local/domain/{id}"),
        format!("/vm/{}", dom.uuid()),
        format!("/libxl/{id}"),
    ] {
        // Missing nodes are fine.
        let _ = c.rm(TxId::NONE, &p);
    }
}
