//! mdsd's on-disk decoders: the superblock and MMP block, the checkpoint (slot header and body:
//! the namespace and the reply cache), and the WAL (batches on the device, and the records in
//! them), each through the function mdsd recovers with.

use crate::mutate::Rng;
use crate::{Harness, Target};
use prost::Message;
use rustre_mdsd::checkpoint::{self, CheckpointHeader};
use rustre_mdsd::codec::{Dec, Enc};
use rustre_mdsd::dev::{AlignedBuf, BlockDevice, FaultDevice};
use rustre_mdsd::format::{self, Mmp, Superblock};
use rustre_mdsd::mdt::{self, Mdt};
use rustre_mdsd::ns::{WalEntry, WalRecord};
use rustre_mdsd::service::{HandlerConfig, MdsCore, Request};
use rustre_mdsd::wal::Wal;
use rustre_proto::{Opcode, pb};

const BLOCK: usize = 4096;
const SECTOR: usize = 512;
const DEVICE: u64 = 8 << 20;

fn hcfg() -> HandlerConfig {
    HandlerConfig {
        fsname: "fuzz".into(),
        osts: vec![(0, "sim://ost0".into()), (1, "sim://ost1".into())],
        mds_addresses: vec![],
        reply_cache_per_client: 8,
        reply_cache_clients: 8,
        max_readdir: 64,
        inode_capacity: 1 << 16,
        server_id: 1,
        features: rustre_mdsd::service::FEATURES,
    }
}

/// A namespace with some of everything, and the WAL entries that made it.
fn busy_core() -> (MdsCore, Vec<WalEntry>) {
    let mut core = MdsCore::from_snapshot(&MdsCore::initial_snapshot(0), hcfg()).expect("initial checkpoint");
    for ost in 0..2 {
        core.log_internal(WalRecord::Precreated {
            ost,
            start: 100,
            count: 1000,
        })
        .expect("precreate record");
    }
    let creds = Some(pb::Credentials {
        uid: 1000,
        gid: 100,
        groups: vec![10],
    });
    let root = Some(pb::Fid { ino: 1, generation: 0 });
    let mut xid = 0;
    let mut call = |core: &mut MdsCore, op: Opcode, body: Vec<u8>| {
        xid += 1;
        core.handle(
            &Request {
                client: 77,
                xid,
                opcode: op.as_u16(),
                body,
            },
            1_700_000_000_000_000_000 + xid as i64,
        )
    };
    let mkdir = |name: &str, parent| pb::MdsMkdirRequest {
        creds: Some(pb::Credentials {
            uid: 0,
            gid: 0,
            groups: vec![],
        }),
        parent,
        name: name.into(),
        mode: 0o1777,
        default_layout: None,
        walk: Vec::new(),
    };
    call(&mut core, Opcode::MdsMkdir, mkdir("d", root).encode_to_vec());
    let d = Some(pb::Fid { ino: 2, generation: 0 });
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        call(
            &mut core,
            Opcode::MdsCreate,
            pb::MdsCreateRequest {
                creds: creds.clone(),
                parent: d,
                name: (*name).into(),
                walk: Vec::new(),
                mode: 0o644,
                flags: pb::OpenFlag::Create as u32 | pb::OpenFlag::Write as u32,
                layout: Some(pb::Layout {
                    stripe_size: 1 << 20,
                    stripe_count: 1 + i as u32 % 2,
                    stripe_offset: -1,
                    objects: vec![],
                }),
            }
            .encode_to_vec(),
        );
    }
    call(
        &mut core,
        Opcode::MdsSymlink,
        pb::MdsSymlinkRequest {
            creds: creds.clone(),
            parent: root,
            name: b"l".to_vec(),
            target: b"../d/a".to_vec(),
            walk: vec![b"d".to_vec()],
        }
        .encode_to_vec(),
    );
    call(
        &mut core,
        Opcode::MdsRename,
        pb::MdsRenameRequest {
            creds: creds.clone(),
            src_parent: root,
            src_name: b"b".to_vec(),
            dst_parent: root,
            dst_name: b"b2".to_vec(),
            flags: 0,
            src_walk: vec![b"d".to_vec()],
            dst_walk: Vec::new(),
        }
        .encode_to_vec(),
    );
    call(
        &mut core,
        Opcode::MdsUnlink,
        pb::MdsUnlinkRequest {
            creds,
            parent: d,
            name: b"c".to_vec(),
            walk: Vec::new(),
        }
        .encode_to_vec(),
    );
    let entries = std::mem::take(&mut core.pending);
    (core, entries)
}

