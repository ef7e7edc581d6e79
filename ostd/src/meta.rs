//! The metadata region in memory: state block, allocation bitmap, block map and object table,
//! with the index derived from them.
//!
//! The region is loaded whole at mount and changed only under the store's metadata lock; every
//! changed block is recorded in the open transaction's dirty set so that the journal can log it.

use crate::error::StoreError;
use crate::extents::ExtentMap;
use crate::format::{
    BITS_PER_BLOCK, BLOCK, BLOCK_U64, Geometry, MAP_PER_BLOCK, SLOTS_PER_BLOCK, get_u32, get_u64, put_u32, put_u64,
    seal, sealed_ok,
};
use std::collections::{BTreeSet, HashMap};

const STATE_MAGIC: &[u8; 8] = b"RUSTSTA\0";
/// First object id handed out.
pub const FIRST_OBJECT_ID: u64 = 1;
/// Slot flag: in use.
const SLOT_USED: u32 = 1;

/// Encodes the state block of a fresh target.
pub fn encode_initial_state(b: &mut [u8]) {
    b[..BLOCK].fill(0);
    b[..8].copy_from_slice(STATE_MAGIC);
    put_u64(b, 8, FIRST_OBJECT_ID);
    seal(&mut b[..BLOCK]);
}

/// One object in memory.
#[derive(Debug, Clone)]
pub struct Obj {
    /// Slot in the object table.
    pub slot: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Logical 4 KiB block → data block.
    pub blocks: ExtentMap,
}

/// A block-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// Owning object, 0 when free.
    pub owner: u64,
    /// Logical block within the owner.
    pub logical: u64,
    /// crc32c of the 4 KiB block.
    pub crc: u32,
}

/// Decoded object-table slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Object id (0 = free).
    pub id: u64,
    /// Size.
    pub size: u64,
    /// mtime.
    pub mtime_ns: i64,
    /// Flags.
    pub flags: u32,
}

/// The in-memory metadata region and what is derived from it.
pub struct Meta {
    /// Layout.
    pub geo: Geometry,
    /// Images of blocks `geo.meta_range()`.
    pub region: Vec<u8>,
    /// Data blocks that may not be allocated: mapped, reserved by a write in progress, or freed
    /// by a transaction not yet durable.
    pub inuse: Vec<u64>,
    /// Data blocks not in `inuse`.
    pub free_blocks: u64,
    /// Allocation cursor.
    pub cursor: u64,
    /// The index.
    pub objects: HashMap<u64, Obj>,
    /// Free object-table slots.
    pub free_slots: BTreeSet<u64>,
    /// Next object id to hand out.
    pub next_id: u64,
    /// Open transaction id.
    pub open_txn: u64,
    /// Metadata blocks changed in the open transaction.
    pub dirty: BTreeSet<u64>,
    /// Data blocks freed by the open transaction (reusable once it is durable).
    pub pending_free: Vec<u64>,
}

impl Meta {
    /// Builds the in-memory state from a loaded region. Inconsistencies are not errors here (the
    /// checker reports them); blocks in doubt stay unallocatable.
    pub fn load(path: &str, geo: Geometry, region: Vec<u8>) -> Result<Self, StoreError> {
        let state = &region[..BLOCK];
        if &state[..8] != STATE_MAGIC || !sealed_ok(state) {
            return Err(StoreError::Format {
                path: path.to_owned(),
                reason: "state block is damaged".into(),
            });
        }
        let next_id = get_u64(state, 8);
        let words = geo.data_blocks.div_ceil(64) as usize;
        let mut m = Self {
            geo,
            region,
            inuse: vec![0; words],
            free_blocks: 0,
            cursor: 0,
            objects: HashMap::new(),
            free_slots: BTreeSet::new(),
            next_id,
            open_txn: 1,
            dirty: BTreeSet::new(),
            pending_free: Vec::new(),
        };
        for s in 0..geo.max_objects() {
            let slot = m.slot(s);
            if slot.flags & SLOT_USED != 0 && slot.id != 0 && !m.objects.contains_key(&slot.id) {
                m.objects.insert(
                    slot.id,
                    Obj {
                        slot: s,
                        size: slot.size,
                        mtime_ns: slot.mtime_ns,
                        blocks: ExtentMap::new(),
                    },
                );
            } else {
                m.free_slots.insert(s);
            }
        }
        for d in 0..geo.data_blocks {
            let e = m.map_entry(d);
            let used = m.bit(d) || e.owner != 0;
            if used {
                m.inuse[(d / 64) as usize] |= 1 << (d % 64);
            }
            if e.owner != 0
                && let Some(o) = m.objects.get_mut(&e.owner)
                && !o.blocks.contains(e.logical)
            {
                o.blocks.insert(e.logical, d);
            }
        }
        m.free_blocks = geo.data_blocks - m.inuse.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        Ok(m)
    }

