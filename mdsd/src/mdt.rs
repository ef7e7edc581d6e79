//! The MDT: superblock, checkpoints and WAL together — mkfs, recovery, group commit.

use crate::checkpoint::{self, CheckpointHeader};
use crate::dev::{AlignedBuf, BLOCK, BlockDevice};
use crate::format::{
    MIN_DEVICE, MMP_SEQ_CLEAN, MdtError, Mmp, Superblock, check_fsname, existing_contents, read_superblock, write_mmp,
    write_superblock,
};
use crate::ns::WalEntry;
use crate::wal::{Append, Wal};

/// An open MDT.
pub struct Mdt<D: BlockDevice> {
    /// The device.
    pub dev: D,
    /// Its superblock.
    pub sb: Superblock,
    wal: Wal,
    generation: u64,
}

/// What recovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Generation of the checkpoint loaded.
    pub checkpoint_generation: u64,
    /// WAL batches replayed after it.
    pub batches: u64,
    /// WAL entries replayed.
    pub entries: u64,
}

/// Formats `dev` as an MDT of `fsname`. Refuses a device that holds anything (another MDT, an
/// OST, a file system, any non-zero first block) unless `force`. `initial_body` is the first
/// checkpoint's body (the empty namespace).
pub fn mkfs(dev: &mut dyn BlockDevice, fsname: &str, force: bool, initial_body: &[u8]) -> Result<Superblock, MdtError> {
    check_fsname(fsname).map_err(|reason| MdtError::Format {
        device: dev.name(),
        reason,
    })?;
    if dev.size() < MIN_DEVICE {
        return Err(MdtError::Format {
            device: dev.name(),
            reason: format!("{} bytes is too small (at least {MIN_DEVICE})", dev.size()),
        });
    }
    if let Some(what) = existing_contents(dev)?
        && !force
    {
        return Err(MdtError::Format {
            device: dev.name(),
            reason: format!("holds {what}; refusing to format it"),
        });
    }
    let mut uuid = [0u8; 16];
    rand::fill(&mut uuid);
    let sb = Superblock::layout(fsname, uuid, dev.size());
    // Old checkpoint headers carry the old salt and are ignored; clear them anyway.
    let zero = AlignedBuf::new(BLOCK);
    for off in sb.ckpt_off {
        dev.write(off, zero.as_slice())?;
    }
    dev.write(sb.wal_off, zero.as_slice())?;
    dev.flush()?;
    write_mmp(
        dev,
        &Mmp {
            seq: MMP_SEQ_CLEAN,
            node: String::new(),
            interval_ms: 0,
        },
    )?;
    let hdr = CheckpointHeader {
        generation: 0,
        wal_pos: 0,
        wal_seq: 1,
        body_len: 0,
        body_crc: 0,
    };
    checkpoint::write(dev, &sb, hdr, initial_body)?;
    // The superblock last: a device without one is not an MDT, whatever else got written.
    write_superblock(dev, &sb)?;
    Ok(sb)
}

impl<D: BlockDevice> Mdt<D> {
    /// Opens the MDT and recovers: loads the newest valid checkpoint with `load`, then replays the
    /// WAL into the state it returned with `apply`, stopping at the torn or unwritten tail.
    pub fn recover<S>(
        mut dev: D,
        load: impl FnOnce(&[u8]) -> Result<S, String>,
        mut apply: impl FnMut(&mut S, WalEntry) -> Result<(), String>,
    ) -> Result<(Mdt<D>, S, RecoveryStats), MdtError> {
        let sb = read_superblock(&mut dev)?;
        let (hdr, body) = checkpoint::load_newest(&mut dev, &sb)?;
        let mut state = load(&body).map_err(|reason| MdtError::Corrupt {
            device: dev.name(),
            reason: format!("checkpoint: {reason}"),
        })?;
        let mut wal = Wal::new(sb.wal_off, sb.wal_len, sb.salt(), hdr.wal_pos, hdr.wal_seq, 0);
        let mut entries = 0u64;
        let batches = wal.replay(&mut dev, |e| {
            entries += 1;
            apply(&mut state, e)
        })?;
        let stats = RecoveryStats {
            checkpoint_generation: hdr.generation,
            batches,
            entries,
        };
        Ok((
            Mdt {
                dev,
                sb,
                wal,
                generation: hdr.generation,
            },
            state,
            stats,
        ))
    }

    /// Group commit: makes `entries` durable in one batch (one write + flush). If the WAL ring is
    /// full, writes a checkpoint instead, with the body `snapshot` returns: it must be the current
    /// state, which already includes the effects of `entries`.
    pub fn commit(&mut self, entries: &[WalEntry], snapshot: &mut dyn FnMut() -> Vec<u8>) -> Result<(), MdtError> {
        if entries.is_empty() {
            return Ok(());
        }
        match self.wal.try_append(&mut self.dev, entries)? {
            Append::Done => Ok(()),
            Append::Full => self.checkpoint(&snapshot()),
        }
    }

    /// Writes a checkpoint of `body` (the current state) covering everything logged so far; the
    /// WAL before the current position may then be overwritten.
    pub fn checkpoint(&mut self, body: &[u8]) -> Result<(), MdtError> {
        let (wal_pos, wal_seq) = self.wal.position();
        let generation = self.generation + 1;
        let hdr = CheckpointHeader {
            generation,
            wal_pos,
            wal_seq,
            body_len: 0,
            body_crc: 0,
        };
        checkpoint::write(&mut self.dev, &self.sb, hdr, body)?;
        self.generation = generation;
        self.wal.truncate();
        Ok(())
    }

    /// WAL bytes used since the last checkpoint, and the ring size.
    pub fn wal_usage(&self) -> (u64, u64) {
        self.wal.usage()
    }

    /// Generation of the last checkpoint.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}
