//! Verbs provider: RDMA through rdma-sys (libibverbs + librdmacm).
//!
//! Connections are RC queue pairs set up by rdma_cm over IP (so `verbs://IP:PORT` works on any
//! RDMA device with an IP address, soft-RoCE included). RPC frames travel as two-sided SEND/RECV
//! into pre-posted, registered receive buffers with credit-based flow control; bulk is
//! server-driven: `call_bulk` registers the client's buffer for that one call and the server
//! issues RDMA READ (`pull`) or RDMA WRITE (`push`), zero-copy into pools registered with
//! [`crate::Listener::register_pool`], else through registered bounce buffers. A waiting thread
//! (a caller waiting for its reply, a server's `recv`, a `pull`/`push`) busy-polls the completion
//! queue itself, one per connection at a time, for about twice the waits it has recently seen
//! (at least `ConnOptions::busy_poll`), so an RPC needs no thread hand-off. Each connection also
//! has a progress thread; it leaves the completion channel unarmed while a caller polls (arming
//! it would wake the thread for completions the caller takes) and takes over, sleeping on the
//! channel, when the pollers give up or other threads wait.
//!
//! A machine without RDMA (no device, or a kernel without the uverbs ABI, where
//! `ibv_get_device_list` fails with ENOSYS) has "no devices": [`devices_present`] is false and
//! [`connect`]/[`listen`] return [`FabricError::NoDevice`].

use crate::{ClientConn, ConnOptions, FabricError, Listener};
use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(feature = "verbs")]
mod bulk;
#[cfg(feature = "verbs")]
mod conn;
#[cfg(feature = "verbs")]
mod endpoint;
#[cfg(feature = "verbs")]
mod ffi;
#[cfg(all(test, feature = "verbs"))]
mod hostile;
#[cfg(feature = "verbs")]
mod progress;
#[cfg(feature = "verbs")]
mod provider;
#[cfg(feature = "verbs")]
mod wire;

/// True when at least one RDMA device is present and usable by this process.
pub fn devices_present() -> bool {
    #[cfg(feature = "verbs")]
    {
        ffi::devices_present()
    }
    #[cfg(not(feature = "verbs"))]
    {
        false
    }
}

fn no_device() -> FabricError {
    if cfg!(feature = "verbs") {
        FabricError::NoDevice("ibv_get_device_list found no RDMA device".into())
    } else {
        FabricError::NoDevice("built without the `verbs` feature".into())
    }
}

/// Connects to a verbs peer listening at `addr`.
pub fn connect(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    if !devices_present() {
        return Err(no_device());
    }
    #[cfg(feature = "verbs")]
    {
        Ok(provider::connect(addr, opts)?)
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = (addr, opts);
        Err(no_device())
    }
}

/// Listens for verbs connections on `addr` (an IP address of an RDMA device; port 0 picks one).
pub fn listen(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    if !devices_present() {
        return Err(no_device());
    }
    #[cfg(feature = "verbs")]
    {
        Ok(provider::listen(addr, opts)?)
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = (addr, opts);
        Err(no_device())
    }
}
