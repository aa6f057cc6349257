//! Importing a unit: `pg_restore --data-only` into the copy, before any index, constraint or
//! trigger exists there. A retried import first empties what the failed attempt loaded.

use anyhow::Context;

use super::export::completed_dump;
use super::{Job, database_attempt_error, directory_size};
use crate::catalog::{self, Emptying};
use crate::plan::{Unit, UnitKind};
use crate::scheduler::AttemptError;
use crate::tools::run_tool;

/// One attempt at importing a unit; `attempt` counts from 1.
pub async fn import_unit(job: &Job, unit: &Unit, attempt: u32) -> Result<(), AttemptError> {
    let directory = completed_dump(job, unit)?;
    // A resumed run does not know how far the failed one got with this unit.
    if attempt > 1 || job.resuming {
        clean_up_partial_load(job, unit).await?;
    }
    let command = job.pg_restore().argument("--data-only").argument(&directory);
    run_tool(&command, &job.cancellation, &format!("import {}", unit.label())).await?;
    job.make_loads_durable().await?;
    finish_import(job, &directory);
    Ok(())
}

/// A unit's rows are in the copy: marked loaded (for a resume), and without `--keep-dumps` its
/// disk space goes back now, not at the end of the run.
pub fn finish_import(job: &Job, directory: &std::path::Path) {
    if job.record_progress {
        super::marks::set(directory, super::marks::UNIT_LOADED);
    }
    if !job.keep_dumps {
        let size = directory_size(directory);
        if std::fs::remove_dir_all(directory).is_ok() {
            job.dump_space.removed(size);
        }
    }
}

/// Returns the unit's tables on the target to empty, so the retry loads each row once.
pub async fn clean_up_partial_load(job: &Job, unit: &Unit) -> Result<(), AttemptError> {
    let what = match unit.kind {
        UnitKind::LargeObjects => Emptying::LargeObjects,
        UnitKind::Tables if unit.truncate_whole_tree => Emptying::Trees(&unit.truncate_before_retry),
        UnitKind::Tables => Emptying::Tables(&unit.truncate_before_retry),
    };
    let client = job.connect_to_copy().await?;
    catalog::empty(&client, what)
        .await
        .with_context(|| format!("cannot empty the tables of {} before retrying it", unit.label()))
        .map_err(database_attempt_error)
}
