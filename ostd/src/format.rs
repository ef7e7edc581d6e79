//! The on-disk format: superblock, MMP block, geometry, and `mkfs`.
//!
//! Everything is little-endian, in 4 KiB blocks; see the layout table in `ostd/README.md`. Every
//! fixed structure ends with a crc32c of the rest of its block.

use crate::dev::{AlignedBuf, BlockDevice};
use crate::error::StoreError;

/// Block size of the format.
pub const BLOCK: usize = 4096;
/// [`BLOCK`] as u64.
pub const BLOCK_U64: u64 = BLOCK as u64;
/// Superblock magic at offset 0.
pub const SB_MAGIC: &[u8; 8] = b"RUSTOST\0";
/// Prefix of the rustre MDT superblock magic (refused by `mkfs`).
pub const MDT_MAGIC_PREFIX: &[u8; 7] = b"RUSTMDT";
/// Current format version; a device with a newer one is refused. Version 2 has the layout of
/// version 1; its commits flush once (data and journal record together), so an older ostd, which
/// would replay a record without checking its data, must not mount it.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest format version this ostd mounts.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// First version whose commits write the data and the journal record, then flush once.
pub const ONE_FLUSH_VERSION: u32 = 2;
/// Superblock location.
pub const SB_BLOCK: u64 = 0;
/// MMP block location.
pub const MMP_BLOCK: u64 = 1;
/// First journal block (the journal header).
pub const JOURNAL_START: u64 = 2;
/// Longest file system name.
pub const MAX_FSNAME: usize = 31;
/// Object table slots per block (32 bytes each).
pub const SLOTS_PER_BLOCK: u64 = (BLOCK / 32) as u64;
/// Block-map entries per block (16 bytes each).
pub const MAP_PER_BLOCK: u64 = (BLOCK / 16) as u64;
/// Allocation bits per bitmap block.
pub const BITS_PER_BLOCK: u64 = (BLOCK * 8) as u64;

/// Bytes sealed by [`seal`] for structures rewritten in place, which must survive a torn write:
/// they fit one 512-byte sector (sector writes are atomic).
pub const SECTOR: usize = 512;

/// Writes the crc32c of all but the last 4 bytes of `block` into its last 4 bytes.
pub fn seal(block: &mut [u8]) {
    let n = block.len() - 4;
    let crc = rustre_proto::crc::crc32c(&block[..n]);
    block[n..].copy_from_slice(&crc.to_le_bytes());
}

/// True if the last 4 bytes of `block` are the crc32c of the rest (see [`seal`]).
pub fn sealed_ok(block: &[u8]) -> bool {
    let n = block.len() - 4;
    rustre_proto::crc::crc32c(&block[..n]).to_le_bytes() == block[n..]
}

pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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

/// Where everything lives, in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks on the device used by the file system.
    pub total_blocks: u64,
    /// Journal: header block at [`JOURNAL_START`], records after it.
    pub journal_blocks: u64,
    /// The state block (next object id), journaled.
    pub state_block: u64,
    /// Allocation bitmap of the data area.
    pub bitmap_start: u64,
    /// Bitmap length.
    pub bitmap_blocks: u64,
    /// Block map: one 16-byte entry per data block (owner object, logical block, crc32c).
    pub map_start: u64,
    /// Block-map length.
    pub map_blocks: u64,
    /// Object table: one 32-byte slot per object.
    pub objtab_start: u64,
    /// Object-table length.
    pub objtab_blocks: u64,
    /// First data block.
    pub data_start: u64,
    /// Data blocks.
    pub data_blocks: u64,
}

