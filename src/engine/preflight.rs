//! Everything checked before anything is created: the source's inventory and the plan, that the
//! target is another database, that the target server has the roles and extensions the copy
//! names, that client tools fit the source server, and consent to replace an existing target.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::interruptible;
use crate::catalog::{
    self, DatabaseInfo, DatabaseSetting, Inventory, QualifiedName, RequiredRoles, ServerInfo, TargetNeeds,
};
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::masking::{Distinct, TableTransforms, Transform};
use crate::plan::{self, Plan, PlanRequest};
use crate::report::Warning;
use crate::report::prompt::{self, Answer, Question};
use crate::scheduler::Cancellation;
use crate::settings::{Content, Settings};
use crate::target::TargetServer;
use crate::tools::{self, PgTools};
use crate::usage_error;

/// The source as inspected, with the session that will hold the snapshot.
pub struct Source {
    /// The session that inspected the source and holds the snapshot (shared with the steps,
    /// which stop retrying once it is gone).
    pub client: std::sync::Arc<Client>,
    pub server: ServerInfo,
    pub database: DatabaseInfo,
    pub settings: Vec<DatabaseSetting>,
    pub inventory: Inventory,
    /// The table of every index and constraint, by oid.
    pub index_owners: HashMap<u32, u32>,
    pub free_slots: i64,
    /// The backend process of `client` on the source.
    pub pid: i32,
    /// The source as the user gave it (its user is the role dbsync reads the source as).
    pub endpoint: Endpoint,
    /// Its server's system identifier and the database's OID (`catalog::database_identity`).
    pub identity: Option<String>,
}

impl Source {
    /// The snapshot `id`, exported by this source's session, which holds it for every dump.
    pub fn snapshot(&self, id: String) -> super::steps::Snapshot {
        super::steps::Snapshot {
            source: self.endpoint.clone(),
            id,
            session: self.client.clone(),
        }
    }
}

/// The session that inspects the source and then holds the snapshot, with the run's lock
/// timeout, and its process id (to tell what it waits for).
pub async fn connect_source(
    source: &Endpoint,
    settings: &Settings,
    cancellation: &Cancellation,
) -> Result<(Client, i32), SyncError> {
    let client = interruptible(cancellation, catalog::connect(source, "source")).await?;
    let pid = interruptible(
        cancellation,
        catalog::prepare_snapshot_session(&client, settings.lock_timeout),
    )
    .await?;
    Ok((client, pid))
}

/// Reads the source's catalogs. Sizing tables takes a share lock on each, so a session holding
/// an exclusive lock makes this wait (up to the lock timeout).
pub async fn inspect_source(
    client: Client,
    pid: i32,
    endpoint: &Endpoint,
    cancellation: &Cancellation,
) -> Result<Source, SyncError> {
    let inspect = async {
        let server = catalog::server_info(&client).await?;
        let database = catalog::database_info(&client, server.major()).await?;
        let settings = catalog::database_settings(&client).await?;
        let inventory = catalog::inventory(&client).await?;
        let index_owners = catalog::index_and_constraint_tables(&client).await?;
        let free_slots = catalog::free_connection_slots(&client).await?;
        let identity = catalog::database_identity(&client).await;
        anyhow::Ok((
            server,
            database,
            settings,
            inventory,
            (index_owners, free_slots, identity),
        ))
    };
    let (server, database, settings, inventory, (index_owners, free_slots, identity)) =
        interruptible(cancellation, inspect).await?;
    Ok(Source {
        client: std::sync::Arc::new(client),
        server,
        database,
        settings,
        inventory,
        index_owners,
        free_slots,
        pid,
        endpoint: endpoint.clone(),
        identity,
    })
}

pub fn plan(settings: &Settings, inventory: &Inventory) -> Result<Plan, SyncError> {
    plan::build(
        inventory,
        &PlanRequest {
            include: &settings.include,
            exclude: &settings.exclude,
            jobs: settings.jobs.get(),
            foreign_key_policy: settings.foreign_keys,
            schema_only: settings.content == Content::SchemaOnly,
            export_only: settings.kind() == crate::report::RunKind::Dump,
        },
    )
}

