//! TCP provider.

use crate::{ClientConn, ConnOptions, FabricError, Listener};
use std::net::SocketAddr;
use std::sync::Arc;

/// Connects to a tcp peer.
pub fn connect(addr: SocketAddr, _opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    Err(FabricError::Unreachable(format!("tcp://{addr}: tcp provider not built yet")))
}

/// Listens on a tcp address.
pub fn listen(addr: SocketAddr, _opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    Err(FabricError::Unreachable(format!("tcp://{addr}: tcp provider not built yet")))
}
