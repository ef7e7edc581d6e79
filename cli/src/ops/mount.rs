//! `rustre mount`: the file system through FUSE. Every call goes to librustre: names and
//! attributes to the MDS, reads and writes (as large as the kernel sends them) to the striping
//! engine. The kernel keeps attributes and entries for one second at most.
//!
//! Inode numbers are the fids' inode numbers (the root is 1). The mount remembers, for each
//! inode the kernel knows, its parent and name, from which it rebuilds the path librustre walks.

use super::{OpsError, out_err};
use clap::Args;
use fuser::{
    Config, Errno, FileAttr as FuseAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, MountOption, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rustre::{AttrChanges, Client, ClientError, Fd, Fid, FileAttr, FileKind, OpenFlags};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Arguments of `rustre mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Client configuration file (or MDS addresses separated by commas).
    pub config: String,
    /// Directory to mount on.
    pub mountpoint: PathBuf,
    /// Stay in the foreground (the default too; kept for the habit of FUSE tools).
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Threads serving kernel requests.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub threads: usize,
}

const TTL: Duration = Duration::from_secs(1);
/// Largest read or write the kernel sends (FUSE's limit is 256 pages at most on most kernels).
const MAX_WRITE: u32 = 1 << 20;

struct Node {
    fid: Fid,
    parent: u64,
    name: Vec<u8>,
    /// Lookups the kernel holds (it forgets them with `forget`; at zero the node goes).
    lookups: u64,
}

/// The FUSE file system over one librustre client.
pub struct RustreFs {
    client: Client,
    nodes: Mutex<HashMap<u64, Node>>,
    /// Open files: FUSE handle → librustre descriptor and inode.
    open: Mutex<HashMap<u64, (Fd, u64)>>,
    /// Open directories: FUSE handle → the listing taken at opendir (offsets index into it).
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_dir: AtomicU64,
}

/// A directory listing: inode, type and name of `.`, `..` and every entry.
type Listing = Vec<(u64, FileType, Vec<u8>)>;

/// Directories open at once through the mount (each holds its listing).
const MAX_OPEN_DIRS: usize = 4096;
/// Directory handles are numbered from here, apart from file handles (librustre descriptors).
const FIRST_DIR_HANDLE: u64 = 1 << 40;

fn errno(e: &ClientError) -> Errno {
    Errno::from_i32(e.errno())
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    } else {
        UNIX_EPOCH
    }
}

fn time_ns(t: TimeOrNow) -> i64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn fuse_kind(k: FileKind) -> FileType {
    match k {
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

fn fuse_attr(a: &FileAttr) -> FuseAttr {
    FuseAttr {
        ino: INodeNo(a.fid.ino),
        size: a.size,
        blocks: if a.blocks > 0 { a.blocks } else { a.size.div_ceil(512) },
        atime: time(a.atime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.ctime_ns),
        kind: fuse_kind(a.kind),
        perm: u16::try_from(a.perm & 0o7777).unwrap_or(0o644),
        nlink: a.nlink.max(1),
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

impl RustreFs {
    /// A file system over `client`.
    pub fn new(client: Client) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                fid: Fid::ROOT,
                parent: 1,
                name: Vec::new(),
                lookups: 1,
            },
        );
        RustreFs {
            client,
            nodes: Mutex::new(nodes),
            open: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_dir: AtomicU64::new(FIRST_DIR_HANDLE),
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Node>> {
        self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open_files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Fd, u64)>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The path of inode `ino`, from the names the kernel looked up.
    fn path(&self, ino: u64) -> Result<String, Errno> {
        let nodes = self.nodes();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == 1 {
                let mut p = Vec::new();
                for c in parts.iter().rev() {
                    p.push(b'/');
                    p.extend_from_slice(c);
                }
                if p.is_empty() {
                    p.push(b'/');
                }
                return String::from_utf8(p).map_err(|_| Errno::EINVAL);
            }
            let n = nodes.get(&cur).ok_or(Errno::ESTALE)?;
            parts.push(&n.name);
            cur = n.parent;
        }
        Err(Errno::ELOOP)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<String, Errno> {
        let p = self.path(parent)?;
        let n = std::str::from_utf8(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        Ok(if p == "/" { format!("/{n}") } else { format!("{p}/{n}") })
    }

    /// Records a lookup the kernel now holds (the reply of lookup, create, mkdir, symlink).
    fn remember(&self, parent: u64, name: &OsStr, attr: &FileAttr) {
        let mut nodes = self.nodes();
        let n = nodes.entry(attr.fid.ino).or_insert_with(|| Node {
            fid: attr.fid,
            parent,
            name: Vec::new(),
            lookups: 0,
        });
        // Another client may have renamed it: the latest name is the one to walk.
        n.fid = attr.fid;
        n.parent = parent;
        n.name = name.as_bytes().to_vec();
        n.lookups += 1;
    }

    fn fid(&self, ino: u64) -> Result<Fid, Errno> {
        self.nodes().get(&ino).map(|n| n.fid).ok_or(Errno::ESTALE)
    }

    /// Attributes of `ino`; through an open descriptor when there is one (its size includes
    /// writes not yet reported to the MDS).
    fn attr(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let fd = {
            let open = self.open_files();
            fh.and_then(|h| open.get(&h).map(|(fd, _)| *fd))
                .or_else(|| open.values().find(|(_, i)| *i == ino).map(|(fd, _)| *fd))
        };
        if let Some(fd) = fd
            && let Ok(a) = self.client.fstat(fd)
        {
            return Ok(a);
        }
        self.client.getattr_fid(self.fid(ino)?).map_err(|e| errno(&e))
    }

    fn new_handle(&self, fd: Fd, ino: u64) -> u64 {
        let h = u64::from(fd.0.unsigned_abs());
        self.open_files().insert(h, (fd, ino));
        h
    }

    fn dir_handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Listing>>> {
        self.dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entries of directory `ino`, with `.` and `..` first.
    fn listing(&self, ino: u64) -> Result<Listing, Errno> {
        let path = self.path(ino)?;
        let entries = self.client.read_dir_all(&path).map_err(|e| errno(&e))?;
        let parent = self.nodes().get(&ino).map_or(1, |n| n.parent);
        let mut all: Listing = vec![
            (ino, FileType::Directory, b".".to_vec()),
            (parent, FileType::Directory, b"..".to_vec()),
        ];
        all.extend(
            entries
                .into_iter()
                .filter(|e| e.name != b"." && e.name != b"..")
                .map(|e| (e.fid.ino, fuse_kind(e.kind), e.name)),
        );
        Ok(all)
    }

    fn fd(&self, fh: FileHandle) -> Result<Fd, Errno> {
        self.open_files().get(&fh.0).map(|(fd, _)| *fd).ok_or(Errno::EBADF)
    }
}

impl Filesystem for RustreFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn destroy(&mut self) {
        for (_, (fd, _)) in self.open_files().drain() {
            let _ = self.client.close(fd);
        }
        self.client.disconnect();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self
            .child(parent.0, name)
            .and_then(|p| self.client.lstat(&p).map_err(|e| errno(&e)));
        match r {
            Ok(a) => {
                self.remember(parent.0, name, &a);
                reply.entry(&TTL, &fuse_attr(&a), Generation(u64::from(a.fid.generation)));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == 1 {
            return;
        }
        // The kernel drops a child's entry before its parent's, so no remembered path loses a
        // component here.
        let mut nodes = self.nodes();
        if let Some(n) = nodes.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            if n.lookups == 0 {
                nodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0, fh.map(|h| h.0)) {
            Ok(a) => reply.attr(&TTL, &fuse_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| {
            if let Some(size) = size {
                let fd = fh.and_then(|h| self.fd(h).ok());
                match fd {
                    Some(fd) => self.client.ftruncate(fd, size),
                    None => self.client.truncate(&self.path(ino.0)?, size),
                }
                .map_err(|e| errno(&e))?;
            }
            let changes = AttrChanges {
                mode,
                uid,
                gid,
                atime_ns: atime.map(time_ns),
                mtime_ns: mtime.map(time_ns),
            };
            if changes != AttrChanges::default() {
                self.client
                    .setattr_fid(self.fid(ino.0)?, &changes)
                    .map_err(|e| errno(&e))?;
            }
            self.attr(ino.0, fh.map(|h| h.0))
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &fuse_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self
            .fid(ino.0)
            .and_then(|f| self.client.readlink_fid(f).map_err(|e| errno(&e)));
        match r {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let r = self
            .child(parent.0, name)
            .and_then(|p| self.client.mkdir(&p, mode & !umask, None).map_err(|e| errno(&e)));
        match r {
            Ok(a) => {
                self.remember(parent.0, name, &a);
                reply.entry(&TTL, &fuse_attr(&a), Generation(u64::from(a.fid.generation)));
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .child(parent.0, name)
            .and_then(|p| self.client.unlink(&p).map_err(|e| errno(&e)))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .child(parent.0, name)
            .and_then(|p| self.client.rmdir(&p).map_err(|e| errno(&e)))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let r = (|| {
            let p = self.child(parent.0, link_name)?;
            let t = target.to_str().ok_or(Errno::EINVAL)?;
            self.client.symlink(t, &p).map_err(|e| errno(&e))
        })();
        match r {
            Ok(a) => {
                self.remember(parent.0, link_name, &a);
                reply.entry(&TTL, &fuse_attr(&a), Generation(u64::from(a.fid.generation)));
            }
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            reply.error(Errno::EINVAL);
            return;
        }
        let r = (|| {
            let from = self.child(parent.0, name)?;
            let to = self.child(newparent.0, newname)?;
            let moved = self.client.lstat(&from).map_err(|e| errno(&e))?;
            self.client.rename(&from, &to).map_err(|e| errno(&e))?;
            let mut nodes = self.nodes();
            if let Some(n) = nodes.get_mut(&moved.fid.ino) {
                n.parent = newparent.0;
                n.name = newname.as_bytes().to_vec();
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let path = self.path(ino.0)?;
            // O_CREAT/O_EXCL are the kernel's business here; keep access mode, O_TRUNC, O_APPEND.
            let f = OpenFlags::from_posix(flags.0 & (libc::O_ACCMODE | libc::O_TRUNC | libc::O_APPEND))
                .map_err(|e| errno(&e))?;
            let fd = self.client.open(&path, f, 0, None).map_err(|e| errno(&e))?;
            Ok(self.new_handle(fd, ino.0))
        })();
        match r {
            Ok(h) => reply.opened(FileHandle(h), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let path = self.child(parent.0, name)?;
            let keep = libc::O_ACCMODE | libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL;
            let f = OpenFlags::from_posix(flags & keep).map_err(|e| errno(&e))?;
            let fd = self
                .client
                .open(&path, f, mode & !umask & 0o7777, None)
                .map_err(|e| errno(&e))?;
            let a = match self.client.fstat(fd) {
                Ok(a) => a,
                Err(e) => {
                    let _ = self.client.close(fd);
                    return Err(errno(&e));
                }
            };
            self.remember(parent.0, name, &a);
            Ok((self.new_handle(fd, a.fid.ino), a))
        })();
        match r {
            Ok((h, a)) => reply.created(
                &TTL,
                &fuse_attr(&a),
                Generation(u64::from(a.fid.generation)),
                FileHandle(h),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let r = (|| {
            let fd = self.fd(fh)?;
            let mut buf = vec![0u8; size.min(MAX_WRITE * 4) as usize];
            let mut done = 0;
            // The striping engine returns short only at end of file; loop for safety.
            while done < buf.len() {
                let n = self
                    .client
                    .pread(fd, &mut buf[done..], offset + done as u64)
                    .map_err(|e| errno(&e))?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            buf.truncate(done);
            Ok(buf)
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self
            .fd(fh)
            .and_then(|fd| self.client.pwrite(fd, data, offset).map_err(|e| errno(&e)));
        match r {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: fuser::LockOwner, reply: ReplyEmpty) {
        // Writes are on the OSTs when they return: nothing is buffered here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fd = self.open_files().remove(&fh.0).map(|(fd, _)| fd);
        match fd.map(|fd| self.client.close(fd)) {
            None | Some(Ok(())) => reply.ok(),
            Some(Err(e)) => reply.error(errno(&e)),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.fd(fh).and_then(|fd| self.client.fsync(fd).map_err(|e| errno(&e))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        if self.dir_handles().len() >= MAX_OPEN_DIRS {
            reply.error(Errno::EMFILE);
            return;
        }
        match self.listing(ino.0) {
            Ok(l) => {
                let h = self.next_dir.fetch_add(1, Ordering::Relaxed);
                self.dir_handles().insert(h, Arc::new(l));
                reply.opened(FileHandle(h), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listing = match self.dir_handles().get(&fh.0).cloned() {
            Some(l) => l,
            None => match self.listing(ino.0) {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    reply.error(e);
                    return;
                }
            },
        };
        for (i, (ino, kind, name)) in listing
            .iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: fuser::OpenFlags, reply: ReplyEmpty) {
        self.dir_handles().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BSIZE: u64 = 4096;
        match self.client.statfs() {
            Ok(s) => reply.statfs(
                s.total_bytes / BSIZE,
                s.free_bytes / BSIZE,
                s.avail_bytes / BSIZE,
                s.total_inodes,
                s.free_inodes,
                BSIZE as u32,
                s.max_name_len,
                BSIZE as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts), so that they can be
/// waited for with `sigtimedwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t; the signal numbers are valid and
    // pthread_sigmask only changes this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// Waits up to `timeout` for one of the signals in `set`; returns it.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(1),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos().min(999_999_999) as i32),
    };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer is allowed.
    let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

