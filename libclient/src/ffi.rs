//! The C ABI of librustre (`include/rustre.h` is generated from this file by cbindgen).
//!
//! Conventions, for every function:
//! - Results are `0` (or a count) on success and a negative errno on failure (`-ENOENT`, …). The
//!   failing call's message is kept per thread: [`rustre_last_error`].
//! - Pointers are checked: a NULL pointer argument is `-EFAULT`; a path must be NUL-terminated
//!   UTF-8 of at most 4096 bytes (else `-EINVAL` / `-ENAMETOOLONG`); lengths must fit in `ssize_t`.
//! - Handles (`rustre_client *`, `rustre_dir *`) are opaque tokens looked up in a registry, never
//!   dereferenced: a closed, foreign or garbage handle is `-EBADF`, not a crash.
//! - A panic inside the library is caught at the boundary and returned as `-EIO`.
//! - A client handle may be used by many threads at once (MPI ranks with threads share one).
//!
//! This is the only module of the crate with `unsafe`: turning C pointers into references.

#![allow(non_camel_case_types)]

use crate::client::{Client, DirStream, Fd, OpenFlags};
use crate::error::ClientError;
use crate::layout::LayoutSpec;
use crate::types::{FileAttr, FileKind};
use parking_lot::{Mutex, RwLock};
use rustre_proto::Errno;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// A connected client (opaque).
pub struct rustre_client {
    _opaque: [u8; 0],
}

/// An open directory stream (opaque).
pub struct rustre_dir {
    _opaque: [u8; 0],
}

/// A layout: stripe size in bytes (0 = inherit, else a multiple of 65536), stripe count (0 =
/// inherit) and the OST index of the first stripe (-1 = let the MDS choose).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rustre_layout {
    /// Bytes per stripe chunk.
    pub stripe_size: u32,
    /// Number of OSTs striped over.
    pub stripe_count: u32,
    /// First OST, or -1.
    pub stripe_offset: i32,
}

/// One object of a file's layout.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rustre_ost_object {
    /// OST index.
    pub ost_index: u32,
    /// Object id on that OST.
    pub object_id: u64,
}

/// File attributes (the fields of `struct stat` that rustre keeps).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rustre_attr {
    /// Inode number.
    pub ino: u64,
    /// `st_mode`: `S_IF*` type bits and permission bits.
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Preferred I/O size: the stripe size of a striped file, else 4096.
    pub blksize: u32,
    /// Stripe count of a regular file with a layout, else 0.
    pub stripe_count: u32,
    /// Access time, seconds.
    pub atime_sec: i64,
    /// Access time, nanoseconds.
    pub atime_nsec: i64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
    /// Change time, seconds.
    pub ctime_sec: i64,
    /// Change time, nanoseconds.
    pub ctime_nsec: i64,
}

/// Longest name in a [`rustre_dirent`] (without its NUL).
pub const RUSTRE_NAME_MAX: usize = 255;

/// A directory entry.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rustre_dirent {
    /// Inode number.
    pub ino: u64,
    /// `DT_REG` (8), `DT_DIR` (4) or `DT_LNK` (10), as `d_type`.
    pub d_type: u32,
    /// Length of `name` without the NUL.
    pub name_len: u32,
    /// NUL-terminated name.
    pub name: [c_char; 256],
}

/// File system figures.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rustre_fsinfo {
    /// NUL-terminated file system name.
    pub fsname: [c_char; 65],
    /// Total bytes over all OSTs.
    pub total_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Bytes available to users.
    pub avail_bytes: u64,
    /// Total inodes.
    pub total_inodes: u64,
    /// Free inodes.
    pub free_inodes: u64,
    /// Longest name.
    pub max_name_len: u32,
    /// OSTs in the cluster.
    pub ost_count: u32,
}

// ---- registries and the per-thread error ----------------------------------------------------

