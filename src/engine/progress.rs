//! Per-table progress, known from the moment the plan exists: which units of each table are
//! dumped and loaded, for how long, how many bytes and rows the running `COPY` commands have
//! moved against the catalog's estimates, and the summary a run ends with, whatever phase it
//! ended in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::{CopyProgress, IndexBuildProgress, QualifiedName};
use crate::engine::steps::validate::TableCount;
use crate::plan::{Plan, Unit};
use crate::report::{
    Activity, PhaseSpan, PhaseTime, ProgressReport, RowChanges, StepSpan, SummaryRow, TableProgress, TableResult,
};

/// The two halves of moving a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Export,
    /// An import from the dump, or a streamed copy.
    Load,
}

impl Stage {
    pub fn of(activity: Activity) -> Stage {
        match activity {
            Activity::Export => Stage::Export,
            Activity::Import | Activity::Stream | Activity::Index => Stage::Load,
        }
    }
}

/// A value for each stage.
#[derive(Debug, Clone, Copy, Default)]
struct Stages<T> {
    export: T,
    load: T,
}

impl<T: Copy> Stages<T> {
    fn at(&self, stage: Stage) -> T {
        match stage {
            Stage::Export => self.export,
            Stage::Load => self.load,
        }
    }

    fn get(&mut self, stage: Stage) -> &mut T {
        match stage {
            Stage::Export => &mut self.export,
            Stage::Load => &mut self.load,
        }
    }
}

/// Which server a `COPY` runs on: the source dumps, the copy loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Source,
    Target,
}

#[derive(Debug, Default)]
struct TableState {
    name: String,
    description: String,
    estimated_rows: Option<u64>,
    estimated_bytes: u64,
    /// Units still to export, and still to load.
    units_left: Stages<usize>,
    /// The parts it is copied in (`--split-larger-than`), and how many are done per stage; 0
    /// for a table copied whole.
    parts: usize,
    parts_done: Stages<usize>,
    started: Stages<Option<Instant>>,
    elapsed: Stages<Duration>,
    dump_bytes: u64,
    failed: bool,
    /// Its indexes are built or being built.
    indexes_started: bool,
    /// Bytes and rows of `COPY` commands that have ended, per stage.
    finished_copies: Stages<(u64, u64)>,
    count: Option<TableCount>,
    /// `--incremental`: what its members' transactions wrote.
    changes: Option<RowChanges>,
    merged: Option<crate::report::MergeCounts>,
    /// Its rows go straight from `pg_dump` to `pg_restore` (a unit streamed in the default mode).
    streamed: bool,
}

impl TableState {
    /// Its changes, with the source's rows that needed no write once the source is counted.
    fn counted_changes(&self) -> Option<RowChanges> {
        let mut changes = self.changes.clone()?;
        changes.unchanged = self
            .count
            .as_ref()
            .map(|count| (count.source.max(0) as u64).saturating_sub(changes.inserted + changes.updated));
        Some(changes)
    }

    fn running(&self, stage: Stage) -> bool {
        self.started.at(stage).is_some() && self.units_left.at(stage) > 0 && !self.failed
    }
}

#[derive(Default)]
struct State {
    tables: Vec<TableState>,
    by_member: HashMap<QualifiedName, usize>,
    by_oid: HashMap<u32, usize>,
    /// Running `COPY` commands as last seen: (side, backend, table) → (bytes, rows).
    live_copies: HashMap<(Side, i32, QualifiedName), (u64, u64)>,
    /// When each running index build (backend, table) was first seen.
    index_builds_seen: HashMap<(i32, QualifiedName), Instant>,
    data_started: Option<Instant>,
    /// `dbsync merge`: every merged table's references were checked.
    merge_validated: bool,
    /// Every finished stretch of work (a unit's export, load or stream, a table's index build),
    /// for the report's timeline.
    spans: Vec<(Activity, String, Instant, Instant)>,
}

/// Per-table progress, shared by the unit tasks, the progress monitor and the summary.
#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
}