/// Connects to the target server and refuses a target that is the source itself (when there
/// is a source server), or a server that lacks roles (unless `--copy-roles`) or extensions the
/// copy needs, or a target another run is copying into. Returns the server, with this run's lock
/// on the target taken, its free connection slots, and the roles `--copy-roles` must create.
pub async fn check_target(
    settings: &Settings,
    endpoint: &Endpoint,
    needs: &TargetNeeds,
    source: Option<&Source>,
    cancellation: &Cancellation,
) -> Result<(TargetServer, i64, Vec<String>), SyncError> {
    let target = interruptible(cancellation, TargetServer::connect(endpoint)).await?;
    if let Some(source) = source {
        let same_cluster = source
            .server
            .same_server_as(&target.server)
            .unwrap_or_else(|| source.endpoint.host == endpoint.host && source.endpoint.port == endpoint.port);
        if same_cluster && source.endpoint.dbname == endpoint.dbname {
            return Err(usage_error!(
                "the source and the target are the same database ({endpoint}); choose another target database name"
            ));
        }
    }
    let roles_to_copy = check_roles(settings, &needs.required_roles, &target, source.is_some(), cancellation).await?;
    let unavailable = interruptible(cancellation, async {
        let client = target.session().await?;
        catalog::unavailable_extensions(&client, &needs.extensions).await
    })
    .await?;
    if !unavailable.is_empty() {
        return Err(SyncError::Failed(anyhow::anyhow!(
            "the target server cannot create extensions the source database uses: {}\nhint: install them on the target server first",
            unavailable.join(", ")
        )));
    }
    let free_slots = interruptible(cancellation, async {
        catalog::free_connection_slots(&*target.session().await?).await
    })
    .await?;
    if let Err(holder) = interruptible(cancellation, target.lock_for_run(&endpoint.dbname)).await? {
        return Err(usage_error!(
            "another dbsync run is copying into {}: the session {holder} holds its lock; wait for it to end",
            endpoint
        ));
    }
    Ok((target, free_slots, roles_to_copy))
}

/// Refuses a target server of an older major version than the source's, unless
/// `--allow-downgrade`: what a newer server holds (syntax, catalog features) an older one may
/// not, and a failure would come only half-way through the copy.
pub fn refuse_downgrade(settings: &Settings, source_major: u32, target_major: u32) -> Result<(), SyncError> {
    if target_major >= source_major || settings.allow_downgrade {
        return Ok(());
    }
    Err(usage_error!(
        "the target server runs PostgreSQL {target_major}, older than the source's {source_major}: a downgrade can fail half-way or copy less than the source has\nhint: copy into a PostgreSQL {source_major} or newer server, or pass --allow-downgrade to try it (validation still compares the copy with the source)"
    ))
}

/// Refuses, even with `--allow-downgrade`, a copy into an older server of objects it cannot
/// hold, naming them: they would fail the schema restore half-way.
pub async fn refuse_what_an_older_target_cannot_hold(
    source: &Source,
    target_major: u32,
    cancellation: &Cancellation,
) -> Result<(), SyncError> {
    if source.server.major() < 18 || target_major >= 18 {
        return Ok(());
    }
    let found = interruptible(cancellation, catalog::objects_newer_than_17(&source.client)).await?;
    if found.is_empty() {
        return Ok(());
    }
    Err(usage_error!(
        "the target server runs PostgreSQL {target_major}, which cannot hold what the source (PostgreSQL {}) has: {}\nhint: copy into a PostgreSQL {} or newer server, or change those objects on the source first",
        source.server.major(),
        found.join(", "),
        source.server.major()
    ))
}

/// Roles the restore will name: owners and grantees unless left out, policy roles always. The
/// missing ones are returned for `--copy-roles` (when there is a source to copy them from).
async fn check_roles(
    settings: &Settings,
    roles: &RequiredRoles,
    target: &TargetServer,
    from_a_source: bool,
    cancellation: &Cancellation,
) -> Result<Vec<String>, SyncError> {
    let mut wanted = roles.policy_roles.clone();
    if !settings.no_owner {
        wanted.extend(roles.owners.iter().cloned());
    }
    if !settings.no_privileges {
        wanted.extend(roles.grantees.iter().cloned());
    }
    let missing = interruptible(cancellation, async {
        catalog::missing_roles(&*target.session().await?, &wanted).await
    })
    .await?;
    if missing.is_empty() {
        check_ownership(settings, roles, target, cancellation).await?;
        return Ok(missing);
    }
    if settings.copy_roles && from_a_source {
        return Ok(missing);
    }
    let policy_only = missing.iter().any(|role| roles.policy_roles.contains(role));
    let advice = if policy_only {
        "create them on the target server or pass --copy-roles (row-level-security policies name them, so --no-owner/--no-privileges do not help)"
    } else {
        "create them on the target server (--copy-roles does it), or pass --no-owner --no-privileges to give every object to the target user"
    };
    Err(usage_error!(
        "roles that own or are granted objects in the source database do not exist on the target server: {}\nhint: {advice}",
        missing.join(", ")
    ))
}

