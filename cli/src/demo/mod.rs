//! `rustre demo`: the quickstart workload on a local cluster, through the librustre Rust API.
//!
//! Brings the cluster up unless it already runs, writes a striped file in large chunks and reads
//! it back verifying every byte, creates/stats/unlinks small files, prints the rates, and brings
//! the cluster down again if it started it (unless `keep`).

pub mod pattern;
mod report;
mod workload;

pub use report::{Phase, Report};

use crate::cluster::{self, DaemonState, DataDir, UpOptions};
use crate::error::CliError;
use crate::size::human;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `rustre demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How to bring the cluster up if it does not run.
    pub up: UpOptions,
    /// Size of the striped file.
    pub file_size: u64,
    /// Number of small files.
    pub small_files: u32,
    /// Stripe count of the striped file (`None`: every OST).
    pub stripe_count: Option<u32>,
    /// Stripe size of the striped file.
    pub stripe_size: u64,
    /// Leave the cluster running.
    pub keep: bool,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bringing the cluster up or down failed.
    #[error(transparent)]
    Cluster(#[from] CliError),
    /// Some daemons of the cluster run and others do not.
    #[error(
        "the cluster in {dir} is only partly running ({stopped} stopped); run `rustre cluster down --data {dir}` first"
    )]
    PartlyRunning {
        /// The data directory.
        dir: String,
        /// The daemons not running.
        stopped: String,
    },
    /// An option does not fit the cluster.
    #[error("{0}")]
    BadOption(String),
    /// The host file system under the data directory has too little room for the demo's data.
    #[error(
        "{dir} has {available} free, but the demo writes {needed} into its sparse device files; \
         free some space, pass a smaller --file-size, or put --data on a larger file system"
    )]
    NoRoom {
        /// The data directory.
        dir: String,
        /// Free space there.
        available: String,
        /// What the demo needs.
        needed: String,
    },
    /// A client call failed.
    #[error("{op} {path}: {reason}")]
    Client {
        /// The operation.
        op: &'static str,
        /// The path in the file system.
        path: String,
        /// The client library's error.
        reason: String,
    },
    /// Data read back differs from what was written.
    #[error(
        "verification failed: {path} byte {offset} is {found:#04x}, expected {expected:#04x} \
         (the first wrong byte; data read back differs from data written)"
    )]
    Verify {
        /// The file.
        path: String,
        /// The file offset of the first wrong byte.
        offset: u64,
        /// The byte written there.
        expected: u8,
        /// The byte read back.
        found: u8,
    },
    /// Metadata read back differs from what was made.
    #[error("verification failed: {path}: {what}")]
    Metadata {
        /// The file.
        path: String,
        /// What differs.
        what: String,
    },
}

/// Runs the demo, prints its table and returns what it measured.
pub fn run(opts: &DemoOptions) -> Result<Report, DemoError> {
    if opts.file_size == 0 || opts.stripe_size == 0 {
        return Err(DemoError::BadOption(
            "--file-size and --stripe-size must be above 0".into(),
        ));
    }
    workload::check_stripe_size(opts.stripe_size)?;
    let start = Instant::now();
    let dir = DataDir::new(&opts.up.data)?;
    check_host_space(dir.root(), opts.file_size)?;
    let (live, _) = if dir.pids().exists() {
        dir.live_daemons()?
    } else {
        (Vec::new(), Vec::new())
    };
    let started_here = live.is_empty();
    let cluster = if started_here {
        cluster::up(&opts.up)?
    } else {
        let (cluster, rows) = cluster::status(dir.root())?;
        let stopped: Vec<String> = rows
            .iter()
            .filter(|r| !matches!(r.state, DaemonState::Running(_)))
            .map(|r| r.daemon.name())
            .collect();
        if !stopped.is_empty() {
            return Err(DemoError::PartlyRunning {
                dir: dir.root().display().to_string(),
                stopped: stopped.join(", "),
            });
        }
        println!("using the cluster already running in {}", dir.root().display());
        cluster
    };
    let result = workload::run(&cluster, &dir, opts);
    if started_here && !opts.keep {
        let down = cluster::down(dir.root(), Duration::from_secs(10));
        match (&result, down) {
            (_, Ok(r)) => println!(
                "cluster down ({} daemons stopped; data kept in {})",
                r.stopped.len(),
                dir.root().display()
            ),
            (Ok(_), Err(e)) => return Err(e.into()),
            // The workload's error is the one to report; say that stopping failed too.
            (Err(_), Err(e)) => eprintln!("rustre: also failed to bring the cluster down: {e}"),
        }
    } else {
        println!(
            "cluster left running; `rustre cluster down --data {}` stops it",
            dir.root().display()
        );
    }
    let report = result?;
    println!();
    print!("{report}");
    println!(
        "all data verified; demo took {:.1} s ({} written)",
        start.elapsed().as_secs_f64(),
        human(opts.file_size)
    );
    Ok(report)
}

/// Refuses to start when the file system holding `dir` (or its nearest existing ancestor) cannot
/// take `file_size` bytes plus 10 %: the OST devices are sparse files that grow as data lands.
fn check_host_space(dir: &Path, file_size: u64) -> Result<(), DemoError> {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => return Ok(()),
        }
    }
    let Some(available) = available_bytes(probe) else {
        return Ok(());
    };
    let needed = file_size.saturating_add(file_size / 10);
    if available < needed {
        return Err(DemoError::NoRoom {
            dir: dir.display().to_string(),
            available: human(available),
            needed: human(needed),
        });
    }
    Ok(())
}

/// Bytes available to unprivileged users on the file system holding `path`.
fn available_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that lives across the call, and `st` points to
    // writable memory of the size statvfs(3) fills; it is read only when the call succeeded.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_space_check() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).is_some_and(|b| b > 0));
        check_host_space(&dir.path().join("not/yet/made"), 1 << 20).unwrap();
        let err = check_host_space(dir.path(), u64::MAX / 2).unwrap_err().to_string();
        assert!(err.contains("free") && err.contains("--file-size"), "{err}");
    }
}