/// Handle tokens start here so that small integers and NULL are never valid handles.
const TOKEN_BASE: u64 = 0x5255_5354_0000_0000;
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(TOKEN_BASE + 1);
static CLIENTS: LazyLock<RwLock<HashMap<u64, Arc<Client>>>> = LazyLock::new(|| RwLock::new(HashMap::new()));
type DirSlot = Arc<Mutex<(Arc<Client>, DirStream)>>;
static DIRS: LazyLock<RwLock<HashMap<u64, DirSlot>>> = LazyLock::new(|| RwLock::new(HashMap::new()));

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn new_token() -> u64 {
    NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
}

fn set_error(msg: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

/// Records `e` as this thread's last error and returns `-errno`.
fn fail(func: &str, e: &ClientError) -> i64 {
    set_error(format!("{func}: {e}"));
    -i64::from(e.errno())
}

fn errno_err(errno: Errno, msg: impl Into<String>) -> ClientError {
    ClientError::other(errno, msg)
}

/// Runs `f` with panics caught; `Err` becomes `-errno` with the message recorded.
fn guard(func: &str, f: impl FnOnce() -> Result<i64, ClientError>) -> i64 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => fail(func, &e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(format!("{func}: internal error: {what}"));
            -i64::from(Errno::EIO.get())
        }
    }
}

fn guard_int(func: &str, f: impl FnOnce() -> Result<i64, ClientError>) -> c_int {
    let v = guard(func, f);
    c_int::try_from(v).unwrap_or(-Errno::EOVERFLOW.get())
}

fn client(h: *const rustre_client) -> Result<Arc<Client>, ClientError> {
    let token = h as usize as u64;
    CLIENTS
        .read()
        .get(&token)
        .cloned()
        .ok_or_else(|| errno_err(Errno::EBADF, format!("bad client handle {h:p}")))
}

