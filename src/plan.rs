//! What to copy and how to split it: table selection by wildcard patterns, partition and
//! inheritance trees, sequences that go with the selected tables, foreign keys that point out of
//! the selection, and the units of data that are dumped and restored together.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::{Inventory, QualifiedName, Table, TableKind};
use crate::errors::SyncError;
use crate::usage_error;

/// A table pattern and where it came from, so errors can say which group or flag named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    pub pattern: String,
    pub origin: String,
}

/// What to do with a foreign key from a table whose data is copied to one whose data is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForeignKeyPolicy {
    /// Create the key NOT VALID: enforced for new rows, existing rows not checked.
    NotValid,
    /// Leave the key out.
    Skip,
    /// Copy the referenced tables' data too.
    IncludeParent,
}

impl ForeignKeyPolicy {
    pub const NAMES: [&str; 3] = ["not-valid", "skip", "include-parent"];

    pub fn from_name(name: &str) -> Option<ForeignKeyPolicy> {
        match name {
            "not-valid" => Some(ForeignKeyPolicy::NotValid),
            "skip" => Some(ForeignKeyPolicy::Skip),
            "include-parent" => Some(ForeignKeyPolicy::IncludeParent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ForeignKeyPolicy::NotValid => "not-valid",
            ForeignKeyPolicy::Skip => "skip",
            ForeignKeyPolicy::IncludeParent => "include-parent",
        }
    }
}

/// A table gets a unit of its own from this size on; smaller ones are batched.
pub const LARGE_TABLE_BYTES: i64 = 64 * 1024 * 1024;

/// A table as users see it: an ordinary table, or the root of a partition or inheritance tree
/// with all its members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedTable {
    pub name: QualifiedName,
    pub oid: u32,
    /// "Standard Table", "Partitioned (24 parts)", ...
    pub description: String,
    /// Tables in the tree that hold rows of their own (leaf partitions, inheritance members).
    pub members: Vec<QualifiedName>,
    pub member_oids: Vec<u32>,
    /// Every table in the tree, partitioned ones included: indexes and constraints on any of them
    /// belong to this planned table.
    pub tree_oids: Vec<u32>,
    /// The root is a partitioned table: VACUUM and ANALYZE of the root reach every partition.
    pub partitioned: bool,
    pub size_bytes: i64,
    /// The planner's estimate of the rows of its members; `None` when a member was never
    /// vacuumed or analyzed.
    pub estimated_rows: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    Tables,
    LargeObjects,
}

/// Data dumped by one `pg_dump` and loaded by one `pg_restore`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    pub index: usize,
    pub kind: UnitKind,
    /// Tables whose own rows this unit carries.
    pub tables: Vec<QualifiedName>,
    pub sequences: Vec<QualifiedName>,
    /// The partitioned tables that own some of `sequences` (an identity column's): named to
    /// `pg_dump` too, which sets such a sequence only when its owner is dumped, and a partitioned
    /// table has no rows of its own to dump.
    #[serde(default)]
    pub sequence_owners: Vec<QualifiedName>,
    /// Indexes into `Plan::tables` of the planned tables this unit carries rows of.
    pub planned_tables: Vec<usize>,
    pub size_bytes: i64,
    /// What to empty on the target before a retried import, so no row is loaded twice. A hash
    /// partitioned tree is emptied from its root: its rows may be routed through the root.
    pub truncate_before_retry: Vec<QualifiedName>,
    /// Truncate `truncate_before_retry` with its partitions (a hash-partitioned root), not ONLY.
    pub truncate_whole_tree: bool,
    /// A range of one large table's rows, copied by dbsync itself (COPY to COPY) beside the
    /// table's other parts, instead of by `pg_dump`/`pg_restore`.
    #[serde(default)]
    pub part: Option<RowRange>,
    /// Whole tables copied by dbsync itself one after the other over one pair of sessions, each
    /// with its columns and format (`tables` in the same order): a batch of small tables in a
    /// sync whose dumps are not kept, where a `pg_dump` would read the whole catalog first.
    #[serde(default)]
    pub batch: Vec<RowRange>,
}

/// Rows of one table whose integer `key` is in `lower..upper` (an open end takes the rest), or
/// with the key `ctid` (a table without an integer key), the rows stored in blocks `lower..upper`;
/// with both ends open (a masked table copied whole), every row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRange {
    pub key: String,
    pub lower: Option<i64>,
    pub upper: Option<i64>,
    /// The table's columns to copy (generated ones left out: the target computes them).
    pub columns: Vec<String>,
    /// Sequences the table owns, set to the source's values by the first part: `pg_dump` sets
    /// an identity column's sequence only with its table's rows, which no `pg_dump` copies now.
    #[serde(default)]
    pub sequences: Vec<QualifiedName>,
    /// 1-based number of this part, and how many the table has.
    pub number: usize,
    pub of: usize,
    /// Relayed in `COPY`'s binary format: every column's type is built in (the binary form of an
    /// array or a row of a user type carries its object id, which differs between servers) and
    /// both servers are the same major version. Otherwise in text, exactly as `pg_dump` writes it.
    #[serde(default)]
    pub binary: bool,
    /// The table's object id on the source (what dump sizes are counted under).
    #[serde(default)]
    pub table_oid: u32,
    /// Masked columns (`[transform]`) and the expression each is read through on the source.
    #[serde(default)]
    pub masked: Vec<(String, String)>,
    /// Only the rows `[subset]` chose of the table (kept on the target, `catalog::relay_chosen_rows`).
    #[serde(default)]
    pub subset: bool,
}

/// One range per part between `boundaries` (ascending, distinct): the first open below, the
/// last open above. Each is `table`'s (whose range, number and count are ignored), and only the
/// first carries its sequences.
pub fn row_ranges(table: &RowRange, boundaries: &[i64]) -> Vec<RowRange> {
    let of = boundaries.len() + 1;
    (0..of)
        .map(|number| RowRange {
            lower: number.checked_sub(1).map(|previous| boundaries[previous]),
            upper: boundaries.get(number).copied(),
            sequences: if number == 0 {
                table.sequences.clone()
            } else {
                Vec::new()
            },
            number: number + 1,
            of,
            ..table.clone()
        })
        .collect()
}

