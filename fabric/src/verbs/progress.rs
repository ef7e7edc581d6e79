//! Completion polling: the per-connection progress thread (sleeping on the completion channel)
//! and inline busy-polling by waiting callers, and what each completion means.

use super::conn::{Conn, POLL_BATCH, Poller, Role};
use super::ffi::{self, wait_readable};
use super::wire::*;
use crate::FabricError;
use rdma_sys::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Upper bound of the learned busy-poll budget (see `Conn::spin`).
pub(super) const SPIN_CAP: Duration = Duration::from_millis(1);
/// How long the progress thread sleeps unarmed (a spinner polls the CQ meanwhile) before it
/// looks again: the most a request arriving while nobody polls can wait.
const UNARMED_TICK: Duration = Duration::from_millis(1);
/// Empty polls between two looks at the clock while spinning.
const SPIN_CLOCK_EVERY: u32 = 16;
/// How long a closing connection waits for its posted work requests to flush.
pub(super) const FLUSH_WAIT: Duration = Duration::from_secs(2);

impl Conn {
    /// The progress loop: polls the CQ (busy for `busy_poll`, then blocking on the completion
    /// channel), watches cm events for a disconnect, and exits once closed and drained.
    pub(super) fn progress(self: Arc<Self>) {
        let mut closed_at: Option<Instant> = None;
        loop {
            let mut p = self.poller.lock();
            if self.poll_once(&mut p) > 0 {
                continue;
            }
            if self.is_closed() {
                let since = *closed_at.get_or_insert_with(Instant::now);
                if self.drained(p.outstanding_recv) || since.elapsed() > FLUSH_WAIT {
                    break;
                }
            } else if self.spinner_covers() {
                // A caller polls the CQ: arming the channel would only wake this thread for the
                // completions it takes. Sleep on the cm channel and the wake-up fd instead; a
                // waiter that blocks, or a spinner that gives up, wakes us to arm.
                drop(p);
                self.progress_unarmed.store(true, Ordering::SeqCst);
                if self.spinner_covers() {
                    let ready = wait_readable(&[self.ep.channel.fd(), self.wake_fd], UNARMED_TICK);
                    self.progress_unarmed.store(false, Ordering::SeqCst);
                    self.on_wakeup(false, ready[0], ready[1]);
                } else {
                    self.progress_unarmed.store(false, Ordering::SeqCst);
                }
                continue;
            }
            // SAFETY: the CQ is live; arming notification has no memory effects on our side.
            unsafe { ibv_req_notify_cq(self.ep.cq, 0) };
            // A completion may have landed between the last poll and arming: poll once more.
            if self.poll_once(&mut p) > 0 {
                continue;
            }
            // Sleep without the poller so that waiting callers can poll inline meanwhile.
            drop(p);
            let wait = if self.is_closed() {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(500)
            };
            let ready = wait_readable(&[self.ep.comp_fd(), self.ep.channel.fd(), self.wake_fd], wait);
            self.on_wakeup(ready[0], ready[1], ready[2]);
        }
        // Whatever still waits gets an error now.
        self.ops.lock().clear();
        if let Role::Client { pending } = &self.role {
            pending.lock().clear();
        }
    }

    /// Handles what woke the progress thread: a CQ event, cm events, the wake-up fd.
    fn on_wakeup(&self, cq_event: bool, cm_event: bool, woken: bool) {
        if cq_event {
            let mut cq: *mut ibv_cq = std::ptr::null_mut();
            let mut ctx: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: the channel is live and non-blocking; on success the event is acknowledged
            // at once so that destroying the CQ never waits.
            if unsafe { ibv_get_cq_event(self.ep.comp, &mut cq, &mut ctx) } == 0 {
                // SAFETY: `cq` is the CQ the event was for (ours).
                unsafe { ibv_ack_cq_events(cq, 1) };
            }
        }
        if cm_event {
            while let Ok(Some(ev)) = self.ep.channel.next(Duration::ZERO) {
                let kind = ev.kind();
                drop(ev);
                use rdma_cm_event_type::*;
                if matches!(kind, RDMA_CM_EVENT_DISCONNECTED | RDMA_CM_EVENT_DEVICE_REMOVAL) {
                    // What the peer sent before it left (its last replies) is already in our
                    // CQ: deliver it before failing the waiters.
                    let mut p = self.poller.lock();
                    while self.poll_once(&mut p) > 0 {}
                    drop(p);
                    self.fail(format!("peer {}", ffi::event_name(kind).to_lowercase()));
                }
            }
        }
        if woken {
            let mut buf = 0u64;
            // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
            unsafe { libc::read(self.wake_fd, (&mut buf as *mut u64).cast(), 8) };
        }
    }

