//! The metadata journal: write-ahead physical logging of metadata blocks.
//!
//! The journal area starts with a header block (sealed in its first sector, so a torn rewrite
//! cannot damage it) holding the sequence number of the first transaction it contains. Transactions
//! follow back to back: descriptor blocks listing the target block numbers, the new images of those
//! blocks, and a commit block carrying the crc32c of everything before it. A transaction counts
//! only if its commit block is intact and its checksum matches; replay applies transactions in
//! sequence order and stops at the first one that does not (the torn tail of a crash). Sequence
//! numbers never repeat, so records left over from before a journal reset are never mistaken for
//! new ones.
//!
//! From format version 2 on, a commit writes the transaction's data blocks and its record and then
//! flushes the device once: after a power cut the record may be durable while some of the data it
//! points to is not. Only the last transaction of the journal can be in that state (the next
//! commit starts after this one's flush has returned), so replay verifies the data blocks that
//! transaction newly maps — found by comparing its block-map images with the state before it —
//! against the crc32c the images carry. If one does not match, the transaction was never
//! acknowledged and is dropped, as a torn record would be; its sequence number is not reused.
//! Earlier transactions are not verified: their data was durable before the next record was
//! written, and blocks they mapped may legitimately hold newer data by now. Nor is a last
//! transaction the header confirms ([`confirm`]): it was flushed whole, and a block of it that
//! rotted since must read as an error, not take the acknowledged transaction with it.

use crate::dev::{AlignedBuf, BlockDevice, IoOp};
use crate::error::StoreError;
use crate::format::{
    BLOCK, BLOCK_U64, Geometry, JOURNAL_START, MAP_PER_BLOCK, SECTOR, get_u32, get_u64, put_u32, put_u64, seal,
    sealed_ok,
};
use std::collections::HashMap;

const HEADER_MAGIC: &[u8; 8] = b"RUSTJNL\0";
const DESC_MAGIC: &[u8; 8] = b"RUSTJTX\0";
const COMMIT_MAGIC: &[u8; 8] = b"RUSTJCM\0";
/// Target block numbers per descriptor block.
pub const TARGETS_PER_DESC: usize = 500;
const DESC_HDR: usize = 32;

/// Encodes the journal header: the journal holds transactions from `start_seq` on, and those up
/// to `confirmed` (0: none) are known to have been flushed whole, data included.
pub fn encode_header(b: &mut [u8], start_seq: u64, confirmed: u64) {
    b[..BLOCK].fill(0);
    b[..8].copy_from_slice(HEADER_MAGIC);
    put_u64(b, 8, start_seq);
    put_u64(b, 16, confirmed);
    seal(&mut b[..SECTOR]);
}

/// Decodes the journal header: `(start_seq, confirmed)`.
fn decode_header(path: &str, b: &[u8]) -> Result<(u64, u64), StoreError> {
    if &b[..8] != HEADER_MAGIC || !sealed_ok(&b[..SECTOR]) {
        return Err(StoreError::Format {
            path: path.to_owned(),
            reason: "journal header is damaged".into(),
        });
    }
    Ok((get_u64(b, 8), get_u64(b, 16)))
}

/// Records in the header that transaction `seq` was flushed whole, so that replay does not
/// verify its data again (a block that rotted since is then a read error, not a reason to drop an
/// acknowledged transaction). The write is not flushed: it becomes durable with the next flush,
/// and until then replay verifies the transaction, as it would without it. The header is sealed in
/// its first sector, so a torn write leaves the old header.
pub fn confirm(dev: &dyn BlockDevice, start_seq: u64, seq: u64) -> Result<(), StoreError> {
    let mut b = AlignedBuf::new(BLOCK);
    encode_header(&mut b, start_seq, seq);
    dev.write_at(JOURNAL_START * BLOCK_U64, &b)?;
    Ok(())
}

/// Descriptor blocks a transaction of `images` blocks starts with.
fn desc_blocks(images: usize) -> usize {
    images.div_ceil(TARGETS_PER_DESC).max(1)
}

/// Journal blocks a transaction of `images` blocks takes.
pub fn txn_len(images: usize) -> u64 {
    (desc_blocks(images) + images + 1) as u64
}

/// Where a transaction of `images` blocks keeps its first image, in bytes from its start.
pub fn images_at(images: usize) -> usize {
    desc_blocks(images) * BLOCK
}

/// Encodes a transaction: descriptors, images, commit. `images[i]` is the new content of
/// `targets[i]`; the result is one contiguous buffer written with a single I/O.
pub fn encode_txn(seq: u64, targets: &[u64], images: &[u8]) -> AlignedBuf {
    debug_assert_eq!(images.len(), targets.len() * BLOCK);
    let mut buf = AlignedBuf::new(txn_len(targets.len()) as usize * BLOCK);
    let at = images_at(targets.len());
    buf[at..at + images.len()].copy_from_slice(images);
    seal_txn(&mut buf, seq, targets);
    buf
}

