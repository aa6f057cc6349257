//! `dbsync restore DIR`: the import half of a sync, from an archive (`dbsync dump`, or a sync's
//! `--keep-dumps` directory). The archive is checked against its manifest before anything is
//! created; then, as in a sync, the copy is built under a temporary name (pre-data, the units,
//! each table's indexes once it is loaded, post-data), validated against the rows and the
//! structure the manifest recorded in the dump's snapshot, and swapped into place, the previous
//! target kept until then.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::connection::Endpoint;
use crate::engine::RunContext;
use crate::engine::copy::{JobPlaces, SourceSide};
use crate::engine::steps::{self, Job};
use crate::errors::SyncError;
use crate::manifest::{Manifest, RestoreFacts};
use crate::plan::Plan;
use crate::report::{Event, Phase};
use crate::tools;

/// `dbsync restore`: the run context and the archive it loads.
pub(in crate::engine) struct Restore<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) archive: &'a std::path::Path,
    pub(in crate::engine) target: &'a Endpoint,
}

impl Restore<'_> {
    pub(in crate::engine) async fn run(
        &mut self,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<(), SyncError> {
        let archive = self.archive.to_path_buf();
        let manifest = self.check_archive(&archive).await?;
        let facts = &manifest.restore;
        let plan = Arc::new(facts.plan.clone());
        self.context.adopt_plan(&plan);
        let need = tools::ToolNeed::Archive(facts.oldest_reader());
        let tools = tools::locate(self.context.settings.pg_bin.as_deref(), need)
            .map_err(|error| SyncError::Usage(format!("{error:#}")))?;
        // No source server: only the target's free slots bound --jobs.
        self.context
            .check_target(
                self.target,
                &facts.target_needs,
                SourceSide::Archive {
                    server_major: facts.server_major,
                },
                &tools,
            )
            .await?;
        let job = self.prepare_restore(&archive, facts, &plan, tools, started_at).await?;
        let owners: HashMap<u32, u32> = facts.index_owners.iter().copied().collect();
        let schema_dump = steps::schema::schema_dump_path(&job);
        self.context.emit(Event::Notice(crate::report::Notice::RestoringSchema));
        let post_data = self
            .context
            .load_schema_and_data(&job, &plan, &schema_dump, &owners, (None, std::future::ready(Ok(()))))
            .await?;
        self.context.restore_post_data(&job, &plan, &post_data).await?;
        self.restore_archived_statistics(&job, facts).await?;
        self.context.validate_against_manifest(&job, &plan, &manifest).await?;
        self.context
            .swap(self.target, &job, &facts.database, &facts.settings)
            .await
    }

    /// The archive's planner statistics into the copy, where it carries them (`pg_dump` 18+),
    /// `pg_restore` and the target are 18+, and `--no-statistics` was not given.
    async fn restore_archived_statistics(&mut self, job: &steps::Job, facts: &RestoreFacts) -> Result<(), SyncError> {
        let first = steps::statistics::FIRST_MAJOR;
        let target_major = self.context.majors.map_or(0, |(_, target)| target);
        let carried = steps::statistics::statistics_dump_path(job).is_file();
        if !carried || !self.context.settings.statistics || job.tools.restore_major < first || target_major < first {
            return Ok(());
        }
        let on_source = facts.statistics.iter().cloned().collect();
        self.context
            .restore_statistics(job, &on_source, None, std::time::Instant::now())
            .await
    }

    /// The manifest, once every file of the archive matches it; an incomplete or altered archive
    /// is refused (exit 2) before anything is created, naming the file.
    async fn check_archive(&self, archive: &Path) -> Result<Manifest, SyncError> {
        let threads = self.context.settings.jobs.get();
        let directory = archive.to_path_buf();
        let verify = tokio::task::spawn_blocking(move || Manifest::verify(&directory, threads));
        let verified = tokio::select! {
            verified = verify => verified.map_err(|error| SyncError::Failed(error.into()))?,
            () = self.context.cancellation.cancelled() => return Err(crate::engine::cancelled(&self.context.cancellation)),
        };
        verified.map_err(|error| SyncError::Usage(format!("{error:#}\nhint: restore only an archive that a dump or a sync with --keep-dumps completed, as it was written")))
    }

    /// The working directory, the banner and the empty copy; returns what every step shares.
    async fn prepare_restore(
        &mut self,
        archive: &Path,
        facts: &RestoreFacts,
        plan: &Plan,
        tools: tools::PgTools,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<Arc<Job>, SyncError> {
        // The archive is only read: the run's own files (list files) go to a directory of its own.
        let scratch_directory = self.context.create_dump_directory(self.target, started_at)?;
        let passfile = self.context.workspace.create_passfile(&[self.target])?;
        self.context.announce(plan, &tools, &scratch_directory, started_at);
        self.context.emit(Event::Phase(Phase::Schema));
        let temporary = self
            .context
            .create_copy(self.target, &facts.database, started_at)
            .await?;
        Ok(self.context.job(JobPlaces {
            snapshot: None,
            work_target: Some(self.target.with_database(&temporary)),
            tools,
            passfile,
            schema_exclusions: Vec::new(),
            dump_directory: archive.to_path_buf(),
            scratch_directory,
            // Never remove what was loaded: the archive stays as it was.
            keep_dumps: true,
            record_progress: false,
            resuming: false,
        }))
    }
}
