//! The node tree, transactions and the data operations (READ, WRITE, MKDIR, RM,
//! DIRECTORY, DIRECTORY_PART, GET_PERMS, SET_PERMS).
//!
//! Semantics follow C xenstored 4.17 (`xenstored_core.c`, `xenstored_transaction.c`):
//! - every node has a generation count, set from a global counter on each change;
//! - a transaction records each node it touches (read or written) with the generation
//!   seen at first access and keeps its own copy; at commit every touched node must still
//!   have that generation (else `EAGAIN`), then the modified copies replace the global
//!   nodes;
//! - missing permission is reported as `EACCES`, a missing node as `ENOENT` only if the
//!   nearest existing ancestor grants the access asked for (no existence leak);
//! - new nodes inherit their parent's permissions; an unprivileged creator becomes the
//!   owner;
//! - quotas apply to unprivileged domains only.
//!
//! Every operation checks everything first and then changes the tree, so a refused
//! request leaves no partial change behind.

use super::path::{ancestors, basename, child, parent};
use super::perms::{perm_for, Perm, Who, READ, WRITE, WRITE_OWNER};
use super::{Errno, Quotas};
use hypercall::abi::xs_wire::PAYLOAD_MAX;
use std::collections::{BTreeMap, HashMap};

/// Size of C xenstored's per-node record header (`struct xs_tdb_record_hdr`), used for
/// the node-size quota so that limits mean what they mean there.
const RECORD_HDR: usize = 24;
/// Size of one permission entry in that record.
const RECORD_PERM: usize = 8;

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    /// The value (binary).
    pub value: Vec<u8>,
    /// Permissions; never empty (the first entry is the owner).
    pub perms: Vec<Perm>,
    /// Child names in creation order.
    pub children: Vec<String>,
    /// Generation count of the last change.
    pub generation: u64,
}

impl Node {
    /// The owning domain.
    pub fn owner(&self) -> u16 {
        self.perms.first().map_or(0, |p| p.domid)
    }

    fn children_len(&self) -> usize {
        self.children.iter().map(|c| c.len() + 1).sum()
    }

    /// The record size as C xenstored accounts it for the node-size quota.
    pub fn record_size(&self) -> usize {
        RECORD_HDR + RECORD_PERM * self.perms.len() + self.value.len() + self.children_len()
    }

    /// The children as on the wire: each name followed by a NUL.
    pub fn children_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.children_len());
        for c in &self.children {
            out.extend_from_slice(c.as_bytes());
            out.push(0);
        }
        out
    }
}

/// A change to report to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fired {
    /// The changed path (or special event name).
    pub path: String,
    /// Whether only watches on exactly this path match (children removed with a
    /// subtree), rather than watches on it or any ancestor.
    pub exact: bool,
    /// Permission lists of which any one granting read lets a watcher see the event
    /// (C `watch_permitted`: old permissions, the node's, its parent's).
    pub perms: Vec<Vec<Perm>>,
}

/// The committed tree.
#[derive(Debug)]
pub(crate) struct Store {
    nodes: HashMap<String, Node>,
    generation: u64,
    owned: HashMap<u16, u64>,
}

impl Store {
    /// The initial tree of C xenstored: `/`, `/tool`, `/tool/xenstored`, owned by dom0.
    pub fn new() -> Self {
        let mut s = Store {
            nodes: HashMap::new(),
            generation: 0,
            owned: HashMap::new(),
        };
        let perms = vec![Perm::new(0, super::Access::None)];
        for (path, kid) in [
            ("/", Some("tool")),
            ("/tool", Some("xenstored")),
            ("/tool/xenstored", None),
        ] {
            let generation = s.next_generation();
            s.put(
                path,
                Node {
                    value: Vec::new(),
                    perms: perms.clone(),
                    children: kid.map(|k| vec![k.to_string()]).unwrap_or_default(),
                    generation,
                },
            );
        }
        s
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// A fresh generation count.
    pub fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Stores a node, keeping the per-owner counts.
    pub fn put(&mut self, path: &str, node: Node) {
        let owner = node.owner();
        if let Some(old) = self.nodes.insert(path.to_string(), node) {
            self.uncount(old.owner());
        }
        *self.owned.entry(owner).or_insert(0) += 1;
    }

    /// Removes a node (not its children), keeping the per-owner counts.
    pub fn remove(&mut self, path: &str) -> Option<Node> {
        let old = self.nodes.remove(path)?;
        self.uncount(old.owner());
        Some(old)
    }

    fn uncount(&mut self, owner: u16) {
        if let Some(n) = self.owned.get_mut(&owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.owned.remove(&owner);
            }
        }
    }

    /// Number of nodes owned by `domid`.
    pub fn owned(&self, domid: u16) -> u64 {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Paths of the nodes owned by `domid`, shortest first.
    pub fn owned_paths(&self, domid: u16) -> Vec<String> {
        let mut v: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.owner() == domid)
            .map(|(p, _)| p.clone())
            .collect();
        v.sort_by_key(|p| (p.len(), p.clone()));
        v
    }

    /// Removes every non-owner permission entry naming `domid` (a dead domain must not
    /// pass its rights on to a later domain with the same id: XSA-322).
    pub fn forget_domain_perms(&mut self, domid: u16) {
        let mut touched = Vec::new();
        for (path, node) in &mut self.nodes {
            if node.perms.iter().skip(1).any(|p| p.domid == domid) {
                let owner = node.perms.first().copied();
                node.perms = owner
                    .into_iter()
                    .chain(
                        node.perms
                            .iter()
                            .skip(1)
                            .filter(|p| p.domid != domid)
                            .copied(),
                    )
                    .collect();
                touched.push(path.clone());
            }
        }
        for path in touched {
            let generation = self.next_generation();
            if let Some(n) = self.nodes.get_mut(&path) {
                n.generation = generation;
            }
        }
    }

