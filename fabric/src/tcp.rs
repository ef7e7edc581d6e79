//! TCP provider.