/// What a unit's stage means for one of its tables, for the lines users read.
pub struct TableNews {
    pub table: String,
    pub description: String,
    /// The first of the table's units to start this stage, or the last to finish it.
    pub first_or_last: bool,
    pub elapsed: Duration,
    pub dump_bytes: u64,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a stretch of work that started at `started` and ends now.
    pub fn record_span(&self, activity: Activity, name: String, started: Instant) {
        self.lock().spans.push((activity, name, started, Instant::now()));
    }

    /// The recorded stretches, in seconds from `origin`, in the order they started.
    pub fn step_spans(&self, origin: Instant) -> Vec<StepSpan> {
        let seconds = |at: Instant| at.saturating_duration_since(origin).as_secs_f64();
        let mut spans: Vec<StepSpan> = self
            .lock()
            .spans
            .iter()
            .map(|(activity, name, started, ended)| StepSpan {
                activity: activity.verb(),
                name: name.clone(),
                start: seconds(*started),
                end: seconds(*ended),
            })
            .collect();
        spans.sort_by(|left, right| left.start.total_cmp(&right.start));
        spans
    }

    /// Learns the planned tables, so that even a run that fails at once reports every one.
    pub fn set_plan(&self, plan: &Plan) {
        let mut state = self.lock();
        state.by_member.clear();
        state.by_oid.clear();
        state.tables = plan
            .tables
            .iter()
            .map(|table| TableState {
                name: table.name.display_name(),
                description: table.description.clone(),
                estimated_rows: table.estimated_rows,
                estimated_bytes: table.size_bytes.max(0) as u64,
                ..Default::default()
            })
            .collect();
        for (index, table) in plan.tables.iter().enumerate() {
            for member in &table.members {
                state.by_member.insert(member.clone(), index);
            }
            for oid in &table.member_oids {
                state.by_oid.insert(*oid, index);
            }
        }
        for (table, units) in crate::plan::units_per_table(plan) {
            state.tables[table].units_left = Stages {
                export: units,
                load: units,
            };
        }
        // A masked table copied whole is one part: nothing to count.
        for unit in plan
            .units
            .iter()
            .filter(|unit| unit.part.as_ref().is_some_and(|part| part.of > 1))
        {
            for table in &unit.planned_tables {
                state.tables[*table].parts += 1;
            }
        }
    }

    pub fn data_started(&self) {
        self.lock().data_started.get_or_insert_with(Instant::now);
    }

    /// A unit's stage began: its tables, and whether this is the table's first unit to start it.
    pub fn unit_started(&self, unit: &Unit, stage: Stage) -> Vec<TableNews> {
        let mut state = self.lock();
        unit.planned_tables
            .iter()
            .map(|index| {
                let table = &mut state.tables[*index];
                let started = table.started.get(stage);
                let first = started.is_none();
                started.get_or_insert_with(Instant::now);
                news(table, first, stage)
            })
            .collect()
    }

    /// A unit's tables as they stand, for lines about the unit as a whole.
    pub fn tables_of(&self, unit: &Unit) -> Vec<TableNews> {
        let state = self.lock();
        unit.planned_tables
            .iter()
            .map(|index| news(&state.tables[*index], true, Stage::Load))
            .collect()
    }

    /// A unit's stage ended: adds its dump sizes (by table oid) and tells which tables are done.
    pub fn unit_finished(&self, unit: &Unit, stage: Stage, dump_sizes: &HashMap<u32, u64>) -> Vec<TableNews> {
        let mut state = self.lock();
        for (oid, bytes) in dump_sizes {
            if let Some(index) = state.by_oid.get(oid).copied() {
                state.tables[index].dump_bytes += bytes;
            }
        }
        unit.planned_tables
            .iter()
            .map(|index| {
                let table = &mut state.tables[*index];
                if table.parts > 0 && unit.part.is_some() {
                    *table.parts_done.get(stage) += 1;
                }
                let left = table.units_left.get(stage);
                *left = left.saturating_sub(1);
                let done = *left == 0;
                let elapsed = table
                    .started
                    .get(stage)
                    .map(|started| started.elapsed())
                    .unwrap_or_default();
                *table.elapsed.get(stage) = elapsed;
                news(table, done, stage)
            })
            .collect()
    }

