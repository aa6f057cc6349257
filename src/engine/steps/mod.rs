//! The steps of a sync, one module each, sharing `Job`: what every step needs to know and the
//! way every step runs a PostgreSQL tool. Steps do one attempt of one thing and return values;
//! retries, progress and every line a user reads are the engine's and the reporter's.

pub mod change;
pub mod checksum;
pub mod export;
pub mod import;
pub mod key_walk;
pub mod merge;
pub mod postdata;
pub mod relay;
pub mod schema;
pub mod statistics;
pub mod stream;
pub mod subset;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::context::GrantedJobs;
use crate::catalog;
use crate::connection::Endpoint;
use crate::process::{ChildCommand, InheritedFile};
use crate::scheduler::{AttemptError, Cancellation, RetryPolicy, StepError, with_retries};
use crate::tools::{self, PgTools, TocEntry};

/// A table of a group sharing one transaction that failed, and why (the group's transaction is
/// rolled back).
#[derive(Debug)]
pub struct GroupFailure {
    /// Its place in the group.
    pub table: usize,
    pub error: anyhow::Error,
}

/// Runs `work` (the writes of a group of tables) in one transaction on `target`: committed when
/// it succeeds, rolled back when it fails or `stop` is cancelled first (`committed_unless_stopped`).
pub async fn in_one_transaction<T>(
    target: &tokio_postgres::Client,
    stop: &Cancellation,
    work: impl std::future::Future<Output = Result<T, GroupFailure>>,
) -> Result<T, GroupFailure> {
    let failure = |error| GroupFailure { table: 0, error };
    let opened = async {
        catalog::begin_change(target).await.map_err(failure)?;
        work.await
    };
    committed_unless_stopped(target, stop, opened, failure).await
}

/// Runs `work`, which opens a transaction on `target` and writes in it: committed when it
/// succeeds, rolled back when it fails or `stop` is cancelled first. Once the work is done the
/// commit is awaited whatever happens, so nothing is committed unbeknownst to the run
/// (dropping the future while COMMIT is on its way would leave that unknown). `failure` makes
/// the caller's error of a stop or a failed commit.
pub async fn committed_unless_stopped<T, E>(
    target: &tokio_postgres::Client,
    stop: &Cancellation,
    work: impl std::future::Future<Output = Result<T, E>>,
    failure: impl Fn(anyhow::Error) -> E,
) -> Result<T, E> {
    let outcome = tokio::select! {
        outcome = work => outcome,
        _ = stop.cancelled() => Err(failure(anyhow::anyhow!("stopped before its commit"))),
    };
    match outcome {
        Ok(done) => {
            catalog::commit(target).await.map_err(failure)?;
            Ok(done)
        }
        Err(failed) => {
            let _ = catalog::rollback(target).await;
            Err(failed)
        }
    }
}

/// Whether the open transaction's writes fire triggers and foreign keys: set only when a table
/// wants otherwise, so a session without the privilege to turn them off can still write the
/// tables that fire.
pub struct Triggers {
    firing: bool,
}

/// A new transaction's writes fire, as the session's default.
impl Default for Triggers {
    fn default() -> Triggers {
        Triggers { firing: true }
    }
}

impl Triggers {
    pub async fn set(&mut self, target: &tokio_postgres::Client, fire: bool) -> anyhow::Result<()> {
        if fire != self.firing {
            catalog::fire_triggers(target, fire).await?;
            self.firing = fire;
        }
        Ok(())
    }
}

