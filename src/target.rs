//! The target server: building the copy under a temporary database name, giving it the source's
//! encoding, locale and database-level settings, and swapping it into place only when it is
//! complete, so the database the user had survives any failure.

use anyhow::{Context, Result, bail};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::catalog::{self, DatabaseInfo, DatabaseSetting};
use crate::connection::Endpoint;
use crate::scheduler::Cancellation;

/// PostgreSQL silently truncates longer identifiers; names are built to fit.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Databases dbsync never replaces: the templates every `CREATE DATABASE` copies, and the
/// maintenance database tools and people connect to first.
const NEVER_REPLACED: &[&str] = &["template0", "template1", "postgres"];

/// How long a create, rename or drop may wait for a lock (another session's transaction on the
/// database's catalog row): the swap must finish or be undone within moments, never hang.
const MAINTENANCE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest suffix a run gives names derived from the target's (`_dbsync_old_<8 hex>`).
const LONGEST_SUFFIX_BYTES: usize = "_dbsync_old_".len() + 8;

/// Refuses, before anything starts, a target that is not the user's to replace: a template or
/// the maintenance database, a name PostgreSQL would truncate (with dbsync's suffix), or a name
/// matching one of the config file's `protect` patterns. Returns the rule that refused it.
pub fn refuse_unsafe_target(name: &str, protect: &[String]) -> std::result::Result<(), String> {
    if NEVER_REPLACED.contains(&name) {
        return Err(format!(
            "the target database {name} is never replaced: template0 and template1 are copied by every CREATE DATABASE on that server, and postgres is its maintenance database; choose another target name"
        ));
    }
    if name.len() + LONGEST_SUFFIX_BYTES > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "the target database name {name:?} is {} bytes; with the suffix dbsync adds while it works (`_dbsync_old_12345678`) it would exceed PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte limit: use a name of at most {} bytes",
            name.len(),
            MAX_IDENTIFIER_BYTES - LONGEST_SUFFIX_BYTES
        ));
    }
    if let Some(pattern) = protect_pattern_of(name, protect) {
        return Err(format!(
            "the target database {name} matches the protect pattern {pattern:?} of the config file; dbsync does not replace it"
        ));
    }
    Ok(())
}

/// The `protect` pattern of the config file that names `name`, if any.
pub fn protect_pattern_of<'a>(name: &str, protect: &'a [String]) -> Option<&'a String> {
    protect
        .iter()
        .find(|pattern| crate::plan::wildcard_match(pattern, name))
}

/// Whether dbsync may drop `name` as an archive: never a database every server needs, never one
/// the config file protects.
pub fn droppable_archive(name: &str, protect: &[String]) -> bool {
    !NEVER_REPLACED.contains(&name) && protect_pattern_of(name, protect).is_none()
}

/// The name the copy is built under while the run works.
pub fn temporary_name(target: &str, run_id: &str) -> String {
    bounded_name(target, &format!("_dbsync_{run_id}"))
}

/// The name the previous target has once the swap moved it aside, until it is dropped.
pub fn previous_name(target: &str, run_id: &str) -> String {
    bounded_name(target, &format!("_dbsync_old_{run_id}"))
}

/// The comment a temporary copy carries from its creation on.
pub const COPY_COMMENT_PREFIX: &str = "dbsync: copy of ";

/// What runs that died (a `kill -9`, a power cut) left on the target server.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Unfinished copies.
    pub temporary: Vec<String>,
    /// Previous targets a swap had renamed aside.
    pub previous: Vec<String>,
}

/// Sorts databases whose names start with the target's into dbsync's leftovers, by the exact
/// names dbsync gives (and, for copies, the comment it gives them).
pub fn classify_leftovers(target: &str, databases: &[(String, Option<String>)]) -> Leftovers {
    let run_id = |suffix: &str| suffix.len() == 8 && suffix.bytes().all(|byte| byte.is_ascii_hexdigit());
    let mut leftovers = Leftovers::default();
    for (name, comment) in databases {
        let Some(rest) = name.strip_prefix(target) else {
            continue;
        };
        if let Some(id) = rest.strip_prefix("_dbsync_old_")
            && run_id(id)
        {
            leftovers.previous.push(name.clone());
        } else if let Some(id) = rest.strip_prefix("_dbsync_")
            && run_id(id)
            && comment
                .as_deref()
                .is_none_or(|comment| comment.starts_with(COPY_COMMENT_PREFIX))
        {
            leftovers.temporary.push(name.clone());
        }
    }
    leftovers
}

