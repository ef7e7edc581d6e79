//! The whole service over the fabric: tcp on 127.0.0.1 and the in-process sim.
#![allow(clippy::unwrap_used)]

use prost::Message;
use rustre_fabric::{Address, Bulk, ClientConn, ConnOptions, Reply, connect};
use rustre_ostd::check::check;
use rustre_ostd::dev::{UringConfig, UringDevice};
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::service::{ServeConfig, Server};
use rustre_proto::frame::FLAG_ERROR;
use rustre_proto::{Opcode, pb};
use std::sync::Arc;
use std::time::Duration;

fn device(size: u64) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .prefix("rustre-ostd-svc-")
        .tempfile_in("/dev/shm")
        .unwrap();
    f.as_file().set_len(size).unwrap();
    let dev = open_device(f.path().to_str().unwrap());
    mkfs(&dev, &MkfsOptions::new("svcfs", 5)).unwrap();
    f
}

fn config(path: &str, listen: &str, node: &str) -> ServeConfig {
    let mut c = ServeConfig::new(path, listen.parse().unwrap());
    c.node = node.into();
    c.workers = 2;
    c.pool_buffers = 4;
    c.max_io = 1 << 20;
    c.queue = 8;
    c.mmp_interval = Duration::from_millis(100);
    c
}

/// The device file with one ring, for the test's own look at it.
fn open_device(path: &str) -> UringDevice {
    UringDevice::open(
        path,
        &UringConfig {
            rings: 1,
            ..UringConfig::default()
        },
    )
    .unwrap()
}

/// `ostd check` finds nothing wrong on the (stopped) server's device.
fn assert_clean(path: &str) {
    let dev = open_device(path);
    let r = check(&dev).unwrap();
    assert!(r.clean(), "{:?}", r.problems);
}

fn opts() -> ConnOptions {
    ConnOptions {
        client_id: 11,
        call_timeout: Duration::from_secs(20),
        ..ConnOptions::default()
    }
}

fn obj(id: u64) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef {
        ost_index: 5,
        object_id: id,
    })
}

fn ok<M: Message + Default>(r: Reply) -> M {
    if r.header.flags & FLAG_ERROR != 0 {
        panic!("error reply: {:?}", pb::ErrorReply::decode(&r.body[..]).unwrap());
    }
    M::decode(&r.body[..]).unwrap()
}

fn error(r: Reply) -> pb::ErrorReply {
    assert!(r.header.flags & FLAG_ERROR != 0, "expected an error reply");
    pb::ErrorReply::decode(&r.body[..]).unwrap()
}

fn call<M: Message>(c: &Arc<dyn ClientConn>, op: Opcode, m: &M) -> Reply {
    c.call(op as u16, &m.encode_to_vec()).unwrap()
}

fn write(c: &Arc<dyn ClientConn>, id: u64, offset: u64, data: &[u8], crc: Option<u32>) -> Reply {
    write_ranges(c, id, &[(offset, data.to_vec())], crc)
}

/// One write request carrying several ranges of object `id` (their bytes back to back).
fn write_ranges(c: &Arc<dyn ClientConn>, id: u64, ranges: &[(u64, Vec<u8>)], crc: Option<u32>) -> Reply {
    let payload: Vec<u8> = ranges.iter().flat_map(|r| r.1.iter().copied()).collect();
    let crc = crc.unwrap_or_else(|| rustre_proto::crc::crc32c(&payload));
    c.call_bulk(Opcode::OstWrite as u16, Bulk::Source(&payload), &mut |d| {
        pb::OstWriteRequest {
            object: obj(id),
            offset: ranges[0].0,
            length: ranges[0].1.len() as u64,
            bulk: Some(pb::BulkDescriptor {
                addr: d.addr,
                rkey: d.rkey,
                len: d.len,
                crc32c: crc,
            }),
            cap: None,
            more: ranges[1..]
                .iter()
                .map(|r| pb::ByteRange {
                    offset: r.0,
                    length: r.1.len() as u64,
                })
                .collect(),
        }
        .encode_to_vec()
    })
    .unwrap()
}

