//! The store's data: nodes with permissions and generation counts, transactions and
//! watches, with the semantics (and error names) of C xenstored 4.17 for one guest
//! connection:
//! - a node the caller may not access is `EACCES`; a missing one is `ENOENT` only if
//!   the nearest existing ancestor grants the access asked for, else `EACCES` (so a
//!   guest reading under a removed backend directory owned by dom0 gets `EACCES`);
//! - a new node inherits its parent's permissions, and an unprivileged creator
//!   becomes its owner; creating or removing a node changes its parent's generation;
//! - a transaction works on its own copy, records the generation of every node it
//!   touches, and its commit fails with `EAGAIN` if any of them changed meanwhile;
//! - watches fire for the changed node and its ancestors' watches; removal fires the
//!   watches placed exactly on each removed descendant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Read access.
pub(crate) const READ: u8 = 1;
/// Write access.
pub(crate) const WRITE: u8 = 2;
/// The owner's rights beyond read and write (set_perms); the code uses the
/// combinations below.
#[cfg(test)]
pub(crate) const OWNER: u8 = 4;
/// `READ | WRITE` (`b`), written out: an `|` of the two is a bitwise mutation with
/// an equivalent `^` (docs/mutants.md).
pub(crate) const READ_WRITE: u8 = 3;
/// `WRITE | OWNER`: what SET_PERMS asks.
const WRITE_OWNER: u8 = 6;
/// `READ | WRITE | OWNER`: what dom0 and a node's owner may do.
pub(crate) const ALL: u8 = 7;

/// One permission entry (`n5`, `r0`, `w3`, `b1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Perm {
    pub domid: u16,
    pub access: u8,
}

impl Perm {
    pub(crate) fn parse(s: &[u8]) -> Option<Perm> {
        let (&kind, digits) = s.split_first()?;
        let access = match kind {
            b'n' => 0,
            b'r' => READ,
            b'w' => WRITE,
            b'b' => READ_WRITE,
            _ => return None,
        };
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some(Perm {
            domid: u16::try_from(v).ok()?,
            access,
        })
    }

    pub(crate) fn format(&self) -> String {
        let c = match self.access & READ_WRITE {
            0 => 'n',
            READ => 'r',
            WRITE => 'w',
            _ => 'b',
        };
        format!("{c}{}", self.domid)
    }
}

/// What `domid` may do on a node with `perms` (dom0 and the owner: everything).
pub(crate) fn access_of(domid: u16, perms: &[Perm]) -> u8 {
    let Some(owner) = perms.first() else {
        return 0;
    };
    if domid == 0 || owner.domid == domid {
        return ALL;
    }
    perms
        .iter()
        .skip(1)
        .find(|p| p.domid == domid)
        .map_or(owner.access, |p| p.access)
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<Perm>,
    pub gen: u64,
}

/// The nodes by absolute path. A hash map, not a `BTreeMap`: each lookup in an
/// ordered map compares whole paths at every step, and those lookups were most of a
/// device connect's cost under Miri (docs/miri.md); the few listings sort.
pub(crate) type Tree = HashMap<String, Node, BuildHasherDefault<PathHasher>>;

/// A small multiplicative hash over 8-byte words (paths are short and not chosen to
/// collide; the harness needs speed, not flooding resistance).
#[derive(Default)]
pub(crate) struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        for &b in words.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The parent of an absolute path (`/` for `/a`); `None` for `/`.
pub(crate) fn parent(p: &str) -> Option<&str> {
    if p == "/" {
        return None;
    }
    let i = p.rfind('/')?;
    Some(if i == 0 { "/" } else { &p[..i] })
}

fn prefix_of(p: &str) -> String {
    if p == "/" {
        "/".into()
    } else {
        format!("{p}/")
    }
}

/// Whether a change of `p` fires the watch on `head` (+ `/tail` when given):
/// `p` is the watched path, or (unless `exact`) lies below it.
fn covers(head: &str, tail: Option<&str>, p: &str, exact: bool) -> bool {
    // Split `p` into the part matching the watch's path and the rest.
    let rest = match tail {
        None => p.strip_prefix(head),
        Some(t) => p
            .strip_prefix(head)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(t)),
    };
    let Some(rest) = rest else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    if exact {
        return false;
    }
    // Below it: the next byte is a separator (or the watch is on `/` itself).
    let whole = tail.is_none() && head == "/";
    whole || rest.starts_with('/')
}

/// The paths of `p` and everything below it in `tree`.
pub(crate) fn subtree(tree: &Tree, p: &str) -> Vec<String> {
    let mut out = Vec::new();
    if tree.contains_key(p) {
        out.push(p.to_string());
    }
    let prefix = prefix_of(p);
    let mut below: Vec<String> = tree
        .keys()
        .filter(|k| k.starts_with(&prefix) && *k != p)
        .cloned()
        .collect();
    below.sort();
    out.extend(below);
    out
}

/// The names of `p`'s children, in order.
pub(crate) fn children(tree: &Tree, p: &str) -> Vec<String> {
    let prefix = prefix_of(p);
    let mut names: Vec<String> = tree
        .keys()
        .filter_map(|k| {
            let name = k.strip_prefix(&prefix)?;
            (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
        })
        .collect();
    names.sort();
    names
}

/// An open transaction.
struct Tx {
    tree: Tree,
    /// Generation of each touched node when first touched (`None`: missing).
    seen: BTreeMap<String, Option<u64>>,
    /// Nodes created, changed or removed in the copy.
    modified: BTreeSet<String>,
    /// Watch firings held back until the commit: (path, exact).
    fired: Vec<(String, bool)>,
}

/// A registered watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// The path as the client gave it (relative or absolute, or `@...`).
    pub path: String,
    /// The token.
    pub token: String,
}

/// The store, seen from one guest connection.
pub(crate) struct Store {
    pub tree: Tree,
    gen: u64,
    txs: BTreeMap<u32, Tx>,
    next_tx: u32,
    pub watches: Vec<Watch>,
    /// Watch events waiting to go out: (path as shown, token).
    pub events: Vec<(Vec<u8>, Vec<u8>)>,
    /// The guest's domain id.
    pub domid: u16,
    /// `/local/domain/<domid>`, made once (paths are built on every request).
    home: String,
    /// Commits still to fail with `EAGAIN`.
    pub fail_commits: u32,
    /// Commit attempts (`TRANSACTION_END` with `T`).
    pub commits: u64,
}

