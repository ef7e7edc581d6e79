//! Frames on a TCP stream: the 32-byte rustre header, then the body. Fabric-internal frames carry
//! `FLAG_FABRIC` and one of the opcodes below; services never see them.
//!
//! | opcode | direction | flags | body |
//! |---|---|---|---|
//! | `HELLO` | client → server | | credits u32, max_body u32 |
//! | `HELLO` | server → client | REPLY | granted credits u32, max_body u32 |
//! | `BULK_GET` | server → client | | rkey u32, 0 u32, offset u64, len u64 |
//! | `BULK_DATA` | client → server | REPLY [ERROR] | the bytes (chunks ≤ max_body), or the refusal text |
//! | `BULK_PUT` | server → client | | rkey u32, flags u32 (1 last, 2 posted), offset u64, then the bytes |
//! | `BULK_ACK` | client → server | REPLY [ERROR] | empty, or the refusal text |
//! | `BULK_EAGER` | client → server | | rkey u32, 0 u32, offset u64, then the bytes |
//!
//! The xid of `BULK_GET`/`DATA`/`PUT`/`ACK` is the server's per-connection operation id. A
//! `BULK_EAGER` carries the xid of the request it travels with: a call exposing a source of at
//! most [`EAGER_MAX`] bytes sends those bytes just before its request, in the same `writev`, so a
//! server `pull` of them is a copy instead of a `BULK_GET` round trip. The server keeps them until
//! it replies to that request (at most one per granted credit).
//!
//! The client answers the last `BULK_PUT` of a push with a `BULK_ACK`, and any refused one with a
//! refusal. A push whose last chunk says *posted* is one the server does not wait on (its reply
//! carries the crc32c of the bytes, which the client checks): the client sends no `BULK_ACK` for
//! it, and a refusal fails the client's call on the client's side. A client that ignores the flag
//! acknowledges as before; the server drops acknowledgements of pushes it no longer waits on.

use crate::FabricError;
use rustre_proto::frame::{FLAG_FABRIC, FLAG_REPLY, HEADER_LEN, VERSION};
use rustre_proto::{FrameHeader, ProtocolError};
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};

/// Connection set-up: credits and frame size limits.
pub(crate) const OP_HELLO: u16 = 1;
/// Server asks for bytes of an exposed source.
pub(crate) const OP_BULK_GET: u16 = 2;
/// Client sends bytes (or a refusal) for a `BULK_GET`.
pub(crate) const OP_BULK_DATA: u16 = 3;
/// Server writes bytes into an exposed sink.
pub(crate) const OP_BULK_PUT: u16 = 4;
/// Client acknowledges (or refuses) a `BULK_PUT`.
pub(crate) const OP_BULK_ACK: u16 = 5;
/// `BULK_PUT` flag: the push's last chunk.
pub(crate) const PUT_LAST: u32 = 1;
/// `BULK_PUT` flag (with [`PUT_LAST`]): the server does not wait for the `BULK_ACK`.
pub(crate) const PUT_POSTED: u32 = 2;
/// Client sends the bytes of a small source ahead of the request that exposes it.
pub(crate) const OP_BULK_EAGER: u16 = 6;

/// Largest source sent eagerly; a larger one waits for the server's `BULK_GET`. Small enough that
/// the server's eager store (one per credit) stays small, large enough for IOR-hard's 47008-byte
/// records and small-file writes.
pub(crate) const EAGER_MAX: usize = 64 * 1024;

/// Size of the `BULK_GET` body.
pub(crate) const GET_LEN: usize = 24;
/// Size of the `BULK_PUT` prefix before the bytes.
pub(crate) const PUT_PREFIX: usize = 16;
/// Size of the `HELLO` body.
pub(crate) const HELLO_LEN: usize = 8;
/// Longest refusal text accepted.
pub(crate) const MAX_REFUSAL: usize = 4096;

/// A fabric-internal header.
pub(crate) fn fabric_header(opcode: u16, flags: u32, xid: u64, client_id: u64, body_len: usize) -> FrameHeader {
    FrameHeader {
        version: VERSION,
        opcode,
        flags: flags | FLAG_FABRIC,
        xid,
        client_id,
        body_len: body_len as u32,
    }
}

/// A fabric reply header.
pub(crate) fn fabric_reply(opcode: u16, extra: u32, xid: u64, body_len: usize) -> FrameHeader {
    fabric_header(opcode, FLAG_REPLY | extra, xid, 0, body_len)
}

/// Writes all of `parts` with as few syscalls as possible (one `writev` in the common case).
pub(crate) fn write_parts(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes")),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one frame: header then body parts.
pub(crate) fn write_frame(w: &mut impl Write, header: &FrameHeader, body: &[&[u8]]) -> io::Result<()> {
    debug_assert_eq!(body.iter().map(|b| b.len()).sum::<usize>(), header.body_len as usize);
    let h = header.encode();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(body.len() + 1);
    parts.push(&h);
    parts.extend_from_slice(body);
    write_parts(w, &parts)
}

/// What reading the next header produced.
pub(crate) enum ReadHeader {
    /// A valid header.
    Frame(FrameHeader),
    /// The peer closed the stream cleanly between frames.
    Eof,
}

/// Reads and validates the next header; a stream ending between frames is `Eof`.
pub(crate) fn read_header(r: &mut impl Read, max_body: u32, peer: &str) -> Result<ReadHeader, FabricError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(ReadHeader::Eof),
            Ok(0) => {
                return Err(FabricError::Protocol {
                    peer: peer.to_string(),
                    source: ProtocolError::Truncated {
                        what: "frame header",
                        need: HEADER_LEN,
                        have: got,
                    },
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("recv", peer, e)),
        }
    }
    FrameHeader::decode(&h, max_body)
        .map(ReadHeader::Frame)
        .map_err(|source| FabricError::Protocol {
            peer: peer.to_string(),
            source,
        })
}

