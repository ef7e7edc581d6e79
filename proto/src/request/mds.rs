//! Validated MDS requests. Field paths in errors start with the operation name
//! (`create.layout.stripe_size`).

use crate::types::{Credentials, Fid, LayoutRequest, MAX_FILE_SIZE, Mode, Name, OpenFlags, RenameFlags, SymlinkTarget};
use crate::{ProtocolError, pb};

/// Most entries one readdir page may ask for.
pub const MAX_READDIR_ENTRIES: u32 = 4096;

/// Runs the field checks of one request and prefixes errors with the operation name.
fn scoped<T>(op: &'static str, f: impl FnOnce() -> Result<T, ProtocolError>) -> Result<T, ProtocolError> {
    f().map_err(|e| e.within(op))
}

fn creds(p: Option<pb::Credentials>) -> Result<Credentials, ProtocolError> {
    Credentials::from_field(p, "creds")
}

fn size(v: u64, field: &'static str) -> Result<u64, ProtocolError> {
    if v > MAX_FILE_SIZE {
        return Err(ProtocolError::invalid(
            field,
            format!("{v} exceeds the largest file size {MAX_FILE_SIZE}"),
        ));
    }
    Ok(v)
}

/// Most names one lookup may walk (`name` and `more`).
pub const MAX_LOOKUP_NAMES: usize = 32;

/// Look `name` up in `parent`, then each of `more` in the directory the name before it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Caller.
    pub creds: Credentials,
    /// Directory searched.
    pub parent: Fid,
    /// Name looked up.
    pub name: Name,
    /// Further names of the path (at most [`MAX_LOOKUP_NAMES`] names in all).
    pub more: Vec<Name>,
}

/// The names of a path walk carried by a request (`more` of a lookup, `walk` of a create,
/// unlink, mkdir, rmdir or symlink, `src_walk` and `dst_walk` of a rename): valid names, fewer than [`MAX_LOOKUP_NAMES`] (the request's own name
/// is the last).
pub fn walk_names(names: Vec<Vec<u8>>, field: &'static str) -> Result<Vec<Name>, ProtocolError> {
    if names.len() >= MAX_LOOKUP_NAMES {
        return Err(ProtocolError::invalid(
            field,
            format!(
                "{} names, at most {MAX_LOOKUP_NAMES} with the request's own",
                names.len()
            ),
        ));
    }
    names.into_iter().map(|n| Name::from_field(n, field)).collect()
}

impl TryFrom<pb::MdsLookupRequest> for Lookup {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsLookupRequest) -> Result<Self, ProtocolError> {
        scoped("lookup", || {
            Ok(Lookup {
                creds: creds(p.creds)?,
                parent: Fid::from_field(p.parent, "parent")?,
                name: Name::from_field(p.name, "name")?,
                more: walk_names(p.more, "more")?,
            })
        })
    }
}

/// Create and/or open a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// Caller.
    pub creds: Credentials,
    /// Directory.
    pub parent: Fid,
    /// File name.
    pub name: Name,
    /// Permission bits for a created file.
    pub mode: Mode,
    /// Open flags.
    pub flags: OpenFlags,
    /// Requested layout for a created file.
    pub layout: LayoutRequest,
    /// Names from `parent` to the directory `name` is in.
    pub walk: Vec<Name>,
}

impl TryFrom<pb::MdsCreateRequest> for Create {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsCreateRequest) -> Result<Self, ProtocolError> {
        scoped("create", || {
            Ok(Create {
                creds: creds(p.creds)?,
                parent: Fid::from_field(p.parent, "parent")?,
                name: Name::from_field(p.name, "name")?,
                mode: Mode::try_from(p.mode)?,
                flags: OpenFlags::try_from(p.flags)?,
                layout: LayoutRequest::from_field(p.layout, "layout")?,
                walk: walk_names(p.walk, "walk")?,
            })
        })
    }
}

/// Close an open handle, reporting size and mtime when the handle wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Caller.
    pub creds: Credentials,
    /// Handle returned by create.
    pub handle: u64,
    /// The file.
    pub fid: Fid,
    /// Size known by the writer.
    pub size: Option<u64>,
    /// Modification time set by the writer.
    pub mtime_ns: Option<i64>,
}

