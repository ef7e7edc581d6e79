//! `mdsd`: the rustre metadata server.
//!
//! - `mdsd mkfs --fsname NAME DEVICE [--size BYTES]`
//! - `mdsd serve --device DEVICE --listen ADDR --ost N=ADDR [--ost ...] [--standby] [--metrics IP:PORT]`
//! - `mdsd serve --config CLUSTER.toml [--partner] [--standby]` (explicit flags override the file)
//! - `mdsd check DEVICE`

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use rustre_fabric::Address;
use rustre_mdsd::check::check_namespace;
use rustre_mdsd::dev::UringDevice;
use rustre_mdsd::mdt::{self, Mdt};
use rustre_mdsd::service::{HandlerConfig, MdsCore, ServeConfig, Server, Stopper};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "mdsd", version, about = "rustre metadata server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
enum Cmd {
    /// Formats DEVICE as an MDT (creates a regular file of --size bytes if it does not exist).
    Mkfs {
        /// File system name.
        #[arg(long)]
        fsname: String,
        /// Size of the file to create when DEVICE does not exist.
        #[arg(long)]
        size: Option<u64>,
        /// Overwrite a device that holds something else.
        #[arg(long)]
        force: bool,
        /// The MDT device or file.
        device: PathBuf,
    },
    /// Serves the MDT.
    Serve {
        /// The cluster file (`rustre config check` validates it): device, listen address, OSTs,
        /// MMP interval, secret, metrics, limits and log level come from its `[mds]` entry and
        /// top level; flags given as well override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// With --config: this is the failover partner (listen on `mds.failover`, metrics on
        /// `mds.failover_metrics`).
        #[arg(long, requires = "config")]
        partner: bool,
        /// The MDT device or file.
        #[arg(long, required_unless_present = "config")]
        device: Option<PathBuf>,
        /// Address to listen on (tcp://IP:PORT, sim://NAME, verbs://IP:PORT, auto://IP:PORT).
        #[arg(long, required_unless_present = "config")]
        listen: Option<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT; port 0 = any free port).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// An OST: INDEX=ADDRESS[,ADDRESS…] (its server, then its failover partners; repeat for
        /// each OST).
        #[arg(long = "ost")]
        osts: Vec<String>,
        /// Node name recorded in the MMP block.
        #[arg(long)]
        node: Option<String>,
        /// MMP bump interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        mmp_interval_ms: u64,
        /// Start as the standby of a pair: wait until the serving node's MMP sequence stops for
        /// two intervals, then take the MDT over (recover and serve).
        #[arg(long)]
        standby: bool,
        /// Requests handled (and group-committed) per loop turn.
        #[arg(long, default_value_t = 256)]
        batch_limit: usize,
        /// Replies kept per client in the reply cache.
        #[arg(long, default_value_t = 64)]
        reply_cache_per_client: usize,
        /// Clients kept in the reply cache.
        #[arg(long, default_value_t = 4096)]
        reply_cache_clients: usize,
        /// Objects asked per OST precreate.
        #[arg(long, default_value_t = 4096)]
        precreate_batch: u32,
        /// Cluster secret file (mode 0600, `rustre secret gen`): every connection must prove it
        /// holds the secret, OST I/O needs capabilities. Without it nothing is authenticated.
        #[arg(long, value_name = "FILE")]
        secret: Option<PathBuf>,
        /// Root squash: requests from uid 0 are served as UID:GID (permission checks and the
        /// owner of created entries). Off by default.
        #[arg(long, value_name = "UID:GID")]
        root_squash: Option<rustre_mdsd::service::squash::RootSquash>,
        /// A client network (IP or IP/BITS) exempt from root squash; repeatable.
        #[arg(long = "root-squash-exempt", value_name = "NET", requires = "root_squash")]
        root_squash_exempt: Vec<rustre_mdsd::service::squash::Network>,
    },
    /// Checks the MDT's consistency; exits non-zero on problems.
    Check {
        /// The MDT device or file.
        device: PathBuf,
    },
}

/// `INDEX=ADDRESS[,ADDRESS…]`: the OST's server, then its failover partners.
fn parse_ost(s: &str) -> anyhow::Result<Vec<(u32, Address)>> {
    let (i, a) = s
        .split_once('=')
        .with_context(|| format!("--ost {s:?}: expected INDEX=ADDRESS"))?;
    let i: u32 = i
        .trim()
        .parse()
        .with_context(|| format!("--ost {s:?}: bad OST index {i:?}"))?;
    a.split(',')
        .map(|a| {
            let a: Address = a.trim().parse().map_err(|e| anyhow::anyhow!("--ost {s:?}: {e}"))?;
            Ok((i, a))
        })
        .collect()
}

