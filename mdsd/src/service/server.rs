//! The event loop and the threads around it.
//!
//! One thread (the loop) owns the namespace, the reply cache and the MDT device. Fabric threads
//! (one acceptor, one receiver per connection) and the OST helpers hand it events over one bounded
//! crossbeam channel. Each turn the loop takes up to `batch_limit` events, handles them, group-
//! commits every WAL entry of the turn in one device write + flush, and only then sends the
//! turn's replies. Nothing else touches namespace state, so there are no locks around it.

use super::handler::{Handled, HandlerConfig, MdsCore, Request};
use super::metrics::{ConnCounters, MdsMetrics};
use super::ostlink::{OstCommand, OstLink};
use crate::dev::BlockDevice;
use crate::format::MdtError;
use crate::mdt::{Mdt, RecoveryStats};
use crate::mmp::MmpClaim;
use crate::ns::WalRecord;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, bounded};
use rustre_fabric::{Address, ConnOptions, FabricError, Listener, ServerConn};
use rustre_proto::FrameHeader;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Service limits and timers. Every queue is bounded by one of these.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Events handled per loop turn (and so per group commit).
    pub batch_limit: usize,
    /// Capacity of the loop's event channel.
    pub queue_depth: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Serve Prometheus metrics over HTTP on this address (`--metrics`); `None` = no metrics.
    pub metrics: Option<std::net::SocketAddr>,
    /// Creates parked waiting for precreated objects.
    pub deferred_limit: usize,
    /// How long a parked create waits before failing with EAGAIN.
    pub deferred_timeout: Duration,
    /// Objects asked per precreate.
    pub precreate_batch: u32,
    /// Refill an OST's pool when it holds fewer objects than this.
    pub low_water: u64,
    /// Statfs refresh interval per OST.
    pub statfs_interval: Duration,
    /// Checkpoint when the WAL is this full (fraction of the ring).
    pub checkpoint_fill: f64,
    /// Capacity of each OST helper's command queue.
    pub ost_queue: usize,
    /// Fabric options for accepted and outgoing connections.
    pub conn: ConnOptions,
    /// Cluster authentication (`--secret`): every connection must complete the handshake, OST
    /// connections are authenticated too, and opens get capabilities. `None` = no security.
    pub auth: Option<Arc<rustre_proto::auth::ServerAuth>>,
    /// How long an issued capability stays valid.
    pub capability_lifetime: Duration,
    /// Root squash (`--root-squash UID:GID`): uid 0 is served as UID:GID. `None` = off.
    pub root_squash: Option<super::squash::RootSquash>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            batch_limit: 256,
            queue_depth: 4096,
            max_connections: 1024,
            metrics: None,
            deferred_limit: 4096,
            deferred_timeout: Duration::from_secs(10),
            precreate_batch: 4096,
            low_water: 2048,
            statfs_interval: Duration::from_secs(5),
            checkpoint_fill: 0.75,
            ost_queue: 4096,
            conn: ConnOptions::default(),
            auth: None,
            capability_lifetime: Duration::from_secs(24 * 3600),
            root_squash: None,
        }
    }
}

/// What the loop receives.
pub enum Event {
    /// A request from a client.
    Request {
        /// The connection to answer on.
        conn: Arc<dyn ServerConn>,
        /// The request header.
        header: FrameHeader,
        /// The request body.
        body: Vec<u8>,
        /// When the receiver got it (latency is measured from here to the reply).
        received: Instant,
    },
    /// An OST precreated objects.
    Precreated {
        /// OST index.
        ost: u32,
        /// First id.
        start: u64,
        /// Number of ids.
        count: u64,
    },
    /// A precreate failed.
    PrecreateFailed {
        /// OST index.
        ost: u32,
        /// Why.
        error: String,
        /// The OST answered ENOSPC: it cannot create objects until space is freed.
        no_space: bool,
    },
    /// Fresh statfs figures of an OST.
    Statfs {
        /// OST index.
        ost: u32,
        /// Total bytes.
        total_bytes: u64,
        /// Free bytes.
        free_bytes: u64,
        /// Objects in use.
        objects: u64,
        /// Objects that can still be created.
        free_objects: u64,
    },
    /// Stop serving.
    Stop,
}

struct Parked {
    conn: Arc<dyn ServerConn>,
    header: FrameHeader,
    body: Vec<u8>,
    since: Instant,
}

struct OstState {
    link: OstLink,
    precreate_inflight: bool,
    retry_at: Instant,
    next_statfs: Instant,
}

