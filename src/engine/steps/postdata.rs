//! Post-data: indexes, constraints, foreign keys, triggers, policies and materialized-view
//! refreshes. A table's indexes and key constraints are built as soon as all its rows are loaded,
//! while other tables still load; at the end, after a VACUUM of the tables that foreign keys
//! reference, the partition index attachments one at a time (PostgreSQL can deadlock, or leave a
//! parent index invalid, when two sessions attach partitions of one index at once), then the rest
//! in parallel. Foreign keys that point out of a partial selection are held back and handled by
//! the configured policy. Every restore survives transient failures: what failed is restored
//! again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Job;
use crate::catalog::{self, Maintenance, QualifiedName};
use crate::plan::{self, ForeignKeyPolicy, Plan};
use crate::report::KeyFate;
use crate::scheduler::{AttemptError, StepError};
use crate::tools::{TocEntry, TocKind};

/// Told of each retry of a restore (steps do not report; the engine does): what was being
/// done, the attempt that failed, why, and the pause before the next.
pub type OnRetry<'a> = &'a (dyn Fn(&'static str, u32, &anyhow::Error, Duration) + Sync);

/// The post-data entries of the schema dump, split by when they can run.
pub struct PostData {
    schema_dump: PathBuf,
    /// Per planned table: its INDEX and CONSTRAINT (primary key, unique, exclusion) entries.
    per_table: Vec<Vec<String>>,
    /// Indexes and key constraints of tables no unit loads (their data is not copied): built at
    /// the end, before the attachments that may need them.
    late_indexes: Vec<String>,
    /// Partition index attachments: restored one at a time once every index exists.
    attaches: Vec<String>,
    /// Everything else, without held-back foreign keys: restored once every table is loaded.
    rest: Vec<String>,
    /// Becomes true once the partition index attachments are done: from then on a query on the
    /// copy (validation's counts) cannot deadlock with post-data.
    attached: tokio::sync::watch::Sender<bool>,
}

/// Splits a table of contents into per-table index entries and the rest. `owners` gives the
/// table of each index and constraint oid; `planned_by_oid` the planned table of each table oid.
/// What cannot be placed, and every table not carried by a unit, goes to the rest.
fn split_listing(
    listing: &[TocEntry],
    owners: &HashMap<u32, u32>,
    planned_by_oid: &HashMap<u32, usize>,
    table_count: usize,
    held_back: &HashSet<u32>,
) -> (Vec<Vec<String>>, Vec<String>) {
    let mut per_table = vec![Vec::new(); table_count];
    let mut rest = Vec::new();
    for entry in listing {
        if entry.kind == TocKind::ForeignKey && held_back.contains(&entry.oid) {
            continue;
        }
        // Index attachments wait for the end: they are cheap, and need both indexes built.
        let builds_early = matches!(entry.kind, TocKind::Index | TocKind::Constraint);
        let planned = owners
            .get(&entry.oid)
            .filter(|_| builds_early)
            .and_then(|table| planned_by_oid.get(table));
        match planned {
            Some(index) => per_table[*index].push(entry.line.clone()),
            None => rest.push(entry.line.clone()),
        }
    }
    (per_table, rest)
}

impl PostData {
    pub async fn split(
        job: &Job,
        schema_dump: &Path,
        plan: &Plan,
        owners: &HashMap<u32, u32>,
    ) -> Result<PostData, StepError> {
        let listing = job.archive_listing(schema_dump).await?;
        let mut held_back: HashSet<u32> = match plan.foreign_key_policy {
            ForeignKeyPolicy::IncludeParent => HashSet::new(),
            _ => plan.dangling_foreign_keys.iter().map(|key| key.oid).collect(),
        };
        // dbsync adds these itself; a partitioned table's own key stays, to adopt its partitions'.
        held_back.extend(
            plan.parallel_foreign_keys
                .iter()
                .filter(|key| !key.on_partitioned_table)
                .map(|key| key.oid),
        );
        // Only tables that some unit loads get built early; the others wait for the end.
        let loaded: HashSet<usize> = plan::units_per_table(plan).into_keys().collect();
        let mut planned_by_oid = plan.tables_by_tree_oid();
        planned_by_oid.retain(|_, index| loaded.contains(index));
        let (per_table, rest) = split_listing(&listing, owners, &planned_by_oid, plan.tables.len(), &held_back);
        let kinds: HashMap<&str, TocKind> = listing.iter().map(|entry| (entry.line.as_str(), entry.kind)).collect();
        let kind_of = |line: &String| kinds.get(line.as_str()).copied().unwrap_or(TocKind::Other);
        let (late_indexes, rest): (Vec<String>, Vec<String>) = rest
            .into_iter()
            .partition(|line| matches!(kind_of(line), TocKind::Index | TocKind::Constraint));
        let (attaches, rest) = rest.into_iter().partition(|line| kind_of(line) == TocKind::IndexAttach);
        Ok(PostData {
            schema_dump: schema_dump.to_path_buf(),
            per_table,
            late_indexes,
            attaches,
            rest,
            attached: tokio::sync::watch::channel(false).0,
        })
    }

    /// Told when the partition index attachments are done (see `mark_attached`).
    pub fn attached(&self) -> tokio::sync::watch::Receiver<bool> {
        self.attached.subscribe()
    }

    /// The attachments are done (or there are none left to do: post-data is over).
    pub fn mark_attached(&self) {
        self.attached.send_replace(true);
    }

    /// How many indexes and key constraints the table gets built as soon as it is loaded.
    pub fn entry_count(&self, table: usize) -> usize {
        self.per_table.get(table).map_or(0, Vec::len)
    }

    /// The indexes and key constraints of the given planned tables (with `--analyze`, ANALYZE
    /// first), then a VACUUM of those that foreign keys reference. `batch` names the list file;
    /// `sessions` is how many the budget gave the build.
    pub async fn build_tables(
        &self,
        job: &Job,
        plan: &Plan,
        tables: &[usize],
        batch: usize,
        sessions: usize,
        on_retry: OnRetry<'_>,
    ) -> Result<(), StepError> {
        let targets = maintenance_targets(plan, tables);
        if job.analyze && !targets.is_empty() {
            maintain(job, Maintenance::Analyze, &targets).await?;
        }
        self.restore_table_entries(job, tables, batch, sessions, on_retry)
            .await?;
        // Now rather than only before the foreign keys: the load that just ended may well be the
        // last one, and then nothing older holds back the VACUUM's view of what is all-visible.
        let referenced: Vec<usize> = tables
            .iter()
            .copied()
            .filter(|index| plan.referenced_tables.contains(index))
            .collect();
        if !referenced.is_empty() {
            maintain(job, Maintenance::Vacuum, &maintenance_targets(plan, &referenced)).await?;
        }
        Ok(())
    }

    async fn restore_table_entries(
        &self,
        job: &Job,
        tables: &[usize],
        batch: usize,
        sessions: usize,
        on_retry: OnRetry<'_>,
    ) -> Result<(), StepError> {
        let lines: Vec<&str> = tables
            .iter()
            .flat_map(|index| self.per_table[*index].iter().map(String::as_str))
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let list = job.scratch_directory.join(format!("indexes-{batch:04}.list"));
        // In parallel too: a partitioned table brings many indexes, and a free core would otherwise
        // wait for them one by one.
        let sessions = sessions.clamp(1, lines.len());
        let what = "build indexes and key constraints";
        self.restore_entries(job, &list, lines, sessions, what, on_retry).await
    }

    /// VACUUMs the tables that foreign keys reference, `jobs` connections at a time, then restores
    /// the rest of post-data: the indexes of tables no unit loaded, the partition index
    /// attachments one at a time, the foreign keys dbsync checks side by side, and the rest in
    /// parallel; returns what became of each foreign key that points out of the selection (by its
    /// index in the plan). The VACUUM runs here, with no load in flight, because a concurrent
    /// transaction would keep it from marking pages all-visible; without that, each foreign-key
    /// check hash-joins the whole referenced table instead of probing its index.
    pub async fn restore_rest(
        &self,
        job: &Job,
        plan: &Plan,
        on_retry: OnRetry<'_>,
    ) -> Result<Vec<(usize, KeyFate)>, StepError> {
        vacuum_in_parallel(job, plan, &plan.referenced_tables).await?;
        let jobs = job.jobs.get();
        let indexes = "build indexes and key constraints";
        self.restore_list(job, &self.late_indexes, "late-indexes.list", jobs, indexes, on_retry)
            .await?;
        let attaching = "attach partition indexes";
        self.restore_list(job, &self.attaches, "attach.list", 1, attaching, on_retry)
            .await?;
        self.mark_attached();
        add_foreign_keys_in_parallel(job, plan).await?;
        let rest = "build constraints, foreign keys and triggers";
        self.restore_list(job, &self.rest, "post-data.list", jobs, rest, on_retry)
            .await?;
        add_dangling_foreign_keys(job, plan).await
    }

    /// `restore_entries` of `lines` through the list file `list` in the scratch directory.
    async fn restore_list(
        &self,
        job: &Job,
        lines: &[String],
        list: &str,
        sessions: usize,
        what: &'static str,
        on_retry: OnRetry<'_>,
    ) -> Result<(), StepError> {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let list = job.scratch_directory.join(list);
        self.restore_entries(job, &list, lines, sessions, what, on_retry).await
    }

    /// Restores `lines` of the schema archive through the list file `list`, `sessions` at once.
    /// A transient failure (a deadlock, the server restarting) is tried again after a pause:
    /// only the entries pg_restore reports as failed when it could finish, else all of them, and
    /// then an object the failed attempt did create counts as restored.
    async fn restore_entries(
        &self,
        job: &Job,
        list: &Path,
        lines: Vec<&str>,
        sessions: usize,
        what: &'static str,
        on_retry: OnRetry<'_>,
    ) -> Result<(), StepError> {
        let mut remaining: Vec<&str> = lines;
        // A resumed run may meet what the failed one created.
        let mut tolerate_existing = job.resuming;
        let mut attempt = 1;
        while !remaining.is_empty() {
            std::fs::write(list, remaining.join("\n") + "\n")
                .map_err(|error| StepError::Failed(anyhow::anyhow!("cannot write {}: {error}", list.display())))?;
            let command = job
                .pg_restore()
                .argument("--section=post-data")
                .argument(format!("--jobs={}", sessions.clamp(1, remaining.len())))
                .argument("--use-list")
                .argument(list)
                .argument(&self.schema_dump);
            let outcome = match run_restore(job, &command, what, tolerate_existing).await {
                // Built is not done until a crash of the target cannot take it back.
                Ok(()) => job.make_loads_durable().await.map_err(RestoreFailure::from),
                failed => failed,
            };
            let _ = std::fs::remove_file(list);
            let retry = match outcome {
                Ok(()) => return Ok(()),
                Err(RestoreFailure::Cancelled) => return Err(StepError::Cancelled),
                Err(RestoreFailure::Permanent(error)) => return Err(StepError::Failed(error)),
                Err(RestoreFailure::Transient { error, .. }) if attempt > job.retry_policy.retries => {
                    return Err(StepError::Failed(
                        error.context(format!("gave up after {attempt} attempts")),
                    ));
                }
                Err(RestoreFailure::Transient { error, failed }) => {
                    on_retry(what, attempt, &error, job.retry_policy.delay_before(attempt));
                    failed
                }
            };
            match retry {
                Some(failed) => remaining.retain(|line| failed.contains(&dump_id(line))),
                None => tolerate_existing = true,
            }
            tokio::select! {
                _ = tokio::time::sleep(job.retry_policy.delay_before(attempt)) => {}
                _ = job.cancellation.cancelled() => return Err(StepError::Cancelled),
            }
            attempt += 1;
        }
        Ok(())
    }
}

/// How a restore of post-data entries failed.
enum RestoreFailure {
    Cancelled,
    Permanent(anyhow::Error),
    /// Worth another try; `failed` holds the dump ids of the entries that failed when pg_restore
    /// went through its whole list, `None` when it stopped half-way.
    Transient {
        error: anyhow::Error,
        failed: Option<HashSet<u32>>,
    },
}

impl From<AttemptError> for RestoreFailure {
    /// A failure that says nothing of which entries failed: a transient one retries them all.
    fn from(error: AttemptError) -> RestoreFailure {
        match error {
            AttemptError::Cancelled => RestoreFailure::Cancelled,
            AttemptError::Transient(error) => RestoreFailure::Transient { error, failed: None },
            AttemptError::Permanent(error) => RestoreFailure::Permanent(error),
        }
    }
}

/// The dump id a `pg_restore --list` line starts with.
fn dump_id(line: &str) -> u32 {
    line.split(';')
        .next()
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or(0)
}

/// Errors a second attempt meets for objects the first attempt did create.
const ALREADY_DONE: &[&str] = &["already exists", "multiple primary keys", "is already attached"];

/// Runs one restore of post-data entries and tells what failed. With `tolerate_existing`, errors
/// that only say an object exists already are not failures.
async fn run_restore(
    job: &Job,
    command: &crate::process::ChildCommand,
    what: &str,
    tolerate_existing: bool,
) -> Result<(), RestoreFailure> {
    let output = match crate::process::run(command, &job.cancellation).await {
        Ok(output) => output,
        Err(error) => return Err(crate::tools::process_attempt_error(error).into()),
    };
    let error_lines: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.contains("ERROR:") && !line.contains(crate::tools::NEWER_SETTING_REFUSED))
        .collect();
    if tolerate_existing
        && !error_lines.is_empty()
        && error_lines
            .iter()
            .all(|line| ALREADY_DONE.iter().any(|done| line.contains(done)))
        && !output.stderr.contains("worker process died")
    {
        return Ok(());
    }
    match crate::tools::judge(command, &output, what) {
        Ok(()) => Ok(()),
        Err(AttemptError::Transient(error)) => {
            let finished = output.stderr.contains("errors ignored on restore");
            let failed: HashSet<u32> = output
                .stderr
                .lines()
                .filter_map(|line| line.split("from TOC entry ").nth(1))
                .map(dump_id)
                .collect();
            let failed = (finished && !failed.is_empty()).then_some(failed);
            Err(RestoreFailure::Transient { error, failed })
        }
        Err(other) => Err(other.into()),
    }
}

/// The relations to name in VACUUM or ANALYZE for these planned tables: a partitioned root reaches
/// every partition (and gets statistics for the tree as a whole); otherwise each member table.
fn maintenance_targets<'a>(plan: &'a Plan, tables: &[usize]) -> Vec<&'a QualifiedName> {
    let mut targets = Vec::new();
    for index in tables {
        let table = &plan.tables[*index];
        if table.partitioned {
            targets.push(&table.name);
        } else {
            targets.extend(&table.members);
        }
    }
    targets
}

