//! Read-ahead (`read_ahead_bytes`) against real mdsd and ostd services: strided and sequential
//! small reads come in multi-range fetches and read exactly what is there (holes as zeros, a
//! short last record), this client's own writes and truncates are never hidden by a window, and
//! `fsync` shows other clients' writes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, RO, RW, RW_CREATE, layout, pattern};
use rustre::Client;

const RECORD: u64 = 47008;

fn client(cl: &Cluster, read_ahead: u64) -> Client {
    let mut cfg = cl.config();
    cfg.limits.read_ahead_bytes = read_ahead;
    Client::connect(cfg).unwrap()
}

/// Writes `records` records of two ranks, interleaved, with a plain client; returns the bytes.
fn write_strided(cl: &Cluster, path: &str, records: u64, tail: usize) -> Vec<u8> {
    let w = cl.client();
    let fd = w.open(path, RW_CREATE, 0o644, Some(&layout(1024, 2))).unwrap();
    let mut model = Vec::new();
    for i in 0..records {
        let off = i * RECORD;
        let data = pattern(i % 2, off, RECORD as usize);
        w.pwrite(fd, &data, off).unwrap();
        model.extend_from_slice(&data);
    }
    // A last record cut short: the file ends inside it.
    let off = records * RECORD;
    let data = pattern(records % 2, off, tail);
    w.pwrite(fd, &data, off).unwrap();
    model.extend_from_slice(&data);
    w.close(fd).unwrap();
    w.disconnect();
    model
}

/// Reads record `i` of rank `rank` (of 2) and checks it against the model.
fn read_record(c: &Client, fd: rustre::Fd, model: &[u8], i: u64, rank: u64, what: &str) {
    let off = (i * 2 + rank) * RECORD;
    let mut buf = vec![0xEEu8; RECORD as usize];
    let n = c.pread(fd, &mut buf, off).unwrap();
    let start = (off as usize).min(model.len());
    let want = &model[start..(start + RECORD as usize).min(model.len())];
    assert_eq!(n, want.len(), "{what}: bytes of record {i} of rank {rank}");
    assert!(buf[..n] == *want, "{what}: record {i} of rank {rank} differs");
}

fn strided_and_sequential(fabric: &'static str) {
    let cl = Cluster::start(fabric, 3, 128 << 20);
    let model = write_strided(&cl, "/strided", 300, 1000);
    let c = client(&cl, 4 << 20);
    // Each rank's records, as IO500's ior-hard reads them; the last one is short.
    for rank in 0..2u64 {
        let fd = c.open("/strided", RO, 0, None).unwrap();
        for i in 0..151u64 {
            read_record(&c, fd, &model, i, rank, "strided");
        }
        c.close(fd).unwrap();
    }
    let stats = c.read_ahead_stats();
    assert!(
        stats.hits >= 250 && stats.rpcs * 10 < stats.records,
        "strided reads were not fetched ahead: {stats:?}"
    );
    // Sequential records of another size, to the end of the file.
    let fd = c.open("/strided", RO, 0, None).unwrap();
    let mut back = Vec::new();
    let mut buf = vec![0u8; 10_000];
    loop {
        let n = c.pread(fd, &mut buf, back.len() as u64).unwrap();
        back.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            break;
        }
    }
    c.close(fd).unwrap();
    assert!(back == model, "the sequential read differs");
    assert!(c.read_ahead_stats().hits > stats.hits + 1000);
    c.disconnect();
}

#[test]
fn strided_and_sequential_reads_are_fetched_ahead_sim() {
    strided_and_sequential("sim");
}

#[test]
fn strided_and_sequential_reads_are_fetched_ahead_tcp() {
    strided_and_sequential("tcp");
}

/// Small records with a small limit: the fetches' ranges come back in the replies (inline, no
/// push), every byte as written.
#[test]
fn small_records_come_in_the_replies() {
    const SMALL: u64 = 3000;
    let cl = Cluster::start("tcp", 2, 64 << 20);
    let w = cl.client();
    let fd = w.open("/small", RW_CREATE, 0o644, Some(&layout(64, 2))).unwrap();
    let model = pattern(5, 0, 2 << 20);
    w.pwrite(fd, &model, 0).unwrap();
    w.close(fd).unwrap();
    let c = client(&cl, 64 << 10);
    let fd = c.open("/small", RO, 0, None).unwrap();
    let mut buf = vec![0u8; SMALL as usize];
    for i in 0..200u64 {
        let off = i * 3 * SMALL + 7;
        assert_eq!(c.pread(fd, &mut buf, off).unwrap(), buf.len());
        assert!(buf[..] == model[off as usize..(off + SMALL) as usize], "record {i}");
    }
    c.close(fd).unwrap();
    let stats = c.read_ahead_stats();
    assert!(stats.hits > 150 && stats.rpcs * 4 < stats.records, "{stats:?}");
    c.disconnect();
    w.disconnect();
}

