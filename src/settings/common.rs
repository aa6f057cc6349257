//! The parts of resolving that every mode shares: where a run reads and writes, the counts, the
//! named choices, the table patterns, the transfer, the sizes, the config sections, the display.
//! Each takes the flag first, then the environment, then the config file, then the default.

use super::*;

pub(super) fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, SyncError> {
    value
        .trim()
        .parse()
        .map_err(|_| usage_error!("{name}={value:?} is not a valid number"))
}

/// `[incremental]` and `--batch-rows` (the flag first), each value checked.
pub(super) fn incremental_settings(
    config: &ConfigIncremental,
    batch_rows: Option<u64>,
) -> Result<IncrementalSettings, SyncError> {
    let defaults = IncrementalSettings::default();
    let batch_rows = batch_rows.or(config.batch_rows).unwrap_or(defaults.batch_rows);
    if batch_rows == 0 {
        return Err(usage_error!("--batch-rows must be at least 1"));
    }
    let change_column = config.change_column.clone().unwrap_or(defaults.change_column);
    for (place, column) in std::iter::once(("change_column", &change_column))
        .chain(config.tables.iter().map(|(table, column)| (table.as_str(), column)))
    {
        if column.trim() != column {
            return Err(usage_error!(
                "config file: [incremental] {place} = {column:?}: a column name without spaces around it"
            ));
        }
    }
    Ok(IncrementalSettings {
        batch_rows,
        change_column,
        tables: config.tables.clone(),
        fire_triggers: config.fire_triggers.clone(),
        lookback: Duration::from_secs(config.lookback_seconds.unwrap_or(0)),
        source: config.source.clone().filter(|name| !name.trim().is_empty()),
        ..defaults
    })
}

/// The clock a date template reads, once.
pub(super) fn now(utc: bool) -> chrono::NaiveDateTime {
    if utc {
        chrono::Utc::now().naive_utc()
    } else {
        chrono::Local::now().naive_local()
    }
}

/// The archive directory of a dump, its date template rendered (in the last component only).
pub(super) fn resolve_output(output: &Path, utc: bool) -> Result<(PathBuf, Option<DatedName>), SyncError> {
    let name = output
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| usage_error!("--output {} names no directory", output.display()))?;
    if output
        .parent()
        .is_some_and(|parent| parent.to_string_lossy().contains('{'))
    {
        return Err(usage_error!(
            "--output: a date template belongs in the last component of the path"
        ));
    }
    let template = DatedName::parse(&name).map_err(|error| usage_error!("--output: {error:#}"))?;
    let rendered = match &template {
        Some(template) => output.with_file_name(template.render(now(utc))),
        None => output.to_path_buf(),
    };
    Ok((rendered, template))
}

/// Where a run reads and writes, the date template of the name it writes, and how many of the
/// template's names it keeps.
pub(super) struct Located {
    pub(super) places: Places,
    pub(super) dated: Option<DatedName>,
    /// `--retain`: how many of the date template's databases or directories to keep.
    pub(super) retain: Option<usize>,
}

/// The run's places, as its mode has them: the source (unless a restore), the target (its date
/// template rendered once; unless a dump), the dump's output or the restore's archive.
pub(super) fn places_of(
    arguments: &SyncArguments,
    mode: &Mode,
    config: &ConfigFile,
    environment: &Environment,
) -> Result<Located, SyncError> {
    let utc = chosen(arguments.run.utc, false, config.options.utc);
    let defaults = endpoint_defaults(environment);
    let source = || -> Result<Endpoint, SyncError> {
        let flag = arguments.source.source.as_deref();
        Ok(resolve_endpoint(Side::Source, flag, config.source.as_ref(), environment, &defaults)?.0)
    };
    let target = || -> Result<(Endpoint, Option<DatedName>), SyncError> {
        let (mut target, template) = resolve_endpoint(
            Side::Target,
            arguments.target.target.as_deref(),
            config.target.as_ref(),
            environment,
            &defaults,
        )?;
        // Once, at the start: a run that crosses midnight keeps the name it began with.
        if let Some(template) = &template {
            target.dbname = template.render(now(utc));
        }
        Ok((target, template))
    };
    let (places, dated) = match mode {
        Mode::Restore { archive } => {
            let (target, template) = target()?;
            let archive = archive.to_path_buf();
            (Places::Restore { archive, target }, template)
        }
        Mode::Dump { output } => {
            let source = source()?;
            let (output, template) = resolve_output(output, utc)?;
            (Places::Dump { source, output }, template)
        }
        Mode::Sync | Mode::Verify | Mode::Merge { .. } => {
            let source = source()?;
            let (target, template) = target()?;
            (Places::Databases { source, target }, template)
        }
    };
    let retain = retain_of(arguments, &config.options, &places, &dated)?;
    check_names(&places, mode, config)?;
    Ok(Located { places, dated, retain })
}

