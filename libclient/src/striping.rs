//! Striping engine: the RAID-0 round-robin mapping between file bytes and OST object bytes.
//!
//! A file with stripe size `S` and stripe count `C` is cut into chunks of `S` bytes. Chunk `k`
//! (file bytes `k·S .. (k+1)·S`) lives on object `k mod C` (the `k mod C`-th object of the layout)
//! at object offset `(k div C)·S`. This is Lustre's RAID-0 layout.
//!
//! Everything here is a pure function of the geometry: no I/O, no allocation beyond the returned
//! vectors, no overflow (every 64-bit computation is proved in range or checked). It is tested
//! exhaustively against a byte-by-byte model on small layouts and by property tests on real ones.

/// What is wrong with a geometry or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StripingError {
    /// The stripe size is zero.
    #[error("stripe size must be non-zero")]
    ZeroStripeSize,
    /// The stripe count is zero.
    #[error("stripe count must be non-zero")]
    ZeroStripeCount,
    /// `offset + len` does not fit in 64 bits.
    #[error("byte range at offset {offset} of length {len} goes beyond 2^64 - 1")]
    RangeOverflow {
        /// Start of the range.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// An object index not below the stripe count.
    #[error("object index {index} out of range for stripe count {count}")]
    NoSuchObject {
        /// The index given.
        index: u32,
        /// The layout's stripe count.
        count: u32,
    },
    /// An object size (or offset) that corresponds to a file offset beyond 2^64 - 1.
    #[error("object {index} at offset {object_offset} maps beyond the largest file offset")]
    FileOffsetOverflow {
        /// The object index.
        index: u32,
        /// The object offset or size given.
        object_offset: u64,
    },
}

/// Stripe size and count of a layout: all the striping engine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StripeGeometry {
    stripe_size: u64,
    stripe_count: u32,
}

/// One piece of a file range that is contiguous in the file, in one object and in the caller's
/// buffer. It never crosses a stripe boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectExtent {
    /// Index of the object in the layout (stripe index), `0..stripe_count`.
    pub object: u32,
    /// Byte offset inside that object.
    pub object_offset: u64,
    /// Length in bytes (> 0).
    pub len: u64,
    /// Position of the first byte in the caller's buffer (relative to the range's start).
    pub buf_offset: u64,
}

/// Everything a file range touches in one object: a single contiguous object extent, made of the
/// [`ObjectExtent`] pieces (in order) that lie at different places of the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRun {
    /// Index of the object in the layout.
    pub object: u32,
    /// First object byte touched.
    pub object_offset: u64,
    /// Object bytes touched (the sum of the pieces' lengths).
    pub len: u64,
    /// The pieces, in increasing object (and file) offset.
    pub pieces: Vec<ObjectExtent>,
}

impl StripeGeometry {
    /// A geometry; both values must be non-zero.
    pub fn new(stripe_size: u64, stripe_count: u32) -> Result<Self, StripingError> {
        if stripe_size == 0 {
            return Err(StripingError::ZeroStripeSize);
        }
        if stripe_count == 0 {
            return Err(StripingError::ZeroStripeCount);
        }
        Ok(Self {
            stripe_size,
            stripe_count,
        })
    }

    /// Bytes per stripe chunk.
    pub fn stripe_size(&self) -> u64 {
        self.stripe_size
    }

    /// Number of objects.
    pub fn stripe_count(&self) -> u32 {
        self.stripe_count
    }

    fn check_object(&self, object: u32) -> Result<(), StripingError> {
        if object >= self.stripe_count {
            return Err(StripingError::NoSuchObject {
                index: object,
                count: self.stripe_count,
            });
        }
        Ok(())
    }

    /// The object and object offset holding file byte `file_offset`.
    pub fn locate(&self, file_offset: u64) -> (u32, u64) {
        let chunk = file_offset / self.stripe_size;
        let count = u64::from(self.stripe_count);
        // `chunk % count < stripe_count`, so it fits in u32; `(chunk / count) * stripe_size` is at
        // most `chunk * stripe_size <= file_offset`, so nothing overflows.
        let object = (chunk % count) as u32;
        let object_offset = (chunk / count) * self.stripe_size + file_offset % self.stripe_size;
        (object, object_offset)
    }