/// Runs VACUUM or ANALYZE over `targets` in one statement on a fresh session, retried.
async fn maintain(job: &Job, kind: Maintenance, targets: &[&QualifiedName]) -> Result<(), StepError> {
    job.on_copy(|client| async move { catalog::maintain(&client, kind, targets).await })
        .await
}

/// VACUUMs the given planned tables over `jobs` connections, the largest tables spread first.
async fn vacuum_in_parallel(job: &Job, plan: &Plan, tables: &[usize]) -> Result<(), StepError> {
    let sized = tables.iter().map(|index| (*index, plan.tables[*index].size_bytes));
    let groups = spread_by_size(sized, job.jobs.get());
    let runs = groups
        .iter()
        .map(|group| async move { maintain(job, Maintenance::Vacuum, &maintenance_targets(plan, group)).await });
    for result in futures_util::future::join_all(runs).await {
        result?;
    }
    Ok(())
}

/// Deals `items` (each with its size) to at most `sessions` groups, largest first, each to the
/// lightest group so far; no group is empty.
fn spread_by_size<T>(items: impl Iterator<Item = (T, i64)>, sessions: usize) -> Vec<Vec<T>> {
    let mut by_size: Vec<(T, i64)> = items.collect();
    by_size.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    let mut groups: Vec<(i64, Vec<T>)> = (0..sessions.clamp(1, by_size.len().max(1)))
        .map(|_| (0, Vec::new()))
        .collect();
    for (item, size) in by_size {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("one group at least");
        // Empty tables still take their turn.
        lightest.0 += size.max(1);
        lightest.1.push(item);
    }
    groups
        .into_iter()
        .map(|(_, group)| group)
        .filter(|group| !group.is_empty())
        .collect()
}

