//! What every mode of a run shares: the run context (settings, reporter, cancellation,
//! workspace, progress, the phase clock, warnings) with its cleanup, verdict and summary, and the
//! number of sessions the servers granted, the one number anything that opens sessions may use.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::progress::{PhaseClock, Progress};
use super::steps::{DumpSpace, Job};
use super::workspace::Workspace;
use super::{RunOutcome, cancelled, resume, step_error};
use crate::catalog::QualifiedName;
use crate::errors::{ExitCode, Outcome, SyncError};
use crate::plan::Plan;
use crate::process::last_meaningful_line;
use crate::report::{Event, Notice, Reporter, Summary, Timeline, Warning};
use crate::scheduler::{AttemptError, Cancellation, with_retries};
use crate::settings::{Jobs, Places, Settings};

/// Sessions dbsync opens besides those of `--jobs`: on the source the progress monitor (the
/// snapshot session is already open, so counted as taken); on the target the maintenance
/// session (open too), the validation count and the progress monitor.
const OWN_SOURCE_SESSIONS: i64 = 1;
const OWN_TARGET_SESSIONS: i64 = 2;

/// `--jobs` as the servers granted it: lowered to the connection slots both can spare. Only
/// `GrantedJobs::grant` makes one, so every step that opens sessions (loads, index builds,
/// checksums, `verify`, refreshes, incremental, merge, dump) is given this number and never the
/// one the user asked for, which can be far more than a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantedJobs(Jobs);

/// The connection slots a server can spare, from `catalog::free_connection_slots`; `None` for a
/// side the run does not connect to (a dump has no target, a restore no source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSlots {
    pub source: Option<i64>,
    pub target: Option<i64>,
}

