//! `rustre-bench ost`: sequential 1 MiB object writes and reads through ostd's object path (the
//! store on an io_uring device, local, no network), beside `fio` (io_uring, O_DIRECT, same block
//! size and queue depth) on the same device in the same run. Optionally (`--daemon`, on by
//! default when the `ostd` binary is found) the same workload through a running `ostd serve` over
//! the tcp fabric from this process, sampling the daemon's resident memory.
//!
//! The device is formatted (and overwritten by fio): use a scratch device, e.g. a loop device
//! with direct I/O over a file in /dev/shm.

use anyhow::{Context, bail};
use prost::Message;
use rustre_fabric::{Address, BufferPool, Bulk, ConnOptions, connect};
use rustre_ostd::dev::{IoEngine, UringConfig, UringDevice};
use rustre_ostd::format::{Existing, MkfsOptions, detect, mkfs};
use rustre_ostd::store::ObjectStore;
use rustre_proto::frame::FLAG_ERROR;
use rustre_proto::{Opcode, pb};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `rustre-bench ost` options.
#[derive(clap::Args, Debug)]
pub struct OstArgs {
    /// Scratch device or file (it is formatted and overwritten).
    #[arg(long)]
    pub device: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Bytes written and read per pass (default: 1 GiB or half the device, whichever is smaller).
    #[arg(long)]
    pub size: Option<u64>,
    /// Queue depth: concurrent 1 MiB I/Os (ours: that many writers; fio: --iodepth).
    #[arg(long, default_value_t = 16)]
    pub qd: u32,
    /// Bytes per I/O.
    #[arg(long, default_value_t = 1 << 20)]
    pub bs: usize,
    /// Overwrite a device holding another file system.
    #[arg(long)]
    pub force: bool,
    /// The `ostd` binary for the daemon phase (default: next to this binary).
    #[arg(long)]
    pub ostd: Option<PathBuf>,
    /// Skip the daemon phase (tcp fabric + RSS).
    #[arg(long)]
    pub no_daemon: bool,
    /// Rounds of (ours, fio), interleaved; the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// On-disk format version to format the device with: 2 (current: one flush per commit) or 1
    /// (the previous commit protocol: data flush, journal write, flush), to compare the two.
    #[arg(long, default_value_t = rustre_ostd::format::FORMAT_VERSION)]
    pub format_version: u32,
    /// Record size of the small-write phase (unaligned records, as IOR's hard write uses).
    #[arg(long, default_value_t = 47008)]
    pub small_bs: usize,
    /// Records written per small-write pass (at queue depth 1, then `--qd` writers strided into
    /// one object); 0 skips the phase.
    #[arg(long, default_value_t = 2000)]
    pub small_count: u64,
}

/// The middle value (the upper one of an even count); 0 for none.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Figures of one run.
#[derive(Debug, Default, Clone)]
struct Figures {
    write_gib_s: f64,
    read_gib_s: f64,
    fio_write_gib_s: f64,
    fio_read_gib_s: f64,
    small: Vec<SmallFigures>,
    tcp_write_gib_s: Option<f64>,
    tcp_read_gib_s: Option<f64>,
    /// The fabric bench's tcp baseline (one stream of 1 MiB writes between two threads), measured
    /// right after the daemon phase.
    tcp_baseline_gib_s: Option<f64>,
    /// What a tcp-to-device server doing nothing but receive, O_DIRECT write and acknowledge
    /// reaches with the same connections and I/O size (see [`crate::ceiling::tcp_device`]).
    tcp_device_ceiling_gib_s: Option<f64>,
    /// The same for reads: O_DIRECT read and send on request.
    tcp_device_read_ceiling_gib_s: Option<f64>,
    daemon_rss_mib: Option<f64>,
    daemon_rss_bound_mib: Option<f64>,
}

/// GiB/s for `bytes` moved in `d`.
pub(crate) fn gib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / f64::from(1u32 << 30)
}

