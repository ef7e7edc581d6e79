//! The deterministic data pattern: every 8-byte word of a file is a hash of a seed (which names
//! the writer: rank, file) and the word's file offset, so a block read from the wrong place, the
//! wrong file or another writer never checks out.

fn mix(seed: u64) -> u64 {
    // splitmix64 of the seed.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The word at word index `index` for a mixed seed: distinct for every index (an odd multiplier
/// is a bijection) and every seed, and cheap enough not to bound the bandwidth measured.
#[inline]
fn word(mixed: u64, index: u64) -> u64 {
    index.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ mixed
}

/// Fills `buf` with the pattern of `seed` as it is at file offset `offset`.
pub fn fill(buf: &mut [u8], offset: u64, seed: u64) {
    let m = mix(seed);
    // Unaligned head, byte by byte.
    let head = (((8 - offset % 8) % 8) as usize).min(buf.len());
    for (k, b) in buf[..head].iter_mut().enumerate() {
        let pos = offset + k as u64;
        *b = word(m, pos / 8).to_le_bytes()[(pos % 8) as usize];
    }
    let first = (offset + head as u64) / 8;
    let tail_index = first + ((buf.len() - head) / 8) as u64;
    let mut chunks = buf[head..].chunks_exact_mut(8);
    for (k, c) in (&mut chunks).enumerate() {
        c.copy_from_slice(&word(m, first + k as u64).to_le_bytes());
    }
    let tail = chunks.into_remainder();
    let w = word(m, tail_index).to_le_bytes();
    let n = tail.len();
    tail.copy_from_slice(&w[..n]);
}

/// Checks `buf` against the pattern of `seed` at `offset`; the index of the first wrong byte.
pub fn check(buf: &[u8], offset: u64, seed: u64) -> Option<usize> {
    let m = mix(seed);
    let head = (((8 - offset % 8) % 8) as usize).min(buf.len());
    for (k, b) in buf[..head].iter().enumerate() {
        let pos = offset + k as u64;
        if *b != word(m, pos / 8).to_le_bytes()[(pos % 8) as usize] {
            return Some(k);
        }
    }
    let first = (offset + head as u64) / 8;
    let body = &buf[head..];
    let chunks = body.chunks_exact(8);
    let tail = chunks.remainder();
    // A fast pass over whole words; the slow one below only finds the byte.
    let mut bad_word = None;
    for (k, c) in chunks.enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        if u64::from_le_bytes(a) != word(m, first + k as u64) {
            bad_word = Some(k);
            break;
        }
    }
    if let Some(k) = bad_word {
        let w = word(m, first + k as u64).to_le_bytes();
        let j = (0..8).find(|&j| body[k * 8 + j] != w[j]).unwrap_or(0);
        return Some(head + k * 8 + j);
    }
    let w = word(m, first + (body.len() / 8) as u64).to_le_bytes();
    (0..tail.len())
        .find(|&j| tail[j] != w[j])
        .map(|j| head + body.len() - tail.len() + j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_match_the_whole() {
        let mut whole = vec![0u8; 1000];
        fill(&mut whole, 5, 9);
        for (a, b) in [(0usize, 1usize), (0, 3), (3, 11), (7, 8), (8, 16), (13, 999), (0, 1000)] {
            let mut piece = vec![0u8; b - a];
            fill(&mut piece, 5 + a as u64, 9);
            assert_eq!(piece, whole[a..b], "piece {a}..{b}");
            assert_eq!(check(&whole[a..b], 5 + a as u64, 9), None);
        }
    }

    #[test]
    fn fill_then_check_at_any_offset() {
        for off in [0u64, 1, 7, 8, 47008, 3901 * 3 + 5] {
            let mut b = vec![0u8; 3901];
            fill(&mut b, off, 42);
            assert_eq!(check(&b, off, 42), None);
            // A piece of it checks at its own offset.
            assert_eq!(check(&b[13..100], off + 13, 42), None);
            assert!(check(&b, off + 8, 42).is_some(), "shifted data must not check");
            assert!(check(&b, off, 43).is_some(), "another seed must not check");
            b[1000] ^= 1;
            assert_eq!(check(&b, off, 42), Some(1000));
        }
    }
}
