//! Databases on the target server: create one like the source's, give it the source's comment,
//! owner and settings, rename and drop, each as SQL run from the maintenance database.

use std::time::Duration;

use anyhow::{Result, bail};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::{DatabaseError, DatabaseInfo, DatabaseSetting, LocaleProvider, quote_identifier, quote_literal, sql_error};

/// Settings whose value is a list of names (pg_dump's `variable_is_guc_list_quote`).
const LIST_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// `CREATE DATABASE` with the source's encoding and locale, from `template0`, and a comment that
/// tells a person what a copy left behind by a killed run is.
pub async fn create_database(
    client: &Client,
    server_major: u32,
    name: &str,
    source: &DatabaseInfo,
    comment: &str,
) -> Result<()> {
    let mut statement = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_identifier(name),
        quote_literal(&source.encoding),
        quote_literal(&source.collate),
        quote_literal(&source.ctype)
    );
    match (&source.locale_provider, &source.provider_locale) {
        (LocaleProvider::Libc, _) => {}
        (LocaleProvider::Icu, Some(locale)) if server_major >= 15 => {
            statement.push_str(&format!(" LOCALE_PROVIDER icu ICU_LOCALE {}", quote_literal(locale)));
        }
        (LocaleProvider::Builtin, Some(locale)) if server_major >= 17 => {
            statement.push_str(&format!(
                " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                quote_literal(locale)
            ));
        }
        (provider, _) => bail!(
            "the source database uses locale provider {provider:?}, which the target server (PostgreSQL {server_major}) cannot create"
        ),
    }
    client.batch_execute(&statement).await.map_err(|error| {
        sql_error(
            format!(
                "cannot create database {name} on the target server (it needs CREATEDB and the source's encoding {} and locale {}/{})",
                source.encoding, source.collate, source.ctype
            ),
            error,
        )
    })?;
    mark_copy(client, name, comment).await;
    Ok(())
}

/// Comments a copy dbsync just created as its own (what tells a leftover by it); a copy that
/// could not be commented is still told by its name.
async fn mark_copy(client: &Client, name: &str, comment: &str) {
    let statement = format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_identifier(name),
        quote_literal(comment)
    );
    client.batch_execute(&statement).await.ok();
}

/// Gives a database the source database's comment, owner and settings. Returns a warning for
/// each statement that could not be applied.
pub async fn apply_database_properties(
    client: &Client,
    name: &str,
    source: &DatabaseInfo,
    settings: &[DatabaseSetting],
    restore_owner: bool,
    keep_going: &dyn Fn() -> bool,
) -> Vec<String> {
    let database = quote_identifier(name);
    let mut statements = Vec::new();
    statements.push(match &source.comment {
        Some(comment) => format!("COMMENT ON DATABASE {database} IS {}", quote_literal(comment)),
        None => format!("COMMENT ON DATABASE {database} IS NULL"),
    });
    if restore_owner {
        statements.push(format!(
            "ALTER DATABASE {database} OWNER TO {}",
            quote_identifier(&source.owner)
        ));
    }
    for setting in settings {
        let assignment = format!(
            "SET {} TO {}",
            quote_identifier(&setting.name),
            setting_value_sql(setting)
        );
        statements.push(match &setting.role {
            None => format!("ALTER DATABASE {database} {assignment}"),
            Some(role) => format!(
                "ALTER ROLE {} IN DATABASE {database} {assignment}",
                quote_identifier(role)
            ),
        });
    }
    let mut warnings = Vec::new();
    for statement in statements {
        if !keep_going() {
            break;
        }
        if let Err(error) = client.batch_execute(&statement).await {
            warnings.push(format!(
                "could not apply `{statement}`: {}",
                DatabaseError::from(&error)
            ));
        }
    }
    warnings
}

/// A session connected to a database: its user and application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSession {
    pub user: String,
    pub application: String,
}

impl DatabaseSession {
    /// From a row of a user and an application (in that order).
    fn of(row: &tokio_postgres::Row) -> DatabaseSession {
        DatabaseSession {
            user: row.get(0),
            application: row.get(1),
        }
    }
}

