//! Test-only: a tiny xenstored speaking `xs_wire` on a real 4096-byte page, and a fake
//! platform whose `wait()` steps it. The client under test runs unchanged.
//!
//! The fake server is deliberately simple (no quotas, permissions are stored but not
//! enforced, transactions are snapshots with injected conflicts) but exact about the
//! wire: framing, NULs, ring indices with wrap-around, chunked output, watch events
//! fired on registration and on changes.
#![allow(unsafe_code)]

use std::boxed::Box;
use std::cell::{Cell, RefCell, RefMut};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::format;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use core::ptr::NonNull;

use hypercall::abi::hypercall_nr::{EVENT_CHANNEL_OP, HVM_OP, SCHED_OP};
use hypercall::abi::xs_wire::{
    iface, msg, MsgHeader, CONNECTED, PAYLOAD_MAX, RECONNECT, RING_SIZE,
    SERVER_FEATURE_RECONNECTION,
};
use hypercall::abi::{evtchn, hvm, sched};
use hypercall::{Gfn, Hypercall, Platform, Port, SharedMem};
use zerocopy::{FromBytes, IntoBytes};

use crate::store::Xenstore;

/// Our domain id in the fake.
pub const DOMID: u16 = 1;
/// Where the fake keeps the store page.
pub const STORE_PFN: u64 = 0xFEFFC;
/// The store event channel.
pub const STORE_PORT: u32 = 7;
/// Virtual time each `wait()` takes.
pub const WAIT_NS: u64 = 1_000_000;

pub fn home() -> String {
    format!("/local/domain/{DOMID}")
}

/// [`home`] as a constant: paths are built on every request and every change, and
/// `format!` was much of that cost under Miri (docs/miri.md).
const HOME: &str = "/local/domain/1";

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<String>,
}

/// Nodes by absolute path: a hash map (an ordered map's lookups compare whole paths
/// at every step, a good part of each request's cost under Miri, docs/miri.md);
/// listings sort.
pub type Tree = HashMap<String, Node, BuildHasherDefault<PathHasher>>;

/// A small multiplicative hash over 8-byte words (test paths, not chosen to collide).
#[derive(Default)]
pub struct PathHasher(u64);

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

