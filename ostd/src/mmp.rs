//! Multi-mount protection: the fence between two servers that can both reach one device.
//!
//! The serving node rewrites the MMP block every interval with its node name, address and a
//! sequence number that changes each time. A node about to serve reads the block; unless the
//! previous server stopped cleanly it waits two intervals (of the longer of both intervals) and
//! refuses to start if the sequence moved meanwhile. It then claims the block with a fresh
//! sequence and checks one interval later that nobody else claimed it at the same moment. While
//! serving, a sequence it did not write means another node has taken over: it stops at once.
//!
//! The updater thread is not the only fence: a server that was paused (SIGSTOP, a hung VM) while
//! its partner took over resumes with requests already queued, and a worker may reach the device
//! before the updater runs again. So the store asks [`MmpLease::check`] before every device write
//! that changes the target; when the block was last seen holding our sequence more than half an
//! interval ago, the check reads it again, and a sequence it did not write fences the store before
//! the write is issued.

use crate::dev::BlockDevice;
use crate::error::StoreError;
use crate::format::{MMP_SEQ_CLEAN, MmpBlock, now_ms, read_mmp, write_mmp};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest accepted interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Who is serving, and how often it proves it.
#[derive(Debug, Clone)]
pub struct MmpConfig {
    /// This node's name (written into the block).
    pub node: String,
    /// This node's service address (written into the block).
    pub address: String,
    /// Update interval.
    pub interval: Duration,
    /// The block as a standby watch ([`standby_wait`]) last saw it, its sequence standing still
    /// long enough to take over: start-up then skips its own watch if the block is unchanged.
    pub watched: Option<MmpBlock>,
}

/// Called once, from the MMP thread, when another node has taken the device over.
pub type FenceCallback = Box<dyn Fn(&str) + Send + 'static>;

/// Our hold on the MMP block, shared by the updater thread and the store's pre-write check.
pub struct MmpLease {
    dev: Arc<dyn BlockDevice>,
    interval: Duration,
    /// The sequence we last wrote; the mutex also serializes the updater's read-then-write
    /// against a check's read, so a check never sees our new sequence before we know it.
    seq: Mutex<u64>,
    /// When the block was last seen holding our sequence (the time before that read).
    verified: Mutex<Instant>,
    fenced: AtomicBool,
    /// Why the lease was lost, set by a check, for the updater thread to act on.
    lost: Mutex<Option<String>>,
    wake: Arc<(Mutex<bool>, Condvar)>,
}

impl std::fmt::Debug for MmpLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmpLease")
            .field("device", &self.dev.path())
            .field("fenced", &self.fenced.load(Ordering::SeqCst))
            .finish()
    }
}

impl MmpLease {
    /// Checks, before a write that changes the target, that this node still holds the device.
    /// Free while the block was seen holding our sequence within the last half interval; after
    /// that (a late updater, or a pause of the whole process) it reads the block. An error means
    /// another node holds the device (or the block cannot be read): nothing may be written, and
    /// the server is told to stop.
    ///
    /// Why half an interval is enough: a partner claims the device only after seeing our sequence
    /// stand still for two and a half intervals, and writes nothing for another interval after
    /// its claim. A write issued within half an interval of a read that found our sequence is
    /// therefore issued at least half an interval before the partner can write. What no software
    /// check can close is a pause between this check and the write's submission.
    pub fn check(&self) -> Result<(), String> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(self.lost_reason());
        }
        if self.verified.lock().elapsed() <= self.interval / 2 {
            return Ok(());
        }
        let seq = self.seq.lock();
        let before = Instant::now();
        let msg = match read_mmp(self.dev.as_ref()) {
            Ok(m) if m.seq == *seq => {
                *self.verified.lock() = before;
                return Ok(());
            }
            Ok(m) => format!(
                "{}: {} has taken this target over (MMP sequence {} instead of {}); refusing the write and stopping service",
                self.dev.path(),
                other(&m),
                m.seq,
                *seq
            ),
            Err(e) => format!(
                "{}: cannot read the MMP block before a write ({e}); stopping service",
                self.dev.path()
            ),
        };
        drop(seq);
        tracing::error!("{msg}");
        self.fenced.store(true, Ordering::SeqCst);
        self.lost.lock().get_or_insert(msg.clone());
        // The updater thread runs the fence callback (stops the listener and connections).
        *self.wake.0.lock() = true;
        self.wake.1.notify_all();
        Err(msg)
    }

    fn lost_reason(&self) -> String {
        self.lost
            .lock()
            .clone()
            .unwrap_or_else(|| format!("{}: another node has taken this target over", self.dev.path()))
    }

    /// True once another node took the device over.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }
}