impl GrantedJobs {
    /// `wanted`, lowered to what the servers can give so that dbsync never takes the connection
    /// slots other clients need (with a warning saying so); an error when they cannot give one.
    pub fn grant(wanted: Jobs, free: FreeSlots) -> Result<(GrantedJobs, Option<Warning>), SyncError> {
        let allowed = [
            free.source.map(|slots| slots - OWN_SOURCE_SESSIONS),
            free.target.map(|slots| slots - OWN_TARGET_SESSIONS),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(allowed) = allowed else {
            return Ok((GrantedJobs(wanted), None));
        };
        if allowed < 1 {
            return Err(SyncError::Failed(anyhow::anyhow!(
                "the servers have no connection slots to spare (free: {}; dbsync needs {} on the source and {} on the target of its own, plus one per job)\nhint: close idle sessions or raise max_connections",
                describe_free(free),
                OWN_SOURCE_SESSIONS + 1,
                OWN_TARGET_SESSIONS + 1
            )));
        }
        if wanted.get() as i64 <= allowed {
            return Ok((GrantedJobs(wanted), None));
        }
        let lowered = Jobs::new(allowed as usize).expect("at least one");
        let warning = Warning::JobsLowered {
            wanted: wanted.get(),
            allowed: lowered.get(),
            free: describe_free(free),
        };
        Ok((GrantedJobs(lowered), Some(warning)))
    }

    /// A number of sessions no server was asked about, for a test of a step.
    #[cfg(test)]
    pub fn assumed(count: usize) -> GrantedJobs {
        GrantedJobs(Jobs::new(count).expect("at least one"))
    }

    pub fn get(self) -> usize {
        self.0.get()
    }
}

/// `12 (source) and 40 (target)`, naming only the servers the run connects to.
fn describe_free(free: FreeSlots) -> String {
    [(free.source, "source"), (free.target, "target")]
        .into_iter()
        .filter_map(|(slots, side)| slots.map(|slots| format!("{slots} ({side})")))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// One run's state, filled in as it progresses; what cleanup and the summary need.
pub(super) struct RunContext<'a> {
    pub(super) settings: &'a Settings,
    pub(super) reporter: Arc<dyn Reporter>,
    /// Stops the current copy: signals, or a failure of one of its steps.
    pub(super) cancellation: Cancellation,
    /// Signals only: a copy started again after the source lost its snapshot gets a fresh
    /// `cancellation` under it.
    pub(super) root_cancellation: Cancellation,
    pub(super) workspace: Workspace,
    pub(super) progress: Arc<Progress>,
    pub(super) dump_space: Arc<DumpSpace>,
    pub(super) warnings: Vec<String>,
    /// Sequences and large objects the plan copies.
    pub(super) plan_totals: (usize, i64),
    /// Names the temporary database, and the previous target while the swap puts it aside.
    pub(super) run_suffix: String,
    /// `--jobs`, as the servers granted it in preflight (`None` until then).
    pub(super) granted: Option<GrantedJobs>,
    /// What `--retain` dropped.
    pub(super) archives_dropped: Vec<String>,
    /// Warnings found before the banner, shown just after it.
    pub(super) deferred_warnings: Vec<Warning>,
    pub(super) phase_clock: PhaseClock,
    /// Masked columns and their expressions, by planned table (`[transform]`).
    pub(super) masks: std::collections::HashMap<usize, Vec<(String, String)>>,
    /// The source database's identity, once inspected (`catalog::database_identity`).
    pub(super) source_identity: Option<String>,
    /// Objects per transaction when the schema is restored in batches, because one transaction
    /// would not fit the target's lock table (`preflight::check_lock_capacity`).
    pub(super) schema_transaction_size: Option<u32>,
    /// The major versions of the source (or the archive's source) and of the target server,
    /// once the target's preflight knows both.
    pub(super) majors: Option<(u32, u32)>,
    /// `[subset]`: where it starts and the keys it follows, once planned.
    pub(super) subset: Option<crate::subset::SubsetPlan>,
    /// The rows `[subset]` chose of each planned table: what validation expects of the copy.
    pub(super) chosen_counts: Option<Vec<i64>>,
    /// `[subset]` with `--verify checksum`: how the copy's rows differ from the chosen ones,
    /// compared once they were loaded (while the copy still held what was chosen).
    pub(super) subset_checksums: Option<Vec<crate::report::VerifyDifference>>,
    /// `dbsync migrate`: the replication slot's exported snapshot, and the session holding it
    /// until the snapshot session adopts it.
    pub(super) adopted_snapshot: std::sync::Mutex<Option<super::replication::AdoptedSnapshot>>,
    /// `dbsync migrate`: what it made on either server, removed on every way out.
    pub(super) migration: Option<super::replication::MigrationObjects>,
    /// `dbsync migrate`: when the cut-over began.
    pub(super) cutover_started: Option<Instant>,
    /// `dbsync migrate --stop-writes`: the source database was made read-only.
    pub(super) source_made_read_only: bool,
}

impl<'a> RunContext<'a> {
    /// Each member of the plan's tables (in `Plan::members` order) with its masked columns.
    pub(super) fn member_masks(&self, plan: &Plan) -> Vec<Vec<(String, String)>> {
        plan.tables
            .iter()
            .enumerate()
            .flat_map(|(index, table)| {
                let masked = self.masks.get(&index).cloned().unwrap_or_default();
                table.members.iter().map(move |_| masked.clone())
            })
            .collect()
    }

    /// The masked columns of the planned table `member` belongs to.
    pub(super) fn masks_of_member(&self, plan: &Plan, member: &QualifiedName) -> Vec<(String, String)> {
        plan.tables
            .iter()
            .position(|table| table.members.contains(member))
            .and_then(|table| self.masks.get(&table).cloned())
            .unwrap_or_default()
    }

    pub(super) fn emit(&self, event: Event) {
        if let Event::Phase(phase) = &event {
            self.phase_clock.enter(phase.key());
        }
        self.reporter.emit(event);
    }

