//! Garbage and hostile bodies for every opcode: always an error reply (or a valid reply), never a
//! panic, and the namespace stays consistent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rustre_mdsd::check::check_namespace;
use rustre_mdsd::ns::{Namespace, WalRecord};
use rustre_mdsd::reply_cache::ReplyCache;
use rustre_mdsd::service::{Handled, HandlerConfig, MdsCore, Request};
use rustre_proto::{Opcode, pb};

fn core() -> MdsCore {
    let cfg = HandlerConfig {
        fsname: "f".into(),
        osts: vec![(0, "sim://x".into())],
        mds_addresses: vec![],
        reply_cache_per_client: 8,
        reply_cache_clients: 8,
        max_readdir: 64,
        inode_capacity: 100,
        server_id: 1,
        features: rustre_mdsd::service::FEATURES,
    };
    let mut c = MdsCore::new(Namespace::new(0), ReplyCache::new(8, 8), cfg);
    c.log_internal(WalRecord::Precreated {
        ost: 0,
        start: 1,
        count: 1000,
    })
    .unwrap();
    c
}

#[test]
fn random_bodies_never_panic() {
    let mut c = core();
    let mut rng = StdRng::seed_from_u64(11);
    let mut xid = 0;
    for op in (0u16..60).chain([u16::MAX]) {
        for _ in 0..200 {
            let len = rng.random_range(0..64);
            let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            xid += 1;
            match c.handle(
                &Request {
                    client: 3,
                    xid,
                    opcode: op,
                    body,
                },
                5,
            ) {
                Handled::Reply { .. } | Handled::NeedObjects => {}
            }
        }
    }
    assert!(check_namespace(&c.ns).is_empty());
}

#[test]
fn hostile_fields_get_errors_naming_them() {
    let mut c = core();
    let logged = c.pending.len();
    // Distinct xids: a repeated xid would be answered from the reply cache.
    let xid = std::cell::Cell::new(100u64);
    let err = |c: &mut MdsCore, op: Opcode, body: Vec<u8>| -> pb::ErrorReply {
        xid.set(xid.get() + 1);
        match c.handle(
            &Request {
                client: 1,
                xid: xid.get(),
                opcode: op.as_u16(),
                body,
            },
            1,
        ) {
            Handled::Reply { error: true, body, .. } => pb::ErrorReply::decode(&body[..]).unwrap(),
            other => panic!("{op:?}: expected an error, got {other:?}"),
        }
    };
    let creds = Some(pb::Credentials {
        uid: 0,
        gid: 0,
        groups: vec![],
    });
    let root = Some(pb::Fid { ino: 1, generation: 0 });
    let e = err(
        &mut c,
        Opcode::MdsCreate,
        pb::MdsCreateRequest {
            creds: creds.clone(),
            parent: root,
            name: vec![b'a'; 300],
            walk: Vec::new(),
            mode: 0o644,
            flags: 1,
            layout: None,
        }
        .encode_to_vec(),
    );
    assert_eq!(e.field, "create.name");
    let e = err(
        &mut c,
        Opcode::MdsCreate,
        pb::MdsCreateRequest {
            creds: creds.clone(),
            parent: root,
            name: b"x".to_vec(),
            walk: Vec::new(),
            mode: 0o644,
            flags: 1,
            layout: Some(pb::Layout {
                stripe_size: 1000,
                ..Default::default()
            }),
        }
        .encode_to_vec(),
    );
    assert!(e.field.starts_with("create.layout"), "{} {}", e.field, e.message);
    let e = err(
        &mut c,
        Opcode::MdsCreate,
        pb::MdsCreateRequest {
            creds: creds.clone(),
            parent: root,
            name: b"x".to_vec(),
            walk: Vec::new(),
            mode: 0o644,
            flags: 1 << 20,
            layout: None,
        }
        .encode_to_vec(),
    );
    assert!(e.field.starts_with("create.flags"), "{}", e.field);
    let groups = (0..10_000).collect();
    let e = err(
        &mut c,
        Opcode::MdsGetattr,
        pb::MdsGetattrRequest {
            creds: Some(pb::Credentials { uid: 1, gid: 1, groups }),
            fid: root,
        }
        .encode_to_vec(),
    );
    assert!(e.field.starts_with("getattr.creds"), "{}", e.field);
    let e = err(
        &mut c,
        Opcode::MdsGetattr,
        pb::MdsGetattrRequest {
            creds,
            fid: Some(pb::Fid { ino: 0, generation: 0 }),
        }
        .encode_to_vec(),
    );
    assert!(e.field.starts_with("getattr.fid"), "{}", e.field);
    assert_eq!(c.pending.len(), logged, "nothing logged for refused requests");
}
