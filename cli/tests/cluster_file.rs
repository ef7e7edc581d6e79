//! The cluster file `rustre cluster up` writes is the one the daemons run from: it passes
//! `rustre config check`, and hand edits ([stripe], [limits]) survive the next `up` and take effect.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Down, build_daemons, rustre, text};
use std::process::Command;

#[test]
fn edited_cluster_file_drives_the_next_up() {
    build_daemons();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let _down = Down(data);
    let up = [
        "cluster",
        "up",
        "--osts",
        "2",
        "--size-per-ost",
        "512M",
        "--mdt-size",
        "64M",
        "--mmp-interval-ms",
        "100",
    ];
    let out = rustre(&up, data);
    assert!(out.status.success(), "{}", text(&out));
    let file = data.join("cluster.toml");
    let check = Command::new(common::RUSTRE)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&out).contains("secret"), "{}", text(&out));

    let out = rustre(&["cluster", "down"], data);
    assert!(out.status.success(), "{}", text(&out));
    let mut edited = std::fs::read_to_string(&file).unwrap();
    edited.push_str("\n[stripe]\ncount = -1\nsize = 131072\n\n[limits]\nost_workers = 2\nmax_io = 1048576\n");
    std::fs::write(&file, edited).unwrap();

    let out = rustre(&up[..2], data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("default layout of /: stripe count 2, stripe size 128.0 KiB"),
        "{}",
        text(&out)
    );
    let kept = std::fs::read_to_string(&file).unwrap();
    assert!(kept.contains("[stripe]") && kept.contains("ost_workers = 2"), "{kept}");
    let config = rustre::ClientConfig::from_file(&data.join("client.toml")).unwrap();
    let client = rustre::Client::connect(config).unwrap();
    let flags = rustre::OpenFlags {
        write: true,
        create: true,
        ..Default::default()
    };
    let fd = client.open("/inherits", flags, 0o644, None).unwrap();
    client.close(fd).unwrap();
    let layout = client.getstripe("/inherits").unwrap().spec;
    assert_eq!((layout.stripe_count, layout.stripe_size), (2, 128 << 10));
    // [limits] reached the OSTs: a write larger than max_io still works (the client splits it).
    let fd = client.open("/big", flags, 0o644, None).unwrap();
    let data_out = vec![7u8; 3 << 20];
    assert_eq!(client.pwrite(fd, &data_out, 0).unwrap(), data_out.len());
    client.close(fd).unwrap();
    client.disconnect();
    // And the ostd processes were started from the file, not with the limits as flags.
    let ost0 = std::fs::read_to_string(data.join("pids/ost0.pid")).unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", ost0.trim())).unwrap();
    assert!(
        cmdline.contains("--config") && !cmdline.contains("--workers"),
        "{cmdline:?}"
    );
}
