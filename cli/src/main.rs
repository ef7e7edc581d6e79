//! `rustre`: run a local rustre cluster and its quickstart workload, and use a running file
//! system (lfs-shaped commands, FUSE mount, cluster file checks, installation report).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rustre_cli::cluster::file::FabricKind;
use rustre_cli::cluster::{self, DEFAULT_DATA_DIR, DaemonState, UpOptions};
use rustre_cli::demo::{self, DemoOptions};
use rustre_cli::size::{ByteSize, human};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  rustre demo                               bring up a 4-OST cluster in ./.rustre-data, write and
                                            verify a striped 2 GiB file and 3000 small files, report
                                            bandwidth and ops/s, bring the cluster down
  rustre cluster up --osts 2 --data /tmp/r  a 2-OST cluster with its devices in /tmp/r
  rustre cluster up --ha --data /tmp/r      every target as an active/standby pair on one device
  rustre cluster status --data /tmp/r       which daemons run, their role, where, on which device
  rustre cluster fail mds --data /tmp/r     kill -9 the active MDS, time the standby's takeover
  rustre cluster down --data /tmp/r         stop them; the data stays for the next `up`
  rustre df -h                              space per MDT/OST of the cluster in ./.rustre-data
  rustre setstripe -c -1 -S 4M /scratch     new files in /scratch: every OST, 4 MiB stripes
  rustre mount .rustre-data/client.toml /mnt/rustre
                                            POSIX access through FUSE (umount or Ctrl-C to end)

The daemons `ostd` and `mdsd` are looked for in $RUSTRE_BIN_DIR, next to `rustre`, then on PATH:
  cargo build --release -p rustre-cli -p rustre-ostd -p rustre-mdsd";

/// rustre, a parallel file system: run a whole cluster on this machine and put it to work.
#[derive(Parser, Debug)]
#[command(name = "rustre", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a local cluster: one mdsd and N ostd on file-backed devices, no root needed.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The quickstart: bring a local cluster up (unless it runs), write and read back a striped
    /// file, create/stat/unlink small files, print bandwidth and ops/s, bring it down.
    #[command(
        after_help = "Examples:\n  rustre demo\n  rustre demo --file-size 8G --stripe-count 4 --stripe-size 4M\n  \
                            rustre demo --file-size 256M --small-files 500 --data /tmp/r --keep"
    )]
    Demo(DemoArgs),
    /// Cluster secret files (authentication of every connection).
    #[command(subcommand)]
    Secret(SecretCommand),
    #[command(flatten)]
    Ops(rustre_cli::ops::OpsCommand),
}

#[derive(Subcommand, Debug)]
enum SecretCommand {
    /// Write a new random cluster secret (mode 0600). Give the same file to mdsd, ostd
    /// (`--secret FILE`) and clients (`secret = "FILE"` in the client config).
    #[command(
        after_help = "Examples:\n  rustre secret gen --out /etc/rustre/secret\n  rustre secret gen --out s --force"
    )]
    Gen {
        /// Where to write it.
        #[arg(long, value_name = "FILE", default_value = ".rustre-data/secret")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Format missing devices, start the daemons, wait until they serve, write DIR/client.toml.
    #[command(
        after_help = "Examples:\n  rustre cluster up\n  rustre cluster up --osts 8 --size-per-ost 16G --data /scratch/r\n  \
                            rustre cluster up --fabric verbs --host 192.168.1.10\n\n\
                            Options left out keep what the data directory already holds (devices are never reformatted)."
    )]
    Up(UpArgs),
    /// Show each daemon: pid, running or not, its role (active, standby, down), address, device
    /// and its size. Exits 0 when every daemon runs, 3 otherwise.
    #[command(after_help = "Example:\n  rustre cluster status --data /tmp/r\n\n\
                            ROLE is asked of each server, not taken from how it was started: a server \
                            that accepts connections on its address is active, a running one that does \
                            not is a standby watching the device (after `cluster fail` the partners \
                            have swapped).")]
    Status(DataArg),
    /// Fail a target over (needs `cluster up --ha`): kill -9 its active server, wait until the
    /// standby serves and print how long that took, then start a new standby in the killed
    /// server's place so that the pair can fail again.
    #[command(
        after_help = "Examples:\n  rustre cluster fail mds --data /tmp/r\n  rustre cluster fail ost 0 --data /tmp/r\n\n\
                      The standby takes over once the killed server's MMP sequence has stood still for \
                      2.5 MMP intervals and its own claim held (2 to 5 intervals in all: 1 to 2.5 s at \
                      the 500 ms of `up --ha`). Clients see a delay, not an error: they reconnect to the \
                      other address and resend what was in flight."
    )]
    Fail(FailArgs),
    /// Stop the daemons (SIGTERM, then SIGKILL after --timeout); devices, logs and config stay.
    #[command(after_help = "Example:\n  rustre cluster down --data /tmp/r")]
    Down(DownArgs),
}

