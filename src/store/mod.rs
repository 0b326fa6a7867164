//! Durable state for approvals: holds, the webhook outbox, the ids of
//! signed callbacks already accepted, and operators' pauses.
//!
//! Callers talk to the [`ApprovalStore`] trait only. Every state change is a
//! compare-and-set ("move hold X from `pending` to `approved`"), so that a
//! backend shared by several replicas (PostgreSQL) gives the same
//! guarantees as the embedded SQLite one: one decision wins, and one
//! execution claim wins. Outbox rows are written in the same transaction as
//! the state change they announce, so a notification is never sent for a
//! change that was not stored, and never lost for one that was.

pub mod counters;
mod page;
mod pause;
mod postgres;
mod postgres_schema;
mod reviews;
mod sqlite;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use counters::{CounterKind, CounterRow, CounterStore};
pub use page::{CursorError, HoldCursor, HoldPage, HoldPageQuery};
pub use pause::{PauseMode, PauseRecord, PauseScope};
pub use postgres::PostgresStore;
pub use reviews::{
    CapturedBody, CapturedRequest, CapturedResponse, ReviewChange, ReviewCursor, ReviewItem,
    ReviewPage, ReviewQuery, ReviewStatus, ReviewStore, ReviewVerdict, VerdictKind,
};
#[cfg(test)]
pub(crate) use sqlite::tests::hold as test_hold;
pub use sqlite::SqliteStore;

/// The life of an approval. Transitions:
/// `pending → approved → executing → executed`, `pending → denied`,
/// `pending → expired`; and when the current policies no longer let an
/// approved call run as approved: `approved → denied`, `approved →
/// expired`, `approved → pending` (held again for a gate nobody lifted);
/// `pending → voided` when an operator pauses its agent, route or tool in
/// `deny` mode; `pending → responded` when a human answers in the tool's
/// place (the tool is never called).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldState {
    Pending,
    Approved,
    Executing,
    Executed,
    Denied,
    Expired,
    Voided,
    Responded,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Pending => "pending",
            HoldState::Approved => "approved",
            HoldState::Executing => "executing",
            HoldState::Executed => "executed",
            HoldState::Denied => "denied",
            HoldState::Expired => "expired",
            HoldState::Voided => "voided",
            HoldState::Responded => "responded",
        }
    }

    /// Final states: the hold's `settled_ms` is set on entering one.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            HoldState::Executed
                | HoldState::Denied
                | HoldState::Expired
                | HoldState::Voided
                | HoldState::Responded
        )
    }

    pub fn parse(s: &str) -> Option<HoldState> {
        Some(match s {
            "pending" => HoldState::Pending,
            "approved" => HoldState::Approved,
            "executing" => HoldState::Executing,
            "executed" => HoldState::Executed,
            "denied" => HoldState::Denied,
            "expired" => HoldState::Expired,
            "voided" => HoldState::Voided,
            "responded" => HoldState::Responded,
            _ => return None,
        })
    }
}

/// The call as the agent sent it, enough to forward it later: protocol
/// neutral (an MCP call stores its JSON-RPC body and `tools/call` path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub method: String,
    /// The decoded path as the agent sent it, route prefix included.
    pub path: String,
    /// The encoded path after the route prefix, as forwarded upstream.
    pub rest: String,
    pub query: Option<String>,
    /// Headers that would be forwarded (never the agent's credentials).
    pub headers: Vec<(String, String)>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// The confidence the agent stated (decimal text, `"0.63"`), shown to
    /// approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<String>,
    /// The reason the agent gave for the call, shown to approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_reason: Option<String>,
}

/// A `@hold` gate as stored with the approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGate {
    pub policy: String,
    pub reason: String,
    pub approvers: Option<String>,
}

/// A gate lifted by a human's approval: the policy, the group it named when
/// it was lifted, and who lifted it. Before an approved call runs, every
/// gate the current policies put on it must match one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftedGate {
    pub policy: String,
    pub approvers: Option<String>,
    pub by: String,
}

/// What the agent was told when the approved call ran, replayed to an
/// identical call within the replay window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: u16,
    pub reason: String,
}

/// A human's answer in the tool's place (take-over), given to the agent as
/// if the tool had answered, and to every retry of the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum HumanAnswer {
    /// A REST call's response: its status and JSON body (none: empty).
    Http {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<serde_json::Value>,
    },
    /// An MCP `tools/call`'s JSON-RPC `result`.
    Mcp { result: serde_json::Value },
}

