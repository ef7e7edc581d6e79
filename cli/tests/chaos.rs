//! Chaos: a local HA cluster (`rustre cluster up --ha`) under a streaming write and a
//! create/write/unlink storm through librustre, while `rustre cluster fail` kills -9 the active
//! MDS, then an active OSS, alternately. Applications must see delays, never errors; afterwards
//! every acknowledged byte and namespace operation is there exactly, and `mdsd check` /
//! `ostd check` find every device clean.
//!
//! `RUSTRE_CHAOS_FAILOVERS` sets the number of failovers (default 2, one of each; `ci/lanes/chaos.sh` runs 20).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Down, build_daemons, rustre, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes per streaming write call.
const CHUNK: usize = 256 << 10;
/// Chunks per streamed file; a file is verified and removed two files later.
const CHUNKS_PER_FILE: u64 = 32;
/// How long the workloads may make no progress after a failover before the test fails.
const STALL_LIMIT: Duration = Duration::from_secs(20);

/// The byte at `off` of streamed file `file`.
fn stream_byte(file: u64, off: u64) -> u8 {
    (off.wrapping_mul(2_654_435_761) >> 13).wrapping_add(file.wrapping_mul(97)) as u8
}

fn stream_chunk(file: u64, off: u64) -> Vec<u8> {
    (0..CHUNK as u64).map(|i| stream_byte(file, off + i)).collect()
}

/// The content of storm file `i` (small, distinct per file).
fn storm_data(i: u64) -> Vec<u8> {
    let len = 1000 + (i % 7) as usize * 517;
    (0..len).map(|k| (k as u64 ^ i.wrapping_mul(31)) as u8).collect()
}

fn connect(data: &Path) -> rustre::Client {
    rustre::Client::connect(rustre::ClientConfig::from_file(&data.join("client.toml")).unwrap()).unwrap()
}