impl Unit {
    /// For a unit with no table of its own: what its lines are called, and what it carries.
    pub fn own_line(&self) -> (&'static str, &'static str) {
        match self.kind {
            UnitKind::LargeObjects => ("(large objects)", "Large Objects"),
            UnitKind::Tables => ("(sequences)", "Sequences"),
        }
    }

    pub fn label(&self) -> String {
        match self.kind {
            UnitKind::LargeObjects => "large objects".to_string(),
            UnitKind::Tables => match &self.part {
                Some(part) if part.of > 1 => format!("unit {} (part {} of {})", self.index + 1, part.number, part.of),
                _ => format!("unit {}", self.index + 1),
            },
        }
    }
}

/// A foreign key from a table whose data is copied to one whose data is not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DanglingForeignKey {
    pub oid: u32,
    pub name: String,
    pub table: QualifiedName,
    pub referenced_table: QualifiedName,
    pub definition: String,
    /// `NOT VALID` cannot be used on a partitioned table; such keys are skipped.
    pub on_partitioned_table: bool,
}

/// A checked foreign key between two copied tables that dbsync adds itself rather than leave to
/// pg_restore: `NOT VALID` on each ordinary table that carries it, then validated on several
/// sessions at once. `ADD CONSTRAINT … FOREIGN KEY` locks the referenced table against every
/// other such statement, so pg_restore checks the keys that reference one table one after the
/// other, and a partitioned table's key partition by partition in one session; `VALIDATE
/// CONSTRAINT` locks it only against writes (measured on *large*: 1.30 s in one statement, 0.74 s
/// over two sessions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParallelForeignKey {
    /// The key's oid on the source: its entry in the schema dump.
    pub oid: u32,
    pub name: String,
    pub definition: String,
    /// The ordinary tables that carry it, with their sizes: the table itself, or every leaf
    /// partition of a partitioned one (whose own key, restored by pg_restore afterwards, adopts
    /// theirs without checking a row again).
    pub carriers: Vec<(QualifiedName, i64)>,
    pub on_partitioned_table: bool,
}

/// What a run copies, and how: also kept in an archive's manifest, so that a restore loads and
/// checks exactly what the dump held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub whole_database: bool,
    pub tables: Vec<PlannedTable>,
    pub units: Vec<Arc<Unit>>,
    pub sequences: Vec<QualifiedName>,
    pub large_object_count: i64,
    pub copy_large_objects: bool,
    pub dangling_foreign_keys: Vec<DanglingForeignKey>,
    pub foreign_key_policy: ForeignKeyPolicy,
    /// Indexes into `tables` of tables that foreign keys among the copied tables reference: they
    /// are vacuumed before the keys are checked, so each check can use index-only scans.
    pub referenced_tables: Vec<usize>,
    /// Archives written before it existed have none: pg_restore then adds every key.
    #[serde(default)]
    pub parallel_foreign_keys: Vec<ParallelForeignKey>,
}

impl Plan {
    /// The planned table of every table in the selected trees, partitioned ones included.
    pub fn tables_by_tree_oid(&self) -> HashMap<u32, usize> {
        tables_by_tree_oid(&self.tables)
    }

    /// Every table of the selected trees that holds rows of its own (leaf partitions, inheritance
    /// parents and children): what is hashed, refreshed or split table by table.
    pub fn members(&self) -> Vec<QualifiedName> {
        self.tables
            .iter()
            .flat_map(|table| table.members.iter().cloned())
            .collect()
    }

    /// `members`, each with its object id on the source.
    pub fn members_with_oids(&self) -> Vec<(QualifiedName, u32)> {
        self.tables
            .iter()
            .flat_map(|table| table.members.iter().cloned().zip(table.member_oids.iter().copied()))
            .collect()
    }

    /// Roots of the selected trees: locking these (without ONLY) locks every member.
    pub fn lock_targets(&self) -> Vec<QualifiedName> {
        self.tables.iter().map(|table| table.name.clone()).collect()
    }
}

pub struct PlanRequest<'a> {
    pub include: &'a [TablePattern],
    pub exclude: &'a [TablePattern],
    pub jobs: usize,
    pub foreign_key_policy: ForeignKeyPolicy,
    /// No table's rows are copied (`--schema-only`): every key and index is restored whole.
    pub schema_only: bool,
    /// The units are only dumped (`dbsync dump`): beside large tables, the small ones may come in
    /// more batches (measured: faster dumps; in a sync, where loads and index builds follow, 4 %
    /// slower).
    pub export_only: bool,
}

/// Shell-style wildcard match: `*` any run of characters, `?` one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut pattern_index, mut text_index) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while text_index < text.len() {
        if pattern_index < pattern.len()
            && (pattern[pattern_index] == '?' || pattern[pattern_index] == text[text_index])
        {
            pattern_index += 1;
            text_index += 1;
        } else if pattern_index < pattern.len() && pattern[pattern_index] == '*' {
            backtrack = Some((pattern_index, text_index));
            pattern_index += 1;
        } else if let Some((star, matched)) = backtrack {
            pattern_index = star + 1;
            text_index = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[pattern_index..].iter().all(|&character| character == '*')
}

/// A pattern with a dot matches `schema.table`; without one, the table name in any schema.
pub fn pattern_matches(pattern: &str, table: &QualifiedName) -> bool {
    if pattern.contains('.') {
        wildcard_match(pattern, &format!("{}.{}", table.schema, table.name))
    } else {
        wildcard_match(pattern, &table.name)
    }
}

fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (left_index, left_char) in left.chars().enumerate() {
        let mut current = vec![left_index + 1];
        for (right_index, right_char) in right.iter().enumerate() {
            let substitution = previous[right_index] + usize::from(left_char != *right_char);
            current.push(
                substitution
                    .min(previous[right_index + 1] + 1)
                    .min(current[right_index] + 1),
            );
        }
        previous = current;
    }
    previous[right.len()]
}

