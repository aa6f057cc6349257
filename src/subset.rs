//! `[subset]` of the config file: a part of the database instead of all of it, referentially
//! intact. Roots choose rows (a condition, or a sample); every row a chosen row references comes
//! along, and, for the tables listed in `referencing`, every row that references a chosen row.
//!
//! ```toml
//! [subset]
//! referencing = ["order_items", "payments"]   # table patterns; ["*"]: every table
//! unreached = "empty"                         # or "whole": tables nothing reaches
//! seed = 7                                    # of the samples
//!
//! [subset.tables.orders]
//! where = "created_at > now() - interval '30 days'"
//!
//! [subset.tables.customers]
//! percent = 1
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Deserialize;

use crate::catalog::{Inventory, KeyColumns, QualifiedName, TableKind};
use crate::plan::{Plan, pattern_matches};

/// `[subset]` as the config file writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetSection {
    #[serde(default)]
    tables: BTreeMap<String, RootSection>,
    #[serde(default)]
    referencing: Vec<String>,
    #[serde(default)]
    unreached: Unreached,
    #[serde(default)]
    seed: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootSection {
    #[serde(rename = "where")]
    condition: Option<String>,
    percent: Option<f64>,
    #[serde(default)]
    sample: Sample,
}

/// What `percent` samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sample {
    /// Each row on its own (`TABLESAMPLE BERNOULLI`: the whole table is read).
    #[default]
    Rows,
    /// Whole pages of rows (`TABLESAMPLE SYSTEM`: only those pages are read; rows stored
    /// together come together).
    Pages,
}

/// What a table that no root and no key reaches holds in the copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreached {
    /// No rows (its schema is copied all the same).
    #[default]
    Empty,
    /// All its rows (and, for integrity, the rows they reference).
    Whole,
}

/// A subset, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    /// The roots, in table-name order.
    pub roots: Vec<Root>,
    /// Patterns of the tables whose rows that reference a chosen row come along.
    pub referencing: Vec<String>,
    pub unreached: Unreached,
    /// `TABLESAMPLE … REPEATABLE (seed)`: the same seed and snapshot give the same sample.
    pub seed: i64,
}

/// How one table's own rows are chosen: those the condition holds for, a sample of them, or a
/// sample of those the condition holds for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// As the config file names it (`orders` or `shop.orders`).
    pub table: String,
    /// SQL over the table's columns.
    pub condition: Option<String>,
    /// The percentage of rows sampled, as PostgreSQL reads it (`0.5`).
    pub percent: Option<String>,
    pub sample: Sample,
}

impl SubsetSection {
    /// The subset it describes, or what is wrong with it; `None` for a config file without one.
    pub fn checked(&self) -> Result<Option<Subset>, String> {
        if self.tables.is_empty() && self.referencing.is_empty() {
            return Ok(None);
        }
        if self.tables.is_empty() {
            return Err("[subset] needs at least one table whose rows it starts from: [subset.tables.NAME] with where = \"…\" or percent = N".into());
        }
        let mut roots = Vec::new();
        for (table, root) in &self.tables {
            roots.push(root.checked(table)?);
        }
        if let Some(empty) = self.referencing.iter().find(|pattern| pattern.trim().is_empty()) {
            return Err(format!(
                "[subset] referencing lists an empty pattern ({empty:?}): it would match nothing"
            ));
        }
        Ok(Some(Subset {
            roots,
            referencing: self.referencing.clone(),
            unreached: self.unreached,
            seed: self.seed,
        }))
    }
}

impl RootSection {
    fn checked(&self, table: &str) -> Result<Root, String> {
        let condition = match &self.condition {
            Some(condition) if condition.trim().is_empty() => {
                return Err(format!(
                    "[subset.tables.{table}] where is empty: write the condition rows must meet"
                ));
            }
            condition => condition.clone(),
        };
        let percent = match self.percent {
            Some(percent) if !(percent > 0.0 && percent <= 100.0) => {
                return Err(format!(
                    "[subset.tables.{table}] percent = {percent}: write a percentage above 0 and at most 100"
                ));
            }
            percent => percent.map(|percent| percent.to_string()),
        };
        if condition.is_none() && percent.is_none() {
            return Err(format!(
                "[subset.tables.{table}] chooses no rows: give it where = \"…\", percent = N, or both"
            ));
        }
        Ok(Root {
            table: table.to_string(),
            condition,
            percent,
            sample: self.sample,
        })
    }
}

/// How a subset is computed for one plan: where it starts and the keys it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetPlan {
    /// The planned tables whose rows are chosen first, with how (no condition and no percentage:
    /// every row, for a table nothing reaches with `unreached = "whole"`).
    pub starts: Vec<Start>,
    pub links: Vec<Link>,
    pub seed: i64,
    /// For each planned table (by index), how the subset reaches it: `None` for a table it does
    /// not reach (copied empty).
    pub reached: Vec<Option<Reach>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub table: QualifiedName,
    pub condition: Option<String>,
    pub percent: Option<String>,
    pub sample: Sample,
    /// The rows the planner expects of it, once asked (`catalog::planned_rows`).
    pub estimated_rows: Option<u64>,
}

