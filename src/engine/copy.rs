//! The copy pipeline that sync, restore and a resumed run share (and dump, its export half): the
//! target's preflight and lock, the run's directory, banner and job, the empty copy under a
//! temporary name, pre-data alongside the units of data, post-data, the verdict on rows and
//! structure, and the swap that keeps the previous target until the copy is in place.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::context::{FreeSlots, RunContext};
use super::preflight::{self, Source};
use super::steps::postdata::PostData;
use super::steps::validate::TableCount;
use super::steps::{self, Job, marks};
use super::units::{self, UnitContext};
use super::{interruptible, monitor, step_error};
use crate::catalog::{self, QualifiedName};
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::hooks::HookStage;
use crate::manifest::Manifest;
use crate::plan::Plan;
use crate::report::{Activity, Banner, Event, KeyFate, Notice, OutsideKey, Phase, RowCheck, Warning};
use crate::scheduler::{AttemptError, Budget, RetryPolicy, run_units, with_retries};
use crate::settings::{Content, Transfer};
use crate::target::{COPY_COMMENT_PREFIX, describe_sessions, temporary_name};
use crate::tools::PgTools;

/// What a run's job reads and writes: the parts of a `Job` that differ between a sync, a dump
/// and a restore.
pub(super) struct JobPlaces {
    pub(super) snapshot: Option<steps::Snapshot>,
    pub(super) work_target: Option<crate::connection::Endpoint>,
    pub(super) tools: PgTools,
    pub(super) passfile: crate::process::InheritedFile,
    pub(super) schema_exclusions: Vec<QualifiedName>,
    pub(super) dump_directory: std::path::PathBuf,
    pub(super) scratch_directory: std::path::PathBuf,
    pub(super) keep_dumps: bool,
    pub(super) record_progress: bool,
    pub(super) resuming: bool,
}

/// What one copy is made from: the inspected source, the target it replaces, the plan, the
/// client tools, and the tables the schema dump leaves out.
#[derive(Clone, Copy)]
pub(super) struct CopyFrom<'a> {
    pub(super) source: &'a Source,
    pub(super) target: &'a Endpoint,
    pub(super) plan: &'a Plan,
    pub(super) tools: &'a PgTools,
    pub(super) schema_exclusions: &'a [QualifiedName],
}

/// Where a copy's schema and rows come from, as the target's preflight needs to know it.
#[derive(Clone, Copy)]
pub(super) enum SourceSide<'a> {
    /// A source server, inspected, and the plan of the copy.
    Server { source: &'a Source, plan: &'a Plan },
    /// An archive (a restore, or a resumed run's dumps) of a server of this major version.
    Archive { server_major: u32 },
}