fn sized(b: &[u8], len: usize) -> AlignedBuf {
    let mut a = AlignedBuf::new(len);
    let n = b.len().min(len);
    a[..n].copy_from_slice(&b[..n]);
    a
}

/// A formatted MDT device, its superblock and the control of its image.
fn formatted(body: &[u8]) -> (FaultDevice, rustre_mdsd::dev::FaultControl, Superblock) {
    let (mut dev, ctl) = FaultDevice::new(DEVICE, 1);
    let sb = mdt::mkfs(&mut dev, "fuzz", false, body).expect("mkfs of a memory MDT");
    (dev, ctl, sb)
}

fn block_target(block: u64, seeds: Vec<Vec<u8>>, read: fn(&mut FaultDevice) -> bool) -> Harness {
    let (mut dev, _, _) = formatted(&MdsCore::initial_snapshot(0));
    Harness {
        seeds,
        run: Box::new(move |b: &[u8]| {
            dev.write_durable(block * BLOCK as u64, &sized(b, BLOCK))
                .expect("memory device write");
            read(&mut dev)
        }),
        fixup: Some(Box::new(|b: &mut Vec<u8>, _: &mut Rng| {
            b.resize(BLOCK, 0);
            format::seal(&mut b[..SECTOR]);
        })),
    }
}

fn superblock() -> Harness {
    let (_, ctl, _) = formatted(&MdsCore::initial_snapshot(0));
    let seed = ctl.image()[..BLOCK].to_vec();
    block_target(0, vec![seed], |dev| format::read_superblock(dev).is_ok())
}

fn mmp() -> Harness {
    let (mut dev, ctl, _) = formatted(&MdsCore::initial_snapshot(0));
    let mut seeds = Vec::new();
    for (seq, node) in [
        (5, "mds1"),
        (format::MMP_SEQ_CLEAN, ""),
        (1 << 40, "a-rather-long-node-name"),
    ] {
        format::write_mmp(
            &mut dev,
            &Mmp {
                seq,
                node: node.into(),
                interval_ms: 1000,
            },
        )
        .expect("mmp write");
        seeds.push(ctl.image()[BLOCK..2 * BLOCK].to_vec());
    }
    block_target(1, seeds, |dev| format::read_mmp(dev).is_ok())
}

fn checkpoint_body() -> Harness {
    let (core, _) = busy_core();
    Harness {
        seeds: vec![MdsCore::initial_snapshot(0), core.snapshot()],
        run: Box::new(|b: &[u8]| MdsCore::from_snapshot(b, hcfg()).is_ok()),
        fixup: None,
    }
}

/// Bytes of checkpoint slot input: the header block and at most this much body.
const SLOT_INPUT: usize = 64 << 10;

fn checkpoint_slot() -> Harness {
    let (core, _) = busy_core();
    let (mut dev, ctl, sb) = formatted(&MdsCore::initial_snapshot(0));
    let hdr = CheckpointHeader {
        generation: 2,
        wal_pos: 0,
        wal_seq: 1,
        body_len: 0,
        body_crc: 0,
    };
    let body = core.snapshot();
    checkpoint::write(&mut dev, &sb, hdr, &body).expect("checkpoint write");
    let slot = sb.ckpt_off[0] as usize;
    let seed = ctl.image()[slot..slot + BLOCK + body.len()].to_vec();
    // The other slot (generation 1 of mkfs) is cleared so that only the input is a candidate.
    dev.write_durable(sb.ckpt_off[1], &AlignedBuf::new(BLOCK))
        .expect("clear");
    let mut written = 0usize;
    Harness {
        seeds: vec![seed],
        run: Box::new(move |b: &[u8]| {
            let n = b.len().min(SLOT_INPUT);
            let len = n.max(written).div_ceil(BLOCK).max(1) * BLOCK;
            dev.write_durable(slot as u64, &sized(&b[..n], len))
                .expect("memory device write");
            written = n;
            checkpoint::load_newest(&mut dev, &sb).is_ok_and(|(_, body)| MdsCore::from_snapshot(&body, hcfg()).is_ok())
        }),
        // Recompute the body checksum and reseal the header so mutated bodies reach the decoder.
        fixup: Some(Box::new(|b: &mut Vec<u8>, _: &mut Rng| {
            if b.len() < BLOCK {
                b.resize(BLOCK, 0);
            }
            let len = u64::from_le_bytes(b[40..48].try_into().unwrap_or([0; 8]));
            let end = (BLOCK as u64).saturating_add(len).min(b.len() as u64) as usize;
            let crc = rustre_proto::crc::crc32c(&b[BLOCK..end]);
            b[40..48].copy_from_slice(&((end - BLOCK) as u64).to_le_bytes());
            b[48..52].copy_from_slice(&crc.to_le_bytes());
            format::seal(&mut b[..SECTOR]);
        })),
    }
}

