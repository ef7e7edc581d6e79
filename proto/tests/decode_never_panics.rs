//! Decoding arbitrary bytes — as any request, as any message of the schema, as a frame stream —
//! returns a value or an error, never panics, and never allocates more than the frame limit.
//!
//! The three arbitrary-byte properties run 1,000,000 cases together; the targeted tests feed
//! maximal bodies built to amplify memory (empty repeated elements) for every repeated field of
//! every message.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

mod common;

use common::{CountingAlloc, message_types, peak_during, put_key, put_len_field, put_varint};
use proptest::prelude::*;
use rustre_proto::frame::{DEFAULT_MAX_BODY, HEADER_LEN, MAGIC, VERSION};
use rustre_proto::limits::FieldKind;
use rustre_proto::{FrameDecoder, FrameHeader, Opcode, Request};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The frame limit every receiver enforces by default.
const LIMIT: usize = DEFAULT_MAX_BODY as usize;
/// Heap the error path may use besides the decoded value (an error message string).
const SLACK: usize = 4096;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn opcode() -> impl Strategy<Value = u16> {
    prop_oneof![
        9 => prop::sample::select(Opcode::ALL.to_vec()).prop_map(Opcode::as_u16),
        1 => any::<u16>(),
    ]
}

proptest! {
    #![proptest_config(config(400_000))]

    /// Arbitrary bodies under every opcode (and unknown ones).
    #[test]
    fn arbitrary_request_bodies(op in opcode(), flags in prop_oneof![7 => Just(0_u32), 1 => 0_u32..8],
                                body in prop::collection::vec(any::<u8>(), 0..192)) {
        let mut h = FrameHeader::request(op, 1, 0, body.len() as u32);
        h.flags = flags;
        let (r, peak) = peak_during(|| Request::decode(&h, &body).map(|r| r.opcode()));
        if let Ok(decoded) = r {
            prop_assert_eq!(decoded.as_u16(), op);
        }
        prop_assert!(peak <= LIMIT + SLACK, "peak {peak}");
    }
}

proptest! {
    #![proptest_config(config(400_000))]

    /// Arbitrary bodies as every message type; what decodes must round-trip.
    #[test]
    fn arbitrary_message_bodies(i in 0..message_types().len(), body in prop::collection::vec(any::<u8>(), 0..192)) {
        let types = message_types();
        let t = &types[i];
        let (r, peak) = peak_during(|| (t.decode)(&body, LIMIT));
        prop_assert!(peak <= LIMIT + SLACK, "{}: peak {peak}", t.shape.name);
        if r.is_ok() {
            // What decodes must round-trip.
            (t.check)(&body, LIMIT).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }
}

/// A byte stream of frames: valid-looking headers (right magic and version, arbitrary other
/// fields) or arbitrary bytes, with arbitrary bodies.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        3 => (any::<u16>(), any::<u32>(), any::<u64>(), any::<u64>(), prop_oneof![3 => 0_u32..48, 1 => any::<u32>()])
            .prop_map(|(opcode, flags, xid, client_id, body_len)| {
                let mut b = Vec::with_capacity(HEADER_LEN);
                b.extend_from_slice(&MAGIC.to_le_bytes());
                b.extend_from_slice(&VERSION.to_le_bytes());
                b.extend_from_slice(&opcode.to_le_bytes());
                b.extend_from_slice(&(flags & 7).to_le_bytes());
                b.extend_from_slice(&xid.to_le_bytes());
                b.extend_from_slice(&client_id.to_le_bytes());
                b.extend_from_slice(&body_len.to_le_bytes());
                b
            }),
        1 => prop::collection::vec(any::<u8>(), HEADER_LEN),
    ];
    prop::collection::vec((header, prop::collection::vec(any::<u8>(), 0..48)), 1..4)
        .prop_map(|frames| frames.into_iter().flat_map(|(h, b)| h.into_iter().chain(b)).collect())
}

