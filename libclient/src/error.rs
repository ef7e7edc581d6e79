//! Client errors. Every variant maps to a POSIX errno ([`ClientError::errno`]), which is what the
//! C ABI returns (negated).

use crate::striping::StripingError;
use rustre_fabric::FabricError;
use rustre_proto::{Errno, Opcode, ProtocolError, RemoteError};

/// What went wrong in a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A server answered with an error.
    #[error("{op} on {peer}: {source}")]
    Server {
        /// The operation.
        op: Opcode,
        /// The server's address.
        peer: String,
        /// Its error reply.
        #[source]
        source: RemoteError,
    },
    /// The fabric could not carry the call.
    #[error("{op} to {peer}: {source}")]
    Fabric {
        /// The operation (or `handshake` while connecting).
        op: Opcode,
        /// The server's address.
        peer: String,
        /// Why.
        #[source]
        source: FabricError,
    },
    /// A server's reply could not be decoded or is invalid.
    #[error("bad {op} reply from {peer}: {source}")]
    Protocol {
        /// The operation.
        op: Opcode,
        /// The server's address.
        peer: String,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// Data read back does not match the checksum the server computed for it.
    #[error("checksum mismatch reading OST{ost} object {object}: server sent {expected:#010x}, got {actual:#010x}")]
    Checksum {
        /// OST index.
        ost: u32,
        /// Object id.
        object: u64,
        /// The crc the server reported.
        expected: u32,
        /// The crc of the bytes received.
        actual: u32,
    },
    /// A client configuration that cannot be used.
    #[error("client configuration {source_name}: {reason}")]
    Config {
        /// The file (or `address string`).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad argument from the caller (path, flags, layout, range…).
    #[error("{0}")]
    Invalid(String),
    /// A striping computation out of range (offset beyond 2^64).
    #[error(transparent)]
    Striping(#[from] StripingError),
    /// A path component is missing.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// A path component that must be a directory is not.
    #[error("{0}: not a directory")]
    NotDir(String),
    /// The operation needs a non-directory.
    #[error("{0}: is a directory")]
    IsDir(String),
    /// An unknown or closed file or directory handle.
    #[error("bad file handle {0}")]
    BadHandle(i64),
    /// Any other failure with a known errno.
    #[error("{message}")]
    Other {
        /// The errno.
        errno: Errno,
        /// What happened.
        message: String,
    },
}

impl ClientError {
    /// The POSIX errno (positive) that describes this error.
    pub fn errno(&self) -> i32 {
        let e = match self {
            ClientError::Server { source, .. } => source.errno,
            ClientError::Fabric { source, .. } => fabric_errno(source),
            ClientError::Protocol { .. } => Errno::EPROTO,
            ClientError::Checksum { .. } => Errno::EIO,
            ClientError::Config { .. } | ClientError::Invalid(_) => Errno::EINVAL,
            ClientError::Striping(StripingError::RangeOverflow { .. } | StripingError::FileOffsetOverflow { .. }) => {
                Errno::EFBIG
            }
            ClientError::Striping(_) => Errno::EINVAL,
            ClientError::NotFound(_) => Errno::ENOENT,
            ClientError::NotDir(_) => Errno::ENOTDIR,
            ClientError::IsDir(_) => Errno::EISDIR,
            ClientError::BadHandle(_) => Errno::EBADF,
            ClientError::Other { errno, .. } => *errno,
        };
        e.get()
    }

    /// A [`ClientError::Other`].
    pub fn other(errno: Errno, message: impl Into<String>) -> Self {
        ClientError::Other {
            errno,
            message: message.into(),
        }
    }

    /// True when the server is unreachable or the connection broke (a resend may succeed).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ClientError::Fabric { source, .. } if source.is_disconnect())
    }
}

fn fabric_errno(e: &FabricError) -> Errno {
    match e {
        FabricError::BadAddress { .. } => Errno::EINVAL,
        FabricError::Io { source, .. } => Errno::from_io_error(source),
        FabricError::Timeout { .. } => Errno::ETIMEDOUT,
        FabricError::Closed(_) => Errno::ENOTCONN,
        FabricError::Unreachable(_) => Errno::EHOSTUNREACH,
        FabricError::NoDevice(_) => Errno::ENODEV,
        FabricError::TooLarge { .. } => Errno::EMSGSIZE,
        FabricError::Protocol { .. } => Errno::EPROTO,
        _ => Errno::EIO,
    }
}

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_errno() {
        assert_eq!(ClientError::NotFound("/a".into()).errno(), 2);
        assert_eq!(ClientError::NotDir("/a".into()).errno(), 20);
        assert_eq!(ClientError::IsDir("/a".into()).errno(), 21);
        assert_eq!(ClientError::BadHandle(7).errno(), 9);
        let s = ClientError::Server {
            op: Opcode::MdsCreate,
            peer: "tcp://127.0.0.1:1".into(),
            source: RemoteError::new(Errno::EEXIST, "exists"),
        };
        assert_eq!(s.errno(), 17);
        assert!(s.to_string().contains("mds.create"), "{s}");
        let f = ClientError::Fabric {
            op: Opcode::OstRead,
            peer: "x".into(),
            source: FabricError::Timeout {
                peer: "x".into(),
                after_ms: 5,
            },
        };
        assert_eq!(f.errno(), 110);
        assert!(f.is_disconnect());
        let o = ClientError::Striping(StripingError::RangeOverflow {
            offset: u64::MAX,
            len: 1,
        });
        assert_eq!(o.errno(), 27);
    }
}
