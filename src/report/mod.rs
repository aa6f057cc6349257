//! Events the engine emits and the reporters that render them: plain lines in the old script's
//! format (cron, CI), progress bars and colour on a terminal, and a JSON file. Events carry typed
//! values (bytes, durations, attempts, outcomes); every word a user reads is written here, and
//! only this module prints.

pub mod json;
pub mod plain;
pub mod prompt;
pub mod terminal;
mod text;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::errors::Outcome;

pub use text::{closing_line, human_duration, human_size, summary_lines};

/// What a table-level line is about (the old script's PROCESS column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Activity {
    Export,
    Import,
    /// Export and import at once, through a pipe (`--stream`).
    Stream,
    /// VACUUM ANALYZE, indexes and key constraints of a table whose rows are all loaded.
    Index,
}

impl Activity {
    /// Padded to the old script's six-character PROCESS column.
    pub fn tag(self) -> &'static str {
        match self {
            Activity::Export => "EXPORT",
            Activity::Import => "IMPORT",
            Activity::Stream => "STREAM",
            Activity::Index => "INDEX ",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Activity::Export => "export",
            Activity::Import => "import",
            Activity::Stream => "copy",
            Activity::Index => "index",
        }
    }
}

/// What a table-level line says.
#[derive(Debug, Clone, PartialEq)]
pub enum TableLine {
    /// An export or a streamed copy began; `description` is the table's kind ("Standard Table").
    Started {
        description: String,
    },
    /// A load from the dump began.
    Restoring,
    /// The table's indexes and key constraints are being built.
    Indexing {
        entries: usize,
    },
    /// Every unit of the table is dumped.
    Exported {
        description: String,
        bytes: u64,
        elapsed: Duration,
    },
    /// Every unit of the table is loaded (or its indexes built).
    Finished {
        elapsed: Duration,
    },
    Failed {
        error: String,
    },
    Retrying {
        attempt: u32,
        delay: Duration,
        error: String,
    },
}

/// The old script's STATE column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    Started,
    Done,
    Failed,
    Retrying,
}

impl TableLine {
    pub fn state(&self) -> TableState {
        match self {
            TableLine::Started { .. } | TableLine::Restoring | TableLine::Indexing { .. } => TableState::Started,
            TableLine::Exported { .. } | TableLine::Finished { .. } => TableState::Done,
            TableLine::Failed { .. } => TableState::Failed,
            TableLine::Retrying { .. } => TableState::Retrying,
        }
    }
}

/// The four phases users know from the old script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Schema,
    Data,
    PostData,
    Validation,
    /// A data-only refresh's three phases.
    RefreshSchema,
    RefreshData,
    RefreshValidation,
    /// A dump's three phases.
    DumpSchema,
    DumpData,
    DumpCounts,
    /// `sync --clone`'s two phases: the server's file copy, then validation.
    Clone,
    CloneValidation,
    /// `dbsync migrate`'s two after the copy: following the source, then the cut-over.
    Follow,
    Cutover,
}

impl Phase {
    /// The phase's name in the report's `phases`.
    pub fn key(self) -> &'static str {
        match self {
            Phase::Schema => "schema",
            Phase::Data => "data",
            Phase::PostData => "post-data",
            Phase::Validation => "validation",
            Phase::RefreshSchema => "refresh-schema",
            Phase::RefreshData => "refresh-data",
            Phase::RefreshValidation => "refresh-validation",
            Phase::DumpSchema => "dump-schema",
            Phase::DumpData => "dump-data",
            Phase::DumpCounts => "dump-counts",
            Phase::Clone => "clone",
            Phase::CloneValidation => "validation",
            Phase::Follow => "follow",
            Phase::Cutover => "cutover",
        }
    }
}

/// What kind of run the output is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    Sync,
    /// `sync --data-only`: the selected tables' rows replaced in the existing target.
    Refresh,
    /// `sync --incremental`: only the rows that differ, written into the existing target.
    Incremental,
    /// `dbsync merge`: the source's rows folded into the existing target with new keys.
    Merge,
    Dump,
    Restore,
    /// `dbsync migrate`: a copy followed by the source's changes until the cut-over.
    Migrate,
}