impl Geometry {
    /// Lays out a device of `total_blocks` with a journal of `journal_blocks` and room for
    /// `max_objects` objects.
    pub fn compute(total_blocks: u64, journal_blocks: u64, max_objects: u64) -> Option<Self> {
        let objtab_blocks = max_objects.div_ceil(SLOTS_PER_BLOCK).max(1);
        // Checked: the inputs come from the superblock when it is decoded.
        let state_block = JOURNAL_START.checked_add(journal_blocks)?;
        let bitmap_start = state_block.checked_add(1)?;
        let fixed = bitmap_start.checked_add(objtab_blocks)?;
        let rest = total_blocks.checked_sub(fixed)?;
        // The largest data <= rest*256/257 with data + ceil(data/32768) + ceil(data/256) <= rest.
        // Start just above the real solution rest / (1 + 1/32768 + 1/256), so that the search
        // takes a few steps whatever the superblock says (stepping down from rest*256/257 took
        // about rest/33000 steps: a hang on a corrupt block count).
        let need =
            |d: u64| u128::from(d) + u128::from(d.div_ceil(BITS_PER_BLOCK)) + u128::from(d.div_ceil(MAP_PER_BLOCK));
        let (b, m) = (u128::from(BITS_PER_BLOCK), u128::from(MAP_PER_BLOCK));
        let above = u128::from(rest) * b * m / (b * m + b + m) + 1;
        let mut data =
            (rest.saturating_mul(MAP_PER_BLOCK) / (MAP_PER_BLOCK + 1)).min(u64::try_from(above).unwrap_or(u64::MAX));
        while data > 0 && need(data) > u128::from(rest) {
            data -= 1;
        }
        if data < 16 {
            return None;
        }
        let bitmap_blocks = data.div_ceil(BITS_PER_BLOCK);
        let map_blocks = data.div_ceil(MAP_PER_BLOCK);
        let map_start = bitmap_start + bitmap_blocks;
        let objtab_start = map_start + map_blocks;
        let data_start = objtab_start + objtab_blocks;
        Some(Self {
            total_blocks,
            journal_blocks,
            state_block,
            bitmap_start,
            bitmap_blocks,
            map_start,
            map_blocks,
            objtab_start,
            objtab_blocks,
            data_start,
            data_blocks: data,
        })
    }

    /// Object slots in the table.
    pub fn max_objects(&self) -> u64 {
        self.objtab_blocks * SLOTS_PER_BLOCK
    }

    /// The metadata region kept in memory and updated through the journal: state block, bitmap,
    /// block map, object table (contiguous).
    pub fn meta_range(&self) -> std::ops::Range<u64> {
        self.state_block..self.data_start
    }
}

/// The superblock (block 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Format version.
    pub version: u32,
    /// File system name.
    pub fsname: String,
    /// OST index.
    pub ost_index: u32,
    /// Random identity of this target.
    pub uuid: [u8; 16],
    /// Layout.
    pub geometry: Geometry,
    /// Creation time, ms since the epoch.
    pub mkfs_time_ms: u64,
}

impl Superblock {
    /// Encodes into one sealed block.
    pub fn encode(&self, b: &mut [u8]) {
        b[..BLOCK].fill(0);
        b[..8].copy_from_slice(SB_MAGIC);
        put_u32(b, 8, self.version);
        put_u32(b, 12, BLOCK as u32);
        let name = self.fsname.as_bytes();
        b[16..16 + name.len()].copy_from_slice(name);
        put_u32(b, 48, self.ost_index);
        b[56..72].copy_from_slice(&self.uuid);
        let g = &self.geometry;
        for (i, v) in [
            g.total_blocks,
            g.journal_blocks,
            g.state_block,
            g.bitmap_start,
            g.bitmap_blocks,
            g.map_start,
            g.map_blocks,
            g.objtab_start,
            g.objtab_blocks,
            g.data_start,
            g.data_blocks,
            self.mkfs_time_ms,
        ]
        .into_iter()
        .enumerate()
        {
            put_u64(b, 72 + 8 * i, v);
        }
        seal(&mut b[..BLOCK]);
    }

