//! Wire decoders: the frame stream, every request under its opcode, every reply (and error
//! reply) through the client's reply path, every message of the schema, and the handshake gate.

use crate::{Harness, Target};
use prost::Message;
use rustre_proto::auth::{ClusterSecret, Gate, ServerAuth, ServerSession};
use rustre_proto::codec::{decode_body, decode_reply, encode_request};
use rustre_proto::frame::HEADER_LEN;
use rustre_proto::limits::{Bounded, FieldKind, Shape};
use rustre_proto::{FrameDecoder, FrameHeader, Opcode, Request, pb};

/// Largest body the frame target's decoder accepts.
const FRAME_MAX_BODY: u32 = 64 << 10;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A valid encoding of a message of `shape` with every field present (`variant` picks the
/// values): the corpus of every message type, generated from the schema.
pub fn synthesize(shape: &'static Shape, variant: u64, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for f in shape.fields {
        let n = if f.repeated { 2 } else { 1 };
        for k in 0..n {
            let key = u64::from(f.number) << 3;
            match f.kind {
                FieldKind::Varint => {
                    put_varint(&mut out, key);
                    put_varint(&mut out, [1, 0o644, 300, 2][(variant as usize + k) % 4]);
                }
                FieldKind::Fixed64 => {
                    put_varint(&mut out, key | 1);
                    out.extend_from_slice(&(variant + 7).to_le_bytes());
                }
                FieldKind::Fixed32 => {
                    put_varint(&mut out, key | 5);
                    out.extend_from_slice(&(variant as u32 + 7).to_le_bytes());
                }
                FieldKind::Bytes => {
                    let v: &[u8] = [&b"seed"[..], b"tcp://127.0.0.1:7000", b"f"][(variant as usize + k) % 3];
                    put_varint(&mut out, key | 2);
                    put_varint(&mut out, v.len() as u64);
                    out.extend_from_slice(v);
                }
                FieldKind::Message(inner) => {
                    if depth >= 4 {
                        continue;
                    }
                    let body = synthesize(inner, variant, depth + 1);
                    put_varint(&mut out, key | 2);
                    put_varint(&mut out, body.len() as u64);
                    out.extend_from_slice(&body);
                }
            }
        }
    }
    out
}

/// A message type: its shape and its decode (with the round-trip property).
struct MessageType {
    shape: &'static Shape,
    decode: fn(&[u8]) -> bool,
}

fn decode_checked<M: Message + Default + Bounded + PartialEq + std::fmt::Debug>(b: &[u8]) -> bool {
    let Ok(m) = decode_body::<M>(Opcode::MdsNull, b) else {
        return false;
    };
    // What decodes re-encodes into something that decodes to the same value.
    let again = m.encode_to_vec();
    let m2 = M::decode(again.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(m, m2, "{} does not round-trip", M::shape().name);
    true
}

fn message_types() -> Vec<MessageType> {
    let mut v = Vec::new();
    macro_rules! add {
        ($t:ident) => {
            v.push(MessageType {
                shape: <pb::$t as Bounded>::shape(),
                decode: decode_checked::<pb::$t>,
            });
        };
    }
    rustre_proto::for_each_message!(add);
    v
}

fn shape_named(name: &str) -> Option<&'static Shape> {
    message_types()
        .into_iter()
        .map(|t| t.shape)
        .find(|s| s.name.rsplit('.').next() == Some(name))
}

fn messages() -> Harness {
    let types = message_types();
    let mut seeds = Vec::new();
    for (i, t) in types.iter().enumerate() {
        for variant in 0..2 {
            let mut s = vec![i as u8];
            s.extend(synthesize(t.shape, variant, 0));
            seeds.push(s);
        }
    }
    Harness {
        seeds,
        run: Box::new(move |b: &[u8]| {
            let Some((&i, body)) = b.split_first() else {
                return false;
            };
            (types[usize::from(i) % types.len()].decode)(body)
        }),
        fixup: None,
    }
}

/// The opcode an input's first two bytes choose: mostly known ones, sometimes any value.
fn opcode_of(a: u8, b: u8) -> u16 {
    let raw = u16::from_le_bytes([a, b]);
    if raw & 0x8000 == 0 {
        Opcode::ALL[usize::from(raw) % Opcode::ALL.len()].as_u16()
    } else {
        raw & 0x7fff
    }
}

