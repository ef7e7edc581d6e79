//! `rustre-bench fabric`: RPC round-trip latency (null calls) and bulk bandwidth (server pulls of
//! 1 MiB, several in flight) of one fabric provider, beside the raw transport measured in the same
//! run: a plain TCP socket loop between two threads for tcp (1-byte ping-pong, 1 MiB writes), an
//! in-process channel ping-pong and memcpy for sim, perftest for verbs ([`verbs_latency`]).

use crate::ost::gib_s;
use anyhow::{Context, bail};
use parking_lot::Mutex;
use rustre_fabric::{Address, BufferPool, Bulk, ClientConn, ConnOptions, Listener, ServerConn};
use rustre_proto::frame::FLAG_ERROR;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A null call.
const OP_NULL: u16 = 900;
/// Pull the descriptor in the body (rkey u32, len u64, addr u64) into a pool buffer.
const OP_PULL: u16 = 901;
/// Latency samples kept per phase (the loop stops early when full).
const MAX_SAMPLES: usize = 2_000_000;

/// Which provider to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// TCP sockets.
    Tcp,
    /// The in-process simulator.
    Sim,
    /// RDMA verbs.
    Verbs,
}

/// `rustre-bench fabric` options.
#[derive(clap::Args, Debug)]
pub struct FabricArgs {
    /// Provider to measure.
    #[arg(long, value_enum, default_value = "tcp")]
    pub provider: Provider,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seconds per phase (`rounds` latency and `rounds` bandwidth phases each for ours and the
    /// baseline, alternating; each side's best counts).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Bulk transfers in flight.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// Latency and bandwidth phases per side; the best of each is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Bytes per bulk transfer.
    #[arg(long, default_value_t = 1 << 20)]
    pub size: usize,
    /// Address to listen on (default: tcp://127.0.0.1:0, sim://bench-fabric, verbs://127.0.0.1:0;
    /// verbs needs the address of an RDMA-capable interface).
    #[arg(long)]
    pub listen: Option<String>,
}

/// Latency and bandwidth of one side (ours or the baseline).
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Median round trip, µs.
    pub latency_median_us: f64,
    /// 99th percentile round trip, µs.
    pub latency_p99_us: f64,
    /// Bulk bandwidth, GiB/s.
    pub gib_s: f64,
}

/// A baseline and what it is.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// What was measured, for the table.
    pub name: String,
    /// The figures.
    pub figures: Figures,
}

