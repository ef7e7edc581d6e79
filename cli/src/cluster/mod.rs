//! The local cluster: `rustre cluster up|status|down` on one machine with file-backed devices.
//!
//! A data directory holds everything of one cluster:
//!
//! ```text
//! DIR/cluster.toml     the cluster file (fsname, fabric, addresses, devices, sizes)
//! DIR/client.toml      what a client needs (fsname, MDS addresses)
//! DIR/mdt0.img         the MDT device (a sparse regular file)
//! DIR/ost<N>.img       the OST devices
//! DIR/logs/<name>.log  each daemon's output (appended across restarts); mkfs-<name>.log
//! DIR/pids/<name>.pid  the pid of each running daemon (mds, ost0, ost1, …; with --ha also the
//!                      failover partners mds-b, ost0-b, …)
//! DIR/secret           the cluster secret (mode 0600) unless `up --no-secret`
//! ```

mod down;
mod fail;
pub mod file;
mod ports;
mod status;
mod up;

pub use down::{DownReport, down};
pub use fail::{FailReport, fail};
pub use ports::pick_ports;
pub use status::{DaemonState, DaemonStatus, Role, role, status};
pub use up::{UpOptions, up};

use crate::error::CliError;
use crate::process;
use std::fs;
use std::path::{Path, PathBuf};

/// The default data directory, relative to where `rustre` runs.
pub const DEFAULT_DATA_DIR: &str = ".rustre-data";

/// A running daemon of ours and its pid.
pub type LivePid = (Daemon, i32);

/// A pid file that named no live daemon of ours: the daemon, and the pid it held (if any).
pub type StalePid = (Daemon, Option<i32>);

/// The files of one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// Which daemon a pid file or log belongs to. A target (the MDT, or OST `N`) is served by its
/// primary server and, in a high-availability cluster, by a failover partner on the same device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Daemon {
    /// The metadata server (`mdsd`).
    Mds,
    /// The object storage server of OST `N` (`ostd`).
    Ost(u32),
    /// The failover partner of the metadata server.
    MdsFailover,
    /// The failover partner of the server of OST `N`.
    OstFailover(u32),
}

impl Daemon {
    /// The short name used for files and messages: `mds`, `ost3`, `mds-b`, `ost3-b`.
    pub fn name(self) -> String {
        match self {
            Daemon::Mds => "mds".into(),
            Daemon::Ost(i) => format!("ost{i}"),
            Daemon::MdsFailover => "mds-b".into(),
            Daemon::OstFailover(i) => format!("ost{i}-b"),
        }
    }

    /// The binary that runs it.
    pub fn binary(self) -> &'static str {
        match self {
            Daemon::Mds | Daemon::MdsFailover => "mdsd",
            Daemon::Ost(_) | Daemon::OstFailover(_) => "ostd",
        }
    }

    /// The primary server of the same target (itself for a primary).
    pub fn primary(self) -> Daemon {
        match self {
            Daemon::MdsFailover => Daemon::Mds,
            Daemon::OstFailover(i) => Daemon::Ost(i),
            d => d,
        }
    }

    /// The other server of the same target.
    pub fn partner(self) -> Daemon {
        match self {
            Daemon::Mds => Daemon::MdsFailover,
            Daemon::Ost(i) => Daemon::OstFailover(i),
            Daemon::MdsFailover => Daemon::Mds,
            Daemon::OstFailover(i) => Daemon::Ost(i),
        }
    }

    /// True for a failover partner.
    pub fn is_failover(self) -> bool {
        matches!(self, Daemon::MdsFailover | Daemon::OstFailover(_))
    }

    /// Parses a short name (`mds`, `ost3`, `mds-b`, `ost3-b`).
    pub fn from_name(name: &str) -> Option<Daemon> {
        if let Some(primary) = name.strip_suffix("-b") {
            return Daemon::from_name(primary)
                .filter(|d| !d.is_failover())
                .map(Daemon::partner);
        }
        if name == "mds" {
            return Some(Daemon::Mds);
        }
        let n = name.strip_prefix("ost")?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
            return None;
        }
        n.parse().ok().map(Daemon::Ost)
    }
}

