//! The work on units of data: each stage (export, import, streamed copy, index build) with its
//! retries, its progress bookkeeping and its typed events, as the scheduler runs them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::progress::{Progress, Stage, TableNews};
use super::steps::postdata::PostData;
use super::steps::{self, Job};
use crate::plan::{Plan, Unit};
use crate::process::last_meaningful_line;
use crate::report::{Activity, Event, Reporter, TableLine};
use crate::scheduler::{AttemptError, FollowUp, StageFuture, StepError, UnitWork, with_retries};
use crate::settings::Transfer;

/// What the export, import and index tasks of units share.
pub struct UnitContext {
    pub job: Arc<Job>,
    pub plan: Arc<Plan>,
    pub post_data: Arc<PostData>,
    pub transfer: Transfer,
    /// Without `--stream` and without kept dumps: units larger than this are streamed anyway
    /// (`--stream-larger-than`).
    pub stream_larger_than: Option<u64>,
    /// Becomes true once pre-data is restored: loads wait for it, dumps do not.
    pub schema_ready: tokio::sync::watch::Receiver<bool>,
    pub progress: Arc<Progress>,
    pub reporter: Arc<dyn Reporter>,
    /// Numbers the index builds, for their list files.
    pub index_batches: AtomicUsize,
}

impl UnitContext {
    /// Whether the unit is streamed (`--stream`, or large and its dump not kept). A part is as
    /// large as its whole table: all of a table's parts go the same way.
    pub fn streams(&self, unit: &Unit) -> bool {
        let size = match &unit.part {
            Some(part) => unit.size_bytes.max(0) as u64 * part.of.max(1) as u64,
            None => unit.size_bytes.max(0) as u64,
        };
        self.transfer == Transfer::Stream || self.stream_larger_than.is_some_and(|limit| size > limit)
    }

    fn emit(&self, activity: Activity, table: String, line: TableLine) {
        self.reporter.emit(Event::Table { activity, table, line });
    }

    /// The tables a unit's lines are about, or what it carries when it has none of its own.
    fn own_line_or(&self, unit: &Unit, news: Vec<TableNews>, elapsed: Duration, bytes: u64) -> Vec<TableNews> {
        if !news.is_empty() {
            return news;
        }
        let (name, description) = unit.own_line();
        vec![TableNews {
            table: name.to_string(),
            description: description.to_string(),
            first_or_last: true,
            elapsed,
            dump_bytes: bytes,
        }]
    }

    fn started(&self, unit: &Unit, activity: Activity) {
        let news = self.progress.unit_started(unit, Stage::of(activity));
        for table in self.own_line_or(unit, news, Duration::ZERO, 0) {
            if !table.first_or_last {
                continue;
            }
            let line = match activity {
                Activity::Export | Activity::Stream => TableLine::Started {
                    description: table.description,
                },
                Activity::Import | Activity::Index => TableLine::Restoring,
            };
            self.emit(activity, table.table, line);
        }
    }

    fn finished(
        &self,
        unit: &Unit,
        activity: Activity,
        unit_started: Instant,
        sizes: Option<&steps::export::ExportedSizes>,
    ) {
        self.progress.record_span(activity, unit.label(), unit_started);
        let empty = HashMap::new();
        let by_table = sizes.map_or(&empty, |sizes| &sizes.by_table);
        let news = self.progress.unit_finished(unit, Stage::of(activity), by_table);
        let total = sizes.map_or(0, |sizes| sizes.total);
        for table in self.own_line_or(unit, news, unit_started.elapsed(), total) {
            if !table.first_or_last {
                continue;
            }
            let line = match activity {
                Activity::Export => TableLine::Exported {
                    description: table.description,
                    bytes: table.dump_bytes,
                    elapsed: table.elapsed,
                },
                Activity::Import | Activity::Stream | Activity::Index => TableLine::Finished { elapsed: table.elapsed },
            };
            self.emit(activity, table.table, line);
        }
        self.reporter.emit(Event::StepFinished);
    }

    fn failed(&self, unit: &Unit, activity: Activity, error: &anyhow::Error) {
        self.progress.unit_failed(unit);
        let message = format!("{error:#}");
        let news = self.progress.tables_of(unit);
        for table in self.own_line_or(unit, news, Duration::ZERO, 0) {
            let error = last_meaningful_line(&message);
            self.emit(activity, table.table, TableLine::Failed { error });
        }
        self.reporter.emit(Event::StepFailed {
            activity,
            unit: unit.label(),
            error: message,
        });
    }

