//! The words: how each typed value of an event reads, shared by the plain and terminal reporters
//! and the JSON report's warnings.

use std::fmt;
use std::time::Duration;

use super::{KeyFate, Notice, Phase, ProgressReport, RowCheck, Summary, TableLine, TableProgress, Warning};
use crate::errors::{SyncError, signal_name};

/// `du -h`-like sizes: 512B, 8.0K, 2.4M, 15.2G.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{}h{:02}m{:02}s", seconds / 3600, (seconds % 3600) / 60, seconds % 60)
    }
}

/// 1234567 → 1.2M; row counts read like sizes without the bytes.
fn human_count(count: u64) -> String {
    match count {
        0..=9_999 => count.to_string(),
        10_000..=999_999 => format!("{:.1}k", count as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", count as f64 / 1e6),
        _ => format!("{:.1}G", count as f64 / 1e9),
    }
}

impl Phase {
    pub fn number(self) -> u8 {
        match self {
            Phase::Schema => 1,
            Phase::Data => 2,
            Phase::PostData => 3,
            Phase::Validation => 4,
            Phase::RefreshSchema => 1,
            Phase::RefreshData => 2,
            Phase::RefreshValidation => 3,
            Phase::DumpSchema => 1,
            Phase::DumpData => 2,
            Phase::DumpCounts => 3,
            Phase::Clone => 1,
            Phase::CloneValidation => 2,
            Phase::Follow => 1,
            Phase::Cutover => 2,
        }
    }

    pub fn total(self) -> u8 {
        match self {
            Phase::Schema | Phase::Data | Phase::PostData | Phase::Validation => 4,
            Phase::DumpSchema | Phase::DumpData | Phase::DumpCounts => 3,
            Phase::RefreshSchema | Phase::RefreshData | Phase::RefreshValidation => 3,
            Phase::Clone | Phase::CloneValidation | Phase::Follow | Phase::Cutover => 2,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Phase::Schema => "Schema Synchronization",
            Phase::Data => "Data Export and Import",
            Phase::PostData => "Constraints, Triggers and Views",
            Phase::Validation => "Validation",
            Phase::RefreshSchema => "Target Schema",
            Phase::RefreshData => "Rows, One Transaction per Table",
            Phase::RefreshValidation => "Validation",
            Phase::DumpSchema => "Schema Dump",
            Phase::DumpData => "Data Export",
            Phase::DumpCounts => "Row Counts and Manifest",
            Phase::Clone => "Same-Server Clone",
            Phase::CloneValidation => "Validation",
            Phase::Follow => "Following the Source (logical replication)",
            Phase::Cutover => "Cut-over",
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::SchemaOnly => formatter.write_str("Copying the schema only: every object, no rows"),
            Notice::SchemaFix { statement, run: true } => write!(formatter, "Fixing the schema: {statement}"),
            Notice::SchemaFix { statement, run: false } => write!(formatter, "Would run: {statement}"),
            Notice::SchemaFits { tables, members } if members == tables => {
                write!(formatter, "The target's schema fits the {tables} table(s) to write")
            }
            Notice::SchemaFits { tables, members } => write!(
                formatter,
                "The target's schema fits the {tables} table(s) to write ({members} counting each partition and inheritance child)"
            ),
            Notice::DryRunDone => formatter.write_str("Dry run: nothing was changed"),
            Notice::TableMasked { table, columns } => write!(
                formatter,
                "Masking {table}: {} read through their transforms on the source",
                columns.join(", ")
            ),
            Notice::TableSplit {
                table,
                parts,
                key,
                boundaries,
                binary,
            } => {
                let at: Vec<String> = boundaries.iter().map(i64::to_string).collect();
                let format = if *binary { "binary" } else { "text" };
                let by = match key.as_str() {
                    "ctid" => "block (ctid)".to_string(),
                    key => key.to_string(),
                };
                write!(
                    formatter,
                    "Copying {table} in {parts} parts at once, split by {by} at {} ({format} format)",
                    at.join(", ")
                )
            }
            Notice::CopyingRole { statement } => write!(formatter, "Copying a role: {statement}"),
            Notice::HookDone {
                stage,
                hook,
                elapsed,
                output,
            } => {
                write!(formatter, "Hook {stage}: {hook} done in {}", human_duration(*elapsed))?;
                for line in output.lines() {
                    write!(formatter, "\n  {line}")?;
                }
                Ok(())
            }
            Notice::RefreshValidated { tables, rows } => write!(
                formatter,
                "✅ Validation Successful. All {tables} refreshed tables match the source's snapshot by {}.",
                if *rows == RowCheck::Checksums {
                    "row counts and checksums"
                } else {
                    "row counts"
                }
            ),
            Notice::WouldChange { table, how } => match how {
                super::IncrementalHow::ChangedSince { column, since } => {
                    write!(
                        formatter,
                        "{table}: would read the rows whose {column} is at least {since}"
                    )
                }
                super::IncrementalHow::KeyRanges { reason } => write!(
                    formatter,
                    "{table}: would compare key ranges ({})",
                    match reason {
                        super::KeyRangeReason::NoChangeColumn => "no change column",
                        super::KeyRangeReason::Deep => "--deep",
                        super::KeyRangeReason::NoWatermark => "no watermark yet",
                    }
                ),
                super::IncrementalHow::Replaced => {
                    write!(formatter, "{table}: would replace every row (no primary key)")
                }
            },
            Notice::TableChanged { table, changes } => {
                write!(
                    formatter,
                    "{table}: {} inserted, {} updated, {} deleted",
                    changes.inserted, changes.updated, changes.deleted
                )?;
                if let Some(unchanged) = changes.unchanged {
                    write!(formatter, ", {unchanged} unchanged")?;
                }
                let method = match changes.method {
                    "change-column" => "rows changed since the last run",
                    "key-ranges" => "key ranges compared",
                    _ => "no primary key: replaced whole",
                };
                write!(formatter, "; {} read ({method})", human_size(changes.bytes_read))?;
                if let Some(watermark) = &changes.distrusted_watermark {
                    write!(
                        formatter,
                        "; its watermark {watermark} lay in the source's future (a source restored from a backup, \
                         or its clock set back), so key ranges were compared instead"
                    )?;
                }
                Ok(())
            }
            Notice::SourceName {
                name,
                identity: Some(identity),
                state,
                section,
            } => write!(
                formatter,
                "The {state} know this source as {name} (server and database {identity}): a later run finds them by \
                 that identity, however the URI is spelled ([{section}] source names it)"
            ),
            Notice::SourceName {
                name,
                identity: None,
                state,
                section,
            } => write!(
                formatter,
                "The {state} know this source as {name}: this role may not read the server's identity, so a later run \
                 finds them only under the same name ([{section}] source sets one)"
            ),
            Notice::WouldMerge(preview) => {
                write!(formatter, "{}: ", preview.table)?;
                match &preview.new_keys {
                    Some(keys) => write!(formatter, "new keys {keys}")?,
                    None => write!(formatter, "keys kept")?,
                }
                if !preview.remapped.is_empty() {
                    write!(formatter, "; remapped {}", preview.remapped.join(", "))?;
                }
                match preview.natural_key.is_empty() {
                    true => write!(formatter, "; no natural key: every row new")?,
                    false => write!(
                        formatter,
                        "; natural key ({}), a match is {}",
                        preview.natural_key.join(", "),
                        if preview.update { "updated" } else { "skipped" }
                    )?,
                }
                if !preview.cycle.is_empty() {
                    write!(
                        formatter,
                        "; one transaction with {} (a cycle)",
                        preview.cycle.join(", ")
                    )?;
                }
                Ok(())
            }
            Notice::TableMerged { table, counts } => write!(
                formatter,
                "{table}: {} inserted, {} matched by natural key, {} updated, {} merged before; {} read",
                counts.inserted,
                counts.matched,
                counts.updated,
                counts.merged_before,
                human_size(counts.bytes_read)
            ),
            Notice::MergeValidated { tables, references } => write!(
                formatter,
                "✅ Validation Successful. The {references} foreign-key column(s) of the {tables} merged tables point at existing rows."
            ),
            Notice::IdMapWritten { path, keys } => write!(formatter, "Wrote the ID map ({keys} key(s)) to {path}"),
            Notice::Migration(news) => news.fmt(formatter),
            Notice::SequencesSet { count } => write!(formatter, "Set {count} sequence(s) to the source's values"),
            Notice::SelectedTables { count } => {
                write!(
                    formatter,
                    "Copying data of {count} selected table(s); the schema is copied whole"
                )
            }
            Notice::Locking { tables } => write!(
                formatter,
                "Locking {tables} table(s) and exporting a snapshot of the source..."
            ),
            Notice::Cloning {
                source,
                temporary,
                target,
                method,
            } => write!(
                formatter,
                "Creating database {temporary} as a file {method} of {source} on the same server (becomes {target} when validated)"
            ),
            Notice::SubsetChosen { rows, tables, rounds } => write!(
                formatter,
                "Subset: {rows} row(s) of {tables} table(s) chosen, after {rounds} round(s) of foreign keys followed"
            ),
            Notice::NotCloning { reason } => {
                write!(formatter, "Not cloning ({reason}): making a logical copy instead")
            }
            Notice::CreatingDatabase { temporary, target } => {
                write!(
                    formatter,
                    "Creating database {temporary} (becomes {target} when complete)"
                )
            }
            Notice::SyncingSchema => formatter.write_str("Syncing schema (types, tables, functions, sequences)..."),
            Notice::DumpingSchema => formatter.write_str("Dumping schema (types, tables, functions, sequences)..."),
            Notice::RestoringSchema => {
                formatter.write_str("Restoring schema from the archive (types, tables, functions, sequences)...")
            }
            Notice::ArchiveWritten { path, tables } => write!(
                formatter,
                "Archive complete: {path} ({tables} table(s) counted in the snapshot, every file checksummed in manifest.json)"
            ),
            Notice::BuildingPostData => {
                formatter.write_str("Building foreign keys and triggers; refreshing materialized views...")
            }
            Notice::PostDataDone { elapsed } => write!(formatter, "Post-data done in {}", human_duration(*elapsed)),
            Notice::StatisticsCarried { tables, elapsed } => write!(
                formatter,
                "Planner statistics of {tables} table(s) carried over from the source in {}: the copy is planned like the source at once",
                human_duration(*elapsed)
            ),
            Notice::ValidationPassed { tables, rows } => {
                let how = match rows {
                    RowCheck::Counts => "match by row counts",
                    RowCheck::Checksums => "match by row counts and checksums",
                    RowCheck::NotCompared => {
                        "have every index, constraint and trigger (rows not compared: --verify none)"
                    }
                };
                if *tables == 0 {
                    write!(
                        formatter,
                        "✅ Validation Successful. Every index, constraint and trigger of the source is on the copy (no rows copied)."
                    )
                } else if *rows == RowCheck::NotCompared {
                    write!(formatter, "✅ Validation Successful. All {tables} tables {how}.")
                } else {
                    write!(
                        formatter,
                        "✅ Validation Successful. All {tables} tables {how}, with every index, constraint and trigger."
                    )
                }
            }
            Notice::Swapping { temporary, target } => write!(formatter, "Swapping {temporary} into place as {target}"),
            Notice::DroppingUnfinished { database } => write!(formatter, "Dropping the unfinished copy {database}"),
            Notice::KeepingDumps { path } => write!(formatter, "Keeping the dump directory: {path}"),
            Notice::RemovingDumps { path } => write!(formatter, "Removing temporary directory: {path}"),
            Notice::EndedSessions { database, count, who } => write!(
                formatter,
                "Ended {count} session(s) on the previous {database} to swap it out: {who}"
            ),
            Notice::ResumingCopy { database } => write!(
                formatter,
                "Resuming in {database}, the unfinished copy the failed run kept"
            ),
            Notice::ResumeWith { copy, command } => match copy {
                Some(copy) => write!(
                    formatter,
                    "Kept the unfinished copy {copy} and the dumps; to continue where this run stopped: {command}"
                ),
                None => write!(
                    formatter,
                    "Kept the dumps; to continue where this run stopped: {command}"
                ),
            },
            Notice::DroppedArchive { name, date } => {
                write!(formatter, "Dropped {name}, an archive of {date} beyond --retain")
            }
            Notice::KeptArchives { retain, template, kept } => write!(
                formatter,
                "--retain {retain}: keeping {} archive(s) of {template}: {}",
                kept.len(),
                kept.join(", ")
            ),
            Notice::RemovedLeftover(super::Leftover::Copy(name)) => {
                write!(formatter, "Dropped {name}, an unfinished copy left by a run that died")
            }
            Notice::RemovedLeftover(super::Leftover::DumpDirectory(path)) => {
                write!(formatter, "Removed {path}, a dump directory left by a run that died")
            }
            Notice::RemovedLeftover(super::Leftover::PreviousTargetRenamedBack { from, to }) => write!(
                formatter,
                "Renamed {from} back to {to}: a run that died during its swap had renamed it aside"
            ),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ForeignKey { key, fate } => {
                let about = format!(
                    "foreign key {} on {} references {}",
                    key.name, key.table, key.referenced_table
                );
                match fate {
                    KeyFate::WillFollow(policy) => {
                        write!(formatter, "{about}, whose data is not selected; policy: {policy}")
                    }
                    KeyFate::LeftOut => {
                        write!(
                            formatter,
                            "{about}, whose data is not copied: left out (--foreign-keys skip)"
                        )
                    }
                    KeyFate::LeftOutPartitioned => write!(
                        formatter,
                        "{about}, whose data is not copied: left out, because NOT VALID is not possible on a partitioned table"
                    ),
                    KeyFate::CreatedNotValid => write!(
                        formatter,
                        "{about}, whose data is not copied: created NOT VALID (existing rows are not checked)"
                    ),
                }
            }
            Warning::Retrying {
                step,
                attempt,
                delay,
                error,
            } => write!(formatter, "{step}: {}", retry_text(*attempt, *delay, error)),
            Warning::DefinitionsNotCopied { tables } => write!(
                formatter,
                "the source user may not read {} (so pg_dump cannot lock them): they are left out of the copy, definitions included",
                tables.join(", ")
            ),
            Warning::DumpSpaceShort {
                directory,
                free,
                needed,
            } => write!(
                formatter,
                "{directory} has {} free, and the tables to copy take {} on the source: dumps are removed as soon as they are loaded, but a slow target lets them pile up; --stream needs no room for dumps",
                human_size(*free),
                human_size(*needed)
            ),
            Warning::SnapshotLost { copy, of } => write!(
                formatter,
                "the source session holding the snapshot ended (the source server restarted?): what was copied from it cannot be kept; starting the copy again from a new snapshot (copy {copy} of at most {of})"
            ),
            Warning::NoTableData => formatter.write_str(
                "the selection leaves no table whose data would be copied: only the schema (and sequences) will be",
            ),
            Warning::JobsLowered { wanted, allowed, free } => write!(
                formatter,
                "--jobs {wanted} lowered to {allowed}: the servers can spare {free} connection slots, and other clients need theirs too"
            ),
            Warning::WaitingForLock { table, holders, waited } => write!(
                formatter,
                "waiting {} for a lock on {table} on the source, held by {} (dbsync gives up after --lock-timeout)",
                human_duration(*waited),
                if holders.is_empty() {
                    "a session that is ending".to_string()
                } else {
                    holders.join(", ")
                }
            ),
            Warning::PreviousTargetKept { name } => write!(
                formatter,
                "{name} is a previous target that a run which died during its swap had renamed aside; the target name is taken again, so it is kept: drop it when it is no longer needed"
            ),
            Warning::Other(text) => formatter.write_str(text),
        }
    }
}

impl fmt::Display for super::StructureDifference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::{ObjectKind, Problem};
        let kind = match self.kind {
            ObjectKind::Index => "index",
            ObjectKind::Constraint => "constraint",
            ObjectKind::Trigger => "trigger",
        };
        let problem = match self.problem {
            Problem::MissingOnCopy => "is missing on the copy",
            Problem::OnlyOnCopy => "exists on the copy but not on the source",
            Problem::InvalidOnCopy => {
                "is invalid on the copy (valid on the source): not used, and not enforced if unique"
            }
            Problem::NotValidatedOnCopy => "is not validated on the copy (validated on the source)",
        };
        write!(formatter, "{kind} {} on {} {problem}", self.name, self.table)
    }
}

