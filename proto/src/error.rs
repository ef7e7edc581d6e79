//! `ProtocolError`: what is wrong with a message, naming the field.

use std::borrow::Cow;

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
    /// The protobuf body failed to decode (malformed, or it would decode into more memory than
    /// the receiver allows).
    #[error("undecodable {message} body: {reason}")]
    Decode {
        /// Message type name.
        message: &'static str,
        /// Decoder's reason.
        reason: String,
    },
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(Cow<'static, str>),
    /// A field has an invalid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted field path, e.g. `create.layout.stripe_size`.
        field: Cow<'static, str>,
        /// Why it is invalid.
        reason: String,
    },
}

impl ProtocolError {
    /// Shorthand for [`ProtocolError::Invalid`].
    pub fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ProtocolError::Missing`].
    pub fn missing(field: impl Into<Cow<'static, str>>) -> Self {
        Self::Missing(field.into())
    }

    /// Prefixes the field path with `outer`: a nested message's `stripe_size` error becomes
    /// `create.layout.stripe_size` after `.within("create.layout")`. Other variants are unchanged.
    #[must_use]
    pub fn within(self, outer: &str) -> Self {
        let join = |inner: Cow<'static, str>| -> Cow<'static, str> {
            if inner.is_empty() {
                Cow::Owned(outer.to_string())
            } else {
                Cow::Owned(format!("{outer}.{inner}"))
            }
        };
        match self {
            Self::Missing(f) => Self::Missing(join(f)),
            Self::Invalid { field, reason } => Self::Invalid {
                field: join(field),
                reason,
            },
            other => other,
        }
    }

    /// Replaces the field path with `field` (for a scalar validated on its own and then placed in
    /// a message). Other variants are unchanged.
    #[must_use]
    pub fn at(self, field: impl Into<Cow<'static, str>>) -> Self {
        match self {
            Self::Missing(_) => Self::Missing(field.into()),
            Self::Invalid { reason, .. } => Self::Invalid {
                field: field.into(),
                reason,
            },
            other => other,
        }
    }

    /// The dotted path of the offending field, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Missing(f) => Some(f),
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The errno a server answers this error with: `EINVAL` for an invalid or missing field,
    /// `ENOSYS` for an unknown opcode, `EPROTO` for a malformed frame or body, `EMSGSIZE` for an
    /// oversized frame.
    pub fn errno(&self) -> crate::Errno {
        use crate::Errno;
        match self {
            Self::Missing(_) | Self::Invalid { .. } => Errno::EINVAL,
            Self::UnknownOpcode(_) => Errno::ENOSYS,
            Self::FrameTooLarge { .. } => Errno::EMSGSIZE,
            Self::Truncated { .. } | Self::BadMagic(_) | Self::UnsupportedVersion { .. } | Self::Decode { .. } => {
                Errno::EPROTO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_builds_dotted_paths() {
        let e = ProtocolError::invalid("stripe_size", "not a multiple of 64 KiB")
            .within("layout")
            .within("create");
        assert_eq!(e.field(), Some("create.layout.stripe_size"));
        assert_eq!(
            e.to_string(),
            "invalid create.layout.stripe_size: not a multiple of 64 KiB"
        );
        let m = ProtocolError::missing("").within("create.parent");
        assert_eq!(m.field(), Some("create.parent"));
        assert_eq!(
            ProtocolError::UnknownOpcode(3).within("x"),
            ProtocolError::UnknownOpcode(3)
        );
    }
}