/// Restoring owners needs the target user to be a superuser or a member of each owner role.
pub async fn check_ownership(
    settings: &Settings,
    roles: &RequiredRoles,
    target: &TargetServer,
    cancellation: &Cancellation,
) -> Result<(), SyncError> {
    if settings.no_owner {
        return Ok(());
    }
    let owners = &roles.owners;
    let refused = interruptible(cancellation, async {
        catalog::roles_not_assumable(&*target.session().await?, owners).await
    })
    .await?;
    if refused.is_empty() {
        return Ok(());
    }
    let user = &target.endpoint().user;
    Err(usage_error!(
        "the target user {user} cannot give objects to the roles that own them in the source ({}): it is neither a superuser nor a member of them\nhint: pass --no-owner to give every object to {user}, or GRANT those roles to {user} on the target server",
        refused.join(", ")
    ))
}

/// The source user must be able to read every table and sequence whose data is copied. Tables
/// it may not read and that are not copied are returned: `pg_dump` cannot lock them, so the
/// schema dump leaves them out.
pub async fn check_source_access(
    source: &Source,
    plan: &Plan,
    cancellation: &Cancellation,
) -> Result<Vec<QualifiedName>, SyncError> {
    let copied: Vec<QualifiedName> = plan
        .tables
        .iter()
        .flat_map(|table| table.members.iter())
        .chain(&plan.sequences)
        .cloned()
        .collect();
    let unreadable = interruptible(cancellation, catalog::unreadable(&source.client, &copied)).await?;
    let mut schemas: Vec<&str> = unreadable.iter().map(|name| name.schema.as_str()).collect();
    schemas.dedup();
    let closed = interruptible(cancellation, catalog::schemas_without_usage(&source.client, &schemas)).await?;
    if !closed.is_empty() {
        let user = &source.endpoint.user;
        let patterns: Vec<String> = closed.iter().map(|schema| format!("'{schema}.*'")).collect();
        return Err(usage_error!(
            "the source user {user} may not use the schema(s) {} (no USAGE privilege), whose tables are to be copied\nhint: GRANT USAGE ON SCHEMA {} TO {user}, or leave them out: --exclude {}",
            closed.join(", "),
            closed.join(", "),
            patterns.join(" --exclude ")
        ));
    }
    if !unreadable.is_empty() {
        let names: Vec<String> = unreadable
            .iter()
            .map(|name| format!("{}.{}", name.schema, name.name))
            .collect();
        return Err(usage_error!(
            "the source user {} may not read {} of the tables and sequences to copy: {}\nhint: grant it SELECT on them, or leave them out: --exclude {}",
            source.endpoint.user,
            names.len(),
            names.join(", "),
            names.join(",")
        ));
    }
    let selected: std::collections::HashSet<u32> = plan
        .tables
        .iter()
        .flat_map(|table| table.tree_oids.iter().copied())
        .collect();
    let others: Vec<QualifiedName> = source
        .inventory
        .tables
        .iter()
        .filter(|table| !selected.contains(&table.oid))
        .map(|table| table.name.clone())
        .collect();
    interruptible(cancellation, catalog::unreadable(&source.client, &others)).await
}

/// Lock slots the source needs: the snapshot session's lock on every copied table while
/// `pg_dump` locks every table again.
pub fn source_lock_need(source: &Source, plan: &Plan) -> i64 {
    let all_tables = source.inventory.tables.len() as i64;
    let locked: i64 = plan.tables.iter().map(|table| table.tree_oids.len() as i64).sum();
    locked + all_tables
}

/// Objects per transaction of a schema restored in batches, at most.
pub const SCHEMA_TRANSACTION_SIZE: u32 = 1000;

