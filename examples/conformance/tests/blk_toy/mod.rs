// A small blkfront written from scratch against the public API (xenbus for the
// handshake, hypercall for grants, event channels and shared memory): one ring
// page, one request at a time, one bounce page per request. [`Mistakes`] switch
// on the careless shortcuts a real driver might take; each one must be caught by
// some case of the block catalogue.

use core::time::Duration;

use hypercall::abi::blkif::{self, Request, RequestDiscard, Response};
use hypercall::abi::ring as layout;
use hypercall::gnttab::GrantTable;
use hypercall::{DomId, GrantRef, Platform, Port, SharedPages, Xen};
use xen_conformance::blk::{BlockDriver, Env, GRANT_ENTRIES};
use xen_conformance::HostPlatform;
use xenbus::frontend::{BackendEvent, FrontendHandshake, Phase};
use xenbus::{Store, XenbusState, Xenstore};
use zerocopy::{FromZeros, IntoBytes};

/// Virtual time the toy waits for anything.
const T: Duration = Duration::from_millis(100);
/// Waits per timeout (each wait is 1 ms of virtual time).
const WAITS: u32 = 100;
/// Slots of a one-page blkif ring.
const SLOTS: u32 = 32;

/// Careless shortcuts, each switched on by one bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mistakes(pub u32);

impl Mistakes {
    /// None: the careful toy.
    pub const NONE: Mistakes = Mistakes(0);
    /// Takes the next response without checking its id or operation.
    pub const TRUST_IDS: Mistakes = Mistakes(1 << 0);
    /// Treats any status as success.
    pub const IGNORE_STATUS: Mistakes = Mistakes(1 << 1);
    /// Waits for a response forever.
    pub const NO_TIMEOUT: Mistakes = Mistakes(1 << 2);
    /// Grants pages for writes writable.
    pub const WRITABLE_WRITE_GRANTS: Mistakes = Mistakes(1 << 3);
    /// Believes any `sectors`/`sector-size`, at connect and later.
    pub const TRUST_GEOMETRY: Mistakes = Mistakes(1 << 4);
    /// Sizes its ring from `max-ring-page-order` as offered (a shift by it).
    pub const TRUST_OFFERS: Mistakes = Mistakes(1 << 5);
    /// Neither zeroes its bounce page nor takes a new one per connection.
    pub const STALE_BOUNCE: Mistakes = Mistakes(1 << 6);
    /// Leaves garbage in the request's padding.
    pub const DIRTY_PADDING: Mistakes = Mistakes(1 << 7);
    /// Ignores a failed notification.
    pub const IGNORE_NOTIFY_ERROR: Mistakes = Mistakes(1 << 8);
    /// Never looks at xenstore after connecting.
    pub const NO_EVENTS: Mistakes = Mistakes(1 << 9);
    /// Uses a request's place in its batch as its id and forgets a request it
    /// gave up on.
    pub const FORGET_TIMED_OUT: Mistakes = Mistakes(1 << 10);
    /// Ignores a failed end of access and uses the page again.
    pub const IGNORE_END_FAILURE: Mistakes = Mistakes(1 << 11);
    /// Does not end its ring grant at close.
    pub const LEAK_GRANTS: Mistakes = Mistakes(1 << 12);
    /// Ignores `info` (read-only disks get writes).
    pub const IGNORE_INFO: Mistakes = Mistakes(1 << 13);
    /// Keeps sending flushes and discards the backend said it does not support.
    pub const KEEP_FEATURES: Mistakes = Mistakes(1 << 14);
    /// Trusts `rsp_prod`: takes whatever it claims.
    pub const TRUST_INDICES: Mistakes = Mistakes(1 << 15);
    /// Counts sectors in the disk's sector size, not 512 bytes.
    pub const WRONG_SECTOR_UNIT: Mistakes = Mistakes(1 << 16);
    /// Indexes ring slots without masking (runs off the ring page).
    pub const NO_SLOT_MASK: Mistakes = Mistakes(1 << 17);
    /// Keeps its consumer index in the shared `rsp_event` field.
    pub const STATE_IN_SHARED_MEMORY: Mistakes = Mistakes(1 << 18);
    /// Takes responses out of submission order as a protocol error.
    pub const ASSUME_IN_ORDER: Mistakes = Mistakes(1 << 19);
    /// Fails the operation that met a protocol error but not the device: the
    /// next request is sent as if nothing happened.
    pub const KEEP_GOING: Mistakes = Mistakes(1 << 20);
    /// Not a mistake: waits a turn after publishing each request (the backend
    /// sees one request a turn).
    pub const ONE_PER_TURN: Mistakes = Mistakes(1 << 22);
    /// At close, clears the entries of the grants the backend still maps (a raw
    /// write of the table) instead of keeping them until it lets go.
    pub const FORCE_END: Mistakes = Mistakes(1 << 23);
    /// Not a mistake: reconnects while the old backend still maps some of its
    /// pages, which stay set aside (never granted again).
    pub const RECONNECT_WHILE_MAPPED: Mistakes = Mistakes(1 << 24);
    /// At close, clears the entry of the first grant the backend still maps (a
    /// raw write of the table) and keeps the others until it lets go.
    pub const FORCE_END_ONE: Mistakes = Mistakes(1 << 25);
    /// Copies a read's data out with its first byte flipped (a broken copy-out).
    pub const GARBLE_READS: Mistakes = Mistakes(1 << 26);
    /// Not a mistake: the driver has no discard (the trait's default answer).
    pub const WITHOUT_DISCARD: Mistakes = Mistakes(1 << 21);

