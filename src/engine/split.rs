//! Large tables cut into parts that load at once (`--split-larger-than`; by default a table
//! larger than 512 MB that holds more than twice its share of the data over `--jobs`): a table is
//! split at quantiles of its single-column integer key, sampled (so skewed keys give parts of
//! about equal rows), or without one (PostgreSQL 14+) into equal ranges of its blocks. Each part
//! is then copied by dbsync itself from the export snapshot (`steps::relay`), beside the others:
//! through a file in its unit's directory, or relayed (`--stream`, or a table larger than
//! `--stream-larger-than` whose dumps are not kept).

use std::collections::HashSet;
use std::sync::Arc;

use super::steps::Job;
use super::{RunContext, interruptible};
use crate::catalog::{self, QualifiedName};
use crate::errors::SyncError;
use crate::plan::{self, Plan, RowRange, Unit, UnitKind};
use crate::report::{Event, Notice, PlanSplit};
use crate::settings::{AUTOMATIC_SPLIT_FLOOR, Splitting};

/// About how many rows the key sample reads.
const SAMPLE_ROWS: f64 = 100_000.0;

/// In a sync whose dumps are not kept, a table at least this large that is not cut into parts is
/// still copied by dbsync itself, as one part: `COPY`'s binary format where it is safe, loaded
/// `FREEZE` into a table emptied in the same transaction. Measured on *large* (`tuned`, 3 rounds
/// against `pg_dump`/`pg_restore` units): the target server's CPU 6.06 → 5.19 s, the client's
/// 0.75 → 1.14 s, the floor 4.00 → 3.76 s. Smaller tables go in batches, one unit of dbsync's
/// `COPY` per `pg_dump` unit (a part of their own would each take sessions and a snapshot
/// import), and an archive's units stay what `pg_restore` reads by hand.
pub const ROW_COPY_FLOOR: u64 = 8 << 20;

/// A session on the source, and each candidate's integer key (a table to cut's only) and
/// columns (`None`: the table is gone).
type Layouts = (
    tokio_postgres::Client,
    Vec<Option<String>>,
    Vec<Option<Vec<catalog::TableColumn>>>,
);

/// A table to split: its unit, its planned table and its size.
struct Candidate {
    unit: usize,
    /// The table whose own rows are split: a standard table, or one member of a tree (a leaf
    /// partition, an inheritance child).
    table: QualifiedName,
    oid: u32,
    planned: usize,
    size_bytes: i64,
    /// The planner's estimate of its rows (negative when never analyzed).
    estimated_rows: f64,
    /// Larger than the threshold: cut into parts (otherwise a masked table, copied whole).
    large: bool,
    /// At least the row-copy floor: copied whole by dbsync if it is not cut.
    copied_whole: bool,
    /// Smaller than the floor, in a copy that has one: copied by dbsync in its unit's batch.
    batched: bool,
}

/// Which tables leave their `pg_dump` unit for dbsync's own `COPY`.
struct Wanted<'a> {
    /// Larger than this: cut into parts (0: none).
    threshold: u64,
    /// Masked tables, by planned table.
    masks: &'a std::collections::HashMap<usize, Vec<(String, String)>>,
    /// At least this large: copied whole (`ROW_COPY_FLOOR`); smaller: in a batch.
    row_copy_floor: Option<u64>,
}

