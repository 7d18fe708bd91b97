//! Node permissions: the `"n0"`, `"r1"`, ... strings of `XS_GET_PERMS`/`XS_SET_PERMS`.
//!
//! The first entry of a node's list names its owner (who may do anything) and the
//! access every domain not listed gets; each further entry gives one domain its access.

use core::fmt::Write;

use hypercall::DomId;

pub use hypercall::abi::xs_wire::Access;

/// One permission entry: a domain and its access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// Its access.
    pub access: Access,
}

/// Longest wire form of one entry: a letter and a u16 in decimal.
pub(crate) const PERM_STR_MAX: usize = 6;

impl Perm {
    /// An entry.
    pub const fn new(domid: DomId, access: Access) -> Perm {
        Perm { domid, access }
    }

    /// Parses the wire form, e.g. `b"r1"`.
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&letter, digits) = s.split_first()?;
        let access = Access::from_letter(letter)?;
        let domid = crate::parse::parse_decimal(digits).ok()?;
        let domid = u16::try_from(domid).ok()?;
        Some(Perm {
            domid: DomId(domid),
            access,
        })
    }

    /// Writes the wire form into `buf` and returns it.
    pub(crate) fn format(self, buf: &mut heapless::String<PERM_STR_MAX>) -> &[u8] {
        buf.clear();
        // Cannot fail: at most 6 bytes.
        let _ = write!(buf, "{}{}", self.access.letter() as char, self.domid.0);
        buf.as_bytes()
    }
}

/// A node's permission list as `XS_GET_PERMS` returned it, validated; borrows the
/// caller's buffer. Never empty.
#[derive(Clone, Copy, Debug)]
pub struct PermList<'a> {
    raw: &'a [u8],
}

impl<'a> PermList<'a> {
    /// Validates a reply payload: NUL-terminated entries, at least one.
    pub(crate) fn parse(raw: &'a [u8]) -> Option<PermList<'a>> {
        let list = PermList { raw };
        let mut n = 0usize;
        for entry in list.entries() {
            Perm::parse(entry)?;
            n += 1;
        }
        if n == 0 || raw.last() != Some(&0) {
            return None;
        }
        Some(list)
    }

    fn entries(&self) -> impl Iterator<Item = &'a [u8]> {
        let raw = self.raw.strip_suffix(&[0]).unwrap_or(self.raw);
        raw.split(|&b| b == 0)
    }

    /// The first entry: the owner, and the access of unlisted domains.
    pub fn owner(&self) -> Perm {
        // Validated non-empty in `parse`; the fallback is unreachable.
        self.iter()
            .next()
            .unwrap_or(Perm::new(DomId(0), Access::None))
    }

    /// All entries, owner first.
    pub fn iter(&self) -> impl Iterator<Item = Perm> + 'a {
        let raw = self.raw.strip_suffix(&[0]).unwrap_or(self.raw);
        raw.split(|&b| b == 0).filter_map(Perm::parse)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Always false (a list has an owner); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(Perm::parse(b"n0"), Some(Perm::new(DomId(0), Access::None)));
        assert_eq!(
            Perm::parse(b"b65535"),
            Some(Perm::new(DomId(65535), Access::Both))
        );
        assert_eq!(Perm::parse(b"w7"), Some(Perm::new(DomId(7), Access::Write)));
        for bad in [&b""[..], b"r", b"x1", b"r65536", b"r-1", b"r 1", b"R1"] {
            assert_eq!(Perm::parse(bad), None, "{bad:?}");
        }
        let mut s = heapless::String::new();
        assert_eq!(Perm::new(DomId(12), Access::Read).format(&mut s), b"r12");
    }

    #[test]
    fn list() {
        let l = PermList::parse(b"n1\0r0\0").unwrap();
        assert_eq!(l.owner(), Perm::new(DomId(1), Access::None));
        assert_eq!(l.len(), 2);
        assert!(PermList::parse(b"").is_none());
        assert!(PermList::parse(b"n1").is_none());
        assert!(PermList::parse(b"n1\0q\0").is_none());
        assert!(PermList::parse(b"n1\0\0").is_none());
    }
}
