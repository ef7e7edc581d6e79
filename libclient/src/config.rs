//! Client configuration: a TOML file (as written by `rustre cluster up`) or an address string.
//!
//! ```toml
//! fsname = "rustre"                       # optional; checked against the MDS's answer
//! mds = ["tcp://127.0.0.1:7000"]          # active MDS first, then standbys
//! secret = "secret"                       # optional cluster secret file (mode 0600; relative
//!                                         # to this file's directory); authenticates connections
//!
//! [client]                                # optional, every key optional
//! max_rpc_bytes = 1048576                 # largest bulk of one OST read/write RPC
//! max_inflight_per_ost = 8                # bulk RPCs in flight to one OST (whole client)
//! max_io_threads = 64                     # threads one read or write may use
//! max_open_files = 65536                  # open file and directory handles
//! readdir_page = 256                      # entries asked per readdir RPC
//! call_timeout_ms = 30000                 # one RPC's deadline
//! connect_timeout_ms = 5000               # one connection attempt's deadline
//! write_behind_bytes = 0                  # 0: a write returns once the OSTs acknowledged it;
//!                                         # else writes of up to one RPC return once copied,
//!                                         # at most this many bytes pending (see `behind`)
//! read_ahead_bytes = 0                    # 0: every read asks the OSTs; else strided reads
//!                                         # of small records fetch ahead, at most this many
//!                                         # bytes held (see `ahead`)
//! ```
//!
//! An address string is one or more fabric addresses separated by commas,
//! `tcp://10.0.0.1:7000,tcp://10.0.0.2:7000`; the limits then take their defaults.

use crate::error::{ClientError, Result};
use rustre_fabric::Address;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Largest bulk of one RPC the client ever asks for (the fabric's frame limit is 4 MiB + 64 KiB).
pub const MAX_RPC_BYTES: u32 = 4 << 20;
/// Upper bound of `max_inflight_per_ost`.
pub const MAX_INFLIGHT_PER_OST: u32 = 64;
/// Upper bound of `max_open_files`.
pub const MAX_OPEN_FILES: u32 = 1 << 20;
/// Upper bound of `readdir_page`.
pub const MAX_READDIR_PAGE: u32 = 4096;
/// Upper bound of `write_behind_bytes`.
pub const MAX_WRITE_BEHIND_BYTES: u64 = 1 << 30;
/// Upper bound of `read_ahead_bytes`.
pub const MAX_READ_AHEAD_BYTES: u64 = 1 << 30;

/// Limits of one client. Every queue and table of the client is bounded by these.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimits {
    /// Largest bulk of one OST read/write RPC (64 KiB ..= 4 MiB, a multiple of 4 KiB).
    pub max_rpc_bytes: u32,
    /// Bulk RPCs in flight to one OST from this client, all threads together (1..=64).
    pub max_inflight_per_ost: u32,
    /// Threads one read or write may run at once (1..=1024).
    pub max_io_threads: u32,
    /// Open files and directories at once (1..=2^20).
    pub max_open_files: u32,
    /// Directory entries asked for per readdir RPC (1..=4096).
    pub readdir_page: u32,
    /// Deadline of one RPC, in milliseconds.
    pub call_timeout_ms: u64,
    /// Deadline of one connection attempt, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Write-behind: bytes of writes that returned to the caller before the OSTs acknowledged
    /// them, at most (0: off, every write returns acknowledged; else 64 KiB..=1 GiB). Errors of
    /// such writes are reported by the handle's next write, its fsync and its close.
    pub write_behind_bytes: u64,
    /// Read-ahead: bytes of records fetched ahead of strided small reads that the client's
    /// handles hold at most (0: off, every read asks the OSTs; else 64 KiB..=1 GiB). A window
    /// shows other clients' writes made after it was filled only once emptied (`fsync`,
    /// `close`, a read off the pattern).
    pub read_ahead_bytes: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_rpc_bytes: 1 << 20,
            max_inflight_per_ost: 8,
            max_io_threads: 64,
            max_open_files: 65536,
            readdir_page: 256,
            call_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            write_behind_bytes: 0,
            read_ahead_bytes: 0,
        }
    }
}

/// A client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Expected file system name (`None`: accept what the MDS says).
    pub fsname: Option<String>,
    /// MDS addresses, active first.
    pub mds: Vec<Address>,
    /// Limits.
    pub limits: ClientLimits,
    /// Cluster secret: every connection then runs the authenticated handshake (`None`: plain
    /// handshake, for clusters without `--secret`).
    pub secret: Option<rustre_proto::auth::ClusterSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    fsname: Option<String>,
    mds: Vec<String>,
    secret: Option<std::path::PathBuf>,
    #[serde(default)]
    client: ClientLimits,
}

