//! The address a toolstack gave a vif: xl writes a vif's `ip=` setting (one or
//! more addresses, separated by spaces) to the backend's `ip` node. Linux guests
//! ignore it (they run DHCP or their own configuration); a unikernel without either
//! can take its address from there.

use core::fmt::Write as _;
use core::net::Ipv4Addr;

use xenbus::{Path, Store};

/// The first IPv4 address in `device/vif/<index>`'s backend `ip` node, if the
/// toolstack wrote one. Anything unreadable, absent or unparsable is `None`: the
/// node is advisory and the caller picks another source.
pub fn toolstack_ipv4<S: Store>(xs: &mut S, index: u32) -> Option<Ipv4Addr> {
    let mut node: heapless::String<40> = heapless::String::new();
    write!(node, "device/vif/{index}/backend").ok()?;
    let mut b = [0u8; xenbus::PATH_MAX];
    let backend = Path::new(xs.read_str(&node, &mut b).ok()?).ok()?;
    let mut ip = [0u8; 256];
    first_ipv4(
        xs.read_str(&Path::join(&backend, "ip").ok()?, &mut ip)
            .ok()?,
    )
}

/// The first word of `text` (split at ASCII white space) that is an IPv4 address,
/// alone or with a `/prefix` (which is not returned).
pub fn first_ipv4(text: &str) -> Option<Ipv4Addr> {
    text.split_ascii_whitespace()
        .find_map(|w| parse_ipv4(w.split_once('/').map_or(w, |(a, _)| a)))
}

/// `a.b.c.d` as an address: exactly four decimal octets of one to three digits,
/// each at most 255 and without leading zeros (so "010" is refused rather than
/// read as octal or as ten), nothing else. Accepts what `core`'s `Ipv4Addr`
/// parser accepts, in a fraction of its code (this runs in size-budgeted
/// kernels).
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut o = [0u8; 4];
    let mut parts = s.split('.');
    for slot in &mut o {
        let d = parts.next()?.as_bytes();
        if d.is_empty() || d.len() > 3 || (d.len() > 1 && d[0] == b'0') {
            return None;
        }
        let mut v = 0u16;
        for &c in d {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(c - b'0');
        }
        *slot = u8::try_from(v).ok()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(Ipv4Addr::from(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ipv4_word_is_taken() {
        assert_eq!(first_ipv4("10.0.0.2"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            first_ipv4("  fe80::1 10.1.2.3\t10.9.9.9 "),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(first_ipv4(""), None);
        assert_eq!(first_ipv4("10.0.0.256 10.0.0 x"), None);
        assert_eq!(first_ipv4("10.0.0.2/24"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(first_ipv4("/24 10.0.0.7"), Some(Ipv4Addr::new(10, 0, 0, 7)));
    }

    /// `parse_ipv4` answers as `core`'s parser does, on the edge cases and on
    /// generated strings of digits and dots (and a few other bytes).
    #[test]
    fn parse_ipv4_agrees_with_core() {
        let same = |s: &str| {
            assert_eq!(parse_ipv4(s), s.parse::<Ipv4Addr>().ok(), "{s:?}");
        };
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3",
            "1..2.3",
            "01.2.3.4",
            "1.2.3.00",
            "1.2.3.0",
            "1.2.3.4 ",
            " 1.2.3.4",
            "+1.2.3.4",
            "1.2.3.-4",
            "1000.1.1.1",
            "",
            "...",
            "1.2.3.4.5",
            "99.099.9.9",
            "9.9.9.9/24",
            "1.2.3.4\0",
        ] {
            same(s);
        }
        // A small xorshift over an alphabet of mostly digits and dots.
        let alphabet = b"0123456789......0125x /";
        let mut x: u32 = 0x9e37_79b9;
        let n = if cfg!(miri) { 300 } else { 200_000 };
        let mut buf = [0u8; 16];
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 16) as usize;
            for b in buf.iter_mut().take(len) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = alphabet[(x as usize) % alphabet.len()];
            }
            same(core::str::from_utf8(&buf[..len]).unwrap());
        }
    }
}
