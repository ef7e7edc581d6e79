//! Whole-cluster tests: the client against real mdsd and ostd services in this process, on tcp
//! and on the sim fabric.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, pattern};
use rustre::{Client, FileKind, LayoutSpec, OpenFlags};

const RW_CREATE: OpenFlags = OpenFlags { read: true, write: true, create: true, excl: false, trunc: false, append: false };
const RO: OpenFlags = OpenFlags { read: true, write: false, create: false, excl: false, trunc: false, append: false };

fn layout(size_kib: u32, count: u32) -> LayoutSpec {
    LayoutSpec { stripe_size: size_kib * 1024, stripe_count: count, stripe_offset: -1 }
}

fn namespace_and_io(c: &Client) {
    c.mkdir("/d", 0o755, None).unwrap();
    let fd = c.open("/d/f", RW_CREATE, 0o644, Some(&layout(64, 4))).unwrap();
    let data = pattern(1, 0, 1 << 20);
    assert_eq!(c.pwrite(fd, &data, 0).unwrap(), data.len());
    let mut back = vec![0u8; data.len()];
    assert_eq!(c.pread(fd, &mut back, 0).unwrap(), data.len());
    assert!(back == data, "striped read back differs");
    // Unaligned window inside.
    let mut w = vec![0u8; 100_003];
    assert_eq!(c.pread(fd, &mut w, 65_535).unwrap(), w.len());
    assert!(w[..] == data[65_535..65_535 + 100_003]);
    // Past the end: short read.
    let mut tail = vec![0u8; 4096];
    assert_eq!(c.pread(fd, &mut tail, (1 << 20) - 10).unwrap(), 10);
    assert_eq!(c.pread(fd, &mut tail, 5 << 20).unwrap(), 0);
    assert_eq!(c.fstat(fd).unwrap().size, 1 << 20);
    c.close(fd).unwrap();
    let a = c.stat("/d/f").unwrap();
    assert_eq!(a.kind, FileKind::Regular);
    assert_eq!(a.size, 1 << 20);
    assert_eq!(a.layout.as_ref().unwrap().geometry.stripe_count(), 4);
    let names: Vec<_> = c.read_dir_all("/d").unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&b"f".to_vec()), "{names:?}");
}

#[test]
fn namespace_and_striped_io_tcp() {
    let cl = Cluster::start("tcp", 4, 64 << 20);
    namespace_and_io(&cl.client());
}
