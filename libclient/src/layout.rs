//! File layouts as the client holds them: validated from the MDS's `Layout` message.

use crate::error::{ClientError, Result};
use crate::striping::StripeGeometry;
use rustre_proto::pb;

/// Stripe sizes are multiples of this (as Lustre's).
pub const STRIPE_UNIT: u32 = 64 * 1024;
/// Largest stripe count a layout may ask for.
pub const MAX_STRIPE_COUNT: u32 = 2000;

/// A layout requested by a caller (create, mkdir, setstripe). Zero fields mean "inherit".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutSpec {
    /// Bytes per stripe chunk: 0 (inherit) or a multiple of 64 KiB.
    pub stripe_size: u32,
    /// Number of OSTs: 0 (inherit) or 1..=2000.
    pub stripe_count: u32,
    /// OST index of the first stripe, or -1 to let the MDS choose.
    pub stripe_offset: i32,
}

impl Default for LayoutSpec {
    fn default() -> Self {
        Self {
            stripe_size: 0,
            stripe_count: 0,
            stripe_offset: -1,
        }
    }
}

impl LayoutSpec {
    /// Checks the fields and builds the wire message.
    pub fn to_pb(&self) -> Result<pb::Layout> {
        if !self.stripe_size.is_multiple_of(STRIPE_UNIT) {
            return Err(ClientError::Invalid(format!(
                "layout.stripe_size {} is not a multiple of {STRIPE_UNIT}",
                self.stripe_size
            )));
        }
        if self.stripe_count > MAX_STRIPE_COUNT {
            return Err(ClientError::Invalid(format!(
                "layout.stripe_count {} exceeds {MAX_STRIPE_COUNT}",
                self.stripe_count
            )));
        }
        if self.stripe_offset < -1 {
            return Err(ClientError::Invalid(format!(
                "layout.stripe_offset {} must be -1 or an OST index",
                self.stripe_offset
            )));
        }
        Ok(pb::Layout {
            stripe_size: self.stripe_size,
            stripe_count: self.stripe_count,
            stripe_offset: self.stripe_offset,
            objects: Vec::new(),
        })
    }

    /// The spec part of a wire layout.
    pub fn from_pb(l: &pb::Layout) -> Self {
        Self {
            stripe_size: l.stripe_size,
            stripe_count: l.stripe_count,
            stripe_offset: l.stripe_offset,
        }
    }
}

/// One object of a file: the OST index and the object id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// OST index.
    pub ost: u32,
    /// Object id on that OST.
    pub id: u64,
}

impl ObjectRef {
    /// The wire form.
    pub fn to_pb(self) -> pb::ObjectRef {
        pb::ObjectRef {
            ost_index: self.ost,
            object_id: self.id,
        }
    }
}

/// The layout of a regular file: geometry plus its objects in stripe order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    /// Stripe size and count.
    pub geometry: StripeGeometry,
    /// OST index of the first stripe as the MDS reported it.
    pub stripe_offset: i32,
    /// Objects, stripe 0 first; exactly `stripe_count` of them.
    pub objects: Vec<ObjectRef>,
}

impl TryFrom<&pb::Layout> for FileLayout {
    type Error = ClientError;

    fn try_from(l: &pb::Layout) -> Result<Self> {
        let bad = |reason: String| ClientError::other(rustre_proto::Errno::EPROTO, format!("file layout: {reason}"));
        if l.stripe_size == 0 || !l.stripe_size.is_multiple_of(STRIPE_UNIT) {
            return Err(bad(format!(
                "stripe_size {} is not a non-zero multiple of {STRIPE_UNIT}",
                l.stripe_size
            )));
        }
        if l.stripe_count == 0 || l.stripe_count > MAX_STRIPE_COUNT {
            return Err(bad(format!(
                "stripe_count {} is not in 1..={MAX_STRIPE_COUNT}",
                l.stripe_count
            )));
        }
        if l.objects.len() != l.stripe_count as usize {
            return Err(bad(format!(
                "{} objects for stripe_count {}",
                l.objects.len(),
                l.stripe_count
            )));
        }
        let objects: Vec<ObjectRef> = l
            .objects
            .iter()
            .map(|o| ObjectRef {
                ost: o.ost_index,
                id: o.object_id,
            })
            .collect();
        for (i, a) in objects.iter().enumerate() {
            if objects[..i].iter().any(|b| b.ost == a.ost) {
                return Err(bad(format!("stripe {i} repeats OST{}", a.ost)));
            }
        }
        let geometry = StripeGeometry::new(u64::from(l.stripe_size), l.stripe_count)?;
        Ok(Self {
            geometry,
            stripe_offset: l.stripe_offset,
            objects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(count: u32, osts: &[u32]) -> pb::Layout {
        pb::Layout {
            stripe_size: 1 << 20,
            stripe_count: count,
            stripe_offset: 0,
            objects: osts
                .iter()
                .map(|&o| pb::ObjectRef {
                    ost_index: o,
                    object_id: 7,
                })
                .collect(),
        }
    }

    #[test]
    fn validates_file_layouts() {
        let l = FileLayout::try_from(&layout(2, &[3, 1])).unwrap();
        assert_eq!(l.geometry.stripe_count(), 2);
        assert_eq!(l.objects[0], ObjectRef { ost: 3, id: 7 });
        assert!(FileLayout::try_from(&layout(2, &[3])).is_err());
        assert!(FileLayout::try_from(&layout(2, &[3, 3])).is_err());
        assert!(FileLayout::try_from(&layout(0, &[])).is_err());
        let mut odd = layout(1, &[0]);
        odd.stripe_size = 4096;
        assert!(FileLayout::try_from(&odd).is_err());
    }

    #[test]
    fn validates_specs() {
        assert!(
            LayoutSpec {
                stripe_size: 65536,
                stripe_count: 4,
                stripe_offset: -1
            }
            .to_pb()
            .is_ok()
        );
        assert!(LayoutSpec::default().to_pb().is_ok());
        assert_eq!(
            LayoutSpec {
                stripe_size: 1000,
                ..Default::default()
            }
            .to_pb()
            .unwrap_err()
            .errno(),
            22
        );
        assert!(
            LayoutSpec {
                stripe_offset: -2,
                ..Default::default()
            }
            .to_pb()
            .is_err()
        );
    }
}
