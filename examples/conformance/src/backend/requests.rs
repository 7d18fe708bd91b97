//! Raw `blkif` requests, built field by field so that any of them can be wrong: what
//! the `blkback.*` cases send, for a backend's own extra tests.
//!
//! ```
//! use xen_conformance::backend::requests::{rw, segment};
//! use hypercall::abi::blkif;
//! use hypercall::GrantRef;
//!
//! // A read whose only segment ends before it starts.
//! let r = rw(blkif::OP_READ, 7, 0, &[segment(GrantRef(9), 5, 2)], None);
//! assert_eq!((r.nr_segments, r.seg[0].first_sect), (1, 5));
//! ```

use hypercall::abi::blkif::{self, Request, RequestDiscard, RequestIndirect, RequestSegment};
use hypercall::GrantRef;

/// A segment: sectors `first..=last` of the page `gref` grants.
pub fn segment(gref: GrantRef, first: u8, last: u8) -> RequestSegment {
    RequestSegment {
        gref: gref.0,
        first_sect: first,
        last_sect: last,
        _pad: [0; 2],
    }
}

/// A read, write, flush or barrier request (or any other `op`) of `segs` from
/// `sector`; `nr` overrides `nr_segments` (else `segs.len()`; at most 11 are stored).
pub fn rw(op: u8, id: u64, sector: u64, segs: &[RequestSegment], nr: Option<u8>) -> Request {
    let mut r = Request {
        operation: op,
        nr_segments: nr.unwrap_or(segs.len().min(usize::from(u8::MAX)) as u8),
        id,
        sector_number: sector,
        ..Default::default()
    };
    for (d, s) in r.seg.iter_mut().zip(segs) {
        *d = *s;
    }
    r
}

/// An indirect request: operation `iop` of `nr` segments whose descriptors are in
/// the pages `pages` grant (at most 8 are stored).
pub fn indirect(iop: u8, id: u64, sector: u64, nr: u16, pages: &[GrantRef]) -> Request {
    let mut r = RequestIndirect {
        operation: blkif::OP_INDIRECT,
        indirect_op: iop,
        nr_segments: nr,
        id,
        sector_number: sector,
        ..Default::default()
    };
    for (d, g) in r.indirect_grefs.iter_mut().zip(pages) {
        *d = g.0;
    }
    Request::from(r)
}

/// A discard of `nr_sectors` from `sector`.
pub fn discard(id: u64, sector: u64, nr_sectors: u64) -> Request {
    Request::from(RequestDiscard {
        operation: blkif::OP_DISCARD,
        id,
        sector_number: sector,
        nr_sectors,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_builder_sets_every_field_it_names() {
        let s = segment(GrantRef(9), 2, 5);
        assert_eq!((s.gref, s.first_sect, s.last_sect), (9, 2, 5));

        let r = rw(
            blkif::OP_WRITE,
            7,
            40,
            &[s, segment(GrantRef(10), 0, 7)],
            None,
        );
        assert_eq!((r.operation, r.nr_segments, r.id), (blkif::OP_WRITE, 2, 7));
        assert_eq!((r.sector_number, r.handle), (40, 0));
        assert_eq!((r.seg[0].gref, r.seg[1].gref, r.seg[2].gref), (9, 10, 0));
        // `nr` overrides the count; more than 11 segments are not stored.
        let r = rw(blkif::OP_READ, 8, 0, &[s; 20], Some(255));
        assert_eq!((r.operation, r.nr_segments, r.seg[10].gref), (0, 255, 9));
        let r = rw(blkif::OP_READ, 8, 0, &[s; 300], None);
        assert_eq!(r.nr_segments, 255);

        let r = indirect(blkif::OP_WRITE, 11, 64, 300, &[GrantRef(4), GrantRef(5)]).as_indirect();
        assert_eq!(
            (r.operation, r.indirect_op),
            (blkif::OP_INDIRECT, blkif::OP_WRITE)
        );
        assert_eq!((r.nr_segments, r.id, r.sector_number), (300, 11, 64));
        assert_eq!(r.indirect_grefs[..3], [4, 5, 0]);

        let r = discard(12, 100, 8).as_discard();
        assert_eq!((r.operation, r.id), (blkif::OP_DISCARD, 12));
        assert_eq!((r.sector_number, r.nr_sectors, r.flag), (100, 8, 0));
    }
}
