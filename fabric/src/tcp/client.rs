//! The client end of a tcp connection: callers write requests under one writer lock and read
//! the socket themselves, leader/follower style: one waiting caller at a time (the leader) reads
//! frames, hands other callers their replies by xid, serves the server's bulk requests from the
//! regions the calls expose, and once it has its own reply passes the socket on to another waiting
//! caller. A call therefore costs no thread hand-off when it is the only one in flight. An idle
//! reader thread takes over only when no call has been made for a while (late replies of
//! abandoned calls, bulk requests for revoked keys, the server closing).

use super::exposed::{CreditWait, Credits, RegionTable};
use super::wire::{self, ReadHeader};
use super::{IDLE_TICK, poll_readable};
use crate::{Bulk, BulkDesc, ClientConn, ConnOptions, FabricError, Reply};
use parking_lot::Mutex;
use rustre_proto::FrameHeader;
use rustre_proto::frame::{FLAG_ERROR, FLAG_FABRIC, FLAG_REPLY};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Smallest frame body limit a peer may announce (bulk chunks need room past their prefix).
pub(crate) const MIN_MAX_BODY: u32 = 4096;

/// A connected tcp client; cheap to share (`Arc<dyn ClientConn>`).
pub struct TcpClient {
    inner: Arc<Inner>,
}

struct Inner {
    peer: String,
    client_id: u64,
    /// Negotiated: the smaller of both ends' limits.
    max_body: u32,
    call_timeout: Duration,
    writer: Mutex<TcpStream>,
    /// Another handle on the socket, to shut it down without the writer lock.
    sock: TcpStream,
    next_xid: AtomicU64,
    /// The read side of the socket; whoever holds it is the leader (see the module doc).
    reader: Mutex<BufReader<TcpStream>>,
    read_fd: RawFd,
    /// Calls started so far; the idle reader leaves the socket to callers while this moves.
    calls: AtomicU64,
    waiting: Waiting,
    credits: Credits,
    regions: RegionTable,
    closed: AtomicBool,
    idle_reader: Mutex<Option<Thread>>,
}

/// Calls waiting for their replies, by xid. Each waiter parks its own thread; whoever reads its
/// reply stores it in the slot and unparks it.
struct Waiting {
    state: Mutex<WaitState>,
}

struct WaitState {
    calls: HashMap<u64, Slot>,
    closed: bool,
}

enum Slot {
    /// A caller waits (its reply once it has come).
    Call {
        thread: Thread,
        reply: Option<Result<Reply, FabricError>>,
    },
    /// The caller timed out but left its credit with the request: the server still holds it and
    /// returns it with the (late) reply.
    Abandoned,
}

/// What happened to a reply handed to [`Waiting::complete`].
#[derive(Debug, PartialEq, Eq)]
enum Completion {
    Delivered,
    /// Its caller had given up and left its credit behind: return that credit now.
    Abandoned,
    Unknown,
}

impl Waiting {
    fn new() -> Self {
        Self {
            state: Mutex::new(WaitState {
                calls: HashMap::new(),
                closed: false,
            }),
        }
    }

    /// Registers the calling thread as waiting on `xid`; false once the connection is closed.
    fn register(&self, xid: u64) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        let thread = std::thread::current();
        st.calls.insert(xid, Slot::Call { thread, reply: None });
        true
    }

    /// The reply of `xid` if it has come (the slot is then gone).
    fn take(&self, xid: u64) -> Option<Result<Reply, FabricError>> {
        let mut st = self.state.lock();
        match st.calls.get_mut(&xid) {
            Some(Slot::Call { reply, .. }) if reply.is_some() => {
                let r = reply.take();
                st.calls.remove(&xid);
                r
            }
            _ => None,
        }
    }

    fn has_reply(&self, xid: u64) -> bool {
        matches!(
            self.state.lock().calls.get(&xid),
            Some(Slot::Call { reply: Some(_), .. })
        )
    }

    fn complete(&self, xid: u64, r: Result<Reply, FabricError>) -> Completion {
        let mut st = self.state.lock();
        match st.calls.get_mut(&xid) {
            Some(Slot::Call { thread, reply }) if reply.is_none() => {
                *reply = Some(r);
                thread.unpark();
                Completion::Delivered
            }
            Some(Slot::Abandoned) => {
                st.calls.remove(&xid);
                Completion::Abandoned
            }
            _ => Completion::Unknown,
        }
    }

    /// Forgets `xid` (its request never went out whole).
    fn cancel(&self, xid: u64) {
        self.state.lock().calls.remove(&xid);
    }

    /// Gives up on `xid`: its reply if it raced in, else the slot is marked abandoned (keeping the
    /// credit until the late reply comes).
    fn abandon(&self, xid: u64) -> Option<Result<Reply, FabricError>> {
        let mut st = self.state.lock();
        match st.calls.get_mut(&xid) {
            Some(Slot::Call { reply, .. }) if reply.is_some() => {
                let r = reply.take();
                st.calls.remove(&xid);
                r
            }
            Some(slot) => {
                *slot = Slot::Abandoned;
                None
            }
            None => None,
        }
    }

    /// Wakes one caller other than `me` that still waits, to take over reading.
    fn wake_one(&self, me: Option<u64>) -> bool {
        let st = self.state.lock();
        for (xid, slot) in st.calls.iter() {
            if let Slot::Call { thread, reply: None } = slot
                && Some(*xid) != me
            {
                thread.unpark();
                return true;
            }
        }
        false
    }

    fn any_waiting(&self) -> bool {
        self.state
            .lock()
            .calls
            .values()
            .any(|s| matches!(s, Slot::Call { reply: None, .. }))
    }

    /// Fails every waiting call with `err()` and refuses new ones.
    fn close_all(&self, err: impl Fn() -> FabricError) {
        let mut st = self.state.lock();
        st.closed = true;
        for slot in st.calls.values_mut() {
            if let Slot::Call { thread, reply } = slot
                && reply.is_none()
            {
                *reply = Some(Err(err()));
                thread.unpark();
            }
        }
    }
}

