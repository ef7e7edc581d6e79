//! Configuration parsers: the client configuration file (librustre) and the cluster file
//! (`rustre config check`, `rustre cluster …`), from their text.
//!
//! The cluster file goes through `rustre_config::ClusterFile::parse` (what `ClusterFile::load`,
//! `rustre config check` and the daemons' `--config` use after reading the file).
//!
//! Addresses are parsed as the fabric parses them, which resolves host names with the system
//! resolver: network I/O whose time the fuzzer cannot bound. Inputs naming a host that is not an
//! IP literal are therefore skipped (counted as refused); IP literals are parsed in full.

use crate::{Harness, Target};

const CLIENT: [&str; 4] = [
    "fsname = \"rustre\"\nmds = [\"tcp://127.0.0.1:40123\"]\n",
    "mds = [\"tcp://10.0.0.1:7000\", \"tcp://10.0.0.2:7000\"]\n\n[client]\nmax_rpc_bytes = 1048576\nmax_inflight_per_ost = 8\nmax_io_threads = 64\nmax_open_files = 65536\nreaddir_page = 256\ncall_timeout_ms = 30000\nconnect_timeout_ms = 5000\n",
    "fsname = \"x\"\nmds = [\"verbs://192.168.1.1:7000\", \"sim://mds\"]\n[client]\nreaddir_page = 1\n",
    "mds = [\"auto://[fe80::1]:7000\"]\nsecret = \"/nonexistent/secret\"\n",
];

const CLUSTER: [&str; 3] = [
    "version = 1\nfsname = \"rustre\"\nfabric = \"tcp\"\nhost = \"127.0.0.1\"\nlog = \"info\"\n\n[mds]\naddress = \"tcp://127.0.0.1:40123\"\ndevice = \"/d/mdt0.img\"\nsize = 1073741824\n\n[[ost]]\nindex = 0\naddress = \"tcp://127.0.0.1:40124\"\ndevice = \"/d/ost0.img\"\nsize = 4294967296\n\n[[ost]]\nindex = 1\naddress = \"tcp://127.0.0.1:40125\"\ndevice = \"/d/ost1.img\"\nsize = 4294967296\n",
    "version = 1\nfsname = \"fs_2\"\nfabric = \"verbs\"\nhost = \"10.0.0.1\"\nlog = \"warn,ostd=debug\"\nmmp_interval_ms = 1000\nsecret = \"/etc/rustre/secret\"\n[mds]\naddress = \"verbs://10.0.0.1:7000\"\ndevice = \"/d/mdt\"\nsize = 8388608\n[[ost]]\nindex = 0\naddress = \"verbs://10.0.0.1:7001\"\ndevice = \"/d/ost\"\nsize = 8388608\n",
    "version = 1\nfsname = \"scratch\"\nfabric = \"tcp\"\nhost = \"127.0.0.1\"\nlog = \"info\"\nmmp_interval_ms = 1000\nsecret = \"/etc/rustre/secret\"\n\n[stripe]\ncount = 1\nsize = 1048576\n\n[limits]\nmax_io = 4194304\nost_workers = 4\nost_queue_depth = 64\nost_buffers = 16\nost_queue = 64\nmds_batch_limit = 256\nreply_cache_per_client = 64\nreply_cache_clients = 4096\nprecreate_batch = 4096\n\n[mds]\naddress = \"tcp://10.0.0.1:7000\"\nfailover = \"tcp://10.0.0.4:7000\"\ndevice = \"/dev/nvme0n1\"\nsize = 0\nmetrics = \"10.0.0.1:9100\"\n\n[[ost]]\nindex = 0\naddress = \"tcp://10.0.0.2:7001\"\nfailover = \"tcp://10.0.0.3:7002\"\ndevice = \"/dev/nvme1n1\"\n",
];

/// True if every `scheme://host:port` in `text` names its host by an IP literal, so parsing it
/// does no name lookup.
fn only_ip_hosts(text: &str) -> bool {
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let sim = rest[..i].ends_with("sim");
        rest = &rest[i + 3..];
        if sim {
            // Simulated-fabric names are not looked up.
            continue;
        }
        let end = rest
            .find(|c: char| c == '"' || c == ',' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        let hostport = &rest[..end];
        let host = match hostport.rsplit_once(':') {
            Some((h, _)) => h,
            None => hostport,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() {
            return false;
        }
    }
    // Without a scheme a bare `host:port` may be taken as an address too.
    true
}

fn client() -> Harness {
    Harness {
        seeds: CLIENT.iter().map(|s| s.as_bytes().to_vec()).collect(),
        run: Box::new(|b: &[u8]| {
            // The file path reads text; bytes that are not UTF-8 fail there.
            let Ok(text) = std::str::from_utf8(b) else {
                return false;
            };
            if !only_ip_hosts(text) {
                return false;
            }
            match rustre::ClientConfig::from_toml(text, "fuzz.toml") {
                Ok(_) => true,
                Err(e) => {
                    assert!(e.to_string().contains("fuzz.toml"), "error does not name the file: {e}");
                    false
                }
            }
        }),
        fixup: None,
    }
}

fn cluster() -> Harness {
    use rustre_config::ClusterFile;
    Harness {
        seeds: CLUSTER.iter().map(|s| s.as_bytes().to_vec()).collect(),
        run: Box::new(|b: &[u8]| {
            let Ok(text) = std::str::from_utf8(b) else {
                return false;
            };
            if !only_ip_hosts(text) {
                return false;
            }
            match ClusterFile::parse(text, std::path::Path::new("fuzz-cluster.toml")) {
                Ok(_) => true,
                Err(e) => {
                    assert!(
                        e.to_string().contains("fuzz-cluster.toml"),
                        "error does not name the file: {e}"
                    );
                    false
                }
            }
        }),
        fixup: None,
    }
}

/// The configuration targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "client-config",
            about: "client configuration files through ClientConfig::from_toml",
            max_len: 4 << 10,
            setup: client,
        },
        Target {
            name: "cluster-file",
            about: "cluster files (rustre config check) through the ClusterFile schema and its checks",
            max_len: 4 << 10,
            setup: cluster,
        },
    ]
}
