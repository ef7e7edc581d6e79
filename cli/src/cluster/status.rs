//! `rustre cluster status`: each daemon, its pid, whether it runs, its role, address and device.

use super::file::ClusterFile;
use super::{Daemon, DataDir};
use crate::error::CliError;
use crate::process;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a server does for its target, as found out from the server itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It serves the target: it accepts connections on its address.
    Active,
    /// It runs but does not serve: a standby watching the device's MMP block.
    Standby,
    /// It does not run.
    Down,
}

impl Role {
    /// `active`, `standby` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Down => "down",
        }
    }
}

/// How long a role probe waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// The most log bytes read (from the end) to find a daemon's last start.
const LOG_SCAN_LIMIT: u64 = 1 << 20;

/// The role of daemon `d` running as `state`, listening on `address`, logging to `log`.
///
/// A running daemon is asked: on tcp, a server that accepts a connection on its address serves
/// (a standby binds no port until it takes over); on other fabrics its log since its last start
/// must hold its "serving" line.
pub fn role(d: Daemon, state: DaemonState, address: &str, log: &Path) -> Role {
    if !matches!(state, DaemonState::Running(_)) {
        return Role::Down;
    }
    let serving = match address.split_once("://") {
        Some(("tcp", rest)) => rest
            .parse::<SocketAddr>()
            .is_ok_and(|a| TcpStream::connect_timeout(&a, PROBE_TIMEOUT).is_ok()),
        _ => last_run_says(log, ready_mark(d)),
    };
    if serving { Role::Active } else { Role::Standby }
}

/// The line a daemon prints once it serves.
pub fn ready_mark(d: Daemon) -> &'static str {
    match d.binary() {
        "mdsd" => "mdsd: serving on",
        _ => "ostd: serving OST",
    }
}

/// The line a daemon prints once it waits as a standby.
pub fn standby_mark(d: Daemon) -> &'static str {
    match d.binary() {
        "mdsd" => "mdsd: standby for",
        _ => "ostd: standby for",
    }
}

/// True when the log, after the header line (`--- `) of the daemon's last start, holds `mark`.
fn last_run_says(log: &Path, mark: &str) -> bool {
    let Ok(mut f) = fs::File::open(log) else { return false };
    let len = f.metadata().map_or(0, |m| m.len());
    if f.seek(SeekFrom::Start(len.saturating_sub(LOG_SCAN_LIMIT))).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&buf);
    let last = text.rfind("\n--- ").map_or(0, |i| i + 1);
    text[last..].contains(mark)
}

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
    /// What it does for its target.
    pub role: Role,
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
    let entries = super::servers(&cluster);
    let mut rows = Vec::with_capacity(entries.len());
    for (d, address, device) in entries {
        let state = match process::read_pid(&dir.pid_file(d))? {
            None if dir.pid_file(d).exists() => DaemonState::Stale(None),
            None => DaemonState::Stopped,
            Some(pid) if dir.is_ours(pid, d) => DaemonState::Running(pid),
            Some(pid) => DaemonState::Stale(Some(pid)),
        };
        let (size, allocated) = fs::metadata(&device)
            .map(|m| (m.len(), m.blocks() * 512))
            .unwrap_or((0, 0));
        rows.push(DaemonStatus {
            daemon: d,
            state,
            role: role(d, state, &address, &dir.log_file(d)),
            address,
            device,
            size,
            allocated,
        });
    }
    Ok((cluster, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn roles_come_from_the_daemon_not_from_the_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("mds.log");
        fs::write(
            &log,
            "--- start\nmdsd: serving on tcp://x\n--- restart\nmdsd: standby for d\n",
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tcp://{}", listener.local_addr().unwrap());
        let running = DaemonState::Running(1);
        assert_eq!(role(Daemon::Mds, running, &addr, &log), Role::Active);
        drop(listener);
        assert_eq!(role(Daemon::Mds, running, &addr, &log), Role::Standby);
        assert_eq!(role(Daemon::Mds, DaemonState::Stopped, &addr, &log), Role::Down);
        // Other fabrics: the log since the last start decides.
        assert_eq!(role(Daemon::Mds, running, "verbs://10.0.0.1:1", &log), Role::Standby);
        fs::write(&log, "--- restart\nmdsd: standby for d\nmdsd: serving on verbs://x\n").unwrap();
        assert_eq!(role(Daemon::Mds, running, "verbs://10.0.0.1:1", &log), Role::Active);
    }
}
