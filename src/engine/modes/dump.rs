//! `dbsync dump`: the export half of a sync, into an archive directory. One snapshot, the schema
//! archive and every unit of data dumped in it, each table's rows counted in it, and the
//! manifest; written beside `--output` under a name of its own and renamed when complete, so a
//! half-written archive never looks like one. With `[subset]`, only the chosen rows, chosen in
//! the snapshot into a temporary table of a source session of dbsync's own.

use std::sync::Arc;

use crate::catalog::{self, QualifiedName};
use crate::connection::Endpoint;
use crate::engine::copy::JobPlaces;
use crate::engine::preflight::{self, Source};
use crate::engine::steps::validate::TableCount;
use crate::engine::steps::{self, Job};
use crate::engine::units::ExportOnly;
use crate::engine::{RunContext, interruptible, step_error};
use crate::errors::SyncError;
use crate::plan::Plan;
use crate::report::{Event, Notice, Phase};
use crate::scheduler::run_units;
use crate::tools::PgTools;

/// `dbsync dump`: the run context and the archive it writes.
pub(in crate::engine) struct Dump<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) output: &'a std::path::Path,
}

impl Dump<'_> {
    pub(in crate::engine) async fn run(
        &mut self,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<(), SyncError> {
        let settings = self.context.settings;
        let output = self.output.to_path_buf();
        // Whatever is at the path, a link to nowhere included (`exists` follows links).
        if let Ok(found) = std::fs::symlink_metadata(&output) {
            let what = match std::fs::read_link(&output) {
                Ok(link) if found.file_type().is_symlink() => format!("is a symbolic link (to {})", link.display()),
                _ => "exists already".to_string(),
            };
            return Err(SyncError::Usage(format!(
                "{} {what}: a dump never writes into, over or through anything at its path; choose another --output (a date template such as {{date}} gives each run its own)",
                output.display()
            )));
        }
        self.context
            .workspace
            .remove_abandoned_archives(&output, settings.dated.as_ref(), &*self.context.reporter);
        let (source, plan, unreadable) = self.context.inspect_source(self.source).await?;
        self.plan_subset(&source, &plan).await?;
        // No target server: only the source's free slots bound --jobs.
        let free = crate::engine::context::FreeSlots {
            source: Some(source.free_slots),
            target: None,
        };
        let lowered = self.context.grant_jobs(free)?;
        self.context.deferred_warnings.extend(lowered);
        let tools = preflight::locate_tools(settings, &source)?;
        let job = self.prepare_dump(&source, &plan, tools, unreadable, started_at).await?;
        // Masked tables (and large ones with --split-larger-than) go through the row-copy path.
        // A subset's rows go through it too (every table, in batches), chosen before any unit
        // writes them.
        let row_copy_floor = self
            .context
            .subset
            .is_some()
            .then_some(crate::engine::split::ROW_COPY_FLOOR);
        let plan = self
            .context
            .split_large_tables(&job, &plan, &source, row_copy_floor)
            .await?;
        let plan = self.context.subset_rows(plan)?;
        self.context.choose_subset_on_source(&job, &plan).await?;
        self.context.progress.set_plan(&plan);
        let plan = Arc::new(plan);
        // Each table's rows counted in the snapshot session, idle while the children dump: at
        // the same time, not after. A subset's are what it chose.
        let names: Vec<QualifiedName> = plan.tables.iter().map(|table| table.name.clone()).collect();
        let chosen = self.context.chosen_counts.clone();
        let counting = async {
            match chosen {
                Some(chosen) => Ok(chosen),
                None => interruptible(&self.context.cancellation, catalog::row_counts(&source.client, &names)).await,
            }
        };
        let (dumped, counts) = tokio::join!(self.dump_schema_and_data(&job, &plan, &source), counting);
        dumped?;
        // The planner statistics, for a restore into an 18+ server (pg_dump 18+ only); not a
        // subset's (they describe the whole tables).
        let statistics = self.context.settings.statistics && self.context.subset.is_none();
        if statistics && job.tools.dump_major >= steps::statistics::FIRST_MAJOR {
            let members = plan.members();
            let among = (!plan.whole_database).then_some(members.as_slice());
            self.context
                .retried(&job, "planner statistics", |_| {
                    steps::statistics::dump_statistics(&job, among)
                })
                .await?;
        }
        self.context.emit(Event::Phase(Phase::DumpCounts));
        let counts = counts?;
        self.context.progress.set_counts(
            counts
                .iter()
                .map(|rows| TableCount {
                    source: *rows,
                    target: None,
                })
                .collect(),
        );
        self.context
            .try_write_manifest(&job, &plan, &source, &counts)
            .await
            .map_err(SyncError::Failed)?;
        self.context.workspace.publish_archive(&output)?;
        self.context.emit(Event::Notice(Notice::ArchiveWritten {
            path: output.display().to_string(),
            tables: plan.tables.len(),
        }));
        Ok(())
    }

    /// PREFLIGHT: `[subset]` planned as a sync plans it. Its chosen rows are kept in a temporary
    /// table on the source, which a standby cannot have: refused there (exit 2).
    async fn plan_subset(&mut self, source: &Source, plan: &Plan) -> Result<(), SyncError> {
        self.context.plan_subset(source, plan).await?;
        if self.context.subset.is_none() {
            return Ok(());
        }
        if interruptible(&self.context.cancellation, catalog::in_recovery(&source.client)).await? {
            return Err(crate::usage_error!(
                "[subset] cannot be dumped from a standby: dbsync keeps the chosen rows in a temporary table on the source while it dumps them, and a standby cannot have one\nhint: dump from the primary, or sync the subset into a database and dump that"
            ));
        }
        Ok(())
    }

    /// The archive directory, the banner and the snapshot; returns what every step shares.
    async fn prepare_dump(
        &mut self,
        source: &Source,
        plan: &Plan,
        tools: PgTools,
        schema_exclusions: Vec<QualifiedName>,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<Arc<Job>, SyncError> {
        let output = self.output;
        let dump_directory = self
            .context
            .workspace
            .create_archive_directory(output)
            .map_err(|error| SyncError::Usage(format!("{error:#}\nhint: --output must be in a writable directory")))?;
        let passfile = self.context.workspace.create_passfile(&[self.source])?;
        self.context.announce(plan, &tools, &dump_directory, started_at);
        self.context.emit(Event::Phase(Phase::DumpSchema));
        self.context.emit(Event::Notice(Notice::Locking {
            tables: plan.tables.len(),
        }));
        let snapshot = self.context.take_snapshot(source, plan).await?;
        Ok(self.context.job(JobPlaces {
            snapshot: Some(source.snapshot(snapshot)),
            work_target: None,
            tools,
            passfile,
            schema_exclusions,
            scratch_directory: dump_directory.clone(),
            dump_directory,
            keep_dumps: true,
            record_progress: false,
            resuming: false,
        }))
    }

    async fn dump_schema_and_data(&self, job: &Arc<Job>, plan: &Arc<Plan>, source: &Source) -> Result<(), SyncError> {
        self.context.emit(Event::Notice(Notice::DumpingSchema));
        let schema_dump = self
            .context
            .retried(job, "schema dump", |_| steps::schema::dump(job))
            .await?;
        let post_data = steps::postdata::PostData::split(job, &schema_dump, plan, &source.index_owners)
            .await
            .map_err(|error| step_error(&self.context.cancellation, error))?;
        self.context.emit(Event::Phase(Phase::DumpData));
        self.context.emit(Event::StepsPlanned(plan.units.len()));
        self.context.progress.data_started();
        let (_, schema_ready) = tokio::sync::watch::channel(true);
        let (context, budget) = self.context.unit_context(job, plan, Arc::new(post_data), schema_ready);
        run_units(
            plan.units.clone(),
            budget,
            &self.context.cancellation,
            &ExportOnly(context),
        )
        .await
        .map_err(|error| step_error(&self.context.cancellation, error))
    }
}
