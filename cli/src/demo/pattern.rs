//! The demo's data: a deterministic pattern that is a function of the file offset alone, so a
//! read-back can be checked without keeping the data, and a misplaced block (wrong stripe, wrong
//! object, wrong offset) never checks out by accident.

/// The 8 pattern bytes of the 8-byte-aligned word at byte offset `word * 8` of a file with `seed`.
#[inline]
fn word(seed: u64, word: u64) -> u64 {
    // splitmix64: cheap, and every bit of the position reaches every bit of the output.
    let mut z = seed ^ word.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pattern byte at `offset`.
fn byte_at(seed: u64, offset: u64) -> u8 {
    word(seed, offset / 8).to_le_bytes()[(offset % 8) as usize]
}

/// Fills `buf` with the pattern of the file bytes `offset .. offset + buf.len()`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    // Unaligned head, byte by byte.
    while pos < buf.len() && !(offset + pos as u64).is_multiple_of(8) {
        buf[pos] = byte_at(seed, offset + pos as u64);
        pos += 1;
    }
    let first_word = (offset + pos as u64) / 8;
    let total = buf.len();
    let mut chunks = buf[pos..].chunks_exact_mut(8);
    for (w, chunk) in (first_word..).zip(&mut chunks) {
        chunk.copy_from_slice(&word(seed, w).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let tail_start = offset + (total - rest.len()) as u64;
    for (i, b) in rest.iter_mut().enumerate() {
        *b = byte_at(seed, tail_start + i as u64);
    }
}

/// The first byte of `buf` that differs from the pattern at file offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Its file offset.
    pub offset: u64,
    /// The pattern byte.
    pub expected: u8,
    /// The byte read.
    pub found: u8,
}

/// Checks that `buf` holds the pattern of file bytes `offset .. offset + buf.len()`.
/// `scratch` is reused between calls to avoid allocating on every chunk.
pub fn verify(seed: u64, offset: u64, buf: &[u8], scratch: &mut Vec<u8>) -> Result<(), Mismatch> {
    scratch.resize(buf.len(), 0);
    fill(seed, offset, scratch);
    if scratch.as_slice() == buf {
        return Ok(());
    }
    let i = buf.iter().zip(scratch.iter()).position(|(a, b)| a != b).unwrap_or(0);
    Err(Mismatch {
        offset: offset + i as u64,
        expected: scratch[i],
        found: buf[i],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_gives_the_same_bytes() {
        let mut whole = vec![0u8; 1000];
        fill(7, 3, &mut whole);
        for cut in [0usize, 1, 5, 8, 13, 999, 1000] {
            let (mut a, mut b) = (vec![0u8; cut], vec![0u8; 1000 - cut]);
            fill(7, 3, &mut a);
            fill(7, 3 + cut as u64, &mut b);
            assert_eq!([a, b].concat(), whole, "cut {cut}");
        }
    }

    #[test]
    fn verify_finds_the_first_wrong_byte() {
        let mut buf = vec![0u8; 4096];
        fill(1, 1 << 20, &mut buf);
        let mut scratch = Vec::new();
        assert_eq!(verify(1, 1 << 20, &buf, &mut scratch), Ok(()));
        buf[1234] ^= 0x40;
        let m = verify(1, 1 << 20, &buf, &mut scratch).unwrap_err();
        assert_eq!(m.offset, (1 << 20) + 1234);
        assert_eq!(m.found ^ m.expected, 0x40);
        // The same bytes at another offset, or under another seed, do not check out.
        buf[1234] ^= 0x40;
        assert!(verify(1, (1 << 20) + 4096, &buf, &mut scratch).is_err());
        assert!(verify(2, 1 << 20, &buf, &mut scratch).is_err());
    }

    #[test]
    fn zeros_are_not_the_pattern() {
        let zeros = vec![0u8; 64];
        assert!(verify(0, 0, &zeros, &mut Vec::new()).is_err());
    }
}