/// Everything the steps of one run share.
pub struct Job {
    /// The source and its snapshot; `None` for a restore, which reads an archive.
    pub snapshot: Option<Snapshot>,
    /// The temporary database the copy is built in; `None` for a dump, which loads nothing.
    pub work_target: Option<Endpoint>,
    pub tools: PgTools,
    pub passfile: InheritedFile,
    /// Tables left out of the schema dump: the source user may not read (so not lock) them.
    pub schema_exclusions: Vec<crate::catalog::QualifiedName>,
    /// Where the schema archive and the units' dumps are: the run's dump directory, or the
    /// archive a restore reads.
    pub dump_directory: PathBuf,
    /// Where the run's own working files go (pg_restore list files): the dump directory, except
    /// for a restore, which leaves its archive as it found it.
    pub scratch_directory: PathBuf,
    /// Keep each unit's dump after its import (`--keep-dumps`) instead of removing it at once.
    pub keep_dumps: bool,
    /// How the exports are compressed: as `--compress` says when they are kept, else not at all
    /// (`Settings::compression` is none then).
    pub compression: crate::compression::Compression,
    /// Mark in the dump directory what is done (loads, index builds, pre- and post-data), so
    /// that a failed run can be resumed (`--keep-dumps`).
    pub record_progress: bool,
    /// Resuming a failed run into its kept copy: what the markers say is done is skipped, and
    /// what may be half done (a unit's load, post-data) is redone from a clean state.
    pub resuming: bool,
    pub dump_space: Arc<DumpSpace>,
    pub jobs: GrantedJobs,
    /// ANALYZE each table once it is loaded.
    pub analyze: bool,
    pub retry_policy: RetryPolicy,
    pub no_owner: bool,
    pub no_privileges: bool,
    pub no_tablespaces: bool,
    /// The user's own `PGOPTIONS`, kept for the restore sessions.
    pub session_options: Option<String>,
    /// `maintenance_work_mem` of each loading session, in kB (`None`: the server's own).
    pub maintenance_work_mem_kb: Option<u64>,
    /// How long a `pg_dump` may wait for its share locks (`--lock-timeout`).
    pub lock_timeout: std::time::Duration,
    pub cancellation: Cancellation,
    /// The target transaction of each part's latest attempt (by unit index): a retry asks the
    /// server whether that one committed before copying the part again.
    pub part_transactions: std::sync::Mutex<std::collections::HashMap<usize, i64>>,
    /// The secret keyed transforms read on the source (`[transform]`).
    pub mask_salt: Option<String>,
    /// Restore pre-data in transactions of this many objects (`pg_restore --transaction-size`,
    /// 17+), not one: the schema's locks do not fit the target's lock table at once.
    pub schema_transaction_size: Option<u32>,
    /// Give the copy's schema `public` the owner and privileges a 15+ source has (a 13 or 14
    /// target creates it otherwise).
    pub narrow_public_schema: bool,
    /// A dump's `[subset]`: the source session whose temporary table holds the chosen rows
    /// (there is no copy to keep them in), shared by the units that write them out; unset when
    /// they are kept in the copy.
    pub chosen_rows_session: std::sync::OnceLock<Arc<tokio_postgres::Client>>,
}

/// The source as every dump reads it: one exported snapshot, held by one session.
pub struct Snapshot {
    pub source: Endpoint,
    pub id: String,
    /// The source session holding the snapshot: when it ends (the source server restarted),
    /// the snapshot is gone and no dump can be consistent with the others.
    pub session: Arc<tokio_postgres::Client>,
}

/// Marks, in the dump directory, of what a run has finished (see `Job::record_progress`).
pub mod marks {
    use std::path::{Path, PathBuf};

    /// In a unit's directory: its rows are loaded.
    pub const UNIT_LOADED: &str = ".dbsync-loaded";
    /// In a part's directory: the id of the copy's transaction that loads it, which a resume
    /// asks the same server about.
    pub const PART_TRANSACTION: &str = ".dbsync-transaction";
    pub const PRE_DATA_DONE: &str = "pre-data.done";
    pub const AFTER_SCHEMA_DONE: &str = "after-schema-hooks.done";
    pub const POST_DATA_DONE: &str = "post-data.done";
    /// One planned table's index per line: its indexes and key constraints are built.
    pub const INDEXES_DONE: &str = "indexes.done";

    pub fn path(directory: &Path, mark: &str) -> PathBuf {
        directory.join(mark)
    }

    /// Records a mark; a mark that cannot be written only makes a resume redo that work.
    pub fn set(directory: &Path, mark: &str) {
        let _ = std::fs::write(directory.join(mark), b"");
    }

    pub fn is_set(directory: &Path, mark: &str) -> bool {
        directory.join(mark).exists()
    }

    pub fn add_built_tables(directory: &Path, tables: &[usize]) {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(directory.join(INDEXES_DONE))
        {
            for table in tables {
                let _ = writeln!(file, "{table}");
            }
        }
    }

