//! Simulated provider: in-process connections with injectable faults, deterministic from a seed.
//!
//! A [`Network`] is a namespace of listeners plus fault controls. `sim://name` addresses the
//! process-wide default network (seed 0); `sim://@ID/name` addresses the network with that id, so
//! tests build an isolated one with [`Network::new`] and hand [`Network::address`] to code that only
//! takes addresses (daemons, clients). Every link draws its fault decisions from its own RNG seeded
//! from the network seed and the link's number, so the same seed and the same sequence of sends
//! give the same faults ([`Network::fault_log`] records them).
//!
//! Faults: drop (the message vanishes; the caller times out), delay (a uniform pick from a range),
//! reorder (a message is held back until the next one on its pipe has been delivered, or
//! for at most [`Network::set_reorder_hold`], 5 ms by default), partition (messages between the two sides vanish, new connections and
//! bulk transfers across fail with `Unreachable`), disconnect (every connection of a node is
//! closed; both ends see `Closed`). Bulk `pull`/`push` copy directly between the buffers; drop,
//! delay and reorder apply to messages only.

mod link;

pub use link::{SimClient, SimServerConn};

use crate::{Address, ClientConn, ConnOptions, FabricError, Listener, ServerConn};
use crossbeam::channel::{Receiver, Sender, bounded};
use link::{Link, LinkSpec};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

/// Connections waiting in a listener's accept queue before `connect` waits.
const ACCEPT_BACKLOG: usize = 128;
/// How long a held-back message waits for another to overtake it, unless configured.
const DEFAULT_REORDER_HOLD: Duration = Duration::from_millis(5);
/// Fault events kept by [`Network::fault_log`] (oldest dropped first).
const FAULT_LOG_CAP: usize = 65_536;

/// Which way a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server (requests).
    ToServer = 0,
    /// Server to client (replies).
    ToClient = 1,
}

/// A fault the network applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The message was dropped.
    Drop,
    /// The message was delayed by this much.
    Delay(Duration),
    /// The message was held back for a later one to overtake.
    Reorder,
    /// The message was lost to a partition.
    Partitioned,
}

/// One entry of the fault log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultEvent {
    /// The link (connection) number within its network, in connect order from 1.
    pub link: u64,
    /// Which pipe.
    pub dir: Direction,
    /// The message's number on that pipe, from 1.
    pub seq: u64,
    /// What happened.
    pub kind: FaultKind,
}

#[derive(Debug, Clone)]
struct Faults {
    drop: f64,
    delay: Range<Duration>,
    reorder: f64,
    reorder_hold: Duration,
}

struct ListenerEntry {
    serial: u64,
    tx: Sender<Arc<Link>>,
    opts: ConnOptions,
}

pub(crate) struct NetInner {
    id: u64,
    seed: u64,
    listeners: Mutex<HashMap<String, ListenerEntry>>,
    links: Mutex<Vec<Weak<Link>>>,
    faults: Mutex<Faults>,
    partitions: Mutex<HashSet<(String, String)>>,
    next_link: AtomicU64,
    next_serial: AtomicU64,
    log: Mutex<VecDeque<FaultEvent>>,
}

impl NetInner {
    fn faults(&self) -> Faults {
        self.faults.lock().clone()
    }

    fn partitioned(&self, a: &str, b: &str) -> bool {
        let p = self.partitions.lock();
        !p.is_empty() && p.contains(&(a.to_string(), b.to_string()))
    }

    fn record(&self, e: FaultEvent) {
        let mut log = self.log.lock();
        if log.len() == FAULT_LOG_CAP {
            log.pop_front();
        }
        log.push_back(e);
    }

    fn live_links(&self) -> Vec<Arc<Link>> {
        let mut links = self.links.lock();
        links.retain(|w| w.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }
}

impl Drop for NetInner {
    fn drop(&mut self) {
        REGISTRY.lock().remove(&self.id);
    }
}

static REGISTRY: LazyLock<Mutex<HashMap<u64, Weak<NetInner>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_NET: AtomicU64 = AtomicU64::new(1);
static DEFAULT: LazyLock<Network> = LazyLock::new(|| Network::with_id(0, 0));

/// A simulated network: listeners by name, links between them, fault controls. Cloning gives
/// another handle on the same network; it lives while a handle or a connection does.
#[derive(Clone)]
pub struct Network {
    inner: Arc<NetInner>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("id", &self.inner.id)
            .field("seed", &self.inner.seed)
            .finish()
    }
}