fn real_requests() -> Vec<(Opcode, Vec<u8>)> {
    let creds = Some(pb::Credentials {
        uid: 1000,
        gid: 1000,
        groups: vec![10, 20],
    });
    let fid = Some(pb::Fid { ino: 1, generation: 0 });
    let obj = Some(pb::ObjectRef {
        ost_index: 0,
        object_id: 4097,
    });
    let bulk = Some(pb::BulkDescriptor {
        addr: 0x1000,
        rkey: 7,
        len: 4096,
        crc32c: 0,
    });
    vec![
        (
            Opcode::Handshake,
            pb::HandshakeRequest {
                cluster_name: "fuzz".into(),
                protocol_version: 1,
                client_id: 42,
                node_name: "node".into(),
                role: pb::PeerRole::Client as i32,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            Opcode::MdsLookup,
            pb::MdsLookupRequest {
                creds: creds.clone(),
                parent: fid,
                name: b"dir".to_vec(),
                more: vec![b"sub".to_vec(), b"file".to_vec()],
            }
            .encode_to_vec(),
        ),
        (
            Opcode::MdsCreate,
            pb::MdsCreateRequest {
                creds: creds.clone(),
                parent: fid,
                name: b"file".to_vec(),
                walk: vec![b"dir".to_vec(), b"sub".to_vec()],
                mode: 0o644,
                flags: pb::OpenFlag::Create as u32 | pb::OpenFlag::Write as u32,
                layout: Some(pb::Layout {
                    stripe_size: 1 << 20,
                    stripe_count: 2,
                    stripe_offset: -1,
                    objects: vec![],
                }),
            }
            .encode_to_vec(),
        ),
        (
            Opcode::MdsRename,
            pb::MdsRenameRequest {
                creds: creds.clone(),
                src_parent: fid,
                src_name: b"a".to_vec(),
                dst_parent: fid,
                dst_name: b"b".to_vec(),
                flags: 0,
                src_walk: vec![b"dir".to_vec()],
                dst_walk: vec![b"dir".to_vec(), b"sub".to_vec()],
            }
            .encode_to_vec(),
        ),
        (
            Opcode::MdsSetattr,
            pb::MdsSetattrRequest {
                creds,
                fid,
                mode: Some(0o600),
                size: Some(4096),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            Opcode::OstWrite,
            pb::OstWriteRequest {
                object: obj,
                offset: 8192,
                length: 4096,
                bulk,
                cap: None,
                more: Vec::new(),
            }
            .encode_to_vec(),
        ),
        (
            // A gathered write: three ranges, one bulk.
            Opcode::OstWrite,
            pb::OstWriteRequest {
                object: obj,
                offset: 100,
                length: 3000,
                bulk: Some(pb::BulkDescriptor {
                    addr: 0x1000,
                    rkey: 7,
                    len: 3000 + 47008 + 1,
                    crc32c: 0,
                }),
                cap: None,
                more: vec![
                    pb::ByteRange {
                        offset: 94016,
                        length: 47008,
                    },
                    pb::ByteRange {
                        offset: 1 << 20,
                        length: 1,
                    },
                ],
            }
            .encode_to_vec(),
        ),
        (
            Opcode::OstRead,
            pb::OstReadRequest {
                object: obj,
                offset: 0,
                length: 4096,
                bulk,
                cap: None,
                reply_inline: false,
                more: Vec::new(),
            }
            .encode_to_vec(),
        ),
        (
            Opcode::OstRead,
            pb::OstReadRequest {
                object: obj,
                offset: 47008,
                length: 47008,
                bulk: None,
                cap: None,
                reply_inline: true,
                more: vec![pb::ByteRange {
                    offset: 141_024,
                    length: 4000,
                }],
            }
            .encode_to_vec(),
        ),
    ]
}

fn requests() -> Harness {
    let mut seeds = Vec::new();
    for (i, op) in Opcode::ALL.iter().enumerate() {
        if let Some(shape) = shape_named(&format!("{op:?}Request")) {
            for variant in 0..2 {
                let mut s = (i as u16).to_le_bytes().to_vec();
                s.extend(synthesize(shape, variant, 0));
                seeds.push(s);
            }
        }
    }
    for (op, body) in real_requests() {
        let i = Opcode::ALL.iter().position(|o| *o == op).unwrap_or(0) as u16;
        let mut s = i.to_le_bytes().to_vec();
        s.extend(body);
        seeds.push(s);
    }
    Harness {
        seeds,
        run: Box::new(|b: &[u8]| {
            let [x, y, body @ ..] = b else { return false };
            let opcode = opcode_of(*x, *y);
            let header = FrameHeader::request(opcode, 1, 0, body.len() as u32);
            match Request::decode(&header, body) {
                Ok(r) => {
                    assert_eq!(r.opcode().as_u16(), opcode);
                    true
                }
                Err(_) => false,
            }
        }),
        fixup: None,
    }
}

/// Decodes `body` as the reply to `op` (the client's path), the error reply when `error`.
fn decode_reply_to(op: Opcode, error: bool, body: &[u8]) -> bool {
    let req = FrameHeader::request(op.as_u16(), 1, 1, 0);
    let h = req.reply_to(op.as_u16(), body.len() as u32, error);
    macro_rules! replies {
        ($($op:ident => $t:ident),* $(,)?) => {
            match op {
                $(Opcode::$op => decode_reply::<pb::$t>(op, &h, body).is_ok(),)*
            }
        };
    }
    replies!(
        Handshake => HandshakeReply,
        MdsLookup => MdsLookupReply,
        MdsCreate => MdsCreateReply,
        MdsClose => MdsCloseReply,
        MdsMkdir => MdsMkdirReply,
        MdsReaddir => MdsReaddirReply,
        MdsGetattr => MdsGetattrReply,
        MdsSetattr => MdsSetattrReply,
        MdsRename => MdsRenameReply,
        MdsUnlink => MdsUnlinkReply,
        MdsRmdir => MdsRmdirReply,
        MdsSymlink => MdsSymlinkReply,
        MdsLink => MdsLinkReply,
        MdsStatfs => MdsStatfsReply,
        MdsSetstripe => MdsSetstripeReply,
        MdsGetstripe => MdsGetstripeReply,
        MdsReadlink => MdsReadlinkReply,
        MdsNull => MdsNullReply,
        OstPrecreate => OstPrecreateReply,
        OstWrite => OstWriteReply,
        OstRead => OstReadReply,
        OstPunch => OstPunchReply,
        OstDestroy => OstDestroyReply,
        OstGetattr => OstGetattrReply,
        OstStatfs => OstStatfsReply,
        OstSync => OstSyncReply,
        OstNull => OstNullReply,
    )
}

fn replies() -> Harness {
    let mut seeds = Vec::new();
    let err = shape_named("ErrorReply");
    for (i, op) in Opcode::ALL.iter().enumerate() {
        if let Some(shape) = shape_named(&format!("{op:?}Reply")) {
            for variant in 0..2 {
                let mut s = vec![i as u8, 0];
                s.extend(synthesize(shape, variant, 0));
                seeds.push(s);
            }
        }
        let e = pb::ErrorReply {
            errno: 2,
            message: "no such file".into(),
            field: "lookup.name".into(),
        };
        let mut s = vec![i as u8, 1];
        s.extend(e.encode_to_vec());
        seeds.push(s);
        if let Some(shape) = err {
            let mut s = vec![i as u8, 1];
            s.extend(synthesize(shape, 1, 0));
            seeds.push(s);
        }
    }
    Harness {
        seeds,
        run: Box::new(|b: &[u8]| {
            let [i, flags, body @ ..] = b else { return false };
            let op = Opcode::ALL[usize::from(*i) % Opcode::ALL.len()];
            decode_reply_to(op, flags & 1 != 0, body)
        }),
        fixup: None,
    }
}

fn frames() -> Harness {
    let mut seeds = Vec::new();
    let reqs = real_requests();
    for chunk in [1u8, 7, 32, 255] {
        let mut s = vec![chunk];
        for (k, (op, body)) in reqs.iter().enumerate() {
            s.extend(encode_request(*op, k as u64 + 1, 42, &RawBody(body.clone())));
        }
        seeds.push(s);
    }
    Harness {
        seeds,
        run: Box::new(|data: &[u8]| {
            let Some((&c, stream)) = data.split_first() else {
                return false;
            };
            let mut decoder = FrameDecoder::new(FRAME_MAX_BODY);
            let mut frames = 0;
            for part in stream.chunks(usize::from(c).max(1)) {
                decoder.feed(part);
                loop {
                    match decoder.next_frame() {
                        Ok(Some((header, body))) => {
                            assert_eq!(header.body_len as usize, body.len());
                            assert!(header.body_len <= FRAME_MAX_BODY);
                            let _ = Request::decode(&header, &body);
                            frames += 1;
                        }
                        Ok(None) => {
                            assert!(decoder.buffered() < HEADER_LEN + FRAME_MAX_BODY as usize);
                            break;
                        }
                        Err(_) => return false,
                    }
                }
            }
            frames > 0
        }),
        fixup: None,
    }
}

/// A message whose encoding is given bytes (to frame ready-made bodies).
#[derive(Clone, PartialEq, Default)]
struct RawBody(Vec<u8>);

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawBody({} bytes)", self.0.len())
    }
}

