//! Crash tests: a seeded workload of writes, punches, truncates, destroys and precreates is cut by
//! a power cut after the k-th device write, for every k the workload reaches. After remounting
//! (journal replay), every acknowledged operation reads back exactly, the one operation in flight
//! at the cut is either absent or present block by block (each 4 KiB block old or new, never a
//! mixture), and the checker finds nothing wrong. Every third run also loses power again during
//! the recovery itself.
#![allow(clippy::unwrap_used)]

use rustre_ostd::check::check;
use rustre_ostd::dev::MemDevice;
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::store::ObjectStore;
use std::collections::BTreeMap;
use std::sync::Arc;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { id: u64, off: u64, data: Vec<u8> },
    Punch { id: u64, off: u64, len: u64 },
    Truncate { id: u64, size: u64 },
    Destroy { id: u64 },
    Precreate { count: u32 },
}

type Model = BTreeMap<u64, Vec<u8>>;

fn workload(seed: u64, n: usize) -> Vec<Op> {
    let mut r = Rng(seed | 1);
    let mut ops = Vec::new();
    let mut live: Vec<u64> = (1..=4).collect();
    let mut next_id = 5;
    for i in 0..n {
        if live.is_empty() || r.below(12) == 0 {
            ops.push(Op::Precreate { count: 2 });
            live.push(next_id);
            live.push(next_id + 1);
            next_id += 2;
            continue;
        }
        let id = live[r.below(live.len() as u64) as usize];
        match r.below(10) {
            0..=5 => {
                let aligned = r.below(2) == 0;
                let off = if aligned { r.below(48) * 4096 } else { r.below(200_000) };
                let len = if aligned {
                    (1 + r.below(16)) * 4096
                } else {
                    1 + r.below(40_000)
                };
                let byte = (i as u8).wrapping_mul(31).wrapping_add(1);
                let data: Vec<u8> = (0..len).map(|j| byte ^ (j as u8 & 0x0F)).collect();
                ops.push(Op::Write { id, off, data });
            }
            6 => ops.push(Op::Punch {
                id,
                off: r.below(150_000),
                len: 1 + r.below(60_000),
            }),
            7 => ops.push(Op::Truncate {
                id,
                size: r.below(120_000),
            }),
            8 => {
                ops.push(Op::Destroy { id });
                live.retain(|&x| x != id);
            }
            _ => ops.push(Op::Write {
                id,
                off: r.below(4) * 4096,
                data: vec![0xEE; 4096 * 3],
            }),
        }
    }
    ops
}

/// Applies `op` to the model; returns the objects it touched.
fn apply(model: &mut Model, op: &Op, next_id: &mut u64) {
    match op {
        Op::Write { id, off, data } => {
            let o = model.get_mut(id).expect("workload writes live objects");
            let end = *off as usize + data.len();
            if o.len() < end {
                o.resize(end, 0);
            }
            o[*off as usize..end].copy_from_slice(data);
        }
        Op::Punch { id, off, len } => {
            let o = model.get_mut(id).expect("live");
            let end = (off + len).min(o.len() as u64) as usize;
            if (*off as usize) < end {
                o[*off as usize..end].fill(0);
            }
        }
        Op::Truncate { id, size } => {
            model.get_mut(id).expect("live").resize(*size as usize, 0);
        }
        Op::Destroy { id } => {
            model.remove(id);
        }
        Op::Precreate { count } => {
            for i in 0..u64::from(*count) {
                model.insert(*next_id + i, Vec::new());
            }
            *next_id += u64::from(*count);
        }
    }
}

fn run(s: &ObjectStore, op: &Op) -> bool {
    match op {
        Op::Write { id, off, data } => s.write(*id, *off, data).is_ok(),
        Op::Punch { id, off, len } => s.punch(*id, *off, *len).is_ok(),
        Op::Truncate { id, size } => s.truncate(*id, *size).is_ok(),
        Op::Destroy { id } => s.destroy(*id).is_ok(),
        Op::Precreate { count } => s.precreate(*count).is_ok(),
    }
}

fn block(v: &[u8], b: usize) -> [u8; 4096] {
    let mut out = [0u8; 4096];
    let start = (b * 4096).min(v.len());
    let end = ((b + 1) * 4096).min(v.len());
    out[..end - start].copy_from_slice(&v[start..end]);
    out
}