/// Reads exactly `len` body bytes into a new vector.
pub(crate) fn read_body(r: &mut impl Read, len: usize, peer: &str) -> Result<Vec<u8>, FabricError> {
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| io_err("recv", peer, e))?;
    Ok(body)
}

/// Reads exactly `dst.len()` payload bytes: the ones the buffer already holds, then the rest
/// straight from the stream into `dst`. A bulk chunk smaller than the buffer would otherwise be
/// read into the buffer and copied out of it: a second copy of the payload, in user space.
pub(crate) fn read_payload<R: Read>(r: &mut BufReader<R>, dst: &mut [u8], peer: &str) -> Result<(), FabricError> {
    let held = r.buffer();
    let n = held.len().min(dst.len());
    dst[..n].copy_from_slice(&held[..n]);
    r.consume(n);
    r.get_mut()
        .read_exact(&mut dst[n..])
        .map_err(|e| io_err("recv", peer, e))
}

/// Reads and throws away `len` bytes.
pub(crate) fn discard(r: &mut impl Read, len: u64, peer: &str) -> Result<(), FabricError> {
    let n = io::copy(&mut r.take(len), &mut io::sink()).map_err(|e| io_err("recv", peer, e))?;
    if n == len {
        Ok(())
    } else {
        Err(FabricError::Closed(peer.to_string()))
    }
}

/// Maps an I/O error to the fabric error, treating resets and EOF as a closed peer.
pub(crate) fn io_err(op: &'static str, peer: &str, e: io::Error) -> FabricError {
    use io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected => {
            FabricError::Closed(peer.to_string())
        }
        _ => FabricError::Io {
            op,
            peer: peer.to_string(),
            source: e,
        },
    }
}

/// A protocol error naming the offending field.
pub(crate) fn violation(peer: &str, field: &'static str, reason: impl Into<String>) -> FabricError {
    FabricError::Protocol {
        peer: peer.to_string(),
        source: ProtocolError::invalid(field, reason),
    }
}

pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// `HELLO` body.
pub(crate) fn hello_body(credits: u32, max_body: u32) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[0..4].copy_from_slice(&credits.to_le_bytes());
    b[4..8].copy_from_slice(&max_body.to_le_bytes());
    b
}

/// `BULK_GET` body.
pub(crate) fn get_body(rkey: u32, offset: u64, len: u64) -> [u8; GET_LEN] {
    let mut b = [0u8; GET_LEN];
    b[0..4].copy_from_slice(&rkey.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    b[16..24].copy_from_slice(&len.to_le_bytes());
    b
}

/// `BULK_PUT` prefix.
pub(crate) fn put_prefix(rkey: u32, flags: u32, offset: u64) -> [u8; PUT_PREFIX] {
    let mut b = [0u8; PUT_PREFIX];
    b[0..4].copy_from_slice(&rkey.to_le_bytes());
    b[4..8].copy_from_slice(&flags.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_comes_partly_from_the_buffer_and_the_rest_from_the_stream() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let mut r = BufReader::with_capacity(16, &bytes[..]);
        let mut head = [0u8; 4];
        r.read_exact(&mut head).unwrap();
        assert_eq!(r.buffer().len(), 12, "the buffer holds the payload's first bytes");
        let mut payload = vec![0u8; 100];
        read_payload(&mut r, &mut payload, "p").unwrap();
        assert_eq!(payload, bytes[4..104]);
        // Shorter than what the buffer holds, and what follows still reads in order.
        let mut rest = [0u8; 8];
        r.read_exact(&mut rest).unwrap();
        let mut small = [0u8; 3];
        read_payload(&mut r, &mut small, "p").unwrap();
        assert_eq!((&rest[..], &small[..]), (&bytes[104..112], &bytes[112..115]));
        let mut tail = Vec::new();
        r.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, bytes[115..]);
        // A stream that ends early is the peer gone.
        let mut short = vec![0u8; 10];
        let mut r = BufReader::with_capacity(16, &bytes[..5]);
        assert!(matches!(
            read_payload(&mut r, &mut short, "p"),
            Err(FabricError::Closed(_))
        ));
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let mut out = Vec::new();
        let h = fabric_header(OP_BULK_PUT, 0, 9, 4, PUT_PREFIX + 3);
        write_frame(&mut out, &h, &[&put_prefix(5, PUT_LAST, 7), b"abc"]).unwrap();
        let mut r = &out[..];
        let ReadHeader::Frame(got) = read_header(&mut r, 1024, "p").unwrap() else {
            panic!("eof")
        };
        assert_eq!(got, h);
        let body = read_body(&mut r, got.body_len as usize, "p").unwrap();
        assert_eq!((u32_at(&body, 0), u32_at(&body, 4), u64_at(&body, 8)), (5, 1, 7));
        assert_eq!(&body[16..], b"abc");
        assert!(matches!(read_header(&mut r, 1024, "p").unwrap(), ReadHeader::Eof));
    }

    #[test]
    fn truncated_and_oversized_headers_are_protocol_errors() {
        let h = fabric_header(OP_HELLO, 0, 1, 1, 5000).encode();
        let e = read_header(&mut &h[..], 4096, "peer").err().unwrap();
        assert!(e.to_string().contains("exceeds"), "{e}");
        let e = read_header(&mut &h[..10], 4096, "peer").err().unwrap();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
