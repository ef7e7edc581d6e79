//! ostd's on-disk decoders: the superblock, the MMP block, the object table (the metadata
//! region: state block, bitmap, block map and object slots) and the journal (header,
//! descriptors, images, commit records), each through the function ostd itself mounts with.

use crate::mutate::Rng;
use crate::{Harness, Target};
use rustre_ostd::dev::{AlignedBuf, BlockDevice, MemDevice};
use rustre_ostd::format::{self, BLOCK, Geometry, JOURNAL_START, MkfsOptions, MmpBlock, SECTOR, Superblock};
use rustre_ostd::journal;
use rustre_ostd::meta::Meta;
use rustre_ostd::store::ObjectStore;
use std::sync::Arc;

const DEVICE: u64 = 8 << 20;

/// A small formatted OST with some objects written, punched and destroyed.
fn populated() -> (MemDevice, Geometry) {
    let dev = MemDevice::new(DEVICE, 1);
    let mut o = MkfsOptions::new("fuzz", 0);
    o.journal_blocks = 64;
    o.max_objects = 1024;
    let sb = format::mkfs(&dev, &o).expect("mkfs of an 8 MiB memory device");
    let s = ObjectStore::open(Arc::new(dev.clone())).expect("a fresh OST mounts");
    let first = s.precreate(8).expect("precreate");
    for k in 0..6u64 {
        let data = vec![(k as u8).wrapping_mul(31) | 1; 3000 + 700 * k as usize];
        s.write(first + k, 4096 * k, &data).expect("write");
    }
    s.punch(first + 2, 100, 1000).expect("punch");
    s.destroy(first + 4).expect("destroy");
    s.sync().expect("sync");
    drop(s);
    (dev, sb.geometry)
}

/// Like [`populated`], also returning the journal as it stood after each step (its used
/// blocks), before the store checkpointed it away.
fn populated_with_journals() -> (MemDevice, Geometry, Vec<Vec<u8>>) {
    let dev = MemDevice::new(DEVICE, 2);
    let mut o = MkfsOptions::new("fuzz", 0);
    o.journal_blocks = 64;
    o.max_objects = 1024;
    let sb = format::mkfs(&dev, &o).expect("mkfs of an 8 MiB memory device");
    let g = sb.geometry;
    let joff = JOURNAL_START as usize * BLOCK;
    let jlen = g.journal_blocks as usize * BLOCK;
    let mut journals = Vec::new();
    let mut grab = |dev: &MemDevice| {
        let img = dev.durable_image();
        let j = &img[joff..joff + jlen];
        let used = j
            .chunks(BLOCK)
            .rposition(|b| b.iter().any(|x| *x != 0))
            .map_or(1, |i| i + 1);
        let j = j[..used * BLOCK].to_vec();
        if !journals.contains(&j) {
            journals.push(j);
        }
    };
    let s = ObjectStore::open(Arc::new(dev.clone())).expect("a fresh OST mounts");
    let first = s.precreate(8).expect("precreate");
    grab(&dev);
    for k in 0..4u64 {
        s.write(first + k, 8192 * k, &vec![k as u8 | 1; 5000]).expect("write");
        grab(&dev);
    }
    s.punch(first + 1, 0, 100).expect("punch");
    grab(&dev);
    s.destroy(first + 2).expect("destroy");
    grab(&dev);
    s.sync().expect("sync");
    drop(s);
    grab(&dev);
    (dev, g, journals)
}

/// Pads or cuts `b` to `len` bytes.
fn sized(b: &[u8], len: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(len, 0);
    v
}

/// Re-seals the 4 KiB blocks of an input (whole block or first sector, at random), so that
/// mutated structures get past their checksums.
fn reseal(b: &mut [u8], rng: &mut Rng) {
    for blk in b.chunks_mut(BLOCK) {
        if blk.len() == BLOCK {
            if rng.below(2) == 0 {
                format::seal(blk);
            } else {
                format::seal(&mut blk[..SECTOR]);
            }
        }
    }
}

