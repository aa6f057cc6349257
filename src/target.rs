//! The target server: building the copy under a temporary database name, giving it the source's
//! encoding, locale and database-level settings, and swapping it into place only when it is
//! complete, so the database the user had survives any failure.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_postgres::Client;

use crate::catalog::{self, DatabaseInfo, DatabaseSetting, describe_error, quote_identifier, quote_literal};
use crate::connection::Endpoint;

/// PostgreSQL silently truncates longer identifiers; names are built to fit.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Settings whose value is a list of names (pg_dump's `variable_is_guc_list_quote`).
const LIST_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// A connection to the target server's maintenance database, for creating, renaming and dropping.
pub struct TargetServer {
    pub client: Client,
    pub server: catalog::ServerInfo,
}

impl TargetServer {
    /// Connects to `postgres` (or `template1`) on the target's server. The target database itself
    /// may not exist yet, and a session in it would block its rename.
    pub async fn connect(target: &Endpoint) -> Result<TargetServer> {
        let mut last_error = None;
        for maintenance in ["postgres", "template1"] {
            match catalog::connect(&target.with_database(maintenance), "target server's maintenance").await {
                Ok(client) => {
                    let server = catalog::server_info(&client).await?;
                    return Ok(TargetServer { client, server });
                }
                Err(error) => {
                    let text = format!("{error:#}");
                    let maintenance_missing = text.contains("does not exist") && text.contains(maintenance);
                    last_error = Some(error);
                    if !maintenance_missing {
                        break;
                    }
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    pub async fn database_exists(&self, name: &str) -> Result<bool> {
        catalog::database_exists(&self.client, name).await
    }

    pub async fn create_database(&self, name: &str, source: &DatabaseInfo, comment: &str) -> Result<()> {
        let major = self.server.major();
        let mut statement = format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_identifier(name),
            quote_literal(&source.encoding),
            quote_literal(&source.collate),
            quote_literal(&source.ctype)
        );
        match (source.locale_provider.as_str(), &source.provider_locale) {
            ("c", _) => {}
            ("i", Some(locale)) if major >= 15 => {
                statement.push_str(&format!(" LOCALE_PROVIDER icu ICU_LOCALE {}", quote_literal(locale)));
            }
            ("b", Some(locale)) if major >= 17 => {
                statement.push_str(&format!(
                    " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                    quote_literal(locale)
                ));
            }
            (provider, _) => bail!(
                "the source database uses locale provider \"{provider}\", which the target server (PostgreSQL {major}) cannot create"
            ),
        }
        self.client.batch_execute(&statement).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot create database {name} on the target server: {}\nhint: the target needs CREATEDB and the source's encoding {} and locale {}/{}",
                describe_error(&error),
                source.encoding,
                source.collate,
                source.ctype
            )
        })?;
        // Marks a copy left behind by a killed run, so a person can tell what it is.
        self.client
            .batch_execute(&format!(
                "COMMENT ON DATABASE {} IS {}",
                quote_identifier(name),
                quote_literal(comment)
            ))
            .await
            .ok();
        Ok(())
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
            if let Err(error) = self.client.batch_execute(&statement).await {
                warnings.push(format!("could not apply `{statement}`: {}", describe_error(&error)));
            }
        }
        warnings
    }

    async fn terminate_sessions(&self, name: &str) {
        let _ = self
            .client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await;
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let statement = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_identifier(from),
            quote_identifier(to)
        );
        let mut attempt = 0;
        loop {
            self.terminate_sessions(from).await;
            match self.client.batch_execute(&statement).await {
                Ok(()) => return Ok(()),
                // Someone reconnected between the termination and the rename: try again.
                Err(error) if attempt < 10 && describe_error(&error).contains("being accessed by other users") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => bail!("cannot rename database {from} to {to}: {}", describe_error(&error)),
            }
        }
    }

    pub async fn drop_database(&self, name: &str) -> Result<()> {
        let force = if self.server.major() >= 13 { " WITH (FORCE)" } else { "" };
        self.terminate_sessions(name).await;
        self.client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {}{force}", quote_identifier(name)))
            .await
            .map_err(|error| anyhow::anyhow!("cannot drop database {name}: {}", describe_error(&error)))
    }

    /// Puts the finished copy in place of `target`. The previous database is renamed aside first
    /// and renamed back if the swap fails; it is dropped only once the copy has its name.
    /// Returns a warning when the previous database could not be dropped.
    pub async fn swap_into_place(&self, temporary: &str, target: &str, suffix: &str) -> Result<Option<String>> {
        if !self.database_exists(target).await? {
            self.rename(temporary, target).await?;
            return Ok(None);
        }
        let previous = bounded_name(target, &format!("_dbsync_old_{suffix}"));
        self.rename(target, &previous)
            .await
            .context("the previous target database is still in use or cannot be renamed")?;
        if let Err(error) = self.rename(temporary, target).await {
            self.rename(&previous, target)
                .await
                .with_context(|| format!("could not put the previous target back; it is now named {previous}"))?;
            return Err(error);
        }
        match self.drop_database(&previous).await {
            Ok(()) => Ok(None),
            Err(error) => Ok(Some(format!(
                "the previous target database was kept as {previous}: {error:#}"
            ))),
        }
    }
}

/// `base` + `suffix`, with `base` shortened so that the whole fits in an identifier.
pub fn bounded_name(base: &str, suffix: &str) -> String {
    let mut budget = MAX_IDENTIFIER_BYTES.saturating_sub(suffix.len());
    while !base.is_char_boundary(budget.min(base.len())) {
        budget -= 1;
    }
    format!("{}{suffix}", &base[..budget.min(base.len())])
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
    fn names_fit_in_an_identifier() {
        let long = "x".repeat(80);
        assert_eq!(bounded_name(&long, "_dbsync_1234").len(), 63);
        assert_eq!(bounded_name("Archive_DB", "_dbsync_1234"), "Archive_DB_dbsync_1234");
        let multibyte = "é".repeat(40);
        assert!(bounded_name(&multibyte, "_x").len() <= 63);
    }

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
