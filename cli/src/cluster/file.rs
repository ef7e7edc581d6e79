//! The cluster file `DIR/cluster.toml` and the client configuration `DIR/client.toml`.
//!
//! `rustre cluster up` writes both; `status`, `down` and `demo` read the cluster file. The format is
//! documented in cli/README.md; keep the two in step.

use crate::error::CliError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// The name of the cluster file inside the data directory.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// The name of the client configuration inside the data directory.
pub const CLIENT_FILE: &str = "client.toml";
/// The version written into new cluster files.
pub const FORMAT_VERSION: u32 = 1;

/// Which fabric the daemons listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum FabricKind {
    /// TCP sockets: works everywhere.
    #[default]
    Tcp,
    /// RDMA verbs (an RDMA card, or soft-RoCE `rdma_rxe`); needs --host on the RDMA interface.
    Verbs,
    /// Verbs when an RDMA device exists, else tcp.
    Auto,
}

impl FabricKind {
    /// The address scheme of this fabric.
    pub fn scheme(self) -> &'static str {
        match self {
            FabricKind::Tcp => "tcp",
            FabricKind::Verbs => "verbs",
            FabricKind::Auto => "auto",
        }
    }
}

impl fmt::Display for FabricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// The metadata server of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdsEntry {
    /// Where it listens, e.g. `tcp://127.0.0.1:40123`.
    pub address: String,
    /// Its MDT device (an absolute path; a regular file for local clusters).
    pub device: PathBuf,
    /// The device size in bytes.
    pub size: u64,
    /// Where the failover partner listens (it reaches the same device); absent: no partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
}

/// One object storage target of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OstEntry {
    /// The OST index (0, 1, …), as given to `ostd mkfs --index`.
    pub index: u32,
    /// Where its `ostd` listens.
    pub address: String,
    /// Its device (an absolute path).
    pub device: PathBuf,
    /// The device size in bytes.
    pub size: u64,
    /// Where the failover partner's `ostd` listens (same device); absent: no partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
}

/// The whole local cluster, as `DIR/cluster.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Format version (currently 1).
    pub version: u32,
    /// The file system name given to every `mkfs`.
    pub fsname: String,
    /// The fabric every daemon listens on.
    pub fabric: FabricKind,
    /// The IP address every daemon listens on.
    pub host: String,
    /// The metadata server.
    pub mds: MdsEntry,
    /// The object storage targets, in index order.
    #[serde(rename = "ost")]
    pub osts: Vec<OstEntry>,
    /// Log level of the daemons (a `RUST_LOG` filter: `info`, `warn,ostd=debug`, …); `RUST_LOG`
    /// in a daemon's environment takes precedence. Absent: `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// MMP interval of every server in milliseconds (`--mmp-interval-ms`); absent: the
    /// daemons' default (1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmp_interval_ms: Option<u64>,
    /// The cluster secret file every daemon and client is given; absent: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<PathBuf>,
}

/// What a client needs to reach the cluster, as `DIR/client.toml` (the format libclient reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFile {
    /// The file system name.
    pub fsname: String,
    /// MDS addresses: the primary, then its failover partner.
    pub mds: Vec<String>,
    /// The cluster secret file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<PathBuf>,
}

