//! Strided read-ahead (`read_ahead_bytes` in the client configuration; off by default).
//!
//! A rank reading small records at a fixed stride (IO500's ior-hard, an MPI N-1 strided read,
//! a sequential read in small records) pays one round trip and one OST RPC per record. With
//! read-ahead on, once a handle's reads show the pattern (three reads of one length, the last
//! two the same distance apart), the next read that is not already at hand fetches its record
//! and the records after it at the stride, as many as the limit allows. The records' pieces go
//! to each OST object as multi-range reads: up to [`MAX_IO_RANGES`] ranges in one RPC's bulk
//! (one round trip, one push). The records then come from the handle's window while the reads
//! keep to the pattern; a read off the pattern empties the window and reads as usual.
//!
//! What stays true:
//! - Bounded: the bytes held by the windows of all handles of the client never exceed the
//!   limit; a fetch takes what is free, and a read that finds too little reads as usual. A fetch
//!   that finds the limit taken first empties the windows of other handles unread for a second,
//!   so a handle that stopped reading does not keep its window from the others.
//! - Read-your-writes within the client: every write, truncate and `O_TRUNC` open of a file by
//!   this client counts a change of the file when it starts and when it ends (write-behind's:
//!   when it is acknowledged). A window whose file changed since it was filled is emptied
//!   unread.
//! - Only whole records are kept: a record some of whose bytes are past the end of an object
//!   (the end of the file, or a hole at the end of a stripe's object) is read as usual when
//!   asked for, as is anything a failed fetch should have brought.
//! - `fsync` and `close` empty the handle's window.
//!
//! Other clients' writes: a window holds the bytes as they were when it was filled, until the
//! handle reads them, or `fsync` or `close` empties it. That is MPI-IO's visibility (a write is
//! seen by a reader after the writer's sync and the reader's own), weaker than the design's
//! default of every read asking the OSTs, which is why it is opt-in.

use crate::client::{Client, OpenFile};
use crate::error::Result;
use crate::io::{Piece, fan_out, plan};
use crate::layout::FileLayout;
use crate::types::Fid;
use parking_lot::Mutex;
use rustre_proto::request::ost::MAX_IO_RANGES;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An OST block: ranges occupy whole blocks of the OST's I/O buffer.
const BLOCK: u64 = 4096;

/// Slots of the change counters (files hash into them; two files sharing one only empty each
/// other's windows more often).
const CHANGE_SLOTS: usize = 64;

/// Most records one fetch brings.
const MAX_RECORDS: u64 = 4096;

/// A window unread for this long gives its bytes up to a handle whose fetch finds the limit
/// taken.
const IDLE: Duration = Duration::from_secs(1);

/// Counts the changes this client makes to files' data, by file.
pub(crate) struct FileChanges {
    slots: [AtomicU64; CHANGE_SLOTS],
}

impl FileChanges {
    pub(crate) fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn slot(&self, fid: Fid) -> &AtomicU64 {
        let h = (fid.ino ^ u64::from(fid.generation).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.slots[(h >> 58) as usize % CHANGE_SLOTS]
    }

    /// Counts a change of `fid` (its start or its end).
    pub(crate) fn bump(&self, fid: Fid) {
        self.slot(fid).fetch_add(1, Ordering::AcqRel);
    }

    fn count(&self, fid: Fid) -> u64 {
        self.slot(fid).load(Ordering::Acquire)
    }

    /// A change of `fid` from now until the guard drops.
    pub(crate) fn changing(self: &Arc<Self>, fid: Fid) -> ChangeGuard {
        self.bump(fid);
        ChangeGuard {
            changes: Arc::clone(self),
            fid,
        }
    }
}

/// See [`FileChanges::changing`].
pub(crate) struct ChangeGuard {
    changes: Arc<FileChanges>,
    fid: Fid,
}

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        self.changes.bump(self.fid);
    }
}

/// Counters of read-ahead since the client connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadAheadStats {
    /// Read RPCs sent by fetches.
    pub rpcs: u64,
    /// Whole records those fetches brought.
    pub records: u64,
    /// Reads served from a window.
    pub hits: u64,
}

