//! rustre metadata server: single-threaded namespace, WAL, checkpoint, layouts.
//!
//! - [`ns`]: the namespace and its operations, sans I/O; every mutation is a [`ns::WalRecord`].
//! - [`dev`]: the MDT block device (io_uring + O_DIRECT, and a fault-injecting memory device).
//! - [`format`](mod@format), [`wal`], [`checkpoint`], [`mdt`]: the on-disk format, group-committed WAL,
//!   alternating checkpoints, recovery.

pub mod check;
pub mod checkpoint;
pub mod codec;
pub mod dev;
pub mod errno;
pub mod format;
pub mod mdt;
pub mod mmp;
pub mod ns;
pub mod reply_cache;
pub mod service;
pub mod wal;

pub use errno::Errno;
