//! The systemd units in dist/systemd start the daemons with options they really have.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;

fn check_unit(unit: &str, daemon: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(root.join("dist/systemd").join(unit)).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], format!("/usr/local/bin/{daemon}"), "{unit}");
    assert_eq!(words[1], "serve", "{unit}");
    let bin = Path::new(common::RUSTRE).with_file_name(daemon);
    let help = Command::new(&bin).args(["serve", "--help"]).output().unwrap();
    assert!(help.status.success(), "{} serve --help", bin.display());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for w in words.iter().filter(|w| w.starts_with("--")) {
        assert!(help.contains(&format!("{w} ")), "{unit}: {daemon} serve has no {w}");
    }
    // Every ${VAR} the command line needs is set in the unit or documented as coming from the
    // environment file.
    for w in words.iter().filter(|w| w.starts_with('$')) {
        let var = w.trim_start_matches('$').trim_matches(|c| c == '{' || c == '}');
        assert!(
            text.contains(&format!("#   {var} ")) || text.contains(&format!("Environment={var}=")),
            "{unit}: {var} is neither documented nor set"
        );
    }
    // The options documented for the env files exist too.
    for opt in ["--secret", "--standby", "--partner"] {
        assert!(help.contains(opt), "{daemon} serve has no {opt}");
    }
    // The command line parses as written: with the cluster file replaced by a path that does not
    // exist, the daemon gets as far as reading it and names it.
    let missing = std::env::temp_dir().join(format!("rustre-unit-test-{}-absent.toml", std::process::id()));
    let missing = missing.to_str().unwrap();
    let args: Vec<String> = words[1..]
        .iter()
        .filter(|w| !w.starts_with('$'))
        .map(|w| {
            w.replace("/etc/rustre/cluster.toml", missing)
                .replace("%i", "0")
                .replace("%H", "unit-test")
        })
        .collect();
    let out = Command::new(&bin).args(&args).output().unwrap();
    assert!(!out.status.success(), "{unit}: {args:?} ran without its cluster file");
    let t = common::text(&out);
    assert!(t.contains(missing), "{unit}: {args:?}: {t}");
}

#[test]
fn units_use_real_daemon_options() {
    common::build_daemons();
    check_unit("rustre-mdsd.service", "mdsd");
    check_unit("rustre-ostd@.service", "ostd");
}

/// `rustre config env` writes exactly the variables the units read, from a real cluster file.
#[test]
fn config_env_sets_what_the_units_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(
        &file,
        "version = 1\nfsname = \"scratch\"\nfabric = \"tcp\"\nhost = \"10.0.0.1\"\n\n[mds]\n\
         address = \"tcp://10.0.0.1:7000\"\ndevice = \"/dev/nvme0n1\"\nsize = 1073741824\n\n[[ost]]\n\
         index = 0\naddress = \"tcp://10.0.0.2:7001\"\ndevice = \"/dev/nvme1n1\"\nsize = 4294967296\n\n\
         [[ost]]\nindex = 1\naddress = \"tcp://10.0.0.3:7001\"\ndevice = \"/dev/nvme1n1\"\nsize = 4294967296\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(common::RUSTRE).args(args).output().unwrap();
        assert!(out.status.success(), "{}", common::text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let f = file.to_str().unwrap();
    assert!(run(&["config", "check", f]).contains("good"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for (args, unit) in [
        (vec!["config", "env", f, "--mds"], "rustre-mdsd.service"),
        (vec!["config", "env", f, "--ost", "1"], "rustre-ostd@.service"),
    ] {
        let env = run(&args);
        let unit_text = std::fs::read_to_string(root.join("dist/systemd").join(unit)).unwrap();
        let documented: Vec<&str> = unit_text
            .lines()
            .filter_map(|l| l.strip_prefix("#   "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let set: Vec<&str> = env
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(!set.is_empty(), "{env}");
        for v in &set {
            assert!(documented.contains(v), "{unit}: writes {v}, documented {documented:?}");
        }
        // The unit reads the cluster file itself; the environment file is optional.
        assert!(unit_text.contains("--config /etc/rustre/cluster.toml"), "{unit}");
        assert!(unit_text.contains("EnvironmentFile=-/etc/rustre/"), "{unit}");
    }
    assert_eq!(
        run(&["config", "env", f, "--mds"]).lines().nth(1),
        Some("RUSTRE_MDSD_ARGS=\"\"")
    );
    // A partner node without a failover address in the file is refused, naming the field.
    let out = Command::new(common::RUSTRE)
        .args(["config", "env", f, "--ost", "1", "--partner"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(common::text(&out).contains("failover"), "{}", common::text(&out));
    let with_failover = std::fs::read_to_string(&file).unwrap().replace(
        "address = \"tcp://10.0.0.3:7001\"",
        "address = \"tcp://10.0.0.3:7001\"\nfailover = \"tcp://10.0.0.2:7002\"",
    );
    std::fs::write(&file, with_failover).unwrap();
    assert!(run(&["config", "check", f]).contains("good"));
    assert!(
        run(&[
            "config",
            "env",
            f,
            "--ost",
            "1",
            "--partner",
            "--secret",
            "/etc/rustre/secret"
        ])
        .contains("RUSTRE_OSTD_ARGS=\"--partner --standby --secret /etc/rustre/secret\"\n")
    );
    let bad = Command::new(common::RUSTRE)
        .args(["config", "check"])
        .arg(dir.path().join("nothing.toml"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    std::fs::write(&file, "version = 1\nfsname = \"x\"\nfabric = \"tcpp\"\n").unwrap();
    let out = Command::new(common::RUSTRE)
        .args(["config", "check", f])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(":3:10: field `fabric`:") && s.contains("tcpp"), "{s}");
}
