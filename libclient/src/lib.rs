//! rustre client library (`librustre`).
//!
//! - [`striping`]: the pure mapping from a file byte range to per-object extents (RAID-0 round
//!   robin, as Lustre) and its inverse for file sizes.
//! - [`Client`]: connects to the MDS (address list, failover), learns the OST map in the
//!   handshake, connects to OSTs lazily, walks paths, keeps open files with their layouts and
//!   runs striped reads and writes on every OST they touch at once.
//! - [`ffi`]: the C ABI (`librustre.so`, `librustre.a`, `include/rustre.h`). Besides it, only the
//!   I/O thread pool (one lifetime extension, waited out before the call returns) uses `unsafe`.
//!
//! Concurrent writers to disjoint ranges need no lock (there is no client cache). Overlapping
//! concurrent writes are atomic per RPC piece only (at most one stripe chunk, at most
//! `max_rpc_bytes`).

mod ahead;
mod behind;
pub mod client;
pub mod config;
pub mod error;
pub mod ffi;
mod io;
pub mod layout;
mod pool;
mod rpc;
pub mod striping;
pub mod types;

pub use ahead::ReadAheadStats;
pub use behind::WriteBehindStats;
pub use client::{Client, DirStream, Fd, OpenFlags};
pub use config::{ClientConfig, ClientLimits};
pub use error::{ClientError, Result};
pub use layout::{FileLayout, LayoutSpec, ObjectRef};
pub use types::{AttrChanges, DirEntry, Fid, FileAttr, FileKind, OstSpace, StatFs, StripeInfo};
