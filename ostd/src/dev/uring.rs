//! The io_uring driver over a raw block device or a regular file opened with `O_DIRECT`.
//!
//! A device owns a fixed set of rings (one per I/O thread, taken from a bounded channel for the
//! duration of a batch), each created with the configured queue depth and with the buffers of the
//! server's [`BufferPool`] registered as fixed buffers. A batch is pushed into the submission queue
//! up to the queue depth, submitted with one `io_uring_enter` that also waits for the first
//! completion, and every completion already posted is reaped from the shared completion queue
//! without further system calls.
//!
//! One exception, chosen at open ([`IoEngine::Auto`]): a regular file on tmpfs. tmpfs cannot do
//! I/O without blocking (no `FMODE_NOWAIT`), so io_uring hands every request on it to a kernel
//! worker thread and completes it from there: measured on this kind of machine, a 4 KiB read costs
//! ~35 µs through io_uring against ~0.8 µs as a plain `pread` (fio, qd 1, O_DIRECT), and a commit of
//! a few small I/Os pays that several times over. There the device issues positional
//! `pread`/`pwrite`/`fdatasync` from the calling thread ([`IoEngine::Sync`]), on the same buffers.
//! Block devices (a loop device included: 22 µs through io_uring, 26 µs with `pread`) and files on
//! other file systems use io_uring.

use super::{AlignedBuf, BlockDevice, DevError, IoOp, check_ops};
use crossbeam::channel::{Receiver, Sender, bounded};
use io_uring::{IoUring, opcode, types};
use rustre_fabric::BufferPool;
use rustre_fabric::aligned::on_tmpfs;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// `BLKGETSIZE64`: `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `BLKSSZGET`: `_IO(0x12, 104)`.
const BLKSSZGET: libc::c_ulong = 0x1268;
/// Alignment the driver asks of every I/O; covers 512-byte and 4 KiB logical sectors.
const DEVICE_ALIGN: u32 = 4096;
/// Largest single I/O (the kernel takes a u32 length; we stay far below).
const MAX_IO: usize = 1 << 30;

/// How a [`UringDevice`] issues its I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring, except for a regular file on tmpfs (see the module documentation).
    #[default]
    Auto,
    /// io_uring rings with fixed buffers.
    Uring,
    /// Positional system calls from the calling thread.
    Sync,
}

impl std::str::FromStr for IoEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" => Ok(Self::Uring),
            "sync" => Ok(Self::Sync),
            _ => Err(format!("I/O engine {s:?}: use auto, uring or sync")),
        }
    }
}

impl std::fmt::Display for IoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Uring => "uring",
            Self::Sync => "sync",
        })
    }
}

/// Configuration of a [`UringDevice`].
#[derive(Clone, Debug)]
pub struct UringConfig {
    /// Submission queue entries per ring (I/Os in flight per ring).
    pub queue_depth: u32,
    /// Rings (one per I/O thread). A batch waits for a free ring when all are in use.
    pub rings: usize,
    /// Buffers to register as io_uring fixed buffers; I/Os from or into them use
    /// `READ_FIXED`/`WRITE_FIXED`.
    pub pool: Option<Arc<BufferPool>>,
    /// Smallest acceptable device size in bytes.
    pub min_size: u64,
    /// io_uring or system calls.
    pub engine: IoEngine,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self {
            queue_depth: 64,
            rings: 4,
            pool: None,
            min_size: 1 << 20,
            engine: IoEngine::Auto,
        }
    }
}

/// A block device (or regular file) driven through io_uring with `O_DIRECT`.
pub struct UringDevice {
    path: String,
    file: File,
    size: u64,
    queue_depth: u32,
    rings_tx: Sender<IoUring>,
    rings_rx: Receiver<IoUring>,
    pool: Option<Arc<BufferPool>>,
    fixed: bool,
    engine: IoEngine,
    flushes: AtomicU64,
    /// [`IoEngine::Sync`]: writers take turns here. tmpfs serialises writes to one file on the
    /// inode lock anyway, and its waiters spin on the lock's owner: with every worker writing to
    /// the one device file, they burned the CPU the owner and the network needed (28 % of all
    /// CPU in a profile of IOR-hard writes). Waiting here sleeps instead. Reads go in parallel.
    write_turn: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("queue_depth", &self.queue_depth)
            .field("fixed", &self.fixed)
            .field("engine", &self.engine)
            .finish()
    }
}

