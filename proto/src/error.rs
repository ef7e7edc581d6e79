//! `ProtocolError`: what is wrong with a message, naming the field.

/// A malformed or invalid message. Every variant names what was wrong so the peer's log says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Fewer bytes than a fixed-size structure needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The frame does not start with the rustre magic.
    #[error("bad frame magic {0:#010x} (not a rustre peer?)")]
    BadMagic(u32),
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {got} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version in the frame.
        got: u16,
        /// Version of this build.
        supported: u16,
    },
    /// A frame body longer than the receiver's limit.
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced body length.
        len: u32,
        /// Receiver's limit.
        max: u32,
    },
    /// The opcode is not known.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// The protobuf body failed to decode.
    #[error("undecodable {message} body: {reason}")]
    Decode {
        /// Message type name.
        message: &'static str,
        /// Decoder's reason.
        reason: String,
    },
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has an invalid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted field path, e.g. `create.layout.stripe_size`.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

impl ProtocolError {
    /// Shorthand for [`ProtocolError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
