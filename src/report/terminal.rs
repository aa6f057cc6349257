//! The terminal reporter: the same lines as the plain one, in colour, above progress bars (one
//! overall, one spinner per table being exported or imported).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plain::render;
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
    pub fn new() -> TerminalReporter {
        if std::env::var_os("NO_COLOR").is_some() {
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

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

fn colour(event: &Event, line: String) -> String {
    match event {
        Event::Phase { .. } | Event::Heading(_) | Event::Banner(_) => style(line).magenta().bold().to_string(),
        Event::Info(_) => style(line).cyan().to_string(),
        Event::Warning(_) => style(line).yellow().to_string(),
        Event::Error(_) => style(line).red().bold().to_string(),
        Event::Table { state, .. } => match state {
            TableState::Started => style(line).yellow().to_string(),
            TableState::Done => style(line).green().to_string(),
            TableState::Failed => style(line).red().bold().to_string(),
            TableState::Retrying => style(line).yellow().bold().to_string(),
        },
        _ => line,
    }
}

impl Reporter for TerminalReporter {
    fn emit(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &event {
            Event::StepsPlanned(total) => {
                let bar = self.bars.add(ProgressBar::new(*total as u64));
                bar.set_style(
                    ProgressStyle::with_template("{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} steps {msg}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                state.overall = Some(bar);
                return;
            }
            Event::StepFinished => {
                if let Some(bar) = &state.overall {
                    bar.inc(1);
                }
                return;
            }
            Event::Table {
                activity,
                state: table_state,
                table,
                ..
            } => {
                let key = (*activity, table.clone());
                match table_state {
                    TableState::Started => {
                        let spinner = self.bars.insert_from_back(1, ProgressBar::new_spinner());
                        spinner.set_style(
                            ProgressStyle::with_template("  {spinner} {msg} {elapsed}").expect("valid template"),
                        );
                        spinner.set_message(format!("{} {table}", activity.tag()));
                        spinner.enable_steady_tick(Duration::from_millis(120));
                        state.running.insert(key, spinner);
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
            Event::Summary(_) | Event::Error(_) => {
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
