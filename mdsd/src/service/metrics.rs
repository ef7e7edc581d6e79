//! The MDS's Prometheus metrics (`mdsd serve --metrics ADDR`).
//!
//! Everything recorded on the loop thread is a relaxed atomic add or store; per-client and
//! per-job entries are looked up once per connection (and handshake) by its receiver thread,
//! which also counts each request on them. Names are listed in `mdsd/README.md`.

use rustre_metrics::{Counter, Gauge, Histogram, KeyedTable, OpStats, Registry, Shard};
use rustre_proto::{Opcode, pb};
use std::sync::Arc;

/// Most clients and most jobs with counters of their own; more count under `other`.
pub const KEYED_BOUND: usize = 1024;

/// Label of connections whose handshake named no job.
pub const NO_JOB: &str = "unknown";

/// Columns of the per-client and per-job tables.
const REQUESTS: usize = 0;
const REQUEST_BYTES: usize = 1;
/// First of the per-operation columns of the job table.
const JOB_OPS: usize = 2;

/// The metrics of one MDS.
#[derive(Debug)]
pub struct MdsMetrics {
    /// The registry served over HTTP.
    pub registry: Arc<Registry>,
    /// Requests, errors and latency per operation.
    pub ops: OpStats,
    /// Group commits (one device write + flush each).
    pub commits: Arc<Counter>,
    /// WAL entries committed.
    pub commit_entries: Arc<Counter>,
    /// Time of each group commit.
    pub commit_latency: Arc<Histogram>,
    /// Checkpoints written.
    pub checkpoints: Arc<Counter>,
    /// MMP block updates.
    pub mmp_updates: Arc<Counter>,
    /// Creates waiting for precreated objects.
    pub parked: Arc<Gauge>,
    /// Inodes in the namespace.
    pub inodes: Arc<Gauge>,
    /// WAL bytes in use.
    pub wal_used: Arc<Gauge>,
    /// Connected clients (connections).
    pub connections: Arc<Gauge>,
    /// Bytes of reply bodies sent.
    pub reply_bytes: Arc<Counter>,
    clients: Arc<KeyedTable>,
    jobs: Arc<KeyedTable>,
}

fn mds_ops() -> Vec<(u16, &'static str)> {
    Opcode::ALL
        .iter()
        .filter(|o| o.is_mds() || **o == Opcode::Handshake)
        .map(|o| (o.as_u16(), o.name().trim_start_matches("mds.")))
        .collect()
}

impl MdsMetrics {
    /// Registers every MDS metric.
    pub fn new() -> Self {
        let r = Arc::new(Registry::new());
        r.gauge(
            "rustre_mds_active",
            "1 while this node serves the MDT (holds its MMP claim).",
            &[],
        )
        .set(1);
        let ops = OpStats::new(&r, "rustre_mds", &mds_ops());
        let keyed = |label: &str, what: &str| {
            let names = [
                (
                    format!("rustre_mds_{label}_requests_total"),
                    format!("Requests received, per {what}."),
                ),
                (
                    format!("rustre_mds_{label}_request_bytes_total"),
                    format!("Request body bytes received, per {what}."),
                ),
            ];
            let cols: Vec<(&str, &str)> = names.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            KeyedTable::new(label, &cols, KEYED_BOUND)
        };
        let jobs = keyed("job", "job id").with_labelled(
            "rustre_mds_job_ops_total",
            "Requests received, per job id and operation (jobstats).",
            "op",
            &ops.names(),
        );
        MdsMetrics {
            ops,
            commits: r.counter("rustre_mds_commits_total", "Group commits (WAL write + flush).", &[]),
            commit_entries: r.counter("rustre_mds_commit_entries_total", "WAL entries group-committed.", &[]),
            commit_latency: r.histogram(
                "rustre_mds_commit_duration_seconds",
                "Time of one group commit (write + flush).",
                &[],
            ),
            checkpoints: r.counter(
                "rustre_mds_checkpoints_total",
                "Checkpoints written while serving.",
                &[],
            ),
            mmp_updates: r.counter("rustre_mds_mmp_updates_total", "MMP block updates (heartbeats).", &[]),
            parked: r.gauge(
                "rustre_mds_parked_creates",
                "Creates waiting for precreated objects.",
                &[],
            ),
            inodes: r.gauge("rustre_mds_inodes", "Inodes in the namespace.", &[]),
            wal_used: r.gauge(
                "rustre_mds_wal_used_bytes",
                "WAL bytes in use since the last checkpoint.",
                &[],
            ),
            connections: r.gauge("rustre_mds_connections", "Connected clients (connections).", &[]),
            reply_bytes: r.counter("rustre_mds_reply_bytes_total", "Reply body bytes sent.", &[]),
            clients: r.keyed(keyed("client", "client id")),
            jobs: r.keyed(jobs),
            registry: r,
        }
    }

    /// Registers the event queue's depth (read at each scrape).
    pub fn queue_depth(&self, depth: impl Fn() -> usize + Send + Sync + 'static, capacity: usize) {
        self.registry.gauge_fn(
            "rustre_mds_queue_depth",
            "Events waiting for the loop.",
            &[],
            move || i64::try_from(depth()).unwrap_or(i64::MAX),
        );
        self.registry
            .gauge("rustre_mds_queue_capacity", "Capacity of the loop's event queue.", &[])
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }

    /// Records one answered request.
    pub fn reply(&self, opcode: u16, since: std::time::Instant, body: &[u8], error: bool) {
        let errno = error.then(|| rustre_metrics::errno_of(body));
        self.ops.record(opcode, since.elapsed(), errno);
        self.reply_bytes.add(body.len() as u64);
    }
}

impl Default for MdsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-client and per-job counters of one connection, kept by its receiver thread on
/// shards of its own (no cache line shared with other connections of the same job).
pub(crate) struct ConnCounters {
    metrics: Arc<MdsMetrics>,
    client_id: Option<u64>,
    client: Option<Shard>,
    job: Option<Shard>,
}

impl ConnCounters {
    /// Counters of a new connection.
    pub(crate) fn new(metrics: Arc<MdsMetrics>) -> Self {
        metrics.connections.inc();
        ConnCounters {
            metrics,
            client_id: None,
            client: None,
            job: None,
        }
    }

    /// Counts one request received from `client`.
    pub(crate) fn request(&mut self, client: u64, opcode: u16, body: &[u8]) {
        if opcode == Opcode::Handshake.as_u16()
            && let Ok(h) = <pb::HandshakeRequest as prost::Message>::decode(body)
            && rustre_proto::request::handshake::check_job_id(&h.job_id).is_ok()
        {
            let job = if h.job_id.is_empty() { NO_JOB } else { h.job_id.as_str() };
            self.job = Some(self.metrics.jobs.shard(job));
        }
        if self.client_id != Some(client) {
            self.client_id = Some(client);
            self.client = Some(self.metrics.clients.shard(&format!("{client:#x}")));
        }
        let job = self.job.get_or_insert_with(|| self.metrics.jobs.shard(NO_JOB));
        job.add(JOB_OPS + self.metrics.ops.slot(opcode), 1);
        let n = body.len() as u64;
        for e in [Some(&*job), self.client.as_ref()].into_iter().flatten() {
            e.add(REQUESTS, 1);
            e.add(REQUEST_BYTES, n);
        }
    }
}

impl Drop for ConnCounters {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}
