//! The network cases and the helpers they share.

use std::collections::BTreeSet;

use hypercall::abi::netif::{self, ExtraInfo, TxResponse};
use hypercall::abi::xenbus::XenbusState;
use hypercall::{Gfn, GrantRef, PAGE_SIZE};

use super::{Case, Ctx, NetDriver, NetEnv, Probe, RxSlot, TxMode, MAX_QUEUES, RING_SIZE};
use crate::GrantObserver;

type Driver<'d> = Box<dyn NetDriver + 'd>;
type R = Result<String, String>;

/// Frames each way in the long runs: more than two rings' worth (600 > 2 * 256),
/// so every ring index wraps the slot array twice (fewer under Miri: still past
/// one wrap). A literal, not a product of `RING_SIZE`: test data, not arithmetic
/// (see the assertion below).
const LONG_RUN: usize = if cfg!(miri) { 300 } else { 600 };
/// Bad responses a driver gets before it must have failed the device (row 18):
/// two rings' worth (fewer under Miri).
const BAD_RUN: usize = if cfg!(miri) { 300 } else { 512 };
// The two runs above, and the tries of `net.tx_never_answered`, are written for
// rings of 256 slots and at most 4 queues.
const _: () = assert!(RING_SIZE == 256);
const _: () = assert!(MAX_QUEUES == 4);
/// Waits a case gives the driver for something to arrive.
const IDLE: usize = 50;
/// Turns a case waits for the driver to post rx buffers before giving up on it.
const STUCK_TURNS: usize = 1000;

/// An Ethernet frame of `len` bytes (to the guest's MAC, from the backend's side,
/// ethertype 0x88b5) whose payload depends on `seed`.
fn frame(len: usize, seed: u32) -> Vec<u8> {
    let mut f = vec![0u8; len];
    let head = [
        0x00, 0x16, 0x3e, 0x5a, 0x00, 0x01, 0x00, 0x16, 0x3e, 0x00, 0x00, 0xfe, 0x88, 0xb5,
    ];
    let n = head.len().min(len);
    f[..n].copy_from_slice(&head[..n]);
    for (i, b) in f.iter_mut().enumerate().skip(n) {
        *b = (i as u32)
            .wrapping_mul(7)
            .wrapping_add(seed.wrapping_mul(13)) as u8;
    }
    if len >= 18 {
        f[14..18].copy_from_slice(&seed.to_be_bytes());
    }
    f
}

fn bad_data(offset: u16, status: i16) -> RxSlot {
    RxSlot::Data {
        id: None,
        offset,
        flags: 0,
        status,
        bytes: Vec::new(),
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    if a.len() != b.len() {
        return format!("{} bytes instead of {}", a.len(), b.len());
    }
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("byte {i} differs"),
        None => "identical".into(),
    }
}

impl<'d> Ctx<'_, 'd> {
    /// The driver under test, its grant table made known to the backend.
    fn driver(&mut self) -> Result<Driver<'d>, String> {
        let env = NetEnv {
            host: self.host.clone(),
            node: "device/vif/0".into(),
            index: 0,
        };
        let d = (self.make)(&env).map_err(|e| format!("building the driver: {e}"))?;
        if self.host.region_of(d.grant_frames()).is_none() {
            return Err("the driver's grant frames are not the platform's memory".into());
        }
        let obs = GrantObserver::new(&self.host, d.grant_frames());
        let o = obs.clone();
        self.be.with(|b| b.set_grants(o));
        self.grants = Some(obs);
        Ok(d)
    }

    /// The driver, connected, with its rx buffers taken by the backend.
    fn connected(&mut self) -> Result<Driver<'d>, String> {
        let mut d = self.driver()?;
        d.connect().map_err(|e| format!("connect failed: {e}"))?;
        self.settle(2);
        Ok(d)
    }

    /// `n` turns of every peer.
    fn settle(&self, n: usize) {
        for _ in 0..n {
            hypercall::Platform::wait(&self.host);
        }
    }

    fn be<T>(&self, f: impl FnOnce(&mut super::NetBackend) -> T) -> T {
        self.be.with(f)
    }

    /// Runs `f` on a ring of queue 0 (`Err` if the backend serves no queue).
    fn ring(
        &self,
        pick: impl FnOnce(&super::PeerQueue) -> &super::RawRing,
        f: impl FnOnce(&super::RawRing),
    ) -> Result<(), String> {
        self.be(|b| b.queue(0).map(|q| f(pick(q))))
            .ok_or_else(|| "the backend serves no queue".to_string())
    }

    /// Live grants of the driver.
    fn live(&self) -> Vec<(GrantRef, Gfn)> {
        self.grants.as_ref().map(|g| g.live()).unwrap_or_default()
    }

    /// Sends `f`, retrying (with waits) while the driver refuses for lack of room.
    fn send(&self, d: &mut Driver<'d>, f: &[u8]) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..IDLE {
            match d.send(f) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if let Some(why) = d.probe().failed {
                return Err(format!("send failed, device failed: {why}"));
            }
            self.settle(1);
        }
        Err(format!("send refused {IDLE} times: {last}"))
    }

    /// Receives until `want` frames came or `IDLE` empty polls in a row.
    fn recv(&self, d: &mut Driver<'d>, want: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut idle = 0;
        while got.len() < want && idle < IDLE {
            match d.recv(&mut buf)? {
                Some(n) if n <= buf.len() => {
                    got.push(buf[..n].to_vec());
                    idle = 0;
                }
                Some(n) => return Err(format!("recv claimed {n} bytes into a 64 KiB buffer")),
                None => {
                    idle += 1;
                    self.settle(1);
                }
            }
        }
        Ok(got)
    }

    /// Receives whatever comes within a few polls (expecting nothing).
    fn drain(&self, d: &mut Driver<'d>, polls: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..polls {
            match d.recv(&mut buf) {
                Ok(Some(n)) => got.push(buf[..n.min(buf.len())].to_vec()),
                Ok(None) => {}
                // A driver that failed the device says so in its probe.
                Err(e) if d.probe().failed.is_none() => return Err(e),
                Err(_) => break,
            }
            self.settle(1);
        }
        Ok(got)
    }

    /// Sends `frames` and checks the backend got exactly them, in order within each
    /// queue (a multi-queue driver spreads flows; queues are served one by one).
    fn traffic_out(&self, d: &mut Driver<'d>, frames: &[Vec<u8>]) -> Result<(), String> {
        let before = self.be(|b| b.tx_frames.len());
        for f in frames {
            self.send(d, f)?;
        }
        for _ in 0..IDLE {
            if self.be(|b| b.tx_frames.len()) >= before + frames.len() {
                break;
            }
            d.probe();
            self.settle(1);
        }
        let got: Vec<(usize, Vec<u8>)> = self.be(|b| {
            b.tx_frames[before..]
                .iter()
                .map(|f| (f.queue, f.data.clone()))
                .collect()
        });
        if got.len() != frames.len() {
            return Err(format!(
                "the backend got {} of {} frames",
                got.len(),
                frames.len()
            ));
        }
        // Each queue's frames, matched in order against what is left of `frames`:
        // the first sent frame not yet matched that this queue carried next.
        let mut left: Vec<Option<&Vec<u8>>> = frames.iter().map(Some).collect();
        let mut at = vec![0usize; 1 + got.iter().map(|g| g.0).max().unwrap_or(0)];
        for (q, g) in &got {
            let from = at[*q];
            let Some(i) = (from..frames.len()).find(|&i| left[i] == Some(g)) else {
                // Not sent (corrupted), or out of order on its queue.
                let i = (from..frames.len())
                    .find(|&i| left[i].is_some())
                    .unwrap_or(0);
                return Err(format!("tx frame {i}: {}", first_diff(g, &frames[i])));
            };
            // The queue's next frame comes after this one (`left[i]` is taken, so
            // searching from `i` is searching from `i + 1`).
            left[i] = None;
            at[*q] = i;
        }
        Ok(())
    }

    /// Delivers `frames` and checks the driver hands out exactly them, in order.
    fn traffic_in(&self, d: &mut Driver<'d>, frames: &[Vec<u8>]) -> Result<(), String> {
        for f in frames {
            self.be(|b| b.deliver(0, f));
        }
        let got = self.recv(d, frames.len())?;
        if got.len() != frames.len() {
            return Err(format!(
                "the driver handed out {} of {} frames ({} still queued at the backend)",
                got.len(),
                frames.len(),
                self.be(|b| b.undelivered())
            ));
        }
        for (i, (g, f)) in got.iter().zip(frames).enumerate() {
            if g != f {
                return Err(format!("rx frame {i}: {}", first_diff(g, f)));
            }
        }
        Ok(())
    }

    /// A few frames each way.
    fn traffic(&self, d: &mut Driver<'d>, n: usize, seed: u32) -> Result<(), String> {
        // Lengths from the smallest frame up, and from the largest down; seeds
        // from `seed` out, from `seed + 100` in (a table and ranges: no verdict
        // depends on the exact values, only on their being different).
        const OUT: [usize; 6] = [60, 157, 254, 351, 448, 545];
        const IN: [usize; 6] = [1514, 1383, 1252, 1121, 990, 859];
        let out: Vec<Vec<u8>> = OUT
            .iter()
            .cycle()
            .zip(seed..)
            .take(n)
            .map(|(&len, s)| frame(len, s))
            .collect();
        self.traffic_out(d, &out)?;
        let inn: Vec<Vec<u8>> = IN
            .iter()
            .cycle()
            .zip((seed..).skip(100))
            .take(n)
            .map(|(&len, s)| frame(len, s))
            .collect();
        self.traffic_in(d, &inn)
    }

    /// Pushes raw rx slots in order, publishing and letting the driver receive
    /// whenever the backend runs out of buffers; returns every frame the driver
    /// handed out meanwhile and just after.
    fn push_slots(&self, d: &mut Driver<'d>, slots: Vec<RxSlot>) -> Result<Vec<Vec<u8>>, String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut stuck = 0;
        for s in slots {
            loop {
                let pushed = self.be(|b| b.push_rx(0, s.clone()));
                if pushed.is_ok() {
                    break;
                }
                self.be(|b| b.publish(0));
                match d.recv(&mut buf) {
                    Ok(Some(n)) => got.push(buf[..n.min(buf.len())].to_vec()),
                    Ok(None) => {}
                    Err(e) if d.probe().failed.is_none() => return Err(e),
                    Err(_) => {}
                }
                if d.probe().failed.is_some() {
                    return Ok(got);
                }
                self.settle(1);
                stuck += 1;
                if stuck > STUCK_TURNS {
                    return Err("the driver stopped posting rx buffers".into());
                }
            }
        }
        self.be(|b| b.publish(0));
        got.extend(self.drain(d, 5)?);
        Ok(got)
    }

    /// After a hostile move: `Ok` with the reason if the driver failed the device.
    fn failed(&self, d: &mut Driver<'d>) -> R {
        let p = d.probe();
        match p.failed {
            Some(why) => Ok(format!("device failed: {why}")),
            None => Err(format!(
                "device not failed (connected: {}, rx errors {:?})",
                p.connected, p.rx_errors
            )),
        }
    }

    /// Live grants other than `kept` (grants left behind).
    fn leaks(&self, kept: &[(GrantRef, Gfn)]) -> Vec<(GrantRef, Gfn)> {
        self.live()
            .into_iter()
            .filter(|g| !kept.contains(g))
            .collect()
    }
}

