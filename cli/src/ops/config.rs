//! `rustre config check FILE`: validates a cluster file and names the line, column and field of
//! every mistake; `rustre config env FILE --mds | --ost N`: the environment file of one daemon's
//! systemd unit (dist/systemd), derived from the cluster file.

use super::{OpsError, out_err};
use crate::cluster::file::{ClusterFile, FabricKind, check_fsname};
use clap::Args;
use std::collections::HashMap;
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

/// One mistake in a cluster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mistake {
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// 1-based column (0: unknown).
    pub column: usize,
    /// The field, as `ost[1].address` (empty when not known).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Where a key sits: the top level, `[mds]`, or the n-th `[[ost]]` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Root,
    Mds,
    Ost(usize),
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, col)
}

/// The line of `key` in `section` (0 when absent).
fn line_of(text: &str, section: Section, key: &str) -> usize {
    let mut cur = Section::Root;
    let mut osts = 0;
    let mut section_line = 0;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with("[[ost]]") {
            cur = Section::Ost(osts);
            osts += 1;
        } else if t.starts_with("[mds]") {
            cur = Section::Mds;
        } else if t.starts_with('[') {
            cur = Section::Root;
            continue;
        }
        if cur == section && section_line == 0 {
            section_line = i + 1;
        }
        if cur == section && t.split('=').next().map(str::trim) == Some(key) && t.contains('=') {
            return i + 1;
        }
    }
    section_line
}

/// Checks the text of a cluster file; an empty list means it is good.
pub fn check_text(text: &str) -> Vec<Mistake> {
    let file: ClusterFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            let field = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .unwrap_or_default();
            return vec![Mistake {
                line,
                column,
                field,
                message: e.message().trim().to_string(),
            }];
        }
    };
    let mut out = Vec::new();
    let mut bad = |section: Section, key: &str, field: String, message: String| {
        out.push(Mistake {
            line: line_of(text, section, key),
            column: 0,
            field,
            message,
        });
    };
    if file.version != crate::cluster::file::FORMAT_VERSION {
        bad(
            Section::Root,
            "version",
            "version".into(),
            format!("{} is not supported (expected 1)", file.version),
        );
    }
    if let Err(e) = check_fsname(&file.fsname) {
        bad(Section::Root, "fsname", "fsname".into(), e);
    }
    if let Some(level) = &file.log
        && let Err(e) = crate::cluster::file::check_log(level)
    {
        bad(Section::Root, "log", "log".into(), e);
    }
    if file.osts.is_empty() {
        bad(
            Section::Root,
            "",
            "ost".into(),
            "no [[ost]] entries: a cluster needs at least one OST".into(),
        );
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let scheme = match file.fabric {
        FabricKind::Auto => None,
        f => Some(format!("{}://", f.scheme())),
    };
    let mut address =
        |section: Section, field: String, addr: &str, bad: &mut dyn FnMut(Section, &str, String, String)| {
            if let Err(e) = rustre::ClientConfig::from_addresses(addr) {
                bad(section, "address", field.clone(), format!("{addr:?}: {e}"));
            } else if let Some(s) = &scheme
                && !addr.starts_with(s.as_str())
            {
                bad(
                    section,
                    "address",
                    field.clone(),
                    format!("{addr:?} is not on the {} fabric the file names", file.fabric),
                );
            }
            if let Some(other) = seen.insert(addr.to_string(), field.clone()) {
                bad(section, "address", field, format!("{addr:?} is also {other}'s address"));
            }
        };
    address(Section::Mds, "mds.address".into(), &file.mds.address, &mut bad);
    // Devices are per node: the same path on two hosts is two devices.
    let node = |addr: &str| -> String {
        let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
        rest.rsplit_once(':').map_or(rest, |(h, _)| h).to_string()
    };
    let mut devices: Vec<(String, String, Section)> = vec![(
        format!("{}:{}", node(&file.mds.address), file.mds.device.display()),
        "mds.device".into(),
        Section::Mds,
    )];
    for (i, o) in file.osts.iter().enumerate() {
        let s = Section::Ost(i);
        if o.index as usize != i {
            bad(
                s,
                "index",
                format!("ost[{i}].index"),
                format!("{}: indexes must be 0, 1, 2, … in order (expected {i})", o.index),
            );
        }
        address(s, format!("ost[{i}].address"), &o.address, &mut bad);
        devices.push((
            format!("{}:{}", node(&o.address), o.device.display()),
            format!("ost[{i}].device"),
            s,
        ));
    }
    for (i, (dev, field, s)) in devices.iter().enumerate() {
        let (host, path) = dev.split_once(':').unwrap_or(("", dev));
        if !path.starts_with('/') {
            bad(*s, "device", field.clone(), format!("{path:?} is not an absolute path"));
        }
        if let Some((_, other, _)) = devices[..i].iter().find(|(d, ..)| d == dev) {
            bad(
                *s,
                "device",
                field.clone(),
                format!("{path:?} on {host} is also {other}"),
            );
        }
    }
    if file.mds.size == 0 {
        bad(Section::Mds, "size", "mds.size".into(), "0 bytes".into());
    }
    for (i, o) in file.osts.iter().enumerate() {
        if o.size == 0 {
            bad(Section::Ost(i), "size", format!("ost[{i}].size"), "0 bytes".into());
        }
    }
    out.sort_by_key(|m| m.line);
    out
}