impl DataDir {
    /// A data directory at `root` (made absolute against the current directory, not created).
    pub fn new(root: &Path) -> Result<DataDir, CliError> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(CliError::io("find the current directory", "."))?
                .join(root)
        };
        // Drop interior `.` components so paths in files and messages read cleanly.
        Ok(DataDir {
            root: root.components().collect(),
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/cluster.toml`.
    pub fn cluster_file(&self) -> PathBuf {
        self.root.join(file::CLUSTER_FILE)
    }

    /// `DIR/client.toml`.
    pub fn client_file(&self) -> PathBuf {
        self.root.join(file::CLIENT_FILE)
    }

    /// `DIR/logs`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `DIR/pids`.
    pub fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }

    /// The device of a daemon: `DIR/mdt0.img` or `DIR/ost<N>.img` (partners share it).
    pub fn device(&self, d: Daemon) -> PathBuf {
        match d {
            Daemon::Mds | Daemon::MdsFailover => self.root.join("mdt0.img"),
            Daemon::Ost(i) | Daemon::OstFailover(i) => self.root.join(format!("ost{i}.img")),
        }
    }

    /// `DIR/secret`: the cluster secret `up` generates.
    pub fn secret_file(&self) -> PathBuf {
        self.root.join("secret")
    }

    /// `DIR/pids/<name>.pid`.
    pub fn pid_file(&self, d: Daemon) -> PathBuf {
        self.pids().join(format!("{}.pid", d.name()))
    }

    /// `DIR/logs/<name>.log`.
    pub fn log_file(&self, d: Daemon) -> PathBuf {
        self.logs().join(format!("{}.log", d.name()))
    }

    /// `DIR/logs/mkfs-<name>.log`.
    pub fn mkfs_log(&self, d: Daemon) -> PathBuf {
        self.logs().join(format!("mkfs-{}.log", d.name()))
    }

    /// How many OST devices (`ost0.img`, `ost1.img`, … without gaps) the directory holds.
    pub fn existing_osts(&self) -> u32 {
        let mut n = 0;
        while self.device(Daemon::Ost(n)).exists() {
            n += 1;
        }
        n
    }

    /// Every pid file in `DIR/pids`, with the daemon it names, sorted (mds first).
    pub fn pid_files(&self) -> Result<Vec<(Daemon, PathBuf)>, CliError> {
        let dir = self.pids();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CliError::io("list", dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(CliError::io("list", &dir))?;
            let path = entry.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "pid")
                && let Some(d) = Daemon::from_name(stem)
            {
                found.push((d, path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// True when `pid` is alive and is daemon `d` of this directory: its program is `d`'s binary
    /// and its command line names `d`'s device, or this directory's cluster file (and, for an
    /// OST, `--ost N` of its index). A recycled pid in a stale pid file is never taken for it.
    pub fn is_ours(&self, pid: i32, d: Daemon) -> bool {
        if process::is_our_daemon(pid, d.binary(), &self.device(d)) {
            return true;
        }
        if !process::is_our_daemon(pid, d.binary(), &self.cluster_file()) {
            return false;
        }
        match d {
            Daemon::Ost(i) | Daemon::OstFailover(i) => {
                let args = process::cmdline(pid);
                args.windows(2)
                    .any(|w| w[0] == "--ost" && w[1].to_str() == Some(i.to_string().as_str()))
            }
            Daemon::Mds | Daemon::MdsFailover => true,
        }
    }

    /// The daemons of this directory whose pid files name a live process that is really theirs.
    /// Pid files naming a dead or foreign process are removed and returned as the second list.
    pub fn live_daemons(&self) -> Result<(Vec<LivePid>, Vec<StalePid>), CliError> {
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (d, path) in self.pid_files()? {
            let pid = process::read_pid(&path)?;
            match pid {
                Some(pid) if self.is_ours(pid, d) => live.push((d, pid)),
                _ => {
                    process::remove_pid(&path)?;
                    stale.push((d, pid));
                }
            }
        }
        Ok((live, stale))
    }
}

/// Every server of `cluster` with its address and device: the MDS (and its partner), then each
/// OST's server (and its partner), in index order.
pub fn servers(cluster: &file::ClusterFile) -> Vec<(Daemon, String, PathBuf)> {
    let mut out = vec![(Daemon::Mds, cluster.mds.address.clone(), cluster.mds.device.clone())];
    if let Some(f) = &cluster.mds.failover {
        out.push((Daemon::MdsFailover, f.clone(), cluster.mds.device.clone()));
    }
    for o in &cluster.osts {
        out.push((Daemon::Ost(o.index), o.address.clone(), o.device.clone()));
        if let Some(f) = &o.failover {
            out.push((Daemon::OstFailover(o.index), f.clone(), o.device.clone()));
        }
    }
    out
}

/// Describes stale pid files for a message: `ost1 (pid 4242 is not running)`.
pub fn describe_stale(stale: &[(Daemon, Option<i32>)]) -> String {
    stale
        .iter()
        .map(|(d, pid)| match pid {
            Some(p) => format!("{} (pid {p} is gone or is not {})", d.name(), d.binary()),
            None => format!("{} (no pid in the file)", d.name()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_names_round_trip() {
        for d in [
            Daemon::Mds,
            Daemon::Ost(0),
            Daemon::Ost(17),
            Daemon::MdsFailover,
            Daemon::OstFailover(3),
        ] {
            assert_eq!(Daemon::from_name(&d.name()), Some(d));
            assert_eq!(d.partner().partner(), d);
            assert_eq!(d.primary().binary(), d.binary());
        }
        for bad in [
            "",
            "ost",
            "ost-1",
            "ost01",
            "mdt0",
            "ostx",
            "ost99999999999",
            "mds-b-b",
            "-b",
        ] {
            assert_eq!(Daemon::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn stale_pid_files_are_removed_and_foreign_processes_spared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path()).unwrap();
        fs::create_dir_all(dir.pids()).unwrap();
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        process::write_pid(&dir.pid_file(Daemon::Ost(0)), sleeper.id()).unwrap();
        fs::write(dir.pid_file(Daemon::Mds), "not a pid").unwrap();
        fs::write(dir.pids().join("README"), "ignored").unwrap();
        let (live, stale) = dir.live_daemons().unwrap();
        assert!(live.is_empty());
        assert_eq!(stale.len(), 2);
        assert!(dir.pid_files().unwrap().is_empty());
        assert!(
            process::is_alive(sleeper.id() as i32),
            "a foreign process must not be touched"
        );
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
