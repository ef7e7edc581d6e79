//! The cluster file `DIR/cluster.toml` and the client configuration `DIR/client.toml`.
//!
//! The schema, its loading and its checks live in the `rustre-config` crate, which `mdsd` and
//! `ostd` read too (`serve --config FILE`); this module re-exports it. `rustre cluster up` writes
//! both files; `status`, `down`, `fail`, `demo` and `report` read the cluster file. The format is
//! documented in cli/README.md and in the crate; keep them in step.

pub use rustre_config::{
    CLIENT_FILE, CLUSTER_FILE, ClientFile, ClusterFile, ConfigError, FORMAT_VERSION, FabricKind, Limits, MdsEntry,
    Mistake, OstEntry, StripeDefaults, check_fsname, check_log, check_text,
};

/// The comment `rustre cluster up` puts at the top of the cluster file of `dir`.
pub fn cluster_header(dir: &std::path::Path) -> String {
    format!(
        "# rustre cluster file, written by `rustre cluster up` (format: cli/README.md).\n\
         # `rustre cluster status|fail|down --data {0}` read it; so do `mdsd serve --config` and\n\
         # `ostd serve --config`. Edits to [stripe], [limits], log and metrics survive the next `up`.\n\n",
        dir.display()
    )
}

/// The comment at the top of `client.toml`.
pub const CLIENT_HEADER: &str = "# rustre client configuration, written by `rustre cluster up`.\n";
