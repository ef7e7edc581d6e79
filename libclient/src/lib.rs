//! rustre client: striping engine, RPC engine, C ABI (librustre)
