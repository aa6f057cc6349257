//! Streaming a unit (`--stream`): `pg_dump -Fc` piped straight into `pg_restore --data-only`, in
//! the same snapshot and with the same retries as the two-step export and import, but without a
//! dump file: for hosts that have no disk room for one.

use super::import::clean_up_partial_load;
use super::{Job, export};
use crate::plan::Unit;
use crate::process::{self, ChildOutput};
use crate::scheduler::AttemptError;
use crate::tools::{judge, process_attempt_error};

/// One attempt at copying a unit; `attempt` counts from 1.
pub async fn stream_unit(job: &Job, unit: &Unit, attempt: u32) -> Result<(), AttemptError> {
    job.check_snapshot()?;
    if attempt > 1 {
        clean_up_partial_load(job, unit).await?;
    }
    // Uncompressed: the archive only crosses a pipe, and compressing it would cost CPU both ways.
    let dump = export::select_unit(
        job.pg_dump()
            .arguments(["--format=custom", "--compress=0", "--data-only"]),
        unit,
    );
    let restore = job.pg_restore().argument("--data-only");
    let (dump_output, restore_output) = process::run_piped(&dump, &restore, &job.cancellation)
        .await
        .map_err(process_attempt_error)?;
    let label = unit.label();
    let dumped = judge(&dump, &dump_output, &format!("export {label}"));
    let restored = judge(&restore, &restore_output, &format!("import {label}"));
    match (dumped, restored) {
        (Ok(()), Ok(())) => job.make_loads_durable().await,
        // When pg_restore stops first, pg_dump only sees a closed pipe: pg_restore's error is the cause.
        (Err(dump_error), Err(restore_error)) if died_of_closed_pipe(&dump_output) => {
            Err(either_transient(restore_error, dump_error))
        }
        // When pg_dump fails, pg_restore only sees a cut-off archive: pg_dump's error is the cause.
        (Err(dump_error), Err(restore_error)) => Err(either_transient(dump_error, restore_error)),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
    }
}

fn died_of_closed_pipe(output: &ChildOutput) -> bool {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal() == Some(nix::libc::SIGPIPE)
        || output.stderr.contains("Broken pipe")
        || output.stderr.contains("could not write to output file")
}

/// Keeps the cause's message, but retries when either side's failure is worth retrying.
fn either_transient(cause: AttemptError, other: AttemptError) -> AttemptError {
    match (cause, other) {
        (AttemptError::Permanent(error), AttemptError::Transient(_)) => AttemptError::Transient(error),
        (cause, _) => cause,
    }
}
