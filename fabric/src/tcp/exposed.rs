//! Connection bookkeeping shared by the stream (tcp) and in-process (sim) providers: client memory
//! exposed for one call ([`RegionTable`]), calls waiting for their reply ([`Pending`]) and
//! credit-based flow control ([`Credits`]).
//!
//! The revocation rule: a region is reachable only through [`RegionTable`]; every access happens
//! with the region's `live` lock held and checks `live` first; [`Exposure`] (the call's handle)
//! removes the region from the table and then takes `live` and clears it before the call returns.
//! After that, nothing can reach the memory again, so the borrow the call was given may end.

use crate::{Bulk, FabricError, Reply};
use crossbeam::channel::{Receiver, Sender, bounded};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One exposed buffer.
struct Region {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    /// True while the owning call runs; cleared (under this lock) before the call returns.
    live: Mutex<bool>,
    /// The first access refused (out of range, wrong direction), for the call to report.
    refused: Mutex<Option<Refusal>>,
    /// A posted push (one the server does not wait to hear acknowledged) reached this region:
    /// a refusal must then fail the call here, as the server cannot.
    posted: std::sync::atomic::AtomicBool,
}

// SAFETY: `ptr` is only dereferenced with `live` locked and true, i.e. while the call that lent the
// buffer is still blocked inside `call_bulk` (see the module doc); the buffer itself is `Send`/`Sync`
// plain bytes, so touching it from another thread during that window is sound.
unsafe impl Send for Region {}
// SAFETY: as above; concurrent accesses are serialised by the `live` lock.
unsafe impl Sync for Region {}

/// The exposed regions of one connection, keyed by a random per-call rkey.
pub(crate) struct RegionTable {
    map: Mutex<HashMap<u32, Arc<Region>>>,
}

/// An unpredictable key: a counter hashed with SipHash under a per-process random key (std's
/// `RandomState`, seeded from the OS), so a peer cannot guess another call's rkey.
fn random_key() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static KEYS: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    let mut h = KEYS.build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish() as u32
}

/// Why a bulk access was refused (sent back to the server as text).
pub(crate) type Refusal = String;

