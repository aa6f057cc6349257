//! `--copy-roles`: the roles the source database's objects need and the target server lacks,
//! created there with their attributes and memberships (never passwords) once the run has its
//! consent, each statement shown. Roles are the server's, not the database's: they stay even
//! when the sync then fails.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{RunContext, interruptible, preflight};
use crate::catalog::{self, RoleDefinition, TargetNeeds};
use crate::errors::SyncError;
use crate::report::{Event, Notice};

impl RunContext<'_> {
    pub(super) async fn copy_roles(
        &mut self,
        source: &Client,
        missing: Vec<String>,
        needs: &TargetNeeds,
    ) -> Result<(), SyncError> {
        let server = self.workspace.target_server.as_ref().expect("connected in preflight");
        let target = interruptible(&self.cancellation, server.session()).await?;
        let definitions = interruptible(&self.cancellation, roles_with_their_groups(source, &target, missing)).await?;
        let as_superuser = interruptible(&self.cancellation, catalog::connected_as_superuser(&target)).await?;
        let statements: Vec<String> = definitions
            .iter()
            .map(|role| catalog::create_role_statement(role, as_superuser))
            .chain(definitions.iter().flat_map(catalog::membership_statements))
            .collect();
        for statement in statements {
            self.emit(Event::Notice(Notice::CopyingRole {
                statement: statement.clone(),
            }));
            interruptible(&self.cancellation, catalog::run_statement(&target, &statement)).await?;
        }
        let server = self.workspace.target_server.as_ref().expect("connected in preflight");
        preflight::check_ownership(self.settings, &needs.required_roles, server, &self.cancellation).await
    }
}

/// The source's definitions of the missing roles and of the groups they belong to that the
/// target lacks too, groups first so that every membership can be granted.
async fn roles_with_their_groups(
    source: &Client,
    target: &Client,
    missing: Vec<String>,
) -> anyhow::Result<Vec<RoleDefinition>> {
    let mut wanted: BTreeSet<String> = missing.iter().cloned().collect();
    let mut definitions: Vec<RoleDefinition> = Vec::new();
    let mut next = missing;
    while !next.is_empty() {
        let found = catalog::role_definitions(source, &next).await?;
        if found.len() < next.len() {
            let absent: Vec<&String> = next
                .iter()
                .filter(|name| !found.iter().any(|role| &role.name == *name))
                .collect();
            anyhow::bail!("the roles {absent:?} are not on the source server either: create them on the target server");
        }
        let groups: BTreeSet<String> = found
            .iter()
            .flat_map(|role| role.member_of.iter().map(|(group, _)| group.clone()))
            .filter(|group| !wanted.contains(group))
            .collect();
        next = catalog::missing_roles(target, &groups).await?;
        wanted.extend(next.iter().cloned());
        definitions.splice(0..0, found);
    }
    Ok(definitions)
}