impl TryFrom<pb::MdsCloseRequest> for Close {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsCloseRequest) -> Result<Self, ProtocolError> {
        scoped("close", || {
            if p.handle == 0 {
                return Err(ProtocolError::invalid("handle", "0 is not a handle"));
            }
            Ok(Close {
                creds: creds(p.creds)?,
                handle: p.handle,
                fid: Fid::from_field(p.fid, "fid")?,
                size: p.size.map(|s| size(s, "size")).transpose()?,
                mtime_ns: p.mtime_ns,
            })
        })
    }
}

/// Make a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mkdir {
    /// Caller.
    pub creds: Credentials,
    /// Parent directory.
    pub parent: Fid,
    /// New directory's name.
    pub name: Name,
    /// Permission bits.
    pub mode: Mode,
    /// Default layout for files created in it; `None` inherits.
    pub default_layout: Option<LayoutRequest>,
    /// Names from `parent` to the directory `name` is in.
    pub walk: Vec<Name>,
}

impl TryFrom<pb::MdsMkdirRequest> for Mkdir {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsMkdirRequest) -> Result<Self, ProtocolError> {
        scoped("mkdir", || {
            Ok(Mkdir {
                creds: creds(p.creds)?,
                parent: Fid::from_field(p.parent, "parent")?,
                name: Name::from_field(p.name, "name")?,
                mode: Mode::try_from(p.mode)?,
                default_layout: p
                    .default_layout
                    .map(|l| LayoutRequest::try_from(l).map_err(|e| e.within("default_layout")))
                    .transpose()?,
                walk: walk_names(p.walk, "walk")?,
            })
        })
    }
}

/// Read one page of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readdir {
    /// Caller.
    pub creds: Credentials,
    /// Directory.
    pub dir: Fid,
    /// Where to continue (0 = start).
    pub cookie: u64,
    /// Page size, 1..=[`MAX_READDIR_ENTRIES`].
    pub max_entries: u32,
}

impl TryFrom<pb::MdsReaddirRequest> for Readdir {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsReaddirRequest) -> Result<Self, ProtocolError> {
        scoped("readdir", || {
            if p.max_entries == 0 || p.max_entries > MAX_READDIR_ENTRIES {
                return Err(ProtocolError::invalid(
                    "max_entries",
                    format!("{} is not in 1..={MAX_READDIR_ENTRIES}", p.max_entries),
                ));
            }
            Ok(Readdir {
                creds: creds(p.creds)?,
                dir: Fid::from_field(p.dir, "dir")?,
                cookie: p.cookie,
                max_entries: p.max_entries,
            })
        })
    }
}

/// Get attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Getattr {
    /// Caller.
    pub creds: Credentials,
    /// The entry.
    pub fid: Fid,
}

impl TryFrom<pb::MdsGetattrRequest> for Getattr {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsGetattrRequest) -> Result<Self, ProtocolError> {
        scoped("getattr", || {
            Ok(Getattr {
                creds: creds(p.creds)?,
                fid: Fid::from_field(p.fid, "fid")?,
            })
        })
    }
}

/// Set the attributes that are present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setattr {
    /// Caller.
    pub creds: Credentials,
    /// The entry.
    pub fid: Fid,
    /// New permission bits.
    pub mode: Option<Mode>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime_ns: Option<i64>,
    /// New modification time.
    pub mtime_ns: Option<i64>,
}

impl TryFrom<pb::MdsSetattrRequest> for Setattr {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsSetattrRequest) -> Result<Self, ProtocolError> {
        scoped("setattr", || {
            Ok(Setattr {
                creds: creds(p.creds)?,
                fid: Fid::from_field(p.fid, "fid")?,
                mode: p.mode.map(Mode::try_from).transpose()?,
                uid: p.uid,
                gid: p.gid,
                size: p.size.map(|s| size(s, "size")).transpose()?,
                atime_ns: p.atime_ns,
                mtime_ns: p.mtime_ns,
            })
        })
    }
}

