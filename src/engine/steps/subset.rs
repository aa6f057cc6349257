//! `[subset]`'s rows chosen in the export snapshot: the roots' rows, then, round by round, the
//! rows the last round's rows are linked to by the keys the subset follows, until a round adds
//! none (cycles and self-references end there, each row being chosen once). The rows are kept
//! on the target as the source's `(table, ctid)` (`catalog::subset`), page by page, so that
//! memory does not grow with the subset; the rows are then copied table by table.

use super::Job;
use super::relay::{source_in_snapshot, until_cancelled};
use crate::catalog::{self, ChosenRows, QualifiedName, SUBSET_BATCH};
use crate::report::VerifyDifference;
use crate::scheduler::AttemptError;
use crate::subset::SubsetPlan;

/// How many rows of each table (by the source's oid) a subset chose, and in how many rounds.
pub type Chosen = (Vec<(u32, i64)>, i32);

/// One attempt at choosing the subset's rows into the copy.
pub async fn choose(job: &Job, subset: &SubsetPlan) -> Result<Chosen, AttemptError> {
    job.check_snapshot()?;
    let work = async {
        let (source, target) = tokio::try_join!(source_in_snapshot(job), catalog::connect(job.copy(), "target"))?;
        choose_with(&source, (&target, ChosenRows::InCopy), subset).await
    };
    until_cancelled(job, work).await
}

/// One attempt at choosing a dump's subset: there is no copy, so the chosen rows are kept in a
/// temporary table of a source session of their own (returned, for the units that write the rows
/// out), which goes with the session whatever ends the run.
pub async fn choose_on_source(
    job: &Job,
    subset: &SubsetPlan,
) -> Result<(tokio_postgres::Client, Chosen), AttemptError> {
    job.check_snapshot()?;
    let work = async {
        let snapshot = job.snapshot.as_ref().expect("a dump has a snapshot");
        let (source, keeper) = tokio::try_join!(source_in_snapshot(job), catalog::connect(&snapshot.source, "source"))?;
        let chosen = choose_with(&source, (&keeper, ChosenRows::InSession), subset).await?;
        Ok((keeper, chosen))
    };
    until_cancelled(job, work).await
}

/// Chooses the subset's rows with `source` (in the snapshot) into `target`'s table of chosen
/// rows, which it makes anew (an earlier attempt's rows may be there).
pub async fn choose_with(
    source: &tokio_postgres::Client,
    (target, place): (&tokio_postgres::Client, ChosenRows),
    subset: &SubsetPlan,
) -> anyhow::Result<Chosen> {
    catalog::drop_chosen_rows(target, place).await?;
    catalog::create_chosen_rows(target, place).await?;
    let mut added = 0;
    for start in &subset.starts {
        added += catalog::choose_rows(source, (target, place), &start.rows_sql(subset.seed), 0).await?;
    }
    let mut round = 0;
    while added > 0 {
        added = follow_round(source, (target, place), subset, round).await?;
        round += 1;
    }
    Ok((catalog::chosen_counts(target, place).await?, round))
}

/// The rows the links lead to from the rows chosen in `round`, chosen in the next; returns how
/// many were new.
async fn follow_round(
    source: &tokio_postgres::Client,
    target: (&tokio_postgres::Client, ChosenRows),
    subset: &SubsetPlan,
    round: i32,
) -> anyhow::Result<u64> {
    let mut added = 0;
    let mut after = None;
    loop {
        let page = catalog::chosen_in_round(target, round, after.as_ref()).await?;
        let Some(last) = page.last().cloned() else {
            return Ok(added);
        };
        for (relation, tids) in by_relation(&page) {
            for link in &subset.links {
                let Some((_, from)) = link.from.iter().find(|(oid, _)| *oid == relation) else {
                    continue;
                };
                let query = catalog::linked_query(
                    (from, &link.from_columns),
                    (&link.to, &link.to_columns, link.to_partitioned),
                    &tids,
                );
                added += catalog::choose_rows(source, target, &query, round + 1).await?;
            }
        }
        if page.len() < SUBSET_BATCH {
            return Ok(added);
        }
        after = Some(last);
    }
}

/// A page's rows (in relation order) grouped by relation.
fn by_relation(page: &[(u32, String)]) -> Vec<(u32, Vec<String>)> {
    let mut groups: Vec<(u32, Vec<String>)> = Vec::new();
    for (relation, tid) in page {
        match groups.last_mut() {
            Some((last, tids)) if last == relation => tids.push(tid.clone()),
            _ => groups.push((*relation, vec![tid.clone()])),
        }
    }
    groups
}

/// One attempt at comparing the copy's rows with the rows the subset chose, table by table
/// (`checksum::compare_chosen`), once they are loaded, while the copy still holds the chosen rows.
pub async fn checksum_chosen(
    job: &Job,
    members: &[(QualifiedName, u32)],
    masks: &[Vec<(String, String)>],
) -> Result<Vec<VerifyDifference>, AttemptError> {
    job.check_snapshot()?;
    let work = async {
        let (source, copy) = tokio::try_join!(source_in_snapshot(job), catalog::connect(job.copy(), "target"))?;
        super::checksum::compare_chosen(&source, &copy, (&copy, ChosenRows::InCopy), members, masks).await
    };
    until_cancelled(job, work).await
}
