//! The PostgreSQL schema, as numbered migrations applied at start.
//!
//! Every replica runs [`migrate`] when it opens the store. The whole run is
//! one transaction under a transaction-scoped advisory lock, so two
//! replicas starting together apply each migration once (the second waits,
//! then finds nothing to do), and a failed migration leaves nothing half
//! applied. A database migrated by a newer Airlock is refused rather than
//! written with assumptions it no longer meets.

use tokio_postgres::Client;

use super::StoreError;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`. Append only: a released
/// migration is never edited, since replicas already ran it.
const MIGRATIONS: &[&str] = &[
    // 1: holds, the webhook outbox, callback ids.
    "
CREATE TABLE holds (
    -- COLLATE \"C\": keyset pages compare ids as bytes, whatever the
    -- database's locale.
    id TEXT COLLATE \"C\" PRIMARY KEY,
    agent TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    settled_ms BIGINT,
    approver_groups TEXT[] NOT NULL DEFAULT '{}',
    record TEXT NOT NULL
);
CREATE INDEX holds_by_call ON holds (agent, fingerprint, created_ms);
CREATE INDEX holds_by_state ON holds (state, expires_ms);
CREATE INDEX holds_by_state_id ON holds (state, id);
-- At most one open approval per agent and call, even when two replicas
-- insert the same call at once.
CREATE UNIQUE INDEX holds_one_open ON holds (agent, fingerprint)
    WHERE state IN ('pending', 'approved', 'executing');
CREATE TABLE deliveries (
    seq BIGSERIAL,
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    -- The lease of the replica attempting it: until then no other replica
    -- takes it; a replica that dies mid-attempt loses it when it runs out.
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    hold_id TEXT
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
CREATE TABLE callback_ids (
    id TEXT PRIMARY KEY,
    seen_ms BIGINT NOT NULL
);
",
    // 2: operators' pauses, one per scope.
    "
CREATE TABLE pauses (
    scope TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
",
    // 3: the lease of an `executing` claim. The replica forwarding the call
    // renews it; once it runs out, any replica settles the call as run with
    // an unknown outcome. Claims made before this migration have none, and
    // are settled so at once.
    "
ALTER TABLE holds ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;
",
    // 4: sampled calls kept for review, and their claims and verdicts.
    "
CREATE TABLE reviews (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    agent TEXT NOT NULL,
    route TEXT NOT NULL,
    tool TEXT,
    created_ms BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    done_ms BIGINT,
    verdict TEXT,
    record TEXT NOT NULL
);
CREATE INDEX reviews_by_created ON reviews (created_ms);
CREATE INDEX reviews_by_done ON reviews (done_ms);
",
    // 5: daily counters (`store::counters`), summed into by every replica.
    "
CREATE TABLE daily_counts (
    day BIGINT NOT NULL,
    policy TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (day, policy, target, kind)
);
",
];

/// The schema version this binary writes.
pub fn latest() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

/// Any fixed key works: it only has to be the same in every replica.
const MIGRATION_LOCK: i64 = 0x0061_6972_6c6f_636b;

/// Brings the schema in the connection's `search_path` up to [`latest`].
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS airlock_schema (
             version INTEGER PRIMARY KEY,
             applied_ms BIGINT NOT NULL)",
    )
    .await?;
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM airlock_schema", &[])
        .await?;
    let found: i32 = row.try_get(0)?;
    if found > latest() {
        return Err(StoreError::Backend(format!(
            "the store's schema is version {found}, newer than this airlock's {}; \
             run the newer airlock (or point `store` at another database)",
            latest()
        )));
    }
    for (n, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(n + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO airlock_schema (version, applied_ms)
             VALUES ($1, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
