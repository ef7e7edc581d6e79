//! Errors of the object store, each with the errno a client is told.

use crate::dev::DevError;

/// A failed object-store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device failed.
    #[error(transparent)]
    Dev(#[from] DevError),
    /// The device does not hold a usable OST.
    #[error("{path}: {reason}")]
    Format {
        /// Device path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `mkfs` refused to overwrite what is on the device.
    #[error("{path}: {reason}")]
    Refused {
        /// Device path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No such object.
    #[error("object {0} does not exist")]
    NotFound(u64),
    /// The object already exists.
    #[error("object {0} already exists")]
    Exists(u64),
    /// No free data blocks or object slots.
    #[error("no space left on the target: {0}")]
    NoSpace(String),
    /// Stored data does not match its checksum.
    #[error("object {object}: checksum mismatch in block {block} (stored {stored:#010x}, data {actual:#010x})")]
    Checksum {
        /// Object id.
        object: u64,
        /// Logical 4 KiB block within the object.
        block: u64,
        /// Checksum in the index.
        stored: u32,
        /// Checksum of the data read.
        actual: u32,
    },
    /// Received data does not match the checksum it came with.
    #[error("data checksum {actual:#010x} does not match the descriptor's {expected:#010x}")]
    BulkChecksum {
        /// Checksum sent with the data.
        expected: u32,
        /// Checksum of the data received.
        actual: u32,
    },
    /// A bad argument.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An earlier device failure left the in-memory state ahead of the device; the target must
    /// be restarted (journal replay) before it accepts more changes.
    #[error("target is read-only after a device failure: {0}")]
    Failed(String),
    /// Another node is serving this device (multi-mount protection).
    #[error("{0}")]
    Mmp(String),
}

impl StoreError {
    /// The errno a client is told.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound(_) => libc::ENOENT,
            StoreError::Exists(_) => libc::EEXIST,
            StoreError::NoSpace(_) => libc::ENOSPC,
            StoreError::Invalid { .. } => libc::EINVAL,
            StoreError::Failed(_) => libc::EROFS,
            StoreError::Mmp(_) => libc::EBUSY,
            StoreError::BulkChecksum { .. } => libc::EBADMSG,
            StoreError::Dev(_)
            | StoreError::Format { .. }
            | StoreError::Refused { .. }
            | StoreError::Checksum { .. } => libc::EIO,
        }
    }
}
