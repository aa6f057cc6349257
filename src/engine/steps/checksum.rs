//! Row checksums compared between two servers: every table's rows hashed on both sides at once,
//! each side over its own sessions sharing one snapshot, a large table in key ranges so that
//! several sessions scan it together and a difference is located to a range of keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use tokio_postgres::Client;

use super::super::context::GrantedJobs;
use super::Job;
use crate::catalog::{self, BucketSum, ChecksumColumn, ChecksumLayout, KeyBuckets, QualifiedName, RowHash};
use crate::connection::Endpoint;
use crate::plan::Plan;
use crate::report::VerifyDifference;
use crate::scheduler::share_out;

/// A table larger than this is scanned in parts of about this size, by several sessions.
const PART_BYTES: i64 = 32 * 1024 * 1024;
const MOST_PARTS: i64 = 64;
/// Buckets of each part, summed apart, to locate a difference.
pub(crate) const BUCKETS_PER_PART: i64 = 16;

/// Sessions of one server in one snapshot, with the output settings checksums need.
pub struct Sessions(Vec<Arc<Client>>);

impl Sessions {
    /// `count` sessions on `endpoint` reading the snapshot `snapshot` (exported by another
    /// session of that server), or one the first session opens for all.
    pub async fn open(endpoint: &Endpoint, role: &str, count: GrantedJobs, snapshot: Option<&str>) -> Result<Sessions> {
        let first = catalog::connect(endpoint, role).await?;
        let snapshot = match snapshot {
            Some(snapshot) => {
                catalog::join_snapshot(&first, snapshot).await?;
                snapshot.to_string()
            }
            None => {
                catalog::begin_consistent_read(&first).await?;
                catalog::export_current_snapshot(&first).await?
            }
        };
        let mut clients = vec![Arc::new(first)];
        for _ in 1..count.get() {
            let client = catalog::connect(endpoint, role).await?;
            catalog::join_snapshot(&client, &snapshot).await?;
            clients.push(Arc::new(client));
        }
        for client in &clients {
            catalog::prepare_checksum_session(client).await?;
        }
        Ok(Sessions(clients))
    }

    /// Gives every session the masking salt its transforms read (`None`: none is used).
    pub async fn set_mask_salt(&self, salt: Option<&str>) -> Result<()> {
        for client in &self.0 {
            catalog::set_mask_salt(client, salt).await?;
        }
        Ok(())
    }

    fn first(&self) -> &Client {
        &self.0[0]
    }

    pub fn clients(&self) -> &[Arc<Client>] {
        &self.0
    }
}

/// How one table compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    MissingOnTarget,
    ColumnsDiffer {
        source: Vec<String>,
        target: Vec<String>,
    },
    RowsDiffer {
        source_rows: i64,
        target_rows: i64,
        /// For a table with an integer key: the first range of keys whose rows differ.
        first_range: Option<String>,
    },
}

struct TablePlan {
    table: QualifiedName,
    /// Hashed on the target; on the source the masked ones through their transforms.
    columns: Vec<ChecksumColumn>,
    source_columns: Vec<ChecksumColumn>,
    key: Option<(String, KeyBuckets)>,
    /// Key ranges `lower..upper` scanned apart; one open range without a key.
    parts: Vec<(Option<i64>, Option<i64>)>,
    size_bytes: i64,
}