/// `config check`: prints `FILE:LINE:COL: field: message` per mistake; exit 1 when any.
pub fn check(a: &CheckArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let text =
        std::fs::read_to_string(&a.file).map_err(|e| OpsError::usage(&a.file.display().to_string(), e.to_string()))?;
    let mistakes = check_text(&text);
    for m in &mistakes {
        let field = if m.field.is_empty() {
            String::new()
        } else {
            format!(" field `{}`:", m.field)
        };
        let at = match (m.line, m.column) {
            (0, _) => String::new(),
            (l, 0) => format!("{l}:"),
            (l, c) => format!("{l}:{c}:"),
        };
        writeln!(out, "{}:{at}{field} {}", a.file.display(), m.message).map_err(out_err)?;
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
        let osts: Vec<String> = file
            .osts
            .iter()
            .map(|o| format!("--ost {}={}", o.index, o.address))
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"version = 1
fsname = "scratch"
fabric = "tcp"
host = "10.0.0.1"

[mds]
address = "tcp://10.0.0.1:7000"
device = "/dev/nvme0n1"
size = 1073741824

[[ost]]
index = 0
address = "tcp://10.0.0.2:7001"
device = "/dev/nvme1n1"
size = 4294967296

[[ost]]
index = 1
address = "tcp://10.0.0.3:7001"
device = "/dev/nvme1n1"
size = 4294967296
"#;

    #[test]
    fn a_good_file_has_no_mistakes() {
        assert_eq!(check_text(GOOD), []);
    }

    #[test]
    fn syntax_and_type_mistakes_carry_line_and_field() {
        let t = GOOD.replace("size = 1073741824", "size = \"1G\"");
        let m = check_text(&t);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!((m[0].line, m[0].field.as_str()), (9, "size"), "{m:?}");
        let t = GOOD.replace("fabric = \"tcp\"", "fabrik = \"tcp\"");
        let m = check_text(&t);
        assert_eq!(m[0].line, 3, "{m:?}");
        assert!(m[0].message.contains("fabrik"), "{m:?}");
        let m = check_text("version = 1\nfsname = \n");
        assert_eq!(m[0].line, 2, "{m:?}");
    }

    #[test]
    fn semantic_mistakes_are_all_reported_with_their_lines() {
        let t = GOOD
            .replace("index = 1", "index = 2")
            .replace("tcp://10.0.0.3:7001", "tcp://10.0.0.2:7001")
            .replace("fsname = \"scratch\"", "fsname = \"much-too-long\"")
            .replacen("device = \"/dev/nvme1n1\"", "device = \"nvme1n1\"", 1);
        let m = check_text(&t);
        let got: Vec<(usize, &str)> = m.iter().map(|m| (m.line, m.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "fsname"),
                (14, "ost[0].device"),
                (18, "ost[1].index"),
                (19, "ost[1].address")
            ],
            "{m:?}"
        );
        assert!(m[3].message.contains("ost[0].address"), "{m:?}");
        let t = GOOD.replace("tcp://10.0.0.3:7001", "tcp://10.0.0.2:7002");
        let m = check_text(&t);
        assert_eq!((m[0].line, m[0].field.as_str()), (20, "ost[1].device"), "{m:?}");
        let t = GOOD.replace("host = \"10.0.0.1\"", "host = \"10.0.0.1\"\nlog = \"info,ostd=loud\"");
        let m = check_text(&t);
        assert_eq!((m[0].line, m[0].field.as_str()), (5, "log"), "{m:?}");
        let t = GOOD.replace("host = \"10.0.0.1\"", "host = \"10.0.0.1\"\nlog = \"warn,ostd=debug\"");
        assert_eq!(check_text(&t), []);
        let t = GOOD.replace("tcp://10.0.0.3:7001", "verbs://10.0.0.3:7001");
        let m = check_text(&t);
        assert_eq!((m[0].line, m[0].field.as_str()), (19, "ost[1].address"), "{m:?}");
    }
}
