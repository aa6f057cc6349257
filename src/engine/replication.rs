//! The replication slot `dbsync migrate` copies from: created on a replication connection with
//! an exported snapshot (`CREATE_REPLICATION_SLOT … LOGICAL pgoutput`), which tokio-postgres
//! cannot open, so `psql` holds it (`replication=database`), driven over its standard input. The
//! snapshot session adopts the slot's snapshot and exports it again (`catalog::export_snapshot`),
//! and `psql` is ended at once: the copy reads exactly what the slot's changes start after, and
//! no child holding the pass file outlives the moment.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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
