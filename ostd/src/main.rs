//! `ostd`: the object storage target daemon.
//!
//! ```text
//! ostd mkfs --index N --fsname NAME DEVICE [--size BYTES] [--force]
//! ostd serve --device DEVICE --listen ADDR [--node NAME]
//! ostd serve --config CLUSTER.toml --ost N [--partner] [--standby]   (explicit flags override the file) [--metrics IP:PORT]
//! ostd check DEVICE
//! ```

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use rustre_ostd::dev::{BlockDevice, IoEngine, UringConfig, UringDevice};
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::service::{ServeConfig, Server, hostname};
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "ostd", version, about = "rustre object storage target")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Formats DEVICE as an OST.
    Mkfs {
        /// OST index.
        #[arg(long)]
        index: u32,
        /// File system name.
        #[arg(long)]
        fsname: String,
        /// Create DEVICE as a regular file of this size (bytes; K/M/G/T suffixes) if it does not exist.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Overwrite an existing OST or another file system.
        #[arg(long)]
        force: bool,
        /// Reserve every block of a regular-file DEVICE now (fallocate): a file system that fills
        /// up under the OST cannot fail its writes later, and its first writes do not pay for
        /// allocating the file's blocks. A file this mkfs creates on tmpfs is also written with
        /// zeros once, so that its memory is in place before the OST serves, as a disk's is.
        #[arg(long)]
        preallocate: bool,
        /// Journal size in 4 KiB blocks (default: device/64, 256..=4096).
        #[arg(long, default_value_t = 0)]
        journal_blocks: u64,
        /// Object slots (default: one per 64 KiB).
        #[arg(long, default_value_t = 0)]
        max_objects: u64,
        /// Device (block device or regular file).
        device: String,
    },
    /// Serves the OST on DEVICE.
    Serve {
        /// The cluster file (`rustre config check` validates it): with --ost N, the device,
        /// listen address, MMP interval, secret, metrics, limits and log level come from its
        /// `[[ost]]` entry of index N and its top level; flags given as well override it.
        #[arg(long, value_name = "FILE", requires = "ost")]
        config: Option<std::path::PathBuf>,
        /// With --config: the index of the OST to serve.
        #[arg(long, value_name = "N", requires = "config")]
        ost: Option<u32>,
        /// With --config: this is the failover partner (listen on the entry's `failover`
        /// address, metrics on its `failover_metrics`).
        #[arg(long, requires = "config")]
        partner: bool,
        /// Device.
        #[arg(long, required_unless_present = "config")]
        device: Option<String>,
        /// Listen address (tcp://IP:PORT, sim://NAME, verbs://IP:PORT, auto://IP:PORT).
        #[arg(long, required_unless_present = "config")]
        listen: Option<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT; port 0 = any free port).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Node name written into the MMP block (default: host name).
        #[arg(long)]
        node: Option<String>,
        /// Worker threads, each with its own io_uring ring; also the most requests that
        /// connection threads serve themselves at once (a connection with nothing else waiting).
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// io_uring queue depth.
        #[arg(long, default_value_t = 64)]
        queue_depth: u32,
        /// How the device is driven: `uring` (io_uring, fixed buffers), `sync` (pread/pwrite from
        /// the worker threads) or `auto`: io_uring, except for a file on tmpfs, where io_uring
        /// hands every request to a kernel worker thread (~35 µs per 4 KiB read against ~0.8 µs
        /// for pread) and `sync` is used.
        #[arg(long, default_value = "auto")]
        io_engine: IoEngine,
        /// Bulk buffers (each max-io + 8 KiB).
        #[arg(long, default_value_t = 16)]
        buffers: usize,
        /// Largest I/O of one request (bytes; K/M suffixes).
        #[arg(long, default_value = "4M", value_parser = parse_size)]
        max_io: u64,
        /// Requests queued for the workers.
        #[arg(long, default_value_t = 64)]
        queue: usize,
        /// MMP update interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        mmp_interval_ms: u64,
        /// Start as the failover partner: wait until the serving node's MMP sequence stops, then
        /// take the OST over (journal replay) and serve.
        #[arg(long)]
        standby: bool,
        /// Cluster secret file (mode 0600, `rustre secret gen`): every connection must prove it
        /// holds the secret and client object I/O needs an MDS capability. Without it nothing is
        /// authenticated.
        #[arg(long, value_name = "FILE")]
        secret: Option<std::path::PathBuf>,
    },
    /// Checks the consistency of the OST on DEVICE; exits non-zero if it finds problems.
    Check {
        /// Device.
        device: String,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        Some('t' | 'T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or a number with K, M, G or T)"))
}

fn open(device: &str) -> Result<UringDevice> {
    Ok(UringDevice::open(
        device,
        &UringConfig {
            rings: 1,
            ..UringConfig::default()
        },
    )?)
}

/// `serve --config`: the cluster file, and which flags were given on the command line (those
/// override the file).
struct FromFile {
    path: std::path::PathBuf,
    file: rustre_config::ClusterFile,
    given: Vec<String>,
}

impl FromFile {
    fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }
}

