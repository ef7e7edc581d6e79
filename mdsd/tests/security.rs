//! Security against a live mdsd and ostd over tcp loopback (in this process, devices on
//! /dev/shm files with real io_uring): peers without the cluster secret or with a wrong one are
//! refused by both servers while a good client keeps working, a captured handshake cannot be
//! replayed, ostd refuses missing, forged, expired and mismatched capabilities, and a barrage of
//! malformed frames and bodies leaves both servers serving and both devices clean.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Mds, fid, root};
use prost::Message;
use rustre::{Client, ClientConfig, ClientLimits, OpenFlags};
use rustre_mdsd::dev::UringDevice as MdtDevice;
use rustre_mdsd::mdt::{self, Mdt};
use rustre_mdsd::service::{HandlerConfig, MdsCore, ServeConfig, Server};
use rustre_ostd::dev::{UringConfig, UringDevice};
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::service::{ServeConfig as OstServeConfig, Server as OstServer};
use rustre_proto::auth::{self, AuthError, ClusterSecret, ServerAuth};
use rustre_proto::frame::{FrameHeader, HEADER_LEN, encode_frame};
use rustre_proto::types::Rights;
use rustre_proto::{Opcode, pb};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

const FS: &str = "sec";

fn handler(ost: &str) -> HandlerConfig {
    HandlerConfig {
        fsname: FS.into(),
        osts: vec![(0, ost.to_string())],
        mds_addresses: vec![],
        reply_cache_per_client: 16,
        reply_cache_clients: 64,
        max_readdir: 256,
        inode_capacity: 1 << 20,
        server_id: 9,
        features: rustre_mdsd::service::FEATURES,
    }
}

struct Cluster {
    mdt: tempfile::NamedTempFile,
    ostdev: tempfile::NamedTempFile,
    ost: Option<OstServer>,
    mds: Option<Server>,
    ost_addr: rustre_fabric::Address,
    mds_addr: rustre_fabric::Address,
}

fn server_auth(s: &ClusterSecret) -> Arc<ServerAuth> {
    Arc::new(ServerAuth::new(s.clone(), auth::DEFAULT_WINDOW_MS, 1024))
}

impl Cluster {
    fn start(secret: Option<&ClusterSecret>) -> Cluster {
        let ostdev = tempfile::Builder::new()
            .prefix("rustre-sec-ost-")
            .tempfile_in("/dev/shm")
            .unwrap();
        ostdev.as_file().set_len(64 << 20).unwrap();
        let opath = ostdev.path().to_str().unwrap().to_string();
        let dev = UringDevice::open(
            &opath,
            &UringConfig {
                rings: 1,
                ..UringConfig::default()
            },
        )
        .unwrap();
        mkfs(&dev, &MkfsOptions::new(FS, 0)).unwrap();
        drop(dev);
        let mut oc = OstServeConfig::new(&opath, "tcp://127.0.0.1:0".parse().unwrap());
        oc.node = "test".into();
        oc.workers = 2;
        oc.pool_buffers = 4;
        oc.mmp_interval = Duration::from_millis(20);
        oc.auth = secret.map(server_auth);
        let ost = OstServer::start(oc).unwrap();
        let ost_addr = ost.local_addr().clone();

        let mdt = tempfile::Builder::new()
            .prefix("rustre-sec-mdt-")
            .tempfile_in("/dev/shm")
            .unwrap();
        mdt.as_file().set_len(32 << 20).unwrap();
        let mut mdev = MdtDevice::open(mdt.path(), Some(32 << 20)).unwrap();
        mdt::mkfs(&mut mdev, FS, false, &MdsCore::initial_snapshot(0)).unwrap();
        let cfg = ServeConfig {
            precreate_batch: 64,
            low_water: 16,
            auth: secret.map(server_auth),
            ..ServeConfig::default()
        };
        let (mds, _) = Server::start(
            mdev,
            None,
            &"tcp://127.0.0.1:0".parse().unwrap(),
            handler(&ost_addr.to_string()),
            vec![(0, ost_addr.clone())],
            cfg,
        )
        .unwrap();
        let mds_addr = mds.local_addr().clone();
        Cluster {
            mdt,
            ostdev,
            ost: Some(ost),
            mds: Some(mds),
            ost_addr,
            mds_addr,
        }
    }

