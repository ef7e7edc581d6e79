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
