//! A memory-backed device that injects the faults a real disk shows at a power cut.
//!
//! It keeps two images: the volatile one (what reads see: the drive's cache) and the durable one
//! (what survives a power cut). Writes land in the volatile image and are remembered as pending
//! until a flush makes them durable. [`MemDevice::power_cut`] decides, from the seed, the fate of
//! every pending write independently — lost, persisted, or torn (only a prefix of its 512-byte
//! sectors persisted) — which also models reordering, then restarts from the durable image.
//! [`MemDevice::cut_power_after`] makes every device write after the k-th fail, as if the power had
//! gone at that moment; [`MemDevice::inject_error`] fails reads or writes touching chosen blocks.

use super::{BlockDevice, DevError, IoOp, check_ops};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

const SECTOR: usize = 512;
const BLOCK: u32 = 4096;

/// Which I/O an injected error applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Reads touching the block fail.
    Read,
    /// Writes touching the block fail.
    Write,
}

struct MemInner {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    writes: u64,
    flushes: u64,
    cut_after: Option<u64>,
    errors: HashSet<(u64, FaultKind)>,
    rng: u64,
}

impl MemInner {
    fn next_rand(&mut self) -> u64 {
        // splitmix64: deterministic from the seed.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn powered(&self) -> bool {
        self.cut_after.is_none_or(|k| self.writes < k)
    }
}

/// A fault-injecting memory device. Clones share the same device.
#[derive(Clone)]
pub struct MemDevice {
    name: String,
    size: u64,
    inner: Arc<Mutex<MemInner>>,
}

impl std::fmt::Debug for MemDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemDevice")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

fn eio(path: &str, op: &'static str, offset: u64, len: usize, why: &str) -> DevError {
    DevError::Io {
        path: path.to_owned(),
        op,
        offset,
        len,
        source: std::io::Error::other(format!("{why} (EIO)")),
    }
}

impl MemDevice {
    /// A zeroed device of `size` bytes (rounded down to 4 KiB); `seed` drives the fate of pending
    /// writes at a power cut.
    pub fn new(size: u64, seed: u64) -> Self {
        let size = size / u64::from(BLOCK) * u64::from(BLOCK);
        let len = usize::try_from(size).expect("memory device fits in memory");
        Self {
            name: format!("mem:{seed:x}"),
            size,
            inner: Arc::new(Mutex::new(MemInner {
                volatile: vec![0; len],
                durable: vec![0; len],
                pending: Vec::new(),
                writes: 0,
                flushes: 0,
                cut_after: None,
                errors: HashSet::new(),
                rng: seed,
            })),
        }
    }

    /// Device writes so far (each write I/O counts one, whatever its length).
    pub fn writes(&self) -> u64 {
        self.inner.lock().writes
    }

    /// Successful flushes so far.
    pub fn flushes(&self) -> u64 {
        self.inner.lock().flushes
    }

    /// The power goes after the `k`-th device write from now: later writes and flushes fail.
    pub fn cut_power_after(&self, k: u64) {
        let mut g = self.inner.lock();
        g.cut_after = Some(g.writes + k);
    }

    /// True once the power has gone (see [`MemDevice::cut_power_after`]).
    pub fn is_dead(&self) -> bool {
        !self.inner.lock().powered()
    }

    /// Simulates a power cut and restart: each write not yet flushed is lost, persisted, or torn
    /// (a prefix of its sectors persisted); the volatile image becomes the durable one.
    pub fn power_cut(&self) {
        let mut g = self.inner.lock();
        let pending = std::mem::take(&mut g.pending);
        for (offset, data) in pending {
            let r = g.next_rand();
            let sectors = data.len() / SECTOR;
            let keep = match r % 3 {
                0 => 0,
                1 => sectors,
                _ => (g.next_rand() % (sectors as u64 + 1)) as usize,
            };
            let at = offset as usize;
            g.durable[at..at + keep * SECTOR].copy_from_slice(&data[..keep * SECTOR]);
        }
        g.volatile = g.durable.clone();
        g.cut_after = None;
    }

    /// A power cut and restart in which the fate of each write not yet flushed is chosen: those
    /// at a byte offset for which `keep` is true persist whole, the others are lost.
    pub fn power_cut_keeping(&self, keep: impl Fn(u64) -> bool) {
        let mut g = self.inner.lock();
        let pending = std::mem::take(&mut g.pending);
        for (offset, data) in pending {
            if keep(offset) {
                let at = offset as usize;
                g.durable[at..at + data.len()].copy_from_slice(&data);
            }
        }
        g.volatile = g.durable.clone();
        g.cut_after = None;
    }

    /// Makes I/Os of `kind` touching 4 KiB block `block` fail with EIO.
    pub fn inject_error(&self, block: u64, kind: FaultKind) {
        self.inner.lock().errors.insert((block, kind));
    }

