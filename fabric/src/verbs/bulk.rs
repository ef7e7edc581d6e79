//! Server-driven bulk on one connection: RDMA READ (`pull`) and WRITE (`push`), zero-copy into
//! registered pools or through bounce buffers, checked against what the client exposed for a
//! request still in progress; and the client's per-call registration (`expose`).

use super::conn::{Conn, Role};
use super::endpoint::RDMA_OPS_MAX;
use super::ffi::Mr;
use super::progress::FLUSH_WAIT;
use super::wire::*;
use crate::{BulkDesc, FabricError};
use crossbeam::channel::{RecvTimeoutError, bounded};
use rdma_sys::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Largest RDMA READ/WRITE posted as one work request.
const RDMA_CHUNK: usize = 4 << 20;

impl Conn {
    /// Ends the exposure that came with request `xid` (the reply is about to go out, after which
    /// the client revokes the key).
    pub(super) fn revoke(&self, xid: u64) {
        if let Role::Server { exposures, .. } = &self.role {
            exposures.lock().remove(&xid);
        }
    }

    /// Refuses a pull/push the client did not expose for a request still in progress.
    fn check_exposed(&self, desc: &BulkDesc, offset: u64, len: usize, write: bool) -> Result<(), FabricError> {
        let Role::Server { exposures, .. } = &self.role else {
            return Err(FabricError::BulkRefused("bulk transfers are issued by servers".into()));
        };
        let start = desc.addr.saturating_add(offset);
        let exposures = exposures.lock();
        let mut same_key = exposures
            .values()
            .filter(|e| e.rkey == desc.rkey && e.covers(start, len as u64));
        match same_key.next() {
            Some(e) if e.writable == write => Ok(()),
            Some(_) if write => Err(FabricError::BulkRefused(format!(
                "{}: push into memory exposed for reading only (rkey {:#x})",
                self.peer, desc.rkey
            ))),
            Some(_) => Err(FabricError::BulkRefused(format!(
                "{}: pull from memory exposed for writing only (rkey {:#x})",
                self.peer, desc.rkey
            ))),
            None => Err(FabricError::BulkRefused(format!(
                "{}: rkey {:#x} exposes no {len} bytes at {start:#x} for a request in progress",
                self.peer, desc.rkey
            ))),
        }
    }

    /// Copies between `local` (registered under `lkey`) and the peer's `remote_addr`/`rkey`.
    pub(super) fn rdma(
        &self,
        write: bool,
        local: *mut u8,
        len: usize,
        lkey: u32,
        remote_addr: u64,
        rkey: u32,
    ) -> Result<(), FabricError> {
        {
            let mut tx = self.tx.lock();
            loop {
                if self.is_closed() {
                    return Err(self.closed_err());
                }
                if tx.rdma_inflight < RDMA_OPS_MAX {
                    tx.rdma_inflight += 1;
                    break;
                }
                self.blocking(|| self.tx_cv.wait(&mut tx));
            }
        }
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done_rx) = bounded(1);
        self.ops.lock().insert(op, done_tx);
        let mut sge = ibv_sge {
            addr: local as u64,
            length: len as u32,
            lkey,
        };
        let mut wr = send_wr(wr_id(TAG_RDMA, op), &mut sge, 1);
        wr.opcode = if write {
            ibv_wr_opcode::IBV_WR_RDMA_WRITE
        } else {
            ibv_wr_opcode::IBV_WR_RDMA_READ
        };
        wr.wr.rdma = rdma_t { remote_addr, rkey };
        if let Err(e) = self.ep.post_send(&mut wr) {
            self.ops.lock().remove(&op);
            self.tx.lock().rdma_inflight -= 1;
            self.fail(e.to_string());
            return Err(e);
        }
        let verb = if write { "RDMA WRITE" } else { "RDMA READ" };
        if let (Some(r), _) = self.spin(self.rtt_budget(), true, || done_rx.try_recv().ok()) {
            return r;
        }
        match self.blocking(|| done_rx.recv_timeout(self.op_timeout)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                // The buffer is the device's until the work request completes: break the QP (which
                // flushes it) and wait for that completion before handing the memory back.
                self.fail(format!("{verb} timed out"));
                let _ = self.blocking(|| done_rx.recv_timeout(FLUSH_WAIT * 2));
                Err(FabricError::Timeout {
                    peer: self.peer.clone(),
                    after_ms: self.op_timeout.as_millis() as u64,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.closed_err()),
        }
    }

