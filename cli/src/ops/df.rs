//! `rustre df`: space per MDT and OST and the file system summary, in `lfs df`'s shape.

use super::{ConfigArg, OpsError, out_err};
use crate::size::human;
use clap::Args;
use std::io::Write;

/// Arguments of `rustre df`.
#[derive(Args, Debug)]
pub struct DfArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Sizes in K, M, G, T instead of 1K blocks.
    #[arg(short = 'h', long = "human-readable")]
    human: bool,
    /// Print help (`-h` is --human-readable here, as in `lfs df`).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DfRow {
    /// `fsname-OST0000_UUID` and the like.
    pub uuid: String,
    /// Total, used and available bytes (`None`: the target does not report bytes).
    pub bytes: Option<(u64, u64, u64)>,
    /// `[OST:0]`, `[MDT:0]`, or the file system name for the summary.
    pub on: String,
}

fn cell(v: u64, human_units: bool) -> String {
    if human_units {
        human(v).replace(' ', "")
    } else {
        (v / 1024).to_string()
    }
}

/// Renders the rows as `lfs df` does.
pub fn render(rows: &[DfRow], human_units: bool, out: &mut impl Write) -> std::io::Result<()> {
    let unit = if human_units { "bytes" } else { "1K-blocks" };
    writeln!(
        out,
        "{:<24}{:>14}{:>14}{:>14}{:>6} Mounted on",
        "UUID", unit, "Used", "Available", "Use%"
    )?;
    for r in rows {
        match r.bytes {
            Some((total, used, avail)) => {
                let pct = if total == 0 { 0 } else { (used * 100).div_ceil(total) };
                writeln!(
                    out,
                    "{:<24}{:>14}{:>14}{:>14}{:>5}% {}",
                    r.uuid,
                    cell(total, human_units),
                    cell(used, human_units),
                    cell(avail, human_units),
                    pct,
                    r.on
                )?;
            }
            None => writeln!(
                out,
                "{:<24}{:>14}{:>14}{:>14}{:>6} {}",
                r.uuid, "-", "-", "-", "-", r.on
            )?,
        }
    }
    Ok(())
}

/// `df`.
pub fn df(a: &DfArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let client = a.config.connect()?;
    let r = (|| {
        let sf = client.statfs().map_err(|e| OpsError::path("statfs", e))?;
        let osts = client.statfs_osts().map_err(|e| OpsError::path("statfs", e))?;
        Ok::<_, OpsError>((sf, osts))
    })();
    client.disconnect();
    let (sf, osts) = r?;
    let fs = sf.fsname.clone();
    let mut rows = vec![DfRow {
        uuid: format!("{fs}-MDT0000_UUID"),
        bytes: None,
        on: format!("[MDT:0] ({} of {} inodes free)", sf.free_inodes, sf.total_inodes),
    }];
    let mut stale = Vec::new();
    for o in &osts {
        rows.push(DfRow {
            uuid: format!("{fs}-OST{:04x}_UUID", o.index),
            bytes: Some((o.total_bytes, o.total_bytes.saturating_sub(o.free_bytes), o.free_bytes)),
            on: format!("[OST:{}]{}", o.index, if o.available { "" } else { " (not answering)" }),
        });
        if !o.available {
            stale.push(o.index);
        }
    }
    rows.push(DfRow {
        uuid: "filesystem_summary:".into(),
        bytes: Some((
            sf.total_bytes,
            sf.total_bytes.saturating_sub(sf.free_bytes),
            sf.avail_bytes,
        )),
        on: fs,
    });
    render(&rows, a.human, out).map_err(out_err)?;
    Ok(u8::from(!stale.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_render_like_lfs_df() {
        let rows = [
            DfRow {
                uuid: "fs-OST0000_UUID".into(),
                bytes: Some((4 << 30, 1 << 30, 3 << 30)),
                on: "[OST:0]".into(),
            },
            DfRow {
                uuid: "fs-MDT0000_UUID".into(),
                bytes: None,
                on: "[MDT:0]".into(),
            },
        ];
        let mut v = Vec::new();
        render(&rows, false, &mut v).unwrap();
        let s = String::from_utf8(v).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].starts_with("UUID") && lines[0].contains("1K-blocks"));
        let f: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            f,
            ["fs-OST0000_UUID", "4194304", "1048576", "3145728", "25%", "[OST:0]"]
        );
        assert!(lines[2].contains(" - "));
        let mut h = Vec::new();
        render(&rows[..1], true, &mut h).unwrap();
        assert!(String::from_utf8(h).unwrap().contains(" 4.0GiB "));
    }
}
