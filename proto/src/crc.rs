//! crc32c (Castagnoli), the checksum of every payload, block and log record in rustre.
//!
//! Backed by `crc-fast`, which picks the widest carry-less multiply the CPU has at run time
//! (VPCLMULQDQ on AVX-512 parts, PCLMULQDQ or the SSE4.2 `crc32` instruction otherwise). On the
//! EPYC machines this project is measured on, a 1 MiB buffer checksums at about 62 GiB/s against
//! 31 GiB/s for the `crc32` instruction alone; both ends of every bulk transfer pay one pass.

use crc_fast::CrcAlgorithm::Crc32Iscsi;

/// The crc32c of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(Crc32Iscsi, data) as u32
}

/// The crc32c of `a‖b` from `crc32c(a)`, `crc32c(b)` and `b`'s length.
#[inline]
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    crc_fast::checksum_combine(Crc32Iscsi, u64::from(crc_a), u64::from(crc_b), len_b as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect()
    }

    #[test]
    fn agrees_with_the_reference_implementation_at_every_length_and_alignment() {
        let buf = data(70_000);
        for len in (0..300).chain([4095, 4096, 4097, 65_536, 65_537, 69_999]) {
            for start in [0usize, 1, 3, 7, 64] {
                let s = &buf[start..start + len.min(buf.len() - start)];
                assert_eq!(crc32c(s), ::crc32c::crc32c(s), "len {} start {start}", s.len());
            }
        }
        assert_eq!(
            crc32c(b"123456789"),
            0xE306_9283,
            "the catalogue check value of CRC-32/ISCSI"
        );
    }

    #[test]
    fn combine_equals_the_crc_of_the_concatenation() {
        let buf = data(20_000);
        for split in [0usize, 1, 100, 4096, 12_345, 20_000] {
            let (a, b) = buf.split_at(split);
            assert_eq!(
                crc32c_combine(crc32c(a), crc32c(b), b.len()),
                crc32c(&buf),
                "split {split}"
            );
        }
    }
}
