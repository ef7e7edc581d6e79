//! The `lfs`-shaped commands (`setstripe`, `getstripe`, `df`, `find`) and `mount`: everything a
//! user does on a running file system through librustre.
//!
//! Paths given to these commands are paths inside the file system (`/dir/file`), reached through
//! the client configuration (`--config`, default the local cluster's `./.rustre-data/client.toml`).

pub mod bench_results;
pub mod config;
pub mod df;
pub mod find;
pub mod glob;
pub mod mount;
pub mod report;
pub mod stripe;

use crate::size::ByteSize;
use clap::{Args, Subcommand};
use rustre::{Client, ClientError};
use std::ffi::OsString;
use std::path::PathBuf;

/// Default client configuration: the local cluster's.
pub const DEFAULT_CLIENT_CONFIG: &str = "./.rustre-data/client.toml";

/// Errors of the operations commands.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Connecting with the client configuration failed.
    #[error("cannot connect with {config}: {source}")]
    Connect {
        /// The configuration file or address list.
        config: String,
        /// Why.
        source: Box<ClientError>,
    },
    /// A call on a path failed.
    #[error("{path}: {source}")]
    Path {
        /// The path.
        path: String,
        /// Why.
        source: Box<ClientError>,
    },
    /// A command-line value is wrong.
    #[error("{option}: {reason}")]
    Usage {
        /// The option at fault.
        option: String,
        /// Why.
        reason: String,
    },
    /// Mounting or serving the mount failed.
    #[error("mount on {mountpoint}: {reason}")]
    Mount {
        /// The mount point.
        mountpoint: PathBuf,
        /// Why.
        reason: String,
    },
}

impl OpsError {
    pub(crate) fn path(path: &str, source: ClientError) -> Self {
        OpsError::Path {
            path: path.to_string(),
            source: Box::new(source),
        }
    }

    pub(crate) fn usage(option: &str, reason: impl Into<String>) -> Self {
        OpsError::Usage {
            option: option.to_string(),
            reason: reason.into(),
        }
    }
}

/// The client configuration option shared by every command here.
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Client configuration file (or MDS addresses separated by commas).
    #[arg(long, value_name = "CLIENT_TOML", default_value = DEFAULT_CLIENT_CONFIG)]
    pub config: String,
}

impl ConfigArg {
    /// Connects to the file system.
    pub fn connect(&self) -> Result<Client, OpsError> {
        Client::connect_spec(&self.config).map_err(|source| OpsError::Connect {
            config: self.config.clone(),
            source: Box::new(source),
        })
    }
}

/// The operations subcommands of `rustre`.
#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// Set the layout of a new or empty file (created when absent), or a directory's default
    /// for the files created in it.
    #[command(
        after_help = "Examples:\n  rustre setstripe -c 4 -S 4M /scratch\n  rustre setstripe -c -1 /big.dat     \
                      (every OST)\n  rustre setstripe -i 2 -c 1 /on-ost2\n\nCount 0, size 0, index -1: the file system's default."
    )]
    Setstripe(stripe::SetstripeArgs),
    /// Show the layout of a file (and its objects) or a directory's default.
    #[command(after_help = "Example:\n  rustre getstripe /big.dat")]
    Getstripe(stripe::GetstripeArgs),
    /// Space per MDT and OST and for the whole file system.
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  rustre df\n  rustre df -h --config /etc/rustre/client.toml"
    )]
    Df(df::DfArgs),
    /// Walk a tree and print the paths that match every test.
    #[command(
        after_help = "Examples:\n  rustre find / -type f -size +1M\n  rustre find /proj -name '*.h5' -stripe-count 4\n  \
                      rustre find / -type d\n\n-size N[kMG]: +N larger, -N smaller; without a unit, 512-byte blocks."
    )]
    Find(find::FindArgs),
    /// Mount the file system with FUSE (Ctrl-C, SIGTERM or `umount` unmount it).
    #[command(after_help = "Examples:\n  rustre mount .rustre-data/client.toml /mnt/rustre\n  \
                      rustre mount /etc/rustre/client.toml /mnt/rustre --foreground")]
    Mount(mount::MountArgs),
    /// The installation document of a running cluster (Markdown): topology, devices and
    /// capacities, layouts, failover, health checks. Exit 1 when a health check fails.
    #[command(
        after_help = "Examples:\n  rustre report\n  rustre report --cluster /etc/rustre/cluster.toml \
                      --config /etc/rustre/client.toml --out install.md"
    )]
    Report(report::ReportArgs),
    /// Cluster files: check one, or derive a daemon's systemd environment file from it.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `rustre config …`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a cluster file: every mistake with its line, column and field. Exit 1 if any.
    #[command(after_help = "Example:\n  rustre config check /etc/rustre/cluster.toml")]
    Check(config::CheckArgs),
    /// Print the environment file of the MDS's or one OST's systemd unit (dist/systemd).
    #[command(
        after_help = "Examples:\n  rustre config env /etc/rustre/cluster.toml --mds > /etc/rustre/mdsd.env\n  \
                      rustre config env /etc/rustre/cluster.toml --ost 1 --secret /etc/rustre/secret > /etc/rustre/ost1.env"
    )]
    Env(config::EnvArgs),
}

