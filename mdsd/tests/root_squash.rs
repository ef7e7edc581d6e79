//! Root squash against a live `mdsd` process: with `--root-squash 65534:65533`, requests from uid
//! 0 are checked and create entries as 65534:65533, unless they come from an exempt network
//! (`--root-squash-exempt`); other users are untouched; the MDT checks clean afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Mds, fid};
use rustre_proto::{Opcode, pb};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mdsd");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Starts `mdsd serve` on `dev` with `extra` arguments; returns it and its address.
    fn start(dev: &Path, extra: &[&str]) -> (Daemon, rustre_fabric::Address) {
        let mut child = Command::new(BIN)
            .args(["serve", "--device"])
            .arg(dev)
            .args([
                "--listen",
                "tcp://127.0.0.1:0",
                "--ost",
                "0=tcp://127.0.0.1:1",
                "--mmp-interval-ms",
                "50",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take();
        let daemon = Daemon(child);
        let out = out.unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.checked_duration_since(Instant::now()).expect("mdsd did not start");
            let l = rx.recv_timeout(left).expect("mdsd did not start");
            if let Some(a) = l.strip_prefix("mdsd: serving on ") {
                return (daemon, a.trim().parse().unwrap());
            }
        }
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        assert!(self.0.wait().unwrap().success());
    }
}

fn creds(uid: u32) -> Option<pb::Credentials> {
    Some(pb::Credentials {
        uid,
        gid: uid,
        groups: vec![],
    })
}

fn mkdir(c: &Mds, parent: Option<pb::Fid>, name: &str, uid: u32, mode: u32) -> Result<pb::Attr, pb::ErrorReply> {
    c.call::<pb::MdsMkdirReply>(
        Opcode::MdsMkdir,
        &pb::MdsMkdirRequest {
            creds: creds(uid),
            parent,
            name: name.into(),
            walk: Vec::new(),
            mode,
            default_layout: None,
        },
    )
    .map(|r| r.attr.unwrap())
}

#[test]
fn root_is_squashed_unless_exempt() {
    let dir = tempfile::tempdir().unwrap();
    let dev: PathBuf = dir.path().join("mdt");
    let st = Command::new(BIN)
        .args(["mkfs", "--fsname", "sq", "--size", "16777216"])
        .arg(&dev)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    // Root from an exempt network (loopback) keeps root: it makes a shared sticky directory.
    let (d, addr) = Daemon::start(
        &dev,
        &["--root-squash", "65534:65533", "--root-squash-exempt", "127.0.0.0/8"],
    );
    let c = Mds::connect(&addr, 11);
    let shared = mkdir(&c, fid(1), "shared", 0, 0o1777).unwrap();
    assert_eq!((shared.uid, shared.gid), (0, 0));
    drop(c);
    d.stop();

    // Without the exemption root is 65534:65533.
    let (d, addr) = Daemon::start(&dev, &["--root-squash", "65534:65533"]);
    let c = Mds::connect(&addr, 12);
    let e = mkdir(&c, fid(1), "r", 0, 0o755).unwrap_err();
    assert_eq!(e.errno, libc::EACCES, "{e:?}");
    let s = mkdir(&c, shared.fid, "mine", 0, 0o755).unwrap();
    assert_eq!((s.uid, s.gid), (65534, 65533), "created by squashed root");
    let u = mkdir(&c, shared.fid, "user", 1000, 0o755).unwrap();
    assert_eq!((u.uid, u.gid), (1000, 1000), "other users are untouched");
    let e = c
        .call::<pb::MdsSetattrReply>(
            Opcode::MdsSetattr,
            &pb::MdsSetattrRequest {
                creds: creds(0),
                fid: u.fid,
                uid: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.errno, libc::EPERM, "squashed root may not chown: {e:?}");
    drop(c);
    d.stop();

    // Off by default: root is root again.
    let (d, addr) = Daemon::start(&dev, &[]);
    let c = Mds::connect(&addr, 13);
    assert_eq!(mkdir(&c, fid(1), "r", 0, 0o755).unwrap().uid, 0);
    drop(c);
    d.stop();
    let out = Command::new(BIN).arg("check").arg(&dev).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("clean"), "mdsd check: {text}");
}
