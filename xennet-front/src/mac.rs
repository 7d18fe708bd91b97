//! Ethernet MAC addresses as xenstore writes them (`aa:00:00:50:02:f0`).

use core::fmt;

/// A 48-bit Ethernet address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

/// Why a `mac` value was refused (docs/hostile-input.md row 22).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MacError {
    /// Not six groups separated by `:` (count of groups seen, capped at 7).
    WrongGroupCount(usize),
    /// Group `index` is not exactly two hex digits.
    BadGroup(usize),
    /// The value is longer than any MAC (`len` bytes).
    TooLong(usize),
    /// Well formed, but not a unicast station address: the group bit is set
    /// (broadcast or multicast) or it is all zeros. A device must have one of its own.
    NotUnicast(Mac),
}

impl fmt::Display for MacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MacError::WrongGroupCount(n) => write!(f, "MAC has {n} groups, expected 6"),
            MacError::BadGroup(i) => write!(f, "MAC group {i} is not two hex digits"),
            MacError::TooLong(n) => write!(f, "MAC value of {n} bytes is too long"),
            MacError::NotUnicast(m) => write!(f, "MAC {m} is not a unicast address"),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Parses `xx:xx:xx:xx:xx:xx` (hex digits of either case, exactly two per group,
    /// nothing else: no spaces, no `-`, no trailing NUL).
    pub fn parse(s: &[u8]) -> Result<Mac, MacError> {
        let mut out = [0u8; 6];
        let mut groups = 0usize;
        for (i, g) in s.split(|&b| b == b':').enumerate() {
            groups = i + 1;
            if groups > 6 {
                return Err(MacError::WrongGroupCount(7));
            }
            let (Some(&hi), Some(&lo), 2) = (g.first(), g.get(1), g.len()) else {
                return Err(MacError::BadGroup(i));
            };
            match (hex(hi), hex(lo), out.get_mut(i)) {
                (Some(h), Some(l), Some(o)) => *o = h * 16 + l,
                _ => return Err(MacError::BadGroup(i)),
            }
        }
        if groups != 6 {
            return Err(MacError::WrongGroupCount(groups));
        }
        Ok(Mac(out))
    }

    /// Whether this can be a device's own address: not multicast/broadcast (group bit
    /// clear) and not all zeros (Linux's `is_valid_ether_addr`).
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && self.0 != [0; 6]
    }

    /// Whether the group bit (multicast/broadcast) is set.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the locally-administered bit is set.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 2 != 0
    }

    /// The address the classic Xen tools give the backend interface of a vif:
    /// guest MAC XOR `00:00:00:01:00:00`.
    pub const fn backend_peer(&self) -> Mac {
        let mut m = self.0;
        m[3] ^= 1;
        Mac(m)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn parses_and_formats() {
        let m = Mac::parse(b"aa:00:00:50:02:f0").unwrap();
        assert_eq!(m, Mac([0xaa, 0, 0, 0x50, 2, 0xf0]));
        assert_eq!(m.to_string(), "aa:00:00:50:02:f0");
        assert_eq!(Mac::parse(b"AA:0B:cC:50:02:F0").unwrap().0[2], 0xcc);
        assert!(m.is_local() && !m.is_multicast());
        assert_eq!(m.backend_peer(), Mac([0xaa, 0, 0, 0x51, 2, 0xf0]));
        assert!(Mac::BROADCAST.is_broadcast() && Mac::BROADCAST.is_multicast());
        assert!(m.is_unicast());
        assert!(!Mac::BROADCAST.is_unicast());
        assert!(!Mac([0x33, 0x33, 0, 0, 0, 1]).is_unicast());
        assert!(!Mac([0; 6]).is_unicast());
        assert!(Mac([0x02, 0, 0, 0, 0, 0]).is_unicast());
    }

    /// A universally administered unicast address (Xen's OUI 00:16:3e) is neither
    /// local nor broadcast, and its backend peer flips bit 0 of the fourth byte
    /// both ways (mutants: `is_local`/`is_broadcast` -> `true`, `is_local`'s `&` as
    /// `|` or `^`, `backend_peer`'s `^=` as `|=`).
    #[test]
    fn universal_address_and_its_peer() {
        let m = Mac::parse(b"00:16:3e:51:aa:0f").unwrap();
        assert_eq!(m, Mac([0x00, 0x16, 0x3e, 0x51, 0xaa, 0x0f]));
        assert!(!m.is_local() && !m.is_broadcast() && !m.is_multicast());
        assert!(m.is_unicast());
        assert_eq!(m.backend_peer(), Mac([0x00, 0x16, 0x3e, 0x50, 0xaa, 0x0f]));
        assert_eq!(m.backend_peer().backend_peer(), m);
        assert!(!Mac([0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).is_broadcast());
    }

    /// Row 22 / docs/hostile-input.md N9: malformed `mac` values.
    #[test]
    fn refuses_malformed() {
        for bad in [
            &b""[..],
            b"zz:00:00:00:00:00",
            b"00:00:00:00:00",
            b"00:00:00:00:00:00:00",
            b"00:00:00:00:00:0",
            b"00:00:00:00:00:000",
            b"00-00-00-00-00-00",
            b" 00:00:00:00:00:00",
            b"00:00:00:00:00:00\0",
            b"00::00:00:00:00",
            b":::::",
            b"0:00:00:00:00:00",
            b"\xff\xfe:00:00:00:00:00",
        ] {
            assert!(Mac::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Mac::parse(b"00:00:00:00:00"),
            Err(MacError::WrongGroupCount(5))
        );
        assert_eq!(Mac::parse(b"00:00:g0:00:00:00"), Err(MacError::BadGroup(2)));
    }

    /// Each refusal says what is wrong (mutant: `MacError`'s `Display` writing
    /// nothing).
    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            (MacError::WrongGroupCount(5), "MAC has 5 groups, expected 6"),
            (MacError::BadGroup(2), "MAC group 2 is not two hex digits"),
            (MacError::TooLong(40), "MAC value of 40 bytes is too long"),
            (
                MacError::NotUnicast(Mac::BROADCAST),
                "MAC ff:ff:ff:ff:ff:ff is not a unicast address",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }
}
