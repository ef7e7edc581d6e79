//! The fabric conformance properties on the verbs provider, plus verbs-only checks (fragmented
//! frames, zero-copy pools, no-device behaviour).
//!
//! They need an RDMA device with an IP address: `ci/rxe` provides soft-RoCE (rxe0 on dummy0) and
//! exports its address as `RUSTRE_RXE_ADDR`; elsewhere set `RUSTRE_VERBS_ADDR` to an address of an
//! RDMA-capable interface. Without either, each test prints `skipped: …` and returns, unless
//! `RUSTRE_REQUIRE_RDMA=1` (set by the rxe lane), which turns a skip into a failure.
#![allow(clippy::unwrap_used)]

mod common;

use rustre_fabric::{Address, BufferPool, Bulk, ConnOptions, FabricError, Listener, ServerConn};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

fn require_rdma() -> bool {
    std::env::var("RUSTRE_REQUIRE_RDMA").is_ok_and(|v| v == "1")
}

/// The IP address to run verbs tests on, or `None` (after saying why) when they must skip.
fn rdma_ip() -> Option<IpAddr> {
    if !rustre_fabric::verbs::devices_present() {
        assert!(
            !require_rdma(),
            "RUSTRE_REQUIRE_RDMA=1 but ibv_get_device_list finds no RDMA device"
        );
        eprintln!("skipped: no RDMA device (ibv_get_device_list found none; run under ci/rxe)");
        return None;
    }
    let var = std::env::var("RUSTRE_VERBS_ADDR").or_else(|_| std::env::var("RUSTRE_RXE_ADDR"));
    match var.ok().and_then(|v| v.parse::<IpAddr>().ok()) {
        Some(ip) => Some(ip),
        None => {
            assert!(
                !require_rdma(),
                "RUSTRE_REQUIRE_RDMA=1 but neither RUSTRE_VERBS_ADDR nor RUSTRE_RXE_ADDR is an IP"
            );
            eprintln!("skipped: no RDMA device address (set RUSTRE_VERBS_ADDR to the IP of an RDMA interface)");
            None
        }
    }
}

macro_rules! on_verbs {
    ($($name:ident),* $(,)?) => {
        mod conformance {
            $(#[test] fn $name() {
                let Some(ip) = super::rdma_ip() else { return };
                let mk = move || rustre_fabric::Address::Verbs(std::net::SocketAddr::new(ip, 0));
                super::common::$name(&mk);
            })*
        }
    };
}

