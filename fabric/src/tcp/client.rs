//! The client end of a tcp connection: callers write requests under one writer lock; one reader
//! thread routes replies to their callers by xid and serves the server's bulk requests from the
//! regions the calls expose.

use super::exposed::{Completion, CreditWait, Credits, Pending, RegionTable};
use super::wire::{self, ReadHeader};
use crate::{Bulk, BulkDesc, ClientConn, ConnOptions, FabricError, Reply};
use parking_lot::Mutex;
use rustre_proto::FrameHeader;
use rustre_proto::frame::{FLAG_ERROR, FLAG_FABRIC, FLAG_REPLY};
use std::io::{BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    pending: Pending,
    credits: Credits,
    regions: RegionTable,
    closed: AtomicBool,
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
    rw.set_read_timeout(None).map_err(|source| FabricError::Io {
        op: "setsockopt",
        peer: peer.clone(),
        source,
    })?;

    let sock = stream.try_clone().map_err(|source| FabricError::Io {
        op: "dup",
        peer: peer.clone(),
        source,
    })?;
    let inner = Arc::new(Inner {
        peer: peer.clone(),
        sock,
        client_id: opts.client_id,
        max_body,
        call_timeout: opts.call_timeout,
        writer: Mutex::new(stream),
        next_xid: AtomicU64::new(1),
        pending: Pending::new(),
        credits: Credits::new(credits),
        regions: RegionTable::new(),
        closed: AtomicBool::new(false),
    });
    let reader = BufReader::with_capacity(super::READ_BUF, rw);
    let rx = Arc::clone(&inner);
    std::thread::Builder::new()
        .name("rustre-tcp-client".into())
        .spawn(move || rx.run_reader(reader))
        .map_err(|source| FabricError::Io {
            op: "spawn reader",
            peer,
            source,
        })?;
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
        self.pending.close_all(|| FabricError::Closed(self.peer.clone()));
        self.credits.close();
    }

    fn roundtrip(&self, xid: Option<u64>, opcode: u16, body: &[u8]) -> Result<Reply, FabricError> {
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
        let rx = self
            .pending
            .register(xid)
            .ok_or_else(|| FabricError::Closed(self.peer.clone()))?;
        let header = FrameHeader::request(opcode, xid, self.client_id, body.len() as u32);
        let sent = wire::write_frame(&mut *self.writer.lock(), &header, &[body]);
        if let Err(e) = sent {
            self.pending.cancel(xid);
            let err = wire::io_err("send", &self.peer, e);
            self.close();
            return Err(err);
        }
        match rx.recv_deadline(deadline) {
            Ok(reply) => reply,
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                if self.pending.abandon(xid) {
                    // The server still counts this request against our credits until it replies.
                    credit.leave();
                    Err(timed_out())
                } else {
                    // The reply raced in just now.
                    rx.try_recv().unwrap_or_else(|_| Err(timed_out()))
                }
            }
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => Err(FabricError::Closed(self.peer.clone())),
        }
    }

    fn run_reader(self: Arc<Self>, mut r: BufReader<TcpStream>) {
        match self.read_frames(&mut r) {
            Ok(()) | Err(FabricError::Closed(_)) => tracing::debug!(peer = %self.peer, "server closed the connection"),
            Err(e) if !self.closed.load(Ordering::Acquire) => {
                tracing::warn!(peer = %self.peer, error = %e, "closing connection")
            }
            Err(_) => {}
        }
        self.close();
    }

    fn read_frames(&self, r: &mut BufReader<TcpStream>) -> Result<(), FabricError> {
        loop {
            let h = match wire::read_header(r, self.max_body, &self.peer)? {
                ReadHeader::Eof => return Ok(()),
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
                match self.pending.complete(h.xid, Ok(Reply { header: h, body })) {
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
        }
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
    fn serve_put(&self, r: &mut impl Read, h: &FrameHeader) -> Result<(), FabricError> {
        let body_len = h.body_len as usize;
        if body_len < wire::PUT_PREFIX {
            return Err(wire::violation(&self.peer, "bulk_put.len", format!("{body_len} bytes")));
        }
        let p = wire::read_body(r, wire::PUT_PREFIX, &self.peer)?;
        let (rkey, last, offset) = (wire::u32_at(&p, 0), wire::u32_at(&p, 4) != 0, wire::u64_at(&p, 8));
        let len = (body_len - wire::PUT_PREFIX) as u64;
        let copied = self.regions.with_write(rkey, offset, len, |dst| {
            r.read_exact(dst).map_err(|e| wire::io_err("recv", &self.peer, e))
        });
        match copied {
            Ok(result) => {
                result?;
                if last {
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
        self.inner.roundtrip(None, opcode, body)
    }

    fn call_with_xid(&self, xid: u64, opcode: u16, body: &[u8]) -> Option<Result<Reply, FabricError>> {
        Some(self.inner.roundtrip(Some(xid), opcode, body))
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
        // Shutting the socket down makes a stalled access fail; `close` does it without the writer lock.
        let abort = || self.inner.close();
        // Dropping `exposure` revokes the rkey (waiting out, or aborting, an access in progress)
        // before `bulk`'s borrow ends, on every path out of this function.
        let exposure = self.inner.regions.expose(&mut bulk, self.inner.call_timeout, &abort);
        let request = body(exposure.desc());
        let result = self.inner.roundtrip(None, opcode, &request);
        drop(exposure);
        result
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
