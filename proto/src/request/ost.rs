//! Validated OST requests. Field paths in errors start with `ost.` and the operation name
//! (`ost.write.bulk.len`).

use crate::types::{BulkDesc, Capability, Extent, MAX_BULK_LEN, ObjectRef, OstIndex, PunchRange, Rights};
use crate::{ProtocolError, pb};

/// Most object ids one precreate may ask for.
pub const MAX_PRECREATE: u32 = 65_536;

/// Longest read whose bytes may come back in the reply (`OstReadRequest.reply_inline`).
pub const MAX_INLINE_READ: u64 = 64 * 1024;

/// Most byte ranges one write or read may carry (`offset`/`length` and `more`).
pub const MAX_IO_RANGES: usize = 64;

fn scoped<T>(op: &'static str, f: impl FnOnce() -> Result<T, ProtocolError>) -> Result<T, ProtocolError> {
    f().map_err(|e| e.within(op))
}

/// Allocate `count` object ids on an OST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precreate {
    /// Target OST.
    pub ost: OstIndex,
    /// How many, 1..=[`MAX_PRECREATE`].
    pub count: u32,
}

impl TryFrom<pb::OstPrecreateRequest> for Precreate {
    type Error = ProtocolError;

    fn try_from(p: pb::OstPrecreateRequest) -> Result<Self, ProtocolError> {
        scoped("ost.precreate", || {
            if p.count == 0 || p.count > MAX_PRECREATE {
                return Err(ProtocolError::invalid(
                    "count",
                    format!("{} is not in 1..={MAX_PRECREATE}", p.count),
                ));
            }
            Ok(Precreate {
                ost: OstIndex::try_from(p.ost_index)?,
                count: p.count,
            })
        })
    }
}

/// A bulk data transfer on one object: the body of write and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIo {
    /// The object.
    pub object: ObjectRef,
    /// Byte range, at most [`MAX_BULK_LEN`] bytes.
    pub extent: Extent,
    /// Client memory (its length equals the extent's); `None` only for a read whose bytes go in
    /// the reply (at most [`MAX_INLINE_READ`]).
    pub bulk: Option<BulkDesc>,
    /// Permission, when the cluster uses capabilities.
    pub cap: Option<Capability>,
    /// Further ranges, after `extent`: ascending, not overlapping, their bytes in the bulk after
    /// the previous ranges' (empty for a single-range write or read).
    pub more: Vec<Extent>,
}

impl ObjectIo {
    /// Every range, `extent` first.
    pub fn ranges(&self) -> impl Iterator<Item = Extent> + '_ {
        std::iter::once(self.extent).chain(self.more.iter().copied())
    }
}

struct IoFields {
    object: Option<pb::ObjectRef>,
    offset: u64,
    length: u64,
    bulk: Option<pb::BulkDescriptor>,
    cap: Option<pb::Capability>,
    more: Vec<pb::ByteRange>,
}

