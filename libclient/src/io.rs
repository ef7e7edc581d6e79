//! Striped parallel I/O: a read or write is cut by the striping engine into per-object pieces of
//! at most one RPC's bulk, and the pieces run concurrently on the client's I/O threads (module
//! `pool`), at most `max_inflight_per_ost` per OST (a client-wide bound kept by the OST's permits).
//!
//! Each piece is one contiguous slice of the caller's buffer lent to the server for one RPC
//! (zero-copy on verbs), with the crc32c of the payload in its bulk descriptor; read replies
//! carry the crc of what the server pushed, checked here before the bytes count as read.
//!
//! With write-behind on (module `behind`), a write of at most one RPC is copied and sent by an
//! I/O thread after `pwrite` has returned (one piece, or two across a stripe boundary, in turn).

use crate::behind::{Queued, WriteBehind};
use crate::client::{Client, Fd, OpenFile};
use crate::error::{ClientError, Result};
use crate::layout::FileLayout;
use crate::pool::WorkerPool;
use crate::rpc::{BulkBuf, Endpoint};
use crate::striping::StripeGeometry;
use parking_lot::Mutex;
use prost::Message;
use rustre_proto::request::ost::MAX_INLINE_READ;
use rustre_proto::{Errno, Opcode, pb};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One RPC's worth of a request: contiguous in the object and in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Stripe index (object of the layout).
    pub(crate) stripe: u32,
    pub(crate) object_offset: u64,
    pub(crate) buf_offset: usize,
    pub(crate) len: usize,
}

/// Cuts `offset .. offset + len` into pieces of at most `max_rpc` bytes, merging neighbours that
/// are contiguous in both the object and the buffer (a stripe count of 1).
pub(crate) fn plan(g: &StripeGeometry, offset: u64, len: usize, max_rpc: u64) -> Result<Vec<Piece>> {
    let max = usize::try_from(max_rpc).unwrap_or(usize::MAX).max(1);
    let mut out: Vec<Piece> = Vec::new();
    for ext in g.extents(offset, len as u64)? {
        // `ext.buf_offset + ext.len <= len`, a usize.
        let (mut oo, mut bo, mut left) = (ext.object_offset, ext.buf_offset as usize, ext.len as usize);
        while left > 0 {
            if let Some(last) = out.last_mut()
                && last.stripe == ext.object
                && last.object_offset + last.len as u64 == oo
                && last.buf_offset + last.len == bo
                && last.len < max
            {
                let take = left.min(max - last.len);
                last.len += take;
                (oo, bo, left) = (oo + take as u64, bo + take, left - take);
                continue;
            }
            let take = left.min(max);
            out.push(Piece {
                stripe: ext.object,
                object_offset: oo,
                buf_offset: bo,
                len: take,
            });
            (oo, bo, left) = (oo + take as u64, bo + take, left - take);
        }
    }
    Ok(out)
}

