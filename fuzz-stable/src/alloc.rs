//! A counting global allocator: tracks live heap bytes and, while an input runs ("armed"), the
//! peak above what was live when it started. An allocation that would take the input past the
//! limit is not made: the run is reported as unbounded allocation and the process exits (3).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BASE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static ARMED: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The allocator; install it with `#[global_allocator]` in the binary.
pub struct CountingAlloc;

impl CountingAlloc {
    fn admit(size: usize) {
        INSTALLED.store(true, Ordering::Relaxed);
        let live = LIVE.fetch_add(size as isize, Ordering::Relaxed) + size as isize;
        if ARMED.load(Ordering::Relaxed) {
            let used = usize::try_from(live - BASE.load(Ordering::Relaxed)).unwrap_or(0);
            if used > LIMIT.load(Ordering::Relaxed) {
                ARMED.store(false, Ordering::Relaxed);
                crate::report::alloc_overrun(size, used);
            }
            PEAK.fetch_max(used, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments; the
// bookkeeping around it only updates atomics (and, on an overrun, writes a report and exits
// without returning).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; `ptr` was allocated by this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            Self::admit(new_size - layout.size());
        } else {
            LIVE.fetch_sub((layout.size() - new_size) as isize, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts measuring an input: at most `limit` bytes above what is live now.
pub fn arm(limit: usize) {
    BASE.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    LIMIT.store(limit, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
}

/// Stops measuring; returns the input's peak (0 when the allocator is not installed).
pub fn disarm() -> usize {
    ARMED.store(false, Ordering::Relaxed);
    PEAK.load(Ordering::Relaxed)
}

/// True once the counting allocator has served an allocation (it is the global allocator).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}