impl RunContext<'_> {
    /// The plan with each large table taken out of its unit and copied in parts, and each masked
    /// table, or with `row_copy_floor` each table at least that large, as one part. Only for a
    /// copy from a snapshot (a restore or a resume keeps the units of the run that dumped).
    pub(super) async fn split_large_tables(
        &self,
        job: &Job,
        plan: &Plan,
        source: &super::preflight::Source,
        row_copy_floor: Option<u64>,
    ) -> Result<Plan, SyncError> {
        let (inventory, source_major) = (&source.inventory, source.server.major());
        let sizing = self.part_sizing(plan);
        // A subset's rows are chosen by ctid, page by page, and are few: no table is cut, and
        // every one goes in a batch (a unit of its own costs sessions and a snapshot import).
        let subset = self.subset.is_some();
        let wanted = Wanted {
            threshold: if subset { 0 } else { sizing.threshold },
            masks: &self.masks,
            row_copy_floor: row_copy_floor.map(|floor| if subset { u64::MAX } else { floor }),
        };
        let candidates = candidates(plan, inventory, &wanted);
        if candidates.is_empty() || job.snapshot.is_none() {
            return Ok(plan.clone());
        }
        let (client, integer_keys, columns) = self.read_layouts(source, &candidates).await?;
        let same_major = self
            .workspace
            .target_server
            .as_ref()
            .is_some_and(|target| target.server.major() == source_major);
        let mut split: Vec<(Candidate, Vec<RowRange>)> = Vec::new();
        let mut batched: Vec<(Candidate, RowRange)> = Vec::new();
        for ((candidate, integer_key), columns) in candidates.into_iter().zip(integer_keys).zip(columns) {
            let Some(columns) = columns else {
                continue;
            };
            let masked = self.masks.get(&candidate.planned).cloned().unwrap_or_default();
            let cut = self
                .where_to_cut(
                    &client,
                    &candidate,
                    integer_key,
                    source_major,
                    &sizing,
                    !masked.is_empty(),
                )
                .await?;
            let Some((key, boundaries)) = cut else {
                continue;
            };
            let table = whole_table(inventory, &candidate, key, columns, same_major, masked);
            let mut ranges = plan::row_ranges(&table, &boundaries);
            if candidate.batched {
                batched.push((candidate, ranges.remove(0)));
                continue;
            }
            self.announce_parts(&candidate, &table, boundaries);
            split.push((candidate, ranges));
        }
        Ok(with_parts(plan, split, batched))
    }

    /// A session on the source, and each candidate's integer key (read only for the tables to
    /// cut: on 1,500 tables the query took 0.11 s) and columns.
    async fn read_layouts(
        &self,
        source: &super::preflight::Source,
        candidates: &[Candidate],
    ) -> Result<Layouts, SyncError> {
        let names: Vec<QualifiedName> = candidates.iter().map(|candidate| candidate.table.clone()).collect();
        let to_cut: Vec<QualifiedName> = candidates
            .iter()
            .filter(|candidate| candidate.large)
            .map(|candidate| candidate.table.clone())
            .collect();
        // A session of its own: reading columns changes a session's search_path, and the
        // snapshot session must print definitions as it always does.
        let read = async {
            let client = catalog::connect(&source.endpoint, "source").await?;
            let mut layouts = match to_cut.is_empty() {
                true => Vec::new(),
                false => catalog::checksum_layouts(&client, &to_cut).await?,
            }
            .into_iter();
            let columns = catalog::table_columns(&client, &names).await?;
            let integer_keys = candidates
                .iter()
                .map(|candidate| match candidate.large {
                    true => layouts.next().flatten().and_then(|layout| layout.integer_key),
                    false => None,
                })
                .collect();
            anyhow::Ok((client, integer_keys, columns))
        };
        interruptible(&self.cancellation, read).await
    }

    /// The key the candidate is cut on and where (an empty key and no boundaries: copied whole,
    /// as a masked table, a table at least the row-copy floor, or one of a batch is); `None`:
    /// it stays in its `pg_dump` unit.
    async fn where_to_cut(
        &self,
        client: &tokio_postgres::Client,
        candidate: &Candidate,
        integer_key: Option<String>,
        source_major: u32,
        sizing: &PartSizing,
        masked: bool,
    ) -> Result<Option<(String, Vec<i64>)>, SyncError> {
        let cut = match candidate.large {
            true => {
                let parts = sizing.parts(candidate.size_bytes);
                self.cut(client, candidate, integer_key, source_major, parts).await?
            }
            false => None,
        };
        Ok(match cut {
            Some(cut) => Some(cut),
            None if masked || candidate.copied_whole || candidate.batched => Some((String::new(), Vec::new())),
            None => None,
        })
    }

    /// `--split-larger-than` for this plan's data and `--jobs`.
    fn part_sizing(&self, plan: &Plan) -> PartSizing {
        let data_bytes = plan
            .units
            .iter()
            .filter(|unit| unit.kind == UnitKind::Tables)
            .map(|unit| unit.size_bytes.max(0) as u64)
            .sum();
        PartSizing::of(self.settings.splitting, data_bytes, self.granted_jobs().get())
    }

    /// What `dbsync plan` shows of the split: each table a sync would cut, into about how many
    /// parts and on which key (where it is cut needs the snapshot a sync takes).
    pub(super) async fn planned_splits(
        &self,
        plan: &Plan,
        source: &super::preflight::Source,
    ) -> Result<Vec<PlanSplit>, SyncError> {
        let sizing = self.part_sizing(plan);
        let wanted = Wanted {
            threshold: sizing.threshold,
            masks: &self.masks,
            row_copy_floor: None,
        };
        let mut candidates = candidates(plan, &source.inventory, &wanted);
        candidates.retain(|candidate| candidate.large);
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<QualifiedName> = candidates.iter().map(|candidate| candidate.table.clone()).collect();
        let layouts = interruptible(&self.cancellation, catalog::checksum_layouts(&source.client, &names)).await?;
        let splits = candidates.into_iter().zip(layouts).filter_map(|(candidate, layout)| {
            let key = match split_key(layout?.integer_key, source.server.major())? {
                SplitKey::Column(key) => key,
                SplitKey::Blocks => "ctid".to_string(),
            };
            Some(PlanSplit {
                table: candidate.table.display_name(),
                size_bytes: candidate.size_bytes,
                parts: sizing.parts(candidate.size_bytes),
                key,
            })
        });
        Ok(splits.collect())
    }

    /// Says which columns of the table are masked, and where it is cut.
    fn announce_parts(&self, candidate: &Candidate, table: &RowRange, boundaries: Vec<i64>) {
        if !table.masked.is_empty() {
            self.emit(Event::Notice(Notice::TableMasked {
                table: candidate.table.display_name(),
                columns: table.masked.iter().map(|(column, _)| column.clone()).collect(),
            }));
        }
        if !boundaries.is_empty() {
            self.emit(Event::Notice(Notice::TableSplit {
                table: candidate.table.display_name(),
                parts: boundaries.len() + 1,
                key: table.key.clone(),
                boundaries,
                binary: table.binary,
            }));
        }
    }

    /// The key to split the candidate into `parts` on (`split_key`) and where: an integer key at
    /// sampled quantiles, `ctid` into equal block ranges. `None` when it cannot be split.
    async fn cut(
        &self,
        client: &tokio_postgres::Client,
        candidate: &Candidate,
        integer_key: Option<String>,
        source_major: u32,
        parts: usize,
    ) -> Result<Option<(String, Vec<i64>)>, SyncError> {
        let (key, boundaries) = match split_key(integer_key, source_major) {
            Some(SplitKey::Column(key)) => {
                let boundaries = self.key_boundaries(client, candidate, &key, parts).await?;
                (key, boundaries)
            }
            Some(SplitKey::Blocks) => {
                let blocks = catalog::table_blocks(client, &candidate.table);
                let blocks = interruptible(&self.cancellation, blocks).await?;
                ("ctid".to_string(), block_boundaries(blocks, parts))
            }
            None => return Ok(None),
        };
        Ok((!boundaries.is_empty()).then_some((key, boundaries)))
    }

    /// `parts` parts of about equal rows, cut at quantiles of `key` in a sample.
    async fn key_boundaries(
        &self,
        client: &tokio_postgres::Client,
        candidate: &Candidate,
        key: &str,
        parts: usize,
    ) -> Result<Vec<i64>, SyncError> {
        let rows = candidate.estimated_rows.max(0.0);
        let sample_percent = if rows > 0.0 {
            (100.0 * SAMPLE_ROWS / rows).clamp(0.01, 100.0)
        } else {
            100.0
        };
        let quantiles = catalog::key_quantiles(client, &candidate.table, key, parts, sample_percent);
        interruptible(&self.cancellation, quantiles).await
    }
}