impl RegionTable {
    pub(crate) fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Exposes `bulk` until the returned handle is dropped. `abort` is called if revocation has to
    /// wait longer than `grace` for an access in progress (it must make that access fail, e.g. by
    /// shutting the socket down), so that the call cannot hang on a stalled peer.
    pub(crate) fn expose<'a>(
        &'a self,
        bulk: &'a mut Bulk<'_>,
        grace: Duration,
        abort: &'a (dyn Fn() + Sync),
    ) -> Exposure<'a> {
        let (ptr, len, writable) = match bulk {
            Bulk::Source(s) => (s.as_ptr().cast_mut(), s.len(), false),
            Bulk::Sink(s) => (s.as_mut_ptr(), s.len(), true),
        };
        let region = Arc::new(Region {
            ptr,
            len,
            writable,
            live: Mutex::new(true),
            refused: Mutex::new(None),
            posted: std::sync::atomic::AtomicBool::new(false),
        });
        let mut map = self.map.lock();
        let mut rkey = random_key();
        while rkey == 0 || map.contains_key(&rkey) {
            rkey = random_key();
        }
        map.insert(rkey, Arc::clone(&region));
        Exposure {
            table: self,
            rkey,
            len: len as u64,
            region,
            grace,
            abort,
        }
    }

    fn lookup(&self, rkey: u32) -> Result<Arc<Region>, Refusal> {
        self.map
            .lock()
            .get(&rkey)
            .cloned()
            .ok_or_else(|| format!("rkey {rkey:#x} is not exposed (revoked or never issued)"))
    }

    /// Notes that a posted push for `rkey` arrived (see [`Exposure::posted_refusal`]).
    pub(crate) fn mark_posted(&self, rkey: u32) {
        if let Ok(region) = self.lookup(rkey) {
            region.posted.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    fn check(region: &Region, rkey: u32, offset: u64, len: u64) -> Result<(usize, usize), Refusal> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= region.len as u64)
            .ok_or_else(|| {
                format!(
                    "range {offset}+{len} is outside rkey {rkey:#x} which exposes {} bytes",
                    region.len
                )
            })?;
        Ok((offset as usize, end as usize))
    }

    /// Runs `f` on bytes `[offset, offset+len)` of a source region while holding its lock.
    pub(crate) fn with_read<R>(
        &self,
        rkey: u32,
        offset: u64,
        len: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, Refusal> {
        let region = self.lookup(rkey)?;
        if region.writable {
            return Err(format!(
                "rkey {rkey:#x} exposes a sink; it can be pushed to, not pulled from"
            ));
        }
        let (start, end) = Self::check(&region, rkey, offset, len)?;
        let live = region.live.lock();
        if !*live {
            return Err(format!("rkey {rkey:#x} was revoked"));
        }
        // SAFETY: `live` is held and true, so the call that lent `ptr..ptr+len` is still inside
        // `call_bulk` and the borrow is valid; `start..end` was checked against `len`.
        let bytes = unsafe { std::slice::from_raw_parts(region.ptr.add(start), end - start) };
        Ok(f(bytes))
    }

    /// Runs `f` on bytes `[offset, offset+len)` of a sink region while holding its lock.
    pub(crate) fn with_write<R>(
        &self,
        rkey: u32,
        offset: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, Refusal> {
        let region = self.lookup(rkey)?;
        let refuse = |why: Refusal| {
            region.refused.lock().get_or_insert_with(|| why.clone());
            why
        };
        if !region.writable {
            return Err(refuse(format!(
                "rkey {rkey:#x} exposes a source; it can be pulled from, not pushed to"
            )));
        }
        let (start, end) = Self::check(&region, rkey, offset, len).map_err(refuse)?;
        let live = region.live.lock();
        if !*live {
            return Err(format!("rkey {rkey:#x} was revoked"));
        }
        // SAFETY: as in `with_read`; the region came from a `&mut [u8]` (writable) that the blocked
        // call does not touch while exposed, and the `live` lock makes this the only accessor.
        let bytes = unsafe { std::slice::from_raw_parts_mut(region.ptr.add(start), end - start) };
        Ok(f(bytes))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// A call's hold on its exposed buffer; dropping it revokes the rkey (see the module doc).
pub(crate) struct Exposure<'a> {
    table: &'a RegionTable,
    rkey: u32,
    len: u64,
    region: Arc<Region>,
    grace: Duration,
    abort: &'a (dyn Fn() + Sync),
}

impl Exposure<'_> {
    /// Why a posted push into this region was refused, if one was: the call has then failed,
    /// whatever the server replies (it did not wait to hear of the refusal).
    pub(crate) fn posted_refusal(&self) -> Option<Refusal> {
        if self.region.posted.load(std::sync::atomic::Ordering::Acquire) {
            self.region.refused.lock().clone()
        } else {
            None
        }
    }

    /// The descriptor to send to the server.
    pub(crate) fn desc(&self) -> crate::BulkDesc {
        crate::BulkDesc {
            addr: 0,
            rkey: self.rkey,
            len: self.len,
        }
    }
}

impl Drop for Exposure<'_> {
    fn drop(&mut self) {
        self.table.map.lock().remove(&self.rkey);
        // An access in progress holds `live`; wait for it, but never forever.
        let mut live = match self.region.live.try_lock_for(self.grace) {
            Some(g) => g,
            None => {
                (self.abort)();
                self.region.live.lock()
            }
        };
        *live = false;
    }
}

/// Calls waiting for their replies, by xid.
pub(crate) struct Pending {
    state: Mutex<PendingState>,
}

enum Waiter {
    /// A caller blocked on the channel.
    Call(Sender<Result<Reply, FabricError>>),
}

struct PendingState {
    waiting: HashMap<u64, Waiter>,
    closed: bool,
}

/// What happened to a reply handed to [`Pending::complete`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// A caller got it.
    Delivered,
    /// Nobody expected it.
    Unknown,
}

