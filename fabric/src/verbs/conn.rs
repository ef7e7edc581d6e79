//! One established RC connection: framed two-sided messages with credit-based flow control, RDMA
//! READ/WRITE for bulk, and the progress thread that polls the completion queue.
//!
//! Wire format: every SEND carries 32 bits of immediate data: the low 16 bits return receive
//! credits to the peer (buffers reposted since the last report), bits 16..18 say what the payload
//! is: an explicit credit message (no payload), the first fragment of a frame (starting with the
//! 32-byte `FrameHeader`) or a continuation fragment. A frame longer than one receive buffer
//! travels as several fragments, back to back (RC keeps them in order; credit messages may come in
//! between). A sender never posts more SENDs than the peer has receive buffers for, and keeps the
//! last credit for credit messages so that two peers waiting for credits cannot deadlock.

use super::endpoint::{CREDIT_MSGS_MAX, Endpoint, RDMA_OPS_MAX, SLOT_SIZE};
use super::ffi::{self, Mr, wait_readable};
use crate::{BulkDesc, FabricError, Incoming, Reply};
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use parking_lot::{Condvar, Mutex};
use rdma_sys::*;
use rustre_proto::frame::{FLAG_FABRIC, HEADER_LEN};
use rustre_proto::{FrameHeader, ProtocolError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(super) const TAG_RECV: u64 = 1;
const TAG_SEND: u64 = 2;
const TAG_CREDIT: u64 = 3;
const TAG_RDMA: u64 = 4;
const TAG_SHIFT: u32 = 56;
const VALUE_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// Builds a work request id from a tag and a value.
pub(super) fn wr_id(tag: u64, value: u64) -> u64 {
    (tag << TAG_SHIFT) | (value & VALUE_MASK)
}

const KIND_CREDIT: u32 = 0;
const KIND_FIRST: u32 = 1;
const KIND_CONT: u32 = 2;
const KIND_BULK: u32 = 3;

/// Live exposures one server connection tracks at most (one per request not yet replied to).
const EXPOSURES_MAX: usize = 4096;

/// Client memory exposed with one request, announced by the client's provider right before the
/// request so that the server's provider can refuse a pull/push outside it, of the wrong
/// direction or with a key of a call that has already returned (instead of letting the RDMA
/// operation fail, which would break the queue pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exposure {
    pub(super) addr: u64,
    pub(super) len: u64,
    pub(super) rkey: u32,
    /// The server may push (RDMA WRITE) into it; else it may only pull.
    pub(super) writable: bool,
}

const EXPOSURE_LEN: usize = 24;

impl Exposure {
    fn encode(&self) -> [u8; EXPOSURE_LEN] {
        let mut b = [0u8; EXPOSURE_LEN];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_le_bytes());
        b[20] = u8::from(self.writable);
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != EXPOSURE_LEN || b[20] > 1 {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        Some(Exposure {
            addr: u64_at(0),
            len: u64_at(8),
            rkey: u32::from_le_bytes(b[16..20].try_into().unwrap_or([0; 4])),
            writable: b[20] == 1,
        })
    }

    /// True if `[addr, addr+len)` lies inside this exposure.
    fn covers(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr.saturating_add(self.len))
    }
}

fn imm(kind: u32, credits: u16) -> u32 {
    (kind << 16) | u32::from(credits)
}

/// Largest RDMA READ/WRITE posted as one work request.
const RDMA_CHUNK: usize = 4 << 20;
/// Completions taken per `ibv_poll_cq`.
const POLL_BATCH: usize = 32;
/// How long a closing connection waits for its posted work requests to flush.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Connection parameters exchanged as rdma_cm private data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hello {
    /// Receive buffers the sender posted (the peer's initial credits).
    pub(super) recv_count: u32,
    /// Size of each of them.
    pub(super) recv_size: u32,
}

const HELLO_MAGIC: [u8; 4] = *b"RSTV";
const HELLO_VERSION: u16 = 1;
pub(super) const HELLO_LEN: usize = 16;

