//! Guest memory (in progress).
