//! The MDT's on-disk pieces: mkfs refusals, MMP fencing, WAL wrap-around and torn tails,
//! checkpoint slot fallback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustre_mdsd::dev::{BLOCK, BlockDevice, FaultDevice};
use rustre_mdsd::format::{MdtError, read_superblock};
use rustre_mdsd::mdt::{self, Mdt};
use rustre_mdsd::mmp;
use rustre_mdsd::ns::{Cred, Namespace, OpenFlags, ROOT_FID, WalEntry, WalRecord};
use rustre_mdsd::service::MdsCore;
use std::time::Duration;

fn fresh(size: u64) -> (FaultDevice, rustre_mdsd::dev::FaultControl) {
    let (mut dev, ctl) = FaultDevice::new(size, 3);
    mdt::mkfs(&mut dev, "fs1", false, &MdsCore::initial_snapshot(0)).unwrap();
    (dev, ctl)
}

#[test]
fn mkfs_refuses_what_it_must_not_overwrite() {
    let (mut dev, _) = FaultDevice::new(16 << 20, 1);
    let e = mdt::mkfs(&mut dev, "bad name!", false, &[]).unwrap_err();
    assert!(e.to_string().contains("fs name"), "{e}");
    let (mut small, _) = FaultDevice::new(1 << 20, 1);
    assert!(
        mdt::mkfs(&mut small, "fs", false, &[])
            .unwrap_err()
            .to_string()
            .contains("too small")
    );
    // An OST.
    let mut b = vec![0u8; BLOCK];
    b[..8].copy_from_slice(b"RUSTOST\0");
    dev.write(0, &b).unwrap();
    let e = mdt::mkfs(&mut dev, "fs", false, &[]).unwrap_err();
    assert!(e.to_string().contains("OST"), "{e}");
    // Any data.
    b[..8].copy_from_slice(b"garbage!");
    dev.write(0, &b).unwrap();
    assert!(
        mdt::mkfs(&mut dev, "fs", false, &[])
            .unwrap_err()
            .to_string()
            .contains("not zero")
    );
    // Another MDT, then --force.
    mdt::mkfs(&mut dev, "fs", true, &MdsCore::initial_snapshot(0)).unwrap();
    let e = mdt::mkfs(&mut dev, "other", false, &[]).unwrap_err();
    assert!(e.to_string().contains("MDT of file system \"fs\""), "{e}");
    assert_eq!(read_superblock(&mut dev).unwrap().fsname, "fs");
    // Recovery refuses an OST.
    let (mut ost, _) = FaultDevice::new(16 << 20, 1);
    b[..8].copy_from_slice(b"RUSTOST\0");
    ost.write(0, &b).unwrap();
    let e = Mdt::recover(ost, |x| MdsCore::from_snapshot(x, cfg()), |c, e| c.replay(e))
        .err()
        .unwrap();
    assert!(
        matches!(e, MdtError::Format { .. }) && e.to_string().contains("OST"),
        "{e}"
    );
}

fn cfg() -> rustre_mdsd::service::HandlerConfig {
    rustre_mdsd::service::HandlerConfig {
        fsname: "fs1".into(),
        osts: vec![],
        mds_addresses: vec![],
        reply_cache_per_client: 4,
        reply_cache_clients: 4,
        max_readdir: 100,
        inode_capacity: 1000,
        server_id: 1,
        features: rustre_mdsd::service::FEATURES,
    }
}

#[test]
fn mmp_fences_a_second_node_and_allows_takeover() {
    let (mut dev, ctl) = fresh(16 << 20);
    let iv = Duration::from_millis(100);
    let mut a = mmp::acquire(&mut dev, "node-a", iv).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let bumper = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            a.bump(&mut dev).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        (a, dev)
    });
    // Node B on the same disk while A serves: refused, naming A.
    let mut b_dev = ctl.shared_device();
    let e = mmp::acquire(&mut b_dev, "node-b", iv).unwrap_err();
    assert!(matches!(&e, MdtError::InUse { node, .. } if node == "node-a"), "{e}");
    // A dies (stops bumping without a clean release): B takes over after the wait.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut a, mut a_dev) = bumper.join().unwrap();
    let b = mmp::acquire(&mut b_dev, "node-b", iv).unwrap();
    // A, come back, is fenced: its next bump sees B's claim.
    assert!(matches!(a.bump(&mut a_dev), Err(MdtError::InUse { .. })));
    // After B's clean release a new claim does not wait for a moving sequence.
    b.release(&mut b_dev).unwrap();
    let t = std::time::Instant::now();
    let c = mmp::acquire(&mut a_dev, "node-a", iv).unwrap();
    assert!(t.elapsed() < iv * 4);
    c.release(&mut a_dev).unwrap();
}