impl Message for RawBody {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

fn gate() -> Harness {
    let secret = ClusterSecret::from_bytes(&[7; 32]).expect("32 bytes is a valid secret");
    let now = 1_000_000;
    let mut seeds = Vec::new();
    let hs = rustre_proto::auth::ClientHandshake::new(&secret, now).expect("randomness");
    let mut req = pb::HandshakeRequest {
        cluster_name: "fuzz".into(),
        protocol_version: 1,
        client_id: 42,
        node_name: "n".into(),
        role: pb::PeerRole::Client as i32,
        ..Default::default()
    };
    hs.hello(&mut req);
    let mut s = 42u64.to_le_bytes().to_vec();
    s.extend(req.encode_to_vec());
    seeds.push(s);
    req.auth_mac = vec![1; 32];
    let mut s = 42u64.to_le_bytes().to_vec();
    s.extend(req.encode_to_vec());
    seeds.push(s);
    Harness {
        seeds,
        run: Box::new(move |b: &[u8]| {
            if b.len() < 8 {
                return false;
            }
            let (id, body) = b.split_at(8);
            let id = u64::from_le_bytes(id.try_into().unwrap_or([0; 8]));
            let h = FrameHeader::request(Opcode::Handshake.as_u16(), 1, id, body.len() as u32);
            // A fresh server each time: the replay cache would refuse a repeated nonce.
            let auth = ServerAuth::new(secret.clone(), rustre_proto::auth::DEFAULT_WINDOW_MS, 16);
            let mut session = ServerSession::default();
            match auth.gate(&mut session, &h, body, now) {
                Gate::Pass => panic!("an arbitrary handshake passed the gate"),
                Gate::Challenge(reply) => {
                    assert!(pb::HandshakeReply::decode(reply.as_slice()).is_ok());
                    true
                }
                Gate::Refuse { .. } => false,
            }
        }),
        fixup: None,
    }
}

/// The wire targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "frame",
            about: "frame streams fed in chunks through FrameDecoder, each frame then decoded as a request",
            max_len: 16 << 10,
            setup: frames,
        },
        Target {
            name: "request",
            about: "every request message under its opcode (and unknown opcodes) through Request::decode",
            max_len: 4 << 10,
            setup: requests,
        },
        Target {
            name: "reply",
            about: "every reply and error reply through decode_reply, the client's path",
            max_len: 4 << 10,
            setup: replies,
        },
        Target {
            name: "message",
            about: "every message of the schema through the bounded decode_body; what decodes round-trips",
            max_len: 4 << 10,
            setup: messages,
        },
        Target {
            name: "handshake",
            about: "handshake requests through the authentication gate of a server with a secret",
            max_len: 1 << 10,
            setup: gate,
        },
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_message_and_opcode_has_seeds() {
        let n = super::message_types().len();
        assert!(n > 50, "{n}");
        assert_eq!(super::messages().seeds.len(), 2 * n);
        // Two synthesized bodies per opcode's request, plus the hand-made ones.
        assert!(super::requests().seeds.len() >= 2 * rustre_proto::Opcode::ALL.len());
        assert!(super::replies().seeds.len() >= 3 * rustre_proto::Opcode::ALL.len());
    }
}
