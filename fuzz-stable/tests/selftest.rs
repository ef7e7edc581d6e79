//! The driver binary against its deliberately broken self-test targets: each kind of failure is
//! caught, reported with the target, the seed and the input, and ends the run with its exit
//! code; the reported input replays the failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rustre-fuzz");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn reported_input(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("input: "))
        .expect("the report shows the input")
        .to_string()
}

#[test]
fn panic_hang_and_allocation_are_caught() {
    for (target, code, kind) in [
        ("selftest.panic", 1, "kind=panic"),
        ("selftest.hang", 2, "kind=hang"),
        ("selftest.alloc", 3, "kind=alloc"),
    ] {
        let (rc, _, err) = run(&[
            "--target",
            target,
            "--seconds",
            "20",
            "--seed",
            "5",
            "--timeout-ms",
            "200",
        ]);
        assert_eq!(rc, code, "{target}: {err}");
        assert!(err.contains(kind) && err.contains(&format!("target={target}")), "{err}");
        assert!(err.contains("seed=5"), "{err}");
        let input = reported_input(&err);
        assert!(input.starts_with("ab"), "{target}: {input}");
        // The printed input replays the failure.
        let (rc, _, err) = run(&["--target", target, "--input", &input, "--timeout-ms", "200"]);
        assert_eq!(rc, code, "{target} replay: {err}");
    }
}

#[test]
fn help_lists_every_target_and_a_sound_target_passes() {
    let (rc, out, _) = run(&["--help"]);
    assert_eq!(rc, 0);
    for t in [
        "frame",
        "request",
        "reply",
        "message",
        "ostd.journal",
        "mdsd.wal",
        "cluster-file",
        "client-config",
    ] {
        assert!(out.contains(t), "--help lacks {t}: {out}");
    }
    let (rc, out, err) = run(&["message", "--execs", "2000", "--seed", "9"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("message") && out.contains("2000 execs"), "{out}");
    assert!(out.contains("seed 9"), "{out}");
    let (rc, _, err) = run(&["no-such-target"]);
    assert_eq!(rc, 64, "{err}");
}
