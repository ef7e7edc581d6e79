//! Public value types of the client API: attributes, directory entries, statfs figures.

use crate::error::{ClientError, Result};
use crate::layout::FileLayout;
use rustre_proto::{Errno, pb};

/// File identifier (inode number and generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fid {
    /// Inode number.
    pub ino: u64,
    /// Generation of that number.
    pub generation: u32,
}

impl Fid {
    /// The root directory.
    pub const ROOT: Fid = Fid { ino: 1, generation: 0 };

    pub(crate) fn to_pb(self) -> pb::Fid {
        pb::Fid {
            ino: self.ino,
            generation: self.generation,
        }
    }

    pub(crate) fn from_pb(f: Option<&pb::Fid>) -> Result<Fid> {
        let f = f.ok_or_else(|| ClientError::other(Errno::EPROTO, "reply without a fid"))?;
        if f.ino == 0 {
            return Err(ClientError::other(Errno::EPROTO, "reply with fid 0"));
        }
        Ok(Fid {
            ino: f.ino,
            generation: f.generation,
        })
    }
}

/// Kind of a namespace entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

impl FileKind {
    pub(crate) fn from_pb(k: i32) -> Result<FileKind> {
        match pb::FileKind::try_from(k) {
            Ok(pb::FileKind::Regular) => Ok(FileKind::Regular),
            Ok(pb::FileKind::Directory) => Ok(FileKind::Directory),
            Ok(pb::FileKind::Symlink) => Ok(FileKind::Symlink),
            _ => Err(ClientError::other(Errno::EPROTO, format!("unknown file kind {k}"))),
        }
    }

    /// The `S_IF*` bits of `st_mode`.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Regular => 0o100000,
            FileKind::Directory => 0o040000,
            FileKind::Symlink => 0o120000,
        }
    }
}

/// Attributes of a namespace entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAttr {
    /// Identifier.
    pub fid: Fid,
    /// Kind.
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Links.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Access time, ns since the epoch.
    pub atime_ns: i64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Layout of a regular file that has one.
    pub layout: Option<FileLayout>,
    /// Some handle had the file open for writing when the MDS answered (the size then includes
    /// what the objects held at that moment, see [`crate::Client::stat`]).
    pub open_for_write: bool,
}

impl FileAttr {
    pub(crate) fn from_pb(a: Option<&pb::Attr>) -> Result<FileAttr> {
        let a = a.ok_or_else(|| ClientError::other(Errno::EPROTO, "reply without attributes"))?;
        let kind = FileKind::from_pb(a.kind)?;
        let layout = match (&a.layout, kind) {
            (Some(l), FileKind::Regular) if l.stripe_count > 0 && !l.objects.is_empty() => {
                Some(FileLayout::try_from(l)?)
            }
            _ => None,
        };
        Ok(FileAttr {
            fid: Fid::from_pb(a.fid.as_ref())?,
            kind,
            perm: a.mode & 0o7777,
            uid: a.uid,
            gid: a.gid,
            nlink: a.nlink,
            size: a.size,
            blocks: a.blocks,
            atime_ns: a.atime_ns,
            mtime_ns: a.mtime_ns,
            ctime_ns: a.ctime_ns,
            layout,
            open_for_write: a.open_for_write,
        })
    }

    /// `st_mode`: kind bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | self.perm
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Name (bytes; POSIX names need not be UTF-8).
    pub name: Vec<u8>,
    /// Identifier.
    pub fid: Fid,
    /// Kind.
    pub kind: FileKind,
}

/// File system space and inode figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatFs {
    /// File system name.
    pub fsname: String,
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
    /// Number of OSTs.
    pub ost_count: u32,
}

/// The layout of a path as `getstripe` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeInfo {
    /// Stripe size, count and first OST.
    pub spec: crate::layout::LayoutSpec,
    /// A file's objects (empty for a directory's default).
    pub objects: Vec<crate::layout::ObjectRef>,
    /// A directory without a layout of its own: this is the inherited default.
    pub inherited: bool,
}

/// Space of one OST as the MDS last heard it (`rustre df`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OstSpace {
    /// OST index.
    pub index: u32,
    /// Total bytes.
    pub total_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Objects in use.
    pub objects: u64,
    /// False when the OST has not answered the MDS recently (figures are stale).
    pub available: bool,
}

/// Attribute changes of `setattr` (`None`: unchanged). Sizes change through `truncate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrChanges {
    /// Permission bits (`chmod`).
    pub mode: Option<u32>,
    /// Owner (`chown`).
    pub uid: Option<u32>,
    /// Group (`chown`).
    pub gid: Option<u32>,
    /// Access time, ns since the epoch (`utimensat`).
    pub atime_ns: Option<i64>,
    /// Modification time, ns since the epoch (`utimensat`).
    pub mtime_ns: Option<i64>,
}
