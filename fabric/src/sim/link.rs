//! One simulated connection: two fault-injecting pipes (client → server, server → client), the
//! server's bounded request queue, and the client's pending calls, credits and exposed regions.
//! Bulk `pull`/`push` copy directly between the buffers, under the same revocation rule as tcp.

use super::{Direction, FaultEvent, FaultKind, NetInner};
use crate::tcp::exposed::{CreditWait, Credits, Pending, RegionTable};
use crate::{Bulk, BulkDesc, ClientConn, FabricError, Incoming, Reply, ServerConn};
use crossbeam::channel::{Receiver, Sender, TrySendError, bounded};
use parking_lot::{Condvar, Mutex};
use rustre_proto::FrameHeader;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// What travels on a pipe.
enum Msg {
    Request(Incoming),
    Reply(Reply),
}

/// A message due at `at`; `order` breaks ties in send order.
struct Timed {
    at: Instant,
    order: u64,
    msg: Msg,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

/// One direction of a link, with its own seeded fault RNG.
struct Pipe {
    st: Mutex<PipeState>,
    cv: Condvar,
}

struct PipeState {
    rng: SplitMix,
    seq: u64,
    heap: BinaryHeap<Reverse<Timed>>,
    /// A message held back so that the next one overtakes it; delivered after that one, or at
    /// its deadline.
    held: Option<(Instant, Msg)>,
    pump: bool,
    closed: bool,
}

/// The shared state of one simulated connection.
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) client_name: String,
    pub(crate) server_name: String,
    net: Arc<NetInner>,
    client_id: u64,
    max_body: u32,
    call_timeout: Duration,
    closed: AtomicBool,
    next_xid: AtomicU64,
    pending: Pending,
    credits: Credits,
    regions: RegionTable,
    req_tx: Sender<Incoming>,
    req_rx: Receiver<Incoming>,
    close_tx: Mutex<Option<Sender<()>>>,
    close_rx: Receiver<()>,
    pipes: [Pipe; 2],
}

/// Parameters of a new link.
pub(crate) struct LinkSpec {
    pub(crate) id: u64,
    pub(crate) client_name: String,
    pub(crate) server_name: String,
    pub(crate) client_id: u64,
    pub(crate) credits: u32,
    pub(crate) queue: u32,
    pub(crate) max_body: u32,
    pub(crate) call_timeout: Duration,
}

/// The fault RNG: splitmix64, small, fast and fully determined by its seed.
struct SplitMix(u64);

impl SplitMix {
    /// A uniform pick in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (splitmix(self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Link {
    pub(crate) fn new(net: Arc<NetInner>, spec: LinkSpec) -> Arc<Link> {
        let pipe = |dir: u64| Pipe {
            st: Mutex::new(PipeState {
                rng: SplitMix(splitmix(net.seed ^ splitmix(spec.id.wrapping_mul(2) + dir))),
                seq: 0,
                heap: BinaryHeap::new(),
                held: None,
                pump: false,
                closed: false,
            }),
            cv: Condvar::new(),
        };
        let pipes = [pipe(0), pipe(1)];
        let (req_tx, req_rx) = bounded(spec.queue.max(1) as usize);
        let (close_tx, close_rx) = bounded(1);
        Arc::new(Link {
            id: spec.id,
            client_name: spec.client_name,
            server_name: spec.server_name,
            client_id: spec.client_id,
            max_body: spec.max_body,
            call_timeout: spec.call_timeout,
            closed: AtomicBool::new(false),
            next_xid: AtomicU64::new(1),
            pending: Pending::new(),
            credits: Credits::new(spec.credits),
            regions: RegionTable::new(),
            req_tx,
            req_rx,
            close_tx: Mutex::new(Some(close_tx)),
            close_rx,
            pipes,
            net,
        })
    }

    fn peer(&self) -> String {
        format!("sim://{}", self.server_name)
    }

    fn client_peer(&self) -> String {
        format!("sim://{} (link {})", self.client_name, self.id)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.pending.close_all(|| FabricError::Closed(self.peer()));
        self.credits.close();
        self.close_tx.lock().take();
        for p in &self.pipes {
            let mut st = p.st.lock();
            st.closed = true;
            st.heap.clear();
            st.held = None;
            p.cv.notify_all();
        }
    }

    fn log(&self, dir: Direction, seq: u64, kind: FaultKind) {
        self.net.record(FaultEvent {
            link: self.id,
            dir,
            seq,
            kind,
        });
    }

