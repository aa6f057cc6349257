//! `dbsync sync --incremental`: the target database and its schema are kept (checked like a
//! data-only refresh's), and each selected table is brought to the source's snapshot by moving
//! only the rows that differ: rows changed since the table's watermark (by its change column),
//! or the rows of the key ranges whose hashes differ. Tables linked by foreign keys share one
//! transaction (rows written referenced tables first, deleted referencing tables first), other
//! tables each have their own; sequences are set and the rows validated as after a refresh.

use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

use crate::catalog::{self, ChecksumColumn, QualifiedName, TableColumn};
use crate::connection::Endpoint;
use crate::engine::row_copy::{RefreshedTable, SourceState, linked_groups, row_copy_event};
use crate::engine::steps::change::{self, ChangeColumn, ChangeContext, ChangeKind, TableChange};
use crate::engine::steps::checksum::{Sessions, agreed_hash};
use crate::engine::{RunContext, interruptible, preflight};
use crate::errors::SyncError;
use crate::hooks::HookStage;
use crate::plan::Plan;
use crate::report::{Event, IncrementalHow, KeyRangeReason, Notice, Phase, TableLine, Warning};
use crate::scheduler::share_out;
use crate::usage_error;

/// `sync --incremental`: the run context and the kept target it brings up to date.
pub(in crate::engine) struct Incremental<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) target: &'a Endpoint,
    /// Its own section of the settings.
    pub(in crate::engine) options: &'a crate::settings::IncrementalSettings,
}

/// A table to change and the planned table it belongs to (a tree's members share one).
type Planned = (usize, TableChange);

