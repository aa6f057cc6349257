//! One line per event in the old script's format, without control codes: for cron and CI logs.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::text::{overall_detail, progress_detail, table_detail, verify_difference_text};
use super::{Activity, Event, Reporter, RunKind, TableState, summary_lines};

pub struct PlainReporter {
    output: Mutex<Box<dyn Write + Send>>,
    /// At most one progress line per table in this time.
    progress_every: Duration,
    /// When each running table last had a line (its STARTED line or a progress line).
    last_line: Mutex<HashMap<(Activity, String), Instant>>,
}

impl PlainReporter {
    pub fn stdout(progress_every: Duration) -> PlainReporter {
        PlainReporter {
            output: Mutex::new(Box::new(std::io::stdout())),
            progress_every,
            last_line: Mutex::new(HashMap::new()),
        }
    }

    /// Progress lines for the tables that have been quiet for `progress_every`, so a cron log
    /// shows a long copy moving without a line per poll.
    fn progress_lines(&self, event: &Event) -> Vec<String> {
        let Event::Progress(report) = event else {
            return Vec::new();
        };
        let mut last_line = self.last_line.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut lines = Vec::new();
        for table in &report.tables {
            let key = (table.activity, table.table.clone());
            let quiet = last_line
                .get(&key)
                .is_none_or(|last| last.elapsed() >= self.progress_every);
            if quiet {
                last_line.insert(key, Instant::now());
                lines.push(progress_line(table.activity, &table.table, &progress_detail(table)));
            }
        }
        if !lines.is_empty() {
            lines.push(format!("[{}] [TOTAL ] [PROGRESS ] {}", clock(), overall_detail(report)));
        }
        lines
    }

    fn remember_table_lines(&self, event: &Event) {
        if let Event::Table {
            activity, table, line, ..
        } = event
        {
            let mut last_line = self.last_line.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let key = (*activity, table.clone());
            match line.state() {
                TableState::Started => {
                    last_line.insert(key, Instant::now());
                }
                TableState::Done | TableState::Failed => {
                    last_line.remove(&key);
                }
                TableState::Retrying => {}
            }
        }
    }
}

fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

fn progress_line(activity: Activity, table: &str, detail: &str) -> String {
    format!("[{}] [{}] [PROGRESS ] {table:<36} | {detail}", clock(), activity.tag())
}

fn state_tag(state: TableState) -> &'static str {
    match state {
        TableState::Started => "STARTED  ",
        TableState::Done => "DONE     ",
        TableState::Failed => "FAILED   ",
        TableState::Retrying => "RETRY    ",
    }
}

fn header(title: &str) -> Vec<String> {
    vec![
        String::new(),
        phase_rule(),
        format!("#  {title}"),
        phase_rule(),
        String::new(),
    ]
}

fn phase_rule() -> String {
    "=".repeat(88)
}

/// The lines for an event; shared with the terminal reporter, which adds colour. Progress is
/// left to each reporter: bars on a terminal, occasional lines here.
pub fn render(event: &Event) -> Vec<String> {
    match event {
        Event::Banner(banner) => {
            let (title, origin, destination, working) = match banner.kind {
                RunKind::Sync => (
                    "SYNC CONFIGURATION",
                    "SOURCE DB (FROM):   ",
                    "TARGET DB (TO):     ",
                    "TEMP DIR:           ",
                ),
                RunKind::Dump => (
                    "DUMP CONFIGURATION",
                    "SOURCE DB (FROM):   ",
                    "ARCHIVE (TO):       ",
                    "WRITING IN:         ",
                ),
                RunKind::Refresh => (
                    "REFRESH CONFIGURATION (data only)",
                    "SOURCE DB (FROM):   ",
                    "TARGET DB (KEPT):   ",
                    "TEMP DIR:           ",
                ),
                RunKind::Incremental => (
                    "INCREMENTAL SYNC CONFIGURATION (changed rows only)",
                    "SOURCE DB (FROM):   ",
                    "TARGET DB (KEPT):   ",
                    "TEMP DIR:           ",
                ),
                RunKind::Merge => (
                    "MERGE CONFIGURATION (rows added with new keys)",
                    "SOURCE DB (FROM):   ",
                    "TARGET DB (INTO):   ",
                    "TEMP DIR:           ",
                ),
                RunKind::Migrate => (
                    "MIGRATION CONFIGURATION (copy, then follow until the cut-over)",
                    "SOURCE DB (FROM):   ",
                    "TARGET DB (TO):     ",
                    "TEMP DIR:           ",
                ),
                RunKind::Restore => (
                    "RESTORE CONFIGURATION",
                    "ARCHIVE (FROM):     ",
                    "TARGET DB (TO):     ",
                    "TEMP DIR:           ",
                ),
            };
            let mut lines = vec![
                phase_rule(),
                format!("#  {title}"),
                phase_rule(),
                format!("{origin}{}", banner.source),
                format!("{destination}{}", banner.target),
                format!("START TIME:         {}", banner.start_time),
                format!("{working}{}", banner.dump_dir),
                format!("MAX JOBS:           {}", banner.jobs),
            ];
            if let Some(batch_size) = banner.batch_size {
                lines.push(format!("MAX TABLES:         {batch_size}"));
            }
            lines.push(format!(
                "TABLES:             {} ({} units of data)",
                banner.tables, banner.units
            ));
            lines.push(format!(
                "TOOLS:              {} ({})",
                banner.tools_version, banner.tools_directory
            ));
            if let Some(note) = &banner.tools_note {
                lines.push(format!("                    {note}"));
            }
            lines.push(phase_rule());
            lines
        }
        Event::Phase(phase) => header(&format!(
            "PHASE {}/{}: {}",
            phase.number(),
            phase.total(),
            phase.title()
        )),
        Event::Cleanup => header("FINAL CLEANUP"),
        Event::Notice(notice) => prefixed("[INFO]    ", &notice.to_string()),
        Event::Warning(warning) => prefixed("[WARN]    ", &warning.to_string()),
        Event::StepFailed { activity, unit, error } => {
            prefixed("[ERROR]   ", &format!("Failed: {} {unit}\n{error}", activity.verb()))
        }
        Event::Discrepancies(tables) => {
            let mut message = "Validation Discrepancies Found:".to_string();
            for (table, source, target) in tables {
                message.push_str(&format!("\n{table}: source {source} rows, target {target} rows"));
            }
            prefixed("[ERROR]   ", &message)
        }
        Event::StructureDifferences(differences) => {
            let mut message = "Structure Differences Found:".to_string();
            for difference in differences {
                message.push_str(&format!("\n{difference}"));
            }
            prefixed("[ERROR]   ", &message)
        }
        Event::ChecksumDifferences(differences) => {
            let mut message = "Checksum Differences Found:".to_string();
            for difference in differences {
                message.push_str(&format!(
                    "\n{}: {}",
                    difference.name,
                    verify_difference_text(difference)
                ));
            }
            prefixed("[ERROR]   ", &message)
        }
        Event::Finished { success: true, line } => prefixed("[INFO]    ", line),
        Event::Finished { success: false, line } => prefixed("[ERROR]   ", line),
        Event::Table { activity, table, line } => {
            vec![format!(
                "[{}] [{}] [{}] {:<36} | {}",
                clock(),
                activity.tag(),
                state_tag(line.state()),
                table,
                table_detail(line)
            )]
        }
        // Plain output says the lag every few seconds instead (MigrationNews::Lag).
        Event::Progress(_) | Event::StepsPlanned(_) | Event::StepFinished | Event::Following(_) => Vec::new(),
        Event::Summary(summary) => {
            let mut lines = vec![String::new(), phase_rule(), "#  SUMMARY".to_string(), phase_rule()];
            lines.extend(summary_lines(summary));
            lines
        }
    }
}