/// Runs the benchmark and prints the table (and writes JSON when asked).
pub fn run(args: &FabricArgs) -> anyhow::Result<()> {
    if args.seconds <= 0.0 || !args.seconds.is_finite() {
        bail!("--seconds must be positive, got {}", args.seconds);
    }
    if args.rounds == 0 || args.rounds > 100 {
        bail!("--rounds must be in 1..=100, got {}", args.rounds);
    }
    if args.inflight == 0 || args.inflight > 1024 {
        bail!("--inflight must be in 1..=1024, got {}", args.inflight);
    }
    if args.size == 0 || args.size > 64 << 20 {
        bail!("--size must be in 1..=64 MiB, got {}", args.size);
    }
    let phase = Duration::from_secs_f64(args.seconds);
    let addr: Address = match (&args.listen, args.provider) {
        (Some(a), _) => a.parse().with_context(|| format!("--listen {a}"))?,
        (None, Provider::Tcp) => "tcp://127.0.0.1:0".parse()?,
        (None, Provider::Sim) => "sim://bench-fabric".parse()?,
        (None, Provider::Verbs) => "verbs://127.0.0.1:0".parse()?,
    };
    let provider = format!("{:?}", args.provider).to_lowercase();
    if addr.scheme() != provider {
        bail!("--listen {addr} is not a {provider} address");
    }

    // Rounds of ours and of the baseline alternate, so that both see the same load.
    let size = args.size;
    let tcp_lat = || tcp_latency(phase);
    let sim_lat = || Ok(sim_latency(phase));
    let verbs_lat = || verbs_latency(args, phase);
    let lat_round: &dyn Fn() -> anyhow::Result<(f64, f64)> = match args.provider {
        Provider::Tcp => &tcp_lat,
        Provider::Sim => &sim_lat,
        Provider::Verbs => &verbs_lat,
    };
    let tcp_round = || tcp_bandwidth(size, phase);
    let sim_round = || Ok(memcpy_bandwidth(size, phase));
    let verbs_iters = std::cell::Cell::new(0);
    let verbs_round = || verbs_bandwidth(args, phase, &verbs_iters);
    let round: Option<&dyn Fn() -> anyhow::Result<f64>> = match args.provider {
        Provider::Tcp => Some(&tcp_round),
        Provider::Sim => Some(&sim_round),
        Provider::Verbs => Some(&verbs_round),
    };
    let (ours, base) = measure_ours(&addr, args, phase, round, lat_round)
        .with_context(|| format!("measuring {provider} on {addr}"))?;
    let baseline = match base {
        Ok((gib_s, (median, p99))) => Some(Baseline {
            name: match args.provider {
                Provider::Tcp => "plain TCP socket loop between two threads (1-byte ping-pong; 1 MiB writes)".into(),
                Provider::Sim => "in-process channel ping-pong between two threads; memcpy".into(),
                Provider::Verbs => verbs_baseline_name(args)?,
            },
            figures: Figures {
                latency_median_us: median,
                latency_p99_us: p99,
                gib_s,
            },
        }),
        Err(e) => {
            eprintln!("rustre-bench fabric: no baseline: {e:#}");
            None
        }
    };
    print_table(&provider, args, &ours, baseline.as_ref());
    if let Some(path) = &args.json {
        let j = to_json(&provider, args, &ours, baseline.as_ref());
        std::fs::write(path, serde_json::to_string_pretty(&j)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

fn to_json(provider: &str, args: &FabricArgs, ours: &Figures, base: Option<&Baseline>) -> serde_json::Value {
    let b = base.map(|b| b.figures);
    serde_json::json!({
        "provider": provider,
        "transfer_bytes": args.size,
        "inflight": args.inflight,
        "seconds_per_phase": args.seconds,
        "rpc_latency_us": ours.latency_median_us,
        "rpc_latency_p99_us": ours.latency_p99_us,
        "bulk_gib_s": ours.gib_s,
        "baseline": base.map(|b| b.name.clone()),
        "baseline_latency_us": b.map(|b| b.latency_median_us),
        "baseline_latency_p99_us": b.map(|b| b.latency_p99_us),
        "baseline_gib_s": b.map(|b| b.gib_s),
        "bulk_ratio": b.and_then(|b| ratio(ours.gib_s, b.gib_s)),
        "latency_ratio": b.and_then(|b| ratio(ours.latency_median_us, b.latency_median_us)),
    })
}

fn print_table(provider: &str, args: &FabricArgs, ours: &Figures, base: Option<&Baseline>) {
    let b = base.map(|b| b.figures);
    let name = base.map_or("(none)".to_string(), |b| b.name.clone());
    println!(
        "rustre-bench fabric: provider {provider}, {} KiB bulk pulls, {} in flight, {:.1} s per phase",
        args.size / 1024,
        args.inflight,
        args.seconds
    );
    println!("baseline: {name}");
    println!("{:<24}{:>14}{:>14}{:>10}", "", "rustre", "baseline", "ratio");
    let row = |label: &str, unit: &str, ours: f64, base: Option<f64>| {
        let fmt = |v: f64| format!("{v:.2} {unit}");
        let r = base
            .and_then(|b| ratio(ours, b))
            .map_or("-".to_string(), |r| format!("{r:.2}"));
        println!(
            "{label:<24}{:>14}{:>14}{r:>10}",
            fmt(ours),
            base.map_or("-".to_string(), fmt)
        );
    };
    row(
        "RPC latency median",
        "us",
        ours.latency_median_us,
        b.map(|b| b.latency_median_us),
    );
    row(
        "RPC latency p99",
        "us",
        ours.latency_p99_us,
        b.map(|b| b.latency_p99_us),
    );
    row("bulk bandwidth", "GiB/s", ours.gib_s, b.map(|b| b.gib_s));
}

/// Median and 99th percentile of samples in µs.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

// ---------------------------------------------------------------------------------------------
// Ours
// ---------------------------------------------------------------------------------------------

struct BenchServer {
    listener: Arc<dyn Listener>,
    conns: Arc<Mutex<Vec<Arc<dyn ServerConn>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BenchServer {
    fn start(addr: &Address, opts: &ConnOptions, args: &FabricArgs) -> anyhow::Result<(BenchServer, Address)> {
        let listener = rustre_fabric::listen(addr, opts)?;
        let pool = BufferPool::new(args.size, args.inflight).context("allocating the server buffer pool")?;
        listener.register_pool(&pool)?;
        let conns: Arc<Mutex<Vec<Arc<dyn ServerConn>>>> = Arc::default();
        let workers = args.inflight;
        let acceptor = {
            let (listener, conns) = (Arc::clone(&listener), Arc::clone(&conns));
            std::thread::spawn(move || {
                let mut threads = Vec::new();
                while let Ok(conn) = listener.accept() {
                    conns.lock().push(Arc::clone(&conn));
                    for _ in 0..workers {
                        let (conn, pool) = (Arc::clone(&conn), Arc::clone(&pool));
                        threads.push(std::thread::spawn(move || serve(&*conn, &pool)));
                    }
                }
                for t in threads {
                    let _ = t.join();
                }
            })
        };
        let local = listener.local_addr();
        Ok((
            BenchServer {
                listener,
                conns,
                threads: vec![acceptor],
            },
            local,
        ))
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.listener.shutdown();
        self.conns.lock().iter().for_each(|c| c.close());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(conn: &dyn ServerConn, pool: &Arc<BufferPool>) {
    while let Ok(req) = conn.recv() {
        let h = req.header;
        let result = match h.opcode {
            OP_NULL => conn.reply(&h, h.opcode, &[], false),
            OP_PULL if req.body.len() == 20 => {
                let rkey = u32::from_le_bytes([req.body[0], req.body[1], req.body[2], req.body[3]]);
                let mut len = [0u8; 8];
                len.copy_from_slice(&req.body[4..12]);
                let mut addr = [0u8; 8];
                addr.copy_from_slice(&req.body[12..20]);
                let desc = rustre_fabric::BulkDesc {
                    addr: u64::from_le_bytes(addr),
                    rkey,
                    len: u64::from_le_bytes(len),
                };
                let mut buf = pool.get();
                let n = (desc.len as usize).min(buf.len());
                match conn.pull(&desc, 0, &mut buf[..n]) {
                    Ok(()) => conn.reply(&h, h.opcode, &[], false),
                    Err(e) => conn.reply(&h, h.opcode, e.to_string().as_bytes(), true),
                }
            }
            _ => conn.reply(&h, h.opcode, b"unknown bench opcode", true),
        };
        if result.is_err() {
            return;
        }
    }
}

/// Measures ours: `rounds` latency phases, each followed by one of the baseline's
/// (`baseline_latency`: median and p99), then `rounds` bandwidth phases, each followed by one of
/// the baseline's (`baseline_round`). Each side's best phase counts (lowest median, highest
/// bandwidth): a busy machine slows a phase down, never speeds it up. The baseline's figures, or
/// why it could not be measured (ours are measured regardless).
fn measure_ours(
    addr: &Address,
    args: &FabricArgs,
    phase: Duration,
    baseline_round: Option<&dyn Fn() -> anyhow::Result<f64>>,
    baseline_latency: &dyn Fn() -> anyhow::Result<(f64, f64)>,
) -> anyhow::Result<(Figures, anyhow::Result<(f64, Latency)>)> {
    let opts = ConnOptions {
        client_id: 1,
        credits: (args.inflight as u32 * 2).max(64),
        max_body: (args.size as u32 + 64 * 1024).max(rustre_fabric::ConnOptions::default().max_body),
        ..ConnOptions::default()
    };
    let (server, local) = BenchServer::start(addr, &opts, args)?;
    let client = rustre_fabric::connect(&local, &opts)?;

    // Warm up, then latency: one caller, null calls back to back.
    for _ in 0..1000 {
        client.call(OP_NULL, &[])?;
    }
    let best = |a: Option<Latency>, b: Latency| Some(a.filter(|a| a.0 <= b.0).unwrap_or(b));
    let mut ours_lat: Option<Latency> = None;
    let mut base_lat: anyhow::Result<Option<Latency>> = Ok(None);
    for _ in 0..args.rounds {
        let mut samples = Vec::with_capacity(1 << 16);
        let start = Instant::now();
        while start.elapsed() < phase && samples.len() < MAX_SAMPLES {
            let t = Instant::now();
            let r = client.call(OP_NULL, &[])?;
            samples.push(t.elapsed());
            check_reply(&r)?;
        }
        ours_lat = best(ours_lat, percentiles(samples));
        if let Ok(b) = &base_lat {
            base_lat = baseline_latency().map(|x| best(*b, x));
        }
    }
    let (median, p99) = ours_lat.unwrap_or((f64::NAN, f64::NAN));

    let mut gib = 0f64;
    let mut base: Option<f64> = None;
    for _ in 0..args.rounds {
        gib = gib.max(bulk_bandwidth(&client, args, phase)?);
        if let Some(f) = baseline_round {
            let b = f()?;
            base = Some(base.map_or(b, |x| x.max(b)));
        }
    }
    drop(client);
    drop(server);
    let figures = Figures {
        latency_median_us: median,
        latency_p99_us: p99,
        gib_s: gib,
    };
    let base = base_lat.and_then(|l| {
        let l = l.context("no baseline latency round ran")?;
        Ok((base.unwrap_or(f64::NAN), l))
    });
    Ok((figures, base))
}

/// A latency phase's median and 99th percentile, µs.
type Latency = (f64, f64);

fn check_reply(r: &rustre_fabric::Reply) -> anyhow::Result<()> {
    if r.header.flags & FLAG_ERROR != 0 {
        bail!("server error: {}", String::from_utf8_lossy(&r.body));
    }
    Ok(())
}

fn bulk_bandwidth(client: &Arc<dyn ClientConn>, args: &FabricArgs, phase: Duration) -> anyhow::Result<f64> {
    let bytes = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let result: Result<(), anyhow::Error> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.inflight)
            .map(|i| {
                let (client, bytes, stop) = (client, &bytes, &stop);
                s.spawn(move || -> anyhow::Result<()> {
                    let data: Vec<u8> = (0..args.size).map(|j| (i + j) as u8).collect();
                    while !stop.load(Ordering::Relaxed) {
                        let r = client.call_bulk(OP_PULL, Bulk::Source(&data), &mut |d| {
                            let mut b = Vec::with_capacity(20);
                            b.extend_from_slice(&d.rkey.to_le_bytes());
                            b.extend_from_slice(&d.len.to_le_bytes());
                            b.extend_from_slice(&d.addr.to_le_bytes());
                            b
                        })?;
                        check_reply(&r)?;
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    Ok::<(), anyhow::Error>(())
                })
            })
            .collect();
        std::thread::sleep(phase);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("bulk worker panicked"))??;
        }
        Ok(())
    });
    result?;
    Ok(gib_s(bytes.load(Ordering::Relaxed), start.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// Baselines
// ---------------------------------------------------------------------------------------------

/// The tcp latency baseline: a 1-byte ping-pong between two threads over a plain loopback socket
/// for `phase`; median and p99 in µs.
fn tcp_latency(phase: Duration) -> anyhow::Result<(f64, f64)> {
    let io = |what: &'static str| move |e: std::io::Error| anyhow::anyhow!("baseline {what}: {e}");
    // Latency.
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind"))?;
    let at = l.local_addr().map_err(io("getsockname"))?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(at).map_err(io("connect"))?;
    c.set_nodelay(true).map_err(io("setsockopt"))?;
    let mut b = [7u8; 1];
    let mut samples = Vec::with_capacity(1 << 16);
    for _ in 0..1000 {
        c.write_all(&b).map_err(io("send"))?;
        c.read_exact(&mut b).map_err(io("recv"))?;
    }
    let start = Instant::now();
    while start.elapsed() < phase && samples.len() < MAX_SAMPLES {
        let t = Instant::now();
        c.write_all(&b).map_err(io("send"))?;
        c.read_exact(&mut b).map_err(io("recv"))?;
        samples.push(t.elapsed());
    }
    drop(c);
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?
        .map_err(io("echo"))?;
    Ok(percentiles(samples))
}

/// One stream of `size`-byte writes from one thread to another over loopback for `phase`.
pub fn tcp_bandwidth(size: usize, phase: Duration) -> anyhow::Result<f64> {
    let io = |what: &'static str| move |e: std::io::Error| anyhow::anyhow!("baseline {what}: {e}");
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind"))?;
    let at = l.local_addr().map_err(io("getsockname"))?;
    let sink = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; size];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((total, Instant::now())),
                n => total += n as u64,
            }
        }
    });
    let mut c = TcpStream::connect(at).map_err(io("connect"))?;
    c.set_nodelay(true).map_err(io("setsockopt"))?;
    let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let start = Instant::now();
    while start.elapsed() < phase {
        c.write_all(&data).map_err(io("send"))?;
    }
    drop(c);
    let (total, end) = sink
        .join()
        .map_err(|_| anyhow::anyhow!("sink thread panicked"))?
        .map_err(io("sink"))?;
    Ok(gib_s(total, end - start))
}

