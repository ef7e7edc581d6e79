//! The rustre cluster file: one TOML file that `mdsd`, `ostd` and `rustre` read.
//!
//! ```toml
//! version = 1
//! fsname = "scratch"                # 1..=8 letters, digits, _ or -
//! fabric = "tcp"                    # tcp | verbs | auto
//! host = "127.0.0.1"                # listen IP of a local cluster (`rustre cluster up`)
//! log = "info"                      # daemons' log filter (RUST_LOG wins)
//! mmp_interval_ms = 1000            # MMP interval of every server
//! secret = "/etc/rustre/secret"     # cluster secret (mode 0600)
//!
//! [stripe]                          # default layout of the root directory
//! count = 1
//! size = 1048576
//!
//! [limits]                          # each optional; the daemons' flags of the same name
//! max_io = 4194304                  # ostd --max-io
//! ost_workers = 4                   # ostd --workers
//! ost_queue_depth = 64              # ostd --queue-depth
//! ost_buffers = 16                  # ostd --buffers
//! ost_queue = 64                    # ostd --queue
//! mds_batch_limit = 256             # mdsd --batch-limit
//! reply_cache_per_client = 64       # mdsd --reply-cache-per-client
//! reply_cache_clients = 4096        # mdsd --reply-cache-clients
//! precreate_batch = 4096            # mdsd --precreate-batch
//!
//! [mds]
//! address = "tcp://10.0.0.1:7000"
//! failover = "tcp://10.0.0.4:7000"  # optional partner on the same device
//! device = "/dev/nvme0n1"
//! size = 0                          # bytes of a file device to create; 0: the whole device
//! metrics = "10.0.0.1:9100"         # optional Prometheus endpoint (failover_metrics: partner's)
//!
//! [[ost]]
//! index = 0
//! address = "tcp://10.0.0.2:7001"
//! failover = "tcp://10.0.0.3:7002"
//! device = "/dev/nvme1n1"
//! ```
//!
//! [`ClusterFile::load`] checks everything [`check_text`] checks and names the file, line and
//! field of each mistake.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The name of the cluster file inside a local cluster's data directory.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// The name of the client configuration inside a local cluster's data directory.
pub const CLIENT_FILE: &str = "client.toml";
/// The version written into new cluster files.
pub const FORMAT_VERSION: u32 = 1;

/// Why a cluster file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// "read", "write", …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// It holds mistakes; each is shown as `FILE:LINE: field `F`: message`.
    #[error("{}", mistakes.iter().map(|m| m.show(path)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, in line order.
        mistakes: Vec<Mistake>,
    },
    /// A field a daemon needs is not in the file.
    #[error("{}: field `{field}`: {message}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The field, as `ost[2]` or `mds.failover`.
        field: String,
        /// What is missing and how to fix it.
        message: String,
    },
}

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

/// The metadata target and its server(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdsEntry {
    /// Where the primary server listens, e.g. `tcp://127.0.0.1:40123`.
    pub address: String,
    /// The MDT device (an absolute path; a regular file for local clusters).
    pub device: PathBuf,
    /// The device size in bytes (of the file `mkfs --size` creates); 0: not recorded.
    #[serde(default)]
    pub size: u64,
    /// Where the failover partner listens (it reaches the same device); absent: no partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// The primary server's Prometheus endpoint (IP:PORT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// The failover partner's Prometheus endpoint (IP:PORT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_metrics: Option<SocketAddr>,
}

/// One object storage target and its server(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OstEntry {
    /// The OST index (0, 1, …), as given to `ostd mkfs --index`.
    pub index: u32,
    /// Where its primary `ostd` listens.
    pub address: String,
    /// Its device (an absolute path).
    pub device: PathBuf,
    /// The device size in bytes; 0: not recorded.
    #[serde(default)]
    pub size: u64,
    /// Where the failover partner's `ostd` listens (same device); absent: no partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// The primary server's Prometheus endpoint (IP:PORT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// The failover partner's Prometheus endpoint (IP:PORT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_metrics: Option<SocketAddr>,
}

