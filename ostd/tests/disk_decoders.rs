//! Bounded fuzzing of the on-disk decoders: a real OST image (superblock, object table, journal
//! with records) is corrupted at random places among its written bytes; mounting it and checking
//! it must answer with a value or a typed error, never a panic or a hang.

#![allow(clippy::unwrap_used)]

use rustre_ostd::check::check;
use rustre_ostd::dev::MemDevice;
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::store::ObjectStore;
use std::sync::Arc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn populated(seed: u64) -> MemDevice {
    let dev = MemDevice::new(8 << 20, seed);
    mkfs(&dev, &MkfsOptions::new("fuzz", 0)).unwrap();
    let s = ObjectStore::open(Arc::new(dev.clone())).unwrap();
    let first = s.precreate(16).unwrap();
    for k in 0..12u64 {
        let data = vec![(k as u8).wrapping_mul(31) | 1; 5000 + 300 * k as usize];
        s.write(first + k, 4096 * k, &data).unwrap();
    }
    s.punch(first + 3, 100, 1000).unwrap();
    s.destroy(first + 5).unwrap();
    s.sync().unwrap();
    drop(s);
    dev
}

const ROUNDS: u64 = 12;

#[test]
fn corrupted_ost_images_mount_or_fail_cleanly() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut mounted, mut refused, mut unclean) = (0u64, 0u64, 0);
    for round in 0..ROUNDS {
        let dev = populated(round);
        let image = dev.durable_image();
        let used: Vec<usize> = image
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .map(|(i, _)| i)
            .collect();
        for _ in 0..1 + rng.next() % 6 {
            // Half of the flips among the lowest written bytes (superblock, tables, journal).
            let span = if rng.next().is_multiple_of(2) {
                used.len().div_ceil(16)
            } else {
                used.len()
            };
            let at = used[(rng.next() as usize) % span];
            let at = (at + (rng.next() % 64) as usize).min(image.len() - 1);
            dev.corrupt_byte(at as u64);
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let opened = ObjectStore::open(Arc::new(dev.clone())).map(drop);
            let checked = check(&dev).map(|r| r.clean());
            (opened.is_ok(), checked)
        }));
        match r {
            Ok((opened, checked)) => {
                if opened {
                    mounted += 1;
                } else {
                    refused += 1;
                }
                unclean += usize::from(!matches!(checked, Ok(true)));
            }
            Err(_) => panic!("mount or check panicked on corruption round {round}"),
        }
    }
    eprintln!("{mounted} mounted, {refused} refused, {unclean} reported by the checker");
    assert_eq!(mounted + refused, ROUNDS);
}
