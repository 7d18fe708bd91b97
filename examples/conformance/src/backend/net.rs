//! `netback.*`: a raw net frontend (one queue, tx/rx rings and slots by hand) and
//! the net cases.

use hypercall::abi::netif::{
    self, ExtraInfo, RxRequest, RxResponse, TxRequest, TxResponse, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA,
};
use hypercall::abi::ring as layout;
use hypercall::ring::FrontRing;

use super::*;

/// A raw net frontend: one queue, a page each for the tx and rx rings, four data
/// pages.
struct Net<'w> {
    w: &'w dyn FrontendWorld,
    tx_mem: SharedMem<'w>,
    tx: FrontRing<TxRequest, TxResponse, SharedMem<'w>>,
    rx: FrontRing<RxRequest, RxResponse, SharedMem<'w>>,
    port: Port,
    rings: [GrantRef; 2],
    data: Vec<(FrontPage<'w>, GrantRef)>,
    mac: [u8; 6],
}

fn parse_mac(v: &[u8]) -> Option<[u8; 6]> {
    let s = core::str::from_utf8(v).ok()?;
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.trim().split(':') {
        *out.get_mut(n)? = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

impl<'w> Net<'w> {
    fn connect_with(w: &'w dyn FrontendWorld, keys: &[(&str, &str)], expect: bool) -> R<Self> {
        start(w)?;
        let mac = w
            .front_key("mac")
            .and_then(|v| parse_mac(&v))
            .ok_or("the frontend's `mac` is missing or malformed")?;
        let tp = w.alloc_page()?;
        let rp = w.alloc_page()?;
        let tx = FrontRing::init(tp.mem).map_err(|e| e.to_string())?;
        let rx = FrontRing::init(rp.mem).map_err(|e| e.to_string())?;
        let tg = w.grant(tp.frame, Grantee::Backend, false)?;
        let rg = w.grant(rp.frame, Grantee::Backend, false)?;
        let port = w.bind_port(Grantee::Backend)?;
        let mut data = Vec::new();
        for _ in 0..4 {
            let p = w.alloc_page()?;
            let g = w.grant(p.frame, Grantee::Backend, false)?;
            data.push((p, g));
        }
        let ours = [
            ("tx-ring-ref", tg.0.to_string()),
            ("rx-ring-ref", rg.0.to_string()),
            ("event-channel", port.0.to_string()),
            ("request-rx-copy", "1".to_string()),
            ("feature-rx-notify", "1".to_string()),
            ("feature-sg", "1".to_string()),
        ];
        write_keys(w, &ours, keys)?;
        set_state(w, st::CONNECTED)?;
        if expect {
            wait_connected(w)?;
        }
        Ok(Net {
            w,
            tx_mem: tp.mem,
            tx,
            rx,
            port,
            rings: [tg, rg],
            data,
            mac,
        })
    }

    fn connect(w: &'w dyn FrontendWorld) -> R<Self> {
        Self::connect_with(w, &[], true)
    }

    fn push_tx(&mut self, reqs: &[TxRequest]) -> R<()> {
        for r in reqs {
            self.tx.push_request(r).map_err(|e| e.to_string())?;
        }
        let _ = self.tx.push_requests_and_check_notify();
        self.w.notify(self.port)
    }

    fn tx_responses(&mut self, n: usize) -> R<Vec<TxResponse>> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.tx.poll_response() {
                // Extra-info slots are answered RSP_NULL; counted, as sent.
                Ok(Some(r)) => out.push(r),
                Ok(None) => {
                    if !self.w.wait() {
                        return Err(format!("{} of {n} tx responses came", out.len()));
                    }
                }
                Err(e) => return Err(format!("the backend broke the tx ring: {e}")),
            }
        }
        Ok(out)
    }

    /// Posts rx buffers: data pages 0..n (ids 0..n).
    fn post_rx(&mut self, n: usize) -> R<()> {
        for (i, (_, g)) in self.data.iter().take(n).enumerate() {
            let r = RxRequest {
                id: i as u16,
                _pad: 0,
                gref: g.0,
            };
            self.rx.push_request(&r).map_err(|e| e.to_string())?;
        }
        let _ = self.rx.push_requests_and_check_notify();
        self.w.notify(self.port)
    }

    /// The next received frame (a chain of rx responses), bytes from the data pages.
    fn recv(&mut self) -> R<Vec<u8>> {
        let mut frame = Vec::new();
        loop {
            let r = match self.rx.poll_response() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    if !self.w.wait() {
                        return Err("no frame arrived".into());
                    }
                    continue;
                }
                Err(e) => return Err(format!("the backend broke the rx ring: {e}")),
            };
            if r.status < 0 {
                return Err(format!("rx response {} with status {}", r.id, r.status));
            }
            let (p, _) = self
                .data
                .get(usize::from(r.id))
                .ok_or(format!("rx response for id {} never posted", r.id))?;
            let (off, len) = (usize::from(r.offset), r.status as usize);
            if off + len > PAGE_SIZE {
                return Err(format!("rx response past its page: {off}+{len}"));
            }
            let mut b = vec![0u8; len];
            p.mem.read(off, &mut b);
            frame.extend_from_slice(&b);
            if r.flags & netif::NETRXF_EXTRA_INFO != 0 {
                let _ = self.rx.poll_response();
            }
            if r.flags & netif::NETRXF_MORE_DATA == 0 {
                return Ok(frame);
            }
        }
    }

    /// Sends `frame` from data page 3 in one slot; returns the tx status.
    fn send(&mut self, id: u16, frame: &[u8]) -> R<i16> {
        let (p, g) = self.data[3];
        p.mem.write(0, frame);
        self.push_tx(&[TxRequest {
            gref: g.0,
            offset: 0,
            flags: 0,
            id,
            size: frame.len() as u16,
        }])?;
        Ok(self.tx_responses(1)?[0].status)
    }

    fn grefs(&self) -> Vec<GrantRef> {
        let mut v: Vec<_> = self.data.iter().map(|d| d.1).collect();
        v.extend(self.rings);
        v
    }

    fn close(self) -> R<()> {
        let g = self.grefs();
        close(self.w, &g)
    }
}