/// The client sessions connected to database `name`, other than this one.
pub async fn sessions_on(client: &Client, name: &str) -> Result<Vec<DatabaseSession>> {
    let rows = client
        .query(
            "SELECT coalesce(usename::text, '?'), coalesce(application_name, '') FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend' ORDER BY pid",
            &[&name],
        )
        .await
        .map_err(|error| sql_error(format!("cannot list the sessions on {name}"), error))?;
    Ok(rows.iter().map(DatabaseSession::of).collect())
}

/// What keeps `CREATE DATABASE … TEMPLATE name` from copying it: every other session on it but
/// `ignored_pid` (autovacuum workers aside, which the server ends itself) and its prepared
/// transactions. A template with any of them is refused by the server.
pub async fn template_blockers(client: &Client, name: &str, ignored_pid: i32) -> Result<Vec<DatabaseSession>> {
    let rows = client
        .query(
            "SELECT coalesce(usename::text, '?'), coalesce(nullif(application_name, ''), backend_type) \
               FROM pg_stat_activity \
              WHERE datname = $1 AND pid <> pg_backend_pid() AND pid <> $2 \
                AND backend_type IS DISTINCT FROM 'autovacuum worker' \
             UNION ALL \
             SELECT owner::text, 'prepared transaction ' || gid FROM pg_prepared_xacts WHERE database = $1",
            &[&name, &ignored_pid],
        )
        .await
        .map_err(|error| sql_error(format!("cannot list the sessions on {name}"), error))?;
    Ok(rows.iter().map(DatabaseSession::of).collect())
}

/// Whether the server is a standby (in recovery): it cannot have temporary tables.
pub async fn in_recovery(client: &Client) -> Result<bool> {
    let row = client
        .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
        .await
        .map_err(|error| sql_error("cannot ask whether the server is a standby", error))?;
    Ok(row.get(0))
}

/// Whether this session's role may copy database `name` as a template: the server allows it to
/// a role with CREATEDB that owns it (or is a member of its owner, or a superuser), or for a
/// database marked as a template.
pub async fn may_copy_database(client: &Client, name: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT datistemplate OR pg_has_role(datdba, 'USAGE') FROM pg_database WHERE datname = $1), false) \
                AND (SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[&name],
        )
        .await
        .map_err(|error| sql_error(format!("cannot tell whether {name} may be copied"), error))?;
    Ok(row.get(0))
}

/// Creates database `name` as a file copy of `template` (`STRATEGY FILE_COPY` on 15+, the only
/// strategy before), with `file_copy_method = clone` on 18+ when `clone_files`, then comments it.
/// The template must have no other session: the server waits 5 s for them, then refuses.
pub async fn create_database_from_template(
    client: &Client,
    server_major: u32,
    name: &str,
    template: &str,
    clone_files: bool,
    comment: &str,
) -> Result<()> {
    let method = if clone_files && server_major >= 18 {
        "clone"
    } else {
        "copy"
    };
    if server_major >= 18 {
        client
            .batch_execute(&format!("SET file_copy_method = {method}"))
            .await
            .map_err(|error| sql_error("cannot choose how the server copies files".to_string(), error))?;
    }
    let strategy = if server_major >= 15 { " STRATEGY FILE_COPY" } else { "" };
    let created = client
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE {}{strategy}",
            quote_identifier(name),
            quote_identifier(template)
        ))
        .await
        .map_err(|error| sql_error(format!("cannot create database {name} as a copy of {template}"), error));
    if server_major >= 18 {
        client.batch_execute("RESET file_copy_method").await.ok();
    }
    created?;
    mark_copy(client, name, comment).await;
    Ok(())
}

/// Ends the sessions on database `name`, other than this one; returns whom it ended.
pub async fn terminate_sessions(client: &Client, name: &str) -> Vec<DatabaseSession> {
    client
        .query(
            "WITH victims AS MATERIALIZED (SELECT pid, usename, application_name FROM pg_stat_activity \
                                           WHERE datname = $1 AND pid <> pg_backend_pid()) \
             SELECT coalesce(usename::text, '?'), coalesce(application_name, '') FROM victims \
             WHERE pg_terminate_backend(pid)",
            &[&name],
        )
        .await
        .map(|rows| rows.iter().map(DatabaseSession::of).collect())
        .unwrap_or_default()
}