    pub(super) fn new(
        settings: &'a Settings,
        reporter: Arc<dyn Reporter>,
        cancellation: Cancellation,
    ) -> RunContext<'a> {
        RunContext {
            settings,
            reporter,
            cancellation: cancellation.child(),
            root_cancellation: cancellation,
            workspace: Workspace::default(),
            progress: Arc::new(Progress::default()),
            dump_space: Default::default(),
            warnings: Vec::new(),
            plan_totals: (0, 0),
            run_suffix: format!("{:08x}", rand::random::<u32>()),
            phase_clock: PhaseClock::default(),
            masks: Default::default(),
            source_identity: None,
            schema_transaction_size: None,
            majors: None,
            subset: None,
            chosen_counts: None,
            subset_checksums: None,
            adopted_snapshot: Default::default(),
            migration: None,
            cutover_started: None,
            source_made_read_only: false,
            granted: None,
            archives_dropped: Vec::new(),
            deferred_warnings: Vec::new(),
        }
    }

    /// Cleanup on every way out, then the verdict and the summary.
    pub(super) async fn finish(
        mut self,
        mut result: Result<(), SyncError>,
        started: Instant,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> RunOutcome {
        self.phase_clock.enter("cleanup");
        let kept = self
            .workspace
            .clean_up(self.settings.keep_dumps(), &*self.reporter, &self.root_cancellation)
            .await;
        let dumps = kept.dumps.as_ref().or(self.settings.resume.as_ref());
        if result.is_err()
            && let Places::Databases { source, target } = &self.settings.places
            && let Some(directory) = resume::resumable(dumps)
        {
            self.emit(Event::Notice(Notice::ResumeWith {
                copy: kept.copy,
                command: resume::resume_command(source, target, directory),
            }));
        }
        // Whatever failed while a signal was being handled, the signal is why the run ended.
        if let Some(signal) = self.root_cancellation.interrupting_signal()
            && !self.workspace.is_swapped()
        {
            result = Err(SyncError::Interrupted(signal));
        }
        // One instant ends both the run's time and its last stretch, so the stretches never add
        // up to more than the whole.
        let finished = Instant::now();
        let summary = self.summary(&result, finished.duration_since(started), finished, started_at);
        RunOutcome { result, summary }
    }

    /// What the progress and the summary follow from now on.
    pub(super) fn adopt_plan(&mut self, plan: &Plan) {
        self.progress.set_plan(plan);
        let large_objects = if plan.copy_large_objects {
            plan.large_object_count
        } else {
            0
        };
        self.plan_totals = (plan.sequences.len(), large_objects);
    }

    /// Where the run reads: the source (redacted), or a restore's archive directory.
    pub(super) fn origin(&self) -> String {
        match &self.settings.places {
            Places::Databases { source, .. } | Places::Dump { source, .. } => source.to_string(),
            Places::Restore { archive, .. } => archive.display().to_string(),
        }
    }

    /// Where the run writes: the target (redacted), or a dump's archive directory.
    pub(super) fn destination(&self) -> String {
        match &self.settings.places {
            Places::Databases { target, .. } | Places::Restore { target, .. } => target.to_string(),
            Places::Dump { output, .. } => output.display().to_string(),
        }
    }

    /// Lowers `--jobs` to what the servers can spare (`free`), once, before this run opens any
    /// session of its jobs; returns the warning when it was lowered.
    pub(super) fn grant_jobs(&mut self, free: FreeSlots) -> Result<Option<Warning>, SyncError> {
        let (granted, lowered) = GrantedJobs::grant(self.settings.jobs, free)?;
        self.granted = Some(granted);
        Ok(lowered)
    }

    /// The sessions per server this run may use: only ever what the servers granted.
    pub(super) fn granted_jobs(&self) -> GrantedJobs {
        self.granted
            .expect("every mode grants its jobs in preflight, before it opens their sessions")
    }

    pub(super) fn warn(&mut self, warning: Warning) {
        self.warnings.push(warning.to_string());
        self.emit(Event::Warning(warning));
    }

    pub(super) fn check_cancelled(&self) -> Result<(), SyncError> {
        match self.cancellation.is_cancelled() {
            true => Err(cancelled(&self.cancellation)),
            false => Ok(()),
        }
    }

    pub(super) fn announce_retry(&self, step: &'static str, attempt: u32, error: &anyhow::Error, delay: Duration) {
        self.emit(Event::Warning(Warning::Retrying {
            step,
            attempt,
            delay,
            error: last_meaningful_line(&format!("{error:#}")),
        }))
    }

    /// A step of the schema, tried again after transient failures, each retry announced.
    pub(super) async fn retried<T, Fut>(
        &self,
        job: &Job,
        step: &'static str,
        attempt: impl FnMut(u32) -> Fut,
    ) -> Result<T, SyncError>
    where
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let on_retry = |attempt, error: &anyhow::Error, delay| self.announce_retry(step, attempt, error, delay);
        with_retries(job.retry_policy, &job.cancellation, on_retry, attempt)
            .await
            .map_err(|error| step_error(&self.cancellation, error))
    }