proptest! {
    #![proptest_config(config(200_000))]

    /// Arbitrary streams fed in arbitrary chunks: frames come out whole and within the limit, the
    /// buffer never holds more than one incomplete frame, and errors are errors.
    #[test]
    fn arbitrary_frame_streams(stream in frame_stream(), chunk in 1_usize..64, max_body in prop_oneof![Just(256_u32), Just(DEFAULT_MAX_BODY)]) {
        let mut d = FrameDecoder::new(max_body);
        'feed: for part in stream.chunks(chunk) {
            d.feed(part);
            loop {
                let (r, peak) = peak_during(|| d.next_frame());
                prop_assert!(peak <= max_body as usize + SLACK, "peak {peak}");
                match r {
                    Ok(Some((h, body))) => {
                        prop_assert_eq!(h.body_len as usize, body.len());
                        prop_assert!(h.body_len <= max_body);
                        // Whatever the frame, decoding it as a request is safe.
                        let _ = Request::decode(&h, &body);
                    }
                    Ok(None) => {
                        prop_assert!(d.buffered() < HEADER_LEN + max_body as usize);
                        break;
                    }
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

/// A body of about `LIMIT` bytes repeating the cheapest encoding of field `number`.
fn fill(unit: &[u8]) -> Vec<u8> {
    let n = LIMIT / unit.len();
    unit.repeat(n)
}

/// For every repeated field of every message: the body that maximises decoded memory per wire
/// byte (empty elements, one- or zero-byte scalars, packed and unpacked) is refused or decoded
/// within the frame limit.
#[test]
fn amplifying_bodies_stay_within_the_frame_limit() {
    let mut checked = 0;
    for t in message_types() {
        for f in t.shape.fields.iter().filter(|f| f.repeated) {
            let mut units = Vec::new();
            let mut unit = Vec::new();
            match f.kind {
                FieldKind::Message(_) | FieldKind::Bytes => put_len_field(&mut unit, f.number, &[]),
                FieldKind::Varint => {
                    put_key(&mut unit, f.number, 0);
                    put_varint(&mut unit, 0);
                }
                FieldKind::Fixed32 => {
                    put_key(&mut unit, f.number, 5);
                    unit.extend_from_slice(&[0; 4]);
                }
                FieldKind::Fixed64 => {
                    put_key(&mut unit, f.number, 1);
                    unit.extend_from_slice(&[0; 8]);
                }
            }
            units.push(fill(&unit));
            if matches!(f.kind, FieldKind::Varint) {
                // One packed run of zero varints filling the body.
                let mut packed = Vec::new();
                put_len_field(&mut packed, f.number, &vec![0; LIMIT - 8]);
                units.push(packed);
            }
            for body in units {
                let (_, peak) = peak_during(|| (t.decode)(&body, LIMIT));
                assert!(
                    peak <= LIMIT + SLACK,
                    "{} field {}: peak {peak}",
                    t.shape.name,
                    f.number
                );
                checked += 1;
            }
        }
    }
    // 9 repeated fields today, 2 of them packable scalars.
    assert!(checked >= 11, "only {checked} repeated-field bodies built");
}

/// A singular message field repeated many times merges into one value: the repeated fields
/// inside it grow across occurrences, which the bound must account for.
#[test]
fn merged_occurrences_stay_within_the_frame_limit() {
    use rustre_proto::codec::decode_body;
    use rustre_proto::pb;
    // MdsGetattrReply { attr (1) { layout (12) { objects (4) { } } } }, repeated.
    let mut objects = Vec::new();
    put_len_field(&mut objects, 4, &[]);
    let mut layout = Vec::new();
    put_len_field(&mut layout, 12, &objects);
    let mut attr = Vec::new();
    put_len_field(&mut attr, 1, &layout);
    let body = fill(&attr);
    let (r, peak) = peak_during(|| decode_body::<pb::MdsGetattrReply>(Opcode::MdsGetattr, &body).map(|_| ()));
    assert!(peak <= LIMIT + SLACK, "peak {peak}");
    assert!(
        r.is_err(),
        "{} merged objects should be refused",
        body.len() / attr.len()
    );
    // A few of them are fine.
    let (r, _) = peak_during(|| decode_body::<pb::MdsGetattrReply>(Opcode::MdsGetattr, &attr.repeat(10)));
    assert_eq!(r.unwrap().attr.unwrap().layout.unwrap().objects.len(), 10);
}

/// The largest null payload that fits (prost's temporary copy of a `bytes` field counts, so about
/// half the frame limit) decodes within the limit; a larger one is refused, also within it.
#[test]
fn null_payloads_up_to_half_the_limit_decode() {
    use rustre_proto::codec::decode_body;
    use rustre_proto::pb;
    for (len, fits) in [(LIMIT / 2 - 64, true), (LIMIT - 8, false)] {
        let mut body = Vec::new();
        put_len_field(&mut body, 1, &vec![0xa5; len]);
        let (r, peak) =
            peak_during(|| decode_body::<pb::MdsNullRequest>(Opcode::MdsNull, &body).map(|m| m.payload.len()));
        assert_eq!(r.is_ok(), fits, "{len}: {r:?}");
        if fits {
            assert_eq!(r, Ok(len));
        }
        assert!(peak <= LIMIT + SLACK, "{len}: peak {peak}");
    }
}
