//! The sync pipeline, end to end: preflight (inspect, plan, check the target and take its lock,
//! remove what dead runs left, consent), prepare (workspace, snapshot, the empty copy), schema
//! and data (pre-data alongside the units, each table's indexes as soon as it is loaded),
//! post-data, validation of rows and structure, and the swap; a cleanup runs on every way out.
//! One short method per phase; the work itself is in `steps`, the unit pipeline in `units`, what
//! users read in `report`.

mod archive;
pub mod context;
pub mod diff;
pub mod dump;
mod hooks;
mod incremental;
mod merge;
pub mod monitor;
pub mod preflight;
pub mod preview;
pub mod progress;
pub mod refresh;
pub mod restore;
pub mod resume;
mod retention;
mod roles;
mod split;
pub mod steps;
pub mod units;
pub mod verify;
pub mod workspace;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use preflight::Source;
use progress::{PhaseClock, Progress};
use steps::postdata::PostData;
use steps::{DumpSpace, Job, marks};
use units::UnitContext;
use workspace::Workspace;

use crate::catalog::{self, QualifiedName};
use crate::errors::{EXIT_SUCCESS, Outcome, SyncError};
use crate::hooks::HookStage;
use crate::plan::Plan;
use crate::process::last_meaningful_line;
use crate::report::{
    Activity, Banner, Event, KeyFate, Notice, OutsideKey, Phase, Reporter, RowCheck, RunKind, Summary, Warning,
};
use crate::scheduler::{AttemptError, Budget, Cancellation, RetryPolicy, StepError, run_units, with_retries};
use crate::settings::{Content, Settings, Transfer, Verification};
use crate::target::{COPY_COMMENT_PREFIX, describe_sessions, temporary_name};
use crate::tools::PgTools;
use context::{FreeSlots, GrantedJobs};

/// How many copies a run makes at most when the source keeps losing its snapshot (restarts).
const COPIES_AFTER_A_LOST_SNAPSHOT: u32 = 3;

/// What `run` leaves behind for the caller: the result and the summary to report.
pub struct RunOutcome {
    pub result: Result<(), SyncError>,
    pub summary: Summary,
}

/// Runs a sync, a dump or a restore (`kind`) to its end: the mode's phases, retention after a
/// success, then on every way out the same cleanup, verdict and summary.
pub async fn run(
    settings: &Settings,
    kind: RunKind,
    reporter: Arc<dyn Reporter>,
    cancellation: Cancellation,
) -> RunOutcome {
    let started = Instant::now();
    let started_at = chrono::Local::now();
    let mut run = Run::new(settings, reporter, cancellation);
    let result = match kind {
        RunKind::Sync => run.sync(started_at).await,
        RunKind::Dump => run.dump(started_at).await,
        RunKind::Restore => run.restore(started_at).await,
        RunKind::Refresh => run.refresh(started_at).await,
        RunKind::Incremental => run.incremental(started_at).await,
        RunKind::Merge => run.merge(started_at).await,
    };
    if result.is_ok() {
        run.apply_retention().await;
    }
    let result = match (result, kind) {
        (Ok(()), RunKind::Sync | RunKind::Restore | RunKind::Refresh | RunKind::Incremental | RunKind::Merge) => {
            run.run_hooks(HookStage::AfterSync, settings.target()).await
        }
        (result, _) => result,
    };
    run.finish(result, started, started_at).await
}

/// What a run's job reads and writes: the parts of a `Job` that differ between a sync, a dump
/// and a restore.
struct JobPlaces {
    snapshot: Option<steps::Snapshot>,
    work_target: Option<crate::connection::Endpoint>,
    tools: PgTools,
    passfile: std::path::PathBuf,
    schema_exclusions: Vec<QualifiedName>,
    dump_directory: std::path::PathBuf,
    scratch_directory: std::path::PathBuf,
    keep_dumps: bool,
    record_progress: bool,
    resuming: bool,
}

/// Awaits a database call unless a signal arrives first./// Awaits a database call unless a signal arrives first.
pub async fn interruptible<T>(
    cancellation: &Cancellation,
    future: impl Future<Output = anyhow::Result<T>>,
) -> Result<T, SyncError> {
    tokio::select! {
        result = future => result.map_err(SyncError::Failed),
        _ = cancellation.cancelled() => Err(cancelled(cancellation)),
    }
}

/// The error for a run that is being stopped: the signal, or the failure that stopped it.
pub fn cancelled(cancellation: &Cancellation) -> SyncError {
    match cancellation.interrupting_signal() {
        Some(signal) => SyncError::Interrupted(signal),
        None => SyncError::Failed(anyhow::anyhow!("stopped after another step failed")),
    }
}

fn step_error(cancellation: &Cancellation, error: StepError) -> SyncError {
    match error {
        StepError::Failed(error) => SyncError::Failed(error),
        StepError::Cancelled => cancelled(cancellation),
    }
}

