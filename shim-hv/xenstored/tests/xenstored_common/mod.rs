//! Shared helpers for the xenstored integration tests: a fake guest store page in host
//! memory with a minimal guest-side ring client, and wire encoding helpers.
#![allow(dead_code)]

use hypercall::abi::xs_wire::{iface, msg, MsgHeader, RING_SIZE};
use hypercall::SharedMem;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use xenstored::Xenstored;

/// Upper bound for waiting on the daemon's worker (a deadline against hangs, not a
/// timing assertion).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One 4 KiB page of host memory standing in for a guest's store page.
pub struct HostPage {
    _buf: Vec<u64>,
    mem: SharedMem<'static>,
}

impl HostPage {
    pub fn new() -> Self {
        let mut buf = vec![0u64; 512];
        let ptr = NonNull::new(buf.as_mut_ptr().cast::<u8>()).expect("vec pointer");
        // SAFETY: the buffer lives as long as this HostPage (its heap block never moves)
        // and is only accessed through the SharedMem (no references are formed). The
        // tests release the domain before dropping the page.
        let mem = unsafe { SharedMem::new(ptr, 4096) };
        Self { _buf: buf, mem }
    }

    pub fn mem(&self) -> SharedMem<'static> {
        self.mem
    }
}

impl Default for HostPage {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts the daemon's notifications and lets a test wait for the next one.
#[derive(Default)]
pub struct Notifier {
    count: Mutex<u64>,
    cv: Condvar,
}

impl Notifier {
    pub fn callback(self: &Arc<Self>) -> Arc<dyn Fn() + Send + Sync> {
        let me = self.clone();
        Arc::new(move || {
            *me.count.lock().unwrap() += 1;
            me.cv.notify_all();
        })
    }

    pub fn count(&self) -> u64 {
        *self.count.lock().unwrap()
    }

    /// Waits until the count exceeds `seen`; false at the deadline.
    pub fn wait_past(&self, seen: u64) -> bool {
        let end = Instant::now() + DEADLINE;
        let mut c = self.count.lock().unwrap();
        while *c <= seen {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            c = self.cv.wait_timeout(c, end - now).unwrap().0;
        }
        true
    }
}

pub fn header_bytes(ty: u32, req_id: u32, tx_id: u32, len: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for f in [ty, req_id, tx_id, len] {
        v.extend_from_slice(&f.to_le_bytes());
    }
    v
}

pub fn message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = header_bytes(ty, req_id, tx_id, payload.len() as u32);
    v.extend_from_slice(payload);
    v
}

pub fn parse_header(b: &[u8]) -> MsgHeader {
    let f = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    MsgHeader {
        ty: f(0),
        req_id: f(4),
        tx_id: f(8),
        len: f(12),
    }
}

/// NUL-joined strings.
pub fn strs(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_bytes());
        v.push(0);
    }
    v
}

/// A fake guest: its store page and a minimal ring client.
pub struct Guest {
    pub domid: u16,
    pub page: HostPage,
    pub notifier: Arc<Notifier>,
    pub xs: Arc<Xenstored>,
    rx: Vec<u8>,
    next_req: u32,
}

impl Guest {
    /// A page whose indices all start at `start`, introduced as `domid`.
    pub fn introduce_at(xs: &Arc<Xenstored>, domid: u16, start: u32) -> Guest {
        let page = HostPage::new();
        for off in [
            iface::REQ_CONS,
            iface::REQ_PROD,
            iface::RSP_CONS,
            iface::RSP_PROD,
        ] {
            page.mem().store_u32(off, start);
        }
        let notifier = Arc::new(Notifier::default());
        xs.introduce_domain(domid, page.mem(), notifier.callback())
            .expect("introduce");
        Guest {
            domid,
            page,
            notifier,
            xs: xs.clone(),
            rx: Vec::new(),
            next_req: 1,
        }
    }

    pub fn introduce(xs: &Arc<Xenstored>, domid: u16) -> Guest {
        Self::introduce_at(xs, domid, 0)
    }