/// Refuses a run that would exhaust a server's shared lock table ("out of shared memory"
/// half-way), with the numbers and the setting to raise. `source` is `None` for a restore.
/// A schema too large for one transaction is restored in batches where `pg_restore` can
/// (17+): the transaction size is returned.
pub async fn check_lock_capacity(
    source: Option<(&Source, &Plan)>,
    target: &TargetServer,
    needs: &TargetNeeds,
    restore_major: u32,
    cancellation: &Cancellation,
) -> Result<Option<u32>, SyncError> {
    let mut checks = Vec::new();
    if let Some((source, plan)) = source {
        let capacity = interruptible(cancellation, catalog::lock_capacity(&source.client)).await?;
        // pg_dump locks every table for the schema whatever is selected; fewer selected tables
        // only help when that alone fits.
        let fewer_help = plan.whole_database && (source.inventory.tables.len() as i64) < capacity.0;
        let alternative = match fewer_help {
            true => ", or copy fewer tables per run with --include",
            false => "",
        };
        checks.push(("source", source_lock_need(source, plan), capacity, alternative));
    }
    let target_capacity = interruptible(cancellation, async {
        catalog::lock_capacity(&*target.session().await?).await
    })
    .await?;
    // The schema is restored whole, whatever is selected: in one transaction, or in batches
    // (each locking about three slots per object, as the whole does, and taking at most half
    // the lock table) where it does not fit.
    let batched = needs.schema_locks > target_capacity.0 && restore_major >= 17;
    let batch_size = (target_capacity.0 / 2 / 3).clamp(1, i64::from(SCHEMA_TRANSACTION_SIZE)) as u32;
    let (target_need, alternative) = match batched {
        true => (3 * i64::from(batch_size), ""),
        false if needs.schema_locks > target_capacity.0 => (
            needs.schema_locks,
            ", or use pg_restore 17 or newer (--pg-bin), which dbsync lets restore the schema in batches",
        ),
        false => (needs.schema_locks, ""),
    };
    checks.push(("target", target_need, target_capacity, alternative));
    for (side, need, (capacity, per_transaction), alternative) in checks {
        if need > capacity {
            return Err(usage_error!(
                "the {side} server has room for about {capacity} locks (max_locks_per_transaction {per_transaction} × (max_connections + max_prepared_transactions)), and this copy needs about {need}\nhint: raise max_locks_per_transaction on the {side} server to at least {} (it needs a restart){alternative}",
                need / (capacity / per_transaction).max(1) + 1
            ));
        }
    }
    Ok(batched.then_some(batch_size))
}

/// Free bytes in the file system holding `directory` (for an unprivileged user).
pub fn free_space(directory: &std::path::Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(directory).ok()?;
    Some(stats.blocks_available() as u64 * stats.fragment_size() as u64)
}

/// A warning when the dump directory's free space is below what the copied tables take on the
/// source: dumps are deleted as soon as loaded, but a slow target lets them pile up.
pub fn dump_space_warning(free: u64, plan: &Plan, directory: &std::path::Path) -> Option<Warning> {
    let needed: u64 = plan.tables.iter().map(|table| table.size_bytes.max(0) as u64).sum();
    (free < needed).then(|| Warning::DumpSpaceShort {
        directory: directory.display().to_string(),
        free,
        needed,
    })
}

pub fn locate_tools(settings: &Settings, source: &Source) -> Result<PgTools, SyncError> {
    let usage = |error: anyhow::Error| SyncError::Usage(format!("{error:#}"));
    let tools = tools::locate(
        settings.pg_bin.as_deref(),
        tools::ToolNeed::Source(source.server.major()),
    )
    .map_err(usage)?;
    // What is kept is compressed as asked, by these tools (nothing kept: no compression).
    tools::check_compression(&tools, settings.compression).map_err(usage)?;
    Ok(tools)
}

/// Replacing an existing database needs `--yes`, or a "yes" typed at a terminal.
pub async fn obtain_consent(
    settings: &Settings,
    target: &Endpoint,
    cancellation: &Cancellation,
) -> Result<(), SyncError> {
    let question = Question::ReplaceTarget {
        target: target.to_string(),
    };
    let refusals = (
        format!("not replacing {target}: the answer was not yes"),
        format!(
            "the target database {target} exists; pass --yes to replace it (it is kept until the new copy is complete and validated)"
        ),
    );
    ask_unless_yes(settings, question, refusals, cancellation).await
}

