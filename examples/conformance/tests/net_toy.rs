//! The catalogue can fail: a toy network frontend, sound in most ways (checks ring
//! indices and tx ids, reuses a tx page only once answered, ends its grants,
//! notifies and reports failures) but careless in four:
//! (a) it trusts rx responses: every slot is a frame, whatever its offset, status,
//!     `more_data` or extra-info flags;
//! (b) it checks nothing the store says: `mac`, `feature-rx-copy`, `mtu`;
//! (c) it never looks at the backend's state once connected;
//! (d) it ignores a failed end of access: a page the backend still maps is
//!     reused.
//! It fails exactly the cases about those, each with evidence, and passes the rest.
//!
//! Every case it passes can fail too: `each_case_fails_a_driver_with_its_flaw`
//! gives the toy one more flaw at a time and runs the cases that flaw must fail.
//! The checks behind a case it fails by (d) are reached with (d) fixed (a page
//! whose end of access fails is set aside, never used again): that toy passes
//! those cases (`with_d_fixed_the_toy_passes_the_mapped_cases`), and fails them
//! again with a subtler flaw ([`Flaw::PoisonKept`], [`Flaw::ForceEnd`]).
//! Likewise (a): with it fixed (`Toy::recv_checked`: chains, extra-info slots,
//! statuses, offsets and the slot, size and MTU limits checked) the toy passes
//! every rx case, and `with_a_fixed_each_rx_flaw_fails_its_cases` gives it one
//! subtler rx flaw at a time.

use std::collections::VecDeque;
use std::time::Duration;

use hypercall::abi::netif::{self, RxRequest, RxResponse, TxRequest, TxResponse};
use hypercall::abi::ring as layout;
use hypercall::gnttab::GrantTable;
use hypercall::ring::FrontRing;
use hypercall::{DomId, GrantRef, Port, SharedMem, SharedPages, Xen, PAGE_SIZE};
use xen_conformance::net::{self, NetDriver, NetEnv, Probe};
use xen_conformance::HostPlatform;
use xenbus::frontend::FrontendHandshake;
use xenbus::{Store, XenbusState, Xenstore};

const T: Duration = Duration::from_millis(200);
/// Tx pages, then rx pages.
const PAGES: usize = 8;
const BE: DomId = DomId(0);

type Tx = FrontRing<TxRequest, TxResponse, SharedPages>;
type Rx = FrontRing<RxRequest, RxResponse, SharedPages>;

/// A flaw added to the toy (each makes the cases named in
/// `each_case_fails_a_driver_with_its_flaw` fail).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Flaw {
    /// Ring errors are returned but the device is not failed.
    Silent,
    /// Tx responses with unknown ids are skipped.
    NoIdCheck,
    /// Answered tx slots free their page without ending the grant.
    KeepAnswered,
    /// Close ends no grant.
    LeakOnClose,
    /// No notification is ever sent.
    NoNotify,
    /// Rx requests carry garbage in their padding.
    DirtyPad,
    /// The rx buffer is found by the response's id, not the ring index.
    RxById,
    /// Asks for as many queues as the backend offers, as written.
    AllQueues,
    /// Refuses feature values other than "0" and "1".
    StrictFeatures,
    /// Reads the rx ring only when `rsp_event` says a notification was due.
    TrustEvents,
    /// Handshake errors are ignored.
    IgnoreHandshakeErrors,
    /// Fails the device when 250 frames went out and nothing came back.
    FailOnStarvation,
    /// The last byte of every frame sent is flipped.
    CorruptTx,
    /// Asks for two queues and publishes rings for both, but serves only the
    /// first (the second's rx ring never gets a buffer).
    QueueZeroOnly,
    /// Answers every upcall with a notification to the backend.
    KickOnEvent,
    /// Hands out every received frame twice.
    RxTwice,
    /// Says each received frame is one byte longer than the buffer it was given.
    Overclaims,
    /// Every other receive fails (with no frame lost) but the device is not failed.
    FlakyRecv,
    /// Never posts an rx buffer again once a frame came in it.
    NoRepost,
    /// With (d) fixed: connecting again, fills the pages it set aside (the
    /// backend still maps them) with 0xaa, as a driver poisoning the memory it
    /// freed would.
    PoisonKept,
    /// With (d) fixed: a grant whose end fails is ended by force (its entry
    /// cleared raw) before its page is set aside.
    ForceEnd,
    /// With (a) fixed: the last slot of a chain is left out of the frame.
    ChainTail,
    /// With (a) fixed: no MTU limit for frames without GSO (65535 still).
    NoMtuCheck,
    /// With (a) fixed: its receive buffer holds 1514 bytes (no room for a VLAN
    /// tag): a longer frame within the limits is cut to 1514 bytes.
    Clip1514,
    /// Watches the backend's state (reports the link down once it is not
    /// Connected) but sends all the same.
    DownButSends,
    /// Reads the backend's `mtu` and reports an unusable one without naming
    /// the value ("mtu ignored").
    VagueMtuReport,
    /// Not a mistake: notifies the backend once every 100 upcalls on its port
    /// (at the limit `net.spurious_events` allows).
    PoliteKick,
}

