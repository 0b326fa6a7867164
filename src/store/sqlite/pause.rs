//! The `pauses` table: one row per scope, the record as JSON.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{insert_deliveries, to_json};
use crate::store::{NewDelivery, PauseRecord, StoreError};

fn parse(text: &str) -> Result<PauseRecord, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("a stored pause does not decode: {e}")))
}

pub(super) fn put(
    c: &mut Connection,
    pause: &PauseRecord,
    deliveries: &[NewDelivery],
) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO pauses (scope, record) VALUES (?1, ?2)
         ON CONFLICT (scope) DO UPDATE SET record = excluded.record",
        params![pause.scope.key(), to_json(pause)?],
    )?;
    insert_deliveries(&tx, deliveries, None, pause.since_ms)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn delete(
    c: &mut Connection,
    key: &str,
    deliveries: &[NewDelivery],
) -> Result<Option<PauseRecord>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let text: Option<String> = tx
        .query_row("SELECT record FROM pauses WHERE scope = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(text) = text else {
        return Ok(None);
    };
    tx.execute("DELETE FROM pauses WHERE scope = ?1", [key])?;
    // Due at once (the store keeps no clock of its own).
    insert_deliveries(&tx, deliveries, None, 0)?;
    tx.commit()?;
    parse(&text).map(Some)
}

pub(super) fn list(c: &mut Connection) -> Result<Vec<PauseRecord>, StoreError> {
    let mut st = c.prepare("SELECT record FROM pauses ORDER BY scope")?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    rows.iter().map(|t| parse(t)).collect()
}

#[cfg(test)]
mod tests {
    use crate::store::{ApprovalStore, PauseMode, PauseRecord, PauseScope, SqliteStore};

    #[tokio::test]
    async fn a_pause_is_replaced_by_scope_and_deleted_once() {
        let s = SqliteStore::in_memory().unwrap();
        let scope = PauseScope::Agent { agent: "a".into() };
        let mut p = PauseRecord {
            scope: scope.clone(),
            mode: PauseMode::Hold,
            reason: "look".into(),
            by: "admin".into(),
            since_ms: 1,
        };
        s.put_pause(p.clone(), Vec::new()).await.unwrap();
        p.mode = PauseMode::Deny;
        s.put_pause(p.clone(), Vec::new()).await.unwrap();
        assert_eq!(s.list_pauses().await.unwrap(), vec![p.clone()]);
        assert_eq!(s.delete_pause(&scope, Vec::new()).await.unwrap(), Some(p));
        assert_eq!(s.delete_pause(&scope, Vec::new()).await.unwrap(), None);
        assert!(s.list_pauses().await.unwrap().is_empty());
    }
}
