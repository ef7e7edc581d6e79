//! Namespace operation tests, including "replay of the records gives the same state".

use super::ops::{Change, Opened};
use super::*;
use crate::codec::{Dec, Enc};

const T: i64 = 1_700_000_000_000_000_000;

fn ns_with_osts(n: u32) -> Namespace {
    let mut ns = Namespace::new(T);
    for ost in 0..n {
        ns.apply(&WalRecord::Precreated {
            ost,
            start: 1000,
            count: 100_000,
        })
        .unwrap();
    }
    ns
}

fn root() -> Cred {
    Cred::root()
}

fn create(ns: &mut Namespace, c: &Cred, parent: Fid, name: &str) -> Result<Fid, Errno> {
    ns.open(
        c,
        T,
        parent,
        name,
        OpenFlags(OpenFlags::CREAT | OpenFlags::EXCL | OpenFlags::RDWR),
        0o644,
        None,
    )
    .map(|o| o.fid)
}

/// A canonical, order-independent rendering of the whole state.
fn canon(ns: &Namespace) -> Vec<String> {
    let mut v: Vec<String> = ns
        .iter()
        .map(|(f, i)| {
            let body = match &i.body {
                Body::Dir(d) => {
                    let mut e: Vec<_> = d.iter().map(|(n, f)| format!("{n}={f}")).collect();
                    e.sort();
                    format!("dir p={} def={:?} {:?}", d.parent, d.default_layout, e)
                }
                b => format!("{b:?}"),
            };
            format!(
                "{f} {:o} {} {} {} {} {} {} {} {body}",
                i.mode, i.uid, i.gid, i.nlink, i.size, i.atime, i.mtime, i.ctime
            )
        })
        .collect();
    v.sort();
    v.push(format!(
        "next={} pools={:?}",
        ns.next_fid,
        ns.alloc
            .osts
            .iter()
            .map(|(k, p)| (k, &p.ranges, &p.ever))
            .collect::<Vec<_>>()
    ));
    v
}

