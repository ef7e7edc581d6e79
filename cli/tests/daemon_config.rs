//! `mdsd serve --config` and `ostd serve --config --ost N` name the cluster file, line and field
//! of what is wrong, before touching any device.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;

const GOOD: &str = r#"version = 1
fsname = "scratch"

[mds]
address = "tcp://127.0.0.1:7000"
device = "/nonexistent/mdt0"

[[ost]]
index = 0
address = "tcp://127.0.0.1:7001"
device = "/nonexistent/ost0"
"#;

fn serve(daemon: &str, args: &[&str]) -> String {
    let bin = Path::new(common::RUSTRE).with_file_name(daemon);
    let out = Command::new(&bin).arg("serve").args(args).output().unwrap();
    let text = common::text(&out);
    eprintln!("$ {daemon} serve {}\n{text}-> {}", args.join(" "), out.status);
    assert!(!out.status.success(), "{daemon} serve {args:?} succeeded");
    text
}

#[test]
fn daemons_name_the_file_and_field_at_fault() {
    common::build_daemons();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, GOOD.replace("fsname = \"scratch\"", "fsname = \"much-too-long\"")).unwrap();
    let good = dir.path().join("cluster.toml");
    std::fs::write(&good, GOOD).unwrap();
    let (bad, good) = (bad.to_str().unwrap(), good.to_str().unwrap());

    for daemon in ["mdsd", "ostd"] {
        let mut args = vec!["--config", bad];
        if daemon == "ostd" {
            args.extend(["--ost", "0"]);
        }
        let e = serve(daemon, &args);
        assert!(e.contains(&format!("{bad}:2: field `fsname`")), "{e}");
    }
    let e = serve("ostd", &["--config", good, "--ost", "5"]);
    assert!(e.contains(good) && e.contains("ost[5]"), "{e}");
    let e = serve("mdsd", &["--config", good, "--partner"]);
    assert!(e.contains(good) && e.contains("mds.failover"), "{e}");
    let e = serve("ostd", &["--config", good, "--ost", "0", "--partner"]);
    assert!(e.contains("ost[0].failover"), "{e}");
    // The device comes from the file (and is named when it cannot be opened).
    let e = serve("mdsd", &["--config", good]);
    assert!(e.contains("/nonexistent/mdt0"), "{e}");
    // An explicit flag overrides the file.
    let e = serve(
        "ostd",
        &["--config", good, "--ost", "0", "--device", "/nonexistent/other"],
    );
    assert!(e.contains("/nonexistent/other"), "{e}");
    // Without --config, --device and --listen are still required.
    let e = serve("mdsd", &[]);
    assert!(e.contains("--device") && e.contains("--listen"), "{e}");
}
