//! Multi-mount protection: the fence between two servers that can both reach one device.
//!
//! The serving node rewrites the MMP block every interval with its node name, address and a
//! sequence number that changes each time. A node about to serve reads the block; unless the
//! previous server stopped cleanly it waits two intervals (of the longer of both intervals) and
//! refuses to start if the sequence moved meanwhile. It then claims the block with a fresh
//! sequence and checks one interval later that nobody else claimed it at the same moment. While
//! serving, a sequence it did not write means another node has taken over: it stops at once.

use crate::dev::BlockDevice;
use crate::error::StoreError;
use crate::format::{MMP_SEQ_CLEAN, MmpBlock, now_ms, read_mmp, write_mmp};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
}

/// Called once, from the MMP thread, when another node has taken the device over.
pub type FenceCallback = Box<dyn Fn(&str) + Send + 'static>;

/// The running MMP updater; stopping it marks the device cleanly released.
pub struct MmpGuard {
    dev: Arc<dyn BlockDevice>,
    cfg: MmpConfig,
    stop: Arc<(Mutex<bool>, Condvar)>,
    fenced: Arc<AtomicBool>,
    last_seq: Arc<Mutex<u64>>,
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
        if first.seq != MMP_SEQ_CLEAN {
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
        let check = read_mmp(dev.as_ref())?;
        if check.seq != seq {
            return Err(StoreError::Mmp(format!(
                "{path}: {} claimed it at the same time; refusing to start",
                other(&check)
            )));
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let fenced = Arc::new(AtomicBool::new(false));
        let last_seq = Arc::new(Mutex::new(seq));
        let thread = {
            let (dev, cfg, stop, fenced, last_seq) = (
                Arc::clone(&dev),
                cfg.clone(),
                Arc::clone(&stop),
                Arc::clone(&fenced),
                Arc::clone(&last_seq),
            );
            std::thread::Builder::new()
                .name("ostd-mmp".into())
                .spawn(move || Self::run(dev, cfg, stop, fenced, last_seq, on_fence))
                .map_err(|e| StoreError::Mmp(format!("cannot start the MMP thread: {e}")))?
        };
        Ok(Self {
            dev,
            cfg,
            stop,
            fenced,
            last_seq,
            thread: Some(thread),
        })
    }

    fn run(
        dev: Arc<dyn BlockDevice>,
        cfg: MmpConfig,
        stop: Arc<(Mutex<bool>, Condvar)>,
        fenced: Arc<AtomicBool>,
        last_seq: Arc<Mutex<u64>>,
        on_fence: FenceCallback,
    ) {
        let mut next = std::time::Instant::now() + cfg.interval;
        loop {
            {
                let mut stopped = stop.0.lock();
                if !*stopped {
                    stop.1.wait_until(&mut stopped, next);
                }
                if *stopped {
                    return;
                }
            }
            // Keep the cadence of one update per interval whatever each update costs.
            next = (next + cfg.interval).max(std::time::Instant::now());
            let mine = *last_seq.lock();
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
                tracing::error!("{msg}");
                fenced.store(true, Ordering::SeqCst);
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
                let msg = format!("{}: cannot write the MMP block ({e}); stopping service", dev.path());
                tracing::error!("{msg}");
                fenced.store(true, Ordering::SeqCst);
                on_fence(&msg);
                return;
            }
            *last_seq.lock() = seq;
        }
    }

    /// True once another node took the device over.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Stops the updater and, unless fenced, marks the device cleanly released.
    pub fn stop(mut self) -> Result<(), StoreError> {
        self.halt();
        if self.is_fenced() {
            return Ok(());
        }
        let mine = *self.last_seq.lock();
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
/// claims the device with the usual waits. A cleanly released block is not taken over (its
/// server was stopped on purpose). `Ok(false)` when `stop` is set first.
pub fn standby_wait(dev: &dyn BlockDevice, interval: Duration, stop: &AtomicBool) -> Result<bool, StoreError> {
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
                        return Ok(true);
                    }
                }
                _ => seen = Some((cur.seq, std::time::Instant::now())),
            }
        }
        std::thread::sleep(poll);
    }
    Ok(false)
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
