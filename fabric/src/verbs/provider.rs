//! Connection set-up over rdma_cm and the `ClientConn`/`ServerConn`/`Listener` handles.

use super::conn::{Conn, Role};
use super::endpoint::{CmId, Endpoint, SLOT_SIZE, rd_atom_limits};
use super::ffi::{ACCESS_REMOTE_READ, ACCESS_REMOTE_WRITE, Domain, EventChannel, sockaddr_of, verb_failed};
use super::wire::{Exposure, HELLO_LEN, Hello};
use crate::{
    Address, BufferPool, Bulk, BulkDesc, ClientConn, ConnOptions, FabricError, Incoming, Listener, Reply, ServerConn,
};
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};
use parking_lot::{Condvar, Mutex};
use rdma_sys::*;
use rustre_proto::{FrameHeader, ProtocolError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bounds on the receive buffers (and so the credits) of one connection.
const RECV_MIN: u32 = 4;
const RECV_MAX: u32 = 1024;
/// Accepted connections waiting for `accept`.
const ACCEPT_QUEUE: usize = 64;
/// rdma_listen backlog.
const BACKLOG: i32 = 64;
/// How often the listener thread looks at its shutdown flag.
const LISTENER_TICK: Duration = Duration::from_millis(100);

fn recv_count(opts: &ConnOptions) -> u32 {
    opts.credits.clamp(RECV_MIN, RECV_MAX)
}

fn timeout_ms(d: Duration) -> i32 {
    d.as_millis().clamp(1, i32::MAX as u128) as i32
}

fn conn_param(hello: &[u8; HELLO_LEN], responder_resources: u8, initiator_depth: u8) -> rdma_conn_param {
    rdma_conn_param {
        private_data: hello.as_ptr().cast(),
        private_data_len: HELLO_LEN as u8,
        responder_resources,
        initiator_depth,
        flow_control: 1,
        retry_count: 7,
        // Credits keep receives posted ahead of every SEND; retrying RNR forever is only a backstop.
        rnr_retry_count: 7,
        srq: 0,
        qp_num: 0,
    }
}

fn bad_hello(peer: &str, reason: String) -> FabricError {
    FabricError::Protocol {
        peer: peer.to_string(),
        source: ProtocolError::invalid("verbs.hello", reason),
    }
}

/// The peer address of a connected id.
fn peer_of(id: *mut rdma_cm_id) -> String {
    // SAFETY: the id is live; `route.addr.dst_addr_union` holds a sockaddr whose family says which
    // member is valid, and sockaddr_storage covers both.
    let ss = unsafe { (*id).route.addr.dst_addr_union.dst_storage };
    let sa = match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: family AF_INET: the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                u16::from_be(sin.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: family AF_INET6: the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                u16::from_be(sin6.sin6_port),
            )
        }
        _ => return "verbs://?".to_string(),
    };
    format!("verbs://{sa}")
}

/// A new cm id on `channel`.
fn create_id(channel: &EventChannel) -> Result<CmId, FabricError> {
    let mut raw: *mut rdma_cm_id = std::ptr::null_mut();
    // SAFETY: the channel is live; `raw` is an out-pointer set on success.
    if unsafe {
        rdma_create_id(
            channel.raw(),
            &mut raw,
            std::ptr::null_mut(),
            rdma_port_space::RDMA_PS_TCP,
        )
    } != 0
    {
        return Err(verb_failed("rdma_create_id", super::ffi::errno()));
    }
    Ok(CmId(raw))
}

