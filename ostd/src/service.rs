//! The object service: OST requests from the fabric, served from the object store.
//!
//! One acceptor thread takes connections; one receiver thread per connection decodes nothing and
//! only moves requests into a bounded queue (when it is full, receivers stop reading and the
//! clients' credits run out: backpressure). A fixed number of worker threads serve the queue; each
//! drives the device through its own io_uring ring. Bulk data moves straight between the client
//! and a buffer of the server's pool (RDMA READ for a write, RDMA WRITE for a read), and io_uring
//! writes or reads that same registered buffer. Every bad request gets an `ErrorReply` naming the
//! offending field.

use crate::dev::{BlockDevice, IoEngine, UringConfig, UringDevice};
use crate::error::StoreError;
use crate::format::BLOCK;
use crate::mmp::{MmpConfig, MmpGuard};
use crate::store::ObjectStore;
use crossbeam::channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;
use prost::Message;
use rustre_fabric::{Address, BufferPool, BulkDesc, ConnOptions, FabricError, Incoming, Listener, ServerConn};
use rustre_proto::request::Request;
use rustre_proto::types::{ObjectRef, OstIndex, PunchRange};
use rustre_proto::{RemoteError, pb};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Configuration of a serving OST. Memory is a function of it: `pool_buffers × (max_io + 8 KiB)`
/// for bulk, `queue × max_body` for queued requests, plus the metadata region of the device.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Device path.
    pub device: String,
    /// Listen address.
    pub listen: Address,
    /// Node name (MMP block, logs).
    pub node: String,
    /// Worker threads (each with its own io_uring ring); also the most requests served in place by
    /// connection threads at once (see `receiver`).
    pub workers: usize,
    /// io_uring queue depth per ring.
    pub queue_depth: u32,
    /// io_uring, or system calls for a file on tmpfs ([`IoEngine`]).
    pub io_engine: IoEngine,
    /// Bulk buffers in the pool (registered with the fabric and with io_uring).
    pub pool_buffers: usize,
    /// Largest read or write of one request.
    pub max_io: usize,
    /// Requests queued between the receivers and the workers.
    pub queue: usize,
    /// Connections served at once.
    pub max_conns: usize,
    /// MMP update interval.
    pub mmp_interval: Duration,
    /// Fabric limits.
    pub conn: ConnOptions,
    /// Cluster authentication (`--secret`): every connection must complete the handshake and
    /// client object I/O needs capabilities. `None` = no security.
    pub auth: Option<Arc<rustre_proto::auth::ServerAuth>>,
    /// Serve Prometheus metrics over HTTP on this address (`--metrics`); `None` = no metrics.
    pub metrics: Option<std::net::SocketAddr>,
    /// The MMP block as a standby watch left it ([`crate::mmp::standby_wait`]): start-up does not
    /// watch the same silence again.
    pub watched: Option<crate::format::MmpBlock>,
}

