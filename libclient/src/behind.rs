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

use crate::types::Fid;
use parking_lot::{Condvar, Mutex};

/// Smallest amount one pending write counts against the limit.
const MIN_CHARGE: u64 = 4096;

/// The pending writes of one client (see the module documentation).
pub(crate) struct WriteBehind {
    limit: u64,
    state: Mutex<State>,
    changed: Condvar,
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

/// A write admitted by [`WriteBehind::admit`]; finishing it (or dropping it, when the write
/// panicked) removes it from the pending set.
pub(crate) struct Ticket<'a> {
    wb: &'a WriteBehind,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut st = self.wb.state.lock();
        if let Some(i) = st.pending.iter().position(|p| p.id == self.id) {
            let p = st.pending.swap_remove(i);
            st.bytes -= p.charge;
        }
        drop(st);
        self.wb.changed.notify_all();
    }
}

impl WriteBehind {
    /// Pending writes of at most `limit` bytes in all (0: write-behind is off).
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            state: Mutex::new(State {
                bytes: 0,
                pending: Vec::new(),
                next_id: 0,
            }),
            changed: Condvar::new(),
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

    /// The ticket of the admitted write `id`: dropping it ends the write.
    pub(crate) fn ticket(&self, id: u64) -> Ticket<'_> {
        Ticket { wb: self, id }
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
        let wb = Arc::new(WriteBehind::new(64 << 10));
        let a = wb.admit(fid(2), 0, 40 << 10);
        // A small write counts at least 4 KiB.
        let b = wb.admit(fid(2), 1 << 20, (1 << 20) + 1);
        assert_eq!(wb.pending_bytes(), (40 << 10) + 4096);
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || {
            let c = w.admit(fid(3), 0, 32 << 10);
            drop(w.ticket(c));
        });
        assert!(!done.load(Ordering::SeqCst), "a write past the limit must wait");
        drop(wb.ticket(a));
        h.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        drop(wb.ticket(b));
        assert_eq!(wb.pending_bytes(), 0);
        // One write larger than the limit still goes when nothing else is pending.
        let big = wb.admit(fid(2), 0, 1 << 20);
        drop(wb.ticket(big));
    }

    #[test]
    fn overlapping_writes_wait_their_turn() {
        let wb = Arc::new(WriteBehind::new(1 << 20));
        let a = wb.admit(fid(2), 100, 200);
        // Same range of another file, and a neighbouring range of the same file: no wait.
        let b = wb.admit(fid(3), 100, 200);
        let c = wb.admit(fid(2), 200, 300);
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || {
            let d = w.admit(fid(2), 150, 160);
            drop(w.ticket(d));
        });
        assert!(!done.load(Ordering::SeqCst), "an overlapping write must wait");
        drop(wb.ticket(a));
        h.join().unwrap();
        // wait_clear and drain look at the file asked for only.
        wb.wait_clear(fid(2), 0, 200);
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || w.drain(Some(fid(2))));
        assert!(!done.load(Ordering::SeqCst));
        drop(wb.ticket(c));
        h.join().unwrap();
        let w = Arc::clone(&wb);
        let (done, h) = blocks(move || w.drain(None));
        assert!(!done.load(Ordering::SeqCst));
        drop(wb.ticket(b));
        h.join().unwrap();
        assert_eq!(wb.pending_bytes(), 0);
    }
}
