//! The block-device layer: one trait, two drivers.
//!
//! [`UringDevice`] drives a raw block device or a regular file opened with `O_DIRECT` through
//! io_uring, with the buffers of a [`rustre_fabric::BufferPool`] registered as fixed buffers.
//! [`MemDevice`] keeps the device in memory and injects faults (torn writes, unflushed writes lost
//! at a power cut, I/O errors on chosen blocks) for crash tests.
//!
//! Every I/O is at an offset and of a length that are multiples of [`BlockDevice::block_size`],
//! from or into a buffer aligned to it (the `O_DIRECT` rules); the layer checks this and refuses
//! anything else with [`DevError::Unaligned`].

mod mem;
mod uring;

pub use mem::{FaultKind, MemDevice};
pub use rustre_fabric::AlignedBuf;
pub use uring::{IoEngine, UringConfig, UringDevice};

/// One I/O of a batch.
#[derive(Debug)]
pub enum IoOp<'a> {
    /// Read `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Byte offset on the device.
        offset: u64,
        /// Destination.
        buf: &'a mut [u8],
    },
    /// Write `buf` at `offset`.
    Write {
        /// Byte offset on the device.
        offset: u64,
        /// Source.
        buf: &'a [u8],
    },
}

impl IoOp<'_> {
    /// Byte offset of the I/O.
    pub fn offset(&self) -> u64 {
        match self {
            IoOp::Read { offset, .. } | IoOp::Write { offset, .. } => *offset,
        }
    }

    /// Length of the I/O.
    pub fn len(&self) -> usize {
        match self {
            IoOp::Read { buf, .. } => buf.len(),
            IoOp::Write { buf, .. } => buf.len(),
        }
    }

    /// True for a zero-length I/O.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn addr(&self) -> usize {
        match self {
            IoOp::Read { buf, .. } => buf.as_ptr() as usize,
            IoOp::Write { buf, .. } => buf.as_ptr() as usize,
        }
    }
}

/// A block-device failure.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The device could not be opened or used at all.
    #[error("{path}: {reason}")]
    Open {
        /// Device path.
        path: String,
        /// Why.
        reason: String,
    },
    /// An I/O failed.
    #[error("{path}: {op} of {len} bytes at offset {offset} failed: {source}")]
    Io {
        /// Device path.
        path: String,
        /// `read`, `write` or `flush`.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O that breaks the O_DIRECT alignment rules.
    #[error("{path}: unaligned I/O (offset {offset}, length {len}, buffer address {addr:#x}; block size {block})")]
    Unaligned {
        /// Device path.
        path: String,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Buffer address.
        addr: usize,
        /// Required alignment.
        block: u32,
    },
    /// An I/O beyond the end of the device.
    #[error("{path}: I/O at {offset}+{len} beyond the device end {size}")]
    OutOfRange {
        /// Device path.
        path: String,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Device size.
        size: u64,
    },
}

/// A device holding a file system: raw block device, regular file or memory.
pub trait BlockDevice: Send + Sync {
    /// Path or name, for error messages.
    fn path(&self) -> &str;

    /// Usable size in bytes (a multiple of the block size).
    fn size(&self) -> u64;

    /// Alignment of offsets, lengths and buffer addresses.
    fn block_size(&self) -> u32;

    /// Runs a batch of I/Os. Returns once every I/O of the batch has completed; the first failure
    /// is returned (after the others have finished, so no buffer is still in use by the device).
    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<(), DevError>;

    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), DevError>;

    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DevError> {
        self.submit(&mut [IoOp::Read { offset, buf }])
    }

    /// Writes `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DevError> {
        self.submit(&mut [IoOp::Write { offset, buf }])
    }
}

/// Checks alignment and range of every op of a batch.
pub(crate) fn check_ops(path: &str, size: u64, block: u32, ops: &[IoOp<'_>]) -> Result<(), DevError> {
    let b = u64::from(block);
    for op in ops {
        let (offset, len, addr) = (op.offset(), op.len(), op.addr());
        if !offset.is_multiple_of(b) || !(len as u64).is_multiple_of(b) || !(addr as u64).is_multiple_of(b) {
            return Err(DevError::Unaligned {
                path: path.to_owned(),
                offset,
                len,
                addr,
                block,
            });
        }
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(DevError::OutOfRange {
                path: path.to_owned(),
                offset,
                len,
                size,
            });
        }
    }
    Ok(())
}

/// Allocates every block of the regular file `f` without changing its length or contents
/// (fallocate(2) mode 0): writes to it can then not fail for want of room in the file system
/// holding it. (tmpfs reserves the pages but clears them, touching the memory, only at their
/// first write; `ostd mkfs --preallocate` writes a new file there once for that reason.)
pub fn preallocate(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(f.metadata()?.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate(2) on a descriptor `f` owns, alive for the call; mode 0 only allocates.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
