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
        let directory = tempfile::Builder::new().prefix("dbsync-fake-").tempdir().unwrap();
        std::fs::create_dir(directory.path().join("state")).unwrap();
        let bin_dir = &clusters().source.bin_dir;
        for (tool, body) in [("pg_dump", pg_dump_body), ("pg_restore", pg_restore_body)] {
            let path = directory.path().join(tool);
            let script = format!(
                "#!/bin/bash\nREAL={real}\nSTATE={state}\nif [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\n{body}\nexec \"$REAL\" \"$@\"\n",
                real = bin_dir.join(tool).display(),
                state = directory.path().join("state").display(),
            );
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
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

pub(crate) fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` with `--plain` output read line by line, sends SIGINT once the first table is
/// done, and returns the exit code and the whole log.
pub(crate) fn interrupt_after_first_table(mut command: std::process::Command) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let mut child = command
        .arg("--plain")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    wait_until(Duration::from_secs(60), "a table done", || {
        log.lock().unwrap().contains("[DONE     ]")
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    (status.code(), log)
}
