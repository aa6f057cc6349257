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
/// How much of a child's stderr (and a hook's stdout) is kept: the end, which matters most.
const OUTPUT_LIMIT: usize = 256 * 1024;
/// How long the output of a child that has exited is still read: a process outside its group
/// (one that made a session of its own) may hold the pipe open for ever.
const OUTPUT_PATIENCE: Duration = Duration::from_secs(2);

/// Environment variables a child must never inherit: passwords travel only in `PGPASSFILE`.
const SECRET_VARIABLES: &[&str] = &["PGPASSWORD", "MAIN_DB_PASSWORD", "ARCHIVE_DB_PASSWORD"];

/// A file (dbsync's in-memory password file) that a child inherits as an open descriptor and
/// reads as `/proc/self/fd/N`. Only children given it have it: every other descriptor of
/// dbsync's is closed on exec, and dbsync's own `/proc/<pid>/fd` is closed to other processes
/// (`forbid_inspection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InheritedFile(std::os::fd::RawFd);

impl InheritedFile {
    pub fn new(descriptor: std::os::fd::RawFd) -> InheritedFile {
        InheritedFile(descriptor)
    }

    /// The path the child opens it by: its own descriptor.
    pub fn path(self) -> String {
        format!("/proc/self/fd/{}", self.0)
    }
}

/// Makes dbsync's memory and descriptors unreadable to other processes of the same user (a
/// hook among them): `/proc/<pid>/fd` and `/proc/<pid>/mem` then need the privilege to trace any
/// process. Also no core dump, which would hold passwords.
pub fn forbid_inspection() {
    let _ = nix::sys::prctl::set_dumpable(false);
}

/// What becomes of a child's standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    Discard,
    /// All of it (for `pg_restore --list`, whose listing is read whole).
    Whole,
    /// At most the last `OUTPUT_LIMIT` bytes (for a hook, whose output may be endless).
    Tail,
}

#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub arguments: Vec<OsString>,
    pub environment: Vec<(String, OsString)>,
    pub stdout: Stdout,
    pub inherited: Option<InheritedFile>,
    /// The signal the child gets when dbsync dies without a chance to stop it (`kill -9`).
    pub death_signal: Signal,
    /// The user's own environment, their password variables included (a hook, run as a shell
    /// would run it); `pg_dump` and `pg_restore` get no password variable but the pass file.
    pub users_environment: bool,
}

impl ChildCommand {
    pub fn new(program: PathBuf) -> ChildCommand {
        ChildCommand {
            program,
            arguments: Vec::new(),
            environment: Vec::new(),
            stdout: Stdout::Discard,
            inherited: None,
            death_signal: Signal::SIGKILL,
            users_environment: false,
        }
    }

    /// Keeps the user's whole environment for the child (see `users_environment`).
    pub fn with_users_environment(mut self) -> ChildCommand {
        self.users_environment = true;
        self
    }

    pub fn capturing_stdout(mut self, stdout: Stdout) -> ChildCommand {
        self.stdout = stdout;
        self
    }

    /// Gives the child the password file, as libpq's `PGPASSFILE`.
    pub fn password_file(mut self, file: InheritedFile) -> ChildCommand {
        self.inherited = Some(file);
        self.env("PGPASSFILE", file.path())
    }

    pub fn death_signal(mut self, signal: Signal) -> ChildCommand {
        self.death_signal = signal;
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
    stdout_reader: Option<(OutputReader, Option<usize>)>,
    stderr_reader: OutputReader,
}

/// A task reading one of a child's pipes into memory as it comes, keeping at most the last
/// `limit` bytes.
struct OutputReader {
    kept: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OutputReader {
    fn start(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static, limit: Option<usize>) -> OutputReader {
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let kept = kept.clone();
            async move {
                let mut buffer = [0u8; 8192];
                loop {
                    match pipe.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(count) => {
                            let mut kept = kept.lock().expect("output buffer");
                            kept.extend_from_slice(&buffer[..count]);
                            if let Some(limit) = limit
                                && kept.len() > limit * 2
                            {
                                let excess = kept.len() - limit;
                                kept.drain(..excess);
                            }
                        }
                    }
                }
            }
        });
        OutputReader { kept, task }
    }

    /// What was read, once the pipe is closed or `OUTPUT_PATIENCE` has passed.
    async fn finish(mut self, limit: Option<usize>) -> String {
        if tokio::time::timeout(OUTPUT_PATIENCE, &mut self.task).await.is_err() {
            self.task.abort();
        }
        let kept = std::mem::take(&mut *self.kept.lock().expect("output buffer"));
        let start = limit.map_or(0, |limit| kept.len().saturating_sub(limit));
        String::from_utf8_lossy(&kept[start..]).into_owned()
    }
}

