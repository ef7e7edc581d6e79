//! The server end of a tcp connection and the listener.
//!
//! The threads waiting on a connection read its socket themselves, leader/follower style: one of
//! the threads in [`ServerConn::recv`], `pull` or `push` at a time (the leader) reads frames: it
//! checks the `HELLO`, keeps a request for itself when it is a `recv` caller (else queues it for
//! one, bounded by the granted credits: a client sending more is closed), and routes bulk data and
//! acks to the `pull`/`push` callers waiting for them, reading pulled bytes straight into their
//! buffers. When its own wait is over it passes the socket on to another waiting thread, so a
//! request reaches a service thread without a hand-off between threads. An idle reader thread
//! takes the socket only while no thread waits on the connection. Reading never writes except
//! for the `HELLO` reply, so it cannot be stalled by a slow client.

use super::client::MIN_MAX_BODY;
use super::wire::{self, ReadHeader};
use super::{IDLE_TICK, poll_readable};
use crate::{Address, BulkDesc, ConnOptions, FabricError, Incoming, Listener, ServerConn};
use parking_lot::{Condvar, Mutex};
use rustre_proto::FrameHeader;
use rustre_proto::frame::{FLAG_ERROR, FLAG_FABRIC, FLAG_REPLY};
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A tcp listener.
pub struct TcpListener {
    listener: std::net::TcpListener,
    local: SocketAddr,
    opts: ConnOptions,
    shut: AtomicBool,
}