    /// Sends `msg` through the pipe of `dir`, applying the network's faults.
    fn send(self: &Arc<Self>, dir: Direction, msg: Msg) {
        let pipe = &self.pipes[dir as usize];
        let faults = self.net.faults();
        let partitioned = self.net.partitioned(&self.client_name, &self.server_name);
        let mut st = pipe.st.lock();
        if st.closed {
            return;
        }
        st.seq += 1;
        let seq = st.seq;
        // Always three draws per message, so a seed gives the same decisions whatever is enabled.
        let (d_drop, d_delay, d_reorder): (f64, f64, f64) = (st.rng.unit(), st.rng.unit(), st.rng.unit());
        if partitioned {
            self.log(dir, seq, FaultKind::Partitioned);
            return;
        }
        if d_drop < faults.drop {
            self.log(dir, seq, FaultKind::Drop);
            return;
        }
        let span = faults.delay.end.saturating_sub(faults.delay.start);
        let delay = faults.delay.start + span.mul_f64(d_delay);
        if !delay.is_zero() {
            self.log(dir, seq, FaultKind::Delay(delay));
        }
        let now = Instant::now();
        if d_reorder < faults.reorder && st.held.is_none() {
            self.log(dir, seq, FaultKind::Reorder);
            st.held = Some((now + delay + faults.reorder_hold, msg));
            self.ensure_pump(dir, &mut st);
            pipe.cv.notify_all();
            return;
        }
        let held = st.held.take().map(|(_, m)| m);
        if delay.is_zero() {
            self.deliver(dir, msg);
            if let Some(h) = held {
                self.deliver(dir, h);
            }
        } else {
            let at = now + delay;
            for (i, m) in std::iter::once(msg).chain(held).enumerate() {
                st.heap.push(Reverse(Timed {
                    at,
                    order: seq * 2 + i as u64,
                    msg: m,
                }));
            }
            self.ensure_pump(dir, &mut st);
            pipe.cv.notify_all();
        }
    }

    fn ensure_pump(self: &Arc<Self>, dir: Direction, st: &mut PipeState) {
        if st.pump {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name(format!("rustre-sim-pipe-{}", self.id))
            .spawn(move || pump(weak, dir));
        match spawned {
            Ok(_) => st.pump = true,
            Err(e) => tracing::error!(link = self.id, error = %e, "cannot start a sim delivery thread"),
        }
    }

    fn deliver(&self, dir: Direction, msg: Msg) {
        match (dir, msg) {
            (Direction::ToServer, Msg::Request(req)) => match self.req_tx.try_send(req) {
                Ok(()) => {}
                Err(TrySendError::Full(req)) => {
                    // Only possible after callers timed out and reused their credits; a lossy
                    // network drops it, and the caller times out again.
                    tracing::warn!(
                        link = self.id,
                        xid = req.header.xid,
                        "server queue full; request dropped"
                    );
                }
                Err(TrySendError::Disconnected(_)) => {}
            },
            (Direction::ToClient, Msg::Reply(reply)) => {
                let xid = reply.header.xid;
                self.pending.complete(xid, Ok(reply));
            }
            _ => debug_assert!(false, "message on the wrong pipe"),
        }
    }

    fn check_reachable(&self) -> Result<(), FabricError> {
        if self.is_closed() {
            return Err(FabricError::Closed(self.peer()));
        }
        if self.net.partitioned(&self.client_name, &self.server_name) {
            return Err(FabricError::Unreachable(format!(
                "{} is partitioned from {}",
                self.client_peer(),
                self.peer()
            )));
        }
        Ok(())
    }

    fn roundtrip(self: &Arc<Self>, xid: Option<u64>, opcode: u16, body: &[u8]) -> Result<Reply, FabricError> {
        if body.len() > self.max_body as usize {
            return Err(FabricError::TooLarge {
                len: body.len(),
                max: self.max_body as usize,
            });
        }
        let start = Instant::now();
        let deadline = start + self.call_timeout;
        let timed_out = || FabricError::Timeout {
            peer: self.peer(),
            after_ms: start.elapsed().as_millis() as u64,
        };
        let _credit = self.credits.acquire(deadline).map_err(|w| match w {
            CreditWait::TimedOut => timed_out(),
            CreditWait::Closed => FabricError::Closed(self.peer()),
        })?;
        let xid = xid.unwrap_or_else(|| self.next_xid.fetch_add(1, Ordering::Relaxed));
        let rx = self
            .pending
            .register(xid)
            .ok_or_else(|| FabricError::Closed(self.peer()))?;
        let header = FrameHeader::request(opcode, xid, self.client_id, body.len() as u32);
        self.send(
            Direction::ToServer,
            Msg::Request(Incoming {
                header,
                body: body.to_vec(),
            }),
        );
        match rx.recv_deadline(deadline) {
            Ok(r) => r,
            Err(_) => {
                self.pending.cancel(xid);
                rx.try_recv().unwrap_or_else(|_| {
                    if self.is_closed() {
                        Err(FabricError::Closed(self.peer()))
                    } else {
                        Err(timed_out())
                    }
                })
            }
        }
    }
}

/// Delivers delayed and held messages of one pipe when they are due; ends when the link closes.
fn pump(weak: Weak<Link>, dir: Direction) {
    let Some(link) = weak.upgrade() else { return };
    let pipe = &link.pipes[dir as usize];
    let mut st = pipe.st.lock();
    loop {
        if st.closed {
            return;
        }
        let now = Instant::now();
        while st.heap.peek().is_some_and(|Reverse(t)| t.at <= now) {
            if let Some(Reverse(t)) = st.heap.pop() {
                link.deliver(dir, t.msg);
            }
        }
        if st.held.as_ref().is_some_and(|(at, _)| *at <= now)
            && let Some((_, m)) = st.held.take()
        {
            link.deliver(dir, m);
        }
        let next = [
            st.heap.peek().map(|Reverse(t)| t.at),
            st.held.as_ref().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) => {
                pipe.cv.wait_until(&mut st, at);
            }
            None => pipe.cv.wait(&mut st),
        }
    }
}

