//! rustre metadata server: single-threaded namespace, WAL, checkpoint, layouts.
//!
//! - [`ns`]: the namespace and its operations, sans I/O; every mutation is a [`ns::WalRecord`].

pub mod codec;
pub mod errno;
pub mod ns;

pub use errno::Errno;
