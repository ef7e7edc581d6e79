//! The `ostd` binary with the command lines the rest of the system relies on.
#![allow(clippy::unwrap_used)]

use prost::Message;
use rustre_fabric::{Address, ConnOptions, connect};
use rustre_proto::{Opcode, pb};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const OSTD: &str = env!("CARGO_BIN_EXE_ostd");

#[test]
fn mkfs_serve_check_from_the_command_line() {
    let dir = tempfile::Builder::new()
        .prefix("rustre-ostd-cli-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let dev = dir.path().join("ost3.img");
    let dev = dev.to_str().unwrap();

    let out = Command::new(OSTD)
        .args(["mkfs", "--index", "3", "--fsname", "clifs", dev, "--size", "64M"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(dev).unwrap().len(), 64 << 20);
    let out = Command::new(OSTD)
        .args(["mkfs", "--index", "4", "--fsname", "clifs", dev])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds rustre OST3") && err.contains(dev), "{err}");

    let mut child = Command::new(OSTD)
        .args([
            "serve",
            "--device",
            dev,
            "--listen",
            "tcp://127.0.0.1:0",
            "--node",
            "cli-node",
        ])
        .args([
            "--mmp-interval-ms",
            "50",
            "--workers",
            "2",
            "--buffers",
            "4",
            "--max-io",
            "1M",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ostd: serving OST3 on tcp://127.0.0.1:"), "{line:?}");
    let addr: Address = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let c = connect(
        &addr,
        &ConnOptions {
            call_timeout: Duration::from_secs(20),
            ..ConnOptions::default()
        },
    )
    .unwrap();
    let r = c
        .call(
            Opcode::OstStatfs as u16,
            &pb::OstStatfsRequest { ost_index: 3 }.encode_to_vec(),
        )
        .unwrap();
    let st = pb::OstStatfsReply::decode(&r.body[..]).unwrap();
    assert_eq!((st.ost_index, st.fsname.as_str()), (3, "clifs"));
    c.close();
    // SAFETY: kill(2) of the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());

    let out = Command::new(OSTD).args(["check", dev]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("0 problem(s)"), "{text}");
    let out = Command::new(OSTD)
        .args(["check", "/dev/shm/rustre-no-such-ost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rustre-no-such-ost"));
}

#[test]
fn mkfs_preallocate_reserves_every_block_or_leaves_nothing() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::Builder::new()
        .prefix("rustre-ostd-prealloc-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let sparse = dir.path().join("sparse.img");
    let full = dir.path().join("full.img");
    for (dev, extra) in [(&sparse, None), (&full, Some("--preallocate"))] {
        let out = Command::new(OSTD)
            .args(["mkfs", "--index", "0", "--fsname", "pre", "--size", "32M"])
            .args(extra)
            .arg(dev)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let allocated = |p: &std::path::Path| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(allocated(&sparse) < 16 << 20, "mkfs alone writes only the metadata");
    // The zeros written over a new tmpfs file go in before the format, not over it.
    let out = Command::new(OSTD).arg("check").arg(&full).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("0 problem(s)"), "{text}");
    assert!(
        allocated(&full) >= 32 << 20,
        "every block reserved: {}",
        allocated(&full)
    );

    // More than the file system holds: a clear error naming the device, and no file left.
    let huge = dir.path().join("huge.img");
    let out = Command::new(OSTD)
        .args([
            "mkfs",
            "--index",
            "1",
            "--fsname",
            "pre",
            "--size",
            "8T",
            "--preallocate",
        ])
        .arg(&huge)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("preallocating") && err.contains("huge.img"), "{err}");
    assert!(!huge.exists(), "the file mkfs made is removed again");

    // A device that is not a regular file is refused.
    let out = Command::new(OSTD)
        .args(["mkfs", "--index", "2", "--fsname", "pre", "--preallocate", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not") && err.contains("/dev/null"), "{err}");
}