/// The one way a retry reads, for tables and for whole steps.
fn retry_text(attempt: u32, delay: Duration, error: &str) -> String {
    format!(
        "attempt {attempt} failed, retrying in {:.1}s: {error}",
        delay.as_secs_f64()
    )
}

/// The old script's DETAIL column.
pub fn table_detail(line: &TableLine) -> String {
    match line {
        TableLine::Started { description } => description.clone(),
        TableLine::Restoring => "Restoring data...".to_string(),
        TableLine::Indexing { entries } => format!("{entries} index(es) and key constraint(s)"),
        TableLine::Exported {
            description,
            bytes,
            elapsed,
        } => format!(
            "{description}, Size: {}, Time: {}",
            human_size(*bytes),
            human_duration(*elapsed)
        ),
        TableLine::Finished { elapsed } => format!("Time: {}", human_duration(*elapsed)),
        TableLine::Failed { error } => error.clone(),
        TableLine::Retrying { attempt, delay, error } => retry_text(*attempt, *delay, error),
    }
}

/// `120.3M of ~480.0M, 1.2M of ~5.0M rows, 45.1M/s, 1 of 4 parts done, ETA 8s`
pub fn progress_detail(progress: &TableProgress) -> String {
    if let Some(phase) = &progress.phase {
        // An index build scans the table's pages: its rows are not counted until it sorts them.
        let mut text = format!(
            "{phase}: {} of {}",
            human_size(progress.bytes),
            human_size(progress.estimated_bytes)
        );
        if let Some(eta) = progress.eta {
            text.push_str(&format!(", ETA {}", human_duration(eta)));
        }
        return text;
    }
    let mut text = format!(
        "{} of ~{}, {} rows",
        human_size(progress.bytes),
        human_size(progress.estimated_bytes),
        human_count(progress.rows)
    );
    if let Some(rows) = progress.estimated_rows {
        text.push_str(&format!(" of ~{}", human_count(rows)));
    }
    text.push_str(&format!(", {}/s", human_size(progress.rate as u64)));
    if let Some((done, parts)) = progress.parts {
        text.push_str(&format!(", {done} of {parts} parts done"));
    }
    if let Some(eta) = progress.eta {
        text.push_str(&format!(", ETA {}", human_duration(eta)));
    }
    text
}