#[derive(Args, Debug)]
struct DataArg {
    /// The data directory: devices, cluster.toml, client.toml, logs/, pids/.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    data: DataArg,
    /// Number of OSTs [default: 4, or as many as DIR holds].
    #[arg(long, value_name = "N")]
    osts: Option<u32>,
    /// Fabric the daemons listen on [default: tcp, or what DIR used].
    #[arg(long, value_enum)]
    fabric: Option<FabricKind>,
    /// Size of each new OST device, a sparse file (K, M, G, T) [default: 4G].
    #[arg(long, value_name = "SIZE")]
    size_per_ost: Option<ByteSize>,
    /// Reserve all of each new OST device now instead of leaving it sparse: a file system that
    /// fills up under the cluster cannot fail its writes later, and first writes do not pay for
    /// allocating the file's blocks (in /dev/shm, memory: SIZE × OSTS of it, taken at once).
    #[arg(long)]
    preallocate: bool,
    /// Size of a new MDT device [default: 1G].
    #[arg(long, value_name = "SIZE")]
    mdt_size: Option<ByteSize>,
    /// Port of the MDS; OST N gets PORT+1+N. Default: free ports (kept across restarts when free).
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// IP address to listen on [default: 127.0.0.1]; for verbs, an address on the RDMA interface.
    #[arg(long, value_name = "IP")]
    host: Option<IpAddr>,
    /// File system name of a new cluster (1-8 letters, digits, _ or -) [default: rustre].
    #[arg(long, value_name = "NAME")]
    fsname: Option<String>,
    /// Longest wait, in seconds, for one mkfs and for the daemons to become ready.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Run every target as a failover pair: an active server and a `--standby` one on the same
    /// device, each on its own port (kept by later `up`s of the directory).
    #[arg(long)]
    ha: bool,
    /// MMP interval of every server in milliseconds [default: 500 with --ha (takeover in 1 to
    /// 2.5 s), else the daemons' 1000].
    #[arg(long, value_name = "MS")]
    mmp_interval_ms: Option<u64>,
    /// Run without a cluster secret: no authentication of daemons and clients. By default `up`
    /// creates DIR/secret (mode 0600) and gives it to every daemon and to client.toml.
    #[arg(long)]
    no_secret: bool,
}

/// Which target `cluster fail` fails over.
#[derive(Subcommand, Debug, Clone, Copy)]
enum FailTarget {
    /// The metadata target.
    Mds,
    /// Object storage target N.
    Ost {
        /// The OST index.
        index: u32,
    },
}

#[derive(Args, Debug)]
struct FailArgs {
    #[command(subcommand)]
    target: FailTarget,
    /// The data directory: devices, cluster.toml, client.toml, logs/, pids/.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    data: PathBuf,
    /// Longest wait, in seconds, for the partner to serve and for the new standby to start.
    #[arg(long, value_name = "SECS", default_value_t = 60, global = true)]
    timeout: u64,
}

#[derive(Args, Debug)]
struct DownArgs {
    #[command(flatten)]
    data: DataArg,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

#[derive(Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    up: UpArgs,
    /// Size of the striped file written and read back.
    #[arg(long, value_name = "SIZE", default_value = "2G")]
    file_size: ByteSize,
    /// Number of small files to create, stat and unlink.
    #[arg(long, value_name = "N", default_value_t = 3000)]
    small_files: u32,
    /// OSTs the big file is striped over [default: every OST].
    #[arg(long, value_name = "N")]
    stripe_count: Option<u32>,
    /// Stripe size of the big file.
    #[arg(long, value_name = "SIZE", default_value = "1M")]
    stripe_size: ByteSize,
    /// Leave the cluster running afterwards (and the demo's files in it).
    #[arg(long)]
    keep: bool,
}