pub fn msg_bytes(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let h = MsgHeader {
        ty,
        req_id,
        tx_id,
        len: payload.len() as u32,
    };
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// The xenstore state: tree, watches, transactions.
pub struct Core {
    pub tree: Tree,
    pub watches: Vec<(String, String)>,
    txs: BTreeMap<u32, (Tree, Vec<String>)>,
    next_tx: u32,
    /// Watch events to send after the current reply.
    events: Vec<u8>,
    /// Commits to fail with EAGAIN.
    pub eagain_commits: u32,
    /// Commit attempts seen.
    pub commits: u32,
    /// Every request header seen.
    pub requests: Vec<MsgHeader>,
}

impl Core {
    fn new() -> Core {
        debug_assert_eq!(home(), HOME);
        let mut tree = Tree::default();
        for p in ["/", "/local", "/local/domain"] {
            tree.insert(
                p.to_string(),
                Node {
                    value: vec![],
                    perms: vec!["n0".into()],
                },
            );
        }
        tree.insert(
            home(),
            Node {
                value: vec![],
                perms: vec![format!("n{DOMID}")],
            },
        );
        Core {
            tree,
            watches: vec![],
            txs: BTreeMap::new(),
            next_tx: 1,
            events: vec![],
            eagain_commits: 0,
            commits: 0,
            requests: vec![],
        }
    }

    pub fn abs(p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            let mut a = String::with_capacity(HOME.len() + 1 + p.len());
            a.push_str(HOME);
            a.push('/');
            a.push_str(p);
            a
        }
    }

    fn parent(p: &str) -> Option<String> {
        if p == "/" {
            return None;
        }
        let i = p.rfind('/')?;
        Some(if i == 0 {
            "/".to_string()
        } else {
            p[..i].to_string()
        })
    }

    fn tree_mut(&mut self, tx: u32) -> Option<&mut Tree> {
        if tx == 0 {
            Some(&mut self.tree)
        } else {
            self.txs.get_mut(&tx).map(|t| &mut t.0)
        }
    }

    fn create(tree: &mut Tree, p: &str) {
        if tree.contains_key(p) {
            return;
        }
        if let Some(parent) = Core::parent(p) {
            Core::create(tree, &parent);
        }
        tree.insert(
            p.to_string(),
            Node {
                value: vec![],
                perms: vec![format!("n{DOMID}")],
            },
        );
    }

    /// Records a change: fires watches now, or at commit for a transaction.
    fn changed(&mut self, tx: u32, p: &str) {
        if tx == 0 {
            self.fire(p);
        } else if let Some(t) = self.txs.get_mut(&tx) {
            t.1.push(p.to_string());
        }
    }

    /// Fires the watches on `p`, its parents, and (for removals) its children.
    pub fn fire(&mut self, p: &str) {
        // Without copies of the watch list or `format!` per watch (its cost under
        // Miri): `p` hits a watch on `w` when it is `w`, below `w`, or above it.
        let mut hits = Vec::new();
        for (wpath, token) in &self.watches {
            let w = Core::abs(wpath);
            let below = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('/'));
            if !(p == w || below(p, &w) || below(&w, p)) {
                continue;
            }
            let shown = if wpath.starts_with('/') {
                p.to_string()
            } else {
                p.strip_prefix(HOME)
                    .and_then(|r| r.strip_prefix('/'))
                    .unwrap_or(p)
                    .to_string()
            };
            hits.push((shown, token.clone()));
        }
        for (shown, token) in hits {
            self.event(&shown, &token);
        }
    }

    pub fn event(&mut self, path: &str, token: &str) {
        let mut payload = path.as_bytes().to_vec();
        payload.push(0);
        payload.extend_from_slice(token.as_bytes());
        payload.push(0);
        self.events
            .extend(msg_bytes(msg::WATCH_EVENT, 0, 0, &payload));
    }

    /// Test helper: write outside transactions (fires watches).
    pub fn write(&mut self, p: &str, value: &str) {
        let p = Core::abs(p);
        Core::create(&mut self.tree, &p);
        if let Some(n) = self.tree.get_mut(&p) {
            n.value = value.as_bytes().to_vec();
        }
        self.fire(&p);
    }

    /// Test helper: remove a subtree (fires watches).
    pub fn rm_for_test(&mut self, p: &str) {
        let p = Core::abs(p);
        let below = format!("{p}/");
        self.tree.retain(|k, _| *k != p && !k.starts_with(&below));
        self.fire(&p);
    }

    /// Test helper: read a value.
    pub fn read(&self, p: &str) -> Option<String> {
        self.tree
            .get(&Core::abs(p))
            .map(|n| String::from_utf8_lossy(&n.value).into_owned())
    }

    fn handle(&mut self, h: &MsgHeader, payload: &[u8]) -> Vec<u8> {
        self.requests.push(*h);
        match self.op(h, payload) {
            Ok(body) => msg_bytes(h.ty, h.req_id, h.tx_id, &body),
            Err(e) => {
                let mut b = e.as_bytes().to_vec();
                b.push(0);
                msg_bytes(msg::ERROR, h.req_id, h.tx_id, &b)
            }
        }
    }

    fn op(&mut self, h: &MsgHeader, payload: &[u8]) -> Result<Vec<u8>, &'static str> {
        let tx = h.tx_id;
        let first_nul = payload.iter().position(|&b| b == 0).ok_or("EINVAL")?;
        let arg0 = std::str::from_utf8(&payload[..first_nul])
            .map_err(|_| "EINVAL")?
            .to_string();
        let rest = &payload[first_nul + 1..];
        let strings = |b: &[u8]| -> Vec<String> {
            let b = b.strip_suffix(&[0]).unwrap_or(b);
            if b.is_empty() {
                return vec![];
            }
            b.split(|&c| c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let ok = || b"OK\0".to_vec();
        let p = Core::abs(&arg0);
        match h.ty {
            msg::READ => {
                let t = self.tree_mut(tx).ok_or("ENOENT")?;
                Ok(t.get(&p).ok_or("ENOENT")?.value.clone())
            }
            msg::WRITE => {
                let t = self.tree_mut(tx).ok_or("ENOENT")?;
                Core::create(t, &p);
                t.get_mut(&p).ok_or("EINVAL")?.value = rest.to_vec();
                self.changed(tx, &p);
                Ok(ok())
            }
            msg::MKDIR => {
                let t = self.tree_mut(tx).ok_or("ENOENT")?;
                if !t.contains_key(&p) {
                    Core::create(t, &p);
                    self.changed(tx, &p);
                }
                Ok(ok())
            }
            msg::RM => {
                let t = self.tree_mut(tx).ok_or("ENOENT")?;
                if !t.contains_key(&p) {
                    let parent_exists = Core::parent(&p).is_some_and(|q| t.contains_key(&q));
                    return if parent_exists {
                        Ok(ok())
                    } else {
                        Err("ENOENT")
                    };
                }
                let below = format!("{p}/");
                t.retain(|k, _| *k != p && !k.starts_with(&below));
                self.changed(tx, &p);
                Ok(ok())
            }
            msg::DIRECTORY => {
                let t = self.tree_mut(tx).ok_or("ENOENT")?;
                if !t.contains_key(&p) {
                    return Err("ENOENT");
                }
                let prefix = if p == "/" {
                    "/".to_string()
                } else {
                    format!("{p}/")
                };
                let mut names: Vec<&str> = t
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .filter(|name| !name.is_empty() && !name.contains('/'))
                    .collect();
                names.sort_unstable();
                let mut out = vec![];
                for name in names {
                    out.extend_from_slice(name.as_bytes());
                    out.push(0);
                }
                Ok(out)
            }
            msg::GET_PERMS => {
                let t = self.tree_mut(tx).ok_or("ENOENT")?;
                let n = t.get(&p).ok_or("ENOENT")?;
                let mut out = vec![];
                for perm in &n.perms {
                    out.extend_from_slice(perm.as_bytes());
                    out.push(0);
                }
                Ok(out)
            }
            msg::SET_PERMS => {
                let perms = strings(rest);
                if perms.is_empty() {
                    return Err("EINVAL");
                }
                let t = self.tree_mut(tx).ok_or("ENOENT")?;
                t.get_mut(&p).ok_or("ENOENT")?.perms = perms;
                self.changed(tx, &p);
                Ok(ok())
            }
            msg::WATCH => {
                let s = strings(rest);
                let token = s.first().ok_or("EINVAL")?.clone();
                if self.watches.iter().any(|(w, t)| *w == arg0 && *t == token) {
                    return Err("EEXIST");
                }
                self.watches.push((arg0.clone(), token.clone()));
                self.event(&arg0, &token);
                Ok(ok())
            }
            msg::UNWATCH => {
                let s = strings(rest);
                let token = s.first().ok_or("EINVAL")?.clone();
                let before = self.watches.len();
                self.watches.retain(|(w, t)| !(*w == arg0 && *t == token));
                if self.watches.len() == before {
                    return Err("ENOENT");
                }
                Ok(ok())
            }
            msg::TRANSACTION_START => {
                let id = self.next_tx;
                self.next_tx += 1;
                self.txs.insert(id, (self.tree.clone(), vec![]));
                Ok(format!("{id}\0").into_bytes())
            }
            msg::TRANSACTION_END => {
                let (t, changed) = self.txs.remove(&tx).ok_or("ENOENT")?;
                match arg0.as_str() {
                    "T" => {
                        self.commits += 1;
                        if self.eagain_commits > 0 {
                            self.eagain_commits -= 1;
                            return Err("EAGAIN");
                        }
                        self.tree = t;
                        for p in changed {
                            self.fire(&p);
                        }
                        Ok(ok())
                    }
                    "F" => Ok(ok()),
                    _ => Err("EINVAL"),
                }
            }
            msg::GET_DOMAIN_PATH => Ok(format!("/local/domain/{arg0}\0").into_bytes()),
            _ => Err("EINVAL"),
        }
    }
}

