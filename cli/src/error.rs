//! The errors of the `rustre` tool, each naming the file, daemon, port or option at fault.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while running a local cluster or its workload.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file or directory operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done: "create", "read", "write", …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The cluster file does not parse or holds an impossible value.
    #[error("{}: {reason}", path.display())]
    BadClusterFile {
        /// The cluster file.
        path: PathBuf,
        /// The parser's message (names the line and field).
        reason: String,
    },
    /// `up` was asked for a cluster whose daemons already run.
    #[error(
        "the cluster in {} is already running ({running}); stop it first with `rustre cluster down --data {}`",
        dir.display(),
        dir.display()
    )]
    AlreadyRunning {
        /// The data directory.
        dir: PathBuf,
        /// The daemons found alive, as `name pid N`.
        running: String,
    },
    /// `status` was asked about a directory that holds no cluster.
    #[error("no cluster in {}: {} does not exist (`rustre cluster up --data {}` creates one)", dir.display(), file.display(), dir.display())]
    NoCluster {
        /// The data directory.
        dir: PathBuf,
        /// The cluster file that is missing.
        file: PathBuf,
    },
    /// A daemon binary is neither next to `rustre` nor on PATH.
    #[error(
        "cannot find the `{name}` binary: looked in {searched}; build it with `cargo build --release -p rustre-{name}` \
         (or set RUSTRE_BIN_DIR to the directory holding it)"
    )]
    MissingBinary {
        /// `ostd` or `mdsd`.
        name: &'static str,
        /// The places looked at.
        searched: String,
    },
    /// A chosen port cannot be bound.
    #[error("port {port} on {host} for {daemon} is in use ({source}); choose another --base-port")]
    PortInUse {
        /// The host address.
        host: String,
        /// The port.
        port: u16,
        /// Which daemon it was meant for.
        daemon: String,
        /// Why the bind failed.
        #[source]
        source: io::Error,
    },
    /// The OS would not give out a free port.
    #[error("cannot find a free port on {host}")]
    NoFreePort {
        /// The host address.
        host: String,
        /// Why the bind failed.
        #[source]
        source: io::Error,
    },
    /// The data directory holds a cluster that differs from what was asked for.
    #[error("{} holds a cluster with {what} {existing}, but {requested} was asked for; {hint}", dir.display())]
    Mismatch {
        /// The data directory.
        dir: PathBuf,
        /// What differs ("OST count", "file system name", …).
        what: &'static str,
        /// What the directory holds.
        existing: String,
        /// What was asked for.
        requested: String,
        /// How to get out of it.
        hint: &'static str,
    },
    /// The data directory holds part of a cluster (an MDT without OSTs or the reverse).
    #[error("{} holds {has} but not {missing}: a partial cluster; move the directory away to start afresh", dir.display())]
    PartialCluster {
        /// The data directory.
        dir: PathBuf,
        /// What is there.
        has: String,
        /// What is missing.
        missing: String,
    },
    /// An option value is out of range.
    #[error("{option} {value}: {reason}")]
    BadOption {
        /// The option, e.g. `--osts`.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// A daemon or mkfs could not be started.
    #[error("cannot start {}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `mkfs` of a device failed.
    #[error("formatting {daemon} failed ({status}); log {}:\n{tail}", log.display())]
    Mkfs {
        /// `mds` or `ostN`.
        daemon: String,
        /// How the process ended.
        status: String,
        /// Its full log.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A daemon ended before it was ready.
    #[error("{daemon} exited before it was ready ({status}); last lines of {}:\n{tail}", log.display())]
    DaemonExited {
        /// `mds` or `ostN`.
        daemon: String,
        /// How the process ended.
        status: String,
        /// Its full log.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A daemon did not become ready in time.
    #[error("{daemon} was not ready after {secs} s (it is now stopped); last lines of {}:\n{tail}", log.display())]
    DaemonTimeout {
        /// `mds` or `ostN`.
        daemon: String,
        /// The wait, in seconds.
        secs: u64,
        /// Its full log.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// The cluster file cannot be read or holds mistakes.
    #[error(transparent)]
    Config(#[from] rustre_config::ConfigError),
    /// The cluster secret could not be made.
    #[error("cannot create the cluster secret {}: {reason}", path.display())]
    Secret {
        /// The secret file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `cluster fail` cannot fail the target over.
    #[error("cannot fail {target} over: {reason}")]
    Failover {
        /// `mds` or `ostN`.
        target: String,
        /// Why.
        reason: String,
    },
    /// Some daemons did not exit even after SIGKILL.
    #[error("could not stop {0}")]
    StopFailed(String),
}

impl CliError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { action, path, source }
    }
}
