//! One established RC connection: framed two-sided messages with credit-based flow control (the
//! wire format is in `wire`). Bulk transfers are in `bulk`, completion polling in `progress`.
//!
//! A sender never posts more SENDs than the peer has receive buffers for, and keeps the last
//! credit for credit messages so that two peers waiting for credits cannot deadlock.

use super::endpoint::{CREDIT_MSGS_MAX, Endpoint, SLOT_SIZE};
use super::progress::SPIN_CAP;
use super::wire::*;

use crate::{FabricError, Incoming, Reply};
use crossbeam::channel::Sender;
use parking_lot::{Condvar, Mutex};
use rdma_sys::*;
use rustre_proto::frame::{FLAG_FABRIC, HEADER_LEN};
use rustre_proto::{FrameHeader, ProtocolError};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Live exposures one server connection tracks at most (one per request not yet replied to).
pub(super) const EXPOSURES_MAX: usize = 4096;

/// Completions taken per `ibv_poll_cq`.
pub(super) const POLL_BATCH: usize = 32;

/// Send-side state, under one lock.
pub(super) struct Tx {
    /// SENDs posted (data and credit messages).
    pub(super) sent: u64,
    /// SENDs the peer has buffers for: its initial count plus every credit it returned.
    pub(super) granted: u64,
    /// Our receive buffers freed since we last told the peer.
    pub(super) unreported: u32,
    /// Some of `unreported` came from data (credit messages alone never trigger another).
    pub(super) data_since_report: bool,
    pub(super) free_slots: Vec<u32>,
    pub(super) credit_inflight: u32,
    pub(super) rdma_inflight: u32,
}

impl Tx {
    pub(super) fn avail(&self) -> u64 {
        self.granted.saturating_sub(self.sent)
    }

    pub(super) fn take_report(&mut self) -> u16 {
        let c = self.unreported.min(u32::from(u16::MAX));
        self.unreported -= c;
        if self.unreported == 0 {
            self.data_since_report = false;
        }
        c as u16
    }
}

/// Completion polling state; whoever holds it may poll the CQ.
pub(super) struct Poller {
    pub(super) wcs: [ibv_wc; POLL_BATCH],
    /// Receives posted and not yet completed.
    pub(super) outstanding_recv: u64,
}

/// A frame being reassembled from fragments.
#[derive(Default)]
pub(super) struct Assembly {
    pub(super) header: Option<FrameHeader>,
    pub(super) body: Vec<u8>,
    /// Announced for the next frame.
    pub(super) next_exposure: Option<Exposure>,
    /// Belongs to the frame being assembled.
    pub(super) exposure: Option<Exposure>,
}

/// What a connection does with complete frames.
pub(super) enum Role {
    /// Replies go to the waiting caller, by xid.
    Client {
        pending: Mutex<HashMap<u64, Sender<Reply>>>,
    },
    /// Requests queue for `recv`; bounded by our receive buffers (credits are returned on `recv`).
    Server {
        /// At most `incoming_max` (one per receive buffer: credits bound the peer).
        incoming: Mutex<VecDeque<Incoming>>,
        incoming_max: usize,
        incoming_cv: Condvar,
        /// A `recv` is busy-polling and will find new requests itself (no wake-up needed).
        recv_spinning: AtomicBool,
        client_id: AtomicU64,
        /// Client memory exposed with requests not yet replied to, by xid.
        exposures: Mutex<HashMap<u64, Exposure>>,
    },
}

impl Role {
    pub(super) fn client() -> Self {
        Role::Client {
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn server(recv_count: u32) -> Self {
        Role::Server {
            incoming: Mutex::new(VecDeque::new()),
            incoming_max: recv_count as usize + 1,
            incoming_cv: Condvar::new(),
            recv_spinning: AtomicBool::new(false),
            client_id: AtomicU64::new(0),
            exposures: Mutex::new(HashMap::new()),
        }
    }
}

/// An established connection, shared by the handle and its progress thread.
pub(super) struct Conn {
    pub(super) ep: Endpoint,
    pub(super) peer: String,
    pub(super) max_body: u32,
    pub(super) busy_poll: Duration,
    pub(super) op_timeout: Duration,
    pub(super) frag_size: usize,
    pub(super) tx: Mutex<Tx>,
    pub(super) tx_cv: Condvar,
    pub(super) msg_lock: Mutex<()>,
    pub(super) rx: Mutex<Assembly>,
    pub(super) poller: Mutex<Poller>,
    /// A thread is busy-polling (see `spin`).
    pub(super) spinning: AtomicBool,
    /// Moving average of how long inline waits took, in ns (stretches the spin budget).
    pub(super) spin_estimate_ns: AtomicU64,
    /// Moving average of how long a server's `recv` waited for a request that came soon (within
    /// `SPIN_CAP`), in ns: the recv spin budget follows the client's pace.
    pub(super) recv_gap_ns: AtomicU64,
    /// Threads blocked until a completion is polled (a reply, an RDMA completion, a send slot or
    /// credit). While there are some and nobody spins, the progress thread must be armed.
    pub(super) waiters: AtomicUsize,
    /// The progress thread sleeps without the completion channel (a spinner polls instead).
    pub(super) progress_unarmed: AtomicBool,
    /// When the last successful spin ended (ns since `epoch`); 0 after a spin that ran out.
    pub(super) spin_ended_ns: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) ops: Mutex<HashMap<u64, Sender<Result<(), FabricError>>>>,
    pub(super) next_op: AtomicU64,
    pub(super) closed: AtomicBool,
    pub(super) reason: Mutex<String>,
    pub(super) wake_fd: i32,
    pub(super) role: Role,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: the eventfd is ours and closed once.
        unsafe { libc::close(self.wake_fd) };
    }
}

