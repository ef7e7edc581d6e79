//! The MDS against a real ostd (in this process, OST on a /dev/shm file with real io_uring):
//! objects handed out in layouts exist on the OST, removed files' objects are destroyed, statfs
//! adds up the OST.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Mds, root};
use rustre_mdsd::dev::FaultDevice;
use rustre_mdsd::mdt;
use rustre_mdsd::service::{HandlerConfig, MdsCore, ServeConfig, Server};
use rustre_ostd::dev::{UringConfig, UringDevice};
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::service::{ServeConfig as OstServeConfig, Server as OstServer};
use rustre_proto::{Opcode, pb};
use std::time::{Duration, Instant};

fn ost_getattr(c: &Mds, o: &pb::ObjectRef) -> Result<pb::OstGetattrReply, pb::ErrorReply> {
    c.call(
        Opcode::OstGetattr,
        &pb::OstGetattrRequest {
            object: Some(*o),
            cap: None,
        },
    )
}

/// A real OST (object table of `max_objects`, 0 = mkfs default) and an MDS using it.
struct Pair {
    mds: Server,
    ost: OstServer,
    ost_addr: rustre_fabric::Address,
    _device: tempfile::NamedTempFile,
}

fn start_pair(max_objects: u64) -> Pair {
    let f = tempfile::Builder::new()
        .prefix("rustre-mdsd-ost-")
        .tempfile_in("/dev/shm")
        .unwrap();
    f.as_file().set_len(64 << 20).unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let dev = UringDevice::open(
        &path,
        &UringConfig {
            rings: 1,
            ..UringConfig::default()
        },
    )
    .unwrap();
    let mut opts = MkfsOptions::new("withost", 0);
    opts.max_objects = max_objects;
    mkfs(&dev, &opts).unwrap();
    drop(dev);
    let mut oc = OstServeConfig::new(&path, "tcp://127.0.0.1:0".parse().unwrap());
    oc.node = "test".into();
    oc.workers = 1;
    oc.pool_buffers = 4;
    oc.mmp_interval = Duration::from_millis(20);
    let ost = OstServer::start(oc).unwrap();
    let ost_addr = ost.local_addr().clone();

    let (mut mdt_dev, _) = FaultDevice::new(32 << 20, 1);
    mdt::mkfs(&mut mdt_dev, "withost", false, &MdsCore::initial_snapshot(0)).unwrap();
    let hcfg = HandlerConfig {
        fsname: "withost".into(),
        osts: vec![(0, ost_addr.to_string())],
        mds_addresses: vec![],
        reply_cache_per_client: 16,
        reply_cache_clients: 16,
        max_readdir: 256,
        inode_capacity: 1 << 20,
        server_id: 9,
        features: rustre_mdsd::service::FEATURES,
    };
    let cfg = ServeConfig {
        precreate_batch: 32,
        low_water: 8,
        ..ServeConfig::default()
    };
    let (mds, _) = Server::start(
        mdt_dev,
        None,
        &"tcp://127.0.0.1:0".parse().unwrap(),
        hcfg,
        vec![(0, ost_addr.clone())],
        cfg,
    )
    .unwrap();
    Pair {
        mds,
        ost,
        ost_addr,
        _device: f,
    }
}

#[test]
fn layouts_name_real_objects_and_unlink_destroys_them() {
    let Pair {
        mds,
        ost,
        ost_addr,
        _device,
    } = start_pair(0);
    let c = Mds::connect(mds.local_addr(), 21);
    let o = Mds::connect(&ost_addr, 22);
    let _: pb::HandshakeReply = o
        .call(
            Opcode::Handshake,
            &pb::HandshakeRequest {
                cluster_name: "withost".into(),
                client_id: 22,
                protocol_version: 1,
                role: pb::PeerRole::Client as i32,
                ..Default::default()
            },
        )
        .unwrap();

    let mut objs = Vec::new();
    for i in 0..100 {
        let r = c.create(1, &format!("f{i}")).unwrap();
        let l = r.attr.unwrap().layout.unwrap();
        objs.push(l.objects[0]);
    }
    for ob in &objs {
        assert_eq!(ost_getattr(&o, ob).unwrap().size, 0, "object {ob:?} exists on the OST");
    }
    for i in 0..10 {
        c.unlink(1, &format!("f{i}")).unwrap();
    }
    let t0 = Instant::now();
    for ob in &objs[..10] {
        while ost_getattr(&o, ob).is_ok() {
            assert!(t0.elapsed() < Duration::from_secs(10), "object {ob:?} never destroyed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(ost_getattr(&o, &objs[50]).is_ok());
    let t0 = Instant::now();
    loop {
        let s: pb::MdsStatfsReply = c
            .call(Opcode::MdsStatfs, &pb::MdsStatfsRequest { creds: root() })
            .unwrap();
        if s.total_bytes > 0 {
            assert_eq!(s.osts.len(), 1);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "statfs never reached the MDS");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    drop(o);
    mds.stop().unwrap();
    ost.shutdown().unwrap();
}

#[test]
fn a_full_ost_answers_enospc_at_once() {
    // An object table of one block: creates use it up, then the OST's precreate answers ENOSPC
    // and the MDS must say ENOSPC promptly instead of parking the create until its deferred
    // timeout (10 s) and answering EAGAIN.
    let p = start_pair(1);
    let c = Mds::connect(p.mds.local_addr(), 21);
    let mut made = 0;
    let err = loop {
        match c.create(1, &format!("f{made}")) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 100_000, "the OST never filled");
    };
    assert!(made > 0, "no file created before the OST filled");
    assert_eq!(err.errno, rustre_proto::Errno::ENOSPC.get(), "{err:?}");
    // And again, now that the MDS knows: at once.
    let t0 = Instant::now();
    let err = c.create(1, "one-more").unwrap_err();
    assert_eq!(err.errno, rustre_proto::Errno::ENOSPC.get(), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "ENOSPC took {:?}", t0.elapsed());
    // Nothing half-created: the name does not exist.
    assert!(c.lookup(1, "one-more").is_err());
    drop(c);
    p.mds.stop().unwrap();
    p.ost.shutdown().unwrap();
}