    fn off(&self, abs_block: u64) -> usize {
        ((abs_block - self.geo.state_block) as usize) * BLOCK
    }

    /// Image of metadata block `abs_block`.
    pub fn image(&self, abs_block: u64) -> &[u8] {
        let o = self.off(abs_block);
        &self.region[o..o + BLOCK]
    }

    /// Bitmap bit of data block `d`.
    pub fn bit(&self, d: u64) -> bool {
        let blk = self.geo.bitmap_start + d / BITS_PER_BLOCK;
        let i = d % BITS_PER_BLOCK;
        self.region[self.off(blk) + (i / 8) as usize] & (1 << (i % 8)) != 0
    }

    fn set_bit(&mut self, d: u64, v: bool) {
        let blk = self.put_bit(d, v);
        self.dirty.insert(blk);
    }

    /// [`Meta::set_bit`] without marking the block dirty; returns the bitmap block.
    fn put_bit(&mut self, d: u64, v: bool) -> u64 {
        let blk = self.geo.bitmap_start + d / BITS_PER_BLOCK;
        let i = d % BITS_PER_BLOCK;
        let o = self.off(blk) + (i / 8) as usize;
        if v {
            self.region[o] |= 1 << (i % 8);
        } else {
            self.region[o] &= !(1 << (i % 8));
        }
        blk
    }

    /// Block-map entry of data block `d`.
    pub fn map_entry(&self, d: u64) -> MapEntry {
        let o = self.off(self.geo.map_start + d / MAP_PER_BLOCK) + ((d % MAP_PER_BLOCK) * 16) as usize;
        let r = &self.region;
        MapEntry {
            owner: get_u64(r, o),
            logical: u64::from(get_u32(r, o + 8)),
            crc: get_u32(r, o + 12),
        }
    }

    fn set_map(&mut self, d: u64, e: MapEntry) {
        let blk = self.put_map(d, e);
        self.dirty.insert(blk);
    }

    /// [`Meta::set_map`] without marking the block dirty; returns the map block.
    fn put_map(&mut self, d: u64, e: MapEntry) -> u64 {
        let blk = self.geo.map_start + d / MAP_PER_BLOCK;
        let o = self.off(blk) + ((d % MAP_PER_BLOCK) * 16) as usize;
        put_u64(&mut self.region, o, e.owner);
        put_u32(&mut self.region, o + 8, e.logical as u32);
        put_u32(&mut self.region, o + 12, e.crc);
        blk
    }

    /// Object-table slot `s`.
    pub fn slot(&self, s: u64) -> Slot {
        let o = self.off(self.geo.objtab_start + s / SLOTS_PER_BLOCK) + ((s % SLOTS_PER_BLOCK) * 32) as usize;
        let r = &self.region;
        Slot {
            id: get_u64(r, o),
            size: get_u64(r, o + 8),
            mtime_ns: get_u64(r, o + 16) as i64,
            flags: get_u32(r, o + 24),
        }
    }