fn open_err(path: &str, reason: impl Into<String>) -> DevError {
    DevError::Open {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl UringDevice {
    /// Opens `path` read-write with `O_DIRECT`, sizes it, probes that direct I/O works and sets up
    /// the rings.
    pub fn open(path: &str, cfg: &UringConfig) -> Result<Self, DevError> {
        if cfg.queue_depth == 0 || cfg.queue_depth > 4096 || cfg.rings == 0 || cfg.rings > 1024 {
            return Err(open_err(path, "queue depth must be 1..=4096 and rings 1..=1024"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => open_err(path, "the file system does not support O_DIRECT"),
                _ => open_err(path, format!("cannot open: {e}")),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| open_err(path, format!("cannot stat: {e}")))?;
        let (size, sector) = if meta.file_type().is_block_device() {
            let mut bytes: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live local.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut bytes as *mut u64) };
            if rc != 0 {
                return Err(open_err(
                    path,
                    format!("BLKGETSIZE64: {}", std::io::Error::last_os_error()),
                ));
            }
            let mut ssz: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the pointer, which points to a live local.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut ssz as *mut libc::c_int) };
            if rc != 0 {
                return Err(open_err(
                    path,
                    format!("BLKSSZGET: {}", std::io::Error::last_os_error()),
                ));
            }
            (bytes, u32::try_from(ssz).unwrap_or(0))
        } else if meta.file_type().is_file() {
            (meta.len(), 512)
        } else {
            return Err(open_err(path, "neither a block device nor a regular file"));
        };
        if sector == 0 || !DEVICE_ALIGN.is_multiple_of(sector) {
            return Err(open_err(
                path,
                format!("logical sector size {sector} is not a divisor of {DEVICE_ALIGN}"),
            ));
        }
        let size = size / u64::from(DEVICE_ALIGN) * u64::from(DEVICE_ALIGN);
        if size < cfg.min_size {
            return Err(open_err(
                path,
                format!("too small: {size} bytes, at least {} needed", cfg.min_size),
            ));
        }
        // Some file systems accept O_DIRECT at open and refuse it at the first I/O: probe.
        let mut probe = AlignedBuf::new(DEVICE_ALIGN as usize);
        // SAFETY: `probe` is a live, writable, aligned buffer of `probe.len()` bytes.
        let n = unsafe { libc::pread(file.as_raw_fd(), probe.as_mut_ptr().cast(), probe.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => open_err(path, "direct I/O (O_DIRECT) is refused by this device"),
                _ => open_err(path, format!("probe read failed: {e}")),
            });
        }

        let engine = match cfg.engine {
            IoEngine::Auto if meta.file_type().is_file() && on_tmpfs(&file) => IoEngine::Sync,
            IoEngine::Auto => IoEngine::Uring,
            e => e,
        };
        let (rings_tx, rings_rx) = bounded(cfg.rings);
        let mut fixed = cfg.pool.is_some() && engine == IoEngine::Uring;
        if let Some(pool) = &cfg.pool
            && pool.count() > usize::from(u16::MAX)
        {
            return Err(open_err(
                path,
                "buffer pool has more buffers than io_uring can register",
            ));
        }
        let iovecs = cfg.pool.as_ref().map(|p| p.iovecs());
        for _ in 0..if engine == IoEngine::Uring { cfg.rings } else { 0 } {
            let ring = IoUring::new(cfg.queue_depth)
                .map_err(|e| open_err(path, format!("io_uring_setup({}): {e}", cfg.queue_depth)))?;
            if let (Some(iov), true) = (&iovecs, fixed) {
                // SAFETY: the iovecs describe the pool's mapping, which `self.pool` keeps alive for
                // as long as the rings exist (the rings are dropped with the device, before the pool).
                if let Err(e) = unsafe { ring.submitter().register_buffers(iov) } {
                    tracing::warn!(path, error = %e, "cannot register fixed buffers; using plain reads and writes");
                    fixed = false;
                }
            }
            rings_tx.send(ring).map_err(|_| open_err(path, "ring channel closed"))?;
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            queue_depth: cfg.queue_depth,
            rings_tx,
            rings_rx,
            pool: cfg.pool.clone(),
            fixed,
            engine,
            flushes: AtomicU64::new(0),
            write_turn: parking_lot::Mutex::new(()),
        })
    }

    /// The engine in use ([`IoEngine::Uring`] or [`IoEngine::Sync`]).
    pub fn engine(&self) -> IoEngine {
        self.engine
    }

    /// True if the pool's buffers are registered as fixed buffers.
    pub fn fixed_buffers(&self) -> bool {
        self.fixed
    }

    /// Flushes (`fdatasync`) issued since the device was opened.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// The pool buffer index containing `[addr, addr+len)`, if any.
    fn fixed_index(&self, addr: usize, len: usize) -> Option<u16> {
        let pool = self.pool.as_ref().filter(|_| self.fixed)?;
        let base = pool.base_ptr() as usize;
        if addr < base || !pool.contains(addr as *const u8, len) {
            return None;
        }
        let index = (addr - base) / pool.buf_size();
        let buf_end = base + (index + 1) * pool.buf_size();
        if addr + len > buf_end {
            return None;
        }
        u16::try_from(index).ok()
    }

    fn entry(&self, op: &mut IoOp<'_>, done: usize, tag: u64) -> io_uring::squeue::Entry {
        let fd = types::Fd(self.file.as_raw_fd());
        let offset = op.offset() + done as u64;
        let remaining = op.len() - done;
        // Bounded by MAX_IO (checked in submit), so the cast cannot truncate.
        let len = remaining as u32;
        match op {
            IoOp::Read { buf, .. } => {
                let ptr = buf[done..].as_mut_ptr();
                match self.fixed_index(ptr as usize, remaining) {
                    Some(i) => opcode::ReadFixed::new(fd, ptr, len, i).offset(offset).build(),
                    None => opcode::Read::new(fd, ptr, len).offset(offset).build(),
                }
            }
            IoOp::Write { buf, .. } => {
                let ptr = buf[done..].as_ptr();
                match self.fixed_index(ptr as usize, remaining) {
                    Some(i) => opcode::WriteFixed::new(fd, ptr, len, i).offset(offset).build(),
                    None => opcode::Write::new(fd, ptr, len).offset(offset).build(),
                }
            }
        }
        .user_data(tag)
    }

    fn run(&self, ring: &mut IoUring, ops: &mut [IoOp<'_>]) -> Result<(), DevError> {
        let qd = self.queue_depth as usize;
        let mut done = vec![0usize; ops.len()];
        let mut resubmit: Vec<usize> = Vec::new();
        let mut next = 0usize;
        let mut inflight = 0usize;
        let mut first_err: Option<DevError> = None;
        let mut reaped: Vec<(u64, i32)> = Vec::with_capacity(qd);
        loop {
            // Fill the submission queue up to the queue depth: resubmissions first, then new I/Os.
            while inflight < qd && first_err.is_none() {
                let idx = if let Some(i) = resubmit.pop() {
                    i
                } else if next < ops.len() {
                    next += 1;
                    next - 1
                } else {
                    break;
                };
                let sqe = self.entry(&mut ops[idx], done[idx], idx as u64);
                // SAFETY: the entry points into `ops[idx]`'s buffer, borrowed by this function;
                // `run` does not return before every submitted entry has completed (the loop below
                // only ends with `inflight == 0`), so the buffer outlives the I/O.
                let pushed = unsafe { ring.submission().push(&sqe) };
                if pushed.is_err() {
                    // The queue is full although fewer than `qd` are in flight: submit what we have.
                    resubmit.push(idx);
                    break;
                }
                inflight += 1;
            }
            if inflight == 0 {
                if first_err.is_none() && (next < ops.len() || !resubmit.is_empty()) {
                    // Cannot happen with a queue of `qd` entries; never report unfinished I/O as done.
                    first_err = Some(DevError::Io {
                        path: self.path.clone(),
                        op: "submit",
                        offset: 0,
                        len: 0,
                        source: std::io::Error::other("submission queue refused an entry with nothing in flight"),
                    });
                }
                break;
            }
            self.enter(ring, 1);
            reaped.clear();
            reaped.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            for &(tag, res) in &reaped {
                inflight -= 1;
                let idx = tag as usize;
                let op = &ops[idx];
                let (name, len) = (
                    if matches!(op, IoOp::Read { .. }) {
                        "read"
                    } else {
                        "write"
                    },
                    op.len(),
                );
                if res < 0 {
                    first_err.get_or_insert(DevError::Io {
                        path: self.path.clone(),
                        op: name,
                        offset: op.offset(),
                        len,
                        source: std::io::Error::from_raw_os_error(-res),
                    });
                } else if res == 0 {
                    first_err.get_or_insert(DevError::Io {
                        path: self.path.clone(),
                        op: name,
                        offset: op.offset() + done[idx] as u64,
                        len,
                        source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "device returned 0 bytes"),
                    });
                } else {
                    done[idx] += res as usize;
                    if done[idx] < len {
                        resubmit.push(idx);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`IoEngine::Sync`]: each I/O as positional system calls, in order.
    fn run_sync(&self, ops: &mut [IoOp<'_>]) -> Result<(), DevError> {
        let fd = self.file.as_raw_fd();
        for op in ops.iter_mut() {
            let _turn = matches!(op, IoOp::Write { .. }).then(|| self.write_turn.lock());
            let (offset, len) = (op.offset(), op.len());
            let mut done = 0usize;
            while done < len {
                let pos = libc::off_t::try_from(offset + done as u64).unwrap_or(libc::off_t::MAX);
                let n = match op {
                    // SAFETY: the pointer and length describe the unread tail of a live, writable
                    // buffer borrowed for this call.
                    IoOp::Read { buf, .. } => unsafe {
                        libc::pread(fd, buf[done..].as_mut_ptr().cast(), len - done, pos)
                    },
                    // SAFETY: the pointer and length describe the unwritten tail of a live buffer.
                    IoOp::Write { buf, .. } => unsafe {
                        libc::pwrite(fd, buf[done..].as_ptr().cast(), len - done, pos)
                    },
                };
                let name = if matches!(op, IoOp::Read { .. }) {
                    "read"
                } else {
                    "write"
                };
                match n {
                    n if n > 0 => done += n as usize,
                    0 => {
                        return Err(DevError::Io {
                            path: self.path.clone(),
                            op: name,
                            offset: offset + done as u64,
                            len,
                            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "device returned 0 bytes"),
                        });
                    }
                    _ => {
                        let e = std::io::Error::last_os_error();
                        if e.raw_os_error() == Some(libc::EINTR) {
                            continue;
                        }
                        return Err(DevError::Io {
                            path: self.path.clone(),
                            op: name,
                            offset,
                            len,
                            source: e,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Submits pending entries and waits for `want` completions, retrying interruptions. Any other
    /// failure of `io_uring_enter` leaves I/Os in flight on borrowed buffers, which we cannot let a
    /// caller free: abort.
    fn enter(&self, ring: &IoUring, want: usize) {
        loop {
            match ring.submit_and_wait(want) {
                Ok(_) => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => continue,
                Err(e) => {
                    tracing::error!(path = %self.path, error = %e, "io_uring_enter failed with I/O in flight");
                    std::process::abort();
                }
            }
        }
    }
}

impl BlockDevice for UringDevice {
    fn path(&self) -> &str {
        &self.path
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        DEVICE_ALIGN
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<(), DevError> {
        check_ops(&self.path, self.size, DEVICE_ALIGN, ops)?;
        if let Some(op) = ops.iter().find(|op| op.len() > MAX_IO) {
            return Err(DevError::Io {
                path: self.path.clone(),
                op: "submit",
                offset: op.offset(),
                len: op.len(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "single I/O larger than 1 GiB"),
            });
        }
        if self.engine == IoEngine::Sync {
            return self.run_sync(ops);
        }
        let mut ring = self
            .rings_rx
            .recv()
            .map_err(|_| open_err(&self.path, "ring channel closed"))?;
        let res = self.run(&mut ring, ops);
        let _ = self.rings_tx.send(ring);
        res
    }

    fn flush(&self) -> Result<(), DevError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        if self.engine == IoEngine::Sync {
            // SAFETY: fdatasync on a descriptor this device owns.
            let rc = unsafe { libc::fdatasync(self.file.as_raw_fd()) };
            return if rc == 0 {
                Ok(())
            } else {
                Err(DevError::Io {
                    path: self.path.clone(),
                    op: "flush",
                    offset: 0,
                    len: 0,
                    source: std::io::Error::last_os_error(),
                })
            };
        }
        let mut ring = self
            .rings_rx
            .recv()
            .map_err(|_| open_err(&self.path, "ring channel closed"))?;
        let sqe = opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(u64::MAX);
        // SAFETY: an fsync entry references no memory.
        let pushed = unsafe { ring.submission().push(&sqe) };
        let res = if pushed.is_err() {
            Err(std::io::Error::other("submission queue full"))
        } else {
            self.enter(&ring, 1);
            match ring.completion().next().map(|c| c.result()) {
                Some(r) if r < 0 => Err(std::io::Error::from_raw_os_error(-r)),
                Some(_) => Ok(()),
                None => Err(std::io::Error::other("no completion for fsync")),
            }
        };
        let _ = self.rings_tx.send(ring);
        res.map_err(|source| DevError::Io {
            path: self.path.clone(),
            op: "flush",
            offset: 0,
            len: 0,
            source,
        })
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        // Rings go first (their fixed-buffer registrations reference the pool).
        while self.rings_rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm_file(size: u64) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new()
            .prefix("rustre-uring-")
            .tempfile_in("/dev/shm")
            .unwrap();
        f.as_file().set_len(size).unwrap();
        f
    }

    #[test]
    fn fixed_and_plain_batches_round_trip_through_io_uring() {
        round_trip(IoEngine::Uring);
    }

    #[test]
    fn batches_round_trip_through_system_calls() {
        round_trip(IoEngine::Sync);
    }

    #[test]
    fn auto_picks_system_calls_on_tmpfs_only() {
        let f = shm_file(2 << 20);
        let dev = UringDevice::open(f.path().to_str().unwrap(), &UringConfig::default()).unwrap();
        assert_eq!(dev.engine(), IoEngine::Sync);
        // /tmp may be tmpfs too; the source tree's file system is taken as the other kind.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let p = dir.path().join("dev");
        std::fs::File::create(&p).unwrap().set_len(2 << 20).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        match UringDevice::open(p.to_str().unwrap(), &UringConfig::default()) {
            Ok(dev) if on_tmpfs(&file) => assert_eq!(dev.engine(), IoEngine::Sync),
            Ok(dev) => assert_eq!(dev.engine(), IoEngine::Uring),
            // A file system that refuses O_DIRECT says nothing about the choice.
            Err(e) => assert!(e.to_string().contains("O_DIRECT"), "{e}"),
        }
        assert_eq!("sync".parse::<IoEngine>(), Ok(IoEngine::Sync));
        assert!("aio".parse::<IoEngine>().unwrap_err().contains("auto, uring or sync"));
    }

    fn round_trip(engine: IoEngine) {
        let f = shm_file(8 << 20);
        let pool = BufferPool::new(1 << 20, 4).unwrap();
        let cfg = UringConfig {
            queue_depth: 4,
            rings: 2,
            pool: Some(pool.clone()),
            min_size: 1 << 20,
            engine,
        };
        let dev = UringDevice::open(f.path().to_str().unwrap(), &cfg).unwrap();
        assert_eq!(dev.engine(), engine);
        assert_eq!(dev.fixed_buffers(), engine == IoEngine::Uring);
        let mut a = pool.get();
        let mut b = pool.get();
        for (i, x) in a.iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
        b.fill(0xAB);
        let mut plain = AlignedBuf::new(8192);
        plain.fill(0x5C);
        // More I/Os than the queue depth, mixing fixed and plain buffers.
        let mut ops = vec![
            IoOp::Write { offset: 0, buf: &a[..] },
            IoOp::Write {
                offset: 1 << 20,
                buf: &b[..],
            },
            IoOp::Write {
                offset: 2 << 20,
                buf: &plain[..],
            },
        ];
        for i in 0..6u64 {
            ops.push(IoOp::Write {
                offset: (3 << 20) + i * 4096,
                buf: &a[..4096],
            });
        }
        dev.submit(&mut ops).unwrap();
        dev.flush().unwrap();
        assert_eq!(dev.flushes(), 1);
        let mut c = pool.get();
        dev.read_at(0, &mut c).unwrap();
        assert_eq!(&c[..], &a[..]);
        dev.read_at(1 << 20, &mut c).unwrap();
        assert!(c.iter().all(|&x| x == 0xAB));
        let mut back = AlignedBuf::new(8192);
        dev.read_at(2 << 20, &mut back).unwrap();
        assert!(back.iter().all(|&x| x == 0x5C));
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(&on_disk[(3 << 20) + 5 * 4096..(3 << 20) + 6 * 4096], &a[..4096]);
    }

    #[test]
    fn refuses_unaligned_out_of_range_small_and_missing() {
        let f = shm_file(2 << 20);
        let dev = UringDevice::open(f.path().to_str().unwrap(), &UringConfig::default()).unwrap();
        let buf = AlignedBuf::new(4096);
        assert!(matches!(dev.write_at(100, &buf), Err(DevError::Unaligned { .. })));
        assert!(matches!(dev.write_at(0, &buf[..100]), Err(DevError::Unaligned { .. })));
        assert!(matches!(dev.write_at(2 << 20, &buf), Err(DevError::OutOfRange { .. })));
        let small = shm_file(4096);
        let p = small.path().to_str().unwrap().to_owned();
        let err = UringDevice::open(&p, &UringConfig::default()).unwrap_err().to_string();
        assert!(err.contains(&p) && err.contains("too small"), "{err}");
        let err = UringDevice::open("/dev/shm/rustre-no-such-device", &UringConfig::default()).unwrap_err();
        assert!(err.to_string().contains("rustre-no-such-device"), "{err}");
        let err = UringDevice::open("/dev/shm", &UringConfig::default()).unwrap_err();
        assert!(err.to_string().contains("/dev/shm"), "{err}");
    }
}