/// What a table is cut on.
enum SplitKey {
    /// Its single-column integer key, at sampled quantiles.
    Column(String),
    /// Ranges of its blocks (`ctid`), read with a TID range scan.
    Blocks,
}

/// What a table with `integer_key` (or none) is cut on: the key, or without one ranges of blocks
/// on PostgreSQL 14 and newer (TID range scans); `None`: it is copied whole.
fn split_key(integer_key: Option<String>, source_major: u32) -> Option<SplitKey> {
    match integer_key {
        Some(key) => Some(SplitKey::Column(key)),
        None if source_major >= 14 => Some(SplitKey::Blocks),
        None => None,
    }
}

/// Which tables are cut, and into how many parts.
#[derive(Debug, PartialEq, Eq)]
struct PartSizing {
    /// Tables larger than this are cut (0: none).
    threshold: u64,
    /// About what one part holds.
    part_bytes: u64,
    /// The most parts of one table.
    most: u64,
}

impl PartSizing {
    /// `--split-larger-than` for a copy of `data_bytes` in all: a size gives parts of about that
    /// size, at most two per `--jobs` session; `auto` cuts only a table larger than the floor
    /// holding more than twice its share of the data (over `--jobs`: the other sessions would be
    /// done long before it), into parts of about one share, at most one per session. On 2 cores
    /// two shares was where splitting stopped losing (README, Benchmarks); with `--jobs` 1 or 2
    /// no table is more than twice its share.
    fn of(splitting: Splitting, data_bytes: u64, jobs: usize) -> PartSizing {
        let jobs = jobs.max(1) as u64;
        match splitting {
            Splitting::Never => PartSizing {
                threshold: 0,
                part_bytes: 1,
                most: 2,
            },
            Splitting::LargerThan(size) => PartSizing {
                threshold: size,
                part_bytes: size,
                most: 2 * jobs,
            },
            Splitting::Automatic => {
                let share = (data_bytes / jobs).max(1);
                PartSizing {
                    threshold: if jobs > 2 {
                        (2 * share).max(AUTOMATIC_SPLIT_FLOOR)
                    } else {
                        0
                    },
                    part_bytes: share,
                    most: jobs,
                }
            }
        }
    }

