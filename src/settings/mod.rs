//! Resolving settings. Precedence, lowest first: built-in defaults, the config file, environment
//! variables (the old script's names), command-line flags. The rest of the program sees only the
//! resolved `Settings`. The config file is read in `file`, endpoints in `endpoint`, the
//! environment in `environment`, what every mode shares in `common`.

mod common;
mod endpoint;
mod environment;
mod file;

use common::*;
use endpoint::*;
pub use environment::Environment;
use file::*;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{
    ArchivesArguments, DiffArguments, DumpArguments, MergeArguments, MigrateArguments, RestoreArguments, RunArguments,
    SourceArguments, SyncArguments, TargetArguments, VerifyArguments, switch,
};
use crate::compression::Compression;
use crate::connection::{Endpoint, EndpointDefaults};
use crate::dated::{self, DatedName};
use crate::errors::SyncError;
use crate::plan::{ForeignKeyPolicy, TablePattern};
use crate::report::{Display, RunKind};
use crate::secrets::{self, Secret};
use crate::usage_error;

/// `--jobs`: how many server sessions may do copy work at once (dumps, loads, index builds,
/// vacuums). Never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jobs(NonZeroUsize);

impl Jobs {
    pub fn new(count: usize) -> Option<Jobs> {
        NonZeroUsize::new(count).map(Jobs)
    }

    pub fn get(self) -> usize {
        self.0.get()
    }
}

/// How a copy's rows are compared with the source's in the last phase (and by `dbsync verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Row counts per table.
    Count,
    /// Row counts and a checksum of every table's rows, in key ranges.
    Checksum,
    /// No row comparison (the structure is still checked).
    Skip,
}

impl Verification {
    pub const NAMES: [&'static str; 3] = ["count", "checksum", "none"];

    pub fn from_name(name: &str) -> Option<Verification> {
        match name {
            "count" => Some(Verification::Count),
            "checksum" => Some(Verification::Checksum),
            "none" => Some(Verification::Skip),
            _ => None,
        }
    }
}

/// When a sync makes its copy with `CREATE DATABASE … TEMPLATE` (`--clone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneWhen {
    /// Always: refused when the copy cannot be cloned.
    Always,
    /// When it can, else a logical copy, saying why.
    Auto,
    /// Never: always a logical copy.
    Never,
}

impl CloneWhen {
    pub const NAMES: [&'static str; 3] = ["always", "auto", "never"];

    pub fn from_name(name: &str) -> Option<CloneWhen> {
        match name {
            "always" => Some(CloneWhen::Always),
            "auto" => Some(CloneWhen::Auto),
            "never" => Some(CloneWhen::Never),
            _ => None,
        }
    }
}

/// What a sync copies, with the settings only that kind of run has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Schema and rows (or, with `[subset]`, the subset's rows), into a new copy swapped in for
    /// the target.
    Everything { subset: Option<crate::subset::Subset> },
    /// The schema, no rows (`--schema-only`).
    SchemaOnly,
    /// The selected tables' rows into the existing target, each table in one transaction
    /// (`--data-only`); `fix_schema` first adds what the target lacks.
    DataOnly {
        fix_schema: bool,
        /// `[subset]`: the subset's rows replace the tables' rows.
        subset: Option<crate::subset::Subset>,
    },
    /// Only the rows that differ, into the existing target, each table in one transaction
    /// (`--incremental`, `[incremental]`).
    Incremental(IncrementalSettings),
    /// `dbsync merge`: the source's rows folded into the existing target with new keys
    /// (`[merge]`, `--id-map`), each table (or cycle of tables) in one transaction.
    Merge(MergeSettings),
}

/// What to do with a source row whose natural key the target already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExisting {
    /// Map it to the existing row and leave that row alone.
    #[default]
    Skip,
    /// Map it to the existing row and write the source's values into it.
    Update,
}

/// One table's `[merge.tables.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeTableSettings {
    #[serde(default)]
    pub natural_key: Vec<String>,
    #[serde(default)]
    pub on_existing: OnExisting,
}

/// `[merge]` of the config file and `--id-map`.
///
/// ```toml
/// [merge]
/// source = "eu-regional"           # the name the ID maps know this source by
/// fire_triggers = ["audit_log"]
/// [merge.tables.repositories]
/// natural_key = ["slug"]
/// on_existing = "update"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeSettings {
    /// Table (as written: `name` or `schema.name`) → its natural key and what a match does.
    pub tables: BTreeMap<String, MergeTableSettings>,
    pub fire_triggers: Vec<String>,
    /// `[merge] source`: the name the ID maps know the source by (default `host:port/database`).
    pub source: Option<String>,
    pub id_map: Option<PathBuf>,
}

/// `[incremental]` of the config file and `--batch-rows`: how `--incremental` finds changed rows.
///
/// ```toml
/// [incremental]
/// change_column = "updated_at"     # every table's, unless named below
/// lookback_seconds = 0             # re-read this much before the watermark (clock skew)
/// source = "prod"                  # the name the watermarks know the source by
/// fire_triggers = ["audit_log"]    # tables whose triggers and foreign keys fire
/// [incremental.tables]
/// events = "version"               # an integer version column
/// tags = ""                        # no change column: compared by key ranges
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalSettings {
    pub batch_rows: u64,
    pub change_column: String,
    /// Table (as written: `name` or `schema.name`) → its change column (empty: none).
    pub tables: BTreeMap<String, String>,
    pub fire_triggers: Vec<String>,
    pub lookback: Duration,
    /// `[incremental] source`: the name the watermarks know the source by (default
    /// `host:port/database`).
    pub source: Option<String>,
    /// `--deep`: compare every table by key ranges, even those with a change column.
    pub deep: bool,
    /// Remove the rows the source no longer has (not with `--no-delete`).
    pub delete: bool,
    /// `--fix-schema`: first add what the target lacks, as a `--data-only` refresh does.
    pub fix_schema: bool,
}