impl RunContext<'_> {
    /// PREFLIGHT, target side: refusals, the run's lock, leftovers of dead runs, the sessions
    /// the servers can spare, client tools, consent. Returns the tools.
    pub(super) async fn check_target(
        &mut self,
        endpoint: &Endpoint,
        needs: &catalog::TargetNeeds,
        source: SourceSide<'_>,
        tools: &PgTools,
    ) -> Result<(), SyncError> {
        let settings = self.settings;
        let (inspected, source_free, source_major) = match source {
            SourceSide::Server { source, plan } => {
                (Some((source, plan)), Some(source.free_slots), source.server.major())
            }
            SourceSide::Archive { server_major } => (None, None, server_major),
        };
        let (target, target_free, roles_to_copy) = preflight::check_target(
            settings,
            endpoint,
            needs,
            inspected.map(|(source, _)| source),
            &self.cancellation,
        )
        .await?;
        // The schema is copied whole: into an older server only when asked, and able to hold it.
        preflight::refuse_downgrade(settings, source_major, target.server.major())?;
        self.majors = Some((source_major, target.server.major()));
        if let Some((source, _)) = inspected {
            preflight::refuse_what_an_older_target_cannot_hold(source, target.server.major(), &self.cancellation)
                .await?;
        }
        self.schema_transaction_size =
            preflight::check_lock_capacity(inspected, &target, needs, tools.restore_major, &self.cancellation).await?;
        self.workspace.target_server = Some(target);
        // Holding the target's lock: whatever earlier runs left is theirs no more. Before the
        // consent, since a previous target renamed back is what the consent is about.
        let found = self
            .workspace
            .remove_leftovers(endpoint, &settings.dump_dir, &*self.reporter)
            .await?;
        self.deferred_warnings.extend(found);
        let target_server = self.workspace.target_server.as_ref().expect("just connected");
        let exists = target_server.database_exists(&endpoint.dbname);
        let target_exists = interruptible(&self.cancellation, exists).await?;
        let free = FreeSlots {
            source: source_free,
            target: Some(target_free),
        };
        let lowered = self.grant_jobs(free)?;
        self.deferred_warnings.extend(lowered);
        if target_exists {
            preflight::obtain_consent(settings, endpoint, &self.cancellation).await?;
        }
        if let Some((source, _)) = inspected.filter(|_| !roles_to_copy.is_empty()) {
            self.copy_roles(&source.client, roles_to_copy, needs).await?;
        }
        self.run_hooks(HookStage::BeforeSync, endpoint).await
    }

    /// The workspace, the banner, the snapshot and the empty copy; returns what every step shares.
    pub(super) async fn prepare(
        &mut self,
        from: &CopyFrom<'_>,
        started_at: chrono::DateTime<chrono::Local>,
        first_copy: bool,
    ) -> Result<Arc<Job>, SyncError> {
        let settings = self.settings;
        let CopyFrom {
            source,
            target,
            plan,
            tools,
            schema_exclusions,
        } = *from;
        let dump_directory = self.create_dump_directory(target, started_at)?;
        let passfile = self.workspace.create_passfile(&[&source.endpoint, target])?;
        if let Transfer::Files { .. } = settings.transfer
            && let Some(free) = preflight::free_space(&settings.dump_dir)
        {
            self.deferred_warnings
                .extend(preflight::dump_space_warning(free, plan, &settings.dump_dir));
        }
        if first_copy {
            self.announce(plan, tools, &dump_directory, started_at);
        }

        self.emit(Event::Phase(Phase::Schema));
        self.emit(Event::Notice(Notice::Locking {
            tables: plan.tables.len(),
        }));
        let snapshot = self.take_snapshot(source, plan).await?;
        // Created beside the schema dump (`SyncMode::copy_schema_and_data`), and cleaned up from
        // now on: dropping a copy that was never made drops nothing (`IF EXISTS`).
        let temporary = temporary_name(&target.dbname, &self.run_suffix);
        self.workspace.temporary_database_created(&temporary);
        let job = self.job(JobPlaces {
            snapshot: Some(source.snapshot(snapshot)),
            work_target: Some(target.with_database(&temporary)),
            tools: tools.clone(),
            passfile,
            schema_exclusions: schema_exclusions.to_vec(),
            scratch_directory: dump_directory.clone(),
            dump_directory,
            keep_dumps: settings.keep_dumps(),
            record_progress: settings.keep_dumps(),
            resuming: false,
        });
        if job.record_progress {
            let snapshot_taken_at =
                interruptible(&self.cancellation, catalog::transaction_started_at(&source.client)).await?;
            self.start_resume_state(target, &job, plan, source, snapshot_taken_at);
        }
        Ok(job)
    }

    /// The run's directory in `--dump-dir`, marked as working for the target.
    pub(super) fn create_dump_directory(
        &mut self,
        target: &Endpoint,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<std::path::PathBuf, SyncError> {
        let settings = self.settings;
        let timestamp = started_at.format("%Y%m%d_%H%M%S").to_string();
        self.workspace
            .create_dump_directory(&settings.dump_dir, &timestamp, target)
            .map_err(|error| SyncError::Usage(format!("{error:#}\nhint: --dump-dir must name a writable directory")))
    }

    /// The job of this run: `places` says what it reads and writes, the settings the rest.
    pub(super) fn job(&self, places: JobPlaces) -> Arc<Job> {
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
            compression: settings.compression,
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
            schema_transaction_size: self.schema_transaction_size,
            // A 15+ schema `public` belongs to the database's owner and lets nobody else create
            // in it; a 13 or 14 server makes it the bootstrap user's, open to all.
            narrow_public_schema: self.majors.is_some_and(|(source, target)| source >= 15 && target < 15),
            chosen_rows_session: Default::default(),
        })
    }

    /// The empty database the copy is built in, under a temporary name; returns the name.
    pub(super) async fn create_copy(
        &mut self,
        target: &Endpoint,
        database: &catalog::DatabaseInfo,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<String, SyncError> {
        let temporary = temporary_name(&target.dbname, &self.run_suffix);
        self.create_database_of_copy(target, &temporary, database, started_at)
            .await?;
        self.workspace.temporary_database_created(&temporary);
        Ok(temporary)
    }

    /// Creates the empty copy `temporary`, commented as dbsync's; the caller records it in the
    /// workspace (a sync before it starts, since it creates it beside the schema dump).
    pub(super) async fn create_database_of_copy(
        &self,
        target: &Endpoint,
        temporary: &str,
        database: &catalog::DatabaseInfo,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<(), SyncError> {
        self.emit(Event::Notice(Notice::CreatingDatabase {
            temporary: temporary.to_string(),
            target: target.dbname.clone(),
        }));
        let comment = format!(
            "{COPY_COMMENT_PREFIX}{} in progress since {}; safe to drop if no dbsync is running",
            self.origin(),
            started_at.format("%Y-%m-%d %H:%M:%S")
        );
        let target_server = self.workspace.target_server.as_ref().expect("connected in preflight");
        interruptible(
            &self.cancellation,
            target_server.create_database(temporary, database, &comment),
        )
        .await
    }

    /// The configuration banner, what is selected, and the foreign keys that leave the selection.
    pub(super) fn announce(
        &mut self,
        plan: &Plan,
        tools: &PgTools,
        dump_directory: &std::path::Path,
        started_at: chrono::DateTime<chrono::Local>,
    ) {
        let settings = self.settings;
        self.emit(Event::Banner(Banner {
            kind: settings.kind(),
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
            tools_note: self
                .majors
                .and_then(|(_, target)| crate::tools::target_note(tools, target)),
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

    /// What the units of this run share, and the budget they run under.
    pub(super) fn unit_context(
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

    /// Pre-data from `schema_dump` alongside the units of data (loads wait for it); returns the
    /// post-data still to restore. `watched_source` is the source whose progress is shown, if
    /// the rows come from one (a restore's come from its archive, already dumped).
    pub(super) async fn load_schema_and_data(
        &self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        schema_dump: &std::path::Path,
        index_owners: &std::collections::HashMap<u32, u32>,
        (watched_source, before_rows): (
            Option<(crate::connection::Endpoint, u32)>,
            impl Future<Output = Result<(), SyncError>>,
        ),
    ) -> Result<Arc<PostData>, SyncError> {
        let post_data = PostData::split(job, schema_dump, plan, index_owners)
            .await
            .map_err(|error| step_error(&self.cancellation, error))?;
        let post_data = Arc::new(post_data);
        self.emit(Event::Phase(Phase::Data));
        let (schema_sender, schema_ready) = tokio::sync::watch::channel(false);
        let pre_data = async {
            let result = match self.restore_pre_data_once(job, schema_dump).await {
                Ok(()) => self.run_after_schema_hooks_once(job).await,
                failed => failed,
            };
            match result {
                Ok(()) => drop(schema_sender.send(true)),
                Err(_) => job.cancellation.abort_for_failure(),
            }
            drop(schema_sender);
            result
        };
        // What the rows need first (a subset's chosen rows) is done beside the pre-data restore.
        let transfer = async {
            if let Err(error) = before_rows.await {
                job.cancellation.abort_for_failure();
                return Err(error);
            }
            self.transfer_data(job, plan, &post_data, watched_source, schema_ready)
                .await
        };
        let (pre_data_result, transfer_result) = tokio::join!(pre_data, transfer);
        pre_data_result?;
        transfer_result?;
        Ok(post_data)
    }

    /// Every unit through export and import (or a streamed copy; or, restoring an archive,
    /// import only), each table's indexes as soon as its rows are in, with progress watched
    /// alongside.
    pub(super) async fn transfer_data(
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
    pub(super) async fn restore_post_data(
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

    /// Pre-data into the copy, unless a resumed run finds it restored; marked as soon as it is,
    /// so a run stopped later (by an `after_schema` hook, say) resumes after it.
    async fn restore_pre_data_once(&self, job: &Job, schema_dump: &std::path::Path) -> Result<(), SyncError> {
        if job.resuming && marks::is_set(&job.dump_directory, marks::PRE_DATA_DONE) {
            return Ok(());
        }
        if job.narrow_public_schema {
            job.on_copy(|client| async move { catalog::narrow_public_schema(&client).await })
                .await
                .map_err(|error| step_error(&self.cancellation, error))?;
        }
        self.retried(job, "schema restore", |_| {
            steps::schema::restore_pre_data(job, schema_dump)
        })
        .await?;
        if job.record_progress {
            marks::set(&job.dump_directory, marks::PRE_DATA_DONE);
        }
        Ok(())
    }

    /// The `after_schema` hooks, unless a resumed run finds they succeeded (a resume after one
    /// failed runs them again).
    async fn run_after_schema_hooks_once(&self, job: &Job) -> Result<(), SyncError> {
        if job.resuming && marks::is_set(&job.dump_directory, marks::AFTER_SCHEMA_DONE) {
            return Ok(());
        }
        self.run_hooks(HookStage::AfterSchema, job.copy()).await?;
        if job.record_progress {
            marks::set(&job.dump_directory, marks::AFTER_SCHEMA_DONE);
        }
        Ok(())
    }

    /// The source's planner statistics into the copy, where the tools and the target can
    /// (PostgreSQL 18) and `--no-statistics` was not given; then every table that has
    /// statistics on the source must have them on the copy (else exit 3).
    pub(super) async fn carry_statistics(&mut self, job: &Job, plan: &Plan, source: &Source) -> Result<(), SyncError> {
        let first = steps::statistics::FIRST_MAJOR;
        let target_major = self.majors.map_or(0, |(_, target)| target);
        let able = job.tools.dump_major >= first && job.tools.restore_major >= first && target_major >= first;
        // A subset's tables hold other rows than the source's statistics describe.
        if !self.settings.statistics || !able || job.snapshot.is_none() || self.subset.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        let members = plan.members();
        let among = (!plan.whole_database).then_some(members.as_slice());
        self.retried(job, "planner statistics", |_| {
            steps::statistics::dump_statistics(job, among)
        })
        .await?;
        let on_source = catalog::tables_with_statistics(&source.client, among);
        let on_source = interruptible(&self.cancellation, on_source).await?;
        self.restore_statistics(job, &on_source, among, started).await?;
        // Kept with the dumps, an archive carries them to a restore.
        if !job.keep_dumps {
            let _ = std::fs::remove_file(steps::statistics::statistics_dump_path(job));
        }
        Ok(())
    }

    /// The statistics dump of the run's directory into the copy; then every table of
    /// `on_source` (those with statistics on the source) must have them on the copy (else exit 3).
    pub(super) async fn restore_statistics(
        &mut self,
        job: &Job,
        on_source: &std::collections::BTreeSet<String>,
        among: Option<&[QualifiedName]>,
        started: Instant,
    ) -> Result<(), SyncError> {
        self.retried(job, "planner statistics", |_| {
            steps::statistics::restore_statistics(job)
        })
        .await?;
        let on_copy = job
            .on_copy(|copy| async move { catalog::tables_with_statistics(&copy, among).await })
            .await
            .map_err(|error| step_error(&self.cancellation, error))?;
        let missing: Vec<&String> = on_source.difference(&on_copy).collect();
        if !missing.is_empty() {
            self.warn(Warning::Other(format!(
                "planner statistics did not arrive on the copy for {} table(s): {}",
                missing.len(),
                missing.iter().map(|name| name.as_str()).collect::<Vec<_>>().join(", ")
            )));
            return Err(SyncError::ValidationFailed(missing.len()));
        }
        self.emit(Event::Notice(Notice::StatisticsCarried {
            tables: on_copy.len(),
            elapsed: started.elapsed(),
        }));
        Ok(())
    }

    /// The verdict on a copy from its counts and structure against the source's (read in the
    /// snapshot, or kept in an archive's manifest): the source's counts when all is equal.
    pub(super) fn judge_copy(
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

    /// The source database's comment (marked for a dated archive), owner and settings on the
    /// copy, and its schema `public` as a 15+ source has it.
    async fn give_database_properties(
        &mut self,
        job: &Job,
        database: &catalog::DatabaseInfo,
        database_settings: &[catalog::DatabaseSetting],
    ) -> Result<(), SyncError> {
        let settings = self.settings;
        let target_server = self.workspace.target_server.as_ref().expect("connected in preflight");
        // A dated archive says so in its comment: what retention requires before it drops one.
        let marked = settings.dated.as_ref().map(|template| catalog::DatabaseInfo {
            comment: Some(template.marked_comment(database.comment.as_deref())),
            ..database.clone()
        });
        let warnings = target_server
            .apply_database_properties(
                &job.copy().dbname,
                marked.as_ref().unwrap_or(database),
                database_settings,
                !settings.no_owner,
                &self.cancellation,
            )
            .await;
        for warning in warnings {
            self.warn(Warning::Other(warning));
        }
        if job.narrow_public_schema {
            // Once the copy has its owner: a 15+ `public` is the database owner's.
            job.on_copy(|client| async move { catalog::public_schema_to_database_owner(&client).await })
                .await
                .map_err(|error| step_error(&self.cancellation, error))?;
        }
        Ok(())
    }

    /// The database's own properties, then the copy in place of the target.
    pub(super) async fn swap(
        &mut self,
        target: &Endpoint,
        job: &Job,
        database: &catalog::DatabaseInfo,
        database_settings: &[catalog::DatabaseSetting],
    ) -> Result<(), SyncError> {
        self.check_cancelled()?;
        self.run_hooks(HookStage::AfterImport, job.copy()).await?;
        let settings = self.settings;
        let temporary = job.copy().dbname.clone();
        self.give_database_properties(job, database, database_settings).await?;
        self.check_cancelled()?;
        self.emit(Event::Notice(Notice::Swapping {
            temporary: temporary.clone(),
            target: target.dbname.clone(),
        }));
        let target_server = self.workspace.target_server.as_ref().expect("connected in preflight");
        let swapped = target_server
            .swap_into_place(
                &temporary,
                &target.dbname,
                &self.run_suffix,
                settings.terminate,
                &self.cancellation,
            )
            .await
            .map_err(SyncError::Failed)?;
        self.workspace.swapped();
        if !swapped.ended.is_empty() {
            self.emit(Event::Notice(Notice::EndedSessions {
                database: target.dbname.clone(),
                count: swapped.ended.len(),
                who: describe_sessions(&swapped.ended),
            }));
        }
        if let Some(warning) = swapped.kept {
            self.warn(Warning::Other(warning));
        }
        Ok(())
    }
}

pub(super) fn outside_key(key: &crate::plan::DanglingForeignKey) -> OutsideKey {
    OutsideKey {
        name: key.name.clone(),
        table: key.table.display_name(),
        referenced_table: key.referenced_table.display_name(),
    }
}

impl RunContext<'_> {
    /// PHASE 4: the copy's rows and structure against what the manifest recorded in the dump's
    /// snapshot (a restore's, or a resumed run's).
    pub(super) async fn validate_against_manifest(
        &self,
        job: &Job,
        plan: &Plan,
        manifest: &Manifest,
    ) -> Result<(), SyncError> {
        self.emit(Event::Phase(Phase::Validation));
        if self.settings.verification == crate::settings::Verification::Checksum {
            self.emit(Event::Warning(Warning::Other(
                "rows are compared with the counts recorded in the dump's snapshot: checksums need that snapshot, which is gone".into(),
            )));
        }
        let names: Vec<QualifiedName> = plan.tables.iter().map(|table| table.name.clone()).collect();
        let reads = with_retries(
            job.retry_policy,
            &job.cancellation,
            |_, _, _| {},
            |_| async {
                let client = job.connect_to_copy().await?;
                let reads =
                    async { tokio::try_join!(catalog::row_counts(&client, &names), catalog::structure(&client, &[])) };
                tokio::select! {
                    result = reads => result.map_err(steps::database_attempt_error),
                    () = job.cancellation.cancelled() => Err(AttemptError::Cancelled),
                }
            },
        );
        let (copy_counts, copy_structure) = reads.await.map_err(|error| step_error(&self.cancellation, error))?;
        let counts = manifest
            .tables
            .iter()
            .zip(copy_counts)
            .map(|(table, rows)| TableCount {
                source: table.rows,
                target: Some(rows),
            })
            .collect();
        self.judge_copy(
            plan,
            counts,
            &manifest.restore.structure,
            &copy_structure,
            RowCheck::Counts,
        )
        .map(|_| ())
    }
}
