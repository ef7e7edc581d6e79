//! `ClientConn::call_with_xid`: the request goes out under the caller's xid and client id, and the
//! reply is routed back to the caller (tcp and sim).

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

#[test]
fn tcp_sends_under_the_callers_xid() {
    check("tcp://127.0.0.1:0");
}

#[test]
fn sim_sends_under_the_callers_xid() {
    check(&format!("sim://xid-{}", std::process::id()));
}
