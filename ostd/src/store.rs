//! The object store: objects of 4 KiB blocks on one device, with crash-safe metadata.
//!
//! Writes are copy-on-write: new data goes to freshly reserved blocks with `O_DIRECT`, then the
//! metadata change (block map entries with the per-block crc32c, bitmap bits, object size) is
//! applied in memory under the metadata lock and joins the open journal transaction. The write is
//! acknowledged only once a commit has written the transaction's journal record and flushed the
//! device once, which makes the data and the record durable together (replay drops a last record
//! whose data did not make it; format version 1 devices flush the data before the record, as they
//! always did). Concurrent writers share commits
//! (group commit): whoever finds no commit running leads the next one for everyone waiting.
//! Blocks a transaction frees are reused only after it is durable, and only when no reader still
//! reads them.

use crate::dev::{AlignedBuf, BlockDevice, IoOp};
use crate::error::StoreError;
use crate::format::{self, BLOCK, BLOCK_U64, JOURNAL_START, Superblock};
use crate::journal;
use crate::meta::Meta;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest object size: the block map stores logical block numbers in 32 bits.
pub const MAX_OBJECT_SIZE: u64 = (u32::MAX as u64) * BLOCK_U64;
/// Most objects one precreate may create (the protocol's limit).
pub const MAX_PRECREATE: u32 = 65_536;
/// Objects created per journal transaction by a precreate.
pub const PRECREATE_CHUNK: u32 = 1024;

/// Where each of a multi-range write's ranges lies in its buffer: range k's blocks start at
/// `slots[k]` (block-aligned, right after range k-1's blocks) and its bytes at
/// `slots[k] + offset % 4096`. Also returns the bytes the buffer needs.
pub fn range_slots(ranges: &[(u64, usize)]) -> (Vec<usize>, usize) {
    let mut slots = Vec::with_capacity(ranges.len());
    let mut at = 0usize;
    for &(offset, len) in ranges {
        slots.push(at);
        at += ((offset % BLOCK_U64) as usize + len).div_ceil(BLOCK) * BLOCK;
    }
    (slots, at)
}

/// What a staged write knows of its blocks' checksums.
enum Sums {
    /// Nothing: they are computed from the blocks as written.
    Compute,
    /// The crc32c of the bytes as received, checked (and the block crcs taken) in one pass.
    Verify(u32),
    /// The block crcs from [`fold_block_crcs`], already checked by the caller.
    Known(Vec<u32>),
}

/// One pass over `len` bytes laid out as on disk at `buf[head..]` (`head` < 4096): the crc32c of
/// every whole block they fill (what the index stores; 0 for a partial edge block, whose crc is
/// taken once its old bytes are in), and `acc` (the crc32c of the bytes before, if any) extended
/// over them. `buf` must hold every block the bytes touch.
fn fold_block_crcs(buf: &[u8], head: usize, len: usize, mut acc: Option<u32>) -> (Vec<u32>, Option<u32>) {
    let end = head + len;
    let nblocks = end.div_ceil(BLOCK);
    let mut crcs = Vec::with_capacity(nblocks);
    for k in 0..nblocks {
        let (from, to) = ((k * BLOCK).max(head), ((k + 1) * BLOCK).min(end));
        let bytes = &buf[from..to];
        if bytes.len() == BLOCK {
            let piece = rustre_proto::crc::crc32c(bytes);
            crcs.push(piece);
            acc = Some(acc.map_or(piece, |c| crate::crc::append_4k(c, piece)));
        } else {
            crcs.push(0);
            acc = Some(match acc {
                None => rustre_proto::crc::crc32c(bytes),
                Some(c) => rustre_proto::crc::crc32c_append(c, bytes),
            });
        }
    }
    (crcs, acc)
}

/// A partial block at the edge of a write: the stored bytes around the new ones are read in.
struct Edge {
    /// Logical block of the object.
    logical: u64,
    /// Where the block's copy starts in the write's buffer.
    at: usize,
    /// The bytes of the block that keep their stored value.
    keep: std::ops::Range<usize>,
}

/// The partial edge blocks of a write of `len` bytes at `offset`, laid out as on disk at
/// `buf[slot + offset % 4096..]`: the first block when the write starts inside it, the last when
/// it ends inside it (one block can be both: two edges). None for an empty write.
fn edges_of(offset: u64, len: usize, slot: usize) -> Vec<Edge> {
    let mut edges = Vec::with_capacity(2);
    if len == 0 {
        return edges;
    }
    let head = (offset % BLOCK_U64) as usize;
    let first = offset / BLOCK_U64;
    let nblocks = (head + len).div_ceil(BLOCK);
    let tail = (head + len) % BLOCK;
    if head != 0 {
        edges.push(Edge {
            logical: first,
            at: slot,
            keep: 0..head,
        });
    }
    if tail != 0 {
        let last = nblocks - 1;
        edges.push(Edge {
            logical: first + last as u64,
            at: slot + last * BLOCK,
            keep: tail..BLOCK,
        });
    }
    edges
}

/// Lock slots serializing partial-block read-modify-write (hashed by object and block).
const RMW_LOCKS: usize = 64;

fn rmw_slot(id: u64, block: u64) -> usize {
    let h = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ block).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (h >> 58) as usize % RMW_LOCKS
}

/// Asked before every device write that changes the target (new data, a journal record): the
/// server's multi-mount protection ([`crate::mmp::MmpLease`]). An error fences the store.
pub trait WriteGuard: Send + Sync {
    /// `Err(reason)` if this node may no longer write the device.
    fn check(&self) -> Result<(), String>;
}