fn superblock() -> Harness {
    let (dev, _) = populated();
    let img = dev.durable_image();
    Harness {
        seeds: vec![img[..BLOCK].to_vec()],
        run: Box::new(|b: &[u8]| Superblock::decode("fuzz-sb", &sized(b, BLOCK)).is_ok()),
        fixup: Some(Box::new(|b, _| {
            b.resize(BLOCK, 0);
            format::seal(&mut b[..BLOCK]);
        })),
    }
}

fn mmp() -> Harness {
    let mut seeds = Vec::new();
    for (seq, node, addr) in [
        (1, "oss1", "tcp://10.0.0.1:7000"),
        (format::MMP_SEQ_CLEAN, "", ""),
        (99, "a-very-long-node-name-that-goes-on", "verbs://[fe80::1]:7"),
    ] {
        let mut b = vec![0u8; BLOCK];
        MmpBlock {
            seq,
            interval_ms: 1000,
            time_ms: 1_700_000_000_000,
            node: node.into(),
            address: addr.into(),
        }
        .encode(&mut b);
        seeds.push(b);
    }
    Harness {
        seeds,
        run: Box::new(|b: &[u8]| MmpBlock::decode("fuzz-mmp", &sized(b, BLOCK)).is_ok()),
        fixup: Some(Box::new(|b, _| {
            b.resize(BLOCK, 0);
            format::seal(&mut b[..SECTOR]);
        })),
    }
}

fn object_table() -> Harness {
    let (dev, geo) = populated();
    let img = dev.durable_image();
    let r = geo.meta_range();
    let (from, to) = (r.start as usize * BLOCK, r.end as usize * BLOCK);
    let len = to - from;
    Harness {
        seeds: vec![img[from..to].to_vec()],
        run: Box::new(move |b: &[u8]| Meta::load("fuzz-meta", geo, sized(b, len)).is_ok()),
        fixup: Some(Box::new(|b: &mut Vec<u8>, r: &mut Rng| reseal(b, r))),
    }
}

fn journal_target() -> Harness {
    let (dev, geo, journals) = populated_with_journals();
    let jlen = geo.journal_blocks as usize * BLOCK;
    let joff = JOURNAL_START * BLOCK as u64;
    let meta = geo.meta_range();
    let _ = meta;
    let mut seeds = journals.clone();
    seeds.push(dev.durable_image()[joff as usize..joff as usize + 2 * BLOCK].to_vec());
    let mut buf = AlignedBuf::new(jlen);
    let mut written = 0usize;
    Harness {
        seeds,
        run: Box::new(move |b: &[u8]| {
            // Write the input over the journal, zeroing what the last input left beyond it.
            let n = b.len().min(jlen);
            let end = n.div_ceil(BLOCK).max(written.div_ceil(BLOCK)) * BLOCK;
            buf[..n].copy_from_slice(&b[..n]);
            buf[n..end].fill(0);
            dev.write_at(joff, &buf[..end]).expect("memory device write");
            written = n;
            journal::scan(&dev, &geo).is_ok()
        }),
        fixup: Some(Box::new(|b: &mut Vec<u8>, r: &mut Rng| reseal(b, r))),
    }
}

/// The ostd targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "ostd.superblock",
            about: "OST superblock blocks through Superblock::decode",
            max_len: BLOCK,
            setup: superblock,
        },
        Target {
            name: "ostd.mmp",
            about: "OST MMP blocks through MmpBlock::decode",
            max_len: BLOCK,
            setup: mmp,
        },
        Target {
            name: "ostd.object-table",
            about: "OST metadata regions (state, bitmap, block map, object slots) through Meta::load",
            max_len: 64 * BLOCK,
            setup: object_table,
        },
        Target {
            name: "ostd.journal",
            about: "OST journals (header, descriptors, images, commits) through journal::scan on a memory device",
            max_len: 32 * BLOCK,
            setup: journal_target,
        },
    ]
}