impl Hello {
    pub(super) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&HELLO_MAGIC);
        b[4..6].copy_from_slice(&HELLO_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.recv_count.to_le_bytes());
        b[12..16].copy_from_slice(&self.recv_size.to_le_bytes());
        b
    }

    pub(super) fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HELLO_LEN || b[0..4] != HELLO_MAGIC {
            return Err(format!(
                "connection private data is not a rustre hello ({} bytes)",
                b.len()
            ));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != HELLO_VERSION {
            return Err(format!("hello version {version}, expected {HELLO_VERSION}"));
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let hello = Hello {
            recv_count: u32_at(8),
            recv_size: u32_at(12),
        };
        if !(1..=65535).contains(&hello.recv_count) {
            return Err(format!("hello.recv_count {} outside 1..=65535", hello.recv_count));
        }
        if !(HEADER_LEN as u32..=(1 << 24)).contains(&hello.recv_size) {
            return Err(format!(
                "hello.recv_size {} outside {HEADER_LEN}..=16 MiB",
                hello.recv_size
            ));
        }
        Ok(hello)
    }
}

/// Send-side state, under one lock.
struct Tx {
    /// SENDs posted (data and credit messages).
    sent: u64,
    /// SENDs the peer has buffers for: its initial count plus every credit it returned.
    granted: u64,
    /// Our receive buffers freed since we last told the peer.
    unreported: u32,
    /// Some of `unreported` came from data (credit messages alone never trigger another).
    data_since_report: bool,
    free_slots: Vec<u32>,
    credit_inflight: u32,
    rdma_inflight: u32,
}

impl Tx {
    fn avail(&self) -> u64 {
        self.granted.saturating_sub(self.sent)
    }

    fn take_report(&mut self) -> u16 {
        let c = self.unreported.min(u32::from(u16::MAX));
        self.unreported -= c;
        if self.unreported == 0 {
            self.data_since_report = false;
        }
        c as u16
    }
}

/// Completion polling state; whoever holds it may poll the CQ.
struct Poller {
    wcs: [ibv_wc; POLL_BATCH],
    /// Receives posted and not yet completed.
    outstanding_recv: u64,
}

/// A frame being reassembled from fragments.
#[derive(Default)]
struct Assembly {
    header: Option<FrameHeader>,
    body: Vec<u8>,
    /// Announced for the next frame.
    next_exposure: Option<Exposure>,
    /// Belongs to the frame being assembled.
    exposure: Option<Exposure>,
}

/// What a connection does with complete frames.
pub(super) enum Role {
    /// Replies go to the waiting caller, by xid.
    Client {
        pending: Mutex<HashMap<u64, Sender<Reply>>>,
    },
    /// Requests queue for `recv`; bounded by our receive buffers (credits are returned on `recv`).
    Server {
        incoming_tx: Sender<Incoming>,
        incoming_rx: Receiver<Incoming>,
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
        let (incoming_tx, incoming_rx) = bounded(recv_count as usize + 1);
        Role::Server {
            incoming_tx,
            incoming_rx,
            client_id: AtomicU64::new(0),
            exposures: Mutex::new(HashMap::new()),
        }
    }
}