/// One-line news from the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    SelectedTables {
        count: usize,
    },
    /// `--schema-only`: every object, no rows.
    SchemaOnly,
    /// `--fix-schema`: a statement that adds what the target lacks (run, or only shown).
    SchemaFix {
        statement: String,
        run: bool,
    },
    /// A refresh's target schema fits the selected tables.
    SchemaFits {
        /// As the plan and the summary count them (a partitioned table once).
        tables: usize,
        /// Each partition and inheritance member on its own.
        members: usize,
    },
    /// `--dry-run` of a refresh: it stops before changing anything.
    DryRunDone,
    /// A large table is copied in parts at once, cut at quantiles of its key.
    /// `[transform]`: the table's rows are read through its columns' transforms on the source.
    TableMasked {
        table: String,
        columns: Vec<String>,
    },
    TableSplit {
        table: String,
        parts: usize,
        key: String,
        boundaries: Vec<i64>,
        /// Relayed in `COPY`'s binary format (otherwise text).
        binary: bool,
    },
    /// `--copy-roles`: a statement that creates a role or a membership on the target server.
    CopyingRole {
        statement: String,
    },
    /// A `[hooks]` entry finished; `output` is a command's stdout and stderr.
    HookDone {
        stage: &'static str,
        hook: String,
        elapsed: Duration,
        output: String,
    },
    RefreshValidated {
        tables: usize,
        rows: RowCheck,
    },
    /// `--incremental --dry-run`: how a table's rows would be found.
    WouldChange {
        table: String,
        how: IncrementalHow,
    },
    /// `--incremental`: what one table's transaction wrote.
    TableChanged {
        table: String,
        changes: RowChanges,
    },
    /// `dbsync merge` and `--incremental`: the name the target's state (ID maps, watermarks)
    /// knows the source by, and the config section that can set it.
    SourceName {
        name: String,
        /// The server's system identifier and the database's OID, where the server shows them.
        identity: Option<String>,
        state: &'static str,
        section: &'static str,
    },
    /// `dbsync merge --dry-run`: one table's place in the merge, in order.
    WouldMerge(MergePreview),
    /// `dbsync merge`: what one table's transaction did.
    TableMerged {
        table: String,
        counts: MergeCounts,
    },
    /// `dbsync merge`: every merged table's foreign keys point at existing rows.
    MergeValidated {
        tables: usize,
        references: usize,
    },
    /// `dbsync merge --id-map`: the map written.
    IdMapWritten {
        path: String,
        keys: u64,
    },
    SequencesSet {
        count: usize,
    },
    Locking {
        tables: usize,
    },
    CreatingDatabase {
        temporary: String,
        target: String,
    },
    /// `--clone`: the copy made by the server from the source database, as a template.
    Cloning {
        source: String,
        temporary: String,
        target: String,
        /// `file_copy_method` on 18+ (`clone` or `copy`); a file copy before.
        method: &'static str,
    },
    /// `[subset]`: the rows chosen, of how many tables, after how many rounds of keys followed.
    SubsetChosen {
        rows: i64,
        tables: usize,
        rounds: i32,
    },
    /// `dbsync migrate`'s news.
    Migration(MigrationNews),
    /// `--clone=auto`: a logical copy instead, because of `reason`.
    NotCloning {
        reason: String,
    },
    SyncingSchema,
    DumpingSchema,
    RestoringSchema,
    /// A dump's archive, complete under its own name.
    ArchiveWritten {
        path: String,
        tables: usize,
    },
    BuildingPostData,
    /// The source's planner statistics carried over into the copy.
    StatisticsCarried {
        tables: usize,
        elapsed: Duration,
    },
    PostDataDone {
        elapsed: Duration,
    },
    ValidationPassed {
        tables: usize,
        rows: RowCheck,
    },
    Swapping {
        temporary: String,
        target: String,
    },
    DroppingUnfinished {
        database: String,
    },
    KeepingDumps {
        path: String,
    },
    RemovingDumps {
        path: String,
    },
    RemovedLeftover(Leftover),
    /// Sessions on the previous target, ended by the swap.
    EndedSessions {
        database: String,
        count: usize,
        who: String,
    },
    /// A resume continues in the copy the failed run kept.
    ResumingCopy {
        database: String,
    },
    /// A failed run that kept its dumps: how to continue it.
    ResumeWith {
        copy: Option<String>,
        command: String,
    },
    /// An archive older than what `--retain` keeps, dropped.
    DroppedArchive {
        name: String,
        date: String,
    },
    /// What `--retain` kept, newest first.
    KeptArchives {
        retain: usize,
        template: String,
        kept: Vec<String>,
    },
}