fn closest_names(pattern: &str, candidates: &[&Table]) -> Vec<String> {
    let bare = pattern.replace(['*', '?'], "");
    let mut scored: Vec<(usize, String)> = candidates
        .iter()
        .map(|table| {
            let name = table.name.display_name();
            let compared = if pattern.contains('.') {
                format!("{}.{}", table.name.schema, table.name.name)
            } else {
                table.name.name.clone()
            };
            (edit_distance(&bare.to_lowercase(), &compared.to_lowercase()), name)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, name)| name).collect()
}

/// The source's tables by oid, and each one's partitions or inheritance children.
struct Trees<'a> {
    by_oid: HashMap<u32, &'a Table>,
    children: HashMap<u32, Vec<u32>>,
}

impl<'a> Trees<'a> {
    fn of(inventory: &'a Inventory) -> Trees<'a> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for table in &inventory.tables {
            for parent in &table.parents {
                children.entry(*parent).or_default().push(table.oid);
            }
        }
        Trees {
            by_oid: inventory.tables.iter().map(|table| (table.oid, table)).collect(),
            children,
        }
    }

    /// `root` and everything below it, breadth first.
    fn subtree(&self, root: u32) -> Vec<u32> {
        let mut order = vec![root];
        let mut index = 0;
        let mut seen: HashSet<u32> = HashSet::from([root]);
        while index < order.len() {
            for child in self.children.get(&order[index]).into_iter().flatten() {
                if seen.insert(*child) {
                    order.push(*child);
                }
            }
            index += 1;
        }
        order
    }

    /// The top of the tree `oid` belongs to.
    fn root_of(&self, mut oid: u32) -> u32 {
        let mut steps = 0;
        while let Some(parent) = self.by_oid.get(&oid).and_then(|table| table.parents.first()) {
            oid = *parent;
            steps += 1;
            if steps > 1000 {
                break;
            }
        }
        oid
    }

    fn selected(&self, roots: &BTreeSet<u32>) -> HashSet<u32> {
        roots.iter().flat_map(|root| self.subtree(*root)).collect()
    }
}

/// The tables `patterns` name among the top-level `candidates`; a pattern that names none is
/// refused with the closest names.
fn match_patterns(patterns: &[TablePattern], candidates: &[&Table]) -> Result<BTreeSet<u32>, SyncError> {
    let mut matched = BTreeSet::new();
    for pattern in patterns {
        let hits: Vec<u32> = candidates
            .iter()
            .filter(|table| pattern_matches(&pattern.pattern, &table.name))
            .map(|table| table.oid)
            .collect();
        if hits.is_empty() {
            let closest = closest_names(&pattern.pattern, candidates);
            let suggestion = if closest.is_empty() {
                "the source database has no tables".to_string()
            } else {
                format!("closest table names: {}", closest.join(", "))
            };
            return Err(usage_error!(
                "table pattern \"{}\" (from {}) matches no table in the source database; {suggestion}",
                pattern.pattern,
                pattern.origin
            ));
        }
        matched.extend(hits);
    }
    Ok(matched)
}

/// The top-level tables whose data is copied: the included (or all), less the excluded, plus,
/// with `include-parent`, every table a selected one references, to a fixed point.
fn selected_roots(inventory: &Inventory, trees: &Trees, request: &PlanRequest) -> Result<BTreeSet<u32>, SyncError> {
    // Patterns name top-level tables; partitions and inheritance children follow their root.
    let candidates: Vec<&Table> = inventory
        .tables
        .iter()
        .filter(|table| table.parents.is_empty())
        .collect();
    let mut roots: BTreeSet<u32> = if request.include.is_empty() {
        candidates.iter().map(|table| table.oid).collect()
    } else {
        match_patterns(request.include, &candidates)?
    };
    for excluded in match_patterns(request.exclude, &candidates)? {
        roots.remove(&excluded);
    }
    if request.schema_only {
        roots.clear();
    }
    if request.foreign_key_policy == ForeignKeyPolicy::IncludeParent {
        loop {
            let selected = trees.selected(&roots);
            let missing: Vec<u32> = inventory
                .foreign_keys
                .iter()
                .filter(|key| selected.contains(&key.table) && !selected.contains(&key.referenced_table))
                .map(|key| trees.root_of(key.referenced_table))
                .filter(|root| trees.by_oid.contains_key(root))
                .collect();
            if missing.is_empty() {
                break;
            }
            roots.extend(missing);
        }
    }
    Ok(roots)
}

/// Per planned table: its members as (name, size), and whether it is hash partitioned.
type MemberSizes = (Vec<(QualifiedName, i64)>, bool);

/// The planned table of the tree under `root`: its members are the ordinary tables of the tree
/// that no earlier tree took (`assigned`).
fn planned_table(trees: &Trees, root: u32, assigned: &mut HashSet<u32>) -> (PlannedTable, MemberSizes) {
    let by_oid = &trees.by_oid;
    let root_table = by_oid[&root];
    let tree = trees.subtree(root);
    let mut members = Vec::new();
    let mut hash_partitioned = false;
    for oid in &tree {
        let table = by_oid[oid];
        hash_partitioned |= table.hash_partitioned;
        if table.kind == TableKind::Ordinary && assigned.insert(*oid) {
            members.push((table.name.clone(), table.size_bytes));
        }
    }
    let descendants = tree.len() - 1;
    let description = if root_table.kind == TableKind::Partitioned {
        format!("Partitioned ({} parts)", members.len())
    } else if descendants > 0 {
        format!("Inheritance ({descendants} children)")
    } else if root_table.unlogged {
        "Unlogged Table".to_string()
    } else {
        "Standard Table".to_string()
    };
    let ordinary: Vec<u32> = tree
        .iter()
        .filter(|oid| by_oid[oid].kind == TableKind::Ordinary)
        .copied()
        .collect();
    let table = PlannedTable {
        name: root_table.name.clone(),
        oid: root,
        description,
        members: members.iter().map(|(name, _)| name.clone()).collect(),
        estimated_rows: ordinary
            .iter()
            .map(|oid| (by_oid[oid].estimated_rows >= 0.0).then_some(by_oid[oid].estimated_rows as u64))
            .sum(),
        member_oids: ordinary,
        tree_oids: tree,
        partitioned: root_table.kind == TableKind::Partitioned,
        size_bytes: members.iter().map(|(_, size)| size).sum(),
    };
    (table, (members, hash_partitioned))
}

