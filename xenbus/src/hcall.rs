//! Mapping the store page.
//!
//! Temporary: this moves to `hypercall`'s `SharedMem::map_gfn` once it lands; until
//! then this is the only module of the crate with `unsafe`.
#![allow(unsafe_code)]

use hypercall::{Gfn, Platform, SharedMem, PAGE_SIZE};

use crate::error::{Error, Result};

/// Wraps the page of frame `gfn` (the store page Xen reserved for this domain) as
/// shared memory.
pub(crate) fn map_frame<P: Platform + ?Sized>(platform: &P, gfn: Gfn) -> Result<SharedMem> {
    let ptr = platform.gfn_to_virt(gfn).ok_or(Error::NotMapped(gfn))?;
    // SAFETY: `gfn_to_virt` returns the mapping of a whole 4 KiB guest frame, which the
    // platform keeps mapped. The store page is Xen's special page for xenstore: nothing
    // in the guest holds references into it, and all our accesses go through SharedMem.
    Ok(unsafe { SharedMem::new(ptr, PAGE_SIZE) })
}