type Hook = Box<dyn FnMut(&mut Core)>;
type Mangle = Box<dyn FnMut(&MsgHeader, Vec<u8>) -> Vec<u8>>;

/// The fake xenstored's connection to one guest.
pub struct Server {
    pub core: Core,
    mem: SharedMem<'static>,
    /// The store page `mem` covers (the fake owns it; for the R7 check).
    page: NonNull<u8>,
    inbuf: Vec<u8>,
    pub out: VecDeque<u8>,
    /// Most bytes written into the response ring per step.
    pub max_chunk: usize,
    /// While set the server neither reads nor writes.
    pub paused: bool,
    /// Runs every step after requests are handled (a backend, a toolstack).
    pub hook: Option<Hook>,
    /// Rewrites the bytes sent for a reply (bad-input tests).
    pub mangle: Option<Mangle>,
    pub steps: u64,
    /// Request headers audited (R7).
    pub headers_audited: u64,
    /// While set, a reconnect asked for (`connection = 1`) is never completed (X14).
    pub hold_reconnect: bool,
    /// Reconnects done.
    pub reconnects: u32,
    /// The value a reconnect sets the four ring indices to (xenstored: 0).
    pub reset_index: u32,
}

/// Where the reserved part of the store page starts (after `error`).
pub const RESERVED: usize = iface::ERROR + 4;

