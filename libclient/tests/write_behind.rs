//! Write-behind (`write_behind_bytes`) against real mdsd and ostd services: what returned early
//! reads back in the order it was written, other handles and clients see it once it is due, and
//! a write that fails after returning is reported, never lost.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, RO, RW_CREATE, layout, pattern};
use rustre::Client;

fn client(cl: &Cluster, write_behind: u64) -> Client {
    let mut cfg = cl.config();
    cfg.limits.write_behind_bytes = write_behind;
    Client::connect(cfg).unwrap()
}

fn put(model: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[off as usize..end].copy_from_slice(data);
}

fn check_file(c: &Client, path: &str, model: &[u8], who: &str) {
    let fd = c.open(path, RO, 0, None).unwrap();
    assert_eq!(c.fstat(fd).unwrap().size, model.len() as u64, "{who}: size of {path}");
    let mut back = vec![0xEEu8; model.len() + 4096];
    let n = c.pread(fd, &mut back, 0).unwrap();
    c.close(fd).unwrap();
    assert_eq!(n, model.len(), "{who}: bytes read from {path}");
    assert!(back[..n] == *model, "{who}: {path} differs from what was written");
}

/// Two threads writing interleaved 47008-byte records through one handle (MPI N-1 strided), and
/// one thread writing overlapping ranges of every size (the later write must win), some larger
/// than the write-behind limit (those go synchronously, after the pending writes they overlap).
fn writes_read_back(fabric: &'static str) {
    const RECORD: u64 = 47008;
    let cl = Cluster::start(fabric, 3, 128 << 20);
    let c = client(&cl, 1 << 20);

    let fd = c.open("/strided", RW_CREATE, 0o644, Some(&layout(1024, 2))).unwrap();
    std::thread::scope(|s| {
        for rank in 0..2u64 {
            let c = &c;
            s.spawn(move || {
                for i in 0..150u64 {
                    let off = (i * 2 + rank) * RECORD;
                    let data = pattern(rank, off, RECORD as usize);
                    assert_eq!(c.pwrite(fd, &data, off).unwrap(), data.len());
                }
            });
        }
    });
    let mut strided = Vec::new();
    for i in 0..300u64 {
        let off = i * RECORD;
        put(&mut strided, off, &pattern(i % 2, off, RECORD as usize));
    }
    // Another handle of the same client, before any fsync or close: it reads what returned.
    check_file(&c, "/strided", &strided, "second handle");
    c.close(fd).unwrap();

    let fd = c.open("/overlap", RW_CREATE, 0o644, Some(&layout(64, 3))).unwrap();
    let mut model = Vec::new();
    let mut rng = 0x9E37_79B9u64;
    let mut next = |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    for i in 0..400 {
        let off = next(3 << 20);
        let len = match i % 10 {
            0 => 1 + next(3 << 20) as usize,
            1..=3 => 1 + next(100) as usize,
            _ => 1 + next(200_000) as usize,
        };
        let data = pattern(100 + i, off, len);
        assert_eq!(c.pwrite(fd, &data, off).unwrap(), len);
        put(&mut model, off, &data);
    }
    // The writing handle itself reads its own writes.
    let mut back = vec![0u8; model.len()];
    assert_eq!(c.pread(fd, &mut back, 0).unwrap(), model.len());
    assert!(back == model, "the writer's read-back differs");
    c.fsync(fd).unwrap();
    c.close(fd).unwrap();

    // A client without write-behind, after the writers closed.
    let other = cl.client();
    check_file(&other, "/strided", &strided, "other client");
    check_file(&other, "/overlap", &model, "other client");
    assert_eq!(c.stat("/overlap").unwrap().size, model.len() as u64);
    other.disconnect();
    c.disconnect();
}

/// One sender (one RPC in flight): the records queued meanwhile go together in multi-range
/// writes, and read back exactly.
#[test]
fn queued_records_are_gathered_into_multi_range_writes() {
    const RECORD: u64 = 47008;
    let cl = Cluster::start("tcp", 2, 128 << 20);
    let mut cfg = cl.config();
    cfg.limits.write_behind_bytes = 8 << 20;
    cfg.limits.max_inflight_per_ost = 1;
    let c = Client::connect(cfg).unwrap();
    let fd = c.open("/gathered", RW_CREATE, 0o644, Some(&layout(1024, 2))).unwrap();
    let mut model = Vec::new();
    // Every other record, as one rank of two writes them; then the gaps, as the other does.
    for rank in 0..2u64 {
        for i in 0..200u64 {
            let off = (i * 2 + rank) * RECORD;
            let data = pattern(rank, off, RECORD as usize);
            assert_eq!(c.pwrite(fd, &data, off).unwrap(), data.len());
            put(&mut model, off, &data);
        }
    }
    c.close(fd).unwrap();
    let stats = c.write_behind_stats();
    // 400 records, some cut in two at a stripe boundary, in fewer RPCs than pieces.
    assert!(
        stats.pieces >= 400 && stats.rpcs < stats.pieces,
        "the records were not gathered: {stats:?}"
    );
    check_file(&cl.client(), "/gathered", &model, "other client");
    c.disconnect();
}

#[test]
fn writes_behind_read_back_in_order_sim() {
    writes_read_back("sim");
}

#[test]
fn writes_behind_read_back_in_order_tcp() {
    writes_read_back("tcp");
}

/// An OST that fills up under writes that had already returned: the failure reaches the
/// application (the next write, then fsync), names the file, and is reported once.
#[test]
fn a_failed_write_behind_is_reported() {
    let cl = Cluster::start("sim", 1, 24 << 20);
    let c = client(&cl, 4 << 20);
    let fd = c.open("/full", RW_CREATE, 0o644, Some(&layout(1024, 1))).unwrap();
    let record = pattern(7, 0, 1 << 20);
    let mut first_error = None;
    for i in 0..64u64 {
        if let Err(e) = c.pwrite(fd, &record, i << 20) {
            first_error = Some(e);
            break;
        }
    }
    let e = c.fsync(fd).unwrap_err();
    assert_eq!(e.errno(), 28, "{e}");
    assert!(e.to_string().contains("/full"), "the error names the file: {e}");
    if let Some(w) = first_error {
        // The write that stopped the loop failed with the same recorded failure.
        assert_eq!(w.errno(), 28, "{w}");
    }
    // Reported once: nothing new has failed since.
    c.fsync(fd).unwrap();
    c.close(fd).unwrap();
    c.disconnect();
}