/// One run's state, filled in as it progresses; what cleanup and the summary need.
struct Run<'a> {
    settings: &'a Settings,
    reporter: Arc<dyn Reporter>,
    /// Stops the current copy: signals, or a failure of one of its steps.
    cancellation: Cancellation,
    /// Signals only: a copy started again after the source lost its snapshot gets a fresh
    /// `cancellation` under it.
    root_cancellation: Cancellation,
    workspace: Workspace,
    progress: Arc<Progress>,
    dump_space: Arc<DumpSpace>,
    warnings: Vec<String>,
    /// Sequences and large objects the plan copies.
    plan_totals: (usize, i64),
    /// Names the temporary database, and the previous target while the swap puts it aside.
    run_suffix: String,
    /// `--jobs`, as the servers granted it in preflight (`None` until then).
    granted: Option<GrantedJobs>,
    /// What `--retain` dropped.
    archives_dropped: Vec<String>,
    /// Warnings found before the banner, shown just after it.
    deferred_warnings: Vec<Warning>,
    phase_clock: PhaseClock,
    /// Masked columns and their expressions, by planned table (`[transform]`).
    masks: std::collections::HashMap<usize, Vec<(String, String)>>,
}

impl<'a> Run<'a> {
    /// Each member of the plan's tables (in `Plan::members` order) with its masked columns.
    fn member_masks(&self, plan: &Plan) -> Vec<Vec<(String, String)>> {
        plan.tables
            .iter()
            .enumerate()
            .flat_map(|(index, table)| {
                let masked = self.masks.get(&index).cloned().unwrap_or_default();
                table.members.iter().map(move |_| masked.clone())
            })
            .collect()
    }

    /// The masked columns of the planned table `member` belongs to.
    fn masks_of_member(&self, plan: &Plan, member: &QualifiedName) -> Vec<(String, String)> {
        plan.tables
            .iter()
            .position(|table| table.members.contains(member))
            .and_then(|table| self.masks.get(&table).cloned())
            .unwrap_or_default()
    }

    fn emit(&self, event: Event) {
        if let Event::Phase(phase) = &event {
            self.phase_clock.enter(phase.key());
        }
        self.reporter.emit(event);
    }

