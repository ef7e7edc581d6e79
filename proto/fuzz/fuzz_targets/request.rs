//! Arbitrary bodies decoded as a request under an opcode chosen by the first two bytes, and as
//! every message type of the schema.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rustre_proto::codec::decode_body;
use rustre_proto::{FrameHeader, Opcode, Request, pb};

fuzz_target!(|data: &[u8]| {
    let [a, b, body @ ..] = data else { return };
    let raw = u16::from_le_bytes([*a, *b]);
    // Mostly known opcodes (where the interesting code is), sometimes any value.
    let opcode = if raw & 0x8000 == 0 {
        Opcode::ALL[usize::from(raw) % Opcode::ALL.len()].as_u16()
    } else {
        raw & 0x7fff
    };
    let header = FrameHeader::request(opcode, 1, 0, body.len() as u32);
    if let Ok(request) = Request::decode(&header, body) {
        assert_eq!(request.opcode().as_u16(), opcode);
    }
    macro_rules! decode_as {
        ($t:ident) => {
            let _ = decode_body::<pb::$t>(Opcode::MdsNull, body);
        };
    }
    rustre_proto::for_each_message!(decode_as);
});
