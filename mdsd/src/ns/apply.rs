//! Applying WAL records to the namespace (the only code that mutates it).
//!
//! Operations validate before they build a record, so `apply` on a live record cannot fail; on
//! replay a failure means the WAL does not match the checkpoint, reported as `EIO`.

use super::dir::Dir;
use super::inode::{Body, Fid, Inode, Kind, MODE_BITS, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use super::record::WalRecord;
use super::{Namespace, Outcome};
use crate::errno::Errno;

impl Namespace {
    fn touch_dir(&mut self, fid: Fid, time: i64, nlink_delta: i32) -> Result<(), Errno> {
        let d = self.inode_mut(fid)?;
        d.mtime = time;
        d.ctime = time;
        d.nlink = d.nlink.checked_add_signed(nlink_delta).ok_or(Errno::EIO)?;
        Ok(())
    }

    fn insert_new(&mut self, parent: Fid, name: &str, fid: Fid, ino: Inode, time: i64) -> Result<(), Errno> {
        if fid < self.next_fid || self.inodes.contains_key(&fid) {
            return Err(Errno::EIO);
        }
        let is_dir = ino.kind() == Kind::Dir;
        let pdir = self.inode_mut(parent)?.dir_mut().ok_or(Errno::EIO)?;
        if pdir.get(name).is_some() {
            return Err(Errno::EIO);
        }
        pdir.insert(name, fid);
        self.touch_dir(parent, time, if is_dir { 1 } else { 0 })?;
        self.inodes.insert(fid, ino);
        self.next_fid = fid + 1;
        Ok(())
    }

    /// Drops one link to `fid`; when none is left, removes the inode and returns its objects.
    fn drop_link(&mut self, fid: Fid, time: i64, out: &mut Outcome) -> Result<(), Errno> {
        let ino = self.inode_mut(fid)?;
        let last = match ino.kind() {
            Kind::Dir => true,
            _ => ino.nlink <= 1,
        };
        if !last {
            ino.nlink -= 1;
            ino.ctime = time;
            return Ok(());
        }
        if let Some(ino) = self.inodes.remove(&fid)
            && let Body::File(Some(l)) = ino.body
        {
            out.freed.extend_from_slice(&l.objects);
        }
        Ok(())
    }

    /// Applies one record. See the module documentation.
    pub fn apply(&mut self, rec: &WalRecord) -> Result<Outcome, Errno> {
        let mut out = Outcome::default();
        match rec {
            WalRecord::Create {
                parent,
                name,
                fid,
                mode,
                uid,
                gid,
                time,
                layout,
            } => {
                if let Some(l) = layout {
                    for o in l.objects.iter() {
                        self.alloc.consume(*o)?;
                    }
                }
                let ino = Inode {
                    mode: S_IFREG | (mode & MODE_BITS),
                    uid: *uid,
                    gid: *gid,
                    nlink: 1,
                    size: 0,
                    atime: *time,
                    mtime: *time,
                    ctime: *time,
                    body: Body::File(layout.clone().map(Box::new)),
                };
                self.insert_new(*parent, name, *fid, ino, *time)?;
                out.fid = *fid;
            }
            WalRecord::Mkdir {
                parent,
                name,
                fid,
                mode,
                uid,
                gid,
                time,
            } => {
                let ino = Inode {
                    mode: S_IFDIR | (mode & MODE_BITS),
                    uid: *uid,
                    gid: *gid,
                    nlink: 2,
                    size: 0,
                    atime: *time,
                    mtime: *time,
                    ctime: *time,
                    body: Body::Dir(Box::new(Dir::new(*parent))),
                };
                self.insert_new(*parent, name, *fid, ino, *time)?;
                out.fid = *fid;
            }
            WalRecord::Symlink {
                parent,
                name,
                fid,
                target,
                uid,
                gid,
                time,
            } => {
                let ino = Inode {
                    mode: S_IFLNK | 0o777,
                    uid: *uid,
                    gid: *gid,
                    nlink: 1,
                    size: target.len() as u64,
                    atime: *time,
                    mtime: *time,
                    ctime: *time,
                    body: Body::Symlink(target.clone()),
                };
                self.insert_new(*parent, name, *fid, ino, *time)?;
                out.fid = *fid;
            }
            WalRecord::Link {
                parent,
                name,
                fid,
                time,
            } => {
                let ino = self.inode_mut(*fid)?;
                if ino.kind() == Kind::Dir {
                    return Err(Errno::EIO);
                }
                ino.nlink += 1;
                ino.ctime = *time;
                let pdir = self.inode_mut(*parent)?.dir_mut().ok_or(Errno::EIO)?;
                if pdir.insert(name, *fid).is_some() {
                    return Err(Errno::EIO);
                }
                self.touch_dir(*parent, *time, 0)?;
                out.fid = *fid;
            }
            WalRecord::Unlink { parent, name, time } => {
                let pdir = self.inode_mut(*parent)?.dir_mut().ok_or(Errno::EIO)?;
                let fid = pdir.remove(name).ok_or(Errno::EIO)?;
                let is_dir = self.inode(fid)?.kind() == Kind::Dir;
                self.touch_dir(*parent, *time, if is_dir { -1 } else { 0 })?;
                self.drop_link(fid, *time, &mut out)?;
                out.fid = fid;
            }
            WalRecord::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                time,
            } => {
                let src = self.dir(*src_parent)?.get(src_name).ok_or(Errno::EIO)?;
                let dst = self.dir(*dst_parent)?.get(dst_name);
                if dst == Some(src) {
                    // Two names of one inode: POSIX says rename does nothing.
                    out.fid = src;
                    return Ok(out);
                }
                let src_is_dir = self.inode(src)?.kind() == Kind::Dir;
                if let Some(d) = dst {
                    let dst_is_dir = self.inode(d)?.kind() == Kind::Dir;
                    self.inode_mut(*dst_parent)?
                        .dir_mut()
                        .ok_or(Errno::EIO)?
                        .remove(dst_name);
                    self.touch_dir(*dst_parent, *time, if dst_is_dir { -1 } else { 0 })?;
                    self.drop_link(d, *time, &mut out)?;
                }
                self.inode_mut(*src_parent)?
                    .dir_mut()
                    .ok_or(Errno::EIO)?
                    .remove(src_name);
                self.touch_dir(*src_parent, *time, if src_is_dir { -1 } else { 0 })?;
                self.inode_mut(*dst_parent)?
                    .dir_mut()
                    .ok_or(Errno::EIO)?
                    .insert(dst_name, src);
                self.touch_dir(*dst_parent, *time, if src_is_dir { 1 } else { 0 })?;
                let ino = self.inode_mut(src)?;
                ino.ctime = *time;
                if let Some(d) = ino.dir_mut() {
                    d.parent = *dst_parent;
                }
                out.fid = src;
            }
            WalRecord::Setattr {
                fid,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                ctime,
            } => {
                let ino = self.inode_mut(*fid)?;
                if let Some(m) = mode {
                    ino.mode = (ino.mode & S_IFMT) | (m & MODE_BITS);
                }
                if let Some(u) = uid {
                    ino.uid = *u;
                }
                if let Some(g) = gid {
                    ino.gid = *g;
                }
                if let Some(s) = size {
                    ino.size = *s;
                }
                if let Some(a) = atime {
                    ino.atime = *a;
                }
                if let Some(m) = mtime {
                    ino.mtime = *m;
                }
                ino.ctime = *ctime;
                out.fid = *fid;
            }
            WalRecord::SetLayout { fid, layout, time } => {
                for o in layout.objects.iter() {
                    self.alloc.consume(*o)?;
                }
                let ino = self.inode_mut(*fid)?;
                let Body::File(l) = &mut ino.body else {
                    return Err(Errno::EIO);
                };
                if let Some(old) = l.replace(Box::new(layout.clone())) {
                    out.freed.extend_from_slice(&old.objects);
                }
                ino.ctime = *time;
                out.fid = *fid;
            }
            WalRecord::SetDirDefault { fid, template, time } => {
                let ino = self.inode_mut(*fid)?;
                ino.ctime = *time;
                ino.dir_mut().ok_or(Errno::EIO)?.default_layout = *template;
                out.fid = *fid;
            }
            WalRecord::Close { fid, size, mtime } => {
                let ino = self.inode_mut(*fid)?;
                if ino.kind() != Kind::File {
                    return Err(Errno::EIO);
                }
                ino.size = ino.size.max(*size);
                if *mtime > ino.mtime {
                    ino.mtime = *mtime;
                    ino.ctime = ino.ctime.max(*mtime);
                }
                out.fid = *fid;
            }
            WalRecord::Precreated { ost, start, count } => {
                self.alloc.add_range(*ost, *start, *count);
            }
        }
        Ok(out)
    }
}
