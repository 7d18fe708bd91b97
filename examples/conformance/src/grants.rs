//! [`GrantObserver`]: a guest's grant table seen from the other side.

use hypercall::abi::gnttab as abi;
use hypercall::{Gfn, GrantRef, SharedMem};

use crate::{HostPlatform, HostRegion};

/// Size of one v1 grant entry.
const ENTRY: usize = 8;

// The flags are the entry's first field: an entry's offset is its flags' offset
// (an `o + ENTRY_V1_FLAGS` would add 0, a mutant no test could tell apart).
const _: () = assert!(abi::ENTRY_V1_FLAGS == 0);
/// The flags a backend's mapping sets (`GTF_reading`, `GTF_writing`).
const MAPPED: u16 = abi::GTF_READING | abi::GTF_WRITING;

/// Reads (and, as a backend would, marks) the entries of a guest's v1 grant table
/// held in host memory (e.g. `GrantTable::frames()` of a table built over a
/// [`HostPlatform`]). Keeps the frames as a [`HostRegion`], so it can live in a
/// peer for as long as the platform does.
///
/// Every access is 16 bits wide on `flags` and `domid` and 32 bits on `frame`, the
/// sizes the guest uses (docs/grant-atomics.md).
#[derive(Clone, Debug)]
pub struct GrantObserver {
    region: HostRegion,
}

impl GrantObserver {
    /// Observes the table in `frames`, memory of `host`.
    ///
    /// # Panics
    /// If `frames` is not `host`'s memory.
    pub fn new(host: &HostPlatform, frames: SharedMem<'_>) -> Self {
        let region = host
            .region_of(frames)
            .expect("grant frames in the host platform's memory");
        GrantObserver { region }
    }

    fn frames(&self) -> SharedMem<'_> {
        self.region.mem()
    }

    /// Number of entries the frames hold.
    pub fn capacity(&self) -> usize {
        self.frames().len() / ENTRY
    }

    fn off(&self, r: GrantRef) -> Option<usize> {
        let i = usize::try_from(r.0).ok()?;
        (i < self.capacity()).then_some(i * ENTRY)
    }

    /// The flags of entry `r` (`None` if `r` is outside the table).
    pub fn flags(&self, r: GrantRef) -> Option<u16> {
        self.off(r).map(|o| self.frames().load_u16(o))
    }

    /// The domain entry `r` grants to.
    pub fn domid(&self, r: GrantRef) -> Option<u16> {
        self.off(r)
            .map(|o| self.frames().load_u16(o + abi::ENTRY_V1_DOMID))
    }

    /// The frame entry `r` grants (whatever the guest wrote, live or not).
    pub fn frame(&self, r: GrantRef) -> Option<Gfn> {
        self.off(r)
            .map(|o| Gfn(u64::from(self.frames().load_u32(o + abi::ENTRY_V1_FRAME))))
    }

    /// Every entry that currently grants access (`GTF_permit_access`), with its frame:
    /// after a driver has closed its device this should be empty (anything left is a
    /// leak).
    pub fn live(&self) -> Vec<(GrantRef, Gfn)> {
        (0..self.capacity())
            .filter_map(|i| {
                let o = i * ENTRY;
                let flags = self.frames().load_u16(o);
                (flags & abi::GTF_TYPE_MASK == abi::GTF_PERMIT_ACCESS).then(|| {
                    let frame = self.frames().load_u32(o + abi::ENTRY_V1_FRAME);
                    (GrantRef(i as u32), Gfn(u64::from(frame)))
                })
            })
            .collect()
    }

    /// Marks `r` mapped, as a backend's mapping does (`GTF_reading`, and
    /// `GTF_writing` if `write`): the guest's `end_access` must now fail.
    ///
    /// # Panics
    /// If `r` is outside the table.
    pub fn map(&self, r: GrantRef, write: bool) {
        let o = self.off(r).expect("grant ref inside the table");
        let set = if write { MAPPED } else { abi::GTF_READING };
        let mut cur = self.frames().load_u16(o);
        while let Err(now) = self.frames().cmpxchg_u16(o, cur, cur | set) {
            cur = now;
        }
    }

    /// Undoes [`GrantObserver::map`].
    ///
    /// # Panics
    /// If `r` is outside the table.
    pub fn unmap(&self, r: GrantRef) {
        let o = self.off(r).expect("grant ref inside the table");
        self.frames().fetch_and_u16(o, !MAPPED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostPlatform;
    use hypercall::gnttab::GrantTable;
    use hypercall::DomId;

    #[test]
    fn sees_live_grants_and_plays_a_backend_that_keeps_one_mapped() {
        let h = HostPlatform::new();
        let table: GrantTable<512> = GrantTable::new(h.shared_pages(1)).unwrap();
        let obs = GrantObserver::new(&h, table.frames().unwrap());
        assert_eq!(obs.capacity(), 512);
        let page = h.pages(2);
        let g0 = page.gfn();
        let a = table.grant_access(DomId(0), g0, true).unwrap();
        let b = table.grant_access(DomId(3), Gfn(g0.0 + 1), false).unwrap();
        assert_eq!(obs.live(), vec![(a, g0), (b, Gfn(g0.0 + 1))]);
        assert_eq!(obs.domid(b), Some(3));
        assert_eq!(obs.frame(b), Some(Gfn(g0.0 + 1)));
        assert_ne!(obs.flags(a).unwrap() & abi::GTF_READONLY, 0);
        obs.map(b, false);
        assert_eq!(obs.flags(b).unwrap() & MAPPED, abi::GTF_READING);
        // Mapped again (a second mapping): still mapped, the bit is not toggled.
        obs.map(b, false);
        assert_eq!(obs.flags(b).unwrap() & MAPPED, abi::GTF_READING);
        assert!(table.end_access(b).is_err(), "still mapped");
        table.end_access(a).unwrap();
        assert_eq!(
            obs.live(),
            vec![(b, Gfn(g0.0 + 1))],
            "b is kept, not reused"
        );
        obs.unmap(b);
        assert_eq!(obs.flags(b).unwrap() & MAPPED, 0);
        table.end_access(b).unwrap();
        assert!(obs.live().is_empty());
        // A writable mapping sets both flags; unmapping clears both.
        let c = table.grant_access(DomId(0), g0, false).unwrap();
        obs.map(c, true);
        assert_eq!(obs.flags(c).unwrap() & MAPPED, MAPPED);
        obs.unmap(c);
        assert_eq!(obs.flags(c).unwrap() & MAPPED, 0);
        table.end_access(c).unwrap();
        assert_eq!(obs.flags(GrantRef(512)), None);
    }
}
