//! Fencing of a paused OSS against requests it had queued: two real `ostd` processes on one OST
//! device file (the second `--standby`), a client on the active one over tcp.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rustre_fabric::{Bulk, ClientConn, ConnOptions, FabricError, Reply, connect};
use rustre_proto::frame::FLAG_ERROR;
use rustre_proto::{Opcode, pb};
use rustre_testkit::{Node, free_port};

fn obj(id: u64) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef {
        ost_index: 0,
        object_id: id,
    })
}

fn write(c: &Arc<dyn ClientConn>, id: u64, data: &[u8]) -> Result<Reply, FabricError> {
    c.call_bulk(Opcode::OstWrite as u16, Bulk::Source(data), &mut |d| {
        pb::OstWriteRequest {
            object: obj(id),
            offset: 0,
            length: data.len() as u64,
            bulk: Some(pb::BulkDescriptor {
                addr: d.addr,
                rkey: d.rkey,
                len: d.len,
                crc32c: rustre_proto::crc::crc32c(data),
            }),
            cap: None,
            more: Vec::new(),
        }
        .encode_to_vec()
    })
}

const BIN: &str = env!("CARGO_BIN_EXE_ostd");

struct Device(PathBuf);

impl Drop for Device {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(dev: &Path, port: u16, standby: bool) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--device"])
        .arg(dev)
        .args(["--listen", &format!("tcp://127.0.0.1:{port}")])
        .args(["--mmp-interval-ms", "100", "--node", &format!("oss-{port}")])
        .args(["--workers", "1", "--buffers", "4"]);
    if standby {
        cmd.arg("--standby");
    }
    Node::spawn_command(&mut cmd).unwrap()
}

/// A write sent to a paused OSS waits in its socket while the standby takes over; when the paused
/// node resumes, that queued write must not reach the device: the client gets an error or a
/// closed connection, never a success, the new server has only the data written before the pause,
/// and the device checks clean. End to end, the resumed node's MMP thread and the store's
/// pre-write lease check race to fence it (the thread usually wins: the write still needs its bulk
/// pull); `mmp::tests::a_resumed_server_writes_nothing_once_its_device_was_taken_over` takes the
/// thread out and shows the store check alone refuses the write.
#[test]
fn a_paused_oss_writes_no_queued_request_after_a_takeover() {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dev = Device(dir.join(format!("rustre-ostd-queued-{}", std::process::id())));
    let st = Command::new(BIN)
        .args(["mkfs", "--index", "0", "--fsname", "oqw", "--size", "67108864"])
        .arg(&dev.0)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let ports = [free_port().unwrap(), free_port().unwrap()];
    let mut active = start(&dev.0, ports[0], false);
    assert!(
        active
            .wait_prefix("ostd: serving OST0 on ", Duration::from_secs(10))
            .is_some()
    );
    let standby = start(&dev.0, ports[1], true);
    assert!(
        standby
            .wait_prefix("ostd: standby for ", Duration::from_secs(10))
            .is_some()
    );
    let opts = ConnOptions {
        client_id: 21,
        call_timeout: Duration::from_secs(20),
        ..ConnOptions::default()
    };
    let conn = |port: u16| connect(&format!("tcp://127.0.0.1:{port}").parse().unwrap(), &opts).unwrap();
    let c = conn(ports[0]);
    let pre = c
        .call(
            Opcode::OstPrecreate as u16,
            &pb::OstPrecreateRequest { ost_index: 0, count: 1 }.encode_to_vec(),
        )
        .unwrap();
    assert_eq!(pre.header.flags & FLAG_ERROR, 0);
    let id = pb::OstPrecreateReply::decode(&pre.body[..]).unwrap().first_id;
    let before = vec![0x11u8; 64 << 10];
    let r = write(&c, id, &before).unwrap();
    assert_eq!(r.header.flags & FLAG_ERROR, 0);

    active.signal(libc::SIGSTOP).unwrap();
    // Only a write sent once every thread has stopped is queued while paused: a receiving thread
    // still running would serve it at once, with the lease still its own.
    assert!(active.wait_stopped(Duration::from_secs(10)), "ostd did not stop");
    let queued = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            let r = write(&c, id, &[0x22u8; 64 << 10]);
            r.map(|r| r.header.flags & FLAG_ERROR == 0)
        })
    };
    assert!(
        standby
            .wait_prefix("ostd: serving OST0 on ", Duration::from_secs(10))
            .is_some()
    );
    active.signal(libc::SIGCONT).unwrap();
    let acked = queued.join().unwrap();
    assert!(
        !matches!(acked, Ok(true)),
        "a fenced OSS acknowledged a write queued while it was paused"
    );
    assert!(
        active.wait_timeout(Duration::from_secs(10)).unwrap().is_some(),
        "the fenced OSS kept running"
    );
    drop(c);
    let n = conn(ports[1]);
    let mut buf = vec![0u8; 128 << 10];
    let r = n
        .call_bulk(Opcode::OstRead as u16, Bulk::Sink(&mut buf), &mut |d| {
            pb::OstReadRequest {
                object: obj(id),
                offset: 0,
                length: 128 << 10,
                bulk: Some(pb::BulkDescriptor {
                    addr: d.addr,
                    rkey: d.rkey,
                    len: d.len,
                    crc32c: 0,
                }),
                cap: None,
                reply_inline: false,
                more: Vec::new(),
            }
            .encode_to_vec()
        })
        .unwrap();
    assert_eq!(r.header.flags & FLAG_ERROR, 0);
    let got = pb::OstReadReply::decode(&r.body[..]).unwrap().bytes_read as usize;
    assert_eq!(&buf[..got], &before[..], "only the data written before the pause");
    drop(n);
    let mut standby = standby;
    assert!(standby.stop().unwrap().success());
    let out = Command::new(BIN).arg("check").arg(&dev.0).output().unwrap();
    assert!(
        out.status.success(),
        "ostd check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
