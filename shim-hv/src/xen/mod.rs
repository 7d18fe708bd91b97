//! xen (in progress).
