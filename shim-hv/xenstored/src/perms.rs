//! Node permissions (docs/misc/xenstore.txt "GET_PERMS"; C xenstored `perm_for_conn`).
//!
//! A node's permission list is never empty: the first entry names the owner (who always
//! has full access) and gives the default access for domains not listed; later entries
//! give access to single domains. Dom0 is privileged and may do everything.

use core::fmt;

pub use hypercall::abi::xs_wire::Access;

/// The permission bits (`READ`, `WRITE`) an entry's access grants. (The bits
/// are disjoint; they are added here and in [`perm_for`], not or-ed, so that no
/// mutant of the sum is an equivalent `^`: docs/mutants.md.)
pub(crate) fn bits(access: Access) -> u8 {
    match access {
        Access::None => 0,
        Access::Read => READ,
        Access::Write => WRITE,
        Access::Both => READ + WRITE,
    }
}

/// One permission entry: `domid` gets `access` (for the first entry of a node: `domid` is
/// the owner and `access` the default for everybody else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain this entry is about.
    pub domid: u16,
    /// What it may do.
    pub access: Access,
}

impl Perm {
    /// Builds an entry.
    pub const fn new(domid: u16, access: Access) -> Self {
        Self { domid, access }
    }

    /// Parses the wire form of `XS_SET_PERMS` entries as C xenstored 4.17 does: the
    /// letter, then a decimal domain id of any size (saturating). The caller decides
    /// what an id naming no domain means (4.17: the owner entry fails with `ENOENT`,
    /// other entries are ignored). `None` for a bad letter or a non-decimal id.
    pub(crate) fn parse_wire(s: &[u8]) -> Option<(Access, u32)> {
        let (&first, digits) = s.split_first()?;
        let access = Access::from_letter(first)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let domid = digits.iter().fold(0u32, |acc, &d| {
            acc.saturating_mul(10).saturating_add(u32::from(d - b'0'))
        });
        Some((access, domid))
    }

    /// Parses the wire form (`r5`, `b0`, `n12`, `w7`). The domain id is decimal and at
    /// most 65535; anything else is refused.
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&first, digits) = s.split_first()?;
        let access = Access::from_letter(first)?;
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let domid = digits
            .iter()
            .try_fold(0u32, |acc, &d| Some(acc * 10 + u32::from(d - b'0')))?;
        Some(Perm {
            domid: u16::try_from(domid).ok()?,
            access,
        })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", char::from(self.access.letter()), self.domid)
    }
}

/// Read permission bit.
pub(crate) const READ: u8 = 1;
/// Write permission bit.
pub(crate) const WRITE: u8 = 2;
/// Owner bit (may change permissions).
pub(crate) const OWNER: u8 = 4;
/// What changing a node's permissions takes: write and owner (C xenstored's
/// `XS_PERM_WRITE | XS_PERM_OWNER`; a sum of the two disjoint bits, so that no
/// mutant of it is an equivalent `^`).
pub(crate) const WRITE_OWNER: u8 = WRITE + OWNER;

/// Who is asking: a connection's domain, whether it is privileged, and its target
/// (`XS_SET_TARGET`: a device model acting for another domain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Who {
    pub domid: u16,
    pub privileged: bool,
    pub target: Option<u16>,
}

impl Who {
    /// A connection of `domid`; dom0 is privileged.
    pub(crate) fn new(domid: u16, target: Option<u16>) -> Self {
        Self {
            domid,
            privileged: domid == 0,
            target,
        }
    }

    fn is(&self, domid: u16) -> bool {
        self.domid == domid || self.target == Some(domid)
    }
}

/// The permission bits `who` has on a node with `perms` (C `perm_for_conn`).
pub(crate) fn perm_for(who: &Who, perms: &[Perm]) -> u8 {
    let Some((owner, rest)) = perms.split_first() else {
        // Never stored; treat a missing list as "dom0 only".
        return if who.privileged {
            READ + WRITE + OWNER
        } else {
            0
        };
    };
    if who.privileged || who.is(owner.domid) {
        return READ + WRITE + OWNER;
    }
    for p in rest {
        if who.is(p.domid) {
            return bits(p.access);
        }
    }
    bits(owner.access)
}

/// The wire form of a permission list: each entry followed by a NUL.
pub(crate) fn to_wire(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.extend_from_slice(p.to_string().as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(Perm::parse(b"r5"), Some(Perm::new(5, Access::Read)));
        assert_eq!(Perm::parse(b"b0"), Some(Perm::new(0, Access::Both)));
        assert_eq!(Perm::parse(b"n65535"), Some(Perm::new(65535, Access::None)));
        assert_eq!(Perm::parse(b"w7"), Some(Perm::new(7, Access::Write)));
        for bad in [
            &b""[..],
            b"r",
            b"x5",
            b"r-1",
            b"r65536",
            b"r 5",
            b"r5x",
            b"r0x10",
            b"r123456",
        ] {
            assert_eq!(Perm::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Perm::new(12, Access::Both).to_string(), "b12");
        assert_eq!(
            to_wire(&[Perm::new(1, Access::None), Perm::new(0, Access::Read)]),
            b"n1\0r0\0"
        );
    }

    #[test]
    fn permission_rules() {
        let perms = [
            Perm::new(5, Access::None),
            Perm::new(6, Access::Read),
            Perm::new(7, Access::Both),
        ];
        assert_eq!(perm_for(&Who::new(0, None), &perms), READ | WRITE | OWNER);
        assert_eq!(perm_for(&Who::new(5, None), &perms), READ | WRITE | OWNER);
        assert_eq!(perm_for(&Who::new(6, None), &perms), READ);
        assert_eq!(perm_for(&Who::new(7, None), &perms), READ | WRITE);
        assert_eq!(perm_for(&Who::new(8, None), &perms), 0);
        // A target acts as its target domain.
        assert_eq!(
            perm_for(&Who::new(9, Some(5)), &perms),
            READ | WRITE | OWNER
        );
        let open = [Perm::new(5, Access::Read)];
        assert_eq!(perm_for(&Who::new(8, None), &open), READ);
        assert_eq!(perm_for(&Who::new(8, None), &[]), 0);
    }

    /// A missing list (never stored) means dom0 only: everything for dom0, nothing
    /// for others. (Written for cargo-mutants: the sum of the bits in that arm.)
    #[test]
    fn an_empty_list_is_dom0_only() {
        assert_eq!(perm_for(&Who::new(0, None), &[]), READ | WRITE | OWNER);
        assert_eq!(perm_for(&Who::new(5, None), &[]), 0);
        assert_eq!(bits(Access::Both), READ | WRITE);
    }
}
