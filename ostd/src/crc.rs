//! crc32c helpers: the checksum of a run of 4 KiB blocks from the blocks' own checksums.
//!
//! Appending `n` zero bytes to a message is a linear map on its crc (a 32 × 32 matrix over GF(2),
//! as in zlib's `crc32_combine`); with the map for 4096 bytes computed once, the crc of
//! `b₀‖b₁‖…` is folded from the block crcs as `crc = shift(crc) ^ crc(bᵢ)` instead of a second
//! pass over the data. The map being linear, `shift` is applied a byte of the crc at a time from
//! four 256-entry tables (four loads and XORs a block, where the bit-by-bit product with the
//! matrix took a branch per bit and cost, on a 1 MiB write, more than half of the crc itself).

use std::sync::OnceLock;

type Matrix = [u32; 32];

fn times(mat: &Matrix, mut vec: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 == 1 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn square(mat: &Matrix) -> Matrix {
    let mut out = [0u32; 32];
    for (n, o) in out.iter_mut().enumerate() {
        *o = times(mat, mat[n]);
    }
    out
}

/// The map "append 4096 zero bytes" on a crc32c.
fn shift_4k() -> &'static Matrix {
    static M: OnceLock<Matrix> = OnceLock::new();
    M.get_or_init(|| {
        // One zero bit: the reflected polynomial in row 0, then the identity shifted by one.
        let mut m = [0u32; 32];
        m[0] = 0x82F6_3B78;
        for (n, row) in m.iter_mut().enumerate().skip(1) {
            *row = 1 << (n - 1);
        }
        // 1 bit → 8 bits (one byte) → 4096 bytes = 2^12 bytes.
        for _ in 0..3 + 12 {
            m = square(&m);
        }
        m
    })
}

/// `shift_4k` by bytes: entry `[k][b]` is the map applied to `b << 8k`.
fn shift_4k_tables() -> &'static [[u32; 256]; 4] {
    static T: OnceLock<[[u32; 256]; 4]> = OnceLock::new();
    T.get_or_init(|| {
        let m = shift_4k();
        let mut t = [[0u32; 256]; 4];
        for (k, table) in t.iter_mut().enumerate() {
            for (b, e) in table.iter_mut().enumerate() {
                *e = times(m, (b as u32) << (8 * k));
            }
        }
        t
    })
}

/// The crc `c` followed by 4096 zero bytes.
fn shift(t: &[[u32; 256]; 4], c: u32) -> u32 {
    let [b0, b1, b2, b3] = c.to_le_bytes();
    t[0][usize::from(b0)] ^ t[1][usize::from(b1)] ^ t[2][usize::from(b2)] ^ t[3][usize::from(b3)]
}

/// The crc32c of the concatenation of 4 KiB blocks whose crc32c values are `crcs`.
pub fn combine_4k(crcs: &[u32]) -> u32 {
    let t = shift_4k_tables();
    let mut it = crcs.iter();
    let Some(&first) = it.next() else { return 0 };
    it.fold(first, |acc, &c| shift(t, acc) ^ c)
}

/// The crc32c of `a‖b` from `crc(a)` and `crc(b)`, `b` being 4 KiB long.
pub fn append_4k(crc_a: u32, crc_b: u32) -> u32 {
    shift(shift_4k_tables(), crc_a) ^ crc_b
}

/// The crc32c of a 4 KiB block of zeros (a hole).
pub fn zero_block() -> u32 {
    static Z: OnceLock<u32> = OnceLock::new();
    *Z.get_or_init(|| rustre_proto::crc::crc32c(&[0u8; 4096]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_block_crcs_equals_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..64 * 4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in [1usize, 2, 3, 17, 64] {
            let crcs: Vec<u32> = data[..n * 4096].chunks(4096).map(rustre_proto::crc::crc32c).collect();
            assert_eq!(
                combine_4k(&crcs),
                rustre_proto::crc::crc32c(&data[..n * 4096]),
                "{n} blocks"
            );
        }
        let (a, b) = (&data[..1000], &data[1000..5096]);
        assert_eq!(
            append_4k(rustre_proto::crc::crc32c(a), rustre_proto::crc::crc32c(b)),
            rustre_proto::crc::crc32c(&data[..5096])
        );
        assert_eq!(zero_block(), rustre_proto::crc::crc32c(&[0u8; 4096]));
    }

    #[test]
    fn byte_tables_apply_the_same_map_as_the_matrix() {
        let (m, t) = (shift_4k(), shift_4k_tables());
        let mut x = 0x9E37_79B9u32;
        for c in [0, 1, 0x8000_0000, u32::MAX].into_iter().chain((0..1000).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })) {
            assert_eq!(shift(t, c), times(m, c), "{c:#x}");
        }
    }
}