impl Start {
    /// The query that gives its rows' table oids and `ctid`s.
    pub fn rows_sql(&self, seed: i64) -> String {
        let sample = (self.percent.as_deref(), self.sample == Sample::Pages);
        crate::catalog::root_query(&self.table, self.condition.as_deref(), sample, seed)
    }
}

/// Rows chosen of `from`'s tables lead, by a foreign key, to rows of `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub key: String,
    /// The tables holding rows on the key's near side (a partitioned table's partitions), by
    /// oid on the source.
    pub from: Vec<(u32, QualifiedName)>,
    pub from_columns: Vec<String>,
    pub to: QualifiedName,
    pub to_columns: Vec<String>,
    /// `to` is partitioned: read with its partitions (otherwise its own rows only).
    pub to_partitioned: bool,
}

/// How the subset reaches a planned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A root: `where`, `percent`, or `whole` (`unreached = "whole"`).
    Root(String),
    /// From the planned table `from` by the key `key`: rows it references (`referenced`), or
    /// rows that reference it (`referencing`).
    Key { from: usize, key: String, referenced: bool },
}

impl Subset {
    /// The subset's starts and links over `plan`'s tables, or why it cannot be made: a root that
    /// names no copied table, or a hash-partitioned tree (its rows load through its root).
    pub fn plan(&self, plan: &Plan, inventory: &Inventory, keys: &[KeyColumns]) -> Result<SubsetPlan, String> {
        let by_oid = plan.tables_by_tree_oid();
        let mut starts = Vec::new();
        let mut reached: Vec<Option<Reach>> = vec![None; plan.tables.len()];
        for root in &self.roots {
            let index = planned_table(plan, &root.table)?;
            reached[index] = Some(Reach::Root(describe_root(root)));
            starts.push(Start {
                table: plan.tables[index].name.clone(),
                condition: root.condition.clone(),
                percent: root.percent.clone(),
                sample: root.sample,
                estimated_rows: None,
            });
        }
        if let Some(table) = inventory
            .tables
            .iter()
            .find(|table| table.hash_partitioned && by_oid.contains_key(&table.oid))
        {
            return Err(format!(
                "[subset] cannot copy part of the hash-partitioned table {} yet: its rows load through its root\nhint: leave it out with --exclude",
                table.name.display_name()
            ));
        }
        let (links, edges) = self.links(plan, inventory, keys, &by_oid);
        reach(&mut reached, &edges);
        if self.unreached == Unreached::Whole {
            let unreached: Vec<usize> = (0..plan.tables.len())
                .filter(|index| reached[*index].is_none())
                .collect();
            for index in unreached {
                reached[index] = Some(Reach::Root("whole (nothing else reaches it)".into()));
                starts.push(Start {
                    table: plan.tables[index].name.clone(),
                    condition: None,
                    percent: None,
                    sample: Sample::Rows,
                    estimated_rows: None,
                });
            }
            reach(&mut reached, &edges);
        }
        Ok(SubsetPlan {
            starts,
            links,
            seed: self.seed,
            reached,
        })
    }

    /// The links the subset follows (every key up, to the rows a chosen row references; down,
    /// for the tables `referencing` names), and the same as edges between planned tables.
    fn links(
        &self,
        plan: &Plan,
        inventory: &Inventory,
        keys: &[KeyColumns],
        by_oid: &HashMap<u32, usize>,
    ) -> (Vec<Link>, Vec<(usize, usize, Reach)>) {
        let tables: HashMap<u32, &crate::catalog::Table> =
            inventory.tables.iter().map(|table| (table.oid, table)).collect();
        let (mut links, mut edges) = (Vec::new(), Vec::new());
        for key in keys {
            let (Some(&near), Some(&far), Some(table), Some(referenced)) = (
                by_oid.get(&key.table),
                by_oid.get(&key.referenced),
                tables.get(&key.table),
                tables.get(&key.referenced),
            ) else {
                continue;
            };
            links.push(link(
                inventory,
                key,
                (key.table, &key.columns),
                referenced,
                &key.referenced_columns,
            ));
            let reach = |from, referenced| Reach::Key {
                from,
                key: key.name.clone(),
                referenced,
            };
            edges.push((near, far, reach(near, true)));
            let listed = self
                .referencing
                .iter()
                .any(|pattern| pattern_matches(pattern, &plan.tables[near].name));
            if listed {
                links.push(link(
                    inventory,
                    key,
                    (key.referenced, &key.referenced_columns),
                    table,
                    &key.columns,
                ));
                edges.push((far, near, reach(far, false)));
            }
        }
        (links, edges)
    }
}