/// The in-process latency limit: a channel ping-pong between two threads; median and p99 in µs.
fn sim_latency(phase: Duration) -> (f64, f64) {
    let (to_tx, to_rx) = crossbeam::channel::bounded::<u8>(1);
    let (back_tx, back_rx) = crossbeam::channel::bounded::<u8>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(v) = to_rx.recv() {
            if back_tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    while start.elapsed() < phase && samples.len() < MAX_SAMPLES {
        let t = Instant::now();
        if to_tx.send(1u8).is_err() || back_rx.recv().is_err() {
            break;
        }
        samples.push(t.elapsed());
    }
    drop(to_tx);
    let _ = echo.join();
    percentiles(samples)
}

/// memcpy of `size`-byte buffers for `phase`, GiB/s.
fn memcpy_bandwidth(size: usize, phase: Duration) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; size];
    let mut total = 0u64;
    let start = Instant::now();
    while start.elapsed() < phase {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        total += size as u64;
    }
    gib_s(total, start.elapsed())
}

/// Where perftest runs: `--listen`'s IP (so rdma_cm picks the device ours uses) and, when set,
/// `RUSTRE_VERBS_DEVICE` / `RUSTRE_RXE_DEVICE`.
fn perftest_target(args: &FabricArgs) -> anyhow::Result<(std::net::IpAddr, Option<String>)> {
    let ip = match args.listen.as_deref().map(str::parse::<Address>) {
        Some(Ok(Address::Verbs(sa))) => sa.ip(),
        _ => "127.0.0.1".parse()?,
    };
    let device = std::env::var("RUSTRE_VERBS_DEVICE")
        .or_else(|_| std::env::var("RUSTRE_RXE_DEVICE"))
        .ok();
    Ok((ip, device))
}