/// The read-ahead of one client: its limit, the bytes its windows hold, and its counters.
pub(crate) struct ReadAhead {
    limit: u64,
    held: AtomicU64,
    pub(crate) changes: Arc<FileChanges>,
    rpcs: AtomicU64,
    records: AtomicU64,
    hits: AtomicU64,
}

impl ReadAhead {
    /// Windows of at most `limit` bytes in all (0: read-ahead is off).
    pub(crate) fn new(limit: u64, changes: Arc<FileChanges>) -> Self {
        Self {
            limit,
            held: AtomicU64::new(0),
            changes,
            rpcs: AtomicU64::new(0),
            records: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Whether read-ahead is on.
    pub(crate) fn on(&self) -> bool {
        self.limit > 0
    }

    pub(crate) fn stats(&self) -> ReadAheadStats {
        ReadAheadStats {
            rpcs: self.rpcs.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    /// Takes up to `want` bytes of the limit; the charge gives them back when dropped.
    fn reserve(self: &Arc<Self>, want: u64) -> Charge {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let take = want.min(self.limit.saturating_sub(held));
            match self
                .held
                .compare_exchange_weak(held, held + take, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Charge {
                        ra: Arc::clone(self),
                        bytes: take,
                    };
                }
                Err(now) => held = now,
            }
        }
    }

    /// Bytes the windows hold now.
    #[cfg(test)]
    fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// Bytes of the limit a window holds.
struct Charge {
    ra: Arc<ReadAhead>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.ra.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// One handle's read pattern and window.
#[derive(Default)]
pub(crate) struct Window {
    /// The last read: offset and length.
    last: Option<(u64, usize)>,
    /// The distance between the last two reads, when they had one length.
    stride: Option<u64>,
    fetched: Option<Fetched>,
}

impl Window {
    /// Notes a read; the stride when it continues a pattern (the third read of one length at
    /// one distance, or a later one).
    fn note(&mut self, offset: u64, len: usize) -> Option<u64> {
        let stride = match self.last {
            Some((o, l)) if l == len && offset >= o + len as u64 => Some(offset - o),
            _ => None,
        };
        let continues = stride.is_some() && stride == self.stride;
        self.last = Some((offset, len));
        self.stride = stride;
        if continues { stride } else { None }
    }

    /// Record `k` of the window was read: the window keeps the records after it (none left:
    /// it is emptied, giving its bytes back).
    fn passed(&mut self, k: u64) {
        if let Some(f) = &mut self.fetched {
            f.next = k + 1;
            if f.next >= f.records.len() as u64 {
                self.fetched = None;
            }
        }
    }

    /// Empties the window (`fsync`, `close`).
    pub(crate) fn clear(&mut self) {
        self.fetched = None;
    }
}

/// Where a piece of a record is: (batch, offset in it, length).
type Segment = (usize, usize, usize);

/// Records fetched ahead: record `k` is `len` bytes at `first + k * stride`.
struct Fetched {
    /// The file's change count when the fetch started.
    change: u64,
    first: u64,
    stride: u64,
    len: usize,
    /// Records before this one were read (or skipped).
    next: u64,
    /// When the window was filled or last read from.
    used: Instant,
    /// Where each record's bytes are, in order: (batch, offset in it, length); `None` for a
    /// record not whole.
    records: Vec<Option<Vec<Segment>>>,
    batches: Vec<Vec<u8>>,
    _charge: Charge,
}

impl Fetched {
    /// What the window holds for a read of `len` bytes at `offset`.
    fn find(&self, offset: u64, len: usize) -> Found {
        if len != self.len || offset < self.first || !(offset - self.first).is_multiple_of(self.stride) {
            return Found::Miss;
        }
        let k = (offset - self.first) / self.stride;
        match usize::try_from(k).ok().and_then(|i| self.records.get(i)) {
            Some(_) if k < self.next => Found::Miss,
            Some(Some(_)) => Found::Whole(k),
            Some(None) => Found::Part(k),
            None => Found::Miss,
        }
    }

    /// Copies record `k` (whole) into `out`.
    fn copy(&self, k: u64, out: &mut [u8]) {
        let Some(Some(segments)) = self.records.get(k as usize) else {
            return;
        };
        let mut at = 0;
        for &(b, from, n) in segments {
            out[at..at + n].copy_from_slice(&self.batches[b][from..from + n]);
            at += n;
        }
    }
}

/// What a window holds for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Record `k`, whole.
    Whole(u64),
    /// Record `k` of the pattern, not whole: read as usual, the window stays.
    Part(u64),
    /// Not a record of the window (or one already passed).
    Miss,
}

/// One multi-range read: ranges of one object, and which record part each range's bytes are.
struct Batch {
    stripe: u32,
    /// (object offset, length) of each range, ascending.
    ranges: Vec<(u64, usize)>,
    /// For each record piece in the batch, in order: (record, piece of the record, length).
    parts: Vec<(usize, usize, usize)>,
    /// Whole blocks the ranges take in the OST's buffer.
    span: u64,
}

impl Batch {
    fn total(&self) -> usize {
        self.ranges.iter().map(|r| r.1).sum()
    }
}

/// A piece of a record: (record, which piece of the record, the piece).
type PieceOf = (usize, usize, Piece);

fn blocks(offset: u64, len: usize) -> u64 {
    (offset % BLOCK + len as u64).div_ceil(BLOCK) * BLOCK
}

/// Cuts the pieces of records (`pieces[k]`: record `k`'s, in its byte order) into multi-range
/// reads: per object, ascending, at most [`MAX_IO_RANGES`] ranges and `budget` bytes of whole
/// blocks each; touching pieces join one range.
fn batches(pieces: &[Vec<Piece>], budget: u64) -> Vec<Batch> {
    let mut by_stripe: Vec<(u32, Vec<PieceOf>)> = Vec::new();
    for (k, rec) in pieces.iter().enumerate() {
        for (j, p) in rec.iter().enumerate() {
            match by_stripe.iter_mut().find(|(s, _)| *s == p.stripe) {
                Some((_, v)) => v.push((k, j, *p)),
                None => by_stripe.push((p.stripe, vec![(k, j, *p)])),
            }
        }
    }
    let mut out: Vec<Batch> = Vec::new();
    for (stripe, list) in by_stripe {
        let mut cur: Option<Batch> = None;
        for (k, j, p) in list {
            if let Some(b) = cur.as_mut()
                && let Some(last) = b.ranges.last_mut()
                && last.0 + last.1 as u64 == p.object_offset
            {
                let joined = blocks(last.0, last.1 + p.len);
                let grown = b.span - blocks(last.0, last.1) + joined;
                if grown <= budget {
                    last.1 += p.len;
                    b.span = grown;
                    b.parts.push((k, j, p.len));
                    continue;
                }
            }
            let span = blocks(p.object_offset, p.len);
            let fits = cur
                .as_ref()
                .is_some_and(|b| b.ranges.len() < MAX_IO_RANGES && b.span + span <= budget);
            if !fits {
                out.extend(cur.take());
                cur = Some(Batch {
                    stripe,
                    ranges: Vec::new(),
                    parts: Vec::new(),
                    span: 0,
                });
            }
            if let Some(b) = cur.as_mut() {
                b.ranges.push((p.object_offset, p.len));
                b.parts.push((k, j, p.len));
                b.span += span;
            }
        }
        out.extend(cur);
    }
    out
}

impl Client {
    /// Read-ahead's part of `pread` (see the module documentation): `Some(n)` when the read was
    /// served from the handle's window, `None` when it is to be read as usual.
    pub(crate) fn read_ahead(
        &self,
        file: &OpenFile,
        layout: &FileLayout,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<Option<usize>> {
        let len = buf.len();
        let change = self.ahead.changes.count(file.fid);
        let stride = {
            let mut w = file.ahead.lock();
            let found = match &w.fetched {
                Some(f) if f.change == change => f.find(offset, len),
                _ => Found::Miss,
            };
            match (found, w.fetched.as_mut()) {
                (Found::Whole(k), Some(f)) => {
                    f.copy(k, buf);
                    f.used = Instant::now();
                    self.ahead.hits.fetch_add(1, Ordering::Relaxed);
                    w.passed(k);
                    w.note(offset, len);
                    return Ok(Some(len));
                }
                (Found::Part(k), Some(_)) => {
                    w.passed(k);
                    w.note(offset, len);
                    return Ok(None);
                }
                _ => w.fetched = None,
            }
            match w.note(offset, len) {
                Some(s) => s,
                None => return Ok(None),
            }
        };
        // Records that start inside the file as this handle knows it, as many as the limit has
        // room for; fewer than two is not worth a fetch.
        let known = file
            .size_seen
            .load(Ordering::Relaxed)
            .max(file.size_hint.load(Ordering::Relaxed));
        if offset >= known {
            return Ok(None);
        }
        let count = ((known - offset).div_ceil(stride)).min(MAX_RECORDS);
        let want = count.saturating_mul(len as u64);
        let mut charge = self.ahead.reserve(want);
        if charge.bytes < want && self.free_idle_windows(file) {
            drop(charge);
            charge = self.ahead.reserve(want);
        }
        let count = charge.bytes / len as u64;
        if count < 2 {
            return Ok(None);
        }
        let fetched = match self.fetch(file, layout, offset, stride, len, count, change, charge) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %file.path, offset, error = %e, "read-ahead failed; reading as usual");
                return Ok(None);
            }
        };
        let first = fetched.find(offset, len);
        if first == Found::Whole(0) {
            fetched.copy(0, buf);
        }
        let mut w = file.ahead.lock();
        w.fetched = Some(fetched);
        w.passed(0);
        Ok((first == Found::Whole(0)).then_some(len))
    }

    /// Empties the windows of this client's other handles that have not been read for
    /// [`IDLE`] (a handle whose window is in use at this moment keeps it); true if any was.
    fn free_idle_windows(&self, me: &OpenFile) -> bool {
        let mut freed = false;
        for f in self.open_files() {
            if std::ptr::eq(&*f, me) {
                continue;
            }
            if let Some(mut w) = f.ahead.try_lock()
                && w.fetched.as_ref().is_some_and(|x| x.used.elapsed() >= IDLE)
            {
                w.clear();
                freed = true;
            }
        }
        freed
    }

    /// Fetches `count` records of `len` bytes from `first` at `stride` with multi-range reads.
    #[allow(clippy::too_many_arguments)]
    fn fetch(
        &self,
        file: &OpenFile,
        layout: &FileLayout,
        first: u64,
        stride: u64,
        len: usize,
        count: u64,
        change: u64,
        charge: Charge,
    ) -> Result<Fetched> {
        let mut pieces = Vec::with_capacity(count as usize);
        for k in 0..count {
            let offset = stride
                .checked_mul(k)
                .and_then(|d| first.checked_add(d))
                .filter(|o| o.checked_add(len as u64).is_some());
            let Some(offset) = offset else { break };
            pieces.push(plan(&layout.geometry, offset, len, self.max_rpc)?);
        }
        let plan = batches(&pieces, self.max_rpc);
        let mut buffers: Vec<Vec<u8>> = plan.iter().map(|b| vec![0u8; b.total()]).collect();
        let got: Vec<Mutex<usize>> = plan.iter().map(|_| Mutex::new(0)).collect();
        let jobs: Vec<(Piece, (usize, &mut Vec<u8>))> = buffers
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| {
                let p = Piece {
                    stripe: plan[i].stripe,
                    object_offset: 0,
                    buf_offset: 0,
                    len: buf.len(),
                };
                (p, (i, buf))
            })
            .collect();
        fan_out(
            &self.pool,
            jobs,
            self.config.limits.max_inflight_per_ost,
            self.io_threads(),
            &|_, (i, buf)| {
                *got[i].lock() = self.read_object(file, layout, plan[i].stripe, &plan[i].ranges, buf)?.0;
                Ok(())
            },
        )?;
        self.ahead.rpcs.fetch_add(plan.len() as u64, Ordering::Relaxed);
        // Where each piece of each record came, if it came in full; a record is whole when
        // all its pieces did.
        let mut segments: Vec<Vec<Option<Segment>>> = pieces.iter().map(|rec| vec![None; rec.len()]).collect();
        for (i, b) in plan.iter().enumerate() {
            let n = *got[i].lock();
            let mut at = 0usize;
            for &(k, j, plen) in &b.parts {
                if at + plen <= n {
                    segments[k][j] = Some((i, at, plen));
                }
                at += plen;
            }
        }
        let records: Vec<Option<Vec<Segment>>> = segments
            .into_iter()
            .map(|rec| rec.into_iter().collect::<Option<Vec<_>>>())
            .collect();
        let whole = records.iter().filter(|r| r.is_some()).count();
        self.ahead.records.fetch_add(whole as u64, Ordering::Relaxed);
        Ok(Fetched {
            change,
            first,
            stride,
            len,
            next: 0,
            used: Instant::now(),
            records,
            batches: buffers,
            _charge: charge,
        })
    }