impl Server {
    /// Queues raw bytes for the response ring.
    pub fn inject(&mut self, bytes: &[u8]) {
        self.out.extend(bytes);
    }

    /// One round of the server. Not recorded by the read audit (only the client is
    /// under test).
    pub fn step(&mut self) {
        hypercall::audit::paused(|| self.step_inner());
    }

    fn step_inner(&mut self) {
        self.steps += 1;
        if self.paused {
            return;
        }
        // R7: the page past the `error` field is reserved; nobody writes there.
        // Copied with one plain copy and compared whole (one `memcmp`): the server runs
        // every `wait()`, and a volatile word loop here was most of the tests' time
        // under Miri. The server is not the code under test, and nothing else runs
        // while it does.
        let mut tail = [0u8; 4096 - RESERVED];
        // SAFETY: `page` is the fake's own 4096-byte store page (alive as long as the
        // platform), `RESERVED..4096` lies inside it; `tail` is a private array; no
        // reference into the shared page is formed.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.page.as_ptr().add(RESERVED),
                tail.as_mut_ptr(),
                tail.len(),
            );
        }
        assert!(
            tail == [0u8; 4096 - RESERVED],
            "R7: the reserved part of the store page was written"
        );
        // A reconnect (`io/xs_wire.h`), when offered and asked for: drop every
        // partial message, watch and transaction, empty the rings, then clear
        // `connection`.
        let offered = self.mem.load_u32(iface::SERVER_FEATURES) & SERVER_FEATURE_RECONNECTION;
        if offered != 0 && self.mem.load_u32(iface::CONNECTION) == RECONNECT {
            if self.hold_reconnect {
                return;
            }
            self.inbuf.clear();
            self.out.clear();
            self.core.watches.clear();
            self.core.txs.clear();
            self.core.events.clear();
            for off in iface::RING_INDICES {
                self.mem.store_u32(off, self.reset_index);
            }
            self.mem.store_u32(iface::ERROR, 0);
            self.mem.store_u32(iface::CONNECTION, CONNECTED);
            self.reconnects += 1;
        }
        // Read requests.
        let cons = self.mem.load_u32(iface::REQ_CONS);
        let prod = self.mem.load_u32(iface::REQ_PROD);
        let avail = prod.wrapping_sub(cons) as usize;
        if avail > 0 && avail <= RING_SIZE {
            // At most two copies (before and after the wrap point), not one load per
            // byte: the per-byte loop dominated the tests' run time under Miri.
            // Through a stack buffer: `Vec::resize` zeroes byte by byte under Miri.
            let mut buf = [0u8; RING_SIZE];
            let at = cons as usize % RING_SIZE;
            let first = avail.min(RING_SIZE - at);
            self.mem.read(iface::REQ + at, &mut buf[..first]);
            self.mem.read(iface::REQ, &mut buf[first..avail]);
            self.inbuf.extend_from_slice(&buf[..avail]);
            self.mem.store_u32(iface::REQ_CONS, prod);
        }
        // Handle complete requests.
        while self.inbuf.len() >= 16 {
            let h = MsgHeader::read_from_bytes(&self.inbuf[..16]).unwrap();
            // R7: every request header is well formed (no stray bits in `type`, a
            // length within the payload maximum).
            self.headers_audited += 1;
            assert!(
                h.ty < msg::TYPE_COUNT && h.ty != msg::WATCH_EVENT && h.ty != msg::ERROR,
                "R7: request with type {:#x}",
                h.ty
            );
            assert!(
                h.len as usize <= PAYLOAD_MAX,
                "R7: request with length {}",
                h.len
            );
            let total = 16 + h.len as usize;
            if self.inbuf.len() < total {
                break;
            }
            let payload: Vec<u8> = self.inbuf[16..total].to_vec();
            self.inbuf.drain(..total);
            let reply = self.core.handle(&h, &payload);
            let reply = match self.mangle.as_mut() {
                Some(m) => m(&h, reply),
                None => reply,
            };
            self.out.extend(reply);
            let ev = std::mem::take(&mut self.core.events);
            self.out.extend(ev);
        }
        if let Some(hook) = self.hook.as_mut() {
            hook(&mut self.core);
        }
        let ev = std::mem::take(&mut self.core.events);
        self.out.extend(ev);
        self.flush();
    }

    fn flush(&mut self) {
        // Nothing queued: nothing to write (the index stays; a step that only looks
        // costs Miri less).
        if self.out.is_empty() {
            return;
        }
        let cons = self.mem.load_u32(iface::RSP_CONS);
        let prod = self.mem.load_u32(iface::RSP_PROD);
        let used = prod.wrapping_sub(cons) as usize;
        let space = RING_SIZE.saturating_sub(used);
        let n = space.min(self.out.len()).min(self.max_chunk);
        // Copied whole out of the queue's two slices, not drained byte by byte.
        let mut bytes = Vec::with_capacity(n);
        let (a, b) = self.out.as_slices();
        let from_a = n.min(a.len());
        bytes.extend_from_slice(&a[..from_a]);
        bytes.extend_from_slice(&b[..n - from_a]);
        self.out.drain(..n);
        let at = prod as usize % RING_SIZE;
        let first = n.min(RING_SIZE - at);
        self.mem.write(iface::RSP + at, &bytes[..first]);
        self.mem.write(iface::RSP, &bytes[first..]);
        self.mem
            .store_u32(iface::RSP_PROD, prod.wrapping_add(n as u32));
    }
}

