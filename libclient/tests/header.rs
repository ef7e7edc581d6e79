//! `include/rustre.h` is generated from `src/ffi.rs` by cbindgen and committed; this test fails
//! when it is stale. `RUSTRE_BLESS_HEADER=1` rewrites it.

use std::path::Path;

#[test]
fn header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi.rs"))
        .generate()
        .expect("cbindgen parses src/ffi.rs");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = dir.join("include/rustre.h");
    if std::env::var_os("RUSTRE_BLESS_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write include/rustre.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "libclient/include/rustre.h is stale: run RUSTRE_BLESS_HEADER=1 cargo test -p rustre-client --test header \
         and commit it"
    );
}
