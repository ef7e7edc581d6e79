//! Deliberately broken targets that show the driver catches each kind of failure (not part of a
//! full run; named explicitly by the driver's tests).

use crate::{Harness, Target};

fn seeds() -> Vec<Vec<u8>> {
    vec![b"ok".to_vec(), vec![0; 16]]
}

fn panicking() -> Harness {
    Harness {
        seeds: seeds(),
        run: Box::new(|b: &[u8]| {
            // Trusts a length byte.
            if b.first() == Some(&0xAB) {
                let n = usize::from(b.get(1).copied().unwrap_or(0));
                assert!(b.len() > n + 2, "length byte {n} beyond the input");
            }
            true
        }),
        fixup: None,
    }
}

fn hanging() -> Harness {
    Harness {
        seeds: seeds(),
        run: Box::new(|b: &[u8]| {
            // Loops on a zero step.
            if b.first() == Some(&0xAB) {
                let step = b.get(1).copied().unwrap_or(0);
                let mut i = 0u8;
                while i < 200 {
                    i = i.wrapping_add(step);
                    std::hint::black_box(i);
                    std::hint::spin_loop();
                }
            }
            true
        }),
        fixup: None,
    }
}

fn allocating() -> Harness {
    Harness {
        seeds: seeds(),
        run: Box::new(|b: &[u8]| {
            // Allocates what a length field says.
            if b.first() == Some(&0xAB) {
                let n = usize::from(b.get(1).copied().unwrap_or(0)) << 24;
                let v = vec![1u8; n];
                std::hint::black_box(&v);
            }
            true
        }),
        fixup: None,
    }
}

/// The self-test targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "selftest.panic",
            about: "panics on inputs starting 0xAB with a large second byte",
            max_len: 64,
            setup: panicking,
        },
        Target {
            name: "selftest.hang",
            about: "never returns on inputs starting 0xAB 0x00",
            max_len: 64,
            setup: hanging,
        },
        Target {
            name: "selftest.alloc",
            about: "allocates second-byte × 16 MiB on inputs starting 0xAB",
            max_len: 64,
            setup: allocating,
        },
    ]
}