    fn new(settings: &'a Settings, reporter: Arc<dyn Reporter>, cancellation: Cancellation) -> Run<'a> {
        Run {
            settings,
            reporter,
            cancellation: cancellation.child(),
            root_cancellation: cancellation,
            workspace: Workspace::default(),
            progress: Arc::new(Progress::default()),
            dump_space: Default::default(),
            warnings: Vec::new(),
            plan_totals: (0, 0),
            run_suffix: format!("{:08x}", rand::random::<u32>()),
            phase_clock: PhaseClock::default(),
            masks: Default::default(),
            granted: None,
            archives_dropped: Vec::new(),
            deferred_warnings: Vec::new(),
        }
    }

    /// Cleanup on every way out, then the verdict and the summary.
    async fn finish(
        mut self,
        mut result: Result<(), SyncError>,
        started: Instant,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> RunOutcome {
        self.phase_clock.enter("cleanup");
        let kept = self
            .workspace
            .clean_up(self.settings.keep_dumps(), &*self.reporter, &self.root_cancellation)
            .await;
        let dumps = kept.dumps.as_ref().or(self.settings.resume.as_ref());
        if result.is_err()
            && self.settings.target.is_some()
            && let Some(directory) = resume::resumable(dumps)
        {
            self.emit(Event::Notice(Notice::ResumeWith {
                copy: kept.copy,
                command: resume::resume_command(self.settings, directory),
            }));
        }
        // Whatever failed while a signal was being handled, the signal is why the run ended.
        if let Some(signal) = self.root_cancellation.interrupting_signal()
            && !self.workspace.is_swapped()
        {
            result = Err(SyncError::Interrupted(signal));
        }
        // One instant ends both the run's time and its last stretch, so the stretches never add
        // up to more than the whole.
        let finished = Instant::now();
        let summary = self.summary(&result, finished.duration_since(started), finished, started_at);
        RunOutcome { result, summary }
    }

    /// What the progress and the summary follow from now on.
    fn adopt_plan(&mut self, plan: &Plan) {
        self.progress.set_plan(plan);
        let large_objects = if plan.copy_large_objects {
            plan.large_object_count
        } else {
            0
        };
        self.plan_totals = (plan.sequences.len(), large_objects);
    }

    /// What the units of this run share, and the budget they run under.
    fn unit_context(
        &self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        post_data: Arc<PostData>,
        schema_ready: tokio::sync::watch::Receiver<bool>,
    ) -> (Arc<UnitContext>, Budget) {
        let context = Arc::new(UnitContext {
            job: job.clone(),
            plan: plan.clone(),
            post_data,
            transfer: self.settings.transfer,
            // A restore only loads, and kept dumps must hold every unit.
            stream_larger_than: match (
                self.settings.transfer,
                job.snapshot.is_some(),
                self.settings.stream_larger_than,
            ) {
                (Transfer::Files { keep: false }, true, limit) if limit > 0 => Some(limit),
                _ => None,
            },
            schema_ready,
            progress: self.progress.clone(),
            reporter: self.reporter.clone(),
            index_batches: AtomicUsize::new(0),
        });
        let budget = Budget {
            sessions: self.granted_jobs().get(),
            tasks: self.settings.batch_size.unwrap_or(usize::MAX),
        };
        (context, budget)
    }

    /// Where the run reads: the source (redacted), or a restore's archive directory.
    fn origin(&self) -> String {
        match (&self.settings.source, &self.settings.archive) {
            (Some(source), _) => source.to_string(),
            (None, archive) => archive
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
        }
    }

    /// Where the run writes: the target (redacted), or a dump's archive directory.
    fn destination(&self) -> String {
        match (&self.settings.target, &self.settings.output) {
            (Some(target), _) => target.to_string(),
            (None, output) => output
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
        }
    }

    /// Lowers `--jobs` to what the servers can spare (`free`), once, before this run opens any
    /// session of its jobs; returns the warning when it was lowered.
    fn grant_jobs(&mut self, free: FreeSlots) -> Result<Option<Warning>, SyncError> {
        let (granted, lowered) = GrantedJobs::grant(self.settings.jobs, free)?;
        self.granted = Some(granted);
        Ok(lowered)
    }

    /// The sessions per server this run may use: only ever what the servers granted.
    fn granted_jobs(&self) -> GrantedJobs {
        self.granted
            .expect("every mode grants its jobs in preflight, before it opens their sessions")
    }

    fn warn(&mut self, warning: Warning) {
        self.warnings.push(warning.to_string());
        self.emit(Event::Warning(warning));
    }

    fn check_cancelled(&self) -> Result<(), SyncError> {
        match self.cancellation.is_cancelled() {
            true => Err(cancelled(&self.cancellation)),
            false => Ok(()),
        }
    }

    async fn sync(&mut self, started_at: chrono::DateTime<chrono::Local>) -> Result<(), SyncError> {
        if let Some(directory) = self.settings.resume.clone()
            && self.resume(&directory, started_at).await?
        {
            return Ok(());
        }
        let (mut source, plan, unreadable) = self.inspect_source().await?;
        let needs = catalog::TargetNeeds::of(&source.inventory);
        self.check_target(&needs, Some((&source, &plan)), Some(source.free_slots))
            .await?;
        let tools = preflight::locate_tools(self.settings, &source)?;
        let mut copy = 1;
        loop {
            let result = self.copy(&source, &plan, &tools, &unreadable, started_at, copy).await;
            // The source restarted: the snapshot is gone, and no part of this copy can be kept.
            let snapshot_lost = result.is_err() && source.client.is_closed() && !self.workspace.is_swapped();
            if !snapshot_lost || copy >= COPIES_AFTER_A_LOST_SNAPSHOT || self.root_cancellation.is_cancelled() {
                return result;
            }
            copy += 1;
            self.warn(Warning::SnapshotLost {
                copy,
                of: COPIES_AFTER_A_LOST_SNAPSHOT,
            });
            self.workspace.drop_unfinished_copy(&*self.reporter).await?;
            self.cancellation = self.root_cancellation.child();
            source = self.reconnect_source(source).await?;
            self.progress.set_plan(&plan);
        }
    }

    /// One copy from one snapshot: prepare, schema and data, post-data, validation, swap.
    async fn copy(
        &mut self,
        source: &Source,
        plan: &Plan,
        tools: &PgTools,
        unreadable: &[QualifiedName],
        started_at: chrono::DateTime<chrono::Local>,
        copy: u32,
    ) -> Result<(), SyncError> {
        let job = self
            .prepare(source, plan, tools.clone(), unreadable.to_vec(), started_at, copy == 1)
            .await?;
        let plan = self.split_large_tables(&job, plan, source).await?;
        self.progress.set_plan(&plan);
        let plan = Arc::new(plan);
        let counting = async {
            if job.record_progress {
                self.record_source_counts(&job, &plan, source).await;
            }
        };
        let (post_data, ()) = tokio::join!(self.copy_schema_and_data(&job, &plan, source), counting);
        let post_data = post_data?;
        self.restore_post_data(&job, &plan, &post_data).await?;
        let source_counts = self.validate(&job, &plan, source).await?;
        if self.settings.keep_dumps() {
            self.write_manifest(&job, &plan, source, &source_counts).await;
        }
        self.swap(&job, &source.database, &source.settings).await
    }

    /// A new session on the source once it accepts connections again, for a new snapshot.
    async fn reconnect_source(&self, source: Source) -> Result<Source, SyncError> {
        let settings = self.settings;
        let policy = RetryPolicy {
            retries: settings.retries.max(3),
            base_delay: Duration::from_secs(1),
        };
        let connect = |_| async {
            let (client, pid) = preflight::connect_source(settings, &self.cancellation)
                .await
                .map_err(|error| match error {
                    SyncError::Failed(error) => steps::database_attempt_error(error),
                    other => AttemptError::Permanent(anyhow::anyhow!("{other:#}")),
                })?;
            Ok((client, pid))
        };
        let (client, pid) = with_retries(policy, &self.cancellation, |_, _, _| {}, connect)
            .await
            .map_err(|error| step_error(&self.cancellation, error))?;
        Ok(Source {
            client: Arc::new(client),
            pid,
            ..source
        })
    }

    /// PREFLIGHT, source side: the catalogs, the plan, and what the source user may read.
    /// Returns the tables to leave out of the schema dump.
    async fn inspect_source(&mut self) -> Result<(Source, Plan, Vec<QualifiedName>), SyncError> {
        let settings = self.settings;
        let (client, pid) = preflight::connect_source(settings, &self.cancellation).await?;
        let inspect = preflight::inspect_source(client, pid, &settings.source().user, &self.cancellation);
        let source = self.reporting_lock_waits(pid, inspect).await?;
        let plan = preflight::plan(settings, &source.inventory)?;
        self.adopt_plan(&plan);
        let unreadable = preflight::check_source_access(&source, &plan, &self.cancellation).await?;
        self.masks = preflight::resolve_masks(settings, &plan, &self.cancellation).await?;
        if !unreadable.is_empty() {
            self.deferred_warnings.push(Warning::DefinitionsNotCopied {
                tables: unreadable.iter().map(QualifiedName::display_name).collect(),
            });
        }
        Ok((source, plan, unreadable))
    }

    /// PREFLIGHT, target side: refusals, the run's lock, leftovers of dead runs, the sessions
    /// the servers can spare, client tools, consent. Returns the tools.
    async fn check_target(
        &mut self,
        needs: &catalog::TargetNeeds,
        source: Option<(&Source, &Plan)>,
        source_free: Option<i64>,
    ) -> Result<(), SyncError> {
        let settings = self.settings;
        let source_server = source.map(|(source, _)| &source.server);
        let (target, target_free, roles_to_copy) =
            preflight::check_target(settings, needs, source_server, &self.cancellation).await?;
        preflight::check_lock_capacity(source, &target, needs, &self.cancellation).await?;
        self.workspace.target_server = Some(target);
        // Holding the target's lock: whatever earlier runs left is theirs no more. Before the
        // consent, since a previous target renamed back is what the consent is about.
        let found = self
            .workspace
            .remove_leftovers(settings.target(), &settings.dump_dir, &*self.reporter)
            .await?;
        self.deferred_warnings.extend(found);
        let target_server = self.workspace.target_server.as_ref().expect("just connected");
        let exists = target_server.database_exists(&settings.target().dbname);
        let target_exists = interruptible(&self.cancellation, exists).await?;
        let free = FreeSlots {
            source: source_free,
            target: Some(target_free),
        };
        let lowered = self.grant_jobs(free)?;
        self.deferred_warnings.extend(lowered);
        if target_exists {
            preflight::obtain_consent(settings, &self.cancellation).await?;
        }
        if let Some((source, _)) = source.filter(|_| !roles_to_copy.is_empty()) {
            self.copy_roles(&source.client, roles_to_copy, needs).await?;
        }
        self.run_hooks(HookStage::BeforeSync, settings.target()).await
    }

    /// The workspace, the banner, the snapshot and the empty copy; returns what every step shares.
    async fn prepare(
        &mut self,
        source: &Source,
        plan: &Plan,
        tools: PgTools,
        schema_exclusions: Vec<QualifiedName>,
        started_at: chrono::DateTime<chrono::Local>,
        first_copy: bool,
    ) -> Result<Arc<Job>, SyncError> {
        let settings = self.settings;
        let dump_directory = self.create_dump_directory(started_at)?;
        let passfile = self
            .workspace
            .create_passfile(&[settings.source(), settings.target()])?;
        if let Transfer::Files { .. } = settings.transfer
            && let Some(free) = preflight::free_space(&settings.dump_dir)
        {
            self.deferred_warnings
                .extend(preflight::dump_space_warning(free, plan, &settings.dump_dir));
        }
        if first_copy {
            self.announce(plan, &tools, &dump_directory, started_at);
        }

        self.emit(Event::Phase(Phase::Schema));
        self.emit(Event::Notice(Notice::Locking {
            tables: plan.tables.len(),
        }));
        let snapshot = self.take_snapshot(source, plan).await?;
        let temporary = self.create_copy(&source.database, started_at).await?;
        let job = self.job(JobPlaces {
            snapshot: Some(steps::Snapshot {
                source: settings.source().clone(),
                id: snapshot,
                session: source.client.clone(),
            }),
            work_target: Some(settings.target().with_database(&temporary)),
            tools,
            passfile,
            schema_exclusions,
            scratch_directory: dump_directory.clone(),
            dump_directory,
            keep_dumps: settings.keep_dumps(),
            record_progress: settings.keep_dumps(),
            resuming: false,
        });
        if job.record_progress {
            let snapshot_taken_at =
                interruptible(&self.cancellation, catalog::transaction_started_at(&source.client)).await?;
            self.start_resume_state(&job, plan, source, snapshot_taken_at);
        }
        Ok(job)
    }

    /// The run's directory in `--dump-dir`, marked as working for the target.
    fn create_dump_directory(
        &mut self,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<std::path::PathBuf, SyncError> {
        let settings = self.settings;
        let timestamp = started_at.format("%Y%m%d_%H%M%S").to_string();
        self.workspace
            .create_dump_directory(&settings.dump_dir, &timestamp, settings.target())
            .map_err(|error| SyncError::Usage(format!("{error:#}\nhint: --dump-dir must name a writable directory")))
    }

    /// The job of this run: `places` says what it reads and writes, the settings the rest.
    fn job(&self, places: JobPlaces) -> Arc<Job> {
        let settings = self.settings;
        Arc::new(Job {
            snapshot: places.snapshot,
            work_target: places.work_target,
            tools: places.tools,
            passfile: places.passfile,
            schema_exclusions: places.schema_exclusions,
            dump_directory: places.dump_directory,
            scratch_directory: places.scratch_directory,
            keep_dumps: places.keep_dumps,
            record_progress: places.record_progress,
            resuming: places.resuming,
            dump_space: self.dump_space.clone(),
            jobs: self.granted_jobs(),
            analyze: settings.analyze,
            retry_policy: RetryPolicy {
                retries: settings.retries,
                base_delay: Duration::from_secs(1),
            },
            no_owner: settings.no_owner,
            no_privileges: settings.no_privileges,
            no_tablespaces: settings.no_tablespaces,
            session_options: settings.session_options.clone(),
            maintenance_work_mem_kb: steps::maintenance_share(settings.maintenance_memory, self.granted_jobs().get()),
            lock_timeout: settings.lock_timeout,
            cancellation: self.cancellation.clone(),
            part_transactions: Default::default(),
            mask_salt: settings.masking.salt.clone(),
        })
    }

    /// Locks the copied tables on the source and exports the snapshot every dump reads.
    async fn take_snapshot(&self, source: &Source, plan: &Plan) -> Result<String, SyncError> {
        let tables = plan.lock_targets();
        let export = catalog::export_snapshot(&source.client, &tables, self.settings.lock_timeout);
        self.reporting_lock_waits(source.pid, interruptible(&self.cancellation, export))
            .await
    }

    /// Runs `work` of the source session `pid`, saying which table and which sessions hold it up
    /// while it waits for a lock, and naming `--lock-timeout` when the wait ends it.
    async fn reporting_lock_waits<T>(
        &self,
        pid: i32,
        work: impl Future<Output = Result<T, SyncError>>,
    ) -> Result<T, SyncError> {
        let timeout = self.settings.lock_timeout;
        let result = tokio::select! {
            result = work => result,
            () = self.report_lock_waits(pid) => unreachable!("reports until dropped"),
        };
        result.map_err(|error| match error {
            SyncError::Failed(error)
                if catalog::database_error(&error)
                    .is_some_and(|cause| cause.code == Some(tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)) =>
            {
                SyncError::Failed(error.context(format!(
                    "the source's tables could not be locked within {} s (--lock-timeout); run again when the sessions named above are done, or wait longer",
                    timeout.as_secs()
                )))
            }
            other => other,
        })
    }

    /// While the snapshot session waits for a lock: after 5 s, then every 30 s, which table and
    /// which sessions hold it up. Runs until dropped.
    async fn report_lock_waits(&self, pid: i32) {
        let started = Instant::now();
        let mut pause = Duration::from_secs(5);
        let mut client = None;
        loop {
            tokio::time::sleep(pause).await;
            pause = Duration::from_secs(30);
            if client.is_none() {
                client = catalog::connect(self.settings.source(), "source").await.ok();
            }
            let Some(client) = &client else { continue };
            if let Ok(Some((table, holders))) = catalog::lock_wait(client, pid).await {
                self.emit(Event::Warning(Warning::WaitingForLock {
                    table,
                    holders,
                    waited: started.elapsed(),
                }));
            }
        }
    }

    /// The empty database the copy is built in, under a temporary name; returns the name.
    async fn create_copy(
        &mut self,
        database: &catalog::DatabaseInfo,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<String, SyncError> {
        let settings = self.settings;
        let temporary = temporary_name(&settings.target().dbname, &self.run_suffix);
        self.emit(Event::Notice(Notice::CreatingDatabase {
            temporary: temporary.clone(),
            target: settings.target().dbname.clone(),
        }));
        let comment = format!(
            "{COPY_COMMENT_PREFIX}{} in progress since {}; safe to drop if no dbsync is running",
            self.origin(),
            started_at.format("%Y-%m-%d %H:%M:%S")
        );
        let target_server = self.workspace.target_server.as_ref().expect("connected in preflight");
        interruptible(
            &self.cancellation,
            target_server.create_database(&temporary, database, &comment),
        )
        .await?;
        self.workspace.temporary_database_created(&temporary);
        Ok(temporary)
    }

    /// The configuration banner, what is selected, and the foreign keys that leave the selection.
    fn announce(
        &mut self,
        plan: &Plan,
        tools: &PgTools,
        dump_directory: &std::path::Path,
        started_at: chrono::DateTime<chrono::Local>,
    ) {
        let settings = self.settings;
        self.emit(Event::Banner(Banner {
            kind: match (&settings.source, &settings.target) {
                (Some(_), Some(_)) => RunKind::Sync,
                (Some(_), None) => RunKind::Dump,
                (None, _) => RunKind::Restore,
            },
            source: self.origin(),
            target: self.destination(),
            start_time: started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            dump_dir: dump_directory.display().to_string(),
            jobs: self.granted_jobs().get(),
            batch_size: settings.batch_size,
            tables: plan.tables.len(),
            units: plan.units.len(),
            tools_version: tools.version_text.clone(),
            tools_directory: tools
                .pg_dump
                .parent()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
        }));
        if settings.content == Content::SchemaOnly {
            self.emit(Event::Notice(Notice::SchemaOnly));
        } else if !plan.whole_database {
            self.emit(Event::Notice(Notice::SelectedTables {
                count: plan.tables.len(),
            }));
        }
        if plan.tables.is_empty() && settings.content != Content::SchemaOnly {
            self.warn(Warning::NoTableData);
        }
        for warning in std::mem::take(&mut self.deferred_warnings) {
            self.warn(warning);
        }
        for key in &plan.dangling_foreign_keys {
            self.warn(Warning::ForeignKey {
                key: outside_key(key),
                fate: KeyFate::WillFollow(plan.foreign_key_policy.as_str()),
            });
        }
    }

    fn announce_retry(&self, step: &'static str, attempt: u32, error: &anyhow::Error, delay: Duration) {
        self.emit(Event::Warning(Warning::Retrying {
            step,
            attempt,
            delay,
            error: last_meaningful_line(&format!("{error:#}")),
        }))
    }

    /// A step of the schema, tried again after transient failures, each retry announced.
    async fn retried<T, Fut>(
        &self,
        job: &Job,
        step: &'static str,
        attempt: impl FnMut(u32) -> Fut,
    ) -> Result<T, SyncError>
    where
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let on_retry = |attempt, error: &anyhow::Error, delay| self.announce_retry(step, attempt, error, delay);
        with_retries(job.retry_policy, &job.cancellation, on_retry, attempt)
            .await
            .map_err(|error| step_error(&self.cancellation, error))
    }

    /// PHASES 1 and 2: the schema dump, then pre-data alongside the units of data. Dumps start
    /// while the schema is still being created; loads wait for it.
    async fn copy_schema_and_data(
        &self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        source: &Source,
    ) -> Result<Arc<PostData>, SyncError> {
        self.emit(Event::Notice(Notice::SyncingSchema));
        let schema_dump = self.retried(job, "schema dump", |_| steps::schema::dump(job)).await?;
        let watched_source = Some((self.settings.source().clone(), source.server.major()));
        self.load_schema_and_data(job, plan, &schema_dump, &source.index_owners, watched_source)
            .await
    }

    /// Pre-data from `schema_dump` alongside the units of data (loads wait for it); returns the
    /// post-data still to restore. `watched_source` is the source whose progress is shown, if
    /// the rows come from one (a restore's come from its archive, already dumped).
    async fn load_schema_and_data(
        &self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        schema_dump: &std::path::Path,
        index_owners: &std::collections::HashMap<u32, u32>,
        watched_source: Option<(crate::connection::Endpoint, u32)>,
    ) -> Result<Arc<PostData>, SyncError> {
        let post_data = PostData::split(job, schema_dump, plan, index_owners)
            .await
            .map_err(|error| step_error(&self.cancellation, error))?;
        let post_data = Arc::new(post_data);
        self.emit(Event::Phase(Phase::Data));
        let (schema_sender, schema_ready) = tokio::sync::watch::channel(false);
        let pre_data = async {
            let done_before = job.resuming && marks::is_set(&job.dump_directory, marks::PRE_DATA_DONE);
            let result = match done_before {
                true => Ok(()),
                false => match self
                    .retried(job, "schema restore", |_| {
                        steps::schema::restore_pre_data(job, schema_dump)
                    })
                    .await
                {
                    Ok(()) => self.run_hooks(HookStage::AfterSchema, job.copy()).await,
                    failed => failed,
                },
            };
            if result.is_ok() && job.record_progress {
                marks::set(&job.dump_directory, marks::PRE_DATA_DONE);
            }
            match result {
                Ok(()) => drop(schema_sender.send(true)),
                Err(_) => job.cancellation.abort_for_failure(),
            }
            drop(schema_sender);
            result
        };
        let (pre_data_result, transfer_result) = tokio::join!(
            pre_data,
            self.transfer_data(job, plan, &post_data, watched_source, schema_ready)
        );
        pre_data_result?;
        transfer_result?;
        Ok(post_data)
    }

    /// Every unit through export and import (or a streamed copy; or, restoring an archive,
    /// import only), each table's indexes as soon as its rows are in, with progress watched
    /// alongside.
    async fn transfer_data(
        &self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        post_data: &Arc<PostData>,
        watched_source: Option<(crate::connection::Endpoint, u32)>,
        schema_ready: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), SyncError> {
        let settings = self.settings;
        let restoring = job.snapshot.is_none();
        let (stages_per_unit, loading) = match settings.transfer {
            Transfer::Stream => (1, Activity::Stream),
            Transfer::Files { .. } if restoring => (1, Activity::Import),
            Transfer::Files { .. } => (2, Activity::Import),
        };
        let (context, budget) = self.unit_context(job, plan, post_data.clone(), schema_ready);
        let streamed: Vec<&Arc<crate::plan::Unit>> = plan.units.iter().filter(|unit| context.streams(unit)).collect();
        let steps = plan.units.len() * stages_per_unit - streamed.len() * (stages_per_unit - 1);
        self.progress
            .streamed(streamed.iter().flat_map(|unit| unit.planned_tables.iter().copied()));
        self.emit(Event::StepsPlanned(steps));
        self.progress.data_started();
        if job.resuming {
            self.progress
                .indexes_built_before(&marks::built_tables(&job.dump_directory));
        }
        let target_major = self
            .workspace
            .target_server
            .as_ref()
            .map_or(0, |server| server.server.major());
        let watch = monitor::watch(
            self.progress.clone(),
            self.reporter.clone(),
            watched_source,
            (job.copy().clone(), target_major),
            loading,
        );
        let import_only = units::ImportOnly(context.clone());
        let work: &dyn crate::scheduler::UnitWork<crate::plan::Unit> = if restoring { &import_only } else { &context };
        let units = run_units(plan.units.clone(), budget, &self.cancellation, work);
        let result = tokio::select! {
            result = units => result,
            () = watch => unreachable!("the progress watch runs until dropped"),
        };
        result.map_err(|error| step_error(&self.cancellation, error))
    }

    /// PHASE 3: what needs every table loaded.
    async fn restore_post_data(
        &mut self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        post_data: &PostData,
    ) -> Result<(), SyncError> {
        self.emit(Event::Phase(Phase::PostData));
        if job.resuming && marks::is_set(&job.dump_directory, marks::POST_DATA_DONE) {
            return Ok(());
        }
        self.emit(Event::Notice(Notice::BuildingPostData));
        let started = Instant::now();
        let on_retry = |step, attempt, error: &anyhow::Error, delay| self.announce_retry(step, attempt, error, delay);
        let fates = post_data
            .restore_rest(job, plan, &on_retry)
            .await
            .map_err(|error| step_error(&self.cancellation, error))?;
        for (index, fate) in fates {
            self.warn(Warning::ForeignKey {
                key: outside_key(&plan.dangling_foreign_keys[index]),
                fate,
            });
        }
        if job.record_progress {
            marks::set(&job.dump_directory, marks::POST_DATA_DONE);
        }
        self.emit(Event::Notice(Notice::PostDataDone {
            elapsed: started.elapsed(),
        }));
        Ok(())
    }

    /// PHASE 4: rows and structure on both sides, the source's inside the snapshot. Only once
    /// post-data is done: a query on the copy while partition indexes are being attached can
    /// deadlock with them.
    async fn validate(&self, job: &Job, plan: &Plan, source: &Source) -> Result<Vec<i64>, SyncError> {
        let masks = self.member_masks(plan);
        self.emit(Event::Phase(Phase::Validation));
        let verification = self.settings.verification;
        let jobs = self.granted_jobs();
        // Retried like any step (the target server may be restarting), but not once the source's
        // side, counted in the snapshot, is gone.
        let reads = with_retries(
            job.retry_policy,
            &job.cancellation,
            |_, _, _| {},
            |_| async {
                job.check_snapshot()?;
                let target_client = job.connect_to_copy().await?;
                let counts = async {
                    match verification {
                        Verification::Skip => Ok(Vec::new()),
                        _ => steps::validate::count_rows(&source.client, &target_client, plan).await,
                    }
                };
                let checksums = async {
                    match verification {
                        Verification::Checksum => verify::checksum_copy(job, plan, jobs, &masks).await,
                        _ => Ok(Vec::new()),
                    }
                };
                let structures = steps::validate::read_structures(&source.client, &target_client);
                // Counting a large table takes a while; Ctrl+C does not wait for it.
                tokio::select! {
                    result = async { tokio::try_join!(counts, structures, checksums) } => result.map_err(steps::database_attempt_error),
                    () = job.cancellation.cancelled() => Err(AttemptError::Cancelled),
                }
            },
        );
        let (counts, (source_structure, copy_structure), checksum_differences) =
            reads.await.map_err(|error| step_error(&self.cancellation, error))?;
        if !checksum_differences.is_empty() {
            self.emit(Event::ChecksumDifferences(checksum_differences.clone()));
        }
        let rows = match verification {
            Verification::Count => RowCheck::Counts,
            Verification::Checksum => RowCheck::Checksums,
            Verification::Skip => RowCheck::NotCompared,
        };
        self.judge_copy(plan, counts, &source_structure, &copy_structure, rows)
            .and_then(|counts| match checksum_differences.len() {
                0 => Ok(counts),
                found => Err(SyncError::ValidationFailed(found)),
            })
    }

    /// The verdict on a copy from its counts and structure against the source's (read in the
    /// snapshot, or kept in an archive's manifest): the source's counts when all is equal.
    fn judge_copy(
        &self,
        plan: &Plan,
        counts: Vec<steps::validate::TableCount>,
        source_structure: &catalog::Structure,
        copy_structure: &catalog::Structure,
        rows: RowCheck,
    ) -> Result<Vec<i64>, SyncError> {
        let mismatches = steps::validate::count_mismatches(plan, &counts);
        let tables = plan.tables.len();
        let source_counts = counts.iter().map(|count| count.source).collect();
        self.progress.set_counts(counts);
        let differences = steps::validate::compare_structures(source_structure, copy_structure, plan);
        let found = mismatches.len() + differences.len();
        if !mismatches.is_empty() {
            self.emit(Event::Discrepancies(mismatches));
        }
        if !differences.is_empty() {
            self.emit(Event::StructureDifferences(differences));
        }
        if found > 0 {
            return Err(SyncError::ValidationFailed(found));
        }
        self.emit(Event::Notice(Notice::ValidationPassed { tables, rows }));
        Ok(source_counts)
    }

    /// The database's own properties, then the copy in place of the target.
    async fn swap(
        &mut self,
        job: &Job,
        database: &catalog::DatabaseInfo,
        database_settings: &[catalog::DatabaseSetting],
    ) -> Result<(), SyncError> {
        self.check_cancelled()?;
        self.run_hooks(HookStage::AfterImport, job.copy()).await?;
        let settings = self.settings;
        let temporary = job.copy().dbname.clone();
        let target_server = self.workspace.target_server.as_ref().expect("connected in preflight");
        let warnings = target_server
            .apply_database_properties(
                &temporary,
                database,
                database_settings,
                !settings.no_owner,
                &self.cancellation,
            )
            .await;
        for warning in warnings {
            self.warn(Warning::Other(warning));
        }
        self.check_cancelled()?;
        self.emit(Event::Notice(Notice::Swapping {
            temporary: temporary.clone(),
            target: settings.target().dbname.clone(),
        }));
        let target_server = self.workspace.target_server.as_ref().expect("connected in preflight");
        let swapped = target_server
            .swap_into_place(
                &temporary,
                &settings.target().dbname,
                &self.run_suffix,
                settings.terminate,
                &self.cancellation,
            )
            .await
            .map_err(SyncError::Failed)?;
        self.workspace.swapped();
        if !swapped.ended.is_empty() {
            self.emit(Event::Notice(Notice::EndedSessions {
                database: settings.target().dbname.clone(),
                count: swapped.ended.len(),
                who: describe_sessions(&swapped.ended),
            }));
        }
        if let Some(warning) = swapped.kept {
            self.warn(Warning::Other(warning));
        }
        Ok(())
    }

    fn summary(
        &self,
        result: &Result<(), SyncError>,
        elapsed: Duration,
        finished: Instant,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Summary {
        let (outcome, exit_code, error) = match result {
            Ok(()) => (Outcome::Success, EXIT_SUCCESS, None),
            Err(error) => (error.outcome(), error.exit_code(), Some(format!("{error:#}"))),
        };
        Summary {
            source: self.origin(),
            target: self.destination(),
            started_at: started_at.to_rfc3339(),
            total_seconds: elapsed.as_secs_f64(),
            outcome,
            exit_code,
            error,
            tables: self.progress.summary_rows(),
            sequences: self.plan_totals.0,
            large_objects: self.plan_totals.1,
            warnings: self.warnings.clone(),
            peak_memory_bytes: peak_memory_bytes(),
            peak_dump_bytes: self.dump_space.peak(),
            archives_dropped: self.archives_dropped.clone(),
            phases: self.phase_clock.times(finished),
        }
    }
}

fn outside_key(key: &crate::plan::DanglingForeignKey) -> OutsideKey {
    OutsideKey {
        name: key.name.clone(),
        table: key.table.display_name(),
        referenced_table: key.referenced_table.display_name(),
    }
}

/// The most memory dbsync itself (not its children) has held at once: the kernel's high-water
/// mark of this program's resident memory (`VmHWM`). Not `getrusage`: its `ru_maxrss` carries over
/// through `exec` the size of the process that started dbsync.
fn peak_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kibibytes * 1024)
        })
        .unwrap_or(0)
}
