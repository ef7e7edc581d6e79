//! The write-ahead log: a ring of checksummed, sequence-numbered batches on the MDT.
//!
//! One batch holds every record of one event-loop turn and is written with one device write
//! linked to one flush (group commit). A batch starts on a block boundary with a 64-byte header
//! (magic, fs salt, sequence, block count, payload length and crc32c, header crc32c); its payload
//! follows in the same blocks. A batch never straddles the end of the ring: if it does not fit, it
//! goes to the start. Replay starts at the position and sequence a checkpoint recorded and stops
//! at the first place where neither the current position nor the ring start holds the next
//! sequence with valid checksums: a torn or never-written tail ends the log cleanly.

use crate::codec::{Dec, Enc};
use crate::dev::{AlignedBuf, BLOCK, BlockDevice};
use crate::format::{MdtError, get_u32, get_u64, put_u32, put_u64, seal, sealed_ok};
use crate::ns::WalEntry;

const WAL_MAGIC: &[u8; 8] = b"RMDTWAL\0";
const HDR: usize = 64;

/// The ring's write position and space accounting.
#[derive(Debug, Clone)]
pub struct Wal {
    off: u64,
    len: u64,
    salt: u64,
    /// Next write position, relative to the ring start.
    head: u64,
    /// Sequence of the next batch.
    next_seq: u64,
    /// Bytes consumed (batches and skipped ring ends) since the last checkpoint.
    used: u64,
}

/// Result of [`Wal::try_append`].
#[derive(Debug, PartialEq, Eq)]
pub enum Append {
    /// Written and durable.
    Done,
    /// Not enough room before the last checkpoint's position: checkpoint first.
    Full,
}

impl Wal {
    /// A ring at `[off, off + len)`, resuming at `head` with sequence `next_seq`.
    pub fn new(off: u64, len: u64, salt: u64, head: u64, next_seq: u64, used: u64) -> Wal {
        Wal {
            off,
            len,
            salt,
            head,
            next_seq,
            used,
        }
    }

    /// Position and sequence the next batch gets (what a checkpoint records).
    pub fn position(&self) -> (u64, u64) {
        (self.head, self.next_seq)
    }

    /// Bytes consumed since the last checkpoint, and the ring size.
    pub fn usage(&self) -> (u64, u64) {
        (self.used, self.len)
    }

    /// Forgets everything before the current position (a checkpoint now covers it).
    pub fn truncate(&mut self) {
        self.used = 0;
    }

    /// Encodes `entries` as one batch and writes it durably (one write + flush), or reports
    /// that the ring is full.
    pub fn try_append(&mut self, dev: &mut dyn BlockDevice, entries: &[WalEntry]) -> Result<Append, MdtError> {
        let mut e = Enc::new();
        e.buf.resize(HDR, 0);
        for ent in entries {
            ent.encode(&mut e);
        }
        let payload_len = e.buf.len() - HDR;
        let total = e.buf.len().div_ceil(BLOCK) * BLOCK;
        let need = total as u64;
        if need > self.len / 2 {
            return Err(MdtError::WalTooSmall {
                device: dev.name(),
                need,
                have: self.len / 2,
            });
        }
        let (pos, waste) = if self.head + need > self.len {
            (0, self.len - self.head)
        } else {
            (self.head, 0)
        };
        if self.used + waste + need > self.len {
            return Ok(Append::Full);
        }
        let mut buf = AlignedBuf::new(total);
        let b = buf.as_mut_slice();
        b[..e.buf.len()].copy_from_slice(&e.buf);
        b[..8].copy_from_slice(WAL_MAGIC);
        put_u64(b, 8, self.salt);
        put_u64(b, 16, self.next_seq);
        put_u32(b, 24, (total / BLOCK) as u32);
        put_u32(b, 28, payload_len as u32);
        put_u32(b, 32, rustre_proto::crc::crc32c(&e.buf[HDR..]));
        put_u32(b, 36, entries.len() as u32);
        seal(&mut b[..HDR]);
        dev.write_durable(self.off + pos, buf.as_slice())?;
        self.head = pos + need;
        if self.head == self.len {
            self.head = 0;
        }
        self.used += waste + need;
        self.next_seq += 1;
        Ok(Append::Done)
    }

    /// Reads the batch with sequence `seq` at `pos`, if one is there intact.
    fn read_batch(
        &self,
        dev: &mut dyn BlockDevice,
        pos: u64,
        seq: u64,
    ) -> Result<Option<(Vec<WalEntry>, u64)>, MdtError> {
        if pos + BLOCK as u64 > self.len {
            return Ok(None);
        }
        let mut first = AlignedBuf::new(BLOCK);
        dev.read(self.off + pos, first.as_mut_slice())?;
        let h = first.as_slice();
        if &h[..8] != WAL_MAGIC || !sealed_ok(&h[..HDR]) || get_u64(h, 8) != self.salt || get_u64(h, 16) != seq {
            return Ok(None);
        }
        let nblocks = get_u32(h, 24) as u64;
        let payload_len = get_u32(h, 28) as usize;
        let bytes = nblocks * BLOCK as u64;
        if nblocks == 0 || pos + bytes > self.len || (HDR + payload_len) as u64 > bytes {
            return Ok(None);
        }
        let mut all = AlignedBuf::new(bytes as usize);
        dev.read(self.off + pos, all.as_mut_slice())?;
        let payload = &all.as_slice()[HDR..HDR + payload_len];
        if rustre_proto::crc::crc32c(payload) != get_u32(h, 32) {
            return Ok(None);
        }
        let n = get_u32(h, 36);
        let mut d = Dec::new(payload, "WAL batch");
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            match WalEntry::decode(&mut d) {
                Ok(e) => out.push(e),
                // Checksummed yet undecodable: written by a different build, not torn.
                Err(err) => {
                    return Err(MdtError::Corrupt {
                        device: dev.name(),
                        reason: format!("WAL batch {seq}: {err}"),
                    });
                }
            }
        }
        Ok(Some((out, bytes)))
    }

    /// Replays the ring from the current position: calls `apply` on every entry of every intact
    /// batch in sequence order and leaves the position after the last one.
    pub fn replay(
        &mut self,
        dev: &mut dyn BlockDevice,
        mut apply: impl FnMut(WalEntry) -> Result<(), String>,
    ) -> Result<u64, MdtError> {
        let mut batches = 0;
        loop {
            let seq = self.next_seq;
            let (pos, waste, found) = match self.read_batch(dev, self.head, seq)? {
                Some(f) => (self.head, 0, f),
                None if self.head != 0 => match self.read_batch(dev, 0, seq)? {
                    Some(f) => (0, self.len - self.head, f),
                    None => break,
                },
                None => break,
            };
            let (entries, bytes) = found;
            if self.used + waste + bytes > self.len {
                // More log than the ring holds since the checkpoint: stale blocks, not ours.
                break;
            }
            for e in entries {
                apply(e).map_err(|reason| MdtError::Corrupt {
                    device: dev.name(),
                    reason: format!("replaying batch {seq}: {reason}"),
                })?;
            }
            self.head = pos + bytes;
            if self.head == self.len {
                self.head = 0;
            }
            self.used += waste + bytes;
            self.next_seq += 1;
            batches += 1;
        }
        Ok(batches)
    }
}