struct Shared {
    /// The store page, owned as a raw pointer: moving a `Box` would retag it and
    /// invalidate `mem` under Miri's aliasing model.
    page: *mut [u64; 512],
    mem: SharedMem<'static>,
    server: RefCell<Server>,
    now: Cell<u64>,
    notifies: Cell<u64>,
    shutdowns: RefCell<Vec<u32>>,
    store_pfn: Cell<u64>,
    /// When set, every notification steps the server at once and costs this much
    /// virtual time: a xenstored running concurrently, on a clock that moves.
    concurrent_ns: Cell<Option<u64>>,
    /// Virtual time each `wait()` takes ([`WAIT_NS`] unless set).
    wait_ns: Cell<u64>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: `page` came from `Box::into_raw` and is freed exactly once, here, when
        // the last user of `mem` (the server and the platform clones) is gone.
        drop(unsafe { Box::from_raw(self.page) });
    }
}

/// The fake platform. Clones share one page, server and clock.
#[derive(Clone)]
pub struct FakePlatform(Rc<Shared>);

impl FakePlatform {
    /// A platform whose four ring indices all start at `start`.
    pub fn with_indices(start: u32) -> FakePlatform {
        let page = Box::into_raw(Box::new([0u64; 512]));
        let ptr = NonNull::new(page.cast::<u8>()).unwrap();
        // SAFETY: the box lives in `Shared` as long as every copy of `mem` (the
        // server's and the platform's, all inside `Shared`, which frees the page
        // last, in its `Drop`); nothing holds references into it. `'static`
        // because the owner is the fake itself (a test-only owner-based design).
        let mem = unsafe { SharedMem::new(ptr, 4096) };
        for off in [
            iface::REQ_CONS,
            iface::REQ_PROD,
            iface::RSP_CONS,
            iface::RSP_PROD,
        ] {
            mem.store_u32(off, start);
        }
        let server = Server {
            core: Core::new(),
            mem,
            page: ptr,
            inbuf: vec![],
            out: VecDeque::new(),
            max_chunk: usize::MAX,
            paused: false,
            hook: None,
            mangle: None,
            steps: 0,
            headers_audited: 0,
            hold_reconnect: false,
            reconnects: 0,
            reset_index: 0,
        };
        FakePlatform(Rc::new(Shared {
            page,
            mem,
            server: RefCell::new(server),
            now: Cell::new(0),
            notifies: Cell::new(0),
            shutdowns: RefCell::new(vec![]),
            store_pfn: Cell::new(STORE_PFN),
            concurrent_ns: Cell::new(None),
            wait_ns: Cell::new(WAIT_NS),
        }))
    }