    fn retrying(&self, unit: &Unit, activity: Activity, attempt: u32, error: &anyhow::Error, delay: Duration) {
        let error = last_meaningful_line(&format!("{error:#}"));
        let news = self.progress.tables_of(unit);
        for table in self.own_line_or(unit, news, Duration::ZERO, 0) {
            let line = TableLine::Retrying {
                attempt,
                delay,
                error: error.clone(),
            };
            self.emit(activity, table.table, line);
        }
    }

    /// One stage of a unit with its retries, its STARTED/RETRY/FAILED lines, and the time it started.
    async fn run_stage<T, Fut>(
        &self,
        unit: &Unit,
        activity: Activity,
        attempt: impl FnMut(u32) -> Fut,
    ) -> Result<(T, Instant), StepError>
    where
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let unit_started = Instant::now();
        self.started(unit, activity);
        let result = with_retries(
            self.job.retry_policy,
            &self.job.cancellation,
            |attempt_number, error, delay| self.retrying(unit, activity, attempt_number, error, delay),
            attempt,
        )
        .await;
        match result {
            Ok(value) => Ok((value, unit_started)),
            Err(StepError::Failed(error)) => {
                self.failed(unit, activity, &error);
                let verb = activity.verb();
                Err(StepError::Failed(
                    error.context(format!("failed to {verb} {}", self.describe(unit))),
                ))
            }
            Err(StepError::Cancelled) => Err(StepError::Cancelled),
        }
    }

    pub(super) async fn export_unit(&self, unit: Arc<Unit>) -> Result<(), StepError> {
        let unit_ref = &unit;
        let (sizes, started) = self
            .run_stage(&unit, Activity::Export, |_| async move {
                match unit_ref.copies_rows() {
                    true => steps::relay::dump_part(&self.job, unit_ref).await,
                    false => steps::export::export_unit(&self.job, unit_ref).await,
                }
            })
            .await?;
        self.finished(&unit, Activity::Export, started, Some(&sizes));
        Ok(())
    }

    /// Waits until the tables exist on the target; a failed pre-data restore cancels the run.
    async fn wait_for_schema(&self) -> Result<(), StepError> {
        let mut ready = self.schema_ready.clone();
        tokio::select! {
            result = ready.wait_for(|ready| *ready) => result.map(|_| ()).map_err(|_| StepError::Cancelled),
            _ = self.job.cancellation.cancelled() => Err(StepError::Cancelled),
        }
    }

    async fn load_unit(&self, unit: Arc<Unit>, activity: Activity) -> Result<(), StepError> {
        self.wait_for_schema().await?;
        let unit_ref = &unit;
        let ((), started) = self
            .run_stage(&unit, activity, |attempt| async move {
                match (activity, unit_ref.copies_rows()) {
                    (Activity::Stream, true) => steps::relay::relay_part(&self.job, unit_ref, attempt).await,
                    (Activity::Stream, false) => steps::stream::stream_unit(&self.job, unit_ref, attempt).await,
                    (_, true) => steps::relay::load_part(&self.job, unit_ref, attempt).await,
                    (_, false) => steps::import::import_unit(&self.job, unit_ref, attempt).await,
                }
            })
            .await?;
        self.finished(&unit, activity, started, None);
        Ok(())
    }

    /// The indexes and key constraints of tables whose rows are all loaded (ANALYZE first with
    /// `--analyze`), over `sessions` sessions.
    async fn build_indexes(&self, tables: Vec<usize>, sessions: usize) -> Result<(), StepError> {
        let started = Instant::now();
        for index in &tables {
            let entries = self.post_data.entry_count(*index);
            self.emit(
                Activity::Index,
                self.progress.table_name(*index),
                TableLine::Indexing { entries },
            );
        }
        let batch = self.index_batches.fetch_add(1, Ordering::SeqCst) + 1;
        let on_retry = |_: &'static str, attempt, error: &anyhow::Error, delay| {
            let error = last_meaningful_line(&format!("{error:#}"));
            for index in &tables {
                let line = TableLine::Retrying {
                    attempt,
                    delay,
                    error: error.clone(),
                };
                self.emit(Activity::Index, self.progress.table_name(*index), line);
            }
        };
        let result = self
            .post_data
            .build_tables(&self.job, &self.plan, &tables, batch, sessions, &on_retry)
            .await;
        if result.is_ok() && self.job.record_progress {
            steps::marks::add_built_tables(&self.job.dump_directory, &tables);
        }
        let line = match &result {
            Ok(()) => TableLine::Finished {
                elapsed: started.elapsed(),
            },
            Err(StepError::Failed(error)) => TableLine::Failed {
                error: last_meaningful_line(&format!("{error:#}")),
            },
            Err(StepError::Cancelled) => return result,
        };
        for index in &tables {
            self.emit(Activity::Index, self.progress.table_name(*index), line.clone());
        }
        let names: Vec<String> = tables.iter().map(|index| self.progress.table_name(*index)).collect();
        self.progress.record_span(Activity::Index, names.join(", "), started);
        result.map_err(|error| match error {
            StepError::Failed(error) => StepError::Failed(error.context(format!(
                "failed to build the indexes of {}",
                list_names(tables.iter().map(|index| self.progress.table_name(*index)).collect())
            ))),
            cancelled => cancelled,
        })
    }

    fn describe(&self, unit: &Unit) -> String {
        let names = if unit.planned_tables.is_empty() {
            vec![unit.own_line().0.to_string()]
        } else {
            unit.planned_tables
                .iter()
                .map(|index| self.progress.table_name(*index))
                .collect()
        };
        list_names(names)
    }
}