/// One bandwidth round of the verbs baseline: `ib_write_bw` with `args.size` messages, GiB/s.
/// Its duration mode reports no iterations over rdma_cm, so the iteration count comes from a
/// short probe (kept in `iters` for later rounds) and makes a run last about `phase`.
pub fn verbs_bandwidth(args: &FabricArgs, phase: Duration, iters: &std::cell::Cell<u64>) -> anyhow::Result<f64> {
    let (ip, device) = perftest_target(args)?;
    let size = args.size.to_string();
    let mib_s = |n: u64| -> anyhow::Result<f64> {
        let n = n.to_string();
        let out = perftest(
            "ib_write_bw",
            &["-s", &size, "-n", &n],
            ip,
            device.as_deref(),
            18_516,
            phase,
        )?;
        let row = perftest_row(&out, "BW average").context("parsing ib_write_bw output")?;
        // Columns: #bytes #iterations BW-peak BW-average MsgRate; BW in MiB/s.
        col(&row, 3)
    };
    if iters.get() == 0 {
        let probe = mib_s(16)?;
        let per_phase = probe * 1_048_576.0 * phase.as_secs_f64() / args.size as f64;
        iters.set((per_phase as u64).clamp(32, 1_000_000));
    }
    Ok(mib_s(iters.get())? / 1024.0)
}

