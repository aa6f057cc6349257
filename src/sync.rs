//! The sync pipeline, end to end: inspect, snapshot, prepare the target, pre-data, export and
//! import of units, post-data, validate, swap, and a cleanup that runs on every way out.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::catalog::{self, DatabaseInfo, DatabaseSetting, Inventory};
use crate::errors::{EXIT_SUCCESS, SyncError, signal_name};
use crate::phase::postdata::PostData;
use crate::phase::{self, Job};
use crate::plan::{self, Plan, PlanRequest, Unit};
use crate::report::{Activity, Banner, Event, Reporter, Summary, SummaryRow, TableState, human_duration, human_size};
use crate::scheduler::{
    AttemptError, Cancellation, RetryPolicy, StageFuture, StepError, UnitWork, run_units, with_retries,
};
use crate::secrets::PassFile;
use crate::settings::Settings;
use crate::target::{TargetServer, bounded_name};
use crate::{pgtools, usage_error};

const TOTAL_PHASES: u8 = 4;

/// What `run` leaves behind for the caller: the outcome and the summary to report.
pub struct Outcome {
    pub result: Result<(), SyncError>,
    pub summary: Summary,
}

/// Everything cleanup needs to know, filled in as the run progresses.
struct Run<'a> {
    settings: &'a Settings,
    reporter: Arc<dyn Reporter>,
    cancellation: Cancellation,
    target_server: Option<TargetServer>,
    temporary_database: Option<String>,
    swapped: bool,
    dump_directory: Option<tempfile::TempDir>,
    passfile: Option<PassFile>,
    progress: Arc<Mutex<Progress>>,
    counts: Vec<phase::validate::TableCount>,
    plan: Option<Plan>,
    warnings: Vec<String>,
    dump_space: Arc<phase::DumpSpace>,
}

/// Per planned table: how its units are getting on, for STARTED/DONE lines and the summary.
#[derive(Default)]
struct TableProgress {
    /// Units still to export, and still to load (imported or streamed).
    units_left: [usize; 2],
    started: [Option<Instant>; 2],
    elapsed: [Duration; 2],
    dump_bytes: u64,
    failed: bool,
    /// Its indexes are built or being built.
    indexes_started: bool,
}

#[derive(Default)]
struct Progress {
    tables: Vec<TableProgress>,
}

/// Export counts apart; an import and a streamed copy both load.
fn stage_index(activity: Activity) -> usize {
    match activity {
        Activity::Export => 0,
        Activity::Import | Activity::Stream | Activity::Index => 1,
    }
}

pub async fn run(settings: &Settings, reporter: Arc<dyn Reporter>, cancellation: Cancellation) -> Outcome {
    let started = Instant::now();
    let started_at = chrono::Local::now();
    let mut run = Run {
        settings,
        reporter: reporter.clone(),
        cancellation: cancellation.clone(),
        target_server: None,
        temporary_database: None,
        swapped: false,
        dump_directory: None,
        passfile: None,
        progress: Arc::new(Mutex::new(Progress::default())),
        counts: Vec::new(),
        plan: None,
        warnings: Vec::new(),
        dump_space: Default::default(),
    };
    let mut result = run.execute(started_at).await;
    run.clean_up().await;
    // Whatever failed while a signal was being handled, the signal is why the run ended.
    if let Some(signal) = cancellation.interrupting_signal()
        && !run.swapped
    {
        result = Err(SyncError::Interrupted(signal));
    }
    let summary = run.summary(&result, started.elapsed(), started_at);
    Outcome { result, summary }
}