fn down(p: &Probe) -> bool {
    !p.connected || p.failed.is_some()
}

/// After a bad rx frame: it was not handed out, a good one then is, and the
/// device still works.
fn dropped_then_good<'d>(
    ctx: &Ctx<'_, 'd>,
    d: &mut Driver<'d>,
    got: Vec<Vec<u8>>,
    what: &str,
) -> R {
    if let Some(f) = got.first() {
        return Err(format!(
            "{what}: the driver handed out a {}-byte frame",
            f.len()
        ));
    }
    if let Some(why) = d.probe().failed {
        return Err(format!("{what}: one bad frame failed the device: {why}"));
    }
    let good = frame(200, 77);
    ctx.traffic_in(d, std::slice::from_ref(&good))
        .map_err(|e| format!("{what}: then a good frame: {e}"))?;
    let p = d.probe();
    Ok(format!(
        "{what}: dropped; the next frame arrived (rx errors {:?})",
        p.rx_errors
    ))
}

fn kept_pages(ctx: &Ctx<'_, '_>, kept: &[(GrantRef, Gfn)]) -> Vec<Vec<u8>> {
    kept.iter()
        .map(|&(_, g)| {
            let mut v = vec![0u8; PAGE_SIZE];
            if let Some(p) = ctx.host.frame(g) {
                p.mem().read(0, &mut v);
            }
            v
        })
        .collect()
}

/// Checks kept grants: still granted on the same frames, never granted again,
/// contents unchanged since `snap`.
fn kept_untouched(ctx: &Ctx<'_, '_>, kept: &[(GrantRef, Gfn)], snap: &[Vec<u8>]) -> R {
    let live = ctx.live();
    for g in kept {
        if !live.contains(g) {
            return Err(format!(
                "grant {} (frame {:#x}) was revoked while the backend mapped it",
                g.0 .0, g.1 .0
            ));
        }
    }
    let frames: BTreeSet<u64> = kept.iter().map(|g| g.1 .0).collect();
    if let Some(re) = live
        .iter()
        .find(|g| !kept.contains(g) && frames.contains(&g.1 .0))
    {
        return Err(format!(
            "frame {:#x}, still mapped by the backend, granted again (grant {})",
            re.1 .0, re.0 .0
        ));
    }
    for (i, (now, then)) in kept_pages(ctx, kept).iter().zip(snap).enumerate() {
        if now != then {
            return Err(format!(
                "frame {:#x}, still mapped by the backend, was written: {}",
                kept[i].1 .0,
                match now.iter().zip(then).position(|(a, b)| a != b) {
                    Some(at) => format!("byte {at} changed"),
                    None => "changed".into(),
                }
            ));
        }
    }
    Ok(format!("{} kept page(s) left alone", kept.len()))
}

/// The ring grants and the rx buffers the backend took, by frame.
fn ring_frames(ctx: &Ctx<'_, '_>) -> Vec<(GrantRef, Gfn)> {
    let refs: Vec<GrantRef> = ctx.be(|b| {
        b.queues()
            .iter()
            .flat_map(|q| [q.ring_refs.0, q.ring_refs.1])
            .collect()
    });
    ctx.live()
        .into_iter()
        .filter(|(r, _)| refs.contains(r))
        .collect()
}