    fn client(&self, secret: Option<&ClusterSecret>) -> rustre::Result<Client> {
        Client::connect(ClientConfig {
            fsname: Some(FS.into()),
            mds: vec![self.mds_addr.clone()],
            limits: ClientLimits {
                call_timeout_ms: 10_000,
                ..ClientLimits::default()
            },
            secret: secret.cloned(),
        })
    }

    /// Stops both servers and runs the equivalents of `mdsd check` and `ostd check`.
    fn stop_and_check(mut self) {
        self.mds.take().unwrap().stop().unwrap();
        self.ost.take().unwrap().shutdown().unwrap();
        let dev = MdtDevice::open(self.mdt.path(), None).unwrap();
        let (_, core, _) = Mdt::recover(
            dev,
            |b| MdsCore::from_snapshot(b, handler("tcp://127.0.0.1:1")),
            |c, e| c.replay(e),
        )
        .unwrap();
        let problems = rustre_mdsd::check::check_namespace(&core.ns);
        assert!(problems.is_empty(), "mdsd check: {problems:?}");
        let odev = UringDevice::open(
            self.ostdev.path().to_str().unwrap(),
            &UringConfig {
                rings: 1,
                ..UringConfig::default()
            },
        )
        .unwrap();
        let report = rustre_ostd::check::check(&odev).unwrap();
        assert!(report.clean(), "ostd check: {}", report.summary());
    }
}

/// Writes a file through `c`, reads it back.
fn round_trip(c: &Client, path: &str, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let fd = c
        .open(
            path,
            OpenFlags {
                read: true,
                write: true,
                create: true,
                trunc: true,
                ..Default::default()
            },
            0o644,
            None,
        )
        .unwrap();
    assert_eq!(c.pwrite(fd, &data, 0).unwrap(), len);
    let mut back = vec![0u8; len];
    assert_eq!(c.pread(fd, &mut back, 0).unwrap(), len);
    assert!(back == data, "{path}: data read back differs");
    c.close(fd).unwrap();
}

fn hello(client_id: u64) -> pb::HandshakeRequest {
    pb::HandshakeRequest {
        cluster_name: FS.into(),
        protocol_version: 1,
        client_id,
        node_name: "test".into(),
        role: pb::PeerRole::Client as i32,
        ..Default::default()
    }
}

/// A raw connection that ran the handshake with `secret`; returns it and the requests it sent.
fn raw_auth(
    addr: &rustre_fabric::Address,
    id: u64,
    secret: &ClusterSecret,
) -> (Mds, Result<pb::HandshakeReply, AuthError>, Vec<pb::HandshakeRequest>) {
    let c = Mds::connect(addr, id);
    let mut sent = Vec::new();
    let r = auth::client_handshake::<AuthError>(Some(secret), hello(id), auth::now_unix_ms(), |r| {
        sent.push(r.clone());
        c.call(Opcode::Handshake, r)
            .map_err(|e| AuthError::Handshake(format!("errno {}: {}", e.errno, e.message)))
    });
    (c, r, sent)
}

fn getattr(c: &Mds, o: pb::ObjectRef, cap: Option<pb::Capability>) -> Result<pb::OstGetattrReply, pb::ErrorReply> {
    c.call(Opcode::OstGetattr, &pb::OstGetattrRequest { object: Some(o), cap })
}

fn expect_eacces<T: std::fmt::Debug>(r: Result<T, pb::ErrorReply>, what: &str, text: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.errno, libc::EACCES, "{what}: {e:?}");
    assert!(e.message.contains(text), "{what}: {:?} lacks {text:?}", e.message);
}

