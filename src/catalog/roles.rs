//! Roles copied to the target server (`--copy-roles`): their attributes and memberships as the
//! source server has them, never their passwords.

use anyhow::Result;
use tokio_postgres::Client;

use super::{quote_identifier, quote_literal, sql_error};

/// A role's attributes and the roles it is a member of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDefinition {
    pub name: String,
    pub superuser: bool,
    pub create_database: bool,
    pub create_role: bool,
    pub inherit: bool,
    pub login: bool,
    pub replication: bool,
    pub bypass_row_security: bool,
    pub connection_limit: i32,
    pub valid_until: Option<String>,
    /// (role, with admin option)
    pub member_of: Vec<(String, bool)>,
}

/// The definitions of the named roles that exist on this server.
pub async fn role_definitions(client: &Client, names: &[String]) -> Result<Vec<RoleDefinition>> {
    let rows = client
        .query(
            "SELECT r.rolname::text, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolinherit, r.rolcanlogin, \
                    r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text, \
                    coalesce(array_agg(g.rolname::text ORDER BY g.rolname) FILTER (WHERE g.rolname IS NOT NULL), '{}'), \
                    coalesce(array_agg(m.admin_option ORDER BY g.rolname) FILTER (WHERE g.rolname IS NOT NULL), '{}') \
             FROM pg_roles r \
             LEFT JOIN pg_auth_members m ON m.member = r.oid \
             LEFT JOIN pg_roles g ON g.oid = m.roleid \
             WHERE r.rolname = ANY($1) \
             GROUP BY r.oid, r.rolname, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolinherit, r.rolcanlogin, \
                      r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil \
             ORDER BY r.rolname",
            &[&names],
        )
        .await
        .map_err(|error| sql_error("cannot read the source's roles", error))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let groups: Vec<String> = row.get(10);
            let admin: Vec<bool> = row.get(11);
            RoleDefinition {
                name: row.get(0),
                superuser: row.get(1),
                create_database: row.get(2),
                create_role: row.get(3),
                inherit: row.get(4),
                login: row.get(5),
                replication: row.get(6),
                bypass_row_security: row.get(7),
                connection_limit: row.get(8),
                valid_until: row.get(9),
                member_of: groups.into_iter().zip(admin).collect(),
            }
        })
        .collect())
}

/// Whether the connected user is a superuser (and so may create superusers, replication and
/// BYPASSRLS roles).
pub async fn connected_as_superuser(client: &Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(|error| sql_error("cannot read the connected role", error))?
        .get(0))
}

/// `CREATE ROLE` with the role's attributes and no password; the attributes only a superuser
/// may give are given only when `as_superuser`.
pub fn create_role_statement(role: &RoleDefinition, as_superuser: bool) -> String {
    let flag = |on: bool, name: &str| if on { name.to_string() } else { format!("NO{name}") };
    let mut statement = format!(
        "CREATE ROLE {} WITH {} {} {} {} {} {} {} CONNECTION LIMIT {}",
        quote_identifier(&role.name),
        flag(role.superuser && as_superuser, "SUPERUSER"),
        flag(role.create_database, "CREATEDB"),
        flag(role.create_role, "CREATEROLE"),
        flag(role.inherit, "INHERIT"),
        flag(role.login, "LOGIN"),
        flag(role.replication && as_superuser, "REPLICATION"),
        flag(role.bypass_row_security && as_superuser, "BYPASSRLS"),
        role.connection_limit
    );
    if let Some(until) = &role.valid_until {
        statement.push_str(&format!(" VALID UNTIL {}", quote_literal(until)));
    }
    statement
}

/// `GRANT group TO role` for each membership.
pub fn membership_statements(role: &RoleDefinition) -> Vec<String> {
    role.member_of
        .iter()
        .map(|(group, admin)| {
            format!(
                "GRANT {} TO {}{}",
                quote_identifier(group),
                quote_identifier(&role.name),
                if *admin { " WITH ADMIN OPTION" } else { "" }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(superuser: bool) -> RoleDefinition {
        RoleDefinition {
            name: "app owner".into(),
            superuser,
            create_database: true,
            create_role: false,
            inherit: true,
            login: false,
            replication: true,
            bypass_row_security: false,
            connection_limit: 5,
            valid_until: Some("2030-01-01 00:00:00+00".into()),
            member_of: vec![("staff".into(), true)],
        }
    }

    #[test]
    fn superuser_attributes_only_from_a_superuser_and_never_a_password() {
        let statement = create_role_statement(&role(true), false);
        assert_eq!(
            statement,
            "CREATE ROLE \"app owner\" WITH NOSUPERUSER CREATEDB NOCREATEROLE INHERIT NOLOGIN NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT 5 VALID UNTIL '2030-01-01 00:00:00+00'"
        );
        assert!(create_role_statement(&role(true), true).contains(" SUPERUSER ") && !statement.contains("PASSWORD"));
        assert!(create_role_statement(&role(false), true).contains("NOSUPERUSER"));
        assert_eq!(
            membership_statements(&role(false)),
            ["GRANT \"staff\" TO \"app owner\" WITH ADMIN OPTION"]
        );
    }
}
