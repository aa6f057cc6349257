//! What the modes that move rows themselves share (refresh, incremental, merge): the kept
//! target's checks and lock, the banner, the target's schema fitted to the selection, the
//! sequences set from the snapshot, and the validation of rows by counts or checksums.

use std::sync::Arc;

use tokio_postgres::Client;

use super::context::{FreeSlots, RunContext};
use super::steps::checksum::{self, ColumnChoice, Sessions, checksum_differences};
use super::steps::validate::TableCount;
use super::{interruptible, preflight};
use crate::catalog::{self, QualifiedName, TableColumn};
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::plan::Plan;
use crate::report::Warning;
use crate::report::{Activity, Event, Notice, Phase, RowCheck, TableLine};
use crate::settings::{Content, Verification};
use crate::usage_error;

/// A table whose own rows are replaced, and the columns copied (the source's, generated ones
/// left out: the target computes them).
pub(super) struct RefreshedTable {
    pub(super) name: QualifiedName,
    pub(super) columns: Vec<String>,
    /// The source's definitions of `columns`.
    pub(super) source_columns: Vec<TableColumn>,
    /// Columns read through their `[transform]` on the source.
    pub(super) masked: Vec<(String, String)>,
}

/// A table's line in a run whose rows dbsync moves itself (refresh, incremental, merge).
pub(super) fn row_copy_event(table: &QualifiedName, line: TableLine) -> Event {
    Event::Table {
        activity: Activity::Stream,
        table: table.display_name(),
        line,
    }
}

/// `count` plain sessions on the target database.
pub(super) async fn connect_many(
    target: &crate::connection::Endpoint,
    jobs: super::context::GrantedJobs,
) -> anyhow::Result<Vec<Arc<Client>>> {
    let mut clients = Vec::with_capacity(jobs.get());
    for _ in 0..jobs.get() {
        clients.push(Arc::new(catalog::connect(target, "target").await?));
    }
    Ok(clients)
}

/// The tables of a row-copy run in groups linked by foreign keys (`plan::foreign_key_groups`),
/// each group in foreign-key order; `planned_of` says which planned table a table (a tree's
/// member) belongs to.
pub(super) fn linked_groups<'t, T>(
    plan: &Plan,
    inventory: &catalog::Inventory,
    tables: &'t [T],
    planned_of: impl Fn(&T) -> Option<usize>,
) -> Vec<Vec<&'t T>> {
    let planned_of = &planned_of;
    crate::plan::foreign_key_groups(plan, inventory)
        .into_iter()
        .map(|group| {
            group
                .iter()
                .flat_map(|&planned| tables.iter().filter(move |table| planned_of(table) == Some(planned)))
                .collect::<Vec<_>>()
        })
        .filter(|group| !group.is_empty())
        .collect()
}

/// How many tables a row-copy run writes, as the plan counts them (a partitioned table once)
/// and one by one (each partition and inheritance member, which are checked and written apart).
#[derive(Debug, Clone, Copy)]
pub(super) struct TableCounts {
    pub(super) tables: usize,
    pub(super) members: usize,
}