/// Connects, exchanges `HELLO` (credits and frame limits) and starts the reader thread.
pub(crate) fn connect(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    let peer = format!("tcp://{addr}");
    if opts.max_body < MIN_MAX_BODY {
        return Err(FabricError::TooLarge {
            len: MIN_MAX_BODY as usize,
            max: opts.max_body as usize,
        });
    }
    let stream = TcpStream::connect_timeout(&addr, opts.connect_timeout).map_err(|source| FabricError::Io {
        op: "connect",
        peer: peer.clone(),
        source,
    })?;
    super::tune(&stream, &peer, opts.call_timeout)?;
    let mut rw = stream.try_clone().map_err(|source| FabricError::Io {
        op: "dup",
        peer: peer.clone(),
        source,
    })?;
    let hello = wire::fabric_header(wire::OP_HELLO, 0, 0, opts.client_id, wire::HELLO_LEN);
    wire::write_frame(&mut rw, &hello, &[&wire::hello_body(opts.credits, opts.max_body)])
        .map_err(|e| wire::io_err("send", &peer, e))?;
    rw.set_read_timeout(Some(opts.connect_timeout.max(Duration::from_millis(1))))
        .map_err(|source| FabricError::Io {
            op: "setsockopt",
            peer: peer.clone(),
            source,
        })?;
    let (credits, max_body) = read_hello(&mut rw, opts, &peer)?;
    // A read in the middle of a frame that makes no progress for this long fails (the
    // connection is then closed), so a stalled server cannot hold the reading caller forever.
    rw.set_read_timeout(Some(opts.call_timeout.max(Duration::from_millis(1))))
        .map_err(|source| FabricError::Io {
            op: "setsockopt",
            peer: peer.clone(),
            source,
        })?;

    let sock = stream.try_clone().map_err(|source| FabricError::Io {
        op: "dup",
        peer: peer.clone(),
        source,
    })?;
    let read_fd = rw.as_raw_fd();
    let inner = Arc::new(Inner {
        peer: peer.clone(),
        sock,
        client_id: opts.client_id,
        max_body,
        call_timeout: opts.call_timeout,
        writer: Mutex::new(stream),
        next_xid: AtomicU64::new(1),
        reader: Mutex::new(BufReader::with_capacity(super::READ_BUF, rw)),
        read_fd,
        calls: AtomicU64::new(0),
        waiting: Waiting::new(),
        credits: Credits::new(credits),
        regions: RegionTable::new(),
        closed: AtomicBool::new(false),
        idle_reader: Mutex::new(None),
    });
    let rx = Arc::clone(&inner);
    let idle = std::thread::Builder::new()
        .name("rustre-tcp-client".into())
        .spawn(move || rx.run_idle_reader())
        .map_err(|source| FabricError::Io {
            op: "spawn reader",
            peer,
            source,
        })?;
    *inner.idle_reader.lock() = Some(idle.thread().clone());
    Ok(Arc::new(TcpClient { inner }))
}