/// One approval, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: String,
    pub agent: String,
    pub route: String,
    pub action: String,
    pub resource: String,
    pub fingerprint: String,
    pub request: StoredRequest,
    pub gates: Vec<StoredGate>,
    /// Every group named by a gate's `@approvers`; a decider must be in all.
    pub approver_groups: Vec<String>,
    pub state: HoldState,
    /// Unix milliseconds.
    pub created_ms: i64,
    pub expires_ms: i64,
    pub decided_ms: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// The body an approver substituted, if they edited the call.
    #[serde(with = "b64_opt")]
    pub edited_body: Option<Vec<u8>>,
    pub executed_ms: Option<i64>,
    pub outcome: Option<Outcome>,
    /// The gates human approvals have lifted so far (a call held again for
    /// a gate added after its approval keeps the earlier ones here).
    #[serde(default)]
    pub lifted: Vec<LiftedGate>,
    /// The answer a human gave in the tool's place (`responded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<HumanAnswer>,
}

impl HoldRecord {
    /// The body to forward: the approver's edit if any, else the original.
    pub fn body_to_forward(&self) -> &[u8] {
        self.edited_body.as_deref().unwrap_or(&self.request.body)
    }
}

/// A decision to store with [`ApprovalStore::transition`].
#[derive(Debug, Clone, Default)]
pub struct DecisionFields {
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub edited_body: Option<Vec<u8>>,
    pub outcome: Option<Outcome>,
    /// A human's answer in the tool's place.
    pub answer: Option<HumanAnswer>,
    /// Replaces the lifted gates (an approval).
    pub lifted: Option<Vec<LiftedGate>>,
    /// Replaces the gates still to lift and their groups (a call held
    /// again).
    pub gates: Option<(Vec<StoredGate>, Vec<String>)>,
    /// Until when an `executing` claim is the claimant's, on a shared
    /// store (see [`ApprovalStore::renew_lease`]); not part of the record.
    pub lease_until_ms: Option<i64>,
}

/// Applies a compare-and-set transition's changes to the record, the same
/// in every backend (the backend checks the state and writes the row).
fn apply_transition(hold: &mut HoldRecord, to: HoldState, now_ms: i64, fields: DecisionFields) {
    hold.state = to;
    match to {
        HoldState::Approved
        | HoldState::Denied
        | HoldState::Expired
        | HoldState::Voided
        | HoldState::Responded => {
            hold.decided_ms = Some(now_ms);
        }
        HoldState::Executed => hold.executed_ms = Some(now_ms),
        // Held again: the earlier decision is kept in `lifted`.
        HoldState::Pending => {
            hold.decided_ms = None;
            hold.decided_by = None;
            hold.reason = None;
        }
        HoldState::Executing => {}
    }
    if fields.decided_by.is_some() {
        hold.decided_by = fields.decided_by;
    }
    if fields.reason.is_some() {
        hold.reason = fields.reason;
    }
    if fields.edited_body.is_some() {
        hold.edited_body = fields.edited_body;
    }
    if fields.outcome.is_some() {
        hold.outcome = fields.outcome;
    }
    if fields.answer.is_some() {
        hold.answer = fields.answer;
    }
    if let Some(lifted) = fields.lifted {
        hold.lifted = lifted;
    }
    if let Some((gates, groups)) = fields.gates {
        hold.gates = gates;
        hold.approver_groups = groups;
    }
}