/// A data-only refresh replaces rows in the existing target: asked like a replace, unless `--yes`.
pub async fn obtain_refresh_consent(
    settings: &Settings,
    target: &Endpoint,
    tables: usize,
    cancellation: &Cancellation,
) -> Result<(), SyncError> {
    let (what, writes) = match &settings.content {
        crate::settings::Content::Incremental { .. } => (
            "an incremental sync writes the rows that differ into",
            "get the rows that changed in the source",
        ),
        crate::settings::Content::Merge(_) => (
            "a merge adds the source's rows to",
            "get the source's rows, with new keys",
        ),
        _ => (
            "a data-only refresh replaces the rows of",
            "have their rows replaced by the source's",
        ),
    };
    let question = Question::RefreshTarget {
        target: target.to_string(),
        tables,
        writes,
    };
    let refusals = (
        format!("not writing into {target}: the answer was not yes"),
        format!("{what} {tables} table(s) in {target}; pass --yes to do it (each table changes in one transaction)"),
    );
    ask_unless_yes(settings, question, refusals, cancellation).await
}

/// Asks `question` at a terminal unless `--yes`; `refusals` say why not when the answer is no,
/// and when there is nobody to ask.
async fn ask_unless_yes(
    settings: &Settings,
    question: Question,
    (answered_no, cannot_ask): (String, String),
    cancellation: &Cancellation,
) -> Result<(), SyncError> {
    if settings.assume_yes {
        return Ok(());
    }
    let answer = tokio::task::spawn_blocking(move || prompt::ask(&question));
    let answer = tokio::select! {
        answer = answer => answer
            .map_err(|error| anyhow::anyhow!("{error}"))?
            .map_err(|error| anyhow::anyhow!("cannot read the answer: {error}"))?,
        _ = cancellation.cancelled() => return Err(super::cancelled(cancellation)),
    };
    match answer {
        Answer::Yes => Ok(()),
        Answer::No => Err(SyncError::Usage(answered_no)),
        Answer::CannotAsk => Err(SyncError::Usage(cannot_ask)),
    }
}

/// Masked columns by planned table: each `[transform]` table found in the plan (a standard
/// table, an inheritance tree or a tree partitioned by range or list), each column found, each
/// transform's expression built for the column's type. Every problem is refused here, before
/// anything is created.
pub async fn resolve_masks(
    settings: &Settings,
    source: &Endpoint,
    plan: &Plan,
    cancellation: &Cancellation,
) -> Result<HashMap<usize, Vec<(String, String)>>, SyncError> {
    let mut masks = HashMap::new();
    if settings.masking.is_empty() {
        return Ok(masks);
    }
    let mut planned = Vec::new();
    for transforms in &settings.masking.tables {
        planned.push((masked_table(plan, &transforms.table)?, transforms));
    }
    let names: Vec<QualifiedName> = planned
        .iter()
        .map(|(index, _)| plan.tables[*index].name.clone())
        .collect();
    // A session of its own: reading columns changes a session's search_path.
    let read = async {
        let client = catalog::connect(source, "source").await?;
        // The salt goes to the source as a bind parameter: refused now, before anything is
        // created, if the server would write it to its log and this role may not stop that.
        let logged = match settings.masking.salt {
            Some(_) => {
                catalog::keep_parameters_out_of_the_log(&client).await?;
                catalog::parameters_logged(&client).await?
            }
            None => None,
        };
        let keys = (
            catalog::unique_indexes(&client, &names).await?,
            catalog::foreign_key_columns(&client).await?,
        );
        anyhow::Ok((catalog::table_columns(&client, &names).await?, logged, keys))
    };
    let (columns, logged, (unique, foreign)) = interruptible(cancellation, read).await?;
    if let Some(reason) = logged {
        return Err(usage_error!(
            "the source server writes statement parameters to its log ({reason}), and {} may not turn that off for its sessions: the masking salt would be written there\nhint: mask as a superuser (or, on PostgreSQL 15+, GRANT SET ON PARAMETER log_parameter_max_length TO {}), or turn that logging off on the source",
            source.user,
            source.user
        ));
    }
    for ((index, transforms), columns) in planned.into_iter().zip(columns) {
        masks.insert(index, mask_expressions(transforms, &columns.unwrap_or_default())?);
    }
    let masked: Vec<(&QualifiedName, &TableTransforms)> = planned_names(plan, &settings.masking.tables)?;
    if let Some(problem) = mask_key_problems(&masked, &unique, &foreign, plan).into_iter().next() {
        return Err(usage_error!("{problem}"));
    }
    Ok(masks)
}