fn read_hello(r: &mut TcpStream, opts: &ConnOptions, peer: &str) -> Result<(u32, u32), FabricError> {
    let timeout = |e: FabricError| match e {
        FabricError::Io { ref source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            FabricError::Timeout {
                peer: peer.to_string(),
                after_ms: opts.connect_timeout.as_millis() as u64,
            }
        }
        e => e,
    };
    let h = match wire::read_header(r, opts.max_body, peer).map_err(timeout)? {
        ReadHeader::Frame(h) => h,
        ReadHeader::Eof => return Err(FabricError::Closed(peer.to_string())),
    };
    if h.opcode != wire::OP_HELLO
        || h.flags & (FLAG_FABRIC | FLAG_REPLY) != (FLAG_FABRIC | FLAG_REPLY)
        || h.body_len as usize != wire::HELLO_LEN
    {
        return Err(wire::violation(
            peer,
            "hello",
            "expected a HELLO reply as the first frame",
        ));
    }
    let body = wire::read_body(r, wire::HELLO_LEN, peer).map_err(timeout)?;
    let (credits, max_body) = (wire::u32_at(&body, 0), wire::u32_at(&body, 4));
    if credits == 0 || max_body < MIN_MAX_BODY {
        return Err(wire::violation(
            peer,
            "hello",
            format!("server grants {credits} credits, {max_body} byte frames"),
        ));
    }
    Ok((credits.min(opts.credits.max(1)), max_body.min(opts.max_body)))
}

