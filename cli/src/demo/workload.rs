//! The demo's I/O, through the librustre Rust API (`rustre::Client`).

use super::pattern;
use super::report::{Phase, Report};
use super::{DemoError, DemoOptions};
use crate::cluster::DataDir;
use crate::cluster::file::ClusterFile;
use crate::size::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};
use rustre::{Client, ClientConfig, Fd, LayoutSpec, OpenFlags};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Stripe sizes must be multiples of this (librustre's and Lustre's rule).
const STRIPE_UNIT: u64 = 64 << 10;
/// Target size of one write or read call on the big file.
const CHUNK_TARGET: u64 = 16 << 20;
/// Largest single call on the big file (bounds the demo's memory: 3 buffers of this).
const CHUNK_MAX: u64 = 64 << 20;
/// Buffers in flight between the pattern thread and the I/O thread.
const PIPELINE_BUFFERS: usize = 3;
/// Threads issuing the small-file metadata calls (the MDS serves them from one loop; a few
/// callers keep its group commit busy).
const META_THREADS: u32 = 4;
/// Big files may use at most this share of the OSTs they stripe over.
const FILL_LIMIT: f64 = 0.9;

fn client_err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(rustre::ClientError) -> DemoError + 'a {
    move |e| DemoError::Client {
        op,
        path: path.to_string(),
        reason: e.to_string(),
    }
}

fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:40}] {binary_bytes:>10}/{binary_total_bytes} {binary_bytes_per_sec:>12} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn count_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos:>7}/{len} {per_sec:>12}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// The chunk size of big-file calls: whole stripe rows, about `CHUNK_TARGET`, at most `CHUNK_MAX`.
fn chunk_size(stripe_size: u64, stripe_count: u64) -> u64 {
    let row = stripe_size * stripe_count;
    if row >= CHUNK_MAX {
        return stripe_size.min(CHUNK_MAX);
    }
    (CHUNK_TARGET.div_ceil(row) * row).min(CHUNK_MAX / row * row)
}

/// Checks `--stripe-size` before anything starts: a multiple of 64 KiB that fits the layout's u32.
pub fn check_stripe_size(stripe_size: u64) -> Result<(), DemoError> {
    if stripe_size == 0 || !stripe_size.is_multiple_of(STRIPE_UNIT) || stripe_size > u64::from(u32::MAX) {
        return Err(DemoError::BadOption(format!(
            "--stripe-size {}: must be a multiple of 64K below 4G",
            ByteSize(stripe_size)
        )));
    }
    Ok(())
}

/// Runs the workload on the running `cluster`.
pub fn run(cluster: &ClusterFile, dir: &DataDir, opts: &DemoOptions) -> Result<Report, DemoError> {
    let config_path = dir.client_file();
    let config_name = config_path.display().to_string();
    let config = ClientConfig::from_file(&config_path).map_err(client_err("read client config", &config_name))?;
    let client = Client::connect(config).map_err(client_err("connect with", &config_name))?;
    let result = workload(&client, cluster, opts);
    client.disconnect();
    result
}

fn workload(client: &Client, cluster: &ClusterFile, opts: &DemoOptions) -> Result<Report, DemoError> {
    let osts = client.ost_indexes().len() as u64;
    let stripe_count = u64::from(opts.stripe_count.unwrap_or(osts as u32));
    if stripe_count == 0 || stripe_count > osts {
        return Err(DemoError::BadOption(format!(
            "--stripe-count {stripe_count}: the cluster has {osts} OSTs"
        )));
    }
    let smallest_ost = cluster.osts.iter().map(|o| o.size).min().unwrap_or(0);
    let room = (smallest_ost as f64 * FILL_LIMIT) as u64 * stripe_count;
    if opts.file_size > room {
        return Err(DemoError::BadOption(format!(
            "--file-size {}: {stripe_count} OSTs of {} hold at most about {}; pass a larger --size-per-ost \
             to a new --data directory, or a smaller --file-size",
            ByteSize(opts.file_size),
            ByteSize(smallest_ost),
            ByteSize(room)
        )));
    }
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let top = format!("/demo-{}-{secs}", std::process::id());
    client.mkdir(&top, 0o755, None).map_err(client_err("mkdir", &top))?;
    let big = format!("{top}/striped.dat");
    let layout = LayoutSpec {
        stripe_size: opts.stripe_size as u32,
        stripe_count: stripe_count as u32,
        stripe_offset: -1,
    };
    let seed = secs ^ u64::from(std::process::id()).rotate_left(32);
    let chunk = chunk_size(opts.stripe_size, stripe_count);

    let mut report = Report {
        phases: Vec::new(),
        layout: format!(
            "{} stripes of {}, {} per call",
            stripe_count,
            ByteSize(opts.stripe_size),
            ByteSize(chunk)
        ),
    };
    report
        .phases
        .push(write_big(client, &big, &layout, opts.file_size, chunk, seed)?);
    let attr = client.stat(&big).map_err(client_err("stat", &big))?;
    if attr.size != opts.file_size {
        return Err(DemoError::Metadata {
            path: big,
            what: format!("size is {} after writing {} bytes", attr.size, opts.file_size),
        });
    }
    report.phases.push(read_big(client, &big, opts.file_size, chunk, seed)?);
    client.unlink(&big).map_err(client_err("unlink", &big))?;

    let small = format!("{top}/small");
    client.mkdir(&small, 0o755, None).map_err(client_err("mkdir", &small))?;
    report.phases.extend(small_files(client, &small, opts.small_files)?);
    client.rmdir(&small).map_err(client_err("rmdir", &small))?;
    client.rmdir(&top).map_err(client_err("rmdir", &top))?;
    Ok(report)
}

