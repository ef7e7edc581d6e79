//! `rustre secret gen`: create a cluster secret file.
//!
//! The file holds 32 random bytes as hex and is created with mode 0600, owned by the caller;
//! `mdsd --secret`, `ostd --secret` and the client configuration (`secret = "PATH"`) read it.

use rustre_proto::auth::{AuthError, ClusterSecret, MIN_SECRET_LEN};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a secret file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file exists and `--force` was not given.
    #[error("{} already exists; pass --force to replace it (every daemon and client must then get the new one)", .0.display())]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write secret file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No random bytes.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Writes a fresh secret to `out` (mode 0600). Refuses to replace an existing file unless
/// `force`. The new file appears atomically (written beside it, synced, renamed).
pub fn generate(out: &Path, force: bool) -> Result<(), SecretError> {
    let io = |source| SecretError::Io {
        path: out.to_owned(),
        source,
    };
    if !force && std::fs::symlink_metadata(out).is_ok() {
        return Err(SecretError::Exists(out.to_owned()));
    }
    let secret = ClusterSecret::generate(MIN_SECRET_LEN)?;
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret.to_file_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn gen_is_private_and_loadable_and_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        generate(&p, false).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let a = ClusterSecret::load(&p).unwrap();
        let e = generate(&p, false).unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("--force"), "{e}");
        assert_eq!(ClusterSecret::load(&p).unwrap(), a);
        generate(&p, true).unwrap();
        assert_ne!(ClusterSecret::load(&p).unwrap(), a);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
