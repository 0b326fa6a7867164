//! The shared backend: one PostgreSQL database behind several replicas.
//!
//! The rows are those of the SQLite backend (queried fields as columns, the
//! rest as a JSON document). What several writers add:
//! - every transition locks the row with `SELECT … FOR UPDATE` and checks
//!   its state, so of two replicas moving the same hold one wins and the
//!   other sees `false`;
//! - the pending cap is counted under a per-agent transaction lock, so two
//!   replicas cannot both take the last place;
//! - each transition sends `NOTIFY airlock_holds, '<id>'` with its commit:
//!   a hint to the other replicas' waiting agents to read the row again
//!   ([`listen`]); a pause set or lifted sends `NOTIFY airlock_pauses`, and
//!   replicas pass notes (their live events) on `airlock_events`;
//! - an `executing` claim has a lease that its replica renews while the
//!   call is in flight; a claim whose lease ran out is another replica's
//!   to settle;
//! - a webhook delivery is claimed with `FOR UPDATE SKIP LOCKED` and a
//!   lease, so one replica attempts it at a time and a dead replica's claim
//!   runs out.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Row, Socket};

mod counters;
mod listen;
mod pause;
mod reviews;

use super::{
    postgres_schema, ApprovalStore, AttemptResult, DecisionFields, Delivery, DeliveryState,
    HoldPage, HoldPageQuery, HoldRecord, HoldState, NewDelivery, PauseRecord, PauseScope,
    StoreError, StoreEvent, StoreFuture,
};

/// Connections per replica: the proxy's store calls are short, and a
/// database serves a few hundred connections in all (docs/replicas.md).
const POOL_SIZE: usize = 16;
/// Connecting, or waiting for a pooled connection, longer than this
/// answers "store unavailable" instead of holding the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A claimed delivery's lease: longer than one attempt (connect plus
/// response timeouts of the outbox) with room to record it.
const CLAIM_LEASE_MS: i64 = 30_000;
/// How long a callback id is remembered (as in the SQLite backend).
const CALLBACK_ID_TTL_MS: i64 = 15 * 60 * 1000;
/// Hints buffered per receiver; a receiver that falls further behind
/// re-reads everything (`Lagged` is a [`StoreEvent::Resync`]).
const EVENT_BUFFER: usize = 1024;
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    // broadcast: every replica-local consumer (the waiters) sees every
    // hint, and a slow one lags rather than blocking the listener.
    events: broadcast::Sender<StoreEvent>,
    listener: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Backend(format!("no connection to PostgreSQL: {e}"))
    }
}

/// Parses a `postgres://` store URL; the message never repeats the URL,
/// which may hold a password.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| format!("the PostgreSQL store URL does not parse: {e}"))
}

impl PostgresStore {
    /// Connects, applies migrations, and starts listening for changes.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config = parse_url(url).map_err(StoreError::Backend)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // TLS only when asked for: the default `prefer` would otherwise
        // fail on a server whose certificate nobody can verify.
        match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable | tokio_postgres::config::SslMode::Prefer => {
                Self::start(config, tokio_postgres::NoTls).await
            }
            _ => Self::start(config, rustls_connector()?).await,
        }
    }

    async fn start<T>(config: tokio_postgres::Config, tls: T) -> Result<PostgresStore, StoreError>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(CONNECT_TIMEOUT),
                create: Some(CONNECT_TIMEOUT),
                recycle: Some(CONNECT_TIMEOUT),
            })
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let mut client = pool.get().await?;
        postgres_schema::migrate(&mut client).await?;
        drop(client);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let listener = tokio::spawn(listen::listen(config, tls, events.clone())).abort_handle();
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                events,
                listener,
            }),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.inner.pool.get().await?)
    }
}

fn rustls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot parse could never verify
        // anything: skipped.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("cannot encode: {e}")))
}

