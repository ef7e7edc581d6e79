//! Compiles `proto/rustre.proto` into Rust with prost-build, parsing it with protox so that no
//! `protoc` binary is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rustre.proto");
    let fds = protox::compile(["rustre.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    config.compile_fds(fds)?;
    Ok(())
}
