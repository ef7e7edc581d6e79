//! `rustre setstripe` and `rustre getstripe`.

use super::{ConfigArg, OpsError, out_err, parse_size};
use clap::Args;
use rustre::layout::{MAX_STRIPE_COUNT, STRIPE_UNIT};
use rustre::{Client, FileKind, LayoutSpec, OpenFlags};
use std::io::Write;

/// Arguments of `rustre setstripe`.
#[derive(Args, Debug)]
pub struct SetstripeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Number of OSTs to stripe over (-1: all, 0: the default).
    #[arg(
        short = 'c',
        long = "stripe-count",
        value_name = "COUNT",
        allow_negative_numbers = true
    )]
    count: Option<i64>,
    /// Bytes per stripe chunk, a multiple of 64K (0: the default).
    #[arg(short = 'S', long = "stripe-size", value_name = "SIZE")]
    size: Option<String>,
    /// OST index of the first stripe (-1: let the MDS choose).
    #[arg(
        short = 'i',
        long = "stripe-index",
        value_name = "OST",
        allow_negative_numbers = true
    )]
    index: Option<i64>,
    /// File or directory inside the file system.
    path: String,
}

/// Arguments of `rustre getstripe`.
#[derive(Args, Debug)]
pub struct GetstripeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// File or directory inside the file system.
    path: String,
}

/// Checks the requested layout against the cluster (`osts`: the OST indexes in the map) and
/// turns it into a [`LayoutSpec`]. Nothing is changed on error.
pub fn layout_from_args(
    count: Option<i64>,
    size: Option<&str>,
    index: Option<i64>,
    osts: &[u32],
) -> Result<LayoutSpec, OpsError> {
    let n_osts = u32::try_from(osts.len()).unwrap_or(u32::MAX);
    let stripe_count = match count {
        None | Some(0) => 0,
        Some(-1) => n_osts,
        Some(c) if c < -1 => {
            return Err(OpsError::usage(
                "-c",
                format!("stripe count {c}: use -1 (all OSTs), 0 or 1.."),
            ));
        }
        Some(c) => {
            let c = u32::try_from(c).unwrap_or(u32::MAX);
            if c > n_osts || c > MAX_STRIPE_COUNT {
                return Err(OpsError::usage(
                    "-c",
                    format!("stripe count {c} is more than the {n_osts} OSTs of the file system"),
                ));
            }
            c
        }
    };
    let stripe_size = match size {
        None => 0,
        Some(s) => {
            let b = parse_size("-S", s)?;
            if b % u64::from(STRIPE_UNIT) != 0 {
                return Err(OpsError::usage(
                    "-S",
                    format!("stripe size {b} is not a multiple of 64K"),
                ));
            }
            u32::try_from(b).map_err(|_| OpsError::usage("-S", format!("stripe size {b} must be below 4G")))?
        }
    };
    let stripe_offset = match index {
        None | Some(-1) => -1,
        Some(i) => {
            let ok = u32::try_from(i).ok().filter(|i| osts.contains(i));
            match ok {
                Some(i) => i32::try_from(i).map_err(|_| OpsError::usage("-i", format!("OST index {i}")))?,
                None => {
                    return Err(OpsError::usage(
                        "-i",
                        format!("OST index {i} is not in the file system (OSTs: {osts:?})"),
                    ));
                }
            }
        }
    };
    Ok(LayoutSpec {
        stripe_size,
        stripe_count,
        stripe_offset,
    })
}

/// `setstripe`: a directory's default, an empty file's layout, or a new file with that layout.
pub fn setstripe(a: &SetstripeArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let client = a.config.connect()?;
    let r = setstripe_with(&client, a, out);
    client.disconnect();
    r
}

