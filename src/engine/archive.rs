//! A kept dump directory (`--keep-dumps`) as an archive: once the copy is validated, the
//! manifest records the source, the snapshot's time, the selection, each table's rows counted in
//! the snapshot, and every file with its checksum (see `manifest`).

use super::context::RunContext;
use super::preflight::Source;
use super::steps::Job;
use super::workspace::RUN_MARKER;
use crate::catalog;
use crate::manifest::{self, FileEntry, Manifest, RestoreFacts, Selection, SourceFacts, TableEntry};
use crate::plan::Plan;
use crate::report::Warning;

impl RunContext<'_> {
    /// Writes the manifest of the dump directory. For a sync a failure is a warning: the copy
    /// itself is good, only the archive cannot be checked later.
    pub(super) async fn write_manifest(&mut self, job: &Job, plan: &Plan, source: &Source, source_counts: &[i64]) {
        if let Err(error) = self.try_write_manifest(job, plan, source, source_counts).await {
            self.warn(Warning::Other(format!("the kept dumps have no manifest: {error:#}")));
        }
    }

    pub(super) async fn try_write_manifest(
        &self,
        job: &Job,
        plan: &Plan,
        source: &Source,
        source_counts: &[i64],
    ) -> anyhow::Result<()> {
        // What only a resume needs goes: the archive is finished.
        super::steps::marks::clear(&job.dump_directory);
        let _ = std::fs::remove_file(job.dump_directory.join(super::resume::RESUME_FILE));
        let snapshot_taken_at = catalog::transaction_started_at(&source.client).await?;
        // In the snapshot, like the data: what a restore validates the copy against.
        let structure = catalog::structure(&source.client, &job.schema_exclusions).await?;
        let directory = job.dump_directory.clone();
        let threads = job.jobs.get();
        let files =
            tokio::task::spawn_blocking(move || manifest::describe_files(&directory, threads, &[RUN_MARKER])).await??;
        let mut manifest = self.manifest(plan, source, source_counts, snapshot_taken_at, files);
        manifest.restore.dumped_with = Some(job.tools.dump_major);
        manifest.restore.compression = Some(job.compression.to_string());
        if super::steps::statistics::statistics_dump_path(job).is_file() {
            let members = plan.members();
            let among = (!plan.whole_database).then_some(members.as_slice());
            manifest.restore.statistics = catalog::tables_with_statistics(&source.client, among)
                .await?
                .into_iter()
                .collect();
        }
        manifest.restore.structure = structure;
        manifest.write(&job.dump_directory)
    }

    pub(super) fn manifest(
        &self,
        plan: &Plan,
        source: &Source,
        source_counts: &[i64],
        snapshot_taken_at: String,
        files: Vec<FileEntry>,
    ) -> Manifest {
        let settings = self.settings;
        let patterns =
            |patterns: &[crate::plan::TablePattern]| patterns.iter().map(|pattern| pattern.pattern.clone()).collect();
        Manifest {
            format: manifest::FORMAT,
            dbsync_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: chrono::Utc::now().to_rfc3339(),
            source: source_facts(source, snapshot_taken_at),
            selection: Selection {
                whole_database: plan.whole_database,
                include: patterns(&settings.include),
                exclude: patterns(&settings.exclude),
                foreign_keys: plan.foreign_key_policy.as_str().to_string(),
                subset: self.subset.is_some(),
            },
            tables: plan
                .tables
                .iter()
                .zip(source_counts)
                .map(|(table, rows)| TableEntry {
                    schema: table.name.schema.clone(),
                    name: table.name.name.clone(),
                    rows: *rows,
                })
                .collect(),
            sequences: plan.sequences.len(),
            large_objects: if plan.copy_large_objects {
                plan.large_object_count
            } else {
                0
            },
            files,
            restore: RestoreFacts {
                server_major: source.server.major(),
                dumped_with: None,
                compression: None,
                statistics: Vec::new(),
                database: source.database.clone(),
                settings: source.settings.clone(),
                plan: plan.clone(),
                target_needs: catalog::TargetNeeds::of(&source.inventory),
                index_owners: source
                    .index_owners
                    .iter()
                    .map(|(index, table)| (*index, *table))
                    .collect(),
                structure: Default::default(),
            },
        }
    }
}

/// What an archive records of its source: where it was, its version and identity, the snapshot.
fn source_facts(source: &Source, snapshot_taken_at: String) -> SourceFacts {
    SourceFacts {
        endpoint: source.endpoint.to_string(),
        database: source.endpoint.dbname.clone(),
        server_version: source.server.version_number,
        snapshot_taken_at,
        identity: source.identity.clone(),
    }
}