    /// Decodes and validates block 0 of `path`.
    pub fn decode(path: &str, b: &[u8]) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::Format {
            path: path.to_owned(),
            reason,
        };
        if &b[..8] != SB_MAGIC {
            return Err(bad("no rustre OST superblock (bad magic)".into()));
        }
        let version = get_u32(b, 8);
        if version > FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version} is newer than this ostd supports ({FORMAT_VERSION}); upgrade ostd"
            )));
        }
        if !sealed_ok(&b[..BLOCK]) {
            return Err(bad("superblock checksum mismatch".into()));
        }
        if version < MIN_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version} is not one this ostd supports ({MIN_FORMAT_VERSION}..={FORMAT_VERSION})"
            )));
        }
        if get_u32(b, 12) as usize != BLOCK {
            return Err(bad(format!("unsupported block size {}", get_u32(b, 12))));
        }
        let name_len = b[16..48].iter().position(|&c| c == 0).unwrap_or(32);
        let fsname = String::from_utf8(b[16..16 + name_len].to_vec())
            .map_err(|_| bad("file system name is not UTF-8".into()))?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[56..72]);
        let v: Vec<u64> = (0..12).map(|i| get_u64(b, 72 + 8 * i)).collect();
        let geometry = Geometry {
            total_blocks: v[0],
            journal_blocks: v[1],
            state_block: v[2],
            bitmap_start: v[3],
            bitmap_blocks: v[4],
            map_start: v[5],
            map_blocks: v[6],
            objtab_start: v[7],
            objtab_blocks: v[8],
            data_start: v[9],
            data_blocks: v[10],
        };
        // The geometry must be the one `compute` gives; anything else is corruption.
        let expect = geometry
            .objtab_blocks
            .checked_mul(SLOTS_PER_BLOCK)
            .and_then(|slots| Geometry::compute(geometry.total_blocks, geometry.journal_blocks, slots));
        if expect != Some(geometry) {
            return Err(bad("superblock geometry is inconsistent".into()));
        }
        Ok(Self {
            version,
            fsname,
            ost_index: get_u32(b, 48),
            uuid,
            geometry,
            mkfs_time_ms: v[11],
        })
    }

    /// The UUID as text.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|x| format!("{x:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }
}

/// MMP sequence value meaning "cleanly stopped".
pub const MMP_SEQ_CLEAN: u64 = 0xFF4D_4D50;
/// MMP block magic.
pub const MMP_MAGIC: &[u8; 8] = b"RUSTMMP\0";

/// The multi-mount protection block (block 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MmpBlock {
    /// Bumped every interval by the active server; [`MMP_SEQ_CLEAN`] after a clean stop.
    pub seq: u64,
    /// Update interval of the server that wrote it, ms.
    pub interval_ms: u32,
    /// Wall-clock time of the write, ms since the epoch.
    pub time_ms: u64,
    /// Node name of the writer.
    pub node: String,
    /// Service address of the writer, if any.
    pub address: String,
}

impl MmpBlock {
    /// Encodes into one sealed block.
    pub fn encode(&self, b: &mut [u8]) {
        b[..BLOCK].fill(0);
        b[..8].copy_from_slice(MMP_MAGIC);
        put_u64(b, 8, self.seq);
        put_u32(b, 16, self.interval_ms);
        put_u64(b, 24, self.time_ms);
        let node = truncate_utf8(&self.node, 63);
        b[32..32 + node.len()].copy_from_slice(node.as_bytes());
        let addr = truncate_utf8(&self.address, 127);
        b[96..96 + addr.len()].copy_from_slice(addr.as_bytes());
        seal(&mut b[..SECTOR]);
    }

    /// Decodes and validates.
    pub fn decode(path: &str, b: &[u8]) -> Result<Self, StoreError> {
        if &b[..8] != MMP_MAGIC || !sealed_ok(&b[..SECTOR]) {
            return Err(StoreError::Format {
                path: path.to_owned(),
                reason: "MMP block is damaged".into(),
            });
        }
        let text = |r: std::ops::Range<usize>| {
            let s = &b[r];
            let n = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..n]).into_owned()
        };
        Ok(Self {
            seq: get_u64(b, 8),
            interval_ms: get_u32(b, 16),
            time_ms: get_u64(b, 24),
            node: text(32..96),
            address: text(96..224),
        })
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads one block.
pub fn read_block(dev: &dyn BlockDevice, block: u64) -> Result<AlignedBuf, StoreError> {
    let mut b = AlignedBuf::new(BLOCK);
    dev.read_at(block * BLOCK_U64, &mut b)?;
    Ok(b)
}

