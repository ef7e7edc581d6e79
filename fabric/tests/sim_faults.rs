//! The simulator's fault controls: drop, delay, reorder, partition, disconnect, and that a seed
//! reproduces the same faults.
#![allow(clippy::unwrap_used)]

mod common;

use common::{OP_ECHO, TestServer, opts};
use rustre_fabric::sim::{FaultKind, Network};
use rustre_fabric::{ConnOptions, FabricError, ServerConn};
use std::time::{Duration, Instant};

fn short() -> ConnOptions {
    ConnOptions {
        call_timeout: Duration::from_millis(100),
        ..opts()
    }
}

#[test]
fn drop_loses_messages_until_cleared() {
    let net = Network::new(1);
    let server = TestServer::start(&net.address("srv"), &opts(), 2);
    let client = rustre_fabric::connect(&server.addr, &short()).unwrap();
    net.set_drop(1.0);
    assert!(matches!(client.call(OP_ECHO, b"x"), Err(FabricError::Timeout { .. })));
    assert!(net.fault_log().iter().any(|e| e.kind == FaultKind::Drop));
    net.set_drop(0.0);
    assert_eq!(client.call(OP_ECHO, b"y").unwrap().body, b"y");
}

#[test]
fn delay_holds_messages_for_the_chosen_time() {
    let net = Network::new(2);
    let server = TestServer::start(&net.address("srv"), &opts(), 2);
    let client = rustre_fabric::connect(&server.addr, &opts()).unwrap();
    net.set_delay(Duration::from_millis(20)..Duration::from_millis(30));
    let t = Instant::now();
    assert_eq!(client.call(OP_ECHO, b"slow").unwrap().body, b"slow");
    assert!(t.elapsed() >= Duration::from_millis(40), "{:?}", t.elapsed());
    let delays: Vec<Duration> = net
        .fault_log()
        .iter()
        .filter_map(|e| {
            if let FaultKind::Delay(d) = e.kind {
                Some(d)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(delays.len(), 2, "request and reply");
    assert!(
        delays
            .iter()
            .all(|d| (Duration::from_millis(20)..Duration::from_millis(30)).contains(d))
    );
}

#[test]
fn reorder_lets_a_later_message_overtake() {
    let net = Network::new(3);
    let listener = net.listen("srv", &opts()).unwrap();
    let client = net.connect("srv", &opts()).unwrap();
    let conn = listener.accept().unwrap();
    net.set_reorder(1.0);
    // Long enough for the second call to start even on a busy machine; it releases the first.
    net.set_reorder_hold(Duration::from_secs(5));
    std::thread::scope(|s| {
        let c = &client;
        let first = s.spawn(move || c.call(OP_ECHO, b"first").unwrap());
        // Wait until the first request is held back, then send the second.
        let t = Instant::now();
        while !net.fault_log().iter().any(|e| e.kind == FaultKind::Reorder) {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::yield_now();
        }
        let second = s.spawn(move || c.call(OP_ECHO, b"second").unwrap());
        let a = conn.recv().unwrap();
        let b = conn.recv().unwrap();
        assert_eq!((a.body.as_slice(), b.body.as_slice()), (&b"second"[..], &b"first"[..]));
        for r in [a, b] {
            conn.reply(&r.header, OP_ECHO, &r.body, false).unwrap();
        }
        assert_eq!(first.join().unwrap().body, b"first");
        assert_eq!(second.join().unwrap().body, b"second");
    });
}

#[test]
fn partition_cuts_both_ways_until_healed() {
    let net = Network::new(4);
    let server = TestServer::start(&net.address("srv"), &opts(), 2);
    let client = net.connect_as("c1", "srv", &short()).unwrap();
    net.partition(&["c1"], &["srv"]);
    assert!(matches!(client.call(OP_ECHO, b"x"), Err(FabricError::Timeout { .. })));
    assert!(matches!(
        net.connect_as("c1", "srv", &short()),
        Err(FabricError::Unreachable(_))
    ));
    // Others are not affected.
    let other = net.connect_as("c2", "srv", &short()).unwrap();
    assert_eq!(other.call(OP_ECHO, b"o").unwrap().body, b"o");
    net.heal();
    assert_eq!(client.call(OP_ECHO, b"back").unwrap().body, b"back");
    drop(server);
}

#[test]
fn disconnect_closes_both_ends() {
    let net = Network::new(5);
    let listener = net.listen("srv", &opts()).unwrap();
    let client = net.connect("srv", &opts()).unwrap();
    let conn = listener.accept().unwrap();
    net.disconnect("srv");
    assert!(matches!(client.call(OP_ECHO, b"x"), Err(FabricError::Closed(_))));
    assert!(matches!(conn.recv(), Err(FabricError::Closed(_))));
    // The node can be reached again by a new connection.
    let client = net.connect("srv", &opts()).unwrap();
    let conn: std::sync::Arc<dyn ServerConn> = listener.accept().unwrap();
    std::thread::scope(|s| {
        let c = &client;
        let call = s.spawn(move || c.call(OP_ECHO, b"again").unwrap());
        let r = conn.recv().unwrap();
        conn.reply(&r.header, OP_ECHO, &r.body, false).unwrap();
        assert_eq!(call.join().unwrap().body, b"again");
    });
}

/// Sequential calls under drop, delay and reorder; returns which calls succeeded and the fault log.
fn faulty_run(seed: u64) -> (Vec<bool>, Vec<rustre_fabric::sim::FaultEvent>) {
    let net = Network::new(seed);
    let server = TestServer::start(&net.address("srv"), &opts(), 1);
    // Long enough that only a dropped message, never a slow machine, makes a call time out.
    let copts = ConnOptions {
        call_timeout: Duration::from_millis(200),
        ..opts()
    };
    let client = rustre_fabric::connect(&server.addr, &copts).unwrap();
    net.set_drop(0.2);
    net.set_delay(Duration::ZERO..Duration::from_millis(2));
    net.set_reorder(0.2);
    let outcomes = (0..20u32)
        .map(|i| client.call(OP_ECHO, &i.to_le_bytes()).is_ok())
        .collect();
    drop(client);
    drop(server);
    (outcomes, net.fault_log())
}

#[test]
fn same_seed_same_faults() {
    // The runs are independent networks; run them side by side to keep the test short.
    let (a, b, c) = std::thread::scope(|s| {
        let (a, b, c) = (
            s.spawn(|| faulty_run(42)),
            s.spawn(|| faulty_run(42)),
            s.spawn(|| faulty_run(43)),
        );
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert_eq!(a, b);
    assert!(a.0.iter().any(|ok| !ok) && a.0.iter().any(|ok| *ok), "{:?}", a.0);
    assert_ne!(a.1, c.1, "different seeds gave the same faults");
}

#[test]
fn plain_names_use_the_default_network() {
    let addr: rustre_fabric::Address = "sim://fabric-test-default-net".parse().unwrap();
    let server = TestServer::start(&addr, &opts(), 1);
    assert_eq!(server.addr, addr);
    let client = rustre_fabric::connect(&addr, &opts()).unwrap();
    assert_eq!(client.call(OP_ECHO, b"d").unwrap().body, b"d");
    assert!(matches!(
        rustre_fabric::connect(&"sim://@999999/x".parse().unwrap(), &opts()),
        Err(FabricError::Unreachable(_))
    ));
    assert!(rustre_fabric::connect(&"sim://@abc/x".parse().unwrap(), &opts()).is_err());
}