    /// How many parts a table of `size_bytes` is cut into: at least two.
    fn parts(&self, size_bytes: i64) -> usize {
        (size_bytes.max(0) as u64)
            .div_ceil(self.part_bytes)
            .clamp(2, self.most.max(2)) as usize
    }
}

/// What every part of the candidate shares: the key, the columns copied (generated ones left to
/// the target), the format, the owned sequences (which `row_ranges` gives the first part).
fn whole_table(
    inventory: &catalog::Inventory,
    candidate: &Candidate,
    key: String,
    columns: Vec<catalog::TableColumn>,
    same_major: bool,
    masked: Vec<(String, String)>,
) -> RowRange {
    let columns: Vec<_> = columns
        .into_iter()
        .filter(|column| column.generated.is_none())
        .collect();
    // A transform's expression may have another type than its column: text it is.
    let binary = same_major && masked.is_empty() && columns.iter().all(|column| column.builtin_type);
    let oid = candidate.oid;
    RowRange {
        key,
        lower: None,
        upper: None,
        columns: columns.into_iter().map(|column| column.name).collect(),
        sequences: owned_sequences(inventory, oid),
        number: 0,
        of: 0,
        binary,
        table_oid: oid,
        masked,
        subset: false,
    }
}

/// The sequences a table owns (serial and identity columns').
fn owned_sequences(inventory: &catalog::Inventory, table: u32) -> Vec<QualifiedName> {
    inventory
        .sequences
        .iter()
        .filter(|sequence| sequence.owned_by == Some(table))
        .map(|sequence| sequence.name.clone())
        .collect()
}

/// Block numbers that cut `blocks` blocks into `parts` ranges of about equal blocks (the last
/// open above, for rows stored in blocks added since); ascending, distinct, above 0.
fn block_boundaries(blocks: i64, parts: usize) -> Vec<i64> {
    let mut boundaries: Vec<i64> = (1..parts as i64).map(|part| blocks * part / parts as i64).collect();
    boundaries.retain(|boundary| *boundary > 0);
    boundaries.dedup();
    boundaries
}