    pub fn mem(&self) -> SharedMem<'static> {
        self.page.mem()
    }

    /// Free space in the request ring.
    pub fn req_space(&self) -> usize {
        let m = self.mem();
        RING_SIZE
            - m.load_u32(iface::REQ_PROD)
                .wrapping_sub(m.load_u32(iface::REQ_CONS)) as usize
    }

    /// Puts raw bytes on the request ring (as much as fits); returns how many.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> usize {
        let m = self.mem();
        let mut done = 0;
        while done < bytes.len() {
            let prod = m.load_u32(iface::REQ_PROD);
            let space = self.req_space();
            if space == 0 {
                break;
            }
            let off = prod as usize & (RING_SIZE - 1);
            let n = space.min(RING_SIZE - off).min(bytes.len() - done);
            m.write(iface::REQ + off, &bytes[done..done + n]);
            m.store_u32(iface::REQ_PROD, prod.wrapping_add(n as u32));
            done += n;
        }
        done
    }

    /// Sends a request (in pieces if it is larger than the ring) and serves the ring
    /// synchronously.
    pub fn send(&mut self, ty: u32, tx_id: u32, payload: &[u8]) -> u32 {
        let id = self.next_req;
        self.next_req += 1;
        let m = message(ty, id, tx_id, payload);
        let mut sent = 0;
        for _ in 0..64 {
            sent += self.push_bytes(&m[sent..]);
            self.xs.service(self.domid);
            if sent == m.len() {
                return id;
            }
        }
        panic!("request ring stuck");
    }

    /// Takes whatever response bytes are available.
    pub fn pull_bytes(&mut self) {
        let m = self.mem();
        loop {
            let cons = m.load_u32(iface::RSP_CONS);
            let prod = m.load_u32(iface::RSP_PROD);
            let avail = prod.wrapping_sub(cons) as usize;
            assert!(avail <= RING_SIZE, "daemon broke the response ring");
            if avail == 0 {
                return;
            }
            let off = cons as usize & (RING_SIZE - 1);
            let n = avail.min(RING_SIZE - off);
            let mut buf = vec![0u8; n];
            m.read(iface::RSP + off, &mut buf);
            self.rx.extend_from_slice(&buf);
            m.store_u32(iface::RSP_CONS, cons.wrapping_add(n as u32));
        }
    }

    /// The next complete message, if any (after pulling).
    pub fn next_message(&mut self) -> Option<(MsgHeader, Vec<u8>)> {
        self.pull_bytes();
        if self.rx.len() < 16 {
            return None;
        }
        let h = parse_header(&self.rx[..16]);
        let total = 16 + h.len as usize;
        if self.rx.len() < total {
            return None;
        }
        let payload = self.rx[16..total].to_vec();
        self.rx.drain(..total);
        Some((h, payload))
    }

    /// All complete messages now available (serving the ring again after consuming,
    /// so queued output follows).
    pub fn drain(&mut self) -> Vec<(MsgHeader, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut got = false;
            while let Some(m) = self.next_message() {
                out.push(m);
                got = true;
            }
            self.xs.service(self.domid);
            if !got && self.next_message_peek().is_none() {
                return out;
            }
        }
    }

    fn next_message_peek(&mut self) -> Option<()> {
        self.pull_bytes();
        if self.rx.len() >= 16 {
            let h = parse_header(&self.rx[..16]);
            if self.rx.len() >= 16 + h.len as usize {
                return Some(());
            }
        }
        None
    }

    /// Request and its reply (watch events before it are kept in `events`).
    pub fn call(
        &mut self,
        ty: u32,
        tx_id: u32,
        payload: &[u8],
        events: &mut Vec<(String, String)>,
    ) -> (u32, Vec<u8>) {
        let id = self.send(ty, tx_id, payload);
        let mut reply = None;
        for (h, p) in self.drain() {
            if h.ty == msg::WATCH_EVENT {
                events.push(split_event(&p));
            } else if h.req_id == id && reply.is_none() {
                reply = Some((h.ty, p));
            } else {
                panic!("unexpected message {h:?}");
            }
        }
        reply.unwrap_or_else(|| panic!("no reply to request {id}"))
    }

    /// Shorthand: a request outside transactions, events ignored.
    pub fn req(&mut self, ty: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let mut ev = Vec::new();
        self.call(ty, 0, payload, &mut ev)
    }

    pub fn error(&self) -> u32 {
        self.mem().load_u32(iface::ERROR)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // The page must outlive the daemon's use of it.
        self.xs.release_domain(self.domid);
    }
}

pub fn split_event(p: &[u8]) -> (String, String) {
    let parts: Vec<&[u8]> = p.split(|&b| b == 0).collect();
    assert!(
        parts.len() == 3 && parts[2].is_empty(),
        "bad event payload {p:?}"
    );
    (
        String::from_utf8_lossy(parts[0]).into_owned(),
        String::from_utf8_lossy(parts[1]).into_owned(),
    )
}

/// Counter helper for tests that just need unique names.
pub fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
