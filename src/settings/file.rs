//! The config file (`--config`, else `DBSYNC_CONFIG`): its sections as serde reads them, unknown
//! keys refused, errors with the file, the line and a hint.

use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) source: Option<ConfigEndpoint>,
    pub(super) target: Option<ConfigEndpoint>,
    #[serde(default)]
    pub(super) options: ConfigOptions,
    /// Group name → patterns.
    #[serde(default)]
    pub(super) tables: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) exclude: ConfigExclude,
    /// Target database names (wildcards) dbsync must never replace.
    #[serde(default)]
    pub(super) protect: Vec<String>,
    #[serde(default)]
    pub(super) hooks: crate::hooks::Hooks,
    /// Table → column → transform (`[transform]`).
    #[serde(default)]
    pub(super) transform: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub(super) incremental: ConfigIncremental,
    #[serde(default)]
    pub(super) merge: ConfigMerge,
    #[serde(default)]
    pub(super) subset: crate::subset::SubsetSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigMerge {
    pub(super) source: Option<String>,
    #[serde(default)]
    pub(super) fire_triggers: Vec<String>,
    #[serde(default)]
    pub(super) tables: BTreeMap<String, MergeTableSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigIncremental {
    pub(super) change_column: Option<String>,
    pub(super) source: Option<String>,
    pub(super) lookback_seconds: Option<u64>,
    #[serde(default)]
    pub(super) fire_triggers: Vec<String>,
    #[serde(default)]
    pub(super) tables: BTreeMap<String, String>,
    pub(super) batch_rows: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigEndpoint {
    pub(super) url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigOptions {
    pub(super) jobs: Option<usize>,
    pub(super) retries: Option<u32>,
    pub(super) batch_size: Option<usize>,
    pub(super) dump_dir: Option<PathBuf>,
    pub(super) keep_dumps: Option<bool>,
    pub(super) stream: Option<bool>,
    pub(super) compress: Option<String>,
    pub(super) analyze: Option<bool>,
    pub(super) no_owner: Option<bool>,
    pub(super) no_privileges: Option<bool>,
    pub(super) no_tablespaces: Option<bool>,
    pub(super) foreign_keys: Option<String>,
    pub(super) verify: Option<String>,
    pub(super) copy_roles: Option<bool>,
    pub(super) maintenance_memory: Option<String>,
    pub(super) split_larger_than: Option<String>,
    pub(super) stream_larger_than: Option<String>,
    pub(super) rows_via_pg_dump: Option<bool>,
    pub(super) clone: Option<String>,
    pub(super) pg_bin: Option<PathBuf>,
    pub(super) lock_timeout: Option<u64>,
    pub(super) retain: Option<usize>,
    pub(super) utc: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigExclude {
    #[serde(default)]
    pub(super) tables: Vec<String>,
}

pub(super) fn load_config(path: &Path) -> Result<ConfigFile, SyncError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| usage_error!("cannot read config file {}: {error}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        let message = error.message();
        let location = error
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        usage_error!(
            "config file {}{location}: {message}\nhint: see the commented example core_tables.toml for the keys dbsync understands",
            path.display()
        )
    })
}

/// `--config`, else `DBSYNC_CONFIG`, loaded (an empty configuration without either).
pub(super) fn config_of(
    flag: Option<&PathBuf>,
    environment: &Environment,
) -> Result<(Option<PathBuf>, ConfigFile), SyncError> {
    let path = flag
        .cloned()
        .or_else(|| environment.get("DBSYNC_CONFIG").map(PathBuf::from));
    let config = match &path {
        Some(path) => load_config(path)?,
        None => ConfigFile::default(),
    };
    Ok((path, config))
}
