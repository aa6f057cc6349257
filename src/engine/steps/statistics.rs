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

fn statistics_dump_path(job: &Job) -> PathBuf {
    job.dump_directory.join("statistics.dump")
}

/// One attempt at dumping the statistics of `tables` (every table's, for a whole database) in
/// the snapshot and restoring them into the copy.
pub async fn copy_statistics(job: &Job, tables: Option<&[QualifiedName]>) -> Result<(), AttemptError> {
    let path = statistics_dump_path(job);
    let mut dump = job
        .pg_dump()
        .arguments(["--format=custom", "--statistics-only", "--no-sync", "--file"])
        .argument(&path);
    for table in tables.unwrap_or_default() {
        dump = dump.argument("--table").argument(table.quoted());
    }
    run_tool(&dump, &job.cancellation, "dump the planner statistics").await?;
    let restore = job.pg_restore().argument("--statistics-only").argument(&path);
    let restored = run_tool(&restore, &job.cancellation, "restore the planner statistics").await;
    let _ = std::fs::remove_file(&path);
    restored?;
    job.make_loads_durable().await
}