fn read(c: &Arc<dyn ClientConn>, id: u64, offset: u64, len: usize) -> Result<Vec<u8>, pb::ErrorReply> {
    read_ranges(c, id, &[(offset, len)], false)
}

/// A short read: the bytes in the reply (`reply_inline`), no bulk.
fn read_inline(c: &Arc<dyn ClientConn>, id: u64, offset: u64, len: u64) -> Result<Vec<u8>, pb::ErrorReply> {
    read_ranges(c, id, &[(offset, len as usize)], true)
}

/// One read request for several ranges of object `id`: their bytes back to back, as many as
/// came (in the reply with `inline`, else pushed into a bulk buffer).
fn read_ranges(
    c: &Arc<dyn ClientConn>,
    id: u64,
    ranges: &[(u64, usize)],
    inline: bool,
) -> Result<Vec<u8>, pb::ErrorReply> {
    let total: usize = ranges.iter().map(|r| r.1).sum();
    let request = |bulk: Option<pb::BulkDescriptor>| pb::OstReadRequest {
        object: obj(id),
        offset: ranges[0].0,
        length: ranges[0].1 as u64,
        bulk,
        cap: None,
        reply_inline: inline,
        more: ranges[1..]
            .iter()
            .map(|r| pb::ByteRange {
                offset: r.0,
                length: r.1 as u64,
            })
            .collect(),
    };
    let mut buf = vec![0u8; total];
    let r = if inline {
        call(c, Opcode::OstRead, &request(None))
    } else {
        c.call_bulk(Opcode::OstRead as u16, Bulk::Sink(&mut buf), &mut |d| {
            request(Some(pb::BulkDescriptor {
                addr: d.addr,
                rkey: d.rkey,
                len: d.len,
                crc32c: 0,
            }))
            .encode_to_vec()
        })
        .unwrap()
    };
    if r.header.flags & FLAG_ERROR != 0 {
        return Err(pb::ErrorReply::decode(&r.body[..]).unwrap());
    }
    let rep = pb::OstReadReply::decode(&r.body[..]).unwrap();
    if inline {
        assert_eq!(rep.data.len() as u64, rep.bytes_read);
        buf = rep.data;
    } else {
        assert!(rep.data.is_empty());
        buf.truncate(rep.bytes_read as usize);
    }
    assert_eq!(rep.crc32c, rustre_proto::crc::crc32c(&buf), "reply crc covers the data");
    Ok(buf)
}

