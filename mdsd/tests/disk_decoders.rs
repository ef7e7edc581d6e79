//! Bounded fuzzing of the on-disk decoders: a real MDT image (superblock, checkpoint, WAL with
//! records) is corrupted at random places among its written bytes, and recovery must answer with
//! a value or a typed error, never a panic or a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Mds;
use rustre_mdsd::dev::FaultDevice;
use rustre_mdsd::mdt::{self, Mdt};
use rustre_mdsd::service::{HandlerConfig, MdsCore, ServeConfig, Server};
use std::time::Instant;

fn hcfg() -> HandlerConfig {
    HandlerConfig {
        fsname: "fuzz".into(),
        osts: vec![],
        mds_addresses: vec![],
        reply_cache_per_client: 16,
        reply_cache_clients: 16,
        max_readdir: 256,
        inode_capacity: 1 << 20,
        server_id: 3,
        features: rustre_mdsd::service::FEATURES,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn corrupted_mdt_images_recover_or_fail_cleanly() {
    let (mut dev, ctl) = FaultDevice::new(16 << 20, 1);
    mdt::mkfs(&mut dev, "fuzz", false, &MdsCore::initial_snapshot(0)).unwrap();
    let (mds, _) = Server::start(
        dev,
        None,
        &"sim://mdsd-disk-fuzz".parse().unwrap(),
        hcfg(),
        vec![],
        ServeConfig::default(),
    )
    .unwrap();
    let c = Mds::connect(mds.local_addr(), 5);
    for i in 0..40 {
        c.mkdir(1, &format!("d{i}")).unwrap();
    }
    for i in 0..10 {
        c.rename(1, &format!("d{i}"), 1, &format!("r{i}")).unwrap();
    }
    let image = ctl.image();
    drop(c);
    mds.stop().unwrap();
    let used: Vec<usize> = image
        .iter()
        .enumerate()
        .filter(|(_, b)| **b != 0)
        .map(|(i, _)| i)
        .collect();
    assert!(!used.is_empty());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut refused, mut inconsistent) = (0, 0, 0);
    let t0 = Instant::now();
    for round in 0..150 {
        let mut img = image.clone();
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            let at = used[(rng.next() as usize) % used.len()];
            let at = (at + (rng.next() % 64) as usize).min(img.len() - 1);
            img[at] ^= (rng.next() as u8) | 1;
        }
        let r = std::panic::catch_unwind(|| {
            let (d, _) = FaultDevice::from_image(img, round);
            Mdt::recover(d, |b| MdsCore::from_snapshot(b, hcfg()), |core, e| core.replay(e))
                .map(|(_, core, _)| rustre_mdsd::check::check_namespace(&core.ns).len())
        });
        match r {
            Ok(Ok(problems)) => {
                ok += 1;
                inconsistent += usize::from(problems > 0);
            }
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("recovery panicked on corruption round {round}"),
        }
    }
    eprintln!(
        "{ok} recovered ({inconsistent} with check problems), {refused} refused in {:?}",
        t0.elapsed()
    );
    assert_eq!(ok + refused, 150);
}
