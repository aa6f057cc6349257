//! The modes, each a type over the run context holding what only it does. A mode file imports
//! no other mode file: what two modes share lives beside `modes/` (`copy`, `source`,
//! `row_copy`, …).

pub mod diff;
pub mod dump;
pub mod incremental;
pub mod merge;
pub mod migrate;
pub mod preview;
pub mod refresh;
pub mod restore;
pub mod sync;
pub mod verify;