fn read_all(c: &rustre::Client, path: &str) -> Result<Vec<u8>, rustre::ClientError> {
    let fd = c.open(
        path,
        rustre::OpenFlags {
            read: true,
            ..Default::default()
        },
        0,
        None,
    )?;
    let size = c.fstat(fd)?.size as usize;
    let mut buf = vec![0u8; size + 1];
    let mut done = 0;
    while done < buf.len() {
        let n = c.pread(fd, &mut buf[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    c.close(fd)?;
    buf.truncate(done);
    Ok(buf)
}

fn write_new(
    c: &rustre::Client,
    path: &str,
    data: &[u8],
    layout: Option<&rustre::LayoutSpec>,
) -> Result<(), rustre::ClientError> {
    let flags = rustre::OpenFlags {
        write: true,
        create: true,
        excl: true,
        ..Default::default()
    };
    let fd = c.open(path, flags, 0o644, layout)?;
    let r = c.pwrite(fd, data, 0);
    let closed = c.close(fd);
    r?;
    closed
}

/// What the workloads acknowledged, shared with the main thread.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Streamed chunks acknowledged (pwrite returned).
    chunks: AtomicU64,
    /// Storm operations acknowledged.
    storm_ops: AtomicU64,
    /// The first error either workload saw.
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, what: String) {
        self.error.lock().unwrap().get_or_insert(what);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Streams files `/stream/N` of CHUNKS_PER_FILE chunks, striped over both OSTs; file N-2 is read
/// back and verified, then removed, when file N is complete. Returns the files still present.
fn streamer(c: rustre::Client, s: Arc<Shared>) -> Vec<(u64, u64)> {
    let layout = rustre::LayoutSpec {
        stripe_size: 64 << 10,
        stripe_count: 2,
        stripe_offset: -1,
    };
    let mut live: Vec<(u64, u64)> = Vec::new(); // (file, acknowledged chunks)
    let mut file = 0u64;
    'files: while !s.stop.load(Ordering::SeqCst) {
        let path = format!("/stream/{file}");
        let flags = rustre::OpenFlags {
            write: true,
            create: true,
            excl: true,
            ..Default::default()
        };
        let fd = match c.open(&path, flags, 0o644, Some(&layout)) {
            Ok(fd) => fd,
            Err(e) => {
                s.fail(format!("stream: open {path}: {e}"));
                break;
            }
        };
        live.push((file, 0));
        for k in 0..CHUNKS_PER_FILE {
            if s.stop.load(Ordering::SeqCst) {
                let _ = c.close(fd);
                break 'files;
            }
            let off = k * CHUNK as u64;
            match c.pwrite(fd, &stream_chunk(file, off), off) {
                Ok(n) if n == CHUNK => {
                    if let Some(l) = live.last_mut() {
                        l.1 = k + 1;
                    }
                    s.chunks.fetch_add(1, Ordering::SeqCst);
                }
                Ok(n) => {
                    s.fail(format!("stream: {path} at {off}: short write {n}"));
                    break 'files;
                }
                Err(e) => {
                    s.fail(format!("stream: write {path} at {off}: {e}"));
                    break 'files;
                }
            }
        }
        if let Err(e) = c.close(fd) {
            s.fail(format!("stream: close {path}: {e}"));
            break;
        }
        // Verify and remove the file two behind, keeping the space used bounded.
        if live.len() > 2 {
            let (old, chunks) = live.remove(0);
            let p = format!("/stream/{old}");
            match read_all(&c, &p) {
                Ok(got) => {
                    if let Err(e) = check_stream(old, chunks, &got) {
                        s.fail(e);
                        break;
                    }
                }
                Err(e) => {
                    s.fail(format!("stream: read back {p}: {e}"));
                    break;
                }
            }
            if let Err(e) = c.unlink(&p) {
                s.fail(format!("stream: unlink {p}: {e}"));
                break;
            }
        }
        file += 1;
    }
    c.disconnect();
    live
}

fn check_stream(file: u64, chunks: u64, got: &[u8]) -> Result<(), String> {
    let want = chunks * CHUNK as u64;
    if (got.len() as u64) < want {
        return Err(format!("/stream/{file}: {} bytes, {want} acknowledged", got.len()));
    }
    if let Some(i) = (0..want).find(|&i| got[i as usize] != stream_byte(file, i)) {
        return Err(format!("/stream/{file}: byte {i} differs from what was acknowledged"));
    }
    Ok(())
}

/// Creates `/storm/fN` with storm_data(N), removes every third file again; returns the files
/// that must exist.
fn storm(c: rustre::Client, s: Arc<Shared>) -> BTreeMap<u64, ()> {
    let mut present = BTreeMap::new();
    let mut i = 0u64;
    while !s.stop.load(Ordering::SeqCst) {
        let p = format!("/storm/f{i}");
        if let Err(e) = write_new(&c, &p, &storm_data(i), None) {
            s.fail(format!("storm: create {p}: {e}"));
            break;
        }
        present.insert(i, ());
        s.storm_ops.fetch_add(1, Ordering::SeqCst);
        if i % 3 == 2 {
            let q = format!("/storm/f{}", i - 1);
            if let Err(e) = c.unlink(&q) {
                s.fail(format!("storm: unlink {q}: {e}"));
                break;
            }
            present.remove(&(i - 1));
            s.storm_ops.fetch_add(1, Ordering::SeqCst);
        }
        i += 1;
    }
    c.disconnect();
    present
}

fn device_paths(data: &Path) -> (PathBuf, Vec<PathBuf>) {
    let cluster: toml::Table = std::fs::read_to_string(data.join("cluster.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mdt = PathBuf::from(cluster["mds"]["device"].as_str().unwrap());
    let osts = cluster["ost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| PathBuf::from(o["device"].as_str().unwrap()))
        .collect();
    (mdt, osts)
}

fn check_clean(tool: &str, dev: &Path) {
    let bin = Path::new(common::RUSTRE).with_file_name(tool);
    let out = std::process::Command::new(&bin).arg("check").arg(dev).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} check {}: {}{}",
        dev.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{tool} check {}: clean", dev.display());
}

#[test]
fn mds_and_oss_killed_alternately_under_stream_and_storm() {
    let failovers: u32 = std::env::var("RUSTRE_CHAOS_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    build_daemons();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let _down = Down(data);
    let out = rustre(
        &[
            "cluster",
            "up",
            "--ha",
            "--osts",
            "2",
            "--size-per-ost",
            "1G",
            "--mdt-size",
            "128M",
        ],
        data,
    );
    assert!(out.status.success(), "{}", text(&out));

    let setup = connect(data);
    setup.mkdir("/stream", 0o755, None).unwrap();
    setup.mkdir("/storm", 0o755, None).unwrap();
    setup.disconnect();

    let shared = Arc::new(Shared::default());
    let stream = {
        let (c, s) = (connect(data), shared.clone());
        std::thread::spawn(move || streamer(c, s))
    };
    let stormer = {
        let (c, s) = (connect(data), shared.clone());
        std::thread::spawn(move || storm(c, s))
    };

    let mut took = Vec::new();
    for k in 0..failovers {
        // Both workloads make progress before each kill: the previous failover is over for them.
        let (c0, s0) = (
            shared.chunks.load(Ordering::SeqCst),
            shared.storm_ops.load(Ordering::SeqCst),
        );
        let t0 = Instant::now();
        while shared.chunks.load(Ordering::SeqCst) < c0 + 2 || shared.storm_ops.load(Ordering::SeqCst) < s0 + 5 {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            assert!(
                t0.elapsed() < STALL_LIMIT,
                "failover {k}: no progress for {STALL_LIMIT:?} (stream {} chunks, storm {} ops)",
                shared.chunks.load(Ordering::SeqCst),
                shared.storm_ops.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(e) = shared.error.lock().unwrap().clone() {
            panic!("before failover {k}: {e}");
        }
        let target: Vec<String> = if k % 2 == 0 {
            vec!["mds".into()]
        } else {
            vec!["ost".into(), ((k / 2) % 2).to_string()]
        };
        let mut args = vec!["cluster", "fail"];
        args.extend(target.iter().map(String::as_str));
        let out = rustre(&args, data);
        assert!(out.status.success(), "failover {k} ({target:?}): {}", text(&out));
        let t = text(&out);
        let secs: f64 = t
            .lines()
            .find_map(|l| l.split("serves after ").nth(1))
            .and_then(|v| v.trim_end_matches(" s").parse().ok())
            .unwrap_or_else(|| panic!("no takeover time in:\n{t}"));
        took.push((target.join(" "), secs));
    }
    // Let both workloads complete operations after the last failover, then stop them.
    let (c0, s0) = (
        shared.chunks.load(Ordering::SeqCst),
        shared.storm_ops.load(Ordering::SeqCst),
    );
    let t0 = Instant::now();
    while (shared.chunks.load(Ordering::SeqCst) < c0 + 2 || shared.storm_ops.load(Ordering::SeqCst) < s0 + 5)
        && !shared.stop.load(Ordering::SeqCst)
    {
        assert!(t0.elapsed() < STALL_LIMIT, "no progress after the last failover");
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.stop.store(true, Ordering::SeqCst);
    let live = stream.join().unwrap();
    let present = stormer.join().unwrap();
    if let Some(e) = shared.error.lock().unwrap().clone() {
        panic!("a workload saw an error (applications must see delays, not errors): {e}");
    }
    eprintln!(
        "chaos: {failovers} failovers, {} streamed chunks ({} MiB), {} storm operations; takeovers: {took:?}",
        shared.chunks.load(Ordering::SeqCst),
        (shared.chunks.load(Ordering::SeqCst) * CHUNK as u64) >> 20,
        shared.storm_ops.load(Ordering::SeqCst)
    );

    // Every acknowledged byte and operation, through a fresh client.
    let c = connect(data);
    for (file, chunks) in &live {
        let got = read_all(&c, &format!("/stream/{file}")).unwrap();
        check_stream(*file, *chunks, &got).unwrap();
    }
    let mut names: Vec<String> = c
        .read_dir_all("/storm")
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    let mut want: Vec<String> = present.keys().map(|i| format!("f{i}")).collect();
    want.sort();
    assert_eq!(names.len(), want.len(), "/storm holds other files than acknowledged");
    assert_eq!(names, want);
    for i in present.keys() {
        let got = read_all(&c, &format!("/storm/f{i}")).unwrap();
        assert!(got == storm_data(*i), "/storm/f{i}: content differs");
    }
    c.disconnect();

    let (mdt, osts) = device_paths(data);
    let out = rustre(&["cluster", "down"], data);
    assert!(out.status.success(), "{}", text(&out));
    check_clean("mdsd", &mdt);
    for o in &osts {
        check_clean("ostd", o);
    }
}