/// Something a run that died had left, which this run removed or put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// An unfinished copy (a temporary database).
    Copy(String),
    DumpDirectory(String),
    /// A previous target that a swap had renamed aside, given its name back.
    PreviousTargetRenamedBack {
        from: String,
        to: String,
    },
}

/// A foreign key from a table whose data is copied to one whose data is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideKey {
    pub name: String,
    pub table: String,
    pub referenced_table: String,
}

/// What became of such a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFate {
    /// Announced at the start: the policy will decide.
    WillFollow(&'static str),
    LeftOut,
    /// `NOT VALID` is not possible on a partitioned table.
    LeftOutPartitioned,
    CreatedNotValid,
}

/// How far behind the target of a migration is: bytes of WAL, the sender's replay lag, and the
/// row changes applied since the follow began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagReading {
    pub bytes: i64,
    pub seconds: Option<f64>,
    pub rows: i64,
}

/// What `dbsync migrate` reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrationNews {
    /// The publication and the slot the copy starts from, at `position`.
    SlotCreated {
        publication: String,
        slot: String,
        tables: usize,
        position: String,
    },
    /// The subscription on the target, applying the changes made since the copy's snapshot;
    /// `enter_cuts_over` when Enter on this terminal asks for the cut-over.
    Subscribed {
        subscription: String,
        enter_cuts_over: bool,
    },
    /// How far behind the target is, said every few seconds.
    Lag(LagReading),
    /// The cut-over begins, and why.
    CuttingOver { reason: String },
    /// The target applied everything up to the source's WAL position `position`.
    CaughtUp { position: String },
    /// `--stop-writes`: the source database is read-only for new sessions, and `sessions` of its
    /// sessions were ended.
    WritesStopped { sessions: i64 },
    /// After the cut-over with `--stop-writes`: `read_only` when the source stays read-only (the
    /// migration succeeded), else writable again.
    SourceWrites { database: String, read_only: bool },
    /// A server ended dbsync's session while it followed (a restart, a network cut).
    SessionLost { server: &'static str },
    /// The server accepted dbsync's session again, `seconds` after it was lost.
    Reconnected { server: &'static str, seconds: f64 },
    /// The subscription, slot and publication are gone.
    Removed { what: Vec<String> },
    /// What a migration of this pair left, removed before anything else: each slot with the WAL
    /// it retained.
    LeftoversFound {
        slots: Vec<(String, i64)>,
        others: Vec<String>,
    },
    /// Tables given `REPLICA IDENTITY FULL` on the source (`--replica-identity-full`).
    IdentityFull { tables: Vec<String> },
    /// From the cut-over's start to the target verified.
    /// `since_writes_stopped` with `--stop-writes`, which stopped them.
    Downtime {
        seconds: f64,
        verified: bool,
        since_writes_stopped: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    ForeignKey {
        key: OutsideKey,
        fate: KeyFate,
    },
    /// A step that will be tried again after a transient failure.
    Retrying {
        step: &'static str,
        attempt: u32,
        delay: Duration,
        error: String,
    },
    /// The selection leaves no table whose data would be copied.
    NoTableData,
    /// The source's snapshot was lost (its server restarted): the copy starts again.
    SnapshotLost {
        copy: u32,
        of: u32,
    },
    /// The dump directory's file system has less room than the copied tables take.
    DumpSpaceShort {
        directory: String,
        free: u64,
        needed: u64,
    },
    /// Tables the source user may not read, left out of the copy, definitions included.
    DefinitionsNotCopied {
        tables: Vec<String>,
    },
    /// The snapshot session waits for a lock on the source.
    WaitingForLock {
        table: String,
        holders: Vec<String>,
        waited: Duration,
    },
    /// A previous target a swap had renamed aside, while the target name is taken again.
    PreviousTargetKept {
        name: String,
    },
    /// `--jobs` asked for more sessions than the servers can spare.
    JobsLowered {
        wanted: usize,
        allowed: usize,
        /// The free slots of each server the run connects to, as words.
        free: String,
    },
    /// Something that did not stop the run, in the words of whoever reported it.
    Other(String),
}

/// Rows and bytes moved by one running table against its estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableProgress {
    pub table: String,
    pub activity: Activity,
    pub bytes: u64,
    pub rows: u64,
    /// From the catalog's sizes, or the dump's size once it is written.
    pub estimated_bytes: u64,
    /// The planner's estimate; `None` for a table never analyzed.
    pub estimated_rows: Option<u64>,
    /// Bytes per second since the table's work began.
    pub rate: f64,
    pub eta: Option<Duration>,
    /// For an index build, what PostgreSQL says it is doing ("building index: scanning table").
    pub phase: Option<String>,
    /// For a table copied in parts (`--split-larger-than`): parts done, and how many it has.
    pub parts: Option<(usize, usize)>,
}

/// Everything moving at one moment, and the whole copy against its estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressReport {
    pub tables: Vec<TableProgress>,
    pub loaded_bytes: u64,
    pub estimated_bytes: u64,
    pub rate: f64,
    pub eta: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Banner {
    pub kind: RunKind,
    pub source: String,
    pub target: String,
    pub start_time: String,
    pub dump_dir: String,
    pub jobs: usize,
    pub batch_size: Option<usize>,
    pub tables: usize,
    pub units: usize,
    pub tools_version: String,
    pub tools_directory: String,
    /// How these tools are used against this target, where it is not the plain way.
    pub tools_note: Option<String>,
}

/// A table's result in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TableResult {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "MISMATCH")]
    Mismatch,
    #[serde(rename = "FAILED")]
    Failed,
    #[serde(rename = "NOT DONE")]
    NotDone,
    /// A dump's table: exported and counted in the snapshot.
    #[serde(rename = "DUMPED")]
    Dumped,
    /// An incremental run's table whose changes committed before another table failed (not
    /// validated: the run stopped).
    #[serde(rename = "CHANGED")]
    Changed,
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub table: String,
    pub kind: String,
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
    /// The catalog's estimates before the copy: rows (the planner's, `None` when never analyzed)
    /// and bytes on disk without indexes.
    pub estimated_rows: Option<u64>,
    pub estimated_bytes: u64,
    pub dump_bytes: u64,
    pub export_seconds: f64,
    pub import_seconds: f64,
    pub result: TableResult,
    /// `--incremental`: what the table's transaction wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<RowChanges>,
    /// `dbsync merge`: what the table's transaction did with the source's rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeCounts>,
}

