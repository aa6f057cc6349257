//! The command line, as clap sees it. Values here are raw: `settings` resolves them against the
//! config file, the environment and the defaults.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dbsync",
    version,
    about = "Copy a PostgreSQL database to another server: consistent, complete, safe"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy the source database into the target database (replacing it once the copy is complete).
    Sync(Box<SyncArguments>),
    /// Write the source database to an archive directory (schema, data, manifest) from one snapshot.
    Dump(Box<DumpArguments>),
    /// List the databases of a dated target (--target …/Archive_{date}) with their dates and sizes.
    Archives(ArchivesArguments),
}

#[derive(Debug, Clone, Args)]
pub struct DumpArguments {
    /// Source database URI: postgres://user@host:5432/Main_DB
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// The archive directory to write; it must not exist. May end in a date template:
    /// /backups/Main_DB_{date}
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,

    /// Configuration file with table groups and settings (see core_tables.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Dump data only for tables matching these comma-separated wildcard patterns
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub include: Vec<String>,

    /// Dump no data for tables matching these comma-separated wildcard patterns
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// How many sessions may dump at once [default: number of CPUs]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,

    /// How many times a transient failure is retried [default: 3]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Directory holding pg_dump and pg_restore to use instead of searching for them
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// Write a JSON report of the run to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// One plain line per event even on a terminal (no progress bars, no colour)
    #[arg(long)]
    pub plain: bool,

    /// How long to wait for the locks on the source's tables before giving up [default: 600]
    #[arg(long, value_name = "SECONDS")]
    pub lock_timeout: Option<u64>,

    /// In plain output, how often a long-running table gets a progress line [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,

    /// After a successful dump, keep only the N newest archives of the --output date template
    #[arg(long, value_name = "N")]
    pub retain: Option<usize>,

    /// Render the date template of --output in UTC instead of local time
    #[arg(long)]
    pub utc: bool,
}

impl DumpArguments {
    /// The same run seen as a sync without a target: what dumping shares with syncing.
    pub fn as_sync(&self) -> SyncArguments {
        SyncArguments {
            source: self.source.clone(),
            target: None,
            config: self.config.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            jobs: self.jobs,
            retries: self.retries,
            dump_dir: None,
            keep_dumps: false,
            no_keep_dumps: false,
            stream: false,
            no_stream: false,
            analyze: false,
            no_analyze: false,
            no_terminate: false,
            yes: false,
            no_owner: false,
            owner: false,
            no_tablespaces: false,
            no_privileges: false,
            privileges: false,
            foreign_keys: None,
            pg_bin: self.pg_bin.clone(),
            report: self.report.clone(),
            plain: self.plain,
            lock_timeout: self.lock_timeout,
            progress_every: self.progress_every,
            retain: self.retain,
            utc: self.utc,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ArchivesArguments {
    /// Target URI whose database name has a date template: postgres://user@host/Archive_{date}
    #[arg(long, value_name = "URI")]
    pub target: Option<String>,

    /// Configuration file whose [target] url is used when --target is not given
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SyncArguments {
    /// Source database URI: postgres://user@host:5432/Main_DB
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// Target database URI: postgres://user@host2:5432/Archive_DB
    #[arg(long, value_name = "URI")]
    pub target: Option<String>,

    /// Configuration file with table groups and settings (see core_tables.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Copy data only for tables matching these comma-separated wildcard patterns (user_*,billing.*)
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub include: Vec<String>,

    /// Copy no data for tables matching these comma-separated wildcard patterns
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// How many server sessions may do copy work at once: dumps, loads, index builds, vacuums
    /// [default: number of CPUs]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,

    /// How many times a transient failure is retried [default: 3]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Directory in which the temporary dump directory is created [default: .]
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,

    /// Keep the dump files after the run
    #[arg(long, overrides_with = "no_keep_dumps")]
    pub keep_dumps: bool,

    /// Remove the dump files (overrides keep_dumps in a config file)
    #[arg(long, overrides_with = "keep_dumps")]
    pub no_keep_dumps: bool,

    /// Pipe each unit from pg_dump straight into pg_restore: no dump files on disk
    #[arg(long, conflicts_with = "keep_dumps", overrides_with = "no_stream")]
    pub stream: bool,

    /// Write dump files (overrides stream in a config file)
    #[arg(long, overrides_with = "stream")]
    pub no_stream: bool,

    /// ANALYZE each table once it is loaded, so the copy has planner statistics at once
    #[arg(long, overrides_with = "no_analyze")]
    pub analyze: bool,

    /// Leave statistics to autovacuum (overrides analyze in a config file)
    #[arg(long, overrides_with = "analyze")]
    pub no_analyze: bool,

    /// Fail instead of ending the sessions connected to the previous target at the swap
    #[arg(long)]
    pub no_terminate: bool,

    /// Replace an existing target database without asking
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Do not restore object ownership (objects belong to the target user)
    #[arg(long, overrides_with = "owner")]
    pub no_owner: bool,

    /// Restore object ownership (the default; overrides no_owner in a config file)
    #[arg(long, overrides_with = "no_owner")]
    pub owner: bool,

    /// Put every object in the target's default tablespace (for tablespaces it does not have)
    #[arg(long)]
    pub no_tablespaces: bool,

    /// Do not restore grants (GRANT/REVOKE)
    #[arg(long, overrides_with = "privileges")]
    pub no_privileges: bool,

    /// Restore grants (the default; overrides no_privileges in a config file)
    #[arg(long, overrides_with = "no_privileges")]
    pub privileges: bool,

    /// What to do with a foreign key from a copied table to a table whose data is not copied:
    /// not-valid (create it NOT VALID), skip (leave it out), include-parent (copy the referenced
    /// tables' data too)
    #[arg(long, value_name = "POLICY", value_parser = PossibleValuesParser::new(["not-valid", "skip", "include-parent"]))]
    pub foreign_keys: Option<String>,

    /// Directory holding pg_dump and pg_restore to use instead of searching for them
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// Write a JSON report of the run to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// One plain line per event even on a terminal (no progress bars, no colour)
    #[arg(long)]
    pub plain: bool,

    /// How long to wait for the locks on the source's tables before giving up [default: 600]
    #[arg(long, value_name = "SECONDS")]
    pub lock_timeout: Option<u64>,

    /// In plain output, how often a long-running table gets a progress line [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,

    /// After a successful run, keep only the N newest databases of the target's date template
    /// (e.g. --target …/Archive_{date}), tonight's included; drop the older ones
    #[arg(long, value_name = "N")]
    pub retain: Option<usize>,

    /// Render the date template of the target name in UTC instead of local time
    #[arg(long)]
    pub utc: bool,
}

/// A `--flag` / `--no-flag` pair as clap leaves it: whichever came last is set.
pub fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}
