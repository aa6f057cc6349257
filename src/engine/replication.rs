//! The replication slot `dbsync migrate` copies from: created on a replication connection with
//! an exported snapshot (`CREATE_REPLICATION_SLOT … LOGICAL pgoutput`), which tokio-postgres
//! cannot open, so `psql` holds it (`replication=database`), driven over its standard input. The
//! snapshot session adopts the slot's snapshot and exports it again (`catalog::export_snapshot`),
//! and `psql` is ended at once: the copy reads exactly what the slot's changes start after, and
//! no child holding the pass file outlives the moment.
//!
//! While the migration follows: the sessions dbsync watches it with (`Watch`), opened again after
//! a server's restart, and what tells a subscription worker that fails from one that a restart
//! interrupted (`WorkerHealth`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::catalog::{self, SlotLag, SubscriptionState};
use crate::connection::Endpoint;
use crate::process::{ChildCommand, InheritedFile};

/// What a migration made, by name, removed on every way out (`Migrate::clean_up`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationObjects {
    /// On the source.
    pub publication: Option<String>,
    pub slot: Option<String>,
    /// On the target.
    pub subscription: Option<String>,
    /// The sequences the cut-over sets on the target.
    pub sequences: Vec<crate::catalog::QualifiedName>,
}

/// The slot's exported snapshot for the copy to adopt, the session that holds it, and the news
/// of the slot, said when the copy takes its snapshot (after the run's banner).
pub struct AdoptedSnapshot {
    pub snapshot: String,
    pub session: SlotSession,
    pub news: crate::report::MigrationNews,
}

/// The slot just created: the snapshot it exported, and where its changes start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub snapshot: String,
    pub position: String,
}

/// `psql` on a replication connection to the source, holding the slot's exported snapshot until
/// it is ended (the snapshot can be imported only while this session is open and idle).
pub struct SlotSession {
    child: tokio::process::Child,
    _pass_file: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

impl SlotSession {
    /// Creates the logical slot `slot` (for `pgoutput`) on `source`, exporting its snapshot.
    pub async fn create(
        psql: PathBuf,
        passfile: InheritedFile,
        source: &Endpoint,
        (slot, source_major): (&str, u32),
    ) -> anyhow::Result<(SlotSession, CreatedSlot)> {
        let command = ChildCommand::new(psql)
            .password_file(passfile)
            .arguments(["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d"])
            .argument(format!("{} replication=database", source.child_conninfo()));
        let guard = crate::process::hold_pass_file(true, &crate::scheduler::Cancellation::new())
            .await
            .map_err(|error| anyhow!("{error}"))?;
        let child = crate::process::spawn_conversing(&command)?;
        let mut session = SlotSession {
            child,
            _pass_file: guard,
        };
        // 15+ takes options in parentheses; before, the keyword (still understood after).
        let export = match source_major >= 15 {
            true => "(SNAPSHOT 'export')",
            false => "EXPORT_SNAPSHOT",
        };
        let statement = format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput {export};\n");
        let stdin = session.child.stdin.as_mut().context("psql has no standard input")?;
        stdin.write_all(statement.as_bytes()).await?;
        stdin.flush().await?;
        let stdout = session.child.stdout.as_mut().context("psql has no standard output")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        // slot_name|consistent_point|snapshot_name|output_plugin
        let fields: Vec<&str> = line.trim().split('|').collect();
        if fields.len() < 3 || fields[2].is_empty() {
            let mut stderr = String::new();
            if let Some(pipe) = session.child.stderr.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(5), pipe.read_to_string(&mut stderr)).await;
            }
            bail!(
                "cannot create the replication slot on the source: {}",
                crate::process::last_meaningful_line(&stderr)
            );
        }
        let created = CreatedSlot {
            position: fields[1].to_string(),
            snapshot: fields[2].to_string(),
        };
        Ok((session, created))
    }

    /// Ends the replication session (the slot stays).
    pub async fn end(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\\q\n").await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// How long the target may go without applying while its worker keeps starting again, before
/// dbsync says that it stopped applying.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Apply errors (15+) in a row with nothing applied between them: the worker fails again at
/// each retry (a restart of the source breaks the stream once).
pub const APPLY_ERRORS_LIMIT: i64 = 3;

/// The sessions a following dbsync reads the slot and the subscription with. A server that
/// restarts ends them; `reopen` opens them again.
pub struct Watch {
    pub source: tokio_postgres::Client,
    pub target: tokio_postgres::Client,
    pub target_major: u32,
    /// The target session's application name, by which `--cutover` finds a following dbsync.
    pub application: Option<String>,
}

impl Watch {
    pub async fn open(source: &Endpoint, target: &Endpoint) -> anyhow::Result<Self> {
        let (source, target) =
            tokio::try_join!(catalog::connect(source, "source"), catalog::connect(target, "target"))?;
        let target_major = catalog::server_info(&target).await?.major();
        Ok(Self {
            source,
            target,
            target_major,
            application: None,
        })
    }

    /// The server whose session was ended (a restart, a network cut), if one was.
    pub fn lost(&self) -> Option<&'static str> {
        match (self.source.is_closed(), self.target.is_closed()) {
            (true, _) => Some("source"),
            (false, true) => Some("target"),
            (false, false) => None,
        }
    }

    /// Opens again the sessions a server ended; an error while it does not accept them yet.
    pub async fn reopen(&mut self, source: &Endpoint, target: &Endpoint) -> anyhow::Result<()> {
        if self.source.is_closed() {
            self.source = catalog::connect(source, "source").await?;
        }
        if self.target.is_closed() {
            let client = catalog::connect(target, "target").await?;
            if let Some(application) = &self.application {
                catalog::set_application_name(&client, application).await?;
            }
            self.target = client;
        }
        Ok(())
    }

    pub async fn name_target_session(&mut self, application: String) -> anyhow::Result<()> {
        catalog::set_application_name(&self.target, &application).await?;
        self.application = Some(application);
        Ok(())
    }
}

