//! Arbitrary byte streams through the frame decoder, fed in chunks; every frame that comes out
//! is then decoded as a request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rustre_proto::frame::HEADER_LEN;
use rustre_proto::{FrameDecoder, Request};

const MAX_BODY: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the chunk size, so split headers and bodies get exercised.
    let Some((&c, stream)) = data.split_first() else { return };
    let chunk = usize::from(c).max(1);
    let mut decoder = FrameDecoder::new(MAX_BODY);
    for part in stream.chunks(chunk) {
        decoder.feed(part);
        loop {
            match decoder.next_frame() {
                Ok(Some((header, body))) => {
                    assert_eq!(header.body_len as usize, body.len());
                    assert!(header.body_len <= MAX_BODY);
                    let _ = Request::decode(&header, &body);
                }
                Ok(None) => {
                    assert!(decoder.buffered() < HEADER_LEN + MAX_BODY as usize);
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