/// What `dbsync merge` did with one table's source rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MergeCounts {
    /// New rows, with new keys.
    pub inserted: u64,
    /// Rows whose natural key the target had (mapped to the existing row).
    pub matched: u64,
    /// Matched rows given the source's values (`on_existing = "update"`).
    pub updated: u64,
    /// Rows an earlier merge of the same source mapped already.
    pub merged_before: u64,
    pub bytes_read: u64,
}

/// `dbsync merge --dry-run`: how one table would be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePreview {
    pub table: String,
    /// `id ← public.authors_id_seq`, or `None` when the table's keys are kept.
    pub new_keys: Option<String>,
    /// `author_id → authors` (a second pass: `(second pass)`).
    pub remapped: Vec<String>,
    pub natural_key: Vec<String>,
    pub update: bool,
    /// The tables it shares a transaction with (a cycle of foreign keys).
    pub cycle: Vec<String>,
}

/// How `--incremental` would find a table's changed rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncrementalHow {
    /// Rows whose change column is at least the watermark.
    ChangedSince { column: String, since: String },
    /// Key ranges compared, because of `reason`.
    KeyRanges { reason: KeyRangeReason },
    /// No primary key: every row replaced.
    Replaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRangeReason {
    NoChangeColumn,
    Deep,
    /// The table's change column has no usable watermark yet (a first run, or one run behind).
    NoWatermark,
}