pub const DEFAULT_BATCH_ROWS: u64 = 10_000;

impl Content {
    /// `[subset]`, in a run that copies one (a sync, or a `--data-only` refresh).
    pub fn subset(&self) -> Option<&crate::subset::Subset> {
        match self {
            Content::Everything { subset } | Content::DataOnly { subset, .. } => subset.as_ref(),
            _ => None,
        }
    }

    /// `--fix-schema` was given (a `--data-only` or `--incremental` refresh).
    pub fn fixes_schema(&self) -> bool {
        match self {
            Content::DataOnly { fix_schema, .. } => *fix_schema,
            Content::Incremental(incremental) => incremental.fix_schema,
            _ => false,
        }
    }
}

impl Default for IncrementalSettings {
    fn default() -> IncrementalSettings {
        IncrementalSettings {
            batch_rows: DEFAULT_BATCH_ROWS,
            change_column: "updated_at".into(),
            tables: BTreeMap::new(),
            fire_triggers: Vec::new(),
            lookback: Duration::ZERO,
            source: None,
            deep: false,
            delete: true,
            fix_schema: false,
        }
    }
}

/// How data travels from `pg_dump` to `pg_restore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Through a dump directory on disk; `keep` keeps it after the run (`--keep-dumps`).
    Files { keep: bool },
    /// Through a pipe between the two children (`--stream`): no data dump files.
    Stream,
}

/// Where a run reads and writes: each kind of run has exactly the places it uses, so no mode
/// unwraps a place it might not have.
#[derive(Debug, Clone)]
pub enum Places {
    /// A source and a target database: sync (and its refresh and incremental runs), merge,
    /// verify and plan.
    Databases { source: Endpoint, target: Endpoint },
    /// `dbsync dump`: a source database and the archive directory it writes (its date template
    /// rendered).
    Dump { source: Endpoint, output: PathBuf },
    /// `dbsync restore`: the archive directory it reads and a target database.
    Restore { archive: PathBuf, target: Endpoint },
}

impl Places {
    /// The source database, for what is said of any run (a restore has none).
    pub fn source(&self) -> Option<&Endpoint> {
        match self {
            Places::Databases { source, .. } | Places::Dump { source, .. } => Some(source),
            Places::Restore { .. } => None,
        }
    }

    /// The target database, for what is said of any run (a dump has none).
    pub fn target(&self) -> Option<&Endpoint> {
        match self {
            Places::Databases { target, .. } | Places::Restore { target, .. } => Some(target),
            Places::Dump { .. } => None,
        }
    }

    /// Every database the run connects to, for what is found only by connecting (a password
    /// asked for at a terminal).
    pub fn endpoints_mut(&mut self) -> Vec<&mut Endpoint> {
        match self {
            Places::Databases { source, target } => vec![source, target],
            Places::Dump { source, .. } => vec![source],
            Places::Restore { target, .. } => vec![target],
        }
    }
}