    fn check_range(desc: &BulkDesc, offset: u64, len: usize, what: &str) -> Result<(), FabricError> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > desc.len) {
            return Err(FabricError::BulkRefused(format!(
                "{what} of {len} bytes at offset {offset} outside the {} exposed bytes",
                desc.len
            )));
        }
        if len > 0 && desc.addr.checked_add(offset + len as u64).is_none() {
            return Err(FabricError::BulkRefused(format!(
                "{what}: descriptor address overflows"
            )));
        }
        Ok(())
    }

    /// RDMA READ of `dst.len()` bytes from `desc` at `offset`.
    pub(super) fn pull(&self, desc: &BulkDesc, offset: u64, dst: &mut [u8]) -> Result<(), FabricError> {
        Self::check_range(desc, offset, dst.len(), "pull")?;
        if dst.is_empty() {
            return Ok(());
        }
        self.check_exposed(desc, offset, dst.len(), false)?;
        let domain = Arc::clone(self.ep.domain());
        if let Some(lkey) = domain.lkey_for(dst.as_ptr(), dst.len()) {
            let mut done = 0;
            while done < dst.len() {
                let n = RDMA_CHUNK.min(dst.len() - done);
                // SAFETY: done + n ≤ dst.len(); `dst` is borrowed mutably for the whole transfer and
                // `rdma` returns only after the work request completed or was flushed.
                let p = unsafe { dst.as_mut_ptr().add(done) };
                self.rdma(false, p, n, lkey, desc.addr + offset + done as u64, desc.rkey)?;
                done += n;
            }
            return Ok(());
        }
        let (pool, mr) = domain.bounce()?;
        let mut done = 0;
        while done < dst.len() {
            let mut b = self.bounce_buf(&pool)?;
            let n = b.len().min(dst.len() - done);
            self.rdma(
                false,
                b.as_mut_ptr(),
                n,
                mr.lkey(),
                desc.addr + offset + done as u64,
                desc.rkey,
            )?;
            dst[done..done + n].copy_from_slice(&b[..n]);
            done += n;
        }
        Ok(())
    }

    /// RDMA WRITE of `src` into `desc` at `offset`.
    pub(super) fn push(&self, desc: &BulkDesc, offset: u64, src: &[u8]) -> Result<(), FabricError> {
        Self::check_range(desc, offset, src.len(), "push")?;
        if src.is_empty() {
            return Ok(());
        }
        self.check_exposed(desc, offset, src.len(), true)?;
        let domain = Arc::clone(self.ep.domain());
        if let Some(lkey) = domain.lkey_for(src.as_ptr(), src.len()) {
            let mut done = 0;
            while done < src.len() {
                let n = RDMA_CHUNK.min(src.len() - done);
                // SAFETY: in bounds as above; the device only reads this memory, and `src` stays
                // borrowed until `rdma` returns after the completion.
                let p = unsafe { src.as_ptr().add(done) }.cast_mut();
                self.rdma(true, p, n, lkey, desc.addr + offset + done as u64, desc.rkey)?;
                done += n;
            }
            return Ok(());
        }
        let (pool, mr) = domain.bounce()?;
        let mut done = 0;
        while done < src.len() {
            let mut b = self.bounce_buf(&pool)?;
            let n = b.len().min(src.len() - done);
            b[..n].copy_from_slice(&src[done..done + n]);
            self.rdma(
                true,
                b.as_mut_ptr(),
                n,
                mr.lkey(),
                desc.addr + offset + done as u64,
                desc.rkey,
            )?;
            done += n;
        }
        Ok(())
    }

    fn bounce_buf(&self, pool: &Arc<crate::BufferPool>) -> Result<crate::PoolBuf, FabricError> {
        pool.get_timeout(self.op_timeout).ok_or_else(|| FabricError::Timeout {
            peer: self.peer.clone(),
            after_ms: self.op_timeout.as_millis() as u64,
        })
    }

    /// Registers client memory for one bulk call; `None` for an empty buffer.
    pub(super) fn expose(&self, ptr: *mut u8, len: usize, access: u32) -> Result<Option<Mr>, FabricError> {
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: the caller (`call_bulk`) keeps the borrowed buffer alive until the Mr is dropped,
        // which happens before it returns.
        Ok(Some(unsafe { self.ep.domain().register(ptr, len, access) }?))
    }
}