/// Rename an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// Caller.
    pub creds: Credentials,
    /// Source directory.
    pub src_parent: Fid,
    /// Source name.
    pub src_name: Name,
    /// Destination directory.
    pub dst_parent: Fid,
    /// Destination name.
    pub dst_name: Name,
    /// Flags.
    pub flags: RenameFlags,
    /// Names from `src_parent` to the directory `src_name` is in.
    pub src_walk: Vec<Name>,
    /// Names from `dst_parent` to the directory `dst_name` is in.
    pub dst_walk: Vec<Name>,
}

impl TryFrom<pb::MdsRenameRequest> for Rename {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsRenameRequest) -> Result<Self, ProtocolError> {
        scoped("rename", || {
            Ok(Rename {
                creds: creds(p.creds)?,
                src_parent: Fid::from_field(p.src_parent, "src_parent")?,
                src_name: Name::from_field(p.src_name, "src_name")?,
                dst_parent: Fid::from_field(p.dst_parent, "dst_parent")?,
                dst_name: Name::from_field(p.dst_name, "dst_name")?,
                flags: RenameFlags::try_from(p.flags)?,
                src_walk: walk_names(p.src_walk, "src_walk")?,
                dst_walk: walk_names(p.dst_walk, "dst_walk")?,
            })
        })
    }
}

/// Remove an entry by name: the body of unlink and rmdir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveEntry {
    /// Caller.
    pub creds: Credentials,
    /// Directory.
    pub parent: Fid,
    /// Name removed.
    pub name: Name,
    /// Names from `parent` to the directory `name` is in.
    pub walk: Vec<Name>,
}

impl TryFrom<pb::MdsUnlinkRequest> for RemoveEntry {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsUnlinkRequest) -> Result<Self, ProtocolError> {
        scoped("unlink", || {
            Ok(RemoveEntry {
                creds: creds(p.creds)?,
                parent: Fid::from_field(p.parent, "parent")?,
                name: Name::from_field(p.name, "name")?,
                walk: walk_names(p.walk, "walk")?,
            })
        })
    }
}

impl TryFrom<pb::MdsRmdirRequest> for RemoveEntry {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsRmdirRequest) -> Result<Self, ProtocolError> {
        scoped("rmdir", || {
            Ok(RemoveEntry {
                creds: creds(p.creds)?,
                parent: Fid::from_field(p.parent, "parent")?,
                name: Name::from_field(p.name, "name")?,
                walk: walk_names(p.walk, "walk")?,
            })
        })
    }
}

/// Make a symbolic link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symlink {
    /// Caller.
    pub creds: Credentials,
    /// Directory.
    pub parent: Fid,
    /// Link name.
    pub name: Name,
    /// What it points to.
    pub target: SymlinkTarget,
    /// Names from `parent` to the directory `name` is in.
    pub walk: Vec<Name>,
}

impl TryFrom<pb::MdsSymlinkRequest> for Symlink {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsSymlinkRequest) -> Result<Self, ProtocolError> {
        scoped("symlink", || {
            Ok(Symlink {
                creds: creds(p.creds)?,
                parent: Fid::from_field(p.parent, "parent")?,
                name: Name::from_field(p.name, "name")?,
                target: SymlinkTarget::from_field(p.target, "target")?,
                walk: walk_names(p.walk, "walk")?,
            })
        })
    }
}

/// Make a hard link to an existing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Caller.
    pub creds: Credentials,
    /// Existing file.
    pub target: Fid,
    /// Directory of the new name.
    pub parent: Fid,
    /// New name.
    pub name: Name,
}

impl TryFrom<pb::MdsLinkRequest> for Link {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsLinkRequest) -> Result<Self, ProtocolError> {
        scoped("link", || {
            Ok(Link {
                creds: creds(p.creds)?,
                target: Fid::from_field(p.target, "target")?,
                parent: Fid::from_field(p.parent, "parent")?,
                name: Name::from_field(p.name, "name")?,
            })
        })
    }
}

/// File system space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statfs {
    /// Caller.
    pub creds: Credentials,
}

impl TryFrom<pb::MdsStatfsRequest> for Statfs {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsStatfsRequest) -> Result<Self, ProtocolError> {
        scoped("statfs", || Ok(Statfs { creds: creds(p.creds)? }))
    }
}

