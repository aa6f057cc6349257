//! Planner statistics carried over (PostgreSQL 18): `pg_dump --statistics-only` in the run's
//! snapshot, restored into the copy once its indexes exist, so that the copy is planned like the
//! source the moment it is swapped in, without waiting for `ANALYZE`.

use std::path::PathBuf;

use super::Job;
use crate::catalog::QualifiedName;
use crate::scheduler::AttemptError;
use crate::tools::run_tool;

/// The first major version whose `pg_dump` dumps, and whose server restores, statistics.
pub const FIRST_MAJOR: u32 = 18;

/// Where a run's (or an archive's) statistics dump is.
pub fn statistics_dump_path(job: &Job) -> PathBuf {
    job.dump_directory.join("statistics.dump")
}

/// One attempt at dumping the statistics of `tables` (every table's, for a whole database) in
/// the snapshot, into the run's directory.
pub async fn dump_statistics(job: &Job, tables: Option<&[QualifiedName]>) -> Result<(), AttemptError> {
    let mut dump = job
        .pg_dump()
        .arguments(["--format=custom", "--statistics-only", "--no-sync", "--file"])
        .argument(statistics_dump_path(job));
    for table in tables.unwrap_or_default() {
        dump = dump.argument("--table").argument(table.quoted());
    }
    run_tool(&dump, &job.cancellation, "dump the planner statistics").await?;
    Ok(())
}

/// One attempt at restoring the statistics dump of the run's directory into the copy.
pub async fn restore_statistics(job: &Job) -> Result<(), AttemptError> {
    let restore = job
        .pg_restore()
        .argument("--statistics-only")
        .argument(statistics_dump_path(job));
    run_tool(&restore, &job.cancellation, "restore the planner statistics").await?;
    job.make_loads_durable().await
}