on_verbs!(
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

#[test]
fn without_a_device_verbs_says_no_device_and_never_panics() {
    if rustre_fabric::verbs::devices_present() {
        eprintln!("skipped: this machine has an RDMA device");
        return;
    }
    let addr: Address = "verbs://127.0.0.1:9".parse().unwrap();
    match rustre_fabric::connect(&addr, &common::opts()) {
        Err(FabricError::NoDevice(why)) => assert!(!why.is_empty()),
        Err(e) => panic!("expected NoDevice, got {e}"),
        Ok(_) => panic!("connected over verbs without a device"),
    }
    assert!(matches!(
        rustre_fabric::listen(&addr, &common::opts()),
        Err(FabricError::NoDevice(_))
    ));
    // `auto` falls back to tcp: a tcp listener, not a verbs error.
    let auto: Address = "auto://127.0.0.1:0".parse().unwrap();
    let l = rustre_fabric::listen(&auto, &common::opts()).unwrap();
    assert_eq!(l.local_addr().scheme(), "tcp");
    l.shutdown();
}

/// Frames larger than one receive buffer travel as fragments and arrive whole; the size limit holds.
#[test]
fn large_frames_are_fragmented_and_bounded() {
    let Some(ip) = rdma_ip() else { return };
    let opts = ConnOptions {
        max_body: 1 << 20,
        ..common::opts()
    };
    let server = common::TestServer::start(&Address::Verbs(SocketAddr::new(ip, 0)), &opts, 2);
    let client = rustre_fabric::connect(&server.addr, &opts).unwrap();
    for n in [0usize, 1, 16 * 1024 - 32, 16 * 1024, 100_003, 1 << 20] {
        let body = common::pattern(n as u64, n);
        let r = client.call(common::OP_ECHO, &body).unwrap();
        assert!(r.body == body, "echo of {n} bytes differs");
    }
    let r = client.call(common::OP_ECHO, &vec![0u8; (1 << 20) + 1]);
    assert!(matches!(r, Err(FabricError::TooLarge { .. })), "{r:?}");
    assert_eq!(client.call(common::OP_ECHO, b"ok").unwrap().body, b"ok");
    drop(client);
    drop(server);
}

/// Pulls and pushes into a registered pool buffer (zero-copy) carry the right bytes.
#[test]
fn registered_pool_transfers_are_zero_copy_and_correct() {
    let Some(ip) = rdma_ip() else { return };
    let listener = rustre_fabric::listen(&Address::Verbs(SocketAddr::new(ip, 0)), &common::opts()).unwrap();
    let pool = BufferPool::new(1 << 20, 2).unwrap();
    listener.register_pool(&pool).unwrap();
    let server = {
        let (listener, pool) = (Arc::clone(&listener), Arc::clone(&pool));
        std::thread::spawn(move || {
            let conn: Arc<dyn ServerConn> = listener.accept().unwrap();
            let mut buf = pool.get();
            for _ in 0..2 {
                let req = conn.recv().unwrap();
                let desc = rustre_fabric::BulkDesc {
                    addr: u64::from_le_bytes(req.body[0..8].try_into().unwrap()),
                    rkey: u32::from_le_bytes(req.body[8..12].try_into().unwrap()),
                    len: u64::from_le_bytes(req.body[12..20].try_into().unwrap()),
                };
                let n = desc.len as usize;
                if req.header.opcode == common::OP_PULL {
                    conn.pull(&desc, 0, &mut buf[..n]).unwrap();
                    conn.reply(
                        &req.header,
                        req.header.opcode,
                        &rustre_proto::crc::crc32c(&buf[..n]).to_le_bytes(),
                        false,
                    )
                    .unwrap();
                } else {
                    buf[..n].copy_from_slice(&common::pattern(11, n));
                    conn.push(&desc, 0, &buf[..n]).unwrap();
                    conn.reply(&req.header, req.header.opcode, &[], false).unwrap();
                }
            }
            conn.close();
        })
    };
    let client = rustre_fabric::connect(&listener.local_addr(), &common::opts()).unwrap();
    let encode = |d: rustre_fabric::BulkDesc| {
        let mut b = d.addr.to_le_bytes().to_vec();
        b.extend_from_slice(&d.rkey.to_le_bytes());
        b.extend_from_slice(&d.len.to_le_bytes());
        b
    };
    let data = common::pattern(10, 700_000);
    let r = client
        .call_bulk(common::OP_PULL, Bulk::Source(&data), &mut |d| encode(d))
        .unwrap();
    assert_eq!(r.body, rustre_proto::crc::crc32c(&data).to_le_bytes());
    let mut sink = vec![0u8; 300_000];
    client
        .call_bulk(common::OP_PUSH, Bulk::Sink(&mut sink), &mut |d| encode(d))
        .unwrap();
    assert!(sink == common::pattern(11, 300_000), "pushed bytes differ");
    server.join().unwrap();
    drop(client);
    listener.shutdown();
}

/// A listener shut down while nobody connects returns from `accept` promptly.
#[test]
fn listener_shutdown_wakes_accept() {
    let Some(ip) = rdma_ip() else { return };
    let listener: Arc<dyn Listener> =
        rustre_fabric::listen(&Address::Verbs(SocketAddr::new(ip, 0)), &common::opts()).unwrap();
    let l = Arc::clone(&listener);
    let t = std::thread::spawn(move || l.accept().map(|_| ()));
    std::thread::sleep(Duration::from_millis(50));
    listener.shutdown();
    assert!(matches!(t.join().unwrap(), Err(FabricError::Closed(_))));
    // Connecting to a port nobody listens on is refused, not hung.
    let r = rustre_fabric::connect(&Address::Verbs(SocketAddr::new(ip, 1)), &common::opts());
    assert!(r.is_err());
}
