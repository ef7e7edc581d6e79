//! Write-behind (`write_behind_bytes` in the client configuration; off by default).
//!
//! With it on, a `pwrite` of at most one RPC's bulk copies the caller's bytes, starts the OST
//! RPCs on the client's I/O threads and returns: the application's next record is prepared
//! while the last one travels, which is what a rank writing small interleaved records (MPI N-1
//! strided, IO500's ior-hard) waits on otherwise, one round trip per record. This is the
//! client-side half of a page cache's write-back, without the cache: nothing is kept once the
//! OST has acknowledged it.
//!
//! What stays true:
//! - Bounded: the bytes copied and not yet acknowledged never exceed the configured limit (each
//!   write counts at least 4 KiB, which also bounds how many are pending); a write that does not
//!   fit waits for room.
//! - Order: a write waits until no pending write of this client overlaps its range in the same
//!   file, so overlapping writes reach the OSTs in the order they were made.
//! - Read-your-writes within the client: `pread`, `fstat`, `ftruncate`, `fsync` and `close` of a
//!   file first wait for its pending writes (by file id, whichever handle made them); `stat`,
//!   `unlink` and `disconnect` wait for all of them.
//! - Errors are not lost: a pending write that fails records its error on the handle that made
//!   it. The handle's next `pwrite` fails with it, and `fsync` and `close` report it (once), as a
//!   local file system reports a failed write-back.
//!
//! Other clients see a write once it is acknowledged, at the latest when `fsync` or `close`
//! returns: the visibility MPI-IO promises, weaker than an acknowledged-on-return write.
//!
//! Gathering: the pieces of returned writes wait in one queue for a sender, an I/O-thread loop
//! (at most `max_inflight_per_ost` of them run). A sender takes the oldest piece and every other
//! queued piece of the same object, up to one RPC's bulk in whole blocks and
//! [`MAX_IO_RANGES`] ranges, and writes them with one multi-range RPC (one round trip and one
//! journal commit on the OST). While the senders wait for their replies the queue fills, so the
//! batches grow with the load: a rank writing interleaved records sends several per RPC.

use crate::ahead::FileChanges;
use crate::client::OpenFile;
use crate::rpc::Endpoint;
use crate::types::Fid;
use parking_lot::{Condvar, Mutex};
use rustre_proto::request::ost::MAX_IO_RANGES;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An OST block: the unit a write's bytes occupy on the OST.
const BLOCK: u64 = 4096;

/// Smallest amount one pending write counts against the limit.
const MIN_CHARGE: u64 = BLOCK;

/// The pending writes of one client (see the module documentation).
pub(crate) struct WriteBehind {
    limit: u64,
    state: Mutex<State>,
    changed: Condvar,
    /// Pieces waiting for a sender, and the senders running.
    queue: Mutex<SendQueue>,
    max_senders: usize,
    /// Write RPCs sent for returned writes, and the pieces they carried.
    rpcs: AtomicU64,
    pieces: AtomicU64,
    /// Where the writes' ends are counted (module `ahead`).
    changes: Arc<FileChanges>,
}

struct SendQueue {
    items: VecDeque<Queued>,
    senders: usize,
}

/// One piece (one object's part) of a returned write, waiting for a sender.
pub(crate) struct Queued {
    pub(crate) file: Arc<OpenFile>,
    pub(crate) ep: Arc<Endpoint>,
    pub(crate) stripe: u32,
    pub(crate) object_offset: u64,
    pub(crate) data: Vec<u8>,
    /// The write it belongs to; pending until its last piece is done.
    pub(crate) write: Arc<Ticket>,
}

/// Counters of write-behind since the client connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBehindStats {
    /// Write RPCs sent for writes that had returned.
    pub rpcs: u64,
    /// Pieces of writes (one object's part of one write each) those RPCs carried: more than
    /// `rpcs` when pieces were gathered.
    pub pieces: u64,
}

struct State {
    /// Bytes counted by the pending writes.
    bytes: u64,
    pending: Vec<Pending>,
    next_id: u64,
}

