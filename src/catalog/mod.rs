//! Everything dbsync says to PostgreSQL in SQL, and the typed rows it gets back. No other module
//! writes SQL: `inspect` reads the source's catalogs, `admin` creates, renames and drops databases
//! on the target server, `work` runs the statements of a copy (snapshot, counts, emptying,
//! maintenance, progress). Errors keep their SQLSTATE so callers branch on codes, not on text.

mod admin;
mod checksum;
mod incremental;
mod inspect;
mod masking;
mod merge;
mod replication;
mod roles;
mod rows;
mod state;
mod subset;
mod work;

use std::fmt;

use anyhow::Result;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::connection::Endpoint;
use crate::tls::Connector;

pub use admin::*;
pub use checksum::*;
pub use incremental::*;
pub use inspect::*;
pub use masking::*;
pub use merge::*;
pub use replication::*;
pub use roles::*;
pub use rows::*;
pub use state::*;
pub use subset::*;
pub use work::*;

/// A connected client; the connection task ends when the client is dropped.
pub async fn connect(endpoint: &Endpoint, role: &str) -> Result<Client> {
    let mut config = endpoint.client_config()?;
    let failed = |error: tokio_postgres::Error| {
        let mut cause = DatabaseError::from(&error);
        cause.message = format!("{}\nhint: {}", cause.message, connection_hint(&error));
        anyhow::Error::new(cause).context(format!("cannot connect to the {role} database {endpoint}"))
    };
    // Errors of a connection surface on the client's next query; nothing to report here.
    let client = match endpoint.connector()? {
        Connector::Plain => {
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(async move { drop(connection.await) });
            client
        }
        Connector::Tls { connector, mode } => {
            config.ssl_mode(mode);
            let (client, connection) = config.connect(connector).await.map_err(failed)?;
            tokio::spawn(async move { drop(connection.await) });
            client
        }
    };
    Ok(client)
}

/// Whether the server asks `endpoint`'s user for a password that the endpoint does not have
/// (any other outcome, a connection included, is left to the run to meet).
pub async fn asks_for_password(endpoint: &Endpoint) -> bool {
    let Ok(mut config) = endpoint.client_config() else {
        return false;
    };
    config.connect_timeout(std::time::Duration::from_secs(10));
    let attempt = match endpoint.connector() {
        Ok(Connector::Plain) => config.connect(NoTls).await.map(|_| ()),
        Ok(Connector::Tls { connector, mode }) => {
            config.ssl_mode(mode);
            config.connect(connector).await.map(|_| ())
        }
        Err(_) => return false,
    };
    attempt.is_err_and(|error| describe_error(&error).contains("password missing"))
}

/// Asks the server to cancel the statement `client` is running; the client stays usable, and
/// the statement answers with an error unless it had already finished.
pub async fn cancel_statement(client: &Client, endpoint: &Endpoint) -> Result<()> {
    let token = client.cancel_token();
    match endpoint.connector()? {
        Connector::Plain => token.cancel_query(NoTls).await?,
        Connector::Tls { connector, .. } => token.cancel_query(connector).await?,
    }
    Ok(())
}

/// A database error as the server worded it, with its SQLSTATE kept for decisions.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DatabaseError {
    pub message: String,
    pub code: Option<SqlState>,
    /// The connection broke (no server answer at all): always worth another try.
    pub connection_lost: bool,
}

impl From<&tokio_postgres::Error> for DatabaseError {
    fn from(error: &tokio_postgres::Error) -> DatabaseError {
        DatabaseError {
            message: describe_error(error),
            code: error.code().cloned(),
            connection_lost: error.as_db_error().is_none() && (error.is_closed() || io_failure(error)),
        }
    }
}

fn io_failure(error: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// SQLSTATEs that mean "try again later", not "you are wrong": connection exceptions (class 08),
/// shutdowns and restarts, too many connections, serialization failures and deadlocks.
pub fn is_transient_code(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ]
        .contains(code)
}

impl DatabaseError {
    pub fn is_transient(&self) -> bool {
        match &self.code {
            Some(code) => is_transient_code(code),
            None => self.connection_lost,
        }
    }
}

/// The database error inside an error chain, if the failure came from the server or connection.
pub fn database_error(error: &anyhow::Error) -> Option<DatabaseError> {
    error.chain().find_map(|cause| {
        cause
            .downcast_ref::<DatabaseError>()
            .cloned()
            .or_else(|| cause.downcast_ref::<tokio_postgres::Error>().map(DatabaseError::from))
    })
}

/// `error` from running SQL, with what was being done as context.
pub fn sql_error(what: impl fmt::Display + Send + Sync + 'static, error: tokio_postgres::Error) -> anyhow::Error {
    anyhow::Error::new(DatabaseError::from(&error)).context(what)
}

/// The server's own words for an error, without tokio-postgres' wrapping.
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    if let Some(database_error) = error.as_db_error() {
        let mut text = database_error.message().to_string();
        if let Some(detail) = database_error.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn connection_hint(error: &tokio_postgres::Error) -> &'static str {
    let code = error.code();
    if code == Some(&SqlState::INVALID_PASSWORD) || describe_error(error).contains("password missing") {
        "check the password (in the URI, PGPASSWORD, MAIN_DB_PASSWORD/ARCHIVE_DB_PASSWORD or ~/.pgpass)"
    } else if code == Some(&SqlState::INVALID_CATALOG_NAME) {
        "check the database name in the URI"
    } else if code == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) && describe_error(error).contains("role") {
        "check the user name in the URI"
    } else if code == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) {
        "the server's pg_hba.conf does not allow this connection (with or without TLS: see sslmode)"
    } else if describe_error(error).contains("certificate") {
        "the server's certificate was not accepted: check sslrootcert (the certificate authority that signed it) and, with verify-full, the host name"
    } else {
        "check the host and port, and that the server is running and accepts connections"
    }
}

/// `"schema"."name"`, quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

/// The schemas and the names of `tables`, as two arrays: what a query joins to the catalogs
/// with `unnest($1::text[], $2::text[])`.
pub(crate) fn schemas_and_names(tables: &[QualifiedName]) -> (Vec<&str>, Vec<&str>) {
    tables
        .iter()
        .map(|table| (table.schema.as_str(), table.name.as_str()))
        .unzip()
}

impl QualifiedName {
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_identifier(&self.schema), quote_identifier(&self.name))
    }

    /// `name` for tables in `public`, `schema.name` elsewhere; what users write and read.
    pub fn display_name(&self) -> String {
        if self.schema == "public" {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.display_name())
    }
}

pub fn quote_identifier(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Catalog oids that a dump's table of contents gives for the objects dbsync places itself.
pub const PG_CLASS_OID: u32 = 1259;
pub const PG_CONSTRAINT_OID: u32 = 2606;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_told_by_sqlstate() {
        let error = |code: SqlState| DatabaseError {
            message: "whatever the words".into(),
            code: Some(code),
            connection_lost: false,
        };
        for code in [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
        ] {
            assert!(error(code.clone()).is_transient(), "{code:?}");
        }
        for code in [
            SqlState::INVALID_PASSWORD,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::UNDEFINED_TABLE,
            SqlState::SYNTAX_ERROR,
        ] {
            assert!(!error(code.clone()).is_transient(), "{code:?}");
        }
        let lost = DatabaseError {
            message: "connection closed".into(),
            code: None,
            connection_lost: true,
        };
        assert!(lost.is_transient());
        let wrapped = anyhow::Error::new(lost).context("cannot count rows");
        assert!(database_error(&wrapped).is_some_and(|error| error.is_transient()));
    }
}
