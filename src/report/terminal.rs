//! The terminal reporter: the same lines as the plain one, in colour, above progress bars: one
//! overall (filled by the bytes loaded against the estimate, with the steps done, the rate and the
//! ETA) and one per table being copied (bytes and rows against the estimate, rate, ETA); while
//! `dbsync migrate` follows, one with the lag, in place of the plain output's lag lines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plain::render;
use super::text::{overall_detail, progress_detail};
use super::{Activity, Event, LagReading, MigrationNews, Notice, Reporter, TableState};

pub struct TerminalReporter {
    bars: MultiProgress,
    state: Mutex<TerminalState>,
}

#[derive(Default)]
struct TerminalState {
    overall: Option<ProgressBar>,
    /// Steps done and planned, said beside the overall bar (which bytes fill).
    steps: (usize, usize),
    /// What the last progress report said of the whole copy.
    detail: String,
    running: HashMap<(Activity, String), ProgressBar>,
    /// The lag of a migration that follows.
    following: Option<ProgressBar>,
}

impl TerminalState {
    /// A progress report on the tables' bars and the overall one.
    fn show(&mut self, report: &super::ProgressReport) {
        for table in &report.tables {
            if let Some(bar) = self.running.get(&(table.activity, table.table.clone())) {
                let detail = progress_detail(table);
                bar.set_message(format!("{} {}  {detail}", table.activity.tag(), table.table));
            }
        }
        self.detail = overall_detail(report);
        if let Some(bar) = &self.overall {
            // Loads may pass a low estimate: the bar is then full, not beyond.
            bar.set_length(report.estimated_bytes.max(report.loaded_bytes));
            bar.set_position(report.loaded_bytes);
            bar.set_message(self.overall_message());
        }
    }

    fn overall_message(&self) -> String {
        let (done, planned) = self.steps;
        match self.detail.is_empty() {
            true => format!("{done}/{planned} steps"),
            false => format!("{done}/{planned} steps, {}", self.detail),
        }
    }
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
    /// The bar of the whole copy, at the bottom: filled by the bytes loaded against the
    /// estimate (so it moves while one big table loads), until the first report empty.
    fn overall_bar(&self) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40.cyan/blue}] {percent:>3}% {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    }

    /// The lag of a migration that follows, read twice a second.
    fn show_following(&self, state: &mut TerminalState, reading: &LagReading) {
        let bar = state.following.get_or_insert_with(|| {
            let spinner = self.bars.add(ProgressBar::new_spinner());
            spinner
                .set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("valid template"));
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner
        });
        bar.set_message(format!("Following: {reading}"));
    }

    /// The lag bar's share of `event`; true when the bar says all of it (no line to print).
    fn follow_event(&self, state: &mut TerminalState, event: &Event) -> bool {
        match event {
            Event::Following(reading) => {
                self.show_following(state, reading);
                true
            }
            Event::Notice(Notice::Migration(MigrationNews::Lag(_))) => state.following.is_some(),
            Event::Notice(Notice::Migration(MigrationNews::CuttingOver { .. })) | Event::Phase(_) => {
                if let Some(bar) = state.following.take() {
                    bar.finish_and_clear();
                }
                false
            }
            _ => false,
        }
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
                let bar = self.overall_bar();
                state.steps = (0, *total);
                bar.set_message(state.overall_message());
                state.overall = Some(bar);
                return;
            }
            Event::StepFinished => {
                state.steps.0 += 1;
                if let Some(bar) = &state.overall {
                    bar.set_message(state.overall_message());
                }
                return;
            }
            Event::Progress(report) => {
                state.show(report);
                return;
            }
            Event::Following(_) | Event::Notice(_) | Event::Phase(_) if self.follow_event(&mut state, &event) => return,
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
                if let Some(bar) = state.following.take() {
                    bar.finish_and_clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ProgressReport;

    fn quiet() -> TerminalReporter {
        TerminalReporter {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            state: Mutex::new(TerminalState::default()),
        }
    }

    fn progress(loaded_bytes: u64, estimated_bytes: u64) -> Event {
        Event::Progress(ProgressReport {
            tables: Vec::new(),
            loaded_bytes,
            estimated_bytes,
            rate: 1024.0,
            eta: Some(Duration::from_secs(30)),
        })
    }

    #[test]
    fn the_overall_bar_moves_with_the_bytes_while_one_table_loads_and_says_the_steps() {
        let reporter = quiet();
        reporter.emit(Event::StepsPlanned(2));
        // One table, half loaded: no step is done yet, and the bar is half full.
        reporter.emit(progress(50 << 20, 100 << 20));
        {
            let state = reporter.state.lock().unwrap();
            let bar = state.overall.as_ref().unwrap();
            assert_eq!((bar.position(), bar.length()), (50 << 20, Some(100 << 20)));
            assert!(
                bar.message().starts_with("0/2 steps, loaded 50.0M of ~100.0M"),
                "{}",
                bar.message()
            );
            assert!(bar.message().ends_with("ETA 30s"), "{}", bar.message());
        }
        reporter.emit(Event::StepFinished);
        reporter.emit(progress(120 << 20, 100 << 20));
        let state = reporter.state.lock().unwrap();
        let bar = state.overall.as_ref().unwrap();
        assert_eq!((bar.position(), bar.length()), (120 << 20, Some(120 << 20)));
        assert!(bar.message().starts_with("1/2 steps"), "{}", bar.message());
    }

    #[test]
    fn while_following_the_lag_is_a_bar_and_its_lines_are_left_to_plain_output() {
        let reporter = quiet();
        let reading = LagReading {
            bytes: 2048,
            seconds: Some(0.4),
            rows: 12,
        };
        reporter.emit(Event::Following(reading));
        {
            let state = reporter.state.lock().unwrap();
            let bar = state.following.as_ref().expect("a lag bar");
            assert_eq!(
                bar.message(),
                "Following: the target is 2.0K behind (replay lag 0.4 s); 12 row change(s) applied"
            );
        }
        reporter.emit(Event::Notice(Notice::Migration(MigrationNews::CuttingOver {
            reason: "Enter pressed".to_string(),
        })));
        assert!(
            reporter.state.lock().unwrap().following.is_none(),
            "the cut-over ends the bar"
        );
    }
}