    pub(super) fn summary(
        &self,
        result: &Result<(), SyncError>,
        elapsed: Duration,
        finished: Instant,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Summary {
        let (outcome, exit_code, error) = match result {
            Ok(()) => (Outcome::Success, ExitCode::SUCCESS, None),
            Err(error) => (error.outcome(), error.exit_code(), Some(format!("{error:#}"))),
        };
        Summary {
            mode: self.settings.kind(),
            dbsync_version: env!("CARGO_PKG_VERSION"),
            source: self.origin(),
            target: self.destination(),
            started_at: started_at.to_rfc3339(),
            total_seconds: elapsed.as_secs_f64(),
            outcome,
            exit_code,
            error,
            tables: self.progress.summary_rows(),
            sequences: self.plan_totals.0,
            large_objects: self.plan_totals.1,
            warnings: self.warnings.clone(),
            peak_memory_bytes: peak_memory_bytes(),
            peak_dump_bytes: self.dump_space.peak(),
            archives_dropped: self.archives_dropped.clone(),
            phases: self.phase_clock.times(finished),
            timeline: Timeline {
                phases: self.phase_clock.spans(finished),
                steps: self.progress.step_spans(self.phase_clock.origin()),
            },
        }
    }
}

/// The most memory dbsync itself (not its children) has held at once: the kernel's high-water
/// mark of this program's resident memory (`VmHWM`). Not `getrusage`: its `ru_maxrss` carries over
/// through `exec` the size of the process that started dbsync.
fn peak_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kibibytes * 1024)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(count: usize) -> Jobs {
        Jobs::new(count).unwrap()
    }

    fn both(source: i64, target: i64) -> FreeSlots {
        FreeSlots {
            source: Some(source),
            target: Some(target),
        }
    }

    #[test]
    fn jobs_are_lowered_to_the_slots_both_servers_can_spare() {
        let (kept, warning) = GrantedJobs::grant(jobs(4), both(100, 100)).unwrap();
        assert_eq!((kept.get(), warning), (4, None));
        let (lowered, warning) = GrantedJobs::grant(jobs(10_000), both(97, 50)).unwrap();
        assert_eq!(lowered.get(), 48);
        assert_eq!(
            warning,
            Some(Warning::JobsLowered {
                wanted: 10_000,
                allowed: 48,
                free: "97 (source) and 50 (target)".into(),
            })
        );
        assert!(GrantedJobs::grant(jobs(2), both(1, 50)).is_err());
    }

    #[test]
    fn a_run_with_one_server_is_lowered_by_that_server_alone() {
        let source_only = FreeSlots {
            source: Some(11),
            target: None,
        };
        let (lowered, warning) = GrantedJobs::grant(jobs(100_000), source_only).unwrap();
        assert_eq!(lowered.get(), 10);
        assert!(
            warning
                .unwrap()
                .to_string()
                .contains("can spare 11 (source) connection slots")
        );
        let target_only = FreeSlots {
            source: None,
            target: Some(7),
        };
        assert_eq!(GrantedJobs::grant(jobs(100), target_only).unwrap().0.get(), 5);
        let full = FreeSlots {
            source: None,
            target: Some(2),
        };
        let error = GrantedJobs::grant(jobs(3), full).unwrap_err();
        assert!(error.to_string().contains("free: 2 (target)"), "{error}");
    }
}