/// `mount`: connects, mounts, serves until a signal or an external `umount`, then unmounts.
pub fn mount(a: &MountArgs) -> Result<u8, OpsError> {
    let err = |reason: String| OpsError::Mount {
        mountpoint: a.mountpoint.clone(),
        reason,
    };
    let md = std::fs::metadata(&a.mountpoint).map_err(|e| err(e.to_string()))?;
    if !md.is_dir() {
        return Err(err("not a directory".into()));
    }
    if !(1..=64).contains(&a.threads) {
        return Err(OpsError::usage("--threads", format!("{}: use 1..=64", a.threads)));
    }
    let client = Client::connect_spec(&a.config).map_err(|source| OpsError::Connect {
        config: a.config.clone(),
        source: Box::new(source),
    })?;
    let fsname = client.fsname().to_string();
    let set = block_signals();
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(format!("rustre:{fsname}")),
        MountOption::Subtype("rustre".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    cfg.n_threads = Some(a.threads);
    let session = fuser::spawn_mount(RustreFs::new(client), &a.mountpoint, &cfg).map_err(|e| err(e.to_string()))?;
    println!("rustre: {fsname} mounted on {}", a.mountpoint.display());
    let mut out = std::io::stdout();
    std::io::Write::flush(&mut out).map_err(out_err)?;
    loop {
        if session.guard.is_finished() {
            // Unmounted from outside (`umount`, `fusermount3 -u`).
            return match session.join() {
                Ok(()) => Ok(0),
                Err(e) => Err(err(e.to_string())),
            };
        }
        if let Some(sig) = wait_signal(&set, Duration::from_millis(200)) {
            eprintln!("rustre: signal {sig}: unmounting {}", a.mountpoint.display());
            return session.umount_and_join().map(|()| 0).map_err(|e| err(e.to_string()));
        }
    }
}
