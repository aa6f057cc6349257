//! Post-data: indexes, constraints, foreign keys, triggers, policies and materialized-view
//! refreshes. A table's indexes and key constraints are built as soon as all its rows are loaded,
//! while other tables still load; the rest is restored in parallel at the end, after a VACUUM of
//! the tables that foreign keys reference. Foreign keys that point out of a partial selection are
//! held back and handled by the configured policy.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::Job;
use crate::catalog::{self, Maintenance, QualifiedName};
use crate::plan::{self, ForeignKeyPolicy, Plan};
use crate::report::KeyFate;
use crate::scheduler::StepError;
use crate::tools::{TocEntry, TocKind, run_tool};

/// The post-data entries of the schema dump, split by when they can run.
pub struct PostData {
    schema_dump: PathBuf,
    /// Per planned table: its INDEX and CONSTRAINT (primary key, unique, exclusion) entries.
    per_table: Vec<Vec<String>>,
    /// Everything else, without held-back foreign keys: restored once every table is loaded.
    rest: Vec<String>,
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
        let held_back: HashSet<u32> = match plan.foreign_key_policy {
            ForeignKeyPolicy::IncludeParent => HashSet::new(),
            _ => plan.dangling_foreign_keys.iter().map(|key| key.oid).collect(),
        };
        // Only tables that some unit loads get built early; the others wait for the end.
        let loaded: HashSet<usize> = plan::units_per_table(plan).into_keys().collect();
        let mut planned_by_oid = plan.tables_by_tree_oid();
        planned_by_oid.retain(|_, index| loaded.contains(index));
        let (per_table, rest) = split_listing(&listing, owners, &planned_by_oid, plan.tables.len(), &held_back);
        Ok(PostData {
            schema_dump: schema_dump.to_path_buf(),
            per_table,
            rest,
        })
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
    ) -> Result<(), StepError> {
        let targets = maintenance_targets(plan, tables);
        if job.analyze && !targets.is_empty() {
            maintain(job, Maintenance::Analyze, &targets).await?;
        }
        self.restore_table_entries(job, tables, batch, sessions).await?;
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
    ) -> Result<(), StepError> {
        let lines: Vec<&str> = tables
            .iter()
            .flat_map(|index| self.per_table[*index].iter().map(String::as_str))
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let list = job.dump_directory.join(format!("indexes-{batch:04}.list"));
        std::fs::write(&list, lines.join("\n") + "\n")
            .map_err(|error| StepError::Failed(anyhow::anyhow!("cannot write {}: {error}", list.display())))?;
        // In parallel too: a partitioned table brings many indexes, and a free core would otherwise
        // wait for them one by one.
        let command = job
            .pg_restore()
            .argument("--section=post-data")
            .argument(format!("--jobs={}", sessions.clamp(1, lines.len())))
            .argument("--use-list")
            .argument(&list)
            .argument(&self.schema_dump);
        // Not retried: a second run over half-built indexes would fail on "already exists".
        let result = run_tool(&command, &job.cancellation, "build indexes and key constraints").await;
        let _ = std::fs::remove_file(&list);
        result?;
        Ok(())
    }

    /// VACUUMs the tables that foreign keys reference, `jobs` connections at a time, then restores
    /// the rest of post-data in parallel; returns what became of each foreign key that points out
    /// of the selection (by its index in the plan). The VACUUM runs here, with no load in flight, because a concurrent transaction
    /// would keep it from marking pages all-visible; without that, each foreign-key check
    /// hash-joins the whole referenced table instead of probing its index.
    pub async fn restore_rest(&self, job: &Job, plan: &Plan) -> Result<Vec<(usize, KeyFate)>, StepError> {
        vacuum_in_parallel(job, plan, &plan.referenced_tables).await?;
        let list = job.dump_directory.join("post-data.list");
        std::fs::write(&list, self.rest.join("\n") + "\n")
            .map_err(|error| StepError::Failed(anyhow::anyhow!("cannot write {}: {error}", list.display())))?;
        let command = job
            .pg_restore()
            .argument("--section=post-data")
            .argument(format!("--jobs={}", job.jobs.get()))
            .argument("--use-list")
            .argument(&list)
            .argument(&self.schema_dump);
        // Not retried: a second run over half-built indexes would fail on "already exists".
        run_tool(
            &command,
            &job.cancellation,
            "build constraints, foreign keys and triggers",
        )
        .await?;
        add_dangling_foreign_keys(job, plan).await
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
    let mut by_size: Vec<usize> = tables.to_vec();
    by_size.sort_by_key(|index| std::cmp::Reverse(plan.tables[*index].size_bytes));
    let connections = job.jobs.get().min(by_size.len().max(1));
    let mut groups: Vec<(i64, Vec<usize>)> = vec![(0, Vec::new()); connections];
    for index in by_size {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(size, _)| *size)
            .expect("one group at least");
        lightest.0 += plan.tables[index].size_bytes;
        lightest.1.push(index);
    }
    let runs = groups
        .iter()
        .filter(|(_, group)| !group.is_empty())
        .map(|(_, group)| async move { maintain(job, Maintenance::Vacuum, &maintenance_targets(plan, group)).await });
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