/// Adds the plan's parallel foreign keys `NOT VALID` in one session (each statement holds the
/// referenced table only for a moment), then validates them over `jobs` sessions, the largest
/// tables spread first. Both steps may be repeated: a key already there is validated again, which
/// checks nothing once it is valid.
async fn add_foreign_keys_in_parallel(job: &Job, plan: &Plan) -> Result<(), StepError> {
    let carried: Vec<(&QualifiedName, &plan::ParallelForeignKey, i64)> = plan
        .parallel_foreign_keys
        .iter()
        .flat_map(|key| key.carriers.iter().map(move |(table, size)| (table, key, *size)))
        .collect();
    if carried.is_empty() {
        return Ok(());
    }
    let keys: Vec<catalog::KeyOnTable> = carried
        .iter()
        .map(|(table, key, _)| catalog::KeyOnTable {
            table,
            name: &key.name,
            definition: &key.definition,
        })
        .collect();
    let keys = &keys;
    let added = job
        .on_copy(|client| async move { catalog::add_foreign_keys_not_valid(&client, keys).await })
        .await?;
    let to_validate = carried
        .iter()
        .zip(added)
        .filter(|(_, added)| *added)
        .map(|((table, key, size), _)| ((*table, key.name.as_str()), *size));
    let groups = spread_by_size(to_validate, job.jobs.get());
    let runs = groups.iter().map(|group| {
        job.on_copy(move |client| async move {
            for (table, name) in group {
                catalog::validate_constraint(&client, table, name).await?;
            }
            Ok(())
        })
    });
    for result in futures_util::future::join_all(runs).await {
        result?;
    }
    Ok(())
}