impl Network {
    /// A new, isolated network whose faults derive from `seed`.
    pub fn new(seed: u64) -> Network {
        Network::with_id(NEXT_NET.fetch_add(1, Ordering::Relaxed), seed)
    }

    fn with_id(id: u64, seed: u64) -> Network {
        let inner = Arc::new(NetInner {
            id,
            seed,
            listeners: Mutex::new(HashMap::new()),
            links: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults {
                drop: 0.0,
                delay: Duration::ZERO..Duration::ZERO,
                reorder: 0.0,
                reorder_hold: DEFAULT_REORDER_HOLD,
            }),
            partitions: Mutex::new(HashSet::new()),
            next_link: AtomicU64::new(1),
            next_serial: AtomicU64::new(1),
            log: Mutex::new(VecDeque::new()),
        });
        REGISTRY.lock().insert(id, Arc::downgrade(&inner));
        Network { inner }
    }

    /// The network plain `sim://name` addresses use.
    pub fn default_network() -> Network {
        DEFAULT.clone()
    }

    /// This network's id (the `@ID` of its addresses).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The fabric address of `name` on this network.
    pub fn address(&self, name: &str) -> Address {
        if self.inner.id == 0 {
            Address::Sim(name.to_string())
        } else {
            Address::Sim(format!("@{}/{name}", self.inner.id))
        }
    }

    /// Listens on `name`.
    pub fn listen(&self, name: &str, opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
        let (tx, rx) = bounded(ACCEPT_BACKLOG);
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let mut listeners = self.inner.listeners.lock();
        if listeners.contains_key(name) {
            return Err(FabricError::BadAddress {
                addr: self.address(name).to_string(),
                reason: "a listener already uses this name".into(),
            });
        }
        listeners.insert(
            name.to_string(),
            ListenerEntry {
                serial,
                tx,
                opts: opts.clone(),
            },
        );
        Ok(Arc::new(SimListener {
            net: self.clone(),
            name: name.to_string(),
            serial,
            rx,
            shut: AtomicBool::new(false),
        }))
    }

    /// Connects to `name` as node `client{opts.client_id}`.
    pub fn connect(&self, name: &str, opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
        self.connect_as(&format!("client{}", opts.client_id), name, opts)
    }

    /// Connects to `name` as node `local` (the name partitions and disconnects refer to).
    pub fn connect_as(&self, local: &str, name: &str, opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
        let addr = self.address(name).to_string();
        let (tx, sopts) = {
            let listeners = self.inner.listeners.lock();
            let e = listeners
                .get(name)
                .ok_or_else(|| FabricError::Unreachable(format!("{addr}: nothing listens there")))?;
            (e.tx.clone(), e.opts.clone())
        };
        if self.inner.partitioned(local, name) {
            return Err(FabricError::Unreachable(format!("{addr}: partitioned from {local}")));
        }
        let spec = LinkSpec {
            id: self.inner.next_link.fetch_add(1, Ordering::Relaxed),
            client_name: local.to_string(),
            server_name: name.to_string(),
            client_id: opts.client_id,
            credits: opts.credits.max(1).min(sopts.credits.max(1)),
            queue: sopts.credits.max(1),
            max_body: opts.max_body.min(sopts.max_body),
            call_timeout: opts.call_timeout,
        };
        let link = Link::new(Arc::clone(&self.inner), spec);
        self.inner.links.lock().push(Arc::downgrade(&link));
        tx.send_timeout(Arc::clone(&link), opts.connect_timeout)
            .map_err(|e| match e {
                crossbeam::channel::SendTimeoutError::Timeout(_) => FabricError::Timeout {
                    peer: addr.clone(),
                    after_ms: opts.connect_timeout.as_millis() as u64,
                },
                crossbeam::channel::SendTimeoutError::Disconnected(_) => {
                    FabricError::Unreachable(format!("{addr}: listener closed"))
                }
            })?;
        Ok(Arc::new(SimClient { link }))
    }

    /// Drops each message with probability `p` (0 disables).
    pub fn set_drop(&self, p: f64) {
        self.inner.faults.lock().drop = p.clamp(0.0, 1.0);
    }

    /// Delays each message by a uniform pick from `range` (an empty range at zero disables).
    pub fn set_delay(&self, range: Range<Duration>) {
        self.inner.faults.lock().delay = range;
    }

    /// Holds back each message with probability `p` so that the next one overtakes it.
    pub fn set_reorder(&self, p: f64) {
        self.inner.faults.lock().reorder = p.clamp(0.0, 1.0);
    }

    /// How long a held-back message waits for a later one to overtake it before it is delivered
    /// anyway (default 5 ms).
    pub fn set_reorder_hold(&self, hold: Duration) {
        self.inner.faults.lock().reorder_hold = hold;
    }

    /// Closes every connection from or to node `name`; both ends see `Closed`. New connections
    /// may be made afterwards.
    pub fn disconnect(&self, name: &str) {
        for l in self.inner.live_links() {
            if l.client_name == name || l.server_name == name {
                l.close();
            }
        }
    }

    /// Cuts every node in `a` off from every node in `b` (both ways) until [`Network::heal`].
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        let mut p = self.inner.partitions.lock();
        for x in a {
            for y in b {
                p.insert((x.to_string(), y.to_string()));
                p.insert((y.to_string(), x.to_string()));
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.inner.partitions.lock().clear();
    }

    /// The faults applied so far (the last 65 536), in the order they happened.
    pub fn fault_log(&self) -> Vec<FaultEvent> {
        self.inner.log.lock().iter().copied().collect()
    }
}

