//! Shared ring layout (`io/ring.h`).
//!
//! ```text
//! offset  0  req_prod   (RING_IDX = u32)
//!         4  req_event
//!         8  rsp_prod
//!        12  rsp_event
//!        16  pvt (4 bytes: netif smartpoll_active / tapif msg / pvt_pad)
//!        20  __pad[44]
//!        64  ring[]: slots, each a union of one request and one response
//! ```
//! The number of slots is the largest power of two that fits in the ring pages
//! (`__CONST_RING_SIZE`). Indices are free-running `u32`s, masked with `size - 1`.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `sring.req_prod`
pub const REQ_PROD: usize = 0;
/// `sring.req_event`
pub const REQ_EVENT: usize = 4;
/// `sring.rsp_prod`
pub const RSP_PROD: usize = 8;
/// `sring.rsp_event`
pub const RSP_EVENT: usize = 12;
/// `sring.pvt` (4 bytes)
pub const PVT: usize = 16;
/// `sring.__pad` (44 bytes)
pub const PAD: usize = 20;
/// Bytes of padding after the four indices (`pvt` + `__pad`).
pub const PAD_LEN: usize = 48;
/// `offsetof(sring, ring)`: where the first slot starts.
pub const HEADER_SIZE: usize = 64;

/// The shared ring header (`struct __name##_sring` without `ring[]`).
///
/// No `Default`: use `zerocopy::FromZeros::new_zeroed()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SringHeader {
    /// Request producer index (frontend writes).
    pub req_prod: u32,
    /// Backend wants a notification when `req_prod` passes this.
    pub req_event: u32,
    /// Response producer index (backend writes).
    pub rsp_prod: u32,
    /// Frontend wants a notification when `rsp_prod` passes this.
    pub rsp_event: u32,
    /// `pvt` + `__pad`.
    pub pad: [u8; PAD_LEN],
}
const _: () = {
    assert!(size_of::<SringHeader>() == HEADER_SIZE);
    assert!(offset_of!(SringHeader, req_prod) == REQ_PROD);
    assert!(offset_of!(SringHeader, req_event) == REQ_EVENT);
    assert!(offset_of!(SringHeader, rsp_prod) == RSP_PROD);
    assert!(offset_of!(SringHeader, rsp_event) == RSP_EVENT);
    assert!(offset_of!(SringHeader, pad) == PVT);
    assert!(PVT + 4 == PAD && PAD + 44 == HEADER_SIZE);
};

/// `__CONST_RING_SIZE`: the number of `slot_size`-byte slots in a ring of `bytes`
/// bytes (header included): the largest power of two `n` with
/// `64 + n * slot_size <= bytes`, or 0 if not even one slot fits.
pub const fn const_ring_size(bytes: usize, slot_size: usize) -> u32 {
    if slot_size == 0 || bytes < HEADER_SIZE + slot_size {
        return 0;
    }
    let n = (bytes - HEADER_SIZE) / slot_size;
    let n = if n > u32::MAX as usize {
        u32::MAX
    } else {
        n as u32
    };
    // Round down to a power of two (`__RD32`).
    1u32 << (31 - n.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_offsets_match_ring_h() {
        assert_eq!((REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT), (0, 4, 8, 12));
        assert_eq!((PVT, PAD, PAD_LEN, HEADER_SIZE), (16, 20, 48, 64));
    }

    /// `__CONST_RING_SIZE` for the rings everyone uses, computed by hand from the
    /// header: blkif slots are 112 bytes, netif tx 12, netif rx 8.
    #[test]
    fn const_ring_size_matches_rd32() {
        assert_eq!(const_ring_size(4096, 112), 32); // 4032 / 112 = 36
        assert_eq!(const_ring_size(8192, 112), 64); // 8128 / 112 = 72
        assert_eq!(const_ring_size(16384, 112), 128); // 16320 / 112 = 145
        assert_eq!(const_ring_size(4096, 12), 256); // NET_TX_RING_SIZE
        assert_eq!(const_ring_size(4096, 8), 256); // NET_RX_RING_SIZE (504)
        assert_eq!(const_ring_size(4096, 64), 32); // 63 -> 32
        assert_eq!(const_ring_size(4096, 4032), 1);
        assert_eq!(const_ring_size(4096, 4033), 0);
        assert_eq!(const_ring_size(64, 1), 0);
        assert_eq!(const_ring_size(4096, 0), 0);
        // More slots than a u32 holds: clamped, not truncated (2^32 + 1 slots
        // would truncate to 1).
        #[cfg(target_pointer_width = "64")]
        assert_eq!(const_ring_size((1 << 32) + 65, 1), 1 << 31);
    }
}