fn setstripe_with(client: &Client, a: &SetstripeArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let spec = layout_from_args(a.count, a.size.as_deref(), a.index, &client.ost_indexes())?;
    let path = a.path.as_str();
    match client.stat(path) {
        Ok(attr) => {
            if attr.kind == FileKind::Regular && attr.size > 0 {
                return Err(OpsError::usage(
                    path,
                    format!(
                        "has data ({} bytes): a layout can only be set on an empty file",
                        attr.size
                    ),
                ));
            }
            client.setstripe(path, &spec).map_err(|e| OpsError::path(path, e))?;
        }
        Err(e) if e.errno() == libc::ENOENT => {
            let flags = OpenFlags {
                write: true,
                create: true,
                excl: true,
                ..Default::default()
            };
            let fd = client
                .open(path, flags, 0o644, Some(&spec))
                .map_err(|e| OpsError::path(path, e))?;
            client.close(fd).map_err(|e| OpsError::path(path, e))?;
        }
        Err(e) => return Err(OpsError::path(path, e)),
    }
    let _ = out;
    Ok(0)
}

/// `getstripe`: the layout in `lfs getstripe`'s shape.
pub fn getstripe(a: &GetstripeArgs, out: &mut impl Write) -> Result<u8, OpsError> {
    let client = a.config.connect()?;
    let r = getstripe_with(&client, &a.path, out);
    client.disconnect();
    r
}

fn getstripe_with(client: &Client, path: &str, out: &mut impl Write) -> Result<u8, OpsError> {
    let attr = client.stat(path).map_err(|e| OpsError::path(path, e))?;
    let info = client.getstripe(path).map_err(|e| OpsError::path(path, e))?;
    let dflt = client.default_layout();
    let count = if info.spec.stripe_count == 0 {
        dflt.stripe_count
    } else {
        info.spec.stripe_count
    };
    let size = if info.spec.stripe_size == 0 {
        dflt.stripe_size
    } else {
        info.spec.stripe_size
    };
    if attr.kind == FileKind::Directory {
        writeln!(
            out,
            "{path}\nstripe_count:  {count} stripe_size:   {size} stripe_offset: {}{}",
            info.spec.stripe_offset,
            if info.inherited { " (file system default)" } else { "" }
        )
        .map_err(out_err)?;
        return Ok(0);
    }
    let offset = info
        .objects
        .first()
        .map_or(i64::from(info.spec.stripe_offset), |o| i64::from(o.ost));
    let count = if info.objects.is_empty() {
        count
    } else {
        u32::try_from(info.objects.len()).unwrap_or(u32::MAX)
    };
    writeln!(out, "{path}").map_err(out_err)?;
    writeln!(out, "lmm_stripe_count:  {count}").map_err(out_err)?;
    writeln!(out, "lmm_stripe_size:   {size}").map_err(out_err)?;
    writeln!(out, "lmm_stripe_offset: {offset}").map_err(out_err)?;
    if !info.objects.is_empty() {
        writeln!(out, "\tobdidx\t\t objid\t\t objid\t\t group").map_err(out_err)?;
        for o in &info.objects {
            writeln!(out, "\t{:>6}\t{:>14}\t{:>#14x}\t{:>14}", o.ost, o.id, o.id, 0).map_err(out_err)?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_arguments_are_checked() {
        let osts = [0, 1, 2, 3];
        let l = layout_from_args(Some(2), Some("4M"), Some(3), &osts).unwrap();
        assert_eq!((l.stripe_count, l.stripe_size, l.stripe_offset), (2, 4 << 20, 3));
        let all = layout_from_args(Some(-1), None, None, &osts).unwrap();
        assert_eq!((all.stripe_count, all.stripe_size, all.stripe_offset), (4, 0, -1));
        let e = layout_from_args(Some(5), None, None, &osts).unwrap_err().to_string();
        assert!(e.contains("-c") && e.contains("4 OSTs"), "{e}");
        let e = layout_from_args(None, Some("100K"), None, &osts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("-S") && e.contains("64K"), "{e}");
        let e = layout_from_args(None, Some("4X"), None, &osts).unwrap_err().to_string();
        assert!(e.contains("-S"), "{e}");
        let e = layout_from_args(None, None, Some(7), &osts).unwrap_err().to_string();
        assert!(e.contains("-i") && e.contains('7'), "{e}");
        assert!(layout_from_args(Some(-2), None, None, &osts).is_err());
        assert!(layout_from_args(None, Some("8G"), None, &osts).is_err());
    }
}
