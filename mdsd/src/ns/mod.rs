//! The namespace, sans I/O: inodes, directories, layouts and object pools, the POSIX operations
//! on them, and the WAL records those operations produce.
//!
//! Every mutating operation validates its request against the current state, builds one
//! [`WalRecord`] holding every value it chose, and applies that record; replaying records on the
//! state they were made against gives the same state ([`Namespace::apply`]). Nothing here does I/O
//! or reads a clock: the caller passes the time.

pub mod apply;
pub mod dir;
pub mod inode;
pub mod layout;
pub mod ops;
pub mod perm;
pub mod record;
pub mod snapshot;

pub use dir::{COOKIE_EOF, COOKIE_START, Dir};
pub use inode::{Attr, Body, Fid, Inode, Kind, ROOT_FID};
pub use layout::{Layout, LayoutTemplate, ObjRef, ObjectAllocator};
pub use ops::{OpenFlags, SetattrRequest};
pub use perm::Cred;
pub use record::{WalEntry, WalRecord};

use crate::errno::Errno;
use std::collections::HashMap;

/// Longest entry name in bytes.
pub const NAME_MAX: usize = 255;
/// Longest symbolic link target in bytes.
pub const PATH_MAX: usize = 4095;
/// Most links to one inode.
pub const LINK_MAX: u32 = 65000;

/// The whole namespace state.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub(crate) inodes: HashMap<Fid, Inode>,
    pub(crate) next_fid: Fid,
    /// Precreated object pools.
    pub alloc: ObjectAllocator,
    /// The file system default layout (used where no directory up the tree sets one).
    pub fs_default: LayoutTemplate,
}

/// What an applied mutation did, for the reply and for follow-up work.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The inode the reply is about (created, linked, changed), 0 if none.
    pub fid: Fid,
    /// Objects no longer referenced by any file (last link removed, layout replaced): the server
    /// destroys them on their OSTs.
    pub freed: Vec<ObjRef>,
}

/// Totals for statfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statfs {
    /// Inodes in use on the MDT.
    pub files: u64,
    /// Total bytes over all OSTs.
    pub total_bytes: u64,
    /// Free bytes over all OSTs.
    pub free_bytes: u64,
    /// Total objects over all OSTs.
    pub total_objects: u64,
    /// Free objects over all OSTs.
    pub free_objects: u64,
    /// OSTs counted.
    pub osts: u32,
}

/// Checks an entry name.
pub fn check_name(name: &str) -> Result<(), Errno> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Errno::EINVAL);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

impl Namespace {
    /// A fresh file system: an empty root directory owned by root, mode 0755.
    pub fn new(time: i64) -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT_FID,
            Inode {
                mode: inode::S_IFDIR | 0o755,
                uid: 0,
                gid: 0,
                nlink: 2,
                size: 0,
                atime: time,
                mtime: time,
                ctime: time,
                body: Body::Dir(Box::new(Dir::new(ROOT_FID))),
            },
        );
        Self {
            inodes,
            next_fid: ROOT_FID + 1,
            alloc: ObjectAllocator::default(),
            fs_default: LayoutTemplate::FS_DEFAULT,
        }
    }

    /// Number of inodes.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The inode `fid`.
    pub fn inode(&self, fid: Fid) -> Result<&Inode, Errno> {
        self.inodes.get(&fid).ok_or(Errno::ENOENT)
    }

    pub(crate) fn inode_mut(&mut self, fid: Fid) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&fid).ok_or(Errno::ENOENT)
    }

    /// The directory `fid` (ENOTDIR if it is not one).
    pub fn dir(&self, fid: Fid) -> Result<&Dir, Errno> {
        self.inode(fid)?.dir().ok_or(Errno::ENOTDIR)
    }

    /// Every inode, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Fid, &Inode)> {
        self.inodes.iter().map(|(f, i)| (*f, i))
    }

    /// The next fid that will be allocated.
    pub fn next_fid(&self) -> Fid {
        self.next_fid
    }

    /// Statfs totals, summing the OSTs' last reported figures.
    pub fn statfs(&self) -> Statfs {
        let mut s = Statfs {
            files: self.inodes.len() as u64,
            ..Statfs::default()
        };
        for p in self.alloc.osts.values() {
            s.total_bytes += p.total_bytes;
            s.free_bytes += p.free_bytes;
            s.total_objects += p.total_objects;
            s.free_objects += p.free_objects;
            s.osts += 1;
        }
        s
    }

    /// The layout template a new file in `dir` gets: the nearest directory default up the tree,
    /// each unset field filled from further up, finally from the file system default.
    pub fn inherited_template(&self, mut dir: Fid) -> LayoutTemplate {
        let mut acc: Option<LayoutTemplate> = None;
        for _ in 0..4096 {
            let Ok(d) = self.dir(dir) else { break };
            if let Some(t) = d.default_layout {
                acc = Some(match acc {
                    None => t,
                    Some(a) => a.inherit(t),
                });
            }
            if dir == ROOT_FID || d.parent == dir {
                break;
            }
            dir = d.parent;
        }
        match acc {
            None => self.fs_default,
            Some(a) => a.inherit(self.fs_default),
        }
    }

    /// True if `anc` is `fid` or one of its ancestors.
    pub fn is_ancestor(&self, anc: Fid, mut fid: Fid) -> bool {
        for _ in 0..1_000_000 {
            if fid == anc {
                return true;
            }
            let Ok(d) = self.dir(fid) else { return false };
            if d.parent == fid {
                return false;
            }
            fid = d.parent;
        }
        false
    }
}

#[cfg(test)]
mod tests;