/// A run of the engine with the places it reads and writes: what `Settings::run` decides.
#[derive(Debug, Clone, Copy)]
pub enum Run<'a> {
    Sync {
        source: &'a Endpoint,
        target: &'a Endpoint,
    },
    /// `sync --data-only`.
    Refresh {
        source: &'a Endpoint,
        target: &'a Endpoint,
    },
    /// `sync --incremental`.
    Incremental {
        source: &'a Endpoint,
        target: &'a Endpoint,
        options: &'a IncrementalSettings,
    },
    Merge {
        source: &'a Endpoint,
        target: &'a Endpoint,
        options: &'a MergeSettings,
    },
    Dump {
        source: &'a Endpoint,
        output: &'a Path,
    },
    Restore {
        archive: &'a Path,
        target: &'a Endpoint,
    },
    /// `dbsync migrate`.
    Migrate {
        source: &'a Endpoint,
        target: &'a Endpoint,
        options: &'a MigrationSettings,
    },
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub places: Places,
    /// Empty: every table.
    pub include: Vec<TablePattern>,
    pub exclude: Vec<TablePattern>,
    pub jobs: Jobs,
    pub retries: u32,
    /// The old script's BATCH_SIZE: how many units may be in flight at once.
    pub batch_size: Option<usize>,
    pub dump_dir: PathBuf,
    pub transfer: Transfer,
    /// How kept dumps and archives are compressed (`--compress`); none when nothing is kept.
    pub compression: Compression,
    /// ANALYZE each table once loaded, instead of leaving statistics to autovacuum.
    pub analyze: bool,
    pub assume_yes: bool,
    /// End the sessions on the previous target at the swap (else fail while there are any).
    pub terminate: bool,
    /// `--allow-downgrade`: copy into a server older than the source.
    pub allow_downgrade: bool,
    /// Carry the source's planner statistics over where tools and target can (not with
    /// `--no-statistics`).
    pub statistics: bool,
    pub no_owner: bool,
    pub no_privileges: bool,
    /// Leave tablespace assignments out of the restore.
    pub no_tablespaces: bool,
    pub foreign_keys: ForeignKeyPolicy,
    /// What the last phase compares (`--verify`), and what `dbsync verify` does (`--checksum`).
    pub verification: Verification,
    pub content: Content,
    /// `--maintenance-memory`: what the copy's index builds may use in all (`maintenance_work_mem`
    /// of each loading session = this / --jobs); 0 leaves the server's setting.
    pub maintenance_memory: u64,
    /// `--split-larger-than`: which tables are copied in parts at once.
    pub splitting: Splitting,
    /// `--stream-larger-than`: without `--stream` and kept dumps, a unit larger than this is
    /// streamed anyway; 0 never.
    pub stream_larger_than: u64,
    /// `--rows-via-pg-dump`: every table's rows through `pg_dump`/`pg_restore`, none through
    /// dbsync's own `COPY` but the parts of a split table and masked tables.
    pub rows_via_pg_dump: bool,
    /// `--clone`: whether a copy on the source's own server is made by `CREATE DATABASE …
    /// TEMPLATE` instead of a logical copy.
    pub clone: CloneWhen,
    /// `--copy-roles`: create the roles the target server lacks instead of refusing.
    pub copy_roles: bool,
    /// `[hooks]` of the config file, SQL paths made absolute.
    pub hooks: crate::hooks::Hooks,
    /// `[transform]` of the config file, with the salt from `DBSYNC_MASK_SALT`.
    pub masking: crate::masking::Masking,
    /// `--dry-run` of a data-only refresh: check the target, show `--fix-schema`'s statements,
    /// change nothing. (A full sync's dry run is `dbsync plan`.)
    pub dry_run: bool,
    pub pg_bin: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub display: Display,
    /// The user's own `PGOPTIONS`, which the restore sessions keep and add to.
    pub session_options: Option<String>,
    /// How long to wait for the locks on the source's tables.
    pub lock_timeout: Duration,
    pub config_file: Option<PathBuf>,
    /// `protect` of the config file: database names dbsync never replaces nor drops.
    pub protect: Vec<String>,
    /// The date template of the target name (`Archive_{date}`) or of the output directory's;
    /// `target.dbname` or `output` holds it rendered for this run.
    pub dated: Option<DatedName>,
    /// The dump directory of a failed run to continue (`--resume`).
    pub resume: Option<PathBuf>,
    /// After a successful swap, keep this many of the template's databases (the newest).
    pub retain: Option<usize>,
    /// `dbsync migrate`: the copy is followed by the source's changes until the cut-over.
    pub migration: Option<MigrationSettings>,
}

/// What `dbsync migrate` does, and when it cuts over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSettings {
    pub action: MigrationAction,
    /// `--cutover-when-lag-below`: cut over once the target is this many bytes of WAL behind.
    pub cutover_when_lag_below: Option<u64>,
    /// `--subscription-password`: the subscription's connection string holds the source's
    /// password (stored in the target's catalog), with the user's consent.
    pub subscription_password: bool,
    /// `--replica-identity-full`: tables without a primary key get `REPLICA IDENTITY FULL` on
    /// the source instead of being refused.
    pub replica_identity_full: bool,
    /// Compare every table by checksum once cut over (not with `--no-verify`).
    pub verify: bool,
    /// `--stop-writes`: the cut-over makes the source database read-only and ends its sessions.
    pub stop_writes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationAction {
    /// Copy, follow, cut over.
    Migrate,
    /// `--cutover`: cut over the migration running for this pair (or left by a dbsync that was
    /// stopped while following).
    CutOver,
    /// `--abandon`: remove what a migration of this pair left.
    Abandon,
}

impl Settings {
    /// Which run these settings are for, with its places, decided here once: a restore reads
    /// no source, a dump writes no target, and what a sync copies names the rest.
    pub fn run(&self) -> Run<'_> {
        match (&self.places, &self.content) {
            (Places::Restore { archive, target }, _) => Run::Restore { archive, target },
            (Places::Dump { source, output }, _) => Run::Dump { source, output },
            (Places::Databases { source, target }, Content::DataOnly { .. }) => Run::Refresh { source, target },
            (Places::Databases { source, target }, Content::Incremental(options)) => Run::Incremental {
                source,
                target,
                options,
            },
            (Places::Databases { source, target }, Content::Merge(options)) => Run::Merge {
                source,
                target,
                options,
            },
            (Places::Databases { source, target }, Content::Everything { .. }) if self.migration.is_some() => {
                Run::Migrate {
                    source,
                    target,
                    options: self.migration.as_ref().expect("checked"),
                }
            }
            (Places::Databases { source, target }, Content::Everything { .. } | Content::SchemaOnly) => {
                Run::Sync { source, target }
            }
        }
    }

    /// The kind of run, as the output names it.
    pub fn kind(&self) -> RunKind {
        match self.run() {
            Run::Sync { .. } => RunKind::Sync,
            Run::Refresh { .. } => RunKind::Refresh,
            Run::Incremental { .. } => RunKind::Incremental,
            Run::Merge { .. } => RunKind::Merge,
            Run::Dump { .. } => RunKind::Dump,
            Run::Restore { .. } => RunKind::Restore,
            Run::Migrate { .. } => RunKind::Migrate,
        }
    }

    pub fn keep_dumps(&self) -> bool {
        self.transfer == Transfer::Files { keep: true }
    }
}

/// A size as PostgreSQL writes memory settings: `512MB`, `1GB`, `64kB`, `2TB` (units of 1024),
/// or a plain number of bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// What index builds and other maintenance of the copy may use in all, when neither flag nor
/// config file says: what a small server can spare (--jobs sessions share it).
const DEFAULT_MAINTENANCE_MEMORY: u64 = 512 << 20;