impl Pending {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(PendingState {
                waiting: HashMap::new(),
                closed: false,
            }),
        }
    }

    /// Registers `xid`; `None` once the connection is closed.
    pub(crate) fn register(&self, xid: u64) -> Option<Receiver<Result<Reply, FabricError>>> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        let (tx, rx) = bounded(1);
        st.waiting.insert(xid, Waiter::Call(tx));
        Some(rx)
    }

    /// Hands `reply` to the caller waiting on `xid`.
    pub(crate) fn complete(&self, xid: u64, reply: Result<Reply, FabricError>) -> Completion {
        let waiter = self.state.lock().waiting.remove(&xid);
        match waiter {
            // The channel has room for one message and only this sender, so this cannot block.
            Some(Waiter::Call(tx)) => {
                let _ = tx.try_send(reply);
                Completion::Delivered
            }
            None => Completion::Unknown,
        }
    }

    /// Forgets `xid` (the caller gave up and its credit is returned now).
    pub(crate) fn cancel(&self, xid: u64) {
        self.state.lock().waiting.remove(&xid);
    }

    /// Fails every waiting call with `err()` and refuses new ones.
    pub(crate) fn close_all(&self, err: impl Fn() -> FabricError) {
        let waiting = {
            let mut st = self.state.lock();
            st.closed = true;
            std::mem::take(&mut st.waiting)
        };
        for (_, Waiter::Call(tx)) in waiting {
            let _ = tx.try_send(Err(err()));
        }
    }
}

/// Why a credit was not granted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CreditWait {
    /// The deadline passed.
    TimedOut,
    /// The connection closed.
    Closed,
}

/// A counting semaphore bounding the calls in flight on one connection.
pub(crate) struct Credits {
    state: Mutex<(u32, bool)>,
    cv: Condvar,
}

/// One credit, returned on drop (or kept by [`Credit::leave`]).
pub(crate) struct Credit<'a>(&'a Credits);

impl Credit<'_> {
    /// Leaves the credit with an abandoned request; [`Credits::release`] returns it later.
    pub(crate) fn leave(self) {
        std::mem::forget(self);
    }
}

impl Credits {
    pub(crate) fn new(n: u32) -> Self {
        Self {
            state: Mutex::new((n.max(1), false)),
            cv: Condvar::new(),
        }
    }

    /// Takes a credit, waiting until `deadline` at most.
    pub(crate) fn acquire(&self, deadline: Instant) -> Result<Credit<'_>, CreditWait> {
        let mut st = self.state.lock();
        loop {
            if st.1 {
                return Err(CreditWait::Closed);
            }
            if st.0 > 0 {
                st.0 -= 1;
                return Ok(Credit(self));
            }
            if self.cv.wait_until(&mut st, deadline).timed_out() && st.0 == 0 {
                return Err(if st.1 { CreditWait::Closed } else { CreditWait::TimedOut });
            }
        }
    }

    /// Returns a credit left behind by [`Credit::leave`].
    pub(crate) fn release(&self) {
        self.state.lock().0 += 1;
        self.cv.notify_one();
    }

    /// Wakes every waiter; later acquisitions fail.
    pub(crate) fn close(&self) {
        self.state.lock().1 = true;
        self.cv.notify_all();
    }
}

impl Drop for Credit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_region_is_refused_and_ranges_are_checked() {
        let table = RegionTable::new();
        let data = vec![7u8; 100];
        let mut bulk = Bulk::Source(&data);
        let abort = || {};
        let rkey;
        {
            let exp = table.expose(&mut bulk, Duration::from_secs(1), &abort);
            rkey = exp.desc().rkey;
            assert_eq!(table.with_read(rkey, 90, 10, |b| b.to_vec()).unwrap(), vec![7u8; 10]);
            assert!(table.with_read(rkey, 90, 11, |_| ()).unwrap_err().contains("outside"));
            assert!(table.with_read(rkey, u64::MAX, 2, |_| ()).is_err());
            assert!(table.with_write(rkey, 0, 1, |_| ()).unwrap_err().contains("source"));
        }
        assert_eq!(table.len(), 0);
        assert!(table.with_read(rkey, 0, 1, |_| ()).unwrap_err().contains("not exposed"));
    }

    #[test]
    fn credits_bound_and_time_out() {
        let c = Credits::new(1);
        let a = c.acquire(Instant::now() + Duration::from_secs(1)).unwrap();
        assert_eq!(
            c.acquire(Instant::now() + Duration::from_millis(10)).err(),
            Some(CreditWait::TimedOut)
        );
        drop(a);
        let _b = c.acquire(Instant::now() + Duration::from_secs(1)).unwrap();
        c.close();
        assert_eq!(
            c.acquire(Instant::now() + Duration::from_secs(1)).err(),
            Some(CreditWait::Closed)
        );
    }
}
