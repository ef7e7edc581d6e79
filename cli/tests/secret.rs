//! `rustre cluster up` makes a cluster secret and gives it to every daemon and to client.toml:
//! a client holding it works, one without it (or with another secret) is refused; `--no-secret`
//! runs without. Real `mdsd`/`ostd` processes, 127.0.0.1 and free ports.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Down, build_daemons, pids, rustre, text};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const UP: &[&str] = &[
    "cluster",
    "up",
    "--osts",
    "1",
    "--size-per-ost",
    "512M",
    "--mdt-size",
    "64M",
    "--mmp-interval-ms",
    "100",
];

/// Creates, writes and reads back a small file; the first error is returned.
fn round_trip(config: rustre::ClientConfig, path: &str) -> Result<(), rustre::ClientError> {
    let client = rustre::Client::connect(config)?;
    let flags = rustre::OpenFlags {
        read: true,
        write: true,
        create: true,
        ..Default::default()
    };
    let fd = client.open(path, flags, 0o644, None)?;
    client.pwrite(fd, b"sealed", 0)?;
    let mut back = [0u8; 6];
    assert_eq!(client.pread(fd, &mut back, 0)?, 6);
    assert_eq!(&back, b"sealed");
    client.close(fd)?;
    client.disconnect();
    Ok(())
}

fn mds_address(data: &Path) -> String {
    let cluster: toml::Table = std::fs::read_to_string(data.join("cluster.toml"))
        .unwrap()
        .parse()
        .unwrap();
    cluster["mds"]["address"].as_str().unwrap().to_string()
}

#[test]
fn clients_need_the_cluster_secret() {
    build_daemons();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let _down = Down(data);
    let out = rustre(UP, data);
    assert!(out.status.success(), "{}", text(&out));

    let secret = data.join("secret");
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let client_toml = std::fs::read_to_string(data.join("client.toml")).unwrap();
    assert!(
        client_toml.contains(&format!("secret = \"{}\"", secret.display())),
        "{client_toml}"
    );
    // Every daemon reads it from the cluster file it is started with.
    let cluster_toml = std::fs::read_to_string(data.join("cluster.toml")).unwrap();
    assert!(
        cluster_toml.contains(&format!("secret = \"{}\"", secret.display())),
        "{cluster_toml}"
    );
    for (name, pid) in pids(data) {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<&str> = cmdline.split('\0').collect();
        let at = args.iter().position(|a| *a == "--config");
        let config = data.join("cluster.toml");
        assert_eq!(
            at.map(|i| args[i + 1]),
            Some(config.to_str().unwrap()),
            "{name}: {args:?}"
        );
    }

    // With the secret (client.toml): works.
    round_trip(
        rustre::ClientConfig::from_file(&data.join("client.toml")).unwrap(),
        "/ok",
    )
    .unwrap();
    // Without it: refused.
    let plain = rustre::ClientConfig::from_addresses(&mds_address(data)).unwrap();
    let err = round_trip(plain, "/plain").expect_err("a client without the secret was let in");
    eprintln!("without the secret: {err}");
    // With another cluster's secret: refused too.
    let other = tmp.path().join("other-secret");
    rustre_cli::secret::generate(&other, false).unwrap();
    let mut wrong = rustre::ClientConfig::from_addresses(&mds_address(data)).unwrap();
    wrong.secret = Some(rustre_proto::auth::ClusterSecret::load(&other).unwrap());
    let err = round_trip(wrong, "/wrong").expect_err("a client with another secret was let in");
    eprintln!("with another secret: {err}");
    // Nothing the refused clients tried reached the namespace.
    let config = rustre::ClientConfig::from_file(&data.join("client.toml")).unwrap();
    let client = rustre::Client::connect(config).unwrap();
    assert!(client.stat("/plain").is_err() && client.stat("/wrong").is_err());
    assert_eq!(client.stat("/ok").unwrap().size, 6);
    client.disconnect();
}

#[test]
fn no_secret_runs_without_authentication() {
    build_daemons();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let _down = Down(data);
    let mut args = UP.to_vec();
    args.push("--no-secret");
    let out = rustre(&args, data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!data.join("secret").exists());
    let client_toml = std::fs::read_to_string(data.join("client.toml")).unwrap();
    assert!(!client_toml.contains("secret"), "{client_toml}");
    let plain = rustre::ClientConfig::from_addresses(&mds_address(data)).unwrap();
    round_trip(plain, "/plain").unwrap();
}
