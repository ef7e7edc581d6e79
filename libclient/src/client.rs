//! The client: connection to the MDS (with failover over its address list), the OST map learnt
//! in the handshake, lazy per-OST connections, the namespace calls and the open-file table.
//!
//! Paths are walked component by component with `Lookup` from the root (no name cache: another
//! client may change the namespace at any time). `..` and `.` are resolved lexically, symbolic
//! links in the middle of a path (and at its end where POSIX follows them) are followed up to 40
//! times.

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::layout::{FileLayout, LayoutSpec, ObjectRef};
use crate::rpc::{Endpoint, Hello};
use crate::types::{AttrChanges, DirEntry, Fid, FileAttr, FileKind, OstSpace, StatFs, StripeInfo};
use parking_lot::Mutex;
use rustre_fabric::{Address, ConnOptions};
use rustre_proto::request::mds::MAX_LOOKUP_NAMES;
use rustre_proto::{Errno, Opcode, pb};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Longest path accepted.
pub const PATH_MAX: usize = 4096;
/// Longest name accepted.
pub const NAME_MAX: usize = 255;
/// Symbolic links followed in one path walk.
const MAX_SYMLINKS: u32 = 40;
/// Lowest file descriptor handed out (0..2 look like stdio to C callers).
const FIRST_FD: i32 = 3;

/// How to open a file (the POSIX `open(2)` flags that matter here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Create when absent (`O_CREAT`).
    pub create: bool,
    /// With `create`, fail when present (`O_EXCL`).
    pub excl: bool,
    /// Truncate to zero (`O_TRUNC`).
    pub trunc: bool,
    /// Every write appends (`O_APPEND`): its offset is the file size the objects hold just
    /// before it (a glimpse of every object). Not atomic against appenders in other clients:
    /// elsewhere: two clients' appends that glimpse before either lands write at the same offset
    /// (appends of one client, from any thread or handle, take turns and never overlap).
    pub append: bool,
}

impl OpenFlags {
    /// From Linux `open(2)` flag values; unknown bits are an error.
    pub fn from_posix(flags: i32) -> Result<OpenFlags> {
        const ACC: i32 = 0o3;
        const CREAT: i32 = 0o100;
        const EXCL: i32 = 0o200;
        const NOCTTY: i32 = 0o400;
        const TRUNC: i32 = 0o1000;
        const APPEND: i32 = 0o2000;
        const LARGEFILE: i32 = 0o100000;
        const CLOEXEC: i32 = 0o2000000;
        let known = ACC | CREAT | EXCL | NOCTTY | TRUNC | APPEND | LARGEFILE | CLOEXEC;
        if flags & !known != 0 {
            return Err(ClientError::Invalid(format!(
                "unsupported open flags {:#o}",
                flags & !known
            )));
        }
        let (read, write) = match flags & ACC {
            0 => (true, false),
            1 => (false, true),
            2 => (true, true),
            _ => return Err(ClientError::Invalid("open flags: bad access mode 3".into())),
        };
        Ok(OpenFlags {
            read,
            write,
            create: flags & CREAT != 0,
            excl: flags & EXCL != 0,
            trunc: flags & TRUNC != 0,
            append: flags & APPEND != 0,
        })
    }

    fn to_pb(self) -> u32 {
        let mut f = 0;
        for (on, bit) in [
            (self.read, pb::OpenFlag::Read),
            (self.write, pb::OpenFlag::Write),
            (self.create, pb::OpenFlag::Create),
            (self.excl, pb::OpenFlag::Excl),
            (self.trunc, pb::OpenFlag::Trunc),
            (self.append, pb::OpenFlag::Append),
        ] {
            if on {
                f |= bit as u32;
            }
        }
        f
    }
}

/// A file descriptor of this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fd(pub i32);

/// An open regular file.
pub(crate) struct OpenFile {
    pub(crate) path: String,
    pub(crate) fid: Fid,
    pub(crate) handle: u64,
    pub(crate) layout: Option<FileLayout>,
    /// Capabilities for the layout's objects, in stripe order (empty when the MDS issues none).
    pub(crate) caps: Vec<pb::Capability>,
    pub(crate) flags: OpenFlags,
    pub(crate) written: AtomicBool,
    /// Largest file size this handle knows of (its writes and the object sizes their replies
    /// carried; a truncate by this client lowers it).
    pub(crate) size_seen: AtomicU64,
    /// The MDS's size when opened (or last truncated by this client).
    pub(crate) size_hint: AtomicU64,
    pub(crate) mtime_ns: AtomicU64,
    /// The first failure of a write through this handle that had already returned (module
    /// `behind`): errno and message, reported by the next pwrite, fsync and close.
    pub(crate) behind_error: Mutex<Option<(Errno, String)>>,
    /// Read-ahead's pattern and window of this handle (module `ahead`).
    pub(crate) ahead: Mutex<crate::ahead::Window>,
}

impl OpenFile {
    pub(crate) fn saw_size(&self, size: u64) {
        self.size_seen.fetch_max(size, Ordering::Relaxed);
    }

    pub(crate) fn cap(&self, stripe: usize) -> Option<pb::Capability> {
        self.caps.get(stripe).cloned()
    }

