//! TCP/UDP checksums over Ethernet frames (IPv4 and IPv6), for checksum offload.
//!
//! A frame sent with `NETTXF_csum_blank` (or received with `NETRXF_csum_blank`) has
//! an L4 checksum that still has to be computed. [`complete`] computes it over the
//! pseudo-header and the segment, **ignoring** whatever the checksum field holds
//! (zero, or the pseudo-header sum Linux puts there), and writes it. The same code
//! serves the frontend (software fallback when the backend refuses offload, and
//! completing received frames) and shim-hv's backend.
//!
//! Only what offload needs is understood: Ethernet II with at most one 802.1Q tag,
//! IPv4 without fragmentation, IPv6 whose next header is TCP or UDP directly.
//! Anything else is [`None`]: "not a checksum this module can complete".

/// Where a frame's L4 checksum lives and what it covers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct L4 {
    /// IP protocol: 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Whether the network layer is IPv6.
    pub ipv6: bool,
    /// Frame offset of the IP header.
    pub l3: usize,
    /// Frame offset of the TCP/UDP header.
    pub start: usize,
    /// Length of the TCP/UDP header and payload (from the IP header).
    pub len: usize,
    /// Frame offset of the 16-bit checksum field.
    pub field: usize,
}

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Ethertype of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// Ethertype of an 802.1Q tag.
pub const ETH_P_VLAN: u16 = 0x8100;

/// Read access to a frame that may be split into fragments.
pub trait FrameBytes {
    /// Total length.
    fn len(&self) -> usize;
    /// Whether the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Calls `f` with the contiguous pieces covering `off..off + len` (clamped to the
    /// frame), in order.
    fn chunks(&self, off: usize, len: usize, f: &mut dyn FnMut(&[u8]));

    /// The byte at `off`.
    fn byte(&self, off: usize) -> Option<u8> {
        let mut out = None;
        self.chunks(off, 1, &mut |c| out = c.first().copied());
        out
    }

    /// The big-endian `u16` at `off`.
    fn be16(&self, off: usize) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte(off)?, self.byte(off + 1)?]))
    }
}

impl FrameBytes for [u8] {
    #[inline]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline]
    fn chunks(&self, off: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        let end = off.saturating_add(len).min(<[u8]>::len(self));
        if let Some(c) = self.get(off..end) {
            f(c)
        }
    }
}

/// A frame given as a list of fragments (the scatter-gather send path).
#[derive(Copy, Clone, Debug)]
pub struct Frags<'a>(pub &'a [&'a [u8]]);

impl FrameBytes for Frags<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.0.iter().map(|f| f.len()).sum()
    }
    #[inline]
    fn chunks(&self, off: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        let end = off.saturating_add(len);
        let mut base = 0usize;
        for frag in self.0 {
            let fend = base + frag.len();
            // The part of this fragment in `off..end`, if any (a fragment wholly
            // before `off` gives an empty or inverted range).
            let s = off.saturating_sub(base);
            let e = end.saturating_sub(base).min(frag.len());
            if let Some(c) = frag.get(s..e).filter(|c| !c.is_empty()) {
                f(c);
            }
            if fend >= end {
                break;
            }
            base = fend;
        }
    }
}

/// One's-complement sum of big-endian 16-bit words, tracking the byte parity across
/// chunk boundaries.
#[derive(Copy, Clone, Debug, Default)]
struct Sum {
    acc: u64,
    odd: bool,
}

impl Sum {
    fn add(&mut self, mut c: &[u8]) {
        if self.odd {
            if let Some((&b, rest)) = c.split_first() {
                self.acc += u64::from(b);
                c = rest;
                self.odd = false;
            }
        }
        let mut it = c.chunks_exact(8);
        for w in &mut it {
            let v = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            // Sum the four 16-bit words of `v` without overflow.
            self.acc += (v >> 48) + ((v >> 32) & 0xffff) + ((v >> 16) & 0xffff) + (v & 0xffff);
        }
        let mut rest = it.remainder();
        while let [a, b, tail @ ..] = rest {
            self.acc += u64::from(u16::from_be_bytes([*a, *b]));
            rest = tail;
        }
        if let [a] = rest {
            self.acc += u64::from(*a) << 8;
            self.odd = true;
        }
    }

    fn add_u16(&mut self, v: u16) {
        debug_assert!(!self.odd);
        self.acc += u64::from(v);
    }

    fn fold(self) -> u16 {
        let mut s = self.acc;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }
}