#[test]
fn create_lookup_excl_trunc() {
    let mut ns = ns_with_osts(2);
    let c = root();
    let f = create(&mut ns, &c, ROOT_FID, "a").unwrap();
    assert_eq!(ns.lookup(&c, ROOT_FID, "a").unwrap().fid, f);
    assert_eq!(create(&mut ns, &c, ROOT_FID, "a"), Err(Errno::EEXIST));
    // O_CREAT without O_EXCL opens the existing file.
    let o = ns
        .open(
            &c,
            T,
            ROOT_FID,
            "a",
            OpenFlags(OpenFlags::CREAT | OpenFlags::RDWR),
            0o644,
            None,
        )
        .unwrap();
    assert_eq!((o.fid, o.created, o.change), (f, false, None));
    ns.close(&c, f, 4096, T + 5).unwrap();
    assert_eq!(ns.getattr(f).unwrap().size, 4096);
    // Size-on-close keeps the largest size any writer reported.
    ns.close(&c, f, 100, T + 6).unwrap();
    assert_eq!(ns.getattr(f).unwrap().size, 4096);
    let o = ns
        .open(
            &c,
            T + 10,
            ROOT_FID,
            "a",
            OpenFlags(OpenFlags::TRUNC | OpenFlags::WRONLY),
            0,
            None,
        )
        .unwrap();
    assert!(o.change.is_some());
    assert_eq!(ns.getattr(f).unwrap().size, 0);
    assert_eq!(
        ns.open(&c, T, ROOT_FID, "nope", OpenFlags(0), 0, None).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(ns.lookup(&c, ROOT_FID, "x/y").unwrap_err(), Errno::EINVAL);
    assert_eq!(
        ns.lookup(&c, ROOT_FID, &"n".repeat(256)).unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(ns.lookup(&c, f, "z").unwrap_err(), Errno::ENOTDIR);
}

#[test]
fn layouts_inherit_and_explicit() {
    let mut ns = ns_with_osts(4);
    let c = root();
    let d = ns.mkdir(&c, T, ROOT_FID, "d", 0o755).unwrap().outcome.fid;
    let t = LayoutTemplate {
        stripe_size: 4 << 20,
        stripe_count: -1,
        stripe_offset: -1,
    };
    ns.setstripe(&c, T, d, Some(t)).unwrap();
    let sub = ns.mkdir(&c, T, d, "sub", 0o755).unwrap().outcome.fid;
    let f = create(&mut ns, &c, sub, "f").unwrap();
    let (l, _) = ns.getstripe(f).unwrap();
    let l = l.unwrap();
    assert_eq!(l.stripe_size, 4 << 20);
    assert_eq!(
        l.objects.len(),
        4,
        "stripe count -1 = all OSTs, inherited two levels down"
    );
    let mut osts: Vec<u32> = l.objects.iter().map(|o| o.ost).collect();
    osts.sort();
    assert_eq!(osts, vec![0, 1, 2, 3]);
    // Explicit layout at create.
    let o = ns
        .open(
            &c,
            T,
            sub,
            "g",
            OpenFlags(OpenFlags::CREAT),
            0o644,
            Some(LayoutTemplate {
                stripe_size: 0,
                stripe_count: 2,
                stripe_offset: 1,
            }),
        )
        .unwrap();
    let l = ns.getstripe(o.fid).unwrap().0.unwrap();
    assert_eq!(l.stripe_size, 4 << 20);
    assert_eq!(l.objects.iter().map(|x| x.ost).collect::<Vec<_>>(), vec![1, 2]);
    // Delayed layout, then setstripe.
    let o = ns
        .open(
            &c,
            T,
            sub,
            "h",
            OpenFlags(OpenFlags::CREAT | OpenFlags::DELAY_LAYOUT),
            0o644,
            None,
        )
        .unwrap();
    assert_eq!(ns.getstripe(o.fid).unwrap().0, None);
    ns.setstripe(
        &c,
        T,
        o.fid,
        Some(LayoutTemplate {
            stripe_size: 0,
            stripe_count: 3,
            stripe_offset: -1,
        }),
    )
    .unwrap();
    assert_eq!(ns.getstripe(o.fid).unwrap().0.unwrap().objects.len(), 3);
    // Non-empty file with a layout: refused.
    ns.close(&c, o.fid, 10, T).unwrap();
    assert_eq!(ns.setstripe(&c, T, o.fid, Some(t)).unwrap_err(), Errno::EEXIST);
    // Clearing the default goes back to the fs default.
    ns.setstripe(&c, T, d, None).unwrap();
    let f2 = create(&mut ns, &c, sub, "f2").unwrap();
    assert_eq!(ns.getstripe(f2).unwrap().0.unwrap().objects.len(), 1);
    // Every object handed out is unique.
    let mut all: Vec<ObjRef> = ns
        .iter()
        .filter_map(|(_, i)| i.layout())
        .flat_map(|l| l.objects.iter().copied())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n);
}

#[test]
fn no_objects_is_eagain_and_no_osts_is_enospc() {
    let mut ns = Namespace::new(T);
    assert_eq!(create(&mut ns, &root(), ROOT_FID, "a"), Err(Errno::ENOSPC));
    ns.apply(&WalRecord::Precreated {
        ost: 0,
        start: 5,
        count: 1,
    })
    .unwrap();
    create(&mut ns, &root(), ROOT_FID, "a").unwrap();
    assert_eq!(create(&mut ns, &root(), ROOT_FID, "b"), Err(Errno::EAGAIN));
    assert!(
        ns.dir(ROOT_FID).unwrap().get("b").is_none(),
        "a failed create leaves nothing"
    );
}

#[test]
fn mkdir_rmdir_unlink_link_symlink() {
    let mut ns = ns_with_osts(1);
    let c = root();
    let d = ns.mkdir(&c, T, ROOT_FID, "d", 0o755).unwrap().outcome.fid;
    assert_eq!(ns.getattr(ROOT_FID).unwrap().nlink, 3);
    let f = create(&mut ns, &c, d, "f").unwrap();
    assert_eq!(ns.remove(&c, T, ROOT_FID, "d", true).unwrap_err(), Errno::ENOTEMPTY);
    assert_eq!(ns.remove(&c, T, ROOT_FID, "d", false).unwrap_err(), Errno::EISDIR);
    assert_eq!(ns.remove(&c, T, d, "f", true).unwrap_err(), Errno::ENOTDIR);
    assert_eq!(ns.link(&c, T, d, ROOT_FID, "dl").unwrap_err(), Errno::EPERM);
    ns.link(&c, T, f, ROOT_FID, "fl").unwrap();
    assert_eq!(ns.getattr(f).unwrap().nlink, 2);
    let ch = ns.remove(&c, T, d, "f", false).unwrap();
    assert!(ch.outcome.freed.is_empty(), "still linked");
    let ch = ns.remove(&c, T, ROOT_FID, "fl", false).unwrap();
    assert_eq!(ch.outcome.freed.len(), 1, "last link frees the objects");
    assert_eq!(ns.getattr(f).unwrap_err(), Errno::ENOENT);
    ns.remove(&c, T, ROOT_FID, "d", true).unwrap();
    assert_eq!(ns.getattr(ROOT_FID).unwrap().nlink, 2);
    let s = ns.symlink(&c, T, ROOT_FID, "s", "/some/where").unwrap().outcome.fid;
    assert_eq!(ns.readlink(s).unwrap(), "/some/where");
    assert_eq!(ns.getattr(s).unwrap().size, 11);
    assert_eq!(ns.readlink(ROOT_FID).unwrap_err(), Errno::EINVAL);
    assert_eq!(
        ns.open(&c, T, ROOT_FID, "s", OpenFlags(0), 0, None).unwrap_err(),
        Errno::ELOOP
    );
}

#[test]
fn rename_rules() {
    let mut ns = ns_with_osts(1);
    let c = root();
    let a = ns.mkdir(&c, T, ROOT_FID, "a", 0o755).unwrap().outcome.fid;
    let b = ns.mkdir(&c, T, a, "b", 0o755).unwrap().outcome.fid;
    let e = ns.mkdir(&c, T, ROOT_FID, "e", 0o755).unwrap().outcome.fid;
    let f = create(&mut ns, &c, ROOT_FID, "f").unwrap();
    let g = create(&mut ns, &c, ROOT_FID, "g").unwrap();
    // Into its own subtree.
    assert_eq!(ns.rename(&c, T, ROOT_FID, "a", b, "x").unwrap_err(), Errno::EINVAL);
    assert_eq!(ns.rename(&c, T, ROOT_FID, "a", a, "x").unwrap_err(), Errno::EINVAL);
    // Kind compatibility.
    assert_eq!(
        ns.rename(&c, T, ROOT_FID, "f", ROOT_FID, "e").unwrap_err(),
        Errno::EISDIR
    );
    assert_eq!(
        ns.rename(&c, T, ROOT_FID, "e", ROOT_FID, "f").unwrap_err(),
        Errno::ENOTDIR
    );
    assert_eq!(
        ns.rename(&c, T, ROOT_FID, "e", ROOT_FID, "a").unwrap_err(),
        Errno::ENOTEMPTY
    );
    // File over file frees the replaced file.
    let ch = ns.rename(&c, T, ROOT_FID, "f", ROOT_FID, "g").unwrap();
    assert_eq!(ch.outcome.freed.len(), 1);
    assert_eq!(ns.lookup(&c, ROOT_FID, "g").unwrap().fid, f);
    assert_eq!(ns.getattr(g).unwrap_err(), Errno::ENOENT);
    // Directory across parents: link counts and `..` follow.
    ns.rename(&c, T, a, "b", e, "b2").unwrap();
    assert_eq!(ns.getattr(a).unwrap().nlink, 2);
    assert_eq!(ns.getattr(e).unwrap().nlink, 3);
    assert_eq!(ns.dir(b).unwrap().parent, e);
    // Directory over an empty directory.
    ns.rename(&c, T, ROOT_FID, "a", e, "b2").unwrap();
    assert_eq!(ns.getattr(b).unwrap_err(), Errno::ENOENT);
    assert_eq!(ns.getattr(e).unwrap().nlink, 3);
    assert_eq!(ns.getattr(ROOT_FID).unwrap().nlink, 3);
    // Hard links to the same inode: a no-op.
    ns.link(&c, T, f, ROOT_FID, "f2").unwrap();
    ns.rename(&c, T, ROOT_FID, "g", ROOT_FID, "f2").unwrap();
    assert_eq!(ns.getattr(f).unwrap().nlink, 2);
    assert!(ns.lookup(&c, ROOT_FID, "g").is_ok());
    assert_eq!(
        ns.rename(&c, T, ROOT_FID, "zz", ROOT_FID, "y").unwrap_err(),
        Errno::ENOENT
    );
}

#[test]
fn permissions_and_sticky_bit() {
    let mut ns = ns_with_osts(1);
    let r = root();
    let alice = Cred::user(1000, 1000);
    let bob = Cred::user(1001, 1001);
    assert_eq!(
        create(&mut ns, &alice, ROOT_FID, "x"),
        Err(Errno::EACCES),
        "root dir is 0755 root"
    );
    let tmp = ns.mkdir(&r, T, ROOT_FID, "tmp", 0o1777).unwrap().outcome.fid;
    let fa = create(&mut ns, &alice, tmp, "a").unwrap();
    assert_eq!(ns.getattr(fa).unwrap().uid, 1000);
    assert_eq!(ns.remove(&bob, T, tmp, "a", false).unwrap_err(), Errno::EPERM, "sticky");
    assert_eq!(
        ns.rename(&bob, T, tmp, "a", tmp, "b").unwrap_err(),
        Errno::EPERM,
        "sticky"
    );
    // Bob can read a 0644 file but not open it for writing.
    assert!(
        ns.open(&bob, T, tmp, "a", OpenFlags(OpenFlags::RDONLY), 0, None)
            .is_ok()
    );
    assert_eq!(
        ns.open(&bob, T, tmp, "a", OpenFlags(OpenFlags::WRONLY), 0, None)
            .unwrap_err(),
        Errno::EACCES
    );
    // Setattr rules.
    let chmod = SetattrRequest {
        mode: Some(0o600),
        ..Default::default()
    };
    assert_eq!(ns.setattr(&bob, T, fa, chmod).unwrap_err(), Errno::EPERM);
    ns.setattr(&alice, T, fa, chmod).unwrap();
    assert_eq!(
        ns.open(&bob, T, tmp, "a", OpenFlags(OpenFlags::RDONLY), 0, None)
            .unwrap_err(),
        Errno::EACCES
    );
    let chown = SetattrRequest {
        uid: Some(1001),
        ..Default::default()
    };
    assert_eq!(ns.setattr(&alice, T, fa, chown).unwrap_err(), Errno::EPERM);
    ns.setattr(&r, T, fa, chown).unwrap();
    let trunc = SetattrRequest {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(ns.setattr(&alice, T, fa, trunc).unwrap_err(), Errno::EACCES);
    // Search permission on the parent is needed for lookup.
    let priv_dir = ns.mkdir(&alice, T, tmp, "private", 0o700).unwrap().outcome.fid;
    create(&mut ns, &alice, priv_dir, "secret").unwrap();
    assert_eq!(ns.lookup(&bob, priv_dir, "secret").unwrap_err(), Errno::EACCES);
    assert_eq!(ns.readdir(&bob, priv_dir, 0, 10).unwrap_err(), Errno::EACCES);
    // Moving a directory to another parent needs write permission on it (its `..` changes).
    let bobs = ns.mkdir(&bob, T, tmp, "bobs", 0o777).unwrap().outcome.fid;
    ns.mkdir(&alice, T, tmp, "ro", 0o555).unwrap();
    assert_eq!(ns.rename(&alice, T, tmp, "ro", bobs, "p").unwrap_err(), Errno::EACCES);
    ns.rename(&alice, T, tmp, "ro", tmp, "ro2").unwrap();
    assert_eq!(ns.rename(&bob, T, tmp, "private", bobs, "p").unwrap_err(), Errno::EPERM);
    ns.rename(&alice, T, tmp, "private", bobs, "p").unwrap();
}

#[test]
fn readdir_pages() {
    let mut ns = ns_with_osts(1);
    let c = root();
    for i in 0..250 {
        create(&mut ns, &c, ROOT_FID, &format!("f{i}")).unwrap();
    }
    let mut names = Vec::new();
    let mut cookie = COOKIE_START;
    let mut pages = 0;
    while cookie != COOKIE_EOF {
        let (es, next) = ns.readdir(&c, ROOT_FID, cookie, 100).unwrap();
        names.extend(es.into_iter().map(|e| e.name));
        cookie = next;
        pages += 1;
    }
    assert_eq!(pages, 3);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 250);
}

fn changes_of(o: Result<Opened, Errno>) -> Vec<WalRecord> {
    o.ok()
        .and_then(|o| o.change)
        .map(|c| vec![c.record])
        .unwrap_or_default()
}

fn ch(c: Result<Change, Errno>) -> Vec<WalRecord> {
    c.map(|c| vec![c.record]).unwrap_or_default()
}

#[test]
fn replaying_records_rebuilds_the_same_state_and_snapshot_roundtrips() {
    let mut ns = Namespace::new(T);
    let base = ns.clone();
    let mut log = Vec::new();
    for ost in 0..3 {
        let r = WalRecord::Precreated {
            ost,
            start: 10,
            count: 500,
        };
        ns.apply(&r).unwrap();
        log.push(r);
    }
    let c = root();
    let u = Cred::user(5, 5);
    let mut seed = 0x1234_5678_u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let dirs = [ROOT_FID];
    let mut dirs = dirs.to_vec();
    for i in 0..600 {
        let t = T + i;
        let d = dirs[rnd(dirs.len() as u64) as usize];
        let d2 = dirs[rnd(dirs.len() as u64) as usize];
        let name = format!("n{}", rnd(40));
        let name2 = format!("n{}", rnd(40));
        let cred = if rnd(4) == 0 { &u } else { &c };
        let recs = match rnd(9) {
            0 | 1 => changes_of(ns.open(
                cred,
                t,
                d,
                &name,
                OpenFlags(OpenFlags::CREAT | OpenFlags::TRUNC | OpenFlags::RDWR),
                0o666,
                None,
            )),
            2 => {
                let r = ns.mkdir(cred, t, d, &name, 0o777);
                if let Ok(c) = &r {
                    dirs.push(c.outcome.fid);
                }
                ch(r)
            }
            3 => ch(ns.remove(cred, t, d, &name, rnd(2) == 0)),
            4 => ch(ns.rename(cred, t, d, &name, d2, &name2)),
            5 => match ns.lookup(&c, d, &name) {
                Ok(a) => ch(ns.link(cred, t, a.fid, d2, &name2)),
                Err(_) => vec![],
            },
            6 => ch(ns.symlink(cred, t, d, &name, "target")),
            7 => match ns.lookup(&c, d, &name) {
                Ok(a) if a.kind == Kind::File => ch(ns.close(cred, a.fid, rnd(1 << 20), t)),
                Ok(a) => ch(ns.setattr(
                    cred,
                    t,
                    a.fid,
                    SetattrRequest {
                        mode: Some(0o700),
                        ..Default::default()
                    },
                )),
                Err(_) => vec![],
            },
            _ => ch(ns.setstripe(
                &c,
                t,
                d,
                Some(LayoutTemplate {
                    stripe_size: 0,
                    stripe_count: 2,
                    stripe_offset: -1,
                }),
            )),
        };
        dirs.retain(|f| ns.getattr(*f).is_ok());
        log.extend(recs);
    }
    assert!(log.len() > 200, "the storm did something: {}", log.len());
    // Replay through the encoded form.
    let mut replayed = base;
    for (i, r) in log.iter().enumerate() {
        let e = WalEntry {
            client: 7,
            xid: i as u64,
            opcode: 11,
            record: r.clone(),
        };
        let mut enc = Enc::new();
        e.encode(&mut enc);
        let back = WalEntry::decode(&mut Dec::new(&enc.buf, "rec")).unwrap();
        assert_eq!(back, e);
        replayed.apply(&back.record).unwrap();
    }
    assert_eq!(canon(&replayed), canon(&ns));
    let mut enc = Enc::new();
    ns.encode(&mut enc);
    let back = Namespace::decode(&mut Dec::new(&enc.buf, "snap")).unwrap();
    assert_eq!(canon(&back), canon(&ns));
    for cut in [0, 1, 10, enc.buf.len() / 2, enc.buf.len() - 1] {
        assert!(Namespace::decode(&mut Dec::new(&enc.buf[..cut], "snap")).is_err());
    }
}
