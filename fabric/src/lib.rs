//! rustre-fabric: moving bytes between rustre nodes.
//!
//! One interface, three providers chosen by address scheme:
//! `verbs://host:port` (RDMA through rdma-sys), `tcp://host:port` (the same semantics on TCP),
//! `sim://name` (in-process, deterministic from a seed, with fault injection). `auto://host:port`
//! picks verbs when an RDMA device exists, else tcp.
//!
//! Two kinds of traffic:
//! - **RPC**: small two-sided messages. [`ClientConn::call`] sends a request frame and blocks until
//!   the reply with the same xid arrives; many calls may be in flight on one connection from many
//!   threads.
//! - **Server-driven bulk**: the client exposes a buffer for the duration of one call
//!   ([`ClientConn::call_bulk`]) and puts the [`BulkDesc`] it is given into the request body; the
//!   server then pulls from it ([`ServerConn::pull`], RDMA READ) or pushes into it
//!   ([`ServerConn::push`], RDMA WRITE). The descriptor is revoked when the call returns, so a key
//!   is valid only for the request that carried it.

pub mod addr;
pub mod aligned;
pub mod error;
pub mod pool;

pub use addr::Address;
pub use aligned::AlignedBuf;
pub use error::FabricError;
pub use pool::{BufferPool, PoolBuf};

use rustre_proto::FrameHeader;
use std::sync::Arc;
use std::time::Duration;

/// Describes client memory exposed for one bulk transfer (what an RDMA peer needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkDesc {
    /// Remote virtual address (verbs) or an opaque token (tcp, sim).
    pub addr: u64,
    /// Remote key; valid only until the call that exposed it returns.
    pub rkey: u32,
    /// Length in bytes.
    pub len: u64,
}

/// Client memory lent to the server for one call.
pub enum Bulk<'a> {
    /// The server will pull (RDMA READ) these bytes: a client write.
    Source(&'a [u8]),
    /// The server will push (RDMA WRITE) into this buffer: a client read.
    Sink(&'a mut [u8]),
}

/// A reply to a call.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The reply header (opcode, flags including `FLAG_ERROR`, xid).
    pub header: FrameHeader,
    /// The encoded reply body.
    pub body: Vec<u8>,
}

/// Limits and timeouts of one connection; every queue and buffer is bounded by these.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    /// This node's client id, stamped into every request header.
    pub client_id: u64,
    /// Largest frame body accepted or sent.
    pub max_body: u32,
    /// Requests a sender may have outstanding before it waits (credit-based flow control).
    pub credits: u32,
    /// How long a call waits for its reply before failing with [`FabricError::Timeout`].
    pub call_timeout: Duration,
    /// How long to try to connect.
    pub connect_timeout: Duration,
    /// Busy-poll budget before a completion wait blocks (verbs).
    pub busy_poll: Duration,
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self {
            client_id: 0,
            max_body: rustre_proto::frame::DEFAULT_MAX_BODY,
            credits: 64,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            busy_poll: Duration::from_micros(50),
        }
    }
}

/// The client side of a connection. Shared by many threads (`Arc<dyn ClientConn>`).
pub trait ClientConn: Send + Sync {
    /// Sends a request and waits for its reply.
    fn call(&self, opcode: u16, body: &[u8]) -> Result<Reply, FabricError>;

    /// Exposes `bulk` for the duration of this call, encodes the request body with the descriptor
    /// the provider assigned, sends it and waits for the reply. When this returns (or fails), the
    /// descriptor is revoked and the server can no longer touch the buffer.
    fn call_bulk(
        &self,
        opcode: u16,
        bulk: Bulk<'_>,
        body: &mut dyn FnMut(BulkDesc) -> Vec<u8>,
    ) -> Result<Reply, FabricError>;

    /// Human-readable peer address, for error messages.
    fn peer(&self) -> String;

    /// Closes the connection; outstanding and later calls fail with [`FabricError::Closed`].
    fn close(&self);

    /// Like [`ClientConn::call`], but under the caller's `xid` instead of the connection's next
    /// one, so that a resend on a new connection after a failover carries its original xid (a
    /// server answers a request it already executed from its reply cache). The caller keeps its
    /// xids unique per connection and clear of the ones the connection assigns itself (which
    /// count up from 1). `None` when the provider does not support caller-chosen xids.
    fn call_with_xid(&self, _xid: u64, _opcode: u16, _body: &[u8]) -> Option<Result<Reply, FabricError>> {
        None
    }
}

