//! `rustre cluster fail mds|ost N`: kill -9 the active server of a failover pair, time how long
//! its partner takes to serve, and start a fresh standby in the killed server's place.

use super::file::ClusterFile;
use super::status::role;
use super::up::{serve_args, server_socket, spawn, wait_ready};
use super::{Daemon, DaemonState, DataDir, Role};
use crate::error::CliError;
use crate::process;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the partner is asked whether it serves yet.
const POLL: Duration = Duration::from_millis(10);
/// How long a killed server may take to be gone.
const DEATH_WAIT: Duration = Duration::from_secs(5);

/// What `fail` did.
#[derive(Debug, Clone)]
pub struct FailReport {
    /// The server killed (it was the active one) and its pid.
    pub killed: (Daemon, i32),
    /// The partner that took over and its pid.
    pub took_over: (Daemon, i32),
    /// From the SIGKILL to the partner serving.
    pub after: Duration,
    /// The fresh standby started in the killed server's place, and its pid.
    pub restarted: (Daemon, u32),
}

fn state_of(dir: &DataDir, d: Daemon) -> Result<DaemonState, CliError> {
    Ok(match process::read_pid(&dir.pid_file(d))? {
        Some(pid) if dir.is_ours(pid, d) => DaemonState::Running(pid),
        Some(pid) => DaemonState::Stale(Some(pid)),
        None if dir.pid_file(d).exists() => DaemonState::Stale(None),
        None => DaemonState::Stopped,
    })
}

/// Kills (SIGKILL) the active server of `target` (`Daemon::Mds` or `Daemon::Ost(n)`) in the
/// cluster of `data`, waits up to `timeout` for its partner to serve, then starts a standby in
/// the killed server's place so that the pair can fail again.
pub fn fail(data: &Path, target: Daemon, timeout: Duration) -> Result<FailReport, CliError> {
    let dir = DataDir::new(data)?;
    let path = dir.cluster_file();
    if !path.exists() {
        return Err(CliError::NoCluster {
            dir: dir.root().to_path_buf(),
            file: path,
        });
    }
    let cluster = ClusterFile::load(&path)?;
    let target = target.primary();
    let refuse = |reason: String| CliError::Failover {
        target: target.name(),
        reason,
    };
    let servers = super::servers(&cluster);
    if !servers.iter().any(|(d, ..)| *d == target) {
        return Err(refuse(format!(
            "the cluster has no such target (OSTs 0..{})",
            cluster.osts.len()
        )));
    }
    if !servers.iter().any(|(d, ..)| *d == target.partner()) {
        return Err(refuse(format!(
            "it has no failover partner in {}; bring the cluster up with `rustre cluster up --ha`",
            path.display()
        )));
    }
    let address = |d: Daemon| {
        servers
            .iter()
            .find(|(s, ..)| *s == d)
            .map(|(_, a, _)| a.clone())
            .unwrap_or_default()
    };
    let mut roles = Vec::new();
    for d in [target, target.partner()] {
        let state = state_of(&dir, d)?;
        roles.push((d, state, role(d, state, &address(d), &dir.log_file(d))));
    }
    let describe = || {
        roles
            .iter()
            .map(|(d, _, r)| format!("{} {}", d.name(), r.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(&(active, DaemonState::Running(pid), _)) = roles.iter().find(|(.., r)| *r == Role::Active) else {
        return Err(refuse(format!("no server of the pair is active ({})", describe())));
    };
    let partner = active.partner();
    let Some(&(_, DaemonState::Running(partner_pid), Role::Standby)) = roles.iter().find(|(d, ..)| *d == partner)
    else {
        return Err(refuse(format!(
            "{} is not a running standby, nothing would take over ({})",
            partner.name(),
            describe()
        )));
    };

    // The pid file was checked against /proc above; check again right before the signal.
    if !dir.is_ours(pid, active) {
        return Err(refuse(format!(
            "pid {pid} of {} is no longer its daemon",
            active.name()
        )));
    }
    process::signal(pid, libc::SIGKILL);
    let killed_at = Instant::now();
    let deadline = killed_at + DEATH_WAIT;
    while process::is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    process::remove_pid(&dir.pid_file(active))?;

    let partner_addr = address(partner);
    let partner_log = dir.log_file(partner);
    let deadline = killed_at + timeout;
    let after = loop {
        let state = state_of(&dir, partner)?;
        if !matches!(state, DaemonState::Running(_)) {
            return Err(CliError::DaemonExited {
                daemon: partner.name(),
                status: "it ended instead of taking over".into(),
                tail: process::log_tail(&partner_log, 20),
                log: partner_log,
            });
        }
        if role(partner, state, &partner_addr, &partner_log) == Role::Active {
            break killed_at.elapsed();
        }
        if Instant::now() >= deadline {
            return Err(CliError::DaemonTimeout {
                daemon: partner.name(),
                secs: timeout.as_secs(),
                tail: process::log_tail(&partner_log, 20),
                log: partner_log,
            });
        }
        std::thread::sleep(POLL);
    };

    let binary = process::find_binary(active.binary())?;
    let addr = server_socket(&dir, &cluster, active)?;
    let mut started = vec![spawn(
        &dir,
        active,
        &binary,
        &serve_args(&dir.cluster_file(), active, true),
        addr,
        &cluster,
        true,
    )?];
    if let Err(e) = wait_ready(&mut started, timeout, &indicatif::ProgressBar::hidden()) {
        let pids: Vec<i32> = started.iter().map(|s| s.child.id() as i32).collect();
        process::stop(&pids, Duration::from_secs(5));
        process::remove_pid(&dir.pid_file(active))?;
        return Err(e);
    }
    let restarted = started.first().map_or(0, |s| s.child.id());
    Ok(FailReport {
        killed: (active, pid),
        took_over: (partner, partner_pid),
        after,
        restarted: (active, restarted),
    })
}