/// Reads the MMP block.
pub fn read_mmp(dev: &dyn BlockDevice) -> Result<MmpBlock, StoreError> {
    MmpBlock::decode(dev.path(), &read_block(dev, MMP_BLOCK)?)
}

/// Writes the MMP block and makes it durable.
pub fn write_mmp(dev: &dyn BlockDevice, mmp: &MmpBlock) -> Result<(), StoreError> {
    let mut b = AlignedBuf::new(BLOCK);
    mmp.encode(&mut b);
    dev.write_at(MMP_BLOCK * BLOCK_U64, &b)?;
    dev.flush()?;
    Ok(())
}

/// What `mkfs` found on a device before formatting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Nothing recognised.
    Nothing,
    /// A rustre OST (its index and fs name).
    RustreOst {
        /// Its file system name.
        fsname: String,
        /// Its OST index.
        index: u32,
    },
    /// A rustre OST of a newer format version.
    NewerOst(u32),
    /// Another file system, by name.
    Foreign(&'static str),
}

/// Looks for a file system on the device (the first 68 KiB are enough for the magics we know).
pub fn detect(dev: &dyn BlockDevice) -> Result<Existing, StoreError> {
    let len = (17 * BLOCK).min(dev.size() as usize);
    let mut b = AlignedBuf::new(len);
    dev.read_at(0, &mut b)?;
    if &b[..8] == SB_MAGIC {
        let version = get_u32(&b, 8);
        if version > FORMAT_VERSION {
            return Ok(Existing::NewerOst(version));
        }
        return Ok(match Superblock::decode(dev.path(), &b[..BLOCK]) {
            Ok(sb) => Existing::RustreOst {
                fsname: sb.fsname,
                index: sb.ost_index,
            },
            Err(_) => Existing::RustreOst {
                fsname: "?".into(),
                index: get_u32(&b, 48),
            },
        });
    }
    if &b[..7] == MDT_MAGIC_PREFIX {
        return Ok(Existing::Foreign("a rustre MDT"));
    }
    if b.len() >= 1082 && b[1080] == 0x53 && b[1081] == 0xEF {
        return Ok(Existing::Foreign("an ext2/ext3/ext4 file system"));
    }
    if &b[..4] == b"XFSB" {
        return Ok(Existing::Foreign("an XFS file system"));
    }
    if b.len() >= 65608 && &b[65600..65608] == b"_BHRfS_M" {
        return Ok(Existing::Foreign("a btrfs file system"));
    }
    Ok(Existing::Nothing)
}

/// Options of `mkfs`.
#[derive(Debug, Clone)]
pub struct MkfsOptions {
    /// File system name (1..=31 characters of `[A-Za-z0-9_-]`).
    pub fsname: String,
    /// OST index.
    pub index: u32,
    /// Overwrite an existing rustre OST or another file system.
    pub force: bool,
    /// Journal blocks (0 = default: device/64 clamped to 256..=4096).
    pub journal_blocks: u64,
    /// Object slots (0 = default: one per 64 KiB of device, at least 1024).
    pub max_objects: u64,
}

impl MkfsOptions {
    /// Defaults for a name and index.
    pub fn new(fsname: &str, index: u32) -> Self {
        Self {
            fsname: fsname.to_owned(),
            index,
            force: false,
            journal_blocks: 0,
            max_objects: 0,
        }
    }
}

