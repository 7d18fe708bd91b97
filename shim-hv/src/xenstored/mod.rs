//! xenstored (in progress).
