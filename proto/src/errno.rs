//! Error numbers on the wire and the error reply.
//!
//! The wire carries Linux errno values (positive), whatever the host, so a client on any
//! platform decodes the same meaning. [`RemoteError`] is the validated form of
//! [`pb::ErrorReply`], the body of a reply frame with `FLAG_ERROR`.

use crate::{ProtocolError, pb};

/// A positive errno value as carried on the wire (Linux numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($name:ident = $v:expr, $doc:expr;)*) => {
        impl Errno {
            $(#[doc = $doc] pub const $name: Errno = Errno($v);)*

            /// The symbolic name (`"ENOENT"`), or `None` for a value without one here.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($v => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted.";
    ENOENT = 2, "No such file or directory.";
    EIO = 5, "I/O error.";
    E2BIG = 7, "Argument list too long.";
    EBADF = 9, "Bad file handle.";
    EAGAIN = 11, "Try again.";
    ENOMEM = 12, "Out of memory.";
    EACCES = 13, "Permission denied.";
    EFAULT = 14, "Bad address.";
    EBUSY = 16, "Device or resource busy.";
    EEXIST = 17, "File exists.";
    EXDEV = 18, "Cross-device link.";
    ENODEV = 19, "No such device.";
    ENOTDIR = 20, "Not a directory.";
    EISDIR = 21, "Is a directory.";
    EINVAL = 22, "Invalid argument.";
    EFBIG = 27, "File too large.";
    ENOSPC = 28, "No space left on device.";
    EROFS = 30, "Read-only file system.";
    EMLINK = 31, "Too many links.";
    ERANGE = 34, "Result out of range.";
    ENAMETOOLONG = 36, "File name too long.";
    ENOSYS = 38, "Operation not implemented.";
    ENOTEMPTY = 39, "Directory not empty.";
    ELOOP = 40, "Too many symbolic links.";
    ENODATA = 61, "No data available.";
    ETIME = 62, "Timer expired.";
    ENOLINK = 67, "Link has been severed.";
    EPROTO = 71, "Protocol error.";
    EBADMSG = 74, "Bad message (checksum mismatch).";
    EOVERFLOW = 75, "Value too large for defined data type.";
    EMSGSIZE = 90, "Message too long.";
    EOPNOTSUPP = 95, "Operation not supported.";
    ECONNRESET = 104, "Connection reset.";
    ENOTCONN = 107, "Not connected.";
    ESHUTDOWN = 108, "Endpoint shut down.";
    ETIMEDOUT = 110, "Timed out.";
    ECONNREFUSED = 111, "Connection refused.";
    EHOSTUNREACH = 113, "No route to host.";
    EALREADY = 114, "Operation already in progress.";
    ESTALE = 116, "Stale file handle.";
    EDQUOT = 122, "Quota exceeded.";
    ECANCELED = 125, "Operation canceled.";
    EKEYREJECTED = 129, "Key was rejected (authentication failed).";
}

impl Errno {
    /// Largest errno value accepted from the wire.
    pub const MAX: i32 = 4095;

    /// The positive value, for the wire or for a C caller (negate it for `-errno` results).
    pub const fn get(self) -> i32 {
        self.0
    }

    /// The errno of an I/O error: its OS error code when it has one (the servers run on Linux),
    /// else a best match of its kind.
    pub fn from_io_error(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        if let Some(Ok(errno)) = e.raw_os_error().map(Errno::try_from) {
            return errno;
        }
        match e.kind() {
            K::NotFound => Self::ENOENT,
            K::PermissionDenied => Self::EACCES,
            K::AlreadyExists => Self::EEXIST,
            K::InvalidInput | K::InvalidData => Self::EINVAL,
            K::TimedOut => Self::ETIMEDOUT,
            K::OutOfMemory => Self::ENOMEM,
            K::Unsupported => Self::EOPNOTSUPP,
            K::ConnectionRefused => Self::ECONNREFUSED,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Self::ECONNRESET,
            K::NotConnected => Self::ENOTCONN,
            K::WouldBlock => Self::EAGAIN,
            K::StorageFull => Self::ENOSPC,
            K::DirectoryNotEmpty => Self::ENOTEMPTY,
            K::NotADirectory => Self::ENOTDIR,
            K::IsADirectory => Self::EISDIR,
            K::ReadOnlyFilesystem => Self::EROFS,
            K::InvalidFilename => Self::ENAMETOOLONG,
            K::FileTooLarge => Self::EFBIG,
            K::CrossesDevices => Self::EXDEV,
            K::TooManyLinks => Self::EMLINK,
            K::StaleNetworkFileHandle => Self::ESTALE,
            _ => Self::EIO,
        }
    }
}

impl TryFrom<i32> for Errno {
    type Error = ProtocolError;

    /// Accepts 1..=[`Errno::MAX`].
    fn try_from(v: i32) -> Result<Self, ProtocolError> {
        if (1..=Self::MAX).contains(&v) {
            Ok(Errno(v))
        } else {
            Err(ProtocolError::invalid(
                "errno",
                format!("{v} is not in 1..={}", Self::MAX),
            ))
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// Longest error message kept from the wire; longer ones are cut (at a character boundary).
pub const MAX_ERROR_MESSAGE: usize = 1024;
/// Longest field path kept from the wire.
pub const MAX_ERROR_FIELD: usize = 256;

/// An error reported by the peer: the validated [`pb::ErrorReply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{errno}: {message}{}", if field.is_empty() { String::new() } else { format!(" (field {field})") })]
pub struct RemoteError {
    /// What went wrong.
    pub errno: Errno,
    /// The peer's explanation.
    pub message: String,
    /// Offending request field for validation errors, else empty.
    pub field: String,
}

impl RemoteError {
    /// An error without a field.
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            field: String::new(),
        }
    }

    /// The wire form.
    pub fn to_pb(&self) -> pb::ErrorReply {
        pb::ErrorReply {
            errno: self.errno.get(),
            message: self.message.clone(),
            field: self.field.clone(),
        }
    }
}

impl From<&ProtocolError> for RemoteError {
    /// The reply a server sends for a request that failed validation.
    fn from(e: &ProtocolError) -> Self {
        Self {
            errno: e.errno(),
            message: e.to_string(),
            field: e.field().unwrap_or_default().to_string(),
        }
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl TryFrom<pb::ErrorReply> for RemoteError {
    type Error = ProtocolError;

    fn try_from(p: pb::ErrorReply) -> Result<Self, ProtocolError> {
        Ok(Self {
            errno: Errno::try_from(p.errno).map_err(|e| e.within("error_reply"))?,
            message: cut(p.message, MAX_ERROR_MESSAGE),
            field: cut(p.field, MAX_ERROR_FIELD),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_bounds_and_names() {
        assert_eq!(Errno::try_from(2).map(Errno::name), Ok(Some("ENOENT")));
        assert!(Errno::try_from(0).is_err());
        assert!(Errno::try_from(-5).is_err());
        assert!(Errno::try_from(4096).is_err());
        assert_eq!(
            Errno::try_from(4000).map(|e| e.to_string()),
            Ok("errno 4000".to_string())
        );
    }

    #[test]
    fn io_errors_map_to_their_errno() {
        let e = std::io::Error::from_raw_os_error(28);
        assert_eq!(Errno::from_io_error(&e), Errno::ENOSPC);
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "x");
        assert_eq!(Errno::from_io_error(&e), Errno::ENOENT);
    }

    #[test]
    fn error_reply_is_validated_and_bounded() {
        let p = pb::ErrorReply {
            errno: 22,
            message: "é".repeat(MAX_ERROR_MESSAGE),
            field: "create.name".into(),
        };
        let r = RemoteError::try_from(p).unwrap();
        assert_eq!(r.errno, Errno::EINVAL);
        assert!(r.message.len() <= MAX_ERROR_MESSAGE);
        assert_eq!(r.to_string().split(':').next(), Some("EINVAL"));
        let bad = pb::ErrorReply {
            errno: 0,
            ..Default::default()
        };
        let err = RemoteError::try_from(bad).unwrap_err();
        assert_eq!(err.field(), Some("error_reply.errno"));
        let from = RemoteError::from(&ProtocolError::invalid("write.length", "zero"));
        assert_eq!((from.errno, from.field.as_str()), (Errno::EINVAL, "write.length"));
    }
}
