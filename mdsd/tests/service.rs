//! The whole service over the tcp and sim fabrics, with test OSTs for precreate/statfs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FakeOst, Mds, fid, root};
use rustre_mdsd::dev::FaultDevice;
use rustre_mdsd::mdt;
use rustre_mdsd::service::{HandlerConfig, MdsCore, ServeConfig, Server};
use rustre_proto::{Opcode, pb};

fn hcfg(osts: &[(u32, String)]) -> HandlerConfig {
    HandlerConfig {
        fsname: "testfs".into(),
        osts: osts.to_vec(),
        mds_addresses: vec![],
        reply_cache_per_client: 16,
        reply_cache_clients: 16,
        max_readdir: 1024,
        inode_capacity: 1 << 20,
        server_id: 42,
        features: rustre_mdsd::service::FEATURES,
    }
}

/// A lookup with further names walks a path in one round trip, stopping after a symbolic link
/// and failing as the per-name lookups would.
fn walks_in_one_lookup(c: &Mds) {
    let walk = |creds: Option<pb::Credentials>, parent: u64, names: &[&str]| {
        c.call::<pb::MdsLookupReply>(
            Opcode::MdsLookup,
            &pb::MdsLookupRequest {
                creds,
                parent: fid(parent),
                name: names[0].into(),
                more: names[1..].iter().map(|n| n.as_bytes().to_vec()).collect(),
            },
        )
    };
    let fid_of = |a: &pb::Attr| a.fid.as_ref().unwrap().ino;
    let w = c.mkdir(1, "w").unwrap();
    let w1 = c.mkdir(fid_of(&w), "w1").unwrap();
    let w2 = c.mkdir(fid_of(&w1), "w2").unwrap();
    let f = c.create(fid_of(&w2), "f").unwrap().attr.unwrap();
    let _: pb::MdsSymlinkReply = c
        .call(
            Opcode::MdsSymlink,
            &pb::MdsSymlinkRequest {
                creds: root(),
                parent: fid(fid_of(&w1)),
                name: b"ln".to_vec(),
                target: b"/w".to_vec(),
                walk: Vec::new(),
            },
        )
        .unwrap();

    let r = walk(root(), 1, &["w", "w1", "w2", "f"]).unwrap();
    let got: Vec<u64> = std::iter::once(r.attr.as_ref().unwrap())
        .chain(&r.more)
        .map(fid_of)
        .collect();
    assert_eq!(got, [&w, &w1, &w2, &f].map(fid_of));
    // A link ends the walk: it is the last attribute, the names after it are the client's.
    let r = walk(root(), 1, &["w", "w1", "ln", "w1", "w2"]).unwrap();
    assert_eq!(r.more.len(), 2);
    assert_eq!(r.more[1].kind, pb::FileKind::Symlink as i32);
    // Failures are those of the name that fails.
    assert_eq!(walk(root(), 1, &["w", "nope", "w2"]).unwrap_err().errno, libc::ENOENT);
    assert_eq!(
        walk(root(), 1, &["w", "w1", "w2", "f", "x"]).unwrap_err().errno,
        libc::ENOTDIR
    );
    let _: pb::MdsMkdirReply = c
        .call(
            Opcode::MdsMkdir,
            &pb::MdsMkdirRequest {
                creds: root(),
                parent: fid(fid_of(&w)),
                name: b"private".to_vec(),
                walk: Vec::new(),
                mode: 0o700,
                default_layout: None,
            },
        )
        .unwrap();
    let bob = Some(pb::Credentials {
        uid: 1000,
        gid: 1000,
        groups: vec![],
    });
    assert!(walk(bob.clone(), 1, &["w", "w1"]).is_ok());
    assert_eq!(walk(bob, 1, &["w", "private", "x"]).unwrap_err().errno, libc::EACCES);
    // Bounded.
    let many = vec!["w"; rustre_proto::request::mds::MAX_LOOKUP_NAMES + 1];
    assert_eq!(walk(root(), 1, &many).unwrap_err().field, "lookup.more");
    let e = walk(root(), 1, &["w", "a/b"]).unwrap_err();
    assert_eq!(e.field, "lookup.more");

    // Creates and unlinks carry the names to their directory the same way; a link on the way
    // is refused with ELOOP on the walk field (the client resolves it).
    let create = |walk: &[&str], name: &str| {
        c.call::<pb::MdsCreateReply>(
            Opcode::MdsCreate,
            &pb::MdsCreateRequest {
                creds: root(),
                parent: fid(1),
                name: name.into(),
                walk: walk.iter().map(|n| n.as_bytes().to_vec()).collect(),
                mode: 0o644,
                flags: (pb::OpenFlag::Create as u32) | (pb::OpenFlag::Write as u32),
                layout: None,
            },
        )
    };
    let unlink = |walk: &[&str], name: &str| {
        c.call::<pb::MdsUnlinkReply>(
            Opcode::MdsUnlink,
            &pb::MdsUnlinkRequest {
                creds: root(),
                parent: fid(1),
                name: name.into(),
                walk: walk.iter().map(|n| n.as_bytes().to_vec()).collect(),
            },
        )
    };
    let g = create(&["w", "w1", "w2"], "g").unwrap().attr.unwrap();
    assert_eq!(fid_of(&c.lookup(fid_of(&w2), "g").unwrap()), fid_of(&g));
    let e = create(&["w", "w1", "ln", "w1"], "h").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ELOOP, "create.walk"));
    assert_eq!(create(&["w", "nope"], "h").unwrap_err().errno, libc::ENOENT);
    assert_eq!(create(&["w", "w1", "w2", "f"], "h").unwrap_err().errno, libc::ENOTDIR);
    let e = unlink(&["w", "w1", "ln"], "g").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ELOOP, "unlink.walk"));
    unlink(&["w", "w1", "w2"], "g").unwrap();
    assert_eq!(c.lookup(fid_of(&w2), "g").unwrap_err().errno, libc::ENOENT);
    let e = unlink(&["w"; rustre_proto::request::mds::MAX_LOOKUP_NAMES], "g").unwrap_err();
    assert_eq!(e.field, "unlink.walk");
    let mkdir = |walk: &[&str], name: &str| {
        c.call::<pb::MdsMkdirReply>(
            Opcode::MdsMkdir,
            &pb::MdsMkdirRequest {
                creds: root(),
                parent: fid(1),
                name: name.into(),
                walk: walk.iter().map(|n| n.as_bytes().to_vec()).collect(),
                mode: 0o755,
                default_layout: None,
            },
        )
    };
    let rmdir = |walk: &[&str], name: &str| {
        c.call::<pb::MdsRmdirReply>(
            Opcode::MdsRmdir,
            &pb::MdsRmdirRequest {
                creds: root(),
                parent: fid(1),
                name: name.into(),
                walk: walk.iter().map(|n| n.as_bytes().to_vec()).collect(),
            },
        )
    };
    let d = mkdir(&["w", "w1"], "d").unwrap().attr.unwrap();
    assert_eq!(fid_of(&c.lookup(fid_of(&w1), "d").unwrap()), fid_of(&d));
    let e = mkdir(&["w", "w1", "ln"], "d2").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ELOOP, "mkdir.walk"));
    let e = rmdir(&["w", "w1", "ln", "w1"], "d").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ELOOP, "rmdir.walk"));
    rmdir(&["w", "w1"], "d").unwrap();
    assert_eq!(c.lookup(fid_of(&w1), "d").unwrap_err().errno, libc::ENOENT);

    // Renames carry a walk for each side, symlinks one; a failure on the way names the walk.
    let rename = |src: &[&str], sn: &str, dst: &[&str], dn: &str| {
        c.call::<pb::MdsRenameReply>(
            Opcode::MdsRename,
            &pb::MdsRenameRequest {
                creds: root(),
                src_parent: fid(1),
                src_name: sn.into(),
                dst_parent: fid(1),
                dst_name: dn.into(),
                flags: 0,
                src_walk: src.iter().map(|n| n.as_bytes().to_vec()).collect(),
                dst_walk: dst.iter().map(|n| n.as_bytes().to_vec()).collect(),
            },
        )
    };
    let symlink = |walk: &[&str], name: &str| {
        c.call::<pb::MdsSymlinkReply>(
            Opcode::MdsSymlink,
            &pb::MdsSymlinkRequest {
                creds: root(),
                parent: fid(1),
                name: name.into(),
                target: b"../w1".to_vec(),
                walk: walk.iter().map(|n| n.as_bytes().to_vec()).collect(),
            },
        )
    };
    rename(&["w", "w1", "w2"], "f", &["w", "w1"], "f2").unwrap();
    assert_eq!(fid_of(&c.lookup(fid_of(&w1), "f2").unwrap()), fid_of(&f));
    assert_eq!(c.lookup(fid_of(&w2), "f").unwrap_err().errno, libc::ENOENT);
    let e = rename(&["w", "w1", "ln", "w1"], "f2", &["w"], "f3").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ELOOP, "rename.src_walk"));
    let e = rename(&["w", "w1"], "f2", &["w", "w1", "ln"], "f3").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ELOOP, "rename.dst_walk"));
    let e = rename(&["w", "w1"], "f2", &["w", "nope"], "f3").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ENOENT, "rename.dst_walk"));
    let e = rename(&["w", "w1", "f2"], "x", &["w"], "f3").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ENOTDIR, "rename.src_walk"));
    // Nothing moved on a refusal.
    assert_eq!(fid_of(&c.lookup(fid_of(&w1), "f2").unwrap()), fid_of(&f));
    let e = rename(&["w"; rustre_proto::request::mds::MAX_LOOKUP_NAMES], "f2", &[], "f3").unwrap_err();
    assert_eq!(e.field, "rename.src_walk");
    let l = symlink(&["w", "w1", "w2"], "up").unwrap().attr.unwrap();
    assert_eq!(fid_of(&c.lookup(fid_of(&w2), "up").unwrap()), fid_of(&l));
    let e = symlink(&["w", "w1", "ln"], "up2").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ELOOP, "symlink.walk"));
    let e = symlink(&["w", "nope"], "up2").unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::ENOENT, "symlink.walk"));
}

