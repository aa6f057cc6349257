//! Post-data, after every row is loaded: indexes, constraints, foreign keys, triggers, policies and
//! materialized-view refreshes, restored in parallel. Foreign keys that point out of a partial
//! selection are held back and handled by the configured policy.

use std::collections::HashSet;
use std::path::Path;

use super::{Job, archive_listing, database_attempt_error, run_tool};
use crate::catalog::{self, quote_identifier};
use crate::cli::ForeignKeyPolicy;
use crate::plan::Plan;
use crate::scheduler::{AttemptError, StepError, with_retries};

/// Restores post-data; returns warnings about foreign keys that were skipped or weakened.
pub async fn restore(job: &Job, schema_dump: &Path, plan: &Plan) -> Result<Vec<String>, StepError> {
    let held_back: HashSet<u32> = match plan.foreign_key_policy {
        ForeignKeyPolicy::IncludeParent => HashSet::new(),
        _ => plan.dangling_foreign_keys.iter().map(|key| key.oid).collect(),
    };
    let mut command = job
        .pg_restore()
        .argument("--section=post-data")
        .argument(format!("--jobs={}", job.jobs.max(1)));
    if !held_back.is_empty() {
        let list = write_filtered_list(job, schema_dump, &held_back)
            .await
            .map_err(StepError::Failed)?;
        command = command.argument("--use-list").argument(list);
    }
    command = command.argument(schema_dump);
    // Not retried: a second run over half-built indexes would fail on "already exists".
    match run_tool(&command, &job.cancellation, "build indexes, constraints and triggers").await {
        Ok(_) => {}
        Err(AttemptError::Cancelled) => return Err(StepError::Cancelled),
        Err(AttemptError::Transient(error) | AttemptError::Permanent(error)) => return Err(StepError::Failed(error)),
    }

    let mut warnings = Vec::new();
    for key in &plan.dangling_foreign_keys {
        let description = format!(
            "foreign key {} on {} references {}, whose data is not copied",
            key.name, key.table, key.referenced_table
        );
        match plan.foreign_key_policy {
            ForeignKeyPolicy::IncludeParent => {}
            ForeignKeyPolicy::Skip => warnings.push(format!("{description}: left out (--foreign-keys skip)")),
            ForeignKeyPolicy::NotValid if key.on_partitioned_table => warnings.push(format!(
                "{description}: left out, because NOT VALID is not possible on a partitioned table"
            )),
            ForeignKeyPolicy::NotValid => {
                let definition = if key.definition.ends_with("NOT VALID") {
                    key.definition.clone()
                } else {
                    format!("{} NOT VALID", key.definition)
                };
                let statement = format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {definition}",
                    key.table.quoted(),
                    quote_identifier(&key.name)
                );
                with_retries(
                    job.retry_policy,
                    &job.cancellation,
                    |_, _, _| {},
                    |_| async {
                        let client = catalog::connect(&job.work_target, "target")
                            .await
                            .map_err(database_attempt_error)?;
                        client.batch_execute(&statement).await.map_err(|error| {
                            AttemptError::Permanent(anyhow::anyhow!(
                                "cannot create foreign key {} NOT VALID: {}",
                                key.name,
                                catalog::describe_error(&error)
                            ))
                        })
                    },
                )
                .await?;
                warnings.push(format!(
                    "{description}: created NOT VALID (existing rows are not checked)"
                ));
            }
        }
    }
    Ok(warnings)
}

/// The archive's table of contents without the held-back foreign keys, for `--use-list`.
async fn write_filtered_list(
    job: &Job,
    schema_dump: &Path,
    held_back: &HashSet<u32>,
) -> anyhow::Result<std::path::PathBuf> {
    let listing = match archive_listing(job, schema_dump).await {
        Ok(listing) => listing,
        Err(AttemptError::Transient(error) | AttemptError::Permanent(error)) => return Err(error),
        Err(AttemptError::Cancelled) => anyhow::bail!("cancelled"),
    };
    let kept: Vec<&str> = listing
        .lines()
        .filter(|line| {
            // "4012; 2606 16502 FK CONSTRAINT public orders orders_user_fkey owner"
            let words: Vec<&str> = line.split_whitespace().take(5).collect();
            let is_held_back = words.len() == 5
                && words[3] == "FK"
                && words[4] == "CONSTRAINT"
                && words[2].parse::<u32>().is_ok_and(|oid| held_back.contains(&oid));
            !is_held_back
        })
        .collect();
    let path = job.dump_directory.join("post-data.list");
    std::fs::write(&path, kept.join("\n") + "\n")?;
    Ok(path)
}