fn hold_from(row: &Row) -> Result<HoldRecord, StoreError> {
    let text: &str = row.try_get("record")?;
    serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("a stored hold does not decode: {e}")))
}

fn holds_from(rows: &[Row]) -> Result<Vec<HoldRecord>, StoreError> {
    rows.iter().map(hold_from).collect()
}

const DELIVERY_COLUMNS: &str =
    "id, url, event, payload, state, attempts, next_attempt_ms, last_status, last_error, hold_id";

fn delivery_from(r: &Row) -> Result<Delivery, StoreError> {
    let state: &str = r.try_get("state")?;
    let attempts: i32 = r.try_get("attempts")?;
    let last_status: Option<i32> = r.try_get("last_status")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        event: r.try_get("event")?,
        payload: r.try_get("payload")?,
        state: match state {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        },
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        last_status: last_status.and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get("last_error")?,
        hold_id: r.try_get("hold_id")?,
    })
}

fn deliveries_from(rows: &[Row]) -> Result<Vec<Delivery>, StoreError> {
    rows.iter().map(delivery_from).collect()
}

async fn insert_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    deliveries: &[NewDelivery],
    hold_id: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    for d in deliveries {
        tx.execute(
            "INSERT INTO deliveries (id, url, event, payload, state, attempts, next_attempt_ms, hold_id)
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6)",
            &[&d.id, &d.url, &d.event, &d.payload, &now_ms, &hold_id],
        )
        .await?;
    }
    Ok(())
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

// === impl ApprovalStore for PostgresStore ===

