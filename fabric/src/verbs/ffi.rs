//! Owned wrappers around the raw rdma-sys objects: event channels, cm events, protection domains
//! and memory regions. Each wrapper frees its object exactly once; the order between objects is
//! kept by their owners (see `conn::Endpoint`).

use crate::{BufferPool, FabricError};
use parking_lot::Mutex;
use rdma_sys::*;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The calling thread's errno.
pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Errors meaning "this kernel or machine has no RDMA" rather than a failing verb.
pub(super) fn is_no_device(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENODEV | libc::ENOSYS | libc::ENOENT | libc::ENXIO | libc::EAFNOSUPPORT
    )
}

/// The failure of `verb`, mapping "no RDMA here" errnos to [`FabricError::NoDevice`].
pub(super) fn verb_failed(verb: &'static str, errno: i32) -> FabricError {
    if is_no_device(errno) {
        FabricError::NoDevice(format!("{verb}: {}", std::io::Error::from_raw_os_error(errno)))
    } else {
        FabricError::verbs(verb, errno)
    }
}

/// Waits until `fd` is readable or `timeout` passes; true when readable.
pub(super) fn wait_readable(fds: &[RawFd], timeout: Duration) -> Vec<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs for the duration of the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    pfds.iter().map(|p| p.revents != 0).collect()
}

/// Puts `fd` into non-blocking mode.
pub(super) fn set_nonblocking(fd: RawFd, verb: &'static str) -> Result<(), FabricError> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(FabricError::verbs_errno(verb));
    }
    Ok(())
}

/// Converts a socket address into the C form rdma_cm takes.
pub(super) fn sockaddr_of(addr: &SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (unspecified) value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    ss
}

/// An rdma_cm event channel (its fd is non-blocking).
pub(super) struct EventChannel(*mut rdma_event_channel);

// SAFETY: an event channel is a file descriptor wrapper; librdmacm calls on it are thread-safe and
// this crate reads events from one thread at a time.
unsafe impl Send for EventChannel {}
// SAFETY: as above.
unsafe impl Sync for EventChannel {}

impl EventChannel {
    /// Creates a channel; no `/dev/infiniband/rdma_cm` means [`FabricError::NoDevice`].
    pub(super) fn new() -> Result<Self, FabricError> {
        // SAFETY: no arguments; the result is checked for NULL.
        let ch = unsafe { rdma_create_event_channel() };
        if ch.is_null() {
            return Err(verb_failed("rdma_create_event_channel", errno()));
        }
        let this = Self(ch);
        set_nonblocking(this.fd(), "fcntl(rdma event channel)")?;
        Ok(this)
    }

    pub(super) fn raw(&self) -> *mut rdma_event_channel {
        self.0
    }