/// The link of `key` from the rows of `from` (a table's oid, and its columns of the key) to
/// those of `to` (and its columns of the key).
fn link(
    inventory: &Inventory,
    key: &KeyColumns,
    (from, from_columns): (u32, &[String]),
    to: &crate::catalog::Table,
    to_columns: &[String],
) -> Link {
    Link {
        key: key.name.clone(),
        from: rows_holders(inventory, from),
        from_columns: from_columns.to_vec(),
        to: to.name.clone(),
        to_columns: to_columns.to_vec(),
        to_partitioned: to.kind == TableKind::Partitioned,
    }
}

/// What a root says it chooses.
fn describe_root(root: &Root) -> String {
    let unit = match root.sample {
        Sample::Rows => "rows",
        Sample::Pages => "pages",
    };
    match (&root.condition, &root.percent) {
        (Some(condition), Some(percent)) => format!("{percent} % of the {unit}, where {condition}"),
        (Some(condition), None) => format!("where {condition}"),
        (None, Some(percent)) => format!("{percent} % of the {unit}"),
        (None, None) => "every row".to_string(),
    }
}

/// The planned table `written` (`name` or `schema.name`) names: exactly one.
fn planned_table(plan: &Plan, written: &str) -> Result<usize, String> {
    let found: Vec<usize> = (0..plan.tables.len())
        .filter(|index| {
            let name = &plan.tables[*index].name;
            match written.split_once('.') {
                Some((schema, table)) => schema == name.schema && table == name.name,
                None => written == name.name,
            }
        })
        .collect();
    match found.as_slice() {
        [index] => Ok(*index),
        [] => Err(format!(
            "[subset.tables.{written}] names a table this run does not copy\nhint: check the name (schema.table) and the selection"
        )),
        _ => Err(format!(
            "[subset.tables.{written}] names tables in several schemas; write it as [subset.tables.\"schema.{written}\"]"
        )),
    }
}

/// The tables that hold the rows of `oid`: itself, or a partitioned table's leaf partitions.
fn rows_holders(inventory: &Inventory, oid: u32) -> Vec<(u32, QualifiedName)> {
    let Some(table) = inventory.tables.iter().find(|table| table.oid == oid) else {
        return Vec::new();
    };
    if table.kind != TableKind::Partitioned {
        return vec![(table.oid, table.name.clone())];
    }
    inventory
        .tables
        .iter()
        .filter(|child| child.parents.contains(&oid))
        .flat_map(|child| rows_holders(inventory, child.oid))
        .collect()
}

/// Marks what the edges reach from what is reached, breadth first (the shortest way is the one
/// a plan shows).
fn reach(reached: &mut [Option<Reach>], edges: &[(usize, usize, Reach)]) {
    let mut queue: VecDeque<usize> = (0..reached.len()).filter(|index| reached[*index].is_some()).collect();
    while let Some(from) = queue.pop_front() {
        for (_, to, how) in edges.iter().filter(|(near, _, _)| *near == from) {
            if reached[*to].is_none() {
                reached[*to] = Some(how.clone());
                queue.push_back(*to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> SubsetSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_subset_is_read_with_its_roots_and_checked() {
        let subset = section(
            "referencing = ['order_items']\nunreached = 'whole'\nseed = 7\n\
             [tables.orders]\nwhere = \"placed > date '2026-01-01'\"\n[tables.customers]\npercent = 0.5\nsample = 'pages'\n",
        )
        .checked()
        .unwrap()
        .unwrap();
        assert_eq!(subset.unreached, Unreached::Whole);
        assert_eq!(subset.seed, 7);
        assert_eq!(subset.referencing, ["order_items"]);
        assert_eq!(
            subset.roots,
            [
                Root {
                    table: "customers".into(),
                    condition: None,
                    percent: Some("0.5".into()),
                    sample: Sample::Pages
                },
                Root {
                    table: "orders".into(),
                    condition: Some("placed > date '2026-01-01'".into()),
                    percent: None,
                    sample: Sample::Rows
                },
            ]
        );
        assert_eq!(section("").checked(), Ok(None));
        for (wrong, message) in [
            ("[tables.orders]\n", "chooses no rows"),
            ("[tables.orders]\nwhere = ' '\n", "where is empty"),
            ("[tables.orders]\npercent = 0\n", "above 0 and at most 100"),
            ("[tables.orders]\npercent = 150\n", "above 0 and at most 100"),
            ("referencing = ['x']\n", "needs at least one table"),
            ("referencing = ['']\n[tables.a]\npercent = 1\n", "empty pattern"),
        ] {
            assert!(section(wrong).checked().unwrap_err().contains(message), "{wrong}");
        }
        assert!(toml::from_str::<SubsetSection>("unreached = 'some'\n").is_err());
        assert!(toml::from_str::<SubsetSection>("[tables.a]\nlimit = 3\n").is_err());
    }
}