/// The client end of a sim connection.
pub struct SimClient {
    pub(crate) link: Arc<Link>,
}

impl ClientConn for SimClient {
    fn call(&self, opcode: u16, body: &[u8]) -> Result<Reply, FabricError> {
        self.link.roundtrip(None, opcode, body)
    }

    fn call_with_xid(&self, xid: u64, opcode: u16, body: &[u8]) -> Option<Result<Reply, FabricError>> {
        Some(self.link.roundtrip(Some(xid), opcode, body))
    }

    fn call_bulk(
        &self,
        opcode: u16,
        mut bulk: Bulk<'_>,
        body: &mut dyn FnMut(BulkDesc) -> Vec<u8>,
    ) -> Result<Reply, FabricError> {
        let abort = || self.link.close();
        // Dropping `exposure` revokes the key before `bulk`'s borrow ends, on every path.
        let exposure = self.link.regions.expose(&mut bulk, self.link.call_timeout, &abort);
        let request = body(exposure.desc());
        let result = self.link.roundtrip(None, opcode, &request);
        drop(exposure);
        result
    }

    fn peer(&self) -> String {
        self.link.peer()
    }

    fn close(&self) {
        self.link.close();
    }
}

impl Drop for SimClient {
    fn drop(&mut self) {
        self.link.close();
    }
}

/// The server end of a sim connection.
pub struct SimServerConn {
    pub(crate) link: Arc<Link>,
}

impl ServerConn for SimServerConn {
    fn recv(&self) -> Result<Incoming, FabricError> {
        let link = &self.link;
        if let Ok(req) = link.req_rx.try_recv() {
            return Ok(req);
        }
        if link.is_closed() {
            return Err(FabricError::Closed(link.client_peer()));
        }
        crossbeam::channel::select! {
            recv(link.req_rx) -> r => r.map_err(|_| FabricError::Closed(link.client_peer())),
            recv(link.close_rx) -> _ => Err(FabricError::Closed(link.client_peer())),
        }
    }

    fn reply(&self, to: &FrameHeader, opcode: u16, body: &[u8], error: bool) -> Result<(), FabricError> {
        if self.link.is_closed() {
            return Err(FabricError::Closed(self.link.client_peer()));
        }
        if body.len() > self.link.max_body as usize {
            return Err(FabricError::TooLarge {
                len: body.len(),
                max: self.link.max_body as usize,
            });
        }
        let header = to.reply_to(opcode, body.len() as u32, error);
        self.link.send(
            Direction::ToClient,
            Msg::Reply(Reply {
                header,
                body: body.to_vec(),
            }),
        );
        Ok(())
    }

    fn pull(&self, desc: &BulkDesc, offset: u64, dst: &mut [u8]) -> Result<(), FabricError> {
        self.link.check_reachable()?;
        self.link
            .regions
            .with_read(desc.rkey, offset, dst.len() as u64, |src| dst.copy_from_slice(src))
            .map_err(|why| FabricError::BulkRefused(format!("{}: {why}", self.link.client_peer())))
    }

    fn push(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError> {
        self.link.check_reachable()?;
        self.link
            .regions
            .with_write(desc.rkey, offset, src.len() as u64, |dst| dst.copy_from_slice(src))
            .map_err(|why| FabricError::BulkRefused(format!("{}: {why}", self.link.client_peer())))
    }

    fn peer(&self) -> String {
        self.link.client_peer()
    }

    fn client_id(&self) -> u64 {
        self.link.client_id
    }

    fn close(&self) {
        self.link.close();
    }
}

impl Drop for SimServerConn {
    fn drop(&mut self) {
        self.link.close();
    }
}