fn object_io(p: IoFields, needed: Rights, inline: bool) -> Result<ObjectIo, ProtocolError> {
    let IoFields {
        object,
        offset,
        length,
        bulk,
        cap,
        more,
    } = p;
    let object = ObjectRef::from_field(object, "object")?;
    let extent = Extent::new(offset, length, MAX_BULK_LEN)?;
    if more.len() >= MAX_IO_RANGES {
        return Err(ProtocolError::invalid(
            "more",
            format!("{} ranges, at most {MAX_IO_RANGES} in all", more.len() + 1),
        ));
    }
    let mut total = extent.length();
    let mut end = extent.end();
    let mut further = Vec::with_capacity(more.len());
    for (i, r) in more.iter().enumerate() {
        let e = Extent::new(r.offset, r.length, MAX_BULK_LEN).map_err(|e| e.within(&format!("more[{i}]")))?;
        if e.offset() < end {
            return Err(ProtocolError::invalid(
                format!("more[{i}].offset"),
                format!("{} is before the end {end} of the range before it", e.offset()),
            ));
        }
        total += e.length();
        if total > MAX_BULK_LEN {
            return Err(ProtocolError::invalid(
                "more",
                format!("the ranges add up to more than the limit of {MAX_BULK_LEN} bytes"),
            ));
        }
        end = e.end();
        further.push(e);
    }
    let bulk = if inline {
        if bulk.is_some() {
            return Err(ProtocolError::invalid("bulk", "given with reply_inline"));
        }
        if total > MAX_INLINE_READ {
            return Err(ProtocolError::invalid(
                "length",
                format!("{total} is more than {MAX_INLINE_READ} for reply_inline"),
            ));
        }
        None
    } else {
        let bulk = BulkDesc::from_field(bulk, "bulk")?;
        if bulk.len != total {
            return Err(ProtocolError::invalid(
                "bulk.len",
                format!("{} differs from the request length {total}", bulk.len),
            ));
        }
        Some(bulk)
    };
    Ok(ObjectIo {
        object,
        extent,
        bulk,
        cap: Capability::for_request(cap, object, needed, "cap")?,
        more: further,
    })
}

impl TryFrom<pb::OstWriteRequest> for ObjectIo {
    type Error = ProtocolError;

    fn try_from(p: pb::OstWriteRequest) -> Result<Self, ProtocolError> {
        scoped("ost.write", || {
            let fields = IoFields {
                object: p.object,
                offset: p.offset,
                length: p.length,
                bulk: p.bulk,
                cap: p.cap,
                more: p.more,
            };
            object_io(fields, Rights::WRITE, false)
        })
    }
}

impl TryFrom<pb::OstReadRequest> for ObjectIo {
    type Error = ProtocolError;

    fn try_from(p: pb::OstReadRequest) -> Result<Self, ProtocolError> {
        scoped("ost.read", || {
            let fields = IoFields {
                object: p.object,
                offset: p.offset,
                length: p.length,
                bulk: p.bulk,
                cap: p.cap,
                more: p.more,
            };
            object_io(fields, Rights::READ, p.reply_inline)
        })
    }
}

/// Punch a hole in, or truncate, an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Punch {
    /// The object.
    pub object: ObjectRef,
    /// What to free.
    pub range: PunchRange,
    /// Permission, when the cluster uses capabilities.
    pub cap: Option<Capability>,
}

impl TryFrom<pb::OstPunchRequest> for Punch {
    type Error = ProtocolError;

    fn try_from(p: pb::OstPunchRequest) -> Result<Self, ProtocolError> {
        scoped("ost.punch", || {
            let object = ObjectRef::from_field(p.object, "object")?;
            Ok(Punch {
                object,
                range: PunchRange::new(p.offset, p.length)?,
                cap: Capability::for_request(p.cap, object, Rights::PUNCH, "cap")?,
            })
        })
    }
}

/// An operation on a whole object: the body of destroy and getattr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOp {
    /// The object.
    pub object: ObjectRef,
    /// Permission, when the cluster uses capabilities.
    pub cap: Option<Capability>,
}

impl TryFrom<pb::OstDestroyRequest> for ObjectOp {
    type Error = ProtocolError;

    fn try_from(p: pb::OstDestroyRequest) -> Result<Self, ProtocolError> {
        scoped("ost.destroy", || {
            let object = ObjectRef::from_field(p.object, "object")?;
            Ok(ObjectOp {
                object,
                cap: Capability::for_request(p.cap, object, Rights::DESTROY, "cap")?,
            })
        })
    }
}

impl TryFrom<pb::OstGetattrRequest> for ObjectOp {
    type Error = ProtocolError;

    fn try_from(p: pb::OstGetattrRequest) -> Result<Self, ProtocolError> {
        scoped("ost.getattr", || {
            let object = ObjectRef::from_field(p.object, "object")?;
            Ok(ObjectOp {
                object,
                cap: Capability::for_request(p.cap, object, Rights::GETATTR, "cap")?,
            })
        })
    }
}

