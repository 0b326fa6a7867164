//! The `daily_counts` table: one row per day, policy, target and kind.

use rusqlite::{params, Connection, TransactionBehavior};

use super::SqliteStore;
use crate::store::counters::{CounterKind, CounterRow, CounterStore};
use crate::store::{StoreError, StoreFuture};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS daily_counts (
    day INTEGER NOT NULL,
    policy TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, policy, target, kind)
);
";

fn add(c: &mut Connection, rows: &[CounterRow]) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO daily_counts (day, policy, target, kind, count) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (day, policy, target, kind) DO UPDATE SET count = count + excluded.count",
        )?;
        for r in rows {
            let n = i64::try_from(r.count).unwrap_or(i64::MAX);
            st.execute(params![r.day, r.policy, r.target, r.kind.as_str(), n])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn since(c: &mut Connection, day: i64) -> Result<Vec<CounterRow>, StoreError> {
    let mut st = c.prepare(
        "SELECT day, policy, target, kind, count FROM daily_counts WHERE day >= ?1
         ORDER BY day, policy, target, kind",
    )?;
    let rows = st
        .query_map([day], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(day, policy, target, kind, count)| {
            Some(CounterRow {
                day,
                policy,
                target,
                kind: CounterKind::parse(&kind)?,
                count: u64::try_from(count).unwrap_or(0),
            })
        })
        .collect())
}

impl CounterStore for SqliteStore {
    fn add_counts(&self, rows: Vec<CounterRow>) -> StoreFuture<'_, ()> {
        self.run(move |c| add(c, &rows))
    }

    fn counts_since(&self, since_day: i64) -> StoreFuture<'_, Vec<CounterRow>> {
        self.run(move |c| since(c, since_day))
    }

    fn first_day(&self) -> StoreFuture<'_, Option<i64>> {
        self.run(|c| {
            Ok(c.query_row("SELECT MIN(day) FROM daily_counts", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?)
        })
    }
}
