//! `ostd serve --metrics`: a real `ostd` process serves Prometheus text whose request and byte
//! counters move by exactly the I/O done, per operation, per client and per job (from the
//! handshake), and whose output parses as the text format.
#![allow(clippy::unwrap_used)]

use prost::Message;
use rustre_fabric::{Address, Bulk, ClientConn, ConnOptions, Reply, connect};
use rustre_metrics::check::{Sample, parse, value};
use rustre_proto::frame::FLAG_ERROR;
use rustre_proto::{Opcode, pb};
use rustre_testkit::Node;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const OSTD: &str = env!("CARGO_BIN_EXE_ostd");
const INDEX: u32 = 5;

/// Waits up to 20 s for a line starting with `prefix`; returns the rest.
fn wait_line(node: &Node, prefix: &str) -> String {
    node.wait_prefix(prefix, Duration::from_secs(20)).unwrap()
}

fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    if status == 200 {
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    }
    (status, body.to_string())
}

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, 200);
    parse(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"))
}

fn get(s: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or(0.0)
}

fn obj(id: u64) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef {
        ost_index: INDEX,
        object_id: id,
    })
}

fn ok<M: Message + Default>(r: Reply) -> M {
    assert!(
        r.header.flags & FLAG_ERROR == 0,
        "error reply: {:?}",
        pb::ErrorReply::decode(&r.body[..]).unwrap()
    );
    M::decode(&r.body[..]).unwrap()
}

fn conn(addr: &Address, client_id: u64, job_id: &str) -> Arc<dyn ClientConn> {
    let c = connect(
        addr,
        &ConnOptions {
            client_id,
            call_timeout: Duration::from_secs(20),
            ..ConnOptions::default()
        },
    )
    .unwrap();
    let hello = pb::HandshakeRequest {
        cluster_name: "mfs".into(),
        protocol_version: 1,
        client_id,
        role: pb::PeerRole::Client as i32,
        job_id: job_id.into(),
        ..Default::default()
    };
    let _: pb::HandshakeReply = ok(c.call(Opcode::Handshake as u16, &hello.encode_to_vec()).unwrap());
    c
}

fn write(c: &Arc<dyn ClientConn>, id: u64, offset: u64, data: &[u8]) {
    let crc = rustre_proto::crc::crc32c(data);
    let r = c
        .call_bulk(Opcode::OstWrite as u16, Bulk::Source(data), &mut |d| {
            pb::OstWriteRequest {
                object: obj(id),
                offset,
                length: data.len() as u64,
                bulk: Some(pb::BulkDescriptor {
                    addr: d.addr,
                    rkey: d.rkey,
                    len: d.len,
                    crc32c: crc,
                }),
                cap: None,
                more: Vec::new(),
            }
            .encode_to_vec()
        })
        .unwrap();
    let _: pb::OstWriteReply = ok(r);
}

fn read(c: &Arc<dyn ClientConn>, id: u64, offset: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let r = c
        .call_bulk(Opcode::OstRead as u16, Bulk::Sink(&mut buf), &mut |d| {
            pb::OstReadRequest {
                object: obj(id),
                offset,
                length: len as u64,
                bulk: Some(pb::BulkDescriptor {
                    addr: d.addr,
                    rkey: d.rkey,
                    len: d.len,
                    crc32c: 0,
                }),
                cap: None,
                reply_inline: false,
                more: Vec::new(),
            }
            .encode_to_vec()
        })
        .unwrap();
    if r.header.flags & FLAG_ERROR != 0 {
        return Err(pb::ErrorReply::decode(&r.body[..]).unwrap().errno);
    }
    let rep = pb::OstReadReply::decode(&r.body[..]).unwrap();
    buf.truncate(rep.bytes_read as usize);
    Ok(buf)
}

