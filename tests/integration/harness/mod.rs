//! The test harness, in one place: throwaway servers (`servers`), running dbsync and reading what
//! it printed (`commands`), the fixtures and what a copy must share with its source (`compare`),
//! and fake client tools and signals (`fakes`).

pub mod commands;
pub mod compare;
pub mod fakes;
mod servers;

pub use servers::*;

/// How many rounds a soak or race loop runs: a few in the default suite, all of them with
/// `DBSYNC_SOAK=1` (what `scripts/soak.sh` sets).
pub fn soak_rounds(few: u32, all: u32) -> u32 {
    match std::env::var_os("DBSYNC_SOAK") {
        Some(_) => all,
        None => few,
    }
}
