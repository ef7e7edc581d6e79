//! The POSIX operations: validate, choose, build the record, apply it.

use super::inode::{Attr, Body, Fid, Kind, MODE_BITS, S_ISGID};
use super::layout::{Layout, LayoutTemplate};
use super::perm::{Cred, MAY_EXEC, MAY_READ, MAY_WRITE, may, sticky_ok};
use super::record::WalRecord;
use super::{LINK_MAX, Namespace, Outcome, PATH_MAX, ROOT_FID, check_name};
use crate::errno::Errno;

/// `open(2)` flags the MDS interprets (Linux values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags(pub u32);

impl OpenFlags {
    /// Access mode mask.
    pub const ACCMODE: u32 = 0o3;
    /// Read only.
    pub const RDONLY: u32 = 0o0;
    /// Write only.
    pub const WRONLY: u32 = 0o1;
    /// Read and write.
    pub const RDWR: u32 = 0o2;
    /// Create if absent.
    pub const CREAT: u32 = 0o100;
    /// With CREAT: fail if present.
    pub const EXCL: u32 = 0o200;
    /// Truncate to zero.
    pub const TRUNC: u32 = 0o1000;
    /// Do not assign a layout yet (a setstripe follows), like Lustre's O_LOV_DELAY_CREATE.
    pub const DELAY_LAYOUT: u32 = 0o100000000;

    fn has(self, f: u32) -> bool {
        self.0 & f != 0
    }
    fn access_mask(self) -> u32 {
        match self.0 & Self::ACCMODE {
            Self::RDONLY => MAY_READ,
            Self::WRONLY => MAY_WRITE,
            _ => MAY_READ | MAY_WRITE,
        }
    }
}

/// Which attributes a setattr changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetattrRequest {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time (ns).
    pub atime: Option<i64>,
    /// New modification time (ns).
    pub mtime: Option<i64>,
}

/// A mutation that was applied: its record (to log) and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The redo record.
    pub record: WalRecord,
    /// The result.
    pub outcome: Outcome,
}

/// The result of an open/create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The file's fid.
    pub fid: Fid,
    /// True if this call created it.
    pub created: bool,
    /// The mutation, if any (create, or truncate on O_TRUNC).
    pub change: Option<Change>,
}

/// One readdir entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Name.
    pub name: String,
    /// Fid.
    pub fid: Fid,
    /// Kind.
    pub kind: Kind,
}

impl Namespace {
    fn commit(&mut self, record: WalRecord) -> Result<Change, Errno> {
        let outcome = self.apply(&record)?;
        Ok(Change { record, outcome })
    }

    /// Looks `parent` up as a directory the caller may search and (if `write`) modify.
    fn parent_for(&self, cred: &Cred, parent: Fid, write: bool) -> Result<(), Errno> {
        let p = self.inode(parent)?;
        if p.kind() != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        may(p, cred, if write { MAY_WRITE | MAY_EXEC } else { MAY_EXEC })
    }

    fn new_owner(&self, cred: &Cred, parent: Fid) -> Result<(u32, bool), Errno> {
        // BSD group semantics on a set-group-id directory.
        let p = self.inode(parent)?;
        Ok(if p.mode & S_ISGID != 0 {
            (p.gid, true)
        } else {
            (cred.gid, false)
        })
    }

    /// `lookup(parent, name)`: needs search permission on `parent`.
    pub fn lookup(&self, cred: &Cred, parent: Fid, name: &str) -> Result<Attr, Errno> {
        check_name(name)?;
        self.parent_for(cred, parent, false)?;
        let fid = self.dir(parent)?.get(name).ok_or(Errno::ENOENT)?;
        Ok(Attr::of(fid, self.inode(fid)?))
    }

    /// `getattr(fid)`.
    pub fn getattr(&self, fid: Fid) -> Result<Attr, Errno> {
        Ok(Attr::of(fid, self.inode(fid)?))
    }

    /// The layout of a file (`None` if it has none yet) or a directory's own default.
    pub fn getstripe(&self, fid: Fid) -> Result<(Option<Layout>, Option<LayoutTemplate>), Errno> {
        let ino = self.inode(fid)?;
        match &ino.body {
            Body::File(l) => Ok((l.as_deref().cloned(), None)),
            Body::Dir(d) => Ok((None, d.default_layout)),
            Body::Symlink(_) => Err(Errno::ENODATA),
        }
    }

