//! Object store behaviour on the memory device.
#![allow(clippy::unwrap_used)]

use rustre_ostd::StoreError;
use rustre_ostd::check::check;
use rustre_ostd::dev::{BlockDevice, FaultKind, MemDevice};
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::store::ObjectStore;
use std::sync::Arc;

fn fresh(size: u64) -> (MemDevice, ObjectStore) {
    let dev = MemDevice::new(size, 42);
    mkfs(&dev, &MkfsOptions::new("testfs", 3)).unwrap();
    let store = ObjectStore::open(Arc::new(dev.clone())).unwrap();
    (dev, store)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn assert_clean(dev: &MemDevice) {
    let r = check(dev).unwrap();
    assert!(r.clean(), "checker: {:#?}", r.problems);
}

#[test]
fn write_read_overwrite_unaligned_and_sparse() {
    let (dev, s) = fresh(64 << 20);
    let id = s.precreate(4).unwrap();
    assert_eq!(id, 1);
    let mut model = vec![0u8; 0];
    let apply = |model: &mut Vec<u8>, off: usize, data: &[u8]| {
        if model.len() < off + data.len() {
            model.resize(off + data.len(), 0);
        }
        model[off..off + data.len()].copy_from_slice(data);
    };
    for (i, (off, len)) in [
        (0usize, 1 << 20),
        (100, 5000),
        (4096 * 300 + 7, 9000),
        (3 << 20, 4096),
        (50, 10),
        (1 << 20, 3 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(i as u64, len);
        let size = s.write(id, off as u64, &data).unwrap();
        apply(&mut model, off, &data);
        assert_eq!(size, model.len() as u64);
        assert_eq!(s.read(id, 0, model.len() + 100).unwrap(), model, "after write {i}");
    }
    // Unaligned read in the middle.
    assert_eq!(s.read(id, 12345, 77777).unwrap(), &model[12345..12345 + 77777]);
    // Sparse object: a hole reads as zeros.
    let id2 = id + 1;
    s.write(id2, 10 << 20, b"tail").unwrap();
    let r = s.read(id2, 0, (10 << 20) + 4).unwrap();
    assert!(r[..10 << 20].iter().all(|&b| b == 0));
    assert_eq!(&r[10 << 20..], b"tail");
    assert_eq!(s.getattr(id2).unwrap().blocks, 1);
    assert_clean(&dev);
    // Remount: everything is still there.
    drop(s);
    let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
    assert_eq!(s.read(id, 0, model.len()).unwrap(), model);
    assert_eq!(s.precreate(1).unwrap(), 5, "ids are never reused");
    assert_clean(&dev);
}

#[test]
fn punch_truncate_destroy_free_space() {
    let (dev, s) = fresh(32 << 20);
    let free0 = s.statfs().free_bytes;
    let id = s.precreate(1).unwrap();
    let data = pattern(9, 3 << 20);
    s.write(id, 0, &data).unwrap();
    assert_eq!(s.statfs().free_bytes, free0 - (3 << 20));
    s.punch(id, 1000, 1 << 20).unwrap();
    let r = s.read(id, 0, 3 << 20).unwrap();
    assert_eq!(&r[..1000], &data[..1000]);
    assert!(r[1000..1000 + (1 << 20)].iter().all(|&b| b == 0));
    assert_eq!(&r[1000 + (1 << 20)..], &data[1000 + (1 << 20)..]);
    assert_eq!(s.truncate(id, 5000).unwrap(), 5000);
    assert_eq!(s.getattr(id).unwrap().size, 5000);
    // Growing again shows zeros past the old end.
    s.write(id, 10000, b"x").unwrap();
    let r = s.read(id, 0, 10001).unwrap();
    assert_eq!(&r[..1000], &data[..1000]);
    assert!(r[5000..10000].iter().all(|&b| b == 0));
    assert_eq!(s.punch(id, 0, u64::MAX).unwrap(), 0);
    assert_eq!(s.getattr(id).unwrap().blocks, 0);
    s.destroy(id).unwrap();
    assert!(matches!(s.getattr(id), Err(StoreError::NotFound(_))));
    assert!(matches!(s.destroy(id), Err(StoreError::NotFound(_))));
    assert!(matches!(s.write(id, 0, b"a"), Err(StoreError::NotFound(_))));
    assert!(matches!(s.read(999, 0, 1), Err(StoreError::NotFound(_))));
    s.sync().unwrap();
    assert_eq!(s.statfs().free_bytes, free0);
    assert_clean(&dev);
}

#[test]
fn full_device_is_enospc_and_nothing_is_corrupted() {
    let (dev, s) = fresh(16 << 20);
    let id = s.precreate(2).unwrap();
    let total = s.statfs().total_bytes;
    let chunk = pattern(1, 1 << 20);
    let mut written = 0u64;
    let err = loop {
        match s.write(id, written, &chunk) {
            Ok(_) => written += chunk.len() as u64,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StoreError::NoSpace(_)), "{err}");
    assert_eq!(err.errno(), libc::ENOSPC);
    assert!(written > 0 && written <= total);
    for i in 0..written / chunk.len() as u64 {
        assert_eq!(s.read(id, i * chunk.len() as u64, chunk.len()).unwrap(), chunk);
    }
    assert_clean(&dev);
    // Freeing space makes writes possible again.
    s.destroy(id).unwrap();
    s.write(id + 1, 0, &chunk).unwrap();
    assert_clean(&dev);
}

#[test]
fn corrupted_data_is_an_error_never_returned() {
    let (dev, s) = fresh(16 << 20);
    let id = s.precreate(1).unwrap();
    s.write(id, 0, &pattern(3, 8192)).unwrap();
    let g = s.superblock().geometry;
    // Corrupt one byte of the object's second block.
    let mut found = None;
    let img = dev.durable_image();
    let want = pattern(3, 8192);
    for d in 0..g.data_blocks {
        let at = ((g.data_start + d) * 4096) as usize;
        if img[at..at + 4096] == want[4096..] {
            found = Some(at);
        }
    }
    dev.corrupt_byte(found.unwrap() as u64 + 17);
    let err = s.read(id, 0, 8192).unwrap_err();
    assert!(matches!(err, StoreError::Checksum { block: 1, .. }), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(s.read(id, 0, 4096).unwrap(), &want[..4096]);
    let r = check(&dev).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains("checksum"));
}

#[test]
fn device_errors_are_reported_and_leave_the_target_consistent() {
    let (dev, s) = fresh(16 << 20);
    let id = s.precreate(1).unwrap();
    s.write(id, 0, &pattern(5, 4096)).unwrap();
    let g = s.superblock().geometry;
    for b in g.data_start..g.total_blocks {
        dev.inject_error(b, FaultKind::Write);
    }
    assert!(matches!(s.write(id, 0, &pattern(6, 4096)), Err(StoreError::Dev(_))));
    dev.clear_errors();
    assert_eq!(s.read(id, 0, 4096).unwrap(), pattern(5, 4096));
    s.sync().unwrap();
    assert_clean(&dev);
}

#[test]
fn mkfs_refuses_what_it_must() {
    let dev = MemDevice::new(8 << 20, 1);
    mkfs(&dev, &MkfsOptions::new("fs", 0)).unwrap();
    let e = mkfs(&dev, &MkfsOptions::new("fs", 1)).unwrap_err().to_string();
    assert!(e.contains("already holds rustre OST0") && e.contains("--force"), "{e}");
    let mut force = MkfsOptions::new("fs", 1);
    force.force = true;
    assert_eq!(mkfs(&dev, &force).unwrap().ost_index, 1);
    let e = mkfs(&MemDevice::new(8 << 20, 1), &MkfsOptions::new("bad name", 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fsname"), "{e}");

    let write0 = |dev: &MemDevice, at: usize, bytes: &[u8]| {
        let mut b = rustre_ostd::dev::AlignedBuf::new(17 * 4096);
        dev.read_at(0, &mut b).unwrap();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        dev.write_at(0, &b).unwrap();
    };
    for (at, magic, what) in [
        (1080usize, &[0x53u8, 0xEF][..], "ext2/ext3/ext4"),
        (0, b"XFSB", "XFS"),
        (65600, b"_BHRfS_M", "btrfs"),
        (0, b"RUSTMDT\0", "rustre MDT"),
    ] {
        let d = MemDevice::new(8 << 20, 1);
        write0(&d, at, magic);
        let e = mkfs(&d, &MkfsOptions::new("fs", 0)).unwrap_err().to_string();
        assert!(e.contains(what) && e.contains(d.path()), "{e}");
    }
    // A newer format version is refused even with --force, and by mount.
    let d = MemDevice::new(8 << 20, 1);
    mkfs(&d, &MkfsOptions::new("fs", 0)).unwrap();
    write0(&d, 8, &99u32.to_le_bytes());
    let e = mkfs(&d, &force).unwrap_err().to_string();
    assert!(e.contains("version 99"), "{e}");
    let e = ObjectStore::open(Arc::new(d.clone())).unwrap_err().to_string();
    assert!(e.contains("version 99") && e.contains("newer"), "{e}");
    // Too small.
    let e = mkfs(&MemDevice::new(256 << 10, 1), &MkfsOptions::new("fs", 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("too small"), "{e}");
}

/// A device whose cache flush takes a while, as a real disk's does.
struct SlowFlush(MemDevice);

impl BlockDevice for SlowFlush {
    fn path(&self) -> &str {
        self.0.path()
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn block_size(&self) -> u32 {
        self.0.block_size()
    }
    fn submit(&self, ops: &mut [rustre_ostd::dev::IoOp<'_>]) -> Result<(), rustre_ostd::dev::DevError> {
        self.0.submit(ops)
    }
    fn flush(&self) -> Result<(), rustre_ostd::dev::DevError> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        self.0.flush()
    }
}

#[test]
fn concurrent_writers_share_commits() {
    let dev = MemDevice::new(64 << 20, 42);
    mkfs(&dev, &MkfsOptions::new("testfs", 3)).unwrap();
    let s = Arc::new(ObjectStore::open(Arc::new(SlowFlush(dev.clone()))).unwrap());
    let first = s.precreate(8).unwrap();
    let commits_before = s.journal_commits();
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let s = Arc::clone(&s);
            sc.spawn(move || {
                for i in 0..16u64 {
                    s.write(first + t, i * 65536, &pattern(t * 100 + i, 65536)).unwrap();
                }
            });
        }
    });
    for t in 0..8u64 {
        for i in 0..16u64 {
            assert_eq!(
                s.read(first + t, i * 65536, 65536).unwrap(),
                pattern(t * 100 + i, 65536)
            );
        }
    }
    // 128 acknowledged writes from 8 writers: commits are shared.
    let commits = s.journal_commits() - commits_before;
    assert!(commits <= 64, "{commits} commits for 128 writes");
    assert_clean(&dev);
}

#[test]
fn received_data_is_checked_before_it_is_written() {
    let (dev, s) = fresh(16 << 20);
    let id = s.precreate(1).unwrap();
    let mut buf = rustre_ostd::dev::AlignedBuf::new(3 * 4096);
    let data = pattern(11, 2 * 4096);
    buf[..data.len()].copy_from_slice(&data);
    let good = rustre_proto::crc::crc32c(&data);
    // Aligned: folded from the block checksums.
    let e = s.write_verified(id, 0, data.len(), &mut buf, good ^ 1).unwrap_err();
    assert!(matches!(e, StoreError::BulkChecksum { .. }), "{e}");
    assert_eq!(e.errno(), libc::EBADMSG);
    assert_eq!(s.getattr(id).unwrap().size, 0, "nothing written");
    s.write_verified(id, 0, data.len(), &mut buf, good).unwrap();
    assert_eq!(s.read(id, 0, data.len()).unwrap(), data);
    // Unaligned.
    let mut buf = rustre_ostd::dev::AlignedBuf::new(2 * 4096);
    buf[100..1100].copy_from_slice(&data[..1000]);
    let crc = rustre_proto::crc::crc32c(&data[..1000]);
    assert!(s.write_verified(id, 100, 1000, &mut buf, crc ^ 7).is_err());
    s.write_verified(id, 100, 1000, &mut buf, crc).unwrap();
    let mut expect = data.clone();
    expect[100..1100].copy_from_slice(&data[..1000]);
    assert_eq!(s.read(id, 0, expect.len()).unwrap(), expect);
    assert_clean(&dev);
}

#[test]
fn object_table_full_is_enospc_with_nothing_half_created() {
    let dev = MemDevice::new(16 << 20, 3);
    let mut opts = MkfsOptions::new("small", 0);
    opts.max_objects = 128;
    mkfs(&dev, &opts).unwrap();
    let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
    assert_eq!(s.precreate(100).unwrap(), 1);
    let e = s.precreate(29).unwrap_err();
    assert!(matches!(e, StoreError::NoSpace(_)), "{e}");
    assert_eq!(s.statfs().objects, 100);
    assert_eq!(s.precreate(28).unwrap(), 101);
    assert_eq!(s.statfs().free_objects, 0);
    s.destroy(5).unwrap();
    assert_eq!(s.precreate(1).unwrap(), 129, "ids are not reused, slots are");
    assert_clean(&dev);
}

#[test]
fn precreate_up_to_grants_what_is_left_then_enospc() {
    let dev = MemDevice::new(16 << 20, 3);
    let mut opts = MkfsOptions::new("small", 0);
    opts.max_objects = 128;
    mkfs(&dev, &opts).unwrap();
    let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
    // An MDS batch larger than the object table gets the whole table, not ENOSPC.
    assert_eq!(s.precreate_up_to(4096).unwrap(), (1, 128));
    let e = s.precreate_up_to(1).unwrap_err();
    assert!(matches!(e, StoreError::NoSpace(_)), "{e}");
    s.destroy(7).unwrap();
    s.destroy(9).unwrap();
    assert_eq!(s.precreate_up_to(4096).unwrap(), (129, 2));
    assert_eq!(s.statfs().free_objects, 0);
    assert_clean(&dev);
}

#[test]
fn reads_report_the_crc32c_of_exactly_the_bytes_returned() {
    let (_dev, s) = fresh(64 << 20);
    let id = s.precreate(1).unwrap();
    // Data, a hole, data ending mid-block: every kind of block a read can meet.
    let a = pattern(7, 3 * 4096 + 100);
    s.write(id, 0, &a).unwrap();
    let b = pattern(8, 5000);
    let b_at = 8 * 4096 + 123;
    s.write(id, b_at, &b).unwrap();
    let size = b_at as usize + b.len();
    let mut model = vec![0u8; size];
    model[..a.len()].copy_from_slice(&a);
    model[b_at as usize..].copy_from_slice(&b);
    let mut buf = rustre_ostd::dev::AlignedBuf::new(16 * 4096);
    for (off, len) in [
        (0, 4096),
        (0, 3 * 4096),
        (1, 4095),
        (100, 9000),
        (4096, 6 * 4096),
        (5000, 40_000),
        (8 * 4096, 8192),
        (b_at, 10_000),
        (size as u64 - 1, 4096),
        (size as u64, 10),
    ] {
        let (start, n, crc) = s.read_with_crc(id, off, len, &mut buf).unwrap();
        let want = &model[(off as usize).min(size)..(off as usize + len).min(size)];
        assert_eq!(&buf[start..start + n], want, "data at {off}+{len}");
        let want_crc = if want.is_empty() {
            0
        } else {
            rustre_proto::crc::crc32c(want)
        };
        assert_eq!(crc, want_crc, "crc at {off}+{len}");
    }
}

/// Lays `ranges` of `data` (indexed by offset) out in a buffer as a multi-range write wants
/// them, and writes them; returns the result.
fn write_ranges(s: &ObjectStore, id: u64, ranges: &[(u64, usize)], data: &dyn Fn(u64, usize) -> Vec<u8>) -> u64 {
    let (slots, span) = rustre_ostd::store::range_slots(ranges);
    let mut buf = rustre_ostd::dev::AlignedBuf::new(span.max(4096));
    let mut all = Vec::new();
    for (&(off, len), &slot) in ranges.iter().zip(&slots) {
        let bytes = data(off, len);
        let at = slot + (off % 4096) as usize;
        buf[at..at + len].copy_from_slice(&bytes);
        all.extend_from_slice(&bytes);
    }
    s.write_ranges_verified(id, ranges, &mut buf, rustre_proto::crc::crc32c(&all))
        .unwrap()
}

#[test]
fn multi_range_writes_complete_their_edge_blocks_from_what_is_stored() {
    let (dev, s) = fresh(64 << 20);
    let id = s.precreate(1).unwrap();
    let old = pattern(1, 64 << 10);
    s.write(id, 0, &old).unwrap();
    let mut model = old.clone();
    let new = |off: u64, len: usize| pattern(off + 7, len);
    // Edges inside stored blocks, in holes past the end, a range inside one block, and two
    // ranges sharing blocks (one block holds both ends).
    for ranges in [
        vec![(100u64, 50usize), (5000, 4096), (20_000, 1)],
        vec![(10, 20), (40, 20), (4090, 12), (4200, 0), (8191, 2)],
        vec![(60_000, 10_000), (80_000, 100)],
    ] {
        let size = write_ranges(&s, id, &ranges, &new);
        for &(off, len) in &ranges {
            let end = off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&new(off, len));
        }
        assert_eq!(size, model.len() as u64);
        assert_eq!(s.read(id, 0, model.len()).unwrap(), model, "after {ranges:?}");
    }
    assert_clean(&dev);
}

#[test]
fn interleaved_multi_range_writers_lose_no_bytes_of_shared_blocks() {
    // Two writers of 47008-byte records interleaved in one object (MPI N-1 strided), each
    // sending ten records per multi-range write: every record's edge blocks are shared with
    // the other writer's neighbours.
    const R: u64 = 47_008;
    let (dev, s) = fresh(64 << 20);
    let s = Arc::new(s);
    let id = s.precreate(1).unwrap();
    let record = |off: u64, len: usize| pattern(off / R, len);
    let writers: Vec<_> = (0..2u64)
        .map(|rank| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for batch in 0..16u64 {
                    let ranges: Vec<(u64, usize)> = (0..10)
                        .map(|k| (((batch * 10 + k) * 2 + rank) * R, R as usize))
                        .collect();
                    write_ranges(&s, id, &ranges, &record);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let all = s.read(id, 0, (320 * R) as usize).unwrap();
    assert_eq!(all.len() as u64, 320 * R);
    for i in 0..320 {
        let at = (i * R) as usize;
        assert!(all[at..at + R as usize] == record(i * R, R as usize)[..], "record {i}");
    }
    drop(s);
    assert_clean(&dev);
}

#[test]
fn the_index_of_a_sequential_object_is_a_run_not_a_map_of_blocks() {
    let (dev, s) = fresh(64 << 20);
    let id = s.precreate(2).unwrap();
    let mut model = Vec::new();
    for k in 0..8u64 {
        let data = pattern(k, 1 << 20);
        s.write(id, k << 20, &data).unwrap();
        model.extend_from_slice(&data);
    }
    assert_eq!(s.getattr(id).unwrap().blocks, 2048);
    assert_eq!(s.index_runs(id).unwrap(), 1, "8 MiB written in order is one run");
    // An overwrite in the middle goes to new blocks: the run splits around it.
    let patch = pattern(99, 3 * 4096);
    s.write(id, 5 * 4096, &patch).unwrap();
    model[5 * 4096..8 * 4096].copy_from_slice(&patch);
    assert_eq!(s.index_runs(id).unwrap(), 3);
    // A hole punched through the patch and its neighbours.
    s.punch(id, 4 * 4096, 6 * 4096).unwrap();
    model[4 * 4096..10 * 4096].fill(0);
    assert_eq!(s.getattr(id).unwrap().blocks, 2048 - 6);
    assert_eq!(s.index_runs(id).unwrap(), 2);
    assert_eq!(s.read(id, 0, model.len()).unwrap(), model);
    assert_clean(&dev);
    // Rebuilt from the on-disk block map at mount: the same runs, the same bytes.
    drop(s);
    let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
    assert_eq!(s.index_runs(id).unwrap(), 2);
    assert_eq!(s.read(id, 0, model.len()).unwrap(), model);
    // Truncating inside block 3 rewrites that block with its tail zeroed, to a new place.
    s.truncate(id, 3 * 4096 + 10).unwrap();
    assert_eq!((s.getattr(id).unwrap().blocks, s.index_runs(id).unwrap()), (4, 2));
    assert_eq!(s.read(id, 0, 1 << 20).unwrap(), &model[..3 * 4096 + 10]);
    s.destroy(id).unwrap();
    assert!(matches!(s.index_runs(id), Err(StoreError::NotFound(_))));
    assert_clean(&dev);
}