/// A connection to the target server's maintenance database, for creating, renaming and dropping.
pub struct TargetServer {
    client: std::sync::Mutex<std::sync::Arc<Client>>,
    pub server: catalog::ServerInfo,
    /// The target as the user gave it, to connect again when the session is lost.
    endpoint: Endpoint,
    /// The target name whose run lock this session took, to take again on a new session.
    locked: std::sync::Mutex<Option<String>>,
}

impl TargetServer {
    /// The target as the user gave it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The maintenance session; after a server restart ended it, a new one, which takes the
    /// run's lock on the target again (refusing to go on if another run took it meanwhile).
    pub async fn session(&self) -> Result<std::sync::Arc<Client>> {
        let current = self.client.lock().expect("not poisoned").clone();
        if !current.is_closed() {
            return Ok(current);
        }
        let fresh = Self::connect(&self.endpoint).await?;
        let client = fresh.client.into_inner().expect("not poisoned");
        let locked = self.locked.lock().expect("not poisoned").clone();
        if let Some(target) = locked
            && !catalog::try_lock_target(&client, &target).await?
        {
            bail!("the target server restarted, and another run took the lock on {target} meanwhile");
        }
        *self.client.lock().expect("not poisoned") = client.clone();
        Ok(client)
    }

    /// Connects to `postgres` (or `template1`) on the target's server. The target database itself
    /// may not exist yet, and a session in it would block its rename.
    pub async fn connect(target: &Endpoint) -> Result<TargetServer> {
        let mut last_error = None;
        for maintenance in ["postgres", "template1"] {
            match catalog::connect(&target.with_database(maintenance), "target server's maintenance").await {
                Ok(client) => {
                    catalog::limit_lock_waits(&client, MAINTENANCE_LOCK_TIMEOUT).await?;
                    let server = catalog::server_info(&client).await?;
                    return Ok(TargetServer {
                        client: std::sync::Mutex::new(std::sync::Arc::new(client)),
                        server,
                        endpoint: target.clone(),
                        locked: std::sync::Mutex::new(None),
                    });
                }
                Err(error) => {
                    let maintenance_missing = catalog::database_error(&error)
                        .is_some_and(|cause| cause.code == Some(SqlState::INVALID_CATALOG_NAME));
                    last_error = Some(error);
                    if !maintenance_missing {
                        break;
                    }
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Marks this run as the one copying into `target` on this server, for as long as this
    /// session lives. `Err` names the run that holds the mark.
    pub async fn lock_for_run(&self, target: &str) -> Result<std::result::Result<(), String>> {
        let client = self.session().await?;
        if catalog::try_lock_target(&client, target).await? {
            *self.locked.lock().expect("not poisoned") = Some(target.to_string());
            return Ok(Ok(()));
        }
        let holder = catalog::target_lock_holder(&client, target).await?;
        Ok(Err(holder.unwrap_or_else(|| "a session that just ended".to_string())))
    }

    /// Leftovers of earlier runs into `target`; call it holding the run's lock, so none of them
    /// belongs to a run still going.
    pub async fn leftovers(&self, target: &str) -> Result<Leftovers> {
        let databases = catalog::databases_named_like(&*self.session().await?, target).await?;
        Ok(classify_leftovers(target, &databases))
    }

    pub async fn rename_database(&self, from: &str, to: &str) -> Result<()> {
        catalog::rename_database(&*self.session().await?, from, to, &|| true)
            .await
            .map(|_| ())
    }

    /// Awaits `work` on the maintenance session `client`. A stop (Ctrl+C) arriving first cancels
    /// the running statement on the server, and its answer is still awaited: whether a rename
    /// happened must be known, not guessed, before the run decides what to undo.
    async fn unless_stopped<T>(
        &self,
        client: &Client,
        stop: &Cancellation,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::pin!(work);
        tokio::select! {
            result = &mut work => return result,
            _ = stop.cancelled() => {}
        }
        // Without the cancel request the statement would wait out its lock timeout; if the
        // request cannot be sent, that timeout still bounds the wait.
        let _ = catalog::cancel_statement(client, &self.endpoint).await;
        work.await
    }

    /// The databases whose names start with `prefix`, with their comments.
    pub async fn databases_with_comments(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>> {
        catalog::databases_named_like(&*self.session().await?, prefix).await
    }

    /// The databases that start with `prefix`, with their sizes (see `catalog::database_sizes`).
    pub async fn database_sizes(&self, prefix: &str) -> Result<Vec<(String, Option<i64>)>> {
        catalog::database_sizes(&*self.session().await?, prefix).await
    }

    pub async fn sessions_on(&self, name: &str) -> Result<Vec<catalog::DatabaseSession>> {
        catalog::sessions_on(&*self.session().await?, name).await
    }

    pub async fn database_exists(&self, name: &str) -> Result<bool> {
        catalog::database_exists(&*self.session().await?, name).await
    }

    pub async fn create_database(&self, name: &str, source: &DatabaseInfo, comment: &str) -> Result<()> {
        catalog::create_database(&*self.session().await?, self.server.major(), name, source, comment).await
    }

    /// What keeps `template` from being copied by the server (see `catalog::template_blockers`).
    pub async fn template_blockers(&self, template: &str, ignored_pid: i32) -> Result<Vec<catalog::DatabaseSession>> {
        catalog::template_blockers(&*self.session().await?, template, ignored_pid).await
    }

    pub async fn may_copy_database(&self, name: &str) -> Result<bool> {
        catalog::may_copy_database(&*self.session().await?, name).await
    }

    /// Creates `name` as the server's file copy of `template`; a stop cancels the copy, which
    /// the server then removes.
    pub async fn create_database_from_template(
        &self,
        name: &str,
        template: &str,
        clone_files: bool,
        comment: &str,
        stop: &Cancellation,
    ) -> Result<()> {
        let client = self.session().await?;
        let major = self.server.major();
        let work = catalog::create_database_from_template(&client, major, name, template, clone_files, comment);
        self.unless_stopped(&client, stop, work).await
    }

    /// Gives the finished copy the source database's comment, owner and settings. Applied last:
    /// a setting such as `default_transaction_read_only` must not affect the load itself. Returns
    /// warnings for what could not be applied.
    pub async fn apply_database_properties(
        &self,
        name: &str,
        source: &DatabaseInfo,
        settings: &[DatabaseSetting],
        restore_owner: bool,
        stop: &Cancellation,
    ) -> Vec<String> {
        match self.session().await {
            Ok(client) => {
                let keep_going = || !stop.is_cancelled();
                let work =
                    catalog::apply_database_properties(&client, name, source, settings, restore_owner, &keep_going);
                self.unless_stopped(&client, stop, async { Ok(work.await) })
                    .await
                    .unwrap_or_default()
            }
            Err(error) => vec![format!(
                "could not give {name} the source database's properties: {error:#}"
            )],
        }
    }

    pub async fn drop_database(&self, name: &str) -> Result<()> {
        catalog::drop_database(&*self.session().await?, self.server.major(), name).await
    }

    /// Drops a database, from a new session when this one was lost (the server restarted).
    pub async fn drop_database_reconnecting(&self, name: &str) -> Result<()> {
        match despite_a_late_cancel(|| self.drop_database(name)).await {
            Err(_) if self.client.lock().expect("not poisoned").is_closed() => {
                catalog::drop_database(&*self.session().await?, self.server.major(), name).await
            }
            result => result,
        }
    }

    /// Puts the finished copy in place of `target`: the previous database renamed aside and the
    /// copy renamed in, in one transaction (`catalog::swap_databases`), so the name is never
    /// missing, whatever happens to dbsync or either server; the previous database is dropped
    /// once the copy has its name. The sessions on the previous target are ended (and returned),
    /// or, with `terminate` off, the swap is refused while there are any. A stop cancels the
    /// swap's statement, which rolls both renames back.
    pub async fn swap_into_place(
        &self,
        temporary: &str,
        target: &str,
        suffix: &str,
        terminate: bool,
        stop: &Cancellation,
    ) -> Result<Swapped> {
        let client = self.session().await?;
        let keep_trying = || !stop.is_cancelled();
        if !self.database_exists(target).await? {
            self.unless_stopped(
                &client,
                stop,
                catalog::rename_database(&client, temporary, target, &keep_trying),
            )
            .await?;
            return Ok(Swapped::default());
        }
        if !terminate {
            let sessions = catalog::sessions_on(&client, target).await?;
            if !sessions.is_empty() {
                bail!(
                    "{} session(s) are connected to {target} ({}), and --no-terminate leaves them: the copy was not swapped in",
                    sessions.len(),
                    describe_sessions(&sessions)
                );
            }
        }
        let previous = previous_name(target, suffix);
        let ended = self
            .unless_stopped(
                &client,
                stop,
                catalog::swap_databases(&client, temporary, target, &previous, &keep_trying),
            )
            .await
            .context("the copy did not take the target's name; the previous target is in place")?;
        let dropped = self.unless_stopped(&client, stop, self.drop_database(&previous)).await;
        let kept = dropped
            .err()
            .map(|error| format!("the previous target database was kept as {previous}: {error:#}"));
        Ok(Swapped { ended, kept })
    }
}

/// Runs a statement that must not be stopped, again if a cancel request that a stop sent for
/// the statement before it arrived late and cancelled this one instead: the server signals the
/// backend after the request's connection is accepted, which can be after the next statement
/// has started.
async fn despite_a_late_cancel<T, F, Fut>(mut statement: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match statement().await {
            Err(error)
                if attempts < 3
                    && catalog::database_error(&error)
                        .is_some_and(|cause| cause.code == Some(SqlState::QUERY_CANCELED)) =>
            {
                continue;
            }
            result => return result,
        }
    }
}

/// What a swap did besides the renames.
#[derive(Debug, Default)]
pub struct Swapped {
    /// Sessions on the previous target that were ended.
    pub ended: Vec<catalog::DatabaseSession>,
    /// Why the previous target could not be dropped, if it could not.
    pub kept: Option<String>,
}

/// "alice (psql), bob (app)": who is connected.
pub fn describe_sessions(sessions: &[catalog::DatabaseSession]) -> String {
    let names: Vec<String> = sessions
        .iter()
        .map(|session| match session.application.as_str() {
            "" => session.user.clone(),
            application => format!("{} ({application})", session.user),
        })
        .collect();
    names.join(", ")
}

/// `base` + `suffix`, with `base` shortened so that the whole fits in an identifier.
pub fn bounded_name(base: &str, suffix: &str) -> String {
    let mut budget = MAX_IDENTIFIER_BYTES.saturating_sub(suffix.len());
    while !base.is_char_boundary(budget.min(base.len())) {
        budget -= 1;
    }
    format!("{}{suffix}", &base[..budget.min(base.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_maintenance_long_and_protected_targets_are_refused_with_their_rule() {
        for name in ["template0", "template1", "postgres"] {
            assert!(
                refuse_unsafe_target(name, &[]).unwrap_err().contains("never replaced"),
                "{name}"
            );
        }
        let long = "a".repeat(44);
        assert!(
            refuse_unsafe_target(&long, &[])
                .unwrap_err()
                .contains("at most 43 bytes")
        );
        assert!(refuse_unsafe_target(&"a".repeat(43), &[]).is_ok());
        let protect = vec!["*prod*".to_string()];
        assert!(
            refuse_unsafe_target("shop_production", &protect)
                .unwrap_err()
                .contains("\"*prod*\"")
        );
        assert!(refuse_unsafe_target("Archive_DB", &protect).is_ok());
    }

    #[test]
    fn only_the_names_dbsync_gives_are_taken_for_leftovers() {
        let database = |name: &str, comment: Option<&str>| (name.to_string(), comment.map(str::to_string));
        let databases = [
            database("Archive_DB", None),
            database(
                "Archive_DB_dbsync_0a1b2c3d",
                Some("dbsync: copy of u@h:5432/Main_DB in progress since …"),
            ),
            database("Archive_DB_dbsync_deadbeef", None),
            database("Archive_DB_dbsync_old_12345678", None),
            database("Archive_DB_dbsync_notahex1", None),
            database("Archive_DB_dbsync_0a1b2c3d4", None),
            database("Archive_DB_dbsync_cafef00d", Some("the team's own database")),
            database("Archive_DB_2024", None),
        ];
        assert_eq!(
            classify_leftovers("Archive_DB", &databases),
            Leftovers {
                temporary: vec!["Archive_DB_dbsync_0a1b2c3d".into(), "Archive_DB_dbsync_deadbeef".into()],
                previous: vec!["Archive_DB_dbsync_old_12345678".into()],
            }
        );
    }

    #[test]
    fn names_fit_in_an_identifier() {
        let long = "x".repeat(80);
        assert_eq!(bounded_name(&long, "_dbsync_1234").len(), 63);
        assert_eq!(bounded_name("Archive_DB", "_dbsync_1234"), "Archive_DB_dbsync_1234");
        let multibyte = "é".repeat(40);
        assert!(bounded_name(&multibyte, "_x").len() <= 63);
    }
}
