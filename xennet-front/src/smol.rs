//! [`smoltcp::phy::Device`] for a [`NetFront`] (cargo feature `smoltcp`).
//!
//! smoltcp lends buffers by reference, and memory the backend can write must
//! never be referenced. The adapter hands smoltcp only memory no other domain can
//! touch at that moment (the reasoning is in docs/network-copies.md):
//!
//! - **tx**: smoltcp writes a frame of up to one page straight into a free tx
//!   buffer page ([`NetFront::send_with`]), which is granted to the backend only
//!   afterwards: no copy. Larger frames (and frames when no page is free) are
//!   written into the caller's tx scratch buffer and copied to the tx pages.
//! - **rx**: a frame in one page is read where it is: its response was consumed
//!   and its grant ended, so the backend can no longer write the page, which
//!   stays out of the rx pool while smoltcp reads it and is posted again by the
//!   device's next `recv`/`poll` (the adapter's next `receive` or `transmit`). Frames over
//!   several pages, and checksum-blank ones the device completes, are copied
//!   once into the caller's rx scratch buffer.
//!
//! Checksums stay smoltcp's job (computed on send, verified on receive); received
//! checksum-blank frames are completed by the device first
//! ([`crate::Config::complete_rx_csum`]).

use core::marker::PhantomData;
use core::ptr::NonNull;

use hypercall::{Platform, PAGE_SIZE};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::device::NetFront;
use crate::features::ETH_HLEN;

/// A [`NetFront`] as a smoltcp device.
pub struct SmolDevice<'a, 'g, P: Platform, const N: usize, const Q: usize = 1> {
    dev: &'a mut NetFront<'g, P, N, Q>,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    mtu: usize,
    /// Frames smoltcp produced that could not be sent (ring full after a poll).
    pub tx_lost: u64,
}

impl<'a, 'g, P: Platform, const N: usize, const Q: usize> SmolDevice<'a, 'g, P, N, Q> {
    /// Wraps `dev`; `rx` and `tx` must each hold a whole frame (`mtu + 14` bytes,
    /// see [`NetFront::mtu`]). The Ethernet MTU reported to smoltcp is the smaller
    /// of that and the buffers.
    pub fn new(dev: &'a mut NetFront<'g, P, N, Q>, rx: &'a mut [u8], tx: &'a mut [u8]) -> Self {
        let mtu = (dev.mtu() as usize + ETH_HLEN)
            .min(dev.max_frame())
            .min(rx.len())
            .min(tx.len());
        SmolDevice {
            dev,
            rx,
            tx,
            mtu,
            tx_lost: 0,
        }
    }

    /// The wrapped device.
    pub fn device(&mut self) -> &mut NetFront<'g, P, N, Q> {
        self.dev
    }
}

/// A received frame: in the caller's rx buffer, or in place in an rx page that
/// no other domain can write any more (see the module docs).
pub struct RxToken<'a> {
    frame: RxBytes<'a>,
}

enum RxBytes<'a> {
    Copied(&'a [u8]),
    /// The frame's bytes in the device's held rx page; valid while the adapter
    /// is borrowed (`'a`): see `consume`.
    InPlace(NonNull<u8>, usize, PhantomData<&'a [u8]>),
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        match self.frame {
            RxBytes::Copied(b) => f(b),
            RxBytes::InPlace(ptr, len, _) => {
                #[allow(unsafe_code)]
                // SAFETY: `ptr..ptr+len` is the frame's part of an rx page of the device's
                // pool (allocated by it, freed only when the device is dropped,
                // which cannot happen while the adapter borrows it for `'a`). Its
                // response was consumed and its grant ended before the token was
                // made, so the backend cannot write it; the page is the device's
                // held page, out of the rx pool, until the device releases it in
                // `recv_held`, `recv`, `poll` or `release_held`, none of which can
                // run while this token lives: the adapter is borrowed for `'a`,
                // and the only other way to the device, the `TxToken`, only sends
                // (`send_with`, `send`), which never release it. So nothing writes
                // these bytes while `f` reads them.
                let frame = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) };
                f(frame)
            }
        }
    }
}

/// Room to send one frame.
pub struct TxToken<'a, 'g, P: Platform, const N: usize, const Q: usize = 1> {
    dev: &'a mut NetFront<'g, P, N, Q>,
    buf: &'a mut [u8],
    lost: &'a mut u64,
}

impl<P: Platform, const N: usize, const Q: usize> phy::TxToken for TxToken<'_, '_, P, N, Q> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // Straight into a tx page when it fits one; else through the scratch
        // buffer.
        let f = if len <= PAGE_SIZE {
            match self.dev.send_with(len, f) {
                Ok(r) => return r,
                Err((_, Ok(r))) => {
                    // Filled but not sent: the device failed meanwhile (or ran
                    // out of grants): the frame is lost, as on a dead link.
                    *self.lost += 1;
                    return r;
                }
                Err((_, Err(f))) => f,
            }
        } else {
            f
        };
        let len = len.min(self.buf.len());
        let frame = &mut self.buf[..len];
        let r = f(frame);
        if self.dev.send(frame).is_err() {
            // The token was handed out with room; a failure here means the device
            // failed meanwhile: the frame is lost, as on a dead link.
            *self.lost += 1;
        }
        r
    }
}

impl<'g, P: Platform, const N: usize, const Q: usize> Device for SmolDevice<'_, 'g, P, N, Q> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, 'g, P, N, Q>
    where
        Self: 'a;

    fn receive(&mut self, _t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let _ = self.dev.poll();
        let (meta, held) = self.dev.recv_held(self.rx).ok()??;
        let frame = match held {
            Some((ptr, len)) => RxBytes::InPlace(ptr, len, PhantomData),
            None => RxBytes::Copied(self.rx.get(..meta.len)?),
        };
        Some((
            RxToken { frame },
            TxToken {
                dev: self.dev,
                buf: self.tx,
                lost: &mut self.tx_lost,
            },
        ))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Self::TxToken<'_>> {
        self.dev.release_held();
        let queues = self.dev.negotiated().queues;
        let room = |d: &mut NetFront<'g, P, N, Q>, mtu| (0..queues).all(|q| d.can_send(q, mtu));
        if !room(self.dev, self.mtu) {
            let _ = self.dev.poll();
            if !room(self.dev, self.mtu) {
                return None;
            }
        }
        Some(TxToken {
            dev: self.dev,
            buf: self.tx,
            lost: &mut self.tx_lost,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = None;
        caps
    }
}
