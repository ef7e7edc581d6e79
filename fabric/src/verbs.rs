//! Verbs provider.