impl Run<'_> {
    fn emit(&self, event: Event) {
        self.reporter.emit(event);
    }

    fn check_cancelled(&self) -> Result<(), SyncError> {
        match self.cancellation.interrupting_signal() {
            Some(signal) => Err(SyncError::Interrupted(signal)),
            None => Ok(()),
        }
    }

    /// Awaits a database call unless a signal arrives first.
    async fn interruptible<T>(&self, future: impl Future<Output = anyhow::Result<T>>) -> Result<T, SyncError> {
        tokio::select! {
            result = future => result.map_err(SyncError::Failed),
            _ = self.cancellation.cancelled() => {
                Err(self.check_cancelled().err().unwrap_or_else(|| SyncError::Failed(anyhow::anyhow!("stopped"))))
            }
        }
    }

    async fn execute(&mut self, started_at: chrono::DateTime<chrono::Local>) -> Result<(), SyncError> {
        let settings = self.settings;
        let source_client = self.interruptible(catalog::connect(&settings.source, "source")).await?;
        let source_server = self.interruptible(catalog::server_info(&source_client)).await?;
        let database_info: DatabaseInfo = self
            .interruptible(catalog::database_info(&source_client, source_server.major()))
            .await?;
        let database_settings: Vec<DatabaseSetting> =
            self.interruptible(catalog::database_settings(&source_client)).await?;
        let inventory: Inventory = self.interruptible(catalog::inventory(&source_client)).await?;
        let index_owners = self
            .interruptible(catalog::index_and_constraint_tables(&source_client))
            .await?;

        let plan = plan::build(
            &inventory,
            &PlanRequest {
                include: &settings.include,
                exclude: &settings.exclude,
                jobs: settings.jobs,
                foreign_key_policy: settings.foreign_keys,
            },
        )?;

        let target_server = self.interruptible(TargetServer::connect(&settings.target)).await?;
        let target_exists = self
            .interruptible(target_server.database_exists(&settings.target.dbname))
            .await?;
        let same_cluster = match (source_server.system_identifier, target_server.server.system_identifier) {
            (Some(source), Some(target)) => source == target,
            _ => settings.source.host == settings.target.host && settings.source.port == settings.target.port,
        };
        if same_cluster && settings.source.dbname == settings.target.dbname {
            return Err(usage_error!(
                "the source and the target are the same database ({}); choose another target database name",
                settings.target
            ));
        }
        self.target_server = Some(target_server);
        self.check_target_can_hold_the_copy(&inventory).await?;

        let tools = pgtools::locate(settings.pg_bin.as_deref(), source_server.major())
            .map_err(|error| SyncError::Usage(format!("{error:#}")))?;
        if target_exists {
            self.obtain_consent().await?;
        }

        let dump_directory = tempfile::Builder::new()
            .prefix(&format!("dbsync_dumps_{}_", started_at.format("%Y%m%d_%H%M%S")))
            .tempdir_in(&settings.dump_dir)
            .with_context(|| format!("cannot create a dump directory in {}", settings.dump_dir.display()))?;
        let dump_path = dump_directory.path().to_path_buf();
        self.dump_directory = Some(dump_directory);
        let passfile = PassFile::create(&[&settings.source, &settings.target])?;
        let passfile_path = passfile.path();
        self.passfile = Some(passfile);

        self.emit(Event::Banner(Banner {
            source: settings.source.to_string(),
            target: settings.target.to_string(),
            start_time: started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            dump_dir: dump_path.display().to_string(),
            jobs: settings.jobs,
            batch_size: settings.batch_size,
            tables: plan.tables.len(),
            units: plan.units.len(),
            tools: format!(
                "{} ({})",
                tools.version_text,
                tools
                    .pg_dump
                    .parent()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default()
            ),
        }));
        if !plan.whole_database {
            self.emit(Event::Info(format!(
                "Copying data of {} selected table(s); the schema is copied whole",
                plan.tables.len()
            )));
        }
        for key in &plan.dangling_foreign_keys {
            self.emit(Event::Warning(format!(
                "foreign key {} on {} references {}, whose data is not selected; policy: {}",
                key.name,
                key.table,
                key.referenced_table,
                plan.foreign_key_policy.as_str()
            )));
        }

        // PHASE 1: the snapshot, the empty copy and its schema.
        self.emit(Event::Phase {
            number: 1,
            total: TOTAL_PHASES,
            title: "Schema Synchronization".into(),
        });
        self.emit(Event::Info(format!(
            "Locking {} table(s) and exporting a snapshot of the source...",
            plan.tables.len()
        )));
        let snapshot = self
            .interruptible(catalog::export_snapshot(&source_client, &plan.lock_targets()))
            .await?;
        let suffix = format!("{:08x}", rand::random::<u32>());
        let temporary = bounded_name(&settings.target.dbname, &format!("_dbsync_{suffix}"));
        self.emit(Event::Info(format!(
            "Creating database {temporary} (becomes {} when complete)",
            settings.target.dbname
        )));
        let comment = format!(
            "dbsync: copy of {} in progress since {}; safe to drop if no dbsync is running",
            settings.source,
            started_at.format("%Y-%m-%d %H:%M:%S")
        );
        let target_server = self.target_server.as_ref().expect("connected above");
        self.interruptible(target_server.create_database(&temporary, &database_info, &comment))
            .await?;
        self.temporary_database = Some(temporary.clone());

        let job = Arc::new(Job {
            source: settings.source.clone(),
            work_target: settings.target.with_database(&temporary),
            tools,
            passfile: passfile_path,
            snapshot,
            dump_directory: dump_path,
            keep_dumps: settings.keep_dumps,
            dump_space: self.dump_space.clone(),
            jobs: settings.jobs,
            analyze: settings.analyze,
            retry_policy: RetryPolicy {
                retries: settings.retries,
                base_delay: Duration::from_secs(1),
            },
            no_owner: settings.no_owner,
            no_privileges: settings.no_privileges,
            cancellation: self.cancellation.clone(),
            reporter: self.reporter.clone(),
        });
        self.emit(Event::Info(
            "Syncing schema (types, tables, functions, sequences)...".into(),
        ));
        let schema_dump = phase::schema::dump(&job)
            .await
            .map_err(|error| self.step_error(error))?;
        let post_data = PostData::split(&job, &schema_dump, &plan, &index_owners)
            .await
            .map_err(|error| self.step_error(error))?;
        // PHASE 2: data, each table's indexes as soon as its rows are in. Dumps start while the
        // schema is still being created; loads wait for it.
        self.emit(Event::Phase {
            number: 2,
            total: TOTAL_PHASES,
            title: "Data Export and Import".into(),
        });
        let plan = Arc::new(plan);
        let post_data = Arc::new(post_data);
        let (schema_sender, schema_ready) = tokio::sync::watch::channel(false);
        let pre_data = async {
            let result = phase::schema::restore_pre_data(&job, &schema_dump).await;
            match result {
                Ok(()) => {
                    let _ = schema_sender.send(true);
                }
                Err(_) => job.cancellation.abort_for_failure(),
            }
            drop(schema_sender);
            result
        };
        let (pre_data_result, transfer_result) =
            tokio::join!(pre_data, self.transfer_data(&job, &plan, &post_data, schema_ready));
        pre_data_result.map_err(|error| self.step_error(error))?;
        transfer_result?;

        // PHASE 3: what needs every table loaded.
        self.emit(Event::Phase {
            number: 3,
            total: TOTAL_PHASES,
            title: "Constraints, Triggers and Views".into(),
        });
        self.emit(Event::Info(
            "Building foreign keys and triggers; refreshing materialized views...".into(),
        ));
        let post_data_started = Instant::now();
        // Every row is loaded and nothing left changes rows, so the counts run alongside.
        let target_client = self.interruptible(catalog::connect(&job.work_target, "target")).await?;
        let (post_data_result, counts) = tokio::join!(
            post_data.restore_rest(&job, &plan),
            self.interruptible(phase::validate::count_rows(&source_client, &target_client, &plan))
        );
        let warnings = post_data_result.map_err(|error| self.step_error(error))?;
        for warning in &warnings {
            self.emit(Event::Warning(warning.clone()));
        }
        self.warnings.extend(warnings);
        self.emit(Event::Info(format!(
            "Post-data done in {}",
            human_duration(post_data_started.elapsed())
        )));

        // PHASE 4: counts on both sides, the source inside the snapshot.
        self.emit(Event::Phase {
            number: 4,
            total: TOTAL_PHASES,
            title: "Validation".into(),
        });
        self.counts = counts?;
        drop(target_client);
        drop(source_client);
        let mismatches: Vec<String> = plan
            .tables
            .iter()
            .zip(&self.counts)
            .filter(|(_, count)| !count.matches())
            .map(|(table, count)| {
                format!(
                    "{}: source {} rows, target {} rows",
                    table.name, count.source, count.target
                )
            })
            .collect();
        self.plan = Some(Arc::unwrap_or_clone(plan));
        if !mismatches.is_empty() {
            self.emit(Event::Error(format!(
                "Validation Discrepancies Found:\n{}",
                mismatches.join("\n")
            )));
            return Err(SyncError::ValidationFailed(mismatches.len()));
        }
        self.emit(Event::Info(format!(
            "✅ Validation Successful. All {} tables match.",
            self.counts.len()
        )));

        self.check_cancelled()?;
        let target_server = self.target_server.as_ref().expect("connected above");
        let warnings = target_server
            .apply_database_properties(&temporary, &database_info, &database_settings, !settings.no_owner)
            .await;
        for warning in &warnings {
            self.emit(Event::Warning(warning.clone()));
        }
        self.warnings.extend(warnings);
        self.check_cancelled()?;
        self.emit(Event::Info(format!(
            "Swapping {temporary} into place as {}",
            settings.target.dbname
        )));
        let swap_warning = target_server
            .swap_into_place(&temporary, &settings.target.dbname, &suffix)
            .await
            .map_err(SyncError::Failed)?;
        self.swapped = true;
        self.temporary_database = None;
        if let Some(warning) = swap_warning {
            self.emit(Event::Warning(warning.clone()));
            self.warnings.push(warning);
        }
        Ok(())
    }

    fn step_error(&self, error: StepError) -> SyncError {
        match error {
            StepError::Failed(error) => SyncError::Failed(error),
            StepError::Cancelled => self
                .check_cancelled()
                .err()
                .unwrap_or_else(|| SyncError::Failed(anyhow::anyhow!("stopped after another step failed"))),
        }
    }

    /// Roles and extensions the restore will need, checked before anything is created.
    async fn check_target_can_hold_the_copy(&self, inventory: &Inventory) -> Result<(), SyncError> {
        let settings = self.settings;
        let target = self.target_server.as_ref().expect("connected");
        let roles = &inventory.required_roles;
        let mut wanted = roles.policy_roles.clone();
        if !settings.no_owner {
            wanted.extend(roles.owners.iter().cloned());
        }
        if !settings.no_privileges {
            wanted.extend(roles.grantees.iter().cloned());
        }
        let missing = self
            .interruptible(catalog::missing_roles(&target.client, &wanted))
            .await?;
        if !missing.is_empty() {
            let policy_only: Vec<&String> = missing
                .iter()
                .filter(|role| roles.policy_roles.contains(*role))
                .collect();
            let advice = if policy_only.is_empty() {
                "create them on the target server, or pass --no-owner --no-privileges to give every object to the target user"
            } else {
                "create them on the target server (row-level-security policies name them, so --no-owner/--no-privileges do not help)"
            };
            return Err(usage_error!(
                "roles that own or are granted objects in the source database do not exist on the target server: {}\nhint: {advice}",
                missing.join(", ")
            ));
        }
        let unavailable = self
            .interruptible(catalog::unavailable_extensions(&target.client, &inventory.extensions))
            .await?;
        if !unavailable.is_empty() {
            return Err(SyncError::Failed(anyhow::anyhow!(
                "the target server cannot create extensions the source database uses: {}\nhint: install them on the target server first",
                unavailable.join(", ")
            )));
        }
        Ok(())
    }

    /// Replacing an existing database needs `--yes`, or a "yes" typed at a terminal.
    async fn obtain_consent(&self) -> Result<(), SyncError> {
        let settings = self.settings;
        if settings.assume_yes {
            return Ok(());
        }
        let question = format!(
            "The target database {} exists and will be replaced once the copy is complete. Continue? [y/N] ",
            settings.target
        );
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(usage_error!(
                "the target database {} exists; pass --yes to replace it (it is kept until the new copy is complete and validated)",
                settings.target
            ));
        }
        let answer = tokio::task::spawn_blocking(move || {
            eprint!("{question}");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        });
        let answer = tokio::select! {
            answer = answer => answer.map_err(|error| anyhow::anyhow!("{error}"))?.context("cannot read the answer")?,
            _ = self.cancellation.cancelled() => return Err(self.check_cancelled().unwrap_err()),
        };
        if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            Err(usage_error!(
                "not replacing {}: the answer was not yes",
                settings.target
            ))
        }
    }

    async fn transfer_data(
        &self,
        job: &Arc<Job>,
        plan: &Arc<Plan>,
        post_data: &Arc<PostData>,
        schema_ready: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), SyncError> {
        {
            let mut progress = self.progress.lock().expect("not poisoned");
            progress.tables = plan.tables.iter().map(|_| TableProgress::default()).collect();
            for (table, units) in plan::units_per_table(plan) {
                progress.tables[table].units_left = [units, units];
            }
        }
        let stages_per_unit = if self.settings.stream { 1 } else { 2 };
        self.emit(Event::StepsPlanned(plan.units.len() * stages_per_unit));
        let context = Arc::new(UnitContext {
            job: job.clone(),
            plan: plan.clone(),
            post_data: post_data.clone(),
            stream: self.settings.stream,
            schema_ready,
            progress: self.progress.clone(),
            index_batches: AtomicUsize::new(0),
            table_names: plan.tables.iter().map(|table| table.name.display_name()).collect(),
            descriptions: plan.tables.iter().map(|table| table.description.clone()).collect(),
            planned_table_by_oid: plan
                .tables
                .iter()
                .enumerate()
                .flat_map(|(index, table)| table.member_oids.iter().map(move |oid| (*oid, index)))
                .collect(),
        });
        let budget = self
            .settings
            .batch_size
            .unwrap_or(self.settings.jobs)
            .min(self.settings.jobs)
            .max(1);
        run_units(plan.units.clone(), budget, &self.cancellation, &context)
            .await
            .map_err(|error| self.step_error(error))
    }

    async fn clean_up(&mut self) {
        self.emit(Event::Heading("FINAL CLEANUP".into()));
        if let (Some(server), Some(temporary)) = (&self.target_server, self.temporary_database.take()) {
            self.reporter
                .emit(Event::Info(format!("Dropping the unfinished copy {temporary}")));
            match tokio::time::timeout(Duration::from_secs(60), server.drop_database(&temporary)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => self.emit(Event::Warning(format!("{error:#}; drop it by hand"))),
                Err(_) => self.emit(Event::Warning(format!(
                    "dropping {temporary} timed out; drop it by hand"
                ))),
            }
        }
        if let Some(directory) = self.dump_directory.take() {
            if self.settings.keep_dumps {
                let path = directory.keep();
                self.emit(Event::Info(format!("Keeping the dump directory: {}", path.display())));
            } else {
                self.emit(Event::Info(format!(
                    "Removing temporary directory: {}",
                    directory.path().display()
                )));
                if let Err(error) = directory.close() {
                    self.emit(Event::Warning(format!("could not remove the dump directory: {error}")));
                }
            }
        }
        // Dropping the password file removes it.
        self.passfile = None;
    }

    fn summary(
        &self,
        result: &Result<(), SyncError>,
        elapsed: Duration,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Summary {
        let progress = self.progress.lock().expect("not poisoned");
        let mut tables = Vec::new();
        if let Some(plan) = &self.plan {
            for (index, table) in plan.tables.iter().enumerate() {
                let table_progress = progress.tables.get(index);
                let count = self.counts.get(index);
                let result_text = match (count, table_progress) {
                    (Some(count), _) if count.matches() => "OK",
                    (Some(_), _) => "MISMATCH",
                    (None, Some(table_progress)) if table_progress.failed => "FAILED",
                    _ => "NOT DONE",
                };
                tables.push(SummaryRow {
                    table: table.name.display_name(),
                    kind: table.description.clone(),
                    source_rows: count.map(|count| count.source),
                    target_rows: count.map(|count| count.target),
                    dump_bytes: table_progress.map(|progress| progress.dump_bytes).unwrap_or(0),
                    export_seconds: table_progress
                        .map(|progress| progress.elapsed[0].as_secs_f64())
                        .unwrap_or(0.0),
                    import_seconds: table_progress
                        .map(|progress| progress.elapsed[1].as_secs_f64())
                        .unwrap_or(0.0),
                    result: result_text.to_string(),
                });
            }
        }
        let (outcome, exit_code, error) = match result {
            Ok(()) => ("success", EXIT_SUCCESS, None),
            Err(error) => {
                let outcome = match error {
                    SyncError::Interrupted(_) => "interrupted",
                    SyncError::ValidationFailed(_) => "validation-failed",
                    SyncError::Usage(_) => "refused",
                    SyncError::Failed(_) => "failed",
                };
                (outcome, error.exit_code(), Some(format!("{error:#}")))
            }
        };
        Summary {
            source: self.settings.source.to_string(),
            target: self.settings.target.to_string(),
            started_at: started_at.to_rfc3339(),
            total_seconds: elapsed.as_secs_f64(),
            outcome: outcome.to_string(),
            exit_code,
            error,
            tables,
            sequences: self.plan.as_ref().map(|plan| plan.sequences.len()).unwrap_or(0),
            large_objects: self
                .plan
                .as_ref()
                .filter(|plan| plan.copy_large_objects)
                .map(|plan| plan.large_object_count)
                .unwrap_or(0),
            warnings: self.warnings.clone(),
            peak_memory_bytes: peak_memory_bytes(),
            peak_dump_bytes: self.dump_space.peak(),
        }
    }
}

