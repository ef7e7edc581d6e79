//! `rustre cluster up|status|down` driven through the binary, with the real `ostd` and `mdsd`.
//!
//! Every test uses its own temporary data directory, listens on 127.0.0.1 only (free ports), and
//! brings down whatever it started, also when it fails (see `Cluster`'s Drop).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{RUSTRE, alive, build_daemons, pids, rustre, text};
use std::time::{Duration, Instant};

fn connect(data: &Path) -> rustre::Client {
    let config = rustre::ClientConfig::from_file(&data.join("client.toml")).unwrap();
    rustre::Client::connect(config).unwrap()
}

fn write_file(data: &Path, path: &str, bytes: &[u8]) {
    let client = connect(data);
    let flags = rustre::OpenFlags {
        write: true,
        create: true,
        excl: true,
        ..Default::default()
    };
    let fd = client.open(path, flags, 0o644, None).unwrap();
    assert_eq!(client.pwrite(fd, bytes, 0).unwrap(), bytes.len());
    client.fsync(fd).unwrap();
    client.close(fd).unwrap();
    client.disconnect();
}

fn read_file(data: &Path, path: &str) -> Vec<u8> {
    let client = connect(data);
    let size = client.stat(path).unwrap().size;
    let fd = client
        .open(
            path,
            rustre::OpenFlags {
                read: true,
                ..Default::default()
            },
            0,
            None,
        )
        .unwrap();
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = client.pread(fd, &mut buf[done..], done as u64).unwrap();
        assert!(n > 0, "{path}: end of file at {done} of {size}");
        done += n;
    }
    client.close(fd).unwrap();
    client.disconnect();
    buf
}

/// A data directory whose cluster is brought down when the test ends, pass or fail.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        build_daemons();
        Cluster {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    fn up(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "cluster",
            "up",
            "--osts",
            "2",
            "--size-per-ost",
            "256M",
            "--mdt-size",
            "64M",
        ];
        args.extend_from_slice(extra);
        rustre(&args, self.data())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(RUSTRE)
            .args(["cluster", "down", "--data"])
            .arg(self.data())
            .output();
    }
}

#[test]
fn up_refuse_status_down_up_round_trip_keeps_data() {
    use std::os::unix::fs::MetadataExt;
    let c = Cluster::new();
    let out = c.up(&["--preallocate"]);
    assert!(out.status.success(), "up failed:\n{}", text(&out));
    for ost in ["ost0.img", "ost1.img"] {
        let allocated = std::fs::metadata(c.data().join(ost)).unwrap().blocks() * 512;
        assert!(allocated >= 256 << 20, "{ost}: {allocated} bytes allocated of 256 MiB");
    }
    for f in [
        "cluster.toml",
        "client.toml",
        "mdt0.img",
        "ost0.img",
        "ost1.img",
        "logs/mds.log",
        "logs/ost1.log",
    ] {
        assert!(c.data().join(f).exists(), "{f} missing after up");
    }
    let client = std::fs::read_to_string(c.data().join("client.toml")).unwrap();
    assert!(client.contains("mds = [\"tcp://127.0.0.1:"), "{client}");
    let running = pids(c.data());
    assert_eq!(
        running.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["mds", "ost0", "ost1"]
    );
    assert!(running.iter().all(|(_, p)| alive(*p)));

    // The MDS accepts connections on the address the client config names.
    let port: u16 = client
        .lines()
        .find(|l| l.starts_with("mds ="))
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("mds port accepts");

    let out = rustre(&["cluster", "status"], c.data());
    assert!(out.status.success(), "status of a running cluster must exit 0");
    let status = text(&out);
    for (name, pid) in &running {
        let line = status
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("{name} in {status}"));
        assert!(line.contains(&pid.to_string()) && line.contains("running"), "{line}");
    }

    // A file written through librustre before `down` must read back the same after `up`.
    let payload: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    write_file(c.data(), "/kept.dat", &payload);

    let out = rustre(&["cluster", "down"], c.data());
    assert!(out.status.success(), "down failed:\n{}", text(&out));
    assert!(pids(c.data()).is_empty(), "pid files left after down");
    let deadline = Instant::now() + Duration::from_secs(5);
    while running.iter().any(|(_, p)| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(running.iter().all(|(_, p)| !alive(*p)), "daemons alive after down");
    let out = rustre(&["cluster", "status"], c.data());
    assert_eq!(out.status.code(), Some(3), "status of a stopped cluster exits 3");
    assert!(text(&out).contains("stopped"));

    // Up again: the devices are kept (not reformatted), the same cluster comes back.
    let out = c.up(&["--preallocate"]);
    assert!(out.status.success(), "second up failed:\n{}", text(&out));
    assert!(text(&out).contains("keeping"), "devices must be kept:\n{}", text(&out));
    assert!(
        text(&out).contains("--preallocate applies to new devices"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("formatting"));
    assert_eq!(read_file(c.data(), "/kept.dat"), payload, "data changed across down/up");
}

#[test]
fn stale_pid_files_do_not_block_up() {
    let c = Cluster::new();
    let out = c.up(&[]);
    assert!(out.status.success(), "up failed:\n{}", text(&out));
    // Kill one daemon behind rustre's back: its pid file goes stale.
    let (_, ost1) = pids(c.data()).into_iter().find(|(n, _)| n == "ost1").unwrap();
    Command::new("kill").args(["-9", &ost1.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(ost1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = rustre(&["cluster", "status"], c.data());
    assert_eq!(status.status.code(), Some(3));
    assert!(
        text(&status)
            .lines()
            .any(|l| l.starts_with("ost1") && l.contains("dead")),
        "{}",
        text(&status)
    );
    // `up` refuses while the others still run, naming them, and clears the stale pid file.
    let out = c.up(&[]);
    let msg = text(&out);
    assert!(
        !out.status.success() && msg.contains("already running") && !msg.contains("ost1 pid"),
        "{msg}"
    );
    assert!(msg.contains("stale") && msg.contains("ost1"), "{msg}");
    let out = rustre(&["cluster", "down"], c.data());
    assert!(out.status.success());
    assert!(
        text(&out).contains("stopped mds") && !text(&out).contains("stopped ost1"),
        "{}",
        text(&out)
    );
    assert!(pids(c.data()).is_empty());
    let out = c.up(&[]);
    assert!(out.status.success(), "up after a crashed OST failed:\n{}", text(&out));
}

#[test]
fn demo_at_a_tiny_size_verifies_and_brings_the_cluster_down() {
    let c = Cluster::new();
    let out = rustre(
        &[
            "demo",
            "--osts",
            "2",
            "--size-per-ost",
            "256M",
            "--mdt-size",
            "64M",
            "--file-size",
            "9M",
            "--stripe-size",
            "64K",
            "--small-files",
            "20",
        ],
        c.data(),
    );
    let msg = text(&out);
    assert!(out.status.success(), "demo failed:\n{msg}");
    for phase in [
        "write",
        "read + verify",
        "create",
        "stat",
        "unlink",
        "all data verified",
    ] {
        assert!(msg.contains(phase), "{phase} missing from:\n{msg}");
    }
    assert!(
        pids(c.data()).is_empty(),
        "the demo must bring the cluster it started down"
    );
    // A stripe count above the OST count is refused with the numbers.
    let out = rustre(
        &["demo", "--file-size", "1M", "--stripe-count", "3", "--small-files", "1"],
        c.data(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--stripe-count 3") && text(&out).contains("2 OSTs"),
        "{}",
        text(&out)
    );
    assert!(pids(c.data()).is_empty());
}
