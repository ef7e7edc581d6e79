//! `rustre-bench`: each subcommand measures rustre and its baseline in the same run and prints the
//! ratio. Subcommands live in their own modules (`fabric`, and `ost`, `md`, `io500` beside it).

mod fabric;
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
    }
}
