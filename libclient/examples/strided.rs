//! One rank of an N-1 strided writer, IO500 ior-hard's pattern without MPI: writes RECORDS
//! records of 47008 bytes at `(i × RANKS + RANK) × 47008` of one shared file with librustre's
//! write-behind (4 MiB, as `rustre-bench io500` runs its ranks), fsyncs, prints the write
//! bandwidth, then reads its records back and checks every byte. Start RANKS copies at once.
//!
//! ```sh
//! cargo run --release -p rustre-client --example strided -- CONFIG RANK RANKS RECORDS PATH [STRIPE_COUNT]
//! ```
//!
//! With STRIPE_COUNT (0: every OST), the file is created with that many stripes of 1 MiB when
//! it does not exist yet; without it, with the directory's default.

use rustre::{Client, ClientConfig, LayoutSpec, OpenFlags};
use std::time::Instant;

const RECORD: u64 = 47_008;

/// Record `i` of `rank`: every byte differs between records, ranks and positions.
fn record(rank: u64, i: u64) -> Vec<u8> {
    let seed = (rank << 40 | i << 17).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..RECORD)
        .map(|k| ((seed ^ k).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 56) as u8)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: strided CONFIG RANK RANKS RECORDS PATH [STRIPE_COUNT (0: every OST)]");
        std::process::exit(2);
    }
    let (rank, ranks, records): (u64, u64, u64) = (args[2].parse()?, args[3].parse()?, args[4].parse()?);
    if rank >= ranks {
        return Err(format!("rank {rank} of {ranks} ranks").into());
    }
    let path = &args[5];
    let mut cfg = ClientConfig::from_spec(&args[1])?;
    cfg.limits.write_behind_bytes = 4 << 20;
    let c = Client::connect(cfg)?;
    let layout = match args.get(6) {
        None => None,
        Some(n) => Some(LayoutSpec {
            stripe_size: 1 << 20,
            stripe_count: match n.parse::<u32>()? {
                0 => u32::try_from(c.ost_indexes().len())?,
                n => n,
            },
            stripe_offset: -1,
        }),
    };
    let flags = OpenFlags {
        read: true,
        write: true,
        create: true,
        ..OpenFlags::default()
    };
    let fd = c.open(path, flags, 0o644, layout.as_ref())?;
    let offset = |i: u64| (i * ranks + rank) * RECORD;
    let data: Vec<Vec<u8>> = (0..records.min(64)).map(|i| record(rank, i)).collect();
    let t = Instant::now();
    for i in 0..records {
        c.pwrite(fd, &data[(i % 64) as usize], offset(i))?;
    }
    c.fsync(fd)?;
    let secs = t.elapsed().as_secs_f64();
    let mut back = vec![0u8; RECORD as usize];
    let mut bad = 0u64;
    for i in 0..records {
        let n = c.pread(fd, &mut back, offset(i))?;
        if n != back.len() || back != data[(i % 64) as usize] {
            bad += 1;
        }
    }
    c.close(fd)?;
    let gib = (records * RECORD) as f64 / f64::from(1u32 << 30);
    println!(
        "strided: rank {rank} of {ranks}, {records} records of {RECORD} bytes: write {:.3} GiB/s{}",
        gib / secs,
        if bad == 0 {
            ", verified".to_string()
        } else {
            format!(", {bad} RECORDS DIFFER")
        }
    );
    if bad != 0 {
        std::process::exit(1);
    }
    Ok(())
}
