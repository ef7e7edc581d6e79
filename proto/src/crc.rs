//! crc32c (Castagnoli), the checksum of every payload, block and log record in rustre.
//!
//! Backed by `crc-fast`, which picks the widest carry-less multiply the CPU has at run time
//! (VPCLMULQDQ on AVX-512 parts, PCLMULQDQ or the SSE4.2 `crc32` instruction otherwise). On the
//! EPYC machines this project is measured on, a 1 MiB buffer checksums at about 62 GiB/s against
//! 31 GiB/s for the `crc32` instruction alone; both ends of every bulk transfer pay one pass.

/// The crc32c of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// The crc32c of `a‖data` from `crc32c(a)`: the checksum carried on over `data`, at the cost
/// of a pass over `data` alone. (Combining two finished checksums without the bytes, as
/// `crc_fast::checksum_combine` does, walks a 64 × 64 bit matrix per bit of the length: microseconds
/// a call, where appending a partial 4 KiB block costs about a hundred nanoseconds.)
#[inline]
pub fn crc32c_append(crc_a: u32, data: &[u8]) -> u32 {
    // The register between calls is the checksum before its final inversion.
    let mut d = crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, u64::from(!crc_a));
    d.update(data);
    d.finalize() as u32
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
    fn append_equals_the_crc_of_the_concatenation() {
        let buf = data(20_000);
        for split in [0usize, 1, 100, 4095, 4096, 12_345, 20_000] {
            let (a, b) = buf.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), crc32c(&buf), "split {split}");
            assert_eq!(
                crc32c_append(crc32c(a), b),
                ::crc32c::crc32c_append(crc32c(a), b),
                "split {split}"
            );
        }
        assert_eq!(crc32c_append(0, b""), 0);
    }
}