/// Foreign keys from a selected table to one whose data is not copied.
fn dangling_foreign_keys(inventory: &Inventory, trees: &Trees, selected: &HashSet<u32>) -> Vec<DanglingForeignKey> {
    inventory
        .foreign_keys
        .iter()
        .filter(|key| selected.contains(&key.table) && !selected.contains(&key.referenced_table))
        .filter_map(|key| {
            let table = trees.by_oid.get(&key.table)?;
            let referenced = trees.by_oid.get(&key.referenced_table)?;
            Some(DanglingForeignKey {
                oid: key.oid,
                name: key.name.clone(),
                table: table.name.clone(),
                referenced_table: referenced.name.clone(),
                definition: key.definition.clone(),
                on_partitioned_table: table.kind == TableKind::Partitioned,
            })
        })
        .collect()
}

/// The checked foreign keys among the selected tables that dbsync validates in parallel: those
/// that reference an ordinary table (a key to a partitioned table has a catalog entry per
/// referenced partition, which only PostgreSQL's own recursion makes right).
fn parallel_foreign_keys(inventory: &Inventory, trees: &Trees, selected: &HashSet<u32>) -> Vec<ParallelForeignKey> {
    inventory
        .foreign_keys
        .iter()
        .filter(|key| key.validated && selected.contains(&key.table) && selected.contains(&key.referenced_table))
        .filter_map(|key| {
            let table = trees.by_oid.get(&key.table)?;
            if trees.by_oid.get(&key.referenced_table)?.kind != TableKind::Ordinary {
                return None;
            }
            let on_partitioned_table = table.kind == TableKind::Partitioned;
            let carriers: Vec<(QualifiedName, i64)> = if on_partitioned_table {
                trees
                    .subtree(key.table)
                    .iter()
                    .map(|oid| trees.by_oid[oid])
                    .filter(|member| member.kind == TableKind::Ordinary)
                    .map(|member| (member.name.clone(), member.size_bytes))
                    .collect()
            } else {
                vec![(table.name.clone(), table.size_bytes)]
            };
            (!carriers.is_empty()).then(|| ParallelForeignKey {
                oid: key.oid,
                name: key.name.clone(),
                definition: key.definition.clone(),
                carriers,
                on_partitioned_table,
            })
        })
        .collect()
}

pub fn build(inventory: &Inventory, request: &PlanRequest) -> Result<Plan, SyncError> {
    let trees = Trees::of(inventory);
    let whole_database = request.include.is_empty() && request.exclude.is_empty() && !request.schema_only;
    let roots = selected_roots(inventory, &trees, request)?;
    let mut tables = Vec::new();
    let mut assigned: HashSet<u32> = HashSet::new();
    let mut member_sizes: Vec<MemberSizes> = Vec::new();
    for root in &roots {
        let (table, sizes) = planned_table(&trees, *root, &mut assigned);
        tables.push(table);
        member_sizes.push(sizes);
    }
    let selected_oids = trees.selected(&roots);
    let sequences: Vec<QualifiedName> = inventory
        .sequences
        .iter()
        .filter(|sequence| {
            whole_database
                || sequence.owned_by.is_some_and(|owner| selected_oids.contains(&owner))
                || sequence.used_by.iter().any(|user| selected_oids.contains(user))
        })
        .map(|sequence| sequence.name.clone())
        .collect();
    let planned_by_oid = tables_by_tree_oid(&tables);
    let referenced_tables: Vec<usize> = inventory
        .foreign_keys
        .iter()
        .filter(|key| planned_by_oid.contains_key(&key.table))
        .filter_map(|key| planned_by_oid.get(&key.referenced_table).copied())
        .collect::<BTreeSet<usize>>()
        .into_iter()
        .collect();
    let copy_large_objects = whole_database && inventory.large_object_count > 0;
    let sequence_owners = partitioned_owners(inventory, &sequences);
    let carried = CarriedSequences {
        sequences: &sequences,
        owners: &sequence_owners,
    };
    let units = split_into_units(&tables, &member_sizes, carried, copy_large_objects, request);
    Ok(Plan {
        whole_database,
        tables,
        units,
        sequences,
        large_object_count: inventory.large_object_count,
        copy_large_objects,
        dangling_foreign_keys: dangling_foreign_keys(inventory, &trees, &selected_oids),
        foreign_key_policy: request.foreign_key_policy,
        referenced_tables,
        parallel_foreign_keys: parallel_foreign_keys(inventory, &trees, &selected_oids),
    })
}

fn tables_by_tree_oid(tables: &[PlannedTable]) -> HashMap<u32, usize> {
    tables
        .iter()
        .enumerate()
        .flat_map(|(index, table)| table.tree_oids.iter().map(move |oid| (*oid, index)))
        .collect()
}

/// A unit of tables while they are being gathered.
#[derive(Default)]
struct Draft {
    tables: Vec<QualifiedName>,
    planned_tables: BTreeSet<usize>,
    size_bytes: i64,
    truncate_before_retry: Vec<QualifiedName>,
    truncate_whole_tree: bool,
}

impl Draft {
    fn into_unit(self) -> Unit {
        Unit {
            tables: self.tables,
            planned_tables: self.planned_tables.into_iter().collect(),
            size_bytes: self.size_bytes,
            truncate_before_retry: self.truncate_before_retry,
            truncate_whole_tree: self.truncate_whole_tree,
            ..Unit::empty(UnitKind::Tables)
        }
    }
}

impl Unit {
    /// A unit of `kind` with nothing in it yet.
    fn empty(kind: UnitKind) -> Unit {
        Unit {
            index: 0,
            kind,
            tables: Vec::new(),
            sequences: Vec::new(),
            sequence_owners: Vec::new(),
            planned_tables: Vec::new(),
            size_bytes: 0,
            truncate_before_retry: Vec::new(),
            truncate_whole_tree: false,
            part: None,
            batch: Vec::new(),
        }
    }

