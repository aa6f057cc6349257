//! The machine-readable report (`--report FILE`): the run's summary as JSON.

use std::path::Path;

use anyhow::{Context, Result};

use super::Summary;

pub fn write(path: &Path, summary: &Summary) -> Result<()> {
    let text = serde_json::to_string_pretty(summary).context("cannot serialise the report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write the report to {}", path.display()))
}