fn exercise(listen: &str) {
    let f = device(64 << 20);
    let path = f.path().to_str().unwrap();
    let server = Server::start(config(path, listen, "node-a")).unwrap();
    let addr: Address = server.local_addr().clone();
    let c = connect(&addr, &opts()).unwrap();

    let hs: pb::HandshakeReply = ok(call(
        &c,
        Opcode::Handshake,
        &pb::HandshakeRequest {
            cluster_name: "svcfs".into(),
            protocol_version: 1,
            client_id: 11,
            role: pb::PeerRole::Client as i32,
            ..Default::default()
        },
    ));
    assert_eq!(hs.served_osts, vec![5]);
    let e = error(call(
        &c,
        Opcode::Handshake,
        &pb::HandshakeRequest {
            cluster_name: "other".into(),
            protocol_version: 1,
            client_id: 11,
            role: pb::PeerRole::Client as i32,
            ..Default::default()
        },
    ));
    assert_eq!((e.errno, e.field.as_str()), (libc::EINVAL, "handshake.cluster_name"));

    let pre: pb::OstPrecreateReply = ok(call(
        &c,
        Opcode::OstPrecreate,
        &pb::OstPrecreateRequest {
            ost_index: 5,
            count: 16,
        },
    ));
    assert_eq!((pre.first_id, pre.count), (1, 16));
    let id = pre.first_id;

    // Writes, aligned and not, read back exactly.
    let data: Vec<u8> = (0..(1 << 20) + 777).map(|i| (i % 253) as u8).collect();
    let w: pb::OstWriteReply = ok(write(&c, id, 0, &data[..1 << 20], None));
    assert_eq!(w.size, 1 << 20);
    let w: pb::OstWriteReply = ok(write(&c, id, 1 << 20, &data[1 << 20..], None));
    assert_eq!(w.size, data.len() as u64);
    assert_eq!(read(&c, id, 0, 1 << 20).unwrap(), &data[..1 << 20]);
    assert_eq!(
        read(&c, id, 1 << 20, 4096).unwrap(),
        &data[1 << 20..],
        "short read at end of object"
    );
    assert_eq!(read(&c, id, 5, 100_000).unwrap(), &data[5..100_005]);
    // Short reads carry their bytes in the reply; at most 64 KiB, and never with a bulk too.
    assert_eq!(read_inline(&c, id, 4000, 47008).unwrap(), &data[4000..51008]);
    assert_eq!(
        read_inline(&c, id, 1 << 20, 65536).unwrap(),
        &data[1 << 20..],
        "short at the end"
    );
    let e = read_inline(&c, id, 0, 65537).unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::EINVAL, "ost.read.length"));

    // Concurrent clients on their own objects.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let addr = addr.clone();
            s.spawn(move || {
                let c = connect(&addr, &opts()).unwrap();
                let d: Vec<u8> = (0..256 * 1024).map(|i| (i as u64 * (t + 3)) as u8).collect();
                for k in 0..4u64 {
                    let _: pb::OstWriteReply = ok(write(&c, 2 + t, k * d.len() as u64, &d, None));
                }
                for k in 0..4u64 {
                    assert_eq!(read(&c, 2 + t, k * d.len() as u64, d.len()).unwrap(), d);
                }
                c.close();
            });
        }
    });

    let ga: pb::OstGetattrReply = ok(call(
        &c,
        Opcode::OstGetattr,
        &pb::OstGetattrRequest {
            object: obj(id),
            cap: None,
        },
    ));
    assert_eq!(ga.size, data.len() as u64);
    assert_eq!(ga.blocks, (data.len() as u64).div_ceil(4096) * 8);
    let p: pb::OstPunchReply = ok(call(
        &c,
        Opcode::OstPunch,
        &pb::OstPunchRequest {
            object: obj(id),
            offset: 4096,
            length: 8192,
            cap: None,
        },
    ));
    assert_eq!(p.size, data.len() as u64);
    let back = read(&c, id, 0, 16384).unwrap();
    assert!(back[4096..12288].iter().all(|&b| b == 0));
    assert_eq!(&back[12288..], &data[12288..16384]);
    let p: pb::OstPunchReply = ok(call(
        &c,
        Opcode::OstPunch,
        &pb::OstPunchRequest {
            object: obj(id),
            offset: 100,
            length: u64::MAX,
            cap: None,
        },
    ));
    assert_eq!(p.size, 100);
    let sf: pb::OstStatfsReply = ok(call(&c, Opcode::OstStatfs, &pb::OstStatfsRequest { ost_index: 5 }));
    assert_eq!((sf.ost_index, sf.fsname.as_str(), sf.objects), (5, "svcfs", 16));
    assert!(sf.free_bytes < sf.total_bytes);
    let _: pb::OstSyncReply = ok(call(
        &c,
        Opcode::OstSync,
        &pb::OstSyncRequest {
            ost_index: 5,
            object: None,
        },
    ));
    let n: pb::OstNullReply = ok(call(
        &c,
        Opcode::OstNull,
        &pb::OstNullRequest {
            payload: b"ping".to_vec(),
        },
    ));
    assert_eq!(n.payload, b"ping");
    let _: pb::OstDestroyReply = ok(call(
        &c,
        Opcode::OstDestroy,
        &pb::OstDestroyRequest {
            object: obj(id),
            cap: None,
        },
    ));

    // Every bad request gets an error reply naming what is wrong.
    let e = error(call(
        &c,
        Opcode::OstGetattr,
        &pb::OstGetattrRequest {
            object: obj(id),
            cap: None,
        },
    ));
    assert_eq!(e.errno, libc::ENOENT);
    assert_eq!(read(&c, 999, 0, 10).unwrap_err().errno, libc::ENOENT);
    let e = error(write(&c, 3, 0, b"corrupted in flight", Some(0x1234_5678)));
    assert_eq!((e.errno, e.field.as_str()), (libc::EBADMSG, "ost.write.bulk.crc32c"));
    let e = error(call(
        &c,
        Opcode::OstGetattr,
        &pb::OstGetattrRequest {
            object: Some(pb::ObjectRef {
                ost_index: 9,
                object_id: 3,
            }),
            cap: None,
        },
    ));
    assert_eq!(
        (e.errno, e.field.as_str()),
        (libc::EINVAL, "ost.getattr.object.ost_index")
    );
    let e = error(call(
        &c,
        Opcode::OstDestroy,
        &pb::OstDestroyRequest {
            object: None,
            cap: None,
        },
    ));
    assert_eq!((e.errno, e.field.as_str()), (libc::EINVAL, "ost.destroy.object"));
    let e = error(call(
        &c,
        Opcode::OstPrecreate,
        &pb::OstPrecreateRequest { ost_index: 5, count: 0 },
    ));
    assert_eq!(e.field, "ost.precreate.count");
    let e = error(c.call(Opcode::OstWrite as u16, &[0xFF, 0xFF, 0xFF]).unwrap());
    assert_eq!(e.errno, libc::EPROTO);
    let e = error(c.call(Opcode::MdsNull as u16, &[]).unwrap());
    assert_eq!(e.errno, libc::EOPNOTSUPP);
    let e = error(c.call(999, &[]).unwrap());
    assert_eq!(e.errno, libc::ENOSYS);
    let big = vec![1u8; (1 << 20) + 1];
    let e = error(write(&c, 3, 0, &big, None));
    assert_eq!((e.errno, e.field.as_str()), (libc::EINVAL, "ost.write.length"));
    let e = error(
        c.call_bulk(Opcode::OstWrite as u16, Bulk::Source(b"abc"), &mut |d| {
            pb::OstWriteRequest {
                object: obj(3),
                offset: 0,
                length: 10,
                bulk: Some(pb::BulkDescriptor {
                    addr: d.addr,
                    rkey: d.rkey,
                    len: d.len,
                    crc32c: 0,
                }),
                cap: None,
                more: Vec::new(),
            }
            .encode_to_vec()
        })
        .unwrap(),
    );
    assert_eq!(e.field, "ost.write.bulk.len");

    // Random bodies for every OST opcode: each gets a reply, the server stays up.
    let mut x = 0x1234_5678_9ABC_DEF0u64;
    for op in 40u16..=48 {
        for _ in 0..30 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let body: Vec<u8> = (0..(x % 64)).map(|i| (x >> (i % 56)) as u8).collect();
            let r = c.call(op, &body).unwrap();
            if r.header.flags & FLAG_ERROR != 0 {
                let e = pb::ErrorReply::decode(&r.body[..]).unwrap();
                assert!(e.errno > 0 && !e.message.is_empty(), "{e:?}");
            }
        }
    }
    let n: pb::OstNullReply = ok(call(
        &c,
        Opcode::OstNull,
        &pb::OstNullRequest {
            payload: b"still".to_vec(),
        },
    ));
    assert_eq!(n.payload, b"still");

    // A second server on the same device is refused while this one serves, naming it.
    let second = Server::start(config(path, "tcp://127.0.0.1:0", "node-b"))
        .unwrap_err()
        .to_string();
    assert!(
        second.contains("node-a") && second.contains(&addr.to_string()),
        "{second}"
    );

    // A gathered write: ranges of one object in one request, two of them sharing a block.
    let mut model: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let _: pb::OstWriteReply = ok(write(&c, 15, 0, &model, None));
    let ranges = [
        (100u64, vec![1u8; 3000]),
        (3500, vec![2u8; 47008]),
        (200_000, vec![3u8; 10]),
        (310_000, vec![4u8; 5000]),
    ];
    // A bad crc changes nothing.
    let e = error(write_ranges(&c, 15, &ranges, Some(0xDEAD_BEEF)));
    assert_eq!((e.errno, e.field.as_str()), (libc::EBADMSG, "ost.write.bulk.crc32c"));
    assert!(read(&c, 15, 0, model.len()).unwrap() == model);
    let w: pb::OstWriteReply = ok(write_ranges(&c, 15, &ranges, None));
    assert_eq!(w.size, 315_000);
    model.resize(315_000, 0);
    for (off, bytes) in &ranges {
        model[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
    }
    assert!(
        read(&c, 15, 0, model.len()).unwrap() == model,
        "the ranges and the bytes between them"
    );
    // Ranges whose whole blocks do not fit one I/O buffer (1 MiB here) are refused, unwritten.
    let wide: Vec<(u64, Vec<u8>)> = (0..50u64)
        .map(|i| (400_000 + i * 40_960 + 4095, vec![9u8; 20_000]))
        .collect();
    let e = error(write_ranges(&c, 15, &wide, None));
    assert_eq!((e.errno, e.field.as_str()), (libc::EINVAL, "ost.write.more"));
    assert!(read(&c, 15, 0, 400_000).unwrap() == model);

    // A gathered read: the ranges' bytes back to back, in a push or in the reply.
    let want = |ranges: &[(u64, usize)]| -> Vec<u8> {
        ranges
            .iter()
            .flat_map(|&(o, l)| model[(o as usize).min(model.len())..(o as usize + l).min(model.len())].to_vec())
            .collect()
    };
    let strided: Vec<(u64, usize)> = (0..20u64).map(|i| (77 + i * 2 * 4700, 4700)).collect();
    assert!(read_ranges(&c, 15, &strided, false).unwrap() == want(&strided));
    let small = [(5u64, 10usize), (4090, 12), (9000, 4096)];
    assert!(read_ranges(&c, 15, &small, true).unwrap() == want(&small));
    // The range cut by the end of the object is the last with bytes; later ranges bring none.
    let past = [(0u64, 1000usize), (314_000, 5000), (320_000, 10), (400_000, 3)];
    let got = read_ranges(&c, 15, &past, false).unwrap();
    assert_eq!(got.len(), 1000 + 1000);
    assert!(got == want(&past[..2]));
    // Too wide for one I/O buffer: refused.
    let wide: Vec<(u64, usize)> = wide.iter().map(|r| (r.0, r.1.len())).collect();
    let e = read_ranges(&c, 15, &wide, false).unwrap_err();
    assert_eq!((e.errno, e.field.as_str()), (libc::EINVAL, "ost.read.more"));
    let after: pb::OstGetattrReply = ok(call(
        &c,
        Opcode::OstGetattr,
        &pb::OstGetattrRequest {
            object: obj(15),
            cap: None,
        },
    ));
    assert_eq!(after.size, 315_000);

    c.close();
    server.shutdown().unwrap();
    assert_clean(path);
    // Cleanly stopped: the next start is immediate and sees the data.
    let server = Server::start(config(path, listen, "node-b")).unwrap();
    let c = connect(server.local_addr(), &opts()).unwrap();
    assert_eq!(read(&c, 2, 0, 1000).unwrap().len(), 1000);
    c.close();
    server.shutdown().unwrap();
}

