//! rustre metadata server: single-threaded namespace, WAL, checkpoint, layouts