impl Inner {
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Both);
        self.waiting.close_all(|| FabricError::Closed(self.peer.clone()));
        self.credits.close();
        if let Some(t) = self.idle_reader.lock().as_ref() {
            t.unpark();
        }
    }

    /// Sends the request (after the `BULK_EAGER` frame of `eager`: rkey, offset 0, bytes) and
    /// waits for its reply.
    fn roundtrip(
        &self,
        xid: Option<u64>,
        opcode: u16,
        body: &[u8],
        eager: Option<(u32, &[u8])>,
    ) -> Result<Reply, FabricError> {
        if body.len() > self.max_body as usize {
            return Err(FabricError::TooLarge {
                len: body.len(),
                max: self.max_body as usize,
            });
        }
        let start = Instant::now();
        let deadline = start + self.call_timeout;
        let timed_out = || FabricError::Timeout {
            peer: self.peer.clone(),
            after_ms: start.elapsed().as_millis() as u64,
        };
        let credit = self.credits.acquire(deadline).map_err(|w| match w {
            CreditWait::TimedOut => timed_out(),
            CreditWait::Closed => FabricError::Closed(self.peer.clone()),
        })?;
        let xid = xid.unwrap_or_else(|| self.next_xid.fetch_add(1, Ordering::Relaxed));
        if !self.waiting.register(xid) {
            return Err(FabricError::Closed(self.peer.clone()));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let header = FrameHeader::request(opcode, xid, self.client_id, body.len() as u32);
        let sent = match eager {
            Some((rkey, data)) => {
                let eh = wire::fabric_header(
                    wire::OP_BULK_EAGER,
                    0,
                    xid,
                    self.client_id,
                    wire::PUT_PREFIX + data.len(),
                );
                let (eh, prefix, h) = (eh.encode(), wire::put_prefix(rkey, 0, 0), header.encode());
                wire::write_parts(&mut *self.writer.lock(), &[&eh, &prefix, data, &h, body])
            }
            None => wire::write_frame(&mut *self.writer.lock(), &header, &[body]),
        };
        if let Err(e) = sent {
            self.waiting.cancel(xid);
            let err = wire::io_err("send", &self.peer, e);
            self.close();
            return Err(err);
        }
        loop {
            if let Some(reply) = self.waiting.take(xid) {
                return reply;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Some(mut r) = self.reader.try_lock() {
                self.lead(&mut r, Some(xid), deadline);
                drop(r);
                self.hand_on(Some(xid));
                continue;
            }
            // The leader hands us our reply, or the socket when it leaves.
            std::thread::park_timeout(deadline - now);
        }
        match self.waiting.abandon(xid) {
            Some(reply) => reply,
            None => {
                // The server still counts this request against our credits until it replies.
                credit.leave();
                Err(timed_out())
            }
        }
    }

    /// Reads and handles frames until `me`'s reply has come, `deadline` passes or the connection
    /// closes (`me` = None: until a call starts, for the idle reader).
    fn lead(&self, r: &mut BufReader<TcpStream>, me: Option<u64>, deadline: Instant) {
        let calls = self.calls.load(Ordering::Relaxed);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            match me {
                Some(xid) if self.waiting.has_reply(xid) => return,
                None if self.calls.load(Ordering::Relaxed) != calls => return,
                _ => {}
            }
            if r.buffer().is_empty() {
                let now = Instant::now();
                if now >= deadline {
                    return;
                }
                if !poll_readable(self.read_fd, deadline - now) {
                    continue;
                }
            }
            match self.read_frame(r) {
                Ok(true) => {}
                result => {
                    self.reader_stopped(result.map(|_| ()));
                    return;
                }
            }
        }
    }

    /// After leading: passes the socket on to a caller still waiting, if any.
    fn hand_on(&self, me: Option<u64>) {
        self.waiting.wake_one(me);
    }

    fn reader_stopped(&self, result: Result<(), FabricError>) {
        match result {
            Ok(()) | Err(FabricError::Closed(_)) => tracing::debug!(peer = %self.peer, "server closed the connection"),
            Err(e) if !self.closed.load(Ordering::Acquire) => {
                tracing::warn!(peer = %self.peer, error = %e, "closing connection")
            }
            Err(_) => {}
        }
        self.close();
    }

    /// Reads the socket while no call is being made: late replies of abandoned calls return
    /// their credits, bulk requests for revoked keys are refused at once, a server that closes is
    /// noticed. Leaves the socket to callers as soon as one starts.
    fn run_idle_reader(self: Arc<Self>) {
        let mut seen = self.calls.load(Ordering::Relaxed);
        while !self.closed.load(Ordering::Acquire) {
            std::thread::park_timeout(IDLE_TICK);
            let now = self.calls.load(Ordering::Relaxed);
            if now != seen || self.waiting.any_waiting() {
                seen = now;
                continue;
            }
            let Some(mut r) = self.reader.try_lock() else { continue };
            self.lead(&mut r, None, Instant::now() + Duration::from_secs(3600));
            drop(r);
            self.hand_on(None);
            seen = self.calls.load(Ordering::Relaxed);
        }
    }

    /// Reads one frame and handles it; false at a clean end of stream.
    fn read_frame(&self, r: &mut BufReader<TcpStream>) -> Result<bool, FabricError> {
        let h = match wire::read_header(r, self.max_body, &self.peer)? {
            ReadHeader::Eof => return Ok(false),
            ReadHeader::Frame(h) => h,
        };
        if h.flags & FLAG_FABRIC != 0 {
            if h.flags & FLAG_REPLY != 0 {
                return Err(wire::violation(
                    &self.peer,
                    "frame.flags",
                    "fabric reply sent to a client",
                ));
            }
            match h.opcode {
                wire::OP_BULK_GET => self.serve_get(r, &h)?,
                wire::OP_BULK_PUT => self.serve_put(r, &h)?,
                other => {
                    return Err(wire::violation(
                        &self.peer,
                        "frame.opcode",
                        format!("unknown fabric opcode {other}"),
                    ));
                }
            }
        } else if h.flags & FLAG_REPLY != 0 {
            let body = wire::read_body(r, h.body_len as usize, &self.peer)?;
            match self.waiting.complete(h.xid, Ok(Reply { header: h, body })) {
                Completion::Delivered => {}
                Completion::Abandoned => self.credits.release(),
                Completion::Unknown => tracing::debug!(peer = %self.peer, xid = h.xid, "reply nobody waits for"),
            }
        } else {
            return Err(wire::violation(
                &self.peer,
                "frame.flags",
                "server sent a request to a client",
            ));
        }
        Ok(true)
    }

    fn send_refusal(&self, opcode: u16, xid: u64, why: &str) -> Result<(), FabricError> {
        let mut text = why.as_bytes();
        text = &text[..text.len().min(wire::MAX_REFUSAL)];
        let h = wire::fabric_reply(opcode, FLAG_ERROR, xid, text.len());
        wire::write_frame(&mut *self.writer.lock(), &h, &[text]).map_err(|e| wire::io_err("send", &self.peer, e))
    }

    /// `BULK_GET`: send the asked bytes as `BULK_DATA` chunks, straight from the lent buffer.
    fn serve_get(&self, r: &mut impl Read, h: &FrameHeader) -> Result<(), FabricError> {
        if h.body_len as usize != wire::GET_LEN {
            return Err(wire::violation(
                &self.peer,
                "bulk_get.len",
                format!("{} bytes", h.body_len),
            ));
        }
        let b = wire::read_body(r, wire::GET_LEN, &self.peer)?;
        let (rkey, offset, len) = (wire::u32_at(&b, 0), wire::u64_at(&b, 8), wire::u64_at(&b, 16));
        let chunk = self.max_body as usize;
        let sent = self
            .regions
            .with_read(rkey, offset, len, |bytes| -> Result<(), FabricError> {
                let send = |part: &[u8]| {
                    let dh = wire::fabric_reply(wire::OP_BULK_DATA, 0, h.xid, part.len());
                    wire::write_frame(&mut *self.writer.lock(), &dh, &[part])
                        .map_err(|e| wire::io_err("send", &self.peer, e))
                };
                if bytes.is_empty() {
                    return send(bytes);
                }
                bytes.chunks(chunk).try_for_each(send)
            });
        match sent {
            Ok(result) => result,
            Err(why) => {
                tracing::debug!(peer = %self.peer, %why, "refusing bulk get");
                self.send_refusal(wire::OP_BULK_DATA, h.xid, &why)
            }
        }
    }

    /// `BULK_PUT`: copy the chunk from the socket straight into the lent buffer; ack the last one.
    fn serve_put(&self, r: &mut BufReader<TcpStream>, h: &FrameHeader) -> Result<(), FabricError> {
        let body_len = h.body_len as usize;
        if body_len < wire::PUT_PREFIX {
            return Err(wire::violation(&self.peer, "bulk_put.len", format!("{body_len} bytes")));
        }
        let p = wire::read_body(r, wire::PUT_PREFIX, &self.peer)?;
        let (rkey, flags, offset) = (wire::u32_at(&p, 0), wire::u32_at(&p, 4), wire::u64_at(&p, 8));
        let last = flags & wire::PUT_LAST != 0;
        let posted = last && flags & wire::PUT_POSTED != 0;
        if posted {
            self.regions.mark_posted(rkey);
        }
        let len = (body_len - wire::PUT_PREFIX) as u64;
        let copied = self
            .regions
            .with_write(rkey, offset, len, |dst| wire::read_payload(r, dst, &self.peer));
        match copied {
            Ok(result) => {
                result?;
                if last && !posted {
                    let ah = wire::fabric_reply(wire::OP_BULK_ACK, 0, h.xid, 0);
                    wire::write_frame(&mut *self.writer.lock(), &ah, &[])
                        .map_err(|e| wire::io_err("send", &self.peer, e))?;
                }
                Ok(())
            }
            Err(why) => {
                wire::discard(r, len, &self.peer)?;
                tracing::debug!(peer = %self.peer, %why, "refusing bulk put");
                self.send_refusal(wire::OP_BULK_ACK, h.xid, &why)
            }
        }
    }
}