    /// Fails with the recorded failure of an earlier write-behind write, if any; `clear`
    /// forgets it once reported (fsync and close; a pwrite leaves it for them).
    pub(crate) fn behind_result(&self, clear: bool) -> Result<()> {
        let mut slot = self.behind_error.lock();
        let failure = if clear { slot.take() } else { slot.clone() };
        match failure {
            Some((errno, message)) => Err(ClientError::other(errno, message)),
            None => Ok(()),
        }
    }
}

/// A directory being read (`opendir`/`readdir`).
#[derive(Debug)]
pub struct DirStream {
    fid: Fid,
    cookie: u64,
    buffered: VecDeque<DirEntry>,
    eof: bool,
}

/// A connected client. Shared by threads (`&Client` is enough for every call).
pub struct Client {
    pub(crate) config: ClientConfig,
    fsname: String,
    client_id: u64,
    creds: pb::Credentials,
    mds: Endpoint,
    osts: HashMap<u32, Arc<Endpoint>>,
    default_layout: LayoutSpec,
    files: Mutex<HashMap<i32, Arc<OpenFile>>>,
    next_fd: Mutex<i32>,
    /// Bulk size of one OST RPC (config, capped by the servers' frame limit).
    pub(crate) max_rpc: u64,
    /// Threads striped reads and writes lend their pieces to (`max_io_threads` at most).
    pub(crate) pool: crate::pool::WorkerPool,
    /// Held by an `O_APPEND` write from its size glimpse until its data is acknowledged.
    pub(crate) append_lock: Mutex<()>,
    /// Writes returned to their callers and not yet acknowledged (module `behind`).
    pub(crate) behind: Arc<crate::behind::WriteBehind>,
    /// Records read ahead of strided reads (module `ahead`).
    pub(crate) ahead: Arc<crate::ahead::ReadAhead>,
}

fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() | 1
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Splits a path into its components, checking lengths and NULs. `.`/empty components vanish,
/// `..` stays (the walk resolves it).
fn components(path: &str) -> Result<Vec<String>> {
    if path.is_empty() {
        return Err(ClientError::NotFound("(empty path)".into()));
    }
    if path.len() > PATH_MAX {
        return Err(ClientError::other(
            Errno::ENAMETOOLONG,
            format!("path of {} bytes", path.len()),
        ));
    }
    if path.contains('\0') {
        return Err(ClientError::Invalid(format!("path {path:?} contains NUL")));
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        if c.is_empty() || c == "." {
            continue;
        }
        if c.len() > NAME_MAX {
            return Err(ClientError::other(
                Errno::ENAMETOOLONG,
                format!("{path}: component of {} bytes", c.len()),
            ));
        }
        out.push(c.to_string());
    }
    Ok(out)
}

/// `path` as the MDS can resolve it within a request: its last name and the names before it
/// (the request's `walk`, from the root). `None` when the path ends in `..` or is the root,
/// holds `..` (resolved from where a symbolic link led, which the MDS does not follow), or has
/// more names than one request carries ([`MAX_LOOKUP_NAMES`]).
fn walk_of(path: &str) -> Result<Option<(String, Vec<Vec<u8>>)>> {
    let mut comps = components(path)?;
    Ok(match comps.pop() {
        Some(name) if name != ".." && comps.len() < MAX_LOOKUP_NAMES && !comps.iter().any(|c| c == "..") => {
            Some((name, comps.into_iter().map(String::into_bytes).collect()))
        }
        _ => None,
    })
}

/// The MDS refused a request's walk for a symbolic link on the way (`ELOOP` naming a walk
/// field): the client walks, following it, and sends the directory it found.
fn link_in_walk(e: &ClientError) -> bool {
    matches!(e, ClientError::Server { source, .. } if source.errno == Errno::ELOOP && source.field.ends_with("walk"))
}

impl Client {
    /// Connects with a config file path or an address string (see [`ClientConfig::from_spec`]).
    pub fn connect_spec(spec: &str) -> Result<Client> {
        Client::connect(ClientConfig::from_spec(spec)?)
    }