impl ApprovalStore for PostgresStore {
    fn insert_hold(
        &self,
        hold: HoldRecord,
        deliveries: Vec<NewDelivery>,
        max_pending: u32,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = to_json(&hold)?;
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Serialises the count and the insert per agent across
            // replicas, so the cap holds when two take the last place.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('airlock.pending.' || $1))",
                &[&hold.agent],
            )
            .await?;
            let pending: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM holds WHERE agent = $1 AND state = 'pending'",
                    &[&hold.agent],
                )
                .await?
                .try_get(0)?;
            if pending >= i64::from(max_pending) {
                return Err(StoreError::TooManyPending {
                    agent: hold.agent,
                    cap: max_pending,
                });
            }
            let inserted = tx
                .execute(
                    "INSERT INTO holds (id, agent, fingerprint, state, created_ms, expires_ms,
                                        approver_groups, record)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &hold.id,
                        &hold.agent,
                        &hold.fingerprint,
                        &hold.state.as_str(),
                        &hold.created_ms,
                        &hold.expires_ms,
                        &hold.approver_groups,
                        &record,
                    ],
                )
                .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict),
                other => other?,
            };
            insert_deliveries(&tx, &deliveries, Some(&hold.id), hold.created_ms).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> StoreFuture<'_, Option<HoldRecord>> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt("SELECT record FROM holds WHERE id = $1", &[&id])
                .await?;
            row.as_ref().map(hold_from).transpose()
        })
    }

    fn find_attachable(
        &self,
        agent: &str,
        fingerprint: &str,
        replay_since_ms: i64,
    ) -> StoreFuture<'_, Option<HoldRecord>> {
        let (agent, fingerprint) = (agent.to_string(), fingerprint.to_string());
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT record FROM holds
                     WHERE agent = $1 AND fingerprint = $2
                       AND (state IN ('pending', 'approved', 'executing')
                            OR (state IN ('executed', 'denied', 'responded') AND settled_ms >= $3))
                     ORDER BY created_ms DESC LIMIT 1",
                    &[&agent, &fingerprint, &replay_since_ms],
                )
                .await?;
            row.as_ref().map(hold_from).transpose()
        })
    }

    fn list(&self, query: HoldPageQuery) -> StoreFuture<'_, HoldPage> {
        Box::pin(async move {
            // NULL parameters switch a condition off, so one statement
            // serves every combination.
            let state = query.state.map(HoldState::as_str);
            let after = query.after.as_ref().map(|a| a.after_id().to_string());
            let limit = i64::from(query.limit) + 1;
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT record FROM holds
                     WHERE ($1::TEXT IS NULL OR state = $1)
                       AND ($2::TEXT IS NULL OR id < $2)
                       AND ($3::TEXT[] IS NULL OR approver_groups && $3)
                     ORDER BY id DESC LIMIT $4",
                    &[&state, &after, &query.groups, &limit],
                )
                .await?;
            Ok(HoldPage::from_rows(holds_from(&rows)?, query.limit))
        })
    }

    fn count(&self, state: HoldState) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            let n: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM holds WHERE state = $1",
                    &[&state.as_str()],
                )
                .await?
                .try_get(0)?;
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
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // FOR UPDATE: a racing transition waits for this one, then
            // re-checks the state on the row it committed, and finds none.
            let row = tx
                .query_opt(
                    "SELECT record FROM holds WHERE id = $1 AND state = $2 FOR UPDATE",
                    &[&id, &from.as_str()],
                )
                .await?;
            let Some(row) = row else {
                return Ok(false);
            };
            let mut hold = hold_from(&row)?;
            let lease = fields.lease_until_ms;
            super::apply_transition(&mut hold, to, now_ms, fields);
            let settled = to.is_settled().then_some(now_ms);
            let moved = tx
                .execute(
                    "UPDATE holds SET state = $1, record = $2, approver_groups = $3,
                                      settled_ms = COALESCE($4, settled_ms),
                                      lease_until_ms = COALESCE($7, lease_until_ms)
                     WHERE id = $5 AND state = $6",
                    &[
                        &to.as_str(),
                        &to_json(&hold)?,
                        &hold.approver_groups,
                        &settled,
                        &id,
                        &from.as_str(),
                        &lease,
                    ],
                )
                .await?;
            if moved != 1 {
                return Ok(false);
            }
            insert_deliveries(&tx, &deliveries, Some(&id), now_ms).await?;
            // Delivered with the commit, and only if it commits.
            tx.execute("SELECT pg_notify($1, $2)", &[&listen::HOLDS, &id])
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn due_expiries(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<HoldRecord>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT record FROM holds
                     WHERE state IN ('pending', 'approved') AND expires_ms <= $1
                     ORDER BY expires_ms LIMIT $2",
                    &[&now_ms, &i64::from(limit)],
                )
                .await?;
            holds_from(&rows)
        })
    }

    fn due_deliveries(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<Delivery>> {
        Box::pin(async move {
            // Each endpoint's earliest pending delivery, claimed or not: while
            // one replica attempts it, no replica starts that endpoint's next
            // one (deliveries to an endpoint stay in order). Of those, the
            // due and unclaimed ones are claimed for a lease; SKIP LOCKED lets
            // two replicas claim at once without waiting on each other.
            let sql = format!(
                "WITH firsts AS (
                   SELECT DISTINCT ON (url) id FROM deliveries WHERE state = 'pending'
                   ORDER BY url, next_attempt_ms, seq),
                 picked AS (
                   SELECT d.id FROM deliveries d JOIN firsts f ON f.id = d.id
                   WHERE d.state = 'pending' AND d.next_attempt_ms <= $1
                     AND d.claimed_until_ms <= $1
                   ORDER BY d.next_attempt_ms LIMIT $2
                   FOR UPDATE OF d SKIP LOCKED)
                 UPDATE deliveries SET claimed_until_ms = $1 + $3
                 FROM picked WHERE deliveries.id = picked.id
                 RETURNING {}",
                DELIVERY_COLUMNS
                    .split(", ")
                    .map(|c| format!("deliveries.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let client = self.client().await?;
            let rows = client
                .query(&sql, &[&now_ms, &i64::from(limit), &CLAIM_LEASE_MS])
                .await?;
            let mut due = deliveries_from(&rows)?;
            due.sort_by_key(|d| d.next_attempt_ms);
            Ok(due)
        })
    }

    fn next_delivery_ms(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let client = self.client().await?;
            let next: Option<i64> = client
                .query_one(
                    "SELECT MIN(GREATEST(next_attempt_ms, claimed_until_ms)) FROM deliveries
                     WHERE state = 'pending'",
                    &[],
                )
                .await?
                .try_get(0)?;
            Ok(next)
        })
    }

    fn record_attempt(&self, id: &str, result: AttemptResult) -> StoreFuture<'_, ()> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            match result {
                AttemptResult::Delivered { status } => {
                    client
                        .execute(
                            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1,
                             last_status = $1, last_error = NULL, claimed_until_ms = 0
                             WHERE id = $2",
                            &[&i32::from(status), &id],
                        )
                        .await?
                }
                AttemptResult::Failed {
                    status,
                    error,
                    next_attempt_ms,
                    give_up,
                } => {
                    let state = if give_up { "failed" } else { "pending" };
                    client
                        .execute(
                            "UPDATE deliveries SET state = $1, attempts = attempts + 1,
                             last_status = $2, last_error = $3, next_attempt_ms = $4,
                             claimed_until_ms = 0
                             WHERE id = $5",
                            &[
                                &state,
                                &status.map(i32::from),
                                &error,
                                &next_attempt_ms,
                                &id,
                            ],
                        )
                        .await?
                }
            };
            Ok(())
        })
    }

    fn list_deliveries(&self, limit: u32) -> StoreFuture<'_, Vec<Delivery>> {
        Box::pin(async move {
            let client = self.client().await?;
            let sql =
                format!("SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY seq DESC LIMIT $1");
            let rows = client.query(&sql, &[&i64::from(limit)]).await?;
            deliveries_from(&rows)
        })
    }

    fn remember_callback_id(&self, id: &str, now_ms: i64) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM callback_ids WHERE seen_ms < $1",
                    &[&(now_ms - CALLBACK_ID_TTL_MS)],
                )
                .await?;
            let n = client
                .execute(
                    "INSERT INTO callback_ids (id, seen_ms) VALUES ($1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[&id, &now_ms],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn put_pause(&self, pause: PauseRecord, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut client = self.client().await?;
            pause::put(&mut client, &pause, &deliveries).await
        })
    }

    fn delete_pause(
        &self,
        scope: &PauseScope,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, Option<PauseRecord>> {
        let key = scope.key();
        Box::pin(async move {
            let mut client = self.client().await?;
            pause::delete(&mut client, &key, &deliveries).await
        })
    }

    fn list_pauses(&self) -> StoreFuture<'_, Vec<PauseRecord>> {
        Box::pin(async move {
            let client = self.client().await?;
            pause::list(&client).await
        })
    }

    fn renew_lease(&self, id: &str, until_ms: i64) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            let n = client
                .execute(
                    "UPDATE holds SET lease_until_ms = $2 WHERE id = $1 AND state = 'executing'",
                    &[&id, &until_ms],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn lapsed_executions(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<HoldRecord>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT record FROM holds
                     WHERE state = 'executing' AND lease_until_ms <= $1
                     ORDER BY lease_until_ms LIMIT $2",
                    &[&now_ms, &i64::from(limit)],
                )
                .await?;
            holds_from(&rows)
        })
    }

    fn send_note(&self, note: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if note.len() > super::NOTE_MAX {
                return Err(StoreError::Backend(format!(
                    "a note of {} bytes is over the {} a notification carries",
                    note.len(),
                    super::NOTE_MAX
                )));
            }
            let client = self.client().await?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&listen::NOTES, &note])
                .await?;
            Ok(())
        })
    }

    fn changes(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.inner.events.subscribe())
    }

    fn shared(&self) -> bool {
        true
    }
}