/// A frame being received on the careful rx path (`Toy::recv_checked`).
#[derive(Default)]
struct Chain {
    /// A frame is in progress.
    open: bool,
    /// Its bytes so far (kept up to 65535).
    data: Vec<u8>,
    /// Its length as the slots say.
    total: usize,
    /// Data slots so far, and the first one's size.
    slots: usize,
    first: usize,
    /// The last data slot said `more_data`; extra-info slots are due.
    more: bool,
    extras: bool,
    /// A valid GSO extra-info slot came with it.
    gso: bool,
    /// Why it is dropped, once something was wrong.
    bad: Option<&'static str>,
}

struct Toy {
    flaw: Option<Flaw>,
    /// (a) fixed: rx responses go through `recv_checked`.
    fixed_a: bool,
    /// The frame `recv_checked` is receiving.
    chain: Chain,
    /// Frames dropped in a row (`recv_checked` fails the device past 64).
    bad_in_row: usize,
    /// (d) fixed: pages whose end of access failed are set aside.
    fixed_d: bool,
    /// Pool pages set aside (tx pages `0..PAGES`, rx pages `PAGES..`).
    kept: Vec<usize>,
    /// Ring pages of earlier connections set aside.
    kept_rings: Vec<SharedPages>,
    sends_since_rx: usize,
    host: HostPlatform,
    xs: Xenstore<HostPlatform>,
    grants: GrantTable<1024>,
    node: String,
    hs: Option<FrontendHandshake>,
    /// Rings and their grants; the ring pages are kept for a reconnect.
    tx: Option<(Tx, Option<GrantRef>)>,
    rx: Option<(Rx, Option<GrantRef>)>,
    /// `2 * PAGES` pages: tx pages then rx pages.
    pages: SharedMem<'static>,
    /// The grant of each tx page in flight (the request id is the page index).
    tx_busy: [Option<GrantRef>; PAGES],
    /// Posted rx buffers in ring order: (request id, page, grant).
    rx_posted: VecDeque<(u16, usize, GrantRef)>,
    port: Option<Port>,
    failed: Option<String>,
    /// The second queue's rings, never served ([`Flaw::QueueZeroOnly`]).
    idle_queue: Option<(Tx, Rx)>,
    /// A frame to hand out again ([`Flaw::RxTwice`]).
    again: Option<Vec<u8>>,
    /// Receives so far ([`Flaw::FlakyRecv`]).
    recvs: u64,
    /// Upcalls on its own port so far ([`Flaw::PoliteKick`]).
    upcalls: u64,
    /// Lines for [`Probe::reported`] ([`Flaw::VagueMtuReport`]).
    reported: Vec<String>,
}