    fn set_slot(&mut self, s: u64, v: Slot) {
        let blk = self.geo.objtab_start + s / SLOTS_PER_BLOCK;
        let o = self.off(blk) + ((s % SLOTS_PER_BLOCK) * 32) as usize;
        put_u64(&mut self.region, o, v.id);
        put_u64(&mut self.region, o + 8, v.size);
        put_u64(&mut self.region, o + 16, v.mtime_ns as u64);
        put_u32(&mut self.region, o + 24, v.flags);
        put_u32(&mut self.region, o + 28, 0);
        self.dirty.insert(blk);
    }

    fn write_state(&mut self) {
        let sb = self.geo.state_block;
        let o = self.off(sb);
        let next = self.next_id;
        let b = &mut self.region[o..o + BLOCK];
        b.fill(0);
        b[..8].copy_from_slice(STATE_MAGIC);
        put_u64(b, 8, next);
        seal(b);
        self.dirty.insert(sb);
    }

    /// Metadata blocks an allocation change of data block `d` touches.
    pub fn blocks_of_data(&self, d: u64, out: &mut BTreeSet<u64>) {
        self.blocks_of_run(d, 1, out);
    }

    /// Metadata blocks an allocation change of data blocks `d .. d + n` touches.
    pub fn blocks_of_run(&self, d: u64, n: u64, out: &mut BTreeSet<u64>) {
        if n == 0 {
            return;
        }
        let last = d + n - 1;
        out.extend(self.geo.bitmap_start + d / BITS_PER_BLOCK..=self.geo.bitmap_start + last / BITS_PER_BLOCK);
        out.extend(self.geo.map_start + d / MAP_PER_BLOCK..=self.geo.map_start + last / MAP_PER_BLOCK);
    }

    /// Object-table block of slot `s`.
    pub fn slot_block(&self, s: u64) -> u64 {
        self.geo.objtab_start + s / SLOTS_PER_BLOCK
    }

    /// Dirty blocks the open transaction would have with `extra` added.
    pub fn dirty_with(&self, extra: &BTreeSet<u64>) -> usize {
        self.dirty.len() + extra.iter().filter(|b| !self.dirty.contains(b)).count()
    }

    fn is_inuse(&self, d: u64) -> bool {
        self.inuse[(d / 64) as usize] & (1 << (d % 64)) != 0
    }

    fn mark_inuse(&mut self, d: u64, v: bool) {
        debug_assert_ne!(self.is_inuse(d), v, "data block {d} allocation state");
        if v {
            self.inuse[(d / 64) as usize] |= 1 << (d % 64);
            self.free_blocks -= 1;
        } else {
            self.inuse[(d / 64) as usize] &= !(1 << (d % 64));
            self.free_blocks += 1;
        }
    }

    /// Reserves `n` data blocks, as few runs as it can, from the cursor on. The reservation is in
    /// memory only; [`Meta::map_run`] makes it part of the on-disk state.
    pub fn reserve(&mut self, n: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        if n > self.free_blocks {
            return Err(StoreError::NoSpace(format!(
                "{n} blocks wanted, {} free",
                self.free_blocks
            )));
        }
        let total = self.geo.data_blocks;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut left = n;
        let mut d = self.cursor % total;
        let mut scanned = 0u64;
        while left > 0 && scanned < total {
            // Skip whole used words quickly.
            if d.is_multiple_of(64) && self.inuse[(d / 64) as usize] == u64::MAX && d + 64 <= total {
                d = (d + 64) % total;
                scanned += 64;
                continue;
            }
            if !self.is_inuse(d) {
                self.mark_inuse(d, true);
                match runs.last_mut() {
                    Some((start, len)) if *start + *len == d => *len += 1,
                    _ => runs.push((d, 1)),
                }
                left -= 1;
            }
            d = (d + 1) % total;
            scanned += 1;
        }
        self.cursor = d;
        debug_assert_eq!(left, 0, "free count said there was room");
        Ok(runs)
    }

    /// Returns reserved blocks that were never mapped.
    pub fn unreserve(&mut self, runs: &[(u64, u64)]) {
        for &(s, l) in runs {
            for d in s..s + l {
                self.mark_inuse(d, false);
            }
        }
    }