fn null<T>(p: *const T, what: &str) -> Result<(), ClientError> {
    if p.is_null() {
        Err(errno_err(Errno::EFAULT, format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// Reads a NUL-terminated UTF-8 string of at most `PATH_MAX` bytes.
///
/// # Safety
/// `p` is NULL or points to readable memory holding a NUL within `PATH_MAX + 1` bytes.
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, ClientError> {
    null(p, what)?;
    const LIMIT: usize = crate::client::PATH_MAX + 1;
    // SAFETY: the caller guarantees a NUL within LIMIT readable bytes; strnlen reads no further
    // than the NUL or LIMIT.
    let len = unsafe { libc::strnlen(p, LIMIT) };
    if len == LIMIT {
        return Err(errno_err(
            Errno::ENAMETOOLONG,
            format!("{what} is longer than {} bytes", LIMIT - 1),
        ));
    }
    // SAFETY: `len` bytes from `p` are readable (strnlen found the NUL right after them) and stay
    // valid for the duration of the call, which is all `'a` is used for.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    std::str::from_utf8(bytes).map_err(|_| errno_err(Errno::EINVAL, format!("{what} is not UTF-8")))
}

/// Writes `v` through `out`.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, v: T, what: &str) -> Result<(), ClientError> {
    null(out, what)?;
    // SAFETY: non-NULL and valid for writes per the caller's contract; `T` is plain data.
    unsafe { out.write(v) };
    Ok(())
}

fn check_len(count: usize, what: &str) -> Result<(), ClientError> {
    if count > isize::MAX as usize {
        return Err(errno_err(
            Errno::EINVAL,
            format!("{what} of {count} bytes exceeds SSIZE_MAX"),
        ));
    }
    Ok(())
}

fn fd_of(fd: c_int) -> Fd {
    Fd(fd)
}

fn to_stat(a: &FileAttr) -> rustre_attr {
    let split = |ns: i64| (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let (atime_sec, atime_nsec) = split(a.atime_ns);
    let (mtime_sec, mtime_nsec) = split(a.mtime_ns);
    let (ctime_sec, ctime_nsec) = split(a.ctime_ns);
    let (blksize, stripe_count) = match &a.layout {
        Some(l) => (
            u32::try_from(l.geometry.stripe_size()).unwrap_or(u32::MAX),
            l.geometry.stripe_count(),
        ),
        None => (4096, 0),
    };
    rustre_attr {
        ino: a.fid.ino,
        mode: a.mode(),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blocks: a.blocks,
        blksize,
        stripe_count,
        atime_sec,
        atime_nsec,
        mtime_sec,
        mtime_nsec,
        ctime_sec,
        ctime_nsec,
    }
}

fn spec_of(l: &rustre_layout) -> LayoutSpec {
    LayoutSpec {
        stripe_size: l.stripe_size,
        stripe_count: l.stripe_count,
        stripe_offset: l.stripe_offset,
    }
}

fn copy_name<const N: usize>(dst: &mut [c_char; N], src: &[u8]) -> usize {
    let n = src.len().min(N - 1);
    for (d, s) in dst.iter_mut().zip(&src[..n]) {
        *d = *s as c_char;
    }
    dst[n] = 0;
    n
}

// ---- connection -----------------------------------------------------------------------------

/// Connects to a rustre file system. `config_or_address` is a client config file path (TOML, as
/// written by `rustre cluster up`) or MDS addresses (`tcp://host:port[,tcp://…]`). On success
/// `*out` receives the handle.
///
/// # Safety
/// `config_or_address` is a NUL-terminated string; `out` is valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_connect(config_or_address: *const c_char, out: *mut *mut rustre_client) -> c_int {
    guard_int("rustre_connect", || {
        null(out, "out")?;
        // SAFETY: forwarded caller contract.
        let spec = unsafe { c_str(config_or_address, "config_or_address") }?;
        let c = Client::connect_spec(spec)?;
        let token = new_token();
        CLIENTS.write().insert(token, Arc::new(c));
        // SAFETY: `out` is valid for a pointer write (checked non-NULL above).
        unsafe {
            put(
                out,
                std::ptr::without_provenance_mut::<rustre_client>(token as usize),
                "out",
            )
        }?;
        Ok(0)
    })
}

/// Disconnects and frees the handle. Files still open are closed (their sizes reported); calls
/// still running on other threads finish with an error.
#[unsafe(no_mangle)]
pub extern "C" fn rustre_disconnect(h: *mut rustre_client) -> c_int {
    guard_int("rustre_disconnect", || {
        let token = h as usize as u64;
        let c = CLIENTS
            .write()
            .remove(&token)
            .ok_or_else(|| errno_err(Errno::EBADF, format!("bad client handle {h:p}")))?;
        DIRS.write().retain(|_, d| !Arc::ptr_eq(&d.lock().0, &c));
        c.disconnect();
        Ok(0)
    })
}

// ---- files ----------------------------------------------------------------------------------

/// Opens `path` with `open(2)` flags (`O_RDONLY`, `O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_EXCL`,
/// `O_TRUNC`, `O_APPEND`) and permission bits `mode` for a created file. `layout` (may be NULL)
/// is the layout of a file this call creates. `*fd` receives the file descriptor.
///
/// # Safety
/// `path` is a NUL-terminated string; `layout` is NULL or readable; `fd` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_open(
    h: *mut rustre_client,
    path: *const c_char,
    flags: c_int,
    mode: u32,
    layout: *const rustre_layout,
    fd: *mut c_int,
) -> c_int {
    guard_int("rustre_open", || {
        let c = client(h)?;
        null(fd, "fd")?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: NULL or readable per the caller's contract.
        let spec = unsafe { layout.as_ref() }.map(spec_of);
        let f = c.open(path, OpenFlags::from_posix(flags)?, mode, spec.as_ref())?;
        // SAFETY: checked non-NULL; valid for a write per the contract.
        unsafe { put(fd, f.0, "fd") }?;
        Ok(0)
    })
}

/// Closes `fd` (reporting the size it wrote to the MDS).
#[unsafe(no_mangle)]
pub extern "C" fn rustre_close(h: *mut rustre_client, fd: c_int) -> c_int {
    guard_int("rustre_close", || {
        client(h)?.close(fd_of(fd))?;
        Ok(0)
    })
}

/// Reads up to `count` bytes at `offset` into `buf`; returns the bytes read (0 at end of file).
///
/// # Safety
/// `buf` is valid for writes of `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_pread(
    h: *mut rustre_client,
    fd: c_int,
    buf: *mut c_void,
    count: usize,
    offset: u64,
) -> i64 {
    guard("rustre_pread", || {
        let c = client(h)?;
        null(buf, "buf")?;
        check_len(count, "count")?;
        // SAFETY: non-NULL, valid for `count` bytes of writes per the contract, `count` ≤ isize::MAX;
        // the slice lives only for this call.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), count) };
        Ok(c.pread(fd_of(fd), buf, offset)? as i64)
    })
}

/// Writes `count` bytes of `buf` at `offset`; returns `count` (or an error: no short writes).
///
/// # Safety
/// `buf` is valid for reads of `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_pwrite(
    h: *mut rustre_client,
    fd: c_int,
    buf: *const c_void,
    count: usize,
    offset: u64,
) -> i64 {
    guard("rustre_pwrite", || {
        let c = client(h)?;
        null(buf, "buf")?;
        check_len(count, "count")?;
        // SAFETY: non-NULL, valid for `count` bytes of reads per the contract, `count` ≤ isize::MAX;
        // the slice lives only for this call.
        let buf = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), count) };
        Ok(c.pwrite(fd_of(fd), buf, offset)? as i64)
    })
}

