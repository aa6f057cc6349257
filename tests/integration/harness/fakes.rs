//! Fake `pg_dump`/`pg_restore` scripts in front of the real tools, for process handling (failures,
//! hangs, signals), and waiting for what a run prints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::clusters;

/// A directory with `pg_dump` and `pg_restore` scripts. Each script runs `body` (bash) with
/// `$REAL` set to the real tool and `$STATE` to a directory for counters; the default body
/// execs the real tool.
pub(crate) struct FakeTools {
    directory: tempfile::TempDir,
}

impl FakeTools {
    pub(crate) fn new(pg_dump_body: &str, pg_restore_body: &str) -> FakeTools {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::Builder::new().prefix("dbsync-fake-").tempdir().unwrap();
        std::fs::create_dir(directory.path().join("state")).unwrap();
        // Usable by a test that runs dbsync as another user.
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(directory.path().join("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let bin_dir = &clusters().source.bin_dir;
        for (tool, body) in [("pg_dump", pg_dump_body), ("pg_restore", pg_restore_body)] {
            let path = directory.path().join(tool);
            let script = format!(
                "#!/bin/bash\nREAL={real}\nSTATE={state}\nif [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\n{body}\nexec \"$REAL\" \"$@\"\n",
                real = bin_dir.join(tool).display(),
                state = directory.path().join("state").display(),
            );
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeTools { directory }
    }

    pub(crate) fn bin(&self) -> &Path {
        self.directory.path()
    }

    pub(crate) fn state(&self, name: &str) -> PathBuf {
        self.directory.path().join("state").join(name)
    }

    pub(crate) fn read_state(&self, name: &str) -> String {
        std::fs::read_to_string(self.state(name)).unwrap_or_default()
    }
}

/// Whether process `pid` still runs (a zombie, killed but not yet reaped, does not).
pub(crate) fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

pub(crate) fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` with `--plain` output read line by line, sends SIGINT once the first table is
/// done, and returns the exit code and the whole log.
pub(crate) fn interrupt_after_first_table(command: std::process::Command) -> (Option<i32>, String) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let (code, log, acted) = act_on_line(command, "[DONE     ]", |pid| {
        kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    });
    assert!(acted, "no table was done:\n{log}");
    (code, log)
}

/// Runs `command` with `--plain` output read line by line and calls `act` with its process id
/// the moment the first line containing `line` is printed (while the run goes on); returns the
/// exit code, the whole log, and whether `act` was called.
pub(crate) fn act_on_line(
    mut command: std::process::Command,
    line: &str,
    act: impl FnOnce(u32) + Send,
) -> (Option<i32>, String, bool) {
    use std::io::{BufRead, BufReader};

    let mut child = command
        .arg("--plain")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (log, acted) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut log = String::new();
            let mut act = Some(act);
            for printed in BufReader::new(stdout).lines().map_while(Result::ok) {
                log.push_str(&printed);
                log.push('\n');
                if printed.contains(line)
                    && let Some(act) = act.take()
                {
                    act(pid);
                }
            }
            (log, act.is_none())
        });
        reader.join().unwrap()
    });
    let status = child.wait().unwrap();
    (status.code(), log, acted)
}
