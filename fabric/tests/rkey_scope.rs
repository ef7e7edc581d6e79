//! A hostile server cannot read or write client memory outside the bulk descriptor of the
//! request it is serving: not past the exposed range, not under another key, not into a buffer
//! lent only for reading, and not with an old descriptor once its call has returned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustre_fabric::{Address, Bulk, BulkDesc, ClientConn, ConnOptions, ServerConn};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

fn enc(d: BulkDesc) -> Vec<u8> {
    [
        d.addr.to_le_bytes().as_slice(),
        &d.rkey.to_le_bytes(),
        &d.len.to_le_bytes(),
    ]
    .concat()
}

fn dec(b: &[u8]) -> BulkDesc {
    BulkDesc {
        addr: u64::from_le_bytes(b[0..8].try_into().unwrap()),
        rkey: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        len: u64::from_le_bytes(b[12..20].try_into().unwrap()),
    }
}

/// Listens on `listen`, runs `serve` on the one connection accepted (its result comes back on
/// the channel), then waits for the client to leave and stops; returns the client connected.
fn one_connection<T: Send + 'static>(
    listen: &str,
    serve: impl FnOnce(&dyn ServerConn) -> T + Send + 'static,
) -> (Arc<dyn ClientConn>, mpsc::Receiver<T>, std::thread::JoinHandle<()>) {
    let opts = ConnOptions {
        call_timeout: Duration::from_secs(10),
        ..ConnOptions::default()
    };
    let listener = rustre_fabric::listen(&listen.parse::<Address>().unwrap(), &opts).unwrap();
    let addr = listener.local_addr();
    let (tx, rx) = mpsc::channel::<T>();
    let server = std::thread::spawn(move || {
        let conn = listener.accept().unwrap();
        tx.send(serve(conn.as_ref())).unwrap();
        let _ = conn.recv();
        conn.close();
        listener.shutdown();
    });
    (rustre_fabric::connect(&addr, &opts).unwrap(), rx, server)
}

fn scope(listen: &str) {
    let (client, rx, server) = one_connection(listen, |conn| {
        // Call 1: a client write lends 4096 bytes for reading.
        let req = conn.recv().unwrap();
        let d = dec(&req.body);
        let mut buf = vec![0u8; 8192];
        let mut out = vec![("pull inside the descriptor", conn.pull(&d, 0, &mut buf[..4096]).is_ok())];
        out.push(("pull past its end", conn.pull(&d, 4000, &mut buf[..200]).is_err()));
        let longer = BulkDesc { len: 8192, ..d };
        out.push(("pull a longer range", conn.pull(&longer, 0, &mut buf).is_err()));
        for k in [1u32, 2, 0x8000_0000] {
            let other = BulkDesc {
                rkey: d.rkey.wrapping_add(k),
                ..d
            };
            out.push(("pull under another key", conn.pull(&other, 0, &mut buf[..16]).is_err()));
        }
        out.push(("push into a read-only loan", conn.push(&d, 0, &[0xAA; 16]).is_err()));
        let first = buf[..4096].to_vec();
        conn.reply(&req.header, req.header.opcode, &first[..8], false).unwrap();
        // Call 2: the old descriptor is dead, the new one works.
        let req = conn.recv().unwrap();
        let d2 = dec(&req.body);
        out.push((
            "pull with the returned call's key",
            conn.pull(&d, 0, &mut buf[..16]).is_err(),
        ));
        out.push((
            "push with the returned call's key",
            conn.push(&d, 0, &[0xBB; 16]).is_err(),
        ));
        out.push(("push inside the new descriptor", conn.push(&d2, 0, &[0xCC; 64]).is_ok()));
        out.push(("push past the new descriptor", conn.push(&d2, 60, &[0xDD; 8]).is_err()));
        conn.reply(&req.header, req.header.opcode, b"ok", false).unwrap();
        out
    });
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let r = client.call_bulk(7, Bulk::Source(&data), &mut enc).unwrap();
    assert_eq!(r.body, data[..8].to_vec(), "the server read the lent bytes");
    let mut sink = vec![0u8; 64];
    client.call_bulk(8, Bulk::Sink(&mut sink), &mut enc).unwrap();
    let out = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    for (what, ok) in &out {
        assert!(ok, "{listen}: {what}");
    }
    assert_eq!(sink, vec![0xCC; 64]);
    assert!(
        data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "lent source changed"
    );
    client.close();
    server.join().unwrap();
}

