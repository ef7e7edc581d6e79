//! Simulated provider.

use crate::{ClientConn, ConnOptions, FabricError, Listener};
use std::sync::Arc;

/// Connects to a sim peer.
pub fn connect(name: &str, _opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    Err(FabricError::Unreachable(format!("sim://{name}: sim provider not built yet")))
}

/// Listens on a sim name.
pub fn listen(name: &str, _opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    Err(FabricError::Unreachable(format!("sim://{name}: sim provider not built yet")))
}
