//! `rustre find`: walks a tree through the MDS and prints the paths that pass every test.

use super::{ConfigArg, OpsError, glob, out_err};
use clap::Args;
use rustre::{Client, FileAttr, FileKind};
use std::cmp::Ordering;
use std::io::Write;

/// Arguments of `rustre find` (single-dash forms `-name` etc. are accepted).
#[derive(Args, Debug)]
pub struct FindArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Where to start (a path inside the file system).
    path: String,
    /// Base name matches this shell pattern.
    #[arg(long, value_name = "GLOB")]
    name: Option<String>,
    /// Size: N (exactly), +N (more), -N (less); units k, M, G, none = 512-byte blocks; the size
    /// is rounded up to the unit as find(1) does.
    #[arg(long, value_name = "[+-]N[kMG]", allow_hyphen_values = true)]
    size: Option<String>,
    /// Type: f (regular file), d (directory), l (symbolic link).
    #[arg(long = "type", value_name = "f|d|l")]
    kind: Option<String>,
    /// Regular files striped over N OSTs (+N more, -N fewer).
    #[arg(long, value_name = "[+-]N", allow_hyphen_values = true)]
    stripe_count: Option<String>,
    /// Descend at most N levels below PATH.
    #[arg(long, value_name = "N")]
    maxdepth: Option<u32>,
}

/// A numeric test: compare with `Ordering` wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumTest {
    /// `Greater` for +N, `Less` for -N, `Equal` for N.
    pub cmp: Ordering,
    /// N in units.
    pub n: u64,
    /// Unit in bytes (1 for counts).
    pub unit: u64,
}

impl NumTest {
    /// Parses `[+-]N[suffix]`; `units` maps a suffix to a unit (`None`: unknown suffix).
    pub fn parse(option: &str, s: &str, units: impl Fn(&str) -> Option<u64>) -> Result<NumTest, OpsError> {
        let (cmp, rest) = match s.as_bytes().first() {
            Some(b'+') => (Ordering::Greater, &s[1..]),
            Some(b'-') => (Ordering::Less, &s[1..]),
            _ => (Ordering::Equal, s),
        };
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..end]
            .parse()
            .map_err(|_| OpsError::usage(option, format!("{s:?}: expected [+-]N")))?;
        let unit = units(&rest[end..]).ok_or_else(|| OpsError::usage(option, format!("{s:?}: unknown unit")))?;
        Ok(NumTest { cmp, n, unit })
    }

    /// Does `value` (bytes or a count) pass? Values are rounded up to the unit.
    pub fn test(&self, value: u64) -> bool {
        value.div_ceil(self.unit).cmp(&self.n) == self.cmp
    }
}

fn size_unit(s: &str) -> Option<u64> {
    match s {
        "" | "b" => Some(512),
        "c" => Some(1),
        "w" => Some(2),
        "k" | "K" => Some(1 << 10),
        "M" => Some(1 << 20),
        "G" => Some(1 << 30),
        "T" => Some(1 << 40),
        _ => None,
    }
}

struct Filters {
    name: Option<String>,
    size: Option<NumTest>,
    kind: Option<FileKind>,
    stripe_count: Option<NumTest>,
    maxdepth: Option<u32>,
}

/// `find`.
pub fn find(a: &FindArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let f = Filters {
        name: a.name.clone(),
        size: a
            .size
            .as_deref()
            .map(|s| NumTest::parse("-size", s, size_unit))
            .transpose()?,
        kind: match a.kind.as_deref() {
            None => None,
            Some("f") => Some(FileKind::Regular),
            Some("d") => Some(FileKind::Directory),
            Some("l") => Some(FileKind::Symlink),
            Some(o) => return Err(OpsError::usage("-type", format!("{o:?}: use f, d or l"))),
        },
        stripe_count: a
            .stripe_count
            .as_deref()
            .map(|s| NumTest::parse("-stripe-count", s, |u| u.is_empty().then_some(1)))
            .transpose()?,
        maxdepth: a.maxdepth,
    };
    let client = a.config.connect()?;
    let mut errors = 0u32;
    let r = walk(&client, &f, &a.path, 0, out, &mut errors);
    client.disconnect();
    r?;
    Ok(u8::from(errors > 0))
}

fn base_name(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        return "/";
    }
    t.rsplit('/').next().unwrap_or(t)
}

fn passes(client: &Client, f: &Filters, path: &str, attr: &FileAttr) -> Result<bool, OpsError> {
    if let Some(k) = f.kind
        && attr.kind != k
    {
        return Ok(false);
    }
    if let Some(g) = &f.name
        && !glob::matches(g, base_name(path))
    {
        return Ok(false);
    }
    if let Some(t) = f.size
        && !t.test(attr.size)
    {
        return Ok(false);
    }
    if let Some(t) = f.stripe_count {
        if attr.kind != FileKind::Regular {
            return Ok(false);
        }
        let count = match &attr.layout {
            Some(l) => l.objects.len() as u64,
            None => u64::from(
                client
                    .getstripe(path)
                    .map_err(|e| OpsError::path(path, e))?
                    .spec
                    .stripe_count,
            ),
        };
        if !t.test(count) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn walk(
    client: &Client,
    f: &Filters,
    path: &str,
    depth: u32,
    out: &mut impl Write,
    errors: &mut u32,
) -> Result<(), OpsError> {
    let attr = match client.lstat(path) {
        Ok(a) => a,
        Err(e) if depth > 0 => {
            // Removed while walking, or unreadable: report and go on, as find(1) does.
            eprintln!("rustre find: {path}: {e}");
            *errors += 1;
            return Ok(());
        }
        Err(e) => return Err(OpsError::path(path, e)),
    };
    if passes(client, f, path, &attr)? {
        writeln!(out, "{path}").map_err(out_err)?;
    }
    if attr.kind != FileKind::Directory || f.maxdepth.is_some_and(|m| depth >= m) {
        return Ok(());
    }
    let mut entries = match client.read_dir_all(path) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("rustre find: {path}: {e}");
            *errors += 1;
            return Ok(());
        }
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for e in entries {
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(&e.name) else {
            eprintln!("rustre find: {path}: skipping a name that is not UTF-8");
            *errors += 1;
            continue;
        };
        let child = if path.ends_with('/') {
            format!("{path}{name}")
        } else {
            format!("{path}/{name}")
        };
        walk(client, f, &child, depth + 1, out, errors)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_tests_round_up_like_find() {
        let t = NumTest::parse("-size", "+1M", size_unit).unwrap();
        assert!(!t.test(1 << 20));
        assert!(t.test((1 << 20) + 1), "1M + 1 byte rounds up to 2M");
        assert!(t.test(3 << 20));
        let e = NumTest::parse("-size", "-1M", size_unit).unwrap();
        assert!(e.test(0));
        assert!(!e.test(1));
        let k = NumTest::parse("-size", "4k", size_unit).unwrap();
        assert!(k.test(4096) && k.test(3073) && !k.test(4097));
        let b = NumTest::parse("-size", "2", size_unit).unwrap();
        assert!(b.test(1024) && !b.test(1025));
        assert!(NumTest::parse("-size", "4x", size_unit).is_err());
        assert!(NumTest::parse("-size", "+", size_unit).is_err());
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("/a/b.c"), "b.c");
        assert_eq!(base_name("/a/"), "a");
        assert_eq!(base_name("/"), "/");
    }
}
