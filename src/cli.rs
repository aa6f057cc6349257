//! The command line, as clap sees it. Values here are raw: `settings` resolves them against the
//! config file, the environment and the defaults.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

/// What every subcommand's help ends with: what it reads from the environment and how it exits.
macro_rules! environment_and_exit_codes {
    () => {
        r#"Environment:
  PGHOST PGPORT PGUSER PGPASSWORD PGPASSFILE PGSERVICE PGSERVICEFILE PGSYSCONFDIR PGSSLMODE
  PGSSLROOTCERT PGSSLCERT PGSSLKEY PGOPTIONS, as libpq reads them (USER and HOME for its defaults);
  the old script's MAIN_DB_HOST MAIN_DB_PORT MAIN_DB_USER MAIN_DB_PASSWORD MAIN_DB_NAME,
  ARCHIVE_DB_HOST ARCHIVE_DB_PORT ARCHIVE_DB_USER ARCHIVE_DB_PASSWORD ARCHIVE_DB_NAME, PG_JOBS
  RETRY_COUNT BATCH_SIZE; DBSYNC_CONFIG (--config); DBSYNC_MASK_SALT ([transform]); NO_COLOR TERM

Exit codes:
  0    done: the target is a validated copy (or both sides are equal)
  1    failed; the previous target is unchanged
  2    refused before anything was changed (bad input, missing consent, an unsafe target)
  3    validation found differences; the previous target is unchanged
  130  interrupted (Ctrl+C), cleaned up    143  terminated (SIGTERM), cleaned up"#
    };
}

const SYNC_HELP: &str = concat!(
    r#"Examples:
  dbsync sync --source postgres://app@prod/shop --target postgres://app@dev/shop --yes
  dbsync sync --source postgres://app@prod/shop --target 'postgres://app@archive/Shop_{date}' --retain 7 --yes
  dbsync sync --data-only --include 'orders*' --source service=prod --target service=dev --yes"#,
    "\n\n",
    environment_and_exit_codes!()
);

const PLAN_HELP: &str = concat!(
    r#"Examples:
  dbsync plan --source postgres://app@prod/shop --target postgres://app@dev/shop
  dbsync plan --source … --target … --include 'billing.*' --format json"#,
    "\n\n",
    environment_and_exit_codes!()
);

const VERIFY_HELP: &str = concat!(
    r#"Examples:
  dbsync verify --source postgres://app@prod/shop --target postgres://app@dev/shop
  dbsync verify --checksum --source … --target … --format json"#,
    "\n\n",
    environment_and_exit_codes!()
);

const DIFF_HELP: &str = concat!(
    r#"Examples:
  dbsync diff --source postgres://app@prod/shop --target postgres://app@dev/shop"#,
    "\n\n",
    environment_and_exit_codes!()
);

const DUMP_HELP: &str = concat!(
    r#"Examples:
  dbsync dump --source postgres://backup@prod/shop --output '/backups/shop_{date}' --retain 14
  dbsync dump --source … --output /backups/shop --compress zstd:3 --pg-bin /usr/lib/postgresql/17/bin"#,
    "\n\n",
    environment_and_exit_codes!()
);

const RESTORE_HELP: &str = concat!(
    r#"Examples:
  dbsync restore /backups/shop_20261122 --target postgres://app@dev/shop --yes"#,
    "\n\n",
    environment_and_exit_codes!()
);

const ARCHIVES_HELP: &str = concat!(
    r#"Examples:
  dbsync archives --target 'postgres://app@archive/Shop_{date}'"#,
    "\n\n",
    environment_and_exit_codes!()
);

const MIGRATE_HELP: &str = concat!(
    "Examples:\n",
    "  dbsync migrate --source postgres://app@old/shop --target postgres://app@new/shop --subscription-password --yes\n",
    "  dbsync migrate --cutover --source postgres://app@old/shop --target postgres://app@new/shop\n",
    "  dbsync migrate --abandon --source postgres://app@old/shop --target postgres://app@new/shop\n\n",
    "The source needs wal_level = logical and a role with REPLICATION; the target role must be able to create a\n",
    "subscription. Writes to the source are not stopped by dbsync: stop them before the cut-over.\n\n",
    environment_and_exit_codes!()
);

