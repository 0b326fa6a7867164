//! Review items in PostgreSQL: the rows of the SQLite backend. A claim is
//! one conditional `UPDATE` (the row lock makes it a compare-and-set across
//! replicas); the next open item is taken with `FOR UPDATE SKIP LOCKED`; a
//! verdict locks its row, checks it and writes it with its deliveries.

use tokio_postgres::Row;

use super::{insert_deliveries, PostgresStore};
use crate::store::reviews::{decode, encode};
use crate::store::{
    NewDelivery, ReviewChange, ReviewItem, ReviewPage, ReviewQuery, ReviewStatus, ReviewStore,
    ReviewVerdict, StoreError, StoreFuture,
};

const COLUMNS: &str = "record, claimed_by, claimed_until_ms";

fn item(r: &Row) -> Result<ReviewItem, StoreError> {
    let text: String = r.try_get(0)?;
    decode(&text, r.try_get(1)?, r.try_get(2)?)
}

async fn refusal(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
) -> Result<ReviewChange, StoreError> {
    let found = client
        .query_opt(
            "SELECT done_ms, claimed_by, claimed_until_ms FROM reviews WHERE id = $1",
            &[&id],
        )
        .await?;
    let Some(r) = found else {
        return Ok(ReviewChange::Missing);
    };
    let done: Option<i64> = r.try_get(0)?;
    if done.is_some() {
        return Ok(ReviewChange::Finished);
    }
    let by: Option<String> = r.try_get(1)?;
    Ok(ReviewChange::Taken {
        by: by.unwrap_or_default(),
        until_ms: r.try_get(2)?,
    })
}

impl ReviewStore for PostgresStore {
    fn insert_reviews(&self, items: Vec<ReviewItem>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let st = tx
                .prepare(
                    "INSERT INTO reviews (id, agent, route, tool, created_ms, record)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?;
            for item in &items {
                tx.execute(
                    &st,
                    &[
                        &item.id,
                        &item.agent,
                        &item.route,
                        &item.tool,
                        &item.created_ms,
                        &encode(item)?,
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn get_review(&self, id: &str) -> StoreFuture<'_, Option<ReviewItem>> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let r = client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM reviews WHERE id = $1"),
                    &[&id],
                )
                .await?;
            r.as_ref().map(item).transpose()
        })
    }

    fn list_reviews(&self, q: ReviewQuery) -> StoreFuture<'_, ReviewPage> {
        Box::pin(async move {
            let client = self.client().await?;
            let status = q.status.map(ReviewStatus::as_str);
            let after = q.after.as_ref().map(|a| a.after_id().to_string());
            let rows = client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM reviews
                         WHERE ($1::TEXT IS NULL
                                OR ($1 = 'done' AND done_ms IS NOT NULL)
                                OR ($1 = 'open' AND done_ms IS NULL AND claimed_until_ms <= $2)
                                OR ($1 = 'claimed' AND done_ms IS NULL AND claimed_until_ms > $2))
                           AND ($3::TEXT IS NULL OR agent = $3)
                           AND ($4::TEXT IS NULL OR route = $4)
                           AND ($5::TEXT IS NULL OR tool = $5)
                           AND ($6::TEXT IS NULL OR id < $6)
                         ORDER BY id DESC LIMIT $7"
                    ),
                    &[
                        &status,
                        &q.now_ms,
                        &q.agent,
                        &q.route,
                        &q.tool,
                        &after,
                        &(i64::from(q.limit) + 1),
                    ],
                )
                .await?;
            let items = rows.iter().map(item).collect::<Result<Vec<_>, _>>()?;
            Ok(ReviewPage::from_rows(items, q.limit))
        })
    }

    fn claim_review(
        &self,
        id: &str,
        by: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreFuture<'_, ReviewChange> {
        let (id, by) = (id.to_string(), by.to_string());
        Box::pin(async move {
            let client = self.client().await?;
            let r = client
                .query_opt(
                    &format!(
                        "UPDATE reviews SET claimed_by = $2, claimed_until_ms = $4
                         WHERE id = $1 AND done_ms IS NULL
                           AND (claimed_until_ms <= $3 OR claimed_by = $2)
                         RETURNING {COLUMNS}"
                    ),
                    &[&id, &by, &now_ms, &until_ms],
                )
                .await?;
            match r {
                Some(r) => item(&r).map(|i| ReviewChange::Made(Box::new(i))),
                None => refusal(&**client, &id).await,
            }
        })
    }

    fn claim_next_review(
        &self,
        by: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreFuture<'_, Option<ReviewItem>> {
        let by = by.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let r = client
                .query_opt(
                    &format!(
                        "UPDATE reviews SET claimed_by = $1, claimed_until_ms = $3
                         WHERE id = (SELECT id FROM reviews
                                     WHERE done_ms IS NULL AND claimed_until_ms <= $2
                                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                         RETURNING {COLUMNS}"
                    ),
                    &[&by, &now_ms, &until_ms],
                )
                .await?;
            r.as_ref().map(item).transpose()
        })
    }

    fn finish_review(
        &self,
        id: &str,
        verdict: ReviewVerdict,
        now_ms: i64,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, ReviewChange> {
        let id = id.to_string();
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let r = tx
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM reviews WHERE id = $1 FOR UPDATE"),
                    &[&id],
                )
                .await?;
            let Some(r) = r else {
                return Ok(ReviewChange::Missing);
            };
            let mut found = item(&r)?;
            if found.verdict.is_some() {
                return Ok(ReviewChange::Finished);
            }
            if let (Some(other), Some(until_ms)) = (&found.claimed_by, found.claimed_until_ms) {
                if *other != verdict.by && until_ms > now_ms {
                    return Ok(ReviewChange::Taken {
                        by: other.clone(),
                        until_ms,
                    });
                }
            }
            let kind = verdict.verdict.as_str();
            found.verdict = Some(verdict);
            tx.execute(
                "UPDATE reviews SET done_ms = $2, verdict = $3, record = $4 WHERE id = $1",
                &[&id, &now_ms, &kind, &encode(&found)?],
            )
            .await?;
            insert_deliveries(&tx, &deliveries, None, now_ms).await?;
            tx.commit().await?;
            Ok(ReviewChange::Made(Box::new(found)))
        })
    }

    fn prune_reviews(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            Ok(client
                .execute("DELETE FROM reviews WHERE created_ms < $1", &[&before_ms])
                .await?)
        })
    }

    fn reviews_decided_since(&self, since_ms: i64, limit: u32) -> StoreFuture<'_, Vec<ReviewItem>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM reviews WHERE done_ms >= $1
                         ORDER BY done_ms, id LIMIT $2"
                    ),
                    &[&since_ms, &i64::from(limit)],
                )
                .await?;
            rows.iter().map(item).collect()
        })
    }
}
