//! rustre-proto: the wire protocol of rustre.
//!
//! Owns the `.proto` schema (compiled by prost-build with protox, no `protoc` needed), the fixed
//! frame header and stream framing, the [`Opcode`] list and validated domain types. It performs
//! no I/O.

pub mod auth;
pub mod codec;
pub mod crc;
pub mod errno;
pub mod error;
pub mod frame;
pub mod limits;
pub mod opcode;
pub mod request;
pub mod types;

pub use errno::{Errno, RemoteError};
pub use error::ProtocolError;
pub use frame::{FrameDecoder, FrameHeader};
pub use opcode::Opcode;
pub use request::Request;

/// Generated protobuf messages of `proto/rustre.proto` (package `rustre.v1`).
///
/// Receivers convert these into [`crate::types`] before acting on them; nothing else should see
/// an unvalidated message.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/rustre.v1.rs"));
}
