//! Helpers shared by the property tests: an allocation-measuring global allocator, a generator
//! of well-formed bodies for any message of the schema (driven by the generated shapes), and a
//! table of every message type's decoder.

#![allow(dead_code, clippy::unwrap_used)]

use proptest::prelude::*;
use rustre_proto::codec::decode_body_with_limit;
use rustre_proto::limits::{Bounded, FieldKind, FieldShape, Shape};
use rustre_proto::{Opcode, ProtocolError, pb};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts live heap bytes per thread and remembers the peak.
pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(n: usize) {
    // try_with: the thread-locals may be gone while a thread is being torn down.
    let _ = LIVE.try_with(|l| {
        let v = l.get().saturating_add(n);
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn on_free(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the bookkeeping touches only const-initialised thread-locals without destructors, which never
// allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(layout.size());
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through us).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Count the new block before releasing the old one: a moving realloc holds both.
        on_alloc(new_size);
        on_free(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result and the most heap it had allocated at once (beyond what was
/// live before), on this thread.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, peak.saturating_sub(start))
}

/// Decodes a body as one message type (bounded by `limit`), then re-encodes and decodes it again,
/// checking the round trip. Returns the decode error, if any.
pub type Checker = fn(&[u8], usize) -> Result<(), ProtocolError>;

/// Decodes a body as one message type (bounded by `limit`) and drops the value.
pub type Decoder = fn(&[u8], usize) -> Result<(), ProtocolError>;

/// One message type of the schema.
pub struct MessageType {
    /// Its shape.
    pub shape: &'static Shape,
    /// Its bounded decode alone (what a receiver does; measured for memory).
    pub decode: Decoder,
    /// Its bounded decode + round trip.
    pub check: Checker,
}

fn decode<M: prost::Message + Default + Bounded>(bytes: &[u8], limit: usize) -> Result<(), ProtocolError> {
    decode_body_with_limit::<M>(Opcode::MdsNull, bytes, limit).map(drop)
}

fn check<M: prost::Message + Default + Bounded + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    limit: usize,
) -> Result<(), ProtocolError> {
    let m: M = decode_body_with_limit(Opcode::MdsNull, bytes, limit)?;
    let again = m.encode_to_vec();
    let m2 = M::decode(again.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(m, m2, "{} does not round-trip", M::shape().name);
    assert_eq!(
        m2.encode_to_vec(),
        again,
        "{} encodes differently twice",
        M::shape().name
    );
    Ok(())
}

/// Every message type of the schema.
pub fn message_types() -> Vec<MessageType> {
    let mut v = Vec::new();
    macro_rules! add {
        ($t:ident) => {
            v.push(MessageType {
                shape: <pb::$t as Bounded>::shape(),
                decode: decode::<pb::$t>,
                check: check::<pb::$t>,
            });
        };
    }
    rustre_proto::for_each_message!(add);
    v
}

/// Appends a protobuf varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a field key.
pub fn put_key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

/// Appends a length-delimited field.
pub fn put_len_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_key(out, number, 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn field_value(f: &'static FieldShape) -> BoxedStrategy<Vec<u8>> {
    let n = f.number;
    match f.kind {
        FieldKind::Varint => {
            let single = any::<u64>().prop_map(move |v| {
                let mut b = Vec::new();
                put_key(&mut b, n, 0);
                put_varint(&mut b, v);
                b
            });
            if f.repeated {
                let packed = prop::collection::vec(any::<u64>(), 0..6).prop_map(move |vs| {
                    let mut payload = Vec::new();
                    for v in vs {
                        put_varint(&mut payload, v);
                    }
                    let mut b = Vec::new();
                    put_len_field(&mut b, n, &payload);
                    b
                });
                prop_oneof![single, packed].boxed()
            } else {
                single.boxed()
            }
        }
        FieldKind::Fixed64 => any::<u64>()
            .prop_map(move |v| {
                let mut b = Vec::new();
                put_key(&mut b, n, 1);
                b.extend_from_slice(&v.to_le_bytes());
                b
            })
            .boxed(),
        FieldKind::Fixed32 => any::<u32>()
            .prop_map(move |v| {
                let mut b = Vec::new();
                put_key(&mut b, n, 5);
                b.extend_from_slice(&v.to_le_bytes());
                b
            })
            .boxed(),
        // ASCII, valid for `string` and `bytes` fields alike.
        FieldKind::Bytes => "[ -~]{0,24}"
            .prop_map(move |s| {
                let mut b = Vec::new();
                put_len_field(&mut b, n, s.as_bytes());
                b
            })
            .boxed(),
        FieldKind::Message(sub) => message_body(sub)
            .prop_map(move |body| {
                let mut b = Vec::new();
                put_len_field(&mut b, n, &body);
                b
            })
            .boxed(),
    }
}

/// Well-formed bodies of the message `shape`: every field absent or present (repeated ones up to
/// four times), with arbitrary values.
pub fn message_body(shape: &'static Shape) -> BoxedStrategy<Vec<u8>> {
    let fields: Vec<BoxedStrategy<Vec<u8>>> = shape
        .fields
        .iter()
        .map(|f| {
            let max = if f.repeated { 4 } else { 1 };
            prop::collection::vec(field_value(f), 0..=max)
                .prop_map(|parts| parts.concat())
                .boxed()
        })
        .collect();
    fields.prop_map(|parts| parts.concat()).boxed()
}
