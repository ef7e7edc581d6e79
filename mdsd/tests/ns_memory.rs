//! Memory per inode: 100,000 files in one directory must cost at most 512 bytes each, counting
//! the inode, its directory entry and its layout, with malloc's per-chunk overhead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustre_mdsd::ns::{Cred, Namespace, OpenFlags, ROOT_FID, WalRecord};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

/// Counts, per thread, the bytes malloc really hands out (usable size plus its 8-byte header).
struct Counting;

fn cost(p: *mut u8) -> i64 {
    // SAFETY: `p` was returned by the system allocator and is not yet freed.
    (unsafe { libc::malloc_usable_size(p.cast()) } + 8) as i64
}

// SAFETY: delegates to the system allocator; only adds bookkeeping in a thread-local counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let _ = LIVE.try_with(|c| c.set(c.get() + cost(p)));
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - cost(p)));
        // SAFETY: `p` came from `alloc` with the same layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn hundred_thousand_files_fit_in_512_bytes_each() {
    let mut ns = Namespace::new(0);
    ns.apply(&WalRecord::Precreated {
        ost: 0,
        start: 1,
        count: 1 << 30,
    })
    .unwrap();
    ns.apply(&WalRecord::Precreated {
        ost: 1,
        start: 1,
        count: 1 << 30,
    })
    .unwrap();
    let names: Vec<String> = (0..100_000).map(|i| format!("file.{i:08}")).collect();
    let before = LIVE.with(|c| c.get());
    let cred = Cred::root();
    for (i, n) in names.iter().enumerate() {
        ns.open(
            &cred,
            i as i64,
            ROOT_FID,
            n,
            OpenFlags(OpenFlags::CREAT | OpenFlags::EXCL),
            0o644,
            None,
        )
        .unwrap();
    }
    let after = LIVE.with(|c| c.get());
    let per = (after - before) as f64 / names.len() as f64;
    eprintln!("bytes per inode (inode + entry + layout): {per:.1}");
    assert!(per <= 512.0, "{per} bytes per inode");
    assert_eq!(ns.inode_count(), 100_001);
}