impl RunContext<'_> {
    /// The plan's sequences set to the source's values (read in the snapshot).
    pub(super) async fn set_sequences(&self, source: &Client, target: &Client, plan: &Plan) -> Result<(), SyncError> {
        let sequences = async {
            let values = catalog::sequence_values(source, &plan.sequences).await?;
            catalog::set_sequences(target, &plan.sequences, &values).await
        };
        interruptible(&self.cancellation, sequences).await?;
        self.emit(Event::Notice(Notice::SequencesSet {
            count: plan.sequences.len(),
        }));
        Ok(())
    }

    /// Refusals as for a sync (the source as its own target, another run on it), the run's lock
    /// on the target, then a session on the target database, which must exist.
    pub(super) async fn connect_to_kept_target(
        &mut self,
        source: &preflight::Source,
        endpoint: &Endpoint,
    ) -> Result<Client, SyncError> {
        let settings = self.settings;
        let needs = catalog::TargetNeeds {
            required_roles: catalog::RequiredRoles::default(),
            extensions: Vec::new(),
            schema_locks: 0,
        };
        let (server, target_free, _) =
            preflight::check_target(settings, endpoint, &needs, Some(source), &self.cancellation).await?;
        let exists = interruptible(&self.cancellation, server.database_exists(&endpoint.dbname)).await?;
        self.workspace.target_server = Some(server);
        if !exists {
            let hint = match &settings.content {
                Content::Merge(_) => {
                    "dbsync merge adds rows to an existing database (`dbsync sync --schema-only` creates one with the source's schema)"
                }
                _ => "a data-only refresh fills an existing database (run without --data-only to create it)",
            };
            return Err(usage_error!("the target database {endpoint} does not exist: {hint}"));
        }
        let free = FreeSlots {
            source: Some(source.free_slots),
            target: Some(target_free),
        };
        if let Some(warning) = self.grant_jobs(free)? {
            self.warn(warning);
        }
        interruptible(&self.cancellation, catalog::connect(endpoint, "target")).await
    }

    /// `--jobs` source sessions reading the snapshot (with the masking salt) and as many on the
    /// target, one pair per group being written.
    pub(super) async fn row_copy_sessions(
        &self,
        source: &Endpoint,
        target: &Endpoint,
        snapshot: &str,
    ) -> Result<(Sessions, Vec<Arc<Client>>), SyncError> {
        let jobs = self.granted_jobs();
        let salt = self.settings.masking.salt.as_deref();
        let open = async {
            let (source, target) = tokio::try_join!(
                Sessions::open(source, "source", jobs, Some(snapshot)),
                connect_many(target, jobs)
            )?;
            source.set_mask_salt(salt).await?;
            anyhow::Ok((source, target))
        };
        interruptible(&self.cancellation, open).await
    }

    /// The lines of a group of linked tables that failed: the error for the table that failed,
    /// and for each other one that it was rolled back with it.
    pub(super) fn report_group_failure(&self, tables: &[&QualifiedName], failed: usize, error: &anyhow::Error) {
        let failed_name = tables[failed].display_name();
        for (index, table) in tables.iter().enumerate() {
            let error = match index == failed {
                true => format!("{error:#}"),
                false => format!("rolled back with {failed_name}, which it is linked to by foreign keys"),
            };
            self.emit(row_copy_event(table, TableLine::Failed { error }));
        }
    }

    /// The banner of a run whose rows dbsync moves itself, then the warnings kept for after it.
    pub(super) fn announce_row_copy(
        &mut self,
        kind: crate::report::RunKind,
        plan: &Plan,
        started_at: chrono::DateTime<chrono::Local>,
    ) {
        self.emit(Event::Banner(crate::report::Banner {
            kind,
            source: self.origin(),
            target: self.destination(),
            start_time: started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            dump_dir: "(none: rows go from server to server)".into(),
            jobs: self.granted_jobs().get(),
            batch_size: None,
            tables: plan.tables.len(),
            units: plan.members().len(),
            tools_version: "none (dbsync moves the rows itself)".into(),
            tools_directory: "-".into(),
            tools_note: None,
        }));
        for warning in std::mem::take(&mut self.deferred_warnings) {
            self.warn(warning);
        }
    }
}