fn handler_config(
    fsname: &str,
    osts: &[(u32, Address)],
    ckpt_len: u64,
    per_client: usize,
    clients: usize,
) -> HandlerConfig {
    let mut seed = [0u8; 8];
    rand::fill(&mut seed);
    HandlerConfig {
        fsname: fsname.to_string(),
        osts: osts.iter().map(|(i, a)| (*i, a.to_string())).collect(),
        mds_addresses: Vec::new(),
        reply_cache_per_client: per_client,
        reply_cache_clients: clients,
        max_readdir: 1024,
        inode_capacity: ckpt_len / 128,
        server_id: u64::from_le_bytes(seed) | 1,
        features: rustre_mdsd::service::FEATURES,
    }
}

fn wait_for_signal() -> anyhow::Result<()> {
    // SAFETY: plain libc signal-set manipulation on a stack-allocated set; pthread_sigmask is
    // called before any other thread exists, so every thread inherits the block.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("pthread_sigmask failed");
        }
    }
    Ok(())
}

fn sigwait() {
    // SAFETY: as above; sigwait blocks until one of the blocked signals arrives.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
}

/// `serve --config`: the cluster file, and which flags were given on the command line (those
/// override the file).
struct FromFile {
    path: PathBuf,
    file: rustre_config::ClusterFile,
    given: Vec<String>,
}