/// Runs the benchmark.
pub fn run(args: &OstArgs) -> anyhow::Result<()> {
    let versions = rustre_ostd::format::MIN_FORMAT_VERSION..=rustre_ostd::format::FORMAT_VERSION;
    if !versions.contains(&args.format_version) {
        bail!("--format-version must be in {versions:?}, got {}", args.format_version);
    }
    if args.qd == 0 || args.qd > 256 {
        bail!("--qd must be in 1..=256, got {}", args.qd);
    }
    if args.bs < 4096 || args.bs > (16 << 20) || !args.bs.is_multiple_of(4096) {
        bail!("--bs must be a multiple of 4096 in 4 KiB..=16 MiB, got {}", args.bs);
    }
    let probe = UringDevice::open(
        &args.device,
        &UringConfig {
            rings: 1,
            ..UringConfig::default()
        },
    )?;
    let dev_size = rustre_ostd::dev::BlockDevice::size(&probe);
    match detect(&probe)? {
        Existing::Foreign(what) if !args.force => {
            bail!(
                "{}: holds {what}; this benchmark overwrites the device (use --force)",
                args.device
            )
        }
        Existing::NewerOst(v) if !args.force => {
            bail!(
                "{}: holds a rustre OST of format version {v}; use --force to overwrite it",
                args.device
            )
        }
        _ => {}
    }
    drop(probe);
    let bs = args.bs as u64;
    let per = args.size.unwrap_or_else(|| (1u64 << 30).min(dev_size / 2)) / (bs * u64::from(args.qd));
    if per == 0 {
        bail!(
            "{}: too small for {} streams of {} bytes",
            args.device,
            args.qd,
            args.bs
        );
    }
    let total = per * bs * u64::from(args.qd);

    if args.repeat == 0 || args.repeat > 100 {
        bail!("--repeat must be in 1..=100, got {}", args.repeat);
    }
    // Touch the whole span once, untimed, so that neither side pays for first-write allocation on
    // a thin or tmpfs-backed device (on a virtual machine's tmpfs, a first write to a page runs at
    // a twentieth of an overwrite). The span is the whole device: the daemon phase rewrites its
    // objects every round, and copy-on-write puts each rewrite on the blocks after the last
    // round's (the allocator moves on through the device), so the rounds walk all of it.
    let span = dev_size;
    fio_pass(args, span, "write").context("prefilling the device with fio")?;
    let mut f = Figures::default();
    let (mut ws, mut rs, mut fws, mut frs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        let (w, r) = measure_store(args, per).context("measuring the object store")?;
        ws.push(gib_s(total, w));
        rs.push(gib_s(total, r));
        let (fw, fr) = measure_fio(args, total).context("measuring fio")?;
        fws.push(fw);
        frs.push(fr);
    }
    eprintln!("rustre-bench ost: per round (GiB/s) write {ws:.2?} fio {fws:.2?}; read {rs:.2?} fio {frs:.2?}");
    f.write_gib_s = median(ws);
    f.read_gib_s = median(rs);
    f.fio_write_gib_s = median(fws);
    f.fio_read_gib_s = median(frs);
    if args.small_count > 0 {
        if args.small_bs == 0 || args.small_bs > (4 << 20) {
            bail!("--small-bs must be in 1..=4 MiB, got {}", args.small_bs);
        }
        for qd in [1, args.qd] {
            f.small.push(measure_small(args, qd).context("measuring small writes")?);
        }
    }
    if !args.no_daemon {
        match measure_daemon(args, per) {
            Ok(d) => {
                let r = d.rounds;
                let tws: Vec<f64> = r.writes.iter().map(|&t| gib_s(total, t)).collect();
                let trs: Vec<f64> = r.reads.iter().map(|&t| gib_s(total, t)).collect();
                eprintln!(
                    "rustre-bench ost: per round (GiB/s) ostd over tcp write {tws:.2?} read {trs:.2?}; tcp baseline {:.2?}",
                    r.baselines
                );
                f.tcp_write_gib_s = Some(median(tws));
                f.tcp_read_gib_s = Some(median(trs));
                f.daemon_rss_mib = Some(d.rss_mib);
                f.daemon_rss_bound_mib = Some(d.bound_mib);
                if r.baselines.is_empty() {
                    eprintln!("rustre-bench ost: tcp baseline skipped: {}", r.baseline_error);
                } else {
                    f.tcp_baseline_gib_s = Some(median(r.baselines));
                }
                // After the daemon has stopped: this writes over the device it served.
                let dev = std::path::Path::new(&args.device);
                let ceilings =
                    crate::ceiling::tcp_device_rounds(dev, args.bs, u64::from(args.qd), total, args.repeat as usize);
                match ceilings {
                    Ok((w, r)) => {
                        eprintln!(
                            "rustre-bench ost: per round (GiB/s) tcp-to-device ceiling write {w:.2?} read {r:.2?}"
                        );
                        f.tcp_device_ceiling_gib_s = Some(median(w));
                        f.tcp_device_read_ceiling_gib_s = Some(median(r));
                    }
                    Err(e) => eprintln!("rustre-bench ost: tcp-to-device ceiling skipped: {e:#}"),
                }
            }
            Err(e) => eprintln!("rustre-bench ost: daemon phase skipped: {e:#}"),
        }
    }
    print_table(args, total, &f);
    // How ostd drives this device (io_uring, or system calls for a file on tmpfs).
    let engine = UringDevice::open(
        &args.device,
        &UringConfig {
            rings: 1,
            ..UringConfig::default()
        },
    )?
    .engine();
    println!("ostd's I/O engine on {}: {engine}", args.device);
    if let Some(path) = &args.json {
        let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
        let j = serde_json::json!({
            "device": args.device,
            "bytes": total,
            "block_size": args.bs,
            "queue_depth": args.qd,
            "format_version": args.format_version,
            "io_engine": engine.to_string(),
            "rounds": args.repeat,
            "write_gib_s": f.write_gib_s,
            "read_gib_s": f.read_gib_s,
            "fio_write_gib_s": f.fio_write_gib_s,
            "fio_read_gib_s": f.fio_read_gib_s,
            "write_ratio": ratio(f.write_gib_s, f.fio_write_gib_s),
            "read_ratio": ratio(f.read_gib_s, f.fio_read_gib_s),
            "tcp_write_gib_s": f.tcp_write_gib_s,
            "tcp_read_gib_s": f.tcp_read_gib_s,
            "tcp_baseline_gib_s": f.tcp_baseline_gib_s,
            "tcp_device_ceiling_gib_s": f.tcp_device_ceiling_gib_s,
            "tcp_device_read_ceiling_gib_s": f.tcp_device_read_ceiling_gib_s,
            "tcp_write_ratio": f.tcp_write_gib_s.zip(f.tcp_baseline_gib_s).map(|(w, t)| w / f.fio_write_gib_s.min(t)),
            "tcp_read_ratio": f.tcp_read_gib_s.zip(f.tcp_baseline_gib_s).map(|(r, t)| r / f.fio_read_gib_s.min(t)),
            "daemon_rss_mib": f.daemon_rss_mib,
            "daemon_rss_bound_mib": f.daemon_rss_bound_mib,
            "small_writes": f.small.iter().map(|x| serde_json::json!({
                "record_bytes": args.small_bs,
                "queue_depth": x.qd,
                "records": x.records,
                "records_per_s": x.records_per_s,
                "flushes_per_s": x.flushes_per_s,
                "flushes_per_record": x.flushes_per_record,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_table(args: &OstArgs, total: u64, f: &Figures) {
    println!(
        "rustre-bench ost: {} (format version {}), {} MiB per pass, {} KiB I/Os, queue depth {}",
        args.device,
        args.format_version,
        total >> 20,
        args.bs / 1024,
        args.qd
    );
    println!("{:<22}{:>14}{:>14}{:>10}", "", "rustre", "fio", "ratio");
    let row = |label: &str, ours: f64, base: f64| {
        let r = if base > 0.0 {
            format!("{:.2}", ours / base)
        } else {
            "-".into()
        };
        println!(
            "{label:<22}{:>14}{:>14}{r:>10}",
            format!("{ours:.2} GiB/s"),
            format!("{base:.2} GiB/s")
        );
    };
    row("write (object store)", f.write_gib_s, f.fio_write_gib_s);
    row("read (object store)", f.read_gib_s, f.fio_read_gib_s);
    if let (Some(w), Some(r)) = (f.tcp_write_gib_s, f.tcp_read_gib_s) {
        row("write (ostd over tcp)", w, f.fio_write_gib_s);
        row("read (ostd over tcp)", r, f.fio_read_gib_s);
        if let Some(t) = f.tcp_baseline_gib_s {
            println!("{:<22}{:>14}{:>14}{:>10}", "", "rustre", "min(fio,tcp)", "ratio");
            row("write (ostd over tcp)", w, f.fio_write_gib_s.min(t));
            row("read (ostd over tcp)", r, f.fio_read_gib_s.min(t));
            println!(
                "tcp baseline: {t:.2} GiB/s (plain TCP socket stream of 1 MiB writes between two threads; median of {} rounds, each after a round of ours)",
                args.repeat
            );
            let ceiling = |what: &str, ceiling: Option<f64>, ours: f64, does: &str| {
                if let Some(c) = ceiling {
                    println!(
                        "tcp-to-device ceiling, {what}: {c:.2} GiB/s = {:.2}x the tcp baseline; ostd's tcp {what} reach {:.2}x it ({} connections of {} KiB messages, {does}: no checksum, no metadata, no commit)",
                        c / t,
                        ours / c,
                        args.qd,
                        args.bs / 1024
                    );
                }
            };
            ceiling(
                "writes",
                f.tcp_device_ceiling_gib_s,
                w,
                "each received, written with O_DIRECT to the device and acknowledged",
            );
            ceiling(
                "reads",
                f.tcp_device_read_ceiling_gib_s,
                r,
                "each asked for, read with O_DIRECT from the device and sent",
            );
        }
    }
    if let (Some(rss), Some(bound)) = (f.daemon_rss_mib, f.daemon_rss_bound_mib) {
        println!("ostd peak RSS under load: {rss:.1} MiB (configured bound {bound:.1} MiB)");
    }
    for x in &f.small {
        println!(
            "small writes ({} B, qd {:>2}): {:>8.0} records/s, {:>8.0} flushes/s, {:.2} flushes/record",
            args.small_bs, x.qd, x.records_per_s, x.flushes_per_s, x.flushes_per_record
        );
    }
}

/// Figures of one small-write pass.
#[derive(Debug, Default, Clone, Copy)]
struct SmallFigures {
    qd: u32,
    records: u64,
    records_per_s: f64,
    flushes_per_s: f64,
    flushes_per_record: f64,
}

/// `small_count` records of `small_bs` bytes into one object through the store: `qd` writers,
/// writer `t` writing records `t, t + qd, t + 2 qd, …` (N-1 strided, as IOR's hard write), each
/// record acknowledged (committed) before the writer's next. Counts the device flushes.
fn measure_small(args: &OstArgs, qd: u32) -> anyhow::Result<SmallFigures> {
    let bs = args.small_bs;
    let span = bs + 2 * 4096;
    let pool = BufferPool::new(span, qd as usize).context("allocating the buffer pool")?;
    let cfg = UringConfig {
        queue_depth: qd.max(4),
        rings: qd as usize + 2,
        pool: Some(Arc::clone(&pool)),
        min_size: 1 << 20,
        engine: IoEngine::Auto,
    };
    let dev = Arc::new(UringDevice::open(&args.device, &cfg)?);
    format_device(args, &dev)?;
    let store = Arc::new(ObjectStore::open(
        Arc::clone(&dev) as Arc<dyn rustre_ostd::dev::BlockDevice>
    )?);
    let id = store.precreate(1)?;
    let per = args.small_count.div_ceil(u64::from(qd));
    let flushes0 = dev.flushes();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..u64::from(qd))
            .map(|t| {
                let (store, pool) = (Arc::clone(&store), Arc::clone(&pool));
                s.spawn(move || -> anyhow::Result<()> {
                    let mut buf = pool.get();
                    for k in 0..per {
                        let rec = k * u64::from(qd) + t;
                        let off = rec * bs as u64;
                        let head = (off % 4096) as usize;
                        for (i, b) in buf[head..head + bs].iter_mut().enumerate() {
                            *b = (i as u64 ^ rec) as u8;
                        }
                        store.write_in_place(id, off, bs, &mut buf)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let el = t0.elapsed().as_secs_f64();
    let flushes = dev.flushes() - flushes0;
    let records = per * u64::from(qd);
    Ok(SmallFigures {
        qd,
        records,
        records_per_s: records as f64 / el,
        flushes_per_s: flushes as f64 / el,
        flushes_per_record: flushes as f64 / records as f64,
    })
}

fn format_device(args: &OstArgs, dev: &UringDevice) -> anyhow::Result<()> {
    use rustre_ostd::dev::{AlignedBuf, BlockDevice};
    let mut opts = MkfsOptions::new("bench", 0);
    opts.force = true;
    let mut sb = mkfs(dev, &opts)?;
    if args.format_version != sb.version {
        // The versions share one layout; only the superblock says which commit protocol to use.
        sb.version = args.format_version;
        let mut b = AlignedBuf::new(4096);
        sb.encode(&mut b);
        dev.write_at(0, &b)?;
        dev.flush()?;
    }
    Ok(())
}

/// Sequential writes then reads of `per` I/Os on each of `qd` objects, `qd` at once.
fn measure_store(args: &OstArgs, per: u64) -> anyhow::Result<(Duration, Duration)> {
    let qd = args.qd as usize;
    let pool = BufferPool::new(args.bs + 8192, qd).context("allocating the buffer pool")?;
    let cfg = UringConfig {
        queue_depth: args.qd,
        rings: qd + 2,
        pool: Some(Arc::clone(&pool)),
        min_size: 1 << 20,
        engine: IoEngine::Auto,
    };
    let dev = UringDevice::open(&args.device, &cfg)?;
    format_device(args, &dev)?;
    let store = Arc::new(ObjectStore::open(Arc::new(dev))?);
    let first = store.precreate(args.qd)?;
    let bs = args.bs;
    let run = |write: bool| -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..qd as u64)
                .map(|t| {
                    let (store, pool) = (Arc::clone(&store), Arc::clone(&pool));
                    s.spawn(move || -> anyhow::Result<()> {
                        let mut buf = pool.get();
                        for (i, b) in buf[..bs].iter_mut().enumerate() {
                            *b = (i as u64 ^ t) as u8;
                        }
                        for k in 0..per {
                            if write {
                                store.write_in_place(first + t, k * bs as u64, bs, &mut buf)?;
                            } else {
                                let (_, n) = store.read_into(first + t, k * bs as u64, bs, &mut buf)?;
                                if n != bs {
                                    bail!("short read of object {}: {n} bytes", first + t);
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
            }
            Ok::<(), anyhow::Error>(())
        })?;
        Ok(t0.elapsed())
    };
    let w = run(true)?;
    let r = run(false)?;
    Ok((w, r))
}

fn fio_pass(args: &OstArgs, total: u64, rw: &str) -> anyhow::Result<f64> {
    let out = Command::new("fio")
        .args([
            "--name=rustre-bench",
            &format!("--filename={}", args.device),
            "--ioengine=io_uring",
            "--direct=1",
            &format!("--bs={}", args.bs),
            &format!("--iodepth={}", args.qd),
            &format!("--rw={rw}"),
            &format!("--size={total}"),
            "--numjobs=1",
            "--output-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running fio (is it installed?)")?;
    if !out.status.success() {
        bail!("fio --rw={rw} failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before the JSON document.
    let start = text.find('{').context("fio printed no JSON")?;
    let j: serde_json::Value = serde_json::from_str(&text[start..]).context("parsing fio's JSON")?;
    let key = if rw == "write" { "write" } else { "read" };
    let bw = j["jobs"][0][key]["bw_bytes"]
        .as_f64()
        .context("fio JSON without jobs[0].bw_bytes")?;
    Ok(bw / f64::from(1u32 << 30))
}

fn measure_fio(args: &OstArgs, total: u64) -> anyhow::Result<(f64, f64)> {
    Ok((fio_pass(args, total, "write")?, fio_pass(args, total, "read")?))
}

fn rss_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The daemon phase's rounds.
#[derive(Default)]
struct Rounds {
    /// Per round: the write pass and the read pass through ostd over tcp.
    writes: Vec<Duration>,
    reads: Vec<Duration>,
    /// Per round, after the passes: the fabric bench's tcp socket baseline (GiB/s).
    baselines: Vec<f64>,
    /// Why the baseline has no figure, when it has none.
    baseline_error: String,
}

/// What the daemon phase measured.
struct DaemonFigures {
    rounds: Rounds,
    rss_mib: f64,
    bound_mib: f64,
}

/// The same workload through `ostd serve` over tcp, `--repeat` rounds of a write pass and a read
/// pass, each round followed by the tcp socket baseline, so that both sides of the ratio sample
/// the machine's load alike; also the daemon's peak RSS and the bound its configuration sets.
fn measure_daemon(args: &OstArgs, per: u64) -> anyhow::Result<DaemonFigures> {
    let ostd = match &args.ostd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ostd"),
    };
    if !ostd.exists() {
        bail!("{} not found (build it, or pass --ostd)", ostd.display());
    }
    let meta_bytes = {
        let dev = UringDevice::open(
            &args.device,
            &UringConfig {
                rings: 1,
                ..UringConfig::default()
            },
        )?;
        format_device(args, &dev)?;
        let g = rustre_ostd::format::read_superblock(&dev)?.geometry;
        (g.data_start - g.state_block) * 4096
    };
    let (workers, buffers, max_io, queue) = (args.qd as usize, 2 * args.qd as usize, args.bs.max(1 << 20), 64usize);
    let mut child = Command::new(&ostd)
        .args([
            "serve",
            "--device",
            &args.device,
            "--listen",
            "tcp://127.0.0.1:0",
            "--node",
            "bench",
        ])
        .args(["--workers", &workers.to_string(), "--buffers", &buffers.to_string()])
        .args([
            "--max-io",
            &max_io.to_string(),
            "--queue",
            &queue.to_string(),
            "--queue-depth",
            &args.qd.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", ostd.display()))?;
    let pid = child.id();
    let result = (|| -> anyhow::Result<(Rounds, f64)> {
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr: Address = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|_| line.starts_with("ostd: serving"))
            .with_context(|| format!("unexpected ostd output {line:?}"))?
            .parse()?;
        let opts = ConnOptions {
            client_id: 1,
            call_timeout: Duration::from_secs(60),
            ..ConnOptions::default()
        };
        let c = connect(&addr, &opts)?;
        let r = c.call(
            Opcode::OstPrecreate as u16,
            &pb::OstPrecreateRequest {
                ost_index: 0,
                count: args.qd,
            }
            .encode_to_vec(),
        )?;
        if r.header.flags & FLAG_ERROR != 0 {
            bail!("precreate refused: {:?}", pb::ErrorReply::decode(&r.body[..])?);
        }
        let first = pb::OstPrecreateReply::decode(&r.body[..])?.first_id;
        let stop = AtomicBool::new(false);
        let peak = AtomicU64::new(0);
        let bs = args.bs;
        let rounds = std::thread::scope(|s| -> anyhow::Result<Rounds> {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(k) = rss_kib(pid, "VmRSS:") {
                        peak.fetch_max(k, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let pass = |write: bool| -> anyhow::Result<Duration> {
                let t0 = Instant::now();
                std::thread::scope(|s2| {
                    let hs: Vec<_> = (0..u64::from(args.qd))
                        .map(|t| {
                            let addr = addr.clone();
                            let opts = opts.clone();
                            s2.spawn(move || -> anyhow::Result<()> {
                                let c = connect(&addr, &opts)?;
                                let mut buf: Vec<u8> = (0..bs).map(|i| (i as u64 ^ t) as u8).collect();
                                let crc = rustre_proto::crc::crc32c(&buf);
                                for k in 0..per {
                                    let object = Some(pb::ObjectRef {
                                        ost_index: 0,
                                        object_id: first + t,
                                    });
                                    let offset = k * bs as u64;
                                    let r = if write {
                                        c.call_bulk(Opcode::OstWrite as u16, Bulk::Source(&buf), &mut |d| {
                                            pb::OstWriteRequest {
                                                object,
                                                offset,
                                                length: bs as u64,
                                                bulk: Some(pb::BulkDescriptor {
                                                    addr: d.addr,
                                                    rkey: d.rkey,
                                                    len: d.len,
                                                    crc32c: crc,
                                                }),
                                                cap: None,
                                                more: Vec::new(),
                                            }
                                            .encode_to_vec()
                                        })?
                                    } else {
                                        c.call_bulk(Opcode::OstRead as u16, Bulk::Sink(&mut buf), &mut |d| {
                                            pb::OstReadRequest {
                                                object,
                                                offset,
                                                length: bs as u64,
                                                bulk: Some(pb::BulkDescriptor {
                                                    addr: d.addr,
                                                    rkey: d.rkey,
                                                    len: d.len,
                                                    crc32c: 0,
                                                }),
                                                cap: None,
                                                reply_inline: false,
                                                more: Vec::new(),
                                            }
                                            .encode_to_vec()
                                        })?
                                    };
                                    if r.header.flags & FLAG_ERROR != 0 {
                                        bail!("ostd refused: {:?}", pb::ErrorReply::decode(&r.body[..])?);
                                    }
                                }
                                c.close();
                                Ok(())
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
                    }
                    Ok::<(), anyhow::Error>(())
                })?;
                Ok(t0.elapsed())
            };
            let rounds = || -> anyhow::Result<Rounds> {
                let mut r = Rounds::default();
                for _ in 0..args.repeat {
                    r.writes.push(pass(true)?);
                    r.reads.push(pass(false)?);
                    match crate::fabric::tcp_bandwidth(1 << 20, Duration::from_secs(1)) {
                        Ok(b) => r.baselines.push(b),
                        Err(e) => r.baseline_error = format!("{e:#}"),
                    }
                }
                Ok(r)
            };
            let res = rounds();
            stop.store(true, Ordering::Relaxed);
            res
        })?;
        c.close();
        let hwm = rss_kib(pid, "VmHWM:").unwrap_or(0).max(peak.load(Ordering::Relaxed));
        Ok((rounds, hwm as f64 / 1024.0))
    })();
    // SAFETY: plain kill(2) of the child we started, by its pid.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    let (rounds, rss_mib) = result?;
    // What the configuration allows: bulk pool, queued requests of at most max_body each, and the
    // metadata region kept in memory.
    let bound_mib = (buffers * (max_io + 8192) + queue * (rustre_proto::frame::DEFAULT_MAX_BODY as usize)) as f64
        / f64::from(1u32 << 20)
        + meta_bytes as f64 / f64::from(1u32 << 20);
    Ok(DaemonFigures {
        rounds,
        rss_mib,
        bound_mib,
    })
}