impl crate::store::WriteGuard for MmpLease {
    fn check(&self) -> Result<(), String> {
        MmpLease::check(self)
    }
}

/// The running MMP updater; stopping it marks the device cleanly released.
pub struct MmpGuard {
    dev: Arc<dyn BlockDevice>,
    cfg: MmpConfig,
    /// `.0`: true when the updater must act now (stop, or a check lost the lease).
    stop: Arc<(Mutex<bool>, Condvar)>,
    halting: Arc<AtomicBool>,
    lease: Arc<MmpLease>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MmpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmpGuard")
            .field("node", &self.cfg.node)
            .field("fenced", &self.is_fenced())
            .finish()
    }
}

fn other(m: &MmpBlock) -> String {
    let node = if m.node.is_empty() {
        "an unnamed node".to_owned()
    } else {
        format!("node {:?}", m.node)
    };
    if m.address.is_empty() {
        node
    } else {
        format!("{node} (address {})", m.address)
    }
}

fn random_seq(avoid: u64) -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the live local array.
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let mut s = (u64::from_le_bytes(b) ^ now_ms()) % (MMP_SEQ_CLEAN - 2) + 1;
    if s == avoid {
        s = s % (MMP_SEQ_CLEAN - 2) + 1;
    }
    s
}

fn next_seq(s: u64) -> u64 {
    if s + 1 >= MMP_SEQ_CLEAN { 1 } else { s + 1 }
}