impl RunContext<'_> {
    /// The kept target: checked, locked and connected, and its schema fitted to the selection;
    /// returns the session on it and the tables to write.
    pub(super) async fn fitted_kept_target(
        &mut self,
        source: &preflight::Source,
        endpoint: &Endpoint,
        plan: &Plan,
    ) -> Result<(Client, Vec<RefreshedTable>), SyncError> {
        let target = self.connect_to_kept_target(source, endpoint).await?;
        self.emit(Event::Phase(Phase::RefreshSchema));
        let fitted = self.fit_target_schema(endpoint, &source.client, &target, plan).await?;
        Ok((target, fitted))
    }

    /// Compares the selected tables' columns on both sides. A table or column the target lacks
    /// is added with `--fix-schema` (its statements shown, and run unless `--dry-run`), else
    /// refused; a type that differs, or a NOT NULL column without default only the target has,
    /// is refused either way (nothing that holds data is altered).
    pub(super) async fn fit_target_schema(
        &mut self,
        endpoint: &Endpoint,
        source: &Client,
        target: &Client,
        plan: &Plan,
    ) -> Result<Vec<RefreshedTable>, SyncError> {
        let fix = self.settings.content.fixes_schema();
        let members = plan.members();
        let read = async {
            let columns = tokio::try_join!(
                catalog::table_columns(source, &members),
                catalog::table_columns(target, &members)
            )?;
            let sequences = catalog::sequence_values(target, &plan.sequences).await?;
            anyhow::Ok((columns, sequences))
        };
        let ((source_columns, target_columns), target_sequences) = interruptible(&self.cancellation, read).await?;
        let trees = members_in_trees(plan);
        let mut fitting = SchemaFit {
            fix,
            ..SchemaFit::default()
        };
        let missing_sequences: Vec<QualifiedName> = plan
            .sequences
            .iter()
            .zip(&target_sequences)
            .filter(|(_, value)| value.is_none())
            .map(|(sequence, _)| sequence.clone())
            .collect();
        fitting.sequences(self, source, &missing_sequences).await?;
        let mut tables = Vec::new();
        for (((table, source_columns), target_columns), in_tree) in
            members.iter().zip(source_columns).zip(target_columns).zip(trees)
        {
            let source_columns = source_columns.unwrap_or_default();
            fitting
                .table(self, (source, target), table, &source_columns, target_columns, in_tree)
                .await?;
            let copied: Vec<TableColumn> = source_columns
                .into_iter()
                .filter(|column| column.generated.is_none())
                .collect();
            tables.push(RefreshedTable {
                name: table.clone(),
                columns: copied.iter().map(|column| column.name.clone()).collect(),
                source_columns: copied,
                masked: self.masks_of_member(plan, table),
            });
        }
        let counts = TableCounts {
            tables: plan.tables.len(),
            members: tables.len(),
        };
        self.apply_schema_fit(endpoint, target, fitting, counts).await?;
        Ok(tables)
    }

    /// Refuses with every problem named, or shows (and runs) the statements that fix them.
    pub(super) async fn apply_schema_fit(
        &mut self,
        endpoint: &Endpoint,
        target: &Client,
        fitting: SchemaFit,
        counts: TableCounts,
    ) -> Result<(), SyncError> {
        if !fitting.problems.is_empty() {
            // Never the flag that was given, nor one the mode does not have.
            let hint = match &self.settings.content {
                Content::Merge(_) => {
                    "`dbsync diff` shows every difference; a merge writes rows only: create what is missing in the target first"
                }
                content if content.fixes_schema() => {
                    "--fix-schema adds tables, columns, sequences and indexes but never alters or drops what holds data; a sync without --data-only replaces the schema"
                }
                _ => {
                    "--fix-schema adds missing tables, columns, sequences and indexes; `dbsync diff` shows every difference; a sync without --data-only replaces the schema"
                }
            };
            return Err(usage_error!(
                "the target's schema does not fit the tables to write:\n  - {}\nhint: {hint}",
                fitting.problems.join("\n  - ")
            ));
        }
        let run = !self.settings.dry_run;
        if run {
            preflight::obtain_refresh_consent(self.settings, endpoint, counts.tables, &self.cancellation).await?;
        }
        for statement in fitting.statements {
            self.emit(Event::Notice(Notice::SchemaFix {
                statement: statement.clone(),
                run,
            }));
            if run {
                interruptible(&self.cancellation, catalog::run_statement(target, &statement)).await?;
            }
        }
        self.emit(Event::Notice(Notice::SchemaFits {
            tables: counts.tables,
            members: counts.members,
        }));
        Ok(())
    }

    /// Counts (and with `--verify checksum`, checksums) of the refreshed tables on both sides,
    /// the source's in the snapshot.
    pub(super) async fn validate_refresh(
        &mut self,
        endpoint: &Endpoint,
        source: &Client,
        target: &Client,
        plan: &Plan,
        source_sessions: &Sessions,
    ) -> Result<(), SyncError> {
        let verification = self.settings.verification;
        if verification == Verification::Skip {
            return Ok(());
        }
        // A subset's source side is what it chose, not the whole tables.
        let counted_source = self.chosen_counts.is_none().then_some(source);
        let counts = super::steps::validate::count_rows(counted_source, target, plan);
        let counts = self.against_subset(interruptible(&self.cancellation, counts).await?);
        let mut differences = Vec::new();
        if let (Verification::Checksum, Some(chosen)) = (verification, &self.subset_checksums) {
            // A subset's: its chosen rows against the target's, compared once they were in.
            differences = chosen.clone();
        } else if verification == Verification::Checksum {
            let members = plan.members();
            let compare = async {
                let target_sessions = Sessions::open(endpoint, "target", self.granted_jobs(), None).await?;
                // A kept target may have columns of its own: the rows are compared on the ones
                // both sides have, and the others named.
                let masks = self.member_masks(plan);
                checksum::compare(
                    source_sessions,
                    &target_sessions,
                    &members,
                    &masks,
                    ColumnChoice::Common,
                )
                .await
            };
            let compared = interruptible(&self.cancellation, compare).await?;
            for left_out in &compared.left_out {
                self.warn(Warning::Other(format!(
                    "the checksums compared only the columns both sides have: {}",
                    left_out.describe()
                )));
            }
            differences = checksum_differences(&members, &compared.comparisons);
        }
        self.judge_refresh(plan, counts, differences)
    }
}