    pub fn unit_failed(&self, unit: &Unit) {
        self.tables_failed(&unit.planned_tables);
    }

    pub fn tables_failed(&self, tables: &[usize]) {
        let mut state = self.lock();
        for index in tables {
            state.tables[*index].failed = true;
        }
    }

    /// Tables whose indexes a resumed run built already: never built again.
    pub fn indexes_built_before(&self, tables: &[usize]) {
        let mut state = self.lock();
        for index in tables {
            if let Some(table) = state.tables.get_mut(*index) {
                table.indexes_started = true;
            }
        }
    }

    /// The unit's tables whose rows are now all loaded and whose indexes nobody has started yet;
    /// they are marked started.
    pub fn take_tables_ready_for_indexes(&self, unit: &Unit) -> Vec<usize> {
        let mut state = self.lock();
        unit.planned_tables
            .iter()
            .copied()
            .filter(|index| {
                let table = &mut state.tables[*index];
                let ready = table.units_left.load == 0 && !table.indexes_started;
                table.indexes_started |= ready;
                ready
            })
            .collect()
    }

    pub fn table_name(&self, index: usize) -> String {
        self.lock().tables[index].name.clone()
    }

    /// These planned tables' units are streamed though the run writes dump files.
    pub fn streamed(&self, tables: impl Iterator<Item = usize>) {
        let mut state = self.lock();
        for table in tables {
            if let Some(table) = state.tables.get_mut(table) {
                table.streamed = true;
            }
        }
    }

    /// Adds what an incremental transaction wrote to a planned table (a tree's members add up).
    /// Every merged table's references checked; `held` is each planned table's rows in the
    /// target after the merge (its source rows are the ones the merge resolved).
    pub fn merge_validated(&self, held: Vec<(usize, i64)>) {
        let mut state = self.lock();
        state.merge_validated = true;
        for (index, target) in held {
            let table = &mut state.tables[index];
            if let Some(merged) = table.merged {
                let source = merged.inserted + merged.matched + merged.merged_before;
                table.count = Some(TableCount {
                    source: source as i64,
                    target: Some(target),
                });
            }
        }
    }

    pub fn add_merged(&self, table: usize, counts: crate::report::MergeCounts) {
        if let Some(table) = self.lock().tables.get_mut(table) {
            table.merged = Some(counts);
        }
    }

    pub fn add_changes(&self, table: usize, changes: &RowChanges) {
        let mut state = self.lock();
        let Some(table) = state.tables.get_mut(table) else {
            return;
        };
        let total = table.changes.get_or_insert_with(|| RowChanges {
            method: changes.method,
            ..RowChanges::default()
        });
        total.inserted += changes.inserted;
        total.updated += changes.updated;
        total.deleted += changes.deleted;
        total.bytes_read += changes.bytes_read;
        if total.method != changes.method {
            total.method = "key-ranges";
        }
        if changes.distrusted_watermark.is_some() {
            total.distrusted_watermark = changes.distrusted_watermark.clone();
        }
    }

    /// Each planned table's changes, with the rows left unchanged once the source is counted.
    pub fn changes(&self) -> Vec<(String, RowChanges)> {
        let state = self.lock();
        state
            .tables
            .iter()
            .filter_map(|table| Some((table.name.clone(), table.counted_changes()?)))
            .collect()
    }

    pub fn set_counts(&self, counts: Vec<TableCount>) {
        let mut state = self.lock();
        for (table, count) in state.tables.iter_mut().zip(counts) {
            table.count = Some(count);
        }
    }

