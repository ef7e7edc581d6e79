//! The "Benchmarks" section of `rustre report`: the JSON results `rustre-bench … --json FILE`
//! wrote, found in the files and directories given with `--bench` (or `DIR/bench/` beside the
//! cluster file), summarised with their baselines and ratios.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// At most this many result files are read (a directory of thousands is a mistake, not a report).
const MAX_FILES: usize = 64;
/// A result file larger than this is not a rustre-bench result.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// One result file, read and classified.
#[derive(Debug)]
pub struct BenchResult {
    /// Where it was read from.
    pub path: PathBuf,
    /// Which benchmark wrote it (by the keys it has).
    pub kind: &'static str,
    /// Its top-level figures, in file order.
    pub figures: Vec<(String, String)>,
    /// io500 only: (phase, value, unit).
    pub phases: Vec<(String, String, String)>,
}

/// Which `rustre-bench` subcommand wrote `v`, from the keys only it writes.
fn kind_of(v: &serde_json::Map<String, serde_json::Value>) -> &'static str {
    if v.contains_key("phases") && v.contains_key("score") {
        "io500"
    } else if v.contains_key("mds_p50_s") {
        "failover"
    } else if v.contains_key("create_ops") {
        "md"
    } else if v.contains_key("write_ratio") {
        "ost"
    } else if v.contains_key("bulk_ratio") {
        "fabric"
    } else {
        "unknown"
    }
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.3}"),
            _ => n.to_string(),
        }),
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => Some("-".into()),
        _ => None,
    }
}

/// Parses one result file's text. `Err` says why it is not a rustre-bench result.
pub fn parse(path: &Path, text: &str) -> Result<BenchResult, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let kind = kind_of(obj);
    if kind == "unknown" {
        return Err("not written by rustre-bench (no figures it knows)".into());
    }
    let figures = obj
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|s| (k.clone(), s)))
        .collect();
    let mut phases = Vec::new();
    if let Some(p) = obj.get("phases").and_then(|p| p.as_object()) {
        for (name, ph) in p {
            let value = ph.get("value").and_then(scalar).unwrap_or_else(|| "-".into());
            let unit = ph.get("unit").and_then(|u| u.as_str()).unwrap_or("").to_string();
            phases.push((name.clone(), value, unit));
        }
    }
    Ok(BenchResult {
        path: path.to_path_buf(),
        kind,
        figures,
        phases,
    })
}

/// Expands `--bench` arguments (files, or directories whose `*.json` files are read in name
/// order) into readable results and one line per file that could not be used.
pub fn collect(paths: &[PathBuf]) -> (Vec<BenchResult>, Vec<String>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut v: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "json"))
                        .collect();
                    v.sort();
                    files.extend(v);
                }
                Err(e) => problems.push(format!("`{}`: {e}", p.display())),
            }
        } else {
            files.push(p.clone());
        }
    }
    if files.len() > MAX_FILES {
        problems.push(format!(
            "{} result files; only the first {MAX_FILES} are read",
            files.len()
        ));
        files.truncate(MAX_FILES);
    }
    let mut results = Vec::new();
    for f in files {
        let text = match std::fs::metadata(&f) {
            Ok(m) if m.len() > MAX_FILE_BYTES => Err(format!("larger than {MAX_FILE_BYTES} bytes")),
            Ok(_) => std::fs::read_to_string(&f).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match text.and_then(|t| parse(&f, &t)) {
            Ok(r) => results.push(r),
            Err(e) => problems.push(format!("`{}`: {e}", f.display())),
        }
    }
    (results, problems)
}

/// What each kind measures, for a reader who never ran it.
fn explain(kind: &str) -> &'static str {
    match kind {
        "fabric" => "RPC latency and bulk bandwidth of the fabric against the raw transport",
        "ost" => "one OST's write/read bandwidth against fio on the same device",
        "md" => "MDS create/stat/unlink rates against a null RPC",
        "failover" => "time from kill -9 of an active server to the first successful client operation",
        "io500" => "the IO500 phases through librustre, with the POSIX file system as baseline",
        _ => "",
    }
}

/// Writes the section's Markdown.
pub fn render(w: &mut String, results: &[BenchResult], problems: &[String]) {
    if results.is_empty() && problems.is_empty() {
        let _ = writeln!(
            w,
            "No benchmark results were found. Run `rustre-bench fabric|ost|md|failover|io500 --json \
             FILE` (bench/README.md), put the files in `bench/` beside the cluster file (or pass \
             `--bench FILE`) and run `rustre report` again.\n"
        );
    }
    for r in results {
        let _ = writeln!(w, "### {} (`{}`)\n", r.kind, r.path.display());
        let _ = writeln!(w, "{}.\n", explain(r.kind));
        let _ = writeln!(w, "| figure | value |");
        let _ = writeln!(w, "|---|---:|");
        for (k, v) in &r.figures {
            let _ = writeln!(w, "| {k} | {v} |");
        }
        if !r.phases.is_empty() {
            let _ = writeln!(w, "\n| phase | value | unit |");
            let _ = writeln!(w, "|---|---:|---|");
            for (p, v, u) in &r.phases {
                let _ = writeln!(w, "| {p} | {v} | {u} |");
            }
        }
        let _ = writeln!(w);
    }
    for p in problems {
        let _ = writeln!(w, "- not included: {p}");
    }
    if !problems.is_empty() {
        let _ = writeln!(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_renders_every_kind() {
        let cases = [
            (
                r#"{"provider":"tcp","bulk_ratio":1.02,"rpc_latency_us":31.5}"#,
                "fabric",
            ),
            (r#"{"write_ratio":0.74,"read_ratio":1.2,"device":"/dev/loop0"}"#, "ost"),
            (r#"{"create_ops":28000.5,"files":10000}"#, "md"),
            (r#"{"mds_p50_s":1.1,"lost_acknowledged":0}"#, "failover"),
            (
                r#"{"score":0.9,"phases":{"ior-easy-write":{"value":0.66,"unit":"GiB/s"}}}"#,
                "io500",
            ),
        ];
        for (text, kind) in cases {
            let r = parse(Path::new("x.json"), text).unwrap();
            assert_eq!(r.kind, kind, "{text}");
            let mut s = String::new();
            render(&mut s, &[r], &[]);
            assert!(s.contains(&format!("### {kind}")), "{s}");
        }
        let r = parse(Path::new("f.json"), cases[0].0).unwrap();
        assert!(r.figures.contains(&("bulk_ratio".into(), "1.020".into())));
        let r = parse(Path::new("i.json"), cases[4].0).unwrap();
        assert_eq!(
            r.phases,
            vec![("ior-easy-write".into(), "0.660".into(), "GiB/s".into())]
        );
    }

    #[test]
    fn foreign_files_are_named_not_fatal() {
        assert!(parse(Path::new("a"), "not json").is_err());
        assert!(parse(Path::new("a"), "[1,2]").is_err());
        assert!(parse(Path::new("a"), r#"{"hello":1}"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), r#"{"create_ops":1}"#).unwrap();
        std::fs::write(dir.path().join("b.json"), "garbage").unwrap();
        std::fs::write(dir.path().join("c.txt"), "ignored").unwrap();
        let (r, p) = collect(&[dir.path().to_path_buf(), dir.path().join("missing.json")]);
        assert_eq!(r.len(), 1);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("b.json") && p[1].contains("missing.json"), "{p:?}");
        let mut s = String::new();
        render(&mut s, &r, &p);
        assert!(s.contains("not included: `") && s.contains("### md"), "{s}");
    }
}
