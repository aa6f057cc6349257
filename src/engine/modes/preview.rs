//! `dbsync plan` (and `sync --dry-run`): what a sync would do, changing nothing. The source is
//! inspected and planned as for a sync; the target server is asked only what would stop or
//! change the run (its version, whether the target exists, missing roles and extensions, free
//! connection slots); no lock is taken, nothing is created.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::catalog::{self, Inventory};
use crate::connection::Endpoint;
use crate::engine::preflight::{self, Source};
use crate::engine::{RunContext, interruptible};
use crate::errors::SyncError;
use crate::plan::{self, Plan};
use crate::report::{KeyFate, PlanClone, PlanReport, PlanServer, PlanTable, PlanUnit, Reporter, Warning};
use crate::scheduler::Cancellation;
use crate::settings::{CloneWhen, Places, Settings, Transfer};
use crate::subset::{Reach, SubsetPlan};
use crate::target::TargetServer;

/// `dbsync plan`: the run context, used for its source inspection.
pub(in crate::engine) struct Preview<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) target: &'a Endpoint,
}

pub async fn preview(
    settings: &Settings,
    reporter: Arc<dyn Reporter>,
    cancellation: Cancellation,
) -> Result<PlanReport, SyncError> {
    let Places::Databases { source, target } = &settings.places else {
        return Err(crate::usage_error!("a plan is made for a sync between two databases"));
    };
    let mut mode = Preview {
        context: RunContext::new(settings, reporter, cancellation),
        source,
        target,
    };
    mode.run().await
}

