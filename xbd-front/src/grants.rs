//! The grant operations the block frontend needs, as a trait so the device does not
//! carry the grant table's size in its type.

use hypercall::gnttab::{Error, GrantTable};
use hypercall::{DomId, Gfn, GrantRef};

/// Granting pages to the backend and taking them back.
pub trait Grants {
    /// Grants `domid` access to frame `gfn` (read-only if `readonly`).
    fn grant(&self, domid: DomId, gfn: Gfn, readonly: bool) -> Result<GrantRef, Error>;
    /// Ends access; fails with [`Error::StillMapped`] (and keeps the ref) while the
    /// backend maps the page.
    fn end(&self, gref: GrantRef) -> Result<(), Error>;
}

impl<const N: usize> Grants for GrantTable<N> {
    fn grant(&self, domid: DomId, gfn: Gfn, readonly: bool) -> Result<GrantRef, Error> {
        self.grant_access(domid, gfn, readonly)
    }

    fn end(&self, gref: GrantRef) -> Result<(), Error> {
        self.end_access(gref)
    }
}

impl<T: Grants + ?Sized> Grants for &T {
    fn grant(&self, domid: DomId, gfn: Gfn, readonly: bool) -> Result<GrantRef, Error> {
        (**self).grant(domid, gfn, readonly)
    }

    fn end(&self, gref: GrantRef) -> Result<(), Error> {
        (**self).end(gref)
    }
}