/// A connection and its progress thread; closing and joining on drop.
struct Handle {
    conn: Arc<Conn>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Handle {
    fn start(conn: Arc<Conn>) -> Result<Self, FabricError> {
        let c = Arc::clone(&conn);
        let thread = std::thread::Builder::new()
            .name("verbs-progress".into())
            .spawn(move || c.progress())
            .map_err(|e| FabricError::Io {
                op: "spawning the verbs progress thread",
                peer: conn.peer.clone(),
                source: e,
            })?;
        Ok(Self {
            conn,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.conn.close();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

// ---- client ------------------------------------------------------------------------------------

/// The client side of a verbs connection.
pub(super) struct VerbsClient {
    h: Handle,
    client_id: u64,
    next_xid: AtomicU64,
    call_timeout: Duration,
    max_body: u32,
    slots: Mutex<u32>,
    slots_cv: Condvar,
    slots_max: u32,
}

/// One outstanding call of a [`VerbsClient`]; frees its slot on drop.
struct SlotGuard<'a>(&'a VerbsClient);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.slots.lock() -= 1;
        // All: a waiter that finds the connection closed leaves without passing the wake-up on.
        self.0.slots_cv.notify_all();
    }
}

/// Connects to `addr`: resolve address and route, build the QP, connect, exchange hellos.
pub(super) fn connect(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<VerbsClient>, FabricError> {
    let peer = format!("verbs://{addr}");
    let channel = EventChannel::new()?;
    let id = create_id(&channel)?;
    let mut dst = sockaddr_of(&addr);
    let ms = timeout_ms(opts.connect_timeout);
    // SAFETY: id is live; `dst` is a valid sockaddr for the call; no source address is given.
    if unsafe {
        rdma_resolve_addr(
            id.0,
            std::ptr::null_mut(),
            (&mut dst as *mut libc::sockaddr_storage).cast(),
            ms,
        )
    } != 0
    {
        return Err(verb_failed("rdma_resolve_addr", super::ffi::errno()));
    }
    use rdma_cm_event_type::*;
    drop(channel.expect(
        RDMA_CM_EVENT_ADDR_RESOLVED,
        "rdma_resolve_addr",
        opts.connect_timeout,
        &peer,
    )?);
    // SAFETY: the address is resolved, so the id may resolve its route.
    if unsafe { rdma_resolve_route(id.0, ms) } != 0 {
        return Err(FabricError::verbs_errno("rdma_resolve_route"));
    }
    drop(channel.expect(
        RDMA_CM_EVENT_ROUTE_RESOLVED,
        "rdma_resolve_route",
        opts.connect_timeout,
        &peer,
    )?);
    // SAFETY: after route resolution the id is bound to a device and `verbs` is its context.
    let ctx = unsafe { (*id.0).verbs };
    let domain = Domain::new(ctx)?;
    let (responder, initiator) = rd_atom_limits(ctx);
    let r = recv_count(opts);
    let ep = Endpoint::new(id, channel, domain, r, r)?;
    let hello = Hello {
        recv_count: r,
        recv_size: SLOT_SIZE as u32,
    }
    .encode();
    let mut param = conn_param(&hello, responder, initiator);
    // SAFETY: the id has its QP; `param` and the hello it points to live across the call.
    if unsafe { rdma_connect(ep.id, &mut param) } != 0 {
        return Err(FabricError::verbs_errno("rdma_connect"));
    }
    let ev = ep
        .channel
        .expect(RDMA_CM_EVENT_ESTABLISHED, "rdma_connect", opts.connect_timeout, &peer)?;
    let peer_hello = Hello::decode(&ev.private_data()).map_err(|r| bad_hello(&peer, r))?;
    drop(ev);
    let conn = Conn::new(ep, peer, peer_hello, opts, Role::client())?;
    Ok(Arc::new(VerbsClient {
        h: Handle::start(conn)?,
        client_id: opts.client_id,
        next_xid: AtomicU64::new(1),
        call_timeout: opts.call_timeout,
        max_body: opts.max_body,
        slots: Mutex::new(0),
        slots_cv: Condvar::new(),
        slots_max: opts.credits.max(1),
    }))
}

impl VerbsClient {
    #[cfg(test)]
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.h.conn
    }

    /// Waits for one of the `credits` call slots (the bound on this client's outstanding calls).
    fn take_slot(&self, deadline: Instant) -> Result<SlotGuard<'_>, FabricError> {
        let mut used = self.slots.lock();
        loop {
            if self.h.conn.is_closed() {
                return Err(self.h.conn.closed_err());
            }
            if *used < self.slots_max {
                *used += 1;
                return Ok(SlotGuard(self));
            }
            if self.slots_cv.wait_until(&mut used, deadline).timed_out() {
                return Err(FabricError::Timeout {
                    peer: self.h.conn.peer.clone(),
                    after_ms: self.call_timeout.as_millis() as u64,
                });
            }
        }
    }

    fn call_frame(
        &self,
        xid: Option<u64>,
        opcode: u16,
        body: &[u8],
        exposure: Option<&Exposure>,
    ) -> Result<Reply, FabricError> {
        let conn = &self.h.conn;
        if body.len() > self.max_body as usize {
            return Err(FabricError::TooLarge {
                len: body.len(),
                max: self.max_body as usize,
            });
        }
        let deadline = Instant::now() + self.call_timeout;
        let _slot = self.take_slot(deadline)?;
        let Role::Client { pending } = &conn.role else {
            return Err(conn.closed_err());
        };
        let xid = xid.unwrap_or_else(|| self.next_xid.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = bounded(1);
        pending.lock().insert(xid, tx);
        // `fail` clears the waiters; one registered after that would wait in vain.
        if conn.is_closed() {
            pending.lock().remove(&xid);
            return Err(conn.closed_err());
        }
        let header = FrameHeader::request(opcode, xid, self.client_id, body.len() as u32);
        if let Err(e) = conn.send_frame(&header, body, exposure, deadline) {
            pending.lock().remove(&xid);
            return Err(e);
        }
        let (inline, _) = conn.spin(conn.rtt_budget(), true, || match rx.try_recv() {
            Ok(reply) => Some(Some(reply)),
            Err(TryRecvError::Disconnected) => Some(None),
            Err(TryRecvError::Empty) => None,
        });
        match inline {
            Some(Some(reply)) => return Ok(reply),
            Some(None) => return Err(conn.closed_err()),
            None => {}
        }
        match conn.blocking(|| rx.recv_deadline(deadline)) {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Timeout) => {
                pending.lock().remove(&xid);
                Err(FabricError::Timeout {
                    peer: conn.peer.clone(),
                    after_ms: self.call_timeout.as_millis() as u64,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(conn.closed_err()),
        }
    }
}

impl ClientConn for VerbsClient {
    fn call(&self, opcode: u16, body: &[u8]) -> Result<Reply, FabricError> {
        self.call_frame(None, opcode, body, None)
    }

    fn call_with_xid(&self, xid: u64, opcode: u16, body: &[u8]) -> Option<Result<Reply, FabricError>> {
        Some(self.call_frame(Some(xid), opcode, body, None))
    }

    fn call_bulk(
        &self,
        opcode: u16,
        bulk: Bulk<'_>,
        body: &mut dyn FnMut(BulkDesc) -> Vec<u8>,
    ) -> Result<Reply, FabricError> {
        let (ptr, len, access) = match bulk {
            Bulk::Source(s) => (s.as_ptr().cast_mut(), s.len(), ACCESS_REMOTE_READ),
            Bulk::Sink(s) => (s.as_mut_ptr(), s.len(), ACCESS_REMOTE_WRITE),
        };
        // The registration lives exactly as long as this call: its rkey is revoked (the MR
        // deregistered) before we return, whatever the outcome.
        let mr = self.h.conn.expose(ptr, len, access)?;
        let desc = BulkDesc {
            addr: ptr as u64,
            rkey: mr.as_ref().map(|m| m.rkey()).unwrap_or(0),
            len: len as u64,
        };
        let request = body(desc);
        let exposure = Exposure {
            addr: desc.addr,
            len: desc.len,
            rkey: desc.rkey,
            writable: access == ACCESS_REMOTE_WRITE,
        };
        let result = self.call_frame(None, opcode, &request, mr.is_some().then_some(&exposure));
        drop(mr);
        result
    }

    fn peer(&self) -> String {
        self.h.conn.peer.clone()
    }

    fn close(&self) {
        self.h.conn.close();
    }
}

// ---- server ------------------------------------------------------------------------------------

/// The server side of one accepted verbs connection.
pub(super) struct VerbsServer {
    h: Handle,
    call_timeout: Duration,
}

#[cfg(test)]
impl VerbsServer {
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.h.conn
    }
}

impl ServerConn for VerbsServer {
    fn recv(&self) -> Result<Incoming, FabricError> {
        self.h.conn.recv()
    }

    fn reply(&self, to: &FrameHeader, opcode: u16, body: &[u8], error: bool) -> Result<(), FabricError> {
        let conn = &self.h.conn;
        // send_frame refuses bodies over the limit before the header's length is used.
        let header = to.reply_to(opcode, body.len() as u32, error);
        conn.revoke(to.xid);
        conn.send_frame(&header, body, None, Instant::now() + self.call_timeout)
    }

    fn pull(&self, desc: &BulkDesc, offset: u64, dst: &mut [u8]) -> Result<(), FabricError> {
        self.h.conn.pull(desc, offset, dst)
    }

    fn push(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError> {
        self.h.conn.push(desc, offset, src)
    }

    fn peer(&self) -> String {
        self.h.conn.peer.clone()
    }

    fn client_id(&self) -> u64 {
        match &self.h.conn.role {
            Role::Server { client_id, .. } => client_id.load(Ordering::Relaxed),
            Role::Client { .. } => 0,
        }
    }

    fn close(&self) {
        self.h.conn.close();
    }
}

// ---- listener ----------------------------------------------------------------------------------

struct ListenerShared {
    id: *mut rdma_cm_id,
    local: SocketAddr,
    opts: ConnOptions,
    shutdown: AtomicBool,
    domains: Mutex<Vec<Arc<Domain>>>,
    pools: Mutex<Vec<Arc<BufferPool>>>,
    channel: EventChannel,
}

// SAFETY: the listening id is only used by the listener thread (events) and, at drop, by the last
// owner; the mutable state is behind mutexes and atomics.
unsafe impl Send for ListenerShared {}
// SAFETY: as above.
unsafe impl Sync for ListenerShared {}

impl Drop for ListenerShared {
    fn drop(&mut self) {
        // Our PDs before the id that lends their device context; the channel after the id.
        self.domains.lock().clear();
        // SAFETY: the id is ours; the listener thread has exited (it holds an Arc to us).
        unsafe { rdma_destroy_id(self.id) };
    }
}

impl ListenerShared {
    /// The protection domain for connections on device `ctx`, with every registered pool.
    fn domain_for(&self, ctx: *mut ibv_context) -> Result<Arc<Domain>, FabricError> {
        // Lock order everywhere: pools, then domains.
        let pools = self.pools.lock();
        let mut domains = self.domains.lock();
        if let Some(d) = domains.iter().find(|d| d.ctx() == ctx) {
            return Ok(Arc::clone(d));
        }
        let d = Domain::new(ctx)?;
        for pool in pools.iter() {
            d.register_pool(pool)?;
        }
        domains.push(Arc::clone(&d));
        Ok(d)
    }

    /// Builds and accepts one requested connection.
    fn accept_one(
        &self,
        raw: *mut rdma_cm_id,
        private: &[u8],
        peer_responder: u8,
        peer_initiator: u8,
    ) -> Result<Arc<VerbsServer>, FabricError> {
        let id = CmId(raw);
        let peer = peer_of(id.0);
        let peer_hello = match Hello::decode(private) {
            Ok(h) => h,
            Err(reason) => {
                // SAFETY: the id is a pending connection request; rejecting it needs no data.
                unsafe { rdma_reject(id.0, std::ptr::null(), 0) };
                return Err(bad_hello(&peer, reason));
            }
        };
        let channel = EventChannel::new()?;
        // SAFETY: both are live; the CONNECT_REQUEST event for this id was acknowledged already.
        if unsafe { rdma_migrate_id(id.0, channel.raw()) } != 0 {
            return Err(FabricError::verbs_errno("rdma_migrate_id"));
        }
        // SAFETY: a connection request's id is bound to the device it arrived on.
        let ctx = unsafe { (*id.0).verbs };
        let domain = self.domain_for(ctx)?;
        let (responder, initiator) = rd_atom_limits(ctx);
        let r = recv_count(&self.opts);
        let ep = Endpoint::new(id, channel, domain, r, r)?;
        let hello = Hello {
            recv_count: r,
            recv_size: SLOT_SIZE as u32,
        }
        .encode();
        let mut param = conn_param(
            &hello,
            responder.min(peer_responder.max(1)),
            initiator.min(peer_initiator.max(1)),
        );
        // SAFETY: the id has its QP with receives posted; `param` lives across the call.
        if unsafe { rdma_accept(ep.id, &mut param) } != 0 {
            return Err(FabricError::verbs_errno("rdma_accept"));
        }
        use rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED;
        drop(ep.channel.expect(
            RDMA_CM_EVENT_ESTABLISHED,
            "rdma_accept",
            self.opts.connect_timeout,
            &peer,
        )?);
        let conn = Conn::new(ep, peer, peer_hello, &self.opts, Role::server(r))?;
        Ok(Arc::new(VerbsServer {
            h: Handle::start(conn)?,
            call_timeout: self.opts.call_timeout,
        }))
    }

    fn run(self: Arc<Self>, accepted: Sender<Arc<VerbsServer>>) {
        use rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST;
        while !self.shutdown.load(Ordering::Acquire) {
            let ev = match self.channel.next(LISTENER_TICK) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(listener = %self.local, error = %e, "verbs listener stops");
                    return;
                }
            };
            if ev.kind() != RDMA_CM_EVENT_CONNECT_REQUEST {
                continue;
            }
            let raw = ev.id();
            let private = ev.private_data();
            // SAFETY: for a connection request `param.conn` is the active member; the values are
            // already from our point of view (the peer's initiator depth is our responder limit).
            let (responder, initiator) = unsafe {
                (
                    (*ev.raw()).param.conn.responder_resources,
                    (*ev.raw()).param.conn.initiator_depth,
                )
            };
            drop(ev);
            match self.accept_one(raw, &private, responder, initiator) {
                Ok(conn) => {
                    if accepted.try_send(conn).is_err() {
                        tracing::warn!(listener = %self.local, "accept queue full; dropping a connection");
                    }
                }
                Err(e) => tracing::warn!(listener = %self.local, error = %e, "verbs connection not accepted"),
            }
        }
    }
}

/// A verbs listening endpoint.
pub(super) struct VerbsListener {
    shared: Arc<ListenerShared>,
    accepted: Receiver<Arc<VerbsServer>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl VerbsListener {
    /// Like [`Listener::accept`], with the concrete connection type.
    pub(super) fn accept_verbs(&self) -> Result<Arc<VerbsServer>, FabricError> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(FabricError::Closed(format!("verbs listener {}", self.shared.local)));
        }
        self.accepted
            .recv()
            .map_err(|_| FabricError::Closed(format!("verbs listener {}", self.shared.local)))
    }
}

/// Binds and listens on `addr`.
pub(super) fn listen(addr: SocketAddr, opts: &ConnOptions) -> Result<Arc<VerbsListener>, FabricError> {
    let channel = EventChannel::new()?;
    let id = create_id(&channel)?;
    let mut sa = sockaddr_of(&addr);
    // SAFETY: id is live; `sa` is a valid sockaddr for the call.
    if unsafe { rdma_bind_addr(id.0, (&mut sa as *mut libc::sockaddr_storage).cast()) } != 0 {
        return Err(verb_failed("rdma_bind_addr", super::ffi::errno()));
    }
    // SAFETY: the id is bound.
    if unsafe { rdma_listen(id.0, BACKLOG) } != 0 {
        return Err(FabricError::verbs_errno("rdma_listen"));
    }
    // SAFETY: the id is bound, so it has a source port.
    let port = u16::from_be(unsafe { rdma_get_src_port(id.0) });
    let local = SocketAddr::new(addr.ip(), port);
    // SAFETY: a bound id's `verbs` is its device context, or NULL when bound to a wildcard address.
    let ctx = unsafe { (*id.0).verbs };
    let mut domains = Vec::new();
    if !ctx.is_null() {
        domains.push(Domain::new(ctx)?);
    }
    let shared = Arc::new(ListenerShared {
        id: id.into_raw(),
        local,
        opts: opts.clone(),
        shutdown: AtomicBool::new(false),
        domains: Mutex::new(domains),
        pools: Mutex::new(Vec::new()),
        channel,
    });
    let (tx, rx) = bounded(ACCEPT_QUEUE);
    let s = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("verbs-listener".into())
        .spawn(move || s.run(tx))
        .map_err(|e| FabricError::Io {
            op: "spawning the verbs listener thread",
            peer: local.to_string(),
            source: e,
        })?;
    Ok(Arc::new(VerbsListener {
        shared,
        accepted: rx,
        thread: Mutex::new(Some(thread)),
    }))
}

impl Listener for VerbsListener {
    fn accept(&self) -> Result<Arc<dyn ServerConn>, FabricError> {
        Ok(self.accept_verbs()?)
    }

    fn local_addr(&self) -> Address {
        Address::Verbs(self.shared.local)
    }

    fn register_pool(&self, pool: &Arc<BufferPool>) -> Result<(), FabricError> {
        let mut pools = self.shared.pools.lock();
        if pools.iter().any(|p| Arc::ptr_eq(p, pool)) {
            return Ok(());
        }
        for d in self.shared.domains.lock().iter() {
            d.register_pool(pool)?;
        }
        pools.push(Arc::clone(pool));
        Ok(())
    }

    fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
    }
}

impl Drop for VerbsListener {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}
