//! [`smoltcp::phy::Device`] for a [`NetFront`] (cargo feature `smoltcp`).
//!
//! smoltcp lends buffers by reference, and shared pages must never be referenced,
//! so the adapter copies through two caller-provided scratch buffers (no heap): an
//! rx buffer the received frame is copied into, and a tx buffer smoltcp writes the
//! outgoing frame into before it is copied to the tx pages.
//!
//! Checksums stay smoltcp's job (computed on send, verified on receive); received
//! checksum-blank frames are completed by the device first
//! ([`crate::Config::complete_rx_csum`]).

use hypercall::Platform;
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

/// A received frame, already copied out of shared memory.
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
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
        let meta = self.dev.recv(self.rx).ok()??;
        let frame = self.rx.get(..meta.len)?;
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
