//! The `reviews` table: the fields the queue filters on as columns, the
//! item as JSON. A claim is one conditional `UPDATE`; a verdict is checked
//! and written in one immediate transaction with its deliveries.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{insert_deliveries, SqliteStore};
use crate::store::reviews::{decode, encode};
use crate::store::{
    NewDelivery, ReviewChange, ReviewItem, ReviewPage, ReviewQuery, ReviewStatus, ReviewStore,
    ReviewVerdict, StoreError, StoreFuture,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    route TEXT NOT NULL,
    tool TEXT,
    created_ms INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_until_ms INTEGER NOT NULL DEFAULT 0,
    done_ms INTEGER,
    verdict TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_by_created ON reviews (created_ms);
CREATE INDEX IF NOT EXISTS reviews_by_done ON reviews (done_ms);
";

const COLUMNS: &str = "record, claimed_by, claimed_until_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Option<String>, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn get(c: &Connection, id: &str) -> Result<Option<ReviewItem>, StoreError> {
    let found = c
        .query_row(
            &format!("SELECT {COLUMNS} FROM reviews WHERE id = ?1"),
            [id],
            row,
        )
        .optional()?;
    found
        .map(|(t, by, until)| decode(&t, by, until))
        .transpose()
}

/// Why a claim or verdict on `id` was not made.
fn refusal(c: &Connection, id: &str) -> Result<ReviewChange, StoreError> {
    let found: Option<(Option<i64>, Option<String>, i64)> = c
        .query_row(
            "SELECT done_ms, claimed_by, claimed_until_ms FROM reviews WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(match found {
        None => ReviewChange::Missing,
        Some((Some(_), _, _)) => ReviewChange::Finished,
        Some((None, by, until_ms)) => ReviewChange::Taken {
            by: by.unwrap_or_default(),
            until_ms,
        },
    })
}

fn list(c: &Connection, q: &ReviewQuery) -> Result<ReviewPage, StoreError> {
    let status = q.status.map(ReviewStatus::as_str);
    let mut st = c.prepare(&format!(
        "SELECT {COLUMNS} FROM reviews
         WHERE (?1 IS NULL
                OR (?1 = 'done' AND done_ms IS NOT NULL)
                OR (?1 = 'open' AND done_ms IS NULL AND claimed_until_ms <= ?2)
                OR (?1 = 'claimed' AND done_ms IS NULL AND claimed_until_ms > ?2))
           AND (?3 IS NULL OR agent = ?3)
           AND (?4 IS NULL OR route = ?4)
           AND (?5 IS NULL OR tool = ?5)
           AND (?6 IS NULL OR id < ?6)
         ORDER BY id DESC LIMIT ?7"
    ))?;
    let after = q.after.as_ref().map(|a| a.after_id().to_string());
    let rows = st
        .query_map(
            params![
                status,
                q.now_ms,
                q.agent,
                q.route,
                q.tool,
                after,
                i64::from(q.limit) + 1
            ],
            row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let items = rows
        .into_iter()
        .map(|(t, by, until)| decode(&t, by, until))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReviewPage::from_rows(items, q.limit))
}

fn claim(
    c: &Connection,
    id: &str,
    by: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<ReviewChange, StoreError> {
    let n = c.execute(
        "UPDATE reviews SET claimed_by = ?2, claimed_until_ms = ?4
         WHERE id = ?1 AND done_ms IS NULL AND (claimed_until_ms <= ?3 OR claimed_by = ?2)",
        params![id, by, now_ms, until_ms],
    )?;
    if n == 1 {
        return Ok(get(c, id)?.map_or(ReviewChange::Missing, |i| ReviewChange::Made(Box::new(i))));
    }
    refusal(c, id)
}

fn claim_next(
    c: &mut Connection,
    by: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<Option<ReviewItem>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<String> = tx
        .query_row(
            "SELECT id FROM reviews WHERE done_ms IS NULL AND claimed_until_ms <= ?1
             ORDER BY id LIMIT 1",
            [now_ms],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    tx.execute(
        "UPDATE reviews SET claimed_by = ?2, claimed_until_ms = ?3 WHERE id = ?1",
        params![id, by, until_ms],
    )?;
    let item = get(&tx, &id)?;
    tx.commit()?;
    Ok(item)
}

fn finish(
    c: &mut Connection,
    id: &str,
    verdict: ReviewVerdict,
    now_ms: i64,
    deliveries: &[NewDelivery],
) -> Result<ReviewChange, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut item) = get(&tx, id)? else {
        return Ok(ReviewChange::Missing);
    };
    if item.verdict.is_some() {
        return Ok(ReviewChange::Finished);
    }
    if let (Some(other), Some(until_ms)) = (&item.claimed_by, item.claimed_until_ms) {
        if *other != verdict.by && until_ms > now_ms {
            return Ok(ReviewChange::Taken {
                by: other.clone(),
                until_ms,
            });
        }
    }
    let kind = verdict.verdict.as_str();
    item.verdict = Some(verdict);
    tx.execute(
        "UPDATE reviews SET done_ms = ?2, verdict = ?3, record = ?4 WHERE id = ?1",
        params![id, now_ms, kind, encode(&item)?],
    )?;
    insert_deliveries(&tx, deliveries, None, now_ms)?;
    tx.commit()?;
    Ok(ReviewChange::Made(Box::new(item)))
}

fn decided_since(c: &Connection, since_ms: i64, limit: u32) -> Result<Vec<ReviewItem>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {COLUMNS} FROM reviews WHERE done_ms >= ?1 ORDER BY done_ms, id LIMIT ?2"
    ))?;
    let rows = st
        .query_map(params![since_ms, i64::from(limit)], row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(t, by, until)| decode(&t, by, until))
        .collect()
}

impl ReviewStore for SqliteStore {
    fn insert_reviews(&self, items: Vec<ReviewItem>) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO reviews (id, agent, route, tool, created_ms, record)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for item in &items {
                    st.execute(params![
                        item.id,
                        item.agent,
                        item.route,
                        item.tool,
                        item.created_ms,
                        encode(item)?
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn get_review(&self, id: &str) -> StoreFuture<'_, Option<ReviewItem>> {
        let id = id.to_string();
        self.run(move |c| get(c, &id))
    }

    fn list_reviews(&self, query: ReviewQuery) -> StoreFuture<'_, ReviewPage> {
        self.run(move |c| list(c, &query))
    }

    fn claim_review(
        &self,
        id: &str,
        by: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreFuture<'_, ReviewChange> {
        let (id, by) = (id.to_string(), by.to_string());
        self.run(move |c| claim(c, &id, &by, now_ms, until_ms))
    }

    fn claim_next_review(
        &self,
        by: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreFuture<'_, Option<ReviewItem>> {
        let by = by.to_string();
        self.run(move |c| claim_next(c, &by, now_ms, until_ms))
    }

    fn finish_review(
        &self,
        id: &str,
        verdict: ReviewVerdict,
        now_ms: i64,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, ReviewChange> {
        let id = id.to_string();
        self.run(move |c| finish(c, &id, verdict, now_ms, &deliveries))
    }

    fn prune_reviews(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        self.run(move |c| {
            let n = c.execute("DELETE FROM reviews WHERE created_ms < ?1", [before_ms])?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
    }

    fn reviews_decided_since(&self, since_ms: i64, limit: u32) -> StoreFuture<'_, Vec<ReviewItem>> {
        self.run(move |c| decided_since(c, since_ms, limit))
    }
}
