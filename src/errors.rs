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

pub const EXIT_SUCCESS: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_VALIDATION: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;
pub const EXIT_TERMINATED: u8 = 143;

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
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl SyncError {
    pub fn outcome(&self) -> Outcome {
        match self {
            SyncError::Usage(_) => Outcome::Refused,
            SyncError::Interrupted(_) => Outcome::Interrupted,
            SyncError::ValidationFailed(_) => Outcome::ValidationFailed,
            SyncError::Failed(_) => Outcome::Failed,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            SyncError::Usage(_) => EXIT_USAGE,
            SyncError::Interrupted(Signal::SIGTERM) => EXIT_TERMINATED,
            SyncError::Interrupted(_) => EXIT_INTERRUPTED,
            SyncError::ValidationFailed(_) => EXIT_VALIDATION,
            SyncError::Failed(_) => EXIT_FAILURE,
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
