//! Child processes: each `pg_dump`/`pg_restore` runs in its own process group with a parent-death
//! signal, its stderr is captured, and cancellation stops the whole group (SIGTERM, then SIGKILL
//! after a grace period or at once on a second signal).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::scheduler::{CancelState, Cancellation};

/// How a child group is stopped when the run is cancelled: `signal` first, then SIGKILL once
/// `grace` has passed (or at once, on a second Ctrl+C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopPolicy {
    pub signal: Signal,
    pub grace: Duration,
}

/// pg_dump and pg_restore end cleanly on SIGTERM within moments; five seconds covers a busy server.
pub const STOP_POLICY: StopPolicy = StopPolicy {
    signal: Signal::SIGTERM,
    grace: Duration::from_secs(5),
};
/// How much of a child's stderr is kept (the end matters most).
const STDERR_LIMIT: usize = 256 * 1024;

/// Environment variables a child must never inherit: passwords travel only in `PGPASSFILE`.
const SECRET_VARIABLES: &[&str] = &["PGPASSWORD", "MAIN_DB_PASSWORD", "ARCHIVE_DB_PASSWORD"];

#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub arguments: Vec<OsString>,
    pub environment: Vec<(String, OsString)>,
    /// Keep stdout (for `pg_restore --list`); otherwise it is discarded.
    pub capture_stdout: bool,
}

impl ChildCommand {
    pub fn new(program: PathBuf) -> ChildCommand {
        ChildCommand {
            program,
            arguments: Vec::new(),
            environment: Vec::new(),
            capture_stdout: false,
        }
    }

    pub fn capturing_stdout(mut self) -> ChildCommand {
        self.capture_stdout = true;
        self
    }

    pub fn argument(mut self, argument: impl Into<OsString>) -> ChildCommand {
        self.arguments.push(argument.into());
        self
    }

    pub fn arguments<I, S>(mut self, arguments: I) -> ChildCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.arguments.extend(arguments.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> ChildCommand {
        self.environment.push((key.to_string(), value.into()));
        self
    }

    /// The program's file name, for messages.
    pub fn name(&self) -> String {
        self.program
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }
}

#[derive(Debug)]
pub struct ChildOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped because the run is being cancelled")]
    Cancelled,
}

/// A started child and the tasks reading its output.
struct Started {
    child: tokio::process::Child,
    process_group: Option<Pid>,
    name: String,
    stdout_reader: Option<tokio::task::JoinHandle<String>>,
    stderr_reader: tokio::task::JoinHandle<String>,
}

/// Runs the command to completion, or until cancellation stops it.
pub async fn run(command: &ChildCommand, cancellation: &Cancellation) -> Result<ChildOutput, ProcessError> {
    if cancellation.is_cancelled() {
        return Err(ProcessError::Cancelled);
    }
    let stdout = if command.capture_stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let started = start(command, Stdio::null(), stdout)?;
    supervise(started, cancellation).await
}

/// Runs `producer | consumer` through a pipe that only the two children hold, so the data never
/// passes through dbsync. Each child has its own process group and is stopped like any other.
pub async fn run_piped(
    producer: &ChildCommand,
    consumer: &ChildCommand,
    cancellation: &Cancellation,
) -> Result<(ChildOutput, ChildOutput), ProcessError> {
    if cancellation.is_cancelled() {
        return Err(ProcessError::Cancelled);
    }
    let (reader, writer) = std::io::pipe().map_err(|source| ProcessError::Spawn {
        program: "a pipe".to_string(),
        source,
    })?;
    // Each end is closed in dbsync as soon as its child has it, so EOF and EPIPE reach the children.
    let producer_started = start(producer, Stdio::null(), Stdio::from(writer))?;
    let consumer_started = match start(consumer, Stdio::from(reader), Stdio::null()) {
        Ok(started) => started,
        Err(error) => {
            signal_group(producer_started.process_group, Signal::SIGKILL);
            return Err(error);
        }
    };
    let (producer_output, consumer_output) = tokio::join!(
        supervise(producer_started, cancellation),
        supervise(consumer_started, cancellation)
    );
    Ok((producer_output?, consumer_output?))
}

