//! WAL records: deterministic redo records of namespace mutations.
//!
//! A record carries every value the mutation chose (fid, times, objects), so applying it to the
//! state it was made against always gives the same result: recovery is "apply the records".

use super::inode::Fid;
use super::layout::{Layout, LayoutTemplate, ObjRef};
use crate::codec::{Dec, DecodeError, Enc};

/// One namespace mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalRecord {
    /// A new regular file `name` in `parent`.
    Create {
        /// Parent directory.
        parent: Fid,
        /// Entry name.
        name: Box<str>,
        /// The new fid.
        fid: Fid,
        /// Type and permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Creation time (ns).
        time: i64,
        /// The layout, its objects taken from the allocator (`None`: delayed layout).
        layout: Option<Layout>,
    },
    /// A new directory.
    Mkdir {
        /// Parent directory.
        parent: Fid,
        /// Entry name.
        name: Box<str>,
        /// The new fid.
        fid: Fid,
        /// Type and permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Creation time (ns).
        time: i64,
    },
    /// A new symbolic link.
    Symlink {
        /// Parent directory.
        parent: Fid,
        /// Entry name.
        name: Box<str>,
        /// The new fid.
        fid: Fid,
        /// Link target.
        target: Box<str>,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Creation time (ns).
        time: i64,
    },
    /// A new hard link `name` in `parent` to `fid`.
    Link {
        /// Parent directory.
        parent: Fid,
        /// Entry name.
        name: Box<str>,
        /// The linked inode.
        fid: Fid,
        /// Time (ns).
        time: i64,
    },
    /// Removal of the entry `name` from `parent` (unlink or rmdir).
    Unlink {
        /// Parent directory.
        parent: Fid,
        /// Entry name.
        name: Box<str>,
        /// Time (ns).
        time: i64,
    },
    /// Rename, replacing any existing destination entry.
    Rename {
        /// Source directory.
        src_parent: Fid,
        /// Source name.
        src_name: Box<str>,
        /// Destination directory.
        dst_parent: Fid,
        /// Destination name.
        dst_name: Box<str>,
        /// Time (ns).
        time: i64,
    },
    /// Attribute change.
    Setattr {
        /// The inode.
        fid: Fid,
        /// New mode bits (permission bits only).
        mode: Option<u32>,
        /// New owner.
        uid: Option<u32>,
        /// New group.
        gid: Option<u32>,
        /// New size (truncate).
        size: Option<u64>,
        /// New access time.
        atime: Option<i64>,
        /// New modification time.
        mtime: Option<i64>,
        /// Change time.
        ctime: i64,
    },
    /// A file's layout assigned (setstripe on a file without objects or an empty file).
    SetLayout {
        /// The file.
        fid: Fid,
        /// The new layout.
        layout: Layout,
        /// Time (ns).
        time: i64,
    },
    /// A directory's default layout set or cleared.
    SetDirDefault {
        /// The directory.
        fid: Fid,
        /// The new default (`None`: inherit again).
        template: Option<LayoutTemplate>,
        /// Time (ns).
        time: i64,
    },
    /// Size-on-close: a writer closed the file, which it had written up to `size`.
    Close {
        /// The file.
        fid: Fid,
        /// The writer's end of file.
        size: u64,
        /// Modification time the writer reports.
        mtime: i64,
    },
    /// Objects `[start, start + count)` were precreated on OST `ost`.
    Precreated {
        /// OST index.
        ost: u32,
        /// First object id.
        start: u64,
        /// Number of objects.
        count: u64,
    },
}

/// A record with the request that caused it, so the reply cache can be rebuilt on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// Requesting client id (0 for the server's own records).
    pub client: u64,
    /// Request xid.
    pub xid: u64,
    /// Request opcode.
    pub opcode: u16,
    /// The mutation.
    pub record: WalRecord,
}

pub(crate) fn enc_layout(e: &mut Enc, l: &Layout) {
    e.u32(l.stripe_size);
    e.u32(l.objects.len() as u32);
    for o in l.objects.iter() {
        e.u32(o.ost);
        e.u64(o.oid);
    }
}

pub(crate) fn dec_layout(d: &mut Dec<'_>) -> Result<Layout, DecodeError> {
    let stripe_size = d.u32()?;
    let n = d.u32()? as usize;
    if n > d.remaining() / 12 {
        return Err(d.err());
    }
    let mut objects = Vec::with_capacity(n);
    for _ in 0..n {
        objects.push(ObjRef {
            ost: d.u32()?,
            oid: d.u64()?,
        });
    }
    Ok(Layout {
        stripe_size,
        objects: objects.into_boxed_slice(),
    })
}

pub(crate) fn enc_template(e: &mut Enc, t: &LayoutTemplate) {
    e.u32(t.stripe_size);
    e.i32(t.stripe_count);
    e.i32(t.stripe_offset);
}

pub(crate) fn dec_template(d: &mut Dec<'_>) -> Result<LayoutTemplate, DecodeError> {
    Ok(LayoutTemplate {
        stripe_size: d.u32()?,
        stripe_count: d.i32()?,
        stripe_offset: d.i32()?,
    })
}