/// Makes every acknowledged write of `fd` durable.
#[unsafe(no_mangle)]
pub extern "C" fn rustre_fsync(h: *mut rustre_client, fd: c_int) -> c_int {
    guard_int("rustre_fsync", || {
        client(h)?.fsync(fd_of(fd))?;
        Ok(0)
    })
}

/// Attributes of `path` (symbolic links followed).
///
/// # Safety
/// `path` is a NUL-terminated string; `st` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_stat(h: *mut rustre_client, path: *const c_char, st: *mut rustre_attr) -> c_int {
    guard_int("rustre_stat", || {
        let c = client(h)?;
        null(st, "st")?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        let a = c.stat(path)?;
        // SAFETY: forwarded caller contract.
        unsafe { put(st, to_stat(&a), "st") }?;
        Ok(0)
    })
}

/// Attributes of the open file `fd` (its size includes writes not yet closed).
///
/// # Safety
/// `st` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_fstat(h: *mut rustre_client, fd: c_int, st: *mut rustre_attr) -> c_int {
    guard_int("rustre_fstat", || {
        let c = client(h)?;
        null(st, "st")?;
        let a = c.fstat(fd_of(fd))?;
        // SAFETY: forwarded caller contract.
        unsafe { put(st, to_stat(&a), "st") }?;
        Ok(0)
    })
}

/// Truncates (or extends with a hole) `path` to `size` bytes.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_truncate(h: *mut rustre_client, path: *const c_char, size: u64) -> c_int {
    guard_int("rustre_truncate", || {
        let c = client(h)?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        c.truncate(path, size)?;
        Ok(0)
    })
}

/// Truncates (or extends) the open file `fd` to `size` bytes.
#[unsafe(no_mangle)]
pub extern "C" fn rustre_ftruncate(h: *mut rustre_client, fd: c_int, size: u64) -> c_int {
    guard_int("rustre_ftruncate", || {
        client(h)?.ftruncate(fd_of(fd), size)?;
        Ok(0)
    })
}

// ---- namespace ------------------------------------------------------------------------------