/// `--retain`, which needs a date template to keep the newest of.
pub(super) fn retain_of(
    arguments: &SyncArguments,
    options: &ConfigOptions,
    places: &Places,
    dated: &Option<DatedName>,
) -> Result<Option<usize>, SyncError> {
    let retain = arguments.run.retain.or(options.retain);
    match (retain, dated) {
        (Some(_), None) => Err(usage_error!(
            "--retain keeps the newest of a date template, and the {} has none: write it as e.g. Archive_DB_{{date}}",
            match places {
                Places::Dump { .. } => "--output directory",
                Places::Databases { .. } | Places::Restore { .. } => "target name",
            }
        )),
        (Some(0), _) => Err(usage_error!("--retain must keep at least 1 (tonight's)")),
        (Some(_), Some(template)) => {
            template.check_distinct().map_err(|error| usage_error!("{error}"))?;
            Ok(retain)
        }
        _ => Ok(retain),
    }
}

/// `--jobs`, `--retries` and the old script's `BATCH_SIZE`: flag, variable, file, default.
pub(super) fn counts_of(
    arguments: &SyncArguments,
    options: &ConfigOptions,
    environment: &Environment,
) -> Result<(Jobs, u32, Option<usize>), SyncError> {
    let jobs = match (arguments.run.jobs, environment.get("PG_JOBS"), options.jobs) {
        (Some(jobs), _, _) => jobs,
        (None, Some(value), _) => parse_number("PG_JOBS", &value)?,
        (None, None, Some(jobs)) => jobs,
        (None, None, None) => std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(2),
    };
    let jobs = Jobs::new(jobs).ok_or_else(|| usage_error!("jobs must be at least 1"))?;
    let retries = match (arguments.run.retries, environment.get("RETRY_COUNT"), options.retries) {
        (Some(retries), _, _) => retries,
        (None, Some(value), _) => parse_number("RETRY_COUNT", &value)?,
        (None, None, Some(retries)) => retries,
        (None, None, None) => 3,
    };
    let batch_size = match (environment.get("BATCH_SIZE"), options.batch_size) {
        (Some(value), _) => Some(parse_number::<usize>("BATCH_SIZE", &value)?),
        (None, batch_size) => batch_size,
    };
    if batch_size == Some(0) {
        return Err(usage_error!("BATCH_SIZE must be at least 1"));
    }
    Ok((jobs, retries, batch_size))
}

/// `--foreign-keys`, `--verify` and `--clone`: the flag, else the file, else the default.
pub(super) fn policies_of(
    arguments: &SyncArguments,
    options: &ConfigOptions,
) -> Result<(ForeignKeyPolicy, Verification, CloneWhen), SyncError> {
    let foreign_keys = named_choice(
        "foreign_keys",
        arguments.foreign_keys.as_ref().or(options.foreign_keys.as_ref()),
        &ForeignKeyPolicy::NAMES,
        ForeignKeyPolicy::from_name,
        ForeignKeyPolicy::NotValid,
    )?;
    let verification = named_choice(
        "verify",
        arguments.verify.as_ref().or(options.verify.as_ref()),
        &Verification::NAMES,
        Verification::from_name,
        Verification::Count,
    )?;
    let clone = named_choice(
        "clone",
        arguments.clone.as_ref().or(options.clone.as_ref()),
        &CloneWhen::NAMES,
        CloneWhen::from_name,
        CloneWhen::Never,
    )?;
    Ok((foreign_keys, verification, clone))
}

