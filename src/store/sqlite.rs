//! The embedded backend: one SQLite file in WAL mode.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool.
//! Each hold is one row: the fields we query by as columns, the rest as a
//! JSON document, rewritten inside the same transaction that checks the
//! state (compare-and-set).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    ApprovalStore, AttemptResult, DecisionFields, Delivery, DeliveryState, HoldPage, HoldPageQuery,
    HoldRecord, HoldState, NewDelivery, PauseRecord, PauseScope, StoreError, StoreFuture,
};

mod counters;
mod pause;
mod reviews;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    settled_ms INTEGER,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_by_call ON holds (agent, fingerprint, created_ms);
CREATE INDEX IF NOT EXISTS holds_by_state ON holds (state, expires_ms);
-- Listing one state newest first, a page at a time.
CREATE INDEX IF NOT EXISTS holds_by_state_id ON holds (state, id);
-- At most one open approval per agent and call, even when two identical
-- calls race (or two replicas do).
CREATE UNIQUE INDEX IF NOT EXISTS holds_one_open ON holds (agent, fingerprint)
    WHERE state IN ('pending', 'approved', 'executing');
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    hold_id TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS callback_ids (
    id TEXT PRIMARY KEY,
    seen_ms INTEGER NOT NULL
);
-- One pause per scope (`PauseScope::key`).
CREATE TABLE IF NOT EXISTS pauses (
    scope TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
";

/// How long a callback id is remembered: longer than the 5-minute window in
/// which its timestamp is accepted, so a replay is always caught.
const CALLBACK_ID_TTL_MS: i64 = 15 * 60 * 1000;

#[derive(Clone)]
pub struct SqliteStore {
    // A std Mutex: SQLite allows one writer anyway, and the lock is only
    // taken on the blocking pool, never across an await.
    conn: Arc<Mutex<Connection>>,
    // Bounds the blocking-pool threads the store occupies: there is one
    // connection, so extra threads would only wait on its lock (and cost
    // memory when thousands of holds arrive at once).
    slots: Arc<tokio::sync::Semaphore>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A database that lives as long as the process (`sqlite::memory:`).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed hold or execution claim survives power loss too,
        // not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(reviews::SCHEMA)?;
        conn.execute_batch(counters::SCHEMA)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            slots: Arc::new(tokio::sync::Semaphore::new(2)),
        })
    }

    fn run<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let slots = self.slots.clone();
        Box::pin(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?;
            tokio::task::spawn_blocking(move || {
                let mut guard = conn
                    .lock()
                    .map_err(|_| StoreError::Backend("the connection lock is poisoned".into()))?;
                f(&mut guard)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("cannot encode: {e}")))
}

fn parse_hold(text: String) -> Result<HoldRecord, StoreError> {
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Backend(format!("a stored hold does not decode: {e}")))
}

fn holds_from(rows: Vec<String>) -> Result<Vec<HoldRecord>, StoreError> {
    rows.into_iter().map(parse_hold).collect()
}

fn insert_deliveries(
    tx: &rusqlite::Transaction<'_>,
    deliveries: &[NewDelivery],
    hold_id: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    for d in deliveries {
        tx.execute(
            "INSERT INTO deliveries (id, url, event, payload, state, attempts, next_attempt_ms, hold_id)
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6)",
            params![d.id, d.url, d.event, d.payload, now_ms, hold_id],
        )?;
    }
    Ok(())
}

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let state: String = r.get(4)?;
    Ok(Delivery {
        id: r.get(0)?,
        url: r.get(1)?,
        event: r.get(2)?,
        payload: r.get(3)?,
        state: match state.as_str() {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        },
        attempts: r.get(5)?,
        next_attempt_ms: r.get(6)?,
        last_status: r.get(7)?,
        last_error: r.get(8)?,
        hold_id: r.get(9)?,
    })
}

const DELIVERY_COLUMNS: &str =
    "id, url, event, payload, state, attempts, next_attempt_ms, last_status, last_error, hold_id";

// === impl ApprovalStore for SqliteStore ===