/// Runs `job` on every (piece, slice) pair on `pool`'s threads and the calling thread: the
/// pieces are taken in stripe-interleaved order (so every object gets its first RPC at once), by
/// at most `per_ost` threads per object touched and `max_threads` in all; the OSTs' permits keep
/// the client-wide bound per OST. The first error is returned (the remaining pieces are skipped).
pub(crate) fn fan_out<S: Send>(
    pool: &WorkerPool,
    jobs: Vec<(Piece, S)>,
    per_ost: u32,
    max_threads: usize,
    job: &(dyn Fn(Piece, S) -> Result<()> + Sync),
) -> Result<()> {
    let mut jobs = jobs;
    if jobs.len() == 1
        && let Some((p, s)) = jobs.pop()
    {
        return job(p, s);
    }
    let total = jobs.len();
    let mut by_stripe: Vec<(u32, std::collections::VecDeque<(Piece, S)>)> = Vec::new();
    for (p, s) in jobs {
        match by_stripe.iter_mut().find(|(k, _)| *k == p.stripe) {
            Some((_, v)) => v.push_back((p, s)),
            None => by_stripe.push((p.stripe, std::collections::VecDeque::from([(p, s)]))),
        }
    }
    let stripes = by_stripe.len();
    let mut order: Vec<(Piece, S)> = Vec::with_capacity(total);
    while order.len() < total {
        for (_, q) in &mut by_stripe {
            if let Some(j) = q.pop_front() {
                order.push(j);
            }
        }
    }
    let threads = total
        .min(stripes.saturating_mul(per_ost.max(1) as usize))
        .min(max_threads.max(1));
    let queue = Mutex::new(order.into_iter());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ClientError>> = Mutex::new(None);
    let work = || {
        while !failed.load(Ordering::Relaxed) {
            let Some((p, s)) = queue.lock().next() else { break };
            if let Err(e) = job(p, s) {
                failed.store(true, Ordering::Relaxed);
                first_error.lock().get_or_insert(e);
            }
        }
    };
    pool.run(threads - 1, &work);
    match first_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(crate) fn bulk_desc(d: rustre_fabric::BulkDesc, crc: u32) -> pb::BulkDescriptor {
    pb::BulkDescriptor {
        addr: d.addr,
        rkey: d.rkey,
        len: d.len,
        crc32c: crc,
    }
}

impl Client {
    pub(crate) fn io_threads(&self) -> usize {
        self.config.limits.max_io_threads as usize
    }

    fn layout_of<'f>(&self, file: &'f OpenFile) -> Result<&'f FileLayout> {
        file.layout
            .as_ref()
            .ok_or_else(|| ClientError::other(Errno::ENODATA, format!("{}: the file has no layout yet", file.path)))
    }

    /// Writes `buf` at `offset` of `fd` (at the end of file for an `append` handle); returns the
    /// bytes written (all of them, or an error).
    pub fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> Result<usize> {
        let file = self.file(fd)?;
        if !file.flags.write {
            return Err(ClientError::other(
                Errno::EBADF,
                format!("{}: not open for writing", file.path),
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        file.behind_result(false)?;
        let layout = self.layout_of(&file)?;
        if !file.flags.append && buf.len() as u64 <= self.behind.max_write(self.max_rpc) {
            return self.write_behind(&file, layout, buf, offset);
        }
        // Appends of this client take turns from the size glimpse to the last acknowledgement,
        // so they never overlap one another (other clients' appends still can, see OpenFlags).
        let _append_turn = file.flags.append.then(|| self.append_lock.lock());
        let offset = if file.flags.append {
            self.behind.drain(Some(file.fid));
            self.file_size(&file)?
        } else {
            offset
        };
        let end = range_end(offset, buf.len())?;
        self.behind.wait_clear(file.fid, offset, end);
        let _change = self.ahead.changes.changing(file.fid);
        let pieces = plan(&layout.geometry, offset, buf.len(), self.max_rpc)?;
        let jobs: Vec<(Piece, &[u8])> = pieces
            .iter()
            .map(|p| (*p, &buf[p.buf_offset..p.buf_offset + p.len]))
            .collect();
        let file_ref = &*file;
        fan_out(
            &self.pool,
            jobs,
            self.config.limits.max_inflight_per_ost,
            self.io_threads(),
            &|p, slice| self.write_piece(file_ref, layout, p, slice),
        )?;
        self.note_write(&file, end);
        Ok(buf.len())
    }

    fn write_piece(&self, file: &OpenFile, layout: &FileLayout, p: Piece, slice: &[u8]) -> Result<()> {
        let ep = self.ost(layout.objects[p.stripe as usize].ost)?;
        write_piece_to(ep, file, layout, p, slice)
    }

    /// Write-behind (module `behind`): once no pending write overlaps it and the limit has
    /// room, copies `buf` piece by piece into the send queue, starts a sender if fewer than the
    /// most run, and returns. A failure is recorded on the handle.
    fn write_behind(&self, file: &Arc<OpenFile>, layout: &FileLayout, buf: &[u8], offset: u64) -> Result<usize> {
        let end = range_end(offset, buf.len())?;
        let pieces = plan(&layout.geometry, offset, buf.len(), self.max_rpc)?;
        let eps = pieces
            .iter()
            .map(|p| Ok(Arc::clone(self.ost(layout.objects[p.stripe as usize].ost)?)))
            .collect::<Result<Vec<Arc<Endpoint>>>>()?;
        let id = self.behind.admit(file.fid, offset, end);
        // Its end is counted when the ticket drops.
        self.ahead.changes.bump(file.fid);
        let ticket = Arc::new(self.behind.ticket(id, offset, buf.len()));
        let items = pieces
            .iter()
            .zip(eps)
            .map(|(p, ep)| Queued {
                file: Arc::clone(file),
                ep,
                stripe: p.stripe,
                object_offset: p.object_offset,
                data: buf[p.buf_offset..p.buf_offset + p.len].to_vec(),
                write: Arc::clone(&ticket),
            })
            .collect();
        drop(ticket);
        self.note_write(file, end);
        if self.behind.enqueue(items) {
            let (behind, budget) = (Arc::clone(&self.behind), self.max_rpc);
            let sender: crate::pool::Job = Box::new(move || run_sender(&behind, budget));
            if let Err(sender) = self.pool.submit(sender) {
                // No thread free and the queue full: the caller sends them itself.
                sender();
            }
        }
        Ok(buf.len())
    }

    /// Reads into `buf` from `offset` of `fd`; returns the bytes read (short only at end of
    /// file). Holes read as zeros.
    pub fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize> {
        let file = self.file(fd)?;
        if !file.flags.read {
            return Err(ClientError::other(
                Errno::EBADF,
                format!("{}: not open for reading", file.path),
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.behind.drain(Some(file.fid));
        let Some(layout) = file.layout.as_ref() else {
            return Ok(0);
        };
        let len = buf.len();
        let end = range_end(offset, len)?;
        if self.ahead.on()
            && len as u64 <= self.max_rpc / 4
            && let Some(n) = self.read_ahead(&file, layout, buf, offset)?
        {
            return Ok(n);
        }
        let pieces = plan(&layout.geometry, offset, len, self.max_rpc)?;
        // Split the buffer into the pieces' disjoint slices (the pieces tile it in order).
        let mut jobs: Vec<(Piece, &mut [u8])> = Vec::with_capacity(pieces.len());
        let mut rest: &mut [u8] = buf;
        for p in &pieces {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(p.len);
            jobs.push((*p, head));
            rest = tail;
        }
        let seen = Mutex::new(0u64);
        let file_ref = &*file;
        fan_out(
            &self.pool,
            jobs,
            self.config.limits.max_inflight_per_ost,
            self.io_threads(),
            &|p, slice| {
                let size = self.read_piece(file_ref, layout, p, slice)?;
                let mut s = seen.lock();
                *s = (*s).max(size);
                Ok(())
            },
        )?;
        let known = seen
            .into_inner()
            .max(file.size_seen.load(std::sync::atomic::Ordering::Relaxed));
        let size = if known >= end { known } else { self.file_size(&file)? };
        Ok(usize::try_from(size.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(len))
    }

    /// Reads one piece; returns the file size the object's reported size implies.
    fn read_piece(&self, file: &OpenFile, layout: &FileLayout, p: Piece, slice: &mut [u8]) -> Result<u64> {
        let (got, object_size) = self.read_object(file, layout, p.stripe, &[(p.object_offset, p.len)], slice)?;
        // Past the object's end: a hole or the end of the file; either way zeros.
        slice[got..].fill(0);
        Ok(layout
            .geometry
            .file_size_from_object(p.stripe, object_size)
            .unwrap_or(0))
    }

    /// One OST read of `ranges` (ascending, not overlapping; several: a multi-range read) of
    /// stripe `stripe`'s object into `buf`, their bytes back to back (short reads only at the
    /// end of the object, the ranges filling in order). Returns the bytes that came, checked
    /// against the reply's crc32c, and the object's size.
    pub(crate) fn read_object(
        &self,
        file: &OpenFile,
        layout: &FileLayout,
        stripe: u32,
        ranges: &[(u64, usize)],
        buf: &mut [u8],
    ) -> Result<(usize, u64)> {
        let obj = layout.objects[stripe as usize];
        let cap = file.cap(stripe as usize);
        let ep = self.ost(obj.ost)?;
        let inline = buf.len() as u64 <= MAX_INLINE_READ && !ep.bulk_by_rdma();
        let (first, more) = ranges
            .split_first()
            .ok_or_else(|| ClientError::other(Errno::EINVAL, format!("{}: a read of no range", file.path)))?;
        let request = |bulk: Option<pb::BulkDescriptor>| pb::OstReadRequest {
            object: Some(obj.to_pb()),
            offset: first.0,
            length: first.1 as u64,
            bulk,
            cap: cap.clone(),
            reply_inline: bulk.is_none(),
            more: more
                .iter()
                .map(|&(offset, len)| pb::ByteRange {
                    offset,
                    length: len as u64,
                })
                .collect(),
        };
        let rep: pb::OstReadReply = if inline {
            // A short read: the bytes come back in the reply, no push (and its round trip).
            ep.call_counted(Opcode::OstRead, &request(None))?
        } else {
            ep.call_bulk(Opcode::OstRead, &mut BulkBuf::Sink(buf), &|d| {
                request(Some(bulk_desc(d, 0))).encode_to_vec()
            })?
        };
        let got = usize::try_from(rep.bytes_read)
            .ok()
            .filter(|&n| n <= buf.len() && (!inline || rep.data.len() == n))
            .ok_or_else(|| {
                ClientError::other(
                    Errno::EPROTO,
                    format!(
                        "OST{} read reply: {} bytes read ({} carried) for {} asked",
                        obj.ost,
                        rep.bytes_read,
                        rep.data.len(),
                        buf.len()
                    ),
                )
            })?;
        if inline {
            buf[..got].copy_from_slice(&rep.data);
        }
        let actual = rustre_proto::crc::crc32c(&buf[..got]);
        if actual != rep.crc32c {
            return Err(ClientError::Checksum {
                ost: obj.ost,
                object: obj.id,
                expected: rep.crc32c,
                actual,
            });
        }
        Ok((got, rep.size))
    }

    /// The file size as the objects hold it now (every object's getattr), and at least the size
    /// the MDS reported at open or truncate.
    pub(crate) fn file_size(&self, file: &OpenFile) -> Result<u64> {
        let glimpse = if file.layout.is_some() { self.glimpse(file)? } else { 0 };
        let size = glimpse.max(file.size_hint.load(Ordering::Relaxed));
        Ok(size)
    }

    /// The largest file size the objects' sizes imply (one getattr per object, in parallel).
    pub(crate) fn glimpse(&self, file: &OpenFile) -> Result<u64> {
        let Some(layout) = file.layout.as_ref() else {
            return Ok(0);
        };
        self.glimpse_layout(layout, &file.caps)
    }

    /// [`Client::glimpse`] for a layout, with the capabilities of its objects in stripe order
    /// (empty: none, for a cluster whose OSTs check none).
    pub(crate) fn glimpse_layout(&self, layout: &FileLayout, caps: &[pb::Capability]) -> Result<u64> {
        let size = Mutex::new(0u64);
        let jobs = per_object_jobs(layout.geometry.stripe_count());
        fan_out(&self.pool, jobs, 1, self.io_threads(), &|p, ()| {
            let obj = layout.objects[p.stripe as usize];
            let rep: pb::OstGetattrReply = self.ost(obj.ost)?.call(
                Opcode::OstGetattr,
                &pb::OstGetattrRequest {
                    object: Some(obj.to_pb()),
                    cap: caps.get(p.stripe as usize).cloned(),
                },
            )?;
            let s = layout.geometry.file_size_from_object(p.stripe, rep.size)?;
            let mut m = size.lock();
            *m = (*m).max(s);
            Ok(())
        })?;
        Ok(size.into_inner())
    }

    /// Cuts every object to its share of a file of `size` bytes (OST punch to end of object).
    pub(crate) fn punch_objects(&self, file: &OpenFile, size: u64) -> Result<()> {
        let Some(layout) = file.layout.as_ref() else {
            return Ok(());
        };
        let jobs = per_object_jobs(layout.geometry.stripe_count());
        fan_out(&self.pool, jobs, 1, self.io_threads(), &|p, ()| {
            let obj = layout.objects[p.stripe as usize];
            let offset = layout.geometry.object_size_for_file_size(p.stripe, size)?;
            let _: pb::OstPunchReply = self.ost(obj.ost)?.call(
                Opcode::OstPunch,
                &pb::OstPunchRequest {
                    object: Some(obj.to_pb()),
                    offset,
                    length: u64::MAX,
                    cap: file.cap(p.stripe as usize),
                },
            )?;
            Ok(())
        })
    }

    /// Makes every write that returned so far on `fd`'s objects durable (pending write-behind
    /// writes of the file are waited for first; a failure of one is reported here, once).
    pub fn fsync(&self, fd: Fd) -> Result<()> {
        let file = self.file(fd)?;
        self.behind.drain(Some(file.fid));
        file.ahead.lock().clear();
        file.behind_result(true)?;
        let Some(layout) = file.layout.as_ref() else {
            return Ok(());
        };
        let jobs = per_object_jobs(layout.geometry.stripe_count());
        fan_out(&self.pool, jobs, 1, self.io_threads(), &|p, ()| {
            let obj = layout.objects[p.stripe as usize];
            let _: pb::OstSyncReply = self.ost(obj.ost)?.call(
                Opcode::OstSync,
                &pb::OstSyncRequest {
                    ost_index: obj.ost,
                    object: Some(obj.to_pb()),
                },
            )?;
            Ok(())
        })
    }
}

/// The end of `len` bytes at `offset`, or the error naming the overflow.
fn range_end(offset: u64, len: usize) -> Result<u64> {
    offset
        .checked_add(len as u64)
        .ok_or(ClientError::Striping(crate::striping::StripingError::RangeOverflow {
            offset,
            len: len as u64,
        }))
}

/// A write-behind sender: sends batches from the queue until it is empty (module `behind`).
/// A failed batch records its error on the handle of every write it carried.
fn run_sender(behind: &WriteBehind, budget: u64) {
    while let Some(batch) = behind.next_batch(budget) {
        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| send_batch(&batch)));
        let failure = match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some((Errno::try_from(e.errno()).unwrap_or(Errno::EIO), e.to_string())),
            Err(_) => Some((Errno::EIO, "the I/O thread panicked".to_string())),
        };
        if let Some((errno, why)) = failure {
            for q in &batch {
                let message = format!(
                    "{}: a write of {} bytes at offset {} (already returned to the caller) failed: {why}",
                    q.file.path, q.write.len, q.write.offset
                );
                q.file.behind_error.lock().get_or_insert((errno, message));
            }
        }
        // Dropping the batch ends the writes whose last piece it held.
    }
}

/// Writes a batch of queued pieces of one object: one piece as a plain write, several as one
/// multi-range write (their bytes back to back in one bulk; touching pieces as one range).
fn send_batch(batch: &[Queued]) -> Result<()> {
    let Some(first) = batch.first() else { return Ok(()) };
    let file = &first.file;
    let layout = file
        .layout
        .as_ref()
        .ok_or_else(|| ClientError::other(Errno::ENODATA, format!("{}: the file has no layout yet", file.path)))?;
    if let [only] = batch {
        let piece = Piece {
            stripe: only.stripe,
            object_offset: only.object_offset,
            buf_offset: 0,
            len: only.data.len(),
        };
        return write_piece_to(&only.ep, file, layout, piece, &only.data);
    }
    let mut payload = Vec::with_capacity(batch.iter().map(|q| q.data.len()).sum());
    for q in batch {
        payload.extend_from_slice(&q.data);
    }
    let crc = rustre_proto::crc::crc32c(&payload);
    let obj = layout.objects[first.stripe as usize];
    let cap = file.cap(first.stripe as usize);
    // Touching pieces become one range: their bytes already lie back to back in the payload.
    let mut ranges: Vec<pb::ByteRange> = Vec::with_capacity(batch.len());
    for q in batch {
        match ranges.last_mut() {
            Some(r) if r.offset + r.length == q.object_offset => r.length += q.data.len() as u64,
            _ => ranges.push(pb::ByteRange {
                offset: q.object_offset,
                length: q.data.len() as u64,
            }),
        }
    }
    let (head, more) = ranges.split_at(1);
    let rep: pb::OstWriteReply = first
        .ep
        .call_bulk(Opcode::OstWrite, &mut BulkBuf::Source(&payload), &|d| {
            pb::OstWriteRequest {
                object: Some(obj.to_pb()),
                offset: head[0].offset,
                length: head[0].length,
                bulk: Some(bulk_desc(d, crc)),
                cap: cap.clone(),
                more: more.to_vec(),
            }
            .encode_to_vec()
        })?;
    if let Ok(s) = layout.geometry.file_size_from_object(first.stripe, rep.size) {
        file.saw_size(s);
    }
    Ok(())
}

/// Writes one piece on the OST endpoint `ep` of its object.
fn write_piece_to(ep: &Endpoint, file: &OpenFile, layout: &FileLayout, p: Piece, slice: &[u8]) -> Result<()> {
    let obj = layout.objects[p.stripe as usize];
    let crc = rustre_proto::crc::crc32c(slice);
    let cap = file.cap(p.stripe as usize);
    let rep: pb::OstWriteReply = ep.call_bulk(Opcode::OstWrite, &mut BulkBuf::Source(slice), &|d| {
        pb::OstWriteRequest {
            object: Some(obj.to_pb()),
            offset: p.object_offset,
            length: p.len as u64,
            bulk: Some(bulk_desc(d, crc)),
            cap: cap.clone(),
            more: Vec::new(),
        }
        .encode_to_vec()
    })?;
    if let Ok(s) = layout.geometry.file_size_from_object(p.stripe, rep.size) {
        file.saw_size(s);
    }
    Ok(())
}

/// One whole-object job per stripe, for the calls that touch every object of a file once
/// (glimpse, punch, sync).
fn per_object_jobs(stripe_count: u32) -> Vec<(Piece, ())> {
    (0..stripe_count)
        .map(|stripe| {
            let piece = Piece {
                stripe,
                object_offset: 0,
                buf_offset: 0,
                len: 0,
            };
            (piece, ())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_tiles_the_buffer_within_the_rpc_limit() {
        for (size, count, max) in [
            (65536u64, 1u32, 262144u64),
            (65536, 4, 262144),
            (1 << 20, 3, 65536),
            (131072, 2, 200704),
        ] {
            let g = StripeGeometry::new(size, count).unwrap();
            for (offset, len) in [(0u64, 1usize), (12345, 3_000_000), (65535, 2), (7 << 20, 1 << 20)] {
                let pieces = plan(&g, offset, len, max).unwrap();
                let mut at = 0;
                for p in &pieces {
                    assert_eq!(p.buf_offset, at);
                    assert!(p.len > 0 && p.len as u64 <= max);
                    // Every byte of the piece is where the striping engine puts it.
                    for probe in [0, p.len - 1] {
                        let (o, oo) = g.locate(offset + (p.buf_offset + probe) as u64);
                        assert_eq!((o, oo), (p.stripe, p.object_offset + probe as u64));
                    }
                    at += p.len;
                }
                assert_eq!(at, len);
            }
        }
        // A single stripe merges into RPC-sized pieces.
        let g = StripeGeometry::new(65536, 1).unwrap();
        let pieces = plan(&g, 0, 1 << 20, 4 << 20).unwrap();
        assert_eq!(pieces.len(), 1);
    }

    #[test]
    fn fan_out_runs_everything_and_reports_errors() {
        let pieces: Vec<(Piece, usize)> = (0..40)
            .map(|i| {
                (
                    Piece {
                        stripe: i % 4,
                        object_offset: 0,
                        buf_offset: 0,
                        len: 1,
                    },
                    i as usize,
                )
            })
            .collect();
        let pool = WorkerPool::new(8);
        let sum = Mutex::new(0usize);
        fan_out(&pool, pieces.clone(), 3, 64, &|_, i| {
            *sum.lock() += i;
            Ok(())
        })
        .unwrap();
        assert_eq!(sum.into_inner(), (0..40).sum::<usize>());
        let e = fan_out(&pool, pieces.clone(), 2, 64, &|_, i| {
            if i == 17 {
                Err(ClientError::BadHandle(17))
            } else {
                Ok(())
            }
        });
        assert_eq!(e.unwrap_err().errno(), 9);
        // Fewer threads than objects: everything still runs.
        let sum = Mutex::new(0usize);
        fan_out(&pool, pieces, 8, 3, &|_, i| {
            *sum.lock() += i;
            Ok(())
        })
        .unwrap();
        assert_eq!(sum.into_inner(), (0..40).sum::<usize>());
    }
}