impl UpArgs {
    fn options(&self) -> UpOptions {
        UpOptions {
            data: self.data.data.clone(),
            osts: self.osts,
            fabric: self.fabric,
            size_per_ost: self.size_per_ost,
            preallocate: self.preallocate,
            mdt_size: self.mdt_size,
            base_port: self.base_port,
            host: self.host,
            fsname: self.fsname.clone(),
            timeout: Duration::from_secs(self.timeout),
            detach: true,
            ha: self.ha,
            mmp_interval_ms: self.mmp_interval_ms,
            no_secret: self.no_secret,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(rustre_cli::ops::normalize_args(std::env::args_os()));
    // librustre's own messages (reconnects, failed closes) go to stderr; RUST_LOG sets the level.
    // fuser warns when an unmount it tries finds the mount already gone (`umount` from outside).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error")),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rustre: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Cluster(ClusterCommand::Up(args)) => {
            cluster::up(&args.options()).context("cluster up failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Status(args)) => status(&args),
        Command::Cluster(ClusterCommand::Fail(args)) => {
            let target = match args.target {
                FailTarget::Mds => cluster::Daemon::Mds,
                FailTarget::Ost { index } => cluster::Daemon::Ost(index),
            };
            let r = cluster::fail(&args.data, target, Duration::from_secs(args.timeout))?;
            println!("killed {} (pid {}, active) with SIGKILL", r.killed.0.name(), r.killed.1);
            println!(
                "{} (pid {}) serves after {:.2} s",
                r.took_over.0.name(),
                r.took_over.1,
                r.after.as_secs_f64()
            );
            println!(
                "started {} (pid {}) as the standby of {}",
                r.restarted.0.name(),
                r.restarted.1,
                r.took_over.0.name()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Down(args)) => {
            let report = cluster::down(&args.data.data, Duration::from_secs(args.timeout))?;
            for (d, pid) in &report.stale {
                let pid = pid.map_or_else(|| "no pid".to_string(), |p| format!("pid {p}"));
                println!("removed stale pid file of {} ({pid} was not running it)", d.name());
            }
            if report.stopped.is_empty() {
                println!("nothing running in {}", args.data.data.display());
            }
            for (d, pid) in &report.stopped {
                println!("stopped {} (pid {pid})", d.name());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ops(cmd) => Ok(ExitCode::from(rustre_cli::ops::run(cmd)?)),
        Command::Secret(SecretCommand::Gen { out, force }) => {
            rustre_cli::secret::generate(&out, force)?;
            println!("wrote a new cluster secret to {} (mode 0600)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            // Without --keep the daemons share the terminal's process group: a Ctrl-C stops
            // them together with the demo instead of leaving a cluster behind.
            let up = UpOptions {
                detach: args.keep,
                ..args.up.options()
            };
            let opts = DemoOptions {
                up,
                file_size: args.file_size.bytes(),
                small_files: args.small_files,
                stripe_count: args.stripe_count,
                stripe_size: args.stripe_size.bytes(),
                keep: args.keep,
            };
            demo::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status(args: &DataArg) -> anyhow::Result<ExitCode> {
    let (cluster, rows) = cluster::status(&args.data)?;
    println!(
        "cluster {} ({} fabric, {} OSTs)",
        cluster.fsname,
        cluster.fabric,
        cluster.osts.len()
    );
    println!(
        "{:<7} {:>8}  {:<9} {:<8} {:<24} {:>10} {:>10}  DEVICE",
        "NAME", "PID", "STATE", "ROLE", "ADDRESS", "SIZE", "USED"
    );
    let mut all_running = true;
    for r in &rows {
        let (pid, state) = match r.state {
            DaemonState::Running(p) => (p.to_string(), "running"),
            DaemonState::Stopped => ("-".to_string(), "stopped"),
            DaemonState::Stale(p) => (p.map_or_else(|| "?".into(), |p| p.to_string()), "dead"),
        };
        all_running &= matches!(r.state, DaemonState::Running(_));
        println!(
            "{:<7} {:>8}  {:<9} {:<8} {:<24} {:>10} {:>10}  {}",
            r.daemon.name(),
            pid,
            state,
            r.role.name(),
            r.address,
            human(r.size),
            human(r.allocated),
            r.device.display()
        );
    }
    Ok(if all_running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
