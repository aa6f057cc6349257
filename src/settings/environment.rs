//! The process's environment: the variables dbsync reads, read once at start-up, and read only
//! here.

use std::collections::BTreeMap;

/// The environment variables dbsync reads, by name. Read once (`of_process`) so that resolving
/// settings is a function of its inputs, and tests give their own (`of_pairs`).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    values: BTreeMap<&'static str, String>,
}

impl Environment {
    /// Every variable dbsync reads: the old script's, libpq's, the display's and its own.
    pub const NAMES: [&'static str; 31] = [
        "MAIN_DB_HOST",
        "MAIN_DB_PORT",
        "MAIN_DB_USER",
        "MAIN_DB_PASSWORD",
        "MAIN_DB_NAME",
        "ARCHIVE_DB_HOST",
        "ARCHIVE_DB_PORT",
        "ARCHIVE_DB_USER",
        "ARCHIVE_DB_PASSWORD",
        "ARCHIVE_DB_NAME",
        "PG_JOBS",
        "RETRY_COUNT",
        "BATCH_SIZE",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGSYSCONFDIR",
        "USER",
        "HOME",
        "TERM",
        "NO_COLOR",
        "DBSYNC_CONFIG",
    ];

    /// The process's own environment, the only place dbsync reads it. An empty value counts as
    /// unset, as in the old script.
    pub fn of_process() -> Environment {
        let names = Environment::NAMES.into_iter().chain([crate::masking::SALT_VARIABLE]);
        let values = names
            .filter_map(|name| {
                let value = std::env::var(name).ok().filter(|value| !value.is_empty())?;
                Some((name, value))
            })
            .collect();
        Environment { values }
    }

    /// An environment of these variables only, for tests.
    pub fn of_pairs(pairs: &[(&str, &str)]) -> Environment {
        let values = pairs
            .iter()
            .map(|(name, value)| (Environment::known(name), value.to_string()))
            .collect();
        Environment { values }
    }

    /// The variable's value; a name dbsync does not list is a mistake in dbsync.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(Environment::known(name)).cloned()
    }

    fn known(name: &str) -> &'static str {
        Environment::NAMES
            .into_iter()
            .chain([crate::masking::SALT_VARIABLE])
            .find(|known| *known == name)
            .unwrap_or_else(|| panic!("{name} is not among the environment variables dbsync reads"))
    }
}