impl Toy {
    fn page(&self, i: usize) -> SharedMem<'static> {
        self.pages
            .sub(i * PAGE_SIZE, PAGE_SIZE)
            .expect("a page of the pool")
    }

    fn gfn(&self, i: usize) -> hypercall::Gfn {
        self.page(i).page_gfn(&self.host, 0).expect("guest memory")
    }

    /// Ends the grant of pool page `page`. (d): the result is ignored and the
    /// page is free again; with (d) fixed, a page the backend still maps is set
    /// aside.
    fn end(&mut self, gref: GrantRef, page: usize) {
        if self.grants.end_access(gref).is_err() && self.fixed_d {
            self.force_end(gref);
            self.kept.push(page);
        }
    }

    /// [`Flaw::ForceEnd`]: clears the grant entry raw (a v1 entry is 8 bytes).
    fn force_end(&self, gref: GrantRef) {
        if self.flaw == Some(Flaw::ForceEnd) {
            if let Some(table) = self.grants.frames() {
                table.write(gref.0 as usize * 8, &[0u8; 8]);
            }
        }
    }

    /// (a) fixed: takes rx responses until a whole frame came, checking each
    /// slot and the frame's limits; a bad frame is dropped (all its slots), and
    /// more than 64 in a row fail the device.
    fn recv_checked(&mut self, buf: &mut [u8]) -> Result<Option<usize>, String> {
        loop {
            let Some((rx, _)) = self.rx.as_mut() else {
                return Err("not connected".into());
            };
            let rsp = match rx.poll_response() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.fail(format!("rx ring: {e}"))),
            };
            let Some((_, page, gref)) = self.rx_posted.pop_front() else {
                return Err(self.fail("rx response without a buffer".into()));
            };
            self.end(gref, PAGES + page);
            let mut c = std::mem::take(&mut self.chain);
            if c.extras {
                let x = rsp.as_extra();
                c.extras = x.flags & netif::EXTRA_FLAG_MORE != 0;
                let ok = match x.ty {
                    netif::EXTRA_TYPE_GSO => {
                        c.gso = true;
                        x.gso_size() > 0
                            && matches!(x.gso_type(), netif::GSO_TYPE_TCPV4 | netif::GSO_TYPE_TCPV6)
                    }
                    t => t != netif::EXTRA_TYPE_NONE && t < netif::EXTRA_TYPE_MAX,
                };
                if !ok {
                    c.bad.get_or_insert("bad extra-info slot");
                }
            } else {
                let first = !c.open;
                c.open = true;
                c.slots += 1;
                c.more = rsp.flags & netif::NETRXF_MORE_DATA != 0;
                if first && rsp.flags & netif::NETRXF_EXTRA_INFO != 0 {
                    c.extras = true;
                }
                let off = usize::from(rsp.offset);
                let last = !c.more && self.flaw == Some(Flaw::ChainTail) && c.slots > 1;
                match usize::try_from(rsp.status) {
                    Err(_) => drop(c.bad.get_or_insert("error status")),
                    Ok(n) if off + n > PAGE_SIZE => drop(c.bad.get_or_insert("past the page")),
                    Ok(n) => {
                        if first {
                            c.first = n;
                        }
                        c.total += n;
                        if c.total <= 65535 && !last {
                            let at = c.data.len();
                            c.data.resize(at + n, 0);
                            self.page(PAGES + page).read(off, &mut c.data[at..]);
                        }
                    }
                }
            }
            if !self.kept.contains(&(PAGES + page)) {
                self.post_rx(page)?;
            }
            if !c.open || c.more || c.extras {
                self.chain = c;
                continue;
            }
            // A whole frame: the extra slot only after a first slot of at most
            // 256 bytes; 65535 bytes at most, the MTU (1500 and a VLAN-tagged
            // header) without GSO.
            let max_slots = if c.first <= 256 { 19 } else { 18 };
            let mtu = self.flaw != Some(Flaw::NoMtuCheck) && !c.gso;
            let bad = c.bad.or(if c.slots > max_slots {
                Some("too many slots")
            } else if c.total > 65535 {
                Some("over 65535 bytes")
            } else if mtu && c.total > 1518 {
                Some("over the MTU")
            } else {
                None
            });
            if bad.is_some() {
                self.bad_in_row += 1;
                if self.bad_in_row > 64 {
                    return Err(self.fail("64 bad rx frames in a row".into()));
                }
                continue;
            }
            self.bad_in_row = 0;
            if self.flaw == Some(Flaw::Clip1514) {
                c.data.truncate(1514);
            }
            let n = c.data.len().min(buf.len());
            buf[..n].copy_from_slice(&c.data[..n]);
            return Ok(Some(n));
        }
    }

    fn fail(&mut self, why: String) -> String {
        if self.flaw == Some(Flaw::Silent) {
            return why;
        }
        self.failed.get_or_insert(why).clone()
    }

    fn usable(&self) -> Result<(), String> {
        match (&self.failed, self.hs.is_some()) {
            (Some(f), _) => Err(format!("failed: {f}")),
            (None, false) => Err("not connected".into()),
            (None, true) => Ok(()),
        }
    }

    fn notify(&mut self) -> Result<(), String> {
        if self.flaw == Some(Flaw::NoNotify) {
            return Ok(());
        }
        if let Some(p) = self.port {
            if let Err(e) = Xen(&self.host).evtchn_send(p) {
                return Err(self.fail(format!("notify: {e}")));
            }
        }
        Ok(())
    }

    fn post_rx(&mut self, page: usize) -> Result<(), String> {
        let gref = self
            .grants
            .grant_access(BE, self.gfn(PAGES + page), false)
            .map_err(|e| e.to_string())?;
        let Some((rx, _)) = self.rx.as_mut() else {
            return Err("not connected".into());
        };
        let id = rx.req_prod_pvt() as u16;
        let pad = u16::from(self.flaw == Some(Flaw::DirtyPad));
        rx.push_request(&RxRequest {
            id,
            _pad: pad,
            gref: gref.0,
        })
        .map_err(|e| e.to_string())?;
        let notify = rx.push_requests_and_check_notify();
        self.rx_posted.push_back((id, page, gref));
        if notify {
            self.notify()?;
        }
        Ok(())
    }

    /// Takes tx responses: the id must be a page in flight.
    fn reclaim(&mut self) -> Result<(), String> {
        loop {
            let Some((tx, _)) = self.tx.as_mut() else {
                return Ok(());
            };
            let rsp = match tx.poll_response() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(format!("tx ring: {e}"))),
            };
            let id = usize::from(rsp.id);
            match self.tx_busy.get_mut(id).and_then(Option::take) {
                Some(_) if self.flaw == Some(Flaw::KeepAnswered) => {}
                // (d): the result of ending access is ignored; the page is free.
                Some(gref) => self.end(gref, id),
                None if self.flaw == Some(Flaw::NoIdCheck) => {}
                None => return Err(self.fail(format!("tx response id {id} not in flight"))),
            }
        }
    }

    fn end_all(&mut self) {
        // (d): whatever the backend still maps is forgotten all the same.
        for i in 0..PAGES {
            if let Some(g) = self.tx_busy[i].take() {
                self.end(g, i);
            }
        }
        while let Some((_, page, g)) = self.rx_posted.pop_front() {
            self.end(g, PAGES + page);
        }
        // With (d) fixed a ring the backend still maps is set aside, and the next
        // connection gets new ring pages.
        if let Some(g) = self.tx.as_mut().and_then(|(_, g)| g.take()) {
            if self.grants.end_access(g).is_err() && self.fixed_d {
                self.force_end(g);
                if let Some((r, _)) = self.tx.take() {
                    self.kept_rings.push(r.into_region());
                }
            }
        }
        if let Some(g) = self.rx.as_mut().and_then(|(_, g)| g.take()) {
            if self.grants.end_access(g).is_err() && self.fixed_d {
                self.force_end(g);
                if let Some((r, _)) = self.rx.take() {
                    self.kept_rings.push(r.into_region());
                }
            }
        }
    }
}