/// The tables `wanted` names (standard tables, and single members of trees: a huge partition is
/// split, its siblings stay in their unit) in units of table data that a retry empties table by
/// table (not hash-partitioned trees).
fn candidates(plan: &Plan, inventory: &catalog::Inventory, wanted: &Wanted) -> Vec<Candidate> {
    if wanted.threshold == 0 && wanted.masks.is_empty() && wanted.row_copy_floor.is_none() {
        return Vec::new();
    }
    let sizes: std::collections::HashMap<u32, (i64, f64)> = inventory
        .tables
        .iter()
        .map(|table| (table.oid, (table.size_bytes, table.estimated_rows)))
        .collect();
    let mut found = Vec::new();
    for unit in plan
        .units
        .iter()
        .filter(|unit| unit.kind == UnitKind::Tables && !unit.truncate_whole_tree)
    {
        let carried: HashSet<&QualifiedName> = unit.tables.iter().collect();
        for planned in &unit.planned_tables {
            let table = &plan.tables[*planned];
            for (member, oid) in table.members.iter().zip(&table.member_oids) {
                let (size_bytes, estimated_rows) = sizes.get(oid).copied().unwrap_or((0, -1.0));
                let size = size_bytes.max(0) as u64;
                let large = wanted.threshold > 0 && size > wanted.threshold;
                let copied_whole = wanted.row_copy_floor.is_some_and(|floor| size >= floor);
                let masked = wanted.masks.contains_key(planned);
                let batched = wanted.row_copy_floor.is_some() && !(large || copied_whole || masked);
                if carried.contains(member) && (large || copied_whole || masked || batched) {
                    found.push(Candidate {
                        unit: unit.index,
                        table: member.clone(),
                        oid: *oid,
                        planned: *planned,
                        size_bytes,
                        estimated_rows,
                        large,
                        copied_whole,
                        batched,
                    });
                }
            }
        }
    }
    found
}

/// A `pg_dump` reads the whole catalog before its first row: about 0.1 s on two cores, as long as
/// dbsync's `COPY` takes for some 16 MB. Units that still go through it are exported as if that
/// much larger, so on a small database they start first, beside the pre-data restore that every
/// load waits for.
const PG_DUMP_START_BYTES: i64 = 16 << 20;

/// The plan with each split table taken out of its unit and given one unit per part, and the
/// batched tables of each unit given a unit of their own (which also sets the unit's sequences
/// when no table is left to `pg_dump`); a unit left with nothing to carry is dropped, and every
/// unit numbered again.
fn with_parts(plan: &Plan, split: Vec<(Candidate, Vec<RowRange>)>, batched: Vec<(Candidate, RowRange)>) -> Plan {
    let mut units: Vec<Unit> = Vec::new();
    for unit in &plan.units {
        let mut rest = (**unit).clone();
        let split: Vec<&(Candidate, Vec<RowRange>)> = split
            .iter()
            .filter(|(candidate, _)| candidate.unit == unit.index)
            .collect();
        let batched: Vec<&(Candidate, RowRange)> = batched
            .iter()
            .filter(|(candidate, _)| candidate.unit == unit.index)
            .collect();
        let taken = split
            .iter()
            .map(|(candidate, _)| candidate)
            .chain(batched.iter().map(|(candidate, _)| candidate));
        take_out(plan, &mut rest, taken.collect());
        for (candidate, ranges) in split {
            let share = candidate.size_bytes / ranges.len() as i64;
            units.extend(ranges.iter().map(|range| Unit {
                tables: vec![candidate.table.clone()],
                truncate_before_retry: vec![candidate.table.clone()],
                planned_tables: vec![candidate.planned],
                sequences: Vec::new(),
                sequence_owners: Vec::new(),
                size_bytes: share,
                part: Some(range.clone()),
                ..(**unit).clone()
            }));
        }
        if !batched.is_empty() {
            units.push(batch_of(unit, &mut rest, &batched));
        }
        if !rest.tables.is_empty() || !rest.sequences.is_empty() || rest.kind != UnitKind::Tables {
            units.push(rest);
        }
    }
    units.sort_by_key(|unit| {
        let start = if unit.copies_rows() { 0 } else { PG_DUMP_START_BYTES };
        std::cmp::Reverse(unit.size_bytes + start)
    });
    Plan {
        units: units
            .into_iter()
            .enumerate()
            .map(|(index, unit)| Arc::new(Unit { index, ..unit }))
            .collect(),
        ..plan.clone()
    }
}

/// A unit of the `batched` tables taken out of `unit`, in its order (largest first), with the
/// sequences of what is left of it (`rest`) when it has no table left for `pg_dump` (`rest` is
/// then dropped: the partitioned owners it named for `pg_dump` go with it).
fn batch_of(unit: &Unit, rest: &mut Unit, batched: &[&(Candidate, RowRange)]) -> Unit {
    let positions: std::collections::HashMap<&QualifiedName, usize> = unit
        .tables
        .iter()
        .enumerate()
        .map(|(position, table)| (table, position))
        .collect();
    let mut batched = batched.to_vec();
    batched.sort_by_key(|(candidate, _)| positions.get(&candidate.table).copied());
    let mut planned_tables: Vec<usize> = batched.iter().map(|(candidate, _)| candidate.planned).collect();
    planned_tables.sort_unstable();
    planned_tables.dedup();
    let tables: Vec<QualifiedName> = batched.iter().map(|(candidate, _)| candidate.table.clone()).collect();
    let sequences = match rest.tables.is_empty() {
        true => std::mem::take(&mut rest.sequences),
        false => Vec::new(),
    };
    Unit {
        truncate_before_retry: tables.clone(),
        tables,
        planned_tables,
        sequences,
        sequence_owners: Vec::new(),
        size_bytes: batched.iter().map(|(candidate, _)| candidate.size_bytes).sum(),
        batch: batched.iter().map(|(_, range)| range.clone()).collect(),
        ..unit.clone()
    }
}