/// A webhook delivery to queue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// `msg_...`: the `webhook-id`, the same on every retry.
    pub id: String,
    pub url: String,
    pub event: String,
    pub payload: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// A webhook delivery, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: String,
    pub url: String,
    pub event: String,
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub hold_id: Option<String>,
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    Delivered {
        status: u16,
    },
    /// Try again at `next_attempt_ms`, or give up when `give_up`.
    Failed {
        status: Option<u16>,
        error: String,
        next_attempt_ms: i64,
        give_up: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An open hold for the same agent and call already exists.
    #[error("an open approval for this call already exists")]
    Conflict,
    /// The agent already has this many pending holds.
    #[error("agent `{agent}` already has {cap} calls awaiting approval")]
    TooManyPending { agent: String, cap: u32 },
    #[error("store error: {0}")]
    Backend(String),
    #[error("the store task failed: {0}")]
    Task(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Every store call is asynchronous, so a networked backend can follow.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable approvals. All state changes are compare-and-set.
///
/// Every backend keeps review items too ([`ReviewStore`]), so that one
/// opened store serves both.
pub trait ApprovalStore: ReviewStore + Send + Sync {
    /// Stores a new pending hold together with the deliveries announcing it;
    /// [`StoreError::Conflict`] when an open hold for the same agent and
    /// fingerprint exists (a racing identical call won),
    /// [`StoreError::TooManyPending`] when the agent already has
    /// `max_pending` pending holds (counted in the same transaction).
    fn insert_hold(
        &self,
        hold: HoldRecord,
        deliveries: Vec<NewDelivery>,
        max_pending: u32,
    ) -> StoreFuture<'_, ()>;

    fn get(&self, id: &str) -> StoreFuture<'_, Option<HoldRecord>>;

    /// The newest hold of `agent` with `fingerprint` that an identical call
    /// should attach to: pending, approved or executing; or executed or
    /// denied no longer ago than `replay_since_ms`.
    fn find_attachable(
        &self,
        agent: &str,
        fingerprint: &str,
        replay_since_ms: i64,
    ) -> StoreFuture<'_, Option<HoldRecord>>;

    /// One page of holds, newest first (by id: UUIDv7), optionally only
    /// those in one state; keyset paginated, see [`HoldCursor`].
    fn list(&self, query: HoldPageQuery) -> StoreFuture<'_, HoldPage>;

    fn count(&self, state: HoldState) -> StoreFuture<'_, u64>;

    /// Moves hold `id` from `from` to `to` only if it is in `from`, storing
    /// `fields` and `deliveries` in the same transaction. Returns whether
    /// this call made the change (false: someone else moved it first).
    fn transition(
        &self,
        id: &str,
        from: HoldState,
        to: HoldState,
        now_ms: i64,
        fields: DecisionFields,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, bool>;

    /// Pending or approved (not yet run) holds whose time ran out by
    /// `now_ms`.
    fn due_expiries(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<HoldRecord>>;

    /// Deliveries to attempt now, oldest first: each endpoint's earliest
    /// due one, so that one endpoint's backlog never hides another's.
    fn due_deliveries(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<Delivery>>;

    /// When the next pending delivery is due, if any.
    fn next_delivery_ms(&self) -> StoreFuture<'_, Option<i64>>;

    fn record_attempt(&self, id: &str, result: AttemptResult) -> StoreFuture<'_, ()>;

    fn list_deliveries(&self, limit: u32) -> StoreFuture<'_, Vec<Delivery>>;

    /// Remembers a callback's `webhook-id`; false when it was seen before.
    fn remember_callback_id(&self, id: &str, now_ms: i64) -> StoreFuture<'_, bool>;

    /// Stores `pause`, replacing any pause of the same scope, with the
    /// deliveries announcing it, in one transaction.
    fn put_pause(&self, pause: PauseRecord, deliveries: Vec<NewDelivery>) -> StoreFuture<'_, ()>;

    /// Removes the pause of `scope` and queues `deliveries` in the same
    /// transaction; returns the pause removed (`None`: there was none, and
    /// nothing is queued).
    fn delete_pause(
        &self,
        scope: &PauseScope,
        deliveries: Vec<NewDelivery>,
    ) -> StoreFuture<'_, Option<PauseRecord>>;

    /// Every pause in force.
    fn list_pauses(&self) -> StoreFuture<'_, Vec<PauseRecord>>;

    /// Hints that holds changed, for a store other processes share: each
    /// receiver re-reads the holds it waits on. `None` for a store only
    /// this process writes (its own wake-ups say everything).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }

    /// Whether other replicas share this store, so that an `executing`
    /// hold may be another live process's call in flight.
    fn shared(&self) -> bool {
        false
    }

    /// Extends the lease of `executing` hold `id` to `until_ms`; false when
    /// it is no longer executing. A store only this process writes keeps
    /// no leases: its `executing` holds are settled at start.
    fn renew_lease(&self, id: &str, until_ms: i64) -> StoreFuture<'_, bool> {
        let _ = (id, until_ms);
        Box::pin(async { Ok(true) })
    }

    /// `executing` holds whose lease ran out by `now_ms`: the replica that
    /// claimed them stopped renewing (it died mid-forward).
    fn lapsed_executions(&self, now_ms: i64, limit: u32) -> StoreFuture<'_, Vec<HoldRecord>> {
        let _ = (now_ms, limit);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Passes `note` (at most [`NOTE_MAX`] bytes) to every replica sharing
    /// the store, this one included, as [`StoreEvent::Note`]; a no-op for a
    /// store only this process writes.
    fn send_note(&self, note: String) -> StoreFuture<'_, ()> {
        let _ = note;
        Box::pin(async { Ok(()) })
    }
}

/// The largest note [`ApprovalStore::send_note`] passes on: what one
/// PostgreSQL notification carries.
pub const NOTE_MAX: usize = 7999;

/// A wake-up hint from a shared store. The store stays the truth: a hint
/// only says which rows to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Hold `id` changed (in any process).
    Changed(String),
    /// A pause was set or lifted: the pauses are read again.
    PausesChanged,
    /// A note a replica sent with [`ApprovalStore::send_note`].
    Note(String),
    /// Hints may have been lost (the listener reconnected): every waiter
    /// re-reads its hold, and the pauses are read again.
    Resync,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
