//! File layouts and the allocator of precreated OST objects.

use crate::errno::Errno;
use std::collections::{BTreeMap, VecDeque};

/// Default stripe size (1 MiB), as in Lustre.
pub const DEFAULT_STRIPE_SIZE: u32 = 1 << 20;
/// Smallest stripe size accepted (64 KiB, Lustre's minimum).
pub const MIN_STRIPE_SIZE: u32 = 64 << 10;
/// Largest stripe count a layout may have.
pub const MAX_STRIPE_COUNT: usize = 2000;

/// One stripe's object: the OST index and the object id on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    /// OST index.
    pub ost: u32,
    /// Object id on that OST.
    pub oid: u64,
}

/// A file's layout: RAID-0 over `objects`, `stripe_size` bytes per chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per stripe chunk.
    pub stripe_size: u32,
    /// The stripes' objects, in stripe order.
    pub objects: Box<[ObjRef]>,
}

/// A layout request or directory default (`lfs setstripe -S -c -i`): no objects yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutTemplate {
    /// Bytes per stripe chunk (0 = inherit / file system default).
    pub stripe_size: u32,
    /// Stripes: -1 = all OSTs, 0 = inherit / default.
    pub stripe_count: i32,
    /// First OST, -1 = the allocator chooses.
    pub stripe_offset: i32,
}

impl LayoutTemplate {
    /// The file system default: 1 MiB stripes, one stripe, allocator's choice of OST.
    pub const FS_DEFAULT: LayoutTemplate = LayoutTemplate {
        stripe_size: DEFAULT_STRIPE_SIZE,
        stripe_count: 1,
        stripe_offset: -1,
    };

    /// Checks the fields a client sent.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.stripe_size != 0
            && (self.stripe_size < MIN_STRIPE_SIZE || !self.stripe_size.is_multiple_of(MIN_STRIPE_SIZE))
        {
            return Err((
                "stripe_size",
                format!("{} is not a multiple of 64 KiB", self.stripe_size),
            ));
        }
        if self.stripe_count < -1 || self.stripe_count > MAX_STRIPE_COUNT as i32 {
            return Err((
                "stripe_count",
                format!("{} is out of range -1..={MAX_STRIPE_COUNT}", self.stripe_count),
            ));
        }
        if self.stripe_offset < -1 {
            return Err(("stripe_offset", format!("{} is below -1", self.stripe_offset)));
        }
        Ok(())
    }

    /// Fills this template's unset fields from `parent`.
    pub fn inherit(self, parent: LayoutTemplate) -> LayoutTemplate {
        LayoutTemplate {
            stripe_size: if self.stripe_size == 0 {
                parent.stripe_size
            } else {
                self.stripe_size
            },
            stripe_count: if self.stripe_count == 0 {
                parent.stripe_count
            } else {
                self.stripe_count
            },
            stripe_offset: if self.stripe_offset == -1 && self.stripe_count == 0 {
                parent.stripe_offset
            } else {
                self.stripe_offset
            },
        }
    }
}

/// One OST's precreated objects and what is known of its space.
#[derive(Debug, Clone, Default)]
pub struct OstPool {
    /// Precreated ids not yet handed out: half-open ranges, oldest first.
    pub ranges: VecDeque<(u64, u64)>,
    /// Every range ever precreated (merged), to check that layouts use only real objects.
    pub ever: Vec<(u64, u64)>,
    /// Free bytes reported by the OST's last statfs (volatile; only steers the choice).
    pub free_bytes: u64,
    /// Total bytes reported by the OST's last statfs (volatile).
    pub total_bytes: u64,
    /// Free objects (inodes) reported by the OST (volatile).
    pub free_objects: u64,
    /// Total objects reported by the OST (volatile).
    pub total_objects: u64,
    /// The OST's last precreate answered ENOSPC (volatile): an empty pool will not be refilled
    /// until a precreate succeeds again.
    pub full: bool,
    /// Smooth weighted round-robin accumulator (volatile).
    current: i64,
}

impl OstPool {
    /// Ids available to hand out.
    pub fn available(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a).sum()
    }
    /// True if a create could get an object here now or after a refill.
    fn can_supply(&self) -> bool {
        !self.ranges.is_empty() || !self.full
    }
    /// Free space in GiB (at least 1); `None` while the OST's statfs is not known yet.
    fn known_weight(&self) -> Option<i64> {
        (self.total_bytes > 0).then(|| ((self.free_bytes >> 30) as i64).clamp(1, i64::MAX / 4096))
    }
    /// True if `oid` was ever precreated on this OST.
    pub fn was_precreated(&self, oid: u64) -> bool {
        self.ever.iter().any(|&(a, b)| oid >= a && oid < b)
    }
    /// True if `oid` is still in the pool (not handed out).
    pub fn is_free(&self, oid: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| oid >= a && oid < b)
    }
}

