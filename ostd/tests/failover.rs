//! OSS failover as an application sees it: two real `ostd` processes on one OST device file (the
//! second `--standby`), an MDS in this process that knows both, and the Rust client streaming a
//! file and creating small ones while the test kills the active OSS with SIGKILL several times
//! and restarts it as the new standby. No call may fail, every acknowledged byte reads back, and
//! `ostd check` is clean at the end. The first test runs with a cluster secret: the file
//! streamed through every failover was opened (and its capabilities issued) before the first
//! one, so the new OSS must accept them on the client's new connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustre::{Client, ClientConfig, OpenFlags};
use rustre_mdsd::dev::FaultDevice;
use rustre_mdsd::mdt;
use rustre_mdsd::service::{HandlerConfig, MdsCore, ServeConfig, Server};
use rustre_testkit::{Node, free_port};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ostd");
const CHUNK: usize = 64 << 10;
/// The stream wraps over this many chunks (16 MiB), overwriting in place, so a long chaos run
/// does not fill the OST.
const SLOTS: u64 = 256;

struct Device(PathBuf);

impl Drop for Device {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Failovers per run: 3 here, more in the chaos lane (`RUSTRE_CHAOS_FAILOVERS`).
fn failovers() -> usize {
    std::env::var("RUSTRE_CHAOS_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn start(dev: &Path, port: u16, standby: bool, secret: Option<&Path>) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--device"])
        .arg(dev)
        .args(["--listen", &format!("tcp://127.0.0.1:{port}")])
        .args(["--mmp-interval-ms", "100", "--node", &format!("oss-{port}")])
        .args(["--workers", "1", "--buffers", "8"]);
    if standby {
        cmd.arg("--standby");
    }
    if let Some(s) = secret {
        cmd.arg("--secret").arg(s);
    }
    Node::spawn_command(&mut cmd).unwrap()
}

fn chunk(k: u64) -> Vec<u8> {
    (0..CHUNK as u64).map(|b| (b * 7 + k * 13 + (b >> 12)) as u8).collect()
}

fn small(i: u64) -> Vec<u8> {
    (0..(1000 + i * 37 % 5000)).map(|b| (b ^ i) as u8).collect()
}

