//! `[hooks]`: each stage's SQL files run in the database the run writes (or, before and after the
//! sync, the target), and its commands run by `sh -c` with the databases in their environment.
//! A hook that fails stops the run with its output.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::{RunContext, interruptible};
use crate::catalog;
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::hooks::{Hook, HookStage};
use crate::process::{self, ChildCommand, ProcessError, Stdout};
use crate::report::{Event, Notice};

/// How much of a command's output the log shows (its last lines).
const OUTPUT_LINES: usize = 20;

/// The shell that runs a command hook, as the leader of the hook's process group. A hook's own
/// children would survive a `kill -9` of dbsync (the parent-death signal reaches only the
/// process dbsync started), so this leader gets SIGHUP when dbsync dies and then kills its whole
/// group. On SIGTERM (dbsync stopping the group) it waits for the hook to end as asked, and
/// exits with the hook's status either way.
const GUARDIAN: &str = "trap 'kill -KILL 0' HUP; trap : TERM INT; /bin/sh -c \"$1\" & hook=$!; \
    wait $hook; status=$?; while kill -0 $hook 2>/dev/null; do wait $hook; status=$?; done; exit $status";

impl RunContext<'_> {
    /// Runs the stage's hooks in order; `work` is the database being written (the copy under
    /// its temporary name, or the target itself).
    pub(super) async fn run_hooks(&self, stage: HookStage, work: &Endpoint) -> Result<(), SyncError> {
        for hook in self.settings.hooks.at(stage) {
            let started = Instant::now();
            let output = match (&hook.sql, &hook.command) {
                (Some(path), _) => self.run_sql_hook(stage, hook, path, work).await?,
                (_, Some(command)) => self.run_command_hook(stage, hook, command, work).await?,
                _ => String::new(),
            };
            self.emit(Event::Notice(Notice::HookDone {
                stage: stage.name(),
                hook: hook.to_string(),
                elapsed: started.elapsed(),
                output,
            }));
        }
        Ok(())
    }

    async fn run_sql_hook(
        &self,
        stage: HookStage,
        hook: &Hook,
        path: &std::path::Path,
        work: &Endpoint,
    ) -> Result<String, SyncError> {
        let script = std::fs::read_to_string(path).map_err(|error| {
            SyncError::Failed(anyhow::anyhow!(
                "the {} hook cannot read {}: {error}",
                stage.name(),
                path.display()
            ))
        })?;
        let name = format!("the {} hook {hook}", stage.name());
        let run = async {
            let client = catalog::connect(work, "hook's").await?;
            catalog::run_script(&client, &script, &name).await
        };
        interruptible(&self.cancellation, run).await?;
        Ok(String::new())
    }

    async fn run_command_hook(
        &self,
        stage: HookStage,
        hook: &Hook,
        command: &str,
        work: &Endpoint,
    ) -> Result<String, SyncError> {
        let settings = self.settings;
        let mut child = ChildCommand::new("/bin/sh".into())
            .arguments(["-c", GUARDIAN, "dbsync-hook", command])
            .death_signal(Signal::SIGHUP)
            // As a shell would run it: the user's own variables (PGPASSWORD among them) reach it.
            .with_users_environment()
            .capturing_stdout(Stdout::Tail)
            .env("DBSYNC_HOOK", stage.name())
            .env("DBSYNC_WORK_DATABASE", &work.dbname)
            .env("DBSYNC_WORK_URI", work.uri_without_password());
        if let Some(target) = settings.places.target() {
            child = child
                .env("DBSYNC_TARGET_DATABASE", &target.dbname)
                .env("DBSYNC_TARGET_URI", target.uri_without_password());
        }
        if let Some(source) = settings.places.source() {
            child = child.env("DBSYNC_SOURCE_URI", source.uri_without_password());
        }
        // Never beside a pg_dump or pg_restore, whose descriptors hold the pass file.
        let output = match process::run_apart(&child, &self.cancellation).await {
            Ok(output) => output,
            Err(ProcessError::Cancelled) => return Err(super::cancelled(&self.cancellation)),
            Err(error) => {
                return Err(SyncError::Failed(anyhow::anyhow!(
                    "the {} hook {hook}: {error}",
                    stage.name()
                )));
            }
        };
        let text = format!("{}{}", output.stdout, output.stderr);
        let tail = last_lines(text.trim_end(), OUTPUT_LINES);
        if output.status.success() {
            return Ok(tail);
        }
        Err(SyncError::Failed(anyhow::anyhow!(
            "the {} hook {hook} failed ({}){}",
            stage.name(),
            output.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(":\n{tail}")
            }
        )))
    }
}

/// The last `count` lines of `text`, saying how many came before them.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let left_out = lines.len().saturating_sub(count);
    let tail = lines[left_out..].join("\n");
    match left_out {
        0 => tail,
        _ => format!("({left_out} earlier lines not shown)\n{tail}"),
    }
}
