//! `rustre-bench io500` end to end at a tiny size: a local cluster of real `ostd`/`mdsd`
//! processes started by the bench, rank processes, POSIX beside it, and the ceilings.
//!
//! The one whole-bench test: about 10 s on two idle cores (cluster up with mkfs, the phases twice,
//! fio and the fabric bench as ceilings), longer while the machine compiles.

use std::process::Command;
use std::sync::Once;

const BENCH: &str = env!("CARGO_BIN_EXE_rustre-bench");

/// `rustre`, `ostd` and `mdsd` built next to `rustre-bench` (cargo builds only this package's
/// binaries for its tests).
fn build_cluster_binaries() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        rustre_testkit::ensure_binaries(
            BENCH,
            &["rustre-cli", "rustre-ostd", "rustre-mdsd"],
            &["rustre", "ostd", "mdsd"],
        );
    });
}

#[test]
fn tiny_run_measures_and_verifies_every_phase() {
    build_cluster_binaries();
    let tmp = tempfile::tempdir().expect("tempdir");
    let json = tmp.path().join("io500.json");
    let svg = tmp.path().join("io500.svg");
    let posix = tmp.path().join("posix");
    std::fs::create_dir(&posix).expect("mkdir posix");
    // A stonewall short enough to strike in some write phase: counts are exchanged and every
    // rank completes to the furthest, and the reads must still verify.
    let out = Command::new(BENCH)
        .args([
            "io500",
            "--size",
            "0.05",
            "--ranks",
            "2",
            "--stonewall",
            "0.05",
            "--launcher",
            "self",
            // The ranks' writes of up to one RPC return before the OSTs acknowledge them; the
            // reads must still find every byte.
            "--write-behind",
            "1048576",
            // And the ior-hard reads come from multi-range fetches ahead; they verify every
            // byte too.
            "--read-ahead",
            "524288",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .arg("--posix-dir")
        .arg(&posix)
        .env_remove("RUSTRE_BIN_DIR")
        .output()
        .expect("run rustre-bench io500");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rustre-bench io500 failed: {}", out.status);

    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let phases = [
        "ior-easy-write",
        "mdtest-easy-write",
        "ior-hard-write",
        "mdtest-hard-write",
        "find",
        "ior-easy-read",
        "mdtest-easy-stat",
        "ior-hard-read",
        "mdtest-hard-stat",
        "mdtest-easy-delete",
        "mdtest-hard-read",
        "mdtest-hard-delete",
    ];
    for side in [&j["phases"], &j["baselines"]["posix"]["phases"]] {
        for p in phases {
            let ph = &side[p];
            assert!(ph["value"].as_f64().expect("value") > 0.0, "{p}: {ph}");
            assert!(ph["items"].as_u64().expect("items") > 0, "{p}: {ph}");
            assert_eq!(ph["not_verified"].as_u64(), Some(0), "{p}: {ph}");
        }
        for p in ["ior-easy-read", "ior-hard-read", "mdtest-hard-read"] {
            let ph = &side[p];
            assert_eq!(ph["verified_bytes"], ph["bytes"], "{p} verified what it read");
            assert!(ph["verified_bytes"].as_u64().expect("verified") > 0, "{p}");
        }
        // Reads cover exactly what the writes left (after the stonewall completion).
        assert_eq!(side["ior-easy-read"]["bytes"], side["ior-easy-write"]["bytes"]);
        assert_eq!(side["ior-hard-read"]["bytes"], side["ior-hard-write"]["bytes"]);
        assert_eq!(side["mdtest-hard-read"]["items"], side["mdtest-hard-write"]["items"]);
        assert_eq!(side["mdtest-easy-delete"]["items"], side["mdtest-easy-write"]["items"]);
        assert!(side["find"]["found"].as_u64().expect("found") > 0);
    }
    assert_eq!(j["verification_failures"].as_u64(), Some(0));
    assert_eq!(j["write_behind_bytes"].as_u64(), Some(1 << 20));
    assert_eq!(j["read_ahead_bytes"].as_u64(), Some(512 << 10));
    // The bench's cluster has two OSTs and the ior-hard file is striped over both (the default
    // `--hard-stripe-count -1`); the POSIX side has no striping to report.
    assert_eq!(j["phases"]["ior-hard-write"]["stripe_count"].as_u64(), Some(2));
    assert!(
        j["baselines"]["posix"]["phases"]["ior-hard-write"]
            .get("stripe_count")
            .is_none()
    );
    assert!(j["score"].as_f64().expect("score") > 0.0);
    assert!(j["baselines"]["posix"]["score"].as_f64().expect("posix score") > 0.0);
    assert!(j["baselines"]["transport"]["write_gib_s"].as_f64().expect("transport") > 0.0);
    assert!(j["baselines"]["device"]["write_gib_s"].as_f64().expect("device") > 0.0);
    // The tcp-to-device pipeline on the device's file system, and ior-easy against it.
    for d in ["write", "read"] {
        let c = &j["baselines"]["tcp_to_device"];
        assert!(c[format!("{d}_gib_s")].as_f64().expect("tcp to device") > 0.0, "{c}");
        let r = &j["baselines"]["ratio_to_tcp_to_device"][format!("ior-easy-{d}")];
        assert!(r.as_f64().expect("ratio") > 0.0, "{r}");
    }
    assert!(stdout.contains("tcp-to-device ceiling:"), "the pipeline is printed");
    assert!(stdout.contains("SCORE"), "the table is printed");
    let plot = std::fs::read_to_string(&svg).expect("svg");
    assert!(plot.starts_with("<svg") && plot.contains("ior-hard-read") && plot.contains("mdtest-easy-write"));
    // The POSIX tree is removed.
    assert_eq!(std::fs::read_dir(&posix).expect("readdir").count(), 0);
}

#[test]
fn bad_options_and_unreachable_clusters_are_clear_errors() {
    for (flag, value) in [
        ("--ranks", "0"),
        ("--write-behind", "100"),
        ("--read-ahead", "2147483648"),
        ("--hard-stripe-count", "-2"),
    ] {
        let out = Command::new(BENCH)
            .args(["io500", flag, value])
            .output()
            .expect("run rustre-bench io500");
        assert!(!out.status.success(), "{flag} {value} is refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(flag),
            "the error names {flag}"
        );
    }

    // Nothing listens on port 1: the ranks fail to connect and say so.
    let out = Command::new(BENCH)
        .args([
            "io500",
            "--config",
            "tcp://127.0.0.1:1",
            "--no-baselines",
            "--launcher",
            "self",
        ])
        .output()
        .expect("run rustre-bench io500");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tcp://127.0.0.1:1"), "{err}");
}
