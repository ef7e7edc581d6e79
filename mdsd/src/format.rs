//! The MDT on-disk format: superblock, MMP block, region geometry.
//!
//! Little-endian, 4 KiB blocks:
//!
//! | block(s) | contents |
//! |---|---|
//! | 0 | superblock (magic `RUSTMDT\0`, version, fs name, UUID, geometry, crc32c) |
//! | 1 | MMP block (multi-mount protection: sequence, node, interval, crc32c) |
//! | 2.. | checkpoint slot A, checkpoint slot B (equal sizes) |
//! | then | WAL ring |
//!
//! Structures rewritten in place (MMP) fit in one 512-byte sector, whose writes are atomic.

use crate::dev::{AlignedBuf, BLOCK, BlockDevice, DevError};
use thiserror::Error;

/// Superblock magic.
pub const MDT_MAGIC: &[u8; 8] = b"RUSTMDT\0";
/// The OST superblock magic (`ostd`), recognized so `mkfs` can name what it refuses to overwrite.
pub const OST_MAGIC: &[u8; 8] = b"RUSTOST\0";
/// MMP block magic.
pub const MMP_MAGIC: &[u8; 8] = b"RUSTMMP\0";
/// Format version.
pub const FORMAT_VERSION: u32 = 1;
/// MMP sequence meaning "cleanly stopped".
pub const MMP_SEQ_CLEAN: u64 = 0xFF4D_4D50;
/// Longest file system name.
pub const MAX_FSNAME: usize = 31;
/// Smallest device accepted.
pub const MIN_DEVICE: u64 = 8 << 20;
const SECTOR: usize = 512;