/// Completes a transaction record in `rec` (exactly [`txn_len`] blocks) whose images the caller
/// has already placed from [`images_at`] on: writes the descriptors and the commit block.
pub fn seal_txn(rec: &mut [u8], seq: u64, targets: &[u64]) {
    let ndesc = desc_blocks(targets.len());
    let total = txn_len(targets.len()) as usize;
    debug_assert_eq!(rec.len(), total * BLOCK);
    for d in 0..ndesc {
        let b = &mut rec[d * BLOCK..(d + 1) * BLOCK];
        b.fill(0);
        b[..8].copy_from_slice(DESC_MAGIC);
        put_u64(b, 8, seq);
        put_u32(b, 16, d as u32);
        put_u32(b, 20, targets.len() as u32);
        let chunk =
            &targets[(d * TARGETS_PER_DESC).min(targets.len())..((d + 1) * TARGETS_PER_DESC).min(targets.len())];
        for (i, t) in chunk.iter().enumerate() {
            put_u64(b, DESC_HDR + 8 * i, *t);
        }
        seal(b);
    }
    let body_crc = rustre_proto::crc::crc32c(&rec[..(total - 1) * BLOCK]);
    let c = &mut rec[(total - 1) * BLOCK..];
    c.fill(0);
    c[..8].copy_from_slice(COMMIT_MAGIC);
    put_u64(c, 8, seq);
    put_u32(c, 16, targets.len() as u32);
    put_u32(c, 20, body_crc);
    seal(c);
}

/// The committed transactions found in a journal.
#[derive(Debug, Default)]
pub struct Scan {
    /// (target block, image) in the order to apply them.
    pub writes: Vec<(u64, AlignedBuf)>,
    /// Transactions found.
    pub txns: u64,
    /// Sequence number the next transaction must carry.
    pub next_seq: u64,
    /// Sequence number of a last transaction whose record is intact but whose data did not all
    /// reach the device (it is not among `writes`).
    pub dropped: Option<u64>,
}

/// Reads the journal and returns every committed transaction, stopping at the torn tail.
pub fn scan(dev: &dyn BlockDevice, g: &Geometry) -> Result<Scan, StoreError> {
    let path = dev.path();
    let mut hdr = AlignedBuf::new(BLOCK);
    dev.read_at(JOURNAL_START * BLOCK_U64, &mut hdr)?;
    let (mut seq, confirmed) = decode_header(path, &hdr)?;
    let meta = g.meta_range();
    let mut out = Scan {
        next_seq: seq,
        ..Scan::default()
    };
    let mut pos = 1u64;
    let mut last_start = 0usize;
    let mut desc = AlignedBuf::new(BLOCK);
    while pos < g.journal_blocks {
        dev.read_at((JOURNAL_START + pos) * BLOCK_U64, &mut desc)?;
        if &desc[..8] != DESC_MAGIC || !sealed_ok(&desc) || get_u64(&desc, 8) != seq || get_u32(&desc, 16) != 0 {
            break;
        }
        let count = get_u32(&desc, 20) as usize;
        let len = txn_len(count);
        if count == 0 || pos + len > g.journal_blocks {
            break;
        }
        let mut txn = AlignedBuf::new(len as usize * BLOCK);
        dev.read_at((JOURNAL_START + pos) * BLOCK_U64, &mut txn)?;
        let total = len as usize;
        let commit = &txn[(total - 1) * BLOCK..];
        if &commit[..8] != COMMIT_MAGIC
            || !sealed_ok(commit)
            || get_u64(commit, 8) != seq
            || get_u32(commit, 16) as usize != count
            || get_u32(commit, 20) != rustre_proto::crc::crc32c(&txn[..(total - 1) * BLOCK])
        {
            break;
        }
        let ndesc = total - count - 1;
        let mut targets = Vec::with_capacity(count);
        for d in 0..ndesc {
            let b = &txn[d * BLOCK..(d + 1) * BLOCK];
            let n = (count - d * TARGETS_PER_DESC).min(TARGETS_PER_DESC);
            targets.extend((0..n).map(|i| get_u64(b, DESC_HDR + 8 * i)));
        }
        if let Some(t) = targets.iter().find(|t| !meta.contains(t)) {
            return Err(StoreError::Format {
                path: path.to_owned(),
                reason: format!("journal transaction {seq} targets block {t} outside the metadata area"),
            });
        }
        last_start = out.writes.len();
        for (i, t) in targets.into_iter().enumerate() {
            let mut img = AlignedBuf::new(BLOCK);
            img.copy_from_slice(&txn[(ndesc + i) * BLOCK..(ndesc + i + 1) * BLOCK]);
            out.writes.push((t, img));
        }
        out.txns += 1;
        seq += 1;
        pos += len;
    }
    out.next_seq = seq;
    if out.txns > 0
        && confirmed < seq - 1
        && !data_durable(dev, g, &out.writes[..last_start], &out.writes[last_start..])?
    {
        tracing::warn!(
            device = path,
            seq = seq - 1,
            "last journal transaction is intact but its data did not reach the device; it was never acknowledged: dropped"
        );
        out.writes.truncate(last_start);
        out.txns -= 1;
        out.dropped = Some(seq - 1);
    }
    Ok(out)
}