impl RunContext<'_> {
    /// The verdict on a refresh from its counts and checksum differences.
    pub(super) fn judge_refresh(
        &mut self,
        plan: &Plan,
        counts: Vec<TableCount>,
        differences: Vec<crate::report::VerifyDifference>,
    ) -> Result<(), SyncError> {
        // `--incremental --no-delete` keeps the target's rows the source no longer has.
        let keeps_rows = matches!(&self.settings.content, Content::Incremental(options) if !options.delete);
        let mismatches: Vec<(String, i64, i64)> = super::steps::validate::count_mismatches(plan, &counts)
            .into_iter()
            .filter(|(_, source, target)| !(keeps_rows && target > source))
            .collect();
        self.progress.set_counts(counts);
        let found = mismatches.len() + differences.len();
        if !mismatches.is_empty() {
            self.emit(Event::Discrepancies(mismatches));
        }
        if !differences.is_empty() {
            self.emit(Event::ChecksumDifferences(differences));
        }
        if found > 0 {
            return Err(SyncError::RefreshDiffers(found));
        }
        let rows = match self.settings.verification {
            Verification::Checksum => RowCheck::Checksums,
            _ => RowCheck::Counts,
        };
        self.emit(Event::Notice(Notice::RefreshValidated {
            tables: plan.tables.len(),
            rows,
        }));
        Ok(())
    }
}

/// The state a row-copy mode keeps about its source in the target's `dbsync` schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SourceState {
    Watermarks,
    IdMaps,
}

impl SourceState {
    fn table(self) -> &'static str {
        match self {
            SourceState::Watermarks => catalog::WATERMARK_TABLE,
            SourceState::IdMaps => catalog::MAP_NAMES,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SourceState::Watermarks => "watermarks",
            SourceState::IdMaps => "ID maps",
        }
    }

    fn section(self) -> &'static str {
        match self {
            SourceState::Watermarks => "incremental",
            SourceState::IdMaps => "merge",
        }
    }
}

/// The label this source's state is kept under in the target, and the source database's identity.
#[derive(Debug, Clone)]
pub(super) struct SourceLabel {
    pub(super) label: String,
    identity: Option<String>,
    state: SourceState,
    /// The target holds state under this label already: this source was read before.
    pub(super) known: bool,
}

impl SourceLabel {
    /// Says which label and identity the state is kept under.
    pub(super) fn notice(&self) -> Event {
        Event::Notice(Notice::SourceName {
            name: self.label.clone(),
            identity: self.identity.clone(),
            state: self.state.name(),
            section: self.state.section(),
        })
    }
}