/// Runs the workload with the power cut after `k` device writes; returns false when the workload
/// finished before the cut.
fn crash_once(seed: u64, ops: &[Op], k: u64) -> bool {
    let dev = MemDevice::new(8 << 20, seed ^ k.wrapping_mul(0x9E37));
    let mut opts = MkfsOptions::new("crash", 0);
    opts.journal_blocks = 64;
    opts.max_objects = 256;
    mkfs(&dev, &opts).unwrap();
    let mut model: Model = BTreeMap::new();
    let mut next_id = 1;
    {
        let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
        assert_eq!(s.precreate(4).unwrap(), 1);
    }
    apply(&mut model, &Op::Precreate { count: 4 }, &mut next_id);
    let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
    dev.cut_power_after(k);
    let mut inflight = None;
    for op in ops {
        if run(&s, op) {
            apply(&mut model, op, &mut next_id);
        } else {
            inflight = Some(op.clone());
            break;
        }
    }
    drop(s);
    let cut = dev.is_dead();
    dev.power_cut();
    if k.is_multiple_of(3) {
        // The power goes again during recovery (journal replay, reset): recovery starts over.
        dev.cut_power_after(1 + k % 4);
        let _ = ObjectStore::open(Arc::new(dev.clone()));
        dev.power_cut();
    }
    let s = ObjectStore::open(Arc::new(dev.clone())).unwrap_or_else(|e| panic!("seed {seed} k={k}: remount: {e}"));
    let r = check(&dev).unwrap();
    assert!(
        r.clean(),
        "seed {seed} k={k}: checker: {:#?} (in flight: {inflight:?})",
        r.problems
    );
    let mut after = model.clone();
    let mut after_next = next_id;
    if let Some(op) = &inflight {
        apply(&mut after, op, &mut after_next);
    }
    let ctx = |id: u64| {
        format!(
            "seed {seed} k={k} object {id} (in flight: {:?})",
            inflight.as_ref().map(short)
        )
    };
    // Every object of the acknowledged state, and of the state with the in-flight op applied.
    let ids: std::collections::BTreeSet<u64> = model.keys().chain(after.keys()).copied().collect();
    for id in ids {
        let (old, new) = (model.get(&id), after.get(&id));
        let exists = s.exists(id);
        match (old, new, exists) {
            (None, None, _) => assert!(!exists, "{}: must not exist", ctx(id)),
            (Some(_), None, false) | (None, Some(_), false) => continue, // destroy/precreate either way
            (Some(_), Some(_), false) => panic!("{}: lost", ctx(id)),
            (_, _, true) => {
                let old = old.cloned().unwrap_or_default();
                let new = new.cloned().unwrap_or_default();
                let size = s.getattr(id).unwrap().size as usize;
                let (lo, hi) = (old.len().min(new.len()), old.len().max(new.len()));
                if old == new {
                    assert_eq!(size, old.len(), "{}: size", ctx(id));
                } else {
                    assert!(size >= lo && size <= hi, "{}: size {size} not in {lo}..={hi}", ctx(id));
                }
                let got = s.read(id, 0, size).unwrap_or_else(|e| panic!("{}: read: {e}", ctx(id)));
                for b in 0..size.div_ceil(4096) {
                    let g = block(&got, b);
                    let (o, n) = (block(&old, b), block(&new, b));
                    // Bytes past a smaller size are not visible: compare the visible part.
                    let vis = (size - b * 4096).min(4096);
                    assert!(
                        g[..vis] == o[..vis] || g[..vis] == n[..vis],
                        "{}: block {b} is neither old nor new content",
                        ctx(id)
                    );
                    if old == new {
                        assert!(g[..vis] == o[..vis], "{}: acknowledged block {b} differs", ctx(id));
                    }
                }
            }
        }
    }
    // The recovered target takes new work.
    let id = s.precreate(1).unwrap();
    s.write(id, 0, b"after the crash").unwrap();
    assert_eq!(s.read(id, 0, 100).unwrap(), b"after the crash");
    assert!(check(&dev).unwrap().clean());
    cut
}

fn short(op: &Op) -> String {
    match op {
        Op::Write { id, off, data } => format!("write {id} @{off} +{}", data.len()),
        other => format!("{other:?}"),
    }
}

#[test]
fn every_power_cut_point_recovers() {
    for seed in [1u64, 0xC0FFEE] {
        let ops = workload(seed, 40);
        let mut k = 1;
        // Every cut point until the workload completes uncut.
        while crash_once(seed, &ops, k) {
            k += 1;
            assert!(k < 10_000, "workload never finishes");
        }
        assert!(k > 50, "workload too short to be interesting: {k} writes");
    }
}

