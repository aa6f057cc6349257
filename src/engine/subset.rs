//! `[subset]` in a sync: planned from the source's foreign keys before anything is created, its
//! rows chosen in the export snapshot once the copy exists (`steps::subset`), every table's
//! chosen rows copied by dbsync's own `COPY`, and the copy validated against what was chosen.

use std::sync::Arc;

use super::context::RunContext;
use super::preflight::Source;
use super::steps::{self, Job};
use super::{interruptible, step_error};
use crate::catalog;
use crate::errors::SyncError;
use crate::plan::{Plan, Unit};
use crate::report::{Event, Notice};
use crate::usage_error;

impl RunContext<'_> {
    /// PREFLIGHT: the subset's starts and links over `plan`, refused (exit 2) when it cannot be
    /// made; nothing without `[subset]`.
    pub(super) async fn plan_subset(&mut self, source: &Source, plan: &Plan) -> Result<(), SyncError> {
        let Some(subset) = self.settings.content.subset() else {
            return Ok(());
        };
        let keys = interruptible(&self.cancellation, catalog::key_columns(&source.client)).await?;
        let mut planned = subset
            .plan(plan, &source.inventory, &keys)
            .map_err(|error| usage_error!("config file: {error}"))?;
        // A wrong condition is refused now, not once the copy exists.
        for (index, start) in planned.starts.iter_mut().enumerate() {
            // A root as the config file names it (the starts `unreached = "whole"` adds follow).
            let written = subset
                .roots
                .get(index)
                .map_or_else(|| start.table.display_name(), |root| root.table.clone());
            let query = start.rows_sql(planned.seed);
            let asked = interruptible(&self.cancellation, async {
                Ok(catalog::planned_rows(&source.client, &query).await)
            });
            start.estimated_rows = asked.await?.map_err(|problem| {
                usage_error!("config file: [subset.tables.{written}] cannot choose rows on the source: {problem}")
            })?;
        }
        self.subset = Some(planned);
        Ok(())
    }

    /// The plan with every table's rows limited to the subset's: each copied by dbsync's own
    /// `COPY` (text, page by page of chosen rows). Refused if a table would still go through
    /// `pg_dump`, which cannot copy part of a table.
    pub(super) fn subset_rows(&self, plan: Plan) -> Result<Plan, SyncError> {
        if self.subset.is_none() {
            return Ok(plan);
        }
        if let Some(unit) = plan
            .units
            .iter()
            .find(|unit| unit.kind == crate::plan::UnitKind::Tables && !unit.copies_rows() && !unit.tables.is_empty())
        {
            return Err(usage_error!(
                "[subset] cannot copy part of {}: its columns cannot be read for dbsync's own COPY\nhint: leave it out with --exclude",
                unit.tables[0].display_name()
            ));
        }
        let units = plan.units.iter().map(|unit| Arc::new(chosen_only(unit))).collect();
        Ok(Plan { units, ..plan })
    }

    /// Chooses the subset's rows in the copy, before any unit copies them.
    pub(super) async fn choose_subset_rows(&self, job: &Job, plan: &Plan) -> Result<(), SyncError> {
        let Some(subset) = &self.subset else {
            return Ok(());
        };
        let (counts, rounds) = self
            .retried(job, "subset", |_| steps::subset::choose(job, subset))
            .await?;
        self.emit(chosen_notice(plan, &counts, rounds));
        Ok(())
    }

    /// A dump's subset, chosen into a source session of its own that the units then read
    /// (`Job::chosen_rows_session`); what it chose of each table is what the archive holds.
    pub(super) async fn choose_subset_on_source(&mut self, job: &Job, plan: &Plan) -> Result<(), SyncError> {
        let Some(subset) = &self.subset else {
            return Ok(());
        };
        let (session, (counts, rounds)) = self
            .retried(job, "subset", |_| steps::subset::choose_on_source(job, subset))
            .await?;
        let _ = job.chosen_rows_session.set(Arc::new(session));
        self.emit(chosen_notice(plan, &counts, rounds));
        self.keep_chosen_counts(plan, &counts);
        Ok(())
    }

    /// Once every unit is in: what the subset chose of each planned table (what validation
    /// expects), then its table of chosen rows dropped from the copy.
    pub(super) async fn finish_subset(&mut self, job: &Job, plan: &Plan) -> Result<(), SyncError> {
        if self.subset.is_none() {
            return Ok(());
        }
        if self.settings.verification == crate::settings::Verification::Checksum {
            let members = plan.members_with_oids();
            let masks = self.member_masks(plan);
            let differences = self
                .retried(job, "subset checksums", |_| {
                    steps::subset::checksum_chosen(job, &members, &masks)
                })
                .await?;
            self.subset_checksums = Some(differences);
        }
        let counts = job
            .on_copy(|client| async move {
                let counts = catalog::chosen_counts(&client, catalog::ChosenRows::InCopy).await?;
                catalog::drop_chosen_rows(&client, catalog::ChosenRows::InCopy).await?;
                Ok(counts)
            })
            .await
            .map_err(|error| step_error(&self.cancellation, error))?;
        self.keep_chosen_counts(plan, &counts);
        Ok(())
    }

    /// What the subset chose of each planned table (`counts`: of each table holding rows).
    fn keep_chosen_counts(&mut self, plan: &Plan, counts: &[(u32, i64)]) {
        let of = |oid: &u32| {
            counts
                .iter()
                .find(|(relation, _)| relation == oid)
                .map_or(0, |(_, rows)| *rows)
        };
        self.chosen_counts = Some(
            plan.tables
                .iter()
                .map(|table| table.member_oids.iter().map(of).sum())
                .collect(),
        );
    }

    /// `--data-only` with `[subset]`: the subset's rows chosen (with `source`, in the snapshot)
    /// into a temporary table of `session`, a session of the kept target's own for the run, so
    /// that nothing is left in the user's database whatever ends the run.
    pub(super) async fn choose_subset_in_session(
        &mut self,
        source: &tokio_postgres::Client,
        session: &tokio_postgres::Client,
        plan: &Plan,
    ) -> Result<(), SyncError> {
        let Some(subset) = &self.subset else {
            return Ok(());
        };
        let choosing = steps::subset::choose_with(source, (session, catalog::ChosenRows::InSession), subset);
        let (counts, rounds) = interruptible(&self.cancellation, choosing).await?;
        self.emit(chosen_notice(plan, &counts, rounds));
        self.keep_chosen_counts(plan, &counts);
        Ok(())
    }

    /// Validation's counts with the source's side replaced by what the subset chose.
    pub(super) fn against_subset(
        &self,
        mut counts: Vec<steps::validate::TableCount>,
    ) -> Vec<steps::validate::TableCount> {
        if let Some(chosen) = &self.chosen_counts {
            for (count, chosen) in counts.iter_mut().zip(chosen) {
                count.source = *chosen;
            }
        }
        counts
    }
}

/// What the subset chose (`counts`: rows of each table holding rows), in how many rounds: its
/// rows, and how many of the plan's tables (a partitioned table once) they belong to.
fn chosen_notice(plan: &Plan, counts: &[(u32, i64)], rounds: i32) -> Event {
    let tables = plan
        .tables
        .iter()
        .filter(|table| {
            counts
                .iter()
                .any(|(relation, rows)| *rows > 0 && table.member_oids.contains(relation))
        })
        .count();
    Event::Notice(Notice::SubsetChosen {
        rows: counts.iter().map(|(_, rows)| rows).sum::<i64>(),
        tables,
        rounds,
    })
}

/// `unit` with each of its row copies limited to the chosen rows, in text.
fn chosen_only(unit: &Unit) -> Unit {
    let only = |range: &crate::plan::RowRange| crate::plan::RowRange {
        subset: true,
        binary: false,
        ..range.clone()
    };
    Unit {
        part: unit.part.as_ref().map(only),
        batch: unit.batch.iter().map(only).collect(),
        ..unit.clone()
    }
}