    /// Takes in what the servers report of running `COPY` commands and returns the progress of
    /// every table being copied, and of the whole copy.
    pub fn observe(
        &self,
        source: &[CopyProgress],
        target: &[CopyProgress],
        index_builds: &[IndexBuildProgress],
        loading: Activity,
    ) -> ProgressReport {
        let mut state = self.lock();
        let seen: HashMap<(Side, i32, QualifiedName), (u64, u64)> = [(Side::Source, source), (Side::Target, target)]
            .into_iter()
            .flat_map(|(side, copies)| {
                copies.iter().map(move |copy| {
                    (
                        (side, copy.process_id, copy.table.clone()),
                        (copy.bytes.max(0) as u64, copy.rows.max(0) as u64),
                    )
                })
            })
            .collect();
        let ended: Vec<_> = state
            .live_copies
            .iter()
            .filter(|(key, _)| !seen.contains_key(*key))
            .map(|(key, value)| (key.clone(), *value))
            .collect();
        for ((side, _, table), (bytes, rows)) in ended {
            if let Some(index) = state.by_member.get(&table).copied() {
                let finished = state.tables[index].finished_copies.get(stage_of(side));
                finished.0 += bytes;
                finished.1 += rows;
            }
        }
        state.live_copies = seen;
        let mut report = report(&state, loading);
        report.tables.extend(index_progress(&mut state, index_builds));
        report
    }

    /// The summary rows: every planned table, with what became of it.
    pub fn summary_rows(&self) -> Vec<SummaryRow> {
        let state = self.lock();
        state
            .tables
            .iter()
            .map(|table| {
                let result = match &table.count {
                    // A merge's target holds rows of its own: its counts are told, not compared.
                    _ if table.merged.is_some() && state.merge_validated => TableResult::Ok,
                    Some(count) if count.target.is_none() => TableResult::Dumped,
                    Some(count) if count.matches() => TableResult::Ok,
                    Some(_) => TableResult::Mismatch,
                    None if table.failed => TableResult::Failed,
                    None if table.changes.is_some() || table.merged.is_some() => TableResult::Changed,
                    None => TableResult::NotDone,
                };
                SummaryRow {
                    table: table.name.clone(),
                    kind: table.description.clone(),
                    source_rows: table.count.as_ref().map(|count| count.source),
                    target_rows: table.count.as_ref().and_then(|count| count.target),
                    estimated_rows: table.estimated_rows,
                    estimated_bytes: table.estimated_bytes,
                    dump_bytes: table.dump_bytes,
                    export_seconds: table.elapsed.export.as_secs_f64(),
                    import_seconds: table.elapsed.load.as_secs_f64(),
                    result,
                    changes: table.counted_changes(),
                    merged: table.merged,
                }
            })
            .collect()
    }
}

fn news(table: &TableState, first_or_last: bool, stage: Stage) -> TableNews {
    TableNews {
        table: table.name.clone(),
        description: table.description.clone(),
        first_or_last,
        elapsed: table.elapsed.at(stage),
        dump_bytes: table.dump_bytes,
    }
}

fn stage_of(side: Side) -> Stage {
    match side {
        Side::Source => Stage::Export,
        Side::Target => Stage::Load,
    }
}

/// Bytes and rows moved so far by a table's stage: ended copies plus running ones.
fn moved(state: &State, index: usize, stage: Stage) -> (u64, u64) {
    let (mut bytes, mut rows) = state.tables[index].finished_copies.at(stage);
    for ((side, _, table), (live_bytes, live_rows)) in &state.live_copies {
        if stage_of(*side) == stage && state.by_member.get(table) == Some(&index) {
            bytes += live_bytes;
            rows += live_rows;
        }
    }
    (bytes, rows)
}

/// How long the rest will take at the rate so far, from the share already done (rows when the
/// planner has an estimate, else bytes). `None` until something has moved.
fn estimate_remaining(elapsed: Duration, done_share: f64) -> Option<Duration> {
    let done = done_share.min(0.99);
    if done <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(elapsed.as_secs_f64() * (1.0 - done) / done).ok()
}