impl RunContext<'_> {
    /// Finds the label the target keeps this source's state under: by the source database's
    /// identity (server system identifier and database), so another spelling of its URI finds
    /// the same state; else the configured name, else the server and database as the URI gives
    /// them. Refuses (exit 2) a configured name that another database's state holds, and state of
    /// this database under another configured name, where going on would copy rows twice.
    pub(super) async fn source_label(
        &self,
        source: &Client,
        target: &Client,
        endpoint: &Endpoint,
        configured: Option<&str>,
        state: SourceState,
    ) -> Result<SourceLabel, SyncError> {
        let identity = interruptible(&self.cancellation, async {
            Ok(catalog::database_identity(source).await)
        })
        .await?;
        let stored = interruptible(&self.cancellation, catalog::state_labels(target, state.table())).await?;
        let spelled = format!("{}:{}/{}", endpoint.host, endpoint.port, endpoint.dbname);
        let label =
            choose_label(identity.as_deref(), &spelled, configured, &stored, state).map_err(SyncError::Usage)?;
        let known = stored.iter().any(|(stored, _)| *stored == label);
        Ok(SourceLabel {
            label,
            identity,
            state,
            known,
        })
    }

    /// Records the source's identity on state kept under its label without one (once the state
    /// table exists).
    pub(super) async fn claim_source_state(&self, target: &Client, source: &SourceLabel) -> Result<(), SyncError> {
        let Some(identity) = &source.identity else {
            return Ok(());
        };
        let claim = catalog::claim_state(target, source.state.table(), &source.label, identity);
        interruptible(&self.cancellation, claim).await
    }
}

/// The label for a source of `identity` among the `stored` labels and their identities; see
/// `RunContext::source_label`. An error says why the run must not go on, and what to do.
fn choose_label(
    identity: Option<&str>,
    spelled: &str,
    configured: Option<&str>,
    stored: &[(String, Option<String>)],
    state: SourceState,
) -> Result<String, String> {
    let wanted = configured.unwrap_or(spelled);
    let Some(identity) = identity else {
        return Ok(wanted.to_string());
    };
    let table = state.table();
    let same_database: Vec<&str> = stored
        .iter()
        .filter(|(_, recorded)| recorded.as_deref() == Some(identity))
        .map(|(label, _)| label.as_str())
        .collect();
    if same_database.contains(&wanted) {
        return Ok(wanted.to_string());
    }
    if let Some(known) = same_database.first() {
        return match configured {
            None => Ok(known.to_string()),
            Some(configured) => Err(format!(
                "the target keeps {} of this source database under the name {known:?}, not {configured:?}: \
                 set source = {known:?} in [{}] (under another name its rows would be copied again)",
                state.name(),
                state.section()
            )),
        };
    }
    let other = stored
        .iter()
        .find(|(label, recorded)| label == wanted && recorded.as_deref().is_some_and(|recorded| recorded != identity));
    if let Some((label, Some(recorded))) = other {
        return Err(format!(
            "the {} kept in the target under {label:?} were recorded from another database (server and database \
             {recorded}, this source is {identity}): name this source differently in [{}] source; if it is the same \
             database moved to another server, run UPDATE {table} SET source_identity = NULL WHERE source = '{}' \
             in the target first",
            state.name(),
            state.section(),
            label.replace('\'', "''")
        ));
    }
    Ok(wanted.to_string())
}

/// What `fit_target_schema` found: problems that refuse the refresh, statements that fix the rest.
#[derive(Default)]
pub(super) struct SchemaFit {
    /// `--fix-schema`: what is missing becomes a statement instead of a problem.
    fix: bool,
    problems: Vec<String>,
    statements: Vec<String>,
}

impl SchemaFit {
    async fn sequences(
        &mut self,
        run: &RunContext<'_>,
        source: &Client,
        missing: &[QualifiedName],
    ) -> Result<(), SyncError> {
        if missing.is_empty() {
            return Ok(());
        }
        if self.fix {
            let statements = catalog::sequence_statements(source, missing);
            self.statements
                .extend(interruptible(&run.cancellation, statements).await?);
        } else {
            self.problems.extend(
                missing
                    .iter()
                    .map(|sequence| format!("the sequence {} is missing", sequence.display_name())),
            );
        }
        Ok(())
    }

