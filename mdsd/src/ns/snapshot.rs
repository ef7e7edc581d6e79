//! Encoding the whole namespace for a checkpoint, and decoding it back.

use super::Namespace;
use super::dir::Dir;
use super::inode::{Body, Fid, Inode};
use super::layout::{ObjectAllocator, OstPool};
use super::record::{dec_layout, dec_template, enc_layout, enc_template};
use crate::codec::{Dec, DecodeError, Enc};
use std::collections::HashMap;

const SNAPSHOT_VERSION: u32 = 1;

impl Namespace {
    /// Appends the encoding of the whole namespace to `e`.
    pub fn encode(&self, e: &mut Enc) {
        e.u32(SNAPSHOT_VERSION);
        e.u64(self.next_fid);
        enc_template(e, &self.fs_default);
        e.u32(self.alloc.osts.len() as u32);
        for (ost, p) in &self.alloc.osts {
            e.u32(*ost);
            e.u32(p.ranges.len() as u32);
            for (a, b) in &p.ranges {
                e.u64(*a);
                e.u64(*b);
            }
            e.u32(p.ever.len() as u32);
            for (a, b) in &p.ever {
                e.u64(*a);
                e.u64(*b);
            }
        }
        e.u64(self.inodes.len() as u64);
        for (fid, ino) in &self.inodes {
            e.u64(*fid);
            e.u32(ino.mode);
            e.u32(ino.uid);
            e.u32(ino.gid);
            e.u32(ino.nlink);
            e.u64(ino.size);
            e.i64(ino.atime);
            e.i64(ino.mtime);
            e.i64(ino.ctime);
            match &ino.body {
                Body::File(None) => e.u8(0),
                Body::File(Some(l)) => {
                    e.u8(1);
                    enc_layout(e, l);
                }
                Body::Symlink(t) => {
                    e.u8(2);
                    e.str(t);
                }
                Body::Dir(d) => {
                    e.u8(3);
                    e.u64(d.parent);
                    match &d.default_layout {
                        Some(t) => {
                            e.u8(1);
                            enc_template(e, t);
                        }
                        None => e.u8(0),
                    }
                    e.u32(d.len());
                    for (name, f) in d.iter() {
                        e.str(name);
                        e.u64(f);
                    }
                }
            }
        }
    }

    /// Decodes a namespace encoded by [`Namespace::encode`].
    pub fn decode(d: &mut Dec<'_>) -> Result<Namespace, DecodeError> {
        if d.u32()? != SNAPSHOT_VERSION {
            return Err(d.err());
        }
        let next_fid = d.u64()?;
        let fs_default = dec_template(d)?;
        let mut alloc = ObjectAllocator::default();
        let n_osts = d.u32()?;
        for _ in 0..n_osts {
            let ost = d.u32()?;
            let mut p = OstPool::default();
            let n = d.u32()? as usize;
            if n > d.remaining() / 16 {
                return Err(d.err());
            }
            for _ in 0..n {
                p.ranges.push_back((d.u64()?, d.u64()?));
            }
            let n = d.u32()? as usize;
            if n > d.remaining() / 16 {
                return Err(d.err());
            }
            for _ in 0..n {
                p.ever.push((d.u64()?, d.u64()?));
            }
            alloc.osts.insert(ost, p);
        }
        let n = d.u64()? as usize;
        if n > d.remaining() / 45 {
            return Err(d.err());
        }
        let mut inodes: HashMap<Fid, Inode> = HashMap::with_capacity(n);
        for _ in 0..n {
            let fid = d.u64()?;
            let mode = d.u32()?;
            let uid = d.u32()?;
            let gid = d.u32()?;
            let nlink = d.u32()?;
            let size = d.u64()?;
            let atime = d.i64()?;
            let mtime = d.i64()?;
            let ctime = d.i64()?;
            let body = match d.u8()? {
                0 => Body::File(None),
                1 => Body::File(Some(Box::new(dec_layout(d)?))),
                2 => Body::Symlink(d.str()?.into()),
                3 => {
                    let mut dir = Dir::new(d.u64()?);
                    dir.default_layout = match d.u8()? {
                        0 => None,
                        1 => Some(dec_template(d)?),
                        _ => return Err(d.err()),
                    };
                    let m = d.u32()?;
                    for _ in 0..m {
                        let name = d.str()?;
                        let f = d.u64()?;
                        if dir.insert(name, f).is_some() {
                            return Err(d.err());
                        }
                    }
                    Body::Dir(Box::new(dir))
                }
                _ => return Err(d.err()),
            };
            let ino = Inode {
                mode,
                uid,
                gid,
                nlink,
                size,
                atime,
                mtime,
                ctime,
                body,
            };
            if inodes.insert(fid, ino).is_some() {
                return Err(d.err());
            }
        }
        Ok(Namespace {
            inodes,
            next_fid,
            alloc,
            fs_default,
        })
    }
}
