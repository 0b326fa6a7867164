//! Human approval of held calls: the protocol-neutral core.
//!
//! A held call is stored durably (with the webhooks announcing it, in one
//! transaction) before anyone hears of it. Agents wait on it in-process
//! ([`Waiters`]) while the [`ApprovalStore`] stays the source of truth, so a
//! restart loses nothing: a waiting agent that comes back attaches by
//! fingerprint or id. The state machine is in [`crate::store::HoldState`];
//! every move is a compare-and-set, so one decision wins and one execution
//! wins.
//!
//! What a protocol front end (REST today, MCP next) does with this module:
//! 1. on a hold verdict, build a [`HeldCall`] (the stored request, the
//!    gates, the fingerprint from [`fingerprint::fingerprint`]) and call
//!    [`Approvals::hold`], or [`Approvals::attach`] when the agent named an
//!    approval id;
//! 2. [`Approvals::wait`] for at most `approvals.wait`;
//! 3. on `approved`, [`Approvals::claim_checked`] the execution: the call
//!    is judged again by the current policies first (see [`bound`]); only
//!    the winner forwards, then [`Approvals::record_outcome`] stores the
//!    outcome that later identical calls get replayed, or
//!    [`Approvals::record_not_sent`] hands the approval back when the call
//!    never left;
//! 4. implement [`CallChecker`] so a decision can re-check the stored (or
//!    edited) call against the current policies.

pub mod bound;
mod counted;
mod faults;
pub mod fingerprint;
mod lease;
mod respond;
pub mod trail;
mod void;
mod waiters;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use crate::audit::AuditSink;
use crate::clock::now_ms;
use crate::config::Config;
use crate::feedback::DailyCounters;
use crate::notify::payload;
use crate::store::{ApprovalStore, DecisionFields, NewDelivery, StoreError};
use crate::telemetry::Metrics;
pub use bound::Claim;
pub use lease::LeaseKeeper;
// The data plane names holds through this module, never the store: the
// store is approval's backend, and these are the records it keeps.
pub use crate::store::{HoldRecord, HoldState, HumanAnswer, Outcome, StoredGate, StoredRequest};
pub use waiters::Waiters;

/// A held call about to be stored.
#[derive(Debug, Clone)]
pub struct HeldCall {
    pub agent: String,
    pub route: String,
    pub action: String,
    pub resource: String,
    pub fingerprint: String,
    pub request: StoredRequest,
    pub gates: Vec<StoredGate>,
    /// The shortest `@timeout` of the gates, if any set one.
    pub timeout: Option<Duration>,
}

/// The policies' view of a stored call now, from [`CallChecker::recheck`].
#[derive(Debug, Clone)]
pub enum Recheck {
    Allow,
    Hold { gates: Vec<StoredGate> },
    Deny { reasons: Vec<String> },
}

/// Re-evaluates a stored call against the current policies. The protocol
/// front end implements it, so this module never depends on it.
pub trait CallChecker: Send + Sync {
    /// The verdict for `hold`'s call with `body` instead of its own.
    fn recheck(&self, hold: &HoldRecord, body: &[u8]) -> Result<Recheck, String>;
    /// The body that an approver's edit (`body` for REST, `arguments` for
    /// MCP) makes of the stored call.
    fn edited_body(&self, hold: &HoldRecord, edit: &Value) -> Result<Vec<u8>, String>;
    /// Checks that a human's answer in the tool's place fits `hold`'s
    /// protocol (a REST response for a REST call, a `tools/call` result
    /// for an MCP one), so the agent can read it as the tool's.
    fn check_answer(&self, hold: &HoldRecord, answer: &HumanAnswer) -> Result<(), String>;
}

/// Who is deciding.
#[derive(Debug, Clone)]
pub struct Decider {
    pub id: String,
    pub groups: Vec<String>,
    /// The admin token may decide any gate.
    pub any_group: bool,
}

/// What a human decided about a held call.
#[derive(Debug, Clone)]
pub enum DecisionKind {
    Approve,
    Deny,
    /// Take-over: the human answers in the tool's place.
    Respond(HumanAnswer),
}

