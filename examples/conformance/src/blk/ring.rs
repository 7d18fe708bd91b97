//! The backend's view of one blkif ring: the frontend's ring pages (mapped grants,
//! not necessarily contiguous), read and written byte-wise across page boundaries.

use hypercall::abi::blkif::{Request, Response};
use hypercall::abi::ring as layout;
use hypercall::PAGE_SIZE;
use zerocopy::{FromZeros, IntoBytes};

use crate::HostRegion;

/// Bytes of one blkif slot (a request; a response uses the first 16).
pub const SLOT: usize = core::mem::size_of::<Request>();

/// Slots in a ring of `pages` pages (`__CONST_RING_SIZE(blkif, pages * 4096)`): the
/// largest power of two that fits after the header.
pub fn slots(pages: usize) -> u32 {
    let fit = (pages * PAGE_SIZE).saturating_sub(layout::HEADER_SIZE) / SLOT;
    if fit == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }
}

/// The ring pages of one queue, as the backend maps them.
#[derive(Clone, Debug)]
pub struct RingPages {
    pages: Vec<HostRegion>,
}

impl RingPages {
    /// The ring over `pages` (in `ring-refN` order).
    pub fn new(pages: Vec<HostRegion>) -> Self {
        RingPages { pages }
    }

    /// Slots in the ring.
    pub fn size(&self) -> u32 {
        slots(self.pages.len())
    }

    /// Copies `buf.len()` bytes at ring offset `off` (across pages) into `buf`.
    /// Bytes past the ring read as zero.
    pub fn read(&self, mut off: usize, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let (page, at) = (off / PAGE_SIZE, off % PAGE_SIZE);
            let n = (PAGE_SIZE - at).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match self.pages.get(page) {
                Some(p) => p.mem().read(at, dst),
                None => dst.fill(0),
            }
            done += n;
            off += n;
        }
    }

    /// Writes `buf` at ring offset `off` (across pages); bytes past the ring are
    /// dropped.
    pub fn write(&self, mut off: usize, buf: &[u8]) {
        let mut done = 0;
        while done < buf.len() {
            let (page, at) = (off / PAGE_SIZE, off % PAGE_SIZE);
            let n = (PAGE_SIZE - at).min(buf.len() - done);
            if let Some(p) = self.pages.get(page) {
                p.mem().write(at, &buf[done..done + n]);
            }
            done += n;
            off += n;
        }
    }

    /// A header index (`layout::REQ_PROD`, ...), read atomically.
    pub fn index(&self, which: usize) -> u32 {
        self.pages.first().map_or(0, |p| p.mem().load_u32(which))
    }

    /// Sets a header index (the backend's own, or any other, as a hostile peer may).
    pub fn set_index(&self, which: usize, value: u32) {
        if let Some(p) = self.pages.first() {
            p.mem().store_u32(which, value);
        }
    }

    /// The request in slot `idx` (masked), copied once.
    pub fn request(&self, idx: u32) -> Request {
        let mut r = Request::new_zeroed();
        self.read(self.slot_off(idx), r.as_mut_bytes());
        r
    }

    /// Writes `rsp` into slot `idx` (masked), nothing else.
    pub fn write_response(&self, idx: u32, rsp: &Response) {
        self.write(self.slot_off(idx), rsp.as_bytes());
    }

    fn slot_off(&self, idx: u32) -> usize {
        let mask = self.size().saturating_sub(1);
        layout::HEADER_SIZE + (idx & mask) as usize * SLOT
    }

    /// The 48 bytes of `pvt` + `__pad` in the header.
    pub fn header_padding(&self) -> [u8; layout::PAD_LEN] {
        let mut pad = [0u8; layout::PAD_LEN];
        self.read(layout::PVT, &mut pad);
        pad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_counts_match_ring_h() {
        assert_eq!(
            (slots(1), slots(2), slots(4), slots(16), slots(0)),
            (32, 64, 128, 512, 0)
        );
    }

    #[test]
    fn reads_and_writes_cross_page_boundaries() {
        let h = crate::HostPlatform::new();
        // Two separate allocations: not contiguous in host memory.
        let r = RingPages::new(vec![h.pages(1), h.pages(1)]);
        let data: Vec<u8> = (0..200u8).collect();
        r.write(PAGE_SIZE - 100, &data);
        let mut back = vec![0u8; 200];
        r.read(PAGE_SIZE - 100, &mut back);
        assert_eq!(back, data);
        let mut tail = [1u8; 8];
        r.read(PAGE_SIZE + 96, &mut tail);
        assert_eq!(tail, [196, 197, 198, 199, 0, 0, 0, 0]);
        r.write(2 * PAGE_SIZE - 2, &[9, 9, 9, 9]);
        let mut past = [1u8; 4];
        r.read(2 * PAGE_SIZE - 2, &mut past);
        assert_eq!(
            past,
            [9, 9, 0, 0],
            "bytes past the ring are dropped and read as zero"
        );
    }
}