impl Conn {
    pub(super) fn new(
        ep: Endpoint,
        peer: String,
        peer_hello: Hello,
        opts: &crate::ConnOptions,
        role: Role,
    ) -> Result<Arc<Self>, FabricError> {
        // SAFETY: plain syscall; the result is checked.
        let wake_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake_fd < 0 {
            return Err(FabricError::verbs_errno("eventfd"));
        }
        let tx = Tx {
            sent: 0,
            granted: u64::from(peer_hello.recv_count),
            unreported: 0,
            data_since_report: false,
            free_slots: (0..ep.send_count).rev().collect(),
            credit_inflight: 0,
            rdma_inflight: 0,
        };
        let poller = Poller {
            // SAFETY: ibv_wc is plain old data; zero is a valid initial value.
            wcs: unsafe { std::mem::zeroed() },
            outstanding_recv: u64::from(ep.recv_count),
        };
        Ok(Arc::new(Conn {
            frag_size: (peer_hello.recv_size as usize).min(SLOT_SIZE),
            ep,
            peer,
            max_body: opts.max_body,
            busy_poll: opts.busy_poll,
            op_timeout: opts.call_timeout,
            tx: Mutex::new(tx),
            tx_cv: Condvar::new(),
            msg_lock: Mutex::new(()),
            rx: Mutex::new(Assembly::default()),
            poller: Mutex::new(poller),
            spinning: AtomicBool::new(false),
            spin_estimate_ns: AtomicU64::new(0),
            recv_gap_ns: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            progress_unarmed: AtomicBool::new(false),
            spin_ended_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            ops: Mutex::new(HashMap::new()),
            next_op: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            wake_fd,
            role,
        }))
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The error operations on a closed connection return.
    pub(super) fn closed_err(&self) -> FabricError {
        let reason = self.reason.lock().clone();
        if reason.is_empty() {
            FabricError::Closed(self.peer.clone())
        } else {
            FabricError::Closed(format!("{} ({reason})", self.peer))
        }
    }

    /// Runs `wait`, a blocking wait for something only a CQ poll can bring, counted in `waiters`
    /// so that the progress thread arms the completion channel for it (see `Conn::progress`).
    pub(super) fn blocking<T>(&self, wait: impl FnOnce() -> T) -> T {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        if self.progress_unarmed.load(Ordering::SeqCst) {
            self.wake();
        }
        let r = wait();
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    pub(super) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.wake_fd, (&one as *const u64).cast(), 8) };
    }

    /// Closes the connection from this side after the SENDs already posted (replies in
    /// particular) have completed, waiting at most `FLUSH_WAIT` for them.
    pub(super) fn close(&self) {
        let deadline = Instant::now() + super::progress::FLUSH_WAIT;
        {
            let mut tx = self.tx.lock();
            while !self.is_closed() && (tx.free_slots.len() as u32) < self.ep.send_count {
                if self.blocking(|| self.tx_cv.wait_until(&mut tx, deadline)).timed_out() {
                    break;
                }
            }
        }
        self.fail("closed locally");
    }

    /// Closes the connection (first reason wins): the QP goes to the error state, every waiter
    /// fails, the progress thread drains the flushed work requests and exits.
    pub(super) fn fail(&self, reason: impl Into<String>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.reason.lock() = reason.into();
        self.ep.disconnect();
        match &self.role {
            Role::Client { pending } => pending.lock().clear(),
            Role::Server {
                incoming, incoming_cv, ..
            } => {
                let _q = incoming.lock();
                incoming_cv.notify_all();
            }
        }
        {
            let _tx = self.tx.lock();
            self.tx_cv.notify_all();
        }
        self.wake();
    }

    // ---- sending ----------------------------------------------------------------------------

    /// Sends one frame (header + body), fragmenting it to the peer's receive buffer size.
    pub(super) fn send_frame(
        &self,
        header: &FrameHeader,
        body: &[u8],
        exposure: Option<&Exposure>,
        deadline: Instant,
    ) -> Result<(), FabricError> {
        if body.len() > self.max_body as usize {
            return Err(FabricError::TooLarge {
                len: body.len(),
                max: self.max_body as usize,
            });
        }
        let hdr = header.encode();
        let total = HEADER_LEN + body.len();
        let _frame = self.msg_lock.lock();
        if let Some(exposure) = exposure {
            let (slot, credits) = self.acquire_send(deadline)?;
            let dst = self.ep.send_slot(slot);
            let bytes = exposure.encode();
            // SAFETY: the slot is ours until its send completes and holds SLOT_SIZE ≥ 24 bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
            self.post_fragment(slot, bytes.len(), KIND_BULK, credits)?;
        }
        let mut off = 0;
        while off < total {
            let n = self.frag_size.min(total - off);
            let (slot, credits) = match self.acquire_send(deadline) {
                Ok(v) => v,
                Err(e) => {
                    if off > 0 {
                        // Half a frame is on the wire: the stream cannot be resumed.
                        self.fail("send stalled in the middle of a frame");
                    }
                    return Err(e);
                }
            };
            let dst = self.ep.send_slot(slot);
            // SAFETY: the slot is ours until its send completes; `n` ≤ SLOT_SIZE bytes fit in it; the
            // sources are valid slices and do not overlap the registered pool.
            unsafe { copy_frame_range(&hdr, body, off, n, dst) };
            let kind = if off == 0 { KIND_FIRST } else { KIND_CONT };
            self.post_fragment(slot, n, kind, credits)?;
            off += n;
        }
        Ok(())
    }

    /// Posts send slot `slot` holding `len` bytes as a fragment of `kind`.
    pub(super) fn post_fragment(&self, slot: u32, len: usize, kind: u32, credits: u16) -> Result<(), FabricError> {
        let mut sge = ibv_sge {
            addr: self.ep.send_slot(slot) as u64,
            length: len as u32,
            lkey: self.ep.send_lkey(),
        };
        let mut wr = send_wr(wr_id(TAG_SEND, u64::from(slot)), &mut sge, 1);
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
        wr.imm_data_invalidated_rkey_union.imm_data = imm(kind, credits).to_be();
        if let Err(e) = self.ep.post_send(&mut wr) {
            self.fail(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Takes a send slot and a credit, waiting until both are free (or the deadline passes).
    pub(super) fn acquire_send(&self, deadline: Instant) -> Result<(u32, u16), FabricError> {
        let mut tx = self.tx.lock();
        loop {
            if self.is_closed() {
                return Err(self.closed_err());
            }
            // One credit stays in reserve for credit messages.
            if tx.avail() >= 2 && !tx.free_slots.is_empty() {
                let slot = tx.free_slots.pop().expect("checked non-empty");
                tx.sent += 1;
                let credits = tx.take_report();
                return Ok((slot, credits));
            }
            if self.blocking(|| self.tx_cv.wait_until(&mut tx, deadline)).timed_out() {
                return Err(FabricError::Timeout {
                    peer: self.peer.clone(),
                    after_ms: self.op_timeout.as_millis() as u64,
                });
            }
        }
    }

    /// Returns receive credits explicitly when enough have piled up and no data is carrying them.
    pub(super) fn maybe_send_credit(&self, tx: &mut Tx) {
        let threshold = (self.ep.recv_count / 2).max(1);
        if self.is_closed()
            || !tx.data_since_report
            || tx.unreported < threshold
            || tx.avail() < 1
            || tx.credit_inflight >= CREDIT_MSGS_MAX
        {
            return;
        }
        tx.sent += 1;
        tx.credit_inflight += 1;
        let credits = tx.take_report();
        let mut wr = send_wr(wr_id(TAG_CREDIT, 0), std::ptr::null_mut(), 0);
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
        wr.imm_data_invalidated_rkey_union.imm_data = imm(KIND_CREDIT, credits).to_be();
        if let Err(e) = self.ep.post_send(&mut wr) {
            tx.credit_inflight -= 1;
            self.fail(e.to_string());
        }
    }

    /// Gives back the receive credit of a request the service has taken.
    pub(super) fn return_credit(&self) {
        let mut tx = self.tx.lock();
        tx.unreported += 1;
        tx.data_since_report = true;
        self.maybe_send_credit(&mut tx);
    }

    // ---- RDMA READ / WRITE ---------------------------------------------------------------------

    // ---- receiving -----------------------------------------------------------------------------

    /// Waits for the next request (server side).
    pub(super) fn recv(&self) -> Result<Incoming, FabricError> {
        let Role::Server {
            incoming,
            incoming_cv,
            recv_spinning,
            ..
        } = &self.role
        else {
            return Err(FabricError::Closed(format!("{}: not a server connection", self.peer)));
        };
        // How long this call waited, for the spin budget; measured from the spin's own clock
        // readings (a clock read can be costly, see `Conn::spin`).
        let mut waited = Duration::ZERO;
        let mut msg = incoming.lock().pop_front();
        if msg.is_none() && !recv_spinning.swap(true, Ordering::AcqRel) {
            // Spin about twice the recent gap between requests: a client issuing calls back to back
            // is then met by a polling thread, not by a sleeping one that must be woken.
            let gap = Duration::from_nanos(self.recv_gap_ns.load(Ordering::Relaxed));
            let budget = (gap * 2).clamp(self.busy_poll, SPIN_CAP);
            let (got, spun) = self.spin(budget, false, || incoming.lock().pop_front());
            msg = got;
            waited = spun;
            recv_spinning.store(false, Ordering::Release);
            // Requests queued while we spun were not announced: look once more.
            if msg.is_none() {
                msg = incoming.lock().pop_front();
            }
        }
        let msg = match msg {
            Some(m) => m,
            None => {
                let blocked = Instant::now();
                let mut q = incoming.lock();
                let m = loop {
                    if let Some(m) = q.pop_front() {
                        break m;
                    }
                    if self.is_closed() {
                        return Err(self.closed_err());
                    }
                    incoming_cv.wait(&mut q);
                };
                waited += blocked.elapsed();
                m
            }
        };
        if waited < SPIN_CAP {
            let est = self.recv_gap_ns.load(Ordering::Relaxed);
            let next = (est * 7 + waited.as_nanos() as u64) / 8;
            self.recv_gap_ns.store(next, Ordering::Relaxed);
        }
        // Pass the wake-up on: requests queued during a spin may have announced nobody.
        if !incoming.lock().is_empty() {
            incoming_cv.notify_one();
        }
        self.return_credit();
        Ok(msg)
    }

    /// Handles one receive completion: credits, reassembly, delivery, repost.
    pub(super) fn on_recv(&self, index: u32, len: usize, imm_be: Option<u32>) -> Result<(), FabricError> {
        let protocol = |source: ProtocolError| FabricError::Protocol {
            peer: self.peer.clone(),
            source,
        };
        let Some(imm_be) = imm_be else {
            return Err(protocol(ProtocolError::invalid(
                "verbs.imm",
                "SEND without immediate data".to_string(),
            )));
        };
        let imm = u32::from_be(imm_be);
        let (kind, credits) = (imm >> 16, imm & 0xFFFF);
        if credits > 0 {
            let mut tx = self.tx.lock();
            tx.granted += u64::from(credits);
            self.tx_cv.notify_all();
        }
        let mut complete = None;
        match kind {
            KIND_BULK => {
                let mut asm = self.rx.lock();
                let exposure = Exposure::decode(self.ep.recv_buf(index, len));
                if !matches!(self.role, Role::Server { .. })
                    || exposure.is_none()
                    || asm.header.is_some()
                    || asm.next_exposure.is_some()
                {
                    return Err(protocol(ProtocolError::invalid(
                        "verbs.exposure",
                        "misplaced or malformed bulk exposure",
                    )));
                }
                asm.next_exposure = exposure;
            }
            KIND_CREDIT => {
                if len != 0 {
                    return Err(protocol(ProtocolError::invalid(
                        "verbs.imm",
                        format!("credit message with {len} bytes"),
                    )));
                }
            }
            KIND_FIRST | KIND_CONT => {
                let data = self.ep.recv_buf(index, len);
                let mut asm = self.rx.lock();
                if kind == KIND_FIRST {
                    if asm.header.is_some() {
                        return Err(protocol(ProtocolError::invalid(
                            "verbs.fragment",
                            "new frame before the previous one ended".to_string(),
                        )));
                    }
                    let header = FrameHeader::decode(data, self.max_body).map_err(protocol)?;
                    asm.exposure = asm.next_exposure.take();
                    asm.body = Vec::with_capacity(header.body_len as usize);
                    asm.header = Some(header);
                    asm.body.extend_from_slice(&data[HEADER_LEN..]);
                } else {
                    if asm.header.is_none() {
                        return Err(protocol(ProtocolError::invalid(
                            "verbs.fragment",
                            "continuation without a frame".to_string(),
                        )));
                    }
                    asm.body.extend_from_slice(data);
                }
                let want = asm.header.map(|h| h.body_len as usize).unwrap_or(0);
                if asm.body.len() > want {
                    return Err(protocol(ProtocolError::invalid(
                        "frame.body_len",
                        format!("frame carries {} bytes, header says {want}", asm.body.len()),
                    )));
                }
                if asm.body.len() == want {
                    let header = asm.header.take().expect("set above");
                    complete = Some((header, std::mem::take(&mut asm.body), asm.exposure.take()));
                }
            }
            other => {
                return Err(protocol(ProtocolError::invalid(
                    "verbs.imm",
                    format!("unknown fragment kind {other}"),
                )));
            }
        }
        self.ep.post_recv(index)?;
        // Credits: fragments and credit messages are returned now; a server's complete request is
        // returned when the service takes it (`recv`), which bounds the requests queued here.
        let deferred = complete.is_some() && matches!(self.role, Role::Server { .. });
        {
            let mut tx = self.tx.lock();
            if !deferred {
                tx.unreported += 1;
                tx.data_since_report |= kind != KIND_CREDIT;
            }
            self.maybe_send_credit(&mut tx);
        }
        if let Some((header, body, exposure)) = complete {
            self.deliver(header, body, exposure)?;
        }
        Ok(())
    }

    pub(super) fn deliver(
        &self,
        header: FrameHeader,
        body: Vec<u8>,
        exposure: Option<Exposure>,
    ) -> Result<(), FabricError> {
        let protocol = |source: ProtocolError| FabricError::Protocol {
            peer: self.peer.clone(),
            source,
        };
        if header.flags & FLAG_FABRIC != 0 {
            return Err(protocol(ProtocolError::invalid(
                "frame.flags",
                "fabric control frame on verbs".to_string(),
            )));
        }
        match &self.role {
            Role::Client { pending } => {
                if !header.is_reply() {
                    return Err(protocol(ProtocolError::invalid(
                        "frame.flags",
                        "request sent to a client".to_string(),
                    )));
                }
                // A reply to a call that already timed out is dropped.
                if let Some(waiter) = pending.lock().remove(&header.xid) {
                    let _ = waiter.try_send(Reply { header, body });
                }
            }
            Role::Server {
                incoming,
                incoming_max,
                incoming_cv,
                recv_spinning,
                client_id,
                exposures,
                ..
            } => {
                if header.is_reply() {
                    return Err(protocol(ProtocolError::invalid(
                        "frame.flags",
                        "reply sent to a server".to_string(),
                    )));
                }
                if let Some(exposure) = exposure {
                    let mut exposures = exposures.lock();
                    if exposures.len() >= EXPOSURES_MAX && !exposures.contains_key(&header.xid) {
                        return Err(protocol(ProtocolError::invalid(
                            "verbs.exposure",
                            format!("more than {EXPOSURES_MAX} requests with exposed memory unanswered"),
                        )));
                    }
                    exposures.insert(header.xid, exposure);
                }
                if client_id.load(Ordering::Relaxed) == 0 {
                    client_id.store(header.client_id, Ordering::Relaxed);
                }
                let mut q = incoming.lock();
                if q.len() >= *incoming_max {
                    return Err(protocol(ProtocolError::invalid(
                        "verbs.credits",
                        "peer sent beyond its credits".to_string(),
                    )));
                }
                q.push_back(Incoming { header, body });
                drop(q);
                // A spinning `recv` takes it without a wake-up (and hands on any surplus).
                if !recv_spinning.load(Ordering::Acquire) {
                    incoming_cv.notify_one();
                }
            }
        }
        Ok(())
    }

    // ---- progress ---------------------------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_reports_fit_the_immediate() {
        let mut tx = Tx {
            sent: 0,
            granted: 4,
            unreported: 70_000,
            data_since_report: true,
            free_slots: vec![],
            credit_inflight: 0,
            rdma_inflight: 0,
        };
        assert_eq!(tx.take_report(), u16::MAX);
        assert_eq!(tx.unreported, 70_000 - 65_535);
        assert!(tx.data_since_report);
        assert_eq!(u32::from(tx.take_report()), 70_000 - 65_535);
        assert!(!tx.data_since_report);
        assert_eq!(imm(KIND_CONT, 5) >> 16, KIND_CONT);
    }
}