    /// Read-ahead's counters.
    pub fn read_ahead_stats(&self) -> ReadAheadStats {
        self.ahead.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(stripe: u32, object_offset: u64, len: usize) -> Piece {
        Piece {
            stripe,
            object_offset,
            buf_offset: 0,
            len,
        }
    }

    #[test]
    fn a_pattern_is_three_reads_of_one_length_at_one_distance() {
        let mut w = Window::default();
        assert_eq!(w.note(0, 100), None);
        assert_eq!(w.note(300, 100), None);
        assert_eq!(w.note(600, 100), Some(300));
        assert_eq!(w.note(900, 100), Some(300));
        // Another length, a step back, an overlap: the pattern starts over.
        assert_eq!(w.note(1200, 50), None);
        assert_eq!(w.note(1250, 50), None);
        assert_eq!(w.note(1300, 50), Some(50));
        assert_eq!(w.note(0, 50), None);
        assert_eq!(w.note(20, 50), None);
        assert_eq!(w.note(40, 50), None);
    }

    #[test]
    fn batches_keep_to_the_object_the_ranges_and_the_budget() {
        // Records of 10000 bytes every 30000 on one object, then a record split over two.
        let mut pieces: Vec<Vec<Piece>> = (0..100u64).map(|k| vec![piece(0, k * 30_000, 10_000)]).collect();
        pieces.push(vec![piece(0, 3_000_000, 5_000), piece(1, 0, 5_000)]);
        let b = batches(&pieces, 256 * 1024);
        for x in &b {
            assert!(x.ranges.len() <= MAX_IO_RANGES);
            assert!(x.span <= 256 * 1024);
            let span: u64 = x.ranges.iter().map(|&(o, l)| blocks(o, l)).sum();
            assert_eq!(span, x.span);
            assert!(x.ranges.windows(2).all(|w| w[0].0 + w[0].1 as u64 <= w[1].0));
        }
        let parts: usize = b.iter().map(|x| x.parts.len()).sum();
        assert_eq!(parts, 102);
        assert_eq!(b.iter().filter(|x| x.stripe == 1).count(), 1);
        // Touching pieces (a sequential read) join one range.
        let seq: Vec<Vec<Piece>> = (0..16u64).map(|k| vec![piece(0, k * 4000, 4000)]).collect();
        let b = batches(&seq, 1 << 20);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].ranges, [(0, 64_000)]);
        assert_eq!(b[0].parts.len(), 16);
    }

    #[test]
    fn the_limit_bounds_what_windows_hold() {
        let ra = Arc::new(ReadAhead::new(100_000, Arc::new(FileChanges::new())));
        let a = ra.reserve(70_000);
        let b = ra.reserve(70_000);
        assert_eq!((a.bytes, b.bytes, ra.held()), (70_000, 30_000, 100_000));
        assert_eq!(ra.reserve(1).bytes, 0);
        drop(a);
        assert_eq!(ra.held(), 30_000);
        drop(b);
        assert_eq!(ra.held(), 0);
    }

    #[test]
    fn changes_are_counted_at_start_and_end() {
        let c = Arc::new(FileChanges::new());
        let f = Fid { ino: 9, generation: 1 };
        let before = c.count(f);
        let g = c.changing(f);
        assert_eq!(c.count(f), before + 1);
        drop(g);
        assert_eq!(c.count(f), before + 2);
    }
}
