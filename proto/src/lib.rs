//! rustre-proto: the wire protocol of rustre.
//!
//! Owns the `.proto` schema (compiled by prost-build with protox, no `protoc` needed), the fixed
//! frame header and stream framing, and validated domain types. It performs no I/O.

pub mod error;
pub mod frame;

pub use error::ProtocolError;
pub use frame::{FrameDecoder, FrameHeader};
