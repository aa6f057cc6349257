//! Events the engine emits and the reporters that render them: plain lines in the old script's
//! format (cron, CI), progress bars and colour on a terminal, and a JSON file. Only reporters
//! print.

pub mod json;
pub mod plain;
pub mod terminal;

use std::time::Duration;

use serde::Serialize;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    Started,
    Done,
    Failed,
    Retrying,
}

impl TableState {
    /// Padded like the old script's STATE column.
    pub fn tag(self) -> &'static str {
        match self {
            TableState::Started => "STARTED  ",
            TableState::Done => "DONE     ",
            TableState::Failed => "FAILED   ",
            TableState::Retrying => "RETRY    ",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Banner {
    pub source: String,
    pub target: String,
    pub start_time: String,
    pub dump_dir: String,
    pub jobs: usize,
    pub batch_size: Option<usize>,
    pub tables: usize,
    pub units: usize,
    pub tools: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub table: String,
    pub kind: String,
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
    pub dump_bytes: u64,
    pub export_seconds: f64,
    pub import_seconds: f64,
    pub result: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub source: String,
    pub target: String,
    pub started_at: String,
    pub total_seconds: f64,
    /// "success", "failed", "interrupted", "validation-failed"
    pub outcome: String,
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
}

#[derive(Debug, Clone)]
pub enum Event {
    Banner(Banner),
    Phase {
        number: u8,
        total: u8,
        title: String,
    },
    /// A header outside the numbered phases (FINAL CLEANUP).
    Heading(String),
    Info(String),
    Warning(String),
    Table {
        activity: Activity,
        state: TableState,
        table: String,
        detail: String,
    },
    /// For the overall progress bar: how many export and import steps there are in all.
    StepsPlanned(usize),
    StepFinished,
    Summary(Summary),
    Error(String),
}

pub trait Reporter: Send + Sync {
    fn emit(&self, event: Event);
}

pub fn phase_rule() -> String {
    "=".repeat(88)
}

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
        lines.push(format!(
            "{:<width$}  {:>12}  {:>12}  {:>8}  {:>8}  {:>8}  {}",
            row.table,
            count(row.source_rows),
            count(row.target_rows),
            human_size(row.dump_bytes),
            human_duration(Duration::from_secs_f64(row.export_seconds)),
            human_duration(Duration::from_secs_f64(row.import_seconds)),
            row.result
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
    lines
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
}