/// A named choice (`--foreign-keys`, `--verify`): the flag, else the file, else `default`.
pub(super) fn named_choice<T>(
    key: &str,
    given: Option<&String>,
    names: &[&str],
    from_name: impl Fn(&str) -> Option<T>,
    default: T,
) -> Result<T, SyncError> {
    match given {
        Some(text) => from_name(text).ok_or_else(|| {
            usage_error!(
                "config file: {key} = {text:?} is not one of {}",
                names
                    .iter()
                    .map(|name| format!("\"{name}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        None => Ok(default),
    }
}

/// The table patterns: the file's groups, then `--include`; `[exclude]`, then `--exclude`. An
/// empty one is refused: it would match nothing, which is never what was meant.
pub(super) fn patterns_of(
    arguments: &SyncArguments,
    config: &ConfigFile,
) -> Result<(Vec<TablePattern>, Vec<TablePattern>), SyncError> {
    let pattern = |pattern: &str, origin: &str| TablePattern {
        pattern: pattern.trim().to_string(),
        origin: origin.to_string(),
    };
    let mut include = Vec::new();
    for (group, patterns) in &config.tables {
        let origin = format!("group \"{group}\"");
        include.extend(patterns.iter().map(|text| TablePattern {
            pattern: text.clone(),
            origin: origin.clone(),
        }));
    }
    include.extend(arguments.source.include.iter().map(|text| pattern(text, "--include")));
    let mut exclude: Vec<TablePattern> = config
        .exclude
        .tables
        .iter()
        .map(|text| TablePattern {
            pattern: text.clone(),
            origin: "[exclude] tables".into(),
        })
        .collect();
    exclude.extend(arguments.source.exclude.iter().map(|text| pattern(text, "--exclude")));
    if let Some(empty) = include
        .iter()
        .chain(&exclude)
        .find(|pattern| pattern.pattern.is_empty())
    {
        return Err(usage_error!(
            "an empty table pattern in {} matches nothing (to copy every table, give no pattern at all)",
            empty.origin
        ));
    }
    Ok((include, exclude))
}

/// Names dbsync must not write into (protected, templates, empty), and names PostgreSQL cannot
/// hold. `dbsync verify` only reads, so its target name is not refused.
pub(super) fn check_names(places: &Places, mode: &Mode, config: &ConfigFile) -> Result<(), SyncError> {
    if let Some(target) = places.target().filter(|_| !matches!(mode, Mode::Verify)) {
        crate::target::refuse_unsafe_target(&target.dbname, &config.protect).map_err(SyncError::Usage)?;
    }
    for (side, endpoint) in [("source", places.source()), ("target", places.target())] {
        let Some(endpoint) = endpoint else { continue };
        if endpoint.dbname.len() > 63 {
            return Err(usage_error!(
                "the {side} database name is {} bytes; PostgreSQL names are at most 63",
                endpoint.dbname.len()
            ));
        }
    }
    Ok(())
}

/// `--stream` / `--keep-dumps` (and `--resume`, which keeps its dumps), refused together, and how
/// what is kept is compressed.
pub(super) fn transfer_of(
    arguments: &SyncArguments,
    options: &ConfigOptions,
    verification: Verification,
    mode: &Mode,
) -> Result<(Transfer, Compression), SyncError> {
    // A resumed run keeps its dumps too: it may fail again, and its directory is an archive.
    let keep_dumps =
        arguments.resume.is_some() || chosen(arguments.keep_dumps, arguments.no_keep_dumps, options.keep_dumps);
    let stream = chosen(arguments.stream, arguments.no_stream, options.stream);
    let transfer = match (stream, keep_dumps) {
        (true, true) => {
            return Err(usage_error!(
                "--keep-dumps and --stream cannot both be on (keep_dumps and stream in a config file): a streamed run writes no data dumps to keep"
            ));
        }
        (true, false) => Transfer::Stream,
        (false, keep) => Transfer::Files { keep },
    };
    if verification == Verification::Skip && transfer == (Transfer::Files { keep: true }) {
        return Err(usage_error!(
            "--verify none cannot be used with --keep-dumps or --resume: a kept copy's manifest records the rows counted in its snapshot"
        ));
    }
    Ok((transfer, compression_of(arguments, options, mode, transfer)?))
}

/// `--compress` (then `compress` in the config file, then gzip): how kept dumps and archives are
/// compressed; none where nothing is kept (temporary dumps are read once, at once). Given on the
/// command line to a sync that keeps no dumps, it is refused rather than ignored.
fn compression_of(
    arguments: &SyncArguments,
    options: &ConfigOptions,
    mode: &Mode,
    transfer: Transfer,
) -> Result<Compression, SyncError> {
    let keeps = matches!(mode, Mode::Dump { .. }) || transfer == (Transfer::Files { keep: true });
    if arguments.compress.is_some() && !keeps {
        return Err(usage_error!(
            "--compress applies to what is kept: a dbsync dump, or a sync with --keep-dumps (a sync's temporary dumps are not compressed, which is faster)"
        ));
    }
    let (value, place) = match (&arguments.compress, &options.compress) {
        _ if !keeps => return Ok(crate::compression::NONE),
        (Some(value), _) => (value, "--compress"),
        (None, Some(value)) => (value, "config file: compress"),
        (None, None) => return Ok(crate::compression::DEFAULT),
    };
    value.parse().map_err(|error| usage_error!("{place}: {error}"))
}

/// `--lock-timeout` (seconds, at least 1), then the config file's, then 10 minutes.
pub(super) fn lock_timeout_of(arguments: &SyncArguments, options: &ConfigOptions) -> Duration {
    let seconds = arguments.source.lock_timeout.or(options.lock_timeout);
    Duration::from_secs(seconds.unwrap_or(600).max(1))
}

/// A `--flag` / `--no-flag` pair over the file's value: a flag, on or off, beats the file; the
/// file beats the default (off).
pub(super) fn chosen(on: bool, off: bool, file: Option<bool>) -> bool {
    switch(on, off).or(file).unwrap_or(false)
}

/// `--maintenance-memory`, `--split-larger-than` and `--stream-larger-than`.
pub(super) fn sizes_of(arguments: &SyncArguments, options: &ConfigOptions) -> Result<(u64, Splitting, u64), SyncError> {
    let maintenance_memory = match arguments
        .target
        .maintenance_memory
        .as_ref()
        .or(options.maintenance_memory.as_ref())
    {
        Some(text) => parse_size(text).ok_or_else(|| {
            usage_error!(
                "maintenance memory {text:?} is not a size: write it like 512MB or 1GB (0 leaves the server's setting)"
            )
        })?,
        None => DEFAULT_MAINTENANCE_MEMORY,
    };
    let splitting = match arguments
        .split_larger_than
        .as_ref()
        .or(options.split_larger_than.as_ref())
    {
        Some(text) if text.trim().eq_ignore_ascii_case("auto") => Splitting::Automatic,
        Some(text) => match parse_size(text) {
            Some(0) => Splitting::Never,
            Some(size) => Splitting::LargerThan(size),
            None => {
                return Err(usage_error!(
                    "--split-larger-than {text:?} is not a size: write it like 128MB or 1GB, auto (the default), or 0 (never split)"
                ));
            }
        },
        None => Splitting::Automatic,
    };
    let stream_larger_than = match arguments
        .stream_larger_than
        .as_ref()
        .or(options.stream_larger_than.as_ref())
    {
        Some(text) => parse_size(text).ok_or_else(|| {
            usage_error!("--stream-larger-than {text:?} is not a size: write it like 512MB or 1GB (0 never streams)")
        })?,
        None => DEFAULT_STREAM_LARGER_THAN,
    };
    Ok((maintenance_memory, splitting, stream_larger_than))
}

/// The sections that decide what a sync's content is: `[incremental]`, `[merge]`, `[subset]`.
pub(super) type ContentSections = (IncrementalSettings, MergeSettings, Option<crate::subset::Subset>);

/// The config file's sections that are checked as they are read: `[hooks]` (paths made absolute
/// against the file's directory), `[transform]` (with the salt), `[incremental]`, `[merge]`,
/// `[subset]`.
pub(super) fn sections_of(
    arguments: &SyncArguments,
    config: &ConfigFile,
    config_path: Option<&Path>,
    environment: &Environment,
) -> Result<(crate::hooks::Hooks, crate::masking::Masking, ContentSections), SyncError> {
    let config_directory = config_path.and_then(Path::parent).unwrap_or_else(|| Path::new("."));
    let hooks = config.hooks.clone().resolved(config_directory).map_err(|error| {
        usage_error!(
            "config file {}: {error}",
            config_path.unwrap_or(Path::new("?")).display()
        )
    })?;
    let masking =
        crate::masking::Masking::from_config(&config.transform, environment.get(crate::masking::SALT_VARIABLE))
            .map_err(|error| usage_error!("config file: {error}"))?;
    let incremental = incremental_settings(&config.incremental, arguments.batch_rows)?;
    let merge = MergeSettings {
        tables: config.merge.tables.clone(),
        fire_triggers: config.merge.fire_triggers.clone(),
        source: config.merge.source.clone().filter(|name| !name.trim().is_empty()),
        id_map: None,
    };
    let subset = config
        .subset
        .checked()
        .map_err(|error| usage_error!("config file: {error}"))?;
    Ok((hooks, masking, (incremental, merge, subset)))
}

/// How the run shows itself: decided here, from `--plain`, `TERM` and `NO_COLOR`, once.
pub(super) fn display_of(arguments: &SyncArguments, environment: &Environment) -> Result<Display, SyncError> {
    let progress_every = match arguments.run.progress_every {
        Some(0) => return Err(usage_error!("--progress-every must be at least 1 second")),
        Some(seconds) => Duration::from_secs(seconds),
        None => Duration::from_secs(30),
    };
    Ok(Display {
        terminal_allowed: !arguments.run.plain && environment.get("TERM").is_some_and(|term| term != "dumb"),
        colour: environment.get("NO_COLOR").is_none(),
        progress_every,
    })
}
