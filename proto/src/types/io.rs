//! Object I/O parameters: [`Extent`], [`PunchRange`], [`BulkDesc`], [`Capability`], [`Rights`].

use super::attr::MAX_FILE_SIZE;
use super::ids::{Fid, ObjectRef};
use crate::{ProtocolError, pb};

/// Largest single bulk transfer (one read or write RPC), 64 MiB.
pub const MAX_BULK_LEN: u64 = 64 * 1024 * 1024;
/// Longest capability MAC (HMAC-SHA-512 size; SHA-256 uses 32).
pub const MAX_MAC_LEN: usize = 64;

/// A byte range `[offset, offset + length)` of a file or object: non-empty, ending at or before
/// [`MAX_FILE_SIZE`] (so the end never overflows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    offset: u64,
    length: u64,
}

impl Extent {
    /// A range of at most `max_len` bytes.
    pub fn new(offset: u64, length: u64, max_len: u64) -> Result<Self, ProtocolError> {
        if length == 0 {
            return Err(ProtocolError::invalid("length", "zero-length range"));
        }
        if length > max_len {
            return Err(ProtocolError::invalid(
                "length",
                format!("{length} bytes is more than the limit of {max_len}"),
            ));
        }
        match offset.checked_add(length) {
            Some(end) if end <= MAX_FILE_SIZE => Ok(Self { offset, length }),
            _ => Err(ProtocolError::invalid(
                "offset",
                format!("{offset} + {length} goes beyond the largest file size {MAX_FILE_SIZE}"),
            )),
        }
    }

    /// First byte.
    pub const fn offset(self) -> u64 {
        self.offset
    }

    /// Number of bytes (≥ 1).
    pub const fn length(self) -> u64 {
        self.length
    }

    /// One past the last byte.
    pub const fn end(self) -> u64 {
        self.offset + self.length
    }
}

/// What an OST punch does (`OstPunchRequest.length == u64::MAX` means truncate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunchRange {
    /// Set the object size to this and free everything beyond it.
    Truncate(u64),
    /// Free this range; it reads as zeros and the size does not change.
    Hole(Extent),
}

impl PunchRange {
    /// Validates the wire `offset` and `length` of a punch.
    pub fn new(offset: u64, length: u64) -> Result<Self, ProtocolError> {
        if length == u64::MAX {
            return super::attr::check_size(offset, "offset").map(PunchRange::Truncate);
        }
        Extent::new(offset, length, MAX_FILE_SIZE).map(PunchRange::Hole)
    }

    /// The wire `(offset, length)`.
    pub fn to_wire(self) -> (u64, u64) {
        match self {
            PunchRange::Truncate(size) => (size, u64::MAX),
            PunchRange::Hole(e) => (e.offset(), e.length()),
        }
    }
}

/// Client memory exposed for one bulk transfer, with the payload's crc32c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BulkDesc {
    /// Remote address (verbs) or token (tcp, sim).
    pub addr: u64,
    /// Remote key.
    pub rkey: u32,
    /// Length in bytes, 1..=[`MAX_BULK_LEN`].
    pub len: u64,
    /// crc32c of the payload.
    pub crc32c: u32,
}

impl BulkDesc {
    /// Converts an optional wire descriptor, naming `field` when absent or invalid.
    pub fn from_field(p: Option<pb::BulkDescriptor>, field: &'static str) -> Result<Self, ProtocolError> {
        let p = p.ok_or_else(|| ProtocolError::missing(field))?;
        BulkDesc::try_from(p).map_err(|e| e.within(field))
    }
}

impl TryFrom<pb::BulkDescriptor> for BulkDesc {
    type Error = ProtocolError;

    fn try_from(p: pb::BulkDescriptor) -> Result<Self, ProtocolError> {
        if p.len == 0 || p.len > MAX_BULK_LEN {
            return Err(ProtocolError::invalid(
                "len",
                format!("{} is not in 1..={MAX_BULK_LEN}", p.len),
            ));
        }
        Ok(BulkDesc {
            addr: p.addr,
            rkey: p.rkey,
            len: p.len,
            crc32c: p.crc32c,
        })
    }
}