/// Renames a database, ending its sessions first (returned); retried briefly when someone
/// reconnects between the termination and the rename, while `keep_trying` says so.
pub async fn rename_database(
    client: &Client,
    from: &str,
    to: &str,
    keep_trying: &dyn Fn() -> bool,
) -> Result<Vec<DatabaseSession>> {
    let statement = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_identifier(from),
        quote_identifier(to)
    );
    let mut attempt = 0;
    let mut ended = Vec::new();
    loop {
        ended.extend(terminate_sessions(client, from).await);
        match client.batch_execute(&statement).await {
            Ok(()) => return Ok(ended),
            Err(error) if attempt < 10 && keep_trying() && error.code() == Some(&SqlState::OBJECT_IN_USE) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(sql_error(
                    format!(
                        "cannot rename database {from} to {to}: another session's transaction holds a lock on it (an ALTER DATABASE, or a row lock on pg_database)"
                    ),
                    error,
                ));
            }
            Err(error) => return Err(sql_error(format!("cannot rename database {from} to {to}"), error)),
        }
    }
}

/// Gives database `temporary` the name `target`, whose database becomes `previous`: both
/// renames in one transaction, so at no instant (a `kill -9` or a crash of either side
/// included) is `target` missing. Sessions on either are ended first (the target's returned);
/// retried briefly when someone reconnects in between, while `keep_trying` says so.
pub async fn swap_databases(
    client: &Client,
    temporary: &str,
    target: &str,
    previous: &str,
    keep_trying: &dyn Fn() -> bool,
) -> Result<Vec<DatabaseSession>> {
    let statement = format!(
        "BEGIN; ALTER DATABASE {target_name} RENAME TO {}; ALTER DATABASE {} RENAME TO {target_name}; COMMIT",
        quote_identifier(previous),
        quote_identifier(temporary),
        target_name = quote_identifier(target),
    );
    let mut attempt = 0;
    let mut ended = Vec::new();
    loop {
        ended.extend(terminate_sessions(client, target).await);
        let _ = terminate_sessions(client, temporary).await;
        let Err(error) = client.batch_execute(&statement).await else {
            return Ok(ended);
        };
        roll_back(client).await?;
        match error.code() {
            Some(&SqlState::OBJECT_IN_USE) if attempt < 10 && keep_trying() => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(sql_error(
                    format!(
                        "cannot swap {temporary} in as {target}: another session's transaction holds a lock on one of them (an ALTER DATABASE, or a row lock on pg_database)"
                    ),
                    error,
                ));
            }
            _ => return Err(sql_error(format!("cannot swap {temporary} in as {target}"), error)),
        }
    }
}

/// Ends the session's failed transaction (again, if a cancel request meant for the statement
/// before arrives late and cancels this one).
async fn roll_back(client: &Client) -> Result<()> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.batch_execute("ROLLBACK").await {
            Ok(()) => return Ok(()),
            Err(_) if attempts < 3 => continue,
            Err(error) => return Err(sql_error("cannot roll back the swap", error)),
        }
    }
}

/// Gives the schema `public` of a new database on 13 or 14 the privileges PostgreSQL 15 starts
/// it with (`CREATE` for its owner only), so that a 15+ schema restored on top, which states only
/// how its own `public` differs from that, ends as the source's.
pub async fn narrow_public_schema(client: &Client) -> Result<()> {
    client
        .batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .await
        .map_err(|error| sql_error("cannot give the schema public the privileges of PostgreSQL 15", error))
}

/// Gives the schema `public` to the database's owner, as PostgreSQL 15 does (its owner is
/// `pg_database_owner`), unless the restored schema gave it another owner than the bootstrap
/// user a 13 or 14 server starts it with.
pub async fn public_schema_to_database_owner(client: &Client) -> Result<()> {
    client
        .batch_execute(
            // Read-write whatever the database's settings (applied just before) say.
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DO $owner$ BEGIN \
               IF (SELECT nspowner FROM pg_namespace WHERE nspname = 'public') = 10 THEN \
                 EXECUTE format('ALTER SCHEMA public OWNER TO %I', \
                   (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())); \
               END IF; \
             END $owner$",
        )
        .await
        .map_err(|error| sql_error("cannot give the schema public to the database's owner", error))
}