    /// Makes dom0 the owner of `path` (used for the root, which is never removed).
    pub fn chown_to_dom0(&mut self, path: &str) {
        if let Some(mut n) = self.remove(path) {
            if let Some(first) = n.perms.first_mut() {
                first.domid = 0;
            }
            n.generation = self.next_generation();
            self.put(path, n);
        }
    }
}

/// What a transaction knows about one node it touched.
#[derive(Debug)]
struct Accessed {
    /// Generation when first touched (`None`: did not exist).
    base_generation: Option<u64>,
    /// Permissions when first touched.
    base_perms: Option<Vec<Perm>>,
    /// The transaction's copy (`None`: absent in the transaction).
    node: Option<Node>,
    modified: bool,
    /// Watch event to fire at commit; `Some(exact)`.
    fire: Option<bool>,
}

/// An open transaction.
#[derive(Debug)]
pub(crate) struct Transaction {
    /// The connection that owns it.
    pub conn: super::ConnId,
    accessed: BTreeMap<String, Accessed>,
    owned_delta: HashMap<u16, i64>,
    node_created: bool,
    failed: Option<Errno>,
}

impl Transaction {
    pub fn new(conn: super::ConnId) -> Self {
        Self {
            conn,
            accessed: BTreeMap::new(),
            owned_delta: HashMap::new(),
            node_created: false,
            failed: None,
        }
    }

    /// Commits into `store`: `EAGAIN` if any node it touched changed meanwhile (nothing
    /// is applied then); else applies its changes and returns the watch events.
    pub fn commit(
        self,
        store: &mut Store,
        who: &Who,
        quotas: &Quotas,
    ) -> Result<Vec<Fired>, Errno> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.node_created && !who.privileged {
            for (&domid, &delta) in &self.owned_delta {
                let total = i128::from(store.owned(domid)) + i128::from(delta);
                if delta > 0 && total > i128::from(quotas.nodes) {
                    return Err(Errno::ENOSPC);
                }
            }
        }
        for (path, a) in &self.accessed {
            if store.get(path).map(|n| n.generation) != a.base_generation {
                return Err(Errno::EAGAIN);
            }
        }
        let mut to_fire = Vec::new();
        for (path, a) in self.accessed {
            if a.modified {
                match a.node {
                    Some(mut n) => {
                        n.generation = store.next_generation();
                        store.put(&path, n);
                    }
                    None => {
                        store.remove(&path);
                    }
                }
            }
            if let Some(exact) = a.fire {
                to_fire.push((path, exact, a.base_perms));
            }
        }
        Ok(to_fire
            .into_iter()
            .map(|(path, exact, old)| {
                let mut perms: Vec<Vec<Perm>> = old.into_iter().collect();
                if let Some(n) = store.get(&path) {
                    perms.push(n.perms.clone());
                    if let Some(p) = store.get(parent(&path)) {
                        perms.push(p.perms.clone());
                    }
                }
                Fired { path, exact, perms }
            })
            .collect())
    }
}

/// The tree as one request sees it: the committed store, or a transaction's view of it.
pub(crate) struct View<'a> {
    pub store: &'a mut Store,
    pub tx: Option<&'a mut Transaction>,
    pub who: Who,
    pub quotas: &'a Quotas,
    /// Watch events caused by this request (outside transactions).
    pub fired: Vec<Fired>,
}

impl<'a> View<'a> {
    pub fn new(
        store: &'a mut Store,
        tx: Option<&'a mut Transaction>,
        who: Who,
        quotas: &'a Quotas,
    ) -> Self {
        Self {
            store,
            tx,
            who,
            quotas,
            fired: Vec::new(),
        }
    }

    /// Records a first access to `path` in the transaction (quota: nodes touched).
    fn touch(&mut self, path: &str) -> Result<(), Errno> {
        let Some(tx) = self.tx.as_deref_mut() else {
            return Ok(());
        };
        if tx.accessed.contains_key(path) {
            return Ok(());
        }
        if !self.who.privileged && tx.accessed.len() >= self.quotas.transaction_nodes as usize {
            tx.failed = Some(Errno::ENOSPC);
            return Err(Errno::ENOSPC);
        }
        let node = self.store.get(path).cloned();
        tx.accessed.insert(
            path.to_string(),
            Accessed {
                base_generation: node.as_ref().map(|n| n.generation),
                base_perms: node.as_ref().map(|n| n.perms.clone()),
                node,
                modified: false,
                fire: None,
            },
        );
        Ok(())
    }

    /// The node at `path` as this view sees it (after `touch`).
    fn peek(&self, path: &str) -> Option<&Node> {
        match self.tx.as_deref() {
            Some(tx) => tx.accessed.get(path).and_then(|a| a.node.as_ref()),
            None => self.store.get(path),
        }
    }

    /// Reads a node (a copy).
    pub fn read(&mut self, path: &str) -> Result<Option<Node>, Errno> {
        self.touch(path)?;
        Ok(self.peek(path).cloned())
    }

    fn delta(&self, domid: u16) -> i64 {
        self.tx
            .as_deref()
            .and_then(|tx| tx.owned_delta.get(&domid).copied())
            .unwrap_or(0)
    }

    fn owned_now(&self, domid: u16) -> i64 {
        i64::try_from(self.store.owned(domid)).unwrap_or(i64::MAX) + self.delta(domid)
    }