    pub fn new() -> FakePlatform {
        FakePlatform::with_indices(0)
    }

    pub fn server(&self) -> RefMut<'_, Server> {
        self.0.server.borrow_mut()
    }

    pub fn mem(&self) -> SharedMem<'_> {
        self.0.mem
    }

    pub fn notifies(&self) -> u64 {
        self.0.notifies.get()
    }

    pub fn shutdowns(&self) -> Vec<u32> {
        self.0.shutdowns.borrow().clone()
    }

    pub fn set_store_pfn(&self, pfn: u64) {
        self.0.store_pfn.set(pfn);
    }

    pub fn now(&self) -> u64 {
        self.0.now.get()
    }

    /// Makes each `wait()` take `ns` of virtual time instead of [`WAIT_NS`] (a
    /// coarser clock: fewer waits for a long timeout, which Miri pays per wait).
    pub fn set_wait_ns(&self, ns: u64) {
        self.0.wait_ns.set(ns);
    }

    /// Moves the clock on by `ns` without stepping the server (as waits with
    /// nothing for it to do would, at a fraction of their cost under Miri).
    pub fn advance(&self, ns: u64) {
        self.0.now.set(self.0.now.get() + ns);
    }

    /// Makes the server answer every notification at once (as a concurrent xenstored
    /// would), each costing `ns` of virtual time. `None`: only `wait()` steps it.
    pub fn set_concurrent(&self, ns: Option<u64>) {
        self.0.concurrent_ns.set(ns);
    }

    /// A client on this platform (through the HVM params, as a guest would).
    pub fn client(&self) -> Xenstore<FakePlatform> {
        Xenstore::from_hvm_params(self.clone()).unwrap()
    }
}

impl Hypercall for FakePlatform {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        match (op, args[0] as u32) {
            (EVENT_CHANNEL_OP, evtchn::OP_SEND) => {
                // SAFETY: the caller passes a valid evtchn_send.
                let arg = unsafe { (args[1] as *const evtchn::PortArg).read() };
                if arg.port != STORE_PORT {
                    return -22;
                }
                self.0.notifies.set(self.0.notifies.get() + 1);
                if let Some(ns) = self.0.concurrent_ns.get() {
                    self.0.now.set(self.0.now.get() + ns);
                    self.0.server.borrow_mut().step();
                }
                0
            }
            (HVM_OP, hvm::OP_GET_PARAM) => {
                let p = args[1] as *mut hvm::Param;
                // SAFETY: the caller passes a valid xen_hvm_param.
                let mut param = unsafe { p.read() };
                param.value = match param.index {
                    hvm::PARAM_STORE_PFN => self.0.store_pfn.get(),
                    hvm::PARAM_STORE_EVTCHN => u64::from(STORE_PORT),
                    _ => return -22,
                };
                // SAFETY: as above.
                unsafe { p.write(param) };
                0
            }
            (SCHED_OP, sched::OP_SHUTDOWN) => {
                // SAFETY: the caller passes a valid sched_shutdown.
                let arg = unsafe { (args[1] as *const sched::Shutdown).read() };
                self.0.shutdowns.borrow_mut().push(arg.reason);
                0
            }
            _ => -38,
        }
    }
}

// SAFETY: allocates nothing; the only mapped frame is the store page, which the fake
// owns for as long as the platform lives.
unsafe impl Platform for FakePlatform {
    fn alloc_pages(&self, _count: usize) -> Option<NonNull<u8>> {
        None
    }

    unsafe fn free_pages(&self, _ptr: NonNull<u8>, _count: usize) {}

    fn virt_to_gfn(&self, _addr: NonNull<u8>) -> Option<Gfn> {
        None
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        (gfn.0 == STORE_PFN).then(|| NonNull::new(self.0.mem.as_ptr()).unwrap())
    }

    fn wait(&self) {
        self.0.now.set(self.0.now.get() + self.0.wait_ns.get());
        self.0.server.borrow_mut().step();
    }

    fn now_ns(&self) -> u64 {
        self.0.now.get()
    }
}

#[allow(dead_code)]
pub fn port() -> Port {
    Port(STORE_PORT)
}