/// Makes directory `path` with permission bits `mode`.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_mkdir(h: *mut rustre_client, path: *const c_char, mode: u32) -> c_int {
    guard_int("rustre_mkdir", || {
        let c = client(h)?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        c.mkdir(path, mode, None)?;
        Ok(0)
    })
}

/// Removes the empty directory `path`.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_rmdir(h: *mut rustre_client, path: *const c_char) -> c_int {
    guard_int("rustre_rmdir", || {
        let c = client(h)?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        c.rmdir(path)?;
        Ok(0)
    })
}

/// Removes the file (or symbolic link) `path`.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_unlink(h: *mut rustre_client, path: *const c_char) -> c_int {
    guard_int("rustre_unlink", || {
        let c = client(h)?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        c.unlink(path)?;
        Ok(0)
    })
}

/// Renames `from` to `to`.
///
/// # Safety
/// `from` and `to` are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_rename(h: *mut rustre_client, from: *const c_char, to: *const c_char) -> c_int {
    guard_int("rustre_rename", || {
        let c = client(h)?;
        // SAFETY: forwarded caller contract.
        let from = unsafe { c_str(from, "from") }?;
        // SAFETY: forwarded caller contract.
        let to = unsafe { c_str(to, "to") }?;
        c.rename(from, to)?;
        Ok(0)
    })
}

/// Opens directory `path` for reading; `*out` receives the stream.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is valid for a pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_opendir(
    h: *mut rustre_client,
    path: *const c_char,
    out: *mut *mut rustre_dir,
) -> c_int {
    guard_int("rustre_opendir", || {
        let c = client(h)?;
        null(out, "out")?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        let d = c.opendir(path)?;
        let mut dirs = DIRS.write();
        if dirs.len() >= c.config.limits.max_open_files as usize {
            return Err(errno_err(
                Errno::try_from(24).unwrap_or(Errno::ENOMEM),
                "too many open directories",
            ));
        }
        let token = new_token();
        dirs.insert(token, Arc::new(Mutex::new((c, d))));
        // SAFETY: forwarded caller contract.
        unsafe {
            put(
                out,
                std::ptr::without_provenance_mut::<rustre_dir>(token as usize),
                "out",
            )
        }?;
        Ok(0)
    })
}

/// Reads the next entry of `dir` into `*ent`: returns 1 with an entry, 0 at the end.
///
/// # Safety
/// `ent` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_readdir(dir: *mut rustre_dir, ent: *mut rustre_dirent) -> c_int {
    guard_int("rustre_readdir", || {
        let token = dir as usize as u64;
        let slot = DIRS
            .read()
            .get(&token)
            .cloned()
            .ok_or_else(|| errno_err(Errno::EBADF, format!("bad directory handle {dir:p}")))?;
        null(ent, "ent")?;
        let mut guard = slot.lock();
        let (c, stream) = &mut *guard;
        let Some(e) = c.readdir(stream)? else { return Ok(0) };
        let mut out = rustre_dirent {
            ino: e.fid.ino,
            d_type: 0,
            name_len: 0,
            name: [0; 256],
        };
        out.d_type = match e.kind {
            FileKind::Regular => 8,
            FileKind::Directory => 4,
            FileKind::Symlink => 10,
        };
        out.name_len = copy_name(&mut out.name, &e.name) as u32;
        // SAFETY: forwarded caller contract.
        unsafe { put(ent, out, "ent") }?;
        Ok(1)
    })
}

/// Closes a directory stream.
#[unsafe(no_mangle)]
pub extern "C" fn rustre_closedir(dir: *mut rustre_dir) -> c_int {
    guard_int("rustre_closedir", || {
        let token = dir as usize as u64;
        DIRS.write()
            .remove(&token)
            .ok_or_else(|| errno_err(Errno::EBADF, format!("bad directory handle {dir:p}")))?;
        Ok(0)
    })
}