/// The verbs latency baseline: perftest's `ib_send_lat` on the same RDMA device and address as
/// ours, for about `phase`. `ib_send_lat` reports one-way latency (half its ping-pong), so the
/// round trip compared with our RPC is twice its `t_typical` (median) and 99th percentile.
fn verbs_latency(args: &FabricArgs, phase: Duration) -> anyhow::Result<(f64, f64)> {
    let (ip, device) = perftest_target(args)?;
    let secs = phase.as_secs_f64().ceil().max(1.0) as u64;
    // About `phase` worth of ping-pongs at a few µs each, bounded for slow (emulated) devices.
    let iters = (secs * 20_000).clamp(1_000, 200_000).to_string();
    let lat = perftest("ib_send_lat", &["-n", &iters], ip, device.as_deref(), 18_515, phase)?;
    let lat_row = perftest_row(&lat, "t_typical").context("parsing ib_send_lat output")?;
    // Columns: #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%.
    let (typical, p99) = (col(&lat_row, 4)?, col(&lat_row, 7)?);
    Ok((2.0 * typical, 2.0 * p99))
}

/// What the verbs baseline is: `ib_send_lat` (round trip = 2 × one-way) and `ib_write_bw` on the
/// same device as ours.
fn verbs_baseline_name(args: &FabricArgs) -> anyhow::Result<String> {
    let (ip, device) = perftest_target(args)?;
    Ok(format!(
        "perftest over rdma_cm on {ip}{}: ib_send_lat round trip (2 x one-way t_typical), ib_write_bw {} KiB messages",
        device.map(|d| format!(" ({d})")).unwrap_or_default(),
        args.size / 1024
    ))
}

