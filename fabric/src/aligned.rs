//! A heap buffer aligned for O_DIRECT, for I/O that does not go through a [`crate::BufferPool`]
//! (metadata blocks, WAL batches, staging), and the one file-system fact the daemons' device
//! layers need about where their O_DIRECT files live ([`on_tmpfs`]).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

/// Alignment of every [`AlignedBuf`].
pub const ALIGN: usize = crate::pool::POOL_ALIGN;

/// A zero-initialised, 4 KiB-aligned byte buffer of fixed length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is uniquely owned heap memory; moving it between threads is as safe as a Vec.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (`len` is rounded up to a multiple of 4 KiB, minimum 4 KiB).
    pub fn new(len: usize) -> Self {
        let len = len.max(1).div_ceil(ALIGN) * ALIGN;
        let layout = Layout::from_size_align(len, ALIGN).expect("aligned layout of a rounded length is valid");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, len }
    }

    /// The whole buffer (same as `&buf[..]`).
    pub fn as_slice(&self) -> &[u8] {
        self
    }

    /// The whole buffer, writable (same as `&mut buf[..]`).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, ALIGN).expect("same layout as at allocation");
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).finish()
    }
}

/// `TMPFS_MAGIC` of `statfs(2)`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// True when `file` lives on tmpfs. There io_uring hands every request to a kernel worker thread
/// (tmpfs cannot do I/O without blocking), so the daemons drive such device files with plain
/// positional system calls instead.
pub fn on_tmpfs(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `statfs` is plain data, filled by fstatfs through a pointer to a live local.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the descriptor is open for the duration of the call.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    // `f_type` is a C long: i64 here, narrower on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let f_type = i64::from(st.f_type);
    rc == 0 && f_type == TMPFS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_up_aligned_and_zeroed() {
        let b = AlignedBuf::new(5000);
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(AlignedBuf::new(0).len(), ALIGN);
    }
}
