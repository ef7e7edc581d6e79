//! Simulated provider.