/// Validates a file system name.
pub fn check_fsname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FSNAME {
        return Err(format!(
            "file system name {name:?} must have 1 to {MAX_FSNAME} characters"
        ));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Err(format!(
            "file system name {name:?} may only contain letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    // SAFETY: getrandom writes at most `u.len()` bytes into the live local array.
    let n = unsafe { libc::getrandom(u.as_mut_ptr().cast(), u.len(), 0) };
    if n != u.len() as isize {
        // Fall back on time and pid: uniqueness, not secrecy, is what matters here.
        let t = now_ms() ^ (u64::from(std::process::id()) << 32);
        u[..8].copy_from_slice(&t.to_le_bytes());
    }
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}

/// Formats `dev` as an OST. Refuses a device holding a rustre OST or another file system unless
/// `force`, and always refuses a newer format version.
pub fn mkfs(dev: &dyn BlockDevice, opts: &MkfsOptions) -> Result<Superblock, StoreError> {
    let path = dev.path().to_owned();
    let refuse = |reason: String| StoreError::Refused {
        path: path.clone(),
        reason,
    };
    check_fsname(&opts.fsname).map_err(|reason| StoreError::Invalid {
        field: "fsname",
        reason,
    })?;
    match detect(dev)? {
        Existing::Nothing => {}
        Existing::NewerOst(v) => {
            return Err(refuse(format!(
                "holds a rustre OST of format version {v}, newer than this ostd ({FORMAT_VERSION}); refusing to format"
            )));
        }
        Existing::RustreOst { fsname, index } if !opts.force => {
            return Err(refuse(format!(
                "already holds rustre OST{index} of file system {fsname:?}; use --force to overwrite it"
            )));
        }
        Existing::Foreign(what) if !opts.force => {
            return Err(refuse(format!("holds {what}; use --force to overwrite it")));
        }
        _ => {}
    }
    let total = dev.size() / BLOCK_U64;
    let journal = if opts.journal_blocks > 0 {
        opts.journal_blocks
    } else {
        (total / 64).clamp(256, 4096)
    };
    if journal < 64 {
        return Err(StoreError::Invalid {
            field: "journal_blocks",
            reason: "the journal needs at least 64 blocks".into(),
        });
    }
    let max_objects = if opts.max_objects > 0 {
        opts.max_objects
    } else {
        (total / 16).max(1024)
    };
    let geometry = Geometry::compute(total, journal, max_objects).ok_or_else(|| {
        refuse(format!(
            "too small ({} bytes) for a journal of {journal} blocks and {max_objects} objects",
            dev.size()
        ))
    })?;
    let sb = Superblock {
        version: FORMAT_VERSION,
        fsname: opts.fsname.clone(),
        ost_index: opts.index,
        uuid: random_uuid(),
        geometry,
        mkfs_time_ms: now_ms(),
    };
    // Zero everything up to the data area (journal header, state, bitmap, map, object table), then
    // write the journal header, state, MMP, and the superblock last.
    let chunk = 256 * BLOCK;
    let zero = AlignedBuf::new(chunk);
    let mut at = JOURNAL_START * BLOCK_U64;
    let end = geometry.data_start * BLOCK_U64;
    while at < end {
        let n = ((end - at) as usize).min(chunk);
        dev.write_at(at, &zero[..n])?;
        at += n as u64;
    }
    let mut b = AlignedBuf::new(BLOCK);
    crate::journal::encode_header(&mut b, 1, 0);
    dev.write_at(JOURNAL_START * BLOCK_U64, &b)?;
    crate::meta::encode_initial_state(&mut b);
    dev.write_at(geometry.state_block * BLOCK_U64, &b)?;
    MmpBlock {
        seq: MMP_SEQ_CLEAN,
        interval_ms: 0,
        time_ms: now_ms(),
        node: String::new(),
        address: String::new(),
    }
    .encode(&mut b);
    dev.write_at(MMP_BLOCK * BLOCK_U64, &b)?;
    dev.flush()?;
    sb.encode(&mut b);
    dev.write_at(SB_BLOCK * BLOCK_U64, &b)?;
    dev.flush()?;
    Ok(sb)
}

/// Reads and validates the superblock.
pub fn read_superblock(dev: &dyn BlockDevice) -> Result<Superblock, StoreError> {
    let b = read_block(dev, SB_BLOCK)?;
    let sb = Superblock::decode(dev.path(), &b)?;
    if sb.geometry.total_blocks * BLOCK_U64 > dev.size() {
        return Err(StoreError::Format {
            path: dev.path().to_owned(),
            reason: format!(
                "superblock says {} bytes but the device has only {}",
                sb.geometry.total_blocks * BLOCK_U64,
                dev.size()
            ),
        });
    }
    Ok(sb)
}

#[cfg(test)]
mod decode_regressions {
    use super::*;

    /// Inputs found by `rustre-fuzz --target ostd.superblock`: geometry fields whose arithmetic
    /// overflowed (object slots, journal end) are refused as inconsistent, not a panic.
    #[test]
    fn overflowing_geometry_is_refused() {
        let g = Geometry::compute(2048, 64, 1024).unwrap();
        let sb = Superblock {
            version: FORMAT_VERSION,
            fsname: "fuzz".into(),
            ost_index: 0,
            uuid: [7; 16],
            geometry: g,
            mkfs_time_ms: 1,
        };
        let mut b = vec![0u8; BLOCK];
        sb.encode(&mut b);
        assert_eq!(Superblock::decode("sb", &b).unwrap(), sb);
        // objtab_blocks (field 8) so large that slots = blocks * 128 overflows; then a journal
        // (field 1) reaching past u64::MAX.
        for (field, v) in [(8, u64::MAX / 3), (1, u64::MAX - 1), (1, u64::MAX)] {
            let mut c = b.clone();
            put_u64(&mut c, 72 + 8 * field, v);
            seal(&mut c[..BLOCK]);
            let e = Superblock::decode("sb", &c).unwrap_err().to_string();
            assert!(e.contains("inconsistent"), "{e}");
        }
        assert!(Geometry::compute(u64::MAX, u64::MAX, 1).is_none());
    }

    /// The geometry search as it was (one step at a time), for comparison.
    fn slow_data(rest: u64) -> u64 {
        let mut data = rest.saturating_mul(MAP_PER_BLOCK) / (MAP_PER_BLOCK + 1);
        while data > 0 && data + data.div_ceil(BITS_PER_BLOCK) + data.div_ceil(MAP_PER_BLOCK) > rest {
            data -= 1;
        }
        data
    }

    /// Found by `rustre-fuzz --target ostd.superblock`: a huge block count made the geometry
    /// search step down one block at a time (a hang). It now takes a few steps and gives the
    /// same geometry as before for every device size.
    #[test]
    fn geometry_search_is_quick_and_unchanged() {
        let fixed = JOURNAL_START + 64 + 1 + 8;
        let mut sizes: Vec<u64> = (0..20_000).collect();
        sizes.extend((1..30).map(|k| 1u64 << k).flat_map(|p| [p - 1, p, p + 1, p * 3 / 2]));
        sizes.extend([
            32_768 * 257,
            32_768 * 256 + 255,
            8_421_632,
            8_421_633,
            (1 << 31) + 12_345,
        ]);
        for rest in sizes {
            let g = Geometry::compute(rest + fixed, 64, 1024);
            let want = slow_data(rest);
            assert_eq!(
                g.map_or(0, |g| g.data_blocks),
                if want < 16 { 0 } else { want },
                "rest {rest}"
            );
        }
        let t = std::time::Instant::now();
        for total in [u64::MAX, u64::MAX / 3, 2_251_902_471_810_567] {
            let g = Geometry::compute(total, 64, 1024).unwrap();
            assert!(g.data_start + g.data_blocks <= total);
        }
        assert!(t.elapsed() < std::time::Duration::from_millis(100), "{:?}", t.elapsed());
    }
}