/// Sets the default layout of directory `path`, or the layout of a file that has no data yet.
///
/// # Safety
/// `path` is a NUL-terminated string; `layout` is readable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_setstripe(
    h: *mut rustre_client,
    path: *const c_char,
    layout: *const rustre_layout,
) -> c_int {
    guard_int("rustre_setstripe", || {
        let c = client(h)?;
        null(layout, "layout")?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: non-NULL and readable per the contract.
        let spec = spec_of(unsafe { &*layout });
        c.setstripe(path, &spec)?;
        Ok(0)
    })
}

/// The layout of `path` into `*layout`, and its objects into `objects[0..max_objects]`. Returns
/// the number of objects; `-ERANGE` when `max_objects` is too small (`objects` may be NULL with
/// `max_objects` 0 to ask only for the count).
///
/// # Safety
/// `path` is a NUL-terminated string; `layout` is valid for a write; `objects` is NULL or valid
/// for `max_objects` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_getstripe(
    h: *mut rustre_client,
    path: *const c_char,
    layout: *mut rustre_layout,
    objects: *mut rustre_ost_object,
    max_objects: usize,
) -> c_int {
    guard_int("rustre_getstripe", || {
        let c = client(h)?;
        null(layout, "layout")?;
        if objects.is_null() && max_objects > 0 {
            return Err(errno_err(Errno::EFAULT, "objects is NULL with max_objects > 0"));
        }
        check_len(max_objects.saturating_mul(size_of::<rustre_ost_object>()), "objects")?;
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        let info = c.getstripe(path)?;
        let spec = info.spec;
        let l = rustre_layout {
            stripe_size: spec.stripe_size,
            stripe_count: spec.stripe_count,
            stripe_offset: spec.stripe_offset,
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(layout, l, "layout") }?;
        let n = info.objects.len();
        if max_objects == 0 && objects.is_null() {
            return Ok(n as i64);
        }
        if n > max_objects {
            return Err(errno_err(
                Errno::ERANGE,
                format!("{path} has {n} objects, room for {max_objects}"),
            ));
        }
        if n > 0 {
            // SAFETY: non-NULL, valid for `max_objects >= n` writes per the contract, size checked
            // against isize::MAX; the slice lives only for this call.
            let dst = unsafe { std::slice::from_raw_parts_mut(objects, n) };
            for (d, o) in dst.iter_mut().zip(&info.objects) {
                *d = rustre_ost_object {
                    ost_index: o.ost,
                    object_id: o.id,
                };
            }
        }
        Ok(n as i64)
    })
}

/// File system figures into `*out`.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_statfs(h: *mut rustre_client, out: *mut rustre_fsinfo) -> c_int {
    guard_int("rustre_statfs", || {
        let c = client(h)?;
        null(out, "out")?;
        let s = c.statfs()?;
        let mut v = rustre_fsinfo {
            fsname: [0; 65],
            total_bytes: s.total_bytes,
            free_bytes: s.free_bytes,
            avail_bytes: s.avail_bytes,
            total_inodes: s.total_inodes,
            free_inodes: s.free_inodes,
            max_name_len: s.max_name_len,
            ost_count: s.ost_count,
        };
        copy_name(&mut v.fsname, s.fsname.as_bytes());
        // SAFETY: forwarded caller contract.
        unsafe { put(out, v, "out") }?;
        Ok(0)
    })
}

// ---- errors ---------------------------------------------------------------------------------

/// A static description of an errno value (positive or negative), e.g. "ENOENT: No such file or
/// directory.". Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn rustre_strerror(err: c_int) -> *const c_char {
    let s: &'static str = match err.checked_abs() {
        Some(0) => "success\0",
        Some(code) => ERRNO_TEXT
            .iter()
            .find(|(e, _)| e.get() == code)
            .map_or("unknown error\0", |(_, t)| t),
        None => "unknown error\0",
    };
    s.as_ptr().cast::<c_char>()
}