impl FromFile {
    fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let from_file = match (&cli.cmd, matches.subcommand_matches("serve")) {
        (Cmd::Serve { config: Some(path), .. }, Some(m)) => Some(FromFile {
            path: path.clone(),
            file: rustre_config::ClusterFile::load(path)?,
            given: m
                .ids()
                .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
                .map(|id| id.to_string())
                .collect(),
        }),
        _ => None,
    };
    let level = from_file
        .as_ref()
        .and_then(|f| f.file.log.clone())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Mkfs {
            fsname,
            size,
            force,
            device,
        } => {
            let mut dev = UringDevice::open(&device, size)?;
            let sb = mdt::mkfs(&mut dev, &fsname, force, &MdsCore::initial_snapshot(0))?;
            println!(
                "mdsd: formatted {} as the MDT of {fsname}: {} bytes, WAL {} bytes, checkpoint slots {} bytes",
                device.display(),
                sb.size,
                sb.wal_len,
                sb.ckpt_len
            );
            Ok(())
        }
        Cmd::Check { device } => {
            let dev = UringDevice::open(&device, None)?;
            let cfg = handler_config("check", &[], 0, 64, 4096);
            let (m, core, stats) = Mdt::recover(dev, |b| MdsCore::from_snapshot(b, cfg), |c, e| c.replay(e))?;
            let problems = check_namespace(&core.ns);
            println!(
                "mdsd check {}: fs {}, {} inodes, checkpoint generation {}, {} WAL entries replayed",
                device.display(),
                m.sb.fsname,
                core.ns.inode_count(),
                stats.checkpoint_generation,
                stats.entries
            );
            for p in &problems {
                println!("problem: {p}");
            }
            if problems.is_empty() {
                println!("clean");
                Ok(())
            } else {
                bail!("{} problems found", problems.len())
            }
        }
        Cmd::Serve {
            config: _,
            partner,
            device,
            listen,
            mut metrics,
            mut osts,
            node,
            mut mmp_interval_ms,
            standby,
            mut batch_limit,
            mut reply_cache_per_client,
            mut reply_cache_clients,
            mut precreate_batch,
            mut secret,
            root_squash,
            root_squash_exempt,
        } => {
            let (device, listen) = match &from_file {
                Some(f) => {
                    let (file, mds) = (&f.file, &f.file.mds);
                    let address =
                        rustre_config::server_address(&f.path, "mds", &mds.address, mds.failover.as_deref(), partner)?;
                    if !f.given("osts") {
                        osts = file.ost_lists();
                    }
                    if !f.given("metrics") {
                        metrics = if partner { mds.failover_metrics } else { mds.metrics };
                    }
                    if !f.given("secret") {
                        secret = file.secret.clone();
                    }
                    let l = &file.limits;
                    let keep = |id: &str| f.given(id);
                    mmp_interval_ms = file
                        .mmp_interval_ms
                        .filter(|_| !keep("mmp_interval_ms"))
                        .unwrap_or(mmp_interval_ms);
                    batch_limit = l
                        .mds_batch_limit
                        .filter(|_| !keep("batch_limit"))
                        .unwrap_or(batch_limit);
                    reply_cache_per_client = l
                        .reply_cache_per_client
                        .filter(|_| !keep("reply_cache_per_client"))
                        .unwrap_or(reply_cache_per_client);
                    reply_cache_clients = l
                        .reply_cache_clients
                        .filter(|_| !keep("reply_cache_clients"))
                        .unwrap_or(reply_cache_clients);
                    precreate_batch = l
                        .precreate_batch
                        .filter(|_| !keep("precreate_batch"))
                        .unwrap_or(precreate_batch);
                    (
                        device.unwrap_or_else(|| mds.device.clone()),
                        listen.unwrap_or_else(|| address.to_string()),
                    )
                }
                None => match (device, listen) {
                    (Some(d), Some(l)) => (d, l),
                    _ => bail!("serve needs --device and --listen, or --config FILE"),
                },
            };
            let root_squash = root_squash.map(|mut s| {
                s.exempt = root_squash_exempt;
                s
            });
            let auth = match &secret {
                Some(p) => Some(Arc::new(rustre_proto::auth::ServerAuth::new(
                    rustre_proto::auth::ClusterSecret::load(p)?,
                    rustre_proto::auth::DEFAULT_WINDOW_MS,
                    rustre_proto::auth::DEFAULT_NONCE_CACHE,
                ))),
                None => None,
            };
            wait_for_signal()?;
            let listen: Address = listen.parse().map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
            let osts: Vec<(u32, Address)> = osts
                .iter()
                .map(|s| parse_ost(s))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
            let mut dev = UringDevice::open(&device, None)?;
            if !dev.is_direct() {
                tracing::warn!("{}: not using O_DIRECT", device.display());
            }
            if dev.is_sync() {
                tracing::info!(
                    "{}: a file on tmpfs: pread/pwrite instead of io_uring",
                    device.display()
                );
            }
            let sb = rustre_mdsd::format::read_superblock(&mut dev)?;
            if let Some(f) = &from_file
                && f.file.fsname != sb.fsname
            {
                bail!(
                    "{}: field `fsname`: {:?}, but {} holds the MDT of {:?}",
                    f.path.display(),
                    f.file.fsname,
                    device.display(),
                    sb.fsname
                );
            }
            let node = node.unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname").map_or("mdsd".into(), |h| h.trim().to_string())
            });
            let interval = Duration::from_millis(mmp_interval_ms.max(10));
            let stopping = Arc::new(AtomicBool::new(false));
            let stopper_slot: Arc<Mutex<Option<Stopper>>> = Arc::new(Mutex::new(None));
            {
                let (stopping, slot) = (stopping.clone(), stopper_slot.clone());
                std::thread::spawn(move || {
                    sigwait();
                    stopping.store(true, Ordering::SeqCst);
                    if let Some(s) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        s.stop();
                    }
                });
            }
            let claim = if standby {
                println!("mdsd: standby for {} as node {node}", device.display());
                match rustre_mdsd::mmp::standby(&mut dev, &node, interval, &stopping)? {
                    Some(c) => c,
                    None => return Ok(()),
                }
            } else {
                rustre_mdsd::mmp::acquire(&mut dev, &node, interval)?
            };
            let hcfg = handler_config(
                &sb.fsname,
                &osts,
                sb.ckpt_len,
                reply_cache_per_client,
                reply_cache_clients,
            );
            let cfg = ServeConfig {
                batch_limit: batch_limit.max(1),
                precreate_batch: precreate_batch.max(1),
                low_water: u64::from(precreate_batch.max(2) / 2),
                metrics,
                auth,
                root_squash,
                ..ServeConfig::default()
            };
            let (server, stats) = Server::start(dev, Some(claim), &listen, hcfg, osts, cfg)?;
            tracing::info!(
                "recovered: checkpoint generation {}, {} WAL batches, {} entries",
                stats.checkpoint_generation,
                stats.batches,
                stats.entries
            );
            if let Some(a) = server.metrics_addr() {
                println!("mdsd: metrics on http://{a}/metrics");
            }
            println!("mdsd: serving on {}", server.local_addr());
            {
                let mut slot = stopper_slot.lock().unwrap_or_else(|e| e.into_inner());
                let stopper = server.stopper();
                if stopping.load(Ordering::SeqCst) {
                    stopper.stop();
                }
                *slot = Some(stopper);
            }
            server.wait()?;
            Ok(())
        }
    }
}
