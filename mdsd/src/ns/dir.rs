//! Directory entries with readdir cookies that stay valid while the directory changes.
//!
//! Entries live in a `BTreeMap` keyed by a 63-bit hash of the name. A readdir cookie is simply the
//! next hash to return, so an insert or removal elsewhere in the directory never shifts a reader's
//! position: every entry present for the whole listing is returned exactly once. Names whose
//! hashes collide share one slot and are always returned together in the same page.

use super::inode::Fid;
use super::layout::LayoutTemplate;
use std::collections::BTreeMap;

/// Cookie meaning "from the beginning".
pub const COOKIE_START: u64 = 0;
/// Cookie returned when the listing is complete.
pub const COOKIE_EOF: u64 = u64::MAX;

/// The readdir position of a name: FNV-1a, folded to 63 bits (so it fits an `off_t`), never 0
/// and never `COOKIE_EOF`. FNV is fixed by definition, so cookies survive restarts.
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let h = h >> 1;
    h.max(1)
}

/// One name and what it names.
type Named = (Box<str>, Fid);

/// The names sharing one hash.
#[derive(Debug, Clone)]
enum Slot {
    One(Box<str>, Fid),
    Many(Vec<Named>),
}

/// A directory: its entries, its parent and its default layout.
#[derive(Debug, Clone)]
pub struct Dir {
    entries: BTreeMap<u64, Slot>,
    len: u32,
    /// The parent directory (the root is its own parent).
    pub parent: Fid,
    /// Default layout for files created below (inherited by subdirectories that have none).
    pub default_layout: Option<LayoutTemplate>,
}

impl Dir {
    /// An empty directory under `parent`.
    pub fn new(parent: Fid) -> Self {
        Self {
            entries: BTreeMap::new(),
            len: 0,
            parent,
            default_layout: None,
        }
    }

    /// Number of entries (not counting `.` and `..`).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the directory has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fid named `name`.
    pub fn get(&self, name: &str) -> Option<Fid> {
        match self.entries.get(&name_hash(name))? {
            Slot::One(n, f) => (&**n == name).then_some(*f),
            Slot::Many(v) => v.iter().find(|(n, _)| &**n == name).map(|(_, f)| *f),
        }
    }

    /// Adds or replaces `name`; returns the fid it replaced.
    pub fn insert(&mut self, name: &str, fid: Fid) -> Option<Fid> {
        let h = name_hash(name);
        match self.entries.get_mut(&h) {
            None => {
                self.entries.insert(h, Slot::One(name.into(), fid));
                self.len += 1;
                None
            }
            Some(Slot::One(n, f)) if &**n == name => Some(std::mem::replace(f, fid)),
            Some(slot @ Slot::One(..)) => {
                let Slot::One(n, f) = std::mem::replace(slot, Slot::Many(Vec::new())) else {
                    unreachable!("matched One above")
                };
                *slot = Slot::Many(vec![(n, f), (name.into(), fid)]);
                self.len += 1;
                None
            }
            Some(Slot::Many(v)) => {
                if let Some(e) = v.iter_mut().find(|(n, _)| &**n == name) {
                    return Some(std::mem::replace(&mut e.1, fid));
                }
                v.push((name.into(), fid));
                self.len += 1;
                None
            }
        }
    }

    /// Removes `name`; returns its fid.
    pub fn remove(&mut self, name: &str) -> Option<Fid> {
        let h = name_hash(name);
        let slot = self.entries.get_mut(&h)?;
        let fid = match slot {
            Slot::One(n, f) => {
                if &**n != name {
                    return None;
                }
                let f = *f;
                self.entries.remove(&h);
                f
            }
            Slot::Many(v) => {
                let i = v.iter().position(|(n, _)| &**n == name)?;
                let (_, f) = v.remove(i);
                if v.len() == 1 {
                    let (n, f1) = v.remove(0);
                    *slot = Slot::One(n, f1);
                }
                f
            }
        };
        self.len -= 1;
        Some(fid)
    }

    /// Lists entries from `cookie` on, calling `out(name, fid)` for each, stopping after `max`
    /// entries (a slot of colliding names is never split, so a page may hold a few more).
    /// Returns the cookie of the next page or [`COOKIE_EOF`].
    pub fn list(&self, cookie: u64, max: usize, mut out: impl FnMut(&str, Fid)) -> u64 {
        if cookie == COOKIE_EOF {
            return COOKIE_EOF;
        }
        let mut n = 0;
        for (h, slot) in self.entries.range(cookie..) {
            if n >= max {
                return *h;
            }
            match slot {
                Slot::One(name, f) => {
                    out(name, *f);
                    n += 1;
                }
                Slot::Many(v) => {
                    for (name, f) in v {
                        out(name, *f);
                        n += 1;
                    }
                }
            }
        }
        COOKIE_EOF
    }

    /// Every entry, in cookie order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Fid)> {
        self.entries.values().flat_map(|s| {
            let (one, many): (Option<(&str, Fid)>, &[Named]) = match s {
                Slot::One(n, f) => (Some((&**n, *f)), &[]),
                Slot::Many(v) => (None, v),
            };
            one.into_iter().chain(many.iter().map(|(n, f)| (&**n, *f)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let mut d = Dir::new(1);
        assert_eq!(d.insert("a", 10), None);
        assert_eq!(d.insert("b", 11), None);
        assert_eq!(d.insert("a", 12), Some(10));
        assert_eq!(d.get("a"), Some(12));
        assert_eq!(d.len(), 2);
        assert_eq!(d.remove("a"), Some(12));
        assert_eq!(d.remove("a"), None);
        assert_eq!(d.get("a"), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn colliding_slot_behaves() {
        // Force a Many slot by inserting into the map directly under one hash.
        let mut d = Dir::new(1);
        let h = name_hash("x");
        d.entries.insert(h, Slot::Many(vec![("x".into(), 1), ("y".into(), 2)]));
        d.len = 2;
        assert_eq!(d.get("x"), Some(1));
        assert_eq!(d.remove("x"), Some(1));
        assert!(matches!(d.entries.get(&h), Some(Slot::One(..))));
    }

    #[test]
    fn paging_is_stable_across_inserts_and_removes() {
        let mut d = Dir::new(1);
        for i in 0..1000u64 {
            d.insert(&format!("f{i}"), i + 2);
        }
        let mut seen = std::collections::HashMap::new();
        let mut cookie = COOKIE_START;
        let mut round = 0u64;
        while cookie != COOKIE_EOF {
            cookie = d.list(cookie, 37, |n, _| *seen.entry(n.to_string()).or_insert(0) += 1);
            // Concurrent changes: add new names, remove some that were never original.
            for j in 0..5 {
                d.insert(&format!("new{round}_{j}"), 5000 + round * 10 + j);
            }
            if round > 0 {
                d.remove(&format!("new{}_0", round - 1));
            }
            round += 1;
        }
        for i in 0..1000 {
            assert_eq!(seen.get(&format!("f{i}")), Some(&1), "f{i} listed once");
        }
        assert!(seen.values().all(|&c| c == 1));
    }
}