/// Object attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectAttr {
    /// Size in bytes.
    pub size: u64,
    /// 4 KiB blocks allocated.
    pub blocks: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
}

/// Space figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatfs {
    /// Bytes of the data area.
    pub total_bytes: u64,
    /// Bytes free.
    pub free_bytes: u64,
    /// Objects in use.
    pub objects: u64,
    /// Objects that can still be created.
    pub free_objects: u64,
}

struct CommitState {
    durable: u64,
    committing: bool,
}

struct JournalWriter {
    /// Next free journal block, relative to the journal start (block 0 is the header).
    head: u64,
    next_seq: u64,
    /// Sequence number of the first transaction the journal holds (its header's).
    start_seq: u64,
    /// Metadata blocks logged since the last checkpoint.
    unckpt: BTreeSet<u64>,
    /// Transactions written since mount.
    commits: u64,
    /// Where the next transaction record is assembled; kept between commits and grown to the
    /// largest record so far (transactions are bounded), so a commit does not allocate and fault
    /// in fresh pages for every record.
    scratch: AlignedBuf,
}

/// One mounted object storage target.
pub struct ObjectStore {
    dev: Arc<dyn BlockDevice>,
    sb: Superblock,
    meta: Mutex<Meta>,
    commit: Mutex<CommitState>,
    commit_cv: Condvar,
    jw: Mutex<JournalWriter>,
    reuse: RwLock<()>,
    failed: Mutex<Option<String>>,
    fenced: AtomicBool,
    guard: std::sync::OnceLock<Arc<dyn WriteGuard>>,
    precreate_lock: Mutex<()>,
    /// Serializes the read-modify-write of partially written blocks: writers of disjoint byte
    /// ranges sharing a 4 KiB block (MPI N-1 strided records) must not lose each other's bytes.
    rmw_locks: Box<[Mutex<()>]>,
    max_txn: usize,
    chunk_blocks: u64,
    replayed: u64,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("device", &self.dev.path())
            .field("ost", &self.sb.ost_index)
            .finish()
    }
}

/// Reads the metadata region of a target.
pub(crate) fn read_region(dev: &dyn BlockDevice, geo: &format::Geometry) -> Result<Vec<u8>, StoreError> {
    let range = geo.meta_range();
    let total = ((range.end - range.start) * BLOCK_U64) as usize;
    let mut region = vec![0u8; total];
    let chunk = 256 * BLOCK;
    let mut buf = AlignedBuf::new(chunk);
    let mut at = 0usize;
    while at < total {
        let n = (total - at).min(chunk);
        dev.read_at(range.start * BLOCK_U64 + at as u64, &mut buf[..n])?;
        region[at..at + n].copy_from_slice(&buf[..n]);
        at += n;
    }
    Ok(region)
}

impl ObjectStore {
    /// Mounts the target on `dev`: validates the superblock, replays the journal, loads the index.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Self, StoreError> {
        let sb = format::read_superblock(dev.as_ref())?;
        let geo = sb.geometry;
        let (next_seq, replayed) = journal::replay(dev.as_ref(), &geo)?;
        let region = read_region(dev.as_ref(), &geo)?;
        let meta = Meta::load(dev.path(), geo, region)?;
        let half = (geo.journal_blocks - 1) / 2;
        let max_txn = (half - 1 - half.div_ceil(journal::TARGETS_PER_DESC as u64)) as usize;
        let chunk_blocks = ((max_txn as u64).saturating_sub(2) / 4).clamp(1, 1024);
        tracing::info!(device = dev.path(), ost = sb.ost_index, replayed, "mounted");
        Ok(Self {
            dev,
            sb,
            meta: Mutex::new(meta),
            commit: Mutex::new(CommitState {
                durable: 0,
                committing: false,
            }),
            commit_cv: Condvar::new(),
            jw: Mutex::new(JournalWriter {
                head: 1,
                next_seq,
                start_seq: next_seq,
                unckpt: BTreeSet::new(),
                commits: 0,
                scratch: AlignedBuf::new(BLOCK),
            }),
            reuse: RwLock::new(()),
            failed: Mutex::new(None),
            fenced: AtomicBool::new(false),
            guard: std::sync::OnceLock::new(),
            precreate_lock: Mutex::new(()),
            rmw_locks: (0..RMW_LOCKS).map(|_| Mutex::new(())).collect(),
            max_txn,
            chunk_blocks,
            replayed,
        })
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// Journal transactions replayed at mount.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Journal transactions committed since mount (one commit covers every writer waiting on it).
    pub fn journal_commits(&self) -> u64 {
        self.jw.lock().commits
    }

    /// Stops accepting changes because another node took the device over (MMP).
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    /// True once [`ObjectStore::fence`] was called.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Installs the check made before every device write that changes the target (once; later
    /// calls are ignored).
    pub fn set_write_guard(&self, guard: Arc<dyn WriteGuard>) {
        let _ = self.guard.set(guard);
    }