fn exercise(listen: &str, ost_listen: [&str; 2]) {
    let ost0 = FakeOst::start(ost_listen[0], 0);
    let ost1 = FakeOst::start(ost_listen[1], 1);
    let (mut dev, ctl) = FaultDevice::new(32 << 20, 1);
    mdt::mkfs(&mut dev, "testfs", false, &MdsCore::initial_snapshot(0)).unwrap();
    let osts = vec![(0, ost0.addr.clone()), (1, ost1.addr.clone())];
    let names: Vec<(u32, String)> = osts.iter().map(|(i, a)| (*i, a.to_string())).collect();
    let cfg = ServeConfig {
        precreate_batch: 64,
        low_water: 16,
        ..ServeConfig::default()
    };
    let (server, _) = Server::start(
        dev,
        None,
        &listen.parse().unwrap(),
        hcfg(&names),
        osts.clone(),
        cfg.clone(),
    )
    .unwrap();
    let c = Mds::connect(server.local_addr(), 7);

    // Handshake: the cluster map.
    let hs: pb::HandshakeReply = c
        .call(
            Opcode::Handshake,
            &pb::HandshakeRequest {
                client_id: 7,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(hs.cluster_name, "testfs");
    assert_eq!(hs.osts.len(), 2);
    assert_eq!(hs.osts[1].addresses, vec![ost1.addr.to_string()]);
    assert_eq!(hs.features, pb::ServerFeature::PathWalks as u32, "path walks announced");

    let d = c.mkdir(1, "d").unwrap().fid.unwrap().ino;
    // More creates than one precreate batch: the pools refill from the OSTs on the way.
    for i in 0..300 {
        let r = c.create(d, &format!("f{i}")).unwrap();
        assert!(r.created);
        let l = r.attr.unwrap().layout.unwrap();
        assert_eq!(l.objects.len(), 1);
    }
    assert_eq!(c.create(d, "f7").unwrap_err().errno, 17, "EEXIST");
    assert_eq!(c.readdir_all(d).len(), 300);
    // Both OSTs got files (weighted round robin).
    let mut per_ost = [0; 2];
    for i in 0..300 {
        let a = c.lookup(d, &format!("f{i}")).unwrap();
        per_ost[a.layout.unwrap().objects[0].ost_index as usize] += 1;
    }
    assert!(
        per_ost[0] > 0 && per_ost[1] > 0,
        "{per_ost:?} ids {} {}",
        ost0.next_id.load(std::sync::atomic::Ordering::SeqCst),
        ost1.next_id.load(std::sync::atomic::Ordering::SeqCst)
    );
    c.rename(d, "f1", 1, "moved").unwrap();
    assert!(c.lookup(1, "moved").is_ok());
    assert_eq!(c.lookup(d, "f1").unwrap_err().errno, 2);
    let e = c.rename(1, "d", d, "x").unwrap_err();
    assert_eq!(e.errno, 22, "a directory into itself");
    c.unlink(d, "f2").unwrap();
    // Size-on-close, setattr, symlink, link, statfs, stripes.
    let f3 = c.lookup(d, "f3").unwrap().fid.unwrap().ino;
    let _: pb::MdsCloseReply = c
        .call(
            Opcode::MdsClose,
            &pb::MdsCloseRequest {
                creds: root(),
                handle: f3,
                fid: fid(f3),
                size: Some(12345),
                mtime_ns: Some(5),
                writer: false,
            },
        )
        .unwrap();
    let a: pb::MdsGetattrReply = c
        .call(
            Opcode::MdsGetattr,
            &pb::MdsGetattrRequest {
                creds: root(),
                fid: fid(f3),
            },
        )
        .unwrap();
    assert_eq!(a.attr.unwrap().size, 12345);
    let s: pb::MdsSetattrReply = c
        .call(
            Opcode::MdsSetattr,
            &pb::MdsSetattrRequest {
                creds: root(),
                fid: fid(f3),
                mode: Some(0o600),
                size: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    let s = s.attr.unwrap();
    assert_eq!((s.mode, s.size), (0o600, 10));
    let sl: pb::MdsSymlinkReply = c
        .call(
            Opcode::MdsSymlink,
            &pb::MdsSymlinkRequest {
                creds: root(),
                parent: fid(1),
                name: b"sl".to_vec(),
                target: b"d/f3".to_vec(),
                walk: Vec::new(),
            },
        )
        .unwrap();
    let rl: pb::MdsReadlinkReply = c
        .call(
            Opcode::MdsReadlink,
            &pb::MdsReadlinkRequest {
                creds: root(),
                fid: sl.attr.unwrap().fid,
            },
        )
        .unwrap();
    assert_eq!(rl.target, b"d/f3");
    let ln: pb::MdsLinkReply = c
        .call(
            Opcode::MdsLink,
            &pb::MdsLinkRequest {
                creds: root(),
                target: fid(f3),
                parent: fid(1),
                name: b"hard".to_vec(),
            },
        )
        .unwrap();
    assert_eq!(ln.attr.unwrap().nlink, 2);
    let sf: pb::MdsStatfsReply = c
        .call(Opcode::MdsStatfs, &pb::MdsStatfsRequest { creds: root() })
        .unwrap();
    assert_eq!(sf.fsname, "testfs");
    let _: pb::MdsSetstripeReply = c
        .call(
            Opcode::MdsSetstripe,
            &pb::MdsSetstripeRequest {
                creds: root(),
                fid: fid(d),
                layout: Some(pb::Layout {
                    stripe_size: 0,
                    stripe_count: u32::MAX,
                    stripe_offset: -1,
                    objects: vec![],
                }),
            },
        )
        .unwrap();
    let wide = c.create(d, "wide").unwrap().attr.unwrap().layout.unwrap();
    assert_eq!(wide.objects.len(), 2, "stripe count -1 inherited: all OSTs");
    let gs: pb::MdsGetstripeReply = c
        .call(
            Opcode::MdsGetstripe,
            &pb::MdsGetstripeRequest {
                creds: root(),
                fid: fid(d),
            },
        )
        .unwrap();
    assert!(!gs.inherited);
    let nul: pb::MdsNullReply = c
        .call(
            Opcode::MdsNull,
            &pb::MdsNullRequest {
                payload: b"ping".to_vec(),
            },
        )
        .unwrap();
    assert_eq!(nul.payload, b"ping");

    walks_in_one_lookup(&c);

    // Bad requests: an error reply naming the field, never a crash.
    let e = c
        .call::<pb::MdsLookupReply>(
            Opcode::MdsLookup,
            &pb::MdsLookupRequest {
                creds: None,
                parent: fid(1),
                name: b"x".to_vec(),
                more: Vec::new(),
            },
        )
        .unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (22, "lookup.creds"));
    let e = c
        .call::<pb::MdsLookupReply>(
            Opcode::MdsLookup,
            &pb::MdsLookupRequest {
                creds: root(),
                parent: fid(1),
                name: b"a/b".to_vec(),
                more: Vec::new(),
            },
        )
        .unwrap_err();
    assert_eq!(e.field, "lookup.name");
    let r = c.conn.call(Opcode::MdsCreate.as_u16(), &[0xff, 0xff, 0xff]).unwrap();
    assert!(r.header.flags & rustre_proto::frame::FLAG_ERROR != 0);
    let r = c.conn.call(999, &[]).unwrap();
    assert!(r.header.flags & rustre_proto::frame::FLAG_ERROR != 0);
    let e = c
        .call::<pb::MdsGetattrReply>(
            Opcode::MdsGetattr,
            &pb::MdsGetattrRequest {
                creds: root(),
                fid: Some(pb::Fid { ino: 5, generation: 3 }),
            },
        )
        .unwrap_err();
    assert_eq!(e.errno, 116, "ESTALE");

    // Unlinked files' objects are destroyed on their OSTs.
    let t0 = std::time::Instant::now();
    while ost0.destroyed.lock().unwrap().len() + ost1.destroyed.lock().unwrap().len() < 1 {
        assert!(t0.elapsed().as_secs() < 10, "destroy never reached the OSTs");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    // Restart on the same medium: everything acknowledged is there.
    drop(c);
    server.stop().unwrap();
    let (dev, _) = FaultDevice::from_image(ctl.image(), 2);
    let (server, stats) = Server::start(dev, None, &listen.parse().unwrap(), hcfg(&names), osts, cfg).unwrap();
    assert!(stats.checkpoint_generation >= 1, "clean stop wrote a checkpoint");
    let c = Mds::connect(server.local_addr(), 8);
    assert_eq!(c.readdir_all(d).len(), 299 + 1 - 1 - 1 + 1);
    assert!(c.lookup(1, "moved").is_ok());
    assert_eq!(c.lookup(d, "f2").unwrap_err().errno, 2);
    drop(c);
    server.stop().unwrap();
}

#[test]
fn serves_every_mds_operation_over_tcp() {
    exercise("tcp://127.0.0.1:0", ["tcp://127.0.0.1:0", "tcp://127.0.0.1:0"]);
}

#[test]
fn serves_every_mds_operation_over_sim() {
    exercise("sim://mds-test", ["sim://ost0-test", "sim://ost1-test"]);
}
