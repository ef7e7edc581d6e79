//! `rustre cluster up --ha`, `status` roles, `fail mds` / `fail ost N` with a client doing I/O
//! through librustre before and after each failover, and `down` stopping every server by pid.
//! Real `mdsd`/`ostd` processes on file-backed devices, 127.0.0.1 and free ports.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Down, alive, build_daemons, pids, rustre, text};
use std::collections::BTreeMap;
use std::path::Path;

/// NAME → (STATE, ROLE) from `rustre cluster status`.
fn roles(data: &Path) -> BTreeMap<String, (String, String)> {
    let out = rustre(&["cluster", "status"], data);
    text(&out)
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[0].to_string(), (f[2].to_string(), f[3].to_string())))
        })
        .collect()
}

fn role(data: &Path, name: &str) -> String {
    roles(data).get(name).map(|r| r.1.clone()).unwrap_or_default()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write(client: &rustre::Client, path: &str, data: &[u8]) {
    let flags = rustre::OpenFlags {
        write: true,
        create: true,
        ..Default::default()
    };
    let layout = rustre::LayoutSpec {
        stripe_size: 64 << 10,
        stripe_count: 2,
        stripe_offset: -1,
    };
    let fd = client.open(path, flags, 0o644, Some(&layout)).unwrap();
    assert_eq!(client.pwrite(fd, data, 0).unwrap(), data.len());
    client.fsync(fd).unwrap();
    client.close(fd).unwrap();
}

fn verify(client: &rustre::Client, path: &str, want: &[u8]) {
    let flags = rustre::OpenFlags {
        read: true,
        ..Default::default()
    };
    let fd = client.open(path, flags, 0, None).unwrap();
    let mut got = vec![0u8; want.len() + 1];
    let n = client.pread(fd, &mut got, 0).unwrap();
    client.close(fd).unwrap();
    assert_eq!(n, want.len(), "{path}: length");
    assert!(got[..n] == *want, "{path}: content differs");
}

/// Parses `… serves after 1.23 s` from `cluster fail`.
fn took(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.split("serves after ").nth(1))
        .and_then(|t| t.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("no takeover time in:\n{out}"))
}

/// About 10 s: three real takeovers at the default 500 ms MMP interval (shorter intervals made
/// healthy servers lose their devices when the test machine was loaded).
#[test]
fn ha_pairs_fail_over_under_client_io_and_go_down() {
    build_daemons();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let _down = Down(data);
    let out = rustre(
        &[
            "cluster",
            "up",
            "--ha",
            "--osts",
            "2",
            "--size-per-ost",
            "512M",
            "--mdt-size",
            "64M",
        ],
        data,
    );
    assert!(out.status.success(), "{}", text(&out));

    // Both addresses of every target are recorded; the client knows both MDS addresses.
    let cluster: toml::Table = std::fs::read_to_string(data.join("cluster.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cluster["mmp_interval_ms"].as_integer(), Some(500), "{cluster}");
    assert!(
        cluster["mds"]["failover"]
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.1:")
    );
    for ost in cluster["ost"].as_array().unwrap() {
        assert_ne!(ost["failover"].as_str().unwrap(), ost["address"].as_str().unwrap());
    }
    let client_toml: toml::Table = std::fs::read_to_string(data.join("client.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mds: Vec<&str> = client_toml["mds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        mds,
        [
            cluster["mds"]["address"].as_str().unwrap(),
            cluster["mds"]["failover"].as_str().unwrap()
        ]
    );
    let names: Vec<String> = pids(data).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["mds", "mds-b", "ost0", "ost0-b", "ost1", "ost1-b"]);

    let r = roles(data);
    for (name, want) in [
        ("mds", "active"),
        ("mds-b", "standby"),
        ("ost0", "active"),
        ("ost0-b", "standby"),
        ("ost1", "active"),
        ("ost1-b", "standby"),
    ] {
        assert_eq!(r[name], ("running".to_string(), want.to_string()), "{name}: {r:?}");
    }

    let check = std::process::Command::new(common::RUSTRE)
        .args(["config", "check"])
        .arg(data.join("cluster.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));

    // The installation report lists the pairs and which address serves.
    let report = std::process::Command::new(common::RUSTRE)
        .arg("report")
        .arg("--cluster")
        .arg(data.join("cluster.toml"))
        .arg("--config")
        .arg(data.join("client.toml"))
        .output()
        .unwrap();
    let doc = text(&report);
    let mds_line = format!(
        "| MDT0 | `{0}` | `{1}` | `{0}` |",
        cluster["mds"]["address"].as_str().unwrap(),
        cluster["mds"]["failover"].as_str().unwrap()
    );
    assert!(doc.contains(&mds_line), "{doc}");

    let client = rustre::Client::connect(rustre::ClientConfig::from_file(&data.join("client.toml")).unwrap()).unwrap();
    let a = pattern(1, 1 << 20);
    write(&client, "/a", &a);
    verify(&client, "/a", &a);

    // The MDS fails over; the same client goes on (reconnect, resend), old and new data intact.
    let out = rustre(&["cluster", "fail", "mds"], data);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("killed mds (pid") && t.contains("started mds (pid"), "{t}");
    eprintln!("mds takeover: {:.2} s", took(&t));
    assert_eq!(role(data, "mds-b"), "active");
    assert_eq!(role(data, "mds"), "standby");
    let b = pattern(2, 300_000);
    write(&client, "/b", &b);
    verify(&client, "/a", &a);
    verify(&client, "/b", &b);

    // OST 0 fails over while the client holds data striped over it.
    let out = rustre(&["cluster", "fail", "ost", "0"], data);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("killed ost0 (pid") && t.contains("ost0-b (pid"), "{t}");
    eprintln!("ost0 takeover: {:.2} s", took(&t));
    assert_eq!(role(data, "ost0-b"), "active");
    assert_eq!(role(data, "ost0"), "standby");
    verify(&client, "/a", &a);
    let c = pattern(3, 1 << 20);
    write(&client, "/c", &c);
    verify(&client, "/c", &c);

    // The pair fails again, back to the first server.
    let out = rustre(&["cluster", "fail", "mds"], data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("killed mds-b (pid"), "{}", text(&out));
    assert_eq!(role(data, "mds"), "active");
    verify(&client, "/b", &b);
    verify(&client, "/c", &c);
    client.disconnect();

    // An OST index the cluster lacks is refused with a clear message; nothing is killed.
    let before = pids(data);
    let out = rustre(&["cluster", "fail", "ost", "7"], data);
    assert!(!out.status.success());
    assert!(text(&out).contains("ost7"), "{}", text(&out));
    assert_eq!(pids(data), before);

    let out = rustre(&["cluster", "down"], data);
    assert!(out.status.success(), "{}", text(&out));
    for (name, pid) in &before {
        assert!(!alive(*pid), "{name} (pid {pid}) still runs after down");
    }
    assert!(pids(data).is_empty());
}

#[test]
fn fail_without_pairs_says_how_to_get_them() {
    build_daemons();
    let tmp = tempfile::tempdir().unwrap();
    let out = rustre(&["cluster", "fail", "mds"], tmp.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("no cluster"), "{}", text(&out));
    let out = rustre(&["cluster", "fail", "--help"], tmp.path());
    assert!(text(&out).contains("kill -9"), "{}", text(&out));
}