impl MmpGuard {
    /// Checks that no other node serves the device, claims it and starts the updater thread.
    pub fn start(dev: Arc<dyn BlockDevice>, cfg: MmpConfig, on_fence: FenceCallback) -> Result<Self, StoreError> {
        if cfg.interval.is_zero() || cfg.interval > MAX_INTERVAL {
            return Err(StoreError::Invalid {
                field: "mmp interval",
                reason: format!("must be in (0, {MAX_INTERVAL:?}]"),
            });
        }
        let path = dev.path().to_owned();
        let first = read_mmp(dev.as_ref())?;
        // A standby watch just saw this very block stand still for two and a half intervals (the
        // longer of both): the wait below would only repeat that observation. Skipping it is safe
        // because the block is unchanged since the watch ended (same sequence, same node), so the
        // previous server wrote nothing in between; and the claim below still writes our own
        // sequence and checks one interval later that nobody (the previous server resumed, or a
        // second standby) overwrote it before we touch anything else.
        let watched = cfg
            .watched
            .as_ref()
            .is_some_and(|w| w.seq == first.seq && w.node == first.node && first.seq != MMP_SEQ_CLEAN);
        if watched {
            tracing::info!(device = %path, previous = %other(&first), "MMP sequence watched standing still; claiming");
        } else if first.seq != MMP_SEQ_CLEAN {
            let theirs = Duration::from_millis(u64::from(first.interval_ms)).min(MAX_INTERVAL);
            // Two intervals, plus half of one for an updater delayed by load.
            let longest = cfg.interval.max(theirs);
            std::thread::sleep(2 * longest + longest / 2);
            let again = read_mmp(dev.as_ref())?;
            if again.seq != first.seq || again.node != first.node {
                return Err(StoreError::Mmp(format!(
                    "{path}: in use by {}: its MMP sequence moved from {} to {}; refusing to start",
                    other(&again),
                    first.seq,
                    again.seq
                )));
            }
            tracing::warn!(device = %path, previous = %other(&first), "MMP block was not released cleanly; the previous server is silent, taking over");
        }
        let seq = random_seq(first.seq);
        let mine = |seq| MmpBlock {
            seq,
            interval_ms: cfg.interval.as_millis() as u32,
            time_ms: now_ms(),
            node: cfg.node.clone(),
            address: cfg.address.clone(),
        };
        write_mmp(dev.as_ref(), &mine(seq))?;
        std::thread::sleep(cfg.interval);
        let check_time = Instant::now();
        let check = read_mmp(dev.as_ref())?;
        if check.seq != seq {
            return Err(StoreError::Mmp(format!(
                "{path}: {} claimed it at the same time; refusing to start",
                other(&check)
            )));
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let halting = Arc::new(AtomicBool::new(false));
        let lease = Arc::new(MmpLease {
            dev: Arc::clone(&dev),
            interval: cfg.interval,
            seq: Mutex::new(seq),
            verified: Mutex::new(check_time),
            fenced: AtomicBool::new(false),
            lost: Mutex::new(None),
            wake: Arc::clone(&stop),
        });
        let thread = {
            let (cfg, stop, halting, lease) =
                (cfg.clone(), Arc::clone(&stop), Arc::clone(&halting), Arc::clone(&lease));
            std::thread::Builder::new()
                .name("ostd-mmp".into())
                .spawn(move || Self::run(cfg, stop, halting, lease, on_fence))
                .map_err(|e| StoreError::Mmp(format!("cannot start the MMP thread: {e}")))?
        };
        Ok(Self {
            dev,
            cfg,
            stop,
            halting,
            lease,
            thread: Some(thread),
        })
    }

    /// The lease the store checks before its writes ([`crate::store::ObjectStore::set_write_guard`]).
    pub fn lease(&self) -> Arc<MmpLease> {
        Arc::clone(&self.lease)
    }

    fn run(
        cfg: MmpConfig,
        stop: Arc<(Mutex<bool>, Condvar)>,
        halting: Arc<AtomicBool>,
        lease: Arc<MmpLease>,
        on_fence: FenceCallback,
    ) {
        let dev = Arc::clone(&lease.dev);
        let fenced = &lease.fenced;
        let mut next = std::time::Instant::now() + cfg.interval;
        loop {
            {
                let mut woken = stop.0.lock();
                if !*woken {
                    stop.1.wait_until(&mut woken, next);
                }
                *woken = false;
            }
            if halting.load(Ordering::SeqCst) {
                return;
            }
            if lease.fenced.load(Ordering::SeqCst) {
                // A pre-write check found the block taken.
                on_fence(&lease.lost_reason());
                return;
            }
            if std::time::Instant::now() < next {
                continue;
            }
            // Keep the cadence of one update per interval whatever each update costs.
            next = (next + cfg.interval).max(std::time::Instant::now());
            let mut last_seq = lease.seq.lock();
            let mine = *last_seq;
            let before = Instant::now();
            let msg = match read_mmp(dev.as_ref()) {
                Ok(m) if m.seq == mine => None,
                Ok(m) => Some(format!(
                    "{}: {} has taken this target over (MMP sequence {} instead of {mine}); stopping service",
                    dev.path(),
                    other(&m),
                    m.seq
                )),
                Err(e) => Some(format!(
                    "{}: cannot read the MMP block ({e}); stopping service",
                    dev.path()
                )),
            };
            if let Some(msg) = msg {
                drop(last_seq);
                tracing::error!("{msg}");
                fenced.store(true, Ordering::SeqCst);
                lease.lost.lock().get_or_insert(msg.clone());
                on_fence(&msg);
                return;
            }
            let seq = next_seq(mine);
            let block = MmpBlock {
                seq,
                interval_ms: cfg.interval.as_millis() as u32,
                time_ms: now_ms(),
                node: cfg.node.clone(),
                address: cfg.address.clone(),
            };
            if let Err(e) = write_mmp(dev.as_ref(), &block) {
                drop(last_seq);
                let msg = format!("{}: cannot write the MMP block ({e}); stopping service", dev.path());
                tracing::error!("{msg}");
                fenced.store(true, Ordering::SeqCst);
                lease.lost.lock().get_or_insert(msg.clone());
                on_fence(&msg);
                return;
            }
            *last_seq = seq;
            *lease.verified.lock() = before;
        }
    }

    /// True once another node took the device over.
    pub fn is_fenced(&self) -> bool {
        self.lease.is_fenced()
    }

    /// Stops the updater and, unless fenced, marks the device cleanly released.
    pub fn stop(mut self) -> Result<(), StoreError> {
        self.halt();
        if self.is_fenced() {
            return Ok(());
        }
        let mine = *self.lease.seq.lock();
        let current = read_mmp(self.dev.as_ref())?;
        if current.seq != mine {
            return Ok(());
        }
        write_mmp(
            self.dev.as_ref(),
            &MmpBlock {
                seq: MMP_SEQ_CLEAN,
                interval_ms: self.cfg.interval.as_millis() as u32,
                time_ms: now_ms(),
                node: self.cfg.node.clone(),
                address: self.cfg.address.clone(),
            },
        )
    }

    /// Stops the updater thread without releasing the device (as a crashed server would leave it).
    pub fn abandon(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.halting.store(true, Ordering::SeqCst);
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MmpGuard {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Stands by for the OST on `dev` (the failover partner of its server): polls the MMP block every
/// quarter `interval` and returns `Ok(true)` once a serving node's sequence has stood still for
/// two of its intervals plus half of ours (it died or hangs), after which [`MmpGuard::start`]
/// claims the device (pass the returned block as [`MmpConfig::watched`] so that it does not watch
/// the same silence again). A cleanly released block is not taken over (its server was stopped on
/// purpose). `Ok(None)` when `stop` is set first.
pub fn standby_wait(
    dev: &dyn BlockDevice,
    interval: Duration,
    stop: &AtomicBool,
) -> Result<Option<MmpBlock>, StoreError> {
    let poll = (interval / 4).max(Duration::from_millis(5));
    let mut seen: Option<(u64, std::time::Instant)> = None;
    while !stop.load(Ordering::SeqCst) {
        let cur = read_mmp(dev)?;
        if cur.seq == MMP_SEQ_CLEAN {
            seen = None;
        } else {
            match seen {
                Some((seq, since)) if seq == cur.seq => {
                    let theirs = Duration::from_millis(u64::from(cur.interval_ms)).min(MAX_INTERVAL);
                    if since.elapsed() >= 2 * theirs.max(interval) + interval / 2 {
                        tracing::warn!(device = %dev.path(), previous = %other(&cur), "MMP sequence stopped; taking over");
                        return Ok(Some(cur));
                    }
                }
                _ => seen = Some((cur.seq, std::time::Instant::now())),
            }
        }
        std::thread::sleep(poll);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::{UringConfig, UringDevice};
    use crate::format::{MkfsOptions, mkfs};
    use std::sync::mpsc;
    use std::time::Instant;

    fn cfg(node: &str) -> MmpConfig {
        MmpConfig {
            node: node.into(),
            address: format!("tcp://{node}:7000"),
            interval: Duration::from_millis(100),
            watched: None,
        }
    }

    fn open(path: &str) -> Arc<dyn BlockDevice> {
        Arc::new(
            UringDevice::open(
                path,
                &UringConfig {
                    rings: 1,
                    ..UringConfig::default()
                },
            )
            .unwrap(),
        )
    }

    #[test]
    fn second_node_is_refused_while_the_first_serves_and_fenced_when_taken_over() {
        let f = tempfile::Builder::new()
            .prefix("rustre-mmp-")
            .tempfile_in("/dev/shm")
            .unwrap();
        f.as_file().set_len(8 << 20).unwrap();
        let path = f.path().to_str().unwrap();
        mkfs(open(path).as_ref(), &MkfsOptions::new("fs", 0)).unwrap();

        // A clean device is claimed after one interval.
        let (tx, rx) = mpsc::channel();
        let a = MmpGuard::start(
            open(path),
            cfg("alpha"),
            Box::new(move |m| tx.send(m.to_owned()).unwrap()),
        )
        .unwrap();
        // B sees the sequence move and names A.
        let t0 = Instant::now();
        let err = MmpGuard::start(open(path), cfg("beta"), Box::new(|_| {}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alpha") && err.contains("tcp://alpha:7000") && err.contains("refusing"),
            "{err}"
        );
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert!(!a.is_fenced());

        // A third party takes the block over and keeps it (it may race with one of A's updates,
        // so it writes until A notices): A stops at once.
        let dev = open(path);
        let gamma = MmpBlock {
            seq: 7,
            interval_ms: 100,
            node: "gamma".into(),
            ..MmpBlock::default()
        };
        let mut msg = None;
        for _ in 0..100 {
            write_mmp(dev.as_ref(), &gamma).unwrap();
            if let Ok(m) = rx.recv_timeout(Duration::from_millis(50)) {
                msg = Some(m);
                break;
            }
        }
        let msg = msg.expect("A must notice the takeover");
        assert!(msg.contains("gamma") && msg.contains("taken"), "{msg}");
        assert!(a.is_fenced());
        a.stop().unwrap();
        // A fenced server does not mark the device clean.
        assert_eq!(read_mmp(dev.as_ref()).unwrap().seq, 7);
    }

    fn mem_target() -> (crate::dev::MemDevice, Arc<dyn BlockDevice>) {
        let dev = crate::dev::MemDevice::new(16 << 20, 3);
        mkfs(&dev, &MkfsOptions::new("fs", 0)).unwrap();
        let d: Arc<dyn BlockDevice> = Arc::new(dev.clone());
        (dev, d)
    }

    #[test]
    fn a_resumed_server_writes_nothing_once_its_device_was_taken_over() {
        let (dev, d) = mem_target();
        let a = MmpGuard::start(Arc::clone(&d), cfg("alpha"), Box::new(|_| {})).unwrap();
        let store = crate::store::ObjectStore::open(Arc::clone(&d)).unwrap();
        store.set_write_guard(a.lease());
        let id = store.precreate(1).unwrap();
        store.write(id, 0, b"before").unwrap();
        // The process is paused: its updater stops without releasing the block (as the updater of
        // a stopped process does) while a partner claims the device...
        let lease = a.lease();
        a.abandon();
        let beta = MmpBlock {
            seq: 7,
            interval_ms: 100,
            node: "beta".into(),
            ..MmpBlock::default()
        };
        write_mmp(d.as_ref(), &beta).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        // ...then resumes with requests queued: none of them reaches the device.
        let writes = dev.writes();
        let e = store.write(id, 0, b"after").unwrap_err();
        assert!(matches!(e, StoreError::Mmp(_)) && e.to_string().contains("beta"), "{e}");
        assert!(store.is_fenced() && lease.is_fenced());
        assert!(store.precreate(1).is_err());
        assert!(store.punch(id, 0, 3).is_err());
        assert!(store.destroy(id).is_err());
        assert_eq!(dev.writes(), writes, "a device write after the takeover");
        assert_eq!(read_mmp(d.as_ref()).unwrap(), beta);
    }

    #[test]
    fn a_standby_that_watched_the_silence_claims_without_watching_again() {
        let (_dev, d) = mem_target();
        let dead = MmpBlock {
            seq: 9,
            interval_ms: 100,
            node: "dead".into(),
            ..MmpBlock::default()
        };
        write_mmp(d.as_ref(), &dead).unwrap();
        // The watch saw this block: claim (one interval), no second watch (two and a half).
        let mut c = cfg("beta");
        c.watched = Some(dead.clone());
        let t0 = Instant::now();
        let b = MmpGuard::start(Arc::clone(&d), c, Box::new(|_| {})).unwrap();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(250),
            "{took:?}"
        );
        b.abandon();
        // A block that changed since the watch is watched again in full.
        let mut c = cfg("gamma");
        c.watched = Some(dead);
        let t0 = Instant::now();
        let g = MmpGuard::start(Arc::clone(&d), c, Box::new(|_| {})).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(350), "{:?}", t0.elapsed());
        g.stop().unwrap();
    }

    #[test]
    fn clean_stop_and_silent_crash_both_let_the_next_node_in() {
        let f = tempfile::Builder::new()
            .prefix("rustre-mmp-")
            .tempfile_in("/dev/shm")
            .unwrap();
        f.as_file().set_len(8 << 20).unwrap();
        let path = f.path().to_str().unwrap();
        mkfs(open(path).as_ref(), &MkfsOptions::new("fs", 0)).unwrap();
        let a = MmpGuard::start(open(path), cfg("alpha"), Box::new(|_| {})).unwrap();
        a.stop().unwrap();
        assert_eq!(read_mmp(open(path).as_ref()).unwrap().seq, MMP_SEQ_CLEAN);
        let b = MmpGuard::start(open(path), cfg("beta"), Box::new(|_| {})).unwrap();
        // B dies without releasing: C waits two intervals, sees no movement, takes over.
        b.abandon();
        let t0 = Instant::now();
        let c = MmpGuard::start(open(path), cfg("gamma"), Box::new(|_| {})).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert_eq!(read_mmp(open(path).as_ref()).unwrap().node, "gamma");
        c.stop().unwrap();
    }
}
