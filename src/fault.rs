//! Faults injected on purpose, to test that one failing actor costs only itself.
//!
//! Only debug builds (the ones `cargo test` runs) look at the
//! `TORRENT_ACTORS_INJECT_FAULT` variable, a comma-separated list of fault points; a
//! release build never fails on purpose, whatever its environment says.

/// The variable naming the faults to inject.
pub const FAULT_ENV: &str = "TORRENT_ACTORS_INJECT_FAULT";

/// Whether the fault point `point` is to fail now.
pub fn injected(point: &str) -> bool {
    if cfg!(debug_assertions) {
        std::env::var(FAULT_ENV).is_ok_and(|v| v.split(',').any(|p| p.trim() == point))
    } else {
        false
    }
}
