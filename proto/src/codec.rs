//! Encoding and bounded decoding of message bodies and whole frames.

use crate::errno::RemoteError;
use crate::frame::{DEFAULT_MAX_BODY, FLAG_ERROR, FLAG_REPLY, FrameHeader, encode_frame};
use crate::limits::{Bounded, decoded_size};
use crate::{Errno, Opcode, ProtocolError, pb};
use prost::Message;

/// Encodes a message body.
pub fn encode_body<M: Message>(msg: &M) -> Vec<u8> {
    msg.encode_to_vec()
}

fn body_len(body: &[u8]) -> u32 {
    // Bodies are built from bounded messages; one beyond u32 cannot be framed and is refused by
    // every receiver's limit anyway.
    u32::try_from(body.len()).unwrap_or(u32::MAX)
}

/// Encodes a whole request frame: header (opcode, xid, client id) and body.
pub fn encode_request<M: Message>(opcode: Opcode, xid: u64, client_id: u64, msg: &M) -> Vec<u8> {
    let body = encode_body(msg);
    encode_frame(
        &FrameHeader::request(opcode.as_u16(), xid, client_id, body_len(&body)),
        &body,
    )
}

/// Encodes a whole reply frame answering `request`.
pub fn encode_reply<M: Message>(request: &FrameHeader, msg: &M) -> Vec<u8> {
    let body = encode_body(msg);
    encode_frame(&request.reply_to(request.opcode, body_len(&body), false), &body)
}

/// The body of an error reply.
pub fn error_body(err: &RemoteError) -> Vec<u8> {
    encode_body(&err.to_pb())
}

/// The body of an error reply with `errno` and `message`.
pub fn error_reply(errno: Errno, message: impl Into<String>) -> pb::ErrorReply {
    pb::ErrorReply {
        errno: errno.get(),
        message: message.into(),
        field: String::new(),
    }
}

/// Encodes a whole error reply frame (`FLAG_ERROR`) answering `request`.
pub fn encode_error_reply(request: &FrameHeader, err: &RemoteError) -> Vec<u8> {
    let body = error_body(err);
    encode_frame(&request.reply_to(request.opcode, body_len(&body), true), &body)
}

/// Decodes a body of message type `M` received with `opcode`, refusing it if it would decode into
/// more than [`DEFAULT_MAX_BODY`] bytes of memory.
pub fn decode_body<M: Message + Default + Bounded>(opcode: Opcode, bytes: &[u8]) -> Result<M, ProtocolError> {
    decode_body_with_limit(opcode, bytes, DEFAULT_MAX_BODY as usize)
}

/// [`decode_body`] with an explicit memory limit in bytes.
pub fn decode_body_with_limit<M: Message + Default + Bounded>(
    opcode: Opcode,
    bytes: &[u8],
    limit: usize,
) -> Result<M, ProtocolError> {
    let shape = M::shape();
    let need = decoded_size(shape, bytes, limit).map_err(|reason| ProtocolError::Decode {
        message: shape.name,
        reason: format!("{opcode}: {reason}"),
    })?;
    if need > limit {
        return Err(ProtocolError::Decode {
            message: shape.name,
            reason: format!(
                "{opcode}: {} body bytes would decode into more than {limit} bytes",
                bytes.len()
            ),
        });
    }
    M::decode(bytes).map_err(|e| ProtocolError::Decode {
        message: shape.name,
        reason: format!("{opcode}: {e}"),
    })
}