impl Preview<'_> {
    pub(in crate::engine) async fn run(&mut self) -> Result<PlanReport, SyncError> {
        let settings = self.context.settings;
        let (source, plan, _) = self.context.inspect_source(self.source).await?;
        let tools = preflight::locate_tools(settings, &source)?;
        let target = interruptible(&self.context.cancellation, TargetServer::connect(self.target)).await?;
        let mut warnings: Vec<String> = std::mem::take(&mut self.context.deferred_warnings)
            .into_iter()
            .map(|warning| warning.to_string())
            .collect();
        let target_exists =
            interruptible(&self.context.cancellation, target.database_exists(&self.target.dbname)).await?;
        warnings.extend(self.target_warnings(&source, &target, target_exists).await?);
        warnings.extend(source_warnings(&plan, &source.inventory));
        let estimated_dump_bytes = match settings.transfer {
            Transfer::Stream => 0,
            Transfer::Files { .. } => plan.tables.iter().map(|table| table.size_bytes.max(0) as u64).sum(),
        };
        let free = preflight::free_space(&settings.dump_dir);
        if let (Some(free), Transfer::Files { .. }) = (free, settings.transfer) {
            warnings.extend(
                preflight::dump_space_warning(free, &plan, &settings.dump_dir).map(|warning| warning.to_string()),
            );
        }
        self.context.plan_subset(&source, &plan).await?;
        let mut report = PlanReport {
            source: PlanServer {
                endpoint: self.source.to_string(),
                version: source.server.version_number,
            },
            target: PlanServer {
                endpoint: self.target.to_string(),
                version: target.server.version_number,
            },
            target_exists,
            pg_dump: tools.pg_dump.display().to_string(),
            pg_restore: tools.pg_restore.display().to_string(),
            tools_reason: format!(
                "{}: the lowest installed version at least the source server's ({}){}",
                tools.version_text,
                source.server.major(),
                crate::tools::target_note(&tools, target.server.major())
                    .map(|note| format!("; {note}"))
                    .unwrap_or_default()
            ),
            estimated_dump_bytes,
            dump_directory: settings.dump_dir.display().to_string(),
            dump_directory_free_bytes: free,
            warnings,
            clone: self.clone_plan(&source, &plan, &target).await?,
            // Without a session to spare the sync would stop before cutting anything.
            split_tables: match self.context.granted {
                Some(_) => self.context.planned_splits(&plan, &source).await?,
                None => Vec::new(),
            },
            ..describe_plan(&plan, &source.inventory, &self.context.masks)
        };
        if let Some(subset) = &self.context.subset {
            describe_subset(&mut report.tables, &plan, subset);
        }
        Ok(report)
    }

    /// `--clone`: whether the sync would clone, and if not why, and what it would do instead.
    async fn clone_plan(
        &self,
        source: &Source,
        plan: &Plan,
        target: &TargetServer,
    ) -> Result<Option<PlanClone>, SyncError> {
        let otherwise = match self.context.settings.clone {
            CloneWhen::Never => return Ok(None),
            CloneWhen::Always => "the sync would be refused",
            CloneWhen::Auto => "a logical copy instead",
        };
        let obstacle = self.context.clone_obstacle(source, plan, target).await?;
        Ok(Some(PlanClone {
            would_clone: obstacle.is_none(),
            obstacle,
            otherwise,
        }))
    }

    /// What the target server lacks or would lose: roles, extensions, connection slots, the
    /// database a sync would replace.
    async fn target_warnings(
        &mut self,
        source: &Source,
        target: &TargetServer,
        target_exists: bool,
    ) -> Result<Vec<String>, SyncError> {
        let settings = self.context.settings;
        let needs = catalog::TargetNeeds::of(&source.inventory);
        let mut wanted: BTreeSet<String> = needs.required_roles.policy_roles.clone();
        if !settings.no_owner {
            wanted.extend(needs.required_roles.owners.iter().cloned());
        }
        if !settings.no_privileges {
            wanted.extend(needs.required_roles.grantees.iter().cloned());
        }
        let checks = async {
            let client = target.session().await?;
            let missing = catalog::missing_roles(&client, &wanted).await?;
            let unavailable = catalog::unavailable_extensions(&client, &needs.extensions).await?;
            let free = catalog::free_connection_slots(&client).await?;
            anyhow::Ok((missing, unavailable, free))
        };
        let (missing, unavailable, target_free) = interruptible(&self.context.cancellation, checks).await?;
        let mut warnings = Vec::new();
        if target_exists {
            warnings.push(format!(
                "the target database {} exists and would be replaced (a sync asks first, or takes --yes)",
                self.target.dbname
            ));
        }
        if !missing.is_empty() {
            warnings.push(format!(
                "roles missing on the target server (a sync would refuse): {} — create them, or use --no-owner --no-privileges",
                missing.join(", ")
            ));
        }
        if !unavailable.is_empty() {
            warnings.push(format!(
                "extensions the target server cannot create (a sync would refuse): {}",
                unavailable.join(", ")
            ));
        }
        let free = crate::engine::context::FreeSlots {
            source: Some(source.free_slots),
            target: Some(target_free),
        };
        match crate::engine::context::GrantedJobs::grant(settings.jobs, free) {
            Ok((granted, lowered)) => {
                self.context.granted = Some(granted);
                warnings.extend(lowered.map(|warning| warning.to_string()));
            }
            Err(error) => warnings.push(format!("{error:#}")),
        }
        Ok(warnings)
    }
}

/// What the plan itself says: tables, order, cycles, units; the caller fills in the servers.
fn describe_plan(
    plan: &Plan,
    inventory: &Inventory,
    masks: &std::collections::HashMap<usize, Vec<(String, String)>>,
) -> PlanReport {
    let name = |index: usize| plan.tables[index].name.display_name();
    let (order, cycles) = plan::foreign_key_order(plan, inventory);
    PlanReport {
        source: PlanServer::default(),
        target: PlanServer::default(),
        target_exists: false,
        pg_dump: String::new(),
        pg_restore: String::new(),
        tools_reason: String::new(),
        whole_database: plan.whole_database,
        tables: plan_tables(plan, inventory, masks),
        foreign_key_order: order.into_iter().map(name).collect(),
        foreign_key_cycles: cycles
            .into_iter()
            .map(|cycle| cycle.into_iter().map(name).collect())
            .collect(),
        units: plan
            .units
            .iter()
            .map(|unit| PlanUnit {
                label: unit.label(),
                tables: unit.tables.iter().map(|table| table.display_name()).collect(),
                size_bytes: unit.size_bytes,
            })
            .collect(),
        split_tables: Vec::new(),
        clone: None,
        sequences: plan.sequences.len(),
        large_objects: if plan.copy_large_objects {
            plan.large_object_count
        } else {
            0
        },
        estimated_dump_bytes: 0,
        dump_directory: String::new(),
        dump_directory_free_bytes: None,
        warnings: Vec::new(),
    }
}

