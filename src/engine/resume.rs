//! Resuming a failed sync (`--keep-dumps`, then `dbsync sync --resume DIR`). A run that keeps
//! its dumps writes `resume.json` into its dump directory — the manifest to be (plan, the
//! source's properties, what the target needs), the unfinished copy's name, and, counted in the
//! snapshot while the exports run, each table's rows and the source's structure — and marks what
//! it finishes (`steps::marks`). When it fails it keeps the copy. A resume then reuses the
//! complete exports, skips the loads, index builds and schema steps that are marked done, empties
//! and loads again the units that are not, and ends with the usual validation (against the
//! recorded counts and structure) and swap. Exports that were not complete cannot be finished:
//! their snapshot died with the failed run, so the resume says so and copies everything again
//! from a new snapshot, never mixing two.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::RunContext;
use super::copy::JobPlaces;
use super::preflight::Source;
use super::steps::{self, Job, marks};
use crate::catalog;
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::manifest::{self, Manifest};
use crate::plan::Plan;
use crate::report::{Event, Notice, Phase, Warning};
use crate::target::{TargetServer, classify_leftovers};
use crate::tools::ToolNeed;

pub const RESUME_FILE: &str = "resume.json";

/// What `resume.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    /// The target as the failed run named it (`user@host:port/dbname`): a resume must be into
    /// the same one.
    pub target: String,
    /// The unfinished copy the failed run kept.
    pub temporary: String,
    /// The archive's manifest without its files; its tables' rows are counted in the snapshot
    /// once `counted` says so.
    pub manifest: Manifest,
    pub counted: bool,
}

impl ResumeState {
    /// Refuses (exit 2, before anything changes) a directory of another job: another target,
    /// another source database, or a copy not named as dbsync names copies of this target (an
    /// edited `resume.json` must not make dbsync load into, rename or drop a database it never
    /// made).
    fn belongs_to(
        &self,
        source: &Endpoint,
        identity: Option<&str>,
        target: &Endpoint,
        directory: &Path,
    ) -> Result<(), SyncError> {
        let directory = directory.display();
        if self.target != target.to_string() {
            return Err(SyncError::Usage(format!(
                "{directory} is the dump directory of a run into {}, not into {target}",
                self.target,
            )));
        }
        if !self.manifest.source.are_of(source, identity) {
            return Err(SyncError::Usage(format!(
                "{directory} holds the dumps of {}, not of {source}: resume with the source the failed run copied",
                self.manifest.source.endpoint
            )));
        }
        let named_as_ours = classify_leftovers(&target.dbname, &[(self.temporary.clone(), None)]).temporary;
        if named_as_ours != [self.temporary.clone()] {
            return Err(SyncError::Usage(format!(
                "{directory}/{RESUME_FILE} names {:?} as the unfinished copy, which is not a name dbsync gives a copy of {}: the file was altered; run without --resume",
                self.temporary, target.dbname
            )));
        }
        Ok(())
    }