/// Writes `size` bytes of the pattern; a second thread makes the pattern while this one writes.
fn write_big(
    client: &Client,
    path: &str,
    layout: &LayoutSpec,
    size: u64,
    chunk: u64,
    seed: u64,
) -> Result<Phase, DemoError> {
    let flags = OpenFlags {
        write: true,
        create: true,
        excl: true,
        ..OpenFlags::default()
    };
    let bar = bytes_bar(size, "write");
    let start = Instant::now();
    let fd = client
        .open(path, flags, 0o644, Some(layout))
        .map_err(client_err("create", path))?;
    let result = std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(PIPELINE_BUFFERS);
        let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(PIPELINE_BUFFERS);
        for _ in 0..PIPELINE_BUFFERS {
            let _ = empty_tx.send(Vec::with_capacity(chunk as usize));
        }
        s.spawn(move || {
            let mut offset = 0;
            while offset < size {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let len = chunk.min(size - offset) as usize;
                buf.resize(len, 0);
                pattern::fill(seed, offset, &mut buf);
                if full_tx.send((offset, buf)).is_err() {
                    return;
                }
                offset += len as u64;
            }
        });
        for (offset, buf) in full_rx.iter() {
            write_all(client, fd, &buf, offset, path)?;
            bar.inc(buf.len() as u64);
            // The pattern thread may already have finished; a closed channel is fine then.
            let _ = empty_tx.send(buf);
        }
        Ok::<(), DemoError>(())
    });
    let closed = client.fsync(fd).and_then(|()| client.close(fd));
    result?;
    closed.map_err(client_err("fsync and close", path))?;
    bar.finish_and_clear();
    Ok(Phase {
        name: "write",
        amount: size,
        bytes: true,
        elapsed: start.elapsed(),
    })
}

fn write_all(client: &Client, fd: Fd, buf: &[u8], offset: u64, path: &str) -> Result<(), DemoError> {
    let mut done = 0;
    while done < buf.len() {
        let n = client
            .pwrite(fd, &buf[done..], offset + done as u64)
            .map_err(client_err("write", path))?;
        if n == 0 {
            return Err(DemoError::Metadata {
                path: path.into(),
                what: format!("write at {} wrote nothing", offset + done as u64),
            });
        }
        done += n;
    }
    Ok(())
}