    fn has(self, m: Mistakes) -> bool {
        self.0 & m.0 != 0
    }
}

/// One connection.
struct Conn {
    ring: SharedPages,
    ring_ref: GrantRef,
    port: Port,
    req_prod: u32,
    rsp_cons: u32,
    sector_size: u64,
    sectors: u64,
    read_only: bool,
    flush: bool,
    discard: bool,
}

/// A request given up on while the backend still had it: its id, grant, page.
struct Orphan {
    id: u64,
    gref: Option<GrantRef>,
    page: SharedPages,
}

/// The toy driver (see the top of this file).
pub struct Toy<'e> {
    host: HostPlatform,
    grants: &'e GrantTable<GRANT_ENTRIES>,
    xs: Xenstore<HostPlatform>,
    hs: FrontendHandshake,
    m: Mistakes,
    conn: Option<Conn>,
    bounce: Option<SharedPages>,
    next_id: u64,
    broken: Option<String>,
    orphans: Vec<Orphan>,
    /// Grants the backend would not let go, with their pages (never reused).
    stuck: Vec<(GrantRef, SharedPages)>,
}

/// Builds a toy with `m` for a case.
pub fn make(
    m: Mistakes,
) -> impl for<'e> FnMut(&'e Env<'e>) -> Result<Box<dyn BlockDriver + 'e>, String> {
    move |env: &Env<'_>| {
        let mut xs = Xenstore::from_hvm_params(env.host.clone()).map_err(|e| e.to_string())?;
        xs.set_timeout(T);
        let hs = FrontendHandshake::new(&env.node).map_err(|e| e.to_string())?;
        Ok(Box::new(Toy {
            host: env.host.clone(),
            grants: env.grants,
            xs,
            hs,
            m,
            conn: None,
            bounce: None,
            next_id: 1,
            broken: None,
            orphans: Vec::new(),
            stuck: Vec::new(),
        }) as Box<dyn BlockDriver + '_>)
    }
}

fn s(e: impl core::fmt::Debug) -> String {
    format!("{e:?}")
}