impl ServeConfig {
    /// Defaults for a device and address.
    pub fn new(device: &str, listen: Address) -> Self {
        Self {
            device: device.to_owned(),
            listen,
            node: hostname(),
            workers: 4,
            queue_depth: 64,
            io_engine: IoEngine::Auto,
            pool_buffers: 16,
            max_io: 4 << 20,
            queue: 64,
            max_conns: 1024,
            mmp_interval: Duration::from_secs(1),
            conn: ConnOptions::default(),
            auth: None,
            metrics: None,
            watched: None,
        }
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut b = [0u8; 256];
    // SAFETY: gethostname writes at most `b.len()` bytes into the live local buffer.
    let rc = unsafe { libc::gethostname(b.as_mut_ptr().cast(), b.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// A failure to start or run the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The fabric failed.
    #[error("fabric: {0}")]
    Fabric(#[from] FabricError),
    /// A bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The metrics endpoint could not start (`--metrics`).
    #[error(transparent)]
    Metrics(#[from] rustre_metrics::MetricsError),
    /// Could not allocate the buffer pool or start a thread.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    store: Arc<ObjectStore>,
    pool: Arc<BufferPool>,
    cfg: ServeConfig,
    index: u32,
    fsname: String,
    stopping: AtomicBool,
    conns: Mutex<Vec<Arc<dyn ServerConn>>>,
    listener: Arc<dyn Listener>,
    auth: Option<crate::auth::OstAuth>,
    metrics: Option<Arc<metrics::OstMetrics>>,
    /// Requests being served by their connection's receiving thread (at most `cfg.workers`).
    in_place: AtomicUsize,
    /// Requests served in place since start.
    served_in_place: AtomicU64,
}

/// A received request and what serving it needs (on the receiving thread or a worker).
struct Queued {
    conn: Arc<dyn ServerConn>,
    req: Incoming,
    received: Instant,
    tags: Option<Arc<metrics::ConnTags>>,
    /// The connection's count of requests handed to the workers, dropped once this one is
    /// replied to; `None` for a request served by the receiving thread.
    handed: Option<Arc<AtomicUsize>>,
}

/// A running OST server.
pub struct Server {
    shared: Arc<Shared>,
    addr: Address,
    mmp: Option<MmpGuard>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    stopped: Arc<(Mutex<Option<String>>, parking_lot::Condvar)>,
    metrics_http: Option<rustre_metrics::MetricsServer>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr.to_string())
            .field("ost", &self.shared.index)
            .finish()
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, ServiceError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| ServiceError::Os { what: "spawn", source })
}

impl Server {
    /// Opens the device, checks MMP, mounts the store and starts listening.
    pub fn start(cfg: ServeConfig) -> Result<Self, ServiceError> {
        if cfg.workers == 0 || cfg.workers > 256 {
            return Err(ServiceError::Config("workers must be 1..=256".into()));
        }
        if cfg.pool_buffers < cfg.workers || cfg.queue == 0 || cfg.max_conns == 0 {
            return Err(ServiceError::Config(
                "buffers must be at least the number of workers; queue and max_conns must be positive".into(),
            ));
        }
        if cfg.max_io < BLOCK || cfg.max_io > (64 << 20) || !cfg.max_io.is_multiple_of(BLOCK) {
            return Err(ServiceError::Config(
                "max_io must be a multiple of 4096 in 4 KiB..=64 MiB".into(),
            ));
        }
        let pool = BufferPool::new(cfg.max_io + 2 * BLOCK, cfg.pool_buffers).map_err(|source| ServiceError::Os {
            what: "allocating the buffer pool",
            source,
        })?;
        let ucfg = UringConfig {
            queue_depth: cfg.queue_depth,
            // The workers, as many receiving threads serving a request in place, and two spare.
            rings: 2 * cfg.workers + 2,
            pool: Some(Arc::clone(&pool)),
            min_size: 1 << 20,
            engine: cfg.io_engine,
        };
        let udev = UringDevice::open(&cfg.device, &ucfg).map_err(StoreError::from)?;
        let engine = udev.engine();
        let dev: Arc<dyn BlockDevice> = Arc::new(udev);
        // Make sure it is an OST before touching the MMP block.
        let sb = crate::format::read_superblock(dev.as_ref())?;
        let listener = rustre_fabric::listen(&cfg.listen, &cfg.conn)?;
        let addr = listener.local_addr();
        let stopped: Arc<(Mutex<Option<String>>, parking_lot::Condvar)> =
            Arc::new((Mutex::new(None), parking_lot::Condvar::new()));
        let fence_state: Arc<Mutex<Option<Arc<Shared>>>> = Arc::new(Mutex::new(None));
        let mmp = {
            let (stopped, fence_state, l) = (Arc::clone(&stopped), Arc::clone(&fence_state), Arc::clone(&listener));
            let on_fence = Box::new(move |msg: &str| {
                if let Some(shared) = fence_state.lock().as_ref() {
                    shared.store.fence();
                    shared.stop_io();
                }
                l.shutdown();
                *stopped.0.lock() = Some(msg.to_owned());
                stopped.1.notify_all();
            });
            let mcfg = MmpConfig {
                node: cfg.node.clone(),
                address: addr.to_string(),
                interval: cfg.mmp_interval,
                watched: cfg.watched.clone(),
            };
            match MmpGuard::start(Arc::clone(&dev), mcfg, on_fence) {
                Ok(g) => g,
                Err(e) => {
                    listener.shutdown();
                    return Err(e.into());
                }
            }
        };
        let store = match ObjectStore::open(Arc::clone(&dev)) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                listener.shutdown();
                let _ = mmp.stop();
                return Err(e.into());
            }
        };
        store.set_write_guard(mmp.lease());
        listener.register_pool(&pool)?;
        let (tx, rx) = bounded::<Queued>(cfg.queue);
        let ost_metrics = cfg.metrics.map(|_| {
            Arc::new(metrics::OstMetrics::new(
                sb.ost_index,
                &sb.fsname,
                &store,
                &pool,
                {
                    let rx = rx.clone();
                    move || rx.len()
                },
                cfg.queue,
            ))
        });
        let metrics_http = match (cfg.metrics, &ost_metrics) {
            (Some(addr), Some(m)) => {
                match rustre_metrics::MetricsServer::start(
                    addr,
                    Arc::clone(&m.registry),
                    rustre_metrics::HttpOptions::default(),
                ) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        listener.shutdown();
                        let _ = mmp.stop();
                        return Err(e.into());
                    }
                }
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            store,
            pool,
            index: sb.ost_index,
            fsname: sb.fsname.clone(),
            cfg: cfg.clone(),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            listener: Arc::clone(&listener),
            auth: cfg.auth.clone().map(crate::auth::OstAuth::new),
            metrics: ost_metrics,
            in_place: AtomicUsize::new(0),
            served_in_place: AtomicU64::new(0),
        });
        if cfg.auth.is_none() {
            tracing::warn!("no cluster secret (--secret): connections are not authenticated, capabilities not checked");
        }
        *fence_state.lock() = Some(Arc::clone(&shared));
        let mut workers = Vec::with_capacity(cfg.workers);
        for i in 0..cfg.workers {
            let (shared, rx) = (Arc::clone(&shared), rx.clone());
            workers.push(spawn(&format!("ostd-worker-{i}"), move || worker(&shared, &rx))?);
        }
        let acceptor = {
            let shared = Arc::clone(&shared);
            spawn("ostd-accept", move || acceptor(&shared, &tx))?
        };
        tracing::info!(ost = sb.ost_index, fsname = %sb.fsname, address = %addr, device = %cfg.device, io_engine = %engine, "serving");
        Ok(Self {
            shared,
            addr,
            mmp: Some(mmp),
            acceptor: Some(acceptor),
            workers,
            stopped,
            metrics_http,
        })
    }

    /// Requests served by their connection's receiving thread so far (see `receiver`).
    pub fn served_in_place(&self) -> u64 {
        self.shared.served_in_place.load(Ordering::Relaxed)
    }

    /// The address of the metrics endpoint (`GET /metrics`), when serving metrics.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_http.as_ref().map(|m| m.local_addr())
    }

    /// The address clients connect to (with the real port).
    pub fn local_addr(&self) -> &Address {
        &self.addr
    }

    /// OST index served.
    pub fn index(&self) -> u32 {
        self.shared.index
    }

    /// The store (for tests and the bench).
    pub fn store(&self) -> &Arc<ObjectStore> {
        &self.shared.store
    }

    /// Blocks until the service stops on its own (another node took the device over); returns why.
    pub fn wait(&self) -> String {
        let mut g = self.stopped.0.lock();
        while g.is_none() {
            self.stopped.1.wait(&mut g);
        }
        g.clone().unwrap_or_default()
    }

    /// Waits at most `timeout` for the service to stop on its own.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<String> {
        let mut g = self.stopped.0.lock();
        if g.is_none() {
            self.stopped.1.wait_for(&mut g, timeout);
        }
        g.clone()
    }

    /// Stops serving: closes the listener and every connection, joins the threads, commits, and
    /// releases the MMP block.
    pub fn shutdown(mut self) -> Result<(), ServiceError> {
        self.halt();
        let fenced = self.shared.store.is_fenced();
        if !fenced {
            self.shared.store.sync()?;
        }
        if let Some(m) = self.mmp.take() {
            m.stop()?;
        }
        Ok(())
    }

    fn halt(&mut self) {
        self.shared.stop_io();
        self.shared.listener.shutdown();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(m) = self.metrics_http.take() {
            m.stop();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Shared {
    fn stop_io(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.close();
        }
    }
}

fn acceptor(shared: &Arc<Shared>, tx: &Sender<Queued>) {
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let conn = match shared.listener.accept() {
            Ok(c) => c,
            Err(FabricError::Closed(_)) => break,
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            conn.close();
            break;
        }
        readers.retain(|h| !h.is_finished());
        {
            let mut conns = shared.conns.lock();
            conns.retain(|_| true);
            if readers.len() >= shared.cfg.max_conns {
                tracing::warn!(peer = %conn.peer(), limit = shared.cfg.max_conns, "too many connections; closing");
                conn.close();
                continue;
            }
            conns.push(Arc::clone(&conn));
        }
        let (tx, shared2) = (tx.clone(), Arc::clone(shared));
        match spawn("ostd-conn", move || receiver(&shared2, conn, &tx)) {
            Ok(h) => readers.push(h),
            Err(e) => tracing::error!(error = %e, "cannot start a connection thread"),
        }
    }
    shared.stop_io();
    for r in readers {
        let _ = r.join();
    }
}

