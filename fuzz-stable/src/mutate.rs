//! Structure-unaware mutations: the input generator of the driver.

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Values that tend to sit on boundaries, for varints and length fields.
const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn interesting(rng: &mut Rng, len: usize) -> u64 {
    match rng.below(4) {
        0 => len as u64,
        1 => (len as u64).wrapping_add(rng.below(3) as u64).wrapping_sub(1),
        _ => INTERESTING[rng.below(INTERESTING.len())],
    }
}

/// Applies one random mutation to `b` (bounded by `max_len`), maybe splicing from `corpus`.
pub fn mutate_once(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    let len = b.len();
    match rng.below(12) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            b[i] ^= 1 << rng.below(8);
        }
        // Set a byte to a random or boundary value.
        1 if len > 0 => {
            let i = rng.below(len);
            b[i] = match rng.below(3) {
                0 => rng.byte(),
                1 => [0x00, 0xff, 0x7f, 0x80][rng.below(4)],
                _ => b[i].wrapping_add(rng.byte() % 5).wrapping_sub(2),
            };
        }
        // Insert random bytes.
        2 => {
            let n = 1 + rng.below(16);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            b.splice(at..at, bytes);
        }
        // Delete a range.
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(32));
            b.drain(at..at + n);
        }
        // Overwrite (or insert) a varint with a boundary value: protobuf lengths, tags, scalars.
        4 if len > 0 => {
            let at = rng.below(len);
            let mut v = Vec::new();
            put_varint(&mut v, interesting(rng, len));
            let old = if rng.below(2) == 0 {
                // Replace the varint that starts here.
                b[at..].iter().position(|x| x & 0x80 == 0).map_or(len - at, |p| p + 1)
            } else {
                0
            };
            b.splice(at..at + old, v);
        }
        // Overwrite a little-endian length field (u16/u32/u64) with a boundary value.
        5 if len > 0 => {
            let width = [2, 4, 8][rng.below(3)];
            let at = rng.below(len);
            let v = interesting(rng, len).to_le_bytes();
            for (k, x) in v.iter().take(width).enumerate() {
                if let Some(slot) = b.get_mut(at + k) {
                    *slot = *x;
                }
            }
        }
        // Splice: a prefix of this input and a suffix of another.
        6 if !corpus.is_empty() => {
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            b.truncate(cut);
            b.extend_from_slice(&other[from..]);
        }
        // Truncate.
        7 if len > 0 => b.truncate(rng.below(len)),
        // Duplicate a chunk (repeated fields, repeated frames).
        8 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let chunk = b[at..at + n].to_vec();
            let reps = 1 + rng.below(8);
            let to = rng.below(len + 1);
            b.splice(to..to, chunk.iter().copied().cycle().take(n * reps));
        }
        // Copy a chunk over another place.
        9 if len > 1 => {
            let from = rng.below(len);
            let to = rng.below(len);
            let n = 1 + rng.below((len - from).min(len - to).min(32));
            let chunk = b[from..from + n].to_vec();
            b[to..to + n].copy_from_slice(&chunk);
        }
        // Random bytes over a range.
        10 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(16));
            for x in &mut b[at..at + n] {
                *x = rng.byte();
            }
        }
        // Append random bytes.
        _ => {
            let n = 1 + rng.below(8);
            b.extend((0..n).map(|_| rng.byte()));
        }
    }
    b.truncate(max_len);
}

/// Makes the next input in `out`: mostly a corpus entry with 1..=8 stacked mutations, sometimes
/// random bytes.
pub fn next_input(rng: &mut Rng, corpus: &[Vec<u8>], out: &mut Vec<u8>, max_len: usize) {
    out.clear();
    if corpus.is_empty() || rng.below(20) == 0 {
        let n = rng.below(max_len.min(1024) + 1);
        out.extend((0..n).map(|_| rng.byte()));
        return;
    }
    out.extend_from_slice(&corpus[rng.below(corpus.len())]);
    let mut k = 1;
    while k < 8 && rng.below(2) == 0 {
        k += 1;
    }
    for _ in 0..k {
        mutate_once(rng, out, corpus, max_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_bounded_and_vary() {
        let mut rng = Rng::new(5);
        let corpus = vec![vec![1u8; 100], b"abcdef".to_vec()];
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..10_000 {
            next_input(&mut rng, &corpus, &mut out, 128);
            assert!(out.len() <= 128);
            seen.insert(out.clone());
        }
        assert!(seen.len() > 5_000, "{}", seen.len());
        // Deterministic from the seed.
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            next_input(&mut a, &corpus, &mut x, 128);
            next_input(&mut b, &corpus, &mut y, 128);
            assert_eq!(x, y);
        }
    }
}