/// A request received by a server.
#[derive(Debug)]
pub struct Incoming {
    /// The request header.
    pub header: FrameHeader,
    /// The encoded request body.
    pub body: Vec<u8>,
}

/// The server side of one accepted connection. Shared by the threads serving its requests.
pub trait ServerConn: Send + Sync {
    /// Waits for the next request. `Err(FabricError::Closed)` once the peer has gone.
    fn recv(&self) -> Result<Incoming, FabricError>;

    /// Sends the reply to the request `to`.
    fn reply(&self, to: &FrameHeader, opcode: u16, body: &[u8], error: bool) -> Result<(), FabricError>;

    /// RDMA READ: copies the client's exposed bytes `desc` into `dst` (`dst.len()` ≤ `desc.len`).
    fn pull(&self, desc: &BulkDesc, offset: u64, dst: &mut [u8]) -> Result<(), FabricError>;

    /// RDMA WRITE: copies `src` into the client's exposed buffer `desc` at `offset`.
    fn push(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError>;

    /// [`ServerConn::push`] for a reply that lets the client check the bytes (it carries their
    /// crc32c): it may return once they are on their way, before the client has confirmed them,
    /// and a client that refuses them fails its call itself. tcp saves the acknowledgement's
    /// round trip this way; elsewhere it is `push`.
    fn push_posted(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError> {
        self.push(desc, offset, src)
    }

    /// Whether more of the client's requests may already be waiting: read and not yet taken by
    /// `recv`, or arrived and not yet read. A server holding one request uses it to decide whether
    /// to serve that request on the receiving thread (nothing else is waiting) or to hand it on.
    /// Providers that cannot tell say `true`.
    fn backlog(&self) -> bool {
        true
    }

    /// Human-readable peer address, for logs.
    fn peer(&self) -> String;

    /// The client id the peer announced (from its first frame), 0 until known.
    fn client_id(&self) -> u64;

    /// Closes the connection.
    fn close(&self);
}

/// A listening endpoint.
pub trait Listener: Send + Sync {
    /// Waits for the next connection.
    fn accept(&self) -> Result<Arc<dyn ServerConn>, FabricError>;

    /// The address peers connect to (with the real port when 0 was asked for).
    fn local_addr(&self) -> Address;

    /// Registers `pool` so that `pull`/`push` into its buffers are zero-copy (verbs: memory region
    /// on this listener's protection domain). Other providers accept any memory and do nothing.
    fn register_pool(&self, _pool: &Arc<BufferPool>) -> Result<(), FabricError> {
        Ok(())
    }

    /// Stops accepting; `accept` returns [`FabricError::Closed`].
    fn shutdown(&self);
}

/// Connects to `addr` (any scheme).
pub fn connect(addr: &Address, opts: &ConnOptions) -> Result<Arc<dyn ClientConn>, FabricError> {
    match addr {
        Address::Tcp(sa) => Ok(tcp::connect(*sa, opts)?),
        Address::Sim(name) => Ok(sim::connect(name, opts)?),
        Address::Verbs(sa) => verbs::connect(*sa, opts),
        Address::Auto(sa) => {
            if verbs::devices_present() {
                verbs::connect(*sa, opts)
            } else {
                Ok(tcp::connect(*sa, opts)?)
            }
        }
    }
}

/// Listens on `addr` (any scheme).
pub fn listen(addr: &Address, opts: &ConnOptions) -> Result<Arc<dyn Listener>, FabricError> {
    match addr {
        Address::Tcp(sa) => Ok(tcp::listen(*sa, opts)?),
        Address::Sim(name) => Ok(sim::listen(name, opts)?),
        Address::Verbs(sa) => verbs::listen(*sa, opts),
        Address::Auto(sa) => {
            if verbs::devices_present() {
                verbs::listen(*sa, opts)
            } else {
                Ok(tcp::listen(*sa, opts)?)
            }
        }
    }
}

pub mod sim;
pub mod tcp;
pub mod verbs;