/// Set a directory's default layout or a new file's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setstripe {
    /// Caller.
    pub creds: Credentials,
    /// Directory or file.
    pub fid: Fid,
    /// The layout asked for.
    pub layout: LayoutRequest,
}

impl TryFrom<pb::MdsSetstripeRequest> for Setstripe {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsSetstripeRequest) -> Result<Self, ProtocolError> {
        scoped("setstripe", || {
            let layout = p.layout.ok_or_else(|| ProtocolError::missing("layout"))?;
            Ok(Setstripe {
                creds: creds(p.creds)?,
                fid: Fid::from_field(p.fid, "fid")?,
                layout: LayoutRequest::try_from(layout).map_err(|e| e.within("layout"))?,
            })
        })
    }
}

/// An operation on one entry by fid: the body of getstripe and readlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FidOp {
    /// Caller.
    pub creds: Credentials,
    /// The entry.
    pub fid: Fid,
}

impl TryFrom<pb::MdsGetstripeRequest> for FidOp {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsGetstripeRequest) -> Result<Self, ProtocolError> {
        scoped("getstripe", || {
            Ok(FidOp {
                creds: creds(p.creds)?,
                fid: Fid::from_field(p.fid, "fid")?,
            })
        })
    }
}

impl TryFrom<pb::MdsReadlinkRequest> for FidOp {
    type Error = ProtocolError;

