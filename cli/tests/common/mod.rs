//! Shared by the integration tests that need a running local cluster: the same setup as
//! `cluster.rs` (real `ostd`/`mdsd` processes, a temporary data directory, 127.0.0.1 and free
//! ports, brought down on drop, pass or fail).

#![allow(clippy::unwrap_used, dead_code)] // test helpers: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

pub const RUSTRE: &str = env!("CARGO_BIN_EXE_rustre");

/// Builds `ostd` and `mdsd` next to `rustre` (cargo builds only this package's binaries).
pub fn build_daemons() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        rustre_testkit::ensure_binaries(RUSTRE, &["rustre-ostd", "rustre-mdsd"], &["ostd", "mdsd"]);
    });
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `rustre ARGS --data DATA`, echoing the command and its output for the test log.
pub fn rustre(args: &[&str], data: &Path) -> Output {
    let out = Command::new(RUSTRE)
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("RUSTRE_BIN_DIR")
        .output()
        .expect("run rustre");
    eprintln!(
        "$ rustre {} --data {}\n{}{}-> {}",
        args.join(" "),
        data.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// The daemons recorded in DATA/pids, as (name, pid), sorted.
pub fn pids(data: &Path) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(data.join("pids")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().trim_end_matches(".pid").to_string();
            let pid = std::fs::read_to_string(e.path()).unwrap().trim().parse().unwrap();
            found.push((name, pid));
        }
    }
    found.sort();
    found
}

/// True while `pid` runs (not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(") ")
            .is_some_and(|i| !matches!(s.as_bytes()[i + 2], b'Z' | b'X'))
    })
}

/// A running 2-OST cluster in a temporary directory, brought down on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    pub fn up() -> Cluster {
        build_daemons();
        let c = Cluster {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = Command::new(RUSTRE)
            .args([
                "cluster",
                "up",
                "--osts",
                "2",
                "--size-per-ost",
                "512M",
                "--mdt-size",
                "64M",
                "--data",
            ])
            .arg(c.data())
            .env_remove("RUSTRE_BIN_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster up failed:\n{}", text(&out));
        c
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn client_toml(&self) -> PathBuf {
        self.data().join("client.toml")
    }

    /// `rustre ARGS --config DIR/client.toml`.
    pub fn rustre(&self, args: &[&str]) -> Output {
        let out = Command::new(RUSTRE)
            .args(args)
            .arg("--config")
            .arg(self.client_toml())
            .output()
            .unwrap();
        eprintln!(
            "$ rustre {}\n{}{}-> {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        out
    }

    pub fn connect(&self) -> rustre::Client {
        rustre::Client::connect(rustre::ClientConfig::from_file(&self.client_toml()).unwrap()).unwrap()
    }

    pub fn write_file(&self, path: &str, bytes: &[u8], layout: Option<&rustre::LayoutSpec>) {
        let client = self.connect();
        let flags = rustre::OpenFlags {
            write: true,
            create: true,
            ..Default::default()
        };
        let fd = client.open(path, flags, 0o644, layout).unwrap();
        if !bytes.is_empty() {
            assert_eq!(client.pwrite(fd, bytes, 0).unwrap(), bytes.len());
        }
        client.close(fd).unwrap();
        client.disconnect();
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

/// Runs `rustre cluster down` on DATA when dropped (pass or fail), so a test never leaves its
/// daemons running.
pub struct Down<'a>(pub &'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = rustre(&["cluster", "down"], self.0);
    }
}