impl Incremental<'_> {
    pub(in crate::engine) async fn run(
        &mut self,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<(), SyncError> {
        let (source, plan, _) = self.context.inspect_source(self.source).await?;
        let (target, fitted) = self.context.fitted_kept_target(&source, self.target, &plan).await?;
        let tables = self.changing_tables(&target, &plan, fitted).await?;
        let configured = self.options.source.as_deref();
        let label = self
            .context
            .source_label(
                &source.client,
                &target,
                self.source,
                configured,
                SourceState::Watermarks,
            )
            .await?;
        if self.context.settings.dry_run {
            self.context.emit(label.notice());
            self.preview_changes(&target, &tables, &label.label).await?;
            self.context.emit(Event::Notice(Notice::DryRunDone));
            return Ok(());
        }
        self.announce_incremental(&plan, &tables, started_at);
        self.context.emit(label.notice());
        self.context.run_hooks(HookStage::BeforeSync, self.target).await?;
        self.context.run_hooks(HookStage::AfterSchema, self.target).await?;
        interruptible(&self.context.cancellation, catalog::ensure_watermark_table(&target)).await?;
        self.context.claim_source_state(&target, &label).await?;
        let horizon = self.source_horizon(&source.client, &tables).await?;
        let snapshot = self.context.take_snapshot(&source, &plan).await?;
        self.context.emit(Event::Phase(Phase::RefreshData));
        let (source_sessions, target_sessions) = self.incremental_sessions(&snapshot).await?;
        let groups = linked_groups(&plan, &source.inventory, &tables, |(planned, _)| Some(*planned));
        let changed = self
            .change_in_groups(&source_sessions, &target_sessions, &groups, &horizon, &label.label)
            .await;
        // The watermarks the groups just wrote know their source by its identity from now on.
        self.context.claim_source_state(&target, &label).await?;
        changed?;
        self.context.set_sequences(&source.client, &target, &plan).await?;
        self.context.emit(Event::Phase(Phase::RefreshValidation));
        self.context
            .validate_refresh(self.target, &source.client, &target, &plan, &source_sessions)
            .await?;
        for (table, changes) in self.context.progress.changes() {
            self.context
                .emit(Event::Notice(Notice::TableChanged { table, changes }));
        }
        self.context.run_hooks(HookStage::AfterImport, self.target).await
    }

    /// `--dry-run`: how each table's rows would be found, from its key, its change column and
    /// the watermark the target holds.
    async fn preview_changes(
        &self,
        target: &Client,
        tables: &[Planned],
        source_identity: &str,
    ) -> Result<(), SyncError> {
        let names: Vec<QualifiedName> = tables.iter().map(|(_, table)| table.name.clone()).collect();
        let read = catalog::existing_watermarks(target, source_identity, &names);
        let watermarks = interruptible(&self.context.cancellation, read).await?;
        let deep = self.options.deep;
        for ((_, table), held) in tables.iter().zip(watermarks) {
            let how = match (&table.key, &table.change) {
                (None, _) => IncrementalHow::Replaced,
                (Some(_), None) => IncrementalHow::KeyRanges {
                    reason: KeyRangeReason::NoChangeColumn,
                },
                (Some(_), Some(_)) if deep => IncrementalHow::KeyRanges {
                    reason: KeyRangeReason::Deep,
                },
                (Some(_), Some(change)) => match held
                    .filter(|held| held.change_column == change.name)
                    .and_then(|held| held.read_from)
                {
                    Some(since) => IncrementalHow::ChangedSince {
                        column: change.name.clone(),
                        since,
                    },
                    None => IncrementalHow::KeyRanges {
                        reason: KeyRangeReason::NoWatermark,
                    },
                },
            };
            self.context.emit(Event::Notice(Notice::WouldChange {
                table: table.name.display_name(),
                how,
            }));
        }
        Ok(())
    }

    /// Read before the snapshot: a transaction the snapshot cannot see started after this.
    async fn source_horizon(&mut self, source: &Client, tables: &[Planned]) -> Result<catalog::Horizon, SyncError> {
        let horizon = interruptible(&self.context.cancellation, catalog::transaction_horizon(source)).await?;
        if horizon.hidden_sessions > 0 && tables.iter().any(|(_, table)| table.change.is_some()) {
            self.context.warn(Warning::Other(format!(
                "{} session(s) of other roles on the source are hidden from {} (pg_read_all_stats would show them): their open transactions are covered one run late (each table's watermark stays one run behind)",
                horizon.hidden_sessions,
                self.source.user
            )));
        }
        if horizon.prepared_transactions > 0 && tables.iter().any(|(_, table)| table.change.is_some()) {
            self.context.warn(Warning::Other(format!(
                "{} prepared transaction(s) are pending on the source (pg_prepared_xacts): their rows appear only at COMMIT PREPARED, so each table's watermark stays where it was until none is pending",
                horizon.prepared_transactions
            )));
        }
        Ok(horizon)
    }

    /// The tables changed group by group (tables linked by foreign keys share a transaction),
    /// `--jobs` groups at a time.
    async fn change_in_groups(
        &self,
        source: &Sessions,
        target: &[Arc<Client>],
        groups: &[Vec<&Planned>],
        horizon: &catalog::Horizon,
        source_identity: &str,
    ) -> Result<(), SyncError> {
        let hash = interruptible(
            &self.context.cancellation,
            agreed_hash(&source.clients()[0], &target[0]),
        )
        .await?;
        let (deep, delete) = (self.options.deep, self.options.delete);
        let context = ChangeContext {
            source_identity,
            horizon,
            hash,
            deep,
            delete,
            batch_rows: self.options.batch_rows,
            lookback_seconds: self.options.lookback.as_secs(),
        };
        self.change_groups(source, target, groups, &context).await
    }

    /// `--jobs` source sessions in the snapshot (with the masking salt) and as many on the
    /// target, all writing values as text the same way.
    async fn incremental_sessions(&self, snapshot: &str) -> Result<(Sessions, Vec<Arc<Client>>), SyncError> {
        let (source, target) = self
            .context
            .row_copy_sessions(self.source, self.target, snapshot)
            .await?;
        let prepare = async {
            for client in &target {
                catalog::prepare_compare_session(client).await?;
            }
            for client in source.clients().iter().chain(&target) {
                catalog::prepare_incremental_session(client).await?;
            }
            anyhow::Ok(())
        };
        interruptible(&self.context.cancellation, prepare).await?;
        Ok((source, target))
    }

    /// Each group of tables linked by foreign keys in its own transaction on its own pair of
    /// sessions, `--jobs` groups at once.
    async fn change_groups(
        &self,
        source: &Sessions,
        target: &[Arc<Client>],
        groups: &[Vec<&Planned>],
        context: &ChangeContext<'_>,
    ) -> Result<(), SyncError> {
        let pairs: Vec<(Arc<Client>, Arc<Client>)> =
            source.clients().iter().cloned().zip(target.iter().cloned()).collect();
        let work = share_out(&pairs, groups, |(source, target), group| async move {
            if self.context.cancellation.is_cancelled() {
                return Ok(());
            }
            let started = Instant::now();
            for (_, table) in group {
                let description = "Incremental Change".into();
                self.context
                    .emit(row_copy_event(&table.name, TableLine::Started { description }));
            }
            let tables: Vec<&TableChange> = group.iter().map(|(_, table)| table).collect();
            match change::change_group(&source, &target, &tables, context, &self.context.cancellation).await {
                Ok(changes) => {
                    for ((planned, table), changes) in group.iter().zip(&changes) {
                        self.context.progress.add_changes(*planned, changes);
                        let elapsed = started.elapsed();
                        self.context
                            .emit(row_copy_event(&table.name, TableLine::Finished { elapsed }));
                    }
                    anyhow::Ok(())
                }
                // Stopped before its commit: as it was (NOT DONE). Not an error here, so that
                // another group on its way through its commit is not dropped half-way.
                Err(_) if self.context.cancellation.is_cancelled() => Ok(()),
                Err(failure) => {
                    self.context.progress.tables_failed(&[group[failure.table].0]);
                    let names: Vec<&QualifiedName> = tables.iter().map(|table| &table.name).collect();
                    self.context.report_group_failure(&names, failure.table, &failure.error);
                    Err(failure.error)
                }
            }
        });
        // Not dropped on Ctrl+C: each group stops before its commit or reports it.
        let changed = work.await;
        if self.context.cancellation.is_cancelled() {
            return Err(crate::engine::cancelled(&self.context.cancellation));
        }
        changed.map(|_| ()).map_err(SyncError::Failed)
    }

    /// What is changed, the consent already given, and the tables replaced whole.
    fn announce_incremental(&mut self, plan: &Plan, tables: &[Planned], started_at: chrono::DateTime<chrono::Local>) {
        self.context
            .announce_row_copy(crate::report::RunKind::Incremental, plan, started_at);
        let keyless: Vec<String> = tables
            .iter()
            .filter(|(_, table)| table.key.is_none())
            .map(|(_, table)| table.name.display_name())
            .collect();
        if !keyless.is_empty() {
            self.context.warn(Warning::Other(format!(
                "no primary key on the target, so every row is replaced (in one transaction): {}",
                keyless.join(", ")
            )));
        }
    }

    /// Each table's key, change column, masks and trigger choice; every `[incremental]` name
    /// checked against the plan, refused before anything is written.
    async fn changing_tables(
        &self,
        target: &Client,
        plan: &Plan,
        fitted: Vec<RefreshedTable>,
    ) -> Result<Vec<Planned>, SyncError> {
        let config = &self.options;
        // A source that is itself the target of incremental syncs: its watermarks are not ours.
        if let Some(own) = fitted
            .iter()
            .find(|table| format!("{}.{}", table.name.schema, table.name.name) == catalog::WATERMARK_TABLE)
        {
            return Err(usage_error!(
                "the source has dbsync's own watermark table {}: it is the target of other incremental syncs, and its watermarks would overwrite this target's\nhint: leave it out with --exclude 'dbsync.*'",
                own.name.display_name()
            ));
        }
        for written in config.tables.keys().chain(&config.fire_triggers) {
            if !plan
                .tables
                .iter()
                .any(|table| preflight::names_table(written, &table.name))
            {
                return Err(usage_error!(
                    "[incremental] names the table {written}, which this run does not copy\nhint: check the name (schema.table) and the selection"
                ));
            }
        }
        let names: Vec<QualifiedName> = fitted.iter().map(|table| table.name.clone()).collect();
        let keys = interruptible(&self.context.cancellation, catalog::primary_keys(target, &names)).await?;
        let mut tables = Vec::new();
        for (fitted, key) in fitted.into_iter().zip(keys) {
            let planned = plan
                .tables
                .iter()
                .position(|table| table.members.contains(&fitted.name))
                .expect("every refreshed table is a member of a planned table");
            tables.push((planned, self.table_change(&plan.tables[planned].name, fitted, key)?));
        }
        Ok(tables)
    }

    fn table_change(
        &self,
        planned_name: &QualifiedName,
        fitted: RefreshedTable,
        key: Option<Vec<String>>,
    ) -> Result<TableChange, SyncError> {
        let config = &self.options;
        let masked = fitted.masked.clone();
        if let Some((column, _)) = masked
            .iter()
            .find(|(column, _)| key.as_ref().is_some_and(|key| key.contains(column)))
        {
            return Err(usage_error!(
                "[transform] masks {}.{column}, part of its primary key: an incremental sync finds rows by their key; mask another column, or use a full sync",
                planned_name.display_name()
            ));
        }
        let change = change_column_of(config, planned_name, &fitted.source_columns)?;
        let integer_key = match key.as_deref() {
            Some([column]) => fitted
                .source_columns
                .iter()
                .find(|candidate| &candidate.name == column)
                .filter(|candidate| ChangeKind::of(&candidate.type_name) == Some(ChangeKind::Integer))
                .map(|candidate| candidate.name.clone()),
            _ => None,
        };
        let hashed = |masked: &[(String, String)]| -> Vec<ChecksumColumn> {
            fitted
                .source_columns
                .iter()
                .map(|column| ChecksumColumn {
                    name: column.name.clone(),
                    float: matches!(column.type_name.as_str(), "real" | "double precision"),
                    expression: masked
                        .iter()
                        .find(|(name, _)| name == &column.name)
                        .map(|(_, expression)| expression.clone()),
                })
                .collect()
        };
        Ok(TableChange {
            source_hashed: hashed(&masked),
            target_hashed: hashed(&[]),
            fire_triggers: config
                .fire_triggers
                .iter()
                .any(|written| preflight::names_table(written, planned_name)),
            name: fitted.name,
            columns: fitted.columns,
            key,
            integer_key,
            masked,
            change,
        })
    }
}