    /// Whether dbsync copies this unit's rows itself (a part, or a batch) rather than `pg_dump`.
    pub fn copies_rows(&self) -> bool {
        self.part.is_some() || !self.batch.is_empty()
    }

    /// Each table whose rows dbsync copies itself for this unit, with what it copies of it.
    pub fn row_copies(&self) -> Vec<(&RowRange, &QualifiedName)> {
        match &self.part {
            Some(part) => vec![(part, &self.tables[0])],
            None => self.batch.iter().zip(&self.tables).collect(),
        }
    }
}

/// A batch of small tables holds at least about this much: each batch is a `pg_dump` (and a
/// `pg_restore`) that reads the whole catalog, which costs more than the rows of tiny tables.
const SMALL_BATCH_FLOOR_BYTES: i64 = 16 * 1024 * 1024;

/// How many batches the small tables go in: `jobs` (every session has one, and they come out
/// even); beside large tables' units of a dump, as many as it takes for each to be about a quarter of a
/// session's share of the whole copy, so that batches still left when a large table ends keep
/// every session busy, but never more than twice `jobs` (each batch reads the catalog) nor more
/// than there are tables.
fn batch_count(small: &[(usize, QualifiedName, i64)], whole_bytes: i64, jobs: usize, beside_large: bool) -> usize {
    let jobs = jobs.max(1);
    if !beside_large {
        return jobs.min(small.len());
    }
    let small_bytes: i64 = small.iter().map(|(_, _, size)| size).sum();
    let piece = (whole_bytes / (jobs as i64 * 4)).max(SMALL_BATCH_FLOOR_BYTES);
    let wanted = usize::try_from((small_bytes + piece - 1) / piece).unwrap_or(usize::MAX);
    wanted.clamp(jobs, jobs * 2).min(small.len())
}

/// Spreads the small tables (planned table, name, size) over `batch_count` more drafts, each
/// going to the lightest so far, largest first.
fn batch_small_tables(
    drafts: &mut Vec<Draft>,
    mut small: Vec<(usize, QualifiedName, i64)>,
    jobs: usize,
    export_only: bool,
) {
    if small.is_empty() {
        return;
    }
    small.sort_by(|left, right| right.2.cmp(&left.2).then_with(|| left.1.cmp(&right.1)));
    let whole_bytes =
        drafts.iter().map(|draft| draft.size_bytes).sum::<i64>() + small.iter().map(|(_, _, size)| size).sum::<i64>();
    let batches = batch_count(&small, whole_bytes, jobs, export_only && !drafts.is_empty());
    let first_bucket = drafts.len();
    drafts.extend((0..batches).map(|_| Draft::default()));
    for (table_index, name, size) in small {
        let lightest = (first_bucket..drafts.len())
            .min_by_key(|index| (drafts[*index].size_bytes, drafts[*index].tables.len()))
            .expect("at least one bucket");
        let draft = &mut drafts[lightest];
        draft.tables.push(name.clone());
        draft.truncate_before_retry.push(name);
        draft.planned_tables.insert(table_index);
        draft.size_bytes += size;
    }
}

/// The sequences a plan copies, and the partitioned tables that own some of them.
#[derive(Clone, Copy)]
struct CarriedSequences<'a> {
    sequences: &'a [QualifiedName],
    owners: &'a [QualifiedName],
}

/// Sequences ride with the smallest unit (setting a sequence is idempotent, so a retry is safe),
/// or a unit of their own when no table is copied.
fn carry_sequences(units: &mut Vec<Unit>, carried: CarriedSequences) {
    if carried.sequences.is_empty() {
        return;
    }
    match units.iter_mut().min_by_key(|unit| unit.size_bytes) {
        Some(unit) => {
            unit.sequences = carried.sequences.to_vec();
            unit.sequence_owners = carried.owners.to_vec();
        }
        None => units.push(Unit {
            sequences: carried.sequences.to_vec(),
            sequence_owners: carried.owners.to_vec(),
            ..Unit::empty(UnitKind::Tables)
        }),
    }
}

/// The partitioned tables that own any of `sequences`.
fn partitioned_owners(inventory: &Inventory, sequences: &[QualifiedName]) -> Vec<QualifiedName> {
    let owners: HashSet<u32> = inventory
        .sequences
        .iter()
        .filter(|sequence| sequences.contains(&sequence.name))
        .filter_map(|sequence| sequence.owned_by)
        .collect();
    inventory
        .tables
        .iter()
        .filter(|table| table.kind == TableKind::Partitioned && owners.contains(&table.oid))
        .map(|table| table.name.clone())
        .collect()
}

/// Large tables get a unit each; the rest are spread over at most `jobs` batches, so the number of
/// `pg_dump` runs (each of which reads the whole catalog) does not grow with the number of tables.
fn split_into_units(
    tables: &[PlannedTable],
    member_sizes: &[MemberSizes],
    carried: CarriedSequences,
    copy_large_objects: bool,
    request: &PlanRequest,
) -> Vec<Arc<Unit>> {
    let mut drafts: Vec<Draft> = Vec::new();
    let mut small: Vec<(usize, QualifiedName, i64)> = Vec::new();
    for (table_index, (members, hash_partitioned)) in member_sizes.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        if *hash_partitioned {
            drafts.push(Draft {
                tables: members.iter().map(|(name, _)| name.clone()).collect(),
                planned_tables: BTreeSet::from([table_index]),
                size_bytes: members.iter().map(|(_, size)| size).sum(),
                truncate_before_retry: vec![tables[table_index].name.clone()],
                truncate_whole_tree: true,
            });
            continue;
        }
        for (name, size) in members {
            if *size < LARGE_TABLE_BYTES {
                small.push((table_index, name.clone(), *size));
                continue;
            }
            drafts.push(Draft {
                tables: vec![name.clone()],
                planned_tables: BTreeSet::from([table_index]),
                size_bytes: *size,
                truncate_before_retry: vec![name.clone()],
                truncate_whole_tree: false,
            });
        }
    }
    batch_small_tables(&mut drafts, small, request.jobs, request.export_only);
    let mut units: Vec<Unit> = drafts.into_iter().map(Draft::into_unit).collect();
    carry_sequences(&mut units, carried);
    if copy_large_objects {
        units.push(Unit::empty(UnitKind::LargeObjects));
    }
    // Largest first, so the longest unit does not start last.
    units.sort_by_key(|unit| std::cmp::Reverse(unit.size_bytes));
    units
        .into_iter()
        .enumerate()
        .map(|(index, unit)| Arc::new(Unit { index, ..unit }))
        .collect()
}