    /// Releases blocks freed by a transaction now durable.
    pub fn release(&mut self, freed: &[u64]) {
        for &d in freed {
            self.mark_inuse(d, false);
        }
    }

    fn unmap_data(&mut self, d: u64) {
        self.set_map(
            d,
            MapEntry {
                owner: 0,
                logical: 0,
                crc: 0,
            },
        );
        self.set_bit(d, false);
        self.pending_free.push(d);
    }

    /// Maps logical blocks `logical ..` of `id` to reserved data blocks `d ..`, one per
    /// checksum of `crcs`, freeing the blocks they replace. The index takes one run and each
    /// metadata block touched is marked dirty once.
    pub fn map_run(&mut self, id: u64, logical: u64, d: u64, crcs: &[u32]) {
        let n = crcs.len() as u64;
        if n == 0 {
            return;
        }
        let olds = self
            .objects
            .get_mut(&id)
            .map(|o| o.blocks.map_run(logical, d, n))
            .unwrap_or_default();
        for old in olds {
            self.unmap_data(old);
        }
        let (mut last_map, mut last_bit) = (None, None);
        for (k, &crc) in (0u64..).zip(crcs) {
            let e = MapEntry {
                owner: id,
                logical: logical + k,
                crc,
            };
            let (mb, bb) = (self.put_map(d + k, e), self.put_bit(d + k, true));
            if last_map != Some(mb) {
                self.dirty.insert(mb);
                last_map = Some(mb);
            }
            if last_bit != Some(bb) {
                self.dirty.insert(bb);
                last_bit = Some(bb);
            }
        }
    }

    /// Unmaps logical blocks `lfirst .. lend` of `id`, freeing their data blocks.
    pub fn unmap_range(&mut self, id: u64, lfirst: u64, lend: u64) {
        let olds = self
            .objects
            .get_mut(&id)
            .map(|o| o.blocks.remove_range(lfirst, lend))
            .unwrap_or_default();
        for (_, d) in olds {
            self.unmap_data(d);
        }
    }

    /// Writes object `id`'s size and mtime to its slot.
    pub fn store_attrs(&mut self, id: u64) {
        if let Some(o) = self.objects.get(&id) {
            let (slot, size, mtime_ns) = (o.slot, o.size, o.mtime_ns);
            self.set_slot(
                slot,
                Slot {
                    id,
                    size,
                    mtime_ns,
                    flags: SLOT_USED,
                },
            );
        }
    }

    /// Creates objects `next_id .. next_id + count`.
    pub fn create_batch(&mut self, count: u64, mtime_ns: i64) -> Result<u64, StoreError> {
        if count > self.free_slots.len() as u64 {
            return Err(StoreError::NoSpace(format!(
                "{count} objects wanted, {} object slots free",
                self.free_slots.len()
            )));
        }
        let first = self.next_id;
        for id in first..first + count {
            let Some(slot) = self.free_slots.pop_first() else { break };
            self.objects.insert(
                id,
                Obj {
                    slot,
                    size: 0,
                    mtime_ns,
                    blocks: ExtentMap::new(),
                },
            );
            self.store_attrs(id);
        }
        self.next_id = first + count;
        self.write_state();
        Ok(first)
    }

    /// Removes object `id` (it must have no blocks left).
    pub fn remove_object(&mut self, id: u64) {
        if let Some(o) = self.objects.remove(&id) {
            debug_assert!(o.blocks.is_empty());
            self.set_slot(
                o.slot,
                Slot {
                    id: 0,
                    size: 0,
                    mtime_ns: 0,
                    flags: 0,
                },
            );
            self.free_slots.insert(o.slot);
        }
    }

    /// Absolute block number range of the metadata region.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.geo.meta_range()
    }

    /// Byte offset on the device of metadata block `abs`.
    pub fn device_offset(abs: u64) -> u64 {
        abs * BLOCK_U64
    }
}
