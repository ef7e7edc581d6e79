//! The verbs objects of one connection: its cm id and event channel, completion channel, CQ, RC
//! queue pair, and the registered receive ring and send slots.

use super::ffi::{ACCESS_LOCAL, Domain, EventChannel, Mr, errno, set_nonblocking};
use crate::{BufferPool, FabricError};
use rdma_sys::*;
use std::sync::Arc;

/// Size of every receive buffer and send slot; larger frames travel as several fragments.
pub(super) const SLOT_SIZE: usize = 16 * 1024;
/// Explicit credit messages that may be in flight at once.
pub(super) const CREDIT_MSGS_MAX: u32 = 4;
/// RDMA READ/WRITE operations a connection may have in flight at once.
pub(super) const RDMA_OPS_MAX: u32 = 16;
/// Upper bound on outstanding RDMA READs we initiate or serve (device limits may lower it).
const RD_ATOM_MAX: u8 = 16;

/// An `rdma_cm_id` not yet owned by an [`Endpoint`]; destroyed if dropped.
pub(super) struct CmId(pub(super) *mut rdma_cm_id);

impl CmId {
    /// Gives up ownership without destroying.
    pub(super) fn into_raw(self) -> *mut rdma_cm_id {
        let id = self.0;
        std::mem::forget(self);
        id
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: the id is owned here and has no QP (Endpoint takes ownership before creating one).
        unsafe { rdma_destroy_id(self.0) };
    }
}

/// Device limits that shape the connection parameters.
pub(super) fn rd_atom_limits(ctx: *mut ibv_context) -> (u8, u8) {
    // SAFETY: ibv_device_attr is plain old data; all-zero is valid before the query fills it.
    let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: ctx is a live device context and `attr` a valid out-pointer.
    if unsafe { ibv_query_device(ctx, &mut attr) } != 0 {
        return (1, 1);
    }
    let clamp = |v: i32| v.clamp(1, RD_ATOM_MAX as i32) as u8;
    (clamp(attr.max_qp_rd_atom), clamp(attr.max_qp_init_rd_atom))
}

/// Every verbs object of one connection. Dropping it tears them down in the required order.
pub(super) struct Endpoint {
    pub(super) id: *mut rdma_cm_id,
    pub(super) comp: *mut ibv_comp_channel,
    pub(super) cq: *mut ibv_cq,
    pub(super) qp: *mut ibv_qp,
    pub(super) recv_count: u32,
    pub(super) send_count: u32,
    // Field order is drop order: MRs before the pools they cover and the domain they belong to;
    // the channel outlives the id (destroyed in `drop`).
    pub(super) recv_mr: Option<Mr>,
    pub(super) send_mr: Option<Mr>,
    pub(super) recv_pool: Arc<BufferPool>,
    pub(super) send_pool: Arc<BufferPool>,
    pub(super) domain: Option<Arc<Domain>>,
    pub(super) channel: EventChannel,
}

// SAFETY: the raw objects are used through thread-safe verbs (post/poll are internally locked by the
// provider); teardown happens once, in drop, when no other thread holds the Endpoint.
unsafe impl Send for Endpoint {}
// SAFETY: as above.
unsafe impl Sync for Endpoint {}