impl ClientConn for TcpClient {
    fn call(&self, opcode: u16, body: &[u8]) -> Result<Reply, FabricError> {
        self.inner.roundtrip(None, opcode, body, None)
    }

    fn call_with_xid(&self, xid: u64, opcode: u16, body: &[u8]) -> Option<Result<Reply, FabricError>> {
        Some(self.inner.roundtrip(Some(xid), opcode, body, None))
    }

    fn call_bulk(
        &self,
        opcode: u16,
        mut bulk: Bulk<'_>,
        body: &mut dyn FnMut(BulkDesc) -> Vec<u8>,
    ) -> Result<Reply, FabricError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(FabricError::Closed(self.inner.peer.clone()));
        }
        // A small source travels with the request (see `wire::OP_BULK_EAGER`); it stays exposed
        // too, for a server that asks for it anyway.
        let eager: Option<&[u8]> = match &bulk {
            Bulk::Source(src)
                if !src.is_empty()
                    && src.len() <= wire::EAGER_MAX
                    && wire::PUT_PREFIX + src.len() <= self.inner.max_body as usize =>
            {
                Some(*src)
            }
            _ => None,
        };
        // Shutting the socket down makes a stalled access fail; `close` does it without the writer lock.
        let abort = || self.inner.close();
        // Dropping `exposure` revokes the rkey (waiting out, or aborting, an access in progress)
        // before `bulk`'s borrow ends, on every path out of this function.
        let exposure = self.inner.regions.expose(&mut bulk, self.inner.call_timeout, &abort);
        let desc = exposure.desc();
        let request = body(desc);
        let result = self
            .inner
            .roundtrip(None, opcode, &request, eager.map(|data| (desc.rkey, data)));
        let refused = exposure.posted_refusal();
        drop(exposure);
        match (result, refused) {
            (Ok(_), Some(why)) => Err(FabricError::BulkRefused(format!(
                "{}: a push into this call's buffer was refused: {why}",
                self.inner.peer
            ))),
            (result, _) => result,
        }
    }

    fn peer(&self) -> String {
        self.inner.peer.clone()
    }

    fn close(&self) {
        self.inner.close();
    }
}

impl Drop for TcpClient {
    fn drop(&mut self) {
        self.inner.close();
    }
}