#[test]
fn counters_move_by_exactly_the_io_done_per_client_and_job() {
    let dir = tempfile::Builder::new()
        .prefix("rustre-ostd-metrics-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let dev = dir.path().join("ost5.img");
    let dev = dev.to_str().unwrap();
    let out = Command::new(OSTD)
        .args(["mkfs", "--index", "5", "--fsname", "mfs", dev, "--size", "64M"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let node = Node::spawn_command(
        Command::new(OSTD)
            .args(["serve", "--device", dev, "--listen", "tcp://127.0.0.1:0"])
            .args(["--metrics", "127.0.0.1:0", "--mmp-interval-ms", "50"])
            .args(["--workers", "2", "--buffers", "4", "--max-io", "1M"]),
    )
    .unwrap();
    let url = wait_line(&node, "ostd: metrics on http://");
    let maddr: SocketAddr = url.trim_end_matches("/metrics").parse().unwrap();
    let addr: Address = wait_line(&node, "ostd: serving OST5 on ").parse().unwrap();

    let before = scrape(maddr);
    assert_eq!(get(&before, "rustre_ost_info", &[("ost", "5"), ("fsname", "mfs")]), 1.0);
    assert_eq!(get(&before, "rustre_ost_active", &[]), 1.0);
    assert_eq!(get(&before, "rustre_ost_write_bytes_total", &[]), 0.0);

    // Client 0x15 of job fio.bob: 9 requests, one failing.
    let a = conn(&addr, 0x15, "fio.bob");
    let pre: pb::OstPrecreateReply = ok(a
        .call(
            Opcode::OstPrecreate as u16,
            &pb::OstPrecreateRequest {
                ost_index: INDEX,
                count: 4,
            }
            .encode_to_vec(),
        )
        .unwrap());
    let id = pre.first_id;
    let data: Vec<u8> = (0..(1 << 20) + 4096 + 777).map(|i| (i % 251) as u8).collect();
    write(&a, id, 0, &data[..1 << 20]);
    write(&a, id, 1 << 20, &data[1 << 20..(1 << 20) + 4096]);
    write(&a, id, (1 << 20) + 4096, &data[(1 << 20) + 4096..]);
    assert_eq!(read(&a, id, 0, 1 << 20).unwrap(), &data[..1 << 20]);
    assert_eq!(read(&a, id, 5, 100).unwrap(), &data[5..105]);
    let errno = read(&a, 999, 0, 4096).unwrap_err();
    let _: pb::OstGetattrReply = ok(a
        .call(
            Opcode::OstGetattr as u16,
            &pb::OstGetattrRequest {
                object: obj(id),
                cap: None,
            }
            .encode_to_vec(),
        )
        .unwrap());
    // Client 0x16 names no job: 2 requests.
    let b = conn(&addr, 0x16, "");
    write(&b, id + 1, 0, &data[..4096]);

    let s = scrape(maddr);
    let written = (data.len() + 4096) as f64;
    let read_bytes = ((1 << 20) + 100) as f64;
    assert_eq!(get(&s, "rustre_ost_write_bytes_total", &[]), written);
    assert_eq!(get(&s, "rustre_ost_read_bytes_total", &[]), read_bytes);
    for (op, n) in [
        ("handshake", 2.0),
        ("precreate", 1.0),
        ("write", 4.0),
        ("read", 3.0),
        ("getattr", 1.0),
        ("punch", 0.0),
    ] {
        assert_eq!(get(&s, "rustre_ost_requests_total", &[("op", op)]), n, "{op}");
        assert_eq!(
            get(&s, "rustre_ost_request_duration_seconds_count", &[("op", op)]),
            n,
            "{op}"
        );
    }
    let errno = errno.to_string();
    assert_eq!(
        get(&s, "rustre_ost_errors_total", &[("op", "read"), ("errno", &errno)]),
        1.0
    );
    let errors: f64 = s
        .iter()
        .filter(|x| x.name == "rustre_ost_errors_total")
        .map(|x| x.value)
        .sum();
    assert_eq!(errors, 1.0);
    let job = |name: &str, j: &str| get(&s, name, &[("job", j)]);
    assert_eq!(job("rustre_ost_job_requests_total", "fio.bob"), 9.0);
    assert_eq!(job("rustre_ost_job_write_bytes_total", "fio.bob"), data.len() as f64);
    assert_eq!(job("rustre_ost_job_read_bytes_total", "fio.bob"), read_bytes);
    assert_eq!(job("rustre_ost_job_requests_total", "unknown"), 2.0);
    for (op, n) in [
        ("handshake", 1.0),
        ("precreate", 1.0),
        ("write", 3.0),
        ("read", 3.0),
        ("getattr", 1.0),
    ] {
        let labels = [("job", "fio.bob"), ("op", op)];
        assert_eq!(get(&s, "rustre_ost_job_ops_total", &labels), n, "{op}");
    }
    assert_eq!(
        get(&s, "rustre_ost_job_ops_total", &[("job", "unknown"), ("op", "write")]),
        1.0
    );
    assert_eq!(job("rustre_ost_job_write_bytes_total", "unknown"), 4096.0);
    assert_eq!(job("rustre_ost_job_read_bytes_total", "unknown"), 0.0);
    let client = |name: &str, c: &str| get(&s, name, &[("client", c)]);
    assert_eq!(client("rustre_ost_client_requests_total", "0x15"), 9.0);
    assert_eq!(client("rustre_ost_client_write_bytes_total", "0x16"), 4096.0);
    assert_eq!(get(&s, "rustre_ost_connections", &[]), 2.0);
    assert_eq!(get(&s, "rustre_ost_requests_in_flight", &[]), 0.0);
    assert_eq!(get(&s, "rustre_ost_queue_depth", &[]), 0.0);
    assert_eq!(get(&s, "rustre_ost_bulk_buffers_free", &[]), 4.0);
    assert_eq!(get(&s, "rustre_ost_objects", &[]), 4.0);
    assert!(get(&s, "rustre_ost_free_bytes", &[]) < get(&s, "rustre_ost_capacity_bytes", &[]));
    a.close();
    b.close();

    assert_eq!(http(maddr, "GET /x HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(maddr, "DELETE /metrics HTTP/1.1\r\n\r\n").0, 405);

    let mut node = node;
    assert!(node.stop().unwrap().success());
    assert!(TcpStream::connect(maddr).is_err(), "the endpoint stops with the daemon");
}
