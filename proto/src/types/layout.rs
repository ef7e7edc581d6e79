//! File striping: [`StripeLayout`] (a file's layout or a directory default) and
//! [`LayoutRequest`] (what create/mkdir/setstripe ask for, with defaults left open).

use super::ids::{MAX_OST_COUNT, ObjectRef, OstIndex};
use crate::{ProtocolError, pb};

/// Stripe sizes are multiples of this (64 KiB).
pub const STRIPE_SIZE_UNIT: u32 = 64 * 1024;
/// Stripe size used when nothing else is configured (1 MiB).
pub const DEFAULT_STRIPE_SIZE: u32 = 1024 * 1024;
/// Largest stripe count of one file.
pub const MAX_STRIPE_COUNT: u32 = 2000;
/// `Layout.stripe_count` value in a request meaning "stripe over every OST".
pub const STRIPE_COUNT_ALL: u32 = u32::MAX;

/// RAID-0 layout of a file over OST objects, or a directory's default layout (no objects).
///
/// Invariants: the stripe size is a non-zero multiple of 64 KiB (so at most 4 GiB − 64 KiB, the
/// field being 32 bits); 1 ≤ stripe count ≤ [`MAX_STRIPE_COUNT`]; `objects` is empty or lists
/// exactly `stripe_count` objects, on distinct OSTs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StripeLayout {
    stripe_size: u32,
    stripe_count: u32,
    stripe_offset: Option<OstIndex>,
    objects: Vec<ObjectRef>,
}

fn check_stripe_size(v: u32) -> Result<u32, ProtocolError> {
    if v == 0 || v & (STRIPE_SIZE_UNIT - 1) != 0 {
        return Err(ProtocolError::invalid(
            "stripe_size",
            format!("{v} is not a non-zero multiple of 64 KiB"),
        ));
    }
    Ok(v)
}

fn check_stripe_count(v: u32) -> Result<u32, ProtocolError> {
    if v == 0 || v > MAX_STRIPE_COUNT {
        return Err(ProtocolError::invalid(
            "stripe_count",
            format!("{v} is not in 1..={MAX_STRIPE_COUNT}"),
        ));
    }
    Ok(v)
}

fn check_stripe_offset(v: i32) -> Result<Option<OstIndex>, ProtocolError> {
    match v {
        -1 => Ok(None),
        v if v < 0 => Err(ProtocolError::invalid(
            "stripe_offset",
            format!("{v} is neither -1 (any) nor an OST index"),
        )),
        v => OstIndex::try_from(v.unsigned_abs())
            .map(Some)
            .map_err(|e| e.at("stripe_offset")),
    }
}

impl StripeLayout {
    /// A layout; `objects` may be empty (a default or a layout not yet instantiated).
    pub fn new(
        stripe_size: u32,
        stripe_count: u32,
        stripe_offset: Option<OstIndex>,
        objects: Vec<ObjectRef>,
    ) -> Result<Self, ProtocolError> {
        check_stripe_size(stripe_size)?;
        check_stripe_count(stripe_count)?;
        if !objects.is_empty() {
            if objects.len() != stripe_count as usize {
                return Err(ProtocolError::invalid(
                    "objects",
                    format!("{} objects for a stripe count of {stripe_count}", objects.len()),
                ));
            }
            for (i, o) in objects.iter().enumerate() {
                if let Some(j) = objects[..i].iter().position(|p| p.ost == o.ost) {
                    return Err(ProtocolError::invalid(
                        format!("objects[{i}].ost_index"),
                        format!("{} already holds stripe {j} of this file", o.ost),
                    ));
                }
            }
        }
        Ok(Self {
            stripe_size,
            stripe_count,
            stripe_offset,
            objects,
        })
    }

    /// Bytes per stripe chunk.
    pub fn stripe_size(&self) -> u32 {
        self.stripe_size
    }

    /// Number of stripes (objects).
    pub fn stripe_count(&self) -> u32 {
        self.stripe_count
    }