/// An established connection, shared by the handle and its progress thread.
pub(super) struct Conn {
    pub(super) ep: Endpoint,
    pub(super) peer: String,
    max_body: u32,
    busy_poll: Duration,
    op_timeout: Duration,
    frag_size: usize,
    tx: Mutex<Tx>,
    tx_cv: Condvar,
    msg_lock: Mutex<()>,
    rx: Mutex<Assembly>,
    poller: Mutex<Poller>,
    /// A thread is busy-polling (see `spin`).
    spinning: AtomicBool,
    ops: Mutex<HashMap<u64, Sender<Result<(), FabricError>>>>,
    next_op: AtomicU64,
    closed: AtomicBool,
    reason: Mutex<String>,
    closed_tx: Mutex<Option<Sender<()>>>,
    closed_rx: Receiver<()>,
    wake_fd: i32,
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
        let (closed_tx, closed_rx) = bounded(0);
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
            ops: Mutex::new(HashMap::new()),
            next_op: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            closed_tx: Mutex::new(Some(closed_tx)),
            closed_rx,
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

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.wake_fd, (&one as *const u64).cast(), 8) };
    }

    /// Closes the connection (first reason wins): the QP goes to the error state, every waiter
    /// fails, the progress thread drains the flushed work requests and exits.
    pub(super) fn fail(&self, reason: impl Into<String>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.reason.lock() = reason.into();
        self.ep.disconnect();
        self.closed_tx.lock().take();
        if let Role::Client { pending } = &self.role {
            pending.lock().clear();
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
    fn post_fragment(&self, slot: u32, len: usize, kind: u32, credits: u16) -> Result<(), FabricError> {
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

    /// Ends the exposure that came with request `xid` (the reply is about to go out, after which
    /// the client revokes the key).
    pub(super) fn revoke(&self, xid: u64) {
        if let Role::Server { exposures, .. } = &self.role {
            exposures.lock().remove(&xid);
        }
    }

    /// Refuses a pull/push the client did not expose for a request still in progress.
    fn check_exposed(&self, desc: &BulkDesc, offset: u64, len: usize, write: bool) -> Result<(), FabricError> {
        let Role::Server { exposures, .. } = &self.role else {
            return Err(FabricError::BulkRefused("bulk transfers are issued by servers".into()));
        };
        let start = desc.addr.saturating_add(offset);
        let exposures = exposures.lock();
        let mut same_key = exposures
            .values()
            .filter(|e| e.rkey == desc.rkey && e.covers(start, len as u64));
        match same_key.next() {
            Some(e) if e.writable == write => Ok(()),
            Some(_) if write => Err(FabricError::BulkRefused(format!(
                "{}: push into memory exposed for reading only (rkey {:#x})",
                self.peer, desc.rkey
            ))),
            Some(_) => Err(FabricError::BulkRefused(format!(
                "{}: pull from memory exposed for writing only (rkey {:#x})",
                self.peer, desc.rkey
            ))),
            None => Err(FabricError::BulkRefused(format!(
                "{}: rkey {:#x} exposes no {len} bytes at {start:#x} for a request in progress",
                self.peer, desc.rkey
            ))),
        }
    }

    /// Takes a send slot and a credit, waiting until both are free (or the deadline passes).
    fn acquire_send(&self, deadline: Instant) -> Result<(u32, u16), FabricError> {
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
            if self.tx_cv.wait_until(&mut tx, deadline).timed_out() {
                return Err(FabricError::Timeout {
                    peer: self.peer.clone(),
                    after_ms: self.op_timeout.as_millis() as u64,
                });
            }
        }
    }

    /// Returns receive credits explicitly when enough have piled up and no data is carrying them.
    fn maybe_send_credit(&self, tx: &mut Tx) {
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

    /// Copies between `local` (registered under `lkey`) and the peer's `remote_addr`/`rkey`.
    fn rdma(
        &self,
        write: bool,
        local: *mut u8,
        len: usize,
        lkey: u32,
        remote_addr: u64,
        rkey: u32,
    ) -> Result<(), FabricError> {
        {
            let mut tx = self.tx.lock();
            loop {
                if self.is_closed() {
                    return Err(self.closed_err());
                }
                if tx.rdma_inflight < RDMA_OPS_MAX {
                    tx.rdma_inflight += 1;
                    break;
                }
                self.tx_cv.wait(&mut tx);
            }
        }
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done_rx) = bounded(1);
        self.ops.lock().insert(op, done_tx);
        let mut sge = ibv_sge {
            addr: local as u64,
            length: len as u32,
            lkey,
        };
        let mut wr = send_wr(wr_id(TAG_RDMA, op), &mut sge, 1);
        wr.opcode = if write {
            ibv_wr_opcode::IBV_WR_RDMA_WRITE
        } else {
            ibv_wr_opcode::IBV_WR_RDMA_READ
        };
        wr.wr.rdma = rdma_t { remote_addr, rkey };
        if let Err(e) = self.ep.post_send(&mut wr) {
            self.ops.lock().remove(&op);
            self.tx.lock().rdma_inflight -= 1;
            self.fail(e.to_string());
            return Err(e);
        }
        let verb = if write { "RDMA WRITE" } else { "RDMA READ" };
        if let Some(r) = self.spin(|| done_rx.try_recv().ok()) {
            return r;
        }
        match done_rx.recv_timeout(self.op_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                // The buffer is the device's until the work request completes: break the QP (which
                // flushes it) and wait for that completion before handing the memory back.
                self.fail(format!("{verb} timed out"));
                let _ = done_rx.recv_timeout(FLUSH_WAIT * 2);
                Err(FabricError::Timeout {
                    peer: self.peer.clone(),
                    after_ms: self.op_timeout.as_millis() as u64,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.closed_err()),
        }
    }

    fn check_range(desc: &BulkDesc, offset: u64, len: usize, what: &str) -> Result<(), FabricError> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > desc.len) {
            return Err(FabricError::BulkRefused(format!(
                "{what} of {len} bytes at offset {offset} outside the {} exposed bytes",
                desc.len
            )));
        }
        if len > 0 && desc.addr.checked_add(offset + len as u64).is_none() {
            return Err(FabricError::BulkRefused(format!(
                "{what}: descriptor address overflows"
            )));
        }
        Ok(())
    }

    /// RDMA READ of `dst.len()` bytes from `desc` at `offset`.
    pub(super) fn pull(&self, desc: &BulkDesc, offset: u64, dst: &mut [u8]) -> Result<(), FabricError> {
        Self::check_range(desc, offset, dst.len(), "pull")?;
        if dst.is_empty() {
            return Ok(());
        }
        self.check_exposed(desc, offset, dst.len(), false)?;
        let domain = Arc::clone(self.ep.domain());
        if let Some(lkey) = domain.lkey_for(dst.as_ptr(), dst.len()) {
            let mut done = 0;
            while done < dst.len() {
                let n = RDMA_CHUNK.min(dst.len() - done);
                // SAFETY: done + n ≤ dst.len(); `dst` is borrowed mutably for the whole transfer and
                // `rdma` returns only after the work request completed or was flushed.
                let p = unsafe { dst.as_mut_ptr().add(done) };
                self.rdma(false, p, n, lkey, desc.addr + offset + done as u64, desc.rkey)?;
                done += n;
            }
            return Ok(());
        }
        let (pool, mr) = domain.bounce()?;
        let mut done = 0;
        while done < dst.len() {
            let mut b = self.bounce_buf(&pool)?;
            let n = b.len().min(dst.len() - done);
            self.rdma(
                false,
                b.as_mut_ptr(),
                n,
                mr.lkey(),
                desc.addr + offset + done as u64,
                desc.rkey,
            )?;
            dst[done..done + n].copy_from_slice(&b[..n]);
            done += n;
        }
        Ok(())
    }

    /// RDMA WRITE of `src` into `desc` at `offset`.
    pub(super) fn push(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError> {
        Self::check_range(desc, offset, src.len(), "push")?;
        if src.is_empty() {
            return Ok(());
        }
        self.check_exposed(desc, offset, src.len(), true)?;
        let domain = Arc::clone(self.ep.domain());
        if let Some(lkey) = domain.lkey_for(src.as_ptr(), src.len()) {
            let mut done = 0;
            while done < src.len() {
                let n = RDMA_CHUNK.min(src.len() - done);
                // SAFETY: in bounds as above; the device only reads this memory, and `src` stays
                // borrowed until `rdma` returns after the completion.
                let p = unsafe { src.as_ptr().add(done) }.cast_mut();
                self.rdma(true, p, n, lkey, desc.addr + offset + done as u64, desc.rkey)?;
                done += n;
            }
            return Ok(());
        }
        let (pool, mr) = domain.bounce()?;
        let mut done = 0;
        while done < src.len() {
            let mut b = self.bounce_buf(&pool)?;
            let n = b.len().min(src.len() - done);
            b[..n].copy_from_slice(&src[done..done + n]);
            self.rdma(
                true,
                b.as_mut_ptr(),
                n,
                mr.lkey(),
                desc.addr + offset + done as u64,
                desc.rkey,
            )?;
            done += n;
        }
        Ok(())
    }

    fn bounce_buf(&self, pool: &Arc<crate::BufferPool>) -> Result<crate::PoolBuf, FabricError> {
        pool.get_timeout(self.op_timeout).ok_or_else(|| FabricError::Timeout {
            peer: self.peer.clone(),
            after_ms: self.op_timeout.as_millis() as u64,
        })
    }

    /// Registers client memory for one bulk call; `None` for an empty buffer.
    pub(super) fn expose(&self, ptr: *mut u8, len: usize, access: u32) -> Result<Option<Mr>, FabricError> {
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: the caller (`call_bulk`) keeps the borrowed buffer alive until the Mr is dropped,
        // which happens before it returns.
        Ok(Some(unsafe { self.ep.domain().register(ptr, len, access) }?))
    }

    // ---- receiving -----------------------------------------------------------------------------

    /// Waits for the next request (server side).
    pub(super) fn recv(&self) -> Result<Incoming, FabricError> {
        let Role::Server { incoming_rx, .. } = &self.role else {
            return Err(FabricError::Closed(format!("{}: not a server connection", self.peer)));
        };
        let msg = match self.spin(|| incoming_rx.try_recv().ok()) {
            Some(m) => m,
            None => {
                crossbeam::channel::select! {
                    recv(incoming_rx) -> m => match m {
                        Ok(m) => m,
                        Err(_) => return Err(self.closed_err()),
                    },
                    recv(self.closed_rx) -> _ => match incoming_rx.try_recv() {
                        Ok(m) => m,
                        Err(_) => return Err(self.closed_err()),
                    },
                }
            }
        };
        self.return_credit();
        Ok(msg)
    }

    /// Handles one receive completion: credits, reassembly, delivery, repost.
    fn on_recv(&self, index: u32, len: usize, imm_be: Option<u32>) -> Result<(), FabricError> {
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

    fn deliver(&self, header: FrameHeader, body: Vec<u8>, exposure: Option<Exposure>) -> Result<(), FabricError> {
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
                incoming_tx,
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
                match incoming_tx.try_send(Incoming { header, body }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        return Err(protocol(ProtocolError::invalid(
                            "verbs.credits",
                            "peer sent beyond its credits".to_string(),
                        )));
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
        }
        Ok(())
    }

    // ---- progress ---------------------------------------------------------------------------------

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
            if ready[0] {
                let mut cq: *mut ibv_cq = std::ptr::null_mut();
                let mut ctx: *mut std::ffi::c_void = std::ptr::null_mut();
                // SAFETY: the channel is live and non-blocking; on success the event is acknowledged
                // at once so that destroying the CQ never waits.
                if unsafe { ibv_get_cq_event(self.ep.comp, &mut cq, &mut ctx) } == 0 {
                    // SAFETY: `cq` is the CQ the event was for (ours).
                    unsafe { ibv_ack_cq_events(cq, 1) };
                }
            }
            if ready[1] {
                while let Ok(Some(ev)) = self.ep.channel.next(Duration::ZERO) {
                    let kind = ev.kind();
                    drop(ev);
                    use rdma_cm_event_type::*;
                    if matches!(kind, RDMA_CM_EVENT_DISCONNECTED | RDMA_CM_EVENT_DEVICE_REMOVAL) {
                        self.fail(format!("peer {}", ffi::event_name(kind).to_lowercase()));
                    }
                }
            }
            if ready[2] {
                let mut buf = 0u64;
                // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
                unsafe { libc::read(self.wake_fd, (&mut buf as *mut u64).cast(), 8) };
            }
        }
        // Whatever still waits gets an error now.
        self.ops.lock().clear();
        if let Role::Client { pending } = &self.role {
            pending.lock().clear();
        }
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

    /// Busy-polls the CQ from the calling thread for up to `busy_poll` until `ready` yields (the
    /// low-latency path: no hand-off to the progress thread). `None` when the budget ran out; the
    /// caller then blocks and the progress thread takes over.
    ///
    /// One thread spins at a time: the others block at once on their own wait (whoever polls
    /// delivers to them), so spinning never takes more than one CPU per connection.
    pub(super) fn spin<T>(&self, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
        if let Some(v) = ready() {
            return Some(v);
        }
        if self.busy_poll.is_zero() || self.spinning.swap(true, Ordering::AcqRel) {
            return None;
        }
        let until = Instant::now() + self.busy_poll;
        let result = loop {
            if let Some(v) = ready() {
                break Some(v);
            }
            if self.is_closed() || Instant::now() >= until {
                break None;
            }
            self.poll_once(&mut self.poller.lock());
        };
        self.spinning.store(false, Ordering::Release);
        result
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

/// A zeroed send work request with one scatter/gather list.
fn send_wr(id: u64, sge: *mut ibv_sge, num_sge: i32) -> ibv_send_wr {
    // SAFETY: ibv_send_wr is plain old data (pointers, integers, unions of them); zero is valid.
    let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
    wr.wr_id = id;
    wr.sg_list = sge;
    wr.num_sge = num_sge;
    wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
    wr
}

/// Copies bytes `off..off+n` of the frame `hdr ++ body` to `dst`.
///
/// # Safety
/// `dst` must be valid for `n` writes and not overlap `hdr` or `body`.
unsafe fn copy_frame_range(hdr: &[u8; HEADER_LEN], body: &[u8], off: usize, n: usize, dst: *mut u8) {
    let mut written = 0;
    if off < HEADER_LEN {
        let h = (HEADER_LEN - off).min(n);
        // SAFETY: h ≤ n bytes into dst; the source range is inside `hdr`.
        unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr().add(off), dst, h) };
        written = h;
    }
    if written < n {
        let body_off = off + written - HEADER_LEN;
        // SAFETY: the caller sized n to the frame, so body_off + (n - written) ≤ body.len().
        unsafe { std::ptr::copy_nonoverlapping(body.as_ptr().add(body_off), dst.add(written), n - written) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let h = Hello {
            recv_count: 64,
            recv_size: 16384,
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        assert!(Hello::decode(b"nonsense").is_err());
        let mut bad = h.encode();
        bad[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(Hello::decode(&bad).unwrap_err().contains("recv_count"));
    }

    #[test]
    fn frame_ranges_are_copied_across_the_header_boundary() {
        let hdr = [7u8; HEADER_LEN];
        let body: Vec<u8> = (0..100u8).collect();
        let mut out = vec![0u8; HEADER_LEN + body.len()];
        let mut off = 0;
        while off < out.len() {
            let n = 20.min(out.len() - off);
            // SAFETY: `out` has room for off + n bytes and does not overlap the sources.
            unsafe { copy_frame_range(&hdr, &body, off, n, out.as_mut_ptr().add(off)) };
            off += n;
        }
        assert_eq!(&out[..HEADER_LEN], &hdr);
        assert_eq!(&out[HEADER_LEN..], &body[..]);
    }

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

    #[test]
    fn exposures_round_trip_and_bound_their_range() {
        let e = Exposure {
            addr: 0x1000,
            len: 4096,
            rkey: 77,
            writable: true,
        };
        assert_eq!(Exposure::decode(&e.encode()), Some(e));
        assert_eq!(Exposure::decode(&[0u8; 23]), None);
        assert!(e.covers(0x1000, 4096));
        assert!(e.covers(0x1800, 0x800));
        assert!(!e.covers(0x1800, 0x801));
        assert!(!e.covers(0xfff, 2));
        assert!(!e.covers(u64::MAX, 2));
    }
}