impl From<BulkDesc> for pb::BulkDescriptor {
    fn from(b: BulkDesc) -> Self {
        pb::BulkDescriptor {
            addr: b.addr,
            rkey: b.rkey,
            len: b.len,
            crc32c: b.crc32c,
        }
    }
}

/// Rights a capability grants (`pb::CapabilityRight` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u32);

impl Rights {
    /// Read data.
    pub const READ: Rights = Rights(pb::CapabilityRight::Read as u32);
    /// Write data.
    pub const WRITE: Rights = Rights(pb::CapabilityRight::Write as u32);
    /// Punch or truncate.
    pub const PUNCH: Rights = Rights(pb::CapabilityRight::Punch as u32);
    /// Destroy the object.
    pub const DESTROY: Rights = Rights(pb::CapabilityRight::Destroy as u32);
    /// Read object attributes.
    pub const GETATTR: Rights = Rights(pb::CapabilityRight::Getattr as u32);
    /// Every defined bit.
    pub const ALL: u32 = Self::READ.0 | Self::WRITE.0 | Self::PUNCH.0 | Self::DESTROY.0 | Self::GETATTR.0;

    /// The bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is granted.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Rights {
    type Output = Rights;

    fn bitor(self, rhs: Rights) -> Rights {
        Rights(self.0 | rhs.0)
    }
}

impl TryFrom<u32> for Rights {
    type Error = ProtocolError;

    fn try_from(v: u32) -> Result<Self, ProtocolError> {
        if v & !Self::ALL != 0 {
            return Err(ProtocolError::invalid(
                "rights",
                format!("unknown bits {:#x}", v & !Self::ALL),
            ));
        }
        Ok(Rights(v))
    }
}

/// Permission for I/O on one object, issued by the MDS and checked by the OSS.
///
/// This type checks the shape only; whether the MAC is right is the OSS's business (it holds
/// the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Capability {
    /// Object it applies to.
    pub object: ObjectRef,
    /// Granted rights.
    pub rights: Rights,
    /// Expiry, ms since the epoch.
    pub expiry_unix_ms: u64,
    /// MAC over the other fields (at most [`MAX_MAC_LEN`] bytes).
    pub mac: Vec<u8>,
    /// File the object belongs to.
    pub fid: Option<Fid>,
    /// Client it was issued to (0 = any).
    pub client_id: u64,
}

impl Capability {
    /// Converts an optional capability field of an OST request about `object`: when present it
    /// must name that object and grant `needed`.
    pub fn for_request(
        p: Option<pb::Capability>,
        object: ObjectRef,
        needed: Rights,
        field: &'static str,
    ) -> Result<Option<Self>, ProtocolError> {
        let Some(p) = p else { return Ok(None) };
        let cap = Capability::try_from(p).map_err(|e| e.within(field))?;
        if cap.object != object {
            return Err(ProtocolError::invalid(
                format!("{field}.object"),
                format!("capability is for {}, the request is for {object}", cap.object),
            ));
        }
        if !cap.rights.contains(needed) {
            return Err(ProtocolError::invalid(
                format!("{field}.rights"),
                format!("{:#x} does not grant {:#x}", cap.rights.bits(), needed.bits()),
            ));
        }
        Ok(Some(cap))
    }
}

impl TryFrom<pb::Capability> for Capability {
    type Error = ProtocolError;

    fn try_from(p: pb::Capability) -> Result<Self, ProtocolError> {
        if p.mac.len() > MAX_MAC_LEN {
            return Err(ProtocolError::invalid(
                "mac",
                format!("{} bytes, more than {MAX_MAC_LEN}", p.mac.len()),
            ));
        }
        Ok(Capability {
            object: ObjectRef::from_field(p.object, "object")?,
            rights: Rights::try_from(p.rights)?,
            expiry_unix_ms: p.expiry_unix_ms,
            mac: p.mac,
            fid: p
                .fid
                .map(|f| Fid::try_from(f).map_err(|e| e.within("fid")))
                .transpose()?,
            client_id: p.client_id,
        })
    }
}