fn entry(rec: WalRecord) -> WalEntry {
    WalEntry {
        client: 0,
        xid: 0,
        opcode: 0,
        record: rec,
    }
}

#[test]
fn wal_wraps_and_stops_cleanly_at_a_torn_tail() {
    // 8 MiB: a 2 MiB WAL ring of 512 blocks; 1200 single-block batches wrap it twice, with
    // checkpoints keeping the live part under half the ring.
    let (dev, ctl) = fresh(8 << 20);
    let (mut m, mut ns, _) = Mdt::recover(
        dev,
        |b| MdsCore::from_snapshot(b, cfg()).map(|c| c.ns),
        |ns: &mut Namespace, e| ns.apply(&e.record).map(|_| ()).map_err(|e| e.to_string()),
    )
    .unwrap();
    ns.apply(&WalRecord::Precreated {
        ost: 0,
        start: 1,
        count: 1 << 20,
    })
    .unwrap();
    let snap = |ns: &Namespace| {
        let mut e = rustre_mdsd::codec::Enc::new();
        ns.encode(&mut e);
        rustre_mdsd::reply_cache::ReplyCache::new(1, 1).encode(&mut e);
        e.buf
    };
    m.commit(
        &[entry(WalRecord::Precreated {
            ost: 0,
            start: 1,
            count: 1 << 20,
        })],
        &mut || snap(&ns),
    )
    .unwrap();
    let c = Cred::root();
    let mut checkpoints = 0;
    for i in 0..1200 {
        let o = ns
            .open(
                &c,
                i,
                ROOT_FID,
                &format!("f{i}"),
                OpenFlags(OpenFlags::CREAT),
                0o644,
                None,
            )
            .unwrap();
        let rec = o.change.unwrap().record;
        m.commit(&[entry(rec)], &mut || snap(&ns)).unwrap();
        let (used, len) = m.wal_usage();
        if used > len / 2 {
            m.checkpoint(&snap(&ns)).unwrap();
            checkpoints += 1;
        }
    }
    assert!(checkpoints >= 4, "{checkpoints}");
    // Tear the next batch: only part of it reaches the medium.
    ctl.cut_power_at_write(1);
    let o = ns
        .open(&c, 700, ROOT_FID, "torn", OpenFlags(OpenFlags::CREAT), 0o644, None)
        .unwrap();
    assert!(m.commit(&[entry(o.change.unwrap().record)], &mut || snap(&ns)).is_err());
    let img = ctl.power_cycle();
    let (dev, _) = FaultDevice::from_image(img, 5);
    let (_, core, stats) = Mdt::recover(dev, |b| MdsCore::from_snapshot(b, cfg()), |c, e| c.replay(e)).unwrap();
    assert!(stats.checkpoint_generation >= 4);
    let d = core.ns.dir(ROOT_FID).unwrap();
    for i in 0..1200 {
        assert!(d.get(&format!("f{i}")).is_some(), "f{i} lost");
    }
    assert!(rustre_mdsd::check::check_namespace(&core.ns).is_empty());
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_older_one_and_its_wal() {
    let (dev, ctl) = fresh(16 << 20);
    let (mut m, mut core, _) = Mdt::recover(dev, |b| MdsCore::from_snapshot(b, cfg()), |c, e| c.replay(e)).unwrap();
    core.log_internal(WalRecord::Precreated {
        ost: 0,
        start: 1,
        count: 100,
    })
    .unwrap();
    let pending = std::mem::take(&mut core.pending);
    m.commit(&pending, &mut || Vec::new()).unwrap();
    m.checkpoint(&core.snapshot()).unwrap(); // generation 1, slot B
    let sb = m.sb.clone();
    // Damage slot B's body: recovery must use slot A (generation 0) and the whole WAL.
    let mut junk = vec![0xAAu8; BLOCK];
    junk[0] = 1;
    m.dev.write(sb.ckpt_off[1] + BLOCK as u64, &junk).unwrap();
    m.dev.flush().unwrap();
    let (dev, _) = FaultDevice::from_image(ctl.image(), 8);
    let (_, core2, stats) = Mdt::recover(dev, |b| MdsCore::from_snapshot(b, cfg()), |c, e| c.replay(e)).unwrap();
    assert_eq!(stats.checkpoint_generation, 0);
    assert_eq!(stats.entries, 1);
    assert_eq!(core2.ns.alloc.osts[&0].available(), 100);
}