impl Endpoint {
    /// Builds CQ, QP and buffers on `id` (whose device context is set) and posts every receive.
    pub(super) fn new(
        id: CmId,
        channel: EventChannel,
        domain: Arc<Domain>,
        recv_count: u32,
        send_count: u32,
    ) -> Result<Self, FabricError> {
        let ctx = domain.ctx();
        let recv_pool = BufferPool::new(SLOT_SIZE, recv_count as usize).map_err(|e| FabricError::Io {
            op: "allocating receive buffers",
            peer: String::new(),
            source: e,
        })?;
        let send_pool = BufferPool::new(SLOT_SIZE, send_count as usize).map_err(|e| FabricError::Io {
            op: "allocating send buffers",
            peer: String::new(),
            source: e,
        })?;
        let mut ep = Endpoint {
            id: id.into_raw(),
            comp: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            qp: std::ptr::null_mut(),
            recv_count,
            send_count,
            recv_mr: None,
            send_mr: None,
            recv_pool,
            send_pool,
            domain: Some(Arc::clone(&domain)),
            channel,
        };
        // SAFETY: both pools live in `ep` and are dropped after the MRs (field order).
        ep.recv_mr = Some(unsafe { domain.register(ep.recv_pool.base_ptr(), ep.recv_pool.total_len(), ACCESS_LOCAL) }?);
        // SAFETY: as above.
        ep.send_mr = Some(unsafe { domain.register(ep.send_pool.base_ptr(), ep.send_pool.total_len(), ACCESS_LOCAL) }?);

        // SAFETY: ctx is the live context of `id`; the result is checked.
        ep.comp = unsafe { ibv_create_comp_channel(ctx) };
        if ep.comp.is_null() {
            return Err(FabricError::verbs_errno("ibv_create_comp_channel"));
        }
        // SAFETY: comp is valid (checked above).
        set_nonblocking(unsafe { (*ep.comp).fd }, "fcntl(completion channel)")?;
        let sq_depth = send_count + CREDIT_MSGS_MAX + RDMA_OPS_MAX;
        let cqe = (recv_count + sq_depth) as i32;
        // SAFETY: ctx and comp are valid; no cq_context is used.
        ep.cq = unsafe { ibv_create_cq(ctx, cqe, std::ptr::null_mut(), ep.comp, 0) };
        if ep.cq.is_null() {
            return Err(FabricError::verbs_errno("ibv_create_cq"));
        }
        // SAFETY: ibv_qp_init_attr is plain old data; zero is a valid start.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = ep.cq;
        init.recv_cq = ep.cq;
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        init.cap = ibv_qp_cap {
            max_send_wr: sq_depth,
            max_recv_wr: recv_count,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        // SAFETY: id, PD and CQ are live; `init` is a valid attribute block.
        if unsafe { rdma_create_qp(ep.id, domain.pd(), &mut init) } != 0 {
            return Err(FabricError::verbs_errno("rdma_create_qp"));
        }
        // SAFETY: rdma_create_qp succeeded, so id->qp is set.
        ep.qp = unsafe { (*ep.id).qp };
        for i in 0..recv_count {
            ep.post_recv(i)?;
        }
        Ok(ep)
    }

    /// Posts receive buffer `index` again.
    pub(super) fn post_recv(&self, index: u32) -> Result<(), FabricError> {
        let lkey = self.recv_mr.as_ref().map(Mr::lkey).unwrap_or(0);
        let mut sge = ibv_sge {
            // SAFETY: index < recv_count, so the address lies inside the receive pool.
            addr: unsafe { self.recv_pool.base_ptr().add(index as usize * SLOT_SIZE) } as u64,
            length: SLOT_SIZE as u32,
            lkey,
        };
        let mut wr = ibv_recv_wr {
            wr_id: super::wire::wr_id(super::wire::TAG_RECV, u64::from(index)),
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: the QP is live; `wr` and `sge` are valid for the call (the provider copies them);
        // the buffer stays registered and mapped until the Endpoint drops, after the QP is destroyed.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(FabricError::verbs("ibv_post_recv", rc));
        }
        Ok(())
    }

    /// The receive buffer `index`, `len` bytes of it.
    pub(super) fn recv_buf(&self, index: u32, len: usize) -> &[u8] {
        debug_assert!(index < self.recv_count && len <= SLOT_SIZE);
        // SAFETY: the range lies in the receive pool; the buffer was just completed by the device and
        // is not reposted until the caller is done with this slice (single progress thread).
        unsafe { std::slice::from_raw_parts(self.recv_pool.base_ptr().add(index as usize * SLOT_SIZE), len) }
    }

    /// Pointer to send slot `index`.
    pub(super) fn send_slot(&self, index: u32) -> *mut u8 {
        debug_assert!(index < self.send_count);
        // SAFETY: index < send_count keeps the address inside the send pool.
        unsafe { self.send_pool.base_ptr().add(index as usize * SLOT_SIZE) }
    }

    pub(super) fn send_lkey(&self) -> u32 {
        self.send_mr.as_ref().map(Mr::lkey).unwrap_or(0)
    }

    pub(super) fn domain(&self) -> &Arc<Domain> {
        self.domain.as_ref().expect("domain is set until drop")
    }

    /// Moves the QP to the error state and starts the cm disconnect; idempotent enough (later
    /// calls fail harmlessly).
    pub(super) fn disconnect(&self) {
        // SAFETY: the id is live until drop.
        unsafe { rdma_disconnect(self.id) };
    }

    pub(super) fn comp_fd(&self) -> i32 {
        // SAFETY: comp is valid after construction.
        unsafe { (*self.comp).fd }
    }

    /// Posts one send work request.
    pub(super) fn post_send(&self, wr: &mut ibv_send_wr) -> Result<(), FabricError> {
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: the QP is live; the provider copies `wr` and its sge list during the call; the
        // buffers named by the sge are registered and owned by the caller until the completion.
        let rc = unsafe { ibv_post_send(self.qp, wr, &mut bad) };
        if rc != 0 {
            let e = if rc > 0 { rc } else { errno() };
            return Err(FabricError::verbs("ibv_post_send", e));
        }
        Ok(())
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SAFETY: each object is destroyed once, in dependency order: QP (via its cm id) before the
        // CQ, the CQ before its completion channel (every CQ event was acknowledged when taken),
        // memory regions before the PD (Domain), the PD before the id that lends its device
        // context, the id before its event channel.
        unsafe {
            if !self.qp.is_null() {
                rdma_destroy_qp(self.id);
            }
            if !self.cq.is_null() {
                ibv_destroy_cq(self.cq);
            }
            if !self.comp.is_null() {
                ibv_destroy_comp_channel(self.comp);
            }
        }
        self.recv_mr.take();
        self.send_mr.take();
        self.domain.take();
        // SAFETY: see above; the id is ours and all its events were acknowledged.
        unsafe { rdma_destroy_id(self.id) };
    }
}