/// An error name as xenstored sends it.
pub(crate) type Errno = &'static str;

impl Store {
    pub fn new(domid: u16) -> Store {
        let mut s = Store {
            tree: Tree::default(),
            gen: 0,
            txs: BTreeMap::new(),
            next_tx: 1,
            watches: Vec::new(),
            events: Vec::new(),
            domid,
            home: format!("/local/domain/{domid}"),
            fail_commits: 0,
            commits: 0,
        };
        let dom0 = vec![Perm {
            domid: 0,
            access: 0,
        }];
        for p in ["/", "/local", "/local/domain", "/local/domain/0", "/tool"] {
            s.put(p, b"", Some(dom0.clone()));
        }
        s.put("/local/domain/0/name", b"Domain-0", None);
        s.put("/local/domain/0/domid", b"0", None);
        let home = s.home();
        let own = vec![Perm { domid, access: 0 }];
        s.put(&home, b"", Some(own));
        s.put(&format!("{home}/domid"), domid.to_string().as_bytes(), None);
        s.put(
            &format!("{home}/name"),
            format!("guest{domid}").as_bytes(),
            None,
        );
        s
    }

    /// `/local/domain/<domid>`.
    pub fn home(&self) -> String {
        self.home.clone()
    }

    /// An absolute path for a client path (relative ones are under the home).
    /// Built without `format!`: the server makes one for every request and every
    /// peer's look at a key, and the formatting machinery is most of that cost
    /// under Miri (docs/miri.md).
    pub fn abs(&self, p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            let mut a = String::with_capacity(self.home.len() + 1 + p.len());
            a.push_str(&self.home);
            a.push('/');
            a.push_str(p);
            a
        }
    }

    /// A change-counter of the tree: it moves on every change of any node (value,
    /// permissions, creation, removal, a commit), so an unchanged value means an
    /// unchanged tree.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    // ---- toolstack side (privileged, outside transactions) ------------------------

    /// Writes `value` at `p` as dom0 would, creating missing parents (which inherit
    /// their parent's permissions); `perms` replaces the node's permissions if given.
    /// Fires watches.
    pub fn put(&mut self, p: &str, value: &[u8], perms: Option<Vec<Perm>>) {
        let p = self.abs(p);
        self.create_missing(&p, 0, None);
        let gen = self.next_gen();
        if let Some(n) = self.tree.get_mut(&p) {
            n.value = value.to_vec();
            if let Some(perms) = perms {
                n.perms = perms;
            }
            n.gen = gen;
        }
        self.fire(&p, false);
    }

    /// Removes `p` and everything below it as dom0 would (fires watches). Whether
    /// anything was there.
    pub fn remove(&mut self, p: &str) -> bool {
        let p = self.abs(p);
        if p == "/" || !self.tree.contains_key(&p) {
            return false;
        }
        self.rm_in(None, &p);
        true
    }

    /// Creates `p` and its missing ancestors in the main tree (tx `None`) or a
    /// transaction's copy, owned by `creator` unless privileged. Returns the created
    /// paths (top first).
    fn create_missing(&mut self, p: &str, creator: u16, tx: Option<u32>) -> Vec<String> {
        let mut missing = Vec::new();
        if self.tree_of(tx).contains_key(p) {
            return missing;
        }
        // `p` is missing: look for its nearest existing ancestor.
        missing.push(p.to_string());
        let mut cur = p;
        let (pname, mut perms) = loop {
            let Some(q) = parent(cur) else {
                // Only "/" itself is missing (never: the root always exists).
                break (
                    String::new(),
                    vec![Perm {
                        domid: 0,
                        access: 0,
                    }],
                );
            };
            if let Some(n) = self.tree_of(tx).get(q) {
                break (q.to_string(), n.perms.clone());
            }
            missing.push(q.to_string());
            cur = q;
        };
        if creator != 0 {
            if let Some(first) = perms.first_mut() {
                first.domid = creator;
            }
        }
        let gen = self.next_gen();
        if let Some(tx_id) = tx {
            self.touch(tx_id, &pname);
            for m in &missing {
                self.touch(tx_id, m);
            }
        }
        let tree = self.tree_of_mut(tx);
        if let Some(n) = tree.get_mut(&pname) {
            n.gen = gen;
        }
        missing.reverse();
        for m in &missing {
            tree.insert(
                m.clone(),
                Node {
                    value: Vec::new(),
                    perms: perms.clone(),
                    gen,
                },
            );
        }
        if let Some(t) = tx.and_then(|id| self.txs.get_mut(&id)) {
            t.modified.insert(pname);
            t.modified.extend(missing.iter().cloned());
        }
        missing
    }

    fn tree_of(&self, tx: Option<u32>) -> &Tree {
        match tx.and_then(|id| self.txs.get(&id)) {
            Some(t) => &t.tree,
            None => &self.tree,
        }
    }

    fn tree_of_mut(&mut self, tx: Option<u32>) -> &mut Tree {
        // The two fields borrowed apart: one lookup, no guard before it.
        let Store { tree, txs, .. } = self;
        match tx.and_then(|id| txs.get_mut(&id)) {
            Some(t) => &mut t.tree,
            None => tree,
        }
    }

    /// Records the generation a transaction first saw for `p`.
    fn touch(&mut self, tx: u32, p: &str) {
        if let Some(t) = self.txs.get_mut(&tx) {
            if !t.seen.contains_key(p) {
                let g = t.tree.get(p).map(|n| n.gen);
                t.seen.insert(p.to_string(), g);
            }
        }
    }

    // ---- watches ----------------------------------------------------------------

    /// Queues events for the watches a change of `p` fires (`exact`: only watches on
    /// `p` itself, for removed descendants).
    pub fn fire(&mut self, p: &str, exact: bool) {
        // No copies of the watch list and no `format!` per watch: this runs for
        // every change, and its cost under Miri was mostly those (docs/miri.md).
        let mut fired = Vec::new();
        for w in &self.watches {
            let relative = !(w.path.starts_with('/') || w.path.starts_with('@'));
            // The watch's absolute path is `home/path` for a relative one.
            let (head, tail) = if relative {
                (self.home.as_str(), Some(w.path.as_str()))
            } else {
                (w.path.as_str(), None)
            };
            if !covers(head, tail, p, exact) {
                continue;
            }
            let shown = if relative {
                p.strip_prefix(self.home.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .unwrap_or(p)
            } else {
                p
            };
            fired.push((shown.as_bytes().to_vec(), w.token.as_bytes().to_vec()));
        }
        self.events.extend(fired);
    }

    /// In a transaction, holds the firing back until the commit.
    fn changed(&mut self, tx: Option<u32>, p: &str, exact: bool) {
        match tx.and_then(|id| self.txs.get_mut(&id)) {
            Some(t) => t.fired.push((p.to_string(), exact)),
            None => self.fire(p, exact),
        }
    }

    // ---- guest operations -------------------------------------------------------

    /// The transaction `tx_id` names (`None` for 0), or `ENOENT`.
    pub fn tx(&self, tx_id: u32) -> Result<Option<u32>, Errno> {
        match tx_id {
            0 => Ok(None),
            id if self.txs.contains_key(&id) => Ok(Some(id)),
            _ => Err("ENOENT"),
        }
    }

    /// The node at `p` if the guest has all of `perm` on it (C `get_node`).
    fn get_node(&mut self, tx: Option<u32>, p: &str, perm: u8) -> Result<Node, Errno> {
        if let Some(id) = tx {
            self.touch(id, p);
        }
        let domid = self.domid;
        match self.tree_of(tx).get(p) {
            Some(n) if access_of(domid, &n.perms) & perm == perm => Ok(n.clone()),
            Some(_) => Err(self.errno_from_parents(tx, p, "EACCES", perm)),
            None => Err(self.errno_from_parents(tx, p, "ENOENT", perm)),
        }
    }

    /// `err` if the nearest existing ancestor of `p` grants any of `perm`, else
    /// `EACCES` (the guest learns nothing about nodes it cannot see).
    fn errno_from_parents(&self, tx: Option<u32>, p: &str, err: Errno, perm: u8) -> Errno {
        let tree = self.tree_of(tx);
        let mut cur = p;
        while let Some(q) = parent(cur) {
            if let Some(n) = tree.get(q) {
                return if access_of(self.domid, &n.perms) & perm != 0 {
                    err
                } else {
                    "EACCES"
                };
            }
            cur = q;
        }
        "EACCES"
    }

    pub fn op_read(&mut self, tx: Option<u32>, p: &str) -> Result<Vec<u8>, Errno> {
        Ok(self.get_node(tx, p, READ)?.value)
    }

    pub fn op_write(&mut self, tx: Option<u32>, p: &str, value: &[u8]) -> Result<(), Errno> {
        match self.get_node(tx, p, WRITE) {
            Ok(_) => {}
            Err("ENOENT") => {
                self.create_missing(p, self.domid, tx);
            }
            Err(e) => return Err(e),
        }
        let gen = self.next_gen();
        if let Some(n) = self.tree_of_mut(tx).get_mut(p) {
            n.value = value.to_vec();
            n.gen = gen;
        }
        if let Some(t) = tx.and_then(|id| self.txs.get_mut(&id)) {
            t.modified.insert(p.to_string());
        }
        self.changed(tx, p, false);
        Ok(())
    }

    pub fn op_mkdir(&mut self, tx: Option<u32>, p: &str) -> Result<(), Errno> {
        match self.get_node(tx, p, WRITE) {
            Ok(_) => Ok(()),
            Err("ENOENT") => {
                self.create_missing(p, self.domid, tx);
                self.changed(tx, p, false);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn op_rm(&mut self, tx: Option<u32>, p: &str) -> Result<(), Errno> {
        match self.get_node(tx, p, WRITE) {
            Ok(_) if p == "/" => Err("EINVAL"),
            Ok(_) => {
                self.rm_in(tx, p);
                Ok(())
            }
            Err("ENOENT") => match parent(p).map(|q| self.tree_of(tx).contains_key(q)) {
                Some(true) => Ok(()),
                _ => Err("ENOENT"),
            },
            Err(e) => Err(e),
        }
    }

    fn rm_in(&mut self, tx: Option<u32>, p: &str) {
        let gone = subtree(self.tree_of(tx), p);
        if let Some(id) = tx {
            for g in &gone {
                self.touch(id, g);
            }
            if let Some(q) = parent(p) {
                self.touch(id, q);
            }
        }
        let gen = self.next_gen();
        let tree = self.tree_of_mut(tx);
        for g in &gone {
            tree.remove(g);
        }
        if let Some(n) = parent(p).and_then(|q| tree.get_mut(q)) {
            n.gen = gen;
        }
        if let Some(t) = tx.and_then(|id| self.txs.get_mut(&id)) {
            t.modified.extend(gone.iter().cloned());
            if let Some(q) = parent(p) {
                t.modified.insert(q.to_string());
            }
        }
        // Deepest first, as xenstored deletes; the top node fires its ancestors'
        // watches too.
        for g in gone.iter().rev() {
            self.changed(tx, g, g != p);
        }
    }

    pub fn op_directory(&mut self, tx: Option<u32>, p: &str) -> Result<Vec<u8>, Errno> {
        self.get_node(tx, p, READ)?;
        let mut out = Vec::new();
        for c in children(self.tree_of(tx), p) {
            out.extend_from_slice(c.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// DIRECTORY_PART: `<generation>\0`, then the listing from byte `offset`, as
    /// many whole names as fit in one payload; an extra NUL marks its end (C
    /// xenstored's `send_directory_part`).
    pub fn op_directory_part(
        &mut self,
        tx: Option<u32>,
        p: &str,
        offset: usize,
    ) -> Result<Vec<u8>, Errno> {
        let node = self.get_node(tx, p, READ)?;
        let mut all = Vec::new();
        for c in children(self.tree_of(tx), p) {
            all.extend_from_slice(c.as_bytes());
            all.push(0);
        }
        let mut out = node.gen.to_string().into_bytes();
        out.push(0);
        let room = hypercall::abi::xs_wire::PAYLOAD_MAX - out.len() - 1;
        let rest = all.get(offset..).unwrap_or_default();
        // Whole names (each with its NUL; an offset inside a name starts a shorter
        // one) while they fit.
        let mut end = 0;
        for name in rest.split_inclusive(|&b| b == 0) {
            if end + name.len() > room {
                break;
            }
            end += name.len();
        }
        out.extend_from_slice(&rest[..end]);
        if end == rest.len() {
            out.push(0);
        }
        Ok(out)
    }

    pub fn op_get_perms(&mut self, tx: Option<u32>, p: &str) -> Result<Vec<u8>, Errno> {
        let n = self.get_node(tx, p, READ)?;
        let mut out = Vec::new();
        for perm in &n.perms {
            out.extend_from_slice(perm.format().as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    pub fn op_set_perms(
        &mut self,
        tx: Option<u32>,
        p: &str,
        perms: Vec<Perm>,
    ) -> Result<(), Errno> {
        if perms.is_empty() {
            return Err("EINVAL");
        }
        let n = self.get_node(tx, p, WRITE_OWNER)?;
        let owner = n.perms.first().map(|q| q.domid);
        if self.domid != 0 && perms.first().map(|q| q.domid) != owner {
            return Err("EPERM");
        }
        let gen = self.next_gen();
        if let Some(n) = self.tree_of_mut(tx).get_mut(p) {
            n.perms = perms;
            n.gen = gen;
        }
        if let Some(t) = tx.and_then(|id| self.txs.get_mut(&id)) {
            t.modified.insert(p.to_string());
        }
        self.changed(tx, p, false);
        Ok(())
    }

    pub fn op_watch(&mut self, path: &str, token: &str) -> Result<(), Errno> {
        if self
            .watches
            .iter()
            .any(|w| w.path == path && w.token == token)
        {
            return Err("EEXIST");
        }
        self.watches.push(Watch {
            path: path.to_string(),
            token: token.to_string(),
        });
        // xenstored fires a new watch once at once, with the path as registered.
        self.events
            .push((path.as_bytes().to_vec(), token.as_bytes().to_vec()));
        Ok(())
    }

    pub fn op_unwatch(&mut self, path: &str, token: &str) -> Result<(), Errno> {
        let before = self.watches.len();
        self.watches
            .retain(|w| !(w.path == path && w.token == token));
        if self.watches.len() == before {
            Err("ENOENT")
        } else {
            Ok(())
        }
    }

    pub fn op_transaction_start(&mut self) -> u32 {
        let id = self.next_tx;
        self.next_tx = self.next_tx.wrapping_add(1).max(1);
        self.txs.insert(
            id,
            Tx {
                tree: self.tree.clone(),
                seen: BTreeMap::new(),
                modified: BTreeSet::new(),
                fired: Vec::new(),
            },
        );
        id
    }

    pub fn op_transaction_end(&mut self, id: u32, commit: bool) -> Result<(), Errno> {
        let t = self.txs.remove(&id).ok_or("ENOENT")?;
        if !commit {
            return Ok(());
        }
        self.commits += 1;
        if self.fail_commits > 0 {
            self.fail_commits -= 1;
            return Err("EAGAIN");
        }
        let conflict = t
            .seen
            .iter()
            .any(|(p, g)| self.tree.get(p).map(|n| n.gen) != *g);
        if conflict {
            return Err("EAGAIN");
        }
        let gen = self.next_gen();
        for p in &t.modified {
            match t.tree.get(p) {
                Some(n) => {
                    let mut n = n.clone();
                    n.gen = gen;
                    self.tree.insert(p.clone(), n);
                }
                None => {
                    self.tree.remove(p);
                }
            }
        }
        for (p, exact) in t.fired {
            self.fire(&p, exact);
        }
        Ok(())
    }

    /// XS_RESET_WATCHES: drops every watch and transaction of the connection.
    pub fn reset_watches(&mut self) {
        self.watches.clear();
        self.txs.clear();
    }

    /// Open transactions.
    pub fn open_transactions(&self) -> usize {
        self.txs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_parse_and_format() {
        for s in ["n0", "r5", "w65535", "b1"] {
            assert_eq!(Perm::parse(s.as_bytes()).unwrap().format(), s);
        }
        for bad in ["", "x1", "r", "r65536", "r-1", "r 1", "r123456"] {
            assert_eq!(Perm::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn missing_nodes_under_unreadable_parents_are_eacces() {
        let mut s = Store::new(3);
        let dom0 = vec![Perm {
            domid: 0,
            access: 0,
        }];
        s.put("/local/domain/0/backend/vbd/3/1", b"", Some(dom0.clone()));
        s.put(
            "/local/domain/0/backend/vbd/3/1/state",
            b"4",
            Some(vec![
                Perm {
                    domid: 0,
                    access: 0,
                },
                Perm {
                    domid: 3,
                    access: READ,
                },
            ]),
        );
        let state = "/local/domain/0/backend/vbd/3/1/state";
        // Only the node's own permissions count for a node that exists.
        assert_eq!(s.op_read(None, state), Ok(b"4".to_vec()));
        let other = "/local/domain/0/backend/vbd/3/1/nothing";
        assert_eq!(s.op_read(None, other), Err("EACCES"), "parent not readable");
        s.put(
            "/local/domain/0/backend/vbd/3/1",
            b"",
            Some(vec![
                Perm {
                    domid: 0,
                    access: 0,
                },
                Perm {
                    domid: 3,
                    access: READ,
                },
            ]),
        );
        assert_eq!(s.op_read(None, other), Err("ENOENT"), "parent readable");
        s.remove("/local/domain/0/backend/vbd/3/1");
        assert_eq!(s.op_read(None, state), Err("EACCES"), "directory removed");
        assert_eq!(
            s.op_read(None, "/local/domain/3/nothing"),
            Err("ENOENT"),
            "own tree"
        );
        assert_eq!(s.op_write(None, "/local/domain/0/x", b""), Err("EACCES"));
    }

    #[test]
    fn guest_creates_nodes_it_owns_and_transactions_conflict() {
        let mut s = Store::new(3);
        s.op_write(None, "/local/domain/3/a/b", b"v").unwrap();
        assert_eq!(s.tree["/local/domain/3/a"].perms[0].domid, 3);
        let t = s.op_transaction_start();
        assert_eq!(s.op_read(Some(t), "/local/domain/3/a/b"), Ok(b"v".to_vec()));
        s.op_write(Some(t), "/local/domain/3/a/c", b"w").unwrap();
        assert_eq!(s.op_read(None, "/local/domain/3/a/c"), Err("ENOENT"));
        s.put("/local/domain/3/a/b", b"changed", None);
        assert_eq!(s.op_transaction_end(t, true), Err("EAGAIN"));
        let t = s.op_transaction_start();
        s.op_write(Some(t), "/local/domain/3/a/c", b"w").unwrap();
        s.put("/local/domain/3/unrelated", b"x", None);
        s.op_transaction_end(t, true).unwrap();
        assert_eq!(s.op_read(None, "/local/domain/3/a/c"), Ok(b"w".to_vec()));
        assert_eq!(
            s.op_read(None, "/local/domain/3/unrelated"),
            Ok(b"x".to_vec())
        );
    }

    #[test]
    fn removal_fires_exact_watches_below_and_relative_paths_show_relative() {
        let mut s = Store::new(3);
        s.put("/local/domain/3/d/x/state", b"1", None);
        s.op_watch("d/x/state", "t1").unwrap();
        s.op_watch("/local/domain/3/d", "t2").unwrap();
        s.events.clear();
        s.remove("/local/domain/3/d");
        let ev: Vec<(String, String)> = s
            .events
            .iter()
            .map(|(p, t)| {
                (
                    String::from_utf8_lossy(p).into_owned(),
                    String::from_utf8_lossy(t).into_owned(),
                )
            })
            .collect();
        assert!(ev.contains(&("d/x/state".into(), "t1".into())), "{ev:?}");
        assert!(
            ev.contains(&("/local/domain/3/d".into(), "t2".into())),
            "{ev:?}"
        );
        assert!(
            !ev.iter()
                .any(|(p, t)| t == "t2" && p != "/local/domain/3/d"),
            "{ev:?}"
        );
    }

    fn events(s: &mut Store) -> Vec<(String, String)> {
        s.events
            .drain(..)
            .map(|(p, t)| {
                (
                    String::from_utf8_lossy(&p).into_owned(),
                    String::from_utf8_lossy(&t).into_owned(),
                )
            })
            .collect()
    }

    fn perm(domid: u16, access: u8) -> Perm {
        Perm { domid, access }
    }

    #[test]
    fn access_constants() {
        assert_eq!(READ_WRITE, READ | WRITE);
        assert_eq!(ALL, READ | WRITE | OWNER);
        assert_eq!(WRITE_OWNER, WRITE | OWNER);
    }

    #[test]
    fn perms_reject_long_or_signed_digits_and_format_by_access() {
        // Six digits are too many even for a small value; `+1` parses as a u32.
        for bad in ["r000001", "r+1", "b+65"] {
            assert_eq!(Perm::parse(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(Perm::parse(b"r00001"), Some(perm(1, READ)));
        assert_eq!(Perm::parse(b"b7"), Some(perm(7, READ | WRITE)));
        assert_eq!(Perm::parse(b"w7").map(|p| p.access), Some(WRITE));
        // The owner bit does not show.
        assert_eq!(perm(2, OWNER).format(), "n2");
        assert_eq!(perm(2, READ | OWNER).format(), "r2");
        assert_eq!(perm(2, WRITE | OWNER).format(), "w2");
        assert_eq!(perm(2, READ | WRITE | OWNER).format(), "b2");
    }

    #[test]
    fn access_is_the_owners_dom0s_or_the_entry_for_the_domain() {
        assert_eq!(access_of(0, &[]), 0);
        assert_eq!(access_of(3, &[]), 0);
        let perms = [perm(5, READ), perm(3, WRITE), perm(5, 0)];
        assert_eq!(access_of(0, &perms), READ | WRITE | OWNER);
        assert_eq!(access_of(5, &perms), READ | WRITE | OWNER, "the owner");
        assert_eq!(access_of(3, &perms), WRITE, "its own entry");
        assert_eq!(access_of(4, &perms), READ, "the owner's entry for others");
    }

    #[test]
    fn path_hasher_spreads_paths() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<PathHasher>::default();
        let hash = |p: &str| {
            let mut h = b.build_hasher();
            h.write(p.as_bytes());
            h.finish()
        };
        // Word-wise over 8 bytes then byte-wise over the rest (as documented):
        // the value of one path pins the function.
        assert_eq!(hash("/local/domain/1/x"), 0xc1ba_17f4_d75a_f80a);
        let s = Store::new(3);
        let paths: Vec<&String> = s.tree.keys().collect();
        let mut hashes: Vec<u64> = paths.iter().map(|p| hash(p)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), paths.len(), "{paths:?}");
    }

    #[test]
    fn parents_children_and_subtrees() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("a"), None);
        let mut s = Store::new(3);
        for p in ["/x/b", "/x/a/deep", "/xy", "/x"] {
            s.put(p, b"", None);
        }
        assert_eq!(children(&s.tree, "/x"), ["a", "b"]);
        assert_eq!(children(&s.tree, "/"), ["local", "tool", "x", "xy"]);
        assert!(children(&s.tree, "/x/b").is_empty());
        assert_eq!(subtree(&s.tree, "/x"), ["/x", "/x/a", "/x/a/deep", "/x/b"]);
        assert_eq!(subtree(&s.tree, "/x/a/deep"), ["/x/a/deep"]);
        assert!(subtree(&s.tree, "/nothing").is_empty());
        // The root's subtree is every node, the root once (its prefix, "/",
        // also matches the root itself).
        let all = subtree(&s.tree, "/");
        assert_eq!(all.iter().filter(|n| *n == "/").count(), 1);
        assert_eq!(all.len(), s.tree.len());
    }

    #[test]
    fn watches_fire_on_the_path_and_below_not_beside() {
        let mut s = Store::new(3);
        assert_eq!(s.home(), "/local/domain/3");
        assert_eq!(s.abs("a/b"), "/local/domain/3/a/b");
        assert_eq!(s.abs("/a/b"), "/a/b");
        s.op_watch("/local/domain/3/d", "abs").unwrap();
        s.op_watch("d", "rel").unwrap();
        s.op_watch("/", "root").unwrap();
        s.op_watch("@releaseDomain", "special").unwrap();
        assert_eq!(
            events(&mut s),
            [
                ("/local/domain/3/d".into(), "abs".into()),
                ("d".into(), "rel".into()),
                ("/".into(), "root".into()),
                ("@releaseDomain".into(), "special".into()),
            ]
        );
        s.put("/local/domain/3/dx", b"", None);
        assert_eq!(
            events(&mut s),
            [("/local/domain/3/dx".into(), "root".into())],
            "beside the watched paths"
        );
        s.put("d/e", b"", None);
        let ev = events(&mut s);
        assert_eq!(
            ev,
            [
                ("/local/domain/3/d/e".into(), "abs".into()),
                ("d/e".into(), "rel".into()),
                ("/local/domain/3/d/e".into(), "root".into()),
            ],
            "the node (not its created parent)"
        );
        s.fire("/local/domain/3/d/e", true);
        assert!(events(&mut s).is_empty(), "exact: no watch on d/e itself");
        s.fire("/local/domain/3/d", true);
        assert_eq!(events(&mut s).len(), 2, "exact: the two on d");
        s.fire("@releaseDomain", false);
        assert_eq!(
            events(&mut s),
            [("@releaseDomain".into(), "special".into())]
        );
        // A relative watch's path outside the home shows whole.
        s.op_watch("/other", "o").unwrap();
        s.events.clear();
        s.put("/other/x", b"", None);
        assert_eq!(
            events(&mut s),
            [
                ("/other/x".into(), "root".into()),
                ("/other/x".into(), "o".into())
            ]
        );
    }

    #[test]
    fn watch_and_unwatch_pairs() {
        let mut s = Store::new(3);
        s.op_watch("a", "t").unwrap();
        assert_eq!(s.op_watch("a", "t"), Err("EEXIST"));
        s.op_watch("a", "u").unwrap();
        s.op_watch("b", "t").unwrap();
        assert_eq!(s.watches.len(), 3);
        assert_eq!(s.op_unwatch("a", "v"), Err("ENOENT"));
        assert_eq!(s.op_unwatch("c", "t"), Err("ENOENT"));
        assert_eq!(s.op_unwatch("a", "t"), Ok(()));
        assert_eq!(
            s.watches,
            [
                Watch {
                    path: "a".into(),
                    token: "u".into()
                },
                Watch {
                    path: "b".into(),
                    token: "t".into()
                }
            ]
        );
        assert_eq!(s.op_unwatch("a", "t"), Err("ENOENT"));
        let t = s.op_transaction_start();
        assert_eq!(s.open_transactions(), 1);
        s.reset_watches();
        assert!(s.watches.is_empty());
        assert_eq!(s.open_transactions(), 0);
        assert_eq!(s.tx(t), Err("ENOENT"));
    }

    #[test]
    fn removal_of_root_missing_and_present_nodes() {
        let mut s = Store::new(3);
        let before = s.tree.len();
        let g = s.generation();
        assert!(!s.remove("/"));
        assert!(!s.remove("/nothing"));
        assert_eq!((s.tree.len(), s.generation()), (before, g));
        s.put("/x/y/z", b"1", None);
        let g = s.generation();
        assert!(s.remove("/x/y"));
        assert!(s.generation() > g);
        assert!(s.tree.contains_key("/x") && !s.tree.contains_key("/x/y/z"));
        assert_eq!(s.tree["/x"].gen, s.generation(), "the parent changed");
        // As the guest.
        s.op_write(None, "/local/domain/3/a/b/c", b"v").unwrap();
        assert_eq!(s.op_rm(None, "/"), Err("EACCES"));
        assert_eq!(s.op_rm(None, "/local/domain/3/a/x"), Ok(()), "parent there");
        assert_eq!(s.op_rm(None, "/local/domain/3/q/x"), Err("ENOENT"));
        assert_eq!(s.op_rm(None, "/local/domain/0/name"), Err("EACCES"));
        s.op_rm(None, "/local/domain/3/a/b").unwrap();
        assert_eq!(children(&s.tree, "/local/domain/3/a"), Vec::<String>::new());
        let mut s0 = Store::new(3);
        s0.domid = 0;
        assert_eq!(s0.op_rm(None, "/"), Err("EINVAL"));
        assert!(s0.tree.contains_key("/"));
    }

    #[test]
    fn guest_writes_make_owned_parents_and_move_generations() {
        let mut s = Store::new(3);
        let home = "/local/domain/3";
        let g0 = s.generation();
        s.op_write(None, "/local/domain/3/a/b", b"v").unwrap();
        let g1 = s.generation();
        assert!(g1 > g0);
        assert_eq!(s.tree[home].gen, g1 - 1, "creation changes the parent");
        assert_eq!(s.tree["/local/domain/3/a"].perms, [perm(3, 0)]);
        assert_eq!(s.tree["/local/domain/3/a/b"].gen, g1);
        assert_eq!(s.op_read(None, "/local/domain/3/a/b"), Ok(b"v".to_vec()));
        assert_eq!(s.op_read(None, "/local/domain/3/a"), Ok(Vec::new()));
        s.op_write(None, "/local/domain/3/a/b", b"w").unwrap();
        assert_eq!(s.tree["/local/domain/3/a/b"].gen, s.generation());
        assert_eq!(
            s.op_directory(None, "/local/domain/3/a"),
            Ok(b"b\0".to_vec())
        );
        assert_eq!(s.op_directory(None, home), Ok(b"a\0domid\0name\0".to_vec()));
        assert_eq!(s.op_directory(None, "/local/domain/0"), Err("EACCES"));
        // MKDIR: nothing for an existing node, a new empty one otherwise.
        let g = s.generation();
        s.op_mkdir(None, "/local/domain/3/a/b").unwrap();
        assert_eq!(s.generation(), g);
        assert_eq!(s.tree["/local/domain/3/a/b"].value, b"w");
        s.op_watch("m", "t").unwrap();
        s.events.clear();
        s.op_mkdir(None, "/local/domain/3/m/n").unwrap();
        assert_eq!(s.tree["/local/domain/3/m/n"].value, b"");
        assert_eq!(s.tree["/local/domain/3/m/n"].perms, [perm(3, 0)]);
        assert_eq!(events(&mut s).len(), 1, "the new node fires once");
        assert_eq!(s.op_mkdir(None, "/local/domain/0/m"), Err("EACCES"));
        // dom0's writes keep the parent's owner.
        s.put("/local/domain/3/from0/x", b"", None);
        assert_eq!(s.tree["/local/domain/3/from0/x"].perms, [perm(3, 0)]);
        let mut s0 = Store::new(3);
        s0.domid = 0;
        s0.op_write(None, "/tool/x/y", b"").unwrap();
        assert_eq!(s0.tree["/tool/x/y"].perms, [perm(0, 0)]);
    }

    #[test]
    fn access_checks_need_every_bit_asked() {
        let mut s = Store::new(3);
        s.put("/ro", b"r", Some(vec![perm(0, 0), perm(3, READ)]));
        s.put("/wo", b"w", Some(vec![perm(0, 0), perm(3, WRITE)]));
        assert_eq!(s.op_read(None, "/ro"), Ok(b"r".to_vec()));
        assert_eq!(s.op_write(None, "/ro", b"x"), Err("EACCES"));
        assert_eq!(s.op_read(None, "/wo"), Err("EACCES"));
        s.op_write(None, "/wo", b"x").unwrap();
        assert_eq!(s.tree["/wo"].value, b"x");
        // Missing under a node: its parent's rights for the access asked.
        assert_eq!(s.op_read(None, "/ro/x"), Err("ENOENT"));
        assert_eq!(s.op_read(None, "/wo/x"), Err("EACCES"));
        s.op_write(None, "/wo/x", b"y").unwrap();
        assert_eq!(s.op_write(None, "/ro/x", b"y"), Err("EACCES"));
        assert_eq!(s.op_get_perms(None, "/ro"), Ok(b"n0\0r3\0".to_vec()));
        assert_eq!(s.op_get_perms(None, "/wo"), Err("EACCES"));
        // SET_PERMS needs ownership, not only write access.
        assert_eq!(s.op_set_perms(None, "/wo", vec![perm(0, 0)]), Err("EACCES"));
        assert_eq!(s.op_set_perms(None, "/wo/x", vec![]), Err("EINVAL"));
    }

    #[test]
    fn set_perms_keeps_the_owner_for_guests() {
        let mut s = Store::new(3);
        s.put("a", b"v", None);
        s.op_watch("a", "t").unwrap();
        s.events.clear();
        let g = s.generation();
        assert_eq!(
            s.op_set_perms(None, "/local/domain/3/a", vec![perm(4, 0)]),
            Err("EPERM")
        );
        assert_eq!((s.generation(), s.events.len()), (g, 0));
        s.op_set_perms(
            None,
            "/local/domain/3/a",
            vec![perm(3, READ), perm(4, WRITE)],
        )
        .unwrap();
        assert_eq!(
            s.tree["/local/domain/3/a"].perms,
            [perm(3, READ), perm(4, WRITE)]
        );
        assert_eq!(s.tree["/local/domain/3/a"].gen, s.generation());
        assert!(s.generation() > g);
        assert_eq!(events(&mut s), [("a".into(), "t".into())]);
        assert_eq!(
            s.op_set_perms(None, "/local/domain/3/b", vec![perm(3, 0)]),
            Err("ENOENT")
        );
        let mut s0 = Store::new(3);
        s0.domid = 0;
        s0.op_set_perms(None, "/local/domain/3", vec![perm(4, 0)])
            .unwrap();
        assert_eq!(s0.tree["/local/domain/3"].perms, [perm(4, 0)]);
    }

    #[test]
    fn transaction_ids_ends_and_counters() {
        let mut s = Store::new(3);
        assert_eq!(s.tx(0), Ok(None));
        assert_eq!(s.tx(1), Err("ENOENT"));
        let a = s.op_transaction_start();
        let b = s.op_transaction_start();
        assert_eq!((a, b), (1, 2));
        assert_eq!(s.tx(a), Ok(Some(a)));
        assert_eq!(s.open_transactions(), 2);
        s.op_write(Some(a), "/local/domain/3/x", b"1").unwrap();
        assert_eq!(s.op_transaction_end(a, false), Ok(()));
        assert_eq!(s.commits, 0, "an abort is no commit");
        assert_eq!(s.op_read(None, "/local/domain/3/x"), Err("ENOENT"));
        assert_eq!(s.op_transaction_end(a, true), Err("ENOENT"));
        s.fail_commits = 1;
        assert_eq!(s.op_transaction_end(b, true), Err("EAGAIN"));
        assert_eq!(
            (s.commits, s.fail_commits, s.open_transactions()),
            (1, 0, 0)
        );
        let c = s.op_transaction_start();
        assert_eq!(c, 3);
        assert_eq!(s.op_transaction_end(c, true), Ok(()));
        assert_eq!(s.commits, 2);
        s.next_tx = u32::MAX;
        assert_eq!(s.op_transaction_start(), u32::MAX);
        assert_eq!(s.op_transaction_start(), 1, "0 is never an id");
    }

    #[test]
    fn a_transaction_sees_its_own_changes_and_commits_them_with_their_events() {
        let mut s = Store::new(3);
        s.put("a", b"old", None);
        s.put("gone/x", b"", None);
        s.op_watch("a", "ta").unwrap();
        s.op_watch("gone/x", "tx").unwrap();
        s.events.clear();
        let t = s.op_transaction_start();
        // Write, then read back: the second look must not count as a change.
        s.op_write(Some(t), "/local/domain/3/a", b"new").unwrap();
        assert_eq!(s.op_read(Some(t), "/local/domain/3/a"), Ok(b"new".to_vec()));
        s.op_write(Some(t), "/local/domain/3/a", b"newer").unwrap();
        s.op_mkdir(Some(t), "/local/domain/3/m").unwrap();
        s.op_rm(Some(t), "/local/domain/3/gone").unwrap();
        s.op_set_perms(Some(t), "/local/domain/3/a", vec![perm(3, READ)])
            .unwrap();
        assert_eq!(
            s.op_directory(Some(t), "/local/domain/3"),
            Ok(b"a\0domid\0m\0name\0".to_vec())
        );
        assert!(s.events.is_empty(), "held back until the commit");
        assert_eq!(s.op_read(None, "/local/domain/3/a"), Ok(b"old".to_vec()));
        let g = s.generation();
        s.op_transaction_end(t, true).unwrap();
        assert!(s.generation() > g);
        assert_eq!(s.op_read(None, "/local/domain/3/a"), Ok(b"newer".to_vec()));
        assert_eq!(s.tree["/local/domain/3/a"].perms, [perm(3, READ)]);
        assert_eq!(s.tree["/local/domain/3/a"].gen, s.generation());
        assert!(s.tree.contains_key("/local/domain/3/m"));
        assert!(!s.tree.contains_key("/local/domain/3/gone"));
        assert!(!s.tree.contains_key("/local/domain/3/gone/x"));
        let ev = events(&mut s);
        assert_eq!(ev.iter().filter(|e| e.1 == "ta").count(), 3, "{ev:?}");
        assert_eq!(ev.iter().filter(|e| e.1 == "tx").count(), 1, "{ev:?}");
    }

    #[test]
    fn commits_conflict_on_any_node_touched() {
        // Each change outside the transaction to a node it read, created (the
        // parent), or removed fails the commit.
        type Change = fn(&mut Store);
        let cases: [(&str, Change, Change); 5] = [
            (
                "read",
                |s| drop(s.op_read(Some(1), "/local/domain/3/a")),
                |s| s.put("a", b"x", None),
            ),
            (
                "missing",
                |s| drop(s.op_read(Some(1), "/local/domain/3/no")),
                |s| s.put("no", b"", None),
            ),
            (
                "parent of a new node",
                |s| s.op_write(Some(1), "/local/domain/3/a/n", b"").unwrap(),
                |s| s.put("a", b"x", None),
            ),
            (
                "removed",
                |s| s.op_rm(Some(1), "/local/domain/3/a").unwrap(),
                |s| s.put("a/c", b"x", None),
            ),
            (
                "parent of a removed",
                |s| s.op_rm(Some(1), "/local/domain/3/a/b").unwrap(),
                |s| s.put("a", b"x", None),
            ),
        ];
        for (what, in_tx, outside) in cases {
            let mut s = Store::new(3);
            s.put("a/b", b"", None);
            assert_eq!(s.op_transaction_start(), 1);
            in_tx(&mut s);
            outside(&mut s);
            assert_eq!(s.op_transaction_end(1, true), Err("EAGAIN"), "{what}");
            // The same without the change commits.
            let mut s = Store::new(3);
            s.put("a/b", b"", None);
            s.op_transaction_start();
            in_tx(&mut s);
            s.put("/tool/elsewhere", b"", None);
            assert_eq!(s.op_transaction_end(1, true), Ok(()), "{what}");
        }
    }

    #[test]
    fn directory_part_fills_one_payload_exactly() {
        let p = "/local/domain/3/d";
        // The node's generation, set by hand: 4 digits and a NUL lead the payload.
        let gen = "1000";
        let room = hypercall::abi::xs_wire::PAYLOAD_MAX - gen.len() - 2;
        // Names of 100 bytes (+ NUL) and one that makes the listing `room` bytes
        // long (in `s`; a byte longer in `s2`).
        let n = room / 101 - 1;
        let last = room - n * 101 - 1;
        let build = |extra: usize| {
            let mut st = Store::new(3);
            st.put("d", b"", None);
            for i in 0..n {
                st.put(&format!("d/{i:0>100}"), b"", None);
            }
            st.put(&format!("d/{}", "z".repeat(last + extra)), b"", None);
            st.tree.get_mut(p).unwrap().gen = 1000;
            st
        };
        let (mut s, mut s2) = (build(0), build(1));
        let all = s.op_directory_part(None, p, 0).unwrap();
        assert_eq!(
            all.len(),
            4096,
            "the whole listing and its end in one payload"
        );
        assert!(all.starts_with(b"1000\0"));
        assert!(all.ends_with(b"z\0\0"));
        let part = s2.op_directory_part(None, p, 0).unwrap();
        assert_eq!(
            part.len(),
            5 + n * 101,
            "one byte too many: the last name waits"
        );
        assert!(part.ends_with(b"\0") && !part.contains(&b'z'));
        let rest = s2.op_directory_part(None, p, n * 101).unwrap();
        let mut want = b"1000\0".to_vec();
        want.extend("z".repeat(last + 1).as_bytes());
        want.extend(b"\0\0");
        assert_eq!(rest, want);
        let end = s2.op_directory_part(None, p, n * 101 + last + 2).unwrap();
        assert_eq!(end, b"1000\0\0", "at the end: empty");
        let past = s2.op_directory_part(None, p, n * 101 + last + 3).unwrap();
        assert_eq!(past, b"1000\0\0", "past the end: empty");
        // An offset inside a name (made up by the client): the rest of it is one
        // name.
        let mid = s2.op_directory_part(None, p, n * 101 + 1).unwrap();
        assert_eq!(mid.len(), 5 + last + 2);
        assert_eq!(
            s2.op_directory_part(None, "/local/domain/0", 0),
            Err("EACCES")
        );
    }
}
