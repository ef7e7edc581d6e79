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
    let start = Instant::now();
    let dir = DataDir::new(&opts.up.data)?;
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