/// Descriptions returned by [`rustre_strerror`], NUL-terminated.
const ERRNO_TEXT: &[(Errno, &str)] = &[
    (Errno::EPERM, "EPERM: operation not permitted\0"),
    (Errno::ENOENT, "ENOENT: no such file or directory\0"),
    (Errno::EIO, "EIO: I/O error\0"),
    (Errno::EBADF, "EBADF: bad file, directory or client handle\0"),
    (Errno::EAGAIN, "EAGAIN: try again\0"),
    (Errno::ENOMEM, "ENOMEM: out of memory\0"),
    (Errno::EACCES, "EACCES: permission denied\0"),
    (Errno::EFAULT, "EFAULT: bad address (NULL pointer)\0"),
    (Errno::EBUSY, "EBUSY: resource busy\0"),
    (Errno::EEXIST, "EEXIST: file exists\0"),
    (Errno::EXDEV, "EXDEV: cross-device link\0"),
    (Errno::ENODEV, "ENODEV: no such device\0"),
    (Errno::ENOTDIR, "ENOTDIR: not a directory\0"),
    (Errno::EISDIR, "EISDIR: is a directory\0"),
    (Errno::EINVAL, "EINVAL: invalid argument\0"),
    (Errno::EFBIG, "EFBIG: file too large\0"),
    (Errno::ENOSPC, "ENOSPC: no space left on device\0"),
    (Errno::EROFS, "EROFS: read-only file system\0"),
    (Errno::EMLINK, "EMLINK: too many links\0"),
    (Errno::ERANGE, "ERANGE: result out of range (buffer too small)\0"),
    (Errno::ENAMETOOLONG, "ENAMETOOLONG: file name too long\0"),
    (Errno::ENOSYS, "ENOSYS: operation not implemented\0"),
    (Errno::ENOTEMPTY, "ENOTEMPTY: directory not empty\0"),
    (Errno::ELOOP, "ELOOP: too many symbolic links\0"),
    (Errno::ENODATA, "ENODATA: no data available\0"),
    (Errno::EPROTO, "EPROTO: protocol error\0"),
    (Errno::EBADMSG, "EBADMSG: bad message (checksum mismatch)\0"),
    (Errno::EOVERFLOW, "EOVERFLOW: value too large\0"),
    (Errno::EMSGSIZE, "EMSGSIZE: message too long\0"),
    (Errno::EOPNOTSUPP, "EOPNOTSUPP: operation not supported\0"),
    (Errno::ECONNRESET, "ECONNRESET: connection reset\0"),
    (Errno::ENOTCONN, "ENOTCONN: not connected\0"),
    (Errno::ETIMEDOUT, "ETIMEDOUT: timed out\0"),
    (Errno::ECONNREFUSED, "ECONNREFUSED: connection refused\0"),
    (Errno::EHOSTUNREACH, "EHOSTUNREACH: no route to host\0"),
    (Errno::ESTALE, "ESTALE: stale file handle\0"),
    (Errno::EDQUOT, "EDQUOT: quota exceeded\0"),
    (Errno::EKEYREJECTED, "EKEYREJECTED: authentication failed\0"),
];

