//! Hostile peers on a real RDMA device (run in the rxe lane, skipped elsewhere like
//! `tests/verbs.rs`): a client that sends malformed frames, and a server that issues RDMA READ
//! and WRITE with a client's key outside what the client's provider would let through.
//!
//! They live beside the provider because a hostile peer is one that bypasses the provider's own
//! checks: the client posts raw fragments into its send slots, the server posts raw RDMA work
//! requests with `Conn::rdma` (no `check_exposed`). What must stop them is the peer's receive
//! path (frames) and the device's memory-region checks (keys).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::conn::Conn;
use super::endpoint::SLOT_SIZE;
use super::provider::{self, VerbsServer};
use super::wire::*;
use crate::{Bulk, BulkDesc, ClientConn, ConnOptions, FabricError, ServerConn};
use rustre_proto::FrameHeader;
use rustre_proto::frame::FLAG_REPLY;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The IP of an RDMA interface, or `None` (after saying why) when these tests must skip.
fn rdma_ip() -> Option<IpAddr> {
    let require = std::env::var("RUSTRE_REQUIRE_RDMA").is_ok_and(|v| v == "1");
    let var = std::env::var("RUSTRE_VERBS_ADDR").or_else(|_| std::env::var("RUSTRE_RXE_ADDR"));
    match var.ok().and_then(|v| v.parse::<IpAddr>().ok()) {
        Some(ip) if super::devices_present() => Some(ip),
        _ => {
            assert!(!require, "RUSTRE_REQUIRE_RDMA=1 but no RDMA device with an address");
            eprintln!("skipped: no RDMA device address (run under ci/rxe or set RUSTRE_VERBS_ADDR)");
            None
        }
    }
}

fn opts() -> ConnOptions {
    ConnOptions {
        client_id: 9,
        call_timeout: Duration::from_secs(10),
        ..ConnOptions::default()
    }
}

/// Waits for `cond` up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Posts `bytes` as one SEND of fragment kind `kind`, with no check of what it says.
fn send_raw(conn: &Conn, kind: u32, bytes: &[u8]) {
    assert!(bytes.len() <= SLOT_SIZE);
    let (slot, credits) = conn.acquire_send(Instant::now() + Duration::from_secs(5)).unwrap();
    // SAFETY: the slot is ours until its send completes and holds SLOT_SIZE ≥ bytes.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), conn.ep.send_slot(slot), bytes.len()) };
    conn.post_fragment(slot, bytes.len(), kind, credits).unwrap();
}

