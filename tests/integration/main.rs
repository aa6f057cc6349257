//! Integration tests: dbsync against real PostgreSQL servers started by `harness`.

mod architecture;
mod archives;
mod clone;
mod diff;
mod docs;
mod dump;
mod faults;
mod fidelity;
mod harness;
mod help;
mod hooks;
mod incremental;
mod masking;
mod merge;
mod migrate;
mod modes;
mod plan;
mod progress;
mod resume;
mod roles;
mod settings;
mod split;
mod subset;
mod usage;
mod verify;
mod versions;

pub use harness::commands::*;
pub use harness::compare::*;