/// Follows the foreign-key policy for keys that point at tables whose data is not copied.
async fn add_dangling_foreign_keys(job: &Job, plan: &Plan) -> Result<Vec<(usize, KeyFate)>, StepError> {
    let mut fates = Vec::new();
    for (index, key) in plan.dangling_foreign_keys.iter().enumerate() {
        let fate = match plan.foreign_key_policy {
            ForeignKeyPolicy::IncludeParent => continue,
            ForeignKeyPolicy::Skip => KeyFate::LeftOut,
            ForeignKeyPolicy::NotValid if key.on_partitioned_table => KeyFate::LeftOutPartitioned,
            ForeignKeyPolicy::NotValid => {
                job.on_copy(|client| async move {
                    catalog::add_foreign_key_not_valid(&client, &key.table, &key.name, &key.definition).await
                })
                .await?;
                KeyFate::CreatedNotValid
            }
        };
        fates.push((index, fate));
    }
    Ok(fates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_spread_largest_first_to_the_lightest_session() {
        let groups = spread_by_size([("a", 10), ("b", 60), ("c", 30), ("d", 25), ("e", 0)].into_iter(), 2);
        assert_eq!(groups, [vec!["b", "e"], vec!["c", "d", "a"]]);
        // Never more sessions than items, and never an empty one.
        assert_eq!(spread_by_size([("a", 1)].into_iter(), 4), [vec!["a"]]);
        assert!(spread_by_size(std::iter::empty::<((), i64)>(), 2).is_empty());
    }

    #[test]
    fn indexes_and_key_constraints_go_to_their_table_and_the_rest_waits() {
        let listing = "\
;
; Archive created at 2026-11-21
3275; 2606 100 CONSTRAINT public accounts accounts_pkey postgres
3278; 1259 101 INDEX public measurements_account_idx postgres
3282; 1259 102 INDEX public measurements_2024_01_account_id_idx postgres
3330; 0 0 INDEX ATTACH public measurements_2024_01_account_id_idx postgres
3340; 2606 103 FK CONSTRAINT public measurements measurements_account_id_fkey postgres
3341; 2606 104 FK CONSTRAINT public orders orders_user_fkey postgres
3350; 1259 105 INDEX public unloaded_idx postgres
3360; 2620 106 TRIGGER public accounts audit postgres
";
        // Index or constraint oid -> table oid; table oid -> planned table.
        let owners = HashMap::from([(100, 10), (101, 20), (102, 21), (103, 20), (104, 30), (105, 40)]);
        let planned_by_oid = HashMap::from([(10, 0), (20, 1), (21, 1), (30, 2)]);
        let held_back = HashSet::from([104]);
        let listing = crate::tools::parse_listing(listing);
        let (per_table, rest) = split_listing(&listing, &owners, &planned_by_oid, 3, &held_back);
        assert_eq!(
            per_table[0],
            ["3275; 2606 100 CONSTRAINT public accounts accounts_pkey postgres"]
        );
        assert_eq!(per_table[1].len(), 2, "{per_table:?}");
        assert!(per_table[2].is_empty());
        let rest_ids: Vec<&str> = rest.iter().map(|line| line.split(';').next().unwrap()).collect();
        // Index attachments, foreign keys and triggers wait for the end; an index whose table no
        // unit loads too; the held-back foreign key is left out.
        assert_eq!(rest_ids, ["3330", "3340", "3350", "3360"]);
    }
}