#[test]
fn clients_ride_through_repeated_oss_kill9_losing_nothing() {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dev = Device(dir.join(format!("rustre-ostd-failover-{}", std::process::id())));
    // 1 GiB (sparse on /dev/shm): its object table (one object per 64 KiB of device) must hold every
    // small file the creator makes through 20 failovers; 128 MiB filled up at 2048 files.
    let st = Command::new(BIN)
        .args(["mkfs", "--index", "0", "--fsname", "ofo", "--size", "1073741824"])
        .arg(&dev.0)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let secret = rustre_proto::auth::ClusterSecret::generate(32).unwrap();
    let secret_file = Device(dir.join(format!("rustre-ostd-failover-secret-{}", std::process::id())));
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
    let sf = Some(secret_file.0.as_path());
    let ports = [free_port().unwrap(), free_port().unwrap()];
    let mut active = start(&dev.0, ports[0], false, sf);
    assert!(
        active
            .wait_prefix("ostd: serving OST0 on ", Duration::from_secs(10))
            .is_some()
    );
    let mut standby = start(&dev.0, ports[1], true, sf);
    assert!(
        standby
            .wait_prefix("ostd: standby for ", Duration::from_secs(10))
            .is_some()
    );
    let mut active_port = 0;
    let addrs: Vec<String> = ports.iter().map(|p| format!("tcp://127.0.0.1:{p}")).collect();

    // The MDS, in this process, with the OST's two servers.
    let (mut mdt_dev, _) = FaultDevice::new(32 << 20, 1);
    mdt::mkfs(&mut mdt_dev, "ofo", false, &MdsCore::initial_snapshot(0)).unwrap();
    let hcfg = HandlerConfig {
        fsname: "ofo".into(),
        osts: addrs.iter().map(|a| (0, a.clone())).collect(),
        mds_addresses: vec![],
        reply_cache_per_client: 64,
        reply_cache_clients: 16,
        max_readdir: 1024,
        inode_capacity: 1 << 20,
        server_id: 3,
        features: rustre_mdsd::service::FEATURES,
    };
    let cfg = ServeConfig {
        precreate_batch: 64,
        low_water: 16,
        auth: Some(Arc::new(rustre_proto::auth::ServerAuth::new(
            secret.clone(),
            rustre_proto::auth::DEFAULT_WINDOW_MS,
            1024,
        ))),
        ..ServeConfig::default()
    };
    let osts = addrs.iter().map(|a| (0, a.parse().unwrap())).collect();
    let (mds, _) = Server::start(mdt_dev, None, &"tcp://127.0.0.1:0".parse().unwrap(), hcfg, osts, cfg).unwrap();

    let mut config = ClientConfig::from_addresses(&mds.local_addr().to_string()).unwrap();
    config.limits.call_timeout_ms = 20_000;
    config.limits.connect_timeout_ms = 1_000;
    config.secret = Some(secret.clone());
    let client = Arc::new(Client::connect(config).unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let streamed = Arc::new(AtomicU64::new(0));
    let smalls: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (client, stop, streamed) = (client.clone(), stop.clone(), streamed.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let flags = OpenFlags {
                write: true,
                create: true,
                ..OpenFlags::default()
            };
            let fd = client.open("/stream", flags, 0o644, None).map_err(|e| e.to_string())?;
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let data = chunk(k);
                client
                    .pwrite(fd, &data, (k % SLOTS) * CHUNK as u64)
                    .map_err(|e| format!("write chunk {k}: {e}"))?;
                k += 1;
                streamed.store(k, Ordering::SeqCst);
            }
            client.close(fd).map_err(|e| format!("close: {e}"))
        })
    };
    let creator = {
        let (client, stop, smalls) = (client.clone(), stop.clone(), smalls.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let path = format!("/s{i}");
                let flags = OpenFlags {
                    write: true,
                    create: true,
                    excl: true,
                    ..OpenFlags::default()
                };
                let fd = client
                    .open(&path, flags, 0o644, None)
                    .map_err(|e| format!("{path}: {e}"))?;
                client
                    .pwrite(fd, &small(i), 0)
                    .map_err(|e| format!("write {path}: {e}"))?;
                client.close(fd).map_err(|e| format!("close {path}: {e}"))?;
                smalls.lock().unwrap().push(i);
            }
            Ok(())
        })
    };

    let n = failovers();
    let mut takeovers = Vec::new();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(300));
        let before = streamed.load(Ordering::SeqCst);
        let _ = active.kill9();
        let t0 = Instant::now();
        assert!(
            standby
                .wait_prefix("ostd: serving OST0 on ", Duration::from_secs(10))
                .is_some(),
            "no takeover"
        );
        takeovers.push(t0.elapsed());
        let dead = ports[active_port];
        active_port = 1 - active_port;
        let next = start(&dev.0, dead, true, sf);
        assert!(
            next.wait_prefix("ostd: standby for ", Duration::from_secs(10))
                .is_some()
        );
        active = std::mem::replace(&mut standby, next);
        let end = Instant::now() + Duration::from_secs(15);
        while streamed.load(Ordering::SeqCst) < before + 4 {
            assert!(Instant::now() < end, "no progress after the failover");
            assert!(!writer.is_finished(), "writer failed: {:?}", writer.join());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap().expect("no write fails across OSS failovers");
    creator.join().unwrap().expect("no create fails across OSS failovers");
    let chunks = streamed.load(Ordering::SeqCst);
    eprintln!(
        "{chunks} chunks streamed, {} small files, through {n} OSS failovers; takeovers {takeovers:?}",
        smalls.lock().unwrap().len()
    );
    assert!(takeovers.iter().all(|t| *t < Duration::from_secs(5)), "{takeovers:?}");

    // Every acknowledged byte reads back.
    let rd = OpenFlags {
        read: true,
        ..OpenFlags::default()
    };
    let fd = client.open("/stream", rd, 0, None).unwrap();
    let mut buf = vec![0u8; CHUNK];
    for slot in 0..chunks.min(SLOTS) {
        // The last chunk written into this slot.
        let k = slot + SLOTS * ((chunks - 1 - slot) / SLOTS);
        let got = client.pread(fd, &mut buf, slot * CHUNK as u64).unwrap();
        assert_eq!(got, CHUNK, "chunk {k}");
        assert!(buf == chunk(k), "chunk {k} differs");
    }
    client.close(fd).unwrap();
    for i in smalls.lock().unwrap().iter() {
        let fd = client.open(&format!("/s{i}"), rd, 0, None).unwrap();
        let want = small(*i);
        let mut got = vec![0u8; want.len() + 1];
        let n = client.pread(fd, &mut got, 0).unwrap();
        assert_eq!(&got[..n], &want[..], "s{i}");
        client.close(fd).unwrap();
    }
    client.disconnect();
    drop(client);
    mds.stop().unwrap();
    assert!(active.stop().unwrap().success());
    drop(standby);
    let out = Command::new(BIN).arg("check").arg(&dev.0).output().unwrap();
    assert!(
        out.status.success(),
        "ostd check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_paused_oss_is_fenced_by_its_standby() {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dev = Device(dir.join(format!("rustre-ostd-fence-{}", std::process::id())));
    let st = Command::new(BIN)
        .args(["mkfs", "--index", "0", "--fsname", "ofe", "--size", "67108864"])
        .arg(&dev.0)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let ports = [free_port().unwrap(), free_port().unwrap()];
    let mut active = start(&dev.0, ports[0], false, None);
    assert!(
        active
            .wait_prefix("ostd: serving OST0 on ", Duration::from_secs(10))
            .is_some()
    );
    let standby = start(&dev.0, ports[1], true, None);
    assert!(
        standby
            .wait_prefix("ostd: standby for ", Duration::from_secs(10))
            .is_some()
    );
    // While the active updates its MMP block, the standby stays a standby.
    assert!(
        standby
            .wait_prefix("ostd: serving OST0 on ", Duration::from_millis(1000))
            .is_none()
    );
    // Alive but silent (no heartbeat, no MMP updates): the standby takes over...
    active.signal(libc::SIGSTOP).unwrap();
    assert!(
        standby
            .wait_prefix("ostd: serving OST0 on ", Duration::from_secs(10))
            .is_some()
    );
    // ...and the paused node, resumed, sees the standby's sequence and stops serving.
    active.signal(libc::SIGCONT).unwrap();
    let status = active
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the fenced OSS kept running");
    assert!(!status.success(), "a fenced OSS exits with an error");
    let mut standby = standby;
    assert!(standby.stop().unwrap().success());
    let out = Command::new(BIN).arg("check").arg(&dev.0).output().unwrap();
    assert!(
        out.status.success(),
        "ostd check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