    /// Resolves and allocates a layout from an explicit template or the inherited default.
    fn choose_layout(&mut self, parent: Fid, explicit: Option<LayoutTemplate>) -> Result<Layout, Errno> {
        let inherited = self.inherited_template(parent);
        let t = match explicit {
            Some(t) => t.inherit(inherited),
            None => inherited,
        };
        self.alloc.choose(&t)
    }

    /// `open(parent/name, flags, mode)` with O_CREAT/O_EXCL/O_TRUNC semantics. `layout` is an
    /// explicit layout for a new file. `Err(EAGAIN)`: no precreated objects right now; retry
    /// after a refill.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        cred: &Cred,
        time: i64,
        parent: Fid,
        name: &str,
        flags: OpenFlags,
        mode: u32,
        layout: Option<LayoutTemplate>,
    ) -> Result<Opened, Errno> {
        check_name(name)?;
        self.parent_for(cred, parent, false)?;
        if let Some(t) = &layout {
            t.validate().map_err(|_| Errno::EINVAL)?;
        }
        match self.dir(parent)?.get(name) {
            Some(fid) => {
                if flags.has(OpenFlags::CREAT) && flags.has(OpenFlags::EXCL) {
                    return Err(Errno::EEXIST);
                }
                let ino = self.inode(fid)?;
                match ino.kind() {
                    Kind::Dir if flags.access_mask() & MAY_WRITE != 0 || flags.has(OpenFlags::TRUNC) => {
                        return Err(Errno::EISDIR);
                    }
                    Kind::Symlink => return Err(Errno::ELOOP),
                    _ => {}
                }
                let mut mask = flags.access_mask();
                if flags.has(OpenFlags::TRUNC) {
                    mask |= MAY_WRITE;
                }
                may(ino, cred, mask)?;
                let change = if flags.has(OpenFlags::TRUNC) && ino.kind() == Kind::File {
                    Some(self.commit(WalRecord::Setattr {
                        fid,
                        mode: None,
                        uid: None,
                        gid: None,
                        size: Some(0),
                        atime: None,
                        mtime: Some(time),
                        ctime: time,
                    })?)
                } else {
                    None
                };
                Ok(Opened {
                    fid,
                    created: false,
                    change,
                })
            }
            None => {
                if !flags.has(OpenFlags::CREAT) {
                    return Err(Errno::ENOENT);
                }
                self.parent_for(cred, parent, true)?;
                let layout = if flags.has(OpenFlags::DELAY_LAYOUT) {
                    None
                } else {
                    Some(self.choose_layout(parent, layout)?)
                };
                let (gid, _) = self.new_owner(cred, parent)?;
                let fid = self.next_fid;
                let change = self.commit(WalRecord::Create {
                    parent,
                    name: name.into(),
                    fid,
                    mode: mode & MODE_BITS,
                    uid: cred.uid,
                    gid,
                    time,
                    layout,
                })?;
                Ok(Opened {
                    fid,
                    created: true,
                    change: Some(change),
                })
            }
        }
    }

    /// Size-on-close: a client that wrote the file reports its end of file and mtime. The file's
    /// size becomes the largest size any writer reported since the last truncate.
    pub fn close(&mut self, cred: &Cred, fid: Fid, size: u64, mtime: i64) -> Result<Change, Errno> {
        let ino = self.inode(fid)?;
        if ino.kind() != Kind::File {
            return Err(Errno::EISDIR);
        }
        if !cred.owns(ino) {
            may(ino, cred, MAY_WRITE)?;
        }
        self.commit(WalRecord::Close { fid, size, mtime })
    }

    /// `mkdir(parent/name, mode)`.
    pub fn mkdir(&mut self, cred: &Cred, time: i64, parent: Fid, name: &str, mode: u32) -> Result<Change, Errno> {
        check_name(name)?;
        self.parent_for(cred, parent, true)?;
        if self.dir(parent)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        if self.inode(parent)?.nlink >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        let (gid, sgid) = self.new_owner(cred, parent)?;
        let fid = self.next_fid;
        let mode = (mode & MODE_BITS) | if sgid { S_ISGID } else { 0 };
        self.commit(WalRecord::Mkdir {
            parent,
            name: name.into(),
            fid,
            mode,
            uid: cred.uid,
            gid,
            time,
        })
    }

    /// `symlink(target, parent/name)`.
    pub fn symlink(&mut self, cred: &Cred, time: i64, parent: Fid, name: &str, target: &str) -> Result<Change, Errno> {
        check_name(name)?;
        if target.is_empty() || target.contains('\0') {
            return Err(Errno::EINVAL);
        }
        if target.len() > PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.parent_for(cred, parent, true)?;
        if self.dir(parent)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let (gid, _) = self.new_owner(cred, parent)?;
        let fid = self.next_fid;
        self.commit(WalRecord::Symlink {
            parent,
            name: name.into(),
            fid,
            target: target.into(),
            uid: cred.uid,
            gid,
            time,
        })
    }

    /// `readlink(fid)`.
    pub fn readlink(&self, fid: Fid) -> Result<&str, Errno> {
        match &self.inode(fid)?.body {
            Body::Symlink(t) => Ok(t),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `link(fid, parent/name)`: not to directories.
    pub fn link(&mut self, cred: &Cred, time: i64, fid: Fid, parent: Fid, name: &str) -> Result<Change, Errno> {
        check_name(name)?;
        let ino = self.inode(fid)?;
        if ino.kind() == Kind::Dir {
            return Err(Errno::EPERM);
        }
        if ino.nlink >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        self.parent_for(cred, parent, true)?;
        if self.dir(parent)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        self.commit(WalRecord::Link {
            parent,
            name: name.into(),
            fid,
            time,
        })
    }

    /// `unlink(parent/name)` (`dir == false`) or `rmdir(parent/name)` (`dir == true`).
    pub fn remove(&mut self, cred: &Cred, time: i64, parent: Fid, name: &str, dir: bool) -> Result<Change, Errno> {
        check_name(name)?;
        self.parent_for(cred, parent, true)?;
        let fid = self.dir(parent)?.get(name).ok_or(Errno::ENOENT)?;
        let ino = self.inode(fid)?;
        match (dir, ino.kind()) {
            (false, Kind::Dir) => return Err(Errno::EISDIR),
            (true, Kind::Dir) => {
                if ino.dir().is_some_and(|d| !d.is_empty()) {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            (true, _) => return Err(Errno::ENOTDIR),
            (false, _) => {}
        }
        sticky_ok(self.inode(parent)?, ino, cred)?;
        self.commit(WalRecord::Unlink {
            parent,
            name: name.into(),
            time,
        })
    }

    /// `rename(src_parent/src_name, dst_parent/dst_name)` with POSIX rules.
    pub fn rename(
        &mut self,
        cred: &Cred,
        time: i64,
        src_parent: Fid,
        src_name: &str,
        dst_parent: Fid,
        dst_name: &str,
    ) -> Result<Change, Errno> {
        check_name(src_name)?;
        check_name(dst_name)?;
        self.parent_for(cred, src_parent, true)?;
        self.parent_for(cred, dst_parent, true)?;
        let src = self.dir(src_parent)?.get(src_name).ok_or(Errno::ENOENT)?;
        let src_ino = self.inode(src)?;
        let src_is_dir = src_ino.kind() == Kind::Dir;
        sticky_ok(self.inode(src_parent)?, src_ino, cred)?;
        if src_is_dir && self.is_ancestor(src, dst_parent) {
            return Err(Errno::EINVAL);
        }
        if src_is_dir && src_parent != dst_parent {
            // Its `..` changes.
            may(src_ino, cred, MAY_WRITE)?;
        }
        let dst = self.dir(dst_parent)?.get(dst_name);
        if let Some(d) = dst {
            if d == src {
                return self.commit(WalRecord::Rename {
                    src_parent,
                    src_name: src_name.into(),
                    dst_parent,
                    dst_name: dst_name.into(),
                    time,
                });
            }
            let dst_ino = self.inode(d)?;
            match (src_is_dir, dst_ino.kind() == Kind::Dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if dst_ino.dir().is_some_and(|x| !x.is_empty()) => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            if d == ROOT_FID {
                return Err(Errno::EBUSY);
            }
            sticky_ok(self.inode(dst_parent)?, dst_ino, cred)?;
        } else if src_is_dir && src_parent != dst_parent && self.inode(dst_parent)?.nlink >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        self.commit(WalRecord::Rename {
            src_parent,
            src_name: src_name.into(),
            dst_parent,
            dst_name: dst_name.into(),
            time,
        })
    }

    /// `setattr(fid, ...)`: mode and times by the owner, uid by root, gid by root or by the owner
    /// to one of its groups, size (truncate) with write permission on a regular file.
    pub fn setattr(&mut self, cred: &Cred, time: i64, fid: Fid, req: SetattrRequest) -> Result<Change, Errno> {
        let ino = self.inode(fid)?;
        let mut mode = req.mode;
        if let Some(m) = req.mode {
            if !cred.owns(ino) {
                return Err(Errno::EPERM);
            }
            let mut m = m & MODE_BITS;
            if !cred.is_root() && !cred.in_group(req.gid.unwrap_or(ino.gid)) {
                m &= !S_ISGID;
            }
            mode = Some(m);
        }
        if let Some(u) = req.uid
            && u != ino.uid
            && !cred.is_root()
        {
            return Err(Errno::EPERM);
        }
        if let Some(g) = req.gid
            && g != ino.gid
            && !cred.is_root()
            && !(cred.uid == ino.uid && cred.in_group(g))
        {
            return Err(Errno::EPERM);
        }
        if req.size.is_some() {
            match ino.kind() {
                Kind::Dir => return Err(Errno::EISDIR),
                Kind::Symlink => return Err(Errno::EINVAL),
                Kind::File => {}
            }
            may(ino, cred, MAY_WRITE)?;
        }
        if (req.atime.is_some() || req.mtime.is_some()) && !cred.owns(ino) {
            may(ino, cred, MAY_WRITE).map_err(|_| Errno::EPERM)?;
        }
        let mtime = req.mtime.or(req.size.map(|_| time));
        self.commit(WalRecord::Setattr {
            fid,
            mode,
            uid: req.uid,
            gid: req.gid,
            size: req.size,
            atime: req.atime,
            mtime,
            ctime: time,
        })
    }

    /// `setstripe`: on a directory sets (or with `None` clears) its default layout (owner or
    /// root); on a file assigns a layout if it has none or is still empty (write permission).
    pub fn setstripe(
        &mut self,
        cred: &Cred,
        time: i64,
        fid: Fid,
        template: Option<LayoutTemplate>,
    ) -> Result<Change, Errno> {
        if let Some(t) = &template {
            t.validate().map_err(|_| Errno::EINVAL)?;
        }
        let ino = self.inode(fid)?;
        match ino.kind() {
            Kind::Dir => {
                if !cred.owns(ino) {
                    return Err(Errno::EPERM);
                }
                self.commit(WalRecord::SetDirDefault { fid, template, time })
            }
            Kind::File => {
                may(ino, cred, MAY_WRITE)?;
                if ino.layout().is_some() && ino.size != 0 {
                    return Err(Errno::EEXIST);
                }
                let t = template.ok_or(Errno::EINVAL)?;
                // The parent is unknown from a fid, so unset fields come from the fs default.
                let layout = self.alloc.choose(&t.inherit(self.fs_default))?;
                self.commit(WalRecord::SetLayout { fid, layout, time })
            }
            Kind::Symlink => Err(Errno::EINVAL),
        }
    }

    /// `readdir(fid, cookie)`: up to `max` entries (read permission), and the next cookie.
    pub fn readdir(&self, cred: &Cred, fid: Fid, cookie: u64, max: usize) -> Result<(Vec<DirEntry>, u64), Errno> {
        let ino = self.inode(fid)?;
        let d = ino.dir().ok_or(Errno::ENOTDIR)?;
        may(ino, cred, MAY_READ)?;
        let mut out = Vec::with_capacity(max.min(d.len() as usize));
        let next = d.list(cookie, max, |name, f| {
            let kind = self.inodes.get(&f).map_or(Kind::File, |i| i.kind());
            out.push(DirEntry {
                name: name.to_string(),
                fid: f,
                kind,
            });
        });
        Ok((out, next))
    }
}
