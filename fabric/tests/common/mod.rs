//! The fabric conformance properties, one public function each, generic over how listen addresses
//! are made so every provider runs the same checks: `tcp://127.0.0.1:0`, a fresh `sim://` name,
//! `verbs://IP:0`. Each function starts a [`TestServer`] on an address from `mk`, connects to its
//! `local_addr()` and stops everything it started before returning.
#![allow(dead_code, clippy::unwrap_used)]

use crossbeam::channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;
use rustre_fabric::{Address, Bulk, BulkDesc, ClientConn, ConnOptions, FabricError, Incoming, Listener, ServerConn};
use rustre_proto::frame::FLAG_ERROR;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Replies with the request body.
pub const OP_ECHO: u16 = 100;
/// Pulls `n` bytes at `offset` from the descriptor and replies with their crc32c.
pub const OP_PULL: u16 = 101;
/// Pushes `n` pattern bytes (from `seed`) at `offset` and replies with their crc32c.
pub const OP_PUSH: u16 = 102;
/// Never replies.
pub const OP_DROP: u16 = 103;
/// Keeps the descriptor for a later `OP_PULL_STASHED` and replies at once.
pub const OP_STASH: u16 = 104;
/// Pulls one byte from the stashed descriptor.
pub const OP_PULL_STASHED: u16 = 105;
/// Holds requests until `seed` of them have arrived, then replies to them in reverse order.
pub const OP_GATE: u16 = 106;
/// Counts concurrent requests (keeps the maximum), waits 2 ms, replies.
pub const OP_COUNT: u16 = 107;
/// Pulls 1 MiB pieces in a loop until a pull fails; reports `Event::Pulling` then `Event::PullFailed`.
pub const OP_PULL_LOOP: u16 = 108;
/// Pulls everything, reports `Event::Pulled`, then never replies.
pub const OP_PULL_THEN_HANG: u16 = 109;

/// Something the server saw, for the test to wait on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `OP_PULL_LOOP` completed its first pull.
    Pulling,
    /// `OP_PULL_LOOP` ended with this error.
    PullFailed(String),
    /// `OP_PULL_THEN_HANG` has pulled.
    Pulled,
    /// `recv` failed with something other than `Closed`.
    RecvError(String),
    /// An `OP_PUSH` failed with this error.
    PushFailed(String),
}

/// Options for tests: generous timeouts so that a hang shows as a failure, not a stuck run.
pub fn opts() -> ConnOptions {
    ConnOptions {
        client_id: 7,
        call_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
        ..ConnOptions::default()
    }
}

/// A request body carrying a descriptor and what to do with it.
pub fn desc_body(d: BulkDesc, offset: u64, n: u64, seed: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(44);
    b.extend_from_slice(&d.rkey.to_le_bytes());
    b.extend_from_slice(&d.addr.to_le_bytes());
    b.extend_from_slice(&d.len.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&seed.to_le_bytes());
    b
}

fn parse_desc(b: &[u8]) -> (BulkDesc, u64, u64, u64) {
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let d = BulkDesc {
        rkey: u32::from_le_bytes(b[0..4].try_into().unwrap()),
        addr: u64_at(4),
        len: u64_at(12),
    };
    (d, u64_at(20), u64_at(28), u64_at(36))
}

/// Deterministic test bytes.
pub fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

struct Shared {
    events: Sender<Event>,
    stash: Mutex<Option<BulkDesc>>,
    gate: Mutex<Vec<Incoming>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
    /// Dropped to release hung handlers.
    release: Mutex<Option<Sender<()>>>,
    release_rx: Receiver<()>,
}

/// A server running the test opcodes with `workers` threads per connection.
pub struct TestServer {
    /// Where clients connect.
    pub addr: Address,
    listener: Arc<dyn Listener>,
    conns: Arc<Mutex<Vec<Arc<dyn ServerConn>>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// What the server saw.
    pub events: Receiver<Event>,
}