    fn try_from(p: pb::MdsReadlinkRequest) -> Result<Self, ProtocolError> {
        scoped("readlink", || {
            Ok(FidOp {
                creds: creds(p.creds)?,
                fid: Fid::from_field(p.fid, "fid")?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Option<pb::Credentials> {
        Some(pb::Credentials {
            uid: 1,
            gid: 1,
            groups: vec![],
        })
    }

    fn f(ino: u64) -> Option<pb::Fid> {
        Some(pb::Fid { ino, generation: 0 })
    }

    #[test]
    fn a_lookup_walks_at_most_max_lookup_names_valid_names() {
        let req = |n: usize, bad: bool| pb::MdsLookupRequest {
            creds: c(),
            parent: f(1),
            name: b"a".to_vec(),
            more: (1..n)
                .map(|i| {
                    if bad && i == n - 1 {
                        b"x/y".to_vec()
                    } else {
                        format!("d{i}").into_bytes()
                    }
                })
                .collect(),
        };
        let l = Lookup::try_from(req(MAX_LOOKUP_NAMES, false)).unwrap();
        assert_eq!(l.more.len(), MAX_LOOKUP_NAMES - 1);
        assert_eq!(l.more[0].as_bytes(), b"d1");
        let e = Lookup::try_from(req(MAX_LOOKUP_NAMES + 1, false)).unwrap_err();
        assert!(e.to_string().contains("lookup.more"), "{e}");
        let e = Lookup::try_from(req(3, true)).unwrap_err();
        assert!(e.to_string().contains("lookup.more"), "{e}");
    }

    #[test]
    fn rename_and_symlink_walks_are_bounded_and_checked_per_field() {
        let names = |n: usize| (0..n).map(|i| format!("d{i}").into_bytes()).collect::<Vec<_>>();
        let rename = |src: Vec<Vec<u8>>, dst: Vec<Vec<u8>>| pb::MdsRenameRequest {
            creds: c(),
            src_parent: f(1),
            src_name: b"a".to_vec(),
            dst_parent: f(1),
            dst_name: b"b".to_vec(),
            flags: 0,
            src_walk: src,
            dst_walk: dst,
        };
        let r = Rename::try_from(rename(names(MAX_LOOKUP_NAMES - 1), names(2))).unwrap();
        assert_eq!((r.src_walk.len(), r.dst_walk.len()), (MAX_LOOKUP_NAMES - 1, 2));
        assert_eq!(r.dst_walk[1].as_bytes(), b"d1");
        let e = Rename::try_from(rename(names(MAX_LOOKUP_NAMES), vec![])).unwrap_err();
        assert_eq!(e.field(), Some("rename.src_walk"), "{e}");
        let e = Rename::try_from(rename(vec![], vec![b"..".to_vec()])).unwrap_err();
        assert_eq!(e.field(), Some("rename.dst_walk"), "{e}");
        let symlink = |walk| pb::MdsSymlinkRequest {
            creds: c(),
            parent: f(1),
            name: b"l".to_vec(),
            target: b"t".to_vec(),
            walk,
        };
        assert_eq!(Symlink::try_from(symlink(names(3))).unwrap().walk.len(), 3);
        let e = Symlink::try_from(symlink(vec![b"a/b".to_vec()])).unwrap_err();
        assert_eq!(e.field(), Some("symlink.walk"), "{e}");
    }

    #[test]
    fn create_names_the_bad_field() {
        let ok = pb::MdsCreateRequest {
            creds: c(),
            parent: f(1),
            name: b"a".to_vec(),
            walk: Vec::new(),
            mode: 0o644,
            flags: (OpenFlags::CREATE | OpenFlags::WRITE).bits(),
            layout: Some(pb::Layout {
                stripe_size: 1 << 20,
                stripe_count: 2,
                stripe_offset: -1,
                objects: vec![],
            }),
        };
        let v = Create::try_from(ok.clone()).unwrap();
        assert_eq!(v.layout.stripe_size, Some(1 << 20));
        let mut bad = ok.clone();
        bad.layout.as_mut().unwrap().stripe_size = 1000;
        assert_eq!(
            Create::try_from(bad).unwrap_err().field(),
            Some("create.layout.stripe_size")
        );
        let mut bad = ok.clone();
        bad.creds = None;
        assert_eq!(
            Create::try_from(bad).unwrap_err(),
            ProtocolError::missing("create.creds")
        );
        let mut bad = ok.clone();
        bad.name = b"..".to_vec();
        assert_eq!(Create::try_from(bad).unwrap_err().field(), Some("create.name"));
        let mut bad = ok;
        bad.parent = f(0);
        assert_eq!(Create::try_from(bad).unwrap_err().field(), Some("create.parent.ino"));
    }

    #[test]
    fn readdir_pages_are_bounded() {
        let p = |max_entries| pb::MdsReaddirRequest {
            creds: c(),
            dir: f(1),
            cookie: 0,
            max_entries,
        };
        assert!(Readdir::try_from(p(0)).is_err());
        assert!(Readdir::try_from(p(MAX_READDIR_ENTRIES + 1)).is_err());
        assert!(Readdir::try_from(p(MAX_READDIR_ENTRIES)).is_ok());
    }

    #[test]
    fn setattr_and_close_bound_sizes() {
        let p = pb::MdsSetattrRequest {
            creds: c(),
            fid: f(2),
            size: Some(u64::MAX),
            ..Default::default()
        };
        assert_eq!(Setattr::try_from(p).unwrap_err().field(), Some("setattr.size"));
        let p = pb::MdsSetattrRequest {
            creds: c(),
            fid: f(2),
            mode: Some(0o10000),
            ..Default::default()
        };
        assert_eq!(Setattr::try_from(p).unwrap_err().field(), Some("setattr.mode"));
        let p = pb::MdsCloseRequest {
            creds: c(),
            handle: 0,
            fid: f(2),
            size: None,
            mtime_ns: None,
            writer: false,
        };
        assert_eq!(Close::try_from(p).unwrap_err().field(), Some("close.handle"));
    }

    #[test]
    fn setstripe_needs_a_layout_and_symlink_a_target() {
        let p = pb::MdsSetstripeRequest {
            creds: c(),
            fid: f(2),
            layout: None,
        };
        assert_eq!(
            Setstripe::try_from(p).unwrap_err(),
            ProtocolError::missing("setstripe.layout")
        );
        let p = pb::MdsSymlinkRequest {
            creds: c(),
            parent: f(1),
            name: b"l".to_vec(),
            target: vec![],
            walk: Vec::new(),
        };
        assert_eq!(Symlink::try_from(p).unwrap_err().field(), Some("symlink.target"));
        let p = pb::MdsRmdirRequest {
            creds: c(),
            parent: f(1),
            name: b"a/b".to_vec(),
            walk: Vec::new(),
        };
        assert_eq!(RemoveEntry::try_from(p).unwrap_err().field(), Some("rmdir.name"));
    }
}
