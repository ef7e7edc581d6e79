//! A memory device that injects faults, for crash tests.
//!
//! Writes land in a volatile cache until a flush makes them durable, as on a disk with a write
//! cache. A power cut (armed to hit at the k-th write) tears that write (a random subset of its
//! 512-byte sectors reaches the medium), makes the device fail every later I/O, and
//! [`FaultControl::power_cycle`] then returns the medium as it would be found at the next boot:
//! the durable image plus a random subset of the unflushed writes.

use super::{BlockDevice, DevError, check_range};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::{Arc, Mutex, MutexGuard};

const SECTOR: usize = 512;

struct State {
    durable: Vec<u8>,
    unflushed: Vec<(u64, Vec<u8>)>,
    writes: u64,
    cut_at: Option<u64>,
    dead: bool,
    fail_io: bool,
    rng: StdRng,
}

/// The test's handle on a [`FaultDevice`]: arm power cuts, inject errors, take the medium.
#[derive(Clone)]
pub struct FaultControl(Arc<Mutex<State>>);

/// The device side, handed to the code under test.
pub struct FaultDevice {
    state: Arc<Mutex<State>>,
    size: u64,
}

fn lock(s: &Arc<Mutex<State>>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultDevice {
    /// A zeroed device of `size` bytes; `seed` drives every random choice.
    pub fn new(size: u64, seed: u64) -> (FaultDevice, FaultControl) {
        Self::from_image(vec![0; size as usize], seed)
    }

    /// A device whose medium holds `image`.
    pub fn from_image(image: Vec<u8>, seed: u64) -> (FaultDevice, FaultControl) {
        let size = image.len() as u64;
        let state = Arc::new(Mutex::new(State {
            durable: image,
            unflushed: Vec::new(),
            writes: 0,
            cut_at: None,
            dead: false,
            fail_io: false,
            rng: StdRng::seed_from_u64(seed),
        }));
        (
            FaultDevice {
                state: state.clone(),
                size,
            },
            FaultControl(state),
        )
    }

    fn dead_error(&self, what: &'static str) -> DevError {
        DevError::Io {
            what,
            device: self.name(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        }
    }
}

impl FaultControl {
    /// Cuts power during the `k`-th write from now (1 = the next write).
    pub fn cut_power_at_write(&self, k: u64) {
        let mut s = lock(&self.0);
        s.cut_at = Some(s.writes + k);
    }
    /// Makes every I/O fail with EIO (without a power cut) while `on`.
    pub fn fail_io(&self, on: bool) {
        lock(&self.0).fail_io = on;
    }
    /// Another device handle on the same medium (a second server attached to a shared disk).
    pub fn shared_device(&self) -> FaultDevice {
        let size = lock(&self.0).durable.len() as u64;
        FaultDevice {
            state: self.0.clone(),
            size,
        }
    }
    /// Writes issued so far.
    pub fn writes(&self) -> u64 {
        lock(&self.0).writes
    }
    /// True once the power is cut.
    pub fn is_dead(&self) -> bool {
        lock(&self.0).dead
    }
    /// The medium after a power cut and reboot: durable bytes plus a random subset of the
    /// unflushed writes (each possibly torn). Cuts the power if it was still on.
    pub fn power_cycle(&self) -> Vec<u8> {
        let mut s = lock(&self.0);
        s.dead = true;
        let unflushed = std::mem::take(&mut s.unflushed);
        let mut img = s.durable.clone();
        for (off, data) in unflushed {
            match s.rng.random_range(0..3) {
                0 => {}
                1 => img[off as usize..off as usize + data.len()].copy_from_slice(&data),
                _ => tear(&mut s.rng, &mut img, off, &data),
            }
        }
        img
    }
    /// The medium as if every write were durable (a clean shutdown).
    pub fn image(&self) -> Vec<u8> {
        let s = lock(&self.0);
        let mut img = s.durable.clone();
        for (off, data) in &s.unflushed {
            img[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        img
    }
}

fn tear(rng: &mut StdRng, img: &mut [u8], off: u64, data: &[u8]) {
    for (i, sector) in data.chunks(SECTOR).enumerate() {
        if rng.random_bool(0.5) {
            let at = off as usize + i * SECTOR;
            img[at..at + sector.len()].copy_from_slice(sector);
        }
    }
}

impl BlockDevice for FaultDevice {
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> String {
        "fault-device".into()
    }
    fn read(&mut self, off: u64, buf: &mut [u8]) -> Result<(), DevError> {
        check_range("read", self, off, buf.len())?;
        let s = lock(&self.state);
        if s.dead || s.fail_io {
            return Err(self.dead_error("read"));
        }
        let (a, b) = (off as usize, off as usize + buf.len());
        buf.copy_from_slice(&s.durable[a..b]);
        for (woff, data) in &s.unflushed {
            let (wa, wb) = (*woff as usize, *woff as usize + data.len());
            let (lo, hi) = (a.max(wa), b.min(wb));
            if lo < hi {
                buf[lo - a..hi - a].copy_from_slice(&data[lo - wa..hi - wa]);
            }
        }
        Ok(())
    }
    fn write(&mut self, off: u64, buf: &[u8]) -> Result<(), DevError> {
        check_range("write", self, off, buf.len())?;
        let mut s = lock(&self.state);
        if s.dead || s.fail_io {
            return Err(self.dead_error("write"));
        }
        s.writes += 1;
        if s.cut_at == Some(s.writes) {
            // The write in flight when the power goes: torn on the medium, never acknowledged.
            s.dead = true;
            let mut img = std::mem::take(&mut s.durable);
            tear(&mut s.rng, &mut img, off, buf);
            s.durable = img;
            return Err(self.dead_error("write"));
        }
        s.unflushed.push((off, buf.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DevError> {
        let mut s = lock(&self.state);
        if s.dead || s.fail_io {
            return Err(self.dead_error("flush"));
        }
        let unflushed = std::mem::take(&mut s.unflushed);
        for (off, data) in unflushed {
            s.durable[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }
}