impl DecisionKind {
    /// The word the API, the audit log and the webhooks use.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecisionKind::Approve => "approve",
            DecisionKind::Deny => "deny",
            DecisionKind::Respond(_) => "respond",
        }
    }
}

/// A decision as submitted.
#[derive(Debug, Clone)]
pub struct DecisionInput {
    pub kind: DecisionKind,
    pub reason: Option<String>,
    pub edit: Option<Value>,
}

/// A stored decision, with both versions of an edited call.
#[derive(Debug, Clone)]
pub struct Decided {
    pub hold: HoldRecord,
    pub edited: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval `{0}`")]
    NotFound(String),
    #[error("approval `{id}` belongs to a different call")]
    Mismatch { id: String },
    #[error("approval `{id}` is already {state}; a decision is final")]
    AlreadyDecided { id: String, state: &'static str },
    #[error("`{decider}` is not in the approver group `{group}` this call needs")]
    WrongGroup { decider: String, group: String },
    #[error("approval `{id}` names no approver group (its gate has no `@approvers`), so only the admin token decides it")]
    AdminOnly { id: String },
    #[error(
        "agent `{agent}` already has {cap} calls awaiting approval; retry when some are decided"
    )]
    TooManyPending { agent: String, cap: u32 },
    #[error("the edited call is denied by policy: {}", reasons.join("; "))]
    EditDenied { reasons: Vec<String> },
    #[error("the call is now denied by policy, so it cannot be approved: {}", reasons.join("; "))]
    NowDenied { reasons: Vec<String> },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The approval service: shared by the proxy, the admin API and the
/// background expiry sweep.
pub struct Approvals {
    store: Arc<dyn ApprovalStore>,
    waiters: Waiters,
    metrics: Arc<Metrics>,
    /// Wakes the outbox worker when deliveries were queued.
    outbox_wake: Arc<Notify>,
    /// Where expiries are recorded.
    audit: AuditSink,
    /// Set on shutdown: every wait returns at once (see
    /// [`Approvals::stop_waiting`]).
    stopping: faults::StopBell,
    /// Where decisions and expiries are counted per gate and route or tool.
    counters: Arc<DailyCounters>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// === impl Approvals ===

impl Approvals {
    pub fn new(
        store: Arc<dyn ApprovalStore>,
        metrics: Arc<Metrics>,
        outbox_wake: Arc<Notify>,
        audit: AuditSink,
        counters: Arc<DailyCounters>,
    ) -> Approvals {
        Approvals {
            store,
            waiters: Waiters::default(),
            metrics,
            outbox_wake,
            audit,
            stopping: faults::StopBell::default(),
            counters,
        }
    }

    pub fn store(&self) -> &Arc<dyn ApprovalStore> {
        &self.store
    }