/// What `--incremental` did to one table, and how it found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RowChanges {
    /// `change-column` (rows changed since the watermark), `key-ranges` (range hashes compared),
    /// `replaced` (no primary key: every row replaced).
    pub method: &'static str,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Rows the source has that needed no write (known once the source's rows are counted).
    pub unchanged: Option<u64>,
    /// Bytes read from the source: rows, keys and row hashes.
    pub bytes_read: u64,
    /// The stored watermark, when it lay in the source's future (the source restored from a
    /// backup, or its clock set back) and so was not trusted: key ranges were compared instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distrusted_watermark: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What ran: `sync`, `refresh` (`--data-only`), `incremental`, `merge`, `dump`, `restore`.
    pub mode: RunKind,
    /// The dbsync that ran.
    pub dbsync_version: &'static str,
    pub source: String,
    pub target: String,
    pub started_at: String,
    pub total_seconds: f64,
    pub outcome: Outcome,
    pub exit_code: u8,
    pub error: Option<String>,
    pub tables: Vec<SummaryRow>,
    pub sequences: usize,
    pub large_objects: i64,
    pub warnings: Vec<String>,
    /// dbsync's own peak resident memory, without its pg_dump and pg_restore children.
    pub peak_memory_bytes: u64,
    /// The most dump-file bytes on disk at once (0 with `--stream`).
    pub peak_dump_bytes: u64,
    /// Databases `--retain` dropped after the run.
    pub archives_dropped: Vec<String>,
    /// Where the time went: each phase's seconds, in the order the run went through them.
    pub phases: Vec<PhaseTime>,
    /// When each phase and each stretch of work ran, in seconds from the start (what
    /// `scripts/bench.sh` draws).
    pub timeline: Timeline,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    pub phases: Vec<PhaseSpan>,
    /// Each unit's export, load or stream (named by its unit), each table's index build.
    pub steps: Vec<StepSpan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSpan {
    pub phase: &'static str,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSpan {
    /// `export`, `import`, `copy` (streamed), `index`.
    pub activity: &'static str,
    pub name: String,
    pub start: f64,
    pub end: f64,
}

/// Seconds spent in one stretch of a run: `preparation` (connecting, reading catalogs, checks)
/// before the first phase, a phase (`schema`, `data`, `post-data`, `validation` with the swap,
/// …), `cleanup` after the last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseTime {
    pub phase: &'static str,
    pub seconds: f64,
}

/// What kind of object a structure difference is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Index,
    Constraint,
    Trigger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    MissingOnCopy,
    OnlyOnCopy,
    /// Valid on the source, not on the copy: a unique index or key that is not enforced.
    InvalidOnCopy,
    NotValidatedOnCopy,
}

/// An index, constraint or trigger that is not on the copy as it is on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructureDifference {
    pub kind: ObjectKind,
    pub table: String,
    pub name: String,
    pub problem: Problem,
}

impl StructureDifference {
    pub fn new(kind: ObjectKind, table: &str, name: &str, problem: Problem) -> StructureDifference {
        StructureDifference {
            kind,
            table: table.to_string(),
            name: name.to_string(),
            problem,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Banner(Banner),
    Phase(Phase),
    /// A header outside the numbered phases (FINAL CLEANUP).
    Cleanup,
    Notice(Notice),
    Warning(Warning),
    Table {
        activity: Activity,
        table: String,
        line: TableLine,
    },
    /// A unit's stage failed for good: what it was doing, to which tables, and the tool's words.
    StepFailed {
        activity: Activity,
        unit: String,
        error: String,
    },
    /// Tables whose counts differ: (table, source rows, target rows).
    Discrepancies(Vec<(String, i64, i64)>),
    /// Indexes, constraints or triggers that differ between the source and the copy.
    StructureDifferences(Vec<StructureDifference>),
    /// Tables whose rows' checksums differ between the source and the copy (`--verify checksum`).
    ChecksumDifferences(Vec<VerifyDifference>),
    Progress(ProgressReport),
    /// Each reading while `dbsync migrate` follows (twice a second): the terminal's lag bar.
    Following(LagReading),
    /// For the overall progress bar: how many export and import steps there are in all.
    StepsPlanned(usize),
    StepFinished,
    Summary(Summary),
    /// The last line of a run that ended: why, in a sentence.
    Finished {
        success: bool,
        line: String,
    },
}

pub trait Reporter: Send + Sync {
    fn emit(&self, event: Event);
}

/// The terminal reporter when stdout is a terminal that may show progress bars, else plain lines.
pub fn pick(display: &Display) -> Arc<dyn Reporter> {
    use std::io::IsTerminal;
    if display.terminal_allowed && std::io::stdout().is_terminal() {
        Arc::new(terminal::TerminalReporter::new(display.colour))
    } else {
        Arc::new(plain::PlainReporter::stdout(display.progress_every))
    }
}

/// How the run may show itself, decided from the environment once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Display {
    /// Progress bars and colour are allowed when stdout is a terminal (not `--plain`, and `TERM`
    /// is set and not `dumb`).
    pub terminal_allowed: bool,
    /// `NO_COLOR` is not set.
    pub colour: bool,
    /// How often plain output repeats a progress line for a table still copying.
    pub progress_every: Duration,
}

/// `dbsync archives`: a table of the template's databases, newest first, and their total.
pub fn print_archives(
    target: &crate::connection::Endpoint,
    template: &crate::dated::DatedName,
    archives: &[crate::archives::Archive],
) {
    print!("{}", text::archive_listing(target, template, archives));
}

/// What `dbsync plan` (or `sync --dry-run`) found: what a sync would do, changing nothing.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub source: PlanServer,
    pub target: PlanServer,
    /// The target database exists and would be replaced.
    pub target_exists: bool,
    pub pg_dump: String,
    pub pg_restore: String,
    /// Why these tools: the lowest installed version at least the source server's.
    pub tools_reason: String,
    pub whole_database: bool,
    pub tables: Vec<PlanTable>,
    /// Table names, each after every table it references.
    pub foreign_key_order: Vec<String>,
    pub foreign_key_cycles: Vec<Vec<String>>,
    pub units: Vec<PlanUnit>,
    /// Tables taken out of the units and copied in parts at once (`--split-larger-than`).
    pub split_tables: Vec<PlanSplit>,
    pub sequences: usize,
    pub large_objects: i64,
    /// Bytes the dumps would take (the copied tables' size on the source); 0 with `--stream`.
    pub estimated_dump_bytes: u64,
    pub dump_directory: String,
    pub dump_directory_free_bytes: Option<u64>,
    /// `--clone`: `None` when not asked; else whether the sync would clone, or why not.
    pub clone: Option<PlanClone>,
    pub warnings: Vec<String>,
}

