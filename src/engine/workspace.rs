//! What a run creates and must remove on every way out (success, failure, Ctrl+C, SIGTERM): the
//! dump directory, the password file and the temporary database the copy is built in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::connection::Endpoint;
use crate::report::{Event, Notice, Reporter, Warning};
use crate::secrets::PassFile;
use crate::target::TargetServer;

#[derive(Default)]
pub struct Workspace {
    pub target_server: Option<TargetServer>,
    /// The database the copy is being built in, until it is swapped into place.
    temporary_database: Option<String>,
    swapped: bool,
    dump_directory: Option<tempfile::TempDir>,
    passfile: Option<PassFile>,
}

impl Workspace {
    /// A new `dbsync_dumps_<timestamp>_<random>` directory under `parent`.
    pub fn create_dump_directory(&mut self, parent: &Path, timestamp: &str) -> Result<PathBuf> {
        let directory = tempfile::Builder::new()
            .prefix(&format!("dbsync_dumps_{timestamp}_"))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a dump directory in {}", parent.display()))?;
        let path = directory.path().to_path_buf();
        self.dump_directory = Some(directory);
        Ok(path)
    }

    /// The private password file the children read; see `secrets`.
    pub fn create_passfile(&mut self, endpoints: &[&Endpoint]) -> Result<PathBuf> {
        let entries: Vec<_> = endpoints
            .iter()
            .map(|endpoint| (endpoint.password_key(), endpoint.password.as_ref()))
            .collect();
        let passfile = PassFile::create(&entries)?;
        let path = passfile.path();
        self.passfile = Some(passfile);
        Ok(path)
    }

    pub fn temporary_database_created(&mut self, name: &str) {
        self.temporary_database = Some(name.to_string());
    }

    /// The copy has the target's name now: nothing of it is temporary any more.
    pub fn swapped(&mut self) {
        self.swapped = true;
        self.temporary_database = None;
    }

    pub fn is_swapped(&self) -> bool {
        self.swapped
    }

    /// Removes what the run created; keeps the dump directory when asked to.
    pub async fn clean_up(&mut self, keep_dumps: bool, reporter: &dyn Reporter) {
        reporter.emit(Event::Cleanup);
        if let (Some(server), Some(database)) = (&self.target_server, self.temporary_database.take()) {
            reporter.emit(Event::Notice(Notice::DroppingUnfinished {
                database: database.clone(),
            }));
            let warning = match tokio::time::timeout(Duration::from_secs(60), server.drop_database(&database)).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("{error:#}; drop it by hand")),
                Err(_) => Some(format!("dropping {database} timed out; drop it by hand")),
            };
            if let Some(warning) = warning {
                reporter.emit(Event::Warning(Warning::Other(warning)));
            }
        }
        if let Some(directory) = self.dump_directory.take() {
            if keep_dumps {
                let path = directory.keep();
                reporter.emit(Event::Notice(Notice::KeepingDumps {
                    path: path.display().to_string(),
                }));
            } else {
                reporter.emit(Event::Notice(Notice::RemovingDumps {
                    path: directory.path().display().to_string(),
                }));
                if let Err(error) = directory.close() {
                    reporter.emit(Event::Warning(Warning::Other(format!(
                        "could not remove the dump directory: {error}"
                    ))));
                }
            }
        }
        // Dropping the password file removes it.
        self.passfile = None;
    }
}