/// Groups planned-table indexes by the units that carry them, for progress accounting.
/// The order foreign keys impose on the planned tables (a referenced table before the tables
/// that reference it), and every cycle among them (tables that reference each other, directly or
/// around a loop; a table that references itself is a cycle of one). Tables of a cycle come in
/// the order of their names, where the cycle would otherwise have to be broken.
pub fn foreign_key_order(plan: &Plan, inventory: &Inventory) -> (Vec<usize>, Vec<Vec<usize>>) {
    let by_oid = plan.tables_by_tree_oid();
    let count = plan.tables.len();
    let mut references: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); count];
    for key in &inventory.foreign_keys {
        if let (Some(table), Some(referenced)) = (by_oid.get(&key.table), by_oid.get(&key.referenced_table)) {
            references[*table].insert(*referenced);
        }
    }
    let components = strongly_connected(&references);
    let cycles: Vec<Vec<usize>> = components
        .iter()
        .filter(|component| component.len() > 1 || references[component[0]].contains(&component[0]))
        .cloned()
        .collect();
    // Components come out of Tarjan's algorithm with every referenced component first.
    let order = components.into_iter().flatten().collect();
    (order, cycles)
}

/// The planned tables linked by foreign keys (in either direction, through any chain), each
/// group in foreign-key order (referenced tables first); unlinked tables are groups of one.
/// Writes that share one transaction per group can insert forward and delete backward, so no
/// committed row ever references a missing one.
pub fn foreign_key_groups(plan: &Plan, inventory: &Inventory) -> Vec<Vec<usize>> {
    let by_oid = plan.tables_by_tree_oid();
    let mut leader: Vec<usize> = (0..plan.tables.len()).collect();
    fn leader_of(leader: &mut [usize], mut table: usize) -> usize {
        while leader[table] != table {
            leader[table] = leader[leader[table]];
            table = leader[table];
        }
        table
    }
    for key in &inventory.foreign_keys {
        if let (Some(table), Some(referenced)) = (by_oid.get(&key.table), by_oid.get(&key.referenced_table)) {
            let (first, second) = (leader_of(&mut leader, *table), leader_of(&mut leader, *referenced));
            leader[first.max(second)] = first.min(second);
        }
    }
    let (order, _) = foreign_key_order(plan, inventory);
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for table in order {
        let group = leader_of(&mut leader, table);
        groups.entry(group).or_default().push(table);
    }
    groups.into_values().collect()
}

/// Tarjan's strongly connected components of the graph `edges` (node → nodes it points to), each
/// sorted, in an order where a component comes after every component it points to.
fn strongly_connected(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(state: &mut State, node: usize) {
        state.index[node] = Some(state.next);
        state.low[node] = state.next;
        state.next += 1;
        state.stack.push(node);
        state.on_stack[node] = true;
        for &target in state.edges[node].iter() {
            match state.index[target] {
                None => {
                    visit(state, target);
                    state.low[node] = state.low[node].min(state.low[target]);
                }
                Some(index) if state.on_stack[target] => state.low[node] = state.low[node].min(index),
                Some(_) => {}
            }
        }
        if Some(state.low[node]) == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            component.sort_unstable();
            state.components.push(component);
        }
    }
    let count = edges.len();
    let mut state = State {
        edges,
        index: vec![None; count],
        low: vec![0; count],
        on_stack: vec![false; count],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in 0..count {
        if state.index[node].is_none() {
            visit(&mut state, node);
        }
    }
    state.components
}

/// How many levels a planned table's tree has: 1 for a plain table, 2 for a table with
/// partitions or children, more for partitions that are partitioned in turn.
pub fn tree_levels(table: &PlannedTable, inventory: &Inventory) -> usize {
    let in_tree: HashSet<u32> = table.tree_oids.iter().copied().collect();
    let parents: HashMap<u32, &Vec<u32>> = inventory
        .tables
        .iter()
        .filter(|candidate| in_tree.contains(&candidate.oid))
        .map(|candidate| (candidate.oid, &candidate.parents))
        .collect();
    let depth = |mut oid: u32| {
        let mut levels = 1;
        while let Some(parent) = parents
            .get(&oid)
            .and_then(|parents| parents.iter().find(|parent| in_tree.contains(parent)))
        {
            levels += 1;
            oid = *parent;
            if levels > in_tree.len() {
                break;
            }
        }
        levels
    };
    table.tree_oids.iter().map(|oid| depth(*oid)).max().unwrap_or(1)
}