impl From<&Capability> for pb::Capability {
    fn from(c: &Capability) -> Self {
        pb::Capability {
            object: Some(c.object.into()),
            rights: c.rights.bits(),
            expiry_unix_ms: c.expiry_unix_ms,
            mac: c.mac.clone(),
            fid: c.fid.map(pb::Fid::from),
            client_id: c.client_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_never_overflow() {
        assert!(Extent::new(0, 0, 10).is_err());
        assert!(Extent::new(0, 11, 10).is_err());
        assert_eq!(Extent::new(u64::MAX, 1, 10).unwrap_err().field(), Some("offset"));
        assert!(Extent::new(MAX_FILE_SIZE - 1, 1, 10).is_ok());
        assert!(Extent::new(MAX_FILE_SIZE, 1, 10).is_err());
        assert_eq!(Extent::new(5, 10, 10).unwrap().end(), 15);
    }

    #[test]
    fn punch_max_length_means_truncate() {
        assert_eq!(PunchRange::new(100, u64::MAX), Ok(PunchRange::Truncate(100)));
        assert!(PunchRange::new(u64::MAX, u64::MAX).is_err());
        let hole = PunchRange::new(4096, 8192).unwrap();
        assert_eq!(hole.to_wire(), (4096, 8192));
        assert!(PunchRange::new(u64::MAX - 5, 10).is_err());
        assert!(PunchRange::new(0, 0).is_err());
    }

    #[test]
    fn bulk_length_is_bounded() {
        let p = |len| pb::BulkDescriptor {
            addr: 1,
            rkey: 2,
            len,
            crc32c: 3,
        };
        assert!(BulkDesc::try_from(p(0)).is_err());
        assert!(BulkDesc::try_from(p(MAX_BULK_LEN + 1)).is_err());
        let e = BulkDesc::from_field(Some(p(0)), "write.bulk").unwrap_err();
        assert_eq!(e.field(), Some("write.bulk.len"));
        let b = BulkDesc::try_from(p(4096)).unwrap();
        assert_eq!(pb::BulkDescriptor::from(b), p(4096));
    }

    #[test]
    fn capabilities_must_match_the_request() {
        let obj = pb::ObjectRef {
            ost_index: 1,
            object_id: 9,
        };
        let object = ObjectRef::try_from(obj).unwrap();
        let cap = pb::Capability {
            object: Some(obj),
            rights: Rights::READ.bits(),
            expiry_unix_ms: 10,
            mac: vec![1; 32],
            fid: None,
            client_id: 0,
        };
        assert!(
            Capability::for_request(Some(cap.clone()), object, Rights::READ, "read.cap")
                .unwrap()
                .is_some()
        );
        let e = Capability::for_request(Some(cap.clone()), object, Rights::WRITE, "write.cap").unwrap_err();
        assert_eq!(e.field(), Some("write.cap.rights"));
        let other = ObjectRef::try_from(pb::ObjectRef {
            ost_index: 2,
            object_id: 9,
        })
        .unwrap();
        let e = Capability::for_request(Some(cap.clone()), other, Rights::READ, "read.cap").unwrap_err();
        assert_eq!(e.field(), Some("read.cap.object"));
        let mut long = cap.clone();
        long.mac = vec![0; MAX_MAC_LEN + 1];
        assert!(Capability::try_from(long).is_err());
        let mut bad = cap;
        bad.rights = 1 << 10;
        assert_eq!(Capability::try_from(bad).unwrap_err().field(), Some("rights"));
        assert_eq!(
            Capability::for_request(None, object, Rights::READ, "read.cap"),
            Ok(None)
        );
    }
}
