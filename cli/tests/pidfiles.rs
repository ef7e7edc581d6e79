//! `rustre cluster down|status` on data directories where no daemon runs: nothing to stop, stale
//! pid files, pid files naming a process that is not ours.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Command;

mod common;

use common::{alive, pids, rustre, text};

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