/// Which tables are copied in parts at once, each part over its own pair of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splitting {
    /// `auto`, the default: a table larger than `AUTOMATIC_SPLIT_FLOOR` that holds more than
    /// twice its share of the data (all the tables' bytes over `--jobs`), one that would keep a
    /// session copying long after the others are done. Its parts are about one share each, at
    /// most `--jobs`.
    Automatic,
    /// Tables larger than this many bytes (heap and TOAST), in parts of about this size.
    LargerThan(u64),
    /// `0`.
    Never,
}

/// The smallest table `--split-larger-than auto` cuts: a 260 MB table in two parts through dump
/// files measured 17 % slower than whole on 2 cores (README, Benchmarks); from this size on
/// parts are streamed (`--stream-larger-than`).
pub const AUTOMATIC_SPLIT_FLOOR: u64 = 512 << 20;

/// A unit this large goes from `pg_dump` straight into `pg_restore` even in the default mode when
/// its dump is not kept: writing it to disk and reading it back cost more than the overlap of
/// dump and load saves (measured: a 746 MB unit streamed 20–38 % faster, 185 MB 5–8 % slower).
const DEFAULT_STREAM_LARGER_THAN: u64 = 512 << 20;

/// What `dbsync diff` compares: the source and the target database, as given (only read, so
/// no name is refused).
pub fn resolve_diff(arguments: &DiffArguments, environment: &Environment) -> Result<(Endpoint, Endpoint), SyncError> {
    let (_, config) = config_of(arguments.config.as_ref(), environment)?;
    let defaults = endpoint_defaults(environment);
    let (source, _) = resolve_endpoint(
        Side::Source,
        arguments.source.as_deref(),
        config.source.as_ref(),
        environment,
        &defaults,
    )?;
    let (target, template) = resolve_endpoint(
        Side::Target,
        arguments.target.as_deref(),
        config.target.as_ref(),
        environment,
        &defaults,
    )?;
    if template.is_some() {
        return Err(usage_error!(
            "diff compares one target database: give its name, not a date template"
        ));
    }
    Ok((source, target))
}

/// What `dbsync archives` needs: the target server and the template of the names to list.
pub fn resolve_archives(
    arguments: &ArchivesArguments,
    environment: &Environment,
) -> Result<(Endpoint, DatedName), SyncError> {
    let (_, config) = config_of(arguments.config.as_ref(), environment)?;
    let (target, template) = resolve_endpoint(
        Side::Target,
        arguments.target.as_deref(),
        config.target.as_ref(),
        environment,
        &endpoint_defaults(environment),
    )?;
    let template = template.ok_or_else(|| {
        usage_error!(
            "the target name {} has no date template: archives are listed by one, e.g. --target postgres://host/Archive_DB_{{date}}",
            target.dbname
        )
    })?;
    Ok((target, template))
}

/// Which run the settings are for: what it reads and writes besides the databases.
enum Mode<'a> {
    Sync,
    /// A sync's selection and servers, folded into the existing target.
    Merge {
        id_map: Option<&'a PathBuf>,
    },
    /// Reads both sides only: no target name is refused.
    Verify,
    Dump {
        output: &'a Path,
    },
    Restore {
        archive: &'a Path,
    },
}

/// A merge's `[merge]`, or `--schema-only` / `--data-only [--fix-schema]`, refused with what
/// they cannot go with.
fn content_of(
    arguments: &SyncArguments,
    mode: &Mode,
    (include, exclude): (&[TablePattern], &[TablePattern]),
    transfer: Transfer,
    dated: &Option<DatedName>,
    (incremental, merge, subset): ContentSections,
) -> Result<Content, SyncError> {
    if subset.is_some() {
        refuse_with_subset(arguments, mode, transfer)?;
    }
    if let Mode::Merge { id_map } = mode {
        let id_map = id_map.cloned();
        return Ok(Content::Merge(MergeSettings { id_map, ..merge }));
    }
    if arguments.schema_only {
        if !include.is_empty() || !exclude.is_empty() {
            return Err(usage_error!(
                "--schema-only copies no rows, and table patterns (--include, --exclude, [tables], [exclude]) choose whose rows are copied: leave them out"
            ));
        }
        return Ok(Content::SchemaOnly);
    }
    if !arguments.data_only && !arguments.incremental {
        return Ok(Content::Everything { subset });
    }
    let flag = if arguments.incremental {
        "--incremental"
    } else {
        "--data-only"
    };
    let refused = if transfer != (Transfer::Files { keep: false }) {
        Some("--stream, --keep-dumps and --resume (it moves rows itself, table by table)")
    } else if dated.is_some() {
        Some("a date template in the target name (it keeps one existing database)")
    } else if arguments.run.retain.is_some() {
        Some("--retain")
    } else {
        None
    };
    if let Some(refused) = refused {
        return Err(usage_error!("{flag} cannot be used with {refused}"));
    }
    if arguments.incremental {
        return Ok(Content::Incremental(IncrementalSettings {
            deep: arguments.deep,
            delete: !arguments.no_delete,
            fix_schema: arguments.fix_schema,
            ..incremental
        }));
    }
    Ok(Content::DataOnly {
        fix_schema: arguments.fix_schema,
        subset,
    })
}

