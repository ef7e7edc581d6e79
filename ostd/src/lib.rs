//! rustre object storage target: io_uring block I/O over raw devices, object service.

pub mod auth;
pub mod check;
pub mod crc;
pub mod dev;
pub mod error;
pub mod extents;
pub mod format;
pub mod journal;
pub mod meta;
pub mod mmp;
pub mod service;
pub mod store;

pub use error::StoreError;
pub use store::ObjectStore;
