//! `mdsd`: the rustre metadata server.

fn main() {}