/// A running metadata service.
pub struct Server {
    local: Address,
    stop: Arc<AtomicBool>,
    events: Sender<Event>,
    listener: Arc<dyn Listener>,
    conns: Arc<Mutex<Vec<Arc<dyn ServerConn>>>>,
    acceptor: Option<JoinHandle<()>>,
    main: Option<JoinHandle<Result<(), MdtError>>>,
    metrics: Option<Arc<MdsMetrics>>,
    metrics_http: Option<rustre_metrics::MetricsServer>,
}

/// Asks a [`Server`] to stop; [`Server::wait`] then returns.
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    events: Sender<Event>,
    listener: Arc<dyn Listener>,
}

impl Stopper {
    /// Requests the stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.listener.shutdown();
        let _ = self.events.send(Event::Stop);
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Everything the loop owns.
struct Loop<D: BlockDevice> {
    mdt: Mdt<D>,
    core: MdsCore,
    mmp: Option<MmpClaim>,
    cfg: ServeConfig,
    rx: Receiver<Event>,
    osts: Vec<OstState>,
    parked: VecDeque<Parked>,
    next_mmp: Instant,
    metrics: Option<Arc<MdsMetrics>>,
}

impl Server {
    /// Recovers the MDT on `dev` and starts serving on `listen`. `mmp` is the claim taken on the
    /// device (`None` only in tests that share nothing). `osts` lists each OST's address; an
    /// index listed more than once names its failover servers, in the order tried.
    pub fn start<D: BlockDevice + 'static>(
        dev: D,
        mmp: Option<MmpClaim>,
        listen: &Address,
        handler: HandlerConfig,
        osts: Vec<(u32, Address)>,
        cfg: ServeConfig,
    ) -> Result<(Server, RecoveryStats), anyhow::Error> {
        let hcfg = handler.clone();
        let (mdt, core, stats) = Mdt::recover(dev, |b| MdsCore::from_snapshot(b, hcfg), |c, e| c.replay(e))?;
        let listener = rustre_fabric::listen(listen, &cfg.conn)?;
        let local = listener.local_addr();
        let mut core = core;
        core.cfg.mds_addresses = vec![local.to_string()];
        core.root_squash = cfg.root_squash.clone();
        let (tx, rx) = bounded(cfg.queue_depth.max(1));
        let metrics = cfg.metrics.map(|_| {
            let m = Arc::new(MdsMetrics::new());
            let rx: Receiver<Event> = rx.clone();
            m.queue_depth(move || rx.len(), cfg.queue_depth.max(1));
            m
        });
        // Started before any helper thread, so a refused address leaves nothing running.
        let metrics_http = match (cfg.metrics, &metrics) {
            (Some(addr), Some(m)) => {
                match rustre_metrics::MetricsServer::start(
                    addr,
                    Arc::clone(&m.registry),
                    rustre_metrics::HttpOptions::default(),
                ) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        listener.shutdown();
                        return Err(e.into());
                    }
                }
            }
            _ => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Arc<dyn ServerConn>>>> = Arc::new(Mutex::new(Vec::new()));
        let mut ost_opts = cfg.conn.clone();
        ost_opts.client_id = handler.server_id;
        // Several entries of one index are the servers of a failover group, in order.
        let mut grouped: Vec<(u32, Vec<Address>)> = Vec::new();
        for (i, a) in osts {
            match grouped.iter_mut().find(|(j, _)| *j == i) {
                Some((_, list)) => list.push(a),
                None => grouped.push((i, vec![a])),
            }
        }
        let ost_states = grouped
            .into_iter()
            .map(|(i, a)| OstState {
                link: OstLink::start(
                    i,
                    a,
                    handler.fsname.clone(),
                    ost_opts.clone(),
                    cfg.ost_queue,
                    tx.clone(),
                    cfg.auth.as_ref().map(|a| a.secret().clone()),
                ),
                precreate_inflight: false,
                retry_at: Instant::now(),
                next_statfs: Instant::now(),
            })
            .collect();
        let mmp_interval = mmp.as_ref().map(|m| m.interval);
        let lp = Loop {
            mdt,
            core,
            mmp,
            cfg: cfg.clone(),
            rx,
            osts: ost_states,
            parked: VecDeque::new(),
            next_mmp: Instant::now() + mmp_interval.unwrap_or(Duration::from_secs(1)),
            metrics: metrics.clone(),
        };
        let main = std::thread::Builder::new()
            .name("mdsd-loop".into())
            .spawn(move || lp.run())?;
        let acceptor = {
            let listener = listener.clone();
            let tx = tx.clone();
            let stop = stop.clone();
            let conns = conns.clone();
            let max = cfg.max_connections;
            let auth = cfg.auth.clone();
            let metrics = metrics.clone();
            if auth.is_none() {
                super::auth::warn_unauthenticated();
            }
            std::thread::Builder::new()
                .name("mdsd-accept".into())
                .spawn(move || accept(listener, tx, stop, conns, max, auth, metrics))?
        };
        Ok((
            Server {
                local,
                stop,
                events: tx,
                listener,
                conns,
                acceptor: Some(acceptor),
                main: Some(main),
                metrics,
                metrics_http,
            },
            stats,
        ))
    }

    /// A handle that asks the service to stop (from another thread, e.g. a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            events: self.events.clone(),
            listener: self.listener.clone(),
        }
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> &Address {
        &self.local
    }

    /// The address of the metrics endpoint (`GET /metrics`), when serving metrics.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_http.as_ref().map(|m| m.local_addr())
    }

    /// The metrics, when serving them.
    pub fn metrics(&self) -> Option<&Arc<MdsMetrics>> {
        self.metrics.as_ref()
    }

    /// Stops serving: no more requests, a last checkpoint, MMP marked clean. Returns the loop's
    /// result (an error if it had stopped on a device failure).
    pub fn stop(mut self) -> Result<(), MdtError> {
        self.shutdown()
    }

    /// Waits until the loop ends on its own (device failure or fencing), then stops the rest.
    pub fn wait(mut self) -> Result<(), MdtError> {
        let r = match self.main.take() {
            Some(m) => m.join().unwrap_or_else(|_| {
                Err(MdtError::Corrupt {
                    device: String::new(),
                    reason: "event loop panicked".into(),
                })
            }),
            None => Ok(()),
        };
        let _ = self.shutdown();
        r
    }

    fn shutdown(&mut self) -> Result<(), MdtError> {
        self.stop.store(true, Ordering::SeqCst);
        self.listener.shutdown();
        let _ = self.events.send(Event::Stop);
        let r = match self.main.take() {
            Some(m) => m.join().unwrap_or_else(|_| {
                Err(MdtError::Corrupt {
                    device: String::new(),
                    reason: "event loop panicked".into(),
                })
            }),
            None => Ok(()),
        };
        for c in self.conns.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            c.close();
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        if let Some(m) = self.metrics_http.take() {
            m.stop();
        }
        r
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.main.is_some() {
            let _ = self.shutdown();
        }
    }
}

