//! `dbsync sync`: the whole copy — preflight, one snapshot, schema and data, post-data,
//! validation and the swap — made again from a new snapshot when the source restarts and loses
//! it, or continued from a failed run's kept dumps (`--resume`).

use std::sync::Arc;

use crate::catalog::{self, QualifiedName};
use crate::connection::Endpoint;
use crate::engine::clone::Making;
use crate::engine::context::RunContext;
use crate::engine::copy::{CopyFrom, SourceSide};
use crate::engine::preflight::{self, Source};
use crate::engine::step_error;
use crate::engine::steps::postdata::PostData;
use crate::engine::steps::validate::TableCount;
use crate::engine::steps::{self, Job};
use crate::errors::SyncError;
use crate::plan::Plan;
use crate::report::{Event, Notice, Phase, RowCheck, Warning};
use crate::scheduler::{AttemptError, with_retries};
use crate::settings::Verification;
use crate::tools::PgTools;

/// How many copies a run makes at most when the source keeps losing its snapshot (restarts).
const COPIES_AFTER_A_LOST_SNAPSHOT: u32 = 3;

/// A sync (not `Sync`, which names the marker trait): the run context and the copy it makes.
pub(in crate::engine) struct SyncMode<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) target: &'a Endpoint,
}

impl SyncMode<'_> {
    pub(in crate::engine) async fn run(
        &mut self,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<(), SyncError> {
        if let Some(directory) = self.context.settings.resume.clone()
            && self
                .context
                .resume(self.source, self.target, &directory, started_at)
                .await?
        {
            return Ok(());
        }
        let (mut source, plan, unreadable) = self.context.inspect_source(self.source).await?;
        self.context.plan_subset(&source, &plan).await?;
        let making = self.context.choose_making(&source, &plan, self.target).await?;
        let needs = catalog::TargetNeeds::of(&source.inventory);
        let tools = preflight::locate_tools(self.context.settings, &source)?;
        self.context
            .check_target(
                self.target,
                &needs,
                SourceSide::Server {
                    source: &source,
                    plan: &plan,
                },
                &tools,
            )
            .await?;
        let mut announce = true;
        if making == Making::Clone {
            let settings = self.context.settings;
            self.context.announce(&plan, &tools, &settings.dump_dir, started_at);
            announce = false;
            let (reconnected, cloned) = self.context.clone_source(source, self.target).await?;
            source = reconnected;
            if cloned {
                return self.validate_clone_and_swap(&source, &plan, &tools, &unreadable).await;
            }
        }
        let mut copy = 1;
        loop {
            let result = self
                .copy(&source, &plan, &tools, &unreadable, started_at, announce)
                .await;
            announce = false;
            // The source restarted: the snapshot is gone, and no part of this copy can be kept.
            let snapshot_lost = result.is_err() && source.client.is_closed() && !self.context.workspace.is_swapped();
            if !snapshot_lost || copy >= COPIES_AFTER_A_LOST_SNAPSHOT || self.context.root_cancellation.is_cancelled() {
                return result;
            }
            copy += 1;
            self.context.warn(Warning::SnapshotLost {
                copy,
                of: COPIES_AFTER_A_LOST_SNAPSHOT,
            });
            self.context
                .workspace
                .drop_unfinished_copy(&*self.context.reporter)
                .await?;
            self.context.cancellation = self.context.root_cancellation.child();
            source = self.reconnect_source(source).await?;
            self.context.progress.set_plan(&plan);
        }
    }

    /// One copy from one snapshot: prepare, schema and data, post-data, validation, swap.
    pub(super) async fn copy(
        &mut self,
        source: &Source,
        plan: &Plan,
        tools: &PgTools,
        unreadable: &[QualifiedName],
        started_at: chrono::DateTime<chrono::Local>,
        announce: bool,
    ) -> Result<(), SyncError> {
        let from = CopyFrom {
            source,
            target: self.target,
            plan,
            tools,
            schema_exclusions: unreadable,
        };
        let job = self.context.prepare(&from, started_at, announce).await?;
        // Temporary dumps are read once: the tables' rows go through dbsync's own COPY.
        let settings = &self.context.settings;
        let row_copy_floor =
            (!settings.keep_dumps() && !settings.rows_via_pg_dump).then_some(crate::engine::split::ROW_COPY_FLOOR);
        let plan = self
            .context
            .split_large_tables(&job, plan, source, row_copy_floor)
            .await?;
        let plan = self.context.subset_rows(plan)?;
        self.context.progress.set_plan(&plan);
        let plan = Arc::new(plan);
        let counting = async {
            if job.record_progress {
                self.context.record_source_counts(&job, &plan, source).await;
            }
        };
        let (post_data, ()) = tokio::join!(self.copy_schema_and_data(&job, &plan, source, started_at), counting);
        let post_data = post_data?;
        self.context.finish_subset(&job, &plan).await?;
        let counted = self.finish_and_count(&job, &plan, &post_data, source).await?;
        let source_counts = self.validate(&job, &plan, source, counted, Phase::Validation).await?;
        if self.context.settings.keep_dumps() {
            self.context.write_manifest(&job, &plan, source, &source_counts).await;
        }
        self.context
            .swap(self.target, &job, &source.database, &source.settings)
            .await
    }

    /// PHASE 3 and the planner statistics, with both sides' rows counted meanwhile (rows no longer
    /// change): post-data's foreign-key checks keep one core busy, and rarely more. The counts
    /// wait until no partition index is being attached, which a query on the copy could deadlock
    /// with; `None` when they were not taken (validation then counts).
    async fn finish_and_count(
        &mut self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        post_data: &PostData,
        source: &Source,
    ) -> Result<Option<Vec<TableCount>>, SyncError> {
        let mut attached = post_data.attached();
        let verification = self.context.settings.verification;
        // A subset's source side is what it chose, not the whole tables.
        let counted_source = self.context.subset.is_none().then_some(&*source.client);
        let counting = async {
            attached.wait_for(|done| *done).await.ok()?;
            early_counts(job, plan, counted_source, verification).await
        };
        tokio::pin!(counting);
        let mut counted = None;
        let finished = {
            let finishing = async {
                self.context.restore_post_data(job, plan, post_data).await?;
                self.context.carry_statistics(job, plan, source).await
            };
            tokio::pin!(finishing);
            loop {
                tokio::select! {
                    result = &mut finishing => break result,
                    value = &mut counting, if counted.is_none() => counted = Some(value),
                }
            }
        };
        // A failure does not wait for the counts; a resumed run's post-data may attach nothing.
        finished?;
        post_data.mark_attached();
        Ok(match counted {
            Some(value) => value,
            None => counting.await,
        })
    }

    /// PHASES 1 and 2: the schema dump, then pre-data alongside the units of data. Dumps start
    /// while the schema is still being created; loads wait for it.
    pub(super) async fn copy_schema_and_data(
        &self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        source: &Source,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<Arc<PostData>, SyncError> {
        self.context.emit(Event::Notice(Notice::SyncingSchema));
        // The empty copy is created while the schema is dumped: neither needs the other.
        let copy = job.copy().dbname.clone();
        let creating = self
            .context
            .create_database_of_copy(self.target, &copy, &source.database, started_at);
        let dumping = self.context.retried(job, "schema dump", |_| steps::schema::dump(job));
        let (created, schema_dump) = tokio::join!(creating, dumping);
        created?;
        let schema_dump = schema_dump?;
        let watched_source = Some((self.source.clone(), source.server.major()));
        self.context
            .load_schema_and_data(
                job,
                plan,
                &schema_dump,
                &source.index_owners,
                (watched_source, self.context.choose_subset_rows(job, plan)),
            )
            .await
    }

    /// PHASE 4: rows and structure on both sides, the source's inside the snapshot. Only once
    /// post-data is done: a query on the copy while partition indexes are being attached can
    /// deadlock with them.
    pub(super) async fn validate(
        &self,
        job: &Job,
        plan: &Plan,
        source: &Source,
        counted: Option<Vec<TableCount>>,
        phase: Phase,
    ) -> Result<Vec<i64>, SyncError> {
        let masks = self.context.member_masks(plan);
        self.context.emit(Event::Phase(phase));
        let verification = self.context.settings.verification;
        let jobs = self.context.granted_jobs();
        let counted_source = self.context.subset.is_none().then_some(&*source.client);
        // Retried like any step (the target server may be restarting), but not once the source's
        // side, counted in the snapshot, is gone.
        let reads = with_retries(
            job.retry_policy,
            &job.cancellation,
            |_, _, _| {},
            |_| async {
                job.check_snapshot()?;
                let target_client = job.connect_to_copy().await?;
                let counts = rows_of(verification, counted.as_deref(), counted_source, &target_client, plan);
                let checksums = async {
                    match (verification, &self.context.subset_checksums) {
                        (Verification::Checksum, Some(chosen)) => Ok(chosen.clone()),
                        (Verification::Checksum, None) => steps::checksum::checksum_copy(job, plan, jobs, &masks).await,
                        _ => Ok(Vec::new()),
                    }
                };
                let structures =
                    steps::validate::read_structures(&source.client, &target_client, &job.schema_exclusions);
                // Counting a large table takes a while; Ctrl+C does not wait for it.
                tokio::select! {
                    result = async { tokio::try_join!(counts, structures, checksums) } => result.map_err(steps::database_attempt_error),
                    () = job.cancellation.cancelled() => Err(AttemptError::Cancelled),
                }
            },
        );
        let (counts, (source_structure, copy_structure), checksum_differences) = reads
            .await
            .map_err(|error| step_error(&self.context.cancellation, error))?;
        let counts = self.context.against_subset(counts);
        if !checksum_differences.is_empty() {
            self.context
                .emit(Event::ChecksumDifferences(checksum_differences.clone()));
        }
        let rows = match verification {
            Verification::Count => RowCheck::Counts,
            Verification::Checksum => RowCheck::Checksums,
            Verification::Skip => RowCheck::NotCompared,
        };
        self.context
            .judge_copy(plan, counts, &source_structure, &copy_structure, rows)
            .and_then(|counts| match checksum_differences.len() {
                0 => Ok(counts),
                found => Err(SyncError::ValidationFailed(found)),
            })
    }

    /// PHASE 2 of a clone: the clone against the source, in a snapshot taken once it was made
    /// (a source written meanwhile fails validation, and nothing is replaced), then the swap.
    async fn validate_clone_and_swap(
        &mut self,
        source: &Source,
        plan: &Plan,
        tools: &PgTools,
        unreadable: &[QualifiedName],
    ) -> Result<(), SyncError> {
        let job = self
            .context
            .clone_job(source, self.target, tools, plan, unreadable)
            .await?;
        self.context.progress.set_plan(plan);
        self.validate(&job, plan, source, None, Phase::CloneValidation).await?;
        self.context
            .swap(self.target, &job, &source.database, &source.settings)
            .await
    }

    /// A new session on the source once it accepts connections again, for a new snapshot.
    pub(super) async fn reconnect_source(&self, source: Source) -> Result<Source, SyncError> {
        let (client, pid) = self.context.connect_source_again(self.source).await?;
        Ok(Source {
            client: Arc::new(client),
            pid,
            ..source
        })
    }
}

/// Both sides' rows: those counted during post-data, else counted now; none with `--verify none`.
async fn rows_of(
    verification: Verification,
    counted: Option<&[TableCount]>,
    source: Option<&tokio_postgres::Client>,
    target: &tokio_postgres::Client,
    plan: &Plan,
) -> anyhow::Result<Vec<TableCount>> {
    match (verification, counted) {
        (Verification::Skip, _) => Ok(Vec::new()),
        (_, Some(counted)) => Ok(counted.to_vec()),
        _ => steps::validate::count_rows(source, target, plan).await,
    }
}

/// Both sides' rows counted once every load is in (the source's in the snapshot), or `None`
/// when they were not (no counts wanted, a stop, or a failure, which validation then meets
/// itself, with its retries).
async fn early_counts(
    job: &Job,
    plan: &Plan,
    source: Option<&tokio_postgres::Client>,
    verification: Verification,
) -> Option<Vec<TableCount>> {
    if verification == Verification::Skip {
        return None;
    }
    let counting = async {
        let target = job.connect_to_copy().await.ok()?;
        steps::validate::count_rows(source, &target, plan).await.ok()
    };
    tokio::select! {
        counted = counting => counted,
        () = job.cancellation.cancelled() => None,
    }
}