impl ClientConfig {
    /// A configuration from a config file path or an address string (anything containing `://`).
    pub fn from_spec(spec: &str) -> Result<Self> {
        if spec.contains("://") {
            Self::from_addresses(spec)
        } else {
            Self::from_file(Path::new(spec))
        }
    }

    /// Parses a comma-separated list of MDS addresses.
    pub fn from_addresses(list: &str) -> Result<Self> {
        let bad = |reason: String| ClientError::Config {
            source_name: format!("address string {list:?}"),
            reason,
        };
        let mds = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Address>().map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let cfg = Self {
            fsname: None,
            mds,
            limits: ClientLimits::default(),
            secret: None,
        };
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ClientError::Config {
            source_name: name.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &name, path.parent())
    }

    /// Parses TOML text; `name` names it in errors.
    pub fn from_toml(text: &str, name: &str) -> Result<Self> {
        Self::parse(text, name, None)
    }

    /// Parses TOML text; a relative `secret` path is taken from `base` when given.
    fn parse(text: &str, name: &str, base: Option<&Path>) -> Result<Self> {
        let bad = |reason: String| ClientError::Config {
            source_name: name.to_string(),
            reason,
        };
        let file: ConfigFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mds = file
            .mds
            .iter()
            .map(|s| s.parse::<Address>().map_err(|e| bad(format!("mds: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let secret = match &file.secret {
            Some(p) => {
                let p = match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p.clone(),
                };
                Some(rustre_proto::auth::ClusterSecret::load(&p).map_err(|e| bad(format!("secret: {e}")))?)
            }
            None => None,
        };
        let cfg = Self {
            fsname: file.fsname,
            mds,
            limits: file.client,
            secret,
        };
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let l = &self.limits;
        if self.mds.is_empty() {
            return Err("mds: at least one MDS address is needed".into());
        }
        if self.mds.len() > 16 {
            return Err(format!("mds: {} addresses, at most 16", self.mds.len()));
        }
        if let Some(f) = &self.fsname
            && (f.is_empty() || f.len() > 64)
        {
            return Err(format!("fsname: {f:?} must be 1..=64 bytes"));
        }
        if !(64 * 1024..=MAX_RPC_BYTES).contains(&l.max_rpc_bytes) || !l.max_rpc_bytes.is_multiple_of(4096) {
            return Err(format!(
                "client.max_rpc_bytes: {} must be a multiple of 4096 in 65536..={MAX_RPC_BYTES}",
                l.max_rpc_bytes
            ));
        }
        if !(1..=MAX_INFLIGHT_PER_OST).contains(&l.max_inflight_per_ost) {
            return Err(format!(
                "client.max_inflight_per_ost: {} must be in 1..={MAX_INFLIGHT_PER_OST}",
                l.max_inflight_per_ost
            ));
        }
        if !(1..=1024).contains(&l.max_io_threads) {
            return Err(format!(
                "client.max_io_threads: {} must be in 1..=1024",
                l.max_io_threads
            ));
        }
        if !(1..=MAX_OPEN_FILES).contains(&l.max_open_files) {
            return Err(format!(
                "client.max_open_files: {} must be in 1..={MAX_OPEN_FILES}",
                l.max_open_files
            ));
        }
        if !(1..=MAX_READDIR_PAGE).contains(&l.readdir_page) {
            return Err(format!(
                "client.readdir_page: {} must be in 1..={MAX_READDIR_PAGE}",
                l.readdir_page
            ));
        }
        if l.write_behind_bytes != 0 && !(64 * 1024..=MAX_WRITE_BEHIND_BYTES).contains(&l.write_behind_bytes) {
            return Err(format!(
                "client.write_behind_bytes: {} must be 0 (off) or in 65536..={MAX_WRITE_BEHIND_BYTES}",
                l.write_behind_bytes
            ));
        }
        if l.read_ahead_bytes != 0 && !(64 * 1024..=MAX_READ_AHEAD_BYTES).contains(&l.read_ahead_bytes) {
            return Err(format!(
                "client.read_ahead_bytes: {} must be 0 (off) or in 65536..={MAX_READ_AHEAD_BYTES}",
                l.read_ahead_bytes
            ));
        }
        if l.call_timeout_ms == 0 || l.connect_timeout_ms == 0 {
            return Err("client.call_timeout_ms and client.connect_timeout_ms must be non-zero".into());
        }
        Ok(())
    }

    /// The call deadline.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.call_timeout_ms)
    }

    /// The connect deadline.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutated_config_files_parse_or_fail_cleanly() {
        let base = "fsname = \"demo\"\nmds = [\"tcp://127.0.0.1:7000\", \"sim://mds1\"]\n\
                    [client]\nmax_rpc_bytes = 1048576\nmax_inflight_per_ost = 4\nreaddir_page = 256\n";
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..2_000 {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[at] = next() as u8,
                    1 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, b"\"[]=,.#9-\n"[(next() % 10) as usize]),
                }
            }
            let text = String::from_utf8_lossy(&b);
            match std::panic::catch_unwind(|| ClientConfig::from_toml(&text, "fuzz.toml")) {
                Ok(Ok(c)) => {
                    assert!(!c.mds.is_empty() && c.limits.max_rpc_bytes <= MAX_RPC_BYTES);
                    ok += 1;
                }
                Ok(Err(e)) => {
                    assert!(e.to_string().contains("fuzz.toml"), "{e}");
                    bad += 1;
                }
                Err(_) => panic!("config parser panicked on {text:?}"),
            }
        }
        assert!(ok > 0 && bad > 0, "{ok} parsed, {bad} refused");
    }

    #[test]
    fn secret_is_loaded_relative_to_the_file_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let secret = rustre_proto::auth::ClusterSecret::generate(32).unwrap();
        let sp = d.path().join("secret");
        std::fs::write(&sp, secret.to_file_text()).unwrap();
        std::fs::set_permissions(&sp, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cp = d.path().join("client.toml");
        std::fs::write(&cp, "mds = [\"tcp://127.0.0.1:7000\"]\nsecret = \"secret\"\n").unwrap();
        assert_eq!(ClientConfig::from_file(&cp).unwrap().secret, Some(secret));
        std::fs::set_permissions(&sp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClientConfig::from_file(&cp).unwrap_err().to_string();
        assert!(
            e.contains("client.toml") && e.contains("secret") && e.contains("chmod 600"),
            "{e}"
        );
        assert!(
            ClientConfig::from_toml("mds = [\"tcp://127.0.0.1:7000\"]\n", "t")
                .unwrap()
                .secret
                .is_none()
        );
    }

    #[test]
    fn parses_a_cluster_config() {
        let c = ClientConfig::from_toml(
            "fsname = \"demo\"\nmds = [\"tcp://127.0.0.1:7000\", \"sim://mds1\"]\n[client]\nmax_inflight_per_ost = 4\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.fsname.as_deref(), Some("demo"));
        assert_eq!(c.mds.len(), 2);
        assert_eq!(c.limits.max_inflight_per_ost, 4);
        assert_eq!(c.limits.max_rpc_bytes, 1 << 20);
    }

    #[test]
    fn address_strings() {
        let c = ClientConfig::from_spec("tcp://127.0.0.1:1, tcp://127.0.0.1:2").unwrap();
        assert_eq!(c.mds.len(), 2);
        assert!(c.fsname.is_none());
        let e = ClientConfig::from_spec("udp://1.2.3.4:5").unwrap_err().to_string();
        assert!(e.contains("unknown scheme"), "{e}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (text, needle) in [
            ("mds = []", "at least one"),
            (
                "mds = [\"tcp://127.0.0.1:1\"]\n[client]\nmax_rpc_bytes = 100",
                "max_rpc_bytes",
            ),
            (
                "mds = [\"tcp://127.0.0.1:1\"]\n[client]\nmax_inflight_per_ost = 0",
                "max_inflight_per_ost",
            ),
            (
                "mds = [\"tcp://127.0.0.1:1\"]\n[client]\nwrite_behind_bytes = 4096",
                "write_behind_bytes",
            ),
            (
                "mds = [\"tcp://127.0.0.1:1\"]\n[client]\nread_ahead_bytes = 2147483648",
                "read_ahead_bytes",
            ),
            ("mds = [\"tcp://127.0.0.1:1\"]\n[client]\nbogus = 1", "bogus"),
            ("fsname = 3", "fsname"),
        ] {
            let e = ClientConfig::from_toml(text, "x.toml").unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("x.toml"), "{text}: {e}");
        }
        let e = ClientConfig::from_spec("/nonexistent/rustre.toml").unwrap_err();
        assert_eq!(e.errno(), 22);
        assert!(e.to_string().contains("/nonexistent/rustre.toml"));
    }
}