impl ClusterFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ClusterFile, CliError> {
        let text = fs::read_to_string(path).map_err(CliError::io("read", path))?;
        let file: ClusterFile = toml::from_str(&text).map_err(|e| CliError::BadClusterFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        file.check().map_err(|reason| CliError::BadClusterFile {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(file)
    }

    /// Checks what serde cannot: version, names, index order.
    pub fn check(&self) -> Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "field `version`: {} is not supported (expected {FORMAT_VERSION})",
                self.version
            ));
        }
        check_fsname(&self.fsname).map_err(|e| format!("field `fsname`: {e}"))?;
        if let Some(level) = &self.log {
            check_log(level).map_err(|e| format!("field `log`: {e}"))?;
        }
        if self.osts.is_empty() {
            return Err("no [[ost]] entries: a cluster needs at least one OST".into());
        }
        for (i, ost) in self.osts.iter().enumerate() {
            if ost.index as usize != i {
                return Err(format!(
                    "[[ost]] number {} has index {}; indexes must be 0, 1, 2, … in order",
                    i + 1,
                    ost.index
                ));
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temporary file + rename), with a header comment.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let body = toml::to_string(self).map_err(|e| CliError::BadClusterFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let text = format!(
            "# rustre local cluster, written by `rustre cluster up` (format: cli/README.md).\n\
             # `rustre cluster status|down --data {}` read it.\n\n{body}",
            path.parent().unwrap_or(Path::new(".")).display()
        );
        write_atomic(path, text.as_bytes())
    }

    /// The client configuration for this cluster.
    pub fn client(&self) -> ClientFile {
        ClientFile {
            fsname: self.fsname.clone(),
            mds: std::iter::once(self.mds.address.clone())
                .chain(self.mds.failover.clone())
                .collect(),
            secret: self.secret.clone(),
        }
    }
}

impl ClientFile {
    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let body = toml::to_string(self).map_err(|e| CliError::BadClusterFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_atomic(
            path,
            format!("# rustre client configuration, written by `rustre cluster up`.\n{body}").as_bytes(),
        )
    }
}

/// A log level filter as `RUST_LOG` takes it (`info`, `warn,ostd=debug`).
pub fn check_log(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("empty; use error, warn, info, debug or trace".into());
    }
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .map(drop)
        .map_err(|e| format!("{level:?}: {e}"))
}

/// A file system name: 1..=8 ASCII letters, digits, `_` or `-` (Lustre's rule).
pub fn check_fsname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 8 {
        return Err(format!("{name:?} must be 1 to 8 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("{name:?} may hold only ASCII letters, digits, '_' and '-'"));
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    fs::write(&tmp, bytes).map_err(CliError::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(CliError::io("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterFile {
        ClusterFile {
            version: FORMAT_VERSION,
            fsname: "rustre".into(),
            fabric: FabricKind::Tcp,
            host: "127.0.0.1".into(),
            mds: MdsEntry {
                address: "tcp://127.0.0.1:4000".into(),
                device: "/d/mdt0.img".into(),
                size: 1 << 30,
                failover: None,
            },
            osts: (0..3)
                .map(|i| OstEntry {
                    index: i,
                    address: format!("tcp://127.0.0.1:{}", 4001 + i),
                    device: format!("/d/ost{i}.img").into(),
                    size: 4 << 30,
                    failover: None,
                })
                .collect(),
            log: None,
            mmp_interval_ms: None,
            secret: None,
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLUSTER_FILE);
        sample().save(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("[[ost]]"), "{text}");
        assert!(text.contains("fabric = \"tcp\""), "{text}");
        assert_eq!(ClusterFile::load(&path).unwrap(), sample());
    }

    #[test]
    fn names_the_bad_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLUSTER_FILE);
        let text = toml::to_string(&sample())
            .unwrap()
            .replace("fabric = \"tcp\"", "fabric = \"carrier-pigeon\"");
        fs::write(&path, text).unwrap();
        let err = ClusterFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("fabric") && err.contains("cluster.toml"), "{err}");

        let mut bad = sample();
        bad.osts[1].index = 7;
        fs::write(&path, toml::to_string(&bad).unwrap()).unwrap();
        let err = ClusterFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("index 7"), "{err}");

        let mut bad = sample();
        bad.fsname = "much-too-long".into();
        fs::write(&path, toml::to_string(&bad).unwrap()).unwrap();
        assert!(ClusterFile::load(&path).unwrap_err().to_string().contains("fsname"));
    }

    #[test]
    fn client_file_lists_the_mds() {
        let client = sample().client();
        assert_eq!(client.mds, vec!["tcp://127.0.0.1:4000".to_string()]);
        let text = toml::to_string(&client).unwrap();
        assert!(text.contains("mds = [\"tcp://127.0.0.1:4000\"]"), "{text}");
    }
}
