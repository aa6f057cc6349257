//! `[hooks]` of the config file: SQL files or shell commands that a run executes at four points
//! (before it starts changing anything, after the schema, after the import, after the sync).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub before_sync: Vec<Hook>,
    #[serde(default)]
    pub after_schema: Vec<Hook>,
    #[serde(default)]
    pub after_import: Vec<Hook>,
    #[serde(default)]
    pub after_sync: Vec<Hook>,
}

/// One hook: `{ sql = "scrub.sql" }` (run in a database) or `{ command = "./notify.sh" }` (run by
/// `sh -c`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub sql: Option<PathBuf>,
    pub command: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStage {
    BeforeSync,
    AfterSchema,
    AfterImport,
    AfterSync,
}

impl HookStage {
    pub fn name(self) -> &'static str {
        match self {
            HookStage::BeforeSync => "before_sync",
            HookStage::AfterSchema => "after_schema",
            HookStage::AfterImport => "after_import",
            HookStage::AfterSync => "after_sync",
        }
    }
}

impl Hooks {
    pub fn at(&self, stage: HookStage) -> &[Hook] {
        match stage {
            HookStage::BeforeSync => &self.before_sync,
            HookStage::AfterSchema => &self.after_schema,
            HookStage::AfterImport => &self.after_import,
            HookStage::AfterSync => &self.after_sync,
        }
    }

    /// Checks every hook names exactly one of `sql` and `command`, and makes SQL paths relative to
    /// the config file's directory absolute, each file present.
    pub fn resolved(mut self, config_directory: &Path) -> Result<Hooks, String> {
        for (stage, hooks) in [
            (HookStage::BeforeSync, &mut self.before_sync),
            (HookStage::AfterSchema, &mut self.after_schema),
            (HookStage::AfterImport, &mut self.after_import),
            (HookStage::AfterSync, &mut self.after_sync),
        ] {
            for hook in hooks.iter_mut() {
                match (&hook.sql, &hook.command) {
                    (Some(path), None) => {
                        let path = config_directory.join(path);
                        if !path.is_file() {
                            return Err(format!(
                                "[hooks] {}: the SQL file {} does not exist",
                                stage.name(),
                                path.display()
                            ));
                        }
                        hook.sql = Some(path);
                    }
                    (None, Some(command)) if !command.trim().is_empty() => {}
                    _ => {
                        return Err(format!(
                            "[hooks] {}: each hook is {{ sql = \"FILE\" }} or {{ command = \"COMMAND\" }}",
                            stage.name()
                        ));
                    }
                }
            }
        }
        Ok(self)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.sql, &self.command) {
            (Some(path), _) => write!(formatter, "sql {}", path.display()),
            (_, Some(command)) => write!(formatter, "command {command}"),
            _ => formatter.write_str("(empty)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_name_a_file_that_exists_or_a_command() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("scrub.sql"), "-- a scrub").unwrap();
        let parsed: Hooks = toml::from_str(
            "after_import = [{ sql = \"scrub.sql\" }, { command = \"echo done\" }]\nafter_sync = [{ command = \"true\" }]",
        )
        .unwrap();
        let hooks = parsed.resolved(directory.path()).unwrap();
        assert_eq!(hooks.at(HookStage::AfterImport).len(), 2);
        assert_eq!(
            hooks.after_import[0].sql.as_deref(),
            Some(directory.path().join("scrub.sql").as_path())
        );
        assert!(hooks.at(HookStage::BeforeSync).is_empty());

        let missing: Hooks = toml::from_str("before_sync = [{ sql = \"nowhere.sql\" }]").unwrap();
        assert!(
            missing
                .resolved(directory.path())
                .unwrap_err()
                .contains("nowhere.sql does not exist")
        );
        let both: Hooks = toml::from_str("after_sync = [{ sql = \"scrub.sql\", command = \"x\" }]").unwrap();
        assert!(both.resolved(directory.path()).unwrap_err().contains("each hook is"));
        assert!(toml::from_str::<Hooks>("after_everything = []").is_err());
    }
}