#[test]
fn secret_handshake_replay_and_capabilities_against_live_servers() {
    let secret = ClusterSecret::generate(32).unwrap();
    let wrong = ClusterSecret::generate(32).unwrap();
    let cl = Cluster::start(Some(&secret));
    let good = cl.client(Some(&secret)).unwrap();
    round_trip(&good, "/a", 300_000);

    // Clients without the secret or with a wrong one are refused, with a reason.
    let e = cl.client(None).err().expect("client without secret").to_string();
    assert!(e.contains("authentication failed"), "{e}");
    let e = cl
        .client(Some(&wrong))
        .err()
        .expect("client with a wrong secret")
        .to_string();
    assert!(e.contains("different cluster secret"), "{e}");
    // The same at the OST, for raw peers: nothing but the handshake is looked at.
    let raw = Mds::connect(&cl.ost_addr, 501);
    expect_eacces(
        getattr(
            &raw,
            pb::ObjectRef {
                ost_index: 0,
                object_id: 1,
            },
            None,
        ),
        "OST request before the handshake",
        "before the authentication handshake",
    );
    let raw = Mds::connect(&cl.ost_addr, 502);
    expect_eacces(
        raw.call::<pb::HandshakeReply>(Opcode::Handshake, &hello(502)),
        "OST handshake without auth",
        "no authentication",
    );
    let (_, r, _) = raw_auth(&cl.ost_addr, 503, &wrong);
    assert!(r.unwrap_err().to_string().contains("different cluster secret"));
    let raw = Mds::connect(&cl.mds_addr, 504);
    expect_eacces(
        raw.call::<pb::MdsStatfsReply>(Opcode::MdsStatfs, &pb::MdsStatfsRequest { creds: root() }),
        "MDS request before the handshake",
        "before the authentication handshake",
    );

    // A captured handshake cannot be replayed: neither its first message (nonce seen) nor its
    // proof (fresh server nonce on every connection).
    let (mds, r, sent) = raw_auth(&cl.mds_addr, 505, &secret);
    let map = r.unwrap();
    assert_eq!(map.osts.len(), 1, "the cluster map comes after the proof");
    assert_eq!(sent.len(), 2);
    let replay = Mds::connect(&cl.mds_addr, 505);
    expect_eacces(
        replay.call::<pb::HandshakeReply>(Opcode::Handshake, &sent[0]),
        "replayed hello",
        "replayed",
    );
    let replay = Mds::connect(&cl.mds_addr, 505);
    expect_eacces(
        replay.call::<pb::HandshakeReply>(Opcode::Handshake, &sent[1]),
        "replayed proof",
        "without a challenge",
    );
    let replay = Mds::connect(&cl.mds_addr, 505);
    let mut r2 = sent[0].clone();
    r2.auth_nonce[0] ^= 1;
    let ch: pb::HandshakeReply = replay.call(Opcode::Handshake, &r2).unwrap();
    assert!(ch.osts.is_empty(), "no map before the proof");
    let mut p2 = sent[1].clone();
    p2.auth_nonce = r2.auth_nonce.clone();
    expect_eacces(
        replay.call::<pb::HandshakeReply>(Opcode::Handshake, &p2),
        "old proof on a new challenge",
        "proof is wrong",
    );

    // The MDS issues capabilities at open; the OST checks them.
    let open = |name: &str, flags: u32| -> pb::MdsCreateReply {
        mds.call(
            Opcode::MdsCreate,
            &pb::MdsCreateRequest {
                creds: root(),
                parent: fid(1),
                name: name.into(),
                walk: Vec::new(),
                mode: 0o644,
                flags: flags | pb::OpenFlag::Create as u32,
                layout: None,
            },
        )
        .unwrap()
    };
    let rw = open("rw", pb::OpenFlag::Read as u32 | pb::OpenFlag::Write as u32);
    let ro = open("ro", pb::OpenFlag::Read as u32);
    let obj = rw.attr.as_ref().unwrap().layout.as_ref().unwrap().objects[0];
    let ro_obj = ro.attr.as_ref().unwrap().layout.as_ref().unwrap().objects[0];
    let cap = rw.capabilities[0].clone();
    let ro_cap = ro.capabilities[0].clone();
    assert_eq!(cap.object, Some(obj));
    assert!(
        Rights::try_from(cap.rights)
            .unwrap()
            .contains(Rights::WRITE | Rights::PUNCH)
    );
    assert!(!Rights::try_from(ro_cap.rights).unwrap().contains(Rights::WRITE));

    // Capabilities are bound to the client id of the connection that opened the file (505):
    // that client's own OST connection may use them, another authenticated client that got
    // hold of them may not. (Frames under another id than the handshake's are refused by the
    // gate, `rustre_proto::auth` tests.)
    assert_eq!(cap.client_id, 505);
    let (thief, r, _) = raw_auth(&cl.ost_addr, 0x7e57, &secret);
    r.unwrap();
    expect_eacces(
        getattr(&thief, obj, Some(cap.clone())),
        "stolen capability",
        "issued to client",
    );
    let w = thief.call::<pb::OstWriteReply>(
        Opcode::OstWrite,
        &pb::OstWriteRequest {
            object: Some(obj),
            offset: 0,
            length: 1,
            bulk: Some(pb::BulkDescriptor {
                addr: 0,
                rkey: 1,
                len: 1,
                crc32c: 0,
            }),
            cap: Some(cap.clone()),
            more: Vec::new(),
        },
    );
    expect_eacces(w, "write with a stolen capability", "issued to client");
    let (ost, r, _) = raw_auth(&cl.ost_addr, 505, &secret);
    r.unwrap();
    assert_eq!(getattr(&ost, obj, Some(cap.clone())).unwrap().size, 0);
    expect_eacces(getattr(&ost, obj, None), "no capability", "no capability");
    let forged = auth::issue_capability(
        &wrong,
        obj,
        cap.fid,
        Rights::try_from(cap.rights).unwrap(),
        cap.expiry_unix_ms,
        0,
    );
    expect_eacces(getattr(&ost, obj, Some(forged)), "forged", "forged");
    let mut tampered = cap.clone();
    tampered.expiry_unix_ms += 1;
    expect_eacces(getattr(&ost, obj, Some(tampered)), "tampered", "forged");
    let expired = auth::issue_capability(&secret, obj, cap.fid, Rights::GETATTR, auth::now_unix_ms() - 1, 0);
    expect_eacces(getattr(&ost, obj, Some(expired)), "expired", "expired");
    let other = auth::issue_capability(&secret, obj, cap.fid, Rights::GETATTR, u64::MAX, 506);
    expect_eacces(getattr(&ost, obj, Some(other)), "other client", "issued to client");
    // A capability for one object used on another is refused (by the request validation,
    // which names the field, before the MAC is looked at).
    let e = getattr(&ost, ro_obj, Some(cap.clone())).unwrap_err();
    assert_eq!(e.field, "ost.getattr.cap.object", "{e:?}");
    let punch = |c: Option<pb::Capability>, o| {
        ost.call::<pb::OstPunchReply>(
            Opcode::OstPunch,
            &pb::OstPunchRequest {
                object: Some(o),
                offset: 0,
                length: u64::MAX,
                cap: c,
            },
        )
    };
    let e = punch(Some(ro_cap), ro_obj).unwrap_err();
    assert!(e.field.contains("rights"), "read-only capability punches: {e:?}");
    punch(Some(cap), obj).unwrap();
    expect_eacces(
        ost.call::<pb::OstPrecreateReply>(
            Opcode::OstPrecreate,
            &pb::OstPrecreateRequest { ost_index: 0, count: 1 },
        ),
        "client precreate",
        "only the MDS",
    );

    // Through all of that the good client kept working, and a new one connects.
    round_trip(&good, "/b", 100_000);
    round_trip(&cl.client(Some(&secret)).unwrap(), "/c", 50_000);
    drop(good);
    cl.stop_and_check();
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % (max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends raw bytes on a fresh TCP connection, then reads whatever comes back until the server
/// closes or 300 ms pass.
fn raw_bytes(addr: &rustre_fabric::Address, bytes: &[u8]) {
    let sa: std::net::SocketAddr = addr.to_string().trim_start_matches("tcp://").parse().unwrap();
    let Ok(mut s) = std::net::TcpStream::connect(sa) else {
        return;
    };
    let _ = s.write_all(bytes);
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Every kind of malformed frame, random bodies for every opcode and out-of-range fields.
fn barrage(addr: &rustre_fabric::Address, seed: u64) {
    let mut rng = Rng(seed);
    let body = pb::MdsStatfsRequest { creds: root() }.encode_to_vec();
    let good = FrameHeader::request(Opcode::MdsStatfs.as_u16(), 1, 77, body.len() as u32);
    let frame = encode_frame(&good, &body);
    let patched = |off: usize, v: &[u8]| {
        let mut f = frame.clone();
        f[off..off + v.len()].copy_from_slice(v);
        f
    };
    let cases: Vec<Vec<u8>> = vec![
        patched(0, b"XSTR"),                                        // bad magic
        patched(4, &99u16.to_le_bytes()),                           // bad version
        patched(8, &(1u32 << 20).to_le_bytes()),                    // unknown flag
        patched(8, &rustre_proto::frame::FLAG_REPLY.to_le_bytes()), // a "reply" sent to a server
        patched(28, &u32::MAX.to_le_bytes()),                       // oversized length
        patched(28, &(rustre_proto::frame::DEFAULT_MAX_BODY + 1).to_le_bytes()),
        patched(28, &1000u32.to_le_bytes()), // truncated body
        frame[..HEADER_LEN / 2].to_vec(),    // truncated header
        patched(6, &999u16.to_le_bytes()),   // unknown opcode
        patched(6, &0u16.to_le_bytes()),
        rng.bytes(4096),                         // noise
        [frame.clone(), rng.bytes(64)].concat(), // a good frame, then noise
    ];
    for c in &cases {
        raw_bytes(addr, c);
    }
    // Well-framed requests with random bodies for every opcode, and unknown opcodes, over the
    // fabric (the connection is replaced whenever the server drops it).
    let mut id = seed << 8;
    let mut conn = Mds::connect(addr, id);
    for op in (0u16..=60).chain([100, 1000, u16::MAX]) {
        for _ in 0..12 {
            let b = rng.bytes(200);
            if conn.conn.call(op, &b).is_err() {
                id += 1;
                conn = Mds::connect(addr, id);
            }
        }
    }
    // Out-of-range fields in otherwise well-formed requests.
    let reqs: Vec<(Opcode, Vec<u8>)> = vec![
        (
            Opcode::MdsCreate,
            pb::MdsCreateRequest {
                creds: root(),
                parent: fid(1),
                name: vec![b'x'; 5000],
                walk: Vec::new(),
                mode: u32::MAX,
                flags: u32::MAX,
                layout: Some(pb::Layout {
                    stripe_size: u32::MAX,
                    stripe_count: u32::MAX - 1,
                    stripe_offset: i32::MIN,
                    objects: vec![],
                }),
            }
            .encode_to_vec(),
        ),
        (
            Opcode::MdsCreate,
            pb::MdsCreateRequest {
                creds: root(),
                parent: fid(u64::MAX),
                name: b"../..".to_vec(),
                walk: Vec::new(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            Opcode::MdsReaddir,
            pb::MdsReaddirRequest {
                creds: root(),
                dir: fid(1),
                cookie: u64::MAX,
                max_entries: u32::MAX,
            }
            .encode_to_vec(),
        ),
        (
            Opcode::OstWrite,
            pb::OstWriteRequest {
                object: Some(pb::ObjectRef {
                    ost_index: 0,
                    object_id: u64::MAX,
                }),
                offset: u64::MAX - 10,
                length: 1 << 40,
                bulk: Some(pb::BulkDescriptor {
                    addr: u64::MAX,
                    rkey: u32::MAX,
                    len: u64::MAX,
                    crc32c: 0,
                }),
                cap: None,
                more: Vec::new(),
            }
            .encode_to_vec(),
        ),
        (
            Opcode::OstRead,
            pb::OstReadRequest {
                object: Some(pb::ObjectRef {
                    ost_index: 0,
                    object_id: 1,
                }),
                offset: 0,
                length: 4096,
                bulk: Some(pb::BulkDescriptor {
                    addr: 0xdead_beef,
                    rkey: 12345,
                    len: 4096,
                    crc32c: 0,
                }),
                cap: None,
                reply_inline: false,
                more: Vec::new(),
            }
            .encode_to_vec(),
        ),
        (
            Opcode::OstPrecreate,
            pb::OstPrecreateRequest {
                ost_index: 0,
                count: u32::MAX,
            }
            .encode_to_vec(),
        ),
        (
            Opcode::OstPunch,
            pb::OstPunchRequest {
                object: Some(pb::ObjectRef {
                    ost_index: 7,
                    object_id: 0,
                }),
                offset: u64::MAX,
                length: u64::MAX,
                cap: None,
            }
            .encode_to_vec(),
        ),
    ];
    for (op, b) in &reqs {
        if conn.conn.call(op.as_u16(), b).is_err() {
            id += 1;
            conn = Mds::connect(addr, id);
        }
    }
}

#[test]
fn hostile_input_leaves_servers_serving_and_devices_clean() {
    let cl = Cluster::start(None);
    let c = cl.client(None).unwrap();
    round_trip(&c, "/before", 200_000);
    barrage(&cl.mds_addr, 0x1234_5678);
    barrage(&cl.ost_addr, 0x8765_4321);
    round_trip(&c, "/before", 200_000);
    round_trip(&cl.client(None).unwrap(), "/after", 100_000);
    drop(c);
    cl.stop_and_check();
}

#[test]
fn hostile_input_before_authentication_is_refused() {
    let secret = ClusterSecret::generate(32).unwrap();
    let cl = Cluster::start(Some(&secret));
    let c = cl.client(Some(&secret)).unwrap();
    barrage(&cl.mds_addr, 0x5555);
    barrage(&cl.ost_addr, 0x6666);
    round_trip(&c, "/x", 100_000);
    drop(c);
    cl.stop_and_check();
}
