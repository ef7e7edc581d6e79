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
    let mut raw = std::net::TcpStream::connect(sa).unwrap();
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