    pub(super) fn fd(&self) -> RawFd {
        // SAFETY: the channel is valid until drop.
        unsafe { (*self.0).fd }
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` when none came.
    pub(super) fn next(&self, timeout: Duration) -> Result<Option<CmEvent>, FabricError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ev: *mut rdma_cm_event = std::ptr::null_mut();
            // SAFETY: the channel is valid; `ev` is an out-pointer filled on success.
            let rc = unsafe { rdma_get_cm_event(self.0, &mut ev) };
            if rc == 0 && !ev.is_null() {
                return Ok(Some(CmEvent(ev)));
            }
            let e = errno();
            if e != libc::EAGAIN && e != libc::EWOULDBLOCK && e != libc::EINTR {
                return Err(FabricError::verbs("rdma_get_cm_event", e));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            wait_readable(&[self.fd()], deadline - now);
        }
    }

    /// Waits for an event of type `want` for the current connection setup step; any other event is
    /// a failure naming `step`.
    pub(super) fn expect(
        &self,
        want: rdma_cm_event_type::Type,
        step: &'static str,
        timeout: Duration,
        peer: &str,
    ) -> Result<CmEvent, FabricError> {
        match self.next(timeout)? {
            None => Err(FabricError::Timeout {
                peer: peer.to_string(),
                after_ms: timeout.as_millis() as u64,
            }),
            Some(ev) if ev.kind() == want && ev.status() == 0 => Ok(ev),
            Some(ev) => {
                let status = ev.status();
                let kind = ev.kind();
                drop(ev);
                if kind == rdma_cm_event_type::RDMA_CM_EVENT_REJECTED {
                    return Err(FabricError::Unreachable(format!("{peer}: connection rejected")));
                }
                let errno = if status < 0 {
                    -status
                } else if status > 0 {
                    status
                } else {
                    libc::EPROTO
                };
                Err(FabricError::Verbs {
                    verb: step,
                    errno,
                    errno_text: format!("unexpected {} (status {status})", event_name(kind)),
                })
            }
        }
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: the channel is ours and every id using it was destroyed or migrated by its owner.
        unsafe { rdma_destroy_event_channel(self.0) };
    }
}

/// A received cm event; acknowledged on drop.
pub(super) struct CmEvent(*mut rdma_cm_event);

impl CmEvent {
    pub(super) fn kind(&self) -> rdma_cm_event_type::Type {
        // SAFETY: the event is valid until acknowledged (drop).
        unsafe { (*self.0).event }
    }

    pub(super) fn status(&self) -> i32 {
        // SAFETY: as above.
        unsafe { (*self.0).status }
    }

    pub(super) fn raw(&self) -> *mut rdma_cm_event {
        self.0
    }

    /// The id the event is about (for CONNECT_REQUEST: the new connection's id).
    pub(super) fn id(&self) -> *mut rdma_cm_id {
        // SAFETY: as above.
        unsafe { (*self.0).id }
    }

    /// A copy of the connection private data carried by the event.
    pub(super) fn private_data(&self) -> Vec<u8> {
        // SAFETY: for connection events `param.conn` is the active union member; the pointer and
        // length come from librdmacm and stay valid until the event is acknowledged.
        unsafe {
            let conn = &(*self.0).param.conn;
            if conn.private_data.is_null() || conn.private_data_len == 0 {
                return Vec::new();
            }
            std::slice::from_raw_parts(conn.private_data.cast::<u8>(), conn.private_data_len as usize).to_vec()
        }
    }
}

impl Drop for CmEvent {
    fn drop(&mut self) {
        // SAFETY: each event is acknowledged exactly once, here.
        unsafe { rdma_ack_cm_event(self.0) };
    }
}

/// Names of cm events, for error messages.
pub(super) fn event_name(kind: rdma_cm_event_type::Type) -> &'static str {
    use rdma_cm_event_type::*;
    match kind {
        RDMA_CM_EVENT_ADDR_RESOLVED => "ADDR_RESOLVED",
        RDMA_CM_EVENT_ADDR_ERROR => "ADDR_ERROR",
        RDMA_CM_EVENT_ROUTE_RESOLVED => "ROUTE_RESOLVED",
        RDMA_CM_EVENT_ROUTE_ERROR => "ROUTE_ERROR",
        RDMA_CM_EVENT_CONNECT_REQUEST => "CONNECT_REQUEST",
        RDMA_CM_EVENT_CONNECT_RESPONSE => "CONNECT_RESPONSE",
        RDMA_CM_EVENT_CONNECT_ERROR => "CONNECT_ERROR",
        RDMA_CM_EVENT_UNREACHABLE => "UNREACHABLE",
        RDMA_CM_EVENT_REJECTED => "REJECTED",
        RDMA_CM_EVENT_ESTABLISHED => "ESTABLISHED",
        RDMA_CM_EVENT_DISCONNECTED => "DISCONNECTED",
        RDMA_CM_EVENT_DEVICE_REMOVAL => "DEVICE_REMOVAL",
        RDMA_CM_EVENT_TIMEWAIT_EXIT => "TIMEWAIT_EXIT",
        _ => "cm event",
    }
}

/// A registered memory region.
pub(super) struct Mr(*mut ibv_mr);

// SAFETY: an MR handle is immutable after registration; deregistration happens once, in drop.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl Mr {
    pub(super) fn lkey(&self) -> u32 {
        // SAFETY: valid until drop.
        unsafe { (*self.0).lkey }
    }

    pub(super) fn rkey(&self) -> u32 {
        // SAFETY: valid until drop.
        unsafe { (*self.0).rkey }
    }

    fn contains(&self, ptr: *const u8, len: usize) -> bool {
        // SAFETY: valid until drop.
        let (start, mlen) = unsafe { ((*self.0).addr as usize, (*self.0).length) };
        let p = ptr as usize;
        p >= start && p.checked_add(len).is_some_and(|end| end <= start + mlen)
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered by `Domain::register`; its protection domain outlives it (owners drop
        // every Mr before the Domain that made it).
        unsafe { ibv_dereg_mr(self.0) };
    }
}

/// Access for memory the local side only sends from or receives into.
pub(super) const ACCESS_LOCAL: u32 = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
/// Access for client memory the server pulls from (RDMA READ).
pub(super) const ACCESS_REMOTE_READ: u32 = ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
/// Access for client memory the server pushes into (RDMA WRITE).
pub(super) const ACCESS_REMOTE_WRITE: u32 =
    ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;

/// Bounce buffers a server uses for pull/push into memory outside its registered pools.
const BOUNCE_SIZE: usize = 1 << 20;
/// How many bounce buffers a server domain holds (bounds concurrent bounced transfers).
const BOUNCE_COUNT: usize = 4;

/// A protection domain on one device, with the pools registered on it.
pub(super) struct Domain {
    ctx: *mut ibv_context,
    pd: *mut ibv_pd,
    pools: Mutex<Vec<(Arc<BufferPool>, Mr)>>,
    bounce: Mutex<Option<(Arc<BufferPool>, Arc<Mr>)>>,
}

// SAFETY: the PD is used through thread-safe verbs only; the mutable parts are behind mutexes.
unsafe impl Send for Domain {}
// SAFETY: as above.
unsafe impl Sync for Domain {}

impl Domain {
    /// Allocates a protection domain on `ctx` (an `rdma_cm_id`'s device context).
    pub(super) fn new(ctx: *mut ibv_context) -> Result<Arc<Self>, FabricError> {
        if ctx.is_null() {
            return Err(FabricError::NoDevice(
                "rdma_cm bound the address to no RDMA device".into(),
            ));
        }
        // SAFETY: ctx is a live device context owned by librdmacm for as long as an id uses it; the
        // Domain is dropped before the id that lent the context (see Endpoint/VerbsListener drop).
        let pd = unsafe { ibv_alloc_pd(ctx) };
        if pd.is_null() {
            return Err(FabricError::verbs_errno("ibv_alloc_pd"));
        }
        Ok(Arc::new(Self {
            ctx,
            pd,
            pools: Mutex::new(Vec::new()),
            bounce: Mutex::new(None),
        }))
    }

    pub(super) fn ctx(&self) -> *mut ibv_context {
        self.ctx
    }

    pub(super) fn pd(&self) -> *mut ibv_pd {
        self.pd
    }

    /// Registers `len` bytes at `ptr` with `access`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped until the returned Mr is dropped.
    pub(super) unsafe fn register(&self, ptr: *mut u8, len: usize, access: u32) -> Result<Mr, FabricError> {
        // SAFETY: the caller keeps the memory mapped for the Mr's life; the PD is live.
        let mr = unsafe { ibv_reg_mr(self.pd, ptr.cast(), len, access as i32) };
        if mr.is_null() {
            return Err(FabricError::verbs_errno("ibv_reg_mr"));
        }
        Ok(Mr(mr))
    }

    /// Registers a whole buffer pool for zero-copy bulk (idempotent per pool).
    pub(super) fn register_pool(&self, pool: &Arc<BufferPool>) -> Result<(), FabricError> {
        let mut pools = self.pools.lock();
        if pools.iter().any(|(p, _)| Arc::ptr_eq(p, pool)) {
            return Ok(());
        }
        // SAFETY: the pool's mapping lives as long as the Arc stored beside the Mr.
        let mr = unsafe { self.register(pool.base_ptr(), pool.total_len(), ACCESS_LOCAL) }?;
        pools.push((Arc::clone(pool), mr));
        Ok(())
    }

    /// The lkey covering `ptr..ptr+len` if it lies in a registered pool.
    pub(super) fn lkey_for(&self, ptr: *const u8, len: usize) -> Option<u32> {
        self.pools
            .lock()
            .iter()
            .find(|(_, mr)| mr.contains(ptr, len))
            .map(|(_, mr)| mr.lkey())
    }

    /// The domain's bounce buffers (registered on first use).
    pub(super) fn bounce(&self) -> Result<(Arc<BufferPool>, Arc<Mr>), FabricError> {
        let mut b = self.bounce.lock();
        if let Some((pool, mr)) = b.as_ref() {
            return Ok((Arc::clone(pool), Arc::clone(mr)));
        }
        let pool = BufferPool::new(BOUNCE_SIZE, BOUNCE_COUNT).map_err(|e| FabricError::Io {
            op: "allocating bounce buffers",
            peer: String::new(),
            source: e,
        })?;
        // SAFETY: the pool lives beside its Mr in `self.bounce`, dropped after it (see Drop).
        let mr = Arc::new(unsafe { self.register(pool.base_ptr(), pool.total_len(), ACCESS_LOCAL) }?);
        *b = Some((Arc::clone(&pool), Arc::clone(&mr)));
        Ok((pool, mr))
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // Memory regions first, then the PD they belong to.
        self.pools.lock().clear();
        self.bounce.lock().take();
        // SAFETY: every Mr of this PD is gone (pools/bounce above; connection-owned Mrs are dropped
        // before their Arc<Domain>), and every QP using it was destroyed by its Endpoint.
        unsafe { ibv_dealloc_pd(self.pd) };
    }
}

/// True when at least one RDMA device exists (false on NULL, ENOSYS or an empty list).
pub(super) fn devices_present() -> bool {
    let mut n: i32 = 0;
    // SAFETY: `n` is a valid out-pointer; the list is freed below when non-NULL.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        return false;
    }
    // SAFETY: `list` came from ibv_get_device_list and is freed exactly once.
    unsafe { ibv_free_device_list(list) };
    n > 0
}
