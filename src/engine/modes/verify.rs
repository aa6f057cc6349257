//! `dbsync verify`: the source and the target compared without copying — each selected table's
//! rows (counted, or with `--checksum` hashed), each sequence's state, the large objects — each
//! side read in one consistent snapshot. Exit 0 when equal, 3 when not.

use std::sync::Arc;

use crate::catalog::{self};
use crate::connection::Endpoint;
use crate::engine::context::FreeSlots;
use crate::engine::steps::checksum::{self, ColumnChoice, Sessions, checksum_differences};
use crate::engine::{RunContext, interruptible};
use crate::errors::SyncError;
use crate::plan::Plan;
use crate::report::{Reporter, VerifyDifference, VerifyReport};
use crate::scheduler::Cancellation;
use crate::settings::{Places, Settings, Verification};

/// `dbsync verify`: the run context, used for its source inspection and session grant.
pub(in crate::engine) struct Verify<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) target: &'a Endpoint,
    /// Which columns `--checksum` hashes (`--common-columns`: those both sides have).
    pub(in crate::engine) columns: ColumnChoice,
}

pub async fn verify(
    settings: &Settings,
    reporter: Arc<dyn Reporter>,
    cancellation: Cancellation,
    columns: ColumnChoice,
) -> Result<VerifyReport, SyncError> {
    let Places::Databases { source, target } = &settings.places else {
        return Err(crate::usage_error!(
            "dbsync verify compares a source database with a target database"
        ));
    };
    let mut mode = Verify {
        context: RunContext::new(settings, reporter, cancellation),
        source,
        target,
        columns,
    };
    mode.run().await
}

type SideReading = (Vec<Option<i64>>, Vec<Option<String>>, (i64, String));