/// The RFC 1071 checksum of `data` (for IPv4 headers and tests).
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut s = Sum::default();
    s.add(data);
    !s.fold()
}

/// Locates the TCP/UDP checksum of an Ethernet frame; `None` if the frame is not
/// IPv4/IPv6 TCP/UDP this module understands, or is truncated.
pub fn locate<F: FrameBytes + ?Sized>(frame: &F) -> Option<L4> {
    let mut l3 = 14usize;
    let mut ty = frame.be16(12)?;
    if ty == ETH_P_VLAN {
        ty = frame.be16(16)?;
        l3 = 18;
    }
    let (proto, start, len, ipv6) = match ty {
        ETH_P_IPV4 => {
            let vihl = frame.byte(l3)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return None;
            }
            let total = usize::from(frame.be16(l3 + 2)?);
            // More-fragments set or a fragment offset: not a whole segment.
            if frame.be16(l3 + 6)? & 0x3fff != 0 {
                return None;
            }
            (
                frame.byte(l3 + 9)?,
                l3 + ihl,
                total.checked_sub(ihl)?,
                false,
            )
        }
        ETH_P_IPV6 => {
            if frame.byte(l3)? >> 4 != 6 {
                return None;
            }
            let payload = usize::from(frame.be16(l3 + 4)?);
            (frame.byte(l3 + 6)?, l3 + 40, payload, true)
        }
        _ => return None,
    };
    let field = match proto {
        PROTO_TCP if len >= 20 => start + 16,
        PROTO_UDP if len >= 8 => start + 6,
        _ => return None,
    };
    if start.checked_add(len)? > frame.len() {
        return None;
    }
    Some(L4 {
        proto,
        ipv6,
        l3,
        start,
        len,
        field,
    })
}

/// The checksum `l4` should hold (computed with the field taken as zero).
pub fn compute<F: FrameBytes + ?Sized>(frame: &F, l4: &L4) -> u16 {
    let mut s = Sum::default();
    // Pseudo-header: addresses, protocol, L4 length.
    let (src, alen) = if l4.ipv6 {
        (l4.l3 + 8, 32)
    } else {
        (l4.l3 + 12, 8)
    };
    frame.chunks(src, alen, &mut |c| s.add(c));
    s.odd = false;
    s.add_u16(u16::from(l4.proto));
    // `len` fits: IPv4 total length and IPv6 payload length are 16-bit.
    s.add_u16(l4.len as u16);
    frame.chunks(l4.start, l4.field - l4.start, &mut |c| s.add(c));
    let after = l4.field + 2;
    frame.chunks(after, l4.start + l4.len - after, &mut |c| s.add(c));
    let c = !s.fold();
    if c == 0 && l4.proto == PROTO_UDP {
        0xffff
    } else {
        c
    }
}

