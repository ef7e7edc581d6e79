//! The file systems the phases run on: rustre through librustre, and POSIX on a local directory
//! (the baseline), behind one small trait so both run the very same phase code.

use anyhow::{Context, bail};
use rustre::{Client, Fd, FileKind, LayoutSpec, OpenFlags};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

/// What a phase needs from a file system. Paths are absolute in that file system.
pub trait Fs {
    /// An open file.
    type File;
    /// Creates a directory.
    fn mkdir(&self, path: &str) -> anyhow::Result<()>;
    /// The number of OSTs a file is striped over (None: a file system without striping).
    fn stripe_count(&self, path: &str) -> anyhow::Result<Option<u32>> {
        let _ = path;
        Ok(None)
    }
    /// Creates a directory whose new files stripe over `stripe_count` OSTs (-1: every OST, 0:
    /// the default). A file system without striping makes a plain directory.
    fn mkdir_striped(&self, path: &str, stripe_count: i64) -> anyhow::Result<()> {
        let _ = stripe_count;
        self.mkdir(path)
    }
    /// Opens for writing, creating it when absent (`exclusive`: it must not exist).
    fn create(&self, path: &str, exclusive: bool) -> anyhow::Result<Self::File>;
    /// Opens for reading.
    fn open_read(&self, path: &str) -> anyhow::Result<Self::File>;
    /// Writes all of `buf` at `offset`.
    fn pwrite(&self, f: &Self::File, buf: &[u8], offset: u64) -> anyhow::Result<()>;
    /// Reads into `buf` at `offset` until it is full or the file ends; the bytes read.
    fn pread(&self, f: &Self::File, buf: &mut [u8], offset: u64) -> anyhow::Result<usize>;
    /// Makes the file's data durable.
    fn fsync(&self, f: &Self::File) -> anyhow::Result<()>;
    /// Closes.
    fn close(&self, f: Self::File) -> anyhow::Result<()>;
    /// The size of `path`.
    fn stat_size(&self, path: &str) -> anyhow::Result<u64>;
    /// Removes a file.
    fn unlink(&self, path: &str) -> anyhow::Result<()>;
    /// Removes an empty directory.
    fn rmdir(&self, path: &str) -> anyhow::Result<()>;
    /// The entries of a directory (without `.` and `..`): name, is a directory.
    fn readdir(&self, path: &str) -> anyhow::Result<Vec<(Vec<u8>, bool)>>;
}

/// rustre through librustre's Rust API.
pub struct RustreFs {
    /// The connected client.
    pub client: Client,
}

impl Fs for RustreFs {
    type File = Fd;

    fn mkdir(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .mkdir(path, 0o755, None)
            .with_context(|| format!("rustre mkdir {path}"))?;
        Ok(())
    }

    fn stripe_count(&self, path: &str) -> anyhow::Result<Option<u32>> {
        let info = self
            .client
            .getstripe(path)
            .with_context(|| format!("rustre getstripe {path}"))?;
        Ok(Some(info.objects.len() as u32))
    }

    fn mkdir_striped(&self, path: &str, stripe_count: i64) -> anyhow::Result<()> {
        let count = match stripe_count {
            0 => return self.mkdir(path),
            -1 => self.client.ost_indexes().len() as u32,
            n => u32::try_from(n).with_context(|| format!("stripe count {n} for {path}"))?,
        };
        let spec = LayoutSpec {
            stripe_count: count,
            ..LayoutSpec::default()
        };
        self.client
            .mkdir(path, 0o755, Some(&spec))
            .with_context(|| format!("rustre mkdir {path} striped over {count} OSTs"))?;
        Ok(())
    }

    fn create(&self, path: &str, exclusive: bool) -> anyhow::Result<Fd> {
        let flags = OpenFlags {
            write: true,
            create: true,
            excl: exclusive,
            ..OpenFlags::default()
        };
        self.client
            .open(path, flags, 0o644, None)
            .with_context(|| format!("rustre create {path}"))
    }

    fn open_read(&self, path: &str) -> anyhow::Result<Fd> {
        let flags = OpenFlags {
            read: true,
            ..OpenFlags::default()
        };
        self.client
            .open(path, flags, 0, None)
            .with_context(|| format!("rustre open {path}"))
    }

