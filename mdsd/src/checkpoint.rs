//! Checkpoints: the whole namespace (and reply cache) in one of two alternating slots.
//!
//! A slot is a header block (magic, fs salt, generation, the WAL position and sequence the
//! checkpoint covers up to, body length and crc32c; sealed in one sector) followed by the body.
//! The body is written and flushed before the header, and the two slots alternate, so a power cut
//! during a checkpoint leaves the previous one intact. Recovery takes the valid slot with the
//! highest generation.

use crate::dev::{AlignedBuf, BLOCK, BlockDevice};
use crate::format::{MdtError, Superblock, get_u32, get_u64, put_u32, put_u64, seal, sealed_ok};

const CKPT_MAGIC: &[u8; 8] = b"RMDTCKP\0";
const SECTOR: usize = 512;

/// What a checkpoint header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// Generation: higher is newer.
    pub generation: u64,
    /// WAL position after the last batch this checkpoint covers.
    pub wal_pos: u64,
    /// Sequence of the first batch not covered.
    pub wal_seq: u64,
    /// Body bytes.
    pub body_len: u64,
    /// Body crc32c.
    pub body_crc: u32,
}

/// Writes a checkpoint into slot `generation % 2`.
pub fn write(dev: &mut dyn BlockDevice, sb: &Superblock, hdr: CheckpointHeader, body: &[u8]) -> Result<(), MdtError> {
    let have = sb.ckpt_len - BLOCK as u64;
    if body.len() as u64 > have {
        return Err(MdtError::CheckpointTooLarge {
            device: dev.name(),
            need: body.len() as u64,
            have,
        });
    }
    let slot = sb.ckpt_off[(hdr.generation % 2) as usize];
    if !body.is_empty() {
        let mut b = AlignedBuf::new(body.len());
        b.as_mut_slice()[..body.len()].copy_from_slice(body);
        dev.write(slot + BLOCK as u64, b.as_slice())?;
        dev.flush()?;
    }
    let mut h = AlignedBuf::new(BLOCK);
    let s = h.as_mut_slice();
    s[..8].copy_from_slice(CKPT_MAGIC);
    put_u64(s, 8, sb.salt());
    put_u64(s, 16, hdr.generation);
    put_u64(s, 24, hdr.wal_pos);
    put_u64(s, 32, hdr.wal_seq);
    put_u64(s, 40, body.len() as u64);
    put_u32(s, 48, rustre_proto::crc::crc32c(body));
    seal(&mut s[..SECTOR]);
    dev.write_durable(slot, h.as_slice())?;
    Ok(())
}

fn read_header(dev: &mut dyn BlockDevice, sb: &Superblock, slot: usize) -> Result<Option<CheckpointHeader>, MdtError> {
    let mut h = AlignedBuf::new(BLOCK);
    dev.read(sb.ckpt_off[slot], h.as_mut_slice())?;
    let s = h.as_slice();
    if &s[..8] != CKPT_MAGIC || !sealed_ok(&s[..SECTOR]) || get_u64(s, 8) != sb.salt() {
        return Ok(None);
    }
    let hdr = CheckpointHeader {
        generation: get_u64(s, 16),
        wal_pos: get_u64(s, 24),
        wal_seq: get_u64(s, 32),
        body_len: get_u64(s, 40),
        body_crc: get_u32(s, 48),
    };
    let fits = hdr.body_len <= sb.ckpt_len - BLOCK as u64
        && hdr.wal_pos < sb.wal_len
        && hdr.wal_pos.is_multiple_of(BLOCK as u64);
    Ok(fits.then_some(hdr))
}

/// Loads the newest valid checkpoint: its header and body.
pub fn load_newest(dev: &mut dyn BlockDevice, sb: &Superblock) -> Result<(CheckpointHeader, Vec<u8>), MdtError> {
    let mut cands: Vec<CheckpointHeader> = Vec::new();
    for slot in 0..2 {
        if let Some(h) = read_header(dev, sb, slot)?
            && h.generation % 2 == slot as u64
        {
            cands.push(h);
        }
    }
    cands.sort_by_key(|h| std::cmp::Reverse(h.generation));
    for h in cands {
        let slot = sb.ckpt_off[(h.generation % 2) as usize];
        let mut b = AlignedBuf::new(h.body_len.max(1) as usize);
        dev.read(slot + BLOCK as u64, b.as_mut_slice())?;
        let body = &b.as_slice()[..h.body_len as usize];
        if rustre_proto::crc::crc32c(body) == h.body_crc {
            return Ok((h, body.to_vec()));
        }
        tracing::warn!(
            "{}: checkpoint generation {} has a bad body checksum; trying the other slot",
            dev.name(),
            h.generation
        );
    }
    Err(MdtError::Corrupt {
        device: dev.name(),
        reason: "no valid checkpoint in either slot".into(),
    })
}