    /// Wakes local waiters on the hints of a shared store (decisions taken
    /// on other replicas); a no-op for a store only this process writes.
    pub fn follow_store_changes(self: &Arc<Self>) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        let approvals = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = changes.recv().await;
                let Some(approvals) = approvals.upgrade() else {
                    return;
                };
                match event {
                    Ok(crate::store::StoreEvent::Changed(id)) => approvals.waiters.wake(&id),
                    // Hints were lost: every waiter reads its hold again.
                    Ok(crate::store::StoreEvent::Resync)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        approvals.waiters.wake_all();
                    }
                    Ok(
                        crate::store::StoreEvent::PausesChanged | crate::store::StoreEvent::Note(_),
                    ) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Sets the pending gauge from the store (after a restart).
    pub async fn resync_gauge(&self) -> Result<(), StoreError> {
        let n = self.store.count(HoldState::Pending).await?;
        self.metrics
            .holds_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Attaches an identical call to its existing approval, or stores a new
    /// pending one and queues the `approval.requested` webhooks with it.
    pub async fn hold(&self, cfg: &Config, call: HeldCall) -> Result<HoldRecord, ApprovalError> {
        let now = now_ms();
        let since = now - ms(cfg.approvals.replay_window);
        if let Some(existing) = self
            .store
            .find_attachable(&call.agent, &call.fingerprint, since)
            .await?
        {
            return Ok(existing);
        }
        // A gate's `@timeout` bounds the approval's whole life.
        let life = call.timeout.unwrap_or(cfg.approvals.expire);
        let groups = bound::groups_of(&call.gates);
        let hold = HoldRecord {
            id: uuid::Uuid::now_v7().to_string(),
            agent: call.agent,
            route: call.route,
            action: call.action,
            resource: call.resource,
            fingerprint: call.fingerprint,
            request: call.request,
            gates: call.gates,
            approver_groups: groups,
            state: HoldState::Pending,
            created_ms: now,
            expires_ms: now.saturating_add(ms(life)),
            decided_ms: None,
            decided_by: None,
            reason: None,
            edited_body: None,
            executed_ms: None,
            outcome: None,
            lifted: Vec::new(),
            answer: None,
        };
        let deliveries = deliveries(cfg, payload::REQUESTED, &hold);
        let queued = !deliveries.is_empty();
        let cap = cfg.approvals.max_pending_per_agent;
        match self.store.insert_hold(hold.clone(), deliveries, cap).await {
            Ok(()) => {}
            Err(StoreError::TooManyPending { agent, cap }) => {
                // An identical call racing this one may have stored the
                // hold it would attach to.
                return match self
                    .store
                    .find_attachable(&agent, &hold.fingerprint, since)
                    .await?
                {
                    Some(existing) => Ok(existing),
                    None => Err(ApprovalError::TooManyPending { agent, cap }),
                };
            }
            Err(StoreError::Conflict) => {
                // An identical call stored its hold first: attach to it.
                return self
                    .store
                    .find_attachable(&hold.agent, &hold.fingerprint, since)
                    .await?
                    .ok_or(ApprovalError::Store(StoreError::Conflict));
            }
            Err(e) => return Err(e.into()),
        }
        self.metrics.holds_pending.inc();
        self.audit
            .live()
            .publish_event(trail::requested_event(&hold));
        if queued {
            self.outbox_wake.notify_one();
        }
        Ok(hold)
    }

    /// The approval `id` for a call that names it; 409 when the call is not
    /// the one approved.
    pub async fn attach(
        &self,
        id: &str,
        agent: &str,
        fingerprint: &str,
    ) -> Result<HoldRecord, ApprovalError> {
        let hold = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        if hold.agent != agent || hold.fingerprint != fingerprint {
            return Err(ApprovalError::Mismatch { id: id.to_string() });
        }
        Ok(hold)
    }

    /// Waits up to `max` for the hold to leave `pending` (or `executing`),
    /// expiring it when its time runs out. Dropping the future (the agent
    /// went away) changes nothing. A store that fails once the hold was
    /// seen waiting ends the wait with the hold as last seen: it is
    /// durable, so the agent is told to come back for it rather than that
    /// its call failed.
    pub async fn wait(
        &self,
        cfg: &Config,
        id: &str,
        max: Duration,
    ) -> Result<HoldRecord, ApprovalError> {
        let until = tokio::time::Instant::now() + max;
        let mut last_seen = None;
        // Bounded: each round either returns or waits for a wake-up or the
        // deadline; spurious wake-ups are rare.
        for _ in 0..10_000 {
            let stop = self.stopping.notified();
            let bell = self.waiters.subscribe(id);
            // Before the store read, so that a wake-up sent after it counts.
            let rung = bell.as_deref().map(tokio::sync::Notify::notified);
            let hold = match self.read_now(cfg, id).await {
                Ok(hold) => hold,
                Err(e) => return faults::seen_or(e, last_seen),
            };
            if !matches!(hold.state, HoldState::Pending | HoldState::Executing)
                || self.stopping.is_set()
            {
                return Ok(hold);
            }
            let expires_in = Duration::from_millis(
                u64::try_from(hold.expires_ms.saturating_sub(now_ms())).unwrap_or(0),
            );
            last_seen = Some(faults::slim(hold));
            let deadline = until.min(tokio::time::Instant::now() + expires_in);
            let woke = rung_or_deadline(rung, stop, deadline).await;
            drop(bell);
            self.waiters.release(id);
            if (!woke && tokio::time::Instant::now() >= until) || self.stopping.is_set() {
                return self
                    .read_now(cfg, id)
                    .await
                    .or_else(|e| faults::seen_or(e, last_seen));
            }
        }
        Err(ApprovalError::Invalid(
            "waiting for the approval did not settle".into(),
        ))
    }

    /// Hold `id` as stored now, expired first if its time ran out.
    async fn read_now(&self, cfg: &Config, id: &str) -> Result<HoldRecord, ApprovalError> {
        let hold = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        // Boxed: it is brief, and its state would otherwise sit in every
        // waiting call's future for as long as the human takes.
        Box::pin(self.expire_if_due(cfg, hold)).await
    }

    async fn expire_if_due(
        &self,
        cfg: &Config,
        hold: HoldRecord,
    ) -> Result<HoldRecord, ApprovalError> {
        let open = matches!(hold.state, HoldState::Pending | HoldState::Approved);
        if open && hold.expires_ms <= now_ms() {
            self.expire(cfg, &hold).await?;
            return self
                .store
                .get(&hold.id)
                .await?
                .ok_or_else(|| ApprovalError::NotFound(hold.id.clone()));
        }
        Ok(hold)
    }

    /// Moves a pending (or approved, never run) hold to `expired`: fail
    /// closed. Only the caller whose
    /// compare-and-set moves it writes the audit record, so each expiry is
    /// recorded once however many sweeps, waiting agents and late decisions
    /// find it due at the same time (or after a restart).
    pub async fn expire(&self, cfg: &Config, hold: &HoldRecord) -> Result<bool, StoreError> {
        let mut expired = hold.clone();
        expired.state = HoldState::Expired;
        let deliveries = deliveries(cfg, payload::EXPIRED, &expired);
        let queued = !deliveries.is_empty();
        let fields = DecisionFields {
            reason: Some(trail::expiry_reason(hold.state).into()),
            ..DecisionFields::default()
        };
        let moved = self
            .store
            .transition(
                &hold.id,
                hold.state,
                HoldState::Expired,
                now_ms(),
                fields,
                deliveries,
            )
            .await?;
        if moved {
            if hold.state == HoldState::Pending {
                self.metrics.holds_pending.dec();
                // An approved call that expires unrun was counted approved.
                self.count_expiry(hold, now_ms());
            }
            self.audit.record(trail::expired(hold)).await;
            self.waiters.wake(&hold.id);
            if queued {
                self.outbox_wake.notify_one();
            }
        }
        Ok(moved)
    }

    /// Expires every overdue pending hold; run at start and periodically.
    pub async fn sweep_expired(&self, cfg: &Config) -> Result<usize, StoreError> {
        let mut n = 0;
        for _ in 0..1000 {
            let due = self.store.due_expiries(now_ms(), 256).await?;
            if due.is_empty() {
                break;
            }
            for hold in &due {
                if self.expire(cfg, hold).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Claims the one execution of an approved call, with a lease on a
    /// shared store (kept by [`Approvals::keep_lease`]).
    pub async fn claim(&self, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let fields = DecisionFields {
            lease_until_ms: Some(lease::until(now)),
            ..DecisionFields::default()
        };
        self.store
            .transition(
                id,
                HoldState::Approved,
                HoldState::Executing,
                now,
                fields,
                Vec::new(),
            )
            .await
    }

    /// Records what the agent was told when the approved call ran.
    pub async fn finish(&self, id: &str, outcome: Outcome) -> Result<bool, StoreError> {
        let fields = DecisionFields {
            outcome: Some(outcome),
            ..DecisionFields::default()
        };
        let moved = self
            .store
            .transition(
                id,
                HoldState::Executing,
                HoldState::Executed,
                now_ms(),
                fields,
                Vec::new(),
            )
            .await?;
        self.waiters.wake(id);
        Ok(moved)
    }

    /// Applies a human decision: checks the decider's groups, re-checks the
    /// (possibly edited) call against the current policies, and stores the
    /// decision with its webhooks in one compare-and-set.
    pub async fn decide(
        &self,
        cfg: &Config,
        id: &str,
        who: &Decider,
        input: DecisionInput,
        checker: &dyn CallChecker,
    ) -> Result<Decided, ApprovalError> {
        let hold = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        let hold = self.expire_if_due(cfg, hold).await?;
        if hold.state != HoldState::Pending {
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_string(),
                state: hold.state.as_str(),
            });
        }
        check_gates(who, id, &hold.gates)?;
        let reason = input.reason.filter(|r| !r.trim().is_empty());

        let (to, edited_body, lifted, reason, answer) = match input.kind {
            DecisionKind::Approve => {
                let (edited_body, lifted) = self
                    .approval(cfg, &hold, who, input.edit.as_ref(), checker)
                    .await?;
                (HoldState::Approved, edited_body, Some(lifted), reason, None)
            }
            DecisionKind::Deny => {
                let Some(reason) = reason else {
                    return Err(ApprovalError::Invalid(
                        "a denial needs a `reason` the agent can act on".into(),
                    ));
                };
                (HoldState::Denied, None, None, Some(reason), None)
            }
            DecisionKind::Respond(answer) => {
                respond::check(&hold, input.edit.as_ref(), &answer, checker)?;
                (HoldState::Responded, None, None, reason, Some(answer))
            }
        };
        let edited = edited_body.is_some();
        let fields = DecisionFields {
            decided_by: Some(who.id.clone()),
            reason,
            edited_body,
            lifted,
            answer,
            ..DecisionFields::default()
        };
        // The decision as made: by now a waiting agent may already have
        // moved the hold on to `executing`.
        let hold = self.store_decision(cfg, hold, to, fields).await?;
        Ok(Decided { hold, edited })
    }

    /// Moves pending `hold` to `to` with `fields` and the webhooks that
    /// announce it, in one compare-and-set; returns the hold as decided.
    async fn store_decision(
        &self,
        cfg: &Config,
        hold: HoldRecord,
        to: HoldState,
        fields: DecisionFields,
    ) -> Result<HoldRecord, ApprovalError> {
        let id = hold.id.clone();
        let now = now_ms();
        let mut after = hold;
        after.state = to;
        after.decided_ms = Some(now);
        after.decided_by.clone_from(&fields.decided_by);
        after.reason.clone_from(&fields.reason);
        if let Some(body) = &fields.edited_body {
            after.edited_body = Some(body.clone());
        }
        if let Some(lifted) = &fields.lifted {
            after.lifted.clone_from(lifted);
        }
        after.answer.clone_from(&fields.answer);
        let deliveries = deliveries(cfg, payload::DECIDED, &after);
        let queued = !deliveries.is_empty();
        let moved = self
            .store
            .transition(&id, HoldState::Pending, to, now, fields, deliveries)
            .await?;
        if !moved {
            let state = self
                .store
                .get(&id)
                .await?
                .map_or("decided", |h| h.state.as_str());
            return Err(ApprovalError::AlreadyDecided { id, state });
        }
        self.metrics.holds_pending.dec();
        self.count_decision(&after, now);
        self.waiters.wake(&id);
        if queued {
            self.outbox_wake.notify_one();
        }
        Ok(after)
    }

    /// Checks an approval of pending `hold` (with `edit`, if any) against
    /// the current policies: returns the edited body and the gates the
    /// approval lifts. The decider must be in the group of every gate not
    /// lifted before; an edit voids earlier lifts, since they were given
    /// for another body.
    async fn approval(
        &self,
        cfg: &Config,
        hold: &HoldRecord,
        who: &Decider,
        edit: Option<&Value>,
        checker: &dyn CallChecker,
    ) -> Result<(Option<Vec<u8>>, Vec<crate::store::LiftedGate>), ApprovalError> {
        let edited_body = match edit {
            Some(edit) => Some(
                checker
                    .edited_body(hold, edit)
                    .map_err(ApprovalError::Invalid)?,
            ),
            None => None,
        };
        let body = edited_body.as_deref().unwrap_or(hold.body_to_forward());
        let now = match checker
            .recheck(hold, body)
            .map_err(ApprovalError::Invalid)?
        {
            Recheck::Deny { reasons } if edited_body.is_some() => {
                return Err(ApprovalError::EditDenied { reasons });
            }
            Recheck::Deny { reasons } => {
                // A plain forbid (perhaps added by a reload while the
                // call waited) wins over any human approval.
                self.settle_denied(cfg, hold, "policy", reasons.join("; "))
                    .await?;
                return Err(ApprovalError::NowDenied { reasons });
            }
            Recheck::Hold { gates } => gates,
            Recheck::Allow => Vec::new(),
        };
        let prior = match edited_body {
            Some(_) => &[][..],
            None => &hold.lifted[..],
        };
        let missing = bound::uncovered(&now, prior);
        check_gates(who, &hold.id, &missing)?;
        let mut lifting = hold.gates.clone();
        lifting.extend(missing);
        Ok((edited_body, bound::lift(prior, &lifting, &who.id)))
    }

    /// Settles `hold` (pending, or approved and never run) as denied.
    async fn settle_denied(
        &self,
        cfg: &Config,
        hold: &HoldRecord,
        by: &str,
        reason: String,
    ) -> Result<(), StoreError> {
        let mut after = hold.clone();
        after.state = HoldState::Denied;
        after.decided_by = Some(by.to_string());
        after.reason = Some(reason.clone());
        let deliveries = deliveries(cfg, payload::DECIDED, &after);
        let fields = DecisionFields {
            decided_by: Some(by.to_string()),
            reason: Some(reason),
            ..DecisionFields::default()
        };
        if self
            .store
            .transition(
                &hold.id,
                hold.state,
                HoldState::Denied,
                now_ms(),
                fields,
                deliveries,
            )
            .await?
        {
            if hold.state == HoldState::Pending {
                self.metrics.holds_pending.dec();
            }
            let mut rec = trail::record(hold, "deny");
            rec.approver = Some(by.to_string());
            rec.approval_status = Some(HoldState::Denied.as_str());
            rec.reasons = after.reason.clone().into_iter().collect();
            self.audit.record(rec).await;
            self.waiters.wake(&hold.id);
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// Runs the expiry sweep every second until the process ends; on a
    /// shared store it also settles the executions whose lease ran out.
    pub fn spawn_expiry_sweep(
        self: &Arc<Self>,
        config: impl Fn() -> Arc<Config> + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = me.sweep_expired(&config()).await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
                if let Err(e) = me.settle_lapsed().await {
                    tracing::warn!(error = %e, "settling lapsed executions failed");
                }
            }
        })
    }
}

/// Whether `who` may lift every gate in `gates` of approval `id`: an
/// approver must be in each gate's `@approvers` group, and a gate without
/// one is lifted by the admin token alone.
fn check_gates(who: &Decider, id: &str, gates: &[StoredGate]) -> Result<(), ApprovalError> {
    if who.any_group {
        return Ok(());
    }
    for g in gates {
        match &g.approvers {
            None => return Err(ApprovalError::AdminOnly { id: id.to_string() }),
            Some(group) if !who.groups.contains(group) => {
                return Err(ApprovalError::WrongGroup {
                    decider: who.id.clone(),
                    group: group.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// One delivery per configured webhook that wants `event`.
fn deliveries(cfg: &Config, event: &str, hold: &HoldRecord) -> Vec<NewDelivery> {
    crate::notify::deliveries(cfg, event, || {
        payload::event(event, hold, &cfg.admin).to_string()
    })
}

/// Whether `rung` sounded before `deadline`. Takes the `Notified` by value,
/// so that it ends before the caller drops the bell it borrows.
async fn rung_or_deadline(
    rung: Option<tokio::sync::futures::Notified<'_>>,
    stop: tokio::sync::futures::Notified<'_>,
    deadline: tokio::time::Instant,
) -> bool {
    match rung {
        Some(rung) => {
            tokio::select! {
                () = rung => true,
                () = stop => true,
                () = tokio::time::sleep_until(deadline) => false,
            }
        }
        None => {
            tokio::select! {
                () = stop => true,
                () = tokio::time::sleep_until(deadline) => false,
            }
        }
    }
}