/// `loaded 1.2G of ~4.8G, 45.1M/s, ETA 1m20s`
pub fn overall_detail(report: &ProgressReport) -> String {
    let mut text = format!(
        "loaded {} of ~{}, {}/s",
        human_size(report.loaded_bytes),
        human_size(report.estimated_bytes),
        human_size(report.rate as u64)
    );
    if let Some(eta) = report.eta {
        text.push_str(&format!(", ETA {}", human_duration(eta)));
    }
    text
}

/// The summary as a text table, shared by both text reporters.
pub fn summary_lines(summary: &Summary) -> Vec<String> {
    let width = summary
        .tables
        .iter()
        .map(|row| row.table.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 48);
    let mut lines = vec![format!(
        "{:<width$}  {:>12}  {:>12}  {:>8}  {:>8}  {:>8}  {}",
        "TABLE", "SOURCE ROWS", "TARGET ROWS", "SIZE", "EXPORT", "IMPORT", "RESULT"
    )];
    let count = |value: Option<i64>| value.map(|count| count.to_string()).unwrap_or_else(|| "-".into());
    for row in &summary.tables {
        let result = serde_json::to_value(row.result)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        lines.push(format!(
            "{:<width$}  {:>12}  {:>12}  {:>8}  {:>8}  {:>8}  {result}",
            row.table,
            count(row.source_rows),
            count(row.target_rows),
            human_size(row.dump_bytes),
            human_duration(Duration::from_secs_f64(row.export_seconds)),
            human_duration(Duration::from_secs_f64(row.import_seconds)),
        ));
    }
    lines.push(format!(
        "{} table(s), {} sequence(s), {} large object(s); total time {}; peak dump space {}, peak memory {}",
        summary.tables.len(),
        summary.sequences,
        summary.large_objects,
        human_duration(Duration::from_secs_f64(summary.total_seconds)),
        human_size(summary.peak_dump_bytes),
        human_size(summary.peak_memory_bytes)
    ));
    let phases: Vec<String> = summary
        .phases
        .iter()
        .map(|time| format!("{} {:.1}s", time.phase, time.seconds))
        .collect();
    if !phases.is_empty() {
        lines.push(format!("time by phase: {}", phases.join(", ")));
    }
    lines
}