/// An MDT storage error.
#[derive(Debug, Error)]
pub enum MdtError {
    /// The device failed.
    #[error(transparent)]
    Dev(#[from] DevError),
    /// The device does not hold a valid MDT, or holds something else.
    #[error("{device}: {reason}")]
    Format {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// Another node is serving this MDT (its MMP sequence moves).
    #[error("{device}: in use by node {node:?} (MMP sequence moving); refusing to serve")]
    InUse {
        /// The device.
        device: String,
        /// The node named in the MMP block.
        node: String,
    },
    /// The WAL region cannot hold a batch even after a checkpoint.
    #[error("{device}: WAL batch of {need} bytes exceeds the WAL region ({have} bytes)")]
    WalTooSmall {
        /// The device.
        device: String,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// A checkpoint does not fit its slot.
    #[error("{device}: checkpoint of {need} bytes exceeds its slot ({have} bytes); use a larger MDT")]
    CheckpointTooLarge {
        /// The device.
        device: String,
        /// Bytes needed.
        need: u64,
        /// Slot size.
        have: u64,
    },
    /// The log or a checkpoint could not be applied.
    #[error("{device}: corrupt metadata: {reason}")]
    Corrupt {
        /// The device.
        device: String,
        /// What was found.
        reason: String,
    },
}

/// Writes the crc32c of all but the last 4 bytes of `b` into its last 4 bytes.
pub fn seal(b: &mut [u8]) {
    let n = b.len() - 4;
    let crc = rustre_proto::crc::crc32c(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
}

/// True if `b` ends with the crc32c of the rest.
pub fn sealed_ok(b: &[u8]) -> bool {
    let n = b.len() - 4;
    rustre_proto::crc::crc32c(&b[..n]).to_le_bytes() == b[n..]
}

pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The superblock: identity and geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// File system name.
    pub fsname: String,
    /// UUID chosen at mkfs.
    pub uuid: [u8; 16],
    /// Device bytes in use.
    pub size: u64,
    /// Checkpoint slot offsets.
    pub ckpt_off: [u64; 2],
    /// Bytes per checkpoint slot.
    pub ckpt_len: u64,
    /// WAL ring offset.
    pub wal_off: u64,
    /// WAL ring bytes.
    pub wal_len: u64,
}

impl Superblock {
    /// The geometry for a device of `size` bytes: WAL 1/4 of it (1 MiB ..= 4 GiB), the rest
    /// split between the two checkpoint slots.
    pub fn layout(fsname: &str, uuid: [u8; 16], size: u64) -> Superblock {
        let b = BLOCK as u64;
        let size = size / b * b;
        let wal_len = (size / 4).clamp(1 << 20, 4 << 30) / b * b;
        // Saturating: a decoded superblock may claim any size (decode refuses small ones first).
        let ckpt_len = size.saturating_sub(2 * b + wal_len) / 2 / b * b;
        Superblock {
            fsname: fsname.to_string(),
            uuid,
            size,
            ckpt_off: [2 * b, 2 * b + ckpt_len],
            ckpt_len,
            wal_off: 2 * b + 2 * ckpt_len,
            wal_len,
        }
    }

    /// A 64-bit value derived from the UUID, stamped into WAL batches and checkpoints so blocks
    /// left by an earlier file system on the same device are never taken for ours.
    pub fn salt(&self) -> u64 {
        get_u64(&self.uuid, 0) ^ get_u64(&self.uuid, 8)
    }

    fn encode(&self, b: &mut [u8]) {
        b[..8].copy_from_slice(MDT_MAGIC);
        put_u32(b, 8, FORMAT_VERSION);
        b[12] = self.fsname.len() as u8;
        b[13..13 + self.fsname.len()].copy_from_slice(self.fsname.as_bytes());
        b[48..64].copy_from_slice(&self.uuid);
        put_u64(b, 64, self.size);
        put_u64(b, 72, self.ckpt_off[0]);
        put_u64(b, 80, self.ckpt_off[1]);
        put_u64(b, 88, self.ckpt_len);
        put_u64(b, 96, self.wal_off);
        put_u64(b, 104, self.wal_len);
        seal(&mut b[..SECTOR]);
    }

    fn decode(device: &str, b: &[u8], dev_size: u64) -> Result<Superblock, MdtError> {
        let bad = |reason: String| MdtError::Format {
            device: device.to_string(),
            reason,
        };
        if &b[..8] == OST_MAGIC {
            return Err(bad("holds an OST (ostd), not an MDT".into()));
        }
        if &b[..8] != MDT_MAGIC {
            return Err(bad("not a rustre MDT (bad superblock magic); run `mdsd mkfs`".into()));
        }
        if !sealed_ok(&b[..SECTOR]) {
            return Err(bad("superblock checksum mismatch".into()));
        }
        let v = get_u32(b, 8);
        if v != FORMAT_VERSION {
            return Err(bad(format!("format version {v}, this build reads {FORMAT_VERSION}")));
        }
        let n = b[12] as usize;
        if n == 0 || n > MAX_FSNAME {
            return Err(bad("bad fs name length in superblock".into()));
        }
        let fsname = std::str::from_utf8(&b[13..13 + n])
            .map_err(|_| bad("fs name is not UTF-8".into()))?
            .to_string();
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[48..64]);
        let size = get_u64(b, 64);
        if size < MIN_DEVICE {
            return Err(bad(format!(
                "superblock says {size} bytes, less than the smallest MDT ({MIN_DEVICE})"
            )));
        }
        let sb = Superblock {
            fsname,
            uuid,
            size,
            ckpt_off: [get_u64(b, 72), get_u64(b, 80)],
            ckpt_len: get_u64(b, 88),
            wal_off: get_u64(b, 96),
            wal_len: get_u64(b, 104),
        };
        if sb != Superblock::layout(&sb.fsname, sb.uuid, sb.size) {
            return Err(bad("superblock geometry is inconsistent".into()));
        }
        if sb.size > dev_size {
            return Err(bad(format!(
                "superblock says {} bytes but the device has {dev_size}",
                sb.size
            )));
        }
        Ok(sb)
    }
}

/// Checks a file system name: 1..=31 bytes of `[A-Za-z0-9_-]`.
pub fn check_fsname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FSNAME {
        return Err(format!("fs name {name:?} must be 1 to {MAX_FSNAME} bytes"));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Err(format!("fs name {name:?} may hold only letters, digits, '-' and '_'"));
    }
    Ok(())
}

/// Reads block `n`.
pub fn read_block(dev: &mut dyn BlockDevice, n: u64) -> Result<AlignedBuf, MdtError> {
    let mut b = AlignedBuf::new(BLOCK);
    dev.read(n * BLOCK as u64, b.as_mut_slice())?;
    Ok(b)
}

/// Reads and checks the superblock.
pub fn read_superblock(dev: &mut dyn BlockDevice) -> Result<Superblock, MdtError> {
    let b = read_block(dev, 0)?;
    Superblock::decode(&dev.name(), b.as_slice(), dev.size())
}

/// Writes the superblock (durably).
pub fn write_superblock(dev: &mut dyn BlockDevice, sb: &Superblock) -> Result<(), MdtError> {
    let mut b = AlignedBuf::new(BLOCK);
    sb.encode(b.as_mut_slice());
    dev.write_durable(0, b.as_slice())?;
    Ok(())
}

/// What `mkfs` finds on a device before formatting it.
pub fn existing_contents(dev: &mut dyn BlockDevice) -> Result<Option<String>, MdtError> {
    let b = read_block(dev, 0)?;
    let s = b.as_slice();
    Ok(if &s[..8] == MDT_MAGIC {
        let n = (s[12] as usize).min(MAX_FSNAME);
        Some(format!(
            "an MDT of file system {:?}",
            String::from_utf8_lossy(&s[13..13 + n])
        ))
    } else if &s[..8] == OST_MAGIC {
        Some("an OST (ostd)".into())
    } else if s[1080..1082] == [0x53, 0xEF] {
        Some("an ext2/3/4 file system".into())
    } else if &s[..4] == b"XFSB" {
        Some("an XFS file system".into())
    } else if s.iter().any(|&x| x != 0) {
        Some("unknown data (the first block is not zero)".into())
    } else {
        None
    })
}

/// The MMP block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mmp {
    /// Bumped by the active server every interval; [`MMP_SEQ_CLEAN`] after a clean stop.
    pub seq: u64,
    /// Node name of the last writer.
    pub node: String,
    /// The writer's bump interval in milliseconds.
    pub interval_ms: u32,
}