/// What a `[subset]` cannot go with (yet): it is copied by a sync into a new copy, or by a
/// `--data-only` refresh, or written to an archive by `dbsync dump`, its rows relayed by dbsync
/// (and `dbsync verify` compares a target with it).
fn refuse_with_subset(arguments: &SyncArguments, mode: &Mode, transfer: Transfer) -> Result<(), SyncError> {
    let refused = match mode {
        Mode::Merge { .. } => Some("dbsync merge"),
        Mode::Restore { .. } => Some("dbsync restore"),
        Mode::Sync if arguments.schema_only => Some("--schema-only"),
        Mode::Sync if arguments.incremental => Some("--incremental"),
        Mode::Sync if transfer == (Transfer::Files { keep: true }) => Some("--keep-dumps or --resume"),
        Mode::Sync if arguments.rows_via_pg_dump => Some("--rows-via-pg-dump"),
        Mode::Sync | Mode::Dump { .. } | Mode::Verify => None,
    };
    match refused {
        Some(refused) => Err(usage_error!(
            "[subset] cannot be used with {refused} yet: a subset is copied by dbsync sync (into a new copy, or with --data-only) and dbsync dump\nhint: run dbsync sync or dbsync dump with this config file, or leave [subset] out"
        )),
        None => Ok(()),
    }
}

pub fn resolve(arguments: &SyncArguments, environment: &Environment) -> Result<Settings, SyncError> {
    resolve_run(arguments, Mode::Sync, environment)
}

/// `dbsync dump`: a sync's settings without a target, writing the archive `output`.
pub fn resolve_dump(arguments: &DumpArguments, environment: &Environment) -> Result<Settings, SyncError> {
    resolve_run(
        &arguments.as_sync(),
        Mode::Dump {
            output: &arguments.output,
        },
        environment,
    )
}

/// `dbsync verify`: a sync's selection and servers, only read.
pub fn resolve_verify(arguments: &VerifyArguments, environment: &Environment) -> Result<Settings, SyncError> {
    resolve_run(&arguments.as_sync(), Mode::Verify, environment)
}

/// `dbsync migrate`: a sync's selection and servers, the copy then followed until the cut-over.
/// What would make the copy differ from the source, or the target not one database, is refused.
pub fn resolve_migrate(arguments: &MigrateArguments, environment: &Environment) -> Result<Settings, SyncError> {
    let mut settings = resolve_run(&arguments.as_sync(), Mode::Sync, environment)?;
    let refused = if settings.content.subset().is_some() {
        Some("[subset] (the source's changes would reach rows the copy left out)")
    } else if !settings.masking.is_empty() {
        Some("[transform] (the source's changes would arrive unmasked)")
    } else if settings.dated.is_some() || settings.retain.is_some() {
        Some("a date template in the target name or --retain")
    } else if !matches!(settings.content, Content::Everything { .. }) {
        Some("--schema-only, --data-only or --incremental")
    } else {
        None
    };
    if let Some(refused) = refused {
        return Err(usage_error!("dbsync migrate cannot be used with {refused}"));
    }
    let action = match (arguments.cutover, arguments.abandon) {
        (true, _) => MigrationAction::CutOver,
        (_, true) => MigrationAction::Abandon,
        _ => MigrationAction::Migrate,
    };
    let cutover_when_lag_below = match &arguments.cutover_when_lag_below {
        Some(text) => Some(
            parse_size(text)
                .ok_or_else(|| usage_error!("--cutover-when-lag-below {text}: not a size (say 0, 512kB, 16MB)"))?,
        ),
        None => None,
    };
    settings.clone = CloneWhen::Never;
    settings.migration = Some(MigrationSettings {
        action,
        cutover_when_lag_below,
        subscription_password: arguments.subscription_password,
        replica_identity_full: arguments.replica_identity_full,
        verify: !arguments.no_verify,
        stop_writes: arguments.stop_writes,
    });
    Ok(settings)
}

/// `dbsync restore`: a sync's settings without a source, reading the archive.
pub fn resolve_restore(arguments: &RestoreArguments, environment: &Environment) -> Result<Settings, SyncError> {
    resolve_run(
        &arguments.as_sync(),
        Mode::Restore {
            archive: &arguments.archive,
        },
        environment,
    )
}

/// `dbsync merge`: a sync's selection and servers, writing into the existing target.
pub fn resolve_merge(arguments: &MergeArguments, environment: &Environment) -> Result<Settings, SyncError> {
    let mode = Mode::Merge {
        id_map: arguments.id_map.as_ref(),
    };
    let settings = resolve_run(&arguments.as_sync(), mode, environment)?;
    if settings.dated.is_some() || settings.retain.is_some() {
        return Err(usage_error!(
            "dbsync merge writes into one existing database: a date template in the target name and --retain do not apply"
        ));
    }
    Ok(settings)
}

/// Names every flag a sync's resolution reads, so that a flag added to the command line does not
/// compile until it is resolved (and added here): nothing is forgotten between clap and the
/// settings.
fn every_flag_is_resolved(arguments: &SyncArguments) {
    let SyncArguments {
        source:
            SourceArguments {
                source: _,
                include: _,
                exclude: _,
                lock_timeout: _,
            },
        target:
            TargetArguments {
                target: _,
                analyze: _,
                no_analyze: _,
                no_terminate: _,
                allow_downgrade: _,
                no_statistics: _,
                yes: _,
                no_owner: _,
                owner: _,
                no_tablespaces: _,
                no_privileges: _,
                privileges: _,
                maintenance_memory: _,
            },
        run,
        dump_dir: _,
        keep_dumps: _,
        no_keep_dumps: _,
        stream: _,
        no_stream: _,
        compress: _,
        dry_run: _,
        resume: _,
        foreign_keys: _,
        verify: _,
        schema_only: _,
        data_only: _,
        incremental: _,
        deep: _,
        no_delete: _,
        batch_rows: _,
        stream_larger_than: _,
        rows_via_pg_dump: _,
        clone: _,
        split_larger_than: _,
        copy_roles: _,
        fix_schema: _,
    } = arguments;
    every_run_flag_is_resolved(run);
}