/// The default layout of new files (set on the root directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeDefaults {
    /// OSTs per file; -1: every OST.
    pub count: i32,
    /// Bytes per stripe chunk: a multiple of 64 KiB.
    pub size: u64,
}

/// Bounds and sizes the daemons take as flags; absent ones keep the daemons' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest I/O of one OST request in bytes (`ostd --max-io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_io: Option<u64>,
    /// Worker threads of each `ostd` (`--workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ost_workers: Option<usize>,
    /// io_uring queue depth of each `ostd` worker (`--queue-depth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ost_queue_depth: Option<u32>,
    /// Bulk buffers of each `ostd` (`--buffers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ost_buffers: Option<usize>,
    /// Requests queued for the `ostd` workers (`--queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ost_queue: Option<usize>,
    /// Requests the MDS handles per loop turn (`mdsd --batch-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mds_batch_limit: Option<usize>,
    /// Replies kept per client (`mdsd --reply-cache-per-client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_cache_per_client: Option<usize>,
    /// Clients kept in the reply cache (`mdsd --reply-cache-clients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_cache_clients: Option<usize>,
    /// Objects asked per OST precreate (`mdsd --precreate-batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precreate_batch: Option<u32>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}

/// The whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Format version (currently 1).
    pub version: u32,
    /// The file system name given to every `mkfs`.
    pub fsname: String,
    /// The fabric every daemon listens on.
    #[serde(default)]
    pub fabric: FabricKind,
    /// The IP address the daemons of a local cluster listen on.
    #[serde(default = "default_host")]
    pub host: String,
    /// Log level of the daemons (a `RUST_LOG` filter: `info`, `warn,ostd=debug`, …); `RUST_LOG`
    /// in a daemon's environment takes precedence. Absent: `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// MMP interval of every server in milliseconds; absent: the daemons' default (1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmp_interval_ms: Option<u64>,
    /// The cluster secret file every daemon and client is given; absent: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<PathBuf>,
    /// Default layout of new files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeDefaults>,
    /// The daemons' bounds.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// The metadata target.
    pub mds: MdsEntry,
    /// The object storage targets, in index order.
    #[serde(rename = "ost")]
    pub osts: Vec<OstEntry>,
}

/// What a client needs to reach the cluster (the format librustre reads).
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
    /// Reads and checks `path`: every mistake is reported with its line and field.
    pub fn load(path: &Path) -> Result<ClusterFile, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        ClusterFile::parse(&text, path)
    }

    /// Checks and parses `text`, read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<ClusterFile, ConfigError> {
        let invalid = |mistakes| ConfigError::Invalid {
            path: path.to_path_buf(),
            mistakes,
        };
        let mistakes = check_text(text);
        if !mistakes.is_empty() {
            return Err(invalid(mistakes));
        }
        toml::from_str(text).map_err(|e| {
            invalid(vec![Mistake {
                line: 0,
                column: 0,
                field: String::new(),
                message: e.message().trim().to_string(),
            }])
        })
    }

    /// Writes the file atomically (temporary file + rename) under a header comment.
    pub fn save(&self, path: &Path, header: &str) -> Result<(), ConfigError> {
        let body = toml::to_string(self).map_err(|e| ConfigError::Io {
            action: "encode",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(path, format!("{header}{body}").as_bytes())
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

    /// OST `index`, or an error naming the file.
    pub fn ost(&self, index: u32, path: &Path) -> Result<&OstEntry, ConfigError> {
        self.osts
            .iter()
            .find(|o| o.index == index)
            .ok_or_else(|| ConfigError::Missing {
                path: path.to_path_buf(),
                field: format!("ost[{index}]"),
                message: format!("no [[ost]] with index {index} (the file has {})", self.osts.len()),
            })
    }

    /// The `--ost INDEX=ADDRESS[,FAILOVER]` values the MDS is given.
    pub fn ost_lists(&self) -> Vec<String> {
        self.osts
            .iter()
            .map(|o| {
                let list: Vec<&str> = std::iter::once(o.address.as_str())
                    .chain(o.failover.as_deref())
                    .collect();
                format!("{}={}", o.index, list.join(","))
            })
            .collect()
    }
}

/// The listen address (and metrics endpoint) of one server: the primary's, or with `partner`
/// the failover partner's, or an error naming the missing field.
pub fn server_address<'a>(
    path: &Path,
    field: &str,
    address: &'a str,
    failover: Option<&'a str>,
    partner: bool,
) -> Result<&'a str, ConfigError> {
    if !partner {
        return Ok(address);
    }
    failover.ok_or_else(|| ConfigError::Missing {
        path: path.to_path_buf(),
        field: format!("{field}.failover"),
        message: "--partner needs the failover partner's address here".into(),
    })
}

