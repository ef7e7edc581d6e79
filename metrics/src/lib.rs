//! Prometheus text metrics for the rustre daemons.
//!
//! A [`Registry`] holds metric families registered at start-up: [`Counter`]s, [`Gauge`]s (stored
//! or computed on scrape), fixed-bucket latency [`Histogram`]s, [`CounterVec`]s (one counter per
//! value of a label known in advance, e.g. errno) and [`KeyedTable`]s (per-client or per-job
//! counters keyed by strings met at run time, bounded: once full, new keys count under
//! [`OTHER`]). Recording is a relaxed atomic add: no lock, no allocation. Only
//! [`KeyedTable::entry`] (once per connection or handshake) takes a lock.
//!
//! [`Registry::render`] writes the Prometheus text exposition format (version 0.0.4) and
//! [`MetricsServer`] serves it over HTTP/1.1 at `GET /metrics`.

pub mod check;
pub mod http;

pub use http::{HttpOptions, MetricsServer};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label value under which a full [`KeyedTable`] counts new keys.
pub const OTHER: &str = "other";

/// Latency bucket upper bounds, in nanoseconds: 10 µs to 10 s.
pub const LATENCY_BUCKETS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A failure of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listening socket could not be opened.
    #[error("metrics: cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another system call failed.
    #[error("metrics: {what}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.add(-1);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of durations over fixed buckets (upper bounds in nanoseconds, plus +Inf).
#[derive(Debug)]
pub struct Histogram {
    bounds_ns: Box<[u64]>,
    /// Non-cumulative: `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`; the last
    /// one is +Inf.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds_ns` (sorted and deduplicated here).
    pub fn new(bounds_ns: &[u64]) -> Self {
        let mut b = bounds_ns.to_vec();
        b.sort_unstable();
        b.dedup();
        let buckets = (0..=b.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds_ns: b.into_boxed_slice(),
            buckets,
            sum_ns: AtomicU64::new(0),
        }
    }

    /// A latency histogram over [`LATENCY_BUCKETS_NS`].
    pub fn latency() -> Self {
        Self::new(&LATENCY_BUCKETS_NS)
    }

    /// Records one observation of `ns` nanoseconds.
    pub fn observe_ns(&self, ns: u64) {
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations, in nanoseconds.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.load(Ordering::Relaxed)
    }
}

/// One counter per value of a label whose values are known in advance (opcode, errno, …).
#[derive(Debug)]
pub struct CounterVec {
    label: String,
    values: Box<[String]>,
    counters: Box<[AtomicU64]>,
}

impl CounterVec {
    /// Counters labelled `label` = each of `values`. Counters still at zero are not rendered.
    pub fn new(label: &str, values: Vec<String>) -> Self {
        let values = if values.is_empty() {
            vec![OTHER.to_owned()]
        } else {
            values
        };
        CounterVec {
            label: sanitize_name(label),
            counters: values.iter().map(|_| AtomicU64::new(0)).collect(),
            values: values.into_boxed_slice(),
        }
    }

