//! `dbsync merge`: the source's rows folded into an existing target that holds rows of its own.
//! Surrogate keys (a single integer primary key drawn from a sequence or identity) get new
//! values from the target's sequence, foreign keys follow their rows through the ID map kept in
//! the target (`dbsync.merge_map`, per source database), and rows whose natural key the target
//! has map to the existing row. Tables go in foreign-key order, each in one transaction (the
//! tables of a cycle share one); a second run finds every row in the map and inserts nothing.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::catalog::{self, ForeignKeyColumn, MergeShape, QualifiedName, Remap, Surrogate};
use crate::connection::Endpoint;
use crate::engine::row_copy::{RefreshedTable, SourceState, row_copy_event};
use crate::engine::steps::merge::{self, MergeTable};
use crate::engine::{RunContext, interruptible, preflight};
use crate::errors::SyncError;
use crate::hooks::HookStage;
use crate::plan::Plan;
use crate::report::{Event, MergePreview, Notice, Phase, RunKind, TableLine, Warning};
use crate::scheduler::share_out;
use crate::settings::{MergeTableSettings, OnExisting};
use crate::usage_error;

/// `dbsync merge`: the run context and the target it folds the source into.
pub(in crate::engine) struct Merge<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) target: &'a Endpoint,
    /// Its own section of the settings.
    pub(in crate::engine) options: &'a crate::settings::MergeSettings,
}

/// How many of a table's rows show whether a merge without an ID map was merged before.
const MAP_CHECK_SAMPLE: i64 = 50;

/// A table to merge and the planned table it is.
type Planned = (usize, MergeTable);

/// What the merge's keys are planned from, read before anything is written: the tables the
/// merge takes, then the tables outside it their foreign keys reference, each with its new key
/// (when the target draws its keys from a sequence).
struct KeyPlan<'a> {
    foreign: &'a [ForeignKeyColumn],
    /// Each planned table's place in foreign-key order.
    order: Vec<usize>,
    tables: Vec<QualifiedName>,
    surrogates: Vec<Option<Surrogate>>,
    /// How many of `tables` the merge takes.
    merged: usize,
    /// Columns of a merged table's primary key of several columns that a sequence draws.
    drawn_in_composite: Vec<(QualifiedName, String)>,
}

impl KeyPlan<'_> {
    fn surrogate(&self, table: &QualifiedName) -> Option<&Surrogate> {
        let index = self.tables.iter().position(|name| name == table)?;
        self.surrogates[index].as_ref()
    }

    fn takes(&self, table: &QualifiedName) -> bool {
        self.tables[..self.merged].contains(table)
    }

    /// The table whose ID map translates the values of `table.column`: the table itself when
    /// the column is its new key, else the map its foreign key leads to.
    fn map_of_column(&self, table: &QualifiedName, column: &str, depth: usize) -> Option<QualifiedName> {
        if self
            .surrogate(table)
            .is_some_and(|surrogate| surrogate.column == column)
        {
            return Some(table.clone());
        }
        // A chain of keys longer than this is a loop of keys referencing keys.
        if depth > 8 {
            return None;
        }
        self.foreign
            .iter()
            .filter(|key| &key.table == table && key.column == column)
            .find_map(|key| self.map_of_column(&key.referenced, &key.referenced_column, depth + 1))
    }
}

