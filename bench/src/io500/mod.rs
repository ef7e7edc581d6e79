//! `rustre-bench io500`: the IO500 phases (ior-easy, ior-hard, mdtest-easy, mdtest-hard, find) run
//! by rank processes on rustre and, with the very same ranks, on POSIX over a local directory;
//! fio on the OSTs' file system and the fabric's raw transport as ceilings; an IO500 score.
//!
//! Ranks are processes started under `mpirun` when it is on PATH (or by the bench itself, with
//! `--launcher self`); they coordinate with the bench over a loopback TCP control channel (MPI
//! only launches them), which carries the phase barriers and the stonewall count exchange.

mod baselines;
mod control;
mod fs;
mod pattern;
mod rank;
mod ranks;
mod report;

pub use rank::{RankArgs, run as run_rank};

use anyhow::{Context, bail};
use control::{RankConfig, Target, Work};
use indicatif::{ProgressBar, ProgressStyle};
use ranks::{Launcher, Ranks};
use report::{PhaseFigures, Report};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// `rustre-bench io500` options.
#[derive(clap::Args, Debug)]
pub struct Io500Args {
    /// librustre client configuration (a client.toml or MDS addresses); without it a local
    /// cluster is started with `rustre cluster up` on a scratch directory and stopped after.
    #[arg(long)]
    pub config: Option<String>,
    /// Rank processes.
    #[arg(long, default_value_t = 2)]
    pub ranks: u32,
    /// Multiplies the amount of work of every phase.
    #[arg(long, default_value_t = 1.0)]
    pub size: f64,
    /// Seconds after which write phases stop (every rank then completes to the furthest one).
    #[arg(long, default_value_t = 10.0)]
    pub stonewall: f64,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw ours against the baselines per phase into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Directory of the POSIX baseline.
    #[arg(long, default_value = "/dev/shm")]
    pub posix_dir: PathBuf,
    /// Where the local cluster (without --config) keeps its device files: a scratch directory is
    /// made inside it and removed after. The default is the POSIX baseline's file system, so both
    /// sides write to the same kind of storage (falling back to the temporary directory when
    /// /dev/shm does not exist); fio measures the device ceiling there.
    #[arg(long, default_value = "/dev/shm")]
    pub cluster_dir: PathBuf,
    /// Skip the baselines (POSIX phases, fio, transport).
    #[arg(long)]
    pub no_baselines: bool,
    /// How rank processes are started.
    #[arg(long, value_enum, default_value = "auto")]
    pub launcher: Launcher,
    /// ior-easy transfer size in bytes.
    #[arg(long, default_value_t = 2 << 20)]
    pub transfer: u64,
    /// Local cluster: OSTs.
    #[arg(long, default_value_t = 2)]
    pub osts: u32,
    /// Local cluster: fabric (tcp, verbs, auto).
    #[arg(long, default_value = "tcp")]
    pub fabric: String,
    /// Local cluster: IP the daemons listen on (verbs needs an RDMA-capable interface's).
    #[arg(long)]
    pub host: Option<String>,
    /// librustre write-behind of the ranks' clients, in bytes (0: off, every write returns once
    /// the OSTs acknowledged it). Without it: 4 MiB on the bench's own local cluster, and what
    /// the client configuration says (`write_behind_bytes`, off by default) with --config
    #[arg(long)]
    pub write_behind: Option<u64>,
    /// librustre read-ahead of the ranks' clients, in bytes (0: off, every read asks the OSTs).
    /// Without it: 4 MiB on the bench's own local cluster, and what the client configuration
    /// says (`read_ahead_bytes`, off by default) with --config
    #[arg(long)]
    pub read_ahead: Option<u64>,
    /// Stripe count of the ior-hard directory on rustre: -1 every OST (as IO500 runs on Lustre
    /// set it), 0 the file system's default, or a count. ior-easy and mdtest keep the default
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub hard_stripe_count: i64,
}

/// Write-behind of the ranks' clients on the bench's own local cluster (without --config or
/// --write-behind): what a site would set for small-record writers. 2, 4 and 8 MiB measured
/// alike; 16 MiB was sometimes half as fast at `--size 1` (unexplained, see bench/README.md).
const LOCAL_WRITE_BEHIND: u64 = 4 << 20;

