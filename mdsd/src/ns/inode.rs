//! Inodes: the attributes of one file, directory or symbolic link.

use super::dir::Dir;
use super::layout::Layout;

/// A file identifier: the inode number, never reused (allocated from a monotonic counter that is
/// part of the namespace state and therefore of every checkpoint).
pub type Fid = u64;

/// The root directory's fid.
pub const ROOT_FID: Fid = 1;

/// File type bits of `mode`.
pub const S_IFMT: u32 = 0o170000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Sticky bit.
pub const S_ISVTX: u32 = 0o1000;
/// Set-group-id bit.
pub const S_ISGID: u32 = 0o2000;
/// Set-user-id bit.
pub const S_ISUID: u32 = 0o4000;
/// The permission and special bits a client may set.
pub const MODE_BITS: u32 = 0o7777;

/// The kind of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn ifmt(self) -> u32 {
        match self {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
        }
    }
}

/// What an inode holds besides its attributes. Boxed so an inode stays small: the namespace
/// keeps one `Inode` per file in memory and a million files must fit in a few hundred MB.
#[derive(Debug, Clone)]
pub enum Body {
    /// A regular file and its layout (`None` until one is assigned: delayed layout creation).
    File(Option<Box<Layout>>),
    /// A directory and its entries.
    Dir(Box<Dir>),
    /// A symbolic link and its target.
    Symlink(Box<str>),
}

/// One inode. Times are nanoseconds since the Unix epoch.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of directory entries naming this inode (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Size in bytes (files: as of the last close or truncate; symlinks: target length).
    pub size: u64,
    /// Last access time.
    pub atime: i64,
    /// Last modification time.
    pub mtime: i64,
    /// Last status change time.
    pub ctime: i64,
    /// Kind-specific contents.
    pub body: Body,
}

impl Inode {
    /// The kind of this inode.
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
            Body::Symlink(_) => Kind::Symlink,
        }
    }
    /// The directory, if this is one.
    pub fn dir(&self) -> Option<&Dir> {
        match &self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }
    /// The directory, mutably, if this is one.
    pub fn dir_mut(&mut self) -> Option<&mut Dir> {
        match &mut self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }
    /// The layout, if this is a file that has one.
    pub fn layout(&self) -> Option<&Layout> {
        match &self.body {
            Body::File(Some(l)) => Some(l),
            _ => None,
        }
    }
}

/// A copy of an inode's attributes, as replies carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The inode's fid.
    pub fid: Fid,
    /// Kind.
    pub kind: Kind,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Access time (ns).
    pub atime: i64,
    /// Modification time (ns).
    pub mtime: i64,
    /// Change time (ns).
    pub ctime: i64,
}

impl Attr {
    /// The attributes of `ino`.
    pub fn of(fid: Fid, ino: &Inode) -> Self {
        Self {
            fid,
            kind: ino.kind(),
            mode: ino.mode,
            uid: ino.uid,
            gid: ino.gid,
            nlink: ino.nlink,
            size: ino.size,
            atime: ino.atime,
            mtime: ino.mtime,
            ctime: ino.ctime,
        }
    }
}