/// Reads a connection's requests. A request is served on this thread when nothing else of the
/// connection is waiting or being served (a client with one request at a time, as a synchronous
/// writer has: the request, its bulk and its reply then never change threads) and fewer than
/// `workers` requests are served so; otherwise it goes to the workers, so a client with many
/// requests in flight has them served side by side.
fn receiver(shared: &Shared, conn: Arc<dyn ServerConn>, tx: &Sender<Queued>) {
    let mut session = rustre_proto::auth::ServerSession::default();
    let mut counters = shared.metrics.clone().map(metrics::ConnCounters::new);
    let handed = Arc::new(AtomicUsize::new(0));
    loop {
        match conn.recv() {
            Ok(req) => {
                let received = Instant::now();
                if let Some(a) = &shared.auth {
                    match a.admit(&mut session, conn.as_ref(), &req) {
                        crate::auth::Admit::Forward => {}
                        crate::auth::Admit::Answered => continue,
                        crate::auth::Admit::Closed => break,
                    }
                }
                let tags = counters.as_mut().map(|c| {
                    let client = if req.header.client_id != 0 {
                        req.header.client_id
                    } else {
                        conn.client_id()
                    };
                    c.tags(client, req.header.opcode, &req.body)
                });
                let mut q = Queued {
                    conn: Arc::clone(&conn),
                    req,
                    received,
                    tags,
                    handed: None,
                };
                if handed.load(Ordering::Acquire) == 0 && !conn.backlog() && shared.take_in_place() {
                    serve(shared, q);
                    shared.in_place.fetch_sub(1, Ordering::AcqRel);
                    shared.served_in_place.fetch_add(1, Ordering::Relaxed);
                    if let Some(m) = &shared.metrics {
                        m.served_in_place.inc();
                    }
                } else {
                    handed.fetch_add(1, Ordering::AcqRel);
                    q.handed = Some(Arc::clone(&handed));
                    if tx.send(q).is_err() {
                        break;
                    }
                }
            }
            Err(FabricError::Closed(_)) => break,
            Err(e) => {
                tracing::debug!(peer = %conn.peer(), error = %e, "connection ends");
                break;
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
    }
    conn.close();
    if let Some(a) = &shared.auth {
        a.forget(conn.as_ref());
    }
    let mut conns = shared.conns.lock();
    conns.retain(|c| !Arc::ptr_eq(c, &conn));
}

fn worker(shared: &Shared, rx: &Receiver<Queued>) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(q) => serve(shared, q),
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Serves one request and replies to it.
fn serve(shared: &Shared, q: Queued) {
    let Queued {
        conn,
        req,
        received,
        tags,
        handed,
    } = q;
    let opcode = req.header.opcode;
    let mut moved = Moved::default();
    if let Some(m) = &shared.metrics {
        m.in_flight.inc();
    }
    // A bug in one request must not take a worker (and the bound on workers) with it.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle(shared, conn.as_ref(), &req, &mut moved)
    }))
    .unwrap_or_else(|_| {
        tracing::error!(peer = %conn.peer(), opcode, "request handler panicked");
        Err(err(libc::EIO, "", "internal error while serving the request"))
    });
    let (body, error) = match outcome {
        Ok(body) => (body, false),
        Err(e) => {
            tracing::debug!(peer = %conn.peer(), opcode, errno = e.errno, message = %e.message, "request refused");
            (e.encode_to_vec(), true)
        }
    };
    // Counted before sending, so a client holding its reply sees it counted.
    if let Some(m) = &shared.metrics {
        m.in_flight.dec();
        let errno = error.then(|| rustre_metrics::errno_of(&body));
        m.ops.record(opcode, received.elapsed(), errno);
        m.read_bytes.add(moved.read);
        m.write_bytes.add(moved.written);
        if let Some(t) = &tags {
            t.done(moved.read, moved.written);
        }
    }
    if let Err(e) = conn.reply(&req.header, opcode, &body, error) {
        tracing::debug!(peer = %conn.peer(), error = %e, "reply failed");
    }
    if let Some(h) = handed {
        h.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bulk bytes one request moved.
#[derive(Debug, Default)]
struct Moved {
    read: u64,
    written: u64,
}

fn err(errno: i32, field: &str, message: impl Into<String>) -> pb::ErrorReply {
    pb::ErrorReply {
        errno,
        message: message.into(),
        field: field.to_owned(),
    }
}
/// A write of several ranges of one object (`OstWriteRequest.more`): the payload is pulled in
/// one transfer to the front of `buf`, each range moved to its block-aligned slot (the last
/// first: a slot never starts before its bytes arrived), and the store writes them all under one
/// commit, checking the payload's crc32c first.
fn write_ranges(
    conn: &dyn ServerConn,
    store: &ObjectStore,
    id: u64,
    io: &rustre_proto::request::ost::ObjectIo,
    bulk: &rustre_proto::types::BulkDesc,
    buf: &mut [u8],
) -> Result<u64, pb::ErrorReply> {
    const OP: &str = "ost.write";
    let (ranges, slots) = ranges_in_buffer(io, "ost.write.more", buf.len())?;
    let total: usize = ranges.iter().map(|r| r.1).sum();
    conn.pull(&fabric_desc(bulk), 0, &mut buf[..total]).map_err(|e| {
        err(
            libc::EIO,
            "ost.write.bulk",
            format!("bulk transfer from the client failed: {e}"),
        )
    })?;
    let mut from = total;
    for (&(offset, len), &slot) in ranges.iter().zip(&slots).rev() {
        from -= len;
        let to = slot + (offset % BLOCK as u64) as usize;
        buf.copy_within(from..from + len, to);
    }
    store
        .write_ranges_verified(id, &ranges, buf, bulk.crc32c)
        .map_err(|e| store_err(OP, e))
}

/// Byte ranges of an object: (offset, length) pairs.
type RangeList = Vec<(u64, usize)>;

/// The ranges of `io` as (offset, length) pairs and the block-aligned slot each takes in a
/// buffer of `buf_len` bytes; an error names `field` when they do not fit.
fn ranges_in_buffer(
    io: &rustre_proto::request::ost::ObjectIo,
    field: &str,
    buf_len: usize,
) -> Result<(RangeList, Vec<usize>), pb::ErrorReply> {
    let ranges: RangeList = io
        .ranges()
        .map(|e| usize::try_from(e.length()).map(|len| (e.offset(), len)))
        .collect::<Result<_, _>>()
        .map_err(|_| err(libc::EINVAL, field, "a range longer than this machine can address"))?;
    let (slots, span) = crate::store::range_slots(&ranges);
    if span > buf_len {
        return Err(err(
            libc::EINVAL,
            field,
            format!("the ranges take {span} bytes in whole blocks, more than the {buf_len} of one I/O here"),
        ));
    }
    Ok((ranges, slots))
}

/// A read of several ranges of one object (`OstReadRequest.more`): each range is read into its
/// block-aligned slot of `buf`, then the bytes are moved to the front, back to back (the first
/// first: a range's bytes never move up). The first range cut short by the end of the object is
/// the last read. Returns (0, bytes, crc32c of them), as a single read's (start, n, crc).
fn read_ranges(
    store: &ObjectStore,
    id: u64,
    io: &rustre_proto::request::ost::ObjectIo,
    buf: &mut [u8],
) -> Result<(usize, usize, u32), pb::ErrorReply> {
    const OP: &str = "ost.read";
    let (ranges, slots) = ranges_in_buffer(io, "ost.read.more", buf.len())?;
    let mut total = 0usize;
    for (i, &(offset, len)) in ranges.iter().enumerate() {
        let to = slots.get(i + 1).copied().unwrap_or(buf.len());
        let (start, n) = store
            .read_into(id, offset, len, &mut buf[slots[i]..to])
            .map_err(|e| store_err(OP, e))?;
        let from = slots[i] + start;
        buf.copy_within(from..from + n, total);
        total += n;
        if n < len {
            break;
        }
    }
    Ok((0, total, rustre_proto::crc::crc32c(&buf[..total])))
}

fn store_err(op: &str, e: StoreError) -> pb::ErrorReply {
    let field = match &e {
        StoreError::Invalid { field, .. } => format!("{op}.{field}"),
        StoreError::BulkChecksum { .. } => format!("{op}.bulk.crc32c"),
        StoreError::NotFound(_) | StoreError::Exists(_) => format!("{op}.object.object_id"),
        _ => String::new(),
    };
    err(e.errno(), &field, e.to_string())
}

impl Shared {
    /// Takes one of the `workers` places for serving a request on its receiving thread.
    fn take_in_place(&self) -> bool {
        self.in_place
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cfg.workers).then_some(n + 1)
            })
            .is_ok()
    }

    /// The object id of a validated reference, which must be on this OST.
    fn object(&self, op: &str, r: ObjectRef) -> Result<u64, pb::ErrorReply> {
        self.ost(op, "object.ost_index", r.ost)?;
        Ok(r.id.get())
    }

    fn ost(&self, op: &str, field: &str, ost: OstIndex) -> Result<(), pb::ErrorReply> {
        if ost.get() != self.index {
            return Err(err(
                libc::EINVAL,
                &format!("{op}.{field}"),
                format!("request for OST{} sent to OST{}", ost.get(), self.index),
            ));
        }
        Ok(())
    }

    fn length(&self, op: &str, length: u64) -> Result<usize, pb::ErrorReply> {
        if length > self.cfg.max_io as u64 {
            return Err(err(
                libc::EINVAL,
                &format!("{op}.length"),
                format!(
                    "{length} bytes exceeds the largest I/O of this server ({} bytes)",
                    self.cfg.max_io
                ),
            ));
        }
        Ok(length as usize)
    }
}

