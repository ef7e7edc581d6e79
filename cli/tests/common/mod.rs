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
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = Path::new(RUSTRE).parent().is_some_and(|d| d.ends_with("release"));
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "rustre-ostd", "-p", "rustre-mdsd"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for ostd and mdsd");
        assert!(status.success(), "cargo build -p rustre-ostd -p rustre-mdsd failed");
    });
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