/// `every_flag_is_resolved` for the flags every command shares.
fn every_run_flag_is_resolved(run: &RunArguments) {
    let RunArguments {
        config: _,
        jobs: _,
        retries: _,
        pg_bin: _,
        report: _,
        plain: _,
        progress_every: _,
        retain: _,
        utc: _,
    } = run;
}

/// The user's own `PGOPTIONS`, which the restore sessions keep.
fn session_options_of(environment: &Environment) -> Option<String> {
    environment
        .get("PGOPTIONS")
        .filter(|options| !options.trim().is_empty())
}

fn resolve_run(arguments: &SyncArguments, mode: Mode, environment: &Environment) -> Result<Settings, SyncError> {
    every_flag_is_resolved(arguments);
    let (config_path, config) = config_of(arguments.run.config.as_ref(), environment)?;
    let options = &config.options;
    let located = places_of(arguments, &mode, &config, environment)?;
    let (jobs, retries, batch_size) = counts_of(arguments, options, environment)?;
    let (foreign_keys, verification, clone) = policies_of(arguments, options)?;
    let (include, exclude) = patterns_of(arguments, &config)?;
    let (transfer, compression) = transfer_of(arguments, options, verification, &mode)?;
    let (maintenance_memory, splitting, stream_larger_than) = sizes_of(arguments, options)?;
    let (hooks, masking, sections) = sections_of(arguments, &config, config_path.as_deref(), environment)?;
    let patterns = (&include[..], &exclude[..]);
    let content = content_of(arguments, &mode, patterns, transfer, &located.dated, sections)?;
    let flags = &arguments.target;
    Ok(Settings {
        places: located.places,
        dated: located.dated,
        include,
        exclude,
        jobs,
        retries,
        batch_size,
        verification,
        content,
        dry_run: arguments.dry_run,
        copy_roles: chosen(arguments.copy_roles, false, options.copy_roles),
        maintenance_memory,
        splitting,
        stream_larger_than,
        rows_via_pg_dump: arguments.rows_via_pg_dump || options.rows_via_pg_dump.unwrap_or(false),
        clone,
        hooks,
        masking,
        dump_dir: (arguments.dump_dir.as_ref().or(options.dump_dir.as_ref())).map_or(".".into(), Clone::clone),
        transfer,
        compression,
        analyze: chosen(flags.analyze, flags.no_analyze, options.analyze),
        assume_yes: flags.yes,
        terminate: !flags.no_terminate,
        allow_downgrade: flags.allow_downgrade,
        statistics: !flags.no_statistics,
        no_owner: chosen(flags.no_owner, flags.owner, options.no_owner),
        no_privileges: chosen(flags.no_privileges, flags.privileges, options.no_privileges),
        no_tablespaces: flags.no_tablespaces || options.no_tablespaces.unwrap_or(false),
        foreign_keys,
        pg_bin: arguments.run.pg_bin.clone().or_else(|| options.pg_bin.clone()),
        report: arguments.run.report.clone(),
        display: display_of(arguments, environment)?,
        session_options: session_options_of(environment),
        lock_timeout: lock_timeout_of(arguments, options),
        protect: config.protect.clone(),
        config_file: config_path,
        retain: located.retain,
        resume: arguments.resume.clone(),
        migration: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_read_as_postgresql_writes_them() {
        assert_eq!(parse_size("512MB"), Some(512 << 20));
        assert_eq!(parse_size("1gb"), Some(1 << 30));
        assert_eq!(parse_size("64kB"), Some(64 << 10));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size(" 2 GB "), Some(2 << 30));
        assert_eq!(parse_size("1.5GB"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999TB"), None);
    }

    use super::*;
    use clap::Parser;

    fn arguments(extra: &[&str]) -> SyncArguments {
        let mut all = vec!["dbsync", "sync"];
        all.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(all).command {
            crate::cli::Command::Sync(arguments) => *arguments,
            command => panic!("not a sync: {command:?}"),
        }
    }

    fn environment_of(pairs: &[(&str, &str)]) -> Environment {
        Environment::of_pairs(pairs)
    }

    #[test]
    fn old_script_variables_build_endpoints_and_jobs() {
        let environment = environment_of(&[
            ("MAIN_DB_HOST", "prod"),
            ("MAIN_DB_PASSWORD", "s3cret"),
            ("ARCHIVE_DB_NAME", "archive"),
            ("PG_JOBS", "6"),
            ("RETRY_COUNT", "5"),
            ("BATCH_SIZE", "2"),
        ]);
        let settings = resolve(&arguments(&[]), &environment).unwrap();
        assert_eq!(settings.places.source().unwrap().host, "prod");
        assert_eq!(settings.places.source().unwrap().dbname, "Main_DB");
        assert_eq!(
            settings.places.source().unwrap().password.as_ref().unwrap().expose(),
            "s3cret"
        );
        assert_eq!(settings.places.target().unwrap().dbname, "archive");
        assert_eq!(settings.places.target().unwrap().host, "localhost");
        assert_eq!(
            (settings.jobs.get(), settings.retries, settings.batch_size),
            (6, 5, Some(2))
        );
    }

    #[test]
    fn split_larger_than_is_auto_by_default_a_size_or_never() {
        let environment = environment_of(&[]);
        let splitting = |extra: &[&str]| {
            let mut flags = vec!["--source", "postgres://u@s/db", "--target", "postgres://u@t/x"];
            flags.extend_from_slice(extra);
            resolve(&arguments(&flags), &environment).map(|settings| settings.splitting)
        };
        assert_eq!(splitting(&[]).unwrap(), Splitting::Automatic);
        assert_eq!(
            splitting(&["--split-larger-than", "AUTO"]).unwrap(),
            Splitting::Automatic
        );
        assert_eq!(splitting(&["--split-larger-than", "0"]).unwrap(), Splitting::Never);
        assert_eq!(
            splitting(&["--split-larger-than", "1GB"]).unwrap(),
            Splitting::LargerThan(1 << 30)
        );
        let error = splitting(&["--split-larger-than", "big"]).unwrap_err();
        assert!(error.to_string().contains("auto (the default)"), "{error}");
    }

    #[test]
    fn flags_beat_environment() {
        let environment = environment_of(&[("MAIN_DB_HOST", "prod"), ("PG_JOBS", "6")]);
        let settings = resolve(
            &arguments(&[
                "--source",
                "postgres://u@flag/db",
                "--target",
                "postgres://u@t/x",
                "-j",
                "3",
            ]),
            &environment,
        )
        .unwrap();
        assert_eq!(settings.places.source().unwrap().host, "flag");
        assert_eq!(settings.jobs.get(), 3);
    }

    #[test]
    fn missing_source_is_a_usage_error_that_says_how() {
        let environment = environment_of(&[]);
        let error = resolve(&arguments(&["--target", "postgres://u@t/x"]), &environment).unwrap_err();
        assert_eq!(error.exit_code(), crate::errors::ExitCode::USAGE);
        assert!(error.to_string().contains("--source"), "{error}");
    }

    #[test]
    fn a_dated_target_is_rendered_once_and_retain_needs_one() {
        let environment = environment_of(&[]);
        let source = "postgres://u@s/a";
        let settings = resolve(
            &arguments(&[
                "--source",
                source,
                "--target",
                "postgres://u:p%7B@t/Archive_{date:%Y_%m}_x?sslmode=disable",
                "--retain",
                "3",
                "--utc",
            ]),
            &environment,
        )
        .unwrap();
        let month = chrono::Utc::now().format("%Y_%m").to_string();
        assert_eq!(settings.places.target().unwrap().dbname, format!("Archive_{month}_x"));
        assert_eq!(
            settings.places.target().unwrap().password.as_ref().unwrap().expose(),
            "p{"
        );
        assert_eq!(settings.dated.unwrap().pattern(), "Archive_{date:%Y_%m}_x");
        assert_eq!(settings.retain, Some(3));
        let from_variable = environment_of(&[("ARCHIVE_DB_NAME", "Nightly_{date}")]);
        let settings = resolve(&arguments(&["--source", source]), &from_variable).unwrap();
        assert_eq!(settings.places.target().unwrap().dbname.len(), "Nightly_20261122".len());

        for (target, retain, expected) in [
            ("postgres://u@t/Archive", Some("2"), "has none"),
            ("postgres://u@t/Archive_{date}", Some("0"), "at least 1"),
            (
                "postgres://u@t/Archive?host=/run/{date}",
                None,
                "belongs in the database name",
            ),
            ("postgres://u@t/Archive_{date:%Q}", None, "not a valid date format"),
            (
                "postgres://u@t/a_very_long_archive_name_for_the_nightly_{date:%Y%m%d%H%M%S}",
                None,
                "63-byte limit",
            ),
        ] {
            let mut flags = vec!["--source", source, "--target", target];
            if let Some(retain) = retain {
                flags.extend(["--retain", retain]);
            }
            let error = resolve(&arguments(&flags), &environment).unwrap_err();
            assert_eq!(error.exit_code(), crate::errors::ExitCode::USAGE, "{target}: {error}");
            assert!(error.to_string().contains(expected), "{target}: {error}");
        }
    }

    #[test]
    fn bad_number_names_the_variable() {
        let environment = environment_of(&[("PG_JOBS", "many")]);
        let error = resolve(
            &arguments(&["--source", "postgres://u@s/a", "--target", "postgres://u@t/b"]),
            &environment,
        )
        .unwrap_err();
        assert!(error.to_string().contains("PG_JOBS"), "{error}");
    }

    #[test]
    fn config_file_groups_exclusions_and_unknown_keys() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("core_tables.toml");
        std::fs::write(
            &path,
            "[source]\nurl = \"postgres://u@s/a\"\n[target]\nurl = \"postgres://u@t/b\"\n\
             [options]\njobs = 7\nforeign_keys = \"skip\"\n[tables]\nusers = [\"users\", \"auth_*\"]\n\
             [exclude]\ntables = [\"*_old\"]\n",
        )
        .unwrap();
        let environment = environment_of(&[]);
        let path_text = path.to_str().unwrap();
        let settings = resolve(&arguments(&["--config", path_text, "--include", "x,y"]), &environment).unwrap();
        assert_eq!(settings.jobs.get(), 7);
        assert_eq!(settings.foreign_keys, ForeignKeyPolicy::Skip);
        let patterns: Vec<&str> = settings
            .include
            .iter()
            .map(|pattern| pattern.pattern.as_str())
            .collect();
        assert_eq!(patterns, ["users", "auth_*", "x", "y"]);
        assert_eq!(settings.include[0].origin, "group \"users\"");
        assert_eq!(settings.exclude[0].pattern, "*_old");

        std::fs::write(&path, "[options]\njobs = 2\nturbo = true\n").unwrap();
        let error = resolve(&arguments(&["--config", path_text]), &environment).unwrap_err();
        assert_eq!(error.exit_code(), crate::errors::ExitCode::USAGE);
        assert!(error.to_string().contains("line 3"), "{error}");
        assert!(error.to_string().contains("turbo"), "{error}");
    }

    #[test]
    fn the_example_config_file_is_valid_when_uncommented() {
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/core_tables.toml")).unwrap();
        let uncommented: String = example
            .lines()
            .map(|line| {
                let body = line.strip_prefix("# ").unwrap_or(line);
                let is_toml = body.starts_with('[')
                    || body.split_once('=').is_some_and(|(key, _)| {
                        !key.trim().is_empty() && key.trim().chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    });
                if is_toml { body.to_string() } else { String::new() }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config: ConfigFile = toml::from_str(&uncommented).unwrap_or_else(|error| panic!("{error}\n{uncommented}"));
        assert_eq!(config.options.jobs, Some(4));
        assert_eq!(config.tables["orders"], ["orders", "order_*"]);
        assert_eq!(config.exclude.tables, ["*_backup", "*_old"]);
        assert!(config.source.is_some() && config.target.is_some());
        assert_eq!(config.protect, ["*prod*", "billing"]);
    }

    #[test]
    fn switches_in_a_config_file_can_be_turned_off_by_flags() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("on.toml");
        std::fs::write(
            &path,
            "[source]\nurl = \"postgres://u@s/a\"\n[target]\nurl = \"postgres://u@t/b\"\n\
             [options]\nkeep_dumps = true\nanalyze = true\nno_owner = true\nno_privileges = true\n\
             no_tablespaces = true\nlock_timeout = 45\ncompress = \"gzip:1\"\n",
        )
        .unwrap();
        let environment = environment_of(&[]);
        let path_text = path.to_str().unwrap();
        let from_file = resolve(&arguments(&["--config", path_text]), &environment).unwrap();
        assert_eq!(from_file.transfer, Transfer::Files { keep: true });
        assert!(from_file.analyze && from_file.no_owner && from_file.no_privileges && from_file.no_tablespaces);
        assert_eq!(from_file.lock_timeout, Duration::from_secs(45));
        assert_eq!(from_file.compression.to_string(), "gzip:1");
        // The flag beats the file.
        let flagged = resolve(&arguments(&["--config", path_text, "--compress", "none"]), &environment).unwrap();
        assert_eq!(flagged.compression, crate::compression::NONE);
        let switched_off = resolve(
            &arguments(&[
                "--config",
                path_text,
                "--no-keep-dumps",
                "--no-analyze",
                "--owner",
                "--privileges",
            ]),
            &environment,
        )
        .unwrap();
        assert_eq!(switched_off.transfer, Transfer::Files { keep: false });
        assert!(!switched_off.analyze && !switched_off.no_owner && !switched_off.no_privileges);
        // The last of a pair wins, as with any command-line switch.
        let last_wins = resolve(
            &arguments(&[
                "--config",
                path_text,
                "--no-analyze",
                "--analyze",
                "--no-keep-dumps",
                "--stream",
            ]),
            &environment,
        )
        .unwrap();
        assert!(last_wins.analyze);
        assert_eq!(last_wins.transfer, Transfer::Stream);
    }

    #[test]
    fn every_environment_variable_comes_through_the_injected_environment() {
        let environment = environment_of(&[
            ("PGHOST", "/var/run/sockets"),
            ("PGPORT", "6543"),
            ("PGUSER", "carol"),
            ("PGOPTIONS", "-c work_mem=64MB"),
            ("TERM", "dumb"),
            ("NO_COLOR", "1"),
        ]);
        let settings = resolve(
            &arguments(&["--source", "postgres:///shop", "--target", "postgres://u@t/b"]),
            &environment,
        )
        .unwrap();
        assert_eq!(settings.places.source().unwrap().host, "/var/run/sockets");
        assert_eq!(settings.places.source().unwrap().port, 6543);
        assert_eq!(settings.places.source().unwrap().user, "carol");
        assert_eq!(settings.session_options.as_deref(), Some("-c work_mem=64MB"));
        assert!(!settings.display.terminal_allowed, "TERM=dumb allows no progress bars");
        assert!(!settings.display.colour, "NO_COLOR turns colour off");
    }

    #[test]
    fn passwords_come_from_the_password_file_the_environment_names() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("pgpass");
        std::fs::write(&path, "s:5432:a:u:from-the-file\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path_text: &'static str = Box::leak(path.to_str().unwrap().to_string().into_boxed_str());
        let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([("PGPASSFILE", path_text)]));
        let settings = resolve(
            &arguments(&["--source", "postgres://u@s/a", "--target", "postgres://u@t/b"]),
            &environment_of(pairs),
        )
        .unwrap();
        assert_eq!(
            settings.places.source().unwrap().password.as_ref().unwrap().expose(),
            "from-the-file"
        );
        assert!(settings.places.target().unwrap().password.is_none());
    }
}