fn frame_to(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    // Test data: any bytes that differ from frame to frame (by `seed`) do.
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect();
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

/// Two neighbours: one receives, the other sends it a frame; it must arrive intact.
fn net_neighbours_ok(w: &dyn FrontendWorld) -> R<String> {
    let a = w.neighbour().map_err(|e| format!("neighbour: {e}"))?;
    let b = w.neighbour().map_err(|e| format!("neighbour: {e}"))?;
    let mut ra = Net::connect(&*a).map_err(|e| format!("neighbour: {e}"))?;
    let mut sb = Net::connect(&*b).map_err(|e| format!("neighbour: {e}"))?;
    ra.post_rx(3)?;
    let f = frame_to(ra.mac, sb.mac, 600, 9);
    let s = sb.send(1, &f)?;
    if s != netif::RSP_OKAY {
        return Err(format!("the neighbour's good frame got tx status {s}"));
    }
    let got = ra.recv().map_err(|e| format!("neighbour: {e}"))?;
    if got != f {
        return Err(format!(
            "the neighbour got {} bytes, not the 600 sent",
            got.len()
        ));
    }
    ra.close()?;
    sb.close()?;
    Ok("neighbours still exchange frames".into())
}

/// A non-fatal tx attack: each request answered with an error, the vif stays
/// connected and still sends a good frame after.
fn net_tx_errors(w: &dyn FrontendWorld, build: fn(&Net<'_>) -> Vec<TxRequest>) -> R<String> {
    let mut n = Net::connect(w)?;
    let peer = w.neighbour()?;
    let mut rp = Net::connect(&*peer)?;
    rp.post_rx(3)?;
    let reqs = build(&n);
    n.push_tx(&reqs)?;
    let rsps = n.tx_responses(reqs.len())?;
    if !rsps.iter().any(|r| r.status == netif::RSP_ERROR) {
        return Err(format!("no request got RSP_ERROR: {rsps:?}"));
    }
    if let Some(r) = rsps
        .iter()
        .find(|r| r.status >= 0 && r.status != netif::RSP_NULL)
    {
        return Err(format!("tx id {} answered with status {}", r.id, r.status));
    }
    if backend_state(w) != Some(st::CONNECTED) {
        return Err(format!(
            "a bad frame took the vif down: state {:?}, error {:?}",
            backend_state(w),
            text(w.backend_key("error"))
        ));
    }
    // The receiver's buffers are untouched by the failed frames: the next frame it
    // gets is a good one from the same (hostile) sender.
    none_mapped(
        w,
        "after the errors",
        &n.data.iter().map(|d| d.1).collect::<Vec<_>>(),
    )?;
    let f = frame_to(rp.mac, n.mac, 300, 1);
    let s = n.send(100, &f)?;
    let got = rp.recv().map_err(|e| format!("the receiver: {e}"))?;
    if s != netif::RSP_OKAY || got != f {
        return Err(format!(
            "after the bad frames a good one got status {s} and arrived {}",
            if got == f { "intact" } else { "changed" }
        ));
    }
    n.close()?;
    rp.close()?;
    Ok(format!(
        "{} slots answered RSP_ERROR, {} (extra info) RSP_NULL; vif up, receivers saw \
         no error, the next frame arrived; {}",
        rsps.iter().filter(|r| r.status == netif::RSP_ERROR).count(),
        rsps.iter().filter(|r| r.status == netif::RSP_NULL).count(),
        net_neighbours_ok(w)?
    ))
}

/// A fatal tx attack: the backend closes that vif with an error, unmaps it all.
fn net_fatal(w: &dyn FrontendWorld, attack: fn(&mut Net<'_>) -> R<()>) -> R<String> {
    let mut n = Net::connect(w)?;
    attack(&mut n)?;
    let err = wait_refused(w)?;
    let g = n.grefs();
    release(w, &g)?;
    // The domain's other vif still carries a frame to a neighbour.
    let sib = w.sibling().map_err(|e| format!("sibling: {e}"))?;
    let mut s = Net::connect(&*sib).map_err(|e| format!("sibling: {e}"))?;
    let nb = w.neighbour()?;
    let mut r = Net::connect(&*nb)?;
    r.post_rx(3)?;
    let f = frame_to(r.mac, s.mac, 700, 5);
    let st = s.send(1, &f)?;
    let got = r
        .recv()
        .map_err(|e| format!("from the domain's other vif: {e}"))?;
    if st != netif::RSP_OKAY || got != f {
        return Err(format!(
            "the domain's other vif: status {st}, frame arrived intact: {}",
            got == f
        ));
    }
    s.close()?;
    r.close()?;
    Ok(format!(
        "vif closed: {}; nothing mapped; the domain's other vif still sends; {}",
        err.trim(),
        net_neighbours_ok(w)?
    ))
}

fn tx(gref: GrantRef, offset: u16, flags: u16, id: u16, size: u16) -> TxRequest {
    TxRequest {
        gref: gref.0,
        offset,
        flags,
        id,
        size,
    }
}

fn net_connect_keys(w: &dyn FrontendWorld) -> R<String> {
    let bad: [(&str, &str); 4] = [
        ("multi-queue-num-queues", "99"),
        ("request-rx-copy", ""),
        ("tx-ring-ref", "0x10"),
        ("event-channel", "4294967296"),
    ];
    let mut ev = Vec::new();
    for (k, v) in bad {
        let n = w.neighbour()?;
        let w = &*n;
        let net = Net::connect_with(w, &[(k, v)], false)?;
        let err = wait_refused(w).map_err(|e| format!("{k} = {v:?}: {e}"))?;
        release(w, &net.grefs()).map_err(|e| format!("{k} = {v:?}: {e}"))?;
        ev.push(format!("{k}={v:?}: {}", err.trim()));
    }
    Ok(format!("{}; {}", ev.join("; "), net_neighbours_ok(w)?))
}

fn net_bad_rx(w: &dyn FrontendWorld) -> R<String> {
    let mut n = Net::connect(w)?;
    let cap = w.grant_capacity();
    // Refs outside the table and the reserved ref 0, in turn.
    let bad = [
        cap,
        0,
        cap.saturating_add(2),
        0,
        cap.saturating_add(4),
        0,
        u32::MAX,
        0,
    ];
    for (id, gref) in (0..).zip(bad) {
        n.rx.push_request(&RxRequest { id, _pad: 0, gref })
            .map_err(|e| e.to_string())?;
    }
    let _ = n.rx.push_requests_and_check_notify();
    w.notify(n.port)?;
    let other = w.neighbour()?;
    let mut s = Net::connect(&*other)?;
    let mut errors = 0;
    for k in 0..8u8 {
        let st = s.send(u16::from(k), &frame_to(n.mac, s.mac, 300, k))?;
        if st != netif::RSP_OKAY {
            return Err(format!(
                "the sender's frame {k} got {st} (the receiver's fault)"
            ));
        }
    }
    until(w, "rx error responses for the bad buffers", || {
        while let Ok(Some(r)) = n.rx.poll_response() {
            if r.status < 0 {
                errors += 1;
            }
        }
        errors >= 8
    })
    .map_err(|e| format!("{e} ({errors} so far)"))?;
    if backend_state(w) != Some(st::CONNECTED) {
        return Err("bad rx buffers took the vif down".into());
    }
    s.close()?;
    n.close()?;
    Ok(format!(
        "{errors} bad rx buffers answered with an error status, the sender saw OKAY, the vif stays up"
    ))
}

/// Writes frame `f` into `n`'s data pages as a tx chain of `slots` (data page,
/// offset, length; the lengths add up to the frame) and returns its requests, ids
/// 0.., the first carrying the frame's size: not yet published.
fn write_chain(n: &Net<'_>, f: &[u8], slots: &[(usize, u16, u16)]) -> Vec<TxRequest> {
    let mut pos = 0;
    let mut reqs = Vec::new();
    for (k, &(page, off, len)) in slots.iter().enumerate() {
        let (p, g) = n.data[page];
        p.mem
            .write(usize::from(off), &f[pos..pos + usize::from(len)]);
        pos += usize::from(len);
        let last = k + 1 == slots.len();
        let size = if k == 0 { f.len() as u16 } else { len };
        reqs.push(tx(
            g,
            off,
            if last { 0 } else { NETTXF_MORE_DATA },
            k as u16,
            size,
        ));
    }
    reqs
}

/// After a 3-slot chain of frame `f` went out on `n`: every slot answered OKAY and
/// `r` received `f` byte for byte; then both close.
fn arrived_whole(mut n: Net<'_>, mut r: Net<'_>, f: &[u8]) -> R<()> {
    let rsps = n.tx_responses(3)?;
    if let Some(x) = rsps.iter().find(|x| x.status != netif::RSP_OKAY) {
        return Err(format!("slot {} got {}", x.id, x.status));
    }
    let got = r.recv()?;
    if got != f {
        let at = got.iter().zip(f).position(|(a, b)| a != b);
        return Err(format!(
            "{} of {} bytes arrived, first difference at {at:?}",
            got.len(),
            f.len()
        ));
    }
    n.close()?;
    r.close()
}

fn net_odd_layout(w: &dyn FrontendWorld) -> R<String> {
    let rw_ = w.neighbour()?;
    let mut r = Net::connect(&*rw_)?;
    r.post_rx(4)?;
    let mut n = Net::connect(w)?;
    // (data page, offset, length): the first shorter than the headers a backend
    // keeps, the second ending at its page's end, the third a whole page.
    const SLOTS: [(usize, u16, u16); 3] = [(0, 100, 40), (1, 3096, 1000), (2, 0, 4000)];
    let total: usize = SLOTS.iter().map(|s| usize::from(s.2)).sum();
    let f = frame_to(r.mac, n.mac, total, 0x42);
    let reqs = write_chain(&n, &f, &SLOTS);
    n.push_tx(&reqs)?;
    arrived_whole(n, r, &f)?;
    Ok(format!(
        "a {total}-byte frame in 3 odd slots arrived byte for byte"
    ))
}

/// A three-slot frame published in two steps: the first two slots, a pause in
/// which netback may consume them, then the last.
fn net_split_chain(w: &dyn FrontendWorld) -> R<String> {
    let rw_ = w.neighbour()?;
    let mut r = Net::connect(&*rw_)?;
    r.post_rx(4)?;
    let mut n = Net::connect(w)?;
    const SLOTS: [(usize, u16, u16); 3] = [(0, 0, 1000), (1, 0, 1000), (2, 0, 600)];
    let total: usize = SLOTS.iter().map(|s| usize::from(s.2)).sum();
    let f = frame_to(r.mac, n.mac, total, 0x43);
    let reqs = write_chain(&n, &f, &SLOTS);
    n.push_tx(&reqs[..2])?;
    for _ in 0..3 {
        w.wait();
    }
    if let Ok(Some(x)) = n.tx.poll_response() {
        return Err(format!(
            "slot {} answered ({}) before its frame's last slot was published",
            x.id, x.status
        ));
    }
    n.push_tx(&reqs[2..])?;
    arrived_whole(n, r, &f)?;
    Ok(format!(
        "a {total}-byte frame published as 2 + 1 slots arrived whole, answered once complete"
    ))
}

fn net_bad_tail(w: &dyn FrontendWorld) -> R<String> {
    let rw_ = w.neighbour()?;
    let mut r = Net::connect(&*rw_)?;
    r.post_rx(3)?;
    let mut n = Net::connect(w)?;
    let cap = w.grant_capacity();
    let (p, g) = n.data[0];
    let head = frame_to([0xff; 6], n.mac, 1500, 7);
    p.mem.write(0, &head);
    n.push_tx(&[
        tx(g, 0, NETTXF_MORE_DATA, 0, 2000),
        tx(GrantRef(cap), 0, 0, 1, 500),
    ])?;
    let rsps = n.tx_responses(2)?;
    if !rsps.iter().all(|x| x.status == netif::RSP_ERROR) {
        return Err(format!("the broken frame's slots got {rsps:?}"));
    }
    // The receiver lost nothing: its next frame is the good one, no error before.
    let f = frame_to(r.mac, n.mac, 1200, 3);
    let s = n.send(10, &f)?;
    let got = r.recv().map_err(|e| format!("the receiver: {e}"))?;
    if s != netif::RSP_OKAY || got != f {
        return Err(format!(
            "the good frame after it: status {s}, arrived intact: {}",
            got == f
        ));
    }
    n.close()?;
    r.close()?;
    Ok(
        "the sender's frame failed (RSP_ERROR on both slots); the receiver's next frame \
        is the good one, no error status"
            .into(),
    )
}

/// Two valid frames with one tx id: each is a request of its own.
fn net_duplicate_ids(w: &dyn FrontendWorld) -> R<String> {
    let rw_ = w.neighbour()?;
    let mut r = Net::connect(&*rw_)?;
    r.post_rx(3)?;
    let mut n = Net::connect(w)?;
    let (f1, f2) = (
        frame_to(r.mac, n.mac, 200, 1),
        frame_to(r.mac, n.mac, 300, 2),
    );
    let (p0, g0) = n.data[0];
    let (p1, g1) = n.data[1];
    p0.mem.write(0, &f1);
    p1.mem.write(0, &f2);
    n.push_tx(&[tx(g0, 0, 0, 5, 200), tx(g1, 0, 0, 5, 300)])?;
    let rsps = n.tx_responses(2)?;
    if rsps
        .iter()
        .any(|x| x.id != 5 || x.status != netif::RSP_OKAY)
    {
        return Err(format!("two frames with tx id 5 answered {rsps:?}"));
    }
    let (a, b) = (r.recv()?, r.recv()?);
    if a != f1 || b != f2 {
        return Err(format!(
            "received {} and {} bytes, not the two frames in order",
            a.len(),
            b.len()
        ));
    }
    if backend_state(w) != Some(st::CONNECTED) {
        return Err("a reused tx id took the vif down".into());
    }
    n.close()?;
    r.close()?;
    Ok("two frames with one tx id: both answered OKAY and delivered in order".into())
}

/// One vif posts no rx buffers while a neighbour floods it; the domain's other vif
/// must still receive.
fn net_starved_vif(w: &dyn FrontendWorld) -> R<String> {
    let mut a = Net::connect(w)?;
    let sib = w.sibling().map_err(|e| format!("sibling: {e}"))?;
    let mut b = Net::connect(&*sib).map_err(|e| format!("sibling: {e}"))?;
    b.post_rx(3)?;
    let nb = w.neighbour()?;
    let mut s = Net::connect(&*nb)?;
    // The starved vif sends first (to a MAC nobody has: flooded, so the other vif
    // sees it), so that a bridge knows where its MAC lives and sends the flood
    // below to it alone.
    let hello = frame_to([0x02, 0, 0, 0, 0, 0x77], a.mac, 100, 3);
    let st = a.send(50, &hello)?;
    let got = b
        .recv()
        .map_err(|e| format!("the domain's other vif: {e}"))?;
    if st != netif::RSP_OKAY || got != hello {
        return Err(format!(
            "a flooded frame: status {st}, reached the other vif intact: {}",
            got == hello
        ));
    }
    for k in 0..64u16 {
        let st = s.send(k, &frame_to(a.mac, s.mac, 1000, k as u8))?;
        if st != netif::RSP_OKAY {
            return Err(format!(
                "frame {k} to a vif without buffers: the sender got {st}"
            ));
        }
    }
    let f = frame_to(b.mac, s.mac, 500, 9);
    let st = s.send(100, &f)?;
    let got = b
        .recv()
        .map_err(|e| format!("the domain's other vif: {e}"))?;
    if st != netif::RSP_OKAY || got != f {
        return Err(format!(
            "the domain's other vif: status {st}, frame intact: {}",
            got == f
        ));
    }
    if backend_state(w) != Some(st::CONNECTED) {
        return Err("a vif without rx buffers was disconnected".into());
    }
    s.close()?;
    b.close()?;
    a.close()?;
    Ok(
        "64 frames to a vif with no rx buffers (sender answered OKAY), the domain's \
        other vif still receives (a flooded frame before, its own after), both stay up"
            .into(),
    )
}

/// The `netback.*` cases.
pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "netback.bad_tx_gref (N*, G*)",
            class: Class::Net,
            front: "sends three frames whose grant refs are outside the table or 0",
            expect: "RSP_ERROR for each, the vif stays up, the next good frame arrives; others \
                 unaffected",
            run: |w| {
                net_tx_errors(w, |n| {
                    let cap = n.w.grant_capacity();
                    vec![
                        tx(GrantRef(cap), 0, 0, 0, 100),
                        tx(GrantRef(u32::MAX), 0, 0, 1, 100),
                        tx(GrantRef(0), 0, 0, 2, 100),
                    ]
                })
            },
        },
        Case {
            name: "netback.runt_frame (N8)",
            class: Class::Net,
            front: "sends a 5-byte frame (shorter than an Ethernet header)",
            expect: "RSP_ERROR, the vif stays up",
            run: |w| net_tx_errors(w, |n| vec![tx(n.data[0].1, 0, 0, 0, 5)]),
        },
        Case {
            name: "netback.sizes_inconsistent (N5)",
            class: Class::Net,
            front: "a two-slot frame whose first slot claims 100 bytes but the second alone 3000",
            expect: "RSP_ERROR on the frame's slots, the vif stays up",
            run: |w| {
                net_tx_errors(w, |n| {
                    let g = n.data[0].1;
                    vec![tx(g, 0, NETTXF_MORE_DATA, 0, 100), tx(g, 0, 0, 1, 3000)]
                })
            },
        },
        Case {
            name: "netback.bad_gso (N6)",
            class: Class::Net,
            front: "a frame whose GSO extra-info slot has size 0",
            expect: "RSP_ERROR for the frame (RSP_NULL for the extra slot), the vif stays up",
            run: |w| {
                net_tx_errors(w, |n| {
                    let x = ExtraInfo::gso(0, netif::GSO_TYPE_TCPV4, 0, 0);
                    vec![tx(n.data[0].1, 0, NETTXF_EXTRA_INFO, 0, 1000), TxRequest::from(x)]
                })
            },
        },
        Case {
            name: "netback.unknown_extra_info (N6)",
            class: Class::Net,
            front: "a frame whose extra-info slot has type 0 (none), which no frontend sends",
            expect: "that vif closed with an `error` node (Linux's fatal tx error), nothing \
                     mapped; the domain's other vif and other domains unaffected",
            run: |w| {
                net_fatal(w, |n| {
                    let x = ExtraInfo {
                        ty: netif::EXTRA_TYPE_NONE,
                        ..ExtraInfo::gso(1400, netif::GSO_TYPE_TCPV4, 0, 0)
                    };
                    n.push_tx(&[tx(n.data[0].1, 0, NETTXF_EXTRA_INFO, 0, 1000), TxRequest::from(x)])
                })
            },
        },
        Case {
            name: "netback.duplicate_tx_ids (N2)",
            class: Class::Net,
            front: "two valid frames with the same tx id",
            expect: "each answered OKAY with that id and delivered, in order; the vif stays up",
            run: net_duplicate_ids,
        },
        Case {
            name: "netback.bad_tail_gref (grant-to-grant copy)",
            class: Class::Net,
            front: "a 2000-byte broadcast frame: good headers, then a slot whose grant is bad \
                (the part receivers copy straight from the sender's pages)",
            expect: "the sender's frame fails (RSP_ERROR); receivers see no error and their \
                 buffers stay posted for the next frame",
            run: net_bad_tail,
        },
        Case {
            name: "netback.odd_slot_layout (grant-to-grant copy)",
            class: Class::Net,
            front: "a frame in slots at odd offsets and sizes (a 40-byte first slot, one \
                ending at its page's end)",
            expect: "the frame arrives byte for byte",
            run: net_odd_layout,
        },
        Case {
            name: "netback.tx_chain_split (N5)",
            class: Class::Net,
            front: "publishes two slots of a three-slot frame, pauses, then the third",
            expect: "nothing answered until the frame is complete; then it arrives whole and \
                 every slot is answered OKAY",
            run: net_split_chain,
        },
        Case {
            name: "netback.slot_crosses_page (N*, E5)",
            class: Class::Net,
            front: "a slot at offset 4000 of 1460 bytes (past its page)",
            expect: "that vif closed with an `error` node, nothing mapped; the domain's other vif and other domains unaffected",
            run: |w| {
                net_fatal(w, |n| {
                    let g = n.data[0].1;
                    n.push_tx(&[tx(g, 4000, 0, 0, 1460)])
                })
            },
        },
        Case {
            name: "netback.too_many_slots (N5)",
            class: Class::Net,
            front: "a frame of 40 slots (more than the 18 a frame may use)",
            expect: "that vif closed with an `error` node, nothing mapped; the domain's other vif and other domains unaffected",
            run: |w| {
                net_fatal(w, |n| {
                    let g = n.data[0].1;
                    let reqs: Vec<_> = (0..40u16)
                        .map(|id| {
                            let more = if id < 39 { NETTXF_MORE_DATA } else { 0 };
                            tx(g, 0, more, id, if id == 0 { 40 * 64 } else { 64 })
                        })
                        .collect();
                    n.push_tx(&reqs)
                })
            },
        },
        Case {
            name: "netback.req_prod_overrun (row 1)",
            class: Class::Net,
            front: "publishes tx req_prod 5000",
            expect: "that vif closed with an `error` node, nothing mapped; the domain's other vif and other domains unaffected",
            run: |w| {
                net_fatal(w, |n| {
                    n.tx_mem.store_u32(layout::REQ_PROD, 5000);
                    n.w.notify(n.port)
                })
            },
        },
        Case {
            name: "netback.starved_vif_other_vif (E5, row 21)",
            class: Class::Net,
            front: "posts no rx buffers on one vif while a neighbour sends it 64 frames",
            expect: "the sender is answered OKAY (the drops are the receiver's), the \
                     domain's other vif still receives, both vifs stay up",
            run: net_starved_vif,
        },
        Case {
            name: "netback.bad_connect_keys (N9)",
            class: Class::Net,
            front: "connects with 99 queues, without request-rx-copy, tx-ring-ref `0x10`, \
                event-channel 2^32",
            expect: "that vif refused (Closing + `error`), nothing mapped; others unaffected",
            run: net_connect_keys,
        },
        Case {
            name: "netback.bad_rx_grefs (N4)",
            class: Class::Net,
            front: "posts rx buffers whose grants are outside the table or 0, then is sent frames",
            expect: "an error status for each of those buffers, OKAY to the sender, the vif up",
            run: net_bad_rx,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::Scripted;
    use super::*;

    /// A raw net frontend over `w`'s pages, connected by hand (no handshake), and
    /// its rx ring page, where the tests play the backend.
    fn net(w: &Scripted) -> (Net<'_>, SharedMem<'_>) {
        let tp = w.alloc_page().unwrap();
        let rp = w.alloc_page().unwrap();
        let data = (0..4)
            .map(|k| (w.alloc_page().unwrap(), GrantRef(10 + k)))
            .collect();
        let n = Net {
            w,
            tx_mem: tp.mem,
            tx: FrontRing::init(tp.mem).unwrap(),
            rx: FrontRing::init(rp.mem).unwrap(),
            port: Port(3),
            rings: [GrantRef(8), GrantRef(9)],
            data,
            mac: [2, 0, 0, 0, 0, 1],
        };
        (n, rp.mem)
    }

    /// Publishes `rsps` on the rx ring page `ring` as the backend.
    fn answer(ring: &SharedMem<'_>, rsps: &[RxResponse]) {
        let prod = ring.load_u32(layout::RSP_PROD);
        for (i, r) in rsps.iter().enumerate() {
            let at = layout::HEADER_SIZE + (prod as usize + i) % 256 * size_of::<RxResponse>();
            ring.write_obj(at, r);
        }
        ring.store_u32(layout::RSP_PROD, prod + rsps.len() as u32);
    }

    fn rsp(id: u16, offset: u16, flags: u16, status: i16) -> RxResponse {
        RxResponse {
            id,
            offset,
            flags,
            status,
        }
    }

    #[test]
    fn recv_joins_a_chain_and_skips_extra_info() {
        let w = Scripted::new();
        let (mut n, ring) = net(&w);
        n.post_rx(4).unwrap();
        // A fifth request, for the extra-info slot's answer.
        let r = RxRequest {
            id: 3,
            _pad: 0,
            gref: 13,
        };
        n.rx.push_request(&r).unwrap();
        let _ = n.rx.push_requests_and_check_notify();
        n.data[0].0.mem.write(100, b"head");
        n.data[2].0.mem.write(0, b"tail");
        // A slot ending at its page's end, an extra-info slot, the last slot.
        n.data[1].0.mem.write(PAGE_SIZE - 3, b"mid");
        let extra = netif::NETRXF_EXTRA_INFO | netif::NETRXF_MORE_DATA;
        answer(
            &ring,
            &[
                rsp(0, 100, netif::NETRXF_MORE_DATA, 4),
                rsp(1, (PAGE_SIZE - 3) as u16, extra, 3),
                // The extra-info slot: its bytes are no data.
                rsp(0xffff, 0xffff, 0, -1),
                // An empty slot: status 0 is a length, no error.
                rsp(3, 0, netif::NETRXF_MORE_DATA, 0),
                rsp(2, 0, 0, 4),
            ],
        );
        assert_eq!(n.recv().unwrap(), b"headmidtail");
    }

    #[test]
    fn recv_refuses_what_no_backend_may_answer() {
        for (bad, want) in [
            (rsp(1, 0, 0, -1), "rx response 1 with status -1"),
            (rsp(4, 0, 0, 10), "rx response for id 4 never posted"),
            (rsp(0, 4000, 0, 97), "rx response past its page: 4000+97"),
        ] {
            let w = Scripted::new();
            let (mut n, ring) = net(&w);
            n.post_rx(4).unwrap();
            answer(&ring, &[bad]);
            assert_eq!(n.recv().unwrap_err(), want);
        }
        let w = Scripted::new();
        let (mut n, _ring) = net(&w);
        n.post_rx(4).unwrap();
        assert_eq!(n.recv().unwrap_err(), "no frame arrived");
        assert_eq!(w.waits.get(), 10);
    }

    #[test]
    fn parse_mac_takes_six_hex_bytes_only() {
        assert_eq!(
            parse_mac(b"aa:00:0f:50:02:ff\n"),
            Some([0xaa, 0, 0x0f, 0x50, 2, 0xff])
        );
        for bad in [
            &b"aa:00:0f:50:02"[..],
            b"aa:00:0f:50:02:ff:01",
            b"aa:00:0f:50:02:fg",
            b"aa:00:0f:50:02:100",
            b"",
            b"\xff",
        ] {
            assert_eq!(parse_mac(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_test_frame_goes_from_src_to_dst() {
        let f = frame_to([1; 6], [2; 6], 60, 9);
        assert_eq!(f.len(), 60);
        assert_eq!(
            (&f[..6], &f[6..12], &f[12..14]),
            (&[1u8; 6][..], &[2u8; 6][..], &[0x88, 0xb5][..])
        );
        assert_ne!(f[14..], frame_to([1; 6], [2; 6], 60, 10)[14..]);
    }
}