/// A window its handle stopped reading gives its bytes up, after a second, to another handle
/// whose fetch finds the limit taken.
#[test]
fn idle_windows_give_way() {
    let cl = Cluster::start("sim", 2, 64 << 20);
    let model = write_strided(&cl, "/idle", 200, 0);
    // Room for five records.
    let c = client(&cl, 256 << 10);
    let a = c.open("/idle", RO, 0, None).unwrap();
    let b = c.open("/idle", RO, 0, None).unwrap();
    for i in 0..4u64 {
        read_record(&c, a, &model, i, 0, "handle a");
    }
    let after_a = c.read_ahead_stats().hits;
    for i in 0..20u64 {
        read_record(&c, b, &model, i, 1, "handle b, limit taken");
    }
    assert_eq!(
        c.read_ahead_stats().hits,
        after_a,
        "a's window was in use; b had no room"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for i in 20..40u64 {
        read_record(&c, b, &model, i, 1, "handle b, a idle");
    }
    let hits = c.read_ahead_stats().hits - after_a;
    assert!(hits >= 12, "b's reads did not come from a window: {hits} hits");
    c.close(a).unwrap();
    c.close(b).unwrap();
    c.disconnect();
}

/// Holes read as zeros: a sparse file whose records are partly unwritten, and partly past the
/// end of one stripe's object.
#[test]
fn holes_read_as_zeros() {
    let cl = Cluster::start("sim", 2, 64 << 20);
    let w = cl.client();
    let fd = w.open("/sparse", RW_CREATE, 0o644, Some(&layout(64, 2))).unwrap();
    let mut model = vec![0u8; 200 * RECORD as usize];
    for i in [0u64, 7, 8, 50, 199] {
        let off = i * RECORD;
        let data = pattern(i, off, RECORD as usize);
        w.pwrite(fd, &data, off).unwrap();
        model[off as usize..(off + RECORD) as usize].copy_from_slice(&data);
    }
    // One byte near the end, on the first stripe: the second stripe's object ends at record
    // 50, and the records after it that touch that stripe are partly past its end.
    let last = 214 * 65536 + 100;
    w.pwrite(fd, &[0xAB], last).unwrap();
    model.resize(last as usize + 1, 0);
    model[last as usize] = 0xAB;
    w.close(fd).unwrap();
    let c = client(&cl, 1 << 20);
    let fd = c.open("/sparse", RO, 0, None).unwrap();
    for i in 0..150u64 {
        read_record(&c, fd, &model, i, 0, "sparse");
    }
    c.close(fd).unwrap();
    // Records partly in a hole are read as usual, without fetching the window again.
    let stats = c.read_ahead_stats();
    assert!(stats.hits > 50 && stats.rpcs < 20, "{stats:?}");
    c.disconnect();
    w.disconnect();
}

/// A window never hides this client's own writes (synchronous and write-behind, through
/// another handle) or truncates; `fsync` shows another client's writes.
#[test]
fn windows_give_way_to_writes() {
    let cl = Cluster::start("tcp", 2, 128 << 20);
    let mut model = write_strided(&cl, "/rw", 200, 0);
    let mut cfg = cl.config();
    cfg.limits.read_ahead_bytes = 8 << 20;
    cfg.limits.write_behind_bytes = 1 << 20;
    let c = Client::connect(cfg).unwrap();
    let fd = c.open("/rw", RO, 0, None).unwrap();
    let wfd = c.open("/rw", RW, 0, None).unwrap();
    let overwrite = |c: &Client, model: &mut Vec<u8>, i: u64, seed: u64| {
        let off = i * 2 * RECORD;
        let data = pattern(seed, off, RECORD as usize);
        c.pwrite(wfd, &data, off).unwrap();
        model[off as usize..(off + RECORD) as usize].copy_from_slice(&data);
    };
    for i in 0..5u64 {
        read_record(&c, fd, &model, i, 0, "before writes");
    }
    // Write-behind (one record) and a synchronous write (larger than the limit) ahead of the
    // reader, into records its window holds.
    overwrite(&c, &mut model, 6, 1000);
    let off = 8 * 2 * RECORD;
    let big = pattern(1001, off, 2 << 20);
    c.pwrite(wfd, &big, off).unwrap();
    model[off as usize..off as usize + big.len()].copy_from_slice(&big);
    for i in 5..40u64 {
        read_record(&c, fd, &model, i, 0, "after this client's writes");
    }
    // A truncate through the other handle: records past the end read short, then nothing.
    c.ftruncate(wfd, 60 * 2 * RECORD + 500).unwrap();
    model.truncate((60 * 2 * RECORD + 500) as usize);
    for i in 40..70u64 {
        read_record(&c, fd, &model, i, 0, "after truncate");
    }
    // Another client's write shows after this handle's fsync.
    let fd = {
        c.close(fd).unwrap();
        c.open("/rw", RO, 0, None).unwrap()
    };
    for i in 0..5u64 {
        read_record(&c, fd, &model, i, 0, "reopened");
    }
    let other = cl.client();
    let ofd = other.open("/rw", RW, 0, None).unwrap();
    let off = 20 * 2 * RECORD;
    let data = pattern(2000, off, RECORD as usize);
    other.pwrite(ofd, &data, off).unwrap();
    other.close(ofd).unwrap();
    model[off as usize..(off + RECORD) as usize].copy_from_slice(&data);
    c.fsync(fd).unwrap();
    for i in 5..60u64 {
        read_record(&c, fd, &model, i, 0, "after fsync");
    }
    assert!(c.read_ahead_stats().hits > 50, "{:?}", c.read_ahead_stats());
    c.close(fd).unwrap();
    c.close(wfd).unwrap();
    other.disconnect();
    c.disconnect();
}