/// Per-OST pools of precreated object ids, and the choice of OSTs for a new file.
///
/// The pools' contents are namespace state (changed only through WAL records: `Precreated` adds
/// a range, a create's layout consumes ids), so a restart never hands out an id twice. Free-space
/// figures are volatile and only weight the choice.
#[derive(Debug, Clone, Default)]
pub struct ObjectAllocator {
    /// Pools by OST index.
    pub osts: BTreeMap<u32, OstPool>,
}

impl ObjectAllocator {
    /// Makes sure an OST is known (from the configuration), with an empty pool.
    pub fn add_ost(&mut self, ost: u32) {
        self.osts.entry(ost).or_default();
    }

    /// Records whether `ost`'s last precreate failed for lack of space (volatile).
    pub fn set_full(&mut self, ost: u32, full: bool) {
        if let Some(p) = self.osts.get_mut(&ost) {
            p.full = full;
        }
    }

    /// Adds precreated ids `[start, start + count)` on `ost`.
    pub fn add_range(&mut self, ost: u32, start: u64, count: u64) {
        let pool = self.osts.entry(ost).or_default();
        let end = start.saturating_add(count);
        pool.ranges.push_back((start, end));
        match pool.ever.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => pool.ever.push((start, end)),
        }
    }

    /// Removes `oid` from `ost`'s pool (replaying a create). Ids are always handed out in order,
    /// from the front of the oldest range.
    pub fn consume(&mut self, obj: ObjRef) -> Result<(), Errno> {
        let pool = self.osts.get_mut(&obj.ost).ok_or(Errno::EIO)?;
        let front = pool.ranges.front_mut().ok_or(Errno::EIO)?;
        if front.0 != obj.oid {
            return Err(Errno::EIO);
        }
        front.0 += 1;
        if front.0 == front.1 {
            pool.ranges.pop_front();
        }
        Ok(())
    }

    /// Chooses the objects of a new layout from `tmpl` (already resolved: no zero fields), without
    /// consuming them. `Err(EAGAIN)` when a needed OST has no precreated object left (the caller
    /// waits for a refill), `Err(ENOSPC)` when there are no OSTs or a needed OST is empty and
    /// full (its last precreate answered ENOSPC), so no refill will come.
    pub fn choose(&mut self, tmpl: &LayoutTemplate) -> Result<Layout, Errno> {
        let n_osts = self.osts.len();
        if n_osts == 0 {
            return Err(Errno::ENOSPC);
        }
        let want = if tmpl.stripe_count < 0 {
            n_osts
        } else {
            (tmpl.stripe_count.max(1) as usize).min(n_osts)
        };
        let mut chosen: Vec<u32> = Vec::with_capacity(want);
        if tmpl.stripe_offset >= 0 {
            // Explicit first OST, then ascending indices round robin, like `lfs setstripe -i`.
            let keys: Vec<u32> = self.osts.keys().copied().collect();
            let start = keys.iter().position(|&k| k >= tmpl.stripe_offset as u32).unwrap_or(0);
            for i in 0..want {
                let k = keys[(start + i) % keys.len()];
                if self.osts.get(&k).is_some_and(|p| !p.can_supply()) {
                    return Err(Errno::ENOSPC);
                }
                chosen.push(k);
            }
        } else {
            // Smooth weighted round robin over free space: over time each OST gets a share of new
            // stripes proportional to its free space, and consecutive files rotate over OSTs.
            // Only OSTs with precreated objects take part, so one OST that is down or slow to
            // refill does not hold up creates that could go elsewhere.
            let eligible = |k: &u32, p: &OstPool, chosen: &[u32]| !chosen.contains(k) && !p.ranges.is_empty();
            if self.osts.iter().filter(|(k, p)| eligible(k, p, &chosen)).count() < want {
                let could = self.osts.values().filter(|p| p.can_supply()).count();
                return Err(if could < want { Errno::ENOSPC } else { Errno::EAGAIN });
            }
            // An OST whose free space is not known yet counts as an average one.
            let known: Vec<i64> = self.osts.values().filter_map(|p| p.known_weight()).collect();
            let avg = if known.is_empty() {
                1
            } else {
                (known.iter().sum::<i64>() / known.len() as i64).max(1)
            };
            let weight = |p: &OstPool| p.known_weight().unwrap_or(avg);
            for _ in 0..want {
                let total: i64 = self
                    .osts
                    .iter()
                    .filter(|(k, p)| eligible(k, p, &chosen))
                    .map(|(_, p)| weight(p))
                    .sum();
                let mut best: Option<(u32, i64)> = None;
                for (k, p) in self.osts.iter_mut() {
                    if !eligible(k, p, &chosen) {
                        continue;
                    }
                    p.current += weight(p);
                    if best.is_none_or(|(_, c)| p.current > c) {
                        best = Some((*k, p.current));
                    }
                }
                let Some((k, _)) = best else { break };
                if let Some(p) = self.osts.get_mut(&k) {
                    p.current -= total;
                }
                chosen.push(k);
            }
        }
        let mut objects = Vec::with_capacity(chosen.len());
        for ost in chosen {
            let pool = self.osts.get(&ost).ok_or(Errno::EIO)?;
            let (start, _) = pool.ranges.front().copied().ok_or(Errno::EAGAIN)?;
            objects.push(ObjRef { ost, oid: start });
        }
        Ok(Layout {
            stripe_size: tmpl.stripe_size,
            objects: objects.into_boxed_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpl(count: i32, offset: i32) -> LayoutTemplate {
        LayoutTemplate {
            stripe_size: DEFAULT_STRIPE_SIZE,
            stripe_count: count,
            stripe_offset: offset,
        }
    }

    #[test]
    fn round_robin_weighted_by_free_space() {
        let mut a = ObjectAllocator::default();
        for ost in 0..3 {
            a.add_range(ost, 100, 100_000);
        }
        for (ost, free) in [(0, 3u64 << 30), (1, 1 << 30), (2, 2 << 30)] {
            let p = a.osts.get_mut(&ost).unwrap();
            p.free_bytes = free;
            p.total_bytes = 8 << 30;
        }
        let mut counts = [0; 3];
        for _ in 0..600 {
            let l = a.choose(&tmpl(1, -1)).unwrap();
            for o in l.objects.iter() {
                a.consume(*o).unwrap();
                counts[o.ost as usize] += 1;
            }
        }
        assert_eq!(counts, [300, 100, 200]);
    }

    #[test]
    fn all_osts_and_offset_and_exhaustion() {
        let mut a = ObjectAllocator::default();
        a.add_range(0, 1, 2);
        a.add_range(1, 1, 1);
        a.add_range(2, 7, 1);
        let l = a.choose(&tmpl(-1, -1)).unwrap();
        assert_eq!(l.objects.len(), 3);
        let l = a.choose(&tmpl(2, 2)).unwrap();
        assert_eq!(l.objects.iter().map(|o| o.ost).collect::<Vec<_>>(), vec![2, 0]);
        for o in l.objects.iter() {
            a.consume(*o).unwrap();
        }
        assert_eq!(a.choose(&tmpl(1, 2)), Err(Errno::EAGAIN));
        assert!(a.osts[&2].was_precreated(7));
        assert!(!a.osts[&2].is_free(7));
        // Consuming out of order is corruption.
        assert_eq!(a.consume(ObjRef { ost: 0, oid: 9 }), Err(Errno::EIO));
    }

    #[test]
    fn full_osts_answer_enospc_not_eagain() {
        let mut a = ObjectAllocator::default();
        a.add_range(0, 1, 1);
        a.add_ost(1);
        // OST1 is empty but may be refilled: wait.
        assert_eq!(a.choose(&tmpl(2, -1)), Err(Errno::EAGAIN));
        assert_eq!(a.choose(&tmpl(1, 1)), Err(Errno::EAGAIN));
        // Its precreate answered ENOSPC: no refill is coming.
        a.set_full(1, true);
        assert_eq!(a.choose(&tmpl(2, -1)), Err(Errno::ENOSPC));
        assert_eq!(a.choose(&tmpl(1, 1)), Err(Errno::ENOSPC));
        assert_eq!(a.choose(&tmpl(-1, -1)), Err(Errno::ENOSPC));
        // One stripe still fits on OST0.
        let l = a.choose(&tmpl(1, -1)).unwrap();
        assert_eq!(l.objects[0].ost, 0);
        a.consume(l.objects[0]).unwrap();
        // Both empty, OST0 not known full: wait for its refill.
        assert_eq!(a.choose(&tmpl(1, -1)), Err(Errno::EAGAIN));
        a.set_full(0, true);
        assert_eq!(a.choose(&tmpl(1, -1)), Err(Errno::ENOSPC));
        // A full OST that gets objects again serves creates.
        a.add_range(1, 5, 1);
        a.set_full(1, false);
        assert_eq!(a.choose(&tmpl(1, -1)).unwrap().objects[0].ost, 1);
    }

    #[test]
    fn template_validation_and_inheritance() {
        assert!(tmpl(1, -1).validate().is_ok());
        assert!(
            LayoutTemplate {
                stripe_size: 1000,
                ..tmpl(1, -1)
            }
            .validate()
            .is_err()
        );
        assert!(tmpl(-2, -1).validate().is_err());
        let child = LayoutTemplate {
            stripe_size: 0,
            stripe_count: 4,
            stripe_offset: -1,
        };
        let r = child.inherit(LayoutTemplate::FS_DEFAULT);
        assert_eq!(
            r,
            LayoutTemplate {
                stripe_size: DEFAULT_STRIPE_SIZE,
                stripe_count: 4,
                stripe_offset: -1
            }
        );
    }
}
