//! Both sides of a table walked in the order of its integer key, a page at a time, each key
//! compared (and with row hashes, each row): how an incremental run finds the rows the source
//! no longer has, and with `--deep` the rows that differ in the key ranges whose sums differ.
//! Memory stays within a page and a half of keys per side, whatever the table's size.

use std::collections::VecDeque;

use anyhow::Result;
use tokio_postgres::Client;

use crate::catalog::{self, ChecksumColumn, QualifiedName, RowHash};

/// Rows per page read from one side.
pub const ROWS_PER_PAGE: usize = 100_000;

/// One key of the walk, as the two sides hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    SourceOnly(i64),
    TargetOnly(i64),
    /// On both sides, with the same row hash (or no hashes compared).
    Same(i64),
    /// On both sides, with different row hashes.
    Differs(i64),
}

/// What a walk reads of a table.
#[derive(Clone, Copy)]
pub struct WalkedRows<'a> {
    pub table: &'a QualifiedName,
    pub key: &'a str,
    /// Only these key ranges (inclusive, in order, apart); the whole table without them.
    pub ranges: Option<&'a [(i64, i64)]>,
    /// Row hashes over the source's columns (masked as copied) and the target's.
    pub hashed: Option<(&'a [ChecksumColumn], &'a [ChecksumColumn], RowHash)>,
}

/// A walk along both sides' keys; `next` gives each key once, in order.
pub struct KeyWalk<'a> {
    source: Side<'a>,
    target: Side<'a>,
}

impl<'a> KeyWalk<'a> {
    pub fn new(source: &'a Client, target: &'a Client, rows: WalkedRows<'a>) -> KeyWalk<'a> {
        let (source_hashed, target_hashed) = match rows.hashed {
            Some((source_columns, target_columns, hash)) => {
                (Some((source_columns, hash)), Some((target_columns, hash)))
            }
            None => (None, None),
        };
        KeyWalk {
            source: Side::new(source, rows, source_hashed),
            target: Side::new(target, rows, target_hashed),
        }
    }

    /// The next key of either side, `None` once both are read to the end. A side about to run
    /// out reads its next page alongside the side that has.
    pub async fn next(&mut self) -> Result<Option<Compared>> {
        if self.source.needs_page() || self.target.needs_page() {
            tokio::try_join!(self.source.top_up(), self.target.top_up())?;
        }
        let compared = match (self.source.rows.front(), self.target.rows.front()) {
            (None, None) => return Ok(None),
            (Some(&(key, _)), None) => Compared::SourceOnly(key),
            (None, Some(&(key, _))) => Compared::TargetOnly(key),
            (Some(&(source_key, source_hash)), Some(&(target_key, target_hash))) => match source_key.cmp(&target_key) {
                std::cmp::Ordering::Less => Compared::SourceOnly(source_key),
                std::cmp::Ordering::Greater => Compared::TargetOnly(target_key),
                std::cmp::Ordering::Equal if source_hash == target_hash => Compared::Same(source_key),
                std::cmp::Ordering::Equal => Compared::Differs(source_key),
            },
        };
        if !matches!(compared, Compared::TargetOnly(_)) {
            self.source.rows.pop_front();
        }
        if !matches!(compared, Compared::SourceOnly(_)) {
            self.target.rows.pop_front();
        }
        Ok(Some(compared))
    }

    /// The rows read from the source so far.
    pub fn source_rows_read(&self) -> u64 {
        self.source.read
    }
}

/// One side of a walk: the rows read and not yet compared, in key order.
struct Side<'a> {
    client: &'a Client,
    rows_read: WalkedRows<'a>,
    hashed: Option<(&'a [ChecksumColumn], RowHash)>,
    rows: VecDeque<(i64, i64)>,
    after: Option<i64>,
    finished: bool,
    read: u64,
}

impl<'a> Side<'a> {
    fn new(client: &'a Client, rows_read: WalkedRows<'a>, hashed: Option<(&'a [ChecksumColumn], RowHash)>) -> Side<'a> {
        Side {
            client,
            rows_read,
            hashed,
            rows: VecDeque::new(),
            after: None,
            finished: false,
            read: 0,
        }
    }

    /// Out of rows with more to read: the walk cannot go on without a page.
    fn needs_page(&self) -> bool {
        self.rows.is_empty() && !self.finished
    }

    /// Reads the next page when less than half a page is left.
    async fn top_up(&mut self) -> Result<()> {
        if self.finished || self.rows.len() >= ROWS_PER_PAGE / 2 {
            return Ok(());
        }
        let WalkedRows { table, key, ranges, .. } = self.rows_read;
        let page = catalog::key_page(
            self.client,
            table,
            key,
            ranges,
            self.hashed,
            self.after,
            ROWS_PER_PAGE as i64,
        )
        .await?;
        // Several ranges are read whole at once (`key_page`).
        self.finished = page.len() < ROWS_PER_PAGE || ranges.is_some_and(|ranges| ranges.len() > 1);
        if let Some(&(last, _)) = page.last() {
            self.after = Some(last);
        }
        self.read += page.len() as u64;
        self.rows.extend(page);
        Ok(())
    }
}

/// The buckets that differ (each with the most rows either side holds in it, in bucket order)
/// cut into runs of neighbours holding at most `most_rows` rows together, so that one read of
/// a run's key ranges stays within a page; a bucket holding more is a run of its own (one key
/// range, read a page at a time along the index).
pub fn runs_of_buckets(differing: &[(i64, i64)], most_rows: i64) -> Vec<Vec<i64>> {
    let mut runs: Vec<Vec<i64>> = Vec::new();
    let mut rows_in_run = 0;
    for &(bucket, rows) in differing {
        match runs.last_mut() {
            Some(run) if rows_in_run + rows <= most_rows => {
                run.push(bucket);
                rows_in_run += rows;
            }
            _ => {
                runs.push(vec![bucket]);
                rows_in_run = rows;
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_buckets_are_read_in_runs_that_fit_a_page() {
        let differing = [(0, 40), (3, 40), (4, 30), (9, 500), (10, 10), (11, 0)];
        assert_eq!(
            runs_of_buckets(&differing, 100),
            vec![vec![0, 3], vec![4], vec![9], vec![10, 11]]
        );
        assert_eq!(runs_of_buckets(&[], 100), Vec::<Vec<i64>>::new());
    }
}