fn prefixed(prefix: &str, message: &str) -> Vec<String> {
    let mut lines = message.lines();
    let first = lines.next().unwrap_or("");
    let mut rendered = vec![format!("{prefix}{first}")];
    rendered.extend(lines.map(|line| format!("{}{line}", " ".repeat(prefix.len()))));
    rendered
}

impl Reporter for PlainReporter {
    fn emit(&self, event: Event) {
        self.remember_table_lines(&event);
        let mut lines = render(&event);
        lines.extend(self.progress_lines(&event));
        if lines.is_empty() {
            return;
        }
        let mut output = self.output.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for line in lines {
            // A closed stdout (e.g. `| head`) must not stop the copy.
            let _ = writeln!(output, "{line}");
        }
        let _ = output.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ProgressReport, TableLine, TableProgress};

    #[test]
    fn table_lines_use_the_old_format() {
        let lines = render(&Event::Table {
            activity: Activity::Export,
            table: "audit_logs".into(),
            line: TableLine::Exported {
                description: "Partitioned (24 parts)".into(),
                bytes: 15_938_355,
                elapsed: Duration::from_secs(5),
            },
        });
        let line = &lines[0];
        assert_eq!(
            &line[10..],
            " [EXPORT] [DONE     ] audit_logs                           | Partitioned (24 parts), Size: 15.2M, Time: 5s"
        );
    }

    #[test]
    fn phase_headers_match_the_old_script() {
        let lines = render(&Event::Phase(super::super::Phase::Data));
        assert_eq!(lines[2], "#  PHASE 2/4: Data Export and Import");
        assert_eq!(lines[1], "=".repeat(88));
    }

    #[test]
    fn a_running_table_gets_a_progress_line_only_after_a_quiet_period() {
        let reporter = PlainReporter::stdout(Duration::from_millis(300));
        let progress = Event::Progress(ProgressReport {
            tables: vec![TableProgress {
                table: "big".into(),
                activity: Activity::Import,
                bytes: 1024,
                rows: 10,
                estimated_bytes: 4096,
                estimated_rows: Some(40),
                rate: 1024.0,
                eta: Some(Duration::from_secs(3)),
                phase: None,
                parts: None,
            }],
            loaded_bytes: 1024,
            estimated_bytes: 4096,
            rate: 1024.0,
            eta: Some(Duration::from_secs(3)),
        });
        reporter.remember_table_lines(&Event::Table {
            activity: Activity::Import,
            table: "big".into(),
            line: TableLine::Restoring,
        });
        assert!(reporter.progress_lines(&progress).is_empty(), "too soon after STARTED");
        std::thread::sleep(Duration::from_millis(350));
        let lines = reporter.progress_lines(&progress);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].ends_with("[IMPORT] [PROGRESS ] big                                  | 1.0K of ~4.0K, 10 rows of ~40, 1.0K/s, ETA 3s"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("[TOTAL ] [PROGRESS ] loaded 1.0K of ~4.0K"),
            "{}",
            lines[1]
        );
        assert!(reporter.progress_lines(&progress).is_empty(), "again too soon");
    }
}
