//! The demo's I/O, through the librustre Rust API.

use super::{DemoError, DemoOptions, Report};
use crate::cluster::DataDir;
use crate::cluster::file::ClusterFile;

/// Runs the workload on the running `cluster`.
pub fn run(_cluster: &ClusterFile, dir: &DataDir, _opts: &DemoOptions) -> Result<Report, DemoError> {
    Err(DemoError::Client {
        op: "connect",
        path: dir.client_file().display().to_string(),
        reason: "this build of rustre has no client I/O yet: librustre (libclient/) does not provide \
                 connect/open/read/write; the cluster itself came up and was checked"
            .into(),
    })
}