fn start(command: &ChildCommand, stdin: Stdio, stdout: Stdio) -> Result<Started, ProcessError> {
    let mut process = Command::new(&command.program);
    process
        .args(&command.arguments)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for variable in SECRET_VARIABLES {
        process.env_remove(variable);
    }
    for (key, value) in &command.environment {
        process.env(key, value);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory shared with the parent.
    unsafe {
        process.pre_exec(|| {
            // If dbsync dies by SIGKILL, its children must not keep copying on their own.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child = process.spawn().map_err(|source| ProcessError::Spawn {
        program: command.program.display().to_string(),
        source,
    })?;
    let process_group = child.id().map(|id| Pid::from_raw(id as i32));
    let stdout_reader = child.stdout.take().map(|mut pipe| {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text).await;
            text
        })
    });
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match stderr_pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => {
                    kept.extend_from_slice(&buffer[..count]);
                    if kept.len() > STDERR_LIMIT * 2 {
                        kept.drain(..kept.len() - STDERR_LIMIT);
                    }
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    Ok(Started {
        child,
        process_group,
        name: command.name(),
        stdout_reader,
        stderr_reader,
    })
}

/// How far stopping a child's process group has gone: the stop policy applied as the run's
/// cancellation escalates.
struct Stop {
    process_group: Option<Pid>,
    /// The cancellation can still change (it stops changing once killing).
    watching: bool,
    terminated: bool,
    /// When the group gets SIGKILL if it is still running.
    kill_deadline: Option<tokio::time::Instant>,
}

impl Stop {
    fn follow(&mut self, state: CancelState) {
        match state {
            CancelState::Running => {}
            CancelState::Stopping(_) if self.terminated => {}
            CancelState::Stopping(_) => {
                signal_group(self.process_group, STOP_POLICY.signal);
                self.terminated = true;
                self.kill_deadline = Some(tokio::time::Instant::now() + STOP_POLICY.grace);
            }
            CancelState::Killing(_) => {
                signal_group(self.process_group, Signal::SIGKILL);
                self.terminated = true;
                self.kill_deadline = None;
                self.watching = false;
            }
        }
    }
}

/// Waits for a started child, stopping its group when the run is cancelled.
async fn supervise(started: Started, cancellation: &Cancellation) -> Result<ChildOutput, ProcessError> {
    let Started {
        mut child,
        process_group,
        name,
        stdout_reader,
        stderr_reader,
    } = started;
    let mut watcher = cancellation.watcher();
    // Look at the current state once, so that a cancellation racing the spawn is not missed.
    watcher.mark_changed();
    let mut stop = Stop {
        process_group,
        watching: true,
        terminated: false,
        kill_deadline: None,
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            changed = watcher.changed(), if stop.watching => match changed {
                Ok(()) => stop.follow(*watcher.borrow_and_update()),
                Err(_) => stop.watching = false,
            },
            _ = sleep_until_optional(stop.kill_deadline) => {
                signal_group(process_group, Signal::SIGKILL);
                stop.kill_deadline = None;
            }
        }
    };
    let terminated = stop.terminated;
    // pg_dump -j workers share the group; make sure none outlives its leader.
    if terminated {
        signal_group(process_group, Signal::SIGKILL);
    }
    let stderr = stderr_reader.await.unwrap_or_default();
    let stdout = match stdout_reader {
        Some(reader) => reader.await.unwrap_or_default(),
        None => String::new(),
    };
    let status = status.map_err(|source| ProcessError::Spawn { program: name, source })?;
    if terminated {
        return Err(ProcessError::Cancelled);
    }
    Ok(ChildOutput { status, stdout, stderr })
}

async fn sleep_until_optional(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn signal_group(process_group: Option<Pid>, signal: Signal) {
    if let Some(group) = process_group {
        // The group may already be gone; that is the outcome we want anyway.
        let _ = killpg(group, signal);
    }
}

/// The lines of a child's stderr worth showing a user: errors and what follows them, at most
/// `limit` lines from the end.
pub fn relevant_stderr(stderr: &str, limit: usize) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    let first_error = lines
        .iter()
        .position(|line| line.contains("error:") || line.contains("ERROR:") || line.contains("FATAL:"));
    let relevant: Vec<&str> = match first_error {
        Some(start) => lines[start..].to_vec(),
        None => lines,
    };
    let skip = relevant.len().saturating_sub(limit);
    relevant[skip..].join("\n")
}

/// The last non-blank line of a message: usually the most specific part of an error.
pub fn last_meaningful_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .to_string()
}
