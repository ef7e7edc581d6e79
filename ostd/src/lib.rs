//! rustre object storage target: io_uring block I/O over raw devices, object service.

pub mod dev;
