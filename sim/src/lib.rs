//! Placeholder for the silver-p2p `sim` crate, filled by a later milestone (see the README's
//! Status section). It compiles so the workspace layout is in place from the start.
#![forbid(unsafe_code)]