    /// The file offset stored at `object_offset` of `object` (inverse of [`Self::locate`]).
    pub fn file_offset(&self, object: u32, object_offset: u64) -> Result<u64, StripingError> {
        self.check_object(object)?;
        let overflow = StripingError::FileOffsetOverflow {
            index: object,
            object_offset,
        };
        let slot = object_offset / self.stripe_size;
        let within = object_offset % self.stripe_size;
        slot.checked_mul(u64::from(self.stripe_count))
            .and_then(|k| k.checked_add(u64::from(object)))
            .and_then(|k| k.checked_mul(self.stripe_size))
            .and_then(|base| base.checked_add(within))
            .ok_or(overflow)
    }

    /// The pieces of the file range `offset .. offset + len`, in file order. Each piece is as long
    /// as possible without crossing a stripe boundary.
    pub fn extents(&self, offset: u64, len: u64) -> Result<Extents, StripingError> {
        let end = offset
            .checked_add(len)
            .ok_or(StripingError::RangeOverflow { offset, len })?;
        Ok(Extents {
            geometry: *self,
            pos: offset,
            end,
            start: offset,
        })
    }

    /// The file range `offset .. offset + len` grouped by object: one [`ObjectRun`] for every object
    /// it touches, in increasing object index.
    pub fn object_runs(&self, offset: u64, len: u64) -> Result<Vec<ObjectRun>, StripingError> {
        let mut runs: Vec<ObjectRun> = Vec::new();
        for piece in self.extents(offset, len)? {
            match runs.iter_mut().find(|r| r.object == piece.object) {
                Some(run) => {
                    debug_assert_eq!(run.object_offset + run.len, piece.object_offset);
                    run.len += piece.len;
                    run.pieces.push(piece);
                }
                None => runs.push(ObjectRun {
                    object: piece.object,
                    object_offset: piece.object_offset,
                    len: piece.len,
                    pieces: vec![piece],
                }),
            }
        }
        runs.sort_by_key(|r| r.object);
        Ok(runs)
    }

    /// The file size implied by `object` having size `object_size`: one past the file offset of the
    /// object's last byte, or 0 for an empty object. The file size is the largest contribution over
    /// all objects (see [`Self::file_size`]).
    pub fn file_size_from_object(&self, object: u32, object_size: u64) -> Result<u64, StripingError> {
        self.check_object(object)?;
        if object_size == 0 {
            return Ok(0);
        }
        let last = self.file_offset(object, object_size - 1)?;
        last.checked_add(1).ok_or(StripingError::FileOffsetOverflow {
            index: object,
            object_offset: object_size,
        })
    }

    /// The file size given every object's size (`object_sizes[i]` is object `i`'s size; at most
    /// `stripe_count` entries, missing ones count as empty).
    pub fn file_size(&self, object_sizes: &[u64]) -> Result<u64, StripingError> {
        if object_sizes.len() > self.stripe_count as usize {
            return Err(StripingError::NoSuchObject {
                index: u32::try_from(object_sizes.len() - 1).unwrap_or(u32::MAX),
                count: self.stripe_count,
            });
        }
        let mut size = 0;
        for (i, &s) in object_sizes.iter().enumerate() {
            // `i < stripe_count`, a u32.
            size = size.max(self.file_size_from_object(i as u32, s)?);
        }
        Ok(size)
    }

    /// The size object `object` has when the file holds exactly the bytes `0 .. file_size`
    /// (what truncating the file to `file_size` sets it to).
    pub fn object_size_for_file_size(&self, object: u32, file_size: u64) -> Result<u64, StripingError> {
        self.check_object(object)?;
        let count = u64::from(self.stripe_count);
        let object = u64::from(object);
        let full_chunks = file_size / self.stripe_size;
        let rem = file_size % self.stripe_size;
        // Full chunks with index ≡ object (mod count) below `full_chunks`.
        let mine = full_chunks / count + u64::from(object < full_chunks % count);
        // `mine * stripe_size <= full_chunks * stripe_size <= file_size`: no overflow below.
        if rem > 0 && full_chunks % count == object {
            Ok(mine * self.stripe_size + rem)
        } else {
            Ok(mine * self.stripe_size)
        }
    }
}