fn share(done: u64, estimate: Option<u64>) -> Option<f64> {
    estimate
        .filter(|estimate| *estimate > 0)
        .map(|estimate| done as f64 / estimate as f64)
}

/// A table's bytes to move in a stage: the catalog's size, or its dump's once it is written (a
/// load moves exactly its dump).
fn expected_bytes(table: &TableState, stage: Stage) -> u64 {
    if stage == Stage::Load && table.units_left.export == 0 && table.dump_bytes > 0 {
        table.dump_bytes
    } else {
        table.estimated_bytes
    }
}

/// Index builds, one line per table (its largest build running), against the pages to scan.
fn index_progress(state: &mut State, builds: &[IndexBuildProgress]) -> Vec<TableProgress> {
    let now = Instant::now();
    state.index_builds_seen.retain(|key, _| {
        builds
            .iter()
            .any(|build| (build.process_id, build.table.clone()) == *key)
    });
    let mut by_table: HashMap<usize, TableProgress> = HashMap::new();
    for build in builds {
        let Some(index) = state.by_member.get(&build.table).copied() else {
            continue;
        };
        let started = *state
            .index_builds_seen
            .entry((build.process_id, build.table.clone()))
            .or_insert(now);
        let elapsed = now.duration_since(started);
        let (done, total) = (build.bytes_done.max(0) as u64, build.bytes_total.max(0) as u64);
        let line = TableProgress {
            table: state.tables[index].name.clone(),
            activity: Activity::Index,
            bytes: done,
            rows: 0,
            estimated_bytes: total,
            estimated_rows: None,
            rate: done as f64 / elapsed.as_secs_f64().max(0.001),
            eta: share(done, Some(total)).and_then(|share| estimate_remaining(elapsed, share)),
            phase: Some(build.phase.clone()),
            parts: None,
        };
        let larger = by_table
            .get(&index)
            .is_none_or(|seen| seen.estimated_bytes < line.estimated_bytes);
        if larger {
            by_table.insert(index, line);
        }
    }
    by_table.into_values().collect()
}

fn report(state: &State, loading: Activity) -> ProgressReport {
    let streamed = loading == Activity::Stream;
    let mut tables = Vec::new();
    for (index, table) in state.tables.iter().enumerate() {
        let loading = if table.streamed { Activity::Stream } else { loading };
        for (stage, activity) in [(Stage::Export, Activity::Export), (Stage::Load, loading)] {
            if !table.running(stage) || (stage == Stage::Export && (streamed || table.streamed)) {
                continue;
            }
            let (bytes, rows) = moved(state, index, stage);
            let elapsed = table
                .started
                .at(stage)
                .map(|started| started.elapsed())
                .unwrap_or_default();
            let estimated_bytes = expected_bytes(table, stage);
            let done_share = share(rows, table.estimated_rows).or(share(bytes, Some(estimated_bytes)));
            tables.push(TableProgress {
                table: table.name.clone(),
                activity,
                bytes,
                rows,
                estimated_bytes,
                estimated_rows: table.estimated_rows,
                rate: bytes as f64 / elapsed.as_secs_f64().max(0.001),
                eta: done_share.and_then(|done| estimate_remaining(elapsed, done)),
                phase: None,
                parts: (table.parts > 0).then(|| (table.parts_done.at(stage), table.parts)),
            });
        }
    }
    let whole = whole_copy(state, streamed);
    let elapsed = state.data_started.map(|started| started.elapsed()).unwrap_or_default();
    // Loads are slower than dumps, so the share of bytes alone promises too early an end while a
    // big table loads: the whole copy ends no sooner than its slowest running table.
    let by_share = share(whole.done, Some(whole.expected)).and_then(|share| estimate_remaining(elapsed, share));
    let slowest_table = tables.iter().filter_map(|table| table.eta).max();
    ProgressReport {
        tables,
        loaded_bytes: whole.loaded,
        estimated_bytes: whole.to_load,
        rate: whole.loaded as f64 / elapsed.as_secs_f64().max(0.001),
        eta: by_share.max(slowest_table),
    }
}

