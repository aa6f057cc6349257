//! One part of a large table (`plan::RowRange`) copied by dbsync itself: `COPY (SELECT … WHERE
//! <range>) TO STDOUT` in the export snapshot, relayed into `COPY … FROM STDIN` on the copy, so
//! several parts of one table load at once. Each attempt loads in one transaction whose id is
//! kept: a retry first asks the server what became of the previous attempt's transaction (it may
//! have committed just before the connection broke) and copies the part again only if it did not
//! commit. So a part is never loaded twice, whether it has a key range or a block range (rows in
//! the copy have their own `ctid`s, so no range could be deleted there).

use std::time::{Duration, Instant};

use super::{Job, database_attempt_error};
use crate::catalog::{self, TransactionOutcome};
use crate::plan::Unit;
use crate::scheduler::AttemptError;

/// How long a retry waits for the previous attempt's transaction to end on the server.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

/// One attempt at copying a part. Returns the rows loaded (0 when an earlier attempt turns out
/// to have committed).
pub async fn relay_part(job: &Job, unit: &Unit) -> Result<u64, AttemptError> {
    job.check_snapshot()?;
    let part = unit.part.as_ref().expect("a part unit has its range");
    let table = &unit.tables[0];
    let range = (part.key.as_str(), part.lower, part.upper);
    let snapshot = job.snapshot.as_ref().expect("a sync has a snapshot");
    let previous = job
        .part_transactions
        .lock()
        .expect("part transactions")
        .get(&unit.index)
        .copied();
    let work = async {
        let (source, target) = tokio::try_join!(
            catalog::connect(&snapshot.source, "source"),
            catalog::connect(job.copy(), "target")
        )?;
        if let Some(transaction) = previous
            && outcome_once_ended(&target, transaction).await? == TransactionOutcome::Committed
        {
            return anyhow::Ok(0);
        }
        catalog::join_snapshot(&source, &snapshot.id).await?;
        // The text of every value as `pg_dump` writes it: exact, whatever the server's defaults.
        catalog::prepare_checksum_session(&source).await?;
        catalog::prepare_load_session(&target).await?;
        let transaction = catalog::begin_part_load(&target).await?;
        job.part_transactions
            .lock()
            .expect("part transactions")
            .insert(unit.index, transaction);
        let rows = catalog::relay_rows(&source, &target, table, &part.columns, Some(range), part.binary).await?;
        let values = catalog::sequence_values(&source, &part.sequences).await?;
        for (sequence, value) in part.sequences.iter().zip(values) {
            if let Some((value, called)) = value {
                catalog::set_sequence(&target, sequence, value, called).await?;
            }
        }
        catalog::commit(&target).await?;
        anyhow::Ok(rows)
    };
    tokio::select! {
        result = work => result.map_err(database_attempt_error),
        () = job.cancellation.cancelled() => Err(AttemptError::Cancelled),
    }
}

/// Whether `transaction` committed or aborted, once its backend has let go of it (a broken
/// connection's backend may take a moment to notice).
async fn outcome_once_ended(target: &tokio_postgres::Client, transaction: i64) -> anyhow::Result<TransactionOutcome> {
    let started = Instant::now();
    loop {
        let outcome = catalog::transaction_outcome(target, transaction).await?;
        if outcome != TransactionOutcome::InProgress {
            return Ok(outcome);
        }
        if started.elapsed() > OUTCOME_WAIT {
            anyhow::bail!(
                "a previous attempt's transaction {transaction} is still open on the target after {OUTCOME_WAIT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