    /// OST of the first stripe, if one was asked for.
    pub fn stripe_offset(&self) -> Option<OstIndex> {
        self.stripe_offset
    }

    /// Objects in stripe order (empty for a default layout).
    pub fn objects(&self) -> &[ObjectRef] {
        &self.objects
    }

    /// The same layout instantiated on `objects` (one per stripe, distinct OSTs).
    pub fn with_objects(&self, objects: Vec<ObjectRef>) -> Result<Self, ProtocolError> {
        if objects.is_empty() {
            return Err(ProtocolError::invalid("objects", "no objects given"));
        }
        Self::new(self.stripe_size, self.stripe_count, self.stripe_offset, objects)
    }

    /// Checks the layout against a file system of `ost_count` OSTs: the stripe count, the
    /// starting OST and every object's OST must fit.
    pub fn validate(&self, ost_count: u32) -> Result<(), ProtocolError> {
        if self.stripe_count > ost_count {
            return Err(ProtocolError::invalid(
                "stripe_count",
                format!("{} stripes but the file system has {ost_count} OSTs", self.stripe_count),
            ));
        }
        if let Some(off) = self.stripe_offset {
            off.check(ost_count).map_err(|e| e.at("stripe_offset"))?;
        }
        for (i, o) in self.objects.iter().enumerate() {
            o.ost
                .check(ost_count)
                .map_err(|e| e.at(format!("objects[{i}].ost_index")))?;
        }
        Ok(())
    }

    /// Converts an optional wire layout (a message field), naming `field` when absent or invalid.
    pub fn from_field(p: Option<pb::Layout>, field: &'static str) -> Result<Self, ProtocolError> {
        let p = p.ok_or_else(|| ProtocolError::missing(field))?;
        StripeLayout::try_from(p).map_err(|e| e.within(field))
    }
}

impl Default for StripeLayout {
    /// One 1 MiB stripe on any OST.
    fn default() -> Self {
        Self {
            stripe_size: DEFAULT_STRIPE_SIZE,
            stripe_count: 1,
            stripe_offset: None,
            objects: Vec::new(),
        }
    }
}

impl TryFrom<pb::Layout> for StripeLayout {
    type Error = ProtocolError;