/// Compares every table's rows; the source side in `source`'s snapshot, each table's masked
/// columns (`masks`, by table; empty for none) hashed as the copy holds them.
pub async fn compare(
    source: &Sessions,
    target: &Sessions,
    tables: &[QualifiedName],
    masks: &[Vec<(String, String)>],
    columns: ColumnChoice,
) -> Result<Compared> {
    let hash = agreed_hash(source.first(), target.first()).await?;
    let (mut comparisons, plans, left_out) = plan_tables(source, target, tables, masks, columns).await?;
    let tasks: Vec<(usize, usize)> = {
        let mut tasks: Vec<(usize, usize)> = plans
            .iter()
            .enumerate()
            .flat_map(|(plan, (_, table))| (0..table.parts.len()).map(move |part| (plan, part)))
            .collect();
        // The largest tables first, so the sessions finish together.
        tasks.sort_by_key(|(plan, _)| std::cmp::Reverse(plans[*plan].1.size_bytes));
        tasks
    };
    let table_plans: Vec<&TablePlan> = plans.iter().map(|(_, plan)| plan).collect();
    let (source_sums, target_sums) = tokio::try_join!(
        sums_of(source, &table_plans, &tasks, hash, true),
        sums_of(target, &table_plans, &tasks, hash, false)
    )?;
    for (plan_index, (index, plan)) in plans.iter().enumerate() {
        let gather = |sums: &[Vec<BucketSum>]| -> BTreeMap<i64, (i64, String)> {
            tasks
                .iter()
                .zip(sums)
                .filter(|((task_plan, _), _)| *task_plan == plan_index)
                .flat_map(|(_, sums)| sums.iter().map(|sum| (sum.bucket, (sum.rows, sum.sum.clone()))))
                .collect()
        };
        comparisons[*index] = judge(plan, &gather(&source_sums), &gather(&target_sums));
    }
    Ok(Compared { comparisons, left_out })
}

/// Each table's rows that `[subset]` chose (`members`, with their oids on the source; the
/// chosen rows in `chosen`) against `target`'s rows, by count and sum of row hashes: the
/// source's read page by page of chosen rows, its masked columns (`masks`) hashed as a copy
/// holds them. A table that differs is named.
pub async fn compare_chosen(
    source: &Client,
    target: &Client,
    chosen: (&Client, catalog::ChosenRows),
    members: &[(QualifiedName, u32)],
    masks: &[Vec<(String, String)>],
) -> Result<Vec<VerifyDifference>> {
    let hash = agreed_hash(source, target).await?;
    let names: Vec<QualifiedName> = members.iter().map(|(name, _)| name.clone()).collect();
    let layouts = catalog::checksum_layouts(source, &names).await?;
    let mut differences = Vec::new();
    for (((table, relation), layout), masked) in members.iter().zip(layouts).zip(masks) {
        let Some(layout) = layout else { continue };
        let source_columns = masked_columns(&layout.columns, masked);
        let (rows, sum) = catalog::chosen_checksum(source, (table, *relation), (&source_columns, hash), chosen).await?;
        let held = catalog::bucket_sums(target, table, &layout.columns, hash, None).await?;
        let (held_rows, held_sum) = held
            .first()
            .map_or((0, "0".to_string()), |sum| (sum.rows, sum.sum.clone()));
        if rows != held_rows || sum.to_string() != held_sum {
            let mut difference = VerifyDifference::new(
                "rows",
                table.display_name(),
                format!("{rows} rows chosen"),
                format!("{held_rows} rows"),
            );
            difference.detail = Some("checksums of the chosen rows and the copy's differ".into());
            differences.push(difference);
        }
    }
    Ok(differences)
}

/// `columns`, each masked one (`masked`) hashed through its transform's expression.
fn masked_columns(columns: &[ChecksumColumn], masked: &[(String, String)]) -> Vec<ChecksumColumn> {
    columns
        .iter()
        .map(|column| ChecksumColumn {
            expression: masked
                .iter()
                .find(|(name, _)| name == &column.name)
                .map(|(_, expression)| expression.clone()),
            ..column.clone()
        })
        .collect()
}

/// PostgreSQL's own hash when both servers give the probe the same value, else MD5.
pub async fn agreed_hash(source: &Client, target: &Client) -> Result<RowHash> {
    let probes = tokio::try_join!(catalog::builtin_hash_probe(source), catalog::builtin_hash_probe(target))?;
    Ok(match probes {
        (Some(source), Some(target)) if source == target => RowHash::Builtin,
        _ => RowHash::Md5,
    })
}

/// Which columns of a table are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnChoice {
    /// Every column: tables whose columns differ are a difference.
    All,
    /// The columns both sides have (a refreshed target may have columns of its own); the others
    /// are left out, and said to be.
    Common,
}

