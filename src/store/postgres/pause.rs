//! Operators' pauses in PostgreSQL: one row per scope, the record as JSON,
//! written with the deliveries announcing it in one transaction.

use deadpool_postgres::Object;

use super::{insert_deliveries, listen};
use crate::store::{NewDelivery, PauseRecord, StoreError};

fn parse(text: &str) -> Result<PauseRecord, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("a stored pause does not decode: {e}")))
}

fn to_json(p: &PauseRecord) -> Result<String, StoreError> {
    serde_json::to_string(p).map_err(|e| StoreError::Backend(e.to_string()))
}

pub(super) async fn put(
    client: &mut Object,
    pause: &PauseRecord,
    deliveries: &[NewDelivery],
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO pauses (scope, record) VALUES ($1, $2)
         ON CONFLICT (scope) DO UPDATE SET record = excluded.record",
        &[&pause.scope.key(), &to_json(pause)?],
    )
    .await?;
    insert_deliveries(&tx, deliveries, None, pause.since_ms).await?;
    notify_pauses(&tx).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn delete(
    client: &mut Object,
    key: &str,
    deliveries: &[NewDelivery],
) -> Result<Option<PauseRecord>, StoreError> {
    let tx = client.transaction().await?;
    // Deleted and read in one statement: of two replicas resuming at once,
    // one gets the pause and queues the announcement, the other nothing.
    let row = tx
        .query_opt(
            "DELETE FROM pauses WHERE scope = $1 RETURNING record",
            &[&key],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.try_get(0)?;
    // Due at once (the store keeps no clock of its own).
    insert_deliveries(&tx, deliveries, None, 0).await?;
    notify_pauses(&tx).await?;
    tx.commit().await?;
    parse(&text).map(Some)
}

/// Tells every replica to read the pauses again, with the commit and only
/// if it commits. No payload: a scope may be longer than a notification
/// carries, and replicas re-read every pause anyway.
async fn notify_pauses(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, '')", &[&listen::PAUSES])
        .await?;
    Ok(())
}

pub(super) async fn list(client: &Object) -> Result<Vec<PauseRecord>, StoreError> {
    let rows = client
        .query("SELECT record FROM pauses ORDER BY scope", &[])
        .await?;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0).map_err(StoreError::from))
        .map(|t| t.and_then(|t| parse(&t)))
        .collect()
}