/// Iterator over the [`ObjectExtent`]s of a file range (see [`StripeGeometry::extents`]).
#[derive(Debug, Clone)]
pub struct Extents {
    geometry: StripeGeometry,
    pos: u64,
    end: u64,
    start: u64,
}

impl Iterator for Extents {
    type Item = ObjectExtent;

    fn next(&mut self) -> Option<ObjectExtent> {
        if self.pos >= self.end {
            return None;
        }
        let size = self.geometry.stripe_size;
        let (object, object_offset) = self.geometry.locate(self.pos);
        let len = (size - self.pos % size).min(self.end - self.pos);
        let piece = ObjectExtent {
            object,
            object_offset,
            len,
            buf_offset: self.pos - self.start,
        };
        self.pos += len;
        Some(piece)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.pos >= self.end {
            return (0, Some(0));
        }
        let size = self.geometry.stripe_size;
        let chunks = (self.end - 1) / size - self.pos / size + 1;
        let n = usize::try_from(chunks).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Byte-by-byte model: deals the file's bytes to the objects stripe by stripe, round robin,
    /// each object filling itself from offset 0. Returns, for every file byte, (object, offset).
    fn model(stripe_size: u64, count: u32, n: u64) -> Vec<(u32, u64)> {
        let mut cursor = vec![0u64; count as usize];
        let mut out = Vec::with_capacity(n as usize);
        let mut object = 0usize;
        while (out.len() as u64) < n {
            for _ in 0..stripe_size {
                if out.len() as u64 == n {
                    break;
                }
                out.push((object as u32, cursor[object]));
                cursor[object] += 1;
            }
            object = (object + 1) % count as usize;
        }
        out
    }

    #[test]
    fn rejects_zero_geometry() {
        assert_eq!(StripeGeometry::new(0, 1), Err(StripingError::ZeroStripeSize));
        assert_eq!(StripeGeometry::new(1, 0), Err(StripingError::ZeroStripeCount));
    }

    #[test]
    fn exhaustive_small_layouts() {
        for count in 1..=4u32 {
            for stripe_size in 1..=5u64 {
                let g = StripeGeometry::new(stripe_size, count).unwrap();
                let n = stripe_size * u64::from(count) * 3 + 3;
                let m = model(stripe_size, count, n);
                for b in 0..n {
                    assert_eq!(g.locate(b), m[b as usize]);
                    let (o, off) = m[b as usize];
                    assert_eq!(g.file_offset(o, off).unwrap(), b);
                }
                for offset in 0..=n {
                    for len in 0..=(n - offset) {
                        check_range(&g, &m, offset, len);
                    }
                }
                check_sizes(&g, &m, n);
            }
        }
    }

    fn check_range(g: &StripeGeometry, m: &[(u32, u64)], offset: u64, len: u64) {
        let pieces: Vec<_> = g.extents(offset, len).unwrap().collect();
        assert_eq!(g.extents(offset, len).unwrap().size_hint().0, pieces.len());
        let mut buf = 0;
        for (i, p) in pieces.iter().enumerate() {
            assert!(p.len > 0);
            assert_eq!(p.buf_offset, buf, "pieces tile the buffer");
            for j in 0..p.len {
                let b = offset + p.buf_offset + j;
                assert_eq!(m[b as usize], (p.object, p.object_offset + j), "byte {b}");
            }
            // Maximal: a piece ends at a stripe boundary unless it ends the range.
            let end = offset + p.buf_offset + p.len;
            if i + 1 < pieces.len() {
                assert_eq!(end % g.stripe_size(), 0);
            } else {
                assert_eq!(end, offset + len);
            }
            assert!((offset + p.buf_offset) / g.stripe_size() == (end - 1) / g.stripe_size());
            buf += p.len;
        }
        assert_eq!(buf, len);

        let runs = g.object_runs(offset, len).unwrap();
        let mut seen = 0;
        for w in runs.windows(2) {
            assert!(w[0].object < w[1].object);
        }
        for r in &runs {
            let mut at = r.object_offset;
            for p in &r.pieces {
                assert_eq!(p.object, r.object);
                assert_eq!(p.object_offset, at, "a run is contiguous in the object");
                at += p.len;
                assert!(pieces.contains(p));
                seen += 1;
            }
            assert_eq!(at, r.object_offset + r.len);
        }
        assert_eq!(seen, pieces.len());
    }

    fn check_sizes(g: &StripeGeometry, m: &[(u32, u64)], n: u64) {
        let count = g.stripe_count();
        for file_size in 0..=n {
            let mut sizes = vec![0u64; count as usize];
            for &(o, off) in &m[..file_size as usize] {
                sizes[o as usize] = sizes[o as usize].max(off + 1);
            }
            for o in 0..count {
                assert_eq!(g.object_size_for_file_size(o, file_size).unwrap(), sizes[o as usize]);
            }
            assert_eq!(g.file_size(&sizes).unwrap(), file_size);
        }
        // Sparse: a file whose only byte is `b`.
        for b in 0..n {
            let (o, off) = m[b as usize];
            assert_eq!(g.file_size_from_object(o, off + 1).unwrap(), b + 1);
            let mut sizes = vec![0u64; count as usize];
            sizes[o as usize] = off + 1;
            assert_eq!(g.file_size(&sizes).unwrap(), b + 1);
        }
        assert!(g.file_size(&vec![0; count as usize + 1]).is_err());
        assert!(g.file_size_from_object(count, 1).is_err());
        assert!(g.object_size_for_file_size(count, 1).is_err());
    }

    #[test]
    fn range_overflow_is_an_error() {
        let g = StripeGeometry::new(65536, 4).unwrap();
        assert!(g.extents(u64::MAX, 1).is_err());
        assert_eq!(g.extents(u64::MAX - 1, 1).unwrap().count(), 1);
        assert_eq!(g.extents(u64::MAX, 0).unwrap().count(), 0);
        // The last object byte of a huge object maps beyond 2^64.
        assert!(g.file_size_from_object(3, u64::MAX).is_err());
    }

    fn geometry() -> impl Strategy<Value = StripeGeometry> {
        (1u64..=64, 1u32..=8).prop_map(|(k, c)| StripeGeometry::new(k * 65536, c).unwrap())
    }

    proptest! {
        #[test]
        fn realistic_ranges(g in geometry(), offset in any::<u64>(), len in 0u64..(64 << 20)) {
            let len = len.min(u64::MAX - offset);
            let (s, c) = (u128::from(g.stripe_size()), u128::from(g.stripe_count()));
            let mut buf = 0u64;
            for p in g.extents(offset, len).unwrap() {
                prop_assert_eq!(p.buf_offset, buf);
                let start = u128::from(offset + p.buf_offset);
                let k = start / s;
                prop_assert_eq!(u128::from(p.object), k % c);
                prop_assert_eq!(u128::from(p.object_offset), (k / c) * s + start % s);
                prop_assert_eq!((start + u128::from(p.len) - 1) / s, k);
                prop_assert_eq!(g.file_offset(p.object, p.object_offset).unwrap(), offset + p.buf_offset);
                buf += p.len;
            }
            prop_assert_eq!(buf, len);
            let total: u64 = g.object_runs(offset, len.min(8 << 20)).unwrap().iter().map(|r| r.len).sum();
            prop_assert_eq!(total, len.min(8 << 20));
        }

        #[test]
        fn sizes_round_trip(g in geometry(), file_size in any::<u64>()) {
            let sizes: Vec<u64> = (0..g.stripe_count())
                .map(|o| g.object_size_for_file_size(o, file_size).unwrap())
                .collect();
            prop_assert_eq!(g.file_size(&sizes).unwrap(), file_size);
            let sum: u128 = sizes.iter().map(|&x| u128::from(x)).sum();
            prop_assert_eq!(sum, u128::from(file_size));
        }

        #[test]
        fn object_size_contribution(g in geometry(), object in 0u32..8, size in any::<u64>()) {
            let object = object % g.stripe_count();
            let (s, c) = (u128::from(g.stripe_size()), u128::from(g.stripe_count()));
            let expect = if size == 0 {
                Some(0)
            } else {
                let last = u128::from(size - 1);
                let file_last = ((last / s) * c + u128::from(object)) * s + last % s;
                u64::try_from(file_last + 1).ok()
            };
            prop_assert_eq!(g.file_size_from_object(object, size).ok(), expect);
        }
    }
}