/// What `compare` found: each table's comparison, and the columns left out of it.
pub struct Compared {
    pub comparisons: Vec<Comparison>,
    pub left_out: Vec<LeftOut>,
}

/// A table's columns that only one side has, not compared (`ColumnChoice::Common`).
pub struct LeftOut {
    pub table: QualifiedName,
    pub source_only: Vec<String>,
    pub target_only: Vec<String>,
}

impl LeftOut {
    /// How a report says it: `orders (only on the target: note)`.
    pub fn describe(&self) -> String {
        let sides = [("source", &self.source_only), ("target", &self.target_only)];
        let named: Vec<String> = sides
            .iter()
            .filter(|(_, columns)| !columns.is_empty())
            .map(|(side, columns)| format!("only on the {side}: {}", columns.join(", ")))
            .collect();
        format!("{} ({})", self.table.display_name(), named.join("; "))
    }
}

/// The tables that can be hashed (present on both sides with the same columns, or with
/// `ColumnChoice::Common` the columns both have), each with its parts; the others' comparisons
/// already decided.
async fn plan_tables(
    source: &Sessions,
    target: &Sessions,
    tables: &[QualifiedName],
    masks: &[Vec<(String, String)>],
    choice: ColumnChoice,
) -> Result<(Vec<Comparison>, Vec<(usize, TablePlan)>, Vec<LeftOut>)> {
    let (source_layouts, target_layouts) = tokio::try_join!(
        catalog::checksum_layouts(source.first(), tables),
        catalog::checksum_layouts(target.first(), tables)
    )?;
    let mut comparisons = vec![Comparison::Equal; tables.len()];
    let mut plans = Vec::new();
    let mut left_out = Vec::new();
    for (index, (table, (source_layout, target_layout))) in tables
        .iter()
        .zip(source_layouts.into_iter().zip(target_layouts))
        .enumerate()
    {
        let Some(mut source_layout) = source_layout else {
            continue;
        };
        let Some(target_layout) = target_layout else {
            comparisons[index] = Comparison::MissingOnTarget;
            continue;
        };
        match shared_columns(table, &mut source_layout, &target_layout, choice) {
            Ok(None) => {}
            Ok(Some(left)) => left_out.push(left),
            Err(differ) => {
                comparisons[index] = differ;
                continue;
            }
        }
        let masked = masks.get(index).map(Vec::as_slice).unwrap_or_default();
        plans.push((index, plan_table(source.first(), table, source_layout, masked).await?));
    }
    Ok((comparisons, plans, left_out))
}

/// Narrows `source`'s columns (hashed in its order on both sides, by name) to those `target`
/// has too when `choice` allows, saying which were left out; the difference when the columns
/// differ and may not be narrowed (or share nothing).
fn shared_columns(
    table: &QualifiedName,
    source: &mut ChecksumLayout,
    target: &ChecksumLayout,
    choice: ColumnChoice,
) -> std::result::Result<Option<LeftOut>, Comparison> {
    let (source_columns, target_columns) = (column_names(source), column_names(target));
    let only = |these: &[String], others: &[String]| -> Vec<String> {
        these
            .iter()
            .filter(|column| !others.contains(column))
            .cloned()
            .collect()
    };
    let (source_only, target_only) = (
        only(&source_columns, &target_columns),
        only(&target_columns, &source_columns),
    );
    if source_only.is_empty() && target_only.is_empty() {
        return Ok(None);
    }
    if choice == ColumnChoice::All || source_only.len() == source_columns.len() {
        return Err(Comparison::ColumnsDiffer {
            source: source_columns,
            target: target_columns,
        });
    }
    source.columns.retain(|column| !source_only.contains(&column.name));
    Ok(Some(LeftOut {
        table: table.clone(),
        source_only,
        target_only,
    }))
}

