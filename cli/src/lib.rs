//! rustre: the operator's and user's command-line tool.
//!
//! The library half of the `rustre` binary: the local cluster (`cluster`), daemon processes
//! (`process`), sizes, and the quickstart workload. The binary (`src/main.rs`) only parses the
//! command line and prints.

pub mod cluster;
pub mod error;
pub mod ops;
pub mod process;
pub mod secret;
pub mod size;

pub use error::CliError;
pub mod demo;