impl Merge<'_> {
    pub(in crate::engine) async fn run(
        &mut self,
        started_at: chrono::DateTime<chrono::Local>,
    ) -> Result<(), SyncError> {
        let (source, mut plan, _) = self.context.inspect_source(self.source).await?;
        // dbsync's own state (ID maps, watermarks) in the source is not the source's data.
        // The plan's units (and their table indexes) are a sync's: a merge moves rows itself.
        plan.tables.retain(|table| table.name.schema != "dbsync");
        plan.units.clear();
        self.context.adopt_plan(&plan);
        let (target, fitted) = self.context.fitted_kept_target(&source, self.target, &plan).await?;
        let foreign = interruptible(&self.context.cancellation, catalog::foreign_key_columns(&source.client)).await?;
        let groups = self
            .merge_groups(&target, &plan, &source.inventory, fitted, &foreign)
            .await?;
        let configured = self.options.source.as_deref();
        let label = self
            .context
            .source_label(&source.client, &target, self.source, configured, SourceState::IdMaps)
            .await?;
        if self.context.settings.dry_run {
            self.context.emit(label.notice());
            self.preview_merge(&groups);
            self.context.emit(Event::Notice(Notice::DryRunDone));
            return Ok(());
        }
        self.context.announce_row_copy(RunKind::Merge, &plan, started_at);
        self.context.emit(label.notice());
        let snapshot = self.context.take_snapshot(&source, &plan).await?;
        // Fresh target sessions for the writes: the one that read the catalogs has the search
        // path cut to pg_catalog, and triggers that fire must see the database's own.
        let (sessions, writers) = self
            .context
            .row_copy_sessions(self.source, self.target, &snapshot)
            .await?;
        if !label.known {
            self.refuse_merged_without_map(&sessions.clients()[0], &target, &groups)
                .await?;
        }
        self.context.run_hooks(HookStage::BeforeSync, self.target).await?;
        interruptible(&self.context.cancellation, catalog::ensure_map_table(&target)).await?;
        self.context.claim_source_state(&target, &label).await?;
        self.context.emit(Event::Phase(Phase::RefreshData));
        let pairs: Vec<_> = sessions.clients().iter().cloned().zip(writers).collect();
        let merged = self.merge_in_levels(&pairs, &groups, &foreign, &label.label).await;
        // The maps the groups just made know their source by its identity from now on.
        self.context.claim_source_state(&target, &label).await?;
        // The map is read on the session that wrote nothing: after a failure, the writers of
        // groups stopped on the way may still be inside their (never committed) transactions.
        if !self.context.cancellation.is_cancelled() {
            self.write_id_map(&target, &groups, &label.label).await?;
        }
        merged?;
        self.context.emit(Event::Phase(Phase::RefreshValidation));
        self.validate_merge(&target, &groups, &foreign).await?;
        self.context.run_hooks(HookStage::AfterImport, self.target).await
    }

    /// The tables to merge, grouped (a cycle of foreign keys shares one transaction) in
    /// foreign-key order; every `[merge]` name and natural key checked, refused before anything
    /// is written.
    async fn merge_groups(
        &mut self,
        target: &Client,
        plan: &Plan,
        inventory: &catalog::Inventory,
        fitted: Vec<RefreshedTable>,
        foreign: &[ForeignKeyColumn],
    ) -> Result<Vec<Vec<Planned>>, SyncError> {
        self.refuse_unknown_merge_names(inventory)?;
        // The merged tables, then the tables outside the merge their foreign keys reference:
        // keys drawn there by an earlier merge follow that merge's map.
        let mut names: Vec<QualifiedName> = fitted.iter().map(|table| table.name.clone()).collect();
        let merged = names.len();
        for key in foreign {
            if names[..merged].contains(&key.table) && !names.contains(&key.referenced) {
                names.push(key.referenced.clone());
            }
        }
        let read = read_keys(target, &names, merged);
        let (mut primary_keys, sequences, drawn_in_composite) = interruptible(&self.context.cancellation, read).await?;
        let (order, cycles) = crate::plan::foreign_key_order(plan, inventory);
        let mut position = vec![0; plan.tables.len()];
        for (place, table) in order.iter().enumerate() {
            position[*table] = place;
        }
        let surrogates = surrogates_of(&fitted, &primary_keys, sequences);
        let keys = KeyPlan {
            foreign,
            order: position,
            tables: names,
            surrogates,
            merged,
            drawn_in_composite,
        };
        primary_keys.truncate(merged);
        let mut planned = Vec::new();
        for (table, key) in fitted.into_iter().zip(primary_keys) {
            planned.push(self.merge_table(plan, &keys, table, key)?);
        }
        Ok(group_by_cycles(planned, &order, &cycles))
    }

    /// `[merge]` names only tables of the source (a table the selection leaves out is fine: one
    /// config serves runs with different `--include`/`--exclude`).
    fn refuse_unknown_merge_names(&self, inventory: &catalog::Inventory) -> Result<(), SyncError> {
        let config = &self.options;
        for written in config.tables.keys().chain(&config.fire_triggers) {
            if !inventory
                .tables
                .iter()
                .any(|table| preflight::names_table(written, &table.name))
            {
                return Err(usage_error!(
                    "[merge] names the table {written}, which the source does not have\nhint: check the name (schema.table)"
                ));
            }
        }
        Ok(())
    }

    /// One table's shape: its new keys, the foreign keys remapped, its natural key.
    fn merge_table(
        &mut self,
        plan: &Plan,
        keys: &KeyPlan<'_>,
        table: RefreshedTable,
        primary_key: Option<Vec<String>>,
    ) -> Result<Planned, SyncError> {
        let planned = plan
            .tables
            .iter()
            .position(|planned| planned.members.contains(&table.name))
            .expect("every fitted table is a member of a planned table");
        if plan.tables[planned].members != [plan.tables[planned].name.clone()] {
            return Err(usage_error!(
                "{} is a partitioned table or an inheritance tree: dbsync merge takes plain tables only\nhint: leave it out with --exclude",
                plan.tables[planned].name.display_name()
            ));
        }
        if let Some((_, column)) = keys.drawn_in_composite.iter().find(|(name, _)| *name == table.name) {
            return Err(usage_error!(
                "{}'s primary key has several columns, and a sequence draws {column}: a merge gives new values to single-column keys only, and keeping the source's would collide with the target's\nhint: leave it out with --exclude",
                table.name.display_name()
            ));
        }
        let config = self
            .options
            .tables
            .iter()
            .find(|(written, _)| preflight::names_table(written, &table.name));
        let surrogate = keys.surrogate(&table.name).cloned();
        let remapped = self.remapped_columns(plan, keys, &table.name);
        let natural_key = natural_key_of(&table, config.map(|(_, config)| config), &surrogate, primary_key)?;
        let shape = MergeShape {
            update: config.is_some_and(|(_, config)| config.on_existing == OnExisting::Update),
            table: table.name.clone(),
            columns: table.columns.clone(),
            surrogate,
            remapped,
            natural_key,
            masked: table.masked.clone(),
        };
        refuse_unsafe_shape(&shape, &table)?;
        let fire_triggers = self
            .options
            .fire_triggers
            .iter()
            .any(|written| preflight::names_table(written, &table.name));
        Ok((planned, MergeTable { shape, fire_triggers }))
    }

    /// The table's foreign-key columns whose values are keys a merged table draws anew: a
    /// reference to its new key, or (in a key of several columns) to a column that is itself
    /// such a reference. Deferred where that table comes later (a cycle, or itself). A key to
    /// a table left out follows the map of an earlier merge of it when its keys are drawn anew,
    /// else keeps its values; either way with a warning.
    fn remapped_columns(&mut self, plan: &Plan, keys: &KeyPlan<'_>, table: &QualifiedName) -> Vec<Remap> {
        let place_of = |name: &QualifiedName| {
            plan.tables
                .iter()
                .position(|planned| &planned.name == name)
                .map(|planned| keys.order[planned])
        };
        let mut remapped: Vec<Remap> = Vec::new();
        for key in keys.foreign.iter().filter(|key| &key.table == table) {
            if remapped.iter().any(|remap| remap.column == key.column) {
                continue;
            }
            let map = keys.map_of_column(&key.referenced, &key.referenced_column, 0);
            if !keys.takes(&key.referenced) {
                let fate = match &map {
                    Some(map) => format!("follow the ID map of an earlier merge of {}", map.display_name()),
                    None => "are kept as they are".into(),
                };
                self.context.warn(Warning::Other(format!(
                    "{}.{} references {}, which this merge does not take: its values {fate}",
                    table.display_name(),
                    key.column,
                    key.referenced.display_name()
                )));
            }
            let Some(map) = map else {
                continue;
            };
            let surrogate = keys.surrogate(&map);
            remapped.push(Remap {
                column: key.column.clone(),
                deferred: place_of(&map) >= place_of(table),
                referenced_key: surrogate.map(|surrogate| surrogate.column.clone()).unwrap_or_default(),
                referenced: map,
            });
        }
        remapped
    }

    /// A first merge from this source (the target holds no ID map of it) into a target that
    /// already has its rows: the map was lost (the `dbsync` schema dropped, or state under
    /// another label), and a merge would insert every row a second time. Recognised by a sample
    /// of each table whose rows always get new keys: every sampled row is already there, by the
    /// columns the merge writes unchanged.
    async fn refuse_merged_without_map(
        &self,
        source: &Client,
        target: &Client,
        groups: &[Vec<Planned>],
    ) -> Result<(), SyncError> {
        for (_, table) in groups.iter().flatten() {
            let shape = &table.shape;
            let columns = shape.unchanged_columns();
            if shape.surrogate.is_none() || !shape.natural_key.is_empty() || columns.is_empty() {
                continue;
            }
            let look = async {
                let digests = catalog::row_digests(source, &shape.table, &columns, MAP_CHECK_SAMPLE).await?;
                let found = match digests.is_empty() {
                    true => 0,
                    false => catalog::rows_with_digests(target, &shape.table, &columns, &digests).await?,
                };
                anyhow::Ok((digests.len(), found))
            };
            let (sampled, found) = interruptible(&self.context.cancellation, look).await?;
            if sampled > 0 && found as usize == sampled {
                return Err(usage_error!(
                    "the target already holds the rows of {} that this merge would insert (all {sampled} sampled), but no ID \
                     map of this source: it was merged before and its map is gone (schema dbsync dropped?), so every row \
                     would be inserted a second time; restore schema dbsync, or give the table a natural key in \
                     [merge.tables.{}] so existing rows are matched",
                    shape.table.display_name(),
                    shape.table.display_name()
                ));
            }
        }
        Ok(())
    }

    /// `--dry-run`: each table in order, what becomes of its keys, and its natural key.
    fn preview_merge(&self, groups: &[Vec<Planned>]) {
        for group in groups {
            let names: Vec<String> = group
                .iter()
                .map(|(_, table)| table.shape.table.display_name())
                .collect();
            for (_, table) in group {
                let shape = &table.shape;
                let own = shape.table.display_name();
                self.context.emit(Event::Notice(Notice::WouldMerge(MergePreview {
                    table: own.clone(),
                    new_keys: shape
                        .surrogate
                        .as_ref()
                        .map(|surrogate| format!("{} ← {}", surrogate.column, surrogate.sequence)),
                    remapped: shape
                        .remapped
                        .iter()
                        .map(|remap| {
                            let pass = match (remap.deferred, remap.referenced == shape.table) {
                                (true, true) => " (from the rows it merges)",
                                (true, false) => " (second pass)",
                                (false, _) => "",
                            };
                            format!("{} → {}{pass}", remap.column, remap.referenced.display_name())
                        })
                        .collect(),
                    natural_key: shape.natural_key.clone(),
                    update: shape.update,
                    cycle: names.iter().filter(|name| **name != own).cloned().collect(),
                })));
            }
        }
    }

    /// Groups level by level: a group waits for the groups holding the tables its foreign keys
    /// reference, and the groups of a level run `--jobs` at once, each on a pair of sessions.
    /// The first failure stops the run (the groups merged before it stay: a second run goes on
    /// from there).
    async fn merge_in_levels(
        &self,
        pairs: &[(Arc<Client>, Arc<Client>)],
        groups: &[Vec<Planned>],
        foreign: &[ForeignKeyColumn],
        identity: &str,
    ) -> Result<(), SyncError> {
        for level in levels_of(groups, foreign) {
            let members: Vec<&Vec<Planned>> = level.iter().map(|index| &groups[*index]).collect();
            let work = share_out(pairs, &members, |(source, target), group| async move {
                self.merge_one_group(&source, &target, group, identity).await
            });
            // Not dropped on Ctrl+C: each group stops before its commit or reports it.
            let merged = work.await;
            if self.context.cancellation.is_cancelled() {
                return Err(crate::engine::cancelled(&self.context.cancellation));
            }
            merged.map_err(SyncError::Failed)?;
        }
        Ok(())
    }

    /// One group's transaction, its tables' lines and counts.
    async fn merge_one_group(
        &self,
        source: &Client,
        target: &Client,
        group: &[Planned],
        identity: &str,
    ) -> anyhow::Result<()> {
        if self.context.cancellation.is_cancelled() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        for (_, table) in group {
            let description = "Merge".into();
            self.context
                .emit(row_copy_event(&table.shape.table, TableLine::Started { description }));
        }
        let tables: Vec<&MergeTable> = group.iter().map(|(_, table)| table).collect();
        match merge::merge_group(source, target, &tables, identity, &self.context.cancellation).await {
            Ok(counts) => {
                for ((planned, table), counts) in group.iter().zip(counts) {
                    self.context.progress.add_merged(*planned, counts);
                    let elapsed = started.elapsed();
                    self.context
                        .emit(row_copy_event(&table.shape.table, TableLine::Finished { elapsed }));
                    let name = table.shape.table.display_name();
                    self.context
                        .emit(Event::Notice(Notice::TableMerged { table: name, counts }));
                }
                Ok(())
            }
            // Stopped before its commit: as it was (NOT DONE). Not an error here, so that
            // another group on its way through its commit is not dropped half-way.
            Err(_) if self.context.cancellation.is_cancelled() => Ok(()),
            Err(failure) => Err(self.merge_failed(group, failure)),
        }
    }

    /// Every table of the failed group marked, the one that failed with its error.
    fn merge_failed(&self, group: &[Planned], failure: crate::engine::steps::GroupFailure) -> anyhow::Error {
        self.context.progress.tables_failed(&[group[failure.table].0]);
        let failed = group[failure.table].1.shape.table.display_name();
        for (index, (_, table)) in group.iter().enumerate() {
            let error = match index == failure.table {
                true => format!("{:#}", failure.error),
                false => format!("rolled back with {failed}, which it shares a cycle of foreign keys with"),
            };
            self.context
                .emit(row_copy_event(&table.shape.table, TableLine::Failed { error }));
        }
        failure.error
    }

    /// Every merged table's foreign keys point at rows that exist (the writes ran with foreign
    /// keys off unless `fire_triggers`): a reference the map got wrong would show here.
    async fn validate_merge(
        &mut self,
        target: &Client,
        groups: &[Vec<Planned>],
        foreign: &[ForeignKeyColumn],
    ) -> Result<(), SyncError> {
        let merged: BTreeSet<&QualifiedName> = groups.iter().flatten().map(|(_, table)| &table.shape.table).collect();
        let checked: Vec<&ForeignKeyColumn> = foreign
            .iter()
            .filter(|key| key.single && merged.contains(&key.table))
            .collect();
        let mut dangling = Vec::new();
        for key in &checked {
            let count = interruptible(&self.context.cancellation, catalog::dangling_references(target, key)).await?;
            if count > 0 {
                dangling.push(format!(
                    "{}.{}: {count} row(s) reference rows {} does not have",
                    key.table.display_name(),
                    key.column,
                    key.referenced.display_name()
                ));
            }
        }
        if !dangling.is_empty() {
            for problem in &dangling {
                self.context.warn(Warning::Other(problem.clone()));
            }
            return Err(SyncError::RefreshDiffers(dangling.len()));
        }
        let tables: Vec<&Planned> = groups.iter().flatten().collect();
        let names: Vec<QualifiedName> = tables.iter().map(|(_, table)| table.shape.table.clone()).collect();
        let held = interruptible(&self.context.cancellation, catalog::row_counts(target, &names)).await?;
        let counts = tables
            .iter()
            .zip(held)
            .map(|((planned, _), target)| (*planned, target))
            .collect();
        self.context.progress.merge_validated(counts);
        self.context.emit(Event::Notice(Notice::MergeValidated {
            tables: names.len(),
            references: checked.len(),
        }));
        Ok(())
    }

    /// `--id-map FILE`: the merged tables' maps as JSON, `{"table": {"old": new, …}}`, written
    /// row by row from the target (also after a failure: the tables merged so far).
    async fn write_id_map(&self, target: &Client, groups: &[Vec<Planned>], identity: &str) -> Result<(), SyncError> {
        let Some(path) = &self.options.id_map else {
            return Ok(());
        };
        let tables: Vec<QualifiedName> = groups
            .iter()
            .flatten()
            .map(|(_, table)| table.shape.table.clone())
            .collect();
        let file = std::fs::File::create(path)
            .map_err(|error| usage_error!("cannot write the ID map {}: {error}", path.display()))?;
        let mut writer = IdMapWriter::new(std::io::BufWriter::new(file));
        let each = |table: &str, old: i64, new: i64| writer.key(table, old, new);
        let read = catalog::each_mapped_key(target, identity, &tables, each);
        interruptible(&self.context.cancellation, read).await?;
        let keys = writer
            .finish()
            .map_err(|error| usage_error!("cannot write the ID map {}: {error}", path.display()))?;
        self.context.emit(Event::Notice(Notice::IdMapWritten {
            path: path.display().to_string(),
            keys,
        }));
        Ok(())
    }
}