/// Equal when every bucket has the same rows and sum on both sides.
fn judge(plan: &TablePlan, source: &BTreeMap<i64, (i64, String)>, target: &BTreeMap<i64, (i64, String)>) -> Comparison {
    if source == target {
        return Comparison::Equal;
    }
    let rows = |sums: &BTreeMap<i64, (i64, String)>| sums.values().map(|(rows, _)| rows).sum();
    let first = source
        .keys()
        .chain(target.keys())
        .filter(|bucket| source.get(bucket) != target.get(bucket))
        .min()
        .copied();
    Comparison::RowsDiffer {
        source_rows: rows(source),
        target_rows: rows(target),
        first_range: plan
            .key
            .as_ref()
            .zip(first)
            .map(|((key, buckets), bucket)| describe_bucket(key, buckets, bucket)),
    }
}

fn column_names(layout: &ChecksumLayout) -> Vec<String> {
    layout.columns.iter().map(|column| column.name.clone()).collect()
}

/// The parts a table is scanned in: by its integer key's range (read on the source) when it
/// has one and is not empty, else whole.
async fn plan_table(
    source: &Client,
    table: &QualifiedName,
    layout: ChecksumLayout,
    masked: &[(String, String)],
) -> Result<TablePlan> {
    let bounds = match &layout.integer_key {
        Some(key) => catalog::key_bounds(source, table, key).await?,
        None => None,
    };
    let parts_wanted = (layout.size_bytes / PART_BYTES + 1).clamp(1, MOST_PARTS);
    let key_plan = layout
        .integer_key
        .clone()
        .zip(bounds)
        .and_then(|(key, (lowest, highest))| key_buckets(lowest, highest, parts_wanted).map(|buckets| (key, buckets)));
    let parts = match &key_plan {
        None => vec![(None, None)],
        Some((_, buckets)) => part_ranges(buckets),
    };
    let source_columns = masked_columns(&layout.columns, masked);
    Ok(TablePlan {
        table: table.clone(),
        source_columns,
        columns: layout.columns,
        key: key_plan,
        parts,
        size_bytes: layout.size_bytes,
    })
}

/// Buckets of equal width over `lowest..=highest`, `BUCKETS_PER_PART` per part; `None` when the
/// span does not fit the arithmetic in 64 bits.
pub(crate) fn key_buckets(lowest: i64, highest: i64, parts: i64) -> Option<KeyBuckets> {
    let span = i128::from(highest) - i128::from(lowest) + 1;
    i64::try_from(span).ok()?;
    let wanted = i128::from(parts * BUCKETS_PER_PART);
    let step = ((span + wanted - 1) / wanted).max(1);
    Some(KeyBuckets {
        lowest,
        highest,
        step: i64::try_from(step).ok()?,
        buckets: i64::try_from((span + step - 1) / step).ok()?,
    })
}

/// The key ranges of the parts: `BUCKETS_PER_PART` buckets each, the first open below and the
/// last open above (so a target's rows outside the source's range are counted too).
fn part_ranges(buckets: &KeyBuckets) -> Vec<(Option<i64>, Option<i64>)> {
    let parts = (buckets.buckets + BUCKETS_PER_PART - 1) / BUCKETS_PER_PART;
    let boundary = |part: i64| buckets.lowest + part * BUCKETS_PER_PART * buckets.step;
    (0..parts)
        .map(|part| {
            let lower = (part > 0).then(|| boundary(part));
            let upper = (part + 1 < parts).then(|| boundary(part + 1));
            (lower, upper)
        })
        .collect()
}

fn describe_bucket(key: &str, buckets: &KeyBuckets, bucket: i64) -> String {
    if bucket < 0 {
        format!("{key} below {}", buckets.lowest)
    } else if bucket >= buckets.buckets {
        format!("{key} above {}", buckets.highest)
    } else {
        let from = buckets.lowest + bucket * buckets.step;
        let to = (from + (buckets.step - 1)).min(buckets.highest);
        format!("{key} {from} to {to}")
    }
}