/// Space figures of one OST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statfs {
    /// Target OST.
    pub ost: OstIndex,
}

impl TryFrom<pb::OstStatfsRequest> for Statfs {
    type Error = ProtocolError;

    fn try_from(p: pb::OstStatfsRequest) -> Result<Self, ProtocolError> {
        scoped("ost.statfs", || {
            Ok(Statfs {
                ost: OstIndex::try_from(p.ost_index)?,
            })
        })
    }
}

/// Make acknowledged writes durable: one object or the whole OST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    /// Target OST.
    pub ost: OstIndex,
    /// One object of that OST, or `None` for all.
    pub object: Option<ObjectRef>,
}

impl TryFrom<pb::OstSyncRequest> for Sync {
    type Error = ProtocolError;

    fn try_from(p: pb::OstSyncRequest) -> Result<Self, ProtocolError> {
        scoped("ost.sync", || {
            let ost = OstIndex::try_from(p.ost_index)?;
            let object = p
                .object
                .map(|o| ObjectRef::try_from(o).map_err(|e| e.within("object")))
                .transpose()?;
            if let Some(o) = object.filter(|o| o.ost != ost) {
                return Err(ProtocolError::invalid(
                    "object.ost_index",
                    format!("{} is not the target {ost}", o.ost),
                ));
            }
            Ok(Sync { ost, object })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> Option<pb::ObjectRef> {
        Some(pb::ObjectRef {
            ost_index: 2,
            object_id: 77,
        })
    }

    fn write(offset: u64, length: u64, bulk_len: u64) -> pb::OstWriteRequest {
        pb::OstWriteRequest {
            object: obj(),
            offset,
            length,
            bulk: Some(pb::BulkDescriptor {
                addr: 0x1000,
                rkey: 5,
                len: bulk_len,
                crc32c: 9,
            }),
            cap: None,
            more: Vec::new(),
        }
    }

    fn range(offset: u64, length: u64) -> pb::ByteRange {
        pb::ByteRange { offset, length }
    }

    #[test]
    fn a_write_of_several_ranges_checks_each_and_their_order() {
        let mut w = write(100, 10, 10 + 20 + 5);
        w.more = vec![range(110, 20), range(9000, 5)];
        let io = ObjectIo::try_from(w.clone()).unwrap();
        let got: Vec<(u64, u64)> = io.ranges().map(|e| (e.offset(), e.length())).collect();
        assert_eq!(got, [(100, 10), (110, 20), (9000, 5)]);
        for (more, bulk_len, field) in [
            // Overlapping the range before, or out of order.
            (vec![range(105, 20)], 30, "ost.write.more[0].offset"),
            (vec![range(200, 5), range(150, 5)], 20, "ost.write.more[1].offset"),
            // Empty, or past the largest file size.
            (vec![range(200, 0)], 10, "ost.write.more[0].length"),
            (vec![range(u64::MAX - 1, 5)], 15, "ost.write.more[0].offset"),
            // The bulk must carry every range.
            (vec![range(200, 5)], 10, "ost.write.bulk.len"),
            // Too many ranges, or too many bytes in all.
            (
                (0..MAX_IO_RANGES as u64).map(|i| range(1000 + 10 * i, 1)).collect(),
                10 + MAX_IO_RANGES as u64,
                "ost.write.more",
            ),
            (vec![range(1 << 40, MAX_BULK_LEN)], 10 + MAX_BULK_LEN, "ost.write.more"),
        ] {
            let mut w = write(100, 10, bulk_len);
            w.more = more;
            assert_eq!(ObjectIo::try_from(w).unwrap_err().field(), Some(field));
        }
    }

    #[test]
    fn write_checks_extent_and_bulk() {
        let w = ObjectIo::try_from(write(4096, 8192, 8192)).unwrap();
        assert_eq!(
            (w.extent.offset(), w.extent.length(), w.bulk.map(|b| b.rkey)),
            (4096, 8192, Some(5))
        );
        assert_eq!(
            ObjectIo::try_from(write(0, 8192, 4096)).unwrap_err().field(),
            Some("ost.write.bulk.len")
        );
        assert_eq!(
            ObjectIo::try_from(write(u64::MAX - 10, 100, 100)).unwrap_err().field(),
            Some("ost.write.offset")
        );
        let big = MAX_BULK_LEN + 1;
        assert_eq!(
            ObjectIo::try_from(write(0, big, big)).unwrap_err().field(),
            Some("ost.write.length")
        );
        let mut w = write(0, 1, 1);
        w.bulk = None;
        assert_eq!(
            ObjectIo::try_from(w).unwrap_err(),
            ProtocolError::missing("ost.write.bulk")
        );
    }

    #[test]
    fn read_needs_the_read_right() {
        let p = pb::OstReadRequest {
            object: obj(),
            offset: 0,
            length: 10,
            bulk: Some(pb::BulkDescriptor {
                addr: 1,
                rkey: 1,
                len: 10,
                crc32c: 0,
            }),
            cap: Some(pb::Capability {
                object: obj(),
                rights: Rights::WRITE.bits(),
                ..Default::default()
            }),
            reply_inline: false,
            more: Vec::new(),
        };
        assert_eq!(ObjectIo::try_from(p).unwrap_err().field(), Some("ost.read.cap.rights"));
    }

    #[test]
    fn inline_reads_are_short_and_carry_no_bulk() {
        let read = |length: u64, bulk: bool| pb::OstReadRequest {
            object: obj(),
            offset: 0,
            length,
            bulk: bulk.then_some(pb::BulkDescriptor {
                addr: 1,
                rkey: 1,
                len: length,
                crc32c: 0,
            }),
            cap: None,
            reply_inline: true,
            more: Vec::new(),
        };
        let r = ObjectIo::try_from(read(MAX_INLINE_READ, false)).unwrap();
        assert_eq!((r.extent.length(), r.bulk), (MAX_INLINE_READ, None));
        assert_eq!(
            ObjectIo::try_from(read(MAX_INLINE_READ + 1, false))
                .unwrap_err()
                .field(),
            Some("ost.read.length")
        );
        assert_eq!(
            ObjectIo::try_from(read(10, true)).unwrap_err().field(),
            Some("ost.read.bulk")
        );
        // Inline, every range counts toward the limit.
        let mut p = read(MAX_INLINE_READ - 10, false);
        p.more = vec![range(1 << 20, 10)];
        assert_eq!(ObjectIo::try_from(p.clone()).unwrap().ranges().count(), 2);
        p.more[0].length = 11;
        assert_eq!(ObjectIo::try_from(p).unwrap_err().field(), Some("ost.read.length"));
        // Without reply_inline the bulk stays mandatory.
        let mut p = read(10, false);
        p.reply_inline = false;
        assert_eq!(
            ObjectIo::try_from(p).unwrap_err(),
            ProtocolError::missing("ost.read.bulk")
        );
    }

    #[test]
    fn punch_precreate_and_sync() {
        let p = pb::OstPunchRequest {
            object: obj(),
            offset: 10,
            length: u64::MAX,
            cap: None,
        };
        assert_eq!(Punch::try_from(p).unwrap().range, PunchRange::Truncate(10));
        let p = pb::OstPrecreateRequest { ost_index: 0, count: 0 };
        assert_eq!(Precreate::try_from(p).unwrap_err().field(), Some("ost.precreate.count"));
        let p = pb::OstSyncRequest {
            ost_index: 3,
            object: obj(),
        };
        assert_eq!(
            Sync::try_from(p).unwrap_err().field(),
            Some("ost.sync.object.ost_index")
        );
        let p = pb::OstSyncRequest {
            ost_index: 2,
            object: obj(),
        };
        assert!(Sync::try_from(p).unwrap().object.is_some());
    }
}