/// Read-ahead of the ranks' clients on the bench's own local cluster (without --config or
/// --read-ahead): room for about 90 ior-hard records a rank.
const LOCAL_READ_AHEAD: u64 = 4 << 20;

/// The phases in IO500 order: (name, writes under the stonewall, unit is bandwidth).
pub const PHASES: [(&str, bool, bool); 12] = [
    ("ior-easy-write", true, true),
    ("mdtest-easy-write", true, false),
    ("ior-hard-write", true, true),
    ("mdtest-hard-write", true, false),
    ("find", false, false),
    ("ior-easy-read", false, true),
    ("mdtest-easy-stat", false, false),
    ("ior-hard-read", false, true),
    ("mdtest-hard-stat", false, false),
    ("mdtest-easy-delete", false, false),
    ("mdtest-hard-read", false, false),
    ("mdtest-hard-delete", false, false),
];

fn work(args: &Io500Args) -> anyhow::Result<Work> {
    if !(args.size > 0.0 && args.size <= 10_000.0) {
        bail!("--size must be in (0, 10000], got {}", args.size);
    }
    if args.transfer < 4096 || args.transfer > 64 << 20 || !args.transfer.is_multiple_of(8) {
        bail!(
            "--transfer must be a multiple of 8 in 4 KiB..=64 MiB, got {}",
            args.transfer
        );
    }
    let scaled = |base: f64| ((base * args.size).round() as u64).max(1);
    Ok(Work {
        easy_xfer: args.transfer,
        easy_count: scaled((128u64 << 20) as f64 / args.transfer as f64),
        hard_count: scaled(1000.0),
        md_easy_count: scaled(1000.0),
        md_hard_count: scaled(500.0),
    })
}

/// Runs the benchmark.
pub fn run(args: &Io500Args) -> anyhow::Result<()> {
    if args.ranks == 0 || args.ranks > 1024 {
        bail!("--ranks must be in 1..=1024, got {}", args.ranks);
    }
    if !(args.stonewall > 0.0 && args.stonewall.is_finite()) {
        bail!("--stonewall must be positive, got {}", args.stonewall);
    }
    for (flag, value, max) in [
        (
            "--write-behind",
            args.write_behind,
            rustre::config::MAX_WRITE_BEHIND_BYTES,
        ),
        ("--read-ahead", args.read_ahead, rustre::config::MAX_READ_AHEAD_BYTES),
    ] {
        if let Some(b) = value
            && b != 0
            && !(64 << 10..=max).contains(&b)
        {
            bail!("{flag} must be 0 (off) or in 65536..={max}, got {b}");
        }
    }
    if !(-1..=i64::from(rustre::layout::MAX_STRIPE_COUNT)).contains(&args.hard_stripe_count) {
        bail!(
            "--hard-stripe-count must be -1 (every OST), 0 (the default) or 1..={}, got {}",
            rustre::layout::MAX_STRIPE_COUNT,
            args.hard_stripe_count
        );
    }
    let work = work(args)?;
    let cluster = match &args.config {
        Some(_) => None,
        None => Some(baselines::LocalCluster::up(args, &work).context("starting a local cluster")?),
    };
    let spec = match (&args.config, &cluster) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c.client_config().display().to_string(),
        (None, None) => bail!("no cluster"),
    };
    let id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    );
    let posix_root = (!args.no_baselines).then(|| args.posix_dir.join(format!("rustre-io500-{id}")));
    let cfg = RankConfig {
        ranks: args.ranks,
        rustre_spec: spec.clone(),
        rustre_root: format!("/io500-{id}"),
        posix_root: posix_root.as_ref().map(|p| p.display().to_string()),
        work,
        stonewall_s: args.stonewall,
        write_behind: args
            .write_behind
            .or(args.config.is_none().then_some(LOCAL_WRITE_BEHIND)),
        read_ahead: args.read_ahead.or(args.config.is_none().then_some(LOCAL_READ_AHEAD)),
        hard_stripe_count: args.hard_stripe_count,
    };
    let result = run_phases(args, &cfg);
    if let Some(p) = &posix_root {
        let _ = std::fs::remove_dir_all(p);
    }
    let (ours, posix, launched_by) = result?;
    let mut rep = Report::new(args, &cfg, launched_by, ours, posix);
    if !args.no_baselines {
        let osts_dir = match &cluster {
            Some(c) => Some(c.dir().to_path_buf()),
            None => baselines::ost_dir_of(&spec),
        };
        let dev = baselines::device_ceilings(osts_dir.as_deref(), args.size, args.fabric != "verbs");
        (rep.device, rep.pipeline) = (dev.fio, dev.pipeline);
        rep.transport = baselines::transport_ceiling(args);
    }
    drop(cluster);
    rep.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rep.to_json())? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        report::plot(&rep, path).with_context(|| format!("drawing {}", path.display()))?;
    }
    let bad = rep.verification_failures();
    if bad > 0 {
        bail!("{bad} verification failures (see the table)");
    }
    Ok(())
}

