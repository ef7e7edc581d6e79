//! Multi-mount protection: the fence between an active MDS and a standby sharing the MDT.
//!
//! The serving node bumps the MMP sequence every interval. A node that wants to serve reads the
//! block; unless it says "cleanly stopped", it waits two intervals and refuses if the sequence
//! moved. It then writes its own sequence, waits two intervals again, and refuses if another node
//! overwrote it (two nodes starting at once). While serving, every bump first checks that the
//! block still holds our last sequence; if not, another node has taken over and we stop.
//!
//! A standby ([`standby`]) polls the block instead: once it sees a serving node's sequence stand
//! still for two of that node's intervals (and half of ours), it writes its own sequence, waits two
//! intervals and takes the MDT only if its claim is still there. The block is the only fence: a
//! standby never serves because a heartbeat went missing, only because the sequence stopped.

use crate::dev::BlockDevice;
use crate::format::{MMP_SEQ_CLEAN, MdtError, Mmp, read_mmp, write_mmp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Our claim on the MDT.
#[derive(Debug, Clone)]
pub struct MmpClaim {
    /// Node name written into the block.
    pub node: String,
    /// Bump interval.
    pub interval: Duration,
    seq: u64,
}

fn next_seq(seq: u64) -> u64 {
    let n = seq.wrapping_add(1);
    if n == MMP_SEQ_CLEAN || n == 0 { 1 } else { n }
}

/// Claims the MDT for `node`, waiting as described in the module documentation.
pub fn acquire(dev: &mut dyn BlockDevice, node: &str, interval: Duration) -> Result<MmpClaim, MdtError> {
    let before = read_mmp(dev)?;
    if before.seq != MMP_SEQ_CLEAN {
        let wait = Duration::from_millis(u64::from(before.interval_ms)).max(interval) * 2 + interval / 2;
        std::thread::sleep(wait);
        let after = read_mmp(dev)?;
        if after.seq != before.seq {
            return Err(MdtError::InUse {
                device: dev.name(),
                node: after.node,
            });
        }
    }
    claim(dev, node, interval)
}

/// Writes our own sequence, waits two intervals and checks that nobody overwrote it.
fn claim(dev: &mut dyn BlockDevice, node: &str, interval: Duration) -> Result<MmpClaim, MdtError> {
    let mut seed = [0u8; 8];
    rand::fill(&mut seed);
    let seq = next_seq(u64::from_le_bytes(seed) >> 1);
    let mine = Mmp {
        seq,
        node: node.to_string(),
        interval_ms: interval.as_millis().min(u32::MAX as u128) as u32,
    };
    write_mmp(dev, &mine)?;
    std::thread::sleep(interval * 2);
    let check = read_mmp(dev)?;
    if check != mine {
        return Err(MdtError::InUse {
            device: dev.name(),
            node: check.node,
        });
    }
    Ok(MmpClaim {
        node: node.to_string(),
        interval,
        seq,
    })
}

/// How long a sequence must stand still before a standby may claim the device.
fn stall_limit(block_interval_ms: u32, ours: Duration) -> Duration {
    Duration::from_millis(u64::from(block_interval_ms)).max(ours) * 2 + ours / 2
}

/// Runs as the standby of the MDT on `dev`: polls the MMP block every quarter `interval` until the
/// serving node's sequence stands still for two of its intervals, then claims the device as
/// [`acquire`] does. A cleanly stopped MDT (sequence "clean") is not taken over: its pair was
/// stopped on purpose. Returns `Ok(None)` when `stop` is set first.
pub fn standby(
    dev: &mut dyn BlockDevice,
    node: &str,
    interval: Duration,
    stop: &AtomicBool,
) -> Result<Option<MmpClaim>, MdtError> {
    let poll = (interval / 4).max(Duration::from_millis(5));
    let mut seen: Option<(u64, Instant)> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let cur = read_mmp(dev)?;
        if cur.seq == MMP_SEQ_CLEAN {
            seen = None;
        } else {
            match seen {
                Some((seq, since)) if seq == cur.seq => {
                    if since.elapsed() >= stall_limit(cur.interval_ms, interval) {
                        tracing::warn!(
                            "{}: node {:?} stopped updating the MMP block; taking over",
                            dev.name(),
                            cur.node
                        );
                        match claim(dev, node, interval) {
                            Ok(c) => return Ok(Some(c)),
                            Err(MdtError::InUse { node: other, .. }) => {
                                tracing::warn!("{}: takeover lost to node {other:?}; standing by", dev.name());
                                seen = None;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                _ => seen = Some((cur.seq, Instant::now())),
            }
        }
        std::thread::sleep(poll);
    }
}

impl MmpClaim {
    /// Bumps the sequence; fails with `InUse` if another node wrote the block since our last bump.
    pub fn bump(&mut self, dev: &mut dyn BlockDevice) -> Result<(), MdtError> {
        let cur = read_mmp(dev)?;
        if cur.seq != self.seq || cur.node != self.node {
            return Err(MdtError::InUse {
                device: dev.name(),
                node: cur.node,
            });
        }
        self.seq = next_seq(self.seq);
        let ms = self.interval.as_millis().min(u32::MAX as u128) as u32;
        write_mmp(
            dev,
            &Mmp {
                seq: self.seq,
                node: self.node.clone(),
                interval_ms: ms,
            },
        )
    }

    /// Marks the MDT cleanly stopped.
    pub fn release(self, dev: &mut dyn BlockDevice) -> Result<(), MdtError> {
        write_mmp(
            dev,
            &Mmp {
                seq: MMP_SEQ_CLEAN,
                node: self.node,
                interval_ms: 0,
            },
        )
    }
}
