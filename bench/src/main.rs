//! `rustre-bench`: each subcommand measures rustre and its baseline in the same run and prints the
//! ratio. Subcommands live in their own modules (`fabric`, and `ost`, `md`, `io500` beside it).

mod ceiling;
mod fabric;
mod failover;
mod io500;
mod md;
mod ost;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rustre-bench",
    version,
    about = "rustre benchmarks, each beside its baseline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// RPC latency and bulk bandwidth of a fabric provider beside the raw transport.
    Fabric(fabric::FabricArgs),
    /// Sequential object writes and reads through ostd's object path beside fio on the same device.
    Ost(ost::OstArgs),
    /// Create, stat and unlink rates of mdsd over tcp beside the null RPC rate.
    Md(md::MdArgs),
    /// IO500 phases on rustre beside POSIX on a local directory, fio and the transport; a score.
    Io500(io500::Io500Args),
    /// Time from kill -9 of the active MDS / OSS to the first successful client operation.
    Failover(failover::FailoverArgs),
    /// One rank process of `io500` (started by it).
    #[command(hide = true)]
    Io500Rank(io500::RankArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Fabric(args) => fabric::run(&args),
        Command::Ost(args) => ost::run(&args),
        Command::Md(args) => md::run(&args),
        Command::Io500(args) => io500::run(&args),
        Command::Io500Rank(args) => io500::run_rank(&args),
        Command::Failover(args) => failover::run(&args),
    }
}