/// Runs the tasks over the side's sessions, each session taking the next task when done.
async fn sums_of(
    sessions: &Sessions,
    plans: &[&TablePlan],
    tasks: &[(usize, usize)],
    hash: RowHash,
    on_source: bool,
) -> Result<Vec<Vec<BucketSum>>> {
    share_out(&sessions.0, tasks, |client, &(plan, part)| {
        let plan = plans[plan];
        let (lower, upper) = plan.parts[part];
        let range = plan
            .key
            .as_ref()
            .map(|(key, buckets)| (key.as_str(), *buckets, lower, upper));
        let columns = if on_source { &plan.source_columns } else { &plan.columns };
        async move { catalog::bucket_sums(&client, &plan.table, columns, hash, range).await }
    })
    .await
}

/// The tables whose checksums differ, as the report shows them.
pub fn checksum_differences(tables: &[QualifiedName], comparisons: &[Comparison]) -> Vec<VerifyDifference> {
    tables
        .iter()
        .zip(comparisons)
        .filter_map(|(table, comparison)| {
            let name = table.display_name();
            match comparison {
                Comparison::Equal => None,
                Comparison::MissingOnTarget => {
                    Some(VerifyDifference::new("table", name, "present".into(), "missing".into()))
                }
                Comparison::ColumnsDiffer { source, target } => Some(VerifyDifference::new(
                    "columns",
                    name,
                    source.join(", "),
                    target.join(", "),
                )),
                Comparison::RowsDiffer {
                    source_rows,
                    target_rows,
                    first_range,
                } => {
                    let mut difference = VerifyDifference::new(
                        "rows",
                        name,
                        format!("{source_rows} rows"),
                        format!("{target_rows} rows"),
                    );
                    difference.detail = Some(match first_range {
                        Some(range) => format!("checksums differ, first in {range}"),
                        None => "checksums differ".into(),
                    });
                    Some(difference)
                }
            }
        })
        .collect()
}

/// `sync --verify checksum`: the copy's rows against the source's in the export snapshot.
pub async fn checksum_copy(
    job: &Job,
    plan: &Plan,
    jobs: GrantedJobs,
    masks: &[Vec<(String, String)>],
) -> anyhow::Result<Vec<VerifyDifference>> {
    let snapshot = job.snapshot.as_ref().expect("a sync validates in its snapshot");
    let (source, target) = tokio::try_join!(
        Sessions::open(&snapshot.source, "source", jobs, Some(&snapshot.id)),
        Sessions::open(job.copy(), "target", jobs, None)
    )?;
    source.set_mask_salt(job.mask_salt.as_deref()).await?;
    let tables = plan.members();
    // The copy was made from the source's schema: every column is compared.
    let compared = compare(&source, &target, &tables, masks, ColumnChoice::All).await?;
    Ok(checksum_differences(&tables, &compared.comparisons))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_key_range_without_gaps() {
        let buckets = key_buckets(1, 2_000_000, 8).unwrap();
        let parts = part_ranges(&buckets);
        assert_eq!(parts.len(), 8);
        assert_eq!(parts[0].0, None);
        assert_eq!(parts[7].1, None);
        for pair in parts.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "each part starts where the previous one ends");
        }
        assert_eq!(describe_bucket("id", &buckets, 0), format!("id 1 to {}", buckets.step));
        assert_eq!(describe_bucket("id", &buckets, -1), "id below 1");
        assert_eq!(describe_bucket("id", &buckets, buckets.buckets), "id above 2000000");
        let last = describe_bucket("id", &buckets, buckets.buckets - 1);
        assert!(last.ends_with("to 2000000"), "{last}");
    }

    #[test]
    fn small_and_extreme_ranges() {
        let single = key_buckets(5, 5, 1).unwrap();
        assert_eq!((single.step, single.buckets), (1, 1));
        assert_eq!(part_ranges(&single), vec![(None, None)]);
        assert!(key_buckets(i64::MIN, i64::MAX, 1).is_none());
        assert!(key_buckets(-10, i64::MAX - 1, 4).is_none());
        let wide = key_buckets(-10, i64::MAX - 20, 4).unwrap();
        assert!(wide.step > 0 && wide.buckets <= 4 * BUCKETS_PER_PART);
        assert!(part_ranges(&wide).len() <= 4);
    }
}