/// Bytes of the whole copy: moved and to move over all stages, and loaded and to load.
struct WholeCopy {
    done: u64,
    expected: u64,
    loaded: u64,
    to_load: u64,
}

/// Each stage's bytes, done or moving, against what it has to move. Without `--stream` every
/// byte moves twice (dumped, then loaded), and both count.
fn whole_copy(state: &State, streamed: bool) -> WholeCopy {
    let mut whole = WholeCopy {
        done: 0,
        expected: 0,
        loaded: 0,
        to_load: 0,
    };
    for (index, table) in state.tables.iter().enumerate() {
        let stages: &[Stage] = if streamed || table.streamed {
            &[Stage::Load]
        } else {
            &[Stage::Export, Stage::Load]
        };
        for stage in stages {
            let expected = expected_bytes(table, *stage);
            let done = if table.units_left.at(*stage) == 0 {
                expected
            } else {
                moved(state, index, *stage).0.min(expected)
            };
            whole.expected += expected;
            whole.done += done;
            if *stage == Stage::Load {
                whole.to_load += expected;
                whole.loaded += done;
            }
        }
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_takes_as_long_again_as_the_share_still_to_do() {
        let eta = estimate_remaining(Duration::from_secs(10), 0.25).unwrap();
        assert_eq!(eta.as_secs(), 30);
        assert!(estimate_remaining(Duration::from_secs(10), 0.0).is_none());
        // A first row of billions: a long wait, not a panic.
        assert!(estimate_remaining(Duration::from_secs(3600), 1e-18).is_none_or(|eta| eta > Duration::from_secs(3600)));
        // An estimate that was too low never promises a finished copy.
        assert!(estimate_remaining(Duration::from_secs(10), 1.5).unwrap() > Duration::ZERO);
    }
}

/// When the run entered each stretch (`preparation` from its start, then each phase), for the
/// summary's time by phase.
#[derive(Debug)]
pub struct PhaseClock {
    marks: Mutex<Vec<(&'static str, Instant)>>,
}

impl Default for PhaseClock {
    fn default() -> Self {
        PhaseClock {
            marks: Mutex::new(vec![("preparation", Instant::now())]),
        }
    }
}

impl PhaseClock {
    pub fn enter(&self, phase: &'static str) {
        self.marks.lock().expect("phase marks").push((phase, Instant::now()));
    }

    /// When the run started (the first mark).
    pub fn origin(&self) -> Instant {
        self.marks.lock().expect("phase marks")[0].1
    }

    /// Each stretch in order, as seconds from the start: the timeline's phases.
    pub fn spans(&self, now: Instant) -> Vec<PhaseSpan> {
        let marks = self.marks.lock().expect("phase marks");
        let origin = marks[0].1;
        let seconds = |at: Instant| at.saturating_duration_since(origin).as_secs_f64();
        marks
            .iter()
            .enumerate()
            .map(|(index, (phase, entered))| PhaseSpan {
                phase,
                start: seconds(*entered),
                end: seconds(marks.get(index + 1).map_or(now, |(_, next)| *next)),
            })
            .collect()
    }

    /// Seconds per stretch, the last until `now`; a phase entered twice (a copy started again)
    /// adds up under its first place.
    pub fn times(&self, now: Instant) -> Vec<PhaseTime> {
        let marks = self.marks.lock().expect("phase marks");
        let mut times: Vec<PhaseTime> = Vec::new();
        for (index, (phase, entered)) in marks.iter().enumerate() {
            let left = marks.get(index + 1).map_or(now, |(_, next)| *next);
            let seconds = left.saturating_duration_since(*entered).as_secs_f64();
            match times.iter_mut().find(|time| time.phase == *phase) {
                Some(time) => time.seconds += seconds,
                None => times.push(PhaseTime { phase, seconds }),
            }
        }
        times
    }
}