    /// True while a caller's busy-poll stands in for the progress thread: one is spinning now, or
    /// one just found what it waited for (it is likely back soon) and nobody else waits on a
    /// completion.
    fn spinner_covers(&self) -> bool {
        if self.spinning.load(Ordering::SeqCst) {
            return true;
        }
        let ended = self.spin_ended_ns.load(Ordering::SeqCst);
        ended != 0
            && self.waiters.load(Ordering::SeqCst) == 0
            && (self.epoch.elapsed().as_nanos() as u64).saturating_sub(ended) < UNARMED_TICK.as_nanos() as u64
    }

    /// The busy-poll budget of a wait for a round trip: `busy_poll`, stretched to twice the waits
    /// recently seen (capped), so that a slow link (soft-RoCE, emulation) still completes without
    /// a sleep and wake-up.
    pub(super) fn rtt_budget(&self) -> Duration {
        let learned = Duration::from_nanos(self.spin_estimate_ns.load(Ordering::Relaxed));
        self.busy_poll.max((learned * 2).min(SPIN_CAP))
    }

    /// Polls the CQ once and handles what it returned; the number of completions.
    fn poll_once(&self, p: &mut Poller) -> usize {
        // SAFETY: the CQ is live while `self` is; `wcs` has room for POLL_BATCH entries.
        let n = unsafe { ibv_poll_cq(self.ep.cq, POLL_BATCH as i32, p.wcs.as_mut_ptr()) };
        if n < 0 {
            self.fail("ibv_poll_cq failed");
            return 0;
        }
        let n = n as usize;
        let Poller { wcs, outstanding_recv } = p;
        for wc in &wcs[..n] {
            self.on_completion(wc, outstanding_recv);
        }
        n
    }

