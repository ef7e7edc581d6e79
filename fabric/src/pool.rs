//! A fixed pool of page-aligned buffers, allocated once at start-up.
//!
//! The whole pool is one anonymous mapping so that it can be registered in one piece as an RDMA
//! memory region and, buffer by buffer, as io_uring fixed buffers: data moves NIC → pool → disk
//! with no CPU copy. Taking a buffer blocks when all are in use (backpressure), so memory is a
//! function of the configuration, never of the load.
//!
//! Free buffers are a stack: the buffer released last is taken next. Its bytes were touched last,
//! so they are likely still in the CPU caches, and the socket copy, checksum and device copy of
//! the next request run from cache. (Handing buffers out in turn walks the whole pool through
//! memory: with 32 buffers of 1 MiB, the bytes are cold every time.)

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Alignment of every pool buffer (O_DIRECT needs the device's logical block size; 4 KiB covers all).
pub const POOL_ALIGN: usize = 4096;

/// A fixed set of equal, aligned buffers inside one mapping.
pub struct BufferPool {
    base: *mut u8,
    buf_size: usize,
    count: usize,
    /// Indexes of the free buffers; the last one is taken first.
    free: Mutex<Vec<usize>>,
    /// Signalled when a buffer is returned.
    returned: Condvar,
}

// SAFETY: the mapping is owned by the pool for its whole life; each buffer index is handed to at most
// one `PoolBuf` at a time through the free stack, so no two threads alias a buffer mutably.
unsafe impl Send for BufferPool {}
// SAFETY: as above; shared access only hands out disjoint buffers.
unsafe impl Sync for BufferPool {}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("buf_size", &self.buf_size)
            .field("count", &self.count)
            .finish()
    }
}

impl BufferPool {
    /// Maps `count` buffers of `buf_size` bytes (rounded up to [`POOL_ALIGN`]), locking them in RAM
    /// when the memlock limit allows.
    pub fn new(buf_size: usize, count: usize) -> std::io::Result<Arc<Self>> {
        if buf_size == 0 || count == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "pool needs buffers of non-zero size",
            ));
        }
        let buf_size = buf_size.div_ceil(POOL_ALIGN) * POOL_ALIGN;
        let len = buf_size
            .checked_mul(count)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pool size overflows"))?;
        // SAFETY: anonymous private mapping with no address hint; the result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // Best effort: pinned memory avoids page faults on the data path; RDMA registration pins anyway.
        // SAFETY: `base..base+len` is the mapping just created.
        let _ = unsafe { libc::mlock(base, len) };
        Ok(Arc::new(Self {
            base: base.cast(),
            buf_size,
            count,
            // Reversed, so that buffer 0 is taken first.
            free: Mutex::new((0..count).rev().collect()),
            returned: Condvar::new(),
        }))
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Start of the mapping (for RDMA registration).
    pub fn base_ptr(&self) -> *mut u8 {
        self.base
    }

    /// Total bytes of the mapping.
    pub fn total_len(&self) -> usize {
        self.buf_size * self.count
    }

    /// One iovec per buffer, in index order, for `io_uring_register_buffers`.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|i| libc::iovec {
                // SAFETY: i < count, so the offset stays inside the mapping.
                iov_base: unsafe { self.base.add(i * self.buf_size) }.cast(),
                iov_len: self.buf_size,
            })
            .collect()
    }

    /// True if `[ptr, ptr+len)` lies inside the pool's mapping.
    pub fn contains(&self, ptr: *const u8, len: usize) -> bool {
        let start = self.base as usize;
        let p = ptr as usize;
        p >= start && p.checked_add(len).is_some_and(|end| end <= start + self.total_len())
    }

    /// Takes a free buffer, waiting while all are in use.
    pub fn get(self: &Arc<Self>) -> PoolBuf {
        let mut free = self.free.lock();
        let index = loop {
            match free.pop() {
                Some(i) => break i,
                None => self.returned.wait(&mut free),
            }
        };
        PoolBuf {
            pool: Arc::clone(self),
            index,
        }
    }

    /// Takes a free buffer, waiting at most `timeout`.
    pub fn get_timeout(self: &Arc<Self>, timeout: Duration) -> Option<PoolBuf> {
        let deadline = Instant::now() + timeout;
        let mut free = self.free.lock();
        let index = loop {
            if let Some(i) = free.pop() {
                break i;
            }
            if self.returned.wait_until(&mut free, deadline).timed_out() {
                // A buffer returned as the wait ran out is still taken (not dropped: its index
                // would leave the pool for good).
                break free.pop()?;
            }
        };
        Some(PoolBuf {
            pool: Arc::clone(self),
            index,
        })
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.free.lock().len()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // SAFETY: every PoolBuf holds an Arc to the pool, so none is alive here; the mapping is ours.
        unsafe {
            libc::munmap(self.base.cast(), self.total_len());
        }
    }
}

/// One buffer taken from a [`BufferPool`]; returned on drop.
pub struct PoolBuf {
    pool: Arc<BufferPool>,
    index: usize,
}

impl PoolBuf {
    /// Index of this buffer in the pool (its io_uring fixed-buffer index).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The pool it came from.
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }
}

impl std::ops::Deref for PoolBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the index is exclusively ours until drop; the range is inside the mapping.
        unsafe { std::slice::from_raw_parts(self.pool.base.add(self.index * self.pool.buf_size), self.pool.buf_size) }
    }
}

impl std::ops::DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref, and `&mut self` guarantees no other borrow of this buffer.
        unsafe {
            std::slice::from_raw_parts_mut(self.pool.base.add(self.index * self.pool.buf_size), self.pool.buf_size)
        }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        // The stack was allocated with room for every index, so this never reallocates.
        self.pool.free.lock().push(self.index);
        self.pool.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_disjoint_and_bounded() {
        let pool = BufferPool::new(5000, 3).unwrap();
        assert_eq!(pool.buf_size(), 8192);
        let mut a = pool.get();
        let b = pool.get();
        let c = pool.get();
        assert_eq!(a.as_ptr() as usize % POOL_ALIGN, 0);
        assert!(
            pool.get_timeout(Duration::from_millis(10)).is_none(),
            "pool must not grow"
        );
        a[0] = 7;
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert!(pool.contains(c.as_ptr(), c.len()));
        drop(a);
        assert_eq!(pool.available(), 1);
        let a2 = pool.get();
        assert_eq!(a2[0], 7);
    }

    #[test]
    fn the_buffer_returned_last_is_taken_first() {
        let pool = BufferPool::new(4096, 4).expect("a 16 KiB anonymous mapping");
        let (a, b) = (pool.get(), pool.get());
        assert_eq!((a.index(), b.index()), (0, 1));
        let (ia, ib) = (a.index(), b.index());
        drop(b);
        drop(a);
        let first = pool.get();
        assert_eq!(first.index(), ia, "last returned, first taken");
        let second = pool.get();
        assert_eq!(second.index(), ib);
        drop(second);
        assert_eq!(pool.get().index(), ib, "a buffer dropped at once is taken again");
    }

    #[test]
    fn a_waiting_taker_gets_the_buffer_another_thread_returns() {
        let pool = BufferPool::new(4096, 1).expect("a 4 KiB anonymous mapping");
        let held = pool.get();
        let index = held.index();
        let p2 = Arc::clone(&pool);
        let waiter = std::thread::spawn(move || p2.get_timeout(Duration::from_secs(10)).map(|b| b.index()));
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert_eq!(waiter.join().expect("the waiting thread does not panic"), Some(index));
        assert_eq!(pool.available(), 1);
    }
}
