//! The databases of a dated target (`Archive_{date}`) on its server, for `dbsync archives`: the
//! same names `--retain` counts, with their dates and sizes.

use chrono::NaiveDateTime;

use crate::connection::Endpoint;
use crate::dated::DatedName;
use crate::errors::SyncError;
use crate::target::TargetServer;

/// One database of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub name: String,
    pub date: NaiveDateTime,
    /// `None` when this role may not connect to it (and so may not read its size).
    pub bytes: Option<i64>,
}

/// The template's databases on the target's server, newest first.
pub async fn list(target: &Endpoint, template: &DatedName) -> Result<Vec<Archive>, SyncError> {
    let server = TargetServer::connect(target).await?;
    let sizes = server.database_sizes(template.prefix()).await?;
    let archives = template
        .archives(sizes.iter().map(|(name, _)| name.as_str()))
        .into_iter()
        .map(|(name, date)| Archive {
            bytes: sizes
                .iter()
                .find(|(candidate, _)| *candidate == name)
                .and_then(|(_, bytes)| *bytes),
            name,
            date,
        })
        .collect();
    Ok(archives)
}
