//! Fabric errors. Verbs failures carry the verb's name and errno.

use rustre_proto::ProtocolError;

/// A failure to move bytes.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// An address that cannot be parsed or resolved.
    #[error("bad fabric address {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why it is bad.
        reason: String,
    },
    /// Socket-level I/O failed.
    #[error("{op} {peer}: {source}")]
    Io {
        /// What was being done (connect, send, recv, bind…).
        op: &'static str,
        /// The peer or local address.
        peer: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A verb or rdma_cm call failed.
    #[error("{verb} failed: {errno_text} (errno {errno})")]
    Verbs {
        /// The failing call, e.g. `ibv_reg_mr`.
        verb: &'static str,
        /// The errno it left.
        errno: i32,
        /// `strerror(errno)`.
        errno_text: String,
    },
    /// No RDMA device is present (or the kernel has no RDMA support).
    #[error("no RDMA device: {0}")]
    NoDevice(String),
    /// The peer sent a malformed frame; the connection is closed.
    #[error("protocol error from {peer}: {source}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// A call got no reply in time.
    #[error("call to {peer} timed out after {after_ms} ms")]
    Timeout {
        /// The peer.
        peer: String,
        /// Elapsed time.
        after_ms: u64,
    },
    /// The connection is closed (by either side).
    #[error("connection to {0} closed")]
    Closed(String),
    /// A bulk transfer outside the exposed descriptor, or with a revoked key.
    #[error("bulk access refused: {0}")]
    BulkRefused(String),
    /// A message larger than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nothing listens at a sim address, or it was partitioned away.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

impl FabricError {
    /// Builds a [`FabricError::Verbs`] from the current `errno`.
    pub fn verbs_errno(verb: &'static str) -> Self {
        let err = std::io::Error::last_os_error();
        Self::verbs(verb, err.raw_os_error().unwrap_or(0))
    }

    /// Builds a [`FabricError::Verbs`] from an explicit errno (verbs that return it).
    pub fn verbs(verb: &'static str, errno: i32) -> Self {
        let errno_text = std::io::Error::from_raw_os_error(errno).to_string();
        Self::Verbs {
            verb,
            errno,
            errno_text,
        }
    }

    /// True when the peer is gone (closed, unreachable, reset): a resend elsewhere may help.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            FabricError::Closed(_) | FabricError::Unreachable(_) | FabricError::Timeout { .. }
        ) || matches!(self, FabricError::Io { .. })
    }
}