/// Why a call's reply is not the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The server answered with an error reply.
    #[error("server error: {0}")]
    Remote(#[from] RemoteError),
    /// The reply is malformed.
    #[error("bad reply: {0}")]
    Protocol(#[from] ProtocolError),
}

impl ReplyError {
    /// The errno to report to an application.
    pub fn errno(&self) -> Errno {
        match self {
            ReplyError::Remote(r) => r.errno,
            ReplyError::Protocol(_) => Errno::EPROTO,
        }
    }
}

/// Decodes the reply to a request with opcode `expected`: the reply message, or the server's
/// error when the frame carries `FLAG_ERROR`.
pub fn decode_reply<M: Message + Default + Bounded>(
    expected: Opcode,
    header: &FrameHeader,
    body: &[u8],
) -> Result<M, ReplyError> {
    if header.flags & FLAG_REPLY == 0 {
        return Err(ProtocolError::invalid("frame.flags", "a request where a reply was expected").into());
    }
    if header.opcode != expected.as_u16() {
        return Err(ProtocolError::invalid(
            "frame.opcode",
            format!("reply opcode {} to a {expected} request", header.opcode),
        )
        .into());
    }
    if header.flags & FLAG_ERROR != 0 {
        let e = decode_body::<pb::ErrorReply>(expected, body)?;
        return Err(RemoteError::try_from(e)?.into());
    }
    Ok(decode_body::<M>(expected, body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDecoder;

    #[test]
    fn request_frames_round_trip_through_the_stream_decoder() {
        let msg = pb::OstReadRequest {
            object: Some(pb::ObjectRef {
                ost_index: 1,
                object_id: 2,
            }),
            offset: 4096,
            length: 4096,
            bulk: Some(pb::BulkDescriptor {
                addr: 7,
                rkey: 8,
                len: 4096,
                crc32c: 0,
            }),
            cap: None,
            reply_inline: false,
            more: Vec::new(),
        };
        let frame = encode_request(Opcode::OstRead, 11, 22, &msg);
        let mut d = FrameDecoder::new(DEFAULT_MAX_BODY);
        d.feed(&frame);
        let (h, body) = d.next_frame().unwrap().unwrap();
        assert_eq!((h.opcode, h.xid, h.client_id), (Opcode::OstRead.as_u16(), 11, 22));
        assert_eq!(decode_body::<pb::OstReadRequest>(Opcode::OstRead, &body).unwrap(), msg);
        let req = crate::Request::decode(&h, &body).unwrap();
        assert_eq!(req.opcode(), Opcode::OstRead);
    }

    #[test]
    fn replies_and_error_replies_decode() {
        let req = FrameHeader::request(Opcode::OstWrite.as_u16(), 3, 4, 0);
        let mut d = FrameDecoder::new(DEFAULT_MAX_BODY);
        d.feed(&encode_reply(&req, &pb::OstWriteReply { size: 99 }));
        let (h, body) = d.next_frame().unwrap().unwrap();
        let r: pb::OstWriteReply = decode_reply(Opcode::OstWrite, &h, &body).unwrap();
        assert_eq!(r.size, 99);
        assert!(decode_reply::<pb::OstReadReply>(Opcode::OstRead, &h, &body).is_err());

        let err = RemoteError::from(&ProtocolError::invalid("ost.write.bulk.len", "too long"));
        d.feed(&encode_error_reply(&req, &err));
        let (h, body) = d.next_frame().unwrap().unwrap();
        let e = decode_reply::<pb::OstWriteReply>(Opcode::OstWrite, &h, &body).unwrap_err();
        assert_eq!(e, ReplyError::Remote(err));
        assert_eq!(e.errno(), Errno::EINVAL);
        let wire = error_reply(Errno::ENOSPC, "full");
        assert_eq!(RemoteError::try_from(wire).unwrap().errno, Errno::ENOSPC);
    }

    #[test]
    fn amplifying_bodies_are_refused_before_decoding() {
        // 4 MiB of empty DirEntry elements would decode into hundreds of MiB.
        let body: Vec<u8> = std::iter::repeat_n([0x0a_u8, 0x00], 2 * 1024 * 1024)
            .flatten()
            .collect();
        let e = decode_body::<pb::MdsReaddirReply>(Opcode::MdsReaddir, &body).unwrap_err();
        assert!(e.to_string().contains("would decode into more than"), "{e}");
        // The same shape, small, is fine.
        let small: Vec<u8> = std::iter::repeat_n([0x0a_u8, 0x00], 100).flatten().collect();
        assert_eq!(
            decode_body::<pb::MdsReaddirReply>(Opcode::MdsReaddir, &small)
                .unwrap()
                .entries
                .len(),
            100
        );
    }
}
