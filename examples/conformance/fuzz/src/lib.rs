//! Shared pieces of the fuzz targets: the conformance kit's host-memory platform
//! (its `wait()` runs the scripted peer: the fuzzer's bytes) and a byte cursor over
//! the fuzz input.
//!
//! Everything is single-threaded: the code under test and the "peer" take turns (the
//! peer runs inside `Platform::wait`), so a run is a pure function of the input.

pub use xen_conformance::HostPlatform;

/// Clears the platform's peer when dropped: a peer that holds a handle on the
/// platform (a `HostRegion`) makes a cycle, which would leak (and libFuzzer
/// reports leaks) if a target returned early without clearing it.
pub struct ClearPeer<'a>(pub &'a HostPlatform);

impl Drop for ClearPeer<'_> {
    fn drop(&mut self) {
        self.0.set_peer(None);
    }
}

pub mod front;
pub mod store;

/// Reads pieces of the fuzz input in order; past the end everything is zero/empty.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len()
    }
    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// One byte.
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self
            .data
            .split_first()
            .map_or((0, &[][..]), |(b, r)| (*b, r));
        self.data = rest;
        b
    }
    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}
