//! Running work under a budget: cancellation (signals and failures, a state that only escalates),
//! retries of transient failures with backoff, and the two-stage export/import unit pipeline.

use std::collections::VecDeque;
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

    /// A cancellation for one attempt at the work: it hears every signal this one hears, but a
    /// failure that stops it stays its own, so the work can be started again afresh.
    pub fn child(&self) -> Cancellation {
        let child = Cancellation::new();
        let forwarded = child.clone();
        let mut parent = self.watcher();
        parent.mark_changed();
        tokio::spawn(async move {
            let mut signals_seen = 0;
            while parent.changed().await.is_ok() {
                let signals = match *parent.borrow_and_update() {
                    CancelState::Stopping(CancelReason::Signal(signal)) => Some((signal, 1)),
                    CancelState::Killing(CancelReason::Signal(signal)) => Some((signal, 2)),
                    _ => None,
                };
                if let Some((signal, count)) = signals {
                    while signals_seen < count {
                        forwarded.signal_received(signal);
                        signals_seen += 1;
                    }
                }
            }
        });
        child
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

    /// Resolves at a second signal: the user wants out now, cleanup or not.
    pub async fn killing(&self) {
        let mut watcher = self.watcher();
        let _ = watcher.wait_for(|state| matches!(state, CancelState::Killing(_))).await;
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

/// A step tried once, without retries: whatever its failure, the step has failed.
impl From<AttemptError> for StepError {
    fn from(error: AttemptError) -> StepError {
        match error {
            AttemptError::Cancelled => StepError::Cancelled,
            AttemptError::Transient(error) | AttemptError::Permanent(error) => StepError::Failed(error),
        }
    }
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

/// The kinds of work the unit pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Export,
    Import,
    /// Work that a unit's load made possible, such as building the indexes of tables now complete.
    FollowUp,
}

pub type StageFuture = Pin<Box<dyn Future<Output = Result<(), StepError>> + Send>>;

/// Work that a unit's load made possible, which can use up to `wants` sessions at once (an index
/// build with parallel workers). `start` is given how many it may use: never more than the budget
/// has free when it starts, and at least one.
pub struct FollowUp {
    pub wants: usize,
    pub start: Box<dyn FnOnce(usize) -> StageFuture + Send>,
}

/// How much work may run at once: `sessions` server sessions doing copy work (`--jobs`), in at
/// most `tasks` pieces of work (`BATCH_SIZE`). A dump, a load or a streamed unit counts one
/// session; a follow-up counts what it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub sessions: usize,
    pub tasks: usize,
}

/// A task that ended: what it was, its unit (none for follow-ups), the sessions it held, and how
/// it went.
type Finished<U> = (Stage, Option<Arc<U>>, usize, Result<(), StepError>);

/// What the pipeline does with each unit.
pub trait UnitWork<U>: Send + Sync {
    /// Exports a unit, or, when units are streamed, exports and loads it in one go.
    fn export(&self, unit: Arc<U>) -> StageFuture;
    /// Loads an exported unit; `None` when `export` has loaded it already.
    fn import(&self, unit: Arc<U>) -> Option<StageFuture>;
    /// Work that loading this unit made possible; it runs in the same budget.
    fn loaded(&self, unit: Arc<U>) -> Option<FollowUp>;
}

/// Runs `work` on every task, each of `sessions` taking the next task as soon as it is done with
/// one (so one large task does not hold up the others); the results in the tasks' order. The
/// first failure stops the sessions from taking new tasks, but the tasks already running
/// finish: a transaction on its way through its commit elsewhere is seen through and reported,
/// not dropped with its outcome unknown. Then the first failure is returned.
pub async fn share_out<'a, S: Clone, T, R, Fut>(
    sessions: &[S],
    tasks: &'a [T],
    work: impl Fn(S, &'a T) -> Fut,
) -> anyhow::Result<Vec<R>>
where
    Fut: Future<Output = anyhow::Result<R>>,
{
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_failure: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let results: std::sync::Mutex<Vec<Option<R>>> = std::sync::Mutex::new(tasks.iter().map(|_| None).collect());
    let workers = sessions.iter().map(|session| async {
        loop {
            if first_failure.lock().expect("no panics while held").is_some() {
                return;
            }
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(task) = tasks.get(index) else { return };
            match work(session.clone(), task).await {
                Ok(result) => results.lock().expect("no panics while held")[index] = Some(result),
                Err(error) => {
                    first_failure.lock().expect("no panics while held").get_or_insert(error);
                    return;
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    if let Some(error) = first_failure.into_inner().expect("no panics while held") {
        return Err(error);
    }
    Ok(results
        .into_inner()
        .expect("no panics while held")
        .into_iter()
        .map(|result| result.expect("every task ran"))
        .collect())
}

/// The unit pipeline's queues and what is running, within one budget of sessions.
struct Pipeline<U> {
    sessions: usize,
    tasks: usize,
    waiting_exports: VecDeque<Arc<U>>,
    ready_imports: VecDeque<(Arc<U>, StageFuture)>,
    ready_follow_ups: VecDeque<FollowUp>,
    running: JoinSet<Finished<U>>,
    sessions_in_use: usize,
    first_error: Option<StepError>,
}

impl<U: Send + Sync + 'static> Pipeline<U> {
    /// Starts what is ready while sessions and tasks are free: follow-ups, then imports, then
    /// exports.
    fn start_ready(&mut self, cancellation: &Cancellation, work: &dyn UnitWork<U>) {
        while self.first_error.is_none()
            && !cancellation.is_cancelled()
            && self.running.len() < self.tasks
            && self.sessions_in_use < self.sessions
        {
            let free = self.sessions - self.sessions_in_use;
            let (stage, unit, held, future) = if let Some(follow_up) = self.ready_follow_ups.pop_front() {
                let granted = follow_up.wants.clamp(1, free);
                (Stage::FollowUp, None, granted, (follow_up.start)(granted))
            } else if let Some((unit, future)) = self.ready_imports.pop_front() {
                (Stage::Import, Some(unit), 1, future)
            } else if let Some(unit) = self.waiting_exports.pop_front() {
                let future = work.export(unit.clone());
                (Stage::Export, Some(unit), 1, future)
            } else {
                break;
            };
            self.sessions_in_use += held;
            self.running.spawn(async move { (stage, unit, held, future.await) });
        }
    }

    /// What a finished task makes ready (its import, its follow-up), or the failure it ends with.
    fn finished(&mut self, ended: Finished<U>, cancellation: &Cancellation, work: &dyn UnitWork<U>) {
        let (stage, unit, held, result) = ended;
        self.sessions_in_use -= held;
        match result {
            Ok(()) => {
                let loaded = match (stage, unit) {
                    (Stage::Export, Some(unit)) => match work.import(unit.clone()) {
                        Some(import) => {
                            self.ready_imports.push_back((unit, import));
                            None
                        }
                        None => Some(unit),
                    },
                    (Stage::Import, Some(unit)) => Some(unit),
                    _ => None,
                };
                if let Some(follow_up) = loaded.and_then(|unit| work.loaded(unit)) {
                    self.ready_follow_ups.push_back(follow_up);
                }
            }
            Err(StepError::Cancelled) => {
                self.first_error.get_or_insert(StepError::Cancelled);
            }
            Err(StepError::Failed(error)) => {
                if !matches!(self.first_error, Some(StepError::Failed(_))) {
                    self.first_error = Some(StepError::Failed(error));
                }
                cancellation.abort_for_failure();
            }
        }
    }
}

/// Runs every unit through export, import and the follow-up work its load makes possible, within
/// `budget`. A unit is imported as soon as its export ends. When sessions free up, follow-ups go
/// first, then imports, then exports: work that is ready finishes before new work starts, so
/// dumps do not pile up on disk and indexes are built while other tables still load. The first
/// failure stops the rest.
pub async fn run_units<U: Send + Sync + 'static>(
    units: Vec<Arc<U>>,
    budget: Budget,
    cancellation: &Cancellation,
    work: &dyn UnitWork<U>,
) -> Result<(), StepError> {
    let mut pipeline = Pipeline {
        sessions: budget.sessions.max(1),
        tasks: budget.tasks.max(1),
        waiting_exports: units.into_iter().collect(),
        ready_imports: VecDeque::new(),
        ready_follow_ups: VecDeque::new(),
        running: JoinSet::new(),
        sessions_in_use: 0,
        first_error: None,
    };
    loop {
        pipeline.start_ready(cancellation, work);
        let Some(joined) = pipeline.running.join_next().await else {
            break;
        };
        match joined {
            Ok(ended) => pipeline.finished(ended, cancellation, work),
            Err(join_error) => {
                let error = StepError::Failed(anyhow::anyhow!("a worker task failed: {join_error}"));
                pipeline.first_error.get_or_insert(error);
                cancellation.abort_for_failure();
                // The task's sessions are gone with it; count from what is still running.
                pipeline.sessions_in_use = pipeline.sessions_in_use.min(pipeline.running.len());
            }
        }
    }
    if let Some(error) = pipeline.first_error {
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
    async fn a_child_hears_signals_but_keeps_its_failures_to_itself() {
        let parent = Cancellation::new();
        let first = parent.child();
        first.abort_for_failure();
        assert!(first.is_cancelled());
        assert!(!parent.is_cancelled(), "a failure of one attempt stopped the run");
        let second = parent.child();
        assert!(!second.is_cancelled());
        parent.signal_received(Signal::SIGINT);
        tokio::time::timeout(Duration::from_secs(5), second.cancelled())
            .await
            .unwrap();
        assert_eq!(second.interrupting_signal(), Some(Signal::SIGINT));
        parent.signal_received(Signal::SIGINT);
        tokio::time::timeout(Duration::from_secs(5), second.killing())
            .await
            .unwrap();
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

    /// Records what runs; unit 0 fails its export when `fail_first` is set. With `streamed`,
    /// export loads the unit and there is no import.
    struct RecordingWork {
        log: Arc<std::sync::Mutex<Vec<String>>>,
        streamed: bool,
        fail_first: bool,
        /// Sessions each follow-up asks for.
        follow_up_wants: usize,
        /// Sessions held now, and the most held at once.
        sessions: Arc<std::sync::Mutex<(usize, usize)>>,
    }

    impl RecordingWork {
        fn new(streamed: bool, fail_first: bool) -> RecordingWork {
            RecordingWork {
                log: Default::default(),
                streamed,
                fail_first,
                follow_up_wants: 1,
                sessions: Default::default(),
            }
        }
    }

    impl RecordingWork {
        fn step(&self, entry: String, fails: bool) -> StageFuture {
            self.step_holding(entry, fails, 1)
        }

        fn step_holding(&self, entry: String, fails: bool, held: usize) -> StageFuture {
            let log = self.log.clone();
            let sessions = self.sessions.clone();
            Box::pin(async move {
                {
                    let mut sessions = sessions.lock().unwrap();
                    sessions.0 += held;
                    sessions.1 = sessions.1.max(sessions.0);
                }
                tokio::task::yield_now().await;
                sessions.lock().unwrap().0 -= held;
                log.lock().unwrap().push(entry);
                if fails {
                    Err(StepError::Failed(anyhow::anyhow!("boom")))
                } else {
                    Ok(())
                }
            })
        }
    }

    impl UnitWork<usize> for RecordingWork {
        fn export(&self, unit: Arc<usize>) -> StageFuture {
            self.step(format!("export {unit}"), self.fail_first && *unit == 0)
        }
        fn import(&self, unit: Arc<usize>) -> Option<StageFuture> {
            (!self.streamed).then(|| self.step(format!("import {unit}"), false))
        }
        fn loaded(&self, unit: Arc<usize>) -> Option<FollowUp> {
            // Odd units complete a table, even ones do not.
            if unit.is_multiple_of(2) {
                return None;
            }
            let entry = format!("index {unit}");
            let step = RecordingWork {
                log: self.log.clone(),
                sessions: self.sessions.clone(),
                ..RecordingWork::new(self.streamed, false)
            };
            Some(FollowUp {
                wants: self.follow_up_wants,
                start: Box::new(move |granted| step.step_holding(entry, false, granted)),
            })
        }
    }

    fn budget(sessions: usize) -> Budget {
        Budget {
            sessions,
            tasks: sessions,
        }
    }

    #[tokio::test]
    async fn follow_ups_that_want_many_sessions_get_only_what_the_budget_has_free() {
        for sessions in [1, 2, 3] {
            let mut work = RecordingWork::new(false, false);
            work.follow_up_wants = 8;
            let units: Vec<Arc<usize>> = (0..9).map(Arc::new).collect();
            run_units(units, budget(sessions), &Cancellation::new(), &work)
                .await
                .unwrap();
            let most = work.sessions.lock().unwrap().1;
            assert!(most <= sessions, "{most} sessions at once with a budget of {sessions}");
            assert_eq!(work.log.lock().unwrap().len(), 9 + 9 + 4);
        }
    }

    fn position(log: &[String], entry: &str) -> usize {
        log.iter()
            .position(|logged| logged == entry)
            .unwrap_or_else(|| panic!("{entry} missing from {log:?}"))
    }

    #[tokio::test]
    async fn each_unit_is_imported_after_its_export_and_follow_ups_run_after_its_load() {
        let work = RecordingWork::new(false, false);
        let units: Vec<Arc<usize>> = (0..4).map(Arc::new).collect();
        run_units(units, budget(2), &Cancellation::new(), &work).await.unwrap();
        let log = work.log.lock().unwrap().clone();
        assert_eq!(log.len(), 4 + 4 + 2, "{log:?}");
        for unit in 0..4 {
            assert!(position(&log, &format!("export {unit}")) < position(&log, &format!("import {unit}")));
        }
        for unit in [1, 3] {
            assert!(position(&log, &format!("import {unit}")) < position(&log, &format!("index {unit}")));
        }
        // Pipelined with a budget of 2: the first import starts before the last export.
        assert!(position(&log, "import 0") < position(&log, "export 3"), "{log:?}");
    }

    #[tokio::test]
    async fn streamed_units_have_no_import_and_still_get_their_follow_ups() {
        let work = RecordingWork::new(true, false);
        let units: Vec<Arc<usize>> = (0..3).map(Arc::new).collect();
        run_units(units, budget(1), &Cancellation::new(), &work).await.unwrap();
        let log = work.log.lock().unwrap().clone();
        // With one slot, a ready follow-up goes before the next export.
        assert_eq!(log, ["export 0", "export 1", "index 1", "export 2"]);
    }

    #[tokio::test]
    async fn a_failed_task_lets_the_running_ones_finish_and_starts_no_more() {
        let finished = std::sync::Mutex::new(Vec::new());
        let tasks = [0, 1, 2];
        let outcome = share_out(&["first session", "second session"], &tasks, |_, &task| {
            let finished = &finished;
            async move {
                // Task 0 fails once task 1 is under way; task 1 must then end, not be dropped.
                let turns = if task == 0 { 2 } else { 20 };
                for _ in 0..turns {
                    tokio::task::yield_now().await;
                }
                if task == 0 {
                    anyhow::bail!("task 0 failed");
                }
                finished.lock().unwrap().push(task);
                Ok(task)
            }
        })
        .await;
        assert_eq!(outcome.unwrap_err().to_string(), "task 0 failed");
        assert_eq!(
            *finished.lock().unwrap(),
            vec![1],
            "task 1 finished, task 2 never started"
        );
    }

    #[tokio::test]
    async fn a_failed_unit_stops_the_pipeline_with_its_error() {
        let cancellation = Cancellation::new();
        let work = RecordingWork::new(false, true);
        let units: Vec<Arc<usize>> = (0..3).map(Arc::new).collect();
        let result = run_units(units, budget(1), &cancellation, &work).await;
        match result {
            Err(StepError::Failed(error)) => assert_eq!(error.to_string(), "boom"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(cancellation.is_cancelled());
        assert_eq!(work.log.lock().unwrap().clone(), ["export 0"]);
    }
}
