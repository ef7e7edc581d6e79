//! TCP provider: the fabric's semantics on one TCP stream per connection, with std threads and
//! blocking sockets.
//!
//! RPCs are frames (32-byte header + body) matched by xid; many calls share one connection, bounded
//! by the credits agreed in the `HELLO` exchange. Server-driven bulk is emulated on the stream: a
//! server `pull` sends `BULK_GET` and the client's reader thread answers with the bytes straight
//! from the caller's buffer; a server `push` sends `BULK_PUT` chunks the client's reader copies
//! straight into the caller's buffer and acknowledges. Keys are random per call and revoked before
//! `call_bulk` returns ([`exposed`]). See [`wire`] for the frames.

mod client;
pub(crate) mod exposed;
mod server;
mod wire;

pub use client::TcpClient;
pub use server::{TcpListener, TcpServerConn};

use crate::{ClientConn, ConnOptions, FabricError, Listener};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

/// Capacity of each connection's buffered reader; larger reads bypass it.
const READ_BUF: usize = 256 * 1024;

/// Connects to a tcp peer.
pub fn connect(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    client::connect(addr, opts)
}

/// Listens on a tcp address (port 0 picks a free port; see [`Listener::local_addr`]).
pub fn listen(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    server::listen(addr, opts)
}

/// Socket options for every connection: no Nagle delay on small frames.
fn tune(s: &TcpStream, peer: &str) -> Result<(), FabricError> {
    s.set_nodelay(true).map_err(|source| FabricError::Io {
        op: "setsockopt TCP_NODELAY",
        peer: peer.to_string(),
        source,
    })
}