    /// Busy-polls the CQ from the calling thread for up to `budget` until `ready` yields (the
    /// low-latency path: no hand-off to the progress thread). `None` when the budget ran out; the
    /// caller then blocks and the progress thread takes over.
    ///
    /// One thread spins at a time: the others block at once on their own wait (whoever polls
    /// delivers to them), so spinning never takes more than one CPU per connection.
    ///
    /// `learn`: the wait is a round trip; its length feeds `rtt_budget`. Also returns how long it
    /// spun.
    pub(super) fn spin<T>(
        &self,
        budget: Duration,
        learn: bool,
        mut ready: impl FnMut() -> Option<T>,
    ) -> (Option<T>, Duration) {
        if let Some(v) = ready() {
            return (Some(v), Duration::ZERO);
        }
        if budget.is_zero() || self.spinning.swap(true, Ordering::SeqCst) {
            return (None, Duration::ZERO);
        }
        let start = Instant::now();
        let mut polls = 0u32;
        let result = loop {
            if let Some(v) = ready() {
                break Some(v);
            }
            // Reading the clock can cost more than an empty poll (an emulated HPET takes a
            // trap), so the budget is checked every few polls only.
            polls = polls.wrapping_add(1);
            if self.is_closed() || (polls.is_multiple_of(SPIN_CLOCK_EVERY) && start.elapsed() >= budget) {
                break None;
            }
            self.poll_once(&mut self.poller.lock());
        };
        let end = Instant::now();
        let ended = if result.is_some() {
            (end.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
        } else {
            0
        };
        self.spin_ended_ns.store(ended, Ordering::SeqCst);
        self.spinning.store(false, Ordering::SeqCst);
        // Nobody polls now: if others wait on completions, or we gave up and are about to block,
        // the progress thread must arm the completion channel.
        if (result.is_none() || self.waiters.load(Ordering::SeqCst) > 0) && self.progress_unarmed.load(Ordering::SeqCst)
        {
            self.wake();
        }
        if learn {
            let seen = match result {
                Some(_) => end.saturating_duration_since(start),
                None => budget * 2,
            };
            let est = self.spin_estimate_ns.load(Ordering::Relaxed);
            let next = (est * 7 + seen.min(SPIN_CAP).as_nanos() as u64) / 8;
            self.spin_estimate_ns.store(next, Ordering::Relaxed);
        }
        (result, end.saturating_duration_since(start))
    }

    fn drained(&self, outstanding_recv: u64) -> bool {
        let tx = self.tx.lock();
        outstanding_recv == 0
            && tx.free_slots.len() as u32 == self.ep.send_count
            && tx.credit_inflight == 0
            && tx.rdma_inflight == 0
    }

    fn on_completion(&self, wc: &ibv_wc, outstanding_recv: &mut u64) {
        let tag = wc.wr_id >> TAG_SHIFT;
        let value = wc.wr_id & VALUE_MASK;
        let ok = wc.status == ibv_wc_status::IBV_WC_SUCCESS;
        let status_err = || {
            // SAFETY: ibv_wc_status_str returns a static NUL-terminated string for any status.
            let text = unsafe { std::ffi::CStr::from_ptr(ibv_wc_status_str(wc.status)) };
            text.to_string_lossy().into_owned()
        };
        match tag {
            TAG_RECV => {
                *outstanding_recv -= 1;
                if !ok {
                    if wc.status != ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                        self.fail(format!("receive failed: {}", status_err()));
                    }
                    return;
                }
                if self.is_closed() {
                    return;
                }
                let imm = if wc.wc_flags & ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0 {
                    // SAFETY: with IBV_WC_WITH_IMM set, imm_data is the active union member.
                    Some(unsafe { wc.imm_data_invalidated_rkey_union.imm_data })
                } else {
                    None
                };
                match self.on_recv(value as u32, wc.byte_len as usize, imm) {
                    Ok(()) => *outstanding_recv += 1,
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, error = %e, "closing verbs connection");
                        self.fail(e.to_string());
                    }
                }
            }
            TAG_SEND | TAG_CREDIT => {
                {
                    let mut tx = self.tx.lock();
                    if tag == TAG_SEND {
                        tx.free_slots.push(value as u32);
                    } else {
                        tx.credit_inflight -= 1;
                    }
                    self.tx_cv.notify_all();
                }
                if !ok && wc.status != ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                    self.fail(format!("send failed: {}", status_err()));
                }
            }
            TAG_RDMA => {
                let verb = if wc.opcode == ibv_wc_opcode::IBV_WC_RDMA_READ {
                    "RDMA READ"
                } else {
                    "RDMA WRITE"
                };
                let result = if ok {
                    Ok(())
                } else if wc.status == ibv_wc_status::IBV_WC_REM_ACCESS_ERR {
                    Err(FabricError::BulkRefused(format!(
                        "{}: {verb} refused by the peer: {}",
                        self.peer,
                        status_err()
                    )))
                } else if wc.status == ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                    Err(self.closed_err())
                } else {
                    Err(FabricError::Verbs {
                        verb: "ibv_poll_cq",
                        errno: libc::EIO,
                        errno_text: format!("{verb}: {}", status_err()),
                    })
                };
                if let Some(done) = self.ops.lock().remove(&value) {
                    let _ = done.try_send(result);
                }
                {
                    let mut tx = self.tx.lock();
                    tx.rdma_inflight -= 1;
                    self.tx_cv.notify_all();
                }
                if !ok && wc.status != ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                    self.fail(format!("{verb} failed: {}", status_err()));
                }
            }
            _ => self.fail(format!("completion with unknown work request id {:#x}", wc.wr_id)),
        }
    }
}
