//! `mdsd serve --metrics`: a real `mdsd` process serves Prometheus text whose counters move by
//! exactly the operations done, labelled by the job id of the handshake (raw, and from
//! `RUSTRE_JOBID` through the client library), and whose output parses as the text format.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FakeOst, Mds};
use rustre_metrics::check::{Sample, parse, value};
use rustre_proto::{Opcode, pb};
use rustre_testkit::Node;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mdsd");

struct Device(PathBuf);

impl Drop for Device {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn device() -> Device {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = Device(dir.join(format!("rustre-mdsd-metrics-{}.mdt", std::process::id())));
    let st = Command::new(BIN)
        .args(["mkfs", "--fsname", "mt", "--size", "67108864"])
        .arg(&d.0)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    d
}

fn start(dev: &Path, ost: &str) -> Node {
    Node::spawn_command(
        Command::new(BIN)
            .args(["serve", "--device"])
            .arg(dev)
            .args(["--listen", "tcp://127.0.0.1:0", "--ost", &format!("0={ost}")])
            .args(["--metrics", "127.0.0.1:0", "--mmp-interval-ms", "100"])
            .args(["--precreate-batch", "64"]),
    )
    .unwrap()
}

/// Waits up to 20 s for a line starting with `prefix`; returns the rest.
fn wait_line(node: &Node, prefix: &str) -> String {
    node.wait_prefix(prefix, Duration::from_secs(20))
        .expect("no such line in time (or mdsd ended)")
}

fn stop_clean(mut node: Node) {
    assert!(node.stop().unwrap().success());
}

/// One HTTP exchange: the status code and the body.
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status");
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

fn delta(a: &[Sample], b: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    get(b, name, labels) - get(a, name, labels)
}

#[test]
fn counters_move_by_exactly_the_operations_done_and_carry_the_job_id() {
    // The client library takes its job id from the environment; set before any thread starts.
    // SAFETY: no other thread of this test process exists yet, so nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("RUSTRE_JOBID", "env.job-7") };
    let dev = device();
    let ost = FakeOst::start("tcp://127.0.0.1:0", 0);
    let node = start(&dev.0, &ost.addr.to_string());
    let url = wait_line(&node, "mdsd: metrics on http://");
    let maddr: SocketAddr = url.trim_end_matches("/metrics").parse().unwrap();
    let addr = wait_line(&node, "mdsd: serving on ");

    let before = scrape(maddr);
    assert_eq!(get(&before, "rustre_mds_active", &[]), 1.0);
    assert_eq!(get(&before, "rustre_mds_requests_total", &[("op", "mkdir")]), 0.0);

    // Raw RPCs under a job id of our own: 8 requests, 3 of them failing.
    let client_id = 0x5151;
    let m = Mds::connect(&addr.parse().unwrap(), client_id);
    let _: pb::HandshakeReply = m
        .call(
            Opcode::Handshake,
            &pb::HandshakeRequest {
                cluster_name: "mt".into(),
                protocol_version: u32::from(rustre_proto::frame::VERSION),
                client_id,
                role: pb::PeerRole::Client as i32,
                job_id: "ior.alice".into(),
                ..Default::default()
            },
        )
        .unwrap();
    m.mkdir(1, "a").unwrap();
    m.mkdir(1, "b").unwrap();
    assert_eq!(m.mkdir(1, "a").unwrap_err().errno, libc::EEXIST);
    m.lookup(1, "a").unwrap();
    assert_eq!(m.lookup(1, "zz").unwrap_err().errno, libc::ENOENT);
    assert_eq!(m.lookup(1, "zz").unwrap_err().errno, libc::ENOENT);
    m.create(1, "f").unwrap();

    let after = scrape(maddr);
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    assert_eq!(d("rustre_mds_requests_total", &[("op", "handshake")]), 1.0);
    assert_eq!(d("rustre_mds_requests_total", &[("op", "mkdir")]), 3.0);
    assert_eq!(d("rustre_mds_requests_total", &[("op", "lookup")]), 3.0);
    assert_eq!(d("rustre_mds_requests_total", &[("op", "create")]), 1.0);
    assert_eq!(d("rustre_mds_requests_total", &[("op", "unlink")]), 0.0);
    assert_eq!(d("rustre_mds_errors_total", &[("op", "mkdir"), ("errno", "17")]), 1.0);
    assert_eq!(d("rustre_mds_errors_total", &[("op", "lookup"), ("errno", "2")]), 2.0);
    assert_eq!(d("rustre_mds_errors_total", &[("op", "create"), ("errno", "17")]), 0.0);
    assert_eq!(d("rustre_mds_request_duration_seconds_count", &[("op", "mkdir")]), 3.0);
    assert_eq!(
        d(
            "rustre_mds_request_duration_seconds_bucket",
            &[("op", "lookup"), ("le", "+Inf")]
        ),
        3.0
    );
    assert!(d("rustre_mds_request_duration_seconds_sum", &[("op", "mkdir")]) > 0.0);
    assert_eq!(
        get(&after, "rustre_mds_job_requests_total", &[("job", "ior.alice")]),
        8.0
    );
    for (op, n) in [("handshake", 1.0), ("mkdir", 3.0), ("lookup", 3.0), ("create", 1.0)] {
        let labels = [("job", "ior.alice"), ("op", op)];
        assert_eq!(get(&after, "rustre_mds_job_ops_total", &labels), n, "{op}");
    }
    assert!(
        value(
            &after,
            "rustre_mds_job_ops_total",
            &[("job", "ior.alice"), ("op", "unlink")]
        )
        .is_none()
    );
    let client = format!("{client_id:#x}");
    assert_eq!(
        get(&after, "rustre_mds_client_requests_total", &[("client", &client)]),
        8.0
    );
    assert!(get(&after, "rustre_mds_job_request_bytes_total", &[("job", "ior.alice")]) > 0.0);
    assert!(d("rustre_mds_commits_total", &[]) >= 1.0);
    // Two mkdirs and a create at least (precreated ranges are committed too).
    assert!(d("rustre_mds_commit_entries_total", &[]) >= 3.0);
    assert_eq!(get(&after, "rustre_mds_connections", &[]), 1.0);
    assert_eq!(get(&after, "rustre_mds_inodes", &[]), 4.0);
    assert_eq!(get(&after, "rustre_mds_queue_capacity", &[]), 4096.0);
    assert!(value(&after, "rustre_mds_queue_depth", &[]).is_some());

    // The client library's handshake names the job from RUSTRE_JOBID.
    let mut config = rustre::ClientConfig::from_addresses(&addr).unwrap();
    config.limits.call_timeout_ms = 20_000;
    let c = rustre::Client::connect(config).unwrap();
    c.mkdir("/envdir", 0o755, None).unwrap();
    let s = scrape(maddr);
    let env_job = get(&s, "rustre_mds_job_requests_total", &[("job", "env.job-7")]);
    assert!(env_job >= 2.0, "handshake and mkdir at least: {env_job}");
    assert_eq!(get(&s, "rustre_mds_job_requests_total", &[("job", "ior.alice")]), 8.0);
    assert_eq!(get(&s, "rustre_mds_connections", &[]), 2.0);
    c.disconnect();
    m.conn.close();

    // Only GET /metrics is served.
    assert_eq!(http(maddr, "GET / HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(maddr, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(maddr, "garbage\r\n\r\n").0, 400);

    stop_clean(node);
    assert!(TcpStream::connect(maddr).is_err(), "the endpoint stops with the daemon");
    drop(ost);
}
