//! Active/standby pairs of real `mdsd` processes on one MDT file: the standby takes over after a
//! kill -9 of the active within seconds, with the reply cache intact (a client resending its
//! requests under the same client id and xids gets the original replies), and MMP fences a node
//! that was only paused (no heartbeat, still alive) so that the two never serve together.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FakeOst, Mds};
use rustre_testkit::Node;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mdsd");
const INTERVAL_MS: &str = "100";

struct Device(PathBuf);

impl Drop for Device {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn device(tag: &str) -> Device {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = Device(dir.join(format!("rustre-mdsd-failover-{tag}-{}.mdt", std::process::id())));
    let st = Command::new(BIN)
        .args(["mkfs", "--fsname", "ha", "--size", "67108864"])
        .arg(&d.0)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    d
}

/// Starts an `mdsd` whose stdout and stderr lines (the latter prefixed `stderr: `) the test reads.
fn start(dev: &Path, ost: &str, node: &str, standby: bool) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--device"])
        .arg(dev)
        .args(["--listen", "tcp://127.0.0.1:0", "--ost", &format!("0={ost}")])
        .args([
            "--mmp-interval-ms",
            INTERVAL_MS,
            "--node",
            node,
            "--precreate-batch",
            "256",
        ]);
    if standby {
        cmd.arg("--standby");
    }
    Node::spawn_command_with_stderr(&mut cmd).unwrap()
}

/// Waits up to `limit` for the ready line; returns the address.
fn serving(node: &Node, limit: Duration) -> Option<String> {
    node.wait_prefix("mdsd: serving on ", limit)
}

fn stop_clean(mut node: Node) {
    let st = node.stop().unwrap();
    assert!(st.success(), "clean stop: {st:?}");
}

fn check_clean(dev: &Path) {
    let out = Command::new(BIN).arg("check").arg(dev).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("clean"), "mdsd check: {text}");
}

#[test]
fn standby_takes_over_after_kill9_and_answers_resends_from_the_reply_cache() {
    let ost = FakeOst::start("tcp://127.0.0.1:0", 0);
    let ost_addr = ost.addr.to_string();
    let dev = device("k9");
    let active = start(&dev.0, &ost_addr, "mds-a", false);
    let addr_a = serving(&active, Duration::from_secs(10)).expect("active serves");
    let standby = start(&dev.0, &ost_addr, "mds-b", true);
    assert!(
        standby
            .wait_prefix("mdsd: standby for ", Duration::from_secs(10))
            .is_some()
    );

    // Client 77's requests carry xids 1, 2, … on each new connection.
    let c = Mds::connect(&addr_a.parse().unwrap(), 77);
    let mut fids = Vec::new();
    for i in 0..10 {
        let r = c.create(1, &format!("f{i}")).unwrap();
        fids.push(r.attr.unwrap().fid.unwrap());
    }
    // While the active bumps its sequence the standby stays a standby.
    assert!(
        serving(&standby, Duration::from_millis(1200)).is_none(),
        "standby served a live MDT"
    );

    drop(c);
    active.signal(libc::SIGKILL).unwrap();
    let t0 = Instant::now();
    let addr_b = serving(&standby, Duration::from_secs(10)).expect("standby takes over");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");

    // The same client resends the same requests (same client id, same xids): every one is
    // answered from the rebuilt reply cache with the original fid, not EEXIST.
    let c = Mds::connect(&addr_b.parse().unwrap(), 77);
    for (i, fid) in fids.iter().enumerate() {
        let r = c
            .create(1, &format!("f{i}"))
            .unwrap_or_else(|e| panic!("resend of f{i}: {e:?}"));
        assert_eq!(r.attr.unwrap().fid.as_ref(), Some(fid), "f{i}");
    }
    // A new request of that client is executed; another client's duplicate create is refused.
    c.create(1, "f10").unwrap();
    let other = Mds::connect(&addr_b.parse().unwrap(), 78);
    assert_eq!(other.create(1, "f3").unwrap_err().errno, 17);
    let mut names = c.readdir_all(1);
    names.sort();
    let mut want: Vec<String> = (0..=10).map(|i| format!("f{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    drop((c, other));
    drop(active);
    stop_clean(standby);
    check_clean(&dev.0);
}

#[test]
fn a_paused_active_is_fenced_and_never_serves_beside_the_standby() {
    let ost = FakeOst::start("tcp://127.0.0.1:0", 0);
    let ost_addr = ost.addr.to_string();
    let dev = device("pause");
    let mut active = start(&dev.0, &ost_addr, "mds-a", false);
    let addr_a = serving(&active, Duration::from_secs(10)).expect("active serves");
    let standby = start(&dev.0, &ost_addr, "mds-b", true);
    assert!(
        standby
            .wait_prefix("mdsd: standby for ", Duration::from_secs(10))
            .is_some()
    );
    let ca = Mds::connect(&addr_a.parse().unwrap(), 5);
    ca.create(1, "before").unwrap();

    // The active is alive but silent (no heartbeat, no MMP updates): the standby takes over.
    active.signal(libc::SIGSTOP).unwrap();
    let addr_b = serving(&standby, Duration::from_secs(10)).expect("standby takes over");
    let cb = Mds::connect(&addr_b.parse().unwrap(), 6);
    cb.create(1, "on-b").unwrap();

    // A request reaches the paused node; then it resumes. It must see the standby's MMP claim
    // and stop before committing or answering anything.
    let late = std::thread::spawn(move || ca.create(1, "on-a"));
    std::thread::sleep(Duration::from_millis(200));
    active.signal(libc::SIGCONT).unwrap();
    let status = active
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the fenced node kept running");
    assert!(!status.success(), "a fenced node exits with an error");
    let r = late.join().unwrap();
    assert!(
        r.is_err() && r.as_ref().unwrap_err().errno == 0,
        "the fenced node answered: {r:?}"
    );
    let mut fenced_said = String::new();
    while let Some(l) = active.try_line() {
        fenced_said.push_str(&l);
        fenced_said.push('\n');
    }
    assert!(fenced_said.contains("in use by node"), "{fenced_said}");

    let mut names = cb.readdir_all(1);
    names.sort();
    assert_eq!(names, vec!["before".to_string(), "on-b".to_string()]);
    drop(cb);
    stop_clean(standby);
    check_clean(&dev.0);
}

#[test]
fn a_standby_does_not_take_over_a_cleanly_stopped_mdt_and_stops_on_sigterm() {
    let ost = FakeOst::start("tcp://127.0.0.1:0", 0);
    let ost_addr = ost.addr.to_string();
    let dev = device("clean");
    let active = start(&dev.0, &ost_addr, "mds-a", false);
    assert!(serving(&active, Duration::from_secs(10)).is_some());
    let mut standby = start(&dev.0, &ost_addr, "mds-b", true);
    assert!(
        standby
            .wait_prefix("mdsd: standby for ", Duration::from_secs(10))
            .is_some()
    );
    // A clean stop marks the MMP block "clean": a deliberate stop, not a failure.
    stop_clean(active);
    assert!(
        serving(&standby, Duration::from_millis(1500)).is_none(),
        "standby took over a clean MDT"
    );
    standby.signal(libc::SIGTERM).unwrap();
    let status = standby
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("the standby ignored SIGTERM");
    assert!(status.success(), "{status:?}");
    check_clean(&dev.0);
}
