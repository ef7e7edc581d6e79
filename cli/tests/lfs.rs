//! `rustre setstripe|getstripe|df|find` against a real local cluster (2 OSTs).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Cluster, text};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn setstripe_getstripe_df_find() {
    let c = Cluster::up();

    // A directory default, inherited by a file created in it.
    let client = c.connect();
    client.mkdir("/wide", 0o755, None).unwrap();
    client.mkdir("/wide/sub", 0o755, None).unwrap();
    client.disconnect();
    let out = c.rustre(&["setstripe", "-c", "2", "-S", "128K", "/wide"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.rustre(&["getstripe", "/wide"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = stdout(&out);
    assert!(
        s.contains("stripe_count:  2") && s.contains("stripe_size:   131072"),
        "{s}"
    );
    c.write_file("/wide/a.dat", &vec![7u8; 300 * 1024], None);
    let out = c.rustre(&["getstripe", "/wide/a.dat"]);
    let s = stdout(&out);
    assert!(s.contains("lmm_stripe_count:  2"), "{s}");
    assert!(s.contains("lmm_stripe_size:   131072"), "{s}");
    assert!(s.contains("obdidx"), "{s}");
    let osts: Vec<&str> = s
        .lines()
        .skip_while(|l| !l.contains("obdidx"))
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let mut sorted = osts.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["0", "1"], "{s}");

    // A new file: created with the layout asked for.
    let out = c.rustre(&["setstripe", "-c", "1", "-i", "1", "/one.dat"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = stdout(&c.rustre(&["getstripe", "/one.dat"]));
    assert!(
        s.contains("lmm_stripe_count:  1") && s.contains("lmm_stripe_offset: 1"),
        "{s}"
    );

    // Bad parameters: a clear error naming the option, and nothing changed.
    for (args, needle) in [
        (vec!["setstripe", "-c", "3", "/wide"], "-c"),
        (vec!["setstripe", "-S", "100K", "/wide"], "64K"),
        (vec!["setstripe", "-i", "9", "/wide"], "OST index 9"),
        (vec!["setstripe", "-c", "1", "/wide/a.dat"], "has data"),
    ] {
        let out = c.rustre(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
    }
    let s = stdout(&c.rustre(&["getstripe", "/wide"]));
    assert!(
        s.contains("stripe_count:  2") && s.contains("stripe_size:   131072"),
        "changed: {s}"
    );
    let out = c.rustre(&["setstripe", "-i", "9", "/never"]);
    assert!(!out.status.success());
    let out = c.rustre(&["getstripe", "/never"]);
    assert!(!out.status.success(), "a refused setstripe created the file");

    // df: one MDT row, one row per OST, the summary; sizes add up.
    let out = c.rustre(&["df"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = stdout(&out);
    let rows: Vec<Vec<&str>> = s.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows[0][0] == "UUID" && rows[0][1] == "1K-blocks", "{s}");
    assert!(rows[1][0].ends_with("-MDT0000_UUID"), "{s}");
    assert!(
        rows[2][0].ends_with("-OST0000_UUID") && rows[3][0].ends_with("-OST0001_UUID"),
        "{s}"
    );
    assert_eq!(rows[4][0], "filesystem_summary:", "{s}");
    let total: u64 = rows[2][1].parse::<u64>().unwrap() + rows[3][1].parse::<u64>().unwrap();
    assert_eq!(total, rows[4][1].parse::<u64>().unwrap(), "{s}");
    assert!(total >= 2 * 400 * 1024, "two 512M OSTs: {s}");
    let h = stdout(&c.rustre(&["df", "-h"]));
    assert!(h.contains("MiB") || h.contains("GiB"), "{h}");

    // find.
    c.write_file("/wide/sub/small.txt", b"hello", None);
    c.write_file("/big.bin", &vec![1u8; 2 << 20], None);
    let client = c.connect();
    client.symlink("/big.bin", "/link").unwrap();
    client.disconnect();
    let find = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["find"];
        a.extend_from_slice(args);
        let out = c.rustre(&a);
        assert!(out.status.success(), "{}", text(&out));
        stdout(&out).lines().map(str::to_string).collect()
    };
    assert_eq!(find(&["/", "-type", "d"]), ["/", "/wide", "/wide/sub"]);
    assert_eq!(find(&["/", "-type", "l"]), ["/link"]);
    assert_eq!(find(&["/", "-name", "*.dat"]), ["/one.dat", "/wide/a.dat"]);
    assert_eq!(find(&["/", "-type", "f", "-size", "+1M"]), ["/big.bin"]);
    // As find(1): sizes round up to the unit, so -1k is only the empty files.
    assert_eq!(find(&["/", "-type", "f", "-size", "-1k"]), ["/one.dat"]);
    assert_eq!(
        find(&["/", "-type", "f", "-size", "-2k"]),
        ["/one.dat", "/wide/sub/small.txt"]
    );
    // small.txt inherits /wide's default through /wide/sub, which has none of its own.
    assert_eq!(
        find(&["/wide", "-stripe-count", "2"]),
        ["/wide/a.dat", "/wide/sub/small.txt"]
    );
    assert_eq!(
        find(&["/", "-stripe-count", "-2", "-type", "f"]),
        ["/big.bin", "/one.dat"]
    );
    assert_eq!(find(&["/", "-stripe-count", "1", "-name", "*.dat"]), ["/one.dat"]);
    // report: the document of this cluster, healthy; a cluster file naming another file system
    // fails its check (exit 1).
    let doc = c.data().join("install.md");
    let cluster = c.data().join("cluster.toml");
    // Bench results kept beside the cluster file are summarised in the report.
    std::fs::create_dir_all(c.data().join("bench")).unwrap();
    std::fs::write(
        c.data().join("bench/md.json"),
        r#"{"files": 1000, "create_ops": 28123.5, "create_ratio": 0.91}"#,
    )
    .unwrap();
    let out = c.rustre(&[
        "report",
        "--cluster",
        cluster.to_str().unwrap(),
        "--out",
        doc.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let d = std::fs::read_to_string(&doc).unwrap();
    for section in [
        "## Topology",
        "## Devices and capacities",
        "## Layouts and defaults",
        "## Failover pairs",
        "## Health checks",
        "| OST0 |",
        "| OST1 |",
        "2 of 2 serving",
        "write, fsync, read back and remove 256 KiB | pass",
        "### md (`",
        "| create_ratio | 0.910 |",
    ] {
        assert!(d.contains(section), "{section:?} missing:\n{d}");
    }
    assert!(!d.contains("FAIL"), "{d}");
    let other = c.data().join("other.toml");
    let text_file = std::fs::read_to_string(&cluster).unwrap();
    let fsname_line = text_file.lines().find(|l| l.starts_with("fsname")).unwrap();
    std::fs::write(&other, text_file.replace(fsname_line, "fsname = \"other\"")).unwrap();
    let out = c.rustre(&["report", "--cluster", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("file system name agrees (cluster file and MDS) | FAIL"));

    let out = c.rustre(&["find", "/", "-type", "x"]);
    assert!(!out.status.success() && text(&out).contains("-type"), "{}", text(&out));
}

#[test]
fn commands_name_a_bad_config() {
    let out = std::process::Command::new(common::RUSTRE)
        .args(["df", "--config", "/nonexistent/client.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/client.toml"), "{}", text(&out));
}
