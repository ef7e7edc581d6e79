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
    for opt in ["--secret", "--standby"] {
        assert!(help.contains(opt), "{daemon} serve has no {opt}");
    }
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
        let mut a = documented.clone();
        let mut b = set.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{unit}: documented {documented:?}, written {set:?}");
    }
    let env = run(&["config", "env", f, "--mds"]);
    assert!(env.contains("RUST_LOG=info\n"), "{env}");
    assert!(
        env.contains("RUSTRE_MDS_OSTS=\"--ost 0=tcp://10.0.0.2:7001 --ost 1=tcp://10.0.0.3:7001\""),
        "{env}"
    );
    assert!(run(&["config", "env", f, "--ost", "1"]).contains("RUSTRE_OST_LISTEN=tcp://10.0.0.3:7001"));
    // The cluster file's log level reaches the units' environment.
    let with_log = std::fs::read_to_string(&file)
        .unwrap()
        .replace("host = \"10.0.0.1\"", "host = \"10.0.0.1\"\nlog = \"warn,ostd=debug\"");
    std::fs::write(&file, with_log).unwrap();
    assert!(run(&["config", "env", f, "--ost", "0"]).contains("RUST_LOG=warn,ostd=debug\n"));
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