impl ApprovalStore for SqliteStore {
    fn insert_hold(
        &self,
        hold: HoldRecord,
        deliveries: Vec<NewDelivery>,
        max_pending: u32,
    ) -> StoreFuture<'_, ()> {
        self.run(move |c| {
            let record = to_json(&hold)?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let pending: i64 = tx.query_row(
                "SELECT COUNT(*) FROM holds WHERE agent = ?1 AND state = 'pending'",
                [&hold.agent],
                |r| r.get(0),
            )?;
            if pending >= i64::from(max_pending) {
                return Err(StoreError::TooManyPending {
                    agent: hold.agent,
                    cap: max_pending,
                });
            }
            let inserted = tx.execute(
                "INSERT INTO holds (id, agent, fingerprint, state, created_ms, expires_ms, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    hold.id,
                    hold.agent,
                    hold.fingerprint,
                    hold.state.as_str(),
                    hold.created_ms,
                    hold.expires_ms,
                    record
                ],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::Conflict);
                }
                other => other?,
            };
            insert_deliveries(&tx, &deliveries, Some(&hold.id), hold.created_ms)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> StoreFuture<'_, Option<HoldRecord>> {
        let id = id.to_string();
        self.run(move |c| {
            let text: Option<String> = c
                .query_row("SELECT record FROM holds WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            text.map(parse_hold).transpose()
        })
    }

    fn find_attachable(
        &self,
        agent: &str,
        fingerprint: &str,
        replay_since_ms: i64,
    ) -> StoreFuture<'_, Option<HoldRecord>> {
        let (agent, fingerprint) = (agent.to_string(), fingerprint.to_string());
        self.run(move |c| {
            let text: Option<String> = c
                .query_row(
                    "SELECT record FROM holds
                     WHERE agent = ?1 AND fingerprint = ?2
                       AND (state IN ('pending', 'approved', 'executing')
                            OR (state IN ('executed', 'denied', 'responded') AND settled_ms >= ?3))
                     ORDER BY created_ms DESC LIMIT 1",
                    params![agent, fingerprint, replay_since_ms],
                    |r| r.get(0),
                )
                .optional()?;
            text.map(parse_hold).transpose()
        })
    }

    fn list(&self, query: HoldPageQuery) -> StoreFuture<'_, HoldPage> {
        self.run(move |c| {
            // Conditions are added only when used, so that SQLite can walk
            // the primary key (or `holds_by_state_id`) from the cursor on.
            let mut conds = Vec::new();
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if let Some(s) = query.state {
                args.push(Box::new(s.as_str()));
                conds.push(format!("state = ?{}", args.len()));
            }
            if let Some(after) = &query.after {
                args.push(Box::new(after.after_id().to_string()));
                conds.push(format!("id < ?{}", args.len()));
            }
            if let Some(groups) = &query.groups {
                args.push(Box::new(to_json(groups)?));
                conds.push(format!(
                    "EXISTS (SELECT 1 FROM json_each(record, '$.approver_groups') AS g
                             WHERE g.value IN (SELECT value FROM json_each(?{})))",
                    args.len()
                ));
            }
            // One row more than asked says whether a next page exists.
            args.push(Box::new(i64::from(query.limit) + 1));
            let filter = match conds.is_empty() {
                true => String::new(),
                false => format!("WHERE {}", conds.join(" AND ")),
            };
            let sql = format!(
                "SELECT record FROM holds {filter} ORDER BY id DESC LIMIT ?{}",
                args.len()
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(HoldPage::from_rows(holds_from(rows)?, query.limit))
        })
    }

    fn count(&self, state: HoldState) -> StoreFuture<'_, u64> {
        self.run(move |c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM holds WHERE state = ?1",
                [state.as_str()],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn transition(
        &self,
        id: &str,
        from: HoldState,
        to: HoldState,
        now_ms: i64,
        fields: DecisionFields,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let text: Option<String> = tx
                .query_row(
                    "SELECT record FROM holds WHERE id = ?1 AND state = ?2",
                    params![id, from.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(text) = text else {
                return Ok(false);
            };
            let mut hold = parse_hold(text)?;
            super::apply_transition(&mut hold, to, now_ms, fields);
            let settled = to.is_settled().then_some(now_ms);
            tx.execute(
                "UPDATE holds SET state = ?1, record = ?2, settled_ms = COALESCE(?3, settled_ms)
                 WHERE id = ?4",
                params![to.as_str(), to_json(&hold)?, settled, id],
            )?;
            insert_deliveries(&tx, &deliveries, Some(&id), now_ms)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn due_expiries(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<HoldRecord>> {
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT record FROM holds
                 WHERE state IN ('pending', 'approved') AND expires_ms <= ?1
                 ORDER BY expires_ms LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![now_ms, limit], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            holds_from(rows)
        })
    }

    fn due_deliveries(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<Delivery>> {
        self.run(move |c| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM (
                   SELECT *, ROW_NUMBER() OVER (
                     PARTITION BY url ORDER BY next_attempt_ms, rowid) AS place
                   FROM deliveries
                   WHERE state = 'pending' AND next_attempt_ms <= ?1)
                 WHERE place = 1
                 ORDER BY next_attempt_ms LIMIT ?2"
            );
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(params![now_ms, limit], delivery_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn next_delivery_ms(&self) -> StoreFuture<'_, Option<i64>> {
        self.run(|c| {
            let next: Option<i64> = c.query_row(
                "SELECT MIN(next_attempt_ms) FROM deliveries WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            Ok(next)
        })
    }

    fn record_attempt(&self, id: &str, result: AttemptResult) -> StoreFuture<'_, ()> {
        let id = id.to_string();
        self.run(move |c| {
            match result {
                AttemptResult::Delivered { status } => c.execute(
                    "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1,
                     last_status = ?1, last_error = NULL WHERE id = ?2",
                    params![status, id],
                )?,
                AttemptResult::Failed {
                    status,
                    error,
                    next_attempt_ms,
                    give_up,
                } => c.execute(
                    "UPDATE deliveries SET state = ?1, attempts = attempts + 1,
                     last_status = ?2, last_error = ?3, next_attempt_ms = ?4 WHERE id = ?5",
                    params![
                        if give_up { "failed" } else { "pending" },
                        status,
                        error,
                        next_attempt_ms,
                        id
                    ],
                )?,
            };
            Ok(())
        })
    }

    fn list_deliveries(&self, limit: u32) -> StoreFuture<'_, Vec<Delivery>> {
        self.run(move |c| {
            let sql =
                format!("SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY rowid DESC LIMIT ?1");
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(params![limit], delivery_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn remember_callback_id(&self, id: &str, now_ms: i64) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        self.run(move |c| {
            c.execute(
                "DELETE FROM callback_ids WHERE seen_ms < ?1",
                [now_ms - CALLBACK_ID_TTL_MS],
            )?;
            let n = c.execute(
                "INSERT OR IGNORE INTO callback_ids (id, seen_ms) VALUES (?1, ?2)",
                params![id, now_ms],
            )?;
            Ok(n == 1)
        })
    }

    fn put_pause(&self, pause: PauseRecord, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, ()> {
        self.run(move |c| pause::put(c, &pause, &deliveries))
    }

    fn delete_pause(
        &self,
        scope: &PauseScope,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, Option<PauseRecord>> {
        let key = scope.key();
        self.run(move |c| pause::delete(c, &key, &deliveries))
    }

    fn list_pauses(&self) -> StoreFuture<'_, Vec<PauseRecord>> {
        self.run(pause::list)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::StoredRequest;

    pub(crate) fn hold(id: &str) -> HoldRecord {
        HoldRecord {
            id: id.into(),
            agent: "bot".into(),
            route: "crm".into(),
            action: "POST".into(),
            resource: "Route::\"crm\"".into(),
            fingerprint: "fp".into(),
            request: StoredRequest {
                method: "POST".into(),
                path: "/crm/refunds".into(),
                rest: "/refunds".into(),
                query: None,
                headers: vec![],
                body: b"{}".to_vec(),
                confidence: None,
                agent_reason: None,
            },
            gates: vec![],
            approver_groups: vec![],
            state: HoldState::Pending,
            created_ms: 1,
            expires_ms: 100,
            decided_ms: None,
            decided_by: None,
            reason: None,
            edited_body: None,
            executed_ms: None,
            outcome: None,
            lifted: vec![],
            answer: None,
        }
    }

    #[tokio::test]
    async fn due_deliveries_give_each_endpoint_its_earliest_one() {
        let s = SqliteStore::in_memory().unwrap();
        let delivery = |n: u32, url: &str| NewDelivery {
            id: format!("msg_{n}"),
            url: url.into(),
            event: "approval.requested".into(),
            payload: "{}".into(),
        };
        let backlog = (0..5).map(|n| delivery(n, "http://dead/hook"));
        let mut all: Vec<NewDelivery> = backlog.collect();
        all.push(delivery(9, "http://live/hook"));
        s.insert_hold(hold("h1"), all, 100).await.unwrap();
        let due = s.due_deliveries(i64::MAX, 2).await.unwrap();
        let mut got: Vec<(&str, &str)> = due
            .iter()
            .map(|d| (d.url.as_str(), d.id.as_str()))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [("http://dead/hook", "msg_0"), ("http://live/hook", "msg_9")]
        );
    }

    #[tokio::test]
    async fn transitions_are_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        s.insert_hold(hold("h1"), vec![], 100).await.unwrap();
        let d = DecisionFields::default();
        let won = s
            .transition(
                "h1",
                HoldState::Pending,
                HoldState::Approved,
                5,
                d.clone(),
                vec![],
            )
            .await
            .unwrap();
        let lost = s
            .transition("h1", HoldState::Pending, HoldState::Denied, 6, d, vec![])
            .await
            .unwrap();
        assert!(won && !lost);
        assert_eq!(
            s.get("h1").await.unwrap().unwrap().state,
            HoldState::Approved
        );
        assert!(s.find_attachable("bot", "fp", 0).await.unwrap().is_some());
        assert!(s.remember_callback_id("msg_1", 10).await.unwrap());
        // An identical call racing the first gets Conflict while one is open.
        let mut twin = hold("h2");
        twin.fingerprint = "fp2".into();
        s.insert_hold(twin.clone(), vec![], 100).await.unwrap();
        twin.id = "h3".into();
        assert!(matches!(
            s.insert_hold(twin, vec![], 100).await,
            Err(StoreError::Conflict)
        ));
        assert!(!s.remember_callback_id("msg_1", 11).await.unwrap());
    }
}

#[cfg(test)]
mod scope_tests {
    use super::tests::hold;
    use super::*;

    #[tokio::test]
    async fn the_pending_cap_counts_only_the_agents_pending_holds() {
        let s = SqliteStore::in_memory().unwrap();
        for n in 0..2 {
            let mut h = hold(&format!("h{n}"));
            h.fingerprint = format!("fp{n}");
            s.insert_hold(h, vec![], 2).await.unwrap();
        }
        let mut third = hold("h2");
        third.fingerprint = "fp2".into();
        assert!(matches!(
            s.insert_hold(third.clone(), vec![], 2).await,
            Err(StoreError::TooManyPending { cap: 2, .. })
        ));
        let mut other = third.clone();
        other.agent = "other".into();
        other.id = "h9".into();
        s.insert_hold(other, vec![], 2).await.unwrap();
        let d = DecisionFields::default();
        s.transition("h0", HoldState::Pending, HoldState::Denied, 5, d, vec![])
            .await
            .unwrap();
        s.insert_hold(third, vec![], 2).await.unwrap();
    }

    #[tokio::test]
    async fn a_group_scoped_list_shows_holds_naming_one_of_the_groups() {
        let s = SqliteStore::in_memory().unwrap();
        for (id, groups) in [
            ("a", vec!["finance"]),
            ("b", vec!["legal", "finance"]),
            ("c", vec![]),
        ] {
            let mut h = hold(id);
            h.fingerprint = id.into();
            h.approver_groups = groups.into_iter().map(str::to_string).collect();
            s.insert_hold(h, vec![], 10).await.unwrap();
        }
        let ids = |groups: Option<&[&str]>| {
            let s = s.clone();
            let groups: Option<Vec<String>> =
                groups.map(|g| g.iter().map(|x| x.to_string()).collect());
            async move {
                let page = s
                    .list(HoldPageQuery {
                        state: None,
                        after: None,
                        limit: 10,
                        groups,
                    })
                    .await
                    .unwrap();
                page.holds.into_iter().map(|h| h.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(Some(&["finance"])).await, ["b", "a"]);
        assert_eq!(ids(Some(&["legal", "ops"])).await, ["b"]);
        assert!(ids(Some(&[])).await.is_empty());
        assert_eq!(ids(None).await, ["c", "b", "a"]);
    }
}

#[cfg(test)]
mod page_tests {
    use super::tests::hold;
    use super::*;
    use crate::store::HoldCursor;

    #[tokio::test]
    async fn pages_walk_every_hold_once_newest_first_with_or_without_a_state() {
        let s = SqliteStore::in_memory().unwrap();
        let mut ids = Vec::new();
        for n in 0..7 {
            let mut h = hold(&uuid::Uuid::now_v7().to_string());
            h.fingerprint = format!("fp{n}");
            if n % 2 == 1 {
                h.state = HoldState::Denied;
            }
            ids.push(h.id.clone());
            s.insert_hold(h, vec![], 100).await.unwrap();
        }
        ids.reverse();
        for (state, want) in [
            (None, ids.clone()),
            (
                Some(HoldState::Pending),
                ids.iter().step_by(2).cloned().collect::<Vec<_>>(),
            ),
        ] {
            let mut seen = Vec::new();
            let mut after: Option<HoldCursor> = None;
            for _ in 0..10 {
                let page = s
                    .list(HoldPageQuery {
                        state,
                        after: after.clone(),
                        limit: 3,
                        groups: None,
                    })
                    .await
                    .unwrap();
                assert!(page.holds.len() <= 3);
                seen.extend(page.holds.iter().map(|h| h.id.clone()));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, want, "state {state:?}");
        }
    }
}