    fn write(&mut self, path: &str, mut node: Node) -> Result<(), Errno> {
        self.touch(path)?;
        node.generation = self.store.next_generation();
        match self.tx.as_deref_mut() {
            None => self.store.put(path, node),
            Some(tx) => {
                let new_owner = node.owner();
                if let Some(a) = tx.accessed.get_mut(path) {
                    let old_owner = a.node.as_ref().map(Node::owner);
                    a.node = Some(node);
                    a.modified = true;
                    if let Some(o) = old_owner {
                        *tx.owned_delta.entry(o).or_insert(0) -= 1;
                    }
                    *tx.owned_delta.entry(new_owner).or_insert(0) += 1;
                }
            }
        }
        Ok(())
    }

    fn delete(&mut self, path: &str) -> Result<(), Errno> {
        self.touch(path)?;
        match self.tx.as_deref_mut() {
            None => {
                self.store.remove(path);
            }
            Some(tx) => {
                if let Some(a) = tx.accessed.get_mut(path) {
                    if let Some(old) = a.node.take() {
                        *tx.owned_delta.entry(old.owner()).or_insert(0) -= 1;
                    }
                    a.modified = true;
                }
            }
        }
        Ok(())
    }

    /// Reports a change (queued in the transaction until commit).
    fn fire(&mut self, path: &str, exact: bool, old_perms: Option<Vec<Perm>>) {
        if let Some(tx) = self.tx.as_deref_mut() {
            if let Some(a) = tx.accessed.get_mut(path) {
                a.fire = Some(match a.fire {
                    Some(prev) => prev && exact,
                    None => exact,
                });
            }
            return;
        }
        let mut perms: Vec<Vec<Perm>> = old_perms.into_iter().collect();
        if let Some(n) = self.store.get(path) {
            perms.push(n.perms.clone());
            if let Some(p) = self.store.get(parent(path)) {
                perms.push(p.perms.clone());
            }
        }
        self.fired.push(Fired {
            path: path.to_string(),
            exact,
            perms,
        });
    }

