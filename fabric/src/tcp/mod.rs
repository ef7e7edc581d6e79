//! TCP provider: the fabric's semantics on one TCP stream per connection, with std threads and
//! blocking sockets.
//!
//! RPCs are frames (32-byte header + body) matched by xid; many calls share one connection, bounded
//! by the credits agreed in the `HELLO` exchange. Server-driven bulk is emulated on the stream: a
//! server `pull` sends `BULK_GET` and the client's reader thread answers with the bytes straight
//! from the caller's buffer; a server `push` sends `BULK_PUT` chunks the client's reader copies
//! straight into the caller's buffer and acknowledges. Keys are random per call and revoked before
//! `call_bulk` returns (module `exposed`). Module `wire` describes the frames.

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

/// How long a connection must see no thread arrive to wait on it before its idle reader thread
/// reads the socket (see `client` and `server`).
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// Waits until `fd` is readable (or hung up) or `timeout` passes; true when it is.
fn poll_readable(fd: std::os::fd::RawFd, timeout: std::time::Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up: a sub-millisecond wait must not become a busy loop of zero-timeout polls.
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0
}

/// Socket buffer size asked for each direction: room for a few bulk chunks in flight, so a
/// writer of one chunk rarely waits for the reader to wake.
const SOCKET_BUF: libc::c_int = 4 * 1024 * 1024;

/// Socket options for every connection: no Nagle delay on small frames, large buffers, and a
/// send that makes no progress for `stall` fails (the connection is then closed) instead of
/// blocking a writer forever behind a peer that stopped reading.
fn tune(s: &TcpStream, peer: &str, stall: std::time::Duration) -> Result<(), FabricError> {
    s.set_write_timeout(Some(stall.max(std::time::Duration::from_millis(1))))
        .map_err(|source| FabricError::Io {
            op: "setsockopt SO_SNDTIMEO",
            peer: peer.to_string(),
            source,
        })?;
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: the descriptor belongs to `s`, alive for this call; the value is a c_int whose
        // address and size are passed as setsockopt(2) expects. The kernel caps the size at
        // net.core.{w,r}mem_max; failure only costs speed, so it is ignored.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&SOCKET_BUF as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    s.set_nodelay(true).map_err(|source| FabricError::Io {
        op: "setsockopt TCP_NODELAY",
        peer: peer.to_string(),
        source,
    })
}