impl WalEntry {
    /// Appends the encoding of this entry.
    pub fn encode(&self, e: &mut Enc) {
        e.u64(self.client);
        e.u64(self.xid);
        e.u16(self.opcode);
        match &self.record {
            WalRecord::Create {
                parent,
                name,
                fid,
                mode,
                uid,
                gid,
                time,
                layout,
            } => {
                e.u8(1);
                e.u64(*parent);
                e.str(name);
                e.u64(*fid);
                e.u32(*mode);
                e.u32(*uid);
                e.u32(*gid);
                e.i64(*time);
                match layout {
                    Some(l) => {
                        e.u8(1);
                        enc_layout(e, l);
                    }
                    None => e.u8(0),
                }
            }
            WalRecord::Mkdir {
                parent,
                name,
                fid,
                mode,
                uid,
                gid,
                time,
            } => {
                e.u8(2);
                e.u64(*parent);
                e.str(name);
                e.u64(*fid);
                e.u32(*mode);
                e.u32(*uid);
                e.u32(*gid);
                e.i64(*time);
            }
            WalRecord::Symlink {
                parent,
                name,
                fid,
                target,
                uid,
                gid,
                time,
            } => {
                e.u8(3);
                e.u64(*parent);
                e.str(name);
                e.u64(*fid);
                e.str(target);
                e.u32(*uid);
                e.u32(*gid);
                e.i64(*time);
            }
            WalRecord::Link {
                parent,
                name,
                fid,
                time,
            } => {
                e.u8(4);
                e.u64(*parent);
                e.str(name);
                e.u64(*fid);
                e.i64(*time);
            }
            WalRecord::Unlink { parent, name, time } => {
                e.u8(5);
                e.u64(*parent);
                e.str(name);
                e.i64(*time);
            }
            WalRecord::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                time,
            } => {
                e.u8(6);
                e.u64(*src_parent);
                e.str(src_name);
                e.u64(*dst_parent);
                e.str(dst_name);
                e.i64(*time);
            }
            WalRecord::Setattr {
                fid,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                ctime,
            } => {
                e.u8(7);
                e.u64(*fid);
                e.opt_u32(*mode);
                e.opt_u32(*uid);
                e.opt_u32(*gid);
                e.opt_u64(*size);
                e.opt_i64(*atime);
                e.opt_i64(*mtime);
                e.i64(*ctime);
            }
            WalRecord::SetLayout { fid, layout, time } => {
                e.u8(8);
                e.u64(*fid);
                enc_layout(e, layout);
                e.i64(*time);
            }
            WalRecord::SetDirDefault { fid, template, time } => {
                e.u8(9);
                e.u64(*fid);
                match template {
                    Some(t) => {
                        e.u8(1);
                        enc_template(e, t);
                    }
                    None => e.u8(0),
                }
                e.i64(*time);
            }
            WalRecord::Close { fid, size, mtime } => {
                e.u8(10);
                e.u64(*fid);
                e.u64(*size);
                e.i64(*mtime);
            }
            WalRecord::Precreated { ost, start, count } => {
                e.u8(11);
                e.u32(*ost);
                e.u64(*start);
                e.u64(*count);
            }
        }
    }

    /// Decodes one entry.
    pub fn decode(d: &mut Dec<'_>) -> Result<WalEntry, DecodeError> {
        let client = d.u64()?;
        let xid = d.u64()?;
        let opcode = d.u16()?;
        let record = match d.u8()? {
            1 => WalRecord::Create {
                parent: d.u64()?,
                name: d.str()?.into(),
                fid: d.u64()?,
                mode: d.u32()?,
                uid: d.u32()?,
                gid: d.u32()?,
                time: d.i64()?,
                layout: match d.u8()? {
                    0 => None,
                    1 => Some(dec_layout(d)?),
                    _ => return Err(d.err()),
                },
            },
            2 => WalRecord::Mkdir {
                parent: d.u64()?,
                name: d.str()?.into(),
                fid: d.u64()?,
                mode: d.u32()?,
                uid: d.u32()?,
                gid: d.u32()?,
                time: d.i64()?,
            },
            3 => WalRecord::Symlink {
                parent: d.u64()?,
                name: d.str()?.into(),
                fid: d.u64()?,
                target: d.str()?.into(),
                uid: d.u32()?,
                gid: d.u32()?,
                time: d.i64()?,
            },
            4 => WalRecord::Link {
                parent: d.u64()?,
                name: d.str()?.into(),
                fid: d.u64()?,
                time: d.i64()?,
            },
            5 => WalRecord::Unlink {
                parent: d.u64()?,
                name: d.str()?.into(),
                time: d.i64()?,
            },
            6 => WalRecord::Rename {
                src_parent: d.u64()?,
                src_name: d.str()?.into(),
                dst_parent: d.u64()?,
                dst_name: d.str()?.into(),
                time: d.i64()?,
            },
            7 => WalRecord::Setattr {
                fid: d.u64()?,
                mode: d.opt_u32()?,
                uid: d.opt_u32()?,
                gid: d.opt_u32()?,
                size: d.opt_u64()?,
                atime: d.opt_i64()?,
                mtime: d.opt_i64()?,
                ctime: d.i64()?,
            },
            8 => WalRecord::SetLayout {
                fid: d.u64()?,
                layout: dec_layout(d)?,
                time: d.i64()?,
            },
            9 => WalRecord::SetDirDefault {
                fid: d.u64()?,
                template: match d.u8()? {
                    0 => None,
                    1 => Some(dec_template(d)?),
                    _ => return Err(d.err()),
                },
                time: d.i64()?,
            },
            10 => WalRecord::Close {
                fid: d.u64()?,
                size: d.u64()?,
                mtime: d.i64()?,
            },
            11 => WalRecord::Precreated {
                ost: d.u32()?,
                start: d.u64()?,
                count: d.u64()?,
            },
            _ => return Err(d.err()),
        };
        Ok(WalEntry {
            client,
            xid,
            opcode,
            record,
        })
    }
}