fn wal_records() -> Harness {
    let (_, entries) = busy_core();
    let mut all = Enc::new();
    let mut seeds = Vec::new();
    for e in &entries {
        let mut one = Enc::new();
        e.encode(&mut one);
        seeds.push(one.buf);
        e.encode(&mut all);
    }
    seeds.push(all.buf);
    Harness {
        seeds,
        run: Box::new(|b: &[u8]| {
            let mut d = Dec::new(b, "fuzz-wal");
            let mut n = 0;
            while d.remaining() > 0 {
                if WalEntry::decode(&mut d).is_err() {
                    return false;
                }
                n += 1;
            }
            n > 0
        }),
        fixup: None,
    }
}

/// Bytes of WAL the device-level target feeds.
const WAL_INPUT: usize = 64 << 10;

fn wal_device() -> Harness {
    let (_, entries) = busy_core();
    let (dev, ctl, sb) = formatted(&MdsCore::initial_snapshot(0));
    let (mut m, mut core, _) =
        Mdt::recover(dev, |b| MdsCore::from_snapshot(b, hcfg()), |c, e| c.replay(e)).expect("a fresh MDT recovers");
    // Three group commits, as the event loop makes them.
    for chunk in entries.chunks(entries.len().div_ceil(3).max(1)) {
        for e in chunk {
            core.replay(e.clone()).expect("the entries apply");
        }
        m.commit(chunk, &mut || core.snapshot()).expect("commit");
    }
    let (used, _) = m.wal_usage();
    drop(m);
    let image = ctl.image();
    let off = sb.wal_off as usize;
    let seed = image[off..off + (used as usize).max(BLOCK)].to_vec();
    let (mut dev, _) = FaultDevice::from_image(image, 2);
    let hdr = checkpoint::load_newest(&mut dev, &sb).expect("checkpoint").0;
    let mut written = 0usize;
    let initial = MdsCore::initial_snapshot(0);
    Harness {
        seeds: vec![seed],
        run: Box::new(move |b: &[u8]| {
            let n = b.len().min(WAL_INPUT);
            let len = n.max(written).div_ceil(BLOCK).max(1) * BLOCK;
            dev.write_durable(sb.wal_off, &sized(&b[..n], len))
                .expect("memory device write");
            written = n;
            let Ok(mut state) = MdsCore::from_snapshot(&initial, hcfg()) else {
                return false;
            };
            let mut wal = Wal::new(sb.wal_off, sb.wal_len, sb.salt(), hdr.wal_pos, hdr.wal_seq, 0);
            wal.replay(&mut dev, |e| state.replay(e))
                .is_ok_and(|batches| batches > 0)
        }),
        fixup: None,
    }
}

/// The mdsd targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "mdsd.superblock",
            about: "MDT superblock blocks through read_superblock on a memory device",
            max_len: BLOCK,
            setup: superblock,
        },
        Target {
            name: "mdsd.mmp",
            about: "MDT MMP blocks through read_mmp on a memory device",
            max_len: BLOCK,
            setup: mmp,
        },
        Target {
            name: "mdsd.checkpoint",
            about: "checkpoint bodies (namespace and reply cache) through MdsCore::from_snapshot",
            max_len: 64 << 10,
            setup: checkpoint_body,
        },
        Target {
            name: "mdsd.checkpoint-slot",
            about: "checkpoint slots (header and body) through checkpoint::load_newest, then from_snapshot",
            max_len: SLOT_INPUT,
            setup: checkpoint_slot,
        },
        Target {
            name: "mdsd.wal-record",
            about: "WAL entry sequences through WalEntry::decode",
            max_len: 16 << 10,
            setup: wal_records,
        },
        Target {
            name: "mdsd.wal",
            about: "WAL rings (batches of entries) through Wal::replay on a memory device, applied to a namespace",
            max_len: WAL_INPUT,
            setup: wal_device,
        },
    ]
}