/// The description of a unit that carries no table of its own.
fn unit_description(unit: &Unit) -> &'static str {
    match unit.kind {
        plan::UnitKind::LargeObjects => "Large Objects",
        plan::UnitKind::Tables => "Sequences",
    }
}

/// What the export, import and index tasks of units share.
struct UnitContext {
    job: Arc<Job>,
    plan: Arc<Plan>,
    post_data: Arc<PostData>,
    stream: bool,
    /// Becomes true once pre-data is restored: loads wait for it, dumps do not.
    schema_ready: tokio::sync::watch::Receiver<bool>,
    progress: Arc<Mutex<Progress>>,
    /// Numbers the index builds, for their list files.
    index_batches: AtomicUsize,
    table_names: Vec<String>,
    descriptions: Vec<String>,
    planned_table_by_oid: HashMap<u32, usize>,
}

impl UnitContext {
    /// Names for a unit's lines: its tables, or what it carries when it has none of its own.
    fn line_names(&self, unit: &Unit) -> Vec<(Option<usize>, String)> {
        if unit.planned_tables.is_empty() {
            let name = match unit.kind {
                plan::UnitKind::LargeObjects => "(large objects)".to_string(),
                plan::UnitKind::Tables => "(sequences)".to_string(),
            };
            return vec![(None, name)];
        }
        unit.planned_tables
            .iter()
            .map(|index| (Some(*index), self.table_names[*index].clone()))
            .collect()
    }

