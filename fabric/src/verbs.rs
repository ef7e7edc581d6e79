//! Verbs provider.

use crate::{ClientConn, ConnOptions, FabricError, Listener};
use std::net::SocketAddr;
use std::sync::Arc;

/// True when an RDMA device is present.
pub fn devices_present() -> bool {
    false
}

/// Connects to a verbs peer.
pub fn connect(_addr: SocketAddr, _opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    Err(FabricError::NoDevice("verbs provider not built yet".into()))
}

/// Listens on a verbs address.
pub fn listen(_addr: SocketAddr, _opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    Err(FabricError::NoDevice("verbs provider not built yet".into()))
}