/// `dbsync plan --clone`: whether the copy would be made by the server, and what happens if not.
#[derive(Debug, Clone, Serialize)]
pub struct PlanClone {
    pub would_clone: bool,
    /// Why it would not.
    pub obstacle: Option<String>,
    /// Without a clone: `refused` (`--clone`) or `logical copy` (`--clone=auto`).
    pub otherwise: &'static str,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanServer {
    pub endpoint: String,
    /// `server_version_num`, e.g. 150018.
    pub version: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanTable {
    pub name: String,
    /// `standard`, `partitioned` or `inheritance`.
    pub kind: String,
    /// Tables holding rows of the tree besides the root (partitions, children).
    pub members: usize,
    /// Levels of the tree (1 for a plain table).
    pub levels: usize,
    pub estimated_rows: Option<u64>,
    pub size_bytes: i64,
    /// Columns read through a transform (`[transform]`).
    pub masked_columns: Vec<String>,
    /// `[subset]`: which of its rows the subset copies, and how it reaches the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanSplit {
    pub table: String,
    pub size_bytes: i64,
    /// About how many parts: fewer when its key has fewer distinct values.
    pub parts: usize,
    /// The integer key it is cut on, or `ctid` (ranges of blocks).
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanUnit {
    pub label: String,
    pub tables: Vec<String>,
    pub size_bytes: i64,
}

/// What `dbsync diff` found between the two schemas.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub source: String,
    pub target: String,
    /// Objects compared (on either side).
    pub compared: usize,
    pub differences: Vec<SchemaDifference>,
}

/// One object that exists on one side only (`None` on the other) or differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaDifference {
    /// table, column, constraint, index, sequence, view, function, trigger
    pub kind: String,
    pub name: String,
    pub source: Option<String>,
    pub target: Option<String>,
}

/// What `dbsync verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub source: String,
    pub target: String,
    pub tables: usize,
    pub sequences: usize,
    /// Rows were compared by checksums too, not only counted.
    pub checksums: bool,
    pub differences: Vec<VerifyDifference>,
    /// What did not stop the comparison but changed how it ran (`--jobs` lowered).
    pub warnings: Vec<String>,
}

/// How the rows of a copy were compared with the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCheck {
    Counts,
    Checksums,
    NotCompared,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyDifference {
    /// table, rows, columns, sequence, large objects
    pub kind: String,
    pub name: String,
    pub source: String,
    pub target: String,
    /// Where the difference is, when known ("checksums differ, first in id 1 to 63").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl VerifyDifference {
    pub fn new(kind: &str, name: String, source: String, target: String) -> VerifyDifference {
        VerifyDifference {
            kind: kind.to_string(),
            name,
            source,
            target,
            detail: None,
        }
    }
}

/// `dbsync verify`: the differences as text, or as JSON with `json`.
pub fn print_verify(verify: &VerifyReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(verify).unwrap_or_default());
    } else {
        print!("{}", text::verify_text(verify));
    }
}

