//! `rustre cluster status`: each daemon, its pid, whether it runs, its address and device.

use super::file::ClusterFile;
use super::{Daemon, DataDir};
use crate::error::CliError;
use crate::process;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether a daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonState {
    /// Its pid file names a live process that is this daemon.
    Running(i32),
    /// No pid file.
    Stopped,
    /// Its pid file names a process that is gone or is something else.
    Stale(Option<i32>),
}

/// One line of `rustre cluster status`.
#[derive(Debug, Clone)]
pub struct DaemonStatus {
    /// Which daemon.
    pub daemon: Daemon,
    /// Whether it runs.
    pub state: DaemonState,
    /// Where it listens.
    pub address: String,
    /// Its device.
    pub device: PathBuf,
    /// The device's size in bytes (0 if it is missing).
    pub size: u64,
    /// Bytes the device actually occupies on the host file system (it is sparse).
    pub allocated: u64,
}

/// The cluster file of `data` and the state of each of its daemons. Does not change anything
/// (stale pid files are reported, and removed by the next `up` or `down`).
pub fn status(data: &Path) -> Result<(ClusterFile, Vec<DaemonStatus>), CliError> {
    let dir = DataDir::new(data)?;
    let path = dir.cluster_file();
    if !path.exists() {
        return Err(CliError::NoCluster {
            dir: dir.root().to_path_buf(),
            file: path,
        });
    }
    let cluster = ClusterFile::load(&path)?;
    let mut rows = Vec::with_capacity(cluster.osts.len() + 1);
    let entries = std::iter::once((Daemon::Mds, &cluster.mds.address, &cluster.mds.device)).chain(
        cluster
            .osts
            .iter()
            .map(|o| (Daemon::Ost(o.index), &o.address, &o.device)),
    );
    for (d, address, device) in entries {
        let state = match process::read_pid(&dir.pid_file(d))? {
            None if dir.pid_file(d).exists() => DaemonState::Stale(None),
            None => DaemonState::Stopped,
            Some(pid) if process::is_our_daemon(pid, d.binary(), device) => DaemonState::Running(pid),
            Some(pid) => DaemonState::Stale(Some(pid)),
        };
        let (size, allocated) = fs::metadata(device)
            .map(|m| (m.len(), m.blocks() * 512))
            .unwrap_or((0, 0));
        rows.push(DaemonStatus {
            daemon: d,
            state,
            address: address.clone(),
            device: device.clone(),
            size,
            allocated,
        });
    }
    Ok((cluster, rows))
}