/// Runs the command to completion, or until cancellation stops it.
pub async fn run(command: &ChildCommand, cancellation: &Cancellation) -> Result<ChildOutput, ProcessError> {
    if cancellation.is_cancelled() {
        return Err(ProcessError::Cancelled);
    }
    let _holding = hold_pass_file(command.inherited.is_some(), cancellation).await?;
    let stdout = match command.stdout {
        Stdout::Discard => Stdio::null(),
        Stdout::Whole | Stdout::Tail => Stdio::piped(),
    };
    let started = start(command, Stdio::null(), stdout)?;
    supervise(started, cancellation).await
}

/// Children holding the pass file share this lock; a command that must not be able to reach
/// the file (a hook, which runs as the same user and could read another process's
/// descriptors) takes it alone, so it runs while none of them does, and none starts meanwhile.
static PASS_FILE_HOLDERS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A share of `PASS_FILE_HOLDERS` for a child given the pass file (`given`), held while it runs.
pub(crate) async fn hold_pass_file(
    given: bool,
    cancellation: &Cancellation,
) -> Result<Option<tokio::sync::RwLockReadGuard<'static, ()>>, ProcessError> {
    if !given {
        return Ok(None);
    }
    tokio::select! {
        guard = PASS_FILE_HOLDERS.read() => Ok(Some(guard)),
        () = cancellation.cancelled() => Err(ProcessError::Cancelled),
    }
}

/// Runs `command` (which must not be given the pass file) while no child that holds the pass
/// file runs: it waits for those running to end, and holds back new ones until it ends.
pub async fn run_apart(command: &ChildCommand, cancellation: &Cancellation) -> Result<ChildOutput, ProcessError> {
    assert!(command.inherited.is_none(), "a command run apart gets no pass file");
    let _alone = tokio::select! {
        guard = PASS_FILE_HOLDERS.write() => guard,
        () = cancellation.cancelled() => return Err(ProcessError::Cancelled),
    };
    run(command, cancellation).await
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
    // One share for both: a second, asked for while a hook waits, would wait behind it.
    let _holding = hold_pass_file(
        producer.inherited.is_some() || consumer.inherited.is_some(),
        cancellation,
    )
    .await?;
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

/// A child dbsync talks to over its standard input and output (`psql` holding a replication
/// session), stopped when dropped. It gets the pass file: its session is opened before anything
/// else runs (no hook can run meanwhile) and it is ended as soon as its answer is read.
pub fn spawn_conversing(command: &ChildCommand) -> Result<tokio::process::Child, ProcessError> {
    let mut process = prepared(command, Stdio::piped(), Stdio::piped());
    process.spawn().map_err(|source| ProcessError::Spawn {
        program: command.program.display().to_string(),
        source,
    })
}

fn start(command: &ChildCommand, stdin: Stdio, stdout: Stdio) -> Result<Started, ProcessError> {
    let mut process = prepared(command, stdin, stdout);
    let mut child = process.spawn().map_err(|source| ProcessError::Spawn {
        program: command.program.display().to_string(),
        source,
    })?;
    let process_group = child.id().map(|id| Pid::from_raw(id as i32));
    let stdout_limit = (command.stdout == Stdout::Tail).then_some(OUTPUT_LIMIT);
    let stdout_reader = child.stdout.take().map(|pipe| OutputReader::start(pipe, stdout_limit));
    let stderr_reader = OutputReader::start(child.stderr.take().expect("stderr is piped"), Some(OUTPUT_LIMIT));
    Ok(Started {
        child,
        process_group,
        name: command.name(),
        stdout_reader: stdout_reader.map(|reader| (reader, stdout_limit)),
        stderr_reader,
    })
}

/// The process `command` describes, in a process group of its own, killed when dropped or when
/// dbsync dies, given only the environment and descriptor it should have.
fn prepared(command: &ChildCommand, stdin: Stdio, stdout: Stdio) -> Command {
    let mut process = Command::new(&command.program);
    process
        .args(&command.arguments)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !command.users_environment {
        // The conninfo dbsync gives a tool is complete: a service would only add to it.
        for variable in SECRET_VARIABLES.iter().chain(&["PGSERVICE"]) {
            process.env_remove(variable);
        }
    }
    for (key, value) in &command.environment {
        process.env(key, value);
    }
    let death_signal = command.death_signal;
    let inherited = command.inherited;
    // SAFETY: prctl and fcntl are async-signal-safe and touch no memory shared with the parent.
    unsafe {
        process.pre_exec(move || {
            // If dbsync dies by SIGKILL, its children must not keep copying on their own.
            nix::sys::prctl::set_pdeathsig(death_signal).map_err(std::io::Error::from)?;
            if let Some(InheritedFile(descriptor)) = inherited {
                // Only in this child: the descriptor stays open across its exec.
                if nix::libc::fcntl(descriptor, nix::libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    process
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
    // Nothing of the group outlives its leader: pg_dump -j workers, or what a hook left running
    // in the background (which would otherwise hold its output open, and dbsync with it).
    signal_group(process_group, Signal::SIGKILL);
    let stderr = stderr_reader.finish(Some(OUTPUT_LIMIT)).await;
    let stdout = match stdout_reader {
        Some((reader, limit)) => reader.finish(limit).await,
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