/// The JSON of the ID map, written as the rows come (ordered by table).
struct IdMapWriter<W: Write> {
    out: W,
    table: Option<String>,
    keys: u64,
}

impl<W: Write> IdMapWriter<W> {
    fn new(out: W) -> Self {
        IdMapWriter {
            out,
            table: None,
            keys: 0,
        }
    }

    fn key(&mut self, table: &str, old: i64, new: i64) -> anyhow::Result<()> {
        let name = display_name_of_stored(table);
        match &self.table {
            Some(current) if *current == name => write!(self.out, ", ")?,
            Some(_) => write!(self.out, "}},\n  {}: {{", serde_json::to_string(&name)?)?,
            None => write!(self.out, "{{\n  {}: {{", serde_json::to_string(&name)?)?,
        }
        write!(self.out, "\"{old}\": {new}")?;
        self.table = Some(name);
        self.keys += 1;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<u64> {
        match self.table {
            Some(_) => writeln!(self.out, "}}\n}}")?,
            None => writeln!(self.out, "{{}}")?,
        }
        self.out.flush()?;
        Ok(self.keys)
    }
}

/// `public.authors` → `authors`, as users write table names.
fn display_name_of_stored(stored: &str) -> String {
    stored.strip_prefix("public.").unwrap_or(stored).to_string()
}

/// Each table's primary key, the sequence behind a single-column one, and the columns of a
/// merged table's key of several columns that a sequence draws.
async fn read_keys(
    target: &Client,
    names: &[QualifiedName],
    merged: usize,
) -> anyhow::Result<(
    Vec<Option<Vec<String>>>,
    Vec<Option<String>>,
    Vec<(QualifiedName, String)>,
)> {
    let keys = catalog::primary_keys(target, names).await?;
    let candidates: Vec<(QualifiedName, String)> = names
        .iter()
        .zip(&keys)
        .map(|(name, key)| (name.clone(), key.as_deref().map(single_column).unwrap_or_default()))
        .collect();
    let sequences = catalog::serial_sequences(target, &candidates).await?;
    let composite: Vec<(QualifiedName, String)> = names[..merged]
        .iter()
        .zip(&keys)
        .filter_map(|(name, key)| key.as_ref().filter(|key| key.len() > 1).map(|key| (name, key)))
        .flat_map(|(name, key)| key.iter().map(move |column| (name.clone(), column.clone())))
        .collect();
    let drawn = catalog::serial_sequences(target, &composite).await?;
    let drawn = composite
        .into_iter()
        .zip(drawn)
        .filter(|(_, sequence)| sequence.is_some())
        .map(|(column, _)| column)
        .collect();
    Ok((keys, sequences, drawn))
}

fn single_column(key: &[String]) -> String {
    match key {
        [column] => column.clone(),
        _ => String::new(),
    }
}

/// Each table's new key: a merged table's when `surrogate_of` says so, a table outside the merge's
/// when its single-column primary key has a sequence behind it.
fn surrogates_of(
    fitted: &[RefreshedTable],
    primary_keys: &[Option<Vec<String>>],
    sequences: Vec<Option<String>>,
) -> Vec<Option<Surrogate>> {
    sequences
        .into_iter()
        .enumerate()
        .map(|(index, sequence)| match fitted.get(index) {
            Some(table) => surrogate_of(table, primary_keys[index].as_deref(), sequence),
            None => primary_keys[index]
                .as_deref()
                .map(single_column)
                .filter(|column| !column.is_empty())
                .zip(sequence)
                .map(|(column, sequence)| Surrogate { column, sequence }),
        })
        .collect()
}

/// A single integer primary key with a sequence behind it gets new values; other keys are kept.
fn surrogate_of(table: &RefreshedTable, key: Option<&[String]>, sequence: Option<String>) -> Option<Surrogate> {
    let [column] = key? else { return None };
    let integer = table.source_columns.iter().any(|candidate| {
        &candidate.name == column && matches!(candidate.type_name.as_str(), "smallint" | "integer" | "bigint")
    });
    integer.then_some(Surrogate {
        column: column.clone(),
        sequence: sequence?,
    })
}

/// The configured natural key, every column checked; a table whose keys are kept is matched by
/// its primary key unless configured; a table with neither is refused (a second run would
/// insert its rows again).
fn natural_key_of(
    table: &RefreshedTable,
    config: Option<&MergeTableSettings>,
    surrogate: &Option<Surrogate>,
    primary_key: Option<Vec<String>>,
) -> Result<Vec<String>, SyncError> {
    let name = table.name.display_name();
    let configured = config.map(|config| config.natural_key.clone()).unwrap_or_default();
    for column in &configured {
        if !table.columns.contains(column) {
            return Err(usage_error!(
                "[merge.tables.{name}] natural_key names the column {column}, which {name} does not have"
            ));
        }
    }
    match (configured.is_empty(), surrogate, primary_key) {
        (false, _, _) => Ok(configured),
        (true, Some(_), _) => Ok(Vec::new()),
        (true, None, Some(key)) => Ok(key),
        (true, None, None) => Err(usage_error!(
            "{name} has no primary key and no natural key: a second merge would insert its rows again\nhint: give it natural_key = [\"…\"] under [merge.tables.{name}], or leave it out with --exclude"
        )),
    }
}

/// Refuses what the statements cannot do safely: a natural key on the new key or on a key
/// set in the second pass, masks on keys, and a NOT NULL key that must wait for the second pass.
fn refuse_unsafe_shape(shape: &MergeShape, table: &RefreshedTable) -> Result<(), SyncError> {
    let name = shape.table.display_name();
    let deferred: Vec<&String> = shape
        .remapped
        .iter()
        .filter(|remap| remap.deferred)
        .map(|remap| &remap.column)
        .collect();
    for column in &shape.natural_key {
        if shape
            .surrogate
            .as_ref()
            .is_some_and(|surrogate| &surrogate.column == column)
            || deferred.contains(&column)
        {
            return Err(usage_error!(
                "[merge.tables.{name}] natural_key includes {column}, whose values the merge replaces (a new key, or a key set after the rows are resolved): name columns whose values mean the same on both sides"
            ));
        }
    }
    let keys: Vec<&String> = shape
        .surrogate
        .iter()
        .map(|surrogate| &surrogate.column)
        .chain(shape.remapped.iter().map(|remap| &remap.column))
        .chain(&shape.natural_key)
        .collect();
    if let Some((column, _)) = shape.masked.iter().find(|(column, _)| keys.contains(&column)) {
        return Err(usage_error!(
            "[transform] masks {name}.{column}, a key the merge matches or rewrites: mask another column"
        ));
    }
    let later: Vec<&String> = shape
        .remapped
        .iter()
        .filter(|remap| remap.deferred && remap.referenced != shape.table)
        .map(|remap| &remap.column)
        .collect();
    if let Some(column) = table
        .source_columns
        .iter()
        .find(|column| column.not_null && later.contains(&&column.name))
    {
        return Err(usage_error!(
            "{name}.{} closes a cycle of foreign keys and is NOT NULL: the merge writes it in a second pass, once the table it references is merged\nhint: make the column nullable in the target, or leave one of the tables out",
            column.name
        ));
    }
    Ok(())
}

/// The groups (in foreign-key order) in levels: each group one level after the latest group
/// holding a table its foreign keys reference.
fn levels_of(groups: &[Vec<Planned>], foreign: &[ForeignKeyColumn]) -> Vec<Vec<usize>> {
    let group_of = |table: &QualifiedName| {
        groups
            .iter()
            .position(|group| group.iter().any(|(_, member)| &member.shape.table == table))
    };
    let mut level_of: Vec<usize> = Vec::with_capacity(groups.len());
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let level = foreign
            .iter()
            .filter(|key| group.iter().any(|(_, member)| member.shape.table == key.table))
            .filter_map(|key| group_of(&key.referenced))
            .filter(|referenced| *referenced < index)
            .map(|referenced| level_of[referenced] + 1)
            .max()
            .unwrap_or(0);
        level_of.push(level);
        if levels.len() <= level {
            levels.resize(level + 1, Vec::new());
        }
        levels[level].push(index);
    }
    levels
}