fn accept(
    listener: Arc<dyn Listener>,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Arc<dyn ServerConn>>>>,
    max: usize,
    auth: Option<Arc<rustre_proto::auth::ServerAuth>>,
    metrics: Option<Arc<MdsMetrics>>,
) {
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(FabricError::Closed(_)) => break,
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            conn.close();
            break;
        }
        readers.retain(|h| !h.is_finished());
        {
            let mut list = conns.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|c| Arc::strong_count(c) > 1);
            if readers.len() >= max {
                tracing::warn!("refusing {}: {max} connections already", conn.peer());
                conn.close();
                continue;
            }
            list.push(conn.clone());
        }
        let tx = tx.clone();
        let auth = auth.clone();
        let mut counters = metrics.clone().map(ConnCounters::new);
        let spawned = std::thread::Builder::new().name("mdsd-recv".into()).spawn(move || {
            let mut session = rustre_proto::auth::ServerSession::default();
            while let Ok(inc) = conn.recv() {
                let received = Instant::now();
                if let Some(a) = auth.as_deref() {
                    match super::auth::admit(a, &mut session, conn.as_ref(), &inc) {
                        super::auth::Admit::Forward => {}
                        super::auth::Admit::Answered => continue,
                        super::auth::Admit::Closed => break,
                    }
                }
                if let Some(c) = counters.as_mut() {
                    let client = if inc.header.client_id != 0 {
                        inc.header.client_id
                    } else {
                        conn.client_id()
                    };
                    c.request(client, inc.header.opcode, &inc.body);
                }
                if tx
                    .send(Event::Request {
                        conn: conn.clone(),
                        header: inc.header,
                        body: inc.body,
                        received,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        match spawned {
            Ok(h) => readers.push(h),
            Err(e) => tracing::warn!("cannot start a receiver thread: {e}"),
        }
    }
    for c in conns.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        c.close();
    }
    for h in readers {
        let _ = h.join();
    }
}

struct Outgoing {
    conn: Arc<dyn ServerConn>,
    header: FrameHeader,
    opcode: u16,
    body: Vec<u8>,
    error: bool,
    since: Instant,
}

impl<D: BlockDevice> Loop<D> {
    fn run(mut self) -> Result<(), MdtError> {
        let r = self.serve();
        for o in self.osts.drain(..) {
            o.link.stop();
        }
        if r.is_ok() {
            // Clean stop: a checkpoint makes the next start quick, then the MMP says "clean".
            let body = self.core.snapshot();
            self.mdt.checkpoint(&body)?;
            if let Some(m) = self.mmp.take() {
                m.release(&mut self.mdt.dev)?;
            }
        } else if let Err(e) = &r {
            tracing::error!("stopping: {e}");
        }
        r
    }

    fn serve(&mut self) -> Result<(), MdtError> {
        let tick = Duration::from_millis(50);
        let mut batch: Vec<Event> = Vec::with_capacity(self.cfg.batch_limit);
        loop {
            self.housekeeping()?;
            batch.clear();
            match self.rx.recv_timeout(tick) {
                Ok(e) => batch.push(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            while batch.len() < self.cfg.batch_limit {
                match self.rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let mut stop = false;
            let mut replies: Vec<Outgoing> = Vec::with_capacity(batch.len());
            let mut refilled = false;
            for ev in batch.drain(..) {
                match ev {
                    Event::Request {
                        conn,
                        header,
                        body,
                        received,
                    } => self.request(conn, header, body, received, &mut replies),
                    Event::Precreated { ost, start, count } => {
                        if let Some(o) = self.osts.iter_mut().find(|o| o.link.index == ost) {
                            o.precreate_inflight = false;
                        }
                        self.core.ns.alloc.set_full(ost, false);
                        if let Err(e) = self.core.log_internal(WalRecord::Precreated { ost, start, count }) {
                            tracing::error!("OST{ost}: precreated range {start}+{count} rejected: {e}");
                        } else {
                            refilled = true;
                        }
                    }
                    Event::PrecreateFailed { ost, error, no_space } => {
                        tracing::warn!("OST{ost}: precreate failed: {error}");
                        if let Some(o) = self.osts.iter_mut().find(|o| o.link.index == ost) {
                            o.precreate_inflight = false;
                            o.retry_at = Instant::now() + Duration::from_millis(500);
                        }
                        // A full OST makes waiting creates that need it fail with ENOSPC now
                        // rather than EAGAIN after the deferred timeout.
                        self.core.ns.alloc.set_full(ost, no_space);
                    }
                    Event::Statfs {
                        ost,
                        total_bytes,
                        free_bytes,
                        objects,
                        free_objects,
                    } => {
                        if let Some(p) = self.core.ns.alloc.osts.get_mut(&ost) {
                            p.total_bytes = total_bytes;
                            p.free_bytes = free_bytes;
                            p.total_objects = objects + free_objects;
                            p.free_objects = free_objects;
                        }
                    }
                    Event::Stop => stop = true,
                }
            }
            if refilled || !self.parked.is_empty() {
                self.retry_parked(&mut replies);
            }
            // Fence: a loop that was paused (or slow) past its MMP deadline checks the block
            // before writing anything, so a node that was taken over meanwhile writes nothing.
            self.bump_mmp_if_due()?;
            // Group commit: every record of this turn in one write + flush, before any reply.
            let entries = std::mem::take(&mut self.core.pending);
            let core = &self.core;
            let t0 = Instant::now();
            self.mdt.commit(&entries, &mut || core.snapshot())?;
            if let Some(m) = &self.metrics
                && !entries.is_empty()
            {
                m.commits.inc();
                m.commit_entries.add(entries.len() as u64);
                m.commit_latency.observe(t0.elapsed());
            }
            // Gauges too are set before the replies go out.
            if let Some(m) = &self.metrics {
                m.parked.set(self.parked.len() as i64);
                m.inodes.set(self.core.ns.inode_count() as i64);
                m.wal_used
                    .set(i64::try_from(self.mdt.wal_usage().0).unwrap_or(i64::MAX));
            }
            for r in replies {
                // Counted before sending, so a client holding its reply sees it counted.
                if let Some(m) = &self.metrics {
                    m.reply(r.header.opcode, r.since, &r.body, r.error);
                }
                if let Err(e) = r.conn.reply(&r.header, r.opcode, &r.body, r.error) {
                    tracing::debug!("reply to {}: {e}", r.conn.peer());
                }
            }
            self.after_turn();
            if stop {
                return Ok(());
            }
        }
    }

    fn request(
        &mut self,
        conn: Arc<dyn ServerConn>,
        header: FrameHeader,
        body: Vec<u8>,
        since: Instant,
        replies: &mut Vec<Outgoing>,
    ) {
        let client = if header.client_id != 0 {
            header.client_id
        } else {
            conn.client_id()
        };
        let req = Request {
            client,
            xid: header.xid,
            opcode: header.opcode,
            body,
        };
        let peer = if self.core.root_squash.is_some() {
            conn.peer()
        } else {
            String::new()
        };
        match self.core.handle_from(&req, now_ns(), &peer) {
            Handled::Reply { opcode, body, error } => replies.push(Outgoing {
                body: match self.cfg.auth.as_deref() {
                    Some(a) if super::auth::issues_capabilities(opcode, error) => {
                        super::auth::with_capabilities(a, self.cfg.capability_lifetime, req.client, &req.body, &body)
                            .unwrap_or(body)
                    }
                    _ => body,
                },
                conn,
                header,
                opcode,
                error,
                since,
            }),
            Handled::NeedObjects => {
                if self.parked.len() >= self.cfg.deferred_limit {
                    let body =
                        super::wire::Failure::Errno(crate::Errno::EAGAIN, "create: no OST objects available").to_pb();
                    replies.push(Outgoing {
                        conn,
                        header,
                        opcode: header.opcode,
                        body: prost::Message::encode_to_vec(&body),
                        error: true,
                        since,
                    });
                } else {
                    self.parked.push_back(Parked {
                        conn,
                        header,
                        body: req.body,
                        since,
                    });
                }
            }
        }
    }

    fn retry_parked(&mut self, replies: &mut Vec<Outgoing>) {
        let n = self.parked.len();
        for _ in 0..n {
            let Some(p) = self.parked.pop_front() else { break };
            if p.since.elapsed() > self.cfg.deferred_timeout {
                let body =
                    super::wire::Failure::Errno(crate::Errno::EAGAIN, "create: no OST objects available").to_pb();
                replies.push(Outgoing {
                    conn: p.conn,
                    header: p.header,
                    opcode: p.header.opcode,
                    body: prost::Message::encode_to_vec(&body),
                    error: true,
                    since: p.since,
                });
                continue;
            }
            self.request(p.conn, p.header, p.body, p.since, replies);
        }
    }

    fn after_turn(&mut self) {
        // Destroy freed objects (best effort: an object whose destroy is lost stays an orphan on
        // its OST; it is never reused).
        for o in std::mem::take(&mut self.core.freed) {
            if let Some(s) = self.osts.iter().find(|s| s.link.index == o.ost) {
                let _ = s.link.send(OstCommand::Destroy(o.oid));
            }
        }
        let now = Instant::now();
        for s in &mut self.osts {
            let avail = self.core.ns.alloc.osts.get(&s.link.index).map_or(0, |p| p.available());
            if avail < self.cfg.low_water && !s.precreate_inflight && now >= s.retry_at {
                s.precreate_inflight = s.link.send(OstCommand::Precreate(self.cfg.precreate_batch));
            }
            if now >= s.next_statfs && s.link.send(OstCommand::Statfs) {
                s.next_statfs = now + self.cfg.statfs_interval;
            }
        }
    }

    fn housekeeping(&mut self) -> Result<(), MdtError> {
        self.bump_mmp_if_due()?;
        let (used, len) = self.mdt.wal_usage();
        if used as f64 > len as f64 * self.cfg.checkpoint_fill {
            let t0 = Instant::now();
            let body = self.core.snapshot();
            self.mdt.checkpoint(&body)?;
            if let Some(m) = &self.metrics {
                m.checkpoints.inc();
            }
            tracing::info!(
                "checkpoint {}: {} inodes, {} bytes, {:.0} ms",
                self.mdt.generation(),
                self.core.ns.inode_count(),
                body.len(),
                t0.elapsed().as_secs_f64() * 1000.0
            );
        }
        self.bump_mmp_if_due()
    }

    fn bump_mmp_if_due(&mut self) -> Result<(), MdtError> {
        if let Some(m) = &mut self.mmp
            && Instant::now() >= self.next_mmp
        {
            m.bump(&mut self.mdt.dev)?;
            self.next_mmp = Instant::now() + m.interval;
            if let Some(mt) = &self.metrics {
                mt.mmp_updates.inc();
            }
        }
        Ok(())
    }
}