/// Splits `@ID/name` into the network and the name; plain names are on the default network.
fn resolve(name: &str) -> Result<(Network, &str), FabricError> {
    let Some(rest) = name.strip_prefix('@') else {
        return Ok((Network::default_network(), name));
    };
    let bad = |reason: &str| FabricError::BadAddress {
        addr: format!("sim://{name}"),
        reason: reason.into(),
    };
    let (id, local) = rest
        .split_once('/')
        .ok_or_else(|| bad("expected sim://@NETWORK/NAME"))?;
    let id: u64 = id.parse().map_err(|_| bad("network id is not a number"))?;
    if local.is_empty() {
        return Err(bad("empty name"));
    }
    if id == 0 {
        return Ok((Network::default_network(), local));
    }
    let inner = REGISTRY.lock().get(&id).and_then(Weak::upgrade);
    let inner = inner.ok_or_else(|| FabricError::Unreachable(format!("sim://{name}: no network {id}")))?;
    Ok((Network { inner }, local))
}

/// Connects to a sim address (`name` or `@ID/name`).
pub fn connect(name: &str, opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    let (net, local) = resolve(name)?;
    net.connect(local, opts)
}

/// Listens on a sim address (`name` or `@ID/name`).
pub fn listen(name: &str, opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    let (net, local) = resolve(name)?;
    net.listen(local, opts)
}

/// A sim listener.
pub struct SimListener {
    net: Network,
    name: String,
    serial: u64,
    rx: Receiver<Arc<Link>>,
    shut: AtomicBool,
}

impl Listener for SimListener {
    fn accept(&self) -> Result<Arc<dyn ServerConn>, FabricError> {
        loop {
            if self.shut.load(Ordering::Acquire) {
                return Err(FabricError::Closed(self.local_addr().to_string()));
            }
            match self.rx.recv() {
                Ok(link) if link.is_closed() => continue,
                Ok(link) => return Ok(Arc::new(SimServerConn { link })),
                Err(_) => return Err(FabricError::Closed(self.local_addr().to_string())),
            }
        }
    }

    fn local_addr(&self) -> Address {
        self.net.address(&self.name)
    }

    fn shutdown(&self) {
        if self.shut.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut listeners = self.net.inner.listeners.lock();
        if listeners.get(&self.name).is_some_and(|e| e.serial == self.serial) {
            // Dropping the sender wakes `accept`.
            listeners.remove(&self.name);
        }
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        self.shutdown();
        // Connections nobody accepted.
        while let Ok(link) = self.rx.try_recv() {
            link.close();
        }
    }
}
