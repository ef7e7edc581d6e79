//! The fixed binary frame header that starts every message on every fabric.
//!
//! Layout (32 bytes, little endian):
//!
//! | offset | size | field      |
//! |-------:|-----:|------------|
//! | 0      | 4    | magic `RSTR` |
//! | 4      | 2    | version    |
//! | 6      | 2    | opcode     |
//! | 8      | 4    | flags      |
//! | 12     | 8    | xid        |
//! | 20     | 8    | client id  |
//! | 28     | 4    | body length|
//!
//! The body (a protobuf message, or raw bulk bytes for the stream providers) follows.

use crate::ProtocolError;

/// Frame magic: the bytes `RSTR`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RSTR");
/// Wire protocol version spoken by this build.
pub const VERSION: u16 = 1;
/// Size of the encoded header in bytes.
pub const HEADER_LEN: usize = 32;
/// Default upper bound on a frame body; every receiver enforces a limit before allocating.
pub const DEFAULT_MAX_BODY: u32 = 4 * 1024 * 1024 + 64 * 1024;

/// Frame flag: this frame is a reply to the request with the same xid.
pub const FLAG_REPLY: u32 = 1 << 0;
/// Frame flag: the reply body is an `ErrorReply`.
pub const FLAG_ERROR: u32 = 1 << 1;
/// Frame flag: fabric-internal control frame (bulk emulation, credits); never seen by services.
pub const FLAG_FABRIC: u32 = 1 << 2;
/// Mask of all flags this version understands; others are a protocol error.
pub const KNOWN_FLAGS: u32 = FLAG_REPLY | FLAG_ERROR | FLAG_FABRIC;

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version of the sender.
    pub version: u16,
    /// Operation code (see [`crate::Opcode`]).
    pub opcode: u16,
    /// Flag bits (`FLAG_*`).
    pub flags: u32,
    /// Transaction id, unique per client; matches replies to requests.
    pub xid: u64,
    /// Sender's client id (0 for servers).
    pub client_id: u64,
    /// Length of the body that follows.
    pub body_len: u32,
}

impl FrameHeader {
    /// A request header for `opcode`.
    pub fn request(opcode: u16, xid: u64, client_id: u64, body_len: u32) -> Self {
        Self {
            version: VERSION,
            opcode,
            flags: 0,
            xid,
            client_id,
            body_len,
        }
    }

    /// The reply header matching this request.
    pub fn reply_to(&self, opcode: u16, body_len: u32, error: bool) -> Self {
        let flags = FLAG_REPLY | if error { FLAG_ERROR } else { 0 };
        Self {
            version: VERSION,
            opcode,
            flags,
            xid: self.xid,
            client_id: self.client_id,
            body_len,
        }
    }

    /// True if this is a reply frame.
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }

    /// Encodes the header into its fixed 32-byte form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.opcode.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.xid.to_le_bytes());
        b[20..28].copy_from_slice(&self.client_id.to_le_bytes());
        b[28..32].copy_from_slice(&self.body_len.to_le_bytes());
        b
    }

    /// Decodes and validates a header; `max_body` bounds the body the caller will allocate.
    pub fn decode(b: &[u8], max_body: u32) -> Result<Self, ProtocolError> {
        if b.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated {
                what: "frame header",
                need: HEADER_LEN,
                have: b.len(),
            });
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        let version = u16_at(4);
        if version != VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                got: version,
                supported: VERSION,
            });
        }
        let flags = u32_at(8);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(ProtocolError::invalid(
                "frame.flags",
                format!("unknown bits {:#x}", flags & !KNOWN_FLAGS),
            ));
        }
        let body_len = u32_at(28);
        if body_len > max_body {
            return Err(ProtocolError::FrameTooLarge {
                len: body_len,
                max: max_body,
            });
        }
        Ok(Self {
            version,
            opcode: u16_at(6),
            flags,
            xid: u64_at(12),
            client_id: u64_at(20),
            body_len,
        })
    }
}

/// Encodes a whole frame (header + body) into one buffer.
pub fn encode_frame(header: &FrameHeader, body: &[u8]) -> Vec<u8> {
    debug_assert_eq!(header.body_len as usize, body.len());
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out
}

/// Incremental frame decoder for byte streams (sans-I/O): feed bytes, take frames.
///
/// Memory is bounded: the buffer never holds more than one header plus `max_body` bytes
/// beyond what the caller has already fed and not consumed.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_body: u32,
}

impl FrameDecoder {
    /// A decoder refusing bodies longer than `max_body`.
    pub fn new(max_body: u32) -> Self {
        Self {
            buf: Vec::new(),
            max_body,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed, or an error
    /// (after which the stream is unusable and should be closed).
    pub fn next_frame(&mut self) -> Result<Option<(FrameHeader, Vec<u8>)>, ProtocolError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = FrameHeader::decode(&self.buf[..HEADER_LEN], self.max_body)?;
        let total = HEADER_LEN + header.body_len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let body = self.buf[HEADER_LEN..total].to_vec();
        self.buf.drain(..total);
        Ok(Some((header, body)))
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = FrameHeader {
            version: VERSION,
            opcode: 7,
            flags: FLAG_REPLY,
            xid: 42,
            client_id: 9,
            body_len: 100,
        };
        assert_eq!(FrameHeader::decode(&h.encode(), 1000).unwrap(), h);
    }

    #[test]
    fn oversized_body_is_refused_before_allocation() {
        let h = FrameHeader::request(1, 1, 1, 5000);
        let err = FrameHeader::decode(&h.encode(), 4096).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { len: 5000, max: 4096 }));
    }

    #[test]
    fn decoder_splits_a_stream() {
        let a = encode_frame(&FrameHeader::request(1, 1, 3, 3), b"abc");
        let b = encode_frame(&FrameHeader::request(2, 2, 3, 0), b"");
        let mut d = FrameDecoder::new(1024);
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for chunk in all.chunks(5) {
            d.feed(chunk);
        }
        let (h1, b1) = d.next_frame().unwrap().unwrap();
        assert_eq!((h1.opcode, b1.as_slice()), (1, &b"abc"[..]));
        let (h2, b2) = d.next_frame().unwrap().unwrap();
        assert_eq!((h2.opcode, b2.len()), (2, 0));
        assert!(d.next_frame().unwrap().is_none());
    }
}