/// Reads the file back; a second thread checks every byte while this one reads the next chunk.
fn read_big(client: &Client, path: &str, size: u64, chunk: u64, seed: u64) -> Result<Phase, DemoError> {
    let flags = OpenFlags {
        read: true,
        ..OpenFlags::default()
    };
    let bar = bytes_bar(size, "read + verify");
    let start = Instant::now();
    let fd = client.open(path, flags, 0, None).map_err(client_err("open", path))?;
    let result = std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(PIPELINE_BUFFERS);
        let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(PIPELINE_BUFFERS);
        for _ in 0..PIPELINE_BUFFERS {
            let _ = empty_tx.send(vec![0u8; chunk as usize]);
        }
        let checker = s.spawn(move || {
            let mut scratch = Vec::with_capacity(chunk as usize);
            for (offset, buf) in full_rx.iter() {
                pattern::verify(seed, offset, &buf, &mut scratch)?;
                let _ = empty_tx.send(buf);
            }
            Ok::<(), pattern::Mismatch>(())
        });
        let mut offset = 0;
        let mut read_result = Ok(());
        while offset < size {
            // A closed channel means the checker stopped at a mismatch: its result says which.
            let Ok(mut buf) = empty_rx.recv() else { break };
            let len = chunk.min(size - offset) as usize;
            buf.resize(len, 0);
            if let Err(e) = read_exact(client, fd, &mut buf, offset, path) {
                read_result = Err(e);
                break;
            }
            bar.inc(len as u64);
            if full_tx.send((offset, buf)).is_err() {
                break;
            }
            offset += len as u64;
        }
        drop(full_tx);
        let checked = checker.join().unwrap_or(Ok(()));
        if let Err(m) = checked {
            return Err(DemoError::Verify {
                path: path.into(),
                offset: m.offset,
                expected: m.expected,
                found: m.found,
            });
        }
        read_result
    });
    let closed = client.close(fd);
    result?;
    closed.map_err(client_err("close", path))?;
    bar.finish_and_clear();
    Ok(Phase {
        name: "read + verify",
        amount: size,
        bytes: true,
        elapsed: start.elapsed(),
    })
}

fn read_exact(client: &Client, fd: Fd, buf: &mut [u8], offset: u64, path: &str) -> Result<(), DemoError> {
    let mut done = 0;
    while done < buf.len() {
        let n = client
            .pread(fd, &mut buf[done..], offset + done as u64)
            .map_err(client_err("read", path))?;
        if n == 0 {
            return Err(DemoError::Metadata {
                path: path.into(),
                what: format!(
                    "end of file at {} while reading to {}",
                    offset + done as u64,
                    offset + buf.len() as u64
                ),
            });
        }
        done += n;
    }
    Ok(())
}

/// Creates, stats and unlinks `count` empty files in `dir`, `META_THREADS` callers at a time.
fn small_files(client: &Client, dir: &str, count: u32) -> Result<Vec<Phase>, DemoError> {
    let mut phases = Vec::with_capacity(3);
    for name in ["create", "stat", "unlink"] {
        let bar = count_bar(u64::from(count), name);
        let next = AtomicU32::new(0);
        let start = Instant::now();
        let results: Vec<Result<(), DemoError>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..META_THREADS)
                .map(|_| {
                    s.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count {
                                return Ok(());
                            }
                            let path = format!("{dir}/f{i:06}");
                            small_op(client, name, &path)?;
                            bar.inc(1);
                        }
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(Ok(()))).collect()
        });
        let elapsed = start.elapsed();
        bar.finish_and_clear();
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        phases.push(Phase {
            name,
            amount: u64::from(count),
            bytes: false,
            elapsed,
        });
    }
    Ok(phases)
}

fn small_op(client: &Client, op: &'static str, path: &str) -> Result<(), DemoError> {
    match op {
        "create" => {
            let flags = OpenFlags {
                write: true,
                create: true,
                excl: true,
                ..OpenFlags::default()
            };
            let fd = client
                .open(path, flags, 0o644, None)
                .map_err(client_err("create", path))?;
            client.close(fd).map_err(client_err("close", path))
        }
        "stat" => {
            let attr = client.stat(path).map_err(client_err("stat", path))?;
            if attr.size != 0 {
                return Err(DemoError::Metadata {
                    path: path.into(),
                    what: format!("size {} of an empty file", attr.size),
                });
            }
            Ok(())
        }
        _ => client.unlink(path).map_err(client_err("unlink", path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_stripe_rows_and_bounded() {
        assert_eq!(chunk_size(1 << 20, 4), 16 << 20);
        assert_eq!(chunk_size(1 << 20, 3), 18 << 20);
        assert_eq!(chunk_size(4 << 20, 8), 32 << 20);
        assert_eq!(chunk_size(64 << 10, 1), 16 << 20);
        assert_eq!(chunk_size(16 << 20, 8), 16 << 20);
        for (ss, sc) in [(64u64 << 10, 7u64), (1 << 20, 5), (4 << 20, 3), (2 << 20, 64)] {
            let c = chunk_size(ss, sc);
            assert!(
                c <= CHUNK_MAX && c > 0 && (c.is_multiple_of(ss * sc) || ss * sc >= CHUNK_MAX),
                "{ss} {sc} {c}"
            );
        }
    }
}