/// Why the run ended, for its last line.
pub fn closing_line(result: &Result<(), SyncError>, kind: super::RunKind) -> String {
    match (result, kind) {
        (Ok(()), super::RunKind::Sync) => "✅ Sync finished successfully.".to_string(),
        (Ok(()), super::RunKind::Dump) => "✅ Dump finished successfully.".to_string(),
        (Ok(()), super::RunKind::Restore) => "✅ Restore finished successfully.".to_string(),
        (Ok(()), super::RunKind::Refresh) => "✅ Refresh finished successfully.".to_string(),
        (Ok(()), super::RunKind::Incremental) => "✅ Incremental sync finished successfully.".to_string(),
        (Ok(()), super::RunKind::Merge) => "✅ Merge finished successfully.".to_string(),
        (Ok(()), super::RunKind::Migrate) => {
            "✅ Migration finished: the target is cut over, and nothing of the replication is left.".to_string()
        }
        (Err(SyncError::Interrupted(signal)), super::RunKind::Migrate) => format!(
            "Interrupted by {}: the subscription, replication slot and publication were removed; the source is as it was.",
            signal_name(*signal)
        ),
        (Err(SyncError::Interrupted(signal)), super::RunKind::Merge) => format!(
            "Interrupted by {}: every table is merged or as it was (each in its own transaction); run the merge again to go on.",
            signal_name(*signal)
        ),
        (Err(SyncError::Interrupted(signal)), super::RunKind::Incremental) => format!(
            "Interrupted by {}: every table is at its old or its new state (each in its own transaction); the next run goes on from there.",
            signal_name(*signal)
        ),
        (Err(SyncError::Interrupted(signal)), super::RunKind::Refresh) => format!(
            "Interrupted by {}: every table is as it was or fully refreshed (each in its own transaction).",
            signal_name(*signal)
        ),
        (Err(SyncError::Interrupted(signal)), super::RunKind::Sync | super::RunKind::Restore) => format!(
            "Interrupted by {}: every child process was stopped and temporary files removed; the previous target is unchanged.",
            signal_name(*signal)
        ),
        (Err(SyncError::Interrupted(signal)), super::RunKind::Dump) => format!(
            "Interrupted by {}: every child process was stopped and the unfinished archive removed.",
            signal_name(*signal)
        ),
        (Err(error), _) => format!("{error:#}"),
    }
}