    pub fn write(&self, directory: &Path) -> Result<()> {
        let partial = directory.join(format!("{RESUME_FILE}.partial"));
        std::fs::write(&partial, serde_json::to_string(self)? + "\n")
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, directory.join(RESUME_FILE)).with_context(|| format!("cannot write {RESUME_FILE}"))
    }

    pub fn read(directory: &Path) -> Result<ResumeState> {
        let path = directory.join(RESUME_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not the dump directory of a failed run started with --keep-dumps (it has no {RESUME_FILE})",
                directory.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Why the exports cannot be reused, if they cannot: a unit whose dump did not finish, or
    /// rows that were never counted in the snapshot.
    pub fn exports_incomplete(&self, directory: &Path) -> Option<String> {
        if !self.counted {
            return Some("the source's rows were not counted in its snapshot before the run failed".into());
        }
        if !directory.join("schema.dump").is_file() {
            return Some("the schema dump is missing".into());
        }
        self.manifest.restore.plan.units.iter().find_map(|unit| {
            let unit_directory = directory.join(format!("unit-{:04}", unit.index + 1));
            (!unit_directory.join(steps::export::COMPLETION_MARKER).exists())
                .then(|| format!("the export of {} did not finish", unit.label()))
        })
    }
}

/// The command that resumes a run (no password: it comes from where it came from before).
pub fn resume_command(source: &Endpoint, target: &Endpoint, directory: &Path) -> String {
    format!(
        "dbsync sync --source '{}' --target '{}' --resume '{}'",
        source.uri_without_password(),
        target.uri_without_password(),
        directory.display()
    )
}

impl RunContext<'_> {
    /// Starts `resume.json` for a run that keeps its dumps, once its copy exists.
    pub(super) fn start_resume_state(
        &mut self,
        target: &Endpoint,
        job: &Job,
        plan: &Plan,
        source: &Source,
        snapshot_taken_at: String,
    ) {
        let mut manifest = self.manifest(plan, source, &vec![0; plan.tables.len()], snapshot_taken_at, Vec::new());
        manifest.restore.dumped_with = Some(job.tools.dump_major);
        let state = ResumeState {
            target: target.to_string(),
            temporary: job.copy().dbname.clone(),
            manifest,
            counted: false,
        };
        if let Err(error) = state.write(&job.dump_directory) {
            self.warn(Warning::Other(format!(
                "this run could not be resumed if it failed: {error:#}"
            )));
        }
    }

    /// Counts the source's rows and reads its structure in the snapshot (while the exports run:
    /// the snapshot session is idle meanwhile), for a resume to validate against; records the
    /// plan the units are exported by.
    pub(super) async fn record_source_counts(&self, job: &Job, plan: &Plan, source: &Source) {
        let names: Vec<_> = plan.tables.iter().map(|table| table.name.clone()).collect();
        let read = async {
            let rows = catalog::row_counts(&source.client, &names).await?;
            let structure = catalog::structure(&source.client, &[]).await?;
            anyhow::Ok((rows, structure))
        };
        let Ok((rows, structure)) = read.await else {
            return;
        };
        let Ok(mut state) = ResumeState::read(&job.dump_directory) else {
            return;
        };
        for (table, count) in state.manifest.tables.iter_mut().zip(rows) {
            table.rows = count;
        }
        state.manifest.restore.structure = structure;
        // The units as exported: with `--split-larger-than`, parts the first state did not know.
        state.manifest.restore.plan = plan.clone();
        state.counted = true;
        let _ = state.write(&job.dump_directory);
    }

    /// `--resume DIR`: continues the failed run whose dump directory `directory` is. `Ok(false)`
    /// when its exports cannot be reused (said why): the caller copies from a new snapshot.
    pub(super) async fn resume(
        &mut self,
        source: &Endpoint,
        target: &Endpoint,
        directory: &Path,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<bool, SyncError> {
        let state = ResumeState::read(directory).map_err(|error| SyncError::Usage(format!("{error:#}")))?;
        // The source is known by its identity where it can be read, by its URI's spelling else.
        let identity = match catalog::connect(source, "source").await {
            Ok(client) => catalog::database_identity(&client).await,
            Err(_) => None,
        };
        state.belongs_to(source, identity.as_deref(), target, directory)?;
        if let Some(reason) = state.exports_incomplete(directory) {
            self.warn(Warning::Other(format!(
                "cannot reuse the exports in {}: {reason}; the snapshot they were read in is gone, so everything is exported again from a new snapshot",
                directory.display()
            )));
            return Ok(false);
        }
        self.refuse_a_copy_not_ours(target, &state.temporary).await?;
        let facts = &state.manifest.restore;
        let plan = Arc::new(facts.plan.clone());
        self.adopt_plan(&plan);
        self.workspace.spare_copy(&state.temporary);
        let archive = super::copy::SourceSide::Archive {
            server_major: facts.server_major,
        };
        let tools = crate::tools::locate(self.settings.pg_bin.as_deref(), ToolNeed::Source(facts.oldest_reader()))
            .map_err(|error| SyncError::Usage(format!("{error:#}")))?;
        self.check_target(target, &facts.target_needs, archive, &tools).await?;
        let job = self
            .prepare_resume(target, directory, &state, &plan, tools, started_at)
            .await?;
        let owners: HashMap<u32, u32> = facts.index_owners.iter().copied().collect();
        if !(job.resuming && marks::is_set(directory, marks::PRE_DATA_DONE)) {
            self.emit(Event::Notice(Notice::RestoringSchema));
        }
        let schema_dump = steps::schema::schema_dump_path(&job);
        let post_data = self
            .load_schema_and_data(&job, &plan, &schema_dump, &owners, (None, std::future::ready(Ok(()))))
            .await?;
        self.restore_post_data(&job, &plan, &post_data).await?;
        self.validate_against_manifest(&job, &plan, &state.manifest).await?;
        self.swap(target, &job, &facts.database, &facts.settings).await?;
        self.finish_archive(directory, state.manifest);
        Ok(true)
    }

    /// The kept copy, if it still exists, must carry the comment dbsync gives its copies: a
    /// database of that name made by anything else is not loaded into, renamed or dropped.
    /// Asked before the run takes the target's lock (and removes what dead runs left).
    async fn refuse_a_copy_not_ours(&self, target: &Endpoint, temporary: &str) -> Result<(), SyncError> {
        let found = async {
            let server = TargetServer::connect(target).await?;
            let exists = server.database_exists(temporary).await?;
            let ours = server.leftovers(&target.dbname).await?.temporary;
            anyhow::Ok(!exists || ours.iter().any(|name| name == temporary))
        };
        match super::interruptible(&self.cancellation, found).await? {
            true => Ok(()),
            false => Err(SyncError::Usage(format!(
                "the database {temporary} that the resume state names was not made by dbsync (it lacks dbsync's comment); nothing was changed"
            ))),
        }
    }

    /// The kept copy (or, if it is gone, a new empty one), the banner; returns the job.
    async fn prepare_resume(
        &mut self,
        target: &Endpoint,
        directory: &Path,
        state: &ResumeState,
        plan: &Plan,
        tools: crate::tools::PgTools,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<Arc<Job>, SyncError> {
        let passfile = self.workspace.create_passfile(&[target])?;
        self.announce(plan, &tools, directory, started_at);
        self.emit(Event::Phase(Phase::Schema));
        let server = self.workspace.target_server.as_ref().expect("connected in preflight");
        let kept = super::interruptible(&self.cancellation, server.database_exists(&state.temporary)).await?;
        let temporary = if kept {
            self.emit(Event::Notice(Notice::ResumingCopy {
                database: state.temporary.clone(),
            }));
            self.workspace.temporary_database_created(&state.temporary);
            state.temporary.clone()
        } else {
            self.warn(Warning::Other(format!(
                "the unfinished copy {} is gone: everything is loaded again from the dumps",
                state.temporary
            )));
            marks::clear(directory);
            self.create_copy(target, &state.manifest.restore.database, started_at)
                .await?
        };
        Ok(self.job(JobPlaces {
            snapshot: None,
            work_target: Some(target.with_database(&temporary)),
            tools,
            passfile,
            schema_exclusions: Vec::new(),
            dump_directory: directory.to_path_buf(),
            scratch_directory: directory.to_path_buf(),
            keep_dumps: true,
            record_progress: true,
            resuming: kept,
        }))
    }

    /// The resumed run's directory becomes a finished archive: no marks, no resume state, and
    /// the manifest with every file.
    fn finish_archive(&mut self, directory: &Path, mut manifest: Manifest) {
        marks::clear(directory);
        let _ = std::fs::remove_file(directory.join(RESUME_FILE));
        let written = manifest::describe_files(directory, self.granted_jobs().get(), &[]).and_then(|files| {
            manifest.files = files;
            manifest.created_at = chrono::Utc::now().to_rfc3339();
            manifest.write(directory)
        });
        if let Err(error) = written {
            self.warn(Warning::Other(format!("the kept dumps have no manifest: {error:#}")));
        }
    }
}

/// The dump directory a failed run kept, when it can be resumed.
pub fn resumable(directory: Option<&PathBuf>) -> Option<&PathBuf> {
    directory.filter(|directory| directory.join(RESUME_FILE).is_file())
}