/// `dbsync diff`: the differences as text, or as JSON with `json`.
pub fn print_diff(diff: &DiffReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(diff).unwrap_or_default());
    } else {
        print!("{}", text::diff_text(diff));
    }
}

/// `dbsync plan`: the plan as text, or as JSON with `json`.
pub fn print_plan(plan: &PlanReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(plan).unwrap_or_default());
    } else {
        print!("{}", text::plan_text(plan));
    }
}

/// A line on stderr, outside any run's output: errors that cron mails and CI logs must show even
/// when stdout is discarded.
/// The shell completion script for `command` (dbsync's command line), on stdout.
pub fn print_completions(mut command: clap::Command, shell: clap_complete::Shell) -> u8 {
    clap_complete::generate(shell, &mut command, "dbsync", &mut std::io::stdout());
    crate::errors::ExitCode::SUCCESS
}

/// The manual page of `command` (dbsync's command line) and of each subcommand, as one roff
/// page on stdout.
pub fn print_manual(command: clap::Command) -> u8 {
    let mut page = Vec::new();
    let rendered = clap_mangen::Man::new(command.clone()).render(&mut page).and_then(|()| {
        // Each command's own section: what it does, its options by heading, its examples.
        command.get_subcommands().try_for_each(|subcommand| {
            let name = format!("dbsync {}", subcommand.get_name());
            page.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
            let manual = clap_mangen::Man::new(subcommand.clone().name(name));
            manual.render_synopsis_section(&mut page)?;
            manual.render_description_section(&mut page)?;
            manual.render_options_section(&mut page)?;
            manual.render_extra_section(&mut page)
        })
    });
    if let Err(error) = rendered {
        print_error(&format!("cannot write the manual page: {error}"));
        return crate::errors::ExitCode::FAILURE;
    }
    use std::io::Write;
    match std::io::stdout().write_all(&page) {
        Ok(()) => crate::errors::ExitCode::SUCCESS,
        Err(_) => crate::errors::ExitCode::FAILURE,
    }
}

pub fn print_error(message: &str) {
    eprintln!("dbsync: {message}");
}

/// Whether standard output and standard error are the same file (a terminal, or `> log 2>&1`):
/// then a line already printed on the one need not be repeated on the other.
pub fn output_and_errors_are_one() -> bool {
    use std::os::fd::AsRawFd;
    let identity = |stat: nix::sys::stat::FileStat| (stat.st_dev, stat.st_ino);
    match (
        nix::sys::stat::fstat(std::io::stdout().as_raw_fd()),
        nix::sys::stat::fstat(std::io::stderr().as_raw_fd()),
    ) {
        (Ok(output), Ok(errors)) => identity(output) == identity(errors),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_name(value: impl Serialize) -> String {
        serde_json::to_value(value).unwrap().as_str().unwrap().to_string()
    }

    #[test]
    fn the_docs_document_every_outcome_and_table_result_the_report_can_hold() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/output.md")).unwrap();
        for outcome in Outcome::ALL {
            let name = json_name(outcome);
            assert!(
                readme.contains(&format!("`{name}`")),
                "docs/output.md does not document outcome {name}"
            );
        }
        for result in [
            TableResult::Ok,
            TableResult::Mismatch,
            TableResult::Failed,
            TableResult::NotDone,
            TableResult::Dumped,
            TableResult::Changed,
        ] {
            let name = json_name(result);
            assert!(
                readme.contains(&format!("`{name}`")),
                "docs/output.md does not document result {name}"
            );
        }
        assert_eq!(json_name(Outcome::ValidationFailed), "validation-failed");
        assert_eq!(json_name(TableResult::NotDone), "NOT DONE");
    }

    #[test]
    fn every_failure_has_its_outcome() {
        use crate::errors::SyncError;
        let outcomes = [
            SyncError::Usage("no".into()).outcome(),
            SyncError::Interrupted(nix::sys::signal::Signal::SIGINT).outcome(),
            SyncError::ValidationFailed(1).outcome(),
            SyncError::Failed(anyhow::anyhow!("boom")).outcome(),
        ];
        assert_eq!(
            outcomes,
            [
                Outcome::Refused,
                Outcome::Interrupted,
                Outcome::ValidationFailed,
                Outcome::Failed
            ]
        );
    }
}