    /// Removes every injected error.
    pub fn clear_errors(&self) {
        self.inner.lock().errors.clear();
    }

    /// A copy of the durable image (what a power cut now would leave, minus pending writes).
    pub fn durable_image(&self) -> Vec<u8> {
        self.inner.lock().durable.clone()
    }

    /// Corrupts the byte at `offset` in both images (bit rot), for checksum tests.
    pub fn corrupt_byte(&self, offset: u64) {
        let mut g = self.inner.lock();
        let at = offset as usize;
        g.volatile[at] ^= 0xFF;
        g.durable[at] ^= 0xFF;
    }
}

impl BlockDevice for MemDevice {
    fn path(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        BLOCK
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<(), DevError> {
        check_ops(&self.name, self.size, BLOCK, ops)?;
        let mut g = self.inner.lock();
        let mut first_err = None;
        for op in ops.iter_mut() {
            let (offset, len) = (op.offset(), op.len());
            let first = offset / u64::from(BLOCK);
            let last = (offset + len as u64).div_ceil(u64::from(BLOCK));
            let kind = if matches!(op, IoOp::Read { .. }) {
                FaultKind::Read
            } else {
                FaultKind::Write
            };
            if (first..last).any(|b| g.errors.contains(&(b, kind))) {
                let name = if kind == FaultKind::Read { "read" } else { "write" };
                first_err.get_or_insert(eio(&self.name, name, offset, len, "injected error"));
                continue;
            }
            let at = offset as usize;
            match op {
                IoOp::Read { buf, .. } => buf.copy_from_slice(&g.volatile[at..at + len]),
                IoOp::Write { buf, .. } => {
                    if !g.powered() {
                        first_err.get_or_insert(eio(&self.name, "write", offset, len, "power is off"));
                        continue;
                    }
                    g.writes += 1;
                    g.volatile[at..at + len].copy_from_slice(buf);
                    g.pending.push((offset, buf.to_vec()));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn flush(&self) -> Result<(), DevError> {
        let mut g = self.inner.lock();
        if !g.powered() {
            return Err(eio(&self.name, "flush", 0, 0, "power is off"));
        }
        g.flushes += 1;
        let pending = std::mem::take(&mut g.pending);
        for (offset, data) in pending {
            let at = offset as usize;
            g.durable[at..at + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::AlignedBuf;

    #[test]
    fn unflushed_writes_can_be_lost_or_torn_and_flushed_ones_survive() {
        let dev = MemDevice::new(1 << 20, 7);
        let mut a = AlignedBuf::new(4096);
        a.fill(1);
        dev.write_at(0, &a).unwrap();
        dev.flush().unwrap();
        let mut torn = 0;
        let mut lost = 0;
        let mut whole = 0;
        for i in 0..64u64 {
            let mut b = AlignedBuf::new(4096);
            b.fill(2);
            dev.write_at(4096 * (1 + i), &b).unwrap();
        }
        dev.power_cut();
        let img = dev.durable_image();
        assert!(img[..4096].iter().all(|&x| x == 1), "flushed write must survive");
        for i in 0..64usize {
            let blk = &img[4096 * (1 + i)..4096 * (2 + i)];
            let n = blk.iter().take_while(|&&x| x == 2).count();
            assert!(blk[n..].iter().all(|&x| x == 0) && n % SECTOR == 0);
            match n {
                0 => lost += 1,
                4096 => whole += 1,
                _ => torn += 1,
            }
        }
        assert!(
            lost > 0 && whole > 0 && torn > 0,
            "lost {lost} whole {whole} torn {torn}"
        );
        let mut r = AlignedBuf::new(4096);
        dev.read_at(0, &mut r).unwrap();
        assert_eq!(&r[..], &a[..]);
    }

    #[test]
    fn power_goes_after_k_writes_and_injected_errors_fail() {
        let dev = MemDevice::new(1 << 20, 1);
        let b = AlignedBuf::new(4096);
        dev.cut_power_after(2);
        dev.write_at(0, &b).unwrap();
        dev.write_at(4096, &b).unwrap();
        assert!(dev.is_dead());
        assert!(dev.write_at(8192, &b).is_err());
        assert!(dev.flush().is_err());
        dev.power_cut();
        assert!(!dev.is_dead());
        dev.write_at(8192, &b).unwrap();
        dev.inject_error(3, FaultKind::Read);
        let mut r = AlignedBuf::new(8192);
        assert!(dev.read_at(8192, &mut r).is_err());
        dev.read_at(0, &mut r).unwrap();
        dev.inject_error(0, FaultKind::Write);
        assert!(dev.write_at(0, &b).is_err());
    }
}