impl Mmp {
    fn encode(&self, b: &mut [u8]) {
        b[..8].copy_from_slice(MMP_MAGIC);
        put_u64(b, 8, self.seq);
        put_u32(b, 16, self.interval_ms);
        let n = self.node.len().min(64);
        b[20] = n as u8;
        b[21..21 + n].copy_from_slice(&self.node.as_bytes()[..n]);
        seal(&mut b[..SECTOR]);
    }
}

/// Reads the MMP block.
pub fn read_mmp(dev: &mut dyn BlockDevice) -> Result<Mmp, MdtError> {
    let b = read_block(dev, 1)?;
    let s = b.as_slice();
    if &s[..8] != MMP_MAGIC || !sealed_ok(&s[..SECTOR]) {
        return Err(MdtError::Format {
            device: dev.name(),
            reason: "MMP block is damaged".into(),
        });
    }
    let n = (s[20] as usize).min(64);
    Ok(Mmp {
        seq: get_u64(s, 8),
        interval_ms: get_u32(s, 16),
        node: String::from_utf8_lossy(&s[21..21 + n]).into_owned(),
    })
}

/// Writes the MMP block durably.
pub fn write_mmp(dev: &mut dyn BlockDevice, mmp: &Mmp) -> Result<(), MdtError> {
    let mut b = AlignedBuf::new(BLOCK);
    mmp.encode(b.as_mut_slice());
    dev.write_durable(BLOCK as u64, b.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod decode_regressions {
    use super::*;

    /// Found by `rustre-fuzz --target mdsd.superblock`: a superblock claiming a device smaller
    /// than its fixed areas made the geometry computation underflow (a panic); it is refused.
    #[test]
    fn tiny_sizes_are_refused() {
        let sb = Superblock::layout("fuzz", [3; 16], MIN_DEVICE);
        let mut b = vec![0u8; BLOCK];
        sb.encode(&mut b);
        assert_eq!(Superblock::decode("mdt", &b, MIN_DEVICE).unwrap(), sb);
        for size in [0, 1, BLOCK as u64, (1 << 20) + 2 * BLOCK as u64 - 1, MIN_DEVICE - 1] {
            let mut c = b.clone();
            put_u64(&mut c, 64, size);
            seal(&mut c[..SECTOR]);
            let e = Superblock::decode("mdt", &c, MIN_DEVICE).unwrap_err().to_string();
            assert!(e.contains("smallest MDT"), "{size}: {e}");
            // The layout itself no longer underflows.
            let _ = Superblock::layout("fuzz", [3; 16], size);
        }
    }
}
