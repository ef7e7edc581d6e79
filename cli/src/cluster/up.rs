//! `rustre cluster up`: format what is missing, start every daemon, wait until each serves.

use super::file::{
    CLIENT_HEADER, ClusterFile, FORMAT_VERSION, FabricKind, MdsEntry, OstEntry, StripeDefaults, check_fsname,
    cluster_header,
};
use super::status::{ready_mark, standby_mark};
use super::{Daemon, DataDir, describe_stale, pick_ports};
use crate::error::CliError;
use crate::process;
use crate::size::{ByteSize, human};
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The most OSTs a local cluster may have.
pub const MAX_OSTS: u32 = 64;
/// OSTs when neither the option nor the data directory says otherwise.
pub const DEFAULT_OSTS: u32 = 4;
/// OST device size when neither the option nor the data directory says otherwise.
pub const DEFAULT_OST_SIZE: ByteSize = ByteSize(4 << 30);
/// MDT device size when neither the option nor the data directory says otherwise.
pub const DEFAULT_MDT_SIZE: ByteSize = ByteSize(1 << 30);
/// The file system name of a new cluster unless `--fsname` says otherwise.
pub const DEFAULT_FSNAME: &str = "rustre";
/// The MMP interval of a new high-availability cluster, in milliseconds. A standby takes over
/// after the active server's MMP sequence stood still for 2.5 intervals and its own claim held
/// for 1 (ostd) or 2 (mdsd) more: measured 1.1 s (OST) and 2.2 s (MDS) at 500 ms, where the
/// daemons' production default of 1000 ms doubles that. Shorter is riskier on a loaded machine:
/// an active server whose MMP update is late by 2.5 intervals loses its device. At 200 ms (takeover
/// 0.5 s / 0.8 s) six busy loops on two cores made healthy servers lose their devices; at 500 ms
/// they did not.
pub const DEFAULT_HA_MMP_INTERVAL_MS: u64 = 500;
/// How long before a silent daemon's port is probed instead of waiting for its ready line.
const PORT_PROBE_AFTER: Duration = Duration::from_secs(2);
/// The most log bytes scanned for a ready line.
const READY_SCAN_LIMIT: u64 = 1 << 20;

/// What `up` was asked for; `None` means "what the data directory already holds, else the default".
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The data directory.
    pub data: PathBuf,
    /// Number of OSTs.
    pub osts: Option<u32>,
    /// The fabric.
    pub fabric: Option<FabricKind>,
    /// Size of each new OST device.
    pub size_per_ost: Option<ByteSize>,
    /// Reserve every block of each new OST device when it is made (`ostd mkfs --preallocate`).
    pub preallocate: bool,
    /// Size of a new MDT device.
    pub mdt_size: Option<ByteSize>,
    /// First port (MDS), the OSTs get the next ones; else free ports.
    pub base_port: Option<u16>,
    /// The IP address the daemons listen on.
    pub host: Option<IpAddr>,
    /// File system name of a new cluster.
    pub fsname: Option<String>,
    /// The longest wait for one mkfs, and for the daemons to become ready.
    pub timeout: Duration,
    /// Start the daemons in their own process group, so that a Ctrl-C in the terminal that ran
    /// `up` does not reach them. Off for a cluster that should end with its caller (the demo).
    pub detach: bool,
    /// Run every target as a pair: an active server and a standby on the same device.
    pub ha: bool,
    /// MMP interval of every server, in milliseconds.
    pub mmp_interval_ms: Option<u64>,
    /// Run without a cluster secret (no authentication).
    pub no_secret: bool,
}

impl UpOptions {
    /// Defaults for everything, in data directory `data`.
    pub fn new(data: impl Into<PathBuf>) -> UpOptions {
        UpOptions {
            data: data.into(),
            osts: None,
            fabric: None,
            size_per_ost: None,
            preallocate: false,
            mdt_size: None,
            base_port: None,
            host: None,
            fsname: None,
            timeout: Duration::from_secs(60),
            detach: true,
            ha: false,
            mmp_interval_ms: None,
            no_secret: false,
        }
    }
}