    /// Adds `n` to the counter of value `i`; an index out of range counts on the last value.
    pub fn add(&self, i: usize, n: u64) {
        let i = i.min(self.counters.len() - 1);
        if let Some(c) = self.counters.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The count of value `i` (0 when out of range).
    pub fn get(&self, i: usize) -> u64 {
        self.counters.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// The counters of one key of a [`KeyedTable`], one per column, plus the [`Shard`]s of the key
/// alive now (their counts are part of the key's until they fold into it).
#[derive(Debug)]
pub struct KeyedEntry {
    cols: Box<[AtomicU64]>,
    shards: Mutex<Vec<Arc<KeyedEntry>>>,
}

impl KeyedEntry {
    fn new(columns: usize) -> Self {
        KeyedEntry {
            cols: (0..columns).map(|_| AtomicU64::new(0)).collect(),
            shards: Mutex::new(Vec::new()),
        }
    }

    /// Adds `n` to column `col` (ignored when out of range).
    pub fn add(&self, col: usize, n: u64) {
        if let Some(c) = self.cols.get(col) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn own(&self, col: usize) -> u64 {
        self.cols.get(col).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The value of column `col`, live shards included (0 when out of range).
    pub fn get(&self, col: usize) -> u64 {
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards.iter().fold(self.own(col), |a, s| a.wrapping_add(s.own(col)))
    }

    fn is_zero(&self) -> bool {
        (0..self.cols.len()).all(|c| self.get(c) == 0)
    }
}

/// One writer's private counters for a key of a [`KeyedTable`] (e.g. one connection's): adds
/// touch only its own cache lines, so many connections of one job do not contend; the key's
/// values include it, and it folds into the key when dropped.
#[derive(Debug)]
pub struct Shard {
    base: Arc<KeyedEntry>,
    mine: Arc<KeyedEntry>,
}

impl Shard {
    /// Adds `n` to column `col` (ignored when out of range).
    pub fn add(&self, col: usize, n: u64) {
        self.mine.add(col, n);
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        let mut shards = self.base.shards.lock().unwrap_or_else(|e| e.into_inner());
        for (c, v) in self.mine.cols.iter().enumerate() {
            self.base.add(c, v.load(Ordering::Relaxed));
        }
        shards.retain(|s| !Arc::ptr_eq(s, &self.mine));
    }
}

/// Counters per run-time key (client, job), one column per metric, with a bound on the number
/// of keys: once `bound` keys exist, every new key shares the [`OTHER`] entry. Memory is
/// `bound × columns` counters plus the keys.
#[derive(Debug)]
pub struct KeyedTable {
    label: String,
    columns: Vec<Column>,
    bound: usize,
    other: Arc<KeyedEntry>,
    map: Mutex<HashMap<String, Arc<KeyedEntry>>>,
}

/// One column of a [`KeyedTable`]: a metric name and, for a labelled column, its fixed label.
#[derive(Debug)]
struct Column {
    name: String,
    help: String,
    extra: Option<(String, String)>,
}

impl KeyedTable {
    /// A table whose keys are the values of `label`, with `columns` (metric name, help) and at
    /// most `bound` keys besides [`OTHER`].
    pub fn new(label: &str, columns: &[(&str, &str)], bound: usize) -> Self {
        let entry = || Arc::new(KeyedEntry::new(columns.len()));
        KeyedTable {
            label: sanitize_name(label),
            columns: columns
                .iter()
                .map(|(n, h)| Column {
                    name: sanitize_name(n),
                    help: (*h).to_owned(),
                    extra: None,
                })
                .collect(),
            bound,
            other: entry(),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Adds one column per value of `label`, all under the metric `name` (e.g. requests per
    /// operation per job); their indexes follow the columns already there, in the order of
    /// `values`. Zero counts of these columns are not rendered. Call before any [`Self::entry`].
    pub fn with_labelled(mut self, name: &str, help: &str, label: &str, values: &[&str]) -> Self {
        for v in values {
            self.columns.push(Column {
                name: sanitize_name(name),
                help: help.to_owned(),
                extra: Some((sanitize_name(label), (*v).to_owned())),
            });
        }
        self.other = Arc::new(KeyedEntry::new(self.columns.len()));
        self
    }

    /// Number of columns.
    pub fn columns(&self) -> usize {
        self.columns.len()
    }

    /// The entry of `key`, created if the table has room, else the shared [`OTHER`] entry.
    /// Call it once per connection (or handshake) and keep the entry: recording on it is
    /// lock-free.
    pub fn entry(&self, key: &str) -> Arc<KeyedEntry> {
        if key == OTHER {
            return Arc::clone(&self.other);
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get(key) {
            return Arc::clone(e);
        }
        if map.len() >= self.bound {
            return Arc::clone(&self.other);
        }
        let e = Arc::new(KeyedEntry::new(self.columns.len()));
        map.insert(key.to_owned(), Arc::clone(&e));
        e
    }

    /// A private [`Shard`] of `key`'s entry (or of [`OTHER`] when the table is full): what a
    /// connection keeps and counts on. Live shards are bounded by the writers (connections).
    pub fn shard(&self, key: &str) -> Shard {
        let base = self.entry(key);
        let mine = Arc::new(KeyedEntry::new(self.columns.len()));
        base.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&mine));
        Shard { base, mine }
    }

    /// Keys held (not counting [`OTHER`]).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The [`OTHER`] entry.
    pub fn other(&self) -> &Arc<KeyedEntry> {
        &self.other
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

type GaugeFn = Box<dyn Fn() -> i64 + Send + Sync>;

enum Value {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    GaugeFn(GaugeFn),
    Histogram(Arc<Histogram>),
    Vec(Arc<CounterVec>),
    Keyed(Arc<KeyedTable>, usize),
}

struct Family {
    name: String,
    help: String,
    kind: Kind,
    series: Vec<(Vec<(String, String)>, Value)>,
}

/// The metric families of one daemon.
#[derive(Default)]
pub struct Registry {
    families: Mutex<Vec<Family>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.families.lock().map_or(0, |f| f.len());
        f.debug_struct("Registry").field("families", &n).finish()
    }
}

/// A metric or label name reduced to `[a-zA-Z_][a-zA-Z0-9_]*` (other characters become `_`).
pub fn sanitize_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// A label value escaped for the text format: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn owned_labels(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (sanitize_name(k), (*v).to_owned()))
        .collect()
}

fn write_labels(out: &mut String, labels: &[(String, String)], extra: &[(&str, &str)]) {
    if labels.is_empty() && extra.is_empty() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().copied());
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, name: &str, help: &str, kind: Kind, labels: Vec<(String, String)>, value: Value) {
        let name = sanitize_name(name);
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        match fams.iter_mut().find(|f| f.name == name && f.kind == kind) {
            Some(f) => f.series.push((labels, value)),
            None => fams.push(Family {
                name,
                help: help.to_owned(),
                kind,
                series: vec![(labels, value)],
            }),
        }
    }

    /// Registers a counter `name{labels}`. Registering the same name again adds a series.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        let c = Arc::new(Counter::default());
        self.add(
            name,
            help,
            Kind::Counter,
            owned_labels(labels),
            Value::Counter(Arc::clone(&c)),
        );
        c
    }

    /// Registers a gauge `name{labels}`.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
        let g = Arc::new(Gauge::default());
        self.add(
            name,
            help,
            Kind::Gauge,
            owned_labels(labels),
            Value::Gauge(Arc::clone(&g)),
        );
        g
    }

    /// Registers a gauge computed at each scrape (e.g. a channel's length).
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        f: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.add(
            name,
            help,
            Kind::Gauge,
            owned_labels(labels),
            Value::GaugeFn(Box::new(f)),
        );
    }

    /// Registers a latency histogram `name{labels}` over [`LATENCY_BUCKETS_NS`].
    pub fn histogram(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Histogram> {
        let h = Arc::new(Histogram::latency());
        self.add(
            name,
            help,
            Kind::Histogram,
            owned_labels(labels),
            Value::Histogram(Arc::clone(&h)),
        );
        h
    }

    /// Registers a counter vector `name{labels, vec.label=…}` (zero counters are not rendered).
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[(&str, &str)], vec: CounterVec) -> Arc<CounterVec> {
        let v = Arc::new(vec);
        self.add(
            name,
            help,
            Kind::Counter,
            owned_labels(labels),
            Value::Vec(Arc::clone(&v)),
        );
        v
    }

    /// Registers a keyed table: one counter family per column, one series per key.
    pub fn keyed(&self, table: KeyedTable) -> Arc<KeyedTable> {
        let t = Arc::new(table);
        for (i, c) in t.columns.iter().enumerate() {
            self.add(
                &c.name,
                &c.help,
                Kind::Counter,
                Vec::new(),
                Value::Keyed(Arc::clone(&t), i),
            );
        }
        t
    }

    /// The Prometheus text exposition (format version 0.0.4) of every family.
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(16 << 10);
        for f in fams.iter() {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            for (labels, value) in &f.series {
                render_series(&mut out, &f.name, labels, value);
            }
        }
        out
    }
}

fn render_series(out: &mut String, name: &str, labels: &[(String, String)], value: &Value) {
    match value {
        Value::Counter(c) => {
            out.push_str(name);
            write_labels(out, labels, &[]);
            let _ = writeln!(out, " {}", c.get());
        }
        Value::Gauge(g) => {
            out.push_str(name);
            write_labels(out, labels, &[]);
            let _ = writeln!(out, " {}", g.get());
        }
        Value::GaugeFn(f) => {
            out.push_str(name);
            write_labels(out, labels, &[]);
            let _ = writeln!(out, " {}", f());
        }
        Value::Histogram(h) => {
            let mut cum = 0u64;
            for (i, b) in h.buckets.iter().enumerate() {
                cum += b.load(Ordering::Relaxed);
                let le = match h.bounds_ns.get(i) {
                    Some(&ns) => format!("{}", seconds(ns)),
                    None => "+Inf".to_owned(),
                };
                let _ = write!(out, "{name}_bucket");
                write_labels(out, labels, &[("le", &le)]);
                let _ = writeln!(out, " {cum}");
            }
            let _ = write!(out, "{name}_sum");
            write_labels(out, labels, &[]);
            let _ = writeln!(out, " {}", seconds(h.sum_ns()));
            let _ = write!(out, "{name}_count");
            write_labels(out, labels, &[]);
            let _ = writeln!(out, " {cum}");
        }
        Value::Vec(v) => {
            for (val, c) in v.values.iter().zip(v.counters.iter()) {
                let n = c.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                out.push_str(name);
                write_labels(out, labels, &[(&v.label, val)]);
                let _ = writeln!(out, " {n}");
            }
        }
        Value::Keyed(t, col) => {
            let map = t.map.lock().unwrap_or_else(|e| e.into_inner());
            let mut keys: Vec<(&String, &Arc<KeyedEntry>)> = map.iter().collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let other = OTHER.to_owned();
            let rows = keys.into_iter().chain(std::iter::once((&other, &t.other)));
            let extra = t.columns.get(*col).and_then(|c| c.extra.as_ref());
            for (key, e) in rows {
                if key == OTHER && e.is_zero() {
                    continue;
                }
                let v = e.get(*col);
                match extra {
                    Some(_) if v == 0 => continue,
                    Some((l, lv)) => {
                        out.push_str(name);
                        write_labels(out, labels, &[(&t.label, key), (l, lv)]);
                    }
                    None => {
                        out.push_str(name);
                        write_labels(out, labels, &[(&t.label, key)]);
                    }
                }
                let _ = writeln!(out, " {v}");
            }
        }
    }
}

/// The value of varint field `field` of an encoded protobuf message (the last one if repeated),
/// read without decoding the message, so without allocating: how the daemons take the errno of
/// an `ErrorReply` (field 1) for the error counters. `None` when absent or malformed.
pub fn varint_field(msg: &[u8], field: u32) -> Option<u64> {
    fn varint(b: &[u8]) -> Option<(u64, usize)> {
        let mut v = 0u64;
        for (k, &byte) in b.iter().enumerate().take(10) {
            v |= u64::from(byte & 0x7f) << (7 * k);
            if byte & 0x80 == 0 {
                return Some((v, k + 1));
            }
        }
        None
    }
    let mut i = 0usize;
    let mut found = None;
    while i < msg.len() {
        let (key, n) = varint(msg.get(i..)?)?;
        i += n;
        match key & 7 {
            0 => {
                let (v, n) = varint(msg.get(i..)?)?;
                i += n;
                if key >> 3 == u64::from(field) {
                    found = Some(v);
                }
            }
            1 => i = i.checked_add(8)?,
            2 => {
                let (len, n) = varint(msg.get(i..)?)?;
                i = i.checked_add(n)?.checked_add(usize::try_from(len).ok()?)?;
            }
            5 => i = i.checked_add(4)?,
            _ => return None,
        }
        if i > msg.len() {
            return None;
        }
    }
    found
}

/// The errno of an encoded `ErrorReply` (field 1, an `int32`); 0 when absent or malformed.
pub fn errno_of(error_reply: &[u8]) -> i32 {
    varint_field(error_reply, 1).map_or(0, |v| v as i64 as i32)
}

/// Highest errno counted under its own label; larger ones count under [`OTHER`].
pub const MAX_ERRNO: i32 = 133;

/// The series of one operation in an [`OpStats`].
#[derive(Debug)]
pub struct OpSeries {
    /// Requests answered.
    pub requests: Arc<Counter>,
    /// Error replies by errno.
    pub errors: Arc<CounterVec>,
    /// Time from receiving the request to sending its reply.
    pub latency: Arc<Histogram>,
}

/// Requests, errors (by errno) and latency per operation code, registered as
/// `{prefix}_requests_total{op}`, `{prefix}_errors_total{op,errno}` and
/// `{prefix}_request_duration_seconds{op}`. Codes not listed count under `op="other"`.
#[derive(Debug)]
pub struct OpStats {
    index: Box<[usize]>,
    series: Box<[OpSeries]>,
    names: Box<[String]>,
}

impl OpStats {
    /// Registers the series of `ops` (code, name) in `registry`.
    pub fn new(registry: &Registry, prefix: &str, ops: &[(u16, &str)]) -> Self {
        let top = ops.iter().map(|(c, _)| usize::from(*c)).max().unwrap_or(0);
        let other = ops.len();
        let mut index = vec![other; top + 1];
        for (i, (c, _)) in ops.iter().enumerate() {
            index[usize::from(*c)] = i;
        }
        let errnos: Vec<String> = (1..=MAX_ERRNO)
            .map(|e| e.to_string())
            .chain(std::iter::once(OTHER.to_owned()))
            .collect();
        let series = ops
            .iter()
            .map(|(_, n)| *n)
            .chain(std::iter::once(OTHER))
            .map(|name| OpSeries {
                requests: registry.counter(
                    &format!("{prefix}_requests_total"),
                    "Requests answered, by operation.",
                    &[("op", name)],
                ),
                errors: registry.counter_vec(
                    &format!("{prefix}_errors_total"),
                    "Error replies, by operation and errno.",
                    &[("op", name)],
                    CounterVec::new("errno", errnos.clone()),
                ),
                latency: registry.histogram(
                    &format!("{prefix}_request_duration_seconds"),
                    "Time from receiving a request to sending its reply, by operation.",
                    &[("op", name)],
                ),
            })
            .collect();
        OpStats {
            index: index.into_boxed_slice(),
            series,
            names: ops
                .iter()
                .map(|(_, n)| (*n).to_owned())
                .chain(std::iter::once(OTHER.to_owned()))
                .collect(),
        }
    }

