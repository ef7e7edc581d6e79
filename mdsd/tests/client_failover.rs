//! MDS failover as an application sees it: the Rust client (librustre) writes files through a real
//! ostd (in this process) and creates/unlinks names on an MDS pair of real `mdsd` processes, while
//! the test kills the active MDS with SIGKILL several times and restarts it as the new standby.
//! No call may fail (a failover is a delay, not an error), no resend may be executed twice (a
//! create resent after a kill gets its original reply from the rebuilt reply cache, not EEXIST),
//! and afterwards every acknowledged file is there byte for byte and `mdsd check` is clean.
//! Everything runs with a cluster secret, so the capabilities each new active MDS issues must be
//! accepted by the OST on the client's existing connection (one client identity throughout).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustre::{Client, ClientConfig, OpenFlags};
use rustre_ostd::dev::{UringConfig, UringDevice};
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::service::{ServeConfig as OstServeConfig, Server as OstServer};
use rustre_testkit::{Node, free_port};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mdsd");
/// Failovers per run: 3 here, more in the chaos lane (`RUSTRE_CHAOS_FAILOVERS`).
fn failovers() -> usize {
    std::env::var("RUSTRE_CHAOS_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

struct Device(PathBuf);

impl Drop for Device {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn shm(name: &str) -> PathBuf {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("rustre-mdsd-cfo-{name}-{}", std::process::id()))
}

fn start(dev: &Path, port: u16, ost: &str, standby: bool, secret: &Path) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--device"])
        .arg(dev)
        .args([
            "--listen",
            &format!("tcp://127.0.0.1:{port}"),
            "--ost",
            &format!("0={ost}"),
        ])
        .args(["--mmp-interval-ms", "100", "--node", &format!("mds-{port}")])
        .args(["--precreate-batch", "64"])
        .arg("--secret")
        .arg(secret);
    if standby {
        cmd.arg("--standby");
    }
    Node::spawn_command(&mut cmd).unwrap()
}

fn content(i: u64) -> Vec<u8> {
    (0..(4096 + (i % 7) * 1000)).map(|k| (k * 31 + i) as u8).collect()
}

#[test]
fn clients_ride_through_repeated_mds_kill9_losing_nothing() {
    // The OST: a real ostd on a /dev/shm file, in this process.
    let ost_dev = Device(shm("ost"));
    std::fs::File::create(&ost_dev.0).unwrap().set_len(128 << 20).unwrap();
    let ost_path = ost_dev.0.to_str().unwrap().to_string();
    let d = UringDevice::open(
        &ost_path,
        &UringConfig {
            rings: 1,
            ..UringConfig::default()
        },
    )
    .unwrap();
    // Room for the objects of a 20-failover chaos run (one per file, unlinked ones destroyed).
    let mut mo = MkfsOptions::new("cfo", 0);
    mo.max_objects = 1 << 16;
    mkfs(&d, &mo).unwrap();
    drop(d);
    let secret = rustre_proto::auth::ClusterSecret::generate(32).unwrap();
    let secret_file = Device(shm("secret"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_file.0)
            .unwrap();
        std::io::Write::write_all(&mut f, secret.to_file_text().as_bytes()).unwrap();
    }
    let mut oc = OstServeConfig::new(&ost_path, "tcp://127.0.0.1:0".parse().unwrap());
    oc.auth = Some(Arc::new(rustre_proto::auth::ServerAuth::new(
        secret.clone(),
        rustre_proto::auth::DEFAULT_WINDOW_MS,
        1024,
    )));
    oc.node = "oss".into();
    oc.workers = 1;
    oc.pool_buffers = 4;
    oc.mmp_interval = Duration::from_millis(50);
    let ost = OstServer::start(oc).unwrap();
    let ost_addr = ost.local_addr().to_string();

    // The MDT and its pair.
    let mdt = Device(shm("mdt"));
    let st = Command::new(BIN)
        .args(["mkfs", "--fsname", "cfo", "--size", "67108864"])
        .arg(&mdt.0)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let ports = [free_port().unwrap(), free_port().unwrap()];
    let mut active = start(&mdt.0, ports[0], &ost_addr, false, &secret_file.0);
    assert!(
        active
            .wait_prefix("mdsd: serving on ", Duration::from_secs(10))
            .is_some()
    );
    let mut standby = start(&mdt.0, ports[1], &ost_addr, true, &secret_file.0);
    assert!(
        standby
            .wait_prefix("mdsd: standby for ", Duration::from_secs(10))
            .is_some()
    );
    let mut active_port = 0;

    let spec = format!("tcp://127.0.0.1:{},tcp://127.0.0.1:{}", ports[0], ports[1]);
    let mut config = ClientConfig::from_addresses(&spec).unwrap();
    config.limits.call_timeout_ms = 20_000;
    config.limits.connect_timeout_ms = 1_000;
    config.secret = Some(secret.clone());
    let client = Arc::new(Client::connect(config).unwrap());

    // The storm: create+write+close a file, and unlink every third one again.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<u64, bool>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let storm = {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let path = format!("/f{i}");
                let flags = OpenFlags {
                    write: true,
                    create: true,
                    excl: true,
                    ..OpenFlags::default()
                };
                let fd = client
                    .open(&path, flags, 0o644, None)
                    .map_err(|e| format!("open {path}: {e}"))?;
                let data = content(i);
                let n = client.pwrite(fd, &data, 0).map_err(|e| format!("write {path}: {e}"))?;
                if n != data.len() {
                    return Err(format!("short write {path}: {n}"));
                }
                client.close(fd).map_err(|e| format!("close {path}: {e}"))?;
                acked.lock().unwrap().insert(i, true);
                if i.is_multiple_of(3) {
                    let victim = format!("/f{}", i - 1);
                    client.unlink(&victim).map_err(|e| format!("unlink {victim}: {e}"))?;
                    acked.lock().unwrap().insert(i - 1, false);
                }
            }
            Ok(i)
        })
    };

    let mut takeovers = Vec::new();
    let failovers = failovers();
    for _ in 0..failovers {
        std::thread::sleep(Duration::from_millis(300));
        let before = acked.lock().unwrap().len();
        let _ = active.kill9();
        let t0 = Instant::now();
        assert!(
            standby
                .wait_prefix("mdsd: serving on ", Duration::from_secs(10))
                .is_some(),
            "no takeover"
        );
        takeovers.push(t0.elapsed());
        // The killed node comes back as the new standby on its own port.
        let dead_port = ports[active_port];
        active_port = 1 - active_port;
        let new_standby = start(&mdt.0, dead_port, &ost_addr, true, &secret_file.0);
        assert!(
            new_standby
                .wait_prefix("mdsd: standby for ", Duration::from_secs(10))
                .is_some()
        );
        active = std::mem::replace(&mut standby, new_standby);
        // The storm goes on through the new active server.
        let end = Instant::now() + Duration::from_secs(15);
        while acked.lock().unwrap().len() < before + 5 {
            assert!(Instant::now() < end, "no progress after the failover");
            assert!(!storm.is_finished(), "storm failed: {:?}", storm.join());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let ops = storm.join().unwrap().expect("no operation fails across failovers");
    eprintln!("{ops} files through {failovers} MDS failovers; takeovers {takeovers:?}");
    assert!(takeovers.iter().all(|t| *t < Duration::from_secs(5)), "{takeovers:?}");

    // Every acknowledged file is there, byte for byte, and nothing unlinked came back.
    let acked = acked.lock().unwrap().clone();
    let listed: Vec<String> = client
        .read_dir_all("/")
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect();
    for (i, present) in &acked {
        let name = format!("f{i}");
        assert_eq!(listed.contains(&name), *present, "{name}");
        if *present {
            let fd = client
                .open(
                    &format!("/{name}"),
                    OpenFlags {
                        read: true,
                        ..OpenFlags::default()
                    },
                    0,
                    None,
                )
                .unwrap();
            let want = content(*i);
            let mut got = vec![0u8; want.len() + 10];
            let n = client.pread(fd, &mut got, 0).unwrap();
            assert_eq!(&got[..n], &want[..], "{name}");
            client.close(fd).unwrap();
        }
    }
    let want: Vec<String> = acked
        .iter()
        .filter(|(_, p)| **p)
        .map(|(i, _)| format!("f{i}"))
        .collect();
    let mut listed = listed;
    listed.sort();
    let mut want = want;
    want.sort();
    assert_eq!(listed, want, "the namespace is exactly the acknowledged operations");
    client.disconnect();
    drop(client);

    assert!(active.stop().unwrap().success());
    drop(standby);
    let out = Command::new(BIN).arg("check").arg(&mdt.0).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("clean"), "mdsd check: {text}");
    ost.shutdown().unwrap();
}