impl Verify<'_> {
    pub(in crate::engine) async fn run(&mut self) -> Result<VerifyReport, SyncError> {
        let (source, plan, _) = self.context.inspect_source(self.source).await?;
        self.context.plan_subset(&source, &plan).await?;
        let target =
            Arc::new(interruptible(&self.context.cancellation, catalog::connect(self.target, "target")).await?);
        let target_free = interruptible(&self.context.cancellation, catalog::free_connection_slots(&target)).await?;
        let free = FreeSlots {
            source: Some(source.free_slots),
            target: Some(target_free),
        };
        let mut warnings: Vec<String> = self.context.grant_jobs(free)?.iter().map(ToString::to_string).collect();
        let sessions = interruptible(
            &self.context.cancellation,
            self.consistent_reads(&source.client, &target),
        )
        .await?;
        let read = |client: Arc<tokio_postgres::Client>| {
            let names: Vec<_> = plan.tables.iter().map(|table| table.name.clone()).collect();
            let sequences = plan.sequences.clone();
            async move {
                let rows = catalog::row_counts_where_present(&client, &names).await?;
                let sequences = catalog::sequence_states(&client, &sequences).await?;
                let large_objects = catalog::large_objects_digest(&client).await?;
                anyhow::Ok((rows, sequences, large_objects))
            }
        };
        let both = async { tokio::try_join!(read(source.client.clone()), read(target.clone())) };
        let (mut source_side, target_side) = interruptible(&self.context.cancellation, both).await?;
        let chosen = self.choose_subset(&source.client, &plan).await?;
        if let Some((_, counts)) = &chosen {
            // The target should hold what the subset chooses, not the source's whole tables.
            source_side.0 = counts.iter().map(|count| Some(*count)).collect();
        }
        let mut differences = read_differences(&plan, &source_side, &target_side);
        if let (Some((session, _)), Some(_)) = (&chosen, &sessions) {
            let compare = self.compare_chosen(&source.client, &target, session, &plan);
            differences.extend(interruptible(&self.context.cancellation, compare).await?);
        } else if let Some((source_sessions, target_sessions)) = &sessions {
            let counted: Vec<String> = differences.iter().map(|difference| difference.name.clone()).collect();
            let members = plan.members();
            let masks = self.context.member_masks(&plan);
            let compared = interruptible(
                &self.context.cancellation,
                checksum::compare(source_sessions, target_sessions, &members, &masks, self.columns),
            )
            .await?;
            warnings.extend(compared.left_out.iter().map(|left_out| {
                format!(
                    "the checksums compared only the columns both sides have: {}",
                    left_out.describe()
                )
            }));
            let found = checksum_differences(&members, &compared.comparisons);
            // A table already found by its count is named once.
            let position = differences
                .iter()
                .filter(|difference| difference.kind == "table")
                .count();
            differences.splice(
                position..position,
                found
                    .into_iter()
                    .filter(|difference| !counted.contains(&difference.name)),
            );
        }
        Ok(VerifyReport {
            source: self.source.to_string(),
            target: self.target.to_string(),
            tables: plan.tables.len(),
            sequences: plan.sequences.len(),
            checksums: sessions.is_some(),
            differences,
            warnings,
        })
    }

    /// `[subset]`: the rows it chooses in the source's snapshot (`source`, in its consistent
    /// read), kept in a temporary table of a target session of their own (returned, with what it
    /// chose of each planned table).
    async fn choose_subset(
        &mut self,
        source: &tokio_postgres::Client,
        plan: &Plan,
    ) -> Result<Option<(tokio_postgres::Client, Vec<i64>)>, SyncError> {
        if self.context.subset.is_none() {
            return Ok(None);
        }
        let session = interruptible(&self.context.cancellation, catalog::connect(self.target, "target")).await?;
        self.context.choose_subset_in_session(source, &session, plan).await?;
        let counts = self.context.chosen_counts.clone().unwrap_or_default();
        Ok(Some((session, counts)))
    }

    /// `--checksum` with `[subset]`: each table's chosen rows (on the source, masked columns
    /// hashed as a copy holds them) against the target's rows, by count and sum of row hashes.
    async fn compare_chosen(
        &self,
        source: &tokio_postgres::Client,
        target: &tokio_postgres::Client,
        session: &tokio_postgres::Client,
        plan: &Plan,
    ) -> anyhow::Result<Vec<VerifyDifference>> {
        catalog::set_mask_salt(source, self.context.settings.masking.salt.as_deref()).await?;
        let members = plan.members_with_oids();
        let masks = self.context.member_masks(plan);
        checksum::compare_chosen(
            source,
            target,
            (session, catalog::ChosenRows::InSession),
            &members,
            &masks,
        )
        .await
    }

    /// Opens a repeatable-read transaction on both sides; with `--checksum`, the sessions that
    /// hash the rows, sharing each side's snapshot.
    async fn consistent_reads(
        &self,
        source: &tokio_postgres::Client,
        target: &tokio_postgres::Client,
    ) -> anyhow::Result<Option<(Sessions, Sessions)>> {
        let settings = self.context.settings;
        catalog::begin_consistent_read(source).await?;
        catalog::begin_consistent_read(target).await?;
        if settings.verification != Verification::Checksum {
            return Ok(None);
        }
        let snapshots = (
            catalog::export_current_snapshot(source).await?,
            catalog::export_current_snapshot(target).await?,
        );
        let jobs = self.context.granted_jobs();
        let sessions = tokio::try_join!(
            Sessions::open(self.source, "source", jobs, Some(&snapshots.0)),
            Sessions::open(self.target, "target", jobs, Some(&snapshots.1))
        )?;
        sessions.0.set_mask_salt(settings.masking.salt.as_deref()).await?;
        Ok(Some(sessions))
    }
}

/// Counts, sequences and large objects that differ.
fn read_differences(plan: &Plan, source: &SideReading, target: &SideReading) -> Vec<VerifyDifference> {
    let mut differences = Vec::new();
    let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "missing".to_string());
    let rows = |value: &Option<i64>| show(&value.map(|rows| format!("{rows} rows")));
    for ((table, source), target) in plan.tables.iter().zip(&source.0).zip(&target.0) {
        if source != target {
            differences.push(VerifyDifference::new(
                "table",
                table.name.display_name(),
                rows(source),
                rows(target),
            ));
        }
    }
    for ((sequence, source), target) in plan.sequences.iter().zip(&source.1).zip(&target.1) {
        if source != target {
            differences.push(VerifyDifference::new(
                "sequence",
                sequence.display_name(),
                show(source),
                show(target),
            ));
        }
    }
    if plan.copy_large_objects && source.2 != target.2 {
        // Ids, owners and contents in one digest: equal counts can still differ.
        let describe = |(count, digest): &(i64, String)| format!("{count}, digest {}", &digest[..digest.len().min(8)]);
        differences.push(VerifyDifference::new(
            "large objects",
            "(all)".into(),
            describe(&source.2),
            describe(&target.2),
        ));
    }
    differences
}