fn fabric_desc(b: &rustre_proto::types::BulkDesc) -> BulkDesc {
    BulkDesc {
        addr: b.addr,
        rkey: b.rkey,
        len: b.len,
    }
}

fn handle(
    shared: &Shared,
    conn: &dyn ServerConn,
    req: &Incoming,
    moved: &mut Moved,
) -> Result<Vec<u8>, pb::ErrorReply> {
    let store = &shared.store;
    let request = Request::decode(&req.header, &req.body).map_err(|e| RemoteError::from(&e).to_pb())?;
    if let Some(a) = &shared.auth {
        a.check(conn, req.header.client_id, &request)?;
    }
    match request {
        Request::Handshake(h) => {
            if !h.cluster_name.is_empty() && h.cluster_name != shared.fsname {
                return Err(err(
                    libc::EINVAL,
                    "handshake.cluster_name",
                    format!(
                        "this is OST{} of {:?}, not of {:?}",
                        shared.index, shared.fsname, h.cluster_name
                    ),
                ));
            }
            Ok(pb::HandshakeReply {
                cluster_name: shared.fsname.clone(),
                protocol_version: PROTOCOL_VERSION,
                server_id: u64::from(shared.index),
                role: pb::PeerRole::Ost as i32,
                max_body: shared.cfg.conn.max_body,
                served_osts: vec![shared.index],
                ..Default::default()
            }
            .encode_to_vec())
        }
        Request::OstPrecreate(p) => {
            const OP: &str = "ost.precreate";
            shared.ost(OP, "ost_index", p.ost)?;
            let (first, count) = store.precreate_up_to(p.count).map_err(|e| store_err(OP, e))?;
            Ok(pb::OstPrecreateReply { first_id: first, count }.encode_to_vec())
        }
        Request::OstWrite(io) => {
            const OP: &str = "ost.write";
            let id = shared.object(OP, io.object)?;
            let len = shared.length(OP, io.extent.length())?;
            let offset = io.extent.offset();
            if !store.exists(id) {
                return Err(store_err(OP, StoreError::NotFound(id)));
            }
            // Validation makes the bulk mandatory for writes.
            let bulk = io.bulk.ok_or_else(|| err(libc::EPROTO, "ost.write.bulk", "missing"))?;
            let mut buf = shared.pool.get();
            if !io.more.is_empty() {
                let size = write_ranges(conn, store, id, &io, &bulk, &mut buf)?;
                moved.written = bulk.len;
                return Ok(pb::OstWriteReply { size }.encode_to_vec());
            }
            let head = (offset % BLOCK as u64) as usize;
            conn.pull(&fabric_desc(&bulk), 0, &mut buf[head..head + len])
                .map_err(|e| {
                    err(
                        libc::EIO,
                        "ost.write.bulk",
                        format!("bulk transfer from the client failed: {e}"),
                    )
                })?;
            // Checked against the descriptor before anything reaches the device.
            let size = store
                .write_verified(id, offset, len, &mut buf, bulk.crc32c)
                .map_err(|e| store_err(OP, e))?;
            moved.written = len as u64;
            Ok(pb::OstWriteReply { size }.encode_to_vec())
        }
        Request::OstRead(io) => {
            const OP: &str = "ost.read";
            let id = shared.object(OP, io.object)?;
            let len = shared.length(OP, io.extent.length())?;
            let mut buf = shared.pool.get();
            let (start, n, crc) = if io.more.is_empty() {
                store
                    .read_with_crc(id, io.extent.offset(), len, &mut buf)
                    .map_err(|e| store_err(OP, e))?
            } else {
                read_ranges(store, id, &io, &mut buf)?
            };
            let data = &buf[start..start + n];
            let Some(bulk) = io.bulk else {
                // A short read: the bytes travel in the reply.
                moved.read = n as u64;
                let size = store.getattr(id).map_err(|e| store_err(OP, e))?.size;
                return Ok(pb::OstReadReply {
                    bytes_read: n as u64,
                    crc32c: crc,
                    size,
                    data: data.to_vec(),
                }
                .encode_to_vec());
            };
            if n > 0 {
                conn.push_posted(&fabric_desc(&bulk), 0, data).map_err(|e| {
                    err(
                        libc::EIO,
                        "ost.read.bulk",
                        format!("bulk transfer to the client failed: {e}"),
                    )
                })?;
            }
            moved.read = n as u64;
            let size = store.getattr(id).map_err(|e| store_err(OP, e))?.size;
            Ok(pb::OstReadReply {
                bytes_read: n as u64,
                crc32c: crc,
                size,
                data: Vec::new(),
            }
            .encode_to_vec())
        }
        Request::OstPunch(p) => {
            const OP: &str = "ost.punch";
            let id = shared.object(OP, p.object)?;
            let size = match p.range {
                PunchRange::Truncate(size) => store.truncate(id, size),
                PunchRange::Hole(e) => store.punch(id, e.offset(), e.length()),
            }
            .map_err(|e| store_err(OP, e))?;
            Ok(pb::OstPunchReply { size }.encode_to_vec())
        }
        Request::OstDestroy(o) => {
            const OP: &str = "ost.destroy";
            let id = shared.object(OP, o.object)?;
            store.destroy(id).map_err(|e| store_err(OP, e))?;
            Ok(pb::OstDestroyReply {}.encode_to_vec())
        }
        Request::OstGetattr(o) => {
            const OP: &str = "ost.getattr";
            let id = shared.object(OP, o.object)?;
            let a = store.getattr(id).map_err(|e| store_err(OP, e))?;
            Ok(pb::OstGetattrReply {
                size: a.size,
                blocks: a.blocks * (BLOCK as u64 / 512),
                mtime_ns: a.mtime_ns,
            }
            .encode_to_vec())
        }
        Request::OstStatfs(st) => {
            shared.ost("ost.statfs", "ost_index", st.ost)?;
            let s = store.statfs();
            Ok(pb::OstStatfsReply {
                ost_index: shared.index,
                fsname: shared.fsname.clone(),
                total_bytes: s.total_bytes,
                free_bytes: s.free_bytes,
                objects: s.objects,
                free_objects: s.free_objects,
            }
            .encode_to_vec())
        }
        Request::OstSync(sy) => {
            const OP: &str = "ost.sync";
            shared.ost(OP, "ost_index", sy.ost)?;
            if let Some(o) = sy.object {
                let id = shared.object(OP, o)?;
                if !store.exists(id) {
                    return Err(store_err(OP, StoreError::NotFound(id)));
                }
            }
            store.sync().map_err(|e| store_err(OP, e))?;
            Ok(pb::OstSyncReply {}.encode_to_vec())
        }
        Request::OstNull(p) => Ok(pb::OstNullReply { payload: p.payload }.encode_to_vec()),
        other => Err(err(
            libc::EOPNOTSUPP,
            "",
            format!("{:?} is not an OST operation", other.opcode()),
        )),
    }
}

