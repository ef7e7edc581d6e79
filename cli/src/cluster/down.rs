//! `rustre cluster down`: stop the daemons by their recorded pids, keep the data.

use super::{Daemon, DataDir};
use crate::error::CliError;
use crate::process;
use std::path::Path;
use std::time::Duration;

/// What `down` did.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    /// Daemons stopped, with their pids.
    pub stopped: Vec<(Daemon, i32)>,
    /// Pid files removed because their process was gone or not ours.
    pub stale: Vec<(Daemon, Option<i32>)>,
}

/// Stops every daemon of `data` (standbys included): the MDS pair first (so it stops issuing work to the OSTs), then the
/// OSTs together. Each gets SIGTERM, then SIGKILL after `grace`. Pid files are removed; devices,
/// logs and the cluster file stay. Nothing running is not an error.
pub fn down(data: &Path, grace: Duration) -> Result<DownReport, CliError> {
    let dir = DataDir::new(data)?;
    let (live, stale) = dir.live_daemons()?;
    let mut report = DownReport {
        stopped: Vec::new(),
        stale,
    };
    let (mds, osts): (Vec<_>, Vec<_>) = live.into_iter().partition(|(d, _)| d.binary() == "mdsd");
    let mut failed = Vec::new();
    for group in [mds, osts] {
        if group.is_empty() {
            continue;
        }
        let pids: Vec<i32> = group.iter().map(|(_, p)| *p).collect();
        let left = process::stop(&pids, grace);
        for (d, pid) in group {
            if left.contains(&pid) {
                failed.push(format!("{} (pid {pid})", d.name()));
            } else {
                process::remove_pid(&dir.pid_file(d))?;
                report.stopped.push((d, pid));
            }
        }
    }
    if !failed.is_empty() {
        return Err(CliError::StopFailed(failed.join(", ")));
    }
    Ok(report)
}
