//! `dbsync sync --data-only`: the target database and its schema are kept; each selected table's
//! rows are replaced by the source's (read in one snapshot) inside one transaction per table, so
//! an interrupted refresh leaves every table either as it was or fully refreshed. Foreign keys
//! and triggers do not fire for these writes; sequences are set; the rows are validated like a
//! sync's. `--fix-schema` first adds what the target lacks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

use crate::catalog::{self, QualifiedName};
use crate::connection::Endpoint;
use crate::engine::row_copy::{RefreshedTable, linked_groups, row_copy_event};
use crate::engine::steps::checksum::Sessions;
use crate::engine::steps::committed_unless_stopped;
use crate::engine::{RunContext, interruptible};
use crate::errors::SyncError;
use crate::hooks::HookStage;
use crate::plan::Plan;
use crate::report::{Event, Notice, Phase, TableLine, Warning};
use crate::scheduler::share_out;

/// `[subset]`'s session holding the chosen rows, and each table's oid on the source.
type Chosen<'a> = (&'a Client, &'a HashMap<QualifiedName, u32>);

/// `sync --data-only`: the run context and the kept target it refreshes.
pub(in crate::engine) struct Refresh<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) target: &'a Endpoint,
}

impl Refresh<'_> {
    pub(in crate::engine) async fn run(
        &mut self,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<(), SyncError> {
        let (source, plan, _) = self.context.inspect_source(self.source).await?;
        self.context.plan_subset(&source, &plan).await?;
        let (target, tables) = self.context.fitted_kept_target(&source, self.target, &plan).await?;
        if self.context.settings.dry_run {
            self.context.emit(Event::Notice(Notice::DryRunDone));
            return Ok(());
        }
        self.announce_refresh(&plan, started_at);
        self.context.run_hooks(HookStage::BeforeSync, self.target).await?;
        self.context.run_hooks(HookStage::AfterSchema, self.target).await?;
        let snapshot = self.context.take_snapshot(&source, &plan).await?;
        self.context.emit(Event::Phase(Phase::RefreshData));
        let (source_sessions, target_sessions) = self
            .context
            .row_copy_sessions(self.source, self.target, &snapshot)
            .await?;
        let planned_of = |table: &RefreshedTable| {
            plan.tables
                .iter()
                .position(|planned| planned.members.contains(&table.name))
        };
        let groups = linked_groups(&plan, &source.inventory, &tables, planned_of);
        let chosen = self.choose_subset(&source_sessions, &plan).await?;
        let chosen = chosen.as_ref().map(|(session, oids)| (session, oids));
        self.refresh_tables(&source_sessions, &target_sessions, &groups, chosen)
            .await?;
        self.context.set_sequences(&source.client, &target, &plan).await?;
        if let Some((session, _)) = &chosen {
            self.checksum_chosen(&source_sessions, &target, session, &plan).await?;
        }
        self.context.emit(Event::Phase(Phase::RefreshValidation));
        self.context
            .validate_refresh(self.target, &source.client, &target, &plan, &source_sessions)
            .await?;
        self.context.run_hooks(HookStage::AfterImport, self.target).await
    }

    /// `[subset]`: its rows chosen into a temporary table of a session of their own on the
    /// target (returned, with each table's oid on the source), before any table is emptied.
    async fn choose_subset(
        &mut self,
        source: &Sessions,
        plan: &Plan,
    ) -> Result<Option<(Client, HashMap<QualifiedName, u32>)>, SyncError> {
        if self.context.subset.is_none() {
            return Ok(None);
        }
        let session = interruptible(&self.context.cancellation, catalog::connect(self.target, "target")).await?;
        let snapshot_session = &source.clients()[0];
        self.context
            .choose_subset_in_session(snapshot_session, &session, plan)
            .await?;
        let oids = plan.members_with_oids().into_iter().collect();
        Ok(Some((session, oids)))
    }

    /// `[subset]` with `--verify checksum`: each table's chosen rows (the source's, in the
    /// snapshot) against the refreshed target's, kept for validation.
    async fn checksum_chosen(
        &mut self,
        source: &Sessions,
        target: &Client,
        session: &Client,
        plan: &Plan,
    ) -> Result<(), SyncError> {
        if self.context.settings.verification != crate::settings::Verification::Checksum {
            return Ok(());
        }
        let members = plan.members_with_oids();
        let masks = self.context.member_masks(plan);
        let chosen = (session, catalog::ChosenRows::InSession);
        let compare =
            crate::engine::steps::checksum::compare_chosen(&source.clients()[0], target, chosen, &members, &masks);
        let differences = interruptible(&self.context.cancellation, compare).await?;
        self.context.subset_checksums = Some(differences);
        Ok(())
    }

    /// What is refreshed, and the consent to it.
    fn announce_refresh(&mut self, plan: &Plan, started_at: chrono::DateTime<chrono::Local>) {
        self.context
            .announce_row_copy(crate::report::RunKind::Refresh, plan, started_at);
        // Only a partial refresh leaves tables out whose rows may reference what it replaces.
        if !plan.whole_database {
            self.context.warn(Warning::Other(
                "foreign keys are not checked while the rows load: rows of tables left out of the refresh may now reference rows that are gone".into(),
            ));
        }
    }

    /// Each group of tables linked by foreign keys in one transaction on its own pair of
    /// sessions, `--jobs` groups at once: a stop or a failure leaves a group all old or all new,
    /// so no committed row references a row that is gone.
    async fn refresh_tables(
        &self,
        source: &Sessions,
        target: &[Arc<Client>],
        groups: &[Vec<&RefreshedTable>],
        chosen: Option<Chosen<'_>>,
    ) -> Result<(), SyncError> {
        let pairs: Vec<(Arc<Client>, Arc<Client>)> =
            source.clients().iter().cloned().zip(target.iter().cloned()).collect();
        let work = share_out(&pairs, groups, |(source, target), group| async move {
            if self.context.cancellation.is_cancelled() {
                return Ok(());
            }
            let started = Instant::now();
            for table in group {
                let description = "Table Refresh".into();
                self.context
                    .emit(row_copy_event(&table.name, TableLine::Started { description }));
            }
            match self.refresh_one_group(&source, &target, group, chosen).await {
                Ok(()) => {
                    for table in group {
                        let elapsed = started.elapsed();
                        self.context
                            .emit(row_copy_event(&table.name, TableLine::Finished { elapsed }));
                    }
                    anyhow::Ok(())
                }
                // Stopped before its commit: as it was (NOT DONE).
                Err(_) if self.context.cancellation.is_cancelled() => Ok(()),
                Err((failed, error)) => {
                    let names: Vec<&QualifiedName> = group.iter().map(|table| &table.name).collect();
                    self.context.report_group_failure(&names, failed, &error);
                    Err(error)
                }
            }
        });
        // Not dropped on Ctrl+C: each table stops before its commit or reports it.
        let refreshed = work.await;
        if self.context.cancellation.is_cancelled() {
            return Err(crate::engine::cancelled(&self.context.cancellation));
        }
        refreshed.map(|_| ()).map_err(SyncError::Failed)
    }

    /// A group's tables' rows replaced in one transaction (`committed_unless_stopped`: a stop
    /// ends it before its commit, a commit on its way is awaited); a failure says the place of
    /// its table in the group.
    async fn refresh_one_group(
        &self,
        source: &Client,
        target: &Client,
        group: &[&RefreshedTable],
        chosen: Option<Chosen<'_>>,
    ) -> Result<(), (usize, anyhow::Error)> {
        let loaded = async {
            catalog::begin_refresh(target).await.map_err(|error| (0, error))?;
            for (place, table) in group.iter().enumerate() {
                let rows = catalog::RowSelection {
                    table: &table.name,
                    columns: &table.columns,
                    range: None,
                    binary: false,
                    masked: &table.masked,
                    filter: None,
                    freeze: false,
                };
                let replaced = async {
                    catalog::empty_for_refresh(target, &table.name).await?;
                    match chosen {
                        None => catalog::relay_rows(source, target, &rows).await.map(|_| ()),
                        Some((session, oids)) => {
                            let relation = oids.get(&table.name).copied().unwrap_or(0);
                            let chosen = (session, catalog::ChosenRows::InSession);
                            catalog::relay_chosen_rows(source, target, &rows, chosen, relation).await
                        }
                    }
                };
                replaced.await.map_err(|error| (place, error))?;
            }
            Ok(())
        };
        committed_unless_stopped(target, &self.context.cancellation, loaded, |error| (0, error)).await
    }
}