/// The OST's Prometheus metrics (`ostd serve --metrics ADDR`). Workers and receivers record
/// with relaxed atomic adds; per-client and per-job entries are looked up by the receiver once
/// per connection (and handshake). Names are listed in `ostd/README.md`.
pub mod metrics {
    use super::{BufferPool, ObjectStore};
    use rustre_metrics::{Counter, Gauge, KeyedTable, OpStats, Registry, Shard};
    use rustre_proto::{Opcode, pb};
    use std::sync::Arc;

    /// Most clients and most jobs with counters of their own; more count under `other`.
    pub const KEYED_BOUND: usize = 1024;

    /// Label of connections whose handshake named no job (e.g. the MDS's own connection).
    pub const NO_JOB: &str = "unknown";

    const REQUESTS: usize = 0;
    const READ_BYTES: usize = 1;
    const WRITE_BYTES: usize = 2;
    /// First of the per-operation columns of the job table.
    const JOB_OPS: usize = 3;

    /// The metrics of one OST.
    #[derive(Debug)]
    pub struct OstMetrics {
        /// The registry served over HTTP.
        pub registry: Arc<Registry>,
        /// Requests, errors and latency per operation.
        pub ops: OpStats,
        /// Bulk bytes read by clients.
        pub read_bytes: Arc<Counter>,
        /// Bulk bytes written by clients.
        pub write_bytes: Arc<Counter>,
        /// Requests being served (device I/O in flight).
        pub in_flight: Arc<Gauge>,
        /// Open connections.
        pub connections: Arc<Gauge>,
        /// Requests served by their connection's receiving thread rather than a worker.
        pub served_in_place: Arc<Counter>,
        clients: Arc<KeyedTable>,
        jobs: Arc<KeyedTable>,
    }

