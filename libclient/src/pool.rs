//! The client's I/O threads: a pool kept for the client's lifetime, so that a striped read or
//! write lends its pieces to threads that already exist instead of creating threads per call.
//!
//! [`WorkerPool::run`] runs one borrowed closure on the calling thread and on up to `helpers`
//! pool threads at once, and returns only when no pool thread can touch the closure any more
//! (the same contract as `std::thread::scope`). Helpers that have not started by the time the
//! caller finishes its own share are told to skip the closure, so a busy pool never makes a call
//! wait for work it has already done. Threads are started on demand up to `max_threads`; queued
//! helper requests are bounded (`4 × max_threads`); past either bound the caller simply does more
//! of the work itself. [`WorkerPool::submit`] queues one owned job under the same bounds
//! (write-behind, module `behind`), giving it back when it cannot.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Shared state of the pool.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool closes.
    work: Condvar,
}

struct State {
    queue: VecDeque<Job>,
    /// Threads started and not yet exited.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    closed: bool,
}

/// A bounded pool of I/O threads (see the module documentation).
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
    max_threads: usize,
}

/// One [`WorkerPool::run`] call's bookkeeping, owned jointly by the caller and its helpers.
struct Batch {
    state: Mutex<BatchState>,
    finished: Condvar,
}

struct BatchState {
    /// Set by the caller once its own share is done: helpers starting later skip the closure.
    closed: bool,
    /// Helpers inside the closure now.
    active: usize,
}

/// Makes the caller wait until no helper runs the closure, even when the caller unwinds.
struct WaitForHelpers<'a>(&'a Batch);

impl Drop for WaitForHelpers<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.closed = true;
        while st.active > 0 {
            self.0.finished.wait(&mut st);
        }
    }
}

impl WorkerPool {
    /// A pool that starts at most `max_threads` threads (at least one).
    pub(crate) fn new(max_threads: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    closed: false,
                }),
                work: Condvar::new(),
            }),
            max_threads: max_threads.max(1),
        }
    }

    /// Runs `work` on this thread and on up to `helpers` pool threads concurrently; returns when
    /// every started run has returned. `work` must be safe to run any number of times, in
    /// parallel (each run takes its items from a shared queue). Panics of helpers are caught
    /// (the caller's own run decides the outcome; helpers report errors through `work`'s state).
    pub(crate) fn run(&self, helpers: usize, work: &(dyn Fn() + Sync)) {
        if helpers == 0 {
            work();
            return;
        }
        let batch = Arc::new(Batch {
            state: Mutex::new(BatchState {
                closed: false,
                active: 0,
            }),
            finished: Condvar::new(),
        });
        // SAFETY: the reference is given a 'static lifetime only to pass it to pool threads.
        // A helper dereferences it only between `active += 1` (done while the batch is not
        // closed) and `active -= 1`; `WaitForHelpers`, created before any helper is queued and
        // dropped before this function returns (also when `work` unwinds), closes the batch and
        // waits for `active == 0`. So no helper touches `work` after this call ends, and the
        // borrow outlives every use.
        let work_static: &'static (dyn Fn() + Sync) =
            unsafe { std::mem::transmute::<&(dyn Fn() + Sync), &'static (dyn Fn() + Sync)>(work) };
        let guard = WaitForHelpers(&batch);
        for _ in 0..helpers {
            let b = Arc::clone(&batch);
            let job: Job = Box::new(move || {
                {
                    let mut st = b.state.lock();
                    if st.closed {
                        return;
                    }
                    st.active += 1;
                }
                // A panic is caught so that `active` always goes back down.
                let _ = catch_unwind(AssertUnwindSafe(work_static));
                let mut st = b.state.lock();
                st.active -= 1;
                if st.active == 0 {
                    b.finished.notify_all();
                }
            });
            if self.submit(job).is_err() {
                break;
            }
        }
        work();
        drop(guard);
    }

    /// Queues `job` for a pool thread, starting one if none is idle and the bound allows.
    /// Gives the job back when the queue is full or no thread can take it (the caller then does
    /// the work itself).
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        let mut st = self.shared.state.lock();
        if st.closed || st.queue.len() >= 4 * self.max_threads {
            return Err(job);
        }
        if st.idle <= st.queue.len() && st.threads < self.max_threads {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("rustre-io".into())
                .spawn(move || worker(&shared));
            match spawned {
                Ok(_) => st.threads += 1,
                Err(e) => {
                    tracing::debug!("starting an I/O thread: {e}");
                    if st.threads == 0 {
                        return Err(job);
                    }
                }
            }
        }
        st.queue.push_back(job);
        drop(st);
        self.shared.work.notify_one();
        Ok(())
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.work.notify_all();
    }
}

/// A pool thread: runs queued jobs until the pool closes and the queue is empty.
fn worker(shared: &Shared) {
    let mut st = shared.state.lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            job();
            st = shared.state.lock();
            continue;
        }
        if st.closed {
            st.threads -= 1;
            return;
        }
        st.idle += 1;
        shared.work.wait(&mut st);
        st.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_on_several_threads_and_waits_for_them() {
        let pool = WorkerPool::new(4);
        for _ in 0..50 {
            let items = Mutex::new((0..100).collect::<Vec<usize>>());
            let sum = AtomicUsize::new(0);
            let threads = Mutex::new(std::collections::HashSet::new());
            pool.run(3, &|| {
                while let Some(i) = items.lock().pop() {
                    threads.lock().insert(std::thread::current().id());
                    std::thread::sleep(std::time::Duration::from_micros(20));
                    sum.fetch_add(i, Ordering::Relaxed);
                }
            });
            assert_eq!(sum.load(Ordering::Relaxed), (0..100).sum::<usize>());
            assert!(items.lock().is_empty());
        }
        assert!(pool.shared.state.lock().threads <= 4);
    }

    #[test]
    fn a_busy_pool_never_blocks_the_caller() {
        let pool = WorkerPool::new(1);
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        // Occupy the only thread.
        let r = Arc::clone(&release);
        let queued = pool.submit(Box::new(move || {
            let mut go = r.0.lock();
            while !*go {
                r.1.wait(&mut go);
            }
        }));
        assert!(queued.is_ok());
        let n = AtomicUsize::new(0);
        pool.run(2, &|| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        // The helpers were queued behind the blocked job; the caller ran alone and returned.
        assert_eq!(n.load(Ordering::Relaxed), 1);
        *release.0.lock() = true;
        release.1.notify_all();
    }

    #[test]
    fn a_panicking_helper_is_contained() {
        let pool = WorkerPool::new(2);
        let calls = AtomicUsize::new(0);
        let caller = std::thread::current().id();
        pool.run(2, &|| {
            calls.fetch_add(1, Ordering::Relaxed);
            if std::thread::current().id() != caller {
                panic!("helper failure");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        });
        assert!(calls.load(Ordering::Relaxed) >= 1);
    }
}
