//! How a run can end, and the exit code each ending maps to (documented in the README).

use nix::sys::signal::Signal;

use serde::Serialize;

/// How a run ended, as the report and the summary name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    /// Nothing was changed: bad input, missing consent, a target that must not be replaced.
    Refused,
    Failed,
    Interrupted,
    ValidationFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Refused,
        Outcome::Failed,
        Outcome::Interrupted,
        Outcome::ValidationFailed,
    ];
}

/// The exit codes dbsync ends with, as the README documents them.
pub struct ExitCode;

impl ExitCode {
    /// The run did what was asked (a copy swapped in, an archive written, both sides equal).
    pub const SUCCESS: u8 = 0;
    /// A failure after the run started (a server, a tool, a step that failed beyond its retries);
    /// the previous target is kept.
    pub const FAILURE: u8 = 1;
    /// Refused before anything was changed: bad input, missing consent, an unsafe target.
    pub const USAGE: u8 = 2;
    /// The copy (or `verify`, `diff`) found differences between the source and the target; the
    /// previous target is kept.
    pub const VALIDATION: u8 = 3;
    /// Stopped by Ctrl+C (SIGINT), everything started stopped and cleaned up.
    pub const INTERRUPTED: u8 = 130;
    /// Stopped by SIGTERM, everything started stopped and cleaned up.
    pub const TERMINATED: u8 = 143;
    /// Every code above: what the README's table and every command's `--help` list.
    pub const ALL: [u8; 6] = [
        ExitCode::SUCCESS,
        ExitCode::FAILURE,
        ExitCode::USAGE,
        ExitCode::VALIDATION,
        ExitCode::INTERRUPTED,
        ExitCode::TERMINATED,
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Bad command line, configuration, selection or missing consent: nothing was changed.
    #[error("{0}")]
    Usage(String),
    /// Ctrl+C or SIGTERM arrived; everything started was stopped and cleaned up.
    #[error("interrupted by {}", signal_name(*.0))]
    Interrupted(Signal),
    /// The copy completed but its rows or structure differ from the source.
    #[error("validation found {0} difference(s) between the source and the copy; the previous target was kept")]
    ValidationFailed(usize),
    /// A refresh in place (`--data-only`, `--incremental`, merge) committed its tables, and the
    /// target differs from the source after it: nothing was kept aside.
    #[error(
        "validation found {0} difference(s) between the source and the target after the refresh; the tables it committed stay as written (a refresh changes the target in place, with nothing kept aside): see the differences above"
    )]
    RefreshDiffers(usize),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl SyncError {
    pub fn outcome(&self) -> Outcome {
        match self {
            SyncError::Usage(_) => Outcome::Refused,
            SyncError::Interrupted(_) => Outcome::Interrupted,
            SyncError::ValidationFailed(_) | SyncError::RefreshDiffers(_) => Outcome::ValidationFailed,
            SyncError::Failed(_) => Outcome::Failed,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            SyncError::Usage(_) => ExitCode::USAGE,
            SyncError::Interrupted(Signal::SIGTERM) => ExitCode::TERMINATED,
            SyncError::Interrupted(_) => ExitCode::INTERRUPTED,
            SyncError::ValidationFailed(_) | SyncError::RefreshDiffers(_) => ExitCode::VALIDATION,
            SyncError::Failed(_) => ExitCode::FAILURE,
        }
    }
}

pub fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGINT => "Ctrl+C (SIGINT)",
        Signal::SIGTERM => "SIGTERM",
        other => other.as_str(),
    }
}

/// Shorthand for a usage error built with `format!`.
#[macro_export]
macro_rules! usage_error {
    ($($argument:tt)*) => {
        $crate::errors::SyncError::Usage(format!($($argument)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_is_documented_in_the_readme() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("the README has an exit code table");
        for code in ExitCode::ALL {
            assert!(
                table.contains(&format!("\n| {code} |")),
                "exit code {code} is not in the README's table"
            );
        }
    }
}
