//! `rustre config check FILE`: validates a cluster file and names the line, column and field of
//! every mistake; `rustre config env FILE --mds | --ost N [--partner]`: the optional environment
//! file of one daemon's systemd unit (dist/systemd), whose settings otherwise all come from the
//! cluster file.

use super::{OpsError, out_err};
use crate::cluster::file::ClusterFile;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `rustre config check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The cluster file (format: cli/README.md).
    pub file: PathBuf,
}

/// Arguments of `rustre config env`.
#[derive(Args, Debug)]
pub struct EnvArgs {
    /// The cluster file.
    pub file: PathBuf,
    /// The MDS's /etc/rustre/mdsd.env.
    #[arg(long, conflicts_with = "ost", required_unless_present = "ost")]
    pub mds: bool,
    /// OST N's `/etc/rustre/ost<N>.env`.
    #[arg(long, value_name = "N")]
    pub ost: Option<u32>,
    /// For the failover node of that target: the daemon listens on the target's `failover`
    /// address and starts as a standby (`--partner --standby`).
    #[arg(long)]
    pub partner: bool,
    /// A cluster secret file overriding the cluster file's `secret` (`--secret`).
    #[arg(long, value_name = "FILE")]
    pub secret: Option<PathBuf>,
}

pub use crate::cluster::file::{Mistake, check_text};

/// `config check`: prints `FILE:LINE:COL: field: message` per mistake; exit 1 when any.
pub fn check(a: &CheckArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let text =
        std::fs::read_to_string(&a.file).map_err(|e| OpsError::usage(&a.file.display().to_string(), e.to_string()))?;
    let mistakes = check_text(&text);
    for m in &mistakes {
        writeln!(out, "{}", m.show(&a.file)).map_err(out_err)?;
    }
    if mistakes.is_empty() {
        writeln!(out, "{}: good", a.file.display()).map_err(out_err)?;
    }
    Ok(u8::from(!mistakes.is_empty()))
}

/// `config env`: the environment file of one daemon's unit.
pub fn env(a: &EnvArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let file = ClusterFile::load(&a.file).map_err(|e| OpsError::usage(&a.file.display().to_string(), e.to_string()))?;
    let mut args: Vec<String> = Vec::new();
    if a.partner {
        args.push("--partner --standby".into());
    }
    if let Some(s) = &a.secret {
        args.push(format!("--secret {}", s.display()));
    }
    let var = if a.mds {
        if a.partner && file.mds.failover.is_none() {
            return Err(OpsError::usage(
                "--partner",
                "the cluster file's [mds] names no `failover` address",
            ));
        }
        "RUSTRE_MDSD_ARGS"
    } else {
        let n = a.ost.unwrap_or(0);
        let o = file
            .osts
            .iter()
            .find(|o| o.index == n)
            .ok_or_else(|| OpsError::usage("--ost", format!("{n}: the cluster file has no such OST")))?;
        if a.partner && o.failover.is_none() {
            return Err(OpsError::usage(
                "--partner",
                format!("the cluster file's OST{n} names no `failover` address"),
            ));
        }
        "RUSTRE_OSTD_ARGS"
    };
    let text = format!(
        "# from {} by `rustre config env`; everything else comes from the cluster file\n{var}=\"{}\"\n",
        a.file.display(),
        args.join(" ")
    );
    out.write_all(text.as_bytes()).map_err(out_err)?;
    Ok(0)
}

// The checks' tests live beside them in the rustre-config crate.
