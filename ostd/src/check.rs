//! `ostd check`: the consistency checker.
//!
//! Reads the device without changing it, applies the committed journal transactions to its
//! in-memory copy of the metadata (as a mount would), and checks that the superblock and MMP block
//! are valid, that the allocation bitmap and the block map agree, that no block is mapped twice,
//! that every block lies within its object, and that every stored crc32c matches the data.

use crate::dev::{AlignedBuf, BlockDevice};
use crate::error::StoreError;
use crate::format::{self, BITS_PER_BLOCK, BLOCK, BLOCK_U64};
use crate::journal;
use crate::meta::Meta;
use std::collections::{HashMap, HashSet};

/// What the checker found.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// One line per problem.
    pub problems: Vec<String>,
    /// Objects in the table.
    pub objects: u64,
    /// Data blocks mapped.
    pub used_blocks: u64,
    /// Data blocks in the data area.
    pub data_blocks: u64,
    /// Committed journal transactions a mount would replay.
    pub journal_txns: u64,
    /// Blocks whose checksum was verified.
    pub verified_blocks: u64,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} problem(s); {} objects, {}/{} data blocks used, {} checksums verified, {} journal transaction(s) to replay",
            self.problems.len(),
            self.objects,
            self.used_blocks,
            self.data_blocks,
            self.verified_blocks,
            self.journal_txns
        )
    }
}

/// Cap on problems listed one by one (the count goes on).
const MAX_LISTED: usize = 1000;

fn note(r: &mut CheckReport, p: String) {
    if r.problems.len() < MAX_LISTED {
        r.problems.push(p);
    } else if r.problems.len() == MAX_LISTED {
        r.problems.push("... further problems not listed".into());
    }
}

/// Checks the target on `dev`. Fails only when the device cannot be read at all.
pub fn check(dev: &dyn BlockDevice) -> Result<CheckReport, StoreError> {
    let mut r = CheckReport::default();
    let sb = match format::read_superblock(dev) {
        Ok(sb) => sb,
        Err(StoreError::Dev(e)) => return Err(e.into()),
        Err(e) => {
            note(&mut r, format!("superblock: {e}"));
            return Ok(r);
        }
    };
    let geo = sb.geometry;
    r.data_blocks = geo.data_blocks;
    if let Err(e) = format::read_mmp(dev) {
        note(&mut r, format!("MMP block: {e}"));
    }
    let mut region = crate::store::read_region(dev, &geo)?;
    match journal::scan(dev, &geo) {
        Ok(scan) => {
            r.journal_txns = scan.txns;
            for (t, img) in &scan.writes {
                let o = ((t - geo.state_block) * BLOCK_U64) as usize;
                region[o..o + BLOCK].copy_from_slice(img);
            }
        }
        Err(e) => note(&mut r, format!("journal: {e}")),
    }
    let m = match Meta::load(dev.path(), geo, region) {
        Ok(m) => m,
        Err(e) => {
            note(&mut r, format!("{e}"));
            return Ok(r);
        }
    };
    // Object table.
    let mut sizes: HashMap<u64, u64> = HashMap::new();
    for s in 0..geo.max_objects() {
        let slot = m.slot(s);
        if slot.id == 0 && slot.flags == 0 {
            continue;
        }
        if slot.id == 0 || slot.flags != 1 {
            note(
                &mut r,
                format!("object slot {s}: malformed (id {}, flags {:#x})", slot.id, slot.flags),
            );
            continue;
        }
        if slot.id >= m.next_id {
            note(
                &mut r,
                format!("object {}: id not below the next id {}", slot.id, m.next_id),
            );
        }
        if sizes.insert(slot.id, slot.size).is_some() {
            note(&mut r, format!("object {}: present in two slots", slot.id));
        }
    }
    r.objects = sizes.len() as u64;
    // Block map against bitmap and object table.
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut owned: Vec<(u64, u64, u32)> = Vec::new();
    for d in 0..geo.data_blocks {
        let e = m.map_entry(d);
        let bit = m.bit(d);
        if e.owner == 0 {
            if bit {
                note(
                    &mut r,
                    format!("data block {d}: allocated in the bitmap but owned by no object (leak)"),
                );
            }
            if e.logical != 0 || e.crc != 0 {
                note(&mut r, format!("data block {d}: free entry with stale contents"));
            }
            continue;
        }
        r.used_blocks += 1;
        if !bit {
            note(
                &mut r,
                format!("data block {d}: owned by object {} but free in the bitmap", e.owner),
            );
        }
        match sizes.get(&e.owner) {
            None => note(
                &mut r,
                format!("data block {d}: owned by object {}, which does not exist", e.owner),
            ),
            Some(&size) => {
                if e.logical * BLOCK_U64 >= size.div_ceil(BLOCK_U64) * BLOCK_U64 {
                    note(
                        &mut r,
                        format!(
                            "object {}: block {} (data block {d}) lies beyond its size {size}",
                            e.owner, e.logical
                        ),
                    );
                }
            }
        }
        if !seen.insert((e.owner, e.logical)) {
            note(
                &mut r,
                format!("object {}: logical block {} is mapped twice", e.owner, e.logical),
            );
        }
        owned.push((d, e.owner, e.crc));
    }
    // Bitmap padding beyond the data area.
    for d in geo.data_blocks..geo.bitmap_blocks * BITS_PER_BLOCK {
        if m.bit(d) {
            note(&mut r, format!("bitmap bit {d} is set beyond the data area"));
        }
    }
    // Checksums, 256 blocks per read.
    let mut buf = AlignedBuf::new(256 * BLOCK);
    let mut i = 0;
    while i < owned.len() {
        let window = owned[i].0 / 256 * 256;
        let n = (geo.data_blocks - window).min(256);
        dev.read_at((geo.data_start + window) * BLOCK_U64, &mut buf[..n as usize * BLOCK])?;
        while i < owned.len() && owned[i].0 < window + n {
            let (d, owner, crc) = owned[i];
            let k = (d - window) as usize;
            let actual = rustre_proto::crc::crc32c(&buf[k * BLOCK..(k + 1) * BLOCK]);
            if actual != crc {
                note(
                    &mut r,
                    format!(
                        "data block {d} (object {owner}): checksum {actual:#010x} does not match the index {crc:#010x}"
                    ),
                );
            }
            r.verified_blocks += 1;
            i += 1;
        }
    }
    Ok(r)
}