/// Each planned table as the plan shows it.
fn plan_tables(
    plan: &Plan,
    inventory: &Inventory,
    masks: &std::collections::HashMap<usize, Vec<(String, String)>>,
) -> Vec<PlanTable> {
    plan.tables
        .iter()
        .enumerate()
        .map(|(index, table)| PlanTable {
            name: table.name.display_name(),
            kind: match (table.partitioned, table.tree_oids.len()) {
                (true, _) => "partitioned",
                (false, 1) => "standard",
                (false, _) => "inheritance",
            }
            .to_string(),
            members: table.tree_oids.len() - 1,
            levels: plan::tree_levels(table, inventory),
            estimated_rows: table.estimated_rows,
            size_bytes: table.size_bytes,
            masked_columns: masks
                .get(&index)
                .map(|columns| columns.iter().map(|(column, _)| column.clone()).collect())
                .unwrap_or_default(),
            subset: None,
        })
        .collect()
}

/// `[subset]`: for each table, which rows the subset copies and how it reaches them.
fn describe_subset(tables: &mut [PlanTable], plan: &Plan, subset: &SubsetPlan) {
    for ((table, reached), planned) in tables.iter_mut().zip(&subset.reached).zip(&plan.tables) {
        let name = |index: usize| plan.tables[index].name.display_name();
        table.subset = Some(match reached {
            None => "nothing reaches it: copied empty (unreached = \"whole\" copies it whole)".to_string(),
            Some(Reach::Root(how)) => {
                let start = subset.starts.iter().find(|start| start.table == planned.name);
                match start.and_then(|start| start.estimated_rows) {
                    Some(rows) => format!("{how} (about {rows} rows; a root), and the rows other chosen rows bring"),
                    None => format!("{how} (a root), and the rows other chosen rows bring"),
                }
            }
            Some(Reach::Key {
                from,
                key,
                referenced: true,
            }) => {
                format!("the rows that chosen rows of {} reference ({key})", name(*from))
            }
            Some(Reach::Key {
                from,
                key,
                referenced: false,
            }) => {
                format!("the rows that reference chosen rows of {} ({key})", name(*from))
            }
        });
    }
}

/// What in the source deserves a look before copying it.
fn source_warnings(plan: &Plan, inventory: &Inventory) -> Vec<String> {
    let mut warnings: Vec<String> = plan
        .dangling_foreign_keys
        .iter()
        .map(|key| {
            Warning::ForeignKey {
                key: crate::engine::copy::outside_key(key),
                fate: KeyFate::WillFollow(plan.foreign_key_policy.as_str()),
            }
            .to_string()
        })
        .collect();
    let roots = plan
        .tables
        .iter()
        .filter_map(|planned| inventory.tables.iter().find(|table| table.oid == planned.oid));
    let mut without_key = Vec::new();
    let mut unlogged = Vec::new();
    let mut row_security = Vec::new();
    for table in roots {
        let name = table.name.display_name();
        if !table.has_primary_key {
            without_key.push(name.clone());
        }
        if table.unlogged {
            unlogged.push(name.clone());
        }
        if table.row_security {
            row_security.push(name);
        }
    }
    if !without_key.is_empty() {
        warnings.push(format!(
            "tables without a primary key (copied whole; nothing on the copy tells duplicate rows apart): {}",
            without_key.join(", ")
        ));
    }
    if !unlogged.is_empty() {
        warnings.push(format!(
            "unlogged tables (copied, and unlogged on the copy too: emptied by a crash of the target server): {}",
            unlogged.join(", ")
        ));
    }
    if !row_security.is_empty() {
        warnings.push(format!(
            "tables with row-level security (pg_dump reads them with row_security off: the source user must own them, be a superuser or have BYPASSRLS): {}",
            row_security.join(", ")
        ));
    }
    if plan.copy_large_objects && plan.large_object_count > 0 {
        warnings.push(format!(
            "{} large object(s): copied as one unit of their own, one at a time",
            plan.large_object_count
        ));
    }
    warnings
}