/// Data blocks verified per read batch.
const VERIFY_BATCH: usize = 256;

/// True if every data block the transaction `last` newly maps holds the data its block-map entry
/// describes. `before` are the journaled writes that precede it (newer images last); a map block
/// not among them is read from its place on the device.
fn data_durable(
    dev: &dyn BlockDevice,
    g: &Geometry,
    before: &[(u64, AlignedBuf)],
    last: &[(u64, AlignedBuf)],
) -> Result<bool, StoreError> {
    let maps = g.map_start..g.map_start + g.map_blocks;
    let mut latest: HashMap<u64, &AlignedBuf> = HashMap::new();
    for (t, img) in before {
        if maps.contains(t) {
            latest.insert(*t, img);
        }
    }
    // (data block, crc) of every entry the transaction changes to an owned one. An owned entry can
    // only change by being freed first, and a freed block is reused only after the transaction
    // that freed it is durable: within one transaction a changed owned entry is a new mapping.
    let mut fresh: Vec<(u64, u32)> = Vec::new();
    let mut in_place = AlignedBuf::new(BLOCK);
    for (t, new) in last {
        if !maps.contains(t) {
            continue;
        }
        let old: &[u8] = match latest.get(t) {
            Some(img) => &img[..],
            None => {
                dev.read_at(t * BLOCK_U64, &mut in_place)?;
                &in_place[..]
            }
        };
        for i in 0..MAP_PER_BLOCK as usize {
            let e = i * 16;
            let d = (t - g.map_start) * MAP_PER_BLOCK + i as u64;
            if get_u64(new, e) != 0 && new[e..e + 16] != old[e..e + 16] && d < g.data_blocks {
                fresh.push((d, get_u32(new, e + 12)));
            }
        }
    }
    fresh.sort_unstable();
    let mut buf = AlignedBuf::new(VERIFY_BATCH * BLOCK);
    for batch in fresh.chunks(VERIFY_BATCH) {
        // One read per run of consecutive blocks.
        let mut ops: Vec<IoOp<'_>> = Vec::new();
        let mut rest: &mut [u8] = &mut buf[..batch.len() * BLOCK];
        let mut i = 0;
        while i < batch.len() {
            let mut j = i + 1;
            while j < batch.len() && batch[j].0 == batch[i].0 + (j - i) as u64 {
                j += 1;
            }
            let (run, r) = std::mem::take(&mut rest).split_at_mut((j - i) * BLOCK);
            ops.push(IoOp::Read {
                offset: (g.data_start + batch[i].0) * BLOCK_U64,
                buf: run,
            });
            rest = r;
            i = j;
        }
        dev.submit(&mut ops)?;
        drop(ops);
        for (k, &(_, crc)) in batch.iter().enumerate() {
            if rustre_proto::crc::crc32c(&buf[k * BLOCK..(k + 1) * BLOCK]) != crc {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Replays the journal onto the device and resets it. Returns the sequence number of the next
/// transaction and the number of transactions replayed.
pub fn replay(dev: &dyn BlockDevice, g: &Geometry) -> Result<(u64, u64), StoreError> {
    let s = scan(dev, g)?;
    if s.txns > 0 {
        // Later images of a block overwrite earlier ones: submit in order, one block per I/O, in
        // batches that never hold two writes to the same block.
        let mut i = 0;
        while i < s.writes.len() {
            let mut seen = std::collections::HashSet::new();
            let mut ops = Vec::new();
            while i < s.writes.len() && seen.insert(s.writes[i].0) && ops.len() < 256 {
                let (t, img) = &s.writes[i];
                ops.push(IoOp::Write {
                    offset: t * BLOCK_U64,
                    buf: &img[..],
                });
                i += 1;
            }
            dev.submit(&mut ops)?;
        }
        dev.flush()?;
    }
    reset(dev, s.next_seq)?;
    Ok((s.next_seq, s.txns))
}

/// Empties the journal: the next transaction has sequence `next_seq` and goes right after the
/// header. Everything the journal held must already be in place and durable.
pub fn reset(dev: &dyn BlockDevice, next_seq: u64) -> Result<(), StoreError> {
    let mut b = AlignedBuf::new(BLOCK);
    encode_header(&mut b, next_seq, 0);
    dev.write_at(JOURNAL_START * BLOCK_U64, &b)?;
    dev.flush()?;
    Ok(())
}