const MERGE_HELP: &str = concat!(
    r#"Examples:
  dbsync merge --source postgres://app@branch/shop --target postgres://app@central/shop --config merge.toml --yes
  dbsync merge --dry-run --source … --target … --config merge.toml"#,
    "\n\n",
    environment_and_exit_codes!()
);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy the source database into the target database (replacing it once the copy is complete).
    #[command(after_help = SYNC_HELP)]
    Sync(Box<SyncArguments>),
    /// Show what a sync would do (servers, tables, foreign-key order, units, warnings), changing
    /// nothing; the same as `sync --dry-run`.
    #[command(after_help = PLAN_HELP)]
    Plan(Box<PlanArguments>),
    /// Compare the source and target without copying: rows of each selected table, sequences,
    /// large objects (exit 0 equal, 3 different)
    #[command(after_help = VERIFY_HELP)]
    Verify(Box<VerifyArguments>),
    /// Compare the schemas of the source and target databases (exit 0 equal, 3 different)
    #[command(after_help = DIFF_HELP)]
    Diff(DiffArguments),
    /// Write the source database to an archive directory (schema, data, manifest) from one snapshot.
    #[command(after_help = DUMP_HELP)]
    Dump(Box<DumpArguments>),
    /// Load an archive (from `dbsync dump` or --keep-dumps) into the target database, replacing it
    /// once the copy is complete and validated against the archive's manifest.
    #[command(after_help = RESTORE_HELP)]
    Restore(Box<RestoreArguments>),
    /// List the databases of a dated target (--target …/Archive_{date}) with their dates and sizes.
    #[command(after_help = ARCHIVES_HELP)]
    Archives(ArchivesArguments),
    /// Fold the source database's rows into the target's: new IDs from the target's sequences,
    /// foreign keys rewritten, rows matched by natural keys ([merge] in the config), an ID map
    /// kept in the target so a second run inserts nothing new.
    #[command(after_help = MERGE_HELP)]
    Merge(Box<MergeArguments>),
    /// Move a live database to another server: copy it from a replication slot's snapshot, follow
    /// the source's changes with PostgreSQL's logical replication, and cut over when told, with
    /// the sequences set and every table compared by checksum.
    #[command(after_help = MIGRATE_HELP)]
    Migrate(Box<MigrateArguments>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output
    #[command(
        after_help = "Examples:\n  dbsync completions bash > /etc/bash_completion.d/dbsync\n  dbsync completions zsh > \"${fpath[1]}/_dbsync\""
    )]
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print dbsync's manual page (roff) to standard output
    #[command(after_help = "Examples:\n  dbsync man > /usr/local/share/man/man1/dbsync.1\n  dbsync man | man -l -")]
    Man,
}

#[derive(Debug, Parser)]
#[command(
    name = "dbsync",
    version,
    about = "Copy a PostgreSQL database to another server: consistent, complete, safe",
    after_help = concat!(
        "Examples:\n",
        "  dbsync sync --source postgres://app@prod/shop --target postgres://app@dev/shop --yes\n",
        "  dbsync dump --source postgres://backup@prod/shop --output '/backups/shop_{date}' --retain 14\n",
        "  dbsync completions bash > /etc/bash_completion.d/dbsync; dbsync man > dbsync.1\n",
        "\nEach command's --help gives its options by heading, and examples.\n\n",
        environment_and_exit_codes!()
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Default, Args)]
pub struct SyncArguments {
    #[command(flatten)]
    pub source: SourceArguments,

    #[command(flatten)]
    pub target: TargetArguments,

    #[command(flatten)]
    pub run: RunArguments,

    /// Directory in which the temporary dump directory is created [default: .]
    #[arg(help_heading = "Dumps and archives", long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,

    /// Keep the dump files after the run
    #[arg(help_heading = "Dumps and archives", long, overrides_with = "no_keep_dumps")]
    pub keep_dumps: bool,