pub fn units_per_table(plan: &Plan) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for unit in &plan.units {
        for table in &unit.planned_tables {
            *counts.entry(*table).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ForeignKey, Sequence};

    fn table(oid: u32, name: &str, kind: TableKind, parents: &[u32], size: i64) -> Table {
        let (schema, name) = name.split_once('.').unwrap_or(("public", name));
        Table {
            oid,
            name: QualifiedName {
                schema: schema.into(),
                name: name.into(),
            },
            kind,
            unlogged: false,
            parents: parents.to_vec(),
            size_bytes: size,
            hash_partitioned: false,
            estimated_rows: -1.0,
            has_primary_key: true,
            row_security: false,
        }
    }

    fn inventory() -> Inventory {
        Inventory {
            tables: vec![
                table(1, "users", TableKind::Ordinary, &[], 1000),
                table(2, "orders", TableKind::Ordinary, &[], LARGE_TABLE_BYTES * 2),
                table(3, "audit_logs", TableKind::Partitioned, &[], 0),
                table(4, "audit_logs_2024", TableKind::Partitioned, &[3], 0),
                table(5, "audit_logs_2024_01", TableKind::Ordinary, &[4], 10),
                table(6, "audit_logs_default", TableKind::Ordinary, &[3], 10),
                table(7, "billing.invoices", TableKind::Ordinary, &[], 100),
            ],
            sequences: vec![
                Sequence {
                    name: QualifiedName {
                        schema: "public".into(),
                        name: "users_id_seq".into(),
                    },
                    owned_by: Some(1),
                    used_by: vec![1],
                },
                Sequence {
                    name: QualifiedName {
                        schema: "public".into(),
                        name: "standalone".into(),
                    },
                    owned_by: None,
                    used_by: vec![7],
                },
                Sequence {
                    name: QualifiedName {
                        schema: "public".into(),
                        name: "unused".into(),
                    },
                    owned_by: None,
                    used_by: vec![],
                },
            ],
            foreign_keys: vec![ForeignKey {
                oid: 99,
                name: "orders_user_fkey".into(),
                table: 2,
                referenced_table: 1,
                definition: "FOREIGN KEY (user_id) REFERENCES users(id)".into(),
                validated: true,
            }],
            large_object_count: 2,
            ..Inventory::default()
        }
    }

    fn request<'a>(
        include: &'a [TablePattern],
        exclude: &'a [TablePattern],
        policy: ForeignKeyPolicy,
    ) -> PlanRequest<'a> {
        PlanRequest {
            include,
            exclude,
            jobs: 2,
            foreign_key_policy: policy,
            schema_only: false,
            export_only: false,
        }
    }

    fn patterns(texts: &[&str]) -> Vec<TablePattern> {
        texts
            .iter()
            .map(|text| TablePattern {
                pattern: text.to_string(),
                origin: "--include".into(),
            })
            .collect()
    }

    #[test]
    fn small_tables_come_in_more_batches_only_beside_large_ones() {
        let megabytes = |count: i64| count * 1024 * 1024;
        let small: Vec<(usize, QualifiedName, i64)> = (0..12)
            .map(|index| {
                let name = QualifiedName {
                    schema: "public".into(),
                    name: format!("part_{index}"),
                };
                (index, name, megabytes(11))
            })
            .collect();
        // large: 260 MB of one table beside 132 MB of partitions, 2 sessions: 3 batches of ~44 MB.
        assert_eq!(batch_count(&small, megabytes(260 + 132), 2, true), 3);
        // Alone, small tables come out even in one batch per session.
        assert_eq!(batch_count(&small, megabytes(132), 2, false), 2);
        // Never more than twice the sessions, never more than the tables, never fewer than the
        // sessions while there are tables enough.
        assert_eq!(batch_count(&small, megabytes(140), 2, true), 4);
        assert_eq!(batch_count(&small[..3], megabytes(10_000), 4, true), 3);
        assert_eq!(batch_count(&small[..1], megabytes(10), 1, true), 1);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("user_*", "user_sessions"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("user_*", "users"));
        assert!(wildcard_match("*_2024_*", "audit_2024_01"));
    }

    #[test]
    fn whole_database_plan_batches_small_tables_and_isolates_large_ones() {
        let plan = build(&inventory(), &request(&[], &[], ForeignKeyPolicy::NotValid)).unwrap();
        assert!(plan.whole_database && plan.copy_large_objects);
        assert_eq!(plan.tables.len(), 4);
        let audit = plan
            .tables
            .iter()
            .find(|table| table.name.name == "audit_logs")
            .unwrap();
        assert_eq!(audit.description, "Partitioned (2 parts)");
        assert_eq!(audit.members.len(), 2);
        // orders alone, two batches of small tables, large objects.
        assert_eq!(plan.units.len(), 4);
        assert_eq!(plan.units[0].tables[0].name, "orders");
        assert_eq!(plan.sequences.len(), 3);
        let all_tables: usize = plan.units.iter().map(|unit| unit.tables.len()).sum();
        assert_eq!(all_tables, 5, "every table with rows appears in exactly one unit");
    }

    #[test]
    fn subset_brings_partition_tree_and_its_sequences_and_reports_dangling_keys() {
        let include = patterns(&["orders", "audit_*", "billing.*"]);
        let plan = build(&inventory(), &request(&include, &[], ForeignKeyPolicy::NotValid)).unwrap();
        let names: Vec<String> = plan.tables.iter().map(|table| table.name.display_name()).collect();
        assert_eq!(names, ["orders", "audit_logs", "billing.invoices"]);
        let sequences: Vec<&str> = plan.sequences.iter().map(|sequence| sequence.name.as_str()).collect();
        assert_eq!(sequences, ["standalone"]);
        assert!(!plan.copy_large_objects);
        assert_eq!(plan.dangling_foreign_keys.len(), 1);
        assert_eq!(plan.dangling_foreign_keys[0].referenced_table.name, "users");

        let plan = build(&inventory(), &request(&include, &[], ForeignKeyPolicy::IncludeParent)).unwrap();
        assert!(plan.tables.iter().any(|table| table.name.name == "users"));
        assert!(plan.dangling_foreign_keys.is_empty());
    }

    #[test]
    fn row_ranges_cover_the_key_range_in_order() {
        let ranges: Vec<(Option<i64>, Option<i64>, usize, usize)> = row_ranges(
            &RowRange {
                key: "id".into(),
                lower: None,
                upper: None,
                columns: vec!["id".into()],
                sequences: Vec::new(),
                number: 0,
                of: 0,
                binary: false,
                table_oid: 1,
                masked: Vec::new(),
                subset: false,
            },
            &[100, 250],
        )
        .into_iter()
        .map(|part| (part.lower, part.upper, part.number, part.of))
        .collect();
        assert_eq!(
            ranges,
            [
                (None, Some(100), 1, 3),
                (Some(100), Some(250), 2, 3),
                (Some(250), None, 3, 3)
            ]
        );
    }

    #[test]
    fn a_schema_only_plan_copies_no_rows_and_holds_back_no_key() {
        let mut schema_only = request(&[], &[], ForeignKeyPolicy::NotValid);
        schema_only.schema_only = true;
        let plan = build(&inventory(), &schema_only).unwrap();
        assert!(plan.tables.is_empty() && plan.units.is_empty() && plan.sequences.is_empty());
        assert!(!plan.copy_large_objects && !plan.whole_database);
        assert!(plan.dangling_foreign_keys.is_empty(), "every key is restored as it is");
    }

    #[test]
    fn exclusion_and_unmatched_patterns() {
        let exclude = patterns(&["audit_*"]);
        let plan = build(&inventory(), &request(&[], &exclude, ForeignKeyPolicy::NotValid)).unwrap();
        assert!(!plan.whole_database);
        assert!(plan.tables.iter().all(|table| table.name.name != "audit_logs"));

        let include = patterns(&["userz"]);
        let error = build(&inventory(), &request(&include, &[], ForeignKeyPolicy::NotValid)).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("\"userz\"") && message.contains("closest table names: users"),
            "{message}"
        );
        assert_eq!(error.exit_code(), crate::errors::ExitCode::USAGE);

        // Partitions are not matched on their own: their tree comes with its root.
        let include = patterns(&["audit_logs_default"]);
        assert!(build(&inventory(), &request(&include, &[], ForeignKeyPolicy::NotValid)).is_err());
    }

    #[test]
    fn checked_keys_between_copied_tables_to_an_ordinary_table_are_validated_in_parallel() {
        let mut inventory = inventory();
        let key = |oid: u32, table: u32, referenced_table: u32, validated: bool| ForeignKey {
            oid,
            name: format!("k{oid}"),
            table,
            referenced_table,
            definition: format!("FOREIGN KEY (x) REFERENCES t{referenced_table}(id)"),
            validated,
        };
        inventory.foreign_keys = vec![
            key(99, 2, 1, true),
            // A partitioned table's key: carried by every leaf, however deep.
            key(100, 3, 1, true),
            // NOT VALID on the source: restored as it is.
            key(101, 7, 1, false),
            // References a partitioned table.
            key(102, 1, 3, true),
        ];
        let plan = build(&inventory, &request(&[], &[], ForeignKeyPolicy::NotValid)).unwrap();
        let carriers = |oid: u32| -> Option<Vec<String>> {
            let key = plan.parallel_foreign_keys.iter().find(|key| key.oid == oid)?;
            Some(key.carriers.iter().map(|(table, _)| table.name.clone()).collect())
        };
        assert_eq!(carriers(99).unwrap(), ["orders"]);
        let mut leaves = carriers(100).unwrap();
        leaves.sort();
        assert_eq!(leaves, ["audit_logs_2024_01", "audit_logs_default"]);
        assert!(
            plan.parallel_foreign_keys
                .iter()
                .find(|key| key.oid == 100)
                .unwrap()
                .on_partitioned_table
        );
        assert_eq!(carriers(101), None);
        assert_eq!(carriers(102), None);

        // A key whose referenced table is not copied is not one of them.
        let include = patterns(&["orders"]);
        let plan = build(&inventory, &request(&include, &[], ForeignKeyPolicy::NotValid)).unwrap();
        assert!(plan.parallel_foreign_keys.is_empty());
    }

    #[test]
    fn foreign_keys_order_referenced_tables_first_and_name_every_cycle() {
        let mut inventory = Inventory {
            tables: vec![
                table(1, "a", TableKind::Ordinary, &[], 10),
                table(2, "b", TableKind::Ordinary, &[], 10),
                table(3, "c", TableKind::Ordinary, &[], 10),
                table(4, "d", TableKind::Ordinary, &[], 10),
                table(5, "e", TableKind::Ordinary, &[], 10),
            ],
            ..Default::default()
        };
        let key = |oid: u32, table: u32, referenced_table: u32| ForeignKey {
            oid,
            name: format!("k{oid}"),
            table,
            referenced_table,
            definition: String::new(),
            validated: true,
        };
        // c → b → a; d ↔ e; e → e.
        inventory.foreign_keys = vec![
            key(10, 3, 2),
            key(11, 2, 1),
            key(12, 4, 5),
            key(13, 5, 4),
            key(14, 5, 5),
        ];
        let plan = build(&inventory, &request(&[], &[], ForeignKeyPolicy::NotValid)).unwrap();
        let name = |index: usize| plan.tables[index].name.name.clone();
        let (order, cycles) = foreign_key_order(&plan, &inventory);
        let order: Vec<String> = order.into_iter().map(name).collect();
        let position = |table: &str| order.iter().position(|name| name == table).unwrap();
        assert!(
            position("a") < position("b") && position("b") < position("c"),
            "{order:?}"
        );
        assert_eq!(order.len(), 5);
        let cycles: Vec<Vec<String>> = cycles
            .into_iter()
            .map(|cycle| cycle.into_iter().map(name).collect())
            .collect();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        let mut cycle = cycles[0].clone();
        cycle.sort();
        assert_eq!(cycle, ["d", "e"]);
        let groups: Vec<Vec<String>> = foreign_key_groups(&plan, &inventory)
            .into_iter()
            .map(|group| group.into_iter().map(name).collect())
            .collect();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0], ["a", "b", "c"], "referenced tables first");
        let mut cycle = groups[1].clone();
        cycle.sort();
        assert_eq!(cycle, ["d", "e"]);
    }

    #[test]
    fn partition_trees_count_their_levels() {
        let inventory = Inventory {
            tables: vec![
                table(1, "events", TableKind::Partitioned, &[], 0),
                table(2, "events_2025", TableKind::Partitioned, &[1], 0),
                table(3, "events_2025_01", TableKind::Ordinary, &[2], 10),
                table(4, "plain", TableKind::Ordinary, &[], 10),
            ],
            ..Default::default()
        };
        let plan = build(&inventory, &request(&[], &[], ForeignKeyPolicy::NotValid)).unwrap();
        let levels: BTreeMap<String, usize> = plan
            .tables
            .iter()
            .map(|table| (table.name.name.clone(), tree_levels(table, &inventory)))
            .collect();
        assert_eq!(levels["events"], 3);
        assert_eq!(levels["plain"], 1);
    }
}
