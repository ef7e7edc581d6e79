//! `rustre config check FILE`: validates a cluster file and names the line, column and field of
//! every mistake; `rustre config env FILE --mds | --ost N`: the environment file of one daemon's
//! systemd unit (dist/systemd), derived from the cluster file.

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
    /// Cluster secret file the daemons are given (`--secret`).
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
    let secret = a
        .secret
        .as_ref()
        .map(|s| format!("--secret {}", s.display()))
        .unwrap_or_default();
    let mut text = format!(
        "# from {} by `rustre config env`\nRUST_LOG={}\n",
        a.file.display(),
        file.log.as_deref().unwrap_or("info")
    );
    if a.mds {
        let osts: Vec<String> = file.ost_lists().iter().map(|l| format!("--ost {l}")).collect();
        text += &format!(
            "RUSTRE_MDT_DEVICE={}\nRUSTRE_MDS_LISTEN={}\nRUSTRE_MDS_OSTS=\"{}\"\nRUSTRE_MDSD_ARGS=\"{secret}\"\n",
            file.mds.device.display(),
            file.mds.address,
            osts.join(" ")
        );
    } else {
        let n = a.ost.unwrap_or(0);
        let o = file
            .osts
            .iter()
            .find(|o| o.index == n)
            .ok_or_else(|| OpsError::usage("--ost", format!("{n}: the cluster file has no such OST")))?;
        text += &format!(
            "RUSTRE_OST_DEVICE={}\nRUSTRE_OST_LISTEN={}\nRUSTRE_OSTD_ARGS=\"{secret}\"\n",
            o.device.display(),
            o.address
        );
    }
    out.write_all(text.as_bytes()).map_err(out_err)?;
    Ok(0)
}

// The checks' tests live beside them in the rustre-config crate.