impl ClientFile {
    /// Writes the file atomically.
    pub fn save(&self, path: &Path, header: &str) -> Result<(), ConfigError> {
        let body = toml::to_string(self).map_err(|e| ConfigError::Io {
            action: "encode",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(path, format!("{header}{body}").as_bytes())
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

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { action, path, source }
    };
    fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into place", path))
}

/// One mistake in a cluster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mistake {
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// 1-based column (0: unknown).
    pub column: usize,
    /// The field, as `ost[1].address` (empty when not known).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Mistake {
    /// `FILE:LINE:COL: field `F`: message`, the way `rustre config check` prints it.
    pub fn show(&self, file: &Path) -> String {
        let field = if self.field.is_empty() {
            String::new()
        } else {
            format!(" field `{}`:", self.field)
        };
        let at = match (self.line, self.column) {
            (0, _) => String::new(),
            (l, 0) => format!("{l}:"),
            (l, c) => format!("{l}:{c}:"),
        };
        format!("{}:{at}{field} {}", file.display(), self.message)
    }
}

/// Where a key sits: the top level, `[mds]`, the n-th `[[ost]]` (0-based), `[stripe]`, `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Root,
    Mds,
    Ost(usize),
    Stripe,
    Limits,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, col)
}

/// The line of `key` in `section` (the section's first line when the key is absent, 0 when the
/// section is).
fn line_of(text: &str, section: Section, key: &str) -> usize {
    let mut cur = Section::Root;
    let mut osts = 0;
    let mut section_line = 0;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with("[[ost]]") {
            cur = Section::Ost(osts);
            osts += 1;
        } else if t.starts_with("[mds]") {
            cur = Section::Mds;
        } else if t.starts_with("[stripe]") {
            cur = Section::Stripe;
        } else if t.starts_with("[limits]") {
            cur = Section::Limits;
        } else if t.starts_with('[') {
            cur = Section::Root;
            continue;
        }
        if cur == section && section_line == 0 {
            section_line = i + 1;
        }
        if cur == section && t.split('=').next().map(str::trim) == Some(key) && t.contains('=') {
            return i + 1;
        }
    }
    section_line
}