/// Whether the target keeps applying the source's changes. Progress is the target's
/// confirmations moving through the slot (or nothing left to apply). Without it, the worker has
/// failed when its apply errors (15+) rise again and again, or when, for `STALL_LIMIT`, no worker
/// ran or each one was new (a failing worker starts again every few seconds; one applying a long
/// transaction stays the same). A restart of either server is forgiven (`forgive`).
#[derive(Debug)]
pub struct WorkerHealth {
    last_progress: Instant,
    confirmed: i64,
    /// The apply error count at the last progress; `None` until read after it.
    errors_at_progress: Option<i64>,
    /// The worker's process, and since when it was seen.
    worker: Option<(i32, Instant)>,
}

impl WorkerHealth {
    pub fn new() -> Self {
        Self {
            last_progress: Instant::now(),
            confirmed: 0,
            errors_at_progress: None,
            worker: None,
        }
    }

    /// Takes one reading (made `now`); true when the target has stopped applying.
    pub fn stopped(&mut self, state: &SubscriptionState, lag: &SlotLag, now: Instant) -> bool {
        if !state.enabled {
            return true;
        }
        self.worker = match (self.worker, state.worker) {
            (Some((seen, since)), Some(pid)) if seen == pid => Some((pid, since)),
            (_, Some(pid)) => Some((pid, now)),
            (_, None) => None,
        };
        if lag.confirmed > self.confirmed || lag.bytes <= 0 {
            self.confirmed = self.confirmed.max(lag.confirmed);
            self.last_progress = now;
            self.errors_at_progress = state.apply_errors;
            return false;
        }
        let errors_at_progress = *self.errors_at_progress.get_or_insert(state.apply_errors.unwrap_or(0));
        let errors = state.apply_errors.unwrap_or(0) - errors_at_progress;
        let only_new_workers = self.worker.is_none_or(|(_, since)| since > self.last_progress);
        errors >= APPLY_ERRORS_LIMIT || (only_new_workers && now.duration_since(self.last_progress) > STALL_LIMIT)
    }

    /// A server was away (`now` it is back): what the worker did meanwhile is the restart's.
    pub fn forgive(&mut self, now: Instant) {
        self.last_progress = now;
        self.errors_at_progress = None;
    }
}

impl Default for WorkerHealth {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(worker: Option<i32>, apply_errors: Option<i64>) -> SubscriptionState {
        SubscriptionState {
            enabled: true,
            worker,
            apply_errors,
            rows_written: 0,
        }
    }

    fn lag(confirmed: i64, bytes: i64) -> SlotLag {
        SlotLag {
            bytes,
            seconds: None,
            active: true,
            confirmed,
        }
    }

    #[test]
    fn a_worker_that_fails_at_each_retry_is_stopped_after_a_few_errors() {
        let start = Instant::now();
        let mut health = WorkerHealth::new();
        assert!(!health.stopped(&state(Some(10), Some(0)), &lag(100, 50), start));
        // Stuck before the change it cannot apply: its confirmations no longer move.
        let at = |seconds| start + Duration::from_secs(seconds);
        assert!(!health.stopped(&state(Some(11), Some(1)), &lag(100, 80), at(1)));
        assert!(!health.stopped(&state(Some(12), Some(2)), &lag(100, 90), at(6)));
        assert!(health.stopped(&state(Some(13), Some(3)), &lag(100, 95), at(11)));
    }

    #[test]
    fn a_restart_that_broke_the_stream_once_is_not_a_failure() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut health = WorkerHealth::new();
        assert!(!health.stopped(&state(Some(10), Some(0)), &lag(100, 50), start));
        assert!(!health.stopped(&state(None, Some(1)), &lag(100, 60), at(1)));
        health.forgive(at(20));
        assert!(!health.stopped(&state(Some(11), Some(2)), &lag(100, 60), at(21)));
        // The new worker applies again: progress, and the errors before it no longer count.
        assert!(!health.stopped(&state(Some(11), Some(2)), &lag(160, 0), at(22)));
        assert!(!health.stopped(&state(Some(11), Some(3)), &lag(160, 10), at(23)));
        assert!(!health.stopped(&state(Some(11), Some(4)), &lag(160, 10), at(24)));
    }

    #[test]
    fn without_error_counts_only_new_workers_for_the_stall_limit_mean_failure() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        // A 14 target: no apply error count; a new worker every five seconds, nothing applied.
        let mut failing = WorkerHealth::new();
        assert!(!failing.stopped(&state(Some(1), None), &lag(100, 0), start));
        let mut stopped = false;
        for (pid, second) in (2..).zip((5..=40).step_by(5)) {
            stopped = failing.stopped(&state(Some(pid), None), &lag(100, 70), at(second));
        }
        assert!(stopped, "a worker started again and again, applying nothing");
        // One worker applying a long transaction: its confirmations wait for the commit.
        let mut busy = WorkerHealth::new();
        assert!(!busy.stopped(&state(Some(1), None), &lag(100, 0), start));
        for second in (5..=120).step_by(5) {
            assert!(!busy.stopped(&state(Some(1), None), &lag(100, 5_000), at(second)));
        }
    }

    #[test]
    fn a_disabled_subscription_has_stopped() {
        let mut health = WorkerHealth::new();
        let disabled = SubscriptionState {
            enabled: false,
            ..state(None, None)
        };
        assert!(health.stopped(&disabled, &lag(0, 0), Instant::now()));
    }
}