    /// Connects to the MDS, learns the cluster map. OSTs are connected on first use.
    pub fn connect(config: ClientConfig) -> Result<Client> {
        let client_id = random_id();
        let opts = ConnOptions {
            client_id,
            call_timeout: config.call_timeout(),
            connect_timeout: config.connect_timeout(),
            ..ConnOptions::default()
        };
        let node_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "client".into());
        let hello = Hello {
            cluster_name: config.fsname.clone().unwrap_or_default(),
            client_id,
            node_name,
            job_id: crate::rpc::job_id(),
            secret: config.secret.clone(),
        };
        let inflight = config.limits.max_inflight_per_ost;
        let config_threads = config.limits.max_io_threads as usize;
        let write_behind = config.limits.write_behind_bytes;
        let read_ahead = config.limits.read_ahead_bytes;
        let changes = Arc::new(crate::ahead::FileChanges::new());
        let mds = Endpoint::new("MDS".into(), config.mds.clone(), opts.clone(), hello.clone(), inflight);
        let (_, hs) = mds.conn()?;
        if let Some(want) = &config.fsname
            && !hs.cluster_name.is_empty()
            && &hs.cluster_name != want
        {
            mds.close();
            return Err(ClientError::Config {
                source_name: "fsname".into(),
                reason: format!("the MDS serves {:?}, not {want:?}", hs.cluster_name),
            });
        }
        let fsname = if hs.cluster_name.is_empty() {
            hello.cluster_name.clone()
        } else {
            hs.cluster_name.clone()
        };
        let hello = Hello {
            cluster_name: fsname.clone(),
            ..hello
        };
        let mut osts = HashMap::new();
        for t in &hs.osts {
            let addresses = t
                .addresses
                .iter()
                .map(|a| a.parse::<Address>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| ClientError::other(Errno::EPROTO, format!("cluster map: OST{}: {e}", t.index)))?;
            let ep = Endpoint::new(
                format!("OST{}", t.index),
                addresses,
                opts.clone(),
                hello.clone(),
                inflight,
            );
            osts.insert(t.index, Arc::new(ep));
        }
        let mut max_rpc = u64::from(config.limits.max_rpc_bytes);
        if hs.max_body > 0 {
            // Leave room for the request's own fields beside the bulk on stream fabrics.
            max_rpc = max_rpc.min(u64::from(hs.max_body).saturating_sub(64 * 1024).max(64 * 1024));
        }
        let default_layout = hs.default_layout.as_ref().map(LayoutSpec::from_pb).unwrap_or_default();
        let creds = pb::Credentials {
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            groups: Vec::new(),
        };
        Ok(Client {
            config,
            fsname,
            client_id,
            creds,
            mds,
            osts,
            default_layout,
            files: Mutex::new(HashMap::new()),
            next_fd: Mutex::new(FIRST_FD),
            max_rpc,
            pool: crate::pool::WorkerPool::new(config_threads),
            append_lock: Mutex::new(()),
            behind: Arc::new(crate::behind::WriteBehind::new(
                write_behind,
                inflight as usize,
                Arc::clone(&changes),
            )),
            ahead: Arc::new(crate::ahead::ReadAhead::new(read_ahead, changes)),
        })
    }

    /// Write-behind's counters: write RPCs sent for writes that had returned, and the pieces
    /// of writes they carried.
    pub fn write_behind_stats(&self) -> crate::behind::WriteBehindStats {
        self.behind.stats()
    }

    /// The file system name.
    pub fn fsname(&self) -> &str {
        &self.fsname
    }

    /// This client's id (stamped in every request).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// OST indexes of the cluster map, sorted.
    pub fn ost_indexes(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.osts.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The file system's default layout as the MDS announced it.
    pub fn default_layout(&self) -> LayoutSpec {
        self.default_layout
    }

    /// Closes every open file (reporting sizes, best effort), then every connection.
    pub fn disconnect(&self) {
        self.behind.drain(None);
        let open: Vec<Arc<OpenFile>> = self.files.lock().drain().map(|(_, f)| f).collect();
        for f in open {
            if let Err(e) = f.behind_result(true) {
                tracing::warn!("{e}");
            }
            if let Err(e) = self.close_file(&f) {
                tracing::warn!("closing {} at disconnect: {e}", f.path);
            }
        }
        self.mds.close();
        for ep in self.osts.values() {
            ep.close();
        }
    }

    pub(crate) fn ost(&self, index: u32) -> Result<&Arc<Endpoint>> {
        self.osts
            .get(&index)
            .ok_or_else(|| ClientError::other(Errno::ENODEV, format!("OST{index} is not in the cluster map")))
    }

    fn creds(&self) -> Option<pb::Credentials> {
        Some(self.creds.clone())
    }

    pub(crate) fn mds_call<Req: prost::Message, Rep: prost::Message + Default + rustre_proto::limits::Bounded>(
        &self,
        op: Opcode,
        req: &Req,
    ) -> Result<Rep> {
        self.mds.call(op, req)
    }

    // ---- path walking ------------------------------------------------------------------------

    /// Looks `names` (at least one) up in one round trip, each in the directory the one before
    /// it found: their attributes, fewer than asked when the walk stopped after a symbolic link.
    fn lookup_names(&self, parent: Fid, names: &[String]) -> Result<Vec<FileAttr>> {
        let (first, more) = names
            .split_first()
            .ok_or_else(|| ClientError::Invalid("empty lookup".into()))?;
        let rep: pb::MdsLookupReply = self.mds_call(
            Opcode::MdsLookup,
            &pb::MdsLookupRequest {
                creds: self.creds(),
                parent: Some(parent.to_pb()),
                name: first.as_bytes().to_vec(),
                more: more.iter().map(|n| n.as_bytes().to_vec()).collect(),
            },
        )?;
        if rep.more.len() > more.len() {
            return Err(ClientError::other(
                Errno::EPROTO,
                format!("lookup of {} names answered with {}", names.len(), 1 + rep.more.len()),
            ));
        }
        std::iter::once(rep.attr.as_ref())
            .chain(rep.more.iter().map(Some))
            .map(FileAttr::from_pb)
            .collect()
    }

    /// Attributes of `fid`.
    pub fn getattr_fid(&self, fid: Fid) -> Result<FileAttr> {
        let rep: pb::MdsGetattrReply = self.mds_call(
            Opcode::MdsGetattr,
            &pb::MdsGetattrRequest {
                creds: self.creds(),
                fid: Some(fid.to_pb()),
            },
        )?;
        FileAttr::from_pb(rep.attr.as_ref())
    }

    /// The target of the symbolic link `fid`.
    pub fn readlink_fid(&self, fid: Fid) -> Result<String> {
        let rep: pb::MdsReadlinkReply = self.mds_call(
            Opcode::MdsReadlink,
            &pb::MdsReadlinkRequest {
                creds: self.creds(),
                fid: Some(fid.to_pb()),
            },
        )?;
        String::from_utf8(rep.target).map_err(|_| ClientError::other(Errno::EPROTO, "symlink target is not UTF-8"))
    }

    /// Walks `comps` from the root. Returns the fid chain's last element's attributes (`None` for
    /// the root itself, whose attributes the caller fetches if it needs them).
    fn walk(&self, path: &str, comps: Vec<String>, follow_last: bool) -> Result<Option<FileAttr>> {
        let mut pending: VecDeque<String> = comps.into();
        let mut stack: Vec<FileAttr> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.front() {
            if name == ".." {
                pending.pop_front();
                stack.pop();
                continue;
            }
            let parent = match stack.last() {
                None => Fid::ROOT,
                Some(a) if a.kind == FileKind::Directory => a.fid,
                Some(_) => return Err(ClientError::NotDir(path.to_string())),
            };
            // The names up to the next `..` go in one round trip.
            let names: Vec<String> = pending
                .iter()
                .take_while(|n| *n != "..")
                .take(MAX_LOOKUP_NAMES)
                .cloned()
                .collect();
            let mut attrs = match self.lookup_names(parent, &names) {
                Ok(a) => a,
                Err(e) if e.errno() == Errno::ENOENT.get() => return Err(ClientError::NotFound(path.to_string())),
                Err(e) if e.errno() == Errno::ENOTDIR.get() => return Err(ClientError::NotDir(path.to_string())),
                Err(e) => return Err(e),
            };
            // The MDS stops after a link; what follows it is resolved from the link's target.
            if let Some(i) = attrs.iter().position(|a| a.kind == FileKind::Symlink) {
                attrs.truncate(i + 1);
            }
            pending.drain(..attrs.len());
            for attr in attrs {
                if attr.kind == FileKind::Symlink && (follow_last || !pending.is_empty()) {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(ClientError::other(
                            Errno::ELOOP,
                            format!("{path}: too many symbolic links"),
                        ));
                    }
                    let target = self.readlink_fid(attr.fid)?;
                    if target.starts_with('/') {
                        stack.clear();
                    }
                    for c in components(&target)?.into_iter().rev() {
                        pending.push_front(c);
                    }
                    break;
                }
                stack.push(attr);
            }
        }
        Ok(stack.pop())
    }

    /// Attributes of `path` (symbolic links followed). While the file is open for writing
    /// anywhere, the size is the larger of the MDS's (recorded at close) and the one the objects
    /// hold now, as [`Client::fstat`] reports it.
    pub fn stat(&self, path: &str) -> Result<FileAttr> {
        self.behind.drain(None);
        match self.walk(path, components(path)?, true)? {
            Some(a) => self.current_size(path, a),
            None => self.getattr_fid(Fid::ROOT),
        }
    }

    /// Brings `attr.size` up to date for a file some handle has open for writing: the objects
    /// are glimpsed. Capabilities come with an open, so when the OSTs refuse a glimpse without
    /// one (a cluster with a secret), the file is opened read-only for it; a file this caller
    /// may not read keeps the size recorded at close.
    fn current_size(&self, path: &str, mut attr: FileAttr) -> Result<FileAttr> {
        let Some(layout) = attr.layout.as_ref().filter(|_| attr.open_for_write) else {
            return Ok(attr);
        };
        let size = match self.glimpse_layout(layout, &[]) {
            Err(e) if e.errno() == Errno::EACCES.get() => {
                let read = OpenFlags {
                    read: true,
                    ..OpenFlags::default()
                };
                match self.open(path, read, 0, None) {
                    Ok(fd) => {
                        let s = self.file(fd).and_then(|f| self.glimpse(&f));
                        let c = self.close(fd);
                        let s = s?;
                        c?;
                        s
                    }
                    Err(e) if e.errno() == Errno::EACCES.get() => 0,
                    Err(e) => return Err(e),
                }
            }
            r => r?,
        };
        attr.size = attr.size.max(size);
        attr.blocks = attr.blocks.max(attr.size.div_ceil(512));
        Ok(attr)
    }

    /// Attributes of `path` itself (a final symbolic link is not followed).
    pub fn lstat(&self, path: &str) -> Result<FileAttr> {
        match self.walk(path, components(path)?, false)? {
            Some(a) => self.current_size(path, a),
            None => self.getattr_fid(Fid::ROOT),
        }
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent_of(&self, path: &str) -> Result<(Fid, String)> {
        let mut comps = components(path)?;
        let name = comps
            .pop()
            .ok_or_else(|| ClientError::other(Errno::EBUSY, format!("{path}: is the root")))?;
        if name == ".." {
            return Err(ClientError::Invalid(format!("{path}: ends in ..")));
        }
        let fid = match self.walk(path, comps, true)? {
            None => Fid::ROOT,
            Some(a) if a.kind == FileKind::Directory => a.fid,
            Some(_) => return Err(ClientError::NotDir(path.to_string())),
        };
        Ok((fid, name))
    }

    /// [`walk_of`] `path`, when the MDS resolves request walks (it says so in its handshake:
    /// an older one would ignore them and act in the root); `None` otherwise.
    fn as_walk(&self, path: &str) -> Result<Option<(String, Vec<Vec<u8>>)>> {
        let walk = walk_of(path)?;
        Ok(walk.filter(|_| self.mds.has(pb::ServerFeature::PathWalks)))
    }

    /// Runs `call(parent, name, walk)` for the entry `path` names. A path without `..` and of
    /// at most 32 names goes as it is: `walk` holds the names from the root to the entry's
    /// directory, and the MDS resolves them in the same round trip. Otherwise, and when the
    /// MDS met a symbolic link on the way (`ELOOP` on the request's `walk` field), the client
    /// walks to the directory first ([`Client::parent_of`]) and calls with it.
    fn at_parent<T>(&self, path: &str, call: impl Fn(Fid, String, Vec<Vec<u8>>) -> Result<T>) -> Result<T> {
        if let Some((name, walk)) = self.as_walk(path)? {
            match call(Fid::ROOT, name, walk) {
                Err(e) if link_in_walk(&e) => {}
                r => return r,
            }
        }
        let (parent, name) = self.parent_of(path)?;
        call(parent, name, Vec::new())
    }

    fn named<T>(path: &str, r: Result<T>) -> Result<T> {
        r.map_err(|e| match e {
            ClientError::Server { ref source, .. } if source.errno == Errno::ENOENT => {
                ClientError::NotFound(path.to_string())
            }
            ClientError::Server { ref source, .. } if source.errno == Errno::ENOTDIR => {
                ClientError::NotDir(path.to_string())
            }
            ClientError::Server { ref source, .. } if source.errno == Errno::EISDIR => {
                ClientError::IsDir(path.to_string())
            }
            other => other,
        })
    }

    /// Where the symbolic link `path` leads, as a path: its target, from the link's directory
    /// when relative (the walk of the result resolves `..` from there, as the kernel does).
    fn through_link(&self, path: &str) -> Result<String> {
        let link = self.lstat(path)?;
        if link.kind != FileKind::Symlink {
            // Replaced since the MDS refused it: the caller tries again.
            return Ok(path.to_string());
        }
        let target = self.readlink_fid(link.fid)?;
        if target.starts_with('/') {
            return Ok(target);
        }
        let dir = path.trim_end_matches('/').rsplit_once('/').map_or("", |(d, _)| d);
        Ok(format!("{dir}/{target}"))
    }

    // ---- namespace ---------------------------------------------------------------------------

    /// Makes directory `path` with permission bits `mode`, optionally with a default layout for
    /// the files created in it.
    pub fn mkdir(&self, path: &str, mode: u32, layout: Option<&LayoutSpec>) -> Result<FileAttr> {
        let default_layout = layout.map(LayoutSpec::to_pb).transpose()?;
        let rep = self.at_parent(path, |parent, name, walk| {
            self.mds_call::<_, pb::MdsMkdirReply>(
                Opcode::MdsMkdir,
                &pb::MdsMkdirRequest {
                    creds: self.creds(),
                    parent: Some(parent.to_pb()),
                    name: name.into_bytes(),
                    mode: mode & 0o7777,
                    default_layout: default_layout.clone(),
                    walk,
                },
            )
        });
        FileAttr::from_pb(Self::named(path, rep)?.attr.as_ref())
    }

    /// Removes the empty directory `path`.
    pub fn rmdir(&self, path: &str) -> Result<()> {
        let rep = self.at_parent(path, |parent, name, walk| {
            self.mds_call::<_, pb::MdsRmdirReply>(
                Opcode::MdsRmdir,
                &pb::MdsRmdirRequest {
                    creds: self.creds(),
                    parent: Some(parent.to_pb()),
                    name: name.into_bytes(),
                    walk,
                },
            )
        });
        Self::named(path, rep).map(drop)
    }

    /// Removes the non-directory `path` (its objects are destroyed by the servers).
    pub fn unlink(&self, path: &str) -> Result<()> {
        self.behind.drain(None);
        let rep = self.at_parent(path, |parent, name, walk| {
            self.mds_call::<_, pb::MdsUnlinkReply>(
                Opcode::MdsUnlink,
                &pb::MdsUnlinkRequest {
                    creds: self.creds(),
                    parent: Some(parent.to_pb()),
                    name: name.into_bytes(),
                    walk,
                },
            )
        });
        Self::named(path, rep).map(drop)
    }

    /// Renames `from` to `to` (replacing `to` as POSIX allows). Both paths go to the MDS as
    /// walks in the one request when they can (as `open` sends its path); when either cannot,
    /// or the MDS met a symbolic link on either, the client walks to both directories first.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        type Side = (Fid, String, Vec<Vec<u8>>);
        let call = |(sp, sn, sw): Side, (dp, dn, dw): Side| -> Result<pb::MdsRenameReply> {
            self.mds_call(
                Opcode::MdsRename,
                &pb::MdsRenameRequest {
                    creds: self.creds(),
                    src_parent: Some(sp.to_pb()),
                    src_name: sn.into_bytes(),
                    dst_parent: Some(dp.to_pb()),
                    dst_name: dn.into_bytes(),
                    flags: 0,
                    src_walk: sw,
                    dst_walk: dw,
                },
            )
        };
        let walked = |path: &str| -> Result<Side> {
            let (parent, name) = self.parent_of(path)?;
            Ok((parent, name, Vec::new()))
        };
        let rep = match (self.as_walk(from)?, self.as_walk(to)?) {
            (Some((sn, sw)), Some((dn, dw))) => match call((Fid::ROOT, sn, sw), (Fid::ROOT, dn, dw)) {
                Err(e) if link_in_walk(&e) => call(walked(from)?, walked(to)?),
                r => r,
            },
            _ => call(walked(from)?, walked(to)?),
        };
        // A failure on the destination's way is the destination's.
        let at = match &rep {
            Err(ClientError::Server { source, .. }) if source.field.starts_with("rename.dst") => to,
            _ => from,
        };
        Self::named(at, rep).map(drop)
    }

    /// Makes a symbolic link `path` pointing at `target`.
    pub fn symlink(&self, target: &str, path: &str) -> Result<FileAttr> {
        let rep = self.at_parent(path, |parent, name, walk| {
            self.mds_call::<_, pb::MdsSymlinkReply>(
                Opcode::MdsSymlink,
                &pb::MdsSymlinkRequest {
                    creds: self.creds(),
                    parent: Some(parent.to_pb()),
                    name: name.into_bytes(),
                    target: target.as_bytes().to_vec(),
                    walk,
                },
            )
        });
        FileAttr::from_pb(Self::named(path, rep)?.attr.as_ref())
    }

    /// Opens directory `path` for reading.
    pub fn opendir(&self, path: &str) -> Result<DirStream> {
        let a = self.stat(path)?;
        if a.kind != FileKind::Directory {
            return Err(ClientError::NotDir(path.to_string()));
        }
        Ok(DirStream {
            fid: a.fid,
            cookie: 0,
            buffered: VecDeque::new(),
            eof: false,
        })
    }

    /// The next entry of `dir`, `None` at the end. Pages are fetched `readdir_page` at a time.
    pub fn readdir(&self, dir: &mut DirStream) -> Result<Option<DirEntry>> {
        while dir.buffered.is_empty() && !dir.eof {
            let rep: pb::MdsReaddirReply = self.mds_call(
                Opcode::MdsReaddir,
                &pb::MdsReaddirRequest {
                    creds: self.creds(),
                    dir: Some(dir.fid.to_pb()),
                    cookie: dir.cookie,
                    max_entries: self.config.limits.readdir_page,
                },
            )?;
            if rep.entries.len() > self.config.limits.readdir_page as usize {
                return Err(ClientError::other(
                    Errno::EPROTO,
                    "readdir reply longer than the page asked for",
                ));
            }
            if rep.entries.is_empty() && !rep.eof && rep.next_cookie == dir.cookie {
                return Err(ClientError::other(Errno::EPROTO, "readdir made no progress"));
            }
            for e in rep.entries {
                dir.buffered.push_back(DirEntry {
                    name: e.name,
                    fid: Fid::from_pb(e.fid.as_ref())?,
                    kind: FileKind::from_pb(e.kind)?,
                });
            }
            dir.cookie = rep.next_cookie;
            dir.eof = rep.eof;
        }
        Ok(dir.buffered.pop_front())
    }

    /// Every entry of directory `path`.
    pub fn read_dir_all(&self, path: &str) -> Result<Vec<DirEntry>> {
        let mut d = self.opendir(path)?;
        let mut out = Vec::new();
        while let Some(e) = self.readdir(&mut d)? {
            out.push(e);
        }
        Ok(out)
    }

    /// Sets the default layout of a directory, or the layout of a file without data.
    pub fn setstripe(&self, path: &str, spec: &LayoutSpec) -> Result<()> {
        let a = self.stat(path)?;
        let _: pb::MdsSetstripeReply = self.mds_call(
            Opcode::MdsSetstripe,
            &pb::MdsSetstripeRequest {
                creds: self.creds(),
                fid: Some(a.fid.to_pb()),
                layout: Some(spec.to_pb()?),
            },
        )?;
        Ok(())
    }

    /// The layout of `path` (a file's, or a directory's default).
    pub fn getstripe(&self, path: &str) -> Result<StripeInfo> {
        let a = self.stat(path)?;
        let rep: pb::MdsGetstripeReply = self.mds_call(
            Opcode::MdsGetstripe,
            &pb::MdsGetstripeRequest {
                creds: self.creds(),
                fid: Some(a.fid.to_pb()),
            },
        )?;
        let l = rep.layout.unwrap_or_default();
        Ok(StripeInfo {
            spec: LayoutSpec::from_pb(&l),
            objects: l
                .objects
                .iter()
                .map(|o| ObjectRef {
                    ost: o.ost_index,
                    id: o.object_id,
                })
                .collect(),
            inherited: rep.inherited,
        })
    }

    /// File system figures.
    pub fn statfs(&self) -> Result<StatFs> {
        let r: pb::MdsStatfsReply = self.mds_call(Opcode::MdsStatfs, &pb::MdsStatfsRequest { creds: self.creds() })?;
        Ok(StatFs {
            fsname: r.fsname,
            total_bytes: r.total_bytes,
            free_bytes: r.free_bytes,
            avail_bytes: r.avail_bytes,
            total_inodes: r.total_inodes,
            free_inodes: r.free_inodes,
            max_name_len: r.max_name_len,
            ost_count: u32::try_from(r.osts.len()).unwrap_or(u32::MAX),
        })
    }

    /// Per-OST space as the MDS last heard it, by index.
    pub fn statfs_osts(&self) -> Result<Vec<OstSpace>> {
        let r: pb::MdsStatfsReply = self.mds_call(Opcode::MdsStatfs, &pb::MdsStatfsRequest { creds: self.creds() })?;
        let mut v: Vec<OstSpace> = r
            .osts
            .iter()
            .map(|o| OstSpace {
                index: o.index,
                total_bytes: o.total_bytes,
                free_bytes: o.free_bytes,
                objects: o.objects,
                available: o.available,
            })
            .collect();
        v.sort_by_key(|o| o.index);
        Ok(v)
    }

    /// Changes mode, owner or times of `fid` (`chmod`, `chown`, `utimensat`).
    pub fn setattr_fid(&self, fid: Fid, changes: &AttrChanges) -> Result<FileAttr> {
        let rep: pb::MdsSetattrReply = self.mds_call(
            Opcode::MdsSetattr,
            &pb::MdsSetattrRequest {
                creds: self.creds(),
                fid: Some(fid.to_pb()),
                mode: changes.mode.map(|m| m & 0o7777),
                uid: changes.uid,
                gid: changes.gid,
                size: None,
                atime_ns: changes.atime_ns,
                mtime_ns: changes.mtime_ns,
            },
        )?;
        FileAttr::from_pb(rep.attr.as_ref())
    }

    // ---- open files --------------------------------------------------------------------------

    /// Opens (and with `create`, creates) the regular file `path`. `layout` applies to a file this
    /// call creates (`None`: inherit the directory's default).
    pub fn open(&self, path: &str, flags: OpenFlags, mode: u32, layout: Option<&LayoutSpec>) -> Result<Fd> {
        if self.files.lock().len() >= self.config.limits.max_open_files as usize {
            return Err(ClientError::other(
                Errno::try_from(24).unwrap_or(Errno::ENOMEM),
                format!(
                    "{} files open (client.max_open_files)",
                    self.config.limits.max_open_files
                ),
            ));
        }
        if components(path)?.is_empty() {
            return Err(ClientError::IsDir(path.to_string()));
        }
        let layout = layout.map(LayoutSpec::to_pb).transpose()?;
        let create = |path: &str| {
            self.at_parent(path, |parent, name, walk| {
                self.mds_call::<_, pb::MdsCreateReply>(
                    Opcode::MdsCreate,
                    &pb::MdsCreateRequest {
                        creds: self.creds(),
                        parent: Some(parent.to_pb()),
                        name: name.into_bytes(),
                        walk,
                        mode: mode & 0o7777,
                        flags: flags.to_pb(),
                        layout: layout.clone(),
                    },
                )
            })
        };
        // The MDS opens no symbolic link (`ELOOP` on the request itself, as `O_NOFOLLOW`); a
        // final link is followed here, as open(2) does: an existing target is opened, a missing
        // one created with `create` (`create` with `excl` already failed `EEXIST` on the link).
        let mut at = path.to_string();
        let mut links = 0;
        let rep = loop {
            match create(&at) {
                Err(ClientError::Server { ref source, .. })
                    if source.errno == Errno::ELOOP && source.field.is_empty() && links < MAX_SYMLINKS =>
                {
                    links += 1;
                    at = self.through_link(&at)?;
                }
                r => break r,
            }
        };
        let rep = Self::named(path, rep)?;
        let attr = FileAttr::from_pb(rep.attr.as_ref())?;
        let file = OpenFile {
            path: path.to_string(),
            fid: attr.fid,
            handle: rep.handle,
            layout: attr.layout.clone(),
            caps: rep.capabilities,
            flags,
            written: AtomicBool::new(false),
            size_seen: AtomicU64::new(0),
            size_hint: AtomicU64::new(attr.size),
            mtime_ns: AtomicU64::new(0),
            behind_error: Mutex::new(None),
            ahead: Mutex::new(crate::ahead::Window::default()),
        };
        if attr.kind != FileKind::Regular {
            let _ = self.close_file(&file);
            return Err(ClientError::IsDir(path.to_string()));
        }
        if flags.trunc && !rep.created && flags.write {
            self.behind.drain(Some(file.fid));
            let _change = self.ahead.changes.changing(file.fid);
            if let Err(e) = self.punch_objects(&file, 0) {
                let _ = self.close_file(&file);
                return Err(e);
            }
            file.size_hint.store(0, Ordering::Relaxed);
        }
        let file = Arc::new(file);
        let mut files = self.files.lock();
        let mut next = self.next_fd.lock();
        let mut fd = *next;
        while files.contains_key(&fd) {
            fd = if fd == i32::MAX { FIRST_FD } else { fd + 1 };
        }
        *next = if fd == i32::MAX { FIRST_FD } else { fd + 1 };
        files.insert(fd, file);
        Ok(Fd(fd))
    }

    /// The open files now (a snapshot: the table is not held).
    pub(crate) fn open_files(&self) -> Vec<Arc<OpenFile>> {
        self.files.lock().values().cloned().collect()
    }

    pub(crate) fn file(&self, fd: Fd) -> Result<Arc<OpenFile>> {
        self.files
            .lock()
            .get(&fd.0)
            .cloned()
            .ok_or(ClientError::BadHandle(i64::from(fd.0)))
    }

    /// Closes `fd`; a handle that wrote reports the size it knows (size-on-close).
    pub fn close(&self, fd: Fd) -> Result<()> {
        let file = self
            .files
            .lock()
            .remove(&fd.0)
            .ok_or(ClientError::BadHandle(i64::from(fd.0)))?;
        self.behind.drain(Some(file.fid));
        file.ahead.lock().clear();
        // A lost write outranks a failed close in what the caller hears.
        let failed = file.behind_result(true);
        let closed = self.close_file(&file);
        failed.and(closed)
    }

    fn close_file(&self, file: &OpenFile) -> Result<()> {
        let wrote = file.written.load(Ordering::Relaxed);
        let mtime = file.mtime_ns.load(Ordering::Relaxed);
        let _: pb::MdsCloseReply = self.mds_call(
            Opcode::MdsClose,
            &pb::MdsCloseRequest {
                creds: self.creds(),
                handle: file.handle,
                fid: Some(file.fid.to_pb()),
                size: wrote.then(|| file.size_seen.load(Ordering::Relaxed)),
                mtime_ns: wrote.then(|| i64::try_from(mtime).unwrap_or(i64::MAX)),
                writer: file.flags.write,
            },
        )?;
        Ok(())
    }

    pub(crate) fn note_write(&self, file: &OpenFile, end: u64) {
        file.written.store(true, Ordering::Relaxed);
        file.saw_size(end);
        file.mtime_ns
            .store(u64::try_from(now_ns()).unwrap_or(0), Ordering::Relaxed);
    }

    /// Attributes of an open file; the size is the larger of the MDS's and the objects' (which
    /// includes writes not yet reported at close).
    pub fn fstat(&self, fd: Fd) -> Result<FileAttr> {
        let file = self.file(fd)?;
        self.behind.drain(Some(file.fid));
        let mut attr = self.getattr_fid(file.fid)?;
        if file.layout.is_some() {
            attr.size = attr.size.max(self.glimpse(&file)?);
        }
        Ok(attr)
    }

    /// Truncates (or extends) `path` to `size` bytes.
    pub fn truncate(&self, path: &str, size: u64) -> Result<()> {
        let fd = self.open(
            path,
            OpenFlags {
                write: true,
                ..Default::default()
            },
            0,
            None,
        )?;
        let r = self.ftruncate(fd, size);
        let c = self.close(fd);
        r.and(c)
    }

    /// Truncates (or extends) the open file `fd` to `size` bytes: each object is cut to its share,
    /// then the MDS records the size.
    pub fn ftruncate(&self, fd: Fd, size: u64) -> Result<()> {
        let file = self.file(fd)?;
        if !file.flags.write {
            return Err(ClientError::other(
                Errno::EBADF,
                format!("{}: not open for writing", file.path),
            ));
        }
        self.behind.drain(Some(file.fid));
        let _change = self.ahead.changes.changing(file.fid);
        self.punch_objects(&file, size)?;
        let _: pb::MdsSetattrReply = self.mds_call(
            Opcode::MdsSetattr,
            &pb::MdsSetattrRequest {
                creds: self.creds(),
                fid: Some(file.fid.to_pb()),
                size: Some(size),
                ..Default::default()
            },
        )?;
        // Every handle of the file here takes the new size as the MDS's and forgets sizes past
        // it (what they would otherwise read as zeros, and report at close).
        for f in self.files.lock().values().filter(|f| f.fid == file.fid) {
            f.size_seen.fetch_min(size, Ordering::Relaxed);
            f.size_hint.store(size, Ordering::Relaxed);
        }
        file.size_seen.store(size, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_flags() {
        let f = OpenFlags::from_posix(0o2 | 0o100 | 0o200).unwrap();
        assert!(f.read && f.write && f.create && f.excl && !f.trunc);
        assert_eq!(f.to_pb(), 8 | 16 | 1 | 2);
        let r = OpenFlags::from_posix(0).unwrap();
        assert!(r.read && !r.write);
        assert!(OpenFlags::from_posix(3).is_err());
        assert_eq!(OpenFlags::from_posix(0o40000000).unwrap_err().errno(), 22);
    }

    #[test]
    fn path_components() {
        assert_eq!(components("/a//b/./c/").unwrap(), ["a", "b", "c"]);
        assert_eq!(components("a/../b").unwrap(), ["a", "..", "b"]);
        assert!(components("/").unwrap().is_empty());
        assert_eq!(components("").unwrap_err().errno(), 2);
        assert_eq!(components(&"x".repeat(256)).unwrap_err().errno(), 36);
        assert_eq!(components(&"/x".repeat(2100)).unwrap_err().errno(), 36);
        assert_eq!(components("a\0b").unwrap_err().errno(), 22);
    }
}