struct Pending {
    id: u64,
    fid: Fid,
    start: u64,
    end: u64,
    charge: u64,
}

impl Pending {
    fn overlaps(&self, fid: Fid, start: u64, end: u64) -> bool {
        self.fid == fid && self.start < end && start < self.end
    }
}

/// A write admitted by [`WriteBehind::admit`]; dropping it (once its outcome is recorded, or
/// when the write panicked) removes it from the pending set.
pub(crate) struct Ticket {
    wb: Arc<WriteBehind>,
    id: u64,
    /// The write's file offset and length, for error messages.
    pub(crate) offset: u64,
    pub(crate) len: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.wb.state.lock();
        if let Some(i) = st.pending.iter().position(|p| p.id == self.id) {
            let p = st.pending.swap_remove(i);
            st.bytes -= p.charge;
            // The write's end, for read-ahead windows filled while it was pending.
            self.wb.changes.bump(p.fid);
        }
        drop(st);
        self.wb.changed.notify_all();
    }
}

impl WriteBehind {
    /// Pending writes of at most `limit` bytes in all (0: write-behind is off), sent by at most
    /// `max_senders` I/O threads at once; each write's end is counted in `changes`.
    pub(crate) fn new(limit: u64, max_senders: usize, changes: Arc<FileChanges>) -> Self {
        Self {
            limit,
            state: Mutex::new(State {
                bytes: 0,
                pending: Vec::new(),
                next_id: 0,
            }),
            changed: Condvar::new(),
            queue: Mutex::new(SendQueue {
                items: VecDeque::new(),
                senders: 0,
            }),
            max_senders: max_senders.max(1),
            rpcs: AtomicU64::new(0),
            pieces: AtomicU64::new(0),
            changes,
        }
    }

    /// Queues a returned write's pieces; true when the caller must start a sender for them.
    pub(crate) fn enqueue(&self, items: Vec<Queued>) -> bool {
        let mut q = self.queue.lock();
        q.items.extend(items);
        if q.senders < self.max_senders {
            q.senders += 1;
            return true;
        }
        false
    }

    /// A sender's next batch: the oldest queued piece and the other queued pieces of its object,
    /// ascending, within `budget` bytes in whole blocks and [`MAX_IO_RANGES`] ranges. None when
    /// the queue is empty: the sender then stops (and is counted out).
    pub(crate) fn next_batch(&self, budget: u64) -> Option<Vec<Queued>> {
        let mut q = self.queue.lock();
        let Some(first) = q.items.pop_front() else {
            q.senders -= 1;
            return None;
        };
        let span = |i: &Queued| (i.object_offset % BLOCK + i.data.len() as u64).div_ceil(BLOCK) * BLOCK;
        let mut used = span(&first);
        let (fid, stripe) = (first.file.fid, first.stripe);
        let mut batch = vec![first];
        let mut k = 0;
        while k < q.items.len() && batch.len() < MAX_IO_RANGES {
            let it = &q.items[k];
            if it.file.fid == fid && it.stripe == stripe && used + span(it) <= budget {
                used += span(it);
                if let Some(it) = q.items.remove(k) {
                    batch.push(it);
                }
            } else {
                k += 1;
            }
        }
        drop(q);
        batch.sort_by_key(|i| i.object_offset);
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        self.pieces.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Some(batch)
    }

    /// The counters.
    pub(crate) fn stats(&self) -> WriteBehindStats {
        WriteBehindStats {
            rpcs: self.rpcs.load(Ordering::Relaxed),
            pieces: self.pieces.load(Ordering::Relaxed),
        }
    }

    /// Largest write that may go behind: `max_rpc` bytes, and no more than the limit.
    pub(crate) fn max_write(&self, max_rpc: u64) -> u64 {
        self.limit.min(max_rpc)
    }