/// Sets the tx hook to answer the n-th data request (from 0) with `f(n, req, rsp)`.
fn tx_hook(ctx: &Ctx<'_, '_>, mut f: impl FnMut(usize, TxResponse) -> Vec<TxResponse> + 'static) {
    let mut n = 0usize;
    ctx.be(|b| {
        b.hooks.tx_response = Some(Box::new(move |_req, rsp| {
            if rsp.status == netif::RSP_NULL {
                return vec![rsp];
            }
            n += 1;
            f(n - 1, rsp)
        }))
    });
}

/// Connects with backend key `key` = `value` (on a fresh rig).
fn connect_with<'d>(ctx: &mut Ctx<'_, 'd>, key: &str, value: &[u8]) -> Result<Driver<'d>, String> {
    ctx.reset();
    ctx.be(|b| b.set_key(key, value));
    let mut d = ctx.driver()?;
    d.connect().map(|()| d)
}

fn show(v: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(v))
}

/// Connects with the guest's `mac` = each of `values` (missing for `None`); each
/// must be refused.
fn macs_refused(ctx: &mut Ctx<'_, '_>, values: &[Option<&[u8]>]) -> R {
    let mut ev = Vec::new();
    for v in values {
        ctx.reset();
        ctx.be(|b| match v {
            Some(m) => b.set_frontend_key("mac", m),
            None => b.remove_frontend_key("mac"),
        });
        let mut d = ctx.driver()?;
        let shown = v.map_or("missing".into(), show);
        match d.connect() {
            Ok(()) => return Err(format!("mac {shown} accepted")),
            Err(e) => ev.push(format!("{shown}: {e}")),
        }
    }
    Ok(format!("refused: {}", ev.join("; ")))
}

