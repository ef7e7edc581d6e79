//! rustre client library (`librustre`).
//!
//! - [`striping`]: the pure mapping from a file byte range to per-object extents (RAID-0 round
//!   robin, as Lustre) and its inverse for file sizes.

pub mod striping;