    fn started(&self, unit: &Unit, activity: Activity) {
        let stage = stage_index(activity);
        let mut progress = self.progress.lock().expect("not poisoned");
        for (index, name) in self.line_names(unit) {
            let first = match index {
                Some(index) => {
                    let table = &mut progress.tables[index];
                    let first = table.started[stage].is_none();
                    table.started[stage].get_or_insert_with(Instant::now);
                    first
                }
                None => true,
            };
            if first {
                let detail = match (activity, index) {
                    (Activity::Export | Activity::Stream, Some(index)) => self.descriptions[index].clone(),
                    (Activity::Export | Activity::Stream, None) => unit_description(unit).to_string(),
                    (Activity::Import | Activity::Index, _) => "Restoring data...".to_string(),
                };
                self.job.emit(Event::Table {
                    activity,
                    state: TableState::Started,
                    table: name,
                    detail,
                });
            }
        }
    }

    fn finished(
        &self,
        unit: &Unit,
        activity: Activity,
        unit_started: Instant,
        sizes: Option<&phase::export::ExportedSizes>,
    ) {
        let stage = stage_index(activity);
        let mut progress = self.progress.lock().expect("not poisoned");
        if let Some(sizes) = sizes {
            for (oid, bytes) in &sizes.by_table {
                if let Some(index) = self.planned_table_by_oid.get(oid) {
                    progress.tables[*index].dump_bytes += bytes;
                }
            }
        }
        for (index, name) in self.line_names(unit) {
            let (done, elapsed, bytes, description) = match index {
                Some(index) => {
                    let table = &mut progress.tables[index];
                    table.units_left[stage] = table.units_left[stage].saturating_sub(1);
                    let elapsed = table.started[stage]
                        .map(|started| started.elapsed())
                        .unwrap_or_default();
                    table.elapsed[stage] = elapsed;
                    (
                        table.units_left[stage] == 0,
                        elapsed,
                        table.dump_bytes,
                        self.descriptions[index].clone(),
                    )
                }
                None => (
                    true,
                    unit_started.elapsed(),
                    sizes.map(|sizes| sizes.total).unwrap_or(0),
                    unit_description(unit).to_string(),
                ),
            };
            if done {
                let detail = match activity {
                    Activity::Export => format!(
                        "{description}, Size: {}, Time: {}",
                        human_size(bytes),
                        human_duration(elapsed)
                    ),
                    Activity::Import | Activity::Stream | Activity::Index => {
                        format!("Time: {}", human_duration(elapsed))
                    }
                };
                self.job.emit(Event::Table {
                    activity,
                    state: TableState::Done,
                    table: name,
                    detail,
                });
            }
        }
        self.job.emit(Event::StepFinished);
    }

