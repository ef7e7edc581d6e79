//! The MDT device layer: a small block-device trait with an io_uring + O_DIRECT driver and a
//! memory driver that injects faults (torn writes, lost unflushed writes, I/O errors).

pub mod fault;
pub mod uring;

pub use fault::{FaultControl, FaultDevice};
pub use rustre_fabric::AlignedBuf;
pub use uring::UringDevice;

use thiserror::Error;

/// Device block size: every offset and length is a multiple of it (O_DIRECT).
pub const BLOCK: usize = 4096;

/// A device I/O failure.
#[derive(Debug, Error)]
pub enum DevError {
    /// The operating system reported an error.
    #[error("{what} on {device}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The device path.
        device: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An offset or length is not block aligned or is out of the device.
    #[error("{what} on {device}: offset {off} length {len} is unaligned or beyond the device ({size} bytes)")]
    Range {
        /// The operation.
        what: &'static str,
        /// The device path.
        device: String,
        /// Offset.
        off: u64,
        /// Length.
        len: usize,
        /// Device size.
        size: u64,
    },
}

/// A block device holding an MDT. Used from one thread (the event loop).
pub trait BlockDevice: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// A name for messages (the path).
    fn name(&self) -> String;
    /// Reads `buf.len()` bytes at `off` (both block aligned).
    fn read(&mut self, off: u64, buf: &mut [u8]) -> Result<(), DevError>;
    /// Writes `buf` at `off` (both block aligned). Not durable until [`BlockDevice::flush`].
    fn write(&mut self, off: u64, buf: &[u8]) -> Result<(), DevError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), DevError>;
    /// Writes then flushes; drivers submit both at once where they can (a linked io_uring pair).
    fn write_durable(&mut self, off: u64, buf: &[u8]) -> Result<(), DevError> {
        self.write(off, buf)?;
        self.flush()
    }
}

pub(crate) fn check_range(what: &'static str, dev: &dyn BlockDevice, off: u64, len: usize) -> Result<(), DevError> {
    let ok = off.is_multiple_of(BLOCK as u64)
        && len.is_multiple_of(BLOCK)
        && off.checked_add(len as u64).is_some_and(|end| end <= dev.size());
    if ok {
        Ok(())
    } else {
        Err(DevError::Range {
            what,
            device: dev.name(),
            off,
            len,
            size: dev.size(),
        })
    }
}