    fn keyed(label: &str, what: &str) -> KeyedTable {
        let names = [
            (
                format!("rustre_ost_{label}_requests_total"),
                format!("Requests received, per {what}."),
            ),
            (
                format!("rustre_ost_{label}_read_bytes_total"),
                format!("Bulk bytes read, per {what}."),
            ),
            (
                format!("rustre_ost_{label}_write_bytes_total"),
                format!("Bulk bytes written, per {what}."),
            ),
        ];
        let cols: Vec<(&str, &str)> = names.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        KeyedTable::new(label, &cols, KEYED_BOUND)
    }

    fn gauge(v: u64) -> i64 {
        i64::try_from(v).unwrap_or(i64::MAX)
    }

    impl OstMetrics {
        /// Registers every OST metric; `queue_len` reads the request queue's depth at scrape.
        pub fn new(
            index: u32,
            fsname: &str,
            store: &Arc<ObjectStore>,
            pool: &Arc<BufferPool>,
            queue_len: impl Fn() -> usize + Send + Sync + 'static,
            queue_capacity: usize,
        ) -> Self {
            let r = Arc::new(Registry::new());
            let ost = index.to_string();
            r.gauge(
                "rustre_ost_info",
                "The OST this daemon serves (its index and file system in the labels).",
                &[("ost", &ost), ("fsname", fsname)],
            )
            .set(1);
            let l: &[(&str, &str)] = &[];
            let ops: Vec<(u16, &str)> = Opcode::ALL
                .iter()
                .filter(|o| o.is_ost() || **o == Opcode::Handshake)
                .map(|o| (o.as_u16(), o.name().trim_start_matches("ost.")))
                .collect();
            let s = Arc::clone(store);
            r.gauge_fn(
                "rustre_ost_active",
                "1 while this node serves the OST (holds its MMP claim), 0 once fenced.",
                l,
                move || i64::from(!s.is_fenced()),
            );
            let st = |f: fn(&crate::store::StoreStatfs) -> u64| {
                let s = Arc::clone(store);
                move || gauge(f(&s.statfs()))
            };
            r.gauge_fn("rustre_ost_capacity_bytes", "Data capacity.", l, st(|s| s.total_bytes));
            r.gauge_fn("rustre_ost_free_bytes", "Free data space.", l, st(|s| s.free_bytes));
            r.gauge_fn("rustre_ost_objects", "Objects in use.", l, st(|s| s.objects));
            r.gauge_fn(
                "rustre_ost_free_objects",
                "Object slots free.",
                l,
                st(|s| s.free_objects),
            );
            r.gauge_fn(
                "rustre_ost_queue_depth",
                "Requests waiting for a worker.",
                l,
                move || gauge(queue_len() as u64),
            );
            r.gauge("rustre_ost_queue_capacity", "Capacity of the request queue.", l)
                .set(gauge(queue_capacity as u64));
            let p = Arc::clone(pool);
            r.gauge_fn(
                "rustre_ost_bulk_buffers_free",
                "Bulk buffers free in the pool.",
                l,
                move || gauge(p.available() as u64),
            );
            let op_stats = OpStats::new(&r, "rustre_ost", &ops);
            let jobs = keyed("job", "job id").with_labelled(
                "rustre_ost_job_ops_total",
                "Requests received, per job id and operation (jobstats).",
                "op",
                &op_stats.names(),
            );
            OstMetrics {
                ops: op_stats,
                read_bytes: r.counter("rustre_ost_read_bytes_total", "Bulk bytes read by clients.", l),
                write_bytes: r.counter("rustre_ost_write_bytes_total", "Bulk bytes written by clients.", l),
                in_flight: r.gauge(
                    "rustre_ost_requests_in_flight",
                    "Requests being served.",
                    l,
                ),
                connections: r.gauge("rustre_ost_connections", "Open connections.", l),
                served_in_place: r.counter(
                    "rustre_ost_requests_served_in_place_total",
                    "Requests served by their connection's receiving thread (nothing else of the connection waiting) rather than handed to a worker.",
                    l,
                ),
                clients: r.keyed(keyed("client", "client id")),
                jobs: r.keyed(jobs),
                registry: r,
            }
        }
    }

