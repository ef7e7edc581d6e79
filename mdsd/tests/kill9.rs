//! kill -9 of the real `mdsd` during a create/rename/unlink storm over tcp, on a /dev/shm file
//! device: after a restart every acknowledged operation is there and `mdsd check` is clean.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FakeOst, Mds};
use rustre_testkit::Node;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
    Device(dir.join(format!("rustre-mdsd-kill9-{}.mdt", std::process::id())))
}

struct Served {
    node: Node,
    addr: String,
}

fn serve(dev: &Path, ost: &str) -> Served {
    let node = Node::spawn_command(
        Command::new(BIN)
            .args(["serve", "--device"])
            .arg(dev)
            .args([
                "--listen",
                "tcp://127.0.0.1:0",
                "--ost",
                &format!("0={ost}"),
                "--mmp-interval-ms",
                "20",
            ])
            .args(["--precreate-batch", "256"]),
    )
    .expect("spawn mdsd");
    // The first line, however long it takes (empty if mdsd ends without one).
    let line = node.wait_line(|_| true, Duration::MAX).unwrap_or_default();
    let addr = line
        .trim()
        .strip_prefix("mdsd: serving on ")
        .unwrap_or_else(|| panic!("unexpected: {line:?}"))
        .to_string();
    Served { node, addr }
}

#[test]
fn kill_dash_nine_during_a_storm_loses_nothing_acknowledged() {
    let ost = FakeOst::start("tcp://127.0.0.1:0", 0);
    let dev = device();
    let st = Command::new(BIN)
        .args(["mkfs", "--fsname", "k9", "--size", "67108864"])
        .arg(&dev.0)
        .status()
        .unwrap();
    assert!(st.success());
    let s = serve(&dev.0, &ost.addr.to_string());
    let pid = s.node.pid() as i32;
    // A second server on the same device is fenced off by MMP while the first one serves.
    let second = Command::new(BIN)
        .args(["serve", "--device"])
        .arg(&dev.0)
        .args(["--listen", "tcp://127.0.0.1:0", "--mmp-interval-ms", "100"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by node"), "{err}");
    let c = Mds::connect(&s.addr.parse().unwrap(), 11);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: kill(2) on the pid of the child this test spawned.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let t0 = Instant::now();
    let mut i = 0u64;
    let mut acked_ops = 0;
    // The operation in flight when the server died: (name removed, name added).
    let in_flight: (Option<String>, Option<String>) = loop {
        i += 1;
        let (op, removed, added) = match i % 4 {
            0 if !acked.is_empty() => {
                let v = acked.iter().next().cloned().unwrap();
                ("unlink", Some(v), None)
            }
            3 if !acked.is_empty() => {
                let v = acked.iter().next_back().cloned().unwrap();
                ("rename", Some(v), Some(format!("r{i}")))
            }
            _ => ("create", None, Some(format!("f{i}"))),
        };
        let r = match op {
            "unlink" => c.unlink(1, removed.as_deref().unwrap()),
            "rename" => c.rename(1, removed.as_deref().unwrap(), 1, added.as_deref().unwrap()),
            _ => c.create(1, added.as_deref().unwrap()).map(|_| ()),
        };
        match r {
            Ok(()) => {
                if let Some(x) = &removed {
                    acked.remove(x);
                }
                if let Some(x) = &added {
                    acked.insert(x.clone());
                }
                acked_ops += 1;
            }
            // Transport failure: the server is gone.
            Err(e) if e.errno == 0 => break (removed, added),
            Err(e) => panic!("{op} failed while serving: {e:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the server was never killed");
    };
    killer.join().unwrap();
    drop(s);
    assert!(
        acked_ops > 20,
        "only {acked_ops} operations acknowledged before the kill"
    );

    let s = serve(&dev.0, &ost.addr.to_string());
    let c = Mds::connect(&s.addr.parse().unwrap(), 12);
    let got: BTreeSet<String> = c.readdir_all(1).into_iter().collect();
    let mut alt = acked.clone();
    if let Some(x) = in_flight.0 {
        alt.remove(&x);
    }
    if let Some(x) = in_flight.1 {
        alt.insert(x);
    }
    assert!(
        got == acked || got == alt,
        "after kill -9: missing {:?} extra {:?}",
        acked.difference(&got).collect::<Vec<_>>(),
        got.difference(&alt).collect::<Vec<_>>()
    );
    drop(c);
    // Stop it cleanly and check the device.
    let mut s = s;
    let st = s.node.stop().unwrap();
    assert!(st.success(), "clean stop: {st:?}");
    let out = Command::new(BIN).arg("check").arg(&dev.0).output().unwrap();
    assert!(
        out.status.success(),
        "mdsd check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("clean"));
}