/// "15.18" from 150018.
fn version_text(number: i32) -> String {
    format!("{}.{}", number / 10000, number % 10000)
}

/// What `dbsync plan` prints.
pub fn plan_text(plan: &super::PlanReport) -> String {
    let mut lines = plan_servers(plan);
    lines.push(String::new());
    lines.extend(plan_tables(plan));
    lines.push(String::new());
    lines.push("ORDER (foreign keys: each table after the tables it references)".to_string());
    lines.push(format!("  {}", plan.foreign_key_order.join(", ")));
    for cycle in &plan.foreign_key_cycles {
        lines.push(format!("  cycle: {}", cycle.join(" ↔ ")));
    }
    lines.push(String::new());
    lines.extend(plan_units(plan));
    lines.push(String::new());
    let free = plan.dump_directory_free_bytes.map_or("unknown".to_string(), human_size);
    lines.push(format!(
        "DUMPS    about {} in {} ({free} free)",
        human_size(plan.estimated_dump_bytes),
        plan.dump_directory
    ));
    match &plan.clone {
        Some(clone) if clone.would_clone => lines.push(
            "CLONE    yes: the target server would copy the source's files (CREATE DATABASE … TEMPLATE)".to_string(),
        ),
        Some(clone) => lines.push(format!(
            "CLONE    no ({}): {}",
            clone.obstacle.as_deref().unwrap_or("?"),
            clone.otherwise
        )),
        None => {}
    }
    if !plan.warnings.is_empty() {
        lines.push(String::new());
        lines.push(format!("WARNINGS ({})", plan.warnings.len()));
        lines.extend(plan.warnings.iter().map(|warning| format!("  - {warning}")));
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The plan's SOURCE, TARGET and TOOLS lines.
fn plan_servers(plan: &super::PlanReport) -> Vec<String> {
    vec![
        format!(
            "SOURCE   {} (PostgreSQL {})",
            plan.source.endpoint,
            version_text(plan.source.version)
        ),
        format!(
            "TARGET   {} (PostgreSQL {}){}",
            plan.target.endpoint,
            version_text(plan.target.version),
            if plan.target_exists {
                ": exists, and would be replaced"
            } else {
                ": would be created"
            }
        ),
        format!(
            "TOOLS    {} and {}: {}",
            plan.pg_dump, plan.pg_restore, plan.tools_reason
        ),
    ]
}

/// The plan's TABLES: one line a table (and its masked columns), then the sequences and large
/// objects.
fn plan_tables(plan: &super::PlanReport) -> Vec<String> {
    let selection = if plan.whole_database {
        "every table"
    } else {
        "the selected tables"
    };
    let mut lines = vec![format!(
        "TABLES ({}, {selection}; the schema is copied whole)",
        plan.tables.len()
    )];
    let kinds: Vec<String> = plan
        .tables
        .iter()
        .map(|table| match table.kind.as_str() {
            "partitioned" => format!("partitioned, {} parts, {} levels", table.members, table.levels),
            "inheritance" => format!("inheritance, {} children", table.members),
            other => other.to_string(),
        })
        .collect();
    let width = plan
        .tables
        .iter()
        .map(|table| table.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let kind_width = kinds.iter().map(String::len).max().unwrap_or(4).max(4);
    lines.push(format!(
        "  {:<width$}  {:<kind_width$}  {:>12}  {:>9}",
        "TABLE", "KIND", "EST. ROWS", "SIZE"
    ));
    for (table, kind) in plan.tables.iter().zip(&kinds) {
        let rows = table.estimated_rows.map_or("?".to_string(), |rows| rows.to_string());
        lines.push(format!(
            "  {:<width$}  {kind:<kind_width$}  {rows:>12}  {:>9}",
            table.name,
            human_size(table.size_bytes.max(0) as u64)
        ));
        if !table.masked_columns.is_empty() {
            lines.push(format!("    masked: {}", table.masked_columns.join(", ")));
        }
        if let Some(subset) = &table.subset {
            lines.push(format!("    subset: {subset}"));
        }
    }
    lines.push(format!(
        "  {} sequence(s), {} large object(s)",
        plan.sequences, plan.large_objects
    ));
    lines
}

/// The plan's UNITS, then the tables a sync would copy in parts.
fn plan_units(plan: &super::PlanReport) -> Vec<String> {
    let mut lines = vec![format!("UNITS ({})", plan.units.len())];
    for unit in &plan.units {
        lines.push(format!(
            "  {:<12} {:>9}  {}",
            unit.label,
            human_size(unit.size_bytes.max(0) as u64),
            unit.tables.join(", ")
        ));
    }
    for split in &plan.split_tables {
        let by = match split.key.as_str() {
            "ctid" => "block ranges (ctid)".to_string(),
            key => format!("ranges of {key}"),
        };
        lines.push(format!(
            "  {:<12} {:>9}  {} out of its unit: about {} parts at once, by {by}",
            "in parts",
            human_size(split.size_bytes.max(0) as u64),
            split.table,
            split.parts
        ));
    }
    lines
}

/// What `dbsync verify` prints.
pub fn verify_text(verify: &super::VerifyReport) -> String {
    let mut text = format!("SOURCE   {}\nTARGET   {}\n", verify.source, verify.target);
    for warning in &verify.warnings {
        text.push_str(&format!("WARNING  {warning}\n"));
    }
    if verify.differences.is_empty() {
        text.push_str(&format!(
            "Equal: {} table(s) by their rows{}, {} sequence(s), the large objects.\n",
            verify.tables,
            if verify.checksums {
                " (counts and checksums)"
            } else {
                " (counts)"
            },
            verify.sequences
        ));
        return text;
    }
    text.push_str(&format!("{} difference(s):\n", verify.differences.len()));
    let width = verify
        .differences
        .iter()
        .map(|difference| difference.name.len())
        .max()
        .unwrap_or(0);
    for difference in &verify.differences {
        text.push_str(&format!(
            "  {:<13} {:<width$}  {}\n",
            difference.kind,
            difference.name,
            verify_difference_text(difference)
        ));
    }
    text
}

/// "100 rows (source) / 100 rows (target); checksums differ, first in id 1 to 63"
pub fn verify_difference_text(difference: &super::VerifyDifference) -> String {
    let mut text = format!("{} (source) / {} (target)", difference.source, difference.target);
    if let Some(detail) = &difference.detail {
        text.push_str(&format!("; {detail}"));
    }
    text
}

/// What `dbsync diff` prints.
pub fn diff_text(diff: &super::DiffReport) -> String {
    let mut text = format!("SOURCE   {}\nTARGET   {}\n", diff.source, diff.target);
    if diff.differences.is_empty() {
        text.push_str(&format!(
            "The schemas are equal ({} objects compared).\n",
            diff.compared
        ));
        return text;
    }
    text.push_str(&format!(
        "{} difference(s) in {} objects compared:\n",
        diff.differences.len(),
        diff.compared
    ));
    let width = diff
        .differences
        .iter()
        .map(|difference| difference.name.len())
        .max()
        .unwrap_or(0);
    // A function's definition spans lines: its first line tells which.
    let shown = |definition: &str| definition.lines().next().unwrap_or("").trim().to_string();
    for difference in &diff.differences {
        let what = match (&difference.source, &difference.target) {
            (Some(source), None) => format!("only on the source: {}", shown(source)),
            (None, Some(target)) => format!("only on the target: {}", shown(target)),
            (Some(source), Some(target)) if source.lines().count() > 1 || target.lines().count() > 1 => {
                "differs (definitions not shown: see --format json)".to_string()
            }
            (Some(source), Some(target)) => format!("differs: {source} (source) / {target} (target)"),
            (None, None) => String::new(),
        };
        text.push_str(&format!(
            "  {:<10} {:<width$}  {what}\n",
            difference.kind, difference.name
        ));
    }
    text
}

/// The table `dbsync archives` prints.
pub fn archive_listing(
    target: &crate::connection::Endpoint,
    template: &crate::dated::DatedName,
    archives: &[crate::archives::Archive],
) -> String {
    let server = format!("{}@{}:{}", target.user, target.host, target.port);
    let mut listing = format!("Archives of {} on {server}:\n", template.pattern());
    if archives.is_empty() {
        listing.push_str("none\n");
        return listing;
    }
    let width = archives
        .iter()
        .map(|archive| archive.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    listing.push_str(&format!("{:<width$}  {:<19}  {:>9}\n", "NAME", "DATE", "SIZE"));
    for archive in archives {
        let size = archive
            .bytes
            .map_or("?".to_string(), |bytes| human_size(bytes.max(0) as u64));
        listing.push_str(&format!(
            "{:<width$}  {:<19}  {size:>9}\n",
            archive.name,
            archive.date.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    let total: i64 = archives.iter().filter_map(|archive| archive.bytes).sum();
    listing.push_str(&format!(
        "{} archive(s), {} in all\n",
        archives.len(),
        human_size(total.max(0) as u64)
    ));
    listing
}

impl fmt::Display for super::LagReading {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.seconds.map_or_else(
            || "no replay lag reported yet".to_string(),
            |seconds| format!("replay lag {seconds:.1} s"),
        );
        write!(
            formatter,
            "the target is {} behind ({seconds}); {} row change(s) applied",
            human_size(self.bytes.max(0) as u64),
            self.rows
        )
    }
}

impl fmt::Display for super::MigrationNews {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::MigrationNews;
        match self {
            MigrationNews::SlotCreated {
                publication,
                slot,
                tables,
                position,
            } => write!(
                formatter,
                "Publication {publication} ({tables} table(s)) and replication slot {slot} created on the source at {position}: the copy is made from the slot's snapshot"
            ),
            MigrationNews::Subscribed {
                subscription,
                enter_cuts_over,
            } => write!(
                formatter,
                "Subscription {subscription} created on the target: applying the source's changes made since the copy's snapshot; {}",
                match enter_cuts_over {
                    true =>
                        "to cut over, stop the writes to the source, then press Enter here (or run dbsync migrate --cutover)",
                    false => "to cut over, stop the writes to the source, then run dbsync migrate --cutover",
                }
            ),
            MigrationNews::Lag(reading) => write!(formatter, "Following: {reading}"),
            MigrationNews::CuttingOver { reason } => write!(formatter, "Cutting over ({reason})"),
            MigrationNews::CaughtUp { position } => {
                write!(
                    formatter,
                    "The target applied every change up to the source's WAL position {position}"
                )
            }
            MigrationNews::WritesStopped { sessions } => write!(
                formatter,
                "Writes to the source stopped (--stop-writes): the database is read-only for new sessions, and {sessions} session(s) of it were ended"
            ),
            MigrationNews::SourceWrites {
                database,
                read_only: true,
            } => write!(
                formatter,
                "The source database stays read-only: the application writes to the target now (ALTER DATABASE {database} RESET default_transaction_read_only undoes it)"
            ),
            MigrationNews::SourceWrites { read_only: false, .. } => write!(
                formatter,
                "The cut-over did not complete: the source database is writable again"
            ),
            MigrationNews::SessionLost { server } => write!(
                formatter,
                "The {server} ended dbsync's session (a restart? a network cut?): waiting for it to come back; the subscription reconnects by itself"
            ),
            MigrationNews::Reconnected { server, seconds } => write!(
                formatter,
                "Reconnected to the {server} after {seconds:.1} s: following again"
            ),
            MigrationNews::Removed { what } => write!(formatter, "Removed {}", what.join(", ")),
            MigrationNews::LeftoversFound { slots, others } => {
                let slots: Vec<String> = slots
                    .iter()
                    .map(|(slot, retained)| {
                        format!(
                            "slot {slot} (holding back {} of WAL)",
                            human_size((*retained).max(0) as u64)
                        )
                    })
                    .collect();
                write!(
                    formatter,
                    "Removing what an earlier migration of this pair left: {}",
                    slots
                        .into_iter()
                        .chain(others.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            MigrationNews::IdentityFull { tables } => write!(
                formatter,
                "REPLICA IDENTITY FULL set on the source for the tables without a primary key: {}",
                tables.join(", ")
            ),
            MigrationNews::Downtime {
                seconds,
                verified,
                since_writes_stopped,
            } => write!(
                formatter,
                "Cut-over took {seconds:.1} s (from {} to the target {})",
                if *since_writes_stopped {
                    "the writes stopped"
                } else {
                    "its start"
                },
                if *verified { "verified" } else { "ready" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_the_old_script() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(8 * 1024), "8.0K");
        assert_eq!(human_size(15_938_355), "15.2M");
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn table_and_step_retries_read_the_same() {
        let delay = Duration::from_millis(1500);
        let table = table_detail(&TableLine::Retrying {
            attempt: 2,
            delay,
            error: "server closed the connection".into(),
        });
        let step = Warning::Retrying {
            step: "schema dump",
            attempt: 2,
            delay,
            error: "server closed the connection".into(),
        }
        .to_string();
        assert_eq!(
            table,
            "attempt 2 failed, retrying in 1.5s: server closed the connection"
        );
        assert_eq!(step, format!("schema dump: {table}"));
    }

    #[test]
    fn progress_reads_bytes_rows_rate_and_eta() {
        let progress = TableProgress {
            table: "pgbench_accounts".into(),
            activity: super::super::Activity::Import,
            bytes: 126_146_560,
            rows: 1_200_000,
            estimated_bytes: 503_316_480,
            estimated_rows: Some(5_000_000),
            rate: 47_290_777.0,
            eta: Some(Duration::from_secs(8)),
            phase: None,
            parts: None,
        };
        assert_eq!(
            progress_detail(&progress),
            "120.3M of ~480.0M, 1.2M rows of ~5.0M, 45.1M/s, ETA 8s"
        );
        let split = TableProgress {
            parts: Some((1, 4)),
            ..progress
        };
        assert_eq!(
            progress_detail(&split),
            "120.3M of ~480.0M, 1.2M rows of ~5.0M, 45.1M/s, 1 of 4 parts done, ETA 8s"
        );
    }
}
