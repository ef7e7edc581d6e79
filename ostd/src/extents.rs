//! The in-memory index of one object: which data block holds each logical 4 KiB block, kept as
//! runs. A run maps logical blocks `l .. l + len` to data blocks `d .. d + len`; a sequentially
//! written object is one run per allocation (the allocator hands out contiguous runs), so both the
//! memory and the work of mapping a large write are per run, not per block.
//!
//! The on-disk block map stays per data block (it holds each block's crc32c); this is only the
//! lookup structure rebuilt from it at mount.

use std::collections::BTreeMap;

/// Logical block → data block, as runs keyed by their first logical block. Runs never overlap,
/// and neighbours that continue each other on disk are merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtentMap {
    /// Logical start → (data start, length in blocks).
    runs: BTreeMap<u64, (u64, u64)>,
    /// Blocks mapped (the sum of the runs' lengths).
    blocks: u64,
}

impl ExtentMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks mapped.
    pub fn len(&self) -> u64 {
        self.blocks
    }

    /// True when no block is mapped.
    pub fn is_empty(&self) -> bool {
        self.blocks == 0
    }

    /// Runs held (the map's memory is proportional to this).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The data block of logical block `l`.
    pub fn get(&self, l: u64) -> Option<u64> {
        let (&ls, &(ds, n)) = self.runs.range(..=l).next_back()?;
        (l - ls < n).then(|| ds + (l - ls))
    }

    /// True when logical block `l` is mapped.
    pub fn contains(&self, l: u64) -> bool {
        self.get(l).is_some()
    }

    /// The runs overlapping logical blocks `lf .. le`, whole, in logical order, as
    /// (logical start, data start, length).
    fn overlapping(&self, lf: u64, le: u64) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let before = self.runs.range(..lf).next_back().filter(|&(&ls, &(_, n))| ls + n > lf);
        before
            .into_iter()
            .chain(self.runs.range(lf..le.max(lf)))
            .map(|(&ls, &(ds, n))| (ls, ds, n))
    }

    /// The mapped stretches of logical blocks `lf .. le`, in logical order, as
    /// (logical start, data start, length), clipped to the range.
    pub fn runs_in(&self, lf: u64, le: u64) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.overlapping(lf, le).filter_map(move |(ls, ds, n)| {
            let (s, e) = (ls.max(lf), (ls + n).min(le));
            (s < e).then(|| (s, ds + (s - ls), e - s))
        })
    }

    /// The mapped (logical, data) pairs of logical blocks `lf .. le`, in logical order.
    pub fn pairs(&self, lf: u64, le: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs_in(lf, le)
            .flat_map(|(l, d, n)| (0..n).map(move |k| (l + k, d + k)))
    }

    /// Unmaps logical blocks `lf .. le`; returns the (logical, data) pairs that were mapped.
    pub fn remove_range(&mut self, lf: u64, le: u64) -> Vec<(u64, u64)> {
        let hit: Vec<(u64, u64, u64)> = self.overlapping(lf, le).collect();
        let mut out = Vec::new();
        for (ls, ds, n) in hit {
            self.runs.remove(&ls);
            let (s, e) = (ls.max(lf), (ls + n).min(le));
            if ls < s {
                self.runs.insert(ls, (ds, s - ls));
            }
            if e < ls + n {
                self.runs.insert(e, (ds + (e - ls), ls + n - e));
            }
            out.extend((s..e).map(|l| (l, ds + (l - ls))));
            self.blocks -= e - s;
        }
        out
    }

    /// Unmaps logical block `l`; returns its data block if it was mapped.
    pub fn remove(&mut self, l: u64) -> Option<u64> {
        self.remove_range(l, l + 1).first().map(|&(_, d)| d)
    }

    /// Maps logical blocks `l .. l + n` to data blocks `d .. d + n`; returns the data blocks they
    /// were mapped to before, in logical order.
    pub fn map_run(&mut self, l: u64, d: u64, n: u64) -> Vec<u64> {
        if n == 0 {
            return Vec::new();
        }
        let old: Vec<u64> = self.remove_range(l, l + n).into_iter().map(|(_, d)| d).collect();
        let (mut start, mut data, mut len) = (l, d, n);
        if let Some((&ls, &(ds, ln))) = self.runs.range(..l).next_back()
            && ls + ln == l
            && ds + ln == d
        {
            self.runs.remove(&ls);
            (start, data, len) = (ls, ds, ln + n);
        }
        if let Some(&(ds, ln)) = self.runs.get(&(l + n))
            && ds == d + n
        {
            self.runs.remove(&(l + n));
            len += ln;
        }
        self.runs.insert(start, (data, len));
        self.blocks += n;
        old
    }

    /// Maps logical block `l` to data block `d`; returns the data block it replaces.
    pub fn insert(&mut self, l: u64, d: u64) -> Option<u64> {
        self.map_run(l, d, 1).first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks `m` against the per-block model and its own invariants.
    fn agrees(m: &ExtentMap, model: &BTreeMap<u64, u64>) {
        assert_eq!(m.len(), model.len() as u64);
        let pairs: Vec<(u64, u64)> = m.pairs(0, u64::MAX).collect();
        let want: Vec<(u64, u64)> = model.iter().map(|(&l, &d)| (l, d)).collect();
        assert_eq!(pairs, want);
        for l in 0..80 {
            assert_eq!(m.get(l), model.get(&l).copied(), "logical {l}");
        }
        // Runs neither overlap nor continue each other (they would have been merged).
        let runs: Vec<(u64, (u64, u64))> = m.runs.iter().map(|(&l, &r)| (l, r)).collect();
        for w in runs.windows(2) {
            let ((l0, (d0, n0)), (l1, (d1, _))) = (w[0], w[1]);
            assert!(n0 > 0 && l0 + n0 <= l1, "overlapping runs {runs:?}");
            assert!(!(l0 + n0 == l1 && d0 + n0 == d1), "unmerged runs {runs:?}");
        }
    }

    #[test]
    fn sequential_writes_are_one_run() {
        let mut m = ExtentMap::new();
        for k in 0..256 {
            assert_eq!(m.insert(k, 1000 + k), None);
        }
        assert_eq!((m.run_count(), m.len()), (1, 256));
        assert_eq!(m.map_run(256, 1256, 256), Vec::<u64>::new());
        assert_eq!((m.run_count(), m.len()), (1, 512));
        assert_eq!(m.get(300), Some(1300));
        assert_eq!(m.get(512), None);
    }

    #[test]
    fn overwrite_splits_and_returns_the_old_blocks() {
        let mut m = ExtentMap::new();
        m.map_run(0, 100, 10);
        assert_eq!(m.map_run(3, 500, 4), vec![103, 104, 105, 106]);
        assert_eq!(m.run_count(), 3);
        assert_eq!(m.len(), 10);
        assert_eq!(
            m.runs_in(0, 10).collect::<Vec<_>>(),
            vec![(0, 100, 3), (3, 500, 4), (7, 107, 3)]
        );
        assert_eq!(
            m.remove_range(2, 8),
            vec![(2, 102), (3, 500), (4, 501), (5, 502), (6, 503), (7, 107)]
        );
        assert_eq!(m.runs_in(0, 10).collect::<Vec<_>>(), vec![(0, 100, 2), (8, 108, 2)]);
        assert_eq!(m.remove(9), Some(109));
        assert_eq!(m.remove(9), None);
        assert_eq!(m.len(), 3);
        assert!(m.runs_in(5, 3).next().is_none(), "an empty range");
    }

    proptest! {
        #[test]
        fn behaves_like_a_per_block_map(ops in proptest::collection::vec((0u8..3, 0u64..64, 0u64..2000, 1u64..12), 1..120)) {
            let mut m = ExtentMap::new();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for (kind, l, d, n) in ops {
                match kind {
                    0 => {
                        let old: Vec<u64> = (l..l + n).filter_map(|k| model.insert(k, d + (k - l))).collect();
                        prop_assert_eq!(m.map_run(l, d, n), old);
                    }
                    1 => {
                        let old: Vec<(u64, u64)> = (l..l + n).filter_map(|k| model.remove(&k).map(|v| (k, v))).collect();
                        prop_assert_eq!(m.remove_range(l, l + n), old);
                    }
                    _ => {
                        let want: Vec<(u64, u64)> = model.range(l..l + n).map(|(&k, &v)| (k, v)).collect();
                        prop_assert_eq!(m.pairs(l, l + n).collect::<Vec<_>>(), want);
                    }
                }
                agrees(&m, &model);
            }
        }
    }
}