impl NetDriver for Toy {
    fn connect(&mut self) -> Result<(), String> {
        let lax = self.flaw == Some(Flaw::IgnoreHandshakeErrors);
        let e = |e: xenbus::Error| e.to_string();
        self.failed = None;
        if self.flaw == Some(Flaw::PoisonKept) {
            for &p in &self.kept {
                self.page(p).fill(0, PAGE_SIZE, 0xaa);
            }
            for r in &self.kept_rings {
                r.mem().fill(0, PAGE_SIZE, 0xaa);
            }
        }
        let mut hs = FrontendHandshake::new(&self.node).map_err(e)?;
        match hs.start(&mut self.xs) {
            Err(_) if lax => {}
            r => drop(r.map_err(e)?),
        }
        // (b): mac, feature-rx-copy and mtu are never read.
        match hs.wait_for_backend(&mut self.xs, T) {
            Err(_) if lax => {}
            r => r.map_err(e)?,
        }
        let mut queues = Vec::new();
        if self.flaw == Some(Flaw::AllQueues) {
            let mut buf = [0u8; 32];
            let p = format!("{}/multi-queue-max-queues", hs.backend());
            if let Ok(n) = self.xs.read(&p, &mut buf) {
                queues = buf[..n].to_vec();
            }
        }
        if self.flaw == Some(Flaw::VagueMtuReport) {
            let mut buf = [0u8; 32];
            let p = format!("{}/mtu", hs.backend());
            if let Ok(n) = self.xs.read(&p, &mut buf) {
                let mtu = std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|v| v.parse().ok());
                if !mtu.is_some_and(|m: u32| (68..=65535).contains(&m)) {
                    self.reported.push("mtu ignored".into());
                }
            }
        }
        if self.flaw == Some(Flaw::StrictFeatures) {
            for k in [
                "feature-sg",
                "feature-gso-tcpv4",
                "feature-split-event-channels",
            ] {
                let mut buf = [0u8; 32];
                let p = format!("{}/{k}", hs.backend());
                if let Ok(n) = self.xs.read(&p, &mut buf) {
                    if !matches!(&buf[..n], b"0" | b"1") {
                        return Err(format!("{k} is neither 0 nor 1"));
                    }
                }
            }
        }
        // (d): the ring pages of an earlier connection are used again.
        let tx = match self.tx.take() {
            Some((r, _)) => r.into_region(),
            None => SharedPages::alloc(&self.host, 1).ok_or("no memory")?,
        };
        let rx = match self.rx.take() {
            Some((r, _)) => r.into_region(),
            None => SharedPages::alloc(&self.host, 1).ok_or("no memory")?,
        };
        let grant = |m: &SharedPages| -> Result<GrantRef, String> {
            let gfn = m.page_gfn(&self.host, 0).ok_or("no gfn")?;
            self.grants
                .grant_access(BE, gfn, false)
                .map_err(|e| e.to_string())
        };
        let (tg, rg) = (grant(&tx)?, grant(&rx)?);
        // Flaw::QueueZeroOnly: a second queue's rings and port, never served.
        let mut idle = None;
        if self.flaw == Some(Flaw::QueueZeroOnly) {
            let (t, r) = (
                SharedPages::alloc(&self.host, 1).ok_or("no memory")?,
                SharedPages::alloc(&self.host, 1).ok_or("no memory")?,
            );
            let (tg1, rg1) = (grant(&t)?, grant(&r)?);
            let p1 = Xen(&self.host)
                .evtchn_alloc_unbound(BE)
                .map_err(|e| e.to_string())?;
            idle = Some((
                (tg1, rg1, p1),
                Tx::init(t).map_err(|e| e.to_string())?,
                Rx::init(r).map_err(|e| e.to_string())?,
            ));
        }
        let idle = idle.map(|(keys, t, r)| {
            self.idle_queue = Some((t, r));
            keys
        });
        self.tx = Some((Tx::init(tx).map_err(|e| e.to_string())?, Some(tg)));
        self.rx = Some((Rx::init(rx).map_err(|e| e.to_string())?, Some(rg)));
        let port = Xen(&self.host)
            .evtchn_alloc_unbound(BE)
            .map_err(|e| e.to_string())?;
        self.port = Some(port);
        for p in 0..PAGES {
            if !self.kept.contains(&(PAGES + p)) {
                self.post_rx(p)?;
            }
        }
        let published = hs.publish(&mut self.xs, XenbusState::Connected, |tx, node| {
            if let Some((tg1, rg1, p1)) = idle {
                tx.write(&format!("{node}/multi-queue-num-queues"), b"2")?;
                tx.write_u32_keys(node, &[("request-rx-copy", 1)])?;
                for (q, (t, r, p)) in [(tg.0, rg.0, port.0), (tg1.0, rg1.0, p1.0)]
                    .into_iter()
                    .enumerate()
                {
                    tx.write_u32_keys(
                        &format!("{node}/queue-{q}"),
                        &[("tx-ring-ref", t), ("rx-ring-ref", r), ("event-channel", p)],
                    )?;
                }
                return Ok(());
            }
            if !queues.is_empty() {
                tx.write(&format!("{node}/multi-queue-num-queues"), &queues)?;
            }
            tx.write_u32_keys(
                node,
                &[
                    ("tx-ring-ref", tg.0),
                    ("rx-ring-ref", rg.0),
                    ("event-channel", port.0),
                    ("request-rx-copy", 1),
                ],
            )
        });
        match published.and_then(|()| hs.wait_connected(&mut self.xs, T)) {
            Err(_) if lax => {}
            r => r.map_err(e)?,
        }
        self.hs = Some(hs);
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), String> {
        self.usable()?;
        self.reclaim()?;
        if frame.len() > PAGE_SIZE {
            return Err(format!("{}-byte frame: no scatter-gather", frame.len()));
        }
        let free = |i: &usize| self.tx_busy[*i].is_none() && !self.kept.contains(i);
        let Some(i) = (0..PAGES).find(free) else {
            return Err("no free tx page".into());
        };
        if self.flaw == Some(Flaw::FailOnStarvation) {
            self.sends_since_rx += 1;
            if self.sends_since_rx > 250 {
                return Err(self.fail("the backend returns no rx buffer".into()));
            }
        }
        self.page(i).write(0, frame);
        if let (Some(Flaw::CorruptTx), Some(&last)) = (self.flaw, frame.last()) {
            self.page(i).write(frame.len() - 1, &[!last]);
        }
        let gref = self
            .grants
            .grant_access(BE, self.gfn(i), true)
            .map_err(|e| e.to_string())?;
        self.tx_busy[i] = Some(gref);
        let Some((tx, _)) = self.tx.as_mut() else {
            return Err("not connected".into());
        };
        let req = TxRequest {
            gref: gref.0,
            offset: 0,
            flags: 0,
            id: i as u16,
            size: frame.len() as u16,
        };
        if let Err(e) = tx.push_request(&req) {
            return Err(self.fail(format!("tx ring: {e}")));
        }
        if tx.push_requests_and_check_notify() {
            self.notify()?;
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, String> {
        self.usable()?;
        self.recvs += 1;
        if self.flaw == Some(Flaw::FlakyRecv) && self.recvs.is_multiple_of(2) {
            return Err("flaky receive".into());
        }
        if let Some(f) = self.again.take() {
            buf[..f.len()].copy_from_slice(&f);
            return Ok(Some(f.len()));
        }
        if self.fixed_a {
            return self.recv_checked(buf);
        }
        let Some((rx, _)) = self.rx.as_mut() else {
            return Err("not connected".into());
        };
        if self.flaw == Some(Flaw::TrustEvents) {
            let m = rx.mem();
            let (prod, event) = (m.load_u32(layout::RSP_PROD), m.load_u32(layout::RSP_EVENT));
            if prod.wrapping_sub(event) > 0x8000_0000 {
                return Ok(None);
            }
        }
        let rsp = match rx.poll_response() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(format!("rx ring: {e}"))),
        };
        self.sends_since_rx = 0;
        let at = match self.flaw {
            Some(Flaw::RxById) => self.rx_posted.iter().position(|e| e.0 == rsp.id),
            _ => Some(0),
        };
        let Some((_, page, gref)) = at.and_then(|i| self.rx_posted.remove(i)) else {
            return Ok(None);
        };
        // (d): the end is not checked.
        self.end(gref, PAGES + page);
        // (a): offset and status are taken as they come (clipped to the page so
        // the toy itself stays in bounds), flags ignored.
        let off = usize::from(rsp.offset) % PAGE_SIZE;
        let len = (rsp.status.max(0) as usize)
            .min(PAGE_SIZE - off)
            .min(buf.len());
        self.page(PAGES + page).read(off, &mut buf[..len]);
        if self.flaw != Some(Flaw::NoRepost) && !self.kept.contains(&(PAGES + page)) {
            self.post_rx(page)?;
        }
        match self.flaw {
            Some(Flaw::RxTwice) => self.again = Some(buf[..len].to_vec()),
            Some(Flaw::Overclaims) => return Ok(Some(buf.len() + 1)),
            _ => {}
        }
        Ok(Some(len))
    }

    fn close(&mut self) -> Result<(), String> {
        let r = match self.hs.as_mut() {
            Some(hs) => hs.close(&mut self.xs, T).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        self.hs = None;
        if self.flaw != Some(Flaw::LeakOnClose) {
            self.end_all();
        }
        if let Some(p) = self.port.take() {
            let _ = Xen(&self.host).evtchn_close(p);
        }
        r
    }

    fn probe(&mut self) -> Probe {
        // (c): the backend's state is never looked at.
        if self.failed.is_none() && self.hs.is_some() {
            let _ = self.reclaim();
        }
        let mut link = self.hs.is_some() && self.failed.is_none();
        if let (Some(Flaw::DownButSends), Some(hs)) = (self.flaw, self.hs.as_ref()) {
            let mut buf = [0u8; 8];
            let p = format!("{}/state", hs.backend());
            let state = self.xs.read(&p, &mut buf).map(|n| buf[..n].to_vec());
            link &= state.is_ok_and(|s| s == b"4");
        }
        Probe {
            failed: self.failed.clone(),
            connected: link,
            rx_errors: None,
            reported: self.reported.clone(),
        }
    }

    fn grant_frames(&self) -> SharedMem<'_> {
        self.grants.frames().unwrap_or(SharedMem::empty())
    }

    fn event(&mut self, port: Port) -> Result<(), String> {
        if let (Some(Flaw::KickOnEvent), Some(p)) = (self.flaw, self.port) {
            Xen(&self.host).evtchn_send(p).map_err(|e| e.to_string())?;
        }
        if let (Some(Flaw::PoliteKick), Some(p)) = (self.flaw, self.port) {
            if p == port {
                self.upcalls += 1;
                if self.upcalls.is_multiple_of(100) {
                    Xen(&self.host).evtchn_send(p).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }
}

/// Builds the toy, with `flaw` added (and (a) or (d) fixed for the flaws that
/// need it).
fn toy(flaw: Option<Flaw>) -> impl FnMut(&NetEnv) -> Result<Box<dyn NetDriver>, String> {
    let fixed_a = matches!(
        flaw,
        Some(Flaw::ChainTail | Flaw::NoMtuCheck | Flaw::Clip1514)
    );
    let fixed_d = matches!(flaw, Some(Flaw::PoisonKept | Flaw::ForceEnd));
    toy_with(flaw, fixed_a, fixed_d)
}

/// Builds the toy, with `flaw` added, (a) fixed if `fixed_a` and (d) if
/// `fixed_d`.
fn toy_with(
    flaw: Option<Flaw>,
    fixed_a: bool,
    fixed_d: bool,
) -> impl FnMut(&NetEnv) -> Result<Box<dyn NetDriver>, String> {
    move |env: &NetEnv| {
        let xs = Xenstore::from_hvm_params(env.host.clone()).map_err(|e| e.to_string())?;
        let grants = GrantTable::new(env.host.shared_pages(2)).map_err(|e| e.to_string())?;
        let pages = SharedPages::alloc(&env.host, 2 * PAGES)
            .ok_or("no memory")?
            .leak();
        Ok(Box::new(Toy {
            flaw,
            fixed_a,
            chain: Chain::default(),
            bad_in_row: 0,
            fixed_d,
            kept: Vec::new(),
            kept_rings: Vec::new(),
            sends_since_rx: 0,
            host: env.host.clone(),
            xs,
            grants,
            node: env.node.clone(),
            hs: None,
            tx: None,
            rx: None,
            pages,
            tx_busy: [None; PAGES],
            rx_posted: VecDeque::new(),
            port: None,
            failed: None,
            idle_queue: None,
            again: None,
            recvs: 0,
            upcalls: 0,
            reported: Vec::new(),
        }))
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "checks the catalogue's logic, not memory safety; slow under Miri"
)]
fn a_careless_toy_fails_the_right_cases() {
    let report = net::run(toy(None));
    println!("{report}");
    let failed: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        failed,
        [
            // (a) rx responses trusted
            "net.rx_past_page",
            "net.rx_negative_status",
            "net.rx_bad_run_fails",
            "net.rx_endless_chain",
            "net.rx_oversize_chain",
            "net.rx_too_many_slots",
            "net.rx_extra_slot_rule",
            "net.rx_bad_extra",
            "net.rx_chain_split",
            "net.rx_over_mtu",
            // (d) pages the backend still maps reused
            "net.rings_kept_mapped_at_close",
            "net.tx_kept_mapped_at_close",
            "net.rx_answered_while_mapped",
            "net.tx_completed_while_mapped",
            // (b) the store's values unchecked
            "net.mac_malformed",
            "net.mac_not_unicast",
            "net.no_rx_copy",
            "net.mtu_out_of_range",
            // (c) the backend's state ignored
            "net.backend_closing",
            "net.backend_dir_removed",
        ],
        "{report}"
    );
    // Evidence names what went wrong.
    let ev = |name: &str| {
        report
            .rows
            .iter()
            .find(|r| r.name.starts_with(name))
            .map_or("", |r| r.evidence.as_str())
    };
    assert!(ev("net.rx_past_page").contains("handed out a 96-byte frame"));
    // The numbers in the evidence of rows it passes: its 8 tx pages, then the
    // error and the waits its close took; the backend holding its 8 rx buffers.
    assert!(
        ev("net.tx_never_answered")
            .starts_with("8 frames queued, then: no free tx page; close after 4 waits (None)"),
        "{}",
        ev("net.tx_never_answered")
    );
    assert_eq!(
        ev("net.rx_buffers_hoarded"),
        "600 frames sent while the backend holds 8 rx buffers"
    );
    assert_eq!(
        ev("net.multi_queue_traffic"),
        "1 queue(s): 3 rx frames on each arrived; 64 tx frames arrived, per queue [64]"
    );
    assert!(ev("net.mac_not_unicast").contains("ff:ff:ff:ff:ff:ff"));
    assert!(ev("net.mtu_out_of_range").contains("not reported"));
    assert!(ev("net.rings_kept_mapped_at_close").contains("still mapped by the backend"));
    assert!(ev("net.tx_kept_mapped_at_close").contains("used again"));
    assert!(ev("net.backend_dir_removed").contains("still connected"));
}

/// Each case the toy passes fails once the toy has the flaw it is about.
#[test]
#[cfg_attr(
    miri,
    ignore = "checks the catalogue's logic, not memory safety; slow under Miri"
)]
fn each_case_fails_a_driver_with_its_flaw() {
    use Flaw::*;
    let matrix: &[(Flaw, &[&str])] = &[
        (
            Silent,
            &[
                "net.tx_rsp_prod_overrun",
                "net.rx_rsp_prod_overrun",
                "net.tx_rsp_prod_backwards",
                "net.rx_rsp_prod_backwards",
            ],
        ),
        (
            NoIdCheck,
            &[
                "net.tx_id_out_of_range",
                "net.tx_id_not_in_flight",
                "net.tx_id_twice",
            ],
        ),
        (KeepAnswered, &["net.tx_status_kinds"]),
        (
            LeakOnClose,
            &["net.close_ends_every_grant", "net.tx_never_answered"],
        ),
        (NoNotify, &["net.notify_fails"]),
        (DirtyPad, &["net.protocol_hygiene"]),
        (RxById, &["net.rx_id_garbage"]),
        (AllQueues, &["net.max_queues_absurd"]),
        (StrictFeatures, &["net.feature_values_odd"]),
        (TrustEvents, &["net.event_garbage"]),
        (IgnoreHandshakeErrors, &["net.backend_state_garbage"]),
        (FailOnStarvation, &["net.rx_buffers_hoarded"]),
        (
            CorruptTx,
            &["net.connect_and_traffic", "net.ring_slots_wrap"],
        ),
        (QueueZeroOnly, &["net.multi_queue_traffic"]),
        (
            DownButSends,
            &["net.backend_closing", "net.backend_dir_removed"],
        ),
        (VagueMtuReport, &["net.mtu_out_of_range"]),
        (KickOnEvent, &["net.spurious_events"]),
        (RxTwice, &["net.connect_and_traffic"]),
        (Overclaims, &["net.connect_and_traffic"]),
        (FlakyRecv, &["net.rx_id_garbage", "net.rx_bad_run_fails"]),
        (NoRepost, &["net.rx_bad_run_fails"]),
        (
            PoisonKept,
            &[
                "net.rings_kept_mapped_at_close",
                "net.tx_kept_mapped_at_close",
            ],
        ),
        (
            ForceEnd,
            &[
                "net.rings_kept_mapped_at_close",
                "net.tx_kept_mapped_at_close",
                "net.rx_answered_while_mapped",
            ],
        ),
    ];
    let short = |name: &'static str| name.split(' ').next().unwrap_or("");
    let mut covered = Vec::new();
    let mut evidence = Vec::new();
    for (flaw, names) in matrix {
        let cases = net::catalogue()
            .iter()
            .filter(|c| names.contains(&short(c.name)));
        let report = net::run_cases(cases, toy(Some(*flaw)));
        assert_eq!(report.rows.len(), names.len(), "{flaw:?}: {report}");
        for r in &report.rows {
            assert!(!r.pass, "{flaw:?} passes {}: {}", r.name, r.evidence);
            println!("{flaw:?}: {} fails: {}", r.name, r.evidence);
            evidence.push((*flaw, short(r.name), r.evidence.clone()));
        }
        covered.extend(names.iter().copied());
    }
    // The evidence says what went wrong, with the right numbers (cargo-mutants:
    // the helpers' arithmetic and messages that only a failing driver reaches).
    let says: &[(Flaw, &str, &str)] = &[
        (
            CorruptTx,
            "net.connect_and_traffic",
            "tx frame 0: byte 59 differs",
        ),
        (
            RxTwice,
            "net.connect_and_traffic",
            "rx frame 1: 1514 bytes instead of 1383",
        ),
        (
            Overclaims,
            "net.connect_and_traffic",
            "recv claimed 65537 bytes",
        ),
        (
            QueueZeroOnly,
            "net.multi_queue_traffic",
            "handed out 3 of 6 frames (3 still queued at the backend, on 2 queues)",
        ),
        (FlakyRecv, "net.rx_id_garbage", "flaky receive"),
        (
            DownButSends,
            "net.backend_closing",
            "a send succeeded after the backend went Closing",
        ),
        (
            DownButSends,
            "net.backend_dir_removed",
            "a send succeeded with the backend gone",
        ),
        (
            VagueMtuReport,
            "net.mtu_out_of_range",
            "mtu 0 not reported (reported: [\"mtu ignored\"])",
        ),
        // While the backend waits for rx buffers (push_slots).
        (FlakyRecv, "net.rx_bad_run_fails", "flaky receive"),
        (
            NoRepost,
            "net.rx_bad_run_fails",
            "stopped posting rx buffers",
        ),
        // The checks of kept pages that a toy reusing them never reaches.
        (
            PoisonKept,
            "net.rings_kept_mapped_at_close",
            "still mapped by the backend, was written: byte 0 changed",
        ),
        (
            PoisonKept,
            "net.tx_kept_mapped_at_close",
            "still mapped by the backend, was written: byte 0 changed",
        ),
        (
            ForceEnd,
            "net.rings_kept_mapped_at_close",
            "was revoked while the backend mapped it",
        ),
        (
            ForceEnd,
            "net.tx_kept_mapped_at_close",
            "was revoked while the backend mapped it",
        ),
        (
            ForceEnd,
            "net.rx_answered_while_mapped",
            "the mapped buffer's grant vanished",
        ),
    ];
    for (flaw, name, want) in says {
        let (_, _, ev) = evidence
            .iter()
            .find(|(f, n, _)| f == flaw && n == name)
            .expect("a row of that flaw and case");
        assert!(
            ev.contains(want),
            "{flaw:?} {name}: {ev:?} does not say {want:?}"
        );
    }
    // With the base toy's failures, every case is shown to fail some driver.
    let base = net::run(toy(None));
    covered.extend(base.rows.iter().filter(|r| !r.pass).map(|r| short(r.name)));
    for c in net::catalogue() {
        assert!(
            covered.contains(&short(c.name)),
            "no driver shown to fail {}",
            c.name
        );
    }
}