/// Copies this thread's last error message (NUL-terminated, cut to fit) into `buf` of `len`
/// bytes and returns the message's full length (so a caller can retry with a larger buffer).
/// `buf` may be NULL when `len` is 0.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rustre_last_error(buf: *mut c_char, len: usize) -> usize {
    let r = catch_unwind(AssertUnwindSafe(|| {
        LAST_ERROR.with(|e| {
            let msg = e.borrow();
            if !buf.is_null() && len > 0 && len <= isize::MAX as usize {
                // SAFETY: non-NULL and valid for `len` bytes of writes per the contract.
                let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
                let n = msg.len().min(len - 1);
                dst[..n].copy_from_slice(&msg.as_bytes()[..n]);
                dst[n] = 0;
            }
            msg.len()
        })
    }));
    r.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        let mut buf = [0 as c_char; 256];
        // SAFETY: `buf` is valid for 256 bytes of writes.
        let n = unsafe { rustre_last_error(buf.as_mut_ptr(), buf.len()) };
        // SAFETY: rustre_last_error NUL-terminates within the buffer.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
        assert_eq!(n, LAST_ERROR.with(|e| e.borrow().len()));
        s
    }

    #[test]
    fn checks_pointers_and_handles_without_a_cluster() {
        let mut h: *mut rustre_client = std::ptr::null_mut();
        // SAFETY: every pointer passed is NULL, a valid local, or a NUL-terminated literal.
        unsafe {
            assert_eq!(rustre_connect(std::ptr::null(), &mut h), -Errno::EFAULT.get());
            assert!(last_error().contains("config_or_address is NULL"));
            assert_eq!(
                rustre_connect(c"tcp://127.0.0.1:1".as_ptr(), std::ptr::null_mut()),
                -Errno::EFAULT.get()
            );
            assert_eq!(rustre_connect(c"udp://x".as_ptr(), &mut h), -Errno::EINVAL.get());
            assert_eq!(
                rustre_connect(c"/nonexistent/rustre.toml".as_ptr(), &mut h),
                -Errno::EINVAL.get()
            );
            assert!(last_error().contains("/nonexistent/rustre.toml"));
            assert!(h.is_null());
            let bogus = std::ptr::without_provenance_mut::<rustre_client>(0x1234);
            let mut st = rustre_attr::default();
            assert_eq!(rustre_stat(bogus, c"/".as_ptr(), &mut st), -Errno::EBADF.get());
            assert_eq!(
                rustre_stat(std::ptr::null_mut(), c"/".as_ptr(), &mut st),
                -Errno::EBADF.get()
            );
            assert_eq!(rustre_disconnect(bogus), -Errno::EBADF.get());
            assert_eq!(rustre_close(bogus, 3), -Errno::EBADF.get());
            let mut buf = [0u8; 8];
            assert_eq!(
                rustre_pread(bogus, 3, buf.as_mut_ptr().cast(), 8, 0),
                -i64::from(Errno::EBADF.get())
            );
            let dir = std::ptr::without_provenance_mut::<rustre_dir>(0x99);
            assert_eq!(rustre_closedir(dir), -Errno::EBADF.get());
        }
    }

    #[test]
    fn strings_are_checked() {
        let mut long = vec![b'a'; 5000];
        long.push(0);
        // SAFETY: NUL-terminated buffers.
        unsafe {
            assert_eq!(
                c_str(long.as_ptr().cast(), "p").unwrap_err().errno(),
                Errno::ENAMETOOLONG.get()
            );
            assert_eq!(c_str(c"/\xff".as_ptr(), "p").unwrap_err().errno(), Errno::EINVAL.get());
            assert_eq!(c_str(c"/ok".as_ptr(), "p").unwrap(), "/ok");
        }
    }

    #[test]
    fn panics_become_eio_and_errors_are_per_thread() {
        assert_eq!(guard("t", || panic!("boom")), -i64::from(Errno::EIO.get()));
        assert!(last_error().contains("boom"));
        std::thread::spawn(|| assert_eq!(last_error(), "")).join().unwrap();
        let mut small = [0 as c_char; 4];
        // SAFETY: `small` is valid for 4 bytes of writes.
        let n = unsafe { rustre_last_error(small.as_mut_ptr(), small.len()) };
        assert!(n > 3);
        assert_eq!(small[3], 0);
    }

    #[test]
    fn strerror_names_the_errno() {
        // SAFETY: rustre_strerror returns a static NUL-terminated string.
        let s = |e| unsafe { CStr::from_ptr(rustre_strerror(e)) }.to_str().unwrap();
        assert!(s(-2).starts_with("ENOENT"));
        assert!(s(17).starts_with("EEXIST"));
        assert_eq!(s(0), "success");
        assert_eq!(s(99999), "unknown error");
        assert_eq!(s(i32::MIN), "unknown error");
    }
}
