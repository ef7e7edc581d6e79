//! uid/gid/mode permission checks.

use super::inode::{Inode, Kind, S_ISVTX};
use crate::errno::Errno;

/// Read permission.
pub const MAY_READ: u32 = 4;
/// Write permission.
pub const MAY_WRITE: u32 = 2;
/// Execute / search permission.
pub const MAY_EXEC: u32 = 1;

/// Most supplementary groups a request may carry (NGROUPS_MAX is 65536, but the RPC is bounded).
pub const MAX_GROUPS: usize = 64;

/// The caller's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Supplementary groups (at most [`MAX_GROUPS`]).
    pub groups: Vec<u32>,
}

impl Cred {
    /// The superuser.
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }
    /// An ordinary user.
    pub fn user(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            groups: Vec::new(),
        }
    }
    /// True if the caller is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
    /// True for uid 0.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
    /// True if the caller owns `ino` or is root.
    pub fn owns(&self, ino: &Inode) -> bool {
        self.is_root() || self.uid == ino.uid
    }
}

/// Checks that `cred` may access `ino` with `mask` (MAY_* bits), POSIX style: owner bits, else
/// group bits, else other bits. Root passes, except that execute on a non-directory needs at
/// least one execute bit.
pub fn may(ino: &Inode, cred: &Cred, mask: u32) -> Result<(), Errno> {
    if cred.is_root() {
        if mask & MAY_EXEC != 0 && ino.kind() != Kind::Dir && ino.mode & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        return Ok(());
    }
    let bits = if cred.uid == ino.uid {
        ino.mode >> 6
    } else if cred.in_group(ino.gid) {
        ino.mode >> 3
    } else {
        ino.mode
    } & 7;
    if bits & mask == mask {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

/// The sticky-bit rule for removing or renaming `victim` out of `dir`: in a sticky directory only
/// the file's owner, the directory's owner or root may do it.
pub fn sticky_ok(dir: &Inode, victim: &Inode, cred: &Cred) -> Result<(), Errno> {
    if dir.mode & S_ISVTX == 0 || cred.is_root() || cred.uid == dir.uid || cred.uid == victim.uid {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}