impl Toy<'_> {
    fn key(&mut self, key: &str) -> Result<Option<String>, String> {
        let path = self.hs.backend_key(key).map_err(s)?;
        let mut buf = [0u8; 64];
        match self.xs.read_str(&path, &mut buf) {
            Ok(v) => Ok(Some(v.to_string())),
            Err(xenbus::Error::Xenstore(xenbus::ErrnoName::Enoent))
            | Err(xenbus::Error::MissingKey(_)) => Ok(None),
            Err(e) => Err(format!("{key}: {e}")),
        }
    }

    fn num(&mut self, key: &str) -> Result<Option<u64>, String> {
        match self.key(key)? {
            None => Ok(None),
            Some(v) => match v.parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) if self.m.has(Mistakes::TRUST_GEOMETRY) => Ok(Some(0)),
                Err(_) => Err(format!("backend key {key} = {v:?} is not a number")),
            },
        }
    }

    /// Sectors and sector size as the backend offers them, checked (unless
    /// trusting): (capacity bytes, sector size, sectors).
    fn geometry(&mut self) -> Result<(u64, u64, u64), String> {
        let sectors = self.num("sectors")?.ok_or("no sectors")?;
        let ss = self.num("sector-size")?.unwrap_or(512);
        if self.m.has(Mistakes::TRUST_GEOMETRY) {
            return Ok((sectors.wrapping_mul(ss), ss.max(1), sectors));
        }
        if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
            return Err(format!("sector-size {ss} is unusable"));
        }
        if sectors == 0 {
            return Err("the disk has 0 sectors".into());
        }
        let cap = sectors
            .checked_mul(ss)
            .ok_or(format!("{sectors} sectors of {ss} bytes overflow"))?;
        Ok((cap, ss, sectors))
    }

    /// Ends `r`; a grant the backend still maps is kept (with its page) for later.
    fn end(&mut self, r: GrantRef, page: SharedPages) -> Result<(), String> {
        match self.grants.end_access(r) {
            Ok(()) => Ok(()),
            Err(_) if self.m.has(Mistakes::IGNORE_END_FAILURE) => Ok(()),
            Err(e) => {
                self.stuck.push((r, page));
                Err(format!("backend still maps grant {}: {e:?}", r.0))
            }
        }
    }

    /// Retries the stuck grants; how many are left.
    fn retry_stuck(&mut self) -> usize {
        self.stuck
            .retain(|(r, _)| self.grants.end_access(*r).is_err());
        self.stuck.len()
    }

    fn teardown(&mut self) {
        if self.m.has(Mistakes::FORCE_END) {
            if let Some(table) = self.grants.frames() {
                for (r, _) in self.stuck.drain(..) {
                    // A v1 entry is 8 bytes: flags, domid, frame.
                    table.write(r.0 as usize * 8, &[0u8; 8]);
                }
            }
        } else if self.m.has(Mistakes::FORCE_END_ONE) && !self.stuck.is_empty() {
            if let Some(table) = self.grants.frames() {
                let (r, _) = self.stuck.remove(0);
                table.write(r.0 as usize * 8, &[0u8; 8]);
            }
        }
        if let Some(c) = self.conn.take() {
            if !self.m.has(Mistakes::LEAK_GRANTS) {
                let _ = self.end(c.ring_ref, c.ring);
            }
            let _ = Xen(&self.host).evtchn_close(c.port);
        }
        for o in std::mem::take(&mut self.orphans) {
            if let Some(g) = o.gref {
                let _ = self.end(g, o.page);
            }
        }
        if !self.m.has(Mistakes::STALE_BOUNCE) {
            self.bounce = None;
        }
        self.broken = None;
    }

    fn fail(&mut self, why: String) -> String {
        if !self.m.has(Mistakes::KEEP_GOING) {
            self.broken = Some(why.clone());
        }
        why
    }

    /// The ring offset of slot `idx`.
    fn slot(&self, idx: u32) -> usize {
        let i = if self.m.has(Mistakes::NO_SLOT_MASK) {
            idx
        } else {
            idx % SLOTS
        };
        layout::HEADER_SIZE + i as usize * core::mem::size_of::<Request>()
    }

    /// Publishes `req` (its id is set here) and notifies; returns the id.
    fn submit(&mut self, mut req: Request, pos: u64) -> Result<u64, String> {
        if let Some(b) = &self.broken {
            return Err(format!("device broken: {b}"));
        }
        let m = self.m;
        let id = if m.has(Mistakes::FORGET_TIMED_OUT) {
            pos
        } else {
            self.next_id
        };
        self.next_id += 1;
        req.id = id;
        if m.has(Mistakes::DIRTY_PADDING) {
            req._pad = 0xdead_beef;
        }
        let c = self.conn.as_ref().ok_or("not connected")?;
        let at = self.slot(c.req_prod);
        c.ring.mem().write(at, req.as_bytes());
        let c = self.conn.as_mut().ok_or("not connected")?;
        c.req_prod = c.req_prod.wrapping_add(1);
        c.ring.mem().store_u32(layout::REQ_PROD, c.req_prod);
        let port = c.port;
        if let Err(e) = Xen(&self.host).evtchn_send(port) {
            if !m.has(Mistakes::IGNORE_NOTIFY_ERROR) {
                return Err(self.fail(format!("notify failed: {e:?}")));
            }
        }
        Ok(id)
    }

    /// Waits until every request in `want` ((id, operation), submission order) is
    /// answered; returns the responses in that order.
    fn collect(&mut self, want: &[(u64, u8)]) -> Result<Vec<Response>, String> {
        let m = self.m;
        let mut got: Vec<Option<Response>> = vec![None; want.len()];
        let mut waited = 0;
        while got.iter().any(Option::is_none) {
            let c = self.conn.as_mut().ok_or("not connected")?;
            let mem = c.ring.mem();
            if m.has(Mistakes::STATE_IN_SHARED_MEMORY) {
                // Keeps its consumer index in the shared rsp_event field.
                c.rsp_cons = mem.load_u32(layout::RSP_EVENT).wrapping_sub(1);
            }
            let prod = mem.load_u32(layout::RSP_PROD);
            let avail = prod.wrapping_sub(c.rsp_cons);
            let outstanding = c.req_prod.wrapping_sub(c.rsp_cons);
            if avail > outstanding && !m.has(Mistakes::TRUST_INDICES) {
                return Err(self.fail(format!(
                    "rsp_prod {prod} is {avail} past rsp_cons, {outstanding} requests out"
                )));
            }
            if avail == 0 {
                if waited >= WAITS && !m.has(Mistakes::NO_TIMEOUT) {
                    return Err("timed out".into());
                }
                waited += 1;
                self.host.wait();
                continue;
            }
            let cons = c.rsp_cons;
            let at = self.slot(cons);
            let c = self.conn.as_mut().ok_or("not connected")?;
            let mut rsp = Response::new_zeroed();
            c.ring.mem().read(at, rsp.as_mut_bytes());
            c.rsp_cons = c.rsp_cons.wrapping_add(1);
            c.ring
                .mem()
                .store_u32(layout::RSP_EVENT, c.rsp_cons.wrapping_add(1));
            let slot = if m.has(Mistakes::TRUST_IDS) {
                // The next unanswered request, whatever the id says.
                got.iter().position(Option::is_none)
            } else if m.has(Mistakes::ASSUME_IN_ORDER) {
                let next = got.iter().position(Option::is_none);
                if next.map(|i| want[i].0) != Some(rsp.id) {
                    return Err(self.fail(format!("response id {:#x} out of order", rsp.id)));
                }
                next
            } else {
                if let Some(i) = self.orphans.iter().position(|o| o.id == rsp.id) {
                    // A late answer to a request given up on: retire it.
                    let o = self.orphans.remove(i);
                    if let Some(g) = o.gref {
                        let _ = self.end(g, o.page);
                    }
                    continue;
                }
                match want.iter().position(|w| w.0 == rsp.id) {
                    Some(i) if got[i].is_none() => Some(i),
                    _ => {
                        return Err(self.fail(format!("response id {:#x} is not in flight", rsp.id)))
                    }
                }
            };
            let Some(i) = slot else { continue };
            if !m.has(Mistakes::TRUST_IDS) && rsp.operation != want[i].1 {
                return Err(self.fail(format!("response operation {}", rsp.operation)));
            }
            got[i] = Some(rsp);
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn status(&mut self, rsp: &Response) -> Result<(), String> {
        if self.m.has(Mistakes::IGNORE_STATUS) {
            return Ok(());
        }
        match rsp.status {
            blkif::RSP_OKAY => Ok(()),
            blkif::RSP_ERROR => Err("I/O error".into()),
            blkif::RSP_EOPNOTSUPP => Err("not supported".into()),
            st => Err(self.fail(format!("unknown status {st}"))),
        }
    }

    /// Up to 8 data requests of at most a page each, in flight together: `data`
    /// is cut into pages from byte `offset`.
    fn batch(&mut self, write: bool, offset: u64, data: &mut [u8]) -> Result<(), String> {
        let m = self.m;
        let unit = match &self.conn {
            Some(c) if m.has(Mistakes::WRONG_SECTOR_UNIT) => c.sector_size,
            _ => 512,
        };
        let op = if write {
            blkif::OP_WRITE
        } else {
            blkif::OP_READ
        };
        let mut inflight: Vec<(u64, GrantRef, SharedPages)> = Vec::new();
        let mut err = None;
        for (k, chunk) in data.chunks(4096).enumerate() {
            let page = match self.bounce.take() {
                Some(p) => p,
                None => self.host.shared_pages(1),
            };
            if write {
                if !m.has(Mistakes::STALE_BOUNCE) {
                    page.mem().fill(0, 4096, 0);
                }
                page.mem().write(0, chunk);
            }
            let gfn = page.page_gfn(&self.host, 0).ok_or("no frame")?;
            let readonly = write && !m.has(Mistakes::WRITABLE_WRITE_GRANTS);
            let gref = match self.grants.grant_access(DomId(0), gfn, readonly) {
                Ok(g) => g,
                Err(e) => {
                    err = Some(format!("no grant: {e:?}"));
                    break;
                }
            };
            let mut req = Request::new_zeroed();
            req.operation = op;
            req.nr_segments = 1;
            req.sector_number = (offset + k as u64 * 4096) / unit;
            req.seg[0].gref = gref.0;
            req.seg[0].last_sect = (chunk.len() / 512 - 1) as u8;
            match self.submit(req, k as u64) {
                Ok(id) => {
                    inflight.push((id, gref, page));
                    if m.has(Mistakes::ONE_PER_TURN) {
                        self.host.wait();
                    }
                }
                Err(e) => {
                    let _ = self.grants.end_access(gref);
                    err = Some(e);
                    break;
                }
            }
        }
        let want: Vec<(u64, u8)> = inflight.iter().map(|x| (x.0, op)).collect();
        let rsps = match err {
            Some(e) => Err(e),
            None => self.collect(&want),
        };
        let rsps = match rsps {
            Ok(r) => r,
            Err(e) => {
                for (id, gref, page) in inflight {
                    if m.has(Mistakes::FORGET_TIMED_OUT) {
                        let _ = self.grants.end_access(gref);
                        self.bounce = Some(page);
                    } else {
                        // The backend may still answer: keep the grant and page aside.
                        self.orphans.push(Orphan {
                            id,
                            gref: Some(gref),
                            page,
                        });
                    }
                }
                return Err(e);
            }
        };
        let mut result = Ok(());
        for ((_, gref, page), (rsp, chunk)) in inflight
            .into_iter()
            .zip(rsps.iter().zip(data.chunks_mut(4096)))
        {
            match self.grants.end_access(gref) {
                Ok(()) => {}
                Err(_) if m.has(Mistakes::IGNORE_END_FAILURE) => {}
                Err(e) => {
                    // The page stays with the backend (kept in `stuck`, never
                    // used again); the request fails.
                    self.stuck.push((gref, page));
                    result = Err(self.fail(format!("backend still maps grant {}: {e:?}", gref.0)));
                    continue;
                }
            }
            if let Err(e) = self.status(rsp) {
                result = result.and(Err(e));
            } else if !write {
                page.mem().read(0, chunk);
                if m.has(Mistakes::GARBLE_READS) {
                    chunk[0] ^= 0xff;
                }
            }
            self.bounce = Some(page);
        }
        result
    }

    fn rw(&mut self, write: bool, offset: u64, data: &mut [u8]) -> Result<(), String> {
        let c = self
            .conn
            .as_ref()
            .ok_or_else(|| self.broken.clone().unwrap_or("not connected".into()))?;
        if write && c.read_only && !self.m.has(Mistakes::IGNORE_INFO) {
            return Err("read-only disk".into());
        }
        let cap = c.sectors.wrapping_mul(c.sector_size);
        if !offset.is_multiple_of(512)
            || !data.len().is_multiple_of(512)
            || offset.saturating_add(data.len() as u64) > cap
        {
            return Err(format!("{} bytes at {offset} out of range", data.len()));
        }
        let mut done = 0;
        while done < data.len() {
            let n = (data.len() - done).min(8 * 4096);
            self.batch(write, offset + done as u64, &mut data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn simple(&mut self, req: Request) -> Result<(), String> {
        let op = req.operation;
        let id = self.submit(req, 0)?;
        let rsp = self.collect(&[(id, op)])?;
        match rsp.first() {
            Some(r) => self.status(r),
            None => Err("no response".into()),
        }
    }
}

impl BlockDriver for Toy<'_> {
    fn connect(&mut self) -> Result<u64, String> {
        if self.conn.is_some() {
            return Ok(self.capacity().unwrap_or(0));
        }
        if self.retry_stuck() > 0
            && !self.m.has(Mistakes::IGNORE_END_FAILURE)
            && !self.m.has(Mistakes::RECONNECT_WHILE_MAPPED)
        {
            return Err(format!(
                "{} grants still mapped by the old backend",
                self.stuck.len()
            ));
        }
        if !matches!(self.hs.phase(), Phase::Idle | Phase::Closed) {
            self.hs.closed(&mut self.xs).map_err(s)?;
        }
        self.hs.start(&mut self.xs).map_err(s)?;
        self.hs.wait_for_backend(&mut self.xs, T).map_err(s)?;
        if self.m.has(Mistakes::TRUST_OFFERS) {
            let order = self
                .key("max-ring-page-order")?
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0) as u32;
            // Sizes a ring it never uses (the shift is the mistake).
            let _pages = 1u32 << order;
        }
        let ring = self.host.shared_pages(1);
        // FRONT_RING_INIT: indices 0, event indices 1.
        ring.mem().store_u32(layout::REQ_EVENT, 1);
        ring.mem().store_u32(layout::RSP_EVENT, 1);
        let gfn = ring.page_gfn(&self.host, 0).ok_or("no frame")?;
        let ring_ref = self.grants.grant_access(DomId(0), gfn, false).map_err(s)?;
        let port = Xen(&self.host).evtchn_alloc_unbound(DomId(0)).map_err(s)?;
        self.hs
            .publish(&mut self.xs, XenbusState::Initialised, |tx, node| {
                tx.write_str(
                    &xenbus::Path::join(node, "ring-ref")?,
                    &ring_ref.0.to_string(),
                )?;
                tx.write_str(
                    &xenbus::Path::join(node, "event-channel")?,
                    &port.0.to_string(),
                )?;
                tx.write_str(&xenbus::Path::join(node, "protocol")?, "x86_64-abi")
            })
            .map_err(s)?;
        self.hs.wait_connected(&mut self.xs, T).map_err(s)?;
        let (cap, ss, sectors) = match self.geometry() {
            Ok(g) => g,
            Err(e) => {
                let _ = self.grants.end_access(ring_ref);
                let _ = self.hs.close(&mut self.xs, T);
                return Err(e);
            }
        };
        let info = self.num("info")?.unwrap_or(0);
        let read_only = !self.m.has(Mistakes::IGNORE_INFO)
            && (info & u64::from(blkif::VDISK_READONLY) != 0
                || self.key("mode")?.as_deref() == Some("r"));
        let flag = |t: &mut Self, k: &str| -> Result<bool, String> {
            Ok(t.key(k)?.as_deref() == Some("1"))
        };
        let flush = flag(self, "feature-flush-cache")?;
        let discard = flag(self, "feature-discard")?;
        self.conn = Some(Conn {
            ring,
            ring_ref,
            port,
            req_prod: 0,
            rsp_cons: 0,
            sector_size: ss,
            sectors,
            read_only,
            flush,
            discard,
        });
        Ok(cap)
    }

    fn capacity(&self) -> Option<u64> {
        self.conn
            .as_ref()
            .map(|c| c.sectors.wrapping_mul(c.sector_size))
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.rw(false, offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        self.rw(true, offset, &mut data.to_vec())
    }

    fn flush(&mut self) -> Result<(), String> {
        let c = self.conn.as_mut().ok_or("not connected")?;
        if !c.flush {
            return Err("flush not supported".into());
        }
        let mut req = Request::new_zeroed();
        req.operation = blkif::OP_FLUSH_DISKCACHE;
        let r = self.simple(req);
        if r.as_ref().err().map(String::as_str) == Some("not supported")
            && !self.m.has(Mistakes::KEEP_FEATURES)
        {
            if let Some(c) = self.conn.as_mut() {
                c.flush = false;
            }
        }
        r
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), String> {
        if self.m.has(Mistakes::WITHOUT_DISCARD) {
            return Err(xen_conformance::blk::NO_DISCARD.into());
        }
        let c = self.conn.as_mut().ok_or("not connected")?;
        if !c.discard {
            return Err("discard not supported".into());
        }
        let mut d = RequestDiscard::new_zeroed();
        d.operation = blkif::OP_DISCARD;
        d.sector_number = offset / 512;
        d.nr_sectors = len / 512;
        let r = self.simple(Request::from(d));
        if r.as_ref().err().map(String::as_str) == Some("not supported")
            && !self.m.has(Mistakes::KEEP_FEATURES)
        {
            if let Some(c) = self.conn.as_mut() {
                c.discard = false;
            }
        }
        r
    }

    fn poll_events(&mut self) -> Result<Option<String>, String> {
        if self.m.has(Mistakes::NO_EVENTS) || self.conn.is_none() {
            return Ok(None);
        }
        if let Some(BackendEvent::Closing(st)) = self.hs.poll_backend(&mut self.xs).map_err(s)? {
            self.teardown();
            let _ = self.hs.closed(&mut self.xs);
            return Ok(Some(format!("backend {st:?}: disconnected")));
        }
        let Ok(Some(sectors)) = self.num("sectors") else {
            return Ok(None);
        };
        let Some(c) = self.conn.as_mut() else {
            return Ok(None);
        };
        if sectors == c.sectors {
            return Ok(None);
        }
        if !self.m.has(Mistakes::TRUST_GEOMETRY)
            && (sectors == 0 || sectors.checked_mul(c.sector_size).is_none())
        {
            return Ok(Some(format!("ignored bad sectors {sectors}")));
        }
        let old = core::mem::replace(&mut c.sectors, sectors);
        Ok(Some(format!("capacity {old} -> {sectors} sectors")))
    }

    fn close(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            return Ok(());
        }
        let r = self.hs.close(&mut self.xs, T).map_err(s);
        self.teardown();
        let _ = self.hs.closed(&mut self.xs);
        r
    }
}