    /// [`ObjectStore::check_writable`], then the write guard, right before a device write.
    fn guard_write(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        if let Some(g) = self.guard.get()
            && let Err(msg) = g.check()
        {
            self.fence();
            return Err(StoreError::Mmp(msg));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.is_fenced() {
            return Err(StoreError::Mmp(
                "another node has taken this target over; not accepting changes".into(),
            ));
        }
        if let Some(msg) = self.failed.lock().as_ref() {
            return Err(StoreError::Failed(msg.clone()));
        }
        Ok(())
    }

    fn data_offset(&self, d: u64) -> u64 {
        (self.sb.geometry.data_start + d) * BLOCK_U64
    }

    // ---- commit ------------------------------------------------------------------------------

    /// Waits until transaction `txn` is durable, leading a commit if none is running.
    fn commit_wait(&self, txn: u64) -> Result<(), StoreError> {
        let mut st = self.commit.lock();
        loop {
            if st.durable >= txn {
                return Ok(());
            }
            if let Some(msg) = self.failed.lock().as_ref() {
                return Err(StoreError::Failed(msg.clone()));
            }
            if st.committing {
                self.commit_cv.wait(&mut st);
                continue;
            }
            st.committing = true;
            drop(st);
            let r = self.commit_once();
            st = self.commit.lock();
            st.committing = false;
            match r {
                Ok(t) => st.durable = st.durable.max(t),
                Err(e) => {
                    tracing::error!(device = self.dev.path(), error = %e, "journal commit failed; target is now read-only");
                    self.failed.lock().get_or_insert(e.to_string());
                }
            }
            self.commit_cv.notify_all();
        }
    }

    /// Commits the open transaction; returns its id.
    fn commit_once(&self) -> Result<u64, StoreError> {
        let geo = self.sb.geometry;
        let mut jw_guard = self.jw.lock();
        let jw = &mut *jw_guard;
        let (txn, targets, rec_len, frees, ckpt) = {
            let mut m = self.meta.lock();
            let txn = m.open_txn;
            m.open_txn += 1;
            let targets: Vec<u64> = std::mem::take(&mut m.dirty).into_iter().collect();
            let frees = std::mem::take(&mut m.pending_free);
            // The images go straight into the record (see `journal::seal_txn` below).
            let rec_len = journal::txn_len(targets.len()) as usize * BLOCK;
            if jw.scratch.len() < rec_len {
                jw.scratch = AlignedBuf::new(rec_len);
            }
            let at = journal::images_at(targets.len());
            for (i, t) in targets.iter().enumerate() {
                jw.scratch[at + i * BLOCK..at + (i + 1) * BLOCK].copy_from_slice(m.image(*t));
            }
            // Checkpoint once the journal is half full, from the state as of this transaction.
            let half = (geo.journal_blocks - 1) / 2;
            let ckpt = if !targets.is_empty() && jw.head + journal::txn_len(targets.len()) > half {
                let all: BTreeSet<u64> = jw.unckpt.iter().chain(targets.iter()).copied().collect();
                let mut buf = AlignedBuf::new(all.len() * BLOCK);
                for (i, t) in all.iter().enumerate() {
                    buf[i * BLOCK..(i + 1) * BLOCK].copy_from_slice(m.image(*t));
                }
                Some((all.into_iter().collect::<Vec<u64>>(), buf))
            } else {
                None
            };
            (txn, targets, rec_len, frees, ckpt)
        };
        if targets.is_empty() {
            debug_assert!(frees.is_empty());
            return Ok(txn);
        }
        debug_assert!(targets.len() <= self.max_txn, "transaction of {} blocks", targets.len());
        if self.is_fenced() {
            // Another node owns the device now: nothing more may reach it.
            return Err(StoreError::Mmp(
                "another node has taken this target over; commit abandoned".into(),
            ));
        }
        self.guard_write()?;
        if self.sb.version < format::ONE_FLUSH_VERSION {
            // Version 1: the data the transaction points to is durable before its record is
            // written, as an older ostd recovering this device expects.
            self.dev.flush()?;
        }
        // 2. Log, then one flush makes the data (written, not yet flushed) and the record durable
        // together: the transaction is committed. A power cut before the flush returns may leave
        // the record without its data; replay verifies the data of the last record and drops it
        // then (see the journal module).
        let rec = &mut jw.scratch[..rec_len];
        journal::seal_txn(rec, jw.next_seq, &targets);
        self.dev.write_at((JOURNAL_START + jw.head) * BLOCK_U64, rec)?;
        self.dev.flush()?;
        jw.head += journal::txn_len(targets.len());
        jw.next_seq += 1;
        jw.commits += 1;
        jw.unckpt.extend(targets.iter().copied());
        if ckpt.is_none() && self.sb.version >= format::ONE_FLUSH_VERSION && self.meta.lock().dirty.is_empty() {
            // Nothing queued behind this transaction: it stays the journal's last for now, so say
            // that it was flushed whole (see `journal::confirm`). A commit following at once
            // confirms it by its own record instead.
            journal::confirm(self.dev.as_ref(), jw.start_seq, jw.next_seq - 1)?;
        }
        // 3. Checkpoint: everything logged goes in place, then the journal is emptied.
        if let Some((blocks, buf)) = ckpt {
            for (i, group) in blocks.chunks(256).enumerate() {
                let mut ops: Vec<IoOp<'_>> = group
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        let k = i * 256 + j;
                        IoOp::Write {
                            offset: t * BLOCK_U64,
                            buf: &buf[k * BLOCK..(k + 1) * BLOCK],
                        }
                    })
                    .collect();
                self.dev.submit(&mut ops)?;
            }
            self.dev.flush()?;
            journal::reset(self.dev.as_ref(), jw.next_seq)?;
            jw.start_seq = jw.next_seq;
            jw.head = 1;
            jw.unckpt.clear();
        }
        drop(jw_guard);
        // 4. Blocks freed by the transaction may now be reused, once no reader is reading them.
        let _no_readers = self.reuse.write();
        self.meta.lock().release(&frees);
        Ok(txn)
    }

    // ---- objects -----------------------------------------------------------------------------

    /// Creates as many of `count` new empty objects as there are free object slots (at least
    /// one): returns the first id and how many were created (ids are consecutive). `NoSpace` only
    /// when no slot is free, so an MDS asking for a large batch from a nearly full OST still
    /// gets what is left.
    pub fn precreate_up_to(&self, count: u32) -> Result<(u64, u32), StoreError> {
        let free = self.meta.lock().free_slots.len() as u64;
        if free == 0 {
            return Err(StoreError::NoSpace(format!(
                "{count} objects wanted, no object slot free"
            )));
        }
        let n = u32::try_from(free).unwrap_or(u32::MAX).min(count);
        Ok((self.precreate(n)?, n))
    }

    /// Creates `count` new empty objects; returns the first id (ids are consecutive). Large
    /// batches commit in pieces of at most [`PRECREATE_CHUNK`].
    pub fn precreate(&self, count: u32) -> Result<u64, StoreError> {
        self.check_writable()?;
        if count == 0 || count > MAX_PRECREATE {
            return Err(StoreError::Invalid {
                field: "count",
                reason: format!("must be 1..={MAX_PRECREATE}"),
            });
        }
        // One precreate at a time keeps each batch's ids consecutive.
        let _one = self.precreate_lock.lock();
        let free = self.meta.lock().free_slots.len() as u64;
        if u64::from(count) > free {
            return Err(StoreError::NoSpace(format!(
                "{count} objects wanted, {free} object slots free"
            )));
        }
        let mut first = None;
        let mut left = count;
        while left > 0 {
            let n = left.min(PRECREATE_CHUNK);
            let f = self.precreate_chunk(n)?;
            first.get_or_insert(f);
            left -= n;
        }
        first.ok_or_else(|| StoreError::Invalid {
            field: "count",
            reason: "zero objects".into(),
        })
    }

    fn precreate_chunk(&self, count: u32) -> Result<u64, StoreError> {
        loop {
            let mut m = self.meta.lock();
            let mut set = BTreeSet::new();
            set.insert(m.geo.state_block);
            for s in m.free_slots.iter().take(count as usize) {
                set.insert(m.slot_block(*s));
            }
            if m.dirty_with(&set) > self.max_txn {
                let t = m.open_txn;
                drop(m);
                self.commit_wait(t)?;
                continue;
            }
            let first = m.create_batch(u64::from(count), now_ns())?;
            let txn = m.open_txn;
            drop(m);
            self.commit_wait(txn)?;
            return Ok(first);
        }
    }

    /// Attributes of object `id`.
    pub fn getattr(&self, id: u64) -> Result<ObjectAttr, StoreError> {
        let m = self.meta.lock();
        let o = m.objects.get(&id).ok_or(StoreError::NotFound(id))?;
        Ok(ObjectAttr {
            size: o.size,
            blocks: o.blocks.len(),
            mtime_ns: o.mtime_ns,
        })
    }

    /// Runs the in-memory index of object `id` holds: one per stretch of logical blocks stored
    /// contiguously on the device, so a sequentially written object costs a few, whatever its size.
    pub fn index_runs(&self, id: u64) -> Result<usize, StoreError> {
        let m = self.meta.lock();
        let o = m.objects.get(&id).ok_or(StoreError::NotFound(id))?;
        Ok(o.blocks.run_count())
    }

    /// True if object `id` exists.
    pub fn exists(&self, id: u64) -> bool {
        self.meta.lock().objects.contains_key(&id)
    }

    /// Space figures.
    pub fn statfs(&self) -> StoreStatfs {
        let m = self.meta.lock();
        StoreStatfs {
            total_bytes: m.geo.data_blocks * BLOCK_U64,
            free_bytes: m.free_blocks * BLOCK_U64,
            objects: m.objects.len() as u64,
            free_objects: m.free_slots.len() as u64,
        }
    }

    /// Makes everything acknowledged so far durable (it already is) and commits pending metadata.
    pub fn sync(&self) -> Result<(), StoreError> {
        let t = self.meta.lock().open_txn;
        self.commit_wait(t)?;
        self.dev.flush()?;
        Ok(())
    }

    /// Writes `data` at `offset` of object `id`; returns the object size.
    pub fn write(&self, id: u64, offset: u64, data: &[u8]) -> Result<u64, StoreError> {
        const STEP: usize = 1 << 20;
        let mut stage = AlignedBuf::new(STEP + 2 * BLOCK);
        let mut done = 0usize;
        let mut size = self.getattr(id)?.size;
        if data.is_empty() {
            return Ok(size);
        }
        while done < data.len() {
            let n = (data.len() - done).min(STEP);
            let off = offset + done as u64;
            let head = (off % BLOCK_U64) as usize;
            stage[head..head + n].copy_from_slice(&data[done..done + n]);
            size = self.write_in_place(id, off, n, &mut stage)?;
            done += n;
        }
        Ok(size)
    }

    /// Writes `len` bytes at `offset` of object `id` from `buf`, where they are laid out as on
    /// disk: at `buf[offset % 4096..]`. `buf` is block-aligned (a pool buffer, for zero-copy
    /// `WRITE_FIXED`); the partial first and last blocks are completed in `buf` from the old data.
    /// Returns the object size.
    pub fn write_in_place(&self, id: u64, offset: u64, len: usize, buf: &mut [u8]) -> Result<u64, StoreError> {
        self.write_inner(id, offset, len, buf, None)
    }

    /// [`ObjectStore::write_in_place`] of data received with the crc32c `expected` (a client's
    /// bulk): the data is checked before anything is written ([`StoreError::BulkChecksum`]). For a
    /// block-aligned write the check is folded from the per-block checksums the index needs anyway,
    /// so the data is read once.
    pub fn write_verified(
        &self,
        id: u64,
        offset: u64,
        len: usize,
        buf: &mut [u8],
        expected: u32,
    ) -> Result<u64, StoreError> {
        self.write_inner(id, offset, len, buf, Some(expected))
    }

    /// Writes several byte ranges of object `id` (a client's gathered writes) under one journal
    /// commit. `ranges` are (offset, length), ascending and not overlapping; range k's bytes lie
    /// in `buf` as [`ObjectStore::write_in_place`] wants them, in the slot [`range_slots`] gives
    /// it. `expected` is the crc32c of every range's bytes in order, checked before anything is
    /// written. Returns the object size. A failure part way leaves the ranges before it written
    /// (as separate writes would have).
    pub fn write_ranges_verified(
        &self,
        id: u64,
        ranges: &[(u64, usize)],
        buf: &mut [u8],
        expected: u32,
    ) -> Result<u64, StoreError> {
        let (slots, span) = range_slots(ranges);
        if buf.len() < span {
            return Err(StoreError::Invalid {
                field: "length",
                reason: "the ranges do not fit their buffer".into(),
            });
        }
        // One pass over the bytes: the block crcs the index stores, folded into the crc of all
        // the ranges in order.
        let mut actual: Option<u32> = None;
        let mut range_crcs = Vec::with_capacity(ranges.len());
        for (&(offset, len), &slot) in ranges.iter().zip(&slots) {
            let (crcs, acc) = fold_block_crcs(&buf[slot..], (offset % BLOCK_U64) as usize, len, actual);
            range_crcs.push(crcs);
            actual = acc;
        }
        let actual = actual.unwrap_or(0);
        if actual != expected {
            return Err(StoreError::BulkChecksum { expected, actual });
        }
        // The partial edge blocks of every range are read with one device submission and stay
        // locked until the ranges are mapped. Neighbours sharing a block (two ranges inside one
        // block) are the exception: the second must read the first's bytes, so each range then
        // completes its own edges after the one before it is mapped.
        let written: Vec<(u64, usize)> = ranges.iter().copied().filter(|r| r.1 > 0).collect();
        let shared_block = written
            .windows(2)
            .any(|w| (w[0].0 + w[0].1 as u64 - 1) / BLOCK_U64 == w[1].0 / BLOCK_U64);
        let edges: Vec<Edge> = if shared_block {
            Vec::new()
        } else {
            ranges
                .iter()
                .zip(&slots)
                .flat_map(|(&(offset, len), &slot)| edges_of(offset, len, slot))
                .collect()
        };
        let guards = self.lock_edges(id, &edges);
        self.fill_edges(id, &edges, buf)?;
        let mut txn = 0;
        for (i, (&(offset, len), crcs)) in ranges.iter().zip(range_crcs).enumerate() {
            let to = slots.get(i + 1).copied().unwrap_or(span);
            let sums = Sums::Known(crcs);
            let filled = !shared_block;
            txn = txn.max(self.stage_write(id, offset, len, &mut buf[slots[i]..to], sums, filled)?);
        }
        drop(guards);
        self.commit_wait(txn)?;
        Ok(self.getattr(id)?.size)
    }

    fn write_inner(
        &self,
        id: u64,
        offset: u64,
        len: usize,
        buf: &mut [u8],
        expected: Option<u32>,
    ) -> Result<u64, StoreError> {
        let sums = expected.map_or(Sums::Compute, Sums::Verify);
        let txn = self.stage_write(id, offset, len, buf, sums, false)?;
        self.commit_wait(txn)?;
        Ok(self.getattr(id)?.size)
    }

    /// [`ObjectStore::write_inner`] up to the commit: the data is on the device and the metadata
    /// change in the open transaction, whose id is returned (0: nothing to commit).
    /// `edges_filled`: the caller holds the locks of the partial edge blocks and has completed
    /// them in `buf` from the stored data ([`ObjectStore::fill_edges`]).
    fn stage_write(
        &self,
        id: u64,
        offset: u64,
        len: usize,
        buf: &mut [u8],
        sums: Sums,
        edges_filled: bool,
    ) -> Result<u64, StoreError> {
        self.check_writable()?;
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= MAX_OBJECT_SIZE)
            .ok_or_else(|| StoreError::Invalid {
                field: "offset",
                reason: format!("offset + length beyond {MAX_OBJECT_SIZE}"),
            })?;
        if len == 0 {
            self.getattr(id)?;
            return Ok(0);
        }
        let head = (offset % BLOCK_U64) as usize;
        let nblocks = (head + len).div_ceil(BLOCK) as u64;
        if buf.len() < nblocks as usize * BLOCK || !(buf.as_ptr() as usize).is_multiple_of(BLOCK) {
            return Err(StoreError::Invalid {
                field: "length",
                reason: "write does not fit its buffer".into(),
            });
        }
        let first = offset / BLOCK_U64;
        let tail = (head + len) % BLOCK;
        let mut block_crcs: Option<Vec<u32>> = match sums {
            Sums::Compute => None,
            Sums::Verify(expected) => {
                let (crcs, actual) = fold_block_crcs(buf, head, len, None);
                let actual = actual.unwrap_or(0);
                if actual != expected {
                    return Err(StoreError::BulkChecksum { expected, actual });
                }
                Some(crcs)
            }
            Sums::Known(crcs) if crcs.len() == nblocks as usize => Some(crcs),
            Sums::Known(crcs) => {
                return Err(StoreError::Invalid {
                    field: "length",
                    reason: format!("{} block checksums for {nblocks} blocks", crcs.len()),
                });
            }
        };
        // Read-modify-write of partial blocks. They stay locked until their new copies are
        // mapped (end of the chunk loop below), so a concurrent writer of the same block reads
        // this write's bytes.
        let edge_guards = if edges_filled {
            Vec::new()
        } else {
            let edges = edges_of(offset, len, 0);
            let guards = self.lock_edges(id, &edges);
            self.fill_edges(id, &edges, buf)?;
            guards
        };
        if let Some(crcs) = block_crcs.as_mut() {
            // The edge blocks, now whole.
            let last = nblocks as usize - 1;
            for k in [0, last] {
                if (k == 0 && head != 0) || (k == last && tail != 0) {
                    crcs[k] = rustre_proto::crc::crc32c(&buf[k * BLOCK..(k + 1) * BLOCK]);
                }
            }
        }
        let mut txn = 0;
        let mut c = 0u64;
        while c < nblocks {
            let n = (nblocks - c).min(self.chunk_blocks);
            let data = &buf[(c as usize) * BLOCK..((c + n) as usize) * BLOCK];
            let chunk_end = end.min((first + c + n) * BLOCK_U64);
            let crcs = block_crcs.as_ref().map(|v| &v[c as usize..(c + n) as usize]);
            txn = self.write_chunk(id, first + c, data, chunk_end, crcs)?;
            c += n;
        }
        drop(edge_guards);
        Ok(txn)
    }

    /// Locks the read-modify-write slots of `edges`, in slot order (so that writers locking
    /// several never wait for each other in a circle).
    fn lock_edges(&self, id: u64, edges: &[Edge]) -> Vec<parking_lot::MutexGuard<'_, ()>> {
        let mut slots: Vec<usize> = edges.iter().map(|e| rmw_slot(id, e.logical)).collect();
        slots.sort_unstable();
        slots.dedup();
        slots.iter().map(|&k| self.rmw_locks[k].lock()).collect()
    }

    /// Completes partial edge blocks in `buf`: each edge's `keep` bytes come from the stored
    /// block (checked against its crc32c), or are zeros where the object has no block. The
    /// stored blocks are read with one device submission.
    fn fill_edges(&self, id: u64, edges: &[Edge], buf: &mut [u8]) -> Result<(), StoreError> {
        if edges.is_empty() {
            return Ok(());
        }
        let _g = self.reuse.read();
        let mapped: Vec<Option<(u64, u32)>> = {
            let m = self.meta.lock();
            let o = m.objects.get(&id).ok_or(StoreError::NotFound(id))?;
            edges
                .iter()
                .map(|e| o.blocks.get(e.logical).map(|d| (d, m.map_entry(d).crc)))
                .collect()
        };
        let stored = mapped.iter().flatten().count();
        let mut old = AlignedBuf::new(stored.max(1) * BLOCK);
        {
            let mut ops: Vec<IoOp<'_>> = mapped
                .iter()
                .flatten()
                .zip(old.chunks_mut(BLOCK))
                .map(|(&(d, _), blk)| IoOp::Read {
                    offset: self.data_offset(d),
                    buf: blk,
                })
                .collect();
            if !ops.is_empty() {
                self.dev.submit(&mut ops)?;
            }
        }
        let mut blocks = old.chunks(BLOCK);
        for (e, m) in edges.iter().zip(&mapped) {
            let dst = &mut buf[e.at + e.keep.start..e.at + e.keep.end];
            match m.and_then(|(_, crc)| Some((crc, blocks.next()?))) {
                Some((crc, blk)) => {
                    let actual = rustre_proto::crc::crc32c(blk);
                    if actual != crc {
                        return Err(StoreError::Checksum {
                            object: id,
                            block: e.logical,
                            stored: crc,
                            actual,
                        });
                    }
                    dst.copy_from_slice(&blk[e.keep.clone()]);
                }
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    /// Writes whole blocks `data` at logical block `first` and joins the metadata change to the
    /// open transaction; returns that transaction's id.
    fn write_chunk(
        &self,
        id: u64,
        first: u64,
        data: &[u8],
        new_end: u64,
        known_crcs: Option<&[u32]>,
    ) -> Result<u64, StoreError> {
        let n = (data.len() / BLOCK) as u64;
        let computed: Vec<u32>;
        let crcs: &[u32] = match known_crcs {
            Some(c) => c,
            None => {
                computed = data.chunks(BLOCK).map(rustre_proto::crc::crc32c).collect();
                &computed
            }
        };
        let runs = {
            let mut m = self.meta.lock();
            if !m.objects.contains_key(&id) {
                return Err(StoreError::NotFound(id));
            }
            m.reserve(n)?
        };
        let mut ops = Vec::with_capacity(runs.len());
        let mut pos = 0usize;
        for &(d, l) in &runs {
            let bytes = l as usize * BLOCK;
            ops.push(IoOp::Write {
                offset: self.data_offset(d),
                buf: &data[pos..pos + bytes],
            });
            pos += bytes;
        }
        if let Err(e) = self.guard_write() {
            self.meta.lock().unreserve(&runs);
            return Err(e);
        }
        if let Err(e) = self.dev.submit(&mut ops) {
            self.meta.lock().unreserve(&runs);
            return Err(e.into());
        }
        loop {
            let mut m = self.meta.lock();
            if let Err(e) = self.check_writable() {
                m.unreserve(&runs);
                return Err(e);
            }
            let Some(o) = m.objects.get(&id) else {
                m.unreserve(&runs);
                return Err(StoreError::NotFound(id));
            };
            let slot = o.slot;
            let olds: Vec<(u64, u64, u64)> = o.blocks.runs_in(first, first + n).collect();
            let mut set = BTreeSet::new();
            set.insert(m.slot_block(slot));
            for (d, l) in runs.iter().copied().chain(olds.iter().map(|&(_, d, l)| (d, l))) {
                m.blocks_of_run(d, l, &mut set);
            }
            if m.dirty_with(&set) > self.max_txn {
                let t = m.open_txn;
                drop(m);
                self.commit_wait(t)?;
                continue;
            }
            let mut at = 0usize;
            for &(d, l) in &runs {
                let l = l as usize;
                m.map_run(id, first + at as u64, d, &crcs[at..at + l]);
                at += l;
            }
            if let Some(o) = m.objects.get_mut(&id) {
                o.size = o.size.max(new_end);
                o.mtime_ns = now_ns();
            }
            m.store_attrs(id);
            return Ok(m.open_txn);
        }
    }

    /// Reads up to `len` bytes at `offset` of object `id` into `buf` (block-aligned, at least the
    /// blocks spanned), laid out as on disk: returns `(start, n)` with the data at
    /// `buf[start..start + n]` (`n` is short at the end of the object). Every block read is checked
    /// against its stored crc32c; holes read as zeros.
    pub fn read_into(&self, id: u64, offset: u64, len: usize, buf: &mut [u8]) -> Result<(usize, usize), StoreError> {
        self.read_blocks(id, offset, len, buf, &mut Vec::new())
    }

    /// [`ObjectStore::read_into`], also returning the crc32c of the bytes read
    /// (`buf[start..start + n]`), folded from the per-block checksums the read verifies anyway:
    /// only partial edge blocks are summed a second time.
    pub fn read_with_crc(
        &self,
        id: u64,
        offset: u64,
        len: usize,
        buf: &mut [u8],
    ) -> Result<(usize, usize, u32), StoreError> {
        let mut crcs = Vec::new();
        let (start, n) = self.read_blocks(id, offset, len, buf, &mut crcs)?;
        if n == 0 {
            return Ok((start, 0, 0));
        }
        let end = start + n;
        let last = (end - 1) / BLOCK;
        let mut crc: Option<u32> = None;
        for (k, &block_crc) in crcs.iter().enumerate().take(last + 1) {
            let (from, to) = ((k * BLOCK).max(start), ((k + 1) * BLOCK).min(end));
            crc = Some(match crc {
                None if to - from == BLOCK => block_crc,
                None => rustre_proto::crc::crc32c(&buf[from..to]),
                Some(c) if to - from == BLOCK => crate::crc::append_4k(c, block_crc),
                Some(c) => rustre_proto::crc::crc32c_append(c, &buf[from..to]),
            });
        }
        Ok((start, n, crc.unwrap_or(0)))
    }

    /// The read itself; `crcs` gets the crc32c of every block of `buf` it filled (holes too).
    fn read_blocks(
        &self,
        id: u64,
        offset: u64,
        len: usize,
        buf: &mut [u8],
        crcs: &mut Vec<u32>,
    ) -> Result<(usize, usize), StoreError> {
        let _g = self.reuse.read();
        let head = (offset % BLOCK_U64) as usize;
        let first = offset / BLOCK_U64;
        let (n, map) = {
            let m = self.meta.lock();
            let o = m.objects.get(&id).ok_or(StoreError::NotFound(id))?;
            if offset >= o.size || len == 0 {
                return Ok((head, 0));
            }
            let n = (len as u64).min(o.size - offset) as usize;
            let nblocks = (head + n).div_ceil(BLOCK) as u64;
            let mut map: Vec<Option<(u64, u32)>> = vec![None; nblocks as usize];
            for (l, d) in o.blocks.pairs(first, first + nblocks) {
                map[(l - first) as usize] = Some((d, m.map_entry(d).crc));
            }
            (n, map)
        };
        let span = map.len() * BLOCK;
        if buf.len() < span || !(buf.as_ptr() as usize).is_multiple_of(BLOCK) {
            return Err(StoreError::Invalid {
                field: "length",
                reason: "read does not fit its buffer".into(),
            });
        }
        let buf = &mut buf[..span];
        let mut ops: Vec<IoOp<'_>> = Vec::new();
        let mut rest: &mut [u8] = &mut *buf;
        let mut i = 0;
        while i < map.len() {
            let mut j = i + 1;
            match map[i] {
                None => {
                    while j < map.len() && map[j].is_none() {
                        j += 1;
                    }
                    let (hole, r) = std::mem::take(&mut rest).split_at_mut((j - i) * BLOCK);
                    hole.fill(0);
                    rest = r;
                }
                Some((d, _)) => {
                    while j < map.len() && map[j].is_some_and(|(dj, _)| dj == d + (j - i) as u64) {
                        j += 1;
                    }
                    let (run, r) = std::mem::take(&mut rest).split_at_mut((j - i) * BLOCK);
                    ops.push(IoOp::Read {
                        offset: self.data_offset(d),
                        buf: run,
                    });
                    rest = r;
                }
            }
            i = j;
        }
        self.dev.submit(&mut ops)?;
        drop(ops);
        crcs.clear();
        for (k, entry) in map.iter().enumerate() {
            match entry {
                Some((_, crc)) => {
                    let actual = rustre_proto::crc::crc32c(&buf[k * BLOCK..(k + 1) * BLOCK]);
                    if actual != *crc {
                        return Err(StoreError::Checksum {
                            object: id,
                            block: first + k as u64,
                            stored: *crc,
                            actual,
                        });
                    }
                    crcs.push(actual);
                }
                None => crcs.push(crate::crc::zero_block()),
            }
        }
        Ok((head, n))
    }

    /// Reads up to `len` bytes at `offset` of object `id` (short at the end of the object).
    pub fn read(&self, id: u64, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        const STEP: usize = 1 << 20;
        let mut stage = AlignedBuf::new(STEP + 2 * BLOCK);
        let mut out = Vec::with_capacity(len.min(64 << 20));
        while out.len() < len {
            let want = (len - out.len()).min(STEP);
            let (start, n) = self.read_into(id, offset + out.len() as u64, want, &mut stage)?;
            out.extend_from_slice(&stage[start..start + n]);
            if n < want {
                break;
            }
        }
        Ok(out)
    }

    /// Zeroes `[from, to)` of object `id` within one block (a partial block of a punch or truncate).
    fn zero_partial(&self, id: u64, from: u64, to: u64) -> Result<(), StoreError> {
        debug_assert!(from < to && from / BLOCK_U64 == (to - 1) / BLOCK_U64);
        let mapped = {
            let m = self.meta.lock();
            let o = m.objects.get(&id).ok_or(StoreError::NotFound(id))?;
            o.blocks.contains(from / BLOCK_U64)
        };
        if !mapped {
            return Ok(());
        }
        let mut blk = AlignedBuf::new(BLOCK);
        let head = (from % BLOCK_U64) as usize;
        let len = (to - from) as usize;
        blk[head..head + len].fill(0);
        self.write_in_place(id, from, len, &mut blk)?;
        Ok(())
    }

    /// Unmaps logical blocks `[lfirst, lend)` of `id` and sets its size to `new_size` if given;
    /// returns the transaction to wait for.
    fn unmap_range(&self, id: u64, lfirst: u64, lend: u64, new_size: Option<u64>) -> Result<u64, StoreError> {
        loop {
            let mut m = self.meta.lock();
            self.check_writable()?;
            let o = m.objects.get(&id).ok_or(StoreError::NotFound(id))?;
            let slot = o.slot;
            let blocks: Vec<(u64, u64)> = o.blocks.pairs(lfirst, lend).take(self.chunk_blocks as usize).collect();
            let last_chunk = (blocks.len() as u64) < self.chunk_blocks;
            let mut set = BTreeSet::new();
            set.insert(m.slot_block(slot));
            for &(_, d) in &blocks {
                m.blocks_of_data(d, &mut set);
            }
            if m.dirty_with(&set) > self.max_txn {
                let t = m.open_txn;
                drop(m);
                self.commit_wait(t)?;
                continue;
            }
            if let (Some(&(l0, _)), Some(&(l1, _))) = (blocks.first(), blocks.last()) {
                m.unmap_range(id, l0, l1 + 1);
            }
            if let Some(o) = m.objects.get_mut(&id) {
                if last_chunk && let Some(s) = new_size {
                    o.size = s;
                }
                o.mtime_ns = now_ns();
            }
            m.store_attrs(id);
            if last_chunk {
                return Ok(m.open_txn);
            }
        }
    }

    /// Punches a hole `[offset, offset + len)` that reads as zeros; `len == u64::MAX` truncates the
    /// object to `offset` instead. Returns the object size.
    pub fn punch(&self, id: u64, offset: u64, len: u64) -> Result<u64, StoreError> {
        if len == u64::MAX {
            return self.truncate(id, offset);
        }
        self.check_writable()?;
        let size = self.getattr(id)?.size;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(size);
        }
        let first_full = offset.div_ceil(BLOCK_U64);
        let end_full = end / BLOCK_U64;
        if first_full > end_full {
            // Inside one block.
            self.zero_partial(id, offset, end)?;
            return Ok(self.getattr(id)?.size);
        }
        if !offset.is_multiple_of(BLOCK_U64) {
            self.zero_partial(id, offset, first_full * BLOCK_U64)?;
        }
        if end % BLOCK_U64 != 0 {
            self.zero_partial(id, end_full * BLOCK_U64, end)?;
        }
        let txn = self.unmap_range(id, first_full, end_full, None)?;
        self.commit_wait(txn)?;
        Ok(self.getattr(id)?.size)
    }

    /// Sets the size of object `id`, freeing everything beyond it. Returns the new size.
    pub fn truncate(&self, id: u64, size: u64) -> Result<u64, StoreError> {
        self.check_writable()?;
        if size > MAX_OBJECT_SIZE {
            return Err(StoreError::Invalid {
                field: "offset",
                reason: format!("size beyond {MAX_OBJECT_SIZE}"),
            });
        }
        let old = self.getattr(id)?.size;
        if size < old && !size.is_multiple_of(BLOCK_U64) {
            // Bytes past the end of the last block must read as zeros if the object grows again.
            let to = old.min(size.div_ceil(BLOCK_U64) * BLOCK_U64);
            self.zero_partial(id, size, to)?;
        }
        let txn = self.unmap_range(id, size.div_ceil(BLOCK_U64), u64::MAX, Some(size))?;
        self.commit_wait(txn)?;
        Ok(size)
    }

    /// Destroys object `id`, freeing its blocks.
    pub fn destroy(&self, id: u64) -> Result<(), StoreError> {
        self.check_writable()?;
        self.unmap_range(id, 0, u64::MAX, None)?;
        let txn = {
            let mut m = self.meta.lock();
            if !m.objects.contains_key(&id) {
                return Err(StoreError::NotFound(id));
            }
            if m.dirty.len() + 1 > self.max_txn {
                let t = m.open_txn;
                drop(m);
                self.commit_wait(t)?;
                m = self.meta.lock();
            }
            // The blocks were unmapped above; a racing writer may have mapped new ones.
            if m.objects.get(&id).is_some_and(|o| !o.blocks.is_empty()) {
                drop(m);
                return self.destroy(id);
            }
            m.remove_object(id);
            m.open_txn
        };
        self.commit_wait(txn)
    }
}
