//! `mdsd check`: the namespace consistency checker.

use crate::ns::{Body, Fid, Kind, Namespace, ObjRef, ROOT_FID};
use std::collections::HashMap;

/// Checks `ns`; returns one line per problem found (empty when consistent):
/// every entry's inode exists, link counts match the entries, no inode is unreachable,
/// directories' parent pointers match, every layout object was precreated and handed out (not
/// still in a pool), and no object is used twice.
pub fn check_namespace(ns: &Namespace) -> Vec<String> {
    let mut problems = Vec::new();
    let mut refs: HashMap<Fid, u32> = HashMap::new();
    let mut subdirs: HashMap<Fid, u32> = HashMap::new();
    for (fid, ino) in ns.iter() {
        if fid >= ns.next_fid() {
            problems.push(format!("inode {fid} is at or beyond the next fid {}", ns.next_fid()));
        }
        let Body::Dir(d) = &ino.body else { continue };
        for (name, child) in d.iter() {
            match ns.inode(child) {
                Err(_) => problems.push(format!("entry {name:?} in directory {fid} names missing inode {child}")),
                Ok(c) => {
                    *refs.entry(child).or_default() += 1;
                    if c.kind() == Kind::Dir {
                        *subdirs.entry(fid).or_default() += 1;
                        if let Some(cd) = c.dir()
                            && cd.parent != fid
                        {
                            problems.push(format!(
                                "directory {child} ({name:?}) is in {fid} but its parent is {}",
                                cd.parent
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut objects: HashMap<ObjRef, Fid> = HashMap::new();
    for (fid, ino) in ns.iter() {
        let n = refs.get(&fid).copied().unwrap_or(0);
        if fid == ROOT_FID {
            if ino.kind() != Kind::Dir {
                problems.push("the root is not a directory".into());
            }
            if n != 0 {
                problems.push(format!("the root is named by {n} entries"));
            }
        } else if n == 0 {
            problems.push(format!("orphan inode {fid} ({:?}): no entry names it", ino.kind()));
        }
        match ino.kind() {
            Kind::Dir => {
                if fid != ROOT_FID && n > 1 {
                    problems.push(format!("directory {fid} is named by {n} entries"));
                }
                let want = 2 + subdirs.get(&fid).copied().unwrap_or(0);
                if ino.nlink != want {
                    problems.push(format!(
                        "directory {fid} has nlink {} but {want} links exist",
                        ino.nlink
                    ));
                }
            }
            _ => {
                if fid != ROOT_FID && ino.nlink != n {
                    problems.push(format!("inode {fid} has nlink {} but {n} entries name it", ino.nlink));
                }
            }
        }
        if let Some(l) = ino.layout() {
            for o in l.objects.iter() {
                match ns.alloc.osts.get(&o.ost) {
                    None => problems.push(format!("inode {fid} uses object {:#x} on unknown OST{}", o.oid, o.ost)),
                    Some(p) => {
                        if !p.was_precreated(o.oid) {
                            problems.push(format!(
                                "inode {fid} uses object {:#x} on OST{} that was never precreated",
                                o.oid, o.ost
                            ));
                        } else if p.is_free(o.oid) {
                            problems.push(format!(
                                "inode {fid} uses object {:#x} on OST{} that is still in the pool",
                                o.oid, o.ost
                            ));
                        }
                    }
                }
                if let Some(other) = objects.insert(*o, fid) {
                    problems.push(format!(
                        "object {:#x} on OST{} is used by inodes {other} and {fid}",
                        o.oid, o.ost
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::{Cred, Inode, OpenFlags, WalRecord};

    #[test]
    fn finds_planted_problems() {
        let mut ns = Namespace::new(0);
        ns.apply(&WalRecord::Precreated {
            ost: 0,
            start: 1,
            count: 100,
        })
        .unwrap();
        let c = Cred::root();
        let d = ns.mkdir(&c, 0, ROOT_FID, "d", 0o755).unwrap().outcome.fid;
        let f = ns
            .open(&c, 0, d, "f", OpenFlags(OpenFlags::CREAT), 0o644, None)
            .unwrap()
            .fid;
        ns.link(&c, 0, f, ROOT_FID, "f2").unwrap();
        assert_eq!(check_namespace(&ns), Vec::<String>::new());
        // Wrong link count.
        ns.inodes.get_mut(&f).unwrap().nlink = 1;
        assert_eq!(check_namespace(&ns).len(), 1);
        ns.inodes.get_mut(&f).unwrap().nlink = 2;
        // An orphan reusing f's objects.
        let mut orphan: Inode = ns.inode(f).unwrap().clone();
        orphan.nlink = 1;
        ns.inodes.insert(999, orphan);
        let p = check_namespace(&ns);
        assert!(p.iter().any(|l| l.contains("orphan inode 999")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("used by inodes")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("beyond the next fid")), "{p:?}");
        ns.inodes.remove(&999);
        // A dangling entry.
        ns.inodes.get_mut(&d).unwrap().dir_mut().unwrap().insert("ghost", 5000);
        assert!(check_namespace(&ns).iter().any(|l| l.contains("missing inode 5000")));
    }
}
