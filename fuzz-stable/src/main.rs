//! `rustre-fuzz`: runs the decoder fuzz targets for a fixed time each (see the library docs).

use clap::{CommandFactory, FromArgMatches, Parser};
use rustre_fuzz::{Limits, alloc, fuzz, replay, report, targets};
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static ALLOC: alloc::CountingAlloc = alloc::CountingAlloc;

/// Bounded fuzzing of every rustre decoder: mutated valid encodings and random bytes, for a
/// fixed time per target. Exits 1 on a panic, 2 on a hang, 3 on unbounded allocation, printing
/// the target, the seed and the failing input in hex.
#[derive(Parser, Debug)]
#[command(name = "rustre-fuzz", version)]
struct Cli {
    /// Targets to run (default: all).
    targets: Vec<String>,
    /// Target to run (the same as naming it; repeatable).
    #[arg(long = "target", value_name = "NAME")]
    target: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Run seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop each target after this many inputs instead of after --seconds.
    #[arg(long)]
    execs: Option<u64>,
    /// Longest one input may run, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Most MiB one input may allocate.
    #[arg(long, default_value_t = 64)]
    alloc_limit_mb: usize,
    /// Replay one input (hex, as printed in a failure report) on the named target.
    #[arg(long, value_name = "HEX")]
    input: Option<String>,
    /// Replay the input (hex) saved in FILE by a failure report.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    input_file: Option<std::path::PathBuf>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

fn target_list() -> String {
    let mut s = String::from("Targets:\n");
    for t in targets::all() {
        s.push_str(&format!("  {:<22} {}\n", t.name, t.about));
    }
    s
}

fn main() -> ExitCode {
    let cmd = Cli::command().after_help(target_list());
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if cli.list {
        print!("{}", target_list());
        return ExitCode::SUCCESS;
    }
    let mut names: Vec<String> = cli.targets.iter().chain(&cli.target).cloned().collect();
    if names.is_empty() {
        names = targets::all().iter().map(|t| t.name.to_string()).collect();
    }
    let mut chosen = Vec::new();
    for n in &names {
        match targets::find(n) {
            Some(t) => chosen.push(t),
            None => {
                eprintln!("rustre-fuzz: no target {n:?}\n{}", target_list());
                return ExitCode::from(64);
            }
        }
    }
    let limits = Limits {
        duration: Duration::from_secs_f64(cli.seconds.max(0.0)),
        max_execs: cli.execs,
        timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        alloc_limit: cli.alloc_limit_mb.saturating_mul(1 << 20),
    };
    let input = match &cli.input_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("rustre-fuzz: {}: {e}", p.display());
                return ExitCode::from(64);
            }
        },
        None => cli.input.clone(),
    };
    if let Some(hex) = &input {
        let Some(input) = report::unhex(hex) else {
            eprintln!("rustre-fuzz: --input is not hex");
            return ExitCode::from(64);
        };
        for t in &chosen {
            match replay(t, &input, &limits) {
                Ok(accepted) => println!(
                    "{}: input {} (no failure)",
                    t.name,
                    if accepted { "accepted" } else { "refused" }
                ),
                Err(f) => {
                    eprintln!("{f}");
                    return ExitCode::from(1);
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "rustre-fuzz: seed {seed}, {} target(s), {} per target, input limits {} ms and {} MiB{}",
        chosen.len(),
        match cli.execs {
            Some(n) => format!("{n} inputs"),
            None => format!("{:.1} s", limits.duration.as_secs_f64()),
        },
        limits.timeout.as_millis(),
        cli.alloc_limit_mb,
        if alloc::installed() {
            ""
        } else {
            " (allocation counting inactive)"
        }
    );
    let mut total = 0u64;
    for t in &chosen {
        match fuzz(t, seed, &limits) {
            Ok(s) => {
                total += s.execs;
                println!(
                    "{:<22} {:>9} execs {:>8.0}/s  accepted {:>5.1}%  seeds {}/{} accepted  peak {:.1} MiB/input",
                    t.name,
                    s.execs,
                    s.execs as f64 / s.elapsed.as_secs_f64().max(1e-9),
                    100.0 * s.accepted as f64 / s.execs.max(1) as f64,
                    s.seeds_accepted,
                    s.seeds,
                    s.peak_alloc as f64 / f64::from(1 << 20)
                );
            }
            Err(f) => {
                eprintln!("{f}");
                eprint!("{}", report::save_input(f.target, f.seed, f.exec, &f.input));
                eprintln!("  rerun: rustre-fuzz --seed {seed} --target {}", t.name);
                return ExitCode::from(1);
            }
        }
    }
    println!("rustre-fuzz: {total} inputs, no failure (seed {seed})");
    ExitCode::SUCCESS
}