    /// The position of operation `code` in [`Self::names`] (unlisted codes: the last, `other`).
    pub fn slot(&self, code: u16) -> usize {
        let last = self.series.len() - 1;
        self.index.get(usize::from(code)).copied().unwrap_or(last).min(last)
    }

    /// The operation names, `other` last (e.g. for [`KeyedTable::with_labelled`]).
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The series of operation `code`.
    pub fn op(&self, code: u16) -> &OpSeries {
        &self.series[self.slot(code)]
    }

    /// Records one answered request: its latency and, for an error reply, its errno.
    pub fn record(&self, code: u16, latency: Duration, errno: Option<i32>) {
        let s = self.op(code);
        s.requests.inc();
        s.latency.observe(latency);
        if let Some(e) = errno {
            let i = if (1..=MAX_ERRNO).contains(&e) {
                (e - 1) as usize
            } else {
                MAX_ERRNO as usize
            };
            s.errors.add(i, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_help_and_type() {
        let r = Registry::new();
        let c = r.counter("rustre_ops_total", "Requests served.", &[("op", "create")]);
        let d = r.counter("rustre_ops_total", "Requests served.", &[("op", "lookup")]);
        let g = r.gauge("rustre_queue", "Queued.\nSecond line \\ here", &[]);
        r.gauge_fn("rustre_fn", "Computed.", &[], || -7);
        c.add(3);
        d.inc();
        g.set(5);
        g.dec();
        let text = r.render();
        assert_eq!(
            text,
            "# HELP rustre_ops_total Requests served.\n# TYPE rustre_ops_total counter\n\
             rustre_ops_total{op=\"create\"} 3\nrustre_ops_total{op=\"lookup\"} 1\n\
             # HELP rustre_queue Queued.\\nSecond line \\\\ here\n# TYPE rustre_queue gauge\nrustre_queue 4\n\
             # HELP rustre_fn Computed.\n# TYPE rustre_fn gauge\nrustre_fn -7\n"
        );
    }

    #[test]
    fn label_values_and_names_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(sanitize_name("bad-name.x"), "bad_name_x");
        assert_eq!(sanitize_name("9lives"), "_9lives");
        assert_eq!(sanitize_name(""), "_");
        let r = Registry::new();
        r.counter("c", "h", &[("job-id", "q\"\\\n")]).inc();
        assert!(r.render().contains("c{job_id=\"q\\\"\\\\\\n\"} 1\n"), "{}", r.render());
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let h = Histogram::new(&[1_000, 10_000, 1_000]);
        h.observe_ns(500);
        h.observe_ns(1_000); // on the bound: le is inclusive
        h.observe_ns(1_001);
        h.observe_ns(50_000);
        h.observe(Duration::from_secs(u64::MAX));
        assert_eq!(h.count(), 5);
        let r = Registry::new();
        let h = r.histogram("lat_seconds", "Latency.", &[("op", "read")]);
        h.observe_ns(7_000); // 10 µs bucket
        h.observe_ns(30_000_000); // 50 ms bucket
        h.observe_ns(20_000_000_000); // +Inf
        let text = r.render();
        assert!(text.contains("# TYPE lat_seconds histogram\n"));
        assert!(
            text.contains("lat_seconds_bucket{op=\"read\",le=\"0.00001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_bucket{op=\"read\",le=\"0.025\"} 1\n"));
        assert!(text.contains("lat_seconds_bucket{op=\"read\",le=\"0.05\"} 2\n"));
        assert!(text.contains("lat_seconds_bucket{op=\"read\",le=\"10\"} 2\n"));
        assert!(text.contains("lat_seconds_bucket{op=\"read\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("lat_seconds_sum{op=\"read\"} 20.030007\n"), "{text}");
        assert!(text.contains("lat_seconds_count{op=\"read\"} 3\n"));
        // Bucket counts never decrease along le.
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("lat_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), LATENCY_BUCKETS_NS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn counter_vec_renders_non_zero_values_and_clamps_the_index() {
        let r = Registry::new();
        let v = r.counter_vec(
            "errors_total",
            "Errors.",
            &[("op", "create")],
            CounterVec::new("errno", vec!["2".into(), "17".into(), OTHER.into()]),
        );
        v.add(1, 2);
        v.add(99, 1);
        let text = r.render();
        assert!(!text.contains("errno=\"2\""));
        assert!(text.contains("errors_total{op=\"create\",errno=\"17\"} 2\n"));
        assert!(text.contains("errors_total{op=\"create\",errno=\"other\"} 1\n"));
        assert_eq!(v.get(2), 1);
    }

    #[test]
    fn keyed_table_is_bounded_and_counts_overflow_under_other() {
        let r = Registry::new();
        let t = r.keyed(KeyedTable::new(
            "job",
            &[("job_ops_total", "Ops per job."), ("job_bytes_total", "Bytes per job.")],
            3,
        ));
        for i in 0..10 {
            let e = t.entry(&format!("job{i}"));
            e.add(0, 1);
            e.add(1, 100);
        }
        assert_eq!(t.len(), 3);
        t.entry("job0").add(0, 1);
        assert_eq!(t.other().get(0), 7);
        let text = r.render();
        assert!(text.contains("job_ops_total{job=\"job0\"} 2\n"), "{text}");
        assert!(text.contains("job_ops_total{job=\"job2\"} 1\n"));
        assert!(!text.contains("job3"));
        assert!(text.contains("job_ops_total{job=\"other\"} 7\n"));
        assert!(text.contains("job_bytes_total{job=\"other\"} 700\n"));
        // A key spelled like the overflow label shares it, and an empty table renders no rows.
        t.entry(OTHER).add(0, 1);
        assert_eq!(t.other().get(0), 8);
        // Labelled columns: one metric, one series per key and value, zeros left out.
        let r2 = Registry::new();
        let t = r2.keyed(KeyedTable::new("job", &[("j_total", "All.")], 4).with_labelled(
            "j_ops_total",
            "Per op.",
            "op",
            &["read", "write"],
        ));
        assert_eq!(t.columns(), 3);
        let e = t.entry("a");
        e.add(0, 5);
        e.add(2, 5);
        let text = r2.render();
        assert!(text.contains("j_ops_total{job=\"a\",op=\"write\"} 5\n"), "{text}");
        assert!(!text.contains("op=\"read\""), "{text}");
        assert_eq!(text.matches("# TYPE j_ops_total counter").count(), 1);
        assert!(check::parse(&text).is_ok());
        let r = Registry::new();
        r.keyed(KeyedTable::new("client", &[("c_total", "h")], 0)).entry("x");
        assert_eq!(r.render(), "# HELP c_total h\n# TYPE c_total counter\n");
    }

    #[test]
    fn op_stats_count_per_operation_with_errnos_and_other() {
        let r = Registry::new();
        let ops = OpStats::new(&r, "x", &[(11, "create"), (10, "lookup")]);
        ops.record(11, Duration::from_micros(30), None);
        ops.record(11, Duration::from_micros(30), Some(17));
        ops.record(10, Duration::from_micros(5), Some(2));
        ops.record(99, Duration::from_micros(5), Some(-4));
        ops.record(3, Duration::from_micros(5), Some(1000));
        let text = r.render();
        assert!(text.contains("x_requests_total{op=\"create\"} 2\n"), "{text}");
        assert!(text.contains("x_requests_total{op=\"lookup\"} 1\n"));
        assert!(text.contains("x_requests_total{op=\"other\"} 2\n"));
        assert!(text.contains("x_errors_total{op=\"create\",errno=\"17\"} 1\n"));
        assert!(text.contains("x_errors_total{op=\"lookup\",errno=\"2\"} 1\n"));
        assert!(text.contains("x_errors_total{op=\"other\",errno=\"other\"} 2\n"));
        assert!(text.contains("x_request_duration_seconds_bucket{op=\"create\",le=\"0.00005\"} 2\n"));
        assert!(text.contains("x_request_duration_seconds_count{op=\"lookup\"} 1\n"));
        assert_eq!(ops.names(), ["create", "lookup", "other"]);
        assert_eq!((ops.slot(11), ops.slot(10), ops.slot(99), ops.slot(3)), (0, 1, 2, 2));
        // One HELP/TYPE per family, whatever the number of operations.
        assert_eq!(text.matches("# TYPE x_requests_total counter").count(), 1);
    }

    #[test]
    fn varint_fields_are_read_without_decoding() {
        // errno = 2, message = "x", field = "ab"
        let m = [0x08, 0x02, 0x12, 0x01, b'x', 0x1a, 0x02, b'a', b'b'];
        assert_eq!(varint_field(&m, 1), Some(2));
        assert_eq!(errno_of(&m), 2);
        assert_eq!(varint_field(&m, 4), None);
        // Field order does not matter; the last occurrence wins; fixed-width fields are skipped.
        let m = [
            0x12, 0x00, 0x08, 0x96, 0x01, 0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x2d, 1, 2, 3, 4, 0x08, 0x11,
        ];
        assert_eq!(varint_field(&m, 1), Some(0x11));
        // A negative int32 is a ten-byte varint.
        let mut neg = vec![0x08];
        neg.extend_from_slice(&[0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(errno_of(&neg), -4);
        // Malformed: truncated varint, length past the end, bad wire type, empty.
        for bad in [&[0x08, 0x80][..], &[0x12, 0x05, 1], &[0x0b, 1], &[0x08; 1], &[0x80; 11]] {
            assert_eq!(varint_field(bad, 1), None, "{bad:?}");
        }
        assert_eq!(errno_of(&[]), 0);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..3000 {
            let b: Vec<u8> = (0..len % 40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = varint_field(&b, 1);
        }
    }

    #[test]
    fn shards_count_for_their_key_and_fold_into_it_when_dropped() {
        let r = Registry::new();
        let t = r.keyed(KeyedTable::new("job", &[("j_total", "h")], 1));
        let a = t.shard("a");
        let b = t.shard("a");
        a.add(0, 2);
        b.add(0, 3);
        t.entry("a").add(0, 1);
        assert!(r.render().contains("j_total{job=\"a\"} 6\n"));
        drop(a);
        assert_eq!(t.entry("a").get(0), 6);
        assert_eq!(t.entry("a").shards.lock().unwrap().len(), 1);
        b.add(0, 4);
        drop(b);
        assert_eq!(t.entry("a").get(0), 10);
        assert!(t.entry("a").shards.lock().unwrap().is_empty());
        // A full table shards the overflow entry.
        let o = t.shard("b");
        o.add(0, 7);
        assert!(r.render().contains("j_total{job=\"other\"} 7\n"));
        drop(o);
        assert_eq!(t.other().get(0), 7);
    }

    #[test]
    fn recording_is_safe_from_many_threads() {
        let r = Arc::new(Registry::new());
        let c = r.counter("c", "h", &[]);
        let h = r.histogram("h", "h", &[]);
        let t = r.keyed(KeyedTable::new("job", &[("j", "h")], 4));
        std::thread::scope(|s| {
            for i in 0..4 {
                let (c, h, t) = (&c, &h, &t);
                s.spawn(move || {
                    let e = t.entry(&format!("j{i}"));
                    for _ in 0..10_000 {
                        c.inc();
                        h.observe_ns(1);
                        e.add(0, 1);
                    }
                });
            }
        });
        assert_eq!(c.get(), 40_000);
        assert_eq!(h.count(), 40_000);
        assert_eq!(t.len(), 4);
    }
}
