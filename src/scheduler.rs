//! Running work under a budget: cancellation (signals and failures, a state that only escalates),
//! retries of transient failures with backoff, and the two-stage export/import unit pipeline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why the run is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    Signal(Signal),
    /// Another step failed permanently; the rest is stopped so the run can end quickly.
    Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelState {
    Running,
    /// Stop scheduling; terminate children gracefully.
    Stopping(CancelReason),
    /// A second signal: kill children at once.
    Killing(CancelReason),
}

/// Shared cancellation state. It only escalates: Running → Stopping → Killing.
#[derive(Clone)]
pub struct Cancellation {
    sender: Arc<watch::Sender<CancelState>>,
}

impl Default for Cancellation {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancellation {
    pub fn new() -> Cancellation {
        let (sender, _) = watch::channel(CancelState::Running);
        Cancellation {
            sender: Arc::new(sender),
        }
    }

    pub fn watcher(&self) -> watch::Receiver<CancelState> {
        self.sender.subscribe()
    }

    pub fn state(&self) -> CancelState {
        *self.sender.borrow()
    }

    pub fn is_cancelled(&self) -> bool {
        self.state() != CancelState::Running
    }

    /// The signal that interrupted the run, if one did (the first one wins).
    pub fn interrupting_signal(&self) -> Option<Signal> {
        match self.state() {
            CancelState::Stopping(CancelReason::Signal(signal))
            | CancelState::Killing(CancelReason::Signal(signal)) => Some(signal),
            _ => None,
        }
    }

    pub fn signal_received(&self, signal: Signal) {
        self.sender.send_modify(|state| {
            *state = match *state {
                CancelState::Running | CancelState::Stopping(CancelReason::Failure) => {
                    CancelState::Stopping(CancelReason::Signal(signal))
                }
                CancelState::Stopping(reason) | CancelState::Killing(reason) => CancelState::Killing(reason),
            }
        });
    }

    pub fn abort_for_failure(&self) {
        self.sender.send_if_modified(|state| {
            if *state == CancelState::Running {
                *state = CancelState::Stopping(CancelReason::Failure);
                true
            } else {
                false
            }
        });
    }

    /// Resolves once cancellation has begun.
    pub async fn cancelled(&self) {
        let mut watcher = self.watcher();
        let _ = watcher.wait_for(|state| *state != CancelState::Running).await;
    }
}

/// Routes SIGINT and SIGTERM into the cancellation state for the rest of the process's life.
pub fn listen_for_signals(cancellation: Cancellation) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                _ = interrupt.recv() => Signal::SIGINT,
                _ = terminate.recv() => Signal::SIGTERM,
            };
            cancellation.signal_received(received);
        }
    });
    Ok(())
}

/// The outcome of one attempt at a step.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth another try: the connection dropped, the server restarted, too many clients.
    Transient(anyhow::Error),
    /// Trying again cannot help: authentication, permissions, syntax, missing objects.
    Permanent(anyhow::Error),
    Cancelled,
}

/// The outcome of a step after its retries.
#[derive(Debug)]
pub enum StepError {
    Cancelled,
    Failed(anyhow::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub retries: u32,
    pub base_delay: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with jitter, so that parallel retries do not hit the server together.
    pub fn delay_before(&self, retry_number: u32) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1 << retry_number.saturating_sub(1).min(5));
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        exponential.mul_f64(jitter).min(Duration::from_secs(30))
    }
}

/// Runs `attempt` until it succeeds, fails permanently, runs out of retries or is cancelled.
/// `on_retry` hears of each transient failure that will be retried, with the coming delay.
pub async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    cancellation: &Cancellation,
    mut on_retry: impl FnMut(u32, &anyhow::Error, Duration),
    mut attempt: F,
) -> Result<T, StepError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut attempt_number = 1;
    loop {
        if cancellation.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        match attempt(attempt_number).await {
            Ok(value) => return Ok(value),
            Err(AttemptError::Cancelled) => return Err(StepError::Cancelled),
            Err(AttemptError::Permanent(error)) => return Err(StepError::Failed(error)),
            Err(AttemptError::Transient(error)) => {
                if attempt_number > policy.retries {
                    return Err(StepError::Failed(
                        error.context(format!("gave up after {attempt_number} attempts")),
                    ));
                }
                let delay = policy.delay_before(attempt_number);
                on_retry(attempt_number, &error, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancellation.cancelled() => return Err(StepError::Cancelled),
                }
                attempt_number += 1;
            }
        }
    }
}