#[test]
fn serves_every_ost_operation_over_tcp() {
    exercise("tcp://127.0.0.1:0");
}

#[test]
fn serves_every_ost_operation_over_sim() {
    exercise(&format!("sim://ostd-{}", std::process::id()));
}

#[test]
fn a_server_whose_device_is_taken_over_stops_serving() {
    let f = device(16 << 20);
    let path = f.path().to_str().unwrap();
    let server = Server::start(config(path, "tcp://127.0.0.1:0", "node-a")).unwrap();
    let c = connect(server.local_addr(), &opts()).unwrap();
    let pre: pb::OstPrecreateReply = ok(call(
        &c,
        Opcode::OstPrecreate,
        &pb::OstPrecreateRequest { ost_index: 5, count: 1 },
    ));
    // Another node overwrites the MMP block.
    let dev = open_device(path);
    let intruder = rustre_ostd::format::MmpBlock {
        seq: 42,
        interval_ms: 100,
        node: "intruder".into(),
        ..Default::default()
    };
    // The intruder keeps its claim (one write may race with an update of the server).
    let mut why = None;
    for _ in 0..100 {
        rustre_ostd::format::write_mmp(&dev, &intruder).unwrap();
        why = server.wait_timeout(Duration::from_millis(50));
        if why.is_some() {
            break;
        }
    }
    let why = why.expect("server must stop");
    assert!(why.contains("intruder"), "{why}");
    assert!(server.store().is_fenced());
    assert!(
        server.store().write(pre.first_id, 0, b"x").is_err(),
        "no change after the fence"
    );
    server.shutdown().unwrap();
}