/// With (d) fixed (pages the backend still maps set aside, never used again) the
/// toy passes the cases about them: what [`Flaw::PoisonKept`] and
/// [`Flaw::ForceEnd`] fail is their own mistake.
#[test]
#[cfg_attr(
    miri,
    ignore = "checks the catalogue's logic, not memory safety; slow under Miri"
)]
fn with_d_fixed_the_toy_passes_the_mapped_cases() {
    let names = [
        "net.rings_kept_mapped_at_close",
        "net.tx_kept_mapped_at_close",
        "net.rx_answered_while_mapped",
        "net.tx_completed_while_mapped",
    ];
    let cases = net::catalogue()
        .iter()
        .filter(|c| names.contains(&c.name.split(' ').next().unwrap_or("")));
    let report = net::run_cases(cases, toy_with(None, false, true));
    assert_eq!(report.rows.len(), names.len(), "{report}");
    assert!(report.all_passed(), "{report}");
}

/// The rx cases: the toy fails them all by (a).
const RX_CASES: [&str; 10] = [
    "net.rx_past_page",
    "net.rx_negative_status",
    "net.rx_bad_run_fails",
    "net.rx_endless_chain",
    "net.rx_oversize_chain",
    "net.rx_too_many_slots",
    "net.rx_extra_slot_rule",
    "net.rx_bad_extra",
    "net.rx_chain_split",
    "net.rx_over_mtu",
];

