//! The metadata service: request handling on the namespace thread, the event loop, the OST link.

pub mod auth;
pub mod handler;
pub mod metrics;
pub mod ostlink;
pub mod server;
pub mod squash;
pub mod wire;

pub use handler::{FEATURES, Handled, HandlerConfig, MdsCore, Request};
pub use metrics::MdsMetrics;
pub use server::{Event, ServeConfig, Server, Stopper};
