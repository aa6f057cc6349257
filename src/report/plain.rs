//! One line per event in the old script's format, without control codes: for cron and CI logs.

use std::io::Write;
use std::sync::Mutex;

use super::{Event, Reporter, phase_rule, summary_lines};

pub struct PlainReporter {
    output: Mutex<Box<dyn Write + Send>>,
}

impl PlainReporter {
    pub fn stdout() -> PlainReporter {
        PlainReporter {
            output: Mutex::new(Box::new(std::io::stdout())),
        }
    }
}

/// The lines for an event; shared with the terminal reporter, which adds colour.
pub fn render(event: &Event) -> Vec<String> {
    let clock = || chrono::Local::now().format("%H:%M:%S").to_string();
    match event {
        Event::Banner(banner) => {
            let mut lines = vec![
                phase_rule(),
                "#  SYNC CONFIGURATION".to_string(),
                phase_rule(),
                format!("SOURCE DB (FROM):   {}", banner.source),
                format!("TARGET DB (TO):     {}", banner.target),
                format!("START TIME:         {}", banner.start_time),
                format!("TEMP DIR:           {}", banner.dump_dir),
                format!("MAX JOBS:           {}", banner.jobs),
            ];
            if let Some(batch_size) = banner.batch_size {
                lines.push(format!("MAX TABLES:         {batch_size}"));
            }
            lines.push(format!(
                "TABLES:             {} ({} units of data)",
                banner.tables, banner.units
            ));
            lines.push(format!("TOOLS:              {}", banner.tools));
            lines.push(phase_rule());
            lines
        }
        Event::Phase { number, total, title } => {
            vec![
                String::new(),
                phase_rule(),
                format!("#  PHASE {number}/{total}: {title}"),
                phase_rule(),
                String::new(),
            ]
        }
        Event::Heading(title) => vec![
            String::new(),
            phase_rule(),
            format!("#  {title}"),
            phase_rule(),
            String::new(),
        ],
        Event::Info(message) => prefixed("[INFO]    ", message),
        Event::Warning(message) => prefixed("[WARN]    ", message),
        Event::Error(message) => prefixed("[ERROR]   ", message),
        Event::Table {
            activity,
            state,
            table,
            detail,
        } => {
            vec![format!(
                "[{}] [{}] [{}] {:<36} | {}",
                clock(),
                activity.tag(),
                state.tag(),
                table,
                detail
            )]
        }
        Event::StepsPlanned(_) | Event::StepFinished => Vec::new(),
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
        let lines = render(&event);
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
    use crate::report::{Activity, TableState};

    #[test]
    fn table_lines_use_the_old_format() {
        let lines = render(&Event::Table {
            activity: Activity::Export,
            state: TableState::Done,
            table: "audit_logs".into(),
            detail: "Partitioned (24 parts), Size: 15.2M, Time: 5s".into(),
        });
        let line = &lines[0];
        assert_eq!(
            &line[10..],
            " [EXPORT] [DONE     ] audit_logs                           | Partitioned (24 parts), Size: 15.2M, Time: 5s"
        );
    }

    #[test]
    fn phase_headers_match_the_old_script() {
        let lines = render(&Event::Phase {
            number: 2,
            total: 4,
            title: "Data Export".into(),
        });
        assert_eq!(lines[2], "#  PHASE 2/4: Data Export");
        assert_eq!(lines[1], "=".repeat(88));
    }
}