/// Runs one of the operations commands, printing to stdout. Returns the exit status.
pub fn run(cmd: OpsCommand) -> Result<u8, OpsError> {
    let mut out = std::io::stdout().lock();
    match cmd {
        OpsCommand::Setstripe(a) => stripe::setstripe(&a, &mut out),
        OpsCommand::Getstripe(a) => stripe::getstripe(&a, &mut out),
        OpsCommand::Df(a) => df::df(&a, &mut out),
        OpsCommand::Find(a) => find::find(&a, &mut out),
        OpsCommand::Config(ConfigCommand::Check(a)) => config::check(&a, &mut out),
        OpsCommand::Config(ConfigCommand::Env(a)) => config::env(&a, &mut out),
        OpsCommand::Report(a) => report::report(&a, &mut out),
        OpsCommand::Mount(a) => {
            drop(out);
            mount::mount(&a)
        }
    }
}

/// `find` takes `lfs`/`find`-style single-dash long options (`-name`, `-size`, `-type`,
/// `-stripe-count`); this rewrites them to the double-dash form the parser knows. Other
/// arguments are left as they are.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut v: Vec<OsString> = args.into_iter().collect();
    if v.get(1).is_some_and(|a| a == "find") {
        for a in v.iter_mut().skip(2) {
            if let Some(s) = a.to_str()
                && matches!(
                    s,
                    "-name" | "-size" | "-type" | "-stripe-count" | "-stripe_count" | "-maxdepth"
                )
            {
                *a = OsString::from(format!("-{}", s.replace('_', "-")));
            }
        }
    }
    v
}

/// Parses a size option (`4M`, `65536`), naming the option on error.
pub(crate) fn parse_size(option: &str, s: &str) -> Result<u64, OpsError> {
    s.parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|e| OpsError::usage(option, e.to_string()))
}

/// An I/O error writing the output (a closed pipe) is not worth more than a message.
pub(crate) fn out_err(e: std::io::Error) -> OpsError {
    OpsError::usage("stdout", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_options_are_rewritten_only_for_find() {
        let a = normalize_args(["rustre", "find", "/", "-name", "*.c", "-stripe-count", "2"].map(OsString::from));
        assert_eq!(a, ["rustre", "find", "/", "--name", "*.c", "--stripe-count", "2"]);
        let b = normalize_args(["rustre", "setstripe", "-c", "2", "/x"].map(OsString::from));
        assert_eq!(b, ["rustre", "setstripe", "-c", "2", "/x"]);
        // Values are not options: a file named -name stays.
        let c = normalize_args(["rustre", "find", "/", "-size", "-5M"].map(OsString::from));
        assert_eq!(c, ["rustre", "find", "/", "--size", "-5M"]);
    }
}
