//! The terminal reporter: the same lines as the plain one, in colour, above progress bars: one
//! overall (steps done, bytes loaded against the estimate, rate, ETA) and one per table being
//! copied (bytes and rows against the estimate, rate, ETA).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plain::render;
use super::text::{overall_detail, progress_detail};
use super::{Activity, Event, Reporter, TableState};

pub struct TerminalReporter {
    bars: MultiProgress,
    state: Mutex<TerminalState>,
}

#[derive(Default)]
struct TerminalState {
    overall: Option<ProgressBar>,
    running: HashMap<(Activity, String), ProgressBar>,
}

impl TerminalReporter {
    pub fn new(colour: bool) -> TerminalReporter {
        if !colour {
            console::set_colors_enabled(false);
        }
        TerminalReporter {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            state: Mutex::new(TerminalState::default()),
        }
    }

    fn print(&self, line: String) {
        // println through MultiProgress keeps the bars below the log.
        let _ = self.bars.println(line);
    }
}

fn colour(event: &Event, line: String) -> String {
    match event {
        Event::Phase(_) | Event::Cleanup | Event::Banner(_) => style(line).magenta().bold().to_string(),
        Event::Notice(_) | Event::Finished { success: true, .. } => style(line).cyan().to_string(),
        Event::Warning(_) => style(line).yellow().to_string(),
        Event::StepFailed { .. }
        | Event::Discrepancies(_)
        | Event::StructureDifferences(_)
        | Event::ChecksumDifferences(_)
        | Event::Finished { success: false, .. } => style(line).red().bold().to_string(),
        Event::Table { line: table_line, .. } => match table_line.state() {
            TableState::Started => style(line).yellow().to_string(),
            TableState::Done => style(line).green().to_string(),
            TableState::Failed => style(line).red().bold().to_string(),
            TableState::Retrying => style(line).yellow().bold().to_string(),
        },
        _ => line,
    }
}

impl TerminalReporter {
    /// The bar of every step of the run, at the bottom.
    fn overall_bar(&self, steps: usize) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(steps as u64));
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} steps {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    }

    /// A spinner for a table while it runs, above the overall bar.
    fn table_spinner(&self, activity: Activity, table: &str) -> ProgressBar {
        let spinner = self.bars.insert_from_back(1, ProgressBar::new_spinner());
        spinner.set_style(ProgressStyle::with_template("  {spinner} {elapsed:>4} {msg}").expect("valid template"));
        spinner.set_message(format!("{} {table}", activity.tag()));
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    }
}

impl Reporter for TerminalReporter {
    fn emit(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &event {
            Event::StepsPlanned(total) => {
                state.overall = Some(self.overall_bar(*total));
                return;
            }
            Event::StepFinished => {
                if let Some(bar) = &state.overall {
                    bar.inc(1);
                }
                return;
            }
            Event::Progress(report) => {
                for table in &report.tables {
                    if let Some(bar) = state.running.get(&(table.activity, table.table.clone())) {
                        let detail = progress_detail(table);
                        bar.set_message(format!("{} {}  {detail}", table.activity.tag(), table.table));
                    }
                }
                if let Some(bar) = &state.overall {
                    bar.set_message(overall_detail(report));
                }
                return;
            }
            Event::Table { activity, table, line } => {
                let key = (*activity, table.clone());
                match line.state() {
                    TableState::Started => {
                        state.running.insert(key, self.table_spinner(*activity, table));
                    }
                    TableState::Done | TableState::Failed => {
                        if let Some(spinner) = state.running.remove(&key) {
                            spinner.finish_and_clear();
                            self.bars.remove(&spinner);
                        }
                    }
                    TableState::Retrying => {}
                }
            }
            Event::Summary(_) | Event::Finished { .. } => {
                for (_, spinner) in state.running.drain() {
                    spinner.finish_and_clear();
                }
                if let Some(bar) = state.overall.take() {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
        for line in render(&event) {
            self.print(colour(&event, line));
        }
    }
}