/// Binds `addr`.
pub(crate) fn listen(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    let peer = format!("tcp://{addr}");
    if opts.max_body < MIN_MAX_BODY {
        return Err(FabricError::TooLarge {
            len: MIN_MAX_BODY as usize,
            max: opts.max_body as usize,
        });
    }
    let listener = std::net::TcpListener::bind(addr).map_err(|source| FabricError::Io {
        op: "bind",
        peer: peer.clone(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| FabricError::Io {
        op: "getsockname",
        peer,
        source,
    })?;
    Ok(Arc::new(TcpListener {
        listener,
        local,
        opts: opts.clone(),
        shut: AtomicBool::new(false),
    }))
}

impl Listener for TcpListener {
    fn accept(&self) -> Result<Arc<dyn ServerConn>, FabricError> {
        loop {
            if self.shut.load(Ordering::Acquire) {
                return Err(FabricError::Closed(format!("listener tcp://{}", self.local)));
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.shut.load(Ordering::Acquire) {
                        continue;
                    }
                    match start(stream, peer, &self.opts) {
                        Ok(conn) => return Ok(conn),
                        // One bad socket must not stop the listener.
                        Err(e) => tracing::warn!(peer = %peer, error = %e, "dropping new connection"),
                    }
                }
                Err(_) if self.shut.load(Ordering::Acquire) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(source) => {
                    return Err(FabricError::Io {
                        op: "accept",
                        peer: format!("tcp://{}", self.local),
                        source,
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> Address {
        Address::Tcp(self.local)
    }

    fn shutdown(&self) {
        if self.shut.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: the descriptor belongs to `self.listener`, which is alive for this call;
        // shutdown(2) on a listening socket wakes a blocked accept(2) (it then fails with EINVAL).
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One accepted connection.
pub struct TcpServerConn {
    inner: Arc<Inner>,
}

struct Inner {
    peer: String,
    /// Limit for frames we read (ours) …
    max_body_in: u32,
    /// … and for frames we send (negotiated in `HELLO`).
    max_body_out: AtomicU32,
    client_id: AtomicU64,
    timeout: Duration,
    writer: Mutex<TcpStream>,
    sock: TcpStream,
    next_op: AtomicU64,
    ops: Mutex<HashMap<u64, Arc<BulkOp>>>,
    closed: AtomicBool,
    /// Why reading stopped, handed to the first `recv` after the queue drains.
    close_error: Mutex<Option<FabricError>>,
    /// The read side; whoever holds it is the leader (see the module doc).
    reader: Mutex<Reader>,
    read_fd: RawFd,
    /// Requests queued at most (the credits we offer).
    credits: u32,
    queue: Mutex<Queue>,
    /// `recv`, `pull` and `push` calls so far; the idle reader leaves the socket while this moves.
    arrivals: AtomicU64,
    /// Bytes sent ahead of their requests (`BULK_EAGER`), by rkey, until the request's reply.
    eager: Mutex<HashMap<u32, Eager>>,
    idle_reader: Mutex<Option<Thread>>,
}

/// The bytes of a small source that came with a request (see `wire::OP_BULK_EAGER`).
struct Eager {
    /// The request they came with; they go when it is replied to.
    xid: u64,
    data: Vec<u8>,
}

struct Reader {
    r: BufReader<TcpStream>,
    /// Credits granted in the `HELLO` reply; `None` until the `HELLO` came.
    granted: Option<u32>,
}

struct Queue {
    requests: VecDeque<Incoming>,
    /// `recv` callers parked until a request is queued or the socket is theirs to read.
    sleepers: Vec<Thread>,
    /// Reading has stopped: no request will come any more.
    finished: bool,
}

/// What one frame read by a leader came to.
enum Frame {
    Request(Incoming),
    /// A bulk reply or the `HELLO`, dealt with.
    Handled,
    /// The client closed the stream between frames.
    Eof,
}

/// What a leader waits for.
enum Want<'a> {
    /// A request (a `recv` caller).
    Request,
    /// The end of this `pull`/`push`, until `deadline`.
    Op(&'a BulkOp, Instant),
    /// Another thread to arrive (the idle reader).
    Arrival(u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Pull,
    Push,
}

/// A `pull` or `push` waiting for the client.
///
/// The buffer and the outcome have separate locks: the reader holds `buf` while it copies a chunk
/// from the socket, and the waiting caller must still be able to time out meanwhile.
struct BulkOp {
    kind: OpKind,
    buf: Mutex<OpBuf>,
    done: Mutex<Option<Result<(), FabricError>>>,
    cv: Condvar,
}

struct OpBuf {
    /// The puller's buffer; null once the puller has left (it may no longer be touched).
    dst: *mut u8,
    total: usize,
    received: usize,
}

// SAFETY: `dst` is only dereferenced by the reader with `buf` locked and `dst` non-null, which
// holds only while the pulling thread is inside `pull` owning that `&mut [u8]`; it nulls `dst`
// under the lock before returning (see `OpGuard`).
unsafe impl Send for BulkOp {}
// SAFETY: as above; all access to `dst` goes through the `buf` mutex.
unsafe impl Sync for BulkOp {}

impl BulkOp {
    /// Records the outcome (the first one wins) and wakes the caller.
    fn finish(&self, r: Result<(), FabricError>) {
        self.done.lock().get_or_insert(r);
        self.cv.notify_all();
    }

    fn is_done(&self) -> bool {
        self.done.lock().is_some()
    }
}

/// Unregisters an operation and revokes its buffer when the caller leaves, however it leaves.
struct OpGuard<'a> {
    inner: &'a Inner,
    id: u64,
    op: Arc<BulkOp>,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.inner.ops.lock().remove(&self.id);
        // Waits for a read into `dst` in progress: one chunk that is already arriving. A client
        // that stalls in the middle of a chunk gets its connection shut, which fails that read.
        let mut buf = match self.op.buf.try_lock_for(self.inner.timeout) {
            Some(buf) => buf,
            None => {
                self.inner.close();
                self.op.buf.lock()
            }
        };
        buf.dst = std::ptr::null_mut();
    }
}

fn start(stream: TcpStream, peer: SocketAddr, opts: &ConnOptions) -> Result<Arc<dyn ServerConn>, FabricError> {
    let peer = format!("tcp://{peer}");
    super::tune(&stream, &peer, opts.call_timeout)?;
    let dup = |s: &TcpStream| {
        s.try_clone().map_err(|source| FabricError::Io {
            op: "dup",
            peer: peer.clone(),
            source,
        })
    };
    let read = dup(&stream)?;
    // A read in the middle of a frame that makes no progress for this long fails (the connection
    // is then closed), so a client stalling mid-frame cannot hold the reading thread forever.
    read.set_read_timeout(Some(opts.call_timeout.max(Duration::from_millis(1))))
        .map_err(|source| FabricError::Io {
            op: "setsockopt SO_RCVTIMEO",
            peer: peer.clone(),
            source,
        })?;
    let read_fd = read.as_raw_fd();
    let sock = dup(&stream)?;
    let inner = Arc::new(Inner {
        peer: peer.clone(),
        max_body_in: opts.max_body,
        max_body_out: AtomicU32::new(opts.max_body),
        client_id: AtomicU64::new(0),
        timeout: opts.call_timeout,
        writer: Mutex::new(stream),
        sock,
        next_op: AtomicU64::new(1),
        ops: Mutex::new(HashMap::new()),
        closed: AtomicBool::new(false),
        close_error: Mutex::new(None),
        reader: Mutex::new(Reader {
            r: BufReader::with_capacity(super::READ_BUF, read),
            granted: None,
        }),
        read_fd,
        credits: opts.credits.max(1),
        queue: Mutex::new(Queue {
            requests: VecDeque::new(),
            sleepers: Vec::new(),
            finished: false,
        }),
        arrivals: AtomicU64::new(0),
        eager: Mutex::new(HashMap::new()),
        idle_reader: Mutex::new(None),
    });
    let rxi = Arc::clone(&inner);
    let idle = std::thread::Builder::new()
        .name("rustre-tcp-server".into())
        .spawn(move || rxi.run_idle_reader())
        .map_err(|source| FabricError::Io {
            op: "spawn reader",
            peer,
            source,
        })?;
    *inner.idle_reader.lock() = Some(idle.thread().clone());
    Ok(Arc::new(TcpServerConn { inner }))
}

impl Inner {
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.sock.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.idle_reader.lock().as_ref() {
            t.unpark();
        }
    }

    /// Reading has stopped for good (`result` says why): every waiter is told.
    fn finish(&self, result: Result<(), FabricError>) {
        let locally_closed = self.closed.load(Ordering::Acquire);
        self.close();
        // The reason is stored before the queue is marked finished, so `recv` sees it.
        match result {
            Ok(()) => tracing::debug!(peer = %self.peer, "client closed the connection"),
            Err(FabricError::Closed(_)) => tracing::debug!(peer = %self.peer, "client reset the connection"),
            Err(e) if !locally_closed => {
                tracing::warn!(peer = %self.peer, error = %e, "closing connection");
                *self.close_error.lock() = Some(e);
            }
            Err(_) => {}
        }
        {
            let mut q = self.queue.lock();
            q.finished = true;
            for t in q.sleepers.drain(..) {
                t.unpark();
            }
        }
        let ops: Vec<Arc<BulkOp>> = self.ops.lock().values().cloned().collect();
        for op in ops {
            op.finish(Err(FabricError::Closed(self.peer.clone())));
        }
    }

    /// Reads and handles frames until what `want` waits for has happened (a request is
    /// returned to a `recv` leader), or reading stops.
    fn lead(&self, rd: &mut Reader, want: Want<'_>) -> Option<Incoming> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                // Whatever the socket still holds is read until the end of the stream.
                if rd.r.buffer().is_empty() && !poll_readable(self.read_fd, Duration::ZERO) {
                    self.finish(Ok(()));
                    return None;
                }
            }
            let mut wait = IDLE_TICK * 50;
            match want {
                Want::Op(op, _) if op.is_done() => return None,
                Want::Op(_, deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    wait = deadline - now;
                }
                Want::Arrival(seen) if self.arrivals.load(Ordering::Acquire) != seen => return None,
                Want::Arrival(_) => wait = IDLE_TICK,
                Want::Request => {}
            }
            if rd.r.buffer().is_empty() && !poll_readable(self.read_fd, wait) {
                continue;
            }
            match self.read_frame(rd) {
                Ok(Frame::Handled) => {}
                Ok(Frame::Request(req)) => match want {
                    Want::Request => return Some(req),
                    _ => {
                        if let Err(e) = self.enqueue(req, rd.granted.unwrap_or(0)) {
                            self.finish(Err(e));
                            return None;
                        }
                    }
                },
                Ok(Frame::Eof) => {
                    self.finish(Ok(()));
                    return None;
                }
                Err(e) => {
                    self.finish(Err(e));
                    return None;
                }
            }
        }
    }

    /// Queues a request for a `recv` caller and wakes one.
    fn enqueue(&self, req: Incoming, granted: u32) -> Result<(), FabricError> {
        let mut q = self.queue.lock();
        if q.requests.len() >= self.credits as usize {
            return Err(wire::violation(
                &self.peer,
                "credits",
                format!("more than {} requests queued ({granted} granted)", self.credits),
            ));
        }
        q.requests.push_back(req);
        if let Some(t) = q.sleepers.pop() {
            t.unpark();
        }
        Ok(())
    }

    /// After leading: passes the socket on to the threads still waiting: a `pull`/`push` and a
    /// `recv` caller (the former may find its transfer done and leave without reading).
    fn hand_on(&self) {
        let waiting_op = self.ops.lock().values().find(|op| !op.is_done()).cloned();
        if let Some(op) = waiting_op {
            let _done = op.done.lock();
            op.cv.notify_all();
        }
        if let Some(t) = self.queue.lock().sleepers.pop() {
            t.unpark();
        }
    }

    /// Reads the socket while no thread waits on the connection (before the service's first
    /// `recv`, or while every service thread is busy): the `HELLO` is answered, requests queue
    /// (a client exceeding its credits is closed), a client that leaves is noticed.
    fn run_idle_reader(self: Arc<Self>) {
        let mut seen = self.arrivals.load(Ordering::Acquire);
        let mut first = true;
        while !self.closed.load(Ordering::Acquire) {
            if !first {
                std::thread::park_timeout(IDLE_TICK);
            }
            first = false;
            let now = self.arrivals.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                continue;
            }
            let Some(mut rd) = self.reader.try_lock() else { continue };
            self.lead(&mut rd, Want::Arrival(seen));
            drop(rd);
            self.hand_on();
            seen = self.arrivals.load(Ordering::Acquire);
        }
    }

    /// Reads one frame and deals with it, except a request, which is returned.
    fn read_frame(&self, rd: &mut Reader) -> Result<Frame, FabricError> {
        let peer = self.peer.as_str();
        let r = &mut rd.r;
        let h = match wire::read_header(r, self.max_body_in, peer)? {
            ReadHeader::Eof => return Ok(Frame::Eof),
            ReadHeader::Frame(h) => h,
        };
        if rd.granted.is_none() {
            if h.opcode != wire::OP_HELLO || h.flags != FLAG_FABRIC || h.body_len as usize != wire::HELLO_LEN {
                return Err(wire::violation(peer, "hello", "the first frame must be a HELLO"));
            }
            let body = wire::read_body(r, wire::HELLO_LEN, peer)?;
            let (want, their_max) = (wire::u32_at(&body, 0), wire::u32_at(&body, 4));
            if their_max < MIN_MAX_BODY {
                return Err(wire::violation(
                    peer,
                    "hello.max_body",
                    format!("{their_max} < {MIN_MAX_BODY}"),
                ));
            }
            let granted = want.clamp(1, self.credits);
            let max_out = their_max.min(self.max_body_in);
            self.max_body_out.store(max_out, Ordering::Release);
            self.client_id.store(h.client_id, Ordering::Release);
            let ack = wire::fabric_reply(wire::OP_HELLO, 0, h.xid, wire::HELLO_LEN);
            wire::write_frame(&mut *self.writer.lock(), &ack, &[&wire::hello_body(granted, max_out)])
                .map_err(|e| wire::io_err("send", peer, e))?;
            rd.granted = Some(granted);
            return Ok(Frame::Handled);
        }
        if h.flags & FLAG_FABRIC != 0 {
            if h.flags == FLAG_FABRIC && h.opcode == wire::OP_BULK_EAGER {
                self.on_eager(r, &h, rd.granted.unwrap_or(0))?;
                return Ok(Frame::Handled);
            }
            if h.flags & FLAG_REPLY == 0 {
                return Err(wire::violation(peer, "frame.flags", "fabric request sent to a server"));
            }
            match h.opcode {
                wire::OP_BULK_DATA => self.on_data(r, &h)?,
                wire::OP_BULK_ACK => self.on_ack(r, &h)?,
                other => {
                    return Err(wire::violation(
                        peer,
                        "frame.opcode",
                        format!("unknown fabric opcode {other}"),
                    ));
                }
            }
            Ok(Frame::Handled)
        } else if h.flags != 0 {
            Err(wire::violation(
                peer,
                "frame.flags",
                format!("{:#x} on a request", h.flags),
            ))
        } else {
            let body = wire::read_body(r, h.body_len as usize, peer)?;
            Ok(Frame::Request(Incoming { header: h, body }))
        }
    }

    fn op(&self, h: &FrameHeader, kind: OpKind) -> Result<Option<Arc<BulkOp>>, FabricError> {
        let op = self.ops.lock().get(&h.xid).cloned();
        match op {
            Some(op) if op.kind != kind => Err(wire::violation(
                &self.peer,
                "frame.opcode",
                "bulk reply of the wrong kind",
            )),
            op => Ok(op),
        }
    }

    fn refusal(&self, r: &mut impl Read, h: &FrameHeader) -> Result<FabricError, FabricError> {
        let len = h.body_len as usize;
        if len > wire::MAX_REFUSAL {
            return Err(wire::violation(
                &self.peer,
                "bulk.refusal",
                format!("{len} bytes of text"),
            ));
        }
        let text = wire::read_body(r, len, &self.peer)?;
        Ok(FabricError::BulkRefused(format!(
            "{}: {}",
            self.peer,
            String::from_utf8_lossy(&text)
        )))
    }

    fn on_data(&self, r: &mut BufReader<TcpStream>, h: &FrameHeader) -> Result<(), FabricError> {
        let len = h.body_len as usize;
        let Some(op) = self.op(h, OpKind::Pull)? else {
            // The puller gave up (timeout); drop its late bytes.
            return wire::discard(r, len as u64, &self.peer);
        };
        if h.flags & FLAG_ERROR != 0 {
            op.finish(Err(self.refusal(r, h)?));
            return Ok(());
        }
        let mut buf = op.buf.lock();
        if buf.dst.is_null() || op.is_done() {
            drop(buf);
            return wire::discard(r, len as u64, &self.peer);
        }
        {
            if buf.received + len > buf.total {
                return Err(wire::violation(
                    &self.peer,
                    "bulk_data.len",
                    "more bytes than were asked for",
                ));
            }
            // SAFETY: `dst` is non-null and `buf` is locked, so the puller is inside `pull` and its
            // buffer `dst..dst+total` is valid and not otherwise accessed; the range was checked above.
            let dst = unsafe { std::slice::from_raw_parts_mut(buf.dst.add(buf.received), len) };
            wire::read_payload(r, dst, &self.peer)?;
            buf.received += len;
        }
        if buf.received == buf.total {
            drop(buf);
            op.finish(Ok(()));
        }
        Ok(())
    }

    /// `BULK_EAGER`: keeps the bytes for the request that follows. One per granted credit at most
    /// (each belongs to a request not yet replied to), each of at most `EAGER_MAX` bytes.
    fn on_eager(&self, r: &mut impl Read, h: &FrameHeader, granted: u32) -> Result<(), FabricError> {
        let len = h.body_len as usize;
        if !(wire::PUT_PREFIX..=wire::PUT_PREFIX + wire::EAGER_MAX).contains(&len) {
            return Err(wire::violation(
                &self.peer,
                "bulk_eager.len",
                format!("{len} bytes (at most {} + {})", wire::PUT_PREFIX, wire::EAGER_MAX),
            ));
        }
        let prefix = wire::read_body(r, wire::PUT_PREFIX, &self.peer)?;
        let (rkey, offset) = (wire::u32_at(&prefix, 0), wire::u64_at(&prefix, 8));
        if offset != 0 {
            return Err(wire::violation(
                &self.peer,
                "bulk_eager.offset",
                format!("{offset}, not 0"),
            ));
        }
        let eager = self.eager.lock();
        if eager.len() >= granted as usize && !eager.contains_key(&rkey) {
            return Err(wire::violation(
                &self.peer,
                "bulk_eager",
                format!("more than {granted} eager transfers outstanding ({granted} credits granted)"),
            ));
        }
        drop(eager);
        // Read outside the lock: a pull looking for other bytes must not wait for this socket.
        let data = wire::read_body(r, len - wire::PUT_PREFIX, &self.peer)?;
        self.eager.lock().insert(rkey, Eager { xid: h.xid, data });
        Ok(())
    }

    /// Serves a pull from bytes that came eagerly, when they cover it.
    fn pull_eager(&self, desc: &BulkDesc, offset: u64, dst: &mut [u8]) -> bool {
        let eager = self.eager.lock();
        let Some(e) = eager.get(&desc.rkey) else { return false };
        let Ok(from) = usize::try_from(offset) else {
            return false;
        };
        match from.checked_add(dst.len()) {
            Some(end) if end <= e.data.len() => {
                dst.copy_from_slice(&e.data[from..end]);
                true
            }
            _ => false,
        }
    }

    fn on_ack(&self, r: &mut impl Read, h: &FrameHeader) -> Result<(), FabricError> {
        let Some(op) = self.op(h, OpKind::Push)? else {
            return wire::discard(r, u64::from(h.body_len), &self.peer);
        };
        let result = if h.flags & FLAG_ERROR != 0 {
            Err(self.refusal(r, h)?)
        } else {
            wire::discard(r, u64::from(h.body_len), &self.peer)?;
            Ok(())
        };
        op.finish(result);
        Ok(())
    }

    fn begin(&self, kind: OpKind, dst: *mut u8, total: usize) -> Result<OpGuard<'_>, FabricError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(FabricError::Closed(self.peer.clone()));
        }
        let op = Arc::new(BulkOp {
            kind,
            buf: Mutex::new(OpBuf {
                dst,
                total,
                received: 0,
            }),
            done: Mutex::new(None),
            cv: Condvar::new(),
        });
        let id = self.next_op.fetch_add(1, Ordering::Relaxed);
        self.ops.lock().insert(id, Arc::clone(&op));
        // The reader may have finished between the check above and the insert; look again so the
        // op cannot wait for a reader that is gone.
        if self.closed.load(Ordering::Acquire) {
            self.ops.lock().remove(&id);
            return Err(FabricError::Closed(self.peer.clone()));
        }
        Ok(OpGuard { inner: self, id, op })
    }

    fn wait(&self, g: &OpGuard<'_>, start: Instant) -> Result<(), FabricError> {
        let deadline = start + self.timeout;
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        loop {
            let mut done = g.op.done.lock();
            if let Some(r) = done.take() {
                return r;
            }
            if Instant::now() >= deadline {
                return Err(FabricError::Timeout {
                    peer: self.peer.clone(),
                    after_ms: start.elapsed().as_millis() as u64,
                });
            }
            // Under `done`, so that a leader handing the socket on (which notifies under it)
            // cannot slip in between this look and the wait.
            if let Some(mut rd) = self.reader.try_lock() {
                drop(done);
                self.lead(&mut rd, Want::Op(&g.op, deadline));
                drop(rd);
                self.hand_on();
                continue;
            }
            g.op.cv.wait_until(&mut done, deadline);
        }
    }

    /// Sends one frame; a failed send may have left half a frame on the stream, so it closes the
    /// connection.
    fn send(&self, h: &FrameHeader, parts: &[&[u8]]) -> Result<(), FabricError> {
        let sent = wire::write_frame(&mut *self.writer.lock(), h, parts);
        sent.map_err(|e| {
            self.close();
            wire::io_err("send", &self.peer, e)
        })
    }
}

impl TcpServerConn {
    /// Sends `src` into the client's exposed `desc` at `offset` as `BULK_PUT` chunks; waits for
    /// the client's `BULK_ACK` unless `posted`.
    fn push_as(&self, desc: &BulkDesc, offset: u64, src: &[u8], posted: bool) -> Result<(), FabricError> {
        let start = Instant::now();
        let inner = &*self.inner;
        let g = inner.begin(OpKind::Push, std::ptr::null_mut(), 0)?;
        let client_id = inner.client_id.load(Ordering::Acquire);
        let chunk = inner.max_body_out.load(Ordering::Acquire) as usize - wire::PUT_PREFIX;
        let chunks: Vec<&[u8]> = if src.is_empty() {
            vec![src]
        } else {
            src.chunks(chunk).collect()
        };
        let n = chunks.len();
        let mut at = offset;
        for (i, part) in chunks.into_iter().enumerate() {
            if g.op.is_done() {
                break; // refused already
            }
            let flags = match (i + 1 == n, posted) {
                (false, _) => 0,
                (true, false) => wire::PUT_LAST,
                (true, true) => wire::PUT_LAST | wire::PUT_POSTED,
            };
            let prefix = wire::put_prefix(desc.rkey, flags, at);
            let h = wire::fabric_header(wire::OP_BULK_PUT, 0, g.id, client_id, wire::PUT_PREFIX + part.len());
            inner.send(&h, &[&prefix, part])?;
            at = at
                .checked_add(part.len() as u64)
                .ok_or_else(|| FabricError::BulkRefused(format!("push offset {offset} + {} overflows", src.len())))?;
        }
        if posted {
            // Sent: the client checks the bytes against the reply's crc32c and fails its call
            // itself if it refused them. A late refusal finds the operation gone and is dropped.
            return Ok(());
        }
        inner.wait(&g, start)
    }
}

impl ServerConn for TcpServerConn {
    fn recv(&self) -> Result<Incoming, FabricError> {
        let inner = &*self.inner;
        inner.arrivals.fetch_add(1, Ordering::AcqRel);
        let me = std::thread::current();
        loop {
            {
                let mut q = inner.queue.lock();
                if let Some(req) = q.requests.pop_front() {
                    return Ok(req);
                }
                if q.finished {
                    return Err(inner
                        .close_error
                        .lock()
                        .take()
                        .unwrap_or_else(|| FabricError::Closed(inner.peer.clone())));
                }
                // Registered before looking at the socket: a leader that leaves after our look
                // finds us here and unparks us.
                q.sleepers.push(me.clone());
            }
            let unregister = || inner.queue.lock().sleepers.retain(|t| t.id() != me.id());
            if let Some(mut rd) = inner.reader.try_lock() {
                unregister();
                let got = inner.lead(&mut rd, Want::Request);
                drop(rd);
                inner.hand_on();
                match got {
                    Some(req) => return Ok(req),
                    None => continue,
                }
            }
            std::thread::park();
            unregister();
        }
    }

    fn reply(&self, to: &FrameHeader, opcode: u16, body: &[u8], error: bool) -> Result<(), FabricError> {
        let max = self.inner.max_body_out.load(Ordering::Acquire) as usize;
        if body.len() > max {
            return Err(FabricError::TooLarge { len: body.len(), max });
        }
        {
            let mut eager = self.inner.eager.lock();
            if !eager.is_empty() {
                eager.retain(|_, e| e.xid != to.xid);
            }
        }
        self.inner.send(&to.reply_to(opcode, body.len() as u32, error), &[body])
    }

    fn pull(&self, desc: &BulkDesc, offset: u64, dst: &mut [u8]) -> Result<(), FabricError> {
        let start = Instant::now();
        let inner = &*self.inner;
        if inner.pull_eager(desc, offset, dst) {
            return Ok(());
        }
        let g = inner.begin(OpKind::Pull, dst.as_mut_ptr(), dst.len())?;
        let client_id = inner.client_id.load(Ordering::Acquire);
        let h = wire::fabric_header(wire::OP_BULK_GET, 0, g.id, client_id, wire::GET_LEN);
        inner.send(&h, &[&wire::get_body(desc.rkey, offset, dst.len() as u64)])?;
        inner.wait(&g, start)
    }

    fn push(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError> {
        self.push_as(desc, offset, src, false)
    }

    fn push_posted(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError> {
        self.push_as(desc, offset, src, true)
    }

    fn backlog(&self) -> bool {
        let inner = &*self.inner;
        if !inner.queue.lock().requests.is_empty() {
            return true;
        }
        // Another thread reading the socket may be reading a request right now.
        let Some(rd) = inner.reader.try_lock() else { return true };
        !rd.r.buffer().is_empty() || poll_readable(inner.read_fd, Duration::ZERO)
    }

    fn peer(&self) -> String {
        self.inner.peer.clone()
    }

    fn client_id(&self) -> u64 {
        self.inner.client_id.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.inner.close();
    }
}

impl Drop for TcpServerConn {
    fn drop(&mut self) {
        self.inner.close();
    }
}
