//! The model's side of xenstored: which store the hypervisor owns, and the nodes the
//! toolstack writes for a new domain (as libxl's `libxl__domain_make` and
//! `libxl__build_post` do).
//!
//! Until `crate::xenstored` lands, [`Xenstored`] here is a small stand-in with the
//! same entry points (`new`, `introduce_domain`, `kick`, `release_domain`, `client`)
//! and a plain tree without ring service; only this file changes when the real one
//! arrives.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use hypercall::SharedMem;

use super::domain::{lock, Domain};

/// Callback xenstored uses to notify a guest (send on its store event channel).
pub type StoreNotify = Arc<dyn Fn() + Send + Sync>;

/// Resource limits of the store (stand-in).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quotas {}

/// A store error (stand-in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

#[derive(Clone)]
struct Node {
    value: Vec<u8>,
    perms: Vec<String>,
}

/// Stand-in xenstored: a tree of nodes with permissions, and the introduced domains.
#[derive(Default)]
pub struct Xenstored {
    nodes: Mutex<BTreeMap<String, Node>>,
    domains: Mutex<HashMap<u16, (SharedMem, StoreNotify)>>,
}

impl fmt::Debug for Xenstored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xenstored").finish_non_exhaustive()
    }
}

impl Xenstored {
    /// A new, empty store.
    pub fn new(_quotas: Quotas) -> Arc<Self> {
        let s = Xenstored::default();
        lock(&s.nodes).insert(
            "/".into(),
            Node {
                value: Vec::new(),
                perms: vec!["n0".into()],
            },
        );
        Arc::new(s)
    }

    /// Starts serving `domid`'s store ring.
    pub fn introduce_domain(
        &self,
        domid: u16,
        ring: SharedMem,
        notify: StoreNotify,
    ) -> Result<(), Error> {
        let mut d = lock(&self.domains);
        if d.contains_key(&domid) {
            return Err(Error(format!("domain {domid} already introduced")));
        }
        d.insert(domid, (ring, notify));
        Ok(())
    }

    /// The guest sent on its store event channel.
    pub fn kick(&self, _domid: u16) {}

    /// Stops serving `domid` (before its memory goes away).
    pub fn release_domain(&self, domid: u16) {
        lock(&self.domains).remove(&domid);
    }

    /// Whether `domid` is introduced.
    pub fn is_introduced(&self, domid: u16) -> bool {
        lock(&self.domains).contains_key(&domid)
    }

    /// An in-process client acting as `domid`.
    pub fn client(self: &Arc<Self>, domid: u16) -> LocalClient {
        LocalClient {
            store: self.clone(),
            _domid: domid,
        }
    }
}

/// Stand-in in-process client (no permission checks).
#[derive(Debug, Clone)]
pub struct LocalClient {
    store: Arc<Xenstored>,
    _domid: u16,
}

fn parent(path: &str) -> Option<&str> {
    let i = path.rfind('/')?;
    Some(if i == 0 { "/" } else { &path[..i] })
}

impl LocalClient {
    /// Reads a node.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, Error> {
        lock(&self.store.nodes)
            .get(path)
            .map(|n| n.value.clone())
            .ok_or_else(|| Error("ENOENT".into()))
    }

    /// Writes a node, creating it (and missing parents, with the parent's perms).
    pub fn write(&self, path: &str, value: &[u8]) -> Result<(), Error> {
        let mut nodes = lock(&self.store.nodes);
        let mut missing = Vec::new();
        let mut p = path;
        while !nodes.contains_key(p) {
            missing.push(p.to_string());
            p = parent(p).ok_or_else(|| Error("EINVAL".into()))?;
        }
        let mut perms = nodes.get(p).map(|n| n.perms.clone()).unwrap_or_default();
        for m in missing.into_iter().rev() {
            nodes.insert(
                m.clone(),
                Node {
                    value: Vec::new(),
                    perms: perms.clone(),
                },
            );
            perms = nodes.get(&m).map(|n| n.perms.clone()).unwrap_or_default();
        }
        if let Some(n) = nodes.get_mut(path) {
            n.value = value.to_vec();
        }
        Ok(())
    }

    /// Creates a node with an empty value if missing.
    pub fn mkdir(&self, path: &str) -> Result<(), Error> {
        if lock(&self.store.nodes).contains_key(path) {
            return Ok(());
        }
        self.write(path, b"")
    }

    /// Removes a node and its children.
    pub fn rm(&self, path: &str) -> Result<(), Error> {
        let mut nodes = lock(&self.store.nodes);
        let prefix = format!("{path}/");
        nodes.retain(|k, _| k != path && !k.starts_with(&prefix));
        Ok(())
    }

    /// Lists children names.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, Error> {
        let nodes = lock(&self.store.nodes);
        if !nodes.contains_key(path) {
            return Err(Error("ENOENT".into()));
        }
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        Ok(nodes
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }

    /// Permissions in wire form (`n0`, `r5`, ...).
    pub fn get_perms(&self, path: &str) -> Result<Vec<String>, Error> {
        lock(&self.store.nodes)
            .get(path)
            .map(|n| n.perms.clone())
            .ok_or_else(|| Error("ENOENT".into()))
    }

    /// Sets permissions (wire form).
    pub fn set_perms(&self, path: &str, perms: &[String]) -> Result<(), Error> {
        lock(&self.store.nodes)
            .get_mut(path)
            .map(|n| n.perms = perms.to_vec())
            .ok_or_else(|| Error("ENOENT".into()))
    }
}

/// One node the toolstack writes: path, value, and explicit permissions (wire form)
/// or `None` to inherit the parent's.
pub(crate) struct NodeSpec {
    /// Remove any old subtree first (libxl does for the domain's top directories).
    pub fresh: bool,
    pub path: String,
    pub value: String,
    pub perms: Option<Vec<String>>,
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
    let roperm = Some(vec!["n0".to_string(), format!("r{id}")]);
    let rwperm = Some(vec![format!("n{id}")]);
    let noperm = Some(vec!["n0".to_string()]);
    let mut v = Vec::new();
    for (top, perms) in [(&dp, &roperm), (&vm, &roperm), (&libxl, &noperm)] {
        v.push(NodeSpec {
            fresh: true,
            path: top.clone(),
            value: String::new(),
            perms: perms.clone(),
        });
    }
    let mut node = |path: String, value: String, perms: Option<Vec<String>>| {
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

/// Writes `nodes` as dom0.
pub(crate) fn write_nodes(store: &Arc<Xenstored>, nodes: &[NodeSpec]) -> Result<(), Error> {
    let c = store.client(0);
    for n in nodes {
        if n.fresh {
            c.rm(&n.path)?;
        }
        c.write(&n.path, n.value.as_bytes())?;
        if let Some(p) = &n.perms {
            c.set_perms(&n.path, p)?;
        }
    }
    Ok(())
}

/// Removes the nodes of a destroyed domain.
pub(crate) fn remove_domain_nodes(store: &Arc<Xenstored>, dom: &Domain) {
    let c = store.client(0);
    let id = dom.id().0;
    for p in [
        format!("/local/domain/{id}"),
        format!("/vm/{}", dom.uuid()),
        format!("/libxl/{id}"),
    ] {
        // Missing nodes are fine: removal is best effort.
        let _ = c.rm(&p);
    }
}
