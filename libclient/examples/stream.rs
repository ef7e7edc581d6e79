//! Single-client striped streaming: writes a file with large `pwrite`s, reads it back with large
//! `pread`s (every byte checked, outside the timed calls), prints the bandwidth of each.
//!
//! ```sh
//! cargo run --release -p rustre-client --example stream -- CONFIG [MIB] [STRIPE_COUNT] [STRIPE_KIB] [IO_MIB]
//! ```

use rustre::{Client, LayoutSpec, OpenFlags};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(config) = args.get(1) else {
        eprintln!("usage: stream CONFIG [MIB=1024] [STRIPE_COUNT=0 (all)] [STRIPE_KIB=1024] [IO_MIB=16]");
        std::process::exit(2);
    };
    let arg = |i: usize, d: u64| args.get(i).map_or(Ok(d), |s| s.parse::<u64>());
    let (mib, count, stripe_kib, io_mib) = (arg(2, 1024)?, arg(3, 0)?, arg(4, 1024)?, arg(5, 16)?);
    let c = Client::connect_spec(config)?;
    let count = if count == 0 {
        c.ost_indexes().len() as u32
    } else {
        u32::try_from(count)?
    };
    let layout = LayoutSpec {
        stripe_size: u32::try_from(stripe_kib * 1024)?,
        stripe_count: count,
        stripe_offset: -1,
    };
    let path = format!("/stream-{}", std::process::id());
    let io = usize::try_from(io_mib << 20)?;
    let total = mib << 20;
    let block: Vec<u8> = (0..io)
        .map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) as u8)
        .collect();

    let flags = OpenFlags {
        read: true,
        write: true,
        create: true,
        excl: true,
        ..OpenFlags::default()
    };
    let fd = c.open(&path, flags, 0o644, Some(&layout))?;
    let t = Instant::now();
    let mut off = 0;
    while off < total {
        let n = io.min(usize::try_from(total - off)?);
        c.pwrite(fd, &block[..n], off)?;
        off += n as u64;
    }
    let w = t.elapsed().as_secs_f64();
    c.close(fd)?;

    let fd = c.open(
        &path,
        OpenFlags {
            read: true,
            ..OpenFlags::default()
        },
        0,
        None,
    )?;
    let mut buf = vec![0u8; io];
    // Only the reads are timed; comparing each block with what was written happens between them.
    let mut r = 0.0;
    let mut off = 0;
    let mut bad = 0u64;
    while off < total {
        let t = Instant::now();
        let n = c.pread(fd, &mut buf, off)?;
        r += t.elapsed().as_secs_f64();
        if n == 0 {
            break;
        }
        if buf[..n] != block[..n] {
            bad += 1;
        }
        off += n as u64;
    }
    c.close(fd)?;
    c.unlink(&path)?;
    let gib = total as f64 / f64::from(1u32 << 30);
    println!(
        "stream: {mib} MiB, {count} stripes of {stripe_kib} KiB, {io_mib} MiB per call: write {:.3} GiB/s, read {:.3} GiB/s{}",
        gib / w,
        gib / r,
        if bad == 0 && off == total {
            ", verified"
        } else {
            ", DATA MISMATCH"
        }
    );
    if bad != 0 || off != total {
        std::process::exit(1);
    }
    Ok(())
}