/// The table's change column: `[incremental.tables]`'s (an empty name: none), else the default
/// when the table has it with a type that can be one.
fn change_column_of(
    config: &crate::settings::IncrementalSettings,
    table: &QualifiedName,
    columns: &[TableColumn],
) -> Result<Option<ChangeColumn>, SyncError> {
    let configured = config
        .tables
        .iter()
        .find(|(written, _)| preflight::names_table(written, table))
        .map(|(_, column)| column);
    let name = configured.unwrap_or(&config.change_column);
    if name.is_empty() {
        return Ok(None);
    }
    let column = columns.iter().find(|column| &column.name == name);
    match (column, configured.is_some()) {
        (Some(column), explicit) => match ChangeKind::of(&column.type_name) {
            Some(kind) => Ok(Some(ChangeColumn {
                name: column.name.clone(),
                type_name: column.type_name.clone(),
                kind,
            })),
            None if explicit => Err(usage_error!(
                "[incremental.tables] {} = {name:?}: the column is {}; a change column is a timestamp, timestamptz or integer that grows with every change",
                table.display_name(),
                column.type_name
            )),
            None => Ok(None),
        },
        (None, true) => Err(usage_error!(
            "[incremental.tables] {} = {name:?}: the table has no such column",
            table.display_name()
        )),
        (None, false) => Ok(None),
    }
}