    fn check_size(&self, node: &Node) -> Result<(), Errno> {
        if !self.who.privileged && node.record_size() >= self.quotas.node_size as usize {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// The node, if `who` has all of `perm` on it (C `get_node`).
    fn get_node(&mut self, path: &str, perm: u8) -> Result<Node, Errno> {
        match self.read(path)? {
            Some(n) if perm_for(&self.who, &n.perms) & perm == perm => Ok(n),
            Some(_) => Err(self.errno_from_parents(path, Errno::EACCES, perm)),
            None => Err(self.errno_from_parents(path, Errno::ENOENT, perm)),
        }
    }

    /// `err` if the nearest existing ancestor grants any of `perm`, else `EACCES`
    /// (C `errno_from_parents`): a domain learns nothing about nodes it cannot see.
    fn errno_from_parents(&mut self, path: &str, err: Errno, perm: u8) -> Errno {
        for p in ancestors(path) {
            match self.read(p) {
                Ok(Some(n)) => {
                    return if perm_for(&self.who, &n.perms) & perm != 0 {
                        err
                    } else {
                        Errno::EACCES
                    };
                }
                Ok(None) => {}
                Err(e) => return e,
            }
        }
        // Not reached: `/` always exists.
        Errno::EACCES
    }

    /// READ.
    pub fn op_read(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        Ok(self.get_node(path, READ)?.value)
    }

    /// WRITE: creates missing parents.
    pub fn op_write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        match self.get_node(path, WRITE) {
            Ok(mut n) => {
                n.value = value.to_vec();
                self.check_size(&n)?;
                self.write(path, n)?;
            }
            Err(Errno::ENOENT) => self.create_node(path, value)?,
            Err(e) => return Err(e),
        }
        self.fire(path, false, None);
        Ok(())
    }

    /// MKDIR: creates the node (and missing parents) if it does not exist.
    pub fn op_mkdir(&mut self, path: &str) -> Result<(), Errno> {
        match self.get_node(path, WRITE) {
            Ok(_) => Ok(()),
            Err(Errno::ENOENT) => {
                self.create_node(path, &[])?;
                self.fire(path, false, None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `path` and its missing ancestors (C `construct_node` + `create_node`).
    fn create_node(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        // missing[0] = path, missing[1] = its parent, ... up to below the existing one.
        let mut missing = vec![path.to_string()];
        let mut existing = None;
        for p in ancestors(path) {
            match self.read(p)? {
                Some(n) => {
                    existing = Some((p.to_string(), n));
                    break;
                }
                None => missing.push(p.to_string()),
            }
        }
        // Not reached: `/` always exists.
        let Some((pname, mut pnode)) = existing else {
            return Err(Errno::EIO);
        };
        if !self.who.privileged {
            let after =
                self.owned_now(self.who.domid) + i64::try_from(missing.len()).unwrap_or(i64::MAX);
            if after > i64::from(self.quotas.nodes) {
                return Err(Errno::ENOSPC);
            }
        }
        let mut perms = pnode.perms.clone();
        if !self.who.privileged {
            if let Some(first) = perms.first_mut() {
                first.domid = self.who.domid;
            }
        }
        let top = missing.last().map(String::as_str).unwrap_or(path);
        pnode.children.push(basename(top).to_string());
        self.check_size(&pnode)?;
        let mut new_nodes = Vec::with_capacity(missing.len());
        for (i, name) in missing.iter().enumerate() {
            let children = match i.checked_sub(1).and_then(|j| missing.get(j)) {
                Some(below) => vec![basename(below).to_string()],
                None => Vec::new(),
            };
            let n = Node {
                value: if i == 0 { value.to_vec() } else { Vec::new() },
                perms: perms.clone(),
                children,
                generation: 0,
            };
            self.check_size(&n)?;
            new_nodes.push((name.clone(), n));
        }
        self.write(&pname, pnode)?;
        for (name, n) in new_nodes.into_iter().rev() {
            self.write(&name, n)?;
        }
        if let Some(tx) = self.tx.as_deref_mut() {
            tx.node_created = true;
        }
        Ok(())
    }

    /// RM: removes the subtree; fine if the node is already gone but its parent exists.
    pub fn op_rm(&mut self, path: &str) -> Result<(), Errno> {
        match self.get_node(path, WRITE) {
            Ok(_) if path == "/" => Err(Errno::EINVAL),
            Ok(_) => self.rm_node(path),
            Err(Errno::ENOENT) => match self.read(parent(path))? {
                Some(_) => Ok(()),
                None => Err(Errno::ENOENT),
            },
            Err(e) => Err(e),
        }
    }

    /// Removes `path` and everything below it, firing watches for each removed node
    /// (only exact watches for the nodes below `path`).
    pub fn rm_node(&mut self, path: &str) -> Result<(), Errno> {
        let pname = parent(path).to_string();
        let Some(mut pnode) = self.read(&pname)? else {
            return Err(Errno::EINVAL);
        };
        let mut order = Vec::new();
        let mut stack = vec![path.to_string()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.read(&p)? {
                for c in &n.children {
                    stack.push(child(&p, c));
                }
                order.push(p);
            }
        }
        for p in order.iter().rev() {
            self.fire(p, p != path, None);
            self.delete(p)?;
        }
        let name = basename(path);
        pnode.children.retain(|c| c != name);
        self.write(&pname, pnode)
    }

    /// DIRECTORY: the child names, each followed by a NUL.
    pub fn op_directory(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        Ok(self.get_node(path, READ)?.children_wire())
    }

    /// DIRECTORY_PART: `<generation>\0` then the children list from byte `offset`, as
    /// many whole names as fit in a payload; an extra NUL marks the end of the list
    /// (C `send_directory_part`).
    pub fn op_directory_part(&mut self, path: &str, offset: usize) -> Result<Vec<u8>, Errno> {
        let node = self.get_node(path, READ)?;
        let mut out = node.generation.to_string().into_bytes();
        out.push(0);
        let genlen = out.len();
        let children = node.children_wire();
        if offset >= children.len() {
            out.push(0);
            return Ok(out);
        }
        let maxlen = PAYLOAD_MAX - genlen - 1;
        let mut len = 0usize;
        loop {
            let start = offset + len;
            let rest = children.get(start..).unwrap_or(&[]);
            let name_len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if len + name_len >= maxlen {
                break;
            }
            len += name_len + 1;
            if offset + len >= children.len() {
                break;
            }
        }
        let end = (offset + len).min(children.len());
        out.extend_from_slice(children.get(offset..end).unwrap_or(&[]));
        if end == children.len() {
            out.push(0);
        }
        Ok(out)
    }

    /// GET_PERMS.
    pub fn op_get_perms(&mut self, path: &str) -> Result<Vec<Perm>, Errno> {
        Ok(self.get_node(path, READ)?.perms)
    }

    /// SET_PERMS (owner or dom0; only dom0 may change the owner).
    pub fn op_set_perms(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), Errno> {
        if perms.is_empty() {
            return Err(Errno::EINVAL);
        }
        let mut n = self.get_node(path, WRITE_OWNER)?;
        if !self.who.privileged && perms.first().map(|p| p.domid) != Some(n.owner()) {
            return Err(Errno::EPERM);
        }
        let old = core::mem::replace(&mut n.perms, perms);
        self.check_size(&n)?;
        self.write(path, n)?;
        self.fire(path, false, Some(old));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Access, ConnId};
    use super::*;

    fn q() -> Quotas {
        Quotas::default()
    }

    fn dom0() -> Who {
        Who::new(0, None)
    }

    fn set_home(store: &mut Store, domid: u16) {
        let quotas = q();
        let mut v = View::new(store, None, dom0(), &quotas);
        let home = format!("/local/domain/{domid}");
        v.op_mkdir(&home).unwrap();
        v.op_set_perms(&home, vec![Perm::new(domid, Access::None)])
            .unwrap();
    }

    #[test]
    fn initial_tree() {
        let s = Store::new();
        assert_eq!(s.get("/").unwrap().children, vec!["tool".to_string()]);
        assert!(s.get("/tool/xenstored").is_some());
        assert_eq!(s.owned(0), 3);
    }

    #[test]
    fn write_creates_parents_with_inherited_perms() {
        let mut s = Store::new();
        set_home(&mut s, 5);
        let quotas = q();
        let mut v = View::new(&mut s, None, Who::new(5, None), &quotas);
        v.op_write("/local/domain/5/a/b/c", b"v").unwrap();
        assert_eq!(v.op_read("/local/domain/5/a/b/c").unwrap(), b"v");
        assert_eq!(v.op_read("/local/domain/5/a").unwrap(), b"");
        assert_eq!(v.op_directory("/local/domain/5/a").unwrap(), b"b\0");
        assert_eq!(v.fired.len(), 1);
        assert_eq!(s.get("/local/domain/5/a/b").unwrap().owner(), 5);
        // /local/domain/5 plus a, b, c.
        assert_eq!(s.owned(5), 4);
    }

    #[test]
    fn dom0_created_nodes_keep_the_parent_owner() {
        let mut s = Store::new();
        set_home(&mut s, 5);
        let quotas = q();
        let mut v = View::new(&mut s, None, dom0(), &quotas);
        v.op_write("/local/domain/5/x", b"1").unwrap();
        assert_eq!(s.get("/local/domain/5/x").unwrap().owner(), 5);
    }

    #[test]
    fn permissions_and_no_existence_leak() {
        let mut s = Store::new();
        set_home(&mut s, 5);
        set_home(&mut s, 6);
        let quotas = q();
        let mut v = View::new(&mut s, None, dom0(), &quotas);
        v.op_write("/local/domain/5/secret", b"s").unwrap();
        let mut v = View::new(&mut s, None, Who::new(6, None), &quotas);
        assert_eq!(v.op_read("/local/domain/5/secret"), Err(Errno::EACCES));
        assert_eq!(v.op_read("/local/domain/5/nothing"), Err(Errno::EACCES));
        assert_eq!(v.op_write("/local/domain/5/x", b""), Err(Errno::EACCES));
        assert_eq!(v.op_rm("/local/domain/5/secret"), Err(Errno::EACCES));
        assert_eq!(v.op_read("/local/domain/6/nothing"), Err(Errno::ENOENT));
        assert_eq!(v.op_write("/tool/x", b""), Err(Errno::EACCES));
    }

    #[test]
    fn rm_subtree_and_missing() {
        let mut s = Store::new();
        let quotas = q();
        let mut v = View::new(&mut s, None, dom0(), &quotas);
        v.op_write("/a/b/c", b"1").unwrap();
        v.op_write("/a/b/d", b"2").unwrap();
        v.fired.clear();
        v.op_rm("/a/b").unwrap();
        let fired: Vec<(String, bool)> =
            v.fired.iter().map(|f| (f.path.clone(), f.exact)).collect();
        assert!(fired.contains(&("/a/b".into(), false)));
        assert!(fired.contains(&("/a/b/c".into(), true)));
        assert!(fired.contains(&("/a/b/d".into(), true)));
        assert_eq!(v.op_read("/a/b/c"), Err(Errno::ENOENT));
        assert_eq!(v.op_directory("/a").unwrap(), b"");
        assert_eq!(v.op_rm("/a/b"), Ok(()));
        assert_eq!(v.op_rm("/nope/x"), Err(Errno::ENOENT));
        assert_eq!(v.op_rm("/"), Err(Errno::EINVAL));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn directory_part_pages_large_lists() {
        let mut s = Store::new();
        let quotas = q();
        let mut v = View::new(&mut s, None, dom0(), &quotas);
        let names: Vec<String> = (0..600).map(|i| format!("child-number-{i:04}")).collect();
        for n in &names {
            v.op_mkdir(&format!("/big/{n}")).unwrap();
        }
        let full = v.op_directory("/big").unwrap();
        assert!(full.len() > PAYLOAD_MAX);
        let mut got = Vec::new();
        let mut gen: Option<Vec<u8>> = None;
        let mut off = 0;
        loop {
            let part = v.op_directory_part("/big", off).unwrap();
            assert!(part.len() <= PAYLOAD_MAX);
            let nul = part.iter().position(|&b| b == 0).unwrap();
            let g = part[..nul].to_vec();
            if let Some(prev) = &gen {
                assert_eq!(prev, &g);
            }
            gen = Some(g);
            let body = &part[nul + 1..];
            got.extend_from_slice(body);
            off += body.len();
            if body.len() <= 1 || body[body.len() - 2] == 0 {
                break;
            }
        }
        // The list ends with the extra NUL.
        assert_eq!(got.pop(), Some(0));
        assert_eq!(got, full);
        // Past the end: generation and an empty string.
        let end = v.op_directory_part("/big", full.len() + 10).unwrap();
        assert!(end.ends_with(b"\0\0"));
    }

    #[test]
    fn transaction_conflict_and_isolation() {
        let mut s = Store::new();
        let quotas = q();
        View::new(&mut s, None, dom0(), &quotas)
            .op_write("/x", b"0")
            .unwrap();
        let mut t1 = Transaction::new(ConnId(1));
        let mut t2 = Transaction::new(ConnId(2));
        {
            let mut v = View::new(&mut s, Some(&mut t1), dom0(), &quotas);
            assert_eq!(v.op_read("/x").unwrap(), b"0");
            v.op_write("/x", b"1").unwrap();
            assert!(v.fired.is_empty());
        }
        {
            let mut v = View::new(&mut s, Some(&mut t2), dom0(), &quotas);
            assert_eq!(v.op_read("/x").unwrap(), b"0", "t1 is not visible to t2");
            v.op_write("/x", b"2").unwrap();
        }
        assert_eq!(
            View::new(&mut s, None, dom0(), &quotas)
                .op_read("/x")
                .unwrap(),
            b"0"
        );
        let fired = t1.commit(&mut s, &dom0(), &quotas).unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(t2.commit(&mut s, &dom0(), &quotas), Err(Errno::EAGAIN));
        assert_eq!(
            View::new(&mut s, None, dom0(), &quotas)
                .op_read("/x")
                .unwrap(),
            b"1"
        );
    }

    #[test]
    fn transaction_rm_and_create() {
        let mut s = Store::new();
        let quotas = q();
        View::new(&mut s, None, dom0(), &quotas)
            .op_write("/a/b", b"0")
            .unwrap();
        let mut t = Transaction::new(ConnId(1));
        {
            let mut v = View::new(&mut s, Some(&mut t), dom0(), &quotas);
            v.op_rm("/a").unwrap();
            assert_eq!(v.op_read("/a/b"), Err(Errno::ENOENT));
            v.op_write("/c/d", b"new").unwrap();
        }
        assert!(s.get("/a/b").is_some());
        let fired = t.commit(&mut s, &dom0(), &quotas).unwrap();
        assert!(s.get("/a").is_none());
        assert!(s.get("/a/b").is_none());
        assert_eq!(s.get("/c/d").unwrap().value, b"new");
        let paths: Vec<&str> = fired.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"/a"));
        assert!(paths.contains(&"/a/b"));
        assert!(paths.contains(&"/c/d"));
        assert_eq!(
            s.get("/").unwrap().children,
            vec!["tool".to_string(), "c".to_string()]
        );
    }

    #[test]
    fn quotas_nodes_size_transaction_nodes() {
        let mut s = Store::new();
        set_home(&mut s, 5);
        let quotas = Quotas {
            nodes: 4,
            node_size: 100,
            transaction_nodes: 3,
            ..Quotas::default()
        };
        let me = Who::new(5, None);
        let mut v = View::new(&mut s, None, me, &quotas);
        // Owns /local/domain/5 already: 3 more allowed.
        v.op_write("/local/domain/5/a/b/c", b"").unwrap();
        assert_eq!(v.op_write("/local/domain/5/d", b""), Err(Errno::ENOSPC));
        assert_eq!(
            v.op_write("/local/domain/5/a", &[b'x'; 100]),
            Err(Errno::ENOSPC)
        );
        v.op_write("/local/domain/5/a", &[b'x'; 10]).unwrap();
        v.op_rm("/local/domain/5/a/b").unwrap();
        v.op_write("/local/domain/5/d", b"").unwrap();
        let mut t = Transaction::new(ConnId(1));
        let mut v = View::new(&mut s, Some(&mut t), me, &quotas);
        v.op_read("/local/domain/5/a").unwrap();
        v.op_read("/local/domain/5/d").unwrap();
        v.op_read("/local/domain/5").unwrap();
        assert_eq!(v.op_read("/local/domain/5/e"), Err(Errno::ENOSPC));
        assert_eq!(t.commit(&mut s, &me, &quotas), Err(Errno::ENOSPC));
        // dom0 is exempt.
        let mut v = View::new(&mut s, None, dom0(), &quotas);
        v.op_write("/local/domain/5/big", &[b'x'; 1000]).unwrap();
    }

    #[test]
    fn set_perms_rules() {
        let mut s = Store::new();
        set_home(&mut s, 5);
        let quotas = q();
        let mut v = View::new(&mut s, None, Who::new(5, None), &quotas);
        v.op_write("/local/domain/5/x", b"").unwrap();
        v.op_set_perms(
            "/local/domain/5/x",
            vec![Perm::new(5, Access::Read), Perm::new(6, Access::Both)],
        )
        .unwrap();
        assert_eq!(
            v.op_set_perms("/local/domain/5/x", vec![Perm::new(6, Access::Read)]),
            Err(Errno::EPERM)
        );
        let mut v = View::new(&mut s, None, Who::new(6, None), &quotas);
        assert_eq!(v.op_read("/local/domain/5/x").unwrap(), b"");
        v.op_write("/local/domain/5/x", b"by6").unwrap();
        // Write access is not ownership.
        assert_eq!(
            v.op_set_perms("/local/domain/5/x", vec![Perm::new(5, Access::Both)]),
            Err(Errno::EACCES)
        );
        let mut v = View::new(&mut s, None, Who::new(7, None), &quotas);
        assert_eq!(v.op_read("/local/domain/5/x").unwrap(), b"by6");
        assert_eq!(v.op_write("/local/domain/5/x", b""), Err(Errno::EACCES));
    }

    /// Tests written for cargo-mutants survivors (docs/mutants.md), each naming
    /// the mutants it catches.
    mod mutants {
        use super::*;

        fn home_of_5(nodes: u32) -> (Store, Quotas) {
            let mut s = Store::new();
            set_home(&mut s, 5);
            let quotas = Quotas {
                nodes,
                ..Quotas::default()
            };
            (s, quotas)
        }

        /// Nodes created in a transaction count against the creator's node quota
        /// at once and at commit: owning its home (1) with a quota of 3, the third
        /// new node of one transaction is refused; of two transactions creating
        /// one node each with room for one, the second commit is refused.
        /// (`View::write`: the new owner's `+= 1` as `*=` or `-=`, which let a
        /// transaction create any number of nodes, and the old owner's `-= 1` as
        /// `+=` or `/=`; `View::delta` as 0; `owned_now`'s `+` as `-`.)
        #[test]
        fn nodes_created_in_a_transaction_count_against_the_quota() {
            let (mut s, quotas) = home_of_5(3);
            let me = Who::new(5, None);
            let mut t = Transaction::new(ConnId(1));
            let mut v = View::new(&mut s, Some(&mut t), me, &quotas);
            v.op_write("/local/domain/5/a", b"").unwrap();
            v.op_write("/local/domain/5/b", b"").unwrap();
            assert_eq!(v.op_write("/local/domain/5/c", b""), Err(Errno::ENOSPC));
            t.commit(&mut s, &me, &quotas).unwrap();
            assert_eq!(s.owned(5), 3);

            let (mut s, quotas) = home_of_5(2);
            let mut t1 = Transaction::new(ConnId(1));
            let mut t2 = Transaction::new(ConnId(2));
            View::new(&mut s, Some(&mut t1), me, &quotas)
                .op_write("/local/domain/5/a", b"")
                .unwrap();
            View::new(&mut s, Some(&mut t2), me, &quotas)
                .op_write("/local/domain/5/b", b"")
                .unwrap();
            t1.commit(&mut s, &me, &quotas).unwrap();
            assert_eq!(t2.commit(&mut s, &me, &quotas), Err(Errno::ENOSPC));
            assert_eq!(s.owned(5), 2);
            assert!(s.get("/local/domain/5/b").is_none());
        }

        /// Overwriting nodes keeps their owner's count: a domain owning three
        /// nodes that rewrites them still owns three, and its quota of three
        /// still refuses a fourth. (`Store::uncount`: `*n == 0` as `!=`, which
        /// dropped the count of an owner with nodes left, so each overwrite reset
        /// it to 1.)
        #[test]
        fn overwriting_keeps_the_owners_count() {
            let (mut s, quotas) = home_of_5(3);
            let me = Who::new(5, None);
            let mut v = View::new(&mut s, None, me, &quotas);
            v.op_write("/local/domain/5/a", b"").unwrap();
            v.op_write("/local/domain/5/b", b"").unwrap();
            for _ in 0..3 {
                v.op_write("/local/domain/5/a", b"again").unwrap();
            }
            assert_eq!(v.op_write("/local/domain/5/c", b""), Err(Errno::ENOSPC));
            assert_eq!(s.owned(5), 3);
            assert_eq!(s.owned_paths(5).len(), 3);
        }

        /// The node quota at commit applies to unprivileged domains only, and only
        /// to a domain whose count the transaction grows: dom0 commits a
        /// transaction creating nodes past any quota (`commit`:
        /// `node_created && !who.privileged` as `||`), and a guest's transaction
        /// that creates a node and rewrites one of another domain, over its quota
        /// but not growing, commits (`delta > 0` as `>=`).
        #[test]
        fn the_commit_quota_spares_dom0_and_counts_that_do_not_grow() {
            let (mut s, quotas) = home_of_5(2);
            let mut t = Transaction::new(ConnId(1));
            let mut v = View::new(&mut s, Some(&mut t), dom0(), &quotas);
            for i in 0..3 {
                v.op_write(&format!("/dom0/{i}"), b"").unwrap();
            }
            t.commit(&mut s, &dom0(), &quotas).unwrap();
            assert!(s.owned(0) > 2);

            // Domain 6, over its quota (dom0 made its nodes), lets 5 write one.
            set_home(&mut s, 6);
            let mut v = View::new(&mut s, None, dom0(), &quotas);
            for n in ["w", "x"] {
                v.op_write(&format!("/local/domain/6/{n}"), b"").unwrap();
            }
            v.op_set_perms("/local/domain/6/w", vec![Perm::new(6, Access::Both)])
                .unwrap();
            assert_eq!(s.owned(6), 3);
            let me = Who::new(5, None);
            let mut t = Transaction::new(ConnId(2));
            let mut v = View::new(&mut s, Some(&mut t), me, &quotas);
            v.op_write("/local/domain/6/w", b"by five").unwrap();
            v.op_write("/local/domain/5/new", b"").unwrap();
            // 5 grows to its quota of 2; 6 stays at 3, over it, but does not grow.
            t.commit(&mut s, &me, &quotas).unwrap();
            assert_eq!((s.owned(5), s.owned(6)), (2, 3));
        }

        /// A guest whose home root dom0 handed over (`/` owned by it) gives the
        /// root back to dom0 when it goes. (`Store::chown_to_dom0` as `()`.)
        #[test]
        fn the_root_goes_back_to_dom0() {
            let mut s = Store::new();
            let quotas = q();
            let mut v = View::new(&mut s, None, dom0(), &quotas);
            v.op_set_perms("/", vec![Perm::new(5, Access::Read)])
                .unwrap();
            assert_eq!(s.get("/").unwrap().owner(), 5);
            let gen = s.get("/").unwrap().generation;
            s.chown_to_dom0("/");
            let root = s.get("/").unwrap();
            assert_eq!(root.perms, vec![Perm::new(0, Access::Read)]);
            assert!(
                root.generation > gen,
                "a change: transactions that read it conflict"
            );
            assert_eq!((s.owned(5), s.owned(0)), (0, 3));
        }

        /// DIRECTORY_PART fills a reply up to `XENSTORE_PAYLOAD_MAX`: a child list
        /// of exactly 4096 - (generation and its NUL) - 1 bytes comes whole in one
        /// part of 4096 bytes (its end NUL included); one byte more and the last
        /// name goes to a second part. (`op_directory_part`: in
        /// `PAYLOAD_MAX - genlen - 1`, either `-` as `+`, or the last as `/`,
        /// which sent parts past 4096 bytes; `len + name_len` as `*`; the end
        /// test `offset + len >= children.len()` as `*` or `<`.)
        #[test]
        fn directory_part_fills_exactly_one_payload() {
            let mut s = Store::new();
            // Generations of 4 digits from here on: 5 bytes with the NUL.
            while s.next_generation() < 1000 {}
            let quotas = q();
            let mut v = View::new(&mut s, None, dom0(), &quotas);
            // 40 names of 100 bytes plus one of `last`, each with its NUL.
            let fill = |v: &mut View<'_>, dir: &str, last: usize| {
                for i in 0..40 {
                    v.op_mkdir(&format!("{dir}/{i:0100}")).unwrap();
                }
                v.op_mkdir(&format!("{dir}/{}", "z".repeat(last))).unwrap();
            };
            fill(&mut v, "/whole", 49);
            fill(&mut v, "/split", 50);
            for (dir, bytes) in [("/whole", 4090), ("/split", 4091)] {
                let part = v.op_directory_part(dir, 0).unwrap();
                let genlen = part.iter().position(|&b| b == 0).unwrap() + 1;
                assert_eq!(genlen, 5, "a 4-digit generation");
                assert_eq!(v.op_directory(dir).unwrap().len(), bytes);
                if dir == "/whole" {
                    assert_eq!(part.len(), PAYLOAD_MAX);
                    assert!(part.ends_with(b"\0\0"), "the whole list");
                } else {
                    assert_eq!(part.len(), 5 + 40 * 101, "the 40 names only");
                    let rest = v.op_directory_part(dir, 40 * 101).unwrap();
                    assert_eq!(&rest[5..], format!("{}\0\0", "z".repeat(50)).as_bytes());
                }
            }
            // From an offset, the names there are measured, not the first ones: a
            // name of 2000 bytes, then 500 of 10; from 2001, 371 names of 10 fill
            // the part (371 * 11 = 4081, one more would pass 4090). (The name's
            // start `offset + len` as `offset * len`.)
            v.op_mkdir(&format!("/mixed/{}", "a".repeat(2000))).unwrap();
            for i in 0..500 {
                v.op_mkdir(&format!("/mixed/{i:010}")).unwrap();
            }
            let part = v.op_directory_part("/mixed", 2001).unwrap();
            let names: Vec<String> = (0..371).map(|i| format!("{i:010}\0")).collect();
            assert_eq!(&part[5..], names.concat().as_bytes());
        }

        /// Nodes removed in a transaction give their room back within it: at its
        /// quota, a domain removes a node and creates another in one transaction,
        /// and commits. (`View::delete`: the old owner's `-= 1` as `+=` or `/=`.)
        #[test]
        fn nodes_removed_in_a_transaction_free_their_quota() {
            let (mut s, quotas) = home_of_5(3);
            let me = Who::new(5, None);
            let mut v = View::new(&mut s, None, me, &quotas);
            v.op_write("/local/domain/5/a", b"").unwrap();
            v.op_write("/local/domain/5/b", b"").unwrap();
            assert_eq!(v.op_write("/local/domain/5/c", b""), Err(Errno::ENOSPC));
            let mut t = Transaction::new(ConnId(1));
            let mut v = View::new(&mut s, Some(&mut t), me, &quotas);
            v.op_rm("/local/domain/5/b").unwrap();
            v.op_write("/local/domain/5/c", b"").unwrap();
            t.commit(&mut s, &me, &quotas).unwrap();
            assert_eq!(s.owned(5), 3);
            assert!(s.get("/local/domain/5/c").is_some());
        }

        /// A node both written and then removed with its parent in one transaction
        /// fires a recursive event at commit (watches on its ancestors see it), not
        /// only an exact one, as it would outside a transaction. (`View::fire`:
        /// `prev && exact` as `||`.)
        #[test]
        fn a_transaction_keeps_an_event_recursive_once_it_was() {
            let mut s = Store::new();
            let quotas = q();
            View::new(&mut s, None, dom0(), &quotas)
                .op_write("/a/b/c", b"0")
                .unwrap();
            let mut t = Transaction::new(ConnId(1));
            let mut v = View::new(&mut s, Some(&mut t), dom0(), &quotas);
            v.op_write("/a/b/c", b"1").unwrap();
            v.op_rm("/a/b").unwrap();
            let fired = t.commit(&mut s, &dom0(), &quotas).unwrap();
            let c: Vec<bool> = fired
                .iter()
                .filter(|f| f.path == "/a/b/c")
                .map(|f| f.exact)
                .collect();
            assert_eq!(c, vec![false], "{fired:?}");
            let b: Vec<bool> = fired
                .iter()
                .filter(|f| f.path == "/a/b")
                .map(|f| f.exact)
                .collect();
            assert_eq!(b, vec![false], "{fired:?}");
        }

        /// Each permission entry counts 8 bytes in the node size: with `node_size`
        /// 100, a node of three entries (24 + 3 * 8 = 48) holds a value of 51
        /// bytes (99), not 52. (`record_size`: `RECORD_PERM * perms.len()` as
        /// `/`, the same as `*` for one entry.)
        #[test]
        fn permission_entries_count_in_the_node_size() {
            let mut s = Store::new();
            set_home(&mut s, 5);
            let quotas = Quotas {
                node_size: 100,
                ..Quotas::default()
            };
            let mut v = View::new(&mut s, None, Who::new(5, None), &quotas);
            let p = "/local/domain/5/p";
            v.op_write(p, b"").unwrap();
            let three = vec![
                Perm::new(5, Access::None),
                Perm::new(6, Access::Read),
                Perm::new(7, Access::Read),
            ];
            v.op_set_perms(p, three).unwrap();
            v.op_write(p, &[b'v'; 51]).unwrap();
            assert_eq!(v.op_write(p, &[b'v'; 52]), Err(Errno::ENOSPC));
            assert_eq!(s.get(p).unwrap().record_size(), 99);
        }

        /// A node's children count in its size for the node-size quota, each name
        /// with its NUL: with `node_size` 100, a home of one permission (24 + 8)
        /// takes six children of 9 letters (92) and refuses a seventh (102); with
        /// 67 bytes of names (99) it takes no name of a letter more. (`children_len`
        /// as 0, `c.len() + 1` as `*` or `-`; `record_size`'s last `+` as `-`.)
        #[test]
        fn child_names_count_in_the_node_size() {
            let mut s = Store::new();
            set_home(&mut s, 5);
            let quotas = Quotas {
                node_size: 100,
                ..Quotas::default()
            };
            let me = Who::new(5, None);
            let mut v = View::new(&mut s, None, me, &quotas);
            for i in 0..6 {
                v.op_write(&format!("/local/domain/5/child-{i:03}"), b"")
                    .unwrap();
            }
            assert_eq!(
                v.op_write("/local/domain/5/child-006", b""),
                Err(Errno::ENOSPC)
            );
            assert_eq!(s.get("/local/domain/5").unwrap().record_size(), 92);
            let mut v = View::new(&mut s, None, me, &quotas);
            // 92 + 7 = 99: a name of 6 letters fits, then nothing does.
            v.op_write("/local/domain/5/sixsix", b"").unwrap();
            assert_eq!(s.get("/local/domain/5").unwrap().record_size(), 99);
            let mut v = View::new(&mut s, None, me, &quotas);
            assert_eq!(v.op_write("/local/domain/5/x", b""), Err(Errno::ENOSPC));
        }
    }
}
