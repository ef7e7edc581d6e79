//! `ostd`: the object storage target daemon.

fn main() {}
