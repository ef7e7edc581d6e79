//! rustre bench suite: IO500-shaped phases and the baselines beside them
