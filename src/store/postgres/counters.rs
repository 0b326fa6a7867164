//! Daily counters in PostgreSQL: replicas add their sums to the same rows.

use super::PostgresStore;
use crate::store::counters::{CounterKind, CounterRow, CounterStore};
use crate::store::{StoreError, StoreFuture};

async fn add(store: &PostgresStore, mut rows: Vec<CounterRow>) -> Result<(), StoreError> {
    // Every replica takes the rows' locks in the same order, so two flushes
    // of the same counters wait for each other instead of deadlocking.
    rows.sort_by(|a, b| {
        (a.day, &a.policy, &a.target, a.kind.index()).cmp(&(
            b.day,
            &b.policy,
            &b.target,
            b.kind.index(),
        ))
    });
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let st = tx
        .prepare(
            "INSERT INTO daily_counts (day, policy, target, kind, count) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (day, policy, target, kind)
             DO UPDATE SET count = daily_counts.count + excluded.count",
        )
        .await?;
    for r in &rows {
        let n = i64::try_from(r.count).unwrap_or(i64::MAX);
        tx.execute(&st, &[&r.day, &r.policy, &r.target, &r.kind.as_str(), &n])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn since(store: &PostgresStore, day: i64) -> Result<Vec<CounterRow>, StoreError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT day, policy, target, kind, count FROM daily_counts WHERE day >= $1
             ORDER BY day, policy, target, kind",
            &[&day],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get(3)?;
        let Some(kind) = CounterKind::parse(&kind) else {
            continue;
        };
        let count: i64 = r.try_get(4)?;
        out.push(CounterRow {
            day: r.try_get(0)?,
            policy: r.try_get(1)?,
            target: r.try_get(2)?,
            kind,
            count: u64::try_from(count).unwrap_or(0),
        });
    }
    Ok(out)
}

impl CounterStore for PostgresStore {
    fn add_counts(&self, rows: Vec<CounterRow>) -> StoreFuture<'_, ()> {
        Box::pin(add(self, rows))
    }

    fn counts_since(&self, since_day: i64) -> StoreFuture<'_, Vec<CounterRow>> {
        Box::pin(since(self, since_day))
    }

    fn first_day(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT MIN(day) FROM daily_counts", &[])
                .await?;
            Ok(row.try_get::<_, Option<i64>>(0)?)
        })
    }
}
