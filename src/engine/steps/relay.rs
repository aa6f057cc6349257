//! One part of a large table (`plan::RowRange`) copied by dbsync itself: `COPY (SELECT … WHERE
//! <range>) TO STDOUT` in the export snapshot, relayed into `COPY … FROM STDIN` on the copy, so
//! several parts of one table load at once. One `COPY` per attempt: a failed attempt loads
//! nothing, and a retry first deletes exactly its range (in case the failure came after the
//! commit), never the whole table.

use super::{Job, database_attempt_error};
use crate::catalog;
use crate::plan::Unit;
use crate::scheduler::AttemptError;

/// One attempt at copying a part; `attempt` counts from 1. Returns the rows loaded.
pub async fn relay_part(job: &Job, unit: &Unit, attempt: u32) -> Result<u64, AttemptError> {
    job.check_snapshot()?;
    let part = unit.part.as_ref().expect("a part unit has its range");
    let table = &unit.tables[0];
    let range = (part.key.as_str(), part.lower, part.upper);
    let snapshot = job.snapshot.as_ref().expect("a sync has a snapshot");
    let work = async {
        let (source, target) = tokio::try_join!(
            catalog::connect(&snapshot.source, "source"),
            catalog::connect(job.copy(), "target")
        )?;
        catalog::join_snapshot(&source, &snapshot.id).await?;
        // The text of every value as `pg_dump` writes it: exact, whatever the server's defaults.
        catalog::prepare_checksum_session(&source).await?;
        catalog::prepare_load_session(&target).await?;
        if attempt > 1 {
            catalog::delete_range(&target, table, range).await?;
        }
        let rows = catalog::relay_rows(&source, &target, table, &part.columns, Some(range), part.binary).await?;
        let values = catalog::sequence_values(&source, &part.sequences).await?;
        for (sequence, value) in part.sequences.iter().zip(values) {
            if let Some((value, called)) = value {
                catalog::set_sequence(&target, sequence, value, called).await?;
            }
        }
        anyhow::Ok(rows)
    };
    tokio::select! {
        result = work => result.map_err(database_attempt_error),
        () = job.cancellation.cancelled() => Err(AttemptError::Cancelled),
    }
}