    /// The per-client and per-job shards a connection's requests are counted on (its own: no
    /// cache line shared with other connections of the same job).
    #[derive(Debug)]
    pub struct ConnTags {
        client: Shard,
        job: Shard,
    }

    impl ConnTags {
        /// Counts the bulk bytes of a served request.
        pub fn done(&self, read: u64, written: u64) {
            for e in [&self.client, &self.job] {
                e.add(READ_BYTES, read);
                e.add(WRITE_BYTES, written);
            }
        }
    }

    /// The counters of one connection, kept by its receiver thread.
    pub struct ConnCounters {
        metrics: Arc<OstMetrics>,
        client_id: Option<u64>,
        job: String,
        tags: Option<Arc<ConnTags>>,
    }

    impl ConnCounters {
        /// Counters of a new connection.
        pub fn new(metrics: Arc<OstMetrics>) -> Self {
            metrics.connections.inc();
            ConnCounters {
                metrics,
                client_id: None,
                job: NO_JOB.to_owned(),
                tags: None,
            }
        }

        /// Counts one request received from `client`; returns the shards to count its bytes on.
        pub fn tags(&mut self, client: u64, opcode: u16, body: &[u8]) -> Arc<ConnTags> {
            if opcode == Opcode::Handshake.as_u16()
                && let Ok(h) = <pb::HandshakeRequest as prost::Message>::decode(body)
                && rustre_proto::request::handshake::check_job_id(&h.job_id).is_ok()
            {
                self.job = if h.job_id.is_empty() {
                    NO_JOB.to_owned()
                } else {
                    h.job_id
                };
                self.tags = None;
            }
            if self.client_id != Some(client) {
                self.client_id = Some(client);
                self.tags = None;
            }
            let tags = match &self.tags {
                Some(t) => Arc::clone(t),
                None => {
                    let t = Arc::new(ConnTags {
                        client: self.metrics.clients.shard(&format!("{client:#x}")),
                        job: self.metrics.jobs.shard(&self.job),
                    });
                    self.tags = Some(Arc::clone(&t));
                    t
                }
            };
            tags.client.add(REQUESTS, 1);
            tags.job.add(REQUESTS, 1);
            tags.job.add(JOB_OPS + self.metrics.ops.slot(opcode), 1);
            tags
        }
    }

    impl Drop for ConnCounters {
        fn drop(&mut self) {
            self.metrics.connections.dec();
        }
    }
}
