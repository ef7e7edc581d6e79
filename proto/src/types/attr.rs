//! Namespace attributes: [`FileKind`], [`Mode`], [`Attr`], [`Credentials`], [`DirEntry`] and
//! the flag sets of create and rename.

use super::ids::Fid;
use super::layout::StripeLayout;
use super::name::Name;
use crate::{ProtocolError, pb};

/// Largest file size (and object size): the largest `off_t`.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Most supplementary groups carried in [`Credentials`].
pub const MAX_GROUPS: usize = 1024;

/// Kind of a namespace entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
}

impl TryFrom<i32> for FileKind {
    type Error = ProtocolError;

    fn try_from(v: i32) -> Result<Self, ProtocolError> {
        match pb::FileKind::try_from(v) {
            Ok(pb::FileKind::Regular) => Ok(FileKind::Regular),
            Ok(pb::FileKind::Directory) => Ok(FileKind::Directory),
            Ok(pb::FileKind::Symlink) => Ok(FileKind::Symlink),
            Ok(pb::FileKind::Unspecified) | Err(_) => {
                Err(ProtocolError::invalid("kind", format!("{v} is not a file kind")))
            }
        }
    }
}

impl From<FileKind> for pb::FileKind {
    fn from(k: FileKind) -> Self {
        match k {
            FileKind::Regular => pb::FileKind::Regular,
            FileKind::Directory => pb::FileKind::Directory,
            FileKind::Symlink => pb::FileKind::Symlink,
        }
    }
}

impl From<FileKind> for i32 {
    fn from(k: FileKind) -> Self {
        pb::FileKind::from(k) as i32
    }
}

/// Permission bits (`0o7777`: setuid, setgid, sticky, rwx for user, group, other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(u32);

impl Mode {
    /// All permission bits.
    pub const MASK: u32 = 0o7777;

    /// The bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Mode {
    type Error = ProtocolError;

    fn try_from(v: u32) -> Result<Self, ProtocolError> {
        if v & !Self::MASK != 0 {
            return Err(ProtocolError::invalid(
                "mode",
                format!("{v:#o} has bits outside 0o7777 (the file type is not part of the mode)"),
            ));
        }
        Ok(Mode(v))
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

pub(crate) fn check_size(v: u64, field: &'static str) -> Result<u64, ProtocolError> {
    if v > MAX_FILE_SIZE {
        return Err(ProtocolError::invalid(
            field,
            format!("{v} exceeds the largest file size {MAX_FILE_SIZE}"),
        ));
    }
    Ok(v)
}

/// Attributes of a namespace entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Identifier.
    pub fid: Fid,
    /// Kind.
    pub kind: FileKind,
    /// Permission bits.
    pub mode: Mode,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of names linking to it.
    pub nlink: u32,
    /// Size in bytes (at most [`MAX_FILE_SIZE`]).
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access, ns since the epoch.
    pub atime_ns: i64,
    /// Last modification, ns since the epoch.
    pub mtime_ns: i64,
    /// Last status change, ns since the epoch.
    pub ctime_ns: i64,
    /// Layout of a regular file, when known (only regular files have one).
    pub layout: Option<StripeLayout>,
}

impl Attr {
    /// Converts an optional wire attr (a message field), naming `field` when absent or invalid.
    pub fn from_field(p: Option<pb::Attr>, field: &'static str) -> Result<Self, ProtocolError> {
        let p = p.ok_or_else(|| ProtocolError::missing(field))?;
        Attr::try_from(p).map_err(|e| e.within(field))
    }
}

impl TryFrom<pb::Attr> for Attr {
    type Error = ProtocolError;

