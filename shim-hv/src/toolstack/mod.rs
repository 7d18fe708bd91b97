//! toolstack (in progress).