/// Each masked column of a table with its transform's expression for the column's type.
fn mask_expressions(
    transforms: &TableTransforms,
    columns: &[catalog::TableColumn],
) -> Result<Vec<(String, String)>, SyncError> {
    let mut expressions = Vec::new();
    for (name, transform) in &transforms.columns {
        let column = columns.iter().find(|column| &column.name == name).ok_or_else(|| {
            usage_error!(
                "[transform.{}] names column {name}, which the table does not have",
                transforms.table
            )
        })?;
        let expression = catalog::transform_expression(column, transform)
            .map_err(|error| usage_error!("[transform.{}] {name}: {error}", transforms.table))?;
        expressions.push((name.clone(), expression));
    }
    Ok(expressions)
}

fn planned_names<'a>(
    plan: &'a Plan,
    tables: &'a [TableTransforms],
) -> Result<Vec<(&'a QualifiedName, &'a TableTransforms)>, SyncError> {
    tables
        .iter()
        .map(|transforms| Ok((&plan.tables[masked_table(plan, &transforms.table)?].name, transforms)))
        .collect()
}

/// What masking would break in keys, found before anything is copied (otherwise only the index
/// build or the foreign key after the whole load would say so): a transform that can give two
/// rows the same value on a column of a unique index (or an `sql('…')` not declared unique), a
/// masked column that a foreign key of a copied table references while the referencing column is
/// not masked the same way (its values would point at values that are gone), and a conditional
/// mask on either end of a foreign key (each table's condition reads its own columns).
fn mask_key_problems(
    masked: &[(&QualifiedName, &TableTransforms)],
    unique: &[catalog::UniqueIndex],
    foreign: &[catalog::ForeignKeyColumn],
    plan: &Plan,
) -> Vec<String> {
    let transform_of = |table: &QualifiedName, column: &str| {
        masked
            .iter()
            .find(|(name, _)| *name == table)
            .and_then(|(_, transforms)| transforms.columns.get(column))
    };
    let written = |table: &QualifiedName| {
        masked
            .iter()
            .find(|(name, _)| *name == table)
            .map_or_else(|| table.display_name(), |(_, transforms)| transforms.table.clone())
    };
    let mut problems = Vec::new();
    for index in unique {
        for column in &index.columns {
            let Some(transform) = transform_of(&index.table, column) else {
                continue;
            };
            let prefix = format!("[transform.{}] {column}: {transform}", written(&index.table));
            if let Some(problem) = uniqueness_problem(&prefix, transform, column, index) {
                problems.push(problem);
            }
        }
    }
    problems.extend(foreign_key_problems(&transform_of, &written, foreign, plan));
    problems
}

/// `mask_key_problems` for foreign keys: a referenced column masked otherwise than its
/// referencing column, and a conditional mask on either end.
fn foreign_key_problems<'a>(
    transform_of: &dyn Fn(&QualifiedName, &str) -> Option<&'a Transform>,
    written: &dyn Fn(&QualifiedName) -> String,
    foreign: &[catalog::ForeignKeyColumn],
    plan: &Plan,
) -> Vec<String> {
    let mut problems = Vec::new();
    let copied = |table: &QualifiedName| {
        plan.tables
            .iter()
            .any(|planned| planned.members.contains(table) || &planned.name == table)
    };
    for key in foreign.iter().filter(|key| copied(&key.table)) {
        let referencing = transform_of(&key.table, &key.column);
        let referenced = transform_of(&key.referenced, &key.referenced_column);
        for (table, column, transform) in [
            (&key.table, &key.column, referencing),
            (&key.referenced, &key.referenced_column, referenced),
        ] {
            if let Some(transform @ Transform::When { .. }) = transform {
                problems.push(format!(
                    "[transform.{}] {column}: {transform} is conditional, and the foreign key {} → {} links {column}: each \
                     table's condition reads its own columns, so the two ends could be masked differently\nhint: mask \
                     both ends with the same transform, without when",
                    written(table),
                    key.table.display_name(),
                    key.referenced.display_name()
                ));
            }
        }
        let Some(transform) = referenced else {
            continue;
        };
        if referencing != Some(transform) {
            problems.push(format!(
                "[transform.{}] {}: a foreign key of {} references it by {}, which is not masked the same way, so the \
                 copy's keys would point at values that are gone\nhint: add [transform.{}] {} = \"{transform}\"",
                written(&key.referenced),
                key.referenced_column,
                key.table.display_name(),
                key.column,
                key.table.display_name(),
                key.column
            ));
        }
    }
    problems
}