/// Tables in foreign-key order, those of a cycle together.
fn group_by_cycles(planned: Vec<Planned>, order: &[usize], cycles: &[Vec<usize>]) -> Vec<Vec<Planned>> {
    let mut left: Vec<Option<Planned>> = planned.into_iter().map(Some).collect();
    let mut grouped = BTreeSet::new();
    let mut groups = Vec::new();
    for table in order {
        if !grouped.insert(*table) {
            continue;
        }
        let cycle = cycles.iter().find(|cycle| cycle.contains(table));
        let mut members = vec![*table];
        for member in order
            .iter()
            .filter(|member| *member != table && cycle.is_some_and(|cycle| cycle.contains(member)))
        {
            grouped.insert(*member);
            members.push(*member);
        }
        let mut group = Vec::new();
        for member in members {
            let found = left
                .iter_mut()
                .filter(|table| table.as_ref().is_some_and(|(planned, _)| *planned == member));
            group.extend(found.filter_map(Option::take));
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(table: &str) -> QualifiedName {
        QualifiedName {
            schema: "public".into(),
            name: table.into(),
        }
    }

    fn group(tables: &[&str]) -> Vec<Planned> {
        tables
            .iter()
            .map(|table| {
                let shape = MergeShape {
                    table: name(table),
                    columns: Vec::new(),
                    surrogate: None,
                    remapped: Vec::new(),
                    natural_key: Vec::new(),
                    update: false,
                    masked: Vec::new(),
                };
                (
                    0,
                    MergeTable {
                        shape,
                        fire_triggers: false,
                    },
                )
            })
            .collect()
    }

    fn key(table: &str, referenced: &str) -> ForeignKeyColumn {
        ForeignKeyColumn {
            table: name(table),
            column: format!("{referenced}_id"),
            referenced: name(referenced),
            referenced_column: "id".into(),
            single: true,
        }
    }

    #[test]
    fn groups_wait_only_for_the_groups_they_reference() {
        let groups = vec![
            group(&["authors"]),
            group(&["labels"]),
            group(&["repositories"]),
            group(&["commits"]),
            group(&["teams", "members"]),
            group(&["notes"]),
        ];
        let foreign = [
            key("repositories", "authors"),
            key("commits", "repositories"),
            key("commits", "authors"),
            key("members", "teams"),
            key("teams", "members"),
            key("notes", "elsewhere"),
        ];
        assert_eq!(levels_of(&groups, &foreign), [vec![0, 1, 4, 5], vec![2], vec![3]]);
    }
}