/// The unit without the `taken` tables (and without the planned tables it no longer carries
/// rows of).
fn take_out(plan: &Plan, rest: &mut Unit, taken: Vec<&Candidate>) {
    let names: HashSet<&QualifiedName> = taken.iter().map(|candidate| &candidate.table).collect();
    rest.tables.retain(|table| !names.contains(table));
    rest.truncate_before_retry.retain(|table| !names.contains(table));
    let rest_tables: HashSet<&QualifiedName> = rest.tables.iter().collect();
    rest.planned_tables.retain(|planned| {
        plan.tables[*planned]
            .members
            .iter()
            .any(|member| rest_tables.contains(member))
    });
    rest.size_bytes -= taken.iter().map(|candidate| candidate.size_bytes).sum::<i64>();
}

#[cfg(test)]
mod tests {
    use super::{PartSizing, block_boundaries};
    use crate::settings::Splitting;

    const MB: u64 = 1 << 20;

    /// Whether a table of `table` MB is cut in a copy of `data` MB with `jobs` sessions, and into
    /// how many parts.
    fn cut(splitting: Splitting, data: u64, jobs: usize, table: u64) -> Option<usize> {
        let sizing = PartSizing::of(splitting, data * MB, jobs);
        (sizing.threshold > 0 && table * MB > sizing.threshold).then(|| sizing.parts((table * MB) as i64))
    }

    #[test]
    fn automatic_splitting_cuts_only_a_large_table_that_would_hold_up_the_others() {
        // One table of 1 GB and little else (the benchmark's huge): one part per session.
        assert_eq!(cut(Splitting::Automatic, 1100, 8, 1024), Some(8));
        assert_eq!(cut(Splitting::Automatic, 1100, 4, 1024), Some(4));
        // Not with one or two sessions: no table holds more than twice its share.
        assert_eq!(cut(Splitting::Automatic, 1100, 1, 1024), None);
        assert_eq!(cut(Splitting::Automatic, 1100, 2, 1024), None);
        // Not below the floor, however much of the data it holds.
        assert_eq!(cut(Splitting::Automatic, 600, 8, 500), None);
        // Not a table up to twice its share (large at twice the scale: 520 MB of 1 GB).
        assert_eq!(cut(Splitting::Automatic, 1050, 4, 520), None);
        assert_eq!(cut(Splitting::Automatic, 8000, 4, 4000), None);
        assert_eq!(cut(Splitting::Automatic, 8000, 4, 4500), Some(3));
        assert_eq!(cut(Splitting::Automatic, 8000, 4, 7000), Some(4));
    }

    #[test]
    fn a_given_size_cuts_parts_of_about_that_size_at_most_two_per_session() {
        assert_eq!(cut(Splitting::LargerThan(128 * MB), 1100, 2, 1024), Some(4));
        assert_eq!(cut(Splitting::LargerThan(128 * MB), 1100, 1, 1024), Some(2));
        assert_eq!(cut(Splitting::LargerThan(128 * MB), 1100, 2, 100), None);
        assert_eq!(cut(Splitting::LargerThan(128 * MB), 1100, 2, 130), Some(2));
        assert_eq!(cut(Splitting::Never, 1100, 2, 1024), None);
    }

    #[test]
    fn block_ranges_are_about_equal_and_never_empty_at_the_start() {
        assert_eq!(block_boundaries(1000, 4), vec![250, 500, 750]);
        assert_eq!(block_boundaries(10, 3), vec![3, 6]);
        assert_eq!(block_boundaries(1, 4), Vec::<i64>::new());
        assert_eq!(block_boundaries(2, 4), vec![1]);
    }
}