    /// Remove the dump files (overrides keep_dumps in a config file)
    #[arg(help_heading = "Dumps and archives", long, overrides_with = "keep_dumps")]
    pub no_keep_dumps: bool,

    /// Move each unit straight from the source into the target: no dump files on disk
    #[arg(
        help_heading = "Speed",
        long,
        conflicts_with = "keep_dumps",
        overrides_with = "no_stream"
    )]
    pub stream: bool,

    /// Write dump files (overrides stream in a config file)
    #[arg(help_heading = "Speed", long, overrides_with = "stream")]
    pub no_stream: bool,

    /// With --keep-dumps: how the kept dumps are compressed: gzip (the default, what pg_dump -Fd
    /// does), lz4 or zstd (pg_dump 16+ built with them), each with an optional :LEVEL, or none
    #[arg(help_heading = "Dumps and archives", long, value_name = "METHOD[:LEVEL]")]
    pub compress: Option<String>,

    /// Show what the sync would do and stop (see `dbsync plan`)
    #[arg(help_heading = "Safety", long)]
    pub dry_run: bool,

    /// Continue a run that failed with --keep-dumps, from its dump directory (its failure
    /// message gives the command)
    #[arg(
        help_heading = "Dumps and archives",
        long,
        value_name = "DIR",
        conflicts_with = "stream"
    )]
    pub resume: Option<PathBuf>,

    /// What to do with a foreign key from a copied table to a table whose data is not copied:
    /// not-valid (create it NOT VALID), skip (leave it out), include-parent (copy the referenced
    /// tables' data too)
    #[arg(help_heading = "What to copy", long, value_name = "POLICY", value_parser = PossibleValuesParser::new(["not-valid", "skip", "include-parent"]))]
    pub foreign_keys: Option<String>,

    /// What the last phase compares before the swap: count (rows per table, the default),
    /// checksum (counts and a hash of every table's rows), none (structure only)
    #[arg(help_heading = "Safety", long, value_name = "WHAT", value_parser = PossibleValuesParser::new(["count", "checksum", "none"]))]
    pub verify: Option<String>,

    /// Copy the schema only: the target gets every object and no rows
    #[arg(help_heading = "What to copy", long, conflicts_with = "data_only")]
    pub schema_only: bool,

    /// Refresh: keep the target database and its schema, and replace the selected tables' rows
    /// with the source's, tables linked by foreign keys in one transaction
    #[arg(help_heading = "What to copy", long)]
    pub data_only: bool,

    /// Incremental: keep the target and its schema, and move only the rows that differ (changed
    /// since the last run by a change column, else found by comparing key ranges), each table in
    /// one transaction
    #[arg(help_heading = "What to copy", long, conflicts_with_all = ["data_only", "schema_only"])]
    pub incremental: bool,

    /// With --incremental: compare every table by key ranges (hashes on both servers), even
    /// those with a change column
    #[arg(help_heading = "What to copy", long, requires = "incremental")]
    pub deep: bool,

    /// With --incremental: keep the target's rows whose keys the source no longer has
    #[arg(help_heading = "What to copy", long, requires = "incremental")]
    pub no_delete: bool,

    /// With --incremental: the most rows one statement writes [default: 10000]
    #[arg(help_heading = "What to copy", long, value_name = "N", requires = "incremental")]
    pub batch_rows: Option<u64>,

    /// Without --stream or --keep-dumps: pipe a unit of data larger than this straight from
    /// pg_dump into pg_restore instead of through a dump file; 0 never does [default: 512MB]
    #[arg(help_heading = "Speed", long, value_name = "SIZE")]
    pub stream_larger_than: Option<String>,

    /// Same server only: make the copy with CREATE DATABASE … TEMPLATE (a file copy; a clone on
    /// 18+ where the file system can), then validate and swap it as any copy. always (the flag
    /// alone): refuse when it cannot; auto: a logical copy then, saying why; never [default]
    #[arg(help_heading = "Speed", long, value_name = "WHEN", num_args = 0..=1, default_missing_value = "always", value_parser = PossibleValuesParser::new(["always", "auto", "never"]))]
    pub clone: Option<String>,

    /// Move every table's rows through pg_dump and pg_restore, as kept dumps do, rather than
    /// dbsync's own COPY (which a sync whose dumps are not kept uses for tables not cut in parts)
    #[arg(help_heading = "Speed", long)]
    pub rows_via_pg_dump: bool,

    /// Copy a table larger than this in parts at once, each over its own pair of sessions, e.g.
    /// 128MB; auto: a table over 512MB holding more than twice its share (1/--jobs) of the data;
    /// 0 never splits [default: auto]
    #[arg(help_heading = "Speed", long, value_name = "SIZE")]
    pub split_larger_than: Option<String>,

    /// Create on the target server the roles the source database's objects need and it lacks
    /// (attributes and memberships, never passwords), each printed
    #[arg(help_heading = "What to copy", long)]
    pub copy_roles: bool,

    /// With --data-only: first add what the target lacks (tables, columns, sequences, indexes),
    /// printing each statement; never drops or alters what holds data
    #[arg(help_heading = "What to copy", long, requires = "data_only")]
    pub fix_schema: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArguments {
    #[command(flatten)]
    pub sync: SyncArguments,

    /// text (default) or json
    #[arg(help_heading = "Output", long, value_name = "FORMAT", value_parser = PossibleValuesParser::new(["text", "json"]))]
    pub format: Option<String>,

    /// The plan of `dbsync merge` (order, keys remapped, natural keys, cycles): the same as
    /// `dbsync merge --dry-run`
    #[arg(long, conflicts_with = "format")]
    pub merge: bool,
}