/// An echo server that reports why each connection's `recv` stopped.
struct EchoServer {
    listener: Arc<provider::VerbsListener>,
    errors: crossbeam::channel::Receiver<String>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    fn start(ip: IpAddr) -> Self {
        let listener = provider::listen(SocketAddr::new(ip, 0), &opts()).unwrap();
        let (tx, errors) = crossbeam::channel::bounded(64);
        let l = Arc::clone(&listener);
        let acceptor = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while let Ok(conn) = l.accept_verbs() {
                let tx = tx.clone();
                workers.push(std::thread::spawn(move || {
                    loop {
                        match conn.recv() {
                            Ok(req) => {
                                let _ = conn.reply(&req.header, req.header.opcode, &req.body, false);
                            }
                            Err(e) => {
                                let _ = tx.send(e.to_string());
                                return;
                            }
                        }
                    }
                }));
            }
            for w in workers {
                w.join().unwrap();
            }
        });
        EchoServer {
            listener,
            errors,
            threads: vec![acceptor],
        }
    }

    fn addr(&self) -> SocketAddr {
        match crate::Listener::local_addr(&*self.listener) {
            crate::Address::Verbs(sa) => sa,
            other => panic!("verbs address expected, got {other}"),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        crate::Listener::shutdown(&*self.listener);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Malformed frames over a verbs connection close that connection with an error naming the
/// problem; the server keeps serving its other connections and accepts new ones.
#[test]
fn garbage_frames_close_only_that_connection() {
    let Some(ip) = rdma_ip() else { return };
    let server = EchoServer::start(ip);
    let bystander = provider::connect(server.addr(), &opts()).unwrap();
    assert_eq!(bystander.call(100, b"before").unwrap().body, b"before");

    let max = opts().max_body;
    let header = |flags: u32, body_len: u32| {
        let mut h = FrameHeader::request(100, 1, 9, body_len);
        h.flags = flags;
        h.encode().to_vec()
    };
    let cases: Vec<(&str, u32, Vec<u8>, &str)> = vec![
        ("garbage bytes", KIND_FIRST, vec![0xde; 64], "magic"),
        ("oversized frame", KIND_FIRST, header(0, max + 1), "exceeds"),
        ("unknown fragment kind", 9, vec![1; 8], "unknown fragment kind"),
        (
            "continuation without a frame",
            KIND_CONT,
            vec![1; 10],
            "continuation without a frame",
        ),
        (
            "body longer than its header says",
            KIND_FIRST,
            [header(0, 4), vec![7; 10]].concat(),
            "header says",
        ),
        (
            "reply sent to a server",
            KIND_FIRST,
            header(FLAG_REPLY, 0),
            "reply sent to a server",
        ),
        ("malformed bulk exposure", KIND_BULK, vec![1; 5], "bulk exposure"),
        (
            "credit message with a payload",
            KIND_CREDIT,
            vec![1; 3],
            "credit message",
        ),
    ];
    for (what, kind, bytes, expect) in cases {
        let hostile = provider::connect(server.addr(), &opts()).unwrap();
        send_raw(hostile.conn(), kind, &bytes);
        let err = server
            .errors
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what}: the server did not close the connection"));
        assert!(err.contains(expect), "{what}: {err}");
        // The hostile client sees its connection go.
        eventually(what, || hostile.conn().is_closed());
        assert!(
            hostile.call(100, b"x").is_err(),
            "{what}: the closed connection still answers"
        );
        // Everyone else is still served.
        assert_eq!(bystander.call(100, what.as_bytes()).unwrap().body, what.as_bytes());
    }
    let late = provider::connect(server.addr(), &opts()).unwrap();
    assert_eq!(late.call(100, b"after").unwrap().body, b"after");
    assert!(
        server.errors.try_recv().is_err(),
        "a well-behaved connection was closed"
    );
    drop((bystander, late));
}

/// One client call lending `bulk`; the server side gets the request and the descriptor.
struct Lent {
    server: Arc<VerbsServer>,
    req: crate::Incoming,
    desc: BulkDesc,
}

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

/// RDMA READ (or WRITE) of `len` bytes at the client's `addr` under `rkey`, posted raw: no
/// provider check, only the device's. Local memory is a registered bounce buffer.
fn raw_rdma(conn: &Conn, write: bool, addr: u64, rkey: u32, len: usize, fill: u8) -> Result<Vec<u8>, FabricError> {
    let (pool, mr) = conn.ep.domain().bounce()?;
    let mut b = pool.get();
    b[..len].fill(fill);
    conn.rdma(write, b.as_mut_ptr(), len, mr.lkey(), addr, rkey)?;
    Ok(b[..len].to_vec())
}

/// Runs `hostile` on the server while the client's call lending `bulk` is in progress, or (when
/// `after_return`) once that call has returned and revoked the key.
fn with_lent(ip: IpAddr, bulk: Bulk<'_>, after_return: bool, hostile: impl FnOnce(&Lent)) {
    let listener = provider::listen(SocketAddr::new(ip, 0), &opts()).unwrap();
    let addr = match crate::Listener::local_addr(&*listener) {
        crate::Address::Verbs(sa) => sa,
        other => panic!("verbs address expected, got {other}"),
    };
    let client = provider::connect(addr, &opts()).unwrap();
    let server = listener.accept_verbs().unwrap();
    std::thread::scope(|s| {
        let (returned_tx, returned_rx) = crossbeam::channel::bounded(1);
        let c = Arc::clone(&client);
        let call = s.spawn(move || {
            let r = c.call_bulk(7, bulk, &mut enc);
            returned_tx.send(()).unwrap();
            r.map(|_| ())
        });
        let req = server.recv().unwrap();
        let desc = dec(&req.body);
        let lent = Lent {
            server: Arc::clone(&server),
            req,
            desc,
        };
        if after_return {
            server.reply(&lent.req.header, 7, b"done", false).unwrap();
            returned_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            call.join().unwrap().unwrap();
            hostile(&lent);
        } else {
            hostile(&lent);
            // The connection may be broken by now; either way the call returns.
            let _ = server.reply(&lent.req.header, 7, b"done", false);
            let _ = call.join().unwrap();
        }
    });
    drop(server);
    drop(client);
    crate::Listener::shutdown(&*listener);
}

/// A server cannot read client memory past the descriptor, nor with the key of a call that has
/// returned: the device refuses the RDMA READ (the provider's own checks are bypassed).
#[test]
fn raw_rdma_read_outside_the_descriptor_fails() {
    let Some(ip) = rdma_ip() else { return };
    let memory: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
    let lent = &memory[4096..8192];
    // Control: the raw path works inside the descriptor, so the refusals below are the device's.
    with_lent(ip, Bulk::Source(lent), false, |l| {
        let got = raw_rdma(l.server.conn(), false, l.desc.addr, l.desc.rkey, 64, 0).unwrap();
        assert_eq!(got, lent[..64]);
    });
    for (what, offset, len) in [("past the end", 4096u64, 64usize), ("across the end", 4090, 16)] {
        with_lent(ip, Bulk::Source(lent), false, |l| {
            let r = raw_rdma(l.server.conn(), false, l.desc.addr + offset, l.desc.rkey, len, 0);
            assert!(r.is_err(), "READ {what} of the descriptor succeeded: {r:?}");
        });
    }
    with_lent(ip, Bulk::Source(lent), false, |l| {
        let r = raw_rdma(l.server.conn(), false, l.desc.addr - 64, l.desc.rkey, 64, 0);
        assert!(r.is_err(), "READ before the descriptor succeeded: {r:?}");
    });
    with_lent(ip, Bulk::Source(lent), true, |l| {
        let r = raw_rdma(l.server.conn(), false, l.desc.addr, l.desc.rkey, 64, 0);
        assert!(r.is_err(), "READ with the key of a returned call succeeded: {r:?}");
    });
}

/// A server cannot write client memory past the descriptor, nor with the key of a call that has
/// returned: the device refuses the RDMA WRITE and the bytes around stay as they were.
#[test]
fn raw_rdma_write_outside_the_descriptor_fails() {
    let Some(ip) = rdma_ip() else { return };
    let mut memory = vec![0u8; 3 * 4096];
    {
        let (_, rest) = memory.split_at_mut(4096);
        let (lent, _) = rest.split_at_mut(4096);
        with_lent(ip, Bulk::Sink(lent), false, |l| {
            raw_rdma(l.server.conn(), true, l.desc.addr, l.desc.rkey, 64, 0xCC).unwrap();
        });
    }
    assert!(
        memory[4096..4096 + 64].iter().all(|&b| b == 0xCC),
        "control WRITE did not land"
    );
    for (what, offset, len) in [("past the end", 4096u64, 64usize), ("across the end", 4090, 16)] {
        let (_, rest) = memory.split_at_mut(4096);
        let (lent, _) = rest.split_at_mut(4096);
        with_lent(ip, Bulk::Sink(lent), false, |l| {
            let r = raw_rdma(l.server.conn(), true, l.desc.addr + offset, l.desc.rkey, len, 0xEE);
            assert!(r.is_err(), "WRITE {what} of the descriptor succeeded");
        });
    }
    {
        let (_, rest) = memory.split_at_mut(4096);
        let (lent, _) = rest.split_at_mut(4096);
        with_lent(ip, Bulk::Sink(lent), true, |l| {
            let r = raw_rdma(l.server.conn(), true, l.desc.addr + 128, l.desc.rkey, 64, 0xEE);
            assert!(r.is_err(), "WRITE with the key of a returned call succeeded");
        });
    }
    assert!(!memory.contains(&0xEE), "a refused WRITE changed client memory");
    assert!(memory[..4096].iter().all(|&b| b == 0) && memory[8192..].iter().all(|&b| b == 0));
}