/// A connection with one request at a time is served by its own receiving thread; one with many
/// in flight has them handed to the workers and served side by side, every byte intact.
#[test]
fn one_request_at_a_time_is_served_in_place_and_many_go_to_the_workers() {
    let f = device(64 << 20);
    let path = f.path().to_str().unwrap();
    let mut cfg = config(path, "tcp://127.0.0.1:0", "node-a");
    cfg.workers = 4;
    cfg.pool_buffers = 8;
    cfg.queue = 64;
    let server = Server::start(cfg).unwrap();
    let c = connect(server.local_addr(), &opts()).unwrap();
    let pre: pb::OstPrecreateReply = ok(call(
        &c,
        Opcode::OstPrecreate,
        &pb::OstPrecreateRequest { ost_index: 5, count: 9 },
    ));
    let first = pre.first_id;
    let block = |id: u64, k: u64| -> Vec<u8> { (0..65536u64).map(|i| (i * 7 + id * 13 + k) as u8).collect() };
    // One at a time: the client waits for each reply before the next request.
    for k in 0..20 {
        let _: pb::OstWriteReply = ok(write(&c, first, k << 16, &block(first, k), None));
    }
    let sequential = server.served_in_place();
    assert!(
        sequential > 10,
        "{sequential} of 21 requests made one at a time served in place"
    );
    // Eight threads on the same connection, sixteen writes each, then every byte read back.
    std::thread::scope(|s| {
        for t in 1..9u64 {
            let c = Arc::clone(&c);
            s.spawn(move || {
                for k in 0..16 {
                    let _: pb::OstWriteReply = ok(write(&c, first + t, k << 16, &block(first + t, k), None));
                }
            });
        }
    });
    let concurrent = server.served_in_place() - sequential;
    assert!(concurrent < 128, "all 128 overlapping requests were served in place");
    for t in 0..9u64 {
        for k in 0..if t == 0 { 20 } else { 16 } {
            let got = read(&c, first + t, k << 16, 1 << 16).unwrap();
            assert!(
                got == block(first + t, k),
                "object {} block {k} read back differs",
                first + t
            );
        }
    }
    c.close();
    server.shutdown().unwrap();
    assert_clean(path);
}