impl UnitWork<Unit> for Arc<UnitContext> {
    fn export(&self, unit: Arc<Unit>) -> StageFuture {
        let context = self.clone();
        match self.streams(&unit) {
            true => Box::pin(async move { context.load_unit(unit, Activity::Stream).await }),
            false => Box::pin(async move { context.export_unit(unit).await }),
        }
    }

    fn import(&self, unit: Arc<Unit>) -> Option<StageFuture> {
        if self.streams(&unit) {
            return None;
        }
        let context = self.clone();
        Some(Box::pin(async move { context.load_unit(unit, Activity::Import).await }))
    }

    fn loaded(&self, unit: Arc<Unit>) -> Option<FollowUp> {
        let tables = self.progress.take_tables_ready_for_indexes(&unit);
        if tables.is_empty() {
            return None;
        }
        let entries: usize = tables.iter().map(|index| self.post_data.entry_count(*index)).sum();
        let context = self.clone();
        Some(FollowUp {
            wants: entries.max(1),
            start: Box::new(move |sessions| Box::pin(async move { context.build_indexes(tables, sessions).await })),
        })
    }
}

/// A restore's units: already dumped (in the archive), so each is only loaded, and its tables'
/// indexes follow as in a sync.
pub struct ImportOnly(pub Arc<UnitContext>);

impl UnitWork<Unit> for ImportOnly {
    fn export(&self, _: Arc<Unit>) -> StageFuture {
        Box::pin(async { Ok(()) })
    }

    fn import(&self, unit: Arc<Unit>) -> Option<StageFuture> {
        let context = self.0.clone();
        let directory = steps::export::unit_directory(&context.job, &unit);
        if context.job.resuming && steps::marks::is_set(&directory, steps::marks::UNIT_LOADED) {
            // Loaded by the run being resumed: only its tables' progress moves on.
            return Some(Box::pin(async move {
                context.progress.unit_finished(&unit, Stage::Load, &HashMap::new());
                Ok(())
            }));
        }
        Some(Box::pin(async move { context.load_unit(unit, Activity::Import).await }))
    }

    fn loaded(&self, unit: Arc<Unit>) -> Option<FollowUp> {
        self.0.loaded(unit)
    }
}

/// A dump's units: dumped and kept, never loaded, so nothing follows.
pub struct ExportOnly(pub Arc<UnitContext>);

impl UnitWork<Unit> for ExportOnly {
    fn export(&self, unit: Arc<Unit>) -> StageFuture {
        let context = self.0.clone();
        Box::pin(async move { context.export_unit(unit).await })
    }

    fn import(&self, _: Arc<Unit>) -> Option<StageFuture> {
        None
    }

    fn loaded(&self, _: Arc<Unit>) -> Option<FollowUp> {
        None
    }
}

/// Up to five names, then how many more.
fn list_names(names: Vec<String>) -> String {
    if names.len() <= 5 {
        names.join(", ")
    } else {
        format!("{}, and {} more tables", names[..5].join(", "), names.len() - 5)
    }
}