    fn try_from(p: pb::Attr) -> Result<Self, ProtocolError> {
        let kind = FileKind::try_from(p.kind)?;
        let layout = p
            .layout
            .map(|l| StripeLayout::try_from(l).map_err(|e| e.within("layout")))
            .transpose()?;
        if layout.is_some() && kind != FileKind::Regular {
            return Err(ProtocolError::invalid("layout", format!("a {kind:?} has no layout")));
        }
        Ok(Attr {
            fid: Fid::from_field(p.fid, "fid")?,
            kind,
            mode: Mode::try_from(p.mode)?,
            uid: p.uid,
            gid: p.gid,
            nlink: p.nlink,
            size: check_size(p.size, "size")?,
            blocks: p.blocks,
            atime_ns: p.atime_ns,
            mtime_ns: p.mtime_ns,
            ctime_ns: p.ctime_ns,
            layout,
        })
    }
}

impl From<&Attr> for pb::Attr {
    fn from(a: &Attr) -> Self {
        pb::Attr {
            fid: Some(a.fid.into()),
            kind: a.kind.into(),
            mode: a.mode.bits(),
            uid: a.uid,
            gid: a.gid,
            nlink: a.nlink,
            size: a.size,
            blocks: a.blocks,
            atime_ns: a.atime_ns,
            mtime_ns: a.mtime_ns,
            ctime_ns: a.ctime_ns,
            layout: a.layout.as_ref().map(pb::Layout::from),
            // Open handles are the MDS's state, not an attribute of the file.
            open_for_write: false,
        }
    }
}

/// Identity of the caller of an MDS request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (at most [`MAX_GROUPS`]).
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Root (uid 0, gid 0).
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    /// True if `gid` is the primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Converts the `creds` field every MDS request carries, naming `field` when absent or
    /// invalid.
    pub fn from_field(p: Option<pb::Credentials>, field: &'static str) -> Result<Self, ProtocolError> {
        let p = p.ok_or_else(|| ProtocolError::missing(field))?;
        Credentials::try_from(p).map_err(|e| e.within(field))
    }
}

impl TryFrom<pb::Credentials> for Credentials {
    type Error = ProtocolError;

    fn try_from(p: pb::Credentials) -> Result<Self, ProtocolError> {
        if p.groups.len() > MAX_GROUPS {
            return Err(ProtocolError::invalid(
                "groups",
                format!("{} supplementary groups, more than {MAX_GROUPS}", p.groups.len()),
            ));
        }
        Ok(Credentials {
            uid: p.uid,
            gid: p.gid,
            groups: p.groups,
        })
    }
}

impl From<&Credentials> for pb::Credentials {
    fn from(c: &Credentials) -> Self {
        pb::Credentials {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.clone(),
        }
    }
}

/// One entry of a directory page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Entry name.
    pub name: Name,
    /// What it names.
    pub fid: Fid,
    /// Its kind.
    pub kind: FileKind,
}

impl TryFrom<pb::DirEntry> for DirEntry {
    type Error = ProtocolError;

    fn try_from(p: pb::DirEntry) -> Result<Self, ProtocolError> {
        Ok(DirEntry {
            name: Name::from_field(p.name, "name")?,
            fid: Fid::from_field(p.fid, "fid")?,
            kind: FileKind::try_from(p.kind)?,
        })
    }
}

impl From<&DirEntry> for pb::DirEntry {
    fn from(d: &DirEntry) -> Self {
        pb::DirEntry {
            name: d.name.as_bytes().to_vec(),
            fid: Some(d.fid.into()),
            kind: d.kind.into(),
        }
    }
}

/// Flags of create/open (`pb::OpenFlag` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OpenFlags(u32);

impl OpenFlags {
    /// Create if absent (O_CREAT).
    pub const CREATE: OpenFlags = OpenFlags(pb::OpenFlag::Create as u32);
    /// With CREATE: fail if present (O_EXCL).
    pub const EXCL: OpenFlags = OpenFlags(pb::OpenFlag::Excl as u32);
    /// Truncate on open (O_TRUNC).
    pub const TRUNC: OpenFlags = OpenFlags(pb::OpenFlag::Trunc as u32);
    /// Open for reading.
    pub const READ: OpenFlags = OpenFlags(pb::OpenFlag::Read as u32);
    /// Open for writing.
    pub const WRITE: OpenFlags = OpenFlags(pb::OpenFlag::Write as u32);
    /// Writes append.
    pub const APPEND: OpenFlags = OpenFlags(pb::OpenFlag::Append as u32);
    /// Every defined bit.
    pub const ALL: u32 = Self::CREATE.0 | Self::EXCL.0 | Self::TRUNC.0 | Self::READ.0 | Self::WRITE.0 | Self::APPEND.0;

    /// The bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: OpenFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for OpenFlags {
    type Output = OpenFlags;

    fn bitor(self, rhs: OpenFlags) -> OpenFlags {
        OpenFlags(self.0 | rhs.0)
    }
}

impl TryFrom<u32> for OpenFlags {
    type Error = ProtocolError;