/// Why `transform` on `column` of the unique index `index` would fail the index's build, if it
/// would.
fn uniqueness_problem(
    prefix: &str,
    transform: &Transform,
    column: &str,
    index: &catalog::UniqueIndex,
) -> Option<String> {
    let name = &index.name;
    match transform.distinct() {
        Distinct::Kept => None,
        Distinct::AllNull if !index.nulls_not_distinct => None,
        Distinct::AllNull => Some(format!(
            "{prefix} makes every value NULL, and {column} is in the unique index {name}, which treats NULLs as \
             equal (NULLS NOT DISTINCT), so the copy would fail when it is built\nhint: mask {column} with hash, \
             email or uuid, which keep values unique"
        )),
        Distinct::Lost => Some(format!(
            "{prefix} can give two rows the same value, and {column} is in the unique index {name}, so the copy \
             would fail when it is built\nhint: mask {column} with hash, email or uuid, which keep values unique"
        )),
        Distinct::Unknown => Some(format!(
            "{prefix} may give two rows the same value, and {column} is in the unique index {name}, so the copy \
             could fail when it is built\nhint: if the expression keeps distinct values distinct, say so: \
             sql('…', unique); otherwise mask {column} with hash, email or uuid"
        )),
    }
}

/// The planned table `[transform.<written>]` names: exactly one, and not hash-partitioned.
fn masked_table(plan: &Plan, written: &str) -> Result<usize, SyncError> {
    let found: Vec<usize> = (0..plan.tables.len())
        .filter(|index| names_table(written, &plan.tables[*index].name))
        .collect();
    let index = match found.as_slice() {
        [index] => *index,
        [] => {
            return Err(usage_error!(
                "[transform.{written}] names a table this run does not copy\nhint: check the name (schema.table) and the selection"
            ));
        }
        _ => {
            return Err(usage_error!(
                "[transform.{written}] names tables in several schemas; write it as [transform.\"schema.{written}\"]"
            ));
        }
    };
    // Its partitions load together through the root, by pg_dump: the row-copy path cannot mask them.
    if plan
        .units
        .iter()
        .any(|unit| unit.truncate_whole_tree && unit.planned_tables.contains(&index))
    {
        return Err(usage_error!(
            "[transform.{written}]: masking a hash-partitioned table is not supported (its rows are loaded through the root, which dbsync's row copy does not do); mask a table partitioned by range or list, or a standard table"
        ));
    }
    Ok(index)
}

/// `users` names a table of that name in any schema; `app.users` only the one in `app`.
pub fn names_table(written: &str, table: &QualifiedName) -> bool {
    match written.split_once('.') {
        Some((schema, name)) => schema == table.schema && name == table.name,
        None => written == table.name,
    }
}

#[cfg(test)]
mod space_tests {
    use super::*;
    use crate::plan::{ForeignKeyPolicy, Plan, PlannedTable};

    #[test]
    fn short_dump_space_is_warned_about() {
        let table = |size: i64| PlannedTable {
            name: QualifiedName {
                schema: "public".into(),
                name: "t".into(),
            },
            oid: 1,
            description: String::new(),
            members: Vec::new(),
            member_oids: Vec::new(),
            tree_oids: Vec::new(),
            partitioned: false,
            size_bytes: size,
            estimated_rows: None,
        };
        let plan = Plan {
            whole_database: true,
            tables: vec![table(600), table(500)],
            units: Vec::new(),
            sequences: Vec::new(),
            large_object_count: 0,
            copy_large_objects: false,
            dangling_foreign_keys: Vec::new(),
            foreign_key_policy: ForeignKeyPolicy::NotValid,
            referenced_tables: Vec::new(),
            parallel_foreign_keys: Vec::new(),
        };
        let directory = std::path::Path::new("/var/tmp");
        assert!(dump_space_warning(2000, &plan, directory).is_none());
        assert_eq!(
            dump_space_warning(1000, &plan, directory),
            Some(Warning::DumpSpaceShort {
                directory: "/var/tmp".into(),
                free: 1000,
                needed: 1100
            })
        );
        assert!(free_space(std::path::Path::new("/")).is_some_and(|free| free > 0));
    }
}