    async fn table(
        &mut self,
        run: &RunContext<'_>,
        (source, target): (&Client, &Client),
        table: &QualifiedName,
        source_columns: &[TableColumn],
        target_columns: Option<Vec<TableColumn>>,
        in_tree: bool,
    ) -> Result<(), SyncError> {
        let name = table.display_name();
        let Some(target_columns) = target_columns else {
            if !self.fix || in_tree {
                self.problems.push(match in_tree {
                    true => format!("the table {name} is missing (a partition or inheritance member: --fix-schema does not create those)"),
                    false => format!("the table {name} is missing"),
                });
                return Ok(());
            }
            self.statements
                .push(catalog::create_table_statement(table, source_columns));
            let indexes = interruptible(&run.cancellation, catalog::index_statements(source, table)).await?;
            self.statements
                .extend(indexes.into_iter().map(|(_, statement)| statement));
            return Ok(());
        };
        let missing = self.compare_columns(&name, source_columns, &target_columns);
        if !self.fix {
            return Ok(());
        }
        if !missing.is_empty() {
            let empty = interruptible(&run.cancellation, catalog::table_is_empty(target, table)).await?;
            self.statements.extend(
                missing
                    .into_iter()
                    .map(|column| catalog::add_column_statement(table, column, empty)),
            );
        }
        let read = async {
            tokio::try_join!(
                catalog::index_statements(source, table),
                catalog::index_names(target, table)
            )
        };
        let (indexes, existing) = interruptible(&run.cancellation, read).await?;
        self.statements.extend(
            indexes
                .into_iter()
                .filter(|(index, _)| !existing.contains(index))
                .map(|(_, statement)| statement),
        );
        Ok(())
    }

    /// Records the problems of a table both sides have; returns the source's columns the target
    /// lacks (a problem too, unless fixing).
    fn compare_columns<'a>(
        &mut self,
        name: &str,
        source_columns: &'a [TableColumn],
        target_columns: &[TableColumn],
    ) -> Vec<&'a TableColumn> {
        let mut missing = Vec::new();
        for column in source_columns {
            match target_columns.iter().find(|candidate| candidate.name == column.name) {
                Some(existing) if existing.type_name != column.type_name => self.problems.push(format!(
                    "the column {name}.{} is {} on the source and {} on the target",
                    column.name, column.type_name, existing.type_name
                )),
                Some(_) => {}
                None if self.fix => missing.push(column),
                None => self
                    .problems
                    .push(format!("the column {name}.{} is missing", column.name)),
            }
        }
        for column in target_columns {
            let fillable =
                !column.not_null || column.default.is_some() || column.identity.is_some() || column.generated.is_some();
            if !fillable && !source_columns.iter().any(|candidate| candidate.name == column.name) {
                self.problems.push(format!(
                    "the column {name}.{} is only on the target, NOT NULL without a default: the source's rows have no value for it",
                    column.name
                ));
            }
        }
        missing
    }
}

/// For each member of the plan (in `Plan::members` order): whether it belongs to a partitioned
/// tree or an inheritance tree.
fn members_in_trees(plan: &Plan) -> Vec<bool> {
    plan.tables
        .iter()
        .flat_map(|table| {
            table
                .members
                .iter()
                .map(move |_| table.members.len() > 1 || table.partitioned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(label, identity)| (label.to_string(), identity.map(str::to_string)))
            .collect()
    }

    #[test]
    fn a_source_is_found_by_its_identity_and_a_label_is_never_shared() {
        let state = SourceState::IdMaps;
        let choose = |configured, stored: &[(String, Option<String>)]| {
            choose_label(Some("42/16384"), "localhost:5432/shop", configured, stored, state)
        };
        assert_eq!(choose(None, &[]).unwrap(), "localhost:5432/shop");
        let known = stored(&[("127.0.0.1:5432/shop", Some("42/16384")), ("other", Some("7/1"))]);
        let elsewhere = stored(&[("other", Some("7/1"))]);
        assert_eq!(choose(None, &known).unwrap(), "127.0.0.1:5432/shop", "another spelling");
        assert!(
            choose(Some("regional"), &known)
                .unwrap_err()
                .contains("under the name \"127.0.0.1:5432/shop\"")
        );
        assert!(
            choose(Some("other"), &elsewhere)
                .unwrap_err()
                .contains("recorded from another database")
        );
        let legacy = stored(&[("regional", None)]);
        assert_eq!(
            choose(Some("regional"), &legacy).unwrap(),
            "regional",
            "state from before identities"
        );
        assert_eq!(
            choose_label(None, "localhost:5432/shop", Some("regional"), &known, state).unwrap(),
            "regional",
            "no identity readable: the label alone, as before"
        );
    }
}