/// A posted push (`push_posted`) is held to the same scope: one the client refuses fails at the
/// server (providers that wait for the client) or fails the client's call (tcp, which does not
/// wait), and never lands outside the descriptor; one inside lands, and the call succeeds.
fn posted(listen: &str) {
    let (client, rx, server) = one_connection(listen, |conn| {
        let mut server_failed = Vec::new();
        // Call 1: inside the descriptor, in chunks larger than one frame holds.
        let req = conn.recv().unwrap();
        let d = dec(&req.body);
        let big: Vec<u8> = (0..d.len).map(|i| (i % 253) as u8).collect();
        conn.push_posted(&d, 0, &big).unwrap();
        conn.reply(&req.header, req.header.opcode, b"ok", false).unwrap();
        // Calls 2 and 3: past the end of a sink, then into a source; the server replies "ok" anyway.
        for _ in 0..2 {
            let req = conn.recv().unwrap();
            let d = dec(&req.body);
            server_failed.push(conn.push_posted(&d, d.len - 8, &[0xEE; 16]).is_err());
            conn.reply(&req.header, req.header.opcode, b"ok", false).unwrap();
        }
        server_failed
    });
    let mut sink = vec![0u8; 3 << 20];
    let r = client.call_bulk(8, Bulk::Sink(&mut sink), &mut enc).unwrap();
    assert_eq!(r.body, b"ok");
    assert!(
        sink.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8),
        "{listen}: pushed bytes"
    );
    let mut small = vec![0u8; 64];
    let past = client.call_bulk(8, Bulk::Sink(&mut small), &mut enc);
    let data = vec![7u8; 64];
    let source = client.call_bulk(9, Bulk::Source(&data), &mut enc);
    let server_failed = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    for (what, client_result, server) in [
        ("past the sink's end", &past, server_failed[0]),
        ("into a source", &source, server_failed[1]),
    ] {
        assert!(
            server || client_result.is_err(),
            "{listen}: a refused posted push {what} failed neither side: {client_result:?}"
        );
    }
    assert_eq!(small, vec![0u8; 64], "{listen}: nothing landed past the descriptor");
    assert_eq!(data, vec![7u8; 64], "{listen}: the source is unchanged");
    client.close();
    server.join().unwrap();
}

#[test]
fn tcp_posted_pushes_are_scoped_and_refusals_fail_the_call() {
    posted("tcp://127.0.0.1:0");
}

#[test]
fn sim_posted_pushes_are_scoped() {
    posted("sim://rkey-posted");
}

#[test]
fn verbs_posted_pushes_are_scoped() {
    if let Some(addr) = verbs_listen_addr() {
        posted(&addr);
    }
}

/// The address to listen on over verbs (`verbs://IP:0`), or `None` after saying why not: verbs
/// runs where an RDMA device has an IP address (`RUSTRE_VERBS_ADDR`, or `RUSTRE_RXE_ADDR` inside
/// `ci/rxe`); `RUSTRE_REQUIRE_RDMA=1` (the rxe lane) turns a skip into a failure.
fn verbs_listen_addr() -> Option<String> {
    let require = std::env::var("RUSTRE_REQUIRE_RDMA").is_ok_and(|v| v == "1");
    let var = std::env::var("RUSTRE_VERBS_ADDR").or_else(|_| std::env::var("RUSTRE_RXE_ADDR"));
    match var.ok().and_then(|v| v.parse::<std::net::IpAddr>().ok()) {
        Some(ip) if rustre_fabric::verbs::devices_present() => Some(format!("verbs://{ip}:0")),
        _ => {
            assert!(!require, "RUSTRE_REQUIRE_RDMA=1 but no RDMA device with an address");
            eprintln!("skipped: no RDMA device address (run under ci/rxe or set RUSTRE_VERBS_ADDR)");
            None
        }
    }
}

#[test]
fn tcp_rkeys_are_scoped_to_their_call() {
    scope("tcp://127.0.0.1:0");
}

#[test]
fn sim_rkeys_are_scoped_to_their_call() {
    scope("sim://rkey-scope");
}

/// Through the verbs provider's `pull`/`push` (the raw RDMA READ/WRITE a hostile server could
/// post instead is refused by the device: `verbs::hostile` in the crate's unit tests).
#[test]
fn verbs_rkeys_are_scoped_to_their_call() {
    if let Some(addr) = verbs_listen_addr() {
        scope(&addr);
    }
}
