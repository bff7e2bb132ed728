//! Heap profiling for `hg-coord` and `hg-worker` (moved to
//! `hybridgrid_net::heap`; kept at its old path).

pub use hybridgrid_net::heap::*;