impl PlanArguments {
    /// `--merge`: the same servers and configuration seen as a merge's dry run.
    pub fn as_merge(&self) -> MergeArguments {
        // Every field named: a new one does not compile until it is carried over or left out here.
        let PlanArguments {
            sync,
            format: _,
            merge: _,
        } = self;
        MergeArguments {
            source: sync.source.clone(),
            target: sync.target.target.clone(),
            yes: false,
            run: sync.run.clone(),
            dry_run: true,
            id_map: None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DumpArguments {
    #[command(flatten)]
    pub source: SourceArguments,

    /// The archive directory to write; it must not exist. May end in a date template:
    /// /backups/Main_DB_{date}
    #[arg(help_heading = "Dumps and archives", long, value_name = "DIR")]
    pub output: PathBuf,

    /// How the archive's files are compressed: gzip (the default, what pg_dump -Fd does), lz4 or
    /// zstd (pg_dump 16+ built with them), each with an optional :LEVEL, or none
    #[arg(help_heading = "Dumps and archives", long, value_name = "METHOD[:LEVEL]")]
    pub compress: Option<String>,

    #[command(flatten)]
    pub run: RunArguments,
}

impl DumpArguments {
    /// The same run seen as a sync without a target: what dumping shares with syncing.
    pub fn as_sync(&self) -> SyncArguments {
        // Every field named: a new one does not compile until it is carried over or left out here.
        let DumpArguments {
            source,
            output: _,
            compress,
            run,
        } = self;
        SyncArguments {
            source: source.clone(),
            run: run.clone(),
            compress: compress.clone(),
            ..SyncArguments::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArguments {
    /// The archive directory: a `dbsync dump --output`, or a sync's kept dump directory
    #[arg(value_name = "DIR")]
    pub archive: PathBuf,

    #[command(flatten)]
    pub target: TargetArguments,

    #[command(flatten)]
    pub run: RunArguments,

    /// Directory in which a small working directory is created [default: .]
    #[arg(help_heading = "Dumps and archives", long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
}

impl RestoreArguments {
    /// The same run seen as a sync without a source: what restoring shares with syncing.
    pub fn as_sync(&self) -> SyncArguments {
        // Every field named: a new one does not compile until it is carried over or left out here.
        let RestoreArguments {
            archive: _,
            target,
            run,
            dump_dir,
        } = self;
        SyncArguments {
            target: target.clone(),
            run: run.clone(),
            dump_dir: dump_dir.clone(),
            no_keep_dumps: true,
            no_stream: true,
            ..SyncArguments::default()
        }
    }
}

/// Where a sync or a dump reads, and what.
#[derive(Debug, Clone, Default, Args)]
pub struct SourceArguments {
    /// Source database: a URI (postgres://user@host:5432/Main_DB), key=value pairs
    /// ("host=prod dbname=Main_DB") or service=NAME
    #[arg(help_heading = "Connections", long, value_name = "URI")]
    pub source: Option<String>,

    /// Copy data only for tables matching these comma-separated wildcard patterns (user_*,billing.*)
    #[arg(help_heading = "What to copy", long, value_name = "PATTERNS", value_delimiter = ',')]
    pub include: Vec<String>,

    /// Copy no data for tables matching these comma-separated wildcard patterns
    #[arg(help_heading = "What to copy", long, value_name = "PATTERNS", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// How long to wait for the locks on the source's tables before giving up [default: 600]
    #[arg(help_heading = "Connections", long, value_name = "SECONDS")]
    pub lock_timeout: Option<u64>,
}

/// Where a sync or a restore writes, and how it treats what is there.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArguments {
    /// Target database (a URI, key=value pairs or service=NAME): postgres://user@host2:5432/Archive_DB (may hold a date template:
    /// Archive_DB_{date})
    #[arg(help_heading = "Connections", long, value_name = "URI")]
    pub target: Option<String>,

    /// ANALYZE each table once it is loaded, so the copy has planner statistics at once
    #[arg(help_heading = "What to copy", long, overrides_with = "no_analyze")]
    pub analyze: bool,

    /// Leave statistics to autovacuum (overrides analyze in a config file)
    #[arg(help_heading = "What to copy", long, overrides_with = "analyze")]
    pub no_analyze: bool,

    /// Fail instead of ending the sessions connected to the previous target at the swap
    #[arg(help_heading = "Safety", long)]
    pub no_terminate: bool,

    /// Do not carry the source's planner statistics over (PostgreSQL 18 tools and target)
    #[arg(help_heading = "What to copy", long)]
    pub no_statistics: bool,

    /// Copy into a server of an older major version than the source's (refused by default: the
    /// target may not be able to hold what the source has)
    #[arg(help_heading = "Safety", long)]
    pub allow_downgrade: bool,

    /// Replace an existing target database without asking
    #[arg(help_heading = "Safety", long, short = 'y')]
    pub yes: bool,

    /// Do not restore object ownership (objects belong to the target user)
    #[arg(help_heading = "What to copy", long, overrides_with = "owner")]
    pub no_owner: bool,

    /// Restore object ownership (the default; overrides no_owner in a config file)
    #[arg(help_heading = "What to copy", long, overrides_with = "no_owner")]
    pub owner: bool,

    /// Put every object in the target's default tablespace (for tablespaces it does not have)
    #[arg(help_heading = "What to copy", long)]
    pub no_tablespaces: bool,

    /// Do not restore grants (GRANT/REVOKE)
    #[arg(help_heading = "What to copy", long, overrides_with = "privileges")]
    pub no_privileges: bool,

    /// Restore grants (the default; overrides no_privileges in a config file)
    #[arg(help_heading = "What to copy", long, overrides_with = "no_privileges")]
    pub privileges: bool,

    /// Memory the copy's index builds may use in all, shared by the --jobs loading sessions
    /// (their maintenance_work_mem); 0 leaves the server's setting [default: 512MB]
    #[arg(help_heading = "Speed", long, value_name = "SIZE")]
    pub maintenance_memory: Option<String>,
}

/// What every run takes: configuration, parallelism, tools, output, retention.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArguments {
    /// Configuration file with table groups and settings (see core_tables.toml)
    #[arg(help_heading = "Connections", long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How many server sessions may do copy work at once: dumps, loads, index builds, vacuums
    /// [default: number of CPUs]
    #[arg(help_heading = "Speed", long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,

    /// How many times a transient failure is retried [default: 3]
    #[arg(help_heading = "Speed", long, value_name = "N")]
    pub retries: Option<u32>,

    /// Directory holding pg_dump and pg_restore to use instead of searching for them
    #[arg(help_heading = "Connections", long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// Write a JSON report of the run to this file
    #[arg(help_heading = "Output", long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// One plain line per event even on a terminal (no progress bars, no colour)
    #[arg(help_heading = "Output", long)]
    pub plain: bool,

    /// In plain output, how often a long-running table gets a progress line [default: 30]
    #[arg(help_heading = "Output", long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,

    /// After a successful run, keep only the N newest of the date template of the target name
    /// (or of --output), tonight's included; remove the older ones
    #[arg(help_heading = "Dumps and archives", long, value_name = "N")]
    pub retain: Option<usize>,

    /// Render a date template in UTC instead of local time
    #[arg(help_heading = "Dumps and archives", long)]
    pub utc: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArguments {
    #[command(flatten)]
    pub source: SourceArguments,

    /// Target database (a URI, key=value pairs or service=NAME): postgres://user@host2:5432/Archive_DB
    #[arg(help_heading = "Connections", long, value_name = "URI")]
    pub target: Option<String>,

    #[command(flatten)]
    pub run: RunArguments,

    /// Compare a checksum of every table's rows too, not only the counts (reads every row on
    /// both servers)
    #[arg(help_heading = "Safety", long)]
    pub checksum: bool,

    /// With --checksum: compare only the columns both sides have (a refreshed target may have
    /// columns of its own), naming the ones left out; without it, tables whose columns differ
    /// are a difference
    #[arg(help_heading = "Safety", long, requires = "checksum")]
    pub common_columns: bool,

    /// text (default) or json
    #[arg(help_heading = "Output", long, value_name = "FORMAT", value_parser = PossibleValuesParser::new(["text", "json"]))]
    pub format: Option<String>,
}

impl VerifyArguments {
    /// The same comparison seen as a sync: the selection and the servers it would copy between.
    pub fn as_sync(&self) -> SyncArguments {
        // Every field named: a new one does not compile until it is carried over or left out here.
        let VerifyArguments {
            source,
            target,
            run,
            checksum,
            // Which columns --checksum hashes: the verify's own choice, not a sync's setting.
            common_columns: _,
            format: _,
        } = self;
        SyncArguments {
            source: source.clone(),
            target: TargetArguments {
                target: target.clone(),
                ..TargetArguments::default()
            },
            run: run.clone(),
            verify: Some(if *checksum { "checksum" } else { "count" }.to_string()),
            ..SyncArguments::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MergeArguments {
    #[command(flatten)]
    pub source: SourceArguments,

    /// Target database (a URI, key=value pairs or service=NAME): postgres://user@host2:5432/Central_DB (it must exist)
    #[arg(help_heading = "Connections", long, value_name = "URI")]
    pub target: Option<String>,

    /// Write into the target without asking
    #[arg(help_heading = "Safety", long, short = 'y')]
    pub yes: bool,

    #[command(flatten)]
    pub run: RunArguments,

    /// Show the merge's plan (order, keys remapped, natural keys) and stop
    #[arg(help_heading = "Safety", long)]
    pub dry_run: bool,

    /// Write the ID mapping of the merged tables as JSON: {"table": {"old": new, …}}
    #[arg(help_heading = "What to copy", long, value_name = "FILE")]
    pub id_map: Option<PathBuf>,
}

impl MergeArguments {
    /// The same run seen as a sync: the selection, the servers and the settings it shares.
    pub fn as_sync(&self) -> SyncArguments {
        // Every field named: a new one does not compile until it is carried over or left out here
        // (the ID map is taken by `settings::resolve_merge`).
        let MergeArguments {
            source,
            target,
            yes,
            run,
            dry_run,
            id_map: _,
        } = self;
        SyncArguments {
            source: source.clone(),
            target: TargetArguments {
                target: target.clone(),
                yes: *yes,
                ..TargetArguments::default()
            },
            run: run.clone(),
            dry_run: *dry_run,
            ..SyncArguments::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArguments {
    #[command(flatten)]
    pub source: SourceArguments,

    #[command(flatten)]
    pub target: TargetArguments,

    #[command(flatten)]
    pub run: RunArguments,

    /// Directory in which the temporary dump directory is created [default: .]
    #[arg(help_heading = "Dumps and archives", long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,

    /// Cut over as soon as the target is at most SIZE of WAL behind the source (0, 512kB, 16MB);
    /// without it, dbsync follows until `dbsync migrate --cutover` is run for the same pair
    #[arg(help_heading = "Migration", long, value_name = "SIZE")]
    pub cutover_when_lag_below: Option<String>,

    /// Cut over the migration that is following for this source and target (from another shell,
    /// or after the dbsync that followed was stopped)
    #[arg(help_heading = "Migration", long, conflicts_with_all = ["abandon", "cutover_when_lag_below"])]
    pub cutover: bool,

    /// Remove what a migration of this source and target left (its subscription, replication slot
    /// and publication), saying first how much WAL the slot holds back
    #[arg(help_heading = "Migration", long)]
    pub abandon: bool,

    /// Store the source's password in the subscription's connection string (in the target's
    /// catalog, readable by its superusers); without it the target server must log in to the
    /// source without one (a password file for its server's user, or trust for its address)
    #[arg(help_heading = "Migration", long)]
    pub subscription_password: bool,

    /// Give tables without a primary key REPLICA IDENTITY FULL on the source (changes the source)
    /// instead of refusing them
    #[arg(help_heading = "Migration", long)]
    pub replica_identity_full: bool,

    /// Do not compare every table by checksum after the cut-over
    #[arg(help_heading = "Migration", long)]
    pub no_verify: bool,

    /// At the cut-over, stop the writes to the source database yourself: make it read-only
    /// (default_transaction_read_only) and end its other sessions; it stays read-only once cut
    /// over, and is writable again if the cut-over fails
    #[arg(help_heading = "Migration", long, conflicts_with = "abandon")]
    pub stop_writes: bool,
}

impl MigrateArguments {
    /// The same run seen as a sync: the selection, the servers and the copy's settings.
    pub fn as_sync(&self) -> SyncArguments {
        // Every field named: a new one does not compile until it is carried over or left out here
        // (the migration's own are taken by `settings::resolve_migrate`).
        let MigrateArguments {
            source,
            target,
            run,
            dump_dir,
            cutover_when_lag_below: _,
            cutover: _,
            abandon: _,
            subscription_password: _,
            replica_identity_full: _,
            no_verify: _,
            stop_writes: _,
        } = self;
        SyncArguments {
            source: source.clone(),
            target: target.clone(),
            run: run.clone(),
            dump_dir: dump_dir.clone(),
            ..SyncArguments::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DiffArguments {
    /// Source database: a URI (postgres://user@host:5432/Main_DB), key=value pairs
    /// ("host=prod dbname=Main_DB") or service=NAME
    #[arg(help_heading = "Connections", long, value_name = "URI")]
    pub source: Option<String>,

    /// Target database (a URI, key=value pairs or service=NAME): postgres://user@host2:5432/Archive_DB
    #[arg(help_heading = "Connections", long, value_name = "URI")]
    pub target: Option<String>,

    /// Configuration file whose [source] and [target] urls are used when the flags are not given
    #[arg(help_heading = "Connections", long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// text (default) or json
    #[arg(help_heading = "Output", long, value_name = "FORMAT", value_parser = PossibleValuesParser::new(["text", "json"]))]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ArchivesArguments {
    /// Target URI whose database name has a date template: postgres://user@host/Archive_{date}
    #[arg(help_heading = "Connections", long, value_name = "URI")]
    pub target: Option<String>,

    /// Configuration file whose [target] url is used when --target is not given
    #[arg(help_heading = "Connections", long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A `--flag` / `--no-flag` pair as clap leaves it: whichever came last is set.
pub fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}