pub(super) static CASES: &[Case] = &[
    Case {
        name: "net.connect_and_traffic (baseline)",
        peer: "a correct netback: offers the usual features, answers every request",
        expect: "connects; 6 frames (60-1514 bytes) each way arrive intact and in order",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.traffic(&mut d, 6, 1)?;
            let k = ctx.be(|b| b.frontend_keys().len());
            Ok(format!(
                "connected ({k} frontend keys read); 6 frames each way intact"
            ))
        },
    },
    Case {
        name: "net.close_ends_every_grant (row 26)",
        peer: "a correct netback that unmaps everything when the frontend closes",
        expect: "after traffic and close, no grant of the driver is left",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.traffic(&mut d, 3, 2)?;
            let before = ctx.live().len();
            d.close().map_err(|e| format!("close: {e}"))?;
            let left = ctx.leaks(&[]);
            if !left.is_empty() {
                return Err(format!(
                    "{} of {before} grants left after close (first: ref {})",
                    left.len(),
                    left[0].0 .0
                ));
            }
            Ok(format!("{before} grants before close, none after"))
        },
    },
    Case {
        name: "net.protocol_hygiene (R7, G3)",
        peer: "checks every request: padding zero, slots inside their page, grants valid, \
               pages holding nothing of the guest's when first granted",
        expect: "no violation over traffic both ways and a close",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.traffic(&mut d, 4, 3)?;
            d.close().map_err(|e| format!("close: {e}"))?;
            let (v, rx, tx) =
                ctx.be(|b| (b.violations.clone(), b.rx_posted.len(), b.tx_pages.len()));
            if v.is_empty() {
                Ok(format!(
                    "{rx} rx buffers and {tx} tx pages checked, all clean"
                ))
            } else {
                Err(v.join("; "))
            }
        },
    },
    Case {
        name: "net.tx_rsp_prod_overrun (row 1, R1)",
        peer: "answers a frame, then sets the tx rsp_prod a ring and one past the responses",
        expect: "the device fails; no slot read",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.be(|b| b.hooks.publish = false);
            ctx.send(&mut d, &frame(60, 1))?;
            ctx.settle(2);
            ctx.ring(
                |q| &q.tx,
                |r| r.set_rsp_prod(r.rsp_prod_pvt().wrapping_add(RING_SIZE)),
            )?;
            let _ = d.send(&frame(60, 2));
            ctx.failed(&mut d)
        },
    },
    Case {
        name: "net.rx_rsp_prod_overrun (row 1, R1)",
        peer: "writes one rx response, then sets the rx rsp_prod a ring and one past it",
        expect: "the device fails; no frame handed out",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.be(|b| {
                b.hooks.publish = false;
                b.deliver(0, &frame(100, 1));
            });
            ctx.settle(1);
            ctx.ring(
                |q| &q.rx,
                |r| r.set_rsp_prod(r.rsp_prod_pvt().wrapping_add(RING_SIZE)),
            )?;
            let got = ctx.drain(&mut d, 3);
            if let Ok(g) = &got {
                if !g.is_empty() {
                    return Err(format!("{} frame(s) handed out", g.len()));
                }
            }
            ctx.failed(&mut d)
        },
    },
    Case {
        name: "net.tx_rsp_prod_backwards (row 2, R2)",
        peer: "answers two frames, then moves the tx rsp_prod two back",
        expect: "the device fails",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.traffic_out(&mut d, &[frame(60, 1), frame(60, 2)])?;
            d.probe();
            ctx.be(|b| b.hooks.publish = false);
            ctx.ring(
                |q| &q.tx,
                |r| r.set_rsp_prod(r.rsp_prod_pvt().wrapping_sub(2)),
            )?;
            let _ = d.send(&frame(60, 3));
            ctx.failed(&mut d)
        },
    },
    Case {
        name: "net.rx_rsp_prod_backwards (row 2, R2)",
        peer: "delivers two frames, then moves the rx rsp_prod two back",
        expect: "the device fails; nothing more handed out",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.traffic_in(&mut d, &[frame(80, 1), frame(90, 2)])?;
            ctx.be(|b| b.hooks.publish = false);
            ctx.ring(
                |q| &q.rx,
                |r| r.set_rsp_prod(r.rsp_prod_pvt().wrapping_sub(2)),
            )?;
            if let Ok(g) = ctx.drain(&mut d, 3) {
                if !g.is_empty() {
                    return Err(format!("{} frame(s) handed out again", g.len()));
                }
            }
            ctx.failed(&mut d)
        },
    },
    Case {
        name: "net.ring_slots_wrap (row 4, R3)",
        peer: "a correct netback, for more than two rings' worth of frames each way \
               (the frontend picks the start index, so the 2^32 wrap itself is the \
               frontend's own test)",
        expect: "every frame arrives intact and in order",
        run: |ctx| {
            let mut d = ctx.connected()?;
            // Lengths cycling through 60..100 out and 64..114 in, a seed per frame.
            let out: Vec<Vec<u8>> = (60..100)
                .cycle()
                .zip(0u32..)
                .take(LONG_RUN)
                .map(|(len, seed)| frame(len, seed))
                .collect();
            ctx.traffic_out(&mut d, &out)?;
            let inn: Vec<Vec<u8>> = (64..114)
                .cycle()
                .zip(9000u32..)
                .take(LONG_RUN)
                .map(|(len, seed)| frame(len, seed))
                .collect();
            ctx.traffic_in(&mut d, &inn)?;
            Ok(format!("{LONG_RUN} frames each way across the slot wrap"))
        },
    },
    Case {
        name: "net.event_garbage (row 5, R6)",
        peer: "writes 0 (behind), 0x40000000 (far ahead), 0xdeadbeef and 0xffffffff into \
               req_event and rsp_event of both rings at every turn",
        expect: "frames still flow both ways (at most extra or missing notifications)",
        run: |ctx| {
            let mut d = ctx.connected()?;
            // (garbage, first seed of the frames sent under it)
            for (g, seed) in [(0, 0), (0x4000_0000, 10), (0xdead_beef, 20), (u32::MAX, 30)] {
                ctx.be(|b| b.hooks.event_garbage = Some(g));
                ctx.traffic(&mut d, 3, seed)
                    .map_err(|e| format!("with {g:#x}: {e}"))?;
            }
            Ok("3 frames each way under each of 4 garbage values".into())
        },
    },
    Case {
        name: "net.tx_id_out_of_range (row 17, N1)",
        peer: "answers a frame with id 0x8000 | id (beyond any ring)",
        expect: "the device fails",
        run: |ctx| {
            let mut d = ctx.connected()?;
            tx_hook(ctx, |_, r| {
                vec![TxResponse {
                    id: r.id | 0x8000,
                    status: r.status,
                }]
            });
            ctx.send(&mut d, &frame(60, 1))?;
            ctx.settle(2);
            ctx.failed(&mut d)
        },
    },
    Case {
        name: "net.tx_id_not_in_flight (row 17, N1)",
        peer: "answers the only frame in flight with id ^ 1 (an id not in flight)",
        expect: "the device fails",
        run: |ctx| {
            let mut d = ctx.connected()?;
            tx_hook(ctx, |_, r| {
                vec![TxResponse {
                    id: r.id ^ 1,
                    status: r.status,
                }]
            });
            ctx.send(&mut d, &frame(60, 1))?;
            ctx.settle(2);
            ctx.failed(&mut d)
        },
    },
    Case {
        name: "net.tx_id_twice (N2)",
        peer: "of two frames, answers the first twice and the second never",
        expect: "the device fails on the second answer",
        run: |ctx| {
            let mut d = ctx.connected()?;
            tx_hook(ctx, |n, r| match n {
                0 => vec![r, r],
                _ => vec![],
            });
            ctx.send(&mut d, &frame(60, 1))?;
            ctx.send(&mut d, &frame(60, 2))?;
            ctx.settle(2);
            ctx.failed(&mut d)
        },
    },
    Case {
        name: "net.tx_status_kinds (N3)",
        peer: "answers frames DROPPED, ERROR, OKAY, then 7 and -32768 (unknown statuses)",
        expect: "DROPPED and ERROR are counted, not fatal, their grants ended; unknown \
                 statuses either fail the device or are counted, then a frame gets through",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let st = [
                netif::RSP_DROPPED,
                netif::RSP_ERROR,
                netif::RSP_OKAY,
                7,
                i16::MIN,
            ];
            tx_hook(ctx, move |n, r| {
                vec![TxResponse {
                    id: r.id,
                    status: st.get(n).copied().unwrap_or(netif::RSP_OKAY),
                }]
            });
            for i in 0..3 {
                ctx.send(&mut d, &frame(60, i))?;
            }
            ctx.settle(2);
            if let Some(why) = d.probe().failed {
                return Err(format!("DROPPED/ERROR failed the device: {why}"));
            }
            let live = ctx.live();
            let frames = ctx.be(|b| b.tx_frames.clone());
            for f in &frames {
                for (r, g) in f.grefs.iter().zip(&f.pages) {
                    if live.contains(&(*r, *g)) {
                        return Err(format!("grant {} of an answered frame not ended", r.0));
                    }
                }
            }
            ctx.send(&mut d, &frame(60, 3))?;
            ctx.send(&mut d, &frame(60, 4))?;
            ctx.settle(2);
            if let Some(why) = d.probe().failed {
                return Ok(format!(
                    "DROPPED/ERROR counted; unknown status failed the device: {why}"
                ));
            }
            ctx.traffic_out(&mut d, &[frame(70, 5)])?;
            Ok(
                "DROPPED/ERROR counted, grants ended; unknown statuses counted; \
                the next frame went through"
                    .into(),
            )
        },
    },
    Case {
        name: "net.tx_never_answered (row 14 for net, E3)",
        peer: "never takes a tx request off the ring",
        expect: "sends fail (no room) in bounded time, no hang; close ends every grant",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.be(|b| b.hooks.tx = TxMode::Ignore);
            let mut sent = 0;
            let mut err = None;
            // More than every tx ring of the most queues the backend offers
            // holds: 5 rings of 256 slots (a literal: see the assertions at the
            // top of the file).
            let tries = 1280;
            for i in 0..tries {
                match d.send(&frame(60, i as u32)) {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
                // A turn of the backend after each (it takes nothing).
                ctx.settle(1);
            }
            let Some(e) = err else {
                return Err(format!("{sent} sends accepted with nothing answered"));
            };
            let before = ctx.host.waits();
            let closed = d.close();
            let waits = ctx.host.waits() - before;
            let left = ctx.leaks(&[]);
            if !left.is_empty() {
                return Err(format!("{} grants left after close", left.len()));
            }
            Ok(format!(
                "{sent} frames queued, then: {e}; close after {waits} waits ({:?}), no grant left",
                closed.err()
            ))
        },
    },
    Case {
        name: "net.notify_fails (E4)",
        peer: "EVTCHNOP_send starts failing with ENOENT (the backend's end is gone)",
        expect: "the error surfaces: a send fails or the device fails",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.host.fail_sends(Some(hypercall::abi::errno::ENOENT));
            for i in 0..8 {
                if let Err(e) = d.send(&frame(60, i)) {
                    return Ok(format!("send {i} failed: {e}"));
                }
                ctx.settle(1);
                if let Some(why) = d.probe().failed {
                    return Ok(format!("device failed after {} sends: {why}", i + 1));
                }
            }
            Err("8 frames sent, no notification could be delivered, no error".into())
        },
    },
    Case {
        name: "net.rx_past_page (row 18, N4)",
        peer: "answers an rx buffer with offset 4000 and status 200 (past the page)",
        expect: "that frame is dropped (counted); the next good frame arrives",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let got = ctx.push_slots(&mut d, vec![bad_data(4000, 200)])?;
            dropped_then_good(ctx, &mut d, got, "offset 4000 + 200")
        },
    },
    Case {
        name: "net.rx_negative_status (row 18, N4)",
        peer: "answers rx buffers with status -1, -2, -100 and -32768 at offset 100",
        expect: "each dropped (counted); the next good frame arrives",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let slots = [netif::RSP_ERROR, netif::RSP_DROPPED, -100, i16::MIN]
                .into_iter()
                .map(|s| bad_data(100, s))
                .collect();
            let got = ctx.push_slots(&mut d, slots)?;
            dropped_then_good(ctx, &mut d, got, "4 negative statuses")
        },
    },
    Case {
        name: "net.rx_bad_run_fails (row 18)",
        peer: "answers every rx buffer with status -1, two rings' worth",
        expect: "the device fails before the run ends",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let got = ctx.push_slots(
                &mut d,
                (0..BAD_RUN)
                    .map(|_| bad_data(0, netif::RSP_ERROR))
                    .collect(),
            )?;
            if !got.is_empty() {
                return Err(format!("{} frame(s) handed out", got.len()));
            }
            let pushed = ctx.be(|b| b.queues().first().map_or(0, |q| q.rx.rsp_prod_pvt()));
            ctx.failed(&mut d)
                .map(|e| format!("{e} (rx index {pushed})"))
        },
    },
    Case {
        name: "net.rx_endless_chain (row 19, N5)",
        peer: "answers rx buffers with more_data set, two rings' worth, then ends the \
               chain and sends a good frame",
        expect: "nothing of the chain handed out, no overflow; the good frame arrives or \
                 the device failed",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let chunk = frame(60, 5);
            let mut slots: Vec<RxSlot> = (0..BAD_RUN).map(|_| RxSlot::data(&chunk, true)).collect();
            slots.push(RxSlot::data(&chunk, false));
            let got = ctx.push_slots(&mut d, slots)?;
            if let Some(f) = got.first() {
                return Err(format!("a {}-byte frame of the chain handed out", f.len()));
            }
            if let Some(why) = d.probe().failed {
                return Ok(format!("chain dropped; device failed: {why}"));
            }
            ctx.traffic_in(&mut d, &[frame(300, 6)])?;
            Ok("chain dropped, the next frame arrived".into())
        },
    },
    Case {
        name: "net.rx_oversize_chain (row 19, N8)",
        peer: "sends a 17-slot chain of full pages: 69632 bytes, over 65535",
        expect: "dropped; the next good frame arrives",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let page = frame(PAGE_SIZE, 8);
            let slots = (0..17).map(|i| RxSlot::data(&page, i < 16)).collect();
            let got = ctx.push_slots(&mut d, slots)?;
            dropped_then_good(ctx, &mut d, got, "69632-byte chain")
        },
    },
    Case {
        name: "net.rx_too_many_slots (row 19, N5)",
        peer: "sends a 20-slot chain of 100-byte slots (over XEN_NETIF_NR_SLOTS_MIN + 1)",
        expect: "dropped; the next good frame arrives",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let s = frame(100, 9);
            let slots = (0..20).map(|i| RxSlot::data(&s, i < 19)).collect();
            let got = ctx.push_slots(&mut d, slots)?;
            dropped_then_good(ctx, &mut d, got, "20 slots")
        },
    },
    Case {
        name: "net.rx_extra_slot_rule (review)",
        peer: "sends 19-slot chains (NR_SLOTS_MIN + 1): one whose first slot holds 200 \
               bytes, one whose first slot holds 1000",
        expect: "the first arrives intact (the extra slot is allowed after a first slot of \
                 at most 256 bytes), the second is dropped",
        run: |ctx| {
            let mut d = ctx.connected()?;
            // Within the default MTU (1500): the slot count is what is tested.
            let whole = frame(200 + 18 * 70, 10);
            let mut slots = vec![RxSlot::data(&whole[..200], true)];
            for (i, c) in whole[200..].chunks(70).enumerate() {
                slots.push(RxSlot::data(c, i < 17));
            }
            let got = ctx.push_slots(&mut d, slots)?;
            match got.as_slice() {
                [f] if *f == whole => {}
                [f] => return Err(format!("small-head chain: {}", first_diff(f, &whole))),
                g => {
                    return Err(format!(
                        "small-head 19-slot chain: {} frames handed out",
                        g.len()
                    ))
                }
            }
            let big = frame(1000 + 18 * 25, 11);
            let mut slots = vec![RxSlot::data(&big[..1000], true)];
            for (i, c) in big[1000..].chunks(25).enumerate() {
                slots.push(RxSlot::data(c, i < 17));
            }
            let got = ctx.push_slots(&mut d, slots)?;
            dropped_then_good(ctx, &mut d, got, "19 slots after a 1000-byte first slot")
                .map(|e| format!("19 slots after 200 bytes accepted; {e}"))
        },
    },
    Case {
        name: "net.rx_bad_extra (row 20, N6)",
        peer: "sends frames whose extra-info slot has type 0, type 9, GSO size 0, GSO type 7",
        expect: "each dropped; the next good frame arrives",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let head = frame(60, 12);
            let bad = [
                ExtraInfo {
                    ty: 0,
                    flags: 0,
                    u: [0; 6],
                },
                ExtraInfo {
                    ty: 9,
                    flags: 0,
                    u: [0; 6],
                },
                ExtraInfo::gso(0, netif::GSO_TYPE_TCPV4, 0, 0),
                ExtraInfo::gso(1400, 7, 0, 0),
            ];
            let mut slots = Vec::new();
            for x in bad {
                slots.push(RxSlot::Data {
                    id: None,
                    offset: 0,
                    flags: netif::NETRXF_EXTRA_INFO,
                    status: head.len() as i16,
                    bytes: head.clone(),
                });
                slots.push(RxSlot::Extra(x));
            }
            let got = ctx.push_slots(&mut d, slots)?;
            dropped_then_good(ctx, &mut d, got, "4 bad extra-info slots")
        },
    },
    Case {
        name: "net.rx_chain_split (N5)",
        peer: "publishes two slots of a three-slot frame, later the third",
        expect: "nothing handed out until the frame is complete, then it arrives whole",
        run: |ctx| {
            let mut d = ctx.connected()?;
            // Within the default MTU (1500): three slots of 500, 500 and 400 bytes.
            let whole = frame(1400, 13);
            let parts: Vec<&[u8]> = whole.chunks(500).collect();
            let got = ctx.push_slots(
                &mut d,
                vec![RxSlot::data(parts[0], true), RxSlot::data(parts[1], true)],
            )?;
            if !got.is_empty() {
                return Err(format!(
                    "{} frame(s) handed out from half a chain",
                    got.len()
                ));
            }
            let got = ctx.push_slots(&mut d, vec![RxSlot::data(parts[2], false)])?;
            match got.as_slice() {
                [f] if *f == whole => Ok(format!("{}-byte frame whole once complete", f.len())),
                [f] => Err(first_diff(f, &whole)),
                g => Err(format!("{} frames handed out", g.len())),
            }
        },
    },
    Case {
        name: "net.rx_over_mtu (N8)",
        peer: "offers mtu 1500; sends a 1518-byte frame (the limit with a VLAN tag), then \
               without GSO a 1519-byte frame and a 9000-byte one in three slots",
        expect: "the 1518-byte frame arrives; the two longer ones are dropped; the next good \
                 frame arrives",
        run: |ctx| {
            ctx.reset();
            ctx.be(|b| b.set_key("mtu", b"1500"));
            let mut d = ctx.driver()?;
            d.connect().map_err(|e| format!("connect failed: {e}"))?;
            ctx.settle(2);
            let limit = frame(1518, 14);
            let got = ctx.push_slots(&mut d, vec![RxSlot::data(&limit, false)])?;
            match got.as_slice() {
                [f] if *f == limit => {}
                [f] => return Err(format!("the 1518-byte frame: {}", first_diff(f, &limit))),
                g => {
                    return Err(format!(
                        "the 1518-byte frame: {} frames handed out",
                        g.len()
                    ))
                }
            }
            let over = frame(1519, 15);
            let jumbo = frame(9000, 16);
            let mut slots = vec![RxSlot::data(&over, false)];
            let parts: Vec<&[u8]> = jumbo.chunks(PAGE_SIZE).collect();
            for (i, c) in parts.iter().enumerate() {
                slots.push(RxSlot::data(c, i + 1 < parts.len()));
            }
            let got = ctx.push_slots(&mut d, slots)?;
            dropped_then_good(ctx, &mut d, got, "1519 and 9000 bytes at mtu 1500")
                .map(|e| format!("1518 bytes arrived; {e}"))
        },
    },
    Case {
        name: "net.rx_id_garbage (N7)",
        peer: "answers three buffers correctly but with id 0xbeef in every response",
        expect: "the frames arrive intact: the driver goes by its own ring index",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let frames: Vec<Vec<u8>> = (100..)
                .step_by(10)
                .zip(20u32..)
                .take(3)
                .map(|(len, seed)| frame(len, seed))
                .collect();
            let slots = frames
                .iter()
                .map(|f| RxSlot::Data {
                    id: Some(0xbeef),
                    offset: 0,
                    flags: 0,
                    status: f.len() as i16,
                    bytes: f.clone(),
                })
                .collect();
            let got = ctx.push_slots(&mut d, slots)?;
            if got == frames {
                Ok("3 frames intact".into())
            } else {
                Err(format!(
                    "{} frames handed out, expected 3 intact",
                    got.len()
                ))
            }
        },
    },
    Case {
        name: "net.rx_buffers_hoarded (row 21)",
        peer: "takes every rx buffer and never gives one back",
        expect: "no hang; tx still works for more than two rings' worth of frames",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let out: Vec<Vec<u8>> = (0..LONG_RUN).map(|i| frame(60, i as u32)).collect();
            ctx.traffic_out(&mut d, &out)?;
            let held = ctx.be(|b| b.rx_buffers(0));
            match d.probe().failed {
                Some(why) => Err(format!("device failed: {why}")),
                None => Ok(format!(
                    "{LONG_RUN} frames sent while the backend holds {held} rx buffers"
                )),
            }
        },
    },
    Case {
        name: "net.rings_kept_mapped_at_close (row 26, G1)",
        peer: "keeps both ring pages and every rx buffer mapped when the frontend closes",
        expect: "close ends the rest and returns; the kept pages stay granted, are never \
                 granted again nor written, also across a reconnect (after which frames \
                 go out; rx may stay starved: every rx page is held)",
        run: |ctx| {
            ctx.be(|b| {
                b.hooks.keep_rings_mapped = true;
                b.hooks.keep_rx_mapped = true;
            });
            let mut d = ctx.connected()?;
            ctx.traffic_out(&mut d, &[frame(60, 1), frame(600, 2)])?;
            let kept = ctx.be(|b| b.mapped());
            d.close().map_err(|e| format!("close: {e}"))?;
            let left = ctx.leaks(&kept);
            if !left.is_empty() {
                return Err(format!("{} grants left besides the kept ones", left.len()));
            }
            let snap = kept_pages(ctx, &kept);
            ctx.be(|b| b.hooks.keep_rx_mapped = false);
            d.connect().map_err(|e| format!("reconnect: {e}"))?;
            ctx.settle(2);
            let out: Vec<Vec<u8>> = (30..35).map(|seed| frame(90, seed)).collect();
            ctx.traffic_out(&mut d, &out)
                .map_err(|e| format!("after reconnect: {e}"))?;
            let ev = kept_untouched(ctx, &kept, &snap)?;
            Ok(format!("close returned; {ev} across a reconnect"))
        },
    },
    Case {
        name: "net.tx_kept_mapped_at_close (row 26, G1)",
        peer: "takes three tx frames, never answers them and keeps their pages mapped",
        expect: "close returns; those pages stay granted, are never granted again nor \
                 written, also across a reconnect",
        run: |ctx| {
            ctx.be(|b| {
                b.hooks.tx = TxMode::Hold;
                b.hooks.keep_tx_mapped = true;
            });
            let mut d = ctx.connected()?;
            let rings = ring_frames(ctx);
            for (len, seed) in (60..63).zip(0u32..) {
                ctx.send(&mut d, &frame(len, seed))?;
            }
            ctx.settle(2);
            let kept: Vec<(GrantRef, Gfn)> = ctx
                .be(|b| b.mapped())
                .into_iter()
                .filter(|g| !rings.contains(g))
                .collect();
            if kept.len() != 3 {
                return Err(format!("the backend holds {} tx pages, not 3", kept.len()));
            }
            d.close().map_err(|e| format!("close: {e}"))?;
            let left = ctx.leaks(&kept);
            if !left.is_empty() {
                return Err(format!("{} grants left besides the kept ones", left.len()));
            }
            let snap = kept_pages(ctx, &kept);
            ctx.be(|b| {
                b.hooks.tx = TxMode::Answer;
                b.hooks.keep_tx_mapped = false;
            });
            d.connect().map_err(|e| format!("reconnect: {e}"))?;
            ctx.settle(2);
            let out: Vec<Vec<u8>> = (50..70).map(|seed| frame(100, seed)).collect();
            ctx.traffic_out(&mut d, &out)
                .map_err(|e| format!("after reconnect: {e}"))?;
            let used: BTreeSet<u64> = ctx.be(|b| b.tx_pages.iter().map(|g| g.0).collect());
            if let Some(g) = kept.iter().find(|g| {
                used.contains(&g.1 .0)
                    && ctx.be(|b| b.tx_pages.iter().filter(|p| **p == g.1).count()) > 1
            }) {
                return Err(format!("kept tx page {:#x} used again", g.1 .0));
            }
            kept_untouched(ctx, &kept, &snap).map(|e| format!("close returned; {e}"))
        },
    },
    Case {
        name: "net.rx_answered_while_mapped (N10, G2)",
        peer: "answers an rx buffer while still mapping it (then behaves)",
        expect: "the device fails, or the page is quarantined: never posted again, still \
                 granted; no panic",
        run: |ctx| {
            ctx.be(|b| b.hooks.keep_rx_mapped = true);
            let mut d = ctx.connected()?;
            let got = ctx.push_slots(&mut d, vec![RxSlot::data(&frame(100, 1), false)])?;
            let kept = ctx.be(|b| {
                b.hooks.keep_rx_mapped = false;
                b.mapped()
            });
            let (posted_before, first) =
                ctx.be(|b| (b.rx_posted.len(), b.rx_posted.first().copied()));
            let Some(page) = first else {
                return Err("no rx buffer was posted".into());
            };
            // Then it behaves: the other buffers it took while keeping them
            // mapped are unmapped (a driver with few buffers that sets aside
            // every page answered while mapped would starve otherwise).
            ctx.be(|b| {
                let buffers: Vec<(GrantRef, Gfn)> = kept
                    .iter()
                    .copied()
                    .filter(|g| b.rx_posted.contains(&g.1))
                    .collect();
                for (r, g) in buffers {
                    if g != page {
                        b.unmap(r);
                    }
                }
            });
            if let Some(why) = d.probe().failed {
                return Ok(format!("device failed: {why}"));
            }
            let _ = got;
            ctx.traffic_in(&mut d, &(0..10).map(|i| frame(80, i)).collect::<Vec<_>>())?;
            let again = ctx.be(|b| b.rx_posted[posted_before..].contains(&page));
            if again {
                return Err(format!(
                    "frame {:#x} posted again while the backend maps it",
                    page.0
                ));
            }
            let live = ctx.live();
            match kept.iter().find(|g| g.1 == page) {
                Some(g) if live.contains(g) => Ok("page quarantined, device working".into()),
                _ => Err("the mapped buffer's grant vanished".into()),
            }
        },
    },
    Case {
        name: "net.tx_completed_while_mapped (G2)",
        peer: "answers a tx frame while still mapping its page (then behaves)",
        expect: "the device fails, or the page is never used again; no panic",
        run: |ctx| {
            ctx.be(|b| b.hooks.keep_tx_mapped = true);
            let mut d = ctx.connected()?;
            ctx.send(&mut d, &frame(60, 1))?;
            ctx.settle(2);
            let page = ctx.be(|b| {
                b.hooks.keep_tx_mapped = false;
                b.tx_pages.first().copied()
            });
            let Some(page) = page else {
                return Err("the backend saw no tx page".into());
            };
            if let Some(why) = d.probe().failed {
                return Ok(format!("device failed: {why}"));
            }
            let out: Vec<Vec<u8>> = (10..30).map(|seed| frame(64, seed)).collect();
            ctx.traffic_out(&mut d, &out)?;
            let n = ctx.be(|b| b.tx_pages.iter().filter(|p| **p == page).count());
            if n > 1 {
                Err(format!(
                    "tx page {:#x} used again while the backend maps it",
                    page.0
                ))
            } else {
                Ok("page quarantined, device working".into())
            }
        },
    },
    Case {
        name: "net.mac_malformed (row 22, N9)",
        peer: "the guest's mac is missing, empty, 5 or 7 bytes, has a bad digit, another \
               layout, a trailing newline, 200 characters or bytes not UTF-8",
        expect: "each connect is refused with an error",
        run: |ctx| {
            let long = "0".repeat(200);
            macs_refused(
                ctx,
                &[
                    None,
                    Some(b""),
                    Some(b"00:16:3e:00:00"),
                    Some(b"00:16:3e:00:00:01:02"),
                    Some(b"00:16:3e:zz:00:01"),
                    Some(b"0016.3e00.0001"),
                    Some(b"00:16:3e:00:00:01\n"),
                    Some(long.as_bytes()),
                    Some(b"\xff\xfe\xfd"),
                ],
            )
        },
    },
    Case {
        name: "net.mac_not_unicast (review)",
        peer: "the guest's mac is broadcast, IPv4 or IPv6 multicast, or all zero",
        expect: "each connect is refused: the device needs a unicast address",
        run: |ctx| {
            macs_refused(
                ctx,
                &[
                    Some(b"ff:ff:ff:ff:ff:ff"),
                    Some(b"01:00:5e:00:00:fb"),
                    Some(b"33:33:00:00:00:01"),
                    Some(b"00:00:00:00:00:00"),
                ],
            )
        },
    },
    Case {
        name: "net.max_queues_absurd (row 23, N9)",
        peer: "offers multi-queue-max-queues 0, 1000000, 4294967295, 2^64, -1 or \"two\"",
        expect: "connects with a sane number of queues (at most the offer and 64; 1 when \
                 the offer is unusable) and frames flow",
        run: |ctx| {
            let mut ev = Vec::new();
            for v in [
                "0",
                "1000000",
                "4294967295",
                "18446744073709551616",
                "-1",
                "two",
            ] {
                let mut d = connect_with(ctx, "multi-queue-max-queues", v.as_bytes())
                    .map_err(|e| format!("{v}: connect failed: {e}"))?;
                ctx.settle(2);
                let n = ctx.be(|b| b.device().frontend_u64("multi-queue-num-queues"));
                let offer: Option<u64> = v.parse().ok();
                let cap = offer.map_or(1, |o| o.clamp(1, 64));
                // (0 queues, or more than offered, the backend refuses: the
                // connect fails first.)
                if n.is_some_and(|n| n > cap) {
                    return Err(format!("{v}: frontend asked for {n:?} queues"));
                }
                ctx.traffic(&mut d, 2, 40)
                    .map_err(|e| format!("{v}: {e}"))?;
                ev.push(format!("{v} -> {}", n.unwrap_or(1)));
            }
            Ok(format!("queues {}", ev.join(", ")))
        },
    },
    Case {
        name: "net.multi_queue_traffic (row 23)",
        peer: "offers multi-queue-max-queues 4; delivers 3 frames on every queue the \
               frontend set up, and takes 64 frames (16 flows per queue it offers) on any queue",
        expect: "every frame arrives intact both ways, in order within each queue (a \
                 single-queue driver passes with its one queue)",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let asked = ctx.be(|b| b.device().frontend_u64("multi-queue-num-queues"));
            let n = ctx.be(|b| b.queues().len());
            // (A driver connected without a queue fails the tx part below.)
            if asked.is_some_and(|a| a as usize != n) {
                return Err(format!(
                    "asked for {asked:?} queues, the backend connected {n}"
                ));
            }
            // Rx: three frames on every queue, each of its own length and seed.
            let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
            let shapes = (100usize..).step_by(67).zip(50u32..);
            for (q, (len, seed)) in (0..n).flat_map(|q| [q; 3]).zip(shapes) {
                let f = frame(len, seed);
                ctx.be(|b| b.deliver(q, &f));
                sent.push((q, f));
            }
            let got = ctx.recv(&mut d, sent.len())?;
            if got.len() != sent.len() {
                return Err(format!(
                    "the driver handed out {} of {} frames ({} still queued at the backend, \
                     on {n} queues)",
                    got.len(),
                    sent.len(),
                    ctx.be(|b| b.undelivered())
                ));
            }
            for q in 0..n {
                let want: Vec<&Vec<u8>> = sent
                    .iter()
                    .filter(|(k, _)| *k == q)
                    .map(|(_, f)| f)
                    .collect();
                let seen: Vec<&Vec<u8>> = got.iter().filter(|g| want.contains(g)).collect();
                if seen != want {
                    return Err(format!(
                        "queue {q}: {} of its 3 frames handed out, or out of order",
                        seen.len()
                    ));
                }
            }
            // Tx: 64 flows, 16 for each of the most queues the backend offers
            // (the driver picks the queue).
            let before = ctx.be(|b| b.tx_frames.len());
            let out: Vec<Vec<u8>> = (60..1460)
                .step_by(37)
                .cycle()
                .zip(300u32..)
                .take(64)
                .map(|(len, seed)| frame(len, seed))
                .collect();
            ctx.traffic_out(&mut d, &out)?;
            let per_queue: Vec<usize> = ctx.be(|b| {
                (0..n)
                    .map(|q| {
                        b.tx_frames[before..]
                            .iter()
                            .filter(|f| f.queue == q)
                            .count()
                    })
                    .collect()
            });
            Ok(format!(
                "{n} queue(s): 3 rx frames on each arrived; {} tx frames arrived, per queue \
                 {per_queue:?}",
                out.len()
            ))
        },
    },
    Case {
        name: "net.spurious_events (E1, row 25)",
        peer: "raises 10 000 events (500 under Miri) on the frontend's event channels with \
               nothing on the rings, and 100 on a port it never bound, each handed to the \
               driver's upcall",
        expect: "each upcall is harmless: no frame handed out, the device not failed, at \
                 most one notification back per 100 events; then frames flow both ways",
        run: |ctx| {
            let mut d = ctx.connected()?;
            let mut ports: Vec<u32> = ctx.be(|b| {
                b.queues()
                    .iter()
                    .flat_map(|q| [q.ports.0, q.ports.1])
                    .collect()
            });
            ports.sort_unstable();
            ports.dedup();
            let ports: Vec<hypercall::Port> = ports.into_iter().map(hypercall::Port).collect();
            let storm: usize = if cfg!(miri) { 500 } else { 10_000 };
            // The turns of the stray events: one every 100.
            let strays: BTreeSet<usize> = (0..storm).step_by(100).collect();
            let sends = ctx.host.sends();
            let mut buf = vec![0u8; 65536];
            for i in 0..storm {
                ctx.host.raise(ports[i % ports.len()]);
                if strays.contains(&i) {
                    ctx.host.raise(hypercall::Port(0x7fff));
                }
                for p in ctx.host.take_pending() {
                    d.event(p)
                        .map_err(|e| format!("upcall {i} on port {}: {e}", p.0))?;
                }
                if let Some(n) = d.recv(&mut buf)? {
                    return Err(format!("a {n}-byte frame handed out after event {i}"));
                }
            }
            let back = ctx.host.sends() - sends;
            if let Some(why) = d.probe().failed {
                return Err(format!("the device failed: {why}"));
            }
            if back > (storm / 100) as u64 {
                return Err(format!(
                    "{back} notifications back for {storm} spurious events"
                ));
            }
            ctx.traffic(&mut d, 3, 60)
                .map_err(|e| format!("after the events: {e}"))?;
            Ok(format!(
                "{storm} events on {} port(s) and {} on a port never bound: nothing handed \
                 out, {back} notifications back; then 3 frames each way",
                ports.len(),
                strays.len()
            ))
        },
    },
    Case {
        name: "net.feature_values_odd (N9)",
        peer: "offers feature-sg \"yes\", feature-gso-tcpv4 \"\", \
               feature-split-event-channels \"2\", feature-ipv6-csum-offload \"-1\"",
        expect: "connects and frames flow (odd values read as off, or on, never a failure)",
        run: |ctx| {
            for (k, v) in [
                ("feature-sg", "yes"),
                ("feature-gso-tcpv4", ""),
                ("feature-split-event-channels", "2"),
                ("feature-ipv6-csum-offload", "-1"),
            ] {
                ctx.be(|b| b.set_key(k, v.as_bytes()));
            }
            let mut d = ctx.connected()?;
            ctx.traffic(&mut d, 3, 50)?;
            Ok("connected, 3 frames each way".into())
        },
    },
    Case {
        name: "net.no_rx_copy (N9)",
        peer: "does not offer feature-rx-copy (absent, then \"0\")",
        expect: "each connect is refused (copying receive is the only receive path)",
        run: |ctx| {
            let mut ev = Vec::new();
            for v in [None, Some("0")] {
                ctx.reset();
                ctx.be(|b| match v {
                    Some(v) => b.set_key("feature-rx-copy", v.as_bytes()),
                    None => b.remove_key("feature-rx-copy"),
                });
                let mut d = ctx.driver()?;
                match d.connect() {
                    Ok(()) => return Err(format!("feature-rx-copy {v:?}: connected")),
                    Err(e) => ev.push(e),
                }
            }
            Ok(format!("refused: {}", ev.join("; ")))
        },
    },
    Case {
        name: "net.mtu_out_of_range (review)",
        peer: "offers mtu 0, then 70000",
        expect: "connects, does not use it, and reports it (a line naming the mtu and the \
                 value); a 1514-byte frame still goes out",
        run: |ctx| {
            let mut ev = Vec::new();
            for v in ["0", "70000"] {
                let mut d = connect_with(ctx, "mtu", v.as_bytes())
                    .map_err(|e| format!("mtu {v}: connect failed: {e}"))?;
                let p = d.probe();
                let line = p
                    .reported
                    .iter()
                    .find(|l| l.contains("mtu") && l.contains(v))
                    .cloned()
                    .ok_or_else(|| format!("mtu {v} not reported (reported: {:?})", p.reported))?;
                ctx.settle(2);
                ctx.traffic_out(&mut d, &[frame(1514, 60)])
                    .map_err(|e| format!("mtu {v}: {e}"))?;
                ev.push(line);
            }
            Ok(ev.join("; "))
        },
    },
    Case {
        name: "net.backend_closing (X12)",
        peer: "goes Closing (rings unmapped) while connected",
        expect: "the link goes down; sends fail; close returns and no grant is left",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.traffic(&mut d, 1, 70)?;
            ctx.be(|b| {
                b.set_auto_states(false);
                b.detach_queues();
                b.set_state(XenbusState::Closing);
            });
            ctx.settle(3);
            let p = d.probe();
            if !down(&p) {
                return Err("link still up after the backend went Closing".into());
            }
            // The backend has let go of the rings: a send must fail (a frame
            // written now would never be answered).
            let sent = match d.send(&frame(60, 1)) {
                Ok(()) => return Err("a send succeeded after the backend went Closing".into()),
                Err(e) => e,
            };
            ctx.be(|b| b.set_state(XenbusState::Closed));
            let _ = d.close();
            let left = ctx.leaks(&[]);
            if !left.is_empty() {
                return Err(format!("{} grants left after close", left.len()));
            }
            Ok(format!(
                "link down ({:?}); send: {sent}; no grant left",
                p.failed
            ))
        },
    },
    Case {
        name: "net.backend_dir_removed (review)",
        peer: "removes its whole directory while connected (the frontend reads EACCES)",
        expect: "the device stops: link down or failed, sends fail",
        run: |ctx| {
            let mut d = ctx.connected()?;
            ctx.traffic(&mut d, 1, 80)?;
            ctx.be(|b| {
                b.set_auto_states(false);
                b.remove_directory();
            });
            ctx.settle(3);
            let p = d.probe();
            if !down(&p) {
                return Err("device still connected with its backend gone".into());
            }
            match d.send(&frame(60, 2)) {
                Ok(()) => Err("a send succeeded with the backend gone".into()),
                Err(e) => Ok(format!(
                    "link down ({}); send: {e}",
                    p.failed.unwrap_or_else(|| "not connected".into())
                )),
            }
        },
    },
    Case {
        name: "net.backend_state_garbage (X12)",
        peer: "writes state \"banana\", then (fresh) state \"9\", instead of InitWait",
        expect: "each connect fails with an error in bounded time",
        run: |ctx| {
            let mut ev = Vec::new();
            for v in ["banana", "9"] {
                ctx.reset();
                ctx.be(|b| {
                    b.set_auto_states(false);
                    b.set_key("state", v.as_bytes());
                });
                let mut d = ctx.driver()?;
                match d.connect() {
                    Ok(()) => return Err(format!("state {v:?}: connected")),
                    Err(e) => ev.push(format!("{v}: {e}")),
                }
            }
            Ok(ev.join("; "))
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame carries its seed whole at bytes 14..18: frames whose seeds differ
    /// by a multiple of 256 (the payload pattern repeats there) still differ, so
    /// a long run notices a frame delivered twice or in another's place.
    #[test]
    fn frames_carry_their_seed() {
        let f = frame(60, 0x0102_0304);
        assert_eq!(f.len(), 60);
        assert_eq!(f[14..18], [1, 2, 3, 4]);
        assert_eq!(f[..6], [0x00, 0x16, 0x3e, 0x5a, 0x00, 0x01], "to the guest");
        assert_ne!(frame(1514, 5), frame(1514, 5 + 256));
        assert_eq!(frame(10, 7).len(), 10, "shorter than the header");
    }

    /// The evidence of a corrupted frame: a length mismatch, else the first byte
    /// that differs.
    #[test]
    fn first_diff_names_the_difference() {
        assert_eq!(first_diff(&[1, 2, 3], &[1, 2]), "3 bytes instead of 2");
        assert_eq!(first_diff(&[1, 2, 3], &[1, 9, 3]), "byte 1 differs");
        assert_eq!(first_diff(&[1, 2, 3], &[1, 2, 3]), "identical");
    }
}
