//! Test support: a minimal OST responder (precreate, statfs, destroy only — confined to tests,
//! standing in for ostd where a test needs an MDS with OSTs) and a small typed MDS client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use rustre_fabric::{Address, ClientConn, ConnOptions, Listener};
use rustre_proto::{Opcode, frame::FLAG_ERROR, pb};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A fake OST answering Handshake, Precreate, Statfs, Destroy.
pub struct FakeOst {
    pub addr: Address,
    listener: Arc<dyn Listener>,
    pub next_id: Arc<AtomicU64>,
    pub destroyed: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl FakeOst {
    pub fn start(listen: &str, index: u32) -> FakeOst {
        let listener = rustre_fabric::listen(&listen.parse().unwrap(), &ConnOptions::default()).unwrap();
        let addr = listener.local_addr();
        let next_id = Arc::new(AtomicU64::new(100));
        let destroyed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, n, d, s) = (listener.clone(), next_id.clone(), destroyed.clone(), stop.clone());
        let join = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while let Ok(c) = l.accept() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let (n, d) = (n.clone(), d.clone());
                let c2 = c.clone();
                conns.push((
                    c2,
                    std::thread::spawn(move || {
                        while let Ok(inc) = c.recv() {
                            let op = inc.header.opcode;
                            let body = if op == Opcode::Handshake.as_u16() {
                                pb::HandshakeReply {
                                    role: pb::PeerRole::Ost as i32,
                                    served_osts: vec![index],
                                    ..Default::default()
                                }
                                .encode_to_vec()
                            } else if op == Opcode::OstPrecreate.as_u16() {
                                let r = pb::OstPrecreateRequest::decode(&inc.body[..]).unwrap();
                                let first = n.fetch_add(u64::from(r.count), Ordering::SeqCst);
                                pb::OstPrecreateReply {
                                    first_id: first,
                                    count: r.count,
                                }
                                .encode_to_vec()
                            } else if op == Opcode::OstStatfs.as_u16() {
                                pb::OstStatfsReply {
                                    ost_index: index,
                                    total_bytes: 1 << 40,
                                    free_bytes: (1 << 39) + u64::from(index),
                                    objects: 0,
                                    free_objects: 1 << 30,
                                    ..Default::default()
                                }
                                .encode_to_vec()
                            } else if op == Opcode::OstDestroy.as_u16() {
                                let r = pb::OstDestroyRequest::decode(&inc.body[..]).unwrap();
                                d.lock().unwrap().push(r.object.unwrap().object_id);
                                Vec::new()
                            } else {
                                let e = pb::ErrorReply {
                                    errno: 38,
                                    message: "not in the test OST".into(),
                                    field: String::new(),
                                };
                                let _ = c.reply(&inc.header, op, &e.encode_to_vec(), true);
                                continue;
                            };
                            if c.reply(&inc.header, op, &body, false).is_err() {
                                break;
                            }
                        }
                    }),
                ));
            }
            for (c, h) in conns {
                c.close();
                let _ = h.join();
            }
        });
        FakeOst {
            addr,
            listener,
            next_id,
            destroyed,
            stop,
            join: Some(join),
        }
    }
}

impl Drop for FakeOst {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.listener.shutdown();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// A typed MDS client.
pub struct Mds {
    pub conn: Arc<dyn ClientConn>,
}

pub fn root() -> Option<pb::Credentials> {
    Some(pb::Credentials {
        uid: 0,
        gid: 0,
        groups: vec![],
    })
}

pub fn fid(ino: u64) -> Option<pb::Fid> {
    Some(pb::Fid { ino, generation: 0 })
}

impl Mds {
    pub fn connect(addr: &Address, client_id: u64) -> Mds {
        let opts = ConnOptions {
            client_id,
            ..ConnOptions::default()
        };
        Mds {
            conn: rustre_fabric::connect(addr, &opts).unwrap(),
        }
    }

    /// A typed call; a transport failure comes back as an `ErrorReply` with errno 0.
    pub fn call<R: Message + Default>(&self, op: Opcode, req: &impl Message) -> Result<R, pb::ErrorReply> {
        let r = match self.conn.call(op.as_u16(), &req.encode_to_vec()) {
            Ok(r) => r,
            Err(e) => {
                return Err(pb::ErrorReply {
                    errno: 0,
                    message: format!("transport: {e}"),
                    field: String::new(),
                });
            }
        };
        if r.header.flags & FLAG_ERROR != 0 {
            return Err(pb::ErrorReply::decode(&r.body[..]).expect("error body"));
        }
        Ok(R::decode(&r.body[..]).expect("reply body"))
    }

    pub fn create(&self, parent: u64, name: &str) -> Result<pb::MdsCreateReply, pb::ErrorReply> {
        self.call(
            Opcode::MdsCreate,
            &pb::MdsCreateRequest {
                creds: root(),
                parent: fid(parent),
                name: name.into(),
                walk: Vec::new(),
                mode: 0o644,
                flags: (pb::OpenFlag::Create as u32) | (pb::OpenFlag::Excl as u32) | (pb::OpenFlag::Write as u32),
                layout: None,
            },
        )
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<pb::Attr, pb::ErrorReply> {
        self.call::<pb::MdsLookupReply>(
            Opcode::MdsLookup,
            &pb::MdsLookupRequest {
                creds: root(),
                parent: fid(parent),
                name: name.into(),
                more: Vec::new(),
            },
        )
        .map(|r| r.attr.unwrap())
    }

    pub fn mkdir(&self, parent: u64, name: &str) -> Result<pb::Attr, pb::ErrorReply> {
        self.call::<pb::MdsMkdirReply>(
            Opcode::MdsMkdir,
            &pb::MdsMkdirRequest {
                creds: root(),
                parent: fid(parent),
                name: name.into(),
                walk: Vec::new(),
                mode: 0o755,
                default_layout: None,
            },
        )
        .map(|r| r.attr.unwrap())
    }

    pub fn unlink(&self, parent: u64, name: &str) -> Result<(), pb::ErrorReply> {
        self.call::<pb::MdsUnlinkReply>(
            Opcode::MdsUnlink,
            &pb::MdsUnlinkRequest {
                creds: root(),
                parent: fid(parent),
                name: name.into(),
                walk: Vec::new(),
            },
        )
        .map(|_| ())
    }

    pub fn rename(&self, sp: u64, sn: &str, dp: u64, dn: &str) -> Result<(), pb::ErrorReply> {
        self.call::<pb::MdsRenameReply>(
            Opcode::MdsRename,
            &pb::MdsRenameRequest {
                creds: root(),
                src_parent: fid(sp),
                src_name: sn.into(),
                dst_parent: fid(dp),
                dst_name: dn.into(),
                flags: 0,
                src_walk: Vec::new(),
                dst_walk: Vec::new(),
            },
        )
        .map(|_| ())
    }

    pub fn readdir_all(&self, dir: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut cookie = 0;
        loop {
            let r: pb::MdsReaddirReply = self
                .call(
                    Opcode::MdsReaddir,
                    &pb::MdsReaddirRequest {
                        creds: root(),
                        dir: fid(dir),
                        cookie,
                        max_entries: 100,
                    },
                )
                .unwrap();
            out.extend(r.entries.into_iter().map(|e| String::from_utf8(e.name).unwrap()));
            if r.eof {
                break;
            }
            cookie = r.next_cookie;
        }
        out.sort();
        out
    }
}