    fn failed(&self, unit: &Unit, activity: Activity, error: &anyhow::Error) {
        let mut progress = self.progress.lock().expect("not poisoned");
        let message = format!("{error:#}");
        let last_line = crate::process::last_meaningful_line(&message);
        for (index, name) in self.line_names(unit) {
            if let Some(index) = index {
                progress.tables[index].failed = true;
            }
            self.job.emit(Event::Table {
                activity,
                state: TableState::Failed,
                table: name,
                detail: last_line.clone(),
            });
        }
        self.job.emit(Event::Error(format!(
            "Failed: {} {}\n{message}",
            activity.verb(),
            unit.label()
        )));
    }

    fn retrying(&self, unit: &Unit, activity: Activity, attempt: u32, error: &anyhow::Error, delay: Duration) {
        let message = format!("{error:#}");
        let last_line = crate::process::last_meaningful_line(&message);
        for (_, name) in self.line_names(unit) {
            self.job.emit(Event::Table {
                activity,
                state: TableState::Retrying,
                table: name,
                detail: format!(
                    "attempt {attempt} failed, retrying in {:.1}s: {last_line}",
                    delay.as_secs_f64()
                ),
            });
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

    async fn export_unit(&self, unit: Arc<Unit>) -> Result<(), StepError> {
        let (sizes, started) = self
            .run_stage(&unit, Activity::Export, |_| {
                phase::export::export_unit(&self.job, &unit)
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

    async fn import_unit(&self, unit: Arc<Unit>) -> Result<(), StepError> {
        self.wait_for_schema().await?;
        let ((), started) = self
            .run_stage(&unit, Activity::Import, |attempt| {
                phase::import::import_unit(&self.job, &unit, attempt)
            })
            .await?;
        self.finished(&unit, Activity::Import, started, None);
        Ok(())
    }

    async fn stream_unit(&self, unit: Arc<Unit>) -> Result<(), StepError> {
        self.wait_for_schema().await?;
        let ((), started) = self
            .run_stage(&unit, Activity::Stream, |attempt| {
                phase::stream::stream_unit(&self.job, &unit, attempt)
            })
            .await?;
        self.finished(&unit, Activity::Stream, started, None);
        Ok(())
    }

    /// The planned tables of a unit whose rows are now all loaded and whose indexes nobody has
    /// started yet.
    fn tables_now_complete(&self, unit: &Unit) -> Vec<usize> {
        let mut progress = self.progress.lock().expect("not poisoned");
        unit.planned_tables
            .iter()
            .copied()
            .filter(|index| {
                let table = &mut progress.tables[*index];
                let complete = table.units_left[1] == 0 && !table.indexes_started;
                table.indexes_started |= complete;
                complete
            })
            .collect()
    }

    /// The indexes and key constraints of tables whose rows are all loaded (ANALYZE first with
    /// `--analyze`).
    async fn build_indexes(&self, tables: Vec<usize>) -> Result<(), StepError> {
        let started = Instant::now();
        for index in &tables {
            let entries = self.post_data.entry_count(*index);
            self.job.emit(Event::Table {
                activity: Activity::Index,
                state: TableState::Started,
                table: self.table_names[*index].clone(),
                detail: format!("{entries} index(es) and key constraint(s)"),
            });
        }
        let batch = self.index_batches.fetch_add(1, Ordering::SeqCst) + 1;
        let result = self.post_data.build_tables(&self.job, &self.plan, &tables, batch).await;
        let (state, detail) = match &result {
            Ok(()) => (TableState::Done, format!("Time: {}", human_duration(started.elapsed()))),
            Err(StepError::Failed(error)) => (
                TableState::Failed,
                crate::process::last_meaningful_line(&format!("{error:#}")),
            ),
            Err(StepError::Cancelled) => return result,
        };
        for index in &tables {
            self.job.emit(Event::Table {
                activity: Activity::Index,
                state,
                table: self.table_names[*index].clone(),
                detail: detail.clone(),
            });
        }
        result.map_err(|error| match error {
            StepError::Failed(error) => StepError::Failed(error.context(format!(
                "failed to build the indexes of {}",
                self.describe_tables(&tables)
            ))),
            cancelled => cancelled,
        })
    }

    fn describe(&self, unit: &Unit) -> String {
        let names: Vec<String> = self.line_names(unit).into_iter().map(|(_, name)| name).collect();
        list_names(&names)
    }

    fn describe_tables(&self, tables: &[usize]) -> String {
        let names: Vec<String> = tables.iter().map(|index| self.table_names[*index].clone()).collect();
        list_names(&names)
    }
}

impl UnitWork<Unit> for Arc<UnitContext> {
    fn export(&self, unit: Arc<Unit>) -> StageFuture {
        let context = self.clone();
        if self.stream {
            Box::pin(async move { context.stream_unit(unit).await })
        } else {
            Box::pin(async move { context.export_unit(unit).await })
        }
    }

    fn import(&self, unit: Arc<Unit>) -> Option<StageFuture> {
        if self.stream {
            return None;
        }
        let context = self.clone();
        Some(Box::pin(async move { context.import_unit(unit).await }))
    }

    fn loaded(&self, unit: Arc<Unit>) -> Option<StageFuture> {
        let tables = self.tables_now_complete(&unit);
        if tables.is_empty() {
            return None;
        }
        let context = self.clone();
        Some(Box::pin(async move { context.build_indexes(tables).await }))
    }
}

/// Up to five names, then how many more.
fn list_names(names: &[String]) -> String {
    {
        if names.len() <= 5 {
            names.join(", ")
        } else {
            format!("{}, and {} more tables", names[..5].join(", "), names.len() - 5)
        }
    }
}

/// The most memory dbsync itself (not its children) has held at once.
fn peak_memory_bytes() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    // Linux reports ru_maxrss in kibibytes.
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|usage| u64::try_from(usage.max_rss()).unwrap_or(0) * 1024)
        .unwrap_or(0)
}

/// Human description of why the run ended, for the last line.
pub fn closing_line(result: &Result<(), SyncError>) -> String {
    match result {
        Ok(()) => "✅ Sync finished successfully.".to_string(),
        Err(SyncError::Interrupted(signal)) => {
            format!(
                "Interrupted by {}: every child process was stopped and temporary files removed; the previous target is unchanged.",
                signal_name(*signal)
            )
        }
        Err(error) => format!("{error:#}"),
    }
}
