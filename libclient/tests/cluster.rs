//! Whole-cluster tests: the client against real mdsd and ostd services in this process, on tcp
//! and on the sim fabric.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, RO, RW, RW_CREATE, layout, pattern};
use rustre::{Client, ClientError, FileKind, OpenFlags};

fn read_all(c: &Client, path: &str) -> Vec<u8> {
    let fd = c.open(path, RO, 0, None).unwrap();
    let size = c.fstat(fd).unwrap().size as usize;
    let mut buf = vec![0xAAu8; size + 4096];
    let n = c.pread(fd, &mut buf, 0).unwrap();
    c.close(fd).unwrap();
    assert_eq!(n, size, "{path}: read {n} of {size} bytes");
    buf.truncate(n);
    buf
}

fn namespace_and_io(c: &Client) {
    c.mkdir("/d", 0o755, None).unwrap();
    let fd = c.open("/d/f", RW_CREATE, 0o644, Some(&layout(64, 4))).unwrap();
    let data = pattern(1, 0, 1 << 20);
    assert_eq!(c.pwrite(fd, &data, 0).unwrap(), data.len());
    let mut back = vec![0u8; data.len()];
    assert_eq!(c.pread(fd, &mut back, 0).unwrap(), data.len());
    assert!(back == data, "striped read back differs");
    let mut w = vec![0u8; 100_003];
    assert_eq!(c.pread(fd, &mut w, 65_535).unwrap(), w.len());
    assert!(w[..] == data[65_535..65_535 + 100_003]);
    let mut tail = vec![0u8; 4096];
    assert_eq!(c.pread(fd, &mut tail, (1 << 20) - 10).unwrap(), 10);
    assert_eq!(c.pread(fd, &mut tail, 5 << 20).unwrap(), 0);
    assert_eq!(c.fstat(fd).unwrap().size, 1 << 20);
    c.close(fd).unwrap();
    let a = c.stat("/d/f").unwrap();
    assert_eq!(a.kind, FileKind::Regular);
    assert_eq!(a.size, 1 << 20);
    assert_eq!(a.layout.as_ref().unwrap().geometry.stripe_count(), 4);
    let info = c.getstripe("/d/f").unwrap();
    assert_eq!((info.spec.stripe_size, info.objects.len()), (65536, 4));
    let names: Vec<_> = c.read_dir_all("/d").unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&b"f".to_vec()), "{names:?}");

    // Errors, typed and mapped to errno.
    let excl = OpenFlags {
        excl: true,
        ..RW_CREATE
    };
    assert_eq!(c.open("/d/f", excl, 0o644, None).unwrap_err().errno(), libc::EEXIST);
    assert_eq!(c.open("/d/missing", RO, 0, None).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(c.stat("/nope/f").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(c.stat("/d/f/x").unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(
        c.open("/d/f/x", RW_CREATE, 0o644, None).unwrap_err().errno(),
        libc::ENOTDIR
    );
    assert_eq!(c.open("/d", RW, 0, None).unwrap_err().errno(), libc::EISDIR);
    assert_eq!(c.open("/", RO, 0, None).unwrap_err().errno(), libc::EISDIR);
    assert_eq!(c.mkdir("/d", 0o755, None).unwrap_err().errno(), libc::EEXIST);
    assert_eq!(c.rmdir("/d").unwrap_err().errno(), libc::ENOTEMPTY);
    assert_eq!(c.unlink("/d").unwrap_err().errno(), libc::EISDIR);
    assert_eq!(c.rmdir("/d/f").unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(c.opendir("/d/f").unwrap_err().errno(), libc::ENOTDIR);

    // Rename, symlink, unlink, rmdir.
    c.rename("/d/f", "/d/g").unwrap();
    assert_eq!(c.stat("/d/f").unwrap_err().errno(), libc::ENOENT);
    c.symlink("/d", "/link").unwrap();
    assert!(read_all(c, "/link/g") == data, "path through a symlink");
    assert!(read_all(c, "/d/../d/./g") == data);
    c.unlink("/d/g").unwrap();
    c.unlink("/link").unwrap();
    c.rmdir("/d").unwrap();
    assert!(c.read_dir_all("/").unwrap().is_empty());
    let fs = c.statfs().unwrap();
    assert_eq!(fs.fsname, common::FSNAME);
    assert!(fs.total_bytes > 0);
}

#[test]
fn namespace_and_striped_io_tcp() {
    let cl = Cluster::start("tcp", 4, 64 << 20);
    namespace_and_io(&cl.client());
}

#[test]
fn namespace_and_striped_io_sim() {
    let cl = Cluster::start("sim", 4, 64 << 20);
    namespace_and_io(&cl.client());
}

/// Path walks: the client sends the names of a path up to the next `..` in one lookup (at most
/// 32), the MDS stops after a symbolic link. Every way a walk can go must still resolve as
/// POSIX says.
#[test]
fn path_walks_through_links_dots_and_deep_trees() {
    let cl = Cluster::start("sim", 1, 16 << 20);
    let c = cl.client();
    // 40 levels: more names than one lookup carries.
    let mut deep = String::new();
    for i in 0..40 {
        deep.push_str(&format!("/l{i}"));
        c.mkdir(&deep, 0o755, None).unwrap();
    }
    let fd = c.open(&format!("{deep}/f"), RW_CREATE, 0o644, None).unwrap();
    c.pwrite(fd, b"deep", 0).unwrap();
    c.close(fd).unwrap();
    assert_eq!(read_all(&c, &format!("{deep}/f")), b"deep");
    assert_eq!(c.stat(&format!("{deep}/../l39/./f")).unwrap().size, 4);
    assert_eq!(c.stat(&format!("{deep}/nope/f")).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(c.stat(&format!("{deep}/f/x")).unwrap_err().errno(), libc::ENOTDIR);

    // Links in the middle (relative and absolute), at the end (followed by stat, not by lstat),
    // and `..` after a link (from the link's target, as the kernel resolves it).
    c.symlink("l0/l1/l2", "/rel").unwrap();
    c.symlink("/l0/l1", "/l0/abs").unwrap();
    c.symlink("../l1/l2/l3", "/l0/l1/up").unwrap();
    assert_eq!(c.stat("/rel/l3").unwrap().fid, c.stat("/l0/l1/l2/l3").unwrap().fid);
    assert_eq!(c.stat("/l0/abs/l2").unwrap().fid, c.stat("/l0/l1/l2").unwrap().fid);
    assert_eq!(
        c.stat("/l0/l1/up/l4").unwrap().fid,
        c.stat("/l0/l1/l2/l3/l4").unwrap().fid
    );
    assert_eq!(c.stat("/rel/..").unwrap().fid, c.stat("/l0/l1").unwrap().fid);
    assert_eq!(c.stat("/l0/abs/../l1").unwrap().fid, c.stat("/l0/l1").unwrap().fid);
    assert_eq!(c.lstat("/l0/abs").unwrap().kind, FileKind::Symlink);
    assert_eq!(c.stat("/l0/abs").unwrap().kind, FileKind::Directory);
    // A link to a link, a dangling one, a loop.
    c.symlink("/rel", "/rel2").unwrap();
    assert_eq!(c.stat("/rel2/l3").unwrap().fid, c.stat("/l0/l1/l2/l3").unwrap().fid);
    c.symlink("/nowhere/x", "/dangling").unwrap();
    assert_eq!(c.stat("/dangling").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(c.lstat("/dangling").unwrap().kind, FileKind::Symlink);
    c.symlink("/loop2", "/loop1").unwrap();
    c.symlink("/loop1", "/loop2").unwrap();
    assert_eq!(c.stat("/loop1/x").unwrap_err().errno(), libc::ELOOP);

    // Creates and unlinks carry their directory's names to the MDS, which refuses a link on
    // the way; the client then walks itself. Every route must land in the same directory.
    for (path, same) in [
        ("/l0/l1/l2/new", "/l0/l1/l2/new"),
        ("/rel/via-link", "/l0/l1/l2/via-link"),
        ("/l0/l1/up/l4/via-links", "/l0/l1/l2/l3/l4/via-links"),
        ("/l0/l1/../l1/l2/dotdot", "/l0/l1/l2/dotdot"),
    ] {
        let fd = c.open(path, RW_CREATE, 0o644, None).unwrap();
        c.close(fd).unwrap();
        assert_eq!(c.stat(same).unwrap().fid, c.stat(path).unwrap().fid, "{path}");
        c.unlink(path).unwrap();
        assert_eq!(c.stat(same).unwrap_err().errno(), libc::ENOENT, "{path}");
    }
    let deep_new = format!("{deep}/new");
    c.close(c.open(&deep_new, RW_CREATE, 0o644, None).unwrap()).unwrap();
    c.unlink(&deep_new).unwrap();
    assert_eq!(c.stat(&deep_new).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(
        c.open("/l0/nope/x", RW_CREATE, 0o644, None).unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(
        c.open(&format!("{deep}/f/x"), RW_CREATE, 0o644, None)
            .unwrap_err()
            .errno(),
        libc::ENOTDIR
    );
    assert_eq!(
        c.open(&format!("{deep}/f/x/y"), RW_CREATE, 0o644, None)
            .unwrap_err()
            .errno(),
        libc::ENOTDIR
    );
    assert_eq!(c.unlink("/l0/nope/x").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(c.unlink("/dangling/x").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(c.unlink("/loop1/x").unwrap_err().errno(), libc::ELOOP);
    assert_eq!(c.open("/", RO, 0, None).unwrap_err().errno(), libc::EISDIR);
    // Directories likewise.
    for (path, same) in [
        ("/l0/l1/l2/nd", "/l0/l1/l2/nd"),
        ("/rel/nd-link", "/l0/l1/l2/nd-link"),
        ("/l0/l1/../l1/nd-dots", "/l0/l1/nd-dots"),
    ] {
        let made = c.mkdir(path, 0o755, None).unwrap();
        assert_eq!(c.stat(same).unwrap().fid, made.fid, "{path}");
        c.rmdir(path).unwrap();
        assert_eq!(c.stat(same).unwrap_err().errno(), libc::ENOENT, "{path}");
    }
    assert_eq!(c.mkdir("/l0/nope/d", 0o755, None).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(c.rmdir(&format!("{deep}/f/d")).unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(c.rmdir("/l0/l1").unwrap_err().errno(), libc::ENOTEMPTY);

    // Renames carry both sides, symlinks their directory; each route lands where the plain
    // path says, and a failure names the side it is on.
    let f = c.stat(&format!("{deep}/f")).unwrap().fid;
    let mut at = format!("{deep}/f");
    for (to, same) in [
        ("/l0/l1/l2/r1", "/l0/l1/l2/r1"),
        ("/rel/r2", "/l0/l1/l2/r2"),
        ("/l0/l1/up/l4/r3", "/l0/l1/l2/l3/l4/r3"),
        ("/l0/l1/../l1/r4", "/l0/l1/r4"),
        ("/l0/abs/l2/r5", "/l0/l1/l2/r5"),
    ] {
        c.rename(&at, to).unwrap();
        assert_eq!(c.stat(same).unwrap().fid, f, "{to}");
        assert_eq!(c.stat(&at).unwrap_err().errno(), libc::ENOENT, "{at} -> {to}");
        at = to.to_string();
    }
    c.rename(&at, &format!("{deep}/f")).unwrap();
    assert_eq!(c.stat(&format!("{deep}/f")).unwrap().fid, f);
    let e = c.rename(&format!("{deep}/f"), "/l0/nope/f").unwrap_err();
    assert!(matches!(e, ClientError::NotFound(ref p) if p == "/l0/nope/f"), "{e}");
    let e = c.rename("/l0/nope/f", "/l0/f").unwrap_err();
    assert!(matches!(e, ClientError::NotFound(ref p) if p == "/l0/nope/f"), "{e}");
    assert_eq!(
        c.rename(&format!("{deep}/f"), "/loop1/f").unwrap_err().errno(),
        libc::ELOOP
    );
    assert_eq!(
        c.rename(&format!("{deep}/f/x"), "/l0/f").unwrap_err().errno(),
        libc::ENOTDIR
    );
    assert_eq!(
        c.stat(&format!("{deep}/f")).unwrap().fid,
        f,
        "nothing moved on a failure"
    );
    let l3 = c.stat("/l0/l1/l2/l3").unwrap().fid;
    for (target, path, same) in [
        ("l3", "/rel/sl", "/l0/l1/l2/sl"),
        ("l2/l3", "/l0/l1/../l1/sl", "/l0/l1/sl"),
        ("..", "/l0/l1/up/l4/sl", "/l0/l1/l2/l3/l4/sl"),
    ] {
        c.symlink(target, path).unwrap();
        assert_eq!(c.lstat(same).unwrap().kind, FileKind::Symlink, "{path}");
        assert_eq!(c.stat(path).unwrap().fid, l3, "{path}");
    }
    assert_eq!(c.symlink("x", "/l0/nope/sl").unwrap_err().errno(), libc::ENOENT);

    // open(2) follows a final link: relative (from the link's directory), absolute, chained;
    // a dangling one with O_CREAT creates its target; O_EXCL does not follow; a loop is ELOOP.
    c.symlink("f", &format!("{deep}/lf")).unwrap();
    c.symlink(&format!("{deep}/f"), "/abs-f").unwrap();
    c.symlink("abs-f", "/abs-f2").unwrap();
    c.symlink("../l1/l2", "/l0/l1/l2l").unwrap();
    for path in [format!("{deep}/lf"), "/abs-f".into(), "/abs-f2".into()] {
        assert_eq!(read_all(&c, &path), b"deep", "{path}");
    }
    c.symlink("l2/made-through", "/l0/l1/dl").unwrap();
    let fd = c.open("/l0/l1/dl", RW_CREATE, 0o644, None).unwrap();
    c.close(fd).unwrap();
    assert_eq!(c.stat("/l0/l1/l2/made-through").unwrap().kind, FileKind::Regular);
    assert_eq!(c.lstat("/l0/l1/dl").unwrap().kind, FileKind::Symlink);
    let excl = OpenFlags {
        excl: true,
        ..RW_CREATE
    };
    assert_eq!(c.open("/abs-f", excl, 0o644, None).unwrap_err().errno(), libc::EEXIST);
    assert_eq!(c.open("/loop1", RO, 0, None).unwrap_err().errno(), libc::ELOOP);
    assert_eq!(c.open("/l0/l1/l2l", RO, 0, None).unwrap_err().errno(), libc::EISDIR);
}

/// An MDS that does not announce path walks in its handshake (as an older one) gets none: it
/// refuses a request carrying one, so every call below would fail if the client sent them.
#[test]
fn no_walks_to_an_mds_that_does_not_announce_them() {
    let cl = Cluster::start_announcing("sim", 1, 16 << 20, 0);
    let c = cl.client();
    c.mkdir("/a", 0o755, None).unwrap();
    c.mkdir("/a/b", 0o755, None).unwrap();
    let fd = c.open("/a/b/f", RW_CREATE, 0o644, None).unwrap();
    c.pwrite(fd, b"walked", 0).unwrap();
    c.close(fd).unwrap();
    c.symlink("f", "/a/b/l").unwrap();
    assert_eq!(read_all(&c, "/a/b/l"), b"walked");
    c.rename("/a/b/f", "/a/g").unwrap();
    assert_eq!(read_all(&c, "/a/g"), b"walked");
    c.unlink("/a/b/l").unwrap();
    c.unlink("/a/g").unwrap();
    c.rmdir("/a/b").unwrap();
    assert_eq!(c.stat("/a").unwrap().nlink, 2);
}

/// Every stripe count 1..=8 with stripe sizes 64 KiB..4 MiB: a file covering every object more
/// than once, at an unaligned length, written in odd-sized chunks and read back whole and in
/// windows.
#[test]
fn stripe_counts_and_sizes() {
    let cl = Cluster::start("tcp", 8, 80 << 20);
    // Fewer I/O threads than objects for the wide layouts: the bounded fan-out path.
    let mut cfg = cl.config();
    cfg.limits.max_io_threads = 3;
    let c = Client::connect(cfg).unwrap();
    let mut k = 0u64;
    for count in 1..=8u32 {
        for size_kib in [64u32, 256, 1024, 4096] {
            if u64::from(size_kib) * 1024 * u64::from(count) > (16 << 20) && count % 3 != 0 {
                continue; // keep the biggest layouts to a few, the test fast
            }
            k += 1;
            let path = format!("/s{count}-{size_kib}");
            let len = (u64::from(size_kib) * 1024 * u64::from(count) + u64::from(size_kib) * 512 + 4097) as usize;
            let data = pattern(k, 0, len);
            let fd = c.open(&path, RW_CREATE, 0o644, Some(&layout(size_kib, count))).unwrap();
            let mut at = 0;
            for chunk in data.chunks(777_777) {
                c.pwrite(fd, chunk, at as u64).unwrap();
                at += chunk.len();
            }
            let mut back = vec![0u8; len];
            assert_eq!(c.pread(fd, &mut back, 0).unwrap(), len);
            assert!(back == data, "{path}: whole read differs");
            let mid = len / 3;
            let mut w = vec![0u8; len / 2];
            assert_eq!(c.pread(fd, &mut w, mid as u64).unwrap(), w.len());
            assert!(w[..] == data[mid..mid + w.len()], "{path}: window differs");
            c.close(fd).unwrap();
            assert_eq!(c.stat(&path).unwrap().size, len as u64, "{path}");
            let info = c.getstripe(&path).unwrap();
            assert_eq!(info.objects.len(), count as usize);
            let mut osts: Vec<u32> = info.objects.iter().map(|o| o.ost).collect();
            osts.sort_unstable();
            osts.dedup();
            assert_eq!(osts.len(), count as usize, "{path}: objects on distinct OSTs");
        }
    }
}

/// Random unaligned writes and reads against a byte model.
#[test]
fn unaligned_io_against_a_model() {
    let cl = Cluster::start("sim", 3, 64 << 20);
    let c = cl.client();
    let fd = c.open("/u", RW_CREATE, 0o644, Some(&layout(64, 3))).unwrap();
    let mut model = vec![0u8; 0];
    let mut rng = 0x1234_5678u64;
    let mut next = |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    for i in 0..60 {
        let off = next(900_000);
        let len = 1 + next(200_000) as usize;
        let data = pattern(i, off, len);
        c.pwrite(fd, &data, off).unwrap();
        let end = off as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
        let roff = next(model.len() as u64 + 1000) as usize;
        let rlen = 1 + next(300_000) as usize;
        let mut buf = vec![0xEEu8; rlen];
        let n = c.pread(fd, &mut buf, roff as u64).unwrap();
        let expect = model.len().saturating_sub(roff).min(rlen);
        assert_eq!(n, expect, "read at {roff} len {rlen}, file size {}", model.len());
        assert!(buf[..n] == model[roff..roff + n], "read at {roff} len {rlen} differs");
    }
    c.close(fd).unwrap();
    assert_eq!(c.stat("/u").unwrap().size, model.len() as u64);
}

/// Sparse files: holes read as zeros, inside a stripe, across whole stripes and objects never
/// written; the size comes from the furthest write.
#[test]
fn sparse_files_and_holes() {
    let cl = Cluster::start("tcp", 4, 64 << 20);
    let c = cl.client();
    let fd = c.open("/sparse", RW_CREATE, 0o644, Some(&layout(64, 4))).unwrap();
    let a = pattern(7, 100, 1000);
    let b = pattern(8, 10 << 20, 5000);
    c.pwrite(fd, &a, 100).unwrap();
    c.pwrite(fd, &b, 10 << 20).unwrap();
    let size = (10 << 20) + 5000;
    assert_eq!(c.fstat(fd).unwrap().size, size);
    let mut buf = vec![0xFFu8; size as usize + 100];
    assert_eq!(c.pread(fd, &mut buf, 0).unwrap() as u64, size);
    assert!(buf[..100].iter().all(|&x| x == 0));
    assert!(buf[100..1100] == a[..]);
    assert!(buf[1100..10 << 20].iter().all(|&x| x == 0), "hole reads as zeros");
    assert!(buf[10 << 20..size as usize] == b[..]);
    c.close(fd).unwrap();
    assert_eq!(c.stat("/sparse").unwrap().size, size);

    // A file whose only byte lives on its last object: the size still counts it.
    let fd = c.open("/last", RW_CREATE, 0o644, Some(&layout(64, 4))).unwrap();
    c.pwrite(fd, b"z", 3 * 65536 + 5).unwrap();
    c.close(fd).unwrap();
    let fd = c.open("/last", RO, 0, None).unwrap();
    let mut buf = vec![1u8; 1 << 20];
    assert_eq!(c.pread(fd, &mut buf, 0).unwrap(), 3 * 65536 + 6);
    assert_eq!(buf[3 * 65536 + 5], b'z');
    assert!(buf[..3 * 65536 + 5].iter().all(|&x| x == 0));
    c.close(fd).unwrap();
}

#[test]
fn truncate_shrinks_and_extends() {
    let cl = Cluster::start("sim", 3, 64 << 20);
    let c = cl.client();
    let data = pattern(3, 0, 700_000);
    let fd = c.open("/t", RW_CREATE, 0o644, Some(&layout(64, 3))).unwrap();
    c.pwrite(fd, &data, 0).unwrap();
    c.close(fd).unwrap();

    c.truncate("/t", 200_001).unwrap();
    assert_eq!(c.stat("/t").unwrap().size, 200_001);
    assert!(read_all(&c, "/t") == data[..200_001]);

    // Extend: the new part reads as zeros (old data beyond the cut is gone).
    c.truncate("/t", 500_000).unwrap();
    assert_eq!(c.stat("/t").unwrap().size, 500_000);
    let back = read_all(&c, "/t");
    assert!(back[..200_001] == data[..200_001]);
    assert!(back[200_001..].iter().all(|&x| x == 0), "extended part reads as zeros");

    // ftruncate on an open handle, then O_TRUNC.
    let fd = c.open("/t", RW, 0, None).unwrap();
    c.ftruncate(fd, 10).unwrap();
    assert_eq!(c.fstat(fd).unwrap().size, 10);
    c.close(fd).unwrap();
    assert!(read_all(&c, "/t") == data[..10]);
    let fd = c.open("/t", OpenFlags { trunc: true, ..RW }, 0, None).unwrap();
    assert_eq!(c.fstat(fd).unwrap().size, 0);
    c.close(fd).unwrap();
    assert_eq!(c.stat("/t").unwrap().size, 0);
    assert_eq!(c.truncate("/", 0).unwrap_err().errno(), libc::EISDIR);
}

/// Threads writing disjoint ranges of one file at once (one shared client and several clients),
/// then every byte checked.
#[test]
fn concurrent_writers_disjoint_ranges() {
    let cl = Cluster::start("tcp", 4, 64 << 20);
    let shared = cl.client();
    const REC: usize = 47_008;
    const PER: usize = 20;
    let fd0 = shared.open("/n1", RW_CREATE, 0o644, Some(&layout(64, 4))).unwrap();
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (shared, cl) = (&shared, &cl);
            s.spawn(move || {
                // Threads 0 and 1 share the client and its handle; 2 and 3 have their own.
                let own;
                let (c, fd) = if t < 2 {
                    (shared, fd0)
                } else {
                    own = cl.client();
                    let fd = own.open("/n1", RW, 0, None).unwrap();
                    (&own, fd)
                };
                for r in 0..PER {
                    let rec = r * 4 + t;
                    let off = (rec * REC) as u64;
                    c.pwrite(fd, &pattern(rec as u64, off, REC), off).unwrap();
                }
                if t >= 2 {
                    c.close(fd).unwrap();
                }
            });
        }
    });
    shared.close(fd0).unwrap();
    let all = read_all(&shared, "/n1");
    assert_eq!(all.len(), 4 * PER * REC);
    for rec in 0..4 * PER {
        let off = rec * REC;
        assert!(
            all[off..off + REC] == pattern(rec as u64, off as u64, REC)[..],
            "record {rec}"
        );
    }
}

/// stat(path) by one client sees the size another client's open, unclosed handle has written;
/// after the writer closes, the MDS's recorded size is used again without glimpsing.
#[test]
fn stat_sees_the_size_of_a_file_open_for_writing_elsewhere() {
    let cl = Cluster::start("tcp", 2, 64 << 20);
    let writer = cl.client();
    let reader = cl.client();
    let fd = writer.open("/w", RW_CREATE, 0o644, Some(&layout(64, 2))).unwrap();
    let a = reader.stat("/w").unwrap();
    assert!(a.open_for_write);
    assert_eq!(a.size, 0);
    writer.pwrite(fd, &pattern(3, 0, 100_000), 0).unwrap();
    let a = reader.stat("/w").unwrap();
    assert!(a.open_for_write);
    assert_eq!(a.size, 100_000);
    // A write in the second stripe further on grows it again; lstat agrees.
    writer.pwrite(fd, &pattern(4, 200_000, 5), 200_000).unwrap();
    assert_eq!(reader.stat("/w").unwrap().size, 200_005);
    assert_eq!(reader.lstat("/w").unwrap().size, 200_005);
    // A second writer handle and a reader handle: the file stays "open for writing" until the
    // last writer closes; readers do not count.
    let fd2 = reader.open("/w", RW, 0, None).unwrap();
    let ro = reader.open("/w", RO, 0, None).unwrap();
    writer.close(fd).unwrap();
    assert!(reader.stat("/w").unwrap().open_for_write);
    reader.close(fd2).unwrap();
    let a = reader.stat("/w").unwrap();
    assert!(!a.open_for_write);
    assert_eq!(a.size, 200_005);
    reader.close(ro).unwrap();
    assert!(!reader.stat("/w").unwrap().open_for_write);
}

/// O_APPEND writes from several threads of one client (two handles) never overlap: every
/// record lands whole, once, and the file is exactly their sum.
#[test]
fn appends_of_one_client_never_overlap() {
    let cl = Cluster::start("tcp", 2, 64 << 20);
    let c = cl.client();
    let append = OpenFlags {
        append: true,
        ..RW_CREATE
    };
    let fds = [
        c.open("/log", append, 0o644, Some(&layout(64, 2))).unwrap(),
        c.open("/log", append, 0o644, None).unwrap(),
    ];
    const REC: usize = 5000;
    const PER: usize = 12;
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (c, fd) = (&c, fds[usize::from(t) % 2]);
            s.spawn(move || {
                for i in 0..PER {
                    // Each record: its tag byte repeated (tags are unique per record).
                    let tag = 1 + t * PER as u8 + i as u8;
                    c.pwrite(fd, &vec![tag; REC], 0).unwrap();
                }
            });
        }
    });
    for fd in fds {
        c.close(fd).unwrap();
    }
    let all = read_all(&c, "/log");
    assert_eq!(all.len(), 4 * PER * REC);
    let mut seen = std::collections::HashSet::new();
    for rec in all.chunks(REC) {
        assert!(rec.iter().all(|&b| b == rec[0]), "a record was overwritten in part");
        assert!(seen.insert(rec[0]), "record {} written twice", rec[0]);
    }
}

/// Stop every server, start them again on the same devices: the namespace and the data are there.
#[test]
fn restart_keeps_data() {
    for fabric in ["tcp", "sim"] {
        let mut cl = Cluster::start(fabric, 2, 64 << 20);
        let data = pattern(9, 0, 3_000_001);
        {
            let c = cl.client();
            c.mkdir("/keep", 0o700, Some(&layout(128, 2))).unwrap();
            let fd = c.open("/keep/a", RW_CREATE, 0o600, None).unwrap();
            c.pwrite(fd, &data, 0).unwrap();
            c.fsync(fd).unwrap();
            c.close(fd).unwrap();
            c.disconnect();
        }
        cl.restart();
        let c = cl.client();
        let a = c.stat("/keep/a").unwrap();
        assert_eq!(a.size, data.len() as u64, "{fabric}");
        assert_eq!(
            a.layout.unwrap().geometry.stripe_size(),
            128 * 1024,
            "inherited from the directory"
        );
        assert!(read_all(&c, "/keep/a") == data, "{fabric}: data after restart");
    }
}

/// The client tries the MDS addresses in order (a dead first one is skipped), and a client that
/// was connected across a restart of every server reconnects and carries on (sim keeps the
/// addresses; an open file keeps working).
#[test]
fn failover_list_and_reconnect_after_restart() {
    let mut cl = Cluster::start("sim", 2, 64 << 20);
    let mut cfg = cl.config();
    cfg.mds.insert(0, "sim://nobody-listens-here".parse().unwrap());
    let c = Client::connect(cfg).unwrap();
    let data = pattern(11, 0, 300_000);
    let fd = c.open("/survivor", RW_CREATE, 0o644, Some(&layout(64, 2))).unwrap();
    c.pwrite(fd, &data, 0).unwrap();
    c.fsync(fd).unwrap();

    cl.restart();

    let mut back = vec![0u8; data.len()];
    assert_eq!(
        c.pread(fd, &mut back, 0).unwrap(),
        data.len(),
        "the open file works after the restart"
    );
    assert!(back == data);
    c.pwrite(fd, &data, data.len() as u64).unwrap();
    c.close(fd).unwrap();
    assert_eq!(c.stat("/survivor").unwrap().size, 2 * data.len() as u64);

    // Disconnecting closes what is still open, so the size written is reported.
    let fd = c.open("/left-open", RW_CREATE, 0o644, None).unwrap();
    c.pwrite(fd, &data, 1000).unwrap();
    c.disconnect();
    assert_eq!(cl.client().stat("/left-open").unwrap().size, 1000 + data.len() as u64);
}
