//! Operation codes carried in the frame header.

use crate::ProtocolError;

/// Every operation of the wire protocol. The value is the `opcode` field of the frame header; a
/// reply carries the opcode of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Opcode {
    /// Connection set-up, cluster map and authentication.
    Handshake = 1,
    /// MDS: look a name up in a directory.
    MdsLookup = 10,
    /// MDS: create and/or open a regular file.
    MdsCreate = 11,
    /// MDS: close an open handle (size-on-close).
    MdsClose = 12,
    /// MDS: make a directory.
    MdsMkdir = 13,
    /// MDS: read one page of a directory.
    MdsReaddir = 14,
    /// MDS: get attributes.
    MdsGetattr = 15,
    /// MDS: set attributes.
    MdsSetattr = 16,
    /// MDS: rename an entry.
    MdsRename = 17,
    /// MDS: remove a non-directory entry.
    MdsUnlink = 18,
    /// MDS: remove an empty directory.
    MdsRmdir = 19,
    /// MDS: make a symbolic link.
    MdsSymlink = 20,
    /// MDS: make a hard link.
    MdsLink = 21,
    /// MDS: file system space and per-OST figures.
    MdsStatfs = 22,
    /// MDS: set a directory's default layout or a new file's layout.
    MdsSetstripe = 23,
    /// MDS: get a layout.
    MdsGetstripe = 24,
    /// MDS: read a symbolic link.
    MdsReadlink = 25,
    /// MDS: round-trip probe.
    MdsNull = 26,
    /// OST: allocate object ids.
    OstPrecreate = 40,
    /// OST: write to an object (bulk pulled from the client).
    OstWrite = 41,
    /// OST: read from an object (bulk pushed to the client).
    OstRead = 42,
    /// OST: punch a hole or truncate an object.
    OstPunch = 43,
    /// OST: destroy an object.
    OstDestroy = 44,
    /// OST: object size, blocks and mtime.
    OstGetattr = 45,
    /// OST: target space figures.
    OstStatfs = 46,
    /// OST: make acknowledged writes durable.
    OstSync = 47,
    /// OST: round-trip probe.
    OstNull = 48,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 27] = [
        Opcode::Handshake,
        Opcode::MdsLookup,
        Opcode::MdsCreate,
        Opcode::MdsClose,
        Opcode::MdsMkdir,
        Opcode::MdsReaddir,
        Opcode::MdsGetattr,
        Opcode::MdsSetattr,
        Opcode::MdsRename,
        Opcode::MdsUnlink,
        Opcode::MdsRmdir,
        Opcode::MdsSymlink,
        Opcode::MdsLink,
        Opcode::MdsStatfs,
        Opcode::MdsSetstripe,
        Opcode::MdsGetstripe,
        Opcode::MdsReadlink,
        Opcode::MdsNull,
        Opcode::OstPrecreate,
        Opcode::OstWrite,
        Opcode::OstRead,
        Opcode::OstPunch,
        Opcode::OstDestroy,
        Opcode::OstGetattr,
        Opcode::OstStatfs,
        Opcode::OstSync,
        Opcode::OstNull,
    ];

    /// The numeric wire value.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// A stable lower-case name for logs and metrics, e.g. `mds.create`, `ost.write`.
    pub const fn name(self) -> &'static str {
        match self {
            Opcode::Handshake => "handshake",
            Opcode::MdsLookup => "mds.lookup",
            Opcode::MdsCreate => "mds.create",
            Opcode::MdsClose => "mds.close",
            Opcode::MdsMkdir => "mds.mkdir",
            Opcode::MdsReaddir => "mds.readdir",
            Opcode::MdsGetattr => "mds.getattr",
            Opcode::MdsSetattr => "mds.setattr",
            Opcode::MdsRename => "mds.rename",
            Opcode::MdsUnlink => "mds.unlink",
            Opcode::MdsRmdir => "mds.rmdir",
            Opcode::MdsSymlink => "mds.symlink",
            Opcode::MdsLink => "mds.link",
            Opcode::MdsStatfs => "mds.statfs",
            Opcode::MdsSetstripe => "mds.setstripe",
            Opcode::MdsGetstripe => "mds.getstripe",
            Opcode::MdsReadlink => "mds.readlink",
            Opcode::MdsNull => "mds.null",
            Opcode::OstPrecreate => "ost.precreate",
            Opcode::OstWrite => "ost.write",
            Opcode::OstRead => "ost.read",
            Opcode::OstPunch => "ost.punch",
            Opcode::OstDestroy => "ost.destroy",
            Opcode::OstGetattr => "ost.getattr",
            Opcode::OstStatfs => "ost.statfs",
            Opcode::OstSync => "ost.sync",
            Opcode::OstNull => "ost.null",
        }
    }

    /// True for operations served by the MDS.
    pub const fn is_mds(self) -> bool {
        matches!(self as u16, 10..=39)
    }

    /// True for operations served by an OSS.
    pub const fn is_ost(self) -> bool {
        matches!(self as u16, 40..=69)
    }
}

impl TryFrom<u16> for Opcode {
    type Error = ProtocolError;

    fn try_from(v: u16) -> Result<Self, Self::Error> {
        Ok(match v {
            1 => Opcode::Handshake,
            10 => Opcode::MdsLookup,
            11 => Opcode::MdsCreate,
            12 => Opcode::MdsClose,
            13 => Opcode::MdsMkdir,
            14 => Opcode::MdsReaddir,
            15 => Opcode::MdsGetattr,
            16 => Opcode::MdsSetattr,
            17 => Opcode::MdsRename,
            18 => Opcode::MdsUnlink,
            19 => Opcode::MdsRmdir,
            20 => Opcode::MdsSymlink,
            21 => Opcode::MdsLink,
            22 => Opcode::MdsStatfs,
            23 => Opcode::MdsSetstripe,
            24 => Opcode::MdsGetstripe,
            25 => Opcode::MdsReadlink,
            26 => Opcode::MdsNull,
            40 => Opcode::OstPrecreate,
            41 => Opcode::OstWrite,
            42 => Opcode::OstRead,
            43 => Opcode::OstPunch,
            44 => Opcode::OstDestroy,
            45 => Opcode::OstGetattr,
            46 => Opcode::OstStatfs,
            47 => Opcode::OstSync,
            48 => Opcode::OstNull,
            other => return Err(ProtocolError::UnknownOpcode(other)),
        })
    }
}

impl From<Opcode> for u16 {
    fn from(op: Opcode) -> u16 {
        op as u16
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_round_trips_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for op in Opcode::ALL {
            assert_eq!(Opcode::try_from(op.as_u16()), Ok(op));
            assert!(names.insert(op.name()), "duplicate name {}", op.name());
            assert!(op.is_mds() || op.is_ost() || op == Opcode::Handshake);
        }
        let known = (0..=u16::MAX).filter(|v| Opcode::try_from(*v).is_ok()).count();
        assert_eq!(known, Opcode::ALL.len());
        assert_eq!(Opcode::try_from(2), Err(ProtocolError::UnknownOpcode(2)));
    }
}
