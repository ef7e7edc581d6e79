//! `rustre cluster down|status` on data directories where no daemon runs: nothing to stop, stale
//! pid files, pid files naming a process that is not ours.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RUSTRE: &str = env!("CARGO_BIN_EXE_rustre");

fn rustre(args: &[&str], data: &Path) -> Output {
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pids(data: &Path) -> Vec<(String, i32)> {
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

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(") ")
            .is_some_and(|i| !matches!(s.as_bytes()[i + 2], b'Z' | b'X'))
    })
}

#[test]
fn stale_pid_file_naming_a_foreign_process_is_removed_not_signalled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pids")).unwrap();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(dir.path().join("pids/ost0.pid"), format!("{}\n", sleeper.id())).unwrap();
    std::fs::write(dir.path().join("pids/mds.pid"), "999999999\n").unwrap();
    let out = rustre(&["cluster", "down"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("stale") && msg.contains("ost0") && msg.contains("mds"),
        "{msg}"
    );
    assert!(msg.contains("nothing running"), "{msg}");
    assert!(pids(dir.path()).is_empty());
    assert!(
        alive(sleeper.id() as i32),
        "a process that is not our daemon must never be signalled"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn down_with_nothing_running_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = rustre(&["cluster", "down"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing running"));
    let missing: PathBuf = dir.path().join("never-made");
    let out = rustre(&["cluster", "down"], &missing);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn status_without_a_cluster_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = rustre(&["cluster", "status"], dir.path());
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("no cluster") && msg.contains("cluster up"), "{msg}");
}