    fn pwrite(&self, f: &Fd, buf: &[u8], offset: u64) -> anyhow::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .client
                .pwrite(*f, &buf[done..], offset + done as u64)
                .with_context(|| format!("rustre pwrite of {} bytes at {offset}", buf.len()))?;
            if n == 0 {
                bail!("rustre pwrite at {offset}: wrote nothing");
            }
            done += n;
        }
        Ok(())
    }

    fn pread(&self, f: &Fd, buf: &mut [u8], offset: u64) -> anyhow::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .client
                .pread(*f, &mut buf[done..], offset + done as u64)
                .with_context(|| format!("rustre pread of {} bytes at {offset}", buf.len()))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn fsync(&self, f: &Fd) -> anyhow::Result<()> {
        self.client.fsync(*f).context("rustre fsync")?;
        Ok(())
    }

    fn close(&self, f: Fd) -> anyhow::Result<()> {
        self.client.close(f).context("rustre close")?;
        Ok(())
    }

    fn stat_size(&self, path: &str) -> anyhow::Result<u64> {
        Ok(self
            .client
            .stat(path)
            .with_context(|| format!("rustre stat {path}"))?
            .size)
    }

    fn unlink(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .unlink(path)
            .with_context(|| format!("rustre unlink {path}"))?;
        Ok(())
    }

    fn rmdir(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .rmdir(path)
            .with_context(|| format!("rustre rmdir {path}"))?;
        Ok(())
    }

    fn readdir(&self, path: &str) -> anyhow::Result<Vec<(Vec<u8>, bool)>> {
        let entries = self
            .client
            .read_dir_all(path)
            .with_context(|| format!("rustre readdir {path}"))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.name != b"." && e.name != b"..")
            .map(|e| (e.name, e.kind == FileKind::Directory))
            .collect())
    }
}

/// POSIX on a local directory (the baseline).
pub struct PosixFs;

impl Fs for PosixFs {
    type File = File;

    fn mkdir(&self, path: &str) -> anyhow::Result<()> {
        std::fs::create_dir(path).with_context(|| format!("mkdir {path}"))
    }

    fn create(&self, path: &str, exclusive: bool) -> anyhow::Result<File> {
        let mut o = OpenOptions::new();
        o.write(true);
        if exclusive {
            o.create_new(true);
        } else {
            o.create(true);
        }
        o.open(path).with_context(|| format!("create {path}"))
    }

    fn open_read(&self, path: &str) -> anyhow::Result<File> {
        File::open(path).with_context(|| format!("open {path}"))
    }

    fn pwrite(&self, f: &File, buf: &[u8], offset: u64) -> anyhow::Result<()> {
        f.write_all_at(buf, offset)
            .with_context(|| format!("pwrite of {} bytes at {offset}", buf.len()))
    }

    fn pread(&self, f: &File, buf: &mut [u8], offset: u64) -> anyhow::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let n = f
                .read_at(&mut buf[done..], offset + done as u64)
                .with_context(|| format!("pread of {} bytes at {offset}", buf.len()))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn fsync(&self, f: &File) -> anyhow::Result<()> {
        f.sync_all().context("fsync")
    }

    fn close(&self, f: File) -> anyhow::Result<()> {
        drop(f);
        Ok(())
    }

    fn stat_size(&self, path: &str) -> anyhow::Result<u64> {
        Ok(std::fs::metadata(path).with_context(|| format!("stat {path}"))?.len())
    }

    fn unlink(&self, path: &str) -> anyhow::Result<()> {
        std::fs::remove_file(path).with_context(|| format!("unlink {path}"))
    }

    fn rmdir(&self, path: &str) -> anyhow::Result<()> {
        std::fs::remove_dir(path).with_context(|| format!("rmdir {path}"))
    }

    fn readdir(&self, path: &str) -> anyhow::Result<Vec<(Vec<u8>, bool)>> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        for e in std::fs::read_dir(path).with_context(|| format!("readdir {path}"))? {
            let e = e.with_context(|| format!("readdir {path}"))?;
            let dir = e.file_type().with_context(|| format!("readdir {path}"))?.is_dir();
            out.push((e.file_name().as_bytes().to_vec(), dir));
        }
        Ok(out)
    }
}