    pub fn built_tables(directory: &Path) -> Vec<usize> {
        std::fs::read_to_string(directory.join(INDEXES_DONE))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Every mark under `directory`: what a resume that starts over from an empty copy forgets,
    /// and what a finished archive does not carry.
    pub fn clear(directory: &Path) {
        for mark in [PRE_DATA_DONE, AFTER_SCHEMA_DONE, POST_DATA_DONE, INDEXES_DONE] {
            let _ = std::fs::remove_file(directory.join(mark));
        }
        if let Ok(entries) = std::fs::read_dir(directory) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path().join(UNIT_LOADED));
                let _ = std::fs::remove_file(entry.path().join(PART_TRANSACTION));
            }
        }
    }
}

impl Job {
    /// The temporary database of a sync (a dump has none and never loads).
    pub fn copy(&self) -> &Endpoint {
        self.work_target
            .as_ref()
            .expect("only a sync loads, and a sync has a copy")
    }

    fn snapshot(&self) -> &Snapshot {
        self.snapshot
            .as_ref()
            .expect("only a sync or a dump dumps, and both have a snapshot")
    }

    pub fn pg_dump(&self) -> ChildCommand {
        let snapshot = self.snapshot();
        ChildCommand::new(self.tools.pg_dump.clone())
            .password_file(self.passfile)
            .arguments(["--dbname".to_string(), snapshot.source.child_conninfo()])
            .argument(format!("--snapshot={}", snapshot.id))
            .argument(format!("--lock-wait-timeout={}", self.lock_timeout.as_millis().max(1)))
    }

    /// `pg_restore` into the copy, committing asynchronously: whatever it loads or builds is
    /// made durable by `make_loads_durable` before it counts as done.
    pub fn pg_restore(&self) -> ChildCommand {
        self.pg_restore_committing(Commit::Asynchronous)
    }

    pub fn pg_restore_committing(&self, commit: Commit) -> ChildCommand {
        let options = restore_session_options(self.session_options.as_deref(), self.maintenance_work_mem_kb, commit);
        let command = ChildCommand::new(self.tools.pg_restore.clone())
            .password_file(self.passfile)
            .env("PGOPTIONS", options)
            .arguments(["--dbname".to_string(), self.copy().child_conninfo()]);
        self.object_options(command)
    }

    /// `pg_restore` writing SQL to its standard output instead of into the copy, with the same
    /// options for objects: for a server that refuses what this `pg_restore` sets when it
    /// connects.
    pub fn pg_restore_to_script(&self) -> ChildCommand {
        let command = ChildCommand::new(self.tools.pg_restore.clone())
            .argument("--file=-")
            .capturing_stdout(crate::process::Stdout::Whole);
        self.object_options(command)
    }

    fn object_options(&self, mut command: ChildCommand) -> ChildCommand {
        if self.no_owner {
            command = command.argument("--no-owner");
        }
        if self.no_privileges {
            command = command.argument("--no-privileges");
        }
        if self.no_tablespaces {
            command = command.argument("--no-tablespaces");
        }
        command
    }

    /// Refuses another attempt at a dump once the snapshot it must read is gone.
    pub fn check_snapshot(&self) -> Result<(), AttemptError> {
        if self.snapshot().session.is_closed() {
            return Err(AttemptError::Permanent(anyhow::anyhow!(
                "the source session holding the snapshot ended (did the source server restart?): the snapshot is gone, \
                 and data dumped from another one would not be consistent with what is already copied; run dbsync again"
            )));
        }
        Ok(())
    }

    /// A new session on the copy.
    pub async fn connect_to_copy(&self) -> Result<tokio_postgres::Client, AttemptError> {
        catalog::connect(self.copy(), "target")
            .await
            .map_err(database_attempt_error)
    }

    /// Makes everything committed on the copy so far durable, before the work counts as done:
    /// its sessions commit asynchronously, and a crash of the target would otherwise take back
    /// rows dbsync had already counted as loaded (and marked so for a resume).
    pub async fn make_loads_durable(&self) -> Result<(), AttemptError> {
        let client = self.connect_to_copy().await?;
        catalog::flush_earlier_commits(&client)
            .await
            .map_err(database_attempt_error)
    }

    /// Runs `work` in a fresh session on the copy, again after transient failures.
    pub async fn on_copy<T, Fut>(&self, work: impl Fn(Arc<tokio_postgres::Client>) -> Fut) -> Result<T, StepError>
    where
        Fut: Future<Output = anyhow::Result<T>>,
    {
        with_retries(
            self.retry_policy,
            &self.cancellation,
            |_, _, _| {},
            |_| async {
                let client = Arc::new(self.connect_to_copy().await?);
                // A long VACUUM must not hold up Ctrl+C: dropping the session ends it.
                tokio::select! {
                    result = work(client) => result.map_err(database_attempt_error),
                    () = self.cancellation.cancelled() => Err(AttemptError::Cancelled),
                }
            },
        )
        .await
    }

