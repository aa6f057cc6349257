//! `dbsync restore DIR`: the import half of a sync, from an archive (`dbsync dump`, or a sync's
//! `--keep-dumps` directory). The archive is checked against its manifest before anything is
//! created; then, as in a sync, the copy is built under a temporary name (pre-data, the units,
//! each table's indexes once it is loaded, post-data), validated against the rows and the
//! structure the manifest recorded in the dump's snapshot, and swapped into place, the previous
//! target kept until then.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::steps::validate::TableCount;
use super::steps::{self, Job};
use super::{JobPlaces, Run, step_error};
use crate::catalog::{self, QualifiedName};
use crate::errors::SyncError;
use crate::manifest::{Manifest, RestoreFacts};
use crate::plan::Plan;
use crate::report::{Event, Phase, RowCheck, Warning};
use crate::scheduler::{AttemptError, with_retries};
use crate::tools;

impl Run<'_> {
    pub(super) async fn restore(&mut self, started_at: chrono::DateTime<chrono::Local>) -> Result<(), SyncError> {
        let archive = self.settings.archive.clone().expect("a restore has an archive");
        let manifest = self.check_archive(&archive).await?;
        let facts = &manifest.restore;
        let plan = Arc::new(facts.plan.clone());
        self.adopt_plan(&plan);
        // No source server: only the target's free slots bound --jobs.
        self.check_target(&facts.target_needs, None, None).await?;
        let tools = tools::locate(self.settings.pg_bin.as_deref(), facts.server_major)
            .map_err(|error| SyncError::Usage(format!("{error:#}")))?;
        let job = self.prepare_restore(&archive, facts, &plan, tools, started_at).await?;
        let owners: HashMap<u32, u32> = facts.index_owners.iter().copied().collect();
        let schema_dump = steps::schema::schema_dump_path(&job);
        self.emit(Event::Notice(crate::report::Notice::RestoringSchema));
        let post_data = self
            .load_schema_and_data(&job, &plan, &schema_dump, &owners, None)
            .await?;
        self.restore_post_data(&job, &plan, &post_data).await?;
        self.validate_against_manifest(&job, &plan, &manifest).await?;
        self.swap(&job, &facts.database, &facts.settings).await
    }

    /// The manifest, once every file of the archive matches it; an incomplete or altered archive
    /// is refused (exit 2) before anything is created, naming the file.
    async fn check_archive(&self, archive: &Path) -> Result<Manifest, SyncError> {
        let threads = self.settings.jobs.get();
        let directory = archive.to_path_buf();
        let verify = tokio::task::spawn_blocking(move || Manifest::verify(&directory, threads));
        let verified = tokio::select! {
            verified = verify => verified.map_err(|error| SyncError::Failed(error.into()))?,
            () = self.cancellation.cancelled() => return Err(super::cancelled(&self.cancellation)),
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
        let settings = self.settings;
        // The archive is only read: the run's own files (list files) go to a directory of its own.
        let scratch_directory = self.create_dump_directory(started_at)?;
        let passfile = self.workspace.create_passfile(&[settings.target()])?;
        self.announce(plan, &tools, &scratch_directory, started_at);
        self.emit(Event::Phase(Phase::Schema));
        let temporary = self.create_copy(&facts.database, started_at).await?;
        Ok(self.job(JobPlaces {
            snapshot: None,
            work_target: Some(settings.target().with_database(&temporary)),
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
                    async { tokio::try_join!(catalog::row_counts(&client, &names), catalog::structure(&client)) };
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