/// A daemon started by this `up`, until it is ready.
pub(super) struct Started {
    daemon: Daemon,
    pub(super) child: Child,
    pid_file: PathBuf,
    log: PathBuf,
    log_offset: u64,
    /// Where this run's header line starts in the log.
    header_offset: u64,
    ready_mark: &'static str,
    /// Started with `--standby`: ready once it watches the device (it binds no port until it
    /// takes over).
    standby: bool,
    addr: SocketAddr,
    fabric: FabricKind,
    since: Instant,
    ready: bool,
}

/// Brings the cluster in `opts.data` up and returns its cluster file. On failure every daemon
/// started here is stopped again and the error carries the failed daemon's log tail.
pub fn up(opts: &UpOptions) -> Result<ClusterFile, CliError> {
    let dir = DataDir::new(&opts.data)?;
    for d in [dir.root().to_path_buf(), dir.logs(), dir.pids()] {
        fs::create_dir_all(&d).map_err(CliError::io("create", &d))?;
    }
    let (live, stale) = dir.live_daemons()?;
    if !stale.is_empty() {
        println!("removed stale pid files: {}", describe_stale(&stale));
    }
    if !live.is_empty() {
        let running = live
            .iter()
            .map(|(d, p)| format!("{} pid {p}", d.name()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CliError::AlreadyRunning {
            dir: dir.root().to_path_buf(),
            running,
        });
    }
    let plan = plan(&dir, opts)?;
    let n = plan.osts as usize;
    let failover_port = |i: usize| -> Option<String> {
        plan.ha
            .then(|| address(plan.fabric, SocketAddr::new(plan.host, plan.ports[1 + n + i])))
    };
    let ostd = process::find_binary("ostd")?;
    let mdsd = process::find_binary("mdsd")?;

    // Format what is missing; keep what exists (its data survives down/up).
    let mut osts = Vec::with_capacity(plan.osts as usize);
    for i in 0..plan.osts {
        let d = Daemon::Ost(i);
        let device = dir.device(d);
        if device.exists() {
            println!(
                "keeping {} ({}){}",
                device.display(),
                d.name(),
                if opts.preallocate {
                    " as it is: --preallocate applies to new devices"
                } else {
                    ""
                }
            );
        } else {
            let mut args: Vec<OsString> = vec!["mkfs".into(), "--index".into(), i.to_string().into()];
            args.extend(["--fsname".into(), plan.fsname.clone().into(), device.clone().into()]);
            args.extend(["--size".into(), plan.ost_size.bytes().to_string().into()]);
            if opts.preallocate {
                args.push("--preallocate".into());
            }
            mkfs(&dir, d, &ostd, &args, opts.timeout)?;
        }
        let size = fs::metadata(&device).map_err(CliError::io("stat", &device))?.len();
        let addr = SocketAddr::new(plan.host, plan.ports[1 + i as usize]);
        osts.push(OstEntry {
            index: i,
            address: address(plan.fabric, addr),
            device,
            size,
            failover: failover_port(1 + i as usize),
            metrics: plan.previous_ost(i).and_then(|o| o.metrics),
            failover_metrics: plan.previous_ost(i).and_then(|o| o.failover_metrics),
        });
    }
    let mdt = dir.device(Daemon::Mds);
    if mdt.exists() {
        println!("keeping {} (mds)", mdt.display());
    } else {
        let mut args: Vec<OsString> = vec!["mkfs".into(), "--fsname".into(), plan.fsname.clone().into()];
        args.extend([
            mdt.clone().into(),
            "--size".into(),
            plan.mdt_size.bytes().to_string().into(),
        ]);
        mkfs(&dir, Daemon::Mds, &mdsd, &args, opts.timeout)?;
    }
    let mdt_size = fs::metadata(&mdt).map_err(CliError::io("stat", &mdt))?.len();
    let mds_addr = SocketAddr::new(plan.host, plan.ports[0]);
    let cluster = ClusterFile {
        version: FORMAT_VERSION,
        fsname: plan.fsname.clone(),
        fabric: plan.fabric,
        host: plan.host.to_string(),
        mds: MdsEntry {
            address: address(plan.fabric, mds_addr),
            device: mdt.clone(),
            size: mdt_size,
            failover: failover_port(0),
            metrics: plan.previous.as_ref().and_then(|p| p.mds.metrics),
            failover_metrics: plan.previous.as_ref().and_then(|p| p.mds.failover_metrics),
        },
        osts,
        log: plan.log.clone(),
        stripe: plan.previous.as_ref().and_then(|p| p.stripe),
        limits: plan.previous.as_ref().map(|p| p.limits).unwrap_or_default(),
        mmp_interval_ms: plan.mmp_interval_ms,
        secret: if opts.no_secret { None } else { Some(secret(&dir)?) },
    };
    cluster.save(&dir.cluster_file(), &cluster_header(dir.root()))?;

    let mut started: Vec<Started> = Vec::new();
    let result = start_all(&dir, &cluster, &ostd, &mdsd, opts, &mut started);
    if let Err(e) = result {
        let pids: Vec<i32> = started.iter().map(|s| s.child.id() as i32).collect();
        process::stop(&pids, Duration::from_secs(5));
        for s in &mut started {
            let _ = s.child.try_wait();
            let _ = process::remove_pid(&s.pid_file);
        }
        return Err(e);
    }
    cluster.client().save(&dir.client_file(), CLIENT_HEADER)?;
    if let Some(stripe) = cluster.stripe {
        // The daemons run: a failure here leaves them running and says so, rather than failing `up`.
        match apply_stripe(&dir, &cluster, stripe) {
            Ok(text) => println!("default layout of /: {text} (from [stripe] in the cluster file)"),
            Err(e) => eprintln!(
                "warning: the cluster is up, but the [stripe] defaults of {} were not applied: {e}",
                dir.cluster_file().display()
            ),
        }
    }
    println!(
        "cluster {} is up: mds on {}, {} OST{} of {} each ({} fabric)",
        cluster.fsname,
        cluster.mds.address,
        cluster.osts.len(),
        if cluster.osts.len() == 1 { "" } else { "s" },
        human(cluster.osts.first().map_or(0, |o| o.size)),
        cluster.fabric
    );
    if let Some(ms) = cluster.mmp_interval_ms
        && cluster.mds.failover.is_some()
    {
        println!("failover pairs: every target has a standby (MMP interval {ms} ms)");
    }
    if let Some(s) = &cluster.secret {
        println!(
            "cluster secret: {} (given to every daemon and in client.toml)",
            s.display()
        );
    }
    println!("client config: {}", dir.client_file().display());
    Ok(cluster)
}

/// Sets the cluster file's `[stripe]` defaults as the layout of the root directory (new files
/// and directories inherit it), through librustre.
fn apply_stripe(dir: &DataDir, cluster: &ClusterFile, stripe: StripeDefaults) -> Result<String, String> {
    let count = u32::try_from(stripe.count).unwrap_or(cluster.osts.len() as u32);
    let size = u32::try_from(stripe.size).map_err(|_| format!("stripe size {} is too large", stripe.size))?;
    let spec = rustre::LayoutSpec {
        stripe_size: size,
        stripe_count: count,
        stripe_offset: -1,
    };
    let config = rustre::ClientConfig::from_file(&dir.client_file()).map_err(|e| e.to_string())?;
    let client = rustre::Client::connect(config).map_err(|e| e.to_string())?;
    let result = client.setstripe("/", &spec);
    client.disconnect();
    result.map_err(|e| e.to_string())?;
    Ok(format!("stripe count {count}, stripe size {}", human(u64::from(size))))
}

/// `DIR/secret`, generated (mode 0600) when missing.
fn secret(dir: &DataDir) -> Result<PathBuf, CliError> {
    let path = dir.secret_file();
    if fs::symlink_metadata(&path).is_err() {
        crate::secret::generate(&path, false).map_err(|e| CliError::Secret {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        println!("generated cluster secret {}", path.display());
    }
    Ok(path)
}

/// The shape of the cluster to bring up, from the options and what the directory holds.
struct Plan {
    fsname: String,
    fabric: FabricKind,
    host: IpAddr,
    osts: u32,
    ost_size: ByteSize,
    mdt_size: ByteSize,
    /// The MDS port first, then one per OST.
    ports: Vec<u16>,
    /// The log level kept from the cluster file.
    log: Option<String>,
    /// Failover pairs: the ports of the partners follow the MDS's and the OSTs'.
    ha: bool,
    /// MMP interval given to every server.
    mmp_interval_ms: Option<u64>,
    /// The cluster file of an earlier `up`: its hand edits ([stripe], [limits], metrics) are kept.
    previous: Option<ClusterFile>,
}

impl Plan {
    fn previous_ost(&self, index: u32) -> Option<&OstEntry> {
        self.previous.as_ref()?.osts.iter().find(|o| o.index == index)
    }
}

fn plan(dir: &DataDir, opts: &UpOptions) -> Result<Plan, CliError> {
    let cluster_path = dir.cluster_file();
    let previous = if cluster_path.exists() {
        Some(ClusterFile::load(&cluster_path)?)
    } else {
        None
    };
    let existing = dir.existing_osts();
    let has_mdt = dir.device(Daemon::Mds).exists();
    if has_mdt != (existing > 0) {
        let (has, missing) = if has_mdt {
            ("mdt0.img".to_string(), "ost0.img".to_string())
        } else {
            (format!("{existing} OST devices"), "mdt0.img".to_string())
        };
        return Err(CliError::PartialCluster {
            dir: dir.root().to_path_buf(),
            has,
            missing,
        });
    }
    let osts = match (opts.osts, existing) {
        (Some(n), 0) => n,
        (Some(n), e) if n != e => {
            return Err(CliError::Mismatch {
                dir: dir.root().to_path_buf(),
                what: "OST count",
                existing: e.to_string(),
                requested: format!("--osts {n}"),
                hint: "leave out --osts, or use another --data directory",
            });
        }
        (Some(n), _) => n,
        (None, 0) => DEFAULT_OSTS,
        (None, e) => e,
    };
    if osts == 0 || osts > MAX_OSTS {
        return Err(CliError::BadOption {
            option: "--osts",
            value: osts.to_string(),
            reason: "must be 1 to 64",
        });
    }
    let fsname = match (&opts.fsname, &previous) {
        (Some(asked), Some(prev)) if has_mdt && *asked != prev.fsname => {
            return Err(CliError::Mismatch {
                dir: dir.root().to_path_buf(),
                what: "file system name",
                existing: prev.fsname.clone(),
                requested: format!("--fsname {asked}"),
                hint: "leave out --fsname, or use another --data directory",
            });
        }
        (Some(asked), _) => asked.clone(),
        (None, Some(prev)) => prev.fsname.clone(),
        (None, None) => DEFAULT_FSNAME.to_string(),
    };
    check_fsname(&fsname).map_err(|_| CliError::BadOption {
        option: "--fsname",
        value: fsname.clone(),
        reason: "must be 1 to 8 ASCII letters, digits, '_' or '-'",
    })?;
    let fabric = opts.fabric.or(previous.as_ref().map(|p| p.fabric)).unwrap_or_default();
    let host = match opts.host {
        Some(h) => h,
        None => previous
            .as_ref()
            .and_then(|p| p.host.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    };
    let ost_size = opts
        .size_per_ost
        .or(previous.as_ref().and_then(|p| p.osts.first()).map(|o| ByteSize(o.size)))
        .unwrap_or(DEFAULT_OST_SIZE);
    let mdt_size = opts
        .mdt_size
        .or(previous.as_ref().map(|p| ByteSize(p.mds.size)))
        .unwrap_or(DEFAULT_MDT_SIZE);
    let was_ha = previous.as_ref().is_some_and(|p| p.mds.failover.is_some());
    let ha = opts.ha || was_ha;
    let mmp_interval_ms = match opts
        .mmp_interval_ms
        .or(previous.as_ref().and_then(|p| p.mmp_interval_ms))
    {
        Some(0) => {
            return Err(CliError::BadOption {
                option: "--mmp-interval-ms",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        Some(ms) => Some(ms),
        None if ha => Some(DEFAULT_HA_MMP_INTERVAL_MS),
        None => None,
    };
    let mut daemons: Vec<Daemon> = std::iter::once(Daemon::Mds).chain((0..osts).map(Daemon::Ost)).collect();
    if ha {
        daemons.extend(std::iter::once(Daemon::MdsFailover).chain((0..osts).map(Daemon::OstFailover)));
    }
    let names: Vec<String> = daemons.iter().map(|d| d.name()).collect();
    let previous_ports: Option<Vec<u16>> = previous.as_ref().filter(|p| p.host == host.to_string()).map(|p| {
        let primaries = std::iter::once(&p.mds.address).chain(p.osts.iter().map(|o| &o.address));
        let partners = std::iter::once(&p.mds.failover).chain(p.osts.iter().map(|o| &o.failover));
        primaries.chain(partners.flatten()).map(|a| port_of(a)).collect()
    });
    let ports = pick_ports(host, &names, opts.base_port, previous_ports.as_deref())?;
    let log = previous.as_ref().and_then(|p| p.log.clone());
    Ok(Plan {
        previous,
        log,
        ha,
        mmp_interval_ms,
        fsname,
        fabric,
        host,
        osts,
        ost_size,
        mdt_size,
        ports,
    })
}

/// `tcp://127.0.0.1:4000` for fabric tcp and that socket address.
pub fn address(fabric: FabricKind, addr: SocketAddr) -> String {
    format!("{}://{addr}", fabric.scheme())
}

/// The port of an address written `SCHEME://HOST:PORT`; 0 when there is none.
pub fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

fn socket_of(address: &str) -> Option<SocketAddr> {
    address.split_once("://").and_then(|(_, rest)| rest.parse().ok())
}

fn command_text(binary: &Path, args: &[OsString]) -> String {
    std::iter::once(binary.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Runs one mkfs to completion (bounded by `timeout`); on failure removes the half-made device.
fn mkfs(dir: &DataDir, d: Daemon, binary: &Path, args: &[OsString], timeout: Duration) -> Result<(), CliError> {
    let log_path = dir.mkfs_log(d);
    let device = dir.device(d);
    let mut log = File::create(&log_path).map_err(CliError::io("create", &log_path))?;
    let line = command_text(binary, args);
    writeln!(log, "--- {}: {line}", process::utc_now()).map_err(CliError::io("write", &log_path))?;
    let err = log.try_clone().map_err(CliError::io("open", &log_path))?;
    println!("formatting {} ({})", device.display(), d.name());
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|source| CliError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => break status_text(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("still running after {} s, killed", timeout.as_secs());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break format!("cannot wait for it: {e}"),
        }
    };
    // The device did not exist before this mkfs: whatever is there now is half-made.
    let _ = fs::remove_file(&device);
    Err(CliError::Mkfs {
        daemon: d.name(),
        status,
        tail: process::log_tail(&log_path, 20),
        log: log_path,
    })
}

pub(super) fn spawn(
    dir: &DataDir,
    d: Daemon,
    binary: &Path,
    args: &[OsString],
    addr: SocketAddr,
    cluster: &ClusterFile,
    detach: bool,
) -> Result<Started, CliError> {
    let standby = args.iter().any(|a| a == "--standby");
    let fabric = cluster.fabric;
    let log_path = dir.log_file(d);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(CliError::io("open", &log_path))?;
    let header_offset = log.metadata().map_err(CliError::io("stat", &log_path))?.len();
    writeln!(log, "--- {}: {}", process::utc_now(), command_text(binary, args))
        .map_err(CliError::io("write", &log_path))?;
    let log_offset = log.metadata().map_err(CliError::io("stat", &log_path))?.len();
    let err = log.try_clone().map_err(CliError::io("open", &log_path))?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // The logs are files: no terminal colour codes in them.
        .env("NO_COLOR", "1");
    // The cluster file's log level, unless RUST_LOG in the environment says otherwise.
    if let Some(level) = &cluster.log
        && std::env::var_os("RUST_LOG").is_none()
    {
        command.env("RUST_LOG", level);
    }
    if detach {
        // Its own process group: a Ctrl-C in the terminal that ran `up` does not reach the daemon.
        command.process_group(0);
    }
    let child = command.spawn().map_err(|source| CliError::Spawn {
        binary: binary.to_path_buf(),
        source,
    })?;
    let pid_file = dir.pid_file(d);
    let started = Started {
        daemon: d,
        pid_file: pid_file.clone(),
        log: log_path,
        log_offset,
        header_offset,
        ready_mark: if standby { standby_mark(d) } else { ready_mark(d) },
        standby,
        addr,
        fabric,
        since: Instant::now(),
        ready: false,
        child,
    };
    process::write_pid(&pid_file, started.child.id())?;
    Ok(started)
}

/// The `serve` command line of server `d` of the cluster whose file is `config`: everything but
/// the server's identity comes from the file; `standby` adds `--standby`.
pub(super) fn serve_args(config: &Path, d: Daemon, standby: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["serve".into(), "--config".into(), config.into()];
    if let Daemon::Ost(i) | Daemon::OstFailover(i) = d {
        args.extend(["--ost".into(), i.to_string().into()]);
    }
    args.extend(["--node".into(), d.name().into()]);
    if d.is_failover() {
        args.push("--partner".into());
    }
    if standby {
        args.push("--standby".into());
    }
    args
}

/// The socket address of server `d` (its address in the cluster file).
pub(super) fn server_socket(dir: &DataDir, cluster: &ClusterFile, d: Daemon) -> Result<SocketAddr, CliError> {
    let address = super::servers(cluster)
        .into_iter()
        .find(|(s, ..)| *s == d)
        .map(|(_, a, _)| a)
        .ok_or_else(|| CliError::BadClusterFile {
            path: dir.cluster_file(),
            reason: format!("{} is not in the cluster file", d.name()),
        })?;
    socket_of(&address).ok_or_else(|| CliError::BadClusterFile {
        path: dir.cluster_file(),
        reason: format!("{} address {address:?} is not SCHEME://IP:PORT", d.name()),
    })
}

fn start_all(
    dir: &DataDir,
    cluster: &ClusterFile,
    ostd: &Path,
    mdsd: &Path,
    opts: &UpOptions,
    started: &mut Vec<Started>,
) -> Result<(), CliError> {
    let (timeout, detach) = (opts.timeout, opts.detach);
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    let start = |d: Daemon, standby: bool, started: &mut Vec<Started>| -> Result<(), CliError> {
        let binary = if d.binary() == "mdsd" { mdsd } else { ostd };
        let addr = server_socket(dir, cluster, d)?;
        started.push(spawn(
            dir,
            d,
            binary,
            &serve_args(&dir.cluster_file(), d, standby),
            addr,
            cluster,
            detach,
        )?);
        Ok(())
    };
    let result = (|| {
        // The active servers of the OSTs first: the MDS connects to them as it starts. A standby
        // starts only once its partner serves (a standby leaves an idle device alone).
        for ost in &cluster.osts {
            start(Daemon::Ost(ost.index), false, started)?;
        }
        wait_ready(started, timeout, &spinner)?;
        for ost in cluster.osts.iter().filter(|o| o.failover.is_some()) {
            start(Daemon::OstFailover(ost.index), true, started)?;
        }
        start(Daemon::Mds, false, started)?;
        wait_ready(started, timeout, &spinner)?;
        if cluster.mds.failover.is_some() {
            start(Daemon::MdsFailover, true, started)?;
            wait_ready(started, timeout, &spinner)?;
        }
        Ok(())
    })();
    spinner.finish_and_clear();
    result
}

/// Waits until every daemon in `started` has printed its ready line (or, after a while without
/// one, accepts on its TCP port). A daemon that exits, or a wait longer than `timeout`, is an error.
pub(super) fn wait_ready(started: &mut [Started], timeout: Duration, spinner: &ProgressBar) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for s in started.iter_mut() {
            if s.ready {
                continue;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(CliError::DaemonExited {
                    daemon: s.daemon.name(),
                    status: status_text(status),
                    tail: process::log_tail_from(&s.log, s.header_offset, 20),
                    log: s.log.clone(),
                });
            }
            let printed = log_has(&s.log, s.log_offset, s.ready_mark);
            let accepts = !printed
                && !s.standby
                && s.fabric == FabricKind::Tcp
                && s.since.elapsed() >= PORT_PROBE_AFTER
                && TcpStream::connect_timeout(&s.addr, Duration::from_millis(200)).is_ok();
            if printed || accepts {
                s.ready = true;
                let line = if s.standby {
                    format!(
                        "{} standby for {} on {} (pid {})",
                        s.daemon.name(),
                        s.daemon.partner().name(),
                        address(s.fabric, s.addr),
                        s.child.id()
                    )
                } else {
                    format!(
                        "{} serving on {} (pid {})",
                        s.daemon.name(),
                        address(s.fabric, s.addr),
                        s.child.id()
                    )
                };
                // A hidden spinner (output is not a terminal) drops its println: print plainly.
                if spinner.is_hidden() {
                    println!("{line}");
                } else {
                    spinner.println(line);
                }
            } else {
                waiting.push(s.daemon.name());
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let Some(s) = started.iter().find(|s| !s.ready) else {
                return Ok(());
            };
            return Err(CliError::DaemonTimeout {
                daemon: s.daemon.name(),
                secs: timeout.as_secs(),
                tail: process::log_tail_from(&s.log, s.header_offset, 20),
                log: s.log.clone(),
            });
        }
        spinner.set_message(format!("waiting for {} to serve", waiting.join(", ")));
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// True when the log holds `mark` after byte `offset`.
fn log_has(path: &Path, offset: u64, mark: &str) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if f.take(READY_SCAN_LIMIT).read_to_end(&mut buf).is_err() {
        return false;
    }
    String::from_utf8_lossy(&buf).contains(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let sa: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(address(FabricKind::Tcp, sa), "tcp://127.0.0.1:4000");
        assert_eq!(address(FabricKind::Verbs, sa), "verbs://127.0.0.1:4000");
        assert_eq!(port_of("tcp://127.0.0.1:4000"), 4000);
        assert_eq!(port_of("sim://x"), 0);
        assert_eq!(socket_of("auto://[::1]:7"), Some("[::1]:7".parse().unwrap()));
    }

    #[test]
    fn ready_mark_only_after_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "ostd: serving OST0 on tcp://x\n--- restart\n").unwrap();
        let offset = fs::metadata(&path).unwrap().len();
        assert!(log_has(&path, 0, "ostd: serving OST"));
        assert!(!log_has(&path, offset, "ostd: serving OST"));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "ostd: serving OST0 on tcp://y").unwrap();
        assert!(log_has(&path, offset, "ostd: serving OST"));
    }

    #[test]
    fn partial_and_mismatched_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path()).unwrap();
        fs::write(dir.device(Daemon::Mds), b"").unwrap();
        let err = plan(&dir, &UpOptions::new(tmp.path())).err().unwrap().to_string();
        assert!(err.contains("partial") && err.contains("mdt0.img"), "{err}");
        for i in 0..2 {
            fs::write(dir.device(Daemon::Ost(i)), b"").unwrap();
        }
        let p = plan(&dir, &UpOptions::new(tmp.path())).unwrap();
        assert_eq!(p.osts, 2, "the OST count comes from the devices");
        let mut opts = UpOptions::new(tmp.path());
        opts.osts = Some(3);
        let err = plan(&dir, &opts).err().unwrap().to_string();
        assert!(err.contains("OST count 2") && err.contains("--osts 3"), "{err}");
        opts.osts = Some(0);
        assert!(plan(&DataDir::new(&tmp.path().join("new")).unwrap(), &opts).is_err());
    }
}
