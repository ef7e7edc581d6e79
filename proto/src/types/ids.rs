//! Identifiers: [`Xid`], [`Fid`], [`ObjectId`], [`OstIndex`], [`ObjectRef`].

use crate::{ProtocolError, pb};

/// Largest number of OSTs in a file system; OST indexes are below it.
pub const MAX_OST_COUNT: u32 = 65_536;

/// Transaction id of a request, unique per client connection; never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xid(u64);

impl Xid {
    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Xid {
    type Error = ProtocolError;

    fn try_from(v: u64) -> Result<Self, ProtocolError> {
        if v == 0 {
            return Err(ProtocolError::invalid("frame.xid", "0 is reserved"));
        }
        Ok(Xid(v))
    }
}

impl std::fmt::Display for Xid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x{}", self.0)
    }
}

/// File identifier: inode number (never 0) and the generation distinguishing reuses of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fid {
    ino: u64,
    generation: u32,
}

impl Fid {
    /// The root directory of every file system.
    pub const ROOT: Fid = Fid { ino: 1, generation: 0 };

    /// A fid; `ino` must not be 0.
    pub fn new(ino: u64, generation: u32) -> Result<Self, ProtocolError> {
        if ino == 0 {
            return Err(ProtocolError::invalid("ino", "0 is not a file"));
        }
        Ok(Self { ino, generation })
    }

    /// Inode number.
    pub const fn ino(self) -> u64 {
        self.ino
    }

    /// Generation.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// Converts an optional wire fid (a message field), naming `field` when absent or invalid.
    pub fn from_field(p: Option<pb::Fid>, field: &'static str) -> Result<Self, ProtocolError> {
        let p = p.ok_or_else(|| ProtocolError::missing(field))?;
        Fid::try_from(p).map_err(|e| e.within(field))
    }
}

impl TryFrom<pb::Fid> for Fid {
    type Error = ProtocolError;

    fn try_from(p: pb::Fid) -> Result<Self, ProtocolError> {
        Fid::new(p.ino, p.generation)
    }
}

impl From<Fid> for pb::Fid {
    fn from(f: Fid) -> Self {
        pb::Fid {
            ino: f.ino,
            generation: f.generation,
        }
    }
}

impl std::fmt::Display for Fid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#x}:{}]", self.ino, self.generation)
    }
}

/// Id of an object within one OST; never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(u64);

impl ObjectId {
    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for ObjectId {
    type Error = ProtocolError;

    fn try_from(v: u64) -> Result<Self, ProtocolError> {
        if v == 0 {
            return Err(ProtocolError::invalid("object_id", "0 is not an object"));
        }
        Ok(ObjectId(v))
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Index of an OST in the file system, below [`MAX_OST_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OstIndex(u32);

impl OstIndex {
    /// The numeric value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Checks the index against the number of OSTs of the file system.
    pub fn check(self, ost_count: u32) -> Result<Self, ProtocolError> {
        if self.0 >= ost_count {
            return Err(ProtocolError::invalid(
                "ost_index",
                format!(
                    "OST{:04x} does not exist (the file system has {ost_count} OSTs)",
                    self.0
                ),
            ));
        }
        Ok(self)
    }
}

impl TryFrom<u32> for OstIndex {
    type Error = ProtocolError;

    fn try_from(v: u32) -> Result<Self, ProtocolError> {
        if v >= MAX_OST_COUNT {
            return Err(ProtocolError::invalid(
                "ost_index",
                format!("{v} is not below the limit of {MAX_OST_COUNT} OSTs"),
            ));
        }
        Ok(OstIndex(v))
    }
}

impl std::fmt::Display for OstIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OST{:04x}", self.0)
    }
}

/// One OST object: the OST and the object id within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// OST holding the object.
    pub ost: OstIndex,
    /// Object id within that OST.
    pub id: ObjectId,
}

impl ObjectRef {
    /// Converts an optional wire object (a message field), naming `field` when absent or invalid.
    pub fn from_field(p: Option<pb::ObjectRef>, field: &'static str) -> Result<Self, ProtocolError> {
        let p = p.ok_or_else(|| ProtocolError::missing(field))?;
        ObjectRef::try_from(p).map_err(|e| e.within(field))
    }
}

impl TryFrom<pb::ObjectRef> for ObjectRef {
    type Error = ProtocolError;

    fn try_from(p: pb::ObjectRef) -> Result<Self, ProtocolError> {
        Ok(ObjectRef {
            ost: OstIndex::try_from(p.ost_index)?,
            id: ObjectId::try_from(p.object_id)?,
        })
    }
}

impl From<ObjectRef> for pb::ObjectRef {
    fn from(o: ObjectRef) -> Self {
        pb::ObjectRef {
            ost_index: o.ost.get(),
            object_id: o.id.get(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ost, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_ids_are_refused_with_their_field() {
        assert!(Xid::try_from(0).is_err());
        assert_eq!(Xid::try_from(7).map(Xid::get), Ok(7));
        let e = Fid::from_field(Some(pb::Fid { ino: 0, generation: 1 }), "lookup.parent").unwrap_err();
        assert_eq!(e.field(), Some("lookup.parent.ino"));
        let e = Fid::from_field(None, "lookup.parent").unwrap_err();
        assert_eq!(e, ProtocolError::missing("lookup.parent"));
        let e = ObjectRef::from_field(
            Some(pb::ObjectRef {
                ost_index: 1,
                object_id: 0,
            }),
            "write.object",
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("write.object.object_id"));
    }

    #[test]
    fn ost_indexes_are_bounded() {
        assert!(OstIndex::try_from(MAX_OST_COUNT).is_err());
        let i = OstIndex::try_from(3).unwrap();
        assert!(i.check(3).is_err());
        assert!(i.check(4).is_ok());
        assert_eq!(i.to_string(), "OST0003");
    }

    #[test]
    fn fids_round_trip() {
        let f = Fid::new(42, 3).unwrap();
        assert_eq!(Fid::try_from(pb::Fid::from(f)), Ok(f));
        assert_eq!(Fid::ROOT.ino(), 1);
    }
}