/// Computes and writes the TCP/UDP checksum of `frame`. Returns `false` (frame
/// unchanged) when [`locate`] does not understand the frame.
pub fn complete(frame: &mut [u8]) -> bool {
    let Some(l4) = locate(&*frame) else {
        return false;
    };
    let c = compute(&*frame, &l4);
    match frame.get_mut(l4.field..l4.field + 2) {
        Some(f) => {
            f.copy_from_slice(&c.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Whether the frame's TCP/UDP checksum is right (`None`: not understood).
pub fn verify<F: FrameBytes + ?Sized>(frame: &F) -> Option<bool> {
    let l4 = locate(frame)?;
    let have = frame.be16(l4.field)?;
    if have == 0 && l4.proto == PROTO_UDP && !l4.ipv6 {
        return Some(true); // IPv4 UDP: zero means "no checksum".
    }
    Some(have == compute(frame, &l4))
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// An Ethernet + IPv4/IPv6 + TCP/UDP frame with `payload` bytes of data.
    pub(crate) fn frame(ipv6: bool, proto: u8, payload: usize) -> Vec<u8> {
        let mut f = std::vec![0u8; 14];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let l4len = if proto == PROTO_TCP { 20 } else { 8 } + payload;
        if ipv6 {
            f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
            let mut ip = std::vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ip);
        } else {
            f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
            ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
            let c = internet_checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        let mut l4 = std::vec![0u8; l4len];
        l4[0..2].copy_from_slice(&1234u16.to_be_bytes());
        l4[2..4].copy_from_slice(&80u16.to_be_bytes());
        if proto == PROTO_TCP {
            l4[12] = 5 << 4;
            l4[13] = 0x18;
        } else {
            l4[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
        }
        let hdr = if proto == PROTO_TCP { 20 } else { 8 };
        for (i, b) in l4[hdr..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        f.extend_from_slice(&l4);
        f
    }

    /// Reference: straightforward RFC 768/793/2460 computation.
    fn reference(f: &[u8], l4: &L4) -> u16 {
        let mut v = Vec::new();
        if l4.ipv6 {
            v.extend_from_slice(&f[l4.l3 + 8..l4.l3 + 40]);
            v.extend_from_slice(&(l4.len as u32).to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, l4.proto]);
        } else {
            v.extend_from_slice(&f[l4.l3 + 12..l4.l3 + 20]);
            v.extend_from_slice(&[0, l4.proto]);
            v.extend_from_slice(&(l4.len as u16).to_be_bytes());
        }
        let mut seg = f[l4.start..l4.start + l4.len].to_vec();
        seg[l4.field - l4.start] = 0;
        seg[l4.field - l4.start + 1] = 0;
        v.extend_from_slice(&seg);
        let c = internet_checksum(&v);
        if c == 0 && l4.proto == PROTO_UDP {
            0xffff
        } else {
            c
        }
    }

    #[test]
    fn matches_reference_for_all_shapes_and_fragmentations() {
        for ipv6 in [false, true] {
            for proto in [PROTO_TCP, PROTO_UDP] {
                // Miri skips the two long payloads (pure arithmetic, no unsafe: the
                // short ones cover every carry and odd-length path for it).
                let payloads: &[usize] = if cfg!(miri) {
                    &[0, 1, 2, 3, 7, 100]
                } else {
                    &[0, 1, 2, 3, 7, 100, 1459, 4000]
                };
                for &payload in payloads {
                    let mut f = frame(ipv6, proto, payload);
                    // Garbage in the field must not matter.
                    let l4 = locate(&f[..]).unwrap();
                    f[l4.field] = 0xAB;
                    let want = reference(&f, &l4);
                    assert_eq!(compute(&f[..], &l4), want);
                    // Same through fragments split at every small offset.
                    for cut in [1usize, 13, 14, 15, 33, 53, 54, 55] {
                        let cut = cut.min(f.len());
                        let (a, b) = f.split_at(cut);
                        let parts = [a, b];
                        assert_eq!(compute(&Frags(&parts), &l4), want, "cut {cut}");
                    }
                    let odd: Vec<&[u8]> = f.chunks(3).collect();
                    assert_eq!(compute(&Frags(&odd), &l4), want);
                    assert!(complete(&mut f));
                    assert_eq!(verify(&f[..]), Some(true));
                    let last = f.len() - 1;
                    f[last] ^= 1;
                    if payload > 0 {
                        assert_eq!(verify(&f[..]), Some(false));
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let f = frame(false, PROTO_TCP, 10);
        assert!(locate(&f[..20]).is_none(), "truncated");
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(locate(&arp[..]).is_none());
        let mut frag = f.clone();
        frag[14 + 6] = 0x20; // MF
        assert!(locate(&frag[..]).is_none());
        let mut icmp = f.clone();
        icmp[14 + 9] = 1;
        assert!(locate(&icmp[..]).is_none());
        let mut lying = f.clone();
        lying[16..18].copy_from_slice(&60000u16.to_be_bytes());
        assert!(locate(&lying[..]).is_none(), "IP length past the frame");
        let mut short_ihl = f;
        short_ihl[14] = 0x44;
        assert!(locate(&short_ihl[..]).is_none());
        assert!(!complete(&mut [0u8; 10]));
    }

    /// Known answers computed outside this module (a Python script implementing
    /// RFC 1071/768/793/2460 on the same frames), so that a fault shared by
    /// `compute` and `reference` (both fold with `Sum`) cannot hide: RFC 1071's
    /// own example (its sum needs a carry folded back), four frames, a UDP
    /// checksum that computes to zero and goes on the wire as 0xffff, Ethernet
    /// padding after the IP packet left out, and TCP/UDP headers shorter than
    /// their minimum refused.
    #[test]
    fn known_answers() {
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(internet_checksum(&[0xff; 64]), 0);
        for (ipv6, proto, payload, want) in [
            (false, PROTO_UDP, 20, 0x4fb5),
            (false, PROTO_TCP, 1459, 0x1266),
            (true, PROTO_TCP, 100, 0x0539),
            (true, PROTO_UDP, 7, 0xa061),
        ] {
            let f = frame(ipv6, proto, payload);
            let l4 = locate(&f[..]).unwrap();
            assert_eq!(compute(&f[..], &l4), want, "{ipv6} {proto} {payload}");
            // Padding after the packet (a short frame padded to the Ethernet
            // minimum, or garbage a sender appends) is not part of the segment.
            let mut padded = f.clone();
            padded.extend_from_slice(&[0x5a; 17]);
            let l4p = locate(&padded[..]).unwrap();
            assert_eq!(compute(&padded[..], &l4p), want, "padded");
        }
        let mut zero = frame(false, PROTO_UDP, 20);
        zero[42..44].copy_from_slice(&0x52bfu16.to_be_bytes());
        let l4 = locate(&zero[..]).unwrap();
        assert_eq!(compute(&zero[..], &l4), 0xffff);
        // A TCP segment under 20 bytes, a UDP one under 8: not understood.
        let mut tcp = frame(false, PROTO_TCP, 0);
        tcp[16..18].copy_from_slice(&(20u16 + 19).to_be_bytes());
        assert!(locate(&tcp[..]).is_none());
        tcp[16..18].copy_from_slice(&(20u16 + 20).to_be_bytes());
        assert!(locate(&tcp[..]).is_some());
        let mut udp = frame(false, PROTO_UDP, 0);
        udp[16..18].copy_from_slice(&(20u16 + 7).to_be_bytes());
        assert!(locate(&udp[..]).is_none());
        udp[16..18].copy_from_slice(&(20u16 + 8).to_be_bytes());
        assert!(locate(&udp[..]).is_some());
    }

    /// A zero UDP checksum means "none" over IPv4 only (RFC 768); over IPv6 it
    /// is invalid (RFC 8200), and a zero TCP checksum is just a checksum.
    #[test]
    fn zero_checksums() {
        let mut v4 = frame(false, PROTO_UDP, 20);
        let field = locate(&v4[..]).unwrap().field;
        v4[field..field + 2].copy_from_slice(&[0, 0]);
        assert_eq!(verify(&v4[..]), Some(true));
        v4[field + 1] = 1;
        assert_eq!(verify(&v4[..]), Some(false));
        let mut v6 = frame(true, PROTO_UDP, 7);
        let field = locate(&v6[..]).unwrap().field;
        v6[field..field + 2].copy_from_slice(&[0, 0]);
        assert_eq!(verify(&v6[..]), Some(false));
        let mut tcp = frame(false, PROTO_TCP, 5);
        let field = locate(&tcp[..]).unwrap().field;
        tcp[field..field + 2].copy_from_slice(&[0, 0]);
        assert_eq!(verify(&tcp[..]), Some(false));
    }

    /// `Frags::chunks` hands over exactly the pieces of `off..off + len`, in order,
    /// never an empty one (an empty fragment, or the range's edge on a fragment
    /// boundary); `is_empty` says whether there is any byte at all.
    #[test]
    fn fragment_chunks_cover_exactly_the_range() {
        let parts: [&[u8]; 4] = [b"ab", b"", b"cde", b"f"];
        let fr = Frags(&parts);
        let pieces = |off, len| {
            let mut out: Vec<Vec<u8>> = Vec::new();
            fr.chunks(off, len, &mut |c| out.push(c.to_vec()));
            out
        };
        assert_eq!(pieces(0, 6), [&b"ab"[..], b"cde", b"f"]);
        assert_eq!(pieces(1, 3), [&b"b"[..], b"cd"]);
        assert_eq!(pieces(2, 3), [&b"cde"[..]]);
        assert_eq!(pieces(2, 1), [&b"c"[..]]);
        assert_eq!(pieces(5, 9), [&b"f"[..]]);
        assert!(pieces(2, 0).is_empty());
        assert!(pieces(6, 4).is_empty());
        assert_eq!(fr.byte(4), Some(b'e'));
        assert_eq!(fr.byte(6), None);
        assert!(!FrameBytes::is_empty(&fr));
        assert!(FrameBytes::is_empty(&Frags(&[&[][..]])));
        assert!(FrameBytes::is_empty(&[0u8; 0][..]));
    }

    #[test]
    fn vlan_tag_is_skipped() {
        let f = frame(false, PROTO_UDP, 33);
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        v.extend_from_slice(&f[12..]);
        assert!(complete(&mut v));
        assert_eq!(verify(&v[..]), Some(true));
        assert_eq!(locate(&v[..]).unwrap().l3, 18);
    }
}