impl TestServer {
    /// Listens on `addr` and serves until dropped.
    pub fn start(addr: &Address, opts: &ConnOptions, workers: usize) -> TestServer {
        let listener = rustre_fabric::listen(addr, opts).unwrap();
        let (events_tx, events) = bounded(4096);
        let (release_tx, release_rx) = bounded(1);
        let shared = Arc::new(Shared {
            events: events_tx,
            stash: Mutex::new(None),
            gate: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            release: Mutex::new(Some(release_tx)),
            release_rx,
        });
        let conns: Arc<Mutex<Vec<Arc<dyn ServerConn>>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (listener, conns, threads, shared) = (
                Arc::clone(&listener),
                Arc::clone(&conns),
                Arc::clone(&threads),
                Arc::clone(&shared),
            );
            std::thread::spawn(move || {
                loop {
                    match listener.accept() {
                        Ok(conn) => {
                            conns.lock().push(Arc::clone(&conn));
                            for _ in 0..workers {
                                let (conn, shared) = (Arc::clone(&conn), Arc::clone(&shared));
                                threads.lock().push(std::thread::spawn(move || serve(&*conn, &shared)));
                            }
                        }
                        Err(FabricError::Closed(_)) => break,
                        Err(e) => {
                            let _ = shared.events.try_send(Event::RecvError(format!("accept: {e}")));
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        };
        let addr = listener.local_addr();
        TestServer {
            addr,
            listener,
            conns,
            threads,
            acceptor: Some(acceptor),
            shared,
            events,
        }
    }

    /// Most requests seen in progress at once.
    pub fn max_active(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }

    /// The accepted connections so far.
    pub fn conns(&self) -> Vec<Arc<dyn ServerConn>> {
        self.conns.lock().clone()
    }

    /// Waits for the next event.
    pub fn event(&self, within: Duration) -> Event {
        self.events.recv_timeout(within).expect("server event")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.listener.shutdown();
        self.shared.release.lock().take();
        for c in self.conns.lock().iter() {
            c.close();
        }
        if let Some(a) = self.acceptor.take() {
            a.join().unwrap();
        }
        for c in self.conns.lock().iter() {
            c.close();
        }
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            t.join().unwrap();
        }
    }
}

fn serve(conn: &dyn ServerConn, sh: &Shared) {
    loop {
        let req = match conn.recv() {
            Ok(r) => r,
            Err(FabricError::Closed(_)) => return,
            Err(e) => {
                let _ = sh.events.try_send(Event::RecvError(e.to_string()));
                return;
            }
        };
        handle(conn, sh, req);
    }
}

fn reply_result(conn: &dyn ServerConn, req: &Incoming, r: Result<Vec<u8>, FabricError>) {
    let _ = match r {
        Ok(body) => conn.reply(&req.header, req.header.opcode, &body, false),
        Err(e) => conn.reply(&req.header, req.header.opcode, e.to_string().as_bytes(), true),
    };
}

fn handle(conn: &dyn ServerConn, sh: &Shared, req: Incoming) {
    let h = req.header;
    match h.opcode {
        OP_ECHO => {
            let _ = conn.reply(&h, h.opcode, &req.body, false);
        }
        OP_PULL => {
            let (d, off, n, _) = parse_desc(&req.body);
            let mut buf = vec![0u8; n as usize];
            let r = conn
                .pull(&d, off, &mut buf)
                .map(|()| rustre_proto::crc::crc32c(&buf).to_le_bytes().to_vec());
            reply_result(conn, &req, r);
        }
        OP_PUSH => {
            let (d, off, n, seed) = parse_desc(&req.body);
            let data = pattern(seed, n as usize);
            let r = conn
                .push(&d, off, &data)
                .map(|()| rustre_proto::crc::crc32c(&data).to_le_bytes().to_vec());
            if let Err(e) = &r {
                let _ = sh.events.try_send(Event::PushFailed(format!("{e:?}")));
            }
            reply_result(conn, &req, r);
        }
        OP_DROP => {}
        OP_STASH => {
            *sh.stash.lock() = Some(parse_desc(&req.body).0);
            let _ = conn.reply(&h, h.opcode, &[], false);
        }
        OP_PULL_STASHED => {
            let d = sh.stash.lock().unwrap();
            let mut b = [0u8; 1];
            reply_result(conn, &req, conn.pull(&d, 0, &mut b).map(|()| Vec::new()));
        }
        OP_GATE => {
            let want = parse_desc(&req.body).3 as usize;
            let batch = {
                let mut g = sh.gate.lock();
                g.push(req);
                if g.len() < want {
                    None
                } else {
                    Some(std::mem::take(&mut *g))
                }
            };
            for r in batch.into_iter().flatten().rev() {
                let _ = conn.reply(&r.header, r.header.opcode, &r.body, false);
            }
        }
        OP_COUNT => {
            let now = sh.active.fetch_add(1, Ordering::SeqCst) + 1;
            sh.max_active.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            sh.active.fetch_sub(1, Ordering::SeqCst);
            let _ = conn.reply(&h, h.opcode, &req.body, false);
        }
        OP_PULL_LOOP => {
            let (d, _, _, _) = parse_desc(&req.body);
            let mut buf = vec![0u8; 1 << 20];
            let pieces = (d.len >> 20).max(1);
            for i in 0.. {
                if let Err(e) = conn.pull(&d, (i % pieces) << 20, &mut buf) {
                    let _ = sh.events.try_send(Event::PullFailed(format!("{e:?}")));
                    break;
                }
                if i == 0 {
                    let _ = sh.events.try_send(Event::Pulling);
                }
            }
        }
        OP_PULL_THEN_HANG => {
            let (d, _, _, _) = parse_desc(&req.body);
            let mut buf = vec![0u8; d.len as usize];
            if conn.pull(&d, 0, &mut buf).is_ok() {
                let _ = sh.events.try_send(Event::Pulled);
            }
            let _ = sh.release_rx.recv_timeout(Duration::from_secs(30));
        }
        _ => {
            let _ = conn.reply(&h, h.opcode, b"unknown opcode", true);
        }
    }
}

/// Starts a server on `mk()` and connects one client with `copts`.
pub fn pair(
    mk: &dyn Fn() -> Address,
    sopts: &ConnOptions,
    copts: &ConnOptions,
    workers: usize,
) -> (TestServer, Arc<dyn ClientConn>) {
    let server = TestServer::start(&mk(), sopts, workers);
    let client = rustre_fabric::connect(&server.addr, copts).unwrap();
    (server, client)
}

fn is_error(r: &rustre_fabric::Reply) -> bool {
    r.header.flags & FLAG_ERROR != 0
}

fn pull_crc(client: &dyn ClientConn, data: &[u8], offset: u64, n: u64) -> Result<rustre_fabric::Reply, FabricError> {
    client.call_bulk(OP_PULL, Bulk::Source(data), &mut |d| desc_body(d, offset, n, 0))
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Replies reach their own callers even when the server answers in reverse order.
pub fn reply_ordering(mk: &dyn Fn() -> Address) {
    const N: u64 = 32;
    let (server, client) = pair(mk, &opts(), &opts(), 2);
    std::thread::scope(|s| {
        for i in 0..N {
            let client = &client;
            s.spawn(move || {
                let body = desc_body(
                    BulkDesc {
                        addr: 0,
                        rkey: i as u32,
                        len: i,
                    },
                    i,
                    i,
                    N,
                );
                let r = client.call(OP_GATE, &body).unwrap();
                assert!(!is_error(&r));
                assert_eq!(r.body, body, "caller {i} got another caller's reply");
            });
        }
    });
    drop(client);
    drop(server);
}

/// 1000 RPCs from 8 threads on one connection, each answered with its own body.
pub fn many_outstanding_rpcs(mk: &dyn Fn() -> Address) {
    let (server, client) = pair(mk, &opts(), &opts(), 4);
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let client = &client;
            s.spawn(move || {
                for i in 0..125u32 {
                    let body = format!("thread {t} call {i}").into_bytes();
                    let r = client.call(OP_ECHO, &body).unwrap();
                    assert_eq!(r.body, body);
                    assert_eq!(r.header.opcode, OP_ECHO);
                }
            });
        }
    });
    drop(client);
    drop(server);
}

/// 8 MiB and zero-length bulk, both directions, checked by crc32c.
pub fn large_and_zero_bulk(mk: &dyn Fn() -> Address) {
    let (server, client) = pair(mk, &opts(), &opts(), 2);
    for n in [8usize << 20, 0, 1, 65_537] {
        let data = pattern(n as u64, n);
        let r = pull_crc(&*client, &data, 0, n as u64).unwrap();
        assert!(!is_error(&r), "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.body,
            rustre_proto::crc::crc32c(&data).to_le_bytes(),
            "pull of {n} bytes"
        );

        let mut sink = vec![0u8; n];
        let r = client
            .call_bulk(OP_PUSH, Bulk::Sink(&mut sink), &mut |d| desc_body(d, 0, n as u64, 99))
            .unwrap();
        assert!(!is_error(&r), "{}", String::from_utf8_lossy(&r.body));
        let expect = pattern(99, n);
        assert_eq!(r.body, rustre_proto::crc::crc32c(&expect).to_le_bytes());
        assert!(sink == expect, "pushed bytes differ ({n} bytes)");
    }
    // A push into the middle of a larger sink leaves the rest alone.
    let mut sink = vec![0xAAu8; 1 << 20];
    let r = client
        .call_bulk(OP_PUSH, Bulk::Sink(&mut sink), &mut |d| desc_body(d, 4096, 8192, 5))
        .unwrap();
    assert!(!is_error(&r));
    assert!(sink[..4096].iter().all(|&b| b == 0xAA) && sink[4096 + 8192..].iter().all(|&b| b == 0xAA));
    assert_eq!(&sink[4096..4096 + 8192], &pattern(5, 8192)[..]);
    drop(client);
    drop(server);
}

/// The client goes away while the server is pulling: the server's pull fails, it does not hang.
pub fn client_dies_mid_bulk(mk: &dyn Fn() -> Address) {
    let (server, client) = pair(mk, &opts(), &opts(), 2);
    let data = pattern(3, 4 << 20);
    std::thread::scope(|s| {
        let c = Arc::clone(&client);
        let data = &data;
        let call = s.spawn(move || c.call_bulk(OP_PULL_LOOP, Bulk::Source(data), &mut |d| desc_body(d, 0, 0, 0)));
        assert_eq!(server.event(Duration::from_secs(10)), Event::Pulling);
        client.close();
        let r = call.join().unwrap();
        assert!(matches!(r, Err(FabricError::Closed(_))), "{r:?}");
    });
    let started = Instant::now();
    match server.event(Duration::from_secs(10)) {
        Event::PullFailed(e) => assert!(e.contains("Closed") || e.contains("BulkRefused"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(client);
    drop(server);
}

/// The server goes away during a call: the call fails with `Closed`, it does not wait for its timeout.
pub fn server_dies_mid_call(mk: &dyn Fn() -> Address) {
    let (server, client) = pair(mk, &opts(), &opts(), 2);
    let data = pattern(4, 1 << 20);
    let started = Instant::now();
    std::thread::scope(|s| {
        let c = Arc::clone(&client);
        let data = &data;
        let call = s.spawn(move || c.call_bulk(OP_PULL_THEN_HANG, Bulk::Source(data), &mut |d| desc_body(d, 0, 0, 0)));
        assert_eq!(server.event(Duration::from_secs(10)), Event::Pulled);
        for c in server.conns() {
            c.close();
        }
        let r = call.join().unwrap();
        assert!(matches!(r, Err(FabricError::Closed(_))), "{r:?}");
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let r = client.call(OP_ECHO, b"x");
    assert!(matches!(r, Err(FabricError::Closed(_))), "{r:?}");
    drop(client);
    drop(server);
}

/// With 2 credits, 50 concurrent callers all complete and the server never sees more than 2 at once.
pub fn credit_exhaustion(mk: &dyn Fn() -> Address) {
    let copts = ConnOptions { credits: 2, ..opts() };
    let (server, client) = pair(mk, &opts(), &copts, 8);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..50u32 {
            let (client, done) = (&client, &done);
            s.spawn(move || {
                let body = i.to_le_bytes();
                let r = client.call(OP_COUNT, &body).unwrap();
                assert_eq!(r.body, body);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(done.load(Ordering::SeqCst), 50);
    assert!(
        server.max_active() <= 2,
        "server saw {} requests at once",
        server.max_active()
    );
    assert!(server.max_active() >= 1);
    drop(client);
    drop(server);
}

/// A call without reply fails with `Timeout` after `call_timeout`; the connection stays usable.
pub fn call_timeout(mk: &dyn Fn() -> Address) {
    let copts = ConnOptions {
        call_timeout: Duration::from_millis(200),
        ..opts()
    };
    let (server, client) = pair(mk, &opts(), &copts, 2);
    let started = Instant::now();
    let r = client.call(OP_DROP, b"");
    let took = started.elapsed();
    assert!(matches!(r, Err(FabricError::Timeout { .. })), "{r:?}");
    assert!(
        took >= Duration::from_millis(180) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(client.call(OP_ECHO, b"still here").unwrap().body, b"still here");
    drop(client);
    drop(server);
}

/// Pulls and pushes outside the exposed range, of the wrong kind or with a made-up key are refused.
pub fn bulk_outside_descriptor_refused(mk: &dyn Fn() -> Address) {
    let (server, client) = pair(mk, &opts(), &opts(), 2);
    let data = pattern(1, 4096);
    let refused = |r: rustre_fabric::Reply| {
        assert!(is_error(&r), "expected a refusal");
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(text.contains("bulk access refused"), "{text}");
        text
    };
    refused(pull_crc(&*client, &data, 4086, 20).unwrap());
    refused(pull_crc(&*client, &data, u64::MAX - 1, 4).unwrap());
    let mut sink = vec![0u8; 4096];
    refused(
        client
            .call_bulk(OP_PUSH, Bulk::Sink(&mut sink), &mut |d| desc_body(d, 4000, 200, 1))
            .unwrap(),
    );
    assert!(sink.iter().all(|&b| b == 0), "a refused push wrote bytes");
    // Pushing into a source, pulling from a sink.
    refused(
        client
            .call_bulk(OP_PUSH, Bulk::Source(&data), &mut |d| desc_body(d, 0, 10, 1))
            .unwrap(),
    );
    refused(
        client
            .call_bulk(OP_PULL, Bulk::Sink(&mut sink), &mut |d| desc_body(d, 0, 10, 1))
            .unwrap(),
    );
    // A key that was never issued.
    refused(
        client
            .call_bulk(OP_PULL, Bulk::Source(&data), &mut |d| {
                desc_body(
                    BulkDesc {
                        rkey: d.rkey ^ 0x5a5a_5a5a,
                        ..d
                    },
                    0,
                    10,
                    0,
                )
            })
            .unwrap(),
    );
    // The connection still works.
    let ok = pull_crc(&*client, &data, 0, 4096).unwrap();
    assert!(!is_error(&ok));
    drop(client);
    drop(server);
}

/// A key is dead once the call that carried it has returned.
pub fn revoked_rkey_refused(mk: &dyn Fn() -> Address) {
    let (server, client) = pair(mk, &opts(), &opts(), 1);
    let data = pattern(2, 4096);
    let r = client
        .call_bulk(OP_STASH, Bulk::Source(&data), &mut |d| desc_body(d, 0, 0, 0))
        .unwrap();
    assert!(!is_error(&r));
    let r = client.call(OP_PULL_STASHED, b"").unwrap();
    assert!(is_error(&r), "a revoked key was honoured");
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("bulk access refused"), "{text}");
    drop(client);
    drop(server);
}

/// Pulls and pushes of many sizes (across chunk boundaries) from 8 threads at once, served by 4
/// workers that `pull`/`push`/`reply` concurrently on one connection; every byte checked.
pub fn concurrent_bulk_both_ways(mk: &dyn Fn() -> Address) {
    let (server, client) = pair(mk, &opts(), &opts(), 4);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let client = &client;
            s.spawn(move || {
                for i in 0..4u64 {
                    let n = ((t * 4 + i) * 197_531) as usize % (5 << 20);
                    let seed = t * 100 + i;
                    if (t + i) % 2 == 0 {
                        let data = pattern(seed, n);
                        let r = pull_crc(&**client, &data, 0, n as u64).unwrap();
                        assert!(!is_error(&r), "{}", String::from_utf8_lossy(&r.body));
                        assert_eq!(
                            r.body,
                            rustre_proto::crc::crc32c(&data).to_le_bytes(),
                            "pull of {n} bytes"
                        );
                    } else {
                        let mut sink = vec![0u8; n];
                        let r = client
                            .call_bulk(OP_PUSH, Bulk::Sink(&mut sink), &mut |d| desc_body(d, 0, n as u64, seed))
                            .unwrap();
                        assert!(!is_error(&r), "{}", String::from_utf8_lossy(&r.body));
                        assert!(sink == pattern(seed, n), "push of {n} bytes");
                    }
                }
            });
        }
    });
    drop(client);
    drop(server);
}

/// Runs every property above with `mk`.
pub fn all(mk: &dyn Fn() -> Address) {
    reply_ordering(mk);
    many_outstanding_rpcs(mk);
    large_and_zero_bulk(mk);
    concurrent_bulk_both_ways(mk);
    client_dies_mid_bulk(mk);
    server_dies_mid_call(mk);
    credit_exhaustion(mk);
    call_timeout(mk);
    bulk_outside_descriptor_refused(mk);
    revoked_rkey_refused(mk);
}