/// With (a) fixed the toy passes every rx case; each subtler rx flaw then fails
/// exactly its cases (the others pass: a case must not fail a driver for a flaw
/// it is not about), with evidence.
#[test]
#[cfg_attr(
    miri,
    ignore = "checks the catalogue's logic, not memory safety; slow under Miri"
)]
fn with_a_fixed_each_rx_flaw_fails_its_cases() {
    use Flaw::*;
    // (flaw, the rx cases it fails with a word of their evidence)
    type Fails = &'static [(&'static str, &'static str)];
    let table: &[(Option<Flaw>, Fails)] = &[
        (None, &[]),
        (
            Some(ChainTail),
            &[
                (
                    "net.rx_extra_slot_rule",
                    "small-head chain: 1390 bytes instead of 1460",
                ),
                ("net.rx_chain_split", "1000 bytes instead of 1400"),
            ],
        ),
        (
            Some(NoMtuCheck),
            &[("net.rx_over_mtu", "handed out a 1519-byte frame")],
        ),
        (
            Some(Clip1514),
            &[(
                "net.rx_over_mtu",
                "the 1518-byte frame: 1514 bytes instead of 1518",
            )],
        ),
    ];
    for (flaw, want) in table {
        let cases = net::catalogue()
            .iter()
            .filter(|c| RX_CASES.contains(&c.name.split(' ').next().unwrap_or("")));
        let report = net::run_cases(cases, toy_with(*flaw, true, false));
        println!("{flaw:?}:\n{report}");
        assert_eq!(report.rows.len(), RX_CASES.len());
        let failed: Vec<(&str, &str)> = report
            .rows
            .iter()
            .filter(|r| !r.pass)
            .map(|r| (r.name.split(' ').next().unwrap_or(""), r.evidence.as_str()))
            .collect();
        assert_eq!(
            failed.iter().map(|f| f.0).collect::<Vec<_>>(),
            want.iter().map(|w| w.0).collect::<Vec<_>>(),
            "{flaw:?}: {report}"
        );
        for ((name, ev), (_, says)) in failed.iter().zip(*want) {
            assert!(
                ev.contains(says),
                "{flaw:?} {name}: {ev:?} does not say {says:?}"
            );
        }
    }
}

/// A driver notifying its backend once every 100 upcalls passes
/// `net.spurious_events`, at its limit (100 notifications for 10 000 events).
#[test]
#[cfg_attr(
    miri,
    ignore = "checks the catalogue's logic, not memory safety; slow under Miri"
)]
fn one_notification_per_100_events_passes() {
    let cases = net::catalogue()
        .iter()
        .filter(|c| c.name.starts_with("net.spurious_events"));
    let report = net::run_cases(cases, toy(Some(Flaw::PoliteKick)));
    assert_eq!(report.rows.len(), 1, "{report}");
    assert!(report.all_passed(), "{report}");
    assert!(
        report.rows[0]
            .evidence
            .contains(", 100 notifications back;"),
        "{report}"
    );
}
