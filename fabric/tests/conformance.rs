//! Every fabric property on every provider that runs on this machine: `tcp` over loopback and `sim`
//! on an isolated network per test. (The verbs provider instantiates the same functions from
//! `common` where an RDMA device exists.)
#![allow(clippy::unwrap_used)]

mod common;

use rustre_fabric::Address;
use std::io::{Read, Write};
use std::time::Duration;

fn tcp() -> Address {
    "tcp://127.0.0.1:0".parse().unwrap()
}

macro_rules! on_every_provider {
    ($($name:ident),* $(,)?) => {
        mod tcp_provider {
            $(#[test] fn $name() { super::common::$name(&super::tcp); })*
        }
        mod sim_provider {
            use rustre_fabric::sim::Network;
            $(#[test] fn $name() {
                let net = Network::new(0x5eed);
                let n = std::sync::atomic::AtomicU32::new(0);
                let mk = || net.address(&format!("srv{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
                super::common::$name(&mk);
            })*
        }
    };
}

on_every_provider!(
    reply_ordering,
    many_outstanding_rpcs,
    large_and_zero_bulk,
    concurrent_bulk_both_ways,
    client_dies_mid_bulk,
    server_dies_mid_call,
    credit_exhaustion,
    call_timeout,
    bulk_outside_descriptor_refused,
    revoked_rkey_refused,
);

/// Sends `bytes` on a raw socket, expects the server to close it and to report `expect`, then checks
/// that a proper client is still served.
fn raw_bytes_close_the_connection(bytes: &[u8], expect: &str) {
    let server = common::TestServer::start(&tcp(), &common::opts(), 2);
    let Address::Tcp(sa) = server.addr else {
        panic!("tcp address expected")
    };
    sent_bytes_close_the_connection(&server, std::net::TcpStream::connect(sa).unwrap(), bytes, expect);
}

/// Sends `bytes` on `raw`, a connection to `server`; the rest as [`raw_bytes_close_the_connection`].
fn sent_bytes_close_the_connection(
    server: &common::TestServer,
    mut raw: std::net::TcpStream,
    bytes: &[u8],
    expect: &str,
) {
    raw.write_all(bytes).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    match raw.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection not closed: {other:?}"),
    }
    match server.event(Duration::from_secs(10)) {
        common::Event::RecvError(e) => assert!(e.contains(expect) && e.contains("127.0.0.1"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    let client = rustre_fabric::connect(&server.addr, &common::opts()).unwrap();
    assert_eq!(client.call(common::OP_ECHO, b"after").unwrap().body, b"after");
}

#[test]
fn tcp_garbage_frame_closes_only_that_connection() {
    raw_bytes_close_the_connection(&[0xde; 64], "bad frame magic");
}

#[test]
fn tcp_oversized_frame_closes_only_that_connection() {
    let h = rustre_proto::FrameHeader::request(1, 1, 1, rustre_fabric::ConnOptions::default().max_body + 1);
    raw_bytes_close_the_connection(&h.encode(), "exceeds the limit");
}

#[test]
fn tcp_request_before_hello_is_refused() {
    let h = rustre_proto::FrameHeader::request(common::OP_ECHO, 1, 1, 2);
    raw_bytes_close_the_connection(&rustre_proto::frame::encode_frame(&h, b"hi"), "HELLO");
}

/// A raw client that has done the `HELLO` exchange (fabric opcode 1) asking for `credits`.
fn raw_client(addr: &Address, credits: u32) -> std::net::TcpStream {
    let Address::Tcp(sa) = addr else {
        panic!("tcp address expected")
    };
    hello(std::net::TcpStream::connect(sa).unwrap(), credits)
}

/// Does the `HELLO` exchange on `raw`.
fn hello(mut raw: std::net::TcpStream, credits: u32) -> std::net::TcpStream {
    use rustre_proto::frame::{FLAG_FABRIC, VERSION, encode_frame};
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = credits.to_le_bytes().to_vec();
    body.extend_from_slice(&(1u32 << 20).to_le_bytes());
    let hello = rustre_proto::FrameHeader {
        version: VERSION,
        opcode: 1,
        flags: FLAG_FABRIC,
        xid: 0,
        client_id: 5,
        body_len: 8,
    };
    raw.write_all(&encode_frame(&hello, &body)).unwrap();
    let mut reply = [0u8; 40];
    raw.read_exact(&mut reply).unwrap();
    raw
}

fn read_frame(raw: &mut std::net::TcpStream) -> (rustre_proto::FrameHeader, Vec<u8>) {
    let mut h = [0u8; 32];
    raw.read_exact(&mut h).unwrap();
    let h = rustre_proto::FrameHeader::decode(&h, 1 << 20).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    raw.read_exact(&mut body).unwrap();
    (h, body)
}

#[test]
fn tcp_server_pull_times_out_when_the_client_never_answers() {
    let sopts = rustre_fabric::ConnOptions {
        call_timeout: Duration::from_millis(200),
        ..common::opts()
    };
    let server = common::TestServer::start(&tcp(), &sopts, 1);
    let mut raw = raw_client(&server.addr, 4);
    let desc = rustre_fabric::BulkDesc {
        addr: 0,
        rkey: 77,
        len: 4096,
    };
    let req = rustre_proto::FrameHeader::request(common::OP_PULL, 9, 5, 44);
    raw.write_all(&rustre_proto::frame::encode_frame(
        &req,
        &common::desc_body(desc, 0, 4096, 0),
    ))
    .unwrap();
    // The server asks for the bytes (a fabric frame) …
    let (get, _) = read_frame(&mut raw);
    assert_ne!(get.flags & rustre_proto::frame::FLAG_FABRIC, 0);
    // … gets none, and replies with the timeout instead of waiting forever.
    let (reply, text) = read_frame(&mut raw);
    assert_eq!(
        (reply.xid, reply.flags & rustre_proto::frame::FLAG_ERROR != 0),
        (9, true)
    );
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("timed out"), "{text}");
}

#[test]
fn tcp_credit_overrun_closes_the_connection() {
    let sopts = rustre_fabric::ConnOptions {
        credits: 4,
        ..common::opts()
    };
    let listener = rustre_fabric::listen(&tcp(), &sopts).unwrap();
    let Address::Tcp(sa) = listener.local_addr() else {
        panic!("tcp address expected")
    };
    let raw = std::net::TcpStream::connect(sa).unwrap();
    let conn = listener.accept().unwrap();
    let mut raw = hello(raw, 4);
    // Nobody serves: the fifth queued request exceeds the bound.
    for xid in 1..=5u64 {
        let h = rustre_proto::FrameHeader::request(common::OP_ECHO, xid, 5, 0);
        raw.write_all(&h.encode()).unwrap();
    }
    let mut buf = [0u8; 16];
    match raw.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection not closed: {other:?}"),
    }
    for _ in 0..4 {
        conn.recv().unwrap();
    }
    let e = conn.recv().unwrap_err().to_string();
    assert!(e.contains("credits") && e.contains("requests queued"), "{e}");
    listener.shutdown();
}

#[test]
fn tcp_connect_fails_cleanly_on_silence_and_refusal() {
    // A socket that accepts but never answers the HELLO: connect gives up after connect_timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::Tcp(silent.local_addr().unwrap());
    let opts = rustre_fabric::ConnOptions {
        connect_timeout: Duration::from_millis(200),
        ..common::opts()
    };
    let t = std::time::Instant::now();
    let r = rustre_fabric::connect(&addr, &opts);
    assert!(
        matches!(r, Err(rustre_fabric::FabricError::Timeout { .. })),
        "{:?}",
        r.err()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // Nothing listening: a clear error naming the address.
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let e = rustre_fabric::connect(&addr, &opts).err().unwrap().to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn tcp_client_stalling_mid_chunk_cannot_hang_a_server_pull() {
    use rustre_proto::frame::{FLAG_FABRIC, FLAG_REPLY, VERSION};
    let sopts = rustre_fabric::ConnOptions {
        call_timeout: Duration::from_millis(200),
        ..common::opts()
    };
    let server = common::TestServer::start(&tcp(), &sopts, 1);
    let mut raw = raw_client(&server.addr, 4);
    let desc = rustre_fabric::BulkDesc {
        addr: 0,
        rkey: 77,
        len: 4096,
    };
    let req = rustre_proto::FrameHeader::request(common::OP_PULL, 9, 5, 44);
    raw.write_all(&rustre_proto::frame::encode_frame(
        &req,
        &common::desc_body(desc, 0, 4096, 0),
    ))
    .unwrap();
    let (get, _) = read_frame(&mut raw);
    // Announce the 4096 bytes, send 100 of them, then stall.
    let data = rustre_proto::FrameHeader {
        version: VERSION,
        opcode: 3,
        flags: FLAG_FABRIC | FLAG_REPLY,
        xid: get.xid,
        client_id: 5,
        body_len: 4096,
    };
    raw.write_all(&data.encode()).unwrap();
    raw.write_all(&[1u8; 100]).unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 64];
    match raw.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection not closed: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn tcp_server_stalling_mid_chunk_cannot_hang_a_client_call() {
    use rustre_proto::frame::{FLAG_FABRIC, FLAG_REPLY, VERSION, encode_frame};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::Tcp(l.local_addr().unwrap());
    let fake = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let (hello, _) = read_frame(&mut s);
        let mut body = 4u32.to_le_bytes().to_vec();
        body.extend_from_slice(&(1u32 << 20).to_le_bytes());
        let ack = rustre_proto::FrameHeader {
            version: VERSION,
            opcode: 1,
            flags: FLAG_FABRIC | FLAG_REPLY,
            xid: hello.xid,
            client_id: 0,
            body_len: 8,
        };
        s.write_all(&encode_frame(&ack, &body)).unwrap();
        let (_req, desc) = read_frame(&mut s);
        // BULK_PUT of 4096 bytes at offset 0 into the caller's sink; only 100 arrive.
        let mut prefix = desc[0..4].to_vec();
        prefix.extend_from_slice(&1u32.to_le_bytes());
        prefix.extend_from_slice(&0u64.to_le_bytes());
        let put = rustre_proto::FrameHeader {
            version: VERSION,
            opcode: 4,
            flags: FLAG_FABRIC,
            xid: 1,
            client_id: 0,
            body_len: 16 + 4096,
        };
        s.write_all(&put.encode()).unwrap();
        s.write_all(&prefix).unwrap();
        s.write_all(&[9u8; 100]).unwrap();
        // Stall until the client gives up and closes.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let opts = rustre_fabric::ConnOptions {
        call_timeout: Duration::from_millis(200),
        ..common::opts()
    };
    let client = rustre_fabric::connect(&addr, &opts).unwrap();
    let mut sink = vec![0u8; 4096];
    let t = std::time::Instant::now();
    let r = client.call_bulk(common::OP_PUSH, rustre_fabric::Bulk::Sink(&mut sink), &mut |d| {
        common::desc_body(d, 0, 4096, 0)
    });
    assert!(r.is_err(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(client);
    fake.join().unwrap();
}

#[test]
fn tcp_client_that_stops_reading_is_closed_not_waited_for() {
    let sopts = rustre_fabric::ConnOptions {
        call_timeout: Duration::from_millis(200),
        max_body: 4 << 20,
        ..common::opts()
    };
    let server = common::TestServer::start(&tcp(), &sopts, 1);
    let mut raw = raw_client(&server.addr, 4);
    // Ask for a 64 MiB push (more than both socket buffers hold) and never read it.
    let desc = rustre_fabric::BulkDesc {
        addr: 0,
        rkey: 77,
        len: 64 << 20,
    };
    let req = rustre_proto::FrameHeader::request(common::OP_PUSH, 9, 5, 44);
    raw.write_all(&rustre_proto::frame::encode_frame(
        &req,
        &common::desc_body(desc, 0, 64 << 20, 1),
    ))
    .unwrap();
    // The server's sends stop making progress; it gives up on the connection instead of waiting.
    match server.event(Duration::from_secs(20)) {
        common::Event::PushFailed(e) => assert!(e.contains("send") || e.contains("Closed"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    drop(raw);
}

/// A `BULK_EAGER` frame (fabric opcode 6): `data` for `rkey`, sent with request `xid`.
fn eager_frame(xid: u64, rkey: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    use rustre_proto::frame::{FLAG_FABRIC, VERSION, encode_frame};
    let h = rustre_proto::FrameHeader {
        version: VERSION,
        opcode: 6,
        flags: FLAG_FABRIC,
        xid,
        client_id: 5,
        body_len: (16 + data.len()) as u32,
    };
    let mut body = rkey.to_le_bytes().to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(data);
    encode_frame(&h, &body)
}

fn pull_request(xid: u64, rkey: u32, offset: u64, n: u64) -> Vec<u8> {
    let desc = rustre_fabric::BulkDesc {
        addr: 0,
        rkey,
        len: 4096,
    };
    let req = rustre_proto::FrameHeader::request(common::OP_PULL, xid, 5, 44);
    rustre_proto::frame::encode_frame(&req, &common::desc_body(desc, offset, n, 0))
}

#[test]
fn tcp_eager_bytes_serve_a_pull_without_a_round_trip_until_the_reply() {
    let server = common::TestServer::start(&tcp(), &common::opts(), 1);
    let mut raw = raw_client(&server.addr, 4);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    // The bytes come ahead of the request: the pull (of a part of them) is answered at once,
    // the reply being the very next frame.
    raw.write_all(&eager_frame(9, 77, 0, &data)).unwrap();
    raw.write_all(&pull_request(9, 77, 100, 1000)).unwrap();
    let (reply, body) = read_frame(&mut raw);
    assert_eq!((reply.xid, reply.flags), (9, rustre_proto::frame::FLAG_REPLY));
    assert_eq!(body, rustre_proto::crc::crc32c(&data[100..1100]).to_le_bytes());
    // Replying dropped them: the same key in the next request is asked for with a BULK_GET.
    raw.write_all(&pull_request(10, 77, 0, 16)).unwrap();
    let (get, _) = read_frame(&mut raw);
    assert_eq!((get.opcode, get.flags), (2, rustre_proto::frame::FLAG_FABRIC));
}

#[test]
fn tcp_eager_pull_beyond_the_bytes_asks_the_client() {
    let server = common::TestServer::start(&tcp(), &common::opts(), 1);
    let mut raw = raw_client(&server.addr, 4);
    raw.write_all(&eager_frame(9, 77, 0, &[1u8; 100])).unwrap();
    raw.write_all(&pull_request(9, 77, 50, 100)).unwrap();
    let (get, _) = read_frame(&mut raw);
    assert_eq!(get.opcode, 2, "bytes 100..150 were not sent eagerly: BULK_GET expected");
}

#[test]
fn tcp_eager_frames_beyond_the_credits_close_the_connection() {
    let mut frames = Vec::new();
    // The server grants at most `common::opts().credits`; none of these has a request.
    for i in 0..=common::opts().credits {
        frames.extend_from_slice(&eager_frame(u64::from(i) + 1, 1000 + i, 0, b"x"));
    }
    raw_bytes_after_hello_close_the_connection(&frames, "eager transfers outstanding");
}

#[test]
fn tcp_oversized_or_misplaced_eager_frames_close_the_connection() {
    raw_bytes_after_hello_close_the_connection(&eager_frame(1, 1, 0, &vec![0u8; 64 * 1024 + 1]), "bulk_eager.len");
    raw_bytes_after_hello_close_the_connection(&eager_frame(1, 1, 8, b"x"), "bulk_eager.offset");
}

/// As [`raw_bytes_close_the_connection`], after a proper `HELLO`.
fn raw_bytes_after_hello_close_the_connection(bytes: &[u8], expect: &str) {
    let server = common::TestServer::start(&tcp(), &common::opts(), 2);
    let raw = raw_client(&server.addr, common::opts().credits);
    sent_bytes_close_the_connection(&server, raw, bytes, expect);
}