/// Offset range of the journal (header and records) on `dev`.
fn journal_bytes(s: &ObjectStore) -> std::ops::Range<u64> {
    let g = s.superblock().geometry;
    rustre_ostd::format::JOURNAL_START * 4096..g.state_block * 4096
}

/// One flush per commit: a power cut before it returns can leave the journal record durable and
/// the data it points to lost. Replay must treat that record as uncommitted (the write was never
/// acknowledged) and leave the old data readable; with the data durable too, the write is there.
#[test]
fn a_durable_journal_record_whose_data_was_lost_is_not_committed() {
    for data_survives in [false, true] {
        let dev = MemDevice::new(8 << 20, 5);
        mkfs(&dev, &MkfsOptions::new("crash", 0)).unwrap();
        let old: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
        let new = vec![0x5Au8; 3 * 4096];
        let journal = {
            let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
            let id = s.precreate(1).unwrap();
            s.write(id, 0, &old).unwrap();
            // The power goes after the data write and the record write, before the flush.
            let (w0, f0) = (dev.writes(), dev.flushes());
            dev.cut_power_after(2);
            assert!(
                s.write(id, 4096, &new).is_err(),
                "a write whose flush failed is not acknowledged"
            );
            assert_eq!((dev.writes() - w0, dev.flushes() - f0), (2, 0));
            journal_bytes(&s)
        };
        dev.power_cut_keeping(|off| data_survives || journal.contains(&off));
        let g = rustre_ostd::format::read_superblock(&dev).unwrap().geometry;
        let scan = rustre_ostd::journal::scan(&dev, &g).unwrap();
        let mut expect = old.clone();
        if data_survives {
            assert_eq!(scan.dropped, None);
            expect[4096..].copy_from_slice(&new[..2 * 4096]);
            expect.extend_from_slice(&new[2 * 4096..]);
        } else {
            // The record is intact: only its data tells it from a committed one.
            assert!(
                scan.dropped.is_some(),
                "the record must be intact for this test: {scan:?}"
            );
        }
        let r = check(&dev).unwrap();
        assert!(r.clean(), "data survives {data_survives}: {:#?}", r.problems);
        let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
        assert_eq!(s.read(1, 0, 1 << 20).unwrap(), expect, "data survives {data_survives}");
        // The dropped record is gone for good: later commits and a second recovery keep working.
        s.write(1, 0, b"after").unwrap();
        expect[..5].copy_from_slice(b"after");
        drop(s);
        dev.power_cut();
        let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
        assert_eq!(s.read(1, 0, 1 << 20).unwrap(), expect);
        assert!(check(&dev).unwrap().clean());
    }
}

/// Format version 1 devices keep the flush of the data before the journal record (an older ostd
/// may recover them); version 2 devices flush once per commit.
#[test]
fn commits_flush_once_and_version_1_devices_keep_two_flushes() {
    for version in [2u32, 1] {
        let dev = MemDevice::new(8 << 20, 9);
        let mut sb = mkfs(&dev, &MkfsOptions::new("crash", 0)).unwrap();
        assert_eq!(sb.version, rustre_ostd::format::FORMAT_VERSION);
        if version == 1 {
            sb.version = 1;
            let mut b = rustre_ostd::dev::AlignedBuf::new(4096);
            sb.encode(&mut b);
            rustre_ostd::dev::BlockDevice::write_at(&dev, 0, &b).unwrap();
            rustre_ostd::dev::BlockDevice::flush(&dev).unwrap();
        }
        let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
        assert_eq!(s.superblock().version, version);
        let id = s.precreate(1).unwrap();
        let f0 = dev.flushes();
        for i in 0..10u64 {
            s.write(id, i * 47008, &[i as u8 + 1; 47008]).unwrap();
        }
        let per = (dev.flushes() - f0) as f64 / 10.0;
        let want = if version == 1 { 2.0 } else { 1.0 };
        assert_eq!(per, want, "format version {version}: flushes per write");
        drop(s);
        dev.power_cut();
        let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
        for i in 0..10u64 {
            assert_eq!(s.read(id, i * 47008, 47008).unwrap(), vec![i as u8 + 1; 47008]);
        }
        assert!(check(&dev).unwrap().clean());
    }
}