fn from_file(cli: &Cli, matches: &clap::ArgMatches) -> Result<Option<FromFile>> {
    Ok(match (&cli.cmd, matches.subcommand_matches("serve")) {
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
    })
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let parsed = Cli::from_arg_matches(&matches)
        .map_err(anyhow::Error::from)
        .and_then(|cli| Ok((from_file(&cli, &matches)?, cli)));
    let level = match &parsed {
        Ok((Some(f), _)) => f.file.log.clone().unwrap_or_else(|| "info".into()),
        _ => "info".into(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match parsed.and_then(|(f, cli)| run(cli, f)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ostd: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Allocates every block of the regular file `device` (its length stays as it is). A file this
/// command `created` on tmpfs is also written with zeros: tmpfs reserves fallocated pages but
/// clears them, and so first touches the memory, only at their first write, which on a virtual
/// machine can cost 20 times an overwrite (measured: 0.4 against 8.5 GB/s).
fn preallocate_file(device: &str, created: bool) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("opening {device} to preallocate it"))?;
    let meta = f.metadata().with_context(|| format!("stat {device}"))?;
    if !meta.file_type().is_file() {
        bail!("--preallocate is for a regular file; {device} is not one (a block device has its blocks already)");
    }
    rustre_ostd::dev::preallocate(&f).map_err(|e| {
        anyhow::anyhow!(
            "preallocating {device} ({} bytes): {e}{}",
            meta.len(),
            match e.raw_os_error() {
                Some(libc::ENOSPC) => " (the file system holding it has less room than that)",
                Some(libc::EOPNOTSUPP) => " (the file system holding it cannot preallocate: leave --preallocate off)",
                _ => "",
            }
        )
    })?;
    if created && on_tmpfs(&f) {
        zero_fill(&f, meta.len()).with_context(|| format!("writing zeros over {device}"))?;
    }
    Ok(())
}

/// True when `f` lives on tmpfs.
fn on_tmpfs(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs(2) on a descriptor `f` owns, into a zeroed statfs of the right type.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), &raw mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

/// Writes `len` zero bytes from the start of `f`.
fn zero_fill(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn run(cli: Cli, from_file: Option<FromFile>) -> Result<std::process::ExitCode> {
    match cli.cmd {
        Cmd::Mkfs {
            index,
            fsname,
            size,
            force,
            preallocate,
            journal_blocks,
            max_objects,
            device,
        } => {
            let mut created = false;
            if let Some(size) = size
                && !std::path::Path::new(&device).exists()
            {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&device)
                    .with_context(|| format!("creating {device}"))?;
                created = true;
                f.set_len(size)
                    .with_context(|| format!("sizing {device} to {size} bytes"))?;
            }
            if preallocate && let Err(e) = preallocate_file(&device, created) {
                if created {
                    // A file this command made and could not reserve is not left behind.
                    let _ = std::fs::remove_file(&device);
                }
                return Err(e);
            }
            let dev = open(&device)?;
            let opts = MkfsOptions {
                fsname,
                index,
                force,
                journal_blocks,
                max_objects,
            };
            let sb = mkfs(&dev, &opts)?;
            let g = sb.geometry;
            println!(
                "ostd: formatted {device} as OST{} of {:?} (uuid {}): {} data blocks of 4 KiB, {} objects max, journal {} blocks",
                sb.ost_index,
                sb.fsname,
                sb.uuid_string(),
                g.data_blocks,
                g.max_objects(),
                g.journal_blocks
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Serve {
            config: _,
            ost,
            partner,
            device,
            listen,
            mut metrics,
            node,
            mut workers,
            mut queue_depth,
            io_engine,
            mut buffers,
            mut max_io,
            mut queue,
            mut mmp_interval_ms,
            standby,
            mut secret,
        } => {
            let (device, listen) = match (&from_file, ost) {
                (Some(f), Some(n)) => {
                    let file = &f.file;
                    let o = file.ost(n, &f.path)?;
                    let field = format!("ost[{n}]");
                    let address =
                        rustre_config::server_address(&f.path, &field, &o.address, o.failover.as_deref(), partner)?;
                    if !f.given("metrics") {
                        metrics = if partner { o.failover_metrics } else { o.metrics };
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
                    workers = l.ost_workers.filter(|_| !keep("workers")).unwrap_or(workers);
                    queue_depth = l
                        .ost_queue_depth
                        .filter(|_| !keep("queue_depth"))
                        .unwrap_or(queue_depth);
                    buffers = l.ost_buffers.filter(|_| !keep("buffers")).unwrap_or(buffers);
                    max_io = l.max_io.filter(|_| !keep("max_io")).unwrap_or(max_io);
                    queue = l.ost_queue.filter(|_| !keep("queue")).unwrap_or(queue);
                    (
                        device.unwrap_or_else(|| o.device.display().to_string()),
                        listen.unwrap_or_else(|| address.to_string()),
                    )
                }
                _ => match (device, listen) {
                    (Some(d), Some(l)) => (d, l),
                    _ => bail!("serve needs --device and --listen, or --config FILE --ost N"),
                },
            };
            if let (Some(f), Some(n)) = (&from_file, ost) {
                let sb = rustre_ostd::format::read_superblock(&open(&device)?)?;
                if sb.ost_index != n || sb.fsname != f.file.fsname {
                    bail!(
                        "{}: --ost {n} (fsname `{}`), but {device} holds OST{} of {:?}",
                        f.path.display(),
                        f.file.fsname,
                        sb.ost_index,
                        sb.fsname
                    );
                }
            }
            let addr = listen.parse().map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
            let mut cfg = ServeConfig::new(&device, addr);
            cfg.node = node.unwrap_or_else(hostname);
            cfg.workers = workers;
            cfg.queue_depth = queue_depth;
            cfg.io_engine = io_engine;
            cfg.pool_buffers = buffers;
            cfg.max_io = usize::try_from(max_io).context("--max-io")?;
            cfg.queue = queue;
            cfg.mmp_interval = Duration::from_millis(mmp_interval_ms);
            cfg.metrics = metrics;
            if let Some(p) = &secret {
                cfg.auth = Some(std::sync::Arc::new(rustre_proto::auth::ServerAuth::new(
                    rustre_proto::auth::ClusterSecret::load(p)?,
                    rustre_proto::auth::DEFAULT_WINDOW_MS,
                    rustre_proto::auth::DEFAULT_NONCE_CACHE,
                )));
            }
            install_signal_handlers();
            if standby {
                let dev = open(&device)?;
                println!("ostd: standby for {device} as node {}", cfg.node);
                let _ = std::io::stdout().flush();
                match rustre_ostd::mmp::standby_wait(&dev, cfg.mmp_interval, &SIGNALLED)? {
                    Some(watched) => cfg.watched = Some(watched),
                    None => return Ok(std::process::ExitCode::SUCCESS),
                }
            }
            let server = Server::start(cfg)?;
            if let Some(a) = server.metrics_addr() {
                println!("ostd: metrics on http://{a}/metrics");
            }
            println!("ostd: serving OST{} on {}", server.index(), server.local_addr());
            let _ = std::io::stdout().flush();
            let stop = wait_for_signal_or_fence(&server);
            match stop {
                Stop::Signal => {
                    server.shutdown()?;
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Stop::Fenced(msg) => {
                    drop(server);
                    bail!("{msg}")
                }
            }
        }
        Cmd::Check { device } => {
            let dev = open(&device)?;
            let report = rustre_ostd::check::check(&dev)?;
            for p in &report.problems {
                println!("{}: {p}", dev.path());
            }
            println!("ostd check {device}: {}", report.summary());
            Ok(if report.clean() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(2)
            })
        }
    }
}

enum Stop {
    Signal,
    Fenced(String),
}

static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn wait_for_signal_or_fence(server: &Server) -> Stop {
    loop {
        if let Some(msg) = server.wait_timeout(Duration::from_millis(100)) {
            return Stop::Fenced(msg);
        }
        if SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
            return Stop::Signal;
        }
    }
}