/// Messages of libpq, the server and the tools that mean "try again later", not "you are wrong".
const TRANSIENT_MARKERS: &[&str] = &[
    "could not connect to server",
    "connection to server at",
    "Connection refused",
    "connection refused",
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "terminating connection due to conflict with recovery",
    "too many clients already",
    "remaining connection slots are reserved",
    "could not serialize access",
    "deadlock detected",
    "Connection reset by peer",
    "connection reset",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "SSL SYSCALL error",
    "Connection timed out",
    "timeout expired",
];

/// Messages that look like connection trouble but are the user's to fix.
const PERMANENT_MARKERS: &[&str] = &[
    "password authentication failed",
    "no password supplied",
    "permission denied",
    "does not exist",
    "syntax error",
    "no pg_hba.conf entry",
    "invalid snapshot identifier",
];

pub fn is_transient(message: &str) -> bool {
    !PERMANENT_MARKERS.iter().any(|marker| message.contains(marker))
        && TRANSIENT_MARKERS.iter().any(|marker| message.contains(marker))
}

/// The two stages a unit goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Export,
    Import,
}

pub type StageFuture = Pin<Box<dyn Future<Output = Result<(), StepError>> + Send>>;

/// Runs every unit's export then import, at most `budget` stages at once. Imports that are ready
/// go before exports not yet started, so finished dumps do not pile up. Without `pipelined`,
/// imports start only after every export has finished. `before_first_import` runs once, when
/// the first import is about to start. The first failure stops everything still running.
pub async fn run_units<U: Send + Sync + 'static>(
    units: Vec<Arc<U>>,
    budget: usize,
    pipelined: bool,
    cancellation: &Cancellation,
    export: impl Fn(Arc<U>) -> StageFuture,
    import: impl Fn(Arc<U>) -> StageFuture,
    mut before_first_import: impl FnMut(),
) -> Result<(), StepError> {
    let budget = budget.max(1);
    let mut waiting_exports: std::collections::VecDeque<Arc<U>> = units.into_iter().collect();
    let mut ready_imports: std::collections::VecDeque<Arc<U>> = Default::default();
    let mut running: JoinSet<(Stage, Arc<U>, Result<(), StepError>)> = JoinSet::new();
    let mut exports_running = 0usize;
    let mut first_import_started = false;
    let mut first_error: Option<StepError> = None;

    loop {
        while first_error.is_none() && !cancellation.is_cancelled() && running.len() < budget {
            let imports_allowed = pipelined || (waiting_exports.is_empty() && exports_running == 0);
            if imports_allowed && let Some(unit) = ready_imports.pop_front() {
                if !first_import_started {
                    first_import_started = true;
                    before_first_import();
                }
                let future = import(unit.clone());
                running.spawn(async move { (Stage::Import, unit, future.await) });
            } else if let Some(unit) = waiting_exports.pop_front() {
                exports_running += 1;
                let future = export(unit.clone());
                running.spawn(async move { (Stage::Export, unit, future.await) });
            } else {
                break;
            }
        }
        let Some(joined) = running.join_next().await else { break };
        let (stage, unit, result) = match joined {
            Ok(outcome) => outcome,
            Err(join_error) => {
                first_error.get_or_insert(StepError::Failed(anyhow::anyhow!("a worker task failed: {join_error}")));
                cancellation.abort_for_failure();
                continue;
            }
        };
        if stage == Stage::Export {
            exports_running -= 1;
        }
        match result {
            Ok(()) if stage == Stage::Export => ready_imports.push_back(unit),
            Ok(()) => {}
            Err(StepError::Cancelled) => {
                first_error.get_or_insert(StepError::Cancelled);
            }
            Err(StepError::Failed(error)) => {
                if !matches!(first_error, Some(StepError::Failed(_))) {
                    first_error = Some(StepError::Failed(error));
                }
                cancellation.abort_for_failure();
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if cancellation.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_transient_and_permanent_messages() {
        assert!(is_transient(
            "pg_dump: error: server closed the connection unexpectedly"
        ));
        assert!(is_transient("FATAL:  sorry, too many clients already"));
        assert!(!is_transient(
            "FATAL:  password authentication failed for user \"x\" (connection refused)"
        ));
        assert!(!is_transient("ERROR:  permission denied for table t"));
        assert!(!is_transient("ERROR:  syntax error at or near"));
    }

    #[test]
    fn cancellation_only_escalates() {
        let cancellation = Cancellation::new();
        cancellation.abort_for_failure();
        assert_eq!(cancellation.state(), CancelState::Stopping(CancelReason::Failure));
        cancellation.signal_received(Signal::SIGTERM);
        assert_eq!(cancellation.interrupting_signal(), Some(Signal::SIGTERM));
        cancellation.abort_for_failure();
        cancellation.signal_received(Signal::SIGINT);
        assert_eq!(
            cancellation.state(),
            CancelState::Killing(CancelReason::Signal(Signal::SIGTERM))
        );
    }

    #[tokio::test]
    async fn retries_transient_failures_then_gives_up() {
        let policy = RetryPolicy {
            retries: 2,
            base_delay: Duration::from_millis(1),
        };
        let cancellation = Cancellation::new();
        let mut retries_seen = Vec::new();
        let result: Result<(), StepError> = with_retries(
            policy,
            &cancellation,
            |attempt, _, _| retries_seen.push(attempt),
            |_| async { Err(AttemptError::Transient(anyhow::anyhow!("connection reset"))) },
        )
        .await;
        assert!(matches!(result, Err(StepError::Failed(_))));
        assert_eq!(retries_seen, vec![1, 2]);

        let mut calls = 0;
        let result = with_retries(
            policy,
            &cancellation,
            |_, _, _| {},
            |attempt| {
                calls += 1;
                async move {
                    if attempt < 2 {
                        Err(AttemptError::Transient(anyhow::anyhow!("x")))
                    } else {
                        Ok(attempt)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn permanent_failure_is_not_retried() {
        let policy = RetryPolicy {
            retries: 5,
            base_delay: Duration::from_millis(1),
        };
        let mut calls = 0;
        let result: Result<(), StepError> = with_retries(
            policy,
            &Cancellation::new(),
            |_, _, _| {},
            |_| {
                calls += 1;
                async { Err(AttemptError::Permanent(anyhow::anyhow!("permission denied"))) }
            },
        )
        .await;
        assert!(matches!(result, Err(StepError::Failed(_))));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn unit_pipeline_runs_every_export_before_imports_when_not_pipelined() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let units: Vec<Arc<usize>> = (0..4).map(Arc::new).collect();
        let export_log = log.clone();
        let import_log = log.clone();
        run_units(
            units,
            2,
            false,
            &Cancellation::new(),
            move |unit| {
                let log = export_log.clone();
                Box::pin(async move {
                    log.lock().unwrap().push(format!("export {unit}"));
                    Ok(())
                })
            },
            move |unit| {
                let log = import_log.clone();
                Box::pin(async move {
                    log.lock().unwrap().push(format!("import {unit}"));
                    Ok(())
                })
            },
            || {},
        )
        .await
        .unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 8);
        let last_export = log.iter().rposition(|entry| entry.starts_with("export")).unwrap();
        let first_import = log.iter().position(|entry| entry.starts_with("import")).unwrap();
        assert!(last_export < first_import, "{log:?}");
    }

    #[tokio::test]
    async fn a_failed_unit_stops_the_pipeline_with_its_error() {
        let cancellation = Cancellation::new();
        let units: Vec<Arc<usize>> = (0..3).map(Arc::new).collect();
        let result = run_units(
            units,
            1,
            true,
            &cancellation,
            |unit| {
                Box::pin(async move {
                    if *unit == 0 {
                        Err(StepError::Failed(anyhow::anyhow!("boom")))
                    } else {
                        Ok(())
                    }
                })
            },
            |_| Box::pin(async { Ok(()) }),
            || {},
        )
        .await;
        match result {
            Err(StepError::Failed(error)) => assert_eq!(error.to_string(), "boom"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(cancellation.is_cancelled());
    }
}