/// Checks the text of a cluster file; an empty list means it is good.
pub fn check_text(text: &str) -> Vec<Mistake> {
    let file: ClusterFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            let field = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .unwrap_or_default();
            return vec![Mistake {
                line,
                column,
                field,
                message: e.message().trim().to_string(),
            }];
        }
    };
    let mut out = Vec::new();
    let mut bad = |section: Section, key: &str, field: String, message: String| {
        out.push(Mistake {
            line: line_of(text, section, key),
            column: 0,
            field,
            message,
        });
    };
    if file.version != FORMAT_VERSION {
        bad(
            Section::Root,
            "version",
            "version".into(),
            format!("{} is not supported (expected {FORMAT_VERSION})", file.version),
        );
    }
    if let Err(e) = check_fsname(&file.fsname) {
        bad(Section::Root, "fsname", "fsname".into(), e);
    }
    if let Some(level) = &file.log
        && let Err(e) = check_log(level)
    {
        bad(Section::Root, "log", "log".into(), e);
    }
    if file.mmp_interval_ms == Some(0) || file.mmp_interval_ms.is_some_and(|m| m > 60_000) {
        bad(
            Section::Root,
            "mmp_interval_ms",
            "mmp_interval_ms".into(),
            "must be 1 to 60000 milliseconds".into(),
        );
    }
    if let Some(s) = &file.secret
        && !s.is_absolute()
    {
        bad(
            Section::Root,
            "secret",
            "secret".into(),
            format!("{:?} is not an absolute path", s.display().to_string()),
        );
    }
    if let Some(s) = &file.stripe {
        if s.count == 0 || s.count < -1 {
            bad(
                Section::Stripe,
                "count",
                "stripe.count".into(),
                format!("{}: use 1 or more, or -1 for every OST", s.count),
            );
        }
        if s.count > 0 && s.count as usize > file.osts.len() {
            bad(
                Section::Stripe,
                "count",
                "stripe.count".into(),
                format!("{}: the file names only {} OSTs", s.count, file.osts.len()),
            );
        }
        if s.size == 0 || !s.size.is_multiple_of(64 << 10) || s.size > u64::from(u32::MAX) {
            bad(
                Section::Stripe,
                "size",
                "stripe.size".into(),
                format!("{}: must be a multiple of 64 KiB (65536), below 4 GiB", s.size),
            );
        }
    }
    let l = &file.limits;
    for (key, value) in [
        ("max_io", l.max_io),
        ("ost_workers", l.ost_workers.map(|v| v as u64)),
        ("ost_queue_depth", l.ost_queue_depth.map(u64::from)),
        ("ost_buffers", l.ost_buffers.map(|v| v as u64)),
        ("ost_queue", l.ost_queue.map(|v| v as u64)),
        ("mds_batch_limit", l.mds_batch_limit.map(|v| v as u64)),
        ("reply_cache_per_client", l.reply_cache_per_client.map(|v| v as u64)),
        ("reply_cache_clients", l.reply_cache_clients.map(|v| v as u64)),
        ("precreate_batch", l.precreate_batch.map(u64::from)),
    ] {
        if value == Some(0) {
            bad(
                Section::Limits,
                key,
                format!("limits.{key}"),
                "0: a bound must be at least 1".into(),
            );
        }
    }
    if l.max_io.is_some_and(|m| !m.is_multiple_of(4096) || m > 64 << 20) {
        bad(
            Section::Limits,
            "max_io",
            "limits.max_io".into(),
            "must be a multiple of 4096, at most 64 MiB".into(),
        );
    }
    if file.osts.is_empty() {
        bad(
            Section::Root,
            "",
            "ost".into(),
            "no [[ost]] entries: a cluster needs at least one OST".into(),
        );
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let scheme = match file.fabric {
        FabricKind::Auto => None,
        f => Some(format!("{}://", f.scheme())),
    };
    let mut address =
        |section: Section, key: &str, field: String, addr: &str, bad: &mut dyn FnMut(Section, &str, String, String)| {
            if let Err(e) = addr.parse::<rustre_fabric::Address>() {
                bad(section, key, field.clone(), format!("{addr:?}: {e}"));
            } else if let Some(s) = &scheme
                && !addr.starts_with(s.as_str())
            {
                bad(
                    section,
                    key,
                    field.clone(),
                    format!("{addr:?} is not on the {} fabric the file names", file.fabric),
                );
            }
            if let Some(other) = seen.insert(addr.to_string(), field.clone()) {
                bad(section, key, field, format!("{addr:?} is also {other}'s address"));
            }
        };
    address(
        Section::Mds,
        "address",
        "mds.address".into(),
        &file.mds.address,
        &mut bad,
    );
    if let Some(f) = &file.mds.failover {
        address(Section::Mds, "failover", "mds.failover".into(), f, &mut bad);
    }
    // Devices are per node: the same path on two hosts is two devices.
    let node = |addr: &str| -> String {
        let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
        rest.rsplit_once(':').map_or(rest, |(h, _)| h).to_string()
    };
    let mut devices: Vec<(String, String, Section)> = vec![(
        format!("{}:{}", node(&file.mds.address), file.mds.device.display()),
        "mds.device".into(),
        Section::Mds,
    )];
    for (i, o) in file.osts.iter().enumerate() {
        let s = Section::Ost(i);
        if o.index as usize != i {
            bad(
                s,
                "index",
                format!("ost[{i}].index"),
                format!("{}: indexes must be 0, 1, 2, … in order (expected {i})", o.index),
            );
        }
        address(s, "address", format!("ost[{i}].address"), &o.address, &mut bad);
        if let Some(f) = &o.failover {
            address(s, "failover", format!("ost[{i}].failover"), f, &mut bad);
        }
        devices.push((
            format!("{}:{}", node(&o.address), o.device.display()),
            format!("ost[{i}].device"),
            s,
        ));
    }
    for (i, (dev, field, s)) in devices.iter().enumerate() {
        let (host, path) = dev.split_once(':').unwrap_or(("", dev));
        if !path.starts_with('/') {
            bad(*s, "device", field.clone(), format!("{path:?} is not an absolute path"));
        }
        if let Some((_, other, _)) = devices[..i].iter().find(|(d, ..)| d == dev) {
            bad(
                *s,
                "device",
                field.clone(),
                format!("{path:?} on {host} is also {other}"),
            );
        }
    }
    let mut metrics: HashMap<SocketAddr, String> = HashMap::new();
    let endpoints = [
        (Section::Mds, "metrics", "mds.metrics".to_string(), file.mds.metrics),
        (
            Section::Mds,
            "failover_metrics",
            "mds.failover_metrics".to_string(),
            file.mds.failover_metrics,
        ),
    ]
    .into_iter()
    .chain(file.osts.iter().enumerate().flat_map(|(i, o)| {
        [
            (Section::Ost(i), "metrics", format!("ost[{i}].metrics"), o.metrics),
            (
                Section::Ost(i),
                "failover_metrics",
                format!("ost[{i}].failover_metrics"),
                o.failover_metrics,
            ),
        ]
    }));
    for (s, key, field, addr) in endpoints {
        let Some(addr) = addr else { continue };
        if addr.port() != 0
            && let Some(other) = metrics.insert(addr, field.clone())
        {
            bad(s, key, field, format!("{addr} is also {other}"));
        }
    }
    out.sort_by_key(|m| m.line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"version = 1
fsname = "scratch"
fabric = "tcp"
host = "10.0.0.1"

[mds]
address = "tcp://10.0.0.1:7000"
device = "/dev/nvme0n1"
size = 1073741824

[[ost]]
index = 0
address = "tcp://10.0.0.2:7001"
device = "/dev/nvme1n1"
size = 4294967296

[[ost]]
index = 1
address = "tcp://10.0.0.3:7001"
device = "/dev/nvme1n1"
size = 4294967296
"#;

    const FULL: &str = r#"version = 1
fsname = "scratch"
fabric = "tcp"
log = "info,ostd=debug"
mmp_interval_ms = 500
secret = "/etc/rustre/secret"

[stripe]
count = 2
size = 1048576

[limits]
max_io = 4194304
ost_workers = 8
mds_batch_limit = 128

[mds]
address = "tcp://10.0.0.1:7000"
failover = "tcp://10.0.0.2:7000"
device = "/dev/nvme0n1"
metrics = "10.0.0.1:9100"

[[ost]]
index = 0
address = "tcp://10.0.0.2:7001"
failover = "tcp://10.0.0.3:7002"
device = "/dev/nvme1n1"
metrics = "10.0.0.2:9101"

[[ost]]
index = 1
address = "tcp://10.0.0.3:7001"
failover = "tcp://10.0.0.2:7002"
device = "/dev/nvme2n1"
"#;

    #[test]
    fn good_files_have_no_mistakes() {
        assert_eq!(check_text(GOOD), []);
        assert_eq!(check_text(FULL), []);
        let f = ClusterFile::parse(FULL, Path::new("c.toml")).unwrap();
        assert_eq!(f.limits.ost_workers, Some(8));
        assert_eq!(
            f.stripe,
            Some(StripeDefaults {
                count: 2,
                size: 1 << 20
            })
        );
        assert_eq!(f.host, "127.0.0.1");
        assert_eq!(
            f.ost_lists(),
            [
                "0=tcp://10.0.0.2:7001,tcp://10.0.0.3:7002",
                "1=tcp://10.0.0.3:7001,tcp://10.0.0.2:7002"
            ]
        );
        assert_eq!(f.client().mds, ["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"]);
        let e = f.ost(5, Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("ost[5]"), "{e}");
    }

    #[test]
    fn round_trips_through_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLUSTER_FILE);
        let f = ClusterFile::parse(FULL, &path).unwrap();
        f.save(&path, "# header\n").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# header\n") && text.contains("[[ost]]"), "{text}");
        assert_eq!(ClusterFile::load(&path).unwrap(), f);
    }

    #[test]
    fn syntax_and_type_mistakes_carry_line_and_field() {
        let t = GOOD.replace("size = 1073741824", "size = \"1G\"");
        let m = check_text(&t);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!((m[0].line, m[0].field.as_str()), (9, "size"), "{m:?}");
        let t = GOOD.replace("fabric = \"tcp\"", "fabrik = \"tcp\"");
        let m = check_text(&t);
        assert_eq!(m[0].line, 3, "{m:?}");
        assert!(m[0].message.contains("fabrik"), "{m:?}");
        let m = check_text("version = 1\nfsname = \n");
        assert_eq!(m[0].line, 2, "{m:?}");
        let e = ClusterFile::parse(&t, Path::new("/etc/rustre/cluster.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/rustre/cluster.toml:3:"), "{e}");
    }

    #[test]
    fn semantic_mistakes_are_all_reported_with_their_lines() {
        let t = GOOD
            .replace("index = 1", "index = 2")
            .replace("tcp://10.0.0.3:7001", "tcp://10.0.0.2:7001")
            .replace("fsname = \"scratch\"", "fsname = \"much-too-long\"")
            .replacen("device = \"/dev/nvme1n1\"", "device = \"nvme1n1\"", 1);
        let m = check_text(&t);
        let got: Vec<(usize, &str)> = m.iter().map(|m| (m.line, m.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "fsname"),
                (14, "ost[0].device"),
                (18, "ost[1].index"),
                (19, "ost[1].address")
            ],
            "{m:?}"
        );
        assert!(m[3].message.contains("ost[0].address"), "{m:?}");
        let t = GOOD.replace("tcp://10.0.0.3:7001", "tcp://10.0.0.2:7002");
        let m = check_text(&t);
        assert_eq!((m[0].line, m[0].field.as_str()), (20, "ost[1].device"), "{m:?}");
        let t = GOOD.replace("host = \"10.0.0.1\"", "host = \"10.0.0.1\"\nlog = \"info,ostd=loud\"");
        let m = check_text(&t);
        assert_eq!((m[0].line, m[0].field.as_str()), (5, "log"), "{m:?}");
        let t = GOOD.replace("tcp://10.0.0.3:7001", "verbs://10.0.0.3:7001");
        let m = check_text(&t);
        assert_eq!((m[0].line, m[0].field.as_str()), (19, "ost[1].address"), "{m:?}");
    }

    #[test]
    fn new_sections_name_their_mistakes() {
        let t = FULL
            .replace("count = 2", "count = 3")
            .replace("size = 1048576", "size = 1000")
            .replace("ost_workers = 8", "ost_workers = 0")
            .replace(
                "failover = \"tcp://10.0.0.3:7002\"",
                "failover = \"tcp://10.0.0.2:7000\"",
            )
            .replace("metrics = \"10.0.0.2:9101\"", "metrics = \"10.0.0.1:9100\"")
            .replace("mmp_interval_ms = 500", "mmp_interval_ms = 0")
            .replace("secret = \"/etc/rustre/secret\"", "secret = \"secret\"");
        let m = check_text(&t);
        let got: Vec<(usize, &str)> = m.iter().map(|m| (m.line, m.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (5, "mmp_interval_ms"),
                (6, "secret"),
                (9, "stripe.count"),
                (10, "stripe.size"),
                (14, "limits.ost_workers"),
                (26, "ost[0].failover"),
                (28, "ost[0].metrics"),
            ],
            "{m:?}"
        );
        assert!(m[5].message.contains("mds.failover"), "{m:?}");
        let t = FULL.replace("[limits]", "[limits]\nmax_inflight = 3");
        let m = check_text(&t);
        assert_eq!((m[0].line, m[0].field.as_str()), (13, "max_inflight"), "{m:?}");
    }
}