    /// Refuses unknown bits, and EXCL or TRUNC without the access that gives them meaning.
    fn try_from(v: u32) -> Result<Self, ProtocolError> {
        if v & !Self::ALL != 0 {
            return Err(ProtocolError::invalid(
                "flags",
                format!("unknown bits {:#x}", v & !Self::ALL),
            ));
        }
        let f = OpenFlags(v);
        if f.contains(Self::EXCL) && !f.contains(Self::CREATE) {
            return Err(ProtocolError::invalid("flags", "EXCL without CREATE"));
        }
        if (f.contains(Self::TRUNC) || f.contains(Self::APPEND)) && !f.contains(Self::WRITE) {
            return Err(ProtocolError::invalid("flags", "TRUNC or APPEND without WRITE"));
        }
        Ok(f)
    }
}

/// Flags of rename (`pb::RenameFlag` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RenameFlags(u32);

impl RenameFlags {
    /// Fail if the destination exists.
    pub const NOREPLACE: RenameFlags = RenameFlags(pb::RenameFlag::Noreplace as u32);

    /// The bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: RenameFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl TryFrom<u32> for RenameFlags {
    type Error = ProtocolError;

    fn try_from(v: u32) -> Result<Self, ProtocolError> {
        if v & !Self::NOREPLACE.0 != 0 {
            return Err(ProtocolError::invalid(
                "flags",
                format!("unknown bits {:#x}", v & !Self::NOREPLACE.0),
            ));
        }
        Ok(RenameFlags(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr() -> pb::Attr {
        pb::Attr {
            fid: Some(pb::Fid { ino: 5, generation: 1 }),
            kind: pb::FileKind::Regular as i32,
            mode: 0o644,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 4096,
            blocks: 8,
            atime_ns: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            layout: Some(pb::Layout {
                stripe_size: 1 << 20,
                stripe_count: 1,
                stripe_offset: -1,
                objects: vec![pb::ObjectRef {
                    ost_index: 0,
                    object_id: 7,
                }],
            }),
            open_for_write: false,
        }
    }

    #[test]
    fn attr_round_trips_and_checks_fields() {
        let a = Attr::try_from(attr()).unwrap();
        assert_eq!(pb::Attr::from(&a), attr());
        let mut p = attr();
        p.kind = 0;
        assert_eq!(
            Attr::from_field(Some(p), "getattr.attr").unwrap_err().field(),
            Some("getattr.attr.kind")
        );
        let mut p = attr();
        p.mode = 0o100644;
        assert_eq!(Attr::try_from(p).unwrap_err().field(), Some("mode"));
        let mut p = attr();
        p.size = u64::MAX;
        assert_eq!(Attr::try_from(p).unwrap_err().field(), Some("size"));
        let mut p = attr();
        p.kind = pb::FileKind::Directory as i32;
        assert_eq!(Attr::try_from(p).unwrap_err().field(), Some("layout"));
        let mut p = attr();
        p.layout.as_mut().unwrap().stripe_size = 5;
        assert_eq!(Attr::try_from(p).unwrap_err().field(), Some("layout.stripe_size"));
    }

    #[test]
    fn open_flags_are_checked() {
        let ok = OpenFlags::CREATE | OpenFlags::EXCL | OpenFlags::WRITE;
        assert_eq!(OpenFlags::try_from(ok.bits()), Ok(ok));
        assert!(OpenFlags::try_from(OpenFlags::EXCL.bits()).is_err());
        assert!(OpenFlags::try_from(OpenFlags::TRUNC.bits() | OpenFlags::READ.bits()).is_err());
        assert!(OpenFlags::try_from(1 << 20).is_err());
        assert!(RenameFlags::try_from(2).is_err());
        assert!(RenameFlags::try_from(1).unwrap().contains(RenameFlags::NOREPLACE));
    }

    #[test]
    fn credentials_are_bounded() {
        let p = pb::Credentials {
            uid: 1,
            gid: 2,
            groups: vec![0; MAX_GROUPS + 1],
        };
        let e = Credentials::from_field(Some(p), "lookup.creds").unwrap_err();
        assert_eq!(e.field(), Some("lookup.creds.groups"));
        assert_eq!(
            Credentials::from_field(None, "lookup.creds").unwrap_err().field(),
            Some("lookup.creds")
        );
        let c = Credentials::try_from(pb::Credentials {
            uid: 1,
            gid: 2,
            groups: vec![7],
        })
        .unwrap();
        assert!(c.in_group(7) && c.in_group(2) && !c.in_group(3));
    }
}