    fn try_from(p: pb::Layout) -> Result<Self, ProtocolError> {
        let offset = check_stripe_offset(p.stripe_offset)?;
        // Bound the work before converting a list longer than any valid layout.
        if p.objects.len() > MAX_STRIPE_COUNT as usize {
            return Err(ProtocolError::invalid(
                "objects",
                format!("{} objects, more than {MAX_STRIPE_COUNT}", p.objects.len()),
            ));
        }
        let objects = p
            .objects
            .into_iter()
            .enumerate()
            .map(|(i, o)| ObjectRef::try_from(o).map_err(|e| e.within(&format!("objects[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        StripeLayout::new(p.stripe_size, p.stripe_count, offset, objects)
    }
}

impl From<&StripeLayout> for pb::Layout {
    fn from(l: &StripeLayout) -> Self {
        pb::Layout {
            stripe_size: l.stripe_size,
            stripe_count: l.stripe_count,
            stripe_offset: l.stripe_offset.map_or(-1, |o| o.get() as i32),
            objects: l.objects.iter().map(|o| pb::ObjectRef::from(*o)).collect(),
        }
    }
}

impl From<StripeLayout> for pb::Layout {
    fn from(l: StripeLayout) -> Self {
        pb::Layout::from(&l)
    }
}

/// Stripe count asked for in a [`LayoutRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StripeCountRequest {
    /// Inherit (wire value 0).
    Default,
    /// Stripe over every OST (wire value [`STRIPE_COUNT_ALL`]).
    All,
    /// This many stripes.
    Count(u32),
}

/// A layout asked for by create, mkdir or setstripe: each part may be left to the default. A
/// request never names objects; the MDS allocates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayoutRequest {
    /// Stripe size, or `None` to inherit (wire value 0).
    pub stripe_size: Option<u32>,
    /// Stripe count.
    pub stripe_count: StripeCountRequest,
    /// First OST, or `None` for any (wire value -1).
    pub stripe_offset: Option<OstIndex>,
}

impl LayoutRequest {
    /// Everything inherited.
    pub const INHERIT: LayoutRequest = LayoutRequest {
        stripe_size: None,
        stripe_count: StripeCountRequest::Default,
        stripe_offset: None,
    };

    /// The layout (without objects) this request yields on a file system of `ost_count` OSTs
    /// whose inherited default is `default`. Fails if it does not fit the file system.
    pub fn resolve(&self, default: &StripeLayout, ost_count: u32) -> Result<StripeLayout, ProtocolError> {
        let count = match self.stripe_count {
            StripeCountRequest::Default => default.stripe_count.min(ost_count.max(1)),
            StripeCountRequest::All => ost_count.clamp(1, MAX_STRIPE_COUNT),
            StripeCountRequest::Count(n) => n,
        };
        let layout = StripeLayout::new(
            self.stripe_size.unwrap_or(default.stripe_size),
            count,
            self.stripe_offset.or(default.stripe_offset),
            Vec::new(),
        )?;
        layout.validate(ost_count)?;
        Ok(layout)
    }

    /// Converts an optional wire layout request: absent means inherit everything.
    pub fn from_field(p: Option<pb::Layout>, field: &'static str) -> Result<Self, ProtocolError> {
        match p {
            None => Ok(Self::INHERIT),
            Some(p) => LayoutRequest::try_from(p).map_err(|e| e.within(field)),
        }
    }
}

impl TryFrom<pb::Layout> for LayoutRequest {
    type Error = ProtocolError;

    fn try_from(p: pb::Layout) -> Result<Self, ProtocolError> {
        if !p.objects.is_empty() {
            return Err(ProtocolError::invalid("objects", "a requested layout names no objects"));
        }
        let stripe_size = match p.stripe_size {
            0 => None,
            v => Some(check_stripe_size(v)?),
        };
        let stripe_count = match p.stripe_count {
            0 => StripeCountRequest::Default,
            STRIPE_COUNT_ALL => StripeCountRequest::All,
            v => StripeCountRequest::Count(check_stripe_count(v)?),
        };
        Ok(Self {
            stripe_size,
            stripe_count,
            stripe_offset: check_stripe_offset(p.stripe_offset)?,
        })
    }
}

impl From<&LayoutRequest> for pb::Layout {
    fn from(r: &LayoutRequest) -> Self {
        pb::Layout {
            stripe_size: r.stripe_size.unwrap_or(0),
            stripe_count: match r.stripe_count {
                StripeCountRequest::Default => 0,
                StripeCountRequest::All => STRIPE_COUNT_ALL,
                StripeCountRequest::Count(n) => n,
            },
            stripe_offset: r.stripe_offset.map_or(-1, |o| o.get() as i32),
            objects: Vec::new(),
        }
    }
}

// MAX_OST_COUNT fits i32, so every OstIndex converts to a non-negative stripe_offset.
const _: () = assert!(MAX_OST_COUNT <= i32::MAX as u32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ObjectId;

    fn obj(ost: u32, id: u64) -> ObjectRef {
        ObjectRef {
            ost: OstIndex::try_from(ost).unwrap(),
            id: ObjectId::try_from(id).unwrap(),
        }
    }

    fn wire(size: u32, count: u32, offset: i32, objects: &[(u32, u64)]) -> pb::Layout {
        pb::Layout {
            stripe_size: size,
            stripe_count: count,
            stripe_offset: offset,
            objects: objects
                .iter()
                .map(|&(o, i)| pb::ObjectRef {
                    ost_index: o,
                    object_id: i,
                })
                .collect(),
        }
    }

    #[test]
    fn stripe_size_must_be_a_multiple_of_64k() {
        for bad in [0, 4096, 65_537, 3 * 1024 * 1024 + 1] {
            let e = StripeLayout::from_field(Some(wire(bad, 1, -1, &[])), "create.layout").unwrap_err();
            assert_eq!(e.field(), Some("create.layout.stripe_size"), "{bad}");
        }
        let max = u32::MAX / STRIPE_SIZE_UNIT * STRIPE_SIZE_UNIT;
        assert!(StripeLayout::try_from(wire(max, 1, -1, &[])).is_ok());
    }

    #[test]
    fn stripe_count_and_objects_must_agree() {
        assert!(StripeLayout::try_from(wire(65_536, 0, -1, &[])).is_err());
        assert!(StripeLayout::try_from(wire(65_536, MAX_STRIPE_COUNT + 1, -1, &[])).is_err());
        let e = StripeLayout::try_from(wire(65_536, 2, -1, &[(0, 1)])).unwrap_err();
        assert_eq!(e.field(), Some("objects"));
        let e = StripeLayout::try_from(wire(65_536, 2, -1, &[(3, 1), (3, 2)])).unwrap_err();
        assert_eq!(e.field(), Some("objects[1].ost_index"));
        let e = StripeLayout::try_from(wire(65_536, 2, -1, &[(3, 1), (4, 0)])).unwrap_err();
        assert_eq!(e.field(), Some("objects[1].object_id"));
        let l = StripeLayout::try_from(wire(1 << 20, 2, 3, &[(3, 1), (4, 9)])).unwrap();
        assert_eq!(l.objects(), &[obj(3, 1), obj(4, 9)]);
        assert_eq!(StripeLayout::try_from(pb::Layout::from(&l)), Ok(l));
    }

    #[test]
    fn stripe_offset_is_minus_one_or_an_index() {
        assert!(StripeLayout::try_from(wire(65_536, 1, -2, &[])).is_err());
        assert!(StripeLayout::try_from(wire(65_536, 1, i32::MAX, &[])).is_err());
        let l = StripeLayout::try_from(wire(65_536, 1, 5, &[])).unwrap();
        assert_eq!(l.stripe_offset().map(OstIndex::get), Some(5));
    }

    #[test]
    fn validate_checks_against_the_ost_count() {
        let l = StripeLayout::try_from(wire(65_536, 4, -1, &[])).unwrap();
        assert_eq!(l.validate(3).unwrap_err().field(), Some("stripe_count"));
        assert!(l.validate(4).is_ok());
        let l = StripeLayout::try_from(wire(65_536, 2, 7, &[(0, 1), (7, 1)])).unwrap();
        assert_eq!(l.validate(7).unwrap_err().field(), Some("stripe_offset"));
        assert_eq!(l.validate(8).map_err(|e| e.field().map(String::from)), Ok(()));
        let l = StripeLayout::try_from(wire(65_536, 2, -1, &[(0, 1), (7, 1)])).unwrap();
        assert_eq!(l.validate(7).unwrap_err().field(), Some("objects[1].ost_index"));
    }

    #[test]
    fn requests_inherit_and_resolve() {
        let def = StripeLayout::new(4 << 20, 2, None, Vec::new()).unwrap();
        let r = LayoutRequest::from_field(None, "create.layout").unwrap();
        assert_eq!(r.resolve(&def, 8).unwrap(), def);
        let r = LayoutRequest::try_from(wire(0, STRIPE_COUNT_ALL, -1, &[])).unwrap();
        assert_eq!(r.resolve(&def, 8).unwrap().stripe_count(), 8);
        let r = LayoutRequest::try_from(wire(65_536, 9, -1, &[])).unwrap();
        assert!(r.resolve(&def, 8).is_err());
        let e = LayoutRequest::from_field(Some(wire(0, 1, -1, &[(0, 1)])), "setstripe.layout").unwrap_err();
        assert_eq!(e.field(), Some("setstripe.layout.objects"));
        assert_eq!(LayoutRequest::try_from(pb::Layout::from(&r)), Ok(r));
        // A default wider than a small file system shrinks to fit it.
        assert_eq!(LayoutRequest::INHERIT.resolve(&def, 1).unwrap().stripe_count(), 1);
    }
}
