//! `ClientConn::call_with_xid`: the request goes out under the caller's xid and client id, and the
//! reply is routed back to the caller (tcp, sim and, where an RDMA device exists, verbs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustre_fabric::{Address, ConnOptions};

fn check(listen: &str) {
    let opts = ConnOptions {
        client_id: 0xabcd,
        ..ConnOptions::default()
    };
    let l = rustre_fabric::listen(&listen.parse::<Address>().unwrap(), &opts).unwrap();
    let addr = l.local_addr();
    let l2 = l.clone();
    let server = std::thread::spawn(move || {
        let c = l2.accept().unwrap();
        let mut seen = Vec::new();
        while let Ok(inc) = c.recv() {
            seen.push((inc.header.xid, inc.header.client_id));
            c.reply(&inc.header, inc.header.opcode, &inc.body, false).unwrap();
        }
        seen
    });
    let c = rustre_fabric::connect(&addr, &opts).unwrap();
    let a = c.call(7, b"first").unwrap();
    let b = c.call_with_xid(1 << 40, 7, b"mine").expect("supported").unwrap();
    assert_eq!(b.header.xid, 1 << 40);
    assert_eq!(b.body, b"mine");
    let d = c.call(7, b"next").unwrap();
    assert_eq!(
        d.header.xid,
        a.header.xid + 1,
        "the connection's own xids are not disturbed"
    );
    c.close();
    l.shutdown();
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        vec![(a.header.xid, 0xabcd), (1 << 40, 0xabcd), (d.header.xid, 0xabcd)]
    );
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
fn tcp_sends_under_the_callers_xid() {
    check("tcp://127.0.0.1:0");
}

#[test]
fn sim_sends_under_the_callers_xid() {
    check(&format!("sim://xid-{}", std::process::id()));
}

#[test]
fn verbs_sends_under_the_callers_xid() {
    if let Some(addr) = verbs_listen_addr() {
        check(&addr);
    }
}