type PhaseSet = Vec<PhaseFigures>;

fn run_phases(args: &Io500Args, cfg: &RankConfig) -> anyhow::Result<(PhaseSet, Option<PhaseSet>, &'static str)> {
    let mut ranks = Ranks::launch(args.launcher, cfg)?;
    let ours = run_target(&mut ranks, cfg, Target::Rustre)?;
    let posix = match cfg.posix_root {
        Some(_) => Some(run_target(&mut ranks, cfg, Target::Posix)?),
        None => None,
    };
    let by = ranks.launched_by;
    ranks.quit()?;
    Ok((ours, posix, by))
}

fn run_target(ranks: &mut Ranks, cfg: &RankConfig, target: Target) -> anyhow::Result<PhaseSet> {
    let hidden = ProgressBar::hidden();
    for s in ["setup-shared", "setup-rank"] {
        ranks.step(s, target, 0, &hidden)?;
    }
    let p = u64::from(cfg.ranks);
    let w = cfg.work;
    let mut written = std::collections::HashMap::new();
    let get = |w: &std::collections::HashMap<&str, u64>, family: &str| w.get(family).copied().unwrap_or(0);
    let mut out = Vec::new();
    let style = ProgressStyle::with_template("{prefix:>26} [{bar:30}] {pos}/{len} {elapsed_precise}")
        .context("progress bar template")?
        .progress_chars("=> ");
    for (name, stonewalled, _) in PHASES {
        let (family, budget) = match name {
            n if n.starts_with("ior-easy") => ("ior-easy", w.easy_count),
            n if n.starts_with("ior-hard") => ("ior-hard", w.hard_count),
            n if n.starts_with("mdtest-easy") => ("mdtest-easy", w.md_easy_count),
            n if n.starts_with("mdtest-hard") => ("mdtest-hard", w.md_hard_count),
            _ => ("find", 0),
        };
        let count = written.get(family).copied().unwrap_or(budget);
        let total = if name == "find" {
            rank::find_expected(cfg.ranks, get(&written, "mdtest-easy"), get(&written, "mdtest-hard")).0
        } else {
            count * p
        };
        let bar = ProgressBar::new(total).with_style(style.clone());
        bar.set_prefix(format!("{target:?} {name}").to_lowercase());
        let (elapsed, results) = ranks.step(name, target, count, &bar)?;
        bar.finish();
        if stonewalled {
            written.insert(family, results.iter().map(|r| r.items).max().unwrap_or(0));
        }
        let mut fig = PhaseFigures::from_results(name, elapsed, &results);
        if name == "find" {
            let (entries, matches) =
                rank::find_expected(cfg.ranks, get(&written, "mdtest-easy"), get(&written, "mdtest-hard"));
            if fig.items != entries || fig.found != matches {
                fig.bad += 1;
                eprintln!(
                    "find on {target:?}: scanned {} entries and found {} (expected {entries} and {matches})",
                    fig.items, fig.found
                );
            }
        }
        out.push(fig);
    }
    for s in ["cleanup-rank", "cleanup-shared"] {
        ranks.step(s, target, 0, &hidden)?;
    }
    Ok(out)
}
