//! The fuzz targets: every decoder of rustre, and the driver's self-tests.

pub mod config;
pub mod mdsd;
pub mod ostd;
pub mod proto;
pub mod selftest;

use crate::Target;

/// Every decoder target, in the order a full run goes through them.
pub fn all() -> Vec<Target> {
    let mut v = proto::targets();
    v.extend(ostd::targets());
    v.extend(mdsd::targets());
    v.extend(config::targets());
    v
}

/// The target named `name`, among the decoders and the self-tests.
pub fn find(name: &str) -> Option<Target> {
    all().into_iter().chain(selftest::targets()).find(|t| t.name == name)
}