    /// The table of contents of an archive.
    pub async fn archive_listing(&self, archive: &Path) -> Result<Vec<TocEntry>, AttemptError> {
        tools::archive_listing(&self.tools.pg_restore, archive, &self.cancellation).await
    }
}

/// Bytes of dump files on disk now, and the most there have been at once, for the report.
#[derive(Debug, Default)]
pub struct DumpSpace {
    current: AtomicU64,
    peak: AtomicU64,
}

impl DumpSpace {
    pub fn added(&self, bytes: u64) {
        let now = self.current.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    pub fn removed(&self, bytes: u64) {
        let _ = self
            .current
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                Some(current.saturating_sub(bytes))
            });
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

/// Total size of the files in a directory and its subdirectories.
pub fn directory_size(directory: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            Some(if metadata.is_dir() {
                directory_size(&entry.path())
            } else {
                metadata.len()
            })
        })
        .sum()
}

/// How a restore session commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// For work that is made durable afterwards and can be redone if a crash takes it back.
    Asynchronous,
    /// For work that cannot tell afterwards whether it survived a crash (the schema's one
    /// transaction: a second attempt would meet what the first created).
    Synchronous,
}

/// Settings for the sessions that load the copy. Asynchronous commit is safe here: the copy is
/// private, and a load counts as done only after `Job::make_loads_durable`.
/// `maintenance_work_mem` lets index builds sort in memory; the user's own PGOPTIONS win.
fn restore_session_options(theirs: Option<&str>, maintenance_work_mem_kb: Option<u64>, commit: Commit) -> String {
    let mut ours = match commit {
        Commit::Asynchronous => "-c synchronous_commit=off".to_string(),
        Commit::Synchronous => "-c synchronous_commit=on".to_string(),
    };
    if let Some(kilobytes) = maintenance_work_mem_kb
        && !theirs.is_some_and(|theirs| theirs.contains("maintenance_work_mem"))
    {
        ours.push_str(&format!(" -c maintenance_work_mem={kilobytes}kB"));
    }
    match theirs {
        Some(theirs) => format!("{theirs} {ours}"),
        None => ours,
    }
}

/// The `maintenance_work_mem` of each of `sessions` loading sessions sharing `budget` bytes:
/// `None` (the server's own) when the budget is 0 or its share would be below PostgreSQL's
/// default of 64 MB, so dbsync never gives a session less than a server would.
pub fn maintenance_share(budget: u64, sessions: usize) -> Option<u64> {
    let share = budget / (sessions.max(1) as u64) / 1024;
    (share >= 64 * 1024).then_some(share)
}

/// Turns a database error during a step into an attempt outcome, by its SQLSTATE.
pub fn database_attempt_error(error: anyhow::Error) -> AttemptError {
    if catalog::database_error(&error).is_some_and(|cause| cause.is_transient()) {
        AttemptError::Transient(error)
    } else {
        AttemptError::Permanent(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_sessions_keep_the_users_pgoptions_and_add_asynchronous_commit() {
        assert_eq!(
            restore_session_options(None, None, Commit::Asynchronous),
            "-c synchronous_commit=off"
        );
        assert_eq!(
            restore_session_options(None, None, Commit::Synchronous),
            "-c synchronous_commit=on"
        );
        assert_eq!(
            restore_session_options(None, Some(262144), Commit::Asynchronous),
            "-c synchronous_commit=off -c maintenance_work_mem=262144kB"
        );
        assert_eq!(
            restore_session_options(Some("-c maintenance_work_mem=1GB"), Some(262144), Commit::Asynchronous),
            "-c maintenance_work_mem=1GB -c synchronous_commit=off"
        );
        assert_eq!(maintenance_share(512 << 20, 2), Some(262144));
        assert_eq!(maintenance_share(512 << 20, 16), None, "below the server's default");
        assert_eq!(maintenance_share(0, 1), None);
        assert_eq!(
            restore_session_options(Some("-c work_mem=64MB"), None, Commit::Asynchronous),
            "-c work_mem=64MB -c synchronous_commit=off"
        );
    }
}