/// Drops a database if it exists, ending its sessions (`WITH (FORCE)` from PostgreSQL 13 on).
pub async fn drop_database(client: &Client, server_major: u32, name: &str) -> Result<()> {
    let force = if server_major >= 13 { " WITH (FORCE)" } else { "" };
    let _ = terminate_sessions(client, name).await;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}{force}", quote_identifier(name)))
        .await
        .map_err(|error| sql_error(format!("cannot drop database {name}"), error))
}

/// Makes every statement of this session give up on a lock after `timeout`.
pub async fn limit_lock_waits(client: &Client, timeout: Duration) -> Result<()> {
    client
        .batch_execute(&format!("SET lock_timeout = '{}ms'", timeout.as_millis().max(1)))
        .await
        .map_err(|error| sql_error("cannot set the lock timeout on the target server", error))
}

/// The first key of dbsync's advisory locks ("dbsy"); the second is a hash of the target name.
const ADVISORY_LOCK_CLASS: i32 = 0x6462_7379;

/// Takes the session-level advisory lock that marks a run copying into `target` on this server;
/// `false` when another session holds it. It is released when the session ends, however dbsync
/// ends.
pub async fn try_lock_target(client: &Client, target: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1::int4, hashtext($2))",
            &[&ADVISORY_LOCK_CLASS, &target],
        )
        .await
        .map_err(|error| sql_error("cannot take the target's advisory lock", error))?;
    Ok(row.get(0))
}

/// The session holding the advisory lock of `target`: "pid 1234 (dbsync from 10.0.0.5, since …)".
pub async fn target_lock_holder(client: &Client, target: &str) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT format('pid %s (%s from %s, connected since %s)', a.pid, \
                      coalesce(nullif(a.application_name, ''), 'unnamed'), coalesce(host(a.client_addr), 'a local socket'), \
                      date_trunc('second', a.backend_start)) \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int4::oid \
               AND l.objid = hashtext($2)::oid AND l.objsubid = 2",
            &[&ADVISORY_LOCK_CLASS, &target],
        )
        .await
        .map_err(|error| sql_error("cannot find the session holding the target's lock", error))?;
    Ok(row.map(|row| row.get(0)))
}

/// Databases on this server whose names start with `prefix`, with their comments.
pub async fn databases_named_like(client: &Client, prefix: &str) -> Result<Vec<(String, Option<String>)>> {
    let rows = client
        .query(
            "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database \
             WHERE left(datname, length($1)) = $1 ORDER BY 1",
            &[&prefix],
        )
        .await
        .map_err(|error| sql_error("cannot list databases on the target server", error))?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Databases on this server whose names start with `prefix`, with their sizes in bytes (`None`
/// for those this role may not connect to, whose size it may not read).
pub async fn database_sizes(client: &Client, prefix: &str) -> Result<Vec<(String, Option<i64>)>> {
    let rows = client
        .query(
            "SELECT datname::text, CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END \
             FROM pg_database WHERE left(datname, length($1)) = $1 ORDER BY 1",
            &[&prefix],
        )
        .await
        .map_err(|error| sql_error("cannot list databases on the target server", error))?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// A setting's value as SQL: list settings element by element (the stored text quotes names with
/// double quotes), everything else as one literal.
fn setting_value_sql(setting: &DatabaseSetting) -> String {
    if !LIST_SETTINGS.contains(&setting.name.as_str()) {
        return quote_literal(&setting.value);
    }
    let mut elements = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut characters = setting.value.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '"' if in_quotes && characters.peek() == Some(&'"') => {
                current.push('"');
                characters.next();
            }
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => elements.push(std::mem::take(&mut current)),
            character if character.is_whitespace() && !in_quotes => {}
            character => current.push(character),
        }
    }
    elements.push(current);
    elements
        .iter()
        .map(|element| quote_literal(element))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_are_quoted_per_element() {
        let setting = |name: &str, value: &str| DatabaseSetting {
            role: None,
            name: name.into(),
            value: value.into(),
        };
        assert_eq!(
            setting_value_sql(&setting("search_path", "app, \"$user\", \"Odd\"\"Name\"")),
            "'app', '$user', 'Odd\"Name'"
        );
        assert_eq!(setting_value_sql(&setting("work_mem", "64MB")), "'64MB'");
        assert_eq!(setting_value_sql(&setting("app.note", "it's")), "'it''s'");
    }
}