    /// Waits until `start..end` of `fid` overlaps no pending write and the limit has room for
    /// it, then counts it as pending. The ticket's id is what [`WriteBehind::finish`] takes.
    pub(crate) fn admit(&self, fid: Fid, start: u64, end: u64) -> u64 {
        let charge = (end - start).max(MIN_CHARGE);
        let mut st = self.state.lock();
        loop {
            let room = st.bytes == 0 || st.bytes + charge <= self.limit;
            if room && !st.pending.iter().any(|p| p.overlaps(fid, start, end)) {
                break;
            }
            self.changed.wait(&mut st);
        }
        let id = st.next_id;
        st.next_id += 1;
        st.bytes += charge;
        st.pending.push(Pending {
            id,
            fid,
            start,
            end,
            charge,
        });
        id
    }

    /// The ticket of the admitted write `id` (`len` bytes at `offset`): dropping it ends the
    /// write.
    pub(crate) fn ticket(self: &Arc<Self>, id: u64, offset: u64, len: usize) -> Ticket {
        Ticket {
            wb: Arc::clone(self),
            id,
            offset,
            len,
        }
    }

    /// Waits until no pending write overlaps `start..end` of `fid`.
    pub(crate) fn wait_clear(&self, fid: Fid, start: u64, end: u64) {
        let mut st = self.state.lock();
        while st.pending.iter().any(|p| p.overlaps(fid, start, end)) {
            self.changed.wait(&mut st);
        }
    }

    /// Waits until no write of `fid` (of any file: `None`) is pending.
    pub(crate) fn drain(&self, fid: Option<Fid>) {
        let mut st = self.state.lock();
        while st.pending.iter().any(|p| fid.is_none_or(|f| p.fid == f)) {
            self.changed.wait(&mut st);
        }
    }

    /// Bytes counted by the pending writes now.
    #[cfg(test)]
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    fn fid(n: u64) -> Fid {
        Fid { ino: n, generation: 1 }
    }

    /// Runs `f` on another thread; true when it has not returned after a while.
    fn blocks(f: impl FnOnce() + Send + 'static) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let h = std::thread::spawn(move || {
            f();
            d.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        (done, h)
    }

    #[test]
    fn the_limit_bounds_pending_bytes() {
        let wb = Arc::new(WriteBehind::new(64 << 10, 1, Arc::new(FileChanges::new())));
        let a = wb.admit(fid(2), 0, 40 << 10);
        // A small write counts at least 4 KiB.
        let b = wb.admit(fid(2), 1 << 20, (1 << 20) + 1);
        assert_eq!(wb.pending_bytes(), (40 << 10) + 4096);
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || {
            let c = w.admit(fid(3), 0, 32 << 10);
            drop(w.ticket(c, 0, 0));
        });
        assert!(!done.load(Ordering::SeqCst), "a write past the limit must wait");
        drop(wb.ticket(a, 0, 0));
        h.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        drop(wb.ticket(b, 0, 0));
        assert_eq!(wb.pending_bytes(), 0);
        // One write larger than the limit still goes when nothing else is pending.
        let big = wb.admit(fid(2), 0, 1 << 20);
        drop(wb.ticket(big, 0, 0));
    }

    #[test]
    fn overlapping_writes_wait_their_turn() {
        let wb = Arc::new(WriteBehind::new(1 << 20, 1, Arc::new(FileChanges::new())));
        let a = wb.admit(fid(2), 100, 200);
        // Same range of another file, and a neighbouring range of the same file: no wait.
        let b = wb.admit(fid(3), 100, 200);
        let c = wb.admit(fid(2), 200, 300);
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || {
            let d = w.admit(fid(2), 150, 160);
            drop(w.ticket(d, 0, 0));
        });
        assert!(!done.load(Ordering::SeqCst), "an overlapping write must wait");
        drop(wb.ticket(a, 0, 0));
        h.join().unwrap();
        // wait_clear and drain look at the file asked for only.
        wb.wait_clear(fid(2), 0, 200);
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || w.drain(Some(fid(2))));
        assert!(!done.load(Ordering::SeqCst));
        drop(wb.ticket(c, 0, 0));
        h.join().unwrap();
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || w.drain(None));
        assert!(!done.load(Ordering::SeqCst));
        drop(wb.ticket(b, 0, 0));
        h.join().unwrap();
        assert_eq!(wb.pending_bytes(), 0);
    }
}