/// Kills a perftest process that is still running when dropped.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs one perftest program as server and client (rdma_cm, port `port`) and returns the client's
/// output. Both are killed if they overrun `phase` by more than a minute.
fn perftest(
    prog: &str,
    extra: &[&str],
    ip: std::net::IpAddr,
    device: Option<&str>,
    port: u16,
    phase: Duration,
) -> anyhow::Result<String> {
    use std::process::{Command, Stdio};
    let mut common: Vec<String> = vec!["-R".into(), "-F".into(), "-p".into(), port.to_string()];
    if let Some(d) = device {
        common.extend(["-d".into(), d.into()]);
    }
    common.extend(extra.iter().map(|s| s.to_string()));
    let spawn = |with_ip: bool| {
        let mut c = Command::new(prog);
        c.args(&common)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if with_ip {
            c.arg(ip.to_string());
        }
        c.spawn().with_context(|| format!("starting {prog} (install perftest)"))
    };
    let deadline = Instant::now() + phase + Duration::from_secs(60);
    let server = Reap(spawn(false)?);
    // The server needs a moment to listen; a client that came too early fails at once: retry.
    let mut client_out = None;
    for attempt in 0..20 {
        std::thread::sleep(Duration::from_millis(if attempt == 0 { 300 } else { 500 }));
        let client = Reap(spawn(true)?);
        let out = wait_output(client, deadline).with_context(|| format!("{prog} client"))?;
        if out.0.success() {
            client_out = Some(out.1);
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let out = client_out.with_context(|| format!("{prog} client never connected to its server on {ip}:{port}"))?;
    let _ = wait_output(server, Instant::now() + Duration::from_secs(10));
    Ok(out)
}

/// Waits for `child` to exit (killing it at `deadline`) and returns its status and stdout+stderr.
fn wait_output(mut child: Reap, deadline: Instant) -> anyhow::Result<(std::process::ExitStatus, String)> {
    loop {
        if let Some(status) = child.0.try_wait()? {
            let mut text = String::new();
            if let Some(mut o) = child.0.stdout.take() {
                o.read_to_string(&mut text)?;
            }
            if let Some(mut e) = child.0.stderr.take() {
                e.read_to_string(&mut text)?;
            }
            return Ok((status, text));
        }
        if Instant::now() >= deadline {
            bail!("timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The numbers on the line after perftest's result header (the one containing `marker`).
fn perftest_row(out: &str, marker: &str) -> anyhow::Result<Vec<f64>> {
    let mut lines = out
        .lines()
        .skip_while(|l| !(l.contains("#bytes") && l.contains(marker)));
    lines
        .next()
        .with_context(|| format!("no result header with {marker:?} in:\n{out}"))?;
    let row = lines
        .find(|l| l.split_whitespace().next().is_some_and(|t| t.parse::<u64>().is_ok()))
        .with_context(|| format!("no result row in:\n{out}"))?;
    Ok(row.split_whitespace().filter_map(|t| t.parse::<f64>().ok()).collect())
}

fn col(row: &[f64], i: usize) -> anyhow::Result<f64> {
    row.get(i)
        .copied()
        .with_context(|| format!("perftest result row {row:?} has no column {i}"))
}
